//! Scalar quantization: every component becomes a few bits on a trained range, or a
//! 16-bit float (Faiss's `ScalarQuantizer`).

use std::fmt;

use rayon::prelude::*;
use vq_core::persist::{StateReader, StateWriter};
use vq_core::{AdcCodec, CodeDistance, Codec, Error, Metric, Result, VectorsRef};

use crate::bits::{BitReader, BitWriter, packed_len};
use crate::simd::{self, Block, BlockKind};
use crate::state::{expect_usize, get_f32_scalar, get_finite_f32s};

/// Vectors encoded or decoded per parallel task.
const BLOCK: usize = 4096;

/// What a component is turned into (Faiss's `QuantizerType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SqType {
    /// 8 bits, one trained range per dimension (`SQ8`).
    Q8,
    /// 6 bits, per-dimension ranges (`SQ6`); four components in three bytes.
    Q6,
    /// 4 bits, per-dimension ranges (`SQ4`); two components per byte.
    Q4,
    /// 8 bits, one range for all dimensions (`SQ8_uniform`... Faiss's `QT_8bit_uniform`).
    Q8Uniform,
    /// 4 bits, one range for all dimensions.
    Q4Uniform,
    /// IEEE half precision (`SQfp16`); no training.
    Fp16,
    /// bfloat16 (`SQbf16`); no training.
    Bf16,
    /// The value cast to a byte, for data already in `0..=255` (`SQ8_direct`).
    Q8Direct,
    /// The value plus 128 cast to a byte, for data in `-128..=127`
    /// (`SQ8_direct_signed`).
    Q8DirectSigned,
}

impl SqType {
    /// Bits per component.
    pub fn bits(self) -> usize {
        match self {
            SqType::Q8 | SqType::Q8Uniform | SqType::Q8Direct | SqType::Q8DirectSigned => 8,
            SqType::Q6 => 6,
            SqType::Q4 | SqType::Q4Uniform => 4,
            SqType::Fp16 | SqType::Bf16 => 16,
        }
    }

    /// `true` for the types whose range is learnt from data.
    pub fn needs_training(self) -> bool {
        !matches!(
            self,
            SqType::Fp16 | SqType::Bf16 | SqType::Q8Direct | SqType::Q8DirectSigned
        )
    }

    fn uniform(self) -> bool {
        matches!(self, SqType::Q8Uniform | SqType::Q4Uniform)
    }

    fn levels(self) -> f32 {
        ((1u32 << self.bits()) - 1) as f32
    }

    /// Parses the factory suffix: `8`, `6`, `4`, `8_uniform`, `4_uniform`, `fp16`,
    /// `bf16`, `8_direct`, `8_direct_signed` (the part after `SQ`).
    pub fn parse(s: &str) -> Option<SqType> {
        Some(match s {
            "8" => SqType::Q8,
            "6" => SqType::Q6,
            "4" => SqType::Q4,
            "8_uniform" => SqType::Q8Uniform,
            "4_uniform" => SqType::Q4Uniform,
            "fp16" => SqType::Fp16,
            "bf16" => SqType::Bf16,
            "8_direct" => SqType::Q8Direct,
            "8_direct_signed" => SqType::Q8DirectSigned,
            _ => return None,
        })
    }
}

impl fmt::Display for SqType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SqType::Q8 => "SQ8",
            SqType::Q6 => "SQ6",
            SqType::Q4 => "SQ4",
            SqType::Q8Uniform => "SQ8_uniform",
            SqType::Q4Uniform => "SQ4_uniform",
            SqType::Fp16 => "SQfp16",
            SqType::Bf16 => "SQbf16",
            SqType::Q8Direct => "SQ8_direct",
            SqType::Q8DirectSigned => "SQ8_direct_signed",
        })
    }
}

/// How the trained range `[vmin, vmax]` is chosen (Faiss's `RangeStat`).
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum RangeStat {
    /// Minimum to maximum, widened by `margin × (max − min)` on both sides (default,
    /// margin 0).
    MinMax {
        /// Relative widening.
        margin: f32,
    },
    /// `mean ± k·std`.
    MeanStd {
        /// Number of standard deviations.
        k: f32,
    },
    /// The `fraction` and `1 − fraction` quantiles (outliers clipped).
    Quantiles {
        /// Fraction cut at each end, in `[0, 0.5]`.
        fraction: f32,
    },
}

impl Default for RangeStat {
    fn default() -> Self {
        RangeStat::MinMax { margin: 0.0 }
    }
}

/// A scalar quantizer: `d` components, each coded independently.
///
/// Trained types map each component onto its range `[vmin, vmin + vdiff]` and cut it
/// into `2^bits − 1` equal steps; a code decodes to the centre of its step, so inside
/// the range the error is at most half a step. Distances are computed from the codes
/// directly by SIMD kernels (`c·scale + offset − q` in registers), not by decoding to a
/// buffer first.
///
/// ```
/// use vq_core::{Codec, VectorsRef};
/// use vq_pq::{ScalarQuantizer, SqType};
/// let x = [0.0f32, 10.0, 1.0, 20.0, 0.5, 15.0];
/// let mut sq = ScalarQuantizer::new(2, SqType::Q8)?;
/// sq.train(VectorsRef::new(&x, 2)?)?;
/// let codes = sq.encode(VectorsRef::new(&x, 2)?)?;
/// assert_eq!(codes.len(), 6);
/// let back = sq.decode(&codes)?;
/// assert!((back[5] - 15.0).abs() <= 0.5 * 10.0 / 255.0 + 1e-5);
/// # Ok::<(), vq_core::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct ScalarQuantizer {
    d: usize,
    qtype: SqType,
    rangestat: RangeStat,
    /// Per-dimension lower ends (all equal for uniform types); empty until trained.
    vmin: Vec<f32>,
    /// Per-dimension widths.
    vdiff: Vec<f32>,
}

impl ScalarQuantizer {
    /// A quantizer of dimension `d` with the default range statistic (min-max).
    ///
    /// # Errors
    /// `d == 0`.
    pub fn new(d: usize, qtype: SqType) -> Result<ScalarQuantizer> {
        if d == 0 {
            return Err(Error::invalid_param(
                "d",
                "the dimension must be at least 1",
            ));
        }
        let mut sq = ScalarQuantizer {
            d,
            qtype,
            rangestat: RangeStat::default(),
            vmin: Vec::new(),
            vdiff: Vec::new(),
        };
        if !qtype.needs_training() {
            let (lo, w) = match qtype {
                SqType::Q8Direct => (0.0, 255.0),
                SqType::Q8DirectSigned => (-128.0, 255.0),
                _ => (0.0, 0.0),
            };
            sq.vmin = vec![lo; d];
            sq.vdiff = vec![w; d];
        }
        Ok(sq)
    }

    /// Sets the range statistic used by [`Codec::train`].
    ///
    /// # Errors
    /// A negative or non-finite argument, or a quantile fraction above 0.5.
    pub fn with_range_stat(mut self, rs: RangeStat) -> Result<Self> {
        let ok = match rs {
            RangeStat::MinMax { margin } => margin.is_finite() && margin >= 0.0,
            RangeStat::MeanStd { k } => k.is_finite() && k > 0.0,
            RangeStat::Quantiles { fraction } => (0.0..=0.5).contains(&fraction),
        };
        if !ok {
            return Err(Error::invalid_param(
                "rangestat",
                format!("{rs:?}: the argument is out of range"),
            ));
        }
        self.rangestat = rs;
        Ok(self)
    }

    /// The quantizer type.
    pub fn qtype(&self) -> SqType {
        self.qtype
    }

    /// The range statistic.
    pub fn range_stat(&self) -> RangeStat {
        self.rangestat
    }

    /// Per-dimension lower ends of the trained ranges.
    pub fn vmin(&self) -> &[f32] {
        &self.vmin
    }

    /// Per-dimension widths of the trained ranges.
    pub fn vdiff(&self) -> &[f32] {
        &self.vdiff
    }

    /// Installs trained ranges (`d` values each), e.g. from a file.
    ///
    /// # Errors
    /// Wrong lengths, non-finite values or negative widths.
    pub fn set_ranges(&mut self, vmin: &[f32], vdiff: &[f32]) -> Result<()> {
        if vmin.len() != self.d || vdiff.len() != self.d {
            return Err(Error::LengthMismatch {
                what: "SQ ranges",
                expected: self.d,
                got: vmin.len().min(vdiff.len()),
            });
        }
        if vmin.iter().chain(vdiff).any(|v| !v.is_finite()) || vdiff.iter().any(|&v| v < 0.0) {
            return Err(Error::invalid_param(
                "vdiff",
                "ranges must be finite, widths ≥ 0",
            ));
        }
        self.vmin = vmin.to_vec();
        self.vdiff = vdiff.to_vec();
        Ok(())
    }

    fn check_trained(&self) -> Result<()> {
        if self.vmin.is_empty() {
            Err(Error::NotTrained {
                what: format!("ScalarQuantizer({})", self.qtype),
            })
        } else {
            Ok(())
        }
    }

    /// `(vmin, vdiff)` of a set of values under the quantile statistic (sorts them).
    fn range_of(&self, values: &mut [f32]) -> (f32, f32) {
        let n = values.len();
        let fraction = match self.rangestat {
            RangeStat::Quantiles { fraction } => fraction,
            _ => 0.0,
        };
        values.sort_unstable_by(f32::total_cmp);
        let o = ((fraction * n as f32) as usize).min((n - 1) / 2);
        let (lo, hi) = (values[o], values[n - 1 - o]);
        (lo, (hi - lo).max(0.0))
    }

    #[inline]
    fn encode_component(&self, i: usize, x: f32) -> u32 {
        match self.qtype {
            SqType::Q8Direct => x.clamp(0.0, 255.0) as u32,
            SqType::Q8DirectSigned => (x + 128.0).clamp(0.0, 255.0) as u32,
            _ => {
                let w = self.vdiff[i];
                if w <= 0.0 {
                    return 0;
                }
                let t = ((x - self.vmin[i]) / w).clamp(0.0, 1.0);
                let lv = self.qtype.levels();
                (t * lv).min(lv) as u32
            }
        }
    }

    #[inline]
    fn decode_component(&self, i: usize, c: u32) -> f32 {
        match self.qtype {
            SqType::Q8Direct => c as f32,
            SqType::Q8DirectSigned => c as f32 - 128.0,
            _ => self.vmin[i] + (c as f32 + 0.5) / self.qtype.levels() * self.vdiff[i],
        }
    }

    fn encode_one(&self, enc8: &simd::Sq8Encode, x: &[f32], code: &mut [u8]) {
        match self.qtype {
            SqType::Fp16 => {
                for (c, &v) in code.chunks_exact_mut(2).zip(x) {
                    let h = half::f16::from_f32(v.clamp(-65504.0, 65504.0));
                    c.copy_from_slice(&h.to_bits().to_le_bytes());
                }
            }
            SqType::Bf16 => {
                for (c, &v) in code.chunks_exact_mut(2).zip(x) {
                    // Rounding to nearest would carry the largest finite values
                    // (above bf16::MAX) to infinity: clamp them, as fp16 does.
                    let m = half::bf16::MAX.to_f32();
                    let h = half::bf16::from_f32(v.clamp(-m, m));
                    c.copy_from_slice(&h.to_bits().to_le_bytes());
                }
            }
            SqType::Q8 | SqType::Q8Uniform => {
                enc8.run(x, &self.vmin, &self.vdiff, code);
            }
            SqType::Q8Direct => {
                for (c, &v) in code.iter_mut().zip(x) {
                    *c = v.clamp(0.0, 255.0) as u8;
                }
            }
            SqType::Q8DirectSigned => {
                for (c, &v) in code.iter_mut().zip(x) {
                    *c = (v + 128.0).clamp(0.0, 255.0) as u8;
                }
            }
            t => {
                let nb = t.bits();
                let mut w = BitWriter::new(code);
                for (i, &v) in x.iter().enumerate() {
                    w.write(self.encode_component(i, v), nb);
                }
                // Clear the padding bits so equal vectors give equal codes.
                let used = x.len() * nb;
                if !used.is_multiple_of(8) {
                    let last = code.len() - 1;
                    code[last] &= (1u8 << (used % 8)) - 1;
                }
            }
        }
    }

    fn decode_one(&self, code: &[u8], out: &mut [f32]) {
        match self.qtype {
            SqType::Fp16 => {
                for (o, c) in out.iter_mut().zip(code.chunks_exact(2)) {
                    *o = half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
                }
            }
            SqType::Bf16 => {
                for (o, c) in out.iter_mut().zip(code.chunks_exact(2)) {
                    *o = half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
                }
            }
            t if t.bits() == 8 => {
                for (i, (o, &c)) in out.iter_mut().zip(code).enumerate() {
                    *o = self.decode_component(i, u32::from(c));
                }
            }
            t => {
                let nb = t.bits();
                let mut r = BitReader::new(code);
                for (i, o) in out.iter_mut().enumerate() {
                    *o = self.decode_component(i, r.read(nb));
                }
            }
        }
    }
}

/// Rows per task of the parallel range passes.
const RANGE_ROWS: usize = 1024;

/// Per-column minimum and maximum in one row-major pass (parallel over row blocks).
fn column_min_max(x: VectorsRef<'_>) -> (Vec<f32>, Vec<f32>) {
    let d = x.dim();
    let init = || (vec![f32::INFINITY; d], vec![f32::NEG_INFINITY; d]);
    x.as_slice()
        .par_chunks(RANGE_ROWS * d)
        .map(|blk| {
            let (mut lo, mut hi) = init();
            for r in blk.chunks_exact(d) {
                for ((l, h), &v) in lo.iter_mut().zip(hi.iter_mut()).zip(r) {
                    *l = l.min(v);
                    *h = h.max(v);
                }
            }
            (lo, hi)
        })
        .reduce(init, |(mut lo, mut hi), (l2, h2)| {
            for (a, b) in lo.iter_mut().zip(&l2) {
                *a = a.min(*b);
            }
            for (a, b) in hi.iter_mut().zip(&h2) {
                *a = a.max(*b);
            }
            (lo, hi)
        })
}

/// Sums of `f(row value, column)` per column in f64, in one row-major parallel pass.
fn column_sums(x: VectorsRef<'_>, f: impl Fn(f32, usize) -> f64 + Sync) -> Vec<f64> {
    let d = x.dim();
    x.as_slice()
        .par_chunks(RANGE_ROWS * d)
        .map(|blk| {
            let mut acc = vec![0f64; d];
            for r in blk.chunks_exact(d) {
                for (j, (a, &v)) in acc.iter_mut().zip(r).enumerate() {
                    *a += f(v, j);
                }
            }
            acc
        })
        .reduce(
            || vec![0f64; d],
            |mut a, b| {
                for (x, y) in a.iter_mut().zip(&b) {
                    *x += y;
                }
                a
            },
        )
}

/// Per-column mean and (population) variance, two row-major passes.
fn column_mean_var(x: VectorsRef<'_>) -> (Vec<f64>, Vec<f64>) {
    let n = x.len() as f64;
    let mean: Vec<f64> = column_sums(x, |v, _| f64::from(v))
        .into_iter()
        .map(|s| s / n)
        .collect();
    let var = column_sums(x, |v, j| (f64::from(v) - mean[j]).powi(2))
        .into_iter()
        .map(|s| s / n)
        .collect();
    (mean, var)
}

impl Codec for ScalarQuantizer {
    /// Sections: `d` and `qtype` (e.g. `"SQ8"`; both checked on load), `range_stat`
    /// (`"min_max"`, `"mean_std"` or `"quantiles"`) with its argument `range_stat_arg`,
    /// `trained` (0 or 1) and, for trained types once trained, the ranges `vmin` and
    /// `vdiff` (`d` floats each). Types without training store no ranges.
    fn save_state(&self, w: &mut StateWriter<'_>) -> Result<()> {
        w.put_usize("d", self.d)?;
        w.put_str("qtype", &self.qtype.to_string())?;
        let (kind, arg) = match self.rangestat {
            RangeStat::MinMax { margin } => ("min_max", margin),
            RangeStat::MeanStd { k } => ("mean_std", k),
            RangeStat::Quantiles { fraction } => ("quantiles", fraction),
        };
        w.put_str("range_stat", kind)?;
        w.put_f64("range_stat_arg", f64::from(arg))?;
        let trained = Codec::is_trained(self);
        w.put_bool("trained", trained)?;
        if trained && self.qtype.needs_training() {
            w.put_f32s("vmin", &self.vmin)?;
            w.put_f32s("vdiff", &self.vdiff)?;
        }
        Ok(())
    }

    /// Replaces the ranges and the range statistic with what [`Codec::save_state`] wrote
    /// for a quantizer of the same dimension and type; the object is unchanged on error.
    fn load_state(&mut self, r: &mut StateReader) -> Result<()> {
        expect_usize(r, "d", self.d, "the quantizer")?;
        let qtype = r.get_str("qtype")?;
        if qtype != self.qtype.to_string() {
            return Err(r.error(
                "qtype",
                format!("{qtype}, but the quantizer is {}", self.qtype),
            ));
        }
        let kind = r.get_str("range_stat")?;
        let arg = get_f32_scalar(r, "range_stat_arg")?;
        let rs = match kind.as_str() {
            "min_max" => RangeStat::MinMax { margin: arg },
            "mean_std" => RangeStat::MeanStd { k: arg },
            "quantiles" => RangeStat::Quantiles { fraction: arg },
            _ => return Err(r.error("range_stat", format!("unknown statistic `{kind}`"))),
        };
        let mut fresh = ScalarQuantizer::new(self.d, self.qtype)?
            .with_range_stat(rs)
            .map_err(|e| r.error("range_stat_arg", e))?;
        let trained = r.get_bool("trained")?;
        if !self.qtype.needs_training() {
            if !trained {
                return Err(r.error(
                    "trained",
                    format!("0, but {} needs no training", self.qtype),
                ));
            }
        } else if trained {
            let vmin = get_finite_f32s(r, "vmin", self.d)?;
            let vdiff = get_finite_f32s(r, "vdiff", self.d)?;
            if let Some(i) = vdiff.iter().position(|&v| v < 0.0) {
                return Err(r.error("vdiff", format!("width {i} is negative")));
            }
            if self.qtype.uniform()
                && (vmin.iter().any(|&v| v != vmin[0]) || vdiff.iter().any(|&v| v != vdiff[0]))
            {
                return Err(r.error(
                    "vmin",
                    format!("{} needs one range for all dimensions", self.qtype),
                ));
            }
            fresh.vmin = vmin;
            fresh.vdiff = vdiff;
        }
        *self = fresh;
        Ok(())
    }

    fn dim(&self) -> usize {
        self.d
    }

    fn code_size(&self) -> usize {
        packed_len(self.d, self.qtype.bits())
    }

    fn is_trained(&self) -> bool {
        !self.vmin.is_empty()
    }

    fn train(&mut self, x: VectorsRef<'_>) -> Result<()> {
        x.check_dim(self.d)?;
        x.check_finite()?;
        if !self.qtype.needs_training() {
            return Ok(());
        }
        if x.is_empty() {
            return Err(Error::InsufficientTrainingData { needed: 1, got: 0 });
        }
        let d = self.d;
        let uniform = self.qtype.uniform();
        let (lo, hi): (Vec<f32>, Vec<f32>) = match self.rangestat {
            RangeStat::MinMax { margin } => {
                let (mut lo, mut hi) = column_min_max(x);
                if uniform {
                    lo = vec![lo.iter().copied().fold(f32::INFINITY, f32::min)];
                    hi = vec![hi.iter().copied().fold(f32::NEG_INFINITY, f32::max)];
                }
                lo.iter()
                    .zip(&hi)
                    .map(|(&l, &h)| {
                        let e = if margin > 0.0 { (h - l) * margin } else { 0.0 };
                        (l - e, h + e)
                    })
                    .unzip()
            }
            RangeStat::MeanStd { k } => {
                let (mean, var) = column_mean_var(x);
                let (mean, var) = if uniform {
                    // Equal counts per column: the pooled mean and variance.
                    let m = mean.iter().sum::<f64>() / d as f64;
                    let v = mean
                        .iter()
                        .zip(&var)
                        .map(|(&mj, &vj)| vj + (mj - m) * (mj - m))
                        .sum::<f64>()
                        / d as f64;
                    (vec![m], vec![v])
                } else {
                    (mean, var)
                };
                mean.iter()
                    .zip(&var)
                    .map(|(&m, &v)| {
                        let s = v.sqrt() * f64::from(k);
                        ((m - s) as f32, (m + s) as f32)
                    })
                    .unzip()
            }
            RangeStat::Quantiles { .. } => {
                let ranges: Vec<(f32, f32)> = if uniform {
                    let mut all = x.as_slice().to_vec();
                    vec![self.range_of(&mut all)]
                } else {
                    (0..d)
                        .into_par_iter()
                        .map(|j| {
                            let mut col: Vec<f32> = x.rows().map(|r| r[j]).collect();
                            self.range_of(&mut col)
                        })
                        .collect()
                };
                ranges.iter().map(|&(l, w)| (l, l + w)).unzip()
            }
        };
        let widths: Vec<f32> = lo
            .iter()
            .zip(&hi)
            .map(|(&l, &h)| (h - l).max(0.0))
            .collect();
        // Finite data can still span more than an f32 holds (or a margin push it past):
        // such a range would decode every value to NaN or infinity.
        if let Some(j) = (0..lo.len()).find(|&j| !(lo[j].is_finite() && widths[j].is_finite())) {
            return Err(Error::invalid_param(
                "training data",
                format!(
                    "the range of component {j} ({} to {}) is wider than an f32 holds{}",
                    lo[j],
                    hi[j],
                    match self.rangestat {
                        RangeStat::MinMax { margin } if margin > 0.0 => " (with the margin)",
                        _ => "",
                    }
                ),
            ));
        }
        if uniform {
            self.vmin = vec![lo[0]; d];
            self.vdiff = vec![widths[0]; d];
        } else {
            self.vmin = lo;
            self.vdiff = widths;
        }
        Ok(())
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
        let d = self.d;
        let enc8 = simd::Sq8Encode::new();
        codes
            .par_chunks_mut(BLOCK * cs)
            .zip(x.as_slice().par_chunks(BLOCK * d))
            .for_each(|(cb, xb)| {
                for (c, r) in cb.chunks_exact_mut(cs).zip(xb.chunks_exact(d)) {
                    self.encode_one(&enc8, r, c);
                }
            });
        Ok(())
    }

    fn decode_into(&self, codes: &[u8], out: &mut [f32]) -> Result<()> {
        self.check_trained()?;
        let cs = self.code_size();
        if !codes.len().is_multiple_of(cs) {
            return Err(Error::invalid_param(
                "codes",
                format!("{} bytes are not whole codes of {cs} bytes", codes.len()),
            ));
        }
        let n = codes.len() / cs;
        if out.len() != n * self.d {
            return Err(Error::LengthMismatch {
                what: "decoded output",
                expected: n * self.d,
                got: out.len(),
            });
        }
        let d = self.d;
        out.par_chunks_mut(BLOCK * d)
            .zip(codes.par_chunks(BLOCK * cs))
            .for_each(|(ob, cb)| {
                for (o, c) in ob.chunks_exact_mut(d).zip(cb.chunks_exact(cs)) {
                    self.decode_one(c, o);
                }
            });
        Ok(())
    }
}

/// Per-query distance computer of a [`ScalarQuantizer`]: works on the codes directly.
#[derive(Clone, Debug)]
pub struct SqDistance {
    block: Block,
    a: Vec<f32>,
    b: Vec<f32>,
    cs: usize,
    add: f32,
    /// Per-dimension decoding `c·scale + offset` (empty for the float types).
    scale: Vec<f32>,
    offset: Vec<f32>,
    d: usize,
    ip: bool,
}

impl SqDistance {
    /// Fills `a`, `b` and `add` for `query` (`query.len() == d`, checked by callers).
    fn aim(&mut self, query: &[f32]) {
        if self.scale.is_empty() {
            self.b.clear();
            self.b.extend_from_slice(query);
            return;
        }
        let d = self.d;
        if self.ip {
            let mut add = 0f32;
            for (((a, &q), &s), &o) in self.a[..d]
                .iter_mut()
                .zip(query)
                .zip(&self.scale)
                .zip(&self.offset)
            {
                *a = q * s;
                add += q * o;
            }
            self.add = add;
        } else {
            for ((b, &q), &o) in self.b[..d].iter_mut().zip(query).zip(&self.offset) {
                *b = o - q;
            }
        }
    }
}

impl CodeDistance for SqDistance {
    #[inline]
    fn distance(&mut self, code: &[u8]) -> f32 {
        let mut o = [0.0];
        self.distances(code, &mut o);
        o[0]
    }

    #[inline]
    fn distances(&mut self, codes: &[u8], out: &mut [f32]) {
        self.block.run(codes, self.cs, &self.a, &self.b, out);
        if self.add != 0.0 {
            for o in out.iter_mut() {
                *o += self.add;
            }
        }
    }
    fn retarget(&mut self, query: &[f32]) -> bool {
        if query.len() != self.d {
            return false;
        }
        self.aim(query);
        true
    }
}

impl AdcCodec for ScalarQuantizer {
    type Computer<'a> = SqDistance;

    fn query_computer<'a>(&'a self, query: &'a [f32], metric: Metric) -> Result<SqDistance> {
        self.check_trained()?;
        if query.len() != self.d {
            return Err(Error::DimensionMismatch {
                expected: self.d,
                got: query.len(),
            });
        }
        let ip = metric == Metric::InnerProduct;
        let cs = self.code_size();
        let kind = match self.qtype {
            SqType::Fp16 => BlockKind::F16,
            SqType::Bf16 => BlockKind::Bf16,
            t => match t.bits() {
                8 => BlockKind::U8,
                6 => BlockKind::U6,
                _ => BlockKind::U4,
            },
        };
        if matches!(kind, BlockKind::F16 | BlockKind::Bf16) {
            let mut comp = SqDistance {
                block: Block::new(kind, ip),
                a: Vec::new(),
                b: Vec::with_capacity(self.d),
                cs,
                add: 0.0,
                scale: Vec::new(),
                offset: Vec::new(),
                d: self.d,
                ip,
            };
            comp.aim(query);
            return Ok(comp);
        }
        // Decoded component i = c_i·scale_i + offset_i; the padding past `d` stays 0.
        let padded = match kind {
            BlockKind::U8 => self.d,
            BlockKind::U4 => 2 * cs,
            _ => self.d.div_ceil(4) * 4,
        };
        let (scale, offset): (Vec<f32>, Vec<f32>) = (0..self.d)
            .map(|i| match self.qtype {
                SqType::Q8Direct => (1.0, 0.0),
                SqType::Q8DirectSigned => (1.0, -128.0),
                t => {
                    let s = self.vdiff[i] / t.levels();
                    (s, self.vmin[i] + 0.5 * s)
                }
            })
            .unzip();
        let mut a = vec![0f32; padded];
        if !ip {
            a[..self.d].copy_from_slice(&scale);
        }
        let mut comp = SqDistance {
            block: Block::new(kind, ip),
            a,
            b: vec![0f32; padded],
            cs,
            add: 0.0,
            scale,
            offset,
            d: self.d,
            ip,
        };
        comp.aim(query);
        Ok(comp)
    }
}
