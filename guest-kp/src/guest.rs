// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The guest's side of kernel protect: reporting the kernel layout and
//! asking the hypervisor to enable (and check) protection.
//!
//! The transport is the [`Hypercall`] trait: the kernel implements it
//! with real SMCCC calls through its conduit, host tests with a fake
//! hypervisor.

use super::abi::{
    KpError, RegionType, ASSET_INFO, ASSET_INFO_COMPACT, ENABLE_VM_PROTECTION, SELF_ADDRSPACE,
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
/// [`SELF_ADDRSPACE`], as target), and returns its answer.
///
/// # Errors
/// Any [`KpError`] the hypervisor returns, e.g.
/// [`KpError::ObjectState`] before the layout was reported,
/// [`KpError::Denied`] if self-checks are not allowed, or
/// [`KpError::Unimplemented`] without kernel protect.
pub fn enable_protection<H: Hypercall + ?Sized>(hv: &mut H) -> Result<SelfCheck, KpError> {
    let [x0, x1, x2, x3] = hv.call(ENABLE_VM_PROTECTION, [SELF_ADDRSPACE, 0, 0, 0]);
    KpError::from_raw(x0)?;
    Ok(SelfCheck {
        intact: x1 == 1,
        patches: x2,
        measurement: x3,
    })
}

#[cfg(test)]
// An explicit path: the kernel's rustfmtcheck formats each file as if
// it were a crate root.
#[path = "guest/tests.rs"]
mod tests;
