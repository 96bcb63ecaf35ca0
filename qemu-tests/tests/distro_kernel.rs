// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The guest is configured like a distribution's kernel where it matters
//! to pvguard: these tests show the features are live, not just
//! configured. Randomized placement, pointer authentication and BTI are
//! on under protection. Text patching by ftrace and kprobes works on an
//! unprotected boot; under protection the hypervisor refuses those patches
//! (they are not jump-label transitions), so no test here enables them on
//! a protected boot yet (see the README's "The guest kernel").

use qemu_tests::{artifacts, check, run, Boot, Outcome};

/// The number after `label ` on the console.
fn count(o: &Outcome, label: &str) -> u64 {
    o.console
        .lines()
        .find_map(|l| l.strip_prefix(label)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {label:?} line\n{}", o.console))
}

/// Where `start_kernel` runs, as `/proc/kallsyms` shows it to root.
const START_KERNEL: &str =
    "echo \"start_kernel at $(grep ' start_kernel$' /proc/kallsyms | cut -d' ' -f1)\"";

/// Where the kernel was linked to put `start_kernel` (its System.map).
fn linked_start_kernel(a: &qemu_tests::Artifacts) -> String {
    let map = a.kernel_build.join("System.map");
    let text = std::fs::read_to_string(&map).unwrap_or_else(|e| panic!("{}: {e}", map.display()));
    text.lines()
        .find(|l| l.ends_with(" T start_kernel"))
        .and_then(|l| l.split(' ').next())
        .unwrap_or_else(|| panic!("no start_kernel in {}", map.display()))
        .to_string()
}

#[test]
fn kaslr_pac_and_bti_are_live_under_protection() {
    let a = artifacts();
    let b = Boot {
        append: "pvguard=on".into(),
        exec: Some(format!(
            "{START_KERNEL}; cat /sys/hypervisor/pvguard/kernel_protect/state"
        )),
        ..Boot::default()
    };
    let o = run(&a, &b, "distro-hardening").unwrap();
    check(
        &o,
        &[
            "KASLR enabled",
            "CPU features: detected: Branch Target Identification",
            "CPU features: detected: Address authentication",
            "pvguard-init: ready",
            "start_kernel at ffff",
            "protected",
            "reboot: Power down",
        ],
        &[],
    )
    .unwrap();
    let linked = linked_start_kernel(&a);
    assert!(
        !o.console.contains(&format!("start_kernel at {linked}")),
        "start_kernel runs away from its link address {linked}\n{}",
        o.console
    );
}

#[test]
fn ftrace_and_kprobes_patch_text_on_an_unprotected_boot() {
    let a = artifacts();
    let b = Boot {
        exec: Some(
            "mount -t tracefs nodev /sys/kernel/tracing
             cd /sys/kernel/tracing
             echo do_sys_openat2 > set_ftrace_filter
             echo function > current_tracer
             cat /proc/version > /dev/null
             echo 0 > tracing_on
             echo \"function hits $(grep -c do_sys_openat2 trace)\"
             echo nop > current_tracer
             echo > trace
             echo 1 > tracing_on
             echo 'p:pvg_probe do_sys_openat2' > kprobe_events
             echo 1 > events/kprobes/pvg_probe/enable
             cat /proc/version > /dev/null
             echo 0 > events/kprobes/pvg_probe/enable
             echo \"kprobe hits $(grep -c pvg_probe: trace)\"
             echo '-:pvg_probe' >> kprobe_events"
                .into(),
        ),
        ..Boot::default()
    };
    let o = run(&a, &b, "distro-ftrace").unwrap();
    check(&o, &["pvguard-init: ready", "reboot: Power down"], &[]).unwrap();
    assert!(count(&o, "function hits") >= 1, "{}", o.console);
    assert!(count(&o, "kprobe hits") >= 1, "{}", o.console);
}

/// The `pvguard` guest command: protected and intact is 0, unprotected
/// is 2, on the real sysfs files.
#[test]
fn pvguard_command_exit_codes() {
    let a = artifacts();
    let script =
        "pvguard status; echo \"status rc=$?\"; pvguard self-check; echo \"self-check rc=$?\"";
    let protected = Boot {
        append: "pvguard=on".into(),
        exec: Some(script.into()),
        ..Boot::default()
    };
    let o = run(&a, &protected, "cmd-protected").unwrap();
    check(
        &o,
        &[
            "mmio_guard: enrolled",
            "kernel_protect: protected",
            "status rc=0",
            "self-check: intact",
            "self-check rc=0",
        ],
        &[],
    )
    .unwrap();
    let plain = Boot {
        exec: Some(script.into()),
        ..Boot::default()
    };
    let o = run(&a, &plain, "cmd-unprotected").unwrap();
    check(
        &o,
        &[
            "kernel_protect: disabled",
            "status rc=2",
            "kernel_protect: disabled",
            "self-check rc=2",
        ],
        &[],
    )
    .unwrap();
}
