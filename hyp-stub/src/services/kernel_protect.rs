// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The kernel-protect service. The resource manager (the hypervisor's
//! boot path here) gives the VM its asset extents; the guest reports the
//! layout of its kernel (one compact `kernel_asset_info` or region by
//! region) and asks for protection once boot-time patching is over. The
//! hypervisor then enforces stage-2 permissions (TEXT read+execute at EL1
//! only, RODATA read-only and never executable at EL1 as its vDSO runs at
//! EL0, DATA and BSS read+write and never executable) and measures
//! TEXT+RODATA (SHA-256), inside the call or on a CPU of its own.
//!
//! Faults on protected memory go to one handler per kind (RX, RO, RW). A
//! write fault whose VA lies in the guest's FIXMAP_TEXT_POKE0 slot is the
//! text-patching path: a 32-bit store that is a jump-label transition
//! (NOP <-> B into TEXT) is performed on the guest's behalf, recorded and
//! folded into the patch log; anything else is refused.

use core::fmt::{self, Write};

use guest_kp::abi::{self, KpError, Protection, RegionType};
use guest_kp::patch;
use guest_kp::record::{Collector, KernelAssetInfo, Layout, RecordError};

use crate::addr::{Ipa, IpaRange};
use crate::esr::Width;
use crate::service::{
    BackgroundHash, Call, CallResult, FaultAction, GuestFault, HypOps, OpsError, Service,
    ServiceError,
};
use crate::stage2::{Perms, PAGE_SIZE};

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

/// How many distinct patched instructions are remembered.
pub const MAX_PATCH_SITES: usize = 2048;

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

/// Which CPU hashed the baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MeasuredOn {
    /// The guest's, inside one of its calls.
    GuestCpu,
    /// The hypervisor's own, while the guest went on.
    HypervisorCpu,
}

/// The measurement of TEXT+RODATA taken when protection was enabled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Baseline {
    /// Protection is not enabled yet.
    NotTaken,
    /// Being hashed on the hypervisor's own CPU: until it is taken,
    /// nothing may change TEXT or RODATA.
    Pending,
    /// Taken.
    Taken { digest: [u8; 32], on: MeasuredOn },
    /// Could not be taken (not expected: the ranges were checked when they
    /// were protected); every self-check fails.
    Lost,
}

#[derive(Clone, Copy, Debug)]
struct Site {
    ipa: u64,
    original: u32,
    current: u32,
}

#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    compact: u64,
    per_region: u64,
    refused_calls: u64,
    denied: u64,
    patches_accepted: u64,
    patches_refused: u64,
    rx_writes_blocked: u64,
    ro_writes_blocked: u64,
    exec_blocked: u64,
    self_checks: u64,
    self_check_failures: u64,
    /// Self-checks answered BUSY while the baseline was being hashed.
    busy: u64,
    /// Text patches deferred (the guest retries) for the same reason.
    patches_deferred: u64,
}

/// The baseline is still being hashed on the hypervisor's CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct NotYet;

/// The service.
pub struct KernelProtect {
    state: State,
    extents: Option<AssetExtents>,
    ram: (u64, u64),
    collector: Collector,
    baseline: Baseline,
    patch_log: [u8; 32],
    sites: heapless::Vec<Site, MAX_PATCH_SITES>,
    counters: Counters,
}

/// Bytes as lowercase hex digits, as the stats block and the summary
/// show digests.
struct Hex<'a>(&'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

fn ret(e: KpError) -> CallResult {
    [e.as_raw(), 0, 0, 0]
}

fn record_error(e: RecordError) -> CallResult {
    ret(e.kp_error())
}

impl Default for KernelProtect {
    fn default() -> Self {
        Self::new()
    }
}

impl KernelProtect {
    /// An inactive service (no extents yet).
    pub const fn new() -> Self {
        Self {
            state: State::Inactive,
            extents: None,
            ram: (0, 0),
            collector: Collector::new(),
            baseline: Baseline::NotTaken,
            patch_log: [0; 32],
            sites: heapless::Vec::new(),
            counters: Counters {
                compact: 0,
                per_region: 0,
                refused_calls: 0,
                denied: 0,
                patches_accepted: 0,
                patches_refused: 0,
                rx_writes_blocked: 0,
                ro_writes_blocked: 0,
                exec_blocked: 0,
                self_checks: 0,
                self_check_failures: 0,
                busy: 0,
                patches_deferred: 0,
            },
        }
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

    /// SHA-256 of TEXT then RODATA as they were when protection was
    /// enabled: the hypervisor's own patches are undone in the hash, so
    /// any other difference shows.
    fn measure(&self, layout: &Layout, ops: &mut dyn HypOps) -> Result<[u8; 32], OpsError> {
        let mut h = crate::sha256::Sha256::new(ops.sha256_compress());
        let mut page = [0u8; PAGE_SIZE as usize];
        for span in [layout.text(), layout.rodata()] {
            let mut at = span.start();
            while at < span.end() {
                // `sites` is sorted by IPA and `at` is page aligned (as
                // the reported regions are): the sites from `first` on
                // lie on this page or later ones.
                let first = self.sites.partition_point(|s| s.ipa < at);
                // Pages without patched sites are hashed in place, in one
                // run up to the next patched page.
                let next_site = self.sites.get(first).map(|s| s.ipa & !(PAGE_SIZE - 1));
                let run_end = next_site.map_or(span.end(), |p| p.min(span.end()));
                if run_end > at {
                    ops.hash_guest(Ipa(at), run_end - at, &mut h)?;
                    at = run_end;
                    continue;
                }
                ops.read_guest(Ipa(at), &mut page)?;
                for s in self
                    .sites
                    .iter()
                    .skip(first)
                    .take_while(|s| s.ipa < at + PAGE_SIZE)
                {
                    let off = (s.ipa - at) as usize;
                    if let Some(w) = page.get_mut(off..off + 4) {
                        w.copy_from_slice(&s.original.to_le_bytes());
                    }
                }
                h.update(&page);
                at += PAGE_SIZE;
            }
        }
        Ok(h.finalize())
    }

    /// Takes the baseline from the hypervisor's CPU if it was being
    /// hashed. Everything that changes TEXT or needs the baseline comes
    /// through here first.
    ///
    /// # Errors
    /// [`NotYet`] while the hash is still running: this runs under the
    /// core's lock, so the guest is told to come back (BUSY, or the
    /// faulting store re-executed) rather than kept waiting here.
    fn settle(&mut self, layout: &Layout, ops: &mut dyn HypOps) -> Result<(), NotYet> {
        if self.baseline != Baseline::Pending {
            return Ok(());
        }
        self.baseline = match ops.background_hash() {
            BackgroundHash::Pending => return Err(NotYet),
            BackgroundHash::Done(digest) => Baseline::Taken {
                digest,
                on: MeasuredOn::HypervisorCpu,
            },
            // Not expected: the hash was started. TEXT and RODATA are
            // unchanged since enable (nothing was patched while pending),
            // so measuring now gives the same baseline.
            BackgroundHash::None => self.measure_baseline(layout, ops),
        };
        Ok(())
    }

    /// Measures the baseline now, on the calling CPU; if that fails, says
    /// so.
    fn measure_baseline(&self, layout: &Layout, ops: &mut dyn HypOps) -> Baseline {
        match self.measure(layout, ops) {
            Ok(digest) => Baseline::Taken {
                digest,
                on: MeasuredOn::GuestCpu,
            },
            Err(e) => {
                ops.log(format_args!(
                    "kernel protect: cannot measure TEXT+RODATA ({e:?}); self-checks will fail"
                ));
                Baseline::Lost
            }
        }
    }

    /// The baseline's digest, once taken.
    fn digest(&self) -> Option<[u8; 32]> {
        match self.baseline {
            Baseline::Taken { digest, .. } => Some(digest),
            _ => None,
        }
    }

    /// Whether every patched site still holds what the hypervisor wrote.
    fn sites_hold(&self, ops: &mut dyn HypOps) -> bool {
        self.sites.iter().all(|s| {
            let mut w = [0u8; 4];
            ops.read_guest(Ipa(s.ipa), &mut w).is_ok() && u32::from_le_bytes(w) == s.current
        })
    }

    /// The enable call's answer: x1 = intact, x2 = patches performed,
    /// x3 = the first 64 bits of the baseline (0 while it is still being
    /// hashed in the background).
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

    fn enable(&mut self, target: u64, ops: &mut dyn HypOps) -> CallResult {
        // The guest may only name itself (a self-check); the HLOS role
        // does not exist here.
        if target != abi::SELF_ADDRSPACE {
            self.counters.denied += 1;
            return ret(KpError::Denied);
        }
        match self.state {
            State::Inactive | State::Active => ret(KpError::ObjectState),
            State::Reported(layout) => {
                // Permissions first: from here on TEXT and RODATA change
                // only through this service, so the measurement taken
                // next (here or on the hypervisor's CPU) is of the kernel
                // as it was at this call.
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
                self.state = State::Protected(layout);
                let spans = [layout.text().into(), layout.rodata().into()];
                self.baseline = if ops.hash_guest_in_background(&spans) == Ok(true) {
                    Baseline::Pending
                } else {
                    self.measure_baseline(&layout, ops)
                };
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
                // Protected either way; without a baseline, not intact.
                self.verdict(self.baseline != Baseline::Lost)
            }
            State::Protected(layout) => {
                if self.settle(&layout, ops).is_err() {
                    self.counters.busy += 1;
                    return ret(KpError::Busy);
                }
                self.counters.self_checks += 1;
                let intact = self.digest().is_some_and(|baseline| {
                    self.sites_hold(ops) && self.measure(&layout, ops).is_ok_and(|d| d == baseline)
                });
                if !intact {
                    self.counters.self_check_failures += 1;
                }
                self.verdict(intact)
            }
        }
    }

    /// The text-patching path: validate and perform the store.
    fn text_patch(
        &mut self,
        layout: &Layout,
        fault: &GuestFault<'_>,
        ops: &mut dyn HypOps,
    ) -> FaultAction {
        let syn = fault.syndrome;
        let ipa = fault.ipa.get();
        let refuse = |this: &mut Self, ops: &mut dyn HypOps, why: fmt::Arguments<'_>| {
            this.counters.patches_refused += 1;
            ops.log(format_args!(
                "kernel protect: refused text patch at IPA {ipa:#x}: {why}"
            ));
            FaultAction::Refused
        };
        if !syn.valid() || syn.width() != Width::Word {
            return refuse(
                self,
                ops,
                format_args!("not a 32-bit store with a valid syndrome"),
            );
        }
        let new = fault.regs.get(syn.register()) as u32;
        let mut old = [0u8; 4];
        if ops.read_guest(Ipa(ipa), &mut old).is_err() {
            return refuse(self, ops, format_args!("not guest RAM"));
        }
        let old = u32::from_le_bytes(old);
        if let Err(why) = patch::validate(old, new, ipa, layout.text()) {
            return refuse(self, ops, format_args!("{why}"));
        }
        // TEXT must not change under a baseline still being hashed: the
        // store runs again (and traps again) until it is taken.
        if self.settle(layout, ops).is_err() {
            self.counters.patches_deferred += 1;
            return FaultAction::Retry;
        }
        let slot = match self.sites.binary_search_by_key(&ipa, |s| s.ipa) {
            Ok(i) => i,
            Err(i) => {
                if self
                    .sites
                    .insert(
                        i,
                        Site {
                            ipa,
                            original: old,
                            current: old,
                        },
                    )
                    .is_err()
                {
                    return refuse(
                        self,
                        ops,
                        format_args!("more than {MAX_PATCH_SITES} patched sites"),
                    );
                }
                i
            }
        };
        if ops.write_guest_insn(Ipa(ipa), new).is_err() {
            return refuse(self, ops, format_args!("cannot write guest RAM"));
        }
        if let Some(s) = self.sites.get_mut(slot) {
            s.current = new;
        }
        let mut h = crate::sha256::Sha256::new(ops.sha256_compress());
        h.update(&self.patch_log);
        h.update(&ipa.to_le_bytes());
        h.update(&old.to_le_bytes());
        h.update(&new.to_le_bytes());
        self.patch_log = h.finalize();
        self.counters.patches_accepted += 1;
        FaultAction::Emulated
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

impl Service for KernelProtect {
    fn name(&self) -> &'static str {
        "kernel_protect"
    }

    fn function_ids(&self) -> &'static [u32] {
        &abi::FUNCTION_IDS
    }

    fn init(&mut self, ops: &mut dyn HypOps) -> Result<(), ServiceError> {
        let ram = ops.guest_ram();
        self.ram = (ram.start().get(), ram.end().get());
        Ok(())
    }

    fn call(&mut self, call: &Call, ops: &mut dyn HypOps) -> CallResult {
        let [a1, a2, a3, ..] = call.args;
        match call.fid {
            abi::ASSET_INFO => self.asset_info(a1, a2, a3),
            abi::ASSET_INFO_COMPACT => self.asset_info_compact(a1, ops),
            abi::ENABLE_VM_PROTECTION => self.enable(a1, ops),
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

    fn finish(&mut self, ops: &mut dyn HypOps) {
        // Power-off: no vCPU is left to hold up, so the digest is waited
        // for (a bounded time) and the stats show it.
        if let (State::Protected(layout), Baseline::Pending) = (self.state, self.baseline) {
            self.baseline = match ops.wait_background_hash() {
                Some(digest) => Baseline::Taken {
                    digest,
                    on: MeasuredOn::HypervisorCpu,
                },
                None => self.measure_baseline(&layout, ops),
            };
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
        writeln!(out, "kp_patch_sites={}", self.sites.len())?;
        writeln!(out, "kp_rx_writes_blocked={}", c.rx_writes_blocked)?;
        writeln!(out, "kp_ro_writes_blocked={}", c.ro_writes_blocked)?;
        writeln!(out, "kp_exec_blocked={}", c.exec_blocked)?;
        writeln!(out, "kp_self_checks={}", c.self_checks)?;
        writeln!(out, "kp_self_check_failures={}", c.self_check_failures)?;
        writeln!(out, "kp_busy={}", c.busy)?;
        writeln!(out, "kp_patches_deferred={}", c.patches_deferred)?;
        let measured_on = match self.baseline {
            Baseline::NotTaken => "-",
            Baseline::Pending
            | Baseline::Taken {
                on: MeasuredOn::HypervisorCpu,
                ..
            } => "hypervisor-cpu",
            // A lost baseline was last tried on the guest's CPU.
            Baseline::Taken {
                on: MeasuredOn::GuestCpu,
                ..
            }
            | Baseline::Lost => "guest-cpu",
        };
        writeln!(out, "kp_measured_on={measured_on}")?;
        write!(out, "kp_measurement=")?;
        match self.baseline {
            Baseline::Pending => write!(out, "pending")?,
            Baseline::Lost => write!(out, "lost")?,
            // All zeros until protection is enabled.
            Baseline::NotTaken | Baseline::Taken { .. } => {
                write!(out, "{}", Hex(&self.digest().unwrap_or([0; 32])))?;
            }
        }
        writeln!(out, "\nkp_patch_log={}", Hex(&self.patch_log))
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
        match self.baseline {
            Baseline::NotTaken => writeln!(out, "none")?,
            Baseline::Pending => writeln!(out, "still being taken")?,
            Baseline::Lost => writeln!(out, "LOST: the baseline could not be taken")?,
            Baseline::Taken { digest, on } => {
                write!(out, "SHA-256 of text+rodata {}", Hex(&digest))?;
                let on = match on {
                    MeasuredOn::GuestCpu => "the guest's CPU",
                    MeasuredOn::HypervisorCpu => "the hypervisor's CPU",
                };
                writeln!(out, " (hashed on {on})")?;
            }
        }
        write!(out, "  self-check:     ")?;
        match (c.self_checks, c.self_check_failures) {
            (0, _) => writeln!(out, "not run")?,
            (n, 0) => writeln!(out, "intact ({n} of {n} checks)")?,
            (n, f) => writeln!(out, "MODIFIED ({f} of {n} checks failed)")?,
        }
        writeln!(
            out,
            "  text patches:   {} performed, {} refused",
            c.patches_accepted, c.patches_refused
        )?;
        writeln!(
            out,
            "  blocked:        {} writes to text, {} writes to rodata, {} executions of non-text; {} calls refused, {} denied",
            c.rx_writes_blocked, c.ro_writes_blocked, c.exec_blocked, c.refused_calls, c.denied
        )
    }
}

#[cfg(test)]
mod tests;
