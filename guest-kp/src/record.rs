// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The compact `kernel_asset_info` record and the validation both sides
//! apply to it.
//!
//! The seed gives only the record's size (132 bytes, packed); pvguard
//! defines the layout, little-endian throughout:
//!
//! ```text
//! offset  size  field
//!      0     4  version = KP_MAGIC_VERSION (0xF1000)
//!      4   128  region[8] { u64 start; u64 size; }, indexed by region type
//!                 0 TEXT, 1 RODATA, 2 DATA, 3 BSS   start = IPA
//!                 4 FIXMAP_TEXT_POKE0                start = guest VA of the slot
//!                 5..7 reserved                      all zero
//! ```
//!
//! The fields are byte arrays, so the struct has alignment 1, its memory
//! *is* the wire format on any host, and reading it from bytes is a safe
//! copy: the hypervisor copies the 132 bytes out of guest RAM and calls
//! [`KernelAssetInfo::from_bytes`], so it needs no `zerocopy` (whose
//! derives would add nothing to byte arrays, and which the kernel, which
//! builds these sources without Cargo, could not use).
//!
//! [`KernelAssetInfo::validate`] is the one set of rules: the guest runs
//! it before sending (through [`super::builder::Builder`]) and the
//! hypervisor after receiving, and each [`RecordError`] maps to the
//! [`KpError`] the hypervisor returns. [`Collector`] applies the same
//! rules to the region-by-region path.

use core::fmt;

use super::abi::{
    is_page_aligned, KpError, RegionType, KP_MAGIC_VERSION, PAGE_SIZE, RECORD_SIZE, REGION_SLOTS,
};

/// Guest page sizes arm64 Linux may use; the fixmap slot is one of them.
pub const FIXMAP_SLOT_SIZES: [u64; 3] = [4 << 10, 16 << 10, 64 << 10];

/// Lowest arm64 kernel virtual address for any `VA_BITS` (52 at most):
/// kernel addresses have their top 12 bits set.
pub const KERNEL_VA_MIN: u64 = 0xFFF0_0000_0000_0000;

/// One slot of the record: `{ u64 start; u64 size; }`, little-endian.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(C, packed)]
pub struct Region {
    start: [u8; 8],
    size: [u8; 8],
}

impl Region {
    /// The all-zero slot (what reserved slots must hold).
    pub const ZERO: Region = Region::new(0, 0);

    /// A slot holding `start` and `size`.
    pub const fn new(start: u64, size: u64) -> Self {
        Region {
            start: start.to_le_bytes(),
            size: size.to_le_bytes(),
        }
    }

    /// The start (an IPA, or a guest VA for the fixmap slot).
    pub const fn start(&self) -> u64 {
        u64::from_le_bytes(self.start)
    }

    /// The size in bytes.
    pub const fn size(&self) -> u64 {
        u64::from_le_bytes(self.size)
    }

    /// `start + size`, or `None` if that wraps.
    pub const fn end(&self) -> Option<u64> {
        self.start().checked_add(self.size())
    }

    /// Whether both fields are zero.
    pub const fn is_zero(&self) -> bool {
        self.start() == 0 && self.size() == 0
    }
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{{ start: {:#x}, size: {:#x} }}",
            self.start(),
            self.size()
        )
    }
}

/// The compact `kernel_asset_info` record (132 bytes, packed,
/// little-endian), as passed by IPA to `ASSET_INFO_COMPACT`.
///
/// Its fields are private: a record comes from [`KernelAssetInfo::new`]
/// and [`KernelAssetInfo::set_region`], from the
/// [`super::builder::Builder`], or from bytes.
///
/// ```
/// use guest_kp::abi::RegionType;
/// use guest_kp::record::{KernelAssetInfo, Region};
///
/// let mut rec = KernelAssetInfo::new();
/// rec.set_region(RegionType::Text, Region::new(0x4020_0000, 0x10_0000));
/// let bytes = rec.to_bytes();
/// assert_eq!(&bytes[..4], &0xF1000u32.to_le_bytes());
/// assert_eq!(KernelAssetInfo::from_bytes(&bytes), Ok(rec));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[repr(C, packed)]
pub struct KernelAssetInfo {
    version: [u8; 4],
    regions: [Region; REGION_SLOTS],
}

const _: () = assert!(core::mem::size_of::<KernelAssetInfo>() == RECORD_SIZE);
const _: () = assert!(core::mem::align_of::<KernelAssetInfo>() == 1);
const _: () = assert!(core::mem::size_of::<Region>() == 16);

impl Default for KernelAssetInfo {
    fn default() -> Self {
        Self::new()
    }
}

impl KernelAssetInfo {
    /// Size of the record in bytes.
    pub const SIZE: usize = RECORD_SIZE;

    /// A record of the current version with every slot zero.
    pub const fn new() -> Self {
        KernelAssetInfo {
            version: KP_MAGIC_VERSION.to_le_bytes(),
            regions: [Region::ZERO; REGION_SLOTS],
        }
    }

    /// Reads a record from its wire bytes.
    ///
    /// # Errors
    /// [`RecordError::Version`] if the version field is not
    /// [`KP_MAGIC_VERSION`]. Nothing else is checked here; see
    /// [`Self::validate`].
    pub fn from_bytes(bytes: &[u8; RECORD_SIZE]) -> Result<Self, RecordError> {
        let mut rec = KernelAssetInfo {
            version: [0; 4],
            regions: [Region::ZERO; REGION_SLOTS],
        };
        let mut src = bytes.iter().copied();
        for dst in rec.bytes_mut() {
            *dst = src.next().unwrap_or(0);
        }
        rec.check_version()?;
        Ok(rec)
    }

    /// The record's wire bytes.
    pub fn to_bytes(&self) -> [u8; RECORD_SIZE] {
        let mut out = [0u8; RECORD_SIZE];
        let src = self.version.iter().chain(
            self.regions
                .iter()
                .flat_map(|r| r.start.iter().chain(r.size.iter())),
        );
        for (dst, b) in out.iter_mut().zip(src) {
            *dst = *b;
        }
        out
    }

    fn bytes_mut(&mut self) -> impl Iterator<Item = &mut u8> {
        self.version.iter_mut().chain(
            self.regions
                .iter_mut()
                .flat_map(|r| r.start.iter_mut().chain(r.size.iter_mut())),
        )
    }

    /// The version field.
    pub const fn version(&self) -> u32 {
        u32::from_le_bytes(self.version)
    }

    /// The slot of region `ty`.
    pub fn region(&self, ty: RegionType) -> Region {
        self.slot(ty.index()).unwrap_or(Region::ZERO)
    }

    /// Slot `index` (0..8, reserved slots included), or `None` past the
    /// end.
    pub fn slot(&self, index: usize) -> Option<Region> {
        self.regions.get(index).copied()
    }

    /// Sets the slot of region `ty`.
    pub fn set_region(&mut self, ty: RegionType, region: Region) {
        if let Some(slot) = self.regions.get_mut(ty.index()) {
            *slot = region;
        }
    }

    fn check_version(&self) -> Result<(), RecordError> {
        match self.version() {
            KP_MAGIC_VERSION => Ok(()),
            found => Err(RecordError::Version { found }),
        }
    }

    /// Checks the record against every rule of the ABI, with the four IPA
    /// regions required to lie inside guest RAM `ram = (start, end)`
    /// (half-open), and returns the validated layout.
    ///
    /// Checks run in this order, and the first failure is returned:
    /// version; reserved slots; each region in slot order
    /// ([`check_region`]); then overlaps between the IPA regions.
    ///
    /// # Errors
    /// - [`RecordError::Version`]: the version is not [`KP_MAGIC_VERSION`].
    /// - [`RecordError::ReservedSlot`]: slot 5, 6 or 7 is not zero.
    /// - any error of [`check_region`] for the first bad region.
    /// - [`RecordError::Overlap`]: two IPA regions overlap.
    pub fn validate(&self, ram: (u64, u64)) -> Result<Layout, RecordError> {
        self.check(Some(ram))
    }

    /// [`Self::validate`] without the RAM check: what the guest can verify
    /// before it knows (or without trusting) the hypervisor's idea of RAM.
    ///
    /// # Errors
    /// As [`Self::validate`], except [`RecordError::OutsideRam`].
    pub fn check_shape(&self) -> Result<Layout, RecordError> {
        self.check(None)
    }

    fn check(&self, ram: Option<(u64, u64)>) -> Result<Layout, RecordError> {
        self.check_version()?;
        for slot in RegionType::COUNT..REGION_SLOTS {
            if matches!(self.slot(slot), Some(r) if !r.is_zero()) {
                return Err(RecordError::ReservedSlot { slot });
            }
        }
        let text = check_ipa_region(RegionType::Text, self.region(RegionType::Text), ram)?;
        let rodata = check_ipa_region(RegionType::Rodata, self.region(RegionType::Rodata), ram)?;
        let data = check_ipa_region(RegionType::Data, self.region(RegionType::Data), ram)?;
        let bss = check_ipa_region(RegionType::Bss, self.region(RegionType::Bss), ram)?;
        let fixmap = check_fixmap(self.region(RegionType::FixmapTextPoke0))?;
        let pairs = [
            (RegionType::Text, text, RegionType::Rodata, rodata),
            (RegionType::Text, text, RegionType::Data, data),
            (RegionType::Text, text, RegionType::Bss, bss),
            (RegionType::Rodata, rodata, RegionType::Data, data),
            (RegionType::Rodata, rodata, RegionType::Bss, bss),
            (RegionType::Data, data, RegionType::Bss, bss),
        ];
        for (a, sa, b, sb) in pairs {
            if sa.overlaps(&sb) {
                return Err(RecordError::Overlap(a, b));
            }
        }
        Ok(Layout {
            text,
            rodata,
            data,
            bss,
            fixmap,
        })
    }
}

impl fmt::Debug for KernelAssetInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let regions = self.regions;
        f.debug_struct("KernelAssetInfo")
            .field("version", &format_args!("{:#x}", self.version()))
            .field("regions", &regions)
            .finish()
    }
}

/// A [`KernelAssetInfo`] aligned so that it never crosses a 4 KiB page
/// (256 > 132, and 256 divides 4096), which [`record_placement`]
/// requires. The kernel keeps its record in a static of this type (not
/// on the stack, whose virtual mapping has no linear IPA) and passes the
/// IPA of field `.0`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C, align(256))]
pub struct AlignedRecord(pub KernelAssetInfo);

/// Whether a record at `ipa` lies within one 4 KiB page.
pub const fn record_fits_in_page(ipa: u64) -> bool {
    // Offset in page + size <= page size; no overflow: offset < 4096.
    (ipa & (PAGE_SIZE - 1)) + (RECORD_SIZE as u64) <= PAGE_SIZE
}

/// Checks where a guest placed its record: within one 4 KiB page (so the
/// hypervisor reads it through a single stage-2 translation) and inside
/// guest RAM `ram = (start, end)`.
///
/// # Errors
/// - [`RecordError::RecordCrossesPage`]: the record straddles a page.
/// - [`RecordError::RecordOutsideRam`]: it is not inside `ram`.
pub const fn record_placement(ipa: u64, ram: (u64, u64)) -> Result<(), RecordError> {
    if !record_fits_in_page(ipa) {
        return Err(RecordError::RecordCrossesPage { ipa });
    }
    match ipa.checked_add(RECORD_SIZE as u64) {
        Some(end) if ipa >= ram.0 && end <= ram.1 => Ok(()),
        _ => Err(RecordError::RecordOutsideRam { ipa }),
    }
}

/// A validated, non-empty, non-wrapping half-open range of guest IPAs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpaSpan {
    start: u64,
    end: u64,
}

impl IpaSpan {
    /// `[start, end)`, or `None` if it is empty or reversed.
    pub const fn new(start: u64, end: u64) -> Option<Self> {
        if start < end {
            Some(IpaSpan { start, end })
        } else {
            None
        }
    }

    /// `[start, start + size)`, or `None` if it is empty or wraps.
    pub const fn from_size(start: u64, size: u64) -> Option<Self> {
        match start.checked_add(size) {
            Some(end) => Self::new(start, end),
            None => None,
        }
    }

    /// First IPA.
    pub const fn start(&self) -> u64 {
        self.start
    }

    /// One past the last IPA.
    pub const fn end(&self) -> u64 {
        self.end
    }

    /// Size in bytes (never 0).
    pub const fn size(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Whether `ipa` lies inside.
    pub const fn contains(&self, ipa: u64) -> bool {
        self.start <= ipa && ipa < self.end
    }

    /// Whether `[ipa, ipa + len)` lies entirely inside (false if it
    /// wraps).
    pub const fn contains_range(&self, ipa: u64, len: u64) -> bool {
        match ipa.checked_add(len) {
            Some(end) => self.start <= ipa && end <= self.end,
            None => false,
        }
    }

    /// Whether the two spans share at least one IPA.
    pub const fn overlaps(&self, other: &IpaSpan) -> bool {
        self.start < other.end && other.start < self.end
    }
}

/// The validated fixmap slot: one guest page of kernel virtual addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FixmapSlot {
    va: u64,
    size: u64,
}

impl FixmapSlot {
    /// The slot's guest virtual address.
    pub const fn va(&self) -> u64 {
        self.va
    }

    /// The slot's size (the guest's page size).
    pub const fn size(&self) -> u64 {
        self.size
    }

    /// Whether the guest virtual address `va` lies in the slot: a write
    /// fault there is the text-patching path.
    pub const fn contains(&self, va: u64) -> bool {
        // `va - self.va` does not wrap when `va >= self.va`.
        va >= self.va && va - self.va < self.size
    }
}

/// A record that passed [`KernelAssetInfo::validate`]: the four IPA
/// regions and the fixmap slot. Only validation makes one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Layout {
    text: IpaSpan,
    rodata: IpaSpan,
    data: IpaSpan,
    bss: IpaSpan,
    fixmap: FixmapSlot,
}

impl Layout {
    /// TEXT.
    pub const fn text(&self) -> IpaSpan {
        self.text
    }

    /// RODATA.
    pub const fn rodata(&self) -> IpaSpan {
        self.rodata
    }

    /// DATA.
    pub const fn data(&self) -> IpaSpan {
        self.data
    }

    /// BSS.
    pub const fn bss(&self) -> IpaSpan {
        self.bss
    }

    /// FIXMAP_TEXT_POKE0.
    pub const fn fixmap(&self) -> FixmapSlot {
        self.fixmap
    }

    /// The IPA span of region `ty`, or `None` for the fixmap slot.
    pub const fn span(&self, ty: RegionType) -> Option<IpaSpan> {
        match ty {
            RegionType::Text => Some(self.text),
            RegionType::Rodata => Some(self.rodata),
            RegionType::Data => Some(self.data),
            RegionType::Bss => Some(self.bss),
            RegionType::FixmapTextPoke0 => None,
        }
    }

    /// The IPA region containing `ipa`, if any (how the hypervisor routes
    /// a stage-2 fault to its TEXT/RODATA/DATA handler).
    pub fn region_of(&self, ipa: u64) -> Option<RegionType> {
        RegionType::IPA
            .into_iter()
            .find(|&ty| matches!(self.span(ty), Some(s) if s.contains(ipa)))
    }

    /// The record this layout came from.
    pub fn to_record(&self) -> KernelAssetInfo {
        let mut rec = KernelAssetInfo::new();
        for ty in RegionType::IPA {
            if let Some(s) = self.span(ty) {
                rec.set_region(ty, Region::new(s.start(), s.size()));
            }
        }
        rec.set_region(
            RegionType::FixmapTextPoke0,
            Region::new(self.fixmap.va, self.fixmap.size),
        );
        rec
    }
}

/// What is wrong with a record, a region or a layout, precisely.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecordError {
    /// The version field is not [`KP_MAGIC_VERSION`]
    /// (ARGUMENT_INVALID).
    Version {
        /// The version found.
        found: u32,
    },
    /// A reserved slot (5..=7) is not zero (ARGUMENT_INVALID).
    ReservedSlot {
        /// The slot index.
        slot: usize,
    },
    /// A region has size 0 (ARGUMENT_SIZE).
    ZeroSize(RegionType),
    /// A region's start is not aligned: 4 KiB for IPA regions, the slot
    /// size for the fixmap slot (ARGUMENT_ALIGNMENT).
    StartMisaligned(RegionType),
    /// An IPA region's size is not a multiple of 4 KiB
    /// (ARGUMENT_ALIGNMENT).
    SizeMisaligned(RegionType),
    /// A section end the builder cannot round (ARGUMENT_ALIGNMENT); see
    /// [`super::builder::Builder`].
    EndMisaligned(RegionType),
    /// `start + size` wraps past the top of the address space
    /// (ADDR_INVALID).
    Wraps(RegionType),
    /// An IPA region is not entirely inside guest RAM (ADDR_INVALID).
    OutsideRam(RegionType),
    /// The fixmap slot is not one guest page of 4, 16 or 64 KiB
    /// (ARGUMENT_SIZE).
    FixmapSize {
        /// The size found.
        size: u64,
    },
    /// The fixmap slot is not a kernel virtual address (ADDR_INVALID).
    FixmapNotKernelVa {
        /// The address found.
        va: u64,
    },
    /// Two IPA regions overlap (ARGUMENT_INVALID).
    Overlap(RegionType, RegionType),
    /// A section ends before it starts (ARGUMENT_INVALID).
    EndBeforeStart(RegionType),
    /// Sections are not in the order the arm64 linker script gives them
    /// (TEXT, RODATA, DATA, BSS) (ARGUMENT_INVALID).
    OutOfOrder {
        /// The section that should come first.
        earlier: RegionType,
        /// The section that starts before `earlier` ends.
        later: RegionType,
    },
    /// The record straddles a 4 KiB page (ARGUMENT_ALIGNMENT).
    RecordCrossesPage {
        /// The record's IPA.
        ipa: u64,
    },
    /// The record is not inside guest RAM (ADDR_INVALID).
    RecordOutsideRam {
        /// The record's IPA.
        ipa: u64,
    },
    /// A region type above 4 (ARGUMENT_INVALID).
    BadRegionType(u64),
    /// The region was already reported (OBJECT_CONFIGURED).
    Duplicate(RegionType),
}

impl RecordError {
    /// The code the hypervisor returns for this error.
    pub const fn kp_error(self) -> KpError {
        match self {
            RecordError::Version { .. }
            | RecordError::ReservedSlot { .. }
            | RecordError::Overlap(..)
            | RecordError::EndBeforeStart(_)
            | RecordError::OutOfOrder { .. }
            | RecordError::BadRegionType(_) => KpError::ArgumentInvalid,
            RecordError::ZeroSize(_) | RecordError::FixmapSize { .. } => KpError::ArgumentSize,
            RecordError::StartMisaligned(_)
            | RecordError::SizeMisaligned(_)
            | RecordError::EndMisaligned(_)
            | RecordError::RecordCrossesPage { .. } => KpError::ArgumentAlignment,
            RecordError::Wraps(_)
            | RecordError::OutsideRam(_)
            | RecordError::FixmapNotKernelVa { .. }
            | RecordError::RecordOutsideRam { .. } => KpError::AddrInvalid,
            RecordError::Duplicate(_) => KpError::ObjectConfigured,
        }
    }
}

impl From<RecordError> for KpError {
    fn from(e: RecordError) -> Self {
        e.kp_error()
    }
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RecordError::Version { found } => write!(
                f,
                "record version {found:#x}, expected {KP_MAGIC_VERSION:#x}"
            ),
            RecordError::ReservedSlot { slot } => write!(f, "reserved slot {slot} is not zero"),
            RecordError::ZeroSize(ty) => write!(f, "{ty} has size 0"),
            RecordError::StartMisaligned(ty) => write!(f, "{ty} start is misaligned"),
            RecordError::SizeMisaligned(ty) => write!(f, "{ty} size is not a multiple of 4 KiB"),
            RecordError::EndMisaligned(ty) => write!(f, "{ty} end is not page aligned"),
            RecordError::Wraps(ty) => write!(f, "{ty} wraps around the address space"),
            RecordError::OutsideRam(ty) => write!(f, "{ty} is outside guest RAM"),
            RecordError::FixmapSize { size } => {
                write!(f, "fixmap slot size {size:#x} is not one page")
            }
            RecordError::FixmapNotKernelVa { va } => {
                write!(f, "fixmap slot {va:#x} is not a kernel address")
            }
            RecordError::Overlap(a, b) => write!(f, "{a} overlaps {b}"),
            RecordError::EndBeforeStart(ty) => write!(f, "{ty} ends before it starts"),
            RecordError::OutOfOrder { earlier, later } => {
                write!(f, "{later} starts before {earlier} ends")
            }
            RecordError::RecordCrossesPage { ipa } => {
                write!(f, "record at {ipa:#x} crosses a page boundary")
            }
            RecordError::RecordOutsideRam { ipa } => {
                write!(f, "record at {ipa:#x} is outside guest RAM")
            }
            RecordError::BadRegionType(raw) => write!(f, "region type {raw} is undefined"),
            RecordError::Duplicate(ty) => write!(f, "{ty} was already reported"),
        }
    }
}

/// Checks one region on its own, as ASSET_INFO does for each call and
/// the record validation does for each slot. `ram = None` skips the RAM
/// check.
///
/// For an IPA region, in order: size not 0; start and size multiples of
/// 4 KiB; no wrap; inside `ram`. For the fixmap slot: size not 0; size
/// one page of 4, 16 or 64 KiB; start aligned to it; no wrap; a kernel
/// virtual address.
///
/// # Errors
/// - [`RecordError::ZeroSize`]: size 0.
/// - [`RecordError::StartMisaligned`] / [`RecordError::SizeMisaligned`]:
///   misaligned start or size.
/// - [`RecordError::Wraps`]: `start + size` wraps.
/// - [`RecordError::OutsideRam`]: an IPA region not inside `ram`.
/// - [`RecordError::FixmapSize`]: the fixmap slot is not one page.
/// - [`RecordError::FixmapNotKernelVa`]: the fixmap slot is below
///   [`KERNEL_VA_MIN`].
pub fn check_region(
    ty: RegionType,
    region: Region,
    ram: Option<(u64, u64)>,
) -> Result<(), RecordError> {
    if ty.is_ipa() {
        check_ipa_region(ty, region, ram).map(|_| ())
    } else {
        check_fixmap(region).map(|_| ())
    }
}

fn check_ipa_region(
    ty: RegionType,
    region: Region,
    ram: Option<(u64, u64)>,
) -> Result<IpaSpan, RecordError> {
    let (start, size) = (region.start(), region.size());
    if size == 0 {
        return Err(RecordError::ZeroSize(ty));
    }
    if !is_page_aligned(start) {
        return Err(RecordError::StartMisaligned(ty));
    }
    if !is_page_aligned(size) {
        return Err(RecordError::SizeMisaligned(ty));
    }
    let span = IpaSpan::from_size(start, size).ok_or(RecordError::Wraps(ty))?;
    if let Some((ram_start, ram_end)) = ram {
        if span.start() < ram_start || span.end() > ram_end {
            return Err(RecordError::OutsideRam(ty));
        }
    }
    Ok(span)
}

fn check_fixmap(region: Region) -> Result<FixmapSlot, RecordError> {
    const TY: RegionType = RegionType::FixmapTextPoke0;
    let (va, size) = (region.start(), region.size());
    if size == 0 {
        return Err(RecordError::ZeroSize(TY));
    }
    if !FIXMAP_SLOT_SIZES.contains(&size) {
        return Err(RecordError::FixmapSize { size });
    }
    // `size` is a non-zero power of two here.
    if va & (size - 1) != 0 {
        return Err(RecordError::StartMisaligned(TY));
    }
    if va.checked_add(size).is_none() {
        return Err(RecordError::Wraps(TY));
    }
    if va < KERNEL_VA_MIN {
        return Err(RecordError::FixmapNotKernelVa { va });
    }
    Ok(FixmapSlot { va, size })
}

/// The hypervisor's side of the region-by-region path: accumulates
/// ASSET_INFO calls into a record, checking each region as it arrives
/// (the same rules as [`KernelAssetInfo::validate`]), and yields the
/// [`Layout`] once all five are in.
///
/// A refused call changes nothing, so the guest may correct and retry
/// it.
///
/// ```
/// use guest_kp::record::Collector;
///
/// let ram = (0x4000_0000, 0x8000_0000);
/// let mut c = Collector::new();
/// assert_eq!(c.add(0, 0x4020_0000, 0x10_0000, ram), Ok(None)); // TEXT
/// assert!(c.add(0, 0x4020_0000, 0x10_0000, ram).is_err()); // again
/// assert!(c.add(9, 0, 0, ram).is_err()); // no such region
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Collector {
    record: KernelAssetInfo,
    reported: u8,
}

impl Collector {
    /// Nothing reported yet.
    pub const fn new() -> Self {
        Collector {
            record: KernelAssetInfo::new(),
            reported: 0,
        }
    }

    /// Whether region `ty` has been accepted.
    pub const fn is_reported(&self, ty: RegionType) -> bool {
        self.reported & (1 << ty.index()) != 0
    }

    /// Whether nothing has been accepted yet.
    pub const fn is_empty(&self) -> bool {
        self.reported == 0
    }

    /// The record as accumulated so far (unreported slots are zero).
    pub const fn record(&self) -> &KernelAssetInfo {
        &self.record
    }

    /// One ASSET_INFO call: region type `raw_type` (x1), `start` (x2),
    /// `size` (x3), with IPA regions required inside `ram`. Returns the
    /// layout when this call completes the set, `None` before.
    ///
    /// # Errors
    /// - [`RecordError::BadRegionType`]: `raw_type` above 4.
    /// - [`RecordError::Duplicate`]: the region was already accepted.
    /// - any error of [`check_region`].
    /// - [`RecordError::Overlap`]: the region overlaps one already
    ///   accepted.
    pub fn add(
        &mut self,
        raw_type: u64,
        start: u64,
        size: u64,
        ram: (u64, u64),
    ) -> Result<Option<Layout>, RecordError> {
        // Bounds-checked without speculation (through `region_index`).
        let ty =
            RegionType::try_from(raw_type).map_err(|_| RecordError::BadRegionType(raw_type))?;
        if self.is_reported(ty) {
            return Err(RecordError::Duplicate(ty));
        }
        let region = Region::new(start, size);
        check_region(ty, region, Some(ram))?;
        if let Some(new) = IpaSpan::from_size(start, size).filter(|_| ty.is_ipa()) {
            for other in RegionType::IPA {
                if other == ty || !self.is_reported(other) {
                    continue;
                }
                let r = self.record.region(other);
                if matches!(IpaSpan::from_size(r.start(), r.size()), Some(s) if s.overlaps(&new)) {
                    let (a, b) = if other < ty { (other, ty) } else { (ty, other) };
                    return Err(RecordError::Overlap(a, b));
                }
            }
        }
        let mut record = self.record;
        record.set_region(ty, region);
        let reported = self.reported | (1 << ty.index());
        if reported.count_ones() as usize == RegionType::COUNT {
            // Every rule was checked piecewise; this cannot fail, and if
            // it did, nothing is committed.
            let layout = record.validate(ram)?;
            self.record = record;
            self.reported = reported;
            Ok(Some(layout))
        } else {
            self.record = record;
            self.reported = reported;
            Ok(None)
        }
    }
}

#[cfg(test)]
// An explicit path: the kernel's rustfmtcheck formats each file as if
// it were a crate root.
#[path = "record/tests.rs"]
mod tests;
