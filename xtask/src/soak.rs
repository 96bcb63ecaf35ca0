// SPDX-License-Identifier: GPL-2.0 OR MIT
//! `cargo xtask soak`: many boots of the SMP soak (`qemu_tests::soak`),
//! every one checked; the results go to `docs/benchmarks.md`.

use std::fmt::Write;
use std::time::Instant;

use qemu_tests::soak;

use crate::build_all;

/// Boots of a full soak.
pub const BOOTS: usize = 50;

/// Runs `boots` soak boots; fails if any boot fails, after writing what
/// every boot showed.
pub fn run(boots: usize) -> Result<(), String> {
    let a = build_all()?;
    let start = Instant::now();
    let mut results = Vec::new();
    let mut failures = Vec::new();
    for i in 0..boots {
        let o = qemu_tests::run(&a, &soak::boot(&a.kernel_build), "soak")?;
        match soak::verify(&o) {
            Ok(r) => {
                println!(
                    "soak boot {}/{boots}: ok in {:.1} s ({} retried faults, {} injected, {} patches, {} MMIO-guard calls)",
                    i + 1,
                    o.elapsed.as_secs_f64(),
                    r.retries,
                    r.faults,
                    r.patches,
                    r.mmio_calls
                );
                results.push(r);
            }
            Err(e) => {
                println!("soak boot {}/{boots}: FAILED\n{e}", i + 1);
                failures.push(i + 1);
            }
        }
    }
    let sum = |f: fn(&soak::Result) -> u64| results.iter().map(f).sum::<u64>();
    let max = |f: fn(&soak::Result) -> u64| results.iter().map(f).max().unwrap_or(0);
    let mut doc = String::new();
    let _ = writeln!(doc, "## SMP soak: `cargo xtask soak`\n");
    let _ = writeln!(
        doc,
        "Reproduce with `cargo xtask soak` (`--boots N`; default {BOOTS}). Each boot: a\n\
         protected guest (`pvguard=on`) with {} CPUs, on which at once two\n\
         workers flip a built-in static key (the hypervisor performs each\n\
         patch), one maps, reads and unmaps guarded MMIO (a shared page and\n\
         a batch of ranges), and one loads and unloads `test_static_keys` and\n\
         its base module; then a self-check. A boot passes when every worker\n\
         finished with no failed step, nothing was refused, the self-check\n\
         says intact and the guest powered off cleanly.\n",
        soak::CPUS
    );
    let _ = writeln!(doc, "| boots | passed | failed | wall time |");
    let _ = writeln!(doc, "|---|---|---|---|");
    let _ = writeln!(
        doc,
        "| {boots} | {} | {} | {:.0} s |\n",
        results.len(),
        failures.len(),
        start.elapsed().as_secs_f64()
    );
    let _ = writeln!(
        doc,
        "| counter, over the passing boots | total | max in one boot |"
    );
    let _ = writeln!(doc, "|---|---|---|");
    for (what, f) in [
        (
            "stage-2 faults retried (raced with a block split)",
            (|r: &soak::Result| r.retries) as fn(&soak::Result) -> u64,
        ),
        ("exceptions injected into the guest", |r| r.faults),
        ("text patches performed by the hypervisor", |r| r.patches),
        ("MMIO-guard map/unmap calls", |r| r.mmio_calls),
        ("hypervisor exits", |r| r.exits),
    ] {
        let _ = writeln!(doc, "| {what} | {} | {} |", sum(f), max(f));
    }
    if !failures.is_empty() {
        let _ = writeln!(doc, "\nFailed boots: {failures:?}.");
    }
    crate::doc::write_benchmarks_section("soak", &doc)?;
    print!("{doc}");
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("{} of {boots} soak boots failed", failures.len()))
    }
}
