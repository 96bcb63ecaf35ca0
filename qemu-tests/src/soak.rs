// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The SMP soak: a protected guest with several CPUs doing at once what
//! takes the hypervisor's shared state — static-key flips (text patches
//! the hypervisor performs), module loads and unloads (the same, for the
//! modules' own keys, plus new guarded and unguarded pages), and MMIO
//! guard map/unmap calls with guarded accesses in between — then a
//! self-check. `cargo xtask soak` runs many boots of it; the system
//! tests run one.

use std::path::Path;

use crate::{check, Boot, Outcome};

/// Guest CPUs in a soak boot.
pub const CPUS: u32 = 4;

/// The PL031 RTC on QEMU `virt`, which no guest driver maps: the MMIO
/// workers map it (twice, sharing the page), read it, and unmap it.
const RTC: &str = "0x09010000";

/// Rounds each worker makes.
const ROUNDS: u32 = 5;

/// The guest's side: one worker per job, each pinned to a CPU, all at
/// once; every worker says when it is done, and any failed step says so.
fn script() -> String {
    format!(
        r#"cat > /tmp/worker.sh <<'END'
cd /sys/kernel/debug/pvguard
job=$1 cpu=$2
for i in $(seq {ROUNDS}); do
	case $job in
	flipper) echo 20 > kp_flip || echo "soak: flip FAILED on $cpu" ;;
	mmio)
		echo {RTC} > mmio_share || echo "soak: mmio share FAILED on $cpu"
		echo 4 > mmio_fill || echo "soak: mmio fill FAILED on $cpu" ;;
	modules)
		insmod /pvguard/test_static_key_base.ko && insmod /pvguard/test_static_keys.ko &&
			rmmod test_static_keys && rmmod test_static_key_base ||
			echo "soak: module round FAILED on $cpu" ;;
	esac
done
echo "soak: $job $cpu done"
END
taskset -c 0 sh /tmp/worker.sh flipper 0 &
taskset -c 1 sh /tmp/worker.sh flipper 1 &
taskset -c 2 sh /tmp/worker.sh mmio 2 &
taskset -c 3 sh /tmp/worker.sh modules 3 &
wait
echo "soak: $(pvguard self-check)"
echo "soak: cpus $(grep -c ^processor /proc/cpuinfo)"
"#
    )
}

/// How one soak boot is booted.
pub fn boot(kernel_build: &Path) -> Boot {
    let lib = kernel_build.join("lib");
    Boot {
        append: crate::PROTECT.into(),
        cpus: CPUS,
        add: vec![
            lib.join("test_static_key_base.ko"),
            lib.join("test_static_keys.ko"),
        ],
        exec: Some(script()),
        timeout: std::time::Duration::from_secs(300),
        ..Boot::default()
    }
}

/// What one soak boot showed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Result {
    /// Stage-2 faults taken during another CPU's block split and retried.
    pub retries: u64,
    /// Exceptions injected into the guest (none are expected).
    pub faults: u64,
    /// Text patches the hypervisor performed.
    pub patches: u64,
    /// MMIO guard map/unmap hypercalls.
    pub mmio_calls: u64,
    /// Hypervisor exits.
    pub exits: u64,
}

/// Checks one soak boot: every worker finished without a failed step,
/// the guest stayed healthy, nothing was refused, the self-check says
/// intact, and the guest really had [`CPUS`] CPUs.
///
/// # Errors
/// What was wrong, with the console.
pub fn verify(o: &Outcome) -> std::result::Result<Result, String> {
    let expect = [
        "soak: self-check: intact",
        &format!("soak: cpus {CPUS}"),
        "reboot: Power down",
    ];
    check(o, &expect, &[])?;
    let fail = |why: String| Err(format!("{why}\n--- console ---\n{}", o.console));
    for w in [
        "flipper 0 done",
        "flipper 1 done",
        "mmio 2 done",
        "modules 3 done",
    ] {
        if !o.console.contains(&format!("soak: {w}")) {
            return fail(format!("worker did not finish: {w}"));
        }
    }
    if let Some(line) = o.console.lines().find(|l| l.contains("FAILED")) {
        return fail(format!("a step failed: {line}"));
    }
    if !o.clean_exit() {
        return fail(format!("QEMU status {:?}", o.status));
    }
    let Some(s) = o.stats() else {
        return fail("no stats block".into());
    };
    let refused = s.num("kp_patches_refused")
        + s.num("mmio_guard_blocked")
        + s.num("mmio_refused")
        + s.num("ram_faults_refused")
        + s.num("kp_self_check_failures");
    if refused != 0 {
        return fail(format!("{refused} refusals in a workload that makes none"));
    }
    Ok(Result {
        retries: s.num("ram_faults_retried"),
        faults: s.num("aborts_injected") + s.num("undefs_injected"),
        patches: s.num("kp_patches_accepted"),
        mmio_calls: s.num("mmio_guard_hypercalls"),
        exits: s.num("exits_total"),
    })
}
