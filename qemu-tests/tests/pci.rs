// SPDX-License-Identifier: GPL-2.0 OR MIT
//! Real devices behind ioremap: a virtio block device on PCI works under
//! hyp-stub while the MMIO guard enforces. The guest reaches its config
//! space through the ECAM and its registers through BARs the kernel
//! placed itself (one in the 64-bit window at 512 GiB); all of it is
//! ioremapped, so all of it must be guarded, and nothing is refused.

use std::fs;

use qemu_tests::{artifacts, check, run, Boot};

const SYSFS: &str = "/sys/hypervisor/pvguard/mmio_guard";
/// Dumps and counters: debugfs, root only.
const DBG: &str = "/sys/kernel/debug/pvguard";
const DISK_MAGIC: &[u8] = b"pvguard-disk-0123456789";
const WRITTEN: &str = "written-by-the-guest";

#[test]
fn virtio_blk_on_pci_works_with_the_mmio_guard_enforcing() {
    let a = artifacts();
    fs::create_dir_all(&a.scratch).unwrap();
    let disk = a.scratch.join("pci-disk.img");
    let mut image = vec![0u8; 1 << 20];
    image[..DISK_MAGIC.len()].copy_from_slice(DISK_MAGIC);
    fs::write(&disk, &image).unwrap();
    let b = Boot {
        append: "pvguard=on".into(),
        qemu_args: vec![
            "-drive".into(),
            format!("file={},if=none,format=raw,id=disk", disk.display()),
            "-device".into(),
            "virtio-blk-pci,drive=disk".into(),
        ],
        exec: Some(format!(
            "cat {SYSFS}/status
             echo \"read: $(dd if=/dev/vda bs=512 count=1 2>/dev/null | head -c {n})\"
             echo {WRITTEN} | dd of=/dev/vda bs=512 seek=8 conv=sync 2>/dev/null
             sync
             echo \"back: $(dd if=/dev/vda bs=512 skip=8 count=1 2>/dev/null | head -c {w})\"
             grep -h '^0x80000' {DBG}/mmio_guard_ranges | sed 's/^/bar guarded /'
             sh -c 'echo 0x8000100000 > /sys/kernel/debug/pvguard/mmio_probe'
             echo probe-done",
            n = DISK_MAGIC.len(),
            w = WRITTEN.len(),
        )),
        ..Boot::default()
    };
    let o = run(&a, &b, "pci-blk").unwrap();
    check(
        &o,
        &[
            "pvguard: MMIO guard enrolled",
            "ECAM at [mem 0x4010000000-0x401fffffff]",
            "virtio_blk virtio0: [vda]",
            "pvguard-init: ready",
            "enrolled",
            &format!("read: {}", std::str::from_utf8(DISK_MAGIC).unwrap()),
            &format!("back: {WRITTEN}"),
            "bar guarded 0x8000000000-",
            // The same window, where no BAR is, stays refused.
            "hyp-stub: refused read at IPA 0x8000100000",
            "not guarded (MMIO guard)",
            "probe-done",
            "reboot: Power down",
        ],
        &["Internal error", "Oops"],
    )
    .unwrap();
    let s = o.stats().expect("stats");
    assert_eq!(s.num("mmio_guard_enrolled"), 1);
    assert_eq!(
        s.num("mmio_guard_blocked"),
        1,
        "only the probe was blocked\n{}",
        o.console
    );
    assert!(o.clean_exit(), "QEMU status {:?}\n{}", o.status, o.console);
    // The write reached the device model, not just the guest's cache.
    let after = fs::read(&disk).unwrap();
    assert_eq!(&after[8 * 512..8 * 512 + WRITTEN.len()], WRITTEN.as_bytes());
    let _ = fs::remove_file(&disk);
}
