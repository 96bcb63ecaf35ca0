// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The jump-label sites of code the guest made executable through
//! `MEM_PERMISSIONS` (module text): where the hypervisor may later
//! perform a `NOP` <-> `B` store, and to which label.
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

/// How many jump-label sites of dynamic code the hypervisor holds at
/// once, over all modules.
pub const MAX_CODE_SITES: usize = 16384;

/// One site: the IPA of its instruction, and the VA of its label.
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

    /// The label of the committed site at `ipa`.
    pub fn label_at(&self, ipa: u64) -> Option<u64> {
        let sites = self.committed();
        let i = sites.partition_point(|s| s.ipa < ipa);
        sites.get(i).filter(|s| s.ipa == ipa).map(|s| s.label)
    }

    /// Adds a pending site.
    ///
    /// # Errors
    /// [`Full`] if the storage is; nothing is added.
    pub fn push(&mut self, ipa: u64, label: u64) -> Result<(), Full> {
        let slot = self.store.get_mut(self.end).ok_or(Full)?;
        *slot = CodeSite { ipa, label };
        self.end += 1;
        Ok(())
    }

    /// Sorts the pending sites and returns the IPA of one named twice,
    /// if any.
    pub fn pending_duplicate(&mut self) -> Option<u64> {
        let pending = self.store.get_mut(self.committed..self.end)?;
        pending.sort_unstable_by_key(|s| s.ipa);
        pending.windows(2).find_map(|w| match w {
            [a, b] if a.ipa == b.ipa => Some(a.ipa),
            _ => None,
        })
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
        s.push(0x3000, 0xa).unwrap();
        s.push(0x1000, 0xb).unwrap();
        assert_eq!(s.label_at(0x1000), None, "pending");
        assert_eq!(s.pending_duplicate(), None);
        s.commit();
        assert_eq!((s.len(), s.room()), (2, 2));
        assert_eq!(s.label_at(0x1000), Some(0xb));
        assert_eq!(s.label_at(0x3000), Some(0xa));
        assert_eq!(s.label_at(0x2000), None);
        // A failed call leaves nothing behind.
        s.push(0x2000, 0xc).unwrap();
        s.abort();
        assert_eq!((s.len(), s.room(), s.label_at(0x2000)), (2, 2, None));
    }

    #[test]
    fn duplicates_and_a_full_store_are_reported() {
        let mut store = [CodeSite::EMPTY; 3];
        let mut s = CodeSites::new(&mut store);
        s.push(0x1000, 0xa).unwrap();
        s.commit();
        s.push(0x2000, 0xa).unwrap();
        s.push(0x2000, 0xb).unwrap();
        assert_eq!(s.push(0x3000, 0xc), Err(Full));
        assert_eq!(s.pending_duplicate(), Some(0x2000));
        s.abort();
        assert_eq!(s.len(), 1);
        assert!(CodeSites::none().push(0, 0).is_err());
    }

    #[test]
    fn released_code_takes_its_sites_along() {
        let mut store = [CodeSite::EMPTY; 8];
        let mut s = CodeSites::new(&mut store);
        for ipa in [0x5000, 0x1000, 0x1ffc, 0x2000, 0x7000] {
            s.push(ipa, ipa + 8).unwrap();
        }
        s.commit();
        assert_eq!(s.remove(0x1000, 0x2000), 2);
        assert_eq!(s.len(), 3);
        assert_eq!(s.label_at(0x1000), None);
        assert_eq!(s.label_at(0x2000), Some(0x2008));
        assert_eq!(s.label_at(0x5000), Some(0x5008));
        assert_eq!(s.label_at(0x7000), Some(0x7008));
        assert_eq!(s.room(), 5);
    }
}
