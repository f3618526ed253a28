//! Fast-scan PQ: the kernels against the scalar oracle, the quantised tables against
//! the float tables, and `IndexPQFastScan` against `IndexPQ` with the same 4-bit
//! quantizer (the exact ADC top-k).
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vq_core::distance::SimdLevel;
use vq_core::testing::{load_state_bytes, state_bytes};
use vq_core::{Error, IdSelector, Index, Metric, SearchParams, SearchResults, VectorsRef};
use vq_pq::fastscan::{self, FastScanLayout, QuantizedLut, SUB_BLOCK};
use vq_pq::{IndexPQ, IndexPQFastScan, ProductQuantizer};

fn gaussian(n: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n * d).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// A trained fast-scan index and an `IndexPQ` over the same quantizer, both holding
/// `base`.
fn pair(
    base: &[f32],
    d: usize,
    m: usize,
    metric: Metric,
    bbs: usize,
) -> (IndexPQFastScan, IndexPQ) {
    let x = VectorsRef::new(base, d).unwrap();
    let mut pq = ProductQuantizer::new(d, m, 4).unwrap();
    pq.train(x).unwrap();
    let mut fs = IndexPQFastScan::from_pq(pq.clone(), metric, bbs).unwrap();
    fs.add(x).unwrap();
    let mut flat = IndexPQ::new(pq, metric);
    flat.add(x).unwrap();
    (fs, flat)
}

/// Same ids (ties allowed to swap) and distances within float rounding.
fn same_results(got: &SearchResults, want: &SearchResults, what: &str) {
    assert_eq!(got.nq(), want.nq());
    for q in 0..got.nq() {
        let (gd, gl) = got.row(q);
        let (wd, wl) = want.row(q);
        for j in 0..gd.len() {
            let tol = 1e-4 * (1.0 + wd[j].abs());
            assert!(
                gd[j] == wd[j] || (gd[j] - wd[j]).abs() <= tol,
                "{what}: query {q} rank {j}: {} vs {} (ids {} vs {})",
                gd[j],
                wd[j],
                gl[j],
                wl[j]
            );
            if gl[j] != wl[j] {
                // Only a tie may swap ids: the other id must be at the same distance.
                let pos = wl.iter().position(|&l| l == gl[j]);
                assert!(
                    pos.is_some_and(|p| (wd[p] - gd[j]).abs() <= tol)
                        || (gd[j] - wd[wd.len() - 1]).abs() <= tol,
                    "{what}: query {q} rank {j}: id {} vs {}",
                    gl[j],
                    wl[j]
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Every kernel level computes the oracle's integers, for any M (odd included),
    /// any block size and any number of vectors.
    #[test]
    fn kernels_equal_the_scalar_oracle(
        m in 1usize..40,
        blocks in 1usize..3,
        n in 1usize..200,
        seed in any::<u64>(),
    ) {
        let layout = FastScanLayout::new(m, 32 * blocks).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut codes = vec![0u8; layout.bytes_for(n)];
        let mut code = vec![0u8; m];
        for i in 0..n {
            code.iter_mut().for_each(|c| *c = rng.random_range(0..16));
            layout.write_code(&mut codes, i, &code);
        }
        let table: Vec<f32> = (0..m * 16).map(|_| rng.random_range(-5.0f32..50.0)).collect();
        let lut = QuantizedLut::new(&table, layout.m2()).unwrap();
        let oracle = fastscan::sums_scalar(&layout, &lut, &codes, n);
        let nsub = layout.bytes_for(n) / layout.sub_block_bytes();
        for level in SimdLevel::ALL {
            let got = fastscan::sums(level, &layout, &lut, &codes, nsub).unwrap();
            prop_assert_eq!(&got[..n], &oracle[..], "level {}", level);
        }
    }

    /// A sum's key is within the documented error bound of the exact float key, and
    /// `threshold_for` never excludes a vector whose exact key is under the bound.
    #[test]
    fn quantised_keys_are_within_the_error_bound(
        m in 1usize..300,
        seed in any::<u64>(),
        spread in 0.001f32..1000.0,
    ) {
        let layout = FastScanLayout::new(m, 32).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let table: Vec<f32> = (0..m * 16).map(|_| rng.random_range(0.0..spread)).collect();
        let lut = QuantizedLut::new(&table, layout.m2()).unwrap();
        let n = 64;
        let mut codes = vec![0u8; layout.bytes_for(n)];
        let mut code = vec![0u8; m];
        let mut keys = Vec::new();
        for i in 0..n {
            code.iter_mut().for_each(|c| *c = rng.random_range(0..16));
            layout.write_code(&mut codes, i, &code);
            keys.push(layout.table_key(&codes, i, &table));
        }
        let sums = fastscan::sums_scalar(&layout, &lut, &codes, n);
        let bound = lut.error_bound() * 1.0001 + 1e-4 * (1.0 + keys.iter().fold(0f32, |a, &b| a.max(b.abs())));
        for (&s, &key) in sums.iter().zip(&keys) {
            prop_assert!((lut.key(s) - key).abs() <= bound, "{} vs {key} (bound {bound})", lut.key(s));
            let t = lut.threshold_for(key + 1e-3 * (1.0 + key.abs()));
            prop_assert!(t.is_some_and(|t| s <= t), "sum {s} excluded by {t:?}");
        }
    }
}

#[test]
fn the_index_returns_the_exact_adc_top_k() {
    let (n, nq) = (3_001, 40);
    for metric in [Metric::L2, Metric::InnerProduct] {
        for (d, m, bbs) in [(32, 8, 32), (32, 16, 64), (28, 7, 32), (32, 32, 96)] {
            let base = gaussian(n, d, 1);
            let queries = gaussian(nq, d, 2);
            let q = VectorsRef::new(&queries, d).unwrap();
            let (mut fs, flat) = pair(&base, d, m, metric, bbs);
            for k in [1, 10, 100] {
                let want = flat.search(q, k, &SearchParams::default()).unwrap();
                for level in SimdLevel::ALL {
                    fs.set_kernel_level(Some(level));
                    let got = fs.search(q, k, &SearchParams::default()).unwrap();
                    same_results(&got, &want, &format!("{metric} M{m} bbs{bbs} k{k} {level}"));
                    // One query at a time takes the split-over-threads path.
                    let one = fs
                        .search(q.slice(3..4), k, &SearchParams::default())
                        .unwrap();
                    let want1 = flat
                        .search(q.slice(3..4), k, &SearchParams::default())
                        .unwrap();
                    same_results(&one, &want1, "one query");
                }
            }
        }
    }
}

#[test]
fn filters_range_search_reconstruct_and_removal_match_index_pq() {
    let (d, n) = (16, 2_000);
    let base = gaussian(n, d, 3);
    let queries = gaussian(10, d, 4);
    let q = VectorsRef::new(&queries, d).unwrap();
    let (mut fs, mut flat) = pair(&base, d, 8, Metric::L2, 32);
    let sel = IdSelector::range(100, 900);
    let p = SearchParams::new().with_selector(&sel);
    same_results(
        &fs.search(q, 10, &p).unwrap(),
        &flat.search(q, 10, &p).unwrap(),
        "filter",
    );
    let radius = flat
        .search(q, 20, &SearchParams::default())
        .unwrap()
        .row(0)
        .0[19];
    let got = fs
        .range_search(q, radius, &SearchParams::default())
        .unwrap();
    let want = flat
        .range_search(q, radius, &SearchParams::default())
        .unwrap();
    for i in 0..10 {
        let mut a: Vec<i64> = got.row(i).1.to_vec();
        let mut b: Vec<i64> = want.row(i).1.to_vec();
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b, "range query {i}");
    }
    for id in [0, 31, 32, 1999] {
        assert_eq!(fs.reconstruct(id).unwrap(), flat.reconstruct(id).unwrap());
    }
    let drop = IdSelector::range(10, 50).or(IdSelector::set([1_999, 64, 500]));
    assert_eq!(
        fs.remove_ids(&drop).unwrap(),
        flat.remove_ids(&drop).unwrap()
    );
    assert_eq!(fs.len(), flat.len());
    same_results(
        &fs.search(q, 10, &SearchParams::default()).unwrap(),
        &flat.search(q, 10, &SearchParams::default()).unwrap(),
        "after removal",
    );
    for id in [0, 9, 10, 600, fs.len() as i64 - 1] {
        assert_eq!(fs.reconstruct(id).unwrap(), flat.reconstruct(id).unwrap());
    }
    // Adding after a removal fills the partial block correctly.
    let more = gaussian(77, d, 5);
    fs.add(VectorsRef::new(&more, d).unwrap()).unwrap();
    flat.add(VectorsRef::new(&more, d).unwrap()).unwrap();
    same_results(
        &fs.search(q, 10, &SearchParams::default()).unwrap(),
        &flat.search(q, 10, &SearchParams::default()).unwrap(),
        "after re-adding",
    );
}

#[test]
fn save_and_load_round_trip_and_refuse_bad_states() {
    let (d, n) = (16, 1_000);
    let base = gaussian(n, d, 6);
    let queries = gaussian(5, d, 7);
    let q = VectorsRef::new(&queries, d).unwrap();
    let (fs, _) = pair(&base, d, 4, Metric::L2, 64);
    let bytes = state_bytes(&fs).unwrap();
    let fresh =
        IndexPQFastScan::from_pq(ProductQuantizer::new(d, 4, 4).unwrap(), Metric::L2, 64).unwrap();
    let loaded = load_state_bytes(fresh, &bytes, None).unwrap();
    let a = fs.search(q, 10, &SearchParams::default()).unwrap();
    let b = loaded.search(q, 10, &SearchParams::default()).unwrap();
    assert_eq!(a.labels(), b.labels());
    assert_eq!(a.distances(), b.distances());
    // Another block size, another M: refused.
    let other =
        IndexPQFastScan::from_pq(ProductQuantizer::new(d, 4, 4).unwrap(), Metric::L2, 32).unwrap();
    assert!(load_state_bytes(other, &bytes, None).is_err());
    let other = IndexPQFastScan::new(d, 8, Metric::L2).unwrap();
    assert!(load_state_bytes(other, &bytes, None).is_err());
    // Codes cut short: refused.
    let mut bad = bytes.clone();
    vq_core::testing::patch_section(&mut bad, "codes", 16, |_| {});
    let fresh =
        IndexPQFastScan::from_pq(ProductQuantizer::new(d, 4, 4).unwrap(), Metric::L2, 64).unwrap();
    assert!(matches!(
        load_state_bytes(fresh, &bad, None),
        Err(Error::Format { .. })
    ));
}

#[test]
fn bad_input_is_an_error() {
    let d = 8;
    assert!(
        IndexPQFastScan::from_pq(ProductQuantizer::new(d, 4, 8).unwrap(), Metric::L2, 32).is_err()
    );
    assert!(
        IndexPQFastScan::from_pq(ProductQuantizer::new(d, 4, 4).unwrap(), Metric::L2, 48).is_err()
    );
    assert!(FastScanLayout::new(0, 32).is_err());
    let mut fs = IndexPQFastScan::new(d, 4, Metric::L2).unwrap();
    let x = gaussian(100, d, 8);
    let xv = VectorsRef::new(&x, d).unwrap();
    assert!(matches!(fs.add(xv), Err(Error::NotTrained { .. })));
    fs.train(xv).unwrap();
    fs.add(xv).unwrap();
    let p = SearchParams::default();
    assert!(fs.search(xv.slice(0..1), 0, &p).is_err());
    assert!(fs.search(xv.slice(0..1), 101, &p).is_err());
    let nan = vec![f32::NAN; d];
    assert!(fs.search(VectorsRef::new(&nan, d).unwrap(), 1, &p).is_err());
    assert!(fs.add(VectorsRef::new(&nan, d).unwrap()).is_err());
    let short = vec![0.0; d - 1];
    assert!(
        fs.search(VectorsRef::new(&short, d - 1).unwrap(), 1, &p)
            .is_err()
    );
    assert!(fs.train(xv).is_err(), "training again over stored codes");
    assert!(QuantizedLut::new(&[0.0; 15], 2).is_err());
    assert!(QuantizedLut::new(&[f32::NAN; 16], 2).is_err());
    let lut = QuantizedLut::new(&[1.0; 32], 2).unwrap();
    let layout = FastScanLayout::new(2, 32).unwrap();
    assert!(fastscan::scan(SimdLevel::Scalar, &layout, &[], &[0; 32], 1, &mut Nop).is_err());
    assert!(fastscan::scan(SimdLevel::Scalar, &layout, &[&lut], &[0; 16], 1, &mut Nop).is_err());
}

struct Nop;
impl fastscan::FsCollector for Nop {
    fn threshold(&self, _q: usize) -> u16 {
        0
    }
    fn collect(&mut self, _q: usize, _sb: usize, _mask: u32, _sums: &[u16; SUB_BLOCK]) {}
}
