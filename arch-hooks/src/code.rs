// SPDX-License-Identifier: GPL-2.0 OR MIT
//! Dynamic kernel code under the hypervisor's page permissions
//! (`MEM_PERMISSIONS`): what the kernel's hooks ask for when memory from
//! `execmem_alloc` becomes executable, stops being so, is sealed after a
//! module's init, or is freed.
//!
//! - a module's text and init text, before `set_memory_rox`: both
//!   executable in one call ([`module_text`]), with the VA EL1 runs them
//!   at; the text also immutable. A refusal (DENIED under
//!   `pvguard_code=lock`) fails the load with an error, not an oops.
//! - `set_memory_x` of other execmem users (after `set_memory_ro`, as
//!   `set_memory_rox` does): EXEC|IMMUTABLE, or the caller fails; no call
//!   for a module's text, already executable.
//! - `set_memory_nx`: released (READ: no longer executable, not yet
//!   writable).
//! - a module's rodata and ro_after_init once its init is done:
//!   READ|IMMUTABLE, in one call ([`module_seal`]).
//! - `execmem_free`: released (READ) if immutable, then READ|WRITE
//!   again, so that no page is executable or sealed when it goes back to
//!   the allocator and none is ever writable while executable.
//! - `execmem_alloc` for the users that fill their code in place after
//!   it became executable (the BPF JIT's packs, kprobes' instruction
//!   slots): remembered, no call ([`Op::Jit`]). Their `set_memory_x`
//!   then asks for EXEC|JIT instead of EXEC|IMMUTABLE, and the
//!   hypervisor performs (and logs) the stores their text-poke path
//!   makes into it. Such a range may take several calls (a 2 MiB pack
//!   can be more physical runs than one list holds); if one fails, what
//!   was granted is put back to read/write and the caller fails.
//!
//! So a module load costs three calls: its text, its rodata, and the
//! free of its init text.
//!
//! Nothing is asked before kernel protect is enabled, and if the
//! hypervisor's code policy is `image` (it answers OBJECT_STATE) the
//! hooks stop asking. The guest remembers which ranges it made
//! executable or sealed, so that `set_memory_nx` on data (which every
//! module load does) and frees of memory that never held code cost no
//! call; if it runs out of room to remember, every such hook asks.

use crate::guest_kp::abi::KpError;
use crate::guest_kp::mem_perms::{
    decode_answer, List, SiteEntry, SiteList, ATTR_DEFAULT, ATTR_EXEC, ATTR_IMMUTABLE, ATTR_JIT,
    ATTR_READ, ATTR_RELEASE, MEM_PERMISSIONS, SITE_FTRACE, SITE_FTRACE_PLT, SITE_SIZE,
};

/// The kernel's page size for these requests (the ABI's granule).
pub const PAGE: u64 = crate::guest_kp::abi::PAGE_SIZE;

/// What a hook asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `set_memory_x`: executable and immutable.
    Exec,
    /// `set_memory_nx`: no longer executable.
    Release,
    /// A module's rodata after init: read-only for good.
    Seal,
    /// `execmem_free`: back to read/write.
    Free,
    /// `execmem_alloc` for a user that fills its code in place (BPF,
    /// kprobes): remembered, so that its `set_memory_x` asks for
    /// EXEC|JIT.
    Jit,
}

impl Op {
    /// The C side's number for the operation.
    pub fn from_raw(raw: i32) -> Option<Op> {
        match raw {
            0 => Some(Op::Exec),
            1 => Some(Op::Release),
            2 => Some(Op::Seal),
            3 => Some(Op::Free),
            4 => Some(Op::Jit),
            _ => None,
        }
    }
}

/// Why a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeError {
    /// An address of the range has no page behind it.
    NoPage(u64),
    /// An executable range in more physical runs than one call takes.
    TooScattered,
    /// The hypervisor refused it.
    Refused(KpError),
}

/// Whether the hypervisor takes requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Active {
    /// Not asked yet.
    Unknown,
    Yes,
    /// Policy `image`: nothing to ask.
    No,
}

/// Most ranges remembered as executable or sealed.
pub const MAX_TRACKED: usize = 256;

/// A range the guest made executable or sealed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tracked {
    start: u64,
    end: u64,
    exec: bool,
    immutable: bool,
    /// Filled in place: made executable as EXEC|JIT.
    jit: bool,
}

/// One range of a request: `pages` pages at `va`, given `attrs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// First kernel address.
    pub va: u64,
    /// Number of pages.
    pub pages: u64,
    /// The attributes asked for.
    pub attrs: u64,
}

impl Range {
    fn end(&self) -> u64 {
        self.va.saturating_add(self.pages.saturating_mul(PAGE))
    }
}

/// The hooks' state.
pub struct CodeState {
    active: Active,
    list: List,
    calls: u64,
    refused: u64,
    tracked: [Tracked; MAX_TRACKED],
    tracked_len: usize,
    /// A range could not be remembered: every release and free asks.
    overflow: bool,
}

impl Default for CodeState {
    fn default() -> Self {
        Self::new()
    }
}

/// How requests reach the hypervisor.
pub trait Channel {
    /// Puts the list's wire form where the hypervisor can read it and
    /// returns its IPA and number of entries.
    fn stage(&mut self, list: &List) -> (u64, u64);
    /// One SMCCC call with x1..x4 = `args`.
    fn call(&mut self, fid: u32, args: [u64; 4]) -> [u64; 4];
}

/// A module's text and init text, executable (the text also immutable:
/// the init text is freed after init, and so needs one call less), in
/// one all-or-nothing call.
pub fn module_text(text: (u64, u64), init_text: (u64, u64)) -> [Range; 2] {
    [
        Range {
            va: text.0,
            pages: text.1,
            attrs: ATTR_READ | ATTR_EXEC | ATTR_IMMUTABLE,
        },
        Range {
            va: init_text.0,
            pages: init_text.1,
            attrs: ATTR_READ | ATTR_EXEC,
        },
    ]
}

/// One entry of a module's `__jump_table` as arm64 lays it out
/// (`CONFIG_HAVE_ARCH_JUMP_LABEL_RELATIVE`): the site and the label as
/// offsets from the fields that hold them, and the key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JumpEntry {
    /// Site, relative to this field.
    pub code: i32,
    /// Label, relative to this field.
    pub target: i32,
    /// The static key (and flags in its low bits).
    pub key: i64,
}

/// Size of a [`JumpEntry`], the C side's `sizeof(struct jump_entry)`.
pub const JUMP_ENTRY_SIZE: u64 = 16;

/// Where a module's text may be patched, as the kernel describes it.
#[derive(Clone, Copy, Debug, Default)]
pub struct ModulePatchTables<'t> {
    /// Its `__jump_table`.
    pub jump: &'t [JumpEntry],
    /// The kernel address of `jump`.
    pub jump_va: u64,
    /// Its `__mcount_loc`: the addresses of its ftrace call sites'
    /// literals (0 for padding).
    pub mcount: &'t [u64],
    /// Its ftrace PLTs (`mod->arch.ftrace_trampolines` and
    /// `init_ftrace_trampolines`), or 0.
    pub ftrace_plts: [u64; 2],
}

/// The site list for a module's text: every jump label and ftrace call
/// site of `tables` whose site lies in one of the `text` ranges (VA,
/// pages), as absolute VAs, and its ftrace PLTs, written into `out` in
/// the wire form. Returns how many were written; sites elsewhere (none
/// in a module the kernel built) and sites past the room of `out` are
/// left out, so the hypervisor refuses the patches at those sites
/// rather than a load being refused.
pub fn module_sites(tables: &ModulePatchTables<'_>, text: &[(u64, u64)], out: &mut [u8]) -> u64 {
    let in_text = |va: u64| {
        text.iter()
            .any(|&(start, pages)| va >= start && va - start < pages.saturating_mul(PAGE))
    };
    let jumps = tables.jump.iter().enumerate().map(|(i, e)| {
        let field = tables.jump_va.wrapping_add(i as u64 * JUMP_ENTRY_SIZE);
        SiteEntry {
            site: field.wrapping_add_signed(i64::from(e.code)),
            label: field
                .wrapping_add(4)
                .wrapping_add_signed(i64::from(e.target)),
        }
    });
    let calls = tables.mcount.iter().map(|&literal| SiteEntry {
        site: literal,
        label: SITE_FTRACE,
    });
    let plts = tables.ftrace_plts.into_iter().map(|site| SiteEntry {
        site,
        label: SITE_FTRACE_PLT,
    });
    let mut n = 0;
    let mut slots = out.chunks_exact_mut(SITE_SIZE);
    for s in jumps.chain(calls).chain(plts).filter(|s| in_text(s.site)) {
        let Some(slot) = slots.next() else {
            break;
        };
        slot.copy_from_slice(&s.to_bytes());
        n += 1;
    }
    n
}

/// A module's rodata and ro_after_init, sealed in one call.
pub fn module_seal(rodata: (u64, u64), ro_after_init: (u64, u64)) -> [Range; 2] {
    let seal = |(va, pages)| Range {
        va,
        pages,
        attrs: ATTR_READ | ATTR_IMMUTABLE,
    };
    [seal(rodata), seal(ro_after_init)]
}

impl CodeState {
    /// Before protection.
    pub const fn new() -> Self {
        Self {
            active: Active::Unknown,
            list: List::new(),
            calls: 0,
            refused: 0,
            tracked: [Tracked {
                start: 0,
                end: 0,
                exec: false,
                immutable: false,
                jit: false,
            }; MAX_TRACKED],
            tracked_len: 0,
            overflow: false,
        }
    }

    /// Calls made, and refused.
    pub fn counts(&self) -> (u64, u64) {
        (self.calls, self.refused)
    }

    fn tracked(&self) -> &[Tracked] {
        self.tracked.get(..self.tracked_len).unwrap_or(&[])
    }

    /// The remembered ranges overlapping `[start, end)`.
    fn overlapping(&self, start: u64, end: u64) -> impl Iterator<Item = &Tracked> + '_ {
        self.tracked()
            .iter()
            .filter(move |t| t.start < end && start < t.end)
    }

    fn track(&mut self, r: &Range) {
        let t = Tracked {
            start: r.va,
            end: r.end(),
            exec: r.attrs & ATTR_EXEC != 0,
            immutable: r.attrs & ATTR_IMMUTABLE != 0,
            jit: r.attrs & ATTR_JIT != 0,
        };
        match self.tracked.get_mut(self.tracked_len) {
            Some(slot) => {
                *slot = t;
                self.tracked_len += 1;
            }
            None => self.overflow = true,
        }
    }

    fn untrack(&mut self, start: u64, end: u64) {
        let mut kept = 0;
        for i in 0..self.tracked_len {
            let Some(t) = self.tracked.get(i).copied() else {
                break;
            };
            if !(start <= t.start && t.end <= end) {
                if let Some(slot) = self.tracked.get_mut(kept) {
                    *slot = t;
                }
                kept += 1;
            }
        }
        self.tracked_len = kept;
    }

    /// Applies `op` to the `pages` pages at `va`; `pa_of` gives each
    /// page's physical address. `protected`: kernel protect is enabled.
    ///
    /// # Errors
    /// A [`CodeError`]; for [`Op::Exec`] nothing was made executable.
    pub fn apply(
        &mut self,
        ch: &mut dyn Channel,
        protected: bool,
        op: Op,
        va: u64,
        pages: u64,
        pa_of: &dyn Fn(u64) -> Option<u64>,
    ) -> Result<(), CodeError> {
        if !protected || self.active == Active::No || pages == 0 {
            return Ok(());
        }
        let end = va.saturating_add(pages.saturating_mul(PAGE));
        let range = |attrs| Range { va, pages, attrs };
        match op {
            Op::Exec => {
                // Already made executable (with its module, in one call).
                if self
                    .overlapping(va, end)
                    .any(|t| t.exec && t.start <= va && end <= t.end)
                {
                    return Ok(());
                }
                if self
                    .overlapping(va, end)
                    .any(|t| t.jit && t.start <= va && end <= t.end)
                {
                    return self.grant_jit(ch, range(ATTR_READ | ATTR_EXEC | ATTR_JIT), pa_of);
                }
                self.grant(
                    ch,
                    true,
                    &[range(ATTR_READ | ATTR_EXEC | ATTR_IMMUTABLE)],
                    SiteList::default(),
                    pa_of,
                )
            }
            Op::Jit => {
                // Nothing to ask yet: the memory is still read/write and
                // not executable; only remembered (or, without room,
                // made executable as ordinary code later).
                if self.active != Active::No {
                    self.track(&range(ATTR_JIT));
                }
                Ok(())
            }
            Op::Seal => self.grant(
                ch,
                true,
                &[range(ATTR_READ | ATTR_IMMUTABLE)],
                SiteList::default(),
                pa_of,
            ),
            Op::Release => {
                if !self.overflow && !self.overlapping(va, end).any(|t| t.exec) {
                    return Ok(());
                }
                self.request(ch, &[range(ATTR_RELEASE)], None, pa_of)
            }
            Op::Free => {
                let mut any = self.overflow;
                let mut immutable = self.overflow;
                // A JIT range never made executable holds the default.
                for t in self.overlapping(va, end).filter(|t| t.exec || t.immutable) {
                    any = true;
                    immutable |= t.immutable;
                }
                if !any {
                    self.untrack(va, end);
                    return Ok(());
                }
                // Immutable pages accept only the release: release, then
                // make writable. Code that is not immutable goes straight
                // to read/write (never writable while executable: one
                // stage-2 change), logged as released all the same.
                if immutable {
                    self.request(ch, &[range(ATTR_RELEASE)], None, pa_of)?;
                }
                self.request(ch, &[range(ATTR_DEFAULT)], None, pa_of)?;
                self.untrack(va, end);
                Ok(())
            }
        }
    }

    /// Applies `ranges` (the ranges of one module), in one all-or-nothing
    /// call if they include code, with the jump-label `sites` of that
    /// code, and remembers them.
    ///
    /// # Errors
    /// A [`CodeError`]; then nothing was applied.
    pub fn grant(
        &mut self,
        ch: &mut dyn Channel,
        protected: bool,
        ranges: &[Range],
        sites: SiteList,
        pa_of: &dyn Fn(u64) -> Option<u64>,
    ) -> Result<(), CodeError> {
        if !protected {
            return Ok(());
        }
        // Code must become executable whole, with its sites; sealing may
        // take several calls.
        let one_call = ranges
            .iter()
            .any(|r| r.attrs & ATTR_EXEC != 0)
            .then_some(sites);
        self.request(ch, ranges, one_call, pa_of)?;
        if self.active == Active::Yes {
            for r in ranges.iter().filter(|r| r.pages != 0) {
                self.track(r);
            }
        }
        Ok(())
    }

    /// A JIT range made executable: in as many calls as it takes; if one
    /// is refused, the range goes back to read/write (best effort) and
    /// the error is returned.
    fn grant_jit(
        &mut self,
        ch: &mut dyn Channel,
        r: Range,
        pa_of: &dyn Fn(u64) -> Option<u64>,
    ) -> Result<(), CodeError> {
        if let Err(e) = self.request(ch, &[r], None, pa_of) {
            let back = Range {
                attrs: ATTR_DEFAULT,
                ..r
            };
            let _ = self.request(ch, &[back], None, pa_of);
            return Err(e);
        }
        if self.active == Active::Yes {
            self.untrack(r.va, r.end());
            self.track(&r);
        }
        Ok(())
    }

    /// One request, in as few calls as the list allows; with `one_call`
    /// (the sites that go with it), it must fit in one (all or nothing).
    fn request(
        &mut self,
        ch: &mut dyn Channel,
        ranges: &[Range],
        one_call: Option<SiteList>,
        pa_of: &dyn Fn(u64) -> Option<u64>,
    ) -> Result<(), CodeError> {
        if self.active == Active::No {
            return Ok(());
        }
        self.list.clear();
        for r in ranges {
            for i in 0..r.pages {
                let page_va = r.va.wrapping_add(i.wrapping_mul(PAGE));
                let pa = pa_of(page_va).ok_or(CodeError::NoPage(page_va))?;
                if self.list.push_page(pa, page_va, r.attrs).is_err() {
                    if one_call.is_some() {
                        return Err(CodeError::TooScattered);
                    }
                    self.send(ch, SiteList::default())?;
                    self.list.clear();
                    // An empty list always takes a page.
                    let _ = self.list.push_page(pa, page_va, r.attrs);
                }
            }
        }
        self.send(ch, one_call.unwrap_or_default())
    }

    fn send(&mut self, ch: &mut dyn Channel, sites: SiteList) -> Result<(), CodeError> {
        if self.list.is_empty() {
            return Ok(());
        }
        let (ipa, n) = ch.stage(&self.list);
        self.calls += 1;
        let answer = ch.call(MEM_PERMISSIONS, [ipa, n, sites.ipa, sites.count]);
        match decode_answer(answer) {
            Ok(_) => {
                self.active = Active::Yes;
                Ok(())
            }
            Err((KpError::ObjectState, _)) if self.active == Active::Unknown => {
                // Policy `image`: the hypervisor leaves RAM executable.
                self.active = Active::No;
                Ok(())
            }
            Err((e, _)) => {
                self.refused += 1;
                Err(CodeError::Refused(e))
            }
        }
    }
}

#[cfg(test)]
// An explicit path: the kernel's rustfmtcheck formats each file as if
// it were a crate root.
#[path = "code/tests.rs"]
mod tests;
