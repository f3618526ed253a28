//! The exact index: every vector stored as is, searched exhaustively.

use crate::codec::FlatCodec;
use crate::distance::Kernels;
use crate::error::{Error, Result};
use crate::index::{Index, check_search};
use crate::knn::{self, Database};
use crate::metric::Metric;
use crate::params::SearchParams;
use crate::results::{RangeSearchResults, SearchResults};
use crate::selector::IdFilter;
use crate::vectors::{Label, VectorsRef};

/// Exact k-NN by brute force (Faiss's `IndexFlat`, `IndexFlatL2`, `IndexFlatIP`).
///
/// Vectors get sequential ids in insertion order. Batches of queries go through GEMM
/// tiles with a fused top-k; a few queries at a time go through SIMD kernels parallel
/// over the database (see [`crate::knn`]). For L2 the squared norms of the stored vectors
/// are kept (4 bytes per vector) so batched search needs no extra pass.
///
/// `remove_ids` compacts the storage and renumbers the remaining vectors, as Faiss does;
/// wrap the index in [`crate::IndexIDMap`] to keep stable ids.
///
/// ```
/// use vq_core::{Index, IndexFlat, Metric, SearchParams, VectorsRef};
/// let mut index = IndexFlat::new(3, Metric::InnerProduct)?;
/// index.add(VectorsRef::new(&[1.0, 0.0, 0.0, 0.0, 1.0, 0.0], 3)?)?;
/// let q = VectorsRef::new(&[0.2, 0.9, 0.0], 3)?;
/// let res = index.search(q, 1, &SearchParams::default())?;
/// assert_eq!(res.row(0).1, &[1]);
/// assert_eq!(index.reconstruct(0)?, vec![1.0, 0.0, 0.0]);
/// # Ok::<(), vq_core::Error>(())
/// ```
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct IndexFlat {
    dim: usize,
    metric: Metric,
    data: Vec<f32>,
    norms: Vec<f32>,
    /// The largest squared norm of the stored vectors (in `f64`), found on the first
    /// batched inner-product search after a change (batches bound their GEMM keys'
    /// error with it).
    #[cfg_attr(feature = "serde", serde(skip))]
    max_norm_sqr: std::sync::OnceLock<f64>,
}

impl IndexFlat {
    /// An empty flat index.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `dim == 0`.
    pub fn new(dim: usize, metric: Metric) -> Result<IndexFlat> {
        if dim == 0 {
            return Err(Error::invalid_param(
                "dim",
                "the dimension must be at least 1",
            ));
        }
        Ok(IndexFlat {
            dim,
            metric,
            data: Vec::new(),
            norms: Vec::new(),
            max_norm_sqr: std::sync::OnceLock::new(),
        })
    }

    /// The stored vectors, row-major.
    ///
    /// # Panics
    /// Never: the storage always holds whole vectors of `dim >= 1` (every add checks).
    #[allow(clippy::expect_used)] // an invariant, documented under # Panics
    pub fn vectors(&self) -> VectorsRef<'_> {
        // Invariant: `data.len()` is always a multiple of `dim >= 1`.
        VectorsRef::new(&self.data, self.dim).expect("invariant: flat storage is whole vectors")
    }

    /// The codec that stores vectors as raw floats.
    ///
    /// # Panics
    /// Never: the index's dimension is at least 1 (checked by its constructor).
    #[allow(clippy::expect_used)] // an invariant, documented under # Panics
    pub fn codec(&self) -> FlatCodec {
        FlatCodec::new(self.dim).expect("invariant: dim >= 1")
    }

    #[allow(clippy::expect_used)] // an invariant: one norm per stored vector
    fn database(&self) -> Database<'_> {
        let norms = (self.metric == Metric::L2).then_some(&self.norms[..]);
        Database::new(self.vectors(), norms).expect("invariant: one norm per vector")
    }

    /// [`IndexFlat::database`] for a search of `nq` queries: for an inner-product batch
    /// (GEMM tiles), with the largest squared norm (kept until the vectors change).
    fn database_for(&self, nq: usize) -> Database<'_> {
        let db = self.database();
        // L2 batches take the maximum of the kept squared norms (a pass over n floats).
        if nq < knn::GEMM_MIN_QUERIES || self.metric == Metric::L2 {
            return db;
        }
        let m = *self
            .max_norm_sqr
            .get_or_init(|| knn::max_norm_sqr(self.vectors()));
        db.with_max_norm_sqr(m)
    }

    fn position(&self, id: Label) -> Result<usize> {
        if id < 0 || id as usize >= self.len() {
            return Err(Error::IdNotFound { id });
        }
        Ok(id as usize)
    }

    /// Distances from each query to the stored vectors with the given ids
    /// (`queries.len() × ids_per_query` values; `-1` ids give [`Metric::worst`]).
    /// Faiss's `compute_distance_subset`, used for re-ranking.
    ///
    /// # Errors
    /// Dimension mismatch, `ids.len()` not a multiple of the number of queries, an id out
    /// of range.
    pub fn distances_to_ids(&self, queries: VectorsRef<'_>, ids: &[Label]) -> Result<Vec<f32>> {
        queries.check_dim(self.dim)?;
        let nq = queries.len();
        if nq == 0 || !ids.len().is_multiple_of(nq) {
            return Err(Error::LengthMismatch {
                what: "ids per query",
                expected: nq,
                got: ids.len(),
            });
        }
        let per = ids.len() / nq;
        let k = Kernels::get();
        let mut out = Vec::with_capacity(ids.len());
        for (qi, row) in ids.chunks(per.max(1)).enumerate() {
            for &id in row {
                if id == crate::NO_LABEL {
                    out.push(self.metric.worst());
                } else {
                    let p = self.position(id)?;
                    out.push(k.distance(
                        self.metric,
                        queries.row(qi),
                        &self.data[p * self.dim..(p + 1) * self.dim],
                    ));
                }
            }
        }
        Ok(out)
    }
}

impl Index for IndexFlat {
    fn dim(&self) -> usize {
        self.dim
    }

    fn metric(&self) -> Metric {
        self.metric
    }

    fn len(&self) -> usize {
        self.data.len() / self.dim
    }

    fn describe(&self) -> String {
        format!("IndexFlat(d={}, {})", self.dim, self.metric)
    }

    fn add(&mut self, x: VectorsRef<'_>) -> Result<()> {
        x.check_dim(self.dim)?;
        x.check_finite()?;
        // Huge pages: refinement (`RFlat`) and `reconstruct` read rows at random, and a
        // TLB miss per row would cost more than the row itself.
        crate::mem::reserve_with_huge_pages(&mut self.data, x.as_slice().len());
        self.data.extend_from_slice(x.as_slice());
        self.max_norm_sqr = std::sync::OnceLock::new();
        if self.metric == Metric::L2 {
            let k = Kernels::get();
            self.norms.extend(x.rows().map(|r| k.norm_sqr(r)));
        }
        Ok(())
    }

    fn search_into(
        &self,
        queries: VectorsRef<'_>,
        k: usize,
        params: &SearchParams<'_>,
        out: &mut SearchResults,
    ) -> Result<()> {
        check_search(self, queries, k)?;
        knn::knn_into(
            &self.database_for(queries.len()),
            queries,
            k,
            self.metric,
            params.selector,
            out,
        )
    }

    fn reset(&mut self) {
        self.max_norm_sqr = std::sync::OnceLock::new();
        self.data.clear();
        self.norms.clear();
    }

    fn range_search(
        &self,
        queries: VectorsRef<'_>,
        radius: f32,
        params: &SearchParams<'_>,
    ) -> Result<RangeSearchResults> {
        knn::range_search(
            &self.database_for(queries.len()),
            queries,
            radius,
            self.metric,
            params.selector,
        )
    }

    fn reconstruct_into(&self, id: Label, out: &mut [f32]) -> Result<()> {
        let p = self.position(id)?;
        if out.len() != self.dim {
            return Err(Error::DimensionMismatch {
                expected: self.dim,
                got: out.len(),
            });
        }
        out.copy_from_slice(&self.data[p * self.dim..(p + 1) * self.dim]);
        Ok(())
    }

    fn prefetch(&self, ids: &[Label]) {
        let d = self.dim;
        for &id in ids {
            if let Ok(p) = self.position(id) {
                crate::distance::prefetch(&self.data[p * d..(p + 1) * d], 64);
            }
        }
    }

    fn distances_to(&self, query: &[f32], ids: &[Label], out: &mut [f32]) -> Result<()> {
        crate::index::check_distances_to(self.dim, query, ids, out)?;
        // Rows a few candidates ahead are requested while the current one is scored: the
        // first `lines` cache lines of each (the hardware's stream prefetcher follows a row
        // once it is being read), about 48 lines in flight in all. More than that overfills
        // the core's miss buffers: with 784-dimension rows, 12 whole rows ahead (588 lines)
        // scored 14% slower than 3 rows of 16 lines.
        const IN_FLIGHT: usize = 48;
        let d = self.dim;
        let lines = (d * std::mem::size_of::<f32>()).div_ceil(64).clamp(1, 16);
        let ahead = (IN_FLIGHT / lines).clamp(3, 12);
        let fetch = |id: Label| {
            if let Ok(p) = self.position(id) {
                crate::distance::prefetch(&self.data[p * d..(p + 1) * d], lines);
            }
        };
        ids.iter().take(ahead).for_each(|&id| fetch(id));
        let kern = Kernels::get();
        for (i, (o, &id)) in out.iter_mut().zip(ids).enumerate() {
            if let Some(&next) = ids.get(i + ahead) {
                fetch(next);
            }
            *o = if id == crate::vectors::NO_LABEL {
                self.metric.worst()
            } else {
                let p = self.position(id)?;
                kern.distance(self.metric, query, &self.data[p * d..(p + 1) * d])
            };
        }
        Ok(())
    }

    fn remove_ids(&mut self, selector: &dyn IdFilter) -> Result<usize> {
        let n = self.len();
        let d = self.dim;
        let mut w = 0;
        for r in 0..n {
            if selector.is_member(r as Label) {
                continue;
            }
            if w != r {
                self.data.copy_within(r * d..(r + 1) * d, w * d);
                if !self.norms.is_empty() {
                    self.norms[w] = self.norms[r];
                }
            }
            w += 1;
        }
        self.data.truncate(w * d);
        self.max_norm_sqr = std::sync::OnceLock::new();
        self.norms
            .truncate(if self.norms.is_empty() { 0 } else { w });
        Ok(n - w)
    }

    fn save_state(&self, w: &mut crate::persist::StateWriter<'_>) -> Result<()> {
        w.put_usize("dim", self.dim)?;
        w.put_f32s("xb", &self.data)
    }

    fn load_state(&mut self, r: &mut crate::persist::StateReader) -> Result<()> {
        let dim = r.get_usize("dim", usize::MAX)?;
        if dim != self.dim {
            return Err(r.error("dim", format!("{dim}, the index has {}", self.dim)));
        }
        let data = r.get_f32s("xb")?;
        let x = VectorsRef::new(&data, dim).map_err(|e| r.error("xb", e))?;
        x.check_finite().map_err(|e| r.error("xb", e))?;
        self.reset();
        self.add(x)
    }

    fn bytes_per_vector(&self) -> f64 {
        let norms = if self.metric == Metric::L2 { 4 } else { 0 };
        (4 * self.dim + norms) as f64
    }
}
