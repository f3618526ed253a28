//! Exhaustive 4-bit PQ search with the fast-scan kernels (Faiss's `IndexPQFastScan`,
//! factory `PQ{M}x4fs`).

use rayon::prelude::*;
use vq_core::distance::SimdLevel;
use vq_core::persist::{StateReader, StateWriter};
use vq_core::topk::TopK;
use vq_core::{
    Codec, Error, IdFilter, Index, Label, Metric, RangeSearchResults, Result, SearchParams,
    SearchResults, VectorsRef, check_range_search, check_search,
};

use crate::fastscan::{
    self, FastScanLayout, FsCollector, MAX_QUERY_BLOCK, QuantizedLut, SUB_BLOCK,
};
use crate::pq::ProductQuantizer;
use crate::state::expect_usize;

/// Sub-blocks a thread scans per task when the codes are split across threads.
const SPLIT_SUB_BLOCKS: usize = 1024;

/// A query's float table as keys (smaller = better: inner products negated).
pub(crate) fn key_tables(
    pq: &ProductQuantizer,
    queries: VectorsRef<'_>,
    metric: Metric,
) -> Result<Vec<f32>> {
    let mut t = pq.compute_distance_tables(queries, metric)?;
    if metric == Metric::InnerProduct {
        t.iter_mut().for_each(|v| *v = -*v);
    }
    Ok(t)
}

/// Exhaustive search over 4-bit product-quantization codes stored in the fast-scan
/// block layout ([`crate::fastscan`]).
///
/// Each query's table is quantised to `u8`; the SIMD kernels sum 32 codes per shuffle
/// and report the vectors whose sums could beat the current k-th best (rounding
/// included); those are scored exactly with the float table. So results are the exact
/// top-k by asymmetric (ADC) distance — the same as [`crate::IndexPQ`] with 4-bit
/// codes — with exact distances, at the speed of the integer scan. Pair with
/// `RFlat` (`vq_core::IndexRefine`) to re-rank by true distances.
///
/// Ids are sequential; [`Index::remove_ids`] shifts later ids down, as Faiss does.
///
/// ```
/// use vq_core::{Index, Metric, SearchParams, synthetic::SyntheticSpec};
/// use vq_pq::IndexPQFastScan;
/// let data = SyntheticSpec::new(5_000, 32, 10).generate()?;
/// let mut index = IndexPQFastScan::new(32, 16, Metric::L2)?;
/// index.train(data.base.as_ref())?;
/// index.add(data.base.as_ref())?;
/// let res = index.search(data.queries.as_ref(), 5, &SearchParams::default())?;
/// assert_eq!(res.row(0).1.len(), 5);
/// # Ok::<(), vq_core::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct IndexPQFastScan {
    pq: ProductQuantizer,
    metric: Metric,
    layout: FastScanLayout,
    codes: Vec<u8>,
    ntotal: usize,
    level: Option<SimdLevel>,
    lut_max: u8,
}

impl IndexPQFastScan {
    /// `PQ{m}x4fs` over `d` dimensions, blocks of 32.
    ///
    /// # Errors
    /// `d` not a multiple of `m`, `m == 0`.
    pub fn new(d: usize, m: usize, metric: Metric) -> Result<IndexPQFastScan> {
        IndexPQFastScan::from_pq(ProductQuantizer::new(d, m, 4)?, metric, SUB_BLOCK)
    }

    /// Over a 4-bit product quantizer (trained or not), blocks of `bbs` vectors.
    ///
    /// # Errors
    /// A quantizer with other than 4 bits, `bbs` not a positive multiple of 32.
    pub fn from_pq(pq: ProductQuantizer, metric: Metric, bbs: usize) -> Result<IndexPQFastScan> {
        if pq.nbits() != 4 {
            return Err(Error::invalid_param(
                "nbits",
                format!("fast scan needs 4-bit codes, not {}", pq.nbits()),
            ));
        }
        let layout = FastScanLayout::new(pq.m(), bbs)?;
        Ok(IndexPQFastScan {
            pq,
            metric,
            layout,
            codes: Vec::new(),
            ntotal: 0,
            level: None,
            lut_max: (1u16 << fastscan::DEFAULT_LUT_BITS).wrapping_sub(1) as u8,
        })
    }

    /// The product quantizer.
    pub fn pq(&self) -> &ProductQuantizer {
        &self.pq
    }

    /// Mutable product quantizer (k-means parameters before training).
    ///
    /// # Errors
    /// The index holds vectors (their codes would no longer match).
    pub fn pq_mut(&mut self) -> Result<&mut ProductQuantizer> {
        if self.ntotal > 0 {
            return Err(Error::invalid_param(
                "pq",
                "cannot change the quantizer of an index that holds vectors",
            ));
        }
        Ok(&mut self.pq)
    }

    /// The block layout.
    pub fn layout(&self) -> &FastScanLayout {
        &self.layout
    }

    /// The codes, in the block layout (whole blocks; the tail is padding).
    pub fn codes(&self) -> &[u8] {
        &self.codes
    }

    /// Caps the kernel level (default: the best the CPU has, capped by `VQ_SIMD`);
    /// for tests and benchmarks.
    pub fn set_kernel_level(&mut self, level: Option<SimdLevel>) {
        self.level = level;
    }

    fn kernel_level(&self) -> SimdLevel {
        self.level
            .map_or_else(fastscan::kernel_level, |l| l.min(fastscan::kernel_level()))
    }

    fn check_trained(&self) -> Result<()> {
        if self.pq.is_trained() {
            Ok(())
        } else {
            Err(Error::NotTrained {
                what: self.describe(),
            })
        }
    }

    fn nsub(&self) -> usize {
        self.ntotal.div_ceil(SUB_BLOCK)
    }

    /// Scans sub-blocks `sb0..sb0 + nsub` for a block of queries into their tops.
    #[allow(clippy::too_many_arguments)]
    fn scan_range(
        &self,
        level: SimdLevel,
        luts: &[&QuantizedLut],
        tables: &[&[f32]],
        filter: Option<&dyn IdFilter>,
        sb0: usize,
        nsub: usize,
        tops: &mut [TopK],
    ) -> Result<()> {
        let sbb = self.layout.sub_block_bytes();
        let codes = &self.codes[sb0 * sbb..(sb0 + nsub) * sbb];
        let mut c = KnnCollector {
            layout: &self.layout,
            codes,
            first: sb0 * SUB_BLOCK,
            ntotal: self.ntotal,
            luts,
            tables,
            filter,
            thresholds: [u16::MAX; MAX_QUERY_BLOCK],
            tops,
            pending: [(0, 0); PENDING],
            npending: 0,
        };
        for q in 0..luts.len() {
            c.refresh(q);
        }
        fastscan::scan(level, &self.layout, luts, codes, nsub, &mut c)?;
        c.finish();
        Ok(())
    }
}

/// Vectors a [`KnnCollector`] holds before scoring them together: the float sums of
/// one vector form a chain of dependent additions, so several vectors (of any of the
/// block's queries) are summed side by side.
const PENDING: usize = 4;

/// Scores reported vectors exactly and keeps each query's best.
///
/// Reported vectors wait in `pending` until [`PENDING`] of them (of any queries) can
/// be scored together; [`KnnCollector::finish`] scores the rest. A query's threshold
/// is lowered after its vectors are scored, so a waiting vector only makes the
/// thresholds meanwhile looser (more vectors reported), never drops one.
struct KnnCollector<'a> {
    layout: &'a FastScanLayout,
    /// The scanned codes (starting at vector `first`).
    codes: &'a [u8],
    first: usize,
    ntotal: usize,
    luts: &'a [&'a QuantizedLut],
    tables: &'a [&'a [f32]],
    filter: Option<&'a dyn IdFilter>,
    thresholds: [u16; MAX_QUERY_BLOCK],
    tops: &'a mut [TopK],
    /// `(query, vector within the scanned codes)`.
    pending: [(usize, usize); PENDING],
    npending: usize,
}

impl KnnCollector<'_> {
    fn refresh(&mut self, q: usize) {
        self.thresholds[q] = self.luts[q]
            .threshold_for(self.tops[q].threshold())
            .unwrap_or(0);
    }

    /// Scores the waiting vectors (a short batch is padded with its first vector) and
    /// lowers the thresholds of the queries that kept one.
    fn score_pending(&mut self) {
        let n = self.npending;
        if n == 0 {
            return;
        }
        self.npending = 0;
        let p = self.pending;
        let lane = |j: usize| {
            let (q, local) = p[if j < n { j } else { 0 }];
            (self.codes, local, self.tables[q])
        };
        let keys: [f32; PENDING] = self.layout.table_keys_each(std::array::from_fn(lane));
        let mut pushed = [false; MAX_QUERY_BLOCK];
        for (&(q, local), &key) in p[..n].iter().zip(&keys) {
            if key <= self.tops[q].threshold() {
                self.tops[q].push(key, (self.first + local) as Label);
                pushed[q] = true;
            }
        }
        for (q, &p) in pushed.iter().enumerate().take(self.luts.len()) {
            if p {
                self.refresh(q);
            }
        }
    }

    /// Scores every vector still waiting.
    fn finish(&mut self) {
        self.score_pending();
    }
}

impl FsCollector for KnnCollector<'_> {
    #[inline]
    fn threshold(&self, q: usize) -> u16 {
        self.thresholds[q]
    }

    #[inline]
    fn collect(&mut self, q: usize, sb: usize, mut mask: u32, sums: &[u16; SUB_BLOCK]) {
        while mask != 0 {
            let i = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            // The threshold may have dropped since the kernel compared (vectors scored
            // within this call).
            if sums[i] > self.thresholds[q] {
                continue;
            }
            let local = sb * SUB_BLOCK + i;
            let id = self.first + local;
            if id >= self.ntotal {
                break;
            }
            if self.filter.is_some_and(|f| !f.is_member(id as Label)) {
                continue;
            }
            self.pending[self.npending] = (q, local);
            self.npending += 1;
            if self.npending == PENDING {
                self.score_pending();
            }
        }
    }
}

/// Collects every vector whose exact key is under a fixed bound.
struct RangeCollector<'a> {
    layout: &'a FastScanLayout,
    codes: &'a [u8],
    ntotal: usize,
    table: &'a [f32],
    filter: Option<&'a dyn IdFilter>,
    threshold: u16,
    bound: f32,
    hits: Vec<(f32, Label)>,
}

impl FsCollector for RangeCollector<'_> {
    fn threshold(&self, _q: usize) -> u16 {
        self.threshold
    }

    fn collect(&mut self, _q: usize, sb: usize, mut mask: u32, _sums: &[u16; SUB_BLOCK]) {
        while mask != 0 {
            let i = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            let id = sb * SUB_BLOCK + i;
            if id >= self.ntotal {
                break;
            }
            if self.filter.is_some_and(|f| !f.is_member(id as Label)) {
                continue;
            }
            let key = self.layout.table_key(self.codes, id, self.table);
            if key < self.bound {
                self.hits.push((key, id as Label));
            }
        }
    }
}

impl Index for IndexPQFastScan {
    fn dim(&self) -> usize {
        self.pq.dim()
    }

    fn metric(&self) -> Metric {
        self.metric
    }

    fn len(&self) -> usize {
        self.ntotal
    }

    fn describe(&self) -> String {
        format!(
            "IndexPQFastScan(d={}, PQ{}x4fs, bbs={}, {})",
            self.pq.dim(),
            self.pq.m(),
            self.layout.bbs(),
            self.metric
        )
    }

    fn is_trained(&self) -> bool {
        self.pq.is_trained()
    }

    fn train(&mut self, x: VectorsRef<'_>) -> Result<()> {
        if self.ntotal > 0 {
            return Err(Error::invalid_param(
                "train",
                "the index holds vectors; reset it before training again",
            ));
        }
        self.pq.train(x)
    }

    fn add(&mut self, x: VectorsRef<'_>) -> Result<()> {
        self.check_trained()?;
        x.check_dim(self.dim())?;
        x.check_finite()?;
        if x.is_empty() {
            return Ok(());
        }
        let std_codes = self.pq.encode(x)?;
        let cs = self.pq.code_size();
        let m = self.pq.m();
        let n0 = self.ntotal;
        let n1 = n0 + x.len();
        self.codes.resize(self.layout.bytes_for(n1), 0);
        let mut ids = vec![0u32; m];
        let mut code = vec![0u8; m];
        for (j, c) in std_codes.chunks_exact(cs).enumerate() {
            self.pq.unpack_code(c, &mut ids);
            for (o, &v) in code.iter_mut().zip(&ids) {
                *o = v as u8;
            }
            self.layout.write_code(&mut self.codes, n0 + j, &code);
        }
        self.ntotal = n1;
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
        self.check_trained()?;
        let nq = queries.len();
        let tsize = self.pq.m() * 16;
        let tables = key_tables(&self.pq, queries, self.metric)?;
        let m2 = self.layout.m2();
        let luts = tables
            .par_chunks(tsize)
            .map(|t| QuantizedLut::with_max(t, m2, self.lut_max))
            .collect::<Result<Vec<_>>>()?;
        let filter = params.selector;
        let level = self.kernel_level();
        let nsub = self.nsub();
        let threads = rayon::current_num_threads().max(1);
        out.reset(nq, k, self.metric);
        let metric = self.metric;
        let (dist, labels) = out.parts_mut();
        if nq >= threads * MAX_QUERY_BLOCK || nsub <= SPLIT_SUB_BLOCKS {
            // Blocks of queries share each pass over the codes.
            let qb = MAX_QUERY_BLOCK;
            dist.par_chunks_mut(qb * k)
                .zip(labels.par_chunks_mut(qb * k))
                .enumerate()
                .try_for_each(|(bi, (dc, lc))| -> Result<()> {
                    let q0 = bi * qb;
                    let nb = dc.len() / k;
                    let l: Vec<&QuantizedLut> = luts[q0..q0 + nb].iter().collect();
                    let t: Vec<&[f32]> = (q0..q0 + nb)
                        .map(|q| &tables[q * tsize..(q + 1) * tsize])
                        .collect();
                    let mut tops: Vec<TopK> = (0..nb).map(|_| TopK::new(k)).collect();
                    self.scan_range(level, &l, &t, filter, 0, nsub, &mut tops)?;
                    for ((top, d), lab) in tops.iter().zip(dc.chunks_mut(k)).zip(lc.chunks_mut(k)) {
                        top.write_sorted(metric, d, lab);
                    }
                    Ok(())
                })
        } else {
            // Few queries: split the codes across threads, merge per query.
            let parts = nsub.div_ceil(SPLIT_SUB_BLOCKS);
            for q0 in (0..nq).step_by(MAX_QUERY_BLOCK) {
                let nb = (nq - q0).min(MAX_QUERY_BLOCK);
                let l: Vec<&QuantizedLut> = luts[q0..q0 + nb].iter().collect();
                let t: Vec<&[f32]> = (q0..q0 + nb)
                    .map(|q| &tables[q * tsize..(q + 1) * tsize])
                    .collect();
                let partial = (0..parts)
                    .into_par_iter()
                    .map(|p| -> Result<Vec<TopK>> {
                        let sb0 = p * SPLIT_SUB_BLOCKS;
                        let n = SPLIT_SUB_BLOCKS.min(nsub - sb0);
                        let mut tops: Vec<TopK> = (0..nb).map(|_| TopK::new(k)).collect();
                        self.scan_range(level, &l, &t, filter, sb0, n, &mut tops)?;
                        Ok(tops)
                    })
                    .collect::<Result<Vec<_>>>()?;
                for j in 0..nb {
                    let mut top = TopK::new(k);
                    for p in &partial {
                        top.merge(&p[j]);
                    }
                    let q = q0 + j;
                    top.write_sorted(
                        metric,
                        &mut dist[q * k..(q + 1) * k],
                        &mut labels[q * k..(q + 1) * k],
                    );
                }
            }
            Ok(())
        }
    }

    fn range_search(
        &self,
        queries: VectorsRef<'_>,
        radius: f32,
        params: &SearchParams<'_>,
    ) -> Result<RangeSearchResults> {
        check_range_search(self, queries, radius)?;
        self.check_trained()?;
        let metric = self.metric;
        if self.ntotal == 0 {
            return Ok(RangeSearchResults::from_lists(
                vec![Vec::new(); queries.len()],
                metric,
            ));
        }
        let tsize = self.pq.m() * 16;
        let tables = key_tables(&self.pq, queries, metric)?;
        let m2 = self.layout.m2();
        let level = self.kernel_level();
        let bound = metric.to_key(radius);
        let lists = tables
            .par_chunks(tsize)
            .map(|t| -> Result<Vec<(f32, Label)>> {
                let lut = QuantizedLut::with_max(t, m2, self.lut_max)?;
                let Some(threshold) = lut.threshold_for(bound) else {
                    return Ok(Vec::new());
                };
                let mut c = RangeCollector {
                    layout: &self.layout,
                    codes: &self.codes,
                    ntotal: self.ntotal,
                    table: t,
                    filter: params.selector,
                    threshold,
                    bound,
                    hits: Vec::new(),
                };
                fastscan::scan(
                    level,
                    &self.layout,
                    &[&lut],
                    &self.codes,
                    self.nsub(),
                    &mut c,
                )?;
                Ok(c.hits
                    .into_iter()
                    .map(|(key, id)| (metric.from_key(key), id))
                    .collect())
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RangeSearchResults::from_lists(lists, metric))
    }

    fn reset(&mut self) {
        self.codes.clear();
        self.ntotal = 0;
    }

    fn reconstruct_into(&self, id: Label, out: &mut [f32]) -> Result<()> {
        if id < 0 || id as usize >= self.ntotal {
            return Err(Error::IdNotFound { id });
        }
        if out.len() != self.dim() {
            return Err(Error::DimensionMismatch {
                expected: self.dim(),
                got: out.len(),
            });
        }
        let code = self.standard_code(id as usize);
        self.pq.decode_into(&code, out)
    }

    fn remove_ids(&mut self, selector: &dyn IdFilter) -> Result<usize> {
        let n = self.ntotal;
        let mut w = 0;
        for r in 0..n {
            if selector.is_member(r as Label) {
                continue;
            }
            if w != r {
                self.layout.move_code(&mut self.codes, r, w);
            }
            w += 1;
        }
        // Zero the freed slots so the padding reads as code 0 again.
        let zero = vec![0u8; self.layout.m()];
        for i in w..n.min(self.layout.bytes_for(w) / self.layout.sub_block_bytes() * SUB_BLOCK) {
            self.layout.write_code(&mut self.codes, i, &zero);
        }
        self.codes.truncate(self.layout.bytes_for(w));
        self.ntotal = w;
        Ok(n - w)
    }

    /// Sections: `metric`, `dim`, `m`, `bbs` (all checked on load), `lut_max` (the
    /// `lut_bits` setting), the quantizer
    /// under `pq/`, `ntotal` and `codes` (the block layout, whole blocks).
    fn save_state(&self, w: &mut StateWriter<'_>) -> Result<()> {
        w.put_str("metric", self.metric.name())?;
        w.put_usize("dim", self.pq.dim())?;
        w.put_usize("m", self.pq.m())?;
        w.put_usize("bbs", self.layout.bbs())?;
        w.put_usize("lut_max", usize::from(self.lut_max))?;
        w.scope("pq", |w| Codec::save_state(&self.pq, w))?;
        w.put_usize("ntotal", self.ntotal)?;
        w.put_bytes("codes", &self.codes)
    }

    /// Replaces the quantizer and every code; the index is unchanged on error.
    fn load_state(&mut self, r: &mut StateReader) -> Result<()> {
        let metric = r.get_str("metric")?;
        if metric != self.metric.name() {
            return Err(r.error(
                "metric",
                format!("`{metric}`, but the index uses `{}`", self.metric.name()),
            ));
        }
        expect_usize(r, "dim", self.pq.dim(), "the index")?;
        expect_usize(r, "m", self.pq.m(), "the index")?;
        expect_usize(r, "bbs", self.layout.bbs(), "the index")?;
        let lut_max = r.get_usize("lut_max", 255)?;
        if ![63, 127, 255].contains(&lut_max) {
            return Err(r.error("lut_max", format!("{lut_max} is not 63, 127 or 255")));
        }
        let mut pq = self.pq.clone();
        r.scope("pq", |r| Codec::load_state(&mut pq, r))?;
        if pq.nbits() != 4 || pq.m() != self.pq.m() || pq.dim() != self.pq.dim() {
            return Err(r.error("pq", "not the index's 4-bit quantizer"));
        }
        let ntotal = r.get_usize("ntotal", usize::MAX / 2 / self.layout.m2().max(1))?;
        let codes = r.get_bytes("codes")?;
        if codes.len() != self.layout.bytes_for(ntotal) {
            return Err(r.error(
                "codes",
                format!(
                    "{} bytes, expected {} for {ntotal} vectors",
                    codes.len(),
                    self.layout.bytes_for(ntotal)
                ),
            ));
        }
        if ntotal > 0 && !pq.is_trained() {
            return Err(r.error("codes", "codes stored with an untrained quantizer"));
        }
        self.lut_max = lut_max as u8;
        self.pq = pq;
        self.codes = codes;
        self.ntotal = ntotal;
        Ok(())
    }

    fn bytes_per_vector(&self) -> f64 {
        self.layout.m2() as f64 / 2.0
    }

    /// `lut_bits` (6, 7 or 8; default 7): the precision of the quantised tables. Fewer
    /// bits scan faster (byte sums of more sub-quantizers before widening) but report
    /// more candidates to score exactly; results are the same.
    fn set_build_param(&mut self, name: &str, value: &str) -> Result<()> {
        match name {
            "lut_bits" => {
                self.lut_max = fastscan::lut_max_for_bits(value)?;
                Ok(())
            }
            _ => Err(Error::invalid_param(
                name,
                format!(
                    "not a build parameter of {} (it has: lut_bits)",
                    self.describe()
                ),
            )),
        }
    }

    fn as_codec(&self) -> Option<&dyn Codec> {
        Some(&self.pq)
    }
}

impl IndexPQFastScan {
    /// Vector `i`'s code in the product quantizer's own (bit-packed) format.
    fn standard_code(&self, i: usize) -> Vec<u8> {
        let m = self.pq.m();
        let mut nib = vec![0u8; m];
        self.layout.read_code(&self.codes, i, &mut nib);
        let ids: Vec<u32> = nib.iter().map(|&c| u32::from(c)).collect();
        let mut code = vec![0u8; self.pq.code_size()];
        self.pq.pack_code(&ids, &mut code);
        code
    }
}
