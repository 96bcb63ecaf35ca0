// SPDX-License-Identifier: GPL-2.0 OR MIT
//! Host tests of the core against a fake platform and fake services.

use std::boxed::Box;
use std::string::String;
use std::vec::Vec;

use super::*;
use crate::service::{CallResult, Service};
use crate::stage2::tests::FakeTables;
use crate::stage2::{Attrs, MemType};

#[derive(Default)]
struct FakePlatform {
    firmware: Vec<(u32, [u64; 3])>,
    reads: Vec<(PhysAddr, Width)>,
    writes: Vec<(PhysAddr, Width, u64)>,
    read_value: u64,
    injected: Option<El1Exception>,
    console: String,
    ram: std::collections::BTreeMap<u64, u8>,
    insns: Vec<(PhysAddr, u32)>,
    /// The MPIDR of the CPU making the calls.
    mpidr: u64,
    /// What the firmware answers (PSCI_VERSION 1.1 if `None`).
    firmware_answer: Option<u64>,
}

impl Tlb for FakePlatform {
    fn invalidate_ipa(&mut self, _: Ipa) {}
    fn invalidate_all(&mut self) {}
}

impl Platform for FakePlatform {
    fn hash_ram(&mut self, pa: PhysAddr, len: u64, sink: &mut crate::sha256::Sha256) {
        let bytes: Vec<u8> = (0..len)
            .map(|i| self.ram.get(&(pa.get() + i)).copied().unwrap_or(0))
            .collect();
        sink.update(&bytes);
    }
    fn start_cpu(&mut self, mpidr: u64, slot: usize) -> u64 {
        self.firmware.push((0xc400_0003, [mpidr, slot as u64, 0]));
        0
    }
    fn current_mpidr(&self) -> u64 {
        0x8000_0000 | self.mpidr
    }
    fn read_ram(&mut self, pa: PhysAddr, buf: &mut [u8]) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = self.ram.get(&(pa.get() + i as u64)).copied().unwrap_or(0);
        }
    }
    fn write_insn(&mut self, pa: PhysAddr, insn: u32) {
        self.insns.push((pa, insn));
    }
    fn write_u64(&mut self, pa: PhysAddr, value: u64) {
        for (i, b) in value.to_le_bytes().into_iter().enumerate() {
            self.ram.insert(pa.get() + i as u64, b);
        }
    }
    fn firmware_call(&mut self, fid: u32, args: [u64; 3]) -> [u64; 4] {
        self.firmware.push((fid, args));
        [self.firmware_answer.unwrap_or(0x1_0001), 0, 0, 0]
    }
    fn mmio_read(&mut self, pa: PhysAddr, width: Width) -> u64 {
        self.reads.push((pa, width));
        self.read_value
    }
    fn mmio_write(&mut self, pa: PhysAddr, width: Width, value: u64) {
        self.writes.push((pa, width, value));
    }
    fn el1_context(&self) -> El1Context {
        El1Context {
            vbar: 0xffff_0000_0000_0000,
            sctlr: 1 << 23,
        }
    }
    fn set_el1_exception(&mut self, e: &El1Exception) {
        self.injected = Some(*e);
    }
    fn console(&mut self) -> &mut dyn Write {
        &mut self.console
    }
}

type TestHyp<'s> = Hyp<'s, FakeTables>;

/// A core with guest RAM mapped at stage 2, as the boot path leaves it.
fn hyp_with(reg: Registry<'_>) -> TestHyp<'_> {
    let mut s2 = Stage2::new(FakeTables {
        tables: Vec::new(),
        limit: 16,
    })
    .unwrap();
    let ram = layout().guest_ram;
    s2.map(
        ram,
        PhysAddr(ram.start().get()),
        Attrs {
            mem: MemType::Normal,
            perms: Perms::RWX,
        },
        &mut FakePlatform::default(),
    )
    .unwrap();
    Hyp::new(layout(), reg, s2, Box::leak(Box::default()))
}

/// Everything below RAM is a device.
fn low_devices() -> DeviceWindows {
    let mut d = DeviceWindows::empty();
    let memory = IpaRange::new(Ipa(0x4000_0000), 0x4000_0000).unwrap();
    d.add(0, 0x4000_0000, memory).unwrap();
    d
}

fn layout() -> Layout {
    Layout {
        guest_ram: IpaRange::new(Ipa(0x4000_0000), 0x3e00_0000).unwrap(),
        devices: low_devices(),
    }
}

const HVC: u64 = 0x16 << 26 | 1 << 25;
const SMC: u64 = 0x17 << 26 | 1 << 25;
const EL1H: u64 = 0b0101;

fn vcpu_with(x: &[u64]) -> Vcpu {
    let mut v = Vcpu {
        pc: 0x1000,
        pstate: EL1H,
        ..Default::default()
    };
    v.regs.x[..x.len()].copy_from_slice(x);
    v
}

#[derive(Default)]
struct Fake {
    fail: bool,
    deny_at: Option<Ipa>,
    calls: u64,
}

impl Service for Fake {
    fn name(&self) -> &'static str {
        "fake"
    }
    fn function_ids(&self) -> &'static [u32] {
        &[0xc600_0005, 0xc600_0006]
    }
    fn init(&mut self, _: &mut dyn HypOps) -> Result<(), ServiceError> {
        if self.fail {
            Err(ServiceError::Unsupported("test"))
        } else {
            Ok(())
        }
    }
    fn call(&mut self, call: &Call, _: &mut dyn HypOps) -> CallResult {
        self.calls += 1;
        [0, call.args[0] + 1, 0, 0]
    }
    fn mmio_access(&mut self, ipa: Ipa, _: bool) -> MmioVerdict {
        if Some(ipa) == self.deny_at {
            MmioVerdict::Deny
        } else {
            MmioVerdict::Allow
        }
    }
    fn write_stats(&self, out: &mut dyn Write) -> core::fmt::Result {
        writeln!(out, "fake_calls={}", self.calls)
    }
}

#[test]
fn discovery_answers_like_kvm() {
    let mut hyp = hyp_with(Registry::new());
    let mut plat = FakePlatform::default();
    let mut v = vcpu_with(&[0x8000_0000]);
    hyp.handle_sync(Esr(SMC), 0, 0, &mut v, &mut plat);
    assert_eq!(v.regs.x[0], 0x1_0001);
    assert_eq!(v.pc, 0x1004, "SMC is skipped");
    let mut v = vcpu_with(&[0x8600_ff01]);
    hyp.handle_sync(Esr(HVC), 0, 0, &mut v, &mut plat);
    assert_eq!(v.regs.x[..4], smccc::KVM_UID);
    assert_eq!(v.pc, 0x1000, "HVC's ELR is already past the instruction");
    assert_eq!(hyp.stats.calls_of(0x8000_0000), 1);
    assert_eq!(hyp.stats.calls_of(0x8600_ff01), 1);
}

#[test]
fn discovery_is_answered_without_the_core_and_as_the_core_answers() {
    let mut fake = Fake::default();
    let mut reg = Registry::new();
    reg.register(&mut fake).unwrap();
    let unfixed = crate::hyp::Discovery::new();
    let mut v = vcpu_with(&[0x8000_0000]);
    assert!(!unfixed.try_exit(Esr(HVC), &mut v), "nothing before boot");
    let mut hyp = hyp_with(reg);
    let mut plat = FakePlatform::default();
    let discovery = hyp.discovery;
    let calls: [&[u64]; 7] = [
        &[0x8000_0000],
        &[0x8000_0001, 0x8000_0000],
        &[0x8000_0001, 0xc600_0005],
        &[0x8000_0001, 0xc600_0099],
        &[0x8000_0001, 0x8000_8000],
        &[0x8600_ff01],
        &[0x8600_0000],
    ];
    for (i, call) in calls.iter().enumerate() {
        let (esr, pc) = if i % 2 == 0 {
            (HVC, 0x1000)
        } else {
            (SMC, 0x1004)
        };
        let mut lock_free = vcpu_with(call);
        assert!(discovery.try_exit(Esr(esr), &mut lock_free), "{call:x?}");
        assert_eq!(lock_free.pc, pc, "SMC skipped, HVC already past");
        let mut core = vcpu_with(call);
        hyp.handle_sync(Esr(esr), 0, 0, &mut core, &mut plat);
        assert_eq!(lock_free.regs.x, core.regs.x, "the same answer: {call:x?}");
    }
    // Not discovery: the core's.
    for (esr, call) in [
        (HVC, &[0xc600_0006u64, 1][..]),
        (HVC, &[0x8400_0000][..]),
        (HVC | 0x6094, &[0x8000_0000][..]),
        (0x24 << 26, &[0x8000_0000][..]),
    ] {
        let mut v = vcpu_with(call);
        assert!(!discovery.try_exit(Esr(esr), &mut v), "{esr:#x} {call:x?}");
        assert_eq!(&v.regs.x[..call.len()], call, "untouched");
    }
    // Counted once each, with the core's counts.
    let all = hyp.all_stats();
    assert_eq!(all.exits_total(), 14);
    assert_eq!(all.calls_of(0x8000_0001), 8);
    assert_eq!(all.calls_of(0x8600_ff01), 2);
    assert_eq!(hyp.stats.exits_total(), 7, "the core saw only its own");
    let mut out = String::new();
    hyp.write_stats(&mut out).unwrap();
    assert!(
        out.contains("exits_total=14\nexit_hvc=8\nexit_smc=6\n"),
        "{out}"
    );
    assert!(out.contains("exits_lock_free=7\n"), "{out}");
}

#[test]
fn services_are_dispatched_and_advertised() {
    let mut fake = Fake::default();
    let mut reg = Registry::new();
    reg.register(&mut fake).unwrap();
    let mut hyp = hyp_with(reg);
    hyp.start_services(&mut FakePlatform::default()).unwrap();
    let mut plat = FakePlatform::default();
    let mut v = vcpu_with(&[0xc600_0006, 41]);
    hyp.handle_sync(Esr(HVC), 0, 0, &mut v, &mut plat);
    assert_eq!(v.regs.x[..2], [0, 42]);
    let mut v = vcpu_with(&[0x8600_0000]);
    hyp.handle_sync(Esr(HVC), 0, 0, &mut v, &mut plat);
    assert_eq!(v.regs.x[0], 1 | 1 << 5 | 1 << 6);
    let mut v = vcpu_with(&[0x8000_0001, 0xc600_0005]);
    hyp.handle_sync(Esr(HVC), 0, 0, &mut v, &mut plat);
    assert_eq!(v.regs.x[0], 0);
    let mut out = String::new();
    hyp.write_stats(&mut out).unwrap();
    assert!(
        out.starts_with("hyp-stub stats:\n") && out.ends_with("fake_calls=1\nhyp-stub stats end\n")
    );
}

#[test]
fn failing_service_is_fail_closed_and_duplicates_refused() {
    let mut bad = Fake {
        fail: true,
        ..Fake::default()
    };
    let mut twin = Fake::default();
    let mut reg = Registry::new();
    reg.register(&mut bad).unwrap();
    assert_eq!(
        reg.register(&mut twin).err(),
        Some(crate::service::RegisterError::DuplicateId(0xc600_0005))
    );
    let mut hyp = hyp_with(reg);
    assert_eq!(
        hyp.start_services(&mut FakePlatform::default()),
        Err(("fake", ServiceError::Unsupported("test")))
    );
}

#[test]
fn unknown_calls_and_immediates_are_not_supported() {
    let mut hyp = hyp_with(Registry::new());
    let mut plat = FakePlatform::default();
    for (esr, fid) in [
        (HVC, 0xc600_1234u64),
        (HVC | 0x6094, 0),
        (SMC | 1, 0x8000_0000),
        (HVC, u64::MAX),
    ] {
        let mut v = vcpu_with(&[fid]);
        hyp.handle_sync(Esr(esr), 0, 0, &mut v, &mut plat);
        assert_eq!(
            v.regs.x[0],
            smccc::NOT_SUPPORTED,
            "esr {esr:#x} fid {fid:#x}"
        );
    }
    assert_eq!(hyp.stats.calls_unsupported, 4);
    assert!(plat.firmware.is_empty());
}

#[test]
fn psci_is_answered_here_and_power_off_prints_stats() {
    let mut hyp = hyp_with(Registry::new());
    let mut plat = FakePlatform::default();
    let mut v = vcpu_with(&[u64::from(psci::VERSION)]);
    hyp.handle_sync(Esr(SMC), 0, 0, &mut v, &mut plat);
    assert_eq!(v.regs.x[0], psci::VERSION_1_1);
    let mut v = vcpu_with(&[u64::from(psci::FEATURES), u64::from(psci::CPU_ON_64)]);
    hyp.handle_sync(Esr(SMC), 0, 0, &mut v, &mut plat);
    assert_eq!(v.regs.x[0], 0, "CPU_ON is offered");
    let mut v = vcpu_with(&[u64::from(psci::SYSTEM_OFF), 7, 8, 9]);
    let next = hyp.handle_sync(Esr(SMC), 0, 0, &mut v, &mut plat);
    assert_eq!(next, Next::Guest);
    assert_eq!(
        plat.firmware,
        [(psci::SYSTEM_OFF, [0; 3])],
        "only power-off reached the firmware, without the guest's arguments"
    );
    assert!(plat.console.contains("hyp-stub stats:\nexits_total=3\n"));
    assert!(plat.console.contains("call_0x84000008=1\n"));
}

/// Issues one PSCI call by HVC from the vCPU on `plat`'s current CPU.
fn psci_call(hyp: &mut TestHyp<'_>, plat: &mut FakePlatform, x: &[u64]) -> (u64, Next) {
    let mut v = vcpu_with(x);
    let next = hyp.handle_sync(Esr(HVC), 0, 0, &mut v, plat);
    (v.regs.x[0], next)
}

#[test]
fn every_psci_function_is_in_the_allowlist_or_not_supported() {
    let mut hyp = hyp_with(Registry::new());
    let mut plat = FakePlatform::default();
    let offered = [
        psci::VERSION,
        psci::FEATURES,
        psci::CPU_SUSPEND_32,
        psci::CPU_SUSPEND_64,
        psci::CPU_OFF,
        psci::CPU_ON_32,
        psci::CPU_ON_64,
        psci::AFFINITY_INFO_32,
        psci::AFFINITY_INFO_64,
        psci::MIGRATE_INFO_TYPE,
        psci::CPU_DEFAULT_SUSPEND_32,
        psci::CPU_DEFAULT_SUSPEND_64,
        psci::SYSTEM_SUSPEND_32,
        psci::SYSTEM_SUSPEND_64,
        psci::SYSTEM_OFF,
        psci::SYSTEM_RESET,
    ];
    let mut refused = 0;
    for fid in (0x8400_0000..=0x8400_001f).chain(0xc400_0000..=0xc400_001f) {
        let (features, _) = psci_call(
            &mut hyp,
            &mut plat,
            &[u64::from(psci::FEATURES), u64::from(fid)],
        );
        if offered.contains(&fid) {
            assert_eq!(features, 0, "{fid:#x} is offered");
            continue;
        }
        assert_eq!(features, psci::NOT_SUPPORTED, "{fid:#x} is not offered");
        refused += 1;
        // Arguments that would be an entry point, a CPU and a context.
        let (x0, next) = psci_call(&mut hyp, &mut plat, &[u64::from(fid), 1, 0x4020_0000, 7]);
        assert_eq!((x0, next), (psci::NOT_SUPPORTED, Next::Guest), "{fid:#x}");
        refused += 1;
    }
    assert!(
        plat.firmware.is_empty(),
        "nothing unknown reached the firmware"
    );
    assert_eq!(hyp.stats.psci_refused, refused);
    let (x0, _) = psci_call(
        &mut hyp,
        &mut plat,
        &[
            u64::from(psci::FEATURES),
            1 << 32 | u64::from(psci::CPU_OFF),
        ],
    );
    assert_eq!(x0, 0, "an SMC32 call ignores the upper halves");
    let (x0, _) = psci_call(
        &mut hyp,
        &mut plat,
        &[u64::from(psci::FEATURES), u64::from(smccc::SMCCC_VERSION)],
    );
    assert_eq!(x0, 0, "SMCCC_VERSION is there: SMCCC 1.1 discovery");
    let (x0, _) = psci_call(&mut hyp, &mut plat, &[u64::from(psci::MIGRATE_INFO_TYPE)]);
    assert_eq!(x0, psci::MIGRATE_NOT_NEEDED);
}

#[test]
fn cpu_suspend_standby_waits_in_place_and_bad_states_are_refused() {
    let mut hyp = hyp_with(Registry::new());
    let mut plat = FakePlatform::default();
    for fid in [psci::CPU_SUSPEND_64, psci::CPU_SUSPEND_32] {
        let (x0, next) = psci_call(&mut hyp, &mut plat, &[u64::from(fid), 0x2, 0x1234, 5]);
        assert_eq!(x0, psci::SUCCESS);
        assert_eq!(
            next,
            Next::Standby(psci::PowerState::Standby(2)),
            "waits after the core is released; the entry point is not used"
        );
    }
    for bad in [1 << 24, 1 << 30, 1 << 17, u64::from(u32::MAX) + 1] {
        let (x0, next) = psci_call(
            &mut hyp,
            &mut plat,
            &[u64::from(psci::CPU_SUSPEND_64), bad, 0x4020_0000, 0],
        );
        assert_eq!(
            (x0, next),
            (psci::INVALID_PARAMETERS, Next::Guest),
            "{bad:#x}"
        );
    }
    assert!(plat.firmware.is_empty());
    assert_eq!(hyp.stats.psci_standby, 2);
    assert_eq!(hyp.stats.psci_refused, 4);
}

#[test]
fn power_down_suspends_keep_the_guests_entry_and_resume_there() {
    let mut hyp = hyp_with(Registry::new());
    let mut plat = FakePlatform::default();
    let down = psci::PowerState::PowerDown(0x1_0000);
    // Entry points the hypervisor must not wake at are refused, for each
    // call that carries one.
    for bad in [0x1000, 0x7e00_0000, 0x4020_0002, u64::MAX] {
        for x in [
            [u64::from(psci::CPU_SUSPEND_64), 0x1_0000, bad, 1],
            [u64::from(psci::CPU_DEFAULT_SUSPEND_64), bad, 1, 0],
            [u64::from(psci::SYSTEM_SUSPEND_64), bad, 1, 0],
        ] {
            let (x0, next) = psci_call(&mut hyp, &mut plat, &x);
            assert_eq!((x0, next), (psci::INVALID_ADDRESS, Next::Guest), "{x:x?}");
        }
    }
    assert_eq!(hyp.secondary_boot(0), None, "nothing recorded");
    // A power-down: the firmware will get the hypervisor's entry (the
    // caller's job); the guest's waits in the core.
    let (x0, next) = psci_call(
        &mut hyp,
        &mut plat,
        &[
            u64::from(psci::CPU_SUSPEND_64),
            0x1_0000,
            0x4020_0000,
            0xc0de,
        ],
    );
    assert_eq!(
        (x0, next),
        (
            psci::SUCCESS,
            Next::PowerDown {
                slot: 0,
                state: down
            }
        )
    );
    let (x0, _) = psci_call(
        &mut hyp,
        &mut plat,
        &[u64::from(psci::AFFINITY_INFO_64), 0, 0],
    );
    assert_eq!(x0, psci::AFFINITY_ON, "a suspended CPU is on");
    assert_eq!(hyp.secondary_boot(0), Some((0x4020_0000, 0xc0de)));
    assert_eq!(hyp.secondary_boot(0), None, "only once");
    // The 32-bit calls keep 32 bits of each argument.
    let (x0, next) = psci_call(
        &mut hyp,
        &mut plat,
        &[
            u64::from(psci::CPU_DEFAULT_SUSPEND_32),
            0xffff_ffff_4030_0000,
            0xffff_ffff_0000_0001,
        ],
    );
    assert_eq!(x0, psci::SUCCESS);
    assert_eq!(
        next,
        Next::PowerDown {
            slot: 0,
            state: psci::PowerState::CORE_POWER_DOWN
        }
    );
    assert_eq!(hyp.secondary_boot(0), Some((0x4030_0000, 1)));
    // A firmware refusal leaves the vCPU running where it was.
    let _ = psci_call(
        &mut hyp,
        &mut plat,
        &[u64::from(psci::SYSTEM_SUSPEND_64), 0x4020_0000, 3],
    );
    hyp.suspend_failed(0);
    assert_eq!(hyp.secondary_boot(0), None);
    assert!(
        plat.firmware.is_empty(),
        "no guest entry point reached the firmware"
    );
    assert_eq!(hyp.stats.psci_power_downs, 3);
}

#[test]
fn system_suspend_is_denied_while_another_vcpu_runs() {
    let mut hyp = hyp_with(Registry::new());
    let mut plat = FakePlatform::default();
    let (x0, _) = psci_call(
        &mut hyp,
        &mut plat,
        &[u64::from(psci::CPU_ON_64), 1, 0x4020_0000, 0],
    );
    assert_eq!(x0, psci::SUCCESS);
    let suspend = [u64::from(psci::SYSTEM_SUSPEND_64), 0x4020_0000, 0];
    assert_eq!(
        psci_call(&mut hyp, &mut plat, &suspend),
        (psci::DENIED, Next::Guest),
        "CPU 1 is pending"
    );
    assert!(hyp.secondary_boot(1).is_some());
    assert_eq!(
        psci_call(&mut hyp, &mut plat, &suspend).0,
        psci::DENIED,
        "CPU 1 is on"
    );
    // CPU 1 turns itself off: the core says so, the caller does it.
    let mut cpu1 = FakePlatform {
        mpidr: 1,
        ..FakePlatform::default()
    };
    assert_eq!(
        psci_call(&mut hyp, &mut cpu1, &[u64::from(psci::CPU_OFF)]),
        (psci::SUCCESS, Next::CpuOff { slot: 1 })
    );
    assert!(cpu1.firmware.is_empty(), "not under the core");
    let (x0, next) = psci_call(&mut hyp, &mut plat, &suspend);
    assert_eq!(x0, psci::SUCCESS);
    assert!(matches!(next, Next::PowerDown { slot: 0, .. }));
    assert_eq!(hyp.secondary_boot(0), Some((0x4020_0000, 0)));
    assert_eq!(psci_call(&mut hyp, &mut plat, &suspend).0, psci::SUCCESS);
}

#[test]
fn cpu_off_then_on_again_and_a_refused_off() {
    let mut hyp = hyp_with(Registry::new());
    let mut plat = FakePlatform::default();
    let mut cpu1 = FakePlatform {
        mpidr: 1,
        ..FakePlatform::default()
    };
    let on = [u64::from(psci::CPU_ON_64), 1, 0x4020_0000, 0];
    assert_eq!(psci_call(&mut hyp, &mut plat, &on).0, psci::SUCCESS);
    assert!(hyp.secondary_boot(1).is_some());
    assert_eq!(
        psci_call(&mut hyp, &mut cpu1, &[u64::from(psci::CPU_OFF)]).1,
        Next::CpuOff { slot: 1 }
    );
    // Off in the core; the firmware says whether it has really stopped.
    plat.firmware_answer = Some(psci::AFFINITY_ON);
    let info = [u64::from(psci::AFFINITY_INFO_64), 1, 0];
    assert_eq!(psci_call(&mut hyp, &mut plat, &info).0, psci::AFFINITY_ON);
    plat.firmware_answer = Some(psci::AFFINITY_OFF);
    assert_eq!(psci_call(&mut hyp, &mut plat, &info).0, psci::AFFINITY_OFF);
    plat.firmware_answer = None;
    assert_eq!(
        psci_call(
            &mut hyp,
            &mut plat,
            &[u64::from(psci::AFFINITY_INFO_64), 1, 1]
        )
        .0,
        psci::INVALID_PARAMETERS,
        "level 1"
    );
    assert_eq!(
        psci_call(&mut hyp, &mut plat, &on).0,
        psci::SUCCESS,
        "started again"
    );
    assert_eq!(
        psci_call(&mut hyp, &mut plat, &info).0,
        psci::AFFINITY_ON_PENDING
    );
    assert!(hyp.secondary_boot(1).is_some());
    let _ = psci_call(&mut hyp, &mut cpu1, &[u64::from(psci::CPU_OFF)]);
    hyp.cpu_off_failed(1);
    assert_eq!(
        psci_call(&mut hyp, &mut plat, &on).0,
        psci::ALREADY_ON,
        "still running"
    );
}

/// ESR of a data abort from EL1 with a valid syndrome.
fn dabt(width: u64, reg: u64, write: bool, sign: bool, sf: bool) -> Esr {
    Esr(0x24 << 26
        | 1 << 25
        | 1 << 24
        | width << 22
        | u64::from(sign) << 21
        | reg << 16
        | u64::from(sf) << 15
        | u64::from(write) << 6
        | 0x07)
}

fn hpfar(ipa: u64) -> u64 {
    (ipa >> 12) << 4
}

/// One exit as the EL2 entry code runs it: the core decides under its
/// lock; an allowed MMIO access is performed on the device after.
fn exit_with_device(
    hyp: &mut TestHyp<'_>,
    esr: Esr,
    far: u64,
    ipa: u64,
    v: &mut Vcpu,
    plat: &mut FakePlatform,
) -> Next {
    let next = hyp.handle_sync(esr, far, hpfar(ipa), v, plat);
    if let Next::Mmio(access) = next {
        assert!(
            plat.reads.is_empty() && plat.writes.is_empty(),
            "the core touches no device itself"
        );
        let (reads, writes) = (plat.reads.len(), plat.writes.len());
        access.perform(v, plat);
        assert_eq!(plat.reads.len() + plat.writes.len(), reads + writes + 1);
    }
    next
}

#[test]
fn mmio_is_emulated_on_the_device_outside_the_core() {
    let mut hyp = hyp_with(Registry::new());
    let mut plat = FakePlatform {
        read_value: 0x80,
        ..Default::default()
    };
    // ldrsb w3, [uart+0x18]
    let mut v = vcpu_with(&[0, 0, 0, 0xdead]);
    let next = exit_with_device(
        &mut hyp,
        dabt(0, 3, false, true, false),
        0xffff_0018,
        0x0900_0018,
        &mut v,
        &mut plat,
    );
    assert!(matches!(next, Next::Mmio(_)));
    assert_eq!(plat.reads, [(PhysAddr(0x0900_0018), Width::Byte)]);
    assert_eq!(v.regs.x[3], 0xffff_ff80, "sign-extended into a W register");
    assert_eq!(v.pc, 0x1004);
    // str x5, [gicd]
    let mut v = vcpu_with(&[0, 0, 0, 0, 0, 0x1234_5678_9abc_def0]);
    let mut dev = FakePlatform::default();
    exit_with_device(
        &mut hyp,
        dabt(3, 5, true, false, true),
        0,
        0x0800_0000,
        &mut v,
        &mut dev,
    );
    assert_eq!(
        dev.writes,
        [(PhysAddr(0x0800_0000), Width::Double, 0x1234_5678_9abc_def0)]
    );
    // strh wzr
    let mut dev = FakePlatform::default();
    exit_with_device(
        &mut hyp,
        dabt(1, 31, true, false, false),
        0x2,
        0x0800_0000,
        &mut v,
        &mut dev,
    );
    assert_eq!(dev.writes, [(PhysAddr(0x0800_0002), Width::Half, 0)]);
    assert_eq!(hyp.stats.mmio_emulated, 3);
    assert!(plat.injected.is_none() && dev.injected.is_none());
}

#[test]
fn mmio_that_cannot_be_emulated_aborts_the_guest() {
    let mut deny = Fake {
        deny_at: Some(Ipa(0x0a00_0000)),
        ..Fake::default()
    };
    let mut reg = Registry::new();
    reg.register(&mut deny).unwrap();
    let mut hyp = hyp_with(reg);
    let cases = [
        (
            Esr(0x24 << 26 | 1 << 25 | 1 << 6 | 0x07),
            0x0900_0000,
            "no valid syndrome",
        ),
        (dabt(2, 0, true, false, false), 0x0900_0002, "misaligned"),
        (
            dabt(2, 0, false, false, false),
            0x7e00_0000,
            "hypervisor memory",
        ),
        (
            dabt(2, 0, false, false, false),
            0x1_0000_0000,
            "outside the device windows",
        ),
        (
            dabt(2, 0, false, false, false),
            0x0a00_0000,
            "refused by a service",
        ),
    ];
    for (i, (esr, ipa, why)) in cases.into_iter().enumerate() {
        let mut plat = FakePlatform::default();
        let mut v = vcpu_with(&[]);
        hyp.handle_sync(
            esr,
            0xffff_8000_0000_0000 | (ipa & 0xfff),
            hpfar(ipa),
            &mut v,
            &mut plat,
        );
        let e = plat.injected.unwrap_or_else(|| panic!("{why}: no abort"));
        assert_eq!(e.esr >> 26, 0x25, "{why}");
        assert_eq!(e.esr & 0x3f, 0x10, "{why}");
        assert_eq!(e.elr, 0x1000, "{why}");
        assert_eq!(v.pc, 0xffff_0000_0000_0200, "{why}");
        assert!(plat.reads.is_empty() && plat.writes.is_empty(), "{why}");
        assert_eq!(hyp.stats.aborts_injected, i as u64 + 1);
    }
    assert_eq!(hyp.stats.mmio_refused, 5);
}

/// A guest CPU that touched guest RAM while another CPU had its stage-2
/// entry invalid (break-before-make) retries the access: no abort.
#[test]
fn translation_faults_on_mapped_guest_ram_are_retried() {
    let mut hyp = hyp_with(Registry::new());
    let ram = 0x4025_aecc;
    let iabt = |fsc: u64| Esr(0x20 << 26 | 1 << 25 | fsc);
    let s1ptw = 1 << 7;
    let cases = [
        (iabt(0x07), "instruction fetch"),
        (dabt(2, 0, false, false, false), "data read"),
        (
            Esr(dabt(2, 0, false, false, false).0 | s1ptw),
            "stage-1 walk",
        ),
        // What QEMU reported for an instruction fetch's stage-1 walk.
        (
            iabt(s1ptw | 0x2b),
            "stage-1 walk, translation fault level -1",
        ),
    ];
    for (i, (esr, what)) in cases.into_iter().enumerate() {
        let mut plat = FakePlatform::default();
        let mut v = vcpu_with(&[]);
        hyp.handle_sync(esr, 0xffff_8000_8005_aecc, hpfar(ram), &mut v, &mut plat);
        assert!(plat.injected.is_none(), "{what}");
        assert_eq!(v.pc, 0x1000, "{what}: the access is retried");
        assert_eq!(hyp.stats.ram_faults_retried, i as u64 + 1, "{what}");
    }
    // A permission fault is not a race: refused as before.
    let mut plat = FakePlatform::default();
    let mut v = vcpu_with(&[]);
    hyp.handle_sync(
        iabt(0x0f),
        0xffff_8000_8005_aecc,
        hpfar(ram),
        &mut v,
        &mut plat,
    );
    assert!(plat.injected.is_some(), "permission fault");
    // Nor is a translation fault on guest RAM that is still unmapped.
    let page = IpaRange::new(Ipa(ram & !0xfff), 0x1000).unwrap();
    hyp.stage2
        .unmap(page, &mut FakePlatform::default())
        .unwrap();
    let mut plat = FakePlatform::default();
    let mut v = vcpu_with(&[]);
    hyp.handle_sync(
        iabt(0x07),
        0xffff_8000_8005_aecc,
        hpfar(ram),
        &mut v,
        &mut plat,
    );
    assert!(plat.injected.is_some(), "unmapped");
    assert_eq!(hyp.stats.ram_faults_retried, 4);
}

#[test]
fn other_traps_inject_exceptions() {
    let mut hyp = hyp_with(Registry::new());
    let mut plat = FakePlatform::default();
    let mut v = vcpu_with(&[]);
    hyp.handle_sync(Esr(0x18 << 26 | 1 << 25), 0, 0, &mut v, &mut plat);
    assert_eq!(plat.injected.unwrap().esr >> 26, 0);
    let mut v = vcpu_with(&[]);
    hyp.handle_sync(
        Esr(0x20 << 26 | 1 << 25 | 0x07),
        0x5000,
        0,
        &mut v,
        &mut plat,
    );
    assert_eq!(plat.injected.unwrap().esr >> 26, 0x21);
    let mut v = vcpu_with(&[]);
    hyp.handle_sync(Esr(0x3f << 26), 0, 0, &mut v, &mut plat);
    assert_eq!(hyp.stats.undefs_injected, 2);
    assert_eq!(hyp.stats.exits_total(), 3);
}

/// A deterministic generator, so the robustness test needs no crates.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 ^ (self.0 >> 29)
    }
}

/// Whatever a guest puts in its registers, syndromes and fault addresses,
/// the core (with both real services registered, in every state) returns
/// without panicking, answers every call and accounts for every exit.
#[test]
fn random_guest_input_never_panics() {
    use crate::services::kernel_protect::{AssetExtents, KernelProtect};
    use crate::services::mmio_guard::{MmioGuard, Policy};
    let interesting_fids: [u64; 16] = [
        0x8000_0000,
        0x8000_0001,
        0x8600_ff01,
        0x8600_0000,
        0x8400_000a,
        0xc400_0003,
        0xc600_0002,
        0xc600_0005,
        0xc600_0006,
        0xc600_0007,
        0xc600_0008,
        0xc600_000a,
        0xc600_000b,
        0xc606_005f,
        0xc606_0060,
        0xc606_0061,
    ];
    let classes: [u64; 8] = [0x00, 0x01, 0x16, 0x17, 0x18, 0x20, 0x24, 0x3f];
    for seed in 0..40 {
        let mut rng = Lcg(seed);
        let mut guard = MmioGuard::new(if seed % 2 == 0 {
            Policy::AfterEnroll
        } else {
            Policy::FromBoot
        });
        let mut kp = KernelProtect::new();
        let image = IpaRange::new(Ipa(0x4020_0000), 0x80_0000).unwrap();
        kp.protect_vm_assets(AssetExtents {
            rx: image,
            ro: image,
            rw: image,
        })
        .unwrap();
        let mut reg = Registry::new();
        reg.register(&mut guard).unwrap();
        reg.register(&mut kp).unwrap();
        let mut hyp = hyp_with(reg);
        let mut plat = FakePlatform::default();
        hyp.start_services(&mut plat).unwrap();
        for step in 0..2000u64 {
            let mut v = Vcpu {
                pc: rng.next(),
                pstate: rng.next() & 0x3ff,
                ..Default::default()
            };
            for x in v.regs.x.iter_mut() {
                *x = match rng.next() % 4 {
                    0 => rng.next(),
                    1 => 0x4000_0000 + rng.next() % 0x4000_0000,
                    2 => rng.next() % 0x1_0000,
                    _ => 0,
                };
            }
            if rng.next().is_multiple_of(2) {
                v.regs.x[0] = interesting_fids[(rng.next() % 16) as usize];
            }
            let class = classes[(rng.next() % 8) as usize];
            let esr = Esr(class << 26
                | (rng.next() & 0x1ff_ffff)
                | if rng.next().is_multiple_of(2) {
                    1 << 25
                } else {
                    0
                });
            let far = rng.next();
            let hpfar = if rng.next().is_multiple_of(2) {
                rng.next()
            } else {
                ((0x4000_0000 + rng.next() % 0x8000_0000) >> 12) << 4
            };
            hyp.handle_sync(esr, far, hpfar, &mut v, &mut plat);
            assert_eq!(hyp.stats.exits_total(), step + 1);
        }
        let mut out = String::new();
        hyp.write_stats(&mut out).unwrap();
        assert!(out.ends_with("hyp-stub stats end\n"));
    }
}

#[test]
fn cpu_on_is_checked_forwarded_with_the_hypervisors_entry_and_completed() {
    let mut hyp = hyp_with(Registry::new());
    let mut plat = FakePlatform::default();
    let on = |hyp: &mut TestHyp<'_>, plat: &mut FakePlatform, target: u64, entry: u64| {
        let mut v = vcpu_with(&[u64::from(psci::CPU_ON_64), target, entry, 0xc0de]);
        hyp.handle_sync(Esr(HVC), 0, 0, &mut v, plat);
        v.regs.x[0]
    };
    assert_eq!(
        on(&mut hyp, &mut plat, 0x100, 0x4020_0000),
        psci::INVALID_PARAMETERS,
        "Aff1 != 0"
    );
    assert_eq!(
        on(&mut hyp, &mut plat, 9, 0x4020_0000),
        psci::INVALID_PARAMETERS,
        "beyond MAX_CPUS"
    );
    assert_eq!(
        on(&mut hyp, &mut plat, 1, 0x7e00_0000),
        psci::INVALID_ADDRESS,
        "entry in hypervisor memory"
    );
    assert_eq!(
        on(&mut hyp, &mut plat, 1, 0x4020_0002),
        psci::INVALID_ADDRESS,
        "misaligned entry"
    );
    assert_eq!(
        on(&mut hyp, &mut plat, 0, 0x4020_0000),
        psci::ALREADY_ON,
        "the boot CPU"
    );
    assert!(plat.firmware.is_empty(), "nothing reached the firmware");
    assert_eq!(on(&mut hyp, &mut plat, 1, 0x4020_0000), 0);
    assert_eq!(
        plat.firmware,
        [(0xc400_0003, [1, 1, 0])],
        "forwarded for slot 1, with our entry"
    );
    assert_eq!(on(&mut hyp, &mut plat, 1, 0x4020_0000), psci::ON_PENDING);
    assert_eq!(hyp.secondary_boot(1), Some((0x4020_0000, 0xc0de)));
    assert_eq!(hyp.secondary_boot(1), None, "only once");
    assert_eq!(on(&mut hyp, &mut plat, 1, 0x4020_0000), psci::ALREADY_ON);
    assert_eq!(hyp.secondary_boot(5), None);
    let before = plat.firmware.len();
    let mut v = vcpu_with(&[u64::from(psci::AFFINITY_INFO_64), 1, 0]);
    hyp.handle_sync(Esr(HVC), 0, 0, &mut v, &mut plat);
    assert_eq!(v.regs.x[0], psci::AFFINITY_ON);
    assert_eq!(
        plat.firmware.len(),
        before,
        "a running CPU's state is known"
    );
}

/// Has `left` units of work for the guest's idle time, one per idle exit.
#[derive(Default)]
struct IdleWorker {
    left: u32,
    done: u32,
}

impl Service for IdleWorker {
    fn name(&self) -> &'static str {
        "idle"
    }
    fn function_ids(&self) -> &'static [u32] {
        &[0xc600_0020]
    }
    fn init(&mut self, _: &mut dyn HypOps) -> Result<(), ServiceError> {
        Ok(())
    }
    fn call(&mut self, call: &Call, _: &mut dyn HypOps) -> CallResult {
        self.left += call.args[0] as u32;
        [0; 4]
    }
    fn has_idle_work(&self) -> bool {
        self.left != 0
    }
    fn idle(&mut self, _: &mut dyn HypOps) {
        assert!(self.left != 0, "only asked while it has work");
        self.left -= 1;
        self.done += 1;
    }
}

#[test]
fn a_trapped_wfi_gives_idle_time_to_the_service_with_work_and_completes() {
    /// ESR of a trapped WFI (EC 0x01, IL).
    const WFI: u64 = (0x01 << 26) | (1 << 25);
    let mut worker = IdleWorker::default();
    let mut reg = Registry::new();
    reg.register(&mut worker).unwrap();
    let mut hyp = hyp_with(reg);
    let mut plat = FakePlatform::default();
    assert!(!hyp.wants_idle_exits(), "no work: WFI does not trap");
    let mut v = vcpu_with(&[0xc600_0020, 2]);
    hyp.handle_sync(Esr(HVC), 0, 0, &mut v, &mut plat);
    assert!(hyp.wants_idle_exits());
    for pc in [0x1000u64, 0x2000, 0x3000] {
        let mut v = vcpu_with(&[]);
        v.pc = pc;
        assert_eq!(
            hyp.handle_sync(Esr(WFI), 0, 0, &mut v, &mut plat),
            Next::Guest
        );
        assert_eq!(v.pc, pc + 4, "the WFI completes; nothing is injected");
    }
    assert!(!hyp.wants_idle_exits(), "the work is done");
    assert!(plat.injected.is_none());
    let mut stats = String::new();
    hyp.write_stats(&mut stats).unwrap();
    assert!(stats.contains("exit_idle=3\n"), "{stats}");
    drop(hyp);
    assert_eq!(worker.done, 2, "one unit per idle exit, none without work");
}

#[test]
fn power_off_prints_the_summary_above_the_stats_block() {
    let mut hyp = hyp_with(Registry::new());
    let mut plat = FakePlatform::default();
    let mut v = vcpu_with(&[u64::from(psci::SYSTEM_OFF)]);
    hyp.handle_sync(Esr(HVC), 0, 0, &mut v, &mut plat);
    let summary = plat.console.find("pvguard summary:\n").unwrap();
    let stats = plat.console.find("hyp-stub stats:\n").unwrap();
    assert!(summary < stats, "{}", plat.console);
    assert!(
        plat.console[summary..stats].contains("  hypervisor:     1 exits; 0 MMIO accesses refused")
    );
}

/// Asks to see a RAM fault again `left` times, then emulates it.
struct Deferring {
    left: u32,
}

impl Service for Deferring {
    fn name(&self) -> &'static str {
        "deferring"
    }
    fn function_ids(&self) -> &'static [u32] {
        &[]
    }
    fn init(&mut self, _: &mut dyn HypOps) -> Result<(), ServiceError> {
        Ok(())
    }
    fn call(&mut self, _: &Call, _: &mut dyn HypOps) -> CallResult {
        [smccc::NOT_SUPPORTED, 0, 0, 0]
    }
    fn guest_fault(&mut self, _: &GuestFault<'_>, _: &mut dyn HypOps) -> FaultAction {
        if self.left == 0 {
            return FaultAction::Emulated;
        }
        self.left -= 1;
        FaultAction::Retry
    }
}

#[test]
fn a_fault_a_service_defers_is_re_executed_not_injected() {
    let mut svc = Deferring { left: 2 };
    let mut reg = Registry::new();
    reg.register(&mut svc).unwrap();
    let mut hyp = hyp_with(reg);
    let mut plat = FakePlatform::default();
    // A permission fault (DFSC 0x0f), so it is not taken for a race with
    // a block split.
    let esr = Esr(dabt(2, 1, true, false, false).0 & !0x3f | 0x0f);
    let ipa = 0x4020_0000u64;
    for _ in 0..2 {
        let mut v = vcpu_with(&[0, 0xdead]);
        let next = hyp.handle_sync(esr, ipa, (ipa >> 12) << 4, &mut v, &mut plat);
        assert_eq!(next, Next::Guest);
        assert_eq!(v.pc, 0x1000, "the store runs again");
        assert!(plat.injected.is_none(), "no abort");
    }
    let mut v = vcpu_with(&[0, 0xdead]);
    let _ = hyp.handle_sync(esr, ipa, (ipa >> 12) << 4, &mut v, &mut plat);
    assert_eq!(v.pc, 0x1004, "emulated at last");
    assert_eq!(hyp.stats.ram_faults_deferred, 2);
    assert_eq!(hyp.stats.ram_faults_emulated, 1);
    assert_eq!(hyp.stats.ram_faults_refused, 0);
}

/// Refuses every RAM fault, recoverably or not.
struct Refusing {
    recoverable: bool,
}

impl Service for Refusing {
    fn name(&self) -> &'static str {
        "refusing"
    }
    fn function_ids(&self) -> &'static [u32] {
        &[]
    }
    fn init(&mut self, _: &mut dyn HypOps) -> Result<(), ServiceError> {
        Ok(())
    }
    fn call(&mut self, _: &Call, _: &mut dyn HypOps) -> CallResult {
        [smccc::NOT_SUPPORTED, 0, 0, 0]
    }
    fn guest_fault(&mut self, _: &GuestFault<'_>, _: &mut dyn HypOps) -> FaultAction {
        if self.recoverable {
            FaultAction::RefusedRecoverable
        } else {
            FaultAction::Refused
        }
    }
}

#[test]
fn a_recoverable_refusal_is_a_permission_fault_at_the_va() {
    let esr = Esr(dabt(2, 1, true, false, false).0 & !0x3f | 0x0f);
    let ipa = 0x4020_0234u64;
    let va = 0xffff_7fff_fe7f_d234u64;
    for (recoverable, fsc) in [(true, 0x0f), (false, 0x10)] {
        let mut svc = Refusing { recoverable };
        let mut reg = Registry::new();
        reg.register(&mut svc).unwrap();
        let mut hyp = hyp_with(reg);
        let mut plat = FakePlatform::default();
        let mut v = vcpu_with(&[0, 0xdead]);
        v.pstate = 0b00101; // EL1h
        let _ = hyp.handle_sync(esr, va, (ipa >> 12) << 4, &mut v, &mut plat);
        let e = plat.injected.expect("injected");
        assert_eq!(e.esr >> 26, 0x25, "data abort, same EL");
        assert_eq!(e.esr & 0x3f, fsc, "recoverable: {recoverable}");
        assert_ne!(e.esr & (1 << 6), 0, "WnR");
        assert_eq!(e.far, va);
        assert_eq!(hyp.stats.aborts_injected, 1);
        assert_eq!(hyp.stats.ram_faults_refused, 1);
    }
}

/// A service answering `ids`.
struct Ids(&'static [u32]);

impl Service for Ids {
    fn name(&self) -> &'static str {
        "ids"
    }
    fn function_ids(&self) -> &'static [u32] {
        self.0
    }
    fn init(&mut self, _: &mut dyn HypOps) -> Result<(), ServiceError> {
        Ok(())
    }
    fn call(&mut self, _: &Call, _: &mut dyn HypOps) -> CallResult {
        [0; 4]
    }
}

#[test]
fn the_registry_keeps_the_function_ids_discovery_can_answer_for() {
    static LOW: [u32; 40] = {
        let mut a = [0; 40];
        let mut i = 0;
        while i < 40 {
            a[i] = 0xc600_1000 + i as u32;
            i += 1;
        }
        a
    };
    static HIGH: [u32; 25] = {
        let mut a = [0; 25];
        let mut i = 0;
        while i < 25 {
            a[i] = 0xc600_2000 + i as u32;
            i += 1;
        }
        a
    };
    let (mut low, mut high, mut fits) = (Ids(&LOW), Ids(&HIGH), Ids(&HIGH[..24]));
    let mut reg = Registry::new();
    reg.register(&mut low).unwrap();
    assert_eq!(
        reg.register(&mut high).err(),
        Some(crate::service::RegisterError::TooManyIds),
        "65 IDs"
    );
    reg.register(&mut fits).unwrap();
    let hyp = hyp_with(reg);
    let mut v = vcpu_with(&[0x8000_0001, 0xc600_2017]);
    assert!(hyp.discovery.try_exit(Esr(HVC), &mut v));
    assert_eq!(v.regs.x[0], 0, "the 64th ID is known");
}
