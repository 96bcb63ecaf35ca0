// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The foundation: the guest boots under hyp-stub and on plain QEMU, and
//! the hypervisor's stats are present and consistent.

use qemu_tests::{artifacts, check, run, Boot};

#[test]
fn boots_under_hyp_stub_and_powers_off() {
    let a = artifacts();
    let o = run(&a, &Boot::default(), "boot-hyp").unwrap();
    check(
        &o,
        &[
            "pvguard hyp-stub at EL2",
            "Linux version 6.12",
            "pvguard-init: ready",
            "reboot: Power down",
            "hyp-stub stats:",
        ],
        &[],
    )
    .unwrap();
    assert!(o.clean_exit(), "QEMU status {:?}\n{}", o.status, o.console);
}

#[test]
fn boots_on_plain_qemu() {
    let a = artifacts();
    let o = run(
        &a,
        &Boot {
            hyp: false,
            ..Boot::default()
        },
        "boot-plain",
    )
    .unwrap();
    check(
        &o,
        &[
            "Linux version 6.12",
            "pvguard-init: ready",
            "reboot: Power down",
        ],
        &[],
    )
    .unwrap();
    assert!(
        !o.console.contains("hyp-stub"),
        "no hypervisor on plain QEMU"
    );
    assert!(o.clean_exit(), "QEMU status {:?}\n{}", o.status, o.console);
}

#[test]
fn stats_are_consistent_and_count_discovery() {
    let a = artifacts();
    let o = run(&a, &Boot::default(), "boot-stats").unwrap();
    let s = o
        .stats()
        .unwrap_or_else(|| panic!("no stats block\n{}", o.console));
    assert_eq!(
        s.num("exits_total"),
        s.sum("exit_"),
        "exits_total is the sum of exit_*"
    );
    assert_eq!(
        s.sum("exit_hvc") + s.sum("exit_smc"),
        s.sum("call_0x"),
        "every HVC/SMC exit is one call"
    );
    // Linux 6.12 probes SMCCC and KVM's vendor-hyp services at boot.
    assert!(s.num("call_0x80000000") >= 1, "SMCCC_VERSION counted");
    assert!(s.num("call_0x8600ff01") >= 1, "vendor-hyp UID counted");
    assert!(s.num("call_0x86000000") >= 1, "KVM features counted");
    // Those three are answered without the core's lock, and still counted.
    let lock_free = s.num("exits_lock_free");
    assert!(
        lock_free >= 3 && lock_free <= s.sum("exit_hvc") + s.sum("exit_smc"),
        "discovery without the lock: {lock_free}"
    );
    assert!(s.num("call_0x84000008") == 1, "PSCI SYSTEM_OFF counted");
    assert!(
        s.num("mmio_emulated") > 100,
        "the UART and GIC are emulated MMIO"
    );
    assert_eq!(s.num("mmio_refused"), 0);
    assert!(
        o.console
            .contains("smccc: KVM: hypervisor services detected"),
        "stock Linux discovers hyp-stub"
    );
}

#[test]
fn exec_runs_a_command_in_the_guest() {
    let a = artifacts();
    let b = Boot {
        exec: Some("cat /proc/version".into()),
        ..Boot::default()
    };
    let o = run(&a, &b, "exec").unwrap();
    check(
        &o,
        &[
            "pvguard-init: ready",
            "Linux version 6.12",
            "pvguard-init: exit status 0",
        ],
        &[],
    )
    .unwrap();
}

#[test]
fn secondary_cpus_boot_through_psci_cpu_on() {
    let a = artifacts();
    let b = Boot {
        cpus: 2,
        append: "pvguard=on".into(),
        exec: Some(
            "grep -c ^processor /proc/cpuinfo; cat /sys/hypervisor/pvguard/kernel_protect/state"
                .into(),
        ),
        ..Boot::default()
    };
    let o = run(&a, &b, "smp").unwrap();
    check(
        &o,
        &[
            "smp: Brought up 1 node, 2 CPUs",
            "pvguard-init: ready",
            "\n2\n",
            "protected",
            "reboot: Power down",
        ],
        &[],
    )
    .unwrap();
    let s = o.stats().expect("stats");
    assert_eq!(s.num("call_0xc4000003"), 1, "one CPU_ON");
}

/// What `cargo xtask run` boots with no options: the protected guest,
/// its own view of the protection, a self-check, and the hypervisor's
/// summary above the stats block; and, for comparison, the same run
/// with `--unprotected`.
#[test]
fn default_run_shows_the_protected_guest_and_the_summary() {
    let a = artifacts();
    let boot = |append: &str| Boot {
        append: append.into(),
        exec: Some(qemu_tests::SHOW_PROTECTION.into()),
        ..Boot::default()
    };
    let o = run(&a, &boot(qemu_tests::PROTECT), "boot-default-run").unwrap();
    check(
        &o,
        &[
            "Kernel command line: console=ttyAMA0 panic=-1 pvguard=on",
            "mmio_guard: enrolled",
            "kernel_protect: protected",
            "self-check: intact",
            "pvguard summary:",
            "  MMIO guard:     enrolled, enforcing;",
            "  kernel protect: protected:",
            "  measurement:    SHA-256 of text+rodata ",
            "  self-check:     intact (1 of 1 checks)",
            "  hypervisor:     ",
            "hyp-stub stats:",
        ],
        &[],
    )
    .unwrap();
    assert!(o.clean_exit(), "QEMU status {:?}\n{}", o.status, o.console);

    let o = run(&a, &boot("pvguard=off"), "boot-default-run-off").unwrap();
    check(
        &o,
        &[
            "pvguard summary:",
            "  MMIO guard:     not enrolled",
            "  kernel protect: offered; the guest reported no layout",
            "hyp-stub stats:",
        ],
        &[],
    )
    .unwrap();
    assert!(!o.console.contains("self-check: intact"), "{}", o.console);
}
