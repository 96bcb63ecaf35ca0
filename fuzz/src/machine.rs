// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The machine the fuzzed hypervisor core runs on: guest RAM backed only
//! where it was written, stage-2 table memory carved out of the
//! hypervisor's own region (so a table mapped to the guest would show as
//! hypervisor memory), a device model that records every access it is
//! asked to emulate, and the services wired up as the boot path wires
//! them.
//!
//! Services are registered through [`Shared`], a transparent wrapper, so
//! the harness can inspect their state between two exits while the core
//! holds them.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex, MutexGuard};

use guest_kp::sites::{FtraceSite, JumpSite, PatchPolicy, SiteStorage};
use hyp_stub::addr::{Ipa, IpaRange, PhysAddr};
use hyp_stub::boot::{HYP_BASE, HYP_END, RAM_BASE};
use hyp_stub::devices::DeviceWindows;
use hyp_stub::esr::Width;
use hyp_stub::hyp::{Hyp, Layout, Platform};
use hyp_stub::service::{Call, CallResult, FaultAction, GuestFault, HypOps, MmioVerdict, Service};
use hyp_stub::services::kernel_protect::{AssetExtents, KernelProtect};
use hyp_stub::services::mmio_guard::{MmioGuard, Policy};
use hyp_stub::stage2::{Attrs, MemType, Perms, Stage2, TableMemory, Tlb, ENTRIES, PAGE_SIZE};
use hyp_stub::vcpu::{El1Context, El1Exception};

/// Guest RAM, as the boot path leaves it: from the DTB base up to the
/// hypervisor.
pub const RAM_END: u64 = HYP_BASE;
/// The kernel image the resource manager grants as the VM's extents. Kept
/// small (64 KiB) so that a measurement costs microseconds, not
/// milliseconds, per input.
pub const IMAGE: u64 = 0x4020_0000;
/// Size of [`IMAGE`].
pub const IMAGE_SIZE: u64 = 16 * PAGE_SIZE;
/// The page where the harness seeds `kernel_asset_info` records.
pub const RECORD_PAGE: u64 = 0x4100_0000;
/// The FIXMAP_TEXT_POKE0 slot of the seeded records (arm64 6.12, 48-bit
/// VA, 4 KiB pages).
pub const FIXMAP_VA: u64 = 0xffff_7fff_fe7f_d000;
/// The guest's linear map of RAM (how the harness forms a plain kernel
/// virtual address for an IPA).
pub const LINEAR_VA: u64 = 0xffff_0000_0000_0000;
/// Where the fake table pool lives: inside the hypervisor's memory.
pub const POOL_BASE: u64 = HYP_BASE + 0x40_0000;
/// `VBAR_EL1` of the fake guest.
pub const VBAR: u64 = 0xffff_8000_0801_0000;
/// The MPIDR of the boot CPU, which runs vCPU 0.
pub const BOOT_MPIDR: u64 = 0x8000_0000;
/// The hypervisor's own entry point for CPUs it starts or wakes (its
/// `secondary_entry`): inside its memory, so never a valid guest entry.
/// The only entry point the firmware may ever be given.
pub const HYP_ENTRY: u64 = HYP_BASE + 0x1000;

/// Guest RAM and the device window, as on the `virt` board.
pub fn layout() -> Layout {
    let guest_ram = IpaRange::new(Ipa(RAM_BASE), RAM_END - RAM_BASE).expect("RAM");
    let mut devices = DeviceWindows::empty();
    // The low devices below RAM, the high PCIe ECAM and the 64-bit PCIe
    // window, as hyp-stub finds them in the `virt` board's device tree.
    for (base, size) in [
        (0, RAM_BASE),
        (0x40_1000_0000, 0x1000_0000),
        (0x80_0000_0000, 0x80_0000_0000),
    ] {
        devices.add(base, size, guest_ram).expect("window");
    }
    Layout { guest_ram, devices }
}

/// The hypervisor's own memory, which stage 2 must never map.
pub fn hyp_memory() -> IpaRange {
    IpaRange::new(Ipa(HYP_BASE), HYP_END - HYP_BASE).expect("hyp")
}

/// Stage-2 table memory with a table limit, at physical addresses inside
/// the hypervisor's region.
pub struct Pool {
    tables: Vec<Box<[u64; ENTRIES]>>,
    limit: usize,
    /// The first allocation returns the first table, which comes with
    /// the tables already under it (see [`stage2`]).
    preloaded: bool,
}

impl Pool {
    /// A pool of at most `limit` tables.
    pub fn new(limit: usize) -> Self {
        Self {
            tables: Vec::new(),
            limit,
            preloaded: false,
        }
    }
}

impl TableMemory for Pool {
    fn alloc(&mut self) -> Option<PhysAddr> {
        if self.preloaded {
            self.preloaded = false;
            return Some(PhysAddr(POOL_BASE));
        }
        if self.tables.len() >= self.limit {
            return None;
        }
        self.tables.push(Box::new([0; ENTRIES]));
        Some(PhysAddr(
            POOL_BASE + (self.tables.len() as u64 - 1) * PAGE_SIZE,
        ))
    }
    fn table(&mut self, table: PhysAddr) -> Option<&mut [u64; ENTRIES]> {
        // Only the page-aligned start of a table handed out is one. The
        // core reports anything else as an error, which the invariants
        // treat as a violation (it only follows entries it wrote).
        let offset = table.get().checked_sub(POOL_BASE)?;
        if !offset.is_multiple_of(PAGE_SIZE) {
            return None;
        }
        let i = usize::try_from(offset / PAGE_SIZE).ok()?;
        self.tables.get_mut(i).map(|t| &mut **t)
    }
}

impl TableMemory for &mut Pool {
    fn alloc(&mut self) -> Option<PhysAddr> {
        (**self).alloc()
    }
    fn table(&mut self, table: PhysAddr) -> Option<&mut [u64; ENTRIES]> {
        (**self).table(table)
    }
}

/// Guest RAM, backed page by page where something was written; the rest
/// reads as zero.
#[derive(Default)]
pub struct GuestRam {
    pages: HashMap<u64, Box<[u8; PAGE_SIZE as usize]>>,
}

static ZERO_PAGE: [u8; PAGE_SIZE as usize] = [0; PAGE_SIZE as usize];

impl GuestRam {
    fn page(&self, pa: u64) -> &[u8; PAGE_SIZE as usize] {
        self.pages.get(&(pa / PAGE_SIZE)).map_or(&ZERO_PAGE, |p| p)
    }

    /// Copies RAM at `pa` into `buf`.
    pub fn read(&self, pa: u64, buf: &mut [u8]) {
        let mut done = 0;
        while done < buf.len() {
            let at = pa + done as u64;
            let off = (at % PAGE_SIZE) as usize;
            let n = (PAGE_SIZE as usize - off).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&self.page(at)[off..off + n]);
            done += n;
        }
    }

    /// Writes `bytes` at `pa`.
    pub fn write(&mut self, pa: u64, bytes: &[u8]) {
        let mut done = 0;
        while done < bytes.len() {
            let at = pa + done as u64;
            let off = (at % PAGE_SIZE) as usize;
            let n = (PAGE_SIZE as usize - off).min(bytes.len() - done);
            let page = self
                .pages
                .entry(at / PAGE_SIZE)
                .or_insert_with(|| Box::new([0; PAGE_SIZE as usize]));
            page[off..off + n].copy_from_slice(&bytes[done..done + n]);
            done += n;
        }
    }

    /// The little-endian word at `pa`.
    pub fn word(&self, pa: u64) -> u32 {
        let mut w = [0; 4];
        self.read(pa, &mut w);
        u32::from_le_bytes(w)
    }

    /// Feeds `len` bytes at `pa` to `sink`, page by page.
    pub fn hash(&self, pa: u64, len: u64, sink: &mut hyp_stub::sha256::Sha256) {
        let mut at = pa;
        let end = pa + len;
        while at < end {
            let off = (at % PAGE_SIZE) as usize;
            let n = (PAGE_SIZE - at % PAGE_SIZE).min(end - at) as usize;
            sink.update(&self.page(at)[off..off + n]);
            at += n as u64;
        }
    }
}

/// A block function that mixes every input word into the state. The
/// fuzz targets exercise the decisions around measurements (when, of
/// what, compared with what), not SHA-256, which has known-answer tests
/// of its own; the real one would make every input cost milliseconds.
pub fn cheap_compress(state: &mut [u32; 8], blocks: &[[u8; 64]]) {
    let mut acc = (u64::from(state[0]) << 32) | u64::from(state[1]);
    for block in blocks {
        // Eight words, unrolled: a loop here would be instrumented
        // comparison by comparison.
        let (w, _) = block.as_chunks::<8>();
        let [a, b, c, d, e, f, g, h] = [0, 1, 2, 3, 4, 5, 6, 7].map(|i| u64::from_le_bytes(w[i]));
        acc = (acc.rotate_left(7) ^ a ^ b.rotate_left(11) ^ c.rotate_left(19) ^ d.rotate_left(29))
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        acc = (acc ^ e ^ f.rotate_left(13) ^ g.rotate_left(23) ^ h.rotate_left(37))
            .wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    }
    state[0] = (acc >> 32) as u32;
    state[1] = acc as u32;
    state[2] ^= blocks.len() as u32;
}

/// One access the core asked the device model to perform.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceAccess {
    /// Where.
    pub pa: u64,
    /// How wide.
    pub width: Width,
    /// Write (else read).
    pub write: bool,
}

/// A console that keeps nothing (the core's messages are not under test
/// here, and formatting them into a growing string would dominate).
pub struct NullConsole;

impl Write for NullConsole {
    fn write_str(&mut self, _: &str) -> std::fmt::Result {
        Ok(())
    }
}

/// The fake machine.
pub struct Machine {
    /// Guest RAM.
    pub ram: GuestRam,
    /// What device reads return.
    pub device_value: u64,
    /// Device accesses since the last [`Machine::take_events`].
    pub accesses: Vec<DeviceAccess>,
    /// Instructions written on the guest's behalf since the last
    /// [`Machine::take_events`].
    pub insn_writes: Vec<(u64, u32)>,
    /// 64-bit words of data (ftrace literals) written on the guest's
    /// behalf since the last [`Machine::take_events`].
    pub data_writes: Vec<(u64, u64)>,
    /// Firmware calls (function ID and arguments) since the last
    /// [`Machine::take_events`].
    pub firmware: Vec<(u32, [u64; 3])>,
    /// Exceptions injected since the last [`Machine::take_events`].
    pub injected: Vec<El1Exception>,
    /// Totals over the whole input.
    pub totals: Totals,
    /// What the firmware answers to CPU_ON.
    pub cpu_on_result: u64,
    /// Whether the firmware refuses power-down suspends and CPU_OFF.
    pub power_refused: bool,
    /// The CPU the guest's next exit comes from.
    pub mpidr: u64,
    console: NullConsole,
}

/// Counts over a whole input, for the counter invariants.
#[derive(Clone, Copy, Debug, Default)]
pub struct Totals {
    /// Device accesses.
    pub accesses: u64,
    /// Instructions written.
    pub insn_writes: u64,
    /// Exceptions injected.
    pub injected: u64,
    /// CPUs started.
    pub cpus_started: u64,
}

impl Default for Machine {
    fn default() -> Self {
        Self::new()
    }
}

impl Machine {
    /// A machine with empty RAM.
    pub fn new() -> Self {
        Self {
            ram: GuestRam::default(),
            device_value: 0,
            accesses: Vec::new(),
            insn_writes: Vec::new(),
            data_writes: Vec::new(),
            firmware: Vec::new(),
            injected: Vec::new(),
            totals: Totals::default(),
            cpu_on_result: 0,
            power_refused: false,
            mpidr: BOOT_MPIDR,
            console: NullConsole,
        }
    }

    /// Forgets the per-exit event lists.
    pub fn take_events(&mut self) {
        self.accesses.clear();
        self.insn_writes.clear();
        self.data_writes.clear();
        self.firmware.clear();
        self.injected.clear();
    }

    fn check_ram(&self, pa: u64, len: u64, what: &str) {
        let ok = pa >= RAM_BASE && pa.checked_add(len).is_some_and(|e| e <= RAM_END);
        assert!(ok, "{what} outside guest RAM: {pa:#x}+{len:#x}");
    }
}

impl Tlb for Machine {
    fn invalidate_ipa(&mut self, _: Ipa) {}
    fn invalidate_all(&mut self) {}
}

impl Platform for Machine {
    fn sha256_compress(&self) -> hyp_stub::sha256::CompressFn {
        cheap_compress
    }
    fn hash_ram(&mut self, pa: PhysAddr, len: u64, sink: &mut hyp_stub::sha256::Sha256) {
        self.check_ram(pa.get(), len, "hash");
        self.ram.hash(pa.get(), len, sink);
    }
    fn read_ram(&mut self, pa: PhysAddr, buf: &mut [u8]) {
        self.check_ram(pa.get(), buf.len() as u64, "read");
        self.ram.read(pa.get(), buf);
    }
    fn write_insn(&mut self, pa: PhysAddr, insn: u32) {
        self.check_ram(pa.get(), 4, "instruction write");
        self.ram.write(pa.get(), &insn.to_le_bytes());
        self.insn_writes.push((pa.get(), insn));
        self.totals.insn_writes += 1;
    }
    fn write_u64(&mut self, pa: PhysAddr, value: u64) {
        self.check_ram(pa.get(), 8, "data write");
        assert_eq!(pa.get() % 8, 0, "misaligned data write");
        self.ram.write(pa.get(), &value.to_le_bytes());
        self.data_writes.push((pa.get(), value));
    }
    fn firmware_call(&mut self, fid: u32, args: [u64; 3]) -> [u64; 4] {
        // Every call succeeds (AFFINITY_INFO: still on) unless power
        // management is refused; the harness models the calls that do
        // not return as the EL2 code does.
        self.firmware.push((fid, args));
        let power = fid == hyp_stub::smccc::psci::CPU_OFF
            || (fid == hyp_stub::smccc::psci::CPU_SUSPEND_64 && args[1] != 0);
        if self.power_refused && power {
            return [hyp_stub::smccc::psci::DENIED, 0, 0, 0];
        }
        [0, 0, 0, 0]
    }
    fn start_cpu(&mut self, mpidr: u64, slot: usize) -> u64 {
        // As the EL2 board does: CPU_ON to the firmware with the
        // hypervisor's own entry point, recorded like any firmware call.
        self.firmware.push((
            hyp_stub::smccc::psci::CPU_ON_64,
            [mpidr, HYP_ENTRY, slot as u64],
        ));
        self.totals.cpus_started += 1;
        self.cpu_on_result
    }
    fn current_mpidr(&self) -> u64 {
        self.mpidr
    }
    fn mmio_read(&mut self, pa: PhysAddr, width: Width) -> u64 {
        self.accesses.push(DeviceAccess {
            pa: pa.get(),
            width,
            write: false,
        });
        self.totals.accesses += 1;
        self.device_value
    }
    fn mmio_write(&mut self, pa: PhysAddr, width: Width, _value: u64) {
        self.accesses.push(DeviceAccess {
            pa: pa.get(),
            width,
            write: true,
        });
        self.totals.accesses += 1;
    }
    fn el1_context(&self) -> El1Context {
        El1Context {
            vbar: VBAR,
            sctlr: 1 << 23,
        }
    }
    fn set_el1_exception(&mut self, e: &El1Exception) {
        self.injected.push(*e);
        self.totals.injected += 1;
    }
    fn console(&mut self) -> &mut dyn Write {
        &mut self.console
    }
}

/// A service the core holds and the harness can look at: every trait
/// method goes straight to the inner service.
pub struct Shared<S>(pub Arc<Mutex<S>>);

impl<S> Shared<S> {
    /// Wraps `s`.
    pub fn new(s: S) -> Self {
        Self(Arc::new(Mutex::new(s)))
    }
    /// Locks the service (never held across an exit).
    pub fn lock(&self) -> MutexGuard<'_, S> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<S: Service> Service for Shared<S> {
    fn name(&self) -> &'static str {
        self.lock().name()
    }
    fn function_ids(&self) -> &'static [u32] {
        self.lock().function_ids()
    }
    fn init(&mut self, ops: &mut dyn HypOps) -> Result<(), hyp_stub::service::ServiceError> {
        self.lock().init(ops)
    }
    fn call(&mut self, call: &Call, ops: &mut dyn HypOps) -> CallResult {
        self.lock().call(call, ops)
    }
    fn immediate_call(
        &mut self,
        imm: u16,
        call: &Call,
        ops: &mut dyn HypOps,
    ) -> Option<CallResult> {
        self.lock().immediate_call(imm, call, ops)
    }
    fn guest_fault(&mut self, fault: &GuestFault<'_>, ops: &mut dyn HypOps) -> FaultAction {
        self.lock().guest_fault(fault, ops)
    }
    fn mmio_access(&mut self, ipa: Ipa, write: bool) -> MmioVerdict {
        self.lock().mmio_access(ipa, write)
    }
    fn has_idle_work(&self) -> bool {
        self.lock().has_idle_work()
    }
    fn idle(&mut self, ops: &mut dyn HypOps) {
        self.lock().idle(ops)
    }
    fn write_stats(&self, out: &mut dyn Write) -> std::fmt::Result {
        self.lock().write_stats(out)
    }
}

/// The extents the harness's resource manager grants.
pub fn extents() -> AssetExtents {
    let image = IpaRange::new(Ipa(IMAGE), IMAGE_SIZE).expect("image");
    AssetExtents {
        rx: image,
        ro: image,
        rw: image,
    }
}

/// How the hypervisor was booted.
#[derive(Clone, Copy, Debug)]
pub struct Boot {
    /// The MMIO guard's policy.
    pub policy: Policy,
    /// Stage-2 tables available (2 hold guest RAM as blocks).
    pub tables: usize,
}

/// Room for kernel protect's patch sites, per input (small: the
/// harness's TEXT is a few pages).
pub struct SiteStore {
    jump: Vec<JumpSite>,
    ftrace: Vec<FtraceSite>,
}

impl Default for SiteStore {
    fn default() -> Self {
        Self {
            jump: vec![JumpSite::EMPTY; 64],
            ftrace: vec![FtraceSite::EMPTY; 64],
        }
    }
}

impl SiteStore {
    /// The storage, lent to one service.
    pub fn storage(&mut self) -> SiteStorage<'_> {
        SiteStorage {
            jump: &mut self.jump,
            ftrace: &mut self.ftrace,
        }
    }
}

/// Handles on the services the core holds.
pub struct Services<'m> {
    /// The MMIO guard.
    pub guard: Shared<MmioGuard>,
    /// Kernel protect.
    pub kp: Shared<KernelProtect<'m>>,
}

impl Services<'static> {
    /// Both services, kernel protect granted its extents as the boot path
    /// does, without room for patch sites.
    pub fn new(policy: Policy) -> Self {
        Services::with_sites(policy, SiteStorage::none())
    }
}

impl<'m> Services<'m> {
    /// Both services, kernel protect granted its extents as the boot path
    /// does and its patch sites kept in `sites`. kprobes are refused:
    /// every instruction the hypervisor writes is then a jump label's,
    /// which the invariants check exactly.
    pub fn with_sites(policy: Policy, sites: SiteStorage<'m>) -> Self {
        let mut kp = KernelProtect::with_sites(sites);
        kp.set_policy(PatchPolicy {
            ftrace: true,
            kprobes: false,
        });
        kp.protect_vm_assets(extents()).expect("first grant");
        Self {
            guard: Shared::new(MmioGuard::new(policy)),
            kp: Shared::new(kp),
        }
    }

    /// A second handle on each, to register with the core.
    pub fn handles(&self) -> (Shared<MmioGuard>, Shared<KernelProtect<'m>>) {
        (
            Shared(Arc::clone(&self.guard.0)),
            Shared(Arc::clone(&self.kp.0)),
        )
    }
}

/// Guest RAM mapped at stage 2, RWX, as the boot path maps it.
///
/// The tables are built by `Stage2::map` once per process; each input
/// then starts from a copy of them (the pool hands the copies out as its
/// first allocations, so `Stage2::new` takes the root back), because
/// walking 496 blocks under the fuzzer's instrumentation would cost more
/// than the rest of an input.
pub fn stage2(tables: usize) -> Option<Stage2<Pool>> {
    static BUILT: std::sync::OnceLock<Vec<Box<[u64; ENTRIES]>>> = std::sync::OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let mut pool = Pool::new(2);
        {
            let mut s2 = Stage2::new(&mut pool).expect("root");
            let ram = layout().guest_ram;
            s2.map(
                ram,
                PhysAddr(ram.start().get()),
                Attrs {
                    mem: MemType::Normal,
                    perms: Perms::RWX,
                },
                &mut Machine::new(),
            )
            .expect("guest RAM fits in two tables");
            let mut blocks = 0;
            s2.for_each_leaf(|_, _, _| blocks += 1)
                .expect("the tables just built walk");
            assert_eq!(blocks, 496, "guest RAM is mapped with 2 MiB blocks");
            assert_eq!(s2.root(), PhysAddr(POOL_BASE));
        }
        pool.tables
    });
    if tables < built.len() {
        return None;
    }
    let mut pool = Pool::new(tables);
    pool.tables = built.clone();
    pool.preloaded = true;
    Stage2::new(pool).ok()
}

/// The core, with both services registered and started.
pub fn boot<'s, 'm: 's>(
    boot: &Boot,
    guard: &'s mut Shared<MmioGuard>,
    kp: &'s mut Shared<KernelProtect<'m>>,
    discovery: &'s hyp_stub::hyp::Discovery,
    plat: &mut Machine,
) -> Hyp<'s, Pool> {
    let mut reg = hyp_stub::service::Registry::new();
    reg.register(guard).expect("register guard");
    reg.register(kp).expect("register kernel protect");
    let s2 = stage2(boot.tables.max(2)).expect("guest RAM fits in two tables");
    let mut hyp = Hyp::new(layout(), reg, s2, discovery);
    hyp.start_services(plat).expect("services start");
    hyp
}
