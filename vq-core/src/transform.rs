//! Vector transforms (Faiss's `VectorTransform`) and the `PreTransform` index.

use std::fmt::Debug;

use crate::distance::Kernels;
use crate::error::{Error, Result};
use crate::index::Index;
use crate::metric::Metric;
use crate::params::SearchParams;
use crate::results::{RangeSearchResults, SearchResults};
use crate::selector::IdFilter;
use crate::vectors::{Label, VectorsRef};

/// A map from `d_in`-dimensional to `d_out`-dimensional vectors, possibly trained (PCA,
/// OPQ, random rotations, normalisation) and possibly reversible.
///
/// ```
/// use vq_core::{L2Normalize, VectorTransform, VectorsRef};
/// let t = L2Normalize::new(2)?;
/// let y = t.apply(VectorsRef::new(&[3.0, 4.0], 2)?)?;
/// assert_eq!(y, vec![0.6, 0.8]);
/// # Ok::<(), vq_core::Error>(())
/// ```
pub trait VectorTransform: Send + Sync + Debug {
    /// Input dimension.
    fn d_in(&self) -> usize;

    /// Output dimension.
    fn d_out(&self) -> usize;

    /// A short description, e.g. `"L2Normalize(d=128)"`.
    fn describe(&self) -> String;

    /// `true` when the transform can be applied.
    fn is_trained(&self) -> bool {
        true
    }

    /// Learns the transform from representative vectors (default: nothing to learn).
    ///
    /// # Errors
    /// Dimension mismatch, non-finite values, too few vectors.
    fn train(&mut self, x: VectorsRef<'_>) -> Result<()> {
        x.check_dim(self.d_in())
    }

    /// Transforms `x` into `out` (`x.len() * d_out()` floats).
    ///
    /// # Errors
    /// Dimension mismatch, wrong output length, not trained.
    fn apply_into(&self, x: VectorsRef<'_>, out: &mut [f32]) -> Result<()>;

    /// Allocating form of [`VectorTransform::apply_into`].
    ///
    /// # Errors
    /// As [`VectorTransform::apply_into`].
    fn apply(&self, x: VectorsRef<'_>) -> Result<Vec<f32>> {
        let mut out = vec![0.0; x.len() * self.d_out()];
        self.apply_into(x, &mut out)?;
        Ok(out)
    }

    /// Writes the learned state (see [`crate::Index::save_state`]).
    ///
    /// # Errors
    /// [`Error::NotSupported`] by default; I/O errors.
    fn save_state(&self, w: &mut crate::persist::StateWriter<'_>) -> Result<()> {
        let _ = w;
        Err(Error::not_supported("save", self.describe()))
    }

    /// Restores what `save_state` wrote into a value of the same shape.
    ///
    /// # Errors
    /// [`Error::NotSupported`] by default; [`Error::Format`] for bad sections.
    fn load_state(&mut self, r: &mut crate::persist::StateReader) -> Result<()> {
        let _ = r;
        Err(Error::not_supported("load", self.describe()))
    }

    /// Maps transformed vectors back (`y.len() * d_in()` floats), exactly or
    /// approximately.
    ///
    /// # Errors
    /// [`Error::NotSupported`] by default.
    fn reverse_into(&self, y: VectorsRef<'_>, out: &mut [f32]) -> Result<()> {
        let _ = (y, out);
        Err(Error::not_supported("reverse_transform", self.describe()))
    }
    /// Allocating form of [`VectorTransform::reverse_into`].
    ///
    /// # Errors
    /// As [`VectorTransform::reverse_into`].
    fn reverse(&self, y: VectorsRef<'_>) -> Result<Vec<f32>> {
        let mut out = vec![0.0; y.len() * self.d_in()];
        self.reverse_into(y, &mut out)?;
        Ok(out)
    }
}

/// Scales every vector to unit L2 norm (Faiss's `NormalizationTransform`, factory token
/// `L2norm`); zero vectors stay zero. With inner product this gives cosine similarity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct L2Normalize {
    dim: usize,
}

impl L2Normalize {
    /// A normaliser for dimension `dim`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `dim == 0`.
    pub fn new(dim: usize) -> Result<L2Normalize> {
        if dim == 0 {
            return Err(Error::invalid_param(
                "dim",
                "the dimension must be at least 1",
            ));
        }
        Ok(L2Normalize { dim })
    }

    /// Normalises rows of `x` in place (`x.len()` a multiple of `dim`).
    pub fn normalize_in_place(x: &mut [f32], dim: usize) {
        let k = Kernels::get();
        for row in x.chunks_exact_mut(dim.max(1)) {
            let n = k.norm_sqr(row).sqrt();
            if n > 0.0 {
                let inv = 1.0 / n;
                row.iter_mut().for_each(|v| *v *= inv);
            }
        }
    }
}

impl VectorTransform for L2Normalize {
    fn save_state(&self, w: &mut crate::persist::StateWriter<'_>) -> Result<()> {
        w.put_usize("dim", self.dim)
    }

    fn load_state(&mut self, r: &mut crate::persist::StateReader) -> Result<()> {
        let dim = r.get_usize("dim", usize::MAX)?;
        if dim != self.dim {
            return Err(r.error("dim", format!("{dim}, the transform has {}", self.dim)));
        }
        Ok(())
    }

    fn d_in(&self) -> usize {
        self.dim
    }
    fn d_out(&self) -> usize {
        self.dim
    }
    fn describe(&self) -> String {
        format!("L2Normalize(d={})", self.dim)
    }
    fn apply_into(&self, x: VectorsRef<'_>, out: &mut [f32]) -> Result<()> {
        x.check_dim(self.dim)?;
        if out.len() != x.as_slice().len() {
            return Err(Error::LengthMismatch {
                what: "transform output",
                expected: x.as_slice().len(),
                got: out.len(),
            });
        }
        out.copy_from_slice(x.as_slice());
        Self::normalize_in_place(out, self.dim);
        Ok(())
    }

    /// The normalised vectors themselves (the lengths are gone), as Faiss's
    /// `NormalizationTransform::reverse_transform`: reconstructing through `L2norm`
    /// gives the stored unit vectors.
    fn reverse_into(&self, y: VectorsRef<'_>, out: &mut [f32]) -> Result<()> {
        y.check_dim(self.dim)?;
        if out.len() != y.as_slice().len() {
            return Err(Error::LengthMismatch {
                what: "reverse transform output",
                expected: y.as_slice().len(),
                got: out.len(),
            });
        }
        out.copy_from_slice(y.as_slice());
        Ok(())
    }
}

/// An index that runs a chain of transforms on every vector before an inner index
/// (Faiss's `IndexPreTransform`): `"PCA64,IVF1024,Flat"` is a `PreTransform` whose chain
/// holds the PCA. Itself an [`Index`].
///
/// ```
/// use vq_core::{Index, IndexFlat, L2Normalize, Metric, PreTransform, SearchParams, VectorsRef};
/// let mut cosine = PreTransform::new(
///     vec![Box::new(L2Normalize::new(2)?)],
///     Box::new(IndexFlat::new(2, Metric::InnerProduct)?),
/// )?;
/// cosine.add(VectorsRef::new(&[10.0, 0.0, 1.0, 1.0], 2)?)?;
/// let res = cosine.search(VectorsRef::new(&[1.0, 0.9], 2)?, 1, &SearchParams::default())?;
/// assert_eq!(res.row(0).1, &[1]);
/// # Ok::<(), vq_core::Error>(())
/// ```
#[derive(Debug)]
pub struct PreTransform {
    chain: Vec<Box<dyn VectorTransform>>,
    index: Box<dyn Index>,
}

impl PreTransform {
    /// Chains `chain` (applied first to last) in front of `index`.
    ///
    /// # Errors
    /// [`Error::DimensionMismatch`] when consecutive dimensions do not agree.
    pub fn new(chain: Vec<Box<dyn VectorTransform>>, index: Box<dyn Index>) -> Result<Self> {
        for w in chain.windows(2) {
            if w[0].d_out() != w[1].d_in() {
                return Err(Error::DimensionMismatch {
                    expected: w[0].d_out(),
                    got: w[1].d_in(),
                });
            }
        }
        if let Some(last) = chain.last()
            && last.d_out() != index.dim()
        {
            return Err(Error::DimensionMismatch {
                expected: last.d_out(),
                got: index.dim(),
            });
        }
        Ok(PreTransform { chain, index })
    }

    /// The transforms.
    pub fn chain(&self) -> &[Box<dyn VectorTransform>] {
        &self.chain
    }

    /// The inner index.
    pub fn index(&self) -> &dyn Index {
        &*self.index
    }

    /// Applies the whole chain to `x` (after checking dimension and finiteness).
    ///
    /// # Errors
    /// Dimension mismatch, non-finite values, a transform not trained.
    pub fn apply_chain(&self, x: VectorsRef<'_>) -> Result<Vec<f32>> {
        x.check_dim(self.dim())?;
        x.check_finite()?;
        let mut cur = x.as_slice().to_vec();
        for t in &self.chain {
            let v = VectorsRef::new(&cur, t.d_in())?;
            cur = t.apply(v)?;
        }
        Ok(cur)
    }
}

impl Index for PreTransform {
    fn dim(&self) -> usize {
        self.chain.first().map_or(self.index.dim(), |t| t.d_in())
    }

    fn metric(&self) -> Metric {
        self.index.metric()
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    fn describe(&self) -> String {
        let mut parts: Vec<String> = self.chain.iter().map(|t| t.describe()).collect();
        parts.push(self.index.describe());
        format!("PreTransform({})", parts.join(" -> "))
    }

    fn is_trained(&self) -> bool {
        self.chain.iter().all(|t| t.is_trained()) && self.index.is_trained()
    }

    fn train(&mut self, x: VectorsRef<'_>) -> Result<()> {
        x.check_dim(self.dim())?;
        x.check_finite()?;
        let mut cur = x.as_slice().to_vec();
        for t in &mut self.chain {
            let v = VectorsRef::new(&cur, t.d_in())?;
            if !t.is_trained() {
                t.train(v)?;
            }
            cur = t.apply(v)?;
        }
        self.index.train(VectorsRef::new(&cur, self.index.dim())?)
    }

    fn add(&mut self, x: VectorsRef<'_>) -> Result<()> {
        let y = self.apply_chain(x)?;
        self.index.add(VectorsRef::new(&y, self.index.dim())?)
    }

    fn add_with_ids(&mut self, x: VectorsRef<'_>, ids: &[Label]) -> Result<()> {
        let y = self.apply_chain(x)?;
        self.index
            .add_with_ids(VectorsRef::new(&y, self.index.dim())?, ids)
    }

    fn search_into(
        &self,
        queries: VectorsRef<'_>,
        k: usize,
        params: &SearchParams<'_>,
        out: &mut SearchResults,
    ) -> Result<()> {
        let y = self.apply_chain(queries)?;
        self.index
            .search_into(VectorsRef::new(&y, self.index.dim())?, k, params, out)
    }

    fn range_search(
        &self,
        queries: VectorsRef<'_>,
        radius: f32,
        params: &SearchParams<'_>,
    ) -> Result<RangeSearchResults> {
        let y = self.apply_chain(queries)?;
        self.index
            .range_search(VectorsRef::new(&y, self.index.dim())?, radius, params)
    }

    fn prefetch(&self, ids: &[Label]) {
        self.index.prefetch(ids);
    }

    /// Distances in the transformed space, where the inner index stores the vectors:
    /// the query goes through the chain (as Faiss's `IndexPreTransform` distance
    /// computer), so a refinement by a `PreTransform` ranks as its own search does.
    fn distances_to(&self, query: &[f32], ids: &[Label], out: &mut [f32]) -> Result<()> {
        crate::index::check_distances_to(self.dim(), query, ids, out)?;
        let y = self.apply_chain(VectorsRef::new(query, self.dim())?)?;
        self.index.distances_to(&y, ids, out)
    }

    fn reconstruct_into(&self, id: Label, out: &mut [f32]) -> Result<()> {
        if out.len() != self.dim() {
            return Err(Error::DimensionMismatch {
                expected: self.dim(),
                got: out.len(),
            });
        }
        let mut cur = self.index.reconstruct(id)?;
        for t in self.chain.iter().rev() {
            let mut prev = vec![0.0; t.d_in()];
            t.reverse_into(VectorsRef::new(&cur, t.d_out())?, &mut prev)?;
            cur = prev;
        }
        out.copy_from_slice(&cur);
        Ok(())
    }

    fn remove_ids(&mut self, selector: &dyn IdFilter) -> Result<usize> {
        self.index.remove_ids(selector)
    }

    fn removal_keeps_ids(&self) -> bool {
        self.index.removal_keeps_ids()
    }

    fn reset(&mut self) {
        self.index.reset();
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
        w.put_usize("chain_len", self.chain.len())?;
        for (i, t) in self.chain.iter().enumerate() {
            w.scope(&format!("chain{i}"), |w| t.save_state(w))?;
        }
        w.scope("index", |w| self.index.save_state(w))
    }

    fn load_state(&mut self, r: &mut crate::persist::StateReader) -> Result<()> {
        let n = r.get_usize("chain_len", usize::MAX)?;
        if n != self.chain.len() {
            return Err(r.error(
                "chain_len",
                format!("{n} transforms, the pipeline has {}", self.chain.len()),
            ));
        }
        // A failure part-way leaves some transforms loaded: the index is emptied, so
        // nothing stored went through another chain than later adds and searches use.
        let mut loaded = Ok(());
        for (i, t) in self.chain.iter_mut().enumerate() {
            loaded = r.scope(&format!("chain{i}"), |r| t.load_state(r));
            if loaded.is_err() {
                break;
            }
        }
        let loaded = loaded.and_then(|()| r.scope("index", |r| self.index.load_state(r)));
        if loaded.is_err() {
            self.index.reset();
        }
        loaded
    }

    fn bytes_per_vector(&self) -> f64 {
        self.index.bytes_per_vector()
    }
}
