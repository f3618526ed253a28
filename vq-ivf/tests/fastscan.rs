//! `IndexIvfPqFastScan` against `IndexIvf` with the same 4-bit PQ encoding: trained the
//! same way, they must return the same neighbours (the exact ADC top-k of the probed
//! lists) with the same distances, by residual or not, L2 or inner product, with any
//! coarse quantizer.
#![allow(clippy::unwrap_used)]

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vq_core::distance::SimdLevel;
use vq_core::testing::{load_state_bytes, state_bytes};
use vq_core::{
    Error, IdSelector, Index, IndexFlat, Metric, SearchParams, SearchResults, VectorsRef,
};
use vq_ivf::{CoarseQuantizer, IndexIvf, IndexIvfPqFastScan, IvfPq, MultiIndexQuantizer};
use vq_pq::ProductQuantizer;

fn clustered(n: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let centres: Vec<f32> = (0..20 * d)
        .map(|_| rng.random_range(-3.0f32..3.0))
        .collect();
    (0..n)
        .flat_map(|_| {
            let c = rng.random_range(0..20);
            (0..d)
                .map(|j| centres[c * d + j] + rng.random_range(-1.0f32..1.0))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn same_results(got: &SearchResults, want: &SearchResults, what: &str) {
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

/// Builds both indexes over clones of `quantizer` and adds `base`.
fn pair<Q: CoarseQuantizer + Clone>(
    quantizer: Q,
    nlist: usize,
    base: VectorsRef<'_>,
    m: usize,
    by_residual: bool,
    metric: Metric,
) -> (IndexIvfPqFastScan<Q>, IndexIvf<Q, IvfPq>) {
    let d = base.dim();
    let mut fs = IndexIvfPqFastScan::new(
        quantizer.clone(),
        nlist,
        ProductQuantizer::new(d, m, 4).unwrap(),
        by_residual,
        metric,
        32,
    )
    .unwrap();
    let mut ivf = IndexIvf::new(
        quantizer,
        nlist,
        IvfPq::new(ProductQuantizer::new(d, m, 4).unwrap(), by_residual),
        metric,
    )
    .unwrap();
    fs.train(base).unwrap();
    ivf.train(base).unwrap();
    fs.add(base).unwrap();
    ivf.add(base).unwrap();
    (fs, ivf)
}

#[test]
fn results_equal_ivf_pq_with_4_bit_codes() {
    let (d, n) = (16, 4_000);
    let base = clustered(n, d, 1);
    let queries = clustered(30, d, 2);
    let x = VectorsRef::new(&base, d).unwrap();
    let q = VectorsRef::new(&queries, d).unwrap();
    for metric in [Metric::L2, Metric::InnerProduct] {
        for by_residual in [false, true] {
            let (mut fs, ivf) = pair(
                IndexFlat::new(d, metric).unwrap(),
                32,
                x,
                8,
                by_residual,
                metric,
            );
            assert_eq!(fs.len(), n);
            for nprobe in [1, 4, 32] {
                for k in [1, 10, 50] {
                    let p = SearchParams::new().with_nprobe(nprobe);
                    let want = ivf.search(q, k, &p).unwrap();
                    for level in SimdLevel::ALL {
                        fs.set_kernel_level(Some(level));
                        let what = format!(
                            "{metric} residual={by_residual} nprobe={nprobe} k={k} {level}"
                        );
                        same_results(&fs.search(q, k, &p).unwrap(), &want, &what);
                    }
                    // One query: the probes are split over threads.
                    let one = fs.search(q.slice(0..1), k, &p).unwrap();
                    same_results(
                        &one,
                        &ivf.search(q.slice(0..1), k, &p).unwrap(),
                        "one query",
                    );
                }
            }
        }
    }
}

#[test]
fn a_multi_index_quantizer_and_ids_filters_removal_reconstruction() {
    let (d, n) = (16, 3_000);
    let base = clustered(n, d, 3);
    let queries = clustered(20, d, 4);
    let x = VectorsRef::new(&base, d).unwrap();
    let q = VectorsRef::new(&queries, d).unwrap();
    let (mut fs, mut ivf) = pair(
        MultiIndexQuantizer::new(d, 3).unwrap(),
        64,
        x,
        8,
        true,
        Metric::L2,
    );
    let p = SearchParams::new().with_nprobe(16);
    same_results(
        &fs.search(q, 10, &p).unwrap(),
        &ivf.search(q, 10, &p).unwrap(),
        "IMI",
    );
    let sel = IdSelector::range(500, 2_500);
    let pf = SearchParams::new().with_nprobe(16).with_selector(&sel);
    same_results(
        &fs.search(q, 10, &pf).unwrap(),
        &ivf.search(q, 10, &pf).unwrap(),
        "filter",
    );
    ivf.make_direct_map(true).unwrap();
    for id in [0, 17, 2_999] {
        let a = fs.reconstruct(id).unwrap();
        let b = ivf.reconstruct(id).unwrap();
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-5, "reconstruct {id}");
        }
    }
    let drop = IdSelector::range(100, 700);
    assert_eq!(fs.remove_ids(&drop).unwrap(), 600);
    ivf.remove_ids(&drop).unwrap();
    assert_eq!(fs.len(), n - 600);
    same_results(
        &fs.search(q, 10, &p).unwrap(),
        &ivf.search(q, 10, &p).unwrap(),
        "after removal",
    );
    assert!(matches!(fs.reconstruct(150), Err(Error::IdNotFound { .. })));
    // Caller ids, appended to partly filled blocks.
    let more = clustered(50, d, 5);
    let ids: Vec<i64> = (0..50).map(|i| 10_000 + i).collect();
    fs.add_with_ids(VectorsRef::new(&more, d).unwrap(), &ids)
        .unwrap();
    ivf.add_with_ids(VectorsRef::new(&more, d).unwrap(), &ids)
        .unwrap();
    same_results(
        &fs.search(q, 20, &p).unwrap(),
        &ivf.search(q, 20, &p).unwrap(),
        "after adding ids",
    );
}

/// Long lists and many probes per query: a batch is scanned list by list, each list's
/// codes once for a block of the queries that probe it (Faiss's `search_implem_12`).
/// Exactly scored, the results are `IndexIvf`'s; approximate (what `RFlat` asks), they
/// are those of the query-by-query scan (forced by a `max_codes` budget larger than the
/// index) id for id and bit for bit, with and without a filter, ties at the k-th sum
/// included.
#[test]
fn list_by_list_search_equals_query_by_query() {
    // Two threads whatever the machine: chunks of 64 of the 300 queries, so that each
    // of the 8 lists is probed by enough of a chunk's queries to go list by list.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    pool.install(|| {
        let (d, n) = (16, 48_000);
        let base = clustered(n, d, 21);
        let queries = clustered(300, d, 22);
        let x = VectorsRef::new(&base, d).unwrap();
        let q = VectorsRef::new(&queries, d).unwrap();
        let sel = IdSelector::range(0, 30_000);
        for metric in [Metric::L2, Metric::InnerProduct] {
            let (fs, ivf) = pair(IndexFlat::new(d, metric).unwrap(), 8, x, 8, false, metric);
            for nprobe in [6, 8] {
                let p = SearchParams::new().with_nprobe(nprobe);
                let mut one_by_one = p.clone();
                one_by_one.max_codes = Some(n + 1);
                let what = format!("{metric} nprobe={nprobe}");
                let exact = fs.search(q, 10, &p).unwrap();
                same_results(&exact, &ivf.search(q, 10, &p).unwrap(), &what);
                let want = fs.search(q, 10, &one_by_one).unwrap();
                for qi in 0..q.len() {
                    assert_eq!(exact.row(qi), want.row(qi), "{what} exact: query {qi}");
                }
                for filter in [None, Some(&sel)] {
                    let (mut a, mut b) = (
                        p.clone().with_approximate(true),
                        one_by_one.clone().with_approximate(true),
                    );
                    if let Some(f) = filter {
                        a = a.with_selector(f);
                        b = b.with_selector(f);
                    }
                    let (got, want) = (
                        fs.search(q, 100, &a).unwrap(),
                        fs.search(q, 100, &b).unwrap(),
                    );
                    for qi in 0..q.len() {
                        assert_eq!(
                            got.row(qi),
                            want.row(qi),
                            "{what} filter={}: query {qi}",
                            filter.is_some()
                        );
                    }
                }
            }
        }
    });
}

/// With `approximate` (what `IndexRefine` asks of its base), the k smallest quantised
/// sums come back with their estimated distances: nearly the exact top-k, each distance
/// close to its exact one, and a re-ranking on top still finds the exact neighbours.
#[test]
fn approximate_candidates_are_nearly_the_exact_ones() {
    let (d, n) = (16, 4_000);
    let base = clustered(n, d, 8);
    let queries = clustered(40, d, 9);
    let x = VectorsRef::new(&base, d).unwrap();
    let q = VectorsRef::new(&queries, d).unwrap();
    for metric in [Metric::L2, Metric::InnerProduct] {
        let (fs, ivf) = pair(IndexFlat::new(d, metric).unwrap(), 32, x, 8, false, metric);
        let k = 20;
        for nprobe in [1, 8] {
            let p = SearchParams::new().with_nprobe(nprobe);
            let exact = ivf.search(q, k, &p).unwrap();
            let all = ivf.search(q, 400, &p).unwrap();
            let sel = IdSelector::range(0, 3_000);
            for filter in [None, Some(&sel)] {
                let mut pa = p.clone().with_approximate(true);
                if let Some(f) = filter {
                    pa = pa.with_selector(f);
                }
                let got = fs.search(q, k, &pa).unwrap();
                let mut hits = 0;
                for qi in 0..q.len() {
                    let (gd, gl) = got.row(qi);
                    let (ad, al) = all.row(qi);
                    let spread = (ad[k] - ad[0]).abs().max(1e-3);
                    // Ranked by estimate, ties by id, like every result.
                    for i in 1..gd.len() {
                        let (a, b) = (metric.to_key(gd[i - 1]), metric.to_key(gd[i]));
                        assert!(
                            a < b || (a == b && gl[i - 1] < gl[i]),
                            "{metric} nprobe={nprobe}: out of order at {i}"
                        );
                    }
                    let mut seen = std::collections::HashSet::new();
                    for (&dist, &id) in gd.iter().zip(gl) {
                        assert!(
                            id >= 0 && seen.insert(id),
                            "{metric}: id {id} twice or padding"
                        );
                        if filter.is_some() {
                            assert!(id < 3_000, "{metric}: filtered id {id}");
                        }
                        // Its exact ADC distance, from the exact ranking of the probed lists.
                        let pos = al.iter().position(|&l| l == id).unwrap();
                        assert!(
                            (ad[pos] - dist).abs() <= 0.5 * spread,
                            "{metric} nprobe={nprobe}: id {id} estimate {dist} vs exact {}",
                            ad[pos]
                        );
                    }
                    if filter.is_none() {
                        hits += exact.row(qi).1.iter().filter(|l| gl.contains(l)).count();
                    }
                }
                if filter.is_none() {
                    let recall = hits as f64 / (k * q.len()) as f64;
                    assert!(recall >= 0.9, "{metric} nprobe={nprobe}: overlap {recall}");
                }
            }
        }
    }
}

#[test]
fn save_load_round_trip_and_bad_states() {
    let (d, n) = (16, 2_000);
    let base = clustered(n, d, 6);
    let queries = clustered(10, d, 7);
    let x = VectorsRef::new(&base, d).unwrap();
    let q = VectorsRef::new(&queries, d).unwrap();
    let (fs, _) = pair(
        IndexFlat::new(d, Metric::L2).unwrap(),
        16,
        x,
        4,
        true,
        Metric::L2,
    );
    let bytes = state_bytes(&fs).unwrap();
    let fresh = || IndexIvfPqFastScan::new_flat(d, 16, 4, true, Metric::L2).unwrap();
    let back = load_state_bytes(fresh(), &bytes, None).unwrap();
    let p = SearchParams::new().with_nprobe(4);
    let (a, b) = (
        fs.search(q, 10, &p).unwrap(),
        back.search(q, 10, &p).unwrap(),
    );
    assert_eq!(a.labels(), b.labels());
    assert_eq!(a.distances(), b.distances());
    for (name, shrink) in [("lists/codes", 16), ("lists/ids", 8), ("lists/sizes", 8)] {
        let mut bad = bytes.clone();
        vq_core::testing::patch_section(&mut bad, name, shrink, |_| {});
        assert!(load_state_bytes(fresh(), &bad, None).is_err(), "{name}");
    }
    let other = IndexIvfPqFastScan::new(
        IndexFlat::new(d, Metric::L2).unwrap(),
        16,
        ProductQuantizer::new(d, 4, 4).unwrap(),
        true,
        Metric::L2,
        64,
    )
    .unwrap();
    assert!(
        load_state_bytes(other, &bytes, None).is_err(),
        "another block size"
    );
}

#[test]
fn bad_input_is_an_error() {
    let d = 8;
    let flat = || IndexFlat::new(d, Metric::L2).unwrap();
    assert!(
        IndexIvfPqFastScan::new(
            flat(),
            4,
            ProductQuantizer::new(d, 4, 8).unwrap(),
            false,
            Metric::L2,
            32
        )
        .is_err()
    );
    assert!(
        IndexIvfPqFastScan::new(
            flat(),
            4,
            ProductQuantizer::new(d, 4, 4).unwrap(),
            false,
            Metric::L2,
            40
        )
        .is_err()
    );
    let mut fs = IndexIvfPqFastScan::new_flat(d, 4, 4, false, Metric::L2).unwrap();
    let x = clustered(200, d, 8);
    let xv = VectorsRef::new(&x, d).unwrap();
    assert!(matches!(fs.add(xv), Err(Error::NotTrained { .. })));
    fs.train(xv).unwrap();
    fs.add(xv).unwrap();
    assert!(fs.train(xv).is_err());
    let p = SearchParams::default();
    assert!(fs.search(xv.slice(0..1), 0, &p).is_err());
    assert!(fs.search(xv.slice(0..1), 201, &p).is_err());
    assert!(
        fs.search(xv.slice(0..1), 1, &SearchParams::new().with_nprobe(0))
            .is_err()
    );
    let nan = vec![f32::NAN; d];
    assert!(fs.add(VectorsRef::new(&nan, d).unwrap()).is_err());
    assert!(fs.add_with_ids(xv, &[1, 2]).is_err());
    assert!(fs.set_build_param("lut_bits", "5").is_err());
    fs.set_build_param("lut_bits", "6").unwrap();
    assert_eq!(fs.len(), 200, "failed adds left nothing behind");
}

/// Range search: the hits of `IndexIvf` with the same 4-bit PQ (its ADC distances within
/// the radius, over the probed lists), by residual or not, L2 or inner product, at every
/// kernel level, through a selector.
#[test]
fn range_search_equals_ivf_pq_with_4_bit_codes() {
    let (d, n) = (16, 3_000);
    let base = clustered(n, d, 3);
    let queries = clustered(20, d, 4);
    let x = VectorsRef::new(&base, d).unwrap();
    let q = VectorsRef::new(&queries, d).unwrap();
    let sel = IdSelector::range(700, 2_100);
    for metric in [Metric::L2, Metric::InnerProduct] {
        for by_residual in [false, true] {
            let (mut fs, ivf) = pair(
                IndexFlat::new(d, metric).unwrap(),
                16,
                x,
                8,
                by_residual,
                metric,
            );
            for nprobe in [1, 5, 16] {
                let mut p = SearchParams::new().with_nprobe(nprobe);
                // A radius around each metric's 30th neighbour of the first query.
                let radius = ivf.search(q, 30, &p).unwrap().row(0).0[29];
                for filtered in [false, true] {
                    if filtered {
                        p.selector = Some(&sel);
                    }
                    let want = ivf.range_search(q, radius, &p).unwrap();
                    assert!(!want.labels().is_empty());
                    for level in SimdLevel::ALL {
                        fs.set_kernel_level(Some(level));
                        let what = format!(
                            "{metric} residual={by_residual} nprobe={nprobe} filtered={filtered} {level}"
                        );
                        let got = fs.range_search(q, radius, &p).unwrap();
                        same_range(&got, &want, radius, &what);
                    }
                }
            }
        }
    }
    // An empty index and no queries.
    let mut empty = IndexIvfPqFastScan::new_flat(d, 4, 4, false, Metric::L2).unwrap();
    assert!(matches!(
        empty.range_search(q, 1.0, &SearchParams::default()),
        Err(Error::NotTrained { .. })
    ));
    empty.train(x).unwrap();
    let r = empty
        .range_search(q, 1e9, &SearchParams::default())
        .unwrap();
    assert_eq!((r.nq(), r.labels().len()), (20, 0));
    let r = empty
        .range_search(q.slice(0..0), 1.0, &SearchParams::default())
        .unwrap();
    assert_eq!(r.nq(), 0);
    assert!(
        empty
            .range_search(q, f32::NAN, &SearchParams::default())
            .is_err()
    );
}

/// The same hits with the same distances, up to float rounding: a hit only one side
/// reports must lie on the radius.
fn same_range(
    got: &vq_core::RangeSearchResults,
    want: &vq_core::RangeSearchResults,
    radius: f32,
    what: &str,
) {
    assert_eq!(got.nq(), want.nq(), "{what}");
    for qi in 0..want.nq() {
        let (gd, gl) = got.row(qi);
        let (wd, wl) = want.row(qi);
        let tol = |v: f32| 1e-4 * (1.0 + v.abs());
        for (&d, &l) in gd.iter().zip(gl) {
            match wl.iter().position(|&w| w == l) {
                Some(p) => assert!(
                    (wd[p] - d).abs() <= tol(d),
                    "{what}: query {qi} id {l}: {d} vs {}",
                    wd[p]
                ),
                None => assert!(
                    (d - radius).abs() <= tol(radius),
                    "{what}: query {qi}: id {l} at {d} is not a hit (radius {radius})"
                ),
            }
        }
        for (&d, &l) in wd.iter().zip(wl) {
            assert!(
                gl.contains(&l) || (d - radius).abs() <= tol(radius),
                "{what}: query {qi}: hit {l} at {d} missing (radius {radius})"
            );
        }
    }
}
