// SPDX-License-Identifier: GPL-2.0 OR MIT
//! Reading and rewriting the flattened device tree QEMU generates, so the
//! guest is told only about guest memory and finds its initramfs.
//!
//! The rewrite is a single pass over the structure block that copies every
//! token, replaces the memory node's `reg` and sets properties of
//! `/chosen` (adding them when absent). The input is never modified.

/// Why a device tree could not be read or rewritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdtError {
    /// Not a flattened device tree (bad magic or version).
    BadHeader,
    /// A block or token runs past the end of the blob.
    Truncated,
    /// A structure token is not one of the defined ones.
    BadToken,
    /// The output buffer is too small.
    NoSpace,
    /// No memory node, or one that cannot be parsed.
    NoMemory,
    /// A `reg` or `ranges` whose cell counts or length do not parse.
    BadCells,
}

const MAGIC: u32 = 0xd00d_feed;
const BEGIN_NODE: u32 = 1;
const END_NODE: u32 = 2;
const PROP: u32 = 3;
const NOP: u32 = 4;
const END: u32 = 9;
const HEADER_SIZE: usize = 40;

fn be32(b: &[u8], off: usize) -> Result<u32, FdtError> {
    let s = b.get(off..off + 4).ok_or(FdtError::Truncated)?;
    Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// One structure token, borrowed from the blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token<'a> {
    Begin(&'a [u8]),
    End,
    Prop { name: &'a [u8], value: &'a [u8] },
    Nop,
    Finish,
}

/// A validated device tree blob.
#[derive(Clone, Copy)]
pub struct Fdt<'a> {
    blob: &'a [u8],
    structs: &'a [u8],
    strings: &'a [u8],
    rsvmap: &'a [u8],
}

impl<'a> Fdt<'a> {
    /// Validates the header of `blob`, which may be longer than the tree.
    ///
    /// # Errors
    /// [`FdtError::BadHeader`] or [`FdtError::Truncated`].
    pub fn new(blob: &'a [u8]) -> Result<Self, FdtError> {
        if be32(blob, 0)? != MAGIC || be32(blob, 24)? < 16 {
            return Err(FdtError::BadHeader);
        }
        let total = be32(blob, 4)? as usize;
        let blob = blob.get(..total).ok_or(FdtError::Truncated)?;
        let field = |off| be32(blob, off).map(|v| v as usize);
        let (off_struct, off_strings, off_rsv) = (field(8)?, field(12)?, field(16)?);
        let (size_strings, size_struct) = (field(32)?, field(36)?);
        let structs = blob
            .get(
                off_struct
                    ..off_struct
                        .checked_add(size_struct)
                        .ok_or(FdtError::Truncated)?,
            )
            .ok_or(FdtError::Truncated)?;
        let strings = blob
            .get(
                off_strings
                    ..off_strings
                        .checked_add(size_strings)
                        .ok_or(FdtError::Truncated)?,
            )
            .ok_or(FdtError::Truncated)?;
        // The reservation map ends with an all-zero entry.
        let mut end = off_rsv;
        loop {
            let entry = blob.get(end..end + 16).ok_or(FdtError::Truncated)?;
            end += 16;
            if entry.iter().all(|&b| b == 0) {
                break;
            }
        }
        Ok(Self {
            blob,
            structs,
            strings,
            rsvmap: &blob[off_rsv..end],
        })
    }

    /// Size of the blob as its header states.
    pub fn total_size(&self) -> usize {
        self.blob.len()
    }

    fn string(&self, off: usize) -> Result<&'a [u8], FdtError> {
        let s = self.strings.get(off..).ok_or(FdtError::Truncated)?;
        let len = s.iter().position(|&b| b == 0).ok_or(FdtError::Truncated)?;
        Ok(&s[..len])
    }

    fn token(&self, off: usize) -> Result<(Token<'a>, usize), FdtError> {
        let s = self.structs;
        match be32(s, off)? {
            BEGIN_NODE => {
                let rest = s.get(off + 4..).ok_or(FdtError::Truncated)?;
                let len = rest
                    .iter()
                    .position(|&b| b == 0)
                    .ok_or(FdtError::Truncated)?;
                Ok((Token::Begin(&rest[..len]), off + 4 + align4(len + 1)))
            }
            END_NODE => Ok((Token::End, off + 4)),
            PROP => {
                let len = be32(s, off + 4)? as usize;
                let name = self.string(be32(s, off + 8)? as usize)?;
                let value = s.get(off + 12..off + 12 + len).ok_or(FdtError::Truncated)?;
                Ok((Token::Prop { name, value }, off + 12 + align4(len)))
            }
            NOP => Ok((Token::Nop, off + 4)),
            END => Ok((Token::Finish, off + 4)),
            _ => Err(FdtError::BadToken),
        }
    }

    /// The one walk over the structure block: calls `f(depth, token)` for
    /// every token up to the end. `depth` counts the nodes open around the
    /// token, a node's own begin and end tokens included (the root's are at
    /// depth 1).
    fn walk(
        &self,
        mut f: impl FnMut(usize, Token<'a>) -> Result<(), FdtError>,
    ) -> Result<(), FdtError> {
        let mut off = 0;
        let mut depth = 0usize;
        loop {
            let (tok, next) = self.token(off)?;
            off = next;
            match tok {
                Token::Begin(_) => {
                    depth += 1;
                    f(depth, tok)?;
                }
                Token::End => {
                    f(depth, tok)?;
                    depth = depth.checked_sub(1).ok_or(FdtError::BadToken)?;
                }
                Token::Prop { .. } => f(depth, tok)?,
                Token::Nop => {}
                Token::Finish => return Ok(()),
            }
        }
    }

    /// Calls `f(path, prop_name, value)` for every property, where `path`
    /// names the nodes from the root (`""`) down to the property's own.
    fn for_each_prop(
        &self,
        mut f: impl FnMut(&[&'a [u8]], &'a [u8], &'a [u8]),
    ) -> Result<(), FdtError> {
        let mut names: [&'a [u8]; 16] = [b""; 16];
        self.walk(|depth, tok| {
            match tok {
                Token::Begin(name) => {
                    if let Some(slot) = names.get_mut(depth - 1) {
                        *slot = name;
                    }
                }
                Token::Prop { name, value } => {
                    f(&names[..depth.min(names.len())], name, value);
                }
                _ => {}
            }
            Ok(())
        })
    }

    fn cells(&self) -> Result<(usize, usize), FdtError> {
        let (mut addr, mut size) = (2, 1);
        self.for_each_prop(|path, name, value| {
            if path.len() == 1 && value.len() == 4 {
                let v = u32::from_be_bytes([value[0], value[1], value[2], value[3]]) as usize;
                match name {
                    b"#address-cells" => addr = v,
                    b"#size-cells" => size = v,
                    _ => {}
                }
            }
        })?;
        if !(1..=2).contains(&addr) || !(1..=2).contains(&size) {
            return Err(FdtError::NoMemory);
        }
        Ok((addr, size))
    }

    /// The first range of the memory node: `(base, size)`.
    ///
    /// # Errors
    /// [`FdtError::NoMemory`] if there is none, or a parse error.
    pub fn memory(&self) -> Result<(u64, u64), FdtError> {
        let (ac, sc) = self.cells()?;
        let mut found = None;
        self.for_each_prop(|path, name, value| {
            if let [_, node] = path {
                if found.is_none()
                    && is_memory_node(node)
                    && name == b"reg"
                    && value.len() >= (ac + sc) * 4
                {
                    found = Some((
                        read_cells(&value[..ac * 4]),
                        read_cells(&value[ac * 4..(ac + sc) * 4]),
                    ));
                }
            }
        })?;
        found.ok_or(FdtError::NoMemory)
    }

    /// The value of `/chosen/<prop>`, if present.
    ///
    /// # Errors
    /// A parse error.
    pub fn chosen(&self, prop: &str) -> Result<Option<&'a [u8]>, FdtError> {
        self.node_prop("chosen", prop)
    }

    /// The CPU under `/cpus` with the highest `reg` (its MPIDR affinity
    /// bits): `(node name, reg)`, if there is one.
    ///
    /// # Errors
    /// A parse error.
    pub fn last_cpu(&self) -> Result<Option<(&'a [u8], u64)>, FdtError> {
        let mut found: Option<(&'a [u8], u64)> = None;
        self.for_each_prop(|path, name, value| {
            if let [_, b"cpus", cpu] = path {
                if cpu.starts_with(b"cpu@")
                    && name == b"reg"
                    && (value.len() == 4 || value.len() == 8)
                {
                    let reg = read_cells(value);
                    if found.is_none_or(|(_, r)| reg > r) {
                        found = Some((cpu, reg));
                    }
                }
            }
        })?;
        Ok(found)
    }

    /// The value of `/<node>/<prop>` for a top-level node, if present.
    ///
    /// # Errors
    /// A parse error.
    pub fn node_prop(&self, node: &str, prop: &str) -> Result<Option<&'a [u8]>, FdtError> {
        let mut found = None;
        self.for_each_prop(|path, name, value| {
            if let [_, n] = path {
                if *n == node.as_bytes() && name == prop.as_bytes() {
                    found = Some(value);
                }
            }
        })?;
        Ok(found)
    }
}

/// How a bus node's children are addressed, from its `#address-cells`
/// and `#size-cells` (defaults as in the devicetree specification).
#[derive(Clone, Copy, Debug)]
struct Cells {
    addr: usize,
    size: usize,
}

impl Cells {
    const DEFAULT: Self = Self { addr: 2, size: 1 };

    fn set(&mut self, name: &[u8], value: &[u8]) {
        if let Ok(v) = <[u8; 4]>::try_from(value) {
            match name {
                b"#address-cells" => self.addr = u32::from_be_bytes(v) as usize,
                b"#size-cells" => self.size = u32::from_be_bytes(v) as usize,
                _ => {}
            }
        }
    }
}

/// What the device walk keeps of a node until its end: the properties
/// may come in any order.
#[derive(Clone, Copy)]
struct DeviceNode<'a> {
    name: &'a [u8],
    reg: Option<&'a [u8]>,
    ranges: Option<&'a [u8]>,
    enabled: bool,
    /// How this node's children are addressed.
    cells: Cells,
}

impl<'a> DeviceNode<'a> {
    const fn new(name: &'a [u8]) -> Self {
        Self {
            name,
            reg: None,
            ranges: None,
            enabled: true,
            cells: Cells::DEFAULT,
        }
    }

    fn prop(&mut self, name: &[u8], value: &'a [u8]) {
        match name {
            b"reg" => self.reg = Some(value),
            b"ranges" => self.ranges = Some(value),
            b"status" => self.enabled = matches!(value, b"okay\0" | b"ok\0"),
            _ => self.cells.set(name, value),
        }
    }

    /// Memory, not devices: RAM and carve-outs of it.
    fn is_memory(&self) -> bool {
        is_memory_node(self.name) || self.name == b"reserved-memory"
    }
}

/// Calls `f(base, size)` for each `(address, size)` pair of `reg`,
/// addressed with `cells`.
fn each_reg(reg: &[u8], cells: Cells, f: &mut impl FnMut(u64, u64)) -> Result<(), FdtError> {
    if !(1..=2).contains(&cells.addr) || !(1..=2).contains(&cells.size) {
        return Err(FdtError::BadCells);
    }
    let entry = (cells.addr + cells.size) * 4;
    if !reg.len().is_multiple_of(entry) {
        return Err(FdtError::BadCells);
    }
    for e in reg.chunks_exact(entry) {
        let (a, s) = e.split_at(cells.addr * 4);
        f(read_cells(a), read_cells(s));
    }
    Ok(())
}

/// Calls `f(parent_base, size)` for each entry of a bus's `ranges`: child
/// address in `child.addr` cells (3 on PCI), parent address in
/// `parent.addr` cells, size in `child.size` cells.
fn each_range(
    ranges: &[u8],
    child: Cells,
    parent: Cells,
    f: &mut impl FnMut(u64, u64),
) -> Result<(), FdtError> {
    if !(1..=3).contains(&child.addr)
        || !(1..=2).contains(&parent.addr)
        || !(1..=2).contains(&child.size)
    {
        return Err(FdtError::BadCells);
    }
    let entry = (child.addr + parent.addr + child.size) * 4;
    if !ranges.len().is_multiple_of(entry) {
        return Err(FdtError::BadCells);
    }
    for e in ranges.chunks_exact(entry) {
        let (_, rest) = e.split_at(child.addr * 4);
        let (a, s) = rest.split_at(parent.addr * 4);
        f(read_cells(a), read_cells(s));
    }
    Ok(())
}

impl<'a> Fdt<'a> {
    /// Calls `f(node, base, size)` for every physical range the tree gives
    /// a device: the `reg` of each node under the root, the parent side of
    /// each bus's `ranges` (a PCI host's I/O and memory windows), and the
    /// `reg` of children of a bus whose empty `ranges` maps them 1:1 (the
    /// GIC's ITS). Memory and reserved-memory nodes and nodes whose
    /// `status` is not okay are not devices. Deeper nodes are reached only
    /// through their bus's `ranges`.
    ///
    /// # Errors
    /// A parse error, or [`FdtError::BadCells`] for a `reg` or `ranges`
    /// that does not parse.
    pub fn device_ranges(&self, mut f: impl FnMut(&'a [u8], u64, u64)) -> Result<(), FdtError> {
        let mut root = Cells::DEFAULT;
        // The node under the root being read, and its child being read.
        let mut bus: Option<DeviceNode<'a>> = None;
        let mut child: Option<DeviceNode<'a>> = None;
        self.walk(|depth, tok| {
            match (depth, tok) {
                (2, Token::Begin(name)) => bus = Some(DeviceNode::new(name)),
                (3, Token::Begin(name)) => child = Some(DeviceNode::new(name)),
                (1, Token::Prop { name, value }) => root.set(name, value),
                (2, Token::Prop { name, value }) => {
                    if let Some(n) = bus.as_mut() {
                        n.prop(name, value);
                    }
                }
                (3, Token::Prop { name, value }) => {
                    if let Some(n) = child.as_mut() {
                        n.prop(name, value);
                    }
                }
                (2, Token::End) => {
                    if let Some(n) = bus.take().filter(|n| n.enabled && !n.is_memory()) {
                        if let Some(reg) = n.reg {
                            each_reg(reg, root, &mut |a, s| f(n.name, a, s))?;
                        }
                        if let Some(r) = n.ranges.filter(|r| !r.is_empty()) {
                            each_range(r, n.cells, root, &mut |a, s| f(n.name, a, s))?;
                        }
                    }
                }
                (3, Token::End) => {
                    // Only a bus that maps its children 1:1 (empty
                    // `ranges`) puts their `reg` in the root's space.
                    let identity = bus.filter(|b| {
                        b.enabled && !b.is_memory() && b.ranges.is_some_and(<[u8]>::is_empty)
                    });
                    if let (Some(b), Some(c)) = (identity, child.take()) {
                        if let Some(reg) = c.reg.filter(|_| c.enabled) {
                            each_reg(reg, b.cells, &mut |a, s| f(c.name, a, s))?;
                        }
                    }
                }
                _ => {}
            }
            Ok(())
        })
    }
}

/// A big-endian number of 32-bit cells.
fn read_cells(cells: &[u8]) -> u64 {
    cells.chunks(4).fold(0u64, |acc, c| {
        let mut w = [0u8; 4];
        w[..c.len()].copy_from_slice(c);
        (acc << 32) | u64::from(u32::from_be_bytes(w))
    })
}

fn find_string_in(strings: &[u8], name: &[u8]) -> Option<usize> {
    let mut off = 0;
    for s in strings.split(|&b| b == 0) {
        if s == name {
            return Some(off);
        }
        off += s.len() + 1;
    }
    None
}

fn is_memory_node(name: &[u8]) -> bool {
    name == b"memory" || name.starts_with(b"memory@")
}

/// One property to set on a top-level node (added if absent).
#[derive(Clone, Copy, Debug)]
pub struct NodeProp<'e> {
    /// Name of the node under `/`, e.g. `chosen` or `psci`.
    pub node: &'e str,
    /// Property name.
    pub name: &'e str,
    /// Property value.
    pub value: &'e [u8],
}

/// A node to leave out: `/<parent>/<name>` and everything under it.
#[derive(Clone, Copy, Debug)]
pub struct RemoveNode<'e> {
    /// Name of the top-level node it is under, e.g. `cpus`.
    pub parent: &'e str,
    /// Its full name, e.g. `cpu@1`.
    pub name: &'e [u8],
}

/// What to change in the guest's copy of the tree.
pub struct Edits<'e> {
    /// New `(base, size)` of the (first) memory node.
    pub memory: (u64, u64),
    /// Properties to set on top-level nodes (at most [`MAX_PROPS`]).
    pub props: &'e [NodeProp<'e>],
    /// Second-level nodes to leave out.
    pub remove: &'e [RemoveNode<'e>],
}

/// Most properties one rewrite sets.
pub const MAX_PROPS: usize = 8;

struct Writer<'o> {
    out: &'o mut [u8],
    len: usize,
}

impl Writer<'_> {
    fn bytes(&mut self, b: &[u8]) -> Result<(), FdtError> {
        let end = self.len.checked_add(b.len()).ok_or(FdtError::NoSpace)?;
        self.out
            .get_mut(self.len..end)
            .ok_or(FdtError::NoSpace)?
            .copy_from_slice(b);
        self.len = end;
        Ok(())
    }
    fn u32(&mut self, v: u32) -> Result<(), FdtError> {
        self.bytes(&v.to_be_bytes())
    }
    fn pad(&mut self) -> Result<(), FdtError> {
        while !self.len.is_multiple_of(4) {
            self.bytes(&[0])?;
        }
        Ok(())
    }
    fn set_u32(&mut self, at: usize, v: u32) {
        self.out[at..at + 4].copy_from_slice(&v.to_be_bytes());
    }
}

/// Writes the rewritten tree into `out`, returning its size.
///
/// # Errors
/// A parse error of the input, [`FdtError::NoMemory`] if the input has no
/// memory node, [`FdtError::NoSpace`] if `out` is too small.
pub fn rewrite(fdt: &Fdt<'_>, edits: &Edits<'_>, out: &mut [u8]) -> Result<usize, FdtError> {
    let (ac, sc) = fdt.cells()?;
    let mut w = Writer { out, len: 0 };
    w.bytes(&[0; HEADER_SIZE])?;
    let off_rsv = w.len;
    w.bytes(fdt.rsvmap)?;
    let off_struct = w.len;

    if edits.props.len() > MAX_PROPS {
        return Err(FdtError::NoSpace);
    }
    // New property names are appended to a copy of the strings block,
    // each once, in the order of first use.
    let is_first = |i: usize| {
        edits.props[..i]
            .iter()
            .all(|p| p.name != edits.props[i].name)
    };
    let new_name_off = |name: &str| -> Option<usize> {
        let mut extra = fdt.strings.len();
        for (i, p) in edits.props.iter().enumerate() {
            if !is_first(i) || find_string_in(fdt.strings, p.name.as_bytes()).is_some() {
                continue;
            }
            if p.name == name {
                return Some(extra);
            }
            extra += p.name.len() + 1;
        }
        None
    };
    let find_string = |name: &[u8]| find_string_in(fdt.strings, name);

    let mut mem_reg = [0u8; 16];
    let mut put = |cells: usize, v: u64, at: usize| {
        for i in 0..cells {
            let shift = 32 * (cells - 1 - i);
            mem_reg[at + i * 4..at + i * 4 + 4]
                .copy_from_slice(&((v >> shift) as u32).to_be_bytes());
        }
    };
    put(ac, edits.memory.0, 0);
    put(sc, edits.memory.1, ac * 4);
    let mem_reg = &mem_reg[..(ac + sc) * 4];

    let mut off = 0;
    let mut depth = 0usize;
    // Per depth: 0 = untouched, 1 = has props to set, 2 = memory.
    let mut node_kind = [0u8; 16];
    let mut node_name: &[u8] = b"";
    let mut top: &[u8] = b"";
    // The depth of a node being left out, while inside it.
    let mut skipping: Option<usize> = None;
    let mut done = [false; MAX_PROPS];
    let mut memory_done = false;
    loop {
        let (tok, next) = fdt.token(off)?;
        let raw = &fdt.structs[off..next];
        off = next;
        if let Some(d) = skipping {
            match tok {
                Token::Begin(_) => depth += 1,
                Token::End => {
                    if depth == d {
                        skipping = None;
                    }
                    depth = depth.checked_sub(1).ok_or(FdtError::BadToken)?;
                }
                Token::Finish => return Err(FdtError::BadToken),
                _ => {}
            }
            continue;
        }
        match tok {
            Token::Begin(name) => {
                depth += 1;
                if depth == 2 {
                    top = name;
                }
                if depth == 3
                    && edits
                        .remove
                        .iter()
                        .any(|r| r.parent.as_bytes() == top && r.name == name)
                {
                    skipping = Some(depth);
                    continue;
                }
                let kind = match (depth, name) {
                    (2, n) if is_memory_node(n) && !memory_done => 2,
                    (2, n) if edits.props.iter().any(|p| p.node.as_bytes() == n) => {
                        node_name = n;
                        1
                    }
                    _ => 0,
                };
                if let Some(k) = node_kind.get_mut(depth) {
                    *k = kind;
                }
                w.bytes(raw)?;
            }
            Token::Prop { name, value } => {
                let kind = node_kind.get(depth).copied().unwrap_or(0);
                let nameoff = be32(raw, 8)?;
                let replacement = match kind {
                    1 => edits
                        .props
                        .iter()
                        .position(|p| p.node.as_bytes() == node_name && p.name.as_bytes() == name)
                        .map(|i| {
                            done[i] = true;
                            edits.props[i].value
                        }),
                    2 if name == b"reg" => {
                        memory_done = true;
                        Some(mem_reg)
                    }
                    _ => None,
                };
                match replacement {
                    Some(v) => {
                        w.u32(PROP)?;
                        w.u32(v.len() as u32)?;
                        w.u32(nameoff)?;
                        w.bytes(v)?;
                        w.pad()?;
                    }
                    None => {
                        let _ = value;
                        w.bytes(raw)?;
                    }
                }
            }
            Token::End => {
                if node_kind.get(depth).copied() == Some(1) {
                    for (i, p) in edits.props.iter().enumerate() {
                        if p.node.as_bytes() != node_name || done.get(i).copied().unwrap_or(true) {
                            continue;
                        }
                        let nameoff = find_string(p.name.as_bytes())
                            .or_else(|| new_name_off(p.name))
                            .ok_or(FdtError::NoSpace)?;
                        w.u32(PROP)?;
                        w.u32(p.value.len() as u32)?;
                        w.u32(nameoff as u32)?;
                        w.bytes(p.value)?;
                        w.pad()?;
                        done[i] = true;
                    }
                }
                depth = depth.checked_sub(1).ok_or(FdtError::BadToken)?;
                w.bytes(raw)?;
            }
            Token::Nop => {}
            Token::Finish => {
                w.bytes(raw)?;
                break;
            }
        }
    }
    if !memory_done {
        return Err(FdtError::NoMemory);
    }
    let size_struct = w.len - off_struct;
    let off_strings = w.len;
    w.bytes(fdt.strings)?;
    for (i, p) in edits.props.iter().enumerate() {
        if is_first(i) && find_string(p.name.as_bytes()).is_none() {
            w.bytes(p.name.as_bytes())?;
            w.bytes(&[0])?;
        }
    }
    let size_strings = w.len - off_strings;
    w.pad()?;
    let total = w.len;
    let header = [
        MAGIC,
        total as u32,
        off_struct as u32,
        off_strings as u32,
        off_rsv as u32,
        17,
        16,
        be32(fdt.blob, 28)?,
        size_strings as u32,
        size_struct as u32,
    ];
    for (i, v) in header.into_iter().enumerate() {
        w.set_u32(i * 4, v);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    /// Builds a small tree shaped like QEMU's: root cells, a memory node,
    /// a /chosen with bootargs, /psci, and two CPUs with a cpu-map.
    fn sample() -> Vec<u8> {
        let strings = b"#address-cells\0#size-cells\0reg\0device_type\0bootargs\0method\0cpu\0";
        let mut s = Vec::new();
        let tok = |s: &mut Vec<u8>, v: u32| s.extend_from_slice(&v.to_be_bytes());
        let node = |s: &mut Vec<u8>, name: &[u8]| {
            tok(s, BEGIN_NODE);
            s.extend_from_slice(name);
            s.push(0);
            while !s.len().is_multiple_of(4) {
                s.push(0);
            }
        };
        let prop = |s: &mut Vec<u8>, off: u32, v: &[u8]| {
            tok(s, PROP);
            tok(s, v.len() as u32);
            tok(s, off);
            s.extend_from_slice(v);
            while !s.len().is_multiple_of(4) {
                s.push(0);
            }
        };
        node(&mut s, b"");
        prop(&mut s, 0, &2u32.to_be_bytes());
        prop(&mut s, 15, &2u32.to_be_bytes());
        node(&mut s, b"memory@40000000");
        prop(&mut s, 31, b"memory\0");
        prop(
            &mut s,
            27,
            &[0, 0, 0, 0, 0x40, 0, 0, 0, 0, 0, 0, 0, 0x40, 0, 0, 0],
        );
        tok(&mut s, END_NODE);
        node(&mut s, b"chosen");
        prop(&mut s, 43, b"console=ttyAMA0\0");
        tok(&mut s, END_NODE);
        node(&mut s, b"psci");
        prop(&mut s, 52, b"smc\0");
        tok(&mut s, END_NODE);
        node(&mut s, b"cpus");
        node(&mut s, b"cpu-map");
        node(&mut s, b"core0");
        prop(&mut s, 59, &1u32.to_be_bytes());
        tok(&mut s, END_NODE);
        tok(&mut s, END_NODE);
        for (name, reg) in [(&b"cpu@0"[..], 0u32), (b"cpu@1", 1)] {
            node(&mut s, name);
            prop(&mut s, 27, &reg.to_be_bytes());
            tok(&mut s, END_NODE);
        }
        tok(&mut s, END_NODE);
        tok(&mut s, END_NODE);
        tok(&mut s, END);
        let off_rsv = HEADER_SIZE;
        let off_struct = off_rsv + 16;
        let off_strings = off_struct + s.len();
        let total = off_strings + strings.len();
        let mut blob = Vec::new();
        for v in [
            MAGIC,
            total as u32,
            off_struct as u32,
            off_strings as u32,
            off_rsv as u32,
            17,
            16,
            0,
            strings.len() as u32,
            s.len() as u32,
        ] {
            blob.extend_from_slice(&v.to_be_bytes());
        }
        blob.extend_from_slice(&[0; 16]);
        blob.extend_from_slice(&s);
        blob.extend_from_slice(strings);
        blob
    }

    #[test]
    fn reads_memory_and_chosen() {
        let blob = sample();
        let fdt = Fdt::new(&blob).unwrap();
        assert_eq!(fdt.memory(), Ok((0x4000_0000, 0x4000_0000)));
        assert_eq!(fdt.chosen("bootargs"), Ok(Some(&b"console=ttyAMA0\0"[..])));
        assert_eq!(fdt.chosen("linux,initrd-start"), Ok(None));
    }

    #[test]
    fn rewrites_memory_and_adds_chosen_props() {
        let blob = sample();
        let fdt = Fdt::new(&blob).unwrap();
        let start = 0x4800_0000u64.to_be_bytes();
        let end = 0x4810_0000u64.to_be_bytes();
        let p = |node, name, value| NodeProp { node, name, value };
        let edits = Edits {
            memory: (0x4000_0000, 0x3e00_0000),
            props: &[
                p("chosen", "linux,initrd-start", &start),
                p("chosen", "linux,initrd-end", &end),
                p("chosen", "bootargs", b"x\0"),
                p("psci", "method", b"hvc\0"),
                p("psci", "linux,initrd-end", b"odd place, shared name\0"),
            ],
            remove: &[],
        };
        let mut out = [0u8; 1024];
        let n = rewrite(&fdt, &edits, &mut out).unwrap();
        let new = Fdt::new(&out[..n]).unwrap();
        assert_eq!(new.memory(), Ok((0x4000_0000, 0x3e00_0000)));
        assert_eq!(new.chosen("linux,initrd-start"), Ok(Some(&start[..])));
        assert_eq!(new.chosen("linux,initrd-end"), Ok(Some(&end[..])));
        assert_eq!(new.chosen("bootargs"), Ok(Some(&b"x\0"[..])));
        assert_eq!(new.node_prop("psci", "method"), Ok(Some(&b"hvc\0"[..])));
        assert_eq!(
            new.node_prop("psci", "linux,initrd-end"),
            Ok(Some(&b"odd place, shared name\0"[..]))
        );
        // Rewriting the result again is stable (names are not re-added).
        let mut again = [0u8; 1024];
        let m = rewrite(&new, &edits, &mut again).unwrap();
        assert_eq!(&again[..m], &out[..n]);
    }

    #[test]
    fn rejects_garbage_and_small_buffers() {
        assert_eq!(Fdt::new(&[0; 64]).err(), Some(FdtError::BadHeader));
        let mut blob = sample();
        blob.truncate(60);
        assert!(Fdt::new(&blob).is_err());
        let blob = sample();
        let fdt = Fdt::new(&blob).unwrap();
        let edits = Edits {
            memory: (0, 1),
            props: &[],
            remove: &[],
        };
        assert_eq!(
            rewrite(&fdt, &edits, &mut [0u8; 64]),
            Err(FdtError::NoSpace)
        );
    }

    #[test]
    fn finds_the_last_cpu_and_leaves_nodes_out() {
        let blob = sample();
        let fdt = Fdt::new(&blob).unwrap();
        assert_eq!(fdt.last_cpu(), Ok(Some((&b"cpu@1"[..], 1))));
        let edits = Edits {
            memory: (0x4000_0000, 0x3e00_0000),
            props: &[],
            remove: &[
                RemoveNode {
                    parent: "cpus",
                    name: b"cpu@1",
                },
                RemoveNode {
                    parent: "cpus",
                    name: b"cpu-map",
                },
                RemoveNode {
                    parent: "chosen",
                    name: b"absent",
                },
            ],
        };
        let mut out = [0u8; 1024];
        let n = rewrite(&fdt, &edits, &mut out).unwrap();
        let new = Fdt::new(&out[..n]).unwrap();
        assert_eq!(new.last_cpu(), Ok(Some((&b"cpu@0"[..], 0))));
        assert_eq!(new.memory(), Ok((0x4000_0000, 0x3e00_0000)));
        assert_eq!(new.chosen("bootargs"), Ok(Some(&b"console=ttyAMA0\0"[..])));
        let has = |name: &[u8]| new.structs.windows(name.len()).any(|w| w == name);
        assert!(!has(b"cpu@1") && !has(b"cpu-map") && !has(b"core0"));
        assert!(has(b"cpu@0") && has(b"cpus"));
        let kept = Edits {
            remove: &[],
            ..edits
        };
        let mut full = [0u8; 1024];
        let m = rewrite(&fdt, &kept, &mut full).unwrap();
        // cpu-map: two begins (12 each), a 4-byte property (16), two ends;
        // cpu@1: a begin (12), a 4-byte property (16), an end.
        assert_eq!(m - n, 48 + 32, "exactly those two subtrees are gone");
    }
}
