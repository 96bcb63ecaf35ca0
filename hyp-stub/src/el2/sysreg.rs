// SPDX-License-Identifier: GPL-2.0 OR MIT
//! System register access. Registers the assembler may not know by name
//! are given by their `S<op0>_<op1>_C<n>_C<m>_<op2>` encoding.

/// Reads a system register. Reading has no side effects on memory.
macro_rules! read_sysreg {
    ($name:literal) => {{
        let value: u64;
        // SAFETY: MRS of a system register only reads CPU state.
        #[allow(unused_unsafe)]
        unsafe {
            core::arch::asm!(concat!("mrs {}, ", $name), out(reg) value, options(nomem, nostack, preserves_flags));
        }
        value
    }};
}

/// Writes a system register. Expands to an unsafe operation: the caller
/// states in its own `// SAFETY:` why the write is sound at that point.
macro_rules! write_sysreg {
    ($name:literal, $value:expr) => {
        core::arch::asm!(concat!("msr ", $name, ", {}"), in(reg) ($value as u64), options(nostack, preserves_flags))
    };
}

pub(crate) use {read_sysreg, write_sysreg};

/// Instruction synchronisation barrier.
pub fn isb() {
    // SAFETY: a barrier has no effect on memory safety.
    unsafe { core::arch::asm!("isb", options(nostack, preserves_flags)) }
}

/// Full-system data synchronisation barrier.
pub fn dsb_sy() {
    // SAFETY: a barrier has no effect on memory safety.
    unsafe { core::arch::asm!("dsb sy", options(nostack, preserves_flags)) }
}
