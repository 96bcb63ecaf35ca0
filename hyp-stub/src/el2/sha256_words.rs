// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The portable SHA-256 block function for word-aligned data (guest
//! pages): message words are loaded whole rather than byte by byte, which
//! is all the target allows the compiler for data of unknown alignment.

use hyp_stub::sha256;

/// Compresses `blocks`, loading whole words when they are 4-byte aligned.
pub fn compress(state: &mut [u32; 8], blocks: &[[u8; 64]]) {
    if blocks.as_ptr().align_offset(4) != 0 {
        return sha256::compress_soft(state, blocks);
    }
    sha256::compress_with(state, blocks, |block| {
        let words = block.as_ptr().cast::<u32>();
        core::array::from_fn(|i| {
            // SAFETY: every block is 4-byte aligned (the slice is, and a
            // block is 64 bytes) and holds 16 words, so word `i` < 16 is
            // an aligned read inside `block`.
            u32::from_be(unsafe { words.add(i).read() })
        })
    });
}
