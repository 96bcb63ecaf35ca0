// SPDX-License-Identifier: GPL-2.0 OR MIT
//! Debian's own arm64 kernel, not built by us: the system tests boot it
//! under hyp-stub to show that a stock distribution kernel runs there.
//! It is the `linux-image-*-arm64-unsigned` package of the same release
//! as the `linux-source-6.12` we build from, downloaded once with apt
//! (like the guest's busybox) and cached under `$PVGUARD_CACHE`.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use crate::{paths, sh};

/// The kernel ABI name of a Debian package version: `6.12.117-1~deb12u1`
/// is `6.12.117+deb12`.
fn abi(version: &str) -> Option<String> {
    let upstream = version.split('-').next()?;
    let release: String = version
        .split("deb")
        .nth(1)?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (!upstream.is_empty() && !release.is_empty()).then(|| format!("{upstream}+deb{release}"))
}

/// The stock kernel's `Image` (Debian's arm64 `vmlinuz` is an
/// uncompressed `Image`), downloading its package on first use.
///
/// # Errors
/// A message saying what is missing: the source package that names the
/// release, or the download (offline).
pub fn stock_kernel() -> Result<PathBuf, String> {
    let version = sh::output(
        Command::new("dpkg-query").args(["-W", "-f=${Version}", "linux-source-6.12"]),
        "dpkg-query linux-source-6.12",
    )?;
    let abi = abi(version.trim())
        .ok_or_else(|| format!("cannot tell the kernel ABI of linux-source-6.12 {version}"))?;
    let dir = paths::cache().join("debian-kernel");
    let image = dir.join(format!("boot/vmlinuz-{abi}-arm64"));
    if image.is_file() {
        return Ok(image);
    }
    let pkg = format!("linux-image-{abi}-arm64-unsigned");
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    paths::step(&format!(
        "downloading Debian's stock kernel {pkg}:arm64 (93 MB, once)"
    ));
    sh::output(
        Command::new("apt-get")
            .args(["download", "-q", &format!("{pkg}:arm64")])
            .current_dir(&dir),
        &format!(
            "apt-get download {pkg}:arm64 failed: offline, or the package index is stale \
             (`apt-get update`; arm64 must be a foreign architecture, which `cargo xtask deps` \
             sets up). The stock-kernel test needs it once; it is then cached in {}",
            dir.display()
        ),
    )?;
    let deb = fs::read_dir(&dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&pkg) && n.ends_with(".deb"))
        })
        .ok_or_else(|| format!("apt-get download {pkg} produced no .deb"))?;
    // Only the kernel, not the 400 MB of modules.
    sh::run(
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "dpkg-deb --fsys-tarfile '{}' | tar -x -C '{}' './boot/vmlinuz-{abi}-arm64' './boot/config-{abi}-arm64'",
                deb.display(),
                dir.display()
            )),
        "extracting the kernel from the package",
    )?;
    let _ = fs::remove_file(&deb);
    if !image.is_file() {
        return Err(format!("{} has no {}", deb.display(), image.display()));
    }
    Ok(image)
}

/// Debian's configuration of that kernel (`/boot/config-*` of the same
/// package).
///
/// # Errors
/// As [`stock_kernel`].
pub fn stock_config() -> Result<PathBuf, String> {
    let image = stock_kernel()?;
    let name = image
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .ok_or("unexpected kernel file name")?;
    let config = image.with_file_name(format!("config-{name}"));
    if config.is_file() {
        Ok(config)
    } else {
        Err(format!(
            "{} is missing: remove {} to download the package again",
            config.display(),
            image.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::abi;

    #[test]
    fn abi_from_package_versions() {
        assert_eq!(abi("6.12.117-1~deb12u1").as_deref(), Some("6.12.117+deb12"));
        assert_eq!(abi("6.12.38-1").as_deref(), None);
        assert_eq!(abi("").as_deref(), None);
    }
}
