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

/// Appends to `hits` every `i` with `(offsets[i] + bias) + values[i] <= thresholds[i]`
/// (`offsets` empty means zeros). The fused top-k pre-check.
#[inline(always)]
pub fn le_hits(
    values: &[f32],
    offsets: &[f32],
    bias: f32,
    thresholds: &[f32],
    hits: &mut Vec<u32>,
) {
    const LANES: usize = 16;
    let n = values.len();
    let mut i0 = 0;
    while i0 < n {
        let i1 = (i0 + LANES).min(n);
        let mut any = false;
        if offsets.is_empty() {
            for i in i0..i1 {
                any |= bias + values[i] <= thresholds[i];
            }
        } else {
            for i in i0..i1 {
                any |= (offsets[i] + bias) + values[i] <= thresholds[i];
            }
        }
        if any {
            for i in i0..i1 {
                let off = if offsets.is_empty() { 0.0 } else { offsets[i] };
                if (off + bias) + values[i] <= thresholds[i] {
                    hits.push(i as u32);
                }
            }
        }
        i0 = i1;
    }
}

/// Squared L2 from `x` to four rows: [`l2_sqr`] four times.
pub fn l2_sqr_4(x: &[f32], ys: [&[f32]; 4]) -> [f32; 4] {
    ys.map(|y| l2_sqr(x, y))
}

/// Inner products of `x` with four rows: [`inner_product`] four times.
pub fn inner_product_4(x: &[f32], ys: [&[f32]; 4]) -> [f32; 4] {
    ys.map(|y| inner_product(x, y))
}

/// Byte rows against per-component `a` and `b`: `Σᵢ (cᵢ·aᵢ + bᵢ)²` when `L2` (the squared
/// L2 distance from a query to scalar-quantized vectors, with `a` the step and
/// `b = min − query`), else `Σᵢ cᵢ·aᵢ`; summed left to right.
pub fn u8_affine_4<const L2: bool>(a: &[f32], b: &[f32], codes: [&[u8]; 4]) -> [f32; 4] {
    codes.map(|c| {
        let mut s = 0.0f32;
        for (i, &ci) in c.iter().enumerate().take(a.len()) {
            if L2 {
                let t = f32::from(ci) * a[i] + b[i];
                s += t * t;
            } else {
                s += f32::from(ci) * a[i];
            }
        }
        s
    })
}
