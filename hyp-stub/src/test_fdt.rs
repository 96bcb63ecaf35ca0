// SPDX-License-Identifier: GPL-2.0 OR MIT
//! A device-tree blob builder for host tests: nodes and properties in the
//! order given, the strings block built as names are used.

use std::vec::Vec;

const BEGIN_NODE: u32 = 1;
const END_NODE: u32 = 2;
const PROP: u32 = 3;
const END: u32 = 9;

/// Builds a flattened device tree (version 17).
#[derive(Default)]
pub struct Builder {
    structs: Vec<u8>,
    strings: Vec<u8>,
}

impl Builder {
    fn word(&mut self, v: u32) {
        self.structs.extend_from_slice(&v.to_be_bytes());
    }

    fn pad(&mut self) {
        while !self.structs.len().is_multiple_of(4) {
            self.structs.push(0);
        }
    }

    /// Opens a node (the root is `""`).
    pub fn begin(&mut self, name: &str) -> &mut Self {
        self.word(BEGIN_NODE);
        self.structs.extend_from_slice(name.as_bytes());
        self.structs.push(0);
        self.pad();
        self
    }

    /// Closes the innermost open node.
    pub fn end(&mut self) -> &mut Self {
        self.word(END_NODE);
        self
    }

    /// A property with a raw value.
    pub fn prop(&mut self, name: &str, value: &[u8]) -> &mut Self {
        let mut off = 0;
        let mut found = None;
        for s in self.strings.split(|&b| b == 0) {
            if s == name.as_bytes() {
                found = Some(off);
                break;
            }
            off += s.len() + 1;
        }
        let nameoff = found.unwrap_or_else(|| {
            let at = self.strings.len();
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            at
        });
        self.word(PROP);
        self.word(value.len() as u32);
        self.word(nameoff as u32);
        self.structs.extend_from_slice(value);
        self.pad();
        self
    }

    /// A property of 32-bit cells.
    pub fn cells(&mut self, name: &str, cells: &[u32]) -> &mut Self {
        let v: Vec<u8> = cells.iter().flat_map(|c| c.to_be_bytes()).collect();
        self.prop(name, &v)
    }

    /// A string property.
    pub fn string(&mut self, name: &str, value: &str) -> &mut Self {
        let mut v = value.as_bytes().to_vec();
        v.push(0);
        self.prop(name, &v)
    }

    /// The blob.
    pub fn finish(&mut self) -> Vec<u8> {
        self.word(END);
        let header = 40;
        let off_rsv = header;
        let off_struct = off_rsv + 16;
        let off_strings = off_struct + self.structs.len();
        let total = off_strings + self.strings.len();
        let mut blob = Vec::new();
        for v in [
            0xd00d_feed,
            total as u32,
            off_struct as u32,
            off_strings as u32,
            off_rsv as u32,
            17,
            16,
            0,
            self.strings.len() as u32,
            self.structs.len() as u32,
        ] {
            blob.extend_from_slice(&v.to_be_bytes());
        }
        blob.extend_from_slice(&[0; 16]);
        blob.extend_from_slice(&self.structs);
        blob.extend_from_slice(&self.strings);
        blob
    }
}
