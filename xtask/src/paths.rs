// SPDX-License-Identifier: GPL-2.0 OR MIT
//! Where things live. Big downloads and the kernel build are cached
//! outside the repository: `$PVGUARD_CACHE`, else `~/.cache/pvguard`.

use std::path::PathBuf;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// The cache directory.
pub fn cache() -> PathBuf {
    if let Some(dir) = std::env::var_os("PVGUARD_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".cache").join("pvguard")
}

/// The hypervisor ELF, where cargo puts it (`CARGO_TARGET_DIR` is
/// honoured, as cargo does).
pub fn hyp_elf() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map_or_else(|| repo().join("target"), |t| repo().join(t));
    target.join("aarch64-unknown-none-softfloat/release/hyp-stub")
}

/// Prints a progress line.
pub fn step(what: &str) {
    eprintln!("==> {what}");
}
