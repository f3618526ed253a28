//! The inverted-file index over any coarse quantizer and any encoding.

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;
use vq_core::persist::{DType, StateReader, StateWriter};
use vq_core::topk::TopK;
use vq_core::{
    Error, IdFilter, Index, IndexFlat, Label, Metric, RangeSearchResults, Result, SearchParams,
    SearchResults, Vectors, VectorsRef, check_range_search, check_search,
};
use vq_kmeans::{KMeans, KMeansParams};
use vq_pq::{ProductQuantizer, ScalarQuantizer, SqType};

use crate::encoding::{IvfCodec, IvfEncoding, IvfFlat, IvfPq, ListScanner};
use crate::invlists::{ArrayInvertedLists, InvertedLists, SharedInvertedLists};
use crate::quantizer::{CoarseQuantizer, MultiIndexQuantizer};

/// Distances computed per block while scanning a list.
const SCAN_BLOCK: usize = 256;

/// An inverted-file index: a coarse quantizer assigns each vector to one of `nlist`
/// lists, and each list stores the vectors' codes and ids (Faiss's `IndexIVF`).
/// A search visits the `nprobe` lists nearest to the query.
///
/// Generic over the quantizer `Q` (an [`IndexFlat`] of k-means centroids by default, a
/// [`MultiIndexQuantizer`], or any index through [`crate::AnyQuantizer`]) and the
/// encoding `E` ([`IvfFlat`], [`IvfCodec`] for scalar quantizers, [`IvfPq`]).
///
/// Semantics follow Faiss:
/// - `add` gives ids `len()..len() + n`; `add_with_ids` stores the caller's ids, which
///   need not be unique (duplicates are all stored and can all be returned;
///   `remove_ids` removes every copy). With a direct map enabled, ids must be unique:
///   an id already present is an [`Error::DuplicateId`] and nothing is added.
/// - `nprobe` (per call through [`SearchParams`], or the index default 1) is clamped to
///   `nlist`; `nprobe = 0` is an error. `max_codes` (0 = no limit) stops a query's scan
///   once that many codes were visited (whole lists).
/// - `remove_ids` keeps ids of the remaining vectors unchanged.
/// - `reconstruct` needs a direct map ([`IndexIvf::make_direct_map`]).
/// - Results are padded with `-1` when the probed lists hold fewer than `k` vectors.
/// - Saved and loaded through [`Index::save_state`] / [`Index::load_state`]; loaded from
///   a memory-mapped container the lists stay in the file ([`crate::SharedInvertedLists`])
///   and the index is read-only (`add`, `remove_ids` are errors; `reset` and
///   `merge_from` as the source drop the mapping).
///
/// ```
/// use vq_core::{Index, SearchParams, synthetic::SyntheticSpec};
/// use vq_ivf::IndexIvf;
/// let data = SyntheticSpec::new(5_000, 32, 10).generate()?;
/// let mut index = IndexIvf::new_flat(32, 64, vq_core::Metric::L2)?;
/// index.train(data.base.as_ref())?;
/// index.add(data.base.as_ref())?;
/// let params = SearchParams::new().with_nprobe(8);
/// let res = index.search(data.queries.as_ref(), 5, &params)?;
/// assert_eq!(res.row(0).1.len(), 5);
/// # Ok::<(), vq_core::Error>(())
/// ```
#[derive(Debug)]
pub struct IndexIvf<Q, E> {
    quantizer: Q,
    encoding: E,
    lists: Box<dyn InvertedLists>,
    nlist: usize,
    metric: Metric,
    nprobe: usize,
    pub(crate) max_codes: usize,
    kmeans: KMeansParams,
    direct_map: Option<HashMap<Label, (u32, u32)>>,
    prepared: bool,
}

/// IVF with raw vectors in the lists (`IVF<n>,Flat`).
pub type IndexIvfFlat = IndexIvf<IndexFlat, IvfFlat>;
/// IVF with scalar-quantized residuals (`IVF<n>,SQ8`).
pub type IndexIvfSq = IndexIvf<IndexFlat, IvfCodec<ScalarQuantizer>>;
/// IVF with product-quantized residuals (`IVF<n>,PQ<M>`).
pub type IndexIvfPq = IndexIvf<IndexFlat, IvfPq>;

impl IndexIvf<IndexFlat, IvfFlat> {
    /// `IVF<nlist>,Flat`.
    ///
    /// # Errors
    /// `d == 0` or `nlist == 0`.
    pub fn new_flat(d: usize, nlist: usize, metric: Metric) -> Result<Self> {
        IndexIvf::new(IndexFlat::new(d, metric)?, nlist, IvfFlat::new(d)?, metric)
    }
}

impl IndexIvf<IndexFlat, IvfCodec<ScalarQuantizer>> {
    /// `IVF<nlist>,SQ…` (residual encoding, as Faiss).
    ///
    /// # Errors
    /// `d == 0` or `nlist == 0`.
    pub fn new_sq(d: usize, nlist: usize, qtype: SqType, metric: Metric) -> Result<Self> {
        let sq = ScalarQuantizer::new(d, qtype)?;
        IndexIvf::new(
            IndexFlat::new(d, metric)?,
            nlist,
            IvfCodec::new(sq, true),
            metric,
        )
    }
}

impl IndexIvf<IndexFlat, IvfPq> {
    /// `IVF<nlist>,PQ<m>x<nbits>` (residual encoding, precomputed tables).
    ///
    /// # Errors
    /// Invalid PQ shape, `nlist == 0`.
    pub fn new_pq(d: usize, nlist: usize, m: usize, nbits: usize, metric: Metric) -> Result<Self> {
        let pq = ProductQuantizer::new(d, m, nbits)?;
        IndexIvf::new(
            IndexFlat::new(d, metric)?,
            nlist,
            IvfPq::new(pq, true),
            metric,
        )
    }
}

impl<Q: CoarseQuantizer> IndexIvf<Q, IvfPq> {
    /// Turns IVF-PQ's precomputed tables on (the default) or off and prepares them
    /// again (Faiss's `use_precomputed_table`).
    ///
    /// # Errors
    /// Centroids the quantizer cannot provide.
    pub fn set_use_precomputed_table(&mut self, on: bool) -> Result<()> {
        self.encoding.set_use_precomputed(on);
        self.prepared = false;
        self.ensure_prepared()
    }
}

impl<E: IvfEncoding> IndexIvf<MultiIndexQuantizer, E> {
    /// An inverted multi-index `IMI2x<bits>` over `encoding` (L2 only).
    ///
    /// # Errors
    /// Odd dimension, bits out of range, an encoding of another dimension.
    pub fn new_imi(d: usize, bits: usize, encoding: E) -> Result<Self> {
        let q = MultiIndexQuantizer::new(d, bits)?;
        let nlist = q.nlist();
        IndexIvf::new(q, nlist, encoding, Metric::L2)
    }
}

impl<Q: CoarseQuantizer, E: IvfEncoding> IndexIvf<Q, E> {
    /// An empty index over `quantizer` (trained or not) with `nlist` lists.
    ///
    /// # Errors
    /// `nlist == 0`, dimensions of quantizer and encoding differ, a quantizer of
    /// another metric, or a trained quantizer that does not hold `nlist` centroids.
    pub fn new(quantizer: Q, nlist: usize, encoding: E, metric: Metric) -> Result<Self> {
        if nlist == 0 {
            return Err(Error::invalid_param("nlist", "must be at least 1"));
        }
        if quantizer.dim() != encoding.dim() {
            return Err(Error::DimensionMismatch {
                expected: quantizer.dim(),
                got: encoding.dim(),
            });
        }
        if quantizer.metric() != metric {
            return Err(Error::invalid_param(
                "metric",
                format!(
                    "the coarse quantizer {} uses {}, the index {metric}",
                    quantizer.describe(),
                    quantizer.metric()
                ),
            ));
        }
        if quantizer.trains_alone() && quantizer.nlist() != nlist {
            return Err(Error::invalid_param(
                "nlist",
                format!(
                    "{} has {} cells, not {nlist}",
                    quantizer.describe(),
                    quantizer.nlist()
                ),
            ));
        }
        // One record per list (a pointer): refuse a count that cannot be allocated
        // rather than abort the process.
        vq_core::mem::check_alloc::<usize>(nlist, "nlist")?;
        // Faiss's `Level1Quantizer`: 10 iterations, spherical for inner product.
        let kmeans = KMeansParams::new(nlist)
            .with_niter(10)
            .with_spherical(metric == Metric::InnerProduct);
        let cs = encoding.code_size();
        let mut ivf = IndexIvf {
            quantizer,
            encoding,
            lists: Box::new(ArrayInvertedLists::new(nlist, cs)),
            nlist,
            metric,
            nprobe: 1,
            max_codes: 0,
            kmeans,
            direct_map: None,
            prepared: false,
        };
        // Over a trained quantizer and encoding the index can take lists (merge_from,
        // replace_invlists) and search without an add.
        ivf.ensure_prepared()?;
        Ok(ivf)
    }

    /// Number of lists.
    pub fn nlist(&self) -> usize {
        self.nlist
    }

    /// Default `nprobe` (1, as Faiss) used when a search does not set one.
    pub fn nprobe(&self) -> usize {
        self.nprobe
    }

    /// Sets the default `nprobe`.
    ///
    /// # Errors
    /// `nprobe == 0`.
    pub fn set_nprobe(&mut self, nprobe: usize) -> Result<()> {
        if nprobe == 0 {
            return Err(Error::invalid_param("nprobe", "must be at least 1"));
        }
        self.nprobe = nprobe;
        Ok(())
    }

    /// Sets the default `max_codes` (0 = no limit).
    pub fn set_max_codes(&mut self, max_codes: usize) {
        self.max_codes = max_codes;
    }

    /// The k-means parameters of coarse training (Faiss's: 10 iterations, at most 256
    /// points per centroid, seed 1234).
    pub fn kmeans_params_mut(&mut self) -> &mut KMeansParams {
        &mut self.kmeans
    }

    /// The coarse quantizer.
    pub fn quantizer(&self) -> &Q {
        &self.quantizer
    }

    /// The encoding.
    pub fn encoding(&self) -> &E {
        &self.encoding
    }

    /// The inverted lists.
    pub fn lists(&self) -> &dyn InvertedLists {
        &*self.lists
    }

    /// Replaces the inverted lists (e.g. by merged on-disk lists) and returns the old
    /// ones. A direct map, if enabled, is rebuilt.
    ///
    /// # Errors
    /// Lists of another `nlist` or code size.
    pub fn replace_invlists(
        &mut self,
        lists: Box<dyn InvertedLists>,
    ) -> Result<Box<dyn InvertedLists>> {
        if lists.nlist() != self.nlist || lists.code_size() != self.encoding.code_size() {
            return Err(Error::invalid_param(
                "lists",
                format!(
                    "{} does not fit {} lists of {} bytes",
                    lists.describe(),
                    self.nlist,
                    self.encoding.code_size()
                ),
            ));
        }
        lists.check()?;
        self.ensure_prepared()?;
        let old = std::mem::replace(&mut self.lists, lists);
        if self.direct_map.is_some()
            && let Err(e) = self.make_direct_map(true)
        {
            self.lists = old;
            self.direct_map = None;
            self.make_direct_map(true).ok();
            return Err(e);
        }
        Ok(old)
    }

    /// Enables (building it from the lists) or drops the id → entry map that
    /// `reconstruct` needs (Faiss's hashtable `DirectMap`).
    ///
    /// # Errors
    /// [`Error::DuplicateId`] when the stored ids are not unique (the map stays off).
    pub fn make_direct_map(&mut self, enable: bool) -> Result<()> {
        if !enable {
            self.direct_map = None;
            return Ok(());
        }
        let mut map = HashMap::with_capacity(self.lists.total());
        for l in 0..self.nlist {
            for (o, &id) in self.lists.ids(l).iter().enumerate() {
                if map.insert(id, (l as u32, o as u32)).is_some() {
                    return Err(Error::DuplicateId { id });
                }
            }
        }
        self.direct_map = Some(map);
        Ok(())
    }

    /// `true` when a direct map is maintained.
    pub fn has_direct_map(&self) -> bool {
        self.direct_map.is_some()
    }

    pub(crate) fn check_trained(&self) -> Result<()> {
        if self.is_trained() {
            Ok(())
        } else {
            Err(Error::NotTrained {
                what: self.describe(),
            })
        }
    }

    pub(crate) fn ensure_prepared(&mut self) -> Result<()> {
        if !self.prepared && self.is_trained() {
            self.encoding.prepare(&self.quantizer, self.metric)?;
            self.prepared = true;
        }
        Ok(())
    }

    /// Residuals `x − centroid(list)` for each row and its list.
    fn residuals(&self, x: VectorsRef<'_>, lists: &[Label]) -> Result<Vectors> {
        let d = x.dim();
        let mut out = x.as_slice().to_vec();
        out.par_chunks_mut(d)
            .zip(lists.par_iter())
            .try_for_each_init(
                || vec![0f32; d],
                |c, (r, &l)| -> Result<()> {
                    self.quantizer.centroid_into(l as usize, c)?;
                    r.iter_mut().zip(c.iter()).for_each(|(r, c)| *r -= c);
                    Ok(())
                },
            )?;
        Vectors::new(out, d)
    }

    /// The nearest list of each vector.
    pub(crate) fn assign_lists(&self, x: VectorsRef<'_>) -> Result<Vec<Label>> {
        let res = self.quantizer.search(x, 1, &SearchParams::default())?;
        let labels = res.labels().to_vec();
        if let Some(&bad) = labels.iter().find(|&&l| l < 0 || l as usize >= self.nlist) {
            return Err(Error::invalid_param(
                "quantizer",
                format!(
                    "{} returned list {bad} (nlist = {})",
                    self.quantizer.describe(),
                    self.nlist
                ),
            ));
        }
        Ok(labels)
    }

    /// Encodes `x` for the given lists: residuals when the encoding wants them.
    pub(crate) fn encode(&self, x: VectorsRef<'_>, lists: &[Label]) -> Result<Vec<u8>> {
        let mut codes = vec![0u8; x.len() * self.encoding.code_size()];
        if self.encoding.by_residual() {
            let r = self.residuals(x, lists)?;
            self.encoding.encode_into(r.as_ref(), &mut codes)?;
        } else {
            self.encoding.encode_into(x, &mut codes)?;
        }
        Ok(codes)
    }

    /// Adds pre-assigned vectors: `lists[i]` is the list of row `i`.
    fn add_assigned(&mut self, x: VectorsRef<'_>, ids: &[Label], lists: &[Label]) -> Result<()> {
        if let Some(map) = &self.direct_map {
            let mut seen = HashSet::with_capacity(ids.len());
            for &id in ids {
                if map.contains_key(&id) || !seen.insert(id) {
                    return Err(Error::DuplicateId { id });
                }
            }
        }
        let codes = self.encode(x, lists)?;
        let cs = self.encoding.code_size();
        // Group rows by list (stable), then append list by list.
        let mut order: Vec<u32> = (0..x.len() as u32).collect();
        order.sort_by_key(|&i| lists[i as usize]);
        let mut done: Vec<(usize, usize)> = Vec::new();
        let mut gids = Vec::new();
        let mut gcodes = Vec::new();
        let mut s = 0;
        let mut result = Ok(());
        while s < order.len() {
            let l = lists[order[s] as usize] as usize;
            let mut e = s;
            gids.clear();
            gcodes.clear();
            while e < order.len() && lists[order[e] as usize] as usize == l {
                let i = order[e] as usize;
                gids.push(ids[i]);
                gcodes.extend_from_slice(&codes[i * cs..(i + 1) * cs]);
                e += 1;
            }
            let before = self.lists.list_len(l);
            if let Err(err) = self.lists.append(l, &gids, &gcodes) {
                result = Err(err);
                break;
            }
            done.push((l, before));
            if let Some(map) = &mut self.direct_map {
                for (k, &id) in gids.iter().enumerate() {
                    map.insert(id, (l as u32, (before + k) as u32));
                }
            }
            s = e;
        }
        if let Err(e) = result {
            // Roll back the lists already appended to: nothing of this call stays.
            let new_ids: HashSet<Label> = ids.iter().copied().collect();
            for (l, before) in done {
                let mut pos = 0usize;
                let _ = self.lists.retain(l, &mut |id| {
                    pos += 1;
                    pos <= before || !new_ids.contains(&id)
                });
            }
            if self.direct_map.is_some() {
                self.make_direct_map(true).ok();
            }
            return Err(e);
        }
        Ok(())
    }

    /// Searches with a caller-supplied coarse assignment: `lists` and `coarse_dis` hold
    /// `nprobe` entries per query (list `-1` = skip), as from the quantizer's search.
    /// The hook sharded and GPU code use.
    ///
    /// # Errors
    /// Not trained, bad shapes, a list out of range, `k` out of range.
    pub fn search_preassigned(
        &self,
        queries: VectorsRef<'_>,
        k: usize,
        lists: &[Label],
        coarse_dis: &[f32],
        params: &SearchParams<'_>,
        out: &mut SearchResults,
    ) -> Result<()> {
        self.check_trained()?;
        check_search(self, queries, k)?;
        let nq = queries.len();
        if lists.len() != coarse_dis.len() || !lists.len().is_multiple_of(nq) {
            return Err(Error::LengthMismatch {
                what: "coarse assignment",
                expected: nq * (lists.len() / nq.max(1)),
                got: coarse_dis.len(),
            });
        }
        if nq == 0 {
            out.reset(0, k, self.metric);
            return Ok(());
        }
        let nprobe = lists.len() / nq;
        if let Some(&bad) = lists.iter().find(|&&l| l >= self.nlist as Label) {
            return Err(Error::invalid_param(
                "lists",
                format!("list {bad} out of range (nlist = {})", self.nlist),
            ));
        }
        self.lists.check()?;
        let max_codes = params.max_codes.unwrap_or(self.max_codes);
        let filter = params.selector;
        out.reset(nq, k, self.metric);
        let threads = rayon::current_num_threads().max(1);
        let (dist, labels) = out.parts_mut();
        // List-major blocks: each list probed by the block is read once for all its
        // queries. Only when a list is expected to serve two or more queries of a block.
        // At least four blocks per thread, so uneven blocks still balance.
        let block = self
            .encoding
            .list_major_block(self.metric)
            .min(nq.div_ceil(4 * threads));
        if max_codes == 0 && block > 0 && nq >= 2 * threads && block * nprobe >= 2 * self.nlist {
            dist.par_chunks_mut(block * k)
                .zip(labels.par_chunks_mut(block * k))
                .enumerate()
                .try_for_each(|(bi, (dc, lc))| {
                    let q0 = bi * block;
                    let nb = dc.len() / k;
                    self.scan_block_list_major(
                        queries.slice(q0..q0 + nb),
                        k,
                        &lists[q0 * nprobe..(q0 + nb) * nprobe],
                        &coarse_dis[q0 * nprobe..(q0 + nb) * nprobe],
                        filter,
                        dc,
                        lc,
                    )
                })?;
        } else if nq >= threads || nprobe == 1 {
            dist.par_chunks_mut(k)
                .zip(labels.par_chunks_mut(k))
                .enumerate()
                .try_for_each_init(
                    || (TopK::new(k), vec![0f32; SCAN_BLOCK]),
                    |(top, buf), (qi, (dc, lc))| -> Result<()> {
                        top.clear();
                        let probes = qi * nprobe..(qi + 1) * nprobe;
                        self.scan_probes(
                            queries.row(qi),
                            &lists[probes.clone()],
                            &coarse_dis[probes],
                            max_codes,
                            filter,
                            top,
                            buf,
                        )?;
                        top.write_sorted(self.metric, dc, lc);
                        Ok(())
                    },
                )?;
        } else {
            // Few queries: split each query's probes over the threads and merge.
            for qi in 0..nq {
                let pl = &lists[qi * nprobe..(qi + 1) * nprobe];
                let pd = &coarse_dis[qi * nprobe..(qi + 1) * nprobe];
                let q = queries.row(qi);
                let top = if max_codes > 0 {
                    // The code budget is sequential by nature.
                    let mut top = TopK::new(k);
                    let mut buf = vec![0f32; SCAN_BLOCK];
                    self.scan_probes(q, pl, pd, max_codes, filter, &mut top, &mut buf)?;
                    top
                } else {
                    let parts = (2 * threads).min(nprobe).max(1);
                    let per = nprobe.div_ceil(parts);
                    let tops = (0..parts)
                        .into_par_iter()
                        .map(|p| -> Result<TopK> {
                            let r = (p * per).min(nprobe)..((p + 1) * per).min(nprobe);
                            let mut top = TopK::new(k);
                            let mut buf = vec![0f32; SCAN_BLOCK];
                            self.scan_probes(
                                q,
                                &pl[r.clone()],
                                &pd[r],
                                0,
                                filter,
                                &mut top,
                                &mut buf,
                            )?;
                            Ok(top)
                        })
                        .collect::<Result<Vec<_>>>()?;
                    let mut top = TopK::new(k);
                    for t in &tops {
                        top.merge(t);
                    }
                    top
                };
                top.write_sorted(
                    self.metric,
                    &mut dist[qi * k..(qi + 1) * k],
                    &mut labels[qi * k..(qi + 1) * k],
                );
            }
        }
        Ok(())
    }

    /// Scans the given probes of one query into `top` (keys: distances for L2,
    /// negated similarities for inner product).
    #[allow(clippy::too_many_arguments)]
    fn scan_probes(
        &self,
        q: &[f32],
        lists: &[Label],
        coarse_dis: &[f32],
        max_codes: usize,
        filter: Option<&dyn IdFilter>,
        top: &mut TopK,
        buf: &mut [f32],
    ) -> Result<()> {
        let mut scanner = self.encoding.scanner(&self.quantizer, q, self.metric)?;
        let mut scanned = 0usize;
        for (&l, &cd) in lists.iter().zip(coarse_dis) {
            if l < 0 {
                continue;
            }
            scanned += self.scan_list(&mut scanner, l as usize, cd, filter, top, buf)?;
            if max_codes > 0 && scanned >= max_codes {
                break;
            }
        }
        Ok(())
    }

    /// Scans list `l` with a scanner of one query into its `top`; returns the list's
    /// length.
    fn scan_list(
        &self,
        scanner: &mut E::Scanner<'_>,
        l: usize,
        coarse_dis: f32,
        filter: Option<&dyn IdFilter>,
        top: &mut TopK,
        buf: &mut [f32],
    ) -> Result<usize> {
        let ids = self.lists.ids(l);
        if ids.is_empty() {
            return Ok(0);
        }
        let cs = self.encoding.code_size();
        let ip = self.metric == Metric::InnerProduct;
        let codes = self.lists.codes(l);
        scanner.set_list(l, coarse_dis)?;
        for (bi, idb) in ids.chunks(buf.len()).enumerate() {
            let c0 = bi * buf.len() * cs;
            let out = &mut buf[..idb.len()];
            scanner.scan(&codes[c0..c0 + idb.len() * cs], out)?;
            let mut thr = top.threshold();
            for (&v, &id) in out.iter().zip(idb) {
                let key = if ip { -v } else { v };
                if key <= thr && filter.is_none_or(|f| f.is_member(id)) {
                    top.push(key, id);
                    thr = top.threshold();
                }
            }
        }
        Ok(ids.len())
    }

    /// One block of a list-major batch search: the block's (list, query) pairs in list
    /// order, so each list is read from memory once and then served from cache to
    /// every query of the block that probes it. Same results as query order (the
    /// top-k breaks ties by label, so visiting order does not matter).
    #[allow(clippy::too_many_arguments)]
    fn scan_block_list_major(
        &self,
        queries: VectorsRef<'_>,
        k: usize,
        lists: &[Label],
        coarse_dis: &[f32],
        filter: Option<&dyn IdFilter>,
        dist: &mut [f32],
        labels: &mut [Label],
    ) -> Result<()> {
        let nb = queries.len();
        let nprobe = lists.len() / nb.max(1);
        let mut scanners = queries
            .rows()
            .map(|q| self.encoding.scanner(&self.quantizer, q, self.metric))
            .collect::<Result<Vec<_>>>()?;
        let mut tops: Vec<TopK> = (0..nb).map(|_| TopK::new(k)).collect();
        let mut pairs: Vec<(Label, usize)> = lists
            .iter()
            .enumerate()
            .filter(|&(_, &l)| l >= 0)
            .map(|(i, &l)| (l, i))
            .collect();
        pairs.sort_unstable();
        let mut buf = vec![0f32; SCAN_BLOCK];
        for &(l, i) in &pairs {
            let qi = i / nprobe;
            self.scan_list(
                &mut scanners[qi],
                l as usize,
                coarse_dis[i],
                filter,
                &mut tops[qi],
                &mut buf,
            )?;
        }
        for ((top, dc), lc) in tops
            .iter()
            .zip(dist.chunks_mut(k))
            .zip(labels.chunks_mut(k))
        {
            top.write_sorted(self.metric, dc, lc);
        }
        Ok(())
    }

    /// `nprobe` from the parameters or the default, checked and clamped to `nlist`.
    fn effective_nprobe(&self, params: &SearchParams<'_>) -> Result<usize> {
        let np = params.nprobe.unwrap_or(self.nprobe);
        if np == 0 {
            return Err(Error::invalid_param("nprobe", "must be at least 1"));
        }
        Ok(np.min(self.nlist))
    }

    /// The coarse assignment of the queries: `nprobe` lists and distances each.
    pub(crate) fn coarse(
        &self,
        queries: VectorsRef<'_>,
        params: &SearchParams<'_>,
    ) -> Result<(Vec<Label>, Vec<f32>)> {
        let nprobe = self.effective_nprobe(params)?;
        let qp = params.quantizer.as_deref().cloned().unwrap_or_default();
        let res = self.quantizer.search(queries, nprobe, &qp)?;
        let (d, l) = res.into_parts();
        Ok((l, d))
    }

    /// Moves every entry of `other` into this index (same quantizer centroids and
    /// encoding shape), adding `add_id` to its ids; `other` is left empty (Faiss's
    /// `merge_from`).
    ///
    /// # Errors
    /// Incompatible indexes (dimension, metric, nlist, code size, any centroid), shifted
    /// ids that overflow or equal [`vq_core::NO_LABEL`], ids that would repeat in this
    /// index's direct map, or write errors of the lists. On error neither index changes
    /// (except after a write error of on-disk lists).
    pub fn merge_from(&mut self, other: &mut IndexIvf<Q, E>, add_id: Label) -> Result<()> {
        self.check_compatible(other)?;
        self.ensure_prepared()?;
        other.lists.check()?;
        // Every check before anything moves: shifted ids must stay valid labels, and
        // with a direct map they must be new to this index and distinct among themselves.
        let shift = |id: Label| {
            id.checked_add(add_id)
                .filter(|&s| s != vq_core::NO_LABEL)
                .ok_or_else(|| {
                    Error::invalid_param(
                        "add_id",
                        format!("id {id} shifted by {add_id} is not a valid id"),
                    )
                })
        };
        let mut incoming = HashSet::new();
        for l in 0..other.nlist {
            for &id in other.lists.ids(l) {
                let s = shift(id)?;
                if let Some(map) = &self.direct_map
                    && (map.contains_key(&s) || !incoming.insert(s))
                {
                    return Err(Error::DuplicateId { id: s });
                }
            }
        }
        let snapshot = ArrayInvertedLists::from_lists(&*other.lists)?;
        crate::invlists::merge_into(&mut *self.lists, &snapshot, add_id)?;
        match other.lists.clear() {
            // Read-only lists (a memory-mapped index): emptied by dropping them.
            Err(Error::NotSupported { .. }) => other.lists = other.empty_lists(),
            r => r?,
        }
        if other.direct_map.is_some() {
            other.direct_map = Some(HashMap::new());
        }
        if self.direct_map.is_some() {
            self.make_direct_map(true)?;
        }
        Ok(())
    }

    fn check_compatible(&self, other: &IndexIvf<Q, E>) -> Result<()> {
        let same_shape = self.dim() == other.dim()
            && self.metric == other.metric
            && self.nlist == other.nlist
            && self.encoding.code_size() == other.encoding.code_size()
            && self.encoding.by_residual() == other.encoding.by_residual();
        if !same_shape || !self.is_trained() || !other.is_trained() {
            return Err(Error::invalid_param(
                "other",
                format!(
                    "{} cannot be merged into {}",
                    other.describe(),
                    self.describe()
                ),
            ));
        }
        let d = self.dim();
        let (mut a, mut b) = (vec![0f32; d], vec![0f32; d]);
        for l in 0..self.nlist {
            self.quantizer.centroid_into(l, &mut a)?;
            other.quantizer.centroid_into(l, &mut b)?;
            if a != b {
                return Err(Error::invalid_param(
                    "other",
                    format!("coarse centroids differ (list {l}): train once and copy the index"),
                ));
            }
        }
        Ok(())
    }

    /// Number of vectors in each list.
    pub fn list_sizes(&self) -> Vec<usize> {
        (0..self.nlist).map(|l| self.lists.list_len(l)).collect()
    }

    /// Empty in-memory lists of this index's shape.
    fn empty_lists(&self) -> Box<dyn InvertedLists> {
        Box::new(ArrayInvertedLists::new(
            self.nlist,
            self.encoding.code_size(),
        ))
    }

    /// After a failed load: empty in-memory lists, tables to prepare again.
    fn abandon_load(&mut self) {
        self.lists = self.empty_lists();
        if self.direct_map.is_some() {
            self.direct_map = Some(HashMap::new());
        }
        self.prepared = false;
    }
}

/// Bytes buffered per piece when a section is produced element by element.
const STREAM_CHUNK: usize = 1 << 16;

/// Writes the lists as three sections: `offsets` (`nlist + 1` `u64`, in entries),
/// `ids` (all lists' ids concatenated, `i64`) and `codes` (all lists' codes
/// concatenated). The lists' own slices are streamed: nothing big is copied.
fn write_lists(w: &mut StateWriter<'_>, lists: &dyn InvertedLists) -> Result<()> {
    lists.check()?;
    let nlist = lists.nlist();
    w.put_streamed("offsets", DType::U64, |sink| {
        let mut buf = Vec::with_capacity(STREAM_CHUNK + 8);
        let mut acc = 0u64;
        buf.extend_from_slice(&acc.to_le_bytes());
        for l in 0..nlist {
            acc += lists.list_len(l) as u64;
            buf.extend_from_slice(&acc.to_le_bytes());
            if buf.len() >= STREAM_CHUNK {
                sink(&buf)?;
                buf.clear();
            }
        }
        sink(&buf)
    })?;
    w.put_streamed("ids", DType::I64, |sink| {
        let mut buf = Vec::new();
        for l in 0..nlist {
            let ids = lists.ids(l);
            if ids.is_empty() {
                continue;
            }
            if cfg!(target_endian = "little") {
                sink(bytemuck::cast_slice(ids))?;
            } else {
                for c in ids.chunks(STREAM_CHUNK / 8) {
                    buf.clear();
                    c.iter()
                        .for_each(|v| buf.extend_from_slice(&v.to_le_bytes()));
                    sink(&buf)?;
                }
            }
        }
        Ok(())
    })?;
    w.put_streamed("codes", DType::U8, |sink| {
        for l in 0..nlist {
            let codes = lists.codes(l);
            if !codes.is_empty() {
                sink(codes)?;
            }
        }
        Ok(())
    })
}

/// Reads what [`write_lists`] wrote, checking every offset and length against
/// `nlist` and `code_size`. A mapped container gives read-only lists over the mapped
/// arrays (nothing but the offsets is read); otherwise the lists are copied into
/// [`ArrayInvertedLists`].
fn read_lists(
    r: &mut StateReader,
    nlist: usize,
    code_size: usize,
) -> Result<Box<dyn InvertedLists>> {
    let offsets = r.get_shared("offsets", DType::U64)?;
    let ids = r.get_shared("ids", DType::I64)?;
    let codes = r.get_shared("codes", DType::U8)?;
    let shared = SharedInvertedLists::validated(nlist, code_size, offsets, ids, codes)
        .map_err(|e| r.error("offsets", format!("inconsistent inverted lists: {e}")))?;
    if r.is_mapped() {
        Ok(Box::new(shared))
    } else {
        Ok(Box::new(ArrayInvertedLists::from_lists(&shared)?))
    }
}

impl<Q: CoarseQuantizer + Clone, E: IvfEncoding> IndexIvf<Q, E> {
    /// An empty index with the same trained quantizer and encoding (Faiss's workflow
    /// "train once, add blocks to copies, merge").
    pub fn empty_clone(&self) -> IndexIvf<Q, E> {
        IndexIvf {
            quantizer: self.quantizer.clone(),
            encoding: self.encoding.clone(),
            lists: Box::new(ArrayInvertedLists::new(
                self.nlist,
                self.encoding.code_size(),
            )),
            nlist: self.nlist,
            metric: self.metric,
            nprobe: self.nprobe,
            max_codes: self.max_codes,
            kmeans: self.kmeans.clone(),
            direct_map: self.direct_map.as_ref().map(|_| HashMap::new()),
            prepared: self.prepared,
        }
    }
}

impl<Q: CoarseQuantizer, E: IvfEncoding> Index for IndexIvf<Q, E> {
    fn dim(&self) -> usize {
        self.encoding.dim()
    }

    fn metric(&self) -> Metric {
        self.metric
    }

    fn len(&self) -> usize {
        self.lists.total()
    }

    fn describe(&self) -> String {
        format!(
            "IndexIvf(d={}, nlist={}, {}, {})",
            self.dim(),
            self.nlist,
            self.encoding.describe(),
            self.metric
        )
    }

    fn is_trained(&self) -> bool {
        self.quantizer.is_trained()
            && self.quantizer.nlist() == self.nlist
            && self.encoding.is_trained()
    }

    fn train(&mut self, x: VectorsRef<'_>) -> Result<()> {
        x.check_dim(self.dim())?;
        x.check_finite()?;
        if self.lists.total() > 0 {
            return Err(Error::not_supported(
                "train on a non-empty index",
                self.describe(),
            ));
        }
        let coarse_ready = self.quantizer.is_trained() && self.quantizer.nlist() == self.nlist;
        if !coarse_ready {
            if self.quantizer.trains_alone() {
                self.quantizer.train(x)?;
            } else {
                if x.len() < self.nlist {
                    return Err(Error::InsufficientTrainingData {
                        needed: self.nlist,
                        got: x.len(),
                    });
                }
                let mut params = self.kmeans.clone();
                params.k = self.nlist;
                let mut km = KMeans::new(self.dim(), params)?;
                km.train(x)?;
                self.quantizer.reset();
                self.quantizer.train(km.centroids())?;
                self.quantizer.add(km.centroids())?;
            }
        }
        // As Faiss: the coarse level is kept when already trained, the encoding is
        // always (re)trained.
        {
            let sample = self
                .encoding
                .max_train_points()
                .and_then(|m| vq_pq::subsample(x, m, self.kmeans.seed));
            let xs = sample.as_ref().map_or(x, |s| s.as_ref());
            if self.encoding.by_residual() {
                let lists = self.assign_lists(xs)?;
                let r = self.residuals(xs, &lists)?;
                self.encoding.train(r.as_ref())?;
            } else {
                self.encoding.train(xs)?;
            }
        }
        self.prepared = false;
        self.ensure_prepared()
    }

    fn add(&mut self, x: VectorsRef<'_>) -> Result<()> {
        let n0 = self.len() as Label;
        let ids: Vec<Label> = (n0..n0 + x.len() as Label).collect();
        self.add_with_ids(x, &ids)
    }

    fn add_with_ids(&mut self, x: VectorsRef<'_>, ids: &[Label]) -> Result<()> {
        self.check_trained()?;
        x.check_dim(self.dim())?;
        x.check_finite()?;
        if ids.len() != x.len() {
            return Err(Error::LengthMismatch {
                what: "ids",
                expected: x.len(),
                got: ids.len(),
            });
        }
        if let Some(&bad) = ids.iter().find(|&&id| id == vq_core::NO_LABEL) {
            return Err(Error::invalid_param(
                "ids",
                format!("id {bad} is reserved for missing results"),
            ));
        }
        if x.is_empty() {
            return Ok(());
        }
        self.ensure_prepared()?;
        let lists = self.assign_lists(x)?;
        self.add_assigned(x, ids, &lists)
    }

    fn search_into(
        &self,
        queries: VectorsRef<'_>,
        k: usize,
        params: &SearchParams<'_>,
        out: &mut SearchResults,
    ) -> Result<()> {
        self.check_trained()?;
        check_search(self, queries, k)?;
        if !self.prepared {
            return Err(Error::NotTrained {
                what: format!("{} (tables not prepared)", self.describe()),
            });
        }
        let (lists, dis) = self.coarse(queries, params)?;
        self.search_preassigned(queries, k, &lists, &dis, params, out)
    }

    fn range_search(
        &self,
        queries: VectorsRef<'_>,
        radius: f32,
        params: &SearchParams<'_>,
    ) -> Result<RangeSearchResults> {
        self.check_trained()?;
        check_range_search(self, queries, radius)?;
        self.lists.check()?;
        let (lists, dis) = self.coarse(queries, params)?;
        if let Some(&bad) = lists.iter().find(|&&l| l >= self.nlist as Label) {
            return Err(Error::invalid_param(
                "lists",
                format!(
                    "the coarse quantizer returned list {bad} (nlist = {})",
                    self.nlist
                ),
            ));
        }
        let nprobe = lists.len() / queries.len().max(1);
        let filter = params.selector;
        let metric = self.metric;
        let cs = self.encoding.code_size();
        let hits = (0..queries.len())
            .into_par_iter()
            .map(|qi| -> Result<Vec<(f32, Label)>> {
                let mut scanner =
                    self.encoding
                        .scanner(&self.quantizer, queries.row(qi), metric)?;
                let mut hits = Vec::new();
                let mut buf = vec![0f32; SCAN_BLOCK];
                for p in qi * nprobe..(qi + 1) * nprobe {
                    if lists[p] < 0 {
                        continue;
                    }
                    let l = lists[p] as usize;
                    let ids = self.lists.ids(l);
                    if ids.is_empty() {
                        continue;
                    }
                    let codes = self.lists.codes(l);
                    scanner.set_list(l, dis[p])?;
                    for (bi, idb) in ids.chunks(SCAN_BLOCK).enumerate() {
                        let c0 = bi * SCAN_BLOCK * cs;
                        let out = &mut buf[..idb.len()];
                        scanner.scan(&codes[c0..c0 + idb.len() * cs], out)?;
                        for (&v, &id) in out.iter().zip(idb) {
                            let inside = match metric {
                                Metric::L2 => v < radius,
                                Metric::InnerProduct => v > radius,
                            };
                            if inside && filter.is_none_or(|f| f.is_member(id)) {
                                hits.push((v, id));
                            }
                        }
                    }
                }
                Ok(hits)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RangeSearchResults::from_lists(hits, metric))
    }

    /// Empties the index. Read-only lists (a memory-mapped index, read-only on-disk
    /// lists) are dropped for empty in-memory lists.
    fn reset(&mut self) {
        // In-memory lists cannot fail to clear; for other storage the error is
        // reported by the next operation's `check`.
        if let Err(Error::NotSupported { .. }) = self.lists.clear() {
            self.lists = self.empty_lists();
        }
        if self.direct_map.is_some() {
            self.direct_map = Some(HashMap::new());
        }
    }

    fn reconstruct_into(&self, id: Label, out: &mut [f32]) -> Result<()> {
        let Some(map) = &self.direct_map else {
            return Err(Error::not_supported(
                "reconstruct without a direct map (call make_direct_map(true))",
                self.describe(),
            ));
        };
        if out.len() != self.dim() {
            return Err(Error::DimensionMismatch {
                expected: self.dim(),
                got: out.len(),
            });
        }
        let &(l, o) = map.get(&id).ok_or(Error::IdNotFound { id })?;
        let (l, o) = (l as usize, o as usize);
        let cs = self.encoding.code_size();
        self.lists.check()?;
        self.encoding
            .decode_into(&self.lists.codes(l)[o * cs..(o + 1) * cs], out)?;
        if self.encoding.by_residual() {
            let mut c = vec![0f32; self.dim()];
            self.quantizer.centroid_into(l, &mut c)?;
            out.iter_mut().zip(&c).for_each(|(o, c)| *o += c);
        }
        Ok(())
    }

    fn removal_keeps_ids(&self) -> bool {
        true
    }

    fn remove_ids(&mut self, selector: &dyn IdFilter) -> Result<usize> {
        let mut removed = 0;
        for l in 0..self.nlist {
            if self.lists.list_len(l) == 0 {
                continue;
            }
            removed += self.lists.retain(l, &mut |id| !selector.is_member(id))?;
        }
        if removed > 0 && self.direct_map.is_some() {
            self.make_direct_map(true)?;
        }
        Ok(removed)
    }

    fn search_param_names(&self) -> Vec<String> {
        let mut v = vec!["nprobe".to_string(), "max_codes".to_string()];
        v.extend(
            self.quantizer
                .search_param_names()
                .into_iter()
                .map(|n| format!("quantizer_{n}")),
        );
        v
    }

    /// `nprobe` (`1..=nlist`), `max_codes` (0 = no limit), and `quantizer_<name>`,
    /// passed to the coarse quantizer as `<name>` (e.g. `quantizer_efSearch`).
    fn set_search_param(&mut self, name: &str, value: &str) -> Result<()> {
        if let Some(inner) = name.strip_prefix("quantizer_") {
            return self.quantizer.set_search_param(inner, value);
        }
        let parse = |what: &str| {
            value
                .trim()
                .parse::<usize>()
                .map_err(|_| Error::invalid_param(name, format!("`{value}` is not {what}")))
        };
        match name {
            "nprobe" => {
                let n = parse("a list count")?;
                if n == 0 || n > self.nlist {
                    return Err(Error::invalid_param(
                        name,
                        format!("{n} is not in 1..={} (nlist)", self.nlist),
                    ));
                }
                self.nprobe = n;
                Ok(())
            }
            "max_codes" => {
                self.max_codes = parse("a code count")?;
                Ok(())
            }
            _ => Err(Error::invalid_param(
                name,
                format!(
                    "not a search parameter of {} (it has: nprobe, max_codes, quantizer_<name>)",
                    self.describe()
                ),
            )),
        }
    }

    /// Sections: the shape (`dim`, `nlist`, `metric`, `code_size`), the search
    /// defaults (`nprobe`, `max_codes`), the coarse training parameters
    /// (`kmeans_seed`, `kmeans_niter`), `direct_map` (0/1), then `quantizer/…`,
    /// `encoding/…` and the lists as three arrays streamed from the lists themselves:
    /// `lists/offsets` (`nlist + 1` `u64`), `lists/ids` (`i64`), `lists/codes`.
    fn save_state(&self, w: &mut StateWriter<'_>) -> Result<()> {
        w.put_usize("dim", self.dim())?;
        w.put_usize("nlist", self.nlist)?;
        w.put_str("metric", self.metric.name())?;
        w.put_usize("code_size", self.encoding.code_size())?;
        w.put_usize("nprobe", self.nprobe)?;
        w.put_usize("max_codes", self.max_codes)?;
        w.put_u64("kmeans_seed", self.kmeans.seed)?;
        w.put_usize("kmeans_niter", self.kmeans.niter)?;
        w.put_bool("direct_map", self.direct_map.is_some())?;
        w.scope("quantizer", |w| self.quantizer.save_state(w))?;
        w.scope("encoding", |w| self.encoding.save_state(w))?;
        w.scope("lists", |w| write_lists(w, &*self.lists))
    }

    /// Checks the shape against this index, loads the quantizer and the encoding,
    /// prepares the search tables again and rebuilds the direct map if one was saved.
    /// With a mapped container ([`vq_core::persist::LoadMode::Mmap`]) the lists stay
    /// in the file ([`SharedInvertedLists`]): the index is then read-only (`add` and
    /// `remove_ids` are errors; `reset` drops the mapping). Lists attached to the
    /// reader as `lists` (a `Box<dyn InvertedLists>`, see
    /// [`StateReader::attach`](vq_core::persist::StateReader::attach)) are taken instead
    /// of the `lists/…` sections. On error the index is unchanged when the file's shape
    /// does not fit this index (dimension, lists, code size, metric), else left empty.
    fn load_state(&mut self, r: &mut StateReader) -> Result<()> {
        let cs = self.encoding.code_size();
        for (name, mine) in [
            ("dim", self.dim()),
            ("nlist", self.nlist),
            ("code_size", cs),
        ] {
            let v = r.get_usize(name, usize::MAX)?;
            if v != mine {
                return Err(r.error(
                    name,
                    format!("{v}, the index has {mine} ({})", self.describe()),
                ));
            }
        }
        let metric = r.get_str("metric")?;
        if metric.parse::<Metric>().ok() != Some(self.metric) {
            return Err(r.error(
                "metric",
                format!("`{metric}`, the index uses {}", self.metric),
            ));
        }
        let nprobe = r.get_usize("nprobe", usize::MAX)?;
        if nprobe == 0 {
            return Err(r.error("nprobe", "must be at least 1"));
        }
        let max_codes = r.get_usize("max_codes", usize::MAX)?;
        let seed = r.get_u64("kmeans_seed")?;
        let niter = r.get_usize("kmeans_niter", usize::MAX)?;
        if niter == 0 {
            return Err(r.error("kmeans_niter", "must be at least 1"));
        }
        let direct_map = r.get_bool("direct_map")?;
        let lists = match r.take_attached("lists") {
            // Lists handed over by the caller (e.g. read in place from a mapped Faiss
            // file) instead of the `lists/…` sections.
            Some(part) => {
                let lists = part
                    .downcast::<Box<dyn InvertedLists>>()
                    .map_err(|_| r.error("lists", "the attached part is not inverted lists"))?;
                if lists.nlist() != self.nlist || lists.code_size() != cs {
                    return Err(r.error(
                        "lists",
                        format!(
                            "attached {} do not fit {} lists of {cs}-byte codes",
                            lists.describe(),
                            self.nlist
                        ),
                    ));
                }
                *lists
            }
            None => r.scope("lists", |r| read_lists(r, self.nlist, cs))?,
        };
        // From here on the index changes: on error it is left empty.
        let parts = r
            .scope("quantizer", |r| self.quantizer.load_state(r))
            .and_then(|()| r.scope("encoding", |r| self.encoding.load_state(r)));
        if let Err(e) = parts {
            self.abandon_load();
            return Err(e);
        }
        if self.encoding.code_size() != cs || self.encoding.dim() != self.quantizer.dim() {
            self.abandon_load();
            return Err(r.error(
                "encoding",
                format!(
                    "the loaded encoding {} does not fit",
                    self.encoding.describe()
                ),
            ));
        }
        if self.quantizer.len() > 0 && self.quantizer.nlist() != self.nlist {
            let n = self.quantizer.nlist();
            self.abandon_load();
            return Err(r.error(
                "quantizer",
                format!("{n} centroids for {} lists", self.nlist),
            ));
        }
        let total = lists.total();
        self.lists = lists;
        self.nprobe = nprobe;
        self.max_codes = max_codes;
        self.kmeans.seed = seed;
        self.kmeans.niter = niter;
        // `seed` sets both (set_build_param); the encoding's copy is not saved apart.
        if let Err(e) = self.encoding.set_seed(seed) {
            self.abandon_load();
            return Err(r.error("kmeans_seed", e));
        }
        self.direct_map = None;
        self.prepared = false;
        if total > 0 && !self.is_trained() {
            self.abandon_load();
            return Err(r.error(
                "lists",
                format!("{total} entries stored in an untrained index"),
            ));
        }
        if let Err(e) = self.ensure_prepared() {
            self.abandon_load();
            return Err(e);
        }
        if direct_map && let Err(e) = self.make_direct_map(true) {
            self.abandon_load();
            return Err(r.error("lists", format!("cannot rebuild the direct map: {e}")));
        }
        Ok(())
    }

    fn bytes_per_vector(&self) -> f64 {
        (self.encoding.code_size() + std::mem::size_of::<Label>()) as f64
    }

    /// `seed` (coarse k-means, training subsamples and the encoding's own training;
    /// default 1234), `niter` (coarse k-means iterations; default 10), and the search
    /// defaults `nprobe` and `max_codes`.
    fn set_build_param(&mut self, name: &str, value: &str) -> Result<()> {
        let parse = |what: &str| {
            value
                .trim()
                .parse::<u64>()
                .map_err(|_| Error::invalid_param(name, format!("`{value}` is not {what}")))
        };
        match name {
            "seed" => {
                let seed = parse("an unsigned integer")?;
                self.kmeans.seed = seed;
                self.encoding.set_seed(seed)
            }
            "niter" => {
                let n = parse("an iteration count")?;
                if n == 0 {
                    return Err(Error::invalid_param(name, "must be at least 1"));
                }
                self.kmeans.niter =
                    usize::try_from(n).map_err(|_| Error::invalid_param(name, "too large"))?;
                Ok(())
            }
            "nprobe" => {
                let n = usize::try_from(parse("a list count")?)
                    .map_err(|_| Error::invalid_param(name, "too large"))?;
                self.set_nprobe(n)
            }
            "max_codes" => {
                self.max_codes = usize::try_from(parse("a code count")?)
                    .map_err(|_| Error::invalid_param(name, "too large"))?;
                Ok(())
            }
            // Faiss's `make_direct_map`, from a factory or parameter string: the id →
            // entry map `reconstruct` needs (an IVF under `IDMap2` or as a refinement).
            "direct_map" => match value.trim() {
                "1" | "true" => self.make_direct_map(true),
                "0" | "false" => self.make_direct_map(false),
                _ => Err(Error::invalid_param(
                    name,
                    format!("`{value}` is not 0 or 1"),
                )),
            },
            _ => Err(Error::invalid_param(
                name,
                format!(
                    "not a build parameter of {} (it has: seed, niter, nprobe, max_codes, \
                     direct_map)",
                    self.describe()
                ),
            )),
        }
    }
}
