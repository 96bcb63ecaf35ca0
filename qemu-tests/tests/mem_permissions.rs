// SPDX-License-Identifier: GPL-2.0 OR MIT
//! MEM_PERMISSIONS from a real guest: approved code runs and is in the
//! code log (which the test recomputes from the page's contents), and
//! WRITE+EXEC, changing an IMMUTABLE page, naming kernel text and new
//! code under `lock` are each refused with their code.

use guest_kp::mem_perms::{log_record, LOG_EXEC, LOG_RELEASE};
use hyp_stub::sha256::{compress_soft, Sha256};
use qemu_tests::{artifacts, check, run, Boot, Outcome};

const PERM: &str = "/sys/kernel/debug/pvguard/kp_perm";

fn perm_probes(append: &str, probes: &[u32], tag: &str) -> Outcome {
    let a = artifacts();
    let cmds: Vec<String> = probes
        .iter()
        .map(|i| format!("sh -c 'echo {i} > {PERM}'; echo perm-{i}-done"))
        .collect();
    let b = Boot {
        append: append.into(),
        exec: Some(cmds.join("; ")),
        ..Boot::default()
    };
    run(&a, &b, tag).unwrap()
}

/// The physical address and linear-map VA of the first probe's page.
fn first_page(console: &str) -> (u64, u64) {
    let line = console
        .lines()
        .find_map(|l| l.split("perm: page at ").nth(1))
        .expect("the probe prints its page");
    let mut words = line.split_whitespace();
    let hex = |w: Option<&str>| {
        u64::from_str_radix(w.expect("a word").trim_start_matches("0x"), 16).expect("a hex value")
    };
    let pa = hex(words.next());
    assert_eq!(words.next(), Some("va"));
    (pa, hex(words.next()))
}

#[test]
fn approved_code_runs_and_bad_requests_are_refused_with_their_codes() {
    let o = perm_probes(
        "pvguard=on pvguard_code=measure",
        &[0, 1, 2, 3],
        "perm-measure",
    );
    // The code log starts with one record: the image's other text
    // (.rodata.text), made executable at enable.
    check(
        &o,
        &[
            "perm: exec: status=0 index=0 records=2",
            "perm: approved code returned 42",
            "perm: release: status=0 index=0 records=3",
            "perm: writable: status=0 index=0 records=3",
            "perm-0-done",
            "perm: write+exec: status=30 index=0 records=3",
            "perm-1-done",
            "perm: immutable: status=0 index=0 records=3",
            "perm: change immutable: status=30 index=0 records=3",
            "perm: release immutable: status=0 index=0 records=3",
            "perm: writable: status=0",
            "perm-2-done",
            "perm: kernel text: status=30 index=0 records=3",
            "perm-3-done",
            "pvguard-init: exit status 0",
        ],
        &[],
    )
    .unwrap();
    let s = o.stats().expect("stats");
    assert_eq!(s.num("kp_perm_refused_write_exec"), 1);
    assert_eq!(s.num("kp_perm_refused_immutable"), 1);
    assert_eq!(s.num("kp_perm_refused_image"), 1);
    // The other text, then the probe's page.
    assert_eq!(s.num("kp_code_log_exec"), 2);
    assert_eq!(s.num("kp_code_log_release"), 1);
    assert_eq!(s.num("kp_perm_exec_blocked"), 0, "approved code ran");
    // The code log, recomputed: the page held "mov x0, #42; ret" and
    // zeros both when it became executable and when it was released.
    let (pa, va) = first_page(&o.console);
    let mut page = vec![0u8; 4096];
    page[..8].copy_from_slice(&[0x40, 0x05, 0x80, 0xd2, 0xc0, 0x03, 0x5f, 0xd6]);
    let mut h = Sha256::new(compress_soft);
    h.update(&page);
    let digest = h.finalize();
    // The log's first record, the image's other text, as hyp-stub
    // printed it at enable.
    let other = o
        .console
        .lines()
        .find_map(|l| l.split("kernel protect: other text ").nth(1))
        .expect("the other text is logged");
    let (range, sha) = other.split_once(" executable, SHA-256 ").expect("its hash");
    let (start, size) = range.split_once('+').expect("a range");
    let num = |w: &str| u64::from_str_radix(w.trim_start_matches("0x"), 16).expect("hex");
    let mut other_digest = [0u8; 32];
    for (i, b) in other_digest.iter_mut().enumerate() {
        *b = u8::from_str_radix(&sha[2 * i..2 * i + 2], 16).expect("hex");
    }
    let mut h = Sha256::new(compress_soft);
    h.update(&[0u8; 32]);
    h.update(&log_record(
        LOG_EXEC,
        num(start),
        num(size),
        0,
        &other_digest,
    ));
    let mut chain = h.finalize();
    for kind in [LOG_EXEC, LOG_RELEASE] {
        let mut h = Sha256::new(compress_soft);
        h.update(&chain);
        h.update(&log_record(kind, pa, 4096, va, &digest));
        chain = h.finalize();
    }
    let hex: String = chain.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(s.text("kp_code_log"), Some(hex.as_str()));
}

#[test]
fn lock_refuses_new_code() {
    let o = perm_probes("pvguard=on pvguard_code=lock", &[0], "perm-lock");
    // Under lock too, the image's other text is the log's one record.
    check(
        &o,
        &[
            "perm: exec: status=30 index=0 records=1",
            "perm: writable: status=0 index=0 records=1",
            "perm-0-done",
        ],
        &[],
    )
    .unwrap();
    assert!(!o.console.contains("approved code returned"));
    let s = o.stats().expect("stats");
    assert_eq!(s.num("kp_perm_refused_locked"), 1);
    assert_eq!(s.num("kp_code_log_records"), 1);
}

#[test]
fn image_only_protection_does_not_take_the_call() {
    let o = perm_probes("pvguard=on pvguard_code=image", &[0], "perm-image");
    check(
        &o,
        &["perm: exec: status=33 index=-1 records=0", "perm-0-done"],
        &[],
    )
    .unwrap();
    assert_eq!(o.stats().expect("stats").num("kp_perm_refused_state"), 2);
}
