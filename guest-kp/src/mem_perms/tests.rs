// SPDX-License-Identifier: GPL-2.0 OR MIT
//! Host tests of the page-permissions ABI: the wire layout, every rule an
//! entry obeys by itself, the code-log record and the policy parser.

use super::*;

const VA: u64 = 0xffff_8000_8000_0000;

/// An entry; EXEC entries run at `VA + start`.
fn entry(start: u64, size: u64, attrs: u64) -> Entry {
    let va = if attrs & ATTR_EXEC != 0 {
        VA.wrapping_add(start)
    } else {
        0
    };
    Entry {
        start,
        size,
        attrs,
        va,
    }
}

#[test]
fn function_ids_and_heki_values() {
    assert_eq!(MEM_PERMISSIONS, 0xC606_0062);
    assert_eq!(CODE_LOG, 0xC606_0065);
    assert_eq!(
        (ATTR_READ, ATTR_WRITE, ATTR_EXEC, ATTR_IMMUTABLE),
        (1, 2, 4, 8)
    );
    // Heki's four, and pvguard's JIT bit.
    assert_eq!(ATTR_JIT, 0x10);
    assert_eq!(ATTR_ALL, 0x1f);
}

#[test]
fn entries_are_32_little_endian_bytes() {
    let e = entry(0x4000_1000, 0x2000, ATTR_READ | ATTR_EXEC);
    let b = e.to_bytes();
    assert_eq!(b.len(), ENTRY_SIZE);
    assert_eq!(&b[..8], &0x4000_1000u64.to_le_bytes());
    assert_eq!(&b[8..16], &0x2000u64.to_le_bytes());
    assert_eq!(b[16], 5);
    assert_eq!(&b[24..], &(VA + 0x4000_1000).to_le_bytes());
    assert_eq!(Entry::from_bytes(&b), e);
}

#[test]
fn sites_are_16_little_endian_bytes() {
    let e = SiteEntry {
        site: VA + 0x124,
        label: VA + 0x200,
    };
    let b = e.to_bytes();
    assert_eq!(b.len(), SITE_SIZE);
    assert_eq!(&b[..8], &(VA + 0x124).to_le_bytes());
    assert_eq!(&b[8..], &(VA + 0x200).to_le_bytes());
    assert_eq!(SiteEntry::from_bytes(&b), e);
    assert_ne!(LOG_SITES, LOG_COPY);
}

#[test]
fn every_rule_of_an_entry() {
    let ok = entry(0x4000_0000, 0x1000, ATTR_READ | ATTR_EXEC | ATTR_IMMUTABLE);
    assert_eq!(ok.check(), Ok(()));
    let jit = entry(0x4000_0000, 0x1000, ATTR_READ | ATTR_EXEC | ATTR_JIT);
    assert_eq!(jit.check(), Ok(()));
    let cases = [
        (
            entry(0x4000_0800, 0x1000, ATTR_READ),
            EntryError::Misaligned,
        ),
        (entry(0x4000_0000, 0x800, ATTR_READ), EntryError::Misaligned),
        (entry(0x4000_0000, 0, ATTR_READ), EntryError::Empty),
        (
            entry(u64::MAX - 0xfff, 0x2000, ATTR_READ),
            EntryError::Wraps,
        ),
        (entry(0x4000_0000, 0x1000, 1 << 5), EntryError::UnknownAttrs),
        (
            entry(0x4000_0000, 0x1000, ATTR_READ | ATTR_JIT),
            EntryError::Jit,
        ),
        (
            entry(
                0x4000_0000,
                0x1000,
                ATTR_READ | ATTR_EXEC | ATTR_IMMUTABLE | ATTR_JIT,
            ),
            EntryError::Jit,
        ),
        (
            entry(0x4000_0000, 0x1000, u64::MAX),
            EntryError::UnknownAttrs,
        ),
        (
            entry(0x4000_0000, 0x1000, ATTR_WRITE),
            EntryError::NotReadable,
        ),
        (entry(0x4000_0000, 0x1000, 0), EntryError::NotReadable),
        (
            entry(0x4000_0000, 0x1000, ATTR_READ | ATTR_WRITE | ATTR_EXEC),
            EntryError::WriteExec,
        ),
    ];
    let with_va = |va| Entry { va, ..ok };
    let cases = cases.into_iter().chain([
        (with_va(0), EntryError::Va),
        (with_va(0x4000_0000), EntryError::Va),
        (with_va(VA + 0x800), EntryError::Va),
        (with_va(u64::MAX - 0xfff), EntryError::Va),
        (
            Entry {
                va: VA,
                ..entry(0x4000_0000, 0x1000, ATTR_READ)
            },
            EntryError::Va,
        ),
    ]);
    for (e, want) in cases {
        assert_eq!(e.check(), Err(want), "{e:?}");
    }
    assert_eq!(EntryError::WriteExec.kp_error(), KpError::Denied);
    assert_eq!(
        EntryError::Misaligned.kp_error(),
        KpError::ArgumentAlignment
    );
    assert_eq!(EntryError::Wraps.kp_error(), KpError::AddrInvalid);
}

#[test]
fn overlap_is_by_page() {
    let a = entry(0x1000, 0x2000, ATTR_READ);
    assert!(a.overlaps(&entry(0x2000, 0x1000, ATTR_READ)));
    assert!(!a.overlaps(&entry(0x3000, 0x1000, ATTR_READ)));
    assert!(!a.overlaps(&entry(0, 0x1000, ATTR_READ)));
}

#[test]
fn log_records_name_kind_range_and_digest() {
    let r = log_record(LOG_EXEC, 0x4000_0000, 0x3000, VA, &[0xab; 32]);
    assert_eq!(r.len(), LOG_RECORD_SIZE);
    assert_eq!(r[0], LOG_EXEC);
    assert_eq!(&r[1..9], &0x4000_0000u64.to_le_bytes());
    assert_eq!(&r[9..17], &0x3000u64.to_le_bytes());
    assert_eq!(&r[17..25], &VA.to_le_bytes());
    assert_eq!(&r[25..], &[0xab; 32]);
}

#[test]
fn policy_from_the_command_line_only_tightens() {
    use Policy::*;
    assert_eq!(Policy::from_cmdline(b"console=ttyAMA0 pvguard=on"), Measure);
    assert_eq!(Policy::from_cmdline(b"pvguard_code=measure"), Measure);
    assert_eq!(Policy::from_cmdline(b"pvguard_code=lock quiet"), Lock);
    assert_eq!(Policy::from_cmdline(b"pvguard_code=image"), ImageOnly);
    // Appending cannot weaken.
    assert_eq!(
        Policy::from_cmdline(b"pvguard_code=lock pvguard_code=measure"),
        Lock
    );
    assert_eq!(
        Policy::from_cmdline(b"pvguard_code=measure pvguard_code=image"),
        Measure
    );
    // Unknown values are the strictest; look-alike names are not it.
    assert_eq!(Policy::from_cmdline(b"pvguard_code=mesure"), Lock);
    assert_eq!(Policy::from_cmdline(b"pvguard_code="), Lock);
    assert_eq!(Policy::from_cmdline(b"pvguard_codex=measure"), Measure);
    assert_eq!(Policy::from_cmdline(b"xpvguard_code=lock"), Measure);
    // An explicit image is honoured (it is the only weaker choice).
    assert_eq!(
        Policy::from_cmdline(b"pvguard=on pvguard_code=image"),
        ImageOnly
    );
    // A NUL-terminated property from a device tree.
    assert_eq!(Policy::from_cmdline(b"pvguard_code=measure\0"), Measure);
    assert!(!ImageOnly.default_deny() && Measure.default_deny() && Lock.default_deny());
}

#[test]
fn lists_coalesce_contiguous_pages_with_equal_attributes() {
    let mut l = List::new();
    let rx = ATTR_READ | ATTR_EXEC;
    for ipa in [
        0x4000_0000,
        0x4000_1000,
        0x4000_2000,
        0x4100_0000,
        0x4100_1000,
    ] {
        l.push_page(ipa, VA + ipa, rx).unwrap();
    }
    l.push_page(0x4100_2000, VA, ATTR_READ).unwrap();
    assert_eq!(
        l.entries(),
        &[
            entry(0x4000_0000, 0x3000, rx),
            entry(0x4100_0000, 0x2000, rx),
            entry(0x4100_2000, 0x1000, ATTR_READ),
        ],
        "the va of a non-EXEC page is dropped"
    );
    let mut buf = [0u8; MAX_ENTRIES * ENTRY_SIZE];
    assert_eq!(l.write_to(&mut buf), 3 * ENTRY_SIZE);
    let mut first = [0u8; ENTRY_SIZE];
    first.copy_from_slice(&buf[..ENTRY_SIZE]);
    assert_eq!(Entry::from_bytes(&first), l.entries()[0]);
    assert_eq!(l.write_to(&mut buf[..ENTRY_SIZE + 1]), ENTRY_SIZE);
    // Contiguous in IPA but not in VA: a new run.
    l.push_page(0x4100_3000, VA + 0x10_0000, rx).unwrap();
    l.push_page(0x4100_4000, VA + 0x10_1000, rx).unwrap();
    l.push_page(0x4100_5000, VA, rx).unwrap();
    assert_eq!(l.entries().len(), 5);
    assert_eq!(
        l.entries()[3],
        Entry {
            start: 0x4100_3000,
            size: 0x2000,
            attrs: rx,
            va: VA + 0x10_0000
        }
    );
    assert!(l.entries().iter().all(|e| e.check().is_ok()));
}

#[test]
fn a_full_list_refuses_a_new_run_but_extends_the_last() {
    let mut l = List::new();
    for i in 0..MAX_ENTRIES as u64 {
        l.push_page(0x4000_0000 + i * 0x2000, 0, ATTR_READ).unwrap();
    }
    let last = 0x4000_0000 + (MAX_ENTRIES as u64 - 1) * 0x2000;
    assert_eq!(l.push_page(0x5000_0000, 0, ATTR_READ), Err(ListFull));
    assert_eq!(l.push_page(last + 0x1000, 0, ATTR_READ), Ok(()));
    assert_eq!(l.entries().len(), MAX_ENTRIES);
    l.clear();
    assert!(l.is_empty());
}

#[test]
fn answers_decode_with_the_entry_they_are_about() {
    assert_eq!(decode_answer([0, 0, 3, 0xabcd]), Ok(3));
    assert_eq!(
        decode_answer([30, 2, 0, 0]),
        Err((KpError::Denied, Some(2)))
    );
    assert_eq!(
        decode_answer([33, NO_ENTRY, 0, 0]),
        Err((KpError::ObjectState, None))
    );
}

/// Answers CODE_LOG from a digest, adding a record after the first
/// `grow` low halves.
struct Log {
    digest: [u8; 32],
    records: u64,
    grow: u32,
}

impl crate::guest::Hypercall for Log {
    fn call(&mut self, fid: u32, args: [u64; 4]) -> [u64; 4] {
        assert_eq!(fid, CODE_LOG);
        let word = |i: usize| u64::from_be_bytes(self.digest[i * 8..i * 8 + 8].try_into().unwrap());
        let r = match args[0] {
            0 => [0, word(0), word(1), self.records],
            1 => [0, word(2), word(3), self.records],
            _ => [KpError::ArgumentInvalid.as_raw(), 0, 0, 0],
        };
        if args[0] == 0 && self.grow > 0 {
            self.grow -= 1;
            self.records += 1;
        }
        r
    }
}

#[test]
fn the_code_log_is_read_whole() {
    let mut digest = [0u8; 32];
    for (i, b) in digest.iter_mut().enumerate() {
        *b = i as u8;
    }
    let mut hv = Log {
        digest,
        records: 7,
        grow: 0,
    };
    assert_eq!(read_code_log(&mut hv), Ok((digest, 7)));
    let mut hv = Log {
        digest,
        records: 7,
        grow: 1,
    };
    assert_eq!(read_code_log(&mut hv), Ok((digest, 8)), "retried once");
    let mut hv = Log {
        digest,
        records: 7,
        grow: 9,
    };
    assert_eq!(read_code_log(&mut hv), Err(KpError::Busy));
}
