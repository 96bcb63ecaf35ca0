// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The interface through which hypervisor services plug into the core,
//! after pKVM's vendor modules: each service is handed an ops table at
//! init, declares the function IDs it answers and may veto MMIO accesses.
//! Services are chosen at boot; if any of them fails to start, the guest
//! is not started (fail-closed).

use core::fmt::{self, Write};

use crate::addr::{GuestVa, Ipa, IpaRange};
use crate::devices::DeviceWindows;
use crate::esr::AbortSyndrome;
use crate::stage2::Perms;
use crate::vcpu::GuestRegs;

/// An SMCCC call as a service sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Call {
    /// Function ID (w0).
    pub fid: u32,
    /// Arguments x1..x6.
    pub args: [u64; 6],
}

impl Call {
    /// The call a vCPU makes with these registers: w0 and x1..x6.
    pub fn from_regs(regs: &GuestRegs) -> Self {
        let x = &regs.x;
        Self {
            fid: x[0] as u32,
            args: [x[1], x[2], x[3], x[4], x[5], x[6]],
        }
    }
}

/// Result registers x0..x3.
pub type CallResult = [u64; 4];

/// Why an operation on guest memory was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpsError {
    /// The range is not entirely inside guest RAM.
    NotGuestRam,
    /// Not page aligned (stage-2 changes) or not 4-byte aligned
    /// (instruction writes).
    Misaligned,
    /// Stage-2 table memory ran out.
    OutOfTables,
    /// The stage-2 tables are corrupt (an entry points outside the table
    /// memory); nothing was written through it.
    BadTables,
}

/// What the core offers services (the ops table handed over at init and
/// on every call).
pub trait HypOps {
    /// Guest RAM, as the guest's device tree describes it.
    fn guest_ram(&self) -> IpaRange;
    /// The device windows, in which MMIO is trapped and may be forwarded.
    fn device_windows(&self) -> &DeviceWindows;
    /// Copies guest RAM at `ipa` into `buf`.
    ///
    /// # Errors
    /// [`OpsError::NotGuestRam`] if the range is not inside guest RAM.
    fn read_guest(&mut self, ipa: Ipa, buf: &mut [u8]) -> Result<(), OpsError>;
    /// Feeds `len` bytes of guest RAM at `ipa` to `sink` without copying.
    /// Only the calling vCPU is stopped while a service runs: the caller
    /// must hash only memory the guest cannot write (read-only at stage
    /// 2).
    ///
    /// # Errors
    /// [`OpsError::NotGuestRam`] if the range is not inside guest RAM.
    fn hash_guest(
        &mut self,
        ipa: Ipa,
        len: u64,
        sink: &mut crate::sha256::Sha256,
    ) -> Result<(), OpsError>;
    /// Writes one instruction into guest RAM at `ipa` on the guest's
    /// behalf, and makes it visible to instruction fetch.
    ///
    /// # Errors
    /// [`OpsError`] if `ipa` is not a 4-byte aligned guest RAM address.
    fn write_guest_insn(&mut self, ipa: Ipa, insn: u32) -> Result<(), OpsError>;
    /// Writes one 64-bit word of data into guest RAM at `ipa` on the
    /// guest's behalf (one single-copy-atomic store: the guest may read
    /// it concurrently, as ftrace's trampoline reads a call site's
    /// literal).
    ///
    /// # Errors
    /// [`OpsError`] if `ipa` is not an 8-byte aligned guest RAM address.
    fn write_guest_u64(&mut self, ipa: Ipa, value: u64) -> Result<(), OpsError>;
    /// The SHA-256 block function to measure with (the CPU's instructions
    /// where available).
    fn sha256_compress(&self) -> crate::sha256::CompressFn {
        crate::sha256::compress_soft
    }
    /// Prints a line on the hypervisor's console (prefixed `hyp-stub: `).
    fn log(&mut self, args: fmt::Arguments<'_>);
    /// Sets the stage-2 permissions of page-aligned guest RAM.
    ///
    /// # Errors
    /// [`OpsError`] if the range is not page-aligned guest RAM, or tables
    /// ran out.
    fn set_perms(&mut self, range: IpaRange, perms: Perms) -> Result<(), OpsError>;
}

/// A stage-2 fault on guest RAM, as services see it.
#[derive(Clone, Copy, Debug)]
pub struct GuestFault<'a> {
    /// Faulting IPA.
    pub ipa: Ipa,
    /// Faulting guest virtual address (FAR_EL2).
    pub va: GuestVa,
    /// Instruction fetch (else data access).
    pub exec: bool,
    /// The data-abort syndrome (write, width, register...).
    pub syndrome: AbortSyndrome,
    /// The guest's registers at the fault.
    pub regs: &'a GuestRegs,
    /// The guest's PC at the fault.
    pub pc: u64,
}

/// What a service did about a [`GuestFault`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultAction {
    /// Not this service's fault.
    NotMine,
    /// Handled on the guest's behalf: skip the instruction.
    Emulated,
    /// Refused: the guest gets an external abort, which it cannot
    /// recover from.
    Refused,
    /// Refused, and the guest gets a permission fault at the faulting VA,
    /// which its exception table can resolve (text patching through
    /// `copy_to_kernel_nofault()` then returns an error).
    RefusedRecoverable,
    /// Not yet: the guest re-executes the access (the service is waiting
    /// for something that must not be waited for under the core's lock).
    Retry,
}

/// A service's answer about one trapped MMIO access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioVerdict {
    /// Emulate it.
    Allow,
    /// Refuse it: the guest gets an external abort.
    Deny,
}

/// Why a service could not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceError {
    /// The platform lacks something the service needs.
    Unsupported(&'static str),
    /// The service's own configuration is inconsistent.
    Misconfigured(&'static str),
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceError::Unsupported(why) => write!(f, "unsupported: {why}"),
            ServiceError::Misconfigured(why) => write!(f, "misconfigured: {why}"),
        }
    }
}

/// A hypervisor service.
pub trait Service: Send {
    /// Short name, used in logs and as the prefix of its stats keys.
    fn name(&self) -> &'static str;
    /// The SMCCC function IDs this service answers.
    fn function_ids(&self) -> &'static [u32];
    /// Called once before the guest starts.
    ///
    /// # Errors
    /// Any [`ServiceError`]: the guest will not start.
    fn init(&mut self, ops: &mut dyn HypOps) -> Result<(), ServiceError>;
    /// Handles one of [`Self::function_ids`]. Must return for any input.
    fn call(&mut self, call: &Call, ops: &mut dyn HypOps) -> CallResult;
    /// Handles an HVC with a non-zero immediate (a non-SMCCC call such as
    /// `hvc #0x6094`); `None` if not this service's.
    fn immediate_call(
        &mut self,
        _imm: u16,
        _call: &Call,
        _ops: &mut dyn HypOps,
    ) -> Option<CallResult> {
        None
    }
    /// Handles a stage-2 fault on guest RAM.
    fn guest_fault(&mut self, _fault: &GuestFault<'_>, _ops: &mut dyn HypOps) -> FaultAction {
        FaultAction::NotMine
    }
    /// Rules on an MMIO access the guest made at `ipa`.
    fn mmio_access(&mut self, _ipa: Ipa, _write: bool) -> MmioVerdict {
        MmioVerdict::Allow
    }
    /// Whether the service has deferred work for the guest's idle time
    /// ([`Self::idle`]). While any service has, the guest's WFI traps.
    fn has_idle_work(&self) -> bool {
        false
    }
    /// A vCPU of the guest is idle (it executed WFI): do a bounded
    /// amount of deferred work. Every other vCPU's exits wait while this
    /// runs, so one call must stay short; what is left waits for the
    /// next idle exit.
    fn idle(&mut self, _ops: &mut dyn HypOps) {}
    /// Writes the service's counters as `key=value` lines.
    ///
    /// # Errors
    /// Whatever `out` returns.
    fn write_stats(&self, _out: &mut dyn Write) -> fmt::Result {
        Ok(())
    }
    /// Writes what the service did this run for a person to read: a few
    /// `  label: text` lines, above the raw counters.
    ///
    /// # Errors
    /// Whatever `out` returns.
    fn write_summary(&self, _out: &mut dyn Write) -> fmt::Result {
        Ok(())
    }
}

/// How many services can be registered.
pub const MAX_SERVICES: usize = 4;

/// Most function IDs the registered services may answer together.
pub const MAX_SERVICE_IDS: usize = 64;

/// Why registration failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterError {
    /// More than [`MAX_SERVICES`].
    Full,
    /// The function ID is already claimed by another service.
    DuplicateId(u32),
    /// The services would answer more than [`MAX_SERVICE_IDS`] function
    /// IDs together.
    TooManyIds,
}

/// The registered services.
#[derive(Default)]
pub struct Registry<'s> {
    services: heapless::Vec<&'s mut dyn Service, MAX_SERVICES>,
}

impl<'s> Registry<'s> {
    /// An empty registry.
    pub fn new() -> Self {
        Self {
            services: heapless::Vec::new(),
        }
    }

    /// Adds a service.
    ///
    /// # Errors
    /// [`RegisterError`] if the registry is full or a function ID is
    /// already taken.
    pub fn register(&mut self, service: &'s mut dyn Service) -> Result<(), RegisterError> {
        let ids: usize = self.services.iter().map(|s| s.function_ids().len()).sum();
        if ids + service.function_ids().len() > MAX_SERVICE_IDS {
            return Err(RegisterError::TooManyIds);
        }
        for &fid in service.function_ids() {
            if self
                .services
                .iter()
                .any(|s| s.function_ids().contains(&fid))
            {
                return Err(RegisterError::DuplicateId(fid));
            }
        }
        self.services.push(service).map_err(|_| RegisterError::Full)
    }

    /// Starts every service in registration order.
    ///
    /// # Errors
    /// The name of the first service that failed, and why.
    pub fn init_all(&mut self, ops: &mut dyn HypOps) -> Result<(), (&'static str, ServiceError)> {
        for s in self.services.iter_mut() {
            s.init(ops).map_err(|e| (s.name(), e))?;
        }
        Ok(())
    }

    /// Whether any service has work for the guest's idle time.
    pub fn has_idle_work(&self) -> bool {
        self.services.iter().any(|s| s.has_idle_work())
    }

    /// Gives the guest's idle time to the first service with work for it.
    pub fn idle(&mut self, ops: &mut dyn HypOps) {
        if let Some(s) = self.services.iter_mut().find(|s| s.has_idle_work()) {
            s.idle(ops);
        }
    }

    /// The service answering `fid`.
    pub fn find(&mut self, fid: u32) -> Option<&mut (dyn Service + 's)> {
        self.services
            .iter_mut()
            .find(|s| s.function_ids().contains(&fid))
            .map(|s| &mut **s)
    }

    /// Offers an immediate HVC to each service until one takes it.
    pub fn immediate_call(
        &mut self,
        imm: u16,
        call: &Call,
        ops: &mut dyn HypOps,
    ) -> Option<CallResult> {
        self.services
            .iter_mut()
            .find_map(|s| s.immediate_call(imm, call, ops))
    }

    /// Offers a guest fault to each service until one handles it.
    pub fn guest_fault(&mut self, fault: &GuestFault<'_>, ops: &mut dyn HypOps) -> FaultAction {
        for s in self.services.iter_mut() {
            match s.guest_fault(fault, ops) {
                FaultAction::NotMine => {}
                action => return action,
            }
        }
        FaultAction::NotMine
    }

    /// Asks every service about an MMIO access; any refusal wins.
    pub fn mmio_access(&mut self, ipa: Ipa, write: bool) -> MmioVerdict {
        let mut verdict = MmioVerdict::Allow;
        for s in self.services.iter_mut() {
            if s.mmio_access(ipa, write) == MmioVerdict::Deny {
                verdict = MmioVerdict::Deny;
            }
        }
        verdict
    }

    /// All registered services.
    pub fn iter(&self) -> impl Iterator<Item = &(dyn Service + 's)> {
        self.services.iter().map(|s| &**s)
    }
}
