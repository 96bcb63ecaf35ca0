// SPDX-License-Identifier: GPL-2.0 OR MIT
//! Fuzz target: see `pvguard_fuzz::mmio`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: pvguard_fuzz::mmio::Input| {
    pvguard_fuzz::mmio::run(&input);
});
