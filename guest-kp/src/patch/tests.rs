// SPDX-License-Identifier: GPL-2.0 OR MIT
//! Branch encodings at the edges of their range and of the address
//! space, for `B` and `BL`.

use super::*;

fn b(from: u64, to: u64) -> u32 {
    encode_b(from, to).unwrap()
}

#[test]
fn decodes_known_encodings() {
    // Hand-assembled: b .+4, b .-4, b .+0x40, the extremes.
    assert_eq!(branch_offset(0x1400_0001), Some(4));
    assert_eq!(branch_offset(0x17ff_ffff), Some(-4));
    assert_eq!(branch_offset(0x1400_0010), Some(0x40));
    assert_eq!(branch_offset(0x15ff_ffff), Some(B_MAX_FORWARD as i64));
    assert_eq!(branch_offset(0x1600_0000), Some(-(B_MAX_BACKWARD as i64)));
    assert_eq!(branch_offset(0x1400_0000), Some(0));
    // Not B: BL, NOP, B.cond, BR x0, zero.
    for insn in [0x9400_0001, NOP, 0x5400_0040, 0xd61f_0000, 0] {
        assert_eq!(branch_offset(insn), None, "{insn:#x}");
    }
}

#[test]
fn encode_round_trips() {
    let site = 0x4080_0000u64;
    for delta in [
        4i64,
        -4,
        8,
        0x40,
        -0x40,
        0x1000,
        -0x10_0000,
        B_MAX_FORWARD as i64,
        -(B_MAX_BACKWARD as i64),
    ] {
        let to = site.checked_add_signed(delta).unwrap();
        let insn = b(site, to);
        assert_eq!(insn & B_MASK, B_OPCODE);
        assert_eq!(branch_offset(insn), Some(delta));
        assert_eq!(branch_target(insn, site), Some(to));
    }
    // Out of range or misaligned.
    assert_eq!(encode_b(site, site + B_MAX_FORWARD + 4), None);
    assert_eq!(encode_b(site, site - B_MAX_BACKWARD - 4), None);
    assert_eq!(encode_b(site, site + 2), None);
    assert_eq!(encode_b(0, u64::MAX - 3), None);
    assert_eq!(encode_b(u64::MAX - 3, 0), None);
}

#[test]
fn branch_target_wraps() {
    // b .-8 at IPA 4, and b .+maximum near the top of the address space.
    assert_eq!(branch_target(0x17ff_fffe, 4), None);
    assert_eq!(branch_target(0x15ff_ffff, u64::MAX - 0x1000), None);
    assert_eq!(branch_target(0x17ff_ffff, 4), Some(0));
    assert_eq!(branch_target(NOP, 4), None);
}

#[test]
fn bl_is_told_apart_from_b() {
    let site = 0x4080_0000u64;
    for delta in [
        4i64,
        -4,
        0x1000,
        B_MAX_FORWARD as i64,
        -(B_MAX_BACKWARD as i64),
    ] {
        let to = site.checked_add_signed(delta).unwrap();
        let bl = encode_bl(site, to).unwrap();
        let b = encode_b(site, to).unwrap();
        assert_eq!(bl & B_MASK, BL_OPCODE);
        assert_eq!(bl & !B_MASK, b & !B_MASK, "same imm26");
        assert_eq!(call_target(bl, site), Some(to));
        assert_eq!(branch_offset(bl), None, "a BL is not a B");
        assert_eq!(call_target(b, site), None, "a B is not a BL");
    }
    assert_eq!(encode_bl(site, site + 2), None);
    assert_eq!(encode_bl(site, site + B_MAX_FORWARD + 4), None);
    // bl .-8 at IPA 4 wraps below 0.
    assert_eq!(call_target(0x97ff_fffe, 4), None);
    assert_eq!(call_target(NOP, 4), None);
}

#[test]
fn module_plts_decode_to_their_target() {
    // A PLT 100 MiB below its target, and one above it.
    for (pc, to) in [
        (0xffff_8000_0100_0010u64, 0xffff_8000_0740_0abcu64),
        (0xffff_8000_8000_0ff0, 0xffff_8000_0100_0008),
    ] {
        let pages = ((to & !0xfff) as i64 - (pc & !0xfff) as i64) >> 12;
        let imm = (pages as u32) & 0x1f_ffff;
        let adrp = 0x9000_0010 | ((imm & 3) << 29) | ((imm >> 2) << 5);
        let add = 0x9100_0210 | (((to & 0xfff) as u32) << 10);
        assert_eq!(plt_target([adrp, add, BR_X16], pc), Some(to));
        // Another register, a shifted ADD, a BLR: not a PLT.
        assert_eq!(plt_target([adrp | 1, add, BR_X16], pc), None);
        assert_eq!(plt_target([adrp, add | (1 << 22), BR_X16], pc), None);
        assert_eq!(plt_target([adrp, add, 0xd63f_0200], pc), None);
    }
}
