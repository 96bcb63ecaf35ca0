// SPDX-License-Identifier: GPL-2.0 OR MIT
//! Harnesses for pvguard's coverage-guided fuzz targets: the fake
//! machine the hypervisor core runs on, the structured inputs, and the
//! invariants checked after every input. The targets in `fuzz_targets/`
//! are one line each; the logic lives here so that it is unit-tested
//! too and shared between targets.

pub mod exit_path;
pub mod invariants;
pub mod machine;
pub mod mmio;
pub mod patch;
pub mod permissions;
pub mod record;
