// SPDX-License-Identifier: GPL-2.0 OR MIT
//! Modules under default deny: with `pvguard_code=measure` a module's
//! text becomes executable only through the hypervisor, which logs it;
//! the module runs (its static keys patched by the hypervisor), unloads,
//! and its code is released. Under `lock` the load fails with an error
//! from insmod and the guest goes on. JIT code (the BPF JIT's packs,
//! kprobes' slots) is executable and never writable: the hypervisor
//! performs the stores of the kernel's text-poke path into it.

use qemu_tests::{artifacts, check, module, run, Boot, Outcome};

const KP: &str = "/sys/hypervisor/pvguard/kernel_protect";
/// The full self-check report, code log included, is a debugfs dump:
/// sysfs has one value per file.
const DBG: &str = "/sys/kernel/debug/pvguard";

fn modules(append: &str, exec: &str, tag: &str) -> Outcome {
    let a = artifacts();
    let lib = a.kernel_build.join("lib");
    let b = Boot {
        append: append.into(),
        add: vec![
            lib.join("test_static_key_base.ko"),
            lib.join("test_static_keys.ko"),
        ],
        exec: Some(exec.into()),
        ..Boot::default()
    };
    run(&a, &b, tag).unwrap()
}

#[test]
fn modules_load_run_and_unload_under_default_deny() {
    let o = modules(
        "pvguard=on pvguard_code=measure",
        &format!(
            "insmod /pvguard/test_static_key_base.ko && insmod /pvguard/test_static_keys.ko && echo static-keys-ok; \
             rmmod test_static_keys && rmmod test_static_key_base && echo unloaded; \
             insmod /pvguard/test_static_key_base.ko && echo reloaded; \
             echo 1 > {KP}/self_check; cat {DBG}/kernel_protect_self_check"
        ),
        "code-modules-measure",
    );
    check(
        &o,
        &[
            "hyp-stub: code policy measure",
            "static-keys-ok",
            "unloaded",
            "reloaded",
            "verdict=intact",
            "pvguard-init: exit status 0",
        ],
        &[],
    )
    .unwrap();
    assert!(
        !o.console.contains("hyp-stub: blocked"),
        "nothing was refused"
    );
    let s = o.stats().expect("stats");
    // test_static_keys flips keys whose sites are in module text: the
    // hypervisor performed those patches.
    assert!(s.num("kp_perm_patches") > 0);
    assert_eq!(s.num("kp_perm_patches_refused"), 0);
    assert_eq!(s.num("kp_perm_exec_blocked"), 0);
    // Three loads (text and init text each), two unloads and three
    // freed init texts: every executable range logged, and released.
    let (exec, release) = (s.num("kp_code_log_exec"), s.num("kp_code_log_release"));
    assert!(exec >= 4, "exec records: {exec}");
    assert!(release >= 4, "release records: {release}");
    assert_eq!(
        s.num("kp_code_log_records"),
        exec + release
            + s.num("kp_perm_patches")
            + s.num("kp_perm_copies")
            + s.num("kp_code_log_sites"),
        "every record accounted for"
    );
    // Its jump labels came with its text, and went with it.
    eprintln!(
        "jump-label sites of modules: {} registered in {} lists, {} released, {} held",
        s.num("kp_perm_sites_registered"),
        s.num("kp_code_log_sites"),
        s.num("kp_perm_sites_released"),
        s.num("kp_perm_sites")
    );
    assert!(s.num("kp_code_log_sites") >= 1);
    assert!(s.num("kp_perm_sites_registered") > 0);
    assert_eq!(
        s.num("kp_perm_sites_released"),
        s.num("kp_perm_sites_registered") - s.num("kp_perm_sites"),
    );
    // The guest's self-check shows the code log; if nothing was logged
    // after it (module init memory is freed from a workqueue), it is the
    // hypervisor's final one.
    let shown = |key: &str| {
        o.console
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::to_owned)
    };
    let records: u64 = shown("code_log_records=").expect("shown").parse().unwrap();
    assert!(records > 0 && records <= s.num("kp_code_log_records"));
    if records == s.num("kp_code_log_records") {
        assert_eq!(shown("code_log=").as_deref(), s.text("kp_code_log"));
    }
    let refused: u64 =
        s.0.iter()
            .filter(|(k, _)| k.starts_with("kp_perm_refused_"))
            .map(|(_, v)| v.parse::<u64>().unwrap_or(0))
            .sum();
    assert_eq!(refused, 0, "no call refused");
}

const MODPATCH: [&str; 3] = [
    "B to other code at a jump-label site",
    "B to a label at a NOP that is no site",
    "the site's own B",
];

fn module_patches(append: &str, tag: &str) -> Outcome {
    let pokes: String = (0..MODPATCH.len())
        .map(|n| format!("echo {n} > {DBG}/kp_modpatch; "))
        .collect();
    modules(
        append,
        &format!(
            "insmod /pvguard/test_static_key_base.ko && insmod /pvguard/test_static_keys.ko && echo loaded; {pokes}"
        ),
        tag,
    )
}

/// Patches into a module's text that the old NOP <-> B rule let through
/// (both end in a B to the module's own code): only its registered
/// jump-label sites may change, and only to their own labels.
#[test]
fn module_text_patches_other_than_its_jump_labels_are_refused() {
    let o = module_patches("pvguard=on pvguard_code=measure", "code-modpatch");
    let mut expect = vec!["loaded".to_string()];
    for (n, name) in MODPATCH.iter().enumerate() {
        expect.push(format!("modpatch {n}: {name}"));
        expect.push(match n {
            2 => "modpatch 2: written".into(),
            _ => format!("modpatch {n}: refused (-14)"),
        });
    }
    let expect: Vec<&str> = expect.iter().map(String::as_str).collect();
    check(&o, &expect, &[]).unwrap();
    assert!(!o.console.contains("not blocked") && !o.console.contains("not put back"));
    let s = o.stats().expect("stats");
    assert_eq!(s.num("kp_perm_patches_refused"), 2);
    assert!(s.num("kp_perm_sites") > 0);
    assert_eq!(s.num("kp_perm_refused_site"), 0);
}

/// The control: the same pokes on the same kernel without protection.
#[test]
fn the_same_module_text_patches_succeed_without_protection() {
    let o = module_patches("pvguard=off", "code-modpatch-control");
    check(
        &o,
        &[
            "loaded",
            "modpatch 0: written: not blocked",
            "modpatch 1: written: not blocked",
            "modpatch 2: written",
        ],
        &[],
    )
    .unwrap();
    assert!(!o
        .console
        .lines()
        .any(|l| l.contains("modpatch") && (l.contains("refused") || l.contains("not put back"))));
}

const TRACING: &str = "/sys/kernel/tracing";

/// The function tracer over a module's functions: on, filtered to them,
/// before the module loads (its call sites are patched as it comes up),
/// then off; then on over all functions once it is loaded, and off.
fn trace_module(append: &str, tag: &str) -> Outcome {
    let a = artifacts();
    let ko = module::build(&a, "ftrace_target", tag).unwrap();
    let calls = "/sys/module/ftrace_target/parameters/calls";
    let b = Boot {
        append: append.into(),
        add: vec![ko],
        exec: Some(format!(
            "mount -t tracefs nodev {TRACING}; \
             echo ':mod:ftrace_target' > {TRACING}/set_ftrace_filter; \
             echo function > {TRACING}/current_tracer && echo tracer-on; \
             insmod /pvguard/ftrace_target.ko && echo loaded-while-tracing; \
             echo 5 > {calls}; echo 0 > {TRACING}/tracing_on; \
             echo \"module calls in the trace: $(grep -c ftrace_target_work {TRACING}/trace)\"; \
             echo nop > {TRACING}/current_tracer && echo tracer-off; \
             echo > {TRACING}/set_ftrace_filter; echo 1 > {TRACING}/tracing_on; \
             echo function > {TRACING}/current_tracer && echo all-functions-on; \
             echo \"module functions traced: $(grep -c ftrace_target {TRACING}/enabled_functions)\"; \
             echo 3 > {calls} && echo nop > {TRACING}/current_tracer && echo again-off; \
             rmmod ftrace_target && echo unloaded; \
             echo \"ftrace-bugs: $(dmesg | grep -c -e 'ftrace bug' -e 'ftrace failed')\""
        )),
        ..Boot::default()
    };
    run(&a, &b, tag).unwrap()
}

/// The number after `key` on the console.
fn shown(o: &Outcome, key: &str) -> u64 {
    o.console
        .split(key)
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// ftrace over a module: its call sites, named with its text (and the
/// PLT it calls ftrace through from the 2 GiB module region), are
/// patched by the hypervisor, whether tracing was on when it loaded
/// (filtered to its functions) or turned on later over all functions.
#[test]
fn the_function_tracer_traces_module_functions_under_default_deny() {
    let o = trace_module("pvguard=on pvguard_code=measure", "code-modftrace");
    check(
        &o,
        &[
            "tracer-on",
            "loaded-while-tracing",
            "ftrace-target: 5 calls, sum 25",
            "module calls in the trace: ",
            "tracer-off",
            "all-functions-on",
            "module functions traced: ",
            "ftrace-target: 3 calls, sum 9",
            "again-off",
            "unloaded",
            "ftrace-bugs: 0",
            "pvguard-init: exit status 0",
        ],
        &[],
    )
    .unwrap();
    let functions = shown(&o, "module functions traced: ");
    let calls = shown(&o, "module calls in the trace: ");
    eprintln!("module functions traced: {functions}, module calls traced: {calls}");
    assert!(functions >= 2 && calls >= 5, "{functions} {calls}");
    let s = o.stats().expect("stats");
    assert!(s.num("kp_perm_patches_ftrace") > 0);
    assert_eq!(s.num("kp_perm_patches_refused"), 0);
    assert_eq!(s.num("kp_perm_refused_site"), 0);
}

/// The control: the same tracing without protection.
#[test]
fn the_function_tracer_traces_module_functions_without_protection() {
    let o = trace_module("pvguard=off", "code-modftrace-control");
    check(
        &o,
        &[
            "loaded-while-tracing",
            "ftrace-target: 5 calls, sum 25",
            "again-off",
            "ftrace-bugs: 0",
        ],
        &[],
    )
    .unwrap();
    assert!(shown(&o, "module functions traced: ") >= 2);
    assert!(shown(&o, "module calls in the trace: ") >= 5);
}

#[test]
fn hypercalls_per_module_load() {
    let o = modules(
        "pvguard=on pvguard_code=measure",
        "insmod /pvguard/test_static_key_base.ko && echo loaded",
        "code-modules-calls",
    );
    check(&o, &["loaded"], &[]).unwrap();
    let calls = o.stats().expect("stats").num("kp_perm_calls");
    eprintln!("MEM_PERMISSIONS calls for one module load: {calls}");
    assert!(calls <= 3, "{calls} calls (target 3)");
}

#[test]
fn lock_refuses_a_module_load_cleanly() {
    let o = modules(
        "pvguard=on pvguard_code=lock",
        "insmod /pvguard/test_static_key_base.ko; echo insmod-status-$?; echo guest-goes-on",
        "code-modules-lock",
    );
    check(
        &o,
        &[
            "hyp-stub: code policy lock",
            "refused: Refused(Denied)",
            "insmod-status-1",
            "guest-goes-on",
            "pvguard-init: exit status 0",
        ],
        &[],
    )
    .unwrap();
    for bad in ["Oops", "Internal error", "hyp-stub: blocked"] {
        assert!(!o.console.contains(bad), "{bad}");
    }
    let s = o.stats().expect("stats");
    assert!(s.num("kp_perm_refused_locked") >= 1);
    // Only the image's own other text (.rodata.text), at enable.
    assert_eq!(s.num("kp_code_log_exec"), 1);
}

/// Loads test_static_keys, then writes its text, rodata and
/// ro_after_init through writable aliases.
fn module_writes(append: &str, tag: &str) -> Outcome {
    let probes: Vec<String> = (0..3)
        .map(|i| {
            format!(
                "sh -c 'echo {i} > /sys/kernel/debug/pvguard/kp_modwrite'; echo modwrite-{i}-done"
            )
        })
        .collect();
    modules(
        append,
        &format!(
            "insmod /pvguard/test_static_key_base.ko && insmod /pvguard/test_static_keys.ko && echo loaded; {}",
            probes.join("; ")
        ),
        tag,
    )
}

#[test]
fn writing_a_loaded_module_is_blocked_under_default_deny() {
    let o = module_writes("pvguard=on pvguard_code=measure", "code-modwrite-measure");
    check(
        &o,
        &[
            "loaded",
            "modwrite: writing test_static_keys' text",
            "hyp-stub: blocked write of guest RAM",
            "modwrite-0-done",
            "modwrite: writing test_static_keys' rodata",
            "hyp-stub: blocked write of guest RAM",
            "modwrite-1-done",
            "modwrite: writing test_static_keys' ro_after_init",
            "hyp-stub: blocked write of guest RAM",
            "modwrite-2-done",
            "pvguard-init: exit status 0",
        ],
        &["Internal error", "Oops"],
    )
    .unwrap();
    assert!(!o.console.contains("not blocked"));
    assert_eq!(o.stats().expect("stats").num("ram_faults_refused"), 3);
}

#[test]
fn writing_a_loaded_module_succeeds_under_image_only_protection() {
    let o = module_writes("pvguard=on pvguard_code=image", "code-modwrite-image");
    check(
        &o,
        &[
            "loaded",
            "modwrite: text changed: not blocked",
            "modwrite: rodata changed: not blocked",
            "modwrite: ro_after_init changed: not blocked",
        ],
        &[],
    )
    .unwrap();
}

/// The BPF JIT's cycle on one page (`kp_jit`), as BPF allocates it (0)
/// and as module text (1); then, with `real`, the kernel's own JIT on a
/// classic filter (2).
fn jit(append: &str, tag: &str, real: bool) -> Outcome {
    let a = artifacts();
    let which: &[u8] = if real { &[2] } else { &[0, 1] };
    let exec: Vec<String> = which
        .iter()
        .map(|i| format!("echo {i} > /sys/kernel/debug/pvguard/kp_jit; echo jit-{i}-done"))
        .collect();
    let b = Boot {
        append: append.into(),
        exec: Some(exec.join("; ")),
        ..Boot::default()
    };
    run(&a, &b, tag).unwrap()
}

#[test]
fn jit_code_is_copied_in_by_the_hypervisor_under_default_deny() {
    let o = jit("pvguard=on pvguard_code=measure", "code-jit-measure", false);
    check(
        &o,
        &[
            "jit bpf: copy done",
            "jit bpf: copied code returned 42",
            "jit bpf: invalidate done",
            "jit-0-done",
            // Ordinary code is immutable: the same copy is refused, and
            // the caller gets an error.
            "jit module-text: copy failed",
            "jit module-text: invalidate failed",
            "jit-1-done",
            "pvguard-init: exit status 0",
        ],
        &["Internal error", "Oops", "hyp-stub: blocked"],
    )
    .unwrap();
    let s = o.stats().expect("stats");
    // A 64-bit and a 32-bit store copy the three instructions (BTI C,
    // MOV, RET), three 32-bit stores put the BRKs back.
    assert_eq!(s.num("kp_perm_copies"), 5);
    // The module-text page: the copy's first store, the fill's first.
    assert_eq!(s.num("kp_perm_patches_refused"), 2);
    assert_eq!(s.num("kp_perm_exec_blocked"), 0);
    assert_eq!(
        s.num("kp_code_log_records"),
        s.num("kp_code_log_exec")
            + s.num("kp_code_log_release")
            + s.num("kp_perm_patches")
            + s.num("kp_perm_copies"),
        "every store is in the code log"
    );
}

#[test]
fn jit_copies_into_any_code_succeed_without_protection() {
    // The control: the same probe with protection off copies into both.
    let o = jit("pvguard=off", "code-jit-off", false);
    check(
        &o,
        &[
            "jit bpf: copied code returned 42",
            "jit module-text: copied code returned 42",
            "jit-1-done",
        ],
        &["Internal error", "Oops"],
    )
    .unwrap();
}

#[test]
fn lock_refuses_jit_code_cleanly() {
    let o = jit("pvguard=on pvguard_code=lock", "code-jit-lock", false);
    check(
        &o,
        &[
            "jit bpf: set_memory_rox failed",
            "jit-0-done",
            "jit module-text: set_memory_rox failed",
            "jit-1-done",
            "pvguard-init: exit status 0",
        ],
        &["Internal error", "Oops", "copied code returned"],
    )
    .unwrap();
    let s = o.stats().expect("stats");
    assert!(s.num("kp_perm_refused_locked") >= 2);
    assert_eq!(s.num("kp_perm_copies"), 0);
}

/// The kernel's BPF JIT itself: the crash this path was built for (the
/// JIT's copy into its ROX pack refused, the loading task oopsing) is
/// gone, and the program runs JIT-compiled.
#[test]
fn the_bpf_jit_compiles_and_runs_under_default_deny() {
    let o = jit("pvguard=on pvguard_code=measure", "code-bpf-measure", true);
    check(
        &o,
        &[
            "jit bpf-prog: jited=1 returned 42",
            "jit-2-done",
            "pvguard-init: exit status 0",
        ],
        &["Internal error", "Oops", "hyp-stub: blocked"],
    )
    .unwrap();
    let s = o.stats().expect("stats");
    assert!(
        s.num("kp_perm_copies") > 0,
        "the JIT's copy went through hyp-stub"
    );
    assert_eq!(s.num("kp_perm_patches_refused"), 0);
    assert_eq!(s.num("kp_perm_exec_blocked"), 0);
}

#[test]
fn the_bpf_jit_runs_without_protection() {
    let o = jit("pvguard=off", "code-bpf-off", true);
    check(&o, &["jit bpf-prog: jited=1 returned 42"], &["Oops"]).unwrap();
}

/// Under lock the pack cannot become executable: the JIT gives up and the
/// interpreter runs the program, with no oops.
#[test]
fn under_lock_the_bpf_jit_falls_back_to_the_interpreter() {
    let o = jit("pvguard=on pvguard_code=lock", "code-bpf-lock", true);
    check(
        &o,
        &[
            "jit bpf-prog: jited=0 returned 42",
            "jit-2-done",
            "pvguard-init: exit status 0",
        ],
        &["Internal error", "Oops"],
    )
    .unwrap();
    assert_eq!(o.stats().expect("stats").num("kp_perm_copies"), 0);
}
