// SPDX-License-Identifier: GPL-2.0 OR MIT
//! pvguard MMIO guard: the ABI shared by the guest and the hypervisor, and
//! the guest's logic for telling the hypervisor which MMIO it uses.
//!
//! The modules below contain no crate-level attributes and refer to each
//! other through `super::`, because the kernel compiles them as modules of
//! its own built-in Rust code (it cannot link external crates).
#![cfg_attr(not(test), no_std)]

pub mod abi;
pub mod guard;
pub mod tracker;
