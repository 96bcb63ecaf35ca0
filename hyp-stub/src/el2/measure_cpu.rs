// SPDX-License-Identifier: GPL-2.0 OR MIT
//! A CPU the hypervisor keeps for itself (absent from the guest's device
//! tree) to hash guest memory while the guest goes on running: the
//! kernel-protect baseline need not hold up the guest's boot.
//!
//! It is off until there is work: [`start`] queues a job and starts the CPU
//! with PSCI CPU_ON; it hashes, posts the digest and turns itself off
//! again. [`poll`] takes the digest if it is there, without waiting (the
//! guest's calls run under the core's lock); only [`finish`], at
//! power-off, waits for it, and a bounded time.

use core::sync::atomic::{AtomicU64, Ordering};

use hyp_stub::addr::PhysAddr;
use hyp_stub::hyp::{cpu_slot, Platform, MAX_BACKGROUND_SPANS};
use hyp_stub::sha256::Sha256;
use hyp_stub::smccc::psci;
use spin::Mutex;

use super::board::Board;
use super::sysreg::read_sysreg;

/// No CPU reserved.
const NONE: u64 = u64::MAX;

/// The reserved CPU's MPIDR, or [`NONE`].
static MPIDR: AtomicU64 = AtomicU64::new(NONE);

type Spans = heapless::Vec<(PhysAddr, u64), MAX_BACKGROUND_SPANS>;

/// The one job slot, shared by the guest-facing CPUs and the reserved one.
enum Job {
    /// Nothing to do; a job may be queued.
    Idle,
    /// Queued at counter value `at`, the reserved CPU being started.
    Queued { spans: Spans, at: u64 },
    /// Being hashed on the reserved CPU.
    Running,
    /// Hashed; waiting for [`finish`] to take it.
    Done(Finished),
    /// [`finish`] gave up on it; whatever the reserved CPU still posts is
    /// dropped.
    Abandoned,
}

static JOB: Mutex<Job> = Mutex::new(Job::Idle);

/// A delivered hash, and where the time went (counter ticks).
#[derive(Clone, Copy)]
pub struct Finished {
    /// The SHA-256 of the spans, in order.
    pub digest: [u8; 32],
    /// From CPU_ON until the reserved CPU ran.
    pub start_ticks: u64,
    /// Hashing, on the reserved CPU.
    pub hash_ticks: u64,
    /// How long [`finish`] waited for it.
    pub wait_ticks: u64,
}

/// How long [`finish`] waits, in seconds, before it gives up on the
/// reserved CPU (the hash takes well under 100 ms even under emulation).
const FINISH_LIMIT_S: u64 = 2;

/// Keeps CPU `mpidr` for background hashing (the core must already refuse
/// it to the guest).
pub fn reserve(mpidr: u64) {
    MPIDR.store(mpidr, Ordering::Relaxed);
}

/// The reserved CPU's vCPU slot (its stack), if one is reserved.
pub fn slot() -> Option<usize> {
    match MPIDR.load(Ordering::Relaxed) {
        NONE => None,
        mpidr => cpu_slot(mpidr),
    }
}

/// Queues a hash of `spans` (guest RAM the core checked) and starts the
/// reserved CPU on it. False if there is none, it is busy, or it would not
/// start.
pub fn start(board: &mut Board, spans: &[(PhysAddr, u64)]) -> bool {
    let mpidr = MPIDR.load(Ordering::Relaxed);
    let Some(slot) = slot() else {
        return false;
    };
    let Ok(spans) = Spans::from_slice(spans) else {
        return false;
    };
    {
        let mut job = JOB.lock();
        if !matches!(*job, Job::Idle) {
            return false;
        }
        *job = Job::Queued {
            spans,
            at: read_sysreg!("cntpct_el0"),
        };
    }
    if board.start_cpu(mpidr, slot) != 0 {
        // Still on from the last job, or the firmware refused.
        *JOB.lock() = Job::Idle;
        return false;
    }
    true
}

/// Where the queued hash stands, without waiting.
pub enum Poll {
    /// Nothing queued, or the job was given up on.
    Nothing,
    /// Queued or being hashed.
    Pending,
    /// Delivered (and taken: the slot is free again).
    Done(Finished),
}

/// Takes the digest of the queued hash if the reserved CPU has posted it.
pub fn poll() -> Poll {
    let mut job = JOB.lock();
    match *job {
        Job::Idle | Job::Abandoned => Poll::Nothing,
        Job::Queued { .. } | Job::Running => Poll::Pending,
        Job::Done(done) => {
            *job = Job::Idle;
            Poll::Done(done)
        }
    }
}

/// Waits for the queued hash and returns its digest: for power-off only.
/// `None` if nothing was queued, or if the reserved CPU has not delivered
/// within [`FINISH_LIMIT_S`], which it says (the caller then measures on
/// its own CPU). A job given up on is never delivered later: the slot
/// stays busy, and later hashes are refused to the reserved CPU.
pub fn finish() -> Option<Finished> {
    let start = read_sysreg!("cntpct_el0");
    let limit = FINISH_LIMIT_S.saturating_mul(read_sysreg!("cntfrq_el0"));
    loop {
        match poll() {
            Poll::Nothing => return None,
            Poll::Done(done) => {
                return Some(Finished {
                    wait_ticks: read_sysreg!("cntpct_el0").wrapping_sub(start),
                    ..done
                })
            }
            Poll::Pending => {
                if read_sysreg!("cntpct_el0").wrapping_sub(start) > limit {
                    let mut job = JOB.lock();
                    if matches!(*job, Job::Queued { .. } | Job::Running) {
                        *job = Job::Abandoned;
                        super::console::println!(
                            "the measurement CPU gave no digest within {} s: measuring here",
                            FINISH_LIMIT_S
                        );
                        return None;
                    }
                }
            }
        }
        core::hint::spin_loop();
    }
}

/// Counter ticks in microseconds.
pub fn us(ticks: u64) -> u64 {
    ticks.saturating_mul(1_000_000) / read_sysreg!("cntfrq_el0").max(1)
}

/// The reserved CPU, just started (MMU on): runs the queued job, posts
/// the digest, and turns itself off.
pub fn run() -> ! {
    let queued = {
        let mut job = JOB.lock();
        match core::mem::replace(&mut *job, Job::Running) {
            Job::Queued { spans, at } => Some((spans, at)),
            other => {
                // Started with nothing queued: put the state back.
                *job = other;
                None
            }
        }
    };
    if let Some((spans, queued_at)) = queued {
        // The block function may use the SHA-256 instructions.
        super::untrap_fp_simd();
        // Chosen here if this is the first measurement (off the guest's
        // path); `finish` says which, as this CPU must not print over
        // the guest's console.
        let (compress, _) = Board::choose_sha256();
        let start = read_sysreg!("cntpct_el0");
        let mut board = Board::new();
        let mut h = Sha256::new(compress);
        for (pa, len) in spans {
            board.hash_ram(pa, len, &mut h);
        }
        let digest = h.finalize();
        let done = Finished {
            digest,
            start_ticks: start.wrapping_sub(queued_at),
            hash_ticks: read_sysreg!("cntpct_el0").wrapping_sub(start),
            wait_ticks: 0,
        };
        let mut job = JOB.lock();
        if matches!(*job, Job::Running) {
            *job = Job::Done(done);
        }
    }
    turn_off()
}

fn turn_off() -> ! {
    let r = Board::new().firmware_call(psci::CPU_OFF, [0; 3]);
    // CPU_OFF returns only if the firmware refuses: say so and sleep
    // (nothing routes interrupts here), rather than spin on a host core.
    super::console::println!("the measurement CPU could not turn off ({:#x})", r[0]);
    loop {
        // SAFETY: waiting for an interrupt has no effect on memory.
        unsafe { core::arch::asm!("wfi", options(nomem, nostack)) };
    }
}
