// SPDX-License-Identifier: GPL-2.0 OR MIT
//! Fuzz target: see `pvguard_fuzz::exit_path`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: pvguard_fuzz::exit_path::Input| {
    let _ = pvguard_fuzz::exit_path::run(&input);
});
