// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The guest state machine against fake hypervisors.

use std::collections::BTreeSet;
use std::string::String;

use super::*;
use crate::mmio_guard::abi;

/// A hypervisor offering the guard (or not), with the real one's rules.
struct Hyp {
    offers: bool,
    guarded: BTreeSet<u64>,
    enrolled: bool,
}

impl Hypervisor for Hyp {
    fn call(&mut self, fid: u32, a: [u64; 3]) -> [u64; 4] {
        let ok = [0, 0, 0, 0];
        match fid {
            0x8600_ff01 => abi::KVM_UID,
            0x8600_0000 if self.offers => [
                1 | 1 << 5 | 1 << 6 | 1 << 7 | 1 << 8 | 1 << 10 | 1 << 11,
                0,
                0,
                0,
            ],
            0x8600_0000 => [1, 0, 0, 0],
            abi::INFO => [4096, 0, 0, 0],
            abi::ENROLL => {
                self.enrolled = true;
                ok
            }
            abi::MAP_RANGE => {
                self.guarded.extend((a[0]..a[0] + a[1]).step_by(4096));
                ok
            }
            abi::UNMAP_RANGE => {
                for g in (a[0]..a[0] + a[1]).step_by(4096) {
                    self.guarded.remove(&g);
                }
                ok
            }
            _ => [abi::RET_NOT_SUPPORTED, 0, 0, 0],
        }
    }
}

fn hyp(offers: bool) -> Hyp {
    Hyp {
        offers,
        guarded: BTreeSet::new(),
        enrolled: false,
    }
}

fn text(f: impl Fn(&MmioState, &mut String) -> fmt::Result, s: &MmioState) -> String {
    let mut out = String::new();
    f(s, &mut out).unwrap();
    out
}

#[test]
fn off_by_default_and_says_why() {
    let mut s = MmioState::new();
    let mut hv = hyp(true);
    assert_eq!(s.init(&mut hv), InitOutcome::Unguarded);
    assert!(!hv.enrolled);
    assert!(text(|s, w| s.write_status(w), &s).starts_with("disabled: not requested"));
    assert_eq!(s.ioremap(&mut hv, 0x0900_0000, 0x1000), Ok(()));
    assert!(hv.guarded.is_empty());
}

#[test]
fn enrolls_replays_early_mappings_and_guards_ioremaps() {
    let mut s = MmioState::new();
    s.note_early(0x0900_0000, 0x1000).unwrap();
    s.set_mode(Mode::On);
    let mut hv = hyp(true);
    assert_eq!(s.init(&mut hv), InitOutcome::Enrolled);
    assert!(hv.enrolled && hv.guarded.contains(&0x0900_0000));
    s.ioremap(&mut hv, 0x0800_0000, 0x1_0000).unwrap();
    s.ioremap(&mut hv, 0x0800_0000, 0x1000).unwrap();
    s.iounmap(&mut hv, 0x0800_0000, 0x1_0000).unwrap();
    assert!(
        hv.guarded.contains(&0x0800_0000),
        "shared granule still guarded"
    );
    assert!(!hv.guarded.contains(&0x0800_1000));
    assert_eq!(text(|s, w| s.write_status(w), &s), "enrolled\n");
    let ranges = text(|s, w| s.write_ranges(w), &s);
    assert_eq!(
        ranges,
        "0x08000000-0x08001000 refs=1\n0x09000000-0x09001000 refs=1\n"
    );
    assert!(text(|s, w| s.write_stats(w), &s).contains("calls=ranged\n"));
}

/// The early console's page is tracked from the first instruction, but
/// it is guarded only once enrolled: before that, and when there is no
/// guard to enroll in, nothing is listed.
#[test]
fn nothing_is_listed_as_guarded_unless_enrolled() {
    for (mode, offers) in [(Mode::Off, true), (Mode::On, false), (Mode::Strict, false)] {
        let mut s = MmioState::new();
        s.note_early(0x0900_0000, 0x1000).unwrap();
        s.set_mode(mode);
        let _ = s.init(&mut hyp(offers));
        assert_eq!(text(|s, w| s.write_ranges(w), &s), "", "{mode:?}");
        let stats = text(|s, w| s.write_stats(w), &s);
        assert!(
            stats.contains("ranges=0\n") && stats.contains("granules=0\n"),
            "{stats}"
        );
    }
}

#[test]
fn unavailable_guard_boots_unprotected_unless_strict() {
    for (mode, outcome) in [
        (Mode::On, InitOutcome::Unguarded),
        (Mode::Strict, InitOutcome::RefuseToBoot),
    ] {
        let mut s = MmioState::new();
        s.set_mode(mode);
        assert_eq!(s.init(&mut hyp(false)), outcome);
        assert_eq!(
            text(|s, w| s.write_status(w), &s),
            "unavailable: the hypervisor does not offer the MMIO guard\n"
        );
    }
}

#[test]
fn full_tracker_fails_the_ioremap_with_a_reason() {
    let mut s = MmioState::new();
    s.set_mode(Mode::On);
    let mut hv = hyp(true);
    s.init(&mut hv);
    for i in 0..CAPACITY as u64 {
        s.ioremap(&mut hv, i * 0x2000, 0x1000).unwrap();
    }
    let err = s.ioremap(&mut hv, 0x1000_0000, 0x1000).unwrap_err();
    assert_eq!(err, GuardError::Track(TrackError::Full));
    assert!(
        !hv.guarded.contains(&0x1000_0000),
        "never left unguarded and mapped"
    );
    let mut why = String::new();
    write!(why, "{}", Reason(err)).unwrap();
    assert_eq!(why, "no room to track another MMIO range (capacity 64)");
    assert!(text(|s, w| s.write_stats(w), &s).contains("refused_ioremaps=1\n"));
}

#[test]
fn no_hypervisor_is_reported_and_strict_refuses() {
    let mut s = MmioState::new();
    assert_eq!(s.give_up(Status::NoHypervisor), InitOutcome::Unguarded);
    assert_eq!(s.status(), Status::NotRequested, "off: nothing to report");
    s.set_mode(Mode::Strict);
    assert_eq!(s.give_up(Status::NoHypervisor), InitOutcome::RefuseToBoot);
    assert_eq!(
        text(|s, w| s.write_status(w), &s),
        "unavailable: no KVM-compatible hypervisor answered over HVC\n"
    );
}
