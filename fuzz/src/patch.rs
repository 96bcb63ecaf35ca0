// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The text-patch validator, twice: `guest_kp::patch::validate` against
//! the jump-label rule written out here, and kernel protect's
//! text-patching path in the whole core, with the kernel reported and
//! protected first, so that every input is spent on patch attempts and
//! self-checks.

use arbitrary::Arbitrary;
use guest_kp::patch::{branch_target, encode_b, validate, PatchKind, NOP};
use guest_kp::record::IpaSpan;

use crate::exit_path::{self, Addr, Fid, Fsc, Imm, Insn, Op, RecordSeed, Syndrome, Value};
use crate::machine::IMAGE;

/// One attempt on the validator alone.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub struct Check {
    old: Insn,
    new: Insn,
    /// The site: a word of TEXT, or anything.
    site: Result<u16, u64>,
    /// TEXT: first page (from the image start) and page count.
    text: (u8, u8),
}

/// One thing the protected guest does.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Step {
    /// A store into TEXT (a word of it), through the fixmap or not.
    Store {
        word: u16,
        value: Insn,
        fixmap: bool,
    },
    /// A store with a syndrome of the fuzzer's choice.
    Raw {
        word: u16,
        value: Insn,
        fixmap: bool,
        syndrome: Syndrome,
    },
    /// ENABLE_VM_PROTECTION again: a self-check.
    SelfCheck,
    /// Power off (finishes any background measurement).
    PowerOff,
}

/// A whole input.
#[derive(Arbitrary, Clone, Debug)]
pub struct Input {
    checks: Vec<Check>,
    hyp_cpu: bool,
    lose_digest: bool,
    /// The kernel's layout (pages of TEXT, RODATA, DATA, BSS).
    pages: [u8; 4],
    /// Jump-label sites seeded in TEXT.
    sites: Vec<(u16, Insn)>,
    steps: Vec<Step>,
}

/// The rule: `old -> new` at `site` is NOP <-> B whose target is in
/// TEXT and not the site; returns the target.
fn reference(old: u32, new: u32, site: u64, text: (u64, u64)) -> Option<(u64, bool)> {
    let is_b = |i: u32| i >> 26 == 0b000101;
    if !site.is_multiple_of(4) || site < text.0 || site.checked_add(4)? > text.1 || old == new {
        return None;
    }
    let (branch, on) = match (old == NOP, new == NOP) {
        (true, false) if is_b(new) => (new, true),
        (false, true) if is_b(old) => (old, false),
        _ => return None,
    };
    let imm26 = i64::from(branch & 0x03ff_ffff);
    let target = site.checked_add_signed(((imm26 << 38) >> 38) * 4)?;
    (target != site && target >= text.0 && target < text.1).then_some((target, on))
}

fn check(c: &Check) {
    let start = IMAGE + u64::from(c.text.0 % 16) * 4096;
    let end = start + (u64::from(c.text.1 % 16) + 1) * 4096;
    let text = IpaSpan::new(start, end).expect("non-empty");
    let site = match c.site {
        Ok(w) => start + u64::from(w) * 4 % (end - start + 8),
        Err(raw) => raw,
    };
    let (old, new) = (c.old.at(site & !3), c.new.at(site & !3));
    let got = validate(old, new, site, text);
    let want = reference(old, new, site, (start, end));
    match (got, want) {
        (Ok(PatchKind::NopToBranch { target }), Some((t, true)))
        | (Ok(PatchKind::BranchToNop { target }), Some((t, false))) => {
            assert_eq!(target, t, "wrong target");
            let b = if new == NOP { old } else { new };
            assert_eq!(encode_b(site, target), Some(b), "B does not round-trip");
            assert_eq!(branch_target(b, site), Some(target));
        }
        (Err(_), None) => {}
        (got, want) => {
            panic!("validate({old:#x}, {new:#x}, {site:#x}) = {got:?}, rule says {want:?}")
        }
    }
    // encode_b and branch_target agree wherever a branch can be encoded.
    let to = site.wrapping_add(u64::from(new));
    if let Some(b) = encode_b(site, to) {
        assert_eq!(
            branch_target(b, site),
            Some(to),
            "encode_b({site:#x}, {to:#x})"
        );
    }
}

fn call(fid: u32) -> Op {
    Op::Call {
        smc: false,
        imm: Imm::Zero,
        fid: Fid::Raw(fid),
        args: [Value::Record(0), Value::Zero, Value::Zero],
    }
}

/// Runs one input.
pub fn run(input: &Input) -> exit_path::Reach {
    for c in input.checks.iter().take(16) {
        check(c);
    }
    let record = RecordSeed {
        slot: 0,
        pages: input.pages,
        gap: 0,
        mutation: None,
    };
    // TEXT starts at the image start (gap 0) and spans at least a page.
    let mut ops = vec![
        call(guest_kp::abi::ASSET_INFO_COMPACT),
        Op::Call {
            smc: true,
            imm: Imm::Zero,
            fid: Fid::Raw(guest_kp::abi::ENABLE_VM_PROTECTION),
            args: [Value::Zero; 3],
        },
    ];
    let text_bytes = (u64::from(input.pages[0] % 6) + 1) * 4096;
    let word_at = |w: u16| ((u64::from(w) * 4) % (text_bytes + 8)) as u16;
    for s in input.steps.iter().take(128) {
        ops.push(match *s {
            Step::Store {
                word,
                value,
                fixmap,
            } => Op::Access {
                at: Addr::Image(word_at(word)),
                write: true,
                value,
                fixmap,
                srt: 3,
                sas: 2,
            },
            Step::Raw {
                word,
                value,
                fixmap,
                syndrome,
            } => {
                let at = IMAGE + u64::from(word_at(word));
                let insn = value.at(at & !3);
                Op::DataAbort {
                    at: Addr::Image(word_at(word)),
                    far_va: fixmap.then_some(crate::machine::FIXMAP_VA),
                    syndrome: Syndrome {
                        fsc: Fsc::Permission(3),
                        ..syndrome
                    },
                    reg: Value::Raw(u64::from(insn)),
                }
            }
            Step::SelfCheck => Op::Call {
                smc: false,
                imm: Imm::Zero,
                fid: Fid::Raw(guest_kp::abi::ENABLE_VM_PROTECTION),
                args: [Value::Zero; 3],
            },
            Step::PowerOff => Op::Call {
                smc: true,
                imm: Imm::Zero,
                fid: Fid::Raw(hyp_stub::smccc::psci::SYSTEM_OFF),
                args: [Value::Zero; 3],
            },
        });
    }
    exit_path::run(&exit_path::Input {
        from_boot: false,
        hyp_cpu: input.hyp_cpu,
        lose_digest: input.lose_digest,
        extra_tables: 1,
        cpu_on_fails: false,
        power_refused: false,
        hash_polls: 0,
        records: vec![record],
        sites: input.sites.clone(),
        ops,
    })
}
