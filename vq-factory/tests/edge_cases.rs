//! Regression tests for what an API review of the factory found: reconstructing through
//! `L2norm`, refinements by transformed indexes, malformed coarse counts, the
//! `k_factor` alias at any nesting, nested refinements in autotune, and Faiss files of
//! untrained indexes.
#![allow(clippy::unwrap_used)]

use vq_core::{Index, Metric, SearchParams, Vectors};
use vq_factory::autotune::ParameterSpace;
use vq_factory::{FactoryIndex, FactorySpec, ParseErrorKind, index_factory};

fn data(n: usize, d: usize, nq: usize) -> (Vectors, Vectors) {
    let s = vq_core::synthetic::SyntheticSpec::new(n, d, nq)
        .with_seed(7)
        .generate()
        .unwrap();
    (s.base, s.queries)
}

fn build(d: usize, s: &str, m: Metric, x: &Vectors) -> FactoryIndex {
    let mut ix = index_factory(d, s, m).unwrap();
    ix.train(x.as_ref()).unwrap();
    if s.starts_with("IDMap") {
        let ids: Vec<i64> = (0..x.len() as i64).map(|i| 1000 + 3 * i).collect();
        ix.add_with_ids(x.as_ref(), &ids).unwrap();
    } else {
        ix.add(x.as_ref()).unwrap();
    }
    ix
}

#[test]
fn reconstructing_through_l2norm_gives_the_unit_vectors() {
    let (x, _) = data(200, 8, 1);
    for (s, id) in [("L2norm,Flat", 7), ("IDMap2,L2norm,Flat", 1000 + 3 * 7)] {
        let ix = build(8, s, Metric::InnerProduct, &x);
        let v = ix.reconstruct(id).unwrap();
        let n = x.row(7).iter().map(|v| v * v).sum::<f32>().sqrt();
        for (a, b) in v.iter().zip(x.row(7)) {
            assert!((a - b / n).abs() < 1e-5, "{s}");
        }
    }
}

#[test]
fn a_refinement_by_a_transformed_index_ranks_as_that_index() {
    let (x, q) = data(1000, 16, 20);
    let all = SearchParams::parse("k_factor_rf=100").unwrap();
    for (refined, direct, metric) in [
        ("Flat,Refine(PCAW16,Flat)", "PCAW16,Flat", Metric::L2),
        (
            "Flat,Refine(L2norm,Flat)",
            "L2norm,Flat",
            Metric::InnerProduct,
        ),
    ] {
        let a = build(16, refined, metric, &x)
            .search(q.as_ref(), 10, &all)
            .unwrap();
        let b = build(16, direct, metric, &x)
            .search(q.as_ref(), 10, &SearchParams::new())
            .unwrap();
        assert_eq!(a.labels(), b.labels(), "{refined}");
        for (u, v) in a.distances().iter().zip(b.distances()) {
            assert!(
                (u - v).abs() <= 1e-4 * (1.0 + v.abs()),
                "{refined}: {u} vs {v}"
            );
        }
    }
}

#[test]
fn malformed_coarse_counts_are_named_as_such() {
    for (s, tok) in [
        ("IVF,Flat", "IVF"),
        ("IVF99999999999999999999,Flat", "IVF99999999999999999999"),
        ("IVFx,Flat", "IVFx"),
        ("IVF0_HNSW32,Flat", "IVF0_HNSW32"),
        ("IMI2x,Flat", "IMI2x"),
        ("IMI3x4,Flat", "IMI3x4"),
    ] {
        let e = FactorySpec::parse(s).unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::BadCount(tok.into()), "{s}: {e}");
        assert_eq!(e.span.start, 0, "{s}");
        assert!(e.to_string().contains("needs a count"), "{e}");
    }
    // A count that reads, with a variant vq does not provide.
    let e = FactorySpec::parse("IVF1024_NSG32,Flat").unwrap_err();
    assert_eq!(
        e.kind,
        ParseErrorKind::NotAvailableYet("IVF1024_NSG32".into())
    );
}

#[test]
fn nested_k_factors_are_set_by_either_name_and_tuned_once() {
    let (x, _) = data(1000, 16, 1);
    let mut ix = build(16, "IVF16(SQ4,RFlat),Flat", Metric::L2, &x);
    ix.set_params("quantizer_k_factor=8").unwrap();
    ix.set_params("quantizer_k_factor_rf=4").unwrap();
    assert!(ix.set_params("quantizer_k_factor_x=4").is_err());
    // A refinement of a refinement: `k_factor_rf` (the outer one) is listed once.
    let ix = build(16, "IVF8,PQ4,RFlat,Refine(SQ8)", Metric::L2, &x);
    let names = ix.search_param_names();
    assert_eq!(
        names.iter().filter(|n| *n == "k_factor_rf").count(),
        1,
        "{names:?}"
    );
    let space = ParameterSpace::for_index(&ix, 10).unwrap();
    let tuned: Vec<&str> = space.ranges().iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        tuned.iter().filter(|n| **n == "k_factor_rf").count(),
        1,
        "{tuned:?}"
    );
}

#[test]
fn untrained_indexes_are_not_written_for_faiss() {
    let (x, _) = data(2000, 16, 1);
    for s in [
        "PQ4",
        "SQ8",
        "IVF8,PQ4",
        "IVF8,SQ8",
        "PCA8,Flat",
        "IMI2x2,Flat",
    ] {
        let ix = index_factory(16, s, Metric::L2).unwrap();
        let mut b = Vec::new();
        let e = vq_factory::faiss_io::write_index_to(&ix, &mut b).unwrap_err();
        assert!(e.to_string().contains("untrained"), "{s}: {e}");
        assert!(b.is_empty());
        let ix = build(16, s, Metric::L2, &x);
        vq_factory::faiss_io::write_index_to(&ix, &mut b).unwrap();
        let back = vq_factory::faiss_io::read_index_bytes(&b).unwrap();
        assert_eq!(back.len(), 2000, "{s}");
    }
}

#[test]
fn an_inverted_file_refines_and_a_failed_add_changes_nothing() {
    let (x, q) = data(2000, 16, 10);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.vqi");
    let all = SearchParams::parse("k_factor_rf=20,nprobe=16").unwrap();
    let flat = build(16, "Flat", Metric::L2, &x);
    let want = flat.search(q.as_ref(), 10, &SearchParams::new()).unwrap();
    // The refinement reconstructs its candidates: the factory gives its IVF a direct map.
    let refined = build(16, "PQ4,Refine(IVF16,Flat)", Metric::L2, &x);
    let got = refined.search(q.as_ref(), 10, &all).unwrap();
    assert!(
        got.labels()
            .iter()
            .zip(want.labels())
            .filter(|(a, b)| a == b)
            .count()
            >= 95
    );
    refined.save(&path).unwrap();
    // Mapped, the inverted file is read-only: an add fails and leaves the base as it was.
    let mut mapped = vq_factory::mmap_index(&path).unwrap();
    assert!(mapped.add(q.as_ref()).is_err());
    assert_eq!(mapped.len(), 2000);
    assert_eq!(
        mapped.search(q.as_ref(), 10, &all).unwrap().labels(),
        got.labels()
    );
}

#[test]
fn a_mapped_index_file_changed_in_place_is_an_error_not_a_fault() {
    let (x, q) = data(2000, 16, 10);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("i.vqi");
    let ix = build(16, "IVF16,Flat", Metric::L2, &x);
    ix.save(&path).unwrap();
    let mapped = vq_factory::mmap_index(&path).unwrap();
    let p = SearchParams::parse("nprobe=16").unwrap();
    let before = mapped.search(q.as_ref(), 5, &p).unwrap();
    // Saved over its own file (renamed into place): the map keeps the file it opened.
    mapped.save(&path).unwrap();
    assert_eq!(
        mapped.search(q.as_ref(), 5, &p).unwrap().labels(),
        before.labels()
    );
    // Cut short in place (what `cp` or a truncation does to a mapped file).
    let again = vq_factory::mmap_index(&path).unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len / 4)
        .unwrap();
    let e = again.search(q.as_ref(), 5, &p).unwrap_err();
    assert!(e.to_string().contains("changed in place"), "{e}");
    assert!(again.save(dir.path().join("copy.vqi")).is_err());
}

/// An index whose second `add` fails (out of memory once).
#[derive(Debug)]
struct FailsOnce<I: Index> {
    inner: I,
    adds: usize,
}

impl<I: Index> Index for FailsOnce<I> {
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn metric(&self) -> Metric {
        self.inner.metric()
    }
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn is_trained(&self) -> bool {
        self.inner.is_trained()
    }
    fn add(&mut self, x: vq_core::VectorsRef<'_>) -> vq_core::Result<()> {
        self.adds += 1;
        if self.adds == 2 {
            return Err(vq_core::Error::invalid_param("memory", "simulated failure"));
        }
        self.inner.add(x)
    }
    fn search_into(
        &self,
        q: vq_core::VectorsRef<'_>,
        k: usize,
        p: &SearchParams<'_>,
        out: &mut vq_core::SearchResults,
    ) -> vq_core::Result<()> {
        self.inner.search_into(q, k, p, out)
    }
    fn reset(&mut self) {
        self.inner.reset()
    }
    fn reconstruct_into(&self, id: vq_core::Label, out: &mut [f32]) -> vq_core::Result<()> {
        self.inner.reconstruct_into(id, out)
    }
    fn remove_ids(&mut self, s: &dyn vq_core::IdFilter) -> vq_core::Result<usize> {
        self.inner.remove_ids(s)
    }
    fn removal_keeps_ids(&self) -> bool {
        self.inner.removal_keeps_ids()
    }
}

#[test]
fn a_refinement_keeps_positions_as_ids_after_a_failed_add() {
    use vq_core::{IndexFlat, IndexRefine};
    let (x, _) = data(450, 8, 1);
    let graph = || vq_hnsw::IndexHnswFlat::new(8, 16, Metric::L2).unwrap();
    let flat = || IndexFlat::new(8, Metric::L2).unwrap();
    let pairs: Vec<(Box<dyn Index>, Box<dyn Index>)> = vec![
        // The refinement fails: nothing was added anywhere.
        (
            Box::new(graph()),
            Box::new(FailsOnce {
                inner: flat(),
                adds: 0,
            }),
        ),
        // The graph fails after the refinement took the batch: given back.
        (
            Box::new(FailsOnce {
                inner: graph(),
                adds: 0,
            }),
            Box::new(flat()),
        ),
    ];
    for (base, refine) in pairs {
        let mut idx = IndexRefine::new(base, refine).unwrap();
        idx.add(x.as_ref().slice(0..200)).unwrap();
        assert!(idx.add(x.as_ref().slice(200..300)).is_err());
        assert_eq!((idx.base().len(), idx.refine().len()), (200, 200));
        idx.add(x.as_ref().slice(200..300)).unwrap();
        idx.add(x.as_ref().slice(300..450)).unwrap();
        let p = SearchParams::new().with_ef_search(64);
        for id in [250, 420] {
            let r = idx.search(x.as_ref().slice(id..id + 1), 1, &p).unwrap();
            assert_eq!(
                (r.row(0).1[0], r.row(0).0[0]),
                (id as i64, 0.0),
                "vector {id}"
            );
        }
    }
}

/// Range search through a refinement: the base's hits, kept when the refinement's
/// distance is inside the radius too, with the refinement's distances (exact for
/// `RFlat`): `Flat,RFlat` equals `Flat`; a PQ base gives a subset of the exact hits
/// with exact distances.
#[test]
fn refinements_range_search_with_the_refined_distances() {
    let d = 16;
    let (x, q) = data(3000, d, 20);
    for metric in [Metric::L2, Metric::InnerProduct] {
        let flat = build(d, "Flat", metric, &x);
        let p = SearchParams::default();
        let radius = flat.search(q.as_ref(), 40, &p).unwrap().row(0).0[39];
        let want = flat.range_search(q.as_ref(), radius, &p).unwrap();
        let refined = build(d, "Flat,RFlat", metric, &x);
        assert_eq!(refined.range_search(q.as_ref(), radius, &p).unwrap(), want);
        let ivfpq = build(d, "IVF16,PQ4,RFlat", metric, &x);
        let p = SearchParams::new().with_nprobe(16);
        let got = ivfpq.range_search(q.as_ref(), radius, &p).unwrap();
        let m = vq_core::eval::RangeMatch::new(&got, &want).unwrap();
        assert_eq!(m.found, m.reported, "{metric}: every hit is a true hit");
        assert!(m.recall().unwrap() > 0.5, "{metric}: {m:?}");
        for i in 0..q.len() {
            let (wd, wl) = want.row(i);
            for (v, l) in got.row(i).0.iter().zip(got.row(i).1) {
                let j = wl.iter().position(|w| w == l).unwrap();
                assert_eq!(*v, wd[j], "{metric}: the exact distance of {l}");
            }
        }
    }
}
