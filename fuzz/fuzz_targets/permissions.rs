// SPDX-License-Identifier: GPL-2.0 OR MIT
//! Fuzz target: see `pvguard_fuzz::permissions`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: pvguard_fuzz::permissions::Input| {
    let _ = pvguard_fuzz::permissions::run(&input);
});
