// SPDX-License-Identifier: GPL-2.0 OR MIT
//! Counters the hypervisor keeps and prints when the guest powers off, as
//! a block that tests and benchmarks parse:
//!
//! ```text
//! hyp-stub stats:
//! exits_total=N
//! exit_hvc=N
//! ...
//! call_0x80000000=N
//! hyp-stub stats end
//! ```

use core::fmt::{self, Write};

/// Why the guest left EL1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitKind {
    /// HVC instruction.
    Hvc,
    /// SMC instruction.
    Smc,
    /// Stage-2 data abort (MMIO or protected memory).
    DataAbort,
    /// Stage-2 instruction abort.
    InstrAbort,
    /// Trapped system register access.
    SysReg,
    /// Trapped WFI: the guest was idle and a service had work for it.
    Idle,
    /// Anything else (IRQ, SError, unknown syndromes).
    Other,
}

const EXIT_KINDS: [(ExitKind, &str); 7] = [
    (ExitKind::Hvc, "exit_hvc"),
    (ExitKind::Smc, "exit_smc"),
    (ExitKind::DataAbort, "exit_dabt"),
    (ExitKind::InstrAbort, "exit_iabt"),
    (ExitKind::SysReg, "exit_sysreg"),
    (ExitKind::Idle, "exit_idle"),
    (ExitKind::Other, "exit_other"),
];

/// How many distinct function IDs are counted individually; calls with
/// further IDs (a guest probing random numbers) are counted together.
pub const TRACKED_CALLS: usize = 64;

/// The counters.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    exits: [u64; EXIT_KINDS.len()],
    calls: heapless::Vec<(u32, u64), TRACKED_CALLS>,
    calls_untracked: u64,
    /// MMIO accesses emulated on the guest's behalf.
    pub mmio_emulated: u64,
    /// MMIO accesses refused (outside the device windows, no valid
    /// syndrome, misaligned, or refused by a service).
    pub mmio_refused: u64,
    /// Synchronous external aborts injected into the guest.
    pub aborts_injected: u64,
    /// Undefined-instruction exceptions injected into the guest.
    pub undefs_injected: u64,
    /// Hypercalls answered with an error because nothing handles them.
    pub calls_unsupported: u64,
    /// Stage-2 faults on guest RAM handled on the guest's behalf.
    pub ram_faults_emulated: u64,
    /// Stage-2 faults on guest RAM refused (abort injected).
    pub ram_faults_refused: u64,
    /// Stage-2 faults on guest RAM taken while another CPU was changing
    /// its mapping, and retried.
    pub ram_faults_retried: u64,
    /// Stage-2 faults on guest RAM a service asked to see again later.
    pub ram_faults_deferred: u64,
    /// PSCI calls answered with an error.
    pub psci_refused: u64,
    /// PSCI standby suspends (the CPU waited for an interrupt in place).
    pub psci_standby: u64,
    /// PSCI power-down suspends (the vCPU resumed at its entry point).
    pub psci_power_downs: u64,
}

impl Stats {
    /// Counts one exit.
    pub fn exit(&mut self, kind: ExitKind) {
        if let Some(i) = EXIT_KINDS.iter().position(|(k, _)| *k == kind) {
            self.exits[i] += 1;
        }
    }

    /// Counts `n` exits (counted elsewhere, without the core).
    pub fn add_exits(&mut self, kind: ExitKind, n: u64) {
        if let Some(i) = EXIT_KINDS.iter().position(|(k, _)| *k == kind) {
            self.exits[i] += n;
        }
    }

    /// Counts one call of `fid`.
    pub fn call(&mut self, fid: u32) {
        self.add_calls(fid, 1);
    }

    /// Counts `n` calls of `fid`.
    pub fn add_calls(&mut self, fid: u32, n: u64) {
        if n == 0 {
            return;
        }
        if let Some((_, c)) = self.calls.iter_mut().find(|(f, _)| *f == fid) {
            *c += n;
        } else if self.calls.push((fid, n)).is_err() {
            self.calls_untracked += n;
        }
    }

    /// Calls of `fid` so far.
    pub fn calls_of(&self, fid: u32) -> u64 {
        self.calls
            .iter()
            .find(|(f, _)| *f == fid)
            .map_or(0, |(_, n)| *n)
    }

    /// Exits of `kind` so far.
    pub fn exits_of(&self, kind: ExitKind) -> u64 {
        EXIT_KINDS
            .iter()
            .position(|(k, _)| *k == kind)
            .map_or(0, |i| self.exits[i])
    }

    /// Calls counted so far, per function ID or together.
    pub fn calls_total(&self) -> u64 {
        self.calls.iter().map(|(_, n)| n).sum::<u64>() + self.calls_untracked
    }

    /// Total exits so far.
    pub fn exits_total(&self) -> u64 {
        self.exits.iter().sum()
    }

    /// Writes the core counters as `key=value` lines.
    ///
    /// # Errors
    /// Whatever `out` returns.
    pub fn write_lines(&self, out: &mut dyn Write) -> fmt::Result {
        writeln!(out, "exits_total={}", self.exits_total())?;
        for ((_, name), n) in EXIT_KINDS.iter().zip(self.exits) {
            writeln!(out, "{name}={n}")?;
        }
        writeln!(out, "mmio_emulated={}", self.mmio_emulated)?;
        writeln!(out, "mmio_refused={}", self.mmio_refused)?;
        writeln!(out, "aborts_injected={}", self.aborts_injected)?;
        writeln!(out, "undefs_injected={}", self.undefs_injected)?;
        writeln!(out, "calls_unsupported={}", self.calls_unsupported)?;
        writeln!(out, "calls_untracked={}", self.calls_untracked)?;
        writeln!(out, "ram_faults_emulated={}", self.ram_faults_emulated)?;
        writeln!(out, "ram_faults_refused={}", self.ram_faults_refused)?;
        writeln!(out, "ram_faults_retried={}", self.ram_faults_retried)?;
        writeln!(out, "ram_faults_deferred={}", self.ram_faults_deferred)?;
        writeln!(out, "psci_refused={}", self.psci_refused)?;
        writeln!(out, "psci_standby={}", self.psci_standby)?;
        writeln!(out, "psci_power_downs={}", self.psci_power_downs)?;
        let mut calls = self.calls.clone();
        calls.sort_unstable();
        for (fid, n) in calls {
            writeln!(out, "call_{fid:#010x}={n}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::String;

    #[test]
    fn counts_and_prints_sorted_keys() {
        let mut s = Stats::default();
        s.exit(ExitKind::Smc);
        s.exit(ExitKind::Smc);
        s.exit(ExitKind::DataAbort);
        s.call(0x8600_ff01);
        s.call(0x8000_0000);
        s.call(0x8000_0000);
        let mut out = String::new();
        s.write_lines(&mut out).unwrap();
        assert!(out.starts_with("exits_total=3\nexit_hvc=0\nexit_smc=2\nexit_dabt=1\n"));
        assert_eq!(
            (s.exits_of(ExitKind::Smc), s.exits_of(ExitKind::Hvc)),
            (2, 0)
        );
        assert_eq!(s.calls_total(), 3);
        let a = out.find("call_0x80000000=2").unwrap();
        let b = out.find("call_0x8600ff01=1").unwrap();
        assert!(a < b);
    }

    #[test]
    fn excess_function_ids_are_counted_not_lost() {
        let mut s = Stats::default();
        for fid in 0..(TRACKED_CALLS as u32 + 10) {
            s.call(fid);
        }
        assert_eq!(s.calls_untracked, 10);
        assert_eq!(s.calls_of(3), 1);
    }
}
