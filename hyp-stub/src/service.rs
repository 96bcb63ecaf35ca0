// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The interface through which hypervisor services plug into the core,
//! after pKVM's vendor modules: each service is handed an ops table at
//! init, declares the function IDs it answers and may veto MMIO accesses.
//! Services are chosen at boot; if any of them fails to start, the guest
//! is not started (fail-closed).

use core::fmt::{self, Write};

use crate::addr::{Ipa, IpaRange, PhysAddr};

/// An SMCCC call as a service sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Call {
    /// Function ID (w0).
    pub fid: u32,
    /// Arguments x1..x6.
    pub args: [u64; 6],
}

/// Result registers x0..x3.
pub type CallResult = [u64; 4];

/// What the core offers services: facts about the machine and, later,
/// stage-2 and guest-memory operations.
pub trait HypOps {
    /// Guest RAM, as the guest's device tree describes it.
    fn guest_ram(&self) -> IpaRange;
    /// The hypervisor's own memory `[start, end)`, never mapped to the guest.
    fn hyp_memory(&self) -> (PhysAddr, PhysAddr);
    /// The IPA window in which MMIO is trapped and forwarded.
    fn mmio_window(&self) -> IpaRange;
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
    /// Rules on an MMIO access the guest made at `ipa`.
    fn mmio_access(&mut self, _ipa: Ipa, _write: bool) -> MmioVerdict {
        MmioVerdict::Allow
    }
    /// Writes the service's counters as `key=value` lines.
    ///
    /// # Errors
    /// Whatever `out` returns.
    fn write_stats(&self, _out: &mut dyn Write) -> fmt::Result {
        Ok(())
    }
}

/// How many services can be registered.
pub const MAX_SERVICES: usize = 4;

/// Why registration failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterError {
    /// More than [`MAX_SERVICES`].
    Full,
    /// The function ID is already claimed by another service.
    DuplicateId(u32),
}

/// The registered services.
#[derive(Default)]
pub struct Registry<'s> {
    services: heapless::Vec<&'s mut dyn Service, MAX_SERVICES>,
}

impl<'s> Registry<'s> {
    /// An empty registry.
    pub fn new() -> Self {
        Self { services: heapless::Vec::new() }
    }

    /// Adds a service.
    ///
    /// # Errors
    /// [`RegisterError`] if the registry is full or a function ID is
    /// already taken.
    pub fn register(&mut self, service: &'s mut dyn Service) -> Result<(), RegisterError> {
        for &fid in service.function_ids() {
            if self.services.iter().any(|s| s.function_ids().contains(&fid)) {
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

    /// The service answering `fid`.
    pub fn find(&mut self, fid: u32) -> Option<&mut (dyn Service + 's)> {
        self.services.iter_mut().find(|s| s.function_ids().contains(&fid)).map(|s| &mut **s)
    }

    /// Whether some service answers `fid`.
    pub fn handles(&self, fid: u32) -> bool {
        self.services.iter().any(|s| s.function_ids().contains(&fid))
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
