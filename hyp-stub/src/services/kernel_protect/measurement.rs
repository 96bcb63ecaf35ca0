// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The measurement of TEXT then RODATA as they were when protection was
//! enabled, taken a bounded number of bytes at a time.
//!
//! From the enable call onwards stage 2 keeps TEXT and RODATA unchanged,
//! except through the patches this service performs itself, and the hash
//! puts every registered patch site and armed kprobe back as it was at
//! enable. So the baseline need not be hashed inside the enable call, on
//! the guest's boot path: it is hashed a step at a time, in the guest's
//! idle time and inside later self-check calls, and patches go on between
//! the steps. A self-check is taken the same way. Every step runs under
//! the core's lock, which every other vCPU's exits wait for, so a step
//! hashes at most [`STEP_BYTES`].

use guest_kp::record::Layout;
use guest_kp::sites::{SiteRegistry, BRK_KPROBES};

use crate::addr::Ipa;
use crate::service::{HypOps, OpsError};
use crate::sha256::Sha256;
use crate::stage2::PAGE_SIZE;

/// Most bytes one step hashes: a few milliseconds even under emulation.
pub const STEP_BYTES: u64 = 256 * 1024;

/// An armed kprobe: the instruction its `BRK` replaced.
#[derive(Clone, Copy, Debug)]
pub struct KprobeSite {
    /// Where the `BRK` is.
    pub ipa: u64,
    /// What it replaced, and what the measurement sees.
    pub original: u32,
}

/// What the hash puts back as it was at enable.
pub struct Undo<'a, 'm> {
    /// The registered patch sites, with their state at enable.
    pub sites: &'a SiteRegistry<'m>,
    /// The armed kprobes, sorted by IPA.
    pub kprobes: &'a [KprobeSite],
}

impl Undo<'_, '_> {
    /// The lowest IPA at or after `at` that the hash puts back.
    fn next_patchable(&self, at: u64) -> Option<u64> {
        let kprobe = self
            .kprobes
            .get(self.kprobes.partition_point(|k| k.ipa < at))
            .map(|k| k.ipa);
        match (self.sites.next_word(at), kprobe) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Puts the page at `at` back as it was at enable; false if a site in
    /// it held a state its rules do not allow.
    fn restore_page(&self, at: u64, page: &mut [u8; PAGE_SIZE as usize]) -> bool {
        let mut legit = self.sites.restore(at, page);
        let first = self.kprobes.partition_point(|k| k.ipa < at);
        for k in self
            .kprobes
            .iter()
            .skip(first)
            .take_while(|k| k.ipa < at + PAGE_SIZE)
        {
            let off = (k.ipa - at) as usize;
            if let Some(w) = page.get_mut(off..off + 4) {
                legit &= w == BRK_KPROBES.to_le_bytes();
                w.copy_from_slice(&k.original.to_le_bytes());
            }
        }
        legit
    }
}

/// A finished measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digest {
    /// SHA-256 of TEXT then RODATA, every site put back.
    pub sha256: [u8; 32],
    /// Whether every site held a state its rules allow (else TEXT changed
    /// behind the hypervisor's back, which stage 2 should make
    /// impossible).
    pub legit: bool,
}

/// Where a measurement stands after a step.
pub enum Progress {
    /// More to hash.
    More(Measuring),
    /// Hashed.
    Done(Digest),
}

/// A measurement in progress.
pub struct Measuring {
    /// Started by the first step: choosing the block function may time
    /// the candidates, which the enable call should not pay for.
    sha: Option<Sha256>,
    /// The region being hashed: 0 TEXT, 1 RODATA.
    region: usize,
    /// The next IPA to hash in it (page aligned, as reported regions are).
    at: u64,
    legit: bool,
    /// Bytes hashed so far.
    hashed: u64,
}

impl Measuring {
    /// A measurement of `layout`'s TEXT and RODATA, not yet started.
    pub fn new(layout: &Layout) -> Self {
        Self {
            sha: None,
            region: 0,
            at: layout.text().start(),
            legit: true,
            hashed: 0,
        }
    }

    /// Bytes hashed so far.
    pub fn hashed(&self) -> u64 {
        self.hashed
    }

    /// Hashes about `budget` bytes more: whole pages, at least one.
    ///
    /// # Errors
    /// [`OpsError`] if a region is not guest RAM (not expected: the
    /// regions were checked when they were protected).
    pub fn step(
        mut self,
        layout: &Layout,
        undo: &Undo<'_, '_>,
        ops: &mut dyn HypOps,
        budget: u64,
    ) -> Result<Progress, OpsError> {
        let sha = self
            .sha
            .get_or_insert_with(|| Sha256::new(ops.sha256_compress()));
        let spans = [layout.text(), layout.rodata()];
        let mut left = budget.max(PAGE_SIZE) & !(PAGE_SIZE - 1);
        let mut page = [0u8; PAGE_SIZE as usize];
        while let Some(span) = spans.get(self.region) {
            if self.at >= span.end() {
                self.region += 1;
                if let Some(next) = spans.get(self.region) {
                    self.at = next.start();
                }
                continue;
            }
            if left == 0 {
                return Ok(Progress::More(self));
            }
            // Pages without sites are hashed in place, up to the next
            // page with one.
            let next = undo.next_patchable(self.at).map(|p| p & !(PAGE_SIZE - 1));
            let run_end = next
                .map_or(span.end(), |p| p.min(span.end()))
                .min(self.at.saturating_add(left));
            let len = if run_end > self.at {
                ops.hash_guest(Ipa(self.at), run_end - self.at, sha)?;
                run_end - self.at
            } else {
                ops.read_guest(Ipa(self.at), &mut page)?;
                self.legit &= undo.restore_page(self.at, &mut page);
                sha.update(&page);
                PAGE_SIZE
            };
            self.at += len;
            self.hashed += len;
            left = left.saturating_sub(len);
        }
        let sha = self
            .sha
            .take()
            .unwrap_or_else(|| Sha256::new(ops.sha256_compress()));
        Ok(Progress::Done(Digest {
            sha256: sha.finalize(),
            legit: self.legit,
        }))
    }
}
