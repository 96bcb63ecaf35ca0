// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The page-permissions ABI (`MEM_PERMISSIONS`), defined once for the
//! guest and the hypervisor: the attributes, the list the guest passes,
//! the registers the hypervisor answers in, the code log and the policy.
//!
//! Once kernel protect is enabled with a code policy other than
//! [`Policy::ImageOnly`], stage 2 holds every guest RAM page outside the
//! kernel image read/write and **not executable at EL1** (user space, at
//! EL0, still executes). Kernel code outside the image (module text and,
//! later, BPF JIT images, kprobe slots, ftrace trampolines) becomes
//! executable only through [`MEM_PERMISSIONS`], which the hypervisor
//! measures into the code log.
//!
//! # The call
//!
//! | reg | in | out |
//! |---|---|---|
//! | w0 | [`MEM_PERMISSIONS`] | status: 0 or a [`KpError`] code |
//! | x1 | IPA of the list | index of the first refused entry, or [`NO_ENTRY`] |
//! | x2 | number of entries, 1..=[`MAX_ENTRIES`] | number of code-log records after the call |
//! | x3 | IPA of the jump-label site list, or 0 | first 64 bits of the code-log digest after the call (big-endian) |
//! | x4 | number of sites, 0..=[`MAX_SITES`] | - |
//!
//! x1 is [`NO_ENTRY`] when a refusal is not about one entry (the call,
//! the list, the state). When it is about one site of the site list, x1
//! is that site's index.
//!
//! The list is `x2` [`Entry`]s of [`ENTRY_SIZE`] bytes each, in guest RAM
//! at x1 (8-byte aligned). The hypervisor copies it, checks every entry
//! against the rules and the pages' current state, and only then applies
//! it: all of it or none of it. Entries of one list must not overlap.
//!
//! An EXEC entry also names the guest virtual address at which EL1 runs
//! the range (`va`; zero in every other entry). Kernel code outside the
//! image lives in vmalloc space, whose pages are scattered over RAM: the
//! hypervisor needs the VA to check the targets of the jump-label
//! patches it performs in that code (a branch is relative to the VA, not
//! to the IPA), and the code log names where code ran.
//!
//! # Patch sites
//!
//! The call that makes a module's text executable also names the places
//! the kernel may later patch in it: x4 [`SiteEntry`]s of [`SITE_SIZE`]
//! bytes each, in guest RAM at x3 (8-byte aligned), built by the guest
//! when the text becomes executable from the module's `__jump_table`
//! and `__mcount_loc`. A jump label names the VAs of its site and its
//! label; an ftrace call site names the VA of its 8-byte literal, with
//! [`SITE_FTRACE`] in place of a label; the module's ftrace PLT, if it
//! has one, names its VA and [`SITE_FTRACE_PLT`]. The hypervisor reads the list
//! once and accepts it with the rest of the call, or refuses the whole
//! call, if a site is not aligned code of one of this call's EXEC
//! entries that was not executable before, or is named twice with
//! different labels; if a jump label's label is not such code or is the
//! site itself, or its site holds neither `NOP` nor `B` to the label; if
//! an ftrace call site is not the arm64 sequence (literal, `[BTI C,]
//! MOV X9, X30`, then `NOP` or `BL` to a trampoline the image
//! registered), or a PLT does not jump to such a trampoline. From then on a store into that code through the
//! text-poke path is performed only at such a site and only as its
//! transition: `NOP` <-> `B` to a jump label's own label; `NOP` <-> `BL`
//! to a registered trampoline or to the code's own PLT, or a 64-bit store of a kernel pointer (or
//! 0) into the literal, at an ftrace call site, as the command line's
//! ftrace policy allows. The sites go when the code is released. The
//! list's digest is logged ([`LOG_SITES`]), so a verifier knows which
//! patches the code admits.
//!
//! # Attributes (Heki's values)
//!
//! [`ATTR_READ`] `1<<0`, [`ATTR_WRITE`] `1<<1`, [`ATTR_EXEC`] `1<<2`
//! (execute at EL1; EL0 keeps execute on every page that is not kernel
//! code), [`ATTR_IMMUTABLE`] `1<<3`. READ is required; WRITE with EXEC is
//! refused (the hypervisor's W^X); unknown bits are refused. pvguard adds
//! [`ATTR_JIT`] `1<<4`, with EXEC only: executable code that the kernel
//! fills in place through its text-poke path (a BPF JIT pack is made
//! executable, full of `BRK`s, before programs are copied into it), each
//! store performed and logged by the hypervisor.
//!
//! IMMUTABLE refuses every later change with DENIED, with one exception:
//! the *release*, a request for exactly [`ATTR_READ`]. Freed module
//! memory must be reusable, and the release is the step Linux takes first
//! when it frees code (not executable before writable), so it removes
//! EL1 execute without ever making the page writable, and it is recorded
//! in the code log. What immutability guarantees is that the contents of
//! an immutable page never change while it is mapped as such.
//!
//! # Why raw constants
//!
//! Linux compiles these sources without Cargo and without third-party
//! crates, so the attribute values are plain `u64` constants: the single
//! source of truth, which the kernel uses as they are. The hypervisor
//! builds its `bitflags` type (`MemAttrs` in hyp-stub's permissions
//! service) from these same constants, so the two cannot disagree; a
//! host test there checks that the type knows exactly the bits
//! [`ATTR_ALL`] names.
//!
//! # The code log
//!
//! A SHA-256 chain, starting from 32 zero bytes, over one record per
//! change of EL1 executability: [`LOG_EXEC`] when a range becomes
//! executable (its contents hashed right after stage 2 made it read-only
//! and executable), [`LOG_RELEASE`] when it stops being so (its contents
//! hashed while still read-only). Each step is
//! `chain = SHA-256(chain || record)` with the record laid out by
//! [`log_record`]. A jump-label patch the hypervisor performs in such
//! code is logged too ([`LOG_PATCH`]), and so is every store it performs
//! into a JIT range ([`ATTR_JIT`], [`LOG_COPY`]), and every site list
//! ([`LOG_SITES`]). A verifier that has the records replays the chain; the
//! guest reads the digest with [`CODE_LOG`] (two calls, 16 bytes each)
//! and the number of records with either call.

use super::abi::{is_page_aligned, KpError};
use super::guest::Hypercall;
use super::record::KERNEL_VA_MIN;

/// MEM_PERMISSIONS: apply a list of (page range, attributes). See the
/// module documentation for the registers.
pub const MEM_PERMISSIONS: u32 = 0xC606_0062;

/// CODE_LOG: read the code log. x1 = which half of the digest (0: bytes
/// 0..16, 1: bytes 16..32). Returns x0 = status (ARGUMENT_INVALID for
/// another x1, OBJECT_STATE before protection is enabled), x1 and x2 =
/// that half as two big-endian 64-bit words, x3 = the number of records.
/// The guest reads both halves and retries if x3 differs between them.
pub const CODE_LOG: u32 = 0xC606_0065;

/// The function IDs of this ABI.
pub const FUNCTION_IDS: [u32; 2] = [MEM_PERMISSIONS, CODE_LOG];

/// Readable (required in every entry).
pub const ATTR_READ: u64 = 1 << 0;
/// Writable at EL1 (never with [`ATTR_EXEC`]).
pub const ATTR_WRITE: u64 = 1 << 1;
/// Executable at EL1 (never with [`ATTR_WRITE`]).
pub const ATTR_EXEC: u64 = 1 << 2;
/// No later change but the release (see the module documentation).
pub const ATTR_IMMUTABLE: u64 = 1 << 3;
/// pvguard's one bit past Heki's four, only with [`ATTR_EXEC`] and never
/// with [`ATTR_IMMUTABLE`]: code the kernel fills in place after it
/// became executable (BPF JIT packs, kprobes instruction slots), through
/// its text-poke path. The hypervisor performs those stores on the
/// guest's behalf and logs each one ([`LOG_COPY`]); the page is never
/// writable at stage 2.
pub const ATTR_JIT: u64 = 1 << 4;
/// Every attribute bit the ABI defines.
pub const ATTR_ALL: u64 = ATTR_READ | ATTR_WRITE | ATTR_EXEC | ATTR_IMMUTABLE | ATTR_JIT;
/// What every page outside the image holds under default deny, and what
/// the guest asks for to make released memory writable again.
pub const ATTR_DEFAULT: u64 = ATTR_READ | ATTR_WRITE;
/// The release: the one change an IMMUTABLE page accepts.
pub const ATTR_RELEASE: u64 = ATTR_READ;

/// Size of one [`Entry`] in guest memory.
pub const ENTRY_SIZE: usize = 32;

/// Most entries per call: the list fills at most one 4 KiB page, and
/// one call's work is bounded.
pub const MAX_ENTRIES: usize = 128;

/// Size of one [`SiteEntry`] in guest memory.
pub const SITE_SIZE: usize = 16;

/// Most sites one call registers.
pub const MAX_SITES: u64 = 32768;

/// The label of a [`SiteEntry`] that names an ftrace call site by its
/// literal. Never a jump label's: those are 4-byte aligned.
pub const SITE_FTRACE: u64 = 1;

/// The label of a [`SiteEntry`] that names the module's ftrace PLT
/// (`ADRP X16; ADD X16; BR X16` to a trampoline the image registered),
/// which its call sites call when the module lies out of `BL` range of
/// the trampoline.
pub const SITE_FTRACE_PLT: u64 = 2;

/// One site of a site list: `{ u64 site; u64 label; }`, little-endian
/// guest VAs, absolute: a jump label's site and label as a module's
/// `__jump_table` names them, or an ftrace call site's literal (an entry
/// of its `__mcount_loc`) and [`SITE_FTRACE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SiteEntry {
    /// VA of the instruction that flips between `NOP` and `B`.
    pub site: u64,
    /// VA the `B` jumps to.
    pub label: u64,
}

impl SiteEntry {
    /// The site's wire form.
    pub fn to_bytes(&self) -> [u8; SITE_SIZE] {
        let mut b = [0u8; SITE_SIZE];
        b[..8].copy_from_slice(&self.site.to_le_bytes());
        b[8..].copy_from_slice(&self.label.to_le_bytes());
        b
    }

    /// Decodes one site from its wire form.
    pub fn from_bytes(b: &[u8; SITE_SIZE]) -> Self {
        let mut site = [0u8; 8];
        let mut label = [0u8; 8];
        site.copy_from_slice(&b[..8]);
        label.copy_from_slice(&b[8..]);
        Self {
            site: u64::from_le_bytes(site),
            label: u64::from_le_bytes(label),
        }
    }
}

/// Where a call's site list is (x3) and how many sites it holds (x4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SiteList {
    /// IPA of the first [`SiteEntry`] (8-byte aligned).
    pub ipa: u64,
    /// Number of sites; 0 for none (then `ipa` is not looked at).
    pub count: u64,
}

/// x1 of a refusal that is not about one entry.
pub const NO_ENTRY: u64 = u64::MAX;

/// Code-log record kind: a range became executable at EL1.
pub const LOG_EXEC: u8 = 1;
/// Code-log record kind: a range stopped being executable at EL1.
pub const LOG_RELEASE: u8 = 2;
/// Code-log record kind: the hypervisor patched one instruction of such
/// code (a jump label); the digest field holds the old and the new
/// instruction (little-endian) followed by zeros.
pub const LOG_PATCH: u8 = 3;
/// Code-log record kind: the hypervisor stored into a JIT range
/// ([`ATTR_JIT`]) through the text-poke path; size is the store's width
/// (4 or 8) and the digest field holds the bytes stored, then zeros.
pub const LOG_COPY: u8 = 4;
/// Code-log record kind: the jump-label sites registered with the code
/// of the same call; start, size and va are those of the call's first
/// EXEC entry, and the digest is SHA-256 over the site list as read
/// ([`SiteEntry`]s in wire form, in the guest's order).
pub const LOG_SITES: u8 = 5;
/// Size of one code-log record.
pub const LOG_RECORD_SIZE: usize = 1 + 8 + 8 + 8 + 32;

/// One list entry: `{ u64 start; u64 size; u64 attrs; u64 va; }`,
/// little-endian, start, size and va in bytes, page aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Entry {
    /// First IPA of the range.
    pub start: u64,
    /// Size of the range in bytes.
    pub size: u64,
    /// Raw attributes.
    pub attrs: u64,
    /// For an EXEC entry, the guest VA at which EL1 runs the range; zero
    /// otherwise.
    pub va: u64,
}

// The wire layout: three little-endian u64s and nothing else.
const _: () = assert!(ENTRY_SIZE == 4 * core::mem::size_of::<u64>());
const _: () = assert!(MAX_ENTRIES * ENTRY_SIZE <= 4096);

/// Why an entry is refused on its own, before the pages' state is looked
/// at. Both sides apply these rules: the guest before calling, the
/// hypervisor after copying the list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryError {
    /// Start or size not a multiple of 4 KiB.
    Misaligned,
    /// Size zero.
    Empty,
    /// `start + size` wraps.
    Wraps,
    /// A bit the ABI does not define.
    UnknownAttrs,
    /// READ missing.
    NotReadable,
    /// WRITE and EXEC together.
    WriteExec,
    /// JIT without EXEC, or with IMMUTABLE.
    Jit,
    /// An EXEC entry whose va is misaligned, wraps or is not a kernel
    /// address, or another entry whose va is not zero.
    Va,
}

impl EntryError {
    /// The error code the hypervisor returns.
    pub const fn kp_error(self) -> KpError {
        match self {
            EntryError::Misaligned => KpError::ArgumentAlignment,
            EntryError::Empty => KpError::ArgumentSize,
            EntryError::Wraps => KpError::AddrInvalid,
            EntryError::UnknownAttrs
            | EntryError::NotReadable
            | EntryError::Jit
            | EntryError::Va => KpError::ArgumentInvalid,
            EntryError::WriteExec => KpError::Denied,
        }
    }
}

impl Entry {
    /// The entry's wire form.
    pub fn to_bytes(&self) -> [u8; ENTRY_SIZE] {
        let mut b = [0u8; ENTRY_SIZE];
        b[..8].copy_from_slice(&self.start.to_le_bytes());
        b[8..16].copy_from_slice(&self.size.to_le_bytes());
        b[16..24].copy_from_slice(&self.attrs.to_le_bytes());
        b[24..].copy_from_slice(&self.va.to_le_bytes());
        b
    }

    /// Decodes one entry from its wire form.
    pub fn from_bytes(b: &[u8; ENTRY_SIZE]) -> Self {
        let word = |i: usize| {
            let mut w = [0u8; 8];
            if let Some(s) = b.get(i * 8..i * 8 + 8) {
                w.copy_from_slice(s);
            }
            u64::from_le_bytes(w)
        };
        Self {
            start: word(0),
            size: word(1),
            attrs: word(2),
            va: word(3),
        }
    }

    /// First address past the range (callers check [`Self::check`] first;
    /// saturates rather than wraps).
    pub const fn end(&self) -> u64 {
        self.start.saturating_add(self.size)
    }

    /// The rules an entry obeys by itself.
    ///
    /// # Errors
    /// The first [`EntryError`] that applies, in the order they are
    /// declared.
    pub const fn check(&self) -> Result<(), EntryError> {
        if !is_page_aligned(self.start) || !is_page_aligned(self.size) {
            return Err(EntryError::Misaligned);
        }
        if self.size == 0 {
            return Err(EntryError::Empty);
        }
        if self.start.checked_add(self.size).is_none() {
            return Err(EntryError::Wraps);
        }
        if self.attrs & !ATTR_ALL != 0 {
            return Err(EntryError::UnknownAttrs);
        }
        if self.attrs & ATTR_READ == 0 {
            return Err(EntryError::NotReadable);
        }
        if self.attrs & ATTR_WRITE != 0 && self.attrs & ATTR_EXEC != 0 {
            return Err(EntryError::WriteExec);
        }
        if self.attrs & ATTR_JIT != 0
            && (self.attrs & ATTR_EXEC == 0 || self.attrs & ATTR_IMMUTABLE != 0)
        {
            return Err(EntryError::Jit);
        }
        if self.attrs & ATTR_EXEC == 0 {
            if self.va != 0 {
                return Err(EntryError::Va);
            }
        } else if self.va < KERNEL_VA_MIN
            || !is_page_aligned(self.va)
            || self.va.checked_add(self.size).is_none()
        {
            return Err(EntryError::Va);
        }
        Ok(())
    }

    /// Whether two entries share a page.
    pub const fn overlaps(&self, other: &Entry) -> bool {
        self.start < other.end() && other.start < self.end()
    }
}

/// The list a guest builds for one call: pages pushed in any order of
/// calls, coalesced into one entry whenever a page directly follows the
/// previous one with the same attributes. Module memory is vmalloc'd, so
/// its pages are rarely contiguous in IPA; a call still covers a whole
/// module as long as it has no more than [`MAX_ENTRIES`] runs.
pub struct List {
    entries: [Entry; MAX_ENTRIES],
    len: usize,
}

/// More runs than one call takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListFull;

impl Default for List {
    fn default() -> Self {
        Self::new()
    }
}

impl List {
    /// An empty list.
    pub const fn new() -> Self {
        Self {
            entries: [Entry {
                start: 0,
                size: 0,
                attrs: 0,
                va: 0,
            }; MAX_ENTRIES],
            len: 0,
        }
    }

    /// Adds the page at `ipa` (page aligned) with `attrs`, run by EL1 at
    /// `va` if `attrs` has EXEC (the va is dropped otherwise).
    ///
    /// # Errors
    /// [`ListFull`] if the page starts a run and [`MAX_ENTRIES`] runs
    /// are already in the list; the list is unchanged.
    pub fn push_page(&mut self, ipa: u64, va: u64, attrs: u64) -> Result<(), ListFull> {
        let va = if attrs & ATTR_EXEC != 0 { va } else { 0 };
        if let Some(last) = self
            .len
            .checked_sub(1)
            .and_then(|i| self.entries.get_mut(i))
        {
            let va_follows = va == 0 || last.va.checked_add(last.size) == Some(va);
            if last.attrs == attrs && last.end() == ipa && va_follows && last.size < u64::MAX - PAGE
            {
                last.size += PAGE;
                return Ok(());
            }
        }
        let slot = self.entries.get_mut(self.len).ok_or(ListFull)?;
        *slot = Entry {
            start: ipa,
            size: PAGE,
            attrs,
            va,
        };
        self.len += 1;
        Ok(())
    }

    /// Whether no page was added.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Empties the list.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// The entries so far.
    pub fn entries(&self) -> &[Entry] {
        self.entries.get(..self.len).unwrap_or(&[])
    }

    /// Writes the wire form into `out`, returning the number of bytes
    /// (at most [`MAX_ENTRIES`] × [`ENTRY_SIZE`]); entries that do not
    /// fit in `out` are left out.
    pub fn write_to(&self, out: &mut [u8]) -> usize {
        let mut n = 0;
        for (e, chunk) in self.entries().iter().zip(out.chunks_exact_mut(ENTRY_SIZE)) {
            chunk.copy_from_slice(&e.to_bytes());
            n += ENTRY_SIZE;
        }
        n
    }
}

const PAGE: u64 = super::abi::PAGE_SIZE;

/// Decodes the answer to [`MEM_PERMISSIONS`]: `Ok` with the number of
/// code-log records, or the error and the index of the entry it is
/// about (`None` when it is about the call or the list).
///
/// # Errors
/// The [`KpError`] in x0, with the entry index from x1.
pub fn decode_answer(regs: [u64; 4]) -> Result<u64, (KpError, Option<u64>)> {
    match KpError::from_raw(regs[0]) {
        Ok(()) => Ok(regs[2]),
        Err(e) => Err((e, (regs[1] != NO_ENTRY).then_some(regs[1]))),
    }
}

/// Reads the code log: its digest and number of records, through two
/// [`CODE_LOG`] calls; retried (three times at most) if a record was
/// added between them.
///
/// # Errors
/// The hypervisor's refusal (OBJECT_STATE when it keeps no code log), or
/// BUSY if the log kept changing.
pub fn read_code_log(hv: &mut dyn Hypercall) -> Result<([u8; 32], u64), KpError> {
    for _ in 0..3 {
        let lo = hv.call(CODE_LOG, [0, 0, 0, 0]);
        KpError::from_raw(lo[0])?;
        let hi = hv.call(CODE_LOG, [1, 0, 0, 0]);
        KpError::from_raw(hi[0])?;
        if lo[3] != hi[3] {
            continue;
        }
        let mut digest = [0u8; 32];
        for (chunk, word) in digest.chunks_exact_mut(8).zip([lo[1], lo[2], hi[1], hi[2]]) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        return Ok((digest, lo[3]));
    }
    Err(KpError::Busy)
}

/// The code-log record for a change of `[start, start + size)` (IPAs),
/// run by EL1 at `va`, whose contents hash to `digest`: `kind` (one
/// byte), start, size and va (little-endian u64), digest.
pub fn log_record(
    kind: u8,
    start: u64,
    size: u64,
    va: u64,
    digest: &[u8; 32],
) -> [u8; LOG_RECORD_SIZE] {
    let mut r = [0u8; LOG_RECORD_SIZE];
    r[0] = kind;
    r[1..9].copy_from_slice(&start.to_le_bytes());
    r[9..17].copy_from_slice(&size.to_le_bytes());
    r[17..25].copy_from_slice(&va.to_le_bytes());
    r[25..].copy_from_slice(digest);
    r
}

/// What happens to kernel code outside the image once protection is
/// enabled, ordered from weakest to strictest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Policy {
    /// Only the kernel image is protected; the rest of RAM stays
    /// executable at EL1 and [`MEM_PERMISSIONS`] is refused
    /// (OBJECT_STATE). An explicit opt-out, for guests without the
    /// dynamic-code hooks.
    ImageOnly,
    /// Default deny at EL1; new code is allowed through
    /// [`MEM_PERMISSIONS`] and measured into the code log. The default.
    Measure,
    /// Default deny at EL1; no new EL1 code after enable: EXEC requests
    /// are refused (DENIED). Releases are still accepted.
    Lock,
}

/// The command-line parameter that chooses the [`Policy`].
pub const POLICY_PARAM: &str = "pvguard_code";

impl Policy {
    /// The policy a value of [`POLICY_PARAM`] names. Unknown values mean
    /// the strictest policy: a typo must not weaken protection.
    pub fn from_value(v: &[u8]) -> Policy {
        match v {
            b"image" => Policy::ImageOnly,
            b"measure" => Policy::Measure,
            _ => Policy::Lock,
        }
    }

    /// The policy a kernel command line asks for: the strictest of every
    /// `pvguard_code=` on it, [`Policy::Measure`] if there is none.
    /// Taking the strictest (not the last, as Linux does for most
    /// parameters) means appending to a command line can only tighten it.
    pub fn from_cmdline(cmdline: &[u8]) -> Policy {
        let mut policy: Option<Policy> = None;
        for word in cmdline.split(|&c| c == b' ' || c == b'\t' || c == b'\n' || c == 0) {
            let Some(rest) = word.strip_prefix(POLICY_PARAM.as_bytes()) else {
                continue;
            };
            if let Some(value) = rest.strip_prefix(b"=") {
                let asked = Policy::from_value(value);
                policy = Some(policy.map_or(asked, |p| p.tightened(asked)));
            }
        }
        policy.unwrap_or(Policy::Measure)
    }

    /// The stricter of the two.
    pub fn tightened(self, other: Policy) -> Policy {
        if other > self {
            other
        } else {
            self
        }
    }

    /// Whether RAM outside the image is denied EL1 execute.
    pub const fn default_deny(self) -> bool {
        !matches!(self, Policy::ImageOnly)
    }

    /// The name used on the command line and in the hypervisor's stats.
    pub const fn name(self) -> &'static str {
        match self {
            Policy::ImageOnly => "image",
            Policy::Measure => "measure",
            Policy::Lock => "lock",
        }
    }
}

#[cfg(test)]
// An explicit path: the kernel's rustfmtcheck formats each file as if
// it were a crate root.
#[path = "mem_perms/tests.rs"]
mod tests;
