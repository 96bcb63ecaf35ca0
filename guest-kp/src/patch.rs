// SPDX-License-Identifier: GPL-2.0 OR MIT
//! arm64 branch encodings for text patching: `NOP`, `B` and `BL`, decoded
//! and encoded on IPAs. What may be patched where is decided in
//! [`super::sites`]; this module only knows instructions.
//!
//! Everything is computed on IPAs: the fixmap maps the physical page of
//! the instruction, the hypervisor learns its IPA from the fault, and the
//! kernel image is physically contiguous, so a PC-relative branch target
//! is `insn_ipa + offset` in IPA terms too.
//!
//! Instructions are the 32-bit values as they sit in memory read
//! little-endian (arm64 instructions are always little-endian).

/// The arm64 `NOP` (`HINT #0`).
pub const NOP: u32 = 0xd503_201f;

/// Size of an arm64 instruction in bytes.
pub const INSN_SIZE: u64 = 4;

/// Mask of the opcode bits of `B imm26` (bits 31:26).
pub const B_MASK: u32 = 0xfc00_0000;

/// Opcode bits of `B imm26` (`0b000101`); `BL` is `0b100101`.
pub const B_OPCODE: u32 = 0x1400_0000;

/// Mask of the `imm26` field.
const IMM26_MASK: u32 = 0x03ff_ffff;

/// Largest forward branch offset: `(2^25 - 1) * 4`.
pub const B_MAX_FORWARD: u64 = ((1 << 25) - 1) * 4;

/// Largest backward branch offset: `2^25 * 4` (128 MiB).
pub const B_MAX_BACKWARD: u64 = (1 << 25) * 4;

/// Opcode bits of `BL imm26` (`0b100101`), a call: how ftrace's call
/// sites reach their trampoline.
pub const BL_OPCODE: u32 = 0x9400_0000;

/// The byte offset of an `imm26` branch whose opcode bits are `opcode`
/// (sign-extended `imm26 * 4`), or `None` if `insn` is not one.
const fn imm26_offset(insn: u32, opcode: u32) -> Option<i64> {
    if insn & B_MASK != opcode {
        return None;
    }
    // Put imm26 in bits 63:38, then shift back arithmetically by 36:
    // sign-extends and multiplies by 4 in one step.
    let imm = (insn & IMM26_MASK) as i64;
    Some((imm << 38) >> 36)
}

/// The byte offset of `B imm26` (sign-extended `imm26 * 4`), or `None` if
/// `insn` is not an unconditional branch without link.
pub const fn branch_offset(insn: u32) -> Option<i64> {
    imm26_offset(insn, B_OPCODE)
}

/// Where `BL` at `insn_ipa` calls, or `None` if `insn` is not a `BL` or
/// the target would wrap around the address space.
///
/// ```
/// use guest_kp::patch::{call_target, encode_bl};
///
/// let bl = encode_bl(0x4020_1000, 0x4020_0000).unwrap();
/// assert_eq!(bl, 0x97ff_fc00);
/// assert_eq!(call_target(bl, 0x4020_1000), Some(0x4020_0000));
/// assert_eq!(call_target(0x17ff_fc00, 0x4020_1000), None); // a B
/// ```
pub const fn call_target(insn: u32, insn_ipa: u64) -> Option<u64> {
    match imm26_offset(insn, BL_OPCODE) {
        Some(off) => insn_ipa.checked_add_signed(off),
        None => None,
    }
}

/// Where `B` at `insn_ipa` jumps, or `None` if `insn` is not a `B` or the
/// target would wrap around the address space.
pub const fn branch_target(insn: u32, insn_ipa: u64) -> Option<u64> {
    match branch_offset(insn) {
        Some(off) => insn_ipa.checked_add_signed(off),
        None => None,
    }
}

/// Encodes `B` at `from_ipa` jumping to `to_ipa`, or `None` if the target
/// is not 4-byte aligned relative to `from_ipa` or out of the ±128 MiB
/// range (arm64's `aarch64_insn_gen_branch_imm`).
///
/// ```
/// use guest_kp::patch::{branch_target, encode_b};
///
/// let b = encode_b(0x4020_1000, 0x4020_0ff0).unwrap();
/// assert_eq!(b, 0x17ff_fffc);
/// assert_eq!(branch_target(b, 0x4020_1000), Some(0x4020_0ff0));
/// ```
pub const fn encode_b(from_ipa: u64, to_ipa: u64) -> Option<u32> {
    encode_imm26(B_OPCODE, from_ipa, to_ipa)
}

/// Encodes `BL` at `from_ipa` calling `to_ipa`, under the same conditions
/// as [`encode_b`].
pub const fn encode_bl(from_ipa: u64, to_ipa: u64) -> Option<u32> {
    encode_imm26(BL_OPCODE, from_ipa, to_ipa)
}

const fn encode_imm26(opcode: u32, from_ipa: u64, to_ipa: u64) -> Option<u32> {
    let (distance, forward) = if to_ipa >= from_ipa {
        (to_ipa - from_ipa, true)
    } else {
        (from_ipa - to_ipa, false)
    };
    if distance & (INSN_SIZE - 1) != 0 {
        return None;
    }
    if (forward && distance > B_MAX_FORWARD) || (!forward && distance > B_MAX_BACKWARD) {
        return None;
    }
    let words = (distance / INSN_SIZE) as u32;
    let imm26 = if forward {
        words
    } else {
        words.wrapping_neg() & IMM26_MASK
    };
    Some(opcode | imm26)
}

/// `BR X16`, how a module PLT leaves.
pub const BR_X16: u32 = 0xd61f_0200;

/// Where a module PLT at `pc` jumps: `ADRP X16, page; ADD X16, X16,
/// #lo12; BR X16` (arm64's `struct plt_entry`, what a module calls
/// ftrace's trampoline through when the module lies out of `BL` range),
/// or `None` if `words` are not that.
///
/// ```
/// use guest_kp::patch::{plt_target, BR_X16};
///
/// // adrp x16, #0x2000 (from 0x1000: page 0x3000); add x16, x16, #0x123
/// let plt = [0xd000_0010, 0x9104_8e10, BR_X16];
/// assert_eq!(plt_target(plt, 0x1000), Some(0x3123));
/// ```
pub const fn plt_target(words: [u32; 3], pc: u64) -> Option<u64> {
    let [adrp, add, br] = words;
    // ADRP: op=1, bits 28:24 = 10000, Rd = X16.
    if adrp & 0x9f00_001f != 0x9000_0010 || br != BR_X16 {
        return None;
    }
    // ADD (immediate, 64-bit, no shift), Rd = Rn = X16.
    if add & 0xffc0_03ff != 0x9100_0210 {
        return None;
    }
    let immlo = ((adrp >> 29) & 3) as i64;
    let immhi = ((adrp >> 5) & 0x7_ffff) as i64;
    // 21-bit page offset, sign-extended, in 4 KiB pages.
    let pages = (((immhi << 2) | immlo) << 43) >> 43;
    let lo12 = ((add >> 10) & 0xfff) as u64;
    match (pc & !0xfff).checked_add_signed(pages * 4096) {
        Some(page) => page.checked_add(lo12),
        None => None,
    }
}

#[cfg(test)]
// An explicit path: the kernel's rustfmtcheck formats each file as if
// it were a crate root.
#[path = "patch/tests.rs"]
mod tests;
