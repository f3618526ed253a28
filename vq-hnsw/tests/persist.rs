//! Saving and loading HNSW indexes through the section container: bit-identical search
//! after a round trip (read and memory-mapped), mismatched and corrupt files, the
//! index-resident `efSearch`.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use vq_core::persist::StateReader;
use vq_core::synthetic::{SyntheticData, SyntheticSpec};
use vq_core::{IdSelector, Index, Metric, SearchParams, VectorsRef};
use vq_hnsw::{IndexHnswFlat, IndexHnswPq, IndexHnswSq};
use vq_pq::SqType;

fn data(n: usize, d: usize) -> SyntheticData {
    SyntheticSpec::new(n, d, 40).generate().unwrap()
}

fn save(index: &dyn Index) -> Vec<u8> {
    vq_core::testing::state_bytes(index).unwrap()
}

fn load_read<I: Index>(fresh: I, bytes: &[u8]) -> vq_core::Result<I> {
    vq_core::testing::load_state_bytes(fresh, bytes, None)
}

fn load_mmap<I: Index>(fresh: I, bytes: &[u8], dir: &Path) -> vq_core::Result<I> {
    vq_core::testing::load_state_bytes(fresh, bytes, Some(dir))
}

fn assert_same_search(a: &dyn Index, b: &dyn Index, q: VectorsRef<'_>) {
    for p in [
        SearchParams::default(),
        SearchParams::new().with_ef_search(8),
        SearchParams::new().with_ef_search(64),
    ] {
        let x = a.search(q, 10, &p).unwrap();
        let y = b.search(q, 10, &p).unwrap();
        assert!(x.labels() == y.labels(), "labels differ");
        let bits = |r: &[f32]| r.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert!(
            bits(x.distances()) == bits(y.distances()),
            "distances differ"
        );
    }
}

fn round_trip<I: Index>(index: &I, fresh: impl Fn() -> I, q: VectorsRef<'_>) {
    let bytes = save(index);
    let a = load_read(fresh(), &bytes).unwrap();
    assert_eq!(a.len(), index.len());
    assert_same_search(index, &a, q);
    let dir = tempfile::tempdir().unwrap();
    let b = load_mmap(fresh(), &bytes, dir.path()).unwrap();
    assert_eq!(b.len(), index.len());
    assert_same_search(index, &b, q);
    // Saved again, the loaded indexes load to the same index once more.
    let c = load_read(fresh(), &save(&b)).unwrap();
    assert_same_search(index, &c, q);
}

#[test]
fn hnsw_flat_round_trips_read_and_mmap() {
    let d = 16;
    let x = data(3_000, d);
    let mut index = IndexHnswFlat::new(d, 16, Metric::L2).unwrap();
    index.add(x.base.as_ref()).unwrap();
    index.set_search_param("efSearch", "24").unwrap();
    round_trip(
        &index,
        || IndexHnswFlat::new(d, 16, Metric::L2).unwrap(),
        x.queries.as_ref(),
    );
    let loaded = load_read(
        IndexHnswFlat::new(d, 16, Metric::L2).unwrap(),
        &save(&index),
    )
    .unwrap();
    assert_eq!(loaded.graph().ef_search(), 24);
    loaded.check_graph().unwrap();
}

#[test]
fn hnsw_flat_with_removals_and_ids_round_trips_and_stays_writable() {
    let d = 8;
    let x = data(2_000, d);
    let mut index = IndexHnswFlat::new(d, 8, Metric::InnerProduct).unwrap();
    let ids: Vec<i64> = (0..2_000).map(|i| 10 * i + 3).collect();
    index.add_with_ids(x.base.as_ref(), &ids).unwrap();
    index.remove_ids(&IdSelector::range(0, 5_000)).unwrap();
    let fresh = || IndexHnswFlat::new(d, 8, Metric::InnerProduct).unwrap();
    round_trip(&index, fresh, x.queries.as_ref());
    // A loaded index (either mode) takes more vectors like the original.
    let bytes = save(&index);
    let dir = tempfile::tempdir().unwrap();
    let mut a = load_mmap(fresh(), &bytes, dir.path()).unwrap();
    a.set_deterministic(true);
    index.set_deterministic(true);
    a.add(x.queries.as_ref()).unwrap();
    index.add(x.queries.as_ref()).unwrap();
    assert_same_search(&index, &a, x.queries.as_ref());
}

#[test]
fn hnsw_sq8_round_trips() {
    let d = 16;
    let x = data(2_000, d);
    let mut index = IndexHnswSq::new_sq(d, 16, SqType::Q8, Metric::L2).unwrap();
    index.train(x.base.as_ref()).unwrap();
    index.add(x.base.as_ref()).unwrap();
    round_trip(
        &index,
        || IndexHnswSq::new_sq(d, 16, SqType::Q8, Metric::L2).unwrap(),
        x.queries.as_ref(),
    );
    // Another SQ type is refused, and the index is left as it was.
    let mut other = IndexHnswSq::new_sq(d, 16, SqType::Q4, Metric::L2).unwrap();
    let mut r = StateReader::from_bytes(save(&index), "memory").unwrap();
    assert!(other.load_state(&mut r).is_err());
    assert!(!other.is_trained());
}

#[test]
fn hnsw_pq_round_trips() {
    let d = 16;
    let x = data(2_000, d);
    let mut index = IndexHnswPq::new_pq(d, 8, 4, 6, Metric::L2).unwrap();
    index.train(x.base.as_ref()).unwrap();
    index.add(x.base.as_ref()).unwrap();
    round_trip(
        &index,
        || IndexHnswPq::new_pq(d, 8, 4, 6, Metric::L2).unwrap(),
        x.queries.as_ref(),
    );
}

#[test]
fn mismatched_indexes_refuse_the_file_unchanged() {
    let d = 8;
    let x = data(500, d);
    let mut index = IndexHnswFlat::new(d, 16, Metric::L2).unwrap();
    index.add(x.base.as_ref()).unwrap();
    let bytes = save(&index);
    for mut other in [
        IndexHnswFlat::new(d, 32, Metric::L2).unwrap(),
        IndexHnswFlat::new(d + 1, 16, Metric::L2).unwrap(),
        IndexHnswFlat::new(d, 16, Metric::InnerProduct).unwrap(),
    ] {
        let mut r = StateReader::from_bytes(bytes.clone(), "memory").unwrap();
        assert!(other.load_state(&mut r).is_err(), "{}", other.describe());
    }
    let sq = IndexHnswSq::new_sq(d, 16, SqType::Q8, Metric::L2).unwrap();
    assert!(load_read(sq, &bytes).is_err());
    // A refused load leaves the index as it was.
    let mut r = StateReader::from_bytes(save(&index), "memory").unwrap();
    let mut m32 = IndexHnswFlat::new(d, 32, Metric::L2).unwrap();
    m32.add(x.queries.as_ref()).unwrap();
    assert!(m32.load_state(&mut r).is_err());
    assert_eq!(m32.len(), x.queries.len());
    assert_eq!(m32.describe(), "HNSW32");
}

// ------------------------------------------------------------- hostile files

use vq_core::testing::patch_section;

#[test]
fn corrupt_graph_sections_are_errors_not_panics() {
    let d = 4;
    let x = data(200, d);
    let mut index = IndexHnswFlat::new(d, 4, Metric::L2).unwrap();
    index.add(x.base.as_ref()).unwrap();
    let good = save(&index);
    let fresh = || IndexHnswFlat::new(d, 4, Metric::L2).unwrap();
    // Truncated and padded streams.
    let mut b = good.clone();
    patch_section(&mut b, "hnsw", 1, |_| {});
    assert!(load_read(fresh(), &b).is_err());
    // Every byte of the stream flipped in turn: an error or a valid graph, never a
    // panic (the vectors themselves carry no structure to check).
    let len = {
        let mut r = StateReader::from_bytes(good.clone(), "m").unwrap();
        r.get_bytes("hnsw").unwrap().len()
    };
    let mut accepted = 0;
    for i in 0..len {
        for mask in [0x01, 0x80] {
            let mut b = good.clone();
            patch_section(&mut b, "hnsw", 0, |p| p[i] ^= mask);
            if let Ok(idx) = load_read(fresh(), &b) {
                accepted += 1;
                idx.check_graph().unwrap();
                idx.search(x.queries.as_ref(), 3, &SearchParams::default())
                    .ok();
            }
        }
    }
    assert!(accepted < 2 * len, "{accepted}");
}

// ------------------------------------------------------------- search params

#[test]
fn ef_search_param_equals_per_call_ef_search() {
    let d = 16;
    let x = data(3_000, d);
    let mut index = IndexHnswFlat::new(d, 8, Metric::L2).unwrap();
    index.add(x.base.as_ref()).unwrap();
    let q = x.queries.as_ref();
    let per_call = index
        .search(q, 10, &SearchParams::new().with_ef_search(40))
        .unwrap();
    index.set_search_param("efSearch", "40").unwrap();
    let resident = index.search(q, 10, &SearchParams::default()).unwrap();
    assert_eq!(resident.labels(), per_call.labels());
    assert_eq!(resident.distances(), per_call.distances());
    assert_eq!(index.graph().ef_search(), 40);
    for (name, value) in [
        ("efSearch", "0"),
        ("efSearch", "-3"),
        ("efSearch", "many"),
        ("nprobe", "4"),
        ("efConstruction", "40"),
    ] {
        assert!(
            index.set_search_param(name, value).is_err(),
            "{name}={value}"
        );
    }
    assert_eq!(index.graph().ef_search(), 40);
}
