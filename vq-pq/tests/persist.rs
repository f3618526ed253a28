//! Save/load round trips of the quantizers, transforms and code indexes through the
//! section container, and refusal of mismatched or corrupt states.
#![allow(clippy::unwrap_used)]

use vq_core::persist::{StateReader, StateWriter};
use vq_core::synthetic::{SyntheticData, SyntheticSpec};
use vq_core::{
    AdcCodec, CodeDistance, Codec, Error, Index, Metric, Result, SearchParams, VectorTransform,
    VectorsRef,
};
use vq_pq::{
    IndexPQ, IndexScalarQuantizer, LinearTransform, Opq, Pca, ProductQuantizer, RandomRotation,
    RangeStat, ScalarQuantizer, SqType,
};

fn data(n: usize, d: usize) -> SyntheticData {
    SyntheticSpec::new(n, d, 20).generate().unwrap()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Saves whatever `f` writes into an in-memory container.
fn save(f: impl FnOnce(&mut StateWriter<'_>) -> Result<()>) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = StateWriter::new(&mut buf).unwrap();
    f(&mut w).unwrap();
    w.finish().unwrap();
    buf
}

/// Loads `buf` with `f`, then checks that every section was read.
fn load(buf: &[u8], f: impl FnOnce(&mut StateReader) -> Result<()>) -> Result<()> {
    let mut r = StateReader::from_bytes(buf.to_vec(), "mem")?;
    f(&mut r)?;
    r.finish()
}

fn codec_state<C: Codec>(c: &C) -> Vec<u8> {
    save(|w| c.save_state(w))
}

fn transform_state<T: VectorTransform>(t: &T) -> Vec<u8> {
    save(|w| t.save_state(w))
}

fn index_state<I: Index>(i: &I) -> Vec<u8> {
    save(|w| i.save_state(w))
}

fn assert_format_error(r: Result<()>) {
    match r {
        Err(Error::Format { .. }) => {}
        other => panic!("expected a format error, got {other:?}"),
    }
}

/// Encodings, decodings and ADC distances of both codecs are bit-identical.
fn assert_same_codec<C: AdcCodec>(a: &C, b: &C, x: VectorsRef<'_>) {
    assert_eq!(a.is_trained(), b.is_trained());
    let (ca, cb) = (a.encode(x).unwrap(), b.encode(x).unwrap());
    assert_eq!(ca, cb);
    assert_eq!(bits(&a.decode(&ca).unwrap()), bits(&b.decode(&cb).unwrap()));
    for q in x.rows().take(5) {
        let mut da = vec![0f32; x.len()];
        let mut db = vec![0f32; x.len()];
        a.query_computer(q, Metric::L2)
            .unwrap()
            .distances(&ca, &mut da);
        b.query_computer(q, Metric::L2)
            .unwrap()
            .distances(&cb, &mut db);
        assert_eq!(bits(&da), bits(&db));
    }
}

fn trained_pq(d: usize, m: usize, nbits: usize, x: VectorsRef<'_>) -> ProductQuantizer {
    let mut pq = ProductQuantizer::new(d, m, nbits).unwrap();
    let p = pq.kmeans_params().clone().with_niter(6);
    pq.set_kmeans_params(p).unwrap();
    pq.train(x).unwrap();
    pq
}

#[test]
fn pq_round_trips_bit_identically() {
    let ds = data(3_000, 32);
    for nbits in [5, 8] {
        let pq = trained_pq(32, 8, nbits, ds.base.as_ref());
        let buf = codec_state(&pq);
        let mut back = ProductQuantizer::new(32, 8, nbits).unwrap();
        load(&buf, |r| back.load_state(r)).unwrap();
        assert_eq!(bits(pq.centroids()), bits(back.centroids()));
        assert_same_codec(&pq, &back, ds.queries.as_ref());
        let q = ds.queries.as_ref().row(0);
        let (ta, tb) = (
            pq.distance_table(q, Metric::InnerProduct).unwrap(),
            back.distance_table(q, Metric::InnerProduct).unwrap(),
        );
        assert_eq!(bits(ta.table()), bits(tb.table()));
    }
}

#[test]
fn pq_load_replaces_a_trained_quantizer_and_untrained_round_trips() {
    let ds = data(2_000, 16);
    let a = trained_pq(16, 4, 6, ds.base.as_ref());
    let b = trained_pq(16, 4, 6, ds.base.as_ref().slice(0..500));
    assert_ne!(bits(a.centroids()), bits(b.centroids()));
    let mut target = b.clone();
    load(&codec_state(&a), |r| target.load_state(r)).unwrap();
    assert_eq!(bits(a.centroids()), bits(target.centroids()));
    // An untrained state makes a trained quantizer untrained.
    let untrained = ProductQuantizer::new(16, 4, 6).unwrap();
    let buf = codec_state(&untrained);
    load(&buf, |r| target.load_state(r)).unwrap();
    assert!(!Codec::is_trained(&target));
    assert!(target.encode(ds.queries.as_ref()).is_err());
}

#[test]
fn pq_shape_mismatch_is_an_error_and_leaves_the_target_alone() {
    let ds = data(2_000, 16);
    let pq = trained_pq(16, 4, 6, ds.base.as_ref());
    let buf = codec_state(&pq);
    for (d, m, nbits) in [(16, 2, 6), (16, 4, 8), (32, 4, 6)] {
        let mut other = ProductQuantizer::new(d, m, nbits).unwrap();
        assert_format_error(load(&buf, |r| other.load_state(r)));
        assert!(!Codec::is_trained(&other));
    }
    // A PQ state is no SQ state.
    let mut sq = ScalarQuantizer::new(16, SqType::Q8).unwrap();
    assert!(load(&buf, |r| sq.load_state(r)).is_err());
}

#[test]
fn corrupt_pq_states_are_errors() {
    let write = |m: u64, trained: u64, centroids: &[f32]| {
        save(|w| {
            w.put_u64("d", 4)?;
            w.put_u64("m", m)?;
            w.put_u64("nbits", 1)?;
            w.put_u64("trained", trained)?;
            w.put_f32s("centroids", centroids)
        })
    };
    let good: Vec<f32> = (0..8).map(|i| i as f32).collect();
    let mut pq = ProductQuantizer::new(4, 2, 1).unwrap();
    load(&write(2, 1, &good), |r| pq.load_state(r)).unwrap();
    assert!(Codec::is_trained(&pq));
    let mut bad_nan = good.clone();
    bad_nan[3] = f32::NAN;
    for buf in [
        write(2, 1, &good[..6]),
        write(2, 1, &bad_nan),
        write(2, 2, &good),
        write(u64::MAX, 1, &good),
    ] {
        let mut fresh = ProductQuantizer::new(4, 2, 1).unwrap();
        assert!(load(&buf, |r| fresh.load_state(r)).is_err());
        assert!(!Codec::is_trained(&fresh));
    }
    // An untrained state followed by centroids: the unread section is an error.
    let mut fresh = ProductQuantizer::new(4, 2, 1).unwrap();
    assert!(load(&write(2, 0, &good), |r| fresh.load_state(r)).is_err());
}

const SQ_TYPES: [SqType; 9] = [
    SqType::Q8,
    SqType::Q6,
    SqType::Q4,
    SqType::Q8Uniform,
    SqType::Q4Uniform,
    SqType::Fp16,
    SqType::Bf16,
    SqType::Q8Direct,
    SqType::Q8DirectSigned,
];

#[test]
fn sq_round_trips_bit_identically_for_every_type() {
    let ds = data(1_000, 19);
    for t in SQ_TYPES {
        for rs in [
            RangeStat::default(),
            RangeStat::MeanStd { k: 2.5 },
            RangeStat::Quantiles { fraction: 0.01 },
        ] {
            let mut sq = ScalarQuantizer::new(19, t)
                .unwrap()
                .with_range_stat(rs)
                .unwrap();
            sq.train(ds.base.as_ref()).unwrap();
            let buf = codec_state(&sq);
            let mut back = ScalarQuantizer::new(19, t).unwrap();
            load(&buf, |r| back.load_state(r)).unwrap();
            assert_eq!(sq, back, "{t}");
            assert_eq!(back.range_stat(), rs);
            assert_same_codec(&sq, &back, ds.queries.as_ref());
        }
    }
}

#[test]
fn sq_mismatches_and_untrained_states() {
    let ds = data(500, 8);
    let mut sq = ScalarQuantizer::new(8, SqType::Q4).unwrap();
    sq.train(ds.base.as_ref()).unwrap();
    let buf = codec_state(&sq);
    let mut other_type = ScalarQuantizer::new(8, SqType::Q8).unwrap();
    assert_format_error(load(&buf, |r| other_type.load_state(r)));
    let mut other_dim = ScalarQuantizer::new(9, SqType::Q4).unwrap();
    assert_format_error(load(&buf, |r| other_dim.load_state(r)));
    // Untrained round trip, loaded over a trained quantizer.
    let untrained = ScalarQuantizer::new(8, SqType::Q4).unwrap();
    let mut target = sq.clone();
    load(&codec_state(&untrained), |r| target.load_state(r)).unwrap();
    assert!(!Codec::is_trained(&target));
    assert_eq!(target, untrained);
}

#[test]
fn corrupt_sq_states_are_errors() {
    let write = |qtype: &str, rs: &str, arg: f64, trained: u64, vmin: &[f32], vdiff: &[f32]| {
        save(|w| {
            w.put_u64("d", 2)?;
            w.put_str("qtype", qtype)?;
            w.put_str("range_stat", rs)?;
            w.put_f64("range_stat_arg", arg)?;
            w.put_u64("trained", trained)?;
            w.put_f32s("vmin", vmin)?;
            w.put_f32s("vdiff", vdiff)
        })
    };
    let try_load = |t: SqType, buf: &[u8]| {
        let mut sq = ScalarQuantizer::new(2, t).unwrap();
        let r = load(buf, |r| sq.load_state(r));
        (r, sq)
    };
    let (ok, sq) = try_load(
        SqType::Q8,
        &write("SQ8", "min_max", 0.0, 1, &[0.0, 1.0], &[2.0, 3.0]),
    );
    ok.unwrap();
    assert_eq!(sq.vdiff(), &[2.0, 3.0]);
    for (t, buf) in [
        (
            SqType::Q8,
            write("SQ8", "min_max", 0.0, 1, &[0.0], &[2.0, 3.0]),
        ),
        (
            SqType::Q8,
            write("SQ8", "min_max", 0.0, 1, &[0.0, f32::INFINITY], &[2.0, 3.0]),
        ),
        (
            SqType::Q8,
            write("SQ8", "min_max", 0.0, 1, &[0.0, 1.0], &[2.0, -3.0]),
        ),
        (
            SqType::Q8,
            write("SQ8", "median", 0.0, 1, &[0.0, 1.0], &[2.0, 3.0]),
        ),
        (
            SqType::Q8,
            write("SQ8", "quantiles", 0.7, 1, &[0.0, 1.0], &[2.0, 3.0]),
        ),
        (
            SqType::Q8,
            write("SQ8", "min_max", f64::NAN, 1, &[0.0, 1.0], &[2.0, 3.0]),
        ),
        (
            SqType::Q8Uniform,
            write("SQ8_uniform", "min_max", 0.0, 1, &[0.0, 1.0], &[2.0, 2.0]),
        ),
        (
            SqType::Q8,
            write("SQ8", "min_max", 0.0, 7, &[0.0, 1.0], &[2.0, 3.0]),
        ),
    ] {
        let (r, sq) = try_load(t, &buf);
        assert!(r.is_err(), "{buf:?}");
        assert!(!Codec::is_trained(&sq));
    }
    // A type without training cannot be stored untrained.
    let buf = save(|w| {
        w.put_u64("d", 2)?;
        w.put_str("qtype", "SQfp16")?;
        w.put_str("range_stat", "min_max")?;
        w.put_f64("range_stat_arg", 0.0)?;
        w.put_u64("trained", 0)
    });
    assert_format_error(try_load(SqType::Fp16, &buf).0);
}

/// Forward and (where it exists) reverse maps are bit-identical.
fn assert_same_transform<T: VectorTransform>(a: &T, b: &T, x: VectorsRef<'_>) {
    assert_eq!(a.is_trained(), b.is_trained());
    assert_eq!(a.describe(), b.describe());
    let (ya, yb) = (a.apply(x).unwrap(), b.apply(x).unwrap());
    assert_eq!(bits(&ya), bits(&yb));
    let ya = VectorsRef::new(&ya, a.d_out()).unwrap();
    let yb = VectorsRef::new(&yb, b.d_out()).unwrap();
    match (a.reverse(ya), b.reverse(yb)) {
        (Ok(ra), Ok(rb)) => assert_eq!(bits(&ra), bits(&rb)),
        (Err(_), Err(_)) => {}
        (ra, rb) => panic!("reverse differs: {ra:?} / {rb:?}"),
    }
}

#[test]
fn pca_round_trips_in_every_kind() {
    let ds = data(2_000, 24);
    for (power, rotate) in [(0.0, false), (-0.5, false), (0.0, true), (-0.5, true)] {
        let make = || {
            Pca::new(24, 12)
                .unwrap()
                .with_eigen_power(power)
                .with_random_rotation(rotate)
        };
        let mut pca = make().with_epsilon(1e-3).with_max_points_per_d(50);
        pca.train(ds.base.as_ref()).unwrap();
        let buf = transform_state(&pca);
        let mut back = make();
        load(&buf, |r| back.load_state(r)).unwrap();
        assert_eq!(bits(pca.mean()), bits(back.mean()));
        assert_eq!(bits(pca.eigenvalues()), bits(back.eigenvalues()));
        assert_eq!(bits(pca.components()), bits(back.components()));
        assert_same_transform(&pca, &back, ds.queries.as_ref());
        // Re-training the loaded PCA uses the restored settings.
        let mut again = back.clone();
        again.train(ds.base.as_ref()).unwrap();
        assert_same_transform(&pca, &again, ds.queries.as_ref());
    }
}

#[test]
fn pca_mismatches_and_untrained_states() {
    let ds = data(1_000, 16);
    let mut pca = Pca::new(16, 8).unwrap();
    pca.train(ds.base.as_ref()).unwrap();
    let buf = transform_state(&pca);
    for mut other in [
        Pca::new(16, 4).unwrap(),
        Pca::new(12, 8).unwrap(),
        Pca::new(16, 8).unwrap().with_eigen_power(-0.5),
        Pca::new(16, 8).unwrap().with_random_rotation(true),
    ] {
        assert_format_error(load(&buf, |r| other.load_state(r)));
        assert!(!other.is_trained());
    }
    let untrained = Pca::new(16, 8).unwrap();
    let mut target = pca.clone();
    load(&transform_state(&untrained), |r| target.load_state(r)).unwrap();
    assert!(!target.is_trained());
    assert!(target.mean().is_empty() && target.components().is_empty());
    assert!(target.apply(ds.queries.as_ref()).is_err());
}

#[test]
fn opq_round_trips_and_checks_its_shape() {
    let ds = data(2_000, 16);
    let make = || Opq::with_output(16, 4, 8).unwrap().with_nbits(4);
    let mut opq = make().with_niter(3).with_seed(7);
    opq.train(ds.base.as_ref()).unwrap();
    let buf = transform_state(&opq);
    let mut back = make();
    load(&buf, |r| back.load_state(r)).unwrap();
    assert_same_transform(&opq, &back, ds.queries.as_ref());
    assert_eq!(
        bits(opq.pq().unwrap().centroids()),
        bits(back.pq().unwrap().centroids())
    );
    assert_eq!(opq.reconstruction_errors(), back.reconstruction_errors());
    // The restored settings (niter, seed) make re-training reproduce the original.
    let mut again = back.clone();
    again.train(ds.base.as_ref()).unwrap();
    assert_same_transform(&opq, &again, ds.queries.as_ref());
    for mut other in [
        Opq::with_output(16, 2, 8).unwrap().with_nbits(4),
        Opq::with_output(16, 4, 16).unwrap().with_nbits(4),
        Opq::with_output(16, 4, 8).unwrap(),
    ] {
        assert_format_error(load(&buf, |r| other.load_state(r)));
        assert!(!other.is_trained());
    }
    let mut target = opq.clone();
    load(&transform_state(&make()), |r| target.load_state(r)).unwrap();
    assert!(!target.is_trained() && target.pq().is_none());
    assert!(target.reconstruction_errors().is_empty());
}

#[test]
fn random_rotation_round_trips() {
    let ds = data(100, 16);
    for d_out in [8, 16, 24] {
        let mut rr = RandomRotation::new(16, d_out).unwrap();
        rr.init(99);
        let buf = transform_state(&rr);
        let mut back = RandomRotation::new(16, d_out).unwrap();
        load(&buf, |r| back.load_state(r)).unwrap();
        assert_same_transform(&rr, &back, ds.queries.as_ref());
        let mut other = RandomRotation::new(16, d_out + 1).unwrap();
        assert_format_error(load(&buf, |r| other.load_state(r)));
        assert!(!other.is_trained());
        // Untrained round trip, over a drawn rotation.
        let mut target = rr.clone();
        let untrained = RandomRotation::new(16, d_out).unwrap();
        load(&transform_state(&untrained), |r| target.load_state(r)).unwrap();
        assert!(!target.is_trained());
    }
}

#[test]
fn linear_transform_round_trips_with_and_without_reverse() {
    let ds = data(100, 6);
    // Not orthonormal: no reverse map; with a bias.
    let a: Vec<f32> = (0..24).map(|i| (i as f32 * 0.37).sin()).collect();
    let lt = LinearTransform::new(6, 4, a, vec![0.5, -1.0, 0.0, 2.0]).unwrap();
    // Orthonormal: the reverse map is the matrix itself.
    let mut rr = RandomRotation::new(6, 6).unwrap();
    rr.init(3);
    let ortho = LinearTransform::new(6, 6, rr.linear().unwrap().matrix().to_vec(), vec![]).unwrap();
    for t in [lt, ortho] {
        let buf = transform_state(&t);
        let mut back =
            LinearTransform::new(6, t.d_out(), vec![0.0; 6 * t.d_out()], vec![]).unwrap();
        load(&buf, |r| back.load_state(r)).unwrap();
        assert_eq!(t, back);
        assert_same_transform(&t, &back, ds.queries.as_ref());
        let mut other = LinearTransform::new(6, 5, vec![0.0; 30], vec![]).unwrap();
        assert_format_error(load(&buf, |r| other.load_state(r)));
    }
    // A reverse-map tag outside 0..=2, a short bias, a NaN: errors.
    for (tag, bias, m0) in [(3u64, 4, 0.0f32), (0, 3, 0.0), (0, 4, f32::NAN)] {
        let buf = save(|w| {
            w.put_u64("d_in", 6)?;
            w.put_u64("d_out", 4)?;
            let mut m = vec![0.0f32; 24];
            m[0] = m0;
            w.put_f32s("matrix", &m)?;
            w.put_f32s("bias", &vec![0.0; bias])?;
            w.put_u64("reverse", tag)
        });
        let mut t = LinearTransform::new(6, 4, vec![1.0; 24], vec![]).unwrap();
        let before = t.clone();
        assert!(load(&buf, |r| t.load_state(r)).is_err());
        assert_eq!(t, before);
    }
}

fn assert_same_search<I: Index>(a: &I, b: &I, q: VectorsRef<'_>) {
    assert_eq!(a.len(), b.len());
    let p = SearchParams::default();
    let (ra, rb) = (a.search(q, 10, &p).unwrap(), b.search(q, 10, &p).unwrap());
    assert_eq!(ra.labels(), rb.labels());
    assert_eq!(bits(ra.distances()), bits(rb.distances()));
    for id in [0, a.len() as i64 / 2, a.len() as i64 - 1] {
        assert_eq!(
            bits(&a.reconstruct(id).unwrap()),
            bits(&b.reconstruct(id).unwrap())
        );
    }
}

#[test]
fn index_pq_round_trips_and_replaces_existing_contents() {
    let ds = data(3_000, 32);
    for metric in [Metric::L2, Metric::InnerProduct] {
        let mut index = IndexPQ::new(ProductQuantizer::new(32, 8, 6).unwrap(), metric);
        index.train(ds.base.as_ref()).unwrap();
        index.add(ds.base.as_ref()).unwrap();
        let buf = index_state(&index);
        // A fresh index, and one already trained and filled with other data.
        let mut fresh = IndexPQ::new(ProductQuantizer::new(32, 8, 6).unwrap(), metric);
        load(&buf, |r| fresh.load_state(r)).unwrap();
        assert_same_search(&index, &fresh, ds.queries.as_ref());
        assert_eq!(index.codes(), fresh.codes());
        let mut busy = IndexPQ::new(ProductQuantizer::new(32, 8, 6).unwrap(), metric);
        busy.train(ds.base.as_ref().slice(0..1_000)).unwrap();
        busy.add(ds.base.as_ref().slice(0..77)).unwrap();
        load(&buf, |r| busy.load_state(r)).unwrap();
        assert_same_search(&index, &busy, ds.queries.as_ref());
    }
}

#[test]
fn index_sq_round_trips() {
    let ds = data(2_000, 20);
    for t in [SqType::Q8, SqType::Q4Uniform, SqType::Fp16] {
        let mut index = IndexScalarQuantizer::new(ScalarQuantizer::new(20, t).unwrap(), Metric::L2);
        index.train(ds.base.as_ref()).unwrap();
        index.add(ds.base.as_ref()).unwrap();
        let buf = index_state(&index);
        let mut back = IndexScalarQuantizer::new(ScalarQuantizer::new(20, t).unwrap(), Metric::L2);
        load(&buf, |r| back.load_state(r)).unwrap();
        assert_same_search(&index, &back, ds.queries.as_ref());
        assert_eq!(index.codec(), back.codec());
    }
}

#[test]
fn index_mismatches_and_empty_states() {
    let ds = data(1_000, 16);
    let mut index = IndexPQ::new(ProductQuantizer::new(16, 4, 4).unwrap(), Metric::L2);
    index.train(ds.base.as_ref()).unwrap();
    index.add(ds.base.as_ref()).unwrap();
    let buf = index_state(&index);
    let mut other_metric = IndexPQ::new(
        ProductQuantizer::new(16, 4, 4).unwrap(),
        Metric::InnerProduct,
    );
    assert_format_error(load(&buf, |r| other_metric.load_state(r)));
    let mut other_m = IndexPQ::new(ProductQuantizer::new(16, 8, 4).unwrap(), Metric::L2);
    assert_format_error(load(&buf, |r| other_m.load_state(r)));
    let mut other_nbits = IndexPQ::new(ProductQuantizer::new(16, 4, 8).unwrap(), Metric::L2);
    assert_format_error(load(&buf, |r| other_nbits.load_state(r)));
    let mut sq =
        IndexScalarQuantizer::new(ScalarQuantizer::new(16, SqType::Q4).unwrap(), Metric::L2);
    assert!(load(&buf, |r| sq.load_state(r)).is_err());
    assert!(other_m.is_empty() && !other_m.is_trained());
    // An empty untrained index round-trips, and empties a full one.
    let empty = IndexPQ::new(ProductQuantizer::new(16, 4, 4).unwrap(), Metric::L2);
    let mut target = index.clone();
    load(&index_state(&empty), |r| target.load_state(r)).unwrap();
    assert!(target.is_empty() && !target.is_trained());
}

#[test]
fn corrupt_index_states_are_errors_and_leave_the_index_alone() {
    let ds = data(1_000, 8);
    let mut index =
        IndexScalarQuantizer::new(ScalarQuantizer::new(8, SqType::Q8).unwrap(), Metric::L2);
    index.train(ds.base.as_ref()).unwrap();
    index.add(ds.base.as_ref().slice(0..10)).unwrap();
    let write = |ntotal: u64, codes: &[u8], trained: bool| {
        save(|w| {
            w.put_str("metric", "l2")?;
            w.put_u64("dim", 8)?;
            w.put_u64("code_size", 8)?;
            w.scope("codec", |w| {
                let mut sq = ScalarQuantizer::new(8, SqType::Q8).unwrap();
                if trained {
                    sq.train(ds.base.as_ref())?;
                }
                sq.save_state(w)
            })?;
            w.put_u64("ntotal", ntotal)?;
            w.put_bytes("codes", codes)
        })
    };
    let mut ok = index.clone();
    load(&write(3, &[7; 24], true), |r| ok.load_state(r)).unwrap();
    assert_eq!(ok.len(), 3);
    for buf in [
        write(3, &[7; 23], true),
        write(2, &[7; 24], true),
        write(u64::MAX, &[7; 24], true),
        write(3, &[7; 24], false),
    ] {
        let mut target = index.clone();
        assert!(load(&buf, |r| target.load_state(r)).is_err());
        assert_eq!(target.codes(), index.codes());
        assert_eq!(target.codec(), index.codec());
    }
}
