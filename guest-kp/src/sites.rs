// SPDX-License-Identifier: GPL-2.0 OR MIT
//! Which text patches are legitimate: the registry of patch sites the
//! guest declared with `PATCH_SITES`, the patch policy from its command
//! line, and the one rule book every write into protected TEXT is judged
//! by, whether it comes as a trapped store through the `FIX_TEXT_POKE0`
//! fixmap slot or as an entry of a `TEXT_PATCH` batch.
//!
//! Linux 6.12 on arm64 patches its own text in three places:
//!
//! - **Jump labels** (static keys): `arch_jump_label_transform_queue()`
//!   writes `NOP` or `B <label>` over a site of `__jump_table`. A site may
//!   only toggle between `NOP` and a `B` to *that entry's own target*.
//! - **ftrace**, built with `-fpatchable-function-entry=4,2` and
//!   `DYNAMIC_FTRACE_WITH_CALL_OPS`: each traced function is preceded by
//!   an 8-byte literal and starts `[BTI C,] MOV X9, X30; NOP`.
//!   `ftrace_init_nop()` writes the `MOV` at boot (before protection);
//!   afterwards only the `NOP` after it changes, to `BL <ftrace_caller>`
//!   and back, or from one trampoline to another. The literal is *data*,
//!   not code: it holds the `ftrace_ops` pointer that `ftrace_caller`
//!   loads to find what to call, written with one 64-bit store
//!   (`aarch64_insn_write_literal_u64`). Any kernel pointer (or 0) is
//!   accepted there; what the call site may reach is decided by the `BL`.
//! - **kprobes**: `BRK #4` over an instruction boundary, and later the
//!   original instruction back. The hypervisor records the original when
//!   it writes the `BRK` and restores only exactly that.
//!
//! The registry keeps jump and ftrace sites sorted, as 32-bit offsets
//! from TEXT's start in storage the caller owns ([`SiteStorage`]), and
//! looks them up by binary search. Tables are parsed all or nothing: a
//! malformed entry leaves the registry as it was. Entries outside TEXT
//! (init text, freed before protection) are skipped and counted.
//!
//! At enable ([`SiteRegistry::capture`]) the registry records what each
//! site held, so the measurement of TEXT can be reproduced as it was then
//! however often the sites flipped since ([`SiteRegistry::restore`]).

use core::fmt;

use super::abi::{KpError, SiteTable, JUMP_ENTRY_SIZE, MAX_FTRACE_CALLERS};
use super::patch::{call_target, encode_b, encode_bl, INSN_SIZE, NOP};
use super::record::IpaSpan;

/// `BRK #4`, the breakpoint arm64 kprobes write (`KPROBES_BRK_IMM`).
pub const BRK_KPROBES: u32 = 0xd420_0080;

/// `BTI C`, which may open a function before its ftrace call site.
pub const BTI_C: u32 = 0xd503_245f;

/// `MOV X9, X30`, which saves the return address before ftrace's `BL`.
pub const MOV_X9_X30: u32 = 0xaa1e_03e9;

/// How many jump-label sites the hypervisor's registry holds.
pub const MAX_JUMP_SITES: usize = 16384;

/// How many ftrace call sites the hypervisor's registry holds.
pub const MAX_FTRACE_SITES: usize = 131_072;

/// Size of an ftrace call site's literal.
pub const LITERAL_SIZE: u64 = 8;

/// Entries read from guest memory at once while parsing a table.
const CHUNK_ENTRIES: usize = 64;

/// Ftrace sites must lie in the first 1 GiB of TEXT (their offset is kept
/// in 28 bits, in units of instructions).
const FTRACE_MAX_OFFSET: u64 = 1 << 30;

/// What the guest's command line allows to be patched: ftrace and kprobes
/// each allowed or refused (jump labels always are allowed).
///
/// ```
/// use guest_kp::sites::PatchPolicy;
///
/// let p = PatchPolicy::from_cmdline(b"console=ttyAMA0 pvguard_kprobes=refuse");
/// assert_eq!(p, PatchPolicy { ftrace: true, kprobes: false });
/// // Unknown means no; the last occurrence wins.
/// let p = PatchPolicy::from_cmdline(b"pvguard_ftrace=maybe pvguard_kprobes=refuse pvguard_kprobes=allow");
/// assert_eq!(p, PatchPolicy { ftrace: false, kprobes: true });
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PatchPolicy {
    /// ftrace may patch its call sites.
    pub ftrace: bool,
    /// kprobes may write `BRK` and restore.
    pub kprobes: bool,
}

impl Default for PatchPolicy {
    fn default() -> Self {
        Self::ALLOW_ALL
    }
}

impl PatchPolicy {
    /// Both allowed: the default without command-line words.
    pub const ALLOW_ALL: PatchPolicy = PatchPolicy {
        ftrace: true,
        kprobes: true,
    };

    /// Reads `pvguard_ftrace=allow|refuse` and `pvguard_kprobes=allow|refuse`
    /// from a kernel command line (words separated by spaces, tabs or
    /// newlines; a NUL ends it). Each is allowed unless a word says
    /// otherwise; a value other than `allow` refuses (unknown means no);
    /// the last occurrence of a word wins.
    pub fn from_cmdline(cmdline: &[u8]) -> PatchPolicy {
        let mut policy = Self::ALLOW_ALL;
        let end = cmdline
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(cmdline.len());
        let line = cmdline.get(..end).unwrap_or(&[]);
        for word in line.split(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')) {
            let (name, value) = match word.iter().position(|&b| b == b'=') {
                Some(eq) => (word.get(..eq), word.get(eq + 1..)),
                None => (Some(word), None),
            };
            // A bare name is an occurrence without a value: refused.
            let allowed = value == Some(&b"allow"[..]);
            match name {
                Some(b"pvguard_ftrace") => policy.ftrace = allowed,
                Some(b"pvguard_kprobes") => policy.kprobes = allowed,
                _ => {}
            }
        }
        policy
    }

    /// `allow` or `refuse`, as the stats show it.
    pub const fn word(allowed: bool) -> &'static str {
        if allowed {
            "allow"
        } else {
            "refuse"
        }
    }
}

/// One registered jump-label site: offsets from TEXT's start of the
/// instruction and its label. Bit 0 of the site offset (instructions are
/// 4-byte aligned) says the site held `B` when protection was enabled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JumpSite {
    site: u32,
    target: u32,
}

impl JumpSite {
    /// An unused slot (what storage starts as).
    pub const EMPTY: JumpSite = JumpSite { site: 0, target: 0 };

    const B_AT_ENABLE: u32 = 1;

    fn offset(self) -> u64 {
        u64::from(self.site & !3)
    }
}

/// One registered ftrace call site, packed in 32 bits: bits 31:4 hold the
/// `BL` site's offset from TEXT's start in instructions, bit 3 says a
/// `BTI C` opens the function (the literal is 16 bytes before the site,
/// else 12), bits 2:0 what the site held at enable (0 `NOP`, `n` a `BL` to
/// registered trampoline `n - 1`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FtraceSite(u32);

impl FtraceSite {
    /// An unused slot (what storage starts as).
    pub const EMPTY: FtraceSite = FtraceSite(0);

    const BTI: u32 = 1 << 3;
    const STATE: u32 = 7;

    fn new(offset: u64, bti: bool) -> Option<Self> {
        if offset >= FTRACE_MAX_OFFSET || offset % INSN_SIZE != 0 {
            return None;
        }
        let words = (offset / INSN_SIZE) as u32;
        Some(FtraceSite((words << 4) | if bti { Self::BTI } else { 0 }))
    }

    fn offset(self) -> u64 {
        u64::from(self.0 >> 4) * INSN_SIZE
    }

    fn bti(self) -> bool {
        self.0 & Self::BTI != 0
    }

    /// Offset of the literal (never below 0: checked at registration).
    fn literal_offset(self) -> u64 {
        self.offset()
            .saturating_sub(if self.bti() { 16 } else { 12 })
    }

    fn state(self) -> u32 {
        self.0 & Self::STATE
    }

    fn with_state(self, state: u32) -> Self {
        FtraceSite((self.0 & !Self::STATE) | (state & Self::STATE))
    }
}

/// Storage for the registry, owned by the caller (the hypervisor keeps it
/// in static memory; its capacities are [`MAX_JUMP_SITES`] and
/// [`MAX_FTRACE_SITES`]).
pub struct SiteStorage<'m> {
    /// Jump-label sites.
    pub jump: &'m mut [JumpSite],
    /// ftrace call sites.
    pub ftrace: &'m mut [FtraceSite],
}

impl SiteStorage<'static> {
    /// No storage: every table is too large.
    pub fn none() -> Self {
        SiteStorage {
            jump: &mut [],
            ftrace: &mut [],
        }
    }
}

/// Why a table was refused. The registry is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableError {
    /// This kind of table is already registered.
    AlreadyRegistered,
    /// `McountLoc` before `FtraceCallers`.
    CallersFirst,
    /// No entries, or more than the registry holds.
    Count,
    /// The table's IPA is not 8-byte aligned.
    TableMisaligned,
    /// The table is not inside the kernel image (or wraps).
    TableOutsideImage,
    /// An entry or an instruction it names could not be read.
    Unreadable {
        /// The entry's index.
        entry: u64,
    },
    /// A site, target or literal is misaligned.
    Misaligned {
        /// The entry's index.
        entry: u64,
    },
    /// An address computed from an entry wraps.
    Wraps {
        /// The entry's index.
        entry: u64,
    },
    /// A site lies in TEXT but what it needs (a jump target, the rest of
    /// a call-site sequence, a trampoline) does not.
    OutsideText {
        /// The entry's index.
        entry: u64,
    },
    /// A jump site's target is the site itself.
    SelfBranch {
        /// The entry's index.
        entry: u64,
    },
    /// An instruction is not what the site's kind needs there.
    WrongInstruction {
        /// The entry's index.
        entry: u64,
        /// The instruction's IPA.
        at: u64,
        /// What is there.
        insn: u32,
    },
    /// Two entries name the same site with different targets.
    Duplicate {
        /// The site's IPA.
        at: u64,
    },
    /// A site overlaps another one (of either kind) or its literal.
    Overlap {
        /// The site's IPA.
        at: u64,
    },
    /// A site too far into TEXT for the registry's packing.
    TooFar {
        /// The entry's index.
        entry: u64,
    },
}

impl TableError {
    /// The error `PATCH_SITES` returns.
    pub const fn kp_error(self) -> KpError {
        match self {
            TableError::AlreadyRegistered => KpError::ObjectConfigured,
            TableError::CallersFirst => KpError::ObjectState,
            TableError::Count => KpError::ArgumentSize,
            TableError::TableMisaligned => KpError::ArgumentAlignment,
            TableError::TableOutsideImage | TableError::Unreadable { .. } => KpError::AddrInvalid,
            TableError::Misaligned { .. }
            | TableError::Wraps { .. }
            | TableError::OutsideText { .. }
            | TableError::SelfBranch { .. }
            | TableError::WrongInstruction { .. }
            | TableError::Duplicate { .. }
            | TableError::Overlap { .. }
            | TableError::TooFar { .. } => KpError::ArgumentInvalid,
        }
    }
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            TableError::AlreadyRegistered => f.write_str("already registered"),
            TableError::CallersFirst => f.write_str("ftrace trampolines must come first"),
            TableError::Count => f.write_str("no entries, or more than the registry holds"),
            TableError::TableMisaligned => f.write_str("table is not 8-byte aligned"),
            TableError::TableOutsideImage => f.write_str("table is outside the kernel image"),
            TableError::Unreadable { entry } => write!(f, "entry {entry}: unreadable"),
            TableError::Misaligned { entry } => write!(f, "entry {entry}: misaligned"),
            TableError::Wraps { entry } => write!(f, "entry {entry}: address wraps"),
            TableError::OutsideText { entry } => write!(f, "entry {entry}: outside kernel text"),
            TableError::SelfBranch { entry } => write!(f, "entry {entry}: jumps to itself"),
            TableError::WrongInstruction { entry, at, insn } => {
                write!(
                    f,
                    "entry {entry}: unexpected instruction {insn:#010x} at {at:#x}"
                )
            }
            TableError::Duplicate { at } => write!(f, "two targets for the site at {at:#x}"),
            TableError::Overlap { at } => write!(f, "site at {at:#x} overlaps another"),
            TableError::TooFar { entry } => write!(f, "entry {entry}: too far into text"),
        }
    }
}

/// A registered table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Registered {
    /// Sites registered.
    pub sites: u64,
    /// Entries skipped: their site is outside TEXT (init text).
    pub skipped: u64,
}

/// One write into TEXT to be judged: at `ipa`, `size` 4 (an instruction)
/// or 8 (an ftrace literal), replacing `old` (what memory holds now, read
/// by the hypervisor) with `new`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PatchRequest {
    /// Where.
    pub ipa: u64,
    /// 4 or 8 bytes.
    pub size: u32,
    /// What is there now.
    pub old: u64,
    /// What the guest wants there.
    pub new: u64,
}

/// An accepted write, and what the caller must note.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// A jump label flipped (`on`: `NOP` became `B target`).
    JumpLabel {
        /// The label.
        target: u64,
        /// `B` written (else `NOP`).
        on: bool,
    },
    /// An ftrace call site changed (`NOP`, `BL` to a trampoline).
    FtraceCall,
    /// An ftrace literal changed.
    FtraceLiteral,
    /// A kprobe armed: the caller records `original` for its restore.
    KprobeArm {
        /// The instruction the `BRK` replaces.
        original: u32,
    },
    /// A kprobe disarmed: the recorded original is back.
    KprobeDisarm,
}

impl Accepted {
    /// Whether this is an ftrace patch.
    pub const fn is_ftrace(self) -> bool {
        matches!(self, Accepted::FtraceCall | Accepted::FtraceLiteral)
    }

    /// Whether this is a kprobe patch.
    pub const fn is_kprobe(self) -> bool {
        matches!(self, Accepted::KprobeArm { .. } | Accepted::KprobeDisarm)
    }
}

/// Why a write into TEXT was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Neither 4 nor 8 bytes, or 8 bytes anywhere but an ftrace literal,
    /// or 4 bytes into one.
    SizeMismatch,
    /// Not aligned to its size.
    Misaligned,
    /// Not inside TEXT.
    OutsideText,
    /// The new value equals the old one.
    Identical,
    /// Not a registered site, and not a kprobe's `BRK` or restore.
    NotASite,
    /// At a jump site: not `NOP <-> B` to the entry's own target.
    ForeignBranch,
    /// At an ftrace call site: not `NOP`/`BL` to a registered trampoline.
    NotFtraceCall,
    /// An ftrace literal that is neither 0 nor a kernel address.
    BadLiteral,
    /// ftrace patching is refused by policy.
    FtraceRefused,
    /// kprobes are refused by policy.
    KprobesRefused,
    /// A `BRK` restored to something other than what it replaced.
    BrkRestoreMismatch {
        /// The instruction the `BRK` replaced.
        original: u32,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Refusal::SizeMismatch => f.write_str("size does not fit the site"),
            Refusal::Misaligned => f.write_str("misaligned"),
            Refusal::OutsideText => f.write_str("outside kernel text"),
            Refusal::Identical => f.write_str("new value equals the old one"),
            Refusal::NotASite => f.write_str("not a registered patch site"),
            Refusal::ForeignBranch => f.write_str("not NOP <-> B to the jump label's own target"),
            Refusal::NotFtraceCall => {
                f.write_str("not NOP <-> BL to a registered ftrace trampoline")
            }
            Refusal::BadLiteral => f.write_str("ftrace literal is not a kernel address"),
            Refusal::FtraceRefused => f.write_str("ftrace is refused by policy"),
            Refusal::KprobesRefused => f.write_str("kprobes are refused by policy"),
            Refusal::BrkRestoreMismatch { original } => {
                write!(
                    f,
                    "BRK restored to other than the original {original:#010x}"
                )
            }
        }
    }
}

/// The registered sites.
pub struct SiteRegistry<'m> {
    jump: &'m mut [JumpSite],
    jump_len: usize,
    ftrace: &'m mut [FtraceSite],
    ftrace_len: usize,
    callers: [u64; MAX_FTRACE_CALLERS as usize],
    callers_len: usize,
    /// Bit `1 << kind` per registered [`SiteTable`].
    registered: u8,
    /// The literal every ftrace site held at enable.
    literal: u64,
    /// TEXT's start, fixed by the first registration.
    text_start: u64,
    /// TEXT's VA, fixed with it.
    text_va: u64,
}

/// Reads guest memory at an IPA into the buffer; false if it cannot.
pub type ReadFn<'r> = &'r mut dyn FnMut(u64, &mut [u8]) -> bool;

fn read_u32(read: ReadFn<'_>, ipa: u64) -> Option<u32> {
    let mut b = [0u8; 4];
    read(ipa, &mut b).then(|| u32::from_le_bytes(b))
}

fn word_at(bytes: &[u8], off: usize) -> Option<u32> {
    let mut w = [0u8; 4];
    w.copy_from_slice(bytes.get(off..off.checked_add(4)?)?);
    Some(u32::from_le_bytes(w))
}

fn dword_at(bytes: &[u8], off: usize) -> Option<u64> {
    let mut w = [0u8; 8];
    w.copy_from_slice(bytes.get(off..off.checked_add(8)?)?);
    Some(u64::from_le_bytes(w))
}

/// Whether an ftrace literal value is acceptable: 0 or a kernel address
/// (top 16 bits set, as every TTBR1 address of a 48-bit or smaller VA
/// space has).
pub const fn literal_ok(value: u64) -> bool {
    value == 0 || value >> 48 == 0xffff
}

impl<'m> SiteRegistry<'m> {
    /// An empty registry over `storage`.
    pub fn new(storage: SiteStorage<'m>) -> Self {
        SiteRegistry {
            jump: storage.jump,
            jump_len: 0,
            ftrace: storage.ftrace,
            ftrace_len: 0,
            callers: [0; MAX_FTRACE_CALLERS as usize],
            callers_len: 0,
            registered: 0,
            literal: 0,
            text_start: 0,
            text_va: 0,
        }
    }

    /// Registered jump-label sites.
    pub fn jump_sites(&self) -> usize {
        self.jump_len
    }

    /// Registered ftrace call sites.
    pub fn ftrace_sites(&self) -> usize {
        self.ftrace_len
    }

    /// Whether `va` is a registered ftrace trampoline, in VA terms: what
    /// ftrace call sites outside TEXT (module text) may call.
    pub fn is_ftrace_caller_va(&self, va: u64) -> bool {
        self.callers()
            .iter()
            .any(|&c| c.wrapping_sub(self.text_start).wrapping_add(self.text_va) == va)
    }

    /// Registered ftrace trampolines.
    pub fn ftrace_callers(&self) -> usize {
        self.callers_len
    }

    /// Whether a table of `kind` is registered.
    pub fn is_registered(&self, kind: SiteTable) -> bool {
        self.registered & (1 << kind.as_raw()) != 0
    }

    /// The most entries a table may have. Entries outside TEXT (init
    /// text, discarded functions) are skipped rather than stored, so a
    /// table may hold twice as many entries as there is room for sites;
    /// running out of room for the sites themselves refuses it too.
    fn capacity(&self, kind: SiteTable) -> u64 {
        match kind {
            SiteTable::JumpTable => 2 * self.jump.len() as u64,
            SiteTable::McountLoc => 2 * self.ftrace.len() as u64,
            SiteTable::FtraceCallers => MAX_FTRACE_CALLERS,
        }
    }

    fn jumps(&self) -> &[JumpSite] {
        self.jump.get(..self.jump_len).unwrap_or(&[])
    }

    fn ftraces(&self) -> &[FtraceSite] {
        self.ftrace.get(..self.ftrace_len).unwrap_or(&[])
    }

    fn callers(&self) -> &[u64] {
        self.callers.get(..self.callers_len).unwrap_or(&[])
    }

    /// The jump site at `ipa`.
    fn jump_at(&self, ipa: u64) -> Option<JumpSite> {
        let off = ipa.checked_sub(self.text_start)?;
        let jumps = self.jumps();
        let i = jumps.partition_point(|s| s.offset() < off);
        jumps.get(i).copied().filter(|s| s.offset() == off)
    }

    /// The ftrace site whose `BL` is at `ipa`.
    fn ftrace_at(&self, ipa: u64) -> Option<FtraceSite> {
        let off = ipa.checked_sub(self.text_start)?;
        let sites = self.ftraces();
        let i = sites.partition_point(|s| s.offset() < off);
        sites.get(i).copied().filter(|s| s.offset() == off)
    }

    /// The ftrace site whose literal starts at `ipa`.
    fn literal_at(&self, ipa: u64) -> Option<FtraceSite> {
        [(12, false), (16, true)].into_iter().find_map(|(d, bti)| {
            self.ftrace_at(ipa.checked_add(d)?)
                .filter(|s| s.bti() == bti)
        })
    }

    /// Whether the word at `ipa` belongs to an ftrace site: its `BL` or
    /// either half of its literal.
    fn in_ftrace_site(&self, ipa: u64) -> bool {
        self.ftrace_at(ipa).is_some()
            || self.literal_at(ipa).is_some()
            || ipa
                .checked_sub(4)
                .is_some_and(|p| self.literal_at(p).is_some())
    }

    /// Which registered trampoline a call-site instruction `insn` at
    /// `ipa` calls: `Some(0)` for `NOP`, `Some(n)` for `BL` to trampoline
    /// `n - 1`, `None` for anything else.
    fn call_state(&self, insn: u32, ipa: u64) -> Option<u32> {
        if insn == NOP {
            return Some(0);
        }
        let to = call_target(insn, ipa)?;
        self.callers()
            .iter()
            .position(|&c| c == to)
            .map(|i| i as u32 + 1)
    }

    /// Registers a table of `kind` with `count` entries at `table_ipa`,
    /// whose entries of absolute VAs are relative to TEXT starting at
    /// `text_va`; the table must lie in `image`; `read` reads guest
    /// memory. All or nothing.
    ///
    /// # Errors
    /// A [`TableError`] (in the order: already registered, callers first,
    /// count, table alignment, table placement, then the entries').
    #[allow(clippy::too_many_arguments)]
    pub fn register(
        &mut self,
        kind: SiteTable,
        table_ipa: u64,
        count: u64,
        text_va: u64,
        text: IpaSpan,
        image: IpaSpan,
        read: ReadFn<'_>,
    ) -> Result<Registered, TableError> {
        if self.is_registered(kind) {
            return Err(TableError::AlreadyRegistered);
        }
        if kind == SiteTable::McountLoc && !self.is_registered(SiteTable::FtraceCallers) {
            return Err(TableError::CallersFirst);
        }
        if count == 0 || count > self.capacity(kind) {
            return Err(TableError::Count);
        }
        if table_ipa % 8 != 0 {
            return Err(TableError::TableMisaligned);
        }
        let bytes = count
            .checked_mul(kind.entry_size())
            .ok_or(TableError::TableOutsideImage)?;
        if !image.contains_range(table_ipa, bytes) {
            return Err(TableError::TableOutsideImage);
        }
        if self.registered != 0 && self.text_start != text.start() {
            // The layout is fixed once reported; a different TEXT here is
            // a caller's bug, refused rather than mixed.
            return Err(TableError::TableOutsideImage);
        }
        self.text_start = text.start();
        self.text_va = text_va;
        let t = Table {
            ipa: table_ipa,
            count,
            entry_size: kind.entry_size(),
            text_va,
            text,
        };
        let result = match kind {
            SiteTable::JumpTable => self.register_jumps(&t, read),
            SiteTable::McountLoc => self.register_mcount(&t, read),
            SiteTable::FtraceCallers => self.register_callers(&t, read),
        };
        if result.is_ok() {
            self.registered |= 1 << kind.as_raw();
        }
        result
    }

    /// Reads entries `first..first + n` of `t` into `buf`.
    fn read_chunk<'b>(
        t: &Table,
        first: u64,
        buf: &'b mut [u8],
        read: ReadFn<'_>,
    ) -> Result<&'b [u8], TableError> {
        let size = t.entry_size;
        let n = (buf.len() as u64 / size).min(t.count - first);
        let chunk = buf
            .get_mut(..(n * size) as usize)
            .ok_or(TableError::Unreadable { entry: first })?;
        // In range: the table was checked to lie inside the image.
        if n == 0 || !read(t.ipa + first * size, chunk) {
            return Err(TableError::Unreadable { entry: first });
        }
        Ok(chunk)
    }

    /// VA `va` of entry `index` as an IPA.
    fn va_to_ipa(t: &Table, va: u64, index: u64) -> Result<u64, TableError> {
        va.checked_sub(t.text_va)
            .and_then(|off| t.text.start().checked_add(off))
            .ok_or(TableError::Wraps { entry: index })
    }

    fn register_callers(&mut self, t: &Table, read: ReadFn<'_>) -> Result<Registered, TableError> {
        let mut callers = [0u64; MAX_FTRACE_CALLERS as usize];
        let mut buf = [0u8; 8 * MAX_FTRACE_CALLERS as usize];
        let chunk = Self::read_chunk(t, 0, &mut buf, read)?;
        let mut n = 0usize;
        for (index, e) in chunk.chunks_exact(8).enumerate() {
            let index = index as u64;
            let va = dword_at(e, 0).ok_or(TableError::Unreadable { entry: index })?;
            let ipa = Self::va_to_ipa(t, va, index)?;
            if ipa % INSN_SIZE != 0 {
                return Err(TableError::Misaligned { entry: index });
            }
            if !t.text.contains_range(ipa, INSN_SIZE) {
                return Err(TableError::OutsideText { entry: index });
            }
            *callers.get_mut(n).ok_or(TableError::Count)? = ipa;
            n += 1;
        }
        self.callers = callers;
        self.callers_len = n;
        Ok(Registered {
            sites: n as u64,
            skipped: 0,
        })
    }

    fn register_jumps(&mut self, t: &Table, read: ReadFn<'_>) -> Result<Registered, TableError> {
        let text = t.text;
        let mut n = 0usize;
        let mut skipped = 0u64;
        let mut buf = [0u8; CHUNK_ENTRIES * JUMP_ENTRY_SIZE as usize];
        let mut first = 0u64;
        while first < t.count {
            let chunk = Self::read_chunk(t, first, &mut buf, read)?;
            let entries = chunk.len() as u64 / JUMP_ENTRY_SIZE;
            for (k, e) in chunk.chunks_exact(JUMP_ENTRY_SIZE as usize).enumerate() {
                let index = first + k as u64;
                let at = t.ipa + index * JUMP_ENTRY_SIZE;
                let bad = TableError::Unreadable { entry: index };
                let code = word_at(e, 0).ok_or(bad)? as i32;
                let target = word_at(e, 4).ok_or(bad)? as i32;
                let wraps = TableError::Wraps { entry: index };
                let site = at.checked_add_signed(i64::from(code)).ok_or(wraps)?;
                let target = at
                    .checked_add(4)
                    .and_then(|f| f.checked_add_signed(i64::from(target)))
                    .ok_or(wraps)?;
                if !text.contains(site) {
                    skipped += 1;
                    continue;
                }
                if site % INSN_SIZE != 0 || target % INSN_SIZE != 0 {
                    return Err(TableError::Misaligned { entry: index });
                }
                if !text.contains_range(site, INSN_SIZE) || !text.contains(target) {
                    return Err(TableError::OutsideText { entry: index });
                }
                if site == target {
                    return Err(TableError::SelfBranch { entry: index });
                }
                let insn = read_u32(read, site).ok_or(bad)?;
                if insn != NOP && encode_b(site, target) != Some(insn) {
                    return Err(TableError::WrongInstruction {
                        entry: index,
                        at: site,
                        insn,
                    });
                }
                if self.in_ftrace_site(site) {
                    return Err(TableError::Overlap { at: site });
                }
                let (Ok(site_off), Ok(target_off)) = (
                    u32::try_from(site - text.start()),
                    u32::try_from(target - text.start()),
                ) else {
                    return Err(TableError::TooFar { entry: index });
                };
                let slot = self.jump.get_mut(n).ok_or(TableError::Count)?;
                *slot = JumpSite {
                    site: site_off,
                    target: target_off,
                };
                n += 1;
            }
            first += entries;
        }
        let parsed = self.jump.get_mut(..n).ok_or(TableError::Count)?;
        parsed.sort_unstable_by_key(|s| (s.site, s.target));
        // Entries naming the same site and target describe the same
        // transition and are kept once; the same site with two targets is
        // refused.
        let mut kept = 0usize;
        for i in 0..n {
            let Some(&s) = parsed.get(i) else { break };
            if let Some(prev) = kept.checked_sub(1).and_then(|p| parsed.get(p)) {
                if prev.site == s.site {
                    if prev.target != s.target {
                        return Err(TableError::Duplicate {
                            at: text.start() + u64::from(s.site),
                        });
                    }
                    continue;
                }
            }
            if let Some(slot) = parsed.get_mut(kept) {
                *slot = s;
            }
            kept += 1;
        }
        self.jump_len = kept;
        Ok(Registered {
            sites: kept as u64,
            skipped,
        })
    }

    fn register_mcount(&mut self, t: &Table, read: ReadFn<'_>) -> Result<Registered, TableError> {
        let text = t.text;
        let mut n = 0usize;
        let mut skipped = 0u64;
        let mut buf = [0u8; CHUNK_ENTRIES * 8];
        let mut first = 0u64;
        while first < t.count {
            let chunk = Self::read_chunk(t, first, &mut buf, read)?;
            let entries = chunk.len() as u64 / 8;
            for (k, e) in chunk.chunks_exact(8).enumerate() {
                let index = first + k as u64;
                let bad = TableError::Unreadable { entry: index };
                let va = dword_at(e, 0).ok_or(bad)?;
                // Below TEXT (0 included: linkers pad `__mcount_loc`
                // between objects with NULL entries, which ftrace skips)
                // is outside it, like init text above it.
                if va < t.text_va {
                    skipped += 1;
                    continue;
                }
                let literal = Self::va_to_ipa(t, va, index)?;
                if !text.contains(literal) {
                    skipped += 1;
                    continue;
                }
                if literal % LITERAL_SIZE != 0 {
                    return Err(TableError::Misaligned { entry: index });
                }
                // literal, [BTI C,] MOV X9, X30, NOP or BL: 16 or 20 bytes.
                let mut seq = [0u8; 20];
                let len = if text.contains_range(literal, 20) {
                    20
                } else {
                    16
                };
                if !text.contains_range(literal, len) {
                    return Err(TableError::OutsideText { entry: index });
                }
                let seq = seq.get_mut(..len as usize).ok_or(bad)?;
                if !read(literal, seq) {
                    return Err(bad);
                }
                let bti = word_at(seq, 8) == Some(BTI_C);
                let bl_off: usize = if bti { 16 } else { 12 };
                let bl = literal + bl_off as u64;
                let (Some(mov), Some(call)) = (word_at(seq, bl_off - 4), word_at(seq, bl_off))
                else {
                    return Err(TableError::OutsideText { entry: index });
                };
                if mov != MOV_X9_X30 {
                    return Err(TableError::WrongInstruction {
                        entry: index,
                        at: bl - 4,
                        insn: mov,
                    });
                }
                if self.call_state(call, bl).is_none() {
                    return Err(TableError::WrongInstruction {
                        entry: index,
                        at: bl,
                        insn: call,
                    });
                }
                // Neither the call site nor the literal may be a jump site.
                for word in [literal, literal + 4, bl] {
                    if self.jump_at(word).is_some() {
                        return Err(TableError::Overlap { at: word });
                    }
                }
                let site = FtraceSite::new(bl - text.start(), bti)
                    .ok_or(TableError::TooFar { entry: index })?;
                *self.ftrace.get_mut(n).ok_or(TableError::Count)? = site;
                n += 1;
            }
            first += entries;
        }
        let parsed = self.ftrace.get_mut(..n).ok_or(TableError::Count)?;
        parsed.sort_unstable_by_key(|s| s.offset());
        // Each site spans its literal to its BL; consecutive spans must
        // not meet (the same site twice included).
        for pair in parsed.windows(2) {
            if let [a, b] = pair {
                if b.literal_offset() < a.offset() + INSN_SIZE {
                    return Err(TableError::Overlap {
                        at: text.start() + b.offset(),
                    });
                }
            }
        }
        self.ftrace_len = n;
        Ok(Registered {
            sites: n as u64,
            skipped,
        })
    }
}

impl SiteRegistry<'_> {
    /// Records what every site holds as protection is enabled (TEXT is
    /// read-only from here on, so this is what the baseline measures).
    /// A site that no longer holds a state its kind allows (the guest
    /// changed it between registration and enable), or whose literal
    /// differs from the first site's, is dropped from the registry: it is
    /// never patched, so the measurement finds it as it was. Returns the
    /// number of sites dropped.
    ///
    /// One literal value for all sites keeps the registry small: ftrace
    /// gives every call site the same `ftrace_ops` until tracing starts,
    /// and protection is enabled before it does.
    pub fn capture(&mut self, read: ReadFn<'_>) -> u64 {
        let start = self.text_start;
        let mut dropped = 0u64;
        let mut kept = 0usize;
        for i in 0..self.jump_len {
            let Some(mut s) = self.jump.get(i).copied() else {
                break;
            };
            let site = start + s.offset();
            let target = start + u64::from(s.target);
            match read_u32(read, site) {
                Some(NOP) => s.site &= !JumpSite::B_AT_ENABLE,
                Some(insn) if encode_b(site, target) == Some(insn) => {
                    s.site |= JumpSite::B_AT_ENABLE;
                }
                _ => {
                    dropped += 1;
                    continue;
                }
            }
            if let Some(slot) = self.jump.get_mut(kept) {
                *slot = s;
            }
            kept += 1;
        }
        self.jump_len = kept;

        let mut literal = None;
        let mut kept = 0usize;
        for i in 0..self.ftrace_len {
            let Some(s) = self.ftrace.get(i).copied() else {
                break;
            };
            let bl = start + s.offset();
            let lit = start + s.literal_offset();
            let mut seq = [0u8; 20];
            let len = (bl + INSN_SIZE - lit) as usize;
            let state = seq.get_mut(..len).and_then(|seq| {
                if !read(lit, seq) {
                    return None;
                }
                let value = dword_at(seq, 0)?;
                let mov = word_at(seq, len - 8)?;
                let call = word_at(seq, len - 4)?;
                let state = self.call_state(call, bl)?;
                (mov == MOV_X9_X30 && *literal.get_or_insert(value) == value).then_some(state)
            });
            let Some(state) = state else {
                dropped += 1;
                continue;
            };
            if let Some(slot) = self.ftrace.get_mut(kept) {
                *slot = s.with_state(state);
            }
            kept += 1;
        }
        self.ftrace_len = kept;
        self.literal = literal.unwrap_or(0);
        dropped
    }

    /// The lowest IPA at or after `ipa` that [`Self::restore`] may
    /// change, if any.
    pub fn next_word(&self, ipa: u64) -> Option<u64> {
        let start = self.text_start;
        let off = ipa.saturating_sub(start);
        let jumps = self.jumps();
        let j = jumps
            .get(jumps.partition_point(|s| s.offset() < off))
            .map(|s| start + s.offset());
        let sites = self.ftraces();
        let f = sites
            .get(sites.partition_point(|s| s.offset() < off))
            .map(|s| {
                let lit = start + s.literal_offset();
                if lit + LITERAL_SIZE > ipa {
                    lit
                } else {
                    start + s.offset()
                }
            });
        match (j, f) {
            (Some(a), Some(b)) => Some(a.min(b).max(ipa)),
            (a, b) => a.or(b).map(|x| x.max(ipa)),
        }
    }

    /// Puts back, in `buf` (a copy of guest memory at `at`), every
    /// registered word as it was at enable. Returns whether each of them
    /// held a state its kind allows (else TEXT was changed behind the
    /// hypervisor's back).
    pub fn restore(&self, at: u64, buf: &mut [u8]) -> bool {
        let start = self.text_start;
        let end = at.saturating_add(buf.len() as u64);
        let mut legit = true;
        let put = |buf: &mut [u8], ipa: u64, bytes: &[u8]| -> Option<[u8; 8]> {
            let off = usize::try_from(ipa.checked_sub(at)?).ok()?;
            let w = buf.get_mut(off..off.checked_add(bytes.len())?)?;
            let mut old = [0u8; 8];
            old.get_mut(..bytes.len())?.copy_from_slice(w);
            w.copy_from_slice(bytes);
            Some(old)
        };
        let off = at.saturating_sub(start);
        let jumps = self.jumps();
        for s in jumps
            .iter()
            .skip(jumps.partition_point(|s| s.offset() < off))
        {
            let site = start + s.offset();
            if site >= end {
                break;
            }
            let target = start + u64::from(s.target);
            let b = encode_b(site, target).unwrap_or(NOP);
            let then = if s.site & JumpSite::B_AT_ENABLE != 0 {
                b
            } else {
                NOP
            };
            if let Some(old) = put(buf, site, &then.to_le_bytes()) {
                let old = u32::from_le_bytes([old[0], old[1], old[2], old[3]]);
                legit &= old == NOP || old == b;
            }
        }
        let sites = self.ftraces();
        for s in sites
            .iter()
            .skip(sites.partition_point(|s| s.offset() < off))
        {
            let bl = start + s.offset();
            let lit = start + s.literal_offset();
            if lit >= end {
                break;
            }
            if let Some(old) = put(buf, lit, &self.literal.to_le_bytes()) {
                legit &= literal_ok(u64::from_le_bytes(old));
            }
            let then = match s.state() {
                0 => NOP,
                n => self
                    .callers()
                    .get(n as usize - 1)
                    .and_then(|&c| encode_bl(bl, c))
                    .unwrap_or(NOP),
            };
            if let Some(old) = put(buf, bl, &then.to_le_bytes()) {
                let old = u32::from_le_bytes([old[0], old[1], old[2], old[3]]);
                legit &= self.call_state(old, bl).is_some();
            }
        }
        legit
    }

    /// Judges one write into TEXT at `text` under `policy`. `brk_original`
    /// is the instruction a kprobe `BRK` the hypervisor wrote at
    /// `req.ipa` replaced, if there is one.
    ///
    /// # Errors
    /// The [`Refusal`] that says why.
    pub fn decide(
        &self,
        text: IpaSpan,
        policy: PatchPolicy,
        req: PatchRequest,
        brk_original: Option<u32>,
    ) -> Result<Accepted, Refusal> {
        let size = match req.size {
            4 => INSN_SIZE,
            8 => LITERAL_SIZE,
            _ => return Err(Refusal::SizeMismatch),
        };
        if req.ipa % size != 0 {
            return Err(Refusal::Misaligned);
        }
        if !text.contains_range(req.ipa, size) {
            return Err(Refusal::OutsideText);
        }
        if size == LITERAL_SIZE {
            if self.literal_at(req.ipa).is_none() {
                return Err(Refusal::SizeMismatch);
            }
            if !policy.ftrace {
                return Err(Refusal::FtraceRefused);
            }
            // Data, not code: rewriting the same pointer is what ftrace
            // does when a site's ops do not change.
            if !literal_ok(req.new) {
                return Err(Refusal::BadLiteral);
            }
            return Ok(Accepted::FtraceLiteral);
        }
        if self.in_ftrace_site(req.ipa) && self.ftrace_at(req.ipa).is_none() {
            // Half of a literal, written as an instruction.
            return Err(Refusal::SizeMismatch);
        }
        let (old, new) = (req.old as u32, req.new as u32);
        if u64::from(old) != req.old || u64::from(new) != req.new {
            return Err(Refusal::SizeMismatch);
        }
        // ftrace rewrites a call site unchanged when only its ops change
        // (ftrace_modify_call() with the same trampoline); a jump label
        // or a kprobe never writes what is already there.
        if old == new && !(self.ftrace_at(req.ipa).is_some() && policy.ftrace) {
            return Err(Refusal::Identical);
        }
        if let Some(s) = self.jump_at(req.ipa) {
            let target = self.text_start + u64::from(s.target);
            let b = encode_b(req.ipa, target);
            return match (old, new) {
                (NOP, n) if Some(n) == b => Ok(Accepted::JumpLabel { target, on: true }),
                (o, NOP) if Some(o) == b => Ok(Accepted::JumpLabel { target, on: false }),
                _ => Err(Refusal::ForeignBranch),
            };
        }
        if self.ftrace_at(req.ipa).is_some() {
            if !policy.ftrace {
                return Err(Refusal::FtraceRefused);
            }
            return match (self.call_state(old, req.ipa), self.call_state(new, req.ipa)) {
                (Some(_), Some(_)) => Ok(Accepted::FtraceCall),
                _ => Err(Refusal::NotFtraceCall),
            };
        }
        if let Some(original) = brk_original {
            // A BRK the hypervisor wrote (so `old` is BRK): only its
            // original may come back.
            return if new == original {
                Ok(Accepted::KprobeDisarm)
            } else {
                Err(Refusal::BrkRestoreMismatch { original })
            };
        }
        if new == BRK_KPROBES {
            if !policy.kprobes {
                return Err(Refusal::KprobesRefused);
            }
            return Ok(Accepted::KprobeArm { original: old });
        }
        Err(Refusal::NotASite)
    }
}

/// A table being parsed.
struct Table {
    ipa: u64,
    count: u64,
    entry_size: u64,
    text_va: u64,
    text: IpaSpan,
}

#[cfg(test)]
// An explicit path: the kernel's rustfmtcheck formats each file as if
// it were a crate root.
#[path = "sites/tests.rs"]
mod tests;
