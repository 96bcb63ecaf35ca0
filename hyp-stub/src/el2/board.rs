// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The core's [`Platform`] on real hardware: PSCI firmware by SMC, device
//! access through the hypervisor's identity map, EL1 system registers.

use core::fmt::Write;
use core::sync::atomic::{AtomicU8, Ordering};

use hyp_stub::addr::{Ipa, PhysAddr};
use hyp_stub::esr::Width;
use hyp_stub::hyp::Platform;
use hyp_stub::sha256::{self, CompressFn};
use hyp_stub::stage2::Tlb;
use hyp_stub::vcpu::{El1Context, El1Exception};

use super::console::Console;
use super::guest_mem;
use super::sysreg::{read_sysreg, write_sysreg};

/// Which SHA-256 block function measures guest memory. Chosen by the first
/// measurement ([`Board::sha256_compress`]), not at boot: timing the two
/// takes about 3 ms under emulation, which a boot that never measures
/// should not pay.
static SHA256: AtomicU8 = AtomicU8::new(UNDECIDED);
const UNDECIDED: u8 = 0;
const PORTABLE: u8 = 1;
const CPU_INSTRUCTIONS: u8 = 2;

/// QEMU `virt` with the hypervisor at EL2.
pub struct Board {
    console: Console,
}

impl Board {
    /// The board.
    pub const fn new() -> Self {
        Self { console: Console }
    }

    /// The block function measurements use, chosen by the first call;
    /// true if this call chose. Two CPUs may both time the candidates:
    /// the first to decide wins.
    pub fn choose_sha256() -> (CompressFn, bool) {
        let mut chose = false;
        let mut choice = SHA256.load(Ordering::Acquire);
        if choice == UNDECIDED {
            let mine = if Self::sha256_instructions_faster() {
                CPU_INSTRUCTIONS
            } else {
                PORTABLE
            };
            choice =
                match SHA256.compare_exchange(UNDECIDED, mine, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => {
                        chose = true;
                        mine
                    }
                    Err(first) => first,
                };
        }
        let compress: CompressFn = if choice == CPU_INSTRUCTIONS {
            super::sha256_ce::compress
        } else {
            super::sha256_words::compress
        };
        (compress, chose)
    }

    /// What measurements use, for the console.
    fn sha256_in_use() -> &'static str {
        match SHA256.load(Ordering::Acquire) {
            CPU_INSTRUCTIONS => "the CPU's SHA-256 instructions",
            PORTABLE => "portable SHA-256 code (faster here)",
            _ => "nothing yet",
        }
    }

    /// Whether the CPU's SHA-256 instructions pass their known-answer test
    /// and run faster than the portable code on the same data (under
    /// QEMU's emulation they may not).
    fn sha256_instructions_faster() -> bool {
        let Some(hw) = super::sha256_ce::detect() else {
            return false;
        };
        // Word-aligned, like the guest pages they will hash.
        #[repr(C, align(8))]
        struct Blocks([[u8; 64]; 64]);
        let time = |f: CompressFn| {
            let blocks = Blocks([[0x5a; 64]; 64]);
            let mut state = [0u32; 8];
            let start = read_sysreg!("cntpct_el0");
            for _ in 0..4 {
                f(&mut state, &blocks.0);
            }
            read_sysreg!("cntpct_el0").wrapping_sub(start)
        };
        // Warm both up first (translation, caches), then compare.
        let _ = (time(hw), time(super::sha256_words::compress));
        time(hw) < time(super::sha256_words::compress)
    }
}

impl Tlb for Board {
    fn invalidate_ipa(&mut self, ipa: Ipa) {
        super::mmu::GuestTlb.invalidate_ipa(ipa);
    }

    fn invalidate_all(&mut self) {
        super::mmu::GuestTlb.invalidate_all();
    }
}

impl Platform for Board {
    fn start_cpu(&mut self, mpidr: u64, slot: usize) -> u64 {
        let entry = super::entry::secondary_entry as *const () as u64;
        self.firmware_call(
            hyp_stub::smccc::psci::CPU_ON_64,
            [mpidr, entry, slot as u64],
        )[0]
    }

    fn current_mpidr(&self) -> u64 {
        read_sysreg!("mpidr_el1")
    }

    /// Chooses the block function the first time, and says which.
    fn sha256_compress(&self) -> CompressFn {
        let (compress, chose) = Self::choose_sha256();
        if chose {
            super::console::println!("measurements use {}", Self::sha256_in_use());
        }
        compress
    }

    fn hash_ram(&mut self, pa: PhysAddr, len: u64, sink: &mut sha256::Sha256) {
        // Through a buffer of our own: the hash must not read guest RAM as
        // a slice (see `guest_mem`), even where stage 2 keeps the guest
        // from writing it.
        let mut buf = [0u8; 4096];
        let mut at = pa.get();
        let end = pa.get().saturating_add(len);
        while at < end {
            let n = (end - at).min(buf.len() as u64) as usize;
            // SAFETY: the core checked that the whole range is guest RAM,
            // mapped at EL2; this chunk lies inside it.
            unsafe { guest_mem::read(at, &mut buf[..n]) };
            sink.update(&buf[..n]);
            at += n as u64;
        }
    }

    fn read_ram(&mut self, pa: PhysAddr, buf: &mut [u8]) {
        // SAFETY: the core checked that the range is guest RAM, which the
        // hypervisor maps at EL2. Another vCPU may write it meanwhile: that
        // changes only the bytes copied (callers validate the copy).
        unsafe { guest_mem::read(pa.get(), buf) };
    }

    fn write_insn(&mut self, pa: PhysAddr, insn: u32) {
        let p = pa.get() as *mut u32;
        // SAFETY: the core checked that `pa` is 4-byte aligned guest RAM,
        // mapped at EL2. The write is made visible to instruction fetch:
        // clean to the point of unification, invalidate the I-cache line.
        unsafe {
            p.write_volatile(insn);
            core::arch::asm!(
                "dc cvau, {0}",
                "dsb ish",
                "ic ivau, {0}",
                "dsb ish",
                "isb",
                in(reg) p,
                options(nostack)
            );
        }
    }

    fn write_u64(&mut self, pa: PhysAddr, value: u64) {
        // SAFETY: the core checked that `pa` is 8-byte aligned guest RAM,
        // mapped at EL2 with the guest's cacheable attributes, so one
        // aligned store is single-copy atomic and coherent with the
        // guest's data reads; it is data, so no I-cache maintenance.
        unsafe { (pa.get() as *mut u64).write_volatile(value) };
    }

    fn firmware_call(&mut self, fid: u32, args: [u64; 3]) -> [u64; 4] {
        let mut full = [0u64; 17];
        full[..3].copy_from_slice(&args);
        let r = smccc::smc64(fid, full);
        [r[0], r[1], r[2], r[3]]
    }

    fn mmio_read(&mut self, pa: PhysAddr, width: Width) -> u64 {
        let p = pa.get() as usize;
        // SAFETY: the core only forwards naturally aligned accesses inside
        // the device tree's device windows, which the hypervisor maps as
        // device memory (`mmu::map_device_window`) and which never share a
        // GiB with RAM; a device read has no effect on our memory.
        unsafe {
            match width {
                Width::Byte => u64::from((p as *const u8).read_volatile()),
                Width::Half => u64::from((p as *const u16).read_volatile()),
                Width::Word => u64::from((p as *const u32).read_volatile()),
                Width::Double => (p as *const u64).read_volatile(),
            }
        }
    }

    fn mmio_write(&mut self, pa: PhysAddr, width: Width, value: u64) {
        let p = pa.get() as usize;
        // SAFETY: as for `mmio_read`; the window holds no hypervisor memory.
        unsafe {
            match width {
                Width::Byte => (p as *mut u8).write_volatile(value as u8),
                Width::Half => (p as *mut u16).write_volatile(value as u16),
                Width::Word => (p as *mut u32).write_volatile(value as u32),
                Width::Double => (p as *mut u64).write_volatile(value),
            }
        }
    }

    fn el1_context(&self) -> El1Context {
        El1Context {
            vbar: read_sysreg!("vbar_el1"),
            sctlr: read_sysreg!("sctlr_el1"),
        }
    }

    fn set_el1_exception(&mut self, e: &El1Exception) {
        // SAFETY: these registers only affect the guest's EL1 state; the
        // core is making the guest take an exception.
        unsafe {
            write_sysreg!("esr_el1", e.esr);
            write_sysreg!("far_el1", e.far);
            write_sysreg!("elr_el1", e.elr);
            write_sysreg!("spsr_el1", e.spsr);
        }
    }

    fn console(&mut self) -> &mut dyn Write {
        &mut self.console
    }
}
