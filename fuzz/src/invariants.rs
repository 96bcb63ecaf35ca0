// SPDX-License-Identifier: GPL-2.0 OR MIT
//! What must hold after every input, whatever the guest did. A violation
//! panics: libFuzzer reports it as a crash with the input that caused it.

use guest_kp::abi::RegionType;
use guest_kp::record::Layout;
use hyp_stub::addr::{Ipa, IpaRange};
use hyp_stub::hyp::Hyp;
use hyp_stub::services::kernel_protect::KernelProtect;
use hyp_stub::services::mmio_guard::MmioGuard;
use hyp_stub::smccc::psci::{self, PowerState};
use hyp_stub::stage2::{MemType, Perms};

use crate::machine::{extents, hyp_memory, layout, Pool, HYP_ENTRY};

/// TEXT as kernel protect maps it: read and execute at EL1 only.
pub const TEXT_PERMS: Perms = Perms::READ.union(Perms::EXEC_EL1);

/// The permissions stage 2 must give `ty` once protected.
pub fn protected_perms(ty: RegionType) -> Perms {
    match ty {
        RegionType::Text => TEXT_PERMS,
        RegionType::Rodata => Perms::R_EL0X,
        _ => Perms::RW,
    }
}

/// One stage-2 leaf.
#[derive(Clone, Copy, Debug)]
pub struct Leaf {
    /// IPAs it maps.
    pub range: IpaRange,
    /// Where to.
    pub pa: u64,
    /// With which permissions.
    pub perms: Perms,
    /// Memory type.
    pub mem: MemType,
}

/// The guest's stage 2 as runs of leaves that are contiguous in IPA and
/// output, with the same attributes, in IPA order (a few runs rather than
/// a thousand leaves: the checks run after every input). Tables that do
/// not walk (an entry leading outside the table pool) are a violation.
pub fn leaves(hyp: &mut Hyp<'_, Pool>) -> Vec<Leaf> {
    let mut out: Vec<Leaf> = Vec::with_capacity(16);
    let walked = hyp.for_each_stage2_leaf(|range, pa, attrs| {
        if let Some(last) = out.last_mut() {
            let joins = last.range.end() == range.start()
                && last.pa.checked_add(last.range.size()) == Some(pa.get())
                && last.perms == attrs.perms
                && last.mem == attrs.mem;
            if joins {
                last.range = IpaRange::new(last.range.start(), last.range.size() + range.size())
                    .expect("contiguous");
                return;
            }
        }
        out.push(Leaf {
            range,
            pa: pa.get(),
            perms: attrs.perms,
            mem: attrs.mem,
        })
    });
    if let Err(e) = walked {
        panic!("the stage-2 tables do not walk: {e:?}");
    }
    out
}

/// Every call that reached the firmware is one the hypervisor makes on
/// its own terms, never a guest's call passed through: CPU_ON and
/// power-down CPU_SUSPEND carry the hypervisor's own entry point
/// ([`HYP_ENTRY`]), a standby CPU_SUSPEND none, and the argument-less
/// calls no arguments. A guest's entry point reaching the firmware would
/// wake a CPU at EL2 in guest code.
pub fn check_firmware_calls(calls: &[(u32, [u64; 3])]) {
    for &(fid, args) in calls {
        let ok = match fid {
            psci::CPU_ON_64 => args[1] == HYP_ENTRY,
            psci::CPU_SUSPEND_64 => match PowerState::decode(args[0]) {
                Some(PowerState::PowerDown(_)) => args[1] == HYP_ENTRY,
                Some(PowerState::Standby(_)) => args[1..] == [0, 0],
                None => false,
            },
            psci::AFFINITY_INFO_64 => args[1..] == [0, 0],
            psci::CPU_OFF | psci::SYSTEM_OFF | psci::SYSTEM_RESET => args == [0; 3],
            _ => false,
        };
        assert!(
            ok,
            "firmware got {fid:#x} with {args:#x?} (a guest's call passed through)"
        );
    }
}

/// Stage 2 maps exactly guest RAM, identity, as normal memory, never the
/// hypervisor's memory; the kernel image has exactly the permissions its
/// protection state calls for; and no page of it is both writable and
/// executable at EL1.
///
/// Outside the reported image, guest RAM stays RWX: the permissions
/// service that would make the rest of RAM non-executable at EL1 (the
/// design's code-integrity section) does not exist yet, so W^X is
/// checked where the hypervisor has promised it.
pub fn check_stage2(leaves: &[Leaf], kp: &KernelProtect<'_>) {
    let ram = layout().guest_ram;
    let hyp = hyp_memory();
    let mut next = ram.start().get();
    let protected = kp.is_protected().then(|| kp.reported_layout()).flatten();
    for l in leaves {
        let r = l.range;
        assert_eq!(
            r.start().get(),
            next,
            "stage 2 leaves a hole or overlaps: {l:?}"
        );
        next = r.end().get();
        assert_eq!(
            l.pa,
            r.start().get(),
            "stage 2 is not an identity map: {l:?}"
        );
        assert!(
            !r.overlaps(&hyp) && !hyp.contains(Ipa(l.pa)),
            "stage 2 maps hypervisor memory: {l:?}"
        );
        assert!(ram.covers(&r), "stage 2 maps outside guest RAM: {l:?}");
        assert_eq!(l.mem, MemType::Normal, "guest RAM mapped as device: {l:?}");
        check_run_perms(l, protected.as_ref());
    }
    assert_eq!(next, ram.end().get(), "stage 2 does not cover guest RAM");
}

/// Every piece of the run `l` between two region boundaries has the
/// permissions of the region it lies in (RWX outside them).
fn check_run_perms(l: &Leaf, protected: Option<&Layout>) {
    // Reported regions lie in the extents (checked by `check_layout`):
    // RAM outside them keeps the boot path's RWX.
    let image = extents().rx;
    let Some(layout) = protected.filter(|_| image.overlaps(&l.range)) else {
        assert_eq!(
            l.perms,
            Perms::RWX,
            "permissions changed where nothing is protected: {l:?}"
        );
        return;
    };
    let (start, end) = (l.range.start().get(), l.range.end().get());
    let mut cuts = vec![start, end];
    for ty in RegionType::IPA {
        if let Some(span) = layout.span(ty) {
            cuts.extend(
                [span.start(), span.end()]
                    .into_iter()
                    .filter(|&c| start < c && c < end),
            );
        }
    }
    cuts.sort_unstable();
    for piece in cuts.windows(2) {
        let (a, b) = (piece[0], piece[1]);
        if a == b {
            continue;
        }
        let expected = layout.region_of(a).map_or(Perms::RWX, protected_perms);
        assert_eq!(
            l.perms, expected,
            "wrong permissions for {a:#x}..{b:#x} ({l:?}) under {layout:?}"
        );
        if layout.region_of(a).is_some() {
            assert!(
                !l.perms.contains(Perms::WRITE | Perms::EXEC_EL1),
                "kernel image page writable and EL1-executable at {a:#x}"
            );
        }
    }
}

/// A reported layout lies in the extents the resource manager granted.
pub fn check_layout(kp: &KernelProtect<'_>) {
    let Some(l) = kp.reported_layout() else {
        return;
    };
    let x = extents();
    assert!(
        x.rx.covers(&l.text().into()),
        "TEXT outside its extent: {l:?}"
    );
    assert!(
        x.ro.covers(&l.rodata().into()),
        "RODATA outside its extent: {l:?}"
    );
    assert!(x.rw.covers(&l.data().into()) && x.rw.covers(&l.bss().into()));
}

/// Sorted, disjoint, half-open ranges: the union of what the guest
/// mapped, computed independently of the service's own bookkeeping.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeSet(pub Vec<(u64, u64)>);

impl RangeSet {
    /// Adds `[s, e)`.
    pub fn add(&mut self, s: u64, e: u64) {
        if s >= e {
            return;
        }
        let mut out = Vec::with_capacity(self.0.len() + 1);
        let (mut ns, mut ne) = (s, e);
        for &(a, b) in &self.0 {
            if b < ns || a > ne {
                out.push((a, b));
            } else {
                ns = ns.min(a);
                ne = ne.max(b);
            }
        }
        out.push((ns, ne));
        out.sort_unstable();
        self.0 = out;
    }

    /// Removes `[s, e)`.
    pub fn remove(&mut self, s: u64, e: u64) {
        let mut out = Vec::with_capacity(self.0.len() + 1);
        for &(a, b) in &self.0 {
            if b <= s || a >= e {
                out.push((a, b));
                continue;
            }
            if a < s {
                out.push((a, s));
            }
            if e < b {
                out.push((e, b));
            }
        }
        self.0 = out;
    }

    /// Whether `x` is in the set.
    pub fn contains(&self, x: u64) -> bool {
        self.0.iter().any(|&(a, b)| a <= x && x < b)
    }
}

/// The guard's ranges are inside the device window, never RAM, sorted,
/// disjoint and coalesced, and equal `expected`.
pub fn check_guard(guard: &MmioGuard, expected: &RangeSet) {
    let window = layout().devices;
    let ram = layout().guest_ram;
    let got: Vec<(u64, u64)> = guard
        .guarded()
        .map(|r| (r.start().get(), r.end().get()))
        .collect();
    for (i, &(s, e)) in got.iter().enumerate() {
        let r = IpaRange::new(Ipa(s), e - s).expect("non-empty");
        assert!(
            window.covers(&r),
            "guarded range outside the window: {s:#x}..{e:#x}"
        );
        assert!(!ram.overlaps(&r), "guarded range in RAM: {s:#x}..{e:#x}");
        if let Some(&(_, prev_end)) = i.checked_sub(1).and_then(|j| got.get(j)) {
            assert!(
                prev_end < s,
                "guarded ranges unsorted or not coalesced: {got:x?}"
            );
        }
    }
    assert_eq!(
        got, expected.0,
        "the guarded set is not the union of the live mappings"
    );
}

#[cfg(test)]
mod tests {
    //! Controls: each invariant fails on the state it exists to catch.

    use super::*;
    use crate::machine::{Services, IMAGE};
    use guest_kp::record::KernelAssetInfo;
    use hyp_stub::boot::{HYP_BASE, RAM_BASE};
    use hyp_stub::services::mmio_guard::Policy;

    fn run(start: u64, end: u64, pa: u64, perms: Perms) -> Leaf {
        Leaf {
            range: IpaRange::new(Ipa(start), end - start).unwrap(),
            pa,
            perms,
            mem: MemType::Normal,
        }
    }

    fn booted() -> Vec<Leaf> {
        vec![run(RAM_BASE, HYP_BASE, RAM_BASE, Perms::RWX)]
    }

    fn unprotected() -> KernelProtect<'static> {
        KernelProtect::new()
    }

    fn hvc(hyp: &mut Hyp<'_, Pool>, plat: &mut crate::machine::Machine, x: [u64; 2]) -> u64 {
        let mut v = hyp_stub::vcpu::Vcpu::default();
        v.regs.x[..2].copy_from_slice(&x);
        let next = hyp.handle_sync(hyp_stub::esr::Esr(0x16 << 26), 0, 0, &mut v, plat);
        assert_eq!(next, hyp_stub::hyp::Next::Guest);
        v.regs.x[0]
    }

    /// Kernel protect with TEXT at the image's first page, RODATA, DATA
    /// and BSS a page each after it, protected; and stage 2 as it is.
    fn protected() -> (Services<'static>, Vec<Leaf>) {
        let s = Services::new(Policy::AfterEnroll);
        let (mut g, mut k) = s.handles();
        let mut plat = crate::machine::Machine::new();
        let boot = crate::machine::Boot {
            policy: Policy::AfterEnroll,
            tables: 3,
        };
        let discovery = hyp_stub::hyp::Discovery::new();
        let mut hyp = crate::machine::boot(&boot, &mut g, &mut k, &discovery, &mut plat);
        let mut rec = KernelAssetInfo::new();
        for (i, ty) in RegionType::IPA.into_iter().enumerate() {
            rec.set_region(
                ty,
                guest_kp::record::Region::new(IMAGE + i as u64 * 0x1000, 0x1000),
            );
        }
        let fixmap = guest_kp::record::Region::new(crate::machine::FIXMAP_VA, 0x1000);
        rec.set_region(RegionType::FixmapTextPoke0, fixmap);
        plat.ram.write(crate::machine::RECORD_PAGE, &rec.to_bytes());
        let compact = u64::from(guest_kp::abi::ASSET_INFO_COMPACT);
        assert_eq!(
            hvc(&mut hyp, &mut plat, [compact, crate::machine::RECORD_PAGE]),
            0
        );
        let enable = u64::from(guest_kp::abi::ENABLE_VM_PROTECTION);
        assert_eq!(hvc(&mut hyp, &mut plat, [enable, 0]), 0);
        let l = leaves(&mut hyp);
        drop(hyp);
        (s, l)
    }

    #[test]
    fn protection_as_applied_passes() {
        let (s, l) = protected();
        check_stage2(&l, &s.kp.lock());
        assert!(l.iter().any(|l| l.perms == TEXT_PERMS), "{l:?}");
    }

    #[test]
    #[should_panic(expected = "wrong permissions")]
    fn writable_text_is_caught() {
        let (s, mut l) = protected();
        let text = l.iter_mut().find(|l| l.perms == TEXT_PERMS).unwrap();
        text.perms = Perms::RWX;
        check_stage2(&l, &s.kp.lock());
    }

    #[test]
    #[should_panic(expected = "wrong permissions")]
    fn unprotected_text_is_caught() {
        let (s, _) = protected();
        check_stage2(&booted(), &s.kp.lock());
    }

    #[test]
    fn the_boot_mapping_passes() {
        check_stage2(&booted(), &unprotected());
    }

    #[test]
    #[should_panic(expected = "hypervisor memory")]
    fn mapping_hypervisor_memory_is_caught() {
        let mut l = booted();
        l[0] = run(RAM_BASE, HYP_BASE, RAM_BASE, Perms::RWX);
        l.push(run(HYP_BASE, HYP_BASE + 0x1000, HYP_BASE, Perms::RWX));
        check_stage2(&l, &unprotected());
    }

    #[test]
    #[should_panic(expected = "identity")]
    fn a_remapped_page_is_caught() {
        let l = vec![
            run(RAM_BASE, IMAGE, RAM_BASE, Perms::RWX),
            run(IMAGE, IMAGE + 0x1000, HYP_BASE, Perms::RWX),
            run(IMAGE + 0x1000, HYP_BASE, IMAGE + 0x1000, Perms::RWX),
        ];
        check_stage2(&l, &unprotected());
    }

    #[test]
    #[should_panic(expected = "hole")]
    fn an_unmapped_page_is_caught() {
        let l = vec![
            run(RAM_BASE, IMAGE, RAM_BASE, Perms::RWX),
            run(IMAGE + 0x1000, HYP_BASE, IMAGE + 0x1000, Perms::RWX),
        ];
        check_stage2(&l, &unprotected());
    }

    #[test]
    #[should_panic(expected = "nothing is protected")]
    fn a_permission_change_while_unprotected_is_caught() {
        let l = vec![
            run(RAM_BASE, IMAGE, RAM_BASE, Perms::RWX),
            run(IMAGE, IMAGE + 0x1000, IMAGE, Perms::RX),
            run(IMAGE + 0x1000, HYP_BASE, IMAGE + 0x1000, Perms::RWX),
        ];
        check_stage2(&l, &unprotected());
    }

    #[test]
    #[should_panic(expected = "not the union")]
    fn a_stale_guarded_granule_is_caught() {
        let s = Services::new(Policy::AfterEnroll);
        let (mut g, mut k) = s.handles();
        let mut plat = crate::machine::Machine::new();
        let boot = crate::machine::Boot {
            policy: Policy::AfterEnroll,
            tables: 2,
        };
        let discovery = hyp_stub::hyp::Discovery::new();
        let mut hyp = crate::machine::boot(&boot, &mut g, &mut k, &discovery, &mut plat);
        let mut v = hyp_stub::vcpu::Vcpu::default();
        v.regs.x[0] = u64::from(mmio_guard::abi::MAP);
        v.regs.x[1] = 0x0900_0000;
        let next = hyp.handle_sync(hyp_stub::esr::Esr(0x16 << 26), 0, 0, &mut v, &mut plat);
        assert_eq!(next, hyp_stub::hyp::Next::Guest);
        assert_eq!(v.regs.x[0], 0);
        drop(hyp);
        // The guest unmapped it (as far as the model knows).
        check_guard(&s.guard.lock(), &RangeSet::default());
    }

    /// A CPU_ON the core answers, with a guest entry point in RAM.
    fn cpu_on_calls() -> Vec<(u32, [u64; 3])> {
        let s = Services::new(Policy::AfterEnroll);
        let (mut g, mut k) = s.handles();
        let mut plat = crate::machine::Machine::new();
        let boot = crate::machine::Boot {
            policy: Policy::AfterEnroll,
            tables: 2,
        };
        let discovery = hyp_stub::hyp::Discovery::new();
        let mut hyp = crate::machine::boot(&boot, &mut g, &mut k, &discovery, &mut plat);
        let mut v = hyp_stub::vcpu::Vcpu::default();
        v.regs.x[..4].copy_from_slice(&[u64::from(psci::CPU_ON_64), 1, IMAGE, 7]);
        plat.take_events();
        hyp.handle_sync(hyp_stub::esr::Esr(0x16 << 26), 0, 0, &mut v, &mut plat);
        assert_eq!(v.regs.x[0], psci::SUCCESS);
        plat.firmware.clone()
    }

    #[test]
    fn the_hypervisors_own_calls_pass() {
        let calls = cpu_on_calls();
        assert_eq!(calls.len(), 1, "{calls:x?}");
        check_firmware_calls(&calls);
        check_firmware_calls(&[
            (psci::CPU_SUSPEND_64, [1 << 16, HYP_ENTRY, 0]),
            (psci::CPU_SUSPEND_64, [0, 0, 0]),
            (psci::CPU_OFF, [0; 3]),
            (psci::AFFINITY_INFO_64, [1, 0, 0]),
        ]);
    }

    #[test]
    #[should_panic(expected = "passed through")]
    fn a_guest_entry_point_at_the_firmware_is_caught() {
        // The same CPU_ON with the guest's entry forwarded as it made it.
        let mut calls = cpu_on_calls();
        calls[0].1[1] = IMAGE;
        check_firmware_calls(&calls);
    }

    #[test]
    #[should_panic(expected = "passed through")]
    fn a_forwarded_power_down_suspend_is_caught() {
        check_firmware_calls(&[(psci::CPU_SUSPEND_64, [1 << 16, IMAGE, 0])]);
    }

    #[test]
    #[should_panic(expected = "passed through")]
    fn a_forwarded_system_suspend_is_caught() {
        check_firmware_calls(&[(psci::SYSTEM_SUSPEND_64, [IMAGE, 0, 0])]);
    }

    #[test]
    fn range_set_adds_and_removes() {
        let mut r = RangeSet::default();
        r.add(0x1000, 0x3000);
        r.add(0x3000, 0x4000);
        r.add(0x8000, 0x9000);
        assert_eq!(r.0, [(0x1000, 0x4000), (0x8000, 0x9000)]);
        r.remove(0x2000, 0x3000);
        assert_eq!(r.0, [(0x1000, 0x2000), (0x3000, 0x4000), (0x8000, 0x9000)]);
        assert!(r.contains(0x1fff) && !r.contains(0x2000));
        let _ = KernelAssetInfo::new();
    }
}
