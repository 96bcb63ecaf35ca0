// SPDX-License-Identifier: GPL-2.0 OR MIT
//! Replays corpus files through the exit-path (or patch) harness and
//! prints how many inputs reached each service, state and outcome: the
//! evidence that the fuzzer gets past parsing and into every state.
//!
//! `cargo +nightly run --release --example reach -- exit_path corpus/exit_path`

use arbitrary::{Arbitrary, Unstructured};
use pvguard_fuzz::exit_path::Reach;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((target, dirs)) = args.split_first() else {
        eprintln!("usage: reach exit_path|patch DIR...");
        std::process::exit(2);
    };
    let mut inputs = 0u64;
    let mut sum = Reach::default();
    let mut with = [0u64; 10];
    for dir in dirs {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{dir}: {e}"));
        for e in entries.flatten() {
            let Ok(bytes) = std::fs::read(e.path()) else {
                continue;
            };
            let mut u = Unstructured::new(&bytes);
            let r = match target.as_str() {
                "exit_path" => match pvguard_fuzz::exit_path::Input::arbitrary_take_rest(u) {
                    Ok(i) => pvguard_fuzz::exit_path::run(&i),
                    Err(_) => continue,
                },
                "patch" => match pvguard_fuzz::patch::Input::arbitrary(&mut u) {
                    Ok(i) => pvguard_fuzz::patch::run(&i),
                    Err(_) => continue,
                },
                t => panic!("unknown target {t}"),
            };
            inputs += 1;
            for (n, hit) in with.iter_mut().zip([
                r.guard_calls > 0,
                r.kp_calls > 0,
                r.mmio_emulated > 0,
                r.mmio_refused > 0,
                r.enrolled,
                r.reported,
                r.protected,
                r.patches > 0,
                r.self_checks > 0,
                r.protect_vm_assets > 0,
            ]) {
                *n += u64::from(hit);
            }
            sum.exits += r.exits;
            sum.service_calls += r.service_calls;
            sum.mmio_emulated += r.mmio_emulated;
            sum.patches += r.patches;
            sum.self_checks += r.self_checks;
            sum.ram_refused += r.ram_refused;
            sum.ram_retried += r.ram_retried;
            sum.cpus_started += r.cpus_started;
            sum.power_downs += r.power_downs;
            sum.cpus_off += r.cpus_off;
        }
    }
    println!("inputs={inputs}");
    for (name, n) in [
        "inputs_with_guard_calls",
        "inputs_with_kp_calls",
        "inputs_with_mmio_emulated",
        "inputs_with_mmio_refused",
        "inputs_enrolled",
        "inputs_reported",
        "inputs_protected",
        "inputs_with_patches",
        "inputs_with_self_checks",
        "inputs_with_hvc_0x6094",
    ]
    .iter()
    .zip(with)
    {
        println!("{name}={n}");
    }
    println!("exits={}", sum.exits);
    println!("service_calls={}", sum.service_calls);
    println!("mmio_emulated={}", sum.mmio_emulated);
    println!("patches={}", sum.patches);
    println!("self_checks={}", sum.self_checks);
    println!("ram_faults_refused={}", sum.ram_refused);
    println!("ram_faults_retried={}", sum.ram_retried);
    println!("cpus_started={}", sum.cpus_started);
    println!("power_downs={}", sum.power_downs);
    println!("cpus_off={}", sum.cpus_off);
}
