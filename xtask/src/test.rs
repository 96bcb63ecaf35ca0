// SPDX-License-Identifier: GPL-2.0 OR MIT
//! `cargo xtask test`: host unit tests, then the QEMU system tests against
//! the built guest, then one summary line `N passed, M failed`.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use crate::{build_all, paths, sh};

/// Totals of libtest's `test result:` lines.
#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
}

impl Totals {
    fn add_line(&mut self, line: &str) {
        // "test result: ok. 12 passed; 0 failed; 0 ignored; ..."
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let words: Vec<&str> = part.split_whitespace().collect();
            let n = words
                .iter()
                .rev()
                .nth(1)
                .and_then(|w| w.parse::<u64>().ok());
            match (n, words.last()) {
                (Some(n), Some(&"passed")) => self.passed += n,
                (Some(n), Some(&"failed")) => self.failed += n,
                _ => {}
            }
        }
    }
}

/// Runs `cargo test ...`, echoing its output and adding up its results.
fn cargo_test(args: &[&str], envs: &[(&str, String)], totals: &mut Totals) -> Result<bool, String> {
    let mut cmd = sh::cargo();
    // Every test binary runs even when one fails, so the summary counts
    // them all.
    cmd.arg("test")
        .arg("--no-fail-fast")
        .args(args)
        .current_dir(paths::repo())
        .stdout(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().map_err(|e| format!("cargo test: {e}"))?;
    let out = child.stdout.take().ok_or("cargo test: no stdout")?;
    let failed_before = totals.failed;
    for line in BufReader::new(out).lines().map_while(Result::ok) {
        println!("{line}");
        totals.add_line(&line);
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    if !status.success() && totals.failed == failed_before {
        // A build error, or a test binary that died before its summary:
        // no "test result" line counted it, so count it here.
        println!(
            "cargo test {} ... FAILED ({status}, no failing test reported)",
            args.join(" ")
        );
        totals.failed += 1;
    }
    Ok(status.success())
}

/// The hypervisor's bare-metal target.
const HYP_TARGET: &str = "aarch64-unknown-none-softfloat";

/// `cargo clippy ARGS -- -D warnings`: the workspace's lints (among them
/// `undocumented_unsafe_blocks`) are errors, and so is any warning.
fn clippy(args: &[&str]) -> Result<(), String> {
    let log = paths::cache().join(format!("clippy-{}.log", args.join("_").replace('-', "")));
    sh::run_logged(
        sh::cargo()
            .arg("clippy")
            .args(args)
            .args(["--", "-D", "warnings"])
            .current_dir(paths::repo()),
        &format!("cargo clippy {}", args.join(" ")),
        &log,
    )
}

/// `cargo fmt --all --check`: the workspace is formatted.
fn rustfmt_check() -> Result<(), String> {
    sh::run_logged(
        sh::cargo()
            .args(["fmt", "--all", "--check"])
            .current_dir(paths::repo()),
        "cargo fmt --all --check",
        &paths::cache().join("rustfmt-check.log"),
    )
}

/// Debian's stock kernel for its boot test, or why it is missing (the
/// test then fails with that message).
fn stock_kernel_env() -> (&'static str, String) {
    match crate::debian::stock_kernel() {
        Ok(image) => ("PVGUARD_DEBIAN_KERNEL", image.display().to_string()),
        Err(e) => ("PVGUARD_DEBIAN_KERNEL_ERROR", e),
    }
}

/// The kernel packages for their tests, or why they are missing.
fn deb_env() -> (&'static str, String) {
    match crate::kernel::deb() {
        Ok(debs) => (
            "PVGUARD_DEB_DIR",
            debs.first()
                .and_then(|d| d.parent())
                .map(|d| d.display().to_string())
                .unwrap_or_default(),
        ),
        Err(e) => ("PVGUARD_DEB_ERROR", e),
    }
}

/// Builds everything and runs every test.
pub fn run() -> Result<(), String> {
    let mut totals = Totals::default();
    let artifacts = match build_all() {
        Ok(a) => a,
        Err(e) => {
            // The build is a test too: say so in the summary.
            println!("0 passed, 1 failed");
            return Err(e);
        }
    };
    paths::step("host unit tests");
    let host_ok = cargo_test(
        &["--workspace", "--exclude", "qemu-tests"],
        &[],
        &mut totals,
    )?;
    paths::step("QEMU system tests (the guest under hyp-stub and on plain QEMU)");
    let envs = [
        stock_kernel_env(),
        deb_env(),
        ("PVGUARD_KERNEL", artifacts.kernel.display().to_string()),
        ("PVGUARD_HYP", artifacts.hyp.display().to_string()),
        (
            "PVGUARD_INITRAMFS",
            artifacts.initramfs.display().to_string(),
        ),
        (
            "PVGUARD_KERNEL_BUILD",
            artifacts.kernel_build.display().to_string(),
        ),
        ("PVGUARD_SCRATCH", artifacts.scratch.display().to_string()),
    ];
    let qemu_ok = cargo_test(
        &["-p", "qemu-tests", "--", "--test-threads=2"],
        &envs,
        &mut totals,
    )?;
    paths::step(
        "style: clippy and rustfmt on the workspace, the kernel's checkpatch and rustfmtcheck",
    );
    let mut style_ok = true;
    for (name, result) in [
        ("clippy-host", clippy(&["--workspace", "--all-targets"])),
        (
            "clippy-hyp-stub-aarch64",
            clippy(&["-p", "hyp-stub", "--target", HYP_TARGET]),
        ),
        ("rustfmt", rustfmt_check()),
        ("checkpatch", crate::kernel::checkpatch()),
        ("rustfmtcheck", crate::kernel::rustfmtcheck()),
    ] {
        match result {
            Ok(()) => {
                println!("style {name} ... ok");
                totals.passed += 1;
            }
            Err(e) => {
                println!("style {name} ... FAILED\n{e}");
                totals.failed += 1;
                style_ok = false;
            }
        }
    }
    paths::step("fuzz smoke: each coverage-guided target for a few seconds");
    let fuzz_ok = fuzz_smoke(&mut totals);
    println!("{} passed, {} failed", totals.passed, totals.failed);
    if host_ok && qemu_ok && style_ok && fuzz_ok && totals.failed == 0 {
        Ok(())
    } else {
        Err("some tests failed".into())
    }
}

/// Runs every fuzz target for [`crate::fuzz::SMOKE_SECS`] seconds, one
/// pass or fail line each (a target that cannot be built or run fails).
fn fuzz_smoke(totals: &mut Totals) -> bool {
    use crate::fuzz;
    let mut ok = true;
    let ready = fuzz::ensure_tools().and_then(|()| fuzz::build());
    match ready.clone().and_then(|()| fuzz::unit_tests()) {
        Ok(out) => out.lines().for_each(|l| {
            println!("{l}");
            totals.add_line(l);
        }),
        Err(e) => {
            println!("fuzz harness tests ... FAILED\n{e}");
            totals.failed += 1;
            ok = false;
        }
    }
    for target in fuzz::TARGETS {
        let result = ready
            .clone()
            .and_then(|()| fuzz::run_target(target, fuzz::SMOKE_SECS));
        match result {
            Ok(s) => {
                println!(
                    "fuzz {target} ... ok ({} runs, cov {}, 0 crashes)",
                    s.runs, s.cov
                );
                totals.passed += 1;
            }
            Err(e) => {
                println!("fuzz {target} ... FAILED\n{e}");
                totals.failed += 1;
                ok = false;
            }
        }
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_up_libtest_lines() {
        let mut t = Totals::default();
        t.add_line("test result: ok. 12 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s");
        t.add_line(
            "test result: FAILED. 3 passed; 2 failed; 1 ignored; 0 measured; 0 filtered out",
        );
        t.add_line("running 5 tests");
        assert_eq!((t.passed, t.failed), (15, 2));
    }
}
