// SPDX-License-Identifier: GPL-2.0 OR MIT
//! MMIO guard, end to end: enrollment, enforcement, sharing, the upstream
//! pKVM guest, and the hypercall benchmark.

use qemu_tests::{artifacts, check, run, Boot};

/// An IPA in the device window that no driver maps (virtio-mmio slot 0 on
/// QEMU `virt`); reading it unguarded returns the virtio magic "virt".
const UNMAPPED_MMIO: &str = "0x0a000000";
/// The PL031 RTC, which no driver in the guest maps.
const RTC: &str = "0x09010000";

const SYSFS: &str = "/sys/hypervisor/pvguard/mmio_guard";
/// Dumps and counters: debugfs, root only.
const DBG: &str = "/sys/kernel/debug/pvguard";

#[test]
fn enrolled_guest_boots_with_guarded_console_and_gic() {
    let a = artifacts();
    let b = Boot {
        append: "pvguard=on".into(),
        exec: Some(format!(
            "cat {SYSFS}/status {SYSFS}/granule {DBG}/mmio_guard_ranges {DBG}/mmio_guard_stats"
        )),
        ..Boot::default()
    };
    let o = run(&a, &b, "mg-enrolled").unwrap();
    check(
        &o,
        &[
            "pvguard: MMIO guard enrolled",
            "pvguard-init: ready",
            "enrolled\n4096\n",
            "0x08000000-0x08010000 refs=1",
            "calls=ranged",
        ],
        &[],
    )
    .unwrap();
    let s = o.stats().expect("stats");
    assert_eq!(s.num("mmio_guard_enrolled"), 1);
    assert_eq!(
        s.num("mmio_guard_blocked"),
        0,
        "nothing the guest uses was blocked"
    );
    assert!(s.num("mmio_emulated") > 100);
}

#[test]
fn unguarded_mmio_aborts_and_the_kernel_survives() {
    let a = artifacts();
    let b = Boot {
        append: "pvguard=on".into(),
        exec: Some(format!("sh -c 'echo {UNMAPPED_MMIO} > /sys/kernel/debug/pvguard/mmio_probe'; echo probe-done; cat {SYSFS}/status")),
        ..Boot::default()
    };
    let o = run(&a, &b, "mg-probe").unwrap();
    check(
        &o,
        &[
            "pvguard: probe: reading unguarded MMIO at 0x000000000a000000",
            "hyp-stub: refused read at IPA 0xa000000",
            "not guarded (MMIO guard)",
            "Internal error: synchronous external abort",
            "probe-done",
            "enrolled",
            "reboot: Power down",
        ],
        &["Internal error", "Oops"],
    )
    .unwrap();
    assert!(!o.console.contains("the access was not blocked"));
    assert_eq!(o.stats().expect("stats").num("mmio_guard_blocked"), 1);
}

#[test]
fn without_the_guard_the_same_probe_succeeds() {
    let a = artifacts();
    let b = Boot {
        exec: Some(format!(
            "echo {UNMAPPED_MMIO} > /sys/kernel/debug/pvguard/mmio_probe; cat {SYSFS}/status"
        )),
        ..Boot::default()
    };
    let o = run(&a, &b, "mg-control").unwrap();
    check(
        &o,
        &[
            "probe: read 0x74726976: the access was not blocked",
            "disabled: not requested on the kernel command line",
        ],
        &[],
    )
    .unwrap();
}

#[test]
fn shared_granule_survives_the_first_iounmap() {
    let a = artifacts();
    let b = Boot {
        append: "pvguard=on".into(),
        exec: Some(format!("echo {RTC} > /sys/kernel/debug/pvguard/mmio_share")),
        ..Boot::default()
    };
    let o = run(&a, &b, "mg-share").unwrap();
    check(
        &o,
        &[
            "second mapping of 0x0000000009010000 still works after the first iounmap",
            "pvguard-init: exit status 0",
        ],
        &[],
    )
    .unwrap();
    assert_eq!(o.stats().expect("stats").num("mmio_guard_blocked"), 0);
}

#[test]
fn strict_mode_refuses_to_boot_without_a_guard() {
    let a = artifacts();
    // Plain QEMU: no hypervisor answers.
    // earlycon: the panic comes before the console driver probes.
    let b = Boot {
        hyp: false,
        append: "pvguard=strict earlycon".into(),
        ..Boot::default()
    };
    let o = run(&a, &b, "mg-strict").unwrap();
    check(
        &o,
        &[
            "Kernel panic",
            "pvguard=strict and the MMIO guard is unavailable: no KVM-compatible hypervisor",
        ],
        &["Kernel panic"],
    )
    .unwrap();
    assert!(!o.console.contains("pvguard-init: ready"));
}

#[test]
fn without_a_hypervisor_sysfs_says_why() {
    let a = artifacts();
    let b = Boot {
        hyp: false,
        append: "pvguard=on".into(),
        exec: Some(format!("cat {SYSFS}/status {DBG}/mmio_guard_ranges")),
        ..Boot::default()
    };
    let o = run(&a, &b, "mg-nohyp").unwrap();
    check(
        &o,
        &[
            "unavailable: no KVM-compatible hypervisor answered over HVC",
            "pvguard-init: exit status 0",
        ],
        &[],
    )
    .unwrap();
    // The early console's page is tracked, but nothing guards it.
    assert!(!o.console.contains("refs="), "{}", o.console);
}

/// Stock upstream 6.12 guest code (CONFIG_ARM_PKVM_GUEST: HYP_MEMINFO and
/// one MMIO_GUARD call per page) against hyp-stub in protected-VM mode,
/// side by side with pvguard's ranged calls on the same kernel. The
/// numbers are the MMIO-guard benchmark (docs/benchmarks.md).
#[test]
fn upstream_pkvm_guest_works_and_pvguard_needs_4x_fewer_hypercalls() {
    let a = artifacts();
    let probe = format!(
        "sh -c 'echo {UNMAPPED_MMIO} > /sys/kernel/debug/pvguard/mmio_probe'; echo probe-done"
    );
    let upstream = Boot {
        services: hyp_stub::boot::DEFAULT_SERVICES | hyp_stub::boot::MMIO_GUARD_FROM_BOOT,
        exec: Some(probe.clone()),
        ..Boot::default()
    };
    let o = run(&a, &upstream, "mg-upstream").unwrap();
    check(
        &o,
        &[
            "pvguard-init: ready",
            "not guarded (MMIO guard)",
            "probe-done",
            "reboot: Power down",
        ],
        &["Internal error", "Oops"],
    )
    .unwrap();
    let up = o.stats().expect("stats");
    assert_eq!(up.text("mmio_guard_policy"), Some("from-boot"));
    assert_eq!(
        up.num("mmio_guard_blocked"),
        1,
        "upstream guest's guard is active"
    );
    assert!(up.num("call_0xc6000002") >= 1, "HYP_MEMINFO used");
    let upstream_calls = up.num("call_0xc6000007");
    assert!(
        upstream_calls > 0,
        "upstream maps page by page with function 7"
    );

    let ours = Boot {
        append: "pvguard=on".into(),
        exec: Some(probe),
        ..Boot::default()
    };
    let o = run(&a, &ours, "mg-ours").unwrap();
    let s = o.stats().expect("stats");
    let our_calls = s.num("mmio_guard_hypercalls");
    let ioremaps = s.num("mmio_guard_map_calls");
    println!("benchmark: MMIO-guard map/unmap hypercalls per boot: upstream {upstream_calls}, pvguard {our_calls} ({ioremaps} maps); ratio {:.1}x", upstream_calls as f64 / our_calls.max(1) as f64);
    assert!(
        our_calls * 4 <= upstream_calls,
        "at least 4x fewer: ours {our_calls}, upstream {upstream_calls}"
    );
    assert_eq!(s.num("call_0xc6000007"), 0, "pvguard uses ranged calls");
}

/// Past the guard's fixed capacity an ioremap() fails with a message and
/// a counter; it is never left mapped and unguarded. Everything mapped is
/// released again, in the guest and in the hypervisor.
#[test]
fn ioremaps_beyond_capacity_fail_and_are_counted() {
    let a = artifacts();
    let b = Boot {
        append: "pvguard=on".into(),
        exec: Some(format!(
            "echo 64 > /sys/kernel/debug/pvguard/mmio_fill; cat {DBG}/mmio_guard_stats {DBG}/mmio_guard_ranges"
        )),
        ..Boot::default()
    };
    let o = run(&a, &b, "mg-fill").unwrap();
    check(
        &o,
        &[
            "no room to track another MMIO range (capacity 64)",
            "ioremap()s refused",
            "capacity=64",
            "pvguard-init: exit status 0",
        ],
        &["WARNING:"],
    )
    .unwrap();
    let line = o
        .console
        .lines()
        .find(|l| l.contains("pvguard: fill:"))
        .expect("fill result");
    let nums: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let (mapped, refused) = (nums[nums.len() - 2], nums[nums.len() - 1]);
    assert_eq!(mapped + refused, 64, "{line}");
    assert!(refused >= 1 && mapped >= 60, "{line}");
    let stats = o
        .console
        .lines()
        .find(|l| l.starts_with("refused_ioremaps="))
        .expect("sysfs stats");
    assert_eq!(stats, format!("refused_ioremaps={refused}"));
    let s = o.stats().expect("stats");
    assert_eq!(
        s.num("mmio_guard_full"),
        0,
        "the guest's table filled first; the hypervisor never had to refuse"
    );
    let ranges_line = o
        .console
        .lines()
        .find(|l| l.starts_with("ranges="))
        .expect("ranges");
    assert_eq!(
        format!("mmio_guard_ranges={}", &ranges_line["ranges=".len()..]),
        format!("mmio_guard_ranges={}", s.num("mmio_guard_ranges")),
        "guest and hypervisor agree after the unmaps"
    );
}
