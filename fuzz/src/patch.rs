// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The text-patch rules, twice: `guest_kp::sites` (a registry with one
//! jump-label site, deciding a single write) against the rule written
//! out here, and kernel protect's text-patching paths in the whole core,
//! with the kernel reported, its seeded jump sites registered and
//! protection enabled first, so that every input is spent on patch
//! attempts (through the fixmap and in TEXT_PATCH batches) and
//! self-checks.

use arbitrary::Arbitrary;
use guest_kp::abi::SiteTable;
use guest_kp::patch::{branch_target, encode_b, NOP};
use guest_kp::record::IpaSpan;
use guest_kp::sites::{
    Accepted, FtraceSite, JumpSite, PatchPolicy, PatchRequest, SiteRegistry, SiteStorage,
    BRK_KPROBES,
};

use crate::exit_path::{self, Addr, Fid, Fsc, Imm, Insn, Op, RecordSeed, Syndrome, Value};
use crate::machine::IMAGE;

/// One write judged by the rules alone.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub struct Check {
    old: Insn,
    new: Insn,
    /// Where: a word of TEXT, or anything.
    at: Result<u16, u64>,
    /// The registered jump site (a word of TEXT) and its label, in
    /// instructions from it.
    site: u16,
    label: i16,
    /// TEXT: first page (from the image start) and page count.
    text: (u8, u8),
    /// 8 bytes rather than 4.
    wide: bool,
    /// A kprobe's BRK the hypervisor wrote is there, over this.
    brk: Option<Insn>,
    policy: (bool, bool),
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
    /// TEXT_PATCH with the first `n` entries of the seeded batch.
    Batch { n: u8 },
    /// ENABLE_VM_PROTECTION again: a self-check.
    SelfCheck,
    /// The guest idles: a step of any measurement under way.
    Idle,
    /// Power off.
    PowerOff,
}

/// A whole input.
#[derive(Arbitrary, Clone, Debug)]
pub struct Input {
    checks: Vec<Check>,
    /// The kernel's layout (pages of TEXT, RODATA, DATA, BSS).
    pages: [u8; 4],
    /// Jump-label sites seeded in TEXT (and registered).
    sites: Vec<(u16, Insn)>,
    /// TEXT_PATCH entries.
    batch: Vec<(u16, Insn)>,
    steps: Vec<Step>,
}

/// The rule: what writing `new` over `old` at `at` may be, with one
/// jump site at `site` jumping to `label`, TEXT at `text`, a kprobe BRK
/// over `brk` at `at` if any.
#[allow(clippy::too_many_arguments)]
fn reference(
    at: u64,
    wide: bool,
    old: u32,
    new: u32,
    site: u64,
    label: u64,
    text: (u64, u64),
    brk: Option<u32>,
    kprobes: bool,
) -> Option<Accepted> {
    // No ftrace sites: nothing takes 8 bytes.
    if wide || !at.is_multiple_of(4) || at < text.0 || at.checked_add(4)? > text.1 || old == new {
        return None;
    }
    let is_b_to = |i: u32, to: u64| {
        i >> 26 == 0b000101
            && at.wrapping_add_signed((i64::from(i & 0x03ff_ffff) << 38) >> 36) == to
    };
    if at == site {
        return match (old == NOP, new == NOP) {
            (true, false) if is_b_to(new, label) => Some(Accepted::JumpLabel {
                target: label,
                on: true,
            }),
            (false, true) if is_b_to(old, label) => Some(Accepted::JumpLabel {
                target: label,
                on: false,
            }),
            _ => None,
        };
    }
    match brk {
        Some(original) => (new == original).then_some(Accepted::KprobeDisarm),
        None => (new == BRK_KPROBES && kprobes).then_some(Accepted::KprobeArm { original: old }),
    }
}

fn check(c: &Check) {
    let start = IMAGE + u64::from(c.text.0 % 16) * 4096;
    let end = start + (u64::from(c.text.1 % 16) + 1) * 4096;
    let text = IpaSpan::new(start, end).expect("non-empty");
    let size = end - start;
    // TEXT, then one page holding the table.
    let mut mem = vec![0u8; (end - IMAGE + 4096) as usize];
    let table = end;
    let site = start + (u64::from(c.site) * 4) % size;
    let label = site.wrapping_add_signed(i64::from(c.label) * 4);
    let at = |ipa: u64| (ipa - IMAGE) as usize;
    mem[at(site)..at(site) + 4].copy_from_slice(&NOP.to_le_bytes());
    let code = site.wrapping_sub(table) as u32;
    let tgt = label.wrapping_sub(table + 4) as u32;
    mem[at(table)..at(table) + 4].copy_from_slice(&code.to_le_bytes());
    mem[at(table) + 4..at(table) + 8].copy_from_slice(&tgt.to_le_bytes());
    let mut jump = [JumpSite::EMPTY; 1];
    let mut ftrace = [FtraceSite::EMPTY; 1];
    let mut reg = SiteRegistry::new(SiteStorage {
        jump: &mut jump,
        ftrace: &mut ftrace,
    });
    let image = IpaSpan::new(start, table + 4096).expect("image");
    let mut read = |ipa: u64, buf: &mut [u8]| {
        let Some(o) = ipa.checked_sub(IMAGE) else {
            return false;
        };
        match mem.get(o as usize..).and_then(|m| m.get(..buf.len())) {
            Some(src) => {
                buf.copy_from_slice(src);
                true
            }
            None => false,
        }
    };
    let registered = reg.register(SiteTable::JumpTable, table, 1, 0, text, image, &mut read);
    let valid = label != site && label.is_multiple_of(4) && label >= start && label < end;
    assert_eq!(
        registered.is_ok(),
        valid,
        "{registered:?}: {site:#x} -> {label:#x}"
    );
    let at = match c.at {
        Ok(w) => start + u64::from(w) * 4 % (size + 8),
        Err(raw) => raw,
    };
    let (old, new) = (c.old.at(at & !3), c.new.at(at & !3));
    let old = if c.brk.is_some() { BRK_KPROBES } else { old };
    let brk = c.brk.map(|i| i.at(at & !3));
    let policy = PatchPolicy {
        ftrace: c.policy.0,
        kprobes: c.policy.1,
    };
    let req = PatchRequest {
        ipa: at,
        size: if c.wide { 8 } else { 4 },
        old: old.into(),
        new: new.into(),
    };
    let got = reg.decide(text, policy, req, brk).ok();
    let (site, label) = if valid { (site, label) } else { (u64::MAX, 0) };
    let want = reference(
        at,
        c.wide,
        old,
        new,
        site,
        label,
        (start, end),
        brk,
        policy.kprobes,
    );
    assert_eq!(got, want, "{old:#x} -> {new:#x} at {at:#x}");
    if let Some(Accepted::JumpLabel { target, .. }) = got {
        let b = if new == NOP { old } else { new };
        assert_eq!(encode_b(at, target), Some(b), "B does not round-trip");
        assert_eq!(branch_target(b, at), Some(target));
    }
    // encode_b and branch_target agree wherever a branch can be encoded.
    let to = at.wrapping_add(u64::from(new));
    if let Some(b) = encode_b(at, to) {
        assert_eq!(branch_target(b, at), Some(to), "encode_b({at:#x}, {to:#x})");
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
    // The jump sites the harness registers: the seeded ones that make a
    // valid table (in TEXT, off the table's page, a NOP or a B to TEXT
    // that is not the site; one entry per site), so that registration
    // succeeds and inputs are spent on patches (the parser has its own
    // checks above and in the exit-path target).
    let text_bytes = (u64::from(input.pages[0] % 6) + 1) * 4096;
    let text = IMAGE..IMAGE + text_bytes;
    let table_page = exit_path::JUMP_TABLE..exit_path::JUMP_TABLE + 4096;
    let mut sites: Vec<(u16, Insn)> = Vec::new();
    for &(word, insn) in input.sites.iter().take(64) {
        let site = IMAGE + (u64::from(word) * 4) % crate::machine::IMAGE_SIZE;
        let i = insn.at(site);
        let target = if i == NOP {
            Some(site + 0x40)
        } else {
            branch_target(i, site)
        };
        let ok = text.contains(&site)
            && !table_page.contains(&site)
            && target.is_some_and(|t| t != site && text.contains(&t))
            && !sites
                .iter()
                .any(|&(w, _)| IMAGE + (u64::from(w) * 4) % crate::machine::IMAGE_SIZE == site);
        if ok {
            sites.push((word, insn));
        }
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
            smc: false,
            imm: Imm::Zero,
            fid: Fid::Raw(guest_kp::abi::PATCH_SITES),
            args: [
                Value::Zero,
                Value::JumpTable,
                Value::Small(sites.len() as u8),
            ],
        },
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
            Step::Batch { n } => Op::Call {
                smc: false,
                imm: Imm::Zero,
                fid: Fid::Raw(guest_kp::abi::TEXT_PATCH),
                args: [Value::Batch, Value::Small(n % 65), Value::Zero],
            },
            Step::SelfCheck => Op::Call {
                smc: false,
                imm: Imm::Zero,
                fid: Fid::Raw(guest_kp::abi::ENABLE_VM_PROTECTION),
                args: [Value::Zero; 3],
            },
            Step::Idle => Op::Idle,
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
        extra_tables: 1,
        cpu_on_fails: false,
        power_refused: false,
        records: vec![record],
        sites,
        batch: input.batch.clone(),
        ops,
    })
}
