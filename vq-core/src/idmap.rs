//! Indexes that map caller-chosen ids onto an inner index's sequential ids.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::index::Index;
use crate::metric::Metric;
use crate::params::SearchParams;
use crate::results::{RangeSearchResults, SearchResults};
use crate::selector::IdFilter;
use crate::vectors::{Label, NO_LABEL, VectorsRef};

/// Adds `add_with_ids` to any index (Faiss's `IndexIDMap`).
///
/// The inner index stores vectors under its own sequential positions; this wrapper keeps
/// the caller's id for each position and translates results, filters and removals. After
/// a removal, an inner index that renumbers its vectors (flat ones, as in Faiss) has the
/// map compacted alike; one that keeps its ids ([`Index::removal_keeps_ids`]: graphs,
/// inverted files) keeps the removed positions, emptied, and is given the positions of
/// vectors added later explicitly.
/// Ids may repeat (as in Faiss); use [`IndexIDMap2`] to reconstruct by id.
///
/// ```
/// use vq_core::{Index, IndexFlat, IndexIDMap, Metric, SearchParams, VectorsRef};
/// let mut index = IndexIDMap::new(IndexFlat::new(2, Metric::L2)?)?;
/// index.add_with_ids(VectorsRef::new(&[0.0, 0.0, 9.0, 9.0], 2)?, &[100, 200])?;
/// let res = index.search(VectorsRef::new(&[8.0, 8.0], 2)?, 1, &SearchParams::default())?;
/// assert_eq!(res.row(0).1, &[200]);
/// assert!(index.add(VectorsRef::new(&[1.0, 1.0], 2)?).is_err());
/// # Ok::<(), vq_core::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct IndexIDMap<I: Index> {
    index: I,
    ids: Vec<Label>,
}

impl<I: Index> IndexIDMap<I> {
    /// Wraps an empty index.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `index` already holds vectors (their ids would be
    /// unknown).
    pub fn new(index: I) -> Result<Self> {
        if !index.is_empty() {
            return Err(Error::invalid_param(
                "index",
                "IndexIDMap must wrap an empty index",
            ));
        }
        Ok(IndexIDMap {
            index,
            ids: Vec::new(),
        })
    }

    /// The wrapped index.
    pub fn inner(&self) -> &I {
        &self.index
    }

    /// The id of each stored vector, by inner position; [`NO_LABEL`] at the positions of
    /// vectors removed from an inner index that keeps its ids
    /// ([`Index::removal_keeps_ids`]).
    pub fn id_map(&self) -> &[Label] {
        &self.ids
    }

    /// Gives back the inner index and the id map.
    pub fn into_parts(self) -> (I, Vec<Label>) {
        (self.index, self.ids)
    }

    /// A filter over inner positions that accepts what `selector` accepts of their ids.
    fn by_position<'a>(
        &'a self,
        selector: &'a dyn IdFilter,
    ) -> impl Fn(Label) -> bool + Send + Sync + 'a {
        let ids = &self.ids;
        move |pos: Label| {
            usize::try_from(pos)
                .ok()
                .and_then(|p| ids.get(p))
                .is_some_and(|&id| selector.is_member(id))
        }
    }

    fn map_labels(&self, labels: &mut [Label]) {
        for l in labels {
            if *l != NO_LABEL {
                *l = self.ids.get(*l as usize).copied().unwrap_or(NO_LABEL);
            }
        }
    }
}

impl<I: Index> Index for IndexIDMap<I> {
    fn dim(&self) -> usize {
        self.index.dim()
    }

    fn metric(&self) -> Metric {
        self.index.metric()
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    fn describe(&self) -> String {
        format!("IndexIDMap({})", self.index.describe())
    }

    fn is_trained(&self) -> bool {
        self.index.is_trained()
    }

    fn train(&mut self, x: VectorsRef<'_>) -> Result<()> {
        self.index.train(x)
    }

    fn add(&mut self, _x: VectorsRef<'_>) -> Result<()> {
        Err(Error::not_supported(
            "add without ids (use add_with_ids)",
            self.describe(),
        ))
    }

    fn add_with_ids(&mut self, x: VectorsRef<'_>, ids: &[Label]) -> Result<()> {
        x.check_dim(self.dim())?;
        if ids.len() != x.len() {
            return Err(Error::LengthMismatch {
                what: "ids",
                expected: x.len(),
                got: ids.len(),
            });
        }
        if let Some(&bad) = ids.iter().find(|&&id| id == NO_LABEL) {
            return Err(Error::invalid_param(
                "ids",
                format!("id {bad} is reserved for missing results"),
            ));
        }
        // The inner index numbers new vectors `len..` until a removal that keeps ids
        // leaves gaps (see `remove_ids`); from then on they are given their positions.
        let start = self.ids.len();
        if start == self.index.len() {
            self.index.add(x)?;
        } else {
            let positions: Vec<Label> = (start..start + x.len()).map(|p| p as Label).collect();
            self.index.add_with_ids(x, &positions)?;
        }
        self.ids.extend_from_slice(ids);
        Ok(())
    }

    fn search_into(
        &self,
        queries: VectorsRef<'_>,
        k: usize,
        params: &SearchParams<'_>,
        out: &mut SearchResults,
    ) -> Result<()> {
        let translated = params.selector.map(|sel| self.by_position(sel));
        let mut inner = params.clone();
        if let Some(t) = &translated {
            inner.selector = Some(t);
        }
        self.index.search_into(queries, k, &inner, out)?;
        self.map_labels(out.parts_mut().1);
        // The inner index broke ties by position: within the k, by id again.
        let metric = self.index.metric();
        for i in 0..out.nq() {
            let (d, l) = out.row_mut(i);
            // Rows without a tie (the usual case) are left as they are.
            if !d.windows(2).any(|w| w[0] == w[1]) {
                continue;
            }
            let mut pairs: Vec<(f32, Label)> = d.iter().copied().zip(l.iter().copied()).collect();
            pairs.sort_by(|a, b| {
                let pad = |p: &(f32, Label)| p.1 == NO_LABEL;
                pad(a)
                    .cmp(&pad(b))
                    .then(metric.to_key(a.0).total_cmp(&metric.to_key(b.0)))
                    .then(a.1.cmp(&b.1))
            });
            for ((dd, ll), (pd, pl)) in d.iter_mut().zip(l.iter_mut()).zip(pairs) {
                *dd = pd;
                *ll = pl;
            }
        }
        Ok(())
    }

    fn range_search(
        &self,
        queries: VectorsRef<'_>,
        radius: f32,
        params: &SearchParams<'_>,
    ) -> Result<RangeSearchResults> {
        let translated = params.selector.map(|sel| self.by_position(sel));
        let mut inner = params.clone();
        if let Some(t) = &translated {
            inner.selector = Some(t);
        }
        let mut res = self.index.range_search(queries, radius, &inner)?;
        self.map_labels(res.labels_mut());
        // Sorted again: ties by id, as every range search (the inner one went by position).
        let lists = (0..res.nq())
            .map(|i| {
                let (d, l) = res.row(i);
                d.iter().copied().zip(l.iter().copied()).collect()
            })
            .collect();
        Ok(RangeSearchResults::from_lists(lists, self.index.metric()))
    }

    fn remove_ids(&mut self, selector: &dyn IdFilter) -> Result<usize> {
        let keep: Vec<bool> = self.ids.iter().map(|&id| !selector.is_member(id)).collect();
        let by_pos =
            |pos: Label| usize::try_from(pos).ok().and_then(|p| keep.get(p)) == Some(&false);
        let removed = self.index.remove_ids(&by_pos)?;
        if self.index.removal_keeps_ids() {
            // The inner index still answers with the old positions: keep them, with the
            // removed ones emptied (no search returns them; `IndexIDMap2` skips them).
            for (id, &k) in self.ids.iter_mut().zip(&keep) {
                if !k {
                    *id = NO_LABEL;
                }
            }
        } else {
            // The inner index renumbered the survivors `0..len` in order.
            let mut it = keep.iter();
            self.ids.retain(|_| *it.next().unwrap_or(&true));
        }
        debug_assert!(self.ids.len() >= self.index.len());
        Ok(removed)
    }

    fn reset(&mut self) {
        self.index.reset();
        self.ids.clear();
    }

    fn search_param_names(&self) -> Vec<String> {
        self.index.search_param_names()
    }

    fn set_build_param(&mut self, name: &str, value: &str) -> Result<()> {
        self.index.set_build_param(name, value)
    }

    fn set_search_param(&mut self, name: &str, value: &str) -> Result<()> {
        self.index.set_search_param(name, value)
    }

    fn save_state(&self, w: &mut crate::persist::StateWriter<'_>) -> Result<()> {
        w.scope("inner", |w| self.index.save_state(w))?;
        w.put_i64s("ids", &self.ids)
    }

    /// On error the map is left empty (the inner index may have loaded already).
    fn load_state(&mut self, r: &mut crate::persist::StateReader) -> Result<()> {
        let loaded = r
            .scope("inner", |r| self.index.load_state(r))
            .and_then(|()| {
                let ids = r.get_i64s("ids")?;
                let live = ids.iter().filter(|&&id| id != NO_LABEL).count();
                if live != self.index.len()
                    || (ids.len() != live && !self.index.removal_keeps_ids())
                {
                    let n = self.index.len();
                    return Err(r.error("ids", format!("{} ids for {n} vectors", ids.len())));
                }
                Ok(ids)
            });
        match loaded {
            Ok(ids) => {
                self.ids = ids;
                Ok(())
            }
            Err(e) => {
                self.reset();
                Err(e)
            }
        }
    }

    fn bytes_per_vector(&self) -> f64 {
        self.index.bytes_per_vector() + 8.0
    }
}

/// [`IndexIDMap`] that can also reconstruct vectors by id (Faiss's `IndexIDMap2`).
///
/// Ids must be unique: adding an id already present is an [`Error::DuplicateId`].
///
/// ```
/// use vq_core::{Index, IndexFlat, IndexIDMap2, Metric, VectorsRef};
/// let mut index = IndexIDMap2::new(IndexFlat::new(2, Metric::L2)?)?;
/// index.add_with_ids(VectorsRef::new(&[1.0, 2.0, 3.0, 4.0], 2)?, &[7, 9])?;
/// assert_eq!(index.reconstruct(9)?, vec![3.0, 4.0]);
/// assert!(index.reconstruct(8).is_err());
/// # Ok::<(), vq_core::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct IndexIDMap2<I: Index> {
    map: IndexIDMap<I>,
    positions: HashMap<Label, usize>,
}

impl<I: Index> IndexIDMap2<I> {
    /// Wraps an empty index.
    ///
    /// # Errors
    /// As [`IndexIDMap::new`].
    pub fn new(index: I) -> Result<Self> {
        Ok(IndexIDMap2 {
            map: IndexIDMap::new(index)?,
            positions: HashMap::new(),
        })
    }

    /// The wrapped index.
    pub fn inner(&self) -> &I {
        self.map.inner()
    }

    /// The id of each stored vector, by inner position (as [`IndexIDMap::id_map`]).
    pub fn id_map(&self) -> &[Label] {
        self.map.id_map()
    }

    fn rebuild_positions(&mut self) {
        self.positions = self
            .map
            .id_map()
            .iter()
            .enumerate()
            .filter(|&(_, &id)| id != NO_LABEL)
            .map(|(p, &id)| (id, p))
            .collect();
    }
}

impl<I: Index> Index for IndexIDMap2<I> {
    fn dim(&self) -> usize {
        self.map.dim()
    }
    fn metric(&self) -> Metric {
        self.map.metric()
    }
    fn len(&self) -> usize {
        self.map.len()
    }
    fn describe(&self) -> String {
        format!("IndexIDMap2({})", self.map.index.describe())
    }
    fn is_trained(&self) -> bool {
        self.map.is_trained()
    }
    fn train(&mut self, x: VectorsRef<'_>) -> Result<()> {
        self.map.train(x)
    }
    fn add(&mut self, x: VectorsRef<'_>) -> Result<()> {
        self.map.add(x)
    }
    fn add_with_ids(&mut self, x: VectorsRef<'_>, ids: &[Label]) -> Result<()> {
        let mut fresh = std::collections::HashSet::with_capacity(ids.len());
        for &id in ids {
            if self.positions.contains_key(&id) || !fresh.insert(id) {
                return Err(Error::DuplicateId { id });
            }
        }
        let start = self.map.ids.len();
        self.map.add_with_ids(x, ids)?;
        self.positions
            .extend(ids.iter().enumerate().map(|(i, &id)| (id, start + i)));
        Ok(())
    }
    fn search_into(
        &self,
        queries: VectorsRef<'_>,
        k: usize,
        params: &SearchParams<'_>,
        out: &mut SearchResults,
    ) -> Result<()> {
        self.map.search_into(queries, k, params, out)
    }
    fn range_search(
        &self,
        queries: VectorsRef<'_>,
        radius: f32,
        params: &SearchParams<'_>,
    ) -> Result<RangeSearchResults> {
        self.map.range_search(queries, radius, params)
    }
    fn reconstruct_into(&self, id: Label, out: &mut [f32]) -> Result<()> {
        let pos = *self.positions.get(&id).ok_or(Error::IdNotFound { id })?;
        self.map.index.reconstruct_into(pos as Label, out)
    }
    fn remove_ids(&mut self, selector: &dyn IdFilter) -> Result<usize> {
        let n = self.map.remove_ids(selector)?;
        self.rebuild_positions();
        Ok(n)
    }
    fn reset(&mut self) {
        self.map.reset();
        self.positions.clear();
    }
    fn search_param_names(&self) -> Vec<String> {
        self.map.search_param_names()
    }
    fn set_build_param(&mut self, name: &str, value: &str) -> Result<()> {
        self.map.set_build_param(name, value)
    }
    fn set_search_param(&mut self, name: &str, value: &str) -> Result<()> {
        self.map.set_search_param(name, value)
    }
    fn save_state(&self, w: &mut crate::persist::StateWriter<'_>) -> Result<()> {
        self.map.save_state(w)
    }
    fn load_state(&mut self, r: &mut crate::persist::StateReader) -> Result<()> {
        if let Err(e) = self.map.load_state(r) {
            self.reset();
            return Err(e);
        }
        self.rebuild_positions();
        if self.positions.len() != self.map.len() {
            self.reset();
            return Err(r.error("ids", "an id appears twice (IDMap2 ids are unique)"));
        }
        Ok(())
    }
    fn bytes_per_vector(&self) -> f64 {
        // id map plus the hash map entry (id, position) and its control byte.
        self.map.bytes_per_vector() + 17.0
    }
}

#[cfg(test)]
mod persist_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::IndexFlat;

    #[test]
    fn id_map2_refuses_a_file_with_duplicate_ids() {
        let mut m = IndexIDMap::new(IndexFlat::new(2, Metric::L2).unwrap()).unwrap();
        let x = VectorsRef::new(&[0.0, 1.0, 2.0, 3.0], 2).unwrap();
        m.add_with_ids(x, &[4, 4]).unwrap();
        let bytes = crate::testing::state_bytes(&m).unwrap();
        let fresh = IndexIDMap2::new(IndexFlat::new(2, Metric::L2).unwrap()).unwrap();
        let e = crate::testing::load_state_bytes(fresh, &bytes, None).unwrap_err();
        assert!(e.to_string().contains("appears twice"), "{e}");
        let fresh = IndexIDMap2::new(IndexFlat::new(2, Metric::L2).unwrap()).unwrap();
        m.reset();
        m.add_with_ids(x, &[4, 5]).unwrap();
        let bytes = crate::testing::state_bytes(&m).unwrap();
        let back = crate::testing::load_state_bytes(fresh, &bytes, None).unwrap();
        assert_eq!(back.reconstruct(5).unwrap(), vec![2.0, 3.0]);
    }
}
