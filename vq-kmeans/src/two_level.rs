//! Two-level (hierarchical) clustering for very large `k`.

use std::time::Instant;

use vq_core::{Error, Result, VectorsRef};

use crate::params::KMeansParams;
use crate::train::{IterationStats, KMeans, imbalance_factor};

/// Splits `k` centroids over groups proportionally to their sizes (largest remainders),
/// at most one centroid per point and at least one per non-empty group.
fn allocate(k: usize, sizes: &[usize]) -> Vec<usize> {
    let n: usize = sizes.iter().sum();
    let mut alloc: Vec<usize> = sizes
        .iter()
        .map(|&s| if s == 0 { 0 } else { ((k * s) / n).clamp(1, s) })
        .collect();
    let mut total: usize = alloc.iter().sum();
    // Hand out the rest by largest fractional part, then take back from the largest.
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by(|&a, &b| {
        let fa = (k * sizes[a]) % n.max(1);
        let fb = (k * sizes[b]) % n.max(1);
        fb.cmp(&fa).then(a.cmp(&b))
    });
    while total < k {
        let before = total;
        for &g in &order {
            if total == k {
                break;
            }
            if alloc[g] < sizes[g] {
                alloc[g] += 1;
                total += 1;
            }
        }
        if total == before {
            break;
        }
    }
    while total > k {
        let g = (0..sizes.len())
            .filter(|&g| alloc[g] > 1)
            .max_by_key(|&g| (alloc[g], std::cmp::Reverse(g)))
            .unwrap_or(0);
        alloc[g] -= 1;
        total -= 1;
    }
    alloc
}

impl KMeans {
    /// Two-level clustering, as Faiss's contrib does for huge IVF quantizers: cluster
    /// into `⌈√k⌉` groups, then each group into a number of centroids proportional to
    /// its size (`k` in total). Each level runs `niter` iterations with the same
    /// parameters. Much faster than flat k-means for large `k` (each point is compared
    /// with `√k + k/√k` centroids instead of `k`), at the price of a somewhat higher
    /// objective: points near group borders cannot move to a centroid of another group.
    ///
    /// The recorded statistics hold one entry: the objective of the final centroids on
    /// the training points.
    ///
    /// # Errors
    /// As [`KMeans::train`].
    pub fn train_two_level(&mut self, x: VectorsRef<'_>) -> Result<()> {
        let p = self.params().clone();
        let d = self.dim();
        let k = p.k;
        x.check_dim(d)?;
        x.check_finite()?;
        let n = x.len();
        if n < k {
            return Err(Error::InsufficientTrainingData { needed: k, got: n });
        }
        let t0 = Instant::now();
        let k1 = ((k as f64).sqrt().ceil() as usize).clamp(1, k);
        let mut top = KMeans::new(d, KMeansParams { k: k1, ..p.clone() })?;
        top.train(x)?;
        let (labels, _) = top.assign(x)?;
        let mut groups: Vec<Vec<usize>> = vec![Vec::new(); k1];
        for (i, &l) in labels.iter().enumerate() {
            groups[l as usize].push(i);
        }
        let sizes: Vec<usize> = groups.iter().map(Vec::len).collect();
        let alloc = allocate(k, &sizes);
        let mut centroids = Vec::with_capacity(k * d);
        let mut n_train = 0;
        for (g, idx) in groups.iter().enumerate() {
            if alloc[g] == 0 {
                continue;
            }
            let mut pts = Vec::with_capacity(idx.len() * d);
            for &i in idx {
                pts.extend_from_slice(x.row(i));
            }
            let mut sub = KMeans::new(
                d,
                KMeansParams {
                    k: alloc[g],
                    seed: p.seed.wrapping_add(g as u64 + 1),
                    min_points_per_centroid: 0,
                    ..p.clone()
                },
            )?;
            sub.train(VectorsRef::new(&pts, d)?)?;
            n_train += sub.n_train();
            centroids.extend_from_slice(sub.centroids().as_slice());
        }
        self.set_result(centroids, Vec::new(), n_train);
        let (labels, dist) = self.assign(x)?;
        let stats = vec![IterationStats {
            objective: dist.iter().map(|&v| v as f64).sum(),
            time_s: t0.elapsed().as_secs_f64(),
            time_search_s: 0.0,
            imbalance_factor: imbalance_factor(&labels, k),
            nsplit: 0,
        }];
        self.set_stats(stats);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::allocate;

    #[test]
    fn allocation_sums_to_k_and_respects_sizes() {
        for (k, sizes) in [
            (10, vec![5, 5, 5]),
            (100, vec![1, 1000, 3, 0, 50]),
            (7, vec![2, 2, 2, 2]),
            (4096, vec![4000; 64]),
        ] {
            let a = allocate(k, &sizes);
            assert_eq!(
                a.iter().sum::<usize>(),
                k.min(sizes.iter().sum()),
                "{sizes:?}"
            );
            for (x, s) in a.iter().zip(&sizes) {
                assert!(x <= s);
                assert_eq!(*x == 0, *s == 0);
            }
        }
    }
}
