//! Plain loops: the reference every other kernel is tested against.

/// Squared L2 distance, summed left to right.
pub fn l2_sqr(a: &[f32], b: &[f32]) -> f32 {
    let mut s = 0.0f32;
    for (x, y) in a.iter().zip(b) {
        let d = x - y;
        s += d * d;
    }
    s
}

/// Inner product, summed left to right.
pub fn inner_product(a: &[f32], b: &[f32]) -> f32 {
    let mut s = 0.0f32;
    for (x, y) in a.iter().zip(b) {
        s += x * y;
    }
    s
}

/// Squared L2 norm, summed left to right.
pub fn norm_sqr(a: &[f32]) -> f32 {
    let mut s = 0.0f32;
    for x in a {
        s += x * x;
    }
    s
}

/// Squared L2 distance between `x` and each row of `ys` (rows of `x.len()` values).
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
