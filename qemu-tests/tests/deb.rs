// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The kernel packages `cargo xtask deb` builds (`make bindeb-pkg`): the
//! kernel from the `linux-image` package boots protected under hyp-stub,
//! a module built out of tree against the `linux-headers` package loads
//! in that guest, and the guest command ships in `pvguard-tools`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use qemu_tests::{artifacts, check, run, Artifacts, Boot};

/// Where `cargo xtask test` put the packages, or why it could not.
fn deb_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("PVGUARD_DEB_DIR") {
        return PathBuf::from(p);
    }
    match std::env::var("PVGUARD_DEB_ERROR") {
        Ok(why) => panic!("the kernel packages are not available: {why}"),
        Err(_) => {
            panic!("PVGUARD_DEB_DIR is not set: run the system tests with `cargo xtask test`")
        }
    }
}

/// Unpacks the package whose name starts with `prefix` into `to`.
fn unpack(prefix: &str, to: &Path) {
    let dir = deb_dir();
    let deb = fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .unwrap_or_else(|| panic!("no {prefix}* in {}", dir.display()));
    let _ = fs::remove_dir_all(to);
    let ok = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(to)
        .status()
        .unwrap()
        .success();
    assert!(ok, "dpkg-deb -x {}", deb.display());
}

/// The one entry of `dir` whose name starts with `prefix`.
fn only(dir: &Path, prefix: &str) -> PathBuf {
    fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .unwrap_or_else(|| panic!("no {prefix}* in {}", dir.display()))
}

/// The packaged kernel as an `Image` (the package's `vmlinuz` is
/// `Image.gz`; hyp-stub loads an uncompressed `Image`).
fn packaged_image(a: &Artifacts, tag: &str) -> PathBuf {
    let root = a.scratch.join(format!("{tag}-image"));
    unpack("linux-image-", &root);
    let vmlinuz = only(&root.join("boot"), "vmlinuz-");
    let out = Command::new("gzip")
        .arg("-dc")
        .arg(&vmlinuz)
        .output()
        .unwrap();
    assert!(out.status.success(), "gzip -dc {}", vmlinuz.display());
    let image = a.scratch.join(format!("{tag}-Image"));
    fs::write(&image, out.stdout).unwrap();
    image
}

#[test]
fn the_packaged_kernel_boots_protected() {
    let a = artifacts();
    let b = Boot {
        kernel: Some(packaged_image(&a, "deb-boot")),
        append: "pvguard=on".into(),
        exec: Some("pvguard status; echo \"status rc=$?\"".into()),
        ..Boot::default()
    };
    let o = run(&a, &b, "deb-boot").unwrap();
    check(
        &o,
        &[
            "Linux version 6.12",
            "pvguard: kernel protect: protected",
            "mmio_guard: enrolled",
            "kernel_protect: protected",
            "status rc=0",
            "reboot: Power down",
        ],
        &[],
    )
    .unwrap();
    assert_eq!(
        o.stats().expect("stats").text("kp_state"),
        Some("protected")
    );
}

#[test]
fn a_module_built_against_the_headers_package_loads() {
    let a = artifacts();
    let headers_root = a.scratch.join("deb-headers");
    unpack("linux-headers-", &headers_root);
    let headers = only(&headers_root.join("usr/src"), "linux-headers-");
    let module = a.scratch.join("deb-module");
    let _ = fs::remove_dir_all(&module);
    fs::create_dir_all(&module).unwrap();
    fs::write(
        module.join("pvguard_oot.c"),
        "// SPDX-License-Identifier: GPL-2.0\n\
         #include <linux/init.h>\n\
         #include <linux/module.h>\n\n\
         static int __init pvguard_oot_init(void)\n{\n\
         \tpr_info(\"pvguard_oot: built against the linux-headers package\\n\");\n\
         \treturn 0;\n}\n\
         module_init(pvguard_oot_init);\n\
         MODULE_LICENSE(\"GPL\");\n\
         MODULE_DESCRIPTION(\"pvguard: out-of-tree module test\");\n",
    )
    .unwrap();
    fs::write(module.join("Kbuild"), "obj-m += pvguard_oot.o\n").unwrap();
    let out = Command::new("make")
        .arg("-C")
        .arg(&headers)
        .arg(format!("M={}", module.display()))
        .args(["ARCH=arm64", "LLVM=1", "modules"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "make against {}:\n{}{}",
        headers.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ko = module.join("pvguard_oot.ko");
    let b = Boot {
        kernel: Some(packaged_image(&a, "deb-module")),
        append: "pvguard=on".into(),
        add: vec![ko],
        exec: Some("insmod /pvguard/pvguard_oot.ko && echo loaded; pvguard status".into()),
        ..Boot::default()
    };
    let o = run(&a, &b, "deb-module").unwrap();
    check(
        &o,
        &[
            "pvguard: kernel protect: protected",
            "pvguard_oot: built against the linux-headers package",
            "loaded",
            "kernel_protect: protected",
            "reboot: Power down",
        ],
        &[],
    )
    .unwrap();
}

#[test]
fn the_guest_command_ships_in_its_package_and_runs_in_the_packaged_kernel() {
    let a = artifacts();
    let root = a.scratch.join("deb-tools");
    unpack("pvguard-tools_", &root);
    let command = root.join("usr/sbin/pvguard");
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(&command).unwrap().permissions().mode()
    };
    assert_eq!(mode & 0o111, 0o111, "usr/sbin/pvguard is executable");
    assert_eq!(
        fs::read(&command).unwrap(),
        fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest/pvguard")).unwrap(),
        "the package carries guest/pvguard as it is"
    );
    // The packaged command, run in the packaged kernel (the initramfs's
    // own copy is not used: it is run from /pvguard, where the test puts
    // files without their mode, hence `sh`).
    let b = Boot {
        kernel: Some(packaged_image(&a, "deb-tools")),
        append: "pvguard=on".into(),
        add: vec![command],
        exec: Some(
            "sh /pvguard/pvguard status; echo \"status rc=$?\"; sh /pvguard/pvguard self-check; echo \"self-check rc=$?\""
                .into(),
        ),
        ..Boot::default()
    };
    let o = run(&a, &b, "deb-tools").unwrap();
    check(
        &o,
        &[
            "kernel_protect: protected",
            "status rc=0",
            "self-check: intact",
            "self-check rc=0",
        ],
        &[],
    )
    .unwrap();
}
