//! Lloyd iterations with Faiss's `Clustering` semantics.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use vq_core::{
    Error, Index, IndexFlat, L2Normalize, Label, Metric, Result, SearchParams, VectorsRef,
};

use crate::init::{init_centroids, sample_indices};
use crate::params::KMeansParams;

/// Relative perturbation applied when an empty cluster takes half of a large one.
const SPLIT_EPS: f32 = 1.0 / 1024.0;

/// What one Lloyd iteration measured (Faiss's `ClusteringIterationStats`).
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct IterationStats {
    /// Objective of this iteration's assignment: Σ wᵢ·distᵢ (squared L2), or Σ wᵢ·simᵢ
    /// for spherical k-means.
    pub objective: f64,
    /// Seconds since training started.
    pub time_s: f64,
    /// Seconds spent in assignment (searching the centroids) so far.
    pub time_search_s: f64,
    /// `k · Σ nᵢ² / (Σ nᵢ)²` over cluster sizes: 1 is perfectly balanced.
    pub imbalance_factor: f64,
    /// Empty clusters repaired by splitting in this iteration.
    pub nsplit: usize,
}

/// Optional inputs of [`KMeans::train_with`].
#[derive(Default)]
pub struct TrainOptions<'a> {
    /// One non-negative weight per training point (weighted k-means).
    pub weights: Option<&'a [f32]>,
    /// Initial centroids: all `k`, or the first `m < k` (the rest are initialised).
    pub initial_centroids: Option<VectorsRef<'a>>,
    /// The index that assigns points to centroids (default: an exact `IndexFlat`, inner
    /// product for spherical k-means). It is reset and filled with the centroids at each
    /// iteration, and holds the final centroids afterwards — a graph or GPU index plugs
    /// in here. Within one training call it is searched with the same points at every
    /// iteration — the caller's, or one subsample of them drawn before the first — held
    /// in the same memory and unchanged until the call returns, so an assigner may keep
    /// a copy of them (a GPU assigner keeps them on the device).
    pub assigner: Option<&'a mut dyn Index>,
    /// Checked at every iteration: when set, training stops with [`Error::Cancelled`].
    pub cancel: Option<&'a AtomicBool>,
}

/// k-means clustering (Faiss's `Clustering`).
///
/// ```
/// use vq_core::synthetic::SyntheticSpec;
/// use vq_kmeans::{KMeans, KMeansParams};
/// let data = SyntheticSpec::new(5000, 16, 0).with_seed(1).generate()?;
/// let mut km = KMeans::new(16, KMeansParams::new(20).with_niter(10))?;
/// km.train(data.base.as_ref())?;
/// assert_eq!(km.centroids().len(), 20);
/// let (labels, dist) = km.assign(data.base.as_ref())?;
/// assert_eq!(labels.len(), 5000);
/// assert!(dist.iter().all(|d| *d >= 0.0));
/// # Ok::<(), vq_core::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct KMeans {
    d: usize,
    params: KMeansParams,
    centroids: Vec<f32>,
    stats: Vec<IterationStats>,
    n_train: usize,
    warnings: Vec<String>,
}

fn metric_of(params: &KMeansParams) -> Metric {
    if params.spherical {
        Metric::InnerProduct
    } else {
        Metric::L2
    }
}

impl KMeans {
    /// An untrained clustering of `d`-dimensional vectors.
    ///
    /// # Errors
    /// `d == 0` or invalid parameters.
    pub fn new(d: usize, params: KMeansParams) -> Result<KMeans> {
        if d == 0 {
            return Err(Error::invalid_param("d", "must be at least 1"));
        }
        params.validate()?;
        Ok(KMeans {
            d,
            params,
            centroids: Vec::new(),
            stats: Vec::new(),
            n_train: 0,
            warnings: Vec::new(),
        })
    }

    /// The parameters.
    pub fn params(&self) -> &KMeansParams {
        &self.params
    }

    /// Dimension.
    pub fn dim(&self) -> usize {
        self.d
    }

    /// The centroids (`k × d`; empty before training).
    ///
    /// # Panics
    /// Never: the centroids are always whole rows of `d >= 1`.
    #[allow(clippy::expect_used)] // an invariant, documented under # Panics
    pub fn centroids(&self) -> VectorsRef<'_> {
        VectorsRef::new(&self.centroids, self.d).expect("invariant: whole centroids")
    }

    /// Statistics of each iteration of the kept run.
    pub fn iteration_stats(&self) -> &[IterationStats] {
        &self.stats
    }

    /// The final objective (that of the last iteration of the kept run).
    pub fn objective(&self) -> Option<f64> {
        self.stats.last().map(|s| s.objective)
    }

    /// Training points actually used (after subsampling).
    pub fn n_train(&self) -> usize {
        self.n_train
    }

    /// Warnings from the last training (too few points per centroid).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Trains on `x` with the default exact assignment.
    ///
    /// # Errors
    /// Dimension mismatch, NaN/Inf, fewer points than centroids.
    pub fn train(&mut self, x: VectorsRef<'_>) -> Result<()> {
        self.train_with(x, TrainOptions::default())
    }

    /// The nearest centroid of each vector and the distance to it (similarity for
    /// spherical k-means).
    ///
    /// # Errors
    /// Not trained, dimension mismatch, NaN/Inf.
    pub fn assign(&self, x: VectorsRef<'_>) -> Result<(Vec<Label>, Vec<f32>)> {
        if self.centroids.is_empty() {
            return Err(Error::NotTrained {
                what: "KMeans".into(),
            });
        }
        let mut flat = IndexFlat::new(self.d, metric_of(&self.params))?;
        flat.add(self.centroids())?;
        let res = flat.search(x, 1, &SearchParams::default())?;
        let (d, l) = res.into_parts();
        Ok((l, d))
    }

    /// Replaces the recorded statistics (used by two-level clustering).
    pub(crate) fn set_stats(&mut self, stats: Vec<IterationStats>) {
        self.stats = stats;
    }

    /// Installs centroids computed elsewhere (used by two-level clustering).
    pub(crate) fn set_result(
        &mut self,
        centroids: Vec<f32>,
        stats: Vec<IterationStats>,
        n_train: usize,
    ) {
        self.centroids = centroids;
        self.stats = stats;
        self.n_train = n_train;
    }

    /// Trains with weights, initial centroids, a custom assignment index or a cancel
    /// flag.
    ///
    /// # Errors
    /// Dimension mismatch, NaN/Inf, fewer points than centroids, weights of the wrong
    /// length or negative or not finite, initial centroids of the wrong dimension or
    /// more than `k`, [`Error::Cancelled`].
    pub fn train_with(&mut self, x: VectorsRef<'_>, opts: TrainOptions<'_>) -> Result<()> {
        let TrainOptions {
            weights,
            initial_centroids,
            assigner,
            cancel,
        } = opts;
        let p = self.params.clone();
        let (d, k) = (self.d, p.k);
        x.check_dim(d)?;
        x.check_finite()?;
        let n = x.len();
        if n < k {
            return Err(Error::InsufficientTrainingData { needed: k, got: n });
        }
        if let Some(w) = weights {
            if w.len() != n {
                return Err(Error::LengthMismatch {
                    what: "weights",
                    expected: n,
                    got: w.len(),
                });
            }
            if let Some(bad) = w.iter().find(|v| !(v.is_finite() && **v >= 0.0)) {
                return Err(Error::invalid_param(
                    "weights",
                    format!("weights must be finite and >= 0 (found {bad})"),
                ));
            }
        }
        let m = match initial_centroids {
            Some(c) => {
                c.check_dim(d)?;
                c.check_finite()?;
                if c.len() > k {
                    return Err(Error::invalid_param(
                        "initial_centroids",
                        format!("{} given for k = {k}", c.len()),
                    ));
                }
                c.len()
            }
            None => 0,
        };
        if p.frozen_centroids && m == 0 {
            return Err(Error::invalid_param(
                "frozen_centroids",
                "needs initial centroids to freeze",
            ));
        }
        self.warnings.clear();
        if n < k.saturating_mul(p.min_points_per_centroid) {
            let msg = format!(
                "clustering {n} points to {k} centroids: please provide at least {} training points",
                k.saturating_mul(p.min_points_per_centroid)
            );
            if p.verbose {
                eprintln!("WARNING {msg}");
            }
            self.warnings.push(msg);
        }

        // Subsample above k × max_points_per_centroid (seeded), as Faiss does.
        let max_n = k.saturating_mul(p.max_points_per_centroid);
        let (sample, sample_w);
        let (x, weights) = if n > max_n {
            let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
            let mut idx = sample_indices(n, max_n, &mut rng);
            idx.sort_unstable();
            if p.verbose {
                eprintln!("sampling a subset of {max_n} / {n} for training");
            }
            let mut s = Vec::with_capacity(max_n * d);
            for &i in &idx {
                s.extend_from_slice(x.row(i));
            }
            sample = s;
            sample_w = weights.map(|w| idx.iter().map(|&i| w[i]).collect::<Vec<f32>>());
            (VectorsRef::new(&sample, d)?, sample_w.as_deref())
        } else {
            (x, weights)
        };
        let n = x.len();
        self.n_train = n;

        let metric = metric_of(&p);
        let mut default_index;
        let index: &mut dyn Index = match assigner {
            Some(ix) => {
                if ix.dim() != d {
                    return Err(Error::DimensionMismatch {
                        expected: d,
                        got: ix.dim(),
                    });
                }
                ix
            }
            None => {
                default_index = IndexFlat::new(d, metric)?;
                &mut default_index
            }
        };

        if n == k && m == 0 {
            // Every point is a centroid.
            let mut c = x.as_slice().to_vec();
            post_process(&mut c, d, &p, 0);
            index.reset();
            index.add(VectorsRef::new(&c, d)?)?;
            self.centroids = c;
            self.stats = vec![IterationStats {
                objective: 0.0,
                time_s: 0.0,
                time_search_s: 0.0,
                imbalance_factor: 1.0,
                nsplit: 0,
            }];
            return Ok(());
        }

        let t0 = Instant::now();
        let mut best: Option<(Vec<f32>, Vec<IterationStats>)> = None;
        for redo in 0..p.nredo {
            let mut rng = ChaCha8Rng::seed_from_u64(
                p.seed
                    .wrapping_add(1)
                    .wrapping_add(redo as u64 * 15_486_557),
            );
            let mut c: Vec<f32> = Vec::with_capacity(k * d);
            if let Some(ic) = initial_centroids {
                c.extend_from_slice(ic.as_slice());
            }
            init_centroids(x, weights, &mut c, k - m, p.init, &mut rng)?;
            post_process(&mut c, d, &p, if p.frozen_centroids { m } else { 0 });
            let frozen = if p.frozen_centroids { m } else { 0 };
            let mut stats = Vec::with_capacity(p.niter);
            let mut search_s = 0.0;
            for it in 0..p.niter {
                if cancel.is_some_and(|f| f.load(Ordering::Relaxed)) {
                    return Err(Error::Cancelled);
                }
                let ts = Instant::now();
                index.reset();
                if p.update_index {
                    index.train(VectorsRef::new(&c, d)?)?;
                }
                index.add(VectorsRef::new(&c, d)?)?;
                let res = index.search(x, 1, &SearchParams::default())?;
                search_s += ts.elapsed().as_secs_f64();
                let (dist, labels) = res.into_parts();
                if let Some(bad) = labels.iter().find(|&&l| l < 0 || l as usize >= k) {
                    return Err(Error::invalid_param(
                        "assigner",
                        format!("the assignment index returned label {bad} for k = {k}"),
                    ));
                }
                let objective: f64 = match weights {
                    Some(w) => dist.iter().zip(w).map(|(&a, &b)| a as f64 * b as f64).sum(),
                    None => dist.iter().map(|&a| a as f64).sum(),
                };
                let counts = cluster_counts(&labels, k);
                let mut hassign = update_centroids(x, weights, &labels, &counts, &mut c, frozen);
                let nsplit = split_clusters(&mut c, d, &mut hassign, &counts, n, frozen, &mut rng);
                post_process(&mut c, d, &p, frozen);
                let s = IterationStats {
                    objective,
                    time_s: t0.elapsed().as_secs_f64(),
                    time_search_s: search_s,
                    imbalance_factor: imbalance(&counts),
                    nsplit,
                };
                if p.verbose {
                    eprintln!(
                        "  iteration {it}: objective {objective:.6e}, imbalance {:.3}, nsplit {nsplit}, {:.2} s",
                        s.imbalance_factor, s.time_s
                    );
                }
                let stop = match (p.tolerance, stats.last()) {
                    (Some(tol), Some(prev)) => {
                        let prev: &IterationStats = prev;
                        (prev.objective - objective).abs() <= tol * prev.objective.abs()
                    }
                    _ => false,
                };
                stats.push(s);
                if stop {
                    break;
                }
            }
            let better = match (&best, stats.last()) {
                (None, _) => true,
                (Some((_, bs)), Some(s)) => {
                    let b = bs.last().map_or(f64::NAN, |x| x.objective);
                    if metric == Metric::L2 {
                        s.objective < b
                    } else {
                        s.objective > b
                    }
                }
                (Some(_), None) => false,
            };
            if better {
                best = Some((c, stats));
            }
        }
        let (c, stats) = best.ok_or_else(|| Error::invalid_param("nredo", "no run was made"))?;
        index.reset();
        if p.update_index {
            index.train(VectorsRef::new(&c, d)?)?;
        }
        index.add(VectorsRef::new(&c, d)?)?;
        self.centroids = c;
        self.stats = stats;
        Ok(())
    }
}

fn cluster_counts(labels: &[Label], k: usize) -> Vec<usize> {
    let mut counts = vec![0usize; k];
    for &l in labels {
        if let Some(c) = usize::try_from(l).ok().and_then(|l| counts.get_mut(l)) {
            *c += 1;
        }
    }
    counts
}

fn imbalance(counts: &[usize]) -> f64 {
    let total: f64 = counts.iter().map(|&c| c as f64).sum();
    let sq: f64 = counts.iter().map(|&c| (c as f64) * (c as f64)).sum();
    if total == 0.0 {
        return 1.0;
    }
    sq * counts.len() as f64 / (total * total)
}

/// Faiss's imbalance factor of an assignment to `k` clusters: `k · Σ nᵢ² / (Σ nᵢ)²`
/// over the cluster sizes `nᵢ` (1 when perfectly balanced). Labels outside `0..k` are
/// ignored.
///
/// ```
/// assert_eq!(vq_kmeans::imbalance_factor(&[0, 1, 0, 1], 2), 1.0);
/// assert_eq!(vq_kmeans::imbalance_factor(&[0, 0, 0, 0], 2), 2.0);
/// ```
pub fn imbalance_factor(labels: &[Label], k: usize) -> f64 {
    imbalance(&cluster_counts(labels, k))
}

/// Weighted means of the points of each cluster, accumulated in `f64` in point order
/// (so the result does not depend on the thread count). `counts` are the cluster sizes
/// of `labels`. Empty clusters keep their old centroid until they are split. Returns the
/// (weighted) cluster sizes.
fn update_centroids(
    x: VectorsRef<'_>,
    weights: Option<&[f32]>,
    labels: &[Label],
    counts: &[usize],
    centroids: &mut [f32],
    frozen: usize,
) -> Vec<f64> {
    let d = x.dim();
    let k = counts.len();
    // Counting sort of the points by cluster.
    let mut start = vec![0usize; k + 1];
    for c in 0..k {
        start[c + 1] = start[c] + counts[c];
    }
    let mut fill = start.clone();
    let mut order = vec![0usize; labels.len()];
    for (i, &l) in labels.iter().enumerate() {
        order[fill[l as usize]] = i;
        fill[l as usize] += 1;
    }
    centroids
        .par_chunks_mut(d)
        .enumerate()
        .map_init(
            || vec![0.0f64; d],
            |acc, (c, out)| {
                let pts = &order[start[c]..start[c + 1]];
                let mut wsum = 0.0f64;
                acc.fill(0.0);
                for &i in pts {
                    let w = weights.map_or(1.0, |w| w[i] as f64);
                    wsum += w;
                    for (a, &v) in acc.iter_mut().zip(x.row(i)) {
                        *a += w * v as f64;
                    }
                }
                if c >= frozen && wsum > 0.0 {
                    for (o, a) in out.iter_mut().zip(acc.iter()) {
                        *o = (a / wsum) as f32;
                    }
                }
                wsum
            },
        )
        .collect()
}

/// Faiss's empty-cluster repair: an empty cluster takes half of a cluster drawn with
/// probability proportional to its size minus one, and the two centroids are pushed
/// apart symmetrically. Returns the number of splits.
///
/// Sizes are the clusters' weights (`hassign`) rescaled so that they sum to the number
/// of points in the clusters that may split (`counts`): with unit weights that is the
/// identity, and with weights of any scale a cluster's chance stays that of its share
/// of the points (Faiss draws from the raw weights, which never repairs weights summing
/// to about 1 and can draw almost forever when a single weight is just above 1).
fn split_clusters(
    centroids: &mut [f32],
    d: usize,
    hassign: &mut [f64],
    counts: &[usize],
    n: usize,
    frozen: usize,
    rng: &mut ChaCha8Rng,
) -> usize {
    let k = hassign.len();
    let total: f64 = hassign[frozen..].iter().sum();
    let points: f64 = counts[frozen..].iter().map(|&c| c as f64).sum();
    let scale = points / total;
    let mut nsplit = 0;
    for ci in frozen..k {
        if hassign[ci] > 0.0 {
            continue;
        }
        if !(total > 0.0 && scale.is_finite() && hassign[frozen..].iter().any(|&h| h * scale > 1.0))
        {
            break;
        }
        let denom = (n as f64 - k as f64).max(1.0);
        let mut cj = frozen;
        loop {
            let p = (hassign[cj] * scale - 1.0) / denom;
            if rng.random::<f64>() < p {
                break;
            }
            cj = if cj + 1 == k { frozen } else { cj + 1 };
        }
        let (a, b) = if ci < cj {
            let (lo, hi) = centroids.split_at_mut(cj * d);
            (&mut lo[ci * d..(ci + 1) * d], &mut hi[..d])
        } else {
            let (lo, hi) = centroids.split_at_mut(ci * d);
            (&mut hi[..d], &mut lo[cj * d..(cj + 1) * d])
        };
        a.copy_from_slice(b);
        for j in 0..d {
            if j % 2 == 0 {
                a[j] *= 1.0 + SPLIT_EPS;
                b[j] *= 1.0 - SPLIT_EPS;
            } else {
                a[j] *= 1.0 - SPLIT_EPS;
                b[j] *= 1.0 + SPLIT_EPS;
            }
        }
        hassign[ci] = hassign[cj] / 2.0;
        hassign[cj] -= hassign[ci];
        nsplit += 1;
    }
    nsplit
}

/// Spherical normalisation and integer rounding of the non-frozen centroids.
fn post_process(c: &mut [f32], d: usize, p: &KMeansParams, frozen: usize) {
    let c = &mut c[frozen * d..];
    if p.spherical {
        L2Normalize::normalize_in_place(c, d);
    }
    if p.int_centroids {
        c.iter_mut().for_each(|v| *v = v.round());
    }
}
