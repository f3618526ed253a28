//! vq-kmeans properties (Faiss's `test_clustering.py` and more).
#![allow(clippy::unwrap_used)]

use std::sync::atomic::AtomicBool;

use proptest::prelude::*;
use vq_core::synthetic::SyntheticSpec;
use vq_core::{Error, Index, IndexFlat, Metric, Vectors, VectorsRef};
use vq_kmeans::{Init, KMeans, KMeansParams, TrainOptions};

fn data(n: usize, d: usize, centres: usize, seed: u64) -> Vectors {
    SyntheticSpec::new(n, d, 0)
        .with_seed(seed)
        .with_centres(centres)
        .generate()
        .unwrap()
        .base
}

fn train(x: &Vectors, params: KMeansParams) -> KMeans {
    let mut km = KMeans::new(x.dim(), params).unwrap();
    km.train(x.as_ref()).unwrap();
    km
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn objective_never_rises_and_no_nan(seed in 0u64..1000, k in 2usize..40, init in 0usize..3) {
        let x = data(3000, 12, 30, seed);
        let init = [Init::Random, Init::KMeansPlusPlus, Init::AfkMc2 { chain_length: 50 }][init];
        let km = train(&x, KMeansParams::new(k).with_niter(12).with_seed(seed).with_init(init));
        let s = km.iteration_stats();
        for w in s.windows(2) {
            if w[0].nsplit == 0 {
                // Lloyd steps never raise the objective; the tolerance covers float rounding.
                prop_assert!(w[1].objective <= w[0].objective * (1.0 + 1e-5),
                    "{} -> {}", w[0].objective, w[1].objective);
            }
        }
        prop_assert!(km.centroids().as_slice().iter().all(|v| v.is_finite()));
        prop_assert_eq!(km.centroids().len(), k);
    }
}

#[test]
fn same_seed_same_centroids_at_any_thread_count() {
    let x = data(20_000, 16, 100, 1);
    let run = |t: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build()
            .unwrap()
            .install(|| train(&x, KMeansParams::new(64).with_niter(8)))
    };
    let (a, b) = (run(1), run(2));
    assert_eq!(a.centroids().as_slice(), b.centroids().as_slice());
    assert_eq!(a.objective(), b.objective());
}

#[test]
fn more_redos_never_worse_and_redo_zero_is_the_single_run() {
    let x = data(5000, 8, 40, 2);
    let one = train(&x, KMeansParams::new(32).with_niter(6));
    let three = train(&x, KMeansParams::new(32).with_niter(6).with_nredo(3));
    assert!(three.objective().unwrap() <= one.objective().unwrap());
}

#[test]
fn n_equal_k_returns_the_data_and_n_below_k_is_an_error() {
    let x = data(50, 4, 10, 3);
    let km = train(&x, KMeansParams::new(50));
    assert_eq!(km.centroids().as_slice(), x.as_slice());
    assert_eq!(km.objective(), Some(0.0));
    let mut km = KMeans::new(4, KMeansParams::new(51)).unwrap();
    assert!(matches!(
        km.train(x.as_ref()),
        Err(Error::InsufficientTrainingData {
            needed: 51,
            got: 50
        })
    ));
}

#[test]
fn frozen_centroids_do_not_move() {
    let x = data(4000, 6, 20, 4);
    let init: Vec<f32> = (0..3 * 6).map(|i| i as f32 * 0.1).collect();
    let mut p = KMeansParams::new(10).with_niter(10);
    p.frozen_centroids = true;
    let mut km = KMeans::new(6, p).unwrap();
    km.train_with(
        x.as_ref(),
        TrainOptions {
            initial_centroids: Some(VectorsRef::new(&init, 6).unwrap()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(&km.centroids().as_slice()[..18], &init[..]);
}

#[test]
fn weight_two_equals_duplicating_the_point() {
    let x = data(600, 5, 10, 5);
    let init = x.as_ref().slice(0..8).to_owned();
    let mut weights = vec![1.0f32; 600];
    let mut dup = x.as_slice().to_vec();
    for i in (0..600).step_by(3) {
        weights[i] = 2.0;
        dup.extend_from_slice(x.row(i));
    }
    let dup = Vectors::new(dup, 5).unwrap();
    let run = |v: &Vectors, w: Option<&[f32]>| {
        let mut km = KMeans::new(5, KMeansParams::new(8).with_niter(10)).unwrap();
        km.train_with(
            v.as_ref(),
            TrainOptions {
                weights: w,
                initial_centroids: Some(init.as_ref()),
                ..Default::default()
            },
        )
        .unwrap();
        km
    };
    let a = run(&x, Some(&weights));
    let b = run(&dup, None);
    for (p, q) in a
        .centroids()
        .as_slice()
        .iter()
        .zip(b.centroids().as_slice())
    {
        assert!((p - q).abs() <= 1e-5 * (1.0 + p.abs()), "{p} vs {q}");
    }
    let (oa, ob) = (a.objective().unwrap(), b.objective().unwrap());
    assert!((oa - ob).abs() <= 1e-6 * ob, "{oa} vs {ob}");
}

#[test]
fn spherical_centroids_have_unit_norm() {
    let x = data(3000, 10, 20, 6);
    let km = train(&x, KMeansParams::new(16).with_niter(5).with_spherical(true));
    for c in km.centroids().rows() {
        let n: f32 = c.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-5, "{n}");
    }
}

#[test]
fn seeding_beats_random_on_clustered_data() {
    // 40 well-separated clusters, k = 40: k-means++ and AFK-MC² start much closer.
    let x = SyntheticSpec {
        noise: 0.05,
        ..SyntheticSpec::new(8000, 16, 0)
            .with_seed(7)
            .with_centres(40)
    }
    .generate()
    .unwrap()
    .base;
    let first = |init| {
        let mut total = 0.0;
        for seed in 0..3 {
            let km = train(
                &x,
                KMeansParams::new(40)
                    .with_niter(1)
                    .with_seed(seed)
                    .with_init(init),
            );
            total += km.iteration_stats()[0].objective;
        }
        total
    };
    let random = first(Init::Random);
    assert!(first(Init::KMeansPlusPlus) < random);
    assert!(first(Init::AfkMc2 { chain_length: 100 }) < random);
}

#[test]
fn empty_clusters_are_split_never_nan() {
    // 95% of the points are one vector: most random centroids start there and collide.
    let mut v = vec![1.0f32; 1900 * 4];
    v.extend((0..100 * 4).map(|i| (i % 17) as f32));
    let x = Vectors::new(v, 4).unwrap();
    let km = train(&x, KMeansParams::new(30).with_niter(5));
    assert!(km.iteration_stats().iter().any(|s| s.nsplit > 0));
    assert!(km.centroids().as_slice().iter().all(|v| v.is_finite()));
}

/// Three starting centroids, the last far from every point, so its cluster is empty from
/// the first iteration; returns that centroid after training with `weights`.
fn far_centroid_after_training(n: usize, weights: Option<&[f32]>) -> (Vec<f32>, usize) {
    let x = data(n, 2, 4, 7);
    let init = [0.0f32, 0.0, 0.5, 0.5, 1000.0, 1000.0];
    let mut km = KMeans::new(
        2,
        KMeansParams::new(3)
            .with_niter(5)
            .with_points_per_centroid(1, 1_000_000),
    )
    .unwrap();
    km.train_with(
        x.as_ref(),
        TrainOptions {
            weights,
            initial_centroids: Some(VectorsRef::new(&init, 2).unwrap()),
            ..Default::default()
        },
    )
    .unwrap();
    let splits = km.iteration_stats().iter().map(|s| s.nsplit).sum();
    (km.centroids().row(2).to_vec(), splits)
}

#[test]
fn empty_clusters_are_split_whatever_the_scale_of_the_weights() {
    let (unit, splits) = far_centroid_after_training(1000, None);
    assert!(unit[0] < 100.0 && splits > 0, "{unit:?}");
    // The same problem with weights summing to about 1: no cluster weighs more than one
    // point, which Faiss's rule needs to split.
    let w = vec![0.999 / 1000.0; 1000];
    let (scaled, splits) = far_centroid_after_training(1000, Some(&w));
    assert!(scaled[0] < 100.0 && splits > 0, "{scaled:?}");
    // One weight just above 1, every other 0: a split chance of about 1e-12 a draw under
    // Faiss's rule, which spun for hours.
    let mut w = vec![0.0f32; 100_000];
    w[0] = 1.000_000_1;
    let (one, _) = far_centroid_after_training(100_000, Some(&w));
    assert!(one.iter().all(|v| v.is_finite()));
}

#[test]
fn a_huge_points_per_centroid_only_warns() {
    let x = data(100, 2, 4, 9);
    let mut km = KMeans::new(
        2,
        KMeansParams::new(4).with_points_per_centroid(usize::MAX, 256),
    )
    .unwrap();
    km.train(x.as_ref()).unwrap();
    assert_eq!(km.warnings().len(), 1, "{:?}", km.warnings());
}

#[test]
fn subsampling_follows_max_points_per_centroid() {
    let x = data(10_000, 4, 10, 8);
    let km = train(
        &x,
        KMeansParams::new(10)
            .with_niter(2)
            .with_points_per_centroid(5, 100),
    );
    assert_eq!(km.n_train(), 1000);
    let km = train(&x, KMeansParams::new(10).with_niter(2));
    assert_eq!(km.n_train(), 2560);
    let few = train(&data(300, 4, 10, 8), KMeansParams::new(10).with_niter(2));
    assert_eq!(few.warnings().len(), 1);
}

#[test]
fn early_stop_cancel_and_custom_assigner() {
    let x = data(5000, 8, 20, 9);
    let km = train(
        &x,
        KMeansParams::new(16).with_niter(50).with_tolerance(1e-3),
    );
    assert!(km.iteration_stats().len() < 50);

    let stop = AtomicBool::new(true);
    let mut km = KMeans::new(8, KMeansParams::new(16)).unwrap();
    let r = km.train_with(
        x.as_ref(),
        TrainOptions {
            cancel: Some(&stop),
            ..Default::default()
        },
    );
    assert!(matches!(r, Err(Error::Cancelled)));

    let mut flat = IndexFlat::new(8, Metric::L2).unwrap();
    let mut km = KMeans::new(8, KMeansParams::new(16).with_niter(4)).unwrap();
    km.train_with(
        x.as_ref(),
        TrainOptions {
            assigner: Some(&mut flat),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(flat.len(), 16);
    assert_eq!(flat.vectors().as_slice(), km.centroids().as_slice());
}

#[test]
fn bad_input_is_an_error() {
    let x = data(500, 4, 10, 10);
    assert!(KMeans::new(4, KMeansParams::new(0)).is_err());
    assert!(KMeans::new(0, KMeansParams::new(3)).is_err());
    let mut km = KMeans::new(5, KMeansParams::new(3)).unwrap();
    assert!(matches!(
        km.train(x.as_ref()),
        Err(Error::DimensionMismatch { .. })
    ));
    let mut bad = x.as_slice().to_vec();
    bad[7] = f32::NAN;
    let mut km = KMeans::new(4, KMeansParams::new(3)).unwrap();
    assert!(matches!(
        km.train(VectorsRef::new(&bad, 4).unwrap()),
        Err(Error::NonFinite { .. })
    ));
    for w in [vec![1.0f32; 499], {
        let mut w = vec![1.0f32; 500];
        w[3] = -1.0;
        w
    }] {
        let r = km.train_with(
            x.as_ref(),
            TrainOptions {
                weights: Some(&w),
                ..Default::default()
            },
        );
        assert!(r.is_err());
    }
    assert!(km.assign(x.as_ref()).is_err(), "not trained yet");
}

#[test]
fn two_level_is_close_to_flat_and_exact_in_size() {
    let x = data(30_000, 16, 200, 11);
    let flat = train(&x, KMeansParams::new(256).with_niter(10));
    let mut two = KMeans::new(16, KMeansParams::new(256).with_niter(10)).unwrap();
    two.train_two_level(x.as_ref()).unwrap();
    assert_eq!(two.centroids().len(), 256);
    let mse = |km: &KMeans| {
        let (_, d) = km.assign(x.as_ref()).unwrap();
        d.iter().map(|&v| v as f64).sum::<f64>() / d.len() as f64
    };
    let (a, b) = (mse(&flat), mse(&two));
    // Documented trade-off: a few percent worse, never wildly so.
    assert!(b < a * 1.15, "two-level {b} vs flat {a}");
}

/// An assigner that records where its queries live (TrainOptions' promise: the same
/// points, in the same memory, at every iteration).
#[derive(Debug)]
struct Recording {
    inner: IndexFlat,
    seen: std::sync::Mutex<Vec<(usize, usize, f64)>>,
}

impl Index for Recording {
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn metric(&self) -> Metric {
        self.inner.metric()
    }
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn add(&mut self, x: VectorsRef<'_>) -> vq_core::Result<()> {
        self.inner.add(x)
    }
    fn reset(&mut self) {
        self.inner.reset();
    }
    fn search_into(
        &self,
        queries: VectorsRef<'_>,
        k: usize,
        params: &vq_core::SearchParams<'_>,
        out: &mut vq_core::SearchResults,
    ) -> vq_core::Result<()> {
        let sum: f64 = queries.as_slice().iter().map(|&v| f64::from(v)).sum();
        self.seen
            .lock()
            .unwrap()
            .push((queries.as_slice().as_ptr() as usize, queries.len(), sum));
        self.inner.search_into(queries, k, params, out)
    }
}

#[test]
fn assigner_sees_the_same_points_at_every_iteration() {
    let x = data(3000, 8, 10, 21);
    // Without and with subsampling (max_points_per_centroid · k < n), two redos.
    for max_points in [256, 50] {
        let mut rec = Recording {
            inner: IndexFlat::new(8, Metric::L2).unwrap(),
            seen: std::sync::Mutex::new(Vec::new()),
        };
        let mut params = KMeansParams::new(20).with_niter(6);
        params.max_points_per_centroid = max_points;
        params.nredo = 2;
        let mut km = KMeans::new(8, params).unwrap();
        km.train_with(
            x.as_ref(),
            TrainOptions {
                assigner: Some(&mut rec),
                ..TrainOptions::default()
            },
        )
        .unwrap();
        let seen = rec.seen.into_inner().unwrap();
        assert_eq!(seen.len(), 12, "one search per iteration and redo");
        assert!(seen.iter().all(|s| *s == seen[0]), "{seen:?}");
        let n = if max_points == 256 { 3000 } else { 1000 };
        assert_eq!(seen[0].1, n);
        if n == 3000 {
            assert_eq!(seen[0].0, x.as_slice().as_ptr() as usize);
        }
    }
}
