// SPDX-License-Identifier: GPL-2.0 OR MIT
//! Fuzz target: see `pvguard_fuzz::record`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: pvguard_fuzz::record::Input| {
    pvguard_fuzz::record::run(&input);
});
