// SPDX-License-Identifier: GPL-2.0

//! pvguard: hypervisor-enforced integrity for protected arm64 guests.
//!
//! This is the crate root the kernel builds (`drivers/virt/pvguard/`). It
//! holds only the `extern "C"` entry points that the C hook points in
//! `glue.c` call, and the SMCCC transport. The logic lives in modules
//! shared with the host-tested crates of the pvguard repository
//! (`arch-hooks`, `mmio-guard`, `guest-kp`), under `rust/`: the series
//! carries them as generated from those crates, so the same source is
//! unit-tested on the host and compiled here.
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

/// The kernel-protect ABI, record and guest logic, shared with the
/// hypervisor.
#[path = "rust/guest_kp"]
pub mod guest_kp {
    pub mod abi;
    pub mod builder;
    pub mod guest;
    pub mod patch;
    pub mod record;
}

#[path = "rust/arch_hooks/cmdline.rs"]
pub mod cmdline;
#[path = "rust/arch_hooks/kp.rs"]
pub mod kp;
#[path = "rust/arch_hooks/mmio.rs"]
pub mod mmio;
#[path = "rust/arch_hooks/text.rs"]
pub mod text;

use cmdline::Mode;
use guest_kp::builder::Builder;
use guest_kp::guest::Hypercall;
use guest_kp::record::{AlignedRecord, KernelAssetInfo};
use kp::KpState;
use mmio::{InitOutcome, MmioState, Reason, Status};
use mmio_guard::guard::Hypervisor;
use text::SliceWriter;

extern "C" {
    /// One SMCCC call through the kernel's conduit (`glue.c`).
    fn pvguard_smccc(fid: u32, a1: u64, a2: u64, a3: u64, res: *mut u64);
    /// The physical address of a kernel-image symbol (`__pa_symbol`).
    fn pvguard_pa_symbol(addr: *const core::ffi::c_void) -> u64;
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

impl Hypercall for Smccc {
    fn call(&mut self, fid: u32, args: [u64; 4]) -> [u64; 4] {
        // x4 is never used by the kernel-protect calls.
        Hypervisor::call(self, fid, [args[0], args[1], args[2]])
    }
    fn pause(&mut self) {
        // Callers hold `pvguard_lock` (a raw spinlock): a busy-wait, not
        // a sleep.
        // SAFETY: `__udelay` only spins on the CPU's counter.
        unsafe { kernel::bindings::__udelay(1000) };
    }
}

/// The guest's pvguard state: both services.
struct Guest {
    mmio: MmioState,
    kp: KpState,
    /// Where the hypervisor reads the compact record: a static, so it has
    /// an IPA, aligned so it never crosses a page.
    record: AlignedRecord,
}

struct State(UnsafeCell<Guest>);

// SAFETY: every access goes through `guest()`, whose callers hold
// `pvguard_lock` or run in single-threaded early boot.
unsafe impl Sync for State {}

static STATE: State = State(UnsafeCell::new(Guest {
    mmio: MmioState::new(),
    kp: KpState::new(),
    record: AlignedRecord(KernelAssetInfo::new()),
}));

/// The whole state.
///
/// # Safety
/// The caller holds `pvguard_lock`, or runs before other CPUs and
/// threads exist, and does not keep the reference past that.
unsafe fn guest() -> &'static mut Guest {
    // SAFETY: exclusive access is guaranteed by the caller (see above).
    unsafe { &mut *STATE.0.get() }
}

/// The MMIO guard state.
///
/// # Safety
/// As for [`guest`].
unsafe fn state() -> &'static mut MmioState {
    // SAFETY: as for `guest`, which the caller guarantees.
    unsafe { &mut guest().mmio }
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
            let g = unsafe { guest() };
            g.mmio.set_mode(mode);
            g.kp.set_mode(mode);
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
        InitOutcome::RefuseToBoot => refuse_boot("the MMIO guard is unavailable"),
    }
}

/// PSCI SYSTEM_OFF.
const PSCI_SYSTEM_OFF: u32 = 0x8400_0008;

/// `pvguard=strict` refuses to go on: says why and powers the VM off, so
/// that the VMM sees the VM end. A panic this early (setup_arch) would
/// spin forever, as `panic=` is not parsed yet. Returns 2 (the C side
/// then panics) only if the power-off did not happen.
fn refuse_boot(why: &str) -> c_int {
    kernel::pr_emerg!("pvguard=strict: {}; powering the VM off\n", why);
    Hypervisor::call(&mut Smccc, PSCI_SYSTEM_OFF, [0; 3]);
    2
}

/// Formats a status with `write` and hands the text to `print`.
fn with_status(
    write: impl FnOnce(&mut SliceWriter<'_>) -> core::fmt::Result,
    print: impl FnOnce(&str),
) {
    let mut buf = [0u8; 160];
    let mut w = SliceWriter::new(&mut buf);
    let _ = write(&mut w);
    let n = w.len();
    print(core::str::from_utf8(buf.get(..n).unwrap_or(&[])).unwrap_or("?"));
}

fn report(s: &MmioState) {
    with_status(
        |w| s.write_status(w),
        |text| match s.status() {
            Status::Enrolled => kernel::pr_info!("MMIO guard {}", text),
            Status::NotRequested => {}
            _ => kernel::pr_warn!("MMIO guard {}", text),
        },
    );
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
    let g = unsafe { guest() };
    let o = g.mmio.give_up(if busy {
        Status::HookBusy
    } else {
        Status::NoHypervisor
    });
    report(&g.mmio);
    if !busy {
        g.kp.give_up();
    }
    outcome(o)
}

/// The kernel's section bounds, as `glue.c` passes them: physical
/// [start, end) of TEXT, RODATA, DATA, BSS, then the FIX_TEXT_POKE0 VA
/// and the page size.
#[repr(C)]
pub struct KernelLayout {
    text: [u64; 2],
    rodata: [u64; 2],
    data: [u64; 2],
    bss: [u64; 2],
    fixmap_va: u64,
    page_size: u64,
}

fn kp_report_status(kp: &KpState) {
    with_status(
        |w| kp.write_state(w),
        |text| match kp.status() {
            kp::Status::NotRequested => {}
            kp::Status::Reported(_) | kp::Status::Protected => {
                kernel::pr_info!("kernel protect: {}", text)
            }
            _ => kernel::pr_warn!("kernel protect: {}", text),
        },
    );
}

/// Reports the kernel's layout to the hypervisor (early boot, after the
/// MMIO guard). Returns 2 when `pvguard=strict` must refuse to boot.
///
/// # Safety
/// `layout` points to a valid [`KernelLayout`].
#[no_mangle]
pub unsafe extern "C" fn pvguard_rust_kp_report(layout: *const KernelLayout) -> c_int {
    // SAFETY: the caller passes a valid layout.
    let l = unsafe { &*layout };
    // SAFETY: early boot (setup_arch), single-threaded.
    let g = unsafe { guest() };
    let builder = Builder {
        text: (l.text[0], l.text[1]),
        rodata: (l.rodata[0], l.rodata[1]),
        data: (l.data[0], l.data[1]),
        bss: (l.bss[0], l.bss[1]),
        fixmap_va: l.fixmap_va,
        fixmap_size: l.page_size,
    };
    let record = &mut g.record;
    g.kp.report(&mut Smccc, &builder, |r| {
        record.0 = *r;
        let p: *const AlignedRecord = record;
        // SAFETY: `record` is part of a static in the kernel image.
        unsafe { pvguard_pa_symbol(p.cast()) }
    });
    kp_report_status(&g.kp);
    if g.kp.must_refuse_boot() {
        refuse_boot("kernel protect is unavailable")
    } else {
        0
    }
}

/// Asks for protection, once boot-time patching is over and rodata is
/// sealed. Returns 2 when `pvguard=strict` must refuse to go on.
#[no_mangle]
pub extern "C" fn pvguard_rust_kp_enable() -> c_int {
    // SAFETY: called with `pvguard_lock` held.
    let kp = unsafe { &mut guest().kp };
    kp.enable(&mut Smccc);
    kp_report_status(kp);
    if kp.must_refuse_boot() {
        refuse_boot("the hypervisor refused kernel protect")
    } else {
        0
    }
}

/// Runs an integrity self-check. Returns 0, or a negative errno.
#[no_mangle]
pub extern "C" fn pvguard_rust_kp_self_check() -> c_int {
    // SAFETY: called with `pvguard_lock` held.
    let kp = unsafe { &mut guest().kp };
    match kp.self_check(&mut Smccc) {
        Ok(c) => {
            if !c.intact {
                kernel::pr_err!("kernel protect: self-check: kernel text or rodata was MODIFIED\n");
            }
            0
        }
        Err(e) => {
            kernel::pr_warn!("kernel protect: self-check refused: {}\n", e);
            EPERM.to_errno()
        }
    }
}

/// The `ioremap` hook: guards the range, or fails the `ioremap`.
#[no_mangle]
pub extern "C" fn pvguard_rust_ioremap(phys: u64, size: usize) -> c_int {
    // SAFETY: called with `pvguard_lock` held.
    let s = unsafe { state() };
    match s.ioremap(&mut Smccc, phys, size as u64) {
        Ok(()) => 0,
        Err(e) => {
            kernel::pr_err!(
                "ioremap of {:#x}+{:#x} refused: {}\n",
                phys,
                size,
                Reason(e)
            );
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
    let g = unsafe { guest() };
    let mut w = SliceWriter::new(buf);
    let r = match (group.to_bytes(), name.to_bytes()) {
        (b"mmio_guard", b"status") => g.mmio.write_status(&mut w),
        (b"mmio_guard", b"ranges") => g.mmio.write_ranges(&mut w),
        (b"mmio_guard", b"stats") => g.mmio.write_stats(&mut w),
        (b"mmio_guard", b"granule") => writeln!(w, "{}", mmio_guard::abi::GRANULE),
        (b"kernel_protect", b"state") => g.kp.write_state(&mut w),
        (b"kernel_protect", b"regions") => g.kp.write_regions(&mut w),
        (b"kernel_protect", b"self_check") => g.kp.write_verdict(&mut w),
        (b"kernel_protect", b"self_check_report") => g.kp.write_self_check(&mut w),
        _ => return EINVAL.to_errno() as isize,
    };
    match r {
        Ok(()) => w.len() as isize,
        Err(_) => EINVAL.to_errno() as isize,
    }
}
