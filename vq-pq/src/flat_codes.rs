//! Exhaustive search over encoded vectors (Faiss's `IndexFlatCodes`: `IndexPQ`,
//! `IndexScalarQuantizer`).

use rayon::prelude::*;
use vq_core::persist::{StateReader, StateWriter};
use vq_core::topk::TopK;
use vq_core::{
    AdcCodec, CodeDistance, Codec, Error, IdFilter, Index, Label, Metric, RangeSearchResults,
    Result, SearchParams, SearchResults, VectorsRef, check_range_search, check_search,
};

use crate::pq::ProductQuantizer;
use crate::sq::ScalarQuantizer;
use crate::state::expect_usize;

/// Queries scored together against one block of codes (their tables stay in cache).
const QUERY_CHUNK: usize = 8;
/// Bytes of codes per block: small enough for L1/L2 while the chunk's queries scan it.
const BLOCK_BYTES: usize = 32 * 1024;

/// An index storing one code per vector and scanning all of them at search time.
///
/// Ids are sequential (`0..len()`); [`Index::remove_ids`] shifts later ids down, as
/// Faiss does (wrap in `IndexIDMap` for stable ids). Search scores blocks of codes
/// for several queries at a time with the codec's per-query computers, in parallel
/// over queries (or over the codes when there are few queries).
///
/// ```
/// use vq_core::{Index, Metric, SearchParams, synthetic::SyntheticSpec};
/// use vq_pq::{IndexPQ, ProductQuantizer};
/// let data = SyntheticSpec::new(5_000, 32, 10).generate()?;
/// let mut index = IndexPQ::new(ProductQuantizer::new(32, 8, 8)?, Metric::L2);
/// index.train(data.base.as_ref())?;
/// index.add(data.base.as_ref())?;
/// let res = index.search(data.queries.as_ref(), 5, &SearchParams::default())?;
/// assert_eq!(res.row(0).1.len(), 5);
/// # Ok::<(), vq_core::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct IndexFlatCodes<C> {
    codec: C,
    metric: Metric,
    codes: Vec<u8>,
}

/// Exhaustive search over product-quantization codes (Faiss's `IndexPQ`).
pub type IndexPQ = IndexFlatCodes<ProductQuantizer>;

/// Exhaustive search over scalar-quantization codes (Faiss's `IndexScalarQuantizer`).
pub type IndexScalarQuantizer = IndexFlatCodes<ScalarQuantizer>;

impl<C: AdcCodec + Clone + 'static> IndexFlatCodes<C> {
    /// An empty index over `codec` (trained or not) for `metric`.
    pub fn new(codec: C, metric: Metric) -> IndexFlatCodes<C> {
        IndexFlatCodes {
            codec,
            metric,
            codes: Vec::new(),
        }
    }

    /// The codec.
    pub fn codec(&self) -> &C {
        &self.codec
    }

    /// Mutable access to the codec (e.g. to set training parameters before `train`).
    ///
    /// # Errors
    /// [`Error::NotSupported`] once vectors were added: changing the codec would
    /// invalidate their codes.
    pub fn codec_mut(&mut self) -> Result<&mut C> {
        if !self.codes.is_empty() {
            return Err(Error::not_supported(
                "codec_mut on a non-empty index",
                self.describe(),
            ));
        }
        Ok(&mut self.codec)
    }

    /// The stored codes, `len() × code_size()` bytes.
    pub fn codes(&self) -> &[u8] {
        &self.codes
    }

    /// Appends already-encoded vectors.
    ///
    /// # Errors
    /// Not trained, or not a whole number of codes.
    pub fn add_codes(&mut self, codes: &[u8]) -> Result<()> {
        self.check_trained()?;
        let cs = self.codec.code_size();
        if !codes.len().is_multiple_of(cs) {
            return Err(Error::invalid_param(
                "codes",
                format!("{} bytes are not whole codes of {cs} bytes", codes.len()),
            ));
        }
        self.codes.extend_from_slice(codes);
        Ok(())
    }

    fn check_trained(&self) -> Result<()> {
        if self.codec.is_trained() {
            Ok(())
        } else {
            Err(Error::NotTrained {
                what: self.describe(),
            })
        }
    }

    fn ntotal(&self) -> usize {
        self.codes.len() / self.codec.code_size().max(1)
    }

    /// Scores the codes of `range` for every query of `queries` into `tops`.
    fn scan(
        &self,
        queries: VectorsRef<'_>,
        range: std::ops::Range<usize>,
        filter: Option<&dyn IdFilter>,
        tops: &mut [TopK],
    ) -> Result<()> {
        let cs = self.codec.code_size();
        let block = (BLOCK_BYTES / cs).clamp(16, 4096);
        let mut comps = self.codec.query_computers(queries, self.metric)?;
        let mut buf = vec![0f32; block];
        let ip = self.metric == Metric::InnerProduct;
        let mut b0 = range.start;
        while b0 < range.end {
            let nb = block.min(range.end - b0);
            let codes = &self.codes[b0 * cs..(b0 + nb) * cs];
            for (comp, top) in comps.iter_mut().zip(tops.iter_mut()) {
                comp.distances(codes, &mut buf[..nb]);
                push_block(&buf[..nb], b0, ip, filter, top);
            }
            b0 += nb;
        }
        Ok(())
    }
}

#[inline]
fn push_block(dist: &[f32], base: usize, ip: bool, filter: Option<&dyn IdFilter>, top: &mut TopK) {
    let mut thr = top.threshold();
    let (groups, _) = dist.as_chunks::<16>();
    let tail0 = groups.len() * 16;
    for (g, grp) in groups.iter().enumerate() {
        // Branch-free test of a whole group first: most groups hold no candidate.
        let hit = grp
            .iter()
            .fold(false, |a, &v| a | ((if ip { -v } else { v }) <= thr));
        if hit {
            push_range(grp, base + 16 * g, ip, filter, top, &mut thr);
        }
    }
    push_range(&dist[tail0..], base + tail0, ip, filter, top, &mut thr);
}

#[inline]
fn push_range(
    dist: &[f32],
    base: usize,
    ip: bool,
    filter: Option<&dyn IdFilter>,
    top: &mut TopK,
    thr: &mut f32,
) {
    for (j, &v) in dist.iter().enumerate() {
        let key = if ip { -v } else { v };
        if key <= *thr {
            let id = (base + j) as Label;
            if filter.is_none_or(|f| f.is_member(id)) {
                top.push(key, id);
                *thr = top.threshold();
            }
        }
    }
}

impl<C: AdcCodec + Clone + 'static> Index for IndexFlatCodes<C> {
    fn dim(&self) -> usize {
        self.codec.dim()
    }

    fn metric(&self) -> Metric {
        self.metric
    }

    fn len(&self) -> usize {
        self.ntotal()
    }

    fn describe(&self) -> String {
        format!(
            "IndexFlatCodes(d={}, {} bytes/code, {}, {:?})",
            self.codec.dim(),
            self.codec.code_size(),
            self.metric,
            std::any::type_name::<C>()
                .rsplit("::")
                .next()
                .unwrap_or("codec")
        )
    }

    fn is_trained(&self) -> bool {
        self.codec.is_trained()
    }

    fn train(&mut self, x: VectorsRef<'_>) -> Result<()> {
        if !self.codes.is_empty() {
            return Err(Error::not_supported(
                "train on a non-empty index",
                self.describe(),
            ));
        }
        self.codec.train(x)
    }

    fn add(&mut self, x: VectorsRef<'_>) -> Result<()> {
        self.check_trained()?;
        x.check_dim(self.dim())?;
        // The codec checks for non-finite values while encoding.
        let cs = self.codec.code_size();
        let old = self.codes.len();
        self.codes.resize(old + x.len() * cs, 0);
        if let Err(e) = self.codec.encode_into(x, &mut self.codes[old..]) {
            self.codes.truncate(old);
            return Err(e);
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
        self.check_trained()?;
        check_search(self, queries, k)?;
        let nq = queries.len();
        let n = self.ntotal();
        let filter = params.selector;
        out.reset(nq, k, self.metric);
        let threads = rayon::current_num_threads().max(1);
        if nq >= 2 * threads {
            let chunk = QUERY_CHUNK.min(nq.div_ceil(2 * threads)).max(1);
            let (dist, labels) = out.parts_mut();
            dist.par_chunks_mut(chunk * k)
                .zip(labels.par_chunks_mut(chunk * k))
                .enumerate()
                .try_for_each(|(ci, (dc, lc))| -> Result<()> {
                    let q0 = ci * chunk;
                    let qn = dc.len() / k;
                    let qs = queries.slice(q0..q0 + qn);
                    let mut tops: Vec<TopK> = (0..qn).map(|_| TopK::new(k)).collect();
                    self.scan(qs, 0..n, filter, &mut tops)?;
                    for (i, t) in tops.iter().enumerate() {
                        t.write_sorted(
                            self.metric,
                            &mut dc[i * k..(i + 1) * k],
                            &mut lc[i * k..(i + 1) * k],
                        );
                    }
                    Ok(())
                })?;
        } else {
            // Few queries: split the codes instead and merge.
            let parts = (4 * threads).min(n.div_ceil(1024)).max(1);
            let per = n.div_ceil(parts);
            let partial: Vec<Vec<TopK>> = (0..parts)
                .into_par_iter()
                .map(|p| -> Result<Vec<TopK>> {
                    let r = (p * per).min(n)..((p + 1) * per).min(n);
                    let mut tops: Vec<TopK> = (0..nq).map(|_| TopK::new(k)).collect();
                    self.scan(queries, r, filter, &mut tops)?;
                    Ok(tops)
                })
                .collect::<Result<_>>()?;
            let (dist, labels) = out.parts_mut();
            for qi in 0..nq {
                let mut top = TopK::new(k);
                for part in &partial {
                    top.merge(&part[qi]);
                }
                top.write_sorted(
                    self.metric,
                    &mut dist[qi * k..(qi + 1) * k],
                    &mut labels[qi * k..(qi + 1) * k],
                );
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
        self.check_trained()?;
        check_range_search(self, queries, radius)?;
        let cs = self.codec.code_size();
        let n = self.ntotal();
        let filter = params.selector;
        let metric = self.metric;
        let lists = queries
            .as_slice()
            .par_chunks(self.dim())
            .map(|q| -> Result<Vec<(f32, Label)>> {
                let mut comp = self.codec.query_computer(q, metric)?;
                let mut hits = Vec::new();
                let block = 1024;
                let mut buf = vec![0f32; block];
                let mut b0 = 0;
                while b0 < n {
                    let nb = block.min(n - b0);
                    comp.distances(&self.codes[b0 * cs..(b0 + nb) * cs], &mut buf[..nb]);
                    for (j, &v) in buf[..nb].iter().enumerate() {
                        let inside = match metric {
                            Metric::L2 => v < radius,
                            Metric::InnerProduct => v > radius,
                        };
                        let id = (b0 + j) as Label;
                        if inside && filter.is_none_or(|f| f.is_member(id)) {
                            hits.push((v, id));
                        }
                    }
                    b0 += nb;
                }
                Ok(hits)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RangeSearchResults::from_lists(lists, metric))
    }

    fn reset(&mut self) {
        self.codes.clear();
    }

    /// Sections: `metric` (`"l2"` or `"ip"`), `dim` and `code_size` (all checked on
    /// load), the codec's own sections under `codec/`, `ntotal` and `codes`
    /// (`ntotal × code_size` bytes).
    fn save_state(&self, w: &mut StateWriter<'_>) -> Result<()> {
        w.put_str("metric", self.metric.name())?;
        w.put_usize("dim", self.codec.dim())?;
        w.put_usize("code_size", self.codec.code_size())?;
        w.scope("codec", |w| self.codec.save_state(w))?;
        w.put_usize("ntotal", self.ntotal())?;
        w.put_bytes("codes", &self.codes)
    }

    /// Replaces the codec's learnt state and every stored code; the index is unchanged
    /// on error.
    fn load_state(&mut self, r: &mut StateReader) -> Result<()> {
        let metric = r.get_str("metric")?;
        if metric != self.metric.name() {
            return Err(r.error(
                "metric",
                format!("`{metric}`, but the index uses `{}`", self.metric.name()),
            ));
        }
        expect_usize(r, "dim", self.codec.dim(), "the index")?;
        expect_usize(r, "code_size", self.codec.code_size(), "the index")?;
        let mut codec = self.codec.clone();
        r.scope("codec", |r| codec.load_state(r))?;
        let cs = codec.code_size();
        if cs != self.codec.code_size() || cs == 0 {
            return Err(r.error("codec", format!("a code size of {cs} bytes after loading")));
        }
        let ntotal = r.get_usize("ntotal", usize::MAX / cs)?;
        let codes = r.get_bytes("codes")?;
        if codes.len() != ntotal * cs {
            return Err(r.error(
                "codes",
                format!(
                    "{} bytes, expected {ntotal} codes of {cs} bytes",
                    codes.len()
                ),
            ));
        }
        if ntotal > 0 && !codec.is_trained() {
            return Err(r.error("codes", "codes stored with an untrained codec"));
        }
        self.codec = codec;
        self.codes = codes;
        Ok(())
    }

    fn reconstruct_into(&self, id: Label, out: &mut [f32]) -> Result<()> {
        let n = self.ntotal();
        if id < 0 || id as usize >= n {
            return Err(Error::IdNotFound { id });
        }
        let cs = self.codec.code_size();
        let i = id as usize;
        if out.len() != self.dim() {
            return Err(Error::DimensionMismatch {
                expected: self.dim(),
                got: out.len(),
            });
        }
        self.codec
            .decode_into(&self.codes[i * cs..(i + 1) * cs], out)
    }

    fn remove_ids(&mut self, selector: &dyn IdFilter) -> Result<usize> {
        let n = self.ntotal();
        let cs = self.codec.code_size();
        let mut w = 0;
        for r in 0..n {
            if selector.is_member(r as Label) {
                continue;
            }
            if w != r {
                self.codes.copy_within(r * cs..(r + 1) * cs, w * cs);
            }
            w += 1;
        }
        self.codes.truncate(w * cs);
        Ok(n - w)
    }

    fn bytes_per_vector(&self) -> f64 {
        self.codec.code_size() as f64
    }

    fn as_codec(&self) -> Option<&dyn Codec> {
        Some(&self.codec)
    }
}
