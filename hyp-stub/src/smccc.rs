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

/// PSCI function IDs and results: the `smccc` crate's names, the error
/// codes widened to the 64-bit register they are returned in.
pub mod psci {
    pub use smccc::psci::{
        PSCI_AFFINITY_INFO_32 as AFFINITY_INFO_32, PSCI_AFFINITY_INFO_64 as AFFINITY_INFO_64,
        PSCI_CPU_DEFAULT_SUSPEND_32 as CPU_DEFAULT_SUSPEND_32,
        PSCI_CPU_DEFAULT_SUSPEND_64 as CPU_DEFAULT_SUSPEND_64, PSCI_CPU_FREEZE as CPU_FREEZE,
        PSCI_CPU_OFF as CPU_OFF, PSCI_CPU_ON_32 as CPU_ON_32, PSCI_CPU_ON_64 as CPU_ON_64,
        PSCI_CPU_SUSPEND_32 as CPU_SUSPEND_32, PSCI_CPU_SUSPEND_64 as CPU_SUSPEND_64,
        PSCI_FEATURES as FEATURES, PSCI_MEM_PROTECT as MEM_PROTECT,
        PSCI_MEM_PROTECT_CHECK_RANGE_32 as MEM_PROTECT_CHECK_RANGE_32,
        PSCI_MEM_PROTECT_CHECK_RANGE_64 as MEM_PROTECT_CHECK_RANGE_64,
        PSCI_MIGRATE_32 as MIGRATE_32, PSCI_MIGRATE_64 as MIGRATE_64,
        PSCI_MIGRATE_INFO_TYPE as MIGRATE_INFO_TYPE,
        PSCI_MIGRATE_INFO_UP_CPU_32 as MIGRATE_INFO_UP_CPU_32,
        PSCI_MIGRATE_INFO_UP_CPU_64 as MIGRATE_INFO_UP_CPU_64,
        PSCI_NODE_HW_STATE_32 as NODE_HW_STATE_32, PSCI_NODE_HW_STATE_64 as NODE_HW_STATE_64,
        PSCI_SET_SUSPEND_MODE as SET_SUSPEND_MODE, PSCI_STAT_COUNT_32 as STAT_COUNT_32,
        PSCI_STAT_COUNT_64 as STAT_COUNT_64, PSCI_STAT_RESIDENCY_32 as STAT_RESIDENCY_32,
        PSCI_STAT_RESIDENCY_64 as STAT_RESIDENCY_64, PSCI_SYSTEM_OFF as SYSTEM_OFF,
        PSCI_SYSTEM_RESET as SYSTEM_RESET, PSCI_SYSTEM_RESET2_32 as SYSTEM_RESET2_32,
        PSCI_SYSTEM_RESET2_64 as SYSTEM_RESET2_64, PSCI_SYSTEM_SUSPEND_32 as SYSTEM_SUSPEND_32,
        PSCI_SYSTEM_SUSPEND_64 as SYSTEM_SUSPEND_64, PSCI_VERSION as VERSION,
    };

    use smccc::psci::error;

    /// An error code as the guest's x0 holds it (sign-extended).
    const fn reg(code: i32) -> u64 {
        code as i64 as u64
    }

    /// PSCI SUCCESS.
    pub const SUCCESS: u64 = reg(error::SUCCESS);
    /// PSCI NOT_SUPPORTED (-1).
    pub const NOT_SUPPORTED: u64 = reg(error::NOT_SUPPORTED);
    /// PSCI INVALID_PARAMETERS (-2).
    pub const INVALID_PARAMETERS: u64 = reg(error::INVALID_PARAMETERS);
    /// PSCI DENIED (-3).
    pub const DENIED: u64 = reg(error::DENIED);
    /// PSCI ALREADY_ON (-4).
    pub const ALREADY_ON: u64 = reg(error::ALREADY_ON);
    /// PSCI ON_PENDING (-5).
    pub const ON_PENDING: u64 = reg(error::ON_PENDING);
    /// PSCI INVALID_ADDRESS (-9).
    pub const INVALID_ADDRESS: u64 = reg(error::INVALID_ADDRESS);

    /// PSCI version 1.1, as PSCI_VERSION returns it.
    pub const VERSION_1_1: u64 = 0x1_0001;
    /// AFFINITY_INFO: the node is on / off / being turned on.
    pub const AFFINITY_ON: u64 = 0;
    /// AFFINITY_INFO: the node is off.
    pub const AFFINITY_OFF: u64 = 1;
    /// AFFINITY_INFO: a CPU_ON for the node is pending.
    pub const AFFINITY_ON_PENDING: u64 = 2;
    /// MIGRATE_INFO_TYPE: no Trusted OS that needs migrating.
    pub const MIGRATE_NOT_NEEDED: u64 = 2;

    /// Whether `fid` is in the PSCI ranges (32- and 64-bit).
    pub fn is_psci(fid: u32) -> bool {
        matches!(fid, 0x8400_0000..=0x8400_001f | 0xc400_0000..=0xc400_001f)
    }

    /// A CPU_SUSPEND `power_state` in the original format (the one
    /// hyp-stub advertises in PSCI_FEATURES): StateID in bits 15:0,
    /// StateType in bit 16, the affinity level in bits 25:24, the rest
    /// reserved (zero).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum PowerState {
        /// Standby or retention: the CPU keeps its state and the call
        /// returns; no entry point is used.
        Standby(u32),
        /// Power down: the CPU loses its state and wakes at the entry
        /// point the guest gave.
        PowerDown(u32),
    }

    impl PowerState {
        /// The power-down request hyp-stub itself makes of the firmware
        /// for a default or system suspend (core level, StateID 0).
        pub const CORE_POWER_DOWN: Self = Self::PowerDown(1 << 16);

        /// Decodes a guest's `power_state`. Only the core level is
        /// supported (as in QEMU's own PSCI): a higher affinity level, or a
        /// reserved bit set, is `None` (INVALID_PARAMETERS).
        pub fn decode(raw: u64) -> Option<Self> {
            let raw = u32::try_from(raw).ok()?;
            if raw & !0x1_ffff != 0 {
                return None;
            }
            Some(if raw & (1 << 16) != 0 {
                Self::PowerDown(raw)
            } else {
                Self::Standby(raw)
            })
        }

        /// The value handed to the firmware.
        pub fn raw(self) -> u32 {
            match self {
                Self::Standby(r) | Self::PowerDown(r) => r,
            }
        }
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

    #[test]
    fn power_states_decode_the_core_level_only() {
        use psci::PowerState;
        assert_eq!(PowerState::decode(0), Some(PowerState::Standby(0)));
        assert_eq!(
            PowerState::decode(0x1_0003),
            Some(PowerState::PowerDown(0x1_0003))
        );
        assert_eq!(PowerState::decode(1 << 24), None, "cluster level");
        assert_eq!(PowerState::decode(1 << 30), None, "reserved bit");
        assert_eq!(PowerState::decode(1 << 32), None, "beyond 32 bits");
        assert_eq!(psci::INVALID_ADDRESS, -9i64 as u64);
    }
}
