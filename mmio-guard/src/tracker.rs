// SPDX-License-Identifier: GPL-2.0 OR MIT
//! Reference-counted tracking of the guest's MMIO mappings, at granule
//! resolution, in fixed-capacity storage (usable before the kernel has an
//! allocator).
//!
//! The hypervisor keeps one bit per granule (guarded or not), so two
//! `ioremap`s that share a granule must not lose it on the first
//! `iounmap`. The tracker counts references per granule, stored as sorted,
//! disjoint, coalesced segments `[start, end)` with one count each, and
//! tells the caller exactly which runs become guarded (count 0 -> 1) or
//! unguarded (1 -> 0).

use super::abi::GRANULE;

/// A run of granules with the same reference count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// First byte (granule aligned).
    pub start: u64,
    /// First byte past the run (granule aligned).
    pub end: u64,
    /// Number of live mappings covering every granule of the run (>= 1).
    pub count: u32,
}

/// What the hypervisor must be told about a run of granules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// The run became guarded (count 0 -> 1).
    Guard,
    /// The run is no longer guarded (count 1 -> 0), or a guard is undone.
    Unguard,
}

/// Why a tracker update was refused. The tracker is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrackError {
    /// Empty or wrapping range.
    BadRange,
    /// Not enough segment slots to record the result.
    Full,
    /// Part of an unmapped range was never mapped.
    NotMapped,
    /// A granule's count would overflow.
    Overflow,
}

/// Aligns `[phys, phys + size)` outwards to granules.
///
/// # Errors
/// [`TrackError::BadRange`] if the range is empty or wraps.
pub fn granule_range(phys: u64, size: u64) -> Result<(u64, u64), TrackError> {
    let end = phys.checked_add(size).ok_or(TrackError::BadRange)?;
    let end = end.checked_add(GRANULE - 1).ok_or(TrackError::BadRange)? & !(GRANULE - 1);
    let start = phys & !(GRANULE - 1);
    if size == 0 || start >= end {
        return Err(TrackError::BadRange);
    }
    Ok((start, end))
}

/// The tracker, holding at most `N` segments.
#[derive(Clone, Debug)]
pub struct Tracker<const N: usize> {
    segs: [Segment; N],
    len: usize,
}

impl<const N: usize> Default for Tracker<N> {
    fn default() -> Self {
        Self::new()
    }
}

struct Builder<const N: usize> {
    out: Tracker<N>,
}

impl<const N: usize> Builder<N> {
    fn push(&mut self, start: u64, end: u64, count: u32) -> Result<(), TrackError> {
        if start >= end || count == 0 {
            return Ok(());
        }
        let len = self.out.len;
        if let Some(last) = len.checked_sub(1).and_then(|i| self.out.segs.get_mut(i)) {
            if last.end == start && last.count == count {
                last.end = end;
                return Ok(());
            }
        }
        let slot = self.out.segs.get_mut(len).ok_or(TrackError::Full)?;
        *slot = Segment { start, end, count };
        self.out.len = len + 1;
        Ok(())
    }
}

impl<const N: usize> Tracker<N> {
    /// An empty tracker.
    pub const fn new() -> Self {
        Self {
            segs: [Segment {
                start: 0,
                end: 0,
                count: 0,
            }; N],
            len: 0,
        }
    }

    /// The live segments, in address order.
    pub fn segments(&self) -> &[Segment] {
        self.segs.get(..self.len).unwrap_or(&[])
    }

    /// Number of granules covered by at least one mapping.
    pub fn granules(&self) -> u64 {
        self.segments()
            .iter()
            .map(|s| (s.end - s.start) / GRANULE)
            .sum()
    }

    /// Reference count of the granule containing `addr`.
    pub fn count_at(&self, addr: u64) -> u32 {
        self.segments()
            .iter()
            .find(|s| s.start <= addr && addr < s.end)
            .map_or(0, |s| s.count)
    }

    /// The tracker after adding one reference to `[start, end)`.
    fn added(&self, start: u64, end: u64) -> Result<Self, TrackError> {
        self.changed(start, end, true)
    }

    /// The tracker after dropping one reference from `[start, end)`.
    fn removed(&self, start: u64, end: u64) -> Result<Self, TrackError> {
        self.changed(start, end, false)
    }

    fn changed(&self, start: u64, end: u64, add: bool) -> Result<Self, TrackError> {
        let mut b = Builder { out: Self::new() };
        let mut cursor = 0u64;
        for s in self.segments() {
            // The gap before this segment, inside the range.
            let (gs, ge) = (cursor.max(start), s.start.min(end));
            if gs < ge {
                if !add {
                    return Err(TrackError::NotMapped);
                }
                b.push(gs, ge, 1)?;
            }
            // The segment, split where the range begins and ends.
            let (os, oe) = (s.start.max(start), s.end.min(end));
            if os < oe {
                let count = if add {
                    s.count.checked_add(1).ok_or(TrackError::Overflow)?
                } else {
                    s.count - 1
                };
                b.push(s.start, os, s.count)?;
                b.push(os, oe, count)?;
                b.push(oe, s.end, s.count)?;
            } else {
                b.push(s.start, s.end, s.count)?;
            }
            cursor = s.end;
        }
        let gs = cursor.max(start);
        if gs < end {
            if !add {
                return Err(TrackError::NotMapped);
            }
            b.push(gs, end, 1)?;
        }
        Ok(b.out)
    }

    /// Calls `f` for each maximal run of `[start, end)` that no segment
    /// covers, in order, stopping at the first error.
    fn for_each_gap<E>(
        &self,
        start: u64,
        end: u64,
        mut f: impl FnMut(u64, u64) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut cursor = start;
        for s in self.segments() {
            if s.end <= cursor {
                continue;
            }
            if s.start >= end {
                break;
            }
            if s.start > cursor {
                f(cursor, s.start)?;
            }
            cursor = s.end;
        }
        if cursor < end {
            f(cursor, end)?;
        }
        Ok(())
    }

    /// Calls `f` for each maximal run of `[start, end)` whose count is 1.
    fn for_each_last_ref<E>(
        &self,
        start: u64,
        end: u64,
        mut f: impl FnMut(u64, u64) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut run: Option<(u64, u64)> = None;
        for s in self.segments() {
            let (os, oe) = (s.start.max(start), s.end.min(end));
            if os >= oe {
                continue;
            }
            if s.count == 1 {
                run = match run {
                    Some((rs, re)) if re == os => Some((rs, oe)),
                    Some((rs, re)) => {
                        f(rs, re)?;
                        Some((os, oe))
                    }
                    None => Some((os, oe)),
                };
            }
        }
        if let Some((rs, re)) = run {
            f(rs, re)?;
        }
        Ok(())
    }

    /// Adds a mapping of `[start, end)` (granule aligned). `change` is
    /// called with [`Change::Guard`] for every run that becomes guarded;
    /// if that fails, it is called with [`Change::Unguard`] for the runs
    /// already guarded (results ignored) and the tracker is left
    /// unchanged.
    ///
    /// # Errors
    /// The tracker's own error, or `change`'s.
    pub fn map<E: From<TrackError>>(
        &mut self,
        start: u64,
        end: u64,
        mut change: impl FnMut(Change, u64, u64) -> Result<(), E>,
    ) -> Result<(), E> {
        if start >= end || start % GRANULE != 0 || end % GRANULE != 0 {
            return Err(TrackError::BadRange.into());
        }
        let next = self.added(start, end)?;
        let mut failed_at = None;
        let result = self.for_each_gap(start, end, |s, e| {
            change(Change::Guard, s, e).inspect_err(|_| failed_at = Some(s))
        });
        if let Err(err) = result {
            let stop = failed_at.unwrap_or(end);
            let _ = self.for_each_gap(start, stop, |s, e| {
                let _ = change(Change::Unguard, s, e.min(stop));
                Ok::<(), ()>(())
            });
            return Err(err);
        }
        *self = next;
        Ok(())
    }

    /// Drops a mapping of `[start, end)`. `unguard` is called for every
    /// run whose last reference goes; the tracker is updated even if it
    /// fails (the guest no longer uses the range either way), and the
    /// first failure is returned.
    ///
    /// # Errors
    /// [`TrackError::NotMapped`] (tracker unchanged, nothing called) or
    /// `unguard`'s first error.
    pub fn unmap<E: From<TrackError>>(
        &mut self,
        start: u64,
        end: u64,
        mut unguard: impl FnMut(u64, u64) -> Result<(), E>,
    ) -> Result<(), E> {
        if start >= end || start % GRANULE != 0 || end % GRANULE != 0 {
            return Err(TrackError::BadRange.into());
        }
        let next = self.removed(start, end)?;
        let mut first_err = None;
        let _ = self.for_each_last_ref(start, end, |s, e| {
            if let Err(err) = unguard(s, e) {
                first_err.get_or_insert(err);
            }
            Ok::<(), ()>(())
        });
        *self = next;
        first_err.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
// An explicit path: the kernel's rustfmtcheck formats each file as if
// it were a crate root.
#[path = "tracker/tests.rs"]
mod tests;
