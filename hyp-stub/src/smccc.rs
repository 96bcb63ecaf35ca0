// SPDX-License-Identifier: GPL-2.0 OR MIT
//! SMCCC function IDs and return values the core answers itself: the
//! architecture calls and the vendor-hyp discovery calls, answered as KVM
//! answers them so that stock Linux discovers the hypervisor.

pub use smccc::arch::{SMCCC_ARCH_FEATURES, SMCCC_VERSION};

/// SMCCC v1.1, as returned by SMCCC_VERSION.
pub const VERSION_1_1: u64 = 0x1_0001;
/// SMCCC NOT_SUPPORTED (-1).
pub const NOT_SUPPORTED: u64 = -1i64 as u64;
/// SMCCC INVALID_PARAMETER (-3).
pub const INVALID_PARAMETER: u64 = -3i64 as u64;

/// KVM discovery, shared with the guest's MMIO guard.
pub use mmio_guard::abi::{KVM_UID, VENDOR_HYP_KVM_FEATURES, VENDOR_HYP_UID};
/// Bit of the features bitmap for the features call itself.
pub const KVM_FUNC_FEATURES: u32 = 0;

/// The vendor-hyp function number of `fid` (the bit it occupies in the
/// features bitmap), if `fid` is a fast vendor-hyp call below 128.
pub fn vendor_hyp_function(fid: u32) -> Option<u8> {
    let fast = fid & (1 << 31) != 0;
    let owner = (fid >> 24) & 0x3f;
    // Bits 23:16 are zero in KVM's functions (kernel protect's IDs set
    // them, so they are not KVM functions and are not advertised here).
    let reserved = (fid >> 16) & 0xff;
    let number = fid & 0xffff;
    (fast && owner == 6 && reserved == 0 && number < 128).then_some(number as u8)
}

/// PSCI function IDs and results.
pub mod psci {
    pub use smccc::psci::{
        PSCI_CPU_ON_32 as CPU_ON_32, PSCI_CPU_ON_64 as CPU_ON_64, PSCI_FEATURES as FEATURES,
        PSCI_SYSTEM_OFF as SYSTEM_OFF, PSCI_SYSTEM_RESET as SYSTEM_RESET,
        PSCI_SYSTEM_RESET2_32 as SYSTEM_RESET2_32, PSCI_SYSTEM_RESET2_64 as SYSTEM_RESET2_64,
        PSCI_VERSION as VERSION,
    };

    pub use smccc::psci::PSCI_CPU_OFF as CPU_OFF;
    pub use smccc::psci::{
        PSCI_AFFINITY_INFO_32 as AFFINITY_INFO_32, PSCI_AFFINITY_INFO_64 as AFFINITY_INFO_64,
    };

    /// PSCI INVALID_PARAMETERS (-2).
    pub const INVALID_PARAMETERS: u64 = -2i64 as u64;
    /// PSCI DENIED (-3).
    pub const DENIED: u64 = -3i64 as u64;
    /// PSCI ALREADY_ON (-4).
    pub const ALREADY_ON: u64 = -4i64 as u64;
    /// PSCI ON_PENDING (-5).
    pub const ON_PENDING: u64 = -5i64 as u64;
    /// PSCI INVALID_ADDRESS (-9).
    pub const INVALID_ADDRESS: u64 = -9i64 as u64;

    /// Whether `fid` is in the PSCI ranges (32- and 64-bit).
    pub fn is_psci(fid: u32) -> bool {
        matches!(fid, 0x8400_0000..=0x8400_001f | 0xc400_0000..=0xc400_001f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_hyp_numbers() {
        assert_eq!(vendor_hyp_function(0x8600_0000), Some(0));
        assert_eq!(vendor_hyp_function(0xc600_0007), Some(7));
        assert_eq!(
            vendor_hyp_function(0xc606_005f),
            None,
            "kernel protect IDs are not KVM functions"
        );
        assert_eq!(vendor_hyp_function(0x8400_0000), None);
        assert_eq!(
            vendor_hyp_function(0x0600_0001),
            None,
            "yielding calls are not fast calls"
        );
        assert!(psci::is_psci(psci::SYSTEM_OFF) && !psci::is_psci(0x8400_0050));
    }
}
