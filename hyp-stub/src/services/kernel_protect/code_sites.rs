// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The patch sites of code the guest made executable through
//! `MEM_PERMISSIONS` (module text): where the hypervisor may later
//! perform a store, and which rule judges it ([`SiteKind`]): a jump
//! label's `NOP` <-> `B` to its label, or an ftrace call site's call or
//! literal.
//!
//! A call adds its sites as *pending*, behind the ones already held; they
//! become part of the registry only when the call succeeds
//! ([`CodeSites::commit`]), and are dropped if it fails
//! ([`CodeSites::abort`]). Committed sites are sorted by IPA, so a store
//! through the text-poke slot finds its site by binary search. Sites go
//! when their code is released ([`CodeSites::remove`]).
//!
//! The storage is lent by the caller: the boot path gives a static array
//! of [`MAX_CODE_SITES`].

/// How many patch sites of dynamic code the hypervisor holds at once,
/// over all modules (an ftrace call site takes two).
pub const MAX_CODE_SITES: usize = 131_072;

/// What may be stored at a site.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SiteKind {
    /// A jump label: `NOP` <-> `B` to this VA.
    JumpLabel(u64),
    /// The call of an ftrace call site: `NOP` <-> `BL` to a trampoline.
    FtraceCall,
    /// The 8-byte literal of an ftrace call site.
    FtraceLiteral,
    /// A PLT to an ftrace trampoline: what the code's ftrace calls may
    /// call; never written.
    FtracePlt,
}

// How a kind is kept in the label word: labels are 4-byte aligned, so
// these values are never a jump label's.
const FTRACE_CALL: u64 = 1;
const FTRACE_LITERAL: u64 = 2;
const FTRACE_PLT: u64 = 3;

impl SiteKind {
    const fn to_word(self) -> u64 {
        match self {
            SiteKind::JumpLabel(label) => label,
            SiteKind::FtraceCall => FTRACE_CALL,
            SiteKind::FtraceLiteral => FTRACE_LITERAL,
            SiteKind::FtracePlt => FTRACE_PLT,
        }
    }

    const fn from_word(w: u64) -> Self {
        match w {
            FTRACE_CALL => SiteKind::FtraceCall,
            FTRACE_LITERAL => SiteKind::FtraceLiteral,
            FTRACE_PLT => SiteKind::FtracePlt,
            label => SiteKind::JumpLabel(label),
        }
    }
}

/// One site: the IPA it starts at, and its kind (as a word).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CodeSite {
    ipa: u64,
    label: u64,
}

impl CodeSite {
    /// An unused slot (what storage starts as).
    pub const EMPTY: CodeSite = CodeSite { ipa: 0, label: 0 };
}

/// The storage is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full;

/// Committed sites, then pending ones.
pub struct CodeSites<'m> {
    store: &'m mut [CodeSite],
    committed: usize,
    end: usize,
}

impl CodeSites<'static> {
    /// No storage: any site list is refused for want of room.
    pub fn none() -> Self {
        Self::new(&mut [])
    }
}

impl<'m> CodeSites<'m> {
    /// An empty registry over `store`.
    pub fn new(store: &'m mut [CodeSite]) -> Self {
        Self {
            store,
            committed: 0,
            end: 0,
        }
    }

    /// Committed sites.
    pub fn len(&self) -> usize {
        self.committed
    }

    /// Whether no site is committed.
    pub fn is_empty(&self) -> bool {
        self.committed == 0
    }

    /// Room left for new sites.
    pub fn room(&self) -> usize {
        self.store.len().saturating_sub(self.end)
    }

    fn committed(&self) -> &[CodeSite] {
        self.store.get(..self.committed).unwrap_or(&[])
    }

    /// The kind of the committed site at `ipa`.
    pub fn kind_at(&self, ipa: u64) -> Option<SiteKind> {
        let sites = self.committed();
        let i = sites.partition_point(|s| s.ipa < ipa);
        sites
            .get(i)
            .filter(|s| s.ipa == ipa)
            .map(|s| SiteKind::from_word(s.label))
    }

    /// Adds a pending site.
    ///
    /// # Errors
    /// [`Full`] if the storage is; nothing is added.
    pub fn push(&mut self, ipa: u64, kind: SiteKind) -> Result<(), Full> {
        let slot = self.store.get_mut(self.end).ok_or(Full)?;
        *slot = CodeSite {
            ipa,
            label: kind.to_word(),
        };
        self.end += 1;
        Ok(())
    }

    /// Sorts the pending sites and keeps a site named twice the same way
    /// once; returns the IPA of one named twice in two ways, if any.
    pub fn dedup_pending(&mut self) -> Result<(), u64> {
        let Some(pending) = self.store.get_mut(self.committed..self.end) else {
            return Ok(());
        };
        pending.sort_unstable_by_key(|s| (s.ipa, s.label));
        let mut kept = 0usize;
        for i in 0..pending.len() {
            let Some(&s) = pending.get(i) else { break };
            match kept.checked_sub(1).and_then(|p| pending.get(p)) {
                Some(prev) if prev.ipa == s.ipa && prev.label == s.label => continue,
                Some(prev) if prev.ipa == s.ipa => return Err(s.ipa),
                _ => {}
            }
            if let Some(slot) = pending.get_mut(kept) {
                *slot = s;
            }
            kept += 1;
        }
        self.end = self.committed + kept;
        Ok(())
    }

    /// The pending sites join the committed ones.
    pub fn commit(&mut self) {
        if let Some(all) = self.store.get_mut(..self.end) {
            all.sort_unstable_by_key(|s| s.ipa);
        }
        self.committed = self.end;
    }

    /// The pending sites are dropped.
    pub fn abort(&mut self) {
        self.end = self.committed;
    }

    /// Drops the committed sites in `[start, end)`; returns how many.
    pub fn remove(&mut self, start: u64, end: u64) -> usize {
        let before = self.committed;
        let mut kept = 0;
        for i in 0..self.committed {
            let Some(s) = self.store.get(i).copied() else {
                break;
            };
            if !(start <= s.ipa && s.ipa < end) {
                if let Some(slot) = self.store.get_mut(kept) {
                    *slot = s;
                }
                kept += 1;
            }
        }
        self.committed = kept;
        self.end = kept;
        before - kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_sites_count_only_once_committed() {
        let mut store = [CodeSite::EMPTY; 4];
        let mut s = CodeSites::new(&mut store);
        s.push(0x3000, SiteKind::JumpLabel(0xa0)).unwrap();
        s.push(0x1000, SiteKind::FtraceCall).unwrap();
        assert_eq!(s.kind_at(0x1000), None, "pending");
        assert_eq!(s.dedup_pending(), Ok(()));
        s.commit();
        assert_eq!((s.len(), s.room()), (2, 2));
        assert_eq!(s.kind_at(0x1000), Some(SiteKind::FtraceCall));
        assert_eq!(s.kind_at(0x3000), Some(SiteKind::JumpLabel(0xa0)));
        assert_eq!(s.kind_at(0x2000), None);
        // A failed call leaves nothing behind.
        s.push(0x2000, SiteKind::FtraceLiteral).unwrap();
        s.abort();
        assert_eq!((s.len(), s.room(), s.kind_at(0x2000)), (2, 2, None));
    }

    #[test]
    fn duplicates_and_a_full_store_are_reported() {
        let label = SiteKind::JumpLabel;
        let mut store = [CodeSite::EMPTY; 4];
        let mut s = CodeSites::new(&mut store);
        s.push(0x1000, label(0xa0)).unwrap();
        s.commit();
        // The same site the same way twice: kept once.
        s.push(0x2000, label(0xa0)).unwrap();
        s.push(0x2000, label(0xa0)).unwrap();
        s.push(0x1800, label(0xa0)).unwrap();
        assert_eq!(s.push(0x3000, label(0xc0)), Err(Full));
        assert_eq!(s.dedup_pending(), Ok(()));
        s.commit();
        assert_eq!((s.len(), s.room()), (3, 1));
        // Two ways: refused.
        let mut store = [CodeSite::EMPTY; 4];
        let mut s = CodeSites::new(&mut store);
        s.push(0x2000, label(0xa0)).unwrap();
        s.push(0x2000, SiteKind::FtraceCall).unwrap();
        assert_eq!(s.dedup_pending(), Err(0x2000));
        s.abort();
        assert_eq!(s.len(), 0);
        assert!(CodeSites::none().push(0, SiteKind::FtraceCall).is_err());
    }

    #[test]
    fn released_code_takes_its_sites_along() {
        let mut store = [CodeSite::EMPTY; 8];
        let mut s = CodeSites::new(&mut store);
        for ipa in [0x5000, 0x1000, 0x1ffc, 0x2000, 0x7000] {
            s.push(ipa, SiteKind::JumpLabel(ipa + 8)).unwrap();
        }
        s.commit();
        assert_eq!(s.remove(0x1000, 0x2000), 2);
        assert_eq!(s.len(), 3);
        assert_eq!(s.kind_at(0x1000), None);
        assert_eq!(s.kind_at(0x2000), Some(SiteKind::JumpLabel(0x2008)));
        assert_eq!(s.kind_at(0x5000), Some(SiteKind::JumpLabel(0x5008)));
        assert_eq!(s.kind_at(0x7000), Some(SiteKind::JumpLabel(0x7008)));
        assert_eq!(s.room(), 5);
    }
}
