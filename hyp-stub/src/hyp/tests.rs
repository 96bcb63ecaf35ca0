// SPDX-License-Identifier: GPL-2.0 OR MIT
//! Host tests of the core against a fake platform and fake services.

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
    /// Whether it has a CPU of the hypervisor's own to hash on.
    hyp_cpu: bool,
    background: Option<Vec<(PhysAddr, u64)>>,
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
    fn start_background_hash(&mut self, spans: &[(PhysAddr, u64)]) -> bool {
        if self.hyp_cpu && self.background.is_none() {
            self.background = Some(spans.to_vec());
            return true;
        }
        false
    }
    fn finish_background_hash(&mut self) -> Option<[u8; 32]> {
        let spans = self.background.take()?;
        let mut h = crate::sha256::Sha256::new(crate::sha256::compress_soft);
        for (pa, len) in spans {
            self.hash_ram(pa, len, &mut h);
        }
        Some(h.finalize())
    }
    fn start_cpu(&mut self, mpidr: u64, slot: usize) -> u64 {
        self.firmware.push((0xc400_0003, [mpidr, slot as u64, 0]));
        0
    }
    fn current_mpidr(&self) -> u64 {
        0x8000_0000
    }
    fn read_ram(&mut self, pa: PhysAddr, buf: &mut [u8]) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = self.ram.get(&(pa.get() + i as u64)).copied().unwrap_or(0);
        }
    }
    fn write_insn(&mut self, pa: PhysAddr, insn: u32) {
        self.insns.push((pa, insn));
    }
    fn firmware_call(&mut self, fid: u32, args: [u64; 3]) -> [u64; 4] {
        self.firmware.push((fid, args));
        [0x1_0001, 0, 0, 0]
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
    Hyp::new(layout(), reg, s2)
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
fn services_are_dispatched_and_advertised() {
    let mut fake = Fake {
        fail: false,
        deny_at: None,
        calls: 0,
    };
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
        deny_at: None,
        calls: 0,
    };
    let mut twin = Fake {
        fail: false,
        deny_at: None,
        calls: 0,
    };
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
fn psci_is_forwarded_and_power_off_prints_stats() {
    let mut hyp = hyp_with(Registry::new());
    let mut plat = FakePlatform::default();
    let mut v = vcpu_with(&[u64::from(psci::VERSION)]);
    hyp.handle_sync(Esr(SMC), 0, 0, &mut v, &mut plat);
    assert_eq!(v.regs.x[0], 0x1_0001);
    let mut v = vcpu_with(&[u64::from(psci::FEATURES), 0x8000_0000]);
    hyp.handle_sync(Esr(SMC), 0, 0, &mut v, &mut plat);
    assert_eq!(v.regs.x[0], 0, "SMCCC_VERSION is advertised");
    let mut v = vcpu_with(&[u64::from(psci::SYSTEM_OFF)]);
    hyp.handle_sync(Esr(SMC), 0, 0, &mut v, &mut plat);
    assert_eq!(
        plat.firmware.iter().map(|f| f.0).collect::<Vec<_>>(),
        [psci::VERSION, psci::SYSTEM_OFF]
    );
    assert!(plat.console.contains("hyp-stub stats:\nexits_total=3\n"));
    assert!(plat.console.contains("call_0x84000008=1\n"));
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

#[test]
fn mmio_is_emulated_on_the_device() {
    let mut hyp = hyp_with(Registry::new());
    let mut plat = FakePlatform {
        read_value: 0x80,
        ..Default::default()
    };
    // ldrsb w3, [uart+0x18]
    let mut v = vcpu_with(&[0, 0, 0, 0xdead]);
    hyp.handle_sync(
        dabt(0, 3, false, true, false),
        0xffff_0018,
        hpfar(0x0900_0018),
        &mut v,
        &mut plat,
    );
    assert_eq!(plat.reads, [(PhysAddr(0x0900_0018), Width::Byte)]);
    assert_eq!(v.regs.x[3], 0xffff_ff80, "sign-extended into a W register");
    assert_eq!(v.pc, 0x1004);
    // str x5, [gicd]
    let mut v = vcpu_with(&[0, 0, 0, 0, 0, 0x1234_5678_9abc_def0]);
    hyp.handle_sync(
        dabt(3, 5, true, false, true),
        0,
        hpfar(0x0800_0000),
        &mut v,
        &mut plat,
    );
    assert_eq!(
        plat.writes,
        [(PhysAddr(0x0800_0000), Width::Double, 0x1234_5678_9abc_def0)]
    );
    // strh wzr
    hyp.handle_sync(
        dabt(1, 31, true, false, false),
        0x2,
        hpfar(0x0800_0000),
        &mut v,
        &mut plat,
    );
    assert_eq!(plat.writes[1], (PhysAddr(0x0800_0002), Width::Half, 0));
    assert_eq!(hyp.stats.mmio_emulated, 3);
    assert!(plat.injected.is_none());
}

#[test]
fn mmio_that_cannot_be_emulated_aborts_the_guest() {
    let mut deny = Fake {
        fail: false,
        deny_at: Some(Ipa(0x0a00_0000)),
        calls: 0,
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
    // A CPU kept for the hypervisor does not exist for the guest.
    assert!(!hyp.reserve_cpu(0), "not the boot CPU");
    assert!(!hyp.reserve_cpu(1), "not a running vCPU");
    assert!(!hyp.reserve_cpu(0x100), "not an MPIDR the core knows");
    assert!(hyp.reserve_cpu(3));
    assert!(!hyp.reserve_cpu(3), "only once");
    let before = plat.firmware.len();
    assert_eq!(
        on(&mut hyp, &mut plat, 3, 0x4020_0000),
        psci::INVALID_PARAMETERS
    );
    assert_eq!(hyp.secondary_boot(3), None);
    let mut v = vcpu_with(&[u64::from(psci::AFFINITY_INFO_64), 3, 0]);
    hyp.handle_sync(Esr(HVC), 0, 0, &mut v, &mut plat);
    assert_eq!(v.regs.x[0], psci::INVALID_PARAMETERS, "not even its state");
    assert_eq!(plat.firmware.len(), before, "nothing reached the firmware");
    let mut v = vcpu_with(&[u64::from(psci::AFFINITY_INFO_64), 1, 0]);
    hyp.handle_sync(Esr(HVC), 0, 0, &mut v, &mut plat);
    assert_eq!(
        plat.firmware.len(),
        before + 1,
        "other CPUs' states are forwarded"
    );
}

/// Asks for a background hash of `[x1, x1 + x2)` on each call, and takes
/// the digest when the guest powers off.
#[derive(Default)]
struct BackgroundHasher {
    started: Vec<Result<bool, OpsError>>,
    digest: Option<[u8; 32]>,
    finished: bool,
}

impl Service for BackgroundHasher {
    fn name(&self) -> &'static str {
        "hasher"
    }
    fn function_ids(&self) -> &'static [u32] {
        &[0xc600_0020]
    }
    fn init(&mut self, _: &mut dyn HypOps) -> Result<(), ServiceError> {
        Ok(())
    }
    fn call(&mut self, call: &Call, ops: &mut dyn HypOps) -> CallResult {
        let [start, len, count, ..] = call.args;
        let r = IpaRange::new(Ipa(start), len).unwrap();
        let spans = vec![r; count as usize];
        self.started.push(ops.hash_guest_in_background(&spans));
        [0; 4]
    }
    fn finish(&mut self, ops: &mut dyn HypOps) {
        self.finished = true;
        self.digest = ops.background_hash();
    }
}

#[test]
fn background_hashes_are_checked_and_finished_before_power_off() {
    let mut hasher = BackgroundHasher::default();
    let mut reg = Registry::new();
    reg.register(&mut hasher).unwrap();
    let mut hyp = hyp_with(reg);
    let mut plat = FakePlatform::default();
    plat.ram.insert(0x4000_0010, 0xab);
    let mut ask = |plat: &mut FakePlatform, start: u64, len: u64, count: u64| {
        let mut v = vcpu_with(&[0xc600_0020, start, len, count]);
        hyp.handle_sync(Esr(HVC), 0, 0, &mut v, plat);
    };
    ask(&mut plat, 0x4000_0000, 0x1000, 1);
    plat.hyp_cpu = true;
    ask(&mut plat, 0x7e00_0000, 0x1000, 1);
    ask(&mut plat, 0x3fff_f000, 0x2000, 1);
    ask(
        &mut plat,
        0x4000_0000,
        0x1000,
        MAX_BACKGROUND_SPANS as u64 + 1,
    );
    assert!(
        plat.background.is_none(),
        "nothing bad reached the platform"
    );
    ask(&mut plat, 0x4000_0000, 0x1000, 2);
    assert_eq!(
        plat.background,
        Some(vec![(PhysAddr(0x4000_0000), 0x1000); 2])
    );
    let mut v = vcpu_with(&[u64::from(psci::SYSTEM_OFF)]);
    hyp.handle_sync(Esr(HVC), 0, 0, &mut v, &mut plat);
    drop(hyp);
    assert_eq!(
        hasher.started,
        [
            Ok(false),
            Err(OpsError::NotGuestRam),
            Err(OpsError::NotGuestRam),
            Err(OpsError::TooManySpans),
            Ok(true)
        ]
    );
    assert!(hasher.finished);
    let mut page = [0u8; 0x1000];
    page[0x10] = 0xab;
    let mut want = crate::sha256::Sha256::new(crate::sha256::compress_soft);
    want.update(&page);
    want.update(&page);
    assert_eq!(hasher.digest, Some(want.finalize()));
}
