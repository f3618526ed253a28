//! x86-64 kernels with `std::arch`: AVX2+FMA (256-bit) and AVX-512F (512-bit, masked
//! tails). Each function requires its target features; `super::Kernels` only stores
//! pointers to them after `is_x86_feature_detected!` said yes.
//!
//! Every function takes slices whose lengths the caller has already checked to be
//! consistent (`a.len() == b.len()`, `ys.len() == out.len() * x.len()`); the loops only
//! read inside those lengths.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

// ---------------------------------------------------------------------------------
// AVX-512
// ---------------------------------------------------------------------------------

#[inline(always)]
fn tail_mask(rem: usize) -> __mmask16 {
    debug_assert!(rem < 16);
    ((1u32 << rem) - 1) as __mmask16
}

/// Squared L2 distance (AVX-512F).
///
/// # Safety
/// The CPU must support `avx512f`; `a.len() == b.len()`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn l2_sqr_avx512(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len();
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc0 = _mm512_setzero_ps();
    let mut acc1 = _mm512_setzero_ps();
    let mut acc2 = _mm512_setzero_ps();
    let mut acc3 = _mm512_setzero_ps();
    let mut i = 0;
    while i + 64 <= n {
        // SAFETY: i + 64 <= n = a.len() = b.len(), so all four 16-float loads are in bounds.
        unsafe {
            let d0 = _mm512_sub_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)));
            let d1 = _mm512_sub_ps(
                _mm512_loadu_ps(pa.add(i + 16)),
                _mm512_loadu_ps(pb.add(i + 16)),
            );
            let d2 = _mm512_sub_ps(
                _mm512_loadu_ps(pa.add(i + 32)),
                _mm512_loadu_ps(pb.add(i + 32)),
            );
            let d3 = _mm512_sub_ps(
                _mm512_loadu_ps(pa.add(i + 48)),
                _mm512_loadu_ps(pb.add(i + 48)),
            );
            acc0 = _mm512_fmadd_ps(d0, d0, acc0);
            acc1 = _mm512_fmadd_ps(d1, d1, acc1);
            acc2 = _mm512_fmadd_ps(d2, d2, acc2);
            acc3 = _mm512_fmadd_ps(d3, d3, acc3);
        }
        i += 64;
    }
    while i + 16 <= n {
        // SAFETY: the full loads end at i + 16 <= n; the masked tail reads only lanes below n.
        let d = unsafe { _mm512_sub_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i))) };
        acc0 = _mm512_fmadd_ps(d, d, acc0);
        i += 16;
    }
    if i < n {
        let m = tail_mask(n - i);
        // SAFETY: the full loads end at i + 16 <= n; the masked tail reads only lanes below n.
        let d = unsafe {
            _mm512_sub_ps(
                _mm512_maskz_loadu_ps(m, pa.add(i)),
                _mm512_maskz_loadu_ps(m, pb.add(i)),
            )
        };
        acc1 = _mm512_fmadd_ps(d, d, acc1);
    }
    _mm512_reduce_add_ps(_mm512_add_ps(
        _mm512_add_ps(acc0, acc1),
        _mm512_add_ps(acc2, acc3),
    ))
}

/// Inner product (AVX-512F).
///
/// # Safety
/// The CPU must support `avx512f`; `a.len() == b.len()`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn inner_product_avx512(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len();
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc0 = _mm512_setzero_ps();
    let mut acc1 = _mm512_setzero_ps();
    let mut acc2 = _mm512_setzero_ps();
    let mut acc3 = _mm512_setzero_ps();
    let mut i = 0;
    while i + 64 <= n {
        // SAFETY: i + 64 <= n = a.len() = b.len(), so all four 16-float loads are in bounds.
        unsafe {
            acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), acc0);
            acc1 = _mm512_fmadd_ps(
                _mm512_loadu_ps(pa.add(i + 16)),
                _mm512_loadu_ps(pb.add(i + 16)),
                acc1,
            );
            acc2 = _mm512_fmadd_ps(
                _mm512_loadu_ps(pa.add(i + 32)),
                _mm512_loadu_ps(pb.add(i + 32)),
                acc2,
            );
            acc3 = _mm512_fmadd_ps(
                _mm512_loadu_ps(pa.add(i + 48)),
                _mm512_loadu_ps(pb.add(i + 48)),
                acc3,
            );
        }
        i += 64;
    }
    while i + 16 <= n {
        // SAFETY: the full loads end at i + 16 <= n; the masked tail reads only lanes below n.
        unsafe {
            acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), acc0);
        }
        i += 16;
    }
    if i < n {
        let m = tail_mask(n - i);
        // SAFETY: the full loads end at i + 16 <= n; the masked tail reads only lanes below n.
        unsafe {
            acc1 = _mm512_fmadd_ps(
                _mm512_maskz_loadu_ps(m, pa.add(i)),
                _mm512_maskz_loadu_ps(m, pb.add(i)),
                acc1,
            );
        }
    }
    _mm512_reduce_add_ps(_mm512_add_ps(
        _mm512_add_ps(acc0, acc1),
        _mm512_add_ps(acc2, acc3),
    ))
}

/// Squared norm (AVX-512F).
///
/// # Safety
/// The CPU must support `avx512f`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn norm_sqr_avx512(a: &[f32]) -> f32 {
    // SAFETY: same CPU requirement; the two slices are the same slice.
    unsafe { inner_product_avx512(a, a) }
}

/// Distances from `x` to four rows at once: the query chunk is loaded once per step.
/// `L2 == true` computes squared L2, otherwise inner products.
///
/// # Safety
/// `avx512f`; each of `y0..y3` points at `d` readable floats; `x` has `d` floats.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn four_rows_avx512<const L2: bool, const PREFETCH: bool>(
    x: *const f32,
    y0: *const f32,
    y1: *const f32,
    y2: *const f32,
    y3: *const f32,
    d: usize,
    ahead: [*const f32; 4],
) -> [f32; 4] {
    let mut a0 = _mm512_setzero_ps();
    let mut a1 = _mm512_setzero_ps();
    let mut a2 = _mm512_setzero_ps();
    let mut a3 = _mm512_setzero_ps();
    let mut i = 0;
    while i < d {
        let m = if d - i >= 16 {
            0xffff
        } else {
            tail_mask(d - i)
        };
        if PREFETCH {
            // The same line of each of the four rows the caller reads next; prefetch never
            // faults. `_mm_prefetch` is a safe function from Rust 1.91 on, `unsafe` before
            // (MSRV 1.89): the block is needed there and unused here.
            #[allow(unused_unsafe)]
            // SAFETY: prefetching reads nothing and never faults, whatever the address.
            unsafe {
                for a in ahead {
                    _mm_prefetch::<_MM_HINT_T0>(a.wrapping_add(i) as *const i8);
                }
            }
        }
        // SAFETY: lanes selected by `m` lie inside the `d` floats of each pointer.
        unsafe {
            let q = _mm512_maskz_loadu_ps(m, x.add(i));
            let v0 = _mm512_maskz_loadu_ps(m, y0.add(i));
            let v1 = _mm512_maskz_loadu_ps(m, y1.add(i));
            let v2 = _mm512_maskz_loadu_ps(m, y2.add(i));
            let v3 = _mm512_maskz_loadu_ps(m, y3.add(i));
            if L2 {
                let d0 = _mm512_sub_ps(q, v0);
                let d1 = _mm512_sub_ps(q, v1);
                let d2 = _mm512_sub_ps(q, v2);
                let d3 = _mm512_sub_ps(q, v3);
                a0 = _mm512_fmadd_ps(d0, d0, a0);
                a1 = _mm512_fmadd_ps(d1, d1, a1);
                a2 = _mm512_fmadd_ps(d2, d2, a2);
                a3 = _mm512_fmadd_ps(d3, d3, a3);
            } else {
                a0 = _mm512_fmadd_ps(q, v0, a0);
                a1 = _mm512_fmadd_ps(q, v1, a1);
                a2 = _mm512_fmadd_ps(q, v2, a2);
                a3 = _mm512_fmadd_ps(q, v3, a3);
            }
        }
        i += 16;
    }
    [
        _mm512_reduce_add_ps(a0),
        _mm512_reduce_add_ps(a1),
        _mm512_reduce_add_ps(a2),
        _mm512_reduce_add_ps(a3),
    ]
}

/// One query against many rows (AVX-512F), row by row with the single-row kernels: a
/// row's distance is then the same whether it is scored alone or among others (batched
/// exact searches rescore their candidates one by one and must agree with a scan), as
/// on AVX2. (`four_rows_avx512` sums each row in one accumulator, another order.)
///
/// # Safety
/// `avx512f`; `x` not empty; `ys.len() == out.len() * x.len()`.
#[target_feature(enable = "avx512f")]
unsafe fn ny_avx512<const L2: bool>(x: &[f32], ys: &[f32], out: &mut [f32]) {
    for (o, y) in out.iter_mut().zip(ys.chunks_exact(x.len())) {
        // SAFETY: same CPU requirement, equal lengths.
        *o = unsafe {
            if L2 {
                l2_sqr_avx512(x, y)
            } else {
                inner_product_avx512(x, y)
            }
        };
    }
}

/// Squared L2 from `x` to each row of `ys` (AVX-512F).
///
/// # Safety
/// `avx512f`; `ys.len() == out.len() * x.len()`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn l2_sqr_ny_avx512(x: &[f32], ys: &[f32], out: &mut [f32]) {
    // SAFETY: forwarded contract.
    unsafe { ny_avx512::<true>(x, ys, out) }
}

/// Inner product of `x` with each row of `ys` (AVX-512F).
///
/// # Safety
/// `avx512f`; `ys.len() == out.len() * x.len()`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn inner_product_ny_avx512(x: &[f32], ys: &[f32], out: &mut [f32]) {
    // SAFETY: forwarded contract.
    unsafe { ny_avx512::<false>(x, ys, out) }
}

// ---------------------------------------------------------------------------------
// AVX2 + FMA
// ---------------------------------------------------------------------------------

#[target_feature(enable = "avx2,fma")]
#[inline]
fn hsum256(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps::<1>(v);
    let s = _mm_add_ps(lo, hi);
    let sh = _mm_movehdup_ps(s);
    let s = _mm_add_ps(s, sh);
    let sh = _mm_movehl_ps(sh, s);
    _mm_cvtss_f32(_mm_add_ss(s, sh))
}

/// Squared L2 distance (AVX2+FMA).
///
/// # Safety
/// The CPU must support `avx2` and `fma`; `a.len() == b.len()`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn l2_sqr_avx2(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len();
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (j, acc) in acc.iter_mut().enumerate() {
            // SAFETY: i + 8j + 8 <= n.
            let d = unsafe {
                _mm256_sub_ps(
                    _mm256_loadu_ps(pa.add(i + 8 * j)),
                    _mm256_loadu_ps(pb.add(i + 8 * j)),
                )
            };
            *acc = _mm256_fmadd_ps(d, d, *acc);
        }
        i += 32;
    }
    while i + 8 <= n {
        // SAFETY: i + 8 <= n.
        let d = unsafe { _mm256_sub_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i))) };
        acc[0] = _mm256_fmadd_ps(d, d, acc[0]);
        i += 8;
    }
    let mut s = hsum256(_mm256_add_ps(
        _mm256_add_ps(acc[0], acc[1]),
        _mm256_add_ps(acc[2], acc[3]),
    ));
    while i < n {
        let d = a[i] - b[i];
        s += d * d;
        i += 1;
    }
    s
}

/// Inner product (AVX2+FMA).
///
/// # Safety
/// The CPU must support `avx2` and `fma`; `a.len() == b.len()`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn inner_product_avx2(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len();
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (j, acc) in acc.iter_mut().enumerate() {
            // SAFETY: i + 8j + 8 <= n.
            unsafe {
                *acc = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(i + 8 * j)),
                    _mm256_loadu_ps(pb.add(i + 8 * j)),
                    *acc,
                );
            }
        }
        i += 32;
    }
    while i + 8 <= n {
        // SAFETY: i + 8 <= n.
        unsafe {
            acc[0] = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i)),
                _mm256_loadu_ps(pb.add(i)),
                acc[0],
            );
        }
        i += 8;
    }
    let mut s = hsum256(_mm256_add_ps(
        _mm256_add_ps(acc[0], acc[1]),
        _mm256_add_ps(acc[2], acc[3]),
    ));
    while i < n {
        s += a[i] * b[i];
        i += 1;
    }
    s
}

/// Squared norm (AVX2+FMA).
///
/// # Safety
/// The CPU must support `avx2` and `fma`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn norm_sqr_avx2(a: &[f32]) -> f32 {
    // SAFETY: same requirement.
    unsafe { inner_product_avx2(a, a) }
}

/// Squared L2 from `x` to each row of `ys` (AVX2+FMA).
///
/// # Safety
/// `avx2`+`fma`; `ys.len() == out.len() * x.len()`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn l2_sqr_ny_avx2(x: &[f32], ys: &[f32], out: &mut [f32]) {
    for (o, y) in out.iter_mut().zip(ys.chunks_exact(x.len())) {
        // SAFETY: same requirement, equal lengths.
        *o = unsafe { l2_sqr_avx2(x, y) };
    }
}

/// Inner product of `x` with each row of `ys` (AVX2+FMA).
///
/// # Safety
/// `avx2`+`fma`; `ys.len() == out.len() * x.len()`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn inner_product_ny_avx2(x: &[f32], ys: &[f32], out: &mut [f32]) {
    for (o, y) in out.iter_mut().zip(ys.chunks_exact(x.len())) {
        // SAFETY: same requirement, equal lengths.
        *o = unsafe { inner_product_avx2(x, y) };
    }
}

/// Four rows at once (AVX2+FMA): the query chunk is loaded once per step and the four
/// rows are read side by side; two accumulators per row (eight independent chains).
///
/// # Safety
/// `avx2`+`fma`; every row as long as `x`.
#[target_feature(enable = "avx2,fma")]
#[inline]
// `h` and `r` both offset pointers and pick accumulators.
#[allow(clippy::needless_range_loop)]
unsafe fn four_rows_avx2<const L2: bool>(x: &[f32], ys: [&[f32]; 4]) -> [f32; 4] {
    let n = x.len();
    let px = x.as_ptr();
    let p = ys.map(<[f32]>::as_ptr);
    let mut acc = [[_mm256_setzero_ps(); 2]; 4];
    let mut i = 0;
    while i + 16 <= n {
        for h in 0..2 {
            // SAFETY: i + 8h + 8 <= n for x and every row.
            unsafe {
                let q = _mm256_loadu_ps(px.add(i + 8 * h));
                for r in 0..4 {
                    let v = _mm256_loadu_ps(p[r].add(i + 8 * h));
                    acc[r][h] = if L2 {
                        let d = _mm256_sub_ps(q, v);
                        _mm256_fmadd_ps(d, d, acc[r][h])
                    } else {
                        _mm256_fmadd_ps(q, v, acc[r][h])
                    };
                }
            }
        }
        i += 16;
    }
    if i + 8 <= n {
        // SAFETY: i + 8 <= n for x and every row.
        unsafe {
            let q = _mm256_loadu_ps(px.add(i));
            for r in 0..4 {
                let v = _mm256_loadu_ps(p[r].add(i));
                acc[r][0] = if L2 {
                    let d = _mm256_sub_ps(q, v);
                    _mm256_fmadd_ps(d, d, acc[r][0])
                } else {
                    _mm256_fmadd_ps(q, v, acc[r][0])
                };
            }
        }
        i += 8;
    }
    let mut out = [0.0f32; 4];
    for r in 0..4 {
        let mut s = hsum256(_mm256_add_ps(acc[r][0], acc[r][1]));
        for j in i..n {
            let (a, b) = (x[j], ys[r][j]);
            s += if L2 { (a - b) * (a - b) } else { a * b };
        }
        out[r] = s;
    }
    out
}

/// Squared L2 from `x` to four rows (AVX2+FMA).
///
/// # Safety
/// `avx2`+`fma`; every row as long as `x`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn l2_sqr_4_avx2(x: &[f32], ys: [&[f32]; 4]) -> [f32; 4] {
    // SAFETY: same requirement.
    unsafe { four_rows_avx2::<true>(x, ys) }
}

/// Inner products of `x` with four rows (AVX2+FMA).
///
/// # Safety
/// `avx2`+`fma`; every row as long as `x`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn inner_product_4_avx2(x: &[f32], ys: [&[f32]; 4]) -> [f32; 4] {
    // SAFETY: same requirement.
    unsafe { four_rows_avx2::<false>(x, ys) }
}

/// [`l2_sqr_4_avx2`] after prefetching the rows of `next` (up to `x.len()` floats each).
///
/// # Safety
/// As [`l2_sqr_4_avx2`]; `next` may be anything (it is only prefetched).
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn l2_sqr_4_ahead_avx2(
    x: &[f32],
    ys: [&[f32]; 4],
    next: [&[f32]; 4],
) -> [f32; 4] {
    super::prefetch_rows(next, x.len());
    // SAFETY: same requirement.
    unsafe { four_rows_avx2::<true>(x, ys) }
}

/// [`inner_product_4_avx2`] after prefetching the rows of `next`.
///
/// # Safety
/// As [`l2_sqr_4_ahead_avx2`].
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn inner_product_4_ahead_avx2(
    x: &[f32],
    ys: [&[f32]; 4],
    next: [&[f32]; 4],
) -> [f32; 4] {
    super::prefetch_rows(next, x.len());
    // SAFETY: same requirement.
    unsafe { four_rows_avx2::<false>(x, ys) }
}

/// [`four_rows_avx512`] over slices: `x` against the four rows of `ys`, prefetching the
/// rows of `next` line by line when `PREFETCH`.
///
/// # Safety
/// `avx512f`; every row of `ys` as long as `x` (`next` may be anything: it is only
/// prefetched, up to `x.len()` floats of each row).
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn four_avx512<const L2: bool, const PREFETCH: bool>(
    x: &[f32],
    ys: [&[f32]; 4],
    next: [&[f32]; 4],
) -> [f32; 4] {
    let [y0, y1, y2, y3] = ys.map(<[f32]>::as_ptr);
    // SAFETY: `avx512f`; each row pointer has `x.len()` readable floats.
    unsafe {
        four_rows_avx512::<L2, PREFETCH>(
            x.as_ptr(),
            y0,
            y1,
            y2,
            y3,
            x.len(),
            next.map(<[f32]>::as_ptr),
        )
    }
}

/// Squared L2 from `x` to four rows (AVX-512F).
///
/// # Safety
/// `avx512f`; every row as long as `x`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn l2_sqr_4_avx512(x: &[f32], ys: [&[f32]; 4]) -> [f32; 4] {
    // SAFETY: same requirement.
    unsafe { four_avx512::<true, false>(x, ys, [&[]; 4]) }
}

/// Inner products of `x` with four rows (AVX-512F).
///
/// # Safety
/// `avx512f`; every row as long as `x`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn inner_product_4_avx512(x: &[f32], ys: [&[f32]; 4]) -> [f32; 4] {
    // SAFETY: same requirement.
    unsafe { four_avx512::<false, false>(x, ys, [&[]; 4]) }
}

/// [`l2_sqr_4_avx512`], prefetching the rows of `next` line by line as it reads `ys`.
///
/// # Safety
/// As [`l2_sqr_4_avx512`]; `next` may be anything (it is only prefetched).
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn l2_sqr_4_ahead_avx512(
    x: &[f32],
    ys: [&[f32]; 4],
    next: [&[f32]; 4],
) -> [f32; 4] {
    // SAFETY: same requirement.
    unsafe { four_avx512::<true, true>(x, ys, next) }
}

/// [`inner_product_4_avx512`], prefetching the rows of `next` line by line.
///
/// # Safety
/// As [`inner_product_4_avx512`]; `next` may be anything (it is only prefetched).
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn inner_product_4_ahead_avx512(
    x: &[f32],
    ys: [&[f32]; 4],
    next: [&[f32]; 4],
) -> [f32; 4] {
    // SAFETY: same requirement.
    unsafe { four_avx512::<false, true>(x, ys, next) }
}

// ---------------------------------------------------------------------------------
// Threshold scans (fused top-k pre-check)
// ---------------------------------------------------------------------------------

/// AVX-512 version of `scalar::le_hits`: sixteen lanes per masked compare.
///
/// # Safety
/// `avx512f`; `thresholds.len() == values.len()`; `offsets` empty or as long.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn le_hits_avx512(
    values: &[f32],
    offsets: &[f32],
    bias: f32,
    thresholds: &[f32],
    hits: &mut Vec<u32>,
) {
    let n = values.len();
    let (pv, po, pt) = (values.as_ptr(), offsets.as_ptr(), thresholds.as_ptr());
    let b = _mm512_set1_ps(bias);
    let with_offsets = !offsets.is_empty();
    let mut i0 = 0;
    while i0 < n {
        let m = if n - i0 >= 16 {
            0xffff
        } else {
            tail_mask(n - i0)
        };
        // SAFETY: lanes selected by `m` are below n, and every slice has n values.
        let mut mask = unsafe {
            let v = _mm512_maskz_loadu_ps(m, pv.add(i0));
            let t = _mm512_maskz_loadu_ps(m, pt.add(i0));
            let base = if with_offsets {
                _mm512_add_ps(_mm512_maskz_loadu_ps(m, po.add(i0)), b)
            } else {
                b
            };
            _mm512_mask_cmp_ps_mask::<_CMP_LE_OQ>(m, _mm512_add_ps(base, v), t)
        };
        while mask != 0 {
            hits.push((i0 + mask.trailing_zeros() as usize) as u32);
            mask &= mask - 1;
        }
        i0 += 16;
    }
}

/// `scalar::le_hits` compiled with AVX2 enabled, so the pre-check vectorises 8-wide.
///
/// # Safety
/// `avx2`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn le_hits_avx2(
    values: &[f32],
    offsets: &[f32],
    bias: f32,
    thresholds: &[f32],
    hits: &mut Vec<u32>,
) {
    super::scalar::le_hits(values, offsets, bias, thresholds, hits)
}

// ---------------------------------------------------------------------------------
// Byte rows (scalar-quantized vectors)
// ---------------------------------------------------------------------------------

/// Prefetches every line of the first `len` bytes of each row of `next`.
#[inline(always)]
fn prefetch_byte_rows(next: [&[u8]; 4], len: usize) {
    for r in next {
        super::prefetch(&r[..len.min(r.len())], usize::MAX);
    }
}

/// Adds components `from..a.len()` of `scalar::u8_affine_4` to `out` (the remainder
/// after the vector steps).
#[inline(always)]
fn bytes_tail<const L2: bool>(
    out: &mut [f32; 4],
    a: &[f32],
    b: &[f32],
    codes: [&[u8]; 4],
    from: usize,
) {
    for (o, c) in out.iter_mut().zip(codes) {
        for j in from..a.len() {
            let cv = f32::from(c[j]);
            if L2 {
                let t = cv * a[j] + b[j];
                *o += t * t;
            } else {
                *o += cv * a[j];
            }
        }
    }
}

/// `scalar::u8_affine_4` with AVX-512F: sixteen components per step, four rows side by
/// side, the remainder in plain code; prefetches the rows of `next` first.
///
/// # Safety
/// `avx512f`; `a` and (for L2) `b` hold at least `d` floats and every row of `codes` at
/// least `d` bytes, where `d = a.len()`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn u8_affine_4_avx512<const L2: bool>(
    a: &[f32],
    b: &[f32],
    codes: [&[u8]; 4],
    next: [&[u8]; 4],
) -> [f32; 4] {
    let d = a.len();
    prefetch_byte_rows(next, d);
    let n = d / 16 * 16;
    let [c0, c1, c2, c3] = codes.map(<[u8]>::as_ptr);
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    while i < n {
        // SAFETY: i + 16 <= n <= d: inside `a`, `b` (L2) and every row.
        unsafe {
            let av = _mm512_loadu_ps(a.as_ptr().add(i));
            let bv = if L2 {
                _mm512_loadu_ps(b.as_ptr().add(i))
            } else {
                _mm512_setzero_ps()
            };
            for (acc, c) in acc.iter_mut().zip([c0, c1, c2, c3]) {
                let cv = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(c.add(i).cast())));
                if L2 {
                    let t = _mm512_fmadd_ps(cv, av, bv);
                    *acc = _mm512_fmadd_ps(t, t, *acc);
                } else {
                    *acc = _mm512_fmadd_ps(cv, av, *acc);
                }
            }
        }
        i += 16;
    }
    let mut out = [
        _mm512_reduce_add_ps(acc[0]),
        _mm512_reduce_add_ps(acc[1]),
        _mm512_reduce_add_ps(acc[2]),
        _mm512_reduce_add_ps(acc[3]),
    ];
    bytes_tail::<L2>(&mut out, a, b, codes, n);
    out
}

/// `scalar::u8_affine_4` with AVX2 and FMA: eight components per step.
///
/// # Safety
/// `avx2` and `fma`; lengths as [`u8_affine_4_avx512`].
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn u8_affine_4_avx2<const L2: bool>(
    a: &[f32],
    b: &[f32],
    codes: [&[u8]; 4],
    next: [&[u8]; 4],
) -> [f32; 4] {
    let d = a.len();
    prefetch_byte_rows(next, d);
    let n = d / 8 * 8;
    let [c0, c1, c2, c3] = codes.map(<[u8]>::as_ptr);
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i < n {
        // SAFETY: i + 8 <= n <= d: inside `a`, `b` (L2) and every row.
        unsafe {
            let av = _mm256_loadu_ps(a.as_ptr().add(i));
            let bv = if L2 {
                _mm256_loadu_ps(b.as_ptr().add(i))
            } else {
                _mm256_setzero_ps()
            };
            for (acc, c) in acc.iter_mut().zip([c0, c1, c2, c3]) {
                let cv = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(c.add(i).cast())));
                if L2 {
                    let t = _mm256_fmadd_ps(cv, av, bv);
                    *acc = _mm256_fmadd_ps(t, t, *acc);
                } else {
                    *acc = _mm256_fmadd_ps(cv, av, *acc);
                }
            }
        }
        i += 8;
    }
    let mut out = [
        hsum256(acc[0]),
        hsum256(acc[1]),
        hsum256(acc[2]),
        hsum256(acc[3]),
    ];
    bytes_tail::<L2>(&mut out, a, b, codes, n);
    out
}
