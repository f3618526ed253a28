//! Factory strings end to end: golden table, parse/print round trip, save/load,
//! parameter strings, registered codecs, malformed input.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use vq_core::persist::StateWriter;
use vq_core::{Index, Metric, SearchParams, SearchResults, Vectors};
use vq_factory::{
    CoarseSpec, EncodingSpec, Factory, FactorySpec, IdMapKind, ParseErrorKind, TransformSpec,
    index_factory, load_index, mmap_index, set_params,
};
use vq_pq::SqType;

#[allow(unreachable_pub, dead_code)]
#[path = "../examples/custom_codec.rs"]
mod custom_codec;

/// Faiss's example strings (faiss-surface §1.8) and more: input → canonical form, and a
/// fact about what is built at d = 128 (bytes per vector, or the search parameters).
#[test]
fn golden_table_of_strings() {
    let golden: &[(&str, &str, &str)] = &[
        ("Flat", "Flat", "bpv=516"),
        ("IDMap,Flat", "IDMap,Flat", "bpv=524"),
        ("Flat,IDMap", "IDMap,Flat", "bpv=524"),
        ("Flat,IDMap2", "IDMap2,Flat", "bpv=541"),
        ("PCA80,Flat", "PCA80,Flat", "bpv=324"),
        ("HNSW32", "HNSW32", "params=efSearch"),
        ("HNSW", "HNSW32", "params=efSearch"),
        ("HNSW32,SQ8", "HNSW32_SQ8", "params=efSearch"),
        ("HNSW32_PQ16", "HNSW32_PQ16", "params=efSearch"),
        ("IVF4096,Flat", "IVF4096,Flat", "bpv=520"),
        ("IVF4096,PQ16np", "IVF4096,PQ16", "bpv=24"),
        ("IVF4096,SQ8", "IVF4096,SQ8", "bpv=136"),
        ("OPQ16_64,IVF4096,PQ16", "OPQ16_64,IVF4096,PQ16", "bpv=24"),
        ("OPQ20_80,IMI2x14,PQ20", "OPQ20_80,IMI2x14,PQ20", "bpv=28"),
        (
            "IVF65536_HNSW32,PQ64",
            "IVF65536_HNSW32,PQ64",
            "params=nprobe,max_codes,quantizer_efSearch",
        ),
        (
            "PCAR64,IVF65536_HNSW32,Flat",
            "PCAR64,IVF65536_HNSW32,Flat",
            "bpv=264",
        ),
        (
            "IVF32,Flat,Refine(PQ16x12)",
            "IVF32,Flat,Refine(PQ16x12)",
            "bpv=544",
        ),
        ("IVF1024,PQ32,RFlat", "IVF1024,PQ32,RFlat", "bpv=556"),
        ("L2norm,IVF1024,Flat", "L2norm,IVF1024,Flat", "bpv=520"),
        ("IVF4k,Flat", "IVF4096,Flat", "bpv=520"),
        ("IVF1M,PQ8", "IVF1048576,PQ8", "bpv=16"),
        (
            "IVF1000(IVF20,SQ4,Refine(SQ8)),Flat",
            "IVF1000(IVF20,SQ4,Refine(SQ8)),Flat",
            "bpv=520",
        ),
        (
            "IVF256(HNSW16),Flat",
            "IVF256(HNSW16),Flat",
            "params=nprobe,max_codes,quantizer_efSearch",
        ),
        ("RR,SQfp16", "RR,SQfp16", "bpv=256"),
        (
            "IDMap2,OPQ8,IVF64,PQ8x4,RFlat",
            "IDMap2,OPQ8,IVF64,PQ8x4,RFlat",
            "bpv=553",
        ),
        ("PQ16x4", "PQ16x4", "bpv=8"),
        ("PQ32x4fs", "PQ32x4fs", "bpv=16"),
        ("PQ64x4fs_64", "PQ64x4fs_64", "bpv=32"),
        (
            "IVF1024,PQ32x4fs,RFlat",
            "IVF1024,PQ32x4fs,RFlat",
            "bpv=540",
        ),
        (
            "OPQ32_128,IVF1024,PQ32x4fsr",
            "OPQ32_128,IVF1024,PQ32x4fsr",
            "bpv=24",
        ),
        (
            "IVF1024,PQ32x4fs,Refine(SQ8)",
            "IVF1024,PQ32x4fs,Refine(SQ8)",
            "bpv=152",
        ),
        (
            "IVF64_HNSW8,PQ16x4fsr_64",
            "IVF64_HNSW8,PQ16x4fsr_64",
            "params=nprobe,max_codes,quantizer_efSearch",
        ),
        (" IDMap , Flat ", "IDMap,Flat", "bpv=524"),
    ];
    for &(input, canon, fact) in golden {
        let spec = FactorySpec::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(spec.to_string(), canon, "{input}");
        assert_eq!(FactorySpec::parse(canon).unwrap(), spec, "{input}");
        let ix = spec
            .build(128, Metric::L2)
            .unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(ix.describe(), canon);
        assert_eq!(ix.dim(), 128);
        match fact.split_once('=').unwrap() {
            ("bpv", v) => assert_eq!(ix.bytes_per_vector(), v.parse::<f64>().unwrap(), "{input}"),
            (_, v) => assert_eq!(ix.search_param_names().join(","), v, "{input}"),
        }
    }
    // The structure, for one string of each shape.
    assert_eq!(
        FactorySpec::parse("Flat,IDMap2").unwrap(),
        FactorySpec::IdMap {
            kind: IdMapKind::IdMap2,
            inner: Box::new(FactorySpec::Codes(EncodingSpec::Flat)),
        }
    );
    assert_eq!(
        FactorySpec::parse("PCAW32,IVF16,SQ8,RFlat").unwrap(),
        FactorySpec::Refine {
            base: Box::new(FactorySpec::PreTransform {
                chain: vec![TransformSpec::Pca {
                    d_out: 32,
                    whiten: true,
                    rotate: false
                }],
                inner: Box::new(FactorySpec::Ivf {
                    coarse: CoarseSpec::Ivf { nlist: 16 },
                    encoding: EncodingSpec::Sq(SqType::Q8),
                }),
            }),
            refine: Box::new(FactorySpec::Codes(EncodingSpec::Flat)),
        }
    );
    // Faiss strings vq does not provide yet: a clear error naming the token.
    for (s, tok) in [
        ("NSG64,Flat", "NSG64"),
        ("IVF1024,PQ32x5fs,RFlat", "PQ32x5fs"),
        ("IVF256(RCQ2x4),RQ3x4", "RCQ2x4"),
        ("RQ2x16_3x8_6x4", "RQ2x16_3x8_6x4"),
        ("IVF256,ITQ64,SH1.2", "ITQ64"),
        ("ITQ64,LSHt", "ITQ64"),
        ("RR,IVF1024,RaBitQ4", "RaBitQ4"),
        ("OPQ16_64,IMI2x8,PQ8+16", "PQ8+16"),
    ] {
        let e = FactorySpec::parse(s).unwrap_err();
        assert_eq!(
            e.kind,
            ParseErrorKind::NotAvailableYet(tok.into()),
            "{s}: {e}"
        );
        assert_eq!(&s[e.span.clone()], tok, "{s}");
    }
}

#[test]
fn errors_carry_a_marker_under_the_token() {
    let e = FactorySpec::parse("OPQ16_64,IVF1k(IVF8,Bogus),Flat").unwrap_err();
    assert_eq!(e.kind, ParseErrorKind::UnknownToken("Bogus".into()));
    assert_eq!(e.span, 20..25);
    let msg = e.to_string();
    assert!(
        msg.ends_with(&format!("\n  {}^^^^^", " ".repeat(20))),
        "{msg}"
    );
    // Fast scan by residual needs an inverted file; graphs do not scan blocks.
    for (bad, tok) in [
        ("PQ16x4fsr", "PQ16x4fsr"),
        ("HNSW32_PQ16x4fs", "HNSW32_PQ16x4fs"),
        ("HNSW32,PQ16x4fs", "PQ16x4fs"),
    ] {
        let e = FactorySpec::parse(bad).unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::Misplaced(tok.into()), "{bad}: {e}");
        assert_eq!(&bad[e.span.clone()], tok);
    }
    for bad in ["PQ16x4fs_48", "PQ16x4fs_", "PQ16x4fsq", "PQx4fs"] {
        assert!(FactorySpec::parse(bad).is_err(), "{bad}");
    }
    let e = FactorySpec::parse("IVF16(Flat,Flat").unwrap_err();
    assert_eq!(e.kind, ParseErrorKind::Unbalanced);
    assert_eq!(e.span, 5..6);
    let e = FactorySpec::parse("Flat)").unwrap_err();
    assert_eq!(e.kind, ParseErrorKind::Unbalanced);
    let e = FactorySpec::parse("IVF16(),Flat").unwrap_err();
    assert_eq!(e.kind, ParseErrorKind::Empty);
    let e = FactorySpec::parse("Flat,Refine()").unwrap_err();
    assert_eq!(e.kind, ParseErrorKind::Empty);
    let e = FactorySpec::parse("IVF16,Flat,IDMap,IDMap").unwrap_err();
    assert!(
        matches!(
            e.kind,
            ParseErrorKind::Trailing(_) | ParseErrorKind::Misplaced(_)
        ),
        "{e}"
    );
    // Dimension and metric incompatibilities are build errors.
    for (s, metric) in [
        ("PQ7", Metric::L2),
        ("OPQ16_60,PQ16", Metric::L2),
        ("IMI2x8,PQ16", Metric::InnerProduct),
        ("PCA256,Flat", Metric::L2),
        ("IVF16,Refine(PQ7)", Metric::L2),
        ("IVF16(PQ5),Flat", Metric::L2),
    ] {
        assert!(index_factory(128, s, metric).is_err(), "{s}");
    }
}

#[test]
fn list_counts_that_cannot_be_allocated_are_errors_not_aborts() {
    // 2^60 lists: every machine refuses the records; building must say so.
    for s in [
        "IVF1152921504606846976,Flat",
        "IVF1152921504606846976,SQ8",
        "IVF1152921504606846976,PQ4x4fs",
        "IDMap,IVF1152921504606846976,PQ4",
    ] {
        let e = vq_factory::index_factory(8, s, Metric::L2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than can be allocated"), "{s}: {e}");
    }
}

fn data(n: usize, d: usize, nq: usize) -> (Vectors, Vectors) {
    let s = vq_core::synthetic::SyntheticSpec::new(n, d, nq)
        .generate()
        .unwrap();
    (s.base, s.queries)
}

fn same(a: &SearchResults, b: &SearchResults) -> bool {
    a.labels() == b.labels()
        && a.distances()
            .iter()
            .zip(b.distances())
            .all(|(x, y)| x.to_bits() == y.to_bits())
}

const SAVED: &[(&str, &str)] = &[
    ("Flat", ""),
    ("IDMap2,Flat", ""),
    ("PQ8", ""),
    ("SQ8", ""),
    ("PCA16,SQ4", ""),
    ("OPQ8_32,PQ8", ""),
    ("RR,Flat", ""),
    ("IVF16,Flat", "nprobe=4"),
    ("IVF16,PQ8", "nprobe=4"),
    ("L2norm,IVF16,SQ8", "nprobe=4"),
    ("IMI2x3,PQ8", "nprobe=8"),
    ("HNSW8", "efSearch=32"),
    ("HNSW8_SQ8", "efSearch=32"),
    ("IVF16_HNSW8,Flat", "nprobe=4,quantizer_efSearch=16"),
    ("IVF16,PQ8,RFlat", "nprobe=4,k_factor_rf=4"),
    ("IVF16(HNSW8),Flat", "nprobe=4,quantizer_efSearch=8"),
    ("IVF16(SQ8),PQ8", "nprobe=4"),
    ("PQ8x4fs", ""),
    ("IVF16,PQ8x4fs", "nprobe=4"),
    ("IVF16,PQ8x4fsr_64,RFlat", "nprobe=4,k_factor_rf=4"),
    ("IMI2x3,PQ8x4fsr", "nprobe=8"),
    (
        "IDMap,OPQ8,IVF16,SQ8,Refine(SQfp16)",
        "nprobe=4,k_factor_rf=2",
    ),
];

#[test]
fn save_then_load_or_mmap_gives_identical_results() {
    let (x, q) = data(3000, 32, 30);
    let dir = tempfile::tempdir().unwrap();
    for &(s, params) in SAVED {
        let mut ix = index_factory(32, s, Metric::L2).unwrap();
        ix.train(x.as_ref()).unwrap();
        if s.starts_with("IDMap") {
            let ids: Vec<i64> = (0..x.len() as i64).map(|i| 7 * i + 3).collect();
            ix.add_with_ids(x.as_ref(), &ids).unwrap();
        } else {
            ix.add(x.as_ref()).unwrap();
        }
        set_params(&mut ix, params).unwrap_or_else(|e| panic!("{s}: {e}"));
        let want = ix.search(q.as_ref(), 10, &SearchParams::new()).unwrap();
        let path = dir.path().join("index.vqi");
        ix.save(&path).unwrap_or_else(|e| panic!("{s}: {e}"));
        for (how, back) in [("load", load_index(&path)), ("mmap", mmap_index(&path))] {
            let back = back.unwrap_or_else(|e| panic!("{s} ({how}): {e}"));
            assert_eq!(back.describe(), ix.describe());
            assert_eq!(back.len(), ix.len());
            let got = back.search(q.as_ref(), 10, &SearchParams::new()).unwrap();
            assert!(same(&want, &got), "{s} ({how}): results differ");
        }
    }
}

#[test]
fn a_mapped_ivf_refuses_to_grow_and_a_loaded_one_does_not() {
    let (x, _) = data(2000, 16, 1);
    let mut ix = index_factory(16, "IVF8,SQ8", Metric::L2).unwrap();
    ix.train(x.as_ref()).unwrap();
    ix.add(x.as_ref()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ivf.vqi");
    ix.save(&path).unwrap();
    let mut mapped = mmap_index(&path).unwrap();
    assert!(mapped.add(x.as_ref()).is_err());
    assert_eq!(mapped.len(), 2000);
    let mut loaded = load_index(&path).unwrap();
    loaded.add(x.as_ref()).unwrap();
    assert_eq!(loaded.len(), 4000);
}

#[test]
fn truncated_corrupt_and_future_files_are_errors() {
    let (x, _) = data(500, 8, 1);
    let f = Factory::new();
    for s in ["IVF4,PQ4", "HNSW4", "PCA4,Flat,RFlat"] {
        let mut ix = f.index(8, s, Metric::L2).unwrap();
        ix.train(x.as_ref()).unwrap();
        ix.add(x.as_ref()).unwrap();
        let mut bytes = Vec::new();
        ix.write_to(&mut bytes).unwrap();
        f.load_bytes(bytes.clone()).unwrap();
        let step = (bytes.len() / 97).max(1);
        for cut in (0..bytes.len()).step_by(step) {
            assert!(
                f.load_bytes(bytes[..cut].to_vec()).is_err(),
                "{s}: cut at {cut}"
            );
        }
        for at in (0..bytes.len()).step_by(step) {
            let mut b = bytes.clone();
            b[at] ^= 0x5a;
            // Either refused, or the flip hit padding and the index is unchanged.
            if let Ok(back) = f.load_bytes(b) {
                assert_eq!(back.len(), ix.len(), "{s}: flip at {at}");
            }
        }
    }
    // A section this build does not know (as a newer vq would write) is refused.
    let ix = f.index(8, "Flat", Metric::L2).unwrap();
    let mut bytes = Vec::new();
    {
        let mut w = StateWriter::new(&mut bytes).unwrap();
        w.put_str("factory", "Flat").unwrap();
        w.put_usize("dim", 8).unwrap();
        w.put_str("metric", "l2").unwrap();
        w.scope("index", |w| {
            ix.save_state(w)?;
            w.put_u64("future_feature", 1)
        })
        .unwrap();
        w.finish().unwrap();
    }
    let e = f.load_bytes(bytes).unwrap_err().to_string();
    assert!(e.contains("unknown section `index/future_feature`"), "{e}");
    // A string this build cannot parse, and a missing file.
    let mut bytes = Vec::new();
    {
        let mut w = StateWriter::new(&mut bytes).unwrap();
        w.put_str("factory", "NSG32,Flat").unwrap();
        w.put_usize("dim", 8).unwrap();
        w.put_str("metric", "l2").unwrap();
        w.finish().unwrap();
    }
    assert!(f.load_bytes(bytes).is_err());
    assert!(load_index("/nonexistent/dir/index.vqi").is_err());
}

#[test]
fn parameters_set_by_string_equal_parameters_set_by_type() {
    let (x, q) = data(3000, 16, 20);
    for (s, params) in [
        ("IVF32,Flat", "nprobe=5"),
        ("PCA8,IVF32,SQ8", "nprobe=7,max_codes=300"),
        ("IDMap,HNSW8", "efSearch=24"),
        ("IVF32_HNSW8,Flat", "nprobe=3,quantizer_efSearch=20"),
        ("IVF32,PQ4,RFlat", "nprobe=4,k_factor_rf=3"),
    ] {
        let mut ix = index_factory(16, s, Metric::L2).unwrap();
        ix.train(x.as_ref()).unwrap();
        if s.starts_with("IDMap") {
            let ids: Vec<i64> = (0..x.len() as i64).collect();
            ix.add_with_ids(x.as_ref(), &ids).unwrap();
        } else {
            ix.add(x.as_ref()).unwrap();
        }
        let per_call = SearchParams::parse(params).unwrap();
        let want = ix.search(q.as_ref(), 10, &per_call).unwrap();
        let default = ix.search(q.as_ref(), 10, &SearchParams::new()).unwrap();
        ix.set_params(params).unwrap();
        let got = ix.search(q.as_ref(), 10, &SearchParams::new()).unwrap();
        assert!(same(&want, &got), "{s}: {params}");
        assert!(
            !same(&default, &got) || s.contains("HNSW8"),
            "{s}: the parameters changed nothing"
        );
        assert!(ix.set_params("nprobes=3").is_err());
        assert!(ix.set_params("nprobe=0").is_err());
    }
    // Typed and string forms of the per-call parameters agree.
    let p = SearchParams::parse("nprobe=16,efSearch=64").unwrap();
    let t = SearchParams::new().with_nprobe(16).with_ef_search(64);
    assert_eq!(p.to_string(), t.to_string());
    // A name the index does not have is refused, and nothing is set.
    let mut ix = index_factory(16, "IVF32,Flat", Metric::L2).unwrap();
    assert!(set_params(&mut ix, "nprobe=4,efSearch=10").is_err());
    assert!(
        set_params(
            &mut index_factory(16, "Flat", Metric::L2).unwrap(),
            "nprobe=2"
        )
        .is_err()
    );
}

#[test]
fn registered_codec_example_runs() {
    let recall = custom_codec::run().unwrap();
    assert!(recall > 0.9, "recall {recall}");
    let f = custom_codec::factory().unwrap();
    assert_eq!(
        f.parse("PCA16,IVF64,Grid16").unwrap().to_string(),
        "PCA16,IVF64,Grid16"
    );
    let ix = f.index(32, "Grid8", Metric::L2).unwrap();
    assert_eq!(ix.bytes_per_vector(), 32.0);
    // Bad arguments and unregistered factories are errors, not panics.
    assert!(f.index(32, "Gridx", Metric::L2).is_err());
    assert!(f.index(32, "HNSW8_Grid16", Metric::L2).is_err());
    assert!(index_factory(32, "IVF64,Grid16", Metric::L2).is_err());
    let mut g = custom_codec::factory().unwrap();
    assert!(
        g.register_codec("Grid", |_, d| Ok(Box::new(vq_core::FlatCodec::new(d)?)))
            .is_err()
    );
    assert!(
        g.register_codec("9Lives", |_, d| Ok(Box::new(vq_core::FlatCodec::new(d)?)))
            .is_err()
    );
    g.register_transform("Neg", |_, d| Ok(Box::new(vq_core::L2Normalize::new(d)?)))
        .unwrap();
    assert_eq!(
        g.index(32, "Neg,Grid16", Metric::L2).unwrap().describe(),
        "Neg,Grid16"
    );
}

/// Encodings of inverted files: any of [`arb_encoding`], and fast-scan PQ by residual.
fn arb_ivf_encoding() -> impl Strategy<Value = EncodingSpec> {
    prop_oneof![
        arb_encoding(),
        (1usize..64, any::<bool>(), 1usize..4).prop_map(|(m, by_residual, b)| {
            EncodingSpec::PqFastScan {
                m,
                by_residual,
                bbs: 32 * b,
            }
        }),
    ]
}

/// Stand-alone encodings.
fn arb_codes() -> impl Strategy<Value = EncodingSpec> {
    prop_oneof![
        arb_encoding(),
        (1usize..64, 1usize..4).prop_map(|(m, b)| EncodingSpec::PqFastScan {
            m,
            by_residual: false,
            bbs: 32 * b,
        }),
    ]
}

/// Graph storages (and the common base of the others).
fn arb_encoding() -> impl Strategy<Value = EncodingSpec> {
    prop_oneof![
        Just(EncodingSpec::Flat),
        (1usize..64, 1usize..17).prop_map(|(m, nbits)| EncodingSpec::Pq { m, nbits }),
        prop_oneof![
            Just(SqType::Q8),
            Just(SqType::Q4),
            Just(SqType::Fp16),
            Just(SqType::Q8Direct)
        ]
        .prop_map(EncodingSpec::Sq),
    ]
}

fn arb_transform() -> impl Strategy<Value = TransformSpec> {
    prop_oneof![
        Just(TransformSpec::L2Norm),
        (1usize..512, any::<bool>(), any::<bool>()).prop_map(|(d_out, whiten, rotate)| {
            TransformSpec::Pca {
                d_out,
                whiten,
                rotate,
            }
        }),
        (1usize..64, proptest::option::of(1usize..512))
            .prop_map(|(m, d_out)| TransformSpec::Opq { m, d_out }),
        proptest::option::of(1usize..512).prop_map(|d_out| TransformSpec::RandomRotation { d_out }),
    ]
}

/// Specs in the shapes the parser produces (transforms never wrap refinement or id maps).
fn arb_spec() -> impl Strategy<Value = FactorySpec> {
    let core = prop_oneof![
        arb_codes().prop_map(FactorySpec::Codes),
        (1usize..64, arb_encoding()).prop_map(|(m, storage)| FactorySpec::Hnsw { m, storage }),
        (1usize..1 << 20, arb_ivf_encoding()).prop_map(|(nlist, encoding)| FactorySpec::Ivf {
            coarse: CoarseSpec::Ivf { nlist },
            encoding
        }),
        (1usize..20, arb_ivf_encoding()).prop_map(|(bits, encoding)| FactorySpec::Ivf {
            coarse: CoarseSpec::Imi { bits },
            encoding
        }),
        (1usize..5000, 1usize..64, arb_ivf_encoding()).prop_map(|(nlist, m, encoding)| {
            FactorySpec::Ivf {
                coarse: CoarseSpec::IvfHnsw { nlist, m },
                encoding,
            }
        }),
    ];
    let with_transforms =
        (proptest::collection::vec(arb_transform(), 0..3), core).prop_map(|(chain, inner)| {
            if chain.is_empty() {
                inner
            } else {
                FactorySpec::PreTransform {
                    chain,
                    inner: Box::new(inner),
                }
            }
        });
    let refined = with_transforms.prop_recursive(3, 12, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(b, r)| FactorySpec::Refine {
                base: Box::new(b),
                refine: Box::new(r)
            }),
            (1usize..5000, inner.clone(), arb_ivf_encoding()).prop_map(|(nlist, q, encoding)| {
                FactorySpec::Ivf {
                    coarse: CoarseSpec::IvfIndex {
                        nlist,
                        quantizer: Box::new(q),
                    },
                    encoding,
                }
            }),
            (inner, any::<bool>()).prop_map(|(b, two)| FactorySpec::Refine {
                base: Box::new(b),
                refine: Box::new(FactorySpec::Codes(if two {
                    EncodingSpec::Flat
                } else {
                    EncodingSpec::Sq(SqType::Q8)
                })),
            }),
        ]
    });
    (proptest::option::of(any::<bool>()), refined).prop_map(|(id, spec)| match id {
        None => spec,
        Some(two) => FactorySpec::IdMap {
            kind: if two {
                IdMapKind::IdMap2
            } else {
                IdMapKind::IdMap
            },
            inner: Box::new(spec),
        },
    })
}

proptest! {
    #[test]
    fn parse_of_print_is_the_spec(spec in arb_spec()) {
        let s = spec.to_string();
        prop_assert_eq!(FactorySpec::parse(&s).unwrap(), spec, "{}", s);
    }

    #[test]
    fn parsing_any_string_never_panics_and_spans_lie_inside(
        s in "[A-Za-z0-9_,() é]{0,40}",
        words in proptest::collection::vec(
            prop_oneof![
                Just("IVF16"), Just("Flat"), Just("PQ8"), Just("("), Just(")"), Just(","),
                Just("HNSW"), Just("RFlat"), Just("Refine("), Just("IDMap"), Just("PCA8"),
                Just("_"), Just("x"), Just("SQ8"), Just("é"), Just(" "),
            ],
            0..12,
        ),
    ) {
        for input in [s, words.concat()] {
            match FactorySpec::parse(&input) {
                Ok(spec) => {
                    // (Not built: a random `IVF…` count could ask for any amount of memory.)
                    prop_assert_eq!(FactorySpec::parse(&spec.to_string()).unwrap(), spec);
                }
                Err(e) => {
                    prop_assert!(e.span.start <= e.span.end && e.span.end <= input.len());
                    prop_assert!(input.is_char_boundary(e.span.start));
                    prop_assert!(input.is_char_boundary(e.span.end));
                    let _ = e.to_string();
                }
            }
        }
    }

    #[test]
    fn loading_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = Factory::new().load_bytes(bytes);
    }
}

#[test]
fn hostile_strings_are_refused_quickly_and_without_huge_allocations() {
    // Nested sub-indexes with an error at the bottom: linear work, not exponential.
    let s = format!("{}X{}", "Flat,IVF1(".repeat(12), ")".repeat(12));
    let t = std::time::Instant::now();
    assert!(FactorySpec::parse(&s).is_err());
    assert!(t.elapsed().as_secs_f64() < 1.0);
    let nest = |depth: usize| (0..depth).fold("Flat".to_string(), |s, _| format!("IVF2({s}),Flat"));
    let e = FactorySpec::parse(&nest(100)).unwrap_err();
    assert_eq!(e.kind, ParseErrorKind::TooComplex, "{e}");
    let ok = nest(vq_factory::MAX_DEPTH);
    assert_eq!(FactorySpec::parse(&ok).unwrap().to_string(), ok);
    assert!(FactorySpec::parse(&nest(vq_factory::MAX_DEPTH + 1)).is_err());
    let long = "L2norm,".repeat(1000) + "Flat";
    assert_eq!(
        FactorySpec::parse(&long).unwrap_err().kind,
        ParseErrorKind::TooComplex
    );
    // Dimensions a string asks for are bounded before anything is allocated.
    for s in [
        "RR1000000000000,SQfp16",
        "OPQ8_1000000000000,Flat",
        "PCA99999999999,Flat",
    ] {
        assert!(index_factory(8, s, Metric::L2).is_err(), "{s}");
    }
    assert!(index_factory(1 << 30, "Flat", Metric::L2).is_err());
}

#[test]
fn faiss_rule_order_for_id_maps_and_registered_names() {
    // After the transforms, the rest is parsed with every rule again (Faiss).
    let spec = FactorySpec::parse("L2norm,IDMap,Flat").unwrap();
    assert_eq!(spec.to_string(), "L2norm,IDMap,Flat");
    assert!(matches!(spec, FactorySpec::PreTransform { .. }));
    let mut ix = spec.build(4, Metric::InnerProduct).unwrap();
    ix.add_with_ids(
        vq_core::VectorsRef::new(&[1.0, 0.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0], 4).unwrap(),
        &[5, 9],
    )
    .unwrap();
    // One id map per index, and none inside parentheses.
    for s in [
        "IDMap,L2norm,IDMap2,Flat",
        "IVF16(IDMap,Flat),Flat",
        "Flat,Refine(IDMap,Flat)",
    ] {
        let e = FactorySpec::parse(s).unwrap_err();
        assert!(matches!(e.kind, ParseErrorKind::Misplaced(_)), "{s}: {e}");
    }
    // Registered names never take a built-in token.
    let mut f = Factory::new();
    f.register_transform("H", |_, d| Ok(Box::new(vq_core::L2Normalize::new(d)?)))
        .unwrap();
    f.register_codec("I", |_, d| Ok(Box::new(vq_core::FlatCodec::new(d)?)))
        .unwrap();
    assert_eq!(f.parse("HNSW32").unwrap().to_string(), "HNSW32");
    assert_eq!(f.parse("IVF100,Flat").unwrap().to_string(), "IVF100,Flat");
    assert_eq!(f.parse("H2,IVF100,I7").unwrap().to_string(), "H2,IVF100,I7");
}

/// An id map over an index that keeps its ids after removals (graphs, inverted files)
/// answers with the same ids as one over a flat index that renumbers them: removed ids
/// never come back, kept ids still find their vectors, and adding again, saving and
/// loading go on from there.
#[test]
fn id_maps_translate_removals_of_every_inner_index() {
    let (x, q) = data(1200, 16, 20);
    let ids: Vec<i64> = (0..1000).map(|i| 100 + 3 * i).collect();
    let removed = vq_core::IdSelector::set(ids.iter().copied().filter(|id| id % 2 == 0));
    let more: Vec<i64> = (0..200).map(|i| -5 - i).collect();
    let dir = tempfile::tempdir().unwrap();
    let reference = |kind: &str| {
        let mut ix = index_factory(16, &format!("{kind},Flat"), Metric::L2).unwrap();
        ix.add_with_ids(x.as_ref().slice(0..1000), &ids).unwrap();
        ix.remove_ids(&removed).unwrap();
        ix.add_with_ids(x.as_ref().slice(1000..1200), &more)
            .unwrap();
        ix
    };
    for kind in ["IDMap", "IDMap2"] {
        let want = reference(kind)
            .search(q.as_ref(), 10, &SearchParams::new())
            .unwrap();
        for (inner, params) in [
            ("HNSW16", "efSearch=400"),
            ("IVF8,Flat", "nprobe=8"),
            ("IVF8_HNSW8,Flat", "nprobe=8,quantizer_efSearch=16"),
            ("PCA16,IVF8,Flat", "nprobe=8"),
        ] {
            let s = format!("{kind},{inner}");
            let mut ix = index_factory(16, &s, Metric::L2).unwrap();
            ix.train(x.as_ref()).unwrap();
            ix.add_with_ids(x.as_ref().slice(0..1000), &ids).unwrap();
            assert_eq!(ix.remove_ids(&removed).unwrap(), 500, "{s}");
            assert_eq!(ix.len(), 500);
            ix.add_with_ids(x.as_ref().slice(1000..1200), &more)
                .unwrap();
            set_params(&mut ix, params).unwrap();
            let got = ix.search(q.as_ref(), 10, &SearchParams::new()).unwrap();
            assert_eq!(got.labels(), want.labels(), "{s}");
            // (Inverted files reconstruct only with a direct map, as in Faiss.)
            if kind == "IDMap2" && inner.starts_with("HNSW") {
                assert_eq!(ix.reconstruct(103).unwrap(), x.row(1), "{s}");
                assert_eq!(ix.reconstruct(-5 - 199).unwrap(), x.row(1199), "{s}");
                assert!(ix.reconstruct(100).is_err(), "{s}");
                // A removed id can come back, a kept one cannot be added twice.
                ix.add_with_ids(x.as_ref().slice(0..1), &[100]).unwrap();
                assert!(ix.add_with_ids(x.as_ref().slice(1..2), &[103]).is_err());
                assert_eq!(ix.reconstruct(100).unwrap(), x.row(0), "{s}");
            }
            let path = dir.path().join("m.vqi");
            ix.save(&path).unwrap();
            let back = load_index(&path).unwrap();
            assert!(
                same(
                    &back.search(q.as_ref(), 10, &SearchParams::new()).unwrap(),
                    &ix.search(q.as_ref(), 10, &SearchParams::new()).unwrap()
                ),
                "{s}: reloaded"
            );
            // Faiss's id map has no gaps: writing one for Faiss is refused, not mangled.
            let mut out = Vec::new();
            assert!(
                vq_factory::faiss_io::write_index_to(&ix, &mut out).is_err(),
                "{s}"
            );
        }
    }
}
