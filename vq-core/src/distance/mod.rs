//! Distance kernels, chosen once at run time.
//!
//! Three layers: [`scalar`] (plain loops, the test oracle), [`portable`] (`wide`, chosen
//! at compile time) and, on x86-64, `std::arch` AVX2+FMA and AVX-512F kernels picked at
//! run time with `is_x86_feature_detected!`. [`Kernels::get`] resolves the best level
//! once and caches it; callers look the table up once per operation, never per distance.
//!
//! The environment variable `VQ_SIMD` (`scalar`, `portable`, `avx2`, `avx512`) caps the
//! level for tests and benchmarks, like Faiss's `FAISS_OPT_LEVEL`. A level the CPU lacks
//! falls back to the best one it has.
//!
//! ```
//! use vq_core::distance::{self, Kernels, SimdLevel};
//! let a = [1.0, 2.0, 3.0];
//! let b = [1.0, 0.0, 1.0];
//! assert_eq!(distance::l2_sqr(&a, &b), 8.0);
//! assert_eq!(distance::inner_product(&a, &b), 4.0);
//! let scalar = Kernels::for_level(SimdLevel::Scalar).unwrap();
//! assert_eq!(scalar.l2_sqr(&a, &b), Kernels::get().l2_sqr(&a, &b));
//! ```

pub mod portable;
pub mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::fmt;
use std::sync::OnceLock;

use crate::metric::Metric;

/// An instruction-set level a kernel table is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SimdLevel {
    /// Plain loops.
    Scalar,
    /// `wide` vectors (instructions chosen at compile time).
    Portable,
    /// x86-64 AVX2 with FMA.
    Avx2,
    /// x86-64 AVX-512F.
    Avx512,
}

impl SimdLevel {
    /// All levels, lowest first.
    pub const ALL: [SimdLevel; 4] = [
        SimdLevel::Scalar,
        SimdLevel::Portable,
        SimdLevel::Avx2,
        SimdLevel::Avx512,
    ];

    /// `true` when this CPU can run the level.
    pub fn is_supported(self) -> bool {
        match self {
            SimdLevel::Scalar | SimdLevel::Portable => true,
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The best level this CPU supports.
    pub fn best_supported() -> SimdLevel {
        SimdLevel::ALL
            .into_iter()
            .rev()
            .find(|l| l.is_supported())
            .unwrap_or(SimdLevel::Scalar)
    }

    /// Parses `scalar`, `portable`, `avx2`, `avx512` (the values of `VQ_SIMD`).
    pub fn parse(s: &str) -> Option<SimdLevel> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scalar" | "none" => Some(SimdLevel::Scalar),
            "portable" | "wide" => Some(SimdLevel::Portable),
            "avx2" => Some(SimdLevel::Avx2),
            "avx512" | "avx512f" => Some(SimdLevel::Avx512),
            _ => None,
        }
    }
}

impl fmt::Display for SimdLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SimdLevel::Scalar => "scalar",
            SimdLevel::Portable => "portable",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::Avx512 => "avx512",
        })
    }
}

type PairFn = unsafe fn(&[f32], &[f32]) -> f32;
type NormFn = unsafe fn(&[f32]) -> f32;
type NyFn = unsafe fn(&[f32], &[f32], &mut [f32]);
type HitsFn = unsafe fn(&[f32], &[f32], f32, &[f32], &mut Vec<u32>);
type FourFn = unsafe fn(&[f32], [&[f32]; 4]) -> [f32; 4];
type FourAheadFn = unsafe fn(&[f32], [&[f32]; 4], [&[f32]; 4]) -> [f32; 4];
type BytesFourFn = unsafe fn(&[f32], &[f32], [&[u8]; 4], [&[u8]; 4]) -> [f32; 4];

/// A table of distance kernels for one [`SimdLevel`].
///
/// A `Kernels` value can only be obtained for a level the CPU supports, which is what
/// makes calling its (possibly `target_feature`) functions sound.
#[derive(Clone, Copy)]
pub struct Kernels {
    level: SimdLevel,
    l2_sqr: PairFn,
    inner_product: PairFn,
    norm_sqr: NormFn,
    l2_sqr_ny: NyFn,
    inner_product_ny: NyFn,
    le_hits: HitsFn,
    l2_sqr_4: FourFn,
    inner_product_4: FourFn,
    l2_sqr_4_ahead: FourAheadFn,
    inner_product_4_ahead: FourAheadFn,
    u8_l2_4_ahead: BytesFourFn,
    u8_dot_4_ahead: BytesFourFn,
}

impl fmt::Debug for Kernels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kernels")
            .field("level", &self.level)
            .finish()
    }
}

static DETECTED: OnceLock<Kernels> = OnceLock::new();

impl Kernels {
    /// The kernels for the best level this CPU supports, capped by `VQ_SIMD` if set.
    /// Resolved once per process.
    pub fn get() -> &'static Kernels {
        DETECTED.get_or_init(|| {
            let best = SimdLevel::best_supported();
            let level = std::env::var("VQ_SIMD")
                .ok()
                .and_then(|s| SimdLevel::parse(&s))
                .map_or(best, |wanted| wanted.min(best));
            Kernels::for_level(level).unwrap_or_else(Kernels::scalar)
        })
    }

    /// The plain-loop kernels (always available).
    pub fn scalar() -> Kernels {
        Kernels {
            level: SimdLevel::Scalar,
            l2_sqr: scalar::l2_sqr,
            inner_product: scalar::inner_product,
            norm_sqr: scalar::norm_sqr,
            l2_sqr_ny: scalar::l2_sqr_ny,
            inner_product_ny: scalar::inner_product_ny,
            le_hits: scalar::le_hits,
            l2_sqr_4: scalar::l2_sqr_4,
            inner_product_4: scalar::inner_product_4,
            l2_sqr_4_ahead: |x, ys, next| {
                prefetch_rows(next, x.len());
                scalar::l2_sqr_4(x, ys)
            },
            inner_product_4_ahead: |x, ys, next| {
                prefetch_rows(next, x.len());
                scalar::inner_product_4(x, ys)
            },
            u8_l2_4_ahead: bytes_plain::<true>,
            u8_dot_4_ahead: bytes_plain::<false>,
        }
    }

    /// The kernels for `level`, or `None` when this CPU cannot run it.
    pub fn for_level(level: SimdLevel) -> Option<Kernels> {
        if !level.is_supported() {
            return None;
        }
        Some(match level {
            SimdLevel::Scalar => Kernels::scalar(),
            SimdLevel::Portable => Kernels {
                level,
                l2_sqr: portable::l2_sqr,
                inner_product: portable::inner_product,
                norm_sqr: portable::norm_sqr,
                l2_sqr_ny: portable::l2_sqr_ny,
                inner_product_ny: portable::inner_product_ny,
                le_hits: portable::le_hits,
                l2_sqr_4: portable::l2_sqr_4,
                inner_product_4: portable::inner_product_4,
                l2_sqr_4_ahead: |x, ys, next| {
                    prefetch_rows(next, x.len());
                    portable::l2_sqr_4(x, ys)
                },
                inner_product_4_ahead: |x, ys, next| {
                    prefetch_rows(next, x.len());
                    portable::inner_product_4(x, ys)
                },
                u8_l2_4_ahead: bytes_plain::<true>,
                u8_dot_4_ahead: bytes_plain::<false>,
            },
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2 => Kernels {
                level,
                l2_sqr: x86::l2_sqr_avx2,
                inner_product: x86::inner_product_avx2,
                norm_sqr: x86::norm_sqr_avx2,
                l2_sqr_ny: x86::l2_sqr_ny_avx2,
                inner_product_ny: x86::inner_product_ny_avx2,
                le_hits: x86::le_hits_avx2,
                l2_sqr_4: x86::l2_sqr_4_avx2,
                inner_product_4: x86::inner_product_4_avx2,
                l2_sqr_4_ahead: x86::l2_sqr_4_ahead_avx2,
                inner_product_4_ahead: x86::inner_product_4_ahead_avx2,
                u8_l2_4_ahead: x86::u8_affine_4_avx2::<true>,
                u8_dot_4_ahead: x86::u8_affine_4_avx2::<false>,
            },
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx512 => Kernels {
                level,
                l2_sqr: x86::l2_sqr_avx512,
                inner_product: x86::inner_product_avx512,
                norm_sqr: x86::norm_sqr_avx512,
                l2_sqr_ny: x86::l2_sqr_ny_avx512,
                inner_product_ny: x86::inner_product_ny_avx512,
                le_hits: x86::le_hits_avx512,
                l2_sqr_4: x86::l2_sqr_4_avx512,
                inner_product_4: x86::inner_product_4_avx512,
                l2_sqr_4_ahead: x86::l2_sqr_4_ahead_avx512,
                inner_product_4_ahead: x86::inner_product_4_ahead_avx512,
                u8_l2_4_ahead: x86::u8_affine_4_avx512::<true>,
                u8_dot_4_ahead: x86::u8_affine_4_avx512::<false>,
            },
            #[cfg(not(target_arch = "x86_64"))]
            _ => return None,
        })
    }

    /// The level these kernels run at.
    pub fn level(&self) -> SimdLevel {
        self.level
    }

    /// Squared L2 distance `Σ (aᵢ − bᵢ)²`.
    ///
    /// # Panics
    /// If `a.len() != b.len()`.
    #[inline]
    pub fn l2_sqr(&self, a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len(), "l2_sqr: slices of different lengths");
        // SAFETY: the table was built for a level this CPU supports; lengths are equal.
        unsafe { (self.l2_sqr)(a, b) }
    }

    /// Inner product `Σ aᵢ bᵢ`.
    ///
    /// # Panics
    /// If `a.len() != b.len()`.
    #[inline]
    pub fn inner_product(&self, a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(
            a.len(),
            b.len(),
            "inner_product: slices of different lengths"
        );
        // SAFETY: the table was built for a level this CPU supports; lengths are equal.
        unsafe { (self.inner_product)(a, b) }
    }

    /// Squared L2 norm `Σ aᵢ²`.
    #[inline]
    pub fn norm_sqr(&self, a: &[f32]) -> f32 {
        // SAFETY: the table was built for a level this CPU supports.
        unsafe { (self.norm_sqr)(a) }
    }

    /// Squared L2 distances from `x` to four rows at once (Faiss's
    /// `fvec_L2sqr_batch_4`): the rows are read side by side, so four memory streams
    /// are in flight where [`Kernels::l2_sqr`] has one. Each result equals
    /// `l2_sqr(x, ys[i])` up to the order of the additions (exactly on the scalar and
    /// portable levels, within rounding on the SIMD ones).
    ///
    /// # Panics
    /// If a row's length differs from `x`'s.
    #[inline]
    pub fn l2_sqr_4(&self, x: &[f32], ys: [&[f32]; 4]) -> [f32; 4] {
        assert!(
            ys.iter().all(|y| y.len() == x.len()),
            "l2_sqr_4: rows of different lengths"
        );
        // SAFETY: supported level; lengths checked above.
        unsafe { (self.l2_sqr_4)(x, ys) }
    }

    /// Inner products of `x` with four rows at once; see [`Kernels::l2_sqr_4`].
    ///
    /// # Panics
    /// If a row's length differs from `x`'s.
    #[inline]
    pub fn inner_product_4(&self, x: &[f32], ys: [&[f32]; 4]) -> [f32; 4] {
        assert!(
            ys.iter().all(|y| y.len() == x.len()),
            "inner_product_4: rows of different lengths"
        );
        // SAFETY: supported level; lengths checked above.
        unsafe { (self.inner_product_4)(x, ys) }
    }

    /// [`Kernels::l2_sqr_4`] that also starts loading the four rows of `next` (the rows
    /// the caller reads next), a line of each per line it reads of `ys`: a graph search
    /// reading rows in quads keeps the next quad's memory in flight. Results equal
    /// [`Kernels::l2_sqr_4`]'s exactly; `next` is only prefetched (up to `x.len()`
    /// values of each row), never read.
    ///
    /// # Panics
    /// If a row of `ys` differs in length from `x`.
    #[inline]
    pub fn l2_sqr_4_ahead(&self, x: &[f32], ys: [&[f32]; 4], next: [&[f32]; 4]) -> [f32; 4] {
        assert!(
            ys.iter().all(|y| y.len() == x.len()),
            "l2_sqr_4_ahead: rows of different lengths"
        );
        // SAFETY: supported level; lengths checked above.
        unsafe { (self.l2_sqr_4_ahead)(x, ys, next) }
    }

    /// [`Kernels::inner_product_4`] prefetching `next`; see [`Kernels::l2_sqr_4_ahead`].
    ///
    /// # Panics
    /// If a row of `ys` differs in length from `x`.
    #[inline]
    pub fn inner_product_4_ahead(&self, x: &[f32], ys: [&[f32]; 4], next: [&[f32]; 4]) -> [f32; 4] {
        assert!(
            ys.iter().all(|y| y.len() == x.len()),
            "inner_product_4_ahead: rows of different lengths"
        );
        // SAFETY: supported level; lengths checked above.
        unsafe { (self.inner_product_4_ahead)(x, ys, next) }
    }

    /// `Σᵢ (cᵢ·aᵢ + bᵢ)²` over the first `a.len()` bytes `c` of each of four rows: the
    /// squared L2 distances from a query to four 8-bit scalar-quantized vectors when `a`
    /// holds the quantizer's steps and `b = min − query`. Also starts loading the rows of
    /// `next` (the ones the caller scores next; only prefetched, never read). Results
    /// equal the scalar level's up to rounding.
    ///
    /// # Panics
    /// If `b` or a row of `codes` is shorter than `a`.
    #[inline]
    pub fn u8_l2_4_ahead(
        &self,
        a: &[f32],
        b: &[f32],
        codes: [&[u8]; 4],
        next: [&[u8]; 4],
    ) -> [f32; 4] {
        assert!(
            b.len() >= a.len() && codes.iter().all(|c| c.len() >= a.len()),
            "u8_l2_4_ahead: rows shorter than the query"
        );
        // SAFETY: supported level; lengths checked above.
        unsafe { (self.u8_l2_4_ahead)(a, b, codes, next) }
    }

    /// `Σᵢ cᵢ·aᵢ` over the first `a.len()` bytes `c` of each of four rows (inner products
    /// with 8-bit codes, before the query's constant part), prefetching `next`; see
    /// [`Kernels::u8_l2_4_ahead`].
    ///
    /// # Panics
    /// If a row of `codes` is shorter than `a`.
    #[inline]
    pub fn u8_dot_4_ahead(&self, a: &[f32], codes: [&[u8]; 4], next: [&[u8]; 4]) -> [f32; 4] {
        assert!(
            codes.iter().all(|c| c.len() >= a.len()),
            "u8_dot_4_ahead: rows shorter than the query"
        );
        // SAFETY: supported level; lengths checked above (`b` is not read).
        unsafe { (self.u8_dot_4_ahead)(a, &[], codes, next) }
    }

    /// Squared L2 distances from `x` to each of the `out.len()` rows of `ys`.
    ///
    /// # Panics
    /// If `ys.len() != out.len() * x.len()` or `x` is empty.
    #[inline]
    pub fn l2_sqr_ny(&self, x: &[f32], ys: &[f32], out: &mut [f32]) {
        assert!(
            !x.is_empty() && ys.len() == out.len() * x.len(),
            "l2_sqr_ny: bad sizes"
        );
        // SAFETY: supported level; sizes checked above.
        unsafe { (self.l2_sqr_ny)(x, ys, out) }
    }

    /// Inner products of `x` with each of the `out.len()` rows of `ys`.
    ///
    /// # Panics
    /// If `ys.len() != out.len() * x.len()` or `x` is empty.
    #[inline]
    pub fn inner_product_ny(&self, x: &[f32], ys: &[f32], out: &mut [f32]) {
        assert!(
            !x.is_empty() && ys.len() == out.len() * x.len(),
            "inner_product_ny: bad sizes"
        );
        // SAFETY: supported level; sizes checked above.
        unsafe { (self.inner_product_ny)(x, ys, out) }
    }

    /// Appends to `hits` every index `i` with `(offsets[i] + bias) + values[i] <=
    /// thresholds[i]` (`offsets` may be empty: zeros). This is the vectorised pre-check
    /// of the fused top-k scan: `values` is one column of a GEMM tile, `offsets` the
    /// queries' squared norms, `bias` a database vector's squared norm, `thresholds` the
    /// queries' current k-th best keys.
    ///
    /// # Panics
    /// If `thresholds` (or a non-empty `offsets`) is not as long as `values`.
    #[inline]
    pub fn le_hits(
        &self,
        values: &[f32],
        offsets: &[f32],
        bias: f32,
        thresholds: &[f32],
        hits: &mut Vec<u32>,
    ) {
        assert!(
            thresholds.len() == values.len()
                && (offsets.is_empty() || offsets.len() == values.len()),
            "le_hits: bad sizes"
        );
        // SAFETY: supported level; sizes checked above.
        unsafe { (self.le_hits)(values, offsets, bias, thresholds, hits) }
    }

    /// The distance of `metric` between `a` and `b` (squared L2 or inner product).
    #[inline]
    pub fn distance(&self, metric: Metric, a: &[f32], b: &[f32]) -> f32 {
        match metric {
            Metric::L2 => self.l2_sqr(a, b),
            Metric::InnerProduct => self.inner_product(a, b),
        }
    }

    /// Distances of `metric` from `x` to each row of `ys`: on every level, bit for bit
    /// [`Kernels::distance`] row by row (so a scan and a rescoring agree).
    #[inline]
    pub fn distance_ny(&self, metric: Metric, x: &[f32], ys: &[f32], out: &mut [f32]) {
        match metric {
            Metric::L2 => self.l2_sqr_ny(x, ys, out),
            Metric::InnerProduct => self.inner_product_ny(x, ys, out),
        }
    }
}

/// Asks the CPU to start loading the first `lines` cache lines (64 bytes each) of `data`
/// into L1, so a later read does not wait on memory. A hint only: it never faults and does
/// nothing on targets without a prefetch instruction. Graph searches call it on the
/// neighbours they are about to score.
#[inline(always)]
pub fn prefetch<T>(data: &[T], lines: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let bytes = std::mem::size_of_val(data);
        let p = data.as_ptr().cast::<i8>();
        let mut off = 0;
        let mut l = 0;
        while l < lines && off < bytes {
            // SAFETY: a prefetch is a hint that never faults; `p + off` stays inside `data`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.add(off)) };
            off += 64;
            l += 1;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (data, lines);
    }
}

/// The `_ahead` kernels' prefetch on levels without a fused one: the first `len` values
/// of each row (or all of a shorter one), up front.
#[inline]
fn prefetch_rows(next: [&[f32]; 4], len: usize) {
    for r in next {
        prefetch(&r[..len.min(r.len())], usize::MAX);
    }
}

/// The byte-row kernels on levels without their own: prefetch `next`, then plain loops.
fn bytes_plain<const L2: bool>(
    a: &[f32],
    b: &[f32],
    codes: [&[u8]; 4],
    next: [&[u8]; 4],
) -> [f32; 4] {
    for r in next {
        prefetch(&r[..a.len().min(r.len())], usize::MAX);
    }
    scalar::u8_affine_4::<L2>(a, b, codes)
}

/// Squared L2 distance with the process's kernels. See [`Kernels::l2_sqr`].
#[inline]
pub fn l2_sqr(a: &[f32], b: &[f32]) -> f32 {
    Kernels::get().l2_sqr(a, b)
}

/// Inner product with the process's kernels. See [`Kernels::inner_product`].
#[inline]
pub fn inner_product(a: &[f32], b: &[f32]) -> f32 {
    Kernels::get().inner_product(a, b)
}

/// Squared norm with the process's kernels.
#[inline]
pub fn norm_sqr(a: &[f32]) -> f32 {
    Kernels::get().norm_sqr(a)
}

/// Squared norms of every row of `x` (`x.len() / dim` values).
pub fn norms_sqr(x: crate::VectorsRef<'_>) -> Vec<f32> {
    let k = Kernels::get();
    x.rows().map(|r| k.norm_sqr(r)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_level_agrees_on_small_integers() {
        for level in SimdLevel::ALL {
            let Some(k) = Kernels::for_level(level) else {
                continue;
            };
            for d in [1usize, 3, 8, 15, 16, 17, 33, 64, 65, 100] {
                let a: Vec<f32> = (0..d).map(|i| (i % 7) as f32 - 3.0).collect();
                let b: Vec<f32> = (0..d).map(|i| (i % 5) as f32).collect();
                assert_eq!(k.l2_sqr(&a, &b), scalar::l2_sqr(&a, &b), "{level} d={d}");
                assert_eq!(k.inner_product(&a, &b), scalar::inner_product(&a, &b));
                assert_eq!(k.norm_sqr(&a), scalar::norm_sqr(&a));
                let rows: Vec<Vec<f32>> = (0..4)
                    .map(|r| (0..d).map(|i| ((i + 3 * r) % 9) as f32 - 4.0).collect())
                    .collect();
                let ys = [&rows[0][..], &rows[1], &rows[2], &rows[3]];
                let (l2, ip) = (k.l2_sqr_4(&a, ys), k.inner_product_4(&a, ys));
                for r in 0..4 {
                    assert_eq!(l2[r], scalar::l2_sqr(&a, ys[r]), "{level} d={d} row {r}");
                    assert_eq!(ip[r], scalar::inner_product(&a, ys[r]), "{level} d={d}");
                }
            }
        }
    }

    #[test]
    fn many_rows_equal_single_rows_bit_for_bit_on_every_level() {
        // Non-integer values, so any change of summation order would show.
        let val = |i: usize| ((i * 7919 % 1013) as f32 / 101.0).sin() * 3.0;
        for level in SimdLevel::ALL {
            let Some(k) = Kernels::for_level(level) else {
                continue;
            };
            for d in 1..=300usize {
                let x: Vec<f32> = (0..d).map(|i| val(i + 9000)).collect();
                let ys: Vec<f32> = (0..9 * d).map(val).collect();
                for metric in [Metric::L2, Metric::InnerProduct] {
                    let mut out = [0f32; 9];
                    k.distance_ny(metric, &x, &ys, &mut out);
                    for (r, &o) in out.iter().enumerate() {
                        let one = k.distance(metric, &x, &ys[r * d..(r + 1) * d]);
                        assert_eq!(o.to_bits(), one.to_bits(), "{level} {metric} d={d} row {r}");
                    }
                }
            }
        }
    }

    #[test]
    fn ahead_kernels_equal_the_plain_ones_on_every_level() {
        // Non-integer values, so any change of summation order would show.
        let val = |i: usize| ((i * 7919 % 1013) as f32 / 101.0).sin();
        let data: Vec<f32> = (0..4096).map(val).collect();
        for level in SimdLevel::ALL {
            let Some(k) = Kernels::for_level(level) else {
                continue;
            };
            for d in [1usize, 5, 16, 31, 64, 100, 300] {
                let x: Vec<f32> = (0..d).map(|i| val(i + 5000)).collect();
                let ys = [0, 3, 7, 9].map(|r| &data[r * d..][..d]);
                // `next` rows of every shape: whole rows, the rest of the data, short, empty.
                let nexts: [[&[f32]; 4]; 3] = [
                    [1, 2, 4, 5].map(|r| &data[r * d..][..d]),
                    [&data[d..], &data[..0], &data[..1], &data[4000..]],
                    [&[]; 4],
                ];
                for next in nexts {
                    assert_eq!(
                        k.l2_sqr_4_ahead(&x, ys, next),
                        k.l2_sqr_4(&x, ys),
                        "{level} {d}"
                    );
                    let ip = k.inner_product_4_ahead(&x, ys, next);
                    assert_eq!(ip, k.inner_product_4(&x, ys), "{level} d={d}");
                }
            }
        }
    }

    #[test]
    fn byte_row_kernels_agree_with_plain_loops_on_every_level() {
        let val = |i: usize| ((i * 7919 % 1013) as f32 / 101.0).sin();
        let bytes: Vec<u8> = (0..4096).map(|i| (i * 7919 % 251) as u8).collect();
        for level in SimdLevel::ALL {
            let Some(k) = Kernels::for_level(level) else {
                continue;
            };
            for d in [1usize, 5, 8, 15, 16, 31, 50, 64, 100, 300] {
                let a: Vec<f32> = (0..d).map(|i| 0.01 + val(i).abs()).collect();
                let b: Vec<f32> = (0..d).map(|i| val(i + 5000)).collect();
                // Rows may be longer than the query: only the first `d` bytes count.
                let codes = [0, 3, 7, 9].map(|r| &bytes[r * d..][..d + 1]);
                let nexts: [[&[u8]; 4]; 2] = [[&bytes[d..], &[], &bytes[..1], &[]], [&[]; 4]];
                let want_l2 = scalar::u8_affine_4::<true>(&a, &b, codes);
                let want_ip = scalar::u8_affine_4::<false>(&a, &b, codes);
                for next in nexts {
                    let l2 = k.u8_l2_4_ahead(&a, &b, codes, next);
                    let ip = k.u8_dot_4_ahead(&a, codes, next);
                    for r in 0..4 {
                        let tol = 1e-4 * (1.0 + want_l2[r].abs());
                        assert!((l2[r] - want_l2[r]).abs() <= tol, "{level} d={d}");
                        let tol = 1e-4 * (1.0 + want_ip[r].abs());
                        assert!((ip[r] - want_ip[r]).abs() <= tol, "{level} d={d}");
                    }
                }
            }
        }
        // An exact case: codes 0..d against a = 1, b = −1 give Σ (i − 1)².
        let k = Kernels::get();
        let c: Vec<u8> = (0..20).collect();
        let a = vec![1.0f32; 20];
        let b = vec![-1.0f32; 20];
        let want: f32 = (0..20).map(|i: i32| ((i - 1) * (i - 1)) as f32).sum();
        assert_eq!(k.u8_l2_4_ahead(&a, &b, [&c; 4], [&[]; 4]), [want; 4]);
        assert_eq!(k.u8_dot_4_ahead(&a, [&c; 4], [&[]; 4]), [190.0; 4]);
    }

    #[test]
    fn env_names_parse() {
        assert_eq!(SimdLevel::parse("AVX512"), Some(SimdLevel::Avx512));
        assert_eq!(SimdLevel::parse("scalar"), Some(SimdLevel::Scalar));
        assert_eq!(SimdLevel::parse("sse9"), None);
        assert!(SimdLevel::Scalar.is_supported());
    }
}
