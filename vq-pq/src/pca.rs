//! Principal component analysis as a vector transform (Faiss's `PCAMatrix`, factory
//! tokens `PCA`, `PCAW`, `PCAR`, `PCAWR`).

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatMut, MatRef, Par, Side};
use vq_core::persist::{StateReader, StateWriter};
use vq_core::{Error, Result, VectorTransform, VectorsRef};

use crate::linear::{LinearTransform, random_orthonormal_block};
use crate::state::{expect_usize, get_f32_scalar, get_finite_f32s};
use crate::subsample;

/// Rows per covariance GEMM block.
const COV_BLOCK: usize = 16384;

/// PCA: `y = A·(x − mean)` keeping the `d_out` leading principal directions.
///
/// Faiss's defaults: no whitening (`eigen_power = 0`; `-0.5` whitens, `PCAW`),
/// `epsilon = 0` added to eigenvalues before the power, no random rotation (`PCAR`
/// rotates the output with seed 5), and at most `1000·d_in` training vectors (seeded
/// subsample). The eigen-decomposition of the covariance runs in f64 through faer.
/// `reverse` exists always: `mean + Rᵀ·y`, exact when `d_out = d_in`, the projection
/// on the kept components otherwise (whitening is undone).
///
/// ```
/// use vq_core::{VectorTransform, VectorsRef, synthetic::SyntheticSpec};
/// use vq_pq::Pca;
/// let data = SyntheticSpec::new(1_000, 16, 1).generate()?;
/// let mut pca = Pca::new(16, 8)?;
/// pca.train(data.base.as_ref())?;
/// let y = pca.apply(data.base.as_ref().slice(0..2))?;
/// assert_eq!(y.len(), 16);
/// assert!(pca.eigenvalues()[0] >= pca.eigenvalues()[1]);
/// # Ok::<(), vq_core::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Pca {
    d_in: usize,
    d_out: usize,
    eigen_power: f32,
    epsilon: f32,
    random_rotation: bool,
    max_points_per_d: usize,
    mean: Vec<f32>,
    eigenvalues: Vec<f32>,
    /// All `d_in` principal directions, `d_in × d_in` row-major, by decreasing
    /// eigenvalue.
    components: Vec<f32>,
    lt: Option<LinearTransform>,
}

impl Pca {
    /// Seed of the random rotation (Faiss's).
    pub const ROTATION_SEED: u64 = 5;

    /// PCA from `d_in` to `d_out ≤ d_in` dimensions with Faiss's defaults.
    ///
    /// # Errors
    /// Zero dimensions or `d_out > d_in`.
    pub fn new(d_in: usize, d_out: usize) -> Result<Pca> {
        if d_in == 0 || d_out == 0 {
            return Err(Error::invalid_param("d", "dimensions must be at least 1"));
        }
        if d_out > d_in {
            return Err(Error::invalid_param(
                "d_out",
                format!("PCA cannot output {d_out} dimensions from {d_in}"),
            ));
        }
        Ok(Pca {
            d_in,
            d_out,
            eigen_power: 0.0,
            epsilon: 0.0,
            random_rotation: false,
            max_points_per_d: 1000,
            mean: Vec::new(),
            eigenvalues: Vec::new(),
            components: Vec::new(),
            lt: None,
        })
    }

    /// Scales component `i` by `(λᵢ + ε)^power`; `-0.5` whitens (`PCAW`).
    pub fn with_eigen_power(mut self, power: f32) -> Self {
        self.eigen_power = power;
        self
    }

    /// `ε` added to the eigenvalues before the power.
    pub fn with_epsilon(mut self, epsilon: f32) -> Self {
        self.epsilon = epsilon;
        self
    }

    /// Rotates the output randomly (seed 5), spreading variance over the dimensions
    /// (`PCAR`).
    pub fn with_random_rotation(mut self, on: bool) -> Self {
        self.random_rotation = on;
        self
    }

    /// Training vectors kept per input dimension (default 1000).
    pub fn with_max_points_per_d(mut self, n: usize) -> Self {
        self.max_points_per_d = n.max(1);
        self
    }

    /// Mean of the training vectors.
    pub fn mean(&self) -> &[f32] {
        &self.mean
    }

    /// Eigenvalues of the covariance (variances along the components), decreasing.
    pub fn eigenvalues(&self) -> &[f32] {
        &self.eigenvalues
    }

    /// Principal directions, `d_in × d_in` row-major, by decreasing eigenvalue.
    pub fn components(&self) -> &[f32] {
        &self.components
    }

    /// The final affine map, once trained.
    pub fn linear(&self) -> Option<&LinearTransform> {
        self.lt.as_ref()
    }

    fn lt(&self) -> Result<&LinearTransform> {
        self.lt
            .as_ref()
            .ok_or_else(|| Error::NotTrained { what: "PCA".into() })
    }

    /// `PCA`, `PCAW`, `PCAR` or `PCAWR`.
    fn kind(&self) -> &'static str {
        match (self.eigen_power != 0.0, self.random_rotation) {
            (false, false) => "PCA",
            (true, false) => "PCAW",
            (false, true) => "PCAR",
            (true, true) => "PCAWR",
        }
    }
}

impl VectorTransform for Pca {
    fn d_in(&self) -> usize {
        self.d_in
    }

    fn d_out(&self) -> usize {
        self.d_out
    }

    fn describe(&self) -> String {
        format!("{}(d_in={}, d_out={})", self.kind(), self.d_in, self.d_out)
    }

    /// Sections: `d_in`, `d_out`, `eigen_power` and `random_rotation` (checked on load:
    /// they make the PCA kind), `epsilon` and `max_points_per_d` (training settings,
    /// restored), `trained` (0 or 1) and, once trained, `mean` (`d_in`), `eigenvalues`
    /// (`d_in`), `components` (`d_in × d_in`) and the final map under `linear/`.
    fn save_state(&self, w: &mut StateWriter<'_>) -> Result<()> {
        w.put_usize("d_in", self.d_in)?;
        w.put_usize("d_out", self.d_out)?;
        w.put_f64("eigen_power", f64::from(self.eigen_power))?;
        w.put_bool("random_rotation", self.random_rotation)?;
        w.put_f64("epsilon", f64::from(self.epsilon))?;
        w.put_usize("max_points_per_d", self.max_points_per_d)?;
        w.put_bool("trained", self.lt.is_some())?;
        if let Some(lt) = &self.lt {
            w.put_f32s("mean", &self.mean)?;
            w.put_f32s("eigenvalues", &self.eigenvalues)?;
            w.put_f32s("components", &self.components)?;
            w.scope("linear", |w| lt.save_parts(w))?;
        }
        Ok(())
    }

    /// Replaces the learnt state (or makes the PCA untrained); unchanged on error.
    fn load_state(&mut self, r: &mut StateReader) -> Result<()> {
        expect_usize(r, "d_in", self.d_in, "the PCA")?;
        expect_usize(r, "d_out", self.d_out, "the PCA")?;
        let power = get_f32_scalar(r, "eigen_power")?;
        if power != self.eigen_power {
            return Err(r.error(
                "eigen_power",
                format!("{power}, but the PCA has {}", self.eigen_power),
            ));
        }
        let rotate = r.get_bool("random_rotation")?;
        if rotate != self.random_rotation {
            return Err(r.error(
                "random_rotation",
                format!("{rotate}, but the PCA has {}", self.random_rotation),
            ));
        }
        let epsilon = get_f32_scalar(r, "epsilon")?;
        let max_points_per_d = r.get_usize("max_points_per_d", usize::MAX)?;
        if max_points_per_d == 0 {
            return Err(r.error("max_points_per_d", "must be at least 1"));
        }
        let d = self.d_in;
        let (mut mean, mut eigenvalues, mut components, mut lt) =
            (Vec::new(), Vec::new(), Vec::new(), None);
        if r.get_bool("trained")? {
            mean = get_finite_f32s(r, "mean", d)?;
            eigenvalues = get_finite_f32s(r, "eigenvalues", d)?;
            if let Some(i) = eigenvalues.iter().position(|&v| v < 0.0) {
                return Err(r.error("eigenvalues", format!("eigenvalue {i} is negative")));
            }
            let size = d
                .checked_mul(d)
                .ok_or_else(|| r.error("components", "the matrix size overflows"))?;
            components = get_finite_f32s(r, "components", size)?;
            let (d_out, kind) = (self.d_out, self.kind());
            lt = Some(r.scope("linear", |r| LinearTransform::load_parts(r, d, d_out, kind))?);
        }
        self.epsilon = epsilon;
        self.max_points_per_d = max_points_per_d;
        self.mean = mean;
        self.eigenvalues = eigenvalues;
        self.components = components;
        self.lt = lt;
        Ok(())
    }

    fn is_trained(&self) -> bool {
        self.lt.is_some()
    }

    fn train(&mut self, x: VectorsRef<'_>) -> Result<()> {
        x.check_dim(self.d_in)?;
        x.check_finite()?;
        if x.len() < 2 {
            return Err(Error::InsufficientTrainingData {
                needed: 2,
                got: x.len(),
            });
        }
        let d = self.d_in;
        let owned = subsample(x, self.max_points_per_d.saturating_mul(d), 1234);
        let x = owned.as_ref().map_or(x, |v| v.as_ref());
        let n = x.len();
        // Mean in f64.
        let mut mean = vec![0f64; d];
        for r in x.rows() {
            for (m, &v) in mean.iter_mut().zip(r) {
                *m += f64::from(v);
            }
        }
        for m in &mut mean {
            *m /= n as f64;
        }
        let mean32: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
        // Covariance: blocks of centred rows through f32 GEMM, accumulated in f64.
        let mut cov = Mat::<f64>::zeros(d, d);
        let mut block = Vec::with_capacity(COV_BLOCK.min(n) * d);
        let mut part = vec![0f32; d * d];
        for rows in x.as_slice().chunks(COV_BLOCK * d) {
            block.clear();
            for r in rows.chunks_exact(d) {
                block.extend(r.iter().zip(&mean32).map(|(v, m)| v - m));
            }
            let nb = rows.len() / d;
            let xm = MatRef::from_row_major_slice(&block, nb, d);
            let dst = MatMut::from_row_major_slice_mut(&mut part, d, d);
            matmul(
                dst,
                Accum::Replace,
                xm.transpose(),
                xm,
                1.0f32,
                Par::rayon(0),
            );
            for i in 0..d {
                for j in 0..d {
                    cov[(i, j)] += f64::from(part[i * d + j]);
                }
            }
        }
        for i in 0..d {
            for j in 0..d {
                cov[(i, j)] /= n as f64;
            }
        }
        let evd = cov.self_adjoint_eigen(Side::Lower).map_err(|e| {
            Error::invalid_param("PCA", format!("eigen-decomposition failed: {e:?}"))
        })?;
        let (u, s) = (evd.U(), evd.S().column_vector());
        // faer sorts eigenvalues increasing; we want decreasing.
        let mut eigenvalues = Vec::with_capacity(d);
        let mut components = Vec::with_capacity(d * d);
        for k in (0..d).rev() {
            eigenvalues.push(s[k].max(0.0) as f32);
            for i in 0..d {
                components.push(u[(i, k)] as f32);
            }
        }
        // Scale for whitening.
        let (dout, p) = (self.d_out, self.eigen_power);
        let mut scale = vec![1f32; dout];
        if p != 0.0 {
            for (k, sc) in scale.iter_mut().enumerate() {
                let v = eigenvalues[k] + self.epsilon;
                if v <= 0.0 || !v.is_finite() {
                    return Err(Error::invalid_param(
                        "PCA",
                        format!(
                            "component {k} has variance {} ≤ 0: whitening is undefined (set epsilon > 0 or output fewer dimensions)",
                            eigenvalues[k]
                        ),
                    ));
                }
                *sc = v.powf(p);
            }
        }
        let mut a: Vec<f32> = Vec::with_capacity(dout * d);
        let mut rev: Vec<f32> = Vec::with_capacity(dout * d);
        for (k, &sc) in scale.iter().enumerate() {
            let row = &components[k * d..(k + 1) * d];
            a.extend(row.iter().map(|v| v * sc));
            rev.extend(row.iter().map(|v| v / sc));
        }
        if self.random_rotation {
            let r = random_orthonormal_block(dout, dout, Self::ROTATION_SEED);
            a = mat_mul(&r, dout, dout, &a, d);
            rev = mat_mul(&r, dout, dout, &rev, d);
        }
        // b = −A·mean.
        let b: Vec<f32> = a
            .chunks_exact(d)
            .map(|row| -row.iter().zip(&mean32).map(|(x, m)| x * m).sum::<f32>())
            .collect();
        let lt = LinearTransform::new(d, dout, a, b)?
            .with_reverse(Some(rev))
            .with_name(self.kind());
        self.mean = mean32;
        self.eigenvalues = eigenvalues;
        self.components = components;
        self.lt = Some(lt);
        Ok(())
    }

    fn apply_into(&self, x: VectorsRef<'_>, out: &mut [f32]) -> Result<()> {
        self.lt()?.apply_into(x, out)
    }

    fn reverse_into(&self, y: VectorsRef<'_>, out: &mut [f32]) -> Result<()> {
        // x = mean + R·y: exact without whitening when d_out = d_in, the projection on
        // the kept components (plus the mean) otherwise.
        self.lt()?.reverse_raw(y, out)?;
        for row in out.chunks_exact_mut(self.d_in) {
            for (o, &m) in row.iter_mut().zip(&self.mean) {
                *o += m;
            }
        }
        Ok(())
    }
}

/// `(r × k) · (k × c)`, row-major, small matrices.
fn mat_mul(a: &[f32], r: usize, k: usize, b: &[f32], c: usize) -> Vec<f32> {
    let mut out = vec![0f32; r * c];
    for i in 0..r {
        for t in 0..k {
            let av = a[i * k + t];
            for (o, &bv) in out[i * c..(i + 1) * c]
                .iter_mut()
                .zip(&b[t * c..(t + 1) * c])
            {
                *o += av * bv;
            }
        }
    }
    out
}
