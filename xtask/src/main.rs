// SPDX-License-Identifier: GPL-2.0 OR MIT
//! `cargo xtask`: the one entry point that installs what is missing,
//! builds the guest kernel, the hypervisor and the guest's userland, and
//! boots or tests them.

mod bench;
mod deps;
mod fuzz;
mod initramfs;
mod kernel;
mod paths;
mod sh;
mod test;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use qemu_tests::{Artifacts, Boot};

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  run        build everything and boot the guest under hyp-stub
               --exec \"CMD\"    run CMD in the guest and show its output
               --append \"ARGS\" add kernel command-line arguments
               --add PATH       put a file (e.g. a module) into the guest's /pvguard/
               --services N     hyp-stub services bitmask (see hyp_stub::boot)
               --cpus N         number of guest CPUs (default 1)
               --no-hyp-cpu     give hyp-stub no CPU of its own (it measures the
                                guest on the guest's CPU)
               --no-hyp         boot the same kernel on plain QEMU
               --shell          interactive guest shell
  test       host unit tests and QEMU system tests; ends with 'N passed, N failed'
  bench      benchmarks (boot time, static key flips, MMIO guard hypercalls) -> docs/benchmarks.md
               --boots N        boots of each boot-time configuration (default 40)
  fuzz       coverage-guided fuzzing of hyp-stub and the ABI crates (nightly, cargo-fuzz)
               --time S         seconds per target (default 60)
  kernel     build the guest kernel (patched Linux 6.12, Rust enabled)
  hyp        build hyp-stub
  initramfs  build the guest's userland
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
        Some("fuzz") => fuzz::run(&args[1..]),
        Some("bench") => bench_args(&args[1..]).and_then(bench::run),
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

fn bench_args(args: &[String]) -> Result<usize, String> {
    match args {
        [] => Ok(bench::BOOTS),
        [flag, n] if flag == "--boots" => match n.parse() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("--boots {n}: expected a positive number")),
        },
        _ => Err(format!("bad bench options {args:?}\n{USAGE}")),
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let mut boot = Boot {
        timeout: Duration::from_secs(600),
        ..Boot::default()
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match a.as_str() {
            "--exec" => boot.exec = Some(value("--exec")?),
            "--append" => boot.append = value("--append")?,
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
            "--no-hyp-cpu" => boot.hyp_cpu = false,
            "--cpus" => {
                let v = value("--cpus")?;
                boot.cpus = v.parse().map_err(|e| format!("--cpus {v}: {e}"))?;
            }
            "--shell" => boot.interactive = true,
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
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
        Some(code) => Err(format!("QEMU exited with status {code}")),
        None => Err(format!(
            "the guest did not power off within {:?}",
            boot.timeout
        )),
    }
}
