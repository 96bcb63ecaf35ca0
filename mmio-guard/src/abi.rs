// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The MMIO guard hypercalls: KVM vendor-hyp function numbers of the 2021
//! MMIO-guard series (INFO 5, ENROLL 6, MAP 7, UNMAP 8), upstream 6.12's
//! HYP_MEMINFO (2) and memory sharing (3, 4) that its pKVM guest driver
//! requires before it uses MAP, and pvguard's ranged MAP/UNMAP (10, 11) so
//! a guest spends one hypercall per `ioremap` instead of one per granule.

/// SMCCC's vendor-specific hypervisor UID query: how a guest finds a
/// KVM-compatible hypervisor before it uses any of the calls below.
pub const VENDOR_HYP_UID: u32 = 0x8600_ff01;
/// KVM's vendor-hyp features bitmap query (function 0): bit N set means
/// vendor-hyp function N is offered.
pub const VENDOR_HYP_KVM_FEATURES: u32 = 0x8600_0000;
/// KVM's UID 28b46fb6-2ec5-11e9-a9ca-4b564d003a74, as r0..r3.
pub const KVM_UID: [u64; 4] = [0xb66f_b428, 0xe911_c52e, 0x564b_caa9, 0x743a_004d];

/// HYP_MEMINFO: x0 = the hypervisor's memory granule.
pub const HYP_MEMINFO: u32 = 0xc600_0002;
/// MEM_SHARE (x1 = IPA of one granule). The stub does not model memory
/// privacy: accepted and counted.
pub const MEM_SHARE: u32 = 0xc600_0003;
/// MEM_UNSHARE (x1 = IPA of one granule). Accepted and counted.
pub const MEM_UNSHARE: u32 = 0xc600_0004;
/// INFO: x0 = the MMIO guard granule.
pub const INFO: u32 = 0xc600_0005;
/// ENROLL: from now on, unguarded emulated MMIO aborts.
pub const ENROLL: u32 = 0xc600_0006;
/// MAP: x1 = IPA (granule aligned), x2 = attributes (MAIR index, 0..=7).
pub const MAP: u32 = 0xc600_0007;
/// UNMAP: x1 = IPA (granule aligned).
pub const UNMAP: u32 = 0xc600_0008;
/// MAP_RANGE: x1 = IPA, x2 = size (granule multiple), x3 = attributes.
pub const MAP_RANGE: u32 = 0xc600_000a;
/// UNMAP_RANGE: x1 = IPA, x2 = size (granule multiple).
pub const UNMAP_RANGE: u32 = 0xc600_000b;

/// The function IDs of a guard enforced after ENROLL.
pub const ENROLLED_GUEST: [u32; 7] = [
    HYP_MEMINFO,
    INFO,
    ENROLL,
    MAP,
    UNMAP,
    MAP_RANGE,
    UNMAP_RANGE,
];

/// The function IDs offered to a protected VM: also MEM_SHARE and
/// MEM_UNSHARE, which upstream's pKVM guest driver requires before it
/// registers its `ioremap` hook.
pub const PROTECTED_VM: [u32; 9] = [
    HYP_MEMINFO,
    MEM_SHARE,
    MEM_UNSHARE,
    INFO,
    ENROLL,
    MAP,
    UNMAP,
    MAP_RANGE,
    UNMAP_RANGE,
];

/// The guard granule: the unit the hypervisor tracks.
pub const GRANULE: u64 = 4096;
/// Largest attribute value (a MAIR index).
pub const MAX_ATTRS: u64 = 7;

/// SMCCC SUCCESS.
pub const RET_SUCCESS: u64 = 0;
/// SMCCC NOT_SUPPORTED (-1).
pub const RET_NOT_SUPPORTED: u64 = -1i64 as u64;
/// SMCCC INVALID_PARAMETER (-3): bad address, size, alignment or
/// attributes; UNMAP of something not mapped; MAP when the hypervisor
/// has no room left to track the range.
pub const RET_INVALID_PARAMETER: u64 = -3i64 as u64;

/// Bit `n` of the KVM vendor-hyp features bitmap (x0..x3 of function 0)
/// is set if function `n` is implemented.
pub fn function_number(fid: u32) -> u32 {
    fid & 0xffff
}

/// Whether the features bitmap `bits` (x0..x3) advertises `fid`.
pub fn advertised(bits: [u64; 4], fid: u32) -> bool {
    let n = function_number(fid);
    let word = (n / 32) as usize;
    match bits.get(word) {
        Some(w) => n < 128 && (w >> (n % 32)) & 1 == 1,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_bits() {
        let bits = [1 | (1 << 7) | (1 << 10), 0, 0, 0];
        assert!(advertised(bits, MAP) && advertised(bits, MAP_RANGE));
        assert!(!advertised(bits, ENROLL));
        assert!(!advertised(bits, 0xc600_00ff));
    }
}
