// SPDX-License-Identifier: GPL-2.0 OR MIT
//! hyp-stub entry point. The hypervisor only exists for the bare-metal
//! target (`aarch64-unknown-none-softfloat`, so that it never touches the
//! guest's FP/SIMD registers); on the host this builds a placeholder that
//! says how to build it.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

#[cfg(target_os = "none")]
mod el2;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("hyp-stub runs at EL2: build it with `cargo xtask hyp`");
    std::process::exit(2);
}
