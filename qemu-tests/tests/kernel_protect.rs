// SPDX-License-Identifier: GPL-2.0 OR MIT
//! Kernel protect, end to end: the guest boots protected, attacks on its
//! text, rodata and ro_after_init data and attempts to execute its data
//! are stopped by the hypervisor (and succeed without it), static keys
//! keep working, and a root user can self-check.

use qemu_tests::{artifacts, check, module, run, Boot, Outcome};

const KP: &str = "/sys/hypervisor/pvguard/kernel_protect";
/// Dumps and counters: debugfs, root only.
const DBG: &str = "/sys/kernel/debug/pvguard";

#[test]
fn boots_protected_and_self_check_is_intact() {
    let a = artifacts();
    let b = Boot {
        append: "pvguard=on".into(),
        exec: Some(format!(
            "cat {KP}/state {DBG}/kernel_protect_regions {DBG}/kernel_protect_self_check; echo 1 > {KP}/self_check && cat {DBG}/kernel_protect_self_check; echo \"sysfs verdict $(cat {KP}/self_check)\"; echo \"regions mode $(stat -c %a {DBG}/kernel_protect_regions)\""
        )),
        ..Boot::default()
    };
    let o = run(&a, &b, "kp-boot").unwrap();
    check(
        &o,
        &[
            "pvguard: kernel protect: reported (compact)",
            "hyp-stub: kernel protect: enabled; TEXT",
            "pvguard: kernel protect: protected",
            "pvguard-init: ready",
            "protected\nTEXT",
            "FIXMAP_TEXT_POKE0",
            // The enable call hashed nothing: no measurement in its answer.
            "\nverdict=none\nchecks=0\n",
            "verdict=intact\nmeasurement=",
            "checks=1\n",
            // One value per sysfs file; physical addresses root only.
            "sysfs verdict intact\n",
            "regions mode 400\n",
            "pvguard-init: exit status 0",
        ],
        &[],
    )
    .unwrap();
    let s = o.stats().expect("stats");
    assert_eq!(s.text("kp_state"), Some("protected"));
    assert_eq!(s.num("kp_self_checks"), 1);
    assert_eq!(s.num("kp_self_check_failures"), 0);
    assert_eq!(s.num("kp_reports_compact"), 1);
    let measurement = s.text("kp_measurement").unwrap_or_default();
    assert_eq!(measurement.len(), 64, "a whole digest, not pending");
    assert!(
        o.console
            .contains(&format!("measurement={}", &measurement[..16])),
        "the guest sees the hypervisor's measurement"
    );
    assert!(
        s.num("kp_measure_steps_idle") + s.num("kp_measure_steps_call") >= 2,
        "a baseline and a check, each in steps"
    );
}

#[test]
fn the_baseline_is_hashed_in_the_guests_idle_time_off_the_boot_path() {
    // No self-check: init only sleeps, and the baseline is taken while the
    // guest idles. Its WFI traps only while steps remain.
    let a = artifacts();
    let b = Boot {
        append: "pvguard=on".into(),
        exec: Some(format!("sleep 1; cat {DBG}/kernel_protect_self_check")),
        ..Boot::default()
    };
    let o = run(&a, &b, "kp-idle").unwrap();
    check(
        &o,
        &[
            "pvguard: kernel protect: protected",
            "\nverdict=none\nchecks=0\n",
            "pvguard-init: exit status 0",
        ],
        &[],
    )
    .unwrap();
    let s = o.stats().expect("stats");
    // Inside enable only the image's other text is hashed (it becomes
    // code there): a few pages, not the baseline.
    assert!(
        s.num("kp_other_text") <= 64 << 10,
        "{} bytes of other text",
        s.num("kp_other_text")
    );
    let steps = s.num("kp_measure_steps_idle");
    assert!(steps > 0, "steps in idle time");
    assert_eq!(s.num("kp_measure_steps_call"), 0, "no call waited for one");
    assert_eq!(
        s.num("exit_idle"),
        steps,
        "a step per trapped WFI, and no trap once the baseline is taken"
    );
    assert_eq!(s.text("kp_measurement").unwrap_or_default().len(), 64);
}

/// Runs an LKDTM crash type in a guest booted with rodata=off (the
/// guest's own stage-1 protection of text and rodata is gone).
fn lkdtm(protect: bool, crash: &str) -> Outcome {
    let a = artifacts();
    let append = if protect {
        "pvguard=on rodata=off"
    } else {
        "rodata=off"
    };
    let b = Boot {
        append: append.into(),
        exec: Some(format!(
            "sh -c 'echo {crash} > /sys/kernel/debug/provoke-crash/DIRECT'; echo lkdtm-returned"
        )),
        ..Boot::default()
    };
    run(&a, &b, &format!("lkdtm-{crash}-{protect}")).unwrap()
}

fn blocked(crash: &str, stat: &str) {
    let o = lkdtm(true, crash);
    check(
        &o,
        &[
            "lkdtm: Performing direct entry",
            "hyp-stub: blocked write of guest RAM",
            "Internal error: synchronous external abort",
            "lkdtm-returned",
        ],
        &["Internal error", "Oops"],
    )
    .unwrap();
    assert!(
        !o.console.contains("FAIL: survived"),
        "{crash} survived under protection\n{}",
        o.console
    );
    assert_eq!(o.stats().expect("stats").num(stat), 1, "{stat}");
}

fn succeeds_without_protection(crash: &str) {
    let o = lkdtm(false, crash);
    check(
        &o,
        &[
            "lkdtm: Performing direct entry",
            "FAIL: survived bad write",
            "lkdtm-returned",
        ],
        &["FAIL: survived"],
    )
    .unwrap();
}

#[test]
fn lkdtm_write_ro_is_blocked() {
    blocked("WRITE_RO", "kp_ro_writes_blocked");
}

#[test]
fn lkdtm_write_ro_succeeds_without_protection() {
    succeeds_without_protection("WRITE_RO");
}

#[test]
fn lkdtm_write_kern_is_blocked() {
    blocked("WRITE_KERN", "kp_rx_writes_blocked");
}

#[test]
fn lkdtm_write_kern_succeeds_without_protection() {
    succeeds_without_protection("WRITE_KERN");
}

#[test]
fn lkdtm_write_ro_after_init_is_blocked() {
    blocked("WRITE_RO_AFTER_INIT", "kp_ro_writes_blocked");
}

#[test]
fn lkdtm_write_ro_after_init_succeeds_without_protection() {
    succeeds_without_protection("WRITE_RO_AFTER_INIT");
}

/// Executes RODATA (0), DATA (1) and BSS (2) through an executable alias.
fn exec_probe(protect: bool) -> Outcome {
    let a = artifacts();
    let probes: Vec<String> = (0..3)
        .map(|i| {
            format!("sh -c 'echo {i} > /sys/kernel/debug/pvguard/kp_exec'; echo exec-{i}-done")
        })
        .collect();
    let b = Boot {
        append: if protect {
            "pvguard=on".into()
        } else {
            String::new()
        },
        exec: Some(probes.join("; ")),
        ..Boot::default()
    };
    run(&a, &b, &format!("kp-exec-{protect}")).unwrap()
}

#[test]
fn executing_rodata_data_and_bss_is_blocked() {
    let o = exec_probe(true);
    check(
        &o,
        &[
            "exec: calling a RODATA page",
            "hyp-stub: blocked execute of guest RAM",
            "exec-0-done",
            "exec: calling a DATA page",
            "hyp-stub: blocked execute of guest RAM",
            "exec-1-done",
            "exec: calling a BSS page",
            "hyp-stub: blocked execute of guest RAM",
            "exec-2-done",
        ],
        &["Internal error", "Oops"],
    )
    .unwrap();
    assert!(!o.console.contains("not blocked"));
    assert_eq!(o.stats().expect("stats").num("kp_exec_blocked"), 3);
}

#[test]
fn executing_rodata_data_and_bss_succeeds_without_protection() {
    let o = exec_probe(false);
    check(
        &o,
        &[
            "exec: returned from RODATA: not blocked",
            "exec: returned from DATA: not blocked",
            "exec: returned from BSS: not blocked",
        ],
        &[],
    )
    .unwrap();
}

#[test]
fn test_static_keys_passes_under_protection() {
    let a = artifacts();
    let lib = a.kernel_build.join("lib");
    let b = Boot {
        append: "pvguard=on".into(),
        add: vec![lib.join("test_static_key_base.ko"), lib.join("test_static_keys.ko")],
        exec: Some(
            "insmod /pvguard/test_static_key_base.ko && insmod /pvguard/test_static_keys.ko && echo static-keys-ok; \
             echo 20 > /sys/kernel/debug/pvguard/kp_flip; cat /sys/hypervisor/pvguard/kernel_protect/state"
                .into(),
        ),
        ..Boot::default()
    };
    let o = run(&a, &b, "kp-static-keys").unwrap();
    check(
        &o,
        &[
            "static-keys-ok",
            "static key: 20 flips (enable+disable)",
            "branch taken 20 times",
            "protected",
        ],
        &[],
    )
    .unwrap();
    let s = o.stats().expect("stats");
    assert!(
        s.num("kp_patches_accepted") >= 40,
        "the built-in key's flips went through the hypervisor"
    );
    assert_eq!(s.num("kp_patches_refused"), 0);
    assert_eq!(s.num("kp_self_check_failures"), 0);
}

#[test]
fn the_guest_cannot_play_resource_manager_or_check_other_vms() {
    // A protected guest really makes the resource manager's call and
    // names other address spaces; the same enable call naming itself is
    // the control (a self-check that passes).
    let a = artifacts();
    let ko = module::build(&a, "kp_probe", "kp-resource-manager").unwrap();
    let b = Boot {
        append: "pvguard=on".into(),
        add: vec![ko],
        exec: Some(format!("insmod /pvguard/kp_probe.ko; cat {KP}/state")),
        ..Boot::default()
    };
    let o = run(&a, &b, "kp-resource-manager").unwrap();
    check(
        &o,
        &[
            "kp-probe: protect_vm_assets(1): x0=30\n",
            "kp-probe: enable_vm_protection(1): x0=30\n",
            "kp-probe: enable_vm_protection(0xffff): x0=30\n",
            "kp-probe: enable_vm_protection(self): x0=0\n",
            "protected",
        ],
        &[],
    )
    .unwrap();
    let s = o.stats().expect("stats");
    assert_eq!(s.num("kp_denied"), 3, "each refusal is counted");
    assert_eq!(
        s.num("call_0x00006094"),
        1,
        "the immediate HVC reached hyp-stub"
    );
    assert_eq!(s.num("kp_self_checks"), 1);
    assert_eq!(s.num("kp_self_check_failures"), 0);
}

#[test]
fn without_pvguard_on_the_extents_are_granted_and_nothing_is_reported() {
    let a = artifacts();
    let b = Boot {
        exec: Some(format!("cat {KP}/state")),
        ..Boot::default()
    };
    let o = run(&a, &b, "kp-off").unwrap();
    check(
        &o,
        &["disabled: not requested on the kernel command line"],
        &[],
    )
    .unwrap();
    assert_eq!(
        o.stats().expect("stats").text("kp_state"),
        Some("active"),
        "extents granted, no report"
    );
}

#[test]
fn strict_without_kernel_protect_powers_the_vm_off_with_its_reason() {
    // hyp-stub without kernel protect: discovery says so, nothing is
    // sent, and pvguard=strict ends the VM through PSCI SYSTEM_OFF. A
    // panic here (setup_arch, before panic= is parsed) would spin
    // forever, and the boot would only end at the test's time limit.
    let a = artifacts();
    let b = Boot {
        services: hyp_stub::boot::SERVICE_MMIO_GUARD,
        // earlycon: the refusal comes before the console driver probes.
        append: "pvguard=strict earlycon".into(),
        timeout: std::time::Duration::from_secs(60),
        ..Boot::default()
    };
    let o = run(&a, &b, "kp-strict-off").unwrap();
    check(
        &o,
        &[
            "kernel protect: unsupported: the hypervisor does not offer kernel protect",
            "pvguard=strict: kernel protect is unavailable; powering the VM off",
            "hyp-stub stats:",
        ],
        &[],
    )
    .unwrap();
    assert!(!o.console.contains("pvguard-init: ready"));
    let s = o.stats().expect("stats");
    assert_eq!(s.num("call_0x84000008"), 1, "SYSTEM_OFF from the guest");
    assert_eq!(
        s.num("call_0xc6060061") + s.num("call_0xc606005f") + s.num("call_0xc6060060"),
        0,
        "no kernel-protect call was made"
    );
}
