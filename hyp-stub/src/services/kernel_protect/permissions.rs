// SPDX-License-Identifier: GPL-2.0 OR MIT
//! Page permissions for all guest RAM (`MEM_PERMISSIONS`, `CODE_LOG`):
//! default deny at EL1 once protection is enabled, the guest's list of
//! (range, attributes) applied all or nothing, and the code log.
//!
//! Kernel protect owns this part because it knows what must be refused:
//! the kernel image's regions keep the permissions kernel protect gave
//! them, and no list may touch them.
//!
//! The state is the set of pages whose attributes differ from the
//! default (READ|WRITE), as sorted, disjoint, coalesced [`Span`]s in a
//! fixed array. A call is applied to a copy of it first; only when every
//! entry fits is stage 2 changed, and if stage 2 fails part-way (table
//! memory) the ranges already changed are put back. The code log is
//! extended only when the call succeeds.
//!
//! Ordering that keeps what is measured what runs: a range becoming
//! executable is made read-only and executable at stage 2 first and
//! hashed after; a range stopping being executable is hashed before its
//! stage-2 permissions change, while it is still read-only. The
//! jump-label sites a call names with its code ([`code_sites`]) are
//! checked against that code once it is read-only, and are the only
//! places the hypervisor later patches it.

use super::code_sites::{CodeSites, Full, SiteKind};

use core::fmt::{self, Write};

use guest_kp::abi::{self, KpError};
use guest_kp::mem_perms::{
    self as mp, Entry, Policy, SiteEntry, SiteList, ENTRY_SIZE, LOG_COPY, LOG_EXEC, LOG_PATCH,
    LOG_RELEASE, LOG_SITES, MAX_ENTRIES, MAX_SITES, NO_ENTRY, SITE_SIZE,
};
use guest_kp::patch::{self, NOP};
use guest_kp::sites::{literal_ok, BTI_C, LITERAL_SIZE, MOV_X9_X30};

use crate::addr::{Ipa, IpaRange};
use crate::esr::Width;
use crate::service::{CallResult, FaultAction, GuestFault, HypOps, OpsError};
use crate::sha256::Sha256;
use crate::stage2::Perms;

bitflags::bitflags! {
    /// The page attributes as a type; the values are guest-kp's raw
    /// constants, the ABI's one definition (the kernel uses those).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct MemAttrs: u64 {
        /// Readable.
        const READ = mp::ATTR_READ;
        /// Writable at EL1.
        const WRITE = mp::ATTR_WRITE;
        /// Executable at EL1.
        const EXEC = mp::ATTR_EXEC;
        /// No later change but the release.
        const IMMUTABLE = mp::ATTR_IMMUTABLE;
        /// With EXEC: filled in place by stores the hypervisor performs.
        const JIT = mp::ATTR_JIT;
    }
}

/// Most ranges with non-default attributes (about three per module).
pub const MAX_SPANS: usize = 256;

/// Pages with non-default attributes, `[start, end)`; EL1 runs an EXEC
/// span at `va` (zero for other spans).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    start: u64,
    end: u64,
    attrs: MemAttrs,
    va: u64,
}

impl Span {
    /// The VA of `ipa` (inside the span), or 0 for a span without one.
    fn va_at(&self, ipa: u64) -> u64 {
        if self.va == 0 {
            0
        } else {
            self.va.wrapping_add(ipa.wrapping_sub(self.start))
        }
    }

    /// Whether `next` continues this span: adjacent, same attributes,
    /// and (for code) the next VAs.
    fn continued_by(&self, next: &Span) -> bool {
        self.end == next.start && self.attrs == next.attrs && self.va_at(self.end) == next.va
    }
}

type Spans = heapless::Vec<Span, MAX_SPANS>;

/// Code whose stores the hypervisor judges as jump labels: EXEC, not JIT.
fn is_code(a: MemAttrs) -> bool {
    a.contains(MemAttrs::EXEC) && !a.contains(MemAttrs::JIT)
}

/// The first entry of a call that is such code.
fn first_code<'e>(entries: &'e [Entry], attrs: &[MemAttrs]) -> Option<&'e Entry> {
    entries
        .iter()
        .zip(attrs)
        .find(|(_, a)| is_code(**a))
        .map(|(e, _)| e)
}

/// The attributes of every page not in a span (under default deny).
const DEFAULT: MemAttrs = MemAttrs::READ.union(MemAttrs::WRITE);

/// The stage-2 permissions of an attribute set. EL0 keeps execute on
/// everything that is not kernel code, so user space is unaffected;
/// kernel code is not executable by user space.
pub const fn stage2_perms(attrs: MemAttrs) -> Perms {
    if attrs.contains(MemAttrs::EXEC) {
        // Never writable while EL1 may run it, whatever was asked.
        Perms::R_EL1X
    } else if attrs.contains(MemAttrs::WRITE) {
        Perms::RW.union(Perms::EXEC_EL0)
    } else {
        Perms::R_EL0X
    }
}

/// Why a call was refused: each is counted and has its Gunyah code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Refusal {
    /// Protection not enabled, or the policy is `image`.
    State,
    /// An empty list, or more than [`MAX_ENTRIES`].
    ListSize,
    /// The list's IPA is not 8-byte aligned.
    ListAlignment,
    /// The list is not in guest RAM.
    ListNotInRam,
    /// An entry's start or size is not page aligned.
    Misaligned,
    /// An entry of size zero.
    EmptyEntry,
    /// An entry whose end wraps.
    Wraps,
    /// Unknown attribute bits, or READ missing.
    Attrs,
    /// WRITE with EXEC.
    WriteExec,
    /// A bad va (see the ABI).
    Va,
    /// Outside guest RAM.
    OutsideRam,
    /// In the hypervisor's memory.
    HypervisorMemory,
    /// In the kernel image's regions.
    Image,
    /// Two entries of one list overlap.
    Overlap,
    /// A change of an IMMUTABLE page other than the release.
    Immutable,
    /// EXEC under the `lock` policy.
    Locked,
    /// More distinct ranges than [`MAX_SPANS`].
    NoRoom,
    /// Stage-2 table memory ran out (the call was undone).
    Tables,
    /// More than [`MAX_SITES`] sites, or sites without code to go with.
    SiteListSize,
    /// The site list's IPA is not 8-byte aligned.
    SiteListAlignment,
    /// The site list is not in guest RAM.
    SiteListNotInRam,
    /// A site that is not a jump label of the call's new code (see the
    /// ABI), or one named twice.
    Site,
    /// More sites than the hypervisor has room left for.
    SiteRoom,
}

impl Refusal {
    const COUNT: usize = 23;
    const ALL: [Refusal; Self::COUNT] = [
        Refusal::State,
        Refusal::ListSize,
        Refusal::ListAlignment,
        Refusal::ListNotInRam,
        Refusal::Misaligned,
        Refusal::EmptyEntry,
        Refusal::Wraps,
        Refusal::Attrs,
        Refusal::WriteExec,
        Refusal::Va,
        Refusal::OutsideRam,
        Refusal::HypervisorMemory,
        Refusal::Image,
        Refusal::Overlap,
        Refusal::Immutable,
        Refusal::Locked,
        Refusal::NoRoom,
        Refusal::Tables,
        Refusal::SiteListSize,
        Refusal::SiteListAlignment,
        Refusal::SiteListNotInRam,
        Refusal::Site,
        Refusal::SiteRoom,
    ];

    /// The error the guest gets.
    pub const fn error(self) -> KpError {
        match self {
            Refusal::State => KpError::ObjectState,
            Refusal::ListSize
            | Refusal::EmptyEntry
            | Refusal::NoRoom
            | Refusal::SiteListSize
            | Refusal::SiteRoom => KpError::ArgumentSize,
            Refusal::ListAlignment | Refusal::Misaligned | Refusal::SiteListAlignment => {
                KpError::ArgumentAlignment
            }
            Refusal::ListNotInRam
            | Refusal::Wraps
            | Refusal::OutsideRam
            | Refusal::HypervisorMemory
            | Refusal::SiteListNotInRam => KpError::AddrInvalid,
            Refusal::Attrs | Refusal::Va | Refusal::Overlap | Refusal::Site => {
                KpError::ArgumentInvalid
            }
            Refusal::WriteExec | Refusal::Image | Refusal::Immutable | Refusal::Locked => {
                KpError::Denied
            }
            Refusal::Tables => KpError::Busy,
        }
    }

    /// The stats key (after `kp_perm_refused_`).
    pub const fn key(self) -> &'static str {
        match self {
            Refusal::State => "state",
            Refusal::ListSize => "list_size",
            Refusal::ListAlignment => "list_alignment",
            Refusal::ListNotInRam => "list_not_in_ram",
            Refusal::Misaligned => "misaligned",
            Refusal::EmptyEntry => "empty_entry",
            Refusal::Wraps => "wraps",
            Refusal::Attrs => "attrs",
            Refusal::WriteExec => "write_exec",
            Refusal::Va => "va",
            Refusal::OutsideRam => "outside_ram",
            Refusal::HypervisorMemory => "hypervisor_memory",
            Refusal::Image => "image",
            Refusal::Overlap => "overlap",
            Refusal::Immutable => "immutable",
            Refusal::Locked => "locked",
            Refusal::NoRoom => "no_room",
            Refusal::Tables => "tables",
            Refusal::SiteListSize => "site_list_size",
            Refusal::SiteListAlignment => "site_list_alignment",
            Refusal::SiteListNotInRam => "site_list_not_in_ram",
            Refusal::Site => "site",
            Refusal::SiteRoom => "site_room",
        }
    }

    fn from_entry(e: mp::EntryError) -> Self {
        match e {
            mp::EntryError::Misaligned => Refusal::Misaligned,
            mp::EntryError::Empty => Refusal::EmptyEntry,
            mp::EntryError::Wraps => Refusal::Wraps,
            mp::EntryError::UnknownAttrs | mp::EntryError::NotReadable | mp::EntryError::Jit => {
                Refusal::Attrs
            }
            mp::EntryError::WriteExec => Refusal::WriteExec,
            mp::EntryError::Va => Refusal::Va,
        }
    }
}

/// Why a write into dynamic code through the text-poke slot was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CodeWrite {
    /// The syndrome does not describe the store (no ISV).
    NotDecoded,
    /// Not a store width the rule takes.
    Width,
    /// Misaligned, or past the JIT range.
    Placement,
    /// Not a jump-label site registered with the code.
    NotASite,
    /// At a site: not NOP <-> B to the site's own label.
    ForeignBranch,
    /// At an ftrace call: not NOP <-> BL to a registered trampoline.
    NotFtraceCall,
    /// At an ftrace literal: not a kernel pointer or 0.
    BadLiteral,
    /// ftrace's patches are refused by the command line.
    FtraceRefused,
    /// The hypervisor could not write guest memory.
    Failed,
}

impl fmt::Display for CodeWrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CodeWrite::NotDecoded => "store not decoded",
            CodeWrite::Width => "store width not taken",
            CodeWrite::Placement => "misaligned or outside the JIT range",
            CodeWrite::NotASite => "not a registered jump-label site",
            CodeWrite::ForeignBranch => "not NOP <-> B to the site's own label",
            CodeWrite::NotFtraceCall => "not NOP <-> BL to a registered ftrace trampoline",
            CodeWrite::BadLiteral => "ftrace literal is not a kernel address",
            CodeWrite::FtraceRefused => "ftrace is refused by policy",
            CodeWrite::Failed => "guest memory not writable by the hypervisor",
        })
    }
}

/// A refusal and the entry (or site) it is about.
type Refused = (Refusal, Option<usize>);

/// Sites read from guest memory at once.
const SITE_CHUNK: usize = 32;

/// The service part's state.
pub struct Permissions<'m> {
    policy: Policy,
    hyp_mem: Option<IpaRange>,
    /// The image's regions, once protection is enabled with default deny.
    image: Option<[IpaRange; 4]>,
    spans: Spans,
    scratch: Spans,
    log: [u8; 32],
    log_records: u64,
    refused: [u64; Refusal::COUNT],
    calls: u64,
    entries_applied: u64,
    exec_granted: u64,
    released: u64,
    exec_blocked: u64,
    patches: u64,
    patches_refused: u64,
    copies: u64,
    sites: CodeSites<'m>,
    sites_registered: u64,
    sites_released: u64,
    site_lists: u64,
    patches_ftrace: u64,
    /// Bytes of the image's other text made executable at enable.
    other_text: u64,
}

impl Default for Permissions<'static> {
    fn default() -> Self {
        Self::new()
    }
}

/// `[start, end)` of `e` clipped to each span it overlaps, with the
/// span's attributes (pages in no span have [`DEFAULT`]).
fn overlapping(spans: &Spans, start: u64, end: u64) -> impl Iterator<Item = Span> + '_ {
    spans
        .iter()
        .filter(move |s| s.start < end && start < s.end)
        .map(move |s| Span {
            start: s.start.max(start),
            end: s.end.min(end),
            attrs: s.attrs,
            va: s.va_at(s.start.max(start)),
        })
}

/// Splits the span that strictly contains `at`, so a boundary lies there.
fn split_at(spans: &mut Spans, at: u64) -> Result<(), ()> {
    let Some(i) = spans.iter().position(|s| s.start < at && at < s.end) else {
        return Ok(());
    };
    let Some(s) = spans.get(i).copied() else {
        return Ok(());
    };
    if let Some(left) = spans.get_mut(i) {
        left.end = at;
    }
    spans
        .insert(
            i + 1,
            Span {
                start: at,
                end: s.end,
                attrs: s.attrs,
                va: s.va_at(at),
            },
        )
        .map_err(|_| ())
}

/// Gives `[start, end)` the attributes `attrs` (run at `va` if they
/// include EXEC, else `va` is 0) in `spans`, keeping them sorted,
/// disjoint and coalesced.
fn set_range(spans: &mut Spans, start: u64, end: u64, attrs: MemAttrs, va: u64) -> Result<(), ()> {
    let new = Span {
        start,
        end,
        attrs,
        va,
    };
    // Nothing to do (and no room needed) if the range has them already.
    let mut covered = 0;
    let mut uncovered = end - start;
    for s in overlapping(spans, start, end) {
        uncovered -= s.end - s.start;
        if s.attrs == attrs && s.va == new.va_at(s.start) {
            covered += s.end - s.start;
        }
    }
    let has_already = if attrs == DEFAULT {
        uncovered == end - start
    } else {
        covered == end - start
    };
    if has_already {
        return Ok(());
    }
    split_at(spans, start)?;
    split_at(spans, end)?;
    spans.retain(|s| !(s.start >= start && s.end <= end));
    if attrs == DEFAULT {
        return Ok(());
    }
    // Joined to equal neighbours first, so that filling a gap needs no
    // room.
    let at = spans.partition_point(|s| s.start < start);
    let joins_left = at > 0 && spans.get(at - 1).is_some_and(|l| l.continued_by(&new));
    let joins_right = spans.get(at).is_some_and(|r| new.continued_by(r));
    match (joins_left, joins_right) {
        (true, true) => {
            let right_end = spans.get(at).map_or(end, |r| r.end);
            if let Some(l) = spans.get_mut(at - 1) {
                l.end = right_end;
            }
            spans.remove(at);
        }
        (true, false) => {
            if let Some(l) = spans.get_mut(at - 1) {
                l.end = end;
            }
        }
        (false, true) => {
            if let Some(r) = spans.get_mut(at) {
                r.start = start;
                r.va = va;
            }
        }
        (false, false) => spans.insert(at, new).map_err(|_| ())?,
    }
    Ok(())
}

/// The code log after one more record.
fn chain(log: &[u8; 32], record: &[u8], ops: &dyn HypOps) -> [u8; 32] {
    let mut h = Sha256::new(ops.sha256_compress());
    h.update(log);
    h.update(record);
    h.finalize()
}

fn hash_range(start: u64, end: u64, ops: &mut dyn HypOps) -> Result<[u8; 32], OpsError> {
    let mut h = Sha256::new(ops.sha256_compress());
    ops.hash_guest(Ipa(start), end - start, &mut h)?;
    Ok(h.finalize())
}

/// A call's code, while its sites are checked: its entries, their
/// attributes, and the spans as they were before the call.
struct Code<'c> {
    entries: &'c [Entry],
    attrs: &'c [MemAttrs],
    spans: &'c Spans,
}

impl Code<'_> {
    /// The IPA of the instruction at `va` if it lies in the call's
    /// (non-JIT) code, whole, and was not executable before the call.
    fn new_insn(&self, va: u64) -> Option<u64> {
        let ipa = self
            .entries
            .iter()
            .zip(self.attrs)
            .filter(|(_, a)| is_code(**a))
            .find(|(e, _)| va >= e.va && va - e.va <= e.size - patch::INSN_SIZE)
            .map(|(e, _)| e.start + (va - e.va))?;
        let was_code = overlapping(self.spans, ipa, ipa + patch::INSN_SIZE)
            .any(|sp| sp.attrs.contains(MemAttrs::EXEC));
        (!was_code).then_some(ipa)
    }
}

fn read_insn(ipa: u64, ops: &mut dyn HypOps) -> Option<u32> {
    let mut insn = [0u8; 4];
    ops.read_guest(Ipa(ipa), &mut insn).ok()?;
    Some(u32::from_le_bytes(insn))
}

/// The sites (one or two) that `s` names in the call's new code, or
/// `None` if it names none rightly:
///
/// - a jump label: site and label 4-byte aligned instructions of the
///   code, apart, the site holding `NOP` or `B` to the label;
/// - an ftrace call site ([`mp::SITE_FTRACE`]): its literal 8-byte
///   aligned, followed by `[BTI C,] MOV X9, X30` and `NOP` or `BL` to a
///   registered trampoline; the call and the literal are the sites;
/// - an ftrace PLT ([`mp::SITE_FTRACE_PLT`]): three instructions of the
///   code that jump to a registered trampoline.
fn stage_site(
    code: &Code<'_>,
    s: SiteEntry,
    patching: &Patching<'_>,
    ops: &mut dyn HypOps,
) -> Option<[Option<(u64, SiteKind)>; 2]> {
    if s.label == mp::SITE_FTRACE_PLT {
        if !s.site.is_multiple_of(4) {
            return None;
        }
        let mut words = [0u32; 3];
        let mut at = s.site;
        for w in &mut words {
            *w = read_insn(code.new_insn(at)?, ops)?;
            at = at.checked_add(patch::INSN_SIZE)?;
        }
        let to = patch::plt_target(words, s.site)?;
        return (patching.is_trampoline)(to)
            .then_some([Some((code.new_insn(s.site)?, SiteKind::FtracePlt)), None]);
    }
    if s.label == mp::SITE_FTRACE {
        let literal = s.site;
        if !literal.is_multiple_of(LITERAL_SIZE) {
            return None;
        }
        // 8-byte aligned: both words on one page.
        let literal_ipa = code.new_insn(literal)?;
        code.new_insn(literal.checked_add(4)?)?;
        let after = read_insn(code.new_insn(literal.checked_add(8)?)?, ops)?;
        let call = literal.checked_add(if after == BTI_C { 16 } else { 12 })?;
        let mov = read_insn(code.new_insn(call - patch::INSN_SIZE)?, ops)?;
        let call_ipa = code.new_insn(call)?;
        let insn = read_insn(call_ipa, ops)?;
        let calls_trampoline = patch::call_target(insn, call).is_some_and(patching.is_trampoline);
        if mov != MOV_X9_X30 || !(insn == NOP || calls_trampoline) {
            return None;
        }
        return Some([
            Some((call_ipa, SiteKind::FtraceCall)),
            Some((literal_ipa, SiteKind::FtraceLiteral)),
        ]);
    }
    if !s.site.is_multiple_of(4) || !s.label.is_multiple_of(4) || s.site == s.label {
        return None;
    }
    let ipa = code.new_insn(s.site)?;
    code.new_insn(s.label)?;
    let insn = read_insn(ipa, ops)?;
    (insn == NOP || patch::branch_target(insn, s.site) == Some(s.label))
        .then_some([Some((ipa, SiteKind::JumpLabel(s.label))), None])
}

/// What kernel protect tells this part for patches of ftrace call sites
/// outside the image.
pub struct Patching<'p> {
    /// Whether a VA is one of the ftrace trampolines the image
    /// registered (what a call site may call).
    pub is_trampoline: &'p dyn Fn(u64) -> bool,
    /// Whether the command line allows ftrace's patches.
    pub ftrace: bool,
}

impl Patching<'_> {
    /// No trampolines, ftrace refused.
    pub const NONE: Patching<'static> = Patching {
        is_trampoline: &|_| false,
        ftrace: false,
    };
}

impl Permissions<'static> {
    /// The state before boot, without room for jump-label sites.
    pub fn new() -> Self {
        Self::with_code_sites(CodeSites::none())
    }
}

impl<'m> Permissions<'m> {
    /// The state before boot: policy `image`, nothing enabled; the
    /// jump-label sites of dynamic code go to `sites`.
    pub fn with_code_sites(sites: CodeSites<'m>) -> Self {
        Self {
            policy: Policy::ImageOnly,
            hyp_mem: None,
            image: None,
            spans: heapless::Vec::new(),
            scratch: heapless::Vec::new(),
            log: [0; 32],
            log_records: 0,
            refused: [0; Refusal::COUNT],
            calls: 0,
            entries_applied: 0,
            exec_granted: 0,
            released: 0,
            exec_blocked: 0,
            patches: 0,
            patches_refused: 0,
            copies: 0,
            sites,
            sites_registered: 0,
            sites_released: 0,
            site_lists: 0,
            patches_ftrace: 0,
            other_text: 0,
        }
    }

    /// Sets the policy, before the guest runs (the boot path reads it
    /// from the guest's command line). It can only be tightened.
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = self.policy.tightened(policy);
    }

    /// The policy in force.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Names the hypervisor's own memory, so that requests for it are
    /// refused (and counted) as such rather than as "outside RAM".
    pub fn set_hypervisor_memory(&mut self, range: IpaRange) {
        self.hyp_mem = Some(range);
    }

    /// Whether default deny is in force.
    pub fn enforcing(&self) -> bool {
        self.image.is_some()
    }

    /// Patch sites of dynamic code held.
    pub fn code_sites(&self) -> usize {
        self.sites.len()
    }

    /// The code log: digest and number of records.
    pub fn code_log(&self) -> ([u8; 32], u64) {
        (self.log, self.log_records)
    }

    /// Counts an EL1 instruction fetch from RAM outside the image that
    /// stage 2 refused.
    pub fn count_exec_blocked(&mut self) {
        self.exec_blocked += 1;
    }

    /// At enable, once the image's permissions are set: every other page
    /// of guest RAM becomes read/write and not executable at EL1, unless
    /// the policy is `image`; the image's `other` text (checked by the
    /// caller) becomes read-only and executable, and is logged.
    ///
    /// # Errors
    /// [`OpsError`] if stage 2 could not be changed.
    pub fn enable(
        &mut self,
        image: [IpaRange; 4],
        other: Option<IpaRange>,
        ops: &mut dyn HypOps,
    ) -> Result<(), OpsError> {
        if !self.policy.default_deny() || self.image.is_some() {
            return Ok(());
        }
        let ram = ops.guest_ram();
        let mut sorted = image;
        sorted.sort_unstable_by_key(|r| r.start());
        // The gaps between the image's regions, and around them.
        let mut at = ram.start().get();
        for r in sorted {
            if let Some(gap) = IpaRange::new(Ipa(at), r.start().get().saturating_sub(at)) {
                ops.set_perms(gap, stage2_perms(DEFAULT))?;
            }
            at = at.max(r.end().get());
        }
        if let Some(gap) = IpaRange::new(Ipa(at), ram.end().get().saturating_sub(at)) {
            ops.set_perms(gap, stage2_perms(DEFAULT))?;
        }
        self.image = Some(image);
        if let Some(r) = other {
            // Code of the image itself, run through other mappings (the
            // idmap, the KPTI trampoline): boot code, so also under
            // `lock`. Read-only first, then hashed.
            let attrs = MemAttrs::READ | MemAttrs::EXEC | MemAttrs::IMMUTABLE;
            let (start, end) = (r.start().get(), r.end().get());
            ops.set_perms(r, stage2_perms(attrs))?;
            set_range(&mut self.spans, start, end, attrs, 0).map_err(|()| OpsError::OutOfTables)?;
            let digest = hash_range(start, end, ops)?;
            ops.log(format_args!(
                "kernel protect: other text {start:#x}+{:#x} executable, SHA-256 {}",
                end - start,
                super::Hex(&digest)
            ));
            self.log = chain(
                &self.log,
                &mp::log_record(LOG_EXEC, start, end - start, 0, &digest),
                ops,
            );
            self.log_records += 1;
            self.exec_granted += 1;
            self.other_text = r.size();
        }
        Ok(())
    }

    fn refuse(&mut self, (why, entry): Refused) -> CallResult {
        if let Some(n) = self.refused.get_mut(why as usize) {
            *n += 1;
        }
        let index = entry.map_or(NO_ENTRY, |i| i as u64);
        [
            why.error().as_raw(),
            index,
            self.log_records,
            self.log_prefix(),
        ]
    }

    fn log_prefix(&self) -> u64 {
        let mut p = [0u8; 8];
        p.copy_from_slice(&self.log[..8]);
        u64::from_be_bytes(p)
    }

    /// CODE_LOG: one half of the digest and the number of records.
    pub fn code_log_call(&mut self, half: u64) -> CallResult {
        if !self.enforcing() {
            return self.refuse((Refusal::State, None));
        }
        let bytes = match half {
            0 => &self.log[..16],
            1 => &self.log[16..],
            _ => return [KpError::ArgumentInvalid.as_raw(), 0, 0, 0],
        };
        let word = |b: &[u8]| {
            let mut w = [0u8; 8];
            w.copy_from_slice(b);
            u64::from_be_bytes(w)
        };
        [
            abi::RET_OK,
            word(&bytes[..8]),
            word(&bytes[8..]),
            self.log_records,
        ]
    }

    /// MEM_PERMISSIONS: x1 = IPA of the list, x2 = number of entries,
    /// x3 and x4 the jump-label sites of its code.
    pub fn call(
        &mut self,
        list: u64,
        count: u64,
        sites: SiteList,
        patching: &Patching<'_>,
        ops: &mut dyn HypOps,
    ) -> CallResult {
        self.calls += 1;
        let mut entries = [Entry {
            start: 0,
            size: 0,
            attrs: 0,
            va: 0,
        }; MAX_ENTRIES];
        let n = match self.read_list(list, count, &mut entries, ops) {
            Ok(n) => n,
            Err(r) => return self.refuse(r),
        };
        let entries = entries.get(..n).unwrap_or(&[]);
        match self.apply(entries, sites, patching, ops) {
            Ok(()) => [abi::RET_OK, 0, self.log_records, self.log_prefix()],
            Err(r) => self.refuse(r),
        }
    }

    fn read_list(
        &self,
        list: u64,
        count: u64,
        out: &mut [Entry; MAX_ENTRIES],
        ops: &mut dyn HypOps,
    ) -> Result<usize, Refused> {
        if !self.enforcing() {
            return Err((Refusal::State, None));
        }
        // The count sizes a copy into a stack buffer: bounded without
        // relying on a predicted branch (Spectre v1), as region types are.
        let Some(last) = abi::index_nospec(count.wrapping_sub(1), MAX_ENTRIES) else {
            return Err((Refusal::ListSize, None));
        };
        if !list.is_multiple_of(8) {
            return Err((Refusal::ListAlignment, None));
        }
        let n = last + 1;
        let mut bytes = [0u8; MAX_ENTRIES * ENTRY_SIZE];
        let bytes = bytes.get_mut(..n * ENTRY_SIZE).unwrap_or(&mut []);
        // One copy: what is checked is what is applied, whatever other
        // vCPUs write to the list meanwhile.
        ops.read_guest(Ipa(list), bytes)
            .map_err(|_| (Refusal::ListNotInRam, None))?;
        for (e, chunk) in out.iter_mut().zip(bytes.chunks_exact(ENTRY_SIZE)) {
            let mut b = [0u8; ENTRY_SIZE];
            b.copy_from_slice(chunk);
            *e = Entry::from_bytes(&b);
        }
        Ok(n)
    }

    /// Checks one entry against the rules, the memory map and the
    /// current state.
    fn check(
        &self,
        i: usize,
        e: &Entry,
        earlier: &[Entry],
        ram: IpaRange,
    ) -> Result<MemAttrs, Refused> {
        let at = Some(i);
        e.check().map_err(|x| (Refusal::from_entry(x), at))?;
        // Checked above: page aligned, non-empty, not wrapping, known bits.
        let attrs = MemAttrs::from_bits(e.attrs).ok_or((Refusal::Attrs, at))?;
        let range = IpaRange::new(Ipa(e.start), e.size).ok_or((Refusal::Wraps, at))?;
        if !ram.covers(&range) {
            let hyp = self.hyp_mem.is_some_and(|h| h.overlaps(&range));
            let why = if hyp {
                Refusal::HypervisorMemory
            } else {
                Refusal::OutsideRam
            };
            return Err((why, at));
        }
        if self.image.iter().flatten().any(|r| r.overlaps(&range)) {
            return Err((Refusal::Image, at));
        }
        if earlier.iter().any(|o| o.overlaps(e)) {
            return Err((Refusal::Overlap, at));
        }
        if self.policy == Policy::Lock && attrs.contains(MemAttrs::EXEC) {
            return Err((Refusal::Locked, at));
        }
        let release = attrs.bits() == mp::ATTR_RELEASE;
        if !release
            && overlapping(&self.spans, e.start, e.end())
                .any(|s| s.attrs.contains(MemAttrs::IMMUTABLE))
        {
            return Err((Refusal::Immutable, at));
        }
        Ok(attrs)
    }

    fn apply(
        &mut self,
        entries: &[Entry],
        sites: SiteList,
        patching: &Patching<'_>,
        ops: &mut dyn HypOps,
    ) -> Result<(), Refused> {
        let ram = ops.guest_ram();
        let mut attrs = [MemAttrs::empty(); MAX_ENTRIES];
        for (i, e) in entries.iter().enumerate() {
            let earlier = entries.get(..i).unwrap_or(&[]);
            let a = self.check(i, e, earlier, ram)?;
            if let Some(slot) = attrs.get_mut(i) {
                *slot = a;
            }
        }
        let attrs = attrs.get(..entries.len()).unwrap_or(&[]);
        self.check_site_list(entries, attrs, sites, ram)?;
        // The new state, on the side.
        self.scratch.clone_from(&self.spans);
        for (i, (e, &a)) in entries.iter().zip(attrs).enumerate() {
            set_range(&mut self.scratch, e.start, e.end(), a, e.va)
                .map_err(|()| (Refusal::NoRoom, Some(i)))?;
        }
        // Releases are hashed before stage 2 changes, while read-only.
        let mut log = self.log;
        let mut records = self.log_records;
        let mut released = 0;
        for (e, a) in entries.iter().zip(attrs) {
            if a.contains(MemAttrs::EXEC) {
                continue;
            }
            for s in overlapping(&self.spans, e.start, e.end()) {
                if !s.attrs.contains(MemAttrs::EXEC) {
                    continue;
                }
                let digest =
                    hash_range(s.start, s.end, ops).map_err(|_| (Refusal::OutsideRam, None))?;
                log = chain(
                    &log,
                    &mp::log_record(LOG_RELEASE, s.start, s.end - s.start, s.va, &digest),
                    ops,
                );
                records += 1;
                released += 1;
            }
        }
        // Stage 2, undone if it fails part-way.
        for (i, (e, &a)) in entries.iter().zip(attrs).enumerate() {
            let range = IpaRange::new(Ipa(e.start), e.size).ok_or((Refusal::Wraps, Some(i)))?;
            if ops.set_perms(range, stage2_perms(a)).is_err() {
                self.undo(entries.get(..i).unwrap_or(&[]), ops);
                return Err((Refusal::Tables, Some(i)));
            }
        }
        // The sites are checked against the code once it is read-only.
        let sites_digest = match self.stage_sites(entries, attrs, sites, patching, ops) {
            Ok(d) => d,
            Err(r) => {
                self.sites.abort();
                self.undo(entries, ops);
                return Err(r);
            }
        };
        // New code is hashed after it became read-only and executable.
        let mut granted = 0;
        for (e, a) in entries.iter().zip(attrs) {
            if !a.contains(MemAttrs::EXEC) {
                continue;
            }
            let was_exec: u64 = overlapping(&self.spans, e.start, e.end())
                .filter(|s| s.attrs.contains(MemAttrs::EXEC))
                .map(|s| s.end - s.start)
                .sum();
            if was_exec == e.size {
                continue;
            }
            let digest = match hash_range(e.start, e.end(), ops) {
                Ok(d) => d,
                Err(_) => {
                    // Not expected: the range was checked to be RAM.
                    self.sites.abort();
                    self.undo(entries, ops);
                    return Err((Refusal::OutsideRam, None));
                }
            };
            log = chain(
                &log,
                &mp::log_record(LOG_EXEC, e.start, e.size, e.va, &digest),
                ops,
            );
            records += 1;
            granted += 1;
        }
        let mut site_lists = 0;
        if let (Some(digest), Some(code)) = (sites_digest, first_code(entries, attrs)) {
            log = chain(
                &log,
                &mp::log_record(LOG_SITES, code.start, code.size, code.va, &digest),
                ops,
            );
            records += 1;
            site_lists = 1;
        }
        core::mem::swap(&mut self.spans, &mut self.scratch);
        // New sites lie in this call's code; released code takes its
        // sites along (entries of one list never overlap).
        self.sites.commit();
        self.sites_registered += sites.count;
        self.site_lists += site_lists;
        for (e, a) in entries.iter().zip(attrs) {
            if !a.contains(MemAttrs::EXEC) {
                self.sites_released += self.sites.remove(e.start, e.end()) as u64;
            }
        }
        self.log = log;
        self.log_records = records;
        self.entries_applied += entries.len() as u64;
        self.exec_granted += granted;
        self.released += released;
        Ok(())
    }

    /// The site list's own rules, before anything changes.
    fn check_site_list(
        &self,
        entries: &[Entry],
        attrs: &[MemAttrs],
        l: SiteList,
        ram: IpaRange,
    ) -> Result<(), Refused> {
        if l.count == 0 {
            return Ok(());
        }
        if l.count > MAX_SITES || first_code(entries, attrs).is_none() {
            return Err((Refusal::SiteListSize, None));
        }
        if !l.ipa.is_multiple_of(8) {
            return Err((Refusal::SiteListAlignment, None));
        }
        // Bounded by MAX_SITES: no overflow.
        let bytes = l.count * SITE_SIZE as u64;
        if !IpaRange::new(Ipa(l.ipa), bytes).is_some_and(|r| ram.covers(&r)) {
            return Err((Refusal::SiteListNotInRam, None));
        }
        if l.count > self.sites.room() as u64 {
            return Err((Refusal::SiteRoom, None));
        }
        Ok(())
    }

    /// Reads the site list once, checks every site against the call's
    /// code (already read-only) and stages it; the digest of the list as
    /// read, or `None` for no list.
    fn stage_sites(
        &mut self,
        entries: &[Entry],
        attrs: &[MemAttrs],
        l: SiteList,
        patching: &Patching<'_>,
        ops: &mut dyn HypOps,
    ) -> Result<Option<[u8; 32]>, Refused> {
        if l.count == 0 {
            return Ok(None);
        }
        let mut h = Sha256::new(ops.sha256_compress());
        let mut buf = [0u8; SITE_CHUNK * SITE_SIZE];
        let mut first = 0u64;
        while first < l.count {
            let n = (l.count - first).min(SITE_CHUNK as u64) as usize;
            let chunk = buf.get_mut(..n * SITE_SIZE).unwrap_or(&mut []);
            ops.read_guest(Ipa(l.ipa + first * SITE_SIZE as u64), chunk)
                .map_err(|_| (Refusal::SiteListNotInRam, None))?;
            h.update(chunk);
            for (k, b) in chunk.chunks_exact(SITE_SIZE).enumerate() {
                let mut w = [0u8; SITE_SIZE];
                w.copy_from_slice(b);
                let code = Code {
                    entries,
                    attrs,
                    spans: &self.spans,
                };
                let staged = match stage_site(&code, SiteEntry::from_bytes(&w), patching, ops) {
                    Some(staged) => staged,
                    None => return Err((Refusal::Site, Some(first as usize + k))),
                };
                for (ipa, kind) in staged.into_iter().flatten() {
                    self.sites
                        .push(ipa, kind)
                        .map_err(|Full| (Refusal::SiteRoom, None))?;
                }
            }
            first += n as u64;
        }
        if self.sites.dedup_pending().is_err() {
            return Err((Refusal::Site, None));
        }
        Ok(Some(h.finalize()))
    }

    /// Puts the stage-2 permissions of `entries`' ranges back to the
    /// current state. The pages were mapped at page granularity by the
    /// change being undone, so this needs no table memory.
    fn undo(&self, entries: &[Entry], ops: &mut dyn HypOps) {
        for e in entries {
            let mut at = e.start;
            for s in overlapping(&self.spans, e.start, e.end()).chain(core::iter::once(Span {
                start: e.end(),
                end: e.end(),
                attrs: DEFAULT,
                va: 0,
            })) {
                if let Some(gap) = IpaRange::new(Ipa(at), s.start.saturating_sub(at)) {
                    let _ = ops.set_perms(gap, stage2_perms(DEFAULT));
                }
                if let Some(r) = IpaRange::new(Ipa(s.start), s.end - s.start) {
                    let _ = ops.set_perms(r, stage2_perms(s.attrs));
                }
                at = s.end;
            }
        }
    }

    /// A write through the text-poke fixmap slot to code this part made
    /// executable. `None` if the IPA is not such code. Otherwise:
    ///
    /// - into a JIT range ([`MemAttrs::JIT`]): a 32- or 64-bit store,
    ///   4-byte aligned and inside the range, is performed and logged
    ///   ([`LOG_COPY`]): the BPF JIT copying a program into its pack or
    ///   filling a freed one with `BRK`s, kprobes writing a slot;
    /// - into other code (module text): at a jump-label site registered
    ///   with that code, `NOP` <-> `B` to the site's own label (in VA
    ///   terms) is performed and logged ([`LOG_PATCH`]);
    /// - anything else is refused as a permission fault the guest's
    ///   `copy_to_kernel_nofault()` turns into an error.
    pub fn text_patch(
        &mut self,
        fault: &GuestFault<'_>,
        patching: &Patching<'_>,
        ops: &mut dyn HypOps,
    ) -> Option<FaultAction> {
        let ipa = fault.ipa.get();
        let span = self
            .spans
            .iter()
            .find(|s| s.attrs.contains(MemAttrs::EXEC) && s.start <= ipa && ipa < s.end)
            .copied()?;
        let site = span.va_at(ipa);
        let syn = fault.syndrome;
        let value = fault.regs.get(syn.register());
        let verdict = if !syn.valid() {
            Err(CodeWrite::NotDecoded)
        } else if span.attrs.contains(MemAttrs::JIT) {
            self.copy(&span, ipa, syn.width(), value, ops)
        } else {
            let width = syn.width();
            match self.sites.kind_at(ipa) {
                None => Err(CodeWrite::NotASite),
                Some(SiteKind::JumpLabel(label)) => {
                    self.jump_label(ipa, site, width, value as u32, label, ops)
                }
                Some(SiteKind::FtraceCall) if patching.ftrace => {
                    self.ftrace_call(ipa, site, width, value as u32, patching, ops)
                }
                Some(SiteKind::FtraceLiteral) if patching.ftrace => {
                    self.ftrace_literal(ipa, site, width, value, ops)
                }
                Some(SiteKind::FtraceCall | SiteKind::FtraceLiteral) => {
                    Err(CodeWrite::FtraceRefused)
                }
                Some(SiteKind::FtracePlt) => Err(CodeWrite::NotASite),
            }
        };
        match verdict {
            Ok(record) => {
                self.log = chain(&self.log, &record, ops);
                self.log_records += 1;
                Some(FaultAction::Emulated)
            }
            Err(why) => {
                self.patches_refused += 1;
                ops.log(format_args!(
                    "kernel protect: refused write to dynamic code at IPA {ipa:#x} (VA {site:#x}): {why}"
                ));
                Some(FaultAction::RefusedRecoverable)
            }
        }
    }

    /// A store into a JIT range: performed, and its code-log record.
    fn copy(
        &mut self,
        span: &Span,
        ipa: u64,
        width: Width,
        value: u64,
        ops: &mut dyn HypOps,
    ) -> Result<[u8; mp::LOG_RECORD_SIZE], CodeWrite> {
        let size = match width {
            Width::Word => 4,
            Width::Double => 8,
            Width::Byte | Width::Half => return Err(CodeWrite::Width),
        };
        if !ipa.is_multiple_of(4) || ipa.checked_add(size).is_none_or(|end| end > span.end) {
            return Err(CodeWrite::Placement);
        }
        // Word by word: the kernel's copies are 4-byte aligned, not
        // always 8.
        let bytes = value.to_le_bytes();
        for (i, w) in bytes.chunks_exact(4).take(size as usize / 4).enumerate() {
            let mut word = [0u8; 4];
            word.copy_from_slice(w);
            ops.write_guest_insn(Ipa(ipa + 4 * i as u64), u32::from_le_bytes(word))
                .map_err(|_| CodeWrite::Failed)?;
        }
        let mut digest = [0u8; 32];
        if let (Some(d), Some(b)) = (digest.get_mut(..size as usize), bytes.get(..size as usize)) {
            d.copy_from_slice(b);
        }
        self.copies += 1;
        Ok(mp::log_record(
            LOG_COPY,
            ipa,
            size,
            span.va_at(ipa),
            &digest,
        ))
    }

    /// A jump-label patch in code that is not a JIT range: performed, and
    /// its code-log record.
    fn jump_label(
        &mut self,
        ipa: u64,
        site: u64,
        width: Width,
        new: u32,
        label: u64,
        ops: &mut dyn HypOps,
    ) -> Result<[u8; mp::LOG_RECORD_SIZE], CodeWrite> {
        if width != Width::Word {
            return Err(CodeWrite::Width);
        }
        let old = read_insn(ipa, ops).ok_or(CodeWrite::Failed)?;
        let to_label = |insn: u32| patch::branch_target(insn, site) == Some(label);
        if !((old == NOP && to_label(new)) || (to_label(old) && new == NOP)) {
            return Err(CodeWrite::ForeignBranch);
        }
        self.write_insn(ipa, site, old, new, ops)
    }

    /// An ftrace call site's call: `NOP` <-> `BL` to a trampoline, or
    /// from one trampoline to another.
    fn ftrace_call(
        &mut self,
        ipa: u64,
        site: u64,
        width: Width,
        new: u32,
        patching: &Patching<'_>,
        ops: &mut dyn HypOps,
    ) -> Result<[u8; mp::LOG_RECORD_SIZE], CodeWrite> {
        if width != Width::Word {
            return Err(CodeWrite::Width);
        }
        let old = read_insn(ipa, ops).ok_or(CodeWrite::Failed)?;
        let callable = |to: u64| (patching.is_trampoline)(to) || self.is_plt(to);
        let ok = |insn: u32| insn == NOP || patch::call_target(insn, site).is_some_and(callable);
        if old == new || !ok(new) {
            return Err(CodeWrite::NotFtraceCall);
        }
        self.patches_ftrace += 1;
        self.write_insn(ipa, site, old, new, ops)
    }

    /// Whether `va` is a registered ftrace PLT of code this part made
    /// executable.
    fn is_plt(&self, va: u64) -> bool {
        self.spans
            .iter()
            .find(|s| s.attrs.contains(MemAttrs::EXEC) && va >= s.va && va - s.va < s.end - s.start)
            .is_some_and(|s| {
                let ipa = s.start + (va - s.va);
                self.sites.kind_at(ipa) == Some(SiteKind::FtracePlt)
            })
    }

    /// Performs a checked instruction patch; its code-log record.
    fn write_insn(
        &mut self,
        ipa: u64,
        site: u64,
        old: u32,
        new: u32,
        ops: &mut dyn HypOps,
    ) -> Result<[u8; mp::LOG_RECORD_SIZE], CodeWrite> {
        ops.write_guest_insn(Ipa(ipa), new)
            .map_err(|_| CodeWrite::Failed)?;
        let mut digest = [0u8; 32];
        digest[..4].copy_from_slice(&old.to_le_bytes());
        digest[4..8].copy_from_slice(&new.to_le_bytes());
        self.patches += 1;
        Ok(mp::log_record(LOG_PATCH, ipa, 4, site, &digest))
    }

    /// An ftrace call site's literal: one 64-bit store of a kernel
    /// pointer or 0 (the `ftrace_ops` its trampoline loads).
    fn ftrace_literal(
        &mut self,
        ipa: u64,
        site: u64,
        width: Width,
        new: u64,
        ops: &mut dyn HypOps,
    ) -> Result<[u8; mp::LOG_RECORD_SIZE], CodeWrite> {
        if width != Width::Double {
            return Err(CodeWrite::Width);
        }
        if !literal_ok(new) {
            return Err(CodeWrite::BadLiteral);
        }
        let mut old = [0u8; 8];
        ops.read_guest(Ipa(ipa), &mut old)
            .map_err(|_| CodeWrite::Failed)?;
        ops.write_guest_u64(Ipa(ipa), new)
            .map_err(|_| CodeWrite::Failed)?;
        let mut digest = [0u8; 32];
        digest[..8].copy_from_slice(&old);
        digest[8..16].copy_from_slice(&new.to_le_bytes());
        self.patches += 1;
        self.patches_ftrace += 1;
        Ok(mp::log_record(LOG_PATCH, ipa, 8, site, &digest))
    }

    /// The stats lines (`kp_perm_*`, `kp_code_log*`).
    ///
    /// # Errors
    /// Whatever `out` returns.
    pub fn write_stats(&self, out: &mut dyn Write) -> fmt::Result {
        writeln!(out, "kp_code_policy={}", self.policy.name())?;
        writeln!(out, "kp_default_deny={}", u8::from(self.enforcing()))?;
        writeln!(out, "kp_other_text={}", self.other_text)?;
        writeln!(out, "kp_perm_calls={}", self.calls)?;
        writeln!(out, "kp_perm_entries_applied={}", self.entries_applied)?;
        writeln!(out, "kp_perm_spans={}", self.spans.len())?;
        writeln!(out, "kp_perm_exec_blocked={}", self.exec_blocked)?;
        writeln!(out, "kp_perm_patches={}", self.patches)?;
        writeln!(out, "kp_perm_patches_refused={}", self.patches_refused)?;
        writeln!(out, "kp_perm_patches_ftrace={}", self.patches_ftrace)?;
        writeln!(out, "kp_perm_copies={}", self.copies)?;
        writeln!(out, "kp_perm_sites={}", self.sites.len())?;
        writeln!(out, "kp_perm_sites_registered={}", self.sites_registered)?;
        writeln!(out, "kp_perm_sites_released={}", self.sites_released)?;
        for r in Refusal::ALL {
            let n = self.refused.get(r as usize).copied().unwrap_or(0);
            writeln!(out, "kp_perm_refused_{}={n}", r.key())?;
        }
        writeln!(out, "kp_code_log_exec={}", self.exec_granted)?;
        writeln!(out, "kp_code_log_release={}", self.released)?;
        writeln!(out, "kp_code_log_sites={}", self.site_lists)?;
        writeln!(out, "kp_code_log_records={}", self.log_records)?;
        write!(out, "kp_code_log=")?;
        for b in self.log {
            write!(out, "{b:02x}")?;
        }
        writeln!(out)
    }

    /// The summary line for people.
    ///
    /// # Errors
    /// Whatever `out` returns.
    pub fn write_summary(&self, out: &mut dyn Write) -> fmt::Result {
        let refused: u64 = self.refused.iter().sum();
        if !self.enforcing() {
            return writeln!(
                out,
                "  code policy:    {} (RAM outside the image {} at EL1)",
                self.policy.name(),
                if self.policy.default_deny() {
                    "will not be executable once protection is enabled"
                } else {
                    "stays executable"
                }
            );
        }
        writeln!(
            out,
            "  code policy:    {}: RAM outside the image not executable at EL1; {} ranges made executable, {} released, {} EL1 executions blocked, {} permission calls refused; code log {} records",
            self.policy.name(),
            self.exec_granted,
            self.released,
            self.exec_blocked,
            refused,
            self.log_records
        )
    }
}

#[cfg(test)]
mod tests;
