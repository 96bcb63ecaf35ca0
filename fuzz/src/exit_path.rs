// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The whole exit path: a guest's life as a sequence of exits fed to
//! `Hyp::handle_sync`/`handle_async`, with both services registered and
//! guest RAM seeded with valid and near-valid `kernel_asset_info` records
//! and jump-label sites, so calls get past parsing and the guest can
//! enroll, report, get protected and patch its text.
//!
//! The guest also acts as its own MMU: a store or an instruction fetch
//! that stage 2 allows just happens (guest RAM changes); one it forbids
//! becomes the permission fault hardware would raise. A guest that can
//! write its TEXT after protection would then show up as a failed
//! self-check, which the invariants forbid.

use arbitrary::Arbitrary;
use guest_kp::abi::{self as kp_abi, RegionType, KP_MAGIC_VERSION};
use guest_kp::patch::{encode_b, NOP};
use guest_kp::record::{KernelAssetInfo, Region};
use hyp_stub::addr::Ipa;
use hyp_stub::boot::{HYP_BASE, RAM_BASE};
use hyp_stub::esr::Esr;
use hyp_stub::hyp::{cpu_slot, Hyp, Next, Platform};
use hyp_stub::service::Service;
use hyp_stub::services::mmio_guard::Policy;
use hyp_stub::smccc::{self, psci};
use hyp_stub::stage2::{Perms, PAGE_SIZE};
use hyp_stub::stats::ExitKind;
use hyp_stub::vcpu::Vcpu;
use mmio_guard::abi as mg;

use crate::invariants::{self, Leaf, RangeSet};
use crate::machine::{
    self, Boot, Machine, Pool, Services, BOOT_MPIDR, FIXMAP_VA, HYP_ENTRY, IMAGE, IMAGE_SIZE,
    LINEAR_VA, RAM_END, RECORD_PAGE, VBAR,
};

/// Function IDs of the real ABI lists (discovery, PSCI, MMIO guard,
/// kernel protect, its patch sites and page permissions), so that a
/// random choice lands on one that means something.
pub const KNOWN_FIDS: [u32; 37] = [
    smccc::SMCCC_VERSION,
    smccc::SMCCC_ARCH_FEATURES,
    smccc::VENDOR_HYP_UID,
    smccc::VENDOR_HYP_KVM_FEATURES,
    psci::VERSION,
    psci::CPU_ON_32,
    psci::CPU_ON_64,
    psci::CPU_OFF,
    psci::AFFINITY_INFO_32,
    psci::AFFINITY_INFO_64,
    psci::FEATURES,
    psci::SYSTEM_OFF,
    psci::SYSTEM_RESET,
    psci::SYSTEM_RESET2_32,
    psci::SYSTEM_RESET2_64,
    0x8400_0001, // CPU_SUSPEND_32
    0xc400_0001, // CPU_SUSPEND_64
    0x8400_000c, // CPU_DEFAULT_SUSPEND_32
    0xc400_000e, // SYSTEM_SUSPEND_64
    mg::HYP_MEMINFO,
    mg::MEM_SHARE,
    mg::MEM_UNSHARE,
    mg::INFO,
    mg::ENROLL,
    mg::MAP,
    mg::UNMAP,
    mg::MAP_RANGE,
    mg::UNMAP_RANGE,
    kp_abi::ASSET_INFO,
    kp_abi::ENABLE_VM_PROTECTION,
    kp_abi::ASSET_INFO_COMPACT,
    guest_kp::mem_perms::MEM_PERMISSIONS,
    kp_abi::PATCH_SITES,
    kp_abi::TEXT_PATCH,
    guest_kp::mem_perms::CODE_LOG,
    0xc600_0009,
    0x8600_0001,
];

/// A function ID.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Fid {
    /// One of [`KNOWN_FIDS`].
    Known(u8),
    /// Any function of the PSCI range, SMC64 or SMC32: the allowlist must
    /// refuse the ones it does not name, which a random ID hardly ever
    /// hits.
    Psci { smc64: bool, n: u8 },
    /// Anything.
    Raw(u32),
}

impl Fid {
    fn get(self) -> u32 {
        match self {
            Fid::Known(i) => KNOWN_FIDS[usize::from(i) % KNOWN_FIDS.len()],
            Fid::Psci { smc64, n } => {
                let base = if smc64 { 0xc400_0000 } else { 0x8400_0000 };
                base | u32::from(n % 0x20)
            }
            Fid::Raw(f) => f,
        }
    }
}

/// An argument register value, drawn from where meaningful values lie.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Value {
    /// 0 (SELF_ADDRSPACE, region TEXT, ...).
    Zero,
    /// A small number (region types, attributes, CPU numbers).
    Small(u8),
    /// A page count, as a size.
    Pages(u8),
    /// A page of the kernel image (or a little past it).
    ImagePage(u8),
    /// A seeded record (slot `n` of the record page).
    Record(u8),
    /// A granule of the device window.
    Granule(u16),
    /// A byte offset into guest RAM.
    Ram(u32),
    /// The hypervisor's own memory.
    Hyp(u32),
    /// A kernel virtual address around the fixmap slot.
    KernelVa(u16),
    /// The jump table the harness writes for the seeded sites
    /// ([`JUMP_TABLE`]).
    JumpTable,
    /// The TEXT_PATCH batch the harness writes ([`BATCH`]).
    Batch,
    /// Anything.
    Raw(u64),
}

/// Where the harness writes a `__jump_table` of the seeded sites: the
/// image's fourth page, which lies in every valid layout's
/// `[TEXT.start, BSS.end)` (at most 3 pages of gap, at least one page
/// per region).
pub const JUMP_TABLE: u64 = IMAGE + 3 * PAGE_SIZE;

/// Where the harness writes TEXT_PATCH batches (guest RAM outside the
/// image).
pub const BATCH: u64 = RECORD_PAGE + 0x800;

impl Value {
    fn get(self) -> u64 {
        match self {
            Value::Zero => 0,
            Value::Small(n) => u64::from(n),
            Value::Pages(n) => u64::from(n) * PAGE_SIZE,
            Value::ImagePage(n) => IMAGE + u64::from(n % 24) * PAGE_SIZE,
            Value::Record(n) => record_ipa(n),
            Value::Granule(g) => u64::from(g) * mg::GRANULE,
            Value::Ram(o) => RAM_BASE + u64::from(o) % (RAM_END - RAM_BASE),
            Value::Hyp(o) => HYP_BASE + u64::from(o) % (32 << 20),
            Value::KernelVa(o) => FIXMAP_VA.wrapping_add(u64::from(o)).wrapping_sub(0x8000),
            Value::JumpTable => JUMP_TABLE,
            Value::Batch => BATCH,
            Value::Raw(v) => v,
        }
    }
}

/// Where a seeded record goes: slot `n` of the record page; slot 15
/// straddles the page end.
fn record_ipa(n: u8) -> u64 {
    match n % 16 {
        15 => RECORD_PAGE + PAGE_SIZE - 64,
        n => RECORD_PAGE + u64::from(n) * 256,
    }
}

/// A guest address for an abort.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Addr {
    /// In the kernel image (byte offset; may run a little past it).
    Image(u16),
    /// Anywhere in guest RAM.
    Ram(u32),
    /// In the device window, at granule `g` plus a byte offset.
    Device(u16, u16),
    /// The PL011.
    Uart(u8),
    /// The hypervisor's memory.
    Hyp(u32),
    /// Anything.
    Raw(u64),
}

impl Addr {
    fn get(self) -> u64 {
        match self {
            Addr::Image(o) => IMAGE + u64::from(o) % (IMAGE_SIZE + 0x2000),
            Addr::Ram(o) => RAM_BASE + u64::from(o) % (RAM_END - RAM_BASE),
            Addr::Device(g, o) => u64::from(g) * mg::GRANULE + u64::from(o % 0x1000),
            Addr::Uart(o) => 0x0900_0000 + u64::from(o),
            Addr::Hyp(o) => HYP_BASE + u64::from(o) % (32 << 20),
            Addr::Raw(v) => v,
        }
    }
}

/// A data-abort fault status.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Fsc {
    /// Translation fault at level n (n = 0..3).
    Translation(u8),
    /// Translation fault at level -1 (a stage-1 walk's, as QEMU reports).
    TranslationM1,
    /// Access flag fault.
    Access(u8),
    /// Permission fault.
    Permission(u8),
    /// Any other code.
    Raw(u8),
}

impl Fsc {
    fn bits(self) -> u64 {
        match self {
            Fsc::Translation(l) => 0b000100 | u64::from(l & 3),
            Fsc::TranslationM1 => 0b101011,
            Fsc::Access(l) => 0b001000 | u64::from(l & 3),
            Fsc::Permission(l) => 0b001100 | u64::from(l & 3),
            Fsc::Raw(c) => u64::from(c & 0x3f),
        }
    }
}

/// A data-abort syndrome, field by field.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub struct Syndrome {
    pub isv: bool,
    pub sas: u8,
    pub sse: bool,
    pub srt: u8,
    pub sf: bool,
    pub wnr: bool,
    pub s1ptw: bool,
    pub fsc: Fsc,
}

impl Syndrome {
    fn esr(self) -> u64 {
        (0x24 << 26)
            | (1 << 25)
            | (u64::from(self.isv) << 24)
            | (u64::from(self.sas & 3) << 22)
            | (u64::from(self.sse) << 21)
            | (u64::from(self.srt & 31) << 16)
            | (u64::from(self.sf) << 15)
            | (u64::from(self.s1ptw) << 7)
            | (u64::from(self.wnr) << 6)
            | self.fsc.bits()
    }
}

/// An instruction word, drawn from what jump labels write.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Insn {
    /// NOP.
    Nop,
    /// B to `words` instructions from the site.
    Branch(i16),
    /// Anything.
    Raw(u32),
}

impl Insn {
    /// The instruction for `site`.
    pub fn at(self, site: u64) -> u32 {
        match self {
            Insn::Nop => NOP,
            Insn::Branch(w) => {
                let to = site.wrapping_add_signed(i64::from(w) * 4);
                encode_b(site, to).unwrap_or(NOP)
            }
            Insn::Raw(v) => v,
        }
    }
}

/// A record the harness writes into guest RAM before the guest runs.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub struct RecordSeed {
    /// Slot on the record page (see [`record_ipa`]).
    pub slot: u8,
    /// Pages of TEXT, RODATA, DATA, BSS, laid out in that order from the
    /// image start after `gap` pages.
    pub pages: [u8; 4],
    pub gap: u8,
    /// One field changed afterwards (a near-valid record), if any.
    pub mutation: Option<(u8, Value)>,
}

impl RecordSeed {
    fn record(&self) -> [u8; kp_abi::RECORD_SIZE] {
        let mut r = KernelAssetInfo::new();
        let mut at = IMAGE + u64::from(self.gap % 4) * PAGE_SIZE;
        for (ty, &n) in RegionType::IPA.iter().zip(&self.pages) {
            let size = u64::from(n % 6 + 1) * PAGE_SIZE;
            r.set_region(*ty, Region::new(at, size));
            at += size;
        }
        r.set_region(
            RegionType::FixmapTextPoke0,
            Region::new(FIXMAP_VA, PAGE_SIZE),
        );
        let mut bytes = r.to_bytes();
        if let Some((field, v)) = self.mutation {
            // Field 0 is the version, 1..=16 the slots' start and size.
            let i = usize::from(field % 17);
            if i == 0 {
                let version = (v.get() as u32) ^ KP_MAGIC_VERSION;
                bytes[..4].copy_from_slice(&version.to_le_bytes());
            } else {
                let off = 4 + (i - 1) * 8;
                bytes[off..off + 8].copy_from_slice(&v.get().to_le_bytes());
            }
        }
        bytes
    }
}

/// One thing the guest does.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Op {
    /// An SMCCC call (or an immediate HVC) with x1..x3 (x4..x6 zero).
    Call {
        /// SMC (else HVC).
        smc: bool,
        /// The immediate: 0, the resource manager's 0x6094, or anything.
        imm: Imm,
        fid: Fid,
        args: [Value; 3],
    },
    /// A load or store the guest makes: plain RAM if stage 2 allows it,
    /// the fault hardware would raise if not, MMIO outside RAM.
    Access {
        at: Addr,
        write: bool,
        /// The store's value (an instruction, for TEXT).
        value: Insn,
        /// Through the FIXMAP_TEXT_POKE0 slot (the kernel's text-patch
        /// path) rather than the linear map.
        fixmap: bool,
        srt: u8,
        sas: u8,
    },
    /// An instruction fetch at EL1: a permission fault where stage 2
    /// forbids it.
    Fetch { at: Addr },
    /// A raw stage-2 data abort, syndrome and all.
    DataAbort {
        at: Addr,
        far_va: Option<u64>,
        syndrome: Syndrome,
        reg: Value,
    },
    /// A raw stage-2 instruction abort.
    InstrAbort { at: Addr, fsc: Fsc },
    /// Any other exception class.
    Other { ec: u8, iss: u32 },
    /// An IRQ, FIQ or SError taken at EL2.
    Async,
    /// A trapped WFI: the guest is idle.
    Idle,
    /// A secondary CPU comes up for vCPU `slot`.
    SecondaryBoot { slot: u8 },
    /// What the device returns to reads from now on.
    DeviceValue(u64),
}

/// An HVC/SMC immediate.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Imm {
    /// An SMCCC call.
    Zero,
    /// protect_vm_assets.
    ProtectVmAssets,
    /// Anything.
    Raw(u16),
}

impl Imm {
    fn get(self) -> u16 {
        match self {
            Imm::Zero => 0,
            Imm::ProtectVmAssets => kp_abi::PROTECT_VM_ASSETS_HVC_IMM,
            Imm::Raw(v) => v,
        }
    }
}

/// A whole input.
#[derive(Arbitrary, Clone, Debug)]
pub struct Input {
    /// MMIO guard from boot (a protected VM) rather than after ENROLL.
    pub from_boot: bool,
    /// Stage-2 tables beyond the two that map RAM.
    pub extra_tables: u8,
    /// What firmware answers CPU_ON.
    pub cpu_on_fails: bool,
    /// The firmware refuses power-down suspends and CPU_OFF (so they
    /// return, with DENIED).
    pub power_refused: bool,
    pub records: Vec<RecordSeed>,
    /// Jump-label sites in TEXT: word index in the image, and what it
    /// holds.
    pub sites: Vec<(u16, Insn)>,
    /// TEXT_PATCH entries written at [`BATCH`]: word index in the image
    /// and the instruction.
    pub batch: Vec<(u16, Insn)>,
    pub ops: Vec<Op>,
}

/// What one input reached, for measuring the harness's reach.
#[derive(Clone, Copy, Debug, Default)]
pub struct Reach {
    /// Exits fed.
    pub exits: u64,
    /// Discovery calls answered without the core.
    pub lock_free: u64,
    /// SMCCC calls a service answered.
    pub service_calls: u64,
    /// MMIO guard calls answered.
    pub guard_calls: u64,
    /// Kernel-protect calls answered.
    pub kp_calls: u64,
    /// hvc #0x6094 issued.
    pub protect_vm_assets: u64,
    /// MMIO accesses emulated.
    pub mmio_emulated: u64,
    /// MMIO accesses refused.
    pub mmio_refused: u64,
    /// The guest enrolled in the MMIO guard.
    pub enrolled: bool,
    /// The guest's layout was accepted.
    pub reported: bool,
    /// Protection was enabled.
    pub protected: bool,
    /// Text patches performed.
    pub patches: u64,
    /// Self-checks that passed.
    pub self_checks: u64,
    /// Faults on RAM refused.
    pub ram_refused: u64,
    /// Faults on RAM retried.
    pub ram_retried: u64,
    /// CPUs started.
    pub cpus_started: u64,
    /// Power-down suspends the guest resumed from.
    pub power_downs: u64,
    /// vCPUs turned off.
    pub cpus_off: u64,
}

/// What became of the calling vCPU once the EL2 code finished an exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum After {
    /// It returns to the guest where the core (or the device access)
    /// left it.
    Stayed,
    /// It powered down and resumed at its entry point.
    Resumed { entry: u64, context: u64 },
    /// Its CPU is off.
    Off,
}

const MAX_OPS: usize = 256;

/// The IPA bits a stage-2 fault reports (HPFAR_EL2.FIPA and the page
/// offset from FAR_EL2).
const IPA_MASK: u64 = 0x000f_ffff_ffff_ffff;

struct Guest<'a, 's, 'm> {
    hyp: Hyp<'s, Pool>,
    /// The answers any CPU gives without the core, as the EL2 code does.
    discovery: &'s hyp_stub::hyp::Discovery,
    plat: Machine,
    services: &'a Services<'m>,
    vcpu: Vcpu,
    fed: [u64; KINDS.len()],
    guarded: RangeSet,
    /// Stage-2 leaves as of the last change (only enabling protection
    /// changes them).
    leaves: Vec<Leaf>,
    reach: Reach,
    /// Instructions written by TEXT_PATCH batches (not faults).
    batched: u64,
    /// The CPU the ops come from is off: nothing runs on it until a
    /// secondary boot brings a vCPU up.
    off: bool,
}

fn kind_index(k: ExitKind) -> usize {
    match k {
        ExitKind::Hvc => 0,
        ExitKind::Smc => 1,
        ExitKind::DataAbort => 2,
        ExitKind::InstrAbort => 3,
        ExitKind::SysReg => 4,
        ExitKind::Other => 5,
        ExitKind::Idle => 6,
    }
}

const KINDS: [ExitKind; 7] = [
    ExitKind::Hvc,
    ExitKind::Smc,
    ExitKind::DataAbort,
    ExitKind::InstrAbort,
    ExitKind::SysReg,
    ExitKind::Other,
    ExitKind::Idle,
];

impl Guest<'_, '_, '_> {
    fn perms_at(&self, ipa: u64) -> Option<Perms> {
        let i = self.leaves.partition_point(|l| l.range.end().get() <= ipa);
        self.leaves
            .get(i)
            .filter(|l| l.range.contains(Ipa(ipa)))
            .map(|l| l.perms)
    }

    fn refresh_leaves(&mut self) {
        self.leaves = invariants::leaves(&mut self.hyp);
        invariants::check_stage2(&self.leaves, &self.services.kp.lock());
    }

    fn exit(&mut self, esr: u64, far: u64, ipa: u64, kind: ExitKind) -> After {
        self.fed[kind_index(kind)] += 1;
        self.plat.take_events();
        // As `handle_lower_sync`: discovery calls without the core.
        if self.discovery.try_exit(Esr(esr), &mut self.vcpu) {
            assert!(matches!(kind, ExitKind::Hvc | ExitKind::Smc));
            self.reach.lock_free += 1;
            return After::Stayed;
        }
        let hpfar = (ipa >> 12) << 4;
        let next = self
            .hyp
            .handle_sync(Esr(esr), far, hpfar, &mut self.vcpu, &mut self.plat);
        let hypercall = matches!(kind, ExitKind::Hvc | ExitKind::Smc);
        assert!(
            hypercall || matches!(next, Next::Guest | Next::Mmio(_)),
            "a {kind:?} exit asked for {next:?}"
        );
        let after = self.complete(next);
        invariants::check_firmware_calls(&self.plat.firmware);
        after
    }

    /// What the EL2 code does once the core is released
    /// (`handle_lower_sync` and `power_down` in hyp-stub's el2 module),
    /// against the fake firmware.
    fn complete(&mut self, next: Next) -> After {
        match next {
            Next::Guest => After::Stayed,
            Next::Mmio(access) => {
                access.perform(&mut self.vcpu, &mut self.plat);
                After::Stayed
            }
            Next::Standby(state) => {
                let r = self
                    .plat
                    .firmware_call(psci::CPU_SUSPEND_64, [state.raw().into(), 0, 0]);
                self.vcpu.regs.x[0] = r[0];
                After::Stayed
            }
            Next::PowerDown { slot, state } => {
                assert_eq!(
                    Some(slot),
                    cpu_slot(self.plat.mpidr),
                    "a vCPU powered down another's CPU"
                );
                let r = self.plat.firmware_call(
                    psci::CPU_SUSPEND_64,
                    [state.raw().into(), HYP_ENTRY, slot as u64],
                );
                if r[0] != psci::SUCCESS {
                    self.hyp.suspend_failed(slot);
                    self.vcpu.regs.x[0] = r[0];
                    return After::Stayed;
                }
                // The firmware returned success (as QEMU's does): the
                // vCPU resumes at its own entry.
                let (entry, context) = self
                    .hyp
                    .secondary_boot(slot)
                    .expect("a suspended vCPU has nowhere to resume");
                self.resume(entry, context);
                self.reach.power_downs += 1;
                After::Resumed { entry, context }
            }
            Next::CpuOff { slot } => {
                assert_eq!(
                    Some(slot),
                    cpu_slot(self.plat.mpidr),
                    "a vCPU turned off another's CPU"
                );
                let r = self.plat.firmware_call(psci::CPU_OFF, [0; 3]);
                if r[0] == psci::SUCCESS {
                    // CPU_OFF does not return when it works.
                    self.off = true;
                    self.reach.cpus_off += 1;
                    return After::Off;
                }
                self.hyp.cpu_off_failed(slot);
                self.vcpu.regs.x[0] = r[0];
                After::Stayed
            }
        }
    }

    /// The calling CPU enters the guest at `entry`, as after CPU_ON: the
    /// entry must be one the core accepted (guest RAM, aligned).
    fn resume(&mut self, entry: u64, context: u64) {
        assert!(
            machine::layout().guest_ram.contains(Ipa(entry)) && entry.is_multiple_of(4),
            "a vCPU resumes at {entry:#x}, not an entry in guest RAM"
        );
        self.vcpu = Vcpu {
            pc: entry,
            // EL1h, interrupts masked.
            pstate: 0x3c5,
            ..Vcpu::default()
        };
        self.vcpu.regs.x[0] = context;
        self.off = false;
    }

    fn call(&mut self, smc: bool, imm: u16, fid: u32, args: [u64; 3]) {
        self.vcpu.regs.x[0] = u64::from(fid);
        self.vcpu.regs.x[1..4].copy_from_slice(&args);
        self.vcpu.regs.x[4..7].fill(0);
        let pc = self.vcpu.pc;
        let kp_before = self.services.kp.lock().is_protected();
        let (esr, kind) = if smc {
            ((0x17 << 26) | (1 << 25), ExitKind::Smc)
        } else {
            ((0x16 << 26) | (1 << 25), ExitKind::Hvc)
        };
        let after = self.exit(esr | u64::from(imm), 0, 0, kind);
        let x = self.vcpu.regs.x;
        match after {
            After::Stayed => assert_eq!(
                self.vcpu.pc,
                pc.wrapping_add(if smc { 4 } else { 0 }),
                "a hypercall moved the PC wrongly"
            ),
            After::Resumed { entry, context } => {
                assert!(psci::is_psci(fid), "{fid:#x} suspended the vCPU");
                assert_eq!((self.vcpu.pc, x[0]), (entry, context));
            }
            After::Off => {
                assert_eq!(fid, psci::CPU_OFF, "{fid:#x} turned the CPU off");
                return;
            }
        }
        assert!(
            self.plat.injected.is_empty(),
            "a hypercall injected an exception"
        );
        assert!(self.plat.accesses.is_empty() && self.plat.data_writes.is_empty());
        if fid == kp_abi::TEXT_PATCH && imm == 0 {
            // A batch writes its entries, in order, up to the first
            // refusal: as many as it says it applied.
            let kp = self.services.kp.lock();
            let text = kp.reported_layout().map(|l| l.text());
            for &(at, insn) in &self.plat.insn_writes {
                let text = text.expect("a batch written while unreported");
                check_patch_is_jump_label(at, insn, text.start(), text.end());
            }
            let n = self.plat.insn_writes.len() as u64;
            assert!(n == 0 || x[1] == n, "{n} written, {} applied", x[1]);
            self.batched += n;
            self.reach.patches += n;
        } else {
            assert!(self.plat.insn_writes.is_empty());
        }
        // Only PSCI reaches firmware (and only as the hypervisor's own
        // calls, which `exit` checked).
        assert!(
            self.plat.firmware.is_empty() || psci::is_psci(fid),
            "guest call {fid:#x} reached the firmware: {:x?}",
            self.plat.firmware
        );
        if imm != 0 {
            let expected = if imm == kp_abi::PROTECT_VM_ASSETS_HVC_IMM {
                self.reach.protect_vm_assets += 1;
                kp_abi::KpError::Denied.as_raw()
            } else {
                smccc::NOT_SUPPORTED
            };
            assert_eq!(x[0], expected, "hvc #{imm:#x} answered {:#x}", x[0]);
            return;
        }
        let guard_ids = self.services.guard.lock().function_ids();
        if guard_ids.contains(&fid) {
            self.reach.service_calls += 1;
            self.reach.guard_calls += 1;
            self.track_guard(fid, args, x[0]);
        } else if kp_abi::FUNCTION_IDS.contains(&fid) {
            self.reach.service_calls += 1;
            self.reach.kp_calls += 1;
            if fid == kp_abi::ENABLE_VM_PROTECTION {
                if kp_before && x[0] == kp_abi::RET_OK {
                    // A self-check: TEXT and RODATA changed only through
                    // the hypervisor, so the kernel must be intact.
                    assert_eq!(x[1], 1, "self-check failed without any tampering");
                    self.reach.self_checks += 1;
                }
                if !kp_before {
                    // Protection applied, or failed part way: either way
                    // stage 2 may have changed.
                    self.refresh_leaves();
                }
            }
        }
    }

    /// Follows the guard's state from the answers it gave.
    fn track_guard(&mut self, fid: u32, args: [u64; 3], ret: u64) {
        if ret != mg::RET_SUCCESS {
            return;
        }
        let [a1, a2, _] = args;
        match fid {
            mg::MAP => self.guarded.add(a1, a1 + mg::GRANULE),
            mg::MAP_RANGE => self.guarded.add(a1, a1 + a2),
            mg::UNMAP => self.guarded.remove(a1, a1 + mg::GRANULE),
            mg::UNMAP_RANGE => self.guarded.remove(a1, a1 + a2),
            _ => {}
        }
    }

    /// Checks an abort's outcome: exactly one of retried, emulated as
    /// MMIO, emulated by a service, or injected.
    fn after_abort(&mut self, ipa: u64, pc: u64, write: bool) {
        let p = &self.plat;
        let moved = self.vcpu.pc;
        let outcomes = usize::from(!p.accesses.is_empty())
            + usize::from(!p.insn_writes.is_empty())
            + usize::from(!p.injected.is_empty());
        assert!(outcomes <= 1, "an abort had several outcomes");
        // No ftrace sites are registered here, so no literal is written.
        assert!(p.data_writes.is_empty(), "a literal written");
        assert!(p.accesses.len() <= 1 && p.insn_writes.len() <= 1 && p.injected.len() <= 1);
        if let Some(a) = p.accesses.first() {
            assert_eq!(a.pa, ipa, "emulated at another address");
            assert_eq!(a.write, write);
            assert!(
                machine::layout().devices.contains(Ipa(ipa)),
                "emulated outside the device window: {ipa:#x}"
            );
            assert_eq!(ipa % a.width.bytes(), 0, "misaligned access emulated");
            let g = self.services.guard.lock();
            if g.enforcing() {
                assert!(
                    g.is_guarded(Ipa(ipa)),
                    "unguarded MMIO emulated at {ipa:#x}"
                );
                assert!(
                    self.guarded.contains(ipa),
                    "MMIO emulated outside the live mappings"
                );
            }
            assert_eq!(moved, pc.wrapping_add(4));
            self.reach.mmio_emulated += 1;
        } else if let Some(&(at, insn)) = p.insn_writes.first() {
            let kp = self.services.kp.lock();
            let layout = kp.reported_layout().filter(|_| kp.is_protected());
            let layout = layout.expect("instruction written while unprotected");
            assert_eq!(at, ipa, "instruction written elsewhere");
            assert!(write, "instruction written on a read");
            check_patch_is_jump_label(at, insn, layout.text().start(), layout.text().end());
            assert_eq!(moved, pc.wrapping_add(4));
            self.reach.patches += 1;
        } else if let Some(e) = p.injected.first() {
            assert_eq!(
                e.elr, pc,
                "injected exception does not return to the access"
            );
            assert_eq!(moved, VBAR + 0x200, "injection went to the wrong vector");
            // Back where the guest was, as its handler would return.
            self.vcpu.pc = pc;
            self.vcpu.pstate = 0b0101;
        } else {
            assert_eq!(moved, pc, "a retried access moved the PC");
        }
    }

    fn access(&mut self, ipa: u64, write: bool, value: u32, fixmap: bool, srt: u8, sas: u8) {
        let ram = machine::layout().guest_ram;
        let va = if fixmap {
            FIXMAP_VA | (ipa & (PAGE_SIZE - 1))
        } else {
            LINEAR_VA.wrapping_add(ipa)
        };
        let srt = srt % 31;
        let (sas, fsc) = if ram.contains(Ipa(ipa)) {
            let perms = self.perms_at(ipa).expect("all of RAM is mapped");
            let allowed = perms.contains(if write { Perms::WRITE } else { Perms::READ });
            if allowed {
                if write {
                    // Guest stores at the granularity it likes; words here.
                    self.plat.ram.write(ipa & !3, &value.to_le_bytes());
                }
                return;
            }
            // Instruction stores are 32-bit (SAS = 2).
            (if write { 2 } else { sas & 3 }, Fsc::Permission(3))
        } else {
            (sas & 3, Fsc::Translation(3))
        };
        let syndrome = Syndrome {
            isv: true,
            sas,
            sse: false,
            srt,
            sf: sas == 3,
            wnr: write,
            s1ptw: false,
            fsc,
        };
        self.vcpu.regs.x[usize::from(srt)] = u64::from(value);
        let pc = self.vcpu.pc;
        self.exit(syndrome.esr(), va, ipa, ExitKind::DataAbort);
        self.after_abort(ipa, pc, write);
    }

    fn fetch(&mut self, ipa: u64) {
        let ram = machine::layout().guest_ram;
        if ram.contains(Ipa(ipa))
            && self
                .perms_at(ipa)
                .is_some_and(|p| p.contains(Perms::EXEC_EL1))
        {
            return;
        }
        let fsc = if ram.contains(Ipa(ipa)) {
            0b001111
        } else {
            0b000111
        };
        let pc = self.vcpu.pc;
        self.exit(
            (0x20 << 26) | (1 << 25) | fsc,
            LINEAR_VA.wrapping_add(ipa),
            ipa,
            ExitKind::InstrAbort,
        );
        assert!(
            self.plat.accesses.is_empty() && self.plat.insn_writes.is_empty(),
            "a fetch was emulated"
        );
        assert_eq!(
            self.plat.injected.len(),
            1,
            "a refused fetch was not injected"
        );
        self.vcpu.pc = pc;
        self.vcpu.pstate = 0b0101;
    }

    fn op(&mut self, op: Op) {
        if self.off && !matches!(op, Op::SecondaryBoot { .. } | Op::DeviceValue(_)) {
            // Nothing runs on a CPU that is off.
            return;
        }
        match op {
            Op::Call {
                smc,
                imm,
                fid,
                args,
            } => self.call(smc, imm.get(), fid.get(), args.map(Value::get)),
            Op::Access {
                at,
                write,
                value,
                fixmap,
                srt,
                sas,
            } => {
                // Hardware reports IPA bits [51:12] only.
                let ipa = at.get() & IPA_MASK;
                let value = value.at(ipa & !3);
                self.access(ipa, write, value, fixmap, srt, sas);
            }
            Op::Fetch { at } => self.fetch(at.get() & IPA_MASK),
            Op::DataAbort {
                at,
                far_va,
                syndrome,
                reg,
            } => {
                let ipa = at.get();
                let far = far_va.unwrap_or(LINEAR_VA.wrapping_add(ipa)) & !0xfff | (ipa & 0xfff);
                self.vcpu.regs.x[usize::from(syndrome.srt % 31)] = reg.get();
                let pc = self.vcpu.pc;
                let seen = ipa & IPA_MASK;
                self.exit(syndrome.esr(), far, ipa, ExitKind::DataAbort);
                self.after_abort(seen, pc, syndrome.wnr);
            }
            Op::InstrAbort { at, fsc } => {
                let ipa = at.get();
                let pc = self.vcpu.pc;
                self.exit(
                    (0x20 << 26) | (1 << 25) | fsc.bits(),
                    LINEAR_VA.wrapping_add(ipa),
                    ipa,
                    ExitKind::InstrAbort,
                );
                assert!(self.plat.accesses.is_empty() && self.plat.insn_writes.is_empty());
                assert!(self.plat.injected.len() <= 1);
                self.vcpu.pc = pc;
                self.vcpu.pstate = 0b0101;
            }
            Op::Other { ec, iss } => {
                // Calls and aborts have ops of their own, which follow
                // their effects; here they become unknown exceptions.
                let ec = match u64::from(ec & 0x3f) {
                    0x01 | 0x16 | 0x17 | 0x20 | 0x24 => 0,
                    ec => ec,
                };
                let kind = match ec {
                    0x18 => ExitKind::SysReg,
                    _ => ExitKind::Other,
                };
                let iss = u64::from(iss & 0x1ff_ffff);
                let pc = self.vcpu.pc;
                self.exit((ec << 26) | (1 << 25) | iss, 0, 0, kind);
                assert_eq!(self.plat.injected.len(), 1, "EC {ec:#x} was not refused");
                assert_eq!(
                    self.plat.injected[0].esr >> 26,
                    0,
                    "not an undefined instruction"
                );
                self.vcpu.pc = pc;
                self.vcpu.pstate = 0b0101;
            }
            Op::Idle => {
                let pc = self.vcpu.pc;
                self.exit((0x01 << 26) | (1 << 25), 0, 0, ExitKind::Idle);
                assert!(self.plat.injected.is_empty(), "a WFI was refused");
                assert_eq!(self.vcpu.pc, pc.wrapping_add(4), "the WFI did not complete");
            }
            Op::Async => {
                self.fed[kind_index(ExitKind::Other)] += 1;
                self.hyp.handle_async();
            }
            Op::SecondaryBoot { slot } => {
                // A CPU started (or woken) for `slot` comes up at the
                // hypervisor's entry; if the core has a vCPU for it, the
                // ops from now on are that vCPU's.
                let slot = slot % 10;
                if let Some((entry, context)) = self.hyp.secondary_boot(usize::from(slot)) {
                    self.plat.mpidr = BOOT_MPIDR | u64::from(slot);
                    self.resume(entry, context);
                }
            }
            Op::DeviceValue(v) => self.plat.device_value = v,
        }
    }

    fn finish(mut self) -> Reach {
        self.refresh_leaves();
        let stats = &self.hyp.all_stats();
        let total: u64 = self.fed.iter().sum();
        assert_eq!(
            stats.exits_total(),
            total,
            "exits_total is not the exits fed"
        );
        for k in KINDS {
            assert_eq!(stats.exits_of(k), self.fed[kind_index(k)], "exits of {k:?}");
        }
        assert_eq!(
            stats.calls_total(),
            stats.exits_of(ExitKind::Hvc) + stats.exits_of(ExitKind::Smc),
            "calls counted are not the hypercall exits"
        );
        let t = self.plat.totals;
        assert_eq!(stats.mmio_emulated, t.accesses, "mmio_emulated");
        assert_eq!(
            stats.aborts_injected + stats.undefs_injected,
            t.injected,
            "injections counted"
        );
        assert_eq!(
            stats.ram_faults_emulated + self.batched,
            t.insn_writes,
            "ram_faults_emulated"
        );
        let guard = self.services.guard.lock();
        invariants::check_guard(&guard, &self.guarded);
        assert!(guard.enrolled() || !self.reach.enrolled);
        let kp = self.services.kp.lock();
        invariants::check_layout(&kp);
        self.reach.exits = total;
        self.reach.enrolled = guard.enrolled();
        self.reach.reported = kp.reported_layout().is_some();
        self.reach.protected = kp.is_protected();
        self.reach.mmio_refused = stats.mmio_refused;
        self.reach.ram_refused = stats.ram_faults_refused;
        self.reach.ram_retried = stats.ram_faults_retried;
        self.reach.cpus_started = t.cpus_started;
        self.reach
    }
}

/// The jump-label rule, written independently of `guest_kp::patch`: a
/// written instruction is NOP or an unconditional B whose target lies in
/// TEXT and is not the site itself.
pub fn check_patch_is_jump_label(site: u64, insn: u32, text_start: u64, text_end: u64) {
    assert_eq!(site % 4, 0, "misaligned patch site");
    assert!(
        site >= text_start && site + 4 <= text_end,
        "patch outside TEXT"
    );
    if insn == NOP {
        return;
    }
    assert_eq!(
        insn >> 26,
        0b000101,
        "patched in something other than NOP or B: {insn:#x}"
    );
    let imm26 = i64::from(insn & 0x03ff_ffff);
    let offset = ((imm26 << 38) >> 38) * 4;
    let target = site.wrapping_add_signed(offset);
    assert!(target != site, "patched in a branch to itself");
    assert!(
        target >= text_start && target < text_end,
        "branch out of TEXT: {target:#x}"
    );
}

/// Runs one input.
pub fn run(input: &Input) -> Reach {
    let boot = Boot {
        policy: if input.from_boot {
            Policy::FromBoot
        } else {
            Policy::AfterEnroll
        },
        tables: 2 + usize::from(input.extra_tables % 4),
    };
    let mut store = machine::SiteStore::default();
    let services = Services::with_sites(boot.policy, store.storage());
    let (mut guard, mut kp) = services.handles();
    let mut plat = Machine::new();
    plat.cpu_on_result = if input.cpu_on_fails { psci::DENIED } else { 0 };
    plat.power_refused = input.power_refused;
    for seed in input.records.iter().take(16) {
        plat.ram.write(record_ipa(seed.slot), &seed.record());
    }
    // The seeded sites, and a jump table naming them (a NOP's label is
    // 16 instructions on) for PATCH_SITES with `Value::JumpTable`.
    for (i, &(word, insn)) in input.sites.iter().take(64).enumerate() {
        let site = IMAGE + (u64::from(word) * 4) % IMAGE_SIZE;
        let insn = insn.at(site);
        plat.ram.write(site, &insn.to_le_bytes());
        let target = guest_kp::patch::branch_target(insn, site).unwrap_or(site + 0x40);
        let e = JUMP_TABLE + i as u64 * 16;
        plat.ram
            .write(e, &(site.wrapping_sub(e) as u32).to_le_bytes());
        plat.ram
            .write(e + 4, &(target.wrapping_sub(e + 4) as u32).to_le_bytes());
    }
    for (i, &(word, insn)) in input.batch.iter().take(64).enumerate() {
        let ipa = IMAGE + (u64::from(word) * 4) % IMAGE_SIZE;
        let entry = guest_kp::abi::TextPatch {
            ipa,
            value: insn.at(ipa).into(),
            size: 4,
        };
        let at = BATCH + i as u64 * guest_kp::abi::TEXT_PATCH_ENTRY_SIZE as u64;
        plat.ram.write(at, &entry.to_bytes());
    }
    let discovery = hyp_stub::hyp::Discovery::new();
    let hyp = machine::boot(&boot, &mut guard, &mut kp, &discovery, &mut plat);
    let mut g = Guest {
        hyp,
        discovery: &discovery,
        plat,
        services: &services,
        vcpu: Vcpu {
            pc: 0xffff_8000_0810_0000,
            pstate: 0b0101,
            ..Vcpu::default()
        },
        fed: [0; KINDS.len()],
        guarded: RangeSet::default(),
        leaves: Vec::new(),
        reach: Reach::default(),
        batched: 0,
        off: false,
    };
    // The boot path leaves all of RAM RWX in 2 MiB blocks (checked when
    // the tables were built); walked again after protection and at the
    // end.
    g.leaves = ram_as_booted();
    for op in input.ops.iter().take(MAX_OPS) {
        g.op(*op);
    }
    g.finish()
}

/// Stage 2 as the boot path leaves it, without walking the tables.
fn ram_as_booted() -> Vec<Leaf> {
    let ram = machine::layout().guest_ram;
    vec![Leaf {
        range: ram,
        pa: ram.start().get(),
        perms: Perms::RWX,
        mem: hyp_stub::stage2::MemType::Normal,
    }]
}

/// A guest that does everything right, as a seed for the corpus and a
/// test that the harness reaches every state.
pub fn well_behaved() -> Input {
    let record = RecordSeed {
        slot: 0,
        pages: [3, 1, 0, 0],
        gap: 0,
        mutation: None,
    };
    let site = IMAGE + 0x100;
    let call = |fid: u32, args: [Value; 3]| Op::Call {
        smc: false,
        imm: Imm::Zero,
        fid: Fid::Raw(fid),
        args,
    };
    Input {
        from_boot: false,
        extra_tables: 1,
        cpu_on_fails: false,
        power_refused: false,
        records: vec![record],
        sites: vec![(0x40, Insn::Nop)],
        batch: vec![(0x40, Insn::Nop)],
        ops: vec![
            call(smccc::VENDOR_HYP_UID, [Value::Zero; 3]),
            call(mg::ENROLL, [Value::Zero; 3]),
            call(mg::MAP, [Value::Granule(0x9000), Value::Zero, Value::Zero]),
            Op::Access {
                at: Addr::Uart(0),
                write: true,
                value: Insn::Raw(0x41),
                fixmap: false,
                srt: 1,
                sas: 2,
            },
            call(
                kp_abi::ASSET_INFO_COMPACT,
                [Value::Record(0), Value::Zero, Value::Zero],
            ),
            call(
                kp_abi::PATCH_SITES,
                [Value::Zero, Value::JumpTable, Value::Small(1)],
            ),
            call(kp_abi::ENABLE_VM_PROTECTION, [Value::Zero; 3]),
            // The baseline is taken in idle time.
            Op::Idle,
            Op::Idle,
            Op::Access {
                at: Addr::Image((site - IMAGE) as u16),
                write: true,
                value: Insn::Branch(16),
                fixmap: true,
                srt: 2,
                sas: 2,
            },
            call(
                kp_abi::TEXT_PATCH,
                [Value::Batch, Value::Small(1), Value::Zero],
            ),
            call(kp_abi::ENABLE_VM_PROTECTION, [Value::Zero; 3]),
            Op::Call {
                smc: false,
                imm: Imm::ProtectVmAssets,
                fid: Fid::Raw(0),
                args: [Value::Zero; 3],
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_well_behaved_guest_reaches_every_state() {
        let r = run(&well_behaved());
        assert!(r.enrolled && r.reported && r.protected, "{r:?}");
        assert_eq!(
            (r.mmio_emulated, r.patches, r.self_checks),
            (1, 2, 1),
            "{r:?}"
        );
        assert_eq!(r.protect_vm_assets, 1);
        assert_eq!(r.lock_free, 1, "the UID, answered without the core");
    }

    /// A guest that starts vCPU 1, powers vCPU 0 down and turns vCPU 1
    /// off once it runs: each reaches the firmware only as the
    /// hypervisor's own call, and each vCPU resumes at its entry.
    fn power_managing(power_refused: bool) -> Input {
        let call = |fid: u32, args: [Value; 3]| Op::Call {
            smc: true,
            imm: Imm::Zero,
            fid: Fid::Raw(fid),
            args,
        };
        let entry = Value::ImagePage(1);
        Input {
            power_refused,
            ops: vec![
                call(psci::CPU_ON_64, [Value::Small(1), entry, Value::Small(9)]),
                call(
                    psci::CPU_SUSPEND_64,
                    [Value::Raw(1 << 16), entry, Value::Small(5)],
                ),
                // Standby: no entry point.
                call(psci::CPU_SUSPEND_64, [Value::Zero, entry, Value::Zero]),
                Op::SecondaryBoot { slot: 1 },
                call(psci::CPU_OFF, [Value::Zero; 3]),
                // Nothing runs on an off CPU.
                call(psci::CPU_OFF, [Value::Zero; 3]),
            ],
            ..well_behaved()
        }
    }

    #[test]
    fn power_management_reaches_the_firmware_only_as_the_hypervisors_calls() {
        let r = run(&power_managing(false));
        assert_eq!(
            (r.cpus_started, r.power_downs, r.cpus_off),
            (1, 1, 1),
            "{r:?}"
        );
        let r = run(&power_managing(true));
        assert_eq!(
            (r.cpus_started, r.power_downs, r.cpus_off),
            (1, 0, 0),
            "{r:?}"
        );
    }
}
