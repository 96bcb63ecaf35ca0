// SPDX-License-Identifier: GPL-2.0 OR MIT
//! ABI constants, region-type decoding and error codes.

use super::*;

#[test]
fn function_ids_are_the_seeds() {
    assert_eq!(ASSET_INFO, 0xC606_005F);
    assert_eq!(ENABLE_VM_PROTECTION, 0xC606_0060);
    assert_eq!(ASSET_INFO_COMPACT, 0xC606_0061);
    assert_eq!(PROTECT_VM_ASSETS_HVC_IMM, 0x6094);
    assert_eq!(KP_MAGIC_VERSION, 0xF1000);
    for fid in FUNCTION_IDS {
        // SMCCC fast call, SMC64 convention, owner 6 (vendor hypervisor).
        assert_eq!(fid >> 31, 1);
        assert_eq!((fid >> 30) & 1, 1);
        assert_eq!((fid >> 24) & 0x3f, 6);
    }
}

#[test]
fn region_types_round_trip() {
    for (i, ty) in RegionType::ALL.into_iter().enumerate() {
        assert_eq!(ty.index(), i);
        assert_eq!(ty.as_raw(), i as u64);
        assert_eq!(RegionType::try_from(i as u64), Ok(ty));
        assert_eq!(region_index(i as u64), Some(i));
    }
    assert_eq!(RegionType::IPA.len(), 4);
    assert!(RegionType::IPA.iter().all(|t| t.is_ipa()));
    assert!(!RegionType::FixmapTextPoke0.is_ipa());
    assert_eq!(RegionType::FixmapTextPoke0.to_string(), "FIXMAP_TEXT_POKE0");
}

#[test]
fn region_types_above_four_are_refused() {
    let bad = [
        5,
        6,
        7,
        8,
        0xff,
        0x100,
        0x1_0000_0000,
        (1 << 63) - 1,
        1 << 63,
        (1 << 63) + 1,
        (1 << 63) + 4,
        u64::MAX - 1,
        u64::MAX,
    ];
    for raw in bad {
        assert_eq!(region_index(raw), None, "{raw:#x}");
        assert_eq!(RegionType::try_from(raw), Err(InvalidRegionType(raw)));
    }
    assert_eq!(
        KpError::from(InvalidRegionType(9)),
        KpError::ArgumentInvalid
    );
}

#[test]
fn index_mask_matches_comparison() {
    let lens = [0u64, 1, 2, 5, 8, 255, 1 << 32, (1 << 63) - 1, 1 << 63];
    let idxs = [
        0u64,
        1,
        2,
        3,
        4,
        5,
        7,
        8,
        254,
        255,
        256,
        1 << 32,
        (1 << 63) - 2,
        (1 << 63) - 1,
        1 << 63,
        u64::MAX,
    ];
    for len in lens {
        for idx in idxs {
            let expect = idx < len;
            let mask = index_mask(idx, len);
            assert!(mask == 0 || mask == u64::MAX);
            assert_eq!(mask == u64::MAX, expect, "idx {idx:#x} len {len:#x}");
        }
    }
    for idx in 0..64u64 {
        assert_eq!(index_nospec(idx, 8), (idx < 8).then_some(idx as usize));
        assert_eq!(index_nospec(idx, 0), None);
    }
}

#[test]
fn index_nospec_above_half_range_refuses() {
    // Documented limit: a len above 2^63 counts as 2^63.
    for len in [usize::MAX, (1 << 63) + 1, 1 << 63] {
        assert_eq!(index_nospec(1 << 63, len), None);
        assert_eq!(index_nospec(u64::MAX, len), None);
        assert_eq!(index_nospec((1 << 63) - 1, len), Some((1 << 63) - 1));
        assert_eq!(index_nospec(5, len), Some(5));
        assert_eq!(index_nospec(0, len), Some(0));
    }
}

#[test]
fn protections() {
    assert_eq!(RegionType::Text.protection(), Some(Protection::ReadExecute));
    assert_eq!(RegionType::Rodata.protection(), Some(Protection::ReadOnly));
    assert_eq!(RegionType::Data.protection(), Some(Protection::ReadWrite));
    assert_eq!(RegionType::Bss.protection(), Some(Protection::ReadWrite));
    assert_eq!(RegionType::FixmapTextPoke0.protection(), None);
    for ty in RegionType::IPA {
        let p = ty.protection().unwrap();
        // W^X: nothing reported is both writable and executable.
        assert!(!(p.writable() && p.executable()), "{ty}");
    }
    assert!(!Protection::ReadExecute.writable());
    assert!(!Protection::ReadOnly.writable() && !Protection::ReadOnly.executable());
    assert!(!Protection::ReadWrite.executable());
}

const CODES: [(KpError, u64, &str); 9] = [
    (KpError::Unimplemented, u64::MAX, "UNIMPLEMENTED"),
    (KpError::ArgumentInvalid, 1, "ARGUMENT_INVALID"),
    (KpError::ArgumentSize, 2, "ARGUMENT_SIZE"),
    (KpError::ArgumentAlignment, 3, "ARGUMENT_ALIGNMENT"),
    (KpError::AddrInvalid, 22, "ADDR_INVALID"),
    (KpError::Denied, 30, "DENIED"),
    (KpError::Busy, 31, "BUSY"),
    (KpError::ObjectState, 33, "OBJECT_STATE"),
    (KpError::ObjectConfigured, 35, "OBJECT_CONFIGURED"),
];

#[test]
fn error_codes_round_trip() {
    assert_eq!(KpError::from_raw(0), Ok(()));
    assert_eq!(KpError::encode(Ok(())), 0);
    for (e, raw, name) in CODES {
        assert_eq!(e.as_raw(), raw);
        assert_eq!(u64::from(e), raw);
        assert_eq!(KpError::from_raw(raw), Err(e));
        assert_eq!(KpError::encode(Err(e)), raw);
        assert_eq!(e.name(), name);
        assert_eq!(e.to_string(), name);
    }
    assert_eq!(KpError::Unimplemented.as_raw() as i64, -1);
}

#[test]
fn unknown_codes_are_kept_and_never_success() {
    let known: Vec<u64> = CODES.iter().map(|c| c.1).collect();
    for raw in [
        4u64,
        21,
        23,
        32,
        34,
        36,
        0x100,
        -2i64 as u64,
        -3i64 as u64,
        1 << 63,
    ] {
        assert!(!known.contains(&raw));
        match KpError::from_raw(raw) {
            Err(KpError::Unknown(code)) => {
                assert_eq!(code.get(), raw);
                assert_eq!(KpError::Unknown(code).as_raw(), raw);
                assert_ne!(KpError::Unknown(code).as_raw(), RET_OK);
            }
            other => panic!("{raw:#x} decoded as {other:?}"),
        }
    }
    let Err(e) = KpError::from_raw(-3i64 as u64) else {
        panic!()
    };
    assert_eq!(e.to_string(), "UNKNOWN(0xfffffffffffffffd)");
    assert_eq!(e.name(), "UNKNOWN");
}
