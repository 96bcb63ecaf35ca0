// SPDX-License-Identifier: GPL-2.0 OR MIT
//! `cargo xtask`: the one entry point that installs what is missing,
//! builds the guest kernel, the hypervisor and the guest's userland, and
//! boots or tests them.

mod bench;
mod debian;
mod deps;
mod doc;
mod fuzz;
mod initramfs;
mod kernel;
mod patches;
mod paths;
mod sh;
mod soak;
mod test;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use qemu_tests::{Artifacts, Boot};

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  run        build everything and boot the protected guest under hyp-stub
             (pvguard=on); with no --exec, the guest shows its protection
             and runs a self-check
               --exec \"CMD\"    run CMD in the guest and show its output
               --append \"ARGS\" add kernel command-line arguments
               --unprotected    boot with pvguard=off, for comparison
               --add PATH       put a file (e.g. a module) into the guest's /pvguard/
               --services N     hyp-stub services bitmask (see hyp_stub::boot)
               --cpus N         number of guest CPUs (default 1)
               --no-hyp         boot the same kernel on plain QEMU
               --shell          interactive guest shell
  test       host unit tests and QEMU system tests; ends with 'N passed, N failed'
  bench      benchmarks (boot time, static key flips, MMIO guard hypercalls) -> docs/benchmarks.md
  bench-patch
             the function tracer over all functions, protected and not -> docs/benchmarks.md
               --boots N        boots of each boot-time configuration (default 40)
  soak       SMP soak: protected 4-CPU boots flipping static keys, loading modules and
             using guarded MMIO at once -> docs/benchmarks.md
               --boots N        boots (default 50)
  fuzz       coverage-guided fuzzing of hyp-stub and the ABI crates (nightly, cargo-fuzz)
               --time S         seconds per target (default 60)
  kernel     build the guest kernel (patched Linux 6.12, Rust enabled)
  hyp        build hyp-stub
  initramfs  build the guest's userland
  patches    regenerate the series' Rust patch from the crates
  check-series  build the kernel after each patch of the series, in a tree of
             its own (slow: a full kernel build, then one per patch)
  deb        build the kernel packages (make bindeb-pkg) into $PVGUARD_CACHE/deb
  debian-config  compile pvguard and what the series touches in Debian's own
             arm64 config (LLVM=1, RUST=y, PVGUARD=y)
  deps       install what is missing
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("deps") => deps::ensure(),
        Some("kernel") => deps::ensure().and_then(|()| kernel::build().map(drop)),
        Some("hyp") => build_hyp().map(drop),
        Some("initramfs") => deps::ensure().and_then(|()| initramfs::build().map(drop)),
        Some("run") => run(&args[1..]),
        Some("test") => test::run(),
        Some("bench") => boots_arg(&args[1..], bench::BOOTS).and_then(bench::run),
        Some("bench-patch") => bench::text_patch(),
        Some("soak") => boots_arg(&args[1..], soak::BOOTS).and_then(soak::run),
        Some("patches") => patches::write(),
        Some("check-series") => deps::ensure().and_then(|()| kernel::check_series()),
        Some("deb") => deps::ensure().and_then(|()| kernel::deb().map(drop)),
        Some("debian-config") => deps::ensure().and_then(|()| kernel::debian_config_check()),
        Some("fuzz") => fuzz::run(&args[1..]),
        Some("-h") | Some("--help") | Some("help") => {
            print!("{USAGE}");
            Ok(())
        }
        _ => Err(format!("unknown command\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Builds hyp-stub for the bare-metal target.
pub fn build_hyp() -> Result<PathBuf, String> {
    paths::step("building hyp-stub");
    sh::run(
        sh::cargo()
            .args([
                "build",
                "--release",
                "-p",
                "hyp-stub",
                "--target",
                "aarch64-unknown-none-softfloat",
            ])
            .current_dir(paths::repo()),
        "cargo build -p hyp-stub",
    )?;
    Ok(paths::hyp_elf())
}

/// Builds everything and returns the artifact paths.
pub fn build_all() -> Result<Artifacts, String> {
    deps::ensure()?;
    let hyp = build_hyp()?;
    let kernel = kernel::build()?;
    let initramfs = initramfs::build()?;
    Ok(Artifacts {
        kernel: kernel.image,
        hyp,
        initramfs,
        kernel_build: kernel.build_dir,
        scratch: paths::cache().join("scratch"),
    })
}

fn boots_arg(args: &[String], default: usize) -> Result<usize, String> {
    match args {
        [] => Ok(default),
        [flag, n] if flag == "--boots" => match n.parse() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("--boots {n}: expected a positive number")),
        },
        _ => Err(format!("bad options {args:?}\n{USAGE}")),
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let mut boot = Boot {
        timeout: Duration::from_secs(600),
        ..Boot::default()
    };
    // The product's job is shown by default: the guest opts in.
    let mut protect = qemu_tests::PROTECT;
    let mut append = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match a.as_str() {
            "--exec" => boot.exec = Some(value("--exec")?),
            "--append" => append.push(value("--append")?),
            "--unprotected" => protect = "pvguard=off",
            "--add" => boot.add.push(PathBuf::from(value("--add")?)),
            "--services" => {
                let v = value("--services")?;
                let parsed = match v.strip_prefix("0x") {
                    Some(hex) => u64::from_str_radix(hex, 16),
                    None => v.parse(),
                };
                boot.services = parsed.map_err(|e| format!("--services {v}: {e}"))?;
            }
            "--no-hyp" => boot.hyp = false,
            "--cpus" => {
                let v = value("--cpus")?;
                boot.cpus = v.parse().map_err(|e| format!("--cpus {v}: {e}"))?;
            }
            "--shell" => boot.interactive = true,
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    // Given after the default, a `pvguard=` in --append wins.
    boot.append = std::iter::once(protect.to_string())
        .chain(append)
        .collect::<Vec<_>>()
        .join(" ");
    if boot.exec.is_none() && !boot.interactive {
        boot.exec = Some(qemu_tests::SHOW_PROTECTION.to_string());
    }
    let artifacts = build_all()?;
    paths::step(if boot.hyp {
        "booting the guest under hyp-stub"
    } else {
        "booting the guest on plain QEMU"
    });
    let outcome = qemu_tests::run_visible(&artifacts, &boot, "run")?;
    match outcome.status {
        Some(0) => Ok(()),
        Some(code) => Err(format!(
            "QEMU exited with status {code}\n{}",
            outcome.qemu_failure()
        )),
        None => Err(format!(
            "the guest did not power off within {:?}",
            boot.timeout
        )),
    }
}
