// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The hypervisor's console: the PL011 of QEMU's `virt` board, polled,
//! shared with the guest (which drives the same UART through trapped,
//! forwarded MMIO).

use core::fmt;

const UART_BASE: usize = 0x0900_0000;
const DR: usize = 0x00;
const FR: usize = 0x18;
const FR_TXFF: u32 = 1 << 5;

/// A writer to the PL011.
pub struct Console;

impl Console {
    fn put(byte: u8) {
        let fr = (UART_BASE + FR) as *const u32;
        let dr = (UART_BASE + DR) as *mut u32;
        // SAFETY: the PL011 registers are device memory at a fixed address
        // that the hypervisor maps (or, with the MMU off, accesses
        // directly); aligned 32-bit accesses are what the device expects.
        unsafe {
            while fr.read_volatile() & FR_TXFF != 0 {}
            dr.write_volatile(u32::from(byte));
        }
    }
}

impl fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                Self::put(b'\r');
            }
            Self::put(b);
        }
        Ok(())
    }
}

/// Prints a line prefixed with `hyp-stub: `.
macro_rules! println {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let mut c = $crate::el2::console::Console;
        let _ = c.write_str("hyp-stub: ");
        let _ = c.write_fmt(format_args!($($arg)*));
        let _ = c.write_str("\n");
    }};
}
pub(crate) use println;
