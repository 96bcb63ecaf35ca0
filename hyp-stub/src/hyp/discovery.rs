// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The SMCCC discovery calls: SMCCC_VERSION, SMCCC_ARCH_FEATURES, the
//! vendor hypervisor's UID and its features bitmap. Their answers are
//! fixed once the services are registered, and answering them changes
//! nothing but counters, so any CPU gives them without the core's lock:
//! a vCPU probing what the hypervisor offers never waits for another's
//! exit. The core answers them through the same table, so both paths say
//! the same.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::esr::{Esr, ExceptionClass};
use crate::service::{Call, Registry, MAX_SERVICE_IDS};
use crate::smccc;
use crate::stats::{ExitKind, Stats};
use crate::vcpu::Vcpu;

/// The calls answered here, in the order of their counters.
const CALLS: [u32; 4] = [
    smccc::SMCCC_VERSION,
    smccc::SMCCC_ARCH_FEATURES,
    smccc::VENDOR_HYP_UID,
    smccc::VENDOR_HYP_KVM_FEATURES,
];

/// What the answers depend on, fixed at boot.
struct Answers {
    /// The function IDs the services answer.
    service_ids: heapless::Vec<u32, MAX_SERVICE_IDS>,
    /// The KVM vendor-hyp features bitmap (bit N of x0..x3: vendor-hyp
    /// function N is implemented).
    features: [u64; 4],
}

/// The discovery answers, and the calls given without the core's lock.
/// Empty until [`Discovery::fix`]; until then every call goes to the
/// core.
pub struct Discovery {
    answers: spin::Once<Answers>,
    /// Calls answered without the core, per entry of [`CALLS`].
    calls: [AtomicU64; CALLS.len()],
    /// Exits answered without the core: HVC, SMC.
    exits: [AtomicU64; 2],
}

impl Default for Discovery {
    fn default() -> Self {
        Self::new()
    }
}

impl Discovery {
    /// No answers yet.
    pub const fn new() -> Self {
        Self {
            answers: spin::Once::new(),
            calls: [const { AtomicU64::new(0) }; CALLS.len()],
            exits: [const { AtomicU64::new(0) }; 2],
        }
    }

    /// Fixes the answers for the services in `services`; a later call
    /// changes nothing.
    pub fn fix(&self, services: &Registry<'_>) {
        let mut service_ids = heapless::Vec::new();
        let mut features = [1u64 << smccc::KVM_FUNC_FEATURES, 0, 0, 0];
        for s in services.iter() {
            for &fid in s.function_ids() {
                // The registry holds at most MAX_SERVICE_IDS.
                let _ = service_ids.push(fid);
                if let Some(n) = smccc::vendor_hyp_function(fid) {
                    if let Some(word) = features.get_mut(usize::from(n / 32)) {
                        *word |= 1 << (n % 32);
                    }
                }
            }
        }
        self.answers.call_once(|| Answers {
            service_ids,
            features,
        });
    }

    /// The answer to `call`, if it is a discovery call and the answers
    /// are fixed.
    pub fn answer(&self, call: &Call) -> Option<[u64; 4]> {
        let a = self.answers.get()?;
        Some(match call.fid {
            smccc::SMCCC_VERSION => [smccc::VERSION_1_1, 0, 0, 0],
            smccc::SMCCC_ARCH_FEATURES => {
                let queried = call.args[0] as u32;
                let known = matches!(queried, smccc::SMCCC_VERSION | smccc::SMCCC_ARCH_FEATURES)
                    || a.service_ids.contains(&queried);
                [if known { 0 } else { smccc::NOT_SUPPORTED }, 0, 0, 0]
            }
            smccc::VENDOR_HYP_UID => smccc::KVM_UID,
            smccc::VENDOR_HYP_KVM_FEATURES => a.features,
            _ => return None,
        })
    }

    /// Handles an exit without the core if it is an HVC #0 or SMC #0
    /// carrying a discovery call: the answer goes to x0..x3, the PC past
    /// an SMC (ELR already points past an HVC), and the exit is counted
    /// here. False if the exit needs the core.
    pub fn try_exit(&self, esr: Esr, vcpu: &mut Vcpu) -> bool {
        let exit = match esr.class() {
            ExceptionClass::Hvc64 => 0,
            ExceptionClass::Smc64 => 1,
            _ => return false,
        };
        if esr.imm16() != 0 {
            return false;
        }
        let call = Call::from_regs(&vcpu.regs);
        let (Some(answer), Some(i)) = (
            self.answer(&call),
            CALLS.iter().position(|&f| f == call.fid),
        ) else {
            return false;
        };
        vcpu.regs.x[..4].copy_from_slice(&answer);
        if exit == 1 {
            vcpu.pc = vcpu.pc.wrapping_add(4);
        }
        self.calls[i].fetch_add(1, Ordering::Relaxed);
        self.exits[exit].fetch_add(1, Ordering::Relaxed);
        true
    }

    /// `stats` with the exits and calls answered here added.
    pub fn add_to(&self, stats: &Stats) -> Stats {
        let mut all = stats.clone();
        for (kind, n) in [ExitKind::Hvc, ExitKind::Smc].into_iter().zip(&self.exits) {
            all.add_exits(kind, n.load(Ordering::Relaxed));
        }
        for (&fid, n) in CALLS.iter().zip(&self.calls) {
            all.add_calls(fid, n.load(Ordering::Relaxed));
        }
        all
    }

    /// Exits answered without the core so far.
    pub fn exits(&self) -> u64 {
        self.exits.iter().map(|n| n.load(Ordering::Relaxed)).sum()
    }
}
