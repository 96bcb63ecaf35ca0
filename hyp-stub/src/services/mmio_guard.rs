// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The MMIO guard service. The guest names the MMIO it uses; once the
//! guard is enforcing (after ENROLL, or from boot for a protected VM, as
//! pKVM does), any trapped MMIO outside those granules is refused and the
//! guest gets an external abort instead of a device model's answer.
//!
//! State is one bit per granule, kept as sorted, coalesced ranges, so it
//! grows with what the guest mapped, not with the address space. The
//! guest refcounts shared granules (see the `mmio-guard` crate).

use core::fmt::{self, Write};

use mmio_guard::abi;

use crate::addr::{Ipa, IpaRange};
use crate::devices::DeviceWindows;
use crate::service::{Call, CallResult, HypOps, MmioVerdict, Service, ServiceError};

/// When the guard starts refusing unguarded MMIO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// After the guest calls ENROLL (the 2021 KVM series; unenlightened
    /// guests keep working).
    AfterEnroll,
    /// From the first instruction (pKVM's protected VMs; upstream's guest
    /// driver never enrolls).
    FromBoot,
}

/// Maximum number of disjoint guarded ranges.
pub const MAX_RANGES: usize = 256;

/// Counters of the service.
#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    map_calls: u64,
    unmap_calls: u64,
    refused: u64,
    not_mapped: u64,
    full: u64,
    blocked: u64,
    shares: u64,
}

/// The service.
pub struct MmioGuard {
    policy: Policy,
    enrolled: bool,
    devices: Option<DeviceWindows>,
    ram: Option<IpaRange>,
    ranges: heapless::Vec<(u64, u64), MAX_RANGES>,
    counters: Counters,
}

const OK: CallResult = [abi::RET_SUCCESS, 0, 0, 0];
const INVALID: CallResult = [abi::RET_INVALID_PARAMETER, 0, 0, 0];

impl MmioGuard {
    /// A service with the given policy.
    pub const fn new(policy: Policy) -> Self {
        Self {
            policy,
            enrolled: false,
            devices: None,
            ram: None,
            ranges: heapless::Vec::new(),
            counters: Counters {
                map_calls: 0,
                unmap_calls: 0,
                refused: 0,
                not_mapped: 0,
                full: 0,
                blocked: 0,
                shares: 0,
            },
        }
    }

    /// Whether unguarded MMIO is refused now.
    pub fn enforcing(&self) -> bool {
        self.enrolled || self.policy == Policy::FromBoot
    }

    /// Whether the granule containing `ipa` is guarded.
    pub fn is_guarded(&self, ipa: Ipa) -> bool {
        let a = ipa.get();
        // Sorted and disjoint: only the last range starting at or below
        // `a` can hold it (this runs on every trapped MMIO access).
        let after = self.ranges.partition_point(|&(s, _)| s <= a);
        after
            .checked_sub(1)
            .and_then(|i| self.ranges.get(i))
            .is_some_and(|&(_, e)| a < e)
    }

    /// Whether the guest has called ENROLL.
    pub fn enrolled(&self) -> bool {
        self.enrolled
    }

    /// The guarded ranges, sorted and disjoint.
    pub fn guarded(&self) -> impl Iterator<Item = IpaRange> + '_ {
        self.ranges
            .iter()
            .filter_map(|&(s, e)| IpaRange::new(Ipa(s), e - s))
    }

    /// Number of guarded granules.
    pub fn granules(&self) -> u64 {
        self.ranges
            .iter()
            .map(|(s, e)| (e - s) / abi::GRANULE)
            .sum()
    }

    /// The range `[ipa, ipa + size)` if the guest may guard it: granule
    /// aligned, non-empty, not wrapping and inside one device window (so
    /// never RAM or hypervisor memory). A window may lie above the stage-2
    /// IPA space (QEMU's 64-bit PCI window at 512 GiB): the guard keeps
    /// its own list and never maps devices at stage 2, and the guest's
    /// accesses there fault to the hypervisor like any other.
    fn valid_range(&self, ipa: u64, size: u64) -> Option<(u64, u64)> {
        let range = IpaRange::new(Ipa(ipa), size)?;
        let devices = self.devices.as_ref()?;
        let aligned = ipa.is_multiple_of(abi::GRANULE) && size.is_multiple_of(abi::GRANULE);
        let not_ram = self.ram.is_none_or(|ram| !ram.overlaps(&range));
        (aligned && not_ram && devices.covers(&range)).then_some((ipa, ipa + size))
    }

    fn insert(&mut self, s: u64, e: u64) -> Result<(), ()> {
        // Merge with every range that overlaps or touches [s, e).
        let (mut ns, mut ne) = (s, e);
        let mut kept: heapless::Vec<(u64, u64), MAX_RANGES> = heapless::Vec::new();
        for &(rs, re) in self.ranges.iter() {
            if re < ns || rs > ne {
                kept.push((rs, re)).map_err(|_| ())?;
            } else {
                ns = ns.min(rs);
                ne = ne.max(re);
            }
        }
        let at = kept
            .iter()
            .position(|&(rs, _)| rs > ns)
            .unwrap_or(kept.len());
        kept.insert(at, (ns, ne)).map_err(|_| ())?;
        self.ranges = kept;
        Ok(())
    }

    fn remove(&mut self, s: u64, e: u64) -> CallResult {
        let Some(i) = self.ranges.iter().position(|&(rs, re)| rs <= s && e <= re) else {
            self.counters.not_mapped += 1;
            return INVALID;
        };
        let (rs, re) = self.ranges[i];
        match (rs < s, e < re) {
            (false, false) => {
                self.ranges.remove(i);
            }
            (true, false) => self.ranges[i].1 = s,
            (false, true) => self.ranges[i].0 = e,
            (true, true) => {
                if self.ranges.insert(i + 1, (e, re)).is_err() {
                    self.counters.full += 1;
                    return INVALID;
                }
                self.ranges[i].1 = s;
            }
        }
        OK
    }

    fn map(&mut self, ipa: u64, size: u64, attrs: u64) -> CallResult {
        self.counters.map_calls += 1;
        let Some((s, e)) = self
            .valid_range(ipa, size)
            .filter(|_| attrs <= abi::MAX_ATTRS)
        else {
            self.counters.refused += 1;
            return INVALID;
        };
        if self.insert(s, e).is_err() {
            self.counters.full += 1;
            return INVALID;
        }
        OK
    }

    fn unmap(&mut self, ipa: u64, size: u64) -> CallResult {
        self.counters.unmap_calls += 1;
        let Some((s, e)) = self.valid_range(ipa, size) else {
            self.counters.refused += 1;
            return INVALID;
        };
        self.remove(s, e)
    }

    fn share(&mut self, ipa: u64) -> CallResult {
        let granule = IpaRange::new(Ipa(ipa), abi::GRANULE);
        match (granule, self.ram) {
            (Some(g), Some(ram)) if ipa.is_multiple_of(abi::GRANULE) && ram.covers(&g) => {
                self.counters.shares += 1;
                OK
            }
            _ => {
                self.counters.refused += 1;
                INVALID
            }
        }
    }
}

impl Service for MmioGuard {
    fn name(&self) -> &'static str {
        "mmio_guard"
    }

    fn function_ids(&self) -> &'static [u32] {
        // Memory sharing only means something to a protected VM; offering
        // it elsewhere would make upstream's pKVM driver claim the
        // kernel's single ioremap hook.
        match self.policy {
            Policy::AfterEnroll => &abi::ENROLLED_GUEST,
            Policy::FromBoot => &abi::PROTECTED_VM,
        }
    }

    fn init(&mut self, ops: &mut dyn HypOps) -> Result<(), ServiceError> {
        let devices = *ops.device_windows();
        if devices.overlaps(&ops.guest_ram()) {
            return Err(ServiceError::Misconfigured(
                "a device window overlaps guest RAM",
            ));
        }
        self.devices = Some(devices);
        self.ram = Some(ops.guest_ram());
        Ok(())
    }

    fn call(&mut self, call: &Call, _ops: &mut dyn HypOps) -> CallResult {
        let [a1, a2, a3, ..] = call.args;
        match call.fid {
            abi::HYP_MEMINFO | abi::INFO => [abi::GRANULE, 0, 0, 0],
            abi::ENROLL => {
                self.enrolled = true;
                OK
            }
            abi::MAP => self.map(a1, abi::GRANULE, a2),
            abi::MAP_RANGE => self.map(a1, a2, a3),
            abi::UNMAP => self.unmap(a1, abi::GRANULE),
            abi::UNMAP_RANGE => self.unmap(a1, a2),
            abi::MEM_SHARE | abi::MEM_UNSHARE if self.policy == Policy::FromBoot => self.share(a1),
            _ => [abi::RET_NOT_SUPPORTED, 0, 0, 0],
        }
    }

    fn mmio_access(&mut self, ipa: Ipa, _write: bool) -> MmioVerdict {
        if self.enforcing() && !self.is_guarded(ipa) {
            self.counters.blocked += 1;
            MmioVerdict::Deny
        } else {
            MmioVerdict::Allow
        }
    }

    fn write_stats(&self, out: &mut dyn Write) -> fmt::Result {
        let c = &self.counters;
        writeln!(
            out,
            "mmio_guard_policy={}",
            match self.policy {
                Policy::AfterEnroll => "after-enroll",
                Policy::FromBoot => "from-boot",
            }
        )?;
        writeln!(out, "mmio_guard_enrolled={}", u8::from(self.enrolled))?;
        writeln!(out, "mmio_guard_enforcing={}", u8::from(self.enforcing()))?;
        writeln!(out, "mmio_guard_hypercalls={}", c.map_calls + c.unmap_calls)?;
        writeln!(out, "mmio_guard_map_calls={}", c.map_calls)?;
        writeln!(out, "mmio_guard_unmap_calls={}", c.unmap_calls)?;
        writeln!(out, "mmio_guard_ranges={}", self.ranges.len())?;
        writeln!(out, "mmio_guard_granules={}", self.granules())?;
        writeln!(out, "mmio_guard_blocked={}", c.blocked)?;
        writeln!(out, "mmio_guard_refused={}", c.refused)?;
        writeln!(out, "mmio_guard_not_mapped={}", c.not_mapped)?;
        writeln!(out, "mmio_guard_full={}", c.full)?;
        writeln!(out, "mmio_guard_shares={}", c.shares)
    }

    fn write_summary(&self, out: &mut dyn Write) -> fmt::Result {
        let c = &self.counters;
        write!(out, "  MMIO guard:     ")?;
        match (self.enrolled, self.policy) {
            (true, _) => write!(out, "enrolled, enforcing")?,
            (false, Policy::FromBoot) => write!(out, "enforcing from boot (protected VM)")?,
            (false, Policy::AfterEnroll) => {
                return writeln!(out, "not enrolled: emulated MMIO is not guarded")
            }
        }
        writeln!(
            out,
            "; {} ranges ({} granules) guarded, {} map/unmap calls",
            self.ranges.len(),
            self.granules(),
            c.map_calls + c.unmap_calls
        )?;
        writeln!(
            out,
            "                  {} unguarded accesses blocked, {} calls refused",
            c.blocked, c.refused
        )
    }
}

#[cfg(test)]
mod tests;
