//! Id filters for search and removal (Faiss's `IDSelector` family).

use std::collections::HashSet;
use std::fmt;

use crate::vectors::Label;

/// Decides whether an id takes part in a search or is removed.
///
/// Implemented by [`IdSelector`] and by any `Fn(Label) -> bool + Send + Sync` closure.
pub trait IdFilter: Send + Sync {
    /// `true` when `id` is selected.
    fn is_member(&self, id: Label) -> bool;
}

impl<F: Fn(Label) -> bool + Send + Sync> IdFilter for F {
    #[inline]
    fn is_member(&self, id: Label) -> bool {
        self(id)
    }
}

impl fmt::Debug for dyn IdFilter + '_ {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdFilter")
    }
}

/// The standard id selectors, composable with [`IdSelector::not`], [`IdSelector::and`]
/// and [`IdSelector::or`].
///
/// ```
/// use vq_core::{IdFilter, IdSelector};
/// let s = IdSelector::range(10, 20).and(IdSelector::set([12, 15, 30]).not());
/// assert!(s.is_member(11));
/// assert!(!s.is_member(12));
/// assert!(!s.is_member(30));
/// let b = IdSelector::bitmap_from_ids(16, [1, 3]);
/// assert!(b.is_member(3) && !b.is_member(2) && !b.is_member(99));
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum IdSelector {
    /// Every id.
    All,
    /// Ids in `min..max` (Faiss's `IDSelectorRange`).
    Range {
        /// First selected id.
        min: Label,
        /// One past the last selected id.
        max: Label,
    },
    /// Ids in a set (Faiss's `IDSelectorBatch`).
    Set(HashSet<Label>),
    /// Bit `i` of the bitmap (little-endian within each byte) selects id `i`; ids outside
    /// the bitmap are not selected (Faiss's `IDSelectorBitmap`).
    Bitmap(Vec<u8>),
    /// Ids the inner selector rejects.
    Not(Box<IdSelector>),
    /// Ids both select.
    And(Box<IdSelector>, Box<IdSelector>),
    /// Ids either selects.
    Or(Box<IdSelector>, Box<IdSelector>),
}

impl IdSelector {
    /// Ids in `min..max`.
    pub fn range(min: Label, max: Label) -> IdSelector {
        IdSelector::Range { min, max }
    }

    /// Ids in `ids`.
    pub fn set(ids: impl IntoIterator<Item = Label>) -> IdSelector {
        IdSelector::Set(ids.into_iter().collect())
    }

    /// A bitmap of `n_bits` bits with the given ids set (ids outside `0..n_bits` are
    /// ignored).
    pub fn bitmap_from_ids(n_bits: usize, ids: impl IntoIterator<Item = Label>) -> IdSelector {
        let mut bits = vec![0u8; n_bits.div_ceil(8)];
        for id in ids {
            if id >= 0 && (id as usize) < n_bits {
                bits[id as usize / 8] |= 1 << (id % 8);
            }
        }
        IdSelector::Bitmap(bits)
    }

    /// The complement.
    #[allow(clippy::should_implement_trait)]
    pub fn not(self) -> IdSelector {
        IdSelector::Not(Box::new(self))
    }

    /// The intersection.
    pub fn and(self, other: IdSelector) -> IdSelector {
        IdSelector::And(Box::new(self), Box::new(other))
    }

    /// The union.
    pub fn or(self, other: IdSelector) -> IdSelector {
        IdSelector::Or(Box::new(self), Box::new(other))
    }
}

impl IdFilter for IdSelector {
    fn is_member(&self, id: Label) -> bool {
        match self {
            IdSelector::All => true,
            IdSelector::Range { min, max } => *min <= id && id < *max,
            IdSelector::Set(s) => s.contains(&id),
            IdSelector::Bitmap(bits) => {
                id >= 0
                    && bits
                        .get(id as usize / 8)
                        .is_some_and(|b| b >> (id % 8) & 1 == 1)
            }
            IdSelector::Not(s) => !s.is_member(id),
            IdSelector::And(a, b) => a.is_member(id) && b.is_member(id),
            IdSelector::Or(a, b) => a.is_member(id) || b.is_member(id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        let r = IdSelector::range(2, 5);
        assert!(!r.is_member(1) && r.is_member(2) && r.is_member(4) && !r.is_member(5));
        let s = IdSelector::set([1, 9]).or(IdSelector::range(100, 101));
        assert!(s.is_member(9) && s.is_member(100) && !s.is_member(2));
        let b = IdSelector::bitmap_from_ids(10, [0, 9, 12, -1]);
        assert!(b.is_member(0) && b.is_member(9) && !b.is_member(12) && !b.is_member(-1));
        assert!(IdSelector::All.is_member(-5));
        let f = |id: Label| id % 2 == 0;
        assert!(f.is_member(4) && !f.is_member(3));
    }
}
