// SPDX-License-Identifier: GPL-2.0 OR MIT
//! Decoding of the exception syndrome (`ESR_EL2`) of traps from the guest.
//! Raw syndrome bits become typed values here, once.

/// Exception classes the hypervisor distinguishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExceptionClass {
    /// Unknown reason (EC 0x00).
    Unknown,
    /// Trapped WFI/WFE (EC 0x01).
    Wfx,
    /// HVC from AArch64 (EC 0x16).
    Hvc64,
    /// SMC from AArch64 (EC 0x17).
    Smc64,
    /// Trapped MSR/MRS/system instruction (EC 0x18).
    SysReg,
    /// Instruction abort from a lower EL (EC 0x20).
    InstrAbortLower,
    /// Data abort from a lower EL (EC 0x24).
    DataAbortLower,
    /// Anything else.
    Other(u8),
}

/// A syndrome value as read from `ESR_EL2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Esr(pub u64);

impl Esr {
    /// The exception class.
    pub fn class(self) -> ExceptionClass {
        match (self.0 >> 26) & 0x3f {
            0x00 => ExceptionClass::Unknown,
            0x01 => ExceptionClass::Wfx,
            0x16 => ExceptionClass::Hvc64,
            0x17 => ExceptionClass::Smc64,
            0x18 => ExceptionClass::SysReg,
            0x20 => ExceptionClass::InstrAbortLower,
            0x24 => ExceptionClass::DataAbortLower,
            other => ExceptionClass::Other(other as u8),
        }
    }

    /// The instruction-specific syndrome.
    pub fn iss(self) -> u32 {
        (self.0 & 0x1ff_ffff) as u32
    }

    /// Whether the trapped instruction was 32 bits wide.
    pub fn il32(self) -> bool {
        self.0 & (1 << 25) != 0
    }

    /// The immediate of a trapped HVC/SMC.
    pub fn imm16(self) -> u16 {
        (self.0 & 0xffff) as u16
    }

    /// The abort syndrome, for instruction and data aborts.
    pub fn abort(self) -> AbortSyndrome {
        AbortSyndrome(self.iss())
    }
}

/// The kind of fault an abort reports (the DFSC/IFSC field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultStatus {
    /// Translation fault at the given level (-1 to 3: level -1 exists
    /// with 52-bit addresses, FEAT_LPA2).
    Translation(i8),
    /// Access flag fault at the given level.
    AccessFlag(u8),
    /// Permission fault at the given level.
    Permission(u8),
    /// Synchronous external abort.
    External,
    /// Alignment fault.
    Alignment,
    /// Any other status code.
    Other(u8),
}

/// Access width of a data abort with a valid syndrome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    /// 8 bits.
    Byte,
    /// 16 bits.
    Half,
    /// 32 bits.
    Word,
    /// 64 bits.
    Double,
}

impl Width {
    /// Width in bytes.
    pub const fn bytes(self) -> u64 {
        match self {
            Width::Byte => 1,
            Width::Half => 2,
            Width::Word => 4,
            Width::Double => 8,
        }
    }

    /// Mask selecting the low `bytes()` bytes.
    pub const fn mask(self) -> u64 {
        match self {
            Width::Double => u64::MAX,
            w => (1u64 << (w.bytes() * 8)) - 1,
        }
    }
}

/// The ISS of an instruction or data abort.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortSyndrome(pub u32);

impl AbortSyndrome {
    /// ISV: the fields below describing the access are valid.
    pub fn valid(self) -> bool {
        self.0 & (1 << 24) != 0
    }

    /// SAS: access width (valid only if [`Self::valid`]).
    pub fn width(self) -> Width {
        match (self.0 >> 22) & 3 {
            0 => Width::Byte,
            1 => Width::Half,
            2 => Width::Word,
            _ => Width::Double,
        }
    }

    /// SSE: a load that sign-extends.
    pub fn sign_extend(self) -> bool {
        self.0 & (1 << 21) != 0
    }

    /// SRT: the transfer register number (31 means XZR).
    pub fn register(self) -> u8 {
        ((self.0 >> 16) & 0x1f) as u8
    }

    /// SF: the transfer register is 64 bits wide.
    pub fn sixty_four(self) -> bool {
        self.0 & (1 << 15) != 0
    }

    /// S1PTW: the fault happened on a stage-1 table walk.
    pub fn stage1_walk(self) -> bool {
        self.0 & (1 << 7) != 0
    }

    /// WnR: the access was a write.
    pub fn write(self) -> bool {
        self.0 & (1 << 6) != 0
    }

    /// The fault status code.
    pub fn status(self) -> FaultStatus {
        let code = (self.0 & 0x3f) as u8;
        match code {
            0b000100..=0b000111 => FaultStatus::Translation((code & 3) as i8),
            0b101011 => FaultStatus::Translation(-1),
            0b001000..=0b001011 => FaultStatus::AccessFlag(code & 3),
            0b001100..=0b001111 => FaultStatus::Permission(code & 3),
            0b010000 => FaultStatus::External,
            0b100001 => FaultStatus::Alignment,
            _ => FaultStatus::Other(code),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_32bit_store_data_abort() {
        // EC=0x24, IL, ISV, SAS=2, SRT=3, WnR, DFSC=translation level 3.
        let esr = Esr((0x24 << 26) | (1 << 25) | (1 << 24) | (2 << 22) | (3 << 16) | (1 << 6) | 7);
        assert_eq!(esr.class(), ExceptionClass::DataAbortLower);
        let a = esr.abort();
        assert!(a.valid() && a.write() && !a.sign_extend() && !a.sixty_four());
        assert_eq!(a.width(), Width::Word);
        assert_eq!(a.register(), 3);
        assert_eq!(a.status(), FaultStatus::Translation(3));
        // Level -1 (FEAT_LPA2), as QEMU reports for some stage-1 walks.
        assert_eq!(
            Esr(0x8200_00ab).abort().status(),
            FaultStatus::Translation(-1)
        );
        assert!(Esr(0x8200_00ab).abort().stage1_walk());
    }

    #[test]
    fn classes_and_widths() {
        assert_eq!(Esr(0x5a00_0000).class(), ExceptionClass::Hvc64);
        assert_eq!(Esr(0x5e00_0000).class(), ExceptionClass::Smc64);
        assert_eq!(Esr(0x3f << 26).class(), ExceptionClass::Other(0x3f));
        assert_eq!(Width::Half.mask(), 0xffff);
        assert_eq!(Width::Double.mask(), u64::MAX);
    }
}
