// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The boot contract between the host tooling (`cargo xtask`) and the
//! hypervisor: where QEMU's loader places the guest's kernel and initramfs,
//! and the small manifest that tells the hypervisor what it was given.
//!
//! The hypervisor plays the resource manager's role for its single guest,
//! so the manifest is trusted input, but it is still validated: a missing
//! or inconsistent manifest stops the boot with a message instead of
//! starting a guest from garbage.

/// Base of RAM on QEMU's `virt` board; QEMU places its device tree here.
pub const RAM_BASE: u64 = 0x4000_0000;
/// The hypervisor owns RAM from here to the end of the first GiB of RAM.
/// It is linked here (see `link.ld`) and none of it is mapped at stage 2.
pub const HYP_BASE: u64 = 0x7e00_0000;
/// End of the RAM the hypervisor requires (`-m 1G`).
pub const HYP_END: u64 = 0x8000_0000;
/// Where the host places the boot manifest (inside the hypervisor's RAM).
pub const MANIFEST_PA: u64 = 0x7fff_f000;
/// Where the host places the guest's arm64 `Image` (2 MiB aligned, as
/// `Documentation/arch/arm64/booting.rst` requires).
pub const KERNEL_LOAD_IPA: u64 = 0x4020_0000;
/// Where the host places the guest's initramfs (an uncompressed or
/// compressed cpio archive; the kernel unpacks it).
pub const INITRD_LOAD_IPA: u64 = 0x4800_0000;
/// Where the guest finds its device tree (x0 at entry). The hypervisor
/// rewrites QEMU's tree in place here.
pub const GUEST_DTB_IPA: u64 = RAM_BASE;
/// Largest device tree the hypervisor hands to the guest (booting.rst
/// limit).
pub const GUEST_DTB_MAX: usize = 2 << 20;

bitflags::bitflags! {
    /// What the manifest asks hyp-stub to run ([`Manifest::services`]).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Services: u64 {
        /// Start the MMIO guard service.
        const MMIO_GUARD = 1 << 0;
        /// Start the kernel-protect service.
        const KERNEL_PROTECT = 1 << 1;
        /// The guest is a protected VM whose MMIO guard is enforced from
        /// boot (pKVM's policy), not only after ENROLL.
        const MMIO_GUARD_FROM_BOOT = 1 << 8;
    }
}

/// What a manifest with `services == 0` gets.
pub const DEFAULT: Services = Services::MMIO_GUARD.union(Services::KERNEL_PROTECT);

// The same bits as the host writes them into the manifest's `services`.
/// [`Services::MMIO_GUARD`] in the manifest.
pub const SERVICE_MMIO_GUARD: u64 = Services::MMIO_GUARD.bits();
/// [`Services::KERNEL_PROTECT`] in the manifest.
pub const SERVICE_KERNEL_PROTECT: u64 = Services::KERNEL_PROTECT.bits();
/// [`Services::MMIO_GUARD_FROM_BOOT`] in the manifest.
pub const MMIO_GUARD_FROM_BOOT: u64 = Services::MMIO_GUARD_FROM_BOOT.bits();
/// [`DEFAULT`] in the manifest.
pub const DEFAULT_SERVICES: u64 = DEFAULT.bits();

/// `"PVGBOOT1"` little-endian.
pub const MANIFEST_MAGIC: u64 = u64::from_le_bytes(*b"PVGBOOT1");
/// Size of the manifest in bytes.
pub const MANIFEST_SIZE: usize = 48;

/// What the host loaded for the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// Guest-physical address of the kernel `Image`.
    pub kernel_ipa: u64,
    /// Size of the `Image` file in bytes.
    pub kernel_size: u64,
    /// Guest-physical address of the initramfs.
    pub initrd_ipa: u64,
    /// Size of the initramfs in bytes (0: none).
    pub initrd_size: u64,
    /// Bitmask of hypervisor services to start (`SERVICE_*`,
    /// `MMIO_GUARD_FROM_BOOT`); 0 means [`DEFAULT_SERVICES`].
    pub services: u64,
}

/// Why a manifest was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestError {
    /// The magic number is wrong: nothing (or something else) was loaded.
    BadMagic,
    /// The kernel is missing or does not fit in guest RAM.
    BadKernel,
    /// The initramfs does not fit in guest RAM or overlaps the kernel.
    BadInitrd,
    /// A services bit hyp-stub does not know: unknown means no.
    UnknownServices,
}

impl Manifest {
    /// The services to start, with the default applied (a parsed
    /// manifest has no unknown bits; any are dropped here).
    pub fn services(&self) -> Services {
        match self.services {
            0 => DEFAULT,
            bits => Services::from_bits_truncate(bits),
        }
    }

    /// Serialises the manifest as the host writes it.
    pub fn to_bytes(&self) -> [u8; MANIFEST_SIZE] {
        let mut out = [0u8; MANIFEST_SIZE];
        let words = [
            MANIFEST_MAGIC,
            self.kernel_ipa,
            self.kernel_size,
            self.initrd_ipa,
            self.initrd_size,
            self.services,
        ];
        for (chunk, word) in out.chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        out
    }

    /// Parses and validates a manifest against guest RAM
    /// `[ram_base, ram_end)`.
    ///
    /// # Errors
    /// - [`ManifestError::BadMagic`] if the bytes are not a manifest.
    /// - [`ManifestError::BadKernel`] if the kernel is empty or outside RAM.
    /// - [`ManifestError::BadInitrd`] if the initramfs is outside RAM or
    ///   overlaps the kernel.
    /// - [`ManifestError::UnknownServices`] for a services bit that is not
    ///   a [`Services`] flag.
    pub fn parse(
        bytes: &[u8; MANIFEST_SIZE],
        ram_base: u64,
        ram_end: u64,
    ) -> Result<Self, ManifestError> {
        let mut words = [0u64; MANIFEST_SIZE / 8];
        for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            *word = u64::from_le_bytes(b);
        }
        let [magic, kernel_ipa, kernel_size, initrd_ipa, initrd_size, services] = words;
        if magic != MANIFEST_MAGIC {
            return Err(ManifestError::BadMagic);
        }
        if Services::from_bits(services).is_none() {
            return Err(ManifestError::UnknownServices);
        }
        let inside = |base: u64, size: u64| {
            base >= ram_base && base.checked_add(size).is_some_and(|end| end <= ram_end)
        };
        if kernel_size == 0 || !inside(kernel_ipa, kernel_size) {
            return Err(ManifestError::BadKernel);
        }
        if initrd_size != 0 {
            let overlaps = initrd_ipa < kernel_ipa + kernel_size
                && kernel_ipa < initrd_ipa.saturating_add(initrd_size);
            if !inside(initrd_ipa, initrd_size) || overlaps {
                return Err(ManifestError::BadInitrd);
            }
        }
        Ok(Self {
            kernel_ipa,
            kernel_size,
            initrd_ipa,
            initrd_size,
            services,
        })
    }
}

/// What the arm64 `Image` header (`Documentation/arch/arm64/booting.rst`)
/// says about the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelImage {
    /// Bytes of memory the kernel occupies from its load address,
    /// including BSS (header `image_size`).
    pub image_size: u64,
}

/// `"ARM\x64"`, at offset 56 of the header.
pub const IMAGE_MAGIC: u32 = 0x644d_5241;
/// Size of the `Image` header.
pub const IMAGE_HEADER_SIZE: usize = 64;

impl KernelImage {
    /// Reads the header at the start of an `Image`.
    ///
    /// # Errors
    /// [`ManifestError::BadKernel`] if the magic is wrong.
    pub fn parse(header: &[u8; IMAGE_HEADER_SIZE]) -> Result<Self, ManifestError> {
        let word = |off: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&header[off..off + 8]);
            u64::from_le_bytes(b)
        };
        let magic = u32::from_le_bytes([header[56], header[57], header[58], header[59]]);
        if magic != IMAGE_MAGIC || word(16) == 0 {
            return Err(ManifestError::BadKernel);
        }
        Ok(Self {
            image_size: word(16),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_image_header() {
        let mut h = [0u8; IMAGE_HEADER_SIZE];
        h[16..24].copy_from_slice(&(24u64 << 20).to_le_bytes());
        assert_eq!(KernelImage::parse(&h), Err(ManifestError::BadKernel));
        h[56..60].copy_from_slice(b"ARM\x64");
        assert_eq!(
            KernelImage::parse(&h),
            Ok(KernelImage {
                image_size: 24 << 20
            })
        );
    }

    fn sample() -> Manifest {
        Manifest {
            kernel_ipa: KERNEL_LOAD_IPA,
            kernel_size: 12 << 20,
            initrd_ipa: INITRD_LOAD_IPA,
            initrd_size: 3 << 20,
            services: 0,
        }
    }

    #[test]
    fn services_are_flags_and_unknown_bits_are_refused() {
        let mut m = sample();
        m.services = 0;
        assert_eq!(
            m.services(),
            Services::MMIO_GUARD | Services::KERNEL_PROTECT
        );
        m.services = SERVICE_KERNEL_PROTECT | MMIO_GUARD_FROM_BOOT;
        let parsed = Manifest::parse(&m.to_bytes(), RAM_BASE, HYP_BASE).unwrap();
        assert_eq!(
            parsed.services(),
            Services::KERNEL_PROTECT | Services::MMIO_GUARD_FROM_BOOT
        );
        for unknown in [1 << 2, 1 << 9, 1 << 63] {
            m.services = SERVICE_MMIO_GUARD | unknown;
            assert_eq!(
                Manifest::parse(&m.to_bytes(), RAM_BASE, HYP_BASE),
                Err(ManifestError::UnknownServices),
                "{unknown:#x}"
            );
        }
    }

    #[test]
    fn round_trip() {
        let m = sample();
        assert_eq!(Manifest::parse(&m.to_bytes(), RAM_BASE, HYP_BASE), Ok(m));
    }

    #[test]
    fn rejects_garbage_and_bad_layouts() {
        assert_eq!(
            Manifest::parse(&[0; MANIFEST_SIZE], RAM_BASE, HYP_BASE),
            Err(ManifestError::BadMagic)
        );
        let mut m = sample();
        m.kernel_size = u64::MAX;
        assert_eq!(
            Manifest::parse(&m.to_bytes(), RAM_BASE, HYP_BASE),
            Err(ManifestError::BadKernel)
        );
        let mut m = sample();
        m.initrd_ipa = KERNEL_LOAD_IPA + 4096;
        assert_eq!(
            Manifest::parse(&m.to_bytes(), RAM_BASE, HYP_BASE),
            Err(ManifestError::BadInitrd)
        );
        let mut m = sample();
        m.initrd_ipa = HYP_BASE - 4096;
        assert_eq!(
            Manifest::parse(&m.to_bytes(), RAM_BASE, HYP_BASE),
            Err(ManifestError::BadInitrd)
        );
    }
}
