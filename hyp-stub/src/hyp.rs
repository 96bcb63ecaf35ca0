// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The core: what happens on each exit from the guest. Hypercalls are
//! routed to the discovery answers, PSCI forwarding or a service; stage-2
//! data aborts outside RAM are emulated MMIO (forwarded to the real
//! device) when the syndrome allows; everything else becomes an exception
//! injected into the guest. Every path returns to the guest; nothing a
//! guest does can stop the hypervisor.

use core::fmt::Write;

use crate::addr::{GuestVa, Ipa, IpaRange, PhysAddr};
use crate::devices::DeviceWindows;
use crate::esr::{AbortSyndrome, Esr, ExceptionClass, FaultStatus, Width};
use crate::service::{
    Call, FaultAction, GuestFault, HypOps, MmioVerdict, OpsError, Registry, ServiceError,
};
use crate::smccc::{self, psci};
use crate::stage2::{Perms, Stage2, Stage2Error, TableMemory, Tlb, PAGE_SIZE};
use crate::stats::{ExitKind, Stats};
use crate::vcpu::{El1Context, El1Exception, Injection, Vcpu};

/// How many refused accesses are reported on the console (all are counted).
pub const REPORTED_REFUSALS: u64 = 32;

/// What the core needs from the machine. Implemented on real hardware by
/// the binary and by fakes in the tests. TLB maintenance is part of it.
pub trait Platform: Tlb {
    /// The SHA-256 block function to use.
    fn sha256_compress(&self) -> crate::sha256::CompressFn {
        crate::sha256::compress_soft
    }
    /// Feeds RAM at `pa` (already checked to be guest RAM) to `sink`.
    fn hash_ram(&mut self, pa: PhysAddr, len: u64, sink: &mut crate::sha256::Sha256);
    /// Reads RAM at `pa` (already checked to be guest RAM).
    fn read_ram(&mut self, pa: PhysAddr, buf: &mut [u8]);
    /// Writes one instruction to RAM at `pa` (checked, 4-byte aligned)
    /// and makes it visible to instruction fetch.
    fn write_insn(&mut self, pa: PhysAddr, insn: u32);
    /// Writes one 64-bit word of data to RAM at `pa` (checked, 8-byte
    /// aligned) with a single store.
    fn write_u64(&mut self, pa: PhysAddr, value: u64);
    /// Issues an SMC to the platform firmware (PSCI).
    fn firmware_call(&mut self, fid: u32, args: [u64; 3]) -> [u64; 4];
    /// Starts physical CPU `mpidr` at the hypervisor's secondary entry,
    /// which will run the guest's vCPU `slot` (PSCI CPU_ON to the
    /// firmware); returns the firmware's PSCI result.
    fn start_cpu(&mut self, mpidr: u64, slot: usize) -> u64;
    /// The MPIDR of the CPU running this code.
    fn current_mpidr(&self) -> u64;
    /// Reads device memory at `pa` (MMIO emulation).
    fn mmio_read(&mut self, pa: PhysAddr, width: Width) -> u64;
    /// Writes device memory at `pa` (MMIO emulation).
    fn mmio_write(&mut self, pa: PhysAddr, width: Width, value: u64);
    /// The guest's EL1 registers an injection needs.
    fn el1_context(&self) -> El1Context;
    /// Sets the guest's EL1 exception registers.
    fn set_el1_exception(&mut self, e: &El1Exception);
    /// The hypervisor's console.
    fn console(&mut self) -> &mut dyn Write;
}

/// The machine as the hypervisor carved it up.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    /// Guest RAM (mapped at stage 2, IPA == PA).
    pub guest_ram: IpaRange,
    /// Where MMIO is trapped and may be forwarded (IPA == PA): the
    /// devices of the machine's device tree.
    pub devices: DeviceWindows,
}

/// The ops table handed to services: the layout, the guest's stage-2
/// tables and the machine.
struct Ops<'a, M: TableMemory> {
    layout: Layout,
    stage2: &'a mut Stage2<M>,
    plat: &'a mut dyn Platform,
}

impl<M: TableMemory> Ops<'_, M> {
    fn ram_range(&self, ipa: Ipa, len: u64) -> Result<IpaRange, OpsError> {
        IpaRange::new(ipa, len)
            .filter(|r| self.layout.guest_ram.covers(r))
            .ok_or(OpsError::NotGuestRam)
    }
}

impl<M: TableMemory> HypOps for Ops<'_, M> {
    fn guest_ram(&self) -> IpaRange {
        self.layout.guest_ram
    }
    fn device_windows(&self) -> &DeviceWindows {
        &self.layout.devices
    }
    fn read_guest(&mut self, ipa: Ipa, buf: &mut [u8]) -> Result<(), OpsError> {
        if buf.is_empty() {
            return Ok(());
        }
        self.ram_range(ipa, buf.len() as u64)?;
        self.plat.read_ram(PhysAddr(ipa.get()), buf);
        Ok(())
    }
    fn write_guest_insn(&mut self, ipa: Ipa, insn: u32) -> Result<(), OpsError> {
        if !ipa.is_aligned(4) {
            return Err(OpsError::Misaligned);
        }
        self.ram_range(ipa, 4)?;
        self.plat.write_insn(PhysAddr(ipa.get()), insn);
        Ok(())
    }
    fn write_guest_u64(&mut self, ipa: Ipa, value: u64) -> Result<(), OpsError> {
        if !ipa.is_aligned(8) {
            return Err(OpsError::Misaligned);
        }
        self.ram_range(ipa, 8)?;
        self.plat.write_u64(PhysAddr(ipa.get()), value);
        Ok(())
    }
    fn sha256_compress(&self) -> crate::sha256::CompressFn {
        self.plat.sha256_compress()
    }
    fn hash_guest(
        &mut self,
        ipa: Ipa,
        len: u64,
        sink: &mut crate::sha256::Sha256,
    ) -> Result<(), OpsError> {
        self.ram_range(ipa, len)?;
        self.plat.hash_ram(PhysAddr(ipa.get()), len, sink);
        Ok(())
    }
    fn log(&mut self, args: core::fmt::Arguments<'_>) {
        let out = self.plat.console();
        let _ = out.write_str("hyp-stub: ");
        let _ = out.write_fmt(args);
        let _ = out.write_str("\n");
    }
    fn set_perms(&mut self, range: IpaRange, perms: Perms) -> Result<(), OpsError> {
        self.ram_range(range.start(), range.size())?;
        let tlb: &mut dyn Tlb = self.plat;
        self.stage2
            .set_perms(range, perms, tlb)
            .map_err(|e| match e {
                Stage2Error::OutOfTables => OpsError::OutOfTables,
                Stage2Error::BadTable => OpsError::BadTables,
                Stage2Error::NotMapped | Stage2Error::OutOfRange => OpsError::NotGuestRam,
                Stage2Error::Misaligned => OpsError::Misaligned,
            })
    }
}

/// Most vCPUs (one per physical CPU, MPIDR Aff0 0..MAX_CPUS).
pub const MAX_CPUS: usize = 8;

/// What the CPU does after an exit, once the core is released (the
/// caller holds the core under a lock that every other CPU's exits wait
/// for: nothing that waits may happen under it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Return to the guest with the registers as the core left them.
    Guest,
    /// PSCI standby: ask the firmware for CPU_SUSPEND with this
    /// (validated, standby) state and no entry point, put its result in
    /// x0, and return to the guest.
    Standby(psci::PowerState),
    /// PSCI power-down suspend of vCPU `slot`: ask the firmware for
    /// CPU_SUSPEND with this state and the hypervisor's own entry point.
    /// When the CPU wakes, there or by the call returning success (as
    /// QEMU's does), [`Hyp::secondary_boot`] gives where the guest
    /// resumes; if the firmware refuses, [`Hyp::suspend_failed`].
    PowerDown {
        slot: usize,
        state: psci::PowerState,
    },
    /// PSCI CPU_OFF of vCPU `slot`: ask the firmware to turn this CPU
    /// off. If that returns, [`Hyp::cpu_off_failed`].
    CpuOff { slot: usize },
    /// An MMIO access the core allowed: perform it on the device
    /// ([`MmioAccess::perform`]), then return to the guest. The device
    /// access touches no state of the hypervisor's and may be slow (the
    /// device is another agent's to answer), so no other CPU's exit waits
    /// for it.
    Mmio(MmioAccess),
}

/// A trapped MMIO access, decoded and allowed, to be done on the device
/// outside the core's lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioAccess {
    pa: PhysAddr,
    abort: AbortSyndrome,
}

impl MmioAccess {
    /// Performs the access on the device and completes the guest's
    /// instruction: a read lands in its register (sign- or zero-extended
    /// as the syndrome says) and the PC moves past it.
    pub fn perform(&self, vcpu: &mut Vcpu, plat: &mut dyn Platform) {
        let abort = self.abort;
        let width = abort.width();
        let reg = abort.register();
        if abort.write() {
            plat.mmio_write(self.pa, width, vcpu.regs.get(reg) & width.mask());
        } else {
            let mut value = plat.mmio_read(self.pa, width) & width.mask();
            if abort.sign_extend() && width != Width::Double {
                let shift = 64 - 8 * width.bytes();
                value = (((value << shift) as i64) >> shift) as u64;
            }
            if !abort.sixty_four() {
                value &= 0xffff_ffff;
            }
            vcpu.regs.set(reg, value);
        }
        vcpu.pc = vcpu.pc.wrapping_add(4);
    }
}

/// Where each vCPU stands in its PSCI life cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CpuState {
    Off,
    /// CPU_ON accepted; the CPU has not entered the guest yet.
    Pending {
        entry: u64,
        context: u64,
    },
    On,
    /// In a power-down suspend: on wake the guest resumes at `entry` with
    /// `context` in x0, as after CPU_ON.
    Suspended {
        entry: u64,
        context: u64,
    },
}

/// The hypervisor core.
pub struct Hyp<'s, M: TableMemory> {
    layout: Layout,
    services: Registry<'s>,
    /// The discovery answers, shared with the lock-free path.
    discovery: &'s Discovery,
    stage2: Stage2<M>,
    cpus: [CpuState; MAX_CPUS],
    /// Counters, printed at power-off.
    pub stats: Stats,
}

/// The vCPU slot of an MPIDR value (Aff0, with the other affinity
/// levels zero), if it is one the hypervisor can run.
pub fn cpu_slot(mpidr: u64) -> Option<usize> {
    let aff = mpidr & 0xff_00ff_ffff;
    let slot = (aff & 0xff) as usize;
    (aff >> 8 == 0 && slot < MAX_CPUS).then_some(slot)
}

impl<'s, M: TableMemory> Hyp<'s, M> {
    /// Creates the core with the guest's stage-2 tables (guest RAM already
    /// mapped) and its services (not yet started). `discovery` gets its
    /// answers now: from then on any CPU may answer discovery calls from
    /// it without the core ([`Discovery::try_exit`]).
    pub fn new(
        layout: Layout,
        services: Registry<'s>,
        stage2: Stage2<M>,
        discovery: &'s Discovery,
    ) -> Self {
        discovery.fix(&services);
        let mut cpus = [CpuState::Off; MAX_CPUS];
        // The boot CPU runs vCPU 0.
        cpus[0] = CpuState::On;
        Self {
            layout,
            services,
            discovery,
            stage2,
            cpus,
            stats: Stats::default(),
        }
    }

    /// Starts every service. The guest must not run if this fails.
    ///
    /// # Errors
    /// The failing service's name and reason.
    pub fn start_services(
        &mut self,
        plat: &mut dyn Platform,
    ) -> Result<(), (&'static str, ServiceError)> {
        let (services, mut ops) = self.services_and_ops(plat);
        services.init_all(&mut ops)
    }

    /// The services, and the ops table they are handed: the rest of the
    /// core's state they may use, borrowed beside them.
    fn services_and_ops<'a>(
        &'a mut self,
        plat: &'a mut dyn Platform,
    ) -> (&'a mut Registry<'s>, Ops<'a, M>) {
        let Self {
            layout,
            services,
            stage2,
            ..
        } = self;
        let ops = Ops {
            layout: *layout,
            stage2,
            plat,
        };
        (services, ops)
    }

    /// Called on a CPU started for vCPU `slot`, or woken from a power-down
    /// suspend: where it enters the guest and with which context ID, if a
    /// CPU_ON is pending or the vCPU was suspended.
    pub fn secondary_boot(&mut self, slot: usize) -> Option<(u64, u64)> {
        match self.cpus.get(slot).copied() {
            Some(CpuState::Pending { entry, context } | CpuState::Suspended { entry, context }) => {
                self.cpus[slot] = CpuState::On;
                Some((entry, context))
            }
            _ => None,
        }
    }

    /// The guest's stage-2 tables.
    pub fn stage2(&self) -> &Stage2<M> {
        &self.stage2
    }

    /// Calls `f` with every leaf of the guest's stage-2 tables (see
    /// [`Stage2::for_each_leaf`]), for checks of what the guest can reach.
    ///
    /// # Errors
    /// As [`Stage2::for_each_leaf`].
    pub fn for_each_stage2_leaf(
        &mut self,
        f: impl FnMut(IpaRange, PhysAddr, crate::stage2::Attrs),
    ) -> Result<(), Stage2Error> {
        self.stage2.for_each_leaf(f)
    }

    /// Handles a synchronous exception from the guest; says what the CPU
    /// does once the core is released.
    pub fn handle_sync(
        &mut self,
        esr: Esr,
        far: u64,
        hpfar: u64,
        vcpu: &mut Vcpu,
        plat: &mut dyn Platform,
    ) -> Next {
        match esr.class() {
            ExceptionClass::Hvc64 => {
                self.stats.exit(ExitKind::Hvc);
                // ELR already points past the HVC.
                return self.hypercall(esr.imm16(), vcpu, plat);
            }
            ExceptionClass::Smc64 => {
                self.stats.exit(ExitKind::Smc);
                // A trapped SMC leaves ELR at the SMC itself.
                vcpu.pc = vcpu.pc.wrapping_add(4);
                return self.hypercall(esr.imm16(), vcpu, plat);
            }
            ExceptionClass::DataAbortLower => {
                self.stats.exit(ExitKind::DataAbort);
                if !self.raced_with_a_stage2_update(esr.abort(), fault_ipa(hpfar, far)) {
                    return self.data_abort(esr, far, hpfar, vcpu, plat);
                }
            }
            ExceptionClass::InstrAbortLower => {
                self.stats.exit(ExitKind::InstrAbort);
                let ipa = fault_ipa(hpfar, far);
                if !self.raced_with_a_stage2_update(esr.abort(), ipa) {
                    if self.layout.guest_ram.contains(ipa) {
                        // Execution of guest RAM that stage 2 forbids:
                        // services may count it; it is never emulated.
                        let _ = self.offer_ram_fault(ipa, far, true, esr.abort(), vcpu, plat);
                        self.report_ram_fault(plat, "execute", ipa, far, vcpu.pc);
                    }
                    self.inject(vcpu, plat, Injection::InstrAbort { far });
                }
            }
            ExceptionClass::Wfx => {
                self.stats.exit(ExitKind::Idle);
                let (services, mut ops) = self.services_and_ops(plat);
                services.idle(&mut ops);
                // Only WFI traps (HCR_EL2.TWI), and only while a service
                // has idle work. It completes at once, as the
                // architecture allows; the guest's idle loop decides
                // whether to wait again.
                vcpu.pc = vcpu.pc.wrapping_add(4);
            }
            ExceptionClass::SysReg => {
                self.stats.exit(ExitKind::SysReg);
                self.inject(vcpu, plat, Injection::Undefined);
            }
            _ => {
                self.stats.exit(ExitKind::Other);
                self.inject(vcpu, plat, Injection::Undefined);
            }
        }
        Next::Guest
    }

    /// Whether the guest's WFI should trap, to give its idle time to
    /// services with deferred work; each CPU asks after each exit.
    pub fn wants_idle_exits(&self) -> bool {
        self.services.has_idle_work()
    }

    /// Counts an asynchronous exit (IRQ, FIQ or SError taken at EL2).
    pub fn handle_async(&mut self) {
        self.stats.exit(ExitKind::Other);
    }

    fn inject(&mut self, vcpu: &mut Vcpu, plat: &mut dyn Platform, what: Injection) {
        match what {
            Injection::Undefined => self.stats.undefs_injected += 1,
            _ => self.stats.aborts_injected += 1,
        }
        let e = vcpu.inject(what, plat.el1_context());
        plat.set_el1_exception(&e);
    }

    fn hypercall(&mut self, imm: u16, vcpu: &mut Vcpu, plat: &mut dyn Platform) -> Next {
        let call = Call::from_regs(&vcpu.regs);
        let (result, next) = if imm != 0 {
            // Not an SMCCC call: the immediate names the call.
            self.stats.call(u32::from(imm));
            let (services, mut ops) = self.services_and_ops(plat);
            let answer = services.immediate_call(imm, &call, &mut ops);
            let answer = answer.unwrap_or_else(|| {
                self.stats.calls_unsupported += 1;
                [smccc::NOT_SUPPORTED, 0, 0, 0]
            });
            (answer, Next::Guest)
        } else {
            self.stats.call(call.fid);
            if psci::is_psci(call.fid) {
                self.psci(&call, plat)
            } else {
                (self.smccc_call(&call, plat), Next::Guest)
            }
        };
        vcpu.regs.x[..4].copy_from_slice(&result);
        next
    }

    fn smccc_call(&mut self, call: &Call, plat: &mut dyn Platform) -> [u64; 4] {
        if let Some(answer) = self.discovery.answer(call) {
            return answer;
        }
        let (services, mut ops) = self.services_and_ops(plat);
        match services.find(call.fid) {
            Some(service) => service.call(call, &mut ops),
            None => {
                self.stats.calls_unsupported += 1;
                [smccc::NOT_SUPPORTED, 0, 0, 0]
            }
        }
    }

    /// Offers a stage-2 fault on guest RAM to the services.
    fn offer_ram_fault(
        &mut self,
        ipa: Ipa,
        far: u64,
        exec: bool,
        syndrome: AbortSyndrome,
        vcpu: &Vcpu,
        plat: &mut dyn Platform,
    ) -> FaultAction {
        let fault = GuestFault {
            ipa,
            va: GuestVa(far),
            exec,
            syndrome,
            regs: &vcpu.regs,
            pc: vcpu.pc,
        };
        let (services, mut ops) = self.services_and_ops(plat);
        services.guest_fault(&fault, &mut ops)
    }

    /// Whether a stage-2 abort was taken while another CPU had the guest
    /// RAM entry invalid for break-before-make (splitting a block to
    /// change permissions): a translation fault on guest RAM that is
    /// mapped again now that this CPU holds the core. Guest RAM is never
    /// unmapped, so the access is simply retried (the PC is left as it
    /// is); anything else is handled as before. Counted.
    fn raced_with_a_stage2_update(&mut self, abort: AbortSyndrome, ipa: Ipa) -> bool {
        let raced = matches!(abort.status(), FaultStatus::Translation(_))
            && self.layout.guest_ram.contains(ipa)
            && self.stage2.translate(ipa).is_some();
        if raced {
            self.stats.ram_faults_retried += 1;
        }
        raced
    }

    fn report_ram_fault(
        &mut self,
        plat: &mut dyn Platform,
        what: &str,
        ipa: Ipa,
        far: u64,
        pc: u64,
    ) {
        self.stats.ram_faults_refused += 1;
        if self.stats.ram_faults_refused <= REPORTED_REFUSALS {
            let _ = writeln!(
                plat.console(),
                "hyp-stub: blocked {what} of guest RAM at IPA {:#x} (VA {far:#x}, guest pc {pc:#x}); injecting abort",
                ipa.get()
            );
        }
    }

    /// A stage-2 data abort on guest RAM: only services that protect
    /// memory cause these; they emulate the access or it is refused.
    fn ram_fault(
        &mut self,
        abort: AbortSyndrome,
        ipa: Ipa,
        far: u64,
        vcpu: &mut Vcpu,
        plat: &mut dyn Platform,
    ) {
        let action = self.offer_ram_fault(ipa, far, false, abort, vcpu, plat);
        match action {
            FaultAction::Emulated => {
                self.stats.ram_faults_emulated += 1;
                vcpu.pc = vcpu.pc.wrapping_add(4);
                return;
            }
            // The access runs again once the core is released.
            FaultAction::Retry => {
                self.stats.ram_faults_deferred += 1;
                return;
            }
            FaultAction::RefusedRecoverable => {
                // The service explained the refusal; the guest's
                // exception table turns this fault into an error.
                self.stats.ram_faults_refused += 1;
                self.inject(
                    vcpu,
                    plat,
                    Injection::PermissionFault {
                        far,
                        write: abort.write(),
                    },
                );
                return;
            }
            FaultAction::NotMine | FaultAction::Refused => {}
        }
        let what = if abort.write() { "write" } else { "read" };
        self.report_ram_fault(plat, what, ipa, far, vcpu.pc);
        self.inject(
            vcpu,
            plat,
            Injection::DataAbort {
                far,
                write: abort.write(),
            },
        );
    }

    fn data_abort(
        &mut self,
        esr: Esr,
        far: u64,
        hpfar: u64,
        vcpu: &mut Vcpu,
        plat: &mut dyn Platform,
    ) -> Next {
        let abort = esr.abort();
        let ipa = fault_ipa(hpfar, far);
        if self.layout.guest_ram.contains(ipa) && !abort.stage1_walk() {
            self.ram_fault(abort, ipa, far, vcpu, plat);
            return Next::Guest;
        }
        let refuse = |hyp: &mut Self, vcpu: &mut Vcpu, plat: &mut dyn Platform, why: &str| {
            hyp.stats.mmio_refused += 1;
            if hyp.stats.mmio_refused <= REPORTED_REFUSALS {
                let kind = if abort.write() { "write" } else { "read" };
                let _ = writeln!(
                    plat.console(),
                    "hyp-stub: refused {kind} at IPA {:#x} (guest pc {:#x}): {why}; injecting external abort",
                    ipa.get(),
                    vcpu.pc
                );
            }
            hyp.inject(
                vcpu,
                plat,
                Injection::DataAbort {
                    far,
                    write: abort.write(),
                },
            );
            Next::Guest
        };
        // Faults on the guest's own page-table walks, on RAM (nothing is
        // protected yet) or outside the device windows are not MMIO.
        if abort.stage1_walk() {
            return refuse(self, vcpu, plat, "stage-1 table walk outside RAM");
        }
        if !self.layout.devices.contains(ipa) {
            return refuse(self, vcpu, plat, "outside guest RAM and the device windows");
        }
        // Without a valid syndrome the access cannot be emulated.
        if !abort.valid() {
            return refuse(self, vcpu, plat, "no valid syndrome (ISV=0)");
        }
        let width = abort.width();
        if !ipa.is_aligned(width.bytes()) {
            return refuse(self, vcpu, plat, "misaligned");
        }
        if self.services.mmio_access(ipa, abort.write()) == MmioVerdict::Deny {
            return refuse(self, vcpu, plat, "not guarded (MMIO guard)");
        }
        self.stats.mmio_emulated += 1;
        Next::Mmio(MmioAccess {
            pa: PhysAddr(ipa.get()),
            abort,
        })
    }

    /// Writes what happened this run for a person to read: each
    /// service's state and what was blocked or refused. Scripts read the
    /// stats block instead.
    ///
    /// # Errors
    /// Whatever `out` returns.
    pub fn write_summary(&self, out: &mut dyn Write) -> core::fmt::Result {
        writeln!(out, "pvguard summary:")?;
        for s in self.services.iter() {
            s.write_summary(out)?;
        }
        let st = self.all_stats();
        writeln!(
            out,
            "  hypervisor:     {} exits; {} MMIO accesses refused, {} guest RAM accesses refused, {} unsupported calls",
            st.exits_total(),
            st.mmio_refused,
            st.ram_faults_refused,
            st.calls_unsupported
        )
    }

    /// The core's counters with the exits answered without it added.
    pub fn all_stats(&self) -> Stats {
        self.discovery.add_to(&self.stats)
    }

    /// Writes the stats block, services' counters included.
    ///
    /// # Errors
    /// Whatever `out` returns.
    pub fn write_stats(&self, out: &mut dyn Write) -> core::fmt::Result {
        writeln!(out, "hyp-stub stats:")?;
        self.all_stats().write_lines(out)?;
        writeln!(out, "exits_lock_free={}", self.discovery.exits())?;
        if let Some(n) = self.stage2.table_memory().in_use() {
            writeln!(out, "stage2_tables={n}")?;
        }
        for s in self.services.iter() {
            s.write_stats(out)?;
        }
        writeln!(out, "hyp-stub stats end")
    }
}

/// The faulting IPA: HPFAR_EL2.FIPA holds IPA[51:12] in bits [43:4], the
/// page offset comes from FAR_EL2.
fn fault_ipa(hpfar: u64, far: u64) -> Ipa {
    Ipa(((hpfar & 0x0000_0fff_ffff_fff0) << 8) | (far & (PAGE_SIZE - 1)))
}

mod discovery;
mod power;
#[cfg(test)]
mod tests;

pub use discovery::Discovery;
