// SPDX-License-Identifier: GPL-2.0 OR MIT
//! Checks for what the build needs and installs what is missing: Debian
//! packages, arm64 packages for the guest's userland, bindgen, and the
//! pinned toolchain's rust-src and bare-metal target.

use std::path::Path;
use std::process::Command;

use crate::{paths, sh};

/// Debian packages the build runs.
const PACKAGES: &[&str] = &[
    "qemu-system-arm",
    // checkpatch.pl, in the style tests.
    "perl",
    "clang",
    "lld",
    "llvm",
    "libclang-dev",
    "linux-source-6.12",
    "flex",
    "bison",
    "bc",
    "cpio",
    "make",
    "patch",
    "libelf-dev",
    "libssl-dev",
    "xz-utils",
    // make bindeb-pkg
    "debhelper",
    "kmod",
    "rsync",
];

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn is_root() -> bool {
    sh::output(Command::new("id").arg("-u"), "id -u")
        .map(|s| s.trim() == "0")
        .unwrap_or(false)
}

fn as_root(cmd: &str) -> Result<(), String> {
    if !is_root() {
        return Err(format!(
            "missing build dependencies; run as root:\n    {cmd}"
        ));
    }
    paths::step(&format!("installing: {cmd}"));
    sh::run(
        Command::new("sh")
            .args(["-c", cmd])
            .env("DEBIAN_FRONTEND", "noninteractive"),
        cmd,
    )
}

/// Installs whatever is missing; a no-op (no network) when all is there.
pub fn ensure() -> Result<(), String> {
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    let foreign = sh::output(
        Command::new("dpkg").arg("--print-foreign-architectures"),
        "dpkg",
    )?;
    let need_arm64 = !foreign.lines().any(|l| l.trim() == "arm64");
    if need_arm64 {
        // The guest's userland is Debian's arm64 busybox.
        as_root("dpkg --add-architecture arm64")?;
    }
    if !missing.is_empty() || need_arm64 {
        let cmd = if missing.is_empty() {
            "apt-get update -q".to_string()
        } else {
            format!(
                "apt-get update -q && apt-get install -y -q --no-install-recommends {}",
                missing.join(" ")
            )
        };
        as_root(&cmd)?;
    }
    rust_parts()?;
    if which("bindgen").is_none() {
        paths::step("installing bindgen-cli (cargo install --locked bindgen-cli; about 2 minutes)");
        sh::run(
            sh::cargo().args(["install", "--locked", "bindgen-cli"]),
            "cargo install bindgen-cli",
        )?;
    }
    Ok(())
}

/// The path of `name` on `PATH` or in `~/.cargo/bin`.
pub fn which(name: &str) -> Option<std::path::PathBuf> {
    let mut dirs: Vec<std::path::PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cargo/bin"));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// The pinned toolchain's sysroot.
pub fn sysroot() -> Result<String, String> {
    let out = sh::output(
        Command::new("rustc")
            .args(["--print", "sysroot"])
            .current_dir(paths::repo()),
        "rustc --print sysroot",
    )?;
    Ok(out.trim().to_string())
}

fn rust_parts() -> Result<(), String> {
    let toolchain = toolchain()?;
    let sysroot = match sysroot() {
        Ok(s) => s,
        Err(_) => {
            paths::step(&format!("installing Rust toolchain {toolchain}"));
            sh::run(
                Command::new("rustup").args([
                    "toolchain",
                    "install",
                    &toolchain,
                    "--profile",
                    "minimal",
                ]),
                "rustup toolchain install",
            )?;
            sysroot()?
        }
    };
    let root = Path::new(&sysroot);
    if !root.join("lib/rustlib/src/rust/library").is_dir() {
        paths::step("installing rust-src");
        sh::run(
            Command::new("rustup").args([
                "component",
                "add",
                "rust-src",
                "--toolchain",
                &toolchain,
            ]),
            "rustup component add rust-src",
        )?;
    }
    // `cargo xtask test` runs clippy and rustfmt; a toolchain installed
    // by hand with the minimal profile has neither.
    if !root.join("bin/cargo-clippy").is_file() || !root.join("bin/rustfmt").is_file() {
        paths::step("installing clippy and rustfmt");
        sh::run(
            Command::new("rustup").args([
                "component",
                "add",
                "clippy",
                "rustfmt",
                "--toolchain",
                &toolchain,
            ]),
            "rustup component add clippy rustfmt",
        )?;
    }
    if !root
        .join("lib/rustlib/aarch64-unknown-none-softfloat")
        .is_dir()
    {
        paths::step("installing the aarch64-unknown-none-softfloat target");
        sh::run(
            Command::new("rustup").args([
                "target",
                "add",
                "aarch64-unknown-none-softfloat",
                "--toolchain",
                &toolchain,
            ]),
            "rustup target add",
        )?;
    }
    Ok(())
}

/// The channel pinned in `rust-toolchain.toml`.
pub fn toolchain() -> Result<String, String> {
    let path = paths::repo().join("rust-toolchain.toml");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .find_map(|l| {
            l.trim().strip_prefix("channel").map(|r| {
                r.trim_start_matches([' ', '=', '"'])
                    .trim_end_matches('"')
                    .to_string()
            })
        })
        .ok_or_else(|| format!("{}: no channel", path.display()))
}
