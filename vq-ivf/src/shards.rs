//! Several indexes searched as one (Faiss's `IndexShards`, `IndexShardsIVF`).

use rayon::prelude::*;
use vq_core::persist::{StateReader, StateWriter};
use vq_core::topk::merge_results;
use vq_core::{
    Error, IdFilter, Index, Label, Metric, NO_LABEL, RangeSearchResults, Result, SearchParams,
    SearchResults, VectorsRef, check_range_search, check_search,
};

use crate::encoding::IvfEncoding;
use crate::ivf::IndexIvf;
use crate::quantizer::CoarseQuantizer;

/// Shards: the data is split over several indexes of the same dimension and metric;
/// a search runs on every shard in parallel and merges the top `k`.
///
/// With `successive_ids` (Faiss's default), `add` splits a batch into contiguous
/// blocks, one per shard, and results carry global ids: shard `i`'s local id plus the
/// number of vectors in the shards before it; so, as in Faiss, the vectors go in one
/// `add` (a second add to two or more shards is refused: it would renumber the vectors
/// already stored). Without it, ids are kept as the shards report them (use
/// `add_with_ids`).
///
/// ```
/// use vq_core::{Index, IndexFlat, Metric, SearchParams, synthetic::SyntheticSpec};
/// use vq_ivf::IndexShards;
/// let data = SyntheticSpec::new(1_000, 8, 5).generate()?;
/// let shards = vec![IndexFlat::new(8, Metric::L2)?, IndexFlat::new(8, Metric::L2)?];
/// let mut index = IndexShards::new(shards, true)?;
/// index.add(data.base.as_ref())?;
/// let mut flat = IndexFlat::new(8, Metric::L2)?;
/// flat.add(data.base.as_ref())?;
/// let p = SearchParams::default();
/// let a = index.search(data.queries.as_ref(), 3, &p)?;
/// let b = flat.search(data.queries.as_ref(), 3, &p)?;
/// assert_eq!(a.labels(), b.labels());
/// # Ok::<(), vq_core::Error>(())
/// ```
#[derive(Debug)]
pub struct IndexShards<I> {
    shards: Vec<I>,
    successive_ids: bool,
}

impl<I: Index> IndexShards<I> {
    /// Shards over `shards` (at least one, same dimension and metric).
    ///
    /// # Errors
    /// No shard, or shards that disagree on dimension or metric.
    pub fn new(shards: Vec<I>, successive_ids: bool) -> Result<IndexShards<I>> {
        let Some(first) = shards.first() else {
            return Err(Error::invalid_param(
                "shards",
                "at least one shard is needed",
            ));
        };
        let (d, m) = (first.dim(), first.metric());
        if let Some(bad) = shards.iter().find(|s| s.dim() != d || s.metric() != m) {
            return Err(Error::invalid_param(
                "shards",
                format!("{} does not match d={d}, {m}", bad.describe()),
            ));
        }
        Ok(IndexShards {
            shards,
            successive_ids,
        })
    }

    /// The shards.
    pub fn shards(&self) -> &[I] {
        &self.shards
    }

    /// Mutable shards.
    pub fn shards_mut(&mut self) -> &mut [I] {
        &mut self.shards
    }

    /// Id offset of each shard (zeros without `successive_ids`).
    fn offsets(&self) -> Vec<Label> {
        let mut acc = 0;
        self.shards
            .iter()
            .map(|s| {
                let o = acc;
                acc += s.len() as Label;
                if self.successive_ids { o } else { 0 }
            })
            .collect()
    }

    /// Merges per-shard results, translating ids by the shard offsets.
    fn merge(&self, mut parts: Vec<SearchResults>, k: usize) -> Result<SearchResults> {
        for (p, off) in parts.iter_mut().zip(self.offsets()) {
            if off != 0 {
                let (_, labels) = p.parts_mut();
                labels
                    .iter_mut()
                    .filter(|l| **l != NO_LABEL)
                    .for_each(|l| *l += off);
            }
        }
        let refs: Vec<&SearchResults> = parts.iter().collect();
        merge_results(&refs, k, self.metric())
    }

    /// The caller's selector seen from each shard (global ids = local + offset).
    fn shard_filters<'a>(&self, sel: Option<&'a dyn IdFilter>) -> Vec<Option<ShiftedFilter<'a>>> {
        self.offsets()
            .into_iter()
            .map(|offset| sel.map(|inner| ShiftedFilter { inner, offset }))
            .collect()
    }

    /// Parameters for one shard, with its translated selector.
    fn shard_params<'a>(
        params: &SearchParams<'a>,
        filter: Option<&'a ShiftedFilter<'a>>,
    ) -> SearchParams<'a> {
        let mut p = params.clone();
        if let Some(f) = filter {
            p.selector = Some(f);
        }
        p
    }
}

/// A selector seen through a shard's id offset.
struct ShiftedFilter<'a> {
    inner: &'a dyn IdFilter,
    offset: Label,
}

impl IdFilter for ShiftedFilter<'_> {
    fn is_member(&self, id: Label) -> bool {
        self.inner.is_member(id + self.offset)
    }
}

impl<I: Index> Index for IndexShards<I> {
    fn dim(&self) -> usize {
        self.shards[0].dim()
    }

    fn metric(&self) -> Metric {
        self.shards[0].metric()
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.len()).sum()
    }

    fn describe(&self) -> String {
        format!(
            "IndexShards({} × {})",
            self.shards.len(),
            self.shards[0].describe()
        )
    }

    fn is_trained(&self) -> bool {
        self.shards.iter().all(|s| s.is_trained())
    }

    fn train(&mut self, x: VectorsRef<'_>) -> Result<()> {
        self.shards.par_iter_mut().try_for_each(|s| s.train(x))
    }

    fn add(&mut self, x: VectorsRef<'_>) -> Result<()> {
        if !self.successive_ids {
            return Err(Error::not_supported(
                "add without ids on shards that keep their ids (use add_with_ids)",
                self.describe(),
            ));
        }
        x.check_dim(self.dim())?;
        x.check_finite()?;
        // Contiguous blocks, so global ids stay consecutive per shard; all shards
        // must be empty for the ids to line up (a shard's ids start after the vectors of
        // the shards before it, so a second add would renumber what the first stored),
        // as Faiss requires. A single shard can take any number of adds.
        if self.shards.len() > 1 && self.shards.iter().any(|s| !s.is_empty()) {
            return Err(Error::not_supported(
                "a second add to a sharded index with successive ids (it would renumber the vectors already stored; add all vectors in one call)",
                self.describe(),
            ));
        }
        if let Some(s) = self.shards.iter().find(|s| !s.is_trained()) {
            return Err(Error::NotTrained { what: s.describe() });
        }
        let ns = self.shards.len();
        let n = x.len();
        for (i, s) in self.shards.iter_mut().enumerate() {
            let r = i * n / ns..(i + 1) * n / ns;
            if !r.is_empty() {
                s.add(x.slice(r))?;
            }
        }
        Ok(())
    }

    fn add_with_ids(&mut self, x: VectorsRef<'_>, ids: &[Label]) -> Result<()> {
        if self.successive_ids {
            return Err(Error::not_supported(
                "add_with_ids on shards with successive ids (ids are derived)",
                self.describe(),
            ));
        }
        if ids.len() != x.len() {
            return Err(Error::LengthMismatch {
                what: "ids",
                expected: x.len(),
                got: ids.len(),
            });
        }
        let ns = self.shards.len();
        let n = x.len();
        for (i, s) in self.shards.iter_mut().enumerate() {
            let r = i * n / ns..(i + 1) * n / ns;
            if !r.is_empty() {
                s.add_with_ids(x.slice(r.clone()), &ids[r])?;
            }
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
        let filters = self.shard_filters(params.selector);
        let parts = self
            .shards
            .par_iter()
            .zip(filters.par_iter())
            .map(|(s, f)| -> Result<SearchResults> {
                let n = s.len();
                if n == 0 {
                    return Ok(SearchResults::new(queries.len(), 1, self.metric()));
                }
                let p = Self::shard_params(params, f.as_ref());
                s.search(queries, k.min(n), &p)
            })
            .collect::<Result<Vec<_>>>()?;
        *out = self.merge(parts, k)?;
        Ok(())
    }

    /// Every shard's range search (in parallel), ids translated as for `search`, each
    /// query's hits merged best first.
    fn range_search(
        &self,
        queries: VectorsRef<'_>,
        radius: f32,
        params: &SearchParams<'_>,
    ) -> Result<RangeSearchResults> {
        check_range_search(self, queries, radius)?;
        let filters = self.shard_filters(params.selector);
        let parts = self
            .shards
            .par_iter()
            .zip(filters.par_iter())
            .map(|(s, f)| -> Result<Option<RangeSearchResults>> {
                if s.is_empty() {
                    return Ok(None);
                }
                let p = Self::shard_params(params, f.as_ref());
                s.range_search(queries, radius, &p).map(Some)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut lists = vec![Vec::new(); queries.len()];
        for (part, off) in parts.iter().zip(self.offsets()) {
            let Some(part) = part else { continue };
            for (qi, list) in lists.iter_mut().enumerate() {
                let (d, l) = part.row(qi);
                list.extend(d.iter().zip(l).map(|(&d, &l)| (d, l + off)));
            }
        }
        Ok(RangeSearchResults::from_lists(lists, self.metric()))
    }

    /// With successive ids, the shard that holds global id `id`; otherwise the first
    /// shard that knows `id`.
    fn reconstruct_into(&self, id: Label, out: &mut [f32]) -> Result<()> {
        if self.successive_ids {
            for (s, off) in self.shards.iter().zip(self.offsets()) {
                if id >= off && id - off < s.len() as Label {
                    return s.reconstruct_into(id - off, out);
                }
            }
            return Err(Error::IdNotFound { id });
        }
        for s in &self.shards {
            match s.reconstruct_into(id, out) {
                Err(Error::IdNotFound { .. }) => continue,
                r => return r,
            }
        }
        Err(Error::IdNotFound { id })
    }

    fn reset(&mut self) {
        self.shards.iter_mut().for_each(|s| s.reset());
    }

    fn search_param_names(&self) -> Vec<String> {
        self.shards[0].search_param_names()
    }

    /// Sets the parameter on every shard (stops at the first shard that refuses it).
    fn set_search_param(&mut self, name: &str, value: &str) -> Result<()> {
        self.shards
            .iter_mut()
            .try_for_each(|s| s.set_search_param(name, value))
    }

    /// Sections: `shards` (the count), `successive_ids` (0/1), and each shard under
    /// `shard<i>/`.
    fn save_state(&self, w: &mut StateWriter<'_>) -> Result<()> {
        w.put_usize("shards", self.shards.len())?;
        w.put_bool("successive_ids", self.successive_ids)?;
        for (i, s) in self.shards.iter().enumerate() {
            w.scope(&format!("shard{i}"), |w| s.save_state(w))?;
        }
        Ok(())
    }

    /// Loads every shard (the count must match this index's); on error the index is
    /// unchanged when the shard count or id mode does not fit, else every shard is
    /// emptied.
    fn load_state(&mut self, r: &mut StateReader) -> Result<()> {
        let n = r.get_usize("shards", usize::MAX)?;
        if n != self.shards.len() {
            return Err(r.error(
                "shards",
                format!("{n} shards, the index has {}", self.shards.len()),
            ));
        }
        let successive = r.get_bool("successive_ids")?;
        let loaded = self
            .shards
            .iter_mut()
            .enumerate()
            .try_for_each(|(i, s)| r.scope(&format!("shard{i}"), |r| s.load_state(r)));
        if let Err(e) = loaded {
            self.reset();
            return Err(e);
        }
        self.successive_ids = successive;
        Ok(())
    }

    fn bytes_per_vector(&self) -> f64 {
        self.shards[0].bytes_per_vector()
    }
}

impl<Q: CoarseQuantizer, E: IvfEncoding> IndexShards<IndexIvf<Q, E>> {
    /// Searches IVF shards that share one coarse quantizer (Faiss's
    /// `IndexShardsIVF`): the queries are quantized once, by the first shard, and each
    /// shard scans the same probes through [`IndexIvf::search_preassigned`].
    ///
    /// # Errors
    /// As [`Index::search`]; shards whose quantizers differ give wrong results, which
    /// is why this is a separate call (check with [`IndexIvf::merge_from`]'s rules).
    pub fn search_shared_quantizer(
        &self,
        queries: VectorsRef<'_>,
        k: usize,
        params: &SearchParams<'_>,
    ) -> Result<SearchResults> {
        check_search(self, queries, k)?;
        let first = &self.shards[0];
        let nprobe = params.nprobe.unwrap_or(first.nprobe()).min(first.nlist());
        if nprobe == 0 {
            return Err(Error::invalid_param("nprobe", "must be at least 1"));
        }
        let qp = params.quantizer.as_deref().cloned().unwrap_or_default();
        let (dis, lists) = first.quantizer().search(queries, nprobe, &qp)?.into_parts();
        let filters = self.shard_filters(params.selector);
        let parts = self
            .shards
            .par_iter()
            .zip(filters.par_iter())
            .map(|(s, f)| -> Result<SearchResults> {
                let mut out = SearchResults::new(0, 0, self.metric());
                if s.is_empty() {
                    return Ok(SearchResults::new(queries.len(), 1, self.metric()));
                }
                let p = Self::shard_params(params, f.as_ref());
                s.search_preassigned(queries, k.min(s.len()), &lists, &dis, &p, &mut out)?;
                Ok(out)
            })
            .collect::<Result<Vec<_>>>()?;
        self.merge(parts, k)
    }
}
