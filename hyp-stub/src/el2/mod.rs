// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The bare-metal hypervisor: boot at EL2, prepare the guest (device tree,
//! stage 2, EL2 controls), enter it, and route its traps to the core.

mod board;
pub mod console;
mod entry;
mod guest_mem;
mod mmu;
mod sha256_ce;
mod sha256_words;
mod sysreg;

use core::panic::PanicInfo;
use core::ptr::addr_of_mut;

use aarch64_cpu::registers::{CNTHCTL_EL2, HCR_EL2, ID_AA64DFR0_EL1, ID_AA64PFR0_EL1};
use guest_kp::mem_perms::Policy;
use guest_kp::sites::{
    FtraceSite, JumpSite, PatchPolicy, SiteStorage, MAX_FTRACE_SITES, MAX_JUMP_SITES,
};
use hyp_stub::addr::{Ipa, IpaRange, PhysAddr};
use hyp_stub::boot::{self, KernelImage, Manifest, Services};
use hyp_stub::devices::DeviceWindows;
use hyp_stub::esr::Esr;
use hyp_stub::fdt::{self, Edits, Fdt, NodeProp};
use hyp_stub::hyp::{Discovery, Hyp, Layout, Next, Platform};
use hyp_stub::service::Registry;
use hyp_stub::services::kernel_protect::code_sites::{CodeSite, MAX_CODE_SITES};
use hyp_stub::services::kernel_protect::{AssetExtents, KernelProtect};
use hyp_stub::services::mmio_guard::{self, MmioGuard};
use hyp_stub::smccc::psci;
use hyp_stub::stage2::{Attrs, MemType, Perms, Stage2};
use hyp_stub::vcpu::{GuestRegs, Vcpu};
use spin::Mutex;
use static_cell::StaticCell;

use board::Board;
use console::println;
use mmu::{GuestTlb, PoolTables};
use sysreg::{isb, read_sysreg, write_sysreg};

static HYP: Mutex<Option<Hyp<'static, PoolTables>>> = Mutex::new(None);
/// The discovery answers, given by any CPU without taking [`HYP`].
static DISCOVERY: Discovery = Discovery::new();
/// VTCR_EL2 and VTTBR_EL2, for secondary CPUs.
static STAGE2_REGS: Mutex<(u64, u64)> = Mutex::new((0, 0));

/// Scratch space for the guest's device tree while it is rewritten.
const DTB_BUF_SIZE: usize = 0x10000;
static mut DTB_BUF: [u8; DTB_BUF_SIZE] = [0; DTB_BUF_SIZE];

/// Kernel protect's patch-site registry (in BSS: 128 KiB + 256 KiB).
static mut JUMP_SITES: [JumpSite; MAX_JUMP_SITES] = [JumpSite::EMPTY; MAX_JUMP_SITES];
static mut FTRACE_SITES: [FtraceSite; MAX_FTRACE_SITES] = [FtraceSite::EMPTY; MAX_FTRACE_SITES];
static mut CODE_SITES: [CodeSite; MAX_CODE_SITES] = [CodeSite::EMPTY; MAX_CODE_SITES];

/// Stops the machine after a boot failure, saying why.
fn refuse_to_boot(why: core::fmt::Arguments<'_>) -> ! {
    println!("refusing to start the guest: {}", why);
    Board::new().firmware_call(psci::SYSTEM_OFF, [0; 3]);
    loop {
        core::hint::spin_loop();
    }
}

/// The device windows of QEMU's device tree, mapped at EL2 so that
/// trapped accesses inside them can be forwarded.
fn device_windows(fdt: &Fdt<'_>, ram_base: u64, ram_size: u64) -> DeviceWindows {
    let memory = IpaRange::new(Ipa(ram_base), ram_size)
        .unwrap_or_else(|| refuse_to_boot(format_args!("empty memory node")));
    let devices = DeviceWindows::from_fdt(fdt, memory)
        .unwrap_or_else(|e| refuse_to_boot(format_args!("device windows: {e}")));
    for w in devices.iter() {
        println!("device window {:#x}..{:#x}", w.start().get(), w.end().get());
        if let Err(e) = mmu::map_device_window(w) {
            refuse_to_boot(format_args!(
                "cannot map device window {:#x}..{:#x} at EL2: {e}",
                w.start().get(),
                w.end().get()
            ));
        }
    }
    devices
}

#[no_mangle]
extern "C" fn hyp_main() -> ! {
    println!(
        "pvguard hyp-stub at EL{}",
        (read_sysreg!("currentel") >> 2) & 3
    );
    // SAFETY: first thing at boot, MMU off, single CPU.
    unsafe { mmu::enable_el2_mmu() };

    // The device tree QEMU generated describes the whole machine.
    // SAFETY: RAM_BASE is the start of RAM, mapped normal at EL2; QEMU put
    // its device tree there and nothing else writes it during this read.
    let qemu_dtb =
        unsafe { core::slice::from_raw_parts(boot::RAM_BASE as *const u8, boot::GUEST_DTB_MAX) };
    let fdt = Fdt::new(qemu_dtb)
        .unwrap_or_else(|e| refuse_to_boot(format_args!("no device tree from QEMU ({e:?})")));
    let (ram_base, ram_size) = fdt
        .memory()
        .unwrap_or_else(|e| refuse_to_boot(format_args!("no memory node ({e:?})")));
    if ram_base != boot::RAM_BASE || ram_base.saturating_add(ram_size) < boot::HYP_END {
        refuse_to_boot(format_args!(
            "need RAM at {:#x}..{:#x} (use -m 1G or more)",
            boot::RAM_BASE,
            boot::HYP_END
        ));
    }
    // The code policy the guest chose on its command line, learnt before
    // the guest runs, so that nothing it does later weakens it (and read
    // here, before the guest's device tree overwrites QEMU's).
    let policy = Policy::from_cmdline(fdt.chosen("bootargs").ok().flatten().unwrap_or(&[]));
    let guest_ram = IpaRange::new(Ipa(ram_base), boot::HYP_BASE - ram_base)
        .unwrap_or_else(|| refuse_to_boot(format_args!("empty guest RAM")));
    // Read now: the guest's tree replaces QEMU's in place below.
    let devices = device_windows(&fdt, ram_base, ram_size);
    // What may be patched in the guest's text: from its command line,
    // read before it runs, so nothing the guest does later changes it.
    let patch_policy = match fdt.chosen("bootargs") {
        Ok(Some(args)) => PatchPolicy::from_cmdline(args),
        Ok(None) => PatchPolicy::from_cmdline(b""),
        Err(e) => refuse_to_boot(format_args!("cannot read /chosen/bootargs ({e:?})")),
    };

    let mut manifest_bytes = [0u8; boot::MANIFEST_SIZE];
    for (i, b) in manifest_bytes.iter_mut().enumerate() {
        // SAFETY: MANIFEST_PA lies in the hypervisor's RAM, mapped at EL2.
        *b = unsafe { ((boot::MANIFEST_PA as usize + i) as *const u8).read_volatile() };
    }
    let dtb_end = boot::RAM_BASE + boot::GUEST_DTB_MAX as u64;
    let manifest = Manifest::parse(&manifest_bytes, dtb_end, boot::HYP_BASE).unwrap_or_else(|e| {
        refuse_to_boot(format_args!(
            "bad boot manifest at {:#x}: {e:?}",
            boot::MANIFEST_PA
        ))
    });
    let mut header = [0u8; boot::IMAGE_HEADER_SIZE];
    // SAFETY: the manifest placed the kernel inside guest RAM, mapped at EL2.
    let kernel = unsafe {
        core::slice::from_raw_parts(manifest.kernel_ipa as *const u8, boot::IMAGE_HEADER_SIZE)
    };
    header.copy_from_slice(kernel);
    let image = KernelImage::parse(&header).unwrap_or_else(|_| {
        refuse_to_boot(format_args!("no arm64 Image at {:#x}", manifest.kernel_ipa))
    });
    let kernel_end = manifest.kernel_ipa.saturating_add(image.image_size);
    if manifest.initrd_size != 0
        && manifest.initrd_ipa < kernel_end
        && manifest.initrd_ipa >= manifest.kernel_ipa
    {
        refuse_to_boot(format_args!("initramfs overlaps the kernel's BSS"));
    }
    if kernel_end > boot::HYP_BASE {
        refuse_to_boot(format_args!("kernel does not fit in guest RAM"));
    }

    let services = manifest.services();

    // The guest's device tree: only guest memory, plus the initramfs.
    let initrd_start = manifest.initrd_ipa.to_be_bytes();
    let initrd_end = (manifest.initrd_ipa + manifest.initrd_size).to_be_bytes();
    // PSCI (and every other SMCCC call) reaches us by HVC, as in a KVM
    // guest: stock Linux only looks for KVM's services over HVC.
    let props = [
        NodeProp {
            node: "psci",
            name: "method",
            value: b"hvc\0",
        },
        NodeProp {
            node: "chosen",
            name: "linux,initrd-start",
            value: &initrd_start,
        },
        NodeProp {
            node: "chosen",
            name: "linux,initrd-end",
            value: &initrd_end,
        },
    ];
    let edits = Edits {
        memory: (guest_ram.start().get(), guest_ram.size()),
        props: if manifest.initrd_size != 0 {
            &props
        } else {
            &props[..1]
        },
        remove: &[],
    };
    // SAFETY: boot is single-threaded; DTB_BUF is used only here.
    let buf = unsafe { &mut *addr_of_mut!(DTB_BUF) };
    let len = fdt::rewrite(&fdt, &edits, buf)
        .unwrap_or_else(|e| refuse_to_boot(format_args!("cannot rewrite the device tree ({e:?})")));
    // SAFETY: the guest's device tree slot is guest RAM mapped at EL2, and
    // `qemu_dtb` (which aliases it) is not used after this point.
    unsafe { core::ptr::copy_nonoverlapping(buf.as_ptr(), boot::GUEST_DTB_IPA as *mut u8, len) };
    mmu::clean_dcache(boot::GUEST_DTB_IPA, len as u64);

    // Stage 2: guest RAM only. Devices are left unmapped so every access
    // traps and is checked; the hypervisor's memory is never mapped.
    // SAFETY: the only call.
    let mut s2 = Stage2::new(unsafe { PoolTables::take() })
        .unwrap_or_else(|e| refuse_to_boot(format_args!("stage 2: {e:?}")));
    let ram = Attrs {
        mem: MemType::Normal,
        perms: Perms::RWX,
    };
    if let Err(e) = s2.map(
        guest_ram,
        PhysAddr(guest_ram.start().get()),
        ram,
        &mut GuestTlb,
    ) {
        refuse_to_boot(format_args!("stage 2: cannot map guest RAM: {e:?}"));
    }
    let vttbr = s2.root().get() | (1 << 48);
    let vtcr = Stage2::<PoolTables>::vtcr(read_sysreg!("id_aa64mmfr0_el1") & 0xf);

    let layout = Layout { guest_ram, devices };
    let mut registry = Registry::new();
    if services.contains(Services::MMIO_GUARD) {
        static GUARD: StaticCell<MmioGuard> = StaticCell::new();
        let policy = if services.contains(Services::MMIO_GUARD_FROM_BOOT) {
            mmio_guard::Policy::FromBoot
        } else {
            mmio_guard::Policy::AfterEnroll
        };
        if let Err(e) = registry.register(GUARD.init(MmioGuard::new(policy))) {
            refuse_to_boot(format_args!("cannot register the MMIO guard: {e:?}"));
        }
    }
    if services.contains(Services::KERNEL_PROTECT) {
        static KP: StaticCell<KernelProtect<'static>> = StaticCell::new();
        // SAFETY: boot is single-threaded and these arrays are taken only
        // here, once (KP.init would panic on a second pass).
        let (storage, code_sites) = unsafe {
            (
                SiteStorage {
                    jump: &mut *addr_of_mut!(JUMP_SITES),
                    ftrace: &mut *addr_of_mut!(FTRACE_SITES),
                },
                &mut *addr_of_mut!(CODE_SITES),
            )
        };
        let kp = KP.init(KernelProtect::with_sites(storage).with_code_sites(code_sites));
        kp.set_policy(patch_policy);
        println!(
            "text patches: ftrace {}, kprobes {} (command line)",
            PatchPolicy::word(patch_policy.ftrace),
            PatchPolicy::word(patch_policy.kprobes)
        );
        // The resource manager's protect_vm_assets: the guest's kernel
        // regions must lie in the image it was given (header image_size,
        // BSS included). The guest itself cannot make this call.
        let image = IpaRange::new(Ipa(manifest.kernel_ipa), image.image_size)
            .unwrap_or_else(|| refuse_to_boot(format_args!("empty kernel image")));
        let extents = AssetExtents {
            rx: image,
            ro: image,
            rw: image,
        };
        if let Err(e) = kp.protect_vm_assets(extents) {
            refuse_to_boot(format_args!("protect_vm_assets: {e}"));
        }
        let hyp_mem = IpaRange::new(Ipa(boot::HYP_BASE), boot::HYP_END - boot::HYP_BASE)
            .unwrap_or_else(|| refuse_to_boot(format_args!("no hypervisor memory")));
        kp.set_code_policy(policy, hyp_mem);
        println!(
            "code policy {} ({}=)",
            policy.name(),
            guest_kp::mem_perms::POLICY_PARAM
        );
        if let Err(e) = registry.register(kp) {
            refuse_to_boot(format_args!("cannot register kernel protect: {e:?}"));
        }
    }
    let mut hyp = Hyp::new(layout, registry, s2, &DISCOVERY);
    if let Err((name, e)) = hyp.start_services(&mut Board::new()) {
        refuse_to_boot(format_args!("service {name} failed to start: {e}"));
    }
    *HYP.lock() = Some(hyp);

    println!("services {:#x}", services.bits());
    // The portable block function measures by default; it has no host
    // test of its own (it is bare-metal code).
    if !hyp_stub::sha256::known_answer(sha256_words::compress) {
        refuse_to_boot(format_args!(
            "the SHA-256 block function fails its known-answer test"
        ));
    }
    println!(
        "guest RAM {:#x}..{:#x}, kernel at {:#x}, initramfs {:#x}+{:#x}, dtb at {:#x}",
        guest_ram.start().get(),
        guest_ram.end().get(),
        manifest.kernel_ipa,
        manifest.initrd_ipa,
        manifest.initrd_size,
        boot::GUEST_DTB_IPA
    );
    *STAGE2_REGS.lock() = (vtcr, vttbr);
    // SAFETY: the stage-2 tables are complete and the guest's memory,
    // device tree and entry point are in place.
    unsafe {
        configure_el2(vtcr, vttbr);
        entry::enter_guest(
            manifest.kernel_ipa,
            boot::GUEST_DTB_IPA,
            entry::stack_top(0),
        )
    }
}

/// A secondary CPU that the guest's CPU_ON started for vCPU `slot`.
#[no_mangle]
extern "C" fn secondary_main(slot: usize) -> ! {
    // SAFETY: the boot CPU built the EL2 tables before any CPU_ON.
    unsafe { mmu::enable_el2_mmu_secondary() };
    let (vtcr, vttbr) = *STAGE2_REGS.lock();
    let boot = HYP.lock().as_mut().and_then(|hyp| hyp.secondary_boot(slot));
    let Some((guest_entry, context)) = boot else {
        println!(
            "CPU for vCPU {} started without a pending CPU_ON; parking it",
            slot
        );
        loop {
            core::hint::spin_loop();
        }
    };
    // SAFETY: the stage-2 tables are the guest's (shared by all vCPUs)
    // and the entry point was checked to be guest RAM by CPU_ON.
    unsafe {
        configure_el2(vtcr, vttbr);
        entry::enter_guest(guest_entry, context, entry::stack_top(slot))
    }
}

/// HCR_EL2 for the guest: stage 2 on, set/way invalidation upgraded to
/// clean+invalidate, TLB maintenance and barriers broadcast to the inner
/// shareable domain, SMC trapped, EL1 AArch64, pointer authentication not
/// trapped.
fn guest_hcr() -> u64 {
    (HCR_EL2::VM::Enable
        + HCR_EL2::SWIO::SET
        + HCR_EL2::FB::SET
        + HCR_EL2::BSU::InnerShareable
        + HCR_EL2::TSC::EnableTrapEl1SmcToEl2
        + HCR_EL2::RW::EL1IsAarch64
        + HCR_EL2::APK::DisableTrapPointerAuthKeyRegsToEl2
        + HCR_EL2::API::DisableTrapPointerAuthInstToEl2)
        .value
}
const CPTR_NVHE_RES1: u64 = (1 << 13) | (1 << 9) | 0xff;
const SCTLR_EL1_RES1_MMU_OFF: u64 = 0x30d0_0800;

/// Stops trapping FP/SIMD, SVE and SME at EL2 and below on this CPU (the
/// reset value of CPTR_EL2 is UNKNOWN).
fn untrap_fp_simd() {
    // SAFETY: only changes which instructions trap to EL2; no effect on
    // memory.
    unsafe {
        write_sysreg!("cptr_el2", CPTR_NVHE_RES1);
        isb();
    }
}

/// A 4-bit ID register field (for those `aarch64-cpu` does not name).
fn field(reg: u64, shift: u32) -> u64 {
    (reg >> shift) & 0xf
}

/// Leaves EL2 the way Linux expects when entered at EL1 (the controls the
/// kernel's own `init_el2_state` sets before leaving EL2), with stage 2
/// on and SMC trapped.
///
/// # Safety
/// `vttbr` must point at complete stage-2 tables.
unsafe fn configure_el2(vtcr: u64, vttbr: u64) {
    let pfr0 = read_sysreg!("id_aa64pfr0_el1");
    let pfr1 = read_sysreg!("id_aa64pfr1_el1");
    let mmfr0 = read_sysreg!("id_aa64mmfr0_el1");
    let mmfr1 = read_sysreg!("id_aa64mmfr1_el1");
    let dfr0 = read_sysreg!("id_aa64dfr0_el1");
    let mut hcr = guest_hcr();
    // ID_AA64PFR0_EL1.CSV2 >= 2: SCXTNUM_ELx exist; let EL1 use them.
    if field(pfr0, 56) >= 2 {
        hcr |= HCR_EL2::EnSCXT::SET.value;
    }
    // SAFETY: each write configures how the (not yet running) guest is
    // treated; none affects the hypervisor's own memory.
    unsafe {
        // No FP/SIMD, SVE or SME traps; EL1 gets the largest vector lengths.
        untrap_fp_simd();
        if ID_AA64PFR0_EL1::SVE.read(pfr0) != 0 {
            write_sysreg!("s3_4_c1_c2_0", 0x1ffu64); // ZCR_EL2
        }
        if field(pfr1, 24) != 0 {
            write_sysreg!("s3_4_c1_c2_6", (1u64 << 31) | (1 << 30) | 0x1ff); // SMCR_EL2
        }
        // EL1 owns the physical timer and counter.
        write_sysreg!(
            "cnthctl_el2",
            (CNTHCTL_EL2::EL1PCTEN::SET + CNTHCTL_EL2::EL1PCEN::SET).value
        );
        write_sysreg!("cntvoff_el2", 0u64);
        // EL1 uses the GICv3 CPU interface through system registers; no
        // virtual interface.
        if field(pfr0, 24) != 0 {
            let sre = read_sysreg!("s3_4_c12_c9_5"); // ICC_SRE_EL2
            write_sysreg!("s3_4_c12_c9_5", sre | 0b1001);
            isb();
            write_sysreg!("s3_4_c12_c11_0", 0u64); // ICH_HCR_EL2
        }
        // All PMU counters to EL1.
        let pmu = ID_AA64DFR0_EL1::PMUVer.read(dfr0);
        let hpmn = if pmu != 0 && pmu != 0xf {
            (read_sysreg!("pmcr_el0") >> 11) & 0x1f
        } else {
            0
        };
        write_sysreg!("mdcr_el2", hpmn);
        write_sysreg!("hstr_el2", 0u64);
        write_sysreg!("vpidr_el2", read_sysreg!("midr_el1"));
        write_sysreg!("vmpidr_el2", read_sysreg!("mpidr_el1"));
        if field(mmfr1, 40) != 0 {
            // HCRX_EL2: MOPS and TCR2_EL1 usable at EL1.
            write_sysreg!("s3_4_c1_c2_2", (1u64 << 11) | (1 << 14));
        }
        if field(mmfr0, 56) != 0 {
            // Fine-grained traps off; the "n" bits (nPIR_EL1, nPOR_EL1,
            // nTPIDR2_EL0, ...) trap when clear, so set them.
            let n_bits = (0xfffu64 << 52) | (1 << 50);
            write_sysreg!("s3_4_c1_c1_4", n_bits); // HFGRTR_EL2
            write_sysreg!("s3_4_c1_c1_5", n_bits); // HFGWTR_EL2
            write_sysreg!("s3_4_c1_c1_6", 0u64); // HFGITR_EL2
            write_sysreg!("s3_4_c3_c1_4", 0u64); // HDFGRTR_EL2
            write_sysreg!("s3_4_c3_c1_5", 0u64); // HDFGWTR_EL2
        }
        write_sysreg!("sctlr_el1", SCTLR_EL1_RES1_MMU_OFF);
        write_sysreg!("vtcr_el2", vtcr);
        write_sysreg!("vttbr_el2", vttbr);
        isb();
        write_sysreg!("hcr_el2", hcr);
        isb();
        core::arch::asm!(
            "tlbi vmalls12e1",
            "dsb sy",
            "ic iallu",
            "dsb sy",
            "isb",
            options(nostack)
        );
    }
}

/// A synchronous exception from the guest. `regs` is the frame the vector
/// saved; changes to it are what the guest sees on return.
#[no_mangle]
extern "C" fn handle_lower_sync(regs: &mut GuestRegs) {
    let esr = Esr(read_sysreg!("esr_el2"));
    let far = read_sysreg!("far_el2");
    let hpfar = read_sysreg!("hpfar_el2");
    let mut vcpu = Vcpu {
        regs: regs.clone(),
        pc: read_sysreg!("elr_el2"),
        pstate: read_sysreg!("spsr_el2"),
    };
    // Exits that touch no state of the core's do not wait for it.
    if DISCOVERY.try_exit(esr, &mut vcpu) {
        *regs = vcpu.regs;
        // SAFETY: as below: where the guest resumes, after ERET.
        unsafe { write_sysreg!("elr_el2", vcpu.pc) };
        return;
    }
    let (next, idle_exits) = match HYP.lock().as_mut() {
        Some(hyp) => (
            hyp.handle_sync(esr, far, hpfar, &mut vcpu, &mut Board::new()),
            hyp.wants_idle_exits(),
        ),
        None => (Next::Guest, false),
    };
    trap_wfi(idle_exits);
    // The core is released: what waits happens here.
    match next {
        Next::Guest => {}
        Next::Mmio(access) => access.perform(&mut vcpu, &mut Board::new()),
        Next::Standby(state) => {
            let r = Board::new().firmware_call(psci::CPU_SUSPEND_64, [state.raw().into(), 0, 0]);
            vcpu.regs.x[0] = r[0];
        }
        Next::PowerDown { slot, state } => power_down(slot, state, &mut vcpu),
        Next::CpuOff { slot } => {
            let r = Board::new().firmware_call(psci::CPU_OFF, [0; 3]);
            // Only a refusal returns.
            if let Some(hyp) = HYP.lock().as_mut() {
                hyp.cpu_off_failed(slot);
            }
            vcpu.regs.x[0] = r[0];
        }
    }
    *regs = vcpu.regs;
    // SAFETY: the core computed where the guest resumes; ELR/SPSR only
    // affect the guest's state after ERET.
    unsafe {
        write_sysreg!("elr_el2", vcpu.pc);
        write_sysreg!("spsr_el2", vcpu.pstate);
    }
}

/// Makes this CPU's WFI trap, or stop trapping: it traps while a service
/// has work for the guest's idle time, and each CPU learns so on its own
/// exits.
fn trap_wfi(on: bool) {
    let hcr = read_sysreg!("hcr_el2");
    let want = if on {
        hcr | HCR_EL2::TWI::SET.value
    } else {
        hcr & !HCR_EL2::TWI::SET.value
    };
    if want != hcr {
        // SAFETY: TWI only decides whether the guest's WFI traps to EL2;
        // it takes effect at the ERET that ends this exception.
        unsafe { write_sysreg!("hcr_el2", want) };
    }
}

/// A power-down suspend of vCPU `slot`: the firmware gets the
/// hypervisor's entry. If the CPU really powers down it comes back through
/// [`secondary_main`]; if the call returns success (QEMU waits for an
/// interrupt and returns) the vCPU resumes the same way here, at its own
/// entry point. A refusal returns to where the guest called, with the
/// firmware's error.
fn power_down(slot: usize, state: psci::PowerState, vcpu: &mut Vcpu) {
    let entry = entry::secondary_entry as *const () as u64;
    let r = Board::new().firmware_call(
        psci::CPU_SUSPEND_64,
        [state.raw().into(), entry, slot as u64],
    );
    let mut core = HYP.lock();
    let Some(hyp) = core.as_mut() else {
        return;
    };
    if r[0] != psci::SUCCESS {
        hyp.suspend_failed(slot);
        vcpu.regs.x[0] = r[0];
        return;
    }
    let resume = hyp.secondary_boot(slot);
    drop(core);
    if let Some((guest_entry, context)) = resume {
        let (vtcr, vttbr) = *STAGE2_REGS.lock();
        // SAFETY: as in `secondary_main`: the guest's stage-2 tables, and
        // an entry point checked to be guest RAM when the guest suspended.
        // This exception's frame is abandoned (a fresh stack).
        unsafe {
            configure_el2(vtcr, vttbr);
            entry::enter_guest(guest_entry, context, entry::stack_top(slot))
        }
    }
}

/// An IRQ, FIQ or SError taken to EL2 while the guest ran.
#[no_mangle]
extern "C" fn handle_lower_async() {
    if let Some(hyp) = HYP.lock().as_mut() {
        hyp.handle_async();
    }
}

/// An exception taken by the hypervisor itself: a hypervisor bug. Says
/// where, and ends the machine.
#[no_mangle]
extern "C" fn handle_hyp_fault() -> ! {
    println!(
        "fatal: exception at EL2: esr={:#x} elr={:#x} far={:#x}",
        read_sysreg!("esr_el2"),
        read_sysreg!("elr_el2"),
        read_sysreg!("far_el2")
    );
    power_off_after_fatal()
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    println!("fatal: {}", info);
    power_off_after_fatal()
}

/// Ends the machine after a hypervisor bug, so the VMM (and whoever
/// waits on it) sees the end instead of a CPU spinning forever. The
/// console takes no lock, so the reason is printed even if the core's
/// lock is held; the power-off goes straight to the firmware, not
/// through the core.
fn power_off_after_fatal() -> ! {
    println!("powering the machine off");
    let r = Board::new().firmware_call(psci::SYSTEM_OFF, [0; 3]);
    println!("SYSTEM_OFF returned {:#x}; halting this CPU", r[0]);
    loop {
        // SAFETY: waiting for an interrupt has no effect on memory.
        unsafe { core::arch::asm!("wfi", options(nomem, nostack)) };
    }
}
