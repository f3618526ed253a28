use vq_core::testing::brute_force_knn;
use vq_core::{
    AdcCodec, CodeDistance, Codec, FlatCodec, Index, IndexFlat, L2Normalize, Metric, PreTransform,
    SearchParams, VectorTransform, VectorsRef, synthetic::SyntheticSpec,
};

#[test]
fn cosine_through_pretransform_equals_normalised_brute_force() {
    let data = SyntheticSpec::new(2000, 24, 30)
        .with_seed(2)
        .generate()
        .unwrap();
    let mut index = PreTransform::new(
        vec![Box::new(L2Normalize::new(24).unwrap())],
        Box::new(IndexFlat::new(24, Metric::InnerProduct).unwrap()),
    )
    .unwrap();
    index.train(data.base.as_ref()).unwrap();
    index.add(data.base.as_ref()).unwrap();
    let got = index
        .search(data.queries.as_ref(), 5, &SearchParams::default())
        .unwrap();
    let norm = L2Normalize::new(24).unwrap();
    let b = norm.apply(data.base.as_ref()).unwrap();
    let q = norm.apply(data.queries.as_ref()).unwrap();
    let want = brute_force_knn(
        VectorsRef::new(&b, 24).unwrap(),
        VectorsRef::new(&q, 24).unwrap(),
        5,
        Metric::InnerProduct,
    );
    let agree = got
        .labels()
        .iter()
        .zip(want.labels())
        .filter(|(a, b)| a == b)
        .count();
    assert!(agree as f64 >= 0.99 * got.labels().len() as f64);
    // Reconstruction through a normalisation gives the stored unit vector (as Faiss).
    assert_eq!(index.reconstruct(0).unwrap(), &b[..24]);
    // Chains with mismatched dimensions are refused.
    assert!(
        PreTransform::new(
            vec![Box::new(L2Normalize::new(8).unwrap())],
            Box::new(IndexFlat::new(24, Metric::L2).unwrap())
        )
        .is_err()
    );
}

#[test]
fn flat_codec_distances_equal_flat_index() {
    let data = SyntheticSpec::new(500, 17, 3)
        .with_seed(4)
        .generate()
        .unwrap();
    let codec = FlatCodec::new(17).unwrap();
    let codes = codec.encode(data.base.as_ref()).unwrap();
    let flat = {
        let mut f = IndexFlat::new(17, Metric::L2).unwrap();
        f.add(data.base.as_ref()).unwrap();
        f
    };
    for qi in 0..3 {
        let q = data.queries.row(qi);
        let mut dc = codec.query_computer(q, Metric::L2).unwrap();
        let mut d = vec![0.0; 500];
        dc.distances(&codes, &mut d);
        let ids: Vec<i64> = (0..500).collect();
        let want = flat
            .distances_to_ids(VectorsRef::new(q, 17).unwrap(), &ids)
            .unwrap();
        assert_eq!(d, want);
    }
}
