//! How an IVF index encodes the vectors of its lists and scores a query against them:
//! raw floats (IVF-Flat), any code-domain codec on residuals (IVF-SQ), and product
//! quantization with precomputed tables (IVF-PQ).

use std::fmt::Debug;
use std::sync::OnceLock;

use vq_core::distance::Kernels;
use vq_core::persist::{StateReader, StateWriter};
use vq_core::{AdcCodec, CodeDistance, Codec, Error, Metric, Result, VectorsRef};
use vq_pq::{PqDistanceTable, ProductQuantizer};

use crate::quantizer::CoarseQuantizer;

/// Scores one query against the codes of the lists it probes.
pub trait ListScanner {
    /// Prepares for the codes of `list`, whose centroid is at `coarse_dis` from the
    /// query (the coarse quantizer's distance: squared L2 or inner product).
    ///
    /// # Errors
    /// A centroid the quantizer cannot provide.
    fn set_list(&mut self, list: usize, coarse_dis: f32) -> Result<()>;

    /// Distances from the query to `out.len()` consecutive codes of the current list.
    ///
    /// # Errors
    /// Internal codec errors (not trained, wrong sizes).
    fn scan(&mut self, codes: &[u8], out: &mut [f32]) -> Result<()>;
}

/// The encoding of an IVF index's entries (Faiss's per-class `encode_vectors` and
/// `InvertedListScanner`).
pub trait IvfEncoding: Debug + Clone + Send + Sync + 'static {
    /// The per-query scanner.
    type Scanner<'a>: ListScanner
    where
        Self: 'a;

    /// Input dimension.
    fn dim(&self) -> usize;

    /// Bytes per code.
    fn code_size(&self) -> usize;

    /// `true` when codes hold `x − centroid` (residuals) rather than `x`.
    fn by_residual(&self) -> bool;

    /// `true` once trained (or when no training is needed).
    fn is_trained(&self) -> bool;

    /// At most this many (sampled) vectors are used for training, as Faiss does for
    /// product quantizers; `None` = all.
    fn max_train_points(&self) -> Option<usize> {
        None
    }

    /// Trains on vectors (residuals when [`IvfEncoding::by_residual`]).
    ///
    /// # Errors
    /// The codec's training errors.
    fn train(&mut self, x: VectorsRef<'_>) -> Result<()>;

    /// Encodes vectors (residuals when by residual).
    ///
    /// # Errors
    /// The codec's errors.
    fn encode_into(&self, x: VectorsRef<'_>, codes: &mut [u8]) -> Result<()>;

    /// Decodes codes (to residuals when by residual).
    ///
    /// # Errors
    /// The codec's errors.
    fn decode_into(&self, codes: &[u8], out: &mut [f32]) -> Result<()>;

    /// Called once the quantizer is trained (and after loading): precomputes what
    /// search needs per list (IVF-PQ's tables). The default does nothing.
    ///
    /// # Errors
    /// Centroids the quantizer cannot provide.
    fn prepare(&mut self, quantizer: &dyn CoarseQuantizer, metric: Metric) -> Result<()> {
        let _ = (quantizer, metric);
        Ok(())
    }

    /// A scanner for `query`.
    ///
    /// # Errors
    /// Not trained, dimension mismatch.
    fn scanner<'a>(
        &'a self,
        quantizer: &'a dyn CoarseQuantizer,
        query: &'a [f32],
        metric: Metric,
    ) -> Result<Self::Scanner<'a>>;

    /// A short description, e.g. `"Flat"`, `"SQ8"`, `"PQ16"`.
    fn describe(&self) -> String;

    /// Seeds the encoding's own training (e.g. PQ's k-means); encodings whose training
    /// is deterministic keep the default, which does nothing.
    ///
    /// # Errors
    /// Parameters the encoding rejects.
    fn set_seed(&mut self, seed: u64) -> Result<()> {
        let _ = seed;
        Ok(())
    }

    /// Writes the encoding's state (the codec's trained data and flags) as sections
    /// (see [`vq_core::Index::save_state`]; the IVF index writes them under
    /// `encoding/`).
    ///
    /// # Errors
    /// [`Error::NotSupported`] by default; the codec's and the writer's errors.
    fn save_state(&self, w: &mut StateWriter<'_>) -> Result<()> {
        let _ = w;
        Err(Error::not_supported("save", self.describe()))
    }

    /// Restores what [`IvfEncoding::save_state`] wrote into an encoding of the same
    /// shape. Derived data (IVF-PQ's precomputed tables) is rebuilt by the next
    /// [`IvfEncoding::prepare`], which the index calls after loading.
    ///
    /// # Errors
    /// [`Error::NotSupported`] by default; [`Error::Format`] for missing, corrupt or
    /// mismatched sections.
    fn load_state(&mut self, r: &mut StateReader) -> Result<()> {
        let _ = r;
        Err(Error::not_supported("load", self.describe()))
    }

    /// The largest block of queries a batch search should scan in list order (each
    /// list read once for all the queries of the block that probe it, rather than
    /// query by query), or 0 for query order. List order pays when a list's bytes
    /// (codes, or per-list tables) dominate the scan, so that memory traffic bounds it;
    /// the block is limited so its scanners stay a few MiB. The default is 0.
    fn list_major_block(&self, metric: Metric) -> usize {
        let _ = metric;
        0
    }
}

/// Scanner state a list-major block may hold in all (bytes).
const LIST_MAJOR_STATE_BYTES: usize = 4 << 20;

/// Block size for scanners of `scanner_bytes` each: at most 512 queries, at least 16.
fn block_for(scanner_bytes: usize) -> usize {
    (LIST_MAJOR_STATE_BYTES / scanner_bytes.max(1)).clamp(16, 512)
}

// ------------------------------------------------------------------------- Flat

/// Raw `f32` vectors in the lists (IVF-Flat): exact distances to the stored vectors.
#[derive(Clone, Debug)]
pub struct IvfFlat {
    d: usize,
}

impl IvfFlat {
    /// For vectors of dimension `d`.
    ///
    /// # Errors
    /// `d == 0`.
    pub fn new(d: usize) -> Result<IvfFlat> {
        if d == 0 {
            return Err(Error::invalid_param(
                "d",
                "the dimension must be at least 1",
            ));
        }
        Ok(IvfFlat { d })
    }
}

/// Scanner of [`IvfFlat`].
#[derive(Debug)]
pub struct FlatScanner<'a> {
    query: &'a [f32],
    metric: Metric,
    kernels: &'static Kernels,
    scratch: Vec<f32>,
}

impl ListScanner for FlatScanner<'_> {
    fn set_list(&mut self, _list: usize, _coarse_dis: f32) -> Result<()> {
        Ok(())
    }

    fn scan(&mut self, codes: &[u8], out: &mut [f32]) -> Result<()> {
        let d = self.query.len();
        let codes = &codes[..out.len() * 4 * d];
        match bytemuck::try_cast_slice::<u8, f32>(codes) {
            Ok(ys) if cfg!(target_endian = "little") => {
                self.kernels.distance_ny(self.metric, self.query, ys, out);
            }
            // Codes not 4-byte aligned (lists read in place from a Faiss file): one
            // bulk copy into aligned scratch, then the same kernel.
            _ if cfg!(target_endian = "little") => {
                self.scratch.resize(codes.len() / 4, 0.0);
                bytemuck::cast_slice_mut::<f32, u8>(&mut self.scratch).copy_from_slice(codes);
                self.kernels
                    .distance_ny(self.metric, self.query, &self.scratch, out);
            }
            _ => {
                self.scratch.clear();
                self.scratch.extend(
                    codes
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                );
                self.kernels
                    .distance_ny(self.metric, self.query, &self.scratch, out);
            }
        }
        Ok(())
    }
}

impl IvfEncoding for IvfFlat {
    type Scanner<'a> = FlatScanner<'a>;

    fn dim(&self) -> usize {
        self.d
    }

    fn code_size(&self) -> usize {
        4 * self.d
    }

    fn by_residual(&self) -> bool {
        false
    }

    fn is_trained(&self) -> bool {
        true
    }

    fn train(&mut self, _x: VectorsRef<'_>) -> Result<()> {
        Ok(())
    }

    fn encode_into(&self, x: VectorsRef<'_>, codes: &mut [u8]) -> Result<()> {
        vq_core::FlatCodec::new(self.d)?.encode_into(x, codes)
    }

    fn decode_into(&self, codes: &[u8], out: &mut [f32]) -> Result<()> {
        vq_core::FlatCodec::new(self.d)?.decode_into(codes, out)
    }

    fn scanner<'a>(
        &'a self,
        _quantizer: &'a dyn CoarseQuantizer,
        query: &'a [f32],
        metric: Metric,
    ) -> Result<FlatScanner<'a>> {
        check_query(self.d, query)?;
        Ok(FlatScanner {
            query,
            metric,
            kernels: Kernels::get(),
            scratch: Vec::new(),
        })
    }

    fn describe(&self) -> String {
        "Flat".into()
    }

    fn save_state(&self, w: &mut StateWriter<'_>) -> Result<()> {
        w.put_usize("dim", self.d)
    }

    fn load_state(&mut self, r: &mut StateReader) -> Result<()> {
        let d = r.get_usize("dim", usize::MAX)?;
        if d != self.d {
            return Err(r.error("dim", format!("{d}, the encoding has {}", self.d)));
        }
        Ok(())
    }

    /// Raw vectors: scans are bound by memory traffic.
    fn list_major_block(&self, _metric: Metric) -> usize {
        block_for(4 * self.d)
    }
}

/// `out = query − centroid(list)`.
fn residual_into(
    quantizer: &dyn CoarseQuantizer,
    list: usize,
    query: &[f32],
    out: &mut [f32],
) -> Result<()> {
    quantizer.centroid_into(list, out)?;
    for (r, &q) in out.iter_mut().zip(query) {
        *r = q - *r;
    }
    Ok(())
}

fn check_query(d: usize, q: &[f32]) -> Result<()> {
    if q.len() == d {
        Ok(())
    } else {
        Err(Error::DimensionMismatch {
            expected: d,
            got: q.len(),
        })
    }
}

// ------------------------------------------------------------- any ADC codec

/// Any code-domain codec (e.g. a `ScalarQuantizer`: IVF-SQ), on residuals or not.
///
/// With residuals and L2, each list's scan compares the residual query `q − c` with
/// the codes; with inner product it adds `⟨q, c⟩` (the coarse distance) to `⟨q, r⟩`,
/// as Faiss's `IndexIVFScalarQuantizer` does.
#[derive(Clone, Debug)]
pub struct IvfCodec<C> {
    codec: C,
    by_residual: bool,
}

impl<C> IvfCodec<C> {
    /// Wraps `codec`; `by_residual` as Faiss's default (`true`) for IVF-SQ.
    pub fn new(codec: C, by_residual: bool) -> IvfCodec<C> {
        IvfCodec { codec, by_residual }
    }

    /// The codec.
    pub fn codec(&self) -> &C {
        &self.codec
    }
}

/// Scanner of [`IvfCodec`].
///
/// The codec's computer is built once per query and re-aimed at each list's residual
/// ([`CodeDistance::retarget`]); a computer that cannot be re-aimed is rebuilt per block.
pub struct CodecScanner<'a, C: AdcCodec> {
    enc: &'a IvfCodec<C>,
    quantizer: &'a dyn CoarseQuantizer,
    query: &'a [f32],
    metric: Metric,
    resid: Vec<f32>,
    bias: f32,
    /// Aimed at the current list's query (the residual for L2); `None` once a
    /// computer refused to be re-aimed.
    comp: Option<C::Computer<'a>>,
}

impl<'a, C: AdcCodec + 'a> std::fmt::Debug for CodecScanner<'a, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodecScanner")
            .field("metric", &self.metric)
            .field("by_residual", &self.enc.by_residual)
            .field("reusable_computer", &self.comp.is_some())
            .finish_non_exhaustive()
    }
}

impl<'a, C: AdcCodec + 'a> ListScanner for CodecScanner<'a, C> {
    fn set_list(&mut self, list: usize, coarse_dis: f32) -> Result<()> {
        if !self.enc.by_residual {
            return Ok(());
        }
        match self.metric {
            Metric::L2 => {
                residual_into(self.quantizer, list, self.query, &mut self.resid)?;
                if let Some(c) = &mut self.comp
                    && !c.retarget(&self.resid)
                {
                    self.comp = None;
                }
            }
            Metric::InnerProduct => self.bias = coarse_dis,
        }
        Ok(())
    }

    fn scan(&mut self, codes: &[u8], out: &mut [f32]) -> Result<()> {
        if let Some(c) = &mut self.comp {
            c.distances(codes, out);
        } else {
            let q = if self.enc.by_residual && self.metric == Metric::L2 {
                &self.resid[..]
            } else {
                self.query
            };
            self.enc
                .codec
                .query_computer(q, self.metric)?
                .distances(codes, out);
        }
        if self.bias != 0.0 {
            out.iter_mut().for_each(|o| *o += self.bias);
        }
        Ok(())
    }
}

impl<C: AdcCodec + Clone + 'static> IvfEncoding for IvfCodec<C> {
    type Scanner<'a> = CodecScanner<'a, C>;

    fn dim(&self) -> usize {
        self.codec.dim()
    }

    fn code_size(&self) -> usize {
        self.codec.code_size()
    }

    fn by_residual(&self) -> bool {
        self.by_residual
    }

    fn is_trained(&self) -> bool {
        self.codec.is_trained()
    }

    fn train(&mut self, x: VectorsRef<'_>) -> Result<()> {
        self.codec.train(x)
    }

    fn encode_into(&self, x: VectorsRef<'_>, codes: &mut [u8]) -> Result<()> {
        self.codec.encode_into(x, codes)
    }

    fn decode_into(&self, codes: &[u8], out: &mut [f32]) -> Result<()> {
        self.codec.decode_into(codes, out)
    }

    fn scanner<'a>(
        &'a self,
        quantizer: &'a dyn CoarseQuantizer,
        query: &'a [f32],
        metric: Metric,
    ) -> Result<CodecScanner<'a, C>> {
        check_query(self.codec.dim(), query)?;
        Ok(CodecScanner {
            enc: self,
            quantizer,
            query,
            metric,
            resid: vec![0.0; query.len()],
            bias: 0.0,
            comp: Some(self.codec.query_computer(query, metric)?),
        })
    }

    fn describe(&self) -> String {
        let name = std::any::type_name::<C>()
            .rsplit("::")
            .next()
            .unwrap_or("codec");
        format!(
            "{name}{}",
            if self.by_residual { " (residual)" } else { "" }
        )
    }

    fn save_state(&self, w: &mut StateWriter<'_>) -> Result<()> {
        w.put_bool("by_residual", self.by_residual)?;
        w.scope("codec", |w| self.codec.save_state(w))
    }

    fn load_state(&mut self, r: &mut StateReader) -> Result<()> {
        let by_residual = r.get_bool("by_residual")?;
        r.scope("codec", |r| self.codec.load_state(r))?;
        self.by_residual = by_residual;
        Ok(())
    }

    /// Codes of 64 bytes or more (e.g. SQ8 from 64 dimensions) make scans memory-bound;
    /// a scanner holds the residual and a few per-dimension vectors.
    fn list_major_block(&self, _metric: Metric) -> usize {
        if self.codec.code_size() >= 64 {
            block_for(24 * self.codec.dim())
        } else {
            0
        }
    }
}

// ------------------------------------------------------------------------- PQ

/// Largest precomputed table (bytes) built automatically, as Faiss's
/// `precomputed_table_max_bytes`.
pub const PRECOMPUTED_TABLE_MAX_BYTES: usize = 2 << 30;

/// The query-independent part of IVF-PQ's L2 distances by list.
#[derive(Clone, Debug, Default)]
enum Precomputed {
    /// Not available: residual tables are computed per list.
    #[default]
    None,
    /// `nlist × M × ksub` values `‖y_R‖² + 2⟨y_C, y_R⟩`.
    Full(Vec<f32>),
    /// Multi-index quantizer: one table per half (`2^bits × M/2 × ksub` each).
    Multi { bits: usize, halves: [Vec<f32>; 2] },
}

static NO_TABLE: Precomputed = Precomputed::None;

/// Product-quantization codes in the lists (IVF-PQ), on residuals by default.
///
/// L2 search with residuals uses Faiss's decomposition
/// `‖x − y_C − y_R‖² = ‖x − y_C‖² + (‖y_R‖² + 2⟨y_C, y_R⟩) − 2⟨x, y_R⟩`: the middle
/// term is precomputed per list when the table fits in
/// [`PRECOMPUTED_TABLE_MAX_BYTES`] (compactly, per half, for a multi-index), the last
/// is one table per query, the first comes from the coarse search; so probing a list
/// costs one table addition, not a table computation.
///
/// The table is built by the first search after training or loading (once, shared by
/// all threads), so loading an index — memory-mapped especially — stays near-instant
/// and holds no table until it is searched.
#[derive(Clone, Debug)]
pub struct IvfPq {
    pq: ProductQuantizer,
    by_residual: bool,
    use_precomputed: bool,
    /// `prepare` found a table worth building; the first scanner builds it.
    table_due: bool,
    precomputed: OnceLock<Precomputed>,
}

impl IvfPq {
    /// Wraps `pq` (residual encoding when `by_residual`, Faiss's default).
    pub fn new(pq: ProductQuantizer, by_residual: bool) -> IvfPq {
        IvfPq {
            pq,
            by_residual,
            use_precomputed: true,
            table_due: false,
            precomputed: OnceLock::new(),
        }
    }

    /// The product quantizer.
    pub fn pq(&self) -> &ProductQuantizer {
        &self.pq
    }

    /// Mutable product quantizer (e.g. k-means parameters before training).
    pub fn pq_mut(&mut self) -> &mut ProductQuantizer {
        &mut self.pq
    }

    /// Whether precomputed tables may be used (Faiss's `use_precomputed_table`, on by
    /// default); takes effect at the next `prepare` (training or loading).
    pub fn set_use_precomputed(&mut self, on: bool) {
        self.use_precomputed = on;
        if !on {
            self.table_due = false;
            self.precomputed = OnceLock::new();
        }
    }

    /// `true` when a precomputed table is in use (built, or to be built by the next
    /// search).
    pub fn has_precomputed(&self) -> bool {
        self.table_due && !matches!(self.precomputed.get(), Some(Precomputed::None))
    }

    /// The table, if built.
    fn table(&self) -> &Precomputed {
        self.precomputed.get().unwrap_or(&NO_TABLE)
    }

    /// The table, built now if it is due (one thread builds, the others wait). A build
    /// that fails leaves no table: searches then compute residual tables per list,
    /// which gives the same distances, more slowly.
    fn table_for(&self, quantizer: &dyn CoarseQuantizer) -> &Precomputed {
        if !self.table_due {
            return &NO_TABLE;
        }
        self.precomputed
            .get_or_init(|| self.build_table(quantizer).unwrap_or_default())
    }

    fn build_table(&self, quantizer: &dyn CoarseQuantizer) -> Result<Precomputed> {
        let (m, d) = (self.pq.m(), self.pq.dim());
        let norms = self.centroid_norms();
        if let Some((bits, c0, c1)) = quantizer.multi_index_parts() {
            let h = m / 2;
            return Ok(Precomputed::Multi {
                bits,
                halves: [self.term1(c0, 0, h, &norms)?, self.term1(c1, h, h, &norms)?],
            });
        }
        let nlist = quantizer.nlist();
        let mut cents = vec![0f32; nlist * d];
        for (l, c) in cents.chunks_exact_mut(d).enumerate() {
            quantizer.centroid_into(l, c)?;
        }
        Ok(Precomputed::Full(self.term1(&cents, 0, m, &norms)?))
    }

    /// Squared norms of every sub-centroid, `M × ksub`.
    fn centroid_norms(&self) -> Vec<f32> {
        self.pq
            .centroids()
            .chunks_exact(self.pq.dsub())
            .map(|c| c.iter().map(|v| v * v).sum())
            .collect()
    }

    /// `‖y_R‖² + 2⟨c, y_R⟩` for the sub-quantizers `m0..m0 + nm` and each row `c` of
    /// `cents` (vectors over those sub-spaces only).
    fn term1(&self, cents: &[f32], m0: usize, nm: usize, norms: &[f32]) -> Result<Vec<f32>> {
        let (dsub, ks) = (self.pq.dsub(), self.pq.ksub());
        let dpart = nm * dsub;
        let n = cents.len() / dpart;
        let mut out = vec![0f32; n * nm * ks];
        // A product quantizer over the part, sharing the sub-codebooks, gives the inner
        // products through the batched table code.
        let mut part = ProductQuantizer::new(dpart, nm, self.pq.nbits())?;
        part.set_centroids(&self.pq.centroids()[m0 * ks * dsub..(m0 + nm) * ks * dsub])?;
        let ip =
            part.compute_distance_tables(VectorsRef::new(cents, dpart)?, Metric::InnerProduct)?;
        let nrm = &norms[m0 * ks..(m0 + nm) * ks];
        for (o, t) in out.chunks_exact_mut(nm * ks).zip(ip.chunks_exact(nm * ks)) {
            for ((o, &t), &n) in o.iter_mut().zip(t).zip(nrm) {
                *o = n + 2.0 * t;
            }
        }
        Ok(out)
    }
}

/// Scanner of [`IvfPq`].
#[derive(Debug)]
pub struct PqScanner<'a> {
    enc: &'a IvfPq,
    quantizer: &'a dyn CoarseQuantizer,
    query: &'a [f32],
    metric: Metric,
    /// The table codes are scanned with (bias: the coarse term where it applies).
    table: PqDistanceTable,
    /// The query's `−2⟨x, y_R⟩` with the per-half precomputed tables (IMI); empty
    /// otherwise.
    base: Vec<f32>,
    resid: Vec<f32>,
    /// With the full precomputed table: the current list, while its table
    /// `base + precomputed[list]` is not built yet (short lists are scanned from the
    /// two tables directly).
    pending: Option<usize>,
    /// With the full precomputed table: the query's `−2⟨x, y_R⟩` as a table (bias:
    /// the coarse distance).
    base_table: Option<PqDistanceTable>,
}

/// Codes per `ksub` table entries below which a list is scanned from the two tables
/// (two lookups per sub-quantizer) rather than by first adding them (`M × ksub` adds).
const DIRECT_SCAN_PER_KSUB: usize = 4;

impl ListScanner for PqScanner<'_> {
    fn set_list(&mut self, list: usize, coarse_dis: f32) -> Result<()> {
        let e = self.enc;
        if !e.by_residual {
            return Ok(());
        }
        if self.metric == Metric::InnerProduct {
            self.table.set_bias(coarse_dis);
            return Ok(());
        }
        match e.table() {
            Precomputed::Full(_) => {
                // The table is built on the first scan that needs it.
                self.pending = Some(list);
                self.table.set_bias(coarse_dis);
                if let Some(b) = &mut self.base_table {
                    b.set_bias(coarse_dis);
                }
            }
            Precomputed::Multi { bits, halves } => {
                let half = self.base.len() / 2;
                let idx = [list & ((1 << bits) - 1), list >> bits];
                let t = self.table.table_mut();
                for h in 0..2 {
                    let p = &halves[h][idx[h] * half..(idx[h] + 1) * half];
                    let b = &self.base[h * half..(h + 1) * half];
                    for ((t, &a), &b) in t[h * half..(h + 1) * half].iter_mut().zip(p).zip(b) {
                        *t = a + b;
                    }
                }
                self.table.set_bias(coarse_dis);
            }
            Precomputed::None => {
                residual_into(self.quantizer, list, self.query, &mut self.resid)?;
                e.pq.compute_distance_table(&self.resid, Metric::L2, self.table.table_mut())?;
            }
        }
        Ok(())
    }

    fn scan(&mut self, codes: &[u8], out: &mut [f32]) -> Result<()> {
        if let (Some(list), Some(base), Precomputed::Full(pre)) =
            (self.pending, &self.base_table, self.enc.table())
        {
            let tsize = base.table().len();
            let p = &pre[list * tsize..(list + 1) * tsize];
            if out.len() * DIRECT_SCAN_PER_KSUB < self.enc.pq.ksub() {
                base.scan_plus(p, codes, out);
                return Ok(());
            }
            for ((t, &a), &b) in self.table.table_mut().iter_mut().zip(p).zip(base.table()) {
                *t = a + b;
            }
            self.pending = None;
        }
        self.table.scan(codes, out);
        Ok(())
    }
}

impl IvfEncoding for IvfPq {
    type Scanner<'a> = PqScanner<'a>;

    fn dim(&self) -> usize {
        self.pq.dim()
    }

    fn code_size(&self) -> usize {
        self.pq.code_size()
    }

    fn by_residual(&self) -> bool {
        self.by_residual
    }

    fn is_trained(&self) -> bool {
        self.pq.is_trained()
    }

    fn max_train_points(&self) -> Option<usize> {
        Some(self.pq.kmeans_params().max_points_per_centroid * self.pq.ksub())
    }

    fn train(&mut self, x: VectorsRef<'_>) -> Result<()> {
        self.table_due = false;
        self.precomputed = OnceLock::new();
        self.pq.train(x)
    }

    fn encode_into(&self, x: VectorsRef<'_>, codes: &mut [u8]) -> Result<()> {
        self.pq.encode_into(x, codes)
    }

    fn decode_into(&self, codes: &[u8], out: &mut [f32]) -> Result<()> {
        self.pq.decode_into(codes, out)
    }

    fn prepare(&mut self, quantizer: &dyn CoarseQuantizer, metric: Metric) -> Result<()> {
        self.precomputed = OnceLock::new();
        self.table_due = false;
        if !self.use_precomputed
            || !self.by_residual
            || metric != Metric::L2
            || !self.pq.is_trained()
        {
            return Ok(());
        }
        self.table_due = if let Some((bits, _, _)) = quantizer.multi_index_parts() {
            // Two tables of 2^bits × M/2 × ksub floats, under the same cap.
            let bytes = (1usize << bits.min(40)).saturating_mul(self.pq.m() * self.pq.ksub() * 4);
            self.pq.m().is_multiple_of(2) && bytes <= PRECOMPUTED_TABLE_MAX_BYTES
        } else {
            let nlist = quantizer.nlist();
            let bytes = nlist.saturating_mul(self.pq.m() * self.pq.ksub() * 4);
            nlist > 0 && bytes <= PRECOMPUTED_TABLE_MAX_BYTES
        };
        Ok(())
    }

    fn scanner<'a>(
        &'a self,
        quantizer: &'a dyn CoarseQuantizer,
        query: &'a [f32],
        metric: Metric,
    ) -> Result<PqScanner<'a>> {
        check_query(self.pq.dim(), query)?;
        let tsize = self.pq.m() * self.pq.ksub();
        let mut base = vec![0f32; tsize];
        let pre = if self.by_residual && metric == Metric::L2 {
            self.table_for(quantizer)
        } else {
            &NO_TABLE
        };
        let precomputed_l2 = !matches!(pre, Precomputed::None);
        if precomputed_l2 {
            self.pq
                .compute_distance_table(query, Metric::InnerProduct, &mut base)?;
            base.iter_mut().for_each(|v| *v *= -2.0);
        } else if !(self.by_residual && metric == Metric::L2) {
            // Not by residual, or inner product: one table for every list.
            self.pq.compute_distance_table(query, metric, &mut base)?;
        }
        let (m, nbits) = (self.pq.m(), self.pq.nbits());
        let (table, base, base_table) = if !precomputed_l2 {
            (PqDistanceTable::new(base, m, nbits)?, Vec::new(), None)
        } else if matches!(pre, Precomputed::Full(_)) {
            let empty = PqDistanceTable::new(vec![0.0; tsize], m, nbits)?;
            (
                empty,
                Vec::new(),
                Some(PqDistanceTable::new(base, m, nbits)?),
            )
        } else {
            (
                PqDistanceTable::new(vec![0.0; tsize], m, nbits)?,
                base,
                None,
            )
        };
        Ok(PqScanner {
            enc: self,
            quantizer,
            query,
            metric,
            table,
            base,
            resid: vec![0.0; query.len()],
            pending: None,
            base_table,
        })
    }

    /// The product quantizer (through its [`Codec`] hooks), `by_residual` and
    /// `use_precomputed_table`; the tables themselves are rebuilt on load.
    fn save_state(&self, w: &mut StateWriter<'_>) -> Result<()> {
        w.put_bool("by_residual", self.by_residual)?;
        w.put_bool("use_precomputed", self.use_precomputed)?;
        w.scope("pq", |w| Codec::save_state(&self.pq, w))
    }

    fn load_state(&mut self, r: &mut StateReader) -> Result<()> {
        let by_residual = r.get_bool("by_residual")?;
        let use_precomputed = r.get_bool("use_precomputed")?;
        self.table_due = false;
        self.precomputed = OnceLock::new();
        r.scope("pq", |r| Codec::load_state(&mut self.pq, r))?;
        self.by_residual = by_residual;
        self.use_precomputed = use_precomputed;
        Ok(())
    }

    fn set_seed(&mut self, seed: u64) -> Result<()> {
        let mut p = self.pq.kmeans_params().clone();
        p.seed = seed;
        self.pq.set_kmeans_params(p)
    }

    fn describe(&self) -> String {
        format!(
            "PQ{}x{}{}",
            self.pq.m(),
            self.pq.nbits(),
            if self.by_residual { " (residual)" } else { "" }
        )
    }
}

/// Per-query key tables of an [`IvfPq`] for the fast-scan IVF index: for each probed
/// list, an `M × ksub` table and an offset such that a code's key (squared L2
/// distance, or negated inner product) is `offset + Σ_m table[m][code_m]`.
#[derive(Debug)]
pub(crate) struct ListTables<'a> {
    enc: &'a IvfPq,
    quantizer: &'a dyn CoarseQuantizer,
    query: &'a [f32],
    metric: Metric,
    /// The query's own table: the whole table when shared by every list, `−2⟨x, y_R⟩`
    /// with a precomputed table.
    base: Vec<f32>,
    resid: Vec<f32>,
}

impl<'a> ListTables<'a> {
    pub(crate) fn new(
        enc: &'a IvfPq,
        quantizer: &'a dyn CoarseQuantizer,
        query: &'a [f32],
        metric: Metric,
    ) -> Result<ListTables<'a>> {
        check_query(enc.pq.dim(), query)?;
        let tsize = enc.pq.m() * enc.pq.ksub();
        let mut base = vec![0f32; tsize];
        let l2_residual = enc.by_residual && metric == Metric::L2;
        if !l2_residual {
            enc.pq.compute_distance_table(query, metric, &mut base)?;
            if metric == Metric::InnerProduct {
                base.iter_mut().for_each(|v| *v = -*v);
            }
        } else if !matches!(enc.table_for(quantizer), Precomputed::None) {
            enc.pq
                .compute_distance_table(query, Metric::InnerProduct, &mut base)?;
            base.iter_mut().for_each(|v| *v *= -2.0);
        }
        Ok(ListTables {
            enc,
            quantizer,
            query,
            metric,
            base,
            resid: vec![0.0; query.len()],
        })
    }

    /// `true` when every list uses the same table ([`ListTables::shared_table`]); only
    /// the offset then depends on the list.
    pub(crate) fn is_shared(&self) -> bool {
        !(self.enc.by_residual && self.metric == Metric::L2)
    }

    /// `true` when every list's offset is zero (no residuals): keys of different
    /// lists then compare as their table sums.
    pub(crate) fn offset_is_zero(&self) -> bool {
        !self.enc.by_residual
    }

    /// The table of every list when [`ListTables::is_shared`].
    pub(crate) fn shared_table(&self) -> &[f32] {
        &self.base
    }

    /// The offset of `list`, whose centroid the coarse search scored `coarse_dis`.
    pub(crate) fn offset(&self, coarse_dis: f32) -> f32 {
        match (self.enc.by_residual, self.metric) {
            (false, _) => 0.0,
            (true, Metric::InnerProduct) => -coarse_dis,
            (true, _) => match self.enc.table() {
                Precomputed::None => 0.0,
                _ => coarse_dis,
            },
        }
    }

    /// Writes the table of `list` into `out` (`M × ksub`) and returns its offset.
    pub(crate) fn table(&mut self, list: usize, coarse_dis: f32, out: &mut [f32]) -> Result<f32> {
        if self.is_shared() {
            out.copy_from_slice(&self.base);
            return Ok(self.offset(coarse_dis));
        }
        match self.enc.table() {
            Precomputed::Full(pre) => {
                let t = self.base.len();
                let p = &pre[list * t..(list + 1) * t];
                for ((o, &a), &b) in out.iter_mut().zip(p).zip(&self.base) {
                    *o = a + b;
                }
            }
            Precomputed::Multi { bits, halves } => {
                let half = self.base.len() / 2;
                let idx = [list & ((1 << bits) - 1), list >> bits];
                for h in 0..2 {
                    let p = &halves[h][idx[h] * half..(idx[h] + 1) * half];
                    let b = &self.base[h * half..(h + 1) * half];
                    for ((o, &a), &b) in out[h * half..(h + 1) * half].iter_mut().zip(p).zip(b) {
                        *o = a + b;
                    }
                }
            }
            Precomputed::None => {
                residual_into(self.quantizer, list, self.query, &mut self.resid)?;
                self.enc
                    .pq
                    .compute_distance_table(&self.resid, Metric::L2, out)?;
            }
        }
        Ok(self.offset(coarse_dis))
    }
}
