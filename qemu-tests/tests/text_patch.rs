// SPDX-License-Identifier: GPL-2.0 OR MIT
//! Runtime text patches under protection: the kernel registers its patch
//! sites, and the hypervisor performs only the patches they allow. The
//! function tracer over all functions and kprobes keep working (ftrace's
//! call sites in batches), the command line's policy refuses either
//! cleanly, and patches no legitimate patcher makes are refused with an
//! error the guest survives; the same patches succeed without
//! protection.

use qemu_tests::{artifacts, check, run, Boot, Outcome};

const KP: &str = "/sys/hypervisor/pvguard/kernel_protect";
const DBG: &str = "/sys/kernel/debug/pvguard";
const TRACING: &str = "/sys/kernel/tracing";

/// After whatever ran: a static key still flips through the hypervisor
/// and a self-check finds text and rodata intact.
fn still_healthy() -> String {
    format!(
        "echo 20 > {DBG}/kp_flip; echo 1 > {KP}/self_check; echo \"verdict $(cat {KP}/self_check)\""
    )
}

fn boot(append: &str, exec: String, tag: &str) -> Outcome {
    let a = artifacts();
    let b = Boot {
        append: append.into(),
        exec: Some(format!("mount -t tracefs nodev {TRACING}; {exec}")),
        timeout: std::time::Duration::from_secs(300),
        ..Boot::default()
    };
    run(&a, &b, tag).unwrap()
}

#[test]
fn the_kernel_registers_its_jump_labels_and_ftrace_call_sites() {
    let o = boot(
        "pvguard=on",
        format!("cat {DBG}/kernel_protect_patch_sites"),
        "tp-sites",
    );
    check(
        &o,
        &[
            "sites of jump labels registered",
            "sites of ftrace trampolines registered",
            "sites of ftrace call sites registered",
            "jump_table=registered sites=",
            "mcount_loc=registered sites=",
            "batches=yes",
        ],
        &[],
    )
    .unwrap();
    let s = o.stats().expect("stats");
    assert!(
        s.num("kp_sites_jump") > 100,
        "the kernel has many static keys"
    );
    assert!(
        s.num("kp_sites_ftrace") > 1000,
        "and many traceable functions"
    );
    assert_eq!(s.num("kp_ftrace_callers"), 1);
    assert_eq!(s.text("kp_policy_ftrace"), Some("allow"));
    assert_eq!(s.text("kp_policy_kprobes"), Some("allow"));
}

#[test]
fn the_function_tracer_over_all_functions_runs_under_protection() {
    let o = boot(
        "pvguard=on",
        format!(
            "echo function > {TRACING}/current_tracer && echo tracer-on; \
             sleep 1; echo \"traced $(grep -c ' <-' {TRACING}/trace) calls\"; \
             grep -m 3 ' <-' {TRACING}/trace; \
             echo nop > {TRACING}/current_tracer && echo tracer-off; \
             echo function > {TRACING}/current_tracer && echo nop > {TRACING}/current_tracer && echo again-off; \
             {}",
            still_healthy()
        ),
        "tp-ftrace",
    );
    check(
        &o,
        &[
            "tracer-on",
            "traced ",
            " <-",
            "tracer-off",
            "again-off",
            "static key: 20 flips (enable+disable)",
            "verdict intact",
        ],
        &[],
    )
    .unwrap();
    let traced: u64 = o
        .console
        .split("traced ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(traced > 100, "the trace shows calls: {traced}");
    let s = o.stats().expect("stats");
    let sites = s.num("kp_sites_ftrace");
    assert_eq!(s.num("kp_patches_refused"), 0);
    // Two enables and two disables, each an ops literal and a BL/NOP
    // per site, all through batches.
    assert!(
        s.num("kp_patches_ftrace") >= 4 * 2 * sites,
        "{} ftrace patches for {sites} sites",
        s.num("kp_patches_ftrace")
    );
    let batches = s.num("kp_patch_batches");
    assert!(batches > 0);
    assert!(
        batches * 64 <= 4 * sites,
        "{batches} batches for 4 updates of {sites} sites: more than one per 64"
    );
}

#[test]
fn a_kprobe_fires_under_protection() {
    let o = boot(
        "pvguard=on",
        format!(
            "echo 'p:pvg_open do_sys_openat2' > {TRACING}/kprobe_events && echo kprobe-registered; \
             echo 1 > {TRACING}/events/kprobes/pvg_open/enable; cat /proc/version > /dev/null; \
             echo 0 > {TRACING}/events/kprobes/pvg_open/enable; \
             echo \"hits $(grep -c pvg_open: {TRACING}/trace)\"; \
             echo '-:pvg_open' >> {TRACING}/kprobe_events && echo kprobe-removed; {}",
            still_healthy()
        ),
        "tp-kprobe",
    );
    check(
        &o,
        &[
            "kprobe-registered",
            "hits ",
            "kprobe-removed",
            "static key: 20 flips",
            "verdict intact",
        ],
        &[],
    )
    .unwrap();
    assert!(!o.console.contains("hits 0\n"), "the probe fired");
    let s = o.stats().expect("stats");
    assert!(
        s.num("kp_patches_kprobes") >= 2,
        "BRK and its restore went through the hypervisor"
    );
    assert_eq!(s.num("kp_patches_refused"), 0);
}

#[test]
fn the_command_line_refuses_kprobes_and_ftrace_cleanly() {
    let o = boot(
        "pvguard=on pvguard_kprobes=refuse pvguard_ftrace=refuse",
        format!(
            "echo 'p:pvg_open do_sys_openat2' > {TRACING}/kprobe_events || echo kprobe-refused; \
             echo do_sys_openat2 > {TRACING}/set_ftrace_filter || echo ftrace-refused; \
             echo function > {TRACING}/current_tracer; cat /proc/version > /dev/null; \
             echo \"traced $(grep -c ' <-' {TRACING}/trace) calls\"; {}",
            still_healthy()
        ),
        "tp-policy",
    );
    check(
        &o,
        &[
            "pvguard_ftrace=refuse: function tracing is disabled",
            "kprobe-refused",
            "ftrace-refused",
            "traced 0 calls",
            "static key: 20 flips",
            "verdict intact",
        ],
        &[],
    )
    .unwrap();
    let s = o.stats().expect("stats");
    assert_eq!(s.text("kp_policy_ftrace"), Some("refuse"));
    assert_eq!(s.text("kp_policy_kprobes"), Some("refuse"));
    assert_eq!(s.num("kp_patches_kprobes"), 0);
    assert_eq!(s.num("kp_patches_ftrace"), 0);
}

/// The attacks of `kp_attack`, in order.
const ATTACKS: [&str; 6] = [
    "B->NOP at a non-site",
    "NOP->B at a non-site",
    "B to a foreign target at a jump-label site",
    "BL to a non-trampoline at an ftrace site",
    "BRK (a kprobe's)",
    "RET at a function entry",
];

fn attacks() -> String {
    (0..ATTACKS.len())
        .map(|n| format!("echo {n} > {DBG}/kp_attack; "))
        .collect()
}

#[test]
fn text_patches_no_patcher_makes_are_refused_and_the_guest_goes_on() {
    let o = boot(
        "pvguard=on pvguard_kprobes=refuse",
        format!("{} {}", attacks(), still_healthy()),
        "tp-attacks",
    );
    let mut expect: Vec<String> = Vec::new();
    for (n, name) in ATTACKS.iter().enumerate() {
        expect.push(format!("attack {n}: {name}"));
        expect.push(format!("attack {n}: refused (-14)"));
        if n < 2 {
            expect.push(format!("attack {n}: the victim returns 1"));
        }
    }
    expect.push("static key: 20 flips (enable+disable)".into());
    expect.push("branch taken 20 times".into());
    expect.push("verdict intact".into());
    let expect: Vec<&str> = expect.iter().map(String::as_str).collect();
    check(&o, &expect, &[]).unwrap();
    assert!(!o.console.contains("not blocked"));
    let s = o.stats().expect("stats");
    assert_eq!(s.num("kp_patches_refused"), ATTACKS.len() as u64);
    assert_eq!(s.num("kp_self_check_failures"), 0);
}

#[test]
fn the_same_text_patches_succeed_without_protection() {
    // The control: the same kernel and the same patches, pvguard off.
    let o = boot("pvguard=off", attacks(), "tp-attacks-control");
    let mut expect: Vec<String> = Vec::new();
    for n in 0..ATTACKS.len() {
        expect.push(format!("attack {n}: written: not blocked"));
        match n {
            0 => expect.push("attack 0: the victim returns 2".into()),
            1 => expect.push("attack 1: the victim returns 42".into()),
            _ => {}
        }
    }
    let expect: Vec<&str> = expect.iter().map(String::as_str).collect();
    check(&o, &expect, &[]).unwrap();
}
