// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The page-permissions service (`MEM_PERMISSIONS`, `CODE_LOG` and the
//! stores into dynamic code it performs) on its own, under default deny,
//! against real stage-2 tables: random lists of (range, attributes) and
//! random stores through the text-poke slot. After every step:
//!
//! - no page of guest RAM is writable and executable at EL1;
//! - outside the kernel image, every page has one of the three
//!   permission sets the service gives (default, code, released);
//!   inside it, what kernel protect set, untouched;
//! - a refused call changes neither stage 2 nor the code log; an
//!   accepted one gives each entry's pages exactly its attributes, never
//!   EXEC under `lock`, and changes an IMMUTABLE page only by the
//!   release;
//! - a store the service performs lands on a page executable at EL1,
//!   and a refused one leaves guest memory as it was;
//! - a refused call also leaves the patch sites as they were.
//!
//! Calls may come with a site list (jump labels, ftrace call sites and
//! PLTs), and steps may write instructions into heap pages first, so
//! that lists the service accepts, and stores at their sites, are
//! reachable.

use std::collections::BTreeMap;
use std::fmt;

use arbitrary::Arbitrary;
use guest_kp::mem_perms::{
    Entry, Policy, SiteEntry, SiteList, ATTR_EXEC, ATTR_IMMUTABLE, ATTR_READ, ENTRY_SIZE,
    SITE_FTRACE, SITE_FTRACE_PLT, SITE_SIZE,
};
use guest_kp::patch::{encode_b, encode_bl, BR_X16, NOP};
use guest_kp::sites::{BTI_C, MOV_X9_X30};
use hyp_stub::addr::{GuestVa, Ipa, IpaRange};
use hyp_stub::devices::DeviceWindows;
use hyp_stub::esr::AbortSyndrome;
use hyp_stub::service::{CallResult, FaultAction, GuestFault, HypOps, OpsError};
use hyp_stub::services::kernel_protect::code_sites::{CodeSite, CodeSites};
use hyp_stub::services::kernel_protect::permissions::{
    stage2_perms, MemAttrs, Patching, Permissions,
};
use hyp_stub::sha256::Sha256;
use hyp_stub::stage2::{Perms, Stage2, Tlb};
use hyp_stub::vcpu::GuestRegs;

use crate::machine::{self, Pool};

const PAGE: u64 = 4096;
/// The kernel image's four regions, inside guest RAM.
const TEXT: (u64, u64) = (0x4020_0000, 0x4030_0000);
const RODATA: (u64, u64) = (0x4030_0000, 0x4038_0000);
const DATA: (u64, u64) = (0x4038_0000, 0x403c_0000);
const BSS: (u64, u64) = (0x403c_0000, 0x4040_0000);
/// Where the guest's pages of code come from: 256 pages.
const HEAP: u64 = 0x4100_0000;
/// The page the list is written to.
const LIST: u64 = 0x4200_0000;
/// Where site lists are written.
const SITES: u64 = 0x4200_1000;
/// The image's ftrace trampoline, by VA (in TEXT).
const TRAMPOLINE: u64 = KVA + TEXT.0 + 0x100;
/// Where EL1 runs what the lists make executable.
const KVA: u64 = 0xffff_8000_0000_0000;
/// The store through the text-poke slot, as the guest's fixmap maps it.
const FIXMAP: u64 = 0xffff_7fff_fe7f_d000;

fn range((s, e): (u64, u64)) -> IpaRange {
    IpaRange::new(Ipa(s), e - s).expect("region")
}

fn image() -> [(IpaRange, Perms); 4] {
    [
        (range(TEXT), Perms::R_EL1X),
        (range(RODATA), Perms::READ),
        (range(DATA), Perms::RW),
        (range(BSS), Perms::RW),
    ]
}

struct NoTlb;

impl Tlb for NoTlb {
    fn invalidate_ipa(&mut self, _: Ipa) {}
    fn invalidate_all(&mut self) {}
}

static NO_DEVICES: DeviceWindows = DeviceWindows::empty();

/// The core's side: guest RAM (sparse, zero until written) and stage 2.
struct Ops {
    ram: IpaRange,
    mem: BTreeMap<u64, Box<[u8; PAGE as usize]>>,
    s2: Stage2<Pool>,
}

impl Ops {
    fn byte(&self, a: u64) -> u8 {
        self.mem
            .get(&(a & !(PAGE - 1)))
            .map_or(0, |p| p[(a % PAGE) as usize])
    }
    fn set_byte(&mut self, a: u64, b: u8) {
        self.mem
            .entry(a & !(PAGE - 1))
            .or_insert_with(|| Box::new([0; PAGE as usize]))[(a % PAGE) as usize] = b;
    }
    fn write(&mut self, a: u64, bytes: &[u8]) {
        for (i, &b) in bytes.iter().enumerate() {
            self.set_byte(a + i as u64, b);
        }
    }
    fn inside(&self, ipa: Ipa, len: u64) -> bool {
        IpaRange::new(ipa, len.max(1)).is_some_and(|r| self.ram.covers(&r))
    }
    fn perms(&mut self, ipa: u64) -> Perms {
        self.s2.translate(Ipa(ipa)).expect("RAM is mapped").1.perms
    }
    /// Stage 2 as runs of (start, end, perms).
    fn leaves(&mut self) -> Vec<(u64, u64, Perms)> {
        let mut out: Vec<(u64, u64, Perms)> = Vec::new();
        self.s2
            .for_each_leaf(|r, _, attrs| match out.last_mut() {
                Some(last) if last.1 == r.start().get() && last.2 == attrs.perms => {
                    last.1 = r.end().get();
                }
                _ => out.push((r.start().get(), r.end().get(), attrs.perms)),
            })
            .expect("the tables walk");
        out
    }
}

impl HypOps for Ops {
    fn guest_ram(&self) -> IpaRange {
        self.ram
    }
    fn device_windows(&self) -> &DeviceWindows {
        &NO_DEVICES
    }
    fn read_guest(&mut self, ipa: Ipa, buf: &mut [u8]) -> Result<(), OpsError> {
        if !self.inside(ipa, buf.len() as u64) {
            return Err(OpsError::NotGuestRam);
        }
        for (i, b) in buf.iter_mut().enumerate() {
            *b = self.byte(ipa.get() + i as u64);
        }
        Ok(())
    }
    fn hash_guest(&mut self, ipa: Ipa, len: u64, sink: &mut Sha256) -> Result<(), OpsError> {
        if !self.inside(ipa, len) {
            return Err(OpsError::NotGuestRam);
        }
        let mut at = ipa.get();
        let end = at + len;
        while at < end {
            let n = (PAGE - at % PAGE).min(end - at);
            match self.mem.get(&(at & !(PAGE - 1))) {
                Some(p) => sink.update(&p[(at % PAGE) as usize..(at % PAGE + n) as usize]),
                None => sink.update(&[0u8; PAGE as usize][..n as usize]),
            }
            at += n;
        }
        Ok(())
    }
    fn write_guest_insn(&mut self, ipa: Ipa, insn: u32) -> Result<(), OpsError> {
        if !ipa.is_aligned(4) || !self.inside(ipa, 4) {
            return Err(OpsError::NotGuestRam);
        }
        self.write(ipa.get(), &insn.to_le_bytes());
        Ok(())
    }
    fn write_guest_u64(&mut self, ipa: Ipa, value: u64) -> Result<(), OpsError> {
        if !ipa.is_aligned(8) || !self.inside(ipa, 8) {
            return Err(OpsError::NotGuestRam);
        }
        self.write(ipa.get(), &value.to_le_bytes());
        Ok(())
    }
    fn log(&mut self, _: fmt::Arguments<'_>) {}
    fn set_perms(&mut self, range: IpaRange, perms: Perms) -> Result<(), OpsError> {
        self.s2
            .set_perms(range, perms, &mut NoTlb)
            .map_err(|_| OpsError::OutOfTables)
    }
}

/// A page: of the heap window, of the kernel image, or anywhere.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Page {
    Heap(u8),
    Image(u16),
    Raw(u64),
}

impl Page {
    fn ipa(self) -> u64 {
        match self {
            Page::Heap(i) => HEAP + u64::from(i) * PAGE,
            Page::Image(i) => TEXT.0 + u64::from(i % 512) * PAGE,
            Page::Raw(a) => a,
        }
    }
}

/// One list entry.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub struct EntrySeed {
    page: Page,
    pages: u8,
    /// Attribute bits (the low five are the ABI's; the rest are unknown).
    attrs: u8,
    /// Where EL1 runs it: at `KVA + start` (an EXEC entry's usual VA), or
    /// anything.
    va: Option<u64>,
    /// Start or size off the page grid.
    skew: (u8, u8),
}

impl EntrySeed {
    fn entry(self) -> Entry {
        let start = self
            .page
            .ipa()
            .wrapping_add(u64::from(self.skew.0 % 3) * 0x800);
        let attrs = u64::from(self.attrs) & 0x3f;
        Entry {
            start,
            size: (u64::from(self.pages % 8)) * PAGE + u64::from(self.skew.1 % 2) * 0x800,
            attrs,
            va: match self.va {
                Some(v) => v,
                None if attrs & ATTR_EXEC != 0 => KVA.wrapping_add(start),
                None => 0,
            },
        }
    }
}

/// A VA in the heap window, as EL1 runs it there (`KVA + IPA`).
#[derive(Arbitrary, Clone, Copy, Debug)]
pub struct HeapVa {
    page: u8,
    offset: u16,
}

impl HeapVa {
    fn ipa(self) -> u64 {
        HEAP + u64::from(self.page) * PAGE + u64::from(self.offset) % PAGE
    }
    fn va(self) -> u64 {
        KVA + self.ipa()
    }
}

/// One entry of a site list.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum SiteSeed {
    JumpLabel { site: HeapVa, label: HeapVa },
    Ftrace { literal: HeapVa },
    Plt { at: HeapVa },
    Raw { site: u64, label: u64 },
}

impl SiteSeed {
    fn entry(self) -> SiteEntry {
        match self {
            SiteSeed::JumpLabel { site, label } => SiteEntry {
                site: site.va(),
                label: label.va(),
            },
            SiteSeed::Ftrace { literal } => SiteEntry {
                site: literal.va(),
                label: SITE_FTRACE,
            },
            SiteSeed::Plt { at } => SiteEntry {
                site: at.va(),
                label: SITE_FTRACE_PLT,
            },
            SiteSeed::Raw { site, label } => SiteEntry { site, label },
        }
    }
}

/// An instruction (or three) the guest writes into a heap page while it
/// is still data.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Insn {
    Nop,
    BtiC,
    MovX9X30,
    /// B from here to there.
    B(HeapVa),
    /// BL from here to the trampoline.
    BlTrampoline,
    /// BL from here to there.
    Bl(HeapVa),
    /// A PLT from here to the trampoline.
    Plt,
    Raw(u32),
}

/// The words of `insn` written at `at`.
fn words(insn: Insn, at: HeapVa) -> Vec<u32> {
    let from = at.va();
    match insn {
        Insn::Nop => vec![NOP],
        Insn::BtiC => vec![BTI_C],
        Insn::MovX9X30 => vec![MOV_X9_X30],
        Insn::B(to) => vec![encode_b(from & !3, to.va() & !3).unwrap_or(NOP)],
        Insn::BlTrampoline => vec![encode_bl(from & !3, TRAMPOLINE).unwrap_or(NOP)],
        Insn::Bl(to) => vec![encode_bl(from & !3, to.va() & !3).unwrap_or(NOP)],
        Insn::Plt => {
            let pc = from & !3;
            let pages = ((TRAMPOLINE & !0xfff) as i64 - (pc & !0xfff) as i64) >> 12;
            let imm = (pages as u32) & 0x1f_ffff;
            vec![
                0x9000_0010 | ((imm & 3) << 29) | ((imm >> 2) << 5),
                0x9100_0210 | (((TRAMPOLINE & 0xfff) as u32) << 10),
                BR_X16,
            ]
        }
        Insn::Raw(w) => vec![w],
    }
}

/// One thing the guest does.
#[derive(Arbitrary, Clone, Debug)]
pub enum Step {
    /// MEM_PERMISSIONS with these entries at [`LIST`] (or the count off
    /// by `extra`, or the list somewhere else), and these sites at
    /// [`SITES`] (or the list somewhere else).
    Call {
        entries: Vec<EntrySeed>,
        extra: i8,
        list: Option<u64>,
        sites: Vec<SiteSeed>,
        site_list: Option<u64>,
    },
    /// Instructions written into a heap page (only lands if the page is
    /// writable at stage 2, as a guest store would).
    Write { at: HeapVa, insn: Insn },
    /// A store through the text-poke slot to a heap page.
    Store {
        page: u8,
        offset: u16,
        value: u64,
        /// 0..=3: byte, half, word, double.
        width: u8,
        /// The syndrome describes the store (ISV).
        valid: bool,
    },
    /// CODE_LOG.
    CodeLog { half: u8 },
}

/// The input: the code policy, whether ftrace may patch, then the
/// steps.
#[derive(Arbitrary, Clone, Debug)]
pub struct Input {
    lock: bool,
    ftrace: bool,
    steps: Vec<Step>,
}

/// Pages that are IMMUTABLE, and their attributes, as the accepted calls
/// made them.
type Immutable = BTreeMap<u64, u64>;

fn check_stage2(ops: &mut Ops, image_perms: &[(IpaRange, Perms); 4]) {
    let allowed = [
        stage2_perms(MemAttrs::READ.union(MemAttrs::WRITE)),
        stage2_perms(MemAttrs::READ.union(MemAttrs::EXEC)),
        stage2_perms(MemAttrs::READ),
    ];
    for (s, e, p) in ops.leaves() {
        assert!(
            !p.contains(Perms::WRITE | Perms::EXEC_EL1),
            "{s:#x}..{e:#x} writable and EL1-executable: {p:?}"
        );
        // The run cut at the image's region boundaries.
        let mut cuts = vec![s, e];
        for (r, _) in image_perms {
            for c in [r.start().get(), r.end().get()] {
                if s < c && c < e {
                    cuts.push(c);
                }
            }
        }
        cuts.sort_unstable();
        for piece in cuts.windows(2) {
            let at = piece[0];
            match image_perms.iter().find(|(r, _)| r.contains(Ipa(at))) {
                Some((_, want)) => assert_eq!(p, *want, "image region at {at:#x} changed"),
                None => assert!(allowed.contains(&p), "{at:#x}..{:#x} has {p:?}", piece[1]),
            }
        }
    }
}

/// Writes `entries` at `list` (or [`LIST`]) and makes the call with the
/// count off by `extra`; returns the answer and the entries the service
/// was given, as guest memory holds them.
fn call(
    p: &mut Permissions,
    ops: &mut Ops,
    (entries, extra, list): (&[Entry], i8, Option<u64>),
    sites: SiteList,
    patching: &Patching<'_>,
) -> (CallResult, Vec<Entry>) {
    let at = list.unwrap_or(LIST);
    let bytes: Vec<u8> = entries.iter().flat_map(|e| e.to_bytes()).collect();
    if ops.inside(Ipa(at), bytes.len() as u64) {
        ops.write(at, &bytes);
    }
    let count = (entries.len() as i64 + i64::from(extra)).clamp(0, 256) as u64;
    let given = (0..count)
        .map(|i| {
            let mut b = [0u8; ENTRY_SIZE];
            for (j, x) in b.iter_mut().enumerate() {
                *x = ops.byte(at.wrapping_add(i * ENTRY_SIZE as u64 + j as u64));
            }
            Entry::from_bytes(&b)
        })
        .collect();
    (p.call(at, count, sites, patching, ops), given)
}

/// What an input did: calls accepted, stores performed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reach {
    pub accepted: u32,
    pub stores: u32,
}

/// Runs one input. Panics on a broken invariant.
pub fn run(input: &Input) -> Reach {
    let mut reach = Reach::default();
    let Some(s2) = machine::stage2(64) else {
        return reach;
    };
    let mut ops = Ops {
        ram: machine::layout().guest_ram,
        mem: BTreeMap::new(),
        s2,
    };
    let image = image();
    for (r, perms) in image {
        ops.set_perms(r, perms).expect("image permissions");
    }
    let mut store = vec![CodeSite::EMPTY; 256];
    let mut p = Permissions::with_code_sites(CodeSites::new(&mut store));
    p.set_policy(if input.lock {
        Policy::Lock
    } else {
        Policy::Measure
    });
    p.set_hypervisor_memory(machine::hyp_memory());
    p.enable(image.map(|(r, _)| r), None, &mut ops)
        .expect("default deny");
    let is_trampoline = |va| va == TRAMPOLINE;
    let patching = Patching {
        is_trampoline: &is_trampoline,
        ftrace: input.ftrace,
    };
    check_stage2(&mut ops, &image);
    let mut immutable = Immutable::new();
    for step in input.steps.iter().take(64) {
        match step {
            Step::Call {
                entries,
                extra,
                list,
                sites,
                site_list,
            } => {
                let entries: Vec<Entry> = entries.iter().take(140).map(|e| e.entry()).collect();
                let at = site_list.unwrap_or(SITES);
                let bytes: Vec<u8> = sites
                    .iter()
                    .take(64)
                    .flat_map(|s| s.entry().to_bytes())
                    .collect();
                if ops.inside(Ipa(at), bytes.len() as u64) {
                    ops.write(at, &bytes);
                }
                let sites = SiteList {
                    ipa: at,
                    count: (bytes.len() / SITE_SIZE) as u64,
                };
                let before = (ops.leaves(), p.code_log(), p.code_sites());
                let (r, entries) = call(
                    &mut p,
                    &mut ops,
                    (&entries, *extra, *list),
                    sites,
                    &patching,
                );
                if r[0] != 0 {
                    assert_eq!(
                        (ops.leaves(), p.code_log(), p.code_sites()),
                        before,
                        "a refused call changed something: {r:x?}"
                    );
                    continue;
                }
                reach.accepted += 1;
                assert!(p.code_log().1 >= before.1 .1);
                for e in &entries {
                    assert!(
                        !(input.lock && e.attrs & ATTR_EXEC != 0),
                        "EXEC accepted under lock"
                    );
                    let want = stage2_perms(MemAttrs::from_bits_retain(e.attrs));
                    for page in (e.start..e.end()).step_by(PAGE as usize) {
                        if let Some(&was) = immutable.get(&page) {
                            assert!(
                                e.attrs == ATTR_READ || e.attrs == was,
                                "IMMUTABLE page {page:#x} changed from {was:#x} to {:#x}",
                                e.attrs
                            );
                        }
                        assert_eq!(ops.perms(page), want, "{page:#x} after {e:x?}");
                        if e.attrs & ATTR_IMMUTABLE != 0 {
                            immutable.insert(page, e.attrs);
                        } else {
                            immutable.remove(&page);
                        }
                    }
                }
            }
            Step::Store {
                page,
                offset,
                value,
                width,
                valid,
            } => {
                let ipa = HEAP + u64::from(*page) * PAGE + u64::from(offset % PAGE as u16);
                let mut regs = GuestRegs::default();
                regs.x[3] = *value;
                let iss = (u32::from(*valid) << 24)
                    | (u32::from(width % 4) << 22)
                    | (3 << 16)
                    | (1 << 6)
                    | 0x0f;
                let fault = GuestFault {
                    ipa: Ipa(ipa),
                    va: GuestVa(FIXMAP + (ipa % PAGE)),
                    exec: false,
                    syndrome: AbortSyndrome(iss),
                    regs: &regs,
                    pc: KVA,
                };
                let before: Vec<u8> = (ipa..ipa + 8).map(|a| ops.byte(a)).collect();
                let was = ops.perms(ipa);
                let action = p.text_patch(&fault, &patching, &mut ops);
                let after: Vec<u8> = (ipa..ipa + 8).map(|a| ops.byte(a)).collect();
                match action {
                    Some(FaultAction::Emulated) => {
                        reach.stores += 1;
                        assert!(
                            was.contains(Perms::EXEC_EL1),
                            "a store performed on a page that is not code: {ipa:#x}"
                        );
                    }
                    _ => assert_eq!(before, after, "a refused store changed memory"),
                }
            }
            Step::Write { at, insn } => {
                let ipa = at.ipa() & !3;
                if ops.perms(ipa).contains(Perms::WRITE) {
                    for (i, w) in words(*insn, *at).into_iter().enumerate() {
                        let a = ipa + 4 * i as u64;
                        if a / PAGE == ipa / PAGE {
                            ops.write(a, &w.to_le_bytes());
                        }
                    }
                }
            }
            Step::CodeLog { half } => {
                let r = p.code_log_call(u64::from(*half));
                assert!(r[0] == 0 || *half > 1);
            }
        }
        check_stage2(&mut ops, &image);
    }
    reach
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The harness reaches what it checks: a JIT page granted, a store
    /// into it performed, the same under `lock` refused.
    #[test]
    fn a_jit_page_and_a_store_into_it() {
        let jit = EntrySeed {
            page: Page::Heap(3),
            pages: 1,
            attrs: (ATTR_READ | ATTR_EXEC | guest_kp::mem_perms::ATTR_JIT) as u8,
            va: None,
            skew: (0, 0),
        };
        let steps = vec![
            Step::Call {
                entries: vec![jit],
                extra: 0,
                list: None,
                sites: vec![],
                site_list: None,
            },
            Step::Store {
                page: 3,
                offset: 0x40,
                value: 0xd65f_03c0_d280_0540,
                width: 3,
                valid: true,
            },
            Step::CodeLog { half: 1 },
        ];
        let input = Input {
            lock: false,
            ftrace: false,
            steps: steps.clone(),
        };
        assert_eq!(
            run(&input),
            Reach {
                accepted: 1,
                stores: 1
            }
        );
        let locked = Input {
            lock: true,
            ftrace: false,
            steps,
        };
        assert_eq!(run(&locked), Reach::default());
    }

    /// Module text with a jump label and an ftrace call site, built by
    /// the steps: the list is accepted and stores at both sites are
    /// performed; the same list naming one more "site" that holds
    /// neither NOP nor B is refused, and no store is performed.
    #[test]
    fn module_text_with_its_sites_and_stores_at_them() {
        let at = |offset| HeapVa { page: 5, offset };
        let text = EntrySeed {
            page: Page::Heap(5),
            pages: 1,
            attrs: (ATTR_READ | ATTR_EXEC | ATTR_IMMUTABLE) as u8,
            va: None,
            skew: (0, 0),
        };
        let write = |offset, insn| Step::Write {
            at: at(offset),
            insn,
        };
        let store = |offset: u16, value: u64, width| Step::Store {
            page: 5,
            offset,
            value,
            width,
            valid: true,
        };
        let steps = |sites| {
            vec![
                write(0x100, Insn::Nop),
                write(0x208, Insn::MovX9X30),
                write(0x20c, Insn::Nop),
                write(0x300, Insn::Plt),
                Step::Call {
                    entries: vec![text],
                    extra: 0,
                    list: None,
                    sites,
                    site_list: None,
                },
                store(
                    0x100,
                    u64::from(encode_b(at(0x100).va(), at(0x180).va()).unwrap()),
                    2,
                ),
                store(
                    0x20c,
                    u64::from(encode_bl(at(0x20c).va(), at(0x300).va()).unwrap()),
                    2,
                ),
                store(0x200, 0xffff_8000_1234_5678, 3),
            ]
        };
        let good = vec![
            SiteSeed::JumpLabel {
                site: at(0x100),
                label: at(0x180),
            },
            SiteSeed::Ftrace { literal: at(0x200) },
            SiteSeed::Plt { at: at(0x300) },
        ];
        let input = Input {
            lock: false,
            ftrace: true,
            steps: steps(good.clone()),
        };
        assert_eq!(
            run(&input),
            Reach {
                accepted: 1,
                stores: 3
            }
        );
        let mut bad = good;
        bad.push(SiteSeed::JumpLabel {
            site: at(0x104),
            label: at(0x180),
        });
        let input = Input {
            lock: false,
            ftrace: true,
            steps: steps(bad),
        };
        assert_eq!(run(&input), Reach::default());
    }
}
