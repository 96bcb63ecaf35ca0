// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The guest vCPU's trapped state and exception injection into EL1.

/// General-purpose registers x0..x30 as the exception vectors save them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct GuestRegs {
    /// x0..x30.
    pub x: [u64; 31],
}

impl GuestRegs {
    /// Register `n` as an instruction operand sees it (31 reads as zero).
    pub fn get(&self, n: u8) -> u64 {
        self.x.get(usize::from(n)).copied().unwrap_or(0)
    }

    /// Writes register `n` (writes to 31, XZR, are discarded).
    pub fn set(&mut self, n: u8, value: u64) {
        if let Some(r) = self.x.get_mut(usize::from(n)) {
            *r = value;
        }
    }
}

/// Everything the exit handlers read and change about the vCPU.
#[derive(Clone, Debug, Default)]
pub struct Vcpu {
    /// General-purpose registers.
    pub regs: GuestRegs,
    /// Guest PC to resume at (`ELR_EL2`).
    pub pc: u64,
    /// Guest PSTATE to resume with (`SPSR_EL2`).
    pub pstate: u64,
}

/// The guest's EL1 registers an injection reads.
#[derive(Clone, Copy, Debug, Default)]
pub struct El1Context {
    /// `VBAR_EL1`.
    pub vbar: u64,
    /// `SCTLR_EL1`.
    pub sctlr: u64,
}

/// The EL1 registers an injected exception sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct El1Exception {
    /// `ESR_EL1`.
    pub esr: u64,
    /// `FAR_EL1`.
    pub far: u64,
    /// `ELR_EL1`: where the guest was.
    pub elr: u64,
    /// `SPSR_EL1`: the guest's PSTATE before the exception.
    pub spsr: u64,
}

/// An exception the hypervisor makes the guest take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Injection {
    /// Synchronous external abort on a data access at `far`.
    DataAbort {
        /// Faulting virtual address.
        far: u64,
        /// Whether the access was a write.
        write: bool,
    },
    /// Permission fault (level 3) on a data access at `far`, as the
    /// guest's own stage-1 tables would raise it: unlike an external
    /// abort, Linux resolves it through the exception table when the
    /// access was made by `copy_to_kernel_nofault()` (text patching), so
    /// the patcher gets `-EFAULT` instead of an oops.
    PermissionFault {
        /// Faulting virtual address.
        far: u64,
        /// Whether the access was a write.
        write: bool,
    },
    /// Synchronous external abort on an instruction fetch at `far`.
    InstrAbort {
        /// Faulting virtual address.
        far: u64,
    },
    /// Undefined instruction.
    Undefined,
}

const PSTATE_MODE_MASK: u64 = 0x1f;
const MODE_EL0T: u64 = 0b00000;
const MODE_EL1T: u64 = 0b00100;
const MODE_EL1H: u64 = 0b00101;
const PSTATE_DAIF: u64 = 0xf << 6;
const PSTATE_PAN: u64 = 1 << 22;
const PSTATE_SSBS: u64 = 1 << 12;
const SCTLR_SPAN: u64 = 1 << 23;
const SCTLR_DSSBS: u64 = 1 << 44;
const ESR_IL: u64 = 1 << 25;
const FSC_EXTERNAL: u64 = 0x10;
/// DFSC 0b001111: permission fault, level 3.
const FSC_PERMISSION_L3: u64 = 0x0f;
/// ISS.WnR: the access was a write.
const ISS_WNR: u64 = 1 << 6;

impl Vcpu {
    fn at_el0(&self) -> bool {
        self.pstate & PSTATE_MODE_MASK == MODE_EL0T
    }

    /// Makes the guest take `what` at its EL1 vector: returns the EL1
    /// registers to write and moves `pc`/`pstate` to the vector entry.
    pub fn inject(&mut self, what: Injection, el1: El1Context) -> El1Exception {
        let from_el0 = self.at_el0();
        let (ec, iss, far) = match what {
            // Data abort from a lower / the same EL.
            Injection::DataAbort { far, write } => (
                if from_el0 { 0x24 } else { 0x25 },
                FSC_EXTERNAL | if write { ISS_WNR } else { 0 },
                far,
            ),
            Injection::PermissionFault { far, write } => (
                if from_el0 { 0x24 } else { 0x25 },
                FSC_PERMISSION_L3 | if write { ISS_WNR } else { 0 },
                far,
            ),
            Injection::InstrAbort { far } => {
                (if from_el0 { 0x20 } else { 0x21 }, FSC_EXTERNAL, far)
            }
            Injection::Undefined => (0x00, 0, 0),
        };
        let offset = match self.pstate & PSTATE_MODE_MASK {
            MODE_EL1T => 0x000,
            MODE_EL1H => 0x200,
            m if m & 0x10 == 0 => 0x400, // AArch64 EL0
            _ => 0x600,                  // AArch32 EL0
        };
        let exception = El1Exception {
            esr: (ec << 26) | ESR_IL | iss,
            far,
            elr: self.pc,
            spsr: self.pstate,
        };
        // PSTATE on entry to EL1, as the architecture sets it: EL1h,
        // interrupts masked, PAN set unless SCTLR_EL1.SPAN says keep it,
        // SSBS from SCTLR_EL1.DSSBS.
        let mut pstate = MODE_EL1H | PSTATE_DAIF;
        if el1.sctlr & SCTLR_SPAN == 0 {
            pstate |= PSTATE_PAN;
        } else {
            pstate |= self.pstate & PSTATE_PAN;
        }
        if el1.sctlr & SCTLR_DSSBS != 0 {
            pstate |= PSTATE_SSBS;
        }
        self.pc = el1.vbar.wrapping_add(offset);
        self.pstate = pstate;
        exception
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_abort_from_el1h_goes_to_current_el_vector() {
        let mut v = Vcpu {
            pc: 0xffff_8000_1000,
            pstate: MODE_EL1H | PSTATE_PAN,
            ..Default::default()
        };
        let e = v.inject(
            Injection::DataAbort {
                far: 0x1234,
                write: true,
            },
            El1Context {
                vbar: 0xffff_8000_0000_0000,
                sctlr: SCTLR_SPAN,
            },
        );
        assert_eq!(e.esr >> 26, 0x25);
        assert_eq!(e.esr & 0x3f, 0x10);
        assert_ne!(e.esr & (1 << 6), 0);
        assert_eq!(e.elr, 0xffff_8000_1000);
        assert_eq!(e.far, 0x1234);
        assert_eq!(v.pc, 0xffff_8000_0000_0200);
        assert_eq!(v.pstate, MODE_EL1H | PSTATE_DAIF | PSTATE_PAN);
    }

    #[test]
    fn permission_fault_is_a_same_el_level_3_permission_fault() {
        let mut v = Vcpu {
            pc: 0xffff_8000_8012_3450,
            pstate: MODE_EL1H,
            ..Default::default()
        };
        let e = v.inject(
            Injection::PermissionFault {
                far: 0xffff_7fff_fe7f_d234,
                write: true,
            },
            El1Context {
                vbar: 0xffff_8000_8001_0000,
                sctlr: 0,
            },
        );
        // EC 0x25 (data abort, same EL), IL, WnR, DFSC 0b001111; ISV,
        // FnV and everything else clear.
        assert_eq!(e.esr, (0x25 << 26) | (1 << 25) | (1 << 6) | 0x0f);
        assert_eq!(e.far, 0xffff_7fff_fe7f_d234);
        assert_eq!(e.elr, 0xffff_8000_8012_3450);
        assert_eq!(v.pc, 0xffff_8000_8001_0200, "current EL, SP_ELx vector");
        let e = v.inject(
            Injection::PermissionFault {
                far: 8,
                write: false,
            },
            El1Context::default(),
        );
        assert_eq!(e.esr & 0x7f, 0x0f, "a read: WnR clear");
    }

    #[test]
    fn aborts_from_el0_use_lower_el_vector_and_class() {
        let mut v = Vcpu {
            pc: 0x400000,
            pstate: MODE_EL0T,
            ..Default::default()
        };
        let e = v.inject(
            Injection::InstrAbort { far: 0x400000 },
            El1Context {
                vbar: 0x1000,
                sctlr: 0,
            },
        );
        assert_eq!(e.esr >> 26, 0x20);
        assert_eq!(v.pc, 0x1400);
        assert_ne!(v.pstate & PSTATE_PAN, 0, "SPAN clear: PAN set on entry");
    }

    #[test]
    fn xzr_reads_zero_and_ignores_writes() {
        let mut r = GuestRegs::default();
        r.set(31, 5);
        assert_eq!(r.get(31), 0);
        r.set(30, 7);
        assert_eq!(r.get(30), 7);
    }
}
