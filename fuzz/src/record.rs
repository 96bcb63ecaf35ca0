// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The `kernel_asset_info` parser and its region-by-region twin, checked
//! against a reference written here from the ABI's rules: whatever the
//! bytes, the parser accepts exactly the records the rules allow, gives
//! back the bytes it was given, and the region-by-region path accepts
//! the same layouts in any order.

use arbitrary::Arbitrary;
use guest_kp::abi::{self, KpError, RegionType, KP_MAGIC_VERSION, RECORD_SIZE, REGION_SLOTS};
use guest_kp::record::{
    record_placement, Collector, KernelAssetInfo, FIXMAP_SLOT_SIZES, KERNEL_VA_MIN,
};
use hyp_stub::boot::RAM_BASE;

use crate::machine::{FIXMAP_VA, IMAGE, RAM_END};

const PAGE: u64 = abi::PAGE_SIZE;

/// A slot field, drawn from where valid values lie.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Field {
    /// Zero.
    Zero,
    /// A page of the image area, as a start.
    Page(u16),
    /// A page count, as a size.
    Pages(u8),
    /// The fixmap slot's VA, give or take.
    FixmapVa(i16),
    /// A guest page size.
    SlotSize(u8),
    /// Just below 2^64.
    NearTop(u16),
    /// Anything.
    Raw(u64),
}

impl Field {
    fn get(self) -> u64 {
        match self {
            Field::Zero => 0,
            Field::Page(n) => IMAGE + u64::from(n) * PAGE - 64 * PAGE,
            Field::Pages(n) => u64::from(n) * PAGE,
            Field::FixmapVa(d) => FIXMAP_VA.wrapping_add_signed(i64::from(d) * 0x400),
            Field::SlotSize(i) => FIXMAP_SLOT_SIZES[usize::from(i) % 3],
            Field::NearTop(d) => u64::MAX - u64::from(d),
            Field::Raw(v) => v,
        }
    }
}

/// A record, or raw bytes.
#[derive(Arbitrary, Clone, Debug)]
pub struct Input {
    /// The version is the magic (else `version_raw`).
    magic: bool,
    version_raw: u32,
    slots: [(Field, Field); REGION_SLOTS],
    /// Raw bytes instead of the fields.
    raw: Option<[u8; RECORD_SIZE]>,
    /// Guest RAM: the board's, or anything.
    ram: Option<(u64, u64)>,
    /// The order in which the region-by-region path sends the regions,
    /// and extra raw calls after.
    order: [u8; 5],
    extra: Vec<(u64, u64, u64)>,
    /// Where the guest placed the record.
    placed_at: u64,
}

impl Input {
    fn bytes(&self) -> [u8; RECORD_SIZE] {
        if let Some(raw) = self.raw {
            return raw;
        }
        let mut b = [0u8; RECORD_SIZE];
        let version = if self.magic {
            KP_MAGIC_VERSION
        } else {
            self.version_raw
        };
        b[..4].copy_from_slice(&version.to_le_bytes());
        for (i, (s, z)) in self.slots.iter().enumerate() {
            let off = 4 + i * 16;
            b[off..off + 8].copy_from_slice(&s.get().to_le_bytes());
            b[off + 8..off + 16].copy_from_slice(&z.get().to_le_bytes());
        }
        b
    }
}

fn slot(bytes: &[u8; RECORD_SIZE], i: usize) -> (u64, u64) {
    let off = 4 + i * 16;
    let word = |o: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[o..o + 8]);
        u64::from_le_bytes(w)
    };
    (word(off), word(off + 8))
}

/// The ABI's rules, from the design document, for one IPA region.
fn ipa_region_ok(start: u64, size: u64, ram: (u64, u64)) -> Option<(u64, u64)> {
    let end = start.checked_add(size)?;
    (size != 0
        && start.is_multiple_of(PAGE)
        && size.is_multiple_of(PAGE)
        && start >= ram.0
        && end <= ram.1)
        .then_some((start, end))
}

fn fixmap_ok(va: u64, size: u64) -> bool {
    FIXMAP_SLOT_SIZES.contains(&size)
        && va.is_multiple_of(size)
        && va.checked_add(size).is_some()
        && va >= KERNEL_VA_MIN
}

/// Whether the rules accept `bytes` with guest RAM `ram`.
pub fn reference_accepts(bytes: &[u8; RECORD_SIZE], ram: (u64, u64)) -> bool {
    let version = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if version != KP_MAGIC_VERSION {
        return false;
    }
    if (5..REGION_SLOTS).any(|i| slot(bytes, i) != (0, 0)) {
        return false;
    }
    let mut spans = Vec::new();
    for i in 0..4 {
        let (s, z) = slot(bytes, i);
        match ipa_region_ok(s, z, ram) {
            Some(span) => spans.push(span),
            None => return false,
        }
    }
    let (va, size) = slot(bytes, 4);
    if !fixmap_ok(va, size) {
        return false;
    }
    for (i, a) in spans.iter().enumerate() {
        for b in &spans[i + 1..] {
            if a.0 < b.1 && b.0 < a.1 {
                return false;
            }
        }
    }
    true
}

fn defined(e: KpError) -> bool {
    !matches!(e, KpError::Unknown(_))
}

/// Runs one input.
pub fn run(input: &Input) {
    let bytes = input.bytes();
    let ram = input.ram.unwrap_or((RAM_BASE, RAM_END));
    let parsed = KernelAssetInfo::from_bytes(&bytes);
    let version_ok = bytes[..4] == KP_MAGIC_VERSION.to_le_bytes();
    assert_eq!(parsed.is_ok(), version_ok, "version check");
    let expected = reference_accepts(&bytes, ram);
    let layout = match parsed {
        Ok(rec) => {
            assert_eq!(rec.to_bytes(), bytes, "the record does not round-trip");
            let v = rec.validate(ram);
            assert_eq!(
                v.is_ok(),
                expected,
                "validate disagrees with the rules: {v:?}"
            );
            match v {
                Ok(layout) => {
                    assert_eq!(layout.to_record().to_bytes(), bytes, "layout loses fields");
                    assert_eq!(rec.check_shape(), Ok(layout));
                    for ty in RegionType::IPA {
                        let span = layout.span(ty).expect("IPA region");
                        assert_eq!(layout.region_of(span.start()), Some(ty));
                        assert_eq!(layout.region_of(span.end() - 1), Some(ty));
                    }
                    Some(layout)
                }
                Err(e) => {
                    assert!(defined(e.kp_error()), "{e:?} has no defined code");
                    None
                }
            }
        }
        Err(e) => {
            assert!(defined(e.kp_error()));
            None
        }
    };
    collector(input, &bytes, ram, layout);
    let ipa = input.placed_at;
    let fits = (ipa % PAGE) + RECORD_SIZE as u64 <= PAGE;
    let inside = ipa >= ram.0
        && ipa
            .checked_add(RECORD_SIZE as u64)
            .is_some_and(|e| e <= ram.1);
    assert_eq!(
        record_placement(ipa, ram).is_ok(),
        fits && inside,
        "placement"
    );
}

/// The region-by-region path, in the input's order, agrees with the
/// compact one; refused calls change nothing.
fn collector(
    input: &Input,
    bytes: &[u8; RECORD_SIZE],
    ram: (u64, u64),
    layout: Option<guest_kp::record::Layout>,
) {
    let mut c = Collector::new();
    let mut order = [0usize, 1, 2, 3, 4];
    for (i, &k) in input.order.iter().enumerate() {
        order.swap(i, usize::from(k) % 5);
    }
    let mut done = None;
    let mut refused = false;
    for ty in order {
        let (s, z) = slot(bytes, ty);
        let before = c;
        match c.add(ty as u64, s, z, ram) {
            Ok(Some(l)) => done = Some(l),
            Ok(None) => {}
            Err(e) => {
                assert_eq!(c, before, "a refused region changed the collector");
                assert!(defined(e.kp_error()));
                refused = true;
            }
        }
    }
    let reserved_zero = (5..REGION_SLOTS).all(|i| slot(bytes, i) == (0, 0));
    if bytes[..4] == KP_MAGIC_VERSION.to_le_bytes() && reserved_zero {
        assert_eq!(done, layout, "the two reporting paths disagree");
        assert_eq!(refused, layout.is_none());
    }
    for &(ty, s, z) in input.extra.iter().take(8) {
        let before = c;
        let r = c.add(ty, s, z, ram);
        if ty >= 5 {
            assert!(r.is_err() && c == before, "region type {ty} accepted");
        }
        if r.is_err() {
            assert_eq!(c, before);
        }
        if let Ok(idx) = usize::try_from(ty) {
            assert_eq!(abi::index_nospec(ty, 5), (idx < 5).then_some(idx));
        }
    }
}
