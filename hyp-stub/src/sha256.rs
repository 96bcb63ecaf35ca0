// SPDX-License-Identifier: GPL-2.0 OR MIT
//! Streaming SHA-256 over a pluggable block function, so the hypervisor
//! can measure guest memory with the CPU's SHA-256 instructions where it
//! has them (the software function is sha2's; tests compare both with
//! sha2's own digest).

/// Compresses whole 64-byte blocks into the state.
pub type CompressFn = fn(&mut [u32; 8], &[[u8; 64]]);

/// The portable block function.
pub fn compress_soft(state: &mut [u32; 8], blocks: &[[u8; 64]]) {
    sha2::block_api::compress256(state, blocks);
}

const INIT: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// A SHA-256 computation in progress.
pub struct Sha256 {
    state: [u32; 8],
    buf: [u8; 64],
    buffered: usize,
    total: u64,
    compress: CompressFn,
}

impl Sha256 {
    /// Starts a digest using `compress`.
    pub fn new(compress: CompressFn) -> Self {
        Self {
            state: INIT,
            buf: [0; 64],
            buffered: 0,
            total: 0,
            compress,
        }
    }

    /// Adds `data`.
    pub fn update(&mut self, mut data: &[u8]) {
        self.total = self.total.wrapping_add(data.len() as u64);
        if self.buffered > 0 {
            let take = (64 - self.buffered).min(data.len());
            self.buf[self.buffered..self.buffered + take].copy_from_slice(&data[..take]);
            self.buffered += take;
            data = &data[take..];
            if self.buffered < 64 {
                return;
            }
            let block = [self.buf];
            (self.compress)(&mut self.state, &block);
            self.buffered = 0;
        }
        let (blocks, rest) = data.as_chunks::<64>();
        if !blocks.is_empty() {
            (self.compress)(&mut self.state, blocks);
        }
        self.buf[..rest.len()].copy_from_slice(rest);
        self.buffered = rest.len();
    }

    /// The digest.
    pub fn finalize(mut self) -> [u8; 32] {
        let bits = self.total.wrapping_mul(8);
        let mut pad = [0u8; 72];
        pad[0] = 0x80;
        let zeros = (119 - self.buffered) % 64;
        pad[1 + zeros..9 + zeros].copy_from_slice(&bits.to_be_bytes());
        let total = self.total;
        self.update(&pad[..9 + zeros]);
        self.total = total;
        let mut out = [0u8; 32];
        for (o, s) in out.chunks_exact_mut(4).zip(self.state) {
            o.copy_from_slice(&s.to_be_bytes());
        }
        out
    }
}

/// Whether `compress` computes SHA-256 (a known-answer test, run before
/// trusting a hardware block function).
pub fn known_answer(compress: CompressFn) -> bool {
    let mut data = [0u8; 200];
    for (i, b) in data.iter_mut().enumerate() {
        *b = (i * 7 + 3) as u8;
    }
    let digest = |c: CompressFn| {
        let mut h = Sha256::new(c);
        h.update(&data[..1]);
        h.update(&data[1..]);
        h.finalize()
    };
    digest(compress) == digest(compress_soft)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    #[test]
    fn matches_sha2_for_every_length_and_split() {
        let data: std::vec::Vec<u8> = (0..300u32).map(|i| (i * 31 + 7) as u8).collect();
        for len in 0..data.len() {
            for split in [0, 1, len / 2, len] {
                let mut h = Sha256::new(compress_soft);
                h.update(&data[..split.min(len)]);
                h.update(&data[split.min(len)..len]);
                let want: [u8; 32] = sha2::Sha256::digest(&data[..len]).into();
                assert_eq!(h.finalize(), want, "len {len} split {split}");
            }
        }
        assert!(known_answer(compress_soft));
        assert!(!known_answer(|_, _| {}));
    }
}
