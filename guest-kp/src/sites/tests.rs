// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The site registry: table parsing (good, bad, skipped, KASLR), every
//! transition rule accepted and refused, enable capture and the
//! measurement's restore, and the command-line policy.

use super::*;
use crate::patch::{encode_b, encode_bl, NOP};

const RAM: u64 = 0x4000_0000;
const TEXT: (u64, u64) = (0x4020_0000, 0x4040_0000);
const IMAGE_END: u64 = 0x4060_0000;
/// Where the tables are placed (in the image, after TEXT).
const TABLES: u64 = 0x4050_0000;
const TEXT_VA: u64 = 0xffff_8000_8020_0000;
/// ftrace_nop_ops, as a kernel pointer.
const NOP_OPS: u64 = 0xffff_8000_8250_1000;
const RET: u32 = 0xd65f_03c0;

struct Mem {
    base: u64,
    bytes: Vec<u8>,
}

impl Mem {
    fn new() -> Self {
        Mem {
            base: RAM,
            bytes: vec![0; 8 << 20],
        }
    }
    fn slice(&mut self, ipa: u64, n: usize) -> &mut [u8] {
        let o = (ipa - self.base) as usize;
        &mut self.bytes[o..o + n]
    }
    fn put32(&mut self, ipa: u64, v: u32) {
        self.slice(ipa, 4).copy_from_slice(&v.to_le_bytes());
    }
    fn put64(&mut self, ipa: u64, v: u64) {
        self.slice(ipa, 8).copy_from_slice(&v.to_le_bytes());
    }
    fn reader(&self) -> impl FnMut(u64, &mut [u8]) -> bool + '_ {
        move |ipa, buf| {
            let Some(o) = ipa.checked_sub(self.base) else {
                return false;
            };
            match self.bytes.get(o as usize..o as usize + buf.len()) {
                Some(src) => {
                    buf.copy_from_slice(src);
                    true
                }
                None => false,
            }
        }
    }
}

/// A test world: memory, TEXT at `text` (IPA, VA), tables placed at
/// `TABLES + shift`.
struct World {
    mem: Mem,
    text: IpaSpan,
    text_va: u64,
    image: IpaSpan,
}

impl World {
    fn new() -> Self {
        Self::at(0)
    }
    /// Everything moved by `shift` bytes (KASLR moves the kernel whole).
    fn at(shift: u64) -> Self {
        World {
            mem: Mem::new(),
            text: IpaSpan::new(TEXT.0 + shift, TEXT.1 + shift).unwrap(),
            text_va: TEXT_VA + shift * 3,
            image: IpaSpan::new(TEXT.0 + shift, IMAGE_END + shift).unwrap(),
        }
    }
    fn ipa(&self, off: u64) -> u64 {
        self.text.start() + off
    }
    fn va(&self, off: u64) -> u64 {
        self.text_va + off
    }
    /// Writes a jump table of (site offset, target offset) at `TABLES`.
    fn jump_table(&mut self, entries: &[(u64, u64)]) -> u64 {
        let table = self.image.start() + (TABLES - TEXT.0);
        for (i, &(site, target)) in entries.iter().enumerate() {
            let e = table + i as u64 * 16;
            let code = self.ipa(site).wrapping_sub(e) as i64 as i32;
            let tgt = self.ipa(target).wrapping_sub(e + 4) as i64 as i32;
            self.mem.put32(e, code as u32);
            self.mem.put32(e + 4, tgt as u32);
            self.mem.put64(e + 8, 0xffff_8000_8300_0000 + i as u64);
        }
        table
    }
    /// Writes a table of u64 values at `TABLES + at`.
    fn u64_table(&mut self, at: u64, values: &[u64]) -> u64 {
        let table = self.image.start() + (TABLES - TEXT.0) + at;
        for (i, &v) in values.iter().enumerate() {
            self.mem.put64(table + i as u64 * 8, v);
        }
        table
    }
    /// Lays out an ftrace-able function whose literal is at text offset
    /// `lit`; returns the offset of its call site.
    fn function(&mut self, lit: u64, bti: bool) -> u64 {
        let l = self.ipa(lit);
        self.mem.put64(l, NOP_OPS);
        let mut at = l + 8;
        if bti {
            self.mem.put32(at, BTI_C);
            at += 4;
        }
        self.mem.put32(at, MOV_X9_X30);
        self.mem.put32(at + 4, NOP);
        at + 4 - self.text.start()
    }
    fn register(
        &mut self,
        reg: &mut SiteRegistry<'_>,
        kind: SiteTable,
        table: u64,
        count: u64,
    ) -> Result<Registered, TableError> {
        let (text, image, text_va) = (self.text, self.image, self.text_va);
        let mut read = self.mem.reader();
        reg.register(kind, table, count, text_va, text, image, &mut read)
    }
    fn capture(&mut self, reg: &mut SiteRegistry<'_>) -> u64 {
        let mut read = self.mem.reader();
        reg.capture(&mut read)
    }
}

struct Store {
    jump: Vec<JumpSite>,
    ftrace: Vec<FtraceSite>,
}

impl Store {
    fn new() -> Self {
        Self::with(MAX_JUMP_SITES, MAX_FTRACE_SITES)
    }
    fn with(jump: usize, ftrace: usize) -> Self {
        Store {
            jump: vec![JumpSite::default(); jump],
            ftrace: vec![FtraceSite::default(); ftrace],
        }
    }
    fn registry(&mut self) -> SiteRegistry<'_> {
        SiteRegistry::new(SiteStorage {
            jump: &mut self.jump,
            ftrace: &mut self.ftrace,
        })
    }
}

fn insn(ipa: u64, old: u32, new: u32) -> PatchRequest {
    PatchRequest {
        ipa,
        size: 4,
        old: old.into(),
        new: new.into(),
    }
}

fn b(w: &World, site: u64, target: u64) -> u32 {
    encode_b(w.ipa(site), w.ipa(target)).unwrap()
}

/// A bad jump table: what is wrong, its (site, target) offsets, the error.
type JumpCase = (&'static str, Vec<(u64, u64)>, TableError);

/// A bad mcount table: what is wrong, the literal's offset, how the
/// function is spoilt, the error.
type McountCase<'a> = (&'static str, u64, &'a dyn Fn(&mut World), TableError);

const ALL: PatchPolicy = PatchPolicy::ALLOW_ALL;

#[test]
fn policy_from_the_command_line() {
    let p = PatchPolicy::from_cmdline;
    assert_eq!(p(b""), ALL);
    assert_eq!(p(b"console=ttyAMA0 root=/dev/vda"), ALL);
    assert_eq!(
        p(b"pvguard_ftrace=refuse"),
        PatchPolicy {
            ftrace: false,
            kprobes: true
        }
    );
    assert_eq!(
        p(b"pvguard_kprobes=refuse\tquiet"),
        PatchPolicy {
            ftrace: true,
            kprobes: false
        }
    );
    // Unknown values, bare names and empty values refuse.
    for line in [
        &b"pvguard_ftrace=yes"[..],
        b"pvguard_ftrace",
        b"pvguard_ftrace=",
        b"pvguard_ftrace=ALLOW",
        b"pvguard_ftrace=allow2",
    ] {
        assert!(!p(line).ftrace, "{}", String::from_utf8_lossy(line));
        assert!(p(line).kprobes);
    }
    // The last occurrence wins.
    assert!(p(b"pvguard_ftrace=refuse pvguard_ftrace=allow").ftrace);
    assert!(!p(b"pvguard_ftrace=allow pvguard_ftrace=refuse").ftrace);
    // Longer names are other words; a NUL ends the line (device tree).
    assert_eq!(p(b"pvguard_ftrace_x=refuse xpvguard_kprobes=refuse"), ALL);
    assert_eq!(p(b"quiet\0pvguard_kprobes=refuse"), ALL);
    assert!(!p(b"a\npvguard_kprobes=refuse\0").kprobes);
    assert_eq!(PatchPolicy::word(true), "allow");
    assert_eq!(PatchPolicy::word(false), "refuse");
}

/// A jump table of three sites (one holding B at registration) and one
/// init-text entry, registered.
fn jump_world() -> (World, Store) {
    let mut w = World::new();
    let mut s = Store::new();
    w.mem.put32(w.ipa(0x100), NOP);
    let bb = b(&w, 0x200, 0x280);
    w.mem.put32(w.ipa(0x200), bb);
    w.mem.put32(w.ipa(0x3000), NOP);
    // Init text lies after TEXT; its entries are skipped.
    let table = w.jump_table(&[
        (0x3000, 0x2000),
        (0x100, 0x140),
        (0x200, 0x280),
        (TEXT.1 - TEXT.0 + 0x10_0000, 0x100),
    ]);
    let mut reg = s.registry();
    assert_eq!(
        w.register(&mut reg, SiteTable::JumpTable, table, 4),
        Ok(Registered {
            sites: 3,
            skipped: 1
        })
    );
    assert!(reg.is_registered(SiteTable::JumpTable));
    (w, s)
}

/// Registers the jump table of `jump_world` again into a fresh registry.
fn jump_registry<'a>(w: &mut World, s: &'a mut Store) -> SiteRegistry<'a> {
    let mut reg = s.registry();
    let table = TABLES;
    w.register(&mut reg, SiteTable::JumpTable, table, 4)
        .unwrap();
    reg
}

#[test]
fn jump_labels_flip_only_to_their_own_target() {
    let (mut w, mut s) = jump_world();
    let reg = jump_registry(&mut w, &mut s);
    let text = w.text;
    let on = b(&w, 0x100, 0x140);
    let site = w.ipa(0x100);
    assert_eq!(
        reg.decide(text, ALL, insn(site, NOP, on), None),
        Ok(Accepted::JumpLabel {
            target: w.ipa(0x140),
            on: true
        })
    );
    assert_eq!(
        reg.decide(text, ALL, insn(site, on, NOP), None),
        Ok(Accepted::JumpLabel {
            target: w.ipa(0x140),
            on: false
        })
    );
    // A B to a foreign target at a real site.
    let foreign = b(&w, 0x100, 0x180);
    assert_eq!(
        reg.decide(text, ALL, insn(site, NOP, foreign), None),
        Err(Refusal::ForeignBranch)
    );
    assert_eq!(
        reg.decide(text, ALL, insn(site, on, foreign), None),
        Err(Refusal::ForeignBranch),
        "B -> B"
    );
    assert_eq!(
        reg.decide(text, ALL, insn(site, NOP, BRK_KPROBES), None),
        Err(Refusal::ForeignBranch),
        "no BRK on a jump site"
    );
    assert_eq!(
        reg.decide(text, ALL, insn(site, NOP, NOP), None),
        Err(Refusal::Identical)
    );
    // Policy does not touch jump labels.
    let none = PatchPolicy {
        ftrace: false,
        kprobes: false,
    };
    assert!(reg.decide(text, none, insn(site, NOP, on), None).is_ok());
    // Non-sites: B -> NOP, NOP -> B, ret at a function entry.
    let loop_b = b(&w, 0x400, 0x3f0);
    for (at, old, new) in [
        (0x400, loop_b, NOP),
        (0x104, NOP, b(&w, 0x104, 0x140)),
        (0x800, 0xa9bf_7bfd, RET),
    ] {
        assert_eq!(
            reg.decide(text, none, insn(w.ipa(at), old, new), None),
            Err(Refusal::NotASite),
            "{at:#x}"
        );
    }
}

#[test]
fn writes_are_checked_for_size_alignment_and_place() {
    let (mut w, mut s) = jump_world();
    let reg = jump_registry(&mut w, &mut s);
    let text = w.text;
    let site = w.ipa(0x100);
    let on = b(&w, 0x100, 0x140);
    let mut r = insn(site, NOP, on);
    r.size = 2;
    assert_eq!(reg.decide(text, ALL, r, None), Err(Refusal::SizeMismatch));
    r.size = 8;
    assert_eq!(reg.decide(text, ALL, r, None), Err(Refusal::SizeMismatch));
    r.size = 4;
    r.new |= 1 << 32;
    assert_eq!(reg.decide(text, ALL, r, None), Err(Refusal::SizeMismatch));
    assert_eq!(
        reg.decide(text, ALL, insn(site + 2, NOP, on), None),
        Err(Refusal::Misaligned)
    );
    for at in [TEXT.0 - 4, TEXT.1, u64::MAX - 3] {
        assert_eq!(
            reg.decide(text, ALL, insn(at, NOP, BRK_KPROBES), None),
            Err(Refusal::OutsideText)
        );
    }
}

#[test]
fn bad_jump_tables_are_refused_whole() {
    let cases: [JumpCase; 6] = [
        (
            "misaligned site",
            vec![(0x100, 0x140), (0x102, 0x140)],
            TableError::Misaligned { entry: 1 },
        ),
        (
            "target outside text",
            vec![(0x100, 0x140), (0x100, TEXT.1 - TEXT.0)],
            TableError::OutsideText { entry: 1 },
        ),
        (
            "self branch",
            vec![(0x100, 0x100)],
            TableError::SelfBranch { entry: 0 },
        ),
        (
            "wrong instruction",
            vec![(0x100, 0x140), (0x500, 0x540)],
            TableError::WrongInstruction {
                entry: 1,
                at: TEXT.0 + 0x500,
                insn: RET,
            },
        ),
        (
            "B to another target",
            vec![(0x200, 0x240)],
            TableError::WrongInstruction {
                entry: 0,
                at: TEXT.0 + 0x200,
                insn: 0x1400_0020,
            },
        ),
        (
            "one site, two targets",
            vec![(0x100, 0x140), (0x3000, 0x2000), (0x100, 0x180)],
            TableError::Duplicate { at: TEXT.0 + 0x100 },
        ),
    ];
    for (what, entries, want) in cases {
        let mut w = World::new();
        let mut s = Store::new();
        w.mem.put32(w.ipa(0x100), NOP);
        w.mem.put32(w.ipa(0x3000), NOP);
        w.mem.put32(w.ipa(0x500), RET);
        let bb = b(&w, 0x200, 0x280);
        w.mem.put32(w.ipa(0x200), bb);
        let table = w.jump_table(&entries);
        let mut reg = s.registry();
        let n = entries.len() as u64;
        assert_eq!(
            w.register(&mut reg, SiteTable::JumpTable, table, n),
            Err(want),
            "{what}"
        );
        assert_eq!(want.kp_error(), KpError::ArgumentInvalid);
        // Nothing was registered; the next attempt may succeed.
        assert_eq!(reg.jump_sites(), 0);
        assert!(!reg.is_registered(SiteTable::JumpTable));
        let on = b(&w, 0x100, 0x140);
        assert_eq!(
            reg.decide(w.text, ALL, insn(w.ipa(0x100), NOP, on), None),
            Err(Refusal::NotASite)
        );
        let good = w.jump_table(&[(0x100, 0x140)]);
        assert!(w.register(&mut reg, SiteTable::JumpTable, good, 1).is_ok());
    }
}

#[test]
fn same_site_same_target_is_kept_once() {
    let mut w = World::new();
    let mut s = Store::new();
    w.mem.put32(w.ipa(0x100), NOP);
    let table = w.jump_table(&[(0x100, 0x140), (0x100, 0x140)]);
    let mut reg = s.registry();
    assert_eq!(
        w.register(&mut reg, SiteTable::JumpTable, table, 2),
        Ok(Registered {
            sites: 1,
            skipped: 0
        })
    );
}

#[test]
fn table_placement_counts_and_order() {
    let mut w = World::new();
    let mut s = Store::with(4, 4);
    w.mem.put32(w.ipa(0x100), NOP);
    let table = w.jump_table(&[(0x100, 0x140)]);
    let mut reg = s.registry();
    let kinds = [
        SiteTable::JumpTable,
        SiteTable::FtraceCallers,
        SiteTable::McountLoc,
    ];
    for kind in kinds {
        // ftrace sites need their trampolines first, whatever the count.
        let want = if kind == SiteTable::McountLoc {
            TableError::CallersFirst
        } else {
            TableError::Count
        };
        for count in [0, u64::MAX] {
            assert_eq!(
                w.register(&mut reg, kind, table, count),
                Err(want),
                "{kind:?}"
            );
        }
    }
    assert_eq!(
        w.register(&mut reg, SiteTable::McountLoc, table, 1),
        Err(TableError::CallersFirst)
    );
    assert_eq!(TableError::CallersFirst.kp_error(), KpError::ObjectState);
    assert_eq!(
        w.register(&mut reg, SiteTable::JumpTable, table, 9),
        Err(TableError::Count),
        "above twice the capacity (room for skipped entries)"
    );
    assert_eq!(TableError::Count.kp_error(), KpError::ArgumentSize);
    assert_eq!(
        w.register(&mut reg, SiteTable::FtraceCallers, table, 5),
        Err(TableError::Count),
        "above MAX_FTRACE_CALLERS"
    );
    assert_eq!(
        w.register(&mut reg, SiteTable::JumpTable, table + 4, 1),
        Err(TableError::TableMisaligned)
    );
    assert_eq!(
        TableError::TableMisaligned.kp_error(),
        KpError::ArgumentAlignment
    );
    // Outside the image: below it, past its end, straddling it.
    for (at, n) in [(TEXT.0 - 16, 1), (IMAGE_END, 1), (IMAGE_END - 16, 2)] {
        assert_eq!(
            w.register(&mut reg, SiteTable::JumpTable, at, n),
            Err(TableError::TableOutsideImage),
            "{at:#x}"
        );
    }
    assert_eq!(
        TableError::TableOutsideImage.kp_error(),
        KpError::AddrInvalid
    );
    assert!(w.register(&mut reg, SiteTable::JumpTable, table, 1).is_ok());
    assert_eq!(
        w.register(&mut reg, SiteTable::JumpTable, table, 1),
        Err(TableError::AlreadyRegistered)
    );
    assert_eq!(
        TableError::AlreadyRegistered.kp_error(),
        KpError::ObjectConfigured
    );
    // No storage at all: every table is too large.
    let mut empty = SiteRegistry::new(SiteStorage::none());
    assert_eq!(
        w.register(&mut empty, SiteTable::JumpTable, table, 1),
        Err(TableError::Count)
    );
}

#[test]
fn wrapping_entries_are_refused() {
    let mut w = World::new();
    let mut s = Store::new();
    let table = TABLES;
    // code = i32::MIN from an entry at about 1 GiB: below 0.
    w.mem.put32(table, i32::MIN as u32);
    w.mem.put32(table + 4, 0);
    let mut reg = s.registry();
    assert_eq!(
        w.register(&mut reg, SiteTable::JumpTable, table, 1),
        Err(TableError::Wraps { entry: 0 })
    );
    // mcount entries below TEXT's VA (NULL padding included) are outside
    // it, and skipped; one past the top of the address space wraps.
    let mut reg = s.registry();
    let callers = w.u64_table(0x1000, &[w.va(0x40)]);
    w.register(&mut reg, SiteTable::FtraceCallers, callers, 1)
        .unwrap();
    let mc = w.u64_table(0x2000, &[w.text_va - 8, 0]);
    assert_eq!(
        w.register(&mut reg, SiteTable::McountLoc, mc, 2),
        Ok(Registered {
            sites: 0,
            skipped: 2
        })
    );
    let mut far = World::new();
    far.text_va = 0x1000;
    far.text = IpaSpan::new(u64::MAX - 0xfff, u64::MAX).unwrap();
    let t = Table {
        ipa: 0,
        count: 1,
        entry_size: 8,
        text_va: far.text_va,
        text: far.text,
    };
    assert_eq!(
        SiteRegistry::va_to_ipa(&t, 0x3000, 7),
        Err(TableError::Wraps { entry: 7 })
    );
}

/// Callers at 0x40 and 0x80; functions with and without BTI; a jump
/// site too.
fn ftrace_world() -> (World, Store, [u64; 3]) {
    let mut w = World::new();
    let s = Store::new();
    let f0 = w.function(0x1000, false);
    let f1 = w.function(0x1100, true);
    let f2 = w.function(0x1ff8, true); // literal on one page, BL on the next
    w.mem.put32(w.ipa(0x100), NOP);
    (w, s, [f0, f1, f2])
}

fn ftrace_registry<'a>(w: &mut World, s: &'a mut Store) -> SiteRegistry<'a> {
    let mut reg = s.registry();
    let jt = w.jump_table(&[(0x100, 0x140)]);
    w.register(&mut reg, SiteTable::JumpTable, jt, 1).unwrap();
    let callers = w.u64_table(0x1000, &[w.va(0x40), w.va(0x80)]);
    assert_eq!(
        w.register(&mut reg, SiteTable::FtraceCallers, callers, 2),
        Ok(Registered {
            sites: 2,
            skipped: 0
        })
    );
    let init = w.va(TEXT.1 - TEXT.0 + 0x1000);
    let mc = w.u64_table(0x2000, &[w.va(0x1ff8), w.va(0x1000), init, w.va(0x1100)]);
    assert_eq!(
        w.register(&mut reg, SiteTable::McountLoc, mc, 4),
        Ok(Registered {
            sites: 3,
            skipped: 1
        })
    );
    assert_eq!(
        (reg.ftrace_sites(), reg.ftrace_callers(), reg.jump_sites()),
        (3, 2, 1)
    );
    reg
}

#[test]
fn ftrace_call_sites_reach_only_registered_trampolines() {
    let (mut w, mut s, fs) = ftrace_world();
    let reg = ftrace_registry(&mut w, &mut s);
    let text = w.text;
    assert_eq!(fs, [0x100c, 0x1110, 0x2008]);
    for f in fs {
        let site = w.ipa(f);
        let c0 = encode_bl(site, w.ipa(0x40)).unwrap();
        let c1 = encode_bl(site, w.ipa(0x80)).unwrap();
        let other = encode_bl(site, w.ipa(0xc0)).unwrap();
        // Unchanged writes too: ftrace_modify_call() with the same
        // trampoline when only the site's ops change.
        for (old, new) in [
            (NOP, c0),
            (c0, NOP),
            (c0, c1),
            (c1, c0),
            (NOP, c1),
            (c0, c0),
            (NOP, NOP),
        ] {
            assert_eq!(
                reg.decide(text, ALL, insn(site, old, new), None),
                Ok(Accepted::FtraceCall)
            );
        }
        for (old, new) in [
            (NOP, other),
            (other, NOP),
            (c0, other),
            (NOP, b(&w, f, 0x40)),
            (NOP, BRK_KPROBES),
            (NOP, RET),
        ] {
            assert_eq!(
                reg.decide(text, ALL, insn(site, old, new), None),
                Err(Refusal::NotFtraceCall),
                "{old:#x} -> {new:#x}"
            );
        }
        let no_ftrace = PatchPolicy {
            ftrace: false,
            kprobes: true,
        };
        assert_eq!(
            reg.decide(text, no_ftrace, insn(site, NOP, c0), None),
            Err(Refusal::FtraceRefused)
        );
        assert_eq!(
            reg.decide(text, no_ftrace, insn(site, c0, c0), None),
            Err(Refusal::Identical)
        );
        // Nothing else may be rewritten unchanged.
        assert_eq!(
            reg.decide(text, ALL, insn(w.ipa(0x3000), NOP, NOP), None),
            Err(Refusal::Identical)
        );
    }
}

#[test]
fn ftrace_literals_take_kernel_pointers_only() {
    let (mut w, mut s, _) = ftrace_world();
    let reg = ftrace_registry(&mut w, &mut s);
    let text = w.text;
    let lit = |v: u64, at: u64| PatchRequest {
        ipa: at,
        size: 8,
        old: NOP_OPS,
        new: v,
    };
    for at in [w.ipa(0x1000), w.ipa(0x1100), w.ipa(0x1ff8)] {
        for v in [0, NOP_OPS, NOP_OPS + 0x40, !7] {
            assert_eq!(
                reg.decide(text, ALL, lit(v, at), None),
                Ok(Accepted::FtraceLiteral),
                "{v:#x}"
            );
        }
        for v in [1, 0x4020_0000, 0x0000_ffff_ffff_f000, 0xfffe_8000_0000_0000] {
            assert_eq!(
                reg.decide(text, ALL, lit(v, at), None),
                Err(Refusal::BadLiteral),
                "{v:#x}"
            );
        }
        let no_ftrace = PatchPolicy {
            ftrace: false,
            kprobes: true,
        };
        assert_eq!(
            reg.decide(text, no_ftrace, lit(0, at), None),
            Err(Refusal::FtraceRefused)
        );
        // Half of it, as an instruction; or BRK into it.
        for half in [at, at + 4] {
            assert_eq!(
                reg.decide(text, ALL, insn(half, NOP, BRK_KPROBES), None),
                Err(Refusal::SizeMismatch)
            );
        }
    }
    // 8 bytes anywhere else, or misaligned.
    for at in [w.ipa(0x1008), w.ipa(0x2000), w.ipa(0x100)] {
        assert_eq!(
            reg.decide(text, ALL, lit(0, at), None),
            Err(Refusal::SizeMismatch)
        );
    }
    assert_eq!(
        reg.decide(text, ALL, lit(0, w.ipa(0x1004)), None),
        Err(Refusal::Misaligned)
    );
}

#[test]
fn bad_mcount_tables_are_refused_whole() {
    let setups: [McountCase<'_>; 6] = [
        (
            "misaligned literal",
            0x1004,
            &|_| {},
            TableError::Misaligned { entry: 0 },
        ),
        (
            "no MOV X9, X30",
            0x1000,
            &|w| w.mem.put32(w.ipa(0x1008), NOP),
            TableError::WrongInstruction {
                entry: 0,
                at: TEXT.0 + 0x1008,
                insn: NOP,
            },
        ),
        (
            "BL to a non-trampoline",
            0x1000,
            &|w| {
                let bl = encode_bl(w.ipa(0x100c), w.ipa(0xc0)).unwrap();
                w.mem.put32(w.ipa(0x100c), bl)
            },
            TableError::WrongInstruction {
                entry: 0,
                at: TEXT.0 + 0x100c,
                insn: encode_bl(TEXT.0 + 0x100c, TEXT.0 + 0xc0).unwrap(),
            },
        ),
        (
            "the same function twice",
            0x1000,
            &|_| {},
            TableError::Overlap {
                at: TEXT.0 + 0x100c,
            },
        ),
        (
            "a jump site at the call site",
            0x2000,
            &|_| {},
            TableError::Overlap {
                at: TEXT.0 + 0x200c,
            },
        ),
        (
            "sequence past TEXT's end",
            TEXT.1 - TEXT.0 - 8,
            &|w| {
                let l = w.ipa(TEXT.1 - TEXT.0 - 8);
                w.mem.put64(l, NOP_OPS);
            },
            TableError::OutsideText { entry: 0 },
        ),
    ];
    for (what, lit, setup, want) in setups {
        let mut w = World::new();
        let mut s = Store::new();
        w.function(0x1000, false);
        w.function(0x2000, false);
        setup(&mut w);
        let mut reg = s.registry();
        // A jump site on 0x2000's call site (a NOP, so it registers).
        let jt = w.jump_table(&[(0x200c, 0x2040)]);
        w.register(&mut reg, SiteTable::JumpTable, jt, 1).unwrap();
        let callers = w.u64_table(0x1000, &[w.va(0x40)]);
        w.register(&mut reg, SiteTable::FtraceCallers, callers, 1)
            .unwrap();
        let entries: Vec<u64> = if what == "the same function twice" {
            vec![w.va(lit), w.va(lit)]
        } else {
            vec![w.va(lit)]
        };
        let mc = w.u64_table(0x2000, &entries);
        assert_eq!(
            w.register(&mut reg, SiteTable::McountLoc, mc, entries.len() as u64),
            Err(want),
            "{what}"
        );
        assert_eq!(reg.ftrace_sites(), 0);
        assert!(!reg.is_registered(SiteTable::McountLoc));
    }
}

#[test]
fn a_jump_site_on_a_registered_ftrace_site_is_refused() {
    let mut w = World::new();
    let mut s = Store::new();
    let site = w.function(0x1000, false);
    let mut reg = s.registry();
    let callers = w.u64_table(0x1000, &[w.va(0x40)]);
    w.register(&mut reg, SiteTable::FtraceCallers, callers, 1)
        .unwrap();
    let mc = w.u64_table(0x2000, &[w.va(0x1000)]);
    w.register(&mut reg, SiteTable::McountLoc, mc, 1).unwrap();
    let jt = w.jump_table(&[(site, site + 0x40)]);
    assert_eq!(
        w.register(&mut reg, SiteTable::JumpTable, jt, 1),
        Err(TableError::Overlap { at: w.ipa(site) })
    );
}

#[test]
fn callers_must_be_text_instructions() {
    for (va_off, want) in [
        (0x42, TableError::Misaligned { entry: 1 }),
        (TEXT.1 - TEXT.0, TableError::OutsideText { entry: 1 }),
    ] {
        let mut w = World::new();
        let mut s = Store::new();
        let mut reg = s.registry();
        let callers = w.u64_table(0x1000, &[w.va(0x40), w.va(va_off)]);
        assert_eq!(
            w.register(&mut reg, SiteTable::FtraceCallers, callers, 2),
            Err(want)
        );
        assert_eq!(reg.ftrace_callers(), 0);
    }
}

#[test]
fn kprobes_brk_anywhere_else_and_restore_exactly() {
    let (mut w, mut s, fs) = ftrace_world();
    let reg = ftrace_registry(&mut w, &mut s);
    let text = w.text;
    let at = w.ipa(0x800);
    let orig = 0xa9bf_7bfd; // stp x29, x30, [sp, #-16]!
    assert_eq!(
        reg.decide(text, ALL, insn(at, orig, BRK_KPROBES), None),
        Ok(Accepted::KprobeArm { original: orig })
    );
    assert_eq!(
        reg.decide(text, ALL, insn(at, BRK_KPROBES, orig), Some(orig)),
        Ok(Accepted::KprobeDisarm)
    );
    assert_eq!(
        reg.decide(text, ALL, insn(at, BRK_KPROBES, RET), Some(orig)),
        Err(Refusal::BrkRestoreMismatch { original: orig })
    );
    // A BRK the hypervisor did not write is not restored.
    assert_eq!(
        reg.decide(text, ALL, insn(at, BRK_KPROBES, orig), None),
        Err(Refusal::NotASite)
    );
    // The MOV and BTI before an ftrace call site are instructions too.
    assert_eq!(
        reg.decide(
            text,
            ALL,
            insn(w.ipa(fs[1] - 4), MOV_X9_X30, BRK_KPROBES),
            None
        ),
        Ok(Accepted::KprobeArm {
            original: MOV_X9_X30
        })
    );
    let no_kprobes = PatchPolicy {
        ftrace: true,
        kprobes: false,
    };
    assert_eq!(
        reg.decide(text, no_kprobes, insn(at, orig, BRK_KPROBES), None),
        Err(Refusal::KprobesRefused)
    );
    // Not over a site.
    assert_eq!(
        reg.decide(text, ALL, insn(w.ipa(fs[0]), NOP, BRK_KPROBES), None),
        Err(Refusal::NotFtraceCall)
    );
}

#[test]
fn capture_and_restore_give_text_as_it_was_at_enable() {
    let (mut w, mut s, fs) = ftrace_world();
    // Before enable the guest turned a static key on and traced f1.
    let on = b(&w, 0x100, 0x140);
    w.mem.put32(w.ipa(0x100), on);
    let call = encode_bl(w.ipa(fs[1]), w.ipa(0x80)).unwrap();
    w.mem.put32(w.ipa(fs[1]), call);
    let mut reg = ftrace_registry(&mut w, &mut s);
    assert_eq!(w.capture(&mut reg), 0);
    let page = |w: &mut World, p: u64| w.mem.slice(w.ipa(p), 4096).to_vec();
    let enabled: Vec<Vec<u8>> = (0..3).map(|p| page(&mut w, p * 4096)).collect();
    // Flip everything.
    w.mem.put32(w.ipa(0x100), NOP);
    w.mem.put32(w.ipa(fs[1]), NOP);
    let c0 = encode_bl(w.ipa(fs[0]), w.ipa(0x40)).unwrap();
    w.mem.put32(w.ipa(fs[0]), c0);
    let c2 = encode_bl(w.ipa(fs[2]), w.ipa(0x80)).unwrap();
    w.mem.put32(w.ipa(fs[2]), c2);
    for l in [0x1000, 0x1100, 0x1ff8] {
        let at = w.ipa(l);
        w.mem.put64(at, 0xffff_0000_1234_5678);
    }
    for p in 0..3u64 {
        let mut buf = page(&mut w, p * 4096);
        assert_ne!(buf, enabled[p as usize], "page {p} changed");
        assert!(reg.restore(w.ipa(p * 4096), &mut buf), "legit states");
        assert_eq!(buf, enabled[p as usize], "page {p} restored");
    }
    // A site in a state no rule allows is reported.
    w.mem.put32(w.ipa(0x100), RET);
    let mut buf = page(&mut w, 0);
    assert!(!reg.restore(w.ipa(0), &mut buf));
    assert_eq!(buf, enabled[0], "still restored");
    w.mem.put32(w.ipa(0x100), NOP);
    w.mem.put64(w.ipa(0x1000), 0x1234);
    let mut buf = page(&mut w, 4096);
    assert!(!reg.restore(w.ipa(4096), &mut buf), "user pointer literal");
    // The next word a restore may change.
    assert_eq!(reg.next_word(w.ipa(0)), Some(w.ipa(0x100)));
    assert_eq!(reg.next_word(w.ipa(0x104)), Some(w.ipa(0x1000)));
    assert_eq!(reg.next_word(w.ipa(0x1004)), Some(w.ipa(0x1004)));
    assert_eq!(reg.next_word(w.ipa(0x1010)), Some(w.ipa(0x1100)));
    assert_eq!(reg.next_word(w.ipa(0x2000)), Some(w.ipa(0x2008)));
    assert_eq!(reg.next_word(w.ipa(0x200c)), None);
}

#[test]
fn capture_drops_sites_changed_before_enable() {
    let (mut w, mut s, fs) = ftrace_world();
    let mut reg = ftrace_registry(&mut w, &mut s);
    // After registration, before enable: a jump site rewritten, one
    // literal different from the others, one MOV gone.
    w.mem.put32(w.ipa(0x100), RET);
    w.mem.put64(w.ipa(0x1100), NOP_OPS + 8);
    w.mem.put32(w.ipa(fs[2] - 4), NOP);
    assert_eq!(w.capture(&mut reg), 3);
    assert_eq!((reg.jump_sites(), reg.ftrace_sites()), (0, 1));
    let site = w.ipa(0x100);
    assert_eq!(
        reg.decide(w.text, ALL, insn(site, RET, NOP), None),
        Err(Refusal::NotASite)
    );
    let c0 = encode_bl(w.ipa(fs[0]), w.ipa(0x40)).unwrap();
    assert!(reg
        .decide(w.text, ALL, insn(w.ipa(fs[0]), NOP, c0), None)
        .is_ok());
}

#[test]
fn kaslr_moves_sites_and_targets_together() {
    for shift in [0u64, 0x20_0000, 0x1_0000] {
        let mut w = World::at(shift);
        let mut s = Store::new();
        w.mem.put32(w.ipa(0x100), NOP);
        let f = w.function(0x1000, true);
        let mut reg = s.registry();
        let jt = w.jump_table(&[(0x100, 0x140)]);
        w.register(&mut reg, SiteTable::JumpTable, jt, 1).unwrap();
        let callers = w.u64_table(0x1000, &[w.va(0x40)]);
        w.register(&mut reg, SiteTable::FtraceCallers, callers, 1)
            .unwrap();
        let mc = w.u64_table(0x2000, &[w.va(0x1000)]);
        assert_eq!(
            w.register(&mut reg, SiteTable::McountLoc, mc, 1)
                .map(|r| r.sites),
            Ok(1)
        );
        let on = b(&w, 0x100, 0x140);
        assert!(reg
            .decide(w.text, ALL, insn(w.ipa(0x100), NOP, on), None)
            .is_ok());
        let call = encode_bl(w.ipa(f), w.ipa(0x40)).unwrap();
        assert_eq!(
            reg.decide(w.text, ALL, insn(w.ipa(f), NOP, call), None),
            Ok(Accepted::FtraceCall),
            "{shift:#x}"
        );
    }
}

#[test]
fn full_tables_fit() {
    let mut w = World::new();
    let mut s = Store::new();
    // MAX_JUMP_SITES sites at every other instruction of TEXT's first
    // 128 KiB, each jumping to the next instruction.
    let entries: Vec<(u64, u64)> = (0..MAX_JUMP_SITES as u64)
        .map(|i| (i * 8, i * 8 + 4))
        .collect();
    for &(site, _) in &entries {
        w.mem.put32(w.ipa(site), NOP);
    }
    let table = w.jump_table(&entries);
    let mut reg = s.registry();
    assert_eq!(
        w.register(&mut reg, SiteTable::JumpTable, table, MAX_JUMP_SITES as u64)
            .map(|r| r.sites),
        Ok(MAX_JUMP_SITES as u64)
    );
    let last = (MAX_JUMP_SITES as u64 - 1) * 8;
    let on = b(&w, last, last + 4);
    assert!(reg
        .decide(w.text, ALL, insn(w.ipa(last), NOP, on), None)
        .is_ok());
}

#[test]
fn unreadable_entries_refuse_the_table() {
    let mut w = World::new();
    let mut s = Store::new();
    let mut reg = s.registry();
    // The table lies in the image, but the reader fails past RAM's end:
    // make an image span that reaches beyond the fake memory.
    w.image = IpaSpan::new(TEXT.0, RAM + (16 << 20)).unwrap();
    let at = RAM + (8 << 20) - 16;
    assert_eq!(
        w.register(&mut reg, SiteTable::JumpTable, at, 4),
        Err(TableError::Unreadable { entry: 0 })
    );
    assert_eq!(
        TableError::Unreadable { entry: 0 }.kp_error(),
        KpError::AddrInvalid
    );
}

#[test]
fn displays() {
    let refusals = [
        Refusal::SizeMismatch,
        Refusal::Misaligned,
        Refusal::OutsideText,
        Refusal::Identical,
        Refusal::NotASite,
        Refusal::ForeignBranch,
        Refusal::NotFtraceCall,
        Refusal::BadLiteral,
        Refusal::FtraceRefused,
        Refusal::KprobesRefused,
        Refusal::BrkRestoreMismatch { original: 1 },
    ];
    for r in refusals {
        assert!(!r.to_string().is_empty());
    }
    assert_eq!(
        TableError::Duplicate { at: 0x10 }.to_string(),
        "two targets for the site at 0x10"
    );
    assert!(Accepted::FtraceLiteral.is_ftrace());
    assert!(Accepted::KprobeDisarm.is_kprobe());
    assert!(!Accepted::FtraceCall.is_kprobe());
}
