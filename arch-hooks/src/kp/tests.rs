// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The guest's kernel-protect state machine against fake hypervisors.

use std::string::String;
use std::vec::Vec;

use super::*;
use crate::guest_kp::abi;

const TEXT: (u64, u64) = (0x4021_0000, 0x40a0_0000);
const RODATA: (u64, u64) = (0x40a0_0000, 0x40d0_0000);
const DATA: (u64, u64) = (0x40e0_0000, 0x40e4_0100);
const BSS: (u64, u64) = (0x40e4_0100, 0x40f0_0000);

fn layout() -> Builder {
    Builder {
        text: TEXT,
        rodata: RODATA,
        data: DATA,
        bss: BSS,
        fixmap_va: 0xffff_7fff_fe7f_d000,
        fixmap_size: 4096,
    }
}

/// A hypervisor that offers the compact call or not, and counts calls.
struct Hyp {
    compact: bool,
    calls: Vec<u32>,
    intact: bool,
    /// x2 and x3 of each ENABLE_VM_PROTECTION.
    other_text: Vec<(u64, u64)>,
}

impl Hypercall for Hyp {
    fn call(&mut self, fid: u32, a: [u64; 4]) -> [u64; 4] {
        self.calls.push(fid);
        match fid {
            guest::SMCCC_ARCH_FEATURES => match a[0] as u32 {
                abi::ASSET_INFO_COMPACT if !self.compact => [u64::MAX, 0, 0, 0],
                abi::ASSET_INFO | abi::ASSET_INFO_COMPACT | abi::ENABLE_VM_PROTECTION => {
                    [0, 0, 0, 0]
                }
                _ => [u64::MAX, 0, 0, 0],
            },
            abi::ASSET_INFO_COMPACT if self.compact => [0, 0, 0, 0],
            abi::ASSET_INFO_COMPACT => [u64::MAX, 0, 0, 0],
            abi::ASSET_INFO => [0, 0, 0, 0],
            abi::ENABLE_VM_PROTECTION if a[0] == abi::SELF_ADDRSPACE => {
                self.other_text.push((a[1], a[2]));
                [0, u64::from(self.intact), 3, 0xabcd]
            }
            _ => [KpError::Denied.as_raw(), 0, 0, 0],
        }
    }
}

fn text(f: impl Fn(&KpState, &mut String) -> fmt::Result, s: &KpState) -> String {
    let mut out = String::new();
    f(s, &mut out).unwrap();
    out
}

#[test]
fn reports_compactly_then_protects_and_self_checks() {
    let mut s = KpState::new();
    s.set_mode(Mode::On);
    let mut hv = Hyp {
        compact: true,
        calls: Vec::new(),
        intact: true,
        other_text: Vec::new(),
    };
    let mut placed = None;
    assert_eq!(
        s.report(&mut hv, &layout(), |r| {
            placed = Some(r.to_bytes());
            0x4100_0000
        }),
        Status::Reported(ReportPath::Compact)
    );
    assert!(placed.is_some());
    assert_eq!(text(|s, w| s.write_state(w), &s), "reported (compact)\n");
    // .rodata.text from its symbols, widened to pages.
    s.set_other_text(0x4120_0800, 0x4120_4010);
    assert_eq!(s.other_text(), (0x4120_0000, 0x5000));
    assert_eq!(s.enable(&mut hv), Status::Protected);
    assert_eq!(text(|s, w| s.write_state(w), &s), "protected\n");
    let check = s.self_check(&mut hv).unwrap();
    assert_eq!(
        check,
        SelfCheck {
            intact: true,
            patches: 3,
            measurement: 0xabcd
        }
    );
    assert_eq!(
        text(|s, w| s.write_self_check(w), &s),
        "verdict=intact\nmeasurement=000000000000abcd\npatches=3\nchecks=1\n"
    );
    assert_eq!(text(|s, w| s.write_verdict(w), &s), "intact\n");
    assert!(text(|s, w| s.write_regions(w), &s).contains("TEXT"));
    // Named at enable only; self-checks name nothing.
    assert_eq!(hv.other_text, [(0x4120_0000, 0x5000), (0, 0)]);
    s.set_other_text(5, 5);
    assert_eq!(s.other_text(), (0, 0), "empty");
}

#[test]
fn falls_back_to_per_region_calls() {
    let mut s = KpState::new();
    s.set_mode(Mode::On);
    let mut hv = Hyp {
        compact: false,
        calls: Vec::new(),
        intact: true,
        other_text: Vec::new(),
    };
    assert_eq!(
        s.report(&mut hv, &layout(), |_| 0x4100_0000),
        Status::Reported(ReportPath::PerRegion)
    );
    assert_eq!(
        hv.calls.iter().filter(|&&f| f == abi::ASSET_INFO).count(),
        5
    );
}

#[test]
fn off_does_nothing_and_a_modified_kernel_shows() {
    let mut s = KpState::new();
    let mut hv = Hyp {
        compact: true,
        calls: Vec::new(),
        intact: false,
        other_text: Vec::new(),
    };
    assert_eq!(s.report(&mut hv, &layout(), |_| 0), Status::NotRequested);
    assert!(hv.calls.is_empty());
    assert_eq!(s.self_check(&mut hv), Err(KpError::ObjectState));
    s.set_mode(Mode::Strict);
    assert!(s.must_refuse_boot());
    s.report(&mut hv, &layout(), |_| 0);
    s.enable(&mut hv);
    assert!(!s.must_refuse_boot());
    assert!(text(|s, w| s.write_self_check(w), &s).starts_with("verdict=MODIFIED"));
    assert_eq!(text(|s, w| s.write_verdict(w), &s), "MODIFIED\n");
}

#[test]
fn a_bad_layout_is_reported_not_sent() {
    let mut s = KpState::new();
    s.set_mode(Mode::On);
    let mut hv = Hyp {
        compact: true,
        calls: Vec::new(),
        intact: true,
        other_text: Vec::new(),
    };
    let mut bad = layout();
    bad.rodata = (TEXT.0, RODATA.1);
    assert!(matches!(
        s.report(&mut hv, &bad, |_| 0),
        Status::BadLayout(_)
    ));
    assert!(hv.calls.is_empty(), "nothing sent");
}

/// A hypervisor that takes the measurement after enable (in idle time):
/// its enable answer has no measurement yet.
struct DeferredHyp;

impl Hypercall for DeferredHyp {
    fn call(&mut self, fid: u32, _: [u64; 4]) -> [u64; 4] {
        match fid {
            abi::ENABLE_VM_PROTECTION => [0, 1, 0, 0],
            _ => [0, 0, 0, 0],
        }
    }
}

#[test]
fn no_verdict_until_the_hypervisor_has_a_measurement() {
    let mut s = KpState::new();
    s.set_mode(Mode::On);
    let mut hv = DeferredHyp;
    s.report(&mut hv, &layout(), |_| 0x4100_0000);
    assert_eq!(s.enable(&mut hv), Status::Protected);
    assert_eq!(
        text(|s, w| s.write_self_check(w), &s),
        "verdict=none\nchecks=0\n"
    );
    assert_eq!(text(|s, w| s.write_verdict(w), &s), "none\n");
}

/// A hypervisor still measuring: BUSY for the first `busy` self-checks.
struct BusyHyp {
    busy: u32,
    pauses: u32,
}

impl Hypercall for BusyHyp {
    fn call(&mut self, fid: u32, _: [u64; 4]) -> [u64; 4] {
        match fid {
            abi::ENABLE_VM_PROTECTION if self.busy > 0 => {
                self.busy -= 1;
                [KpError::Busy.as_raw(), 0, 0, 0]
            }
            abi::ENABLE_VM_PROTECTION => [0, 1, 0, 0xabcd],
            _ => [0, 0, 0, 0],
        }
    }
    fn pause(&mut self) {
        self.pauses += 1;
    }
}

#[test]
fn a_busy_self_check_is_asked_again_a_bounded_number_of_times() {
    let mut s = KpState::new();
    s.set_mode(Mode::On);
    let mut hv = BusyHyp { busy: 0, pauses: 0 };
    s.report(&mut hv, &layout(), |_| 0x4100_0000);
    assert_eq!(s.enable(&mut hv), Status::Protected);
    hv.busy = 5;
    let check = s.self_check(&mut hv).unwrap();
    assert!(check.intact);
    assert_eq!(hv.pauses, 5, "one pause per BUSY");
    hv.busy = u32::MAX;
    hv.pauses = 0;
    assert_eq!(s.self_check(&mut hv), Err(KpError::Busy));
    assert_eq!(hv.pauses, BUSY_RETRIES, "and no more");
}

#[test]
fn the_self_check_in_three_steps_is_the_self_check() {
    // The kernel takes its lock for the first and last steps only, so
    // the BUSY pauses may sleep.
    let mut s = KpState::new();
    s.set_mode(Mode::On);
    let mut hv = BusyHyp { busy: 0, pauses: 0 };
    assert_eq!(s.may_self_check(), Err(KpError::ObjectState));
    s.report(&mut hv, &layout(), |_| 0x4100_0000);
    assert_eq!(
        s.may_self_check(),
        Err(KpError::ObjectState),
        "reported only"
    );
    s.enable(&mut hv);
    assert_eq!(s.may_self_check(), Ok(()));
    hv.busy = 3;
    let check = guest::self_check(&mut hv, BUSY_RETRIES).unwrap();
    assert_eq!(hv.pauses, 3);
    s.record_self_check(check);
    assert_eq!(text(|s, w| s.write_verdict(w), &s), "intact\n");
    assert!(text(|s, w| s.write_self_check(w), &s).ends_with("checks=1\n"));
}

/// KVM itself: the UID matches, kernel protect is not there.
struct Kvm {
    calls: Vec<u32>,
}

impl Hypercall for Kvm {
    fn call(&mut self, fid: u32, _: [u64; 4]) -> [u64; 4] {
        self.calls.push(fid);
        [u64::MAX, 0, 0, 0]
    }
}

#[test]
fn nothing_is_sent_to_a_hypervisor_that_does_not_offer_kernel_protect() {
    let mut s = KpState::new();
    s.set_mode(Mode::Strict);
    let mut hv = Kvm { calls: Vec::new() };
    assert_eq!(
        s.report(&mut hv, &layout(), |_| 0x4100_0000),
        Status::NotOffered
    );
    assert!(
        hv.calls.iter().all(|&f| f == guest::SMCCC_ARCH_FEATURES),
        "only discovery: {:x?}",
        hv.calls
    );
    assert_eq!(
        text(|s, w| s.write_state(w), &s),
        "unsupported: the hypervisor does not offer kernel protect\n"
    );
    assert!(s.must_refuse_boot());
    assert_eq!(s.enable(&mut hv), Status::NotOffered, "and no enable call");
    assert!(hv.calls.iter().all(|&f| f == guest::SMCCC_ARCH_FEATURES));
}

/// A hypervisor with PATCH_SITES (and TEXT_PATCH, unless `batches` is
/// false) that refuses the table kinds in `refuse`.
struct Sites {
    batches: bool,
    refuse: Vec<u64>,
    tables: Vec<[u64; 4]>,
}

impl Hypercall for Sites {
    fn call(&mut self, fid: u32, a: [u64; 4]) -> [u64; 4] {
        match fid {
            guest::SMCCC_ARCH_FEATURES => match a[0] as u32 {
                abi::TEXT_PATCH if !self.batches => [u64::MAX, 0, 0, 0],
                _ => [0, 0, 0, 0],
            },
            abi::ASSET_INFO_COMPACT => [0, 0, 0, 0],
            abi::ENABLE_VM_PROTECTION => [0, 1, 0, 0xabcd],
            abi::PATCH_SITES => {
                self.tables.push(a);
                if self.refuse.contains(&a[0]) {
                    [KpError::ArgumentInvalid.as_raw(), 0, 0, 0]
                } else {
                    [0, a[2] - 1, 1, 0]
                }
            }
            _ => [u64::MAX, 0, 0, 0],
        }
    }
}

fn tables() -> PatchTables {
    PatchTables {
        text_va: 0xffff_8000_8001_0000,
        jump_table: Table {
            ipa: 0x40b0_0000,
            entries: 1029,
        },
        ftrace_callers: Table {
            ipa: 0x40b1_0000,
            entries: 1,
        },
        mcount_loc: Table {
            ipa: 0x40c0_0000,
            entries: 18_541,
        },
    }
}

fn reported(hv: &mut dyn Hypercall) -> KpState {
    let mut s = KpState::new();
    s.set_mode(Mode::On);
    s.report(hv, &layout(), |_| 0x4100_0000);
    s
}

#[test]
fn sites_are_registered_trampolines_first_and_batches_follow_protection() {
    let mut hv = Sites {
        batches: true,
        refuse: Vec::new(),
        tables: Vec::new(),
    };
    let mut s = reported(&mut hv);
    let t = s.register_sites(&mut hv, &tables());
    let kinds: Vec<u64> = hv.tables.iter().map(|a| a[0]).collect();
    assert_eq!(kinds, [0, 2, 1], "jump table, trampolines, then mcount_loc");
    assert!(hv.tables.iter().all(|a| a[3] == 0xffff_8000_8001_0000));
    assert_eq!(
        t.mcount_loc,
        TableOutcome::Registered(Registered {
            sites: 18_540,
            skipped: 1
        })
    );
    assert!(!s.batches(), "no batches before protection");
    s.enable(&mut hv);
    assert!(s.batches());
    let dump = text(|s, w| s.write_sites(w), &s);
    assert!(
        dump.contains("mcount_loc=registered sites=18540 skipped=1\n"),
        "{dump}"
    );
    assert!(dump.ends_with("batches=yes\n"));
}

#[test]
fn a_refused_trampoline_table_keeps_mcount_loc_back() {
    let mut hv = Sites {
        batches: true,
        refuse: vec![SiteTable::FtraceCallers.as_raw()],
        tables: Vec::new(),
    };
    let mut s = reported(&mut hv);
    let t = s.register_sites(&mut hv, &tables());
    assert_eq!(
        t.ftrace_callers,
        TableOutcome::Refused(KpError::ArgumentInvalid)
    );
    assert_eq!(t.mcount_loc, TableOutcome::NotSent);
    assert!(matches!(t.jump_table, TableOutcome::Registered(_)));
    s.enable(&mut hv);
    assert!(!s.batches());
    assert!(text(|s, w| s.write_sites(w), &s).contains("ftrace_callers=refused ARGUMENT_INVALID\n"));
}

#[test]
fn no_batches_without_text_patch_and_no_tables_unless_reported() {
    let mut hv = Sites {
        batches: false,
        refuse: Vec::new(),
        tables: Vec::new(),
    };
    let mut s = reported(&mut hv);
    s.register_sites(&mut hv, &tables());
    s.enable(&mut hv);
    assert!(!s.batches());
    // Off: nothing is sent.
    let mut hv = Sites {
        batches: true,
        refuse: Vec::new(),
        tables: Vec::new(),
    };
    let mut off = KpState::new();
    assert_eq!(
        off.register_sites(&mut hv, &tables()),
        SiteTables::default()
    );
    assert!(hv.tables.is_empty());
}

/// A hypervisor that also keeps a code log.
struct WithLog(Hyp);

impl Hypercall for WithLog {
    fn call(&mut self, fid: u32, a: [u64; 4]) -> [u64; 4] {
        match (fid, a[0]) {
            (crate::guest_kp::mem_perms::CODE_LOG, 0) => [0, 0x0102, 0x0304, 5],
            (crate::guest_kp::mem_perms::CODE_LOG, 1) => [0, 0x0506, 0x0708, 5],
            _ => self.0.call(fid, a),
        }
    }
}

#[test]
fn the_self_check_shows_the_code_log() {
    let mut s = KpState::new();
    s.set_mode(Mode::On);
    let mut hv = WithLog(Hyp {
        compact: true,
        calls: Vec::new(),
        intact: true,
        other_text: Vec::new(),
    });
    s.report(&mut hv, &layout(), |_| 0x4100_0000);
    s.enable(&mut hv);
    s.self_check(&mut hv).unwrap();
    let out = text(|s, w| s.write_self_check(w), &s);
    assert!(
        out.contains(
            "code_log=0000000000000102000000000000030400000000000005060000000000000708\ncode_log_records=5\nchecks=1\n"
        ),
        "{out}"
    );
}
