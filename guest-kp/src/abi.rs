// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The kernel-protect hypercall ABI, defined once for both the guest and
//! the hypervisor: function IDs, region types, the record version and the
//! error codes, all as Gunyah's kernel-protect module numbers them.
//!
//! Every call follows SMCCC: function ID in w0, arguments in x1.., status
//! in x0 (0 on success, otherwise a [`KpError`] code in two's complement).
//!
//! | call | ID | arguments |
//! |---|---|---|
//! | [`ASSET_INFO`] | `0xC606_005F` | x1 = region type, x2 = start, x3 = size |
//! | [`ENABLE_VM_PROTECTION`] | `0xC606_0060` | x1 = target address space ([`SELF_ADDRSPACE`]); first call: x2, x3 = the image's other text |
//! | [`ASSET_INFO_COMPACT`] | `0xC606_0061` | x1 = IPA of one 132-byte record |
//! | [`PATCH_SITES`] | `0xC606_0063` | x1 = [`SiteTable`], x2 = IPA of the table, x3 = entries, x4 = VA of TEXT's start |
//! | [`TEXT_PATCH`] | `0xC606_0064` | x1 = IPA of [`TextPatch`] entries, x2 = how many |
//! | protect_vm_assets | `hvc #0x6094` ([`PROTECT_VM_ASSETS_HVC_IMM`]) | resource manager only |
//!
//! The three SMCCC IDs are fast, SMC64, owner 6 (vendor hypervisor) calls
//! whose bits 23:16 hold `0x06`; SMCCC reserves those bits, so a
//! dispatcher must compare the whole of w0 rather than mask it down to a
//! function number (in particular they are not functions 0x5F..0x61 of
//! KVM's vendor-hyp feature bitmap).
//!
//! Guest-supplied region types become a [`RegionType`] at the boundary,
//! through [`region_index`], which clamps the index without relying on a
//! predicted branch (Spectre v1).

use core::fmt;

/// ASSET_INFO: report one region. x1 = region type ([`RegionType`]),
/// x2 = start (an IPA, or for [`RegionType::FixmapTextPoke0`] the guest
/// VA of the fixmap slot), x3 = size in bytes.
pub const ASSET_INFO: u32 = 0xC606_005F;

/// ENABLE_VM_PROTECTION: run the integrity check of an address space.
/// x1 = the target's address-space ID; a guest names itself with
/// [`SELF_ADDRSPACE`]. Returns x1 = 1 if TEXT+RODATA are intact, x2 = the
/// text patches the hypervisor performed, x3 = the first 64 bits of the
/// measurement taken at the first call, or 0 if the first call returns
/// while the hypervisor is still taking it.
///
/// The first call (the one that enables protection) also takes x2 = IPA
/// and x3 = size of the image's *other text*, or 0 and 0: code of the
/// kernel image outside TEXT that EL1 runs only through other mappings
/// (arm64's `.rodata.text`: the idmap text that CPU hotplug, suspend and
/// kexec enter with the MMU off, and the KPTI trampoline). Under default
/// deny it becomes executable at EL1 and read-only at enable, and is
/// measured into the code log. It must be page aligned, at most
/// [`MAX_OTHER_TEXT`] bytes, inside the image and outside the reported
/// regions (ARGUMENT_ALIGNMENT, ARGUMENT_SIZE, ADDR_INVALID,
/// ARGUMENT_INVALID). Later calls (self-checks) ignore x2 and x3.
pub const ENABLE_VM_PROTECTION: u32 = 0xC606_0060;

/// Most bytes of other text (see [`ENABLE_VM_PROTECTION`]).
pub const MAX_OTHER_TEXT: u64 = 2 << 20;

/// ASSET_INFO_COMPACT: report every region at once. x1 = IPA of one
/// 132-byte `kernel_asset_info` record (see `record::KernelAssetInfo`).
pub const ASSET_INFO_COMPACT: u32 = 0xC606_0061;

/// PATCH_SITES: register a table of text-patch sites, which the
/// hypervisor reads and checks itself. x1 = the table's kind
/// ([`SiteTable`]), x2 = its IPA (inside the kernel image, 8-byte
/// aligned), x3 = its number of entries, x4 = the VA at which TEXT starts
/// (tables of absolute VAs are turned into IPAs with it: under KASLR,
/// sites and targets move together). Accepted only between the layout
/// report and ENABLE_VM_PROTECTION, once per kind, and all or nothing.
/// Returns x1 = sites registered, x2 = entries skipped because they lie
/// outside TEXT (init text, which is freed before protection).
pub const PATCH_SITES: u32 = 0xC606_0063;

/// TEXT_PATCH: apply a batch of text patches. x1 = IPA of an array of
/// [`TextPatch`] entries, x2 = their number (1..=[`MAX_TEXT_PATCH_BATCH`]).
/// Entries are checked and applied in order, each against TEXT as the
/// entries before it left it; the first refused entry (a patch no rule
/// allows, or a malformed entry) stops the batch with
/// [`KpError::Denied`]. Whatever the outcome, x1 = the number of entries
/// applied: all of them on success, the index of the refused entry on
/// DENIED, 0 when the call itself is refused (BUSY while the baseline is
/// being taken, ARGUMENT_SIZE, ADDR_INVALID, OBJECT_STATE).
pub const TEXT_PATCH: u32 = 0xC606_0064;

/// The SMCCC function IDs a protected guest may call.
pub const FUNCTION_IDS: [u32; 5] = [
    ASSET_INFO,
    ENABLE_VM_PROTECTION,
    ASSET_INFO_COMPACT,
    PATCH_SITES,
    TEXT_PATCH,
];

/// The kinds of table [`PATCH_SITES`] registers (its x1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SiteTable {
    /// The kernel's `__jump_table`: arm64 `struct jump_entry`, 16 bytes
    /// each (`s32 code`, `s32 target`, both relative to their own field,
    /// then `long key`). x4 is ignored.
    JumpTable = 0,
    /// ftrace's `__mcount_loc` built from `__patchable_function_entries`
    /// (`-fpatchable-function-entry=4,2`): u64 VAs, each of the 8-byte
    /// literal before a function whose entry holds `[BTI C,] MOV X9, X30;
    /// NOP`.
    McountLoc = 1,
    /// The ftrace trampolines a call site may branch to (`ftrace_caller`):
    /// u64 VAs, at most [`MAX_FTRACE_CALLERS`].
    FtraceCallers = 2,
}

impl SiteTable {
    /// Decodes x1 of [`PATCH_SITES`].
    ///
    /// # Errors
    /// [`KpError::ArgumentInvalid`] for a kind the ABI does not define.
    pub const fn from_raw(raw: u64) -> Result<Self, KpError> {
        match raw {
            0 => Ok(SiteTable::JumpTable),
            1 => Ok(SiteTable::McountLoc),
            2 => Ok(SiteTable::FtraceCallers),
            _ => Err(KpError::ArgumentInvalid),
        }
    }

    /// The raw value of x1.
    pub const fn as_raw(self) -> u64 {
        self as u64
    }

    /// Bytes per entry.
    pub const fn entry_size(self) -> u64 {
        match self {
            SiteTable::JumpTable => JUMP_ENTRY_SIZE,
            SiteTable::McountLoc | SiteTable::FtraceCallers => 8,
        }
    }
}

/// Size of arm64's `struct jump_entry` with relative references.
pub const JUMP_ENTRY_SIZE: u64 = 16;

/// How many ftrace trampolines [`SiteTable::FtraceCallers`] may name.
pub const MAX_FTRACE_CALLERS: u64 = 4;

/// Most entries one [`TEXT_PATCH`] call takes.
pub const MAX_TEXT_PATCH_BATCH: u64 = 512;

/// Size in bytes of one [`TextPatch`] entry.
pub const TEXT_PATCH_ENTRY_SIZE: usize = 24;

/// One entry of a [`TEXT_PATCH`] batch, 24 bytes little-endian:
/// `u64 ipa`, `u64 value`, `u32 size` (4 for an instruction, 8 for an
/// ftrace call site's literal), `u32` reserved (0).
///
/// ```
/// use guest_kp::abi::TextPatch;
///
/// let p = TextPatch { ipa: 0x4021_0004, value: 0xd503_201f, size: 4 };
/// assert_eq!(TextPatch::from_bytes(&p.to_bytes()), Ok(p));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TextPatch {
    /// IPA of the patched instruction or literal.
    pub ipa: u64,
    /// The new instruction (low 32 bits) or literal.
    pub value: u64,
    /// 4 or 8.
    pub size: u32,
}

impl TextPatch {
    /// The entry's bytes.
    pub fn to_bytes(&self) -> [u8; TEXT_PATCH_ENTRY_SIZE] {
        let mut b = [0u8; TEXT_PATCH_ENTRY_SIZE];
        b[..8].copy_from_slice(&self.ipa.to_le_bytes());
        b[8..16].copy_from_slice(&self.value.to_le_bytes());
        b[16..20].copy_from_slice(&self.size.to_le_bytes());
        b
    }

    /// Decodes an entry.
    ///
    /// # Errors
    /// [`KpError::ArgumentSize`] if `size` is neither 4 nor 8 or a 4-byte
    /// entry's value does not fit 32 bits; [`KpError::ArgumentInvalid`] if
    /// the reserved word is not 0.
    pub fn from_bytes(b: &[u8; TEXT_PATCH_ENTRY_SIZE]) -> Result<Self, KpError> {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[..8]);
        let ipa = u64::from_le_bytes(w);
        w.copy_from_slice(&b[8..16]);
        let value = u64::from_le_bytes(w);
        let mut h = [0u8; 4];
        h.copy_from_slice(&b[16..20]);
        let size = u32::from_le_bytes(h);
        h.copy_from_slice(&b[20..24]);
        if u32::from_le_bytes(h) != 0 {
            return Err(KpError::ArgumentInvalid);
        }
        match size {
            4 if value <= u64::from(u32::MAX) => Ok(Self { ipa, value, size }),
            8 => Ok(Self { ipa, value, size }),
            _ => Err(KpError::ArgumentSize),
        }
    }
}

/// The immediate of `hvc #0x6094`, protect_vm_assets: Gunyah's resource
/// manager gives a VM's address space its four extents (RO, RW, RX,
/// RWX). Only the resource manager may make it; in pvguard the
/// hypervisor's own boot path plays that role and a guest issuing it is
/// refused with [`KpError::Denied`].
pub const PROTECT_VM_ASSETS_HVC_IMM: u16 = 0x6094;

/// The address-space ID a guest passes to [`ENABLE_VM_PROTECTION`] to name
/// itself (a self-check).
///
/// Gunyah takes the target's address-space capability ID, which the
/// calling VM looks up in its capability space. pvguard's hypervisor runs
/// a single guest and has no capability space, so the guest cannot know
/// any ID but its own; 0 is reserved to mean "the caller". Every other
/// value names a VM that does not exist here and is refused with
/// [`KpError::Denied`]: the same answer Gunyah gives to a caller/target
/// pair it does not allow, so a guest cannot probe for other VMs.
pub const SELF_ADDRSPACE: u64 = 0;

/// The version field of the record. It also makes the compact call
/// idempotent: the hypervisor refuses a second submission.
pub const KP_MAGIC_VERSION: u32 = 0xF_1000;

/// The ABI's page: TEXT, RODATA, DATA and BSS start at, and span, a
/// multiple of 4 KiB (the stage-2 granule).
pub const PAGE_SIZE: u64 = 4096;

/// Whether `x` is a multiple of [`PAGE_SIZE`].
pub const fn is_page_aligned(x: u64) -> bool {
    x & (PAGE_SIZE - 1) == 0
}

/// Size of the compact record in bytes.
pub const RECORD_SIZE: usize = 132;

/// Number of region slots in the record (five used, three reserved).
pub const REGION_SLOTS: usize = 8;

/// SMCCC/Gunyah status of a successful call.
pub const RET_OK: u64 = 0;

/// A kernel region the guest reports, numbered as the record's slots and
/// as x1 of [`ASSET_INFO`].
///
/// ```
/// use guest_kp::abi::RegionType;
///
/// assert_eq!(RegionType::try_from(1), Ok(RegionType::Rodata));
/// assert!(RegionType::try_from(5).is_err());
/// assert_eq!(RegionType::Bss.index(), 3);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum RegionType {
    /// Kernel text, `[_text, _etext)`: an IPA range, executable, never
    /// writable.
    Text = 0,
    /// Read-only data, `[__start_rodata, __end_rodata)`: an IPA range,
    /// never writable or executable.
    Rodata = 1,
    /// Data, `[_sdata, _edata)`: an IPA range, never executable.
    Data = 2,
    /// Zero-initialised data, `[__bss_start, __bss_stop)`: an IPA range,
    /// never executable.
    Bss = 3,
    /// The `FIX_TEXT_POKE0` fixmap slot through which arm64 patches its
    /// text: a guest *virtual* address range, one guest page.
    FixmapTextPoke0 = 4,
}

impl RegionType {
    /// Number of region types.
    pub const COUNT: usize = 5;

    /// Every region type, in slot order.
    pub const ALL: [RegionType; Self::COUNT] = [
        RegionType::Text,
        RegionType::Rodata,
        RegionType::Data,
        RegionType::Bss,
        RegionType::FixmapTextPoke0,
    ];

    /// The four region types whose start is an IPA, in slot order.
    pub const IPA: [RegionType; 4] = [
        RegionType::Text,
        RegionType::Rodata,
        RegionType::Data,
        RegionType::Bss,
    ];

    /// The slot index (0..=4).
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The raw value, as passed in x1 of [`ASSET_INFO`].
    pub const fn as_raw(self) -> u64 {
        self as u64
    }

    /// Whether the region's start is an IPA (all but the fixmap slot).
    pub const fn is_ipa(self) -> bool {
        !matches!(self, RegionType::FixmapTextPoke0)
    }

    /// The name Gunyah gives the region type.
    pub const fn name(self) -> &'static str {
        match self {
            RegionType::Text => "TEXT",
            RegionType::Rodata => "RODATA",
            RegionType::Data => "DATA",
            RegionType::Bss => "BSS",
            RegionType::FixmapTextPoke0 => "FIXMAP_TEXT_POKE0",
        }
    }

    /// The stage-2 protection the hypervisor enforces on the region, or
    /// `None` for the fixmap slot, which is a guest VA range and is not
    /// mapped at stage 2 by itself.
    pub const fn protection(self) -> Option<Protection> {
        match self {
            RegionType::Text => Some(Protection::ReadExecute),
            RegionType::Rodata => Some(Protection::ReadOnly),
            RegionType::Data | RegionType::Bss => Some(Protection::ReadWrite),
            RegionType::FixmapTextPoke0 => None,
        }
    }
}

impl fmt::Display for RegionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A region type the ABI does not define (x1 of [`ASSET_INFO`] above 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidRegionType(pub u64);

impl From<InvalidRegionType> for KpError {
    fn from(_: InvalidRegionType) -> Self {
        KpError::ArgumentInvalid
    }
}

impl TryFrom<u64> for RegionType {
    type Error = InvalidRegionType;

    /// Decodes a guest-supplied region type, through [`region_index`].
    ///
    /// # Errors
    /// [`InvalidRegionType`] if `raw` is above 4.
    fn try_from(raw: u64) -> Result<Self, Self::Error> {
        match region_index(raw) {
            Some(i) => Self::ALL.get(i).copied().ok_or(InvalidRegionType(raw)),
            None => Err(InvalidRegionType(raw)),
        }
    }
}

/// What stage 2 allows on a region the guest reported; the hypervisor
/// derives its permissions from this.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protection {
    /// Read, and executed by the kernel; never writable (TEXT).
    ReadExecute,
    /// Read only; never writable, never executed by the kernel (RODATA).
    /// User space may execute it: the vDSO lies there.
    ReadOnly,
    /// Read and write; never executable (DATA, BSS).
    ReadWrite,
}

impl Protection {
    /// Whether stage 2 allows writes.
    pub const fn writable(self) -> bool {
        matches!(self, Protection::ReadWrite)
    }

    /// Whether stage 2 lets the kernel (EL1) fetch instructions.
    pub const fn executable(self) -> bool {
        matches!(self, Protection::ReadExecute)
    }
}

/// All ones if `index < len`, zero otherwise, computed with arithmetic
/// only: Linux's generic `array_index_mask_nospec`. Requires
/// `len <= 2^63` (above that, the mask is wrong for small indices).
const fn index_mask(index: u64, len: u64) -> u64 {
    // `len - 1 - index` borrows (sets bit 63) exactly when `index >= len`;
    // `index` itself has bit 63 set when it is too large to compare that
    // way. Either way bit 63 of `t` is set, and the arithmetic shift
    // spreads the inverted bit 63 over the whole word.
    let t = index | len.wrapping_sub(1).wrapping_sub(index);
    ((!t as i64) >> 63) as u64
}

/// Bounds-checks a guest-supplied `index` against an array of `len`
/// elements in a way that stays safe under speculation (Spectre v1).
///
/// The returned index is `index & mask`, where the mask comes from
/// arithmetic on `index` and `len` (no comparison, no branch) and is
/// hidden from the optimiser with [`core::hint::black_box`] (as Linux's
/// `OPTIMIZER_HIDE_VAR` does), so the compiler cannot drop the masking
/// on the path where it "knows" the index is in range. If the
/// `Some`/`None` branch that follows is mispredicted, the speculated
/// index is 0, which is in bounds for any non-empty array, never the
/// guest's value.
///
/// Limits: `black_box` is documented as best effort, and Arm's full
/// recipe also puts a `CSDB` barrier between computing the mask and using
/// the index, which needs inline assembly and so is left to the caller:
/// a hypervisor on hardware that predicts data values may issue `CSDB`
/// after this call and before the access (QEMU's TCG does not speculate).
/// A `len` above `2^63` is treated as `2^63` (indices of `2^63` and above
/// are refused).
///
/// ```
/// use guest_kp::abi::index_nospec;
///
/// assert_eq!(index_nospec(3, 8), Some(3));
/// assert_eq!(index_nospec(8, 8), None);
/// assert_eq!(index_nospec(u64::MAX, 8), None);
/// assert_eq!(index_nospec(0, 0), None);
/// ```
pub fn index_nospec(index: u64, len: usize) -> Option<usize> {
    // `index_mask` needs `len <= 2^63`; `len` is not guest-controlled, so
    // clamping it with a comparison is not a speculation hazard.
    let len = if len as u64 > 1 << 63 {
        1 << 63
    } else {
        len as u64
    };
    let mask = core::hint::black_box(index_mask(index, len));
    if mask == 0 {
        None
    } else {
        // `index & mask` is `index` here, and below `len`, so it fits.
        Some((index & mask) as usize)
    }
}

/// Bounds-checks a guest-supplied region type (x1 of [`ASSET_INFO`])
/// before it indexes anything: `Some(i)` with `i < RegionType::COUNT`, or
/// `None` for values above 4. See [`index_nospec`] for how the index is
/// kept in bounds under speculation.
///
/// ```
/// use guest_kp::abi::region_index;
///
/// assert_eq!(region_index(4), Some(4));
/// assert_eq!(region_index(5), None);
/// assert_eq!(region_index(1 << 63), None);
/// ```
pub fn region_index(raw: u64) -> Option<usize> {
    index_nospec(raw, RegionType::COUNT)
}

/// A status code the hypervisor does not define, kept as received.
///
/// It can only be made by decoding ([`KpError::from_raw`]), so it is never
/// 0 (success) and never one of the codes [`KpError`] names: encoding a
/// [`KpError`] can never yield success by accident.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UnknownCode(u64);

impl UnknownCode {
    /// The raw value of x0.
    pub const fn get(self) -> u64 {
        self.0
    }
}

/// A kernel-protect error: Gunyah's error codes, as returned in x0.
///
/// ```
/// use guest_kp::abi::KpError;
///
/// assert_eq!(KpError::from_raw(0), Ok(()));
/// assert_eq!(KpError::from_raw(35), Err(KpError::ObjectConfigured));
/// assert_eq!(KpError::Unimplemented.as_raw(), u64::MAX); // -1
/// assert!(matches!(KpError::from_raw(7), Err(KpError::Unknown(c)) if c.get() == 7));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KpError {
    /// -1: the call is not implemented. Also SMCCC's NOT_SUPPORTED, which
    /// is what a hypervisor without kernel protect answers.
    Unimplemented,
    /// 1: an argument is invalid.
    ArgumentInvalid,
    /// 2: a size is invalid.
    ArgumentSize,
    /// 3: an address or size is misaligned.
    ArgumentAlignment,
    /// 22: an address is outside the memory it must lie in, or wraps.
    AddrInvalid,
    /// 30: the caller may not make this call (or not on this target).
    Denied,
    /// 31: the hypervisor is busy; try again.
    Busy,
    /// 33: the call is not valid in the object's current state.
    ObjectState,
    /// 35: the object is already configured (a second submission).
    ObjectConfigured,
    /// A code the ABI does not define.
    Unknown(UnknownCode),
}

impl KpError {
    const UNIMPLEMENTED: u64 = -1i64 as u64;
    const ARGUMENT_INVALID: u64 = 1;
    const ARGUMENT_SIZE: u64 = 2;
    const ARGUMENT_ALIGNMENT: u64 = 3;
    const ADDR_INVALID: u64 = 22;
    const DENIED: u64 = 30;
    const BUSY: u64 = 31;
    const OBJECT_STATE: u64 = 33;
    const OBJECT_CONFIGURED: u64 = 35;

    /// The value of x0 that carries this error (two's complement for
    /// negative codes).
    pub const fn as_raw(self) -> u64 {
        match self {
            KpError::Unimplemented => Self::UNIMPLEMENTED,
            KpError::ArgumentInvalid => Self::ARGUMENT_INVALID,
            KpError::ArgumentSize => Self::ARGUMENT_SIZE,
            KpError::ArgumentAlignment => Self::ARGUMENT_ALIGNMENT,
            KpError::AddrInvalid => Self::ADDR_INVALID,
            KpError::Denied => Self::DENIED,
            KpError::Busy => Self::BUSY,
            KpError::ObjectState => Self::OBJECT_STATE,
            KpError::ObjectConfigured => Self::OBJECT_CONFIGURED,
            KpError::Unknown(code) => code.0,
        }
    }

    /// Decodes x0 of a kernel-protect call.
    ///
    /// # Errors
    /// The [`KpError`] that `raw` encodes if it is not 0;
    /// [`KpError::Unknown`] for codes the ABI does not define.
    pub const fn from_raw(raw: u64) -> Result<(), KpError> {
        Err(match raw {
            RET_OK => return Ok(()),
            Self::UNIMPLEMENTED => KpError::Unimplemented,
            Self::ARGUMENT_INVALID => KpError::ArgumentInvalid,
            Self::ARGUMENT_SIZE => KpError::ArgumentSize,
            Self::ARGUMENT_ALIGNMENT => KpError::ArgumentAlignment,
            Self::ADDR_INVALID => KpError::AddrInvalid,
            Self::DENIED => KpError::Denied,
            Self::BUSY => KpError::Busy,
            Self::OBJECT_STATE => KpError::ObjectState,
            Self::OBJECT_CONFIGURED => KpError::ObjectConfigured,
            other => KpError::Unknown(UnknownCode(other)),
        })
    }

    /// The value of x0 for a call that ended with `result`.
    pub const fn encode(result: Result<(), KpError>) -> u64 {
        match result {
            Ok(()) => RET_OK,
            Err(e) => e.as_raw(),
        }
    }

    /// Gunyah's name for the code (`"UNKNOWN"` for undefined codes).
    pub const fn name(self) -> &'static str {
        match self {
            KpError::Unimplemented => "UNIMPLEMENTED",
            KpError::ArgumentInvalid => "ARGUMENT_INVALID",
            KpError::ArgumentSize => "ARGUMENT_SIZE",
            KpError::ArgumentAlignment => "ARGUMENT_ALIGNMENT",
            KpError::AddrInvalid => "ADDR_INVALID",
            KpError::Denied => "DENIED",
            KpError::Busy => "BUSY",
            KpError::ObjectState => "OBJECT_STATE",
            KpError::ObjectConfigured => "OBJECT_CONFIGURED",
            KpError::Unknown(_) => "UNKNOWN",
        }
    }
}

impl From<KpError> for u64 {
    fn from(e: KpError) -> u64 {
        e.as_raw()
    }
}

impl fmt::Display for KpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KpError::Unknown(code) => write!(f, "UNKNOWN({:#x})", code.0),
            other => f.write_str(other.name()),
        }
    }
}

#[cfg(test)]
// An explicit path: the kernel's rustfmtcheck formats each file as if
// it were a crate root.
#[path = "abi/tests.rs"]
mod tests;
