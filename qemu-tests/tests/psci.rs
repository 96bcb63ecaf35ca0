// SPDX-License-Identifier: GPL-2.0 OR MIT
//! PSCI as hyp-stub offers it: a guest module makes the calls a stock
//! kernel never makes (bogus entry points, unknown functions) and a real
//! power-down suspend and resume of a second CPU.

use qemu_tests::{artifacts, check, module, run, Boot};

#[test]
fn psci_refuses_bogus_entry_points_and_resumes_a_suspended_cpu() {
    let a = artifacts();
    let ko = module::build(&a, "psci_probe", "psci-allowlist").unwrap();
    let b = Boot {
        cpus: 2,
        add: vec![ko],
        exec: Some("insmod /pvguard/psci_probe.ko".into()),
        ..Boot::default()
    };
    let o = run(&a, &b, "psci-allowlist").unwrap();
    check(
        &o,
        &[
            "psci-probe: PSCI_FEATURES(CPU_SUSPEND): 0 (want 0) ok",
            "psci-probe: PSCI_FEATURES(unknown): -1 (want -1) ok",
            "psci-probe: unknown PSCI function: -1 (want -1) ok",
            "psci-probe: MEM_PROTECT: -1 (want -1) ok",
            "psci-probe: CPU_SUSPEND with a reserved bit: -2 (want -2) ok",
            "psci-probe: CPU_SUSPEND power-down to a bogus entry: -9 (want -9) ok",
            "psci-probe: CPU_SUSPEND power-down to a misaligned entry: -9 (want -9) ok",
            "psci-probe: CPU_DEFAULT_SUSPEND to a bogus entry: -9 (want -9) ok",
            "psci-probe: SYSTEM_SUSPEND to a bogus entry: -9 (want -9) ok",
            "psci-probe: CPU_SUSPEND standby: 0 (want 0) ok",
            "psci-probe: power-down suspend resumed at the guest's entry: 1 (want 1) ok",
            "psci-probe: resumed at EL1: 1 (want 1) ok",
            "psci-probe: resumed with the MMU off: 0 (want 0) ok",
            "psci-probe: the resumed CPU turned itself off (AFFINITY_INFO): 1 (want 1) ok",
            "psci-probe: done, 0 failures; powering off",
        ],
        &[],
    )
    .unwrap();
    assert!(!o.console.contains("FAIL"), "every check passed");
    let s = o.stats().expect("stats");
    assert_eq!(s.num("psci_power_downs"), 1);
    assert!(s.num("psci_standby") >= 1);
    assert_eq!(s.num("call_0x84000002"), 1, "the resumed CPU's CPU_OFF");
    assert!(s.num("psci_refused") >= 8, "the refusals are counted");
}

#[test]
fn without_hyp_stub_a_bogus_suspend_entry_is_not_refused() {
    // The control: QEMU's own PSCI ignores the entry point of a
    // power-down CPU_SUSPEND (it only waits for an interrupt), so the
    // bogus entry "succeeds"; firmware that really powered the CPU down
    // would jump there.
    let a = artifacts();
    let ko = module::build(&a, "psci_probe", "psci-control").unwrap();
    let b = Boot {
        hyp: false,
        add: vec![ko],
        exec: Some("insmod /pvguard/psci_probe.ko; echo probe-returned".into()),
        ..Boot::default()
    };
    let o = run(&a, &b, "psci-control").unwrap();
    check(
        &o,
        &[
            "psci-probe: CPU_SUSPEND power-down to a bogus entry: 0 (want -9) FAIL",
            "probe-returned",
        ],
        &[],
    )
    .unwrap();
}
