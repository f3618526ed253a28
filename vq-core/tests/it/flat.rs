use proptest::prelude::*;
use vq_core::synthetic::SyntheticSpec;
use vq_core::testing::{brute_force_knn, brute_force_range, check_knn, dataset};
use vq_core::{
    Error, IdSelector, Index, IndexFlat, IndexIDMap, IndexIDMap2, Metric, SearchParams, VectorsRef,
};

fn metric() -> impl Strategy<Value = Metric> {
    prop_oneof![Just(Metric::L2), Just(Metric::InnerProduct)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    // Query counts on both sides of the GEMM threshold, dimensions with odd tails.
    #[test]
    fn flat_equals_brute_force(
        (base, queries) in dataset(1..=40, 1..400, 1..40),
        metric in metric(),
        k in 1usize..20,
    ) {
        let k = k.min(base.len());
        let mut index = IndexFlat::new(base.dim(), metric).unwrap();
        index.add(base.as_ref()).unwrap();
        let got = index.search(queries.as_ref(), k, &SearchParams::default()).unwrap();
        let want = brute_force_knn(base.as_ref(), queries.as_ref(), k, metric);
        check_knn(&got, &want, base.as_ref(), queries.as_ref(), metric, 1e-5)
            .map_err(TestCaseError::fail)?;
    }

    #[test]
    fn flat_with_selector_equals_filtered_brute_force(
        (base, queries) in dataset(1..=16, 2..300, 1..30),
        metric in metric(),
        modulo in 2i64..5,
    ) {
        let mut index = IndexFlat::new(base.dim(), metric).unwrap();
        index.add(base.as_ref()).unwrap();
        let sel = move |id: i64| id % modulo == 0;
        let k = 5.min(base.len());
        let params = SearchParams::default().with_selector(&sel);
        let got = index.search(queries.as_ref(), k, &params).unwrap();
        // Oracle over the kept vectors, ids mapped back.
        let kept: Vec<usize> = (0..base.len()).filter(|&i| sel(i as i64)).collect();
        let sub: Vec<f32> = kept.iter().flat_map(|&i| base.row(i).to_vec()).collect();
        let sub = VectorsRef::new(&sub, base.dim()).unwrap();
        let want = brute_force_knn(sub, queries.as_ref(), k, metric);
        let sq = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>();
        let max_base = base.as_ref().rows().map(sq).fold(0.0, f64::max);
        for qi in 0..queries.len() {
            let (gd, gl) = got.row(qi);
            let (wd, wl) = want.row(qi);
            // Rounding scales with the magnitudes involved, not with the (cancelling) result.
            let scale = 1.0 + sq(queries.row(qi)) + max_base;
            for j in 0..k {
                if wl[j] < 0 {
                    prop_assert_eq!(gl[j], -1);
                    continue;
                }
                prop_assert!(gl[j] >= 0 && sel(gl[j]));
                let tol = 1e-5 * scale;
                prop_assert!(((gd[j] - wd[j]).abs() as f64) <= tol, "{} vs {}", gd[j], wd[j]);
                let _ = kept[wl[j] as usize];
            }
        }
    }

    #[test]
    fn range_search_equals_filtered_brute_force(
        (base, queries) in dataset(1..=12, 1..300, 1..10),
        metric in metric(),
        radius in 0.0f32..40_000.0,
    ) {
        let mut index = IndexFlat::new(base.dim(), metric).unwrap();
        index.add(base.as_ref()).unwrap();
        let radius = if metric == Metric::L2 { radius } else { radius - 20_000.0 };
        let got = index.range_search(queries.as_ref(), radius, &SearchParams::default()).unwrap();
        let want = brute_force_range(base.as_ref(), queries.as_ref(), radius, metric);
        prop_assert_eq!(got.nq(), want.nq());
        for qi in 0..got.nq() {
            let (gd, gl) = got.row(qi);
            let (_, wl) = want.row(qi);
            let mut g: Vec<i64> = gl.to_vec();
            let mut w: Vec<i64> = wl.to_vec();
            g.sort_unstable();
            w.sort_unstable();
            // f32 kernels and the f64 oracle may disagree only for points on the boundary.
            let boundary = |id: i64| {
                let d = vq_core::testing::exact_distance(metric, queries.row(qi), base.row(id as usize));
                (d - radius as f64).abs() <= 1e-4 * (1.0 + d.abs())
            };
            for id in g.iter().filter(|id| w.binary_search(id).is_err()) {
                prop_assert!(boundary(*id), "extra id {id}");
            }
            for id in w.iter().filter(|id| g.binary_search(id).is_err()) {
                prop_assert!(boundary(*id), "missing id {id}");
            }
            // Sorted best first.
            for p in gd.windows(2) {
                prop_assert!(!metric.is_better(p[1], p[0]));
            }
        }
    }

    #[test]
    fn idmap_returns_given_ids(
        (base, queries) in dataset(1..=16, 1..200, 1..20),
        metric in metric(),
        offset in -1000i64..1000,
    ) {
        let ids: Vec<i64> = (0..base.len() as i64).map(|i| 3 * i + offset.abs() + 1).collect();
        let mut plain = IndexFlat::new(base.dim(), metric).unwrap();
        plain.add(base.as_ref()).unwrap();
        let mut mapped = IndexIDMap2::new(IndexFlat::new(base.dim(), metric).unwrap()).unwrap();
        mapped.add_with_ids(base.as_ref(), &ids).unwrap();
        let k = 4.min(base.len());
        let a = plain.search(queries.as_ref(), k, &SearchParams::default()).unwrap();
        let b = mapped.search(queries.as_ref(), k, &SearchParams::default()).unwrap();
        prop_assert_eq!(a.distances(), b.distances());
        for (x, y) in a.labels().iter().zip(b.labels()) {
            prop_assert_eq!(ids[*x as usize], *y);
        }
        for (i, &id) in ids.iter().enumerate() {
            prop_assert_eq!(mapped.reconstruct(id).unwrap(), base.row(i).to_vec());
        }
    }
}

#[test]
fn large_batches_and_single_queries_agree() {
    // Exercises the GEMM tiles (many queries, several database blocks) and the
    // per-query path (one query, split over the database) on clustered data.
    let data = SyntheticSpec::new(20_000, 50, 300)
        .with_seed(5)
        .generate()
        .unwrap();
    for metric in [Metric::L2, Metric::InnerProduct] {
        let mut index = IndexFlat::new(50, metric).unwrap();
        index.add(data.base.as_ref()).unwrap();
        let batch = index
            .search(data.queries.as_ref(), 10, &SearchParams::default())
            .unwrap();
        let want = brute_force_knn(data.base.as_ref(), data.queries.as_ref(), 10, metric);
        check_knn(
            &batch,
            &want,
            data.base.as_ref(),
            data.queries.as_ref(),
            metric,
            1e-5,
        )
        .unwrap();
        for qi in [0usize, 17, 299] {
            let one = index
                .search(
                    data.queries.as_ref().slice(qi..qi + 1),
                    10,
                    &SearchParams::default(),
                )
                .unwrap();
            assert_eq!(one.row(0).1, batch.row(qi).1, "query {qi} {metric}");
        }
    }
}

#[test]
fn large_k_uses_selection_and_matches() {
    let data = SyntheticSpec::new(3000, 8, 20)
        .with_seed(9)
        .generate()
        .unwrap();
    let mut index = IndexFlat::new(8, Metric::L2).unwrap();
    index.add(data.base.as_ref()).unwrap();
    let got = index
        .search(data.queries.as_ref(), 1000, &SearchParams::default())
        .unwrap();
    let want = brute_force_knn(data.base.as_ref(), data.queries.as_ref(), 1000, Metric::L2);
    check_knn(
        &got,
        &want,
        data.base.as_ref(),
        data.queries.as_ref(),
        Metric::L2,
        1e-5,
    )
    .unwrap();
}

#[test]
fn bad_input_is_an_error() {
    let mut index = IndexFlat::new(4, Metric::L2).unwrap();
    let q = [0.0f32; 4];
    let q = VectorsRef::new(&q, 4).unwrap();
    assert!(matches!(
        index.search(q, 1, &SearchParams::default()),
        Err(Error::EmptyIndex)
    ));
    assert!(matches!(
        index.add(VectorsRef::new(&[1.0; 6], 3).unwrap()),
        Err(Error::DimensionMismatch {
            expected: 4,
            got: 3
        })
    ));
    assert!(matches!(
        index.add(VectorsRef::new(&[1.0, f32::NAN, 0.0, 0.0], 4).unwrap()),
        Err(Error::NonFinite { row: 0, col: 1, .. })
    ));
    assert!(index.is_empty(), "a failed add must not add anything");
    index.add(VectorsRef::new(&[1.0; 8], 4).unwrap()).unwrap();
    assert!(matches!(
        index.search(q, 0, &SearchParams::default()),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(index.search(q, 3, &SearchParams::default()).is_err());
    assert!(index.search(q, 2, &SearchParams::default()).is_ok());
    let inf = [f32::INFINITY, 0.0, 0.0, 0.0];
    assert!(matches!(
        index.search(
            VectorsRef::new(&inf, 4).unwrap(),
            1,
            &SearchParams::default()
        ),
        Err(Error::NonFinite { .. })
    ));
    assert!(matches!(
        index.reconstruct(2),
        Err(Error::IdNotFound { id: 2 })
    ));
    assert!(
        index
            .range_search(q, f32::NAN, &SearchParams::default())
            .is_err()
    );
    assert!(IndexFlat::new(0, Metric::L2).is_err());

    let mut map = IndexIDMap::new(IndexFlat::new(4, Metric::L2).unwrap()).unwrap();
    assert!(matches!(
        map.add_with_ids(VectorsRef::new(&[1.0; 8], 4).unwrap(), &[1]),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(
        map.add_with_ids(VectorsRef::new(&[1.0; 4], 4).unwrap(), &[-1])
            .is_err()
    );
    assert!(map.add(VectorsRef::new(&[1.0; 4], 4).unwrap()).is_err());
    assert!(map.is_empty());
    assert!(map.reconstruct(0).is_err());
    assert!(IndexIDMap::new(index).is_err());

    let mut map2 = IndexIDMap2::new(IndexFlat::new(1, Metric::L2).unwrap()).unwrap();
    map2.add_with_ids(VectorsRef::new(&[1.0, 2.0], 1).unwrap(), &[5, 6])
        .unwrap();
    assert!(matches!(
        map2.add_with_ids(VectorsRef::new(&[3.0], 1).unwrap(), &[5]),
        Err(Error::DuplicateId { id: 5 })
    ));
    assert!(
        map2.add_with_ids(VectorsRef::new(&[3.0, 4.0], 1).unwrap(), &[8, 8])
            .is_err()
    );
    assert_eq!(map2.len(), 2);
}

#[test]
fn remove_ids_reset_assign() {
    let data: Vec<f32> = (0..10).map(|i| i as f32).collect();
    let mut index = IndexFlat::new(1, Metric::L2).unwrap();
    index.add(VectorsRef::new(&data, 1).unwrap()).unwrap();
    assert_eq!(index.remove_ids(&IdSelector::range(2, 5)).unwrap(), 3);
    assert_eq!(index.len(), 7);
    // Remaining vectors are renumbered in order, as in Faiss.
    assert_eq!(index.reconstruct(2).unwrap(), vec![5.0]);
    let q = [5.2f32, 0.1];
    assert_eq!(
        index.assign(VectorsRef::new(&q, 1).unwrap()).unwrap(),
        vec![2, 0]
    );
    index.reset();
    assert!(index.is_empty());

    let mut map = IndexIDMap2::new(IndexFlat::new(1, Metric::L2).unwrap()).unwrap();
    let ids: Vec<i64> = (0..10).map(|i| 100 + i).collect();
    map.add_with_ids(VectorsRef::new(&data, 1).unwrap(), &ids)
        .unwrap();
    assert_eq!(
        map.remove_ids(&IdSelector::set([101, 105, 999])).unwrap(),
        2
    );
    assert_eq!(map.len(), 8);
    assert_eq!(map.reconstruct(106).unwrap(), vec![6.0]);
    assert!(map.reconstruct(105).is_err());
    let res = map
        .search(
            VectorsRef::new(&[5.1], 1).unwrap(),
            2,
            &SearchParams::default(),
        )
        .unwrap();
    assert_eq!(res.row(0).1, &[106, 104]);
    // A filter in external ids.
    let only_even = IdSelector::set([102, 104, 106, 108]);
    let res = map
        .search(
            VectorsRef::new(&[7.0], 1).unwrap(),
            2,
            &SearchParams::default().with_selector(&only_even),
        )
        .unwrap();
    assert_eq!(res.row(0).1, &[106, 108]);
    let rr = map
        .range_search(
            VectorsRef::new(&[0.0], 1).unwrap(),
            4.5,
            &SearchParams::default(),
        )
        .unwrap();
    assert_eq!(rr.row(0).1, &[100, 102]);
}

/// A codec-backed index: only `reconstruct_into`, so `distances_to` takes the default
/// (reconstructing) path.
#[derive(Debug)]
struct Rows(IndexFlat);

impl Index for Rows {
    fn dim(&self) -> usize {
        self.0.dim()
    }
    fn metric(&self) -> Metric {
        self.0.metric()
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn describe(&self) -> String {
        "rows".into()
    }
    fn is_trained(&self) -> bool {
        true
    }
    fn train(&mut self, _x: VectorsRef<'_>) -> vq_core::Result<()> {
        Ok(())
    }
    fn add(&mut self, x: VectorsRef<'_>) -> vq_core::Result<()> {
        self.0.add(x)
    }
    fn search_into(
        &self,
        queries: VectorsRef<'_>,
        k: usize,
        params: &SearchParams<'_>,
        out: &mut vq_core::SearchResults,
    ) -> vq_core::Result<()> {
        self.0.search_into(queries, k, params, out)
    }
    fn reset(&mut self) {
        self.0.reset();
    }
    fn reconstruct_into(&self, id: i64, out: &mut [f32]) -> vq_core::Result<()> {
        self.0.reconstruct_into(id, out)
    }
}

#[test]
fn distances_to_ids_equal_brute_force_in_place_and_reconstructed() {
    for metric in [Metric::L2, Metric::InnerProduct] {
        let data = SyntheticSpec::new(300, 20, 4).generate().unwrap();
        let mut flat = IndexFlat::new(20, metric).unwrap();
        flat.add(data.base.as_ref()).unwrap();
        let rows = Rows(flat.clone());
        // More ids than the prefetch window, repeats, and a padding id.
        let ids: Vec<i64> = (0..40).map(|i| (i * 37) % 300).chain([-1, 5, 5]).collect();
        let q = data.queries.row(1);
        let want: Vec<f32> = ids
            .iter()
            .map(|&id| {
                if id < 0 {
                    return metric.worst();
                }
                let x = data.base.row(id as usize);
                match metric {
                    Metric::L2 => q.iter().zip(x).map(|(a, b)| (a - b) * (a - b)).sum(),
                    Metric::InnerProduct => q.iter().zip(x).map(|(a, b)| a * b).sum(),
                }
            })
            .collect();
        for index in [&flat as &dyn Index, &rows] {
            let mut got = vec![0.0; ids.len()];
            index.distances_to(q, &ids, &mut got).unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    g == w || (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                    "{metric}: {g} vs {w}"
                );
            }
            // Bad input: query dimension, output length, unknown id, non-finite query.
            let mut out = vec![0.0; ids.len()];
            assert!(matches!(
                index.distances_to(&q[..19], &ids, &mut out),
                Err(Error::DimensionMismatch { .. })
            ));
            assert!(index.distances_to(q, &ids, &mut out[..3]).is_err());
            assert!(index.distances_to(q, &[300], &mut out[..1]).is_err());
            let mut nan = q.to_vec();
            nan[3] = f32::NAN;
            assert!(index.distances_to(&nan, &ids, &mut out).is_err());
        }
    }
}
