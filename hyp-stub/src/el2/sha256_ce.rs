// SPDX-License-Identifier: GPL-2.0 OR MIT
//! SHA-256 block function with the CPU's SHA-256 instructions
//! (FEAT_SHA256), for measuring guest memory quickly. The hypervisor is
//! built soft-float and never otherwise touches FP/SIMD registers, which
//! hold the guest's state: the registers used here are saved on the stack
//! and restored before returning.

use hyp_stub::sha256::{self, CompressFn};

use super::sysreg::read_sysreg;

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

/// Four rounds on message quad `$w` (with its round constants, loaded
/// from `{k}`), and the schedule step that replaces `$w` with the quad
/// needed 16 rounds later, computed from `$w` and the next three quads
/// `$w1`, `$w2`, `$w3`.
#[rustfmt::skip]
macro_rules! rounds_and_schedule {
    ($w:literal, $w1:literal, $w2:literal, $w3:literal) => {
        concat!(
            "ld1 {{v4.4s}}, [{k}], #16\n",
            "add v5.4s, ", $w, ".4s, v4.4s\n",
            "sha256su0 ", $w, ".4s, ", $w1, ".4s\n",
            "mov v6.16b, v0.16b\n",
            "sha256h q0, q1, v5.4s\n",
            "sha256h2 q1, q6, v5.4s\n",
            "sha256su1 ", $w, ".4s, ", $w2, ".4s, ", $w3, ".4s\n",
        )
    };
}

/// Four rounds on message quad `$w`, for the last 16 rounds, whose
/// schedule needs no extending.
#[rustfmt::skip]
macro_rules! rounds {
    ($w:literal) => {
        concat!(
            "ld1 {{v4.4s}}, [{k}], #16\n",
            "add v5.4s, ", $w, ".4s, v4.4s\n",
            "mov v6.16b, v0.16b\n",
            "sha256h q0, q1, v5.4s\n",
            "sha256h2 q1, q6, v5.4s\n",
        )
    };
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
        rounds_and_schedule!("v16", "v17", "v18", "v19"),
        rounds_and_schedule!("v17", "v18", "v19", "v16"),
        rounds_and_schedule!("v18", "v19", "v16", "v17"),
        rounds_and_schedule!("v19", "v16", "v17", "v18"),
        rounds_and_schedule!("v16", "v17", "v18", "v19"),
        rounds_and_schedule!("v17", "v18", "v19", "v16"),
        rounds_and_schedule!("v18", "v19", "v16", "v17"),
        rounds_and_schedule!("v19", "v16", "v17", "v18"),
        rounds_and_schedule!("v16", "v17", "v18", "v19"),
        rounds_and_schedule!("v17", "v18", "v19", "v16"),
        rounds_and_schedule!("v18", "v19", "v16", "v17"),
        rounds_and_schedule!("v19", "v16", "v17", "v18"),
        rounds!("v16"),
        rounds!("v17"),
        rounds!("v18"),
        rounds!("v19"),
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
        ktab = in(reg) sha256::ROUND_CONSTANTS.as_ptr(),
        k = out(reg) _,
        );
    }
}
