// SPDX-License-Identifier: GPL-2.0 OR MIT
//! Guard tests against a fake hypervisor with the real one's rules: one
//! bit per granule, MAP idempotent, UNMAP of an unguarded granule refused.

use std::collections::BTreeSet;
use std::vec::Vec;

use super::*;

#[derive(Default)]
struct FakeHyp {
    guarded: BTreeSet<u64>,
    log: Vec<u32>,
    no_ranges: bool,
    refuse_at: Option<u64>,
    enrolled: bool,
}

impl Hypervisor for FakeHyp {
    fn call(&mut self, fid: u32, a: [u64; 3]) -> [u64; 4] {
        self.log.push(fid);
        let ok = [abi::RET_SUCCESS, 0, 0, 0];
        let bad = [abi::RET_INVALID_PARAMETER, 0, 0, 0];
        let granules = |s: u64, n: u64| (0..n / abi::GRANULE).map(move |i| s + i * abi::GRANULE);
        match fid {
            0x8600_ff01 => abi::KVM_UID,
            0x8600_0000 => {
                let mut bits = 1 | 1 << 5 | 1 << 6 | 1 << 7 | 1 << 8;
                if !self.no_ranges {
                    bits |= 1 << 10 | 1 << 11;
                }
                [bits, 0, 0, 0]
            }
            abi::INFO => [abi::GRANULE, 0, 0, 0],
            abi::ENROLL => {
                self.enrolled = true;
                ok
            }
            abi::MAP | abi::MAP_RANGE => {
                let n = if fid == abi::MAP { abi::GRANULE } else { a[1] };
                if granules(a[0], n).any(|g| Some(g) == self.refuse_at) {
                    return bad;
                }
                self.guarded.extend(granules(a[0], n));
                ok
            }
            abi::UNMAP | abi::UNMAP_RANGE => {
                let n = if fid == abi::UNMAP {
                    abi::GRANULE
                } else {
                    a[1]
                };
                if !granules(a[0], n).all(|g| self.guarded.contains(&g)) {
                    return bad;
                }
                for g in granules(a[0], n) {
                    self.guarded.remove(&g);
                }
                ok
            }
            _ => [abi::RET_NOT_SUPPORTED, 0, 0, 0],
        }
    }
}

#[test]
fn discovery_finds_ranges_or_not() {
    let mut hv = FakeHyp::default();
    assert_eq!(
        discover(&mut hv),
        Ok(Discovery {
            granule: 4096,
            ranged: true
        })
    );
    hv.no_ranges = true;
    assert_eq!(
        discover(&mut hv),
        Ok(Discovery {
            granule: 4096,
            ranged: false
        })
    );
    struct NotKvm;
    impl Hypervisor for NotKvm {
        fn call(&mut self, _: u32, _: [u64; 3]) -> [u64; 4] {
            [u64::MAX, 0, 0, 0]
        }
    }
    assert_eq!(discover(&mut NotKvm), Err(Unavailable::NotKvm));
}

#[test]
fn one_hypercall_per_ioremap_with_ranges() {
    let mut hv = FakeHyp::default();
    let mut g = Guard::<16>::new(true);
    g.enroll(&mut hv).unwrap();
    g.map(&mut hv, 0x0800_0000, 0x1_0000).unwrap(); // GIC distributor, 16 granules
    g.map(&mut hv, 0x080a_0000, 0xf6_0000).unwrap(); // redistributors
    assert_eq!(g.stats().hypercalls, 3);
    assert_eq!(hv.guarded.len(), 16 + 0xf60);
}

#[test]
fn per_granule_fallback_and_sharing() {
    let mut hv = FakeHyp::default();
    let mut g = Guard::<16>::new(false);
    g.map(&mut hv, 0x0900_0000, 0x1000).unwrap();
    g.map(&mut hv, 0x0900_0010, 0x10).unwrap(); // same granule
    assert_eq!(g.stats().hypercalls, 1);
    g.unmap(&mut hv, 0x0900_0000, 0x1000).unwrap();
    assert!(
        hv.guarded.contains(&0x0900_0000),
        "second mapping still guarded"
    );
    g.unmap(&mut hv, 0x0900_0010, 0x10).unwrap();
    assert!(hv.guarded.is_empty());
    assert_eq!(
        g.unmap(&mut hv, 0x0900_0000, 0x1000),
        Err(GuardError::Track(TrackError::NotMapped))
    );
    assert_eq!(g.stats().failures, 1);
}

#[test]
fn refused_map_leaves_nothing_behind() {
    for ranged in [true, false] {
        let mut hv = FakeHyp {
            refuse_at: Some(0x0a00_3000),
            ..Default::default()
        };
        let mut g = Guard::<16>::new(ranged);
        g.map(&mut hv, 0x0a00_1000, 0x1000).unwrap();
        let r = g.map(&mut hv, 0x0a00_0000, 0x8000);
        assert_eq!(
            r,
            Err(GuardError::Refused {
                fid: if ranged { abi::MAP_RANGE } else { abi::MAP },
                ret: abi::RET_INVALID_PARAMETER
            })
        );
        assert_eq!(
            hv.guarded.iter().copied().collect::<Vec<_>>(),
            [0x0a00_1000],
            "ranged={ranged}"
        );
        assert_eq!(g.tracker().granules(), 1);
    }
}

#[test]
fn ranged_needs_at_least_4x_fewer_calls_for_a_typical_boot() {
    // The mappings a small arm64 guest makes at boot: GIC distributor and
    // redistributor frames, the UART, the RTC.
    let maps = [
        (0x0800_0000u64, 0x1_0000u64),
        (0x080a_0000, 0x2_0000),
        (0x0900_0000, 0x1000),
        (0x0901_0000, 0x1000),
    ];
    let count = |ranged| {
        let mut hv = FakeHyp::default();
        let mut g = Guard::<16>::new(ranged);
        for (p, s) in maps {
            g.map(&mut hv, p, s).unwrap();
        }
        g.stats().hypercalls
    };
    assert_eq!(count(true), 4);
    assert_eq!(count(false), 16 + 32 + 1 + 1);
}

#[test]
fn early_mappings_are_replayed_before_enrolling() {
    let mut hv = FakeHyp::default();
    let mut g = Guard::<16>::new(false);
    g.note(0x0900_0000, 64).unwrap();
    assert!(hv.log.is_empty(), "no hypercall before discovery");
    g.set_ranged(discover(&mut hv).unwrap().ranged);
    g.sync(&mut hv).unwrap();
    g.enroll(&mut hv).unwrap();
    assert!(hv.guarded.contains(&0x0900_0000) && hv.enrolled);
    // A later ioremap of the same UART shares the early granule.
    g.map(&mut hv, 0x0900_0000, 0x1000).unwrap();
    g.unmap(&mut hv, 0x0900_0000, 0x1000).unwrap();
    assert!(hv.guarded.contains(&0x0900_0000));
}
