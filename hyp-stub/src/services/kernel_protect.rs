// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The kernel-protect service. The resource manager (the hypervisor's
//! boot path here) gives the VM its asset extents; the guest reports the
//! layout of its kernel (one compact `kernel_asset_info` or region by
//! region) and asks for protection once boot-time patching is over. The
//! hypervisor then enforces stage-2 permissions (TEXT read+execute at EL1
//! only, RODATA read-only and never executable at EL1 as its vDSO runs at
//! EL0, DATA and BSS read+write and never executable) and measures
//! TEXT+RODATA (SHA-256) as they were then. The hash is taken off the
//! guest's boot path, a step at a time in its idle time and in later
//! self-checks ([`measurement`]).
//!
//! Faults on protected memory go to one handler per kind (RX, RO, RW). A
//! write fault whose VA lies in the guest's FIXMAP_TEXT_POKE0 slot is the
//! text-patching path for single patches; `TEXT_PATCH` applies batches.
//! Both judge each write by the same rules (`guest_kp::sites`): only at a
//! site the guest registered with `PATCH_SITES` before protection (jump
//! labels, ftrace call sites and their literals), only as that site's
//! transition, or a kprobe's `BRK` and its exact restore, as the command
//! line's policy allows. Accepted patches are performed on the guest's
//! behalf and folded into the patch log; a refused store through the
//! fixmap slot gets a permission fault, which the guest's patching code
//! turns into an error, so the guest never oopses with its patch lock
//! held.
//!
//! The measurement stays the one taken at enable: the registry recorded
//! what every site held then, and puts it back in the hash.
//!
//! Page permissions for the rest of guest RAM (default deny at EL1,
//! `MEM_PERMISSIONS`, the code log) are in [`permissions`].

pub mod code_sites;
pub mod measurement;
pub mod permissions;

use core::fmt::{self, Write};

use guest_kp::abi::{self, KpError, Protection, RegionType, SiteTable, TextPatch};
use guest_kp::mem_perms::{self, Policy};
use guest_kp::record::{Collector, IpaSpan, KernelAssetInfo, Layout, RecordError};
use guest_kp::sites::{Accepted, PatchPolicy, PatchRequest, Refusal, SiteRegistry, SiteStorage};
use measurement::{Digest, KprobeSite, Measuring, Progress, Undo, STEP_BYTES};

use crate::addr::{Ipa, IpaRange};
use crate::esr::Width;
use crate::service::{
    Call, CallResult, FaultAction, GuestFault, HypOps, OpsError, Service, ServiceError,
};
use crate::stage2::Perms;

/// The extents the resource manager grants a VM (Gunyah's RX, RO, RW;
/// everything else is RWX). Reported regions must lie inside them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AssetExtents {
    /// Where TEXT may lie.
    pub rx: IpaRange,
    /// Where RODATA may lie.
    pub ro: IpaRange,
    /// Where DATA and BSS may lie.
    pub rw: IpaRange,
}

/// How many kprobes may be armed at once (the originals of their `BRK`s
/// are remembered for the restore and the measurement).
pub const MAX_KPROBE_SITES: usize = 1024;

/// `TEXT_PATCH` entries read from guest memory at once.
const BATCH_CHUNK: usize = 32;

/// The function IDs kernel protect answers: its own and the page
/// permissions'.
const FUNCTION_IDS: [u32; 7] = [
    abi::ASSET_INFO,
    abi::ENABLE_VM_PROTECTION,
    abi::ASSET_INFO_COMPACT,
    abi::PATCH_SITES,
    abi::TEXT_PATCH,
    mem_perms::MEM_PERMISSIONS,
    mem_perms::CODE_LOG,
];

/// The stage-2 permissions of each protection the ABI defines. RODATA's
/// stay executable at EL0 only: the vDSO lies in it and user space runs
/// it (FEAT_XNX splits execute-never by exception level).
const fn stage2_perms(p: Protection) -> Perms {
    match p {
        Protection::ReadExecute => Perms::R_EL1X,
        Protection::ReadOnly => Perms::R_EL0X,
        Protection::ReadWrite => Perms::RW,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// No asset extents: kernel protect is not active for this VM.
    Inactive,
    /// Extents granted; collecting the guest's report.
    Active,
    /// The guest's layout is known.
    Reported(Layout),
    /// Stage-2 permissions are enforced.
    Protected(Layout),
}

/// The measurement of TEXT+RODATA as they were when protection was
/// enabled.
enum Baseline {
    /// Protection is not enabled yet.
    NotTaken,
    /// Being hashed, a step at a time.
    Taking(Measuring),
    /// Taken.
    Taken([u8; 32]),
    /// Could not be taken (not expected: the ranges were checked when they
    /// were protected); every self-check fails.
    Lost,
}

/// A self-check: a second measurement, compared with the baseline.
enum Check {
    /// Being hashed, a step at a time.
    Taking(Measuring),
    /// Hashed in idle time; the next self-check call takes the verdict.
    Done(bool),
}

/// Who gave a measurement step its time.
#[derive(Clone, Copy)]
enum StepIn {
    /// The guest's idle time (a trapped WFI).
    Idle,
    /// A self-check call.
    Call,
}

/// A write into TEXT the rules accepted, not yet performed.
#[derive(Clone, Copy, Debug)]
struct Judged {
    req: PatchRequest,
    accepted: Accepted,
}

#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    compact: u64,
    per_region: u64,
    refused_calls: u64,
    denied: u64,
    patches_accepted: u64,
    patches_refused: u64,
    patches_jump_label: u64,
    patches_ftrace: u64,
    patches_kprobes: u64,
    patch_batches: u64,
    patches_batched: u64,
    sites_skipped: u64,
    /// Sites that no longer held a state their kind allows at enable.
    sites_dropped: u64,
    rx_writes_blocked: u64,
    ro_writes_blocked: u64,
    exec_blocked: u64,
    self_checks: u64,
    self_check_failures: u64,
    /// Self-check calls answered BUSY: a measurement was still being
    /// taken.
    busy: u64,
    /// Measurement steps taken in the guest's idle time.
    steps_idle: u64,
    /// Measurement steps taken inside self-check calls.
    steps_call: u64,
}

/// The service. Its patch sites live in storage the caller lends it
/// (`'m`): the boot path gives it static arrays.
pub struct KernelProtect<'m> {
    state: State,
    extents: Option<AssetExtents>,
    ram: (u64, u64),
    collector: Collector,
    baseline: Baseline,
    check: Option<Check>,
    patch_log: [u8; 32],
    sites: SiteRegistry<'m>,
    policy: PatchPolicy,
    kprobes: heapless::Vec<KprobeSite, MAX_KPROBE_SITES>,
    counters: Counters,
    perms: permissions::Permissions<'m>,
}

/// How many bytes a measurement hashes.
fn measured_bytes(layout: &Layout) -> u64 {
    let [t, r] = [layout.text(), layout.rodata()];
    (t.end() - t.start()) + (r.end() - r.start())
}

/// Bytes as lowercase hex digits, as the stats block and the summary
/// show digests.
struct Hex<'a>(&'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// The IPA field of a batch entry, for the log of a malformed one.
fn p_ipa(entry: &[u8; abi::TEXT_PATCH_ENTRY_SIZE]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&entry[..8]);
    u64::from_le_bytes(w)
}

fn ret(e: KpError) -> CallResult {
    [e.as_raw(), 0, 0, 0]
}

fn record_error(e: RecordError) -> CallResult {
    ret(e.kp_error())
}

impl Default for KernelProtect<'static> {
    fn default() -> Self {
        Self::new()
    }
}

impl KernelProtect<'static> {
    /// An inactive service (no extents yet) without room for patch sites:
    /// every `PATCH_SITES` table is too large for it.
    pub fn new() -> Self {
        Self::with_sites(SiteStorage::none())
    }
}

impl<'m> KernelProtect<'m> {
    /// An inactive service (no extents yet) whose patch sites go to
    /// `storage`. Jump labels and ftrace allowed until
    /// [`Self::set_policy`].
    pub fn with_sites(storage: SiteStorage<'m>) -> Self {
        Self {
            state: State::Inactive,
            extents: None,
            ram: (0, 0),
            collector: Collector::new(),
            baseline: Baseline::NotTaken,
            check: None,
            patch_log: [0; 32],
            sites: SiteRegistry::new(storage),
            policy: PatchPolicy::ALLOW_ALL,
            kprobes: heapless::Vec::new(),
            counters: Counters::default(),
            perms: permissions::Permissions::new(),
        }
    }

    /// Lends the storage for the jump-label sites of dynamic code (module
    /// text); without it, a call that names sites is refused for want of
    /// room. Right after [`Self::with_sites`].
    pub fn with_code_sites(mut self, store: &'m mut [code_sites::CodeSite]) -> Self {
        let sites = code_sites::CodeSites::new(store);
        self.perms = permissions::Permissions::with_code_sites(sites);
        self
    }

    /// Sets what may be patched besides jump labels (from the guest's
    /// command line, read by the boot path before the guest runs; no call
    /// of the guest's changes it).
    pub fn set_policy(&mut self, policy: PatchPolicy) {
        self.policy = policy;
    }

    /// The patch policy.
    pub fn policy(&self) -> PatchPolicy {
        self.policy
    }

    /// protect_vm_assets, the resource manager's call (`hvc #0x6094` in
    /// Gunyah): grants the VM its extents. The hypervisor's boot path
    /// makes it; a guest that tries gets DENIED.
    ///
    /// # Errors
    /// OBJECT_CONFIGURED if already granted.
    pub fn protect_vm_assets(&mut self, extents: AssetExtents) -> Result<(), KpError> {
        if self.extents.is_some() {
            return Err(KpError::ObjectConfigured);
        }
        self.extents = Some(extents);
        self.state = State::Active;
        Ok(())
    }

    /// The layout the guest reported, once it has (in the reported and
    /// the protected states).
    pub fn reported_layout(&self) -> Option<Layout> {
        match self.state {
            State::Reported(l) | State::Protected(l) => Some(l),
            State::Inactive | State::Active => None,
        }
    }

    /// Whether stage-2 protection is enforced.
    pub fn is_protected(&self) -> bool {
        matches!(self.state, State::Protected(_))
    }

    /// The code policy the guest chose on its command line, learnt by the
    /// boot path before the guest runs; it can only be tightened. `hyp`
    /// is the hypervisor's own memory, refused by name.
    pub fn set_code_policy(&mut self, policy: Policy, hyp: IpaRange) {
        self.perms.set_policy(policy);
        self.perms.set_hypervisor_memory(hyp);
    }

    fn within_extents(&self, layout: &Layout) -> bool {
        let Some(x) = self.extents else { return false };
        x.rx.covers(&layout.text().into())
            && x.ro.covers(&layout.rodata().into())
            && x.rw.covers(&layout.data().into())
            && x.rw.covers(&layout.bss().into())
    }

    fn accept_layout(&mut self, layout: Layout) -> CallResult {
        if !self.within_extents(&layout) {
            self.counters.refused_calls += 1;
            return ret(KpError::AddrInvalid);
        }
        self.state = State::Reported(layout);
        [abi::RET_OK, 0, 0, 0]
    }

    fn asset_info_compact(&mut self, ipa: u64, ops: &mut dyn HypOps) -> CallResult {
        match self.state {
            State::Inactive => return ret(KpError::ObjectState),
            State::Reported(_) | State::Protected(_) => return ret(KpError::ObjectConfigured),
            State::Active if !self.collector.is_empty() => return ret(KpError::ObjectConfigured),
            State::Active => {}
        }
        let mut bytes = [0u8; abi::RECORD_SIZE];
        if ops.read_guest(Ipa(ipa), &mut bytes).is_err() {
            self.counters.refused_calls += 1;
            return ret(KpError::AddrInvalid);
        }
        let layout = match KernelAssetInfo::from_bytes(&bytes).and_then(|r| r.validate(self.ram)) {
            Ok(l) => l,
            Err(e) => {
                self.counters.refused_calls += 1;
                return record_error(e);
            }
        };
        self.counters.compact += 1;
        self.accept_layout(layout)
    }

    fn asset_info(&mut self, region_type: u64, start: u64, size: u64) -> CallResult {
        match self.state {
            State::Inactive => return ret(KpError::ObjectState),
            State::Reported(_) | State::Protected(_) => return ret(KpError::ObjectConfigured),
            State::Active => {}
        }
        match self.collector.add(region_type, start, size, self.ram) {
            Ok(None) => {
                self.counters.per_region += 1;
                [abi::RET_OK, 0, 0, 0]
            }
            Ok(Some(layout)) => {
                self.counters.per_region += 1;
                let r = self.accept_layout(layout);
                if r[0] != abi::RET_OK {
                    self.collector = Collector::new();
                }
                r
            }
            Err(e) => {
                self.counters.refused_calls += 1;
                record_error(e)
            }
        }
    }

    /// What the measurement puts back as it was at enable.
    fn undo(&self) -> Undo<'_, 'm> {
        Undo {
            sites: &self.sites,
            kprobes: &self.kprobes,
        }
    }

    /// One step of `m`, given its time by `by`.
    fn measure_step(
        &mut self,
        m: Measuring,
        layout: &Layout,
        ops: &mut dyn HypOps,
        by: StepIn,
    ) -> Result<Progress, OpsError> {
        match by {
            StepIn::Idle => self.counters.steps_idle += 1,
            StepIn::Call => self.counters.steps_call += 1,
        }
        m.step(layout, &self.undo(), ops, STEP_BYTES)
    }

    /// One step of whatever is being measured: the baseline first, then
    /// a self-check. A finished check's verdict stays for the next call.
    fn advance(&mut self, layout: &Layout, ops: &mut dyn HypOps, by: StepIn) {
        if matches!(self.baseline, Baseline::Taking(_)) {
            let Baseline::Taking(m) = core::mem::replace(&mut self.baseline, Baseline::Lost) else {
                return;
            };
            self.baseline = match self.measure_step(m, layout, ops, by) {
                Ok(Progress::More(m)) => Baseline::Taking(m),
                // The baseline is of the kernel as the registry recorded
                // it at enable, whatever a site holds.
                Ok(Progress::Done(d)) => Baseline::Taken(d.sha256),
                Err(e) => {
                    ops.log(format_args!(
                        "kernel protect: cannot measure TEXT+RODATA ({e:?}); self-checks will fail"
                    ));
                    Baseline::Lost
                }
            };
            return;
        }
        if matches!(self.check, Some(Check::Taking(_))) {
            let Some(Check::Taking(m)) = self.check.take() else {
                return;
            };
            let baseline = self.digest();
            self.check = Some(match self.measure_step(m, layout, ops, by) {
                Ok(Progress::More(m)) => Check::Taking(m),
                Ok(Progress::Done(Digest { sha256, legit })) => {
                    Check::Done(legit && baseline == Some(sha256))
                }
                Err(_) => Check::Done(false),
            });
        }
    }

    /// A self-check call: a step of the baseline if it is still being
    /// taken, then a step of the check; `None` (BUSY) until the verdict
    /// is there.
    fn self_check(&mut self, layout: &Layout, ops: &mut dyn HypOps) -> Option<bool> {
        if let Some(intact) = self.take_verdict() {
            return Some(intact);
        }
        if matches!(self.baseline, Baseline::Taking(_)) {
            self.advance(layout, ops, StepIn::Call);
        }
        match self.baseline {
            Baseline::Taken(_) => {}
            Baseline::Taking(_) => return None,
            Baseline::NotTaken | Baseline::Lost => return Some(false),
        }
        if self.check.is_none() {
            self.check = Some(Check::Taking(Measuring::new(layout)));
        }
        self.advance(layout, ops, StepIn::Call);
        self.take_verdict()
    }

    /// The verdict of a finished check, which frees the slot for the next.
    fn take_verdict(&mut self) -> Option<bool> {
        let Some(Check::Done(intact)) = self.check else {
            return None;
        };
        self.check = None;
        Some(intact)
    }

    /// The baseline's digest, once taken.
    fn digest(&self) -> Option<[u8; 32]> {
        match self.baseline {
            Baseline::Taken(digest) => Some(digest),
            _ => None,
        }
    }

    /// The enable call's answer: x1 = intact, x2 = patches performed,
    /// x3 = the first 64 bits of the baseline (0 until it is taken).
    fn verdict(&self, intact: bool) -> CallResult {
        let mut prefix = [0u8; 8];
        if let Some(digest) = self.digest() {
            prefix.copy_from_slice(&digest[..8]);
        }
        [
            abi::RET_OK,
            u64::from(intact),
            self.counters.patches_accepted,
            u64::from_be_bytes(prefix),
        ]
    }

    /// The image's other text named at enable (`(start, size)`, both 0
    /// for none): page aligned, bounded, inside the image, outside the
    /// reported regions.
    fn other_text(
        &self,
        image: &[IpaRange; 4],
        (start, size): (u64, u64),
    ) -> Result<Option<IpaRange>, KpError> {
        if start == 0 && size == 0 {
            return Ok(None);
        }
        if !abi::is_page_aligned(start) || !abi::is_page_aligned(size) {
            return Err(KpError::ArgumentAlignment);
        }
        if size == 0 || size > abi::MAX_OTHER_TEXT {
            return Err(KpError::ArgumentSize);
        }
        let range = IpaRange::new(Ipa(start), size).ok_or(KpError::AddrInvalid)?;
        if !self.extents.is_some_and(|e| e.rx.covers(&range)) {
            return Err(KpError::AddrInvalid);
        }
        if image.iter().any(|r| r.overlaps(&range)) {
            return Err(KpError::ArgumentInvalid);
        }
        Ok(Some(range))
    }

    fn enable(&mut self, target: u64, other: (u64, u64), ops: &mut dyn HypOps) -> CallResult {
        // The guest may only name itself (a self-check); the HLOS role
        // does not exist here.
        if target != abi::SELF_ADDRSPACE {
            self.counters.denied += 1;
            return ret(KpError::Denied);
        }
        match self.state {
            State::Inactive | State::Active => ret(KpError::ObjectState),
            State::Reported(layout) => {
                let image = [
                    layout.text().into(),
                    layout.rodata().into(),
                    layout.data().into(),
                    layout.bss().into(),
                ];
                let other = match self.other_text(&image, other) {
                    Ok(o) => o,
                    Err(e) => {
                        self.counters.refused_calls += 1;
                        return ret(e);
                    }
                };
                // Permissions first: from here on TEXT and RODATA change
                // only through this service, so the measurement, taken
                // later a step at a time, is of the kernel as it was at
                // this call.
                for ty in RegionType::IPA {
                    let (Some(span), Some(protection)) = (layout.span(ty), ty.protection()) else {
                        continue;
                    };
                    if let Err(e) = ops.set_perms(span.into(), stage2_perms(protection)) {
                        ops.log(format_args!(
                            "kernel protect: cannot set stage-2 permissions: {e:?}"
                        ));
                        return ret(KpError::Busy);
                    }
                }
                // Then default deny for the rest of RAM (per the policy).
                if let Err(e) = self.perms.enable(image, other, ops) {
                    ops.log(format_args!(
                        "kernel protect: cannot deny EL1 execute outside the image: {e:?}"
                    ));
                    return ret(KpError::Busy);
                }
                self.state = State::Protected(layout);
                // What every site holds now is what the baseline sees.
                let mut read = |ipa: u64, buf: &mut [u8]| ops.read_guest(Ipa(ipa), buf).is_ok();
                self.counters.sites_dropped = self.sites.capture(&mut read);
                if self.counters.sites_dropped != 0 {
                    ops.log(format_args!(
                        "kernel protect: {} patch sites changed since they were registered; they will not be patched",
                        self.counters.sites_dropped
                    ));
                }
                self.baseline = Baseline::Taking(Measuring::new(&layout));
                ops.log(format_args!(
                    "kernel protect: enabled; TEXT {:#x}..{:#x} RODATA {:#x}..{:#x} DATA {:#x}..{:#x} BSS {:#x}..{:#x}",
                    layout.text().start(),
                    layout.text().end(),
                    layout.rodata().start(),
                    layout.rodata().end(),
                    layout.data().start(),
                    layout.data().end(),
                    layout.bss().start(),
                    layout.bss().end()
                ));
                self.verdict(true)
            }
            State::Protected(layout) => {
                let Some(intact) = self.self_check(&layout, ops) else {
                    self.counters.busy += 1;
                    return ret(KpError::Busy);
                };
                self.counters.self_checks += 1;
                if !intact {
                    self.counters.self_check_failures += 1;
                }
                self.verdict(intact)
            }
        }
    }

    /// PATCH_SITES: registers one table of patch sites, before
    /// protection is enabled.
    fn patch_sites(&mut self, args: [u64; 4], ops: &mut dyn HypOps) -> CallResult {
        let [kind, table, count, text_va] = args;
        let State::Reported(layout) = self.state else {
            return ret(KpError::ObjectState);
        };
        let kind = match SiteTable::from_raw(kind) {
            Ok(k) => k,
            Err(e) => {
                self.counters.refused_calls += 1;
                return ret(e);
            }
        };
        // The tables lie in the image the hypervisor is about to protect.
        let Some(image) = IpaSpan::new(layout.text().start(), layout.bss().end()) else {
            self.counters.refused_calls += 1;
            return ret(KpError::AddrInvalid);
        };
        let text = layout.text();
        let mut read = |ipa: u64, buf: &mut [u8]| ops.read_guest(Ipa(ipa), buf).is_ok();
        match self
            .sites
            .register(kind, table, count, text_va, text, image, &mut read)
        {
            Ok(r) => {
                self.counters.sites_skipped += r.skipped;
                ops.log(format_args!(
                    "kernel protect: {kind:?}: {} sites registered, {} outside text skipped",
                    r.sites, r.skipped
                ));
                [abi::RET_OK, r.sites, r.skipped, 0]
            }
            Err(e) => {
                self.counters.refused_calls += 1;
                ops.log(format_args!(
                    "kernel protect: {kind:?} table at {table:#x} refused: {e}"
                ));
                ret(e.kp_error())
            }
        }
    }

    /// Judges a write of `new` (`size` bytes) at `ipa` in TEXT.
    fn judge(
        &self,
        layout: &Layout,
        ipa: u64,
        size: u32,
        new: u64,
        ops: &mut dyn HypOps,
    ) -> Result<Judged, Refusal> {
        let mut old = [0u8; 8];
        let old = match size {
            4 | 8 => old.get_mut(..size as usize).ok_or(Refusal::SizeMismatch)?,
            _ => return Err(Refusal::SizeMismatch),
        };
        // Outside guest RAM is outside TEXT.
        ops.read_guest(Ipa(ipa), old)
            .map_err(|_| Refusal::OutsideText)?;
        let mut w = [0u8; 8];
        w.get_mut(..old.len())
            .ok_or(Refusal::SizeMismatch)?
            .copy_from_slice(old);
        let req = PatchRequest {
            ipa,
            size,
            old: u64::from_le_bytes(w),
            new,
        };
        let brk = self
            .kprobes
            .binary_search_by_key(&ipa, |k| k.ipa)
            .ok()
            .and_then(|i| self.kprobes.get(i))
            .map(|k| k.original);
        let accepted = self.sites.decide(layout.text(), self.policy, req, brk)?;
        Ok(Judged { req, accepted })
    }

    /// Performs a judged write and notes it in `log` (the patch log's
    /// next hash).
    fn perform(
        &mut self,
        j: Judged,
        ops: &mut dyn HypOps,
        log: &mut crate::sha256::Sha256,
    ) -> Result<(), &'static str> {
        let ipa = j.req.ipa;
        let slot = self.kprobes.binary_search_by_key(&ipa, |k| k.ipa);
        if matches!(j.accepted, Accepted::KprobeArm { .. }) && self.kprobes.is_full() {
            return Err("too many kprobes armed");
        }
        let written = if j.req.size == 8 {
            ops.write_guest_u64(Ipa(ipa), j.req.new)
        } else {
            ops.write_guest_insn(Ipa(ipa), j.req.new as u32)
        };
        if written.is_err() {
            return Err("cannot write guest RAM");
        }
        match (j.accepted, slot) {
            (Accepted::KprobeArm { original }, Err(i)) => {
                // Room was checked above.
                let _ = self.kprobes.insert(i, KprobeSite { ipa, original });
            }
            (Accepted::KprobeDisarm, Ok(i)) => {
                self.kprobes.remove(i);
            }
            _ => {}
        }
        let n = j.req.size as usize;
        log.update(&ipa.to_le_bytes());
        log.update(j.req.old.to_le_bytes().get(..n).unwrap_or(&[]));
        log.update(j.req.new.to_le_bytes().get(..n).unwrap_or(&[]));
        let c = &mut self.counters;
        c.patches_accepted += 1;
        match j.accepted {
            Accepted::JumpLabel { .. } => c.patches_jump_label += 1,
            Accepted::FtraceCall | Accepted::FtraceLiteral => c.patches_ftrace += 1,
            Accepted::KprobeArm { .. } | Accepted::KprobeDisarm => c.patches_kprobes += 1,
        }
        Ok(())
    }

    /// Counts and reports a refused patch.
    fn refused(&mut self, ops: &mut dyn HypOps, ipa: u64, why: fmt::Arguments<'_>) {
        self.counters.patches_refused += 1;
        ops.log(format_args!(
            "kernel protect: refused text patch at IPA {ipa:#x}: {why}"
        ));
    }

    /// TEXT_PATCH: applies a batch, in order, up to the first refusal.
    /// x1 of the answer is always the number of entries applied.
    fn text_patch_batch(&mut self, array: u64, count: u64, ops: &mut dyn HypOps) -> CallResult {
        let State::Protected(layout) = self.state else {
            return ret(KpError::ObjectState);
        };
        if count == 0 || count > abi::MAX_TEXT_PATCH_BATCH {
            self.counters.refused_calls += 1;
            return ret(KpError::ArgumentSize);
        }
        let in_ram = count
            .checked_mul(abi::TEXT_PATCH_ENTRY_SIZE as u64)
            .and_then(|bytes| IpaRange::new(Ipa(array), bytes))
            .is_some_and(|r| ops.guest_ram().covers(&r));
        if !in_ram {
            self.counters.refused_calls += 1;
            return ret(KpError::AddrInvalid);
        }
        self.counters.patch_batches += 1;
        let mut log = crate::sha256::Sha256::new(ops.sha256_compress());
        log.update(&self.patch_log);
        let mut applied = 0u64;
        let mut outcome = None;
        let mut buf = [0u8; BATCH_CHUNK * abi::TEXT_PATCH_ENTRY_SIZE];
        'batch: while applied < count {
            let n = (count - applied).min(BATCH_CHUNK as u64) as usize;
            let Some(chunk) = buf.get_mut(..n * abi::TEXT_PATCH_ENTRY_SIZE) else {
                break;
            };
            let at = array + applied * abi::TEXT_PATCH_ENTRY_SIZE as u64;
            if ops.read_guest(Ipa(at), chunk).is_err() {
                outcome = Some([KpError::AddrInvalid.as_raw(), applied, 0, 0]);
                break;
            }
            for e in chunk.chunks_exact(abi::TEXT_PATCH_ENTRY_SIZE) {
                let mut bytes = [0u8; abi::TEXT_PATCH_ENTRY_SIZE];
                bytes.copy_from_slice(e);
                let p = match TextPatch::from_bytes(&bytes) {
                    Ok(p) => p,
                    Err(err) => {
                        // Refused like any other entry (DENIED and its
                        // index: the guest knows what was applied); why
                        // goes to the log.
                        let ipa = p_ipa(&bytes);
                        self.refused(ops, ipa, format_args!("malformed batch entry: {err}"));
                        outcome = Some([KpError::Denied.as_raw(), applied, 0, 0]);
                        break 'batch;
                    }
                };
                let done = match self.judge(&layout, p.ipa, p.size, p.value, ops) {
                    Ok(j) => self.perform(j, ops, &mut log).map_err(|why| {
                        self.refused(ops, p.ipa, format_args!("{why}"));
                    }),
                    Err(why) => {
                        self.refused(ops, p.ipa, format_args!("{why} (batch entry {applied})"));
                        Err(())
                    }
                };
                if done.is_err() {
                    outcome = Some([KpError::Denied.as_raw(), applied, 0, 0]);
                    break 'batch;
                }
                applied += 1;
                self.counters.patches_batched += 1;
            }
        }
        // One hash for the whole batch.
        if applied != 0 {
            self.patch_log = log.finalize();
        }
        outcome.unwrap_or([abi::RET_OK, applied, 0, 0])
    }

    /// The text-patching path through the fixmap slot: judge and perform
    /// the trapped store. A refusal is a permission fault the guest's
    /// `copy_to_kernel_nofault()` recovers from.
    fn text_patch(
        &mut self,
        layout: &Layout,
        fault: &GuestFault<'_>,
        ops: &mut dyn HypOps,
    ) -> FaultAction {
        let syn = fault.syndrome;
        let ipa = fault.ipa.get();
        let size = match syn.width() {
            Width::Word if syn.valid() => 4,
            Width::Double if syn.valid() => 8,
            _ => {
                self.refused(
                    ops,
                    ipa,
                    format_args!("not a 32- or 64-bit store with a valid syndrome"),
                );
                return FaultAction::RefusedRecoverable;
            }
        };
        let new = fault.regs.get(syn.register()) & syn.width().mask();
        let judged = match self.judge(layout, ipa, size, new, ops) {
            Ok(j) => j,
            Err(why) => {
                self.refused(ops, ipa, format_args!("{why}"));
                return FaultAction::RefusedRecoverable;
            }
        };
        let mut log = crate::sha256::Sha256::new(ops.sha256_compress());
        log.update(&self.patch_log);
        if let Err(why) = self.perform(judged, ops, &mut log) {
            self.refused(ops, ipa, format_args!("{why}"));
            return FaultAction::RefusedRecoverable;
        }
        self.patch_log = log.finalize();
        FaultAction::Emulated
    }

    /// Runs `f` on the page permissions with what they need to judge
    /// ftrace's patches outside the image: the image's trampolines and
    /// the ftrace policy.
    fn with_perms<R>(
        &mut self,
        f: impl FnOnce(&mut permissions::Permissions<'m>, &permissions::Patching<'_>) -> R,
    ) -> R {
        let registry = &self.sites;
        let is_trampoline = |va| registry.is_ftrace_caller_va(va);
        let patching = permissions::Patching {
            is_trampoline: &is_trampoline,
            ftrace: self.policy.ftrace,
        };
        f(&mut self.perms, &patching)
    }

    /// Writes to TEXT: only the text-patching path.
    fn rx_fault(
        &mut self,
        layout: &Layout,
        fault: &GuestFault<'_>,
        ops: &mut dyn HypOps,
    ) -> FaultAction {
        if layout.fixmap().contains(fault.va.get()) {
            return self.text_patch(layout, fault, ops);
        }
        self.counters.rx_writes_blocked += 1;
        FaultAction::Refused
    }
}

impl Service for KernelProtect<'_> {
    fn name(&self) -> &'static str {
        "kernel_protect"
    }

    fn function_ids(&self) -> &'static [u32] {
        &FUNCTION_IDS
    }

    fn init(&mut self, ops: &mut dyn HypOps) -> Result<(), ServiceError> {
        let ram = ops.guest_ram();
        self.ram = (ram.start().get(), ram.end().get());
        Ok(())
    }

    fn call(&mut self, call: &Call, ops: &mut dyn HypOps) -> CallResult {
        let [a1, a2, a3, a4, ..] = call.args;
        match call.fid {
            abi::ASSET_INFO => self.asset_info(a1, a2, a3),
            abi::ASSET_INFO_COMPACT => self.asset_info_compact(a1, ops),
            abi::ENABLE_VM_PROTECTION => self.enable(a1, (a2, a3), ops),
            abi::PATCH_SITES => self.patch_sites([a1, a2, a3, a4], ops),
            abi::TEXT_PATCH => self.text_patch_batch(a1, a2, ops),
            mem_perms::MEM_PERMISSIONS => {
                let sites = mem_perms::SiteList { ipa: a3, count: a4 };
                self.with_perms(|perms, patching| perms.call(a1, a2, sites, patching, ops))
            }
            mem_perms::CODE_LOG => self.perms.code_log_call(a1),
            _ => ret(KpError::Unimplemented),
        }
    }

    fn immediate_call(
        &mut self,
        imm: u16,
        _call: &Call,
        _ops: &mut dyn HypOps,
    ) -> Option<CallResult> {
        // protect_vm_assets belongs to the resource manager.
        (imm == abi::PROTECT_VM_ASSETS_HVC_IMM).then(|| {
            self.counters.denied += 1;
            ret(KpError::Denied)
        })
    }

    fn guest_fault(&mut self, fault: &GuestFault<'_>, ops: &mut dyn HypOps) -> FaultAction {
        let State::Protected(layout) = self.state else {
            return FaultAction::NotMine;
        };
        let Some(region) = layout.region_of(fault.ipa.get()) else {
            if fault.exec && self.perms.enforcing() {
                self.perms.count_exec_blocked();
                return FaultAction::Refused;
            }
            // Jump labels in code the guest made executable (modules).
            if fault.syndrome.write() && layout.fixmap().contains(fault.va.get()) {
                if let Some(action) =
                    self.with_perms(|perms, patching| perms.text_patch(fault, patching, ops))
                {
                    return action;
                }
            }
            return FaultAction::NotMine;
        };
        if fault.exec {
            self.counters.exec_blocked += 1;
            return FaultAction::Refused;
        }
        if !fault.syndrome.write() {
            return FaultAction::NotMine;
        }
        match region {
            RegionType::Text => self.rx_fault(&layout, fault, ops),
            RegionType::Rodata => {
                self.counters.ro_writes_blocked += 1;
                FaultAction::Refused
            }
            // DATA and BSS are writable: a write fault there is not ours.
            _ => FaultAction::NotMine,
        }
    }

    fn has_idle_work(&self) -> bool {
        matches!(self.baseline, Baseline::Taking(_)) || matches!(self.check, Some(Check::Taking(_)))
    }

    fn idle(&mut self, ops: &mut dyn HypOps) {
        if let State::Protected(layout) = self.state {
            self.advance(&layout, ops, StepIn::Idle);
        }
    }

    fn write_stats(&self, out: &mut dyn Write) -> fmt::Result {
        let c = &self.counters;
        let state = match self.state {
            State::Inactive => "inactive",
            State::Active => "active",
            State::Reported(_) => "reported",
            State::Protected(_) => "protected",
        };
        writeln!(out, "kp_state={state}")?;
        writeln!(out, "kp_reports_compact={}", c.compact)?;
        writeln!(out, "kp_reports_per_region={}", c.per_region)?;
        writeln!(out, "kp_refused_calls={}", c.refused_calls)?;
        writeln!(out, "kp_denied={}", c.denied)?;
        writeln!(out, "kp_patches_accepted={}", c.patches_accepted)?;
        writeln!(out, "kp_patches_refused={}", c.patches_refused)?;
        writeln!(out, "kp_patches_jump_label={}", c.patches_jump_label)?;
        writeln!(out, "kp_patches_ftrace={}", c.patches_ftrace)?;
        writeln!(out, "kp_patches_kprobes={}", c.patches_kprobes)?;
        writeln!(out, "kp_patch_batches={}", c.patch_batches)?;
        writeln!(out, "kp_patches_batched={}", c.patches_batched)?;
        writeln!(out, "kp_sites_jump={}", self.sites.jump_sites())?;
        writeln!(out, "kp_sites_ftrace={}", self.sites.ftrace_sites())?;
        writeln!(out, "kp_sites_skipped={}", c.sites_skipped)?;
        writeln!(out, "kp_sites_dropped={}", c.sites_dropped)?;
        writeln!(out, "kp_ftrace_callers={}", self.sites.ftrace_callers())?;
        writeln!(out, "kp_kprobes_armed={}", self.kprobes.len())?;
        writeln!(
            out,
            "kp_policy_ftrace={}",
            PatchPolicy::word(self.policy.ftrace)
        )?;
        writeln!(
            out,
            "kp_policy_kprobes={}",
            PatchPolicy::word(self.policy.kprobes)
        )?;
        writeln!(out, "kp_rx_writes_blocked={}", c.rx_writes_blocked)?;
        writeln!(out, "kp_ro_writes_blocked={}", c.ro_writes_blocked)?;
        writeln!(out, "kp_exec_blocked={}", c.exec_blocked)?;
        writeln!(out, "kp_self_checks={}", c.self_checks)?;
        writeln!(out, "kp_self_check_failures={}", c.self_check_failures)?;
        writeln!(out, "kp_busy={}", c.busy)?;
        writeln!(out, "kp_measure_steps_idle={}", c.steps_idle)?;
        writeln!(out, "kp_measure_steps_call={}", c.steps_call)?;
        let hashed = match &self.baseline {
            Baseline::Taking(m) => m.hashed(),
            Baseline::Taken(_) => self.reported_layout().map_or(0, |l| measured_bytes(&l)),
            Baseline::NotTaken | Baseline::Lost => 0,
        };
        writeln!(out, "kp_baseline_hashed={hashed}")?;
        write!(out, "kp_measurement=")?;
        match self.baseline {
            Baseline::Taking(_) => write!(out, "pending")?,
            Baseline::Lost => write!(out, "lost")?,
            // All zeros until protection is enabled.
            Baseline::NotTaken | Baseline::Taken(_) => {
                write!(out, "{}", Hex(&self.digest().unwrap_or([0; 32])))?;
            }
        }
        writeln!(out, "\nkp_patch_log={}", Hex(&self.patch_log))?;
        self.perms.write_stats(out)
    }

    fn write_summary(&self, out: &mut dyn Write) -> fmt::Result {
        let c = &self.counters;
        write!(out, "  kernel protect: ")?;
        match self.state {
            State::Inactive => return writeln!(out, "not offered to this VM"),
            State::Active => {
                return writeln!(out, "offered; the guest reported no layout, nothing is protected")
            }
            State::Reported(_) => {
                return writeln!(out, "layout reported; protection never enabled")
            }
            State::Protected(_) => writeln!(
                out,
                "protected: text read-only, rodata read-only and not executable, data/bss not executable"
            )?,
        }
        write!(out, "  measurement:    ")?;
        match &self.baseline {
            Baseline::NotTaken => writeln!(out, "none")?,
            Baseline::Taking(m) => writeln!(
                out,
                "still being taken in idle time ({} of {} bytes hashed)",
                m.hashed(),
                self.reported_layout().map_or(0, |l| measured_bytes(&l))
            )?,
            Baseline::Lost => writeln!(out, "LOST: the baseline could not be taken")?,
            Baseline::Taken(digest) => writeln!(
                out,
                "SHA-256 of text+rodata {} (measurement steps: {} in idle time, {} in self-check calls)",
                Hex(digest),
                c.steps_idle,
                c.steps_call
            )?,
        }
        write!(out, "  self-check:     ")?;
        match (c.self_checks, c.self_check_failures) {
            (0, _) => writeln!(out, "not run")?,
            (n, 0) => writeln!(out, "intact ({n} of {n} checks)")?,
            (n, f) => writeln!(out, "MODIFIED ({f} of {n} checks failed)")?,
        }
        writeln!(
            out,
            "  patch sites:    {} jump labels, {} ftrace call sites ({} trampolines) registered; ftrace {}, kprobes {}",
            self.sites.jump_sites(),
            self.sites.ftrace_sites(),
            self.sites.ftrace_callers(),
            if self.policy.ftrace { "allowed" } else { "refused" },
            if self.policy.kprobes { "allowed" } else { "refused" },
        )?;
        writeln!(
            out,
            "  text patches:   {} performed ({} jump label, {} ftrace, {} kprobes; {} in {} batches), {} refused",
            c.patches_accepted,
            c.patches_jump_label,
            c.patches_ftrace,
            c.patches_kprobes,
            c.patches_batched,
            c.patch_batches,
            c.patches_refused
        )?;
        writeln!(
            out,
            "  blocked:        {} writes to text, {} writes to rodata, {} executions of non-text; {} calls refused, {} denied",
            c.rx_writes_blocked, c.ro_writes_blocked, c.exec_blocked, c.refused_calls, c.denied
        )?;
        self.perms.write_summary(out)
    }
}

#[cfg(test)]
mod tests;
