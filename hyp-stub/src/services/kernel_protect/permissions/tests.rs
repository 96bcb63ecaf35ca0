// SPDX-License-Identifier: GPL-2.0 OR MIT
//! Host tests of the page permissions: default deny, every bad input,
//! all or nothing, IMMUTABLE, the policy, the code log, and the W^X
//! invariant checked by walking real stage-2 tables.

use std::vec::Vec;

use guest_kp::mem_perms::{ATTR_EXEC, ATTR_IMMUTABLE, ATTR_READ, ATTR_WRITE};

use super::*;
use crate::devices::DeviceWindows;
use crate::stage2::tests::{CountingTlb, FakeTables};
use crate::stage2::{Attrs, MemType, Stage2, Stage2Error};

/// The page permissions never look at devices.
static NO_DEVICES: DeviceWindows = DeviceWindows::empty();

const RAM: u64 = 0x4000_0000;
const RAM_SIZE: u64 = 16 << 20;
const TEXT: (u64, u64) = (0x4020_0000, 0x4040_0000);
const RODATA: (u64, u64) = (0x4040_0000, 0x4050_0000);
const DATA: (u64, u64) = (0x4050_0000, 0x4058_0000);
const BSS: (u64, u64) = (0x4058_0000, 0x4060_0000);
const HEAP: u64 = 0x4080_0000;
const LIST: u64 = 0x40f0_0000;
const HYP: u64 = RAM + RAM_SIZE;

fn range(r: (u64, u64)) -> IpaRange {
    IpaRange::new(Ipa(r.0), r.1 - r.0).unwrap()
}

fn image() -> [IpaRange; 4] {
    [range(TEXT), range(RODATA), range(DATA), range(BSS)]
}

/// Guest RAM and real stage-2 tables (the image already protected as
/// kernel protect does it).
struct Ops {
    mem: Vec<u8>,
    s2: Stage2<FakeTables>,
    tlb: CountingTlb,
    ram: IpaRange,
}

impl Ops {
    fn new(ram_size: u64, tables: usize) -> Self {
        let ram = IpaRange::new(Ipa(RAM), ram_size).unwrap();
        let mut s2 = Stage2::new(FakeTables {
            tables: Vec::new(),
            limit: tables,
        })
        .unwrap();
        let mut tlb = CountingTlb::default();
        let attrs = Attrs {
            mem: MemType::Normal,
            perms: Perms::RWX,
        };
        s2.map(ram, crate::addr::PhysAddr(RAM), attrs, &mut tlb)
            .unwrap();
        let text = Perms::R_EL1X;
        s2.set_perms(range(TEXT), text, &mut tlb).unwrap();
        s2.set_perms(range(RODATA), Perms::R_EL0X, &mut tlb)
            .unwrap();
        s2.set_perms(range(DATA), Perms::RW, &mut tlb).unwrap();
        s2.set_perms(range(BSS), Perms::RW, &mut tlb).unwrap();
        Self {
            // Zeroed on demand by the host, so a GiB costs little.
            mem: vec![0; ram_size as usize],
            s2,
            tlb,
            ram,
        }
    }
    fn small() -> Self {
        Self::new(RAM_SIZE, 64)
    }
    fn perms(&mut self, ipa: u64) -> Perms {
        self.s2.translate(Ipa(ipa)).unwrap().1.perms
    }
    fn write_list(&mut self, entries: &[Entry]) {
        for (i, e) in entries.iter().enumerate() {
            let at = (LIST - RAM) as usize + i * ENTRY_SIZE;
            self.mem[at..at + ENTRY_SIZE].copy_from_slice(&e.to_bytes());
        }
    }
    /// Writes one instruction at `ipa`.
    fn put(&mut self, ipa: u64, insn: u32) {
        let at = (ipa - RAM) as usize;
        self.mem[at..at + 4].copy_from_slice(&insn.to_le_bytes());
    }
    fn fill(&mut self, ipa: u64, len: u64, byte: u8) {
        let at = (ipa - RAM) as usize;
        self.mem[at..at + len as usize].fill(byte);
    }
    /// The W^X invariant: no page of guest RAM is both writable and
    /// executable at EL1.
    fn assert_w_xor_x(&mut self) {
        let mut ipa = self.ram.start().get();
        while ipa < self.ram.end().get() {
            let p = self.perms(ipa);
            assert!(
                !(p.contains(Perms::WRITE) && p.contains(Perms::EXEC_EL1)),
                "page {ipa:#x} is W+X at EL1: {p:?}"
            );
            ipa += crate::stage2::PAGE_SIZE;
        }
    }
}

impl HypOps for Ops {
    fn guest_ram(&self) -> IpaRange {
        self.ram
    }
    fn device_windows(&self) -> &DeviceWindows {
        &NO_DEVICES
    }
    fn read_guest(&mut self, ipa: Ipa, buf: &mut [u8]) -> Result<(), OpsError> {
        let r = IpaRange::new(ipa, buf.len() as u64).ok_or(OpsError::NotGuestRam)?;
        if !self.ram.covers(&r) {
            return Err(OpsError::NotGuestRam);
        }
        let at = (ipa.get() - RAM) as usize;
        buf.copy_from_slice(&self.mem[at..at + buf.len()]);
        Ok(())
    }
    fn hash_guest(&mut self, ipa: Ipa, len: u64, sink: &mut Sha256) -> Result<(), OpsError> {
        let at = (ipa.get() - RAM) as usize;
        sink.update(&self.mem[at..at + len as usize]);
        Ok(())
    }
    fn write_guest_insn(&mut self, ipa: Ipa, insn: u32) -> Result<(), OpsError> {
        let at = (ipa.get() - RAM) as usize;
        self.mem[at..at + 4].copy_from_slice(&insn.to_le_bytes());
        Ok(())
    }
    fn write_guest_u64(&mut self, ipa: Ipa, value: u64) -> Result<(), OpsError> {
        assert!(ipa.is_aligned(8), "the service checks alignment first");
        let at = (ipa.get() - RAM) as usize;
        self.mem[at..at + 8].copy_from_slice(&value.to_le_bytes());
        Ok(())
    }
    fn log(&mut self, _: fmt::Arguments<'_>) {}
    fn set_perms(&mut self, range: IpaRange, perms: Perms) -> Result<(), OpsError> {
        self.s2
            .set_perms(range, perms, &mut self.tlb)
            .map_err(|e| match e {
                Stage2Error::OutOfTables => OpsError::OutOfTables,
                _ => OpsError::NotGuestRam,
            })
    }
}

/// Where EL1 runs the code the tests make executable: `KVA + ipa`.
const KVA: u64 = 0xffff_8000_0000_0000;

fn e(start: u64, size: u64, attrs: u64) -> Entry {
    let va = if attrs & ATTR_EXEC != 0 {
        KVA.wrapping_add(start)
    } else {
        0
    };
    Entry {
        start,
        size,
        attrs,
        va,
    }
}

/// Room for the jump-label sites of the tests' code.
fn site_store() -> &'static mut [super::super::code_sites::CodeSite] {
    Box::leak(vec![super::super::code_sites::CodeSite::EMPTY; 64].into_boxed_slice())
}

fn enabled(policy: Policy) -> (Permissions<'static>, Ops) {
    let mut p = Permissions::with_code_sites(CodeSites::new(site_store()));
    p.set_policy(policy);
    p.set_hypervisor_memory(IpaRange::new(Ipa(HYP), 16 << 20).unwrap());
    let mut ops = Ops::small();
    p.enable(image(), None, &mut ops).unwrap();
    (p, ops)
}

fn call(p: &mut Permissions, ops: &mut Ops, entries: &[Entry]) -> CallResult {
    ops.write_list(entries);
    p.call(
        LIST,
        entries.len() as u64,
        SiteList::default(),
        &Patching::NONE,
        ops,
    )
}

/// Where the tests put their site lists.
const SITES: u64 = 0x40f8_0000;

/// A call whose code comes with jump-label sites.
fn call_sites(
    p: &mut Permissions,
    ops: &mut Ops,
    entries: &[Entry],
    sites: &[SiteEntry],
) -> CallResult {
    call_sites_with(p, ops, entries, sites, &Patching::NONE)
}

/// The same, judged with `patching` (trampolines, the ftrace policy).
fn call_sites_with(
    p: &mut Permissions,
    ops: &mut Ops,
    entries: &[Entry],
    sites: &[SiteEntry],
    patching: &Patching<'_>,
) -> CallResult {
    ops.write_list(entries);
    for (i, s) in sites.iter().enumerate() {
        let at = (SITES - RAM) as usize + i * SITE_SIZE;
        ops.mem[at..at + SITE_SIZE].copy_from_slice(&s.to_bytes());
    }
    let list = SiteList {
        ipa: SITES,
        count: sites.len() as u64,
    };
    p.call(LIST, entries.len() as u64, list, patching, ops)
}

fn refused(p: &Permissions, r: Refusal) -> u64 {
    p.refused[r as usize]
}

const RX: u64 = ATTR_READ | ATTR_EXEC;
const RW: u64 = ATTR_READ | ATTR_WRITE;

#[test]
fn default_deny_leaves_the_image_and_keeps_el0_execute() {
    let (p, mut ops) = enabled(Policy::Measure);
    assert!(p.enforcing());
    for ipa in [RAM, HEAP, TEXT.0 - 0x1000, BSS.1, RAM + RAM_SIZE - 0x1000] {
        let perms = ops.perms(ipa);
        assert_eq!(
            (
                perms.contains(Perms::READ),
                perms.contains(Perms::WRITE),
                perms.contains(Perms::EXEC_EL1),
                perms.contains(Perms::EXEC_EL0)
            ),
            (true, true, false, true),
            "{ipa:#x}"
        );
    }
    assert!(
        ops.perms(TEXT.0).contains(Perms::EXEC_EL1),
        "text untouched"
    );
    assert_eq!(ops.perms(RODATA.0), Perms::R_EL0X);
    ops.assert_w_xor_x();
}

#[test]
fn the_image_policy_changes_nothing_and_refuses_calls() {
    let (mut p, mut ops) = enabled(Policy::ImageOnly);
    assert!(!p.enforcing());
    assert!(
        ops.perms(HEAP).contains(Perms::EXEC_EL1),
        "RAM stays executable"
    );
    let r = call(&mut p, &mut ops, &[e(HEAP, 0x1000, RX)]);
    assert_eq!(r[0], KpError::ObjectState.as_raw());
    assert_eq!(r[1], NO_ENTRY);
    assert_eq!(refused(&p, Refusal::State), 1);
}

#[test]
fn before_enable_calls_are_refused() {
    let mut p = Permissions::new();
    p.set_policy(Policy::Measure);
    let mut ops = Ops::small();
    let r = call(&mut p, &mut ops, &[e(HEAP, 0x1000, RX)]);
    assert_eq!(r[0], KpError::ObjectState.as_raw());
    assert_eq!(p.code_log_call(0)[0], KpError::ObjectState.as_raw());
}

#[test]
fn new_code_is_executable_read_only_and_logged() {
    let (mut p, mut ops) = enabled(Policy::Measure);
    ops.fill(HEAP, 0x2000, 0xaa);
    let r = call(&mut p, &mut ops, &[e(HEAP, 0x2000, RX | ATTR_IMMUTABLE)]);
    assert_eq!(r[0], 0);
    assert_eq!(r[2], 1, "one record");
    let perms = ops.perms(HEAP + 0x1000);
    assert!(
        perms.contains(Perms::EXEC_EL1)
            && !perms.contains(Perms::WRITE)
            && !perms.contains(Perms::EXEC_EL0)
    );
    assert!(
        ops.perms(HEAP + 0x2000).contains(Perms::WRITE),
        "next page untouched"
    );
    // The chain, replayed independently.
    let mut h = Sha256::new(crate::sha256::compress_soft);
    h.update(&[0xaa; 0x2000]);
    let digest = h.finalize();
    let mut h = Sha256::new(crate::sha256::compress_soft);
    h.update(&[0; 32]);
    h.update(&mp::log_record(LOG_EXEC, HEAP, 0x2000, KVA + HEAP, &digest));
    let want = h.finalize();
    assert_eq!(p.code_log(), (want, 1));
    assert_eq!(r[3], u64::from_be_bytes(want[..8].try_into().unwrap()));
    let (lo, hi) = (p.code_log_call(0), p.code_log_call(1));
    assert_eq!(lo[1].to_be_bytes(), want[..8]);
    assert_eq!(lo[2].to_be_bytes(), want[8..16]);
    assert_eq!(hi[1].to_be_bytes(), want[16..24]);
    assert_eq!(hi[2].to_be_bytes(), want[24..]);
    assert_eq!((lo[3], hi[3]), (1, 1));
    assert_eq!(p.code_log_call(2)[0], KpError::ArgumentInvalid.as_raw());
    ops.assert_w_xor_x();
}

#[test]
fn release_is_not_executable_before_writable_and_logged() {
    let (mut p, mut ops) = enabled(Policy::Measure);
    assert_eq!(call(&mut p, &mut ops, &[e(HEAP, 0x1000, RX)])[0], 0);
    // Writable straight from executable would leave no read-only step
    // in between; it is allowed (W^X holds at every moment) but the
    // release step is what Linux does.
    assert_eq!(call(&mut p, &mut ops, &[e(HEAP, 0x1000, ATTR_READ)])[0], 0);
    let perms = ops.perms(HEAP);
    assert!(!perms.contains(Perms::EXEC_EL1) && !perms.contains(Perms::WRITE));
    assert_eq!(p.code_log().1, 2);
    assert_eq!(p.released, 1);
    assert_eq!(call(&mut p, &mut ops, &[e(HEAP, 0x1000, RW)])[0], 0);
    assert!(ops.perms(HEAP).contains(Perms::WRITE));
    assert_eq!(p.spans.len(), 0, "back to the default, no span kept");
    assert_eq!(p.code_log().1, 2, "making data writable is not logged");
    ops.assert_w_xor_x();
}

#[test]
fn immutable_pages_refuse_every_change_but_the_release() {
    let (mut p, mut ops) = enabled(Policy::Measure);
    let ro = ATTR_READ | ATTR_IMMUTABLE;
    assert_eq!(call(&mut p, &mut ops, &[e(HEAP, 0x3000, ro)])[0], 0);
    for attrs in [RW, RX, ro, RX | ATTR_IMMUTABLE] {
        let r = call(
            &mut p,
            &mut ops,
            &[
                e(HEAP + 0x10_0000, 0x1000, RW),
                e(HEAP + 0x1000, 0x1000, attrs),
            ],
        );
        assert_eq!(r[0], KpError::Denied.as_raw(), "{attrs:#x}");
        assert_eq!(r[1], 1, "the second entry");
    }
    assert_eq!(refused(&p, Refusal::Immutable), 4);
    assert!(!ops.perms(HEAP + 0x1000).contains(Perms::WRITE));
    assert_eq!(
        call(&mut p, &mut ops, &[e(HEAP + 0x1000, 0x1000, ATTR_READ)])[0],
        0
    );
    assert_eq!(
        call(&mut p, &mut ops, &[e(HEAP + 0x1000, 0x1000, RW)])[0],
        0
    );
    assert!(ops.perms(HEAP + 0x1000).contains(Perms::WRITE));
    assert!(
        !ops.perms(HEAP).contains(Perms::WRITE),
        "its neighbours stay immutable"
    );
    assert_eq!(
        call(&mut p, &mut ops, &[e(HEAP, 0x1000, RW)])[0],
        KpError::Denied.as_raw()
    );
}

#[test]
fn lists_apply_all_or_nothing() {
    let (mut p, mut ops) = enabled(Policy::Measure);
    let before = p.code_log();
    let r = call(
        &mut p,
        &mut ops,
        &[
            e(HEAP, 0x1000, RX),
            e(HEAP + 0x4000, 0x1000, ATTR_READ),
            e(HEAP + 0x8000, 0x1000, RW | ATTR_EXEC),
        ],
    );
    assert_eq!(r[0], KpError::Denied.as_raw());
    assert_eq!(r[1], 2);
    assert!(
        !ops.perms(HEAP).contains(Perms::EXEC_EL1)
            && ops.perms(HEAP + 0x4000).contains(Perms::WRITE)
    );
    assert_eq!(p.code_log(), before);
    assert_eq!(p.spans.len(), 0);
    assert_eq!(refused(&p, Refusal::WriteExec), 1);
}

#[test]
fn every_bad_input_has_its_code_and_counter() {
    let (mut p, mut ops) = enabled(Policy::Measure);
    let cases: &[(Entry, Refusal, KpError)] = &[
        (
            e(HEAP + 0x800, 0x1000, RX),
            Refusal::Misaligned,
            KpError::ArgumentAlignment,
        ),
        (
            e(HEAP, 0x1800, RX),
            Refusal::Misaligned,
            KpError::ArgumentAlignment,
        ),
        (e(HEAP, 0, RX), Refusal::EmptyEntry, KpError::ArgumentSize),
        (
            e(u64::MAX - 0xfff, 0x2000, RX),
            Refusal::Wraps,
            KpError::AddrInvalid,
        ),
        (
            e(HEAP, 0x1000, 1 << 7),
            Refusal::Attrs,
            KpError::ArgumentInvalid,
        ),
        (
            e(HEAP, 0x1000, ATTR_EXEC),
            Refusal::Attrs,
            KpError::ArgumentInvalid,
        ),
        (
            e(HEAP, 0x1000, RW | ATTR_EXEC),
            Refusal::WriteExec,
            KpError::Denied,
        ),
        (
            e(0x1000_0000, 0x1000, RX),
            Refusal::OutsideRam,
            KpError::AddrInvalid,
        ),
        (
            e(RAM + RAM_SIZE - 0x1000, 0x2000, RX),
            Refusal::HypervisorMemory,
            KpError::AddrInvalid,
        ),
        (
            e(HYP + 0x10_0000, 0x1000, RW),
            Refusal::HypervisorMemory,
            KpError::AddrInvalid,
        ),
        (e(TEXT.0, 0x1000, RX), Refusal::Image, KpError::Denied),
        (
            e(RODATA.0 - 0x1000, 0x2000, ATTR_READ),
            Refusal::Image,
            KpError::Denied,
        ),
        (
            e(BSS.1 - 0x1000, 0x1000, RW),
            Refusal::Image,
            KpError::Denied,
        ),
    ];
    for (entry, why, code) in cases {
        let r = call(&mut p, &mut ops, &[e(HEAP + 0x20_0000, 0x1000, RX), *entry]);
        assert_eq!((r[0], r[1]), (code.as_raw(), 1), "{entry:?}");
        assert_eq!(why.error(), *code);
    }
    for (r, n) in [
        (Refusal::Misaligned, 2),
        (Refusal::HypervisorMemory, 2),
        (Refusal::Image, 3),
        (Refusal::WriteExec, 1),
    ] {
        assert_eq!(refused(&p, r), n, "{r:?}");
    }
    // Overlapping entries of one list.
    let r = call(
        &mut p,
        &mut ops,
        &[e(HEAP, 0x2000, RX), e(HEAP + 0x1000, 0x1000, ATTR_READ)],
    );
    assert_eq!((r[0], r[1]), (KpError::ArgumentInvalid.as_raw(), 1));
    // The list itself.
    ops.write_list(&[e(HEAP, 0x1000, RX)]);
    let list_cases = [
        (LIST, 0, KpError::ArgumentSize),
        (LIST, MAX_ENTRIES as u64 + 1, KpError::ArgumentSize),
        (LIST, u64::MAX, KpError::ArgumentSize),
        (LIST + 4, 1, KpError::ArgumentAlignment),
        (RAM + RAM_SIZE - 16, 1, KpError::AddrInvalid),
        (0x1000, 1, KpError::AddrInvalid),
        (u64::MAX - 7, 1, KpError::AddrInvalid),
    ];
    for (list, n, code) in list_cases {
        let r = p.call(list, n, SiteList::default(), &Patching::NONE, &mut ops);
        assert_eq!((r[0], r[1]), (code.as_raw(), NO_ENTRY), "{list:#x} {n}");
    }
    assert_eq!(refused(&p, Refusal::ListSize), 3);
    assert_eq!(refused(&p, Refusal::ListNotInRam), 3);
    assert_eq!(p.code_log().1, 0, "nothing was applied");
    assert!(!ops.perms(HEAP + 0x20_0000).contains(Perms::EXEC_EL1));
    let mut stats = String::new();
    p.write_stats(&mut stats).unwrap();
    assert!(stats.contains("kp_perm_refused_image=3\n"), "{stats}");
    assert!(stats.contains("kp_perm_refused_list_not_in_ram=3\n"));
    let mut summary = String::new();
    p.write_summary(&mut summary).unwrap();
    assert!(summary.contains("permission calls refused"), "{summary}");
}

#[test]
fn lock_refuses_new_code_but_not_releases() {
    let (mut p, mut ops) = enabled(Policy::Lock);
    let r = call(&mut p, &mut ops, &[e(HEAP, 0x1000, RX)]);
    assert_eq!((r[0], r[1]), (KpError::Denied.as_raw(), 0));
    assert_eq!(refused(&p, Refusal::Locked), 1);
    assert!(!ops.perms(HEAP).contains(Perms::EXEC_EL1));
    assert_eq!(
        call(
            &mut p,
            &mut ops,
            &[e(HEAP, 0x1000, ATTR_READ | ATTR_IMMUTABLE)]
        )[0],
        0
    );
    // The policy only tightens.
    p.set_policy(Policy::Measure);
    assert_eq!(p.policy(), Policy::Lock);
}

#[test]
fn the_state_is_bounded() {
    let (mut p, mut ops) = enabled(Policy::Measure);
    // Every other page read-only: one span each, up to the limit.
    let mut at = HEAP;
    let mut batch = Vec::new();
    for _ in 0..MAX_SPANS {
        batch.push(e(at, 0x1000, ATTR_READ));
        at += 0x2000;
        if batch.len() == MAX_ENTRIES {
            assert_eq!(call(&mut p, &mut ops, &batch)[0], 0);
            batch.clear();
        }
    }
    assert_eq!(p.spans.len(), MAX_SPANS);
    let r = call(&mut p, &mut ops, &[e(at, 0x1000, ATTR_READ)]);
    assert_eq!((r[0], r[1]), (KpError::ArgumentSize.as_raw(), 0));
    assert_eq!(refused(&p, Refusal::NoRoom), 1);
    assert!(ops.perms(at).contains(Perms::WRITE), "refused: not applied");
    // Filling a gap merges three spans into one.
    assert_eq!(
        call(&mut p, &mut ops, &[e(HEAP + 0x1000, 0x1000, ATTR_READ)])[0],
        0
    );
    assert_eq!(p.spans.len(), MAX_SPANS - 1);
}

#[test]
fn out_of_tables_undoes_the_call() {
    let mut p = Permissions::new();
    p.set_policy(Policy::Measure);
    // Root, level 2 and the level-3 table of the image, and one spare.
    let mut ops = Ops::new(RAM_SIZE, 4);
    p.enable(image(), None, &mut ops).unwrap();
    let spare = 4 - ops.s2_tables();
    assert_eq!(spare, 1, "one table left");
    let r = call(
        &mut p,
        &mut ops,
        &[e(HEAP, 0x1000, RX), e(HEAP + 0x20_0000, 0x1000, RX)],
    );
    assert_eq!((r[0], r[1]), (KpError::Busy.as_raw(), 1));
    assert!(
        !ops.perms(HEAP).contains(Perms::EXEC_EL1),
        "the first entry was undone"
    );
    assert!(ops.perms(HEAP).contains(Perms::WRITE));
    assert_eq!(p.code_log().1, 0);
    ops.assert_w_xor_x();
}

impl Ops {
    fn s2_tables(&mut self) -> usize {
        self.s2_tables_used()
    }
    fn s2_tables_used(&mut self) -> usize {
        self.s2.table_memory().tables.len()
    }
}

#[test]
fn w_xor_x_holds_through_a_module_life_cycle() {
    let (mut p, mut ops) = enabled(Policy::Measure);
    for m in 0..8u64 {
        let base = HEAP + m * 0x1_0000;
        ops.fill(base, 0x4000, m as u8);
        // Load: text executable and immutable, rodata immutable.
        let load = [
            e(base, 0x4000, RX | ATTR_IMMUTABLE),
            e(base + 0x4000, 0x2000, ATTR_READ | ATTR_IMMUTABLE),
        ];
        assert_eq!(call(&mut p, &mut ops, &load)[0], 0);
        ops.assert_w_xor_x();
    }
    for m in 0..8u64 {
        let base = HEAP + m * 0x1_0000;
        let release = [e(base, 0x6000, ATTR_READ)];
        assert_eq!(call(&mut p, &mut ops, &release)[0], 0);
        assert_eq!(call(&mut p, &mut ops, &[e(base, 0x6000, RW)])[0], 0);
        ops.assert_w_xor_x();
    }
    assert_eq!(p.code_log().1, 16, "8 loads and 8 releases");
    assert_eq!(p.spans.len(), 0);
}

/// Stage-2 table memory per GiB of guest RAM: before protection, after
/// default deny, and with 32 modules loaded.
#[test]
fn table_memory_per_gib() {
    let mut p = Permissions::new();
    p.set_policy(Policy::Measure);
    let mut ops = Ops::new(1 << 30, 512);
    let image_only = ops.s2_tables_used();
    p.enable(image(), None, &mut ops).unwrap();
    let default_deny = ops.s2_tables_used();
    for m in 0..32u64 {
        // Modules scattered over the vmalloc'd RAM, one block each.
        let base = RAM + (64 << 20) + m * (2 << 20);
        let load = [
            e(base, 0x4000, RX | ATTR_IMMUTABLE),
            e(base + 0x4000, 0x2000, ATTR_READ | ATTR_IMMUTABLE),
        ];
        ops.write_list(&load);
        assert_eq!(
            p.call(LIST, 2, SiteList::default(), &Patching::NONE, &mut ops)[0],
            0
        );
    }
    let modules = ops.s2_tables_used();
    println!(
        "stage-2 tables per GiB: {image_only} image only, {default_deny} with default deny, {modules} with 32 modules (4 KiB each)"
    );
    assert_eq!(default_deny, image_only, "default deny needs no new tables");
    assert_eq!(
        modules,
        image_only + 32,
        "one level-3 table per 2 MiB block touched"
    );
}

/// Random lists (a fixed-seed generator, so failures reproduce): no
/// input panics, every answer is OK or a defined code, refused calls
/// change nothing, and W^X holds after every call.
#[test]
fn random_lists_never_break_the_invariants() {
    let (mut p, mut ops) = enabled(Policy::Measure);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let defined = [
        0,
        KpError::ArgumentInvalid.as_raw(),
        KpError::ArgumentSize.as_raw(),
        KpError::ArgumentAlignment.as_raw(),
        KpError::AddrInvalid.as_raw(),
        KpError::Denied.as_raw(),
        KpError::Busy.as_raw(),
    ];
    let mut answers = [0u32; 2];
    for round in 0..400 {
        let n = (1 + next() % 3) as usize;
        let entries: Vec<Entry> = (0..n)
            .map(|_| {
                let r = next();
                // Mostly plausible pages of the heap, sometimes anywhere
                // in RAM or anything at all.
                let start = match r % 16 {
                    0 => next(),
                    1 | 2 => RAM + (next() % (RAM_SIZE / 0x1000 + 16)) * 0x1000,
                    _ => HEAP + (next() % 0x600) * 0x1000,
                };
                let size = if r % 19 == 0 {
                    next()
                } else {
                    (1 + next() % 4) * 0x1000
                };
                let plausible = [
                    ATTR_READ,
                    RW,
                    RX,
                    ATTR_READ | ATTR_IMMUTABLE,
                    RX | ATTR_IMMUTABLE,
                ];
                let attrs = match (r >> 8) % 16 {
                    0 => next(),
                    1 | 2 => next() % 16,
                    i => plausible[i as usize % plausible.len()],
                };
                Entry {
                    start,
                    size,
                    attrs,
                    va: if attrs & ATTR_EXEC != 0 && r % 7 != 0 {
                        KVA.wrapping_add(start)
                    } else {
                        0
                    },
                }
            })
            .collect();
        let spans = p.spans.clone();
        let log = p.code_log();
        ops.write_list(&entries);
        let count = if round % 50 == 0 { next() } else { n as u64 };
        let r = p.call(LIST, count, SiteList::default(), &Patching::NONE, &mut ops);
        assert!(defined.contains(&r[0]), "undefined answer {r:?}");
        answers[usize::from(r[0] != 0)] += 1;
        if r[0] != 0 {
            assert_eq!(p.spans, spans, "a refused call changed the state");
            assert_eq!(p.code_log(), log);
        }
        assert!(r[1] == NO_ENTRY || r[1] < n as u64 || r[0] == 0);
        if round % 20 == 0 {
            ops.assert_w_xor_x();
            // The state agrees with stage 2 on every span.
            for s in p.spans.clone() {
                let perms = ops.perms(s.start);
                assert_eq!(perms, stage2_perms(s.attrs), "{s:?}");
            }
        }
    }
    ops.assert_w_xor_x();
    assert!(
        answers[0] > 40 && answers[1] > 40,
        "both outcomes exercised: {answers:?}"
    );
    assert!(p.code_log().1 > 0, "some code was logged");
}

/// A 32-bit store of x1 through the text-poke slot to `ipa`.
fn poke<'a>(ipa: u64, regs: &'a crate::vcpu::GuestRegs, width: u32) -> GuestFault<'a> {
    GuestFault {
        ipa: Ipa(ipa),
        va: crate::addr::GuestVa(0xffff_7fff_fe7f_d000 + (ipa & 0xfff)),
        exec: false,
        syndrome: crate::esr::AbortSyndrome(
            (1 << 24) | (width << 22) | (1 << 16) | (1 << 6) | 0x0f,
        ),
        regs,
        pc: 0xffff_8000_8000_1000,
    }
}

/// A module's text as two pages apart in RAM but next to each other in
/// VA, with a `NOP` at `+0x100` (a jump-label site) and at `+0x1010`.
const MODULE_VA: u64 = 0xffff_8000_0100_0000;
const PAGE0: u64 = HEAP + 0x5000;
const PAGE1: u64 = HEAP + 0x2_0000;

fn module_text(ops: &mut Ops) -> [Entry; 2] {
    use guest_kp::patch::NOP;
    for ipa in [PAGE0 + 0x100, PAGE1 + 0x10] {
        ops.put(ipa, NOP);
    }
    [
        Entry {
            start: PAGE0,
            size: 0x1000,
            attrs: RX | ATTR_IMMUTABLE,
            va: MODULE_VA,
        },
        Entry {
            start: PAGE1,
            size: 0x1000,
            attrs: RX | ATTR_IMMUTABLE,
            va: MODULE_VA + 0x1000,
        },
    ]
}

/// The module's one jump label: the site on the first page, its label on
/// the second.
const SITE: SiteEntry = SiteEntry {
    site: MODULE_VA + 0x100,
    label: MODULE_VA + 0x1020,
};

/// Jump labels in module text: only at a site registered with the code,
/// only `NOP` <-> `B` to its own label, checked (and logged) in VA terms
/// across two pages that are apart in RAM.
#[test]
fn jump_labels_in_module_text_are_its_registered_sites() {
    use guest_kp::patch::{encode_b, NOP};

    let (mut p, mut ops) = enabled(Policy::Measure);
    let text = module_text(&mut ops);
    let r = call_sites(&mut p, &mut ops, &text, &[SITE]);
    assert_eq!(r[0], 0, "{r:?}");
    assert_eq!((p.sites.len(), p.sites_registered), (1, 1));
    // Two LOG_EXEC records and the site list's.
    assert_eq!(r[2], 3);
    let records = p.code_log().1;
    let mut regs = crate::vcpu::GuestRegs::default();
    // NOP -> B to its label, on the other page, by VA.
    regs.x[1] = u64::from(encode_b(SITE.site, SITE.label).unwrap());
    assert_eq!(
        p.text_patch(&poke(PAGE0 + 0x100, &regs, 2), &Patching::NONE, &mut ops),
        Some(FaultAction::Emulated)
    );
    let i = (PAGE0 + 0x100 - RAM) as usize;
    assert_eq!(&ops.mem[i..i + 4], &(regs.x[1] as u32).to_le_bytes());
    assert_eq!(p.code_log().1, records + 1, "the patch is in the code log");
    // B -> NOP back.
    regs.x[1] = u64::from(NOP);
    assert_eq!(
        p.text_patch(&poke(PAGE0 + 0x100, &regs, 2), &Patching::NONE, &mut ops),
        Some(FaultAction::Emulated)
    );
    // What the old NOP <-> B rule let through: a B to other code of the
    // module at the site, and NOP -> B at a NOP that is no site. Then a
    // BL, and a 64-bit store. All refused as permission faults the
    // guest's copy_to_kernel_nofault() turns into an error.
    regs.x[1] = u64::from(encode_b(SITE.site, MODULE_VA + 0x1010).unwrap());
    assert_eq!(
        p.text_patch(&poke(PAGE0 + 0x100, &regs, 2), &Patching::NONE, &mut ops),
        Some(FaultAction::RefusedRecoverable)
    );
    regs.x[1] = u64::from(encode_b(MODULE_VA + 0x1010, SITE.label).unwrap());
    assert_eq!(
        p.text_patch(&poke(PAGE1 + 0x10, &regs, 2), &Patching::NONE, &mut ops),
        Some(FaultAction::RefusedRecoverable)
    );
    regs.x[1] = 0x9400_0010;
    assert_eq!(
        p.text_patch(&poke(PAGE0 + 0x100, &regs, 2), &Patching::NONE, &mut ops),
        Some(FaultAction::RefusedRecoverable)
    );
    regs.x[1] = u64::from(encode_b(SITE.site, SITE.label).unwrap());
    assert_eq!(
        p.text_patch(&poke(PAGE0 + 0x100, &regs, 3), &Patching::NONE, &mut ops),
        Some(FaultAction::RefusedRecoverable)
    );
    assert_eq!((p.patches, p.patches_refused), (2, 4));
    for (ipa, insn) in [(PAGE0 + 0x100, NOP), (PAGE1 + 0x10, NOP)] {
        let i = (ipa - RAM) as usize;
        assert_eq!(&ops.mem[i..i + 4], &insn.to_le_bytes(), "unchanged");
    }
    // Not code this part made executable: not its fault.
    assert_eq!(
        p.text_patch(&poke(HEAP + 0x40_0000, &regs, 2), &Patching::NONE, &mut ops),
        None
    );
    // Released code is no longer patched, and its sites are gone.
    let release = [e(PAGE0, 0x1000, ATTR_READ)];
    assert_eq!(call(&mut p, &mut ops, &release)[0], 0);
    assert_eq!(
        p.text_patch(&poke(PAGE0 + 0x100, &regs, 2), &Patching::NONE, &mut ops),
        None
    );
    assert_eq!((p.sites.len(), p.sites_released), (0, 1));
}

/// The code log names the site list: replayed independently.
#[test]
fn the_site_list_is_in_the_code_log() {
    let (mut p, mut ops) = enabled(Policy::Measure);
    let text = module_text(&mut ops);
    let second = SiteEntry {
        site: MODULE_VA + 0x1010,
        label: MODULE_VA + 0x8,
    };
    assert_eq!(call_sites(&mut p, &mut ops, &text, &[SITE, second])[0], 0);
    let hash = |parts: &[&[u8]]| {
        let mut h = Sha256::new(crate::sha256::compress_soft);
        parts.iter().for_each(|b| h.update(b));
        h.finalize()
    };
    let page = |ipa: u64| ops.mem[(ipa - RAM) as usize..(ipa - RAM + 0x1000) as usize].to_vec();
    let mut log = [0u8; 32];
    for (ipa, va) in [(PAGE0, MODULE_VA), (PAGE1, MODULE_VA + 0x1000)] {
        let d = hash(&[&page(ipa)]);
        log = hash(&[&log, &mp::log_record(LOG_EXEC, ipa, 0x1000, va, &d)]);
    }
    let d = hash(&[&SITE.to_bytes(), &second.to_bytes()]);
    log = hash(&[
        &log,
        &mp::log_record(LOG_SITES, PAGE0, 0x1000, MODULE_VA, &d),
    ]);
    assert_eq!(p.code_log(), (log, 3));
}

/// Every bad site list is refused with its code and counted, and a
/// refused call leaves the pages, the sites and the log as they were.
#[test]
fn every_bad_site_list_is_refused_and_changes_nothing() {
    use guest_kp::mem_perms::ATTR_JIT;
    use guest_kp::patch::encode_b;

    let (mut p, mut ops) = enabled(Policy::Measure);
    let text = module_text(&mut ops);
    // A B at +0x200 to +0x1020: a site already on.
    let on = encode_b(MODULE_VA + 0x200, SITE.label).unwrap();
    let i = (PAGE0 + 0x200 - RAM) as usize;
    ops.mem[i..i + 4].copy_from_slice(&on.to_le_bytes());
    let site = |site: u64, label: u64| SiteEntry { site, label };
    let bad_sites = [
        site(SITE.site + 2, SITE.label),
        site(SITE.site, SITE.label + 1),
        site(SITE.site, SITE.site),
        site(MODULE_VA + 0x2000, SITE.label),
        site(MODULE_VA - 4, SITE.label),
        site(SITE.site, MODULE_VA + 0x2000),
        site(MODULE_VA + 0x104, SITE.label), // not NOP or B (zeros)
        site(MODULE_VA + 0x200, SITE.label + 4), // B elsewhere
    ];
    let log = p.code_log();
    for (n, bad) in bad_sites.into_iter().enumerate() {
        let r = call_sites(&mut p, &mut ops, &text, &[SITE, bad]);
        assert_eq!(
            (r[0], r[1]),
            (KpError::ArgumentInvalid.as_raw(), 1),
            "case {n}"
        );
    }
    assert_eq!(refused(&p, Refusal::Site), bad_sites.len() as u64);
    // A site already on is fine; named twice with two labels is not.
    let twice = call_sites(
        &mut p,
        &mut ops,
        &text,
        &[
            SITE,
            site(MODULE_VA + 0x200, SITE.label),
            site(SITE.site, MODULE_VA + 0x1010),
        ],
    );
    assert_eq!(
        (twice[0], twice[1]),
        (KpError::ArgumentInvalid.as_raw(), NO_ENTRY)
    );
    // Sites in a JIT range are not jump labels.
    let jit = [Entry {
        attrs: RX | ATTR_JIT,
        ..text[0]
    }];
    let r = call_sites(&mut p, &mut ops, &jit, &[SITE]);
    assert_eq!(r[0], KpError::ArgumentSize.as_raw(), "no code for sites");
    let r = call_sites(&mut p, &mut ops, &[jit[0], text[1]], &[SITE]);
    assert_eq!((r[0], r[1]), (KpError::ArgumentInvalid.as_raw(), 0));
    // The list itself.
    ops.write_list(&text);
    let list = |ipa: u64, count: u64| SiteList { ipa, count };
    for (l, code, why) in [
        (
            list(SITES, MAX_SITES + 1),
            KpError::ArgumentSize,
            Refusal::SiteListSize,
        ),
        (
            list(SITES + 4, 1),
            KpError::ArgumentAlignment,
            Refusal::SiteListAlignment,
        ),
        (
            list(RAM + RAM_SIZE - 8, 1),
            KpError::AddrInvalid,
            Refusal::SiteListNotInRam,
        ),
        (
            list(u64::MAX - 7, 1),
            KpError::AddrInvalid,
            Refusal::SiteListNotInRam,
        ),
        (list(SITES, 65), KpError::ArgumentSize, Refusal::SiteRoom),
    ] {
        let before = refused(&p, why);
        let r = p.call(LIST, 2, l, &Patching::NONE, &mut ops);
        assert_eq!((r[0], r[1]), (code.as_raw(), NO_ENTRY), "{l:?}");
        assert_eq!(refused(&p, why), before + 1, "{why:?}");
    }
    // Nothing changed.
    assert_eq!(p.code_log(), log);
    assert!(p.spans.is_empty() && p.sites.is_empty());
    assert!(!ops.perms(PAGE0).contains(Perms::EXEC_EL1));
    ops.assert_w_xor_x();
    // Code that is already executable cannot be given sites later.
    let plain = text.map(|e| Entry { attrs: RX, ..e });
    assert_eq!(call(&mut p, &mut ops, &plain)[0], 0);
    let r = call_sites(&mut p, &mut ops, &plain, &[SITE]);
    assert_eq!((r[0], r[1]), (KpError::ArgumentInvalid.as_raw(), 0));
    assert!(p.sites.is_empty());
    assert!(ops.perms(PAGE0).contains(Perms::EXEC_EL1), "still code");
}

/// A JIT range (a BPF pack, a kprobes slot page): executable, never
/// writable at stage 2, and filled through the text-poke slot, each
/// store performed and logged; the same stores into module text, or of
/// widths or places the rule does not take, are refused recoverably.
#[test]
fn jit_ranges_take_stores_through_the_text_poke_slot() {
    use guest_kp::mem_perms::{log_record, ATTR_JIT};

    let (mut p, mut ops) = enabled(Policy::Measure);
    let pack_va = 0xffff_8000_0200_0000;
    let (pack, text) = (HEAP + 0x8000, HEAP + 0x3_0000);
    let brk = 0xd420_2000u32;
    for i in 0..0x400 {
        let at = (pack - RAM) as usize + i * 4;
        ops.mem[at..at + 4].copy_from_slice(&brk.to_le_bytes());
    }
    let entries = [
        Entry {
            start: pack,
            size: 0x1000,
            attrs: RX | ATTR_JIT,
            va: pack_va,
        },
        Entry {
            start: text,
            size: 0x1000,
            attrs: RX | ATTR_IMMUTABLE,
            va: pack_va + 0x10_0000,
        },
    ];
    assert_eq!(call(&mut p, &mut ops, &entries)[0], 0);
    // Never writable at stage 2, executable at EL1.
    let perms = ops.perms(pack);
    assert!(!perms.contains(Perms::WRITE) && perms.contains(Perms::EXEC_EL1));
    let (log, records) = p.code_log();
    let mut regs = crate::vcpu::GuestRegs::default();
    // A 64-bit store at a 4-byte (not 8-byte) aligned offset: both words.
    regs.x[1] = 0xd65f_03c0_d280_0540; // mov x0, #42; ret
    assert_eq!(
        p.text_patch(&poke(pack + 0x104, &regs, 3), &Patching::NONE, &mut ops),
        Some(FaultAction::Emulated)
    );
    let i = (pack + 0x104 - RAM) as usize;
    assert_eq!(&ops.mem[i..i + 8], &regs.x[1].to_le_bytes());
    // Logged with its bytes, at the VA it runs at.
    let mut digest = [0u8; 32];
    digest[..8].copy_from_slice(&regs.x[1].to_le_bytes());
    let record = log_record(mp::LOG_COPY, pack + 0x104, 8, pack_va + 0x104, &digest);
    assert_eq!(p.code_log(), (chain(&log, &record, &ops), records + 1));
    // A 32-bit store (the fill, as when a program is freed).
    regs.x[1] = u64::from(brk);
    assert_eq!(
        p.text_patch(&poke(pack + 0x104, &regs, 2), &Patching::NONE, &mut ops),
        Some(FaultAction::Emulated)
    );
    assert_eq!(&ops.mem[i..i + 4], &brk.to_le_bytes());
    // Refused, recoverably: a byte store, a misaligned one, a 64-bit
    // store running past the range; arbitrary code into module text.
    for (ipa, width) in [(pack + 0x200, 0), (pack + 0x202, 2), (pack + 0xffc, 3)] {
        assert_eq!(
            p.text_patch(&poke(ipa, &regs, width), &Patching::NONE, &mut ops),
            Some(FaultAction::RefusedRecoverable),
            "{ipa:#x} width {width}"
        );
    }
    regs.x[1] = 0xd65f_03c0;
    assert_eq!(
        p.text_patch(&poke(text + 0x10, &regs, 2), &Patching::NONE, &mut ops),
        Some(FaultAction::RefusedRecoverable)
    );
    assert_eq!((p.copies, p.patches_refused), (2, 4));
    assert_eq!(p.code_log().1, records + 2);
    // JIT only with EXEC and without IMMUTABLE.
    for attrs in [ATTR_READ | ATTR_JIT, RX | ATTR_JIT | ATTR_IMMUTABLE] {
        let va = if attrs & mp::ATTR_EXEC != 0 {
            pack_va + 0x20_0000
        } else {
            0
        };
        let bad = [Entry {
            start: HEAP + 0x5_0000,
            size: 0x1000,
            attrs,
            va,
        }];
        assert_eq!(
            call(&mut p, &mut ops, &bad)[0],
            KpError::ArgumentInvalid.as_raw()
        );
    }
    // Released, the pack takes no more stores through this path.
    let free = [e(pack, 0x1000, ATTR_READ | mp::ATTR_WRITE)];
    assert_eq!(call(&mut p, &mut ops, &free)[0], 0);
    assert_eq!(
        p.text_patch(&poke(pack + 0x104, &regs, 2), &Patching::NONE, &mut ops),
        None
    );
}

#[test]
fn exec_entries_need_a_kernel_va_and_others_none() {
    let (mut p, mut ops) = enabled(Policy::Measure);
    for (entry, why) in [
        (
            Entry {
                va: 0,
                ..e(HEAP, 0x1000, RX)
            },
            "no va",
        ),
        (
            Entry {
                va: 0x4000_0000,
                ..e(HEAP, 0x1000, RX)
            },
            "user va",
        ),
        (
            Entry {
                va: KVA + 0x800,
                ..e(HEAP, 0x1000, RX)
            },
            "misaligned",
        ),
        (
            Entry {
                va: KVA,
                ..e(HEAP, 0x1000, ATTR_READ)
            },
            "va on data",
        ),
    ] {
        let r = call(&mut p, &mut ops, &[entry]);
        assert_eq!(
            (r[0], r[1]),
            (KpError::ArgumentInvalid.as_raw(), 0),
            "{why}"
        );
    }
    assert_eq!(refused(&p, Refusal::Va), 4);
}

#[test]
fn the_bitflags_type_knows_exactly_the_abi_bits() {
    assert_eq!(MemAttrs::all().bits(), mp::ATTR_ALL);
    assert_eq!(MemAttrs::EXEC.bits(), ATTR_EXEC);
    assert_eq!(MemAttrs::from_bits(mp::ATTR_ALL + 1), None);
}

/// An ftrace trampoline of the image, by VA.
const TRAMPOLINE: u64 = MODULE_VA - 0x10_0000;

fn ftrace_allowed(ftrace: bool) -> Patching<'static> {
    Patching {
        is_trampoline: &|va| va == TRAMPOLINE,
        ftrace,
    }
}

/// ftrace call sites in module text: two of them, one with `BTI C`, and
/// one whose literal ends one page and whose call starts the next (apart
/// in RAM): checked and judged by VA.
#[test]
fn ftrace_call_sites_in_module_text_take_only_ftrace_patches() {
    use guest_kp::mem_perms::SITE_FTRACE;
    use guest_kp::patch::{encode_b, encode_bl, NOP};
    use guest_kp::sites::{BTI_C, MOV_X9_X30};

    let (mut p, mut ops) = enabled(Policy::Measure);
    let text = module_text(&mut ops);
    // Site A: literal at +0x200, BTI C, MOV, NOP at +0x210.
    ops.put(PAGE0 + 0x208, BTI_C);
    ops.put(PAGE0 + 0x20c, MOV_X9_X30);
    ops.put(PAGE0 + 0x210, NOP);
    // Site B: literal at +0xff8 (page 0), MOV at +0x1000 and a BL to the
    // trampoline at +0x1004 (page 1).
    ops.put(PAGE1, MOV_X9_X30);
    ops.put(
        PAGE1 + 4,
        encode_bl(MODULE_VA + 0x1004, TRAMPOLINE).unwrap(),
    );
    let ftrace = |site| SiteEntry {
        site,
        label: SITE_FTRACE,
    };
    let sites = [ftrace(MODULE_VA + 0x200), ftrace(MODULE_VA + 0xff8)];
    let r = call_sites_with(&mut p, &mut ops, &text, &sites, &ftrace_allowed(true));
    assert_eq!(r[0], 0, "{r:?}");
    assert_eq!(p.sites.len(), 4, "a call and a literal each");
    let bl = |from: u64, to: u64| u64::from(encode_bl(from, to).unwrap());
    let (call_a, call_a_va) = (PAGE0 + 0x210, MODULE_VA + 0x210);
    let ops_ptr = 0xffff_8000_8250_1000;
    let done = Some(FaultAction::Emulated);
    let refused = Some(FaultAction::RefusedRecoverable);
    // (IPA, value, log2 of the store's width, ftrace allowed, outcome)
    let pokes = [
        // The call: NOP -> BL trampoline -> NOP; BL elsewhere, B, and a
        // 64-bit store are refused.
        (call_a, bl(call_a_va, TRAMPOLINE), 2, true, done),
        (call_a, u64::from(NOP), 2, true, done),
        (call_a, bl(call_a_va, MODULE_VA + 0x1020), 2, true, refused),
        (
            call_a,
            u64::from(encode_b(call_a_va, TRAMPOLINE).unwrap()),
            2,
            true,
            refused,
        ),
        (call_a, bl(call_a_va, TRAMPOLINE), 3, true, refused),
        // Site B, across the page boundary, by VA.
        (PAGE1 + 4, u64::from(NOP), 2, true, done),
        // The literals: a kernel pointer or 0, 64 bits at once.
        (PAGE0 + 0x200, ops_ptr, 3, true, done),
        (PAGE0 + 0xff8, 0, 3, true, done),
        (PAGE0 + 0x200, 0x4000_0000, 3, true, refused),
        (PAGE0 + 0x200, ops_ptr, 2, true, refused),
        (PAGE0 + 0x204, ops_ptr, 2, true, refused),
        // pvguard_ftrace=refuse: no ftrace patch at all.
        (call_a, bl(call_a_va, TRAMPOLINE), 2, false, refused),
        (PAGE0 + 0x200, 0, 3, false, refused),
    ];
    let mut regs = crate::vcpu::GuestRegs::default();
    for (n, (ipa, value, width, ftrace, want)) in pokes.into_iter().enumerate() {
        regs.x[1] = value;
        let how = ftrace_allowed(ftrace);
        let got = p.text_patch(&poke(ipa, &regs, width), &how, &mut ops);
        assert_eq!(got, want, "poke {n}");
    }
    let i = (PAGE0 + 0x200 - RAM) as usize;
    assert_eq!(
        &ops.mem[i..i + 8],
        &ops_ptr.to_le_bytes(),
        "the literal as last performed"
    );
    assert_eq!((p.patches, p.patches_ftrace, p.patches_refused), (5, 5, 8));
}

/// An ftrace site list that does not describe the code is refused.
#[test]
fn bad_ftrace_sites_are_refused() {
    use guest_kp::mem_perms::SITE_FTRACE;
    use guest_kp::patch::encode_bl;
    use guest_kp::sites::MOV_X9_X30;

    let (mut p, mut ops) = enabled(Policy::Measure);
    let text = module_text(&mut ops);
    // +0x300: literal, MOV, BL to a function that is no trampoline.
    ops.put(
        PAGE0 + 0x30c,
        encode_bl(MODULE_VA + 0x30c, MODULE_VA).unwrap(),
    );
    ops.put(PAGE0 + 0x308, MOV_X9_X30);
    // +0x400: literal, then no MOV.
    let ftrace = |site| SiteEntry {
        site,
        label: SITE_FTRACE,
    };
    for bad in [
        ftrace(MODULE_VA + 0x304),
        ftrace(MODULE_VA + 0x300),
        ftrace(MODULE_VA + 0x400),
        ftrace(MODULE_VA + 0x2000),
    ] {
        let r = call_sites_with(&mut p, &mut ops, &text, &[bad], &ftrace_allowed(true));
        assert_eq!(
            (r[0], r[1]),
            (KpError::ArgumentInvalid.as_raw(), 0),
            "{bad:?}"
        );
    }
    assert!(p.sites.is_empty() && p.spans.is_empty());
}

/// A module out of BL range of ftrace's trampoline calls it through its
/// own PLT: registered with the code, a call site may call it; a PLT
/// that jumps elsewhere is refused, and a PLT is never written.
#[test]
fn ftrace_calls_may_go_through_the_modules_own_plt() {
    use guest_kp::mem_perms::{SITE_FTRACE, SITE_FTRACE_PLT};
    use guest_kp::patch::{encode_bl, BR_X16, NOP};
    use guest_kp::sites::MOV_X9_X30;

    let plt_words = |pc: u64, to: u64| {
        let pages = ((to & !0xfff) as i64 - (pc & !0xfff) as i64) >> 12;
        let imm = (pages as u32) & 0x1f_ffff;
        [
            0x9000_0010 | ((imm & 3) << 29) | ((imm >> 2) << 5),
            0x9100_0210 | (((to & 0xfff) as u32) << 10),
            BR_X16,
        ]
    };
    let far = 0xffff_8000_8020_1000; // out of BL range of the module
    let patching = Patching {
        is_trampoline: &|va| va == far,
        ftrace: true,
    };
    for (plt_to, ok) in [(far, true), (far + 8, false)] {
        let (mut p, mut ops) = enabled(Policy::Measure);
        let text = module_text(&mut ops);
        for (i, w) in plt_words(MODULE_VA + 0x500, plt_to).into_iter().enumerate() {
            ops.put(PAGE0 + 0x500 + 4 * i as u64, w);
        }
        ops.put(PAGE0 + 0x608, MOV_X9_X30);
        ops.put(PAGE0 + 0x60c, NOP);
        let sites = [
            SiteEntry {
                site: MODULE_VA + 0x600,
                label: SITE_FTRACE,
            },
            SiteEntry {
                site: MODULE_VA + 0x500,
                label: SITE_FTRACE_PLT,
            },
        ];
        let r = call_sites_with(&mut p, &mut ops, &text, &sites, &patching);
        if !ok {
            assert_eq!((r[0], r[1]), (KpError::ArgumentInvalid.as_raw(), 1));
            continue;
        }
        assert_eq!(r[0], 0, "{r:?}");
        let mut regs = crate::vcpu::GuestRegs::default();
        regs.x[1] = u64::from(encode_bl(MODULE_VA + 0x60c, MODULE_VA + 0x500).unwrap());
        assert_eq!(
            p.text_patch(&poke(PAGE0 + 0x60c, &regs, 2), &patching, &mut ops),
            Some(FaultAction::Emulated),
            "BL to the PLT"
        );
        regs.x[1] = u64::from(encode_bl(MODULE_VA + 0x60c, MODULE_VA + 0x504).unwrap());
        assert_eq!(
            p.text_patch(&poke(PAGE0 + 0x60c, &regs, 2), &patching, &mut ops),
            Some(FaultAction::RefusedRecoverable),
            "BL into the middle of the PLT"
        );
        regs.x[1] = u64::from(NOP);
        assert_eq!(
            p.text_patch(&poke(PAGE0 + 0x500, &regs, 2), &patching, &mut ops),
            Some(FaultAction::RefusedRecoverable),
            "the PLT is not written"
        );
    }
}
