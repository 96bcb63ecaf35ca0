// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The `pvguard=` kernel parameter.

/// What the command line asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Not requested: pvguard stays out of the way.
    Off,
    /// Enroll if the hypervisor offers it; boot unprotected otherwise.
    On,
    /// Enroll, or refuse to boot.
    Strict,
}

/// Why a `pvguard=` value was not understood.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadValue;

impl Mode {
    /// Parses the value of `pvguard=` (`off`, `on`, `strict`; a bare
    /// `pvguard` means `on`).
    ///
    /// # Errors
    /// [`BadValue`] for anything else.
    pub fn parse(value: Option<&[u8]>) -> Result<Self, BadValue> {
        match value {
            None | Some(b"") | Some(b"on") | Some(b"1") => Ok(Mode::On),
            Some(b"off") | Some(b"0") => Ok(Mode::Off),
            Some(b"strict") => Ok(Mode::Strict),
            Some(_) => Err(BadValue),
        }
    }

    /// The name used in messages and sysfs.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::On => "on",
            Mode::Strict => "strict",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values() {
        assert_eq!(Mode::parse(None), Ok(Mode::On));
        assert_eq!(Mode::parse(Some(b"strict")), Ok(Mode::Strict));
        assert_eq!(Mode::parse(Some(b"off")), Ok(Mode::Off));
        assert_eq!(Mode::parse(Some(b"yes please")), Err(BadValue));
    }
}
