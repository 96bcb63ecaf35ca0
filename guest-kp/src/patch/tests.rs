// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The text-patch validator: every accepted transition, every refusal,
//! branch encodings at the edges of their range and of the address
//! space.

use super::*;

const TEXT_START: u64 = 0x4020_0000;
const TEXT_END: u64 = 0x4100_0000;

fn text() -> IpaSpan {
    IpaSpan::new(TEXT_START, TEXT_END).unwrap()
}

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
fn accepts_jump_label_transitions() {
    let site = 0x4080_0000;
    for target in [
        TEXT_START,
        TEXT_END - 4,
        site + 4,
        site - 4,
        site + 0x7f_fffc,
        site - 0x5f_fff0,
    ] {
        let insn = b(site, target);
        assert_eq!(
            validate(NOP, insn, site, text()),
            Ok(PatchKind::NopToBranch { target }),
            "{target:#x}"
        );
        assert_eq!(
            validate(insn, NOP, site, text()),
            Ok(PatchKind::BranchToNop { target })
        );
    }
}

#[test]
fn negative_offsets() {
    let site = TEXT_START + 0x100;
    let target = TEXT_START;
    let insn = b(site, target);
    assert_eq!(branch_offset(insn), Some(-0x100));
    assert_eq!(
        validate(NOP, insn, site, text()),
        Ok(PatchKind::NopToBranch { target })
    );
    // One instruction further back leaves text.
    let insn = b(site, TEXT_START - 4);
    assert_eq!(
        validate(NOP, insn, site, text()),
        Err(PatchRefusal::TargetOutsideText {
            target: TEXT_START - 4
        })
    );
    assert_eq!(
        validate(insn, NOP, site, text()),
        Err(PatchRefusal::TargetOutsideText {
            target: TEXT_START - 4
        })
    );
}

#[test]
fn target_at_text_end_is_outside() {
    let site = TEXT_END - 0x40;
    let insn = b(site, TEXT_END);
    assert_eq!(
        validate(NOP, insn, site, text()),
        Err(PatchRefusal::TargetOutsideText { target: TEXT_END })
    );
    let insn = b(site, TEXT_END - 4);
    assert!(validate(NOP, insn, site, text()).is_ok());
    // Far past the end, at the maximum forward range.
    let insn = b(site, site + B_MAX_FORWARD);
    assert_eq!(
        validate(NOP, insn, site, text()),
        Err(PatchRefusal::TargetOutsideText {
            target: site + B_MAX_FORWARD
        })
    );
}

#[test]
fn instruction_must_be_aligned_and_in_text() {
    let insn = b(0x4080_0000, 0x4080_0040);
    for site in [0x4080_0001, 0x4080_0002, 0x4080_0003] {
        assert_eq!(
            validate(NOP, insn, site, text()),
            Err(PatchRefusal::Misaligned)
        );
    }
    for site in [TEXT_START - 4, TEXT_END, TEXT_END + 4, 0, u64::MAX - 3] {
        assert_eq!(
            validate(NOP, insn, site, text()),
            Err(PatchRefusal::OutsideText),
            "{site:#x}"
        );
    }
    // The first and last instruction of text are patchable.
    assert!(validate(NOP, b(TEXT_START, TEXT_START + 8), TEXT_START, text()).is_ok());
    assert!(validate(NOP, b(TEXT_END - 4, TEXT_START), TEXT_END - 4, text()).is_ok());
}

#[test]
fn refuses_other_transitions() {
    let site = 0x4080_0000;
    let b1 = b(site, site + 0x40);
    let b2 = b(site, site + 0x80);
    assert_eq!(
        validate(b1, b2, site, text()),
        Err(PatchRefusal::BranchToBranch)
    );
    assert_eq!(
        validate(NOP, NOP, site, text()),
        Err(PatchRefusal::Identical)
    );
    assert_eq!(validate(b1, b1, site, text()), Err(PatchRefusal::Identical));
    let bl = 0x9400_0010; // bl .+0x40 (ftrace's patch)
    let brk = 0xd420_0080; // brk #4 (kprobes)
    let mov = 0xd280_0000; // mov x0, #0
    let ret = 0xd65f_03c0;
    let cases = [
        (NOP, bl),
        (bl, NOP),
        (NOP, brk),
        (mov, brk),
        (mov, NOP),
        (NOP, mov),
        (b1, ret),
        (ret, b1),
        (b1, bl),
        (bl, b1),
        (0, b1),
        (NOP, 0),
        (NOP, NOP ^ 1),
        (NOP ^ 1, b1),
    ];
    for (old, new) in cases {
        assert_eq!(
            validate(old, new, site, text()),
            Err(PatchRefusal::NotJumpLabel),
            "{old:#x} -> {new:#x}"
        );
    }
}

#[test]
fn self_branch_is_refused() {
    let site = 0x4080_0000;
    let insn = b(site, site);
    assert_eq!(insn, B_OPCODE);
    assert_eq!(
        validate(NOP, insn, site, text()),
        Err(PatchRefusal::SelfBranch)
    );
    assert_eq!(
        validate(insn, NOP, site, text()),
        Err(PatchRefusal::SelfBranch)
    );
}

#[test]
fn wrap_around() {
    // A text span at the very top of the address space.
    let top = IpaSpan::new(u64::MAX - 0xfff, u64::MAX).unwrap();
    let site = u64::MAX - 0xfff; // 4-aligned: 0x...f000
    assert_eq!(site % 4, 0);
    // b .+maximum from the top page wraps past 2^64.
    assert_eq!(
        validate(NOP, 0x15ff_ffff, site, top),
        Err(PatchRefusal::TargetWraps)
    );
    // A text span at the bottom: b .-8 from IPA 4 wraps below 0.
    let bottom = IpaSpan::new(0, 0x1000).unwrap();
    assert_eq!(
        validate(NOP, 0x17ff_fffe, 4, bottom),
        Err(PatchRefusal::TargetWraps)
    );
    assert_eq!(
        validate(0x17ff_fffe, NOP, 4, bottom),
        Err(PatchRefusal::TargetWraps)
    );
    // The last instruction slot below 2^64 is outside a span ending there.
    assert_eq!(
        validate(NOP, b(site, site + 4), u64::MAX - 3, top),
        Err(PatchRefusal::OutsideText)
    );
}

#[test]
fn refusal_order() {
    // Misalignment beats everything; outside-text beats identical.
    assert_eq!(validate(NOP, NOP, 1, text()), Err(PatchRefusal::Misaligned));
    assert_eq!(
        validate(NOP, NOP, 0, text()),
        Err(PatchRefusal::OutsideText)
    );
    assert_eq!(
        validate(0x1400_0010, NOP, 0, text()),
        Err(PatchRefusal::OutsideText)
    );
    // Transition kind beats target checks.
    assert_eq!(
        validate(0x1400_0010, 0x1500_0000, 0x4080_0000, text()),
        Err(PatchRefusal::BranchToBranch)
    );
}

#[test]
fn displays() {
    let all = [
        PatchRefusal::Misaligned,
        PatchRefusal::OutsideText,
        PatchRefusal::Identical,
        PatchRefusal::BranchToBranch,
        PatchRefusal::NotJumpLabel,
        PatchRefusal::TargetWraps,
        PatchRefusal::TargetOutsideText { target: 0x10 },
        PatchRefusal::SelfBranch,
    ];
    for r in all {
        assert!(!r.to_string().is_empty());
    }
    assert_eq!(
        PatchRefusal::TargetOutsideText { target: 0x10 }.to_string(),
        "branch target 0x10 is outside kernel text"
    );
}

/// Every imm26 at a few sites: accepted exactly when the target lies in
/// text and is not the site, and the reported target is exact.
#[test]
fn exhaustive_imm26() {
    let small = IpaSpan::new(0x4000_0000, 0x4000_0000 + (1 << 20)).unwrap();
    let sites = [small.start(), small.start() + 0x8_0000, small.end() - 4];
    for site in sites {
        for imm in (0..(1u32 << 26)).step_by(61).chain([0x3ff_ffff, 1 << 25]) {
            let insn = B_OPCODE | imm;
            let off = if imm & (1 << 25) != 0 {
                (imm as i64 - (1 << 26)) * 4
            } else {
                imm as i64 * 4
            };
            let target = site as i128 + off as i128;
            let inside = target >= small.start() as i128 && target < small.end() as i128;
            let res = validate(NOP, insn, site, small);
            match res {
                Ok(PatchKind::NopToBranch { target: t }) => {
                    assert!(inside && t as i128 == target && t != site)
                }
                Err(PatchRefusal::SelfBranch) => assert_eq!(target, site as i128),
                Err(PatchRefusal::TargetOutsideText { target: t }) => {
                    assert!(!inside && t as i128 == target)
                }
                other => panic!("{site:#x} {imm:#x}: {other:?}"),
            }
            assert_eq!(
                validate(insn, NOP, site, small).map(|k| match k {
                    PatchKind::BranchToNop { target } => target,
                    PatchKind::NopToBranch { .. } => panic!(),
                }),
                res.map(|k| match k {
                    PatchKind::NopToBranch { target } => target,
                    PatchKind::BranchToNop { .. } => panic!(),
                })
            );
        }
    }
}

#[test]
fn never_panics_on_arbitrary_input() {
    let mut x = 0x6a09_e667_f3bc_c908u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let spans = [
        text(),
        IpaSpan::new(0, 4).unwrap(),
        IpaSpan::new(0, u64::MAX).unwrap(),
        IpaSpan::new(u64::MAX - 4, u64::MAX).unwrap(),
    ];
    for i in 0..200_000u64 {
        let span = spans[(i % 4) as usize];
        let pick = |v: u64| match v % 4 {
            0 => NOP,
            1 => B_OPCODE | (v >> 8) as u32 & 0x03ff_ffff,
            _ => (v >> 16) as u32,
        };
        let (old, new) = (pick(next()), pick(next()));
        let site = match next() % 3 {
            0 => span.start().wrapping_add(next() % 64),
            1 => span.end().wrapping_sub(next() % 64),
            _ => next(),
        };
        if let Ok(k) = validate(old, new, site, span) {
            let t = match k {
                PatchKind::NopToBranch { target } | PatchKind::BranchToNop { target } => target,
            };
            assert!(span.contains(t) && t != site);
            assert!(span.contains_range(site, 4) && site % 4 == 0);
        }
    }
}
