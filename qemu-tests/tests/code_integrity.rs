// SPDX-License-Identifier: GPL-2.0 OR MIT
//! Only approved code runs at EL1: with a code policy that denies EL1
//! execute outside the kernel image (`measure`, the default, or `lock`),
//! heap code reached through an alias whose stage-1 PXN bit is cleared is
//! stopped by stage 2, while user space (EL0) runs as before. The same
//! attack succeeds under image-only protection (`pvguard_code=image`, the
//! control).

use qemu_tests::{artifacts, check, run, Boot, Outcome};

/// Runs the kmalloc (0) and vmalloc (1) probes with `append`.
fn heap_probe(append: &str, tag: &str) -> Outcome {
    let a = artifacts();
    let probes: Vec<String> = (0..2)
        .map(|i| {
            format!("sh -c 'echo {i} > /sys/kernel/debug/pvguard/kp_exec_heap'; echo heap-{i}-done")
        })
        .collect();
    let b = Boot {
        append: append.into(),
        exec: Some(probes.join("; ")),
        ..Boot::default()
    };
    run(&a, &b, tag).unwrap()
}

#[test]
fn heap_code_is_blocked_under_default_deny() {
    let o = heap_probe("pvguard=on", "code-heap-default");
    check(
        &o,
        &[
            "hyp-stub: code policy measure",
            "pvguard: kernel protect: protected",
            "exec heap: calling a kmalloc page",
            "hyp-stub: blocked execute of guest RAM",
            "heap-0-done",
            "exec heap: calling a vmalloc page",
            "hyp-stub: blocked execute of guest RAM",
            "heap-1-done",
            "pvguard-init: exit status 0",
        ],
        &["Internal error", "Oops"],
    )
    .unwrap();
    assert!(
        !o.console.contains("not blocked"),
        "the code never returned 42"
    );
    let s = o.stats().expect("stats");
    assert_eq!(s.text("kp_code_policy"), Some("measure"));
    assert_eq!(s.num("kp_default_deny"), 1);
    assert_eq!(s.num("kp_perm_exec_blocked"), 2);
    assert_eq!(s.num("kp_exec_blocked"), 0, "not the image's");
    eprintln!(
        "stage-2 tables with default deny: {}",
        s.num("stage2_tables")
    );
}

#[test]
fn heap_code_runs_under_image_only_protection() {
    let o = heap_probe("pvguard=on pvguard_code=image", "code-heap-image");
    check(
        &o,
        &[
            "hyp-stub: code policy image",
            "pvguard: kernel protect: protected",
            "exec heap: kmalloc code returned 42: not blocked",
            "exec heap: vmalloc code returned 42: not blocked",
        ],
        &[],
    )
    .unwrap();
    let s = o.stats().expect("stats");
    assert_eq!(s.num("kp_default_deny"), 0);
    assert_eq!(s.num("kp_perm_exec_blocked"), 0);
    eprintln!("stage-2 tables image only: {}", s.num("stage2_tables"));
}

#[test]
fn lock_boots_and_user_space_runs() {
    let a = artifacts();
    let b = Boot {
        append: "pvguard=on pvguard_code=lock".into(),
        exec: Some("echo user-space-runs; cat /proc/version".into()),
        ..Boot::default()
    };
    let o = run(&a, &b, "code-lock").unwrap();
    check(
        &o,
        &[
            "hyp-stub: code policy lock",
            "pvguard: kernel protect: protected",
            "user-space-runs",
            "Linux version",
            "pvguard-init: exit status 0",
        ],
        &[],
    )
    .unwrap();
    assert!(
        !o.console.contains("parameters \"pvguard_code"),
        "the kernel accepts the hypervisor's parameter"
    );
    let s = o.stats().expect("stats");
    assert_eq!(s.text("kp_code_policy"), Some("lock"));
    assert_eq!(s.num("kp_default_deny"), 1);
    assert_eq!(
        s.num("kp_perm_exec_blocked"),
        0,
        "nothing at EL1 ran outside the image"
    );
}

/// `.rodata.text` (the idmap text, the KPTI trampoline) lies outside the
/// reported regions: named at enable, it stays executable under default
/// deny (read-only), also under `lock`.
fn other_text(append: &str, exec: &str, tag: &str) -> Outcome {
    let a = artifacts();
    let b = Boot {
        cpus: 2,
        append: append.into(),
        exec: Some(exec.into()),
        ..Boot::default()
    };
    run(&a, &b, tag).unwrap()
}

const HOTPLUG: &str = "echo 0 > /sys/devices/system/cpu/cpu1/online && echo cpu1-offline; \
     echo 1 > /sys/devices/system/cpu/cpu1/online && echo cpu1-online; \
     echo cpus-online=$(cat /sys/devices/system/cpu/online)";

#[test]
fn a_cpu_comes_back_online_through_the_idmap_text_under_default_deny() {
    for policy in ["measure", "lock"] {
        let o = other_text(
            &format!("pvguard=on pvguard_code={policy}"),
            HOTPLUG,
            &format!("code-hotplug-{policy}"),
        );
        check(
            &o,
            &[
                "pvguard: kernel protect: protected",
                "cpu1-offline",
                "cpu1-online",
                "cpus-online=0-1",
                "pvguard-init: exit status 0",
            ],
            &[],
        )
        .unwrap();
        let s = o.stats().expect("stats");
        assert_eq!(s.num("kp_default_deny"), 1);
        assert!(s.num("kp_other_text") > 0, "named at enable");
        assert_eq!(s.num("kp_perm_exec_blocked"), 0, "{policy}");
    }
}

#[test]
fn kpti_enters_the_kernel_through_its_trampoline_under_default_deny() {
    let o = other_text(
        "pvguard=on kpti=1",
        "echo user-space-runs; cat /proc/version",
        "code-kpti",
    );
    check(
        &o,
        &[
            "Kernel page table isolation",
            "pvguard: kernel protect: protected",
            "user-space-runs",
            "Linux version",
            "pvguard-init: exit status 0",
        ],
        &[],
    )
    .unwrap();
    let s = o.stats().expect("stats");
    assert!(s.num("kp_other_text") > 0);
    assert_eq!(s.num("kp_perm_exec_blocked"), 0);
}
