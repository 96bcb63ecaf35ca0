// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The builder against arm64 6.12 layouts, with and without
//! `CONFIG_KVM`, and every way section bounds can be inconsistent.

use super::super::abi::RegionType::*;
use super::*;

const FIXMAP: u64 = 0xffff_ffff_fe7f_b000;
const RAM: (u64, u64) = (0x4000_0000, 0x8000_0000);

/// `CONFIG_KVM=y`: `__bss_start` is page aligned (`SBSS_ALIGN`).
fn kvm() -> Builder {
    Builder {
        text: (0x4020_0000, 0x4100_0000),
        rodata: (0x4100_0000, 0x4150_0000),
        data: (0x4180_0000, 0x4184_3a18),
        bss: (0x4184_4000, 0x418a_1238),
        fixmap_va: FIXMAP,
        fixmap_size: 4096,
    }
}

/// `CONFIG_KVM=n` (tinyconfig): `__bss_start` follows `_edata` directly.
fn tiny() -> Builder {
    Builder {
        bss: (0x4184_3a40, 0x418a_1238),
        ..kvm()
    }
}

fn spans(b: &Builder) -> [(u64, u64); 4] {
    let l = b.build().unwrap().validate(RAM).unwrap();
    [l.text(), l.rodata(), l.data(), l.bss()].map(|s| (s.start(), s.end()))
}

#[test]
fn kvm_layout() {
    let s = spans(&kvm());
    assert_eq!(s[0], (0x4020_0000, 0x4100_0000));
    assert_eq!(s[1], (0x4100_0000, 0x4150_0000));
    // `_edata` and `__bss_stop` rounded up.
    assert_eq!(s[2], (0x4180_0000, 0x4184_4000));
    assert_eq!(s[3], (0x4184_4000, 0x418a_2000));
    let rec = kvm().build().unwrap();
    assert_eq!(rec.region(FixmapTextPoke0), Region::new(FIXMAP, 4096));
}

#[test]
fn tiny_layout_gives_the_shared_page_to_data() {
    let s = spans(&tiny());
    assert_eq!(s[2], (0x4180_0000, 0x4184_4000));
    // BSS's first bytes live in DATA's last page.
    assert_eq!(s[3], (0x4184_4000, 0x418a_2000));
    // Everything of the real sections is covered.
    let b = tiny();
    assert!(s[2].0 <= b.data.0 && b.data.1 <= s[2].1);
    assert!(s[2].0 <= b.bss.0 && b.bss.1 <= s[3].1);
}

#[test]
fn exact_page_bounds_are_kept() {
    let b = Builder {
        data: (0x4180_0000, 0x4184_0000),
        bss: (0x4184_0000, 0x4190_0000),
        ..kvm()
    };
    let s = spans(&b);
    assert_eq!(s[2], (0x4180_0000, 0x4184_0000));
    assert_eq!(s[3], (0x4184_0000, 0x4190_0000));
}

#[test]
fn reversed_and_empty_sections() {
    for ty in [Text, Rodata, Data, Bss] {
        let mut b = kvm();
        let sec = match ty {
            Text => &mut b.text,
            Rodata => &mut b.rodata,
            Data => &mut b.data,
            _ => &mut b.bss,
        };
        let (start, end) = *sec;
        *sec = (end, start);
        assert_eq!(b.build(), Err(RecordError::EndBeforeStart(ty)));
        let mut b = kvm();
        match ty {
            Text => b.text.1 = b.text.0,
            Rodata => b.rodata.1 = b.rodata.0,
            Data => b.data.1 = b.data.0,
            _ => b.bss.1 = b.bss.0,
        }
        assert_eq!(b.build(), Err(RecordError::ZeroSize(ty)));
    }
}

#[test]
fn out_of_order() {
    let b = Builder {
        rodata: (0x40ff_0000, 0x4150_0000),
        ..kvm()
    };
    assert_eq!(
        b.build(),
        Err(RecordError::OutOfOrder {
            earlier: Text,
            later: Rodata
        })
    );
    let b = Builder {
        data: (0x414f_f000, 0x4184_3a18),
        ..kvm()
    };
    assert_eq!(
        b.build(),
        Err(RecordError::OutOfOrder {
            earlier: Rodata,
            later: Data
        })
    );
    let b = Builder {
        bss: (0x4184_3a00, 0x418a_1238),
        ..kvm()
    };
    assert_eq!(
        b.build(),
        Err(RecordError::OutOfOrder {
            earlier: Data,
            later: Bss
        })
    );
    // Completely swapped sections.
    let k = kvm();
    let b = Builder {
        text: k.rodata,
        rodata: k.text,
        ..k
    };
    assert_eq!(
        b.build(),
        Err(RecordError::OutOfOrder {
            earlier: Text,
            later: Rodata
        })
    );
}

#[test]
fn misaligned_starts_are_refused_not_rounded() {
    let k = kvm();
    let cases = [
        (
            Builder {
                text: (k.text.0 + 0x800, k.text.1),
                ..k
            },
            RecordError::StartMisaligned(Text),
        ),
        (
            Builder {
                rodata: (k.rodata.0 + 8, k.rodata.1),
                ..k
            },
            RecordError::StartMisaligned(Rodata),
        ),
        (
            Builder {
                data: (k.data.0 + 0x40, k.data.1),
                ..k
            },
            RecordError::StartMisaligned(Data),
        ),
        (
            Builder {
                text: (k.text.0, k.text.1 - 0x10),
                ..k
            },
            RecordError::EndMisaligned(Text),
        ),
        (
            Builder {
                rodata: (k.rodata.0, k.rodata.1 - 0x10),
                ..k
            },
            RecordError::EndMisaligned(Rodata),
        ),
        // BSS starting misaligned in a page DATA does not reach.
        (
            Builder {
                bss: (0x4184_4040, 0x418a_1238),
                ..k
            },
            RecordError::StartMisaligned(Bss),
        ),
        (
            Builder {
                data: (k.data.0, 0x4184_4000),
                bss: (0x4184_4040, 0x418a_1238),
                ..k
            },
            RecordError::StartMisaligned(Bss),
        ),
    ];
    for (b, e) in cases {
        assert_eq!(b.build(), Err(e), "{b:?}");
    }
}

#[test]
fn bss_inside_the_shared_page_is_empty() {
    let b = Builder {
        bss: (0x4184_3a40, 0x4184_3f00),
        ..kvm()
    };
    assert_eq!(b.build(), Err(RecordError::ZeroSize(Bss)));
    // Ending exactly at the page boundary: still nothing left for BSS.
    let b = Builder {
        bss: (0x4184_3a40, 0x4184_4000),
        ..kvm()
    };
    assert_eq!(b.build(), Err(RecordError::ZeroSize(Bss)));
    // One byte into the next page: BSS gets that page.
    let b = Builder {
        bss: (0x4184_3a40, 0x4184_4001),
        ..kvm()
    };
    assert_eq!(spans(&b)[3], (0x4184_4000, 0x4184_5000));
}

#[test]
fn rounding_that_wraps() {
    let top = u64::MAX - 0x10;
    let b = Builder {
        data: (0xffff_ffff_ffff_0000, top),
        bss: (top, u64::MAX),
        ..kvm()
    };
    assert_eq!(b.build(), Err(RecordError::Wraps(Data)));
    let b = Builder {
        data: (0xffff_ffff_fffe_0000, 0xffff_ffff_ffff_0000),
        bss: (0xffff_ffff_ffff_0000, u64::MAX),
        ..kvm()
    };
    assert_eq!(b.build(), Err(RecordError::Wraps(Bss)));
    let b = Builder {
        data: (0xffff_ffff_fffe_0000, 0xffff_ffff_ffff_0010),
        bss: (0xffff_ffff_ffff_f010, u64::MAX),
        ..kvm()
    };
    assert_eq!(b.build(), Err(RecordError::Wraps(Bss)));
}

#[test]
fn fixmap_is_checked_before_sending() {
    let b = Builder {
        fixmap_va: FIXMAP + 8,
        ..kvm()
    };
    assert_eq!(
        b.build(),
        Err(RecordError::StartMisaligned(FixmapTextPoke0))
    );
    let b = Builder {
        fixmap_size: 0,
        ..kvm()
    };
    assert_eq!(b.build(), Err(RecordError::ZeroSize(FixmapTextPoke0)));
    let b = Builder {
        fixmap_size: 8192,
        ..kvm()
    };
    assert_eq!(b.build(), Err(RecordError::FixmapSize { size: 8192 }));
    // A physical address passed by mistake.
    let b = Builder {
        fixmap_va: 0x4000_0000,
        ..kvm()
    };
    assert_eq!(
        b.build(),
        Err(RecordError::FixmapNotKernelVa { va: 0x4000_0000 })
    );
    // 64 KiB pages.
    let b = Builder {
        fixmap_va: 0xffff_ffff_fe7f_0000,
        fixmap_size: 0x1_0000,
        ..kvm()
    };
    assert!(b.build().is_ok());
}

#[test]
fn never_panics_and_covers_the_sections() {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut ok = 0;
    for _ in 0..50_000 {
        // Increasing bounds (mostly), with random small gaps.
        let mut at = match next() % 4 {
            0 => next(),
            1 => u64::MAX - (next() % 0x10_0000),
            _ => 0x4020_0000,
        };
        let mut bound = |next: &mut dyn FnMut() -> u64| {
            let step = match next() % 8 {
                0 => 0,
                1 => next() % 0x2000,
                _ => (1 + next() % 0x100) << 12,
            };
            at = at.saturating_add(step);
            at
        };
        let mut sec = |next: &mut dyn FnMut() -> u64| (bound(next), bound(next));
        let b = Builder {
            text: sec(&mut next),
            rodata: sec(&mut next),
            data: sec(&mut next),
            bss: sec(&mut next),
            fixmap_va: FIXMAP,
            fixmap_size: 4096,
        };
        if let Ok(rec) = b.build() {
            ok += 1;
            let l = rec.check_shape().unwrap();
            // Text and rodata are exactly what the kernel says.
            assert_eq!((l.text().start(), l.text().end()), b.text);
            assert_eq!((l.rodata().start(), l.rodata().end()), b.rodata);
            // Data and bss cover their sections and nothing past the
            // page holding `__bss_stop`.
            assert!(l.data().start() == b.data.0 && l.data().end() >= b.data.1);
            assert!(l.data().end() >= b.bss.0 || l.bss().start() <= b.bss.0);
            assert!(l.bss().end() >= b.bss.1 && l.bss().end() - b.bss.1 < 4096);
        }
    }
    assert!(ok > 100, "only {ok} accepted");
}
