// SPDX-License-Identifier: GPL-2.0 OR MIT
//! Reading guest RAM while the guest runs. Another vCPU may write any of
//! it at any time, so it is never seen as a Rust slice (`&[u8]` promises
//! that nothing changes it) nor copied with `copy_nonoverlapping` (a data
//! race in Rust's model): every access is a volatile load of one aligned
//! word, whose value is whatever the guest had there at that moment.

use core::mem::size_of;

/// Copies guest RAM at `pa` into `buf`, one volatile load per aligned
/// 64-bit word (single bytes at unaligned ends).
///
/// # Safety
/// `pa..pa + buf.len()` must be guest RAM, mapped at EL2 (the core checks
/// the range before it reaches the platform).
pub unsafe fn read(pa: u64, buf: &mut [u8]) {
    let word = size_of::<u64>();
    let mut at = pa as usize;
    let mut rest = buf;
    // Bytes up to the first aligned word, and any short tail.
    while !rest.is_empty() && (!at.is_multiple_of(word) || rest.len() < word) {
        // SAFETY: inside the caller's range.
        rest[0] = unsafe { (at as *const u8).read_volatile() };
        at += 1;
        rest = &mut rest[1..];
    }
    let mut chunks = rest.chunks_exact_mut(word);
    for chunk in &mut chunks {
        // SAFETY: inside the caller's range, and aligned.
        let w = unsafe { (at as *const u64).read_volatile() };
        chunk.copy_from_slice(&w.to_ne_bytes());
        at += word;
    }
    for b in chunks.into_remainder() {
        // SAFETY: inside the caller's range.
        *b = unsafe { (at as *const u8).read_volatile() };
        at += 1;
    }
}
