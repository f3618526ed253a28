//! The `Index` trait: the contract every index in the workspace implements.

use std::fmt::Debug;

use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::metric::Metric;
use crate::params::SearchParams;
use crate::persist::{StateReader, StateWriter};
use crate::results::{RangeSearchResults, SearchResults};
use crate::selector::IdFilter;
use crate::vectors::{Label, VectorsRef};

/// A searchable collection of vectors (Faiss's `Index`).
///
/// Batch-first: every method takes a whole row-major set of vectors. Mutation takes
/// `&mut self`; queries take `&self`, so any number of threads may search one index at
/// once (`Index: Send + Sync`), and searches run in parallel on the caller's rayon pool.
///
/// Only six methods are required; the rest have defaults that either work generically
/// or return [`Error::NotSupported`] — never a panic.
///
/// Checks every index performs at its boundary: the dimension of added vectors and
/// queries, finite values, `k >= 1`, `k <= len()` and a non-empty index for k-NN search,
/// and `ids.len() == n` for `add_with_ids`.
///
/// # Concurrency
///
/// Searching needs `&self` and every index is `Send + Sync`, so any number of threads
/// may search one index at once with no lock. Adding, removing and training need
/// `&mut self`: to search while another thread adds, put the index behind a
/// [`std::sync::RwLock`] — searches take the read lock (they run concurrently), a batch
/// add takes the write lock (searches wait for it, then see the whole batch, never half
/// of it):
///
/// ```
/// use std::sync::RwLock;
/// use vq_core::{Index, IndexFlat, Metric, SearchParams, VectorsRef};
/// let index = RwLock::new(IndexFlat::new(2, Metric::L2)?);
/// index.write().unwrap().add(VectorsRef::new(&[0.0, 0.0, 1.0, 1.0], 2)?)?;
/// std::thread::scope(|s| {
///     for _ in 0..4 {
///         s.spawn(|| {
///             let q = VectorsRef::new(&[0.1, 0.1], 2).unwrap();
///             let r = index.read().unwrap().search(q, 1, &SearchParams::default()).unwrap();
///             assert_eq!(r.labels()[0], 0);
///         });
///     }
///     s.spawn(|| {
///         let x = VectorsRef::new(&[5.0, 5.0], 2).unwrap();
///         index.write().unwrap().add(x).unwrap();
///     });
/// });
/// assert_eq!(index.read().unwrap().len(), 3);
/// # Ok::<(), vq_core::Error>(())
/// ```
///
/// Without the lock, adding while other threads search does not compile (the borrow
/// checker rules the data race out):
///
/// ```compile_fail
/// use vq_core::{Index, IndexFlat, Metric, SearchParams, VectorsRef};
/// let mut index = IndexFlat::new(2, Metric::L2).unwrap();
/// std::thread::scope(|s| {
///     s.spawn(|| index.search(VectorsRef::new(&[0.0, 0.0], 2).unwrap(), 1,
///                             &SearchParams::default()));
///     s.spawn(|| index.add(VectorsRef::new(&[1.0, 1.0], 2).unwrap()));
/// });
/// ```
///
/// The bound is part of the trait, so a type that is not `Sync` (interior mutability
/// without a lock) cannot be an index at all:
///
/// ```compile_fail
/// use vq_core::{Index, Metric, Result, SearchParams, SearchResults, VectorsRef};
/// #[derive(Debug)]
/// struct Counting(std::cell::Cell<u64>); // not Sync
/// impl Index for Counting {
///     fn dim(&self) -> usize { 1 }
///     fn metric(&self) -> Metric { Metric::L2 }
///     fn len(&self) -> usize { 0 }
///     fn add(&mut self, _: VectorsRef<'_>) -> Result<()> { Ok(()) }
///     fn search_into(&self, _: VectorsRef<'_>, _: usize, _: &SearchParams<'_>,
///                    _: &mut SearchResults) -> Result<()> {
///         self.0.set(self.0.get() + 1);
///         Ok(())
///     }
///     fn reset(&mut self) {}
/// }
/// ```
///
/// ```
/// use vq_core::{Index, IndexFlat, Metric, SearchParams, VectorsRef};
/// let mut index = IndexFlat::new(2, Metric::L2)?;
/// index.add(VectorsRef::new(&[0.0, 0.0, 1.0, 0.0, 5.0, 5.0], 2)?)?;
/// let res = index.search(VectorsRef::new(&[0.9, 0.1], 2)?, 2, &SearchParams::default())?;
/// assert_eq!(res.row(0).1, &[1, 0]);
/// # Ok::<(), vq_core::Error>(())
/// ```
pub trait Index: Send + Sync + Debug {
    /// Dimension of the vectors the index takes.
    fn dim(&self) -> usize;

    /// The metric results are reported in.
    fn metric(&self) -> Metric;

    /// Number of vectors stored (Faiss's `ntotal`).
    fn len(&self) -> usize;

    /// Adds vectors; they get the sequential ids `len()..len() + n`.
    ///
    /// # Errors
    /// Dimension mismatch, non-finite values, [`Error::NotTrained`], or
    /// [`Error::NotSupported`] for indexes that need explicit ids.
    fn add(&mut self, x: VectorsRef<'_>) -> Result<()>;

    /// Writes the `k` nearest neighbours of each query into `out` (resized to
    /// `nq × k`). See [`SearchResults`] for the layout and padding.
    ///
    /// # Errors
    /// Dimension mismatch, non-finite queries, `k == 0`, `k > len()`, an empty index.
    fn search_into(
        &self,
        queries: VectorsRef<'_>,
        k: usize,
        params: &SearchParams<'_>,
        out: &mut SearchResults,
    ) -> Result<()>;

    /// Removes every vector (the index stays trained).
    fn reset(&mut self);

    /// `true` when `len() == 0`.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A short description, e.g. `"IndexFlat(d=128, l2)"`, used in messages.
    fn describe(&self) -> String {
        format!("index(d={}, {})", self.dim(), self.metric())
    }

    /// `true` when the index can take vectors (indexes without training always are).
    fn is_trained(&self) -> bool {
        true
    }

    /// Trains the index on representative vectors. The default checks the dimension and
    /// does nothing else.
    ///
    /// # Errors
    /// Dimension mismatch, non-finite values, too few vectors.
    fn train(&mut self, x: VectorsRef<'_>) -> Result<()> {
        x.check_dim(self.dim())
    }

    /// Adds vectors with caller-chosen ids.
    ///
    /// # Errors
    /// [`Error::NotSupported`] unless the index maps ids (e.g. [`crate::IndexIDMap`]).
    fn add_with_ids(&mut self, x: VectorsRef<'_>, ids: &[Label]) -> Result<()> {
        let _ = (x, ids);
        Err(Error::not_supported("add_with_ids", self.describe()))
    }

    /// Allocating form of [`Index::search_into`].
    ///
    /// # Errors
    /// As [`Index::search_into`].
    fn search(
        &self,
        queries: VectorsRef<'_>,
        k: usize,
        params: &SearchParams<'_>,
    ) -> Result<SearchResults> {
        let mut out = SearchResults::new(0, 0, self.metric());
        self.search_into(queries, k, params, &mut out)?;
        Ok(out)
    }

    /// Every stored vector within `radius` of each query: L2 distance `< radius`, or
    /// inner product `> radius` (Faiss's strict comparisons).
    ///
    /// # Errors
    /// [`Error::NotSupported`] by default.
    fn range_search(
        &self,
        queries: VectorsRef<'_>,
        radius: f32,
        params: &SearchParams<'_>,
    ) -> Result<RangeSearchResults> {
        let _ = (queries, radius, params);
        Err(Error::not_supported("range_search", self.describe()))
    }

    /// Writes the stored vector with id `id` (or its lossy reconstruction) into `out`.
    ///
    /// # Errors
    /// [`Error::NotSupported`] by default; [`Error::IdNotFound`] for an unknown id.
    fn reconstruct_into(&self, id: Label, out: &mut [f32]) -> Result<()> {
        let _ = (id, out);
        Err(Error::not_supported("reconstruct", self.describe()))
    }

    /// Allocating form of [`Index::reconstruct_into`].
    ///
    /// # Errors
    /// As [`Index::reconstruct_into`].
    fn reconstruct(&self, id: Label) -> Result<Vec<f32>> {
        let mut v = vec![0.0; self.dim()];
        self.reconstruct_into(id, &mut v)?;
        Ok(v)
    }

    /// The nearest stored id of each vector (`k = 1` search, labels only). Used by
    /// k-means and IVF to assign vectors to centroids.
    ///
    /// # Errors
    /// As [`Index::search_into`] with `k = 1`.
    fn assign(&self, x: VectorsRef<'_>) -> Result<Vec<Label>> {
        let res = self.search(x, 1, &SearchParams::default())?;
        Ok(res.into_parts().1)
    }

    /// Removes the vectors whose ids `selector` accepts; returns how many were removed.
    ///
    /// # Errors
    /// [`Error::NotSupported`] by default.
    fn remove_ids(&mut self, selector: &dyn IdFilter) -> Result<usize> {
        let _ = selector;
        Err(Error::not_supported("remove_ids", self.describe()))
    }

    /// Whether [`Index::remove_ids`] leaves the other vectors' ids as they were (graphs
    /// and inverted files, whose `add` then numbers new vectors on from there or from
    /// [`Index::len`]), rather than renumbering the survivors `0..len` in order as Faiss's
    /// flat indexes do (the default). Id maps ([`crate::IndexIDMap`]) translate through it.
    fn removal_keeps_ids(&self) -> bool {
        false
    }

    /// The names of the search parameters this index reads (Faiss spelling, with
    /// `quantizer_` prefixes for a coarse quantizer's). Tools reject others.
    fn search_param_names(&self) -> Vec<String> {
        Vec::new()
    }

    /// Sets a build-time parameter by name (e.g. `efConstruction`) before training and
    /// adding.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a name this index does not have.
    fn set_build_param(&mut self, name: &str, value: &str) -> Result<()> {
        let _ = value;
        Err(Error::invalid_param(
            name,
            format!("not a build parameter of {}", self.describe()),
        ))
    }

    /// Sets an index-resident search default by its Faiss name (`nprobe`, `efSearch`,
    /// `quantizer_efSearch`, `k_factor_rf`...), used when a call's [`SearchParams`]
    /// leaves the field unset. Wrappers (transforms, id maps, refinement, shards) pass
    /// names they do not own to the index they wrap.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a name this index does not have or a bad value.
    fn set_search_param(&mut self, name: &str, value: &str) -> Result<()> {
        let _ = value;
        Err(Error::invalid_param(
            name,
            format!("not a search parameter of {}", self.describe()),
        ))
    }

    /// Writes the index's whole state (parameters, trained data, stored vectors) as
    /// sections of a container (see [`crate::persist`]). The structure itself (which
    /// types, which dimensions) is the factory's business: it is rebuilt empty and then
    /// filled by [`Index::load_state`].
    ///
    /// # Errors
    /// [`Error::NotSupported`] by default; I/O errors.
    fn save_state(&self, w: &mut StateWriter<'_>) -> Result<()> {
        let _ = w;
        Err(Error::not_supported("save", self.describe()))
    }

    /// Restores what [`Index::save_state`] wrote into an index of the same structure,
    /// replacing its contents. On error the index is left unchanged or empty, never
    /// half-loaded.
    ///
    /// # Errors
    /// [`Error::NotSupported`] by default; [`Error::Format`] for missing, corrupt or
    /// inconsistent sections.
    fn load_state(&mut self, r: &mut StateReader) -> Result<()> {
        let _ = r;
        Err(Error::not_supported("load", self.describe()))
    }

    /// Bytes the index holds per stored vector (codes plus per-vector overhead such as
    /// ids and graph links), for memory reports.
    fn bytes_per_vector(&self) -> f64 {
        0.0
    }

    /// The index as a standalone codec, when it is one.
    fn as_codec(&self) -> Option<&dyn Codec> {
        None
    }

    /// Hints that [`Index::reconstruct_into`] will soon be called for these ids, so
    /// their data can be fetched into cache meanwhile (re-ranking scores scattered
    /// candidates). The default does nothing.
    fn prefetch(&self, ids: &[Label]) {
        let _ = ids;
    }

    /// Distances (of the index's metric) from `query` to the stored vectors `ids`, into
    /// `out` (Faiss's `compute_distance_subset`, used for re-ranking); a `-1` id gives
    /// [`Metric::worst`]. The default reconstructs each vector (exact for flat
    /// storage, the decoded vector otherwise); [`crate::IndexFlat`] scores its rows in
    /// place.
    ///
    /// # Errors
    /// `query` of the wrong dimension, `out` not as long as `ids`, an unknown id, or an
    /// index that cannot reconstruct.
    fn distances_to(&self, query: &[f32], ids: &[Label], out: &mut [f32]) -> Result<()> {
        check_distances_to(self.dim(), query, ids, out)?;
        let kern = crate::distance::Kernels::get();
        let metric = self.metric();
        let mut buf = vec![0.0f32; self.dim()];
        self.prefetch(ids);
        for (o, &id) in out.iter_mut().zip(ids) {
            if id == crate::vectors::NO_LABEL {
                *o = metric.worst();
                continue;
            }
            self.reconstruct_into(id, &mut buf)?;
            *o = kern.distance(metric, query, &buf);
        }
        Ok(())
    }
}

/// The argument checks of [`Index::distances_to`].
///
/// # Errors
/// `query` not of dimension `dim`, `out` not as long as `ids`, a non-finite query.
pub(crate) fn check_distances_to(
    dim: usize,
    query: &[f32],
    ids: &[Label],
    out: &[f32],
) -> Result<()> {
    if query.len() != dim {
        return Err(Error::DimensionMismatch {
            expected: dim,
            got: query.len(),
        });
    }
    if out.len() != ids.len() {
        return Err(Error::invalid_param(
            "out",
            format!("{} slots for {} ids", out.len(), ids.len()),
        ));
    }
    if query.iter().any(|v| !v.is_finite()) {
        return Err(Error::invalid_param("query", "contains NaN or infinity"));
    }
    Ok(())
}

/// Checks shared by every k-NN search: dimension, finiteness, `1 <= k <= ntotal`, and
/// results that can be allocated (`nq × k` entries of 12 bytes, made up front: their
/// size must fit the address space).
///
/// # Errors
/// The first failed check.
pub fn check_search(index: &dyn Index, queries: VectorsRef<'_>, k: usize) -> Result<()> {
    queries.check_dim(index.dim())?;
    queries.check_finite()?;
    if k == 0 {
        return Err(Error::invalid_param("k", "must be at least 1"));
    }
    check_result_size(queries.len(), k)?;
    if index.is_empty() {
        return Err(Error::EmptyIndex);
    }
    if k > index.len() {
        return Err(Error::invalid_param(
            "k",
            format!("k = {k} exceeds the {} vectors in the index", index.len()),
        ));
    }
    Ok(())
}

/// Refuses `nq × k` results whose size (12 bytes each: a distance and a label) does not
/// fit the address space, before anything is allocated.
///
/// # Errors
/// [`Error::InvalidParameter`] naming `k` and the size.
pub fn check_result_size(nq: usize, k: usize) -> Result<()> {
    let bytes = nq
        .checked_mul(k)
        .and_then(|n| n.checked_mul(std::mem::size_of::<f32>() + std::mem::size_of::<Label>()));
    match bytes {
        Some(b) if b <= isize::MAX as usize => Ok(()),
        _ => Err(Error::invalid_param(
            "k",
            format!(
                "{nq} queries × k = {k} results do not fit in memory; search in smaller batches"
            ),
        )),
    }
}

/// Checks shared by every range search: dimension, finiteness, a radius that is not NaN.
///
/// # Errors
/// The first failed check.
pub fn check_range_search(index: &dyn Index, queries: VectorsRef<'_>, radius: f32) -> Result<()> {
    queries.check_dim(index.dim())?;
    queries.check_finite()?;
    if radius.is_nan() {
        return Err(Error::invalid_param("radius", "must not be NaN"));
    }
    Ok(())
}

impl<I: Index + ?Sized> Index for Box<I> {
    fn dim(&self) -> usize {
        (**self).dim()
    }
    fn metric(&self) -> Metric {
        (**self).metric()
    }
    fn len(&self) -> usize {
        (**self).len()
    }
    fn add(&mut self, x: VectorsRef<'_>) -> Result<()> {
        (**self).add(x)
    }
    fn search_into(
        &self,
        queries: VectorsRef<'_>,
        k: usize,
        params: &SearchParams<'_>,
        out: &mut SearchResults,
    ) -> Result<()> {
        (**self).search_into(queries, k, params, out)
    }
    fn reset(&mut self) {
        (**self).reset()
    }
    fn is_empty(&self) -> bool {
        (**self).is_empty()
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn is_trained(&self) -> bool {
        (**self).is_trained()
    }
    fn train(&mut self, x: VectorsRef<'_>) -> Result<()> {
        (**self).train(x)
    }
    fn add_with_ids(&mut self, x: VectorsRef<'_>, ids: &[Label]) -> Result<()> {
        (**self).add_with_ids(x, ids)
    }
    fn search(
        &self,
        queries: VectorsRef<'_>,
        k: usize,
        params: &SearchParams<'_>,
    ) -> Result<SearchResults> {
        (**self).search(queries, k, params)
    }
    fn range_search(
        &self,
        queries: VectorsRef<'_>,
        radius: f32,
        params: &SearchParams<'_>,
    ) -> Result<RangeSearchResults> {
        (**self).range_search(queries, radius, params)
    }
    fn reconstruct_into(&self, id: Label, out: &mut [f32]) -> Result<()> {
        (**self).reconstruct_into(id, out)
    }
    fn reconstruct(&self, id: Label) -> Result<Vec<f32>> {
        (**self).reconstruct(id)
    }
    fn assign(&self, x: VectorsRef<'_>) -> Result<Vec<Label>> {
        (**self).assign(x)
    }
    fn remove_ids(&mut self, selector: &dyn IdFilter) -> Result<usize> {
        (**self).remove_ids(selector)
    }
    fn removal_keeps_ids(&self) -> bool {
        (**self).removal_keeps_ids()
    }
    fn search_param_names(&self) -> Vec<String> {
        (**self).search_param_names()
    }
    fn set_build_param(&mut self, name: &str, value: &str) -> Result<()> {
        (**self).set_build_param(name, value)
    }
    fn bytes_per_vector(&self) -> f64 {
        (**self).bytes_per_vector()
    }
    fn set_search_param(&mut self, name: &str, value: &str) -> Result<()> {
        (**self).set_search_param(name, value)
    }
    fn save_state(&self, w: &mut StateWriter<'_>) -> Result<()> {
        (**self).save_state(w)
    }
    fn load_state(&mut self, r: &mut StateReader) -> Result<()> {
        (**self).load_state(r)
    }
    fn as_codec(&self) -> Option<&dyn Codec> {
        (**self).as_codec()
    }
    fn prefetch(&self, ids: &[Label]) {
        (**self).prefetch(ids)
    }
    fn distances_to(&self, query: &[f32], ids: &[Label], out: &mut [f32]) -> Result<()> {
        (**self).distances_to(query, ids, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_sizes_beyond_the_address_space_are_refused() {
        assert!(check_result_size(10_000, 1_000).is_ok());
        assert!(check_result_size(0, usize::MAX).is_ok());
        let e = check_result_size(usize::MAX / 4, 3)
            .unwrap_err()
            .to_string();
        assert!(e.contains("smaller batches"), "{e}");
        assert!(check_result_size(1 << 32, 1 << 30).is_err());
    }
}
