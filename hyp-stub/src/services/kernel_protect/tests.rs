// SPDX-License-Identifier: GPL-2.0 OR MIT
//! Host tests of kernel protect: every call, every bad input, the fault
//! handlers and the text-patching path, against fake guest RAM.

use std::vec::Vec;

use guest_kp::abi::TextPatch;
use guest_kp::patch::{encode_b, encode_bl, NOP};
use guest_kp::record::Region;
use guest_kp::sites::{FtraceSite, JumpSite, PatchPolicy, BTI_C, MOV_X9_X30};

use super::*;
use crate::addr::GuestVa;
use crate::devices::DeviceWindows;
use crate::esr::AbortSyndrome;
use crate::vcpu::GuestRegs;

/// Kernel protect never looks at devices.
static NO_DEVICES: DeviceWindows = DeviceWindows::empty();

const RAM: u64 = 0x4000_0000;
const TEXT: (u64, u64) = (0x4020_0000, 0x4040_0000);
const RODATA: (u64, u64) = (0x4040_0000, 0x4050_0000);
const DATA: (u64, u64) = (0x4050_0000, 0x4058_0000);
const BSS: (u64, u64) = (0x4058_0000, 0x4060_0000);
const FIXMAP: u64 = 0xffff_7fff_fe7f_d000;
const RECORD_IPA: u64 = 0x4055_0000;
/// Where the tests put their PATCH_SITES tables (in DATA).
const TABLE_IPA: u64 = 0x4056_0000;
/// TEXT's virtual address.
const TEXT_VA: u64 = 0xffff_8000_8020_0000;
/// Where the tests put their TEXT_PATCH batches (outside the image).
const BATCH_IPA: u64 = 0x4070_0000;
/// A kernel pointer, as ftrace_nop_ops.
const NOP_OPS: u64 = 0xffff_8000_8250_1000;

/// 8 MiB of fake guest RAM at RAM.
struct Ops {
    mem: Vec<u8>,
    perms: Vec<(IpaRange, Perms)>,
    /// Hashing guest RAM fails.
    fail_hash: bool,
}

impl Ops {
    fn new() -> Self {
        Self {
            mem: vec![0; 8 << 20],
            perms: Vec::new(),
            fail_hash: false,
        }
    }
    fn at(&mut self, ipa: u64) -> &mut [u8] {
        &mut self.mem[(ipa - RAM) as usize..]
    }
    fn word(&mut self, ipa: u64) -> u32 {
        let b = self.at(ipa);
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
    fn dword(&mut self, ipa: u64) -> u64 {
        u64::from_le_bytes(self.at(ipa)[..8].try_into().unwrap())
    }
    fn put(&mut self, ipa: u64, insn: u32) {
        self.at(ipa)[..4].copy_from_slice(&insn.to_le_bytes());
    }
    fn put64(&mut self, ipa: u64, v: u64) {
        self.at(ipa)[..8].copy_from_slice(&v.to_le_bytes());
    }
}

impl HypOps for Ops {
    fn guest_ram(&self) -> IpaRange {
        IpaRange::new(Ipa(RAM), self.mem.len() as u64).unwrap()
    }
    fn device_windows(&self) -> &DeviceWindows {
        &NO_DEVICES
    }
    fn read_guest(&mut self, ipa: Ipa, buf: &mut [u8]) -> Result<(), OpsError> {
        let r = IpaRange::new(ipa, buf.len() as u64).ok_or(OpsError::NotGuestRam)?;
        if !self.guest_ram().covers(&r) {
            return Err(OpsError::NotGuestRam);
        }
        let n = buf.len();
        buf.copy_from_slice(&self.at(ipa.get())[..n]);
        Ok(())
    }
    fn hash_guest(
        &mut self,
        ipa: Ipa,
        len: u64,
        sink: &mut crate::sha256::Sha256,
    ) -> Result<(), OpsError> {
        let r = IpaRange::new(ipa, len).ok_or(OpsError::NotGuestRam)?;
        if self.fail_hash || !self.guest_ram().covers(&r) {
            return Err(OpsError::NotGuestRam);
        }
        sink.update(&self.at(ipa.get())[..len as usize]);
        Ok(())
    }
    fn write_guest_u64(&mut self, ipa: Ipa, value: u64) -> Result<(), OpsError> {
        assert!(ipa.is_aligned(8), "the service checks alignment first");
        self.at(ipa.get())[..8].copy_from_slice(&value.to_le_bytes());
        Ok(())
    }
    fn write_guest_insn(&mut self, ipa: Ipa, insn: u32) -> Result<(), OpsError> {
        self.at(ipa.get())[..4].copy_from_slice(&insn.to_le_bytes());
        Ok(())
    }
    fn set_perms(&mut self, range: IpaRange, perms: Perms) -> Result<(), OpsError> {
        self.perms.push((range, perms));
        Ok(())
    }
    fn log(&mut self, _: fmt::Arguments<'_>) {}
}

fn record() -> KernelAssetInfo {
    let mut r = KernelAssetInfo::new();
    for (ty, (s, e)) in [
        (RegionType::Text, TEXT),
        (RegionType::Rodata, RODATA),
        (RegionType::Data, DATA),
        (RegionType::Bss, BSS),
    ] {
        r.set_region(ty, Region::new(s, e - s));
    }
    r.set_region(RegionType::FixmapTextPoke0, Region::new(FIXMAP, 4096));
    r
}

fn extents() -> AssetExtents {
    let image = IpaRange::new(Ipa(TEXT.0), BSS.1 - TEXT.0).unwrap();
    AssetExtents {
        rx: image,
        ro: image,
        rw: image,
    }
}

/// Site storage for one service. Leaked: the service borrows it for
/// `'static`, as the boot path's static arrays are.
fn storage(jump: usize, ftrace: usize) -> SiteStorage<'static> {
    SiteStorage {
        jump: vec![JumpSite::default(); jump].leak(),
        ftrace: vec![FtraceSite::default(); ftrace].leak(),
    }
}

fn service(ops: &mut Ops) -> KernelProtect<'static> {
    let mut kp = KernelProtect::with_sites(storage(256, 256));
    kp.init(ops).unwrap();
    kp.protect_vm_assets(extents()).unwrap();
    kp
}

fn call(kp: &mut KernelProtect, ops: &mut Ops, fid: u32, a: [u64; 3]) -> CallResult {
    call4(kp, ops, fid, [a[0], a[1], a[2], 0])
}

fn call4(kp: &mut KernelProtect, ops: &mut Ops, fid: u32, a: [u64; 4]) -> CallResult {
    kp.call(
        &Call {
            fid,
            args: [a[0], a[1], a[2], a[3], 0, 0],
        },
        ops,
    )
}

/// Writes a `__jump_table` of (site, target) IPAs at [`TABLE_IPA`] and
/// registers it.
fn register_jumps(kp: &mut KernelProtect, ops: &mut Ops, entries: &[(u64, u64)]) -> CallResult {
    for (i, &(site, target)) in entries.iter().enumerate() {
        let e = TABLE_IPA + i as u64 * 16;
        ops.put(e, site.wrapping_sub(e) as u32);
        ops.put(e + 4, target.wrapping_sub(e + 4) as u32);
        ops.put64(e + 8, 0xffff_8000_8300_0000);
    }
    call4(
        kp,
        ops,
        abi::PATCH_SITES,
        [0, TABLE_IPA, entries.len() as u64, TEXT_VA],
    )
}

/// enable_vm_protection on the guest itself, asked again while the
/// answer is BUSY, as the guest does.
fn enable(kp: &mut KernelProtect, ops: &mut Ops) -> CallResult {
    for _ in 0..1000 {
        let r = enable_once(kp, ops);
        if r[0] != err(KpError::Busy) {
            return r;
        }
    }
    panic!("BUSY for ever");
}

/// One enable_vm_protection call on the guest itself.
fn enable_once(kp: &mut KernelProtect, ops: &mut Ops) -> CallResult {
    call(
        kp,
        ops,
        abi::ENABLE_VM_PROTECTION,
        [abi::SELF_ADDRSPACE, 0, 0],
    )
}

/// Gives the service the guest's idle time until it has no more work;
/// how many idle exits that took.
fn idle_until_done(kp: &mut KernelProtect, ops: &mut Ops) -> usize {
    let mut exits = 0;
    while kp.has_idle_work() {
        kp.idle(ops);
        exits += 1;
        assert!(exits < 1000, "idle work never ends");
    }
    exits
}

/// A SHA-256 of TEXT then RODATA as they are in `ops` now, computed
/// here, independently of the service.
fn sha256_now(ops: &mut Ops) -> [u8; 32] {
    let mut h = crate::sha256::Sha256::new(crate::sha256::compress_soft);
    h.update(&ops.at(TEXT.0)[..(TEXT.1 - TEXT.0) as usize]);
    h.update(&ops.at(RODATA.0)[..(RODATA.1 - RODATA.0) as usize]);
    h.finalize()
}

/// Measurement steps for TEXT+RODATA.
const STEPS: u64 = (TEXT.1 - TEXT.0 + RODATA.1 - RODATA.0).div_ceil(STEP_BYTES);

fn err(e: KpError) -> u64 {
    e.as_raw()
}

fn submit(kp: &mut KernelProtect, ops: &mut Ops, rec: &KernelAssetInfo) -> u64 {
    ops.at(RECORD_IPA)[..abi::RECORD_SIZE].copy_from_slice(&rec.to_bytes());
    call(kp, ops, abi::ASSET_INFO_COMPACT, [RECORD_IPA, 0, 0])[0]
}

fn protected() -> (KernelProtect<'static>, Ops) {
    let mut ops = Ops::new();
    let mut kp = service(&mut ops);
    assert_eq!(submit(&mut kp, &mut ops, &record()), 0);
    assert_eq!(enable(&mut kp, &mut ops)[..2], [0, 1]);
    (kp, ops)
}

#[test]
fn compact_report_once_then_protection_with_the_right_permissions() {
    let (mut kp, mut ops) = protected();
    assert_eq!(
        submit(&mut kp, &mut ops, &record()),
        err(KpError::ObjectConfigured),
        "version guard"
    );
    let span = |(s, e): (u64, u64)| IpaRange::new(Ipa(s), e - s).unwrap();
    assert_eq!(
        ops.perms,
        [
            (span(TEXT), Perms::READ | Perms::EXEC_EL1),
            (span(RODATA), Perms::R_EL0X),
            (span(DATA), Perms::RW),
            (span(BSS), Perms::RW)
        ]
    );
    assert_eq!(kp.counters.compact, 1);
    // A self-check re-measures and finds it intact.
    let r = enable(&mut kp, &mut ops);
    assert_eq!(r[..3], [0, 1, 0]);
}

#[test]
fn roles_are_enforced() {
    let mut ops = Ops::new();
    let mut kp = KernelProtect::new();
    kp.init(&mut ops).unwrap();
    assert_eq!(
        submit(&mut kp, &mut ops, &record()),
        err(KpError::ObjectState),
        "no extents: KP inactive"
    );
    kp.protect_vm_assets(extents()).unwrap();
    assert_eq!(
        kp.protect_vm_assets(extents()),
        Err(KpError::ObjectConfigured)
    );
    let hvc = kp.immediate_call(
        0x6094,
        &Call {
            fid: 0,
            args: [0; 6],
        },
        &mut ops,
    );
    assert_eq!(
        hvc,
        Some([err(KpError::Denied), 0, 0, 0]),
        "the guest is not the resource manager"
    );
    assert_eq!(
        kp.immediate_call(
            0x1234,
            &Call {
                fid: 0,
                args: [0; 6]
            },
            &mut ops
        ),
        None
    );
    assert_eq!(enable(&mut kp, &mut ops)[0], err(KpError::ObjectState));
    assert_eq!(submit(&mut kp, &mut ops, &record()), 0);
    assert_eq!(
        call(&mut kp, &mut ops, abi::ENABLE_VM_PROTECTION, [7, 0, 0])[0],
        err(KpError::Denied),
        "another VM"
    );
    assert_eq!(kp.counters.denied, 2);
}

#[test]
fn bad_records_are_refused_with_their_codes() {
    let mut ops = Ops::new();
    let mut kp = service(&mut ops);
    let mut wrong_version = record().to_bytes();
    wrong_version[0] ^= 1;
    ops.at(RECORD_IPA)[..abi::RECORD_SIZE].copy_from_slice(&wrong_version);
    assert_eq!(
        call(
            &mut kp,
            &mut ops,
            abi::ASSET_INFO_COMPACT,
            [RECORD_IPA, 0, 0]
        )[0],
        err(KpError::ArgumentInvalid)
    );
    let mut overlap = record();
    overlap.set_region(RegionType::Rodata, Region::new(TEXT.1 - 0x1000, 0x2000));
    assert_eq!(
        submit(&mut kp, &mut ops, &overlap),
        err(KpError::ArgumentInvalid)
    );
    let mut misaligned = record();
    misaligned.set_region(RegionType::Data, Region::new(DATA.0 + 8, 0x1000));
    assert_eq!(
        submit(&mut kp, &mut ops, &misaligned),
        err(KpError::ArgumentAlignment)
    );
    let mut outside = record();
    outside.set_region(RegionType::Bss, Region::new(0x7f00_0000, 0x1000));
    assert_eq!(
        submit(&mut kp, &mut ops, &outside),
        err(KpError::AddrInvalid)
    );
    let mut beyond_extent = record();
    beyond_extent.set_region(RegionType::Bss, Region::new(0x4070_0000, 0x1000));
    assert_eq!(
        submit(&mut kp, &mut ops, &beyond_extent),
        err(KpError::AddrInvalid),
        "outside the RM's extents"
    );
    for ipa in [0x0900_0000, RAM + (8 << 20) - 64, u64::MAX - 10] {
        assert_eq!(
            call(&mut kp, &mut ops, abi::ASSET_INFO_COMPACT, [ipa, 0, 0])[0],
            err(KpError::AddrInvalid)
        );
    }
    assert_eq!(kp.counters.refused_calls, 8);
    // Nothing stuck: a good record is still accepted.
    assert_eq!(submit(&mut kp, &mut ops, &record()), 0);
}

#[test]
fn per_region_reports_add_up_to_a_layout() {
    let mut ops = Ops::new();
    let mut kp = service(&mut ops);
    assert_eq!(
        call(&mut kp, &mut ops, abi::ASSET_INFO, [99, TEXT.0, 0x1000])[0],
        err(KpError::ArgumentInvalid)
    );
    assert_eq!(
        call(
            &mut kp,
            &mut ops,
            abi::ASSET_INFO,
            [u64::MAX, TEXT.0, 0x1000]
        )[0],
        err(KpError::ArgumentInvalid)
    );
    let regions = [
        (0, TEXT.0, TEXT.1 - TEXT.0),
        (1, RODATA.0, RODATA.1 - RODATA.0),
        (2, DATA.0, DATA.1 - DATA.0),
        (3, BSS.0, BSS.1 - BSS.0),
    ];
    for (ty, s, n) in regions {
        assert_eq!(call(&mut kp, &mut ops, abi::ASSET_INFO, [ty, s, n])[0], 0);
    }
    assert_eq!(
        call(&mut kp, &mut ops, abi::ASSET_INFO, [0, TEXT.0, 0x1000])[0],
        err(KpError::ObjectConfigured),
        "duplicate"
    );
    assert_eq!(
        submit(&mut kp, &mut ops, &record()),
        err(KpError::ObjectConfigured),
        "mixing paths"
    );
    assert_eq!(
        call(&mut kp, &mut ops, abi::ASSET_INFO, [4, FIXMAP, 4096])[0],
        0
    );
    assert!(matches!(kp.state, State::Reported(_)));
    assert_eq!(enable(&mut kp, &mut ops)[..2], [0, 1]);
}

/// The syndrome of a store from register `reg` of 2^`log_width` bytes
/// hitting a stage-2 permission fault.
fn store(reg: u8, log_width: u32) -> AbortSyndrome {
    AbortSyndrome((1 << 24) | (log_width << 22) | (u32::from(reg) << 16) | (1 << 6) | 0x0f)
}

fn fault<'a>(
    ipa: u64,
    va: u64,
    syndrome: AbortSyndrome,
    regs: &'a GuestRegs,
    exec: bool,
) -> GuestFault<'a> {
    GuestFault {
        ipa: Ipa(ipa),
        va: GuestVa(va),
        exec,
        syndrome,
        regs,
        pc: 0xffff_8000_8000_1000,
    }
}

#[test]
fn jump_label_patches_through_the_fixmap_are_performed() {
    jump_label_patches(false);
}

#[test]
fn jump_label_patches_go_on_while_the_baseline_is_being_taken() {
    jump_label_patches(true);
}

/// A jump label flipped on and off; with `idle`, one measurement step in
/// idle time before each patch, so they land between steps.
fn jump_label_patches(idle: bool) {
    let mut ops = Ops::new();
    let site = TEXT.0 + 0x1234 * 4;
    let b = encode_b(site, site + 0x80).unwrap();
    // A jump-label site (a NOP) in TEXT when protection is enabled.
    ops.at(site)[..4].copy_from_slice(&NOP.to_le_bytes());
    let mut kp = service(&mut ops);
    assert_eq!(submit(&mut kp, &mut ops, &record()), 0);
    assert_eq!(
        register_jumps(&mut kp, &mut ops, &[(site, site + 0x80)]),
        [0, 1, 0, 0]
    );
    assert_eq!(enable(&mut kp, &mut ops)[1], 1);
    let mut regs = GuestRegs::default();
    regs.x[3] = u64::from(b);
    let va = FIXMAP + (site & 0xfff);
    let f = fault(site, va, store(3, 2), &regs, false);
    if idle {
        kp.idle(&mut ops);
    }
    assert_eq!(kp.guest_fault(&f, &mut ops), FaultAction::Emulated);
    assert_eq!(ops.word(site), b, "performed on the guest's behalf");
    regs.x[3] = u64::from(NOP);
    let f = fault(site, va, store(3, 2), &regs, false);
    if idle {
        kp.idle(&mut ops);
    }
    assert_eq!(kp.guest_fault(&f, &mut ops), FaultAction::Emulated);
    assert_eq!(ops.word(site), NOP);
    assert_eq!(kp.counters.patches_accepted, 2);
    assert_eq!(kp.counters.steps_idle, if idle { 2 } else { 0 });
    let r = enable(&mut kp, &mut ops);
    assert_eq!(r[..3], [0, 1, 2], "intact, with two accepted patches");
}

#[test]
fn patched_sites_on_several_pages_are_undone_in_the_measurement() {
    let mut ops = Ops::new();
    // Two sites on one page, one at the start of another, one on TEXT's last page.
    let sites = [TEXT.0 + 0x10, TEXT.0 + 0x20, TEXT.0 + 0x3000, TEXT.1 - 4];
    for site in sites {
        ops.at(site)[..4].copy_from_slice(&NOP.to_le_bytes());
    }
    let mut kp = service(&mut ops);
    assert_eq!(submit(&mut kp, &mut ops, &record()), 0);
    let table: Vec<(u64, u64)> = sites.iter().map(|&s| (s, TEXT.0)).collect();
    assert_eq!(register_jumps(&mut kp, &mut ops, &table)[..2], [0, 4]);
    assert_eq!(enable(&mut kp, &mut ops)[1], 1);
    let mut regs = GuestRegs::default();
    // Patched in reverse order, so the list is not filled in IPA order.
    for site in sites.iter().rev() {
        regs.x[3] = u64::from(encode_b(*site, TEXT.0).unwrap());
        let f = fault(*site, FIXMAP + (site & 0xfff), store(3, 2), &regs, false);
        assert_eq!(kp.guest_fault(&f, &mut ops), FaultAction::Emulated);
    }
    let r = enable(&mut kp, &mut ops);
    assert_eq!(r[..3], [0, 1, 4], "intact, every site undone in the hash");
    // A change on a patched page, beside its sites, still shows.
    ops.at(TEXT.0 + 0x18)[0] ^= 0xff;
    let r = enable(&mut kp, &mut ops);
    assert_eq!(r[..2], [0, 0], "not intact");
}

#[test]
fn other_writes_and_executes_are_refused_and_counted() {
    let (mut kp, mut ops) = protected();
    let site = TEXT.0 + 0x100;
    let va = FIXMAP + 0x100;
    let mut regs = GuestRegs::default();
    regs.x[1] = 0xd280_0000; // movz x0, #0: not a patch site
    let f = fault(site, va, store(1, 2), &regs, false);
    assert_eq!(
        kp.guest_fault(&f, &mut ops),
        FaultAction::RefusedRecoverable,
        "through the fixmap: an error the patcher recovers from"
    );
    let f = fault(site, va, store(1, 3), &regs, false);
    assert_eq!(
        kp.guest_fault(&f, &mut ops),
        FaultAction::RefusedRecoverable,
        "64-bit store"
    );
    assert_eq!(kp.counters.patches_refused, 2);
    // A write to TEXT through any other mapping (LKDTM WRITE_KERN).
    let f = fault(site, 0xffff_8000_8020_0100, store(1, 2), &regs, false);
    assert_eq!(kp.guest_fault(&f, &mut ops), FaultAction::Refused);
    assert_eq!(kp.counters.rx_writes_blocked, 1);
    // RODATA (WRITE_RO, WRITE_RO_AFTER_INIT).
    let f = fault(
        RODATA.0 + 8,
        0xffff_8000_8100_0008,
        store(1, 3),
        &regs,
        false,
    );
    assert_eq!(kp.guest_fault(&f, &mut ops), FaultAction::Refused);
    assert_eq!(kp.counters.ro_writes_blocked, 1);
    // Executing DATA.
    let f = fault(
        DATA.0,
        0xffff_0000_1234_0000,
        AbortSyndrome(0x0f),
        &regs,
        true,
    );
    assert_eq!(kp.guest_fault(&f, &mut ops), FaultAction::Refused);
    assert_eq!(kp.counters.exec_blocked, 1);
    // Writes to DATA and faults outside the regions are not ours.
    let f = fault(DATA.0, 0, store(1, 3), &regs, false);
    assert_eq!(kp.guest_fault(&f, &mut ops), FaultAction::NotMine);
    let f = fault(0x4100_0000, 0, store(1, 3), &regs, false);
    assert_eq!(kp.guest_fault(&f, &mut ops), FaultAction::NotMine);
    assert_eq!(ops.word(site), 0, "nothing was written");
}

#[test]
fn self_check_detects_a_change_made_behind_its_back() {
    let (mut kp, mut ops) = protected();
    // (Once the baseline is taken: until then, stage 2 alone keeps the
    // kernel as it was at enable.)
    idle_until_done(&mut kp, &mut ops);
    ops.at(RODATA.0 + 64)[0] ^= 0xff;
    let r = enable(&mut kp, &mut ops);
    assert_eq!(r[..2], [0, 0], "not intact");
    assert_eq!(kp.counters.self_check_failures, 1);
}

fn stats(kp: &KernelProtect) -> std::string::String {
    let mut out = std::string::String::new();
    kp.write_stats(&mut out).unwrap();
    out
}

/// Fills TEXT and RODATA with a pattern that differs page to page.
fn fill(ops: &mut Ops) {
    for (i, b) in ops.at(TEXT.0)[..(RODATA.1 - TEXT.0) as usize]
        .iter_mut()
        .enumerate()
    {
        *b = (i * 131 + i / 4096) as u8;
    }
}

#[test]
fn enable_leaves_the_baseline_to_idle_time_and_it_is_the_kernel_as_it_was() {
    let mut ops = Ops::new();
    fill(&mut ops);
    let want = sha256_now(&mut ops);
    let mut kp = service(&mut ops);
    kp.idle(&mut ops);
    assert!(!kp.has_idle_work(), "nothing to do before protection");
    assert_eq!(submit(&mut kp, &mut ops, &record()), 0);
    let r = enable_once(&mut kp, &mut ops);
    assert_eq!(r, [0, 1, 0, 0], "protected; nothing hashed inside the call");
    assert_eq!(ops.perms.len(), 4, "permissions applied first");
    assert!(stats(&kp).contains("kp_measurement=pending\n"));
    assert!(stats(&kp).contains("kp_baseline_hashed=0\n"));
    assert!(kp.has_idle_work());
    kp.idle(&mut ops);
    assert!(
        stats(&kp).contains(&format!("kp_baseline_hashed={STEP_BYTES}\n")),
        "one step per idle exit"
    );
    assert_eq!(idle_until_done(&mut kp, &mut ops) as u64, STEPS - 1);
    assert_eq!(kp.digest(), Some(want), "SHA-256 of TEXT then RODATA");
    assert!(stats(&kp).contains(&format!("kp_measure_steps_idle={STEPS}\n")));
    assert!(stats(&kp).contains("kp_measure_steps_call=0\n"));
    // A self-check compares against it; its own steps run in idle time
    // too, and the next call takes the verdict.
    assert_eq!(enable_once(&mut kp, &mut ops)[0], err(KpError::Busy));
    idle_until_done(&mut kp, &mut ops);
    let r = enable_once(&mut kp, &mut ops);
    assert_eq!(r[..2], [0, 1], "intact");
    assert_eq!(r[3], u64::from_be_bytes(want[..8].try_into().unwrap()));
    assert!(!kp.has_idle_work());
}

#[test]
fn without_idle_time_self_checks_take_the_measurements_a_step_per_call() {
    let mut ops = Ops::new();
    fill(&mut ops);
    let want = sha256_now(&mut ops);
    let mut kp = service(&mut ops);
    assert_eq!(submit(&mut kp, &mut ops, &record()), 0);
    enable_once(&mut kp, &mut ops);
    // Each call takes one step of the baseline, then of the check (both
    // in the call that finishes the baseline): never the whole hash
    // under the lock.
    let mut busy = 0;
    let r = loop {
        let r = enable_once(&mut kp, &mut ops);
        if r[0] != err(KpError::Busy) {
            break r;
        }
        busy += 1;
        assert!(busy < 1000);
    };
    assert_eq!(r[..2], [0, 1], "intact");
    assert_eq!(busy, 2 * STEPS - 2);
    assert_eq!(kp.digest(), Some(want));
    let s = stats(&kp);
    assert!(s.contains(&format!("kp_busy={busy}\n")), "{s}");
    assert!(s.contains(&format!("kp_measure_steps_call={}\n", 2 * STEPS)));
    assert!(s.contains("kp_self_checks=1\n"));
    // The next check starts afresh, from the kernel as it is then.
    ops.at(RODATA.1 - 1)[0] ^= 1;
    assert_eq!(enable(&mut kp, &mut ops)[..2], [0, 0], "modified");
}

#[test]
fn patches_between_measurement_steps_are_undone_in_the_baseline() {
    // Two sites: one in the first step's bytes, one at TEXT's end. Both
    // are patched after the first step; the baseline must still be the
    // kernel as it was at enable, as an unpatched twin measures it.
    let sites = [TEXT.0 + 0x40, TEXT.1 - 0x80];
    let setup = |ops: &mut Ops| {
        fill(ops);
        for s in sites {
            ops.put(s, NOP);
        }
        let mut kp = service(ops);
        assert_eq!(submit(&mut kp, ops, &record()), 0);
        let table: Vec<(u64, u64)> = sites.iter().map(|&s| (s, s + 0x40)).collect();
        assert_eq!(register_jumps(&mut kp, ops, &table)[..2], [0, 2]);
        enable_once(&mut kp, ops);
        kp
    };
    let mut twin_ops = Ops::new();
    let mut twin = setup(&mut twin_ops);
    idle_until_done(&mut twin, &mut twin_ops);
    let mut ops = Ops::new();
    let mut kp = setup(&mut ops);
    kp.idle(&mut ops);
    let entries: Vec<TextPatch> = sites.iter().map(|&s| insn(s, on(s))).collect();
    assert_eq!(
        batch(&mut kp, &mut ops, &entries),
        [0, 2, 0, 0],
        "not deferred"
    );
    assert_eq!(ops.word(sites[1]), on(sites[1]));
    idle_until_done(&mut kp, &mut ops);
    assert_eq!(kp.digest(), twin.digest(), "the baseline is pre-patch");
    assert!(kp.digest().is_some());
    // A check under way sees patches land between its steps too.
    assert_eq!(enable_once(&mut kp, &mut ops)[0], err(KpError::Busy));
    kp.idle(&mut ops);
    let back: Vec<TextPatch> = sites.iter().map(|&s| insn(s, NOP)).collect();
    assert_eq!(batch(&mut kp, &mut ops, &back), [0, 2, 0, 0]);
    assert_eq!(
        enable(&mut kp, &mut ops)[..3],
        [0, 1, 4],
        "intact, 4 patches"
    );
}

#[test]
fn a_baseline_that_cannot_be_taken_fails_every_self_check() {
    let mut ops = Ops::new();
    ops.fail_hash = true;
    let mut kp = service(&mut ops);
    assert_eq!(submit(&mut kp, &mut ops, &record()), 0);
    let r = enable(&mut kp, &mut ops);
    assert_eq!(ops.perms.len(), 4, "protected regardless");
    assert_eq!(r, [0, 1, 0, 0]);
    assert!(stats(&kp).contains("kp_state=protected\n"));
    // The first self-check fails to take the baseline.
    let r = enable(&mut kp, &mut ops);
    assert_eq!(r[..2], [0, 0]);
    ops.fail_hash = false;
    let r = enable(&mut kp, &mut ops);
    assert_eq!(r[..2], [0, 0], "never intact without a baseline");
    assert!(stats(&kp).contains("kp_measurement=lost\n"));
    assert!(!kp.has_idle_work(), "nothing left to do in idle time");
}

fn summary(kp: &KernelProtect) -> std::string::String {
    let mut out = std::string::String::new();
    kp.write_summary(&mut out).unwrap();
    out
}

#[test]
fn summary_says_what_is_protected_and_the_self_check_verdict() {
    let mut ops = Ops::new();
    let mut kp = service(&mut ops);
    assert!(summary(&kp).contains("the guest reported no layout"));
    assert_eq!(submit(&mut kp, &mut ops, &record()), 0);
    assert!(summary(&kp).contains("protection never enabled"));
    enable(&mut kp, &mut ops);
    let s = summary(&kp);
    assert!(s.contains("protected: text read-only"), "{s}");
    assert!(
        s.contains("still being taken in idle time (0 of 3145728 bytes hashed)"),
        "{s}"
    );
    idle_until_done(&mut kp, &mut ops);
    let s = summary(&kp);
    assert!(s.contains("SHA-256 of text+rodata "), "{s}");
    assert!(
        s.contains("(measurement steps: 12 in idle time, 0 in self-check calls)"),
        "{s}"
    );
    assert!(s.contains("self-check:     not run"), "{s}");
    enable(&mut kp, &mut ops);
    assert!(summary(&kp).contains("intact (1 of 1 checks)"));
    ops.at(RODATA.0 + 64)[0] ^= 0xff;
    enable(&mut kp, &mut ops);
    let s = summary(&kp);
    assert!(s.contains("MODIFIED (1 of 2 checks failed)"), "{s}");
    assert!(!s.contains('='), "no key=value lines in the summary: {s}");
}

#[test]
fn the_layout_and_protection_are_visible_to_inspection() {
    let mut ops = Ops::new();
    let mut kp = service(&mut ops);
    assert_eq!((kp.reported_layout(), kp.is_protected()), (None, false));
    assert_eq!(submit(&mut kp, &mut ops, &record()), 0);
    let layout = kp.reported_layout().expect("reported");
    assert_eq!((layout.text().start(), layout.bss().end()), (TEXT.0, BSS.1));
    assert!(!kp.is_protected());
    assert_eq!(enable(&mut kp, &mut ops)[0], 0);
    assert_eq!(
        (kp.reported_layout(), kp.is_protected()),
        (Some(layout), true)
    );
}

// ---- Patch sites, batches, ftrace and kprobes ----

/// Word `i` of TEXT.
fn text(i: u64) -> u64 {
    TEXT.0 + i * 4
}

/// The B a jump site at `site` makes to its label (`site + 0x40`).
fn on(site: u64) -> u32 {
    encode_b(site, site + 0x40).unwrap()
}

/// Reported, with NOP jump sites at `sites` (labels at `site + 0x40`)
/// registered, and protected.
fn with_jumps(ops: &mut Ops, sites: &[u64]) -> KernelProtect<'static> {
    for &s in sites {
        ops.put(s, NOP);
    }
    let mut kp = service(ops);
    assert_eq!(submit(&mut kp, ops, &record()), 0);
    let table: Vec<(u64, u64)> = sites.iter().map(|&s| (s, s + 0x40)).collect();
    let r = register_jumps(&mut kp, ops, &table);
    assert_eq!(r, [0, sites.len() as u64, 0, 0]);
    assert_eq!(enable(&mut kp, ops)[..2], [0, 1]);
    kp
}

/// Writes `entries` at [`BATCH_IPA`] and makes the TEXT_PATCH call.
fn batch(kp: &mut KernelProtect, ops: &mut Ops, entries: &[TextPatch]) -> CallResult {
    for (i, e) in entries.iter().enumerate() {
        let at = BATCH_IPA + i as u64 * abi::TEXT_PATCH_ENTRY_SIZE as u64;
        ops.at(at)[..abi::TEXT_PATCH_ENTRY_SIZE].copy_from_slice(&e.to_bytes());
    }
    call(
        kp,
        ops,
        abi::TEXT_PATCH,
        [BATCH_IPA, entries.len() as u64, 0],
    )
}

fn insn(ipa: u64, value: u32) -> TextPatch {
    TextPatch {
        ipa,
        value: value.into(),
        size: 4,
    }
}

/// A store of `value` through the fixmap alias of `ipa`, 32-bit or
/// 64-bit.
fn poke(kp: &mut KernelProtect, ops: &mut Ops, ipa: u64, value: u64, wide: bool) -> FaultAction {
    let mut regs = GuestRegs::default();
    regs.x[5] = value;
    let f = fault(
        ipa,
        FIXMAP + (ipa & 0xfff),
        store(5, if wide { 3 } else { 2 }),
        &regs,
        false,
    );
    kp.guest_fault(&f, ops)
}

fn self_check(kp: &mut KernelProtect, ops: &mut Ops) -> CallResult {
    enable(kp, ops)
}

#[test]
fn patch_sites_is_checked_and_answers_what_it_registered() {
    let mut ops = Ops::new();
    let mut kp = service(&mut ops);
    let site = text(0x100);
    ops.put(site, NOP);
    let reg =
        |kp: &mut KernelProtect, ops: &mut Ops, a: [u64; 4]| call4(kp, ops, abi::PATCH_SITES, a)[0];
    assert_eq!(
        register_jumps(&mut kp, &mut ops, &[(site, site + 0x40)])[0],
        err(KpError::ObjectState),
        "before the layout"
    );
    assert_eq!(submit(&mut kp, &mut ops, &record()), 0);
    let bad: [([u64; 4], KpError); 8] = [
        ([3, TABLE_IPA, 1, TEXT_VA], KpError::ArgumentInvalid),
        ([0, TABLE_IPA + 4, 1, TEXT_VA], KpError::ArgumentAlignment),
        ([0, TEXT.0 - 0x1000, 1, TEXT_VA], KpError::AddrInvalid),
        ([0, BSS.1 - 8, 1, TEXT_VA], KpError::AddrInvalid),
        ([0, TABLE_IPA, 0, TEXT_VA], KpError::ArgumentSize),
        ([0, TABLE_IPA, 513, TEXT_VA], KpError::ArgumentSize),
        ([0, TABLE_IPA, u64::MAX, TEXT_VA], KpError::ArgumentSize),
        ([1, TABLE_IPA, 1, TEXT_VA], KpError::ObjectState),
    ];
    for (args, want) in bad {
        assert_eq!(reg(&mut kp, &mut ops, args), err(want), "{args:x?}");
    }
    assert_eq!(kp.counters.refused_calls, 8);
    // One site in TEXT, one in init text (here: DATA), skipped.
    assert_eq!(
        register_jumps(
            &mut kp,
            &mut ops,
            &[(site, site + 0x40), (DATA.0 + 0x10, site)]
        ),
        [0, 1, 1, 0]
    );
    assert_eq!(
        register_jumps(&mut kp, &mut ops, &[(site, site + 0x40)])[0],
        err(KpError::ObjectConfigured)
    );
    assert_eq!(enable(&mut kp, &mut ops)[..2], [0, 1]);
    assert_eq!(
        reg(&mut kp, &mut ops, [2, TABLE_IPA, 1, TEXT_VA]),
        err(KpError::ObjectState),
        "after enable"
    );
    let s = stats(&kp);
    assert!(s.contains("kp_sites_jump=1\n"), "{s}");
    assert!(s.contains("kp_sites_skipped=1\n"), "{s}");
}

#[test]
fn attacks_through_the_fixmap_are_refused_recoverably_and_flips_still_work() {
    let mut ops = Ops::new();
    let site = text(0x100);
    let loop_b = encode_b(text(0x200), text(0x1f0)).unwrap();
    ops.put(text(0x200), loop_b);
    let entry = text(0x400);
    ops.put(entry, 0xa9bf_7bfd); // stp x29, x30, [sp, #-16]!
    let mut kp = with_jumps(&mut ops, &[site]);
    let attacks: [(&str, u64, u32); 6] = [
        ("B -> NOP at a non-site", text(0x200), NOP),
        ("NOP -> B at a non-site", text(0x300), on(text(0x300))),
        (
            "B to a foreign target at a real site",
            site,
            encode_b(site, site + 0x80).unwrap(),
        ),
        (
            "BL at a jump site",
            site,
            encode_bl(site, site + 0x40).unwrap(),
        ),
        ("ret at a function entry", entry, 0xd65f_03c0),
        ("NOP -> B to itself", site, 0x1400_0000),
    ];
    for (what, ipa, value) in attacks {
        let before = ops.word(ipa);
        assert_eq!(
            poke(&mut kp, &mut ops, ipa, value.into(), false),
            FaultAction::RefusedRecoverable,
            "{what}"
        );
        assert_eq!(ops.word(ipa), before, "{what}: nothing written");
    }
    assert_eq!(kp.counters.patches_refused, 6);
    // A static key still flips, and the kernel is intact.
    assert_eq!(
        poke(&mut kp, &mut ops, site, on(site).into(), false),
        FaultAction::Emulated
    );
    assert_eq!(ops.word(site), on(site));
    assert_eq!(self_check(&mut kp, &mut ops)[..3], [0, 1, 1]);
    // The same write through another alias of TEXT is no patch.
    let mut regs = GuestRegs::default();
    regs.x[5] = u64::from(NOP);
    let f = fault(site, 0xffff_8000_8030_0400, store(5, 2), &regs, false);
    assert_eq!(kp.guest_fault(&f, &mut ops), FaultAction::Refused);
}

#[test]
fn text_patch_batches_apply_in_order_up_to_the_first_refusal() {
    let mut ops = Ops::new();
    let sites = [text(0x100), text(0x1100), text(0x2100), text(0x3100)];
    let mut kp = with_jumps(&mut ops, &sites);
    let log0 = kp.patch_log;
    let foreign = encode_b(sites[2], sites[2] + 0x80).unwrap();
    let r = batch(
        &mut kp,
        &mut ops,
        &[
            insn(sites[0], on(sites[0])),
            insn(sites[1], on(sites[1])),
            insn(sites[2], foreign),
            insn(sites[3], on(sites[3])),
        ],
    );
    assert_eq!(r, [err(KpError::Denied), 2, 0, 0], "stopped at entry 2");
    assert_eq!(ops.word(sites[0]), on(sites[0]));
    assert_eq!(ops.word(sites[1]), on(sites[1]));
    assert_eq!(ops.word(sites[2]), NOP);
    assert_eq!(ops.word(sites[3]), NOP, "nothing after the refusal");
    // One hash for the batch: the log chains both entries at once.
    let mut h = crate::sha256::Sha256::new(crate::sha256::compress_soft);
    h.update(&log0);
    for s in &sites[..2] {
        h.update(&s.to_le_bytes());
        h.update(&NOP.to_le_bytes());
        h.update(&on(*s).to_le_bytes());
    }
    assert_eq!(kp.patch_log, h.finalize());
    let r = batch(
        &mut kp,
        &mut ops,
        &[insn(sites[2], on(sites[2])), insn(sites[3], on(sites[3]))],
    );
    assert_eq!(r, [0, 2, 0, 0]);
    assert_eq!(self_check(&mut kp, &mut ops)[..3], [0, 1, 4]);
    let s = stats(&kp);
    for line in [
        "kp_patch_batches=2\n",
        "kp_patches_batched=4\n",
        "kp_patches_refused=1\n",
        "kp_patches_jump_label=4\n",
    ] {
        assert!(s.contains(line), "{line}{s}");
    }
    // Malformed entries stop the batch like refused ones: DENIED and the
    // count applied before them.
    let mut bytes = insn(sites[0], NOP).to_bytes();
    bytes[20] = 1;
    ops.at(BATCH_IPA + 24)[..24].copy_from_slice(&bytes);
    ops.at(BATCH_IPA)[..24].copy_from_slice(&insn(sites[1], NOP).to_bytes());
    let r = call(&mut kp, &mut ops, abi::TEXT_PATCH, [BATCH_IPA, 2, 0]);
    assert_eq!(r, [err(KpError::Denied), 1, 0, 0]);
    assert_eq!(ops.word(sites[1]), NOP, "entry 0 applied");
    let wide = TextPatch {
        ipa: sites[0],
        value: 1 << 32,
        size: 4,
    };
    let mut b = wide.to_bytes();
    b[8..16].copy_from_slice(&(1u64 << 32).to_le_bytes());
    ops.at(BATCH_IPA)[..24].copy_from_slice(&b);
    let r = call(&mut kp, &mut ops, abi::TEXT_PATCH, [BATCH_IPA, 1, 0]);
    assert_eq!(r, [err(KpError::Denied), 0, 0, 0]);
}

#[test]
fn text_patch_calls_are_checked() {
    let mut ops = Ops::new();
    let mut kp = service(&mut ops);
    assert_eq!(submit(&mut kp, &mut ops, &record()), 0);
    let tp = |kp: &mut KernelProtect, ops: &mut Ops, a: u64, n: u64| {
        call(kp, ops, abi::TEXT_PATCH, [a, n, 0])[0]
    };
    assert_eq!(
        tp(&mut kp, &mut ops, BATCH_IPA, 1),
        err(KpError::ObjectState),
        "before enable"
    );
    assert_eq!(enable(&mut kp, &mut ops)[0], 0);
    for (a, n, want) in [
        (BATCH_IPA, 0, KpError::ArgumentSize),
        (
            BATCH_IPA,
            abi::MAX_TEXT_PATCH_BATCH + 1,
            KpError::ArgumentSize,
        ),
        (BATCH_IPA, u64::MAX, KpError::ArgumentSize),
        (0x0900_0000, 1, KpError::AddrInvalid),
        (RAM + (8 << 20) - 24, 2, KpError::AddrInvalid),
        (u64::MAX - 8, 1, KpError::AddrInvalid),
    ] {
        assert_eq!(tp(&mut kp, &mut ops, a, n), err(want), "{a:#x} {n}");
    }
    // The largest batch is taken (and refused at its first entry: no
    // sites are registered).
    assert_eq!(
        call(
            &mut kp,
            &mut ops,
            abi::TEXT_PATCH,
            [BATCH_IPA, abi::MAX_TEXT_PATCH_BATCH, 0]
        ),
        [err(KpError::Denied), 0, 0, 0],
        "zeroed entries have size 0"
    );
}

/// ftrace's trampolines in TEXT.
const CALLERS: [u64; 2] = [TEXT.0 + 0x40, TEXT.0 + 0x80];

/// Lays out a traced function whose literal is at `lit`; returns its
/// call site.
fn function(ops: &mut Ops, lit: u64, bti: bool) -> u64 {
    ops.put64(lit, NOP_OPS);
    let mut at = lit + 8;
    if bti {
        ops.put(at, BTI_C);
        at += 4;
    }
    ops.put(at, MOV_X9_X30);
    ops.put(at + 4, NOP);
    at + 4
}

/// Registers ftrace's trampolines and `lits` as `__mcount_loc`.
fn register_ftrace(kp: &mut KernelProtect, ops: &mut Ops, lits: &[u64]) {
    let va = |ipa: u64| ipa - TEXT.0 + TEXT_VA;
    for (i, c) in CALLERS.iter().enumerate() {
        ops.put64(TABLE_IPA + 0x8000 + i as u64 * 8, va(*c));
    }
    let r = call4(
        kp,
        ops,
        abi::PATCH_SITES,
        [2, TABLE_IPA + 0x8000, 2, TEXT_VA],
    );
    assert_eq!(r, [0, 2, 0, 0]);
    for (i, l) in lits.iter().enumerate() {
        ops.put64(TABLE_IPA + 0x9000 + i as u64 * 8, va(*l));
    }
    let r = call4(
        kp,
        ops,
        abi::PATCH_SITES,
        [1, TABLE_IPA + 0x9000, lits.len() as u64, TEXT_VA],
    );
    assert_eq!(r, [0, lits.len() as u64, 0, 0]);
}

fn ftrace_service(ops: &mut Ops, policy: PatchPolicy) -> (KernelProtect<'static>, [u64; 2]) {
    let calls = [
        function(ops, text(0x1000), false),
        function(ops, text(0x2000), true),
    ];
    let mut kp = service(ops);
    kp.set_policy(policy);
    assert_eq!(submit(&mut kp, ops, &record()), 0);
    register_ftrace(&mut kp, ops, &[text(0x1000), text(0x2000)]);
    assert_eq!(enable(&mut kp, ops)[..2], [0, 1]);
    (kp, calls)
}

#[test]
fn ftrace_call_sites_and_literals_patch_in_batches_and_through_the_fixmap() {
    let mut ops = Ops::new();
    let (mut kp, calls) = ftrace_service(&mut ops, PatchPolicy::ALLOW_ALL);
    let ops_ptr = 0xffff_8000_8260_0000u64;
    let bl = |site: u64, c: usize| encode_bl(site, CALLERS[c]).unwrap();
    let lit = |ipa: u64, value: u64| TextPatch {
        ipa,
        value,
        size: 8,
    };
    let r = batch(
        &mut kp,
        &mut ops,
        &[
            lit(text(0x1000), ops_ptr),
            insn(calls[0], bl(calls[0], 0)),
            lit(text(0x2000), ops_ptr),
            insn(calls[1], bl(calls[1], 0)),
        ],
    );
    assert_eq!(r, [0, 4, 0, 0]);
    assert_eq!(ops.dword(text(0x1000)), ops_ptr);
    assert_eq!(ops.word(calls[1]), bl(calls[1], 0));
    // Single changes through the fixmap: 64-bit for the literal.
    assert_eq!(
        poke(&mut kp, &mut ops, text(0x2000), NOP_OPS, true),
        FaultAction::Emulated
    );
    assert_eq!(ops.dword(text(0x2000)), NOP_OPS);
    assert_eq!(
        poke(&mut kp, &mut ops, calls[1], bl(calls[1], 1).into(), false),
        FaultAction::Emulated,
        "from one trampoline to another"
    );
    assert_eq!(self_check(&mut kp, &mut ops)[..3], [0, 1, 6]);
    // A BL to a non-trampoline, a literal that is no kernel pointer.
    let elsewhere = encode_bl(calls[0], text(0x3000)).unwrap();
    let r = batch(
        &mut kp,
        &mut ops,
        &[insn(calls[0], NOP), insn(calls[0], elsewhere)],
    );
    assert_eq!(r, [err(KpError::Denied), 1, 0, 0]);
    assert_eq!(
        poke(&mut kp, &mut ops, text(0x1000), 0x4000_0000, true),
        FaultAction::RefusedRecoverable
    );
    assert_eq!(
        poke(&mut kp, &mut ops, text(0x1000), 0x4000_0000, false),
        FaultAction::RefusedRecoverable,
        "half a literal"
    );
    let s = stats(&kp);
    assert!(s.contains("kp_patches_ftrace=7\n"), "{s}");
    assert!(s.contains("kp_sites_ftrace=2\n"), "{s}");
    assert!(s.contains("kp_ftrace_callers=2\n"), "{s}");
    assert_eq!(self_check(&mut kp, &mut ops)[..2], [0, 1]);
}

#[test]
fn ftrace_refused_by_policy() {
    let mut ops = Ops::new();
    let policy = PatchPolicy {
        ftrace: false,
        kprobes: true,
    };
    let (mut kp, calls) = ftrace_service(&mut ops, policy);
    let call = encode_bl(calls[0], CALLERS[0]).unwrap();
    assert_eq!(
        batch(&mut kp, &mut ops, &[insn(calls[0], call)]),
        [err(KpError::Denied), 0, 0, 0]
    );
    assert_eq!(
        poke(&mut kp, &mut ops, calls[0], call.into(), false),
        FaultAction::RefusedRecoverable
    );
    assert_eq!(ops.word(calls[0]), NOP);
    assert!(stats(&kp).contains("kp_policy_ftrace=refuse\n"));
    assert!(summary(&kp).contains("ftrace refused"));
}

#[test]
fn kprobes_arm_and_restore_exactly_and_keep_the_measurement() {
    let mut ops = Ops::new();
    let at = text(0x800);
    let original = 0xa9bf_7bfd;
    ops.put(at, original);
    let mut kp = with_jumps(&mut ops, &[text(0x100)]);
    let brk = u64::from(guest_kp::sites::BRK_KPROBES);
    assert_eq!(
        poke(&mut kp, &mut ops, at, brk, false),
        FaultAction::Emulated
    );
    assert_eq!(u64::from(ops.word(at)), brk);
    assert!(stats(&kp).contains("kp_kprobes_armed=1\n"));
    assert_eq!(
        self_check(&mut kp, &mut ops)[..2],
        [0, 1],
        "intact while armed"
    );
    assert_eq!(
        poke(&mut kp, &mut ops, at, 0xd65f_03c0, false),
        FaultAction::RefusedRecoverable,
        "restored to something else"
    );
    assert_eq!(
        batch(&mut kp, &mut ops, &[insn(at, original)]),
        [0, 1, 0, 0]
    );
    assert_eq!(ops.word(at), original);
    assert!(stats(&kp).contains("kp_kprobes_armed=0\n"));
    assert!(stats(&kp).contains("kp_patches_kprobes=2\n"));
    assert_eq!(self_check(&mut kp, &mut ops)[..2], [0, 1]);
    // No BRK on a jump site.
    assert_eq!(
        poke(&mut kp, &mut ops, text(0x100), brk, false),
        FaultAction::RefusedRecoverable
    );
    // Refused by policy.
    kp.set_policy(PatchPolicy {
        ftrace: true,
        kprobes: false,
    });
    assert_eq!(
        poke(&mut kp, &mut ops, at, brk, false),
        FaultAction::RefusedRecoverable
    );
    assert_eq!(ops.word(at), original);
}

#[test]
fn thousands_of_flips_leave_the_measurement_as_it_was_at_enable() {
    {
        let mut ops = Ops::new();
        // 200 sites over 50 pages, every other one a B at enable.
        let sites: Vec<u64> = (0..200u64).map(|i| text(i * 0x100 + 8)).collect();
        for &s in &sites {
            ops.put(s, NOP);
        }
        let mut kp = service(&mut ops);
        assert_eq!(submit(&mut kp, &mut ops, &record()), 0);
        let table: Vec<(u64, u64)> = sites.iter().map(|&s| (s, s + 0x40)).collect();
        assert_eq!(register_jumps(&mut kp, &mut ops, &table)[..2], [0, 200]);
        for s in sites.iter().step_by(2) {
            ops.put(*s, on(*s));
        }
        enable(&mut kp, &mut ops);
        let flip = |kp: &mut KernelProtect, ops: &mut Ops| {
            let entries: Vec<TextPatch> = sites
                .iter()
                .map(|&s| insn(s, if ops.word(s) == NOP { on(s) } else { NOP }))
                .collect();
            assert_eq!(batch(kp, ops, &entries), [0, 200, 0, 0]);
        };
        // The baseline is taken between the flips.
        for _ in 0..11 {
            kp.idle(&mut ops);
            flip(&mut kp, &mut ops);
        }
        assert_eq!(self_check(&mut kp, &mut ops)[..3], [0, 1, 2200]);
        assert_eq!(self_check(&mut kp, &mut ops)[..2], [0, 1]);
    }
}

#[test]
fn a_site_changed_behind_the_hypervisors_back_fails_the_self_check() {
    let mut ops = Ops::new();
    let site = text(0x100);
    let mut kp = with_jumps(&mut ops, &[site]);
    ops.put(site, 0xd65f_03c0);
    assert_eq!(self_check(&mut kp, &mut ops)[..2], [0, 0]);
    ops.put(site, on(site));
    assert_eq!(self_check(&mut kp, &mut ops)[..2], [0, 1], "a legal state");
}

#[test]
fn sites_changed_before_enable_are_dropped() {
    let mut ops = Ops::new();
    let site = text(0x100);
    ops.put(site, NOP);
    let mut kp = service(&mut ops);
    assert_eq!(submit(&mut kp, &mut ops, &record()), 0);
    register_jumps(&mut kp, &mut ops, &[(site, site + 0x40)]);
    ops.put(site, 0xd280_0000);
    assert_eq!(enable(&mut kp, &mut ops)[..2], [0, 1]);
    assert!(stats(&kp).contains("kp_sites_dropped=1\n"));
    assert!(stats(&kp).contains("kp_sites_jump=0\n"));
    assert_eq!(
        poke(&mut kp, &mut ops, site, NOP.into(), false),
        FaultAction::RefusedRecoverable
    );
    assert_eq!(self_check(&mut kp, &mut ops)[..2], [0, 1]);
}

#[test]
fn stats_and_summary_show_sites_policy_and_patches() {
    let mut ops = Ops::new();
    let mut kp = with_jumps(&mut ops, &[text(0x100)]);
    kp.set_policy(PatchPolicy::from_cmdline(b"pvguard_kprobes=refuse"));
    batch(&mut kp, &mut ops, &[insn(text(0x100), on(text(0x100)))]);
    poke(&mut kp, &mut ops, text(0x200), 0xd65f_03c0, false);
    let s = stats(&kp);
    for line in [
        "kp_patches_accepted=1\n",
        "kp_patches_refused=1\n",
        "kp_sites_jump=1\n",
        "kp_sites_ftrace=0\n",
        "kp_ftrace_callers=0\n",
        "kp_policy_ftrace=allow\n",
        "kp_policy_kprobes=refuse\n",
    ] {
        assert!(s.contains(line), "{line}{s}");
    }
    let m = summary(&kp);
    assert!(
        m.contains("patch sites:    1 jump labels, 0 ftrace call sites (0 trampolines) registered; ftrace allowed, kprobes refused"),
        "{m}"
    );
    assert!(
        m.contains("text patches:   1 performed (1 jump label, 0 ftrace, 0 kprobes; 1 in 1 batches), 1 refused"),
        "{m}"
    );
}

#[test]
fn full_size_storage_takes_the_largest_tables() {
    let mut ops = Ops::new();
    let mut kp = KernelProtect::with_sites(storage(
        guest_kp::sites::MAX_JUMP_SITES,
        guest_kp::sites::MAX_FTRACE_SITES,
    ));
    kp.init(&mut ops).unwrap();
    kp.protect_vm_assets(extents()).unwrap();
    assert_eq!(submit(&mut kp, &mut ops, &record()), 0);
    // 16384 sites, one every 32 bytes of TEXT's first 512 KiB.
    let sites: Vec<(u64, u64)> = (0..16384u64)
        .map(|i| (text(i * 8), text(i * 8 + 4)))
        .collect();
    for &(s, _) in &sites {
        ops.put(s, NOP);
    }
    assert_eq!(
        register_jumps(&mut kp, &mut ops, &sites)[..3],
        [0, 16384, 0]
    );
    assert_eq!(
        call4(
            &mut kp,
            &mut ops,
            abi::PATCH_SITES,
            [1, TABLE_IPA, 65537, TEXT_VA]
        )[0],
        err(KpError::ObjectState),
        "trampolines first"
    );
}

/// Kernel protect with the `measure` code policy: enable also denies EL1
/// execute on the rest of RAM, the permission calls are answered, and an
/// EL1 fetch outside the image is counted as the code policy's.
#[test]
fn the_code_policy_comes_with_enable() {
    use guest_kp::mem_perms::{Entry, ATTR_EXEC, ATTR_READ, CODE_LOG, MEM_PERMISSIONS};

    let mut ops = Ops::new();
    let mut kp = service(&mut ops);
    let hyp = IpaRange::new(Ipa(RAM + (8 << 20)), 1 << 20).unwrap();
    kp.set_code_policy(Policy::Measure, hyp);
    assert!(kp.function_ids().contains(&MEM_PERMISSIONS));
    assert!(kp.function_ids().contains(&CODE_LOG));
    let list = RAM + 0x1000;
    let heap = RAM + 0x10_0000;
    let entry = Entry {
        start: heap,
        size: 0x1000,
        attrs: ATTR_READ | ATTR_EXEC,
        va: 0xffff_8000_0900_0000,
    };
    ops.at(list)[..32].copy_from_slice(&entry.to_bytes());
    assert_eq!(
        call(&mut kp, &mut ops, MEM_PERMISSIONS, [list, 1, 0])[0],
        err(KpError::ObjectState),
        "not before enable"
    );
    assert_eq!(submit(&mut kp, &mut ops, &record()), 0);
    assert_eq!(enable(&mut kp, &mut ops)[..2], [0, 1]);
    // The image's four regions, then the RAM around them.
    let denied: Vec<_> = ops.perms[4..].to_vec();
    assert_eq!(
        denied,
        [
            (
                IpaRange::new(Ipa(RAM), TEXT.0 - RAM).unwrap(),
                permissions::stage2_perms(
                    permissions::MemAttrs::READ | permissions::MemAttrs::WRITE
                )
            ),
            (
                IpaRange::new(Ipa(BSS.1), RAM + (8 << 20) - BSS.1).unwrap(),
                permissions::stage2_perms(
                    permissions::MemAttrs::READ | permissions::MemAttrs::WRITE
                )
            ),
        ]
    );
    assert!(denied.iter().all(|(_, p)| p.contains(Perms::WRITE)
        && !p.contains(Perms::EXEC_EL1)
        && p.contains(Perms::EXEC_EL0)));
    let r = call(&mut kp, &mut ops, MEM_PERMISSIONS, [list, 1, 0]);
    assert_eq!((r[0], r[2]), (0, 1), "applied, one code-log record");
    assert_eq!(call(&mut kp, &mut ops, CODE_LOG, [0, 0, 0])[3], 1);
    let regs = GuestRegs::default();
    let f = fault(
        heap + 0x1000,
        0xffff_8000_9000_0000,
        store(0, 2),
        &regs,
        true,
    );
    assert_eq!(kp.guest_fault(&f, &mut ops), FaultAction::Refused);
    let s = stats(&kp);
    assert!(s.contains("kp_code_policy=measure\n"), "{s}");
    assert!(s.contains("kp_perm_exec_blocked=1\n"), "{s}");
    assert!(s.contains("kp_code_log_records=1\n"), "{s}");
    assert!(summary(&kp).contains("code policy:    measure"));
}

/// The image's other text (arm64's `.rodata.text`: the idmap, the KPTI
/// trampoline) named at enable: checked, then read-only and executable
/// at EL1 under default deny, also under `lock`, and in the code log.
#[test]
fn the_images_other_text_is_executable_and_read_only_from_enable() {
    use guest_kp::mem_perms::read_code_log;

    /// After BSS, inside the image the resource manager gave.
    const OTHER: u64 = BSS.1;
    for policy in [Policy::Measure, Policy::Lock] {
        let mut ops = Ops::new();
        let mut kp = KernelProtect::with_sites(storage(16, 16));
        kp.init(&mut ops).unwrap();
        let image = IpaRange::new(Ipa(TEXT.0), OTHER + 0x10_0000 - TEXT.0).unwrap();
        kp.protect_vm_assets(AssetExtents {
            rx: image,
            ro: image,
            rw: image,
        })
        .unwrap();
        kp.set_code_policy(
            policy,
            IpaRange::new(Ipa(RAM + (8 << 20)), 1 << 20).unwrap(),
        );
        assert_eq!(submit(&mut kp, &mut ops, &record()), 0);
        ops.at(OTHER)[..0x2000].fill(0x5a);
        let enable_with = |kp: &mut KernelProtect, ops: &mut Ops, start: u64, size: u64| {
            call(
                kp,
                ops,
                abi::ENABLE_VM_PROTECTION,
                [abi::SELF_ADDRSPACE, start, size],
            )[0]
        };
        let bad = [
            (OTHER + 0x800, 0x1000, KpError::ArgumentAlignment),
            (OTHER, 0x1800, KpError::ArgumentAlignment),
            (OTHER, 0, KpError::ArgumentSize),
            (OTHER, abi::MAX_OTHER_TEXT + 0x1000, KpError::ArgumentSize),
            (OTHER + 0x10_0000, 0x1000, KpError::AddrInvalid),
            (!0xfff, 0x1000, KpError::AddrInvalid),
            (BSS.1 - 0x1000, 0x2000, KpError::ArgumentInvalid),
            (TEXT.0, 0x1000, KpError::ArgumentInvalid),
        ];
        for (start, size, want) in bad {
            assert_eq!(
                enable_with(&mut kp, &mut ops, start, size),
                err(want),
                "{start:#x}+{size:#x}"
            );
        }
        assert!(!kp.is_protected(), "a refused enable changes nothing");
        assert_eq!(enable_with(&mut kp, &mut ops, OTHER, 0x2000), 0);
        assert!(kp.is_protected());
        let perms = |ops: &Ops, ipa: u64| {
            ops.perms
                .iter()
                .rev()
                .find(|(r, _)| r.contains(Ipa(ipa)))
                .map(|&(_, p)| p)
        };
        assert_eq!(
            perms(&ops, OTHER + 0x1000),
            Some(Perms::R_EL1X),
            "{policy:?}"
        );
        assert_eq!(
            perms(&ops, OTHER + 0x2000).map(|p| p.contains(Perms::EXEC_EL1)),
            Some(false),
            "only the other text"
        );
        // Logged: one LOG_EXEC record of its contents.
        struct Hv<'a>(&'a mut KernelProtect<'static>, &'a mut Ops);
        impl guest_kp::guest::Hypercall for Hv<'_> {
            fn call(&mut self, fid: u32, a: [u64; 4]) -> [u64; 4] {
                call4(self.0, self.1, fid, a)
            }
        }
        let (_, records) = read_code_log(&mut Hv(&mut kp, &mut ops)).unwrap();
        assert_eq!(records, 1);
        assert!(stats(&kp).contains("kp_other_text=8192"));
        // Self-checks ignore x2 and x3.
        assert_ne!(
            enable_with(&mut kp, &mut ops, 1, 1),
            err(KpError::ArgumentAlignment)
        );
    }
}
