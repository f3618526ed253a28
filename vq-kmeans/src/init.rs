//! Initial centroids: random sample, k-means++, AFK-MC².

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use vq_core::distance::Kernels;
use vq_core::knn::{Database, knn};
use vq_core::{Metric, Result, VectorsRef};

use crate::params::Init;

/// Draws `m` distinct indices out of `n` (partial Fisher–Yates).
pub(crate) fn sample_indices(n: usize, m: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let m = m.min(n);
    if m * 4 < n {
        // Sparse: rejection with a set keeps memory at O(m).
        let mut seen = std::collections::HashSet::with_capacity(m);
        let mut out = Vec::with_capacity(m);
        while out.len() < m {
            let i = rng.random_range(0..n);
            if seen.insert(i) {
                out.push(i);
            }
        }
        return out;
    }
    let mut perm: Vec<usize> = (0..n).collect();
    for i in 0..m {
        let j = rng.random_range(i..n);
        perm.swap(i, j);
    }
    perm.truncate(m);
    perm
}

/// Index `i` drawn with probability `w[i] / Σ w` from prefix sums `cum` (`cum[i]` = Σ
/// of `w[..=i]`).
fn draw(cum: &[f64], rng: &mut ChaCha8Rng) -> usize {
    let total = cum.last().copied().unwrap_or(0.0);
    if total <= 0.0 {
        return rng.random_range(0..cum.len().max(1));
    }
    let r = rng.random::<f64>() * total;
    cum.partition_point(|&c| c <= r).min(cum.len() - 1)
}

fn prefix_sums(v: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut acc = 0.0;
    v.map(|x| {
        acc += x;
        acc
    })
    .collect()
}

/// Appends `k_new` initial centroids to `centroids` (which may already hold user-given
/// ones, counted as chosen by k-means++ and AFK-MC²).
pub(crate) fn init_centroids(
    x: VectorsRef<'_>,
    weights: Option<&[f32]>,
    centroids: &mut Vec<f32>,
    k_new: usize,
    init: Init,
    rng: &mut ChaCha8Rng,
) -> Result<()> {
    let d = x.dim();
    let n = x.len();
    let w = |i: usize| weights.map_or(1.0, |w| w[i] as f64);
    match init {
        Init::Random => {
            for i in sample_indices(n, k_new, rng) {
                centroids.extend_from_slice(x.row(i));
            }
        }
        Init::KMeansPlusPlus => {
            let kern = Kernels::get();
            let mut mind = vec![f32::INFINITY; n];
            let update = |mind: &mut [f32], c: &[f32]| {
                mind.par_chunks_mut(4096)
                    .zip(x.as_slice().par_chunks(4096 * d))
                    .for_each(|(m, rows)| {
                        let mut buf = vec![0.0f32; m.len()];
                        kern.l2_sqr_ny(c, rows, &mut buf);
                        for (a, b) in m.iter_mut().zip(buf) {
                            *a = a.min(b);
                        }
                    });
            };
            for c in centroids.chunks_exact(d) {
                update(&mut mind, c);
            }
            for t in 0..k_new {
                let i = if centroids.is_empty() && t == 0 {
                    draw(&prefix_sums((0..n).map(w)), rng)
                } else {
                    draw(&prefix_sums((0..n).map(|i| w(i) * mind[i] as f64)), rng)
                };
                let c = x.row(i).to_vec();
                update(&mut mind, &c);
                centroids.extend_from_slice(&c);
            }
        }
        Init::AfkMc2 { chain_length } => {
            let kern = Kernels::get();
            if centroids.is_empty() && k_new > 0 {
                let i = draw(&prefix_sums((0..n).map(w)), rng);
                centroids.extend_from_slice(x.row(i));
                return init_centroids(
                    x,
                    weights,
                    centroids,
                    k_new - 1,
                    Init::AfkMc2 { chain_length },
                    rng,
                );
            }
            if k_new == 0 {
                return Ok(());
            }
            // Proposal: half "distance to the seeding centres", half uniform (weighted).
            let d0: Vec<f64> = x
                .as_slice()
                .par_chunks(d)
                .map(|r| {
                    centroids
                        .chunks_exact(d)
                        .map(|c| kern.l2_sqr(r, c))
                        .fold(f32::INFINITY, f32::min) as f64
                })
                .collect();
            let wsum: f64 = (0..n).map(w).sum();
            let dsum: f64 = (0..n).map(|i| w(i) * d0[i]).sum();
            let q: Vec<f64> = (0..n)
                .map(|i| {
                    let a = if dsum > 0.0 {
                        0.5 * w(i) * d0[i] / dsum
                    } else {
                        0.0
                    };
                    a + 0.5 * w(i) / wsum
                })
                .collect();
            let cum = prefix_sums(q.iter().copied());
            for _ in 0..k_new {
                // Draw the whole chain first, then get its distances to the current
                // centres in one batched exact search.
                let cand: Vec<usize> = (0..chain_length).map(|_| draw(&cum, rng)).collect();
                let mut rows = Vec::with_capacity(chain_length * d);
                for &i in &cand {
                    rows.extend_from_slice(x.row(i));
                }
                let db = Database::new(VectorsRef::new(centroids, d)?, None)?;
                let res = knn(&db, VectorsRef::new(&rows, d)?, 1, Metric::L2, None)?;
                let dist = res.distances();
                let mut cur = 0usize;
                for j in 1..chain_length {
                    let num = dist[j] as f64 * q[cand[cur]];
                    let den = dist[cur] as f64 * q[cand[j]];
                    if den <= 0.0 || rng.random::<f64>() * den < num {
                        cur = j;
                    }
                }
                centroids.extend_from_slice(x.row(cand[cur]));
            }
        }
    }
    Ok(())
}
