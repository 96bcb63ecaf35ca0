// SPDX-License-Identifier: GPL-2.0

//! pvguard: hypervisor-enforced integrity for protected arm64 guests.
//!
//! This is the crate root the kernel builds (`drivers/virt/pvguard/`). It
//! holds only the `extern "C"` entry points that the C hook points in
//! `glue.c` call, and the SMCCC transport. The logic lives in modules
//! shared with the host-tested crates of the pvguard repository
//! (`arch-hooks`, `mmio-guard`), copied into `rust/` by the build: the
//! same source is unit-tested on the host and compiled here.
//!
//! All state is behind `pvguard_lock` in `glue.c`: every entry point
//! below except the command-line and early ones is called with it held;
//! those two run during single-threaded early boot.

use core::cell::UnsafeCell;
use core::ffi::{c_char, c_int, CStr};
use core::fmt::Write;

use kernel::error::code::{EINVAL, EPERM};

const __LOG_PREFIX: &[u8] = b"pvguard\0";

/// The MMIO guard ABI and tracking, shared with the hypervisor.
#[path = "rust/mmio_guard"]
pub mod mmio_guard {
    pub mod abi;
    pub mod guard;
    pub mod tracker;
}

#[path = "rust/arch_hooks/cmdline.rs"]
pub mod cmdline;
#[path = "rust/arch_hooks/mmio.rs"]
pub mod mmio;
#[path = "rust/arch_hooks/text.rs"]
pub mod text;

use cmdline::Mode;
use mmio::{InitOutcome, MmioState, Reason, Status};
use mmio_guard::guard::Hypervisor;
use text::SliceWriter;

extern "C" {
    /// One SMCCC call through the kernel's conduit (`glue.c`).
    fn pvguard_smccc(fid: u32, a1: u64, a2: u64, a3: u64, res: *mut u64);
}

/// The hypervisor, reached by SMCCC calls.
struct Smccc;

impl Hypervisor for Smccc {
    fn call(&mut self, fid: u32, args: [u64; 3]) -> [u64; 4] {
        let mut res = [0u64; 4];
        // SAFETY: `pvguard_smccc` writes exactly four `u64`s to `res`.
        unsafe { pvguard_smccc(fid, args[0], args[1], args[2], res.as_mut_ptr()) };
        res
    }
}

/// The guest's pvguard state.
struct State(UnsafeCell<MmioState>);

// SAFETY: every access goes through `state()`, whose callers hold
// `pvguard_lock` or run in single-threaded early boot.
unsafe impl Sync for State {}

static STATE: State = State(UnsafeCell::new(MmioState::new()));

/// The state.
///
/// # Safety
/// The caller holds `pvguard_lock`, or runs before other CPUs and
/// threads exist, and does not keep the reference past that.
unsafe fn state() -> &'static mut MmioState {
    // SAFETY: exclusive access is guaranteed by the caller (see above).
    unsafe { &mut *STATE.0.get() }
}

/// Parses `pvguard=`.
///
/// # Safety
/// `arg` is null or a NUL-terminated string. Called from `early_param`.
#[no_mangle]
pub unsafe extern "C" fn pvguard_rust_parse_cmdline(arg: *const c_char) -> c_int {
    let value = if arg.is_null() {
        None
    } else {
        // SAFETY: the caller passes a NUL-terminated string.
        Some(unsafe { CStr::from_ptr(arg) }.to_bytes())
    };
    match Mode::parse(value) {
        Ok(mode) => {
            // SAFETY: early boot, single-threaded.
            unsafe { state() }.set_mode(mode);
            0
        }
        Err(_) => {
            kernel::pr_err!("unknown pvguard= value (use on, off or strict)\n");
            EINVAL.to_errno()
        }
    }
}

/// Records an MMIO mapping made before the hypervisor is discovered
/// (the earlycon fixmap).
#[no_mangle]
pub extern "C" fn pvguard_rust_early_mmio(phys: u64, size: usize) {
    // SAFETY: early boot, single-threaded.
    let s = unsafe { state() };
    if let Err(e) = s.note_early(phys, size as u64) {
        kernel::pr_err!("cannot track early MMIO at {:#x}: {}\n", phys, Reason(e));
    }
}

/// Whether `pvguard=` asked for the guard (the C side then installs the
/// ioremap hooks before [`pvguard_rust_mmio_init`]).
#[no_mangle]
pub extern "C" fn pvguard_rust_mmio_wanted() -> bool {
    // SAFETY: early boot, single-threaded.
    unsafe { state() }.wanted()
}

fn outcome(o: InitOutcome) -> c_int {
    match o {
        InitOutcome::Unguarded => 0,
        InitOutcome::Enrolled => 1,
        InitOutcome::RefuseToBoot => 2,
    }
}

fn report(s: &MmioState) {
    let mut buf = [0u8; 160];
    let mut w = SliceWriter::new(&mut buf);
    let _ = s.write_status(&mut w);
    let n = w.len();
    let text = core::str::from_utf8(buf.get(..n).unwrap_or(&[])).unwrap_or("?");
    match s.status() {
        Status::Enrolled => kernel::pr_info!("MMIO guard {}", text),
        Status::NotRequested => {}
        _ => kernel::pr_warn!("MMIO guard {}", text),
    }
}

/// Discovers the hypervisor's MMIO guard and enrolls. Returns 0 when the
/// guest stays unguarded, 1 when enrolled, 2 when `pvguard=strict` must
/// refuse to boot.
#[no_mangle]
pub extern "C" fn pvguard_rust_mmio_init() -> c_int {
    // SAFETY: early boot (setup_arch), single-threaded.
    let s = unsafe { state() };
    let o = s.init(&mut Smccc);
    report(s);
    outcome(o)
}

/// Gives up on the guard: `busy` if the ioremap hook is taken, else no
/// KVM-compatible hypervisor answered. Same results as
/// [`pvguard_rust_mmio_init`].
#[no_mangle]
pub extern "C" fn pvguard_rust_mmio_give_up(busy: bool) -> c_int {
    // SAFETY: early boot, single-threaded.
    let s = unsafe { state() };
    let o = s.give_up(if busy { Status::HookBusy } else { Status::NoHypervisor });
    report(s);
    outcome(o)
}

/// The `ioremap` hook: guards the range, or fails the `ioremap`.
#[no_mangle]
pub extern "C" fn pvguard_rust_ioremap(phys: u64, size: usize) -> c_int {
    // SAFETY: called with `pvguard_lock` held.
    let s = unsafe { state() };
    match s.ioremap(&mut Smccc, phys, size as u64) {
        Ok(()) => 0,
        Err(e) => {
            kernel::pr_err!("ioremap of {:#x}+{:#x} refused: {}\n", phys, size, Reason(e));
            EPERM.to_errno()
        }
    }
}

/// The `iounmap` hook.
#[no_mangle]
pub extern "C" fn pvguard_rust_iounmap(phys: u64, size: usize) {
    // SAFETY: called with `pvguard_lock` held.
    let s = unsafe { state() };
    if let Err(e) = s.iounmap(&mut Smccc, phys, size as u64) {
        kernel::pr_warn!("iounmap of {:#x}+{:#x}: {}\n", phys, size, Reason(e));
    }
}

/// Writes the text of sysfs file `group/name` into `buf`; returns its
/// length, or a negative errno for an unknown file.
///
/// # Safety
/// `group` and `name` are NUL-terminated strings, `buf` is valid for
/// writes of `len` bytes, and `pvguard_lock` is held.
#[no_mangle]
pub unsafe extern "C" fn pvguard_rust_show(
    group: *const c_char,
    name: *const c_char,
    buf: *mut u8,
    len: usize,
) -> isize {
    // SAFETY: the caller passes NUL-terminated strings.
    let (group, name) = unsafe { (CStr::from_ptr(group), CStr::from_ptr(name)) };
    // SAFETY: the caller passes a buffer valid for `len` bytes.
    let buf = unsafe { core::slice::from_raw_parts_mut(buf, len) };
    // SAFETY: the caller holds `pvguard_lock`.
    let s = unsafe { state() };
    let mut w = SliceWriter::new(buf);
    let r = match (group.to_bytes(), name.to_bytes()) {
        (b"mmio_guard", b"status") => s.write_status(&mut w),
        (b"mmio_guard", b"ranges") => s.write_ranges(&mut w),
        (b"mmio_guard", b"stats") => s.write_stats(&mut w),
        (b"mmio_guard", b"granule") => writeln!(w, "{}", mmio_guard::abi::GRANULE),
        _ => return EINVAL.to_errno() as isize,
    };
    match r {
        Ok(()) => w.len() as isize,
        Err(_) => EINVAL.to_errno() as isize,
    }
}
