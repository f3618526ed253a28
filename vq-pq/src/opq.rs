//! Optimised product quantization's rotation (Faiss's `OPQMatrix`, factory token
//! `OPQM[_D]`).

use faer::Mat;
use vq_core::persist::{StateReader, StateWriter};
use vq_core::{Codec, Error, Result, VectorTransform, VectorsRef};
use vq_kmeans::KMeansParams;

use crate::linear::{LinearTransform, random_orthonormal_block};
use crate::pq::ProductQuantizer;
use crate::state::{MAX_ITER, expect_usize};
use crate::subsample;

/// Learns an orthonormal `d_out × d_in` matrix `A` so that product quantization of
/// `A·x` with `M` sub-quantizers loses as little as possible.
///
/// Faiss's algorithm and defaults: centre the (at most 65,536, seeded subsample)
/// training vectors, zero-pad them when `d_out > d_in`, start from a random orthogonal
/// matrix (seed 1234), then `niter = 50` times: project, train an 8-bit PQ (`niter_pq_0
/// = 40` k-means iterations the first time, then `niter_pq = 4` from the previous
/// codebooks, at most 1,000 points per centroid), encode and decode, and replace `A` by
/// the orthogonal Procrustes solution `U·Vᵀ` from the SVD of `Yᵀ·X` (faer, f64).
///
/// ```
/// use vq_core::{VectorTransform, VectorsRef, synthetic::SyntheticSpec};
/// use vq_pq::Opq;
/// let data = SyntheticSpec::new(2_000, 16, 1).generate()?;
/// let mut opq = Opq::new(16, 4)?.with_niter(2).with_nbits(4);
/// opq.train(data.base.as_ref())?;
/// let y = opq.apply(data.base.as_ref().slice(0..1))?;
/// let (x, n2): (&[f32], f32) = (data.base.as_ref().row(0), y.iter().map(|v| v * v).sum());
/// assert!((n2 - x.iter().map(|v| v * v).sum::<f32>()).abs() < 1e-2 * n2.max(1.0));
/// # Ok::<(), vq_core::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Opq {
    d_in: usize,
    d_out: usize,
    m: usize,
    nbits: usize,
    niter: usize,
    niter_pq: usize,
    niter_pq_0: usize,
    max_train_points: usize,
    seed: u64,
    lt: Option<LinearTransform>,
    pq: Option<ProductQuantizer>,
    errors: Vec<f64>,
}

impl Opq {
    /// `OPQM` keeping the dimension.
    ///
    /// # Errors
    /// As [`Opq::with_output`].
    pub fn new(d: usize, m: usize) -> Result<Opq> {
        Opq::with_output(d, m, d)
    }

    /// `OPQM_D`: `d_in` → `d_out`, which `m` must divide.
    ///
    /// # Errors
    /// Zero dimensions, `m` zero or not dividing `d_out`.
    pub fn with_output(d_in: usize, m: usize, d_out: usize) -> Result<Opq> {
        if d_in == 0 || d_out == 0 {
            return Err(Error::invalid_param("d", "dimensions must be at least 1"));
        }
        // Validates m against d_out.
        ProductQuantizer::new(d_out, m, 8)?;
        Ok(Opq {
            d_in,
            d_out,
            m,
            nbits: 8,
            niter: 50,
            niter_pq: 4,
            niter_pq_0: 40,
            max_train_points: 65_536,
            seed: 1234,
            lt: None,
            pq: None,
            errors: Vec::new(),
        })
    }

    /// Outer (rotation) iterations, default 50.
    pub fn with_niter(mut self, niter: usize) -> Self {
        self.niter = niter.max(1);
        self
    }

    /// k-means iterations of the PQ per outer iteration after the first (default 4) and
    /// in the first (default 40).
    pub fn with_niter_pq(mut self, niter_pq: usize, niter_pq_0: usize) -> Self {
        self.niter_pq = niter_pq.max(1);
        self.niter_pq_0 = niter_pq_0.max(1);
        self
    }

    /// Bits of the internal PQ (default 8).
    pub fn with_nbits(mut self, nbits: usize) -> Self {
        self.nbits = nbits;
        self
    }

    /// Cap on training vectors (default 65,536).
    pub fn with_max_train_points(mut self, n: usize) -> Self {
        self.max_train_points = n.max(1);
        self
    }

    /// Seed of the initial random rotation and the subsample (default 1234).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Number of sub-quantizers the rotation is optimised for.
    pub fn m(&self) -> usize {
        self.m
    }

    /// The PQ trained alongside the rotation (on rotated vectors), once trained.
    pub fn pq(&self) -> Option<&ProductQuantizer> {
        self.pq.as_ref()
    }

    /// Mean squared reconstruction error of the training vectors after each outer
    /// iteration (should decrease).
    pub fn reconstruction_errors(&self) -> &[f64] {
        &self.errors
    }

    /// The learnt linear map, once trained.
    pub fn linear(&self) -> Option<&LinearTransform> {
        self.lt.as_ref()
    }

    fn lt(&self) -> Result<&LinearTransform> {
        self.lt
            .as_ref()
            .ok_or_else(|| Error::NotTrained { what: "OPQ".into() })
    }
}

impl VectorTransform for Opq {
    fn d_in(&self) -> usize {
        self.d_in
    }

    fn d_out(&self) -> usize {
        self.d_out
    }

    fn describe(&self) -> String {
        format!("OPQ{}_{}(d_in={})", self.m, self.d_out, self.d_in)
    }

    fn is_trained(&self) -> bool {
        self.lt.is_some()
    }

    /// Sections: `d_in`, `d_out`, `m` and `nbits` (checked on load), the training
    /// settings `niter`, `niter_pq`, `niter_pq_0`, `max_train_points` and `seed`
    /// (restored), `trained` (0 or 1) and, once trained, the rotation under `linear/`
    /// (its reverse is the matrix itself, not stored), the PQ trained with it under
    /// `pq/`, and `reconstruction_errors` (the `f64` bit patterns, one per iteration).
    fn save_state(&self, w: &mut StateWriter<'_>) -> Result<()> {
        w.put_usize("d_in", self.d_in)?;
        w.put_usize("d_out", self.d_out)?;
        w.put_usize("m", self.m)?;
        w.put_usize("nbits", self.nbits)?;
        w.put_usize("niter", self.niter)?;
        w.put_usize("niter_pq", self.niter_pq)?;
        w.put_usize("niter_pq_0", self.niter_pq_0)?;
        w.put_usize("max_train_points", self.max_train_points)?;
        w.put_u64("seed", self.seed)?;
        match (&self.lt, &self.pq) {
            (Some(lt), Some(pq)) => {
                w.put_bool("trained", true)?;
                w.scope("linear", |w| lt.save_parts(w))?;
                w.scope("pq", |w| pq.save_state(w))?;
                let bits: Vec<u64> = self.errors.iter().map(|e| e.to_bits()).collect();
                w.put_u64s("reconstruction_errors", &bits)
            }
            _ => w.put_bool("trained", false),
        }
    }

    /// Replaces the learnt state and the training settings (or makes the OPQ
    /// untrained); unchanged on error.
    fn load_state(&mut self, r: &mut StateReader) -> Result<()> {
        expect_usize(r, "d_in", self.d_in, "the OPQ")?;
        expect_usize(r, "d_out", self.d_out, "the OPQ")?;
        expect_usize(r, "m", self.m, "the OPQ")?;
        expect_usize(r, "nbits", self.nbits, "the OPQ")?;
        let mut iters = [0usize; 3];
        for (v, name) in iters.iter_mut().zip(["niter", "niter_pq", "niter_pq_0"]) {
            *v = r.get_usize(name, MAX_ITER)?;
            if *v == 0 {
                return Err(r.error(name, "must be at least 1"));
            }
        }
        let [niter, niter_pq, niter_pq_0] = iters;
        let max_train_points = r.get_usize("max_train_points", usize::MAX)?;
        if max_train_points == 0 {
            return Err(r.error("max_train_points", "must be at least 1"));
        }
        let seed = r.get_u64("seed")?;
        let (mut lt, mut pq, mut errors) = (None, None, Vec::new());
        if r.get_bool("trained")? {
            let (d_in, d_out) = (self.d_in, self.d_out);
            lt = Some(r.scope("linear", |r| {
                LinearTransform::load_parts(r, d_in, d_out, "OPQ")
            })?);
            let mut q = ProductQuantizer::new(d_out, self.m, self.nbits)
                .map_err(|e| r.error("nbits", e))?;
            r.scope("pq", |r| q.load_state(r))?;
            if !q.is_trained() {
                return Err(r.error("pq", "the PQ of a trained OPQ is untrained"));
            }
            pq = Some(q);
            let bits = r.get_u64s("reconstruction_errors")?;
            if bits.len() != niter {
                return Err(r.error(
                    "reconstruction_errors",
                    format!("{} values for {niter} iterations", bits.len()),
                ));
            }
            errors = bits.into_iter().map(f64::from_bits).collect();
            if errors.iter().any(|e| !e.is_finite() || *e < 0.0) {
                return Err(r.error(
                    "reconstruction_errors",
                    "errors must be finite and non-negative",
                ));
            }
        }
        self.niter = niter;
        self.niter_pq = niter_pq;
        self.niter_pq_0 = niter_pq_0;
        self.max_train_points = max_train_points;
        self.seed = seed;
        self.lt = lt;
        self.pq = pq;
        self.errors = errors;
        Ok(())
    }

    fn train(&mut self, x: VectorsRef<'_>) -> Result<()> {
        x.check_dim(self.d_in)?;
        x.check_finite()?;
        let mut pq = ProductQuantizer::new(self.d_out, self.m, self.nbits)?;
        if x.len() < pq.ksub() {
            return Err(Error::InsufficientTrainingData {
                needed: pq.ksub(),
                got: x.len(),
            });
        }
        let owned = subsample(x, self.max_train_points, self.seed);
        let x = owned.as_ref().map_or(x, |v| v.as_ref());
        let (n, din, dout) = (x.len(), self.d_in, self.d_out);
        let dp = din.max(dout);
        // Centred, zero-padded training matrix (n × dp).
        let mut mean = vec![0f64; din];
        for r in x.rows() {
            for (m, &v) in mean.iter_mut().zip(r) {
                *m += f64::from(v);
            }
        }
        let mean: Vec<f32> = mean.iter().map(|m| (m / n as f64) as f32).collect();
        let mut xc = vec![0f32; n * dp];
        for (o, r) in xc.chunks_exact_mut(dp).zip(x.rows()) {
            for ((o, &v), &m) in o.iter_mut().zip(r).zip(&mean) {
                *o = v - m;
            }
        }
        // R: dout × dp with orthonormal rows.
        let mut r = random_orthonormal_block(dout, dp, self.seed);
        let mut errors = Vec::with_capacity(self.niter);
        let mut xproj = vec![0f32; n * dout];
        let mut recon = vec![0f32; n * dout];
        let mut codes = vec![0u8; n * pq.code_size()];
        for it in 0..self.niter {
            let rot = LinearTransform::raw(dp, dout, r.clone(), None);
            rot.apply_into(VectorsRef::new(&xc, dp)?, &mut xproj)?;
            let niter = if it == 0 {
                self.niter_pq_0
            } else {
                self.niter_pq
            };
            pq.set_kmeans_params(
                KMeansParams::new(pq.ksub())
                    .with_niter(niter)
                    .with_points_per_centroid(1, 1000),
            )?;
            pq.train_hot_start(VectorsRef::new(&xproj, dout)?)?;
            pq.encode_into(VectorsRef::new(&xproj, dout)?, &mut codes)?;
            pq.decode_into(&codes, &mut recon)?;
            let err: f64 = xproj
                .iter()
                .zip(&recon)
                .map(|(a, b)| f64::from(a - b).powi(2))
                .sum::<f64>()
                / n as f64;
            errors.push(err);
            // Procrustes: maximise tr(R·Xᵀ·Y) → SVD of Yᵀ·X (dout × dp) = U S Vᵀ, R = U Vᵀ.
            let mut yx = Mat::<f64>::zeros(dout, dp);
            {
                let mut part = vec![0f32; dout * dp];
                for (yb, xb) in recon.chunks(16384 * dout).zip(xc.chunks(16384 * dp)) {
                    let nb = yb.len() / dout;
                    let ym = faer::MatRef::from_row_major_slice(yb, nb, dout);
                    let xm = faer::MatRef::from_row_major_slice(xb, nb, dp);
                    let dst = faer::MatMut::from_row_major_slice_mut(&mut part, dout, dp);
                    faer::linalg::matmul::matmul(
                        dst,
                        faer::Accum::Replace,
                        ym.transpose(),
                        xm,
                        1.0f32,
                        faer::Par::rayon(0),
                    );
                    for i in 0..dout {
                        for j in 0..dp {
                            yx[(i, j)] += f64::from(part[i * dp + j]);
                        }
                    }
                }
            }
            let svd = yx
                .thin_svd()
                .map_err(|e| Error::invalid_param("OPQ", format!("SVD failed: {e:?}")))?;
            let (u, v) = (svd.U(), svd.V());
            let rank = u.ncols();
            for i in 0..dout {
                for j in 0..dp {
                    let mut s = 0f64;
                    for t in 0..rank {
                        s += u[(i, t)] * v[(j, t)];
                    }
                    r[i * dp + j] = s as f32;
                }
            }
        }
        // Final PQ on the final rotation of the vectors as given (so `pq()` matches
        // `apply`, which has no bias): the mean goes back in first.
        for o in xc.chunks_exact_mut(dp) {
            for (o, &m) in o.iter_mut().zip(&mean) {
                *o += m;
            }
        }
        let rot = LinearTransform::raw(dp, dout, r.clone(), None);
        rot.apply_into(VectorsRef::new(&xc, dp)?, &mut xproj)?;
        pq.train_hot_start(VectorsRef::new(&xproj, dout)?)?;
        let mut a = Vec::with_capacity(dout * din);
        for row in r.chunks_exact(dp) {
            a.extend_from_slice(&row[..din]);
        }
        let lt = LinearTransform::raw(din, dout, a.clone(), Some(a)).with_name("OPQ");
        self.lt = Some(lt);
        self.pq = Some(pq);
        self.errors = errors;
        Ok(())
    }

    fn apply_into(&self, x: VectorsRef<'_>, out: &mut [f32]) -> Result<()> {
        self.lt()?.apply_into(x, out)
    }

    fn reverse_into(&self, y: VectorsRef<'_>, out: &mut [f32]) -> Result<()> {
        self.lt()?.reverse_into(y, out)
    }
}
