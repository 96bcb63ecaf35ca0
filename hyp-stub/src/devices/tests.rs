// SPDX-License-Identifier: GPL-2.0 OR MIT
//! Host tests of the device windows: a tree shaped like QEMU `virt`'s
//! (high ECAM and 64-bit PCI window included), bad trees, and a model
//! check of the merge and the lookup.

use std::vec::Vec;

use super::*;
use crate::test_fdt::Builder;

const GIB: u64 = 0x4000_0000;

fn memory() -> IpaRange {
    IpaRange::new(Ipa(GIB), GIB).unwrap()
}

fn reg2(pairs: &[(u64, u64)]) -> Vec<u32> {
    pairs
        .iter()
        .flat_map(|&(a, s)| [(a >> 32) as u32, a as u32, (s >> 32) as u32, s as u32])
        .collect()
}

/// QEMU `virt`'s devices as it describes them with the high memory map
/// (properties in the order QEMU writes them, `ranges` before the cells
/// that size it), plus nodes that must not count: memory, a reserved
/// carve-out of it, a disabled UART (status after reg), and the CPUs.
fn virt() -> Vec<u8> {
    let mut b = Builder::default();
    b.begin("")
        .cells("#size-cells", &[2])
        .cells("#address-cells", &[2]);
    b.begin("memory@40000000")
        .cells("reg", &reg2(&[(GIB, GIB)]))
        .string("device_type", "memory")
        .end();
    b.begin("reserved-memory")
        .cells("#address-cells", &[2])
        .cells("#size-cells", &[2])
        .prop("ranges", &[]);
    b.begin("carveout@48000000")
        .cells("reg", &reg2(&[(0x4800_0000, 0x10_0000)]))
        .end();
    b.end();
    b.begin("flash@0")
        .cells("reg", &reg2(&[(0, 0x400_0000), (0x400_0000, 0x400_0000)]))
        .end();
    b.begin("intc@8000000")
        .cells(
            "reg",
            &reg2(&[(0x800_0000, 0x1_0000), (0x80a_0000, 0xf6_0000)]),
        )
        .cells("#address-cells", &[2])
        .cells("#size-cells", &[2])
        .prop("ranges", &[]);
    b.begin("its@8080000")
        .cells("reg", &reg2(&[(0x808_0000, 0x2_0000)]))
        .end();
    b.end();
    b.begin("pl011@9000000")
        .cells("reg", &reg2(&[(0x900_0000, 0x1000)]))
        .end();
    b.begin("uart@9040000")
        .cells("reg", &reg2(&[(0x904_0000, 0x1000)]))
        .string("status", "disabled")
        .end();
    for i in 0..32u64 {
        let at = 0xa00_0000 + i * 0x200;
        b.begin(&format!("virtio_mmio@{at:x}"))
            .cells("reg", &reg2(&[(at, 0x200)]))
            .end();
    }
    b.begin("pcie@10000000")
        .cells(
            "ranges",
            &[
                0x0100_0000,
                0,
                0,
                0,
                0x3eff_0000,
                0,
                0x1_0000, // I/O
                0x0200_0000,
                0,
                0x1000_0000,
                0,
                0x1000_0000,
                0,
                0x2eff_0000, // 32-bit
                0x0300_0000,
                0x80,
                0,
                0x80,
                0,
                0x80,
                0, // 64-bit
            ],
        )
        .cells("reg", &reg2(&[(0x40_1000_0000, 0x1000_0000)]))
        .cells("#address-cells", &[3])
        .cells("#size-cells", &[2])
        .end();
    b.begin("cpus")
        .cells("#address-cells", &[1])
        .cells("#size-cells", &[0]);
    b.begin("cpu@0").cells("reg", &[0]).end();
    b.end();
    b.begin("chosen")
        .string("bootargs", "console=ttyAMA0")
        .end();
    b.end();
    b.finish()
}

fn windows(d: &DeviceWindows) -> Vec<(u64, u64)> {
    d.iter().map(|w| (w.start().get(), w.end().get())).collect()
}

#[test]
fn virt_windows_come_from_the_tree() {
    let blob = virt();
    let d = DeviceWindows::from_fdt(&Fdt::new(&blob).unwrap(), memory()).unwrap();
    assert_eq!(
        windows(&d),
        [
            (0, 0x801_0000),                   // flash, both banks, GIC distributor
            (0x808_0000, 0x900_1000),          // ITS, redistributors, PL011
            (0xa00_0000, 0xa00_4000),          // 32 virtio-mmio slots
            (0x1000_0000, 0x3f00_0000),        // PCI 32-bit memory and I/O
            (0x40_1000_0000, 0x40_2000_0000),  // high ECAM
            (0x80_0000_0000, 0x100_0000_0000), // PCI 64-bit memory
        ]
    );
}

#[test]
fn lookup_finds_devices_and_refuses_the_rest() {
    let blob = virt();
    let d = DeviceWindows::from_fdt(&Fdt::new(&blob).unwrap(), memory()).unwrap();
    // Where Debian's kernel probes the ECAM, a BAR in the 64-bit window.
    for ipa in [
        0x40_1000_0000,
        0x40_1fff_fffc,
        0x80_0000_4000,
        0x900_0ffc,
        0,
    ] {
        assert!(d.contains(Ipa(ipa)), "{ipa:#x}");
    }
    // Gaps, the disabled UART, RAM, the reserved carve-out, past the end.
    for ipa in [
        0x801_0000,
        0x904_0000,
        0x3f00_0000,
        GIB,
        0x4800_0000,
        0x40_2000_0000,
        0x100_0000_0000,
        u64::MAX,
    ] {
        assert!(!d.contains(Ipa(ipa)), "{ipa:#x}");
    }
    let r = |s, n| IpaRange::new(Ipa(s), n).unwrap();
    assert!(d.covers(&r(0x80_0000_0000, 0x10_0000)));
    assert!(d.covers(&r(0x808_0000, 0x1000)));
    // Across the gap between the distributor and the ITS.
    assert!(!d.covers(&r(0x800_0000, 0x9_0000)));
    assert!(!d.covers(&r(0x3eff_f000, 0x2000)));
    assert!(d.overlaps(&r(0x3eff_f000, 0x2000)));
    assert!(!d.overlaps(&memory()));
}

#[test]
fn a_device_over_memory_is_refused() {
    let mut b = Builder::default();
    b.begin("")
        .cells("#size-cells", &[2])
        .cells("#address-cells", &[2]);
    b.begin("memory@40000000")
        .cells("reg", &reg2(&[(GIB, GIB)]))
        .end();
    b.begin("evil@7ffff000")
        .cells("reg", &reg2(&[(0x7fff_f800, 0x1000)]))
        .end();
    b.end();
    let blob = b.finish();
    assert_eq!(
        DeviceWindows::from_fdt(&Fdt::new(&blob).unwrap(), memory()),
        Err(WindowError::OverlapsMemory {
            base: 0x7fff_f800,
            size: 0x1000
        })
    );
}

#[test]
fn bad_trees_are_errors() {
    let tree = |reg: &[u32], cells: u32| {
        let mut b = Builder::default();
        b.begin("")
            .cells("#size-cells", &[2])
            .cells("#address-cells", &[cells]);
        b.begin("dev@0").cells("reg", reg).end();
        b.end();
        b.finish()
    };
    let build = |blob: &[u8]| DeviceWindows::from_fdt(&Fdt::new(blob).unwrap(), memory());
    // A reg that is not whole (address, size) pairs.
    assert_eq!(
        build(&tree(&[0, 0x900_0000, 0], 2)),
        Err(WindowError::Fdt(FdtError::BadCells))
    );
    // Cell counts no reg can have.
    assert_eq!(
        build(&tree(&[0, 0, 0, 0, 0, 0x1000], 4)),
        Err(WindowError::Fdt(FdtError::BadCells))
    );
    // Empty, and wrapping the address space.
    assert_eq!(
        build(&tree(&reg2(&[(0x900_0000, 0)]), 2)),
        Err(WindowError::BadRange {
            base: 0x900_0000,
            size: 0
        })
    );
    assert_eq!(
        build(&tree(&reg2(&[(u64::MAX - 0xfff, 0x1000)]), 2)),
        Err(WindowError::BadRange {
            base: u64::MAX - 0xfff,
            size: 0x1000
        })
    );
    // A page-aligned range ending at the very top cannot be widened.
    assert!(build(&tree(&reg2(&[(u64::MAX - 0x1ffe, 0x1000)]), 2)).is_err());
    // No devices at all.
    let mut b = Builder::default();
    b.begin("")
        .cells("#size-cells", &[2])
        .cells("#address-cells", &[2]);
    b.begin("memory@40000000")
        .cells("reg", &reg2(&[(GIB, GIB)]))
        .end();
    b.end();
    assert_eq!(build(&b.finish()), Err(WindowError::None));
}

#[test]
fn too_many_windows_is_an_error() {
    let mut d = DeviceWindows::empty();
    for i in 0..MAX_WINDOWS as u64 {
        d.add(i * 0x2000, 0x1000, memory()).unwrap();
    }
    assert_eq!(
        d.add(MAX_WINDOWS as u64 * 0x2000, 0x1000, memory()),
        Err(WindowError::TooMany)
    );
    // Filling a gap merges two windows, which needs no new slot.
    d.add(0x1000, 0x10, memory()).unwrap();
    assert_eq!(d.iter().count(), MAX_WINDOWS - 1);
}

/// A small deterministic generator (xorshift), so the model check needs
/// no crate.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn merge_and_lookup_match_a_page_bitmap() {
    const PAGES: u64 = 64;
    let far = IpaRange::new(Ipa(1 << 40), 0x1000).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..500 {
        let mut d = DeviceWindows::empty();
        let mut model = [false; PAGES as usize];
        for _ in 0..(rng.next() % 12) {
            let base = rng.next() % (PAGES * 0x1000 - 0x10);
            let size = 1 + rng.next() % (PAGES * 0x1000 - base).min(0x5000);
            if d.add(base, size, far).is_err() {
                break;
            }
            for p in base / 0x1000..=(base + size - 1) / 0x1000 {
                model[p as usize] = true;
            }
        }
        let w = windows(&d);
        for pair in w.windows(2) {
            assert!(pair[0].1 < pair[1].0, "sorted, disjoint, apart: {w:x?}");
        }
        for (p, &on) in model.iter().enumerate() {
            let a = p as u64 * 0x1000;
            assert_eq!(d.contains(Ipa(a)), on, "page {p} of {w:x?}");
            assert_eq!(d.contains(Ipa(a + 0xfff)), on, "page {p} of {w:x?}");
        }
        // A range is covered exactly when it lies in one run of pages.
        for _ in 0..20 {
            let s = rng.next() % PAGES;
            let n = 1 + rng.next() % (PAGES - s);
            let run = (s..s + n).all(|p| model[p as usize]);
            let r = IpaRange::new(Ipa(s * 0x1000), n * 0x1000).unwrap();
            assert_eq!(d.covers(&r), run, "{r:x?} in {w:x?}");
        }
    }
}
