// SPDX-License-Identifier: GPL-2.0 OR MIT
//! Streaming SHA-256 (FIPS 180-4) over a pluggable block function, so the
//! hypervisor can measure guest memory with the CPU's SHA-256 instructions
//! where they are faster. Host tests compare the portable block function
//! with the `sha2` crate; the hypervisor checks each block function
//! against it before using it ([`known_answer`]): the portable one at
//! boot, the CPU's instructions when the first measurement chooses.

/// Compresses whole 64-byte blocks into the state.
pub type CompressFn = fn(&mut [u32; 8], &[[u8; 64]]);

const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

/// The round constants, for block functions built on other instructions.
pub const ROUND_CONSTANTS: &[u32; 64] = &K;

/// The block's 16 big-endian message words, loaded byte by byte (the
/// hypervisor's target forbids unaligned loads).
pub fn message_words(block: &[u8; 64]) -> [u32; 16] {
    let mut w = [0u32; 16];
    for (w, b) in w.iter_mut().zip(block.as_chunks::<4>().0) {
        *w = u32::from_be_bytes(*b);
    }
    w
}

/// The portable block function.
pub fn compress_soft(state: &mut [u32; 8], blocks: &[[u8; 64]]) {
    compress_with(state, blocks, message_words);
}

/// The rounds, fully unrolled over a 16-word message window so that
/// state, window and constants stay in registers; `message` loads a
/// block's words (a caller that knows its data is aligned loads whole
/// words, a quarter of the memory accesses, which is what costs most
/// under emulation).
#[inline(always)]
pub fn compress_with(
    state: &mut [u32; 8],
    blocks: &[[u8; 64]],
    message: impl Fn(&[u8; 64]) -> [u32; 16],
) {
    let mut s = *state;
    for block in blocks {
        let mut w = message(block);
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = s;
        macro_rules! round {
            ($a:ident, $b:ident, $c:ident, $d:ident,
             $e:ident, $f:ident, $g:ident, $h:ident, $i:expr) => {
                let i: usize = $i;
                if i >= 16 {
                    let w1 = w[(i + 1) % 16];
                    let w14 = w[(i + 14) % 16];
                    let s0 = w1.rotate_right(7) ^ w1.rotate_right(18) ^ (w1 >> 3);
                    let s1 = w14.rotate_right(17) ^ w14.rotate_right(19) ^ (w14 >> 10);
                    w[i % 16] = w[i % 16]
                        .wrapping_add(s0)
                        .wrapping_add(w[(i + 9) % 16])
                        .wrapping_add(s1);
                }
                let s1 = $e.rotate_right(6) ^ $e.rotate_right(11) ^ $e.rotate_right(25);
                // Ch(e, f, g): the two terms share no bits, so add them.
                let t1 = $h
                    .wrapping_add(s1)
                    .wrapping_add($e & $f)
                    .wrapping_add(!$e & $g)
                    .wrapping_add(K[i])
                    .wrapping_add(w[i % 16]);
                let s0 = $a.rotate_right(2) ^ $a.rotate_right(13) ^ $a.rotate_right(22);
                let maj = (($a ^ $b) & ($b ^ $c)) ^ $b;
                $d = $d.wrapping_add(t1);
                $h = t1.wrapping_add(s0).wrapping_add(maj);
            };
        }
        macro_rules! eight_rounds {
            ($i:expr) => {
                round!(a, b, c, d, e, f, g, h, $i);
                round!(h, a, b, c, d, e, f, g, $i + 1);
                round!(g, h, a, b, c, d, e, f, $i + 2);
                round!(f, g, h, a, b, c, d, e, $i + 3);
                round!(e, f, g, h, a, b, c, d, $i + 4);
                round!(d, e, f, g, h, a, b, c, $i + 5);
                round!(c, d, e, f, g, h, a, b, $i + 6);
                round!(b, c, d, e, f, g, h, a, $i + 7);
            };
        }
        eight_rounds!(0);
        eight_rounds!(8);
        eight_rounds!(16);
        eight_rounds!(24);
        eight_rounds!(32);
        eight_rounds!(40);
        eight_rounds!(48);
        eight_rounds!(56);
        for (s, v) in s.iter_mut().zip([a, b, c, d, e, f, g, h]) {
            *s = s.wrapping_add(v);
        }
    }
    *state = s;
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
    #[repr(C, align(8))]
    struct Aligned([u8; 264]);
    let mut buf = Aligned([0; 264]);
    for (i, b) in buf.0.iter_mut().enumerate() {
        *b = (i * 7 + 3) as u8;
    }
    let digest = |c: CompressFn, data: &[u8]| {
        let mut h = Sha256::new(c);
        h.update(&data[..1]);
        h.update(&data[1..]);
        let first = h.finalize();
        let mut h = Sha256::new(c);
        h.update(data);
        (first, h.finalize())
    };
    // Word-aligned data and not, whole blocks and not, in one piece and
    // through the partial-block buffer.
    [&buf.0[..256], &buf.0[1..201], &buf.0[8..264]]
        .iter()
        .all(|d| digest(compress, d) == digest(compress_soft, d))
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
