//! 4-bit fast-scan PQ kernels (Faiss's "fast-scan", André et al.): codes of 32 vectors
//! interleaved by sub-quantizer, look-up tables quantised to `u8`, and 32 look-ups per
//! SIMD byte shuffle with 16-bit accumulation.
//!
//! # Layout
//!
//! Vectors are stored in blocks of [`FastScanLayout::bbs`] (a multiple of 32); a block
//! is `bbs / 32` sub-blocks of 32 vectors. A sub-block holds `M2 × 16` bytes (`M2` =
//! `M` rounded up to even; the padding sub-quantizer has code 0 and a zero table): for
//! sub-quantizer `m`, 16 bytes whose low nibbles hold the codes of vectors 0–15 and
//! high nibbles those of vectors 16–31, in the order `0, 8, 1, 9, …, 7, 15`. That order
//! makes the SIMD kernels' 16-bit sums come out in vector order. The tail of the last
//! block is padding (code 0), never reported.
//!
//! # Quantised tables
//!
//! A query's float table (`M × 16` keys: squared distances, or negated inner products,
//! so that smaller is better) becomes [`QuantizedLut`]: each row minus its minimum,
//! times one scale `a` (so the widest row spans 255 and the sum of all rows fits 16
//! bits), rounded. A vector's sum `s` then estimates its key as `bias + s / a`, with an
//! error of at most `M / (2a)` ([`QuantizedLut::error_bound`]), since each of the `M`
//! look-ups is off by at most half a unit.
//!
//! The scan compares each sum with a per-query threshold and hands the vectors at or
//! under it to a [`FsCollector`]; the indexes use [`QuantizedLut::threshold_for`] so
//! that every vector whose exact key could be under their current k-th best is
//! reported, then score those few with the float table: results are the exact ADC
//! top-k, with exact distances.
//!
//! # Kernels
//!
//! AVX-512BW (four sub-quantizers per shuffle), AVX2 (two), and a portable Rust path,
//! chosen at run time (`VQ_SIMD` caps the level); [`sums_scalar`] is the one-vector-at-a-
//! time oracle they are tested against. All compute the same integers. Up to
//! [`MAX_QUERY_BLOCK`] queries are scored per pass over the codes (query blocking).

#![allow(unsafe_code)]

use vq_core::distance::{Kernels, SimdLevel};
use vq_core::{Error, Result};

/// Vectors per sub-block: one SIMD register of codes per pair of sub-quantizers.
pub const SUB_BLOCK: usize = 32;

/// Most queries one pass over the codes scores (the kernels keep four accumulators per
/// query in registers).
pub const MAX_QUERY_BLOCK: usize = 4;

/// Position of vector `r` (0–15) within a sub-quantizer's 16 bytes.
#[inline(always)]
fn byte_of(r: usize) -> usize {
    if r < 8 { 2 * r } else { 2 * (r - 8) + 1 }
}

/// One vector of [`FastScanLayout::table_keys_each`]: its bytes (sub-quantizer `mi`
/// at `16·mi`), the shift of its nibble, its table's rows.
type KeyLane<'a> = (&'a [u8], u32, &'a [[f32; 16]]);

/// The block layout of 4-bit codes for `M` sub-quantizers.
///
/// ```
/// use vq_pq::fastscan::FastScanLayout;
/// let layout = FastScanLayout::new(3, 32)?;
/// assert_eq!(layout.m2(), 4);
/// let mut blocks = vec![0u8; layout.bytes_for(40)];
/// layout.write_code(&mut blocks, 37, &[1, 2, 3]);
/// let mut code = [0u8; 3];
/// layout.read_code(&blocks, 37, &mut code);
/// assert_eq!(code, [1, 2, 3]);
/// # Ok::<(), vq_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FastScanLayout {
    m: usize,
    m2: usize,
    bbs: usize,
}

impl FastScanLayout {
    /// `m` sub-quantizers in blocks of `bbs` vectors.
    ///
    /// # Errors
    /// `m == 0`, or `bbs` not a positive multiple of 32.
    pub fn new(m: usize, bbs: usize) -> Result<FastScanLayout> {
        if m == 0 {
            return Err(Error::invalid_param("M", "must be at least 1"));
        }
        if bbs == 0 || !bbs.is_multiple_of(SUB_BLOCK) {
            return Err(Error::invalid_param(
                "bbs",
                format!("{bbs} is not a positive multiple of {SUB_BLOCK}"),
            ));
        }
        Ok(FastScanLayout {
            m,
            m2: m.div_ceil(2) * 2,
            bbs,
        })
    }

    /// Sub-quantizers.
    pub fn m(&self) -> usize {
        self.m
    }

    /// Sub-quantizers padded to even.
    pub fn m2(&self) -> usize {
        self.m2
    }

    /// Vectors per block.
    pub fn bbs(&self) -> usize {
        self.bbs
    }

    /// Bytes of a 32-vector sub-block.
    pub fn sub_block_bytes(&self) -> usize {
        self.m2 * 16
    }

    /// Bytes of a block.
    pub fn block_bytes(&self) -> usize {
        self.bbs / SUB_BLOCK * self.sub_block_bytes()
    }

    /// Bytes that hold `n` vectors (whole blocks).
    pub fn bytes_for(&self, n: usize) -> usize {
        n.div_ceil(self.bbs) * self.block_bytes()
    }

    /// Offset of vector `i`'s byte for sub-quantizer 0, and whether it uses the high
    /// nibble; sub-quantizer `m`'s byte is 16·m further.
    #[inline(always)]
    fn slot(&self, i: usize) -> (usize, bool) {
        let (sb, r) = (i / SUB_BLOCK, i % SUB_BLOCK);
        (sb * self.sub_block_bytes() + byte_of(r % 16), r >= 16)
    }

    /// Writes the `M` codes (each below 16) of vector `i` into `blocks`.
    ///
    /// # Panics
    /// When `blocks` is shorter than [`FastScanLayout::bytes_for`]`(i + 1)` or `code`
    /// shorter than `M` (callers size both).
    pub fn write_code(&self, blocks: &mut [u8], i: usize, code: &[u8]) {
        let (o, hi) = self.slot(i);
        for (m, &c) in code[..self.m].iter().enumerate() {
            let b = &mut blocks[o + 16 * m];
            *b = if hi {
                (*b & 0x0f) | (c << 4)
            } else {
                (*b & 0xf0) | (c & 0x0f)
            };
        }
    }

    /// Reads the `M` codes of vector `i` into `code`.
    ///
    /// # Panics
    /// As [`FastScanLayout::write_code`].
    pub fn read_code(&self, blocks: &[u8], i: usize, code: &mut [u8]) {
        let (o, hi) = self.slot(i);
        for (m, c) in code[..self.m].iter_mut().enumerate() {
            let b = blocks[o + 16 * m];
            *c = if hi { b >> 4 } else { b & 0x0f };
        }
    }

    /// The key of vector `i` under a float table (`M × 16`): `Σ_m table[m][code_m]`,
    /// summed as two chains (even and odd sub-quantizers, each in order, then added),
    /// the order [`FastScanLayout::table_keys`] and
    /// [`FastScanLayout::table_keys_each`] use too, so all three give the same bits.
    ///
    /// # Panics
    /// When vector `i` is not in `blocks` or `table` is shorter than `M × 16`.
    #[inline]
    pub fn table_key(&self, blocks: &[u8], i: usize, table: &[f32]) -> f32 {
        self.table_keys_each([(blocks, i, table)])[0]
    }

    /// [`FastScanLayout::table_key`] of `N` vectors at once, `(blocks, i)` each, under
    /// one table: the sums are independent, so they proceed in parallel in the CPU.
    ///
    /// # Panics
    /// As [`FastScanLayout::table_key`].
    #[inline]
    pub fn table_keys<const N: usize>(&self, vecs: [(&[u8], usize); N], table: &[f32]) -> [f32; N] {
        self.table_keys_each(vecs.map(|(b, i)| (b, i, table)))
    }

    /// [`FastScanLayout::table_key`] of `N` vectors at once, each under its own table:
    /// `(blocks, i, table)` each.
    ///
    /// # Panics
    /// As [`FastScanLayout::table_key`].
    #[inline]
    pub fn table_keys_each<const N: usize>(&self, vecs: [(&[u8], usize, &[f32]); N]) -> [f32; N] {
        let m = self.m;
        // Per vector: its bytes (sub-quantizer `mi` at 16·mi), the nibble's shift,
        // and the table's rows; the slicing checks every bound the loop relies on.
        let lanes: [KeyLane<'_>; N] = std::array::from_fn(|j| {
            let (blocks, i, table) = vecs[j];
            let (o, hi) = self.slot(i);
            (
                &blocks[o..=o + 16 * (m - 1)],
                if hi { 4 } else { 0 },
                &table.as_chunks::<16>().0[..m],
            )
        });
        let mut even = [0f32; N];
        let mut odd = [0f32; N];
        let mut mi = 0;
        while mi + 1 < m {
            for j in 0..N {
                let (codes, shift, rows) = lanes[j];
                // SAFETY: `codes` holds `16·(m − 1) + 1` bytes and `mi + 1 < m`.
                let (a, b) = unsafe {
                    (
                        *codes.get_unchecked(16 * mi),
                        *codes.get_unchecked(16 * mi + 16),
                    )
                };
                // SAFETY: `rows` holds `m` rows and `mi + 1 < m`; a nibble is below 16.
                unsafe {
                    even[j] += *rows
                        .get_unchecked(mi)
                        .get_unchecked(usize::from((a >> shift) & 15));
                    odd[j] += *rows
                        .get_unchecked(mi + 1)
                        .get_unchecked(usize::from((b >> shift) & 15));
                }
            }
            mi += 2;
        }
        if mi < m {
            for j in 0..N {
                let (codes, shift, rows) = lanes[j];
                even[j] += rows[mi][usize::from((codes[16 * mi] >> shift) & 15)];
            }
        }
        std::array::from_fn(|j| even[j] + odd[j])
    }

    /// Moves vector `from`'s codes to slot `to` (for compaction).
    pub fn move_code(&self, blocks: &mut [u8], from: usize, to: usize) {
        let mut code = [0u8; 512];
        let mut buf = vec![];
        let code: &mut [u8] = if self.m <= code.len() {
            &mut code[..self.m]
        } else {
            buf.resize(self.m, 0);
            &mut buf
        };
        self.read_code(blocks, from, code);
        self.write_code(blocks, to, code);
    }
}

/// Default bits of the quantised tables in the indexes (entries up to 127: the kernels
/// add two sub-quantizer groups' bytes before widening; see [`QuantizedLut::with_max`]).
pub const DEFAULT_LUT_BITS: u32 = 7;

/// The largest table entry for `bits` bits (6, 7 or 8), checked.
///
/// # Errors
/// Other values, naming the parameter `lut_bits`.
pub fn lut_max_for_bits(bits: &str) -> Result<u8> {
    match bits.trim() {
        "6" => Ok(63),
        "7" => Ok(127),
        "8" => Ok(255),
        other => Err(Error::invalid_param(
            "lut_bits",
            format!("`{other}` is not 6, 7 or 8"),
        )),
    }
}

/// A query's table quantised to `u8` (see the module documentation).
#[derive(Clone, Debug, Default)]
pub struct QuantizedLut {
    lut: Vec<u8>,
    scale: f32,
    bias: f32,
    /// `Σ |row minimum| + Σ row span`: a bound on the sum of the magnitudes of any
    /// vector's table entries, which bounds the float rounding of its exact key.
    magnitude: f64,
    m: usize,
    max: u8,
}

impl QuantizedLut {
    /// Quantises `table` (`M × 16` keys, smaller = better) for sub-quantizers padded
    /// to `m2` (the padding rows are zero).
    ///
    /// # Errors
    /// A table whose length is not a multiple of 16, more rows than `m2`, or
    /// non-finite entries.
    pub fn new(table: &[f32], m2: usize) -> Result<QuantizedLut> {
        QuantizedLut::with_max(table, m2, 255)
    }

    /// Quantises with entries at most `max` (255, 127 or 63 in practice): fewer levels,
    /// a larger [`QuantizedLut::error_bound`], but the kernels then add two (127) or
    /// four (63) sub-quantizers' bytes before widening to 16 bits, which saves work.
    ///
    /// # Errors
    /// As [`QuantizedLut::new`]; `max == 0`.
    pub fn with_max(table: &[f32], m2: usize, max: u8) -> Result<QuantizedLut> {
        let mut q = QuantizedLut::default();
        q.set_with_max(table, m2, max)?;
        Ok(q)
    }

    /// Re-quantises in place, reusing the buffer.
    ///
    /// # Errors
    /// As [`QuantizedLut::new`].
    pub fn set(&mut self, table: &[f32], m2: usize) -> Result<()> {
        self.set_with_max(table, m2, 255)
    }

    /// Re-quantises in place with entries at most `max` (see [`QuantizedLut::with_max`]).
    ///
    /// # Errors
    /// As [`QuantizedLut::with_max`].
    pub fn set_with_max(&mut self, table: &[f32], m2: usize, max: u8) -> Result<()> {
        if max == 0 {
            return Err(Error::invalid_param("max", "must be at least 1"));
        }
        let qmax = f32::from(max);
        if !table.len().is_multiple_of(16) || table.len() / 16 > m2 {
            return Err(Error::invalid_param(
                "table",
                format!("{} entries are not at most {m2} rows of 16", table.len()),
            ));
        }
        let m = table.len() / 16;
        let mut bias = 0f64;
        let mut abs_bias = 0f64;
        let mut max_span = 0f32;
        let mut sum_span = 0f64;
        for row in table.chunks_exact(16) {
            if row.iter().any(|v| !v.is_finite()) {
                return Err(Error::invalid_param("table", "non-finite entries"));
            }
            let (lo, hi) = row_range(row);
            bias += f64::from(lo);
            abs_bias += f64::from(lo).abs();
            max_span = max_span.max(hi - lo);
            sum_span += f64::from(hi - lo);
        }
        // The widest row spans 255; every sum (at most Σ round(a·span) ≤ a·Σspan + M/2)
        // must stay within 16 bits.
        let mut a = if max_span > 0.0 { qmax / max_span } else { 1.0 };
        let room = 65_535.0 - m as f64;
        if f64::from(a) * sum_span > room {
            a = (room / sum_span) as f32;
        }
        self.lut.clear();
        self.lut.resize(m2 * 16, 0);
        for (row, out) in table.chunks_exact(16).zip(self.lut.chunks_exact_mut(16)) {
            let lo = row_range(row).0;
            for (o, &v) in out.iter_mut().zip(row) {
                // Round half up by truncation (v − lo ≥ 0): a conversion, no libm call.
                let x = ((v - lo) * a + 0.5).max(0.0).min(qmax);
                // SAFETY: `x` is in [0, qmax] ⊂ [0, 256) (`max` also maps a NaN to 0),
                // so the truncation is representable; this form vectorises.
                *o = unsafe { x.to_int_unchecked::<u8>() };
            }
        }
        self.scale = a;
        self.bias = bias as f32;
        self.magnitude = abs_bias + sum_span;
        self.m = m;
        self.max = max;
        Ok(())
    }

    /// The `M2 × 16` quantised entries.
    pub fn bytes(&self) -> &[u8] {
        &self.lut
    }

    /// The largest entry the quantisation allows.
    pub fn max_entry(&self) -> u8 {
        self.max
    }

    /// The scale `a`: one unit of a sum is `1 / a` in key units.
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// The sum of the rows' minima (the key of a sum of 0).
    pub fn bias(&self) -> f32 {
        self.bias
    }

    /// The key a sum estimates: `bias + sum / scale`.
    pub fn key(&self, sum: u16) -> f32 {
        self.bias + f32::from(sum) / self.scale
    }

    /// Largest difference between a vector's estimated and exact key: `M / (2·scale)`.
    pub fn error_bound(&self) -> f32 {
        self.m as f32 * 0.5 / self.scale
    }

    /// The largest sum a vector whose exact key is at most `key` can have (rounding
    /// included), saturated at `u16::MAX`; `None` when no vector can have a key that
    /// small.
    pub fn threshold_for(&self, key: f32) -> Option<u16> {
        self.threshold_with_offset(key, 0.0)
    }

    /// [`QuantizedLut::threshold_for`] when every exact key is `offset` (an IVF list's
    /// coarse term) plus the table's sum, compared against `bound`: the same as the
    /// threshold for `bound − offset`, with the rounding of that addition allowed for.
    pub fn threshold_with_offset(&self, bound: f32, offset: f32) -> Option<u16> {
        if bound == f32::INFINITY {
            return Some(u16::MAX);
        }
        // Slack for float rounding: a key is an f32 sum of M entries (plus the offset),
        // the bias an f32 too, so each is off by at most (M + 1)·ε times the magnitudes
        // summed, counted twice; and a thousandth of a unit for the bound itself. It only
        // matters for far queries (keys large against the tables' spans).
        let eps = f64::from(f32::EPSILON);
        let rounding = 2.0 * (self.m as f64 + 1.0) * eps * self.magnitude
            + 2.0 * eps * (f64::from(bound).abs() + f64::from(offset).abs());
        let v = (f64::from(bound) - f64::from(offset) - f64::from(self.bias))
            * f64::from(self.scale)
            + self.m as f64 * 0.5
            + rounding * f64::from(self.scale)
            + 1e-3;
        if v.is_nan() || v < 0.0 {
            return None;
        }
        Some(v.floor().min(f64::from(u16::MAX)) as u16)
    }
}

/// Smallest and largest of a table row of 16 (finite entries), by halving: independent
/// compares the compiler vectorises, rather than one chain.
#[inline]
fn row_range(row: &[f32]) -> (f32, f32) {
    let mut lo = [0f32; 16];
    let mut hi = [0f32; 16];
    lo.copy_from_slice(&row[..16]);
    hi.copy_from_slice(&row[..16]);
    let mut w = 8;
    while w > 0 {
        for i in 0..w {
            lo[i] = if lo[i + w] < lo[i] { lo[i + w] } else { lo[i] };
            hi[i] = if hi[i + w] > hi[i] { hi[i + w] } else { hi[i] };
        }
        w /= 2;
    }
    (lo[0], hi[0])
}

/// Receives the vectors a scan reports.
pub trait FsCollector {
    /// The current threshold of query `q` (its position in the block of queries): sums
    /// at or under it are reported.
    fn threshold(&self, q: usize) -> u16;

    /// Vectors of sub-block `sub_block` (counted from the first scanned) whose sums
    /// for query `q` are at or under its threshold: bit `i` of `mask` set for vector
    /// `i`; `sums` holds all 32 sums.
    fn collect(&mut self, q: usize, sub_block: usize, mask: u32, sums: &[u16; SUB_BLOCK]);
}

/// The kernel level for fast scan: the core kernels' level (which honours
/// `VQ_SIMD`), with AVX-512 only where AVX-512BW is present.
pub fn kernel_level() -> SimdLevel {
    let l = Kernels::get().level();
    #[cfg(target_arch = "x86_64")]
    if l == SimdLevel::Avx512 && !std::arch::is_x86_feature_detected!("avx512bw") {
        return SimdLevel::Avx2;
    }
    l
}

/// Scans `nsub` sub-blocks of `codes` for up to [`MAX_QUERY_BLOCK`] quantised tables at
/// once (one pass over the codes), reporting to `collector`, at `level` (clamped to
/// what the CPU has).
///
/// # Errors
/// No or too many tables, tables or codes shorter than the layout needs.
pub fn scan(
    level: SimdLevel,
    layout: &FastScanLayout,
    luts: &[&QuantizedLut],
    codes: &[u8],
    nsub: usize,
    collector: &mut impl FsCollector,
) -> Result<()> {
    if luts.is_empty() || luts.len() > MAX_QUERY_BLOCK {
        return Err(Error::invalid_param(
            "luts",
            format!("{} tables (1 to {MAX_QUERY_BLOCK})", luts.len()),
        ));
    }
    let need = layout.m2 * 16;
    if luts.iter().any(|l| l.lut.len() != need) {
        return Err(Error::invalid_param(
            "luts",
            format!("tables must hold {need} entries"),
        ));
    }
    if codes.len() < nsub * layout.sub_block_bytes() {
        return Err(Error::invalid_param(
            "codes",
            format!(
                "{} bytes, {nsub} sub-blocks need {}",
                codes.len(),
                nsub * layout.sub_block_bytes()
            ),
        ));
    }
    let mut t: [&[u8]; MAX_QUERY_BLOCK] = [&[]; MAX_QUERY_BLOCK];
    for (slot, l) in t.iter_mut().zip(luts) {
        *slot = &l.lut;
    }
    let level = level.min(kernel_level());
    // Bytes of `fold` sub-quantizer groups are added before widening when every
    // table's entries allow it (their sum must fit a byte).
    let max = luts.iter().map(|l| u32::from(l.max)).max().unwrap_or(255);
    let fold = if max * 4 <= 255 {
        4
    } else if max * 2 <= 255 {
        2
    } else {
        1
    };
    macro_rules! go {
        ($nq:literal, $f:literal) => {{
            let t: [&[u8]; $nq] = std::array::from_fn(|i| t[i]);
            match level {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the level is at most what the CPU supports (kernel_level checks
                // AVX-512BW); lengths were checked above; `fold` keeps byte sums exact.
                SimdLevel::Avx512 => unsafe {
                    x86::scan_avx512::<$nq, $f, _>(&t, codes, nsub, layout.m2, collector)
                },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above (AVX2 is present at this level).
                SimdLevel::Avx2 => unsafe {
                    x86::scan_avx2::<$nq, $f, _>(&t, codes, nsub, layout.m2, collector)
                },
                _ => scan_portable::<$nq, _>(&t, codes, nsub, layout.m2, collector),
            }
        }};
    }
    macro_rules! by_fold {
        ($nq:literal) => {
            match fold {
                4 => go!($nq, 4),
                2 => go!($nq, 2),
                _ => go!($nq, 1),
            }
        };
    }
    match luts.len() {
        1 => by_fold!(1),
        2 => by_fold!(2),
        3 => by_fold!(3),
        _ => by_fold!(4),
    }
    Ok(())
}

/// Every sum of `n` vectors under one table, in vector order, one vector at a time:
/// the oracle the kernels are tested against.
pub fn sums_scalar(
    layout: &FastScanLayout,
    lut: &QuantizedLut,
    codes: &[u8],
    n: usize,
) -> Vec<u16> {
    let mut code = vec![0u8; layout.m];
    (0..n)
        .map(|i| {
            layout.read_code(codes, i, &mut code);
            code.iter()
                .enumerate()
                .map(|(m, &c)| u16::from(lut.lut[m * 16 + c as usize]))
                .fold(0u16, u16::wrapping_add)
        })
        .collect()
}

/// Every sum of `nsub` sub-blocks under one table, in vector order, through the
/// kernels at `level`.
///
/// # Errors
/// As [`scan`].
pub fn sums(
    level: SimdLevel,
    layout: &FastScanLayout,
    lut: &QuantizedLut,
    codes: &[u8],
    nsub: usize,
) -> Result<Vec<u16>> {
    struct All(Vec<u16>);
    impl FsCollector for All {
        fn threshold(&self, _q: usize) -> u16 {
            u16::MAX
        }
        fn collect(&mut self, _q: usize, sb: usize, _mask: u32, sums: &[u16; SUB_BLOCK]) {
            self.0[sb * SUB_BLOCK..(sb + 1) * SUB_BLOCK].copy_from_slice(sums);
        }
    }
    let mut all = All(vec![0; nsub * SUB_BLOCK]);
    scan(level, layout, &[lut], codes, nsub, &mut all)?;
    Ok(all.0)
}

/// Plain Rust: the same sums as the SIMD kernels (u16 wrapping adds).
fn scan_portable<const NQ: usize, C: FsCollector>(
    luts: &[&[u8]; NQ],
    codes: &[u8],
    nsub: usize,
    m2: usize,
    collector: &mut C,
) {
    let sbb = m2 * 16;
    for sb in 0..nsub {
        let block = &codes[sb * sbb..(sb + 1) * sbb];
        for (q, lut) in luts.iter().enumerate() {
            let mut acc = [0u16; SUB_BLOCK];
            for (bytes, row) in block.chunks_exact(16).zip(lut.chunks_exact(16)) {
                for (b, &c) in bytes.iter().enumerate() {
                    let r = if b % 2 == 0 { b / 2 } else { 8 + b / 2 };
                    acc[r] = acc[r].wrapping_add(u16::from(row[(c & 15) as usize]));
                    acc[16 + r] = acc[16 + r].wrapping_add(u16::from(row[(c >> 4) as usize]));
                }
            }
            let t = collector.threshold(q);
            let mut mask = 0u32;
            for (i, &s) in acc.iter().enumerate() {
                mask |= u32::from(s <= t) << i;
            }
            if mask != 0 {
                collector.collect(q, sb, mask, &acc);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{FsCollector, SUB_BLOCK};
    use std::arch::x86_64::*;

    /// Adds the two 128-bit lanes of `x` and of `y`: `[x.lo + x.hi, y.lo + y.hi]`.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn fold2(x: __m256i, y: __m256i) -> __m256i {
        let a = _mm256_permute2x128_si256::<0x20>(x, y);
        let b = _mm256_permute2x128_si256::<0x31>(x, y);
        _mm256_add_epi16(a, b)
    }

    /// AVX2: one 32-byte register of codes covers two sub-quantizers.
    ///
    /// # Safety
    /// AVX2 present; every table holds `m2 × 16` bytes, `codes` `nsub × m2 × 16`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn scan_avx2<const NQ: usize, const F: usize, C: FsCollector>(
        luts: &[&[u8]; NQ],
        codes: &[u8],
        nsub: usize,
        m2: usize,
        collector: &mut C,
    ) {
        let low4 = _mm256_set1_epi8(0x0f);
        let sbb = m2 * 16;
        let pairs = m2 / 2;
        let groups = pairs / F;
        for sb in 0..nsub {
            // SAFETY: `codes` holds `nsub` sub-blocks (checked by the caller).
            let base = unsafe { codes.as_ptr().add(sb * sbb) };
            let mut acc = [[_mm256_setzero_si256(); 4]; NQ];
            // Groups of F pairs: byte sums of F shuffles, then one widening.
            for g in 0..groups {
                let mut clo = [_mm256_setzero_si256(); F];
                let mut chi = [_mm256_setzero_si256(); F];
                for j in 0..F {
                    // SAFETY: pair g·F + j < m2 / 2 is in bounds.
                    let c = unsafe { _mm256_loadu_si256(base.add(32 * (g * F + j)).cast()) };
                    clo[j] = _mm256_and_si256(c, low4);
                    chi[j] = _mm256_and_si256(_mm256_srli_epi16::<4>(c), low4);
                }
                for q in 0..NQ {
                    let mut rlo = _mm256_setzero_si256();
                    let mut rhi = _mm256_setzero_si256();
                    for j in 0..F {
                        // SAFETY: each table holds `m2 × 16` bytes.
                        let t = unsafe {
                            _mm256_loadu_si256(luts[q].as_ptr().add(32 * (g * F + j)).cast())
                        };
                        rlo = _mm256_add_epi8(rlo, _mm256_shuffle_epi8(t, clo[j]));
                        rhi = _mm256_add_epi8(rhi, _mm256_shuffle_epi8(t, chi[j]));
                    }
                    acc[q][0] = _mm256_add_epi16(acc[q][0], rlo);
                    acc[q][1] = _mm256_add_epi16(acc[q][1], _mm256_srli_epi16::<8>(rlo));
                    acc[q][2] = _mm256_add_epi16(acc[q][2], rhi);
                    acc[q][3] = _mm256_add_epi16(acc[q][3], _mm256_srli_epi16::<8>(rhi));
                }
            }
            for p in groups * F..pairs {
                // SAFETY: pair `p` of this sub-block is in bounds (p < m2 / 2).
                let c = unsafe { _mm256_loadu_si256(base.add(32 * p).cast()) };
                let clo = _mm256_and_si256(c, low4);
                let chi = _mm256_and_si256(_mm256_srli_epi16::<4>(c), low4);
                for q in 0..NQ {
                    // SAFETY: each table holds `m2 × 16` bytes.
                    let t = unsafe { _mm256_loadu_si256(luts[q].as_ptr().add(32 * p).cast()) };
                    let rlo = _mm256_shuffle_epi8(t, clo);
                    let rhi = _mm256_shuffle_epi8(t, chi);
                    acc[q][0] = _mm256_add_epi16(acc[q][0], rlo);
                    acc[q][1] = _mm256_add_epi16(acc[q][1], _mm256_srli_epi16::<8>(rlo));
                    acc[q][2] = _mm256_add_epi16(acc[q][2], rhi);
                    acc[q][3] = _mm256_add_epi16(acc[q][3], _mm256_srli_epi16::<8>(rhi));
                }
            }
            // All sums first, then the collector calls: the accumulators are dead by
            // the time a call may clobber registers.
            let mut sums = [[0u16; SUB_BLOCK]; NQ];
            let mut masks = [0u32; NQ];
            for (q, a) in acc.iter().enumerate() {
                // Word w of a[0] summed bytes 2w + 256·(2w+1); a[1] the odd bytes alone.
                let lo_even = _mm256_sub_epi16(a[0], _mm256_slli_epi16::<8>(a[1]));
                let hi_even = _mm256_sub_epi16(a[2], _mm256_slli_epi16::<8>(a[3]));
                let v0 = fold2(lo_even, a[1]); // vectors 0..16
                let v1 = fold2(hi_even, a[3]); // vectors 16..32
                let t = _mm256_set1_epi16(collector.threshold(q) as i16);
                let le0 = _mm256_cmpeq_epi16(_mm256_min_epu16(v0, t), v0);
                let le1 = _mm256_cmpeq_epi16(_mm256_min_epu16(v1, t), v1);
                let packed = _mm256_permute4x64_epi64::<0xD8>(_mm256_packs_epi16(le0, le1));
                masks[q] = _mm256_movemask_epi8(packed) as u32;
                // SAFETY: 64 bytes written into a 64-byte array.
                unsafe {
                    _mm256_storeu_si256(sums[q].as_mut_ptr().cast(), v0);
                    _mm256_storeu_si256(sums[q].as_mut_ptr().add(16).cast(), v1);
                }
            }
            for q in 0..NQ {
                if masks[q] != 0 {
                    collector.collect(q, sb, masks[q], &sums[q]);
                }
            }
        }
    }

    /// AVX-512BW: one 64-byte register of codes covers four sub-quantizers (an odd
    /// pair at the end goes through 256-bit registers).
    ///
    /// # Safety
    /// AVX-512F/BW and AVX2 present; lengths as [`scan_avx2`].
    #[target_feature(enable = "avx2,avx512f,avx512bw")]
    pub(super) unsafe fn scan_avx512<const NQ: usize, const F: usize, C: FsCollector>(
        luts: &[&[u8]; NQ],
        codes: &[u8],
        nsub: usize,
        m2: usize,
        collector: &mut C,
    ) {
        let low4 = _mm512_set1_epi8(0x0f);
        let sbb = m2 * 16;
        let quads = m2 / 4;
        let groups = quads / F;
        for sb in 0..nsub {
            // SAFETY: `codes` holds `nsub` sub-blocks.
            let base = unsafe { codes.as_ptr().add(sb * sbb) };
            let mut acc = [[_mm512_setzero_si512(); 4]; NQ];
            // Groups of F quads: byte sums of F shuffles, then one widening.
            for g in 0..groups {
                let mut clo = [_mm512_setzero_si512(); F];
                let mut chi = [_mm512_setzero_si512(); F];
                for j in 0..F {
                    // SAFETY: quad g·F + j is in bounds (4 (g·F + j) + 4 <= m2).
                    let c = unsafe { _mm512_loadu_si512(base.add(64 * (g * F + j)).cast()) };
                    clo[j] = _mm512_and_si512(c, low4);
                    chi[j] = _mm512_and_si512(_mm512_srli_epi16::<4>(c), low4);
                }
                for q in 0..NQ {
                    let mut rlo = _mm512_setzero_si512();
                    let mut rhi = _mm512_setzero_si512();
                    for j in 0..F {
                        // SAFETY: each table holds `m2 × 16` bytes.
                        let t = unsafe {
                            _mm512_loadu_si512(luts[q].as_ptr().add(64 * (g * F + j)).cast())
                        };
                        rlo = _mm512_add_epi8(rlo, _mm512_shuffle_epi8(t, clo[j]));
                        rhi = _mm512_add_epi8(rhi, _mm512_shuffle_epi8(t, chi[j]));
                    }
                    acc[q][0] = _mm512_add_epi16(acc[q][0], rlo);
                    acc[q][1] = _mm512_add_epi16(acc[q][1], _mm512_srli_epi16::<8>(rlo));
                    acc[q][2] = _mm512_add_epi16(acc[q][2], rhi);
                    acc[q][3] = _mm512_add_epi16(acc[q][3], _mm512_srli_epi16::<8>(rhi));
                }
            }
            // One quad of codes `c` against each query's table `$table(q)`.
            macro_rules! quad {
                ($c:expr, $table:expr) => {{
                    let c = $c;
                    let clo = _mm512_and_si512(c, low4);
                    let chi = _mm512_and_si512(_mm512_srli_epi16::<4>(c), low4);
                    for q in 0..NQ {
                        let t = $table(q);
                        let rlo = _mm512_shuffle_epi8(t, clo);
                        let rhi = _mm512_shuffle_epi8(t, chi);
                        acc[q][0] = _mm512_add_epi16(acc[q][0], rlo);
                        acc[q][1] = _mm512_add_epi16(acc[q][1], _mm512_srli_epi16::<8>(rlo));
                        acc[q][2] = _mm512_add_epi16(acc[q][2], rhi);
                        acc[q][3] = _mm512_add_epi16(acc[q][3], _mm512_srli_epi16::<8>(rhi));
                    }
                }};
            }
            for p in groups * F..quads {
                // SAFETY: quad `p` is in bounds (4p + 4 <= m2).
                let c = unsafe { _mm512_loadu_si512(base.add(64 * p).cast()) };
                quad!(c, |q: usize| {
                    // SAFETY: each table holds `m2 × 16` bytes.
                    unsafe { _mm512_loadu_si512(luts[q].as_ptr().add(64 * p).cast()) }
                });
            }
            if m2 % 4 == 2 {
                // The last pair as a quad whose upper half is zero: zero table bytes add
                // nothing. (Widening 256-bit results instead went through the stack in
                // some builds, a 64-byte load of two 32-byte stores: 1.6x slower.)
                let off = 64 * quads;
                let half: __mmask64 = 0xffff_ffff;
                // SAFETY: the 32 loaded bytes are in bounds (off + 32 == m2 × 16);
                // masked-off bytes are neither read nor faulted on.
                let c = unsafe { _mm512_maskz_loadu_epi8(half, base.add(off).cast()) };
                quad!(c, |q: usize| {
                    // SAFETY: as above, within the table.
                    unsafe { _mm512_maskz_loadu_epi8(half, luts[q].as_ptr().add(off).cast()) }
                });
            }
            let mut sums = [[0u16; SUB_BLOCK]; NQ];
            let mut masks = [0u32; NQ];
            for (q, a) in acc.iter().enumerate() {
                let lo_even = _mm512_sub_epi16(a[0], _mm512_slli_epi16::<8>(a[1]));
                let hi_even = _mm512_sub_epi16(a[2], _mm512_slli_epi16::<8>(a[3]));
                // Sum the four lanes of each of A = lo_even, B = lo_odd, C = hi_even,
                // D = hi_odd into [A, B, C, D] (vectors 0–7, 8–15, 16–23, 24–31).
                let (x, y) = (lo_even, a[1]);
                let s = _mm512_add_epi16(
                    _mm512_shuffle_i64x2::<0b01_00_01_00>(x, y),
                    _mm512_shuffle_i64x2::<0b11_10_11_10>(x, y),
                );
                let (x, y) = (hi_even, a[3]);
                let u = _mm512_add_epi16(
                    _mm512_shuffle_i64x2::<0b01_00_01_00>(x, y),
                    _mm512_shuffle_i64x2::<0b11_10_11_10>(x, y),
                );
                let r = _mm512_add_epi16(
                    _mm512_shuffle_i64x2::<0b10_00_10_00>(s, u),
                    _mm512_shuffle_i64x2::<0b11_01_11_01>(s, u),
                );
                let t = _mm512_set1_epi16(collector.threshold(q) as i16);
                masks[q] = _mm512_cmple_epu16_mask(r, t);
                // SAFETY: 64 bytes written into a 64-byte array.
                unsafe { _mm512_storeu_si512(sums[q].as_mut_ptr().cast(), r) };
            }
            for q in 0..NQ {
                if masks[q] != 0 {
                    collector.collect(q, sb, masks[q], &sums[q]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn random_codes(layout: &FastScanLayout, n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed;
        let mut next = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 33) as u8 & 15
        };
        let mut blocks = vec![0u8; layout.bytes_for(n)];
        let mut code = vec![0u8; layout.m()];
        for i in 0..n {
            code.iter_mut().for_each(|c| *c = next());
            layout.write_code(&mut blocks, i, &code);
        }
        blocks
    }

    #[test]
    fn table_keys_equal_table_key_bit_for_bit() {
        for m in [1, 3, 8, 30] {
            let layout = FastScanLayout::new(m, 32).unwrap();
            let n = 100;
            let codes = random_codes(&layout, n, 7 + m as u64);
            let other = random_codes(&layout, n, 99);
            let table: Vec<f32> = (0..m * 16)
                .map(|i| ((i * 53) % 97) as f32 * 0.37 - 9.0)
                .collect();
            for i in 0..n - 3 {
                let got = layout.table_keys(
                    [
                        (&codes[..], i),
                        (&other[..], i + 1),
                        (&codes[..], n - 1 - i),
                        (&other[..], i + 3),
                    ],
                    &table,
                );
                let want = [
                    layout.table_key(&codes, i, &table),
                    layout.table_key(&other, i + 1, &table),
                    layout.table_key(&codes, n - 1 - i, &table),
                    layout.table_key(&other, i + 3, &table),
                ];
                assert_eq!(got.map(f32::to_bits), want.map(f32::to_bits), "m={m} i={i}");
            }
        }
    }

    #[test]
    fn every_level_equals_the_oracle() {
        for m in [1, 2, 3, 4, 6, 8, 16, 30, 32, 64] {
            let layout = FastScanLayout::new(m, 64).unwrap();
            let n = 150;
            let codes = random_codes(&layout, n, m as u64);
            let table: Vec<f32> = (0..m * 16).map(|i| ((i * 37) % 101) as f32 * 0.7).collect();
            let lut = QuantizedLut::new(&table, layout.m2()).unwrap();
            let oracle = sums_scalar(&layout, &lut, &codes, n);
            let nsub = layout.bytes_for(n) / layout.sub_block_bytes();
            for level in SimdLevel::ALL {
                let got = sums(level, &layout, &lut, &codes, nsub).unwrap();
                assert_eq!(&got[..n], &oracle[..], "m={m} level={level}");
            }
        }
    }
}
