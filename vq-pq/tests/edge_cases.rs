//! Regression tests for edge cases an API review found: inner-product range search over
//! codes, OPQ's quantizer against its transform on data with a mean, scalar-quantizer
//! ranges wider than an f32, bf16 near its largest value, fast-scan loads that fail and
//! far queries.
#![allow(clippy::unwrap_used)]

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vq_core::persist::StateReader;
use vq_core::testing::{patch_section, state_bytes};
use vq_core::{Codec, Index, Metric, SearchParams, VectorTransform, VectorsRef};
use vq_pq::{
    IndexPQ, IndexPQFastScan, IndexScalarQuantizer, Opq, ProductQuantizer, RangeStat,
    ScalarQuantizer, SqType,
};

fn uniform(n: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n * d)
        .map(|_| rng.random::<f32>() * 2.0 - 1.0)
        .collect()
}

fn vr(x: &[f32], d: usize) -> VectorsRef<'_> {
    VectorsRef::new(x, d).unwrap()
}

fn trained_pq(d: usize, m: usize, nbits: usize, x: &[f32]) -> ProductQuantizer {
    let mut pq = ProductQuantizer::new(d, m, nbits).unwrap();
    let p = pq.kmeans_params().clone().with_niter(4);
    pq.set_kmeans_params(p).unwrap();
    pq.train(vr(x, d)).unwrap();
    pq
}

/// Range search with an inner product reports similarities, largest first, each equal to
/// the k-NN search's value for that id, and exactly the ids above the radius.
fn check_ip_range(index: &dyn Index, q: &[f32], d: usize, radius: f32) {
    let n = index.len();
    let all = index.search(vr(q, d), n, &SearchParams::default()).unwrap();
    let r = index
        .range_search(vr(q, d), radius, &SearchParams::default())
        .unwrap();
    let mut hits = 0;
    for qi in 0..q.len() / d {
        let (kd, kl) = all.row(qi);
        let (rd, rl) = r.row(qi);
        let above = kd.iter().filter(|&&s| s > radius).count();
        assert_eq!(rl.len(), above, "query {qi}");
        assert!(rd.windows(2).all(|w| w[0] >= w[1]), "{rd:?}");
        for (&s, &id) in rd.iter().zip(rl) {
            let j = kl.iter().position(|&l| l == id).unwrap();
            assert_eq!(s, kd[j], "query {qi}, id {id}");
        }
        hits += rl.len();
    }
    assert!(hits > 0);
}

#[test]
fn inner_product_range_search_over_codes_reports_similarities() {
    let d = 16;
    let x = uniform(600, d, 21);
    let q = uniform(4, d, 22);
    let mut pq = IndexPQ::new(trained_pq(d, 4, 8, &x), Metric::InnerProduct);
    pq.add(vr(&x, d)).unwrap();
    check_ip_range(&pq, &q, d, 1.0);
    let sq = ScalarQuantizer::new(d, SqType::Fp16).unwrap();
    let mut sq = IndexScalarQuantizer::new(sq, Metric::InnerProduct);
    sq.train(vr(&x, d)).unwrap();
    sq.add(vr(&x, d)).unwrap();
    check_ip_range(&sq, &q, d, 1.0);
}

#[test]
fn opq_quantizer_matches_its_transform_on_data_with_a_mean() {
    let (n, d) = (1000, 8);
    let x: Vec<f32> = uniform(n, d, 81).iter().map(|v| v + 10.0).collect();
    let mut opq = Opq::new(d, 2).unwrap().with_niter(3).with_nbits(4);
    opq.train(vr(&x, d)).unwrap();
    let y = opq.apply(vr(&x, d)).unwrap();
    let pq = opq.pq().unwrap();
    let dec = pq.decode(&pq.encode(vr(&y, d)).unwrap()).unwrap();
    let err = y
        .iter()
        .zip(&dec)
        .map(|(a, b)| f64::from(a - b).powi(2))
        .sum::<f64>()
        / n as f64;
    // The training error (of the centred data the rotation is learnt on) is the scale
    // of a quantizer that fits: one trained on other data is off by ~100× here.
    let last = *opq.reconstruction_errors().last().unwrap();
    assert!(err < 2.0 * last, "{err} against {last}");
}

#[test]
fn scalar_ranges_wider_than_an_f32_are_errors() {
    let huge = [-3e38f32, 3e38, 0.0, 1.0];
    let mut sq = ScalarQuantizer::new(1, SqType::Q8).unwrap();
    let err = sq.train(vr(&huge, 1)).unwrap_err();
    assert!(err.to_string().contains("component 0"), "{err}");
    assert!(!sq.is_trained());
    let x = uniform(50, 2, 3);
    let mut sq = ScalarQuantizer::new(2, SqType::Q8)
        .unwrap()
        .with_range_stat(RangeStat::MinMax { margin: 1e38 })
        .unwrap();
    let err = sq.train(vr(&x, 2)).unwrap_err();
    assert!(err.to_string().contains("margin"), "{err}");
    // Extreme but representable data still trains, and decodes finite.
    let big = [-1.5e38f32, 1.5e38, 0.0, 1.0];
    let mut sq = ScalarQuantizer::new(1, SqType::Q8).unwrap();
    sq.train(vr(&big, 1)).unwrap();
    let dec = sq.decode(&sq.encode(vr(&big, 1)).unwrap()).unwrap();
    assert!(dec.iter().all(|v| v.is_finite()), "{dec:?}");
}

#[test]
fn bf16_clamps_the_largest_finite_values() {
    let x = [f32::MAX, -3.39e38, 1.0, -2.5];
    let sq = ScalarQuantizer::new(4, SqType::Bf16).unwrap();
    let dec = sq.decode(&sq.encode(vr(&x, 4)).unwrap()).unwrap();
    let m = half::bf16::MAX.to_f32();
    assert_eq!(dec, [m, -m, 1.0, -2.5]);
}

#[test]
fn a_failed_fast_scan_load_leaves_the_index_as_it_was() {
    let (d, m) = (6, 3);
    let x = uniform(100, d, 95);
    let mut src = IndexPQFastScan::new(d, m, Metric::L2).unwrap();
    src.set_build_param("lut_bits", "6").unwrap();
    src.train(vr(&x, d)).unwrap();
    src.add(vr(&x[..10 * d], d)).unwrap();
    let mut buf = state_bytes(&src).unwrap();
    // The quantizer's section is corrupt: the load fails after reading lut_max.
    patch_section(&mut buf, "pq/trained", 0, |p| {
        p.iter_mut().for_each(|b| *b = 7)
    });
    let mut dst = IndexPQFastScan::new(d, m, Metric::L2).unwrap();
    let before = state_bytes(&dst).unwrap();
    let mut rd = StateReader::from_bytes(buf, "mem").unwrap();
    assert!(dst.load_state(&mut rd).is_err());
    assert_eq!(state_bytes(&dst).unwrap(), before);
}

#[test]
fn fast_scan_is_exact_for_far_queries() {
    let mut rng = ChaCha8Rng::seed_from_u64(66);
    for (d, m) in [(16usize, 16usize), (32, 16)] {
        let x = uniform(2000, d, rng.random());
        let pq = trained_pq(d, m, 4, &x);
        let mut fs = IndexPQFastScan::from_pq(pq.clone(), Metric::L2, 32).unwrap();
        fs.add(vr(&x, d)).unwrap();
        let ts = m * 16;
        for off in [3e4f32, 1e6] {
            for lut in ["6", "8"] {
                fs.set_build_param("lut_bits", lut).unwrap();
                let q: Vec<f32> = uniform(32, d, rng.random())
                    .iter()
                    .map(|v| v * 0.1 + off)
                    .collect();
                let t = pq.compute_distance_tables(vr(&q, d), Metric::L2).unwrap();
                let got = fs.search(vr(&q, d), 5, &SearchParams::default()).unwrap();
                for qi in 0..32 {
                    let table = &t[qi * ts..(qi + 1) * ts];
                    let mut keys: Vec<f32> = (0..2000)
                        .map(|i| fs.layout().table_key(fs.codes(), i, table))
                        .collect();
                    keys.sort_by(f32::total_cmp);
                    assert_eq!(got.row(qi).0, &keys[..5], "d {d}, offset {off}, lut {lut}");
                }
            }
        }
    }
}
