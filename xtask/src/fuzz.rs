// SPDX-License-Identifier: GPL-2.0 OR MIT
//! `cargo xtask fuzz [--time S]`: runs every coverage-guided fuzz target
//! in `fuzz/` (cargo-fuzz, libFuzzer, the nightly toolchain), one after
//! the other with one job each, and reports executions and coverage. The
//! same runs, a few seconds each, are the fuzz smoke of `cargo xtask test`.

use std::process::{Command, Stdio};

use crate::{paths, sh};

/// The targets, in the order they run.
pub const TARGETS: [&str; 5] = ["record", "mmio_guard", "exit_path", "patch", "permissions"];

/// Seconds per target of `cargo xtask fuzz` without `--time`.
pub const DEFAULT_SECS: u64 = 60;

/// Seconds per target of the smoke in `cargo xtask test`.
pub const SMOKE_SECS: u64 = 4;

/// How the targets are built. No sanitizer: the code under test has no
/// `unsafe` (hyp-stub forbids it), so AddressSanitizer would only slow
/// it down; no comparison tracing: the inputs are structured, with the
/// ABI's magic values among their choices, and the invariants walk the
/// stage-2 tables after every input, which comparison hooks make
/// several times slower. Debug assertions and overflow checks stay on
/// (cargo-fuzz's default), so an arithmetic overflow is a crash.
pub const BUILD_FLAGS: [&str; 3] = ["-s", "none", "--no-trace-compares"];

/// What one run reached.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Inputs executed.
    pub runs: u64,
    /// Seconds.
    pub secs: u64,
    /// libFuzzer's `cov:` (coverage points) and `ft:` (features).
    pub cov: u64,
    /// libFuzzer's `ft:`.
    pub ft: u64,
}

impl RunStats {
    /// Reads libFuzzer's output: the last `cov:`/`ft:` figures and the
    /// final `Done N runs in S second(s)`.
    pub fn parse(log: &str) -> Option<Self> {
        let mut s = RunStats::default();
        let mut done = false;
        for line in log.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            for pair in words.windows(2) {
                match pair[0] {
                    "cov:" => s.cov = pair[1].parse().unwrap_or(s.cov),
                    "ft:" => s.ft = pair[1].parse().unwrap_or(s.ft),
                    _ => {}
                }
            }
            if let ["Done", runs, "runs", "in", secs, ..] = words.as_slice() {
                s.runs = runs.parse().ok()?;
                s.secs = secs.parse().ok()?;
                done = true;
            }
        }
        done.then_some(s)
    }
}

/// `cargo` of the nightly toolchain, without the variables that pin the
/// caller's (`cargo xtask` runs under the pinned stable one).
fn nightly_cargo() -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo"])
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN")
        .current_dir(paths::repo().join("fuzz"));
    cmd
}

/// Installs the nightly toolchain and cargo-fuzz if they are missing.
///
/// # Errors
/// What failed, and what to run by hand.
pub fn ensure_tools() -> Result<(), String> {
    let has_nightly = nightly_cargo()
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_nightly {
        paths::step("installing the nightly toolchain (cargo fuzz needs it)");
        sh::run(
            Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]),
            "rustup toolchain install nightly",
        )
        .map_err(|e| format!("{e}\nthe fuzz targets need the nightly toolchain: run `rustup toolchain install nightly`"))?;
    }
    let has_fuzz = nightly_cargo()
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_fuzz {
        paths::step("installing cargo-fuzz");
        sh::run(
            sh::cargo().args(["install", "--locked", "cargo-fuzz"]),
            "cargo install --locked cargo-fuzz",
        )
        .map_err(|e| {
            format!(
                "{e}\nthe fuzz targets need cargo-fuzz: run `cargo install --locked cargo-fuzz`"
            )
        })?;
    }
    Ok(())
}

/// Builds every target.
///
/// # Errors
/// The build's failure.
pub fn build() -> Result<(), String> {
    paths::step("building the fuzz targets (nightly, libFuzzer)");
    sh::run(
        nightly_cargo().args(["fuzz", "build"]).args(BUILD_FLAGS),
        "cargo +nightly fuzz build",
    )
}

/// The fuzz harness's own unit tests (the invariants' controls, and the
/// well-behaved guest that reaches every state); libtest's output.
///
/// # Errors
/// The test run's failure.
pub fn unit_tests() -> Result<String, String> {
    let out = nightly_cargo()
        .args(["test", "--release", "--lib"])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("fuzz harness tests: cannot start: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!(
            "fuzz harness tests failed ({}):\n{text}",
            out.status
        ))
    }
}

/// Fuzzes `target` for `secs` seconds; `Err` with libFuzzer's report if
/// it found a crash (an invariant broken, a panic, a timeout).
///
/// # Errors
/// The end of libFuzzer's output, which names the crashing input.
pub fn run_target(target: &str, secs: u64) -> Result<RunStats, String> {
    let log = std::env::temp_dir().join(format!("pvguard-fuzz-{target}.log"));
    let result = sh::run_logged(
        nightly_cargo()
            .args(["fuzz", "run"])
            .args(BUILD_FLAGS)
            .arg(target)
            .args(["--", "-print_final_stats=1"])
            .arg(format!("-max_total_time={secs}")),
        &format!("fuzz target {target}"),
        &log,
    );
    result?;
    let text = std::fs::read_to_string(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    RunStats::parse(&text)
        .ok_or_else(|| format!("{target}: no final libFuzzer figures in {}", log.display()))
}

/// `cargo xtask fuzz [--time S]`.
///
/// # Errors
/// Missing tools, a failed build, or a target that found a crash.
pub fn run(args: &[String]) -> Result<(), String> {
    let secs = match args {
        [] => DEFAULT_SECS,
        [flag, s] if flag == "--time" => s
            .parse()
            .ok()
            .filter(|&s| s > 0)
            .ok_or_else(|| format!("--time {s}: expected a positive number of seconds"))?,
        _ => {
            return Err(format!(
                "bad fuzz options {args:?}: cargo xtask fuzz [--time S]"
            ))
        }
    };
    ensure_tools()?;
    build()?;
    let mut failed = Vec::new();
    for target in TARGETS {
        paths::step(&format!("fuzzing {target} for {secs} s"));
        match run_target(target, secs) {
            Ok(s) => println!(
                "fuzz {target}: {} runs in {} s, cov {} ft {}, 0 crashes",
                s.runs, s.secs, s.cov, s.ft
            ),
            Err(e) => {
                println!("fuzz {target}: CRASH\n{e}");
                failed.push(target);
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("fuzz targets found crashes: {}", failed.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_final_figures() {
        let log = "\
#65536\tpulse  cov: 950 ft: 2382 corp: 610/33Kb lim: 149 exec/s: 5461 rss: 30Mb
#105469\tDONE   cov: 953 ft: 2565 corp: 698/44Kb lim: 219 exec/s: 5022 rss: 30Mb
Done 105469 runs in 21 second(s)
stat::number_of_executed_units: 105469
";
        assert_eq!(
            RunStats::parse(log),
            Some(RunStats {
                runs: 105469,
                secs: 21,
                cov: 953,
                ft: 2565
            })
        );
        assert_eq!(
            RunStats::parse("#1 INITED cov: 3 ft: 3\n"),
            None,
            "no Done line"
        );
    }
}
