// SPDX-License-Identifier: GPL-2.0 OR MIT
//! A writer for the `newc` cpio format the Linux initramfs unpacker reads
//! (`Documentation/driver-api/early-userspace/buffer-format.rst`).
//!
//! The kernel unpacks concatenated archives in order, so a per-boot
//! archive can be appended to the base one. Every archive this writer
//! produces also carries `/dev/console` (the kernel opens it for init's
//! stdin/stdout before `/init` runs), so no root is needed to make one.

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// Builds one archive in memory.
#[derive(Debug, Default)]
pub struct Writer {
    out: Vec<u8>,
    ino: u32,
}

impl Writer {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    fn entry(&mut self, name: &str, mode: u32, nlink: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let fields = [
            self.ino,
            mode,
            0,
            0,
            nlink,
            0,
            len(data.len()),
            0,
            0,
            rdev.0,
            rdev.1,
            len(name.len() + 1),
            0,
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    /// Adds a directory (mode 0755).
    pub fn dir(&mut self, path: &str) {
        self.entry(path, S_IFDIR | 0o755, 2, (0, 0), &[]);
    }

    /// Adds a regular file.
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) {
        self.entry(path, S_IFREG | (perm & 0o7777), 1, (0, 0), data);
    }

    /// Adds a symbolic link to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) {
        self.entry(path, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes());
    }

    /// Ends the archive (with `/dev/console` and the trailer) and returns it.
    pub fn finish(mut self) -> Vec<u8> {
        self.dir("dev");
        self.entry("dev/console", S_IFCHR | 0o600, 1, (5, 1), &[]);
        self.entry("TRAILER!!!", 0, 1, (0, 0), &[]);
        self.out
    }
}
