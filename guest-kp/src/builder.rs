// SPDX-License-Identifier: GPL-2.0 OR MIT
//! Assembling the record from the kernel's section bounds, as the guest
//! sees them (IPAs, from `__pa_symbol()` of the linker symbols), with
//! every inconsistency caught before anything is sent.
//!
//! What arm64 Linux 6.12's `arch/arm64/kernel/vmlinux.lds.S` guarantees,
//! and therefore what the builder requires or rounds:
//!
//! | section | bounds | alignment in 6.12 | builder |
//! |---|---|---|---|
//! | TEXT | `[_text, _etext)` | `_text` is the image base (2 MiB aligned by `booting.rst`), `_etext` is `ALIGN(SEGMENT_ALIGN)` | both must be page aligned |
//! | RODATA | `[__start_rodata, __end_rodata)` | `RO_DATA(PAGE_SIZE)` aligns both | both must be page aligned |
//! | DATA | `[_sdata, _edata)` | `_sdata` follows `ALIGN(SEGMENT_ALIGN)`; `_edata` is not aligned | start must be aligned; end is rounded up |
//! | BSS | `[__bss_start, __bss_stop)` | `__bss_start` is page aligned only with `CONFIG_KVM` (`SBSS_ALIGN`); `__bss_stop` is not aligned, but the next thing (`init_pg_dir`) is `ALIGN(PAGE_SIZE)` | see below; end is rounded up |
//!
//! A misaligned start is refused, never rounded, with one exception:
//! without `CONFIG_KVM`, `__bss_start` may share a page with the end of
//! DATA. That page goes to DATA (both are read-write, never executable,
//! so nothing about its protection changes) and BSS starts at the next
//! page. A misaligned `__bss_start` in any other position is refused.
//!
//! RODATA ends at `__end_rodata`, not at `__init_begin`: what lies between
//! (`.rodata.text` with the idmap and KPTI trampoline, executed through
//! other mappings, and `swapper_pg_dir`, written through the `FIX_PGD`
//! fixmap) must not be made read-only and non-executable. Init memory
//! (`[__init_begin, __init_end)`) and everything after `__bss_stop`
//! (`init_pg_dir`, freed after boot) are not reported.

use super::abi::{is_page_aligned, RegionType, PAGE_SIZE};
use super::record::{KernelAssetInfo, RecordError, Region};

/// The kernel's section bounds as IPAs, each a half-open `(start, end)`
/// pair straight from the linker symbols, and the fixmap slot.
///
/// ```
/// use guest_kp::builder::Builder;
///
/// let rec = Builder {
///     text: (0x4020_0000, 0x40a0_0000),
///     rodata: (0x40a0_0000, 0x40e0_0000),
///     data: (0x40f0_0000, 0x4101_2345),
///     bss: (0x4101_2380, 0x4108_0010), // shares a page with DATA
///     fixmap_va: 0xffff_ffff_fe7f_b000,
///     fixmap_size: 4096,
/// }
/// .build()
/// .unwrap();
/// assert_eq!(rec.check_shape().unwrap().bss().start(), 0x4101_3000);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Builder {
    /// `[_text, _etext)`.
    pub text: (u64, u64),
    /// `[__start_rodata, __end_rodata)`.
    pub rodata: (u64, u64),
    /// `[_sdata, _edata)`.
    pub data: (u64, u64),
    /// `[__bss_start, __bss_stop)`.
    pub bss: (u64, u64),
    /// `__fix_to_virt(FIX_TEXT_POKE0)`.
    pub fixmap_va: u64,
    /// The guest's `PAGE_SIZE` (the size of one fixmap slot).
    pub fixmap_size: u64,
}

/// `x` rounded up to a page, or `None` if that wraps.
const fn page_align_up(x: u64) -> Option<u64> {
    match x.checked_add(PAGE_SIZE - 1) {
        Some(y) => Some(y & !(PAGE_SIZE - 1)),
        None => None,
    }
}

impl Builder {
    /// Builds and checks the record.
    ///
    /// Checks, in order: each section non-empty and not reversed; the
    /// sections in linker-script order; page alignment as the module
    /// documentation describes; then every rule of
    /// [`KernelAssetInfo::check_shape`] (which includes the fixmap slot).
    ///
    /// # Errors
    /// - [`RecordError::EndBeforeStart`]: a section ends before it starts.
    /// - [`RecordError::ZeroSize`]: a section is empty, or BSS lies wholly
    ///   in the page it shares with DATA.
    /// - [`RecordError::OutOfOrder`]: a section starts before the
    ///   previous one ends.
    /// - [`RecordError::StartMisaligned`]: a start that must be page
    ///   aligned is not.
    /// - [`RecordError::EndMisaligned`]: the end of TEXT or RODATA is not
    ///   page aligned.
    /// - [`RecordError::Wraps`]: rounding an end up wraps.
    /// - any error of [`KernelAssetInfo::check_shape`] (fixmap slot).
    pub fn build(&self) -> Result<KernelAssetInfo, RecordError> {
        let sections = [
            (RegionType::Text, self.text),
            (RegionType::Rodata, self.rodata),
            (RegionType::Data, self.data),
            (RegionType::Bss, self.bss),
        ];
        for (ty, (start, end)) in sections {
            if end < start {
                return Err(RecordError::EndBeforeStart(ty));
            }
            if end == start {
                return Err(RecordError::ZeroSize(ty));
            }
        }
        for pair in sections.windows(2) {
            if let [(earlier, (_, earlier_end)), (later, (later_start, _))] = *pair {
                if later_start < earlier_end {
                    return Err(RecordError::OutOfOrder { earlier, later });
                }
            }
        }

        let aligned_start = |ty, x| {
            if is_page_aligned(x) {
                Ok(x)
            } else {
                Err(RecordError::StartMisaligned(ty))
            }
        };
        let aligned_end = |ty, x| {
            if is_page_aligned(x) {
                Ok(x)
            } else {
                Err(RecordError::EndMisaligned(ty))
            }
        };
        let round_up = |ty, x| page_align_up(x).ok_or(RecordError::Wraps(ty));

        let text_start = aligned_start(RegionType::Text, self.text.0)?;
        let text_end = aligned_end(RegionType::Text, self.text.1)?;
        let rodata_start = aligned_start(RegionType::Rodata, self.rodata.0)?;
        let rodata_end = aligned_end(RegionType::Rodata, self.rodata.1)?;
        let data_start = aligned_start(RegionType::Data, self.data.0)?;
        let data_end = round_up(RegionType::Data, self.data.1)?;
        let bss_start = if is_page_aligned(self.bss.0) {
            self.bss.0
        } else {
            // Allowed only inside DATA's last page, which DATA keeps.
            let next = round_up(RegionType::Bss, self.bss.0)?;
            if next != data_end {
                return Err(RecordError::StartMisaligned(RegionType::Bss));
            }
            next
        };
        let bss_end = round_up(RegionType::Bss, self.bss.1)?;
        if bss_end <= bss_start {
            return Err(RecordError::ZeroSize(RegionType::Bss));
        }

        // Every end is at or above its start here, so the sizes do not
        // underflow; `saturating_sub` keeps that obvious.
        let mut rec = KernelAssetInfo::new();
        for (ty, start, end) in [
            (RegionType::Text, text_start, text_end),
            (RegionType::Rodata, rodata_start, rodata_end),
            (RegionType::Data, data_start, data_end),
            (RegionType::Bss, bss_start, bss_end),
        ] {
            rec.set_region(ty, Region::new(start, end.saturating_sub(start)));
        }
        rec.set_region(
            RegionType::FixmapTextPoke0,
            Region::new(self.fixmap_va, self.fixmap_size),
        );
        rec.check_shape()?;
        Ok(rec)
    }
}

#[cfg(test)]
// An explicit path: the kernel's rustfmtcheck formats each file as if
// it were a crate root.
#[path = "builder/tests.rs"]
mod tests;
