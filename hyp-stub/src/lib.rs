// SPDX-License-Identifier: GPL-2.0 OR MIT
//! hyp-stub: the decision logic of pvguard's minimal EL2 hypervisor.
//!
//! Everything here is plain Rust that runs under `cargo test` on the host:
//! hypercall dispatch, syndrome decoding, stage-2 table construction,
//! device-tree rewriting, the service registry and its counters. Only the
//! entry code, exception vectors and system-register access in `main.rs`
//! (built for `aarch64-unknown-none-softfloat`) touch hardware.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![forbid(unsafe_code)]

pub mod addr;
pub mod boot;
pub mod devices;
pub mod esr;
pub mod fdt;
pub mod hyp;
pub mod service;
pub mod services;
pub mod sha256;
pub mod smccc;
pub mod stage2;
pub mod stats;
pub mod vcpu;

#[cfg(test)]
mod test_fdt;
