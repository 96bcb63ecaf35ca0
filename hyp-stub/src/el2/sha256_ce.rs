// SPDX-License-Identifier: GPL-2.0 OR MIT
//! SHA-256 block function with the CPU's SHA-256 instructions
//! (FEAT_SHA256), for measuring guest memory quickly. The hypervisor is
//! built soft-float and never otherwise touches FP/SIMD registers, which
//! hold the guest's state: the registers used here are saved on the stack
//! and restored before returning.

use hyp_stub::sha256::{self, CompressFn};

use super::sysreg::read_sysreg;

static K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

/// The hardware block function, if the CPU has FEAT_SHA256 and it passes
/// a known-answer test against the portable one.
pub fn detect() -> Option<CompressFn> {
    let sha2 = (read_sysreg!("id_aa64isar0_el1") >> 12) & 0xf;
    if sha2 == 0 {
        return None;
    }
    let f: CompressFn = compress;
    sha256::known_answer(f).then_some(f)
}

pub fn compress(state: &mut [u32; 8], blocks: &[[u8; 64]]) {
    if blocks.is_empty() {
        return;
    }
    // SAFETY: only called after `detect` found FEAT_SHA256; CPTR_EL2 does
    // not trap FP/SIMD at EL2. The registers used are saved and restored,
    // `state` is 32 writable bytes and `blocks` holds `blocks.len()` 64-byte
    // blocks; the stack is restored before the block ends.
    unsafe {
        core::arch::asm!(
        ".arch_extension fp",
        ".arch_extension simd",
        ".arch_extension sha2",
        "sub sp, sp, #192",
        "stp q0, q1, [sp, #0]",
        "stp q2, q3, [sp, #32]",
        "stp q4, q5, [sp, #64]",
        "stp q6, q7, [sp, #96]",
        "stp q16, q17, [sp, #128]",
        "stp q18, q19, [sp, #160]",
        "ld1 {{v0.4s, v1.4s}}, [{state}]",
        "2:",
        "ld1 {{v16.16b, v17.16b, v18.16b, v19.16b}}, [{data}], #64",
        "rev32 v16.16b, v16.16b",
        "rev32 v17.16b, v17.16b",
        "rev32 v18.16b, v18.16b",
        "rev32 v19.16b, v19.16b",
        "mov v2.16b, v0.16b",
        "mov v3.16b, v1.16b",
        "mov {k}, {ktab}",
        "ld1 {{v4.4s}}, [{k}], #16",
        "add v5.4s, v16.4s, v4.4s",
        "sha256su0 v16.4s, v17.4s",
        "mov v6.16b, v0.16b",
        "sha256h q0, q1, v5.4s",
        "sha256h2 q1, q6, v5.4s",
        "sha256su1 v16.4s, v18.4s, v19.4s",
        "ld1 {{v4.4s}}, [{k}], #16",
        "add v5.4s, v17.4s, v4.4s",
        "sha256su0 v17.4s, v18.4s",
        "mov v6.16b, v0.16b",
        "sha256h q0, q1, v5.4s",
        "sha256h2 q1, q6, v5.4s",
        "sha256su1 v17.4s, v19.4s, v16.4s",
        "ld1 {{v4.4s}}, [{k}], #16",
        "add v5.4s, v18.4s, v4.4s",
        "sha256su0 v18.4s, v19.4s",
        "mov v6.16b, v0.16b",
        "sha256h q0, q1, v5.4s",
        "sha256h2 q1, q6, v5.4s",
        "sha256su1 v18.4s, v16.4s, v17.4s",
        "ld1 {{v4.4s}}, [{k}], #16",
        "add v5.4s, v19.4s, v4.4s",
        "sha256su0 v19.4s, v16.4s",
        "mov v6.16b, v0.16b",
        "sha256h q0, q1, v5.4s",
        "sha256h2 q1, q6, v5.4s",
        "sha256su1 v19.4s, v17.4s, v18.4s",
        "ld1 {{v4.4s}}, [{k}], #16",
        "add v5.4s, v16.4s, v4.4s",
        "sha256su0 v16.4s, v17.4s",
        "mov v6.16b, v0.16b",
        "sha256h q0, q1, v5.4s",
        "sha256h2 q1, q6, v5.4s",
        "sha256su1 v16.4s, v18.4s, v19.4s",
        "ld1 {{v4.4s}}, [{k}], #16",
        "add v5.4s, v17.4s, v4.4s",
        "sha256su0 v17.4s, v18.4s",
        "mov v6.16b, v0.16b",
        "sha256h q0, q1, v5.4s",
        "sha256h2 q1, q6, v5.4s",
        "sha256su1 v17.4s, v19.4s, v16.4s",
        "ld1 {{v4.4s}}, [{k}], #16",
        "add v5.4s, v18.4s, v4.4s",
        "sha256su0 v18.4s, v19.4s",
        "mov v6.16b, v0.16b",
        "sha256h q0, q1, v5.4s",
        "sha256h2 q1, q6, v5.4s",
        "sha256su1 v18.4s, v16.4s, v17.4s",
        "ld1 {{v4.4s}}, [{k}], #16",
        "add v5.4s, v19.4s, v4.4s",
        "sha256su0 v19.4s, v16.4s",
        "mov v6.16b, v0.16b",
        "sha256h q0, q1, v5.4s",
        "sha256h2 q1, q6, v5.4s",
        "sha256su1 v19.4s, v17.4s, v18.4s",
        "ld1 {{v4.4s}}, [{k}], #16",
        "add v5.4s, v16.4s, v4.4s",
        "sha256su0 v16.4s, v17.4s",
        "mov v6.16b, v0.16b",
        "sha256h q0, q1, v5.4s",
        "sha256h2 q1, q6, v5.4s",
        "sha256su1 v16.4s, v18.4s, v19.4s",
        "ld1 {{v4.4s}}, [{k}], #16",
        "add v5.4s, v17.4s, v4.4s",
        "sha256su0 v17.4s, v18.4s",
        "mov v6.16b, v0.16b",
        "sha256h q0, q1, v5.4s",
        "sha256h2 q1, q6, v5.4s",
        "sha256su1 v17.4s, v19.4s, v16.4s",
        "ld1 {{v4.4s}}, [{k}], #16",
        "add v5.4s, v18.4s, v4.4s",
        "sha256su0 v18.4s, v19.4s",
        "mov v6.16b, v0.16b",
        "sha256h q0, q1, v5.4s",
        "sha256h2 q1, q6, v5.4s",
        "sha256su1 v18.4s, v16.4s, v17.4s",
        "ld1 {{v4.4s}}, [{k}], #16",
        "add v5.4s, v19.4s, v4.4s",
        "sha256su0 v19.4s, v16.4s",
        "mov v6.16b, v0.16b",
        "sha256h q0, q1, v5.4s",
        "sha256h2 q1, q6, v5.4s",
        "sha256su1 v19.4s, v17.4s, v18.4s",
        "ld1 {{v4.4s}}, [{k}], #16",
        "add v5.4s, v16.4s, v4.4s",
        "mov v6.16b, v0.16b",
        "sha256h q0, q1, v5.4s",
        "sha256h2 q1, q6, v5.4s",
        "ld1 {{v4.4s}}, [{k}], #16",
        "add v5.4s, v17.4s, v4.4s",
        "mov v6.16b, v0.16b",
        "sha256h q0, q1, v5.4s",
        "sha256h2 q1, q6, v5.4s",
        "ld1 {{v4.4s}}, [{k}], #16",
        "add v5.4s, v18.4s, v4.4s",
        "mov v6.16b, v0.16b",
        "sha256h q0, q1, v5.4s",
        "sha256h2 q1, q6, v5.4s",
        "ld1 {{v4.4s}}, [{k}], #16",
        "add v5.4s, v19.4s, v4.4s",
        "mov v6.16b, v0.16b",
        "sha256h q0, q1, v5.4s",
        "sha256h2 q1, q6, v5.4s",
        "add v0.4s, v0.4s, v2.4s",
        "add v1.4s, v1.4s, v3.4s",
        "subs {n}, {n}, #1",
        "b.ne 2b",
        "st1 {{v0.4s, v1.4s}}, [{state}]",
        "ldp q0, q1, [sp, #0]",
        "ldp q2, q3, [sp, #32]",
        "ldp q4, q5, [sp, #64]",
        "ldp q6, q7, [sp, #96]",
        "ldp q16, q17, [sp, #128]",
        "ldp q18, q19, [sp, #160]",
        "add sp, sp, #192",
        state = in(reg) state.as_mut_ptr(),
        data = inout(reg) blocks.as_ptr() => _,
        n = inout(reg) blocks.len() => _,
        ktab = in(reg) K.as_ptr(),
        k = out(reg) _,
        );
    }
}
