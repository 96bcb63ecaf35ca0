// SPDX-License-Identifier: GPL-2.0 OR MIT
//! pvguard kernel protect: the ABI shared by the guest and the
//! hypervisor (function IDs, region types, error codes and the compact
//! `kernel_asset_info` record), the rules both sides validate it by, the
//! guest's reporting logic, and the rules for text patches (the site
//! registry and the patch policy).
//!
//! The Linux kernel compiles these same files without Cargo, as modules
//! of its own built-in Rust code:
//!
//! ```text
//! #[path = "<copy of guest-kp/src>"]
//! pub mod guest_kp { pub mod abi; pub mod record; pub mod builder; pub mod guest; pub mod mem_perms; pub mod patch; pub mod sites; }
//! ```
//!
//! So this file holds nothing but attributes and the module list; the
//! modules use only `core`, carry no crate-level attributes, name each
//! other through `super::`, and never panic (no `unwrap`, unchecked
//! indexing or overflowing arithmetic).
#![cfg_attr(not(test), no_std)]

pub mod abi;
pub mod builder;
pub mod guest;
pub mod mem_perms;
pub mod patch;
pub mod record;
pub mod sites;
