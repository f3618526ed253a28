//! Affine maps `y = A·x + b` (Faiss's `LinearTransform`), random orthogonal matrices
//! and the random rotation transform (`RR`).

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatMut, MatRef, Par};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use vq_core::persist::{StateReader, StateWriter};
use vq_core::{Error, Result, VectorTransform, VectorsRef};

use crate::state::{expect_usize, get_finite_f32s};

/// Rows transformed per parallel task.
const ROW_BLOCK: usize = 4096;

/// `y = A·x + b` with `A` of shape `d_out × d_in` (row-major) and an optional reverse
/// map `x = R·(y − b)` where `R` is stored as a `d_out × d_in` matrix (`x = (y − b)ᵀ·R`):
/// `A` itself when `A` has orthonormal rows or columns, the pseudo-inverse's transpose
/// for whitening.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearTransform {
    d_in: usize,
    d_out: usize,
    a: Vec<f32>,
    b: Vec<f32>,
    rev: Option<Vec<f32>>,
    name: String,
}

/// `out (n × c) = x (n × k) · mᵀ` where `m` is `c × k` row-major; blocks in parallel.
fn gemm_rows_t(x: &[f32], k: usize, m: &[f32], c: usize, out: &mut [f32]) {
    let mm = MatRef::from_row_major_slice(m, c, k);
    out.par_chunks_mut(ROW_BLOCK * c)
        .zip(x.par_chunks(ROW_BLOCK * k))
        .for_each(|(o, xb)| {
            let n = xb.len() / k;
            let xm = MatRef::from_row_major_slice(xb, n, k);
            let dst = MatMut::from_row_major_slice_mut(o, n, c);
            matmul(dst, Accum::Replace, xm, mm.transpose(), 1.0f32, Par::Seq);
        });
}

/// `out (n × c) = y (n × k) · m` where `m` is `k × c` row-major.
fn gemm_rows(y: &[f32], k: usize, m: &[f32], c: usize, out: &mut [f32]) {
    let mm = MatRef::from_row_major_slice(m, k, c);
    out.par_chunks_mut(ROW_BLOCK * c)
        .zip(y.par_chunks(ROW_BLOCK * k))
        .for_each(|(o, yb)| {
            let n = yb.len() / k;
            let ym = MatRef::from_row_major_slice(yb, n, k);
            let dst = MatMut::from_row_major_slice_mut(o, n, c);
            matmul(dst, Accum::Replace, ym, mm, 1.0f32, Par::Seq);
        });
}

impl LinearTransform {
    /// A transform from its matrix (`d_out × d_in`, row-major) and bias (`d_out` values,
    /// or empty for none). The reverse map is `Aᵀ` when `A` is orthonormal (rows or
    /// columns, to 1e-4), otherwise absent.
    ///
    /// # Errors
    /// Zero dimensions, wrong lengths, non-finite values.
    pub fn new(d_in: usize, d_out: usize, a: Vec<f32>, b: Vec<f32>) -> Result<LinearTransform> {
        if d_in == 0 || d_out == 0 {
            return Err(Error::invalid_param("d", "dimensions must be at least 1"));
        }
        if a.len() != d_in * d_out {
            return Err(Error::LengthMismatch {
                what: "transform matrix",
                expected: d_in * d_out,
                got: a.len(),
            });
        }
        let b = if b.is_empty() { vec![0.0; d_out] } else { b };
        if b.len() != d_out {
            return Err(Error::LengthMismatch {
                what: "transform bias",
                expected: d_out,
                got: b.len(),
            });
        }
        VectorsRef::new_finite(&a, d_in)?;
        VectorsRef::new_finite(&b, d_out)?;
        let mut t = LinearTransform {
            d_in,
            d_out,
            a,
            b,
            rev: None,
            name: "LinearTransform".into(),
        };
        if t.is_orthonormal(1e-4) {
            t.rev = Some(t.a.clone());
        }
        Ok(t)
    }

    /// A transform from trusted parts (no checks): used inside training loops.
    pub(crate) fn raw(d_in: usize, d_out: usize, a: Vec<f32>, rev: Option<Vec<f32>>) -> Self {
        LinearTransform {
            d_in,
            d_out,
            a,
            b: vec![0.0; d_out],
            rev,
            name: "LinearTransform".into(),
        }
    }

    pub(crate) fn with_reverse(mut self, rev: Option<Vec<f32>>) -> Self {
        self.rev = rev;
        self
    }

    pub(crate) fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// `out = y · R` without removing the bias (PCA adds its mean back instead).
    pub(crate) fn reverse_raw(&self, y: VectorsRef<'_>, out: &mut [f32]) -> Result<()> {
        let Some(rev) = &self.rev else {
            return Err(Error::not_supported(
                "reverse_transform",
                format!("{} (not invertible)", self.describe()),
            ));
        };
        y.check_dim(self.d_out)?;
        if out.len() != y.len() * self.d_in {
            return Err(Error::LengthMismatch {
                what: "reverse transform output",
                expected: y.len() * self.d_in,
                got: out.len(),
            });
        }
        gemm_rows(y.as_slice(), self.d_out, rev, self.d_in, out);
        Ok(())
    }

    /// Writes `matrix` (`A`), `bias` (`b`) and `reverse`: 0 for no reverse map, 1 when
    /// the reverse map is `A` itself (rebuilt on load), 2 when it is stored separately
    /// as `reverse_matrix`.
    pub(crate) fn save_parts(&self, w: &mut StateWriter<'_>) -> Result<()> {
        w.put_f32s("matrix", &self.a)?;
        w.put_f32s("bias", &self.b)?;
        match &self.rev {
            None => w.put_u64("reverse", 0),
            Some(rev) if same_bits(rev, &self.a) => w.put_u64("reverse", 1),
            Some(rev) => {
                w.put_u64("reverse", 2)?;
                w.put_f32s("reverse_matrix", rev)
            }
        }
    }

    /// Reads what [`LinearTransform::save_parts`] wrote for a `d_in → d_out` map named
    /// `name`, checking every length and that every value is finite.
    pub(crate) fn load_parts(
        r: &mut StateReader,
        d_in: usize,
        d_out: usize,
        name: &str,
    ) -> Result<LinearTransform> {
        let size = d_in
            .checked_mul(d_out)
            .ok_or_else(|| r.error("matrix", "the matrix size overflows"))?;
        let a = get_finite_f32s(r, "matrix", size)?;
        let b = get_finite_f32s(r, "bias", d_out)?;
        let rev = match r.get_u64("reverse")? {
            0 => None,
            1 => Some(a.clone()),
            2 => Some(get_finite_f32s(r, "reverse_matrix", size)?),
            v => {
                return Err(r.error(
                    "reverse",
                    format!("{v}: expected 0 (none), 1 (the matrix) or 2 (stored)"),
                ));
            }
        };
        Ok(LinearTransform {
            d_in,
            d_out,
            a,
            b,
            rev,
            name: name.to_string(),
        })
    }

    /// The matrix `A`, `d_out × d_in` row-major.
    pub fn matrix(&self) -> &[f32] {
        &self.a
    }

    /// The bias `b`.
    pub fn bias(&self) -> &[f32] {
        &self.b
    }

    /// `true` when `A·Aᵀ = I` (rows orthonormal, `d_out ≤ d_in`) or `Aᵀ·A = I`
    /// (columns orthonormal, `d_out ≥ d_in`) to within `tol`.
    pub fn is_orthonormal(&self, tol: f32) -> bool {
        let (r, c) = (self.d_out, self.d_in);
        if r <= c {
            (0..r).all(|i| {
                (0..r).all(|j| {
                    let dot: f32 = (0..c).map(|k| self.a[i * c + k] * self.a[j * c + k]).sum();
                    (dot - if i == j { 1.0 } else { 0.0 }).abs() <= tol
                })
            })
        } else {
            (0..c).all(|i| {
                (0..c).all(|j| {
                    let dot: f32 = (0..r).map(|k| self.a[k * c + i] * self.a[k * c + j]).sum();
                    (dot - if i == j { 1.0 } else { 0.0 }).abs() <= tol
                })
            })
        }
    }
}

/// `true` when both slices hold the same bit patterns (`-0.0` differs from `0.0`).
fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

impl VectorTransform for LinearTransform {
    /// Sections: `d_in` and `d_out` (checked on load), then `matrix`, `bias` and
    /// `reverse` (see the crate's `save_parts`): the reverse map is stored only when
    /// it is not `A` itself.
    fn save_state(&self, w: &mut StateWriter<'_>) -> Result<()> {
        w.put_usize("d_in", self.d_in)?;
        w.put_usize("d_out", self.d_out)?;
        self.save_parts(w)
    }

    /// Replaces the map with the saved one (same dimensions); unchanged on error.
    fn load_state(&mut self, r: &mut StateReader) -> Result<()> {
        expect_usize(r, "d_in", self.d_in, "the transform")?;
        expect_usize(r, "d_out", self.d_out, "the transform")?;
        *self = LinearTransform::load_parts(r, self.d_in, self.d_out, &self.name)?;
        Ok(())
    }

    fn d_in(&self) -> usize {
        self.d_in
    }

    fn d_out(&self) -> usize {
        self.d_out
    }

    fn describe(&self) -> String {
        format!("{}(d_in={}, d_out={})", self.name, self.d_in, self.d_out)
    }

    fn apply_into(&self, x: VectorsRef<'_>, out: &mut [f32]) -> Result<()> {
        x.check_dim(self.d_in)?;
        x.check_finite()?;
        if out.len() != x.len() * self.d_out {
            return Err(Error::LengthMismatch {
                what: "transform output",
                expected: x.len() * self.d_out,
                got: out.len(),
            });
        }
        gemm_rows_t(x.as_slice(), self.d_in, &self.a, self.d_out, out);
        if self.b.iter().any(|&v| v != 0.0) {
            for row in out.chunks_exact_mut(self.d_out) {
                for (o, &b) in row.iter_mut().zip(&self.b) {
                    *o += b;
                }
            }
        }
        Ok(())
    }

    fn reverse_into(&self, y: VectorsRef<'_>, out: &mut [f32]) -> Result<()> {
        if self.b.iter().all(|&v| v == 0.0) {
            return self.reverse_raw(y, out);
        }
        y.check_dim(self.d_out)?;
        let centred: Vec<f32> = y
            .as_slice()
            .chunks_exact(self.d_out)
            .flat_map(|r| r.iter().zip(&self.b).map(|(v, b)| v - b))
            .collect();
        self.reverse_raw(VectorsRef::new(&centred, self.d_out)?, out)
    }
}

/// A random `n × n` orthogonal matrix (Gaussian entries, then QR), in f64, seeded.
pub(crate) fn random_orthogonal(n: usize, seed: u64) -> Mat<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let g = Mat::<f64>::from_fn(n, n, |_, _| StandardNormal.sample(&mut rng));
    let qr = g.qr();
    let mut q = qr.compute_Q();
    // Fix the signs (R's diagonal positive) so the distribution is uniform (Haar).
    let r = qr.R();
    for j in 0..n {
        if r[(j, j)] < 0.0 {
            for i in 0..n {
                q[(i, j)] = -q[(i, j)];
            }
        }
    }
    q
}

/// The leading `rows × cols` block of a random orthogonal matrix, as row-major f32:
/// orthonormal rows when `rows ≤ cols`, orthonormal columns otherwise.
pub(crate) fn random_orthonormal_block(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let n = rows.max(cols);
    let q = random_orthogonal(n, seed);
    let mut a = Vec::with_capacity(rows * cols);
    for i in 0..rows {
        for j in 0..cols {
            a.push(q[(i, j)] as f32);
        }
    }
    a
}

/// A random rotation (Faiss's `RandomRotationMatrix`, factory token `RR[D]`): an
/// orthonormal `d_out × d_in` matrix from the QR decomposition of a seeded Gaussian
/// matrix. `train` draws it (seed 12345, as Faiss); [`RandomRotation::init`] with
/// another seed. `D > d` pads, `D < d` projects. Norms are preserved when `D ≥ d`.
///
/// ```
/// use vq_core::{VectorTransform, VectorsRef};
/// use vq_pq::RandomRotation;
/// let mut rr = RandomRotation::new(4, 4)?;
/// rr.init(7);
/// let x = [1.0f32, 2.0, 3.0, 4.0];
/// let y = rr.apply(VectorsRef::new(&x, 4)?)?;
/// let n2: f32 = y.iter().map(|v| v * v).sum();
/// assert!((n2 - 30.0).abs() < 1e-4);
/// let back = rr.reverse(VectorsRef::new(&y, 4)?)?;
/// assert!(back.iter().zip(&x).all(|(a, b)| (a - b).abs() < 1e-5));
/// # Ok::<(), vq_core::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct RandomRotation {
    d_in: usize,
    d_out: usize,
    lt: Option<LinearTransform>,
}

impl RandomRotation {
    /// Faiss's seed for `train`.
    pub const DEFAULT_SEED: u64 = 12345;

    /// An untrained rotation from `d_in` to `d_out` dimensions.
    ///
    /// # Errors
    /// Zero dimensions.
    pub fn new(d_in: usize, d_out: usize) -> Result<RandomRotation> {
        if d_in == 0 || d_out == 0 {
            return Err(Error::invalid_param("d", "dimensions must be at least 1"));
        }
        Ok(RandomRotation {
            d_in,
            d_out,
            lt: None,
        })
    }

    /// Draws the matrix with `seed`.
    pub fn init(&mut self, seed: u64) {
        let a = random_orthonormal_block(self.d_out, self.d_in, seed);
        let lt = LinearTransform {
            d_in: self.d_in,
            d_out: self.d_out,
            rev: Some(a.clone()),
            a,
            b: vec![0.0; self.d_out],
            name: "RandomRotation".into(),
        };
        self.lt = Some(lt);
    }

    /// The underlying linear map, once drawn.
    pub fn linear(&self) -> Option<&LinearTransform> {
        self.lt.as_ref()
    }

    fn lt(&self) -> Result<&LinearTransform> {
        self.lt.as_ref().ok_or_else(|| Error::NotTrained {
            what: "RandomRotation".into(),
        })
    }
}

impl VectorTransform for RandomRotation {
    /// Sections: `d_in` and `d_out` (checked on load), `trained` (0 or 1) and, once
    /// drawn, the matrix under `linear/` (its reverse is the matrix itself, not stored).
    fn save_state(&self, w: &mut StateWriter<'_>) -> Result<()> {
        w.put_usize("d_in", self.d_in)?;
        w.put_usize("d_out", self.d_out)?;
        w.put_bool("trained", self.lt.is_some())?;
        if let Some(lt) = &self.lt {
            w.scope("linear", |w| lt.save_parts(w))?;
        }
        Ok(())
    }

    /// Replaces the matrix (or makes the rotation undrawn); unchanged on error.
    fn load_state(&mut self, r: &mut StateReader) -> Result<()> {
        expect_usize(r, "d_in", self.d_in, "the rotation")?;
        expect_usize(r, "d_out", self.d_out, "the rotation")?;
        let lt = if r.get_bool("trained")? {
            let (d_in, d_out) = (self.d_in, self.d_out);
            Some(r.scope("linear", |r| {
                LinearTransform::load_parts(r, d_in, d_out, "RandomRotation")
            })?)
        } else {
            None
        };
        self.lt = lt;
        Ok(())
    }

    fn d_in(&self) -> usize {
        self.d_in
    }

    fn d_out(&self) -> usize {
        self.d_out
    }

    fn describe(&self) -> String {
        format!("RandomRotation(d_in={}, d_out={})", self.d_in, self.d_out)
    }

    fn is_trained(&self) -> bool {
        self.lt.is_some()
    }

    fn train(&mut self, x: VectorsRef<'_>) -> Result<()> {
        x.check_dim(self.d_in)?;
        if self.lt.is_none() {
            self.init(Self::DEFAULT_SEED);
        }
        Ok(())
    }

    fn apply_into(&self, x: VectorsRef<'_>, out: &mut [f32]) -> Result<()> {
        self.lt()?.apply_into(x, out)
    }

    fn reverse_into(&self, y: VectorsRef<'_>, out: &mut [f32]) -> Result<()> {
        self.lt()?.reverse_into(y, out)
    }
}
