// SPDX-License-Identifier: GPL-2.0 OR MIT
//! Typed addresses. The hypervisor deals in three address spaces that must
//! never be mixed up: host physical addresses, guest intermediate physical
//! addresses (what the guest calls physical), and guest virtual addresses
//! (only ever compared, never dereferenced by the hypervisor).

use core::fmt;

macro_rules! address_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[repr(transparent)]
        pub struct $name(pub u64);

        impl $name {
            /// The raw value.
            pub const fn get(self) -> u64 {
                self.0
            }

            /// This address plus `offset`, or `None` if it wraps.
            pub const fn checked_add(self, offset: u64) -> Option<Self> {
                match self.0.checked_add(offset) {
                    Some(v) => Some(Self(v)),
                    None => None,
                }
            }

            /// Whether the address is a multiple of `align` (a power of two).
            pub const fn is_aligned(self, align: u64) -> bool {
                self.0 & (align - 1) == 0
            }

            /// Rounds down to a multiple of `align` (a power of two).
            pub const fn align_down(self, align: u64) -> Self {
                Self(self.0 & !(align - 1))
            }
        }

        impl fmt::LowerHex for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::LowerHex::fmt(&self.0, f)
            }
        }
    };
}

address_type!(
    /// A host physical address.
    PhysAddr
);
address_type!(
    /// A guest intermediate physical address (stage-2 input).
    Ipa
);
address_type!(
    /// A guest virtual address (stage-1 input of the guest's own tables).
    GuestVa
);

/// A half-open range `[start, end)` of guest IPAs, never empty or wrapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpaRange {
    start: Ipa,
    end: Ipa,
}

impl IpaRange {
    /// The range `[start, start + size)`, or `None` if it is empty or wraps.
    pub const fn new(start: Ipa, size: u64) -> Option<Self> {
        if size == 0 {
            return None;
        }
        match start.checked_add(size) {
            Some(end) => Some(Self { start, end }),
            None => None,
        }
    }

    /// First address of the range.
    pub const fn start(&self) -> Ipa {
        self.start
    }

    /// First address past the range.
    pub const fn end(&self) -> Ipa {
        self.end
    }

    /// Size in bytes.
    pub const fn size(&self) -> u64 {
        self.end.0 - self.start.0
    }

    /// Whether `ipa` lies inside the range.
    pub const fn contains(&self, ipa: Ipa) -> bool {
        ipa.0 >= self.start.0 && ipa.0 < self.end.0
    }

    /// Whether `other` lies entirely inside this range.
    pub const fn covers(&self, other: &IpaRange) -> bool {
        other.start.0 >= self.start.0 && other.end.0 <= self.end.0
    }

    /// Whether the two ranges share at least one byte.
    pub const fn overlaps(&self, other: &IpaRange) -> bool {
        self.start.0 < other.end.0 && other.start.0 < self.end.0
    }
}

impl From<guest_kp::record::IpaSpan> for IpaRange {
    /// A span the guest reported: already checked to be non-empty and not
    /// to wrap.
    fn from(span: guest_kp::record::IpaSpan) -> Self {
        Self {
            start: Ipa(span.start()),
            end: Ipa(span.end()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_reject_empty_and_wrapping() {
        assert!(IpaRange::new(Ipa(0x1000), 0).is_none());
        assert!(IpaRange::new(Ipa(u64::MAX - 10), 11).is_none());
        let r = IpaRange::new(Ipa(0x1000), 0x1000).unwrap();
        assert!(r.contains(Ipa(0x1fff)) && !r.contains(Ipa(0x2000)));
        let s = IpaRange::new(Ipa(0x1800), 0x1000).unwrap();
        assert!(r.overlaps(&s) && !r.covers(&s));
    }
}
