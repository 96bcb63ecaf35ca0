// SPDX-License-Identifier: GPL-2.0 OR MIT
//! pvguard's built-in kernel code, the part that does not need the kernel
//! crate: command-line parsing, the enrollment state machine and the text
//! of the sysfs files. The kernel compiles these same files as modules of
//! `kernel/pvguard.rs` (its crate root, which adds the `extern "C"` entry
//! points the C hook points call); on the host they are tested here.
//!
//! Modules refer to the shared crates as `crate::mmio_guard`, which the
//! re-exports below provide on the host and the kernel crate root
//! provides as modules.
#![cfg_attr(not(test), no_std)]

pub use ::guest_kp;
pub use ::mmio_guard;

pub mod cmdline;
pub mod code;
pub mod kp;
pub mod mmio;
pub mod text;
