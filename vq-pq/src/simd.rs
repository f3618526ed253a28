//! Kernels that work on codes directly, compiled three times (plain, AVX2+FMA, AVX-512)
//! and chosen once per computer from [`vq_core::distance::Kernels::get`]'s level, so the
//! `VQ_SIMD` cap applies here too.
//!
//! Bodies are written with 16 independent lanes (arrays) so that LLVM vectorises them;
//! inside a `target_feature` function that becomes AVX2 or AVX-512 code with FMA.
//! Every kernel processes a block of codes per call, so the indirect call is paid once
//! per block, not once per code.

#![allow(unsafe_code)]
#![allow(clippy::needless_range_loop)]

use vq_core::distance::{Kernels, SimdLevel};

const L: usize = 16;

#[inline(always)]
fn fma<const F: bool>(a: f32, b: f32, c: f32) -> f32 {
    if F { a.mul_add(b, c) } else { a * b + c }
}

#[inline(always)]
fn hsum(acc: &[f32; L]) -> f32 {
    // Fixed pairwise order: the result does not depend on the instruction set.
    let mut s = [0f32; 8];
    for j in 0..8 {
        s[j] = acc[j] + acc[j + 8];
    }
    let t = [s[0] + s[4], s[1] + s[5], s[2] + s[6], s[3] + s[7]];
    (t[0] + t[2]) + (t[1] + t[3])
}

/// A kernel over a block of codes: `(codes, code_size, a, b, out)`.
pub(crate) type BlockFn = unsafe fn(&[u8], usize, &[f32], &[f32], &mut [f32]);
/// The nearest-centroid kernel: `(xt, codebook, dsub, best distances, best indices)`.
type NearestFn = unsafe fn(&[f32], &[f32], usize, &mut [f32], &mut [u32]);
/// A table kernel: `(x_sub, transposed centroids dsub × ksub, out ksub)`.
pub(crate) type TableFn = unsafe fn(&[f32], &[f32], &mut [f32]);

// ---------------------------------------------------------------- bodies

/// `out[j] = Σ_d (x[d] − ct[d·ksub + j])²`.
#[inline(always)]
fn l2_table_body<const F: bool>(x: &[f32], ct: &[f32], out: &mut [f32]) {
    let ksub = out.len();
    out.fill(0.0);
    for (d, &xd) in x.iter().enumerate() {
        let row = &ct[d * ksub..(d + 1) * ksub];
        for (o, &c) in out.iter_mut().zip(row) {
            let t = xd - c;
            *o = fma::<F>(t, t, *o);
        }
    }
}

/// `out[j] = Σ_d x[d] · ct[d·ksub + j]`.
#[inline(always)]
fn ip_table_body<const F: bool>(x: &[f32], ct: &[f32], out: &mut [f32]) {
    let ksub = out.len();
    out.fill(0.0);
    for (d, &xd) in x.iter().enumerate() {
        let row = &ct[d * ksub..(d + 1) * ksub];
        for (o, &c) in out.iter_mut().zip(row) {
            *o = fma::<F>(xd, c, *o);
        }
    }
}

/// The tables of every sub-space for 16 centroids each: `x` is `m × dsub`, `ct` the
/// `m` transposed blocks (`dsub × 16` each), `out` `m × 16`. Four sub-spaces are
/// computed side by side (independent chains); each entry is the same sum, in the same
/// order, as [`l2_table_body`] / [`ip_table_body`] gives it.
#[inline(always)]
fn tables16_body<const F: bool, const IP: bool>(x: &[f32], ct: &[f32], out: &mut [f32]) {
    let m = out.len() / L;
    if m == 0 {
        return;
    }
    let dsub = x.len() / m;
    let term = |xd: f32, c: f32, acc: f32| {
        if IP {
            fma::<F>(xd, c, acc)
        } else {
            let t = xd - c;
            fma::<F>(t, t, acc)
        }
    };
    let mut mi = 0;
    while mi + 4 <= m {
        let mut acc = [[0f32; L]; 4];
        let xs: [&[f32]; 4] = std::array::from_fn(|s| &x[(mi + s) * dsub..][..dsub]);
        let cs: [&[f32]; 4] = std::array::from_fn(|s| &ct[(mi + s) * dsub * L..][..dsub * L]);
        for d in 0..dsub {
            for s in 0..4 {
                let row = &cs[s][d * L..(d + 1) * L];
                let xd = xs[s][d];
                for j in 0..L {
                    acc[s][j] = term(xd, row[j], acc[s][j]);
                }
            }
        }
        for (s, a) in acc.iter().enumerate() {
            out[(mi + s) * L..(mi + s + 1) * L].copy_from_slice(a);
        }
        mi += 4;
    }
    // The last sub-spaces one at a time, through the one-table bodies themselves.
    for mi in mi..m {
        let (xs, cs) = (&x[mi * dsub..][..dsub], &ct[mi * dsub * L..][..dsub * L]);
        let o = &mut out[mi * L..(mi + 1) * L];
        if IP {
            ip_table_body::<F>(xs, cs, o);
        } else {
            l2_table_body::<F>(xs, cs, o);
        }
    }
}

/// [`tables16_body`] for squared L2.
#[inline(always)]
fn l2_tables16_body<const F: bool>(x: &[f32], ct: &[f32], out: &mut [f32]) {
    tables16_body::<F, false>(x, ct, out);
}

/// [`tables16_body`] for inner products.
#[inline(always)]
fn ip_tables16_body<const F: bool>(x: &[f32], ct: &[f32], out: &mut [f32]) {
    tables16_body::<F, true>(x, ct, out);
}

/// Nearest centroid for 16 sub-vectors at once (lanes = vectors). `xt` holds the 16
/// sub-vectors transposed (`dsub × 16`), `c` the codebook (`ksub × dsub`). Keeps the
/// first index on ties. Distances are exact differences (no norm expansion).
#[inline(always)]
fn nearest16_body<const F: bool>(
    xt: &[f32],
    c: &[f32],
    dsub: usize,
    bd: &mut [f32],
    bi: &mut [u32],
) {
    let mut best = [f32::INFINITY; L];
    let mut idx = [0u32; L];
    for (j, cj) in c.chunks_exact(dsub).enumerate() {
        let mut acc = [0f32; L];
        for (dd, &cv) in cj.iter().enumerate() {
            let xr = &xt[dd * L..dd * L + L];
            for l in 0..L {
                let t = xr[l] - cv;
                acc[l] = fma::<F>(t, t, acc[l]);
            }
        }
        for l in 0..L {
            let better = acc[l] < best[l];
            best[l] = if better { acc[l] } else { best[l] };
            idx[l] = if better { j as u32 } else { idx[l] };
        }
    }
    bd[..L].copy_from_slice(&best);
    bi[..L].copy_from_slice(&idx);
}

/// Byte codes, L2: `Σ_i (c_i·a_i + b_i)²` where `b = bias − query`.
#[inline(always)]
fn u8_l2_body<const F: bool>(codes: &[u8], cs: usize, a: &[f32], b: &[f32], out: &mut [f32]) {
    let n = cs / L * L;
    for (o, c) in out.iter_mut().zip(codes.chunks_exact(cs)) {
        let mut acc = [0f32; L];
        for ((cc, aa), bb) in c[..n]
            .chunks_exact(L)
            .zip(a[..n].chunks_exact(L))
            .zip(b[..n].chunks_exact(L))
        {
            for j in 0..L {
                let t = fma::<F>(f32::from(cc[j]), aa[j], bb[j]);
                acc[j] = fma::<F>(t, t, acc[j]);
            }
        }
        let mut s = hsum(&acc);
        for i in n..cs {
            let t = fma::<F>(f32::from(c[i]), a[i], b[i]);
            s = fma::<F>(t, t, s);
        }
        *o = s;
    }
}

/// Byte codes, inner product: `Σ_i c_i·a_i` (the caller adds the constant part).
#[inline(always)]
fn u8_ip_body<const F: bool>(codes: &[u8], cs: usize, a: &[f32], _b: &[f32], out: &mut [f32]) {
    let n = cs / L * L;
    for (o, c) in out.iter_mut().zip(codes.chunks_exact(cs)) {
        let mut acc = [0f32; L];
        for (cc, aa) in c[..n].chunks_exact(L).zip(a[..n].chunks_exact(L)) {
            for j in 0..L {
                acc[j] = fma::<F>(f32::from(cc[j]), aa[j], acc[j]);
            }
        }
        let mut s = hsum(&acc);
        for i in n..cs {
            s = fma::<F>(f32::from(c[i]), a[i], s);
        }
        *o = s;
    }
}

/// 4-bit codes (two components per byte, low nibble first), L2. `a` and `b` are laid out
/// per byte: `a[2j]`, `a[2j+1]` for the low and high nibble of byte `j`.
#[inline(always)]
fn u4_l2_body<const F: bool>(codes: &[u8], cs: usize, a: &[f32], b: &[f32], out: &mut [f32]) {
    const H: usize = L / 2;
    let n = cs / H * H;
    for (o, c) in out.iter_mut().zip(codes.chunks_exact(cs)) {
        let mut acc = [0f32; L];
        for ((cc, aa), bb) in c[..n]
            .chunks_exact(H)
            .zip(a[..2 * n].chunks_exact(L))
            .zip(b[..2 * n].chunks_exact(L))
        {
            for j in 0..H {
                let lo = f32::from(cc[j] & 15);
                let hi = f32::from(cc[j] >> 4);
                let t0 = fma::<F>(lo, aa[2 * j], bb[2 * j]);
                let t1 = fma::<F>(hi, aa[2 * j + 1], bb[2 * j + 1]);
                acc[2 * j] = fma::<F>(t0, t0, acc[2 * j]);
                acc[2 * j + 1] = fma::<F>(t1, t1, acc[2 * j + 1]);
            }
        }
        let mut s = hsum(&acc);
        for j in n..cs {
            let t0 = fma::<F>(f32::from(c[j] & 15), a[2 * j], b[2 * j]);
            let t1 = fma::<F>(f32::from(c[j] >> 4), a[2 * j + 1], b[2 * j + 1]);
            s = fma::<F>(t0, t0, s);
            s = fma::<F>(t1, t1, s);
        }
        *o = s;
    }
}

/// 4-bit codes, inner product `Σ c_i·a_i` (layout as [`u4_l2_body`]).
#[inline(always)]
fn u4_ip_body<const F: bool>(codes: &[u8], cs: usize, a: &[f32], _b: &[f32], out: &mut [f32]) {
    const H: usize = L / 2;
    let n = cs / H * H;
    for (o, c) in out.iter_mut().zip(codes.chunks_exact(cs)) {
        let mut acc = [0f32; L];
        for (cc, aa) in c[..n].chunks_exact(H).zip(a[..2 * n].chunks_exact(L)) {
            for j in 0..H {
                acc[2 * j] = fma::<F>(f32::from(cc[j] & 15), aa[2 * j], acc[2 * j]);
                acc[2 * j + 1] = fma::<F>(f32::from(cc[j] >> 4), aa[2 * j + 1], acc[2 * j + 1]);
            }
        }
        let mut s = hsum(&acc);
        for j in n..cs {
            s = fma::<F>(f32::from(c[j] & 15), a[2 * j], s);
            s = fma::<F>(f32::from(c[j] >> 4), a[2 * j + 1], s);
        }
        *o = s;
    }
}

/// 6-bit codes (four components in three bytes, LSB first), L2; `a`, `b` padded to a
/// multiple of 4 components.
#[inline(always)]
fn u6_l2_body<const F: bool>(codes: &[u8], cs: usize, a: &[f32], b: &[f32], out: &mut [f32]) {
    let groups = a.len() / 4;
    for (o, c) in out.iter_mut().zip(codes.chunks_exact(cs)) {
        let mut acc = [0f32; 4];
        for g in 0..groups {
            let v = six_bit_group(c, g);
            for j in 0..4 {
                let t = fma::<F>(v[j], a[4 * g + j], b[4 * g + j]);
                acc[j] = fma::<F>(t, t, acc[j]);
            }
        }
        *o = (acc[0] + acc[2]) + (acc[1] + acc[3]);
    }
}

/// 6-bit codes, inner product.
#[inline(always)]
fn u6_ip_body<const F: bool>(codes: &[u8], cs: usize, a: &[f32], _b: &[f32], out: &mut [f32]) {
    let groups = a.len() / 4;
    for (o, c) in out.iter_mut().zip(codes.chunks_exact(cs)) {
        let mut acc = [0f32; 4];
        for g in 0..groups {
            let v = six_bit_group(c, g);
            for j in 0..4 {
                acc[j] = fma::<F>(v[j], a[4 * g + j], acc[j]);
            }
        }
        *o = (acc[0] + acc[2]) + (acc[1] + acc[3]);
    }
}

/// The four 6-bit values of group `g` (bytes `3g..3g+3`; missing bytes read as 0).
#[inline(always)]
fn six_bit_group(c: &[u8], g: usize) -> [f32; 4] {
    let b0 = c.get(3 * g).copied().unwrap_or(0);
    let b1 = c.get(3 * g + 1).copied().unwrap_or(0);
    let b2 = c.get(3 * g + 2).copied().unwrap_or(0);
    [
        f32::from(b0 & 63),
        f32::from((b0 >> 6) | ((b1 & 15) << 2)),
        f32::from((b1 >> 4) | ((b2 & 3) << 4)),
        f32::from(b2 >> 2),
    ]
}

#[inline(always)]
fn bf16_at(c: &[u8], i: usize) -> f32 {
    f32::from_bits(u32::from(u16::from_le_bytes([c[2 * i], c[2 * i + 1]])) << 16)
}

/// bf16 codes, L2 against the query in `b`.
#[inline(always)]
fn bf16_l2_body<const F: bool>(codes: &[u8], cs: usize, _a: &[f32], q: &[f32], out: &mut [f32]) {
    let d = cs / 2;
    let n = d / L * L;
    for (o, c) in out.iter_mut().zip(codes.chunks_exact(cs)) {
        let mut acc = [0f32; L];
        for (cc, qq) in c[..2 * n].chunks_exact(2 * L).zip(q[..n].chunks_exact(L)) {
            for j in 0..L {
                let t = bf16_at(cc, j) - qq[j];
                acc[j] = fma::<F>(t, t, acc[j]);
            }
        }
        let mut s = hsum(&acc);
        for i in n..d {
            let t = bf16_at(c, i) - q[i];
            s = fma::<F>(t, t, s);
        }
        *o = s;
    }
}

/// bf16 codes, inner product with the query in `b`.
#[inline(always)]
fn bf16_ip_body<const F: bool>(codes: &[u8], cs: usize, _a: &[f32], q: &[f32], out: &mut [f32]) {
    let d = cs / 2;
    let n = d / L * L;
    for (o, c) in out.iter_mut().zip(codes.chunks_exact(cs)) {
        let mut acc = [0f32; L];
        for (cc, qq) in c[..2 * n].chunks_exact(2 * L).zip(q[..n].chunks_exact(L)) {
            for j in 0..L {
                acc[j] = fma::<F>(bf16_at(cc, j), qq[j], acc[j]);
            }
        }
        let mut s = hsum(&acc);
        for i in n..d {
            s = fma::<F>(bf16_at(c, i), q[i], s);
        }
        *o = s;
    }
}

#[inline(always)]
fn f16_at(c: &[u8], i: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([c[2 * i], c[2 * i + 1]])).to_f32()
}

/// fp16 codes, L2 (portable path; x86 with F16C uses [`x86::f16_block`]).
fn f16_l2_plain(codes: &[u8], cs: usize, _a: &[f32], q: &[f32], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(codes.chunks_exact(cs)) {
        let mut s = 0f32;
        for (i, &qi) in q.iter().enumerate() {
            let t = f16_at(c, i) - qi;
            s += t * t;
        }
        *o = s;
    }
}

/// fp16 codes, inner product (portable path).
fn f16_ip_plain(codes: &[u8], cs: usize, _a: &[f32], q: &[f32], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(codes.chunks_exact(cs)) {
        let mut s = 0f32;
        for (i, &qi) in q.iter().enumerate() {
            s += f16_at(c, i) * qi;
        }
        *o = s;
    }
}

// ---------------------------------------------------------------- instantiations

macro_rules! instantiate {
    ($($name:ident => $body:ident : ($($arg:ident : $ty:ty),*)),* $(,)?) => {
        mod plain {
            #[allow(clippy::wildcard_imports)]
            use super::*;
            $(
                /// Plain instantiation.
                pub(super) unsafe fn $name($($arg: $ty),*) { $body::<false>($($arg),*) }
            )*
        }
        #[cfg(target_arch = "x86_64")]
        mod avx2 {
            #[allow(clippy::wildcard_imports)]
            use super::*;
            $(
                /// AVX2 + FMA instantiation.
                ///
                /// # Safety
                /// The CPU must support AVX2 and FMA.
                #[target_feature(enable = "avx2,fma")]
                pub(super) unsafe fn $name($($arg: $ty),*) { $body::<true>($($arg),*) }
            )*
        }
        #[cfg(target_arch = "x86_64")]
        mod avx512 {
            #[allow(clippy::wildcard_imports)]
            use super::*;
            $(
                /// AVX-512 instantiation.
                ///
                /// # Safety
                /// The CPU must support AVX-512F, AVX2 and FMA.
                #[target_feature(enable = "avx512f,avx2,fma")]
                pub(super) unsafe fn $name($($arg: $ty),*) { $body::<true>($($arg),*) }
            )*
        }
    };
}

instantiate! {
    nearest16 => nearest16_body: (xt: &[f32], c: &[f32], dsub: usize, bd: &mut [f32], bi: &mut [u32]),
    l2_table => l2_table_body: (x: &[f32], ct: &[f32], out: &mut [f32]),
    ip_table => ip_table_body: (x: &[f32], ct: &[f32], out: &mut [f32]),
    l2_tables16 => l2_tables16_body: (x: &[f32], ct: &[f32], out: &mut [f32]),
    ip_tables16 => ip_tables16_body: (x: &[f32], ct: &[f32], out: &mut [f32]),
    u8_l2 => u8_l2_body: (codes: &[u8], cs: usize, a: &[f32], b: &[f32], out: &mut [f32]),
    u8_ip => u8_ip_body: (codes: &[u8], cs: usize, a: &[f32], b: &[f32], out: &mut [f32]),
    u4_l2 => u4_l2_body: (codes: &[u8], cs: usize, a: &[f32], b: &[f32], out: &mut [f32]),
    u4_ip => u4_ip_body: (codes: &[u8], cs: usize, a: &[f32], b: &[f32], out: &mut [f32]),
    u6_l2 => u6_l2_body: (codes: &[u8], cs: usize, a: &[f32], b: &[f32], out: &mut [f32]),
    u6_ip => u6_ip_body: (codes: &[u8], cs: usize, a: &[f32], b: &[f32], out: &mut [f32]),
    bf16_l2 => bf16_l2_body: (codes: &[u8], cs: usize, a: &[f32], b: &[f32], out: &mut [f32]),
    bf16_ip => bf16_ip_body: (codes: &[u8], cs: usize, a: &[f32], b: &[f32], out: &mut [f32]),
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        __m256, _mm_add_ps, _mm_cvtss_f32, _mm_hadd_ps, _mm_loadu_si128, _mm256_castps256_ps128,
        _mm256_cvtph_ps, _mm256_extractf128_ps, _mm256_fmadd_ps, _mm256_loadu_ps,
        _mm256_setzero_ps, _mm256_sub_ps,
    };

    #[inline(always)]
    pub(super) unsafe fn hsum256(v: __m256) -> f32 {
        // SAFETY: only register operations; the caller has AVX enabled.
        unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s = _mm_hadd_ps(s, s);
            _mm_cvtss_f32(_mm_hadd_ps(s, s))
        }
    }

    /// fp16 codes (`cs = 2d` bytes), L2 (`IP = false`) or inner product against `q`.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn f16_block<const IP: bool>(
        codes: &[u8],
        cs: usize,
        q: &[f32],
        out: &mut [f32],
    ) {
        let d = cs / 2;
        let n = d / 8 * 8;
        for (o, c) in out.iter_mut().zip(codes.chunks_exact(cs)) {
            // SAFETY: every load reads 16 bytes of `c` at `2i` with `i + 8 <= n <= d`, so
            // inside the `2d`-byte code, and 8 floats of `q` at `i` with `i + 8 <= d`.
            let mut s = unsafe {
                let mut acc0 = _mm256_setzero_ps();
                let mut i = 0;
                while i < n {
                    let h = _mm_loadu_si128(c.as_ptr().add(2 * i).cast());
                    let y = _mm256_cvtph_ps(h);
                    let x = _mm256_loadu_ps(q.as_ptr().add(i));
                    if IP {
                        acc0 = _mm256_fmadd_ps(x, y, acc0);
                    } else {
                        let t = _mm256_sub_ps(y, x);
                        acc0 = _mm256_fmadd_ps(t, t, acc0);
                    }
                    i += 8;
                }
                hsum256(acc0)
            };
            for i in n..d {
                let y = super::f16_at(c, i);
                if IP {
                    s += y * q[i];
                } else {
                    let t = y - q[i];
                    s += t * t;
                }
            }
            *o = s;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86_u8 {
    use std::arch::x86_64::{
        _mm_add_ps, _mm_cvtss_f32, _mm_hadd_ps, _mm_loadl_epi64, _mm_loadu_si128, _mm256_add_ps,
        _mm256_castps256_ps128, _mm256_cvtepi32_ps, _mm256_cvtepu8_epi32, _mm256_extractf128_ps,
        _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_setzero_ps, _mm512_add_ps, _mm512_cvtepi32_ps,
        _mm512_cvtepu8_epi32, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_reduce_add_ps,
        _mm512_setzero_ps,
    };

    /// Byte codes against per-component `a` (and `b` for L2), AVX-512.
    ///
    /// # Safety
    /// AVX-512F must be available; `a` and (for L2) `b` hold at least `cs` floats and
    /// `codes` at least `out.len() * cs` bytes.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn u8_512<const IP: bool>(
        codes: &[u8],
        cs: usize,
        a: &[f32],
        b: &[f32],
        out: &mut [f32],
    ) {
        let n = cs / 16 * 16;
        for (o, c) in out.iter_mut().zip(codes.chunks_exact(cs)) {
            // SAFETY: loads at `i` with `i + 16 <= n <= cs` stay inside the code and
            // inside `a` and `b` (at least `cs` floats, checked by the caller).
            let mut s = unsafe {
                let (mut acc0, mut acc1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
                let mut i = 0;
                while i + 32 <= n {
                    let c0 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(
                        c.as_ptr().add(i).cast(),
                    )));
                    let c1 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(
                        c.as_ptr().add(i + 16).cast(),
                    )));
                    let a0 = _mm512_loadu_ps(a.as_ptr().add(i));
                    let a1 = _mm512_loadu_ps(a.as_ptr().add(i + 16));
                    if IP {
                        acc0 = _mm512_fmadd_ps(c0, a0, acc0);
                        acc1 = _mm512_fmadd_ps(c1, a1, acc1);
                    } else {
                        let t0 = _mm512_fmadd_ps(c0, a0, _mm512_loadu_ps(b.as_ptr().add(i)));
                        let t1 = _mm512_fmadd_ps(c1, a1, _mm512_loadu_ps(b.as_ptr().add(i + 16)));
                        acc0 = _mm512_fmadd_ps(t0, t0, acc0);
                        acc1 = _mm512_fmadd_ps(t1, t1, acc1);
                    }
                    i += 32;
                }
                if i < n {
                    let c0 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(
                        c.as_ptr().add(i).cast(),
                    )));
                    let a0 = _mm512_loadu_ps(a.as_ptr().add(i));
                    if IP {
                        acc0 = _mm512_fmadd_ps(c0, a0, acc0);
                    } else {
                        let t0 = _mm512_fmadd_ps(c0, a0, _mm512_loadu_ps(b.as_ptr().add(i)));
                        acc0 = _mm512_fmadd_ps(t0, t0, acc0);
                    }
                }
                _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1))
            };
            for i in n..cs {
                let cv = f32::from(c[i]);
                if IP {
                    s += cv * a[i];
                } else {
                    let t = cv * a[i] + b[i];
                    s += t * t;
                }
            }
            *o = s;
        }
    }

    /// Byte codes, AVX2 (8 components per step).
    ///
    /// # Safety
    /// AVX2 and FMA must be available; lengths as [`u8_512`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn u8_256<const IP: bool>(
        codes: &[u8],
        cs: usize,
        a: &[f32],
        b: &[f32],
        out: &mut [f32],
    ) {
        let n = cs / 8 * 8;
        for (o, c) in out.iter_mut().zip(codes.chunks_exact(cs)) {
            // SAFETY: loads at `i` with `i + 8 <= n <= cs`, as in `u8_512`.
            let mut s = unsafe {
                let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
                let mut i = 0;
                while i + 16 <= n {
                    let c0 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(
                        c.as_ptr().add(i).cast(),
                    )));
                    let c1 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(
                        c.as_ptr().add(i + 8).cast(),
                    )));
                    let a0 = _mm256_loadu_ps(a.as_ptr().add(i));
                    let a1 = _mm256_loadu_ps(a.as_ptr().add(i + 8));
                    if IP {
                        acc0 = _mm256_fmadd_ps(c0, a0, acc0);
                        acc1 = _mm256_fmadd_ps(c1, a1, acc1);
                    } else {
                        let t0 = _mm256_fmadd_ps(c0, a0, _mm256_loadu_ps(b.as_ptr().add(i)));
                        let t1 = _mm256_fmadd_ps(c1, a1, _mm256_loadu_ps(b.as_ptr().add(i + 8)));
                        acc0 = _mm256_fmadd_ps(t0, t0, acc0);
                        acc1 = _mm256_fmadd_ps(t1, t1, acc1);
                    }
                    i += 16;
                }
                if i < n {
                    let c0 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(
                        c.as_ptr().add(i).cast(),
                    )));
                    let a0 = _mm256_loadu_ps(a.as_ptr().add(i));
                    if IP {
                        acc0 = _mm256_fmadd_ps(c0, a0, acc0);
                    } else {
                        let t0 = _mm256_fmadd_ps(c0, a0, _mm256_loadu_ps(b.as_ptr().add(i)));
                        acc0 = _mm256_fmadd_ps(t0, t0, acc0);
                    }
                }
                let v = _mm256_add_ps(acc0, acc1);
                let h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
                let h = _mm_hadd_ps(h, h);
                _mm_cvtss_f32(_mm_hadd_ps(h, h))
            };
            for i in n..cs {
                let cv = f32::from(c[i]);
                if IP {
                    s += cv * a[i];
                } else {
                    let t = cv * a[i] + b[i];
                    s += t * t;
                }
            }
            *o = s;
        }
    }
}

#[cfg(target_arch = "x86_64")]
unsafe fn u8_l2_512(codes: &[u8], cs: usize, a: &[f32], b: &[f32], out: &mut [f32]) {
    // SAFETY: selected only at the AVX-512 level; lengths checked by `Block::run`.
    unsafe { x86_u8::u8_512::<false>(codes, cs, a, b, out) }
}
#[cfg(target_arch = "x86_64")]
unsafe fn u8_ip_512(codes: &[u8], cs: usize, a: &[f32], b: &[f32], out: &mut [f32]) {
    // SAFETY: as `u8_l2_512`.
    unsafe { x86_u8::u8_512::<true>(codes, cs, a, b, out) }
}
#[cfg(target_arch = "x86_64")]
unsafe fn u8_l2_256(codes: &[u8], cs: usize, a: &[f32], b: &[f32], out: &mut [f32]) {
    // SAFETY: selected only at the AVX2 level or above; lengths checked by `Block::run`.
    unsafe { x86_u8::u8_256::<false>(codes, cs, a, b, out) }
}
#[cfg(target_arch = "x86_64")]
unsafe fn u8_ip_256(codes: &[u8], cs: usize, a: &[f32], b: &[f32], out: &mut [f32]) {
    // SAFETY: as `u8_l2_256`.
    unsafe { x86_u8::u8_256::<true>(codes, cs, a, b, out) }
}

/// The kernel level to use: the core kernels' level (which honours `VQ_SIMD`).
#[inline]
pub(crate) fn level() -> SimdLevel {
    Kernels::get().level()
}

macro_rules! select {
    ($name:ident, $level:expr) => {{
        match $level {
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx512 => avx512::$name as _,
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2 => avx2::$name as _,
            _ => plain::$name as _,
        }
    }};
}

/// A table kernel for `ip` or L2, safe to call: it was chosen for a level the CPU has.
#[derive(Clone, Copy)]
pub(crate) struct Table {
    f: TableFn,
    all16: TableFn,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Table")
    }
}

impl Table {
    pub(crate) fn new(ip: bool) -> Table {
        let lv = level();
        let (f, all16): (TableFn, TableFn) = if ip {
            (select!(ip_table, lv), select!(ip_tables16, lv))
        } else {
            (select!(l2_table, lv), select!(l2_tables16, lv))
        };
        Table { f, all16 }
    }

    /// `out[j]` = distance of `x` to centroid `j` of the transposed block `ct`.
    #[inline]
    pub(crate) fn run(&self, x: &[f32], ct: &[f32], out: &mut [f32]) {
        assert_eq!(ct.len(), x.len() * out.len());
        // SAFETY: the function was selected for a level the CPU supports (`level()` only
        // returns supported levels) and the lengths are checked above.
        unsafe { (self.f)(x, ct, out) }
    }

    /// [`Table::run`] for every sub-space of 16 centroids at once: `x` is `m × dsub`,
    /// `ct` the `m` transposed blocks, `out` `m × 16`; the same values, faster (the
    /// sub-spaces' sums proceed side by side).
    #[inline]
    pub(crate) fn run_all16(&self, x: &[f32], ct: &[f32], out: &mut [f32]) {
        assert!(out.len().is_multiple_of(L));
        assert_eq!(ct.len(), x.len() * L);
        assert!(out.is_empty() || x.len().is_multiple_of(out.len() / L));
        // SAFETY: as `run`; the lengths are checked above.
        unsafe { (self.all16)(x, ct, out) }
    }
}

/// The nearest-centroid kernel for 16 sub-vectors at a time.
#[derive(Clone, Copy)]
pub(crate) struct Nearest {
    f: NearestFn,
}

impl Nearest {
    pub(crate) fn new() -> Nearest {
        Nearest {
            f: select!(nearest16, level()),
        }
    }

    /// Nearest of the `c.len() / dsub` centroids for each of 16 sub-vectors given
    /// transposed in `xt` (`dsub × 16`); distances to `bd`, indices to `bi`.
    #[inline]
    pub(crate) fn run(&self, xt: &[f32], c: &[f32], dsub: usize, bd: &mut [f32], bi: &mut [u32]) {
        assert!(dsub > 0 && xt.len() >= dsub * L && bd.len() >= L && bi.len() >= L);
        assert!(c.len().is_multiple_of(dsub));
        // SAFETY: chosen for a supported level; the body indexes with bounds checks.
        unsafe { (self.f)(xt, c, dsub, bd, bi) }
    }
}

/// Lanes of [`Nearest`].
pub(crate) const NEAREST_LANES: usize = L;

/// Which block kernel a scalar-quantizer computer runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BlockKind {
    /// One byte per component.
    U8,
    /// Two components per byte.
    U4,
    /// Four components per three bytes.
    U6,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
}

/// A block kernel, safe to call: chosen for a level the CPU has.
#[derive(Clone, Copy)]
pub(crate) struct Block {
    f: BlockFn,
    kind: BlockKind,
}

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Block")
    }
}

#[cfg(target_arch = "x86_64")]
unsafe fn f16_l2_x86(codes: &[u8], cs: usize, _a: &[f32], q: &[f32], out: &mut [f32]) {
    // SAFETY: selected only when AVX2, FMA and F16C were detected.
    unsafe { x86::f16_block::<false>(codes, cs, q, out) }
}

#[cfg(target_arch = "x86_64")]
unsafe fn f16_ip_x86(codes: &[u8], cs: usize, _a: &[f32], q: &[f32], out: &mut [f32]) {
    // SAFETY: selected only when AVX2, FMA and F16C were detected.
    unsafe { x86::f16_block::<true>(codes, cs, q, out) }
}

impl Block {
    pub(crate) fn new(kind: BlockKind, ip: bool) -> Block {
        let lv = level();
        let f: BlockFn = match (kind, ip) {
            #[cfg(target_arch = "x86_64")]
            (BlockKind::U8, false) if lv == SimdLevel::Avx512 => u8_l2_512 as BlockFn,
            #[cfg(target_arch = "x86_64")]
            (BlockKind::U8, true) if lv == SimdLevel::Avx512 => u8_ip_512 as BlockFn,
            #[cfg(target_arch = "x86_64")]
            (BlockKind::U8, false) if lv == SimdLevel::Avx2 => u8_l2_256 as BlockFn,
            #[cfg(target_arch = "x86_64")]
            (BlockKind::U8, true) if lv == SimdLevel::Avx2 => u8_ip_256 as BlockFn,
            (BlockKind::U8, false) => select!(u8_l2, lv),
            (BlockKind::U8, true) => select!(u8_ip, lv),
            (BlockKind::U4, false) => select!(u4_l2, lv),
            (BlockKind::U4, true) => select!(u4_ip, lv),
            (BlockKind::U6, false) => select!(u6_l2, lv),
            (BlockKind::U6, true) => select!(u6_ip, lv),
            (BlockKind::Bf16, false) => select!(bf16_l2, lv),
            (BlockKind::Bf16, true) => select!(bf16_ip, lv),
            (BlockKind::F16, ip) => {
                #[cfg(target_arch = "x86_64")]
                {
                    if lv >= SimdLevel::Avx2 && is_x86_feature_detected!("f16c") {
                        if ip {
                            f16_ip_x86 as BlockFn
                        } else {
                            f16_l2_x86 as BlockFn
                        }
                    } else if ip {
                        safe_f16_ip as BlockFn
                    } else {
                        safe_f16_l2 as BlockFn
                    }
                }
                #[cfg(not(target_arch = "x86_64"))]
                {
                    if ip {
                        safe_f16_ip as BlockFn
                    } else {
                        safe_f16_l2 as BlockFn
                    }
                }
            }
        };
        Block { f, kind }
    }

    /// Runs the kernel over `out.len()` codes of `cs` bytes.
    ///
    /// # Panics
    /// If `codes` holds fewer than `out.len()` codes or the parameter slices are too
    /// short for the code size.
    #[inline]
    pub(crate) fn run(&self, codes: &[u8], cs: usize, a: &[f32], b: &[f32], out: &mut [f32]) {
        assert!(codes.len() >= out.len() * cs);
        let need = match self.kind {
            BlockKind::U8 => cs,
            BlockKind::U4 => 2 * cs,
            BlockKind::U6 => cs.div_ceil(3) * 4,
            BlockKind::F16 | BlockKind::Bf16 => cs / 2,
        };
        assert!(a.len() >= need || matches!(self.kind, BlockKind::F16 | BlockKind::Bf16));
        assert!(b.len() >= need || b.is_empty() && self.kind != BlockKind::F16);
        if self.kind == BlockKind::F16 {
            assert!(2 * b.len() >= cs, "fp16 kernels read cs / 2 query floats");
        }
        // SAFETY: chosen for a level the CPU supports. The bodies index slices with
        // bounds checks (or, for fp16, within lengths derived from `cs`, and `b` holds
        // `cs / 2` floats there, which the callers guarantee).
        unsafe { (self.f)(&codes[..out.len() * cs], cs, a, b, out) }
    }
}

unsafe fn safe_f16_l2(codes: &[u8], cs: usize, a: &[f32], q: &[f32], out: &mut [f32]) {
    f16_l2_plain(codes, cs, a, q, out)
}

unsafe fn safe_f16_ip(codes: &[u8], cs: usize, a: &[f32], q: &[f32], out: &mut [f32]) {
    f16_ip_plain(codes, cs, a, q, out)
}

// ------------------------------------------------------------ PQ 8-bit lookups

/// The 8-bit product-quantizer scan: `(table m × 256, m, codes, out)`.
type Pq8Fn = unsafe fn(&[f32], usize, &[u8], &mut [f32]);

/// Table lookups for 8-bit PQ codes, portable: eight indices per 64-bit load,
/// extracted with shifts, into two partial sums.
fn pq8_plain(table: &[f32], m: usize, codes: &[u8], out: &mut [f32]) {
    let (t, _) = table.as_chunks::<256>();
    let (t8, t_rest) = t.as_chunks::<8>();
    for (o, c) in out.iter_mut().zip(codes.chunks_exact(m)) {
        let (words, tail) = c.as_chunks::<8>();
        let (mut s0, mut s1) = (0f32, 0f32);
        for (w, tb) in words.iter().zip(t8) {
            let w = u64::from_le_bytes(*w);
            s0 += tb[0][(w & 255) as usize];
            s1 += tb[1][((w >> 8) & 255) as usize];
            s0 += tb[2][((w >> 16) & 255) as usize];
            s1 += tb[3][((w >> 24) & 255) as usize];
            s0 += tb[4][((w >> 32) & 255) as usize];
            s1 += tb[5][((w >> 40) & 255) as usize];
            s0 += tb[6][((w >> 48) & 255) as usize];
            s1 += tb[7][(w >> 56) as usize];
        }
        for (&b, tm) in tail.iter().zip(t_rest) {
            s0 += tm[b as usize];
        }
        *o = s0 + s1;
    }
}

unsafe fn pq8_plain_fn(table: &[f32], m: usize, codes: &[u8], out: &mut [f32]) {
    pq8_plain(table, m, codes, out)
}

#[cfg(target_arch = "x86_64")]
mod x86_pq {
    use std::arch::x86_64::{
        __m256i, _mm_loadl_epi64, _mm_loadu_si128, _mm256_add_epi32, _mm256_cvtepu8_epi32,
        _mm256_i32gather_ps, _mm256_setr_epi32, _mm512_add_epi32, _mm512_add_ps,
        _mm512_cvtepu8_epi32, _mm512_i32gather_ps, _mm512_reduce_add_ps, _mm512_setr_epi32,
        _mm512_setzero_ps,
    };

    #[inline(always)]
    fn lanes8() -> __m256i {
        // SAFETY: register-only; AVX is enabled in every caller.
        unsafe { _mm256_setr_epi32(0, 256, 512, 768, 1024, 1280, 1536, 1792) }
    }

    /// Eight sub-quantizers at `i..i + 8` of code `p` by one 8-lane gather, summed.
    ///
    /// # Safety
    /// AVX2; `p + i + 8` inside the code and `table` holding `(i + 8) · 256` floats.
    #[inline(always)]
    unsafe fn gather8(table: *const f32, p: *const u8, i: usize) -> f32 {
        // SAFETY: guaranteed by the caller; indices are bytes, so below 256 per lane.
        unsafe {
            let b = _mm_loadl_epi64(p.add(i).cast());
            let idx = _mm256_add_epi32(_mm256_cvtepu8_epi32(b), lanes8());
            super::x86::hsum256(_mm256_i32gather_ps::<4>(table.add(i * 256), idx))
        }
    }

    /// AVX-512: one 16-lane gather per 16 sub-quantizers, then 8-lane, then scalar.
    ///
    /// # Safety
    /// AVX-512F; `table.len() >= m · 256` and `codes.len() >= out.len() · m`.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn pq8_512(table: &[f32], m: usize, codes: &[u8], out: &mut [f32]) {
        let t = table.as_ptr();
        let g16 = m / 16;
        for (o, c) in out.iter_mut().zip(codes.chunks_exact(m)) {
            let p = c.as_ptr();
            // SAFETY: every load stays inside the `m`-byte code and every gathered
            // index `i · 256 + byte` below `m · 256` (the caller's guarantees).
            unsafe {
                let lanes = _mm512_setr_epi32(
                    0, 256, 512, 768, 1024, 1280, 1536, 1792, 2048, 2304, 2560, 2816, 3072, 3328,
                    3584, 3840,
                );
                let mut acc = _mm512_setzero_ps();
                for g in 0..g16 {
                    let b = _mm_loadu_si128(p.add(16 * g).cast());
                    let idx = _mm512_add_epi32(_mm512_cvtepu8_epi32(b), lanes);
                    acc = _mm512_add_ps(acc, _mm512_i32gather_ps::<4>(idx, t.add(g * 4096)));
                }
                let mut s = if g16 > 0 {
                    _mm512_reduce_add_ps(acc)
                } else {
                    0.0
                };
                let mut i = g16 * 16;
                if m - i >= 8 {
                    s += gather8(t, p, i);
                    i += 8;
                }
                while i < m {
                    s += *t.add(i * 256 + usize::from(*p.add(i)));
                    i += 1;
                }
                *o = s;
            }
        }
    }

    /// AVX2: one 8-lane gather per 8 sub-quantizers, then scalar.
    ///
    /// # Safety
    /// AVX2 and FMA; `table.len() >= m · 256` and `codes.len() >= out.len() · m`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn pq8_256(table: &[f32], m: usize, codes: &[u8], out: &mut [f32]) {
        let t = table.as_ptr();
        let g8 = m / 8;
        for (o, c) in out.iter_mut().zip(codes.chunks_exact(m)) {
            let p = c.as_ptr();
            // SAFETY: as in `pq8_512`.
            unsafe {
                let (mut s0, mut s1) = (0f32, 0f32);
                let mut g = 0;
                while g + 2 <= g8 {
                    s0 += gather8(t, p, 8 * g);
                    s1 += gather8(t, p, 8 * g + 8);
                    g += 2;
                }
                if g < g8 {
                    s0 += gather8(t, p, 8 * g);
                }
                for i in g8 * 8..m {
                    s1 += *t.add(i * 256 + usize::from(*p.add(i)));
                }
                *o = s0 + s1;
            }
        }
    }
}

/// The 8-bit PQ scan kernel, safe to call: chosen for a level the CPU has.
#[derive(Clone, Copy)]
pub(crate) struct Pq8 {
    f: Pq8Fn,
}

impl std::fmt::Debug for Pq8 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pq8")
    }
}

impl Pq8 {
    pub(crate) fn new() -> Pq8 {
        let f: Pq8Fn = match level() {
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx512 => x86_pq::pq8_512,
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2 => x86_pq::pq8_256,
            _ => pq8_plain_fn,
        };
        Pq8 { f }
    }

    /// Sums of one table entry per sub-quantizer for `out.len()` codes of `m` bytes.
    ///
    /// # Panics
    /// If `table` has fewer than `m · 256` entries or `codes` fewer than `out.len()`
    /// codes.
    #[inline]
    pub(crate) fn run(&self, table: &[f32], m: usize, codes: &[u8], out: &mut [f32]) {
        assert!(table.len() >= m * 256 && codes.len() >= out.len() * m);
        // SAFETY: chosen for a level the CPU supports; lengths checked above.
        unsafe { (self.f)(table, m, codes, out) }
    }
}

// ------------------------------------------------------------ SQ 8-bit encoding

/// The 8-bit scalar-quantizer encoder: `(x, vmin, vdiff, code)`.
type Sq8EncodeFn = unsafe fn(&[f32], &[f32], &[f32], &mut [u8]);

/// `code[i] = floor(255 · clamp((x[i] − vmin[i]) / vdiff[i], 0, 1))`, 0 where the width
/// is not positive (Faiss's 8-bit encoding).
fn sq8_encode_plain(x: &[f32], vmin: &[f32], vdiff: &[f32], code: &mut [u8]) {
    for (((c, &v), &lo), &w) in code.iter_mut().zip(x).zip(vmin).zip(vdiff) {
        *c = if w > 0.0 {
            (((v - lo) / w).clamp(0.0, 1.0) * 255.0) as u8
        } else {
            0
        };
    }
}

unsafe fn sq8_encode_plain_fn(x: &[f32], vmin: &[f32], vdiff: &[f32], code: &mut [u8]) {
    sq8_encode_plain(x, vmin, vdiff, code)
}

#[cfg(target_arch = "x86_64")]
mod x86_sq {
    use std::arch::x86_64::{
        _CMP_GT_OQ, _mm_packus_epi16, _mm_packus_epi32, _mm_storel_epi64, _mm_storeu_si128,
        _mm256_and_ps, _mm256_castsi256_si128, _mm256_cmp_ps, _mm256_cvttps_epi32, _mm256_div_ps,
        _mm256_extracti128_si256, _mm256_loadu_ps, _mm256_max_ps, _mm256_min_ps, _mm256_mul_ps,
        _mm256_set1_ps, _mm256_setzero_ps, _mm256_sub_ps, _mm512_cmp_ps_mask, _mm512_cvtepi32_epi8,
        _mm512_cvttps_epi32, _mm512_div_ps, _mm512_loadu_ps, _mm512_maskz_mul_ps, _mm512_max_ps,
        _mm512_min_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_sub_ps,
    };

    /// AVX-512 version of [`super::sq8_encode_plain`].
    ///
    /// # Safety
    /// AVX-512F; `x`, `vmin` and `vdiff` hold at least `code.len()` floats.
    #[target_feature(enable = "avx512f,avx2")]
    pub(super) unsafe fn sq8_encode_512(x: &[f32], vmin: &[f32], vdiff: &[f32], code: &mut [u8]) {
        let d = code.len();
        let n = d / 16 * 16;
        let mut i = 0;
        // SAFETY: loads of 16 floats and the 16-byte store at `i` with `i + 16 <= n <= d`.
        unsafe {
            let (zero, one, top) = (
                _mm512_setzero_ps(),
                _mm512_set1_ps(1.0),
                _mm512_set1_ps(255.0),
            );
            while i < n {
                let v = _mm512_loadu_ps(x.as_ptr().add(i));
                let lo = _mm512_loadu_ps(vmin.as_ptr().add(i));
                let w = _mm512_loadu_ps(vdiff.as_ptr().add(i));
                // `max` returns its second operand for NaN (0 / 0 where w = 0).
                let t = _mm512_div_ps(_mm512_sub_ps(v, lo), w);
                let t = _mm512_min_ps(_mm512_max_ps(t, zero), one);
                let keep = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(w, zero);
                let q = _mm512_cvttps_epi32(_mm512_maskz_mul_ps(keep, t, top));
                _mm_storeu_si128(code.as_mut_ptr().add(i).cast(), _mm512_cvtepi32_epi8(q));
                i += 16;
            }
        }
        super::sq8_encode_plain(&x[n..d], &vmin[n..d], &vdiff[n..d], &mut code[n..]);
    }

    /// AVX2 version of [`super::sq8_encode_plain`].
    ///
    /// # Safety
    /// AVX2; `x`, `vmin` and `vdiff` hold at least `code.len()` floats.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn sq8_encode_256(x: &[f32], vmin: &[f32], vdiff: &[f32], code: &mut [u8]) {
        let d = code.len();
        let n = d / 8 * 8;
        let mut i = 0;
        // SAFETY: loads of 8 floats and the 8-byte store at `i` with `i + 8 <= n <= d`.
        unsafe {
            let (zero, one, top) = (
                _mm256_setzero_ps(),
                _mm256_set1_ps(1.0),
                _mm256_set1_ps(255.0),
            );
            while i < n {
                let v = _mm256_loadu_ps(x.as_ptr().add(i));
                let lo = _mm256_loadu_ps(vmin.as_ptr().add(i));
                let w = _mm256_loadu_ps(vdiff.as_ptr().add(i));
                let t = _mm256_div_ps(_mm256_sub_ps(v, lo), w);
                let t = _mm256_min_ps(_mm256_max_ps(t, zero), one);
                let keep = _mm256_cmp_ps::<_CMP_GT_OQ>(w, zero);
                // Masked-off lanes become +0.0 (all bits clear) and convert to 0.
                let q = _mm256_cvttps_epi32(_mm256_and_ps(keep, _mm256_mul_ps(t, top)));
                let w16 =
                    _mm_packus_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256::<1>(q));
                _mm_storel_epi64(code.as_mut_ptr().add(i).cast(), _mm_packus_epi16(w16, w16));
                i += 8;
            }
        }
        super::sq8_encode_plain(&x[n..d], &vmin[n..d], &vdiff[n..d], &mut code[n..]);
    }
}

/// The 8-bit SQ encoder, safe to call: chosen for a level the CPU has.
#[derive(Clone, Copy)]
pub(crate) struct Sq8Encode {
    f: Sq8EncodeFn,
}

impl Sq8Encode {
    pub(crate) fn new() -> Sq8Encode {
        let f: Sq8EncodeFn = match level() {
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx512 => x86_sq::sq8_encode_512,
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2 => x86_sq::sq8_encode_256,
            _ => sq8_encode_plain_fn,
        };
        Sq8Encode { f }
    }

    /// Encodes `code.len()` components.
    ///
    /// # Panics
    /// If `x`, `vmin` or `vdiff` is shorter than `code`.
    #[inline]
    pub(crate) fn run(&self, x: &[f32], vmin: &[f32], vdiff: &[f32], code: &mut [u8]) {
        let d = code.len();
        assert!(x.len() >= d && vmin.len() >= d && vdiff.len() >= d);
        // SAFETY: chosen for a level the CPU supports; lengths checked above.
        unsafe { (self.f)(x, vmin, vdiff, code) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn pq8_kernel_matches_portable_sums() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for m in [1usize, 4, 7, 8, 10, 16, 24, 32, 40] {
            let table: Vec<f32> = (0..m * 256).map(|_| rng.random_range(0.0..10.0)).collect();
            let n = 37;
            let codes: Vec<u8> = (0..n * m).map(|_| rng.random()).collect();
            let (mut a, mut b) = (vec![0f32; n], vec![0f32; n]);
            Pq8::new().run(&table, m, &codes, &mut a);
            pq8_plain(&table, m, &codes, &mut b);
            for (i, (x, y)) in a.iter().zip(&b).enumerate() {
                let exact: f32 = (0..m)
                    .map(|j| table[j * 256 + codes[i * m + j] as usize])
                    .sum();
                assert!((x - y).abs() <= 1e-4 * exact.max(1.0), "m={m}: {x} vs {y}");
            }
        }
    }

    #[test]
    fn all_tables_at_once_equal_one_table_at_a_time() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for ip in [false, true] {
            let t = Table::new(ip);
            for (m, dsub) in [
                (1usize, 1usize),
                (3, 5),
                (4, 14),
                (5, 2),
                (8, 8),
                (9, 3),
                (56, 14),
            ] {
                let x: Vec<f32> = (0..m * dsub).map(|_| rng.random_range(-3.0..3.0)).collect();
                let ct: Vec<f32> = (0..m * dsub * L)
                    .map(|_| rng.random_range(-3.0..3.0))
                    .collect();
                let mut all = vec![0f32; m * L];
                t.run_all16(&x, &ct, &mut all);
                for mi in 0..m {
                    let mut one = [0f32; L];
                    t.run(
                        &x[mi * dsub..(mi + 1) * dsub],
                        &ct[mi * dsub * L..(mi + 1) * dsub * L],
                        &mut one,
                    );
                    let got = &all[mi * L..(mi + 1) * L];
                    assert_eq!(
                        got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        one.map(f32::to_bits).to_vec(),
                        "ip={ip} m={m} dsub={dsub} sub-space {mi}"
                    );
                }
            }
        }
    }

    #[test]
    fn sq8_encoder_matches_portable_codes() {
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        for d in [1usize, 7, 8, 15, 16, 33, 128] {
            let x: Vec<f32> = (0..d).map(|_| rng.random_range(-2.0..3.0)).collect();
            let vmin: Vec<f32> = (0..d).map(|_| rng.random_range(-1.0..0.5)).collect();
            // Some zero widths, and values outside the range on both sides.
            let vdiff: Vec<f32> = (0..d)
                .map(|i| {
                    if i % 5 == 3 {
                        0.0
                    } else {
                        rng.random_range(0.1..2.0)
                    }
                })
                .collect();
            let (mut a, mut b) = (vec![0u8; d], vec![1u8; d]);
            Sq8Encode::new().run(&x, &vmin, &vdiff, &mut a);
            sq8_encode_plain(&x, &vmin, &vdiff, &mut b);
            assert_eq!(a, b, "d={d}");
            assert!(b.iter().zip(&vdiff).all(|(&c, &w)| w > 0.0 || c == 0));
        }
    }
}
