// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The guest's MMIO guard state: what the command line asked for, what the
//! hypervisor offered, and the guard itself. The C hook points call into
//! this through `kernel/pvguard.rs`, under one lock.

use core::fmt::{self, Write};

use crate::cmdline::Mode;
use crate::mmio_guard::guard::{self, Guard, GuardError, Hypervisor, Unavailable};
use crate::mmio_guard::tracker::{Segment, TrackError};

/// How many disjoint MMIO ranges the guest can track. Storage is static:
/// the first mappings happen before the kernel has an allocator.
pub const CAPACITY: usize = 64;

/// Where the guard stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// `pvguard=` not given (or `off`).
    NotRequested,
    /// Requested, but the hypervisor does not offer the guard.
    Unavailable(Unavailable),
    /// Requested, but no KVM-compatible hypervisor answered at all.
    NoHypervisor,
    /// Requested, but another driver holds the kernel's ioremap hook.
    HookBusy,
    /// The hypervisor refused to guard the early mappings or to enroll.
    Refused(GuardError),
    /// Enrolled: unguarded MMIO now aborts.
    Enrolled,
}

/// What the caller must do after [`MmioState::init`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitOutcome {
    /// Nothing more: the guest runs unguarded (status says why).
    Unguarded,
    /// Install the ioremap/iounmap hooks.
    Enrolled,
    /// `pvguard=strict` and the guard is unavailable: refuse to boot.
    RefuseToBoot,
}

/// The guest's MMIO guard.
pub struct MmioState {
    mode: Mode,
    status: Status,
    guard: Guard<CAPACITY>,
    /// `ioremap`s refused because the guard could not track them.
    refused_maps: u64,
}

impl Default for MmioState {
    fn default() -> Self {
        Self::new()
    }
}

impl MmioState {
    /// Nothing requested yet.
    pub const fn new() -> Self {
        Self {
            mode: Mode::Off,
            status: Status::NotRequested,
            guard: Guard::new(false),
            refused_maps: 0,
        }
    }

    /// Records the command line's request.
    pub fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
    }

    /// The requested mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The status.
    pub fn status(&self) -> Status {
        self.status
    }

    /// Records a mapping made before discovery (earlycon).
    ///
    /// # Errors
    /// [`GuardError::Track`] if there is no room: the caller reports it.
    pub fn note_early(&mut self, phys: u64, size: u64) -> Result<(), GuardError> {
        self.guard.note(phys, size)
    }

    /// Whether the command line asked for the guard.
    pub fn wanted(&self) -> bool {
        self.mode != Mode::Off
    }

    /// Ends the attempt because a prerequisite is missing (no hypervisor
    /// answered, or the ioremap hook is taken).
    pub fn give_up(&mut self, status: Status) -> InitOutcome {
        if self.mode == Mode::Off {
            return InitOutcome::Unguarded;
        }
        self.status = status;
        match self.mode {
            Mode::Strict => InitOutcome::RefuseToBoot,
            _ => InitOutcome::Unguarded,
        }
    }

    /// Discovers the hypervisor's guard and enrolls, as the command line
    /// asked. Called once, early, before the first `ioremap`.
    pub fn init(&mut self, hv: &mut dyn Hypervisor) -> InitOutcome {
        if self.mode == Mode::Off {
            self.status = Status::NotRequested;
            return InitOutcome::Unguarded;
        }
        let result = guard::discover(hv)
            .map_err(Status::Unavailable)
            .and_then(|found| {
                self.guard.set_ranged(found.ranged);
                self.guard.sync(hv).map_err(Status::Refused)?;
                self.guard.enroll(hv).map_err(Status::Refused)
            });
        match result {
            Ok(()) => {
                self.status = Status::Enrolled;
                InitOutcome::Enrolled
            }
            Err(status) => self.give_up(status),
        }
    }

    /// An `ioremap` of `[phys, phys + size)`. Once enrolled, the mapping
    /// is guarded before it is used; if that fails the `ioremap` must
    /// fail — a mapping is never left unguarded.
    ///
    /// # Errors
    /// The reason the range could not be guarded.
    pub fn ioremap(
        &mut self,
        hv: &mut dyn Hypervisor,
        phys: u64,
        size: u64,
    ) -> Result<(), GuardError> {
        if self.status != Status::Enrolled {
            return Ok(());
        }
        self.guard
            .map(hv, phys, size)
            .inspect_err(|_| self.refused_maps += 1)
    }

    /// An `iounmap` of `[phys, phys + size)`.
    ///
    /// # Errors
    /// The reason the hypervisor could not be told (the mapping is gone
    /// either way).
    pub fn iounmap(
        &mut self,
        hv: &mut dyn Hypervisor,
        phys: u64,
        size: u64,
    ) -> Result<(), GuardError> {
        if self.status != Status::Enrolled {
            return Ok(());
        }
        self.guard.unmap(hv, phys, size)
    }

    /// The text of `status`: one line.
    ///
    /// # Errors
    /// Whatever `w` returns.
    pub fn write_status(&self, w: &mut dyn Write) -> fmt::Result {
        match self.status {
            Status::Enrolled => writeln!(w, "enrolled"),
            Status::NotRequested => {
                writeln!(
                    w,
                    "disabled: not requested on the kernel command line (pvguard=on)"
                )
            }
            Status::Unavailable(why) => {
                let why = match why {
                    Unavailable::NotKvm => "the hypervisor does not offer KVM's vendor services",
                    Unavailable::NoService => "the hypervisor does not offer the MMIO guard",
                    Unavailable::Granule(_) => "the hypervisor's guard granule is not 4 KiB",
                };
                writeln!(w, "unavailable: {why}")
            }
            Status::NoHypervisor => {
                writeln!(
                    w,
                    "unavailable: no KVM-compatible hypervisor answered over HVC"
                )
            }
            Status::HookBusy => writeln!(w, "unavailable: another driver holds the ioremap hook"),
            Status::Refused(e) => writeln!(w, "refused: {}", Reason(e)),
        }
    }

    /// The ranges the hypervisor guards: the tracker's, once enrolled.
    /// Before that (or without a guard, or with `pvguard` off) the
    /// tracker may hold the early console's page, which nothing guards.
    fn guarded(&self) -> &[Segment] {
        if self.status == Status::Enrolled {
            self.guard.tracker().segments()
        } else {
            &[]
        }
    }

    /// The text of `ranges`: one guarded range per line (none unless
    /// enrolled).
    ///
    /// # Errors
    /// Whatever `w` returns.
    pub fn write_ranges(&self, w: &mut dyn Write) -> fmt::Result {
        for s in self.guarded() {
            writeln!(w, "{:#010x}-{:#010x} refs={}", s.start, s.end, s.count)?;
        }
        Ok(())
    }

    /// The text of `stats`: `key=value` lines.
    ///
    /// # Errors
    /// Whatever `w` returns.
    pub fn write_stats(&self, w: &mut dyn Write) -> fmt::Result {
        let s = self.guard.stats();
        let t = self.guard.tracker();
        writeln!(w, "mode={}", self.mode.name())?;
        writeln!(
            w,
            "calls={}",
            if self.guard.ranged() {
                "ranged"
            } else {
                "per-granule"
            }
        )?;
        let guarded = self.guarded();
        writeln!(w, "ranges={}", guarded.len())?;
        writeln!(w, "capacity={CAPACITY}")?;
        writeln!(
            w,
            "granules={}",
            if guarded.is_empty() { 0 } else { t.granules() }
        )?;
        writeln!(w, "hypercalls={}", s.hypercalls)?;
        writeln!(w, "maps={}", s.maps)?;
        writeln!(w, "unmaps={}", s.unmaps)?;
        writeln!(w, "failures={}", s.failures)?;
        writeln!(w, "refused_ioremaps={}", self.refused_maps)
    }
}

/// A [`GuardError`] in words.
pub struct Reason(pub GuardError);

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            GuardError::Track(TrackError::Full) => {
                write!(
                    f,
                    "no room to track another MMIO range (capacity {CAPACITY})"
                )
            }
            GuardError::Track(TrackError::BadRange) => write!(f, "empty or wrapping range"),
            GuardError::Track(TrackError::NotMapped) => write!(f, "range was never mapped"),
            GuardError::Track(TrackError::Overflow) => {
                write!(f, "too many mappings of one granule")
            }
            GuardError::Refused { fid, ret } => {
                write!(f, "hypervisor refused call {fid:#x} with {}", ret as i64)
            }
        }
    }
}

#[cfg(test)]
// An explicit path: the kernel's rustfmtcheck formats each file as if
// it were a crate root.
#[path = "mmio/tests.rs"]
mod tests;
