//! Property tests of the quantizers, transforms and code indexes against brute force.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vq_core::testing::{brute_force_knn, brute_force_range, check_knn};
use vq_core::{
    AdcCodec, CodeDistance, Codec, Error, IdSelector, Index, Metric, SearchParams, VectorTransform,
    VectorsRef,
};
use vq_pq::{
    IndexPQ, IndexScalarQuantizer, Opq, Pca, PqDistanceTable, ProductQuantizer, RandomRotation,
    RangeStat, ScalarQuantizer, SqType,
};

fn gaussian(n: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n * d).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Correlated data (random linear mix of independent components with decaying scales),
/// where rotations matter for PQ.
fn correlated(n: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mix: Vec<f32> = (0..d * d).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let mut out = vec![0f32; n * d];
    for i in 0..n {
        let z: Vec<f32> = (0..d)
            .map(|j| rng.random_range(-1.0f32..1.0) * 4.0 / (1.0 + j as f32))
            .collect();
        for r in 0..d {
            out[i * d + r] = (0..d).map(|c| mix[r * d + c] * z[c]).sum();
        }
    }
    out
}

fn l2(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

fn ip(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn trained_pq(
    d: usize,
    m: usize,
    nbits: usize,
    n: usize,
    seed: u64,
) -> (ProductQuantizer, Vec<f32>) {
    let x = gaussian(n, d, seed);
    let mut pq = ProductQuantizer::new(d, m, nbits).unwrap();
    let p = pq.kmeans_params().clone().with_niter(8);
    pq.set_kmeans_params(p).unwrap();
    pq.train(VectorsRef::new(&x, d).unwrap()).unwrap();
    (pq, x)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// No other centroid reconstructs any sub-vector better than the encoded one.
    #[test]
    fn pq_encode_picks_the_nearest_centroid(seed in 0u64..1000, m in prop::sample::select(vec![1usize, 2, 4]), dsub in 1usize..40, nbits in 3usize..=6) {
        let d = m * dsub;
        let (pq, _) = trained_pq(d, m, nbits, 300, seed);
        let x = gaussian(64, d, seed + 1);
        let codes = pq.encode(VectorsRef::new(&x, d).unwrap()).unwrap();
        let mut ids = vec![0u32; m];
        for (i, code) in codes.chunks_exact(pq.code_size()).enumerate() {
            pq.unpack_code(code, &mut ids);
            for (mi, &j) in ids.iter().enumerate() {
                let sub = &x[i * d + mi * dsub..i * d + (mi + 1) * dsub];
                let chosen = l2(sub, pq.centroid(mi, j as usize));
                for k in 0..pq.ksub() {
                    let other = l2(sub, pq.centroid(mi, k));
                    prop_assert!(chosen <= other * (1.0 + 1e-5) + 1e-6,
                        "vector {i} sub {mi}: chose {j} at {chosen}, centroid {k} at {other}");
                }
            }
        }
    }

    /// ADC distances equal the distances to the decoded vectors, for L2 and inner
    /// product, through the per-query kernel and the batched GEMM tables.
    #[test]
    fn adc_equals_distance_to_decoded(seed in 0u64..1000, dsub in prop::sample::select(vec![2usize, 5, 16, 24]), nbits in prop::sample::select(vec![4usize, 8, 9])) {
        let m = 3;
        let d = m * dsub;
        let (pq, _) = trained_pq(d, m, nbits, 600, seed);
        let x = gaussian(40, d, seed + 7);
        let codes = pq.encode(VectorsRef::new(&x, d).unwrap()).unwrap();
        let dec = pq.decode(&codes).unwrap();
        let q = gaussian(10, d, seed + 9);
        for metric in [Metric::L2, Metric::InnerProduct] {
            let batch = pq.query_computers(VectorsRef::new(&q, d).unwrap(), metric).unwrap();
            for (qi, mut table) in batch.into_iter().enumerate() {
                let qr = &q[qi * d..(qi + 1) * d];
                let mut single = pq.distance_table(qr, metric).unwrap();
                let mut out = vec![0f32; 40];
                table.distances(&codes, &mut out);
                for (i, y) in dec.chunks_exact(d).enumerate() {
                    let want = if metric == Metric::L2 { l2(qr, y) } else { ip(qr, y) };
                    let tol = 1e-3 * (1.0 + want.abs());
                    prop_assert!((out[i] - want).abs() <= tol, "{metric:?} batch {} vs {want}", out[i]);
                    let s = CodeDistance::distance(&mut single, &codes[i * pq.code_size()..(i + 1) * pq.code_size()]);
                    prop_assert!((s - want).abs() <= tol, "{metric:?} single {s} vs {want}");
                }
                // Scanning with two tables equals scanning with their sum (IVF-PQ's
                // short lists), bias included.
                let other = pq.distance_table(&q[..d], metric).unwrap();
                let sum: Vec<f32> = single.table().iter().zip(other.table()).map(|(a, b)| a + b).collect();
                let mut summed = PqDistanceTable::new(sum, m, nbits).unwrap();
                summed.set_bias(0.5);
                single.set_bias(0.5);
                let (mut two, mut one) = (vec![0f32; 40], vec![0f32; 40]);
                single.scan_plus(other.table(), &codes, &mut two);
                summed.scan(&codes, &mut one);
                for (a, b) in two.iter().zip(&one) {
                    prop_assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{metric:?} two tables {a} vs {b}");
                }
            }
        }
    }

    /// SQ8: inside the trained range every component is within half a step.
    #[test]
    fn sq8_error_is_at_most_half_a_step(seed in 0u64..1000, d in 1usize..70, uniform in any::<bool>()) {
        let x = gaussian(200, d, seed);
        let t = if uniform { SqType::Q8Uniform } else { SqType::Q8 };
        let mut sq = ScalarQuantizer::new(d, t).unwrap();
        sq.train(VectorsRef::new(&x, d).unwrap()).unwrap();
        let dec = sq.decode(&sq.encode(VectorsRef::new(&x, d).unwrap()).unwrap()).unwrap();
        for (i, (&a, &b)) in x.iter().zip(&dec).enumerate() {
            let step = sq.vdiff()[i % d] / 255.0;
            prop_assert!((a - b).abs() <= 0.5 * step * (1.0 + 1e-4) + 1e-7, "{a} -> {b}, step {step}");
        }
    }

    /// fp16 keeps 11 significant bits, bf16 8.
    #[test]
    fn half_precision_round_trip_bounds(seed in 0u64..1000, d in 1usize..50, scale in 1e-3f32..1e3) {
        let x: Vec<f32> = gaussian(20, d, seed).iter().map(|v| v * scale).collect();
        for (t, rel) in [(SqType::Fp16, 1.0 / 2048.0), (SqType::Bf16, 1.0 / 256.0)] {
            let sq = ScalarQuantizer::new(d, t).unwrap();
            let dec = sq.decode(&sq.encode(VectorsRef::new(&x, d).unwrap()).unwrap()).unwrap();
            for (&a, &b) in x.iter().zip(&dec) {
                // Values below fp16's normal range lose relative precision: bound absolutely there.
                prop_assert!((a - b).abs() <= a.abs() * rel + 6.2e-5 * (t == SqType::Fp16) as u8 as f32,
                    "{t}: {a} -> {b}");
            }
        }
    }

    /// Every SQ type's code-domain distance equals the distance to the decoded vector.
    #[test]
    fn sq_computers_match_decoded(seed in 0u64..1000, d in 1usize..45) {
        let x = gaussian(60, d, seed);
        let q = gaussian(3, d, seed + 3);
        let xs: Vec<f32> = x.iter().map(|v| (v + 1.0) * 100.0).collect();
        for t in [SqType::Q8, SqType::Q6, SqType::Q4, SqType::Q8Uniform, SqType::Q4Uniform,
                  SqType::Fp16, SqType::Bf16, SqType::Q8Direct, SqType::Q8DirectSigned] {
            let data = if t == SqType::Q8Direct { &xs } else { &x };
            let mut sq = ScalarQuantizer::new(d, t).unwrap();
            sq.train(VectorsRef::new(data, d).unwrap()).unwrap();
            let codes = sq.encode(VectorsRef::new(data, d).unwrap()).unwrap();
            let dec = sq.decode(&codes).unwrap();
            for metric in [Metric::L2, Metric::InnerProduct] {
                // One computer re-aimed at each query, as IVF scans do per list.
                let mut re = sq.query_computer(&q[..d], metric).unwrap();
                prop_assert!(!re.retarget(&q[..d.saturating_sub(1)]), "wrong length");
                for qr in q.chunks_exact(d) {
                    let mut c = sq.query_computer(qr, metric).unwrap();
                    let mut out = vec![0f32; 60];
                    c.distances(&codes, &mut out);
                    prop_assert!(re.retarget(qr));
                    let mut again = vec![0f32; 60];
                    re.distances(&codes, &mut again);
                    prop_assert_eq!(&again, &out, "{} {:?} retargeted", t, metric);
                    for (i, y) in dec.chunks_exact(d).enumerate() {
                        let want = if metric == Metric::L2 { l2(qr, y) } else { ip(qr, y) };
                        prop_assert!((out[i] - want).abs() <= 1e-3 * (1.0 + want.abs()),
                            "{t} {metric:?}: {} vs {want}", out[i]);
                    }
                }
            }
        }
    }

    /// Rotations and PCA without whitening preserve norms (PCA: of centred vectors)
    /// and reverse exactly when D = d.
    #[test]
    fn rotations_preserve_norms_and_reverse(seed in 0u64..1000, d in 2usize..24) {
        let x = correlated(300, d, seed);
        let xv = VectorsRef::new(&x, d).unwrap();
        let mut rr = RandomRotation::new(d, d).unwrap();
        rr.train(xv).unwrap();
        let mut pca = Pca::new(d, d).unwrap();
        pca.train(xv).unwrap();
        let m = if d % 2 == 0 { 2 } else { 1 };
        let mut opq = Opq::new(d, m).unwrap().with_niter(2).with_nbits(4).with_niter_pq(2, 4);
        opq.train(xv).unwrap();
        let mean = pca.mean().to_vec();
        let t: [&dyn VectorTransform; 3] = [&rr, &pca, &opq];
        for (ti, tr) in t.into_iter().enumerate() {
            let y = tr.apply(xv.slice(0..20)).unwrap();
            let back = tr.reverse(VectorsRef::new(&y, d).unwrap()).unwrap();
            for i in 0..20 {
                let xi = &x[i * d..(i + 1) * d];
                let centred: Vec<f32> = if ti == 1 { xi.iter().zip(&mean).map(|(a, b)| a - b).collect() } else { xi.to_vec() };
                let n0: f32 = centred.iter().map(|v| v * v).sum();
                let n1: f32 = y[i * d..(i + 1) * d].iter().map(|v| v * v).sum();
                prop_assert!((n0 - n1).abs() <= 1e-3 * (1.0 + n0), "{}: norm {n0} -> {n1}", tr.describe());
                for (a, b) in xi.iter().zip(&back[i * d..(i + 1) * d]) {
                    prop_assert!((a - b).abs() <= 1e-3 * (1.0 + a.abs()), "{}: {a} -> {b}", tr.describe());
                }
            }
        }
    }
}

#[test]
fn code_packing_round_trips_for_every_nbits() {
    let m = 3;
    for nbits in 1..=16usize {
        let ksub = 1usize << nbits;
        let mut pq = ProductQuantizer::new(m, m, nbits).unwrap();
        // Centroid j of every sub-space is the value j: encoding integers is exact.
        let c: Vec<f32> = (0..m).flat_map(|_| (0..ksub).map(|j| j as f32)).collect();
        pq.set_centroids(&c).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(nbits as u64);
        let x: Vec<f32> = (0..50 * m)
            .map(|_| rng.random_range(0..ksub) as f32)
            .collect();
        let codes = pq.encode(VectorsRef::new(&x, m).unwrap()).unwrap();
        assert_eq!(codes.len(), 50 * (m * nbits).div_ceil(8));
        assert_eq!(pq.decode(&codes).unwrap(), x, "nbits {nbits}");
    }
}

#[test]
fn opq_reconstructs_no_worse_than_pq() {
    let (n, d, m) = (3000, 16, 4);
    let x = correlated(n, d, 5);
    let xv = VectorsRef::new(&x, d).unwrap();
    let mut pq = ProductQuantizer::new(d, m, 6).unwrap();
    pq.train(xv).unwrap();
    let plain = l2(&x, &pq.decode(&pq.encode(xv).unwrap()).unwrap()) / n as f32;
    let mut opq = Opq::new(d, m).unwrap().with_niter(12).with_nbits(6);
    opq.train(xv).unwrap();
    let errs = opq.reconstruction_errors();
    assert!(errs.last().unwrap() <= &errs[0], "{errs:?}");
    let y = opq.apply(xv).unwrap();
    let inner = opq.pq().unwrap();
    let yv = VectorsRef::new(&y, d).unwrap();
    let rotated = l2(&y, &inner.decode(&inner.encode(yv).unwrap()).unwrap()) / n as f32;
    assert!(rotated <= plain, "OPQ {rotated} vs PQ {plain}");
}

#[test]
fn opq_with_other_output_dimensions() {
    let x = correlated(600, 12, 3);
    let xv = VectorsRef::new(&x, 12).unwrap();
    for d_out in [8, 16] {
        let mut opq = Opq::with_output(12, 4, d_out)
            .unwrap()
            .with_niter(2)
            .with_nbits(4);
        opq.train(xv).unwrap();
        let y = opq.apply(xv.slice(0..5)).unwrap();
        assert_eq!(y.len(), 5 * d_out);
        let lin = opq.linear().unwrap();
        assert!(lin.is_orthonormal(1e-4));
    }
}

#[test]
fn pca_whitening_gives_unit_variance_and_reverses() {
    let (n, d) = (4000, 8);
    let x = correlated(n, d, 11);
    let xv = VectorsRef::new(&x, d).unwrap();
    for rotate in [false, true] {
        let mut p = Pca::new(d, d)
            .unwrap()
            .with_eigen_power(-0.5)
            .with_random_rotation(rotate);
        p.train(xv).unwrap();
        let y = p.apply(xv).unwrap();
        for j in 0..d {
            let var: f32 = y.chunks_exact(d).map(|r| r[j] * r[j]).sum::<f32>() / n as f32;
            assert!((var - 1.0).abs() < 1e-2, "component {j}: {var}");
        }
        let back = p
            .reverse(VectorsRef::new(&y[..d * 10], d).unwrap())
            .unwrap();
        for (a, b) in x[..d * 10].iter().zip(&back) {
            assert!((a - b).abs() < 1e-3 * (1.0 + a.abs()), "{a} vs {b}");
        }
    }
    let mut small = Pca::new(d, 3).unwrap();
    small.train(xv).unwrap();
    let ev = small.eigenvalues();
    assert!(ev.windows(2).all(|w| w[0] >= w[1]));
    assert_eq!(small.apply(xv.slice(0..2)).unwrap().len(), 6);
}

#[test]
fn code_indexes_match_brute_force_on_decoded_vectors() {
    let (n, d, nq, k) = (700, 24, 15, 7);
    let x = gaussian(n, d, 1);
    let q = gaussian(nq, d, 2);
    let (xv, qv) = (
        VectorsRef::new(&x, d).unwrap(),
        VectorsRef::new(&q, d).unwrap(),
    );
    let mut indexes: Vec<Box<dyn Index>> = Vec::new();
    for metric in [Metric::L2, Metric::InnerProduct] {
        indexes.push(Box::new(IndexPQ::new(
            ProductQuantizer::new(d, 6, 5).unwrap(),
            metric,
        )));
        indexes.push(Box::new(IndexPQ::new(
            ProductQuantizer::new(d, 2, 8).unwrap(),
            metric,
        )));
        for t in [SqType::Q8, SqType::Q4, SqType::Q6, SqType::Fp16] {
            indexes.push(Box::new(IndexScalarQuantizer::new(
                ScalarQuantizer::new(d, t).unwrap(),
                metric,
            )));
        }
    }
    for index in &mut indexes {
        let metric = index.metric();
        index.train(xv).unwrap();
        index.add(xv).unwrap();
        assert_eq!(index.len(), n);
        let dec: Vec<f32> = (0..n as i64)
            .flat_map(|i| index.reconstruct(i).unwrap())
            .collect();
        let dv = VectorsRef::new(&dec, d).unwrap();
        let want = brute_force_knn(dv, qv, k, metric);
        // Batch (parallel over queries) and one query at a time (parallel over codes).
        let got = index.search(qv, k, &SearchParams::default()).unwrap();
        check_knn(&got, &want, dv, qv, metric, 1e-4).unwrap();
        let one = index
            .search(qv.slice(0..1), k, &SearchParams::default())
            .unwrap();
        assert_eq!(one.row(0).1, got.row(0).1, "{}", index.describe());
        // Range search between the 3rd and 4th neighbours' distances.
        let r = 0.5 * (got.row(0).0[2] + got.row(0).0[3]);
        let rr = index
            .range_search(qv.slice(0..1), r, &SearchParams::default())
            .unwrap();
        let wr = brute_force_range(dv, qv.slice(0..1), r, metric);
        assert_eq!(rr.row(0).1.len(), wr.row(0).1.len(), "{}", index.describe());
        // A selector keeps only even ids.
        let even = |id: i64| id % 2 == 0;
        let sel = SearchParams::default().with_selector(&even);
        let f = index.search(qv, k, &sel).unwrap();
        assert!(f.labels().iter().all(|&l| l % 2 == 0));
        // Removing shifts ids like Faiss; reset empties.
        let removed = index
            .remove_ids(&IdSelector::Range { min: 0, max: 100 })
            .unwrap();
        assert_eq!(removed, 100);
        assert_eq!(index.len(), n - 100);
        assert_eq!(index.reconstruct(0).unwrap(), dec[100 * d..101 * d]);
        index.reset();
        assert!(index.is_empty());
        assert!(index.is_trained());
    }
}

#[test]
fn bad_input_is_a_clear_error() {
    let e = ProductQuantizer::new(10, 3, 8).unwrap_err();
    assert!(e.to_string().contains("does not divide"), "{e}");
    assert!(ProductQuantizer::new(8, 2, 0).is_err());
    assert!(ProductQuantizer::new(8, 2, 17).is_err());
    assert!(ProductQuantizer::new(0, 2, 8).is_err());
    let x = gaussian(100, 8, 1);
    let mut pq = ProductQuantizer::new(8, 2, 8).unwrap();
    match pq.train(VectorsRef::new(&x, 8).unwrap()) {
        Err(Error::InsufficientTrainingData { needed, got }) => {
            assert_eq!((needed, got), (256, 100));
        }
        other => panic!("{other:?}"),
    }
    let mut bad = x.clone();
    bad[17] = f32::NAN;
    assert!(matches!(
        ProductQuantizer::new(8, 2, 4)
            .unwrap()
            .train(VectorsRef::new(&bad, 8).unwrap()),
        Err(Error::NonFinite { .. })
    ));
    // Search / encode before training.
    let index = IndexPQ::new(ProductQuantizer::new(8, 2, 4).unwrap(), Metric::L2);
    assert!(matches!(
        index.search(
            VectorsRef::new(&x[..8], 8).unwrap(),
            1,
            &SearchParams::default()
        ),
        Err(Error::NotTrained { .. })
    ));
    let mut sqi =
        IndexScalarQuantizer::new(ScalarQuantizer::new(8, SqType::Q8).unwrap(), Metric::L2);
    assert!(matches!(
        sqi.add(VectorsRef::new(&x, 8).unwrap()),
        Err(Error::NotTrained { .. })
    ));
    sqi.train(VectorsRef::new(&x, 8).unwrap()).unwrap();
    assert!(sqi.add(VectorsRef::new(&bad, 8).unwrap()).is_err());
    assert_eq!(sqi.len(), 0, "a failed add leaves nothing behind");
    assert!(matches!(
        sqi.add(VectorsRef::new(&x[..7], 7).unwrap()),
        Err(Error::DimensionMismatch { .. })
    ));
    assert!(
        ScalarQuantizer::new(4, SqType::Q8)
            .unwrap()
            .with_range_stat(RangeStat::Quantiles { fraction: 0.7 })
            .is_err()
    );
    assert!(Pca::new(4, 8).is_err());
    assert!(Opq::new(10, 3).is_err());
    let mut p = Pca::new(8, 4).unwrap();
    assert!(matches!(
        p.train(VectorsRef::new(&x[..8], 8).unwrap()),
        Err(Error::InsufficientTrainingData { needed: 2, got: 1 })
    ));
    assert!(matches!(
        p.apply(VectorsRef::new(&x[..8], 8).unwrap()),
        Err(Error::NotTrained { .. })
    ));
}

#[test]
fn range_statistics() {
    let d = 1;
    let mut x: Vec<f32> = (0..1000).map(|i| i as f32).collect();
    x[0] = -1e6; // an outlier
    let xv = VectorsRef::new(&x, d).unwrap();
    let mut mm = ScalarQuantizer::new(d, SqType::Q8).unwrap();
    mm.train(xv).unwrap();
    assert_eq!(mm.vmin()[0], -1e6);
    let mut qt = ScalarQuantizer::new(d, SqType::Q8)
        .unwrap()
        .with_range_stat(RangeStat::Quantiles { fraction: 0.01 })
        .unwrap();
    qt.train(xv).unwrap();
    assert_eq!(qt.vmin()[0], 10.0);
    assert_eq!(qt.vmin()[0] + qt.vdiff()[0], 989.0);
    let mut ms = ScalarQuantizer::new(d, SqType::Q8)
        .unwrap()
        .with_range_stat(RangeStat::MeanStd { k: 2.0 })
        .unwrap();
    ms.train(xv).unwrap();
    assert!(ms.vdiff()[0] > 0.0);
    let mut wide = ScalarQuantizer::new(d, SqType::Q8)
        .unwrap()
        .with_range_stat(RangeStat::MinMax { margin: 0.1 })
        .unwrap();
    wide.train(VectorsRef::new(&x[1..], d).unwrap()).unwrap();
    assert!((wide.vmin()[0] - (1.0 - 99.8)).abs() < 1e-3);
}

#[test]
fn sdc_matches_decoded_distances() {
    let (mut pq, x) = trained_pq(8, 2, 4, 400, 3);
    assert!(pq.sdc_distance(&[0], &[0]).is_err());
    pq.compute_sdc_table().unwrap();
    let codes = pq.encode(VectorsRef::new(&x[..80], 8).unwrap()).unwrap();
    let dec = pq.decode(&codes).unwrap();
    let cs = pq.code_size();
    for i in 0..10 {
        for j in 0..10 {
            let s = pq
                .sdc_distance(&codes[i * cs..(i + 1) * cs], &codes[j * cs..(j + 1) * cs])
                .unwrap();
            let want = l2(&dec[i * 8..(i + 1) * 8], &dec[j * 8..(j + 1) * 8]);
            assert!((s - want).abs() < 1e-4 * (1.0 + want));
        }
    }
}

#[test]
fn training_is_deterministic_and_thread_independent() {
    let x = gaussian(2000, 16, 4);
    let xv = VectorsRef::new(&x, 16).unwrap();
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| {
                let mut pq = ProductQuantizer::new(16, 4, 6).unwrap();
                pq.train(xv).unwrap();
                pq.centroids().to_vec()
            })
    };
    assert_eq!(run(1), run(2));
}
