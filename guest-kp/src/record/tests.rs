// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The wire format, every validation rule, and the region-by-region
//! collector.

use super::*;

const RAM: (u64, u64) = (0x4000_0000, 0x8000_0000);
const FIXMAP: u64 = 0xffff_ffff_fe7f_b000;

const TEXT: (u64, u64) = (0x4020_0000, 0x80_0000);
const RODATA: (u64, u64) = (0x40a0_0000, 0x40_0000);
const DATA: (u64, u64) = (0x40f0_0000, 0x12_0000);
const BSS: (u64, u64) = (0x4102_0000, 0x6_0000);

fn good() -> KernelAssetInfo {
    let mut r = KernelAssetInfo::new();
    r.set_region(RegionType::Text, Region::new(TEXT.0, TEXT.1));
    r.set_region(RegionType::Rodata, Region::new(RODATA.0, RODATA.1));
    r.set_region(RegionType::Data, Region::new(DATA.0, DATA.1));
    r.set_region(RegionType::Bss, Region::new(BSS.0, BSS.1));
    r.set_region(RegionType::FixmapTextPoke0, Region::new(FIXMAP, 4096));
    r
}

fn with(ty: RegionType, start: u64, size: u64) -> KernelAssetInfo {
    let mut r = good();
    r.set_region(ty, Region::new(start, size));
    r
}

/// A record from bytes, bypassing `from_bytes`'s version check.
fn patched(f: impl FnOnce(&mut [u8; RECORD_SIZE])) -> Result<KernelAssetInfo, RecordError> {
    let mut b = good().to_bytes();
    f(&mut b);
    KernelAssetInfo::from_bytes(&b)
}

#[test]
fn wire_layout() {
    let b = good().to_bytes();
    assert_eq!(b.len(), 132);
    assert_eq!(b[0..4], [0x00, 0x10, 0x0f, 0x00]);
    let field = |off: usize| u64::from_le_bytes(b[off..off + 8].try_into().unwrap());
    assert_eq!(field(4), TEXT.0);
    assert_eq!(field(12), TEXT.1);
    assert_eq!(field(4 + 16), RODATA.0);
    assert_eq!(field(4 + 16 * 3 + 8), BSS.1);
    assert_eq!(field(4 + 16 * 4), FIXMAP);
    assert_eq!(field(4 + 16 * 4 + 8), 4096);
    assert!(b[4 + 16 * 5..].iter().all(|&x| x == 0));
    assert_eq!(
        core::mem::size_of::<KernelAssetInfo>(),
        KernelAssetInfo::SIZE
    );
    assert_eq!(core::mem::align_of::<AlignedRecord>(), 256);
}

#[test]
fn bytes_round_trip() {
    let r = good();
    assert_eq!(KernelAssetInfo::from_bytes(&r.to_bytes()), Ok(r));
    assert_eq!(KernelAssetInfo::default(), KernelAssetInfo::new());
    assert_eq!(KernelAssetInfo::new().version(), KP_MAGIC_VERSION);
    let mut rng = Rng(0x1234_5678);
    for _ in 0..1000 {
        let mut b = [0u8; RECORD_SIZE];
        b.iter_mut().for_each(|x| *x = rng.next() as u8);
        b[..4].copy_from_slice(&KP_MAGIC_VERSION.to_le_bytes());
        let r = KernelAssetInfo::from_bytes(&b).unwrap();
        assert_eq!(r.to_bytes(), b);
        for i in 0..REGION_SLOTS {
            let s = r.slot(i).unwrap();
            let off = 4 + 16 * i;
            assert_eq!(s.start().to_le_bytes(), b[off..off + 8]);
            assert_eq!(s.size().to_le_bytes(), b[off + 8..off + 16]);
        }
        assert_eq!(r.slot(REGION_SLOTS), None);
    }
}

#[test]
fn from_bytes_checks_version() {
    for v in [0u32, 1, 0xF0FFF, 0xF1001, 0x0010_0F00, u32::MAX] {
        let r = patched(|b| b[..4].copy_from_slice(&v.to_le_bytes()));
        assert_eq!(r, Err(RecordError::Version { found: v }));
    }
}

#[test]
fn good_record_validates() {
    let layout = good().validate(RAM).unwrap();
    assert_eq!(layout.text(), IpaSpan::from_size(TEXT.0, TEXT.1).unwrap());
    assert_eq!(layout.rodata().start(), RODATA.0);
    assert_eq!(layout.data().size(), DATA.1);
    assert_eq!(layout.bss().end(), BSS.0 + BSS.1);
    assert_eq!(layout.fixmap().va(), FIXMAP);
    assert_eq!(layout.fixmap().size(), 4096);
    assert_eq!(layout.span(RegionType::FixmapTextPoke0), None);
    assert_eq!(layout.span(RegionType::Bss), Some(layout.bss()));
    assert_eq!(layout.to_record(), good());
    assert_eq!(good().check_shape(), Ok(layout));
}

#[test]
fn region_of_routes_ipas() {
    let l = good().validate(RAM).unwrap();
    assert_eq!(l.region_of(TEXT.0), Some(RegionType::Text));
    assert_eq!(l.region_of(TEXT.0 + TEXT.1 - 1), Some(RegionType::Text));
    assert_eq!(l.region_of(RODATA.0), Some(RegionType::Rodata));
    assert_eq!(l.region_of(DATA.0 + 8), Some(RegionType::Data));
    assert_eq!(l.region_of(BSS.0 + BSS.1 - 1), Some(RegionType::Bss));
    assert_eq!(l.region_of(BSS.0 + BSS.1), None);
    assert_eq!(l.region_of(TEXT.0 - 1), None);
    // The gap between RODATA and DATA (init memory) is not protected.
    assert_eq!(l.region_of(RODATA.0 + RODATA.1), None);
    assert_eq!(l.region_of(FIXMAP), None);
}

#[test]
fn fixmap_slot_contains() {
    let f = good().validate(RAM).unwrap().fixmap();
    assert!(f.contains(FIXMAP));
    assert!(f.contains(FIXMAP + 4095));
    assert!(!f.contains(FIXMAP + 4096));
    assert!(!f.contains(FIXMAP - 1));
    assert!(!f.contains(0));
    assert!(!f.contains(u64::MAX));
}

#[test]
fn reserved_slots_must_be_zero() {
    for slot in 5..8 {
        for field in [0, 8] {
            let r = patched(|b| b[4 + 16 * slot + field] = 1).unwrap();
            assert_eq!(r.validate(RAM), Err(RecordError::ReservedSlot { slot }));
            assert_eq!(r.check_shape(), Err(RecordError::ReservedSlot { slot }));
        }
    }
}

#[test]
fn zero_sizes() {
    for ty in RegionType::ALL {
        let start = good().region(ty).start();
        assert_eq!(
            with(ty, start, 0).validate(RAM),
            Err(RecordError::ZeroSize(ty))
        );
    }
    // All zero: the first region is blamed.
    let mut r = KernelAssetInfo::new();
    assert_eq!(
        r.validate(RAM),
        Err(RecordError::ZeroSize(RegionType::Text))
    );
    r.set_region(RegionType::Text, Region::new(TEXT.0, TEXT.1));
    assert_eq!(
        r.validate(RAM),
        Err(RecordError::ZeroSize(RegionType::Rodata))
    );
}

#[test]
fn ipa_alignment() {
    for ty in RegionType::IPA {
        let r = good().region(ty);
        for delta in [1, 8, 0x800, 0xfff] {
            assert_eq!(
                with(ty, r.start() + delta, r.size()).validate(RAM),
                Err(RecordError::StartMisaligned(ty))
            );
            assert_eq!(
                with(ty, r.start(), r.size() - 0x1000 + delta).validate(RAM),
                Err(RecordError::SizeMisaligned(ty))
            );
        }
        // A misaligned start is reported before a misaligned size.
        assert_eq!(
            with(ty, r.start() + 1, 3).validate(RAM),
            Err(RecordError::StartMisaligned(ty))
        );
    }
}

#[test]
fn wrapping_and_ram() {
    let top = !0xfffu64;
    assert_eq!(
        with(RegionType::Text, top, 0x1000).check_shape(),
        Err(RecordError::Wraps(RegionType::Text))
    );
    assert_eq!(
        with(RegionType::Bss, 0x1000, !0xfffu64).check_shape(),
        Err(RecordError::Wraps(RegionType::Bss))
    );
    // Exactly at the edges of RAM is fine (move DATA/BSS out of the way).
    let mut r = with(RegionType::Text, RAM.0, 0x1000);
    r.set_region(RegionType::Bss, Region::new(RAM.1 - 0x1000, 0x1000));
    assert!(r.validate(RAM).is_ok());
    // One page past either edge is not.
    for (ty, start) in [
        (RegionType::Text, RAM.0 - 0x1000),
        (RegionType::Bss, RAM.1),
        (RegionType::Bss, RAM.1 - 0x1000 + 0x1000),
        (RegionType::Data, 0),
    ] {
        let r = with(ty, start, 0x1000);
        assert_eq!(r.validate(RAM), Err(RecordError::OutsideRam(ty)));
        assert!(r.check_shape().is_ok(), "{ty}: shape is fine");
    }
    // Starting inside but running past the end.
    assert_eq!(
        with(RegionType::Bss, RAM.1 - 0x1000, 0x2000).validate(RAM),
        Err(RecordError::OutsideRam(RegionType::Bss))
    );
    // No RAM at all.
    assert_eq!(
        good().validate((RAM.1, RAM.0)),
        Err(RecordError::OutsideRam(RegionType::Text))
    );
    assert_eq!(
        good().validate((0, 0)),
        Err(RecordError::OutsideRam(RegionType::Text))
    );
}

#[test]
fn fixmap_rules() {
    let fx = RegionType::FixmapTextPoke0;
    let check = |va, size| with(fx, va, size).validate(RAM);
    assert_eq!(check(FIXMAP, 0), Err(RecordError::ZeroSize(fx)));
    for size in [1, 0x800, 0x2000, 0x3000, 0x8000, 0x2_0000, 0x20_0000] {
        assert_eq!(check(FIXMAP, size), Err(RecordError::FixmapSize { size }));
    }
    assert_eq!(
        check(FIXMAP + 4, 4096),
        Err(RecordError::StartMisaligned(fx))
    );
    assert_eq!(
        check(FIXMAP + 0x800, 4096),
        Err(RecordError::StartMisaligned(fx))
    );
    // 16 KiB and 64 KiB guests: the slot is aligned to its own size.
    assert!(check(0xffff_ffff_fe7f_c000, 0x4000).is_ok());
    assert_eq!(check(FIXMAP, 0x4000), Err(RecordError::StartMisaligned(fx)));
    assert!(check(0xffff_ffff_fe7f_0000, 0x1_0000).is_ok());
    assert_eq!(
        check(FIXMAP, 0x1_0000),
        Err(RecordError::StartMisaligned(fx))
    );
    // The very last page would end at 2^64.
    assert_eq!(
        check(0xffff_ffff_ffff_f000, 4096),
        Err(RecordError::Wraps(fx))
    );
    // An IPA (or user address) passed by mistake.
    for va in [0x4000_0000, 0, 0x0000_ffff_ffff_f000, KERNEL_VA_MIN - 4096] {
        assert_eq!(check(va, 4096), Err(RecordError::FixmapNotKernelVa { va }));
    }
    assert!(check(KERNEL_VA_MIN, 4096).is_ok());
    // The fixmap slot is a VA: it is never checked against RAM.
    assert!(check(FIXMAP, 4096).is_ok());
}

#[test]
fn overlaps_every_pair() {
    let ipa = RegionType::IPA;
    for (i, &a) in ipa.iter().enumerate() {
        for &b in &ipa[i + 1..] {
            // Put b on top of a's last page.
            let ra = good().region(a);
            let last = ra.start() + ra.size() - 0x1000;
            let r = with(b, last, 0x1000);
            assert_eq!(r.validate(RAM), Err(RecordError::Overlap(a, b)), "{a} {b}");
            // Adjacent is fine.
            let r = with(b, ra.start() + ra.size(), 0x1000);
            let next_is_free = ipa
                .iter()
                .filter(|&&t| t != b)
                .all(|&t| good().region(t).start() != ra.start() + ra.size());
            if next_is_free {
                assert!(r.validate(RAM).is_ok(), "{a} {b} adjacent");
            }
        }
    }
    // Identical regions.
    let r = with(RegionType::Bss, TEXT.0, TEXT.1);
    assert_eq!(
        r.validate(RAM),
        Err(RecordError::Overlap(RegionType::Text, RegionType::Bss))
    );
    // One containing another.
    let r = with(RegionType::Rodata, TEXT.0 + 0x1000, 0x1000);
    assert_eq!(
        r.validate(RAM),
        Err(RecordError::Overlap(RegionType::Text, RegionType::Rodata))
    );
}

#[test]
fn checks_run_in_documented_order() {
    // Reserved slot beats a bad region.
    let r = patched(|b| {
        b[4 + 16 * 7] = 1;
        b[4..12].copy_from_slice(&1u64.to_le_bytes()); // TEXT start misaligned
    })
    .unwrap();
    assert_eq!(r.validate(RAM), Err(RecordError::ReservedSlot { slot: 7 }));
    // Per-region errors in slot order beat overlaps.
    let mut r = with(RegionType::Bss, TEXT.0, TEXT.1);
    r.set_region(RegionType::FixmapTextPoke0, Region::new(FIXMAP, 0));
    assert_eq!(
        r.validate(RAM),
        Err(RecordError::ZeroSize(RegionType::FixmapTextPoke0))
    );
}

#[test]
fn error_codes() {
    use RegionType::*;
    let cases = [
        (RecordError::Version { found: 0 }, KpError::ArgumentInvalid),
        (
            RecordError::ReservedSlot { slot: 5 },
            KpError::ArgumentInvalid,
        ),
        (RecordError::ZeroSize(Text), KpError::ArgumentSize),
        (
            RecordError::StartMisaligned(Data),
            KpError::ArgumentAlignment,
        ),
        (RecordError::SizeMisaligned(Bss), KpError::ArgumentAlignment),
        (RecordError::EndMisaligned(Text), KpError::ArgumentAlignment),
        (RecordError::Wraps(Rodata), KpError::AddrInvalid),
        (RecordError::OutsideRam(Bss), KpError::AddrInvalid),
        (RecordError::FixmapSize { size: 1 }, KpError::ArgumentSize),
        (
            RecordError::FixmapNotKernelVa { va: 0 },
            KpError::AddrInvalid,
        ),
        (RecordError::Overlap(Text, Data), KpError::ArgumentInvalid),
        (RecordError::EndBeforeStart(Data), KpError::ArgumentInvalid),
        (
            RecordError::OutOfOrder {
                earlier: Text,
                later: Rodata,
            },
            KpError::ArgumentInvalid,
        ),
        (
            RecordError::RecordCrossesPage { ipa: 0 },
            KpError::ArgumentAlignment,
        ),
        (
            RecordError::RecordOutsideRam { ipa: 0 },
            KpError::AddrInvalid,
        ),
        (RecordError::BadRegionType(5), KpError::ArgumentInvalid),
        (RecordError::Duplicate(Text), KpError::ObjectConfigured),
    ];
    for (e, k) in cases {
        assert_eq!(e.kp_error(), k, "{e:?}");
        assert_eq!(KpError::from(e), k);
        assert!(!e.to_string().is_empty());
    }
    assert_eq!(
        RecordError::OutOfOrder {
            earlier: Data,
            later: Bss
        }
        .to_string(),
        "BSS starts before DATA ends"
    );
}

#[test]
fn record_placement_rules() {
    assert!(record_fits_in_page(0x4000_0000));
    assert!(record_fits_in_page(0x4000_0000 + 4096 - 132));
    assert!(!record_fits_in_page(0x4000_0000 + 4096 - 131));
    assert!(!record_fits_in_page(u64::MAX));
    for ipa in (0..4096).step_by(256) {
        assert!(record_fits_in_page(0x4000_0000 + ipa));
    }
    assert_eq!(record_placement(RAM.0 + 0x100, RAM), Ok(()));
    assert_eq!(record_placement(RAM.1 - 4096, RAM), Ok(()));
    assert_eq!(
        record_placement(RAM.1 - 4096 + 4000, RAM),
        Err(RecordError::RecordCrossesPage {
            ipa: RAM.1 - 4096 + 4000
        })
    );
    assert_eq!(
        record_placement(RAM.1, RAM),
        Err(RecordError::RecordOutsideRam { ipa: RAM.1 })
    );
    assert_eq!(
        record_placement(RAM.0 - 4096, RAM),
        Err(RecordError::RecordOutsideRam { ipa: RAM.0 - 4096 })
    );
    assert_eq!(
        record_placement(!0xfffu64, RAM),
        Err(RecordError::RecordOutsideRam { ipa: !0xfffu64 })
    );
}

#[test]
fn ipa_span() {
    assert_eq!(IpaSpan::new(5, 5), None);
    assert_eq!(IpaSpan::new(6, 5), None);
    assert_eq!(IpaSpan::from_size(u64::MAX, 1), None);
    assert_eq!(IpaSpan::from_size(1, 0), None);
    let s = IpaSpan::new(0x1000, 0x3000).unwrap();
    assert_eq!((s.start(), s.end(), s.size()), (0x1000, 0x3000, 0x2000));
    assert!(s.contains(0x1000) && s.contains(0x2fff) && !s.contains(0x3000));
    assert!(s.contains_range(0x2ffc, 4) && !s.contains_range(0x2ffd, 4));
    assert!(!s.contains_range(0x1000, u64::MAX));
    assert!(!s.contains_range(0xfff, 4));
    let t = IpaSpan::new(0x3000, 0x4000).unwrap();
    assert!(!s.overlaps(&t) && !t.overlaps(&s));
    let u = IpaSpan::new(0x2fff, 0x3001).unwrap();
    assert!(s.overlaps(&u) && u.overlaps(&t));
}

#[test]
fn region_accessors() {
    let r = Region::new(u64::MAX, 1);
    assert_eq!(r.end(), None);
    assert!(!r.is_zero());
    assert!(Region::ZERO.is_zero());
    assert_eq!(Region::new(0x1000, 0x2000).end(), Some(0x3000));
    assert_eq!(
        format!("{:?}", Region::new(0x1000, 0x2000)),
        "{ start: 0x1000, size: 0x2000 }"
    );
    assert!(format!("{:?}", good()).contains("0xf1000"));
}

fn add_good(c: &mut Collector, ty: RegionType) -> Result<Option<Layout>, RecordError> {
    let r = good().region(ty);
    c.add(ty.as_raw(), r.start(), r.size(), RAM)
}

#[test]
fn collector_accepts_all_five_in_any_order() {
    let orders = [[0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 4, 0, 3, 1]];
    for order in orders {
        let mut c = Collector::new();
        assert!(c.is_empty());
        for (n, i) in order.into_iter().enumerate() {
            let ty = RegionType::ALL[i];
            let out = add_good(&mut c, ty).unwrap();
            assert!(c.is_reported(ty));
            if n < 4 {
                assert_eq!(out, None);
            } else {
                assert_eq!(out, Some(good().validate(RAM).unwrap()));
            }
        }
        assert_eq!(*c.record(), good());
        // Complete: everything further is a duplicate.
        for ty in RegionType::ALL {
            assert_eq!(add_good(&mut c, ty), Err(RecordError::Duplicate(ty)));
        }
    }
}

#[test]
fn collector_refusals_change_nothing() {
    let mut c = Collector::new();
    add_good(&mut c, RegionType::Text).unwrap();
    let before = c;
    let cases = [
        (5, 0, 0, RecordError::BadRegionType(5)),
        (u64::MAX, 0, 0, RecordError::BadRegionType(u64::MAX)),
        (1 << 63, 0, 0, RecordError::BadRegionType(1 << 63)),
        (0, TEXT.0, TEXT.1, RecordError::Duplicate(RegionType::Text)),
        (1, RODATA.0, 0, RecordError::ZeroSize(RegionType::Rodata)),
        (
            1,
            RODATA.0 + 1,
            0x1000,
            RecordError::StartMisaligned(RegionType::Rodata),
        ),
        (
            1,
            RODATA.0,
            0x10,
            RecordError::SizeMisaligned(RegionType::Rodata),
        ),
        (1, !0xfffu64, 0x1000, RecordError::Wraps(RegionType::Rodata)),
        (
            1,
            0x1000,
            0x1000,
            RecordError::OutsideRam(RegionType::Rodata),
        ),
        (
            1,
            TEXT.0,
            0x1000,
            RecordError::Overlap(RegionType::Text, RegionType::Rodata),
        ),
        (
            4,
            0x4000_0000,
            4096,
            RecordError::FixmapNotKernelVa { va: 0x4000_0000 },
        ),
        (4, FIXMAP, 100, RecordError::FixmapSize { size: 100 }),
    ];
    for (raw, start, size, err) in cases {
        assert_eq!(c.add(raw, start, size, RAM), Err(err));
        assert_eq!(c, before);
    }
    // Overlap is reported with the lower region type first either way.
    let mut c = Collector::new();
    add_good(&mut c, RegionType::Bss).unwrap();
    assert_eq!(
        c.add(0, BSS.0, 0x1000, RAM),
        Err(RecordError::Overlap(RegionType::Text, RegionType::Bss))
    );
    // The fixmap slot is a VA and cannot overlap IPA regions.
    assert_eq!(c.add(4, FIXMAP, 4096, RAM), Ok(None));
}

/// xorshift64: deterministic pseudo-random numbers for the never-panics
/// tests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Mostly interesting values: edges, near-valid addresses, raw noise.
    fn value(&mut self) -> u64 {
        let v = self.next();
        match v % 8 {
            0 => 0,
            1 => u64::MAX - (v >> 60),
            2 => (1 << 63) + (v >> 61),
            3 => RAM.0 + ((v >> 20) & 0x3fff_f000),
            4 => (v >> 40) & !0xfff,
            5 => FIXMAP.wrapping_add((v >> 50) << 12),
            6 => v & 0xf_ffff,
            _ => self.next(),
        }
    }
}

#[test]
fn never_panics_on_arbitrary_records() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut accepted = 0;
    for round in 0..20_000 {
        let mut r = good();
        // Mutate a few fields of a valid record (or start from noise).
        if round % 10 == 0 {
            let mut b = [0u8; RECORD_SIZE];
            b.iter_mut().for_each(|x| *x = rng.next() as u8);
            b[..4].copy_from_slice(&KP_MAGIC_VERSION.to_le_bytes());
            r = KernelAssetInfo::from_bytes(&b).unwrap();
        }
        for _ in 0..(rng.next() % 3) {
            let ty = RegionType::ALL[(rng.next() % 5) as usize];
            let old = r.region(ty);
            let (start, size) = match rng.next() % 3 {
                0 => (rng.value(), old.size()),
                1 => (old.start(), rng.value()),
                _ => (rng.value(), rng.value()),
            };
            r.set_region(ty, Region::new(start, size));
        }
        let ram = if round % 7 == 0 {
            (rng.value(), rng.value())
        } else {
            RAM
        };
        if let Ok(l) = r.validate(ram) {
            accepted += 1;
            // Whatever is accepted really satisfies the rules.
            assert_eq!(l.to_record(), r);
            for ty in RegionType::IPA {
                let s = l.span(ty).unwrap();
                assert!(s.start() % 4096 == 0 && s.size() % 4096 == 0);
                assert!(s.start() >= ram.0 && s.end() <= ram.1);
            }
            for a in RegionType::IPA {
                for b in RegionType::IPA {
                    if a != b {
                        assert!(!l.span(a).unwrap().overlaps(&l.span(b).unwrap()));
                    }
                }
            }
        }
        let _ = r.check_shape();
        let mut c = Collector::new();
        for _ in 0..8 {
            let _ = c.add(rng.value() % 7, rng.value(), rng.value(), ram);
        }
    }
    assert!(accepted > 100, "only {accepted} accepted");
}
