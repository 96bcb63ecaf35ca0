// SPDX-License-Identifier: GPL-2.0 OR MIT
//! Booting the pvguard guest in QEMU, under hyp-stub or on plain QEMU, and
//! reading what it prints. This is the one place the QEMU command line is
//! built: `cargo xtask run` and the system tests both use it.

pub mod cpio;
pub mod module;
pub mod soak;
pub mod stats;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use std::{env, fs, thread};

use hyp_stub::boot::{self, Manifest};

/// Where the built pieces are.
#[derive(Clone, Debug)]
pub struct Artifacts {
    /// The guest kernel `Image`.
    pub kernel: PathBuf,
    /// The hypervisor ELF.
    pub hyp: PathBuf,
    /// The base initramfs (busybox and `/init`).
    pub initramfs: PathBuf,
    /// The kernel build directory (for test modules).
    pub kernel_build: PathBuf,
    /// Scratch space for per-boot files.
    pub scratch: PathBuf,
}

impl Artifacts {
    /// Reads the artifact paths `cargo xtask test` exports.
    ///
    /// # Errors
    /// A message naming the missing variable and how to get it set.
    pub fn from_env() -> Result<Self, String> {
        let var = |name: &str| {
            env::var_os(name).map(PathBuf::from).ok_or_else(|| {
                format!("{name} is not set: the system tests need the built guest; run them with `cargo xtask test`")
            })
        };
        let a = Self {
            kernel: var("PVGUARD_KERNEL")?,
            hyp: var("PVGUARD_HYP")?,
            initramfs: var("PVGUARD_INITRAMFS")?,
            kernel_build: var("PVGUARD_KERNEL_BUILD")?,
            scratch: var("PVGUARD_SCRATCH")?,
        };
        for p in [&a.kernel, &a.hyp, &a.initramfs] {
            if !p.exists() {
                return Err(format!(
                    "{} does not exist: run `cargo xtask test`",
                    p.display()
                ));
            }
        }
        Ok(a)
    }
}

/// The artifacts, for system tests: panics with the reason (and how to
/// get them built) if they are missing.
pub fn artifacts() -> Artifacts {
    Artifacts::from_env().unwrap_or_else(|e| panic!("{e}"))
}

/// The kernel argument with which the guest opts in to pvguard; what
/// `cargo xtask run` gives unless told `--unprotected`.
pub const PROTECT: &str = "pvguard=on";

/// What `cargo xtask run` has the guest do when given no command: show
/// its protection as the guest sees it (the guest's `pvguard` command),
/// and ask for a self-check.
pub const SHOW_PROTECTION: &str = r#"pvguard status
pvguard self-check"#;

/// How to boot.
#[derive(Clone, Debug)]
pub struct Boot {
    /// Under hyp-stub (else plain QEMU, the guest entered at EL1 too).
    pub hyp: bool,
    /// Extra kernel command-line arguments.
    pub append: String,
    /// Shell commands the guest's init runs (none: boot and power off).
    pub exec: Option<String>,
    /// Files to put into the guest's `/pvguard/`.
    pub add: Vec<PathBuf>,
    /// `Manifest::services` for hyp-stub (0: default).
    pub services: u64,
    /// Number of CPUs the guest gets.
    pub cpus: u32,
    /// Hard time limit.
    pub timeout: Duration,
    /// Interactive: console on the terminal (no capture, no timeout).
    pub interactive: bool,
    /// Another kernel `Image` than the built guest's (Debian's own).
    pub kernel: Option<PathBuf>,
    /// More QEMU arguments, such as devices: `["-device", "virtio-rng-pci"]`.
    pub qemu_args: Vec<String>,
}

impl Default for Boot {
    fn default() -> Self {
        Self {
            hyp: true,
            append: String::new(),
            exec: None,
            add: Vec::new(),
            services: 0,
            cpus: 1,
            timeout: Duration::from_secs(120),
            interactive: false,
            kernel: None,
            qemu_args: Vec::new(),
        }
    }
}

/// What a boot produced.
#[derive(Debug)]
pub struct Outcome {
    /// Everything on the serial console, then what QEMU itself printed.
    pub console: String,
    /// What QEMU itself printed on its standard error.
    pub qemu_errors: String,
    /// The QEMU command line, as a shell would show it.
    pub command_line: String,
    /// QEMU's exit status (None: killed at the time limit).
    pub status: Option<i32>,
    /// Wall-clock time of the boot.
    pub elapsed: Duration,
}

impl Outcome {
    /// Whether QEMU exited by itself with status 0.
    pub fn clean_exit(&self) -> bool {
        self.status == Some(0)
    }

    /// The hypervisor's stats block, if printed.
    pub fn stats(&self) -> Option<stats::Stats> {
        stats::Stats::parse(&self.console)
    }

    /// Why QEMU failed, for a person: the command line it ran, QEMU's own
    /// error and, where the error is a known one, the likely fix.
    pub fn qemu_failure(&self) -> String {
        let mut msg = format!("QEMU command line:\n    {}\n", self.command_line);
        let said = self.qemu_errors.trim();
        if !said.is_empty() {
            msg += &format!("QEMU said:\n    {}\n", said.replace('\n', "\n    "));
        }
        if let Some(fix) = likely_fix(said) {
            msg += &format!("likely fix: {fix}\n");
        }
        msg
    }
}

/// The likely fix for an error QEMU printed, where it is a known one.
pub fn likely_fix(qemu_errors: &str) -> Option<&'static str> {
    const KNOWN: &[(&str, &str)] = &[
        (
            "failed to find romfile",
            "a device that needs an option ROM was added to the command line; pvguard's boots use \
             -nodefaults and need none (if you add a NIC, install Debian's ipxe-qemu)",
        ),
        (
            "Could not open option rom",
            "an option ROM is missing; pvguard's boots need none (install Debian's ipxe-qemu if you \
             added a NIC)",
        ),
        (
            "could not load kernel",
            "the hypervisor or kernel image is missing: run `cargo xtask run` to build them",
        ),
        (
            "Could not open",
            "a file on the command line is missing or unreadable: run `cargo xtask run` to rebuild",
        ),
        (
            "Unsupported machine type",
            "this QEMU lacks the `virt` machine: install Debian's qemu-system-arm (QEMU 7.2 or later)",
        ),
        (
            "cannot set up guest memory",
            "the host is short of memory for the guest's 1 GiB: free some and retry",
        ),
    ];
    KNOWN
        .iter()
        .find(|(needle, _)| qemu_errors.contains(needle))
        .map(|(_, fix)| *fix)
}

/// A command line as a shell would show it (for error messages).
fn shell_line(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| {
            let a = a.to_string_lossy();
            if a.is_empty() || a.contains([' ', '"', '\'', '$']) {
                format!("'{}'", a.replace('\'', "'\\''"))
            } else {
                a.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The initramfs for one boot: the base archive plus a second archive
/// with the commands to run and added files (Linux unpacks concatenated
/// archives in order).
fn initramfs_for(a: &Artifacts, b: &Boot, tag: &str) -> Result<PathBuf, String> {
    let mut data = fs::read(&a.initramfs).map_err(|e| format!("{}: {e}", a.initramfs.display()))?;
    let mut extra = cpio::Writer::new();
    extra.dir("etc/pvguard");
    extra.dir("pvguard");
    if let Some(cmd) = &b.exec {
        extra.file("etc/pvguard/exec.sh", 0o755, format!("{cmd}\n").as_bytes());
    }
    if b.interactive {
        extra.file("etc/pvguard/shell", 0o644, b"");
    }
    for p in &b.add {
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| format!("bad file name {}", p.display()))?;
        let content = fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
        extra.file(&format!("pvguard/{name}"), 0o644, &content);
    }
    data.extend_from_slice(&extra.finish());
    fs::create_dir_all(&a.scratch).map_err(|e| format!("{}: {e}", a.scratch.display()))?;
    let path = a.scratch.join(format!("initramfs-{tag}.cpio"));
    fs::write(&path, data).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// Where QEMU writes the guest's serial console.
#[derive(Clone, Debug)]
pub enum Console {
    /// QEMU's standard output (to the terminal, or a pipe the harness
    /// reads as the boot goes).
    Stdio,
    /// A file, read once QEMU has exited. QEMU writes the console a
    /// character at a time; into a pipe, each one wakes the reader, and on
    /// a 2-core machine those wake-ups compete with the vCPU threads.
    File(PathBuf),
}

/// The QEMU command line for a boot.
pub fn command(a: &Artifacts, b: &Boot, tag: &str, console: &Console) -> Result<Command, String> {
    let initrd = initramfs_for(a, b, tag)?;
    let kernel = b.kernel.as_ref().unwrap_or(&a.kernel);
    let mut cmd = Command::new("qemu-system-aarch64");
    let append = format!("console=ttyAMA0 panic=-1 {}", b.append);
    let machine = if b.hyp {
        "virt,virtualization=on,gic-version=3"
    } else {
        "virt,gic-version=3"
    };
    // Exactly the devices a boot uses: no default NIC (whose option ROM
    // comes from a package the build does not need), no VGA, no
    // monitor; the serial port is the board's PL011.
    cmd.arg("-nodefaults");
    cmd.args(["-machine", machine, "-cpu", "max", "-m", "1G"]);
    cmd.arg("-smp").arg(b.cpus.to_string());
    let serial = match console {
        Console::Stdio => "stdio".to_string(),
        Console::File(p) => format!("file:{}", p.display()),
    };
    cmd.args(["-display", "none", "-serial", &serial]);
    cmd.args(["-monitor", "none", "-no-reboot"]);
    if b.hyp {
        let kernel_size = file_size(kernel)?;
        let initrd_size = file_size(&initrd)?;
        let manifest = Manifest {
            kernel_ipa: boot::KERNEL_LOAD_IPA,
            kernel_size,
            initrd_ipa: boot::INITRD_LOAD_IPA,
            initrd_size,
            services: match b.services {
                0 => boot::DEFAULT_SERVICES,
                s => s,
            },
        };
        let mpath = a.scratch.join(format!("manifest-{tag}.bin"));
        fs::write(&mpath, manifest.to_bytes()).map_err(|e| format!("{}: {e}", mpath.display()))?;
        cmd.arg("-kernel").arg(&a.hyp);
        let loader = |file: &Path, addr: u64| {
            format!("loader,file={},addr={addr:#x},force-raw=on", file.display())
        };
        cmd.arg("-device")
            .arg(loader(kernel, boot::KERNEL_LOAD_IPA));
        cmd.arg("-device")
            .arg(loader(&initrd, boot::INITRD_LOAD_IPA));
        cmd.arg("-device").arg(loader(&mpath, boot::MANIFEST_PA));
    } else {
        cmd.arg("-kernel").arg(kernel).arg("-initrd").arg(&initrd);
    }
    cmd.arg("-append").arg(append);
    cmd.args(&b.qemu_args);
    Ok(cmd)
}

fn file_size(p: &Path) -> Result<u64, String> {
    fs::metadata(p)
        .map(|m| m.len())
        .map_err(|e| format!("{}: {e}", p.display()))
}

/// Boots once and returns what the console showed. `tag` names the
/// per-boot files (unique per concurrent boot). The console goes to a
/// file, so nothing on the host wakes up while the guest runs.
///
/// # Errors
/// QEMU could not be started.
pub fn run(a: &Artifacts, b: &Boot, tag: &str) -> Result<Outcome, String> {
    // `command` creates the scratch directory before QEMU opens the file.
    let path = a.scratch.join(format!("console-{tag}.txt"));
    let _ = fs::remove_file(&path);
    let mut o = launch(a, b, tag, &Console::File(path.clone()), |_| {})?;
    // What QEMU printed on its own (stderr, a kill note) goes after the
    // guest's console, as it would have arrived.
    let serial = match fs::read(&path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).replace('\r', ""),
        Err(e) => format!("[qemu-tests: no console file {}: {e}]\n", path.display()),
    };
    let _ = fs::remove_file(&path);
    o.console = serial + &o.console;
    Ok(o)
}

/// As [`run`], but with the console on QEMU's standard output, handing
/// each chunk to `echo` as it arrives.
///
/// # Errors
/// QEMU could not be started.
pub fn run_with(
    a: &Artifacts,
    b: &Boot,
    tag: &str,
    echo: impl FnMut(&[u8]),
) -> Result<Outcome, String> {
    launch(a, b, tag, &Console::Stdio, echo)
}

fn launch(
    a: &Artifacts,
    b: &Boot,
    tag: &str,
    console: &Console,
    mut echo: impl FnMut(&[u8]),
) -> Result<Outcome, String> {
    let mut cmd = command(a, b, tag, console)?;
    let command_line = shell_line(&cmd);
    let start = Instant::now();
    if b.interactive {
        let status = cmd
            .status()
            .map_err(|e| format!("qemu-system-aarch64: {e} (install qemu-system-arm)"))?;
        return Ok(Outcome {
            console: String::new(),
            qemu_errors: String::new(),
            command_line,
            status: status.code(),
            elapsed: start.elapsed(),
        });
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("qemu-system-aarch64: {e} (install qemu-system-arm)"))?;
    // One channel carries the console output and QEMU's exit, so the
    // harness sleeps until something happens instead of polling.
    enum Event {
        Output(Vec<u8>),
        Errors(Vec<u8>),
        Exited(Option<i32>),
    }
    let (tx, rx) = mpsc::channel();
    let mut out = child.stdout.take().ok_or("no stdout")?;
    let mut err = child.stderr.take().ok_or("no stderr")?;
    let tx2 = tx.clone();
    let tx3 = tx.clone();
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 || tx.send(Event::Output(buf[..n].to_vec())).is_err() {
                break;
            }
        }
    });
    thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        let _ = tx2.send(Event::Errors(s));
    });
    let pid = child.id();
    let waiter = thread::spawn(move || {
        let status = child.wait().ok().and_then(|st| st.code());
        let _ = tx3.send(Event::Exited(status));
    });
    let mut console = Vec::new();
    let mut errors = Vec::new();
    let deadline = start + b.timeout;
    let status = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Event::Output(chunk)) => {
                echo(&chunk);
                console.extend_from_slice(&chunk);
            }
            Ok(Event::Errors(chunk)) => errors.extend_from_slice(&chunk),
            Ok(Event::Exited(status)) => break status,
            Err(_) => {
                // Killed by PID: the waiter thread owns the child.
                let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
                let _ = waiter.join();
                console.extend_from_slice(
                    format!("\n[qemu-tests: killed after {:?}]\n", b.timeout).as_bytes(),
                );
                break None;
            }
        }
    };
    let elapsed = start.elapsed();
    // Drain what the readers still hold.
    let drain_until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < drain_until {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Event::Output(chunk)) => {
                echo(&chunk);
                console.extend_from_slice(&chunk);
            }
            Ok(Event::Errors(chunk)) => errors.extend_from_slice(&chunk),
            Ok(Event::Exited(_)) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    let qemu_errors = String::from_utf8_lossy(&errors).into_owned();
    // What QEMU printed on its own goes after the guest's console, as it
    // would have arrived.
    let console = String::from_utf8_lossy(&console).replace('\r', "") + &qemu_errors;
    Ok(Outcome {
        console,
        qemu_errors,
        command_line,
        status,
        elapsed,
    })
}

/// Streams a boot's console to stdout (for `cargo xtask run`).
///
/// # Errors
/// QEMU could not be started.
pub fn run_visible(a: &Artifacts, b: &Boot, tag: &str) -> Result<Outcome, String> {
    let mut stdout = std::io::stdout();
    run_with(a, b, tag, |chunk| {
        let _ = stdout.write_all(chunk);
        let _ = stdout.flush();
    })
}

/// Lines that must never appear in a healthy boot.
pub const FORBIDDEN: &[&str] = &[
    "Kernel panic",
    "Oops",
    "Unable to handle",
    "WARNING:",
    "BUG:",
    "FAIL: survived",
    "Internal error",
    "hyp-stub: fatal",
    "refusing to start the guest",
    "[qemu-tests: killed",
];

/// Checks a boot: every `expect` substring appears (in order), no
/// forbidden line (other than `allowed` ones) does.
///
/// # Errors
/// A report of what was wrong, with the console.
pub fn check(o: &Outcome, expect: &[&str], allowed: &[&str]) -> Result<(), String> {
    let mut problems = Vec::new();
    let mut from = 0;
    for e in expect {
        match o.console[from..].find(e) {
            Some(i) => from += i + e.len(),
            None => problems.push(format!("expected (in order) but not seen: {e:?}")),
        }
    }
    for f in FORBIDDEN {
        if allowed.iter().any(|a| a == f) {
            continue;
        }
        if let Some(line) = o.console.lines().find(|l| l.contains(f)) {
            problems.push(format!("forbidden line: {line:?}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}\n--- console ---\n{}\n--- end ---\n{}",
            problems.join("\n"),
            o.console,
            o.qemu_failure()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_artifacts(dir: &Path) -> Artifacts {
        fs::create_dir_all(dir).unwrap();
        for f in ["Image", "hyp.elf", "initramfs.cpio"] {
            fs::write(dir.join(f), b"x").unwrap();
        }
        Artifacts {
            kernel: dir.join("Image"),
            hyp: dir.join("hyp.elf"),
            initramfs: dir.join("initramfs.cpio"),
            kernel_build: dir.to_path_buf(),
            scratch: dir.join("scratch"),
        }
    }

    #[test]
    fn qemu_gets_no_default_devices() {
        let dir = env::temp_dir().join(format!("qemu-tests-cmd-{}", std::process::id()));
        let a = fake_artifacts(&dir);
        for hyp in [true, false] {
            let b = Boot {
                hyp,
                ..Boot::default()
            };
            let cmd = command(&a, &b, "t", &Console::Stdio).unwrap();
            let args: Vec<String> = cmd
                .get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            assert!(args.iter().any(|a| a == "-nodefaults"), "{args:?}");
            // Only the loader devices hyp-stub's boot needs; no NIC.
            assert!(
                !args.iter().any(|a| a.starts_with("-net") || a == "-nic"),
                "{args:?}"
            );
            let devices: Vec<&String> = args
                .windows(2)
                .filter(|w| w[0] == "-device")
                .map(|w| &w[1])
                .collect();
            assert!(
                devices.iter().all(|d| d.starts_with("loader,")),
                "{devices:?}"
            );
        }
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn known_qemu_errors_get_a_likely_fix() {
        let err = "qemu-system-aarch64: failed to find romfile \"efi-virtio.rom\"";
        assert!(likely_fix(err).unwrap().contains("ipxe-qemu"));
        assert!(likely_fix("qemu-system-aarch64: something new").is_none());
        let o = Outcome {
            console: String::new(),
            qemu_errors: format!("{err}\n"),
            command_line: "qemu-system-aarch64 -nodefaults".into(),
            status: Some(1),
            elapsed: Duration::ZERO,
        };
        let msg = o.qemu_failure();
        assert!(msg.contains("QEMU command line:\n    qemu-system-aarch64 -nodefaults\n"));
        assert!(msg.contains("QEMU said:\n    qemu-system-aarch64: failed to find romfile"));
        assert!(msg.contains("likely fix: "));
    }

    #[test]
    fn command_lines_are_shown_as_a_shell_would_take_them() {
        let mut cmd = Command::new("qemu-system-aarch64");
        cmd.args(["-append", "console=ttyAMA0 pvguard=on", "-m", "1G", "it's"]);
        assert_eq!(
            shell_line(&cmd),
            "qemu-system-aarch64 -append 'console=ttyAMA0 pvguard=on' -m 1G 'it'\\''s'"
        );
    }
}
