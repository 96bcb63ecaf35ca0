// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The guest's reporting against fake hypervisors that follow the
//! hypervisor's rules, and against scripted ones that answer anything.

use std::vec::Vec;

use super::super::abi::{KpError, RECORD_SIZE};
use super::super::builder::Builder;
use super::super::record::{record_placement, Collector, Layout, Region};
use super::*;

const RAM: (u64, u64) = (0x4000_0000, 0x8000_0000);
const RECORD_IPA: u64 = 0x4184_1100;

fn record() -> KernelAssetInfo {
    Builder {
        text: (0x4020_0000, 0x4100_0000),
        rodata: (0x4100_0000, 0x4150_0000),
        data: (0x4180_0000, 0x4184_3a18),
        bss: (0x4184_3a40, 0x418a_1238),
        fixmap_va: 0xffff_ffff_fe7f_b000,
        fixmap_size: 4096,
    }
    .build()
    .unwrap()
}

#[derive(Debug, PartialEq)]
enum State {
    Empty,
    Collecting(Collector),
    Configured(Layout),
}

/// A hypervisor with kernel protect's rules: the compact record is
/// accepted once; regions one by one, each once; the self-check only
/// after a complete layout and only for the caller itself.
struct FakeHyp {
    ram: (u64, u64),
    compact: bool,
    kp: bool,
    mem: Vec<(u64, [u8; 132])>,
    state: State,
    checks: u32,
    log: Vec<(u32, [u64; 4])>,
}

impl FakeHyp {
    fn new() -> Self {
        FakeHyp {
            ram: RAM,
            compact: true,
            kp: true,
            mem: Vec::new(),
            state: State::Empty,
            checks: 0,
            log: Vec::new(),
        }
    }

    /// The guest stores its record at `ipa`.
    fn store(&mut self, ipa: u64, rec: &KernelAssetInfo) {
        self.mem.push((ipa, rec.to_bytes()));
    }

    fn read(&self, ipa: u64) -> [u8; 132] {
        self.mem
            .iter()
            .rev()
            .find(|(a, _)| *a == ipa)
            .map(|(_, b)| *b)
            .unwrap_or([0; 132])
    }

    fn compact(&mut self, ipa: u64) -> Result<(), KpError> {
        match self.state {
            State::Configured(_) => return Err(KpError::ObjectConfigured),
            State::Collecting(_) => return Err(KpError::ObjectState),
            State::Empty => {}
        }
        record_placement(ipa, self.ram)?;
        let layout = KernelAssetInfo::from_bytes(&self.read(ipa))?.validate(self.ram)?;
        self.state = State::Configured(layout);
        Ok(())
    }

    fn asset_info(&mut self, ty: u64, start: u64, size: u64) -> Result<(), KpError> {
        let mut c = match self.state {
            State::Configured(_) => return Err(KpError::ObjectConfigured),
            State::Collecting(c) => c,
            State::Empty => Collector::new(),
        };
        match c.add(ty, start, size, self.ram)? {
            Some(layout) => self.state = State::Configured(layout),
            None => self.state = State::Collecting(c),
        }
        Ok(())
    }

    fn enable(&mut self, target: u64) -> Result<(), KpError> {
        if target != SELF_ADDRSPACE {
            return Err(KpError::Denied);
        }
        match self.state {
            State::Configured(_) => {
                self.checks += 1;
                Ok(())
            }
            _ => Err(KpError::ObjectState),
        }
    }
}

impl Hypercall for FakeHyp {
    fn call(&mut self, fid: u32, a: [u64; 4]) -> [u64; 4] {
        self.log.push((fid, a));
        let r = match fid {
            ASSET_INFO_COMPACT if self.kp && self.compact => self.compact(a[0]),
            ASSET_INFO if self.kp => self.asset_info(a[0], a[1], a[2]),
            ENABLE_VM_PROTECTION if self.kp => self.enable(a[0]),
            _ => Err(KpError::Unimplemented),
        };
        [KpError::encode(r), 0, 0, 0]
    }
}

/// Answers every call with x0 = `answers[fid]`.
struct Scripted {
    compact: u64,
    asset_info: u64,
    enable: u64,
    log: Vec<(u32, [u64; 4])>,
}

impl Scripted {
    fn new(compact: u64, asset_info: u64, enable: u64) -> Self {
        Scripted {
            compact,
            asset_info,
            enable,
            log: Vec::new(),
        }
    }
}

impl Hypercall for Scripted {
    fn call(&mut self, fid: u32, a: [u64; 4]) -> [u64; 4] {
        self.log.push((fid, a));
        let x0 = match fid {
            ASSET_INFO_COMPACT => self.compact,
            ASSET_INFO => self.asset_info,
            ENABLE_VM_PROTECTION => self.enable,
            _ => u64::MAX,
        };
        // Junk in x1..x3 must not matter.
        [x0, 0xdead, 0xbeef, 0xf00d]
    }
}

fn per_region_calls(rec: &KernelAssetInfo) -> Vec<(u32, [u64; 4])> {
    RegionType::ALL
        .iter()
        .map(|&ty| {
            let r = rec.region(ty);
            (ASSET_INFO, [ty.as_raw(), r.start(), r.size(), 0])
        })
        .collect()
}

#[test]
fn compact_path() {
    let rec = record();
    let mut hv = FakeHyp::new();
    hv.store(RECORD_IPA, &rec);
    assert_eq!(report(&mut hv, &rec, RECORD_IPA), Ok(ReportPath::Compact));
    assert_eq!(hv.log, [(ASSET_INFO_COMPACT, [RECORD_IPA, 0, 0, 0])]);
    assert_eq!(hv.state, State::Configured(rec.validate(RAM).unwrap()));
    // Idempotency guard: a second submission is refused.
    assert_eq!(
        report(&mut hv, &rec, RECORD_IPA),
        Err(KpError::ObjectConfigured)
    );
    assert_eq!(hv.log.len(), 2);
}

#[test]
fn per_region_fallback() {
    let rec = record();
    let mut hv = FakeHyp::new();
    hv.compact = false;
    assert_eq!(report(&mut hv, &rec, RECORD_IPA), Ok(ReportPath::PerRegion));
    let mut expect = vec![(ASSET_INFO_COMPACT, [RECORD_IPA, 0, 0, 0])];
    expect.extend(per_region_calls(&rec));
    assert_eq!(hv.log, expect);
    assert_eq!(hv.state, State::Configured(rec.validate(RAM).unwrap()));
    // Again: the first region is refused, and nothing more is sent.
    hv.log.clear();
    assert_eq!(
        report(&mut hv, &rec, RECORD_IPA),
        Err(KpError::ObjectConfigured)
    );
    assert_eq!(hv.log.len(), 2);
}

#[test]
fn no_kernel_protect() {
    let rec = record();
    let mut hv = FakeHyp::new();
    hv.kp = false;
    assert_eq!(
        report(&mut hv, &rec, RECORD_IPA),
        Err(KpError::Unimplemented)
    );
    // Compact, then the first region; then it gives up.
    assert_eq!(hv.log.len(), 2);
    assert_eq!(
        enable_protection(&mut hv, (0, 0)),
        Err(KpError::Unimplemented)
    );
}

#[test]
fn local_checks_send_nothing() {
    let mut hv = FakeHyp::new();
    let rec = record();
    for ipa in [RECORD_IPA | 0xfff, 0x4184_1fff - 100, u64::MAX] {
        assert_eq!(
            report(&mut hv, &rec, ipa),
            Err(KpError::ArgumentAlignment),
            "{ipa:#x}"
        );
    }
    let mut bad = rec;
    bad.set_region(RegionType::Rodata, rec.region(RegionType::Text));
    assert_eq!(
        report(&mut hv, &bad, RECORD_IPA),
        Err(KpError::ArgumentInvalid)
    );
    let mut bad = rec;
    bad.set_region(RegionType::Bss, Region::new(0x4190_0010, 0x1000));
    assert_eq!(
        report(&mut hv, &bad, RECORD_IPA),
        Err(KpError::ArgumentAlignment)
    );
    assert!(hv.log.is_empty());
    // The last offset at which the record still fits in its page.
    hv.store(0x4184_1000 + 4096 - RECORD_SIZE as u64, &rec);
    assert_eq!(
        report(&mut hv, &rec, 0x4184_1000 + 4096 - RECORD_SIZE as u64),
        Ok(ReportPath::Compact)
    );
}

#[test]
fn hypervisor_checks_ram() {
    let rec = record();
    // The hypervisor's RAM ends before BSS.
    let mut hv = FakeHyp::new();
    hv.ram = (RAM.0, 0x4188_0000);
    hv.store(RECORD_IPA, &rec);
    assert_eq!(report(&mut hv, &rec, RECORD_IPA), Err(KpError::AddrInvalid));
    assert_eq!(hv.state, State::Empty);
    // Region by region: TEXT, RODATA and DATA go in, BSS is refused, the
    // fixmap slot is never sent.
    let mut hv = FakeHyp::new();
    hv.ram = (RAM.0, 0x4188_0000);
    hv.compact = false;
    assert_eq!(report(&mut hv, &rec, RECORD_IPA), Err(KpError::AddrInvalid));
    assert_eq!(hv.log.len(), 1 + 4);
    assert_eq!(hv.log[1..], per_region_calls(&rec)[..4]);
    let State::Collecting(c) = hv.state else {
        panic!("{:?}", hv.state)
    };
    assert!(c.is_reported(RegionType::Data) && !c.is_reported(RegionType::Bss));
    // A compact submission after a partial one is out of order.
    hv.compact = true;
    hv.store(RECORD_IPA, &rec);
    assert_eq!(report(&mut hv, &rec, RECORD_IPA), Err(KpError::ObjectState));
}

#[test]
fn record_outside_ram_or_stale() {
    let rec = record();
    let mut hv = FakeHyp::new();
    assert_eq!(report(&mut hv, &rec, 0x1000), Err(KpError::AddrInvalid));
    // Nothing stored at the IPA: the hypervisor reads zeros.
    assert_eq!(
        report(&mut hv, &rec, RECORD_IPA),
        Err(KpError::ArgumentInvalid)
    );
    assert_eq!(hv.state, State::Empty);
}

#[test]
fn enable_protection_self_check() {
    let rec = record();
    let mut hv = FakeHyp::new();
    assert_eq!(
        enable_protection(&mut hv, (0, 0)),
        Err(KpError::ObjectState)
    );
    hv.store(RECORD_IPA, &rec);
    report(&mut hv, &rec, RECORD_IPA).unwrap();
    assert_eq!(enable_protection(&mut hv, (0, 0)).map(drop), Ok(()));
    assert_eq!(enable_protection(&mut hv, (0, 0)).map(drop), Ok(()));
    assert_eq!(hv.checks, 2);
    assert_eq!(
        hv.log.last(),
        Some(&(ENABLE_VM_PROTECTION, [SELF_ADDRSPACE, 0, 0, 0]))
    );
    // The hypervisor refuses every other target.
    for target in [1, 2, 0xffff, u64::MAX] {
        assert_eq!(
            KpError::from_raw(hv.call(ENABLE_VM_PROTECTION, [target, 0, 0, 0])[0]),
            Err(KpError::Denied)
        );
    }
}

const ALL_ERRORS: [KpError; 8] = [
    KpError::ArgumentInvalid,
    KpError::ArgumentSize,
    KpError::ArgumentAlignment,
    KpError::AddrInvalid,
    KpError::Denied,
    KpError::Busy,
    KpError::ObjectState,
    KpError::ObjectConfigured,
];

#[test]
fn every_compact_error_is_returned_without_fallback() {
    let rec = record();
    let unknown = [2u64, 36, -2i64 as u64, -3i64 as u64, 1 << 40];
    for raw in ALL_ERRORS
        .iter()
        .map(|e| e.as_raw())
        .chain(unknown.iter().copied())
    {
        let mut hv = Scripted::new(raw, 0, 0);
        assert_eq!(
            report(&mut hv, &rec, RECORD_IPA),
            KpError::from_raw(raw).map(|()| ReportPath::Compact)
        );
        assert_eq!(hv.log.len(), 1, "{raw:#x}: no fallback");
    }
}

#[test]
fn every_per_region_error_stops_the_fallback() {
    let rec = record();
    for e in ALL_ERRORS {
        let mut hv = Scripted::new(KpError::Unimplemented.as_raw(), e.as_raw(), 0);
        assert_eq!(report(&mut hv, &rec, RECORD_IPA), Err(e));
        assert_eq!(hv.log.len(), 2);
    }
    let mut hv = Scripted::new(KpError::Unimplemented.as_raw(), 0, 0);
    assert_eq!(report(&mut hv, &rec, RECORD_IPA), Ok(ReportPath::PerRegion));
    assert_eq!(hv.log.len(), 6);
}

#[test]
fn every_enable_error_is_returned() {
    for e in ALL_ERRORS.iter().copied().chain([KpError::Unimplemented]) {
        let mut hv = Scripted::new(0, 0, e.as_raw());
        assert_eq!(enable_protection(&mut hv, (0, 0)), Err(e));
    }
    let mut hv = Scripted::new(0, 0, 77);
    assert!(matches!(
        enable_protection(&mut hv, (0, 0)),
        Err(KpError::Unknown(c)) if c.get() == 77
    ));
    // On success x1..x3 are the answer, whatever the fake put there.
    let mut hv = Scripted::new(0, 0, 0);
    assert_eq!(
        enable_protection(&mut hv, (0, 0)),
        Ok(SelfCheck {
            intact: false,
            patches: 0xbeef,
            measurement: 0xf00d
        })
    );
}

#[test]
fn works_through_a_trait_object() {
    let rec = record();
    let mut fake = FakeHyp::new();
    fake.store(RECORD_IPA, &rec);
    let hv: &mut dyn Hypercall = &mut fake;
    assert_eq!(report(hv, &rec, RECORD_IPA), Ok(ReportPath::Compact));
    assert_eq!(enable_protection(hv, (0, 0)).map(drop), Ok(()));
}

/// A hypervisor that answers TEXT_PATCH from a script and records calls.
struct Batcher {
    answers: Vec<[u64; 4]>,
    calls: Vec<[u64; 4]>,
    pauses: u32,
}

impl Hypercall for Batcher {
    fn call(&mut self, fid: u32, a: [u64; 4]) -> [u64; 4] {
        assert_eq!(fid, TEXT_PATCH);
        self.calls.push(a);
        if self.answers.is_empty() {
            [0, a[1], 0, 0]
        } else {
            self.answers.remove(0)
        }
    }
    fn pause(&mut self) {
        self.pauses += 1;
    }
}

fn batcher(answers: &[[u64; 4]]) -> Batcher {
    Batcher {
        answers: answers.to_vec(),
        calls: Vec::new(),
        pauses: 0,
    }
}

fn filled(n: usize) -> Box<TextBatch> {
    let mut b = Box::new(TextBatch::new());
    for i in 0..n {
        let p = TextPatch {
            ipa: 0x4020_0000 + 4 * i as u64,
            value: 0xd503_201f,
            size: 4,
        };
        assert!(b.push(0xffff_8000_8020_0000 + 4 * i as u64, p));
    }
    b
}

#[test]
fn a_batch_is_one_call_and_every_entry_is_reported_applied() {
    let mut b = filled(3);
    let mut hv = batcher(&[]);
    let mut seen = Vec::new();
    assert_eq!(
        b.flush(&mut hv, 0x4100_0000, 10, |va, sz| seen.push((va, sz))),
        Ok(3)
    );
    assert_eq!(hv.calls, vec![[0x4100_0000, 3, 0, 0]]);
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[2], (0xffff_8000_8020_0008, 4));
    assert!(b.is_empty());
    // The bytes the hypervisor reads are the entries' encoding.
    // SAFETY: `entries()` points at the batch's own array.
    let first = unsafe { core::slice::from_raw_parts(b.entries(), TEXT_PATCH_ENTRY_SIZE) };
    assert_eq!(
        TextPatch::from_bytes(first.try_into().unwrap())
            .unwrap()
            .ipa,
        0x4020_0000
    );
}

#[test]
fn an_empty_batch_makes_no_call() {
    let mut b = Box::new(TextBatch::new());
    let mut hv = batcher(&[]);
    assert_eq!(b.flush(&mut hv, 0x4100_0000, 10, |_, _| panic!()), Ok(0));
    assert!(hv.calls.is_empty());
}

#[test]
fn a_full_batch_takes_no_more() {
    let mut b = filled(BATCH_ENTRIES);
    assert!(b.is_full());
    let p = TextPatch {
        ipa: 0,
        value: 0,
        size: 4,
    };
    assert!(!b.push(0, p));
    assert_eq!(b.len(), BATCH_ENTRIES);
}

#[test]
fn a_refusal_reports_only_the_entries_before_it() {
    let mut b = filled(5);
    let mut hv = batcher(&[[KpError::Denied.as_raw(), 2, 0, 0]]);
    let mut seen = 0;
    assert_eq!(
        b.flush(&mut hv, 0x4100_0000, 10, |_, _| seen += 1),
        Err(BatchError::Refused { index: 2 })
    );
    assert_eq!(seen, 2);
    assert!(b.is_empty(), "a refused batch is dropped, not retried");
    // An index beyond the batch is clamped, never trusted.
    let mut b = filled(2);
    let mut hv = batcher(&[[KpError::Denied.as_raw(), u64::MAX, 0, 0]]);
    assert_eq!(
        b.flush(&mut hv, 0, 10, |_, _| {}),
        Err(BatchError::Refused { index: 2 })
    );
}

#[test]
fn busy_is_retried_a_bounded_number_of_times() {
    let busy = [KpError::Busy.as_raw(), 0, 0, 0];
    let mut b = filled(1);
    let mut hv = batcher(&[busy, busy]);
    assert_eq!(b.flush(&mut hv, 0, 10, |_, _| {}), Ok(1));
    assert_eq!((hv.calls.len(), hv.pauses), (3, 2));
    let mut b = filled(1);
    let mut hv = batcher(&[busy; 4]);
    assert_eq!(
        b.flush(&mut hv, 0, 2, |_, _| panic!("nothing was applied")),
        Err(BatchError::Call(KpError::Busy))
    );
    assert_eq!(hv.calls.len(), 3);
}

#[test]
fn registering_sites_passes_the_table_and_returns_the_counts() {
    let mut hv = Scripted::new(0, 0, 0);
    // An empty table is not sent at all.
    assert_eq!(
        register_sites(
            &mut hv,
            SiteTable::McountLoc,
            0x4060_0000,
            0,
            0xffff_8000_8001_0000
        ),
        Ok(Registered::default())
    );
    assert!(hv.log.is_empty());
    struct Counts(Vec<(u32, [u64; 4])>, u64);
    impl Hypercall for Counts {
        fn call(&mut self, fid: u32, a: [u64; 4]) -> [u64; 4] {
            self.0.push((fid, a));
            [self.1, 18_000, 541, 0]
        }
    }
    let mut hv = Counts(Vec::new(), 0);
    assert_eq!(
        register_sites(
            &mut hv,
            SiteTable::McountLoc,
            0x4060_0000,
            18_541,
            0xffff_8000_8001_0000
        ),
        Ok(Registered {
            sites: 18_000,
            skipped: 541
        })
    );
    assert_eq!(
        hv.0,
        vec![(PATCH_SITES, [1, 0x4060_0000, 18_541, 0xffff_8000_8001_0000])]
    );
    let mut hv = Counts(Vec::new(), KpError::ObjectState.as_raw());
    assert_eq!(
        register_sites(&mut hv, SiteTable::JumpTable, 0x4050_0000, 10, 0),
        Err(KpError::ObjectState)
    );
}
