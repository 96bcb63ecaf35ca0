// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The MMIO guard end to end: the guest's refcounting `Guard` (what
//! `ioremap`/`iounmap` call) talking to the hypervisor's service through
//! real HVC exits, and device accesses in between. After every step the
//! guest's tracker is well formed and counts exactly the live mappings,
//! the hypervisor guards exactly what they cover, and an access is
//! emulated exactly when the guard allows it.

use arbitrary::Arbitrary;
use hyp_stub::addr::Ipa;
use hyp_stub::esr::Esr;
use hyp_stub::hyp::{Hyp, Next};
use hyp_stub::services::mmio_guard::Policy;
use hyp_stub::vcpu::Vcpu;
use mmio_guard::abi::GRANULE;
use mmio_guard::guard::{Guard, GuardError, Hypervisor};
use mmio_guard::tracker::TrackError;

use crate::invariants::{self, RangeSet};
use crate::machine::{self, Boot, Machine, Pool, Services};

/// Segments the guest tracks (small, so that running out is reached).
pub const SEGMENTS: usize = 12;

/// Where the fuzzed mappings lie: 512 granules of the device window.
const BASE: u64 = 0x0800_0000;

/// An address: a granule of the fuzzed area plus an offset, or anything.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Phys {
    /// Granule `g` of the area, byte offset `o`.
    Area(u16, u16),
    /// Anything (RAM, the hypervisor, past the IPA space).
    Raw(u64),
}

impl Phys {
    fn get(self) -> u64 {
        match self {
            Phys::Area(g, o) => BASE + u64::from(g % 512) * GRANULE + u64::from(o % 0x1000),
            Phys::Raw(v) => v,
        }
    }
}

/// One step.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Step {
    /// `ioremap(phys, size)`.
    Map { phys: Phys, size: u16 },
    /// `iounmap` of live mapping `n`.
    Unmap { n: u8 },
    /// An unmap of something never mapped.
    UnmapRaw { phys: Phys, size: u16 },
    /// A mapping made before the allocator (noted, guarded at sync).
    Note { phys: Phys, size: u16 },
    /// Guard everything noted.
    Sync,
    /// ENROLL.
    Enroll,
    /// Switch between single-granule and range hypercalls.
    Ranged(bool),
    /// A device access.
    Access { phys: Phys, write: bool },
}

/// A whole input.
#[derive(Arbitrary, Clone, Debug)]
pub struct Input {
    from_boot: bool,
    ranged: bool,
    steps: Vec<Step>,
}

/// The guest's way into the hypervisor: real HVC exits.
struct Bridge<'a, 's> {
    hyp: &'a mut Hyp<'s, Pool>,
    plat: &'a mut Machine,
    vcpu: Vcpu,
    calls: u64,
}

impl Hypervisor for Bridge<'_, '_> {
    fn call(&mut self, fid: u32, args: [u64; 3]) -> [u64; 4] {
        self.calls += 1;
        self.vcpu.regs.x[0] = u64::from(fid);
        self.vcpu.regs.x[1..4].copy_from_slice(&args);
        let next = self.hyp.handle_sync(
            Esr((0x16 << 26) | (1 << 25)),
            0,
            0,
            &mut self.vcpu,
            self.plat,
        );
        // MMIO guard calls return to the guest; nothing waits.
        assert_eq!(
            next,
            Next::Guest,
            "MMIO guard call {fid:#x} asked for {next:?}"
        );
        let x = &self.vcpu.regs.x;
        [x[0], x[1], x[2], x[3]]
    }
}

fn size_of(s: u16) -> u64 {
    // Mostly small, sometimes many granules, sometimes zero.
    u64::from(s) * 16
}

/// Runs one input.
pub fn run(input: &Input) {
    let boot = Boot {
        policy: if input.from_boot {
            Policy::FromBoot
        } else {
            Policy::AfterEnroll
        },
        tables: 2,
    };
    let services = Services::new(boot.policy);
    let (mut g, mut k) = services.handles();
    let mut plat = Machine::new();
    let discovery = hyp_stub::hyp::Discovery::new();
    let mut hyp = machine::boot(&boot, &mut g, &mut k, &discovery, &mut plat);
    let mut guest: Guard<SEGMENTS> = Guard::new(input.ranged);
    let mut live: Vec<(u64, u64)> = Vec::new();
    // Before the one sync: the hypervisor may guard less than the guest
    // tracks.
    let mut unsynced = true;
    let mut b = Bridge {
        hyp: &mut hyp,
        plat: &mut plat,
        vcpu: Vcpu::default(),
        calls: 0,
    };
    let mut exits = 0u64;
    for step in input.steps.iter().take(128) {
        let calls_before = b.calls;
        let hypercalls_before = guest.stats().hypercalls;
        match *step {
            // The kernel's protocol: early mappings are noted before the
            // guard is initialised, one sync guards them all, and only
            // then does ioremap/iounmap run (arch-hooks' `init`).
            Step::Map { .. } | Step::Unmap { .. } | Step::UnmapRaw { .. } if unsynced => {}
            Step::Note { .. } if !unsynced => {}
            Step::Map { phys, size } => {
                let (p, s) = (phys.get(), size_of(size));
                if guest.map(&mut b, p, s).is_ok() {
                    live.push((p, s));
                }
            }
            Step::Unmap { n } => {
                if !live.is_empty() {
                    let i = usize::from(n) % live.len();
                    let (p, s) = live[i];
                    match guest.unmap(&mut b, p, s) {
                        // Releasing the middle of a segment needs a new
                        // one: with the tracker full, the mapping stays
                        // (and stays guarded), and iounmap reports it.
                        Err(GuardError::Track(TrackError::Full)) => {}
                        Err(GuardError::Track(e)) => {
                            panic!("a live mapping could not be unmapped: {e:?}")
                        }
                        Ok(()) | Err(GuardError::Refused { .. }) => {
                            live.remove(i);
                        }
                    }
                }
            }
            Step::UnmapRaw { phys, size } => {
                let (p, s) = (phys.get(), size_of(size));
                let covered = |a: u64| {
                    live.iter().any(|&(lp, ls)| {
                        mmio_guard::tracker::granule_range(lp, ls)
                            .is_ok_and(|(s, e)| s <= a && a < e)
                    })
                };
                let r = guest.unmap(&mut b, p, s);
                // The tracker drops the references even when the
                // hypervisor refuses to unguard (the guest no longer
                // uses the range either way).
                if r.is_ok() || matches!(r, Err(GuardError::Refused { .. })) {
                    // Only legal if it dropped references that existed:
                    // forget the live mapping it matches.
                    let (start, end) = mmio_guard::tracker::granule_range(p, s).expect("ok");
                    assert!(
                        covered(start) && covered(end - 1),
                        "unmapped what was never mapped"
                    );
                    if let Some(i) = live.iter().position(|&(lp, ls)| {
                        mmio_guard::tracker::granule_range(lp, ls) == Ok((start, end))
                    }) {
                        live.remove(i);
                    } else {
                        // A sub-range of some mapping was released: the
                        // model can no longer say which; start over.
                        return;
                    }
                } else {
                    assert!(matches!(
                        r,
                        Err(GuardError::Track(
                            TrackError::NotMapped | TrackError::BadRange | TrackError::Full
                        )) | Err(GuardError::Refused { .. })
                    ));
                }
            }
            Step::Note { phys, size } => {
                let (p, s) = (phys.get(), size_of(size));
                if guest.note(p, s).is_ok() {
                    live.push((p, s));
                }
            }
            Step::Sync if unsynced => {
                if guest.sync(&mut b).is_err() {
                    // The kernel gives the guard up.
                    return;
                }
                unsynced = false;
            }
            Step::Sync => {}
            Step::Enroll => guest.enroll(&mut b).expect("ENROLL is always accepted"),
            Step::Ranged(r) => guest.set_ranged(r),
            Step::Access { phys, write } => {
                let ipa = phys.get() & !3;
                b.plat.take_events();
                let mut v = Vcpu::default();
                // A 32-bit access through x1, valid syndrome.
                let esr = (0x24 << 26)
                    | (1 << 25)
                    | (1 << 24)
                    | (2 << 22)
                    | (1 << 16)
                    | (u64::from(write) << 6)
                    | 7;
                let next =
                    b.hyp
                        .handle_sync(Esr(esr), ipa & 0xfff, (ipa >> 12) << 4, &mut v, b.plat);
                // An allowed access is done on the device once the core is
                // released, as the EL2 code does.
                match next {
                    Next::Guest => {}
                    Next::Mmio(access) => access.perform(&mut v, b.plat),
                    other => panic!("an MMIO access asked for {other:?}"),
                }
                exits += 1;
                let emulated = !b.plat.accesses.is_empty();
                let guard = services.guard.lock();
                // What the core sees: IPA bits [51:12] and the page offset.
                let seen = ipa & 0x000f_ffff_ffff_ffff;
                let window = machine::layout().devices.contains(Ipa(seen));
                // Synced, the guest's own books say what is allowed;
                // before that, what was noted may not be guarded yet.
                let mapped = if unsynced {
                    guard.is_guarded(Ipa(seen))
                } else {
                    guest.tracker().count_at(seen) > 0
                };
                let allowed = window && (!guard.enforcing() || mapped);
                assert_eq!(emulated, allowed, "access at {ipa:#x}: emulated {emulated}");
            }
        }
        assert_eq!(
            guest.stats().hypercalls - hypercalls_before,
            b.calls - calls_before,
            "the guest's hypercall count is off"
        );
        check(&guest, &live, &services, unsynced);
    }
    assert_eq!(
        b.hyp.all_stats().exits_total(),
        b.calls + exits,
        "exits_total"
    );
}

fn check(guest: &Guard<SEGMENTS>, live: &[(u64, u64)], services: &Services, unsynced: bool) {
    let segs = guest.tracker().segments();
    let mut union = RangeSet::default();
    for (i, s) in segs.iter().enumerate() {
        assert!(s.start < s.end && s.count > 0, "bad segment {s:?}");
        assert!(
            s.start % GRANULE == 0 && s.end % GRANULE == 0,
            "unaligned {s:?}"
        );
        if let Some(prev) = i.checked_sub(1).and_then(|j| segs.get(j)) {
            assert!(
                prev.end <= s.start,
                "segments overlap or are unsorted: {segs:?}"
            );
            assert!(
                prev.end < s.start || prev.count != s.count,
                "segments not merged: {segs:?}"
            );
        }
        union.add(s.start, s.end);
    }
    // Every live mapping's granules are counted once per mapping.
    let mut probes: Vec<u64> = segs
        .iter()
        .flat_map(|s| [s.start, s.end - GRANULE])
        .collect();
    for &(p, s) in live {
        if let Ok((a, e)) = mmio_guard::tracker::granule_range(p, s) {
            probes.extend([a, e - GRANULE]);
        }
    }
    for g in probes {
        let expected = live
            .iter()
            .filter(|&&(p, s)| {
                mmio_guard::tracker::granule_range(p, s).is_ok_and(|(a, e)| a <= g && g < e)
            })
            .count();
        assert_eq!(
            guest.tracker().count_at(g) as usize,
            expected,
            "refcount at {g:#x}"
        );
    }
    let guard = services.guard.lock();
    if unsynced {
        for r in guard.guarded() {
            let (a, e) = (r.start().get(), r.end().get());
            assert!(
                union.contains(a) && union.contains(e - 1),
                "guarded beyond the guest's mappings"
            );
        }
    } else {
        invariants::check_guard(&guard, &union);
    }
}
