// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The services the hypervisor offers, each behind [`crate::service::Service`].

pub mod kernel_protect;
pub mod mmio_guard;
