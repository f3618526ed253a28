//! Regression tests for edge cases an API review found: squared norms past the f32
//! range in batched L2 search, result sizes that cannot be allocated, empty ground
//! truth, repeated result ids in recall, and loads that fail half-way.

#![allow(clippy::unwrap_used)]

use vq_core::eval::{GroundTruth, intersection_recall};
use vq_core::io::Matrix;
use vq_core::knn::{Database, knn};
use vq_core::persist::StateReader;
use vq_core::testing::state_bytes;
use vq_core::topk::merge_results;
use vq_core::{
    Index, IndexFlat, IndexIDMap, IndexIDMap2, IndexRefine, Metric, SearchParams, SearchResults,
    VectorsRef,
};

fn flat(d: usize, data: &[f32]) -> IndexFlat {
    let mut ix = IndexFlat::new(d, Metric::L2).unwrap();
    ix.add(VectorsRef::new(data, d).unwrap()).unwrap();
    ix
}

#[test]
fn batches_find_neighbours_whose_squared_norms_overflow() {
    // ‖x‖² fits an f32 but ‖q‖² + ‖x‖² does not (d = 256), or not even ‖x‖² (d = 4).
    for (d, scale, n, target) in [(4, 1e19f32, 20, 3), (256, 1e18, 10, 5)] {
        let base: Vec<f32> = (0..n * d)
            .map(|i| scale * (1.0 + (i / d) as f32 * 0.01))
            .collect();
        let ix = flat(d, &base);
        let q = &base[target * d..(target + 1) * d];
        let single = ix
            .search(VectorsRef::new(q, d).unwrap(), 2, &SearchParams::default())
            .unwrap();
        // Eight queries take the GEMM path.
        let qs: Vec<f32> = q.repeat(8);
        let batch = ix
            .search(
                VectorsRef::new(&qs, d).unwrap(),
                2,
                &SearchParams::default(),
            )
            .unwrap();
        assert_eq!(single.row(0).1[0], target as i64);
        for i in 0..8 {
            assert_eq!(batch.row(i), single.row(0), "d = {d}, query {i}");
        }
    }
}

#[test]
fn result_sizes_that_cannot_be_allocated_are_errors() {
    let base = [0.0f32, 1.0, 2.0];
    let db = Database::new(VectorsRef::new(&base, 1).unwrap(), None).unwrap();
    let q = VectorsRef::new(&[0.0], 1).unwrap();
    // Past isize::MAX bytes, and below it but past what a 47-bit address space holds
    // (2^44 × 12 bytes: refused even where the kernel overcommits without limit).
    for k in [usize::MAX / 4 + 1, 1 << 44] {
        assert!(knn(&db, q, k, Metric::L2, None).is_err(), "k = {k}");
        let a = SearchResults::new(1, 2, Metric::L2);
        assert!(merge_results(&[&a], k, Metric::L2).is_err(), "k = {k}");
    }
    // A k past the vectors is padding.
    let r = knn(&db, q, 5, Metric::L2, None).unwrap();
    assert_eq!(r.row(0).1, &[0, 1, 2, -1, -1]);
}

#[test]
fn empty_ground_truth_has_no_queries() {
    let gt = GroundTruth::from_results(&SearchResults::new(3, 0, Metric::L2));
    assert_eq!(gt.nq(), 0);
    assert_eq!(GroundTruth::from_ivecs(&Matrix::default()).nq(), 0);
    let res = SearchResults::new(3, 1, Metric::L2);
    assert!(intersection_recall(&res, &gt, 1).is_err());
}

#[test]
fn intersection_recall_counts_each_true_neighbour_once() {
    let gt = GroundTruth::new(vec![5, 6, 7, 1, 2, 3], 3).unwrap();
    let res = SearchResults::from_parts(2, 3, vec![0.0; 6], vec![5, 5, 5, 3, 1, 2]).unwrap();
    let r = intersection_recall(&res, &gt, 3).unwrap();
    assert!((r - 4.0 / 6.0).abs() < 1e-12, "{r}");
}

/// A saved index of 12 two-dimensional vectors with one value of its last section
/// (`value`'s bytes, searched from the end) flipped: the checksum fails there, after
/// the sections before it loaded.
fn corrupt_last(saved: Vec<u8>, value: &[u8]) -> StateReader {
    let pos = saved
        .windows(value.len())
        .rposition(|w| w == value)
        .unwrap();
    let mut bad = saved;
    bad[pos] ^= 0x40;
    StateReader::from_bytes(bad, "corrupt").unwrap()
}

#[test]
fn loads_that_fail_half_way_leave_consistent_indexes() {
    let d = 2;
    let a: Vec<f32> = (0..8).map(|i| i as f32).collect();
    let b: Vec<f32> = (0..24).map(|i| 100.0 + i as f32).collect();
    let (va, vb) = (
        VectorsRef::new(&a, d).unwrap(),
        VectorsRef::new(&b, d).unwrap(),
    );
    let ids: Vec<i64> = (500..512).collect();
    // IDMap: the inner index loads, its ids do not.
    let mut other = IndexIDMap::new(IndexFlat::new(d, Metric::L2).unwrap()).unwrap();
    other.add_with_ids(vb, &ids).unwrap();
    let mut old = IndexIDMap::new(IndexFlat::new(d, Metric::L2).unwrap()).unwrap();
    old.add_with_ids(va, &[1, 2, 3, 4]).unwrap();
    let saved = state_bytes(&other).unwrap();
    assert!(
        old.load_state(&mut corrupt_last(saved.clone(), &500i64.to_le_bytes()))
            .is_err()
    );
    assert_eq!((old.len(), old.id_map().len()), (0, 0));
    // IDMap2 over the same file.
    let mut old2 = IndexIDMap2::new(IndexFlat::new(d, Metric::L2).unwrap()).unwrap();
    old2.add_with_ids(va, &[1, 2, 3, 4]).unwrap();
    assert!(
        old2.load_state(&mut corrupt_last(saved, &500i64.to_le_bytes()))
            .is_err()
    );
    assert_eq!(old2.len(), 0);
    assert!(old2.reconstruct(1).is_err());
    // Refine: the base loads, the refinement does not.
    let mk = || {
        IndexRefine::new(
            Box::new(IndexFlat::new(d, Metric::L2).unwrap()),
            Box::new(IndexFlat::new(d, Metric::L2).unwrap()),
        )
        .unwrap()
    };
    let mut other = mk();
    other.add(vb).unwrap();
    other.set_k_factor(3.0).unwrap();
    let mut old = mk();
    old.add(va).unwrap();
    let saved = state_bytes(&other).unwrap();
    assert!(
        old.load_state(&mut corrupt_last(saved, &123.0f32.to_le_bytes()))
            .is_err()
    );
    assert_eq!((old.base().len(), old.refine().len()), (0, 0));
    assert_eq!(old.k_factor(), 1.0);
}

#[test]
fn batches_report_the_distances_single_queries_do() {
    let data = vq_core::synthetic::SyntheticSpec::new(3000, 32, 40)
        .generate()
        .unwrap();
    for metric in [Metric::InnerProduct, Metric::L2] {
        let mut ix = IndexFlat::new(32, metric).unwrap();
        ix.add(data.base.as_ref()).unwrap();
        let p = SearchParams::default();
        let batch = ix.search(data.queries.as_ref(), 10, &p).unwrap();
        for qi in 0..40 {
            let q = data.queries.as_ref().slice(qi..qi + 1);
            let one = ix.search(q, 10, &p).unwrap();
            let bits = |d: &[f32]| d.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(one.row(0).1, batch.row(qi).1, "{metric}, query {qi}");
            assert_eq!(
                bits(one.row(0).0),
                bits(batch.row(qi).0),
                "{metric}, query {qi}"
            );
        }
    }
}

/// `n` vectors at distance 0.5 to 6 from a centre far from the origin, and a query near
/// the centre: the GEMM expansion's error (∝ the norms) exceeds the gaps.
fn far_from_the_origin(n: usize, d: usize, centre: f32, seed: u64) -> (Vec<f32>, Vec<f32>) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut base = Vec::with_capacity(n * d);
    for _ in 0..n {
        let u: Vec<f32> = (0..d).map(|_| rng.random::<f32>() - 0.5).collect();
        let norm = u.iter().map(|v| v * v).sum::<f32>().sqrt();
        let delta = 0.5 + 5.5 * rng.random::<f32>();
        base.extend(u.iter().map(|v| centre + delta * v / norm));
    }
    let q: Vec<f32> = (0..d).map(|_| centre + rng.random::<f32>() * 0.1).collect();
    (base, q)
}

#[test]
fn batches_are_exact_far_from_the_origin() {
    let (d, k) = (16, 10);
    for (seed, centre) in [(7, 1000.0), (8, 300.0), (9, 1e4), (10, 100.0)] {
        let (base, q) = far_from_the_origin(300, d, centre, seed);
        let flat = flat(d, &base);
        let p = SearchParams::default();
        let one = flat.search(VectorsRef::new(&q, d).unwrap(), k, &p).unwrap();
        let eight = flat
            .search(VectorsRef::new(&q.repeat(8), d).unwrap(), k, &p)
            .unwrap();
        let oracle = vq_core::testing::brute_force_knn(
            VectorsRef::new(&base, d).unwrap(),
            VectorsRef::new(&q, d).unwrap(),
            k,
            Metric::L2,
        );
        assert_eq!(one.row(0).1, oracle.row(0).1, "centre {centre}");
        for i in 0..8 {
            assert_eq!(eight.row(i), one.row(0), "centre {centre}, query {i}");
        }
    }
    // Sixteen vectors at the same kernel distance: ties by the smaller id in a batch too.
    let (c, t) = (311.1411f32, 0.25f32);
    let base: Vec<f32> = (0..d)
        .flat_map(|j| (0..d).map(move |i| if i == j { c + t } else { c }))
        .collect();
    let flat = flat(d, &base);
    let q = vec![c; d];
    let p = SearchParams::default();
    let all = flat.search(VectorsRef::new(&q, d).unwrap(), d, &p).unwrap();
    assert!(all.row(0).0.iter().all(|&v| v == all.row(0).0[0]));
    let eight = flat
        .search(VectorsRef::new(&q.repeat(8), d).unwrap(), 3, &p)
        .unwrap();
    assert_eq!(eight.row(0).1, &[0, 1, 2]);
}

/// Batched inner-product k-NN (GEMM tiles, 8+ queries) returns what one query at a time
/// does, where the similarities are large and their gaps smaller than the GEMM sums'
/// rounding (vectors far from the origin, close to each other).
#[test]
fn batched_inner_product_knn_equals_single_queries() {
    use rand::{Rng, SeedableRng};
    let (d, k) = (32, 10);
    for (seed, centre) in [(21, 1000.0f32), (22, 3000.0), (23, 1e4)] {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let base: Vec<f32> = (0..2000 * d)
            .map(|_| centre + rng.random::<f32>() * 0.01)
            .collect();
        let qs: Vec<f32> = (0..16 * d)
            .map(|_| 1.0 + rng.random::<f32>() * 0.01)
            .collect();
        let mut flat = IndexFlat::new(d, Metric::InnerProduct).unwrap();
        flat.add(VectorsRef::new(&base, d).unwrap()).unwrap();
        let q = VectorsRef::new(&qs, d).unwrap();
        let p = SearchParams::default();
        let all = flat.search(q, k, &p).unwrap();
        for i in 0..q.len() {
            let one = flat.search(q.slice(i..i + 1), k, &p).unwrap();
            assert_eq!(all.row(i), one.row(0), "centre {centre}, query {i}");
        }
    }
}

/// Vectors so small that their products fall below the normal f32 range: batched k-NN
/// and range search still equal one query at a time (the error bounds allow for the
/// rounding of subnormal results, which is absolute, not relative).
#[test]
fn batches_equal_single_queries_below_the_normal_range() {
    use rand::{Rng, SeedableRng};
    for metric in [Metric::L2, Metric::InnerProduct] {
        for d in [2usize, 16, 64] {
            for scale in [1e-19f32, 1e-20, 1e-21, 1e-22] {
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(d as u64);
                let mut draw = |n: usize| -> Vec<f32> {
                    (0..n * d)
                        .map(|_| (rng.random::<f32>() - 0.5) * scale)
                        .collect()
                };
                let (base, qs) = (draw(100), draw(10));
                let mut flat = IndexFlat::new(d, metric).unwrap();
                flat.add(VectorsRef::new(&base, d).unwrap()).unwrap();
                let q = VectorsRef::new(&qs, d).unwrap();
                let p = SearchParams::default();
                let what = format!("{metric} d={d} scale={scale}");
                let knn = flat.search(q, 60, &p).unwrap();
                for i in 0..q.len() {
                    let one = flat.search(q.slice(i..i + 1), 60, &p).unwrap();
                    assert_eq!(knn.row(i), one.row(0), "{what}: k-NN query {i}");
                }
                for radius in [knn.row(0).0[2], knn.row(0).0[30], knn.row(0).0[59]] {
                    let all = flat.range_search(q, radius, &p).unwrap();
                    for i in 0..q.len() {
                        let one = flat.range_search(q.slice(i..i + 1), radius, &p).unwrap();
                        assert_eq!(all.row(i), one.row(0), "{what}: radius {radius} query {i}");
                    }
                }
            }
        }
    }
}

/// Batched inner-product search equals one query at a time when squared norms leave
/// the f32 range while the products do not (tiny queries against large vectors: the
/// error bound is taken in f64), when the products may overflow (such queries are
/// searched with the kernels), and when an overflowing product is NaN (no result, as
/// for a single query). A similarity of zero is +0 either way. From a review.
#[test]
fn batched_inner_products_at_the_ends_of_the_f32_range() {
    use rand::{Rng, SeedableRng};
    let d = 32;
    for (b, qsc) in [
        (1.0f32, 1.0f32),
        (2f32.powi(50), 2f32.powi(-83)),
        (2f32.powi(-90), 1.0),
        (2f32.powi(60), 2f32.powi(-83)),
    ] {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(21);
        let base: Vec<f32> = (0..2000 * d)
            .map(|_| (1000.0 + rng.random::<f32>() * 0.01) * b)
            .collect();
        let qs: Vec<f32> = (0..16 * d)
            .map(|_| (1.0 + rng.random::<f32>() * 0.01) * qsc)
            .collect();
        let mut flat = IndexFlat::new(d, Metric::InnerProduct).unwrap();
        flat.add(VectorsRef::new(&base, d).unwrap()).unwrap();
        let q = VectorsRef::new(&qs, d).unwrap();
        let p = SearchParams::default();
        let all = flat.search(q, 10, &p).unwrap();
        for i in 0..q.len() {
            let one = flat.search(q.slice(i..i + 1), 10, &p).unwrap();
            assert_eq!(all.row(i), one.row(0), "scale {b:e}/{qsc:e} query {i}");
        }
        let radius = flat.search(q.slice(0..1), 31, &p).unwrap().row(0).0[30];
        let rall = flat.range_search(q, radius, &p).unwrap();
        for i in 0..q.len() {
            let one = flat.range_search(q.slice(i..i + 1), radius, &p).unwrap();
            assert_eq!(
                rall.row(i),
                one.row(0),
                "range, scale {b:e}/{qsc:e} query {i}"
            );
        }
    }
    // [MAX, -MAX] · [2, 2] = inf - inf = NaN: never a result.
    let mut base = Vec::new();
    for _ in 0..9 {
        base.extend_from_slice(&[f32::MAX, -f32::MAX]);
    }
    base.extend_from_slice(&[1.0, 1.0]);
    let mut flat = IndexFlat::new(2, Metric::InnerProduct).unwrap();
    flat.add(VectorsRef::new(&base, 2).unwrap()).unwrap();
    let qs = vec![2.0f32; 16];
    let q = VectorsRef::new(&qs, 2).unwrap();
    let p = SearchParams::default();
    let one = flat.search(q.slice(0..1), 1, &p).unwrap();
    assert_eq!(one.row(0), (&[4.0f32][..], &[9][..]));
    let batch = flat.search(q, 1, &p).unwrap();
    for i in 0..8 {
        assert_eq!(batch.row(i), one.row(0), "query {i}");
    }
    // Zero similarity: +0.0 from a single query and from a batch.
    let mut flat = IndexFlat::new(1, Metric::InnerProduct).unwrap();
    flat.add(VectorsRef::new(&[0.0, 1.0], 1).unwrap()).unwrap();
    let qs = [1.0f32; 8];
    let q = VectorsRef::new(&qs, 1).unwrap();
    let one = flat.search(q.slice(0..1), 2, &p).unwrap();
    let batch = flat.search(q, 2, &p).unwrap();
    assert_eq!(one.row(0).0[1].to_bits(), 0.0f32.to_bits());
    assert_eq!(batch.row(0).0[1].to_bits(), 0.0f32.to_bits());
}

/// Batched range search (GEMM tiles, 8+ queries) reports what one query at a time does
/// (the kernels' hits and distances): far from the origin, where the GEMM keys' error
/// exceeds the gaps, on ordinary data, for both metrics, through a selector, and with
/// norms past the f32 range (the kernels then search the batch).
#[test]
fn batched_range_search_equals_single_queries() {
    use rand::{Rng, SeedableRng};
    let d = 16;
    let mut cases: Vec<(Vec<f32>, Vec<f32>, Metric)> = Vec::new();
    for (seed, centre) in [(11, 1000.0f32), (12, 1e4), (13, 0.0)] {
        let (base, q) = far_from_the_origin(400, d, centre, seed);
        // Twelve queries around the first.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let qs: Vec<f32> = (0..12)
            .flat_map(|_| {
                q.iter()
                    .map(|v| v + rng.random::<f32>() * 0.5)
                    .collect::<Vec<_>>()
            })
            .collect();
        cases.push((base.clone(), qs.clone(), Metric::L2));
        cases.push((base, qs, Metric::InnerProduct));
    }
    // Squared norms past f32::MAX / 4.
    let big: Vec<f32> = (0..200 * d)
        .map(|i| 5e17 * (1.0 + (i % 7) as f32))
        .collect();
    cases.push((big.clone(), big[..8 * d].to_vec(), Metric::L2));
    for (ci, (base, qs, metric)) in cases.iter().enumerate() {
        let mut flat = IndexFlat::new(d, *metric).unwrap();
        flat.add(VectorsRef::new(base, d).unwrap()).unwrap();
        let q = VectorsRef::new(qs, d).unwrap();
        let p = SearchParams::default();
        // Radii at the 5th and 60th neighbour of the first query.
        let knn = flat.search(q.slice(0..1), 60, &p).unwrap();
        let sel = vq_core::IdSelector::range(50, 300);
        let mut found = 0;
        for radius in [knn.row(0).0[4], knn.row(0).0[59]] {
            for selector in [None, Some(&sel as &dyn vq_core::IdFilter)] {
                let mut p = SearchParams::default();
                p.selector = selector;
                let all = flat.range_search(q, radius, &p).unwrap();
                for i in 0..q.len() {
                    let one = flat.range_search(q.slice(i..i + 1), radius, &p).unwrap();
                    assert_eq!(
                        all.row(i),
                        one.row(0),
                        "case {ci} radius {radius} query {i}"
                    );
                    found += one.row(0).1.len();
                }
            }
        }
        assert!(found > 0, "case {ci}: radii with hits");
    }
}

#[test]
fn ties_are_broken_by_id_through_id_maps_and_signed_zeros() {
    let d = 2;
    let x = [1.0f32, 1.0, 1.0, 1.0, 2.0, 2.0];
    let mut m = IndexIDMap::new(IndexFlat::new(d, Metric::L2).unwrap()).unwrap();
    m.add_with_ids(VectorsRef::new(&x, d).unwrap(), &[9, 3, 5])
        .unwrap();
    let q = VectorsRef::new(&[1.0, 1.0], d).unwrap();
    let p = SearchParams::default();
    // Within the results, ties by id (which tied vectors reach the k-th place follows
    // the inner index's positions).
    assert_eq!(m.search(q, 3, &p).unwrap().row(0).1, &[3, 9, 5]);
    assert_eq!(m.search(q, 2, &p).unwrap().row(0).1, &[3, 9]);
    let r = m.range_search(q, 10.0, &p).unwrap();
    assert_eq!(r.row(0), (&[0.0, 0.0, 2.0][..], &[3, 9, 5][..]));
    // −0 and +0 are the same key.
    for k in [2, 40] {
        let mut top = vq_core::topk::TopK::new(k);
        top.push(0.0, 3);
        top.push(-0.0, 5);
        let v = top.to_sorted_vec();
        assert_eq!(v.iter().map(|e| e.1).collect::<Vec<_>>(), [3, 5], "k = {k}");
    }
}
