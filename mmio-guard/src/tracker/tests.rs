// SPDX-License-Identifier: GPL-2.0 OR MIT
//! Tracker tests, including a model check against a per-granule map.

use std::collections::BTreeMap;
use std::vec::Vec;

use super::*;

const G: u64 = GRANULE;

fn map<const N: usize>(t: &mut Tracker<N>, s: u64, e: u64) -> Result<Vec<(u64, u64)>, TrackError> {
    let mut calls = Vec::new();
    t.map(s, e, |_, a, b| {
        calls.push((a, b));
        Ok::<(), TrackError>(())
    })?;
    Ok(calls)
}

fn unmap<const N: usize>(
    t: &mut Tracker<N>,
    s: u64,
    e: u64,
) -> Result<Vec<(u64, u64)>, TrackError> {
    let mut calls = Vec::new();
    t.unmap(s, e, |a, b| {
        calls.push((a, b));
        Ok::<(), TrackError>(())
    })?;
    Ok(calls)
}

#[test]
fn shared_granule_survives_first_unmap() {
    let mut t = Tracker::<8>::new();
    // Two ioremaps of the same UART granule.
    assert_eq!(
        map(&mut t, 0x900_0000, 0x900_1000).unwrap(),
        [(0x900_0000, 0x900_1000)]
    );
    assert_eq!(
        map(&mut t, 0x900_0000, 0x900_1000).unwrap(),
        [],
        "already guarded"
    );
    assert_eq!(
        unmap(&mut t, 0x900_0000, 0x900_1000).unwrap(),
        [],
        "still used"
    );
    assert_eq!(t.count_at(0x900_0000), 1);
    assert_eq!(
        unmap(&mut t, 0x900_0000, 0x900_1000).unwrap(),
        [(0x900_0000, 0x900_1000)]
    );
    assert_eq!(t.segments(), []);
}

#[test]
fn overlapping_ranges_guard_only_the_new_parts() {
    let mut t = Tracker::<8>::new();
    assert_eq!(map(&mut t, 4 * G, 8 * G).unwrap(), [(4 * G, 8 * G)]);
    assert_eq!(
        map(&mut t, 2 * G, 10 * G).unwrap(),
        [(2 * G, 4 * G), (8 * G, 10 * G)]
    );
    assert_eq!(t.segments().len(), 3);
    assert_eq!(unmap(&mut t, 4 * G, 8 * G).unwrap(), []);
    assert_eq!(
        t.segments(),
        [Segment {
            start: 2 * G,
            end: 10 * G,
            count: 1
        }],
        "coalesced"
    );
    assert_eq!(unmap(&mut t, 2 * G, 10 * G).unwrap(), [(2 * G, 10 * G)]);
}

#[test]
fn errors_leave_the_tracker_unchanged() {
    let mut t = Tracker::<2>::new();
    map(&mut t, 0, G).unwrap();
    map(&mut t, 4 * G, 5 * G).unwrap();
    let before = t.clone();
    assert_eq!(map(&mut t, 8 * G, 9 * G), Err(TrackError::Full));
    assert_eq!(unmap(&mut t, 0, 2 * G), Err(TrackError::NotMapped));
    assert_eq!(map(&mut t, 1, G), Err(TrackError::BadRange));
    assert_eq!(t.segments(), before.segments());
    assert_eq!(
        granule_range(0x900_0ff0, 0x20),
        Ok((0x900_0000, 0x900_2000))
    );
    assert_eq!(granule_range(u64::MAX - 10, 5), Err(TrackError::BadRange));
    assert_eq!(granule_range(0x1000, 0), Err(TrackError::BadRange));
}

#[test]
fn failed_guard_rolls_back_what_it_did() {
    let mut t = Tracker::<8>::new();
    map(&mut t, 2 * G, 3 * G).unwrap();
    let mut guarded = Vec::new();
    let mut unguarded = Vec::new();
    let r = t.map(0, 6 * G, |c, s, e| {
        if c == Change::Unguard {
            unguarded.push((s, e));
            return Ok(());
        }
        if s == 3 * G {
            return Err(TrackError::Full);
        }
        guarded.push((s, e));
        Ok(())
    });
    assert_eq!(r, Err(TrackError::Full));
    assert_eq!(guarded, [(0, 2 * G)]);
    assert_eq!(unguarded, [(0, 2 * G)]);
    assert_eq!(
        t.segments(),
        [Segment {
            start: 2 * G,
            end: 3 * G,
            count: 1
        }]
    );
}

/// A tiny deterministic generator, so the model check needs no crates.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn model_check_against_per_granule_counts_and_hypervisor_bits() {
    for seed in 0..200 {
        let mut rng = Lcg(seed);
        let mut t = Tracker::<64>::new();
        let mut model: BTreeMap<u64, u32> = BTreeMap::new();
        let mut hyp: BTreeMap<u64, bool> = BTreeMap::new();
        let mut live: Vec<(u64, u64)> = Vec::new();
        for _ in 0..200 {
            if live.is_empty() || rng.next(3) != 0 {
                let s = rng.next(32) * G;
                let e = s + (1 + rng.next(6)) * G;
                let mut newly = Vec::new();
                match t.map(s, e, |_, a, b| {
                    newly.push((a, b));
                    Ok::<(), TrackError>(())
                }) {
                    Ok(()) => {
                        for (a, b) in newly {
                            for g in (a..b).step_by(G as usize) {
                                assert!(!hyp.get(&g).copied().unwrap_or(false), "guarded twice");
                                hyp.insert(g, true);
                            }
                        }
                        for g in (s..e).step_by(G as usize) {
                            *model.entry(g).or_default() += 1;
                        }
                        live.push((s, e));
                    }
                    Err(TrackError::Full) => {}
                    Err(other) => panic!("{other:?}"),
                }
            } else {
                let (s, e) = live.swap_remove(rng.next(live.len() as u64) as usize);
                t.unmap(s, e, |a, b| {
                    for g in (a..b).step_by(G as usize) {
                        assert_eq!(
                            hyp.insert(g, false),
                            Some(true),
                            "unguarded while not guarded"
                        );
                    }
                    Ok::<(), TrackError>(())
                })
                .unwrap();
                for g in (s..e).step_by(G as usize) {
                    let c = model.get_mut(&g).unwrap();
                    *c -= 1;
                }
            }
            // The tracker's counts equal the model's, and the hypervisor's
            // bits equal the union of the live mappings.
            for g in (0..40 * G).step_by(G as usize) {
                let want = model.get(&g).copied().unwrap_or(0);
                assert_eq!(t.count_at(g), want, "seed {seed} granule {g:#x}");
                assert_eq!(
                    hyp.get(&g).copied().unwrap_or(false),
                    want > 0,
                    "seed {seed} granule {g:#x}"
                );
            }
            // Segments stay sorted, disjoint and coalesced.
            for w in t.segments().windows(2) {
                assert!(w[0].end <= w[1].start);
                assert!(!(w[0].end == w[1].start && w[0].count == w[1].count));
            }
        }
    }
}
