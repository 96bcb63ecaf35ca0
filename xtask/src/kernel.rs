// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The guest kernel: Debian's linux-source-6.12 with `patches/` applied
//! as an ordered series (pvguard's Rust sources included, see
//! `patches.rs`), the config fragment merged onto tinyconfig, built with
//! `LLVM=1`.
//!
//! Everything is incremental: the source tree is untarred once, a changed
//! series is swapped by reverse-applying the old one (so untouched files
//! keep their timestamps), and make does the rest. The build directory is stable
//! (`~/.cache/pvguard/kernel-build`): build out-of-tree modules against
//! it with `make -C ~/.cache/pvguard/kernel-build M=$PWD LLVM=1 ARCH=arm64`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{deps, paths, sh};

/// What the kernel build produced.
pub struct KernelBuild {
    /// `arch/arm64/boot/Image`.
    pub image: PathBuf,
    /// The out-of-tree build directory.
    pub build_dir: PathBuf,
}

/// The kernel source tree in the cache.
pub fn src_dir() -> PathBuf {
    paths::cache().join("linux-src")
}

/// The kernel build directory.
pub fn build_dir() -> PathBuf {
    paths::cache().join("kernel-build")
}

fn tarball() -> Result<PathBuf, String> {
    let mut found: Vec<PathBuf> = fs::read_dir("/usr/src")
        .map_err(|e| format!("/usr/src: {e}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("linux-source-6.12") && n.ends_with(".tar.xz"))
        })
        .collect();
    found.sort();
    found.pop().ok_or_else(|| {
        "no /usr/src/linux-source-6.12*.tar.xz: install it with `apt-get install linux-source-6.12` (cargo xtask deps)".into()
    })
}

fn stamp(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

fn unpack(tar: &Path) -> Result<(), String> {
    let src = src_dir();
    let tmp = paths::cache().join("linux-src.unpacking");
    let _ = fs::remove_dir_all(&tmp);
    let _ = fs::remove_dir_all(&src);
    let _ = fs::remove_dir_all(build_dir());
    fs::create_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    paths::step(&format!("unpacking {}", tar.display()));
    sh::run(
        Command::new("tar")
            .arg("-xf")
            .arg(tar)
            .arg("-C")
            .arg(&tmp)
            .arg("--strip-components=1"),
        "tar",
    )?;
    fs::rename(&tmp, &src).map_err(|e| format!("{}: {e}", src.display()))
}

/// The patch series: each file of `patches/*.patch`, by name, in order.
type Series = Vec<(String, Vec<u8>)>;

fn series() -> Result<Series, String> {
    let dir = paths::repo().join("patches");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".patch"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            fs::read(dir.join(&n))
                .map(|c| (n.clone(), c))
                .map_err(|e| format!("{n}: {e}"))
        })
        .collect()
}

fn applied_dir() -> PathBuf {
    src_dir().join(".pvguard-applied")
}

fn applied() -> Series {
    let mut names: Vec<String> = fs::read_dir(applied_dir())
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
        .into_iter()
        .filter_map(|n| fs::read(applied_dir().join(&n)).ok().map(|c| (n, c)))
        .collect()
}

fn patch(file: &Path, reverse: bool) -> Result<(), String> {
    let mut cmd = Command::new("patch");
    cmd.args(["-p1", "-s", "--no-backup-if-mismatch", "-d"])
        .arg(src_dir())
        .arg("-i")
        .arg(file);
    cmd.arg(if reverse { "-R" } else { "--forward" });
    sh::output(&mut cmd, &format!("patch {}", file.display())).map(drop)
}

/// Makes the source tree carry exactly the series `want`.
fn apply_series(tar: &Path, want: &Series) -> Result<(), String> {
    let tar_id = format!(
        "{}:{}",
        tar.display(),
        fs::metadata(tar).map(|m| m.len()).unwrap_or(0)
    );
    let tar_stamp = paths::cache().join("linux-src.tarball");
    if !src_dir().is_dir() || stamp(&tar_stamp) != tar_id {
        unpack(tar)?;
        fs::write(&tar_stamp, &tar_id).map_err(|e| e.to_string())?;
    }
    let have = applied();
    if *want == have {
        return Ok(());
    }
    let kept = Timestamps::record(&have, want);
    paths::step(&format!("applying {} patches", want.len()));
    for (name, _) in have.iter().rev() {
        if let Err(e) = patch(&applied_dir().join(name), true) {
            // The tree is not what we think: start again from the tarball.
            eprintln!("    cannot reverse {name} ({e}); unpacking afresh");
            unpack(tar)?;
            fs::write(&tar_stamp, &tar_id).map_err(|e| e.to_string())?;
            break;
        }
        let _ = fs::remove_file(applied_dir().join(name));
    }
    let _ = fs::remove_dir_all(applied_dir());
    fs::create_dir_all(applied_dir()).map_err(|e| e.to_string())?;
    // Only the series creates pvguard's directory; earlier builds copied
    // the Rust sources in by hand, and the series' new files must not
    // find them there.
    let _ = fs::remove_dir_all(src_dir().join("drivers/virt/pvguard"));
    let dir = paths::repo().join("patches");
    for (name, content) in want {
        patch(&dir.join(name), false).map_err(|e| {
            format!(
                "{e}\n(the series in patches/ does not apply to {})",
                tar.display()
            )
        })?;
        fs::write(applied_dir().join(name), content).map_err(|e| e.to_string())?;
    }
    kept.restore();
    Ok(())
}

/// The files two series touch, with their contents and modification
/// times before the swap. Swapping reverses the old series and applies
/// the new one, rewriting every file either touches; a file that ends up
/// as it was (a header both series change alike) gets its old time back,
/// so make does not rebuild everything that includes it.
struct Timestamps(Vec<(PathBuf, Vec<u8>, std::time::SystemTime)>);

impl Timestamps {
    fn record(old: &Series, new: &Series) -> Self {
        let mut paths: Vec<&str> = old
            .iter()
            .chain(new)
            .flat_map(|(_, content)| {
                std::str::from_utf8(content)
                    .unwrap_or("")
                    .lines()
                    .filter_map(|l| l.strip_prefix("+++ b/"))
                    .collect::<Vec<_>>()
            })
            .collect();
        paths.sort_unstable();
        paths.dedup();
        Self(
            paths
                .into_iter()
                .filter_map(|p| {
                    let path = src_dir().join(p);
                    let time = fs::metadata(&path).and_then(|m| m.modified()).ok()?;
                    Some((path.clone(), fs::read(&path).ok()?, time))
                })
                .collect(),
        )
    }

    fn restore(self) {
        for (path, content, time) in self.0 {
            if fs::read(&path).ok().as_deref() == Some(&content[..]) {
                if let Ok(f) = fs::File::options().write(true).open(&path) {
                    let _ = f.set_modified(time);
                }
            }
        }
    }
}

/// `make` in the kernel tree for the guest: out of tree, arm64, LLVM, the
/// pinned Rust toolchain and the installed bindgen.
fn make_command(build: &Path, args: &[&str]) -> Result<Command, String> {
    make_command_in(&src_dir(), build, args)
}

/// As [`make_command`], in the source tree `src`.
fn make_command_in(src: &Path, build: &Path, args: &[&str]) -> Result<Command, String> {
    let toolchain = deps::toolchain()?;
    let mut cmd = Command::new("make");
    cmd.arg("-C").arg(src).arg(format!("O={}", build.display()));
    cmd.args(["ARCH=arm64", "LLVM=1"]).args(args);
    cmd.env("RUSTUP_TOOLCHAIN", &toolchain);
    if let Some(bindgen) = deps::which("bindgen") {
        cmd.arg(format!("BINDGEN={}", bindgen.display()));
    }
    Ok(cmd)
}

fn make(build: &Path, args: &[&str], log: &str) -> Result<(), String> {
    let mut cmd = make_command(build, args)?;
    sh::run_logged(
        &mut cmd,
        &format!("make {}", args.join(" ")),
        &paths::cache().join(log),
    )
}

/// Configures the kernel unless the config fragment and the series
/// `want` are what it was last configured with.
fn configure(build: &Path, want: &Series) -> Result<(), String> {
    let fragment_path = paths::repo().join("patches/pvguard.config");
    let fragment = fs::read_to_string(&fragment_path)
        .map_err(|e| format!("{}: {e}", fragment_path.display()))?;
    let mut id = fragment.clone();
    for (name, content) in want {
        id.push_str(&format!("\n{name}:{}", content.len()));
        id.push_str(&String::from_utf8_lossy(content));
    }
    let stamp_path = build.join(".pvguard-config");
    if build.join(".config").is_file() && stamp(&stamp_path) == id {
        return Ok(());
    }
    paths::step("configuring the kernel (tinyconfig + patches/pvguard.config)");
    fs::create_dir_all(build).map_err(|e| e.to_string())?;
    make(build, &["tinyconfig"], "kernel-config.log")?;
    sh::run_logged(
        Command::new(src_dir().join("scripts/kconfig/merge_config.sh"))
            .arg("-m")
            .arg("-O")
            .arg(build)
            .arg(build.join(".config"))
            .arg(&fragment_path)
            .current_dir(src_dir()),
        "merge_config.sh",
        &paths::cache().join("kernel-merge.log"),
    )?;
    make(build, &["olddefconfig"], "kernel-config.log")?;
    let config = fs::read_to_string(build.join(".config")).map_err(|e| e.to_string())?;
    let mut missing = Vec::new();
    for line in fragment
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("CONFIG_"))
    {
        if !config.lines().any(|c| c == line) {
            missing.push(line.to_string());
        }
    }
    if !missing.is_empty() {
        let mut why = format!("the kernel config lacks {}", missing.join(", "));
        if missing.iter().any(|m| m.starts_with("CONFIG_RUST=")) {
            let mut cmd = make_command(build, &["rustavailable"])?;
            let out = cmd
                .output()
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout).into_owned()
                        + &String::from_utf8_lossy(&o.stderr)
                })
                .unwrap_or_default();
            why.push_str(&format!("\n`make rustavailable` says:\n{out}"));
        }
        return Err(why);
    }
    fs::write(&stamp_path, id).map_err(|e| e.to_string())
}

/// Builds the kernel (incrementally).
pub fn build() -> Result<KernelBuild, String> {
    crate::patches::check()?;
    let tar = tarball()?;
    let series = series()?;
    apply_series(&tar, &series)?;
    let build = build_dir();
    configure(&build, &series)?;
    let jobs = std::thread::available_parallelism()
        .map(|n| n.get() + 1)
        .unwrap_or(3);
    paths::step(&format!(
        "building the kernel (make -j{jobs} Image modules; log in {}/kernel-build.log)",
        paths::cache().display()
    ));
    make(
        &build,
        &[&format!("-j{jobs}"), "Image", "modules"],
        "kernel-build.log",
    )?;
    Ok(KernelBuild {
        image: build.join("arch/arm64/boot/Image"),
        build_dir: build,
    })
}

/// `scripts/checkpatch.pl` over the series: no errors allowed. (The
/// remaining warnings are inherent and explained in their commit
/// messages: the `volatile` iounmap() signature and the `#define iounmap
/// iounmap` idiom required by the existing API, files added before or
/// after the MAINTAINERS entry that covers them, and a Markdown table in
/// the Rust documentation.)
pub fn checkpatch() -> Result<(), String> {
    let dir = paths::repo().join("patches");
    let mut cmd = Command::new("perl");
    cmd.arg(src_dir().join("scripts/checkpatch.pl"))
        .args(["--no-tree", "--terse", "--show-types"]);
    for (name, _) in series()? {
        cmd.arg(dir.join(name));
    }
    let out = cmd.output().map_err(|e| format!("checkpatch.pl: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let errors: Vec<&str> = text.lines().filter(|l| l.contains(": ERROR:")).collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n"))
    }
}

/// `make LLVM=1 rustfmtcheck` in the kernel tree (pvguard's Rust as the
/// kernel formats it).
pub fn rustfmtcheck() -> Result<(), String> {
    make(&build_dir(), &["rustfmtcheck"], "kernel-rustfmtcheck.log")
}

/// `cargo xtask check-series`: applies the series one patch at a time to
/// a fresh tree of its own (`$PVGUARD_CACHE/series-check/`) and builds
/// the kernel after each, configured as the guest is (tinyconfig and
/// `patches/pvguard.config`, whose pvguard options only exist from the
/// patch that adds them on). The first build is a full one, the rest
/// incremental. Slow: not part of `cargo xtask test`.
///
/// # Errors
/// The first patch that does not apply or build, with its log.
pub fn check_series() -> Result<(), String> {
    crate::patches::check()?;
    let tar = tarball()?;
    let series = series()?;
    let root = paths::cache().join("series-check");
    let src = root.join("src");
    let build = root.join("build");
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&src).map_err(|e| format!("{}: {e}", src.display()))?;
    fs::create_dir_all(&build).map_err(|e| format!("{}: {e}", build.display()))?;
    paths::step(&format!(
        "unpacking {} into {}",
        tar.display(),
        src.display()
    ));
    sh::run(
        Command::new("tar")
            .arg("-xf")
            .arg(&tar)
            .arg("-C")
            .arg(&src)
            .arg("--strip-components=1"),
        "tar",
    )?;
    let fragment = paths::repo().join("patches/pvguard.config");
    let dir = paths::repo().join("patches");
    let jobs = std::thread::available_parallelism()
        .map(|n| n.get() + 1)
        .unwrap_or(3);
    let log = root.join("build.log");
    for (i, (name, _)) in series.iter().enumerate() {
        paths::step(&format!("[{}/{}] {name}", i + 1, series.len()));
        let mut apply = Command::new("patch");
        apply
            .args(["-p1", "-s", "--forward", "-d"])
            .arg(&src)
            .arg("-i")
            .arg(dir.join(name));
        sh::output(&mut apply, &format!("patch {name}"))?;
        let run = |args: &[&str]| -> Result<(), String> {
            let mut cmd = make_command_in(&src, &build, args)?;
            sh::run_logged(&mut cmd, &format!("{name}: make {}", args.join(" ")), &log)
        };
        run(&["tinyconfig"])?;
        sh::run_logged(
            Command::new(src.join("scripts/kconfig/merge_config.sh"))
                .arg("-m")
                .arg("-O")
                .arg(&build)
                .arg(build.join(".config"))
                .arg(&fragment)
                .current_dir(&src),
            "merge_config.sh",
            &log,
        )?;
        run(&["olddefconfig"])?;
        run(&[&format!("-j{jobs}"), "Image", "modules"])?;
        println!("    builds: {name}");
    }
    println!(
        "every patch of the series builds on its own ({})",
        series.len()
    );
    Ok(())
}

/// `cargo xtask debian-config`: compiles what the series touches in
/// Debian's own arm64 6.12 configuration (from the stock kernel package)
/// with `LLVM=1`, `CONFIG_RUST=y` and `CONFIG_PVGUARD=y`: pvguard's C and
/// Rust objects and every C file the series changes (which compiles the
/// headers it changes). That shows the series builds in a real
/// distribution config without building the whole kernel. Debian builds
/// with GCC and `MODVERSIONS`; Rust in 6.12 needs neither `MODVERSIONS`
/// nor BTF without pahole's language filter, so those are turned off,
/// and `olddefconfig` settles the rest for clang.
///
/// # Errors
/// The config cannot be had, Rust or pvguard do not end up enabled, or a
/// file does not compile (with the log's tail).
pub fn debian_config_check() -> Result<(), String> {
    let config = crate::debian::stock_config()?;
    crate::patches::check()?;
    let tar = tarball()?;
    let series = series()?;
    apply_series(&tar, &series)?;
    let build = paths::cache().join("debian-config-build");
    fs::create_dir_all(&build).map_err(|e| format!("{}: {e}", build.display()))?;
    fs::copy(&config, build.join(".config")).map_err(|e| format!("{}: {e}", config.display()))?;
    let log = paths::cache().join("debian-config.log");
    let mut set = Command::new(src_dir().join("scripts/config"));
    set.arg("--file").arg(build.join(".config"));
    for opt in ["RUST", "PVGUARD", "PVGUARD_SELFTEST"] {
        set.args(["--enable", opt]);
    }
    for opt in ["MODVERSIONS", "DEBUG_INFO_BTF"] {
        set.args(["--disable", opt]);
    }
    sh::run_logged(&mut set, "scripts/config", &log)?;
    paths::step(&format!(
        "configuring Debian's {} with LLVM=1, RUST, PVGUARD",
        config.display()
    ));
    sh::run_logged(
        &mut make_command(&build, &["olddefconfig"])?,
        "make olddefconfig",
        &log,
    )?;
    let text = fs::read_to_string(build.join(".config")).map_err(|e| e.to_string())?;
    for want in ["CONFIG_RUST=y", "CONFIG_PVGUARD=y", "CONFIG_CC_IS_CLANG=y"] {
        if !text.lines().any(|l| l == want) {
            return Err(format!(
                "Debian's config with LLVM=1 lacks {want} after olddefconfig (see {})",
                build.join(".config").display()
            ));
        }
    }
    // pvguard's directory, and every C file the series changes.
    let mut targets = vec!["drivers/virt/pvguard/".to_string()];
    for (_, content) in &series {
        for path in String::from_utf8_lossy(content)
            .lines()
            .filter_map(|l| l.strip_prefix("+++ b/"))
        {
            if let Some(stem) = path.strip_suffix(".c") {
                if !path.starts_with("drivers/virt/pvguard/") {
                    targets.push(format!("{stem}.o"));
                }
            }
        }
    }
    targets.sort();
    targets.dedup();
    let jobs = std::thread::available_parallelism()
        .map(|n| n.get() + 1)
        .unwrap_or(3);
    let mut args = vec![format!("-j{jobs}")];
    args.extend(targets.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    paths::step(&format!(
        "compiling {} (log in {})",
        targets.join(" "),
        log.display()
    ));
    let start = std::time::Instant::now();
    make(&build, &args, "debian-config.log")?;
    println!(
        "Debian's config compiles the series ({} targets) in {:.0} s",
        targets.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `cargo xtask deb`: the kernel packages, by the kernel's own `make
/// bindeb-pkg` on the guest build (`linux-image`, `linux-headers`,
/// `linux-libc-dev`), in `$PVGUARD_CACHE/deb/`. Packaging is skipped
/// when the packages are newer than the kernel image.
///
/// Two things differ from a native Debian build. `DPKG_FLAGS=-d`: the
/// generated package asks for Debian's own build dependencies (a GCC
/// cross compiler among them), which an LLVM build does not use. And
/// with `LLVM=1` the compiler is also the host compiler, so the
/// `linux-headers` package carries the build tools (`modpost`, `fixdep`)
/// built for the machine that built it: out-of-tree modules build
/// against it there; on an arm64 machine, run `make scripts` in the
/// headers tree first.
///
/// # Errors
/// The kernel build or the packaging failed.
pub fn deb() -> Result<Vec<PathBuf>, String> {
    let built = build()?;
    let out = paths::cache().join("deb");
    let image_time = fs::metadata(&built.image)
        .and_then(|m| m.modified())
        .map_err(|e| format!("{}: {e}", built.image.display()))?;
    // The kernel's packages are rebuilt when the kernel is newer; the
    // command's, which takes a moment, every time.
    let existing: Vec<PathBuf> = debs_in(&out)
        .into_iter()
        .filter(|p| !is_tools_deb(p))
        .collect();
    let fresh = existing.len() == 3
        && existing.iter().all(|p| {
            fs::metadata(p)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t > image_time)
        });
    if fresh {
        let mut all = existing;
        all.push(tools_deb(&out)?);
        all.sort();
        return Ok(all);
    }
    // dpkg-buildpackage writes next to the build directory.
    let parent = built
        .build_dir
        .parent()
        .ok_or("the build directory has no parent")?
        .to_path_buf();
    for old in debs_in(&parent) {
        let _ = fs::remove_file(old);
    }
    paths::step(&format!(
        "packaging the kernel (make bindeb-pkg; log in {}/kernel-deb.log)",
        paths::cache().display()
    ));
    let jobs = std::thread::available_parallelism()
        .map(|n| n.get() + 1)
        .unwrap_or(3);
    make(
        &built.build_dir,
        &[&format!("-j{jobs}"), "DPKG_FLAGS=-d", "bindeb-pkg"],
        "kernel-deb.log",
    )?;
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut moved = Vec::new();
    for deb in debs_in(&parent) {
        let to = out.join(deb.file_name().ok_or("no file name")?);
        fs::rename(&deb, &to).map_err(|e| format!("{}: {e}", to.display()))?;
        moved.push(to);
    }
    if moved.len() != 3 {
        return Err(format!(
            "make bindeb-pkg made {} packages, not 3: see the log",
            moved.len()
        ));
    }
    moved.push(tools_deb(&out)?);
    moved.sort();
    for p in &moved {
        println!("    {}", p.display());
    }
    Ok(moved)
}

/// The kernel's packages in `dir`.
/// The guest command's package, `pvguard-tools`: `guest/pvguard` as
/// `/usr/sbin/pvguard`, built with `dpkg-deb` into `out`.
fn tools_deb(out: &Path) -> Result<PathBuf, String> {
    let stage = paths::cache().join("pvguard-tools");
    let _ = fs::remove_dir_all(&stage);
    let sbin = stage.join("usr/sbin");
    let doc = stage.join("usr/share/doc/pvguard-tools");
    let control = stage.join("DEBIAN");
    for d in [&sbin, &doc, &control] {
        fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let command = sbin.join("pvguard");
    fs::copy(paths::repo().join("guest/pvguard"), &command)
        .map_err(|e| format!("guest/pvguard: {e}"))?;
    let version = env!("CARGO_PKG_VERSION");
    let files = [
        (
            control.join("control"),
            format!(
                "Package: pvguard-tools\n\
                 Version: {version}\n\
                 Architecture: all\n\
                 Maintainer: pvguard maintainers <maintainers@users.noreply.h-seed-5eb5de93.example>\n\
                 Section: admin\n\
                 Priority: optional\n\
                 Description: pvguard guest command (status and self-check)\n \
                 Shows what the hypervisor enforces for this guest (CONFIG_PVGUARD)\n \
                 and asks it for an integrity self-check of the kernel.\n"
            ),
        ),
        (
            doc.join("copyright"),
            "pvguard-tools: the pvguard guest command.\n\
             License: GPL-2.0 OR MIT (SPDX-License-Identifier in the file).\n"
                .to_string(),
        ),
    ];
    for (path, text) in files {
        fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    sh::output(
        Command::new("chmod").arg("0755").arg(&command),
        "chmod pvguard",
    )?;
    let deb = out.join(format!("pvguard-tools_{version}_all.deb"));
    sh::output(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "--build"])
            .arg(&stage)
            .arg(&deb),
        "dpkg-deb --build pvguard-tools",
    )?;
    Ok(deb)
}

fn is_tools_deb(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("pvguard-tools_"))
}

fn debs_in(dir: &Path) -> Vec<PathBuf> {
    let mut debs: Vec<PathBuf> = fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                        (n.starts_with("linux-") && n.ends_with("_arm64.deb"))
                            || (n.starts_with("pvguard-tools_") && n.ends_with("_all.deb"))
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    debs.sort();
    debs
}
