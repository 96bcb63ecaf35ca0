// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The guest side of the MMIO guard: discovery, enrollment, and turning
//! `ioremap`/`iounmap` into the fewest hypercalls that keep the
//! hypervisor's per-granule state equal to the union of live mappings.
//!
//! The hypercall transport is a trait: the kernel implements it with real
//! SMCCC calls, host tests with a fake hypervisor.

use super::abi;
use super::tracker::{granule_range, Change, TrackError, Tracker};

/// Issues one SMCCC call and returns x0..x3.
pub trait Hypervisor {
    /// Calls `fid` with x1..x3 = `args`.
    fn call(&mut self, fid: u32, args: [u64; 3]) -> [u64; 4];
}

/// Why the guard is not available.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// The hypervisor is not KVM-compatible (vendor-hyp UID mismatch).
    NotKvm,
    /// It does not offer INFO, ENROLL, MAP and UNMAP.
    NoService,
    /// Its guard granule is not the size this guest tracks.
    Granule(u64),
}

/// What discovery found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Discovery {
    /// Guard granule in bytes.
    pub granule: u64,
    /// Whether MAP_RANGE/UNMAP_RANGE are offered.
    pub ranged: bool,
}

/// Finds out whether the hypervisor offers the MMIO guard.
///
/// # Errors
/// [`Unavailable`] saying why not.
pub fn discover(hv: &mut dyn Hypervisor) -> Result<Discovery, Unavailable> {
    if hv.call(abi::VENDOR_HYP_UID, [0; 3]) != abi::KVM_UID {
        return Err(Unavailable::NotKvm);
    }
    let bits = hv.call(abi::VENDOR_HYP_KVM_FEATURES, [0; 3]);
    let has = |fid| abi::advertised(bits, fid);
    if !(has(abi::INFO) && has(abi::ENROLL) && has(abi::MAP) && has(abi::UNMAP)) {
        return Err(Unavailable::NoService);
    }
    let granule = hv.call(abi::INFO, [0; 3])[0];
    if granule != abi::GRANULE {
        return Err(Unavailable::Granule(granule));
    }
    Ok(Discovery {
        granule,
        ranged: has(abi::MAP_RANGE) && has(abi::UNMAP_RANGE),
    })
}

/// Why a guard operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuardError {
    /// The tracker refused (bad range, no room, never mapped).
    Track(TrackError),
    /// The hypervisor refused a call with this x0.
    Refused {
        /// Function that was refused.
        fid: u32,
        /// Its result.
        ret: u64,
    },
}

impl From<TrackError> for GuardError {
    fn from(e: TrackError) -> Self {
        GuardError::Track(e)
    }
}

/// Counters the guest exposes (sysfs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuardStats {
    /// Hypercalls issued for map/unmap.
    pub hypercalls: u64,
    /// Successful map requests.
    pub maps: u64,
    /// Successful unmap requests.
    pub unmaps: u64,
    /// Requests that failed (each one reported to the caller).
    pub failures: u64,
}

/// The guard: the tracker plus how to talk to the hypervisor.
#[derive(Clone, Debug)]
pub struct Guard<const N: usize> {
    tracker: Tracker<N>,
    ranged: bool,
    stats: GuardStats,
}

fn checked(fid: u32, ret: [u64; 4]) -> Result<(), GuardError> {
    match ret[0] {
        abi::RET_SUCCESS => Ok(()),
        ret => Err(GuardError::Refused { fid, ret }),
    }
}

impl<const N: usize> Guard<N> {
    /// A guard that uses ranged calls if `ranged`.
    pub const fn new(ranged: bool) -> Self {
        Self {
            tracker: Tracker::new(),
            ranged,
            stats: GuardStats {
                hypercalls: 0,
                maps: 0,
                unmaps: 0,
                failures: 0,
            },
        }
    }

    /// The tracked mappings.
    pub fn tracker(&self) -> &Tracker<N> {
        &self.tracker
    }

    /// The counters.
    pub fn stats(&self) -> GuardStats {
        self.stats
    }

    /// Whether ranged calls are used.
    pub fn ranged(&self) -> bool {
        self.ranged
    }

    /// Chooses ranged or per-granule calls (after discovery).
    pub fn set_ranged(&mut self, ranged: bool) {
        self.ranged = ranged;
    }

    /// Records a mapping made before the hypervisor could be asked (the
    /// earlycon fixmap, set up while the command line is parsed), without
    /// a hypercall; [`Self::sync`] tells the hypervisor later.
    ///
    /// # Errors
    /// [`GuardError::Track`] if the range is bad or there is no room.
    pub fn note(&mut self, phys: u64, size: u64) -> Result<(), GuardError> {
        let (start, end) = granule_range(phys, size)?;
        self.tracker
            .map(start, end, |_, _, _| Ok::<(), GuardError>(()))
    }

    /// Guards every tracked range at the hypervisor: called once after
    /// discovery, before enrolling, so that early mappings keep working.
    ///
    /// # Errors
    /// The first refusal; ranges guarded before it stay guarded.
    pub fn sync(&mut self, hv: &mut dyn Hypervisor) -> Result<(), GuardError> {
        let mut calls = 0u64;
        let mut result = Ok(());
        for seg in self.tracker.segments() {
            result = guard(&mut *hv, self.ranged, seg.start, seg.end, &mut calls);
            if result.is_err() {
                break;
            }
        }
        self.stats.hypercalls += calls;
        if result.is_err() {
            self.stats.failures += 1;
        }
        result
    }

    /// Enrolls: from now on the hypervisor aborts unguarded MMIO.
    ///
    /// # Errors
    /// [`GuardError::Refused`] if the hypervisor refuses.
    pub fn enroll(&mut self, hv: &mut dyn Hypervisor) -> Result<(), GuardError> {
        self.stats.hypercalls += 1;
        checked(abi::ENROLL, hv.call(abi::ENROLL, [0; 3]))
    }

    /// Tells the hypervisor about a new mapping of `[phys, phys + size)`.
    /// On error nothing changed, in the tracker or in the hypervisor.
    ///
    /// # Errors
    /// [`GuardError`] from the tracker or the hypervisor.
    pub fn map(&mut self, hv: &mut dyn Hypervisor, phys: u64, size: u64) -> Result<(), GuardError> {
        let ranged = self.ranged;
        let mut calls = 0u64;
        let (start, end) = match granule_range(phys, size) {
            Ok(r) => r,
            Err(e) => {
                self.stats.failures += 1;
                return Err(e.into());
            }
        };
        let result = self.tracker.map(start, end, |change, s, e| match change {
            Change::Guard => guard(&mut *hv, ranged, s, e, &mut calls),
            Change::Unguard => unguard(&mut *hv, ranged, s, e, &mut calls),
        });
        self.stats.hypercalls += calls;
        match result {
            Ok(()) => self.stats.maps += 1,
            Err(_) => self.stats.failures += 1,
        }
        result
    }

    /// Tells the hypervisor a mapping of `[phys, phys + size)` is gone.
    ///
    /// # Errors
    /// [`GuardError`] from the tracker or the hypervisor.
    pub fn unmap(
        &mut self,
        hv: &mut dyn Hypervisor,
        phys: u64,
        size: u64,
    ) -> Result<(), GuardError> {
        let ranged = self.ranged;
        let mut calls = 0u64;
        let result = granule_range(phys, size)
            .map_err(GuardError::from)
            .and_then(|(start, end)| {
                self.tracker.unmap(start, end, |s, e| {
                    unguard(&mut *hv, ranged, s, e, &mut calls)
                })
            });
        self.stats.hypercalls += calls;
        match result {
            Ok(()) => self.stats.unmaps += 1,
            Err(_) => self.stats.failures += 1,
        }
        result
    }
}

/// Guards `[s, e)`: one MAP_RANGE, or one MAP per granule (undoing the
/// granules already done if one fails).
fn guard(
    hv: &mut dyn Hypervisor,
    ranged: bool,
    s: u64,
    e: u64,
    calls: &mut u64,
) -> Result<(), GuardError> {
    if ranged {
        *calls += 1;
        return checked(abi::MAP_RANGE, hv.call(abi::MAP_RANGE, [s, e - s, 0]));
    }
    let mut g = s;
    while g < e {
        *calls += 1;
        if let Err(err) = checked(abi::MAP, hv.call(abi::MAP, [g, 0, 0])) {
            let _ = unguard(hv, false, s, g, calls);
            return Err(err);
        }
        g += abi::GRANULE;
    }
    Ok(())
}

/// Unguards `[s, e)`: one UNMAP_RANGE, or one UNMAP per granule.
fn unguard(
    hv: &mut dyn Hypervisor,
    ranged: bool,
    s: u64,
    e: u64,
    calls: &mut u64,
) -> Result<(), GuardError> {
    if ranged {
        *calls += 1;
        return checked(abi::UNMAP_RANGE, hv.call(abi::UNMAP_RANGE, [s, e - s, 0]));
    }
    let mut first = Ok(());
    let mut g = s;
    while g < e {
        *calls += 1;
        let r = checked(abi::UNMAP, hv.call(abi::UNMAP, [g, 0, 0]));
        if first.is_ok() {
            first = r;
        }
        g += abi::GRANULE;
    }
    first
}

#[cfg(test)]
// An explicit path: the kernel's rustfmtcheck formats each file as if
// it were a crate root.
#[path = "guard/tests.rs"]
mod tests;
