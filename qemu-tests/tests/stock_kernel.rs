// SPDX-License-Identifier: GPL-2.0 OR MIT
//! A kernel we did not build: Debian's own arm64 6.12 kernel boots to
//! init under hyp-stub with PCI probing on. It finds the PCIe host through
//! the high ECAM window (at 256 GiB on QEMU `virt`) and places a virtio
//! device's 64-bit BAR in the 64-bit window at 512 GiB: hyp-stub forwards
//! both because they are in the device tree, not because they are
//! constants. (Before, the first ECAM read got an external abort and the
//! kernel panicked in `pci_generic_config_read`.)

use std::path::PathBuf;

use qemu_tests::{artifacts, check, run, Boot};

/// The stock kernel `cargo xtask test` downloaded, or why it could not.
fn stock_kernel() -> PathBuf {
    if let Some(p) = std::env::var_os("PVGUARD_DEBIAN_KERNEL") {
        return PathBuf::from(p);
    }
    match std::env::var("PVGUARD_DEBIAN_KERNEL_ERROR") {
        Ok(why) => panic!("Debian's stock kernel is not available: {why}"),
        Err(_) => {
            panic!("PVGUARD_DEBIAN_KERNEL is not set: run the system tests with `cargo xtask test`")
        }
    }
}

#[test]
fn debian_stock_kernel_probes_pci_under_hyp_stub() {
    let a = artifacts();
    let b = Boot {
        kernel: Some(stock_kernel()),
        qemu_args: ["-device", "virtio-rng-pci"].map(String::from).to_vec(),
        exec: Some(
            "cat /proc/version
             for d in /sys/bus/pci/devices/*; do echo \"pci $(basename $d) $(cat $d/vendor):$(cat $d/device)\"; done
             grep -h . /sys/bus/virtio/devices/*/device | sed 's/^/virtio device /'"
                .into(),
        ),
        // A 44 MB kernel, every PCI config access trapped and forwarded.
        timeout: std::time::Duration::from_secs(300),
        ..Boot::default()
    };
    let o = run(&a, &b, "stock-debian").unwrap();
    check(
        &o,
        &[
            "pvguard hyp-stub at EL2",
            "device window 0x4010000000..0x4020000000",
            "device window 0x8000000000..0x10000000000",
            "Linux version 6.12",
            "+deb",
            "ECAM at [mem 0x4010000000-0x401fffffff]",
            "pvguard-init: ready",
            // The QEMU host bridge and the virtio device (transitional
            // virtio-rng: 1af4:1005), probed by the stock kernel.
            "pci 0000:00:00.0 0x1b36:0x0008",
            "pci 0000:00:01.0 0x1af4:0x1005",
            // virtio-pci read the device's ID through its BARs.
            "virtio device 0x0004",
            "reboot: Power down",
        ],
        &[],
    )
    .unwrap();
    assert!(
        o.console.contains("[mem 0x8000000000-"),
        "a BAR was placed in the 64-bit window at 512 GiB\n{}",
        o.console
    );
    let s = o
        .stats()
        .unwrap_or_else(|| panic!("no stats block\n{}", o.console));
    assert_eq!(s.num("mmio_refused"), 0, "nothing refused\n{}", o.console);
    assert!(o.clean_exit(), "QEMU status {:?}\n{}", o.status, o.console);
}
