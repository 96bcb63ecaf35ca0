// SPDX-License-Identifier: GPL-2.0 OR MIT
//! Host tests of kernel protect: every call, every bad input, the fault
//! handlers and the text-patching path, against fake guest RAM.

use std::vec::Vec;

use guest_kp::patch::{encode_b, encode_bl, NOP};
use guest_kp::record::Region;
use guest_kp::sites::{FtraceSite, JumpSite, BTI_C, MOV_X9_X30};

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

/// 8 MiB of fake guest RAM at RAM, and optionally a hypervisor CPU for
/// background hashing. Its hash is computed only when the digest is
/// taken, so anything written while it is "running" would show.
struct Ops {
    mem: Vec<u8>,
    perms: Vec<(IpaRange, Perms)>,
    hyp_cpu: bool,
    background: Option<Vec<IpaRange>>,
    /// The hypervisor's CPU never delivers its digest.
    lose_background: bool,
    /// Polls of the background hash that find it still running.
    pending_polls: u32,
    /// Hashing guest RAM fails.
    fail_hash: bool,
}

impl Ops {
    fn new() -> Self {
        Self {
            mem: vec![0; 8 << 20],
            perms: Vec::new(),
            hyp_cpu: false,
            background: None,
            lose_background: false,
            pending_polls: 0,
            fail_hash: false,
        }
    }
    fn with_hyp_cpu() -> Self {
        Self {
            hyp_cpu: true,
            ..Self::new()
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
    fn hash_guest_in_background(&mut self, spans: &[IpaRange]) -> Result<bool, OpsError> {
        assert!(self.background.is_none(), "one background hash at a time");
        if spans.iter().any(|r| !self.guest_ram().covers(r)) {
            return Err(OpsError::NotGuestRam);
        }
        if self.hyp_cpu {
            self.background = Some(spans.to_vec());
        }
        Ok(self.hyp_cpu)
    }
    fn background_hash(&mut self) -> BackgroundHash {
        if self.background.is_some() && self.pending_polls > 0 {
            self.pending_polls -= 1;
            return BackgroundHash::Pending;
        }
        self.wait_background_hash()
            .map_or(BackgroundHash::None, BackgroundHash::Done)
    }
    fn wait_background_hash(&mut self) -> Option<[u8; 32]> {
        let spans = self.background.take()?;
        if self.lose_background {
            return None;
        }
        let mut h = crate::sha256::Sha256::new(crate::sha256::compress_soft);
        for r in spans {
            h.update(&self.at(r.start().get())[..r.size() as usize]);
        }
        Some(h.finalize())
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

/// enable_vm_protection on the guest itself.
fn enable(kp: &mut KernelProtect, ops: &mut Ops) -> CallResult {
    call(
        kp,
        ops,
        abi::ENABLE_VM_PROTECTION,
        [abi::SELF_ADDRSPACE, 0, 0],
    )
}

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
    jump_label_patches(Ops::new());
}

#[test]
fn jump_label_patches_with_a_baseline_hashed_in_the_background() {
    // (That the first patch waits for the digest is checked by
    // `a_patch_waits_for_the_background_baseline`: here the two patches
    // cancel out before the self-check.)
    jump_label_patches(Ops::with_hyp_cpu());
}

fn jump_label_patches(mut ops: Ops) {
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
    assert_eq!(kp.guest_fault(&f, &mut ops), FaultAction::Emulated);
    assert_eq!(ops.word(site), b, "performed on the guest's behalf");
    regs.x[3] = u64::from(NOP);
    let f = fault(site, va, store(3, 2), &regs, false);
    assert_eq!(kp.guest_fault(&f, &mut ops), FaultAction::Emulated);
    assert_eq!(ops.word(site), NOP);
    assert_eq!(kp.counters.patches_accepted, 2);
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

#[test]
fn baseline_hashed_on_the_hypervisor_cpu_is_the_same_measurement() {
    let fill = |ops: &mut Ops| {
        for (i, b) in ops.at(TEXT.0)[..(RODATA.1 - TEXT.0) as usize]
            .iter_mut()
            .enumerate()
        {
            *b = (i * 131 + i / 4096) as u8;
        }
    };
    let mut sync_ops = Ops::new();
    fill(&mut sync_ops);
    let mut sync = service(&mut sync_ops);
    assert_eq!(submit(&mut sync, &mut sync_ops, &record()), 0);
    let r = enable(&mut sync, &mut sync_ops);
    assert_ne!(r[3], 0, "measured inside the call");
    assert!(stats(&sync).contains("kp_measured_on=guest-cpu\n"));

    let mut ops = Ops::with_hyp_cpu();
    fill(&mut ops);
    let mut kp = service(&mut ops);
    assert_eq!(submit(&mut kp, &mut ops, &record()), 0);
    let r = enable(&mut kp, &mut ops);
    assert_eq!(
        r,
        [0, 1, 0, 0],
        "protected; the measurement is not ready yet"
    );
    assert!(
        ops.perms.len() == 4 && ops.background.is_some(),
        "permissions applied before the hash started"
    );
    assert!(stats(&kp).contains("kp_measurement=pending\n"));
    // Power-off takes the digest so the stats show it.
    kp.finish(&mut ops);
    assert_eq!(kp.digest(), sync.digest());
    assert!(kp.digest().is_some());
    assert!(stats(&kp).contains("kp_measured_on=hypervisor-cpu\n"));
    assert!(!stats(&kp).contains("pending"));
    // A self-check compares against it.
    let r = enable(&mut kp, &mut ops);
    assert_eq!(r[..2], [0, 1]);
    assert_eq!(
        r[3],
        u64::from_be_bytes(kp.digest().unwrap()[..8].try_into().unwrap())
    );
}

#[test]
fn self_check_is_busy_until_the_background_baseline_is_taken() {
    let mut ops = Ops::with_hyp_cpu();
    let mut kp = service(&mut ops);
    assert_eq!(submit(&mut kp, &mut ops, &record()), 0);
    enable(&mut kp, &mut ops);
    ops.pending_polls = 2;
    for _ in 0..2 {
        let r = enable(&mut kp, &mut ops);
        assert_eq!(
            r[0],
            KpError::Busy.as_raw(),
            "not waited for under the lock"
        );
    }
    assert!(stats(&kp).contains("kp_busy=2\n"));
    assert!(stats(&kp).contains("kp_self_checks=0\n"), "no check ran");
    let r = enable(&mut kp, &mut ops);
    assert_eq!(r[..2], [0, 1], "intact");
    assert_ne!(r[3], 0);
    assert!(ops.background.is_none(), "the digest was taken");
}

#[test]
fn a_patch_waits_for_the_background_baseline() {
    // One patch, then a self-check: had the patch been written before the
    // fake hashed, the baseline would hold the new branch while the
    // self-check restores the original NOP, and they would differ.
    let site = TEXT.0 + 0x40 * 4;
    let b = encode_b(site, site + 0x40).unwrap();
    let setup = |ops: &mut Ops| {
        ops.at(site)[..4].copy_from_slice(&NOP.to_le_bytes());
        let mut kp = service(ops);
        assert_eq!(submit(&mut kp, ops, &record()), 0);
        assert_eq!(register_jumps(&mut kp, ops, &[(site, site + 0x40)])[0], 0);
        enable(&mut kp, ops);
        kp
    };
    let mut sync_ops = Ops::new();
    let sync = setup(&mut sync_ops);
    let mut ops = Ops::with_hyp_cpu();
    let mut kp = setup(&mut ops);
    assert!(ops.background.is_some());
    let mut regs = GuestRegs::default();
    regs.x[2] = u64::from(b);
    let f = fault(site, FIXMAP + (site & 0xfff), store(2, 2), &regs, false);
    ops.pending_polls = 1;
    assert_eq!(
        kp.guest_fault(&f, &mut ops),
        FaultAction::Retry,
        "the store runs again later"
    );
    assert_eq!(ops.word(site), NOP, "nothing written meanwhile");
    assert!(stats(&kp).contains("kp_patches_deferred=1\n"));
    assert_eq!(kp.guest_fault(&f, &mut ops), FaultAction::Emulated);
    assert!(ops.background.is_none(), "the digest was taken first");
    assert_eq!(ops.word(site), b);
    assert_eq!(kp.digest(), sync.digest(), "the baseline is pre-patch");
    assert!(kp.digest().is_some());
    let r = enable(&mut kp, &mut ops);
    assert_eq!(r[..3], [0, 1, 1], "intact, one patch");
}

#[test]
fn a_baseline_that_cannot_be_taken_fails_every_self_check() {
    for hyp_cpu in [false, true] {
        let mut ops = if hyp_cpu {
            Ops::with_hyp_cpu()
        } else {
            Ops::new()
        };
        ops.lose_background = true;
        ops.fail_hash = true;
        let mut kp = service(&mut ops);
        assert_eq!(submit(&mut kp, &mut ops, &record()), 0);
        let r = enable(&mut kp, &mut ops);
        assert_eq!(ops.perms.len(), 4, "protected regardless");
        assert!(stats(&kp).contains("kp_state=protected\n"));
        if !hyp_cpu {
            assert_eq!(r[..2], [0, 0], "protected, not intact");
        }
        // The first self-check takes (or fails to take) the baseline.
        let r = enable(&mut kp, &mut ops);
        assert_eq!(r[..2], [0, 0]);
        ops.fail_hash = false;
        let r = enable(&mut kp, &mut ops);
        assert_eq!(r[..2], [0, 0], "never intact without a baseline");
        assert!(stats(&kp).contains("kp_measurement=lost\n"));
    }
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
    assert!(s.contains("SHA-256 of text+rodata "), "{s}");
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
