// SPDX-License-Identifier: GPL-2.0 OR MIT
//! PSCI, as the guest sees it: an allowlist in one match.
//!
//! Every PSCI function is named below and answered by the hypervisor. None
//! is forwarded as the guest made it: several carry an entry point, and a
//! firmware that really powers a CPU down (TF-A) wakes it *at EL2* at that
//! address, which would hand the guest the hypervisor. So an entry point
//! the guest gives (CPU_ON, CPU_SUSPEND to a power-down state,
//! CPU_DEFAULT_SUSPEND, SYSTEM_SUSPEND) is checked to be guest RAM and
//! kept in the vCPU's state; the firmware is given the hypervisor's own
//! entry, which puts the guest back where it asked. A function not listed
//! answers NOT_SUPPORTED, and PSCI_FEATURES answers from the same list.
//!
//! QEMU's firmware (7.2) treats every CPU_SUSPEND as WFI and returns
//! SUCCESS, power-down or not, and does not implement CPU_DEFAULT_SUSPEND
//! or SYSTEM_SUSPEND. A power-down suspend therefore ends the same way
//! whether the CPU really lost power or the firmware call returned: the
//! guest resumes at its entry point with its context ID, its EL1 state
//! reset as after CPU_ON. Anything that waits (suspend, CPU_OFF) is done
//! by the caller after the core is released, as [`Next`] says.

use super::{cpu_slot, CpuState, Hyp, Next, Platform};
use crate::addr::Ipa;
use crate::service::Call;
use crate::smccc::psci::{self, PowerState};
use crate::stage2::TableMemory;

/// The PSCI functions hyp-stub implements, with the feature flags
/// PSCI_FEATURES reports for each; the match in [`Hyp::psci`] is the
/// policy, this is what it advertises.
fn features(fid: u32) -> Option<u64> {
    match fid {
        psci::VERSION
        | psci::FEATURES
        | psci::CPU_ON_32
        | psci::CPU_ON_64
        | psci::CPU_OFF
        | psci::AFFINITY_INFO_32
        | psci::AFFINITY_INFO_64
        | psci::MIGRATE_INFO_TYPE
        | psci::CPU_DEFAULT_SUSPEND_32
        | psci::CPU_DEFAULT_SUSPEND_64
        | psci::SYSTEM_SUSPEND_32
        | psci::SYSTEM_SUSPEND_64
        | psci::SYSTEM_OFF
        | psci::SYSTEM_RESET => Some(0),
        // Not PSCI, but PSCI_FEATURES is how a caller learns that
        // SMCCC_VERSION exists (and so SMCCC 1.1 and vendor-hyp
        // discovery): Linux assumes SMCCC 1.0 without it.
        crate::smccc::SMCCC_VERSION => Some(0),
        // Bit 1 clear: the original power_state format; bit 0 clear:
        // platform-coordinated mode only.
        psci::CPU_SUSPEND_32 | psci::CPU_SUSPEND_64 => Some(0),
        _ => None,
    }
}

/// Keeps the low 32 bits of the arguments of an SMC32 function.
fn args32(call: &Call) -> [u64; 3] {
    let [a0, a1, a2, ..] = call.args;
    [a0 & 0xffff_ffff, a1 & 0xffff_ffff, a2 & 0xffff_ffff]
}

impl<M: TableMemory> Hyp<'_, M> {
    /// Answers a PSCI call (`call.fid` is in the PSCI range).
    pub(super) fn psci(&mut self, call: &Call, plat: &mut dyn Platform) -> ([u64; 4], Next) {
        let args = if call.fid & (1 << 30) != 0 {
            let [a0, a1, a2, ..] = call.args;
            [a0, a1, a2]
        } else {
            args32(call)
        };
        let [a0, a1, a2] = args;
        let (x0, next) = match call.fid {
            psci::VERSION => (psci::VERSION_1_1, Next::Guest),
            psci::FEATURES => (
                u32::try_from(a0)
                    .ok()
                    .and_then(features)
                    .unwrap_or(psci::NOT_SUPPORTED),
                Next::Guest,
            ),
            psci::CPU_SUSPEND_32 | psci::CPU_SUSPEND_64 => self.cpu_suspend(a0, a1, a2, plat),
            psci::CPU_DEFAULT_SUSPEND_32 | psci::CPU_DEFAULT_SUSPEND_64 => {
                self.power_down(PowerState::CORE_POWER_DOWN, a0, a1, plat)
            }
            psci::SYSTEM_SUSPEND_32 | psci::SYSTEM_SUSPEND_64 => self.system_suspend(a0, a1, plat),
            psci::CPU_ON_32 | psci::CPU_ON_64 => (self.cpu_on(a0, a1, a2, plat), Next::Guest),
            psci::CPU_OFF => self.cpu_off(plat),
            psci::AFFINITY_INFO_32 | psci::AFFINITY_INFO_64 => {
                (self.affinity_info(a0, a1, plat), Next::Guest)
            }
            // No Trusted OS: nothing to migrate.
            psci::MIGRATE_INFO_TYPE => (psci::MIGRATE_NOT_NEEDED, Next::Guest),
            psci::SYSTEM_OFF | psci::SYSTEM_RESET => {
                let _ = self.write_summary(plat.console());
                let _ = self.write_stats(plat.console());
                // Neither takes an argument; neither returns on success.
                (plat.firmware_call(call.fid, [0; 3])[0], Next::Guest)
            }
            // Known, and not offered: QEMU's firmware has no SYSTEM_RESET2
            // or MEM_PROTECT, and nothing here needs the rest.
            psci::MIGRATE_32
            | psci::MIGRATE_64
            | psci::MIGRATE_INFO_UP_CPU_32
            | psci::MIGRATE_INFO_UP_CPU_64
            | psci::SYSTEM_RESET2_32
            | psci::SYSTEM_RESET2_64
            | psci::MEM_PROTECT
            | psci::MEM_PROTECT_CHECK_RANGE_32
            | psci::MEM_PROTECT_CHECK_RANGE_64
            | psci::CPU_FREEZE
            | psci::NODE_HW_STATE_32
            | psci::NODE_HW_STATE_64
            | psci::SET_SUSPEND_MODE
            | psci::STAT_RESIDENCY_32
            | psci::STAT_RESIDENCY_64
            | psci::STAT_COUNT_32
            | psci::STAT_COUNT_64 => (psci::NOT_SUPPORTED, Next::Guest),
            // Unknown means no.
            _ => (psci::NOT_SUPPORTED, Next::Guest),
        };
        if (x0 as i64) < 0 {
            self.stats.psci_refused += 1;
        }
        ([x0, 0, 0, 0], next)
    }

    /// Whether `entry` is where a vCPU may be (re)started: guest RAM, A64
    /// instruction aligned.
    fn valid_entry(&self, entry: u64) -> bool {
        self.layout.guest_ram.contains(Ipa(entry)) && entry.is_multiple_of(4)
    }

    /// The vCPU slot of the calling CPU.
    fn current_slot(plat: &dyn Platform) -> Option<usize> {
        cpu_slot(plat.current_mpidr())
    }

    /// CPU_SUSPEND: a standby waits for an interrupt in place; a power
    /// down resumes at the guest's entry.
    fn cpu_suspend(
        &mut self,
        power_state: u64,
        entry: u64,
        context: u64,
        plat: &mut dyn Platform,
    ) -> (u64, Next) {
        match PowerState::decode(power_state) {
            None => (psci::INVALID_PARAMETERS, Next::Guest),
            // The firmware's answer replaces x0 once it returns.
            Some(state @ PowerState::Standby(_)) => {
                self.stats.psci_standby += 1;
                (psci::SUCCESS, Next::Standby(state))
            }
            Some(state @ PowerState::PowerDown(_)) => self.power_down(state, entry, context, plat),
        }
    }

    /// A power-down suspend of the calling vCPU, resuming at `entry`.
    fn power_down(
        &mut self,
        state: PowerState,
        entry: u64,
        context: u64,
        plat: &mut dyn Platform,
    ) -> (u64, Next) {
        if !self.valid_entry(entry) {
            return (psci::INVALID_ADDRESS, Next::Guest);
        }
        let Some(slot) = Self::current_slot(plat) else {
            return (psci::DENIED, Next::Guest);
        };
        self.cpus[slot] = CpuState::Suspended { entry, context };
        self.stats.psci_power_downs += 1;
        (psci::SUCCESS, Next::PowerDown { slot, state })
    }

    /// SYSTEM_SUSPEND: a power-down of the last running vCPU (the machine
    /// itself stays up: the hypervisor's services go on).
    fn system_suspend(&mut self, entry: u64, context: u64, plat: &mut dyn Platform) -> (u64, Next) {
        if !self.valid_entry(entry) {
            return (psci::INVALID_ADDRESS, Next::Guest);
        }
        let me = Self::current_slot(plat);
        let others_on = self
            .cpus
            .iter()
            .enumerate()
            .any(|(slot, state)| Some(slot) != me && *state != CpuState::Off);
        if others_on {
            return (psci::DENIED, Next::Guest);
        }
        self.power_down(PowerState::CORE_POWER_DOWN, entry, context, plat)
    }

    /// CPU_ON: validated, then forwarded with the hypervisor's own entry
    /// point; the guest's entry and context wait for the CPU.
    fn cpu_on(&mut self, target: u64, entry: u64, context: u64, plat: &mut dyn Platform) -> u64 {
        let Some(slot) = cpu_slot(target) else {
            return psci::INVALID_PARAMETERS;
        };
        if !self.valid_entry(entry) {
            return psci::INVALID_ADDRESS;
        }
        match self.cpus[slot] {
            CpuState::On | CpuState::Suspended { .. } => return psci::ALREADY_ON,
            CpuState::Pending { .. } => return psci::ON_PENDING,
            CpuState::Off => {}
        }
        self.cpus[slot] = CpuState::Pending { entry, context };
        let r = plat.start_cpu(target, slot);
        if r != psci::SUCCESS {
            self.cpus[slot] = CpuState::Off;
        }
        r
    }

    /// CPU_OFF: the vCPU is off from now on; the CPU turns off once the
    /// core is released.
    fn cpu_off(&mut self, plat: &mut dyn Platform) -> (u64, Next) {
        match Self::current_slot(plat) {
            Some(slot) => {
                self.cpus[slot] = CpuState::Off;
                (psci::SUCCESS, Next::CpuOff { slot })
            }
            None => (psci::DENIED, Next::Guest),
        }
    }

    /// AFFINITY_INFO, for single CPUs (lowest affinity level 0) the guest
    /// has. An off vCPU is asked of the firmware: after CPU_OFF the CPU is
    /// on until it has really stopped, and the guest must not restart it
    /// before.
    fn affinity_info(&mut self, target: u64, level: u64, plat: &mut dyn Platform) -> u64 {
        let Some(slot) = cpu_slot(target).filter(|_| level == 0) else {
            return psci::INVALID_PARAMETERS;
        };
        match self.cpus[slot] {
            CpuState::On | CpuState::Suspended { .. } => psci::AFFINITY_ON,
            CpuState::Pending { .. } => psci::AFFINITY_ON_PENDING,
            CpuState::Off => match plat.firmware_call(psci::AFFINITY_INFO_64, [target, 0, 0])[0] {
                psci::AFFINITY_ON => psci::AFFINITY_ON,
                _ => psci::AFFINITY_OFF,
            },
        }
    }

    /// The firmware refused to power vCPU `slot` down: it goes on running
    /// where it called (the caller puts the firmware's error in x0).
    pub fn suspend_failed(&mut self, slot: usize) {
        if let Some(state @ CpuState::Suspended { .. }) = self.cpus.get_mut(slot) {
            *state = CpuState::On;
        }
    }

    /// The firmware refused to turn vCPU `slot` off: it goes on running
    /// (the caller puts the firmware's error in x0).
    pub fn cpu_off_failed(&mut self, slot: usize) {
        if let Some(state @ CpuState::Off) = self.cpus.get_mut(slot) {
            *state = CpuState::On;
        }
    }
}
