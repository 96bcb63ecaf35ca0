// SPDX-License-Identifier: GPL-2.0 OR MIT
//! Host tests of the dynamic-code hooks against a hypervisor that keeps
//! per-page attributes and answers as hyp-stub does.

use std::collections::BTreeMap;
use std::vec::Vec;

use super::*;
use crate::guest_kp::mem_perms::{Entry, ENTRY_SIZE, NO_ENTRY};

const VA: u64 = 0xffff_8000_0100_0000;

/// Pages of a vmalloc range: scattered, two by two.
fn pa_of(va: u64) -> Option<u64> {
    let i = va.checked_sub(VA)? / PAGE;
    (i < 64).then(|| 0x4800_0000 + (i / 2) * 0x10_0000 + (i % 2) * PAGE)
}

#[derive(Default)]
struct Hyp {
    /// Attributes of pages that are not READ|WRITE.
    pages: BTreeMap<u64, u64>,
    staged: Vec<Entry>,
    calls: Vec<Vec<Entry>>,
    /// x3 and x4 of each call: the site list.
    sites: Vec<(u64, u64)>,
    policy_image: bool,
    lock: bool,
}

impl Channel for Hyp {
    fn stage(&mut self, list: &List) -> (u64, u64) {
        let mut bytes = [0u8; 4096];
        let n = list.write_to(&mut bytes);
        self.staged = bytes[..n]
            .chunks_exact(ENTRY_SIZE)
            .map(|c| Entry::from_bytes(c.try_into().unwrap()))
            .collect();
        (0x4000_1000, (n / ENTRY_SIZE) as u64)
    }
    fn call(&mut self, fid: u32, args: [u64; 4]) -> [u64; 4] {
        assert_eq!(fid, MEM_PERMISSIONS);
        assert_eq!(args[1] as usize, self.staged.len());
        let list = std::mem::take(&mut self.staged);
        self.calls.push(list.clone());
        self.sites.push((args[2], args[3]));
        if self.policy_image {
            return [KpError::ObjectState.as_raw(), NO_ENTRY, 0, 0];
        }
        for (i, e) in list.iter().enumerate() {
            assert_eq!(e.check(), Ok(()));
            let immutable = (e.start..e.end())
                .step_by(PAGE as usize)
                .any(|p| self.pages.get(&p).is_some_and(|a| a & ATTR_IMMUTABLE != 0));
            let denied =
                (immutable && e.attrs != ATTR_RELEASE) || (self.lock && e.attrs & ATTR_EXEC != 0);
            if denied {
                return [KpError::Denied.as_raw(), i as u64, 0, 0];
            }
        }
        for e in list {
            for p in (e.start..e.end()).step_by(PAGE as usize) {
                if e.attrs == ATTR_DEFAULT {
                    self.pages.remove(&p);
                } else {
                    self.pages.insert(p, e.attrs);
                }
            }
        }
        [0, 0, 0, 0]
    }
}

#[test]
fn a_module_life_cycle_in_few_calls() {
    let mut c = CodeState::new();
    let mut h = Hyp::default();
    // Text (6 pages in 3 physical runs) and init text, one call.
    let (text, init_text) = ((VA, 6), (VA + 12 * PAGE, 2));
    let sites = SiteList {
        ipa: 0x4000_2000,
        count: 3,
    };
    c.grant(&mut h, true, &module_text(text, init_text), sites, &pa_of)
        .unwrap();
    assert_eq!(h.calls.len(), 1);
    assert_eq!(h.sites[0], (0x4000_2000, 3), "the sites go with the text");
    assert_eq!(h.calls[0].len(), 4);
    assert_eq!(
        h.calls[0][1].va,
        VA + 2 * PAGE,
        "each run says where it runs"
    );
    assert_eq!(h.calls[0][0].attrs, ATTR_READ | ATTR_EXEC | ATTR_IMMUTABLE);
    assert_eq!(h.calls[0][3].attrs, ATTR_READ | ATTR_EXEC, "init text");
    assert_eq!(h.pages.len(), 8);
    // set_memory_rox of that text asks nothing more.
    c.apply(&mut h, true, Op::Exec, VA, 6, &pa_of).unwrap();
    c.apply(&mut h, true, Op::Exec, VA + 12 * PAGE, 2, &pa_of)
        .unwrap();
    // Data made non-executable (it never was): no call.
    c.apply(&mut h, true, Op::Release, VA + 10 * PAGE, 2, &pa_of)
        .unwrap();
    assert_eq!(h.calls.len(), 1);
    // Rodata and ro_after_init sealed after init, one call.
    c.grant(
        &mut h,
        true,
        &module_seal((VA + 8 * PAGE, 1), (VA + 9 * PAGE, 1)),
        SiteList::default(),
        &pa_of,
    )
    .unwrap();
    assert_eq!(h.calls.len(), 2);
    assert_eq!(h.sites[1], (0, 0));
    // The init text is freed: not immutable, straight to read/write.
    c.apply(&mut h, true, Op::Free, VA + 12 * PAGE, 2, &pa_of)
        .unwrap();
    assert_eq!(h.calls.len(), 3, "a load costs three calls");
    assert_eq!(h.calls[2][0].attrs, ATTR_DEFAULT);
    // Unload: the text is released first, then writable.
    c.apply(&mut h, true, Op::Free, VA, 6, &pa_of).unwrap();
    assert_eq!(h.calls.len(), 5);
    assert_eq!(
        h.calls[3][0].attrs, ATTR_RELEASE,
        "not executable before writable"
    );
    assert_eq!(h.calls[4][0].attrs, ATTR_DEFAULT);
    c.apply(&mut h, true, Op::Free, VA + 8 * PAGE, 2, &pa_of)
        .unwrap();
    assert!(h.pages.is_empty(), "everything back to read/write");
    assert_eq!(c.counts(), (7, 0), "nothing refused on the way");
    // Freeing data that never held code: no call.
    c.apply(&mut h, true, Op::Free, VA + 10 * PAGE, 2, &pa_of)
        .unwrap();
    assert_eq!(h.calls.len(), 7);
    // Other execmem code: set_memory_x, set_memory_nx, then freed.
    c.apply(&mut h, true, Op::Exec, VA + 20 * PAGE, 1, &pa_of)
        .unwrap();
    c.apply(&mut h, true, Op::Release, VA + 20 * PAGE, 1, &pa_of)
        .unwrap();
    c.apply(&mut h, true, Op::Free, VA + 20 * PAGE, 1, &pa_of)
        .unwrap();
    assert!(h.pages.is_empty());
}

#[test]
fn lock_fails_the_caller_and_changes_nothing() {
    let mut c = CodeState::new();
    let mut h = Hyp {
        lock: true,
        ..Hyp::default()
    };
    assert_eq!(
        c.apply(&mut h, true, Op::Exec, VA, 4, &pa_of),
        Err(CodeError::Refused(KpError::Denied))
    );
    assert!(h.pages.is_empty());
    assert_eq!(c.counts(), (1, 1));
    // Freeing the refused memory still works.
    c.apply(&mut h, true, Op::Free, VA, 4, &pa_of).unwrap();
}

#[test]
fn nothing_is_asked_before_protection_or_under_the_image_policy() {
    let mut c = CodeState::new();
    let mut h = Hyp {
        policy_image: true,
        ..Hyp::default()
    };
    c.apply(&mut h, false, Op::Exec, VA, 4, &pa_of).unwrap();
    assert!(h.calls.is_empty());
    c.apply(&mut h, true, Op::Exec, VA, 4, &pa_of).unwrap();
    c.apply(&mut h, true, Op::Exec, VA, 4, &pa_of).unwrap();
    assert_eq!(h.calls.len(), 1, "OBJECT_STATE once, then silence");
}

#[test]
fn unmapped_or_too_scattered_ranges_are_errors() {
    let mut c = CodeState::new();
    let mut h = Hyp::default();
    assert_eq!(
        c.apply(&mut h, true, Op::Exec, VA + 63 * PAGE, 2, &pa_of),
        Err(CodeError::NoPage(VA + 64 * PAGE))
    );
    // 130 pages one by one: 130 runs for EXEC is too many...
    let scattered = |va: u64| Some(0x4000_0000 + ((va - VA) / PAGE) * 2 * PAGE);
    assert_eq!(
        c.apply(&mut h, true, Op::Exec, VA, 130, &scattered),
        Err(CodeError::TooScattered)
    );
    assert!(h.calls.is_empty(), "nothing asked: all or nothing");
    // ...but other requests are split over calls.
    c.apply(&mut h, true, Op::Seal, VA, 130, &scattered)
        .unwrap();
    assert_eq!(h.calls.len(), 2);
    assert_eq!(Op::from_raw(3), Some(Op::Free));
    assert_eq!(Op::from_raw(4), Some(Op::Jit));
    assert_eq!(Op::from_raw(5), None);
}

#[test]
fn when_it_cannot_remember_it_always_asks() {
    let mut c = CodeState::new();
    let mut h = Hyp::default();
    let linear = |va: u64| Some(0x4000_0000 + (va - VA));
    for i in 0..=MAX_TRACKED as u64 {
        c.apply(&mut h, true, Op::Seal, VA + i * 2 * PAGE, 1, &linear)
            .unwrap();
    }
    let calls = h.calls.len();
    c.apply(&mut h, true, Op::Release, VA + PAGE, 1, &linear)
        .unwrap();
    assert_eq!(h.calls.len(), calls + 1, "untracked, but asked");
}

/// A BPF pack or kprobes slot page: remembered at allocation (no call),
/// made EXEC|JIT by its set_memory_x (not immutable: the hypervisor
/// fills it through the text-poke path), freed straight to read/write.
#[test]
fn jit_ranges_are_exec_jit_and_may_take_several_calls() {
    let mut c = CodeState::new();
    let mut h = Hyp::default();
    c.apply(&mut h, true, Op::Jit, VA, 16, &pa_of).unwrap();
    assert!(h.calls.is_empty(), "allocation costs no call");
    c.apply(&mut h, true, Op::Exec, VA, 16, &pa_of).unwrap();
    assert_eq!(h.calls.len(), 1);
    assert!(h.calls[0]
        .iter()
        .all(|e| e.attrs == ATTR_READ | ATTR_EXEC | ATTR_JIT));
    assert_eq!(h.pages.len(), 16);
    // Asked again (set_memory_rox of part of it): nothing more.
    c.apply(&mut h, true, Op::Exec, VA + PAGE, 2, &pa_of)
        .unwrap();
    assert_eq!(h.calls.len(), 1);
    // Freed: not immutable, one call back to read/write.
    c.apply(&mut h, true, Op::Free, VA, 16, &pa_of).unwrap();
    assert_eq!(h.calls.len(), 2);
    assert_eq!(h.calls[1][0].attrs, ATTR_DEFAULT);
    assert!(h.pages.is_empty());
    // A JIT allocation freed without ever being executable: no call.
    c.apply(&mut h, true, Op::Jit, VA, 4, &pa_of).unwrap();
    c.apply(&mut h, true, Op::Free, VA, 4, &pa_of).unwrap();
    assert_eq!(h.calls.len(), 2);
    // Ordinary execmem code is still EXEC|IMMUTABLE.
    c.apply(&mut h, true, Op::Exec, VA + 20 * PAGE, 1, &pa_of)
        .unwrap();
    assert_eq!(h.calls[2][0].attrs, ATTR_READ | ATTR_EXEC | ATTR_IMMUTABLE);

    // A 2 MiB pack whose every page is its own physical run: more runs
    // than one list holds, so several calls.
    let scattered = |va: u64| {
        let i = va.checked_sub(VA)? / PAGE;
        (i < 512).then(|| 0x5000_0000 + i * 2 * PAGE)
    };
    let mut c = CodeState::new();
    let mut h = Hyp::default();
    c.apply(&mut h, true, Op::Jit, VA, 512, &scattered).unwrap();
    c.apply(&mut h, true, Op::Exec, VA, 512, &scattered)
        .unwrap();
    assert_eq!(h.calls.len(), 4);
    assert_eq!(h.pages.len(), 512);
}

#[test]
fn a_refused_jit_range_fails_its_caller_and_is_put_back() {
    let mut c = CodeState::new();
    let mut h = Hyp {
        lock: true,
        ..Hyp::default()
    };
    c.apply(&mut h, true, Op::Jit, VA, 16, &pa_of).unwrap();
    assert_eq!(
        c.apply(&mut h, true, Op::Exec, VA, 16, &pa_of),
        Err(CodeError::Refused(KpError::Denied))
    );
    assert!(h.pages.is_empty(), "nothing left executable");
    assert_eq!(
        h.calls.last().unwrap()[0].attrs,
        ATTR_DEFAULT,
        "put back to read/write"
    );
}

/// A module's `__jump_table` (relative entries) becomes absolute (site,
/// label) pairs; only sites in the module's text are named.
#[test]
fn a_jump_table_becomes_a_site_list() {
    let table_va = VA + 40 * PAGE;
    // Entry i's fields are at table_va + 16 i (code) and + 4 (target).
    let rel = |i: u64, field: u64, to: u64| (to as i64 - (table_va + 16 * i + field) as i64) as i32;
    let table = [
        JumpEntry {
            code: rel(0, 0, VA + 0x100),
            target: rel(0, 4, VA + 0x180),
            key: 0,
        },
        // In init text, with a label before its site.
        JumpEntry {
            code: rel(1, 0, VA + 12 * PAGE + 0x20),
            target: rel(1, 4, VA + 12 * PAGE + 0x8),
            key: 1,
        },
        // Outside both: left out.
        JumpEntry {
            code: rel(2, 0, VA + 30 * PAGE),
            target: rel(2, 4, VA + 30 * PAGE + 4),
            key: 0,
        },
    ];
    assert_eq!(core::mem::size_of::<JumpEntry>() as u64, JUMP_ENTRY_SIZE);
    let text = [(VA, 6), (VA + 12 * PAGE, 2)];
    let mcount = [VA + 0x400, 0, VA + 12 * PAGE + 0x10, VA + 30 * PAGE];
    let tables = ModulePatchTables {
        jump: &table,
        jump_va: table_va,
        mcount: &mcount,
        ftrace_plts: [VA + 5 * PAGE + 0x20, 0],
    };
    let mut out = [0u8; 8 * SITE_SIZE];
    assert_eq!(module_sites(&tables, &text, &mut out), 5);
    let site =
        |i: usize| SiteEntry::from_bytes(out[i * SITE_SIZE..][..SITE_SIZE].try_into().unwrap());
    assert_eq!(
        site(0),
        SiteEntry {
            site: VA + 0x100,
            label: VA + 0x180
        }
    );
    assert_eq!(
        site(1),
        SiteEntry {
            site: VA + 12 * PAGE + 0x20,
            label: VA + 12 * PAGE + 0x8
        }
    );
    // ftrace call sites by their literal (padding and sites outside the
    // text left out), then the PLT.
    let ftrace = |site| SiteEntry {
        site,
        label: SITE_FTRACE,
    };
    assert_eq!(site(2), ftrace(VA + 0x400));
    assert_eq!(site(3), ftrace(VA + 12 * PAGE + 0x10));
    assert_eq!(
        site(4),
        SiteEntry {
            site: VA + 5 * PAGE + 0x20,
            label: SITE_FTRACE_PLT
        }
    );
    // No room: what fits.
    let mut one = [0u8; SITE_SIZE];
    assert_eq!(module_sites(&tables, &text, &mut one), 1);
    // No PLT: none named.
    let no_plt = ModulePatchTables {
        ftrace_plts: [0, 0],
        ..tables
    };
    assert_eq!(module_sites(&no_plt, &text, &mut out), 4);
}
