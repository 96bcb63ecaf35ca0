// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The hypervisor's own address space (EL2 stage 1: an identity map of the
//! first TiB with 1 GiB blocks: the first GiB's devices, RAM, and the
//! device windows of the machine's device tree, such as QEMU's high PCIe
//! ECAM at 256 GiB and its 64-bit PCI window at 512 GiB) and the memory
//! and TLB maintenance behind the guest's stage-2 tables.

use core::ptr::addr_of_mut;

use hyp_stub::addr::{Ipa, IpaRange, PhysAddr};
use hyp_stub::stage2::{TableMemory, Tlb, ENTRIES, PAGE_SIZE};

use super::sysreg::{isb, read_sysreg, write_sysreg};

#[repr(C, align(4096))]
struct Table([u64; ENTRIES]);

/// Level 0: two tables of 512 GiB each.
static mut EL2_ROOT: Table = Table([0; ENTRIES]);
/// Level 1, 1 GiB blocks: the first 512 GiB and the next.
static mut EL2_LOW: Table = Table([0; ENTRIES]);
static mut EL2_HIGH: Table = Table([0; ENTRIES]);

/// The identity map's reach: 40 bits of VA, walks start at level 0.
const VA_BITS: u64 = 40;
const GIB: u64 = 1 << 30;

const BLOCK: u64 = 0b01;
const TABLE: u64 = 0b11;
const AF: u64 = 1 << 10;
const SH_INNER: u64 = 3 << 8;
const XN: u64 = 1 << 54;
const ATTR_DEVICE: u64 = 0 << 2;
const ATTR_NORMAL: u64 = 1 << 2;
const MAIR: u64 = 0x04 | (0xff << 8); // Device-nGnRE, Normal WB RA WA
const SCTLR_EL2_RES1: u64 = 0x30c5_0830;
const SCTLR_M: u64 = 1 << 0;
const SCTLR_C: u64 = 1 << 2;
const SCTLR_SA: u64 = 1 << 3;
const SCTLR_I: u64 = 1 << 12;

/// Builds the identity map and turns on the MMU and caches at EL2.
///
/// # Safety
/// Must run once, at boot, with the MMU off, before anything relies on
/// cacheability or alignment behaviour.
pub unsafe fn enable_el2_mmu() {
    // SAFETY: boot is single-threaded and nothing else refers to the
    // tables yet.
    let (root, low) = unsafe { (&mut *addr_of_mut!(EL2_ROOT), &mut *addr_of_mut!(EL2_LOW)) };
    root.0[0] = addr_of_mut!(EL2_LOW) as u64 | TABLE;
    root.0[1] = addr_of_mut!(EL2_HIGH) as u64 | TABLE;
    // The first GiB's devices hold the hypervisor's own console, which
    // speaks before the device tree is read.
    low.0[0] = BLOCK | AF | ATTR_DEVICE | XN;
    low.0[1] = GIB | BLOCK | AF | SH_INNER | ATTR_NORMAL;
    // SAFETY: the tables are complete (as the caller guarantees the rest).
    unsafe { enable_el2_mmu_secondary() }
}

/// Turns on the MMU and caches at EL2 on a secondary CPU, with the tables
/// the boot CPU built.
///
/// # Safety
/// `enable_el2_mmu` has run on the boot CPU; this CPU has its MMU off.
pub unsafe fn enable_el2_mmu_secondary() {
    let root = addr_of_mut!(EL2_ROOT) as u64;
    let pa_range = read_sysreg!("id_aa64mmfr0_el1") & 0xf;
    let t0sz = 64 - VA_BITS;
    let tcr =
        (1 << 31) | (1 << 23) | (pa_range.min(2) << 16) | (3 << 12) | (1 << 10) | (1 << 8) | t0sz;
    // SAFETY: the tables map the hypervisor's own code, data and stack at
    // their physical addresses, so enabling translation does not move
    // anything under our feet.
    unsafe {
        write_sysreg!("mair_el2", MAIR);
        write_sysreg!("tcr_el2", tcr);
        write_sysreg!("ttbr0_el2", root);
        isb();
        core::arch::asm!("tlbi alle2", "dsb ish", options(nostack));
        isb();
        write_sysreg!(
            "sctlr_el2",
            SCTLR_EL2_RES1 | SCTLR_M | SCTLR_C | SCTLR_SA | SCTLR_I
        );
    }
    isb();
}

/// Maps the 1 GiB blocks holding `window` as device memory, so trapped
/// guest accesses inside it can be forwarded. Runs on the boot CPU before
/// any other CPU starts; blocks already mapped as devices stay.
///
/// # Errors
/// The window lies beyond the identity map's reach, or shares a block
/// with RAM.
pub fn map_device_window(window: IpaRange) -> Result<(), &'static str> {
    let first = window.start().get() / GIB;
    let last = (window.end().get() - 1) / GIB;
    if last >= 1 << (VA_BITS - 30) {
        return Err("beyond the hypervisor's 1 TiB identity map");
    }
    let device = BLOCK | AF | ATTR_DEVICE | XN;
    for block in first..=last {
        let table = if block < ENTRIES as u64 {
            addr_of_mut!(EL2_LOW)
        } else {
            addr_of_mut!(EL2_HIGH)
        };
        // SAFETY: only the boot CPU runs (the caller's contract), and it
        // holds no other reference to the tables; the entry written was
        // invalid or already this very mapping, so no break-before-make.
        let entry = unsafe { &mut (*table).0[block as usize % ENTRIES] };
        let want = (block * GIB) | device;
        match *entry {
            0 => *entry = want,
            e if e == want => {}
            _ => return Err("shares a GiB with RAM"),
        }
    }
    // New valid entries (never cached while invalid) are visible to the
    // walker after the barrier.
    // SAFETY: barriers and TLB invalidation change no memory.
    unsafe {
        core::arch::asm!(
            "dsb ishst",
            "tlbi alle2",
            "dsb ish",
            "isb",
            options(nostack)
        )
    };
    Ok(())
}

/// Tables for the guest's stage 2.
const POOL_TABLES: usize = 64;
static mut POOL: [Table; POOL_TABLES] = [const { Table([0; ENTRIES]) }; POOL_TABLES];

/// Hands out tables from a fixed pool in the hypervisor's memory.
pub struct PoolTables {
    next: usize,
}

impl PoolTables {
    /// The pool; only one may exist.
    ///
    /// # Safety
    /// Call at most once.
    pub unsafe fn take() -> Self {
        Self { next: 0 }
    }

    fn base() -> u64 {
        addr_of_mut!(POOL) as u64
    }
}

impl TableMemory for PoolTables {
    fn alloc(&mut self) -> Option<PhysAddr> {
        if self.next >= POOL_TABLES {
            return None;
        }
        let pa = Self::base() + self.next as u64 * PAGE_SIZE;
        self.next += 1;
        Some(PhysAddr(pa))
    }

    fn table(&mut self, table: PhysAddr) -> Option<&mut [u64; ENTRIES]> {
        // Only addresses `alloc` returned are tables: a page-aligned
        // address inside the allocated part of the pool. Anything else
        // (a corrupt entry) is refused, never redirected.
        let offset = table.get().checked_sub(Self::base())?;
        if !offset.is_multiple_of(PAGE_SIZE) {
            return None;
        }
        let index = usize::try_from(offset / PAGE_SIZE).ok()?;
        if index >= self.next {
            return None;
        }
        // SAFETY: `self` is the only owner of the pool (see `take`) and the
        // index is below `next <= POOL_TABLES`, so this is in bounds and the
        // only live reference.
        Some(unsafe { &mut (*addr_of_mut!(POOL))[index].0 })
    }

    fn in_use(&self) -> Option<usize> {
        Some(self.next)
    }
}

/// TLB maintenance for the guest (VMID in VTTBR_EL2).
pub struct GuestTlb;

impl Tlb for GuestTlb {
    fn invalidate_ipa(&mut self, ipa: Ipa) {
        // SAFETY: TLB invalidation only drops cached translations.
        unsafe {
            core::arch::asm!(
                "dsb ishst",
                "tlbi ipas2e1is, {0}",
                "dsb ish",
                "tlbi vmalle1is",
                "dsb ish",
                "isb",
                in(reg) ipa.get() >> 12,
                options(nostack)
            );
        }
    }

    fn invalidate_all(&mut self) {
        // SAFETY: TLB invalidation only drops cached translations.
        unsafe {
            core::arch::asm!(
                "dsb ishst",
                "tlbi vmalls12e1is",
                "dsb ish",
                "isb",
                options(nostack)
            );
        }
    }
}

/// Cleans `[start, start + len)` from the data cache to the point of
/// coherency, so the guest (MMU off at entry) sees what we wrote.
pub fn clean_dcache(start: u64, len: u64) {
    let line = 4u64 << ((read_sysreg!("ctr_el0") >> 16) & 0xf);
    let mut addr = start & !(line - 1);
    while addr < start + len {
        // SAFETY: cache maintenance by VA of mapped memory has no effect
        // on the memory's contents.
        unsafe { core::arch::asm!("dc cvac, {0}", in(reg) addr, options(nostack)) };
        addr += line;
    }
    super::sysreg::dsb_sy();
}
