//! Portable SIMD through `wide`: eight lanes, four accumulators, scalar remainder.
//!
//! `wide` chooses its instructions when the crate is compiled (`target-cpu`), so on a
//! default x86-64 target this is SSE code; it is the fallback for CPUs without AVX2 and
//! for non-x86 targets.

use wide::f32x8;

#[inline(always)]
fn load8(c: &[f32]) -> f32x8 {
    let mut a = [0.0f32; 8];
    a.copy_from_slice(c);
    f32x8::from(a)
}

/// Squared L2 distance.
pub fn l2_sqr(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [f32x8::ZERO; 4];
    let mut ca = a.chunks_exact(32);
    let mut cb = b.chunks_exact(32);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for j in 0..4 {
            let d = load8(&x[8 * j..8 * j + 8]) - load8(&y[8 * j..8 * j + 8]);
            acc[j] += d * d;
        }
    }
    let (ra, rb) = (ca.remainder(), cb.remainder());
    let mut c8a = ra.chunks_exact(8);
    let mut c8b = rb.chunks_exact(8);
    for (x, y) in (&mut c8a).zip(&mut c8b) {
        let d = load8(x) - load8(y);
        acc[0] += d * d;
    }
    let mut s = ((acc[0] + acc[1]) + (acc[2] + acc[3])).reduce_add();
    for (x, y) in c8a.remainder().iter().zip(c8b.remainder()) {
        let d = x - y;
        s += d * d;
    }
    s
}

/// Inner product.
pub fn inner_product(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [f32x8::ZERO; 4];
    let mut ca = a.chunks_exact(32);
    let mut cb = b.chunks_exact(32);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for j in 0..4 {
            acc[j] += load8(&x[8 * j..8 * j + 8]) * load8(&y[8 * j..8 * j + 8]);
        }
    }
    let (ra, rb) = (ca.remainder(), cb.remainder());
    let mut c8a = ra.chunks_exact(8);
    let mut c8b = rb.chunks_exact(8);
    for (x, y) in (&mut c8a).zip(&mut c8b) {
        acc[0] += load8(x) * load8(y);
    }
    let mut s = ((acc[0] + acc[1]) + (acc[2] + acc[3])).reduce_add();
    for (x, y) in c8a.remainder().iter().zip(c8b.remainder()) {
        s += x * y;
    }
    s
}

/// Squared L2 norm.
pub fn norm_sqr(a: &[f32]) -> f32 {
    inner_product(a, a)
}

/// Squared L2 distance between `x` and each row of `ys`.
pub fn l2_sqr_ny(x: &[f32], ys: &[f32], out: &mut [f32]) {
    for (o, y) in out.iter_mut().zip(ys.chunks_exact(x.len())) {
        *o = l2_sqr(x, y);
    }
}

/// Inner product between `x` and each row of `ys`.
pub fn inner_product_ny(x: &[f32], ys: &[f32], out: &mut [f32]) {
    for (o, y) in out.iter_mut().zip(ys.chunks_exact(x.len())) {
        *o = inner_product(x, y);
    }
}

pub use super::scalar::le_hits;

/// Squared L2 from `x` to four rows: [`l2_sqr`] four times.
pub fn l2_sqr_4(x: &[f32], ys: [&[f32]; 4]) -> [f32; 4] {
    ys.map(|y| l2_sqr(x, y))
}

/// Inner products of `x` with four rows: [`inner_product`] four times.
pub fn inner_product_4(x: &[f32], ys: [&[f32]; 4]) -> [f32; 4] {
    ys.map(|y| inner_product(x, y))
}
