// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The guest's userland: Debian's static arm64 busybox, `guest/init` and
//! the `pvguard` command (`guest/pvguard`), as an uncompressed cpio
//! archive. Per-boot commands and files are
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
    let cmd_path = paths::repo().join("guest/pvguard");
    let cmd = fs::read(&cmd_path).map_err(|e| format!("{}: {e}", cmd_path.display()))?;
    w.file("bin/pvguard", 0o755, &cmd);
    let out = paths::cache().join("initramfs.cpio");
    let data = w.finish();
    if fs::read(&out).ok().as_deref() != Some(&data[..]) {
        fs::write(&out, data).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::process::Command;

    use crate::paths;

    /// `pvguard status` against a fake sysfs: the exit status for each
    /// kernel-protect state and last verdict (the QEMU tests cover the
    /// real one; a MODIFIED verdict cannot be produced there, which is the
    /// point of the protection).
    #[test]
    fn status_exit_codes() {
        let root = std::env::temp_dir().join(format!("pvguard-cmd-{}", std::process::id()));
        let kp = root.join("kernel_protect");
        fs::create_dir_all(&kp).unwrap();
        let status = |state: Option<&str>, check: &str| {
            let _ = fs::remove_file(kp.join("state"));
            if let Some(s) = state {
                fs::write(kp.join("state"), format!("{s}\n")).unwrap();
            }
            fs::write(kp.join("self_check"), check).unwrap();
            Command::new("sh")
                .arg(paths::repo().join("guest/pvguard"))
                .arg("status")
                .env("PVGUARD_SYSFS", &root)
                .output()
                .unwrap()
                .status
                .code()
        };
        assert_eq!(status(Some("protected"), "none\n"), Some(0));
        assert_eq!(status(Some("protected"), "intact\n"), Some(0));
        assert_eq!(status(Some("protected"), "MODIFIED\n"), Some(1));
        assert_eq!(status(Some("reported (compact)"), "none\n"), Some(2));
        assert_eq!(status(None, ""), Some(2));
        let usage = Command::new("sh")
            .arg(paths::repo().join("guest/pvguard"))
            .arg("frobnicate")
            .output()
            .unwrap();
        assert_eq!(usage.status.code(), Some(3));
        let _ = fs::remove_dir_all(&root);
    }
}
