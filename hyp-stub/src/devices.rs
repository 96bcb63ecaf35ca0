// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The device windows: where the guest's MMIO is trapped and may be
//! forwarded to the machine, taken from the device tree the hypervisor
//! is given rather than from constants.
//!
//! On QEMU `virt` they are the low devices (flash, GIC and its ITS, UART,
//! RTC, fw-cfg, GPIO, virtio-mmio, the platform bus) and the PCIe host's
//! windows: its ECAM (at 256 GiB when QEMU uses its high layout) and its
//! I/O, 32-bit and 64-bit memory ranges, where the guest kernel places
//! device BARs. Anything else outside guest RAM is refused.
//!
//! Windows are widened to whole pages, because stage 2 and the MMIO guard
//! work in pages, then merged where they overlap or touch. The result is
//! sorted and disjoint, so a range lies inside the windows exactly when it
//! lies inside one of them, and a lookup is a binary search (it runs on
//! every trapped access).

use core::fmt;

use crate::addr::{Ipa, IpaRange};
use crate::fdt::{Fdt, FdtError};
use crate::stage2::PAGE_SIZE;

/// Most disjoint windows kept (QEMU `virt` needs about a dozen).
pub const MAX_WINDOWS: usize = 32;

/// Why the device windows could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowError {
    /// The device tree does not parse.
    Fdt(FdtError),
    /// A device's range is empty or wraps the address space.
    BadRange {
        /// Its base.
        base: u64,
        /// Its size.
        size: u64,
    },
    /// A device's range overlaps memory: the tree contradicts itself, and
    /// forwarding it would expose RAM or the hypervisor.
    OverlapsMemory {
        /// Its base.
        base: u64,
        /// Its size.
        size: u64,
    },
    /// More than [`MAX_WINDOWS`] disjoint windows.
    TooMany,
    /// No device at all.
    None,
}

impl From<FdtError> for WindowError {
    fn from(e: FdtError) -> Self {
        Self::Fdt(e)
    }
}

impl fmt::Display for WindowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fdt(e) => write!(f, "device tree: {e:?}"),
            Self::BadRange { base, size } => {
                write!(f, "device range {base:#x}+{size:#x} is empty or wraps")
            }
            Self::OverlapsMemory { base, size } => {
                write!(f, "device range {base:#x}+{size:#x} overlaps memory")
            }
            Self::TooMany => write!(f, "more than {MAX_WINDOWS} device windows"),
            Self::None => write!(f, "no device in the device tree"),
        }
    }
}

/// Sorted, disjoint, non-adjacent, page-aligned IPA windows (IPA == PA).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceWindows {
    windows: [(u64, u64); MAX_WINDOWS],
    len: usize,
}

impl DeviceWindows {
    /// No windows.
    pub const fn empty() -> Self {
        Self {
            windows: [(0, 0); MAX_WINDOWS],
            len: 0,
        }
    }

    /// The windows of every device in `fdt` (see [`Fdt::device_ranges`]),
    /// none of which may overlap `memory` (all of RAM, the hypervisor's
    /// part included).
    ///
    /// # Errors
    /// [`WindowError::Fdt`] if the tree does not parse,
    /// [`WindowError::BadRange`] for an empty or wrapping range,
    /// [`WindowError::OverlapsMemory`] for a device over memory,
    /// [`WindowError::TooMany`] past [`MAX_WINDOWS`],
    /// [`WindowError::None`] if the tree names no device.
    pub fn from_fdt(fdt: &Fdt<'_>, memory: IpaRange) -> Result<Self, WindowError> {
        let mut w = Self::empty();
        let mut failed = None;
        fdt.device_ranges(|_, base, size| {
            if failed.is_none() {
                failed = w.add(base, size, memory).err();
            }
        })?;
        match failed {
            Some(e) => Err(e),
            None if w.len == 0 => Err(WindowError::None),
            None => Ok(w),
        }
    }

    /// Adds `[base, base + size)`, widened to pages, merging it with the
    /// windows it overlaps or touches.
    ///
    /// # Errors
    /// As [`DeviceWindows::from_fdt`].
    pub fn add(&mut self, base: u64, size: u64, memory: IpaRange) -> Result<(), WindowError> {
        let bad = WindowError::BadRange { base, size };
        let range = IpaRange::new(Ipa(base), size).ok_or(bad)?;
        if range.overlaps(&memory) {
            return Err(WindowError::OverlapsMemory { base, size });
        }
        let mut s = base & !(PAGE_SIZE - 1);
        let mut e = range
            .end()
            .get()
            .checked_next_multiple_of(PAGE_SIZE)
            .ok_or(bad)?;
        let mut kept = Self::empty();
        for &(ws, we) in self.iter_raw() {
            if we < s || ws > e {
                kept.push((ws, we))?;
            } else {
                s = s.min(ws);
                e = e.max(we);
            }
        }
        // Widening to pages must not have reached memory either.
        if IpaRange::new(Ipa(s), e - s).is_some_and(|r| r.overlaps(&memory)) {
            return Err(WindowError::OverlapsMemory { base, size });
        }
        let at = kept
            .iter_raw()
            .position(|&(ws, _)| ws > s)
            .unwrap_or(kept.len);
        kept.push((s, e))?;
        kept.windows[at..kept.len].rotate_right(1);
        *self = kept;
        Ok(())
    }

    fn push(&mut self, w: (u64, u64)) -> Result<(), WindowError> {
        let slot = self.windows.get_mut(self.len).ok_or(WindowError::TooMany)?;
        *slot = w;
        self.len += 1;
        Ok(())
    }

    fn iter_raw(&self) -> core::slice::Iter<'_, (u64, u64)> {
        self.windows[..self.len].iter()
    }

    /// The windows, lowest first.
    pub fn iter(&self) -> impl Iterator<Item = IpaRange> + '_ {
        self.iter_raw()
            .filter_map(|&(s, e)| IpaRange::new(Ipa(s), e - s))
    }

    /// The window holding `ipa`, if any.
    pub fn find(&self, ipa: Ipa) -> Option<IpaRange> {
        let a = ipa.get();
        let after = self.windows[..self.len].partition_point(|&(s, _)| s <= a);
        let (s, e) = *self.windows[..self.len].get(after.checked_sub(1)?)?;
        (a < e).then(|| IpaRange::new(Ipa(s), e - s)).flatten()
    }

    /// Whether `ipa` lies in a window.
    pub fn contains(&self, ipa: Ipa) -> bool {
        self.find(ipa).is_some()
    }

    /// Whether all of `range` lies in one window (windows never touch, so
    /// a range spanning two crosses a gap).
    pub fn covers(&self, range: &IpaRange) -> bool {
        self.find(range.start()).is_some_and(|w| w.covers(range))
    }

    /// Whether any window shares a byte with `range`.
    pub fn overlaps(&self, range: &IpaRange) -> bool {
        self.iter().any(|w| w.overlaps(range))
    }
}

#[cfg(test)]
mod tests;
