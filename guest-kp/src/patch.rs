// SPDX-License-Identifier: GPL-2.0 OR MIT
//! Validating a text patch: what the hypervisor decides when the guest
//! writes through the `FIX_TEXT_POKE0` fixmap slot into protected text.
//!
//! On arm64 Linux 6.12 the only runtime text patcher that matters for a
//! protected guest is jump labels (static keys):
//! `arch_jump_label_transform_queue()` writes either `NOP` or
//! `B <label>` (no link) over the 4-byte jump site, through
//! `aarch64_insn_patch_text_nosync()`, which is one 32-bit store to the
//! fixmap alias of the text page. So the hypervisor accepts exactly two
//! transitions, `NOP -> B <target>` and `B <target> -> NOP`, where the
//! branch target lies inside TEXT. `B -> B` is refused: jump labels
//! always go through `NOP`.
//!
//! Static calls are not a second case: arm64 does not select
//! `HAVE_STATIC_CALL` in 6.12, so static calls there are plain indirect
//! calls through a pointer in data and never patch text. Other 6.12
//! patchers (ftrace `NOP <-> BL`, kprobes' `BRK`, the BPF JIT's
//! trampolines) are refused by design.
//!
//! Everything is computed on IPAs: the fixmap maps the physical page of
//! the instruction, the hypervisor learns its IPA from the fault, and the
//! kernel image is physically contiguous, so a PC-relative branch target
//! is `insn_ipa + offset` in IPA terms too.
//!
//! Instructions are the 32-bit values as they sit in memory read
//! little-endian (arm64 instructions are always little-endian).

use core::fmt;

use super::record::IpaSpan;

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

/// The byte offset of `B imm26` (sign-extended `imm26 * 4`), or `None` if
/// `insn` is not an unconditional branch without link.
pub const fn branch_offset(insn: u32) -> Option<i64> {
    if insn & B_MASK != B_OPCODE {
        return None;
    }
    // Put imm26 in bits 63:38, then shift back arithmetically by 36:
    // sign-extends and multiplies by 4 in one step.
    let imm = (insn & IMM26_MASK) as i64;
    Some((imm << 38) >> 36)
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
    Some(B_OPCODE | imm26)
}

/// An accepted patch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PatchKind {
    /// A static key switched on: `NOP` became `B target`.
    NopToBranch {
        /// IPA the new branch jumps to.
        target: u64,
    },
    /// A static key switched off: `B target` became `NOP`.
    BranchToNop {
        /// IPA the old branch jumped to.
        target: u64,
    },
}

/// Why a patch was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PatchRefusal {
    /// The instruction's IPA is not 4-byte aligned.
    Misaligned,
    /// The instruction does not lie inside TEXT.
    OutsideText,
    /// The new instruction equals the old one (not a transition).
    Identical,
    /// `B -> B`: jump labels only toggle between `NOP` and `B`.
    BranchToBranch,
    /// Neither `NOP -> B` nor `B -> NOP` (another patcher, or an attack).
    NotJumpLabel,
    /// The branch target wraps around the address space.
    TargetWraps,
    /// The branch target is outside TEXT.
    TargetOutsideText {
        /// The target's IPA.
        target: u64,
    },
    /// The branch jumps to itself (`B .`), which no jump label does: the
    /// target is the label, never the jump site.
    SelfBranch,
}

impl fmt::Display for PatchRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PatchRefusal::Misaligned => f.write_str("instruction address is misaligned"),
            PatchRefusal::OutsideText => f.write_str("instruction is outside kernel text"),
            PatchRefusal::Identical => f.write_str("new instruction equals the old one"),
            PatchRefusal::BranchToBranch => f.write_str("B -> B is not a jump label transition"),
            PatchRefusal::NotJumpLabel => f.write_str("not a NOP <-> B jump label transition"),
            PatchRefusal::TargetWraps => f.write_str("branch target wraps"),
            PatchRefusal::TargetOutsideText { target } => {
                write!(f, "branch target {target:#x} is outside kernel text")
            }
            PatchRefusal::SelfBranch => f.write_str("branch to itself"),
        }
    }
}

/// Decides whether replacing `old` with `new` at `insn_ipa` is a jump
/// label transition the hypervisor may perform, with TEXT at `text`.
///
/// Checks, in order: `insn_ipa` aligned; the instruction inside `text`;
/// `new != old`; the transition `NOP -> B` or `B -> NOP`; the branch
/// (new or old) landing inside `text` and not on itself.
///
/// ```
/// use guest_kp::patch::{encode_b, validate, PatchKind, PatchRefusal, NOP};
/// use guest_kp::record::IpaSpan;
///
/// let text = IpaSpan::new(0x4020_0000, 0x40a0_0000).unwrap();
/// let site = 0x4030_0000;
/// let b = encode_b(site, site + 0x40).unwrap();
/// assert_eq!(validate(NOP, b, site, text), Ok(PatchKind::NopToBranch { target: site + 0x40 }));
/// assert_eq!(validate(b, NOP, site, text), Ok(PatchKind::BranchToNop { target: site + 0x40 }));
/// assert_eq!(validate(b, b, site, text), Err(PatchRefusal::Identical));
/// ```
///
/// # Errors
/// - [`PatchRefusal::Misaligned`]: `insn_ipa` is not a multiple of 4.
/// - [`PatchRefusal::OutsideText`]: `[insn_ipa, insn_ipa + 4)` is not
///   inside `text`.
/// - [`PatchRefusal::Identical`]: `new == old`.
/// - [`PatchRefusal::BranchToBranch`]: both are `B`.
/// - [`PatchRefusal::NotJumpLabel`]: any other pair.
/// - [`PatchRefusal::TargetWraps`]: the branch target wraps.
/// - [`PatchRefusal::TargetOutsideText`]: the branch target is outside
///   `text` (`text.end()` itself is outside).
/// - [`PatchRefusal::SelfBranch`]: the branch targets `insn_ipa`.
pub fn validate(
    old: u32,
    new: u32,
    insn_ipa: u64,
    text: IpaSpan,
) -> Result<PatchKind, PatchRefusal> {
    if insn_ipa & (INSN_SIZE - 1) != 0 {
        return Err(PatchRefusal::Misaligned);
    }
    if !text.contains_range(insn_ipa, INSN_SIZE) {
        return Err(PatchRefusal::OutsideText);
    }
    if old == new {
        return Err(PatchRefusal::Identical);
    }
    let (branch, nop_to_branch) = match (old == NOP, new == NOP) {
        (true, false) => (new, true),
        (false, true) => (old, false),
        _ if branch_offset(old).is_some() && branch_offset(new).is_some() => {
            return Err(PatchRefusal::BranchToBranch)
        }
        _ => return Err(PatchRefusal::NotJumpLabel),
    };
    if branch_offset(branch).is_none() {
        return Err(PatchRefusal::NotJumpLabel);
    }
    let target = branch_target(branch, insn_ipa).ok_or(PatchRefusal::TargetWraps)?;
    if target == insn_ipa {
        return Err(PatchRefusal::SelfBranch);
    }
    if !text.contains(target) {
        return Err(PatchRefusal::TargetOutsideText { target });
    }
    Ok(if nop_to_branch {
        PatchKind::NopToBranch { target }
    } else {
        PatchKind::BranchToNop { target }
    })
}

#[cfg(test)]
// An explicit path: the kernel's rustfmtcheck formats each file as if
// it were a crate root.
#[path = "patch/tests.rs"]
mod tests;
