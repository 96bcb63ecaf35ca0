// SPDX-License-Identifier: GPL-2.0 OR MIT
//! Test modules: small C modules in `qemu-tests/modules/` that make calls
//! a stock kernel never makes (a bogus PSCI entry point, the resource
//! manager's hypercall), built against the guest kernel's build tree.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use crate::Artifacts;

/// Builds `modules/<name>.c` into `<name>.ko` in a directory of the
/// scratch space named after `tag` (so tests running at once do not
/// share one), and returns the module's path.
///
/// # Errors
/// The build's output when `make` fails.
pub fn build(a: &Artifacts, name: &str, tag: &str) -> Result<PathBuf, String> {
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("modules")
        .join(format!("{name}.c"));
    let dir = a.scratch.join("modules").join(tag);
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    fs::copy(&source, dir.join(format!("{name}.c")))
        .map_err(|e| format!("{}: {e}", source.display()))?;
    fs::write(dir.join("Kbuild"), format!("obj-m := {name}.o\n"))
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let out = Command::new("make")
        .arg("-C")
        .arg(&a.kernel_build)
        .arg(format!("M={}", dir.display()))
        .args(["ARCH=arm64", "LLVM=1", "modules"])
        .output()
        .map_err(|e| format!("make: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building {name}.ko failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(dir.join(format!("{name}.ko")))
}
