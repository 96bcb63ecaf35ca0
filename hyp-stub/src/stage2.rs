// SPDX-License-Identifier: GPL-2.0 OR MIT
//! Stage-2 translation tables for the guest: 4 KiB granule, 39-bit IPA
//! space, walks starting at level 1. RAM is mapped with 2 MiB blocks;
//! blocks are split into pages only where a range needs page-granular
//! permissions (kernel protect). Table memory and TLB maintenance are
//! supplied by the caller through [`TableMemory`] and [`Tlb`], so the
//! same code runs on the host under `cargo test`.

use crate::addr::{Ipa, IpaRange, PhysAddr};

/// Translation granule.
pub const PAGE_SIZE: u64 = 4096;
/// Size mapped by one level-2 block.
pub const BLOCK_SIZE: u64 = 2 << 20;
/// Number of IPA bits (VTCR_EL2.T0SZ = 64 - 39).
pub const IPA_BITS: u32 = 39;
/// Entries per table.
pub const ENTRIES: usize = 512;

const VALID: u64 = 1 << 0;
const TABLE_OR_PAGE: u64 = 1 << 1;
const ADDR_MASK: u64 = 0x0000_ffff_ffff_f000;
const MEMATTR_NORMAL_WB: u64 = 0b1111 << 2;
const MEMATTR_DEVICE_NGNRE: u64 = 0b0001 << 2;
const S2AP_READ: u64 = 1 << 6;
const S2AP_WRITE: u64 = 1 << 7;
const SH_INNER: u64 = 0b11 << 8;
const AF: u64 = 1 << 10;
const XN_SHIFT: u32 = 53;
const ATTR_MASK: u64 = !ADDR_MASK & !(VALID | TABLE_OR_PAGE);

/// Memory type of a stage-2 mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemType {
    /// Normal write-back cacheable memory (guest RAM).
    Normal,
    /// Device nGnRE memory (pass-through MMIO).
    Device,
}

bitflags::bitflags! {
    /// Access permissions of a stage-2 mapping. Execute permission is
    /// split by exception level (FEAT_XNX): the guest kernel (EL1) and
    /// guest user space (EL0) are allowed separately.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Perms: u8 {
        /// Reads allowed.
        const READ = 1 << 0;
        /// Writes allowed.
        const WRITE = 1 << 1;
        /// Instruction fetches at EL1 allowed.
        const EXEC_EL1 = 1 << 2;
        /// Instruction fetches at EL0 allowed.
        const EXEC_EL0 = 1 << 3;
    }
}

impl Perms {
    /// Read, write and execute at both levels.
    pub const RWX: Self = Self::all();
    /// Read and execute at both levels.
    pub const RX: Self = Self::READ.union(Self::EXEC_EL1).union(Self::EXEC_EL0);
    /// Read and execute at EL1 only (kernel text: user space never runs
    /// it).
    pub const R_EL1X: Self = Self::READ.union(Self::EXEC_EL1);
    /// Read-only, execute at EL0 only (rodata that holds the vDSO).
    pub const R_EL0X: Self = Self::READ.union(Self::EXEC_EL0);
    /// Read and write, never execute.
    pub const RW: Self = Self::READ.union(Self::WRITE);

    /// The descriptor's S2AP and XN bits.
    fn descriptor_bits(self) -> u64 {
        let mut bits = 0;
        if self.contains(Self::READ) {
            bits |= S2AP_READ;
        }
        if self.contains(Self::WRITE) {
            bits |= S2AP_WRITE;
        }
        // XN[1:0]: 00 both, 01 EL0 only, 10 neither, 11 EL1 only.
        let xn = match (self.contains(Self::EXEC_EL1), self.contains(Self::EXEC_EL0)) {
            (true, true) => 0b00,
            (false, true) => 0b01,
            (false, false) => 0b10,
            (true, false) => 0b11,
        };
        bits | (xn << XN_SHIFT)
    }

    /// Decodes a descriptor's S2AP and XN bits.
    fn from_descriptor(bits: u64) -> Self {
        let xn = (bits >> XN_SHIFT) & 3;
        let mut p = Self::empty();
        p.set(Self::READ, bits & S2AP_READ != 0);
        p.set(Self::WRITE, bits & S2AP_WRITE != 0);
        p.set(Self::EXEC_EL1, xn == 0b00 || xn == 0b11);
        p.set(Self::EXEC_EL0, xn == 0b00 || xn == 0b01);
        p
    }
}

/// Attributes of one mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attrs {
    /// Memory type.
    pub mem: MemType,
    /// Permissions.
    pub perms: Perms,
}

impl Attrs {
    fn bits(self) -> u64 {
        let mem = match self.mem {
            MemType::Normal => MEMATTR_NORMAL_WB | SH_INNER,
            MemType::Device => MEMATTR_DEVICE_NGNRE,
        };
        mem | AF | self.perms.descriptor_bits()
    }

    fn from_bits(bits: u64) -> Self {
        let mem = if bits & (0b1111 << 2) == MEMATTR_NORMAL_WB {
            MemType::Normal
        } else {
            MemType::Device
        };
        Self {
            mem,
            perms: Perms::from_descriptor(bits),
        }
    }
}

/// Why a stage-2 operation failed. Tables are left consistent: a failed
/// operation may have completed part of its range, never half an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage2Error {
    /// Address or size not page aligned.
    Misaligned,
    /// The range lies beyond the IPA space.
    OutOfRange,
    /// No table memory left.
    OutOfTables,
    /// Part of the range is not mapped.
    NotMapped,
    /// A table entry points outside the table memory (corrupt tables:
    /// nothing is written through it).
    BadTable,
}

/// Where tables live. Tables are addressed by host physical address; the
/// hypervisor identity-maps its memory, the host tests use a fake.
pub trait TableMemory {
    /// Allocates a zeroed table, returning its physical address.
    fn alloc(&mut self) -> Option<PhysAddr>;
    /// The entries of the table at `table`; `None` if `table` is not one
    /// [`Self::alloc`] returned.
    fn table(&mut self, table: PhysAddr) -> Option<&mut [u64; ENTRIES]>;
    /// How many tables are allocated, if the memory keeps count (for
    /// the stats block: table memory is what permissions cost).
    fn in_use(&self) -> Option<usize> {
        None
    }
}

/// TLB maintenance for the guest's stage-2 translations.
pub trait Tlb {
    /// Invalidates cached translations of `ipa` (and the combined stage-1
    /// entries that used it), waiting for completion.
    fn invalidate_ipa(&mut self, ipa: Ipa);
    /// Invalidates every cached translation of the guest, waiting for
    /// completion.
    fn invalidate_all(&mut self);
}

/// The guest's stage-2 page tables.
pub struct Stage2<M: TableMemory> {
    mem: M,
    root: PhysAddr,
}

const fn index(ipa: u64, level: u32) -> usize {
    ((ipa >> (12 + 9 * (3 - level))) & 0x1ff) as usize
}

impl<M: TableMemory> Stage2<M> {
    /// Creates empty tables.
    ///
    /// # Errors
    /// [`Stage2Error::OutOfTables`] if no table memory is available.
    pub fn new(mut mem: M) -> Result<Self, Stage2Error> {
        let root = mem.alloc().ok_or(Stage2Error::OutOfTables)?;
        Ok(Self { mem, root })
    }

    /// The table memory, to see how much of it is in use.
    pub fn table_memory(&self) -> &M {
        &self.mem
    }

    /// Physical address of the root (level 1) table, for `VTTBR_EL2`.
    pub fn root(&self) -> PhysAddr {
        self.root
    }

    /// The `VTCR_EL2` value for these tables, given the CPU's
    /// `ID_AA64MMFR0_EL1.PARange` field.
    pub fn vtcr(pa_range: u64) -> u64 {
        let t0sz = 64 - u64::from(IPA_BITS);
        let sl0 = 1; // start at level 1
        let inner_wb = 1 << 8;
        let outer_wb = 1 << 10;
        let inner_shareable = 3 << 12;
        let ps = pa_range.min(5) << 16;
        (1 << 31) | ps | inner_shareable | outer_wb | inner_wb | (sl0 << 6) | t0sz
    }

    fn check(range: &IpaRange) -> Result<(), Stage2Error> {
        if !range.start().is_aligned(PAGE_SIZE) || !range.size().is_multiple_of(PAGE_SIZE) {
            return Err(Stage2Error::Misaligned);
        }
        if range.end().get() > 1 << IPA_BITS {
            return Err(Stage2Error::OutOfRange);
        }
        Ok(())
    }

    /// The table at `table`, which an entry (or the root) names.
    fn tab(&mut self, table: PhysAddr) -> Result<&mut [u64; ENTRIES], Stage2Error> {
        self.mem.table(table).ok_or(Stage2Error::BadTable)
    }

    /// The level-2 table covering `ipa`, created if `create`.
    fn level2(&mut self, ipa: u64, create: bool) -> Result<Option<PhysAddr>, Stage2Error> {
        let root = self.root;
        let entry = self.tab(root)?[index(ipa, 1)];
        if entry & VALID != 0 {
            return Ok(Some(PhysAddr(entry & ADDR_MASK)));
        }
        if !create {
            return Ok(None);
        }
        let table = self.mem.alloc().ok_or(Stage2Error::OutOfTables)?;
        self.tab(root)?[index(ipa, 1)] = table.get() | VALID | TABLE_OR_PAGE;
        Ok(Some(table))
    }

    /// The level-3 table covering `ipa`, splitting a block or creating an
    /// empty table as needed. `None` if unmapped and not `create`.
    fn level3(
        &mut self,
        ipa: u64,
        create: bool,
        tlb: &mut dyn Tlb,
    ) -> Result<Option<PhysAddr>, Stage2Error> {
        let Some(l2) = self.level2(ipa, create)? else {
            return Ok(None);
        };
        let entry = self.tab(l2)?[index(ipa, 2)];
        if entry & VALID != 0 && entry & TABLE_OR_PAGE != 0 {
            return Ok(Some(PhysAddr(entry & ADDR_MASK)));
        }
        if entry & VALID == 0 && !create {
            return Ok(None);
        }
        let l3 = self.mem.alloc().ok_or(Stage2Error::OutOfTables)?;
        if entry & VALID != 0 {
            // Split the block: same output and attributes, page by page.
            let base = entry & ADDR_MASK;
            let attrs = entry & ATTR_MASK;
            for (i, e) in self.tab(l3)?.iter_mut().enumerate() {
                *e = (base + i as u64 * PAGE_SIZE) | attrs | VALID | TABLE_OR_PAGE;
            }
            // Break before make: the block must be invalid and gone from
            // the TLBs before the table replaces it.
            self.tab(l2)?[index(ipa, 2)] = 0;
            tlb.invalidate_ipa(Ipa(ipa & !(BLOCK_SIZE - 1)));
        }
        self.tab(l2)?[index(ipa, 2)] = l3.get() | VALID | TABLE_OR_PAGE;
        Ok(Some(l3))
    }

    /// Maps `range` to host memory starting at `pa`. Existing mappings in
    /// the range are replaced.
    ///
    /// # Errors
    /// [`Stage2Error::Misaligned`], [`Stage2Error::OutOfRange`] or
    /// [`Stage2Error::OutOfTables`].
    pub fn map(
        &mut self,
        range: IpaRange,
        pa: PhysAddr,
        attrs: Attrs,
        tlb: &mut dyn Tlb,
    ) -> Result<(), Stage2Error> {
        Self::check(&range)?;
        if !pa.is_aligned(PAGE_SIZE) {
            return Err(Stage2Error::Misaligned);
        }
        let bits = attrs.bits();
        let mut ipa = range.start().get();
        let end = range.end().get();
        let offset = pa.get().wrapping_sub(ipa);
        while ipa < end {
            let out = ipa.wrapping_add(offset);
            let block_fits = ipa.is_multiple_of(BLOCK_SIZE)
                && out.is_multiple_of(BLOCK_SIZE)
                && end - ipa >= BLOCK_SIZE;
            if block_fits {
                let l2 = self.level2(ipa, true)?.ok_or(Stage2Error::OutOfTables)?;
                let old = self.tab(l2)?[index(ipa, 2)];
                self.tab(l2)?[index(ipa, 2)] = 0;
                if old & VALID != 0 {
                    tlb.invalidate_ipa(Ipa(ipa));
                }
                self.tab(l2)?[index(ipa, 2)] = out | bits | VALID;
                ipa += BLOCK_SIZE;
            } else {
                let l3 = self
                    .level3(ipa, true, tlb)?
                    .ok_or(Stage2Error::OutOfTables)?;
                let old = self.tab(l3)?[index(ipa, 3)];
                self.tab(l3)?[index(ipa, 3)] = 0;
                if old & VALID != 0 {
                    tlb.invalidate_ipa(Ipa(ipa));
                }
                self.tab(l3)?[index(ipa, 3)] = out | bits | VALID | TABLE_OR_PAGE;
                ipa += PAGE_SIZE;
            }
        }
        Ok(())
    }

    /// Applies `f` to the leaf entry of every page in `range`, splitting
    /// blocks that are only partly covered (break-before-make for each
    /// split). The leaf changes themselves are permission or validity
    /// changes, which need no break-before-make: they are all written,
    /// then the guest's translations are invalidated once. Other vCPUs
    /// of the guest may use the old permissions until that invalidation,
    /// which completes before this returns; one that touches a block
    /// while it is split takes a translation fault, which the core
    /// retries once the tables are whole again.
    fn update(
        &mut self,
        range: IpaRange,
        tlb: &mut dyn Tlb,
        f: impl Fn(u64) -> u64,
    ) -> Result<(), Stage2Error> {
        Self::check(&range)?;
        let mut ipa = range.start().get();
        let end = range.end().get();
        let mut changed = false;
        let result = loop {
            if ipa >= end {
                break Ok(());
            }
            let l2 = match self.level2(ipa, false) {
                Ok(Some(l2)) => l2,
                Ok(None) => break Err(Stage2Error::NotMapped),
                Err(e) => break Err(e),
            };
            let entry = match self.tab(l2) {
                Ok(t) => t[index(ipa, 2)],
                Err(e) => break Err(e),
            };
            if entry & VALID == 0 {
                break Err(Stage2Error::NotMapped);
            }
            let whole_block = entry & TABLE_OR_PAGE == 0
                && ipa.is_multiple_of(BLOCK_SIZE)
                && end - ipa >= BLOCK_SIZE;
            if whole_block {
                // `l2` was just read through.
                if let Ok(t) = self.tab(l2) {
                    t[index(ipa, 2)] = f(entry);
                }
                changed = true;
                ipa += BLOCK_SIZE;
                continue;
            }
            let l3 = match self.level3(ipa, false, tlb) {
                Ok(Some(l3)) => l3,
                Ok(None) => break Err(Stage2Error::NotMapped),
                Err(e) => break Err(e),
            };
            let t = match self.tab(l3) {
                Ok(t) => t,
                Err(e) => break Err(e),
            };
            let page = t[index(ipa, 3)];
            if page & VALID == 0 {
                break Err(Stage2Error::NotMapped);
            }
            t[index(ipa, 3)] = f(page);
            changed = true;
            ipa += PAGE_SIZE;
        };
        if changed {
            tlb.invalidate_all();
        }
        result
    }

    /// Changes the permissions of the mapped pages in `range`.
    ///
    /// # Errors
    /// [`Stage2Error::NotMapped`] if part of the range is unmapped, or the
    /// errors of [`Self::map`].
    pub fn set_perms(
        &mut self,
        range: IpaRange,
        perms: Perms,
        tlb: &mut dyn Tlb,
    ) -> Result<(), Stage2Error> {
        let clear = S2AP_READ | S2AP_WRITE | (3 << XN_SHIFT);
        let set = perms.descriptor_bits();
        self.update(range, tlb, |e| (e & !clear) | set)
    }

    /// Removes the mappings in `range`.
    ///
    /// # Errors
    /// [`Stage2Error::NotMapped`] if part of the range is unmapped, or the
    /// errors of [`Self::map`].
    pub fn unmap(&mut self, range: IpaRange, tlb: &mut dyn Tlb) -> Result<(), Stage2Error> {
        self.update(range, tlb, |_| 0)
    }

    /// Calls `f` with every valid leaf entry (a 2 MiB block or a 4 KiB
    /// page): the IPA range it maps, where it maps it and with which
    /// attributes, in IPA order. How tests and the fuzz targets check
    /// what stage 2 lets the guest reach without translating every page.
    ///
    /// # Errors
    /// [`Stage2Error::BadTable`] if an entry points outside the table
    /// pool (the leaves before it have been visited).
    pub fn for_each_leaf(
        &mut self,
        mut f: impl FnMut(IpaRange, PhysAddr, Attrs),
    ) -> Result<(), Stage2Error> {
        // Each table is copied out before its entries are visited, so `f`
        // runs without the table memory borrowed.
        let root = *self.mem.table(self.root).ok_or(Stage2Error::BadTable)?;
        for (i1, &l1) in root.iter().enumerate() {
            if l1 & VALID == 0 {
                continue;
            }
            let level2 = *self
                .mem
                .table(PhysAddr(l1 & ADDR_MASK))
                .ok_or(Stage2Error::BadTable)?;
            for (i2, &l2) in level2.iter().enumerate() {
                if l2 & VALID == 0 {
                    continue;
                }
                let base = ((i1 as u64) << 30) | ((i2 as u64) << 21);
                if l2 & TABLE_OR_PAGE == 0 {
                    if let Some(r) = IpaRange::new(Ipa(base), BLOCK_SIZE) {
                        f(r, PhysAddr(l2 & ADDR_MASK), Attrs::from_bits(l2));
                    }
                    continue;
                }
                let level3 = *self
                    .mem
                    .table(PhysAddr(l2 & ADDR_MASK))
                    .ok_or(Stage2Error::BadTable)?;
                for (i3, &l3) in level3.iter().enumerate() {
                    if l3 & VALID == 0 {
                        continue;
                    }
                    let ipa = base | ((i3 as u64) << 12);
                    if let Some(r) = IpaRange::new(Ipa(ipa), PAGE_SIZE) {
                        f(r, PhysAddr(l3 & ADDR_MASK), Attrs::from_bits(l3));
                    }
                }
            }
        }
        Ok(())
    }

    /// Looks up the translation of `ipa`.
    pub fn translate(&mut self, ipa: Ipa) -> Option<(PhysAddr, Attrs)> {
        let ipa = ipa.get();
        if ipa >= 1 << IPA_BITS {
            return None;
        }
        let l1 = self.mem.table(self.root)?[index(ipa, 1)];
        if l1 & VALID == 0 {
            return None;
        }
        let l2 = self.mem.table(PhysAddr(l1 & ADDR_MASK))?[index(ipa, 2)];
        if l2 & VALID == 0 {
            return None;
        }
        if l2 & TABLE_OR_PAGE == 0 {
            let pa = (l2 & ADDR_MASK & !(BLOCK_SIZE - 1)) | (ipa & (BLOCK_SIZE - 1));
            return Some((PhysAddr(pa), Attrs::from_bits(l2)));
        }
        let l3 = self.mem.table(PhysAddr(l2 & ADDR_MASK))?[index(ipa, 3)];
        if l3 & VALID == 0 {
            return None;
        }
        Some((
            PhysAddr((l3 & ADDR_MASK) | (ipa & (PAGE_SIZE - 1))),
            Attrs::from_bits(l3),
        ))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::vec::Vec;

    /// Table memory backed by the host heap, at made-up physical addresses.
    pub struct FakeTables {
        pub tables: Vec<Box<[u64; ENTRIES]>>,
        pub limit: usize,
    }

    const FAKE_BASE: u64 = 0x10_0000_0000;

    impl TableMemory for FakeTables {
        fn alloc(&mut self) -> Option<PhysAddr> {
            if self.tables.len() >= self.limit {
                return None;
            }
            self.tables.push(Box::new([0; ENTRIES]));
            Some(PhysAddr(
                FAKE_BASE + (self.tables.len() as u64 - 1) * PAGE_SIZE,
            ))
        }
        fn table(&mut self, table: PhysAddr) -> Option<&mut [u64; ENTRIES]> {
            let offset = table.get().checked_sub(FAKE_BASE)?;
            if !offset.is_multiple_of(PAGE_SIZE) {
                return None;
            }
            self.tables
                .get_mut(usize::try_from(offset / PAGE_SIZE).ok()?)
                .map(|t| &mut **t)
        }
        fn in_use(&self) -> Option<usize> {
            Some(self.tables.len())
        }
    }

    #[derive(Default)]
    pub struct CountingTlb(pub usize);
    impl Tlb for CountingTlb {
        fn invalidate_ipa(&mut self, _: Ipa) {
            self.0 += 1;
        }
        fn invalidate_all(&mut self) {
            self.0 += 1;
        }
    }

    fn s2(limit: usize) -> Stage2<FakeTables> {
        Stage2::new(FakeTables {
            tables: Vec::new(),
            limit,
        })
        .unwrap()
    }

    const RAM: Attrs = Attrs {
        mem: MemType::Normal,
        perms: Perms::RWX,
    };

    #[test]
    fn every_permission_set_round_trips_through_a_descriptor() {
        for bits in 0..=Perms::all().bits() {
            let p = Perms::from_bits(bits).unwrap();
            assert_eq!(Perms::from_descriptor(p.descriptor_bits()), p, "{p:?}");
        }
        assert_eq!(
            Perms::RW.descriptor_bits() >> XN_SHIFT,
            0b10,
            "never execute"
        );
        assert_eq!(Perms::R_EL1X.descriptor_bits() >> XN_SHIFT, 0b11);
    }

    #[test]
    fn a_table_address_outside_the_table_memory_is_an_error() {
        let mut s = s2(8);
        let ram = IpaRange::new(Ipa(0x4000_0000), 0x40_0000).unwrap();
        let mut tlb = CountingTlb::default();
        s.map(ram, PhysAddr(0x4000_0000), RAM, &mut tlb).unwrap();
        let tables_before = s.mem.tables.clone();
        // Corrupt the root entry: its level-2 table now lies beyond the
        // tables allocated.
        let root = s.root;
        let slot = &mut s.mem.table(root).unwrap()[index(0x4000_0000, 1)];
        let good = *slot;
        *slot = (good & !ADDR_MASK) | (FAKE_BASE + 100 * PAGE_SIZE);
        let page = IpaRange::new(Ipa(0x4000_0000), PAGE_SIZE).unwrap();
        assert_eq!(
            s.set_perms(page, Perms::RX, &mut tlb),
            Err(Stage2Error::BadTable)
        );
        assert_eq!(
            s.map(page, PhysAddr(0x4000_0000), RAM, &mut tlb),
            Err(Stage2Error::BadTable)
        );
        assert_eq!(s.translate(Ipa(0x4000_0000)), None);
        // Nothing else was written in its place.
        s.mem.table(root).unwrap()[index(0x4000_0000, 1)] = good;
        assert_eq!(s.mem.tables, tables_before);
        // Misaligned, or below the table memory: refused the same way.
        assert!(s.mem.table(PhysAddr(FAKE_BASE + 8)).is_none());
        assert!(s.mem.table(PhysAddr(FAKE_BASE - PAGE_SIZE)).is_none());
    }

    #[test]
    fn maps_ram_with_blocks_and_translates() {
        let mut s = s2(8);
        let mut tlb = CountingTlb::default();
        let r = IpaRange::new(Ipa(0x4000_0000), 0x3e00_0000).unwrap();
        s.map(r, PhysAddr(0x4000_0000), RAM, &mut tlb).unwrap();
        assert_eq!(s.mem.tables.len(), 2, "root + one level-2 table");
        assert_eq!(
            s.translate(Ipa(0x4123_4567)),
            Some((PhysAddr(0x4123_4567), RAM))
        );
        assert_eq!(s.translate(Ipa(0x7e00_0000)), None);
        assert_eq!(s.translate(Ipa(0x3fff_ffff)), None);
    }

    #[test]
    fn splits_blocks_for_page_permissions() {
        let mut s = s2(8);
        let mut tlb = CountingTlb::default();
        let r = IpaRange::new(Ipa(0x4000_0000), 0x40_0000).unwrap();
        s.map(r, PhysAddr(0x4000_0000), RAM, &mut tlb).unwrap();
        let text = IpaRange::new(Ipa(0x4020_1000), 0x3000).unwrap();
        s.set_perms(text, Perms::RX, &mut tlb).unwrap();
        let (pa, a) = s.translate(Ipa(0x4020_2abc)).unwrap();
        assert_eq!(pa, PhysAddr(0x4020_2abc));
        assert_eq!(a.perms, Perms::RX);
        assert_eq!(s.translate(Ipa(0x4020_0000)).unwrap().1.perms, Perms::RWX);
        assert_eq!(s.translate(Ipa(0x4020_4000)).unwrap().1.perms, Perms::RWX);
        assert_eq!(
            s.translate(Ipa(0x4000_0000)).unwrap().1.perms,
            Perms::RWX,
            "other block untouched"
        );
        assert_eq!(
            tlb.0, 2,
            "one invalidation for the block split, one for the page changes"
        );
        for p in [Perms::R_EL0X, Perms::RW, Perms::RWX] {
            s.set_perms(text, p, &mut tlb).unwrap();
            assert_eq!(s.translate(Ipa(0x4020_1000)).unwrap().1.perms, p);
        }
    }

    #[test]
    fn rejects_bad_ranges_and_reports_exhaustion() {
        let mut s = s2(2);
        let mut tlb = CountingTlb::default();
        let r = IpaRange::new(Ipa(0x4000_0800), 0x1000).unwrap();
        assert_eq!(
            s.map(r, PhysAddr(0x4000_0000), RAM, &mut tlb),
            Err(Stage2Error::Misaligned)
        );
        let r = IpaRange::new(Ipa(1 << 39), 0x1000).unwrap();
        assert_eq!(
            s.map(r, PhysAddr(0), RAM, &mut tlb),
            Err(Stage2Error::OutOfRange)
        );
        let r = IpaRange::new(Ipa(0x4000_0000), 0x1000).unwrap();
        assert_eq!(
            s.set_perms(r, Perms::RX, &mut tlb),
            Err(Stage2Error::NotMapped)
        );
        // root + level 2 fit, the level-3 table does not.
        assert_eq!(
            s.map(r, PhysAddr(0x4000_0000), RAM, &mut tlb),
            Err(Stage2Error::OutOfTables)
        );
    }

    #[test]
    fn unmap_removes_pages() {
        let mut s = s2(8);
        let mut tlb = CountingTlb::default();
        let r = IpaRange::new(Ipa(0x4000_0000), BLOCK_SIZE).unwrap();
        s.map(r, PhysAddr(0x4000_0000), RAM, &mut tlb).unwrap();
        let page = IpaRange::new(Ipa(0x4000_1000), PAGE_SIZE).unwrap();
        s.unmap(page, &mut tlb).unwrap();
        assert_eq!(s.translate(Ipa(0x4000_1000)), None);
        assert!(s.translate(Ipa(0x4000_2000)).is_some());
        assert_eq!(s.unmap(page, &mut tlb), Err(Stage2Error::NotMapped));
    }

    #[test]
    fn leaf_walk_reports_blocks_and_split_pages() {
        let mut s = s2(8);
        let mut tlb = CountingTlb::default();
        let r = IpaRange::new(Ipa(0x4000_0000), 2 * BLOCK_SIZE).unwrap();
        s.map(r, PhysAddr(0x4000_0000), RAM, &mut tlb).unwrap();
        let page = IpaRange::new(Ipa(0x4020_3000), PAGE_SIZE).unwrap();
        s.set_perms(page, Perms::RX, &mut tlb).unwrap();
        let mut leaves = Vec::new();
        s.for_each_leaf(|r, pa, a| leaves.push((r.start().get(), r.size(), pa.get(), a.perms)))
            .unwrap();
        assert_eq!(leaves.len(), 1 + ENTRIES, "one block, one split block");
        assert_eq!(
            leaves[0],
            (0x4000_0000, BLOCK_SIZE, 0x4000_0000, Perms::RWX)
        );
        assert_eq!(leaves[1], (0x4020_0000, PAGE_SIZE, 0x4020_0000, Perms::RWX));
        assert_eq!(leaves[4], (0x4020_3000, PAGE_SIZE, 0x4020_3000, Perms::RX));
        let total: u64 = leaves.iter().map(|l| l.1).sum();
        assert_eq!(total, 2 * BLOCK_SIZE);
    }

    #[test]
    fn vtcr_encodes_39_bit_ipa_from_level_1() {
        let v = Stage2::<FakeTables>::vtcr(5);
        assert_eq!(v & 0x3f, 25);
        assert_eq!((v >> 6) & 3, 1);
        assert_eq!((v >> 16) & 7, 5);
        assert_eq!(v >> 31, 1);
    }
}
