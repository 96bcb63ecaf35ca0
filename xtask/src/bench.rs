// SPDX-License-Identifier: GPL-2.0 OR MIT
//! `cargo xtask bench`: the benchmarks, measured side by side in one run
//! (configurations interleaved, so machine load affects them alike), and
//! written to `docs/benchmarks.md` with the command that reproduces them.
//!
//! - Boot: plain QEMU, and hyp-stub without and with pvguard (MMIO guard
//!   and kernel protect), all on the same CPUs: wall time from QEMU start
//!   to power off, the exits the hypervisor counted, what enabling
//!   protection cost, and how much of the baseline the guest's idle time
//!   hashed before power-off.
//! - Static keys: the guest times N enable+disable flips of a key whose
//!   site is in core kernel text, with and without kernel protect.
//! - MMIO guard: hypercalls for one boot, upstream's pKVM guest (one per
//!   page) against pvguard's ranged calls.

use std::fmt::Write as _;
use std::time::Duration;

use qemu_tests::{Artifacts, Boot, Outcome};

use crate::{build_all, paths};

/// Boots of each boot-time configuration, unless `--boots` says otherwise.
pub const BOOTS: usize = 40;
const FLIP_BOOTS: usize = 5;
/// Boots per configuration for the module load+unload timing.
const MODULE_BOOTS: usize = 5;
/// Load+unload cycles timed in each of those boots.
const MODULE_CYCLES: usize = 30;
const FLIPS: u64 = 2000;

fn boot(a: &Artifacts, b: &Boot, tag: &str) -> Result<Outcome, String> {
    let o = qemu_tests::run(a, b, tag)?;
    if !o.clean_exit() || !o.console.contains("pvguard-init: powering off") {
        return Err(format!("benchmark boot {tag} failed:\n{}", o.console));
    }
    Ok(o)
}

/// The seconds of busybox `time`'s `real` line (`real\t0m 1.23s`).
fn real_seconds(console: &str) -> Option<f64> {
    let line = console.lines().find(|l| l.starts_with("real"))?;
    let t = line.trim_start_matches("real").trim();
    let (m, s) = t.split_once('m')?;
    Some(
        m.trim().parse::<f64>().ok()? * 60.0
            + s.trim().trim_end_matches('s').parse::<f64>().ok()?,
    )
}

/// The guest's RAM in MiB, from hyp-stub's `guest RAM a..b` line.
fn guest_ram_mib(console: &str) -> Option<u64> {
    let range = console.split("guest RAM ").nth(1)?.split(',').next()?;
    let (start, end) = range.split_once("..")?;
    let hex = |x: &str| u64::from_str_radix(x.trim().trim_start_matches("0x"), 16).ok();
    Some((hex(end)?.checked_sub(hex(start)?)?) >> 20)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|x, y| x.total_cmp(y));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

/// The kernel timestamp (seconds) of the first console line containing
/// `needle`.
fn stamp(console: &str, needle: &str) -> Option<f64> {
    let line = console.lines().find(|l| l.contains(needle))?;
    line.strip_prefix('[')?
        .split(']')
        .next()?
        .trim()
        .parse::<f64>()
        .ok()
}

/// Guest time spent in the enable call: from the last message before it
/// to the first after it (kernel timestamps, seconds).
fn enable_cost(console: &str) -> Option<f64> {
    Some(
        stamp(console, "pvguard: kernel protect: protected")?
            - stamp(console, "Freeing unused kernel memory")?,
    )
}

/// The self-check file a root user writes to ask for a check.
const KP_SELF_CHECK: &str = "/sys/hypervisor/pvguard/kernel_protect/self_check";

/// TEXT+RODATA's size, from hyp-stub's `kernel protect: enabled; TEXT
/// a..b RODATA c..d` line.
fn measured_bytes(console: &str) -> Option<u64> {
    let line = console
        .lines()
        .find(|l| l.contains("kernel protect: enabled"))?;
    let span = |name: &str| -> Option<u64> {
        let r = line.split(name).nth(1)?.split_whitespace().next()?;
        let (a, b) = r.split_once("..")?;
        let hex = |x: &str| u64::from_str_radix(x.trim_start_matches("0x"), 16).ok();
        hex(b)?.checked_sub(hex(a)?)
    };
    Some(span("TEXT ")? + span("RODATA ")?)
}

/// One boot configuration of the boot-time benchmark and what it gave.
struct Config {
    name: &'static str,
    boot: Boot,
    /// QEMU start to exit, seconds.
    times: Vec<f64>,
    /// The guest's clock at power-off, seconds (no QEMU start-up or exit).
    guest: Vec<f64>,
    exits: u64,
    enable_ms: Vec<f64>,
    /// Bytes of the baseline hashed by power-off, and of all of it.
    hashed: Vec<f64>,
    measured: u64,
    /// Measurement steps taken in the guest's idle time.
    idle_steps: Vec<f64>,
}

impl Config {
    fn new(name: &'static str, boot: Boot) -> Self {
        Self {
            name,
            boot,
            times: Vec::new(),
            guest: Vec::new(),
            exits: 0,
            enable_ms: Vec::new(),
            hashed: Vec::new(),
            measured: 0,
            idle_steps: Vec::new(),
        }
    }
}

fn ns_per_flip(console: &str) -> Option<f64> {
    let line = console.lines().find(|l| l.contains("ns per flip"))?;
    let before = line.split(" ns per flip").next()?;
    before.rsplit(' ').next()?.parse().ok()
}

/// Runs the benchmarks and writes `docs/benchmarks.md`.
pub fn run(boots: usize) -> Result<(), String> {
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

    let self_check = format!("echo 1 > {KP_SELF_CHECK} && cat {KP_SELF_CHECK}");
    let mut configs = [
        Config::new("plain QEMU (guest at EL1, no hypervisor)", plain.clone()),
        Config::new("hyp-stub, pvguard off", hyp.clone()),
        Config::new(
            "hyp-stub, pvguard=on (baseline hashed in idle time)",
            protected.clone(),
        ),
        Config::new(
            "hyp-stub, pvguard=on, init asks for a self-check",
            Boot {
                exec: Some(self_check),
                ..protected.clone()
            },
        ),
    ];
    paths::step(&format!(
        "boot time: {boots} boots of each of {} configurations, interleaved",
        configs.len()
    ));
    for i in 0..boots {
        let mut round = Vec::new();
        for (n, c) in configs.iter_mut().enumerate() {
            let o = boot(&a, &c.boot, &format!("bench-boot-{n}"))?;
            c.times.push(o.elapsed.as_secs_f64());
            c.guest.push(
                stamp(&o.console, "reboot: Power down")
                    .ok_or("no power-off timestamp in the guest's output")?,
            );
            c.exits = o.stats().map_or(0, |s| s.num("exits_total"));
            c.enable_ms
                .extend(enable_cost(&o.console).map(|s| s * 1000.0));
            if let Some(s) = o
                .stats()
                .filter(|s| s.text("kp_state") == Some("protected"))
            {
                c.hashed.push(s.num("kp_baseline_hashed") as f64);
                c.idle_steps.push(s.num("kp_measure_steps_idle") as f64);
                c.measured = measured_bytes(&o.console).unwrap_or(0);
            }
            round.push(format!("{:.3}s", o.elapsed.as_secs_f64()));
        }
        eprintln!("    round {}: {}", i + 1, round.join(", "));
    }
    let [c_plain, c_hyp, c_prot, c_check] = &configs;
    if c_check.hashed.iter().any(|&h| h as u64 != c_check.measured) {
        return Err("a self-check returned before the whole baseline was hashed".into());
    }

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
    let ours_boot = boot(&a, &protected, "bench-ours")?;
    let ours = ours_boot.stats().ok_or("no stats")?;
    let up_calls = up.num("call_0xc6000007");
    let our_calls = ours.num("mmio_guard_hypercalls");
    let our_maps = ours.num("mmio_guard_map_calls");

    paths::step(&format!(
        "modules: {MODULE_BOOTS} boots each timing {MODULE_CYCLES} load+unload cycles, protected and not"
    ));
    let lib = a.kernel_build.join("lib");
    let cycles = Boot {
        add: vec![lib.join("test_static_key_base.ko")],
        exec: Some(format!(
            "time sh -c 'i=0; while [ $i -lt {MODULE_CYCLES} ]; do insmod /pvguard/test_static_key_base.ko && rmmod test_static_key_base; i=$((i+1)); done'"
        )),
        ..hyp.clone()
    };
    let cycles_on = Boot {
        append: "pvguard=on".into(),
        ..cycles.clone()
    };
    let (mut mod_off, mut mod_on) = (Vec::new(), Vec::new());
    for _ in 0..MODULE_BOOTS {
        let o = boot(&a, &cycles, "bench-modules-off")?;
        mod_off.push(real_seconds(&o.console).ok_or("no module timing")?);
        let o = boot(&a, &cycles_on, "bench-modules-on")?;
        mod_on.push(real_seconds(&o.console).ok_or("no module timing")?);
    }
    let one_load = Boot {
        exec: Some("insmod /pvguard/test_static_key_base.ko".into()),
        ..cycles_on.clone()
    };
    let load_calls = boot(&a, &one_load, "bench-modules-calls")?
        .stats()
        .ok_or("no stats")?
        .num("kp_perm_calls");

    paths::step("stage-2 table memory: image-only protection vs default deny");
    let deny = Boot {
        append: "pvguard=on pvguard_code=measure".into(),
        ..hyp.clone()
    };
    let image_only = Boot {
        append: "pvguard=on pvguard_code=image".into(),
        ..hyp.clone()
    };
    let image_stats = boot(&a, &image_only, "bench-image")?
        .stats()
        .ok_or("no stats")?;
    let deny_stats = boot(&a, &deny, "bench-deny")?.stats().ok_or("no stats")?;
    let tables_image = image_stats.num("stage2_tables");
    let tables_deny = deny_stats.num("stage2_tables");
    let ram_mib = guest_ram_mib(&ours_boot.console).ok_or("no guest RAM line")?;

    let mut doc = String::new();
    let _ = writeln!(
        doc,
        "## Boot, static keys, MMIO guard: `cargo xtask bench`\n"
    );
    let _ = writeln!(doc, "Reproduce with `cargo xtask bench`. QEMU TCG on this");
    let _ = writeln!(
        doc,
        "machine ({} cores); configurations are interleaved in one run and",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let _ = writeln!(
        doc,
        "compared round by round (the median of the per-round ratios). Counts"
    );
    let _ = writeln!(
        doc,
        "(exits, hypercalls, patches) are deterministic; times are not.\n"
    );
    let _ = writeln!(
        doc,
        "### Boot time ({boots} boots each, QEMU start to power off)\n"
    );
    let _ = writeln!(
        doc,
        "Every configuration has the same CPUs: QEMU gives the guest one, and\n\
         hyp-stub takes none of its own. Protection's baseline (TEXT+RODATA,\n\
         {} bytes) is hashed off the boot path, {} KiB per step, in the guest's\n\
         idle time (its WFI traps while steps remain) and inside self-check calls.\n",
        c_prot.measured,
        hyp_stub::services::kernel_protect::measurement::STEP_BYTES / 1024
    );
    let _ = writeln!(
        doc,
        "| configuration | wall median | wall min | guest clock at power-off | hypervisor exits | enable call (guest clock) | baseline hashed at power-off | steps in idle time |"
    );
    let _ = writeln!(doc, "|---|---|---|---|---|---|---|---|");
    for c in &configs {
        let ms = |v: &[f64]| {
            if v.is_empty() {
                "-".to_string()
            } else {
                format!("{:.1} ms", median(&mut v.to_vec()))
            }
        };
        let exits = if c.boot.hyp {
            c.exits.to_string()
        } else {
            "-".into()
        };
        let (hashed, steps) = if c.hashed.is_empty() {
            ("-".to_string(), "-".to_string())
        } else {
            (
                format!(
                    "{:.0}%",
                    100.0 * median(&mut c.hashed.clone()) / c.measured.max(1) as f64
                ),
                format!("{:.0}", median(&mut c.idle_steps.clone())),
            )
        };
        let _ = writeln!(
            doc,
            "| {} | {:.3} s | {:.3} s | {:.3} s | {exits} | {} | {hashed} | {steps} |",
            c.name,
            median(&mut c.times.clone()),
            min(&c.times),
            median(&mut c.guest.clone()),
            ms(&c.enable_ms),
        );
    }
    // Adjacent boots of one round share the machine's load; the median of
    // their ratios is steadier than a ratio of medians.
    let paired = |x: &[f64], y: &[f64]| {
        let mut r: Vec<f64> = x.iter().zip(y).map(|(a, b)| a / b).collect();
        median(&mut r)
    };
    let ratio = |x: &Config, y: &Config| {
        format!(
            "{:.3} wall clock, {:.3} guest clock",
            paired(&x.times, &y.times),
            paired(&x.guest, &y.guest)
        )
    };
    let _ = writeln!(doc);
    let lines = [
        (
            "**protected / unprotected, on the same CPUs",
            c_prot,
            c_hyp,
            "**; target <= 1.05",
        ),
        (
            "protected with a self-check from init / protected",
            c_check,
            c_prot,
            " (the whole baseline and one check hashed before power-off)",
        ),
        ("hyp-stub / plain QEMU (pvguard off)", c_hyp, c_plain, ""),
    ];
    for (what, x, y, tail) in lines {
        let _ = writeln!(doc, "- {what}: {}{tail}", ratio(x, y));
    }
    let _ = writeln!(doc);
    let _ = writeln!(
        doc,
        "The enable call applies the stage-2 permissions and records every patch\n\
         site; of TEXT and RODATA it hashes nothing (only the image's other text,\n\
         `.rodata.text`, which it makes executable, goes into the code log: 12 KiB\n\
         on the test kernel; so the first choice of SHA-256 code, which times both\n\
         candidates once, now falls in the enable call too). From then on stage 2\n\
         keeps TEXT and RODATA as\n\
         they were, except for the patches hyp-stub performs itself, and the\n\
         measurement puts those back: so the baseline is the kernel as it was at\n\
         enable whenever its steps run. Its CPU time is not saved, only taken\n\
         when the guest has nothing else to do, or when a verifier asks. QEMU\n\
         writes the console to a file here, not to a pipe: a reader woken for\n\
         every character would take a host core from the vCPUs, and the\n\
         benchmark would measure the harness. Wall-clock times under TCG on a\n\
         shared 2-core machine vary by tens of milliseconds from boot to boot,\n\
         hence the paired ratios.\n"
    );
    let _ = writeln!(doc, "### Static key flip ({FLIP_BOOTS} boots each, {FLIPS} enable+disable flips timed in the guest)\n");
    let _ = writeln!(doc, "| configuration | median ns per flip |");
    let _ = writeln!(doc, "|---|---|");
    let _ = writeln!(doc, "| unprotected | {m_off:.0} |");
    let _ = writeln!(
        doc,
        "| protected (each patch trapped, validated and written by hyp-stub) | {m_on:.0} |\n"
    );
    let _ = writeln!(doc, "- protected / unprotected: **{:.2}** (target <= 3); hypervisor-performed patches per boot: {patches} (2 per flip)\n", m_on / m_off);
    let _ = writeln!(doc, "### MMIO guard hypercalls for one boot\n");
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
    let _ = writeln!(
        doc,
        "\n### Modules ({MODULE_BOOTS} boots each, {MODULE_CYCLES} load+unload cycles of test_static_key_base timed in the guest)\n"
    );
    let _ = writeln!(
        doc,
        "| configuration | median s for {MODULE_CYCLES} cycles |"
    );
    let _ = writeln!(doc, "|---|---|");
    let _ = writeln!(doc, "| unprotected | {:.2} |", median(&mut mod_off.clone()));
    let _ = writeln!(
        doc,
        "| protected, default deny (text made executable, rodata sealed and everything released through the hypervisor) | {:.2} |\n",
        median(&mut mod_on.clone())
    );
    let mut ratios: Vec<f64> = mod_on.iter().zip(&mod_off).map(|(x, y)| x / y).collect();
    let _ = writeln!(
        doc,
        "- protected / unprotected: **{:.2}** (target <= 1.5)",
        median(&mut ratios)
    );
    let _ = writeln!(
        doc,
        "- MEM_PERMISSIONS calls for one load: **{load_calls}** (target <= 3): text and init text, rodata and ro_after_init, and the free of the init text"
    );
    let _ = writeln!(doc, "\n### Stage-2 table memory\n");
    let _ = writeln!(
        doc,
        "Tables (4 KiB each) in use at power-off, from `stage2_tables`; the guest has {ram_mib} MiB.\n"
    );
    let _ = writeln!(doc, "| protection | tables | KiB per GiB of guest RAM |");
    let _ = writeln!(doc, "|---|---|---|");
    for (what, n) in [
        ("kernel image only (`pvguard_code=image`)", tables_image),
        (
            "default deny at EL1 (`pvguard_code=measure`, the default)",
            tables_deny,
        ),
    ] {
        let _ = writeln!(
            doc,
            "| {what} | {n} | {:.1} |",
            (n * 4) as f64 * 1024.0 / ram_mib.max(1) as f64
        );
    }
    let _ = writeln!(
        doc,
        "\nDefault deny changes whole 2 MiB blocks in place; only blocks that hold\n\
         page-granular permissions need a level-3 table (4 KiB per 2 MiB block).\n\
         Each loaded module would add at most one per block its pages touch."
    );
    crate::doc::write_benchmarks_section("bench", &doc)?;
    print!("{doc}");
    Ok(())
}

/// Boots of each configuration of the text-patch benchmark.
const PATCH_BOOTS: usize = 5;
/// Function-tracer enable+disable rounds timed in each boot.
const TRACER_ROUNDS: usize = 5;

/// The guest's time for the rounds: kernel timestamps of the marks its
/// shell writes to `/dev/kmsg`, in seconds.
fn tracer_seconds(console: &str) -> Option<f64> {
    Some(stamp(console, "ftrace-bench-end")? - stamp(console, "ftrace-bench-start")?)
}

/// `cargo xtask bench-patch`: the function tracer over all functions,
/// enabled and disabled [`TRACER_ROUNDS`] times, protected (ftrace's
/// call-site patches go to the hypervisor in batches) and unprotected,
/// boots interleaved; and what a round costs in exits.
///
/// # Errors
/// A build or a boot that fails.
pub fn text_patch() -> Result<(), String> {
    let a = build_all()?;
    let t = "/sys/kernel/tracing";
    let each: Vec<String> = (1..=TRACER_ROUNDS).map(|i| i.to_string()).collect();
    let each = each.join(" ");
    let rounds = format!(
        "mount -t tracefs nodev {t}; echo ftrace-bench-start > /dev/kmsg; \
         for i in {each}; do echo function > {t}/current_tracer; echo nop > {t}/current_tracer; done; \
         echo ftrace-bench-end > /dev/kmsg"
    );
    // The same boots also time single static-key flips (the trapped
    // path), which the registry now checks against the jump table.
    let rounds = format!("{rounds}; echo {FLIPS} > /sys/kernel/debug/pvguard/kp_flip");
    let unprotected = Boot {
        append: "pvguard=off".into(),
        exec: Some(rounds.clone()),
        timeout: Duration::from_secs(300),
        ..Boot::default()
    };
    let protected = Boot {
        append: "pvguard=on".into(),
        ..unprotected.clone()
    };
    paths::step(&format!(
        "text patches: {PATCH_BOOTS} boots each, {TRACER_ROUNDS} function-tracer enable+disable rounds, with and without protection"
    ));
    let (mut off, mut on) = (Vec::new(), Vec::new());
    let (mut flip_off, mut flip_on) = (Vec::new(), Vec::new());
    let mut stats = None;
    for _ in 0..PATCH_BOOTS {
        let o = boot(&a, &unprotected, "bench-ftrace-off")?;
        off.push(tracer_seconds(&o.console).ok_or("no timing marks in the guest's output")?);
        flip_off.push(ns_per_flip(&o.console).ok_or("no flip timing in the guest's output")?);
        let o = boot(&a, &protected, "bench-ftrace-on")?;
        on.push(tracer_seconds(&o.console).ok_or("no timing marks in the guest's output")?);
        flip_on.push(ns_per_flip(&o.console).ok_or("no flip timing in the guest's output")?);
        stats = o.stats();
    }
    let (f_off, f_on) = (median(&mut flip_off), median(&mut flip_on));
    let s = stats.ok_or("no stats")?;
    let (m_off, m_on) = (median(&mut off), median(&mut on));
    let updates = (2 * TRACER_ROUNDS) as u64;
    let sites = s.num("kp_sites_ftrace");
    let batches = s.num("call_0xc6060064");
    let patches = s.num("kp_patches_ftrace");
    // Only ftrace batches; whatever it wrote outside a batch trapped.
    let trapped = patches.saturating_sub(s.num("kp_patches_batched"));
    let exits = batches + trapped;
    let per_update = batches as f64 / updates as f64;

    let mut doc = String::new();
    let _ = writeln!(doc, "## Text patches: `cargo xtask bench-patch`\n");
    let _ = writeln!(
        doc,
        "Reproduce with `cargo xtask bench-patch`. The guest mounts tracefs and\n\
         times, with kernel timestamps, {TRACER_ROUNDS} rounds of `echo function >\n\
         current_tracer; echo nop > current_tracer`: the function tracer over all\n\
         {sites} traceable functions of core kernel text, enabled and disabled.\n\
         Protected, ftrace queues its writes (an ops literal and a NOP/BL per\n\
         function) and hyp-stub checks each against the registered sites and\n\
         applies them, 512 per TEXT_PATCH call. {PATCH_BOOTS} boots of each\n\
         configuration, interleaved.\n"
    );
    let _ = writeln!(
        doc,
        "| configuration | median seconds for {TRACER_ROUNDS} rounds |"
    );
    let _ = writeln!(doc, "|---|---|");
    let _ = writeln!(doc, "| pvguard off | {m_off:.3} |");
    let _ = writeln!(
        doc,
        "| pvguard=on (patches checked and applied by hyp-stub) | {m_on:.3} |\n"
    );
    let _ = writeln!(
        doc,
        "- protected / unprotected: **{:.2}** (target <= 2)",
        m_on / m_off
    );
    let _ = writeln!(
        doc,
        "- TEXT_PATCH calls per enable or disable: **{per_update:.1}** for {sites} sites, \
         one per {:.0} sites (target: at most one per 64); {patches} patches in {batches} calls over {updates} updates",
        sites as f64 / per_update.max(1.0)
    );
    let _ = writeln!(
        doc,
        "- exits for ftrace's patches: {batches} TEXT_PATCH calls + {trapped} trapped stores = \
         **{:.1} per update**, one per {:.0} sites\n",
        exits as f64 / updates as f64,
        (sites * updates) as f64 / exits.max(1) as f64
    );
    let _ = writeln!(
        doc,
        "Static key flips in the same boots ({FLIPS} enable+disable flips of a key whose\n\
         site is in core kernel text, each write trapped and checked against the\n\
         registered jump table):\n"
    );
    let _ = writeln!(doc, "| configuration | median ns per flip |");
    let _ = writeln!(doc, "|---|---|");
    let _ = writeln!(doc, "| pvguard off | {f_off:.0} |");
    let _ = writeln!(doc, "| pvguard=on | {f_on:.0} |\n");
    let _ = writeln!(
        doc,
        "- protected / unprotected: **{:.2}** (target <= 3)\n",
        f_on / f_off
    );
    crate::doc::write_benchmarks_section("text-patch", &doc)?;
    print!("{doc}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::guest_ram_mib;

    #[test]
    fn guest_ram_comes_from_the_hypervisor_line() {
        let console = "hyp-stub: guest RAM 0x40000000..0x7e000000, kernel at 0x40200000, ...";
        assert_eq!(guest_ram_mib(console), Some(992));
        assert_eq!(guest_ram_mib("no such line"), None);
    }

    #[test]
    fn busybox_time_is_read() {
        use super::real_seconds;
        assert_eq!(
            real_seconds("x\nreal\t0m 1.25s\nuser\t0m 0.01s"),
            Some(1.25)
        );
        assert_eq!(real_seconds("real\t1m 2.50s"), Some(62.5));
        assert_eq!(real_seconds("nothing"), None);
    }
}
