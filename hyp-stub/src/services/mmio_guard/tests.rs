// SPDX-License-Identifier: GPL-2.0 OR MIT
//! Host tests of the MMIO guard service: every call, every bad input.

use super::*;
use crate::devices::DeviceWindows;
use crate::service::OpsError;
use crate::stage2::Perms;

/// The low devices, and a 64-bit PCI window above the stage-2 IPA space
/// (as on QEMU `virt`).
static WINDOWS: std::sync::LazyLock<DeviceWindows> = std::sync::LazyLock::new(|| {
    let mut d = DeviceWindows::empty();
    let memory = IpaRange::new(Ipa(0x4000_0000), 0x4000_0000).unwrap();
    d.add(0, 0x4000_0000, memory).unwrap();
    d.add(HIGH_MMIO, 0x80_0000_0000, memory).unwrap();
    d
});
const HIGH_MMIO: u64 = 0x80_0000_0000;

struct Ops;
impl HypOps for Ops {
    fn read_guest(&mut self, _: Ipa, _: &mut [u8]) -> Result<(), OpsError> {
        Err(OpsError::NotGuestRam)
    }
    fn hash_guest(
        &mut self,
        _: Ipa,
        _: u64,
        _: &mut crate::sha256::Sha256,
    ) -> Result<(), OpsError> {
        Err(OpsError::NotGuestRam)
    }
    fn write_guest_u64(&mut self, _: Ipa, _: u64) -> Result<(), OpsError> {
        Err(OpsError::NotGuestRam)
    }
    fn write_guest_insn(&mut self, _: Ipa, _: u32) -> Result<(), OpsError> {
        Err(OpsError::NotGuestRam)
    }
    fn set_perms(&mut self, _: IpaRange, _: Perms) -> Result<(), OpsError> {
        Err(OpsError::NotGuestRam)
    }
    fn log(&mut self, _: core::fmt::Arguments<'_>) {}
    fn guest_ram(&self) -> IpaRange {
        IpaRange::new(Ipa(0x4000_0000), 0x3e00_0000).unwrap()
    }
    fn device_windows(&self) -> &DeviceWindows {
        &WINDOWS
    }
}

fn guard(policy: Policy) -> MmioGuard {
    let mut g = MmioGuard::new(policy);
    g.init(&mut Ops).unwrap();
    g
}

fn call(g: &mut MmioGuard, fid: u32, args: [u64; 3]) -> u64 {
    g.call(
        &Call {
            fid,
            args: [args[0], args[1], args[2], 0, 0, 0],
        },
        &mut Ops,
    )[0]
}

#[test]
fn enforces_only_after_enroll_unless_from_boot() {
    let mut g = guard(Policy::AfterEnroll);
    assert_eq!(g.mmio_access(Ipa(0x0900_0000), false), MmioVerdict::Allow);
    assert_eq!(call(&mut g, abi::ENROLL, [0; 3]), 0);
    assert_eq!(g.mmio_access(Ipa(0x0900_0000), false), MmioVerdict::Deny);
    assert_eq!(call(&mut g, abi::MAP, [0x0900_0000, 0, 0]), 0);
    assert_eq!(g.mmio_access(Ipa(0x0900_0ffc), true), MmioVerdict::Allow);
    assert_eq!(g.mmio_access(Ipa(0x0900_1000), true), MmioVerdict::Deny);
    let mut g = guard(Policy::FromBoot);
    assert_eq!(g.mmio_access(Ipa(0x0900_0000), false), MmioVerdict::Deny);
    assert_eq!(g.counters.blocked, 1);
}

#[test]
fn discovery_calls_answer_the_granule() {
    let mut g = guard(Policy::AfterEnroll);
    assert_eq!(call(&mut g, abi::HYP_MEMINFO, [0; 3]), 4096);
    assert_eq!(call(&mut g, abi::INFO, [0; 3]), 4096);
    assert!(!g.function_ids().contains(&abi::MEM_SHARE));
    assert_eq!(
        call(&mut g, abi::MEM_SHARE, [0x4100_0000, 0, 0]),
        abi::RET_NOT_SUPPORTED
    );
    let mut g = guard(Policy::FromBoot);
    assert!(g.function_ids().contains(&abi::MEM_SHARE));
    assert_eq!(call(&mut g, abi::MEM_SHARE, [0x4100_0000, 0, 0]), 0);
    assert_eq!(
        call(&mut g, abi::MEM_UNSHARE, [0x0900_0000, 0, 0]),
        abi::RET_INVALID_PARAMETER
    );
}

#[test]
fn ranges_coalesce_and_split() {
    let mut g = guard(Policy::AfterEnroll);
    assert_eq!(call(&mut g, abi::MAP_RANGE, [0x0800_0000, 0x1_0000, 0]), 0);
    assert_eq!(call(&mut g, abi::MAP, [0x0801_0000, 0, 0]), 0);
    assert_eq!(
        call(&mut g, abi::MAP, [0x0801_0000, 0, 0]),
        0,
        "idempotent, as upstream expects"
    );
    assert_eq!(g.ranges.len(), 1);
    assert_eq!(g.granules(), 17);
    assert_eq!(call(&mut g, abi::UNMAP, [0x0800_4000, 0, 0]), 0);
    assert_eq!(g.ranges.len(), 2);
    assert!(!g.is_guarded(Ipa(0x0800_4000)) && g.is_guarded(Ipa(0x0800_5000)));
    assert_eq!(call(&mut g, abi::UNMAP_RANGE, [0x0800_0000, 0x4000, 0]), 0);
    assert_eq!(call(&mut g, abi::UNMAP_RANGE, [0x0800_5000, 0xc000, 0]), 0);
    assert_eq!(g.granules(), 0);
}

#[test]
fn is_guarded_matches_the_granules_mapped() {
    let mut g = guard(Policy::AfterEnroll);
    // Granule numbers from 0x0800_0000; three ranges with gaps between.
    let mapped = [(0u64, 1u64), (3, 5), (9, 10)];
    // Mapped last first, so the order of the calls is not the order of
    // the ranges.
    for &(s, e) in mapped.iter().rev() {
        let args = [0x0800_0000 + s * 0x1000, (e - s) * 0x1000, 0];
        assert_eq!(call(&mut g, abi::MAP_RANGE, args), 0);
    }
    for n in 0..12u64 {
        let want = mapped.iter().any(|&(s, e)| s <= n && n < e);
        for off in [0, 0xffc] {
            let ipa = Ipa(0x0800_0000 + n * 0x1000 + off);
            assert_eq!(g.is_guarded(ipa), want, "{ipa:?}");
        }
    }
    assert!(!g.is_guarded(Ipa(0x07ff_fffc)));
}

#[test]
fn device_windows_above_the_stage2_ipa_space_can_be_guarded() {
    let mut g = guard(Policy::AfterEnroll);
    assert_eq!(call(&mut g, abi::ENROLL, [0; 3]), 0);
    let bar = HIGH_MMIO + 0x4000;
    assert_eq!(call(&mut g, abi::MAP_RANGE, [bar, 0x4000, 0]), 0);
    assert!(g.is_guarded(Ipa(bar)) && g.is_guarded(Ipa(bar + 0x3ffc)));
    assert!(!g.is_guarded(Ipa(HIGH_MMIO)) && !g.is_guarded(Ipa(bar + 0x4000)));
    assert_eq!(g.mmio_access(Ipa(bar + 8), false), MmioVerdict::Allow);
    assert_eq!(g.mmio_access(Ipa(HIGH_MMIO), false), MmioVerdict::Deny);
}

#[test]
fn bad_inputs_get_invalid_parameter_and_are_counted() {
    let mut g = guard(Policy::AfterEnroll);
    let bad = [
        (abi::MAP, [0x0900_0004, 0, 0]),                   // unaligned
        (abi::MAP, [0x4000_0000, 0, 0]),                   // guest RAM
        (abi::MAP, [0x7e00_0000, 0, 0]),                   // hypervisor memory
        (abi::MAP, [0x40_0000_0000, 0, 0]),                // between device windows
        (abi::MAP, [1 << 40, 0, 0]),                       // past the last window
        (abi::MAP_RANGE, [HIGH_MMIO - 0x1000, 0x2000, 0]), // from a gap into one
        (abi::MAP, [0x0900_0000, 8, 0]),                   // attributes
        (abi::MAP_RANGE, [0x0900_0000, 0, 0]),             // empty
        (abi::MAP_RANGE, [0x0900_0000, 0x1001, 0]),        // not a granule multiple
        (abi::MAP_RANGE, [!0xfff, 0x2000, 0]),             // wraps
        (abi::MAP_RANGE, [0x3fff_f000, 0x2000, 0]),        // runs into RAM
        (abi::UNMAP, [0x0900_0000, 0, 0]),                 // not mapped
        (abi::UNMAP, [0x0900_0001, 0, 0]),                 // unaligned
    ];
    for (fid, args) in bad {
        assert_eq!(
            call(&mut g, fid, args),
            abi::RET_INVALID_PARAMETER,
            "{fid:#x} {args:x?}"
        );
    }
    assert_eq!(g.counters.refused + g.counters.not_mapped, bad.len() as u64);
    assert_eq!(g.granules(), 0);
}

#[test]
fn state_is_bounded_and_full_is_an_error() {
    let mut g = guard(Policy::AfterEnroll);
    for i in 0..MAX_RANGES as u64 {
        assert_eq!(call(&mut g, abi::MAP, [i * 0x2000, 0, 0]), 0);
    }
    assert_eq!(
        call(&mut g, abi::MAP, [0x1000_0000, 0, 0]),
        abi::RET_INVALID_PARAMETER
    );
    // Filling a gap merges two ranges, which needs no new slot.
    assert_eq!(call(&mut g, abi::MAP, [0x1000, 0, 0]), 0);
    assert_eq!(g.counters.full, 1);
}

fn summary(g: &MmioGuard) -> std::string::String {
    let mut out = std::string::String::new();
    g.write_summary(&mut out).unwrap();
    out
}

#[test]
fn summary_says_whether_mmio_is_guarded() {
    let mut g = guard(Policy::AfterEnroll);
    assert!(summary(&g).contains("not enrolled"));
    assert_eq!(call(&mut g, abi::ENROLL, [0; 3]), 0);
    assert_eq!(call(&mut g, abi::MAP_RANGE, [0x0900_0000, 0x2000, 0]), 0);
    assert_eq!(g.mmio_access(Ipa(0x0a00_0000), false), MmioVerdict::Deny);
    let s = summary(&g);
    assert!(
        s.contains("enrolled, enforcing; 1 ranges (2 granules) guarded"),
        "{s}"
    );
    assert!(s.contains("1 unguarded accesses blocked"), "{s}");
    assert!(summary(&guard(Policy::FromBoot)).contains("enforcing from boot"));
}

#[test]
fn guarded_ranges_and_enrollment_are_visible_to_inspection() {
    let mut g = guard(Policy::AfterEnroll);
    assert!(!g.enrolled() && g.guarded().next().is_none());
    assert_eq!(call(&mut g, abi::MAP, [0x0900_0000, 0, 0]), 0);
    assert_eq!(call(&mut g, abi::MAP_RANGE, [0x0900_1000, 0x2000, 0]), 0);
    assert_eq!(call(&mut g, abi::MAP, [0x0a00_0000, 0, 0]), 0);
    let ranges: Vec<(u64, u64)> = g
        .guarded()
        .map(|r| (r.start().get(), r.end().get()))
        .collect();
    assert_eq!(
        ranges,
        [(0x0900_0000, 0x0900_3000), (0x0a00_0000, 0x0a00_1000)]
    );
    assert_eq!(call(&mut g, abi::ENROLL, [0; 3]), 0);
    assert!(g.enrolled());
}
