// SPDX-License-Identifier: GPL-2.0 OR MIT
//! Formatting into a fixed buffer (a sysfs page), truncating rather than
//! failing when the text does not fit.

use core::fmt;

/// A `fmt::Write` into a byte slice.
pub struct SliceWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
    truncated: bool,
}

impl<'a> SliceWriter<'a> {
    /// A writer filling `buf` from the start.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Self {
            buf,
            len: 0,
            truncated: false,
        }
    }

    /// Bytes written.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether some text did not fit.
    pub fn truncated(&self) -> bool {
        self.truncated
    }
}

impl fmt::Write for SliceWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len().saturating_sub(self.len);
        let n = s.len().min(room);
        if let Some(dst) = self.buf.get_mut(self.len..self.len + n) {
            dst.copy_from_slice(&s.as_bytes()[..n]);
            self.len += n;
        }
        if n < s.len() {
            self.truncated = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write;

    #[test]
    fn truncates() {
        let mut buf = [0u8; 8];
        let mut w = SliceWriter::new(&mut buf);
        write!(w, "hello {}", 12345).unwrap();
        assert_eq!(w.len(), 8);
        assert!(w.truncated());
        assert_eq!(&buf, b"hello 12");
    }
}
