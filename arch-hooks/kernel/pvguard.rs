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
//! below is called with it held, except the command-line and early ones,
//! which run during single-threaded early boot; the ones whose hypercalls
//! may take long (enabling protection, registering patch sites, the
//! self-check), which take it themselves around the state and never
//! across a call; and the text-patch batch, whose own state belongs to
//! the task that opened it.

use core::cell::UnsafeCell;
use core::ffi::{c_char, c_int, CStr};
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, Ordering};

use kernel::error::code::{EINVAL, ENOMEM, EPERM};

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
    pub mod mem_perms;
    pub mod patch;
    pub mod record;
    pub mod sites;
}

#[path = "rust/arch_hooks/cmdline.rs"]
pub mod cmdline;
#[path = "rust/arch_hooks/code.rs"]
pub mod code;
#[path = "rust/arch_hooks/kp.rs"]
pub mod kp;
#[path = "rust/arch_hooks/mmio.rs"]
pub mod mmio;
#[path = "rust/arch_hooks/text.rs"]
pub mod text;

use cmdline::Mode;
use guest_kp::abi::TextPatch;
use guest_kp::builder::Builder;
use guest_kp::guest::{BatchError, Hypercall, TextBatch};
use guest_kp::mem_perms::{SiteList, SITE_SIZE};
use guest_kp::record::{AlignedRecord, KernelAssetInfo};
use guest_kp::sites::PatchPolicy;
use kp::{KpState, PatchTables, Table};
use mmio::{InitOutcome, MmioState, Reason, Status};
use mmio_guard::guard::Hypervisor;
use text::SliceWriter;

extern "C" {
    /// One SMCCC call through the kernel's conduit (`glue.c`).
    fn pvguard_smccc(fid: u32, a1: u64, a2: u64, a3: u64, a4: u64, res: *mut u64);
    /// The physical address of a kernel-image symbol (`__pa_symbol`).
    fn pvguard_pa_symbol(addr: *const core::ffi::c_void) -> u64;
    /// Takes `pvguard_lock` (interrupts off); returns the flags to restore.
    fn pvguard_state_lock() -> core::ffi::c_ulong;
    /// Releases `pvguard_lock`.
    fn pvguard_state_unlock(flags: core::ffi::c_ulong);
}

/// The hypervisor, reached by SMCCC calls.
struct Smccc;

impl Hypervisor for Smccc {
    fn call(&mut self, fid: u32, args: [u64; 3]) -> [u64; 4] {
        let mut res = [0u64; 4];
        // SAFETY: `pvguard_smccc` writes exactly four `u64`s to `res`.
        unsafe { pvguard_smccc(fid, args[0], args[1], args[2], 0, res.as_mut_ptr()) };
        res
    }
}

impl Hypercall for Smccc {
    fn call(&mut self, fid: u32, args: [u64; 4]) -> [u64; 4] {
        let [a1, a2, a3, a4] = args;
        let mut res = [0u64; 4];
        // SAFETY: `pvguard_smccc` writes exactly four `u64`s to `res`.
        unsafe { pvguard_smccc(fid, a1, a2, a3, a4, res.as_mut_ptr()) };
        res
    }
    fn pause(&mut self) {
        // Callers hold `pvguard_lock` (a raw spinlock): a busy-wait, not
        // a sleep.
        // SAFETY: `__udelay` only spins on the CPU's counter.
        unsafe { kernel::bindings::__udelay(1000) };
    }
}

/// The hypervisor, reached from process context: a BUSY answer is
/// waited for asleep.
struct SleepingSmccc;

impl Hypercall for SleepingSmccc {
    fn call(&mut self, fid: u32, args: [u64; 4]) -> [u64; 4] {
        Hypercall::call(&mut Smccc, fid, args)
    }
    fn pause(&mut self) {
        // SAFETY: `msleep` may sleep; callers run in process context and
        // hold no spinlock.
        unsafe { kernel::bindings::msleep(1) };
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

/// Runs `f` on the state with `pvguard_lock` held, for entry points
/// called without it.
fn locked<R>(f: impl FnOnce(&mut Guest) -> R) -> R {
    // SAFETY: `pvguard_state_lock` takes the lock that `guest` requires,
    // released below with the flags it returned.
    let flags = unsafe { pvguard_state_lock() };
    // SAFETY: the lock is held, and the reference does not outlive `f`.
    let r = f(unsafe { guest() });
    // SAFETY: releases the lock taken above.
    unsafe { pvguard_state_unlock(flags) };
    r
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
/// [start, end) of TEXT, RODATA, DATA, BSS, then the FIX_TEXT_POKE0 VA,
/// the page size, and physical [start, end) of `.rodata.text` (the
/// image's other text; empty if the kernel has none).
#[repr(C)]
pub struct KernelLayout {
    text: [u64; 2],
    rodata: [u64; 2],
    data: [u64; 2],
    bss: [u64; 2],
    fixmap_va: u64,
    page_size: u64,
    other_text: [u64; 2],
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
    g.kp.set_other_text(l.other_text[0], l.other_text[1]);
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
///
/// Called *without* `pvguard_lock`: the lock is held around the state
/// only, never across the hypercall.
#[no_mangle]
pub extern "C" fn pvguard_rust_kp_enable() -> c_int {
    let other_text = locked(|g| g.kp.may_enable().then(|| g.kp.other_text()));
    let answer = other_text.map(|o| guest_kp::guest::enable_protection(&mut Smccc, o));
    let refuse = locked(|g| {
        if let Some(a) = answer {
            g.kp.record_enable(a);
        }
        kp_report_status(&g.kp);
        g.kp.must_refuse_boot()
    });
    if refuse {
        refuse_boot("the hypervisor refused kernel protect")
    } else {
        0
    }
}

/// Runs an integrity self-check. Returns 0, or a negative errno.
///
/// Called from process context *without* `pvguard_lock`: the lock is
/// held only to check the state and to record the answer, never across
/// the hypercall or the sleeps while the hypervisor answers BUSY.
#[no_mangle]
pub extern "C" fn pvguard_rust_kp_self_check() -> c_int {
    let r = locked(|g| g.kp.may_self_check())
        .and_then(|()| guest_kp::guest::self_check(&mut SleepingSmccc, kp::BUSY_RETRIES));
    match r {
        Ok(c) => {
            // The code log with it: an immediate call, also without the
            // lock (none under the `image` code policy).
            let log = guest_kp::mem_perms::read_code_log(&mut Smccc).ok();
            locked(|g| {
                g.kp.record_self_check(c);
                g.kp.record_code_log(log);
            });
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

/// The kernel's patch-site tables as `glue.c` fills them: physical
/// addresses and entry counts.
#[repr(C)]
pub struct KernelPatchTables {
    text_va: u64,
    jump_table: [u64; 2],
    ftrace_callers: [u64; 2],
    mcount_loc: [u64; 2],
}

/// What `pvguard_ftrace=` and `pvguard_kprobes=` allow, once read.
static FTRACE_REFUSED: AtomicBool = AtomicBool::new(false);
static KPROBES_REFUSED: AtomicBool = AtomicBool::new(false);

/// Registers the kernel's patch-site tables with the hypervisor (a late
/// initcall: after the report, before init memory, which holds
/// `__mcount_loc`, is freed) and reads the patch policy from the command
/// line the hypervisor reads too.
///
/// Called *without* `pvguard_lock`: the hypervisor reads and sorts the
/// tables (tens of thousands of entries) inside the calls, which are not
/// made with interrupts off; the lock is held around the state only.
///
/// # Safety
/// `tables` points to a valid [`KernelPatchTables`] and `cmdline` to a
/// NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn pvguard_rust_kp_register_sites(
    tables: *const KernelPatchTables,
    cmdline: *const c_char,
) {
    // SAFETY: the caller passes a valid table description and string.
    let (t, cmdline) = unsafe { (&*tables, CStr::from_ptr(cmdline)) };
    if !locked(|g| g.kp.may_register_sites()) {
        return;
    }
    let policy = PatchPolicy::from_cmdline(cmdline.to_bytes());
    FTRACE_REFUSED.store(!policy.ftrace, Ordering::Relaxed);
    KPROBES_REFUSED.store(!policy.kprobes, Ordering::Relaxed);
    let table = |t: [u64; 2]| Table {
        ipa: t[0],
        entries: t[1],
    };
    let sites = kp::send_site_tables(
        &mut Smccc,
        &PatchTables {
            text_va: t.text_va,
            jump_table: table(t.jump_table),
            ftrace_callers: table(t.ftrace_callers),
            mcount_loc: table(t.mcount_loc),
        },
    );
    locked(|g| g.kp.record_sites(sites));
    for (name, outcome) in [
        ("jump labels", sites.jump_table),
        ("ftrace trampolines", sites.ftrace_callers),
        ("ftrace call sites", sites.mcount_loc),
    ] {
        match outcome {
            kp::TableOutcome::NotSent => {}
            kp::TableOutcome::Registered(r) => kernel::pr_info!(
                "kernel protect: {} sites of {} registered ({} outside text skipped)\n",
                r.sites,
                name,
                r.skipped
            ),
            kp::TableOutcome::Refused(e) => kernel::pr_err!(
                "kernel protect: the hypervisor refused the {} table: {}; their patches will fail\n",
                name,
                e
            ),
        }
    }
}

/// Whether ftrace may patch text: `pvguard_ftrace=refuse` under kernel
/// protect says no, and the hypervisor refuses its patches.
#[no_mangle]
pub extern "C" fn pvguard_rust_ftrace_allowed() -> bool {
    !FTRACE_REFUSED.load(Ordering::Relaxed)
}

/// Whether a kprobe may be armed: `pvguard_kprobes=refuse` under kernel
/// protect says no, and the hypervisor refuses its `BRK`.
#[no_mangle]
pub extern "C" fn pvguard_rust_kprobes_allowed() -> bool {
    !KPROBES_REFUSED.load(Ordering::Relaxed)
}

/// The batch of text patches being gathered.
struct Batch(UnsafeCell<TextBatch>);

// SAFETY: `patches` is touched only by the batch's owner: `glue.c` lets
// one task at a time open a batch (under `text_mutex`, which ftrace holds
// around its updates) and passes only that task's patches here.
unsafe impl Sync for Batch {}

static BATCH: Batch = Batch(UnsafeCell::new(TextBatch::new()));

/// How often a batch is sent again while the hypervisor answers BUSY:
/// with a 1 ms pause, the time a self-check waits.
const BATCH_BUSY_RETRIES: u32 = kp::BUSY_RETRIES;

/// Opens a batch if the hypervisor takes them. Called with
/// `pvguard_lock` held, by a task that holds `text_mutex`.
#[no_mangle]
pub extern "C" fn pvguard_rust_text_batch_begin() -> bool {
    // SAFETY: called with `pvguard_lock` held.
    unsafe { guest().kp.batches() }
}

/// The batch, for its owner.
///
/// # Safety
/// Only the task that opened the batch calls this, and does not keep the
/// reference.
unsafe fn batch() -> &'static mut TextBatch {
    // SAFETY: exclusive access is guaranteed by the caller (see above).
    unsafe { &mut *BATCH.0.get() }
}

/// Sends the queued patches; on a refusal, says which.
fn flush(b: &mut TextBatch) -> c_int {
    let p: *const u8 = b.entries();
    // SAFETY: the batch is part of a static in the kernel image.
    let ipa = unsafe { pvguard_pa_symbol(p.cast()) };
    let r = b.flush(&mut Smccc, ipa, BATCH_BUSY_RETRIES, |va, size| {
        // SAFETY: cleaning and invalidating to the PoU by VA has no
        // memory-safety effect; `va` is kernel text the hypervisor just
        // wrote.
        unsafe {
            kernel::bindings::caches_clean_inval_pou(va as usize, (va + u64::from(size)) as usize)
        };
    });
    match r {
        Ok(_) => 0,
        Err(BatchError::Refused { index }) => {
            kernel::pr_err!(
                "kernel protect: the hypervisor refused text patch {} of a batch\n",
                index
            );
            EPERM.to_errno()
        }
        Err(BatchError::Call(e)) => {
            kernel::pr_err!("kernel protect: a batch of text patches failed: {}\n", e);
            EPERM.to_errno()
        }
    }
}

/// Queues a patch of `size` bytes (4 or 8) at `va` (IPA `ipa`); sends
/// the batch first when it is full. Returns 0 or a negative errno.
///
/// # Safety
/// Called only by the task that opened the batch, between
/// [`pvguard_rust_text_batch_begin`] and [`pvguard_rust_text_batch_end`].
#[no_mangle]
pub unsafe extern "C" fn pvguard_rust_text_batch_add(
    va: u64,
    ipa: u64,
    value: u64,
    size: u32,
) -> c_int {
    // SAFETY: the caller owns the batch.
    let b = unsafe { batch() };
    if b.is_full() {
        let r = flush(b);
        if r != 0 {
            return r;
        }
    }
    if b.push(va, TextPatch { ipa, value, size }) {
        0
    } else {
        EINVAL.to_errno()
    }
}

/// Sends what is left of the batch and closes it. Returns 0 or a
/// negative errno.
///
/// # Safety
/// As for [`pvguard_rust_text_batch_add`].
#[no_mangle]
pub unsafe extern "C" fn pvguard_rust_text_batch_end() -> c_int {
    // SAFETY: the caller owns the batch.
    flush(unsafe { batch() })
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
        (b"kernel_protect", b"patch_sites") => g.kp.write_sites(&mut w),
        _ => return EINVAL.to_errno() as isize,
    };
    match r {
        Ok(()) => w.len() as isize,
        Err(_) => EINVAL.to_errno() as isize,
    }
}

extern "C" {
    /// The physical address of the page at a kernel address, or 0.
    fn pvguard_code_pa(va: u64) -> u64;
}

/// The page `MEM_PERMISSIONS` reads its list from: part of the kernel
/// image, so it has an IPA, and aligned so it is one page.
#[repr(C, align(4096))]
struct ListPage([u8; 4096]);

struct CodeCell(UnsafeCell<(code::CodeState, ListPage)>);

// SAFETY: only `pvguard_rust_code` uses it, with `pvguard_lock` held.
unsafe impl Sync for CodeCell {}

static CODE: CodeCell = CodeCell(UnsafeCell::new((
    code::CodeState::new(),
    ListPage([0; 4096]),
)));

/// The list page and the SMCCC conduit.
struct CodeChannel<'a>(&'a mut ListPage);

impl code::Channel for CodeChannel<'_> {
    fn stage(&mut self, list: &guest_kp::mem_perms::List) -> (u64, u64) {
        let n = list.write_to(&mut self.0 .0);
        let p: *const ListPage = self.0;
        // SAFETY: the page is part of a static in the kernel image.
        let ipa = unsafe { pvguard_pa_symbol(p.cast()) };
        (ipa, (n / guest_kp::mem_perms::ENTRY_SIZE) as u64)
    }

    fn call(&mut self, fid: u32, args: [u64; 4]) -> [u64; 4] {
        Hypercall::call(&mut Smccc, fid, args)
    }
}

/// Why a dynamic-code request failed, as an errno (EPERM when the
/// hypervisor refuses), after saying so.
fn code_error(what: core::fmt::Arguments<'_>, e: code::CodeError) -> c_int {
    kernel::pr_warn!("kernel protect: {} refused: {:?}\n", what, e);
    match e {
        code::CodeError::Refused(guest_kp::abi::KpError::Denied) => EPERM.to_errno(),
        code::CodeError::TooScattered => ENOMEM.to_errno(),
        _ => EINVAL.to_errno(),
    }
}

/// Where a module's text may be patched (`struct pvguard_module_sites`
/// in `pvguard_rust.h`): its `__jump_table`, its `__mcount_loc`, its
/// ftrace PLTs, and a buffer for the site list the hypervisor reads.
#[repr(C)]
pub struct ModuleSites {
    jump_table: *const code::JumpEntry,
    jump_entries: u64,
    mcount: *const u64,
    mcount_entries: u64,
    ftrace_plts: [u64; 2],
    buf: *mut u8,
    buf_entries: u64,
    buf_pa: u64,
}

/// The site list of the `ranges` of a module's text, written into the
/// buffer of `sites` (which may be null: no sites).
///
/// # Safety
/// `sites` is null or valid: each table (or null) holds its number of
/// entries, and the buffer `buf_entries` sites, physically contiguous at
/// `buf_pa`.
unsafe fn site_list(sites: *const ModuleSites, ranges: &[code::Range; 2]) -> SiteList {
    // SAFETY: null or valid, as the caller guarantees.
    let Some(s) = (unsafe { sites.as_ref() }) else {
        return SiteList::default();
    };
    if s.buf.is_null() || s.buf_entries == 0 {
        return SiteList::default();
    }
    let jump = if s.jump_table.is_null() {
        &[]
    } else {
        // SAFETY: the module's jump table, not written while its text is
        // made executable (the module is not live yet).
        unsafe { core::slice::from_raw_parts(s.jump_table, s.jump_entries as usize) }
    };
    let mcount = if s.mcount.is_null() {
        &[]
    } else {
        // SAFETY: the module's __mcount_loc, as for the jump table.
        unsafe { core::slice::from_raw_parts(s.mcount, s.mcount_entries as usize) }
    };
    let tables = code::ModulePatchTables {
        jump,
        jump_va: s.jump_table as u64,
        mcount,
        ftrace_plts: s.ftrace_plts,
    };
    let len = s.buf_entries as usize * SITE_SIZE;
    // SAFETY: a buffer of `buf_entries` sites that only this call writes.
    let out = unsafe { core::slice::from_raw_parts_mut(s.buf, len) };
    let text = ranges.map(|r| (r.va, r.pages));
    let count = code::module_sites(&tables, &text, out);
    SiteList {
        ipa: s.buf_pa,
        count,
    }
}

/// Two ranges of one module in one call: its text and init text
/// (`seal` false), with its patch sites, or its rodata and
/// ro_after_init (`seal` true, `sites` null). Returns 0 or a negative
/// errno.
///
/// # Safety
/// As for `site_list`.
#[no_mangle]
pub unsafe extern "C" fn pvguard_rust_code_module(
    seal: bool,
    va0: u64,
    pages0: u64,
    va1: u64,
    pages1: u64,
    sites: *const ModuleSites,
) -> c_int {
    // SAFETY: called with `pvguard_lock` held.
    let protected = unsafe { guest() }.kp.status() == kp::Status::Protected;
    // SAFETY: called with `pvguard_lock` held, the only user of `CODE`.
    let (state, page) = unsafe { &mut *CODE.0.get() };
    let (ranges, sites) = if seal {
        let ranges = code::module_seal((va0, pages0), (va1, pages1));
        (ranges, SiteList::default())
    } else {
        let ranges = code::module_text((va0, pages0), (va1, pages1));
        let sites = if protected {
            // SAFETY: as the caller guarantees.
            unsafe { site_list(sites, &ranges) }
        } else {
            SiteList::default()
        };
        (ranges, sites)
    };
    match state.grant(&mut CodeChannel(page), protected, &ranges, sites, &code_pa) {
        Ok(()) => 0,
        Err(e) => code_error(format_args!("module at {:#x}", va0), e),
    }
}

/// The physical address of the page at kernel address `va`.
fn code_pa(va: u64) -> Option<u64> {
    // SAFETY: `pvguard_code_pa` accepts any address.
    let pa = unsafe { pvguard_code_pa(va) };
    (pa != 0).then_some(pa)
}

/// A dynamic-code hook (`enum pvguard_code_op` in `pvguard_rust.h`) on
/// the `pages` pages at kernel address `addr`. Returns 0 or a negative
/// errno (EPERM when the hypervisor refuses).
#[no_mangle]
pub extern "C" fn pvguard_rust_code(op: c_int, addr: u64, pages: u64) -> c_int {
    let Some(op) = code::Op::from_raw(op) else {
        return EINVAL.to_errno();
    };
    // SAFETY: called with `pvguard_lock` held.
    let protected = unsafe { guest() }.kp.status() == kp::Status::Protected;
    // SAFETY: called with `pvguard_lock` held, the only user of `CODE`.
    let (state, page) = unsafe { &mut *CODE.0.get() };
    match state.apply(&mut CodeChannel(page), protected, op, addr, pages, &code_pa) {
        Ok(()) => 0,
        Err(e) => code_error(
            format_args!("{:?} of {} pages at {:#x}", op, pages, addr),
            e,
        ),
    }
}
