// SPDX-License-Identifier: GPL-2.0 OR MIT
//! `cargo xtask bench`: the benchmarks, measured side by side in one run
//! (configurations interleaved, so machine load affects them alike), and
//! written to `docs/benchmarks.md` with the command that reproduces them.
//!
//! - Boot: plain QEMU, hyp-stub without pvguard, hyp-stub with pvguard
//!   (MMIO guard + kernel protect): wall time from QEMU start to power
//!   off, and the exits the hypervisor counted.
//! - Static keys: the guest times N enable+disable flips of a key whose
//!   site is in core kernel text, with and without kernel protect.
//! - MMIO guard: hypercalls for one boot, upstream's pKVM guest (one per
//!   page) against pvguard's ranged calls.

use std::fmt::Write as _;
use std::time::Duration;

use qemu_tests::{Artifacts, Boot, Outcome};

use crate::{build_all, paths};

const BOOTS: usize = 20;
const FLIP_BOOTS: usize = 5;
const FLIPS: u64 = 2000;

fn boot(a: &Artifacts, b: &Boot, tag: &str) -> Result<Outcome, String> {
    let o = qemu_tests::run(a, b, tag)?;
    if !o.clean_exit() || !o.console.contains("pvguard-init: powering off") {
        return Err(format!("benchmark boot {tag} failed:\n{}", o.console));
    }
    Ok(o)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|x, y| x.total_cmp(y));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

/// Guest time spent in the enable call: from the last message before it
/// to the first after it (kernel timestamps, seconds).
fn enable_cost(console: &str) -> Option<f64> {
    let stamp = |needle: &str| {
        let line = console.lines().find(|l| l.contains(needle))?;
        line.strip_prefix('[')?
            .split(']')
            .next()?
            .trim()
            .parse::<f64>()
            .ok()
    };
    Some(stamp("pvguard: kernel protect: protected")? - stamp("Freeing unused kernel memory")?)
}

fn ns_per_flip(console: &str) -> Option<f64> {
    let line = console.lines().find(|l| l.contains("ns per flip"))?;
    let before = line.split(" ns per flip").next()?;
    before.rsplit(' ').next()?.parse().ok()
}

/// Runs the benchmarks and writes `docs/benchmarks.md`.
pub fn run() -> Result<(), String> {
    let a = build_all()?;
    let plain = Boot {
        hyp: false,
        timeout: Duration::from_secs(60),
        ..Boot::default()
    };
    let hyp = Boot {
        timeout: Duration::from_secs(60),
        ..Boot::default()
    };
    let protected = Boot {
        append: "pvguard=on".into(),
        ..hyp.clone()
    };

    paths::step(&format!(
        "boot time: {BOOTS} boots of each configuration, interleaved"
    ));
    let (mut t_plain, mut t_hyp, mut t_prot) = (Vec::new(), Vec::new(), Vec::new());
    let (mut exits_hyp, mut exits_prot) = (0, 0);
    let mut enable = Vec::new();
    for i in 0..BOOTS {
        t_plain.push(boot(&a, &plain, "bench-plain")?.elapsed.as_secs_f64());
        let o = boot(&a, &hyp, "bench-hyp")?;
        t_hyp.push(o.elapsed.as_secs_f64());
        exits_hyp = o.stats().map_or(0, |s| s.num("exits_total"));
        let o = boot(&a, &protected, "bench-prot")?;
        t_prot.push(o.elapsed.as_secs_f64());
        enable.extend(enable_cost(&o.console));
        exits_prot = o.stats().map_or(0, |s| s.num("exits_total"));
        eprintln!(
            "    round {}: plain {:.3}s, hyp-stub {:.3}s, protected {:.3}s",
            i + 1,
            t_plain[i],
            t_hyp[i],
            t_prot[i]
        );
    }
    let (n_plain, n_hyp, n_prot) = (min(&t_plain), min(&t_hyp), min(&t_prot));
    let m_enable = median(&mut enable);
    let (m_plain, m_hyp, m_prot) = (
        median(&mut t_plain),
        median(&mut t_hyp),
        median(&mut t_prot),
    );

    paths::step(&format!(
        "static keys: {FLIP_BOOTS} boots each timing {FLIPS} flips, with and without protection"
    ));
    let flip = format!("echo {FLIPS} > /sys/kernel/debug/pvguard/kp_flip");
    let flips_off = Boot {
        exec: Some(flip.clone()),
        ..hyp.clone()
    };
    let flips_on = Boot {
        exec: Some(flip),
        ..protected.clone()
    };
    let (mut f_off, mut f_on) = (Vec::new(), Vec::new());
    let mut patches = 0;
    for _ in 0..FLIP_BOOTS {
        let o = boot(&a, &flips_off, "bench-flip-off")?;
        f_off.push(ns_per_flip(&o.console).ok_or("no flip timing in the guest's output")?);
        let o = boot(&a, &flips_on, "bench-flip-on")?;
        f_on.push(ns_per_flip(&o.console).ok_or("no flip timing in the guest's output")?);
        patches = o.stats().map_or(0, |s| s.num("kp_patches_accepted"));
    }
    let (m_off, m_on) = (median(&mut f_off), median(&mut f_on));

    paths::step("MMIO guard: hypercalls for one boot, upstream pKVM guest vs pvguard");
    let upstream = Boot {
        services: hyp_stub::boot::DEFAULT_SERVICES | hyp_stub::boot::MMIO_GUARD_FROM_BOOT,
        ..hyp.clone()
    };
    let up = boot(&a, &upstream, "bench-upstream")?
        .stats()
        .ok_or("no stats")?;
    let ours = boot(&a, &protected, "bench-ours")?
        .stats()
        .ok_or("no stats")?;
    let up_calls = up.num("call_0xc6000007");
    let our_calls = ours.num("mmio_guard_hypercalls");
    let our_maps = ours.num("mmio_guard_map_calls");

    let mut doc = String::new();
    let _ = writeln!(doc, "<!-- SPDX-License-Identifier: GPL-2.0 OR MIT -->");
    let _ = writeln!(doc, "# Benchmarks\n");
    let _ = writeln!(
        doc,
        "Reproduce with `cargo xtask bench` (it rewrites this file). QEMU TCG on this"
    );
    let _ = writeln!(
        doc,
        "machine ({} cores); configurations are interleaved in one run and",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let _ = writeln!(
        doc,
        "compared as ratios of medians. Counts (exits, hypercalls, patches) are"
    );
    let _ = writeln!(doc, "deterministic; times are not.\n");
    let _ = writeln!(
        doc,
        "## Boot time ({BOOTS} boots each, QEMU start to power off)\n"
    );
    let _ = writeln!(doc, "| configuration | median | min | hypervisor exits |");
    let _ = writeln!(doc, "|---|---|---|---|");
    let _ = writeln!(
        doc,
        "| plain QEMU (guest at EL1, no hypervisor) | {m_plain:.3} s | {n_plain:.3} s | - |"
    );
    let _ = writeln!(
        doc,
        "| hyp-stub, pvguard off | {m_hyp:.3} s | {n_hyp:.3} s | {exits_hyp} |"
    );
    let _ = writeln!(doc, "| hyp-stub, pvguard=on (MMIO guard + kernel protect) | {m_prot:.3} s | {n_prot:.3} s | {exits_prot} |\n");
    let _ = writeln!(
        doc,
        "- hyp-stub / plain QEMU: **{:.3}** (median), {:.3} (min)",
        m_hyp / m_plain,
        n_hyp / n_plain
    );
    let _ = writeln!(doc, "- protected / unprotected (both under hyp-stub): **{:.3}** (median), {:.3} (min); target <= 1.05", m_prot / m_hyp, n_prot / n_hyp);
    let _ = writeln!(doc, "- of which enabling kernel protect (stage-2 changes and the SHA-256 of text+rodata, on the guest's clock): median {:.1} ms\n", m_enable * 1000.0);
    let _ = writeln!(doc, "Wall-clock boot times under TCG vary by tens of milliseconds from run to run; the enable cost is the stable part of the difference.\n");
    let _ = writeln!(doc, "## Static key flip ({FLIP_BOOTS} boots each, {FLIPS} enable+disable flips timed in the guest)\n");
    let _ = writeln!(doc, "| configuration | median ns per flip |");
    let _ = writeln!(doc, "|---|---|");
    let _ = writeln!(doc, "| unprotected | {m_off:.0} |");
    let _ = writeln!(
        doc,
        "| protected (each patch trapped, validated and written by hyp-stub) | {m_on:.0} |\n"
    );
    let _ = writeln!(doc, "- protected / unprotected: **{:.2}** (target <= 3); hypervisor-performed patches per boot: {patches} (2 per flip)\n", m_on / m_off);
    let _ = writeln!(doc, "## MMIO guard hypercalls for one boot\n");
    let _ = writeln!(doc, "| guest | MMIO-guard map/unmap hypercalls |");
    let _ = writeln!(doc, "|---|---|");
    let _ = writeln!(
        doc,
        "| upstream 6.12 pKVM guest driver (function 7, one per 4 KiB page) | {up_calls} |"
    );
    let _ = writeln!(doc, "| pvguard (ranged MAP/UNMAP, one per range that becomes guarded) | {our_calls} ({our_maps} maps) |\n");
    let _ = writeln!(
        doc,
        "- upstream / pvguard: **{:.0}x** fewer (target >= 4x)",
        up_calls as f64 / our_calls.max(1) as f64
    );
    let out = paths::repo().join("docs/benchmarks.md");
    std::fs::create_dir_all(out.parent().unwrap_or(&paths::repo())).map_err(|e| e.to_string())?;
    std::fs::write(&out, &doc).map_err(|e| format!("{}: {e}", out.display()))?;
    print!("{doc}");
    Ok(())
}
