// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The guest's userland: Debian's static arm64 busybox and `guest/init`,
//! as an uncompressed cpio archive. Per-boot commands and files are
//! appended as a second archive by `qemu-tests`.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use qemu_tests::cpio;

use crate::{paths, sh};

fn busybox() -> Result<PathBuf, String> {
    let dir = paths::cache().join("busybox");
    let bin = dir.join("root/bin/busybox");
    if bin.is_file() {
        return Ok(bin);
    }
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    paths::step("downloading Debian's busybox-static:arm64");
    sh::output(
        Command::new("apt-get").args(["download", "-q", "busybox-static:arm64"]).current_dir(&dir),
        "apt-get download busybox-static:arm64 (needs `dpkg --add-architecture arm64 && apt-get update`; cargo xtask deps does it)",
    )?;
    let deb = fs::read_dir(&dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or("apt-get download produced no .deb")?;
    sh::run(
        Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(dir.join("root")),
        "dpkg-deb -x",
    )?;
    if !bin.is_file() {
        return Err(format!("{} has no bin/busybox", deb.display()));
    }
    Ok(bin)
}

/// Builds the base initramfs and returns its path.
pub fn build() -> Result<PathBuf, String> {
    let bb = busybox()?;
    let init_path = paths::repo().join("guest/init");
    let init = fs::read(&init_path).map_err(|e| format!("{}: {e}", init_path.display()))?;
    let mut w = cpio::Writer::new();
    for d in [
        "bin", "sbin", "usr", "usr/bin", "usr/sbin", "proc", "sys", "dev", "etc", "tmp", "root",
        "pvguard",
    ] {
        w.dir(d);
    }
    w.file(
        "bin/busybox",
        0o755,
        &fs::read(&bb).map_err(|e| format!("{}: {e}", bb.display()))?,
    );
    w.symlink("bin/sh", "busybox");
    w.file("init", 0o755, &init);
    let out = paths::cache().join("initramfs.cpio");
    let data = w.finish();
    if fs::read(&out).ok().as_deref() != Some(&data[..]) {
        fs::write(&out, data).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    Ok(out)
}
