// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The guest's side of kernel protect: reporting the kernel layout and
//! asking the hypervisor to enable (and check) protection.
//!
//! The transport is the [`Hypercall`] trait: the kernel implements it
//! with real SMCCC calls through its conduit, host tests with a fake
//! hypervisor.

use super::abi::{
    KpError, RegionType, SiteTable, TextPatch, ASSET_INFO, ASSET_INFO_COMPACT,
    ENABLE_VM_PROTECTION, MAX_TEXT_PATCH_BATCH, PATCH_SITES, SELF_ADDRSPACE, TEXT_PATCH,
    TEXT_PATCH_ENTRY_SIZE,
};
use super::record::{record_fits_in_page, KernelAssetInfo, RecordError};

/// Issues one SMCCC call and returns x0..x3.
pub trait Hypercall {
    /// Calls `fid` with x1..x4 = `args`.
    fn call(&mut self, fid: u32, args: [u64; 4]) -> [u64; 4];
    /// Waits about a millisecond before a call answered BUSY is made
    /// again (the default does not wait: the caller's retry count alone
    /// bounds the loop).
    fn pause(&mut self) {}
}

/// How the layout reached the hypervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReportPath {
    /// One ASSET_INFO_COMPACT call with the whole record.
    Compact,
    /// One ASSET_INFO call per region, TEXT to FIXMAP_TEXT_POKE0, because
    /// the hypervisor does not implement the compact call.
    PerRegion,
}

/// SMCCC_ARCH_FEATURES: whether the hypervisor implements a function.
pub const SMCCC_ARCH_FEATURES: u32 = 0x8000_0001;

/// Whether the hypervisor says (SMCCC_ARCH_FEATURES, a non-negative
/// answer) that it implements kernel protect: a way to report the layout
/// and ENABLE_VM_PROTECTION. The kernel-protect IDs are not KVM function
/// numbers (bits 23:16 are set), so KVM's features bitmap cannot name
/// them; ARCH_FEATURES can, and a hypervisor without kernel protect (KVM
/// itself) answers NOT_SUPPORTED.
pub fn offered<H: Hypercall + ?Sized>(hv: &mut H) -> bool {
    let mut has =
        |fid: u32| (hv.call(SMCCC_ARCH_FEATURES, [u64::from(fid), 0, 0, 0])[0] as i64) >= 0;
    (has(ASSET_INFO_COMPACT) || has(ASSET_INFO)) && has(ENABLE_VM_PROTECTION)
}

/// Whether the hypervisor says (SMCCC_ARCH_FEATURES) that it implements
/// the call `fid`.
pub fn implements<H: Hypercall + ?Sized>(hv: &mut H, fid: u32) -> bool {
    (hv.call(SMCCC_ARCH_FEATURES, [u64::from(fid), 0, 0, 0])[0] as i64) >= 0
}

fn status<H: Hypercall + ?Sized>(hv: &mut H, fid: u32, args: [u64; 4]) -> Result<(), KpError> {
    let [x0, ..] = hv.call(fid, args);
    KpError::from_raw(x0)
}

/// Reports the kernel layout `record`, which the caller has placed in
/// memory at guest-physical address `record_ipa` (its bytes there must be
/// `record`'s; keep it in a `record::AlignedRecord` static).
///
/// The record is checked first ([`KernelAssetInfo::check_shape`], and
/// that it lies within one 4 KiB page); nothing is sent if that fails.
/// Then ASSET_INFO_COMPACT is tried; if the hypervisor answers
/// UNIMPLEMENTED (-1, which is also SMCCC NOT_SUPPORTED), the regions go
/// one ASSET_INFO call each, TEXT to FIXMAP_TEXT_POKE0, stopping at the
/// first refusal. A refusal part-way leaves the hypervisor with the
/// regions accepted so far.
///
/// # Errors
/// - the [`KpError`] of [`RecordError::kp_error`] if the record fails the
///   local checks (ARGUMENT_ALIGNMENT for a record that crosses a page).
/// - [`KpError::Unimplemented`]: the hypervisor implements neither call.
/// - any other [`KpError`] the hypervisor returns, e.g.
///   [`KpError::ObjectConfigured`] for a second submission.
pub fn report<H: Hypercall + ?Sized>(
    hv: &mut H,
    record: &KernelAssetInfo,
    record_ipa: u64,
) -> Result<ReportPath, KpError> {
    record.check_shape()?;
    if !record_fits_in_page(record_ipa) {
        return Err(RecordError::RecordCrossesPage { ipa: record_ipa }.kp_error());
    }
    match status(hv, ASSET_INFO_COMPACT, [record_ipa, 0, 0, 0]) {
        Ok(()) => return Ok(ReportPath::Compact),
        Err(KpError::Unimplemented) => {}
        Err(e) => return Err(e),
    }
    for ty in RegionType::ALL {
        let r = record.region(ty);
        status(hv, ASSET_INFO, [ty.as_raw(), r.start(), r.size(), 0])?;
    }
    Ok(ReportPath::PerRegion)
}

/// The hypervisor's answer to ENABLE_VM_PROTECTION.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SelfCheck {
    /// TEXT+RODATA match the measurement taken at enable time (x1 = 1).
    pub intact: bool,
    /// Text patches the hypervisor has accepted since (x2).
    pub patches: u64,
    /// First 64 bits of the SHA-256 measurement (x3); 0 while the
    /// hypervisor is still taking it.
    pub measurement: u64,
}

/// Asks the hypervisor to enable protection of this guest's kernel and
/// run its integrity check (ENABLE_VM_PROTECTION with the guest itself,
/// [`SELF_ADDRSPACE`], as target), and returns its answer. `other_text`
/// is the image's other text as (IPA, size), or (0, 0) (see
/// [`ENABLE_VM_PROTECTION`]); only the first call uses it.
///
/// # Errors
/// Any [`KpError`] the hypervisor returns, e.g.
/// [`KpError::ObjectState`] before the layout was reported,
/// [`KpError::Denied`] if self-checks are not allowed, or
/// [`KpError::Unimplemented`] without kernel protect.
pub fn enable_protection<H: Hypercall + ?Sized>(
    hv: &mut H,
    other_text: (u64, u64),
) -> Result<SelfCheck, KpError> {
    let (start, size) = other_text;
    let [x0, x1, x2, x3] = hv.call(ENABLE_VM_PROTECTION, [SELF_ADDRSPACE, start, size, 0]);
    KpError::from_raw(x0)?;
    Ok(SelfCheck {
        intact: x1 == 1,
        patches: x2,
        measurement: x3,
    })
}

/// Runs a self-check ([`enable_protection`] on an enabled guest) and asks
/// again while the hypervisor answers BUSY (its baseline is still being
/// taken on a CPU of its own), `retries` times at most with a pause
/// between. Touches no state of the caller's, so a kernel can make it
/// without holding a lock, and sleep in the pauses.
///
/// # Errors
/// The hypervisor's refusal (BUSY if it never became ready).
pub fn self_check<H: Hypercall + ?Sized>(hv: &mut H, retries: u32) -> Result<SelfCheck, KpError> {
    let mut tries = 0;
    loop {
        match enable_protection(hv, (0, 0)) {
            Err(KpError::Busy) if tries < retries => {
                tries += 1;
                hv.pause();
            }
            other => return other,
        }
    }
}

/// What the hypervisor made of one table of patch sites.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Registered {
    /// Sites it will accept patches at.
    pub sites: u64,
    /// Entries it skipped because they lie outside TEXT (init text).
    pub skipped: u64,
}

/// Registers a table of text-patch sites (PATCH_SITES). The table lies
/// at `table_ipa` with `entries` entries of `kind`; `text_va` is the VA
/// at which TEXT starts, which the hypervisor needs to turn the absolute
/// VAs of some tables into IPAs. Nothing is sent for an empty table.
///
/// # Errors
/// Any [`KpError`] the hypervisor returns: it refuses a table as a whole
/// (e.g. [`KpError::ArgumentInvalid`] for a malformed entry,
/// [`KpError::ObjectState`] once protection is enabled).
pub fn register_sites<H: Hypercall + ?Sized>(
    hv: &mut H,
    kind: SiteTable,
    table_ipa: u64,
    entries: u64,
    text_va: u64,
) -> Result<Registered, KpError> {
    if entries == 0 {
        return Ok(Registered::default());
    }
    let [x0, x1, x2, _] = hv.call(PATCH_SITES, [kind.as_raw(), table_ipa, entries, text_va]);
    KpError::from_raw(x0)?;
    Ok(Registered {
        sites: x1,
        skipped: x2,
    })
}

/// How a batch ended when it did not end well.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchError {
    /// The hypervisor refused entry `index`; the entries before it were
    /// applied.
    Refused {
        /// The refused entry.
        index: usize,
    },
    /// The call failed as a whole (nothing was applied).
    Call(KpError),
}

/// How many entries [`TextBatch`] holds: one TEXT_PATCH call's worth.
pub const BATCH_ENTRIES: usize = MAX_TEXT_PATCH_BATCH as usize;

/// Text patches queued for one TEXT_PATCH call: the entries as the
/// hypervisor reads them, and the VA each patches so the caller can do
/// its cache maintenance once they are applied. It must live where its
/// IPA does not change (a static in the kernel image).
#[repr(C, align(64))]
pub struct TextBatch {
    entries: [[u8; TEXT_PATCH_ENTRY_SIZE]; BATCH_ENTRIES],
    vas: [(u64, u32); BATCH_ENTRIES],
    len: usize,
}

impl Default for TextBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl TextBatch {
    /// An empty batch.
    pub const fn new() -> Self {
        Self {
            entries: [[0; TEXT_PATCH_ENTRY_SIZE]; BATCH_ENTRIES],
            vas: [(0, 0); BATCH_ENTRIES],
            len: 0,
        }
    }

    /// Entries queued.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether another entry would not fit.
    pub fn is_full(&self) -> bool {
        self.len >= BATCH_ENTRIES
    }

    /// The entries' bytes, whose IPA the caller passes to [`Self::flush`].
    pub fn entries(&self) -> *const u8 {
        self.entries.as_ptr().cast()
    }

    /// Queues `patch`, which writes the VA `va`. Returns `false` (and
    /// queues nothing) when the batch is full: flush it first.
    pub fn push(&mut self, va: u64, patch: TextPatch) -> bool {
        match (self.entries.get_mut(self.len), self.vas.get_mut(self.len)) {
            (Some(e), Some(v)) => {
                *e = patch.to_bytes();
                *v = (va, patch.size);
                self.len += 1;
                true
            }
            _ => false,
        }
    }

    /// Applies the queued entries with one TEXT_PATCH call, the entries
    /// lying at `entries_ipa`. While the hypervisor answers BUSY (its
    /// measurement is still being taken) the call is made again, `retries`
    /// times at most with a pause between. `applied(va, size)` is called
    /// for every entry the hypervisor applied, in order; then the batch is
    /// empty whatever happened. Returns how many were applied.
    ///
    /// # Errors
    /// [`BatchError::Refused`] with the index of the entry the hypervisor
    /// refused; [`BatchError::Call`] if the call failed otherwise (the
    /// entries x1 counts as applied are still reported to `applied`).
    pub fn flush<H: Hypercall + ?Sized>(
        &mut self,
        hv: &mut H,
        entries_ipa: u64,
        retries: u32,
        mut applied: impl FnMut(u64, u32),
    ) -> Result<usize, BatchError> {
        if self.len == 0 {
            return Ok(0);
        }
        let mut tries = 0;
        let (result, done) = loop {
            let [x0, x1, ..] = hv.call(TEXT_PATCH, [entries_ipa, self.len as u64, 0, 0]);
            // x1 counts the entries applied, whatever the outcome; never
            // trusted beyond the batch.
            let done = usize::try_from(x1).unwrap_or(usize::MAX).min(self.len);
            match KpError::from_raw(x0) {
                Err(KpError::Busy) if tries < retries => {
                    tries += 1;
                    hv.pause();
                }
                Ok(()) => break (Ok(self.len), self.len),
                Err(KpError::Denied) => break (Err(BatchError::Refused { index: done }), done),
                Err(e) => break (Err(BatchError::Call(e)), done),
            }
        };
        for &(va, size) in self.vas.iter().take(done) {
            applied(va, size);
        }
        self.len = 0;
        result
    }
}

#[cfg(test)]
// An explicit path: the kernel's rustfmtcheck formats each file as if
// it were a crate root.
#[path = "guest/tests.rs"]
mod tests;
