// SPDX-License-Identifier: GPL-2.0 OR MIT
//! Fuzz target: see `pvguard_fuzz::patch`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: pvguard_fuzz::patch::Input| {
    let _ = pvguard_fuzz::patch::run(&input);
});
