//! Product quantization: a vector is cut into `M` sub-vectors and each is replaced by
//! the index of its nearest centroid in that sub-space's codebook of `2^nbits`
//! centroids (Faiss's `ProductQuantizer`).

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;
use vq_core::persist::{StateReader, StateWriter};
use vq_core::{
    AdcCodec, CodeDistance, Codec, Error, Index, IndexFlat, Label, Metric, Result, SearchParams,
    SearchResults, VectorsRef, check_search,
};
use vq_kmeans::{KMeans, KMeansParams, TrainOptions};

use crate::bits::{BitReader, BitWriter, packed_len};
use crate::simd;
use crate::state::{expect_usize, get_finite_f32s};

/// Vectors encoded per parallel task.
const ENCODE_BLOCK: usize = 1024;

/// A product quantizer (Faiss's `ProductQuantizer`).
///
/// * `d` is split into `M` sub-vectors of `dsub = d / M` components;
/// * each sub-space has `ksub = 2^nbits` centroids (`nbits` 1..=16), learnt by k-means
///   with Faiss's defaults (25 iterations, at most 256 points per centroid, seed 1234);
/// * codes are `ceil(M·nbits / 8)` bytes, bit-packed least significant bit first (one
///   byte per sub-vector for 8 bits, little-endian `u16` for 16 bits).
///
/// Search uses asymmetric distance computation: per query an `M × ksub` table of
/// sub-distances ([`PqDistanceTable`]), then one look-up per sub-vector and code.
///
/// ```
/// use vq_core::{Codec, Metric, VectorsRef, synthetic::SyntheticSpec};
/// use vq_pq::ProductQuantizer;
/// let data = SyntheticSpec::new(2_000, 16, 1).generate()?;
/// let mut pq = ProductQuantizer::new(16, 4, 6)?;
/// pq.train(data.base.as_ref())?;
/// let x = data.base.as_ref().slice(0..1);
/// let code = pq.encode(x)?;
/// assert_eq!(code.len(), 3); // 4 × 6 bits
/// let table = pq.distance_table(x.row(0), Metric::L2)?;
/// let decoded = pq.decode(&code)?;
/// let exact: f32 = x.row(0).iter().zip(&decoded).map(|(a, b)| (a - b) * (a - b)).sum();
/// assert!((table.distance(&code) - exact).abs() < 1e-3);
/// # Ok::<(), vq_core::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct ProductQuantizer {
    d: usize,
    m: usize,
    nbits: usize,
    dsub: usize,
    ksub: usize,
    /// `M × ksub × dsub`; empty until trained.
    centroids: Vec<f32>,
    /// Per sub-space, the codebook transposed (`dsub × ksub`), for table kernels.
    centroids_t: Vec<f32>,
    /// `M × ksub` squared norms of the centroids.
    norms: Vec<f32>,
    cp: KMeansParams,
    sdc: Vec<f32>,
    warnings: Vec<String>,
}

impl ProductQuantizer {
    /// An untrained quantizer.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when `d` or `m` is 0, `m` does not divide `d`, or
    /// `nbits` is not in `1..=16`.
    pub fn new(d: usize, m: usize, nbits: usize) -> Result<ProductQuantizer> {
        if d == 0 {
            return Err(Error::invalid_param(
                "d",
                "the dimension must be at least 1",
            ));
        }
        if m == 0 {
            return Err(Error::invalid_param("M", "must be at least 1"));
        }
        if !d.is_multiple_of(m) {
            return Err(Error::invalid_param(
                "M",
                format!("M = {m} does not divide the dimension d = {d}"),
            ));
        }
        if !(1..=16).contains(&nbits) {
            return Err(Error::invalid_param(
                "nbits",
                format!("{nbits} bits per sub-vector; supported: 1 to 16"),
            ));
        }
        let ksub = 1usize << nbits;
        Ok(ProductQuantizer {
            d,
            m,
            nbits,
            dsub: d / m,
            ksub,
            centroids: Vec::new(),
            centroids_t: Vec::new(),
            norms: Vec::new(),
            cp: KMeansParams::new(ksub),
            sdc: Vec::new(),
            warnings: Vec::new(),
        })
    }

    /// Input dimension.
    pub fn dim(&self) -> usize {
        self.d
    }

    /// Number of sub-quantizers `M`.
    pub fn m(&self) -> usize {
        self.m
    }

    /// Bits per sub-vector code.
    pub fn nbits(&self) -> usize {
        self.nbits
    }

    /// Sub-vector dimension `d / M`.
    pub fn dsub(&self) -> usize {
        self.dsub
    }

    /// Centroids per sub-space, `2^nbits`.
    pub fn ksub(&self) -> usize {
        self.ksub
    }

    /// Bytes per code, `ceil(M·nbits / 8)`.
    pub fn code_size(&self) -> usize {
        packed_len(self.m, self.nbits)
    }

    /// `true` once centroids exist.
    pub fn is_trained(&self) -> bool {
        !self.centroids.is_empty()
    }

    /// The k-means parameters used per sub-space (Faiss's `pq.cp`).
    pub fn kmeans_params(&self) -> &KMeansParams {
        &self.cp
    }

    /// Replaces the per-sub-space k-means parameters; `k` is forced to `ksub`.
    ///
    /// # Errors
    /// Invalid parameters.
    pub fn set_kmeans_params(&mut self, mut params: KMeansParams) -> Result<()> {
        params.k = self.ksub;
        params.validate()?;
        self.cp = params;
        Ok(())
    }

    /// Warnings from the last training (e.g. too few points per centroid).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// All centroids, `M × ksub × dsub` (empty until trained).
    pub fn centroids(&self) -> &[f32] {
        &self.centroids
    }

    /// Centroid `j` of sub-space `mi`.
    ///
    /// # Panics
    /// If not trained or out of range.
    pub fn centroid(&self, mi: usize, j: usize) -> &[f32] {
        let o = (mi * self.ksub + j) * self.dsub;
        &self.centroids[o..o + self.dsub]
    }

    /// Installs centroids (`M × ksub × dsub` floats), e.g. from a file.
    ///
    /// # Errors
    /// Wrong length or non-finite values.
    pub fn set_centroids(&mut self, centroids: &[f32]) -> Result<()> {
        let want = self.m * self.ksub * self.dsub;
        if centroids.len() != want {
            return Err(Error::LengthMismatch {
                what: "PQ centroids",
                expected: want,
                got: centroids.len(),
            });
        }
        VectorsRef::new_finite(centroids, self.dsub)?;
        self.centroids = centroids.to_vec();
        self.rebuild();
        Ok(())
    }

    fn rebuild(&mut self) {
        let (m, ksub, dsub) = (self.m, self.ksub, self.dsub);
        self.centroids_t = vec![0.0; m * ksub * dsub];
        self.norms = vec![0.0; m * ksub];
        for mi in 0..m {
            for j in 0..ksub {
                let c = &self.centroids[(mi * ksub + j) * dsub..][..dsub];
                self.norms[mi * ksub + j] = c.iter().map(|v| v * v).sum();
                for (dd, &v) in c.iter().enumerate() {
                    self.centroids_t[mi * dsub * ksub + dd * ksub + j] = v;
                }
            }
        }
        self.sdc.clear();
    }

    fn check_trained(&self) -> Result<()> {
        if self.is_trained() {
            Ok(())
        } else {
            Err(Error::NotTrained {
                what: "ProductQuantizer".into(),
            })
        }
    }

    /// Learns the `M` codebooks, each by k-means on its sub-vectors (in parallel).
    ///
    /// # Errors
    /// Dimension mismatch, NaN/Inf, fewer than `ksub` vectors
    /// ([`Error::InsufficientTrainingData`]).
    pub fn train(&mut self, x: VectorsRef<'_>) -> Result<()> {
        self.train_impl(x, false)
    }

    /// Re-trains starting from the current codebooks (Faiss's `Train_hot_start`, used by
    /// OPQ after its first iteration); like [`ProductQuantizer::train`] when untrained.
    ///
    /// # Errors
    /// As [`ProductQuantizer::train`].
    pub fn train_hot_start(&mut self, x: VectorsRef<'_>) -> Result<()> {
        let hot = self.is_trained();
        self.train_impl(x, hot)
    }

    fn train_impl(&mut self, x: VectorsRef<'_>, hot: bool) -> Result<()> {
        x.check_dim(self.d)?;
        x.check_finite()?;
        if x.len() < self.ksub {
            return Err(Error::InsufficientTrainingData {
                needed: self.ksub,
                got: x.len(),
            });
        }
        let (dsub, ksub) = (self.dsub, self.ksub);
        let old = if hot {
            self.centroids.clone()
        } else {
            Vec::new()
        };
        let cp = self.cp.clone();
        let parts = (0..self.m)
            .into_par_iter()
            .map(|mi| -> Result<(Vec<f32>, Vec<String>)> {
                let mut sub = Vec::with_capacity(x.len() * dsub);
                for r in x.rows() {
                    sub.extend_from_slice(&r[mi * dsub..(mi + 1) * dsub]);
                }
                let mut km = KMeans::new(dsub, cp.clone())?;
                let mut assigner = SubspaceAssigner::new(dsub);
                let init = if hot {
                    Some(VectorsRef::new(
                        &old[mi * ksub * dsub..][..ksub * dsub],
                        dsub,
                    )?)
                } else {
                    None
                };
                km.train_with(
                    VectorsRef::new(&sub, dsub)?,
                    TrainOptions {
                        initial_centroids: init,
                        assigner: Some(&mut assigner),
                        ..TrainOptions::default()
                    },
                )?;
                let warnings = km
                    .warnings()
                    .iter()
                    .map(|w| format!("sub-quantizer {mi}: {w}"))
                    .collect();
                Ok((km.centroids().as_slice().to_vec(), warnings))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut centroids = Vec::with_capacity(self.m * ksub * dsub);
        let mut warnings = Vec::new();
        for (c, w) in parts {
            centroids.extend_from_slice(&c);
            warnings.extend(w);
        }
        self.centroids = centroids;
        self.warnings = warnings;
        self.rebuild();
        Ok(())
    }

    /// Nearest-centroid index of every sub-vector of the rows of `x` (`n × M` values),
    /// through GEMM when sub-vectors are long enough for it to pay (`dsub ≥ 32`), else
    /// with a kernel that scores 16 sub-vectors at once.
    fn assign_block(&self, x: &[f32], idx: &mut [u32], scratch: &mut Vec<f32>) {
        let (d, m, dsub, ksub) = (self.d, self.m, self.dsub, self.ksub);
        let n = x.len() / d;
        if dsub >= 32 && n >= 16 {
            scratch.resize(n * ksub, 0.0);
            let mut xs = vec![0f32; n * dsub];
            for mi in 0..m {
                for (o, r) in xs.chunks_exact_mut(dsub).zip(x.chunks_exact(d)) {
                    o.copy_from_slice(&r[mi * dsub..(mi + 1) * dsub]);
                }
                let xm = MatRef::from_row_major_slice(&xs, n, dsub);
                let cm = MatRef::from_row_major_slice(
                    &self.centroids[mi * ksub * dsub..][..ksub * dsub],
                    ksub,
                    dsub,
                );
                let dst = MatMut::from_row_major_slice_mut(&mut scratch[..n * ksub], n, ksub);
                matmul(dst, Accum::Replace, xm, cm.transpose(), -2.0f32, Par::Seq);
                let norms = &self.norms[mi * ksub..(mi + 1) * ksub];
                for (i, row) in scratch[..n * ksub].chunks_exact(ksub).enumerate() {
                    idx[i * m + mi] = argmin_plus(row, norms);
                }
            }
        } else {
            let near = simd::Nearest::new();
            let lanes = simd::NEAREST_LANES;
            scratch.resize(dsub * lanes, 0.0);
            let (mut bd, mut bi) = ([0f32; 16], [0u32; 16]);
            for mi in 0..m {
                let cb = &self.centroids[mi * ksub * dsub..][..ksub * dsub];
                for r0 in (0..n).step_by(lanes) {
                    let nb = lanes.min(n - r0);
                    scratch.fill(0.0);
                    for l in 0..nb {
                        let row = &x[(r0 + l) * d + mi * dsub..][..dsub];
                        for (dd, &v) in row.iter().enumerate() {
                            scratch[dd * lanes + l] = v;
                        }
                    }
                    near.run(scratch, cb, dsub, &mut bd, &mut bi);
                    for l in 0..nb {
                        idx[(r0 + l) * m + mi] = bi[l];
                    }
                }
            }
        }
    }

    /// Packs `M` centroid indices (each below `ksub`) into one code of
    /// [`ProductQuantizer::code_size`] bytes (the inverse of
    /// [`ProductQuantizer::unpack_code`]).
    #[inline]
    pub fn pack_code(&self, ids: &[u32], code: &mut [u8]) {
        match self.nbits {
            8 => {
                for (c, &i) in code.iter_mut().zip(ids) {
                    *c = i as u8;
                }
            }
            16 => {
                for (c, &i) in code.chunks_exact_mut(2).zip(ids) {
                    c.copy_from_slice(&(i as u16).to_le_bytes());
                }
            }
            nb => {
                let mut w = BitWriter::new(code);
                for &i in ids {
                    w.write(i, nb);
                }
            }
        }
    }

    /// The `M` centroid indices of one code.
    #[inline]
    pub fn unpack_code(&self, code: &[u8], ids: &mut [u32]) {
        match self.nbits {
            8 => {
                for (i, &c) in ids.iter_mut().zip(code) {
                    *i = u32::from(c);
                }
            }
            16 => {
                for (i, c) in ids.iter_mut().zip(code.chunks_exact(2)) {
                    *i = u32::from(u16::from_le_bytes([c[0], c[1]]));
                }
            }
            nb => {
                let mut r = BitReader::new(code);
                for i in ids {
                    *i = r.read(nb);
                }
            }
        }
    }

    fn check_codes(&self, codes: &[u8]) -> Result<usize> {
        let cs = self.code_size();
        if !codes.len().is_multiple_of(cs) {
            return Err(Error::invalid_param(
                "codes",
                format!("{} bytes are not whole codes of {cs} bytes", codes.len()),
            ));
        }
        Ok(codes.len() / cs)
    }

    /// An `M × ksub` table: entry `(m, j)` is the squared L2 distance (or the inner
    /// product) between sub-vector `m` of `x` and centroid `j` of sub-space `m`.
    ///
    /// # Errors
    /// Not trained, dimension mismatch, wrong output length.
    pub fn compute_distance_table(&self, x: &[f32], metric: Metric, out: &mut [f32]) -> Result<()> {
        self.check_trained()?;
        if x.len() != self.d {
            return Err(Error::DimensionMismatch {
                expected: self.d,
                got: x.len(),
            });
        }
        if out.len() != self.m * self.ksub {
            return Err(Error::LengthMismatch {
                what: "distance table",
                expected: self.m * self.ksub,
                got: out.len(),
            });
        }
        let table = simd::Table::new(metric == Metric::InnerProduct);
        let (dsub, ksub) = (self.dsub, self.ksub);
        if ksub == 16 {
            table.run_all16(x, &self.centroids_t[..self.m * dsub * ksub], out);
            return Ok(());
        }
        for (mi, o) in out.chunks_exact_mut(ksub).enumerate() {
            table.run(
                &x[mi * dsub..(mi + 1) * dsub],
                &self.centroids_t[mi * dsub * ksub..][..dsub * ksub],
                o,
            );
        }
        Ok(())
    }

    /// Tables for many queries (`nq × M × ksub`), through one GEMM per sub-space when
    /// that pays (`dsub ≥ 16` and at least 8 queries, Faiss's rule), else query by query.
    ///
    /// # Errors
    /// Not trained, dimension mismatch.
    pub fn compute_distance_tables(&self, x: VectorsRef<'_>, metric: Metric) -> Result<Vec<f32>> {
        self.check_trained()?;
        x.check_dim(self.d)?;
        let (m, dsub, ksub) = (self.m, self.dsub, self.ksub);
        let nq = x.len();
        let tsize = m * ksub;
        let mut out = vec![0.0f32; nq * tsize];
        if dsub >= 16 && nq >= 8 {
            let ip = metric == Metric::InnerProduct;
            let mut xs = vec![0f32; nq * dsub];
            let mut g = vec![0f32; nq * ksub];
            for mi in 0..m {
                for (o, q) in xs.chunks_exact_mut(dsub).zip(x.rows()) {
                    o.copy_from_slice(&q[mi * dsub..(mi + 1) * dsub]);
                }
                let xm = MatRef::from_row_major_slice(&xs, nq, dsub);
                let cm = MatRef::from_row_major_slice(
                    &self.centroids[mi * ksub * dsub..][..ksub * dsub],
                    ksub,
                    dsub,
                );
                let dst = MatMut::from_row_major_slice_mut(&mut g, nq, ksub);
                let alpha = if ip { 1.0f32 } else { -2.0 };
                matmul(dst, Accum::Replace, xm, cm.transpose(), alpha, Par::Seq);
                let norms = &self.norms[mi * ksub..(mi + 1) * ksub];
                for ((row, gr), xsub) in out
                    .chunks_exact_mut(tsize)
                    .zip(g.chunks_exact(ksub))
                    .zip(xs.chunks_exact(dsub))
                {
                    let t = &mut row[mi * ksub..(mi + 1) * ksub];
                    if ip {
                        t.copy_from_slice(gr);
                    } else {
                        let xn: f32 = xsub.iter().map(|v| v * v).sum();
                        for ((t, &gv), &cn) in t.iter_mut().zip(gr).zip(norms) {
                            *t = (gv + cn + xn).max(0.0);
                        }
                    }
                }
            }
        } else {
            for (q, o) in x.rows().zip(out.chunks_exact_mut(tsize)) {
                self.compute_distance_table(q, metric, o)?;
            }
        }
        Ok(out)
    }

    /// The distance table of one query, ready to score codes.
    ///
    /// # Errors
    /// Not trained, dimension mismatch.
    pub fn distance_table(&self, x: &[f32], metric: Metric) -> Result<PqDistanceTable> {
        let mut t = vec![0.0; self.m * self.ksub];
        self.compute_distance_table(x, metric, &mut t)?;
        PqDistanceTable::new(t, self.m, self.nbits)
    }

    /// Computes the symmetric (code-to-code) distance tables, `M × ksub × ksub`
    /// squared distances between centroids of each sub-space.
    ///
    /// # Errors
    /// Not trained.
    pub fn compute_sdc_table(&mut self) -> Result<()> {
        self.check_trained()?;
        let (m, ksub, dsub) = (self.m, self.ksub, self.dsub);
        let mut sdc = vec![0.0; m * ksub * ksub];
        let table = simd::Table::new(false);
        sdc.par_chunks_mut(ksub).enumerate().for_each(|(row, out)| {
            let (mi, i) = (row / ksub, row % ksub);
            let c = &self.centroids[(mi * ksub + i) * dsub..][..dsub];
            table.run(c, &self.centroids_t[mi * dsub * ksub..][..dsub * ksub], out);
        });
        self.sdc = sdc;
        Ok(())
    }

    /// The symmetric tables, if computed.
    pub fn sdc_table(&self) -> Option<&[f32]> {
        (!self.sdc.is_empty()).then_some(&self.sdc[..])
    }

    /// Symmetric distance between two codes: the squared L2 distance between their
    /// reconstructions, read from the SDC tables.
    ///
    /// # Errors
    /// [`Error::NotTrained`] when the SDC tables were not computed, wrong code lengths.
    pub fn sdc_distance(&self, a: &[u8], b: &[u8]) -> Result<f32> {
        if self.sdc.is_empty() {
            return Err(Error::NotTrained {
                what: "SDC tables (call compute_sdc_table)".into(),
            });
        }
        let cs = self.code_size();
        if a.len() != cs || b.len() != cs {
            return Err(Error::LengthMismatch {
                what: "PQ code",
                expected: cs,
                got: if a.len() != cs { a.len() } else { b.len() },
            });
        }
        // Indices read on the fly: no allocation per distance.
        let (k, nb) = (self.ksub, self.nbits);
        let (mut ra, mut rb) = (BitReader::new(a), BitReader::new(b));
        Ok((0..self.m)
            .map(|mi| {
                let (x, y) = (ra.read(nb) as usize, rb.read(nb) as usize);
                self.sdc[(mi * k + x) * k + y]
            })
            .sum())
    }
}

/// `argmin_j (row[j] + add[j])` (`add` may be empty); first index on ties.
#[inline]
fn argmin_plus(row: &[f32], add: &[f32]) -> u32 {
    let mut best = f32::INFINITY;
    let mut bi = 0u32;
    if add.is_empty() {
        for (j, &v) in row.iter().enumerate() {
            if v < best {
                best = v;
                bi = j as u32;
            }
        }
    } else {
        for (j, (&v, &a)) in row.iter().zip(add).enumerate() {
            let v = v + a;
            if v < best {
                best = v;
                bi = j as u32;
            }
        }
    }
    bi
}

impl Codec for ProductQuantizer {
    /// Sections: `d`, `m`, `nbits` (checked on load), `trained` (0 or 1) and, when
    /// trained, `centroids` (`M × ksub × dsub` floats). The transposed codebooks and
    /// centroid norms are recomputed on load; the SDC tables are not saved (call
    /// [`ProductQuantizer::compute_sdc_table`] again), nor are the k-means parameters
    /// (training configuration, not learnt state).
    fn save_state(&self, w: &mut StateWriter<'_>) -> Result<()> {
        w.put_usize("d", self.d)?;
        w.put_usize("m", self.m)?;
        w.put_usize("nbits", self.nbits)?;
        let trained = self.is_trained();
        w.put_bool("trained", trained)?;
        if trained {
            w.put_f32s("centroids", &self.centroids)?;
        }
        Ok(())
    }

    /// Replaces the codebooks (or makes the quantizer untrained) with what
    /// [`Codec::save_state`] wrote for a quantizer of the same `d`, `M` and `nbits`;
    /// the object is unchanged on error.
    fn load_state(&mut self, r: &mut StateReader) -> Result<()> {
        expect_usize(r, "d", self.d, "the quantizer")?;
        expect_usize(r, "m", self.m, "the quantizer")?;
        expect_usize(r, "nbits", self.nbits, "the quantizer")?;
        let mut fresh = ProductQuantizer::new(self.d, self.m, self.nbits)?;
        fresh.cp = self.cp.clone();
        if r.get_bool("trained")? {
            let want = self.m * self.ksub * self.dsub;
            fresh.centroids = get_finite_f32s(r, "centroids", want)?;
            fresh.rebuild();
        }
        *self = fresh;
        Ok(())
    }

    fn dim(&self) -> usize {
        self.d
    }

    fn code_size(&self) -> usize {
        ProductQuantizer::code_size(self)
    }

    fn is_trained(&self) -> bool {
        ProductQuantizer::is_trained(self)
    }

    fn train(&mut self, x: VectorsRef<'_>) -> Result<()> {
        ProductQuantizer::train(self, x)
    }

    fn encode_into(&self, x: VectorsRef<'_>, codes: &mut [u8]) -> Result<()> {
        self.check_trained()?;
        x.check_dim(self.d)?;
        x.check_finite()?;
        let cs = self.code_size();
        if codes.len() != x.len() * cs {
            return Err(Error::LengthMismatch {
                what: "codes",
                expected: x.len() * cs,
                got: codes.len(),
            });
        }
        let (d, m) = (self.d, self.m);
        codes
            .par_chunks_mut(ENCODE_BLOCK * cs)
            .zip(x.as_slice().par_chunks(ENCODE_BLOCK * d))
            .for_each_init(
                || (Vec::new(), Vec::new()),
                |(scratch, idx), (cb, xb)| {
                    let n = xb.len() / d;
                    idx.resize(n * m, 0u32);
                    self.assign_block(xb, idx, scratch);
                    for (ids, code) in idx.chunks_exact(m).zip(cb.chunks_exact_mut(cs)) {
                        self.pack_code(ids, code);
                    }
                },
            );
        Ok(())
    }

    fn decode_into(&self, codes: &[u8], out: &mut [f32]) -> Result<()> {
        self.check_trained()?;
        let n = self.check_codes(codes)?;
        if out.len() != n * self.d {
            return Err(Error::LengthMismatch {
                what: "decoded output",
                expected: n * self.d,
                got: out.len(),
            });
        }
        let (cs, d, m, dsub, ksub) = (self.code_size(), self.d, self.m, self.dsub, self.ksub);
        out.par_chunks_mut(ENCODE_BLOCK * d)
            .zip(codes.par_chunks(ENCODE_BLOCK * cs))
            .for_each(|(ob, cb)| {
                let mut ids = vec![0u32; m];
                for (o, c) in ob.chunks_exact_mut(d).zip(cb.chunks_exact(cs)) {
                    self.unpack_code(c, &mut ids);
                    for (mi, &j) in ids.iter().enumerate() {
                        o[mi * dsub..(mi + 1) * dsub].copy_from_slice(
                            &self.centroids[(mi * ksub + j as usize) * dsub..][..dsub],
                        );
                    }
                }
            });
        Ok(())
    }
}

impl AdcCodec for ProductQuantizer {
    type Computer<'a> = PqDistanceTable;

    fn query_computer<'a>(&'a self, query: &'a [f32], metric: Metric) -> Result<PqDistanceTable> {
        self.distance_table(query, metric)
    }

    fn query_computers<'a>(
        &'a self,
        queries: VectorsRef<'a>,
        metric: Metric,
    ) -> Result<Vec<PqDistanceTable>> {
        let tables = self.compute_distance_tables(queries, metric)?;
        let ts = self.m * self.ksub;
        tables
            .chunks_exact(ts)
            .map(|t| PqDistanceTable::new(t.to_vec(), self.m, self.nbits))
            .collect()
    }
}

/// One query's `M × 2^nbits` table of sub-distances; the distance to a code is the sum
/// of one entry per sub-quantizer. Owned, so scan loops (flat, IVF, HNSW) can hold it
/// next to their own state, and consumed through [`CodeDistance`].
#[derive(Clone, Debug)]
pub struct PqDistanceTable {
    table: Vec<f32>,
    m: usize,
    nbits: usize,
    bias: f32,
    kernel: simd::Pq8,
}

impl PqDistanceTable {
    /// Wraps a table of `m × 2^nbits` entries.
    ///
    /// # Errors
    /// A table of the wrong length or `nbits` outside `1..=16`.
    pub fn new(table: Vec<f32>, m: usize, nbits: usize) -> Result<PqDistanceTable> {
        if !(1..=16).contains(&nbits) {
            return Err(Error::invalid_param("nbits", "supported: 1 to 16"));
        }
        if table.len() != m << nbits {
            return Err(Error::LengthMismatch {
                what: "PQ distance table",
                expected: m << nbits,
                got: table.len(),
            });
        }
        Ok(PqDistanceTable {
            table,
            m,
            nbits,
            bias: 0.0,
            kernel: simd::Pq8::new(),
        })
    }

    /// The raw table, `M × 2^nbits`.
    pub fn table(&self) -> &[f32] {
        &self.table
    }

    /// Mutable access, for scanners that fold per-list terms into the table (IVF-PQ).
    pub fn table_mut(&mut self) -> &mut [f32] {
        &mut self.table
    }

    /// A constant added to every distance (e.g. the coarse term of IVF-PQ).
    pub fn set_bias(&mut self, bias: f32) {
        self.bias = bias;
    }

    /// Number of sub-quantizers.
    pub fn m(&self) -> usize {
        self.m
    }

    /// Bits per sub-vector code.
    pub fn nbits(&self) -> usize {
        self.nbits
    }

    /// Distance to one code (`ceil(M·nbits/8)` bytes).
    #[inline]
    pub fn distance(&self, code: &[u8]) -> f32 {
        let mut out = [0.0];
        self.scan(code, &mut out);
        out[0]
    }

    /// Distances to `out.len()` consecutive codes.
    ///
    /// # Panics
    /// If `codes` is shorter than `out.len()` codes.
    pub fn scan(&self, codes: &[u8], out: &mut [f32]) {
        self.scan_table(&self.table, codes, out);
        if self.bias != 0.0 {
            for o in out.iter_mut() {
                *o += self.bias;
            }
        }
    }

    /// Distances with the entry-wise sum of this table and `extra` (same shape), without
    /// building the sum: two lookups per sub-quantizer. Cheaper than adding the tables
    /// when few codes are scanned with them (IVF-PQ's short lists).
    ///
    /// # Panics
    /// If `extra` has another length, or `codes` is shorter than `out.len()` codes.
    pub fn scan_plus(&self, extra: &[f32], codes: &[u8], out: &mut [f32]) {
        assert_eq!(extra.len(), self.table.len(), "tables of different shapes");
        self.scan(codes, out);
        let mut tmp = [0f32; 256];
        let cs = packed_len(self.m, self.nbits);
        for (oc, cc) in out.chunks_mut(256).zip(codes.chunks(256 * cs)) {
            let t = &mut tmp[..oc.len()];
            self.scan_table(extra, cc, t);
            for (o, &v) in oc.iter_mut().zip(t.iter()) {
                *o += v;
            }
        }
    }

    /// Sums of `table` entries (no bias).
    fn scan_table(&self, table: &[f32], codes: &[u8], out: &mut [f32]) {
        let m = self.m;
        match self.nbits {
            8 => self.kernel.run(table, m, codes, out),
            16 => scan16(table, m, codes, out),
            nb => {
                let cs = packed_len(m, nb);
                let ksub = 1usize << nb;
                for (o, c) in out.iter_mut().zip(codes.chunks_exact(cs)) {
                    let mut r = BitReader::new(c);
                    let mut s = 0.0;
                    for t in table.chunks_exact(ksub) {
                        s += t[r.read(nb) as usize];
                    }
                    *o = s;
                }
            }
        }
    }
}

fn scan16(table: &[f32], m: usize, codes: &[u8], out: &mut [f32]) {
    let (t, _) = table.as_chunks::<65536>();
    for (o, c) in out.iter_mut().zip(codes.chunks_exact(2 * m)) {
        let mut s = 0.0;
        for (tm, b) in t.iter().zip(c.chunks_exact(2)) {
            s += tm[usize::from(u16::from_le_bytes([b[0], b[1]]))];
        }
        *o = s;
    }
}

impl CodeDistance for PqDistanceTable {
    #[inline]
    fn distance(&mut self, code: &[u8]) -> f32 {
        PqDistanceTable::distance(self, code)
    }

    fn distances(&mut self, codes: &[u8], out: &mut [f32]) {
        self.scan(codes, out);
    }
}

/// The k-means assignment step of sub-space training: nearest centroid of short
/// sub-vectors with the 16-lane kernel (the general GEMM engine pays too much per call
/// at `dsub` of a few components). Other `k` fall back to an exact flat index.
#[derive(Debug)]
struct SubspaceAssigner {
    dsub: usize,
    centroids: Vec<f32>,
}

impl SubspaceAssigner {
    fn new(dsub: usize) -> SubspaceAssigner {
        SubspaceAssigner {
            dsub,
            centroids: Vec::new(),
        }
    }
}

impl Index for SubspaceAssigner {
    fn dim(&self) -> usize {
        self.dsub
    }

    fn metric(&self) -> Metric {
        Metric::L2
    }

    fn len(&self) -> usize {
        self.centroids.len() / self.dsub
    }

    fn add(&mut self, x: VectorsRef<'_>) -> Result<()> {
        x.check_dim(self.dsub)?;
        x.check_finite()?;
        self.centroids.extend_from_slice(x.as_slice());
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
        if k != 1 || params.selector.is_some() {
            let mut flat = IndexFlat::new(self.dsub, Metric::L2)?;
            flat.add(VectorsRef::new(&self.centroids, self.dsub)?)?;
            return flat.search_into(queries, k, params, out);
        }
        let (dsub, lanes) = (self.dsub, simd::NEAREST_LANES);
        let near = simd::Nearest::new();
        out.reset(queries.len(), 1, Metric::L2);
        let (dist, labels) = out.parts_mut();
        dist.par_chunks_mut(ENCODE_BLOCK)
            .zip(labels.par_chunks_mut(ENCODE_BLOCK))
            .zip(queries.as_slice().par_chunks(ENCODE_BLOCK * dsub))
            .for_each(|((dc, lc), xb)| {
                let mut xt = vec![0f32; dsub * lanes];
                let (mut bd, mut bi) = ([0f32; 16], [0u32; 16]);
                let n = xb.len() / dsub;
                for r0 in (0..n).step_by(lanes) {
                    let nb = lanes.min(n - r0);
                    xt.fill(0.0);
                    for l in 0..nb {
                        for (dd, &v) in xb[(r0 + l) * dsub..][..dsub].iter().enumerate() {
                            xt[dd * lanes + l] = v;
                        }
                    }
                    near.run(&xt, &self.centroids, dsub, &mut bd, &mut bi);
                    for l in 0..nb {
                        dc[r0 + l] = bd[l];
                        lc[r0 + l] = Label::from(bi[l]);
                    }
                }
            });
        Ok(())
    }

    fn reset(&mut self) {
        self.centroids.clear();
    }
}
