// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The series' Rust patch, generated from the crates (`cargo xtask
//! patches`). The kernel compiles the same Rust files that `cargo test`
//! checks on the host: `arch-hooks/kernel/pvguard.rs` and the sources of
//! `arch-hooks`, `mmio-guard` and `guest-kp`. They travel in one patch of
//! the series, so the series applies and builds with `make` alone, and
//! the crates stay the one source of truth: the build and a host test
//! refuse a patch that differs from what this module generates.
//!
//! The patch is made by git itself (a commit of the new files in a
//! scratch repository, then `git format-patch`) with a fixed author,
//! date and parent, so the same sources always give the same bytes.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{paths, sh};

/// The patch's place in the series and its file name.
pub const NUMBER: usize = 2;
/// Patches in the series, this one included.
const TOTAL: usize = 15;
const FILE: &str = "0002-virt-pvguard-Add-the-Rust-logic-shared-with-the-pvgu.patch";
const SUBJECT: &str = "virt: pvguard: Add the Rust logic shared with the pvguard crates";
const AUTHOR: &str =
    "Seed 5eb5de93 maintainers <maintainers@users.noreply.h-seed-5eb5de93.example>";
const DATE: &str = "2026-11-23T08:58:00+00:00";
const BODY: &str = "\
pvguard's guest side is Rust built into the kernel. Its logic (the MMIO
guard's granule tracking and refcounting, the kernel_asset_info record,
the kernel-protect ABI and text-patch checks, the command line) is
shared with the hypervisor side and unit-tested on the host in the
pvguard repository, which generates this patch from those sources.

pvguard.rs is the crate root the kernel builds: the extern \"C\" entry
points the C hook points call, and the SMCCC transport. The modules it
includes are under rust/, one directory per shared crate. The tests.rs
files are those host unit tests; the kernel never compiles them (they
are cfg(test)), but rustfmt follows their mod declarations, so they
come along.

Nothing builds these files yet: the next patch adds the Makefile and
Kconfig entry along with the C glue. They are added first so that every
patch of the series builds.

checkpatch's remaining warnings: it asks whether MAINTAINERS needs
updating (the next patch adds the entry that covers
drivers/virt/pvguard/), and four lines of builder.rs exceed 100 columns
(the rows of a Markdown table in its module documentation, which
rustdoc needs one row to a line).";

/// `(path in the repository, path in the kernel tree)` of every Rust
/// file the kernel needs, sorted by kernel path.
pub fn sources() -> Result<Vec<(PathBuf, String)>, String> {
    let repo = paths::repo();
    let mut files = vec![(
        repo.join("arch-hooks/kernel/pvguard.rs"),
        "drivers/virt/pvguard/pvguard.rs".to_string(),
    )];
    for (crate_dir, name) in [
        ("arch-hooks", "arch_hooks"),
        ("mmio-guard", "mmio_guard"),
        ("guest-kp", "guest_kp"),
    ] {
        let src = repo.join(crate_dir).join("src");
        let entries = fs::read_dir(&src).map_err(|e| format!("{}: {e}", src.display()))?;
        for e in entries.filter_map(Result::ok) {
            let p = e.path();
            let Some(file) = e.file_name().to_str().map(String::from) else {
                continue;
            };
            let dest = format!("drivers/virt/pvguard/rust/{name}/{file}");
            // lib.rs is the host crate root; pvguard.rs replaces it.
            if p.extension().is_some_and(|x| x == "rs") && file != "lib.rs" {
                files.push((p.clone(), dest.clone()));
            }
            let tests = p.join("tests.rs");
            if p.is_dir() && tests.is_file() {
                files.push((tests, format!("{dest}/tests.rs")));
            }
        }
    }
    files.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(files)
}

fn git(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .env("GIT_AUTHOR_DATE", DATE)
        .env("GIT_COMMITTER_DATE", DATE)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .args([
            "-c",
            "user.name=pvguard",
            "-c",
            "user.email=pvguard@invalid",
        ]);
    cmd
}

/// The patch as `git format-patch` writes it for the current sources.
///
/// # Errors
/// A source that cannot be read, or git failing.
pub fn generate() -> Result<String, String> {
    let scratch = std::env::temp_dir().join(format!("pvguard-patches-{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    let result = generate_in(&scratch);
    let _ = fs::remove_dir_all(&scratch);
    result
}

fn generate_in(dir: &Path) -> Result<String, String> {
    sh::output(git(dir).args(["init", "-q"]), "git init")?;
    sh::output(
        git(dir).args(["commit", "-q", "--allow-empty", "-m", "base"]),
        "git commit",
    )?;
    for (from, to) in sources()? {
        let dest = dir.join(&to);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        fs::copy(&from, &dest).map_err(|e| format!("{}: {e}", from.display()))?;
    }
    sh::output(git(dir).args(["add", "-A"]), "git add")?;
    let message = dir.join(".git/PVGUARD_MSG");
    fs::write(
        &message,
        format!("{SUBJECT}\n\n{BODY}\n\nSigned-off-by: {AUTHOR}\n"),
    )
    .map_err(|e| format!("{}: {e}", message.display()))?;
    sh::output(
        git(dir)
            .args(["commit", "-q", "--author", AUTHOR, "-F"])
            .arg(&message),
        "git commit",
    )?;
    let patch = sh::output(
        git(dir)
            .args([
                "format-patch",
                "-1",
                "--stdout",
                "--no-signature",
                "--numbered",
                "--start-number",
            ])
            .arg(NUMBER.to_string()),
        "git format-patch",
    )?;
    // One commit knows only its own place: give it the series' total,
    // numbered as git numbers a series of that length.
    let width = TOTAL.to_string().len();
    Ok(patch.replacen(
        &format!("[PATCH {NUMBER}/{NUMBER}]"),
        &format!("[PATCH {NUMBER:0width$}/{TOTAL}]"),
        1,
    ))
}

/// The patch file in `patches/`.
pub fn path() -> PathBuf {
    paths::repo().join("patches").join(FILE)
}

/// Whether `patches/` carries the Rust exactly as the crates have it.
///
/// # Errors
/// Says which command brings it up to date.
pub fn check() -> Result<(), String> {
    let want = generate()?;
    let have = fs::read_to_string(path()).unwrap_or_default();
    if want == have {
        Ok(())
    } else {
        Err(format!(
            "{} does not match the crates' Rust sources: run `cargo xtask patches`",
            path().display()
        ))
    }
}

/// `cargo xtask patches`: writes the patch.
///
/// # Errors
/// As [`generate`], or the file cannot be written.
pub fn write() -> Result<(), String> {
    let patch = generate()?;
    let path = path();
    if fs::read_to_string(&path).ok().as_deref() != Some(patch.as_str()) {
        fs::write(&path, patch).map_err(|e| format!("{}: {e}", path.display()))?;
        paths::step(&format!("wrote {}", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The crates are the one source of truth: the series must carry
    /// their Rust exactly (`cargo xtask patches` regenerates it).
    #[test]
    fn the_series_carries_the_crates_rust_sources() {
        check().unwrap();
    }

    #[test]
    fn every_kernel_rust_file_is_carried() {
        let files = sources().unwrap();
        let dests: Vec<&str> = files.iter().map(|(_, d)| d.as_str()).collect();
        for must in [
            "drivers/virt/pvguard/pvguard.rs",
            "drivers/virt/pvguard/rust/mmio_guard/guard.rs",
            "drivers/virt/pvguard/rust/guest_kp/record.rs",
            "drivers/virt/pvguard/rust/arch_hooks/kp.rs",
        ] {
            assert!(dests.contains(&must), "{must} missing from {dests:?}");
        }
        assert!(!dests.iter().any(|d| d.ends_with("/lib.rs")));
    }
}
