// SPDX-License-Identifier: GPL-2.0 OR MIT
//! One boot of the SMP soak (`cargo xtask soak` runs many): four guest
//! CPUs flip static keys, load and unload modules and map, use and unmap
//! guarded MMIO at once, under protection.

use qemu_tests::{artifacts, run, soak};

#[test]
fn smp_soak_one_boot_under_protection() {
    let a = artifacts();
    let o = run(&a, &soak::boot(&a.kernel_build), "soak-1").unwrap();
    let r = soak::verify(&o).unwrap_or_else(|e| panic!("{e}"));
    assert!(r.patches > 0, "static keys were flipped by the hypervisor");
    assert!(r.mmio_calls > 0);
}
