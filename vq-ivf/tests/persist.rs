//! Saving and loading IVF indexes through the section container: bit-identical search
//! after a round trip (read and memory-mapped), read-only mapped lists, hostile files.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vq_core::persist::{LoadMode, StateReader, StateWriter, write_atomic};
use vq_core::synthetic::{SyntheticData, SyntheticSpec};
use vq_core::{Error, IdSelector, Index, IndexFlat, Metric, SearchParams, VectorsRef};
use vq_ivf::{IndexIvf, IndexShards, IvfFlat, IvfPq};
use vq_pq::{ProductQuantizer, SqType};

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

/// Same labels and bit-identical distances, with several parameter sets.
fn assert_same_search(a: &dyn Index, b: &dyn Index, q: VectorsRef<'_>, nprobes: &[usize]) {
    let mut sets = vec![SearchParams::default()];
    sets.extend(nprobes.iter().map(|&n| SearchParams::new().with_nprobe(n)));
    for p in &sets {
        let x = a.search(q, 10, p).unwrap();
        let y = b.search(q, 10, p).unwrap();
        assert_eq!(x.labels(), y.labels(), "{:?}", p.nprobe);
        let bits = |r: &[f32]| r.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(x.distances()), bits(y.distances()), "{:?}", p.nprobe);
    }
}

/// Saves `index`, loads it both ways into `fresh()` and compares searches.
fn round_trip<I: Index>(index: &I, fresh: impl Fn() -> I, q: VectorsRef<'_>, nprobes: &[usize]) {
    let bytes = save(index);
    let a = load_read(fresh(), &bytes).unwrap();
    assert_eq!(a.len(), index.len());
    assert_same_search(index, &a, q, nprobes);
    let dir = tempfile::tempdir().unwrap();
    let b = load_mmap(fresh(), &bytes, dir.path()).unwrap();
    assert_eq!(b.len(), index.len());
    assert_same_search(index, &b, q, nprobes);
    // Saving the loaded indexes gives the same bytes again.
    assert_eq!(save(&a), bytes);
    assert_eq!(save(&b), bytes);
}

fn ivf_flat(d: usize, nlist: usize, x: &SyntheticData) -> vq_ivf::IndexIvfFlat {
    let mut index = IndexIvf::new_flat(d, nlist, Metric::L2).unwrap();
    index.train(x.base.as_ref()).unwrap();
    index.add(x.base.as_ref()).unwrap();
    index
}

#[test]
fn ivf_flat_round_trips_read_and_mmap() {
    let (d, nlist) = (16, 32);
    let x = data(3_000, d);
    let mut index = ivf_flat(d, nlist, &x);
    index.set_nprobe(3).unwrap();
    index.set_max_codes(0);
    round_trip(
        &index,
        || IndexIvf::new_flat(d, nlist, Metric::L2).unwrap(),
        x.queries.as_ref(),
        &[1, 8, nlist],
    );
    let loaded = load_read(
        IndexIvf::new_flat(d, nlist, Metric::L2).unwrap(),
        &save(&index),
    )
    .unwrap();
    assert_eq!(loaded.nprobe(), 3);
    assert_eq!(loaded.list_sizes(), index.list_sizes());
}

#[test]
fn ivf_flat_inner_product_with_direct_map_and_ids() {
    let (d, nlist) = (8, 16);
    let x = data(2_000, d);
    let mut index = IndexIvf::new_flat(d, nlist, Metric::InnerProduct).unwrap();
    index.train(x.base.as_ref()).unwrap();
    let ids: Vec<i64> = (0..2_000).map(|i| 1_000_000 + 7 * i).collect();
    index.add_with_ids(x.base.as_ref(), &ids).unwrap();
    index
        .remove_ids(&IdSelector::range(1_000_000, 1_000_700))
        .unwrap();
    index.make_direct_map(true).unwrap();
    let fresh = || IndexIvf::new_flat(d, nlist, Metric::InnerProduct).unwrap();
    round_trip(&index, fresh, x.queries.as_ref(), &[4, nlist]);
    let bytes = save(&index);
    let dir = tempfile::tempdir().unwrap();
    for loaded in [
        load_read(fresh(), &bytes).unwrap(),
        load_mmap(fresh(), &bytes, dir.path()).unwrap(),
    ] {
        assert!(loaded.has_direct_map());
        let id = 1_000_000 + 7 * 1_500;
        assert_eq!(
            loaded.reconstruct(id).unwrap(),
            index.reconstruct(id).unwrap()
        );
        assert!(loaded.reconstruct(1_000_000).is_err());
    }
}

#[test]
fn imi_flat_round_trips() {
    let d = 16;
    let x = data(4_000, d);
    let mut index = IndexIvf::new_imi(d, 4, IvfFlat::new(d).unwrap()).unwrap();
    index.train(x.base.as_ref()).unwrap();
    index.add(x.base.as_ref()).unwrap();
    round_trip(
        &index,
        || IndexIvf::new_imi(d, 4, IvfFlat::new(d).unwrap()).unwrap(),
        x.queries.as_ref(),
        &[1, 16, 64],
    );
    // An IMI of other bits refuses the file.
    let other = IndexIvf::new_imi(d, 3, IvfFlat::new(d).unwrap()).unwrap();
    assert!(load_read(other, &save(&index)).is_err());
}

#[test]
fn ivf_pq_round_trips_with_and_without_precomputed_tables() {
    let (d, nlist) = (16, 16);
    let x = data(4_000, d);
    for precomputed in [true, false] {
        let mut index = IndexIvf::new_pq(d, nlist, 4, 6, Metric::L2).unwrap();
        index.train(x.base.as_ref()).unwrap();
        index.set_use_precomputed_table(precomputed).unwrap();
        index.add(x.base.as_ref()).unwrap();
        assert_eq!(index.encoding().has_precomputed(), precomputed);
        let fresh = || IndexIvf::new_pq(d, nlist, 4, 6, Metric::L2).unwrap();
        round_trip(&index, fresh, x.queries.as_ref(), &[1, 4, nlist]);
        let loaded = load_read(fresh(), &save(&index)).unwrap();
        assert_eq!(loaded.encoding().has_precomputed(), precomputed);
    }
}

#[test]
fn imi_pq_round_trips() {
    let d = 16;
    let x = data(4_000, d);
    let enc = || IvfPq::new(ProductQuantizer::new(d, 4, 6).unwrap(), true);
    let mut index = IndexIvf::new_imi(d, 3, enc()).unwrap();
    index.train(x.base.as_ref()).unwrap();
    index.add(x.base.as_ref()).unwrap();
    round_trip(
        &index,
        || IndexIvf::new_imi(d, 3, enc()).unwrap(),
        x.queries.as_ref(),
        &[1, 8],
    );
}

#[test]
fn ivf_sq8_round_trips() {
    let (d, nlist) = (16, 16);
    let x = data(3_000, d);
    let mut index = IndexIvf::new_sq(d, nlist, SqType::Q8, Metric::L2).unwrap();
    index.train(x.base.as_ref()).unwrap();
    index.add(x.base.as_ref()).unwrap();
    round_trip(
        &index,
        || IndexIvf::new_sq(d, nlist, SqType::Q8, Metric::L2).unwrap(),
        x.queries.as_ref(),
        &[1, 4, nlist],
    );
    // Another SQ type has another code size: refused.
    let other = IndexIvf::new_sq(d, nlist, SqType::Q4, Metric::L2).unwrap();
    assert!(load_read(other, &save(&index)).is_err());
}

#[test]
fn untrained_and_empty_indexes_round_trip() {
    let index = IndexIvf::new_flat(8, 4, Metric::L2).unwrap();
    let loaded = load_read(IndexIvf::new_flat(8, 4, Metric::L2).unwrap(), &save(&index)).unwrap();
    assert!(!loaded.is_trained());
    assert_eq!(loaded.len(), 0);
    let x = data(500, 8);
    let mut trained = IndexIvf::new_flat(8, 4, Metric::L2).unwrap();
    trained.train(x.base.as_ref()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bytes = save(&trained);
    let loaded = load_mmap(
        IndexIvf::new_flat(8, 4, Metric::L2).unwrap(),
        &bytes,
        dir.path(),
    )
    .unwrap();
    assert!(loaded.is_trained());
    assert_eq!(loaded.len(), 0);
    // Loaded in memory, the trained empty index takes vectors as the original does.
    let mut read = load_read(IndexIvf::new_flat(8, 4, Metric::L2).unwrap(), &bytes).unwrap();
    read.add(x.base.as_ref()).unwrap();
    trained.add(x.base.as_ref()).unwrap();
    assert_same_search(&trained, &read, x.queries.as_ref(), &[2]);
}

#[test]
fn mapped_ivf_is_read_only_until_reset() {
    let (d, nlist) = (8, 8);
    let x = data(1_000, d);
    let index = ivf_flat(d, nlist, &x);
    let dir = tempfile::tempdir().unwrap();
    let mut mapped = load_mmap(
        IndexIvf::new_flat(d, nlist, Metric::L2).unwrap(),
        &save(&index),
        dir.path(),
    )
    .unwrap();
    assert!(
        mapped.lists().describe().contains("mapped"),
        "{}",
        mapped.lists().describe()
    );
    let err = mapped.add(x.queries.as_ref()).unwrap_err();
    assert!(matches!(err, Error::NotSupported { .. }), "{err}");
    assert!(
        err.to_string().contains("memory-mapped index is read-only"),
        "{err}"
    );
    let err = mapped.remove_ids(&IdSelector::range(0, 10)).unwrap_err();
    assert!(err.to_string().contains("read-only"), "{err}");
    assert_eq!(mapped.len(), 1_000);
    assert_same_search(&index, &mapped, x.queries.as_ref(), &[2]);
    // Merging moves the entries out of a mapped index (which is left empty)...
    let mut target = index.empty_clone();
    target.merge_from(&mut mapped, 0).unwrap();
    assert_eq!(mapped.len(), 0);
    assert_same_search(&index, &target, x.queries.as_ref(), &[2]);
    // ... but not into one.
    let mut mapped = load_mmap(
        IndexIvf::new_flat(d, nlist, Metric::L2).unwrap(),
        &save(&index),
        dir.path(),
    )
    .unwrap();
    let mut more = index.empty_clone();
    more.add(x.queries.as_ref()).unwrap();
    assert!(mapped.merge_from(&mut more, 5_000).is_err());
    assert_eq!((mapped.len(), more.len()), (1_000, 40));
    // Reset drops the mapping: the index is empty and writable again.
    mapped.reset();
    assert_eq!(mapped.len(), 0);
    mapped.add(x.base.as_ref()).unwrap();
    assert_same_search(&index, &mapped, x.queries.as_ref(), &[2]);
    // Loading with `Read` gives a writable index.
    let mut read = load_read(
        IndexIvf::new_flat(d, nlist, Metric::L2).unwrap(),
        &save(&index),
    )
    .unwrap();
    read.add(x.queries.as_ref()).unwrap();
    assert_eq!(read.len(), 1_040);
}

#[test]
fn shape_mismatches_are_errors() {
    let x = data(1_000, 8);
    let bytes = save(&ivf_flat(8, 8, &x));
    assert!(load_read(IndexIvf::new_flat(8, 16, Metric::L2).unwrap(), &bytes).is_err());
    assert!(load_read(IndexIvf::new_flat(16, 8, Metric::L2).unwrap(), &bytes).is_err());
    assert!(
        load_read(
            IndexIvf::new_flat(8, 8, Metric::InnerProduct).unwrap(),
            &bytes
        )
        .is_err()
    );
    assert!(
        load_read(
            IndexIvf::new_sq(8, 8, SqType::Q8, Metric::L2).unwrap(),
            &bytes
        )
        .is_err()
    );
    assert!(load_read(IndexIvf::new_pq(8, 8, 2, 4, Metric::L2).unwrap(), &bytes).is_err());
}

// ------------------------------------------------------------- hostile files

use vq_core::testing::patch_section;

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn set_u64(b: &mut [u8], i: usize, v: u64) {
    b[8 * i..8 * i + 8].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn corrupt_lists_are_errors_in_both_modes() {
    let (d, nlist) = (8, 8);
    let x = data(1_000, d);
    let index = ivf_flat(d, nlist, &x);
    let good = save(&index);
    let sizes = index.list_sizes();
    let fresh = || IndexIvf::new_flat(d, nlist, Metric::L2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut b = good.clone();
    // Decreasing offsets (list 2 ends before it starts).
    let o2 = sizes[..2].iter().sum::<usize>() as u64;
    patch_section(&mut b, "lists/offsets", 0, |p| {
        set_u64(p, 3, o2.saturating_sub(1))
    });
    cases.push(("decreasing", b));
    let mut b = good.clone();
    patch_section(&mut b, "lists/offsets", 0, |p| set_u64(p, 0, 1));
    cases.push(("first offset", b));
    let mut b = good.clone();
    patch_section(&mut b, "lists/offsets", 0, |p| set_u64(p, nlist, 1_001));
    cases.push(("past the ids", b));
    let mut b = good.clone();
    patch_section(&mut b, "lists/offsets", 0, |p| set_u64(p, nlist, u64::MAX));
    cases.push(("huge", b));
    let mut b = good.clone();
    patch_section(&mut b, "lists/offsets", 8, |_| {});
    cases.push(("one offset short", b));
    let mut b = good.clone();
    patch_section(&mut b, "lists/codes", 4 * d as u64, |_| {});
    cases.push(("codes short", b));
    let mut b = good.clone();
    patch_section(&mut b, "lists/ids", 8, |_| {});
    cases.push(("ids short", b));
    let mut b = good.clone();
    patch_section(&mut b, "nlist", 0, |p| {
        p.copy_from_slice(&9u64.to_le_bytes())
    });
    cases.push(("nlist", b));
    let mut b = good.clone();
    patch_section(&mut b, "quantizer/xb", 4 * d as u64, |_| {});
    cases.push(("one centroid short", b));
    for (what, bytes) in cases {
        let e = load_read(fresh(), &bytes).err();
        assert!(e.is_some(), "{what}: read mode accepted it");
        let e = load_mmap(fresh(), &bytes, dir.path()).err();
        assert!(e.is_some(), "{what}: mmap mode accepted it");
    }
    // A failed load leaves a usable empty index.
    let mut b = good.clone();
    patch_section(&mut b, "lists/offsets", 0, |p| set_u64(p, 1, 5_000));
    let mut idx = ivf_flat(d, nlist, &x);
    let mut r = StateReader::from_bytes(b, "memory").unwrap();
    assert!(idx.load_state(&mut r).is_err());
    idx.search(x.queries.as_ref(), 3, &SearchParams::default())
        .unwrap();
}

#[test]
fn random_offsets_never_panic() {
    let (d, nlist) = (4, 8);
    let x = data(300, d);
    let good = save(&ivf_flat(d, nlist, &x));
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let dir = tempfile::tempdir().unwrap();
    for round in 0..200 {
        let mut b = good.clone();
        patch_section(&mut b, "lists/offsets", 0, |p| {
            let i = rng.random_range(0..=nlist);
            let v = match round % 3 {
                0 => rng.random_range(0..400u64),
                1 => rng.random::<u64>(),
                _ => u64_at(p, 8 * i) ^ (1 << rng.random_range(0..64)),
            };
            set_u64(p, i, v);
        });
        let fresh = || IndexIvf::new_flat(d, nlist, Metric::L2).unwrap();
        let loaded = [load_read(fresh(), &b), load_mmap(fresh(), &b, dir.path())];
        // Whatever loads (rarely: offsets that still fit) must search without panicking.
        for index in loaded.into_iter().flatten() {
            index
                .search(
                    x.queries.as_ref(),
                    5,
                    &SearchParams::new().with_nprobe(nlist),
                )
                .unwrap();
        }
    }
}

// ------------------------------------------------------------- search params

#[test]
fn nprobe_search_param_equals_per_call_nprobe() {
    let (d, nlist) = (16, 32);
    let x = data(3_000, d);
    let mut index = ivf_flat(d, nlist, &x);
    let q = x.queries.as_ref();
    let per_call = index
        .search(q, 10, &SearchParams::new().with_nprobe(4))
        .unwrap();
    let default = index.search(q, 10, &SearchParams::default()).unwrap();
    index.set_search_param("nprobe", "4").unwrap();
    let resident = index.search(q, 10, &SearchParams::default()).unwrap();
    assert_eq!(resident.labels(), per_call.labels());
    assert_eq!(resident.distances(), per_call.distances());
    assert_ne!(resident.labels(), default.labels());
    // A per-call value still wins.
    let one = index
        .search(q, 10, &SearchParams::new().with_nprobe(1))
        .unwrap();
    assert_eq!(one.labels(), default.labels());
    // Persisted.
    let loaded = load_read(
        IndexIvf::new_flat(d, nlist, Metric::L2).unwrap(),
        &save(&index),
    )
    .unwrap();
    assert_eq!(loaded.nprobe(), 4);
    // Bad values and unknown names.
    for (name, value) in [
        ("nprobe", "0"),
        ("nprobe", "33"),
        ("nprobe", "four"),
        ("max_codes", "-1"),
        ("efSearch", "16"),
        ("bogus", "1"),
        ("quantizer_efSearch", "16"),
    ] {
        assert!(
            index.set_search_param(name, value).is_err(),
            "{name}={value}"
        );
    }
    assert_eq!(index.nprobe(), 4);
    index.set_search_param("nprobe", "32").unwrap();
    index.set_search_param("max_codes", "100").unwrap();
    let limited = index.search(q, 10, &SearchParams::default()).unwrap();
    let want = index
        .search(q, 10, &{
            let mut p = SearchParams::new().with_nprobe(32);
            p.max_codes = Some(100);
            p
        })
        .unwrap();
    assert_eq!(limited.labels(), want.labels());
}

#[test]
fn shards_forward_search_params_and_round_trip() {
    let (d, nlist) = (8, 16);
    let x = data(2_000, d);
    let mut proto = IndexIvf::new_flat(d, nlist, Metric::L2).unwrap();
    proto.train(x.base.as_ref()).unwrap();
    let make = |p: &vq_ivf::IndexIvfFlat| {
        IndexShards::new(
            vec![p.empty_clone(), p.empty_clone(), p.empty_clone()],
            true,
        )
        .unwrap()
    };
    let mut shards = make(&proto);
    shards.add(x.base.as_ref()).unwrap();
    let q = x.queries.as_ref();
    let per_call = shards
        .search(q, 10, &SearchParams::new().with_nprobe(5))
        .unwrap();
    shards.set_search_param("nprobe", "5").unwrap();
    assert!(shards.shards().iter().all(|s| s.nprobe() == 5));
    let resident = shards.search(q, 10, &SearchParams::default()).unwrap();
    assert_eq!(resident.labels(), per_call.labels());
    assert!(shards.set_search_param("bogus", "1").is_err());
    round_trip(&shards, || make(&proto), q, &[1, nlist]);
    // Another shard count is refused.
    let two = IndexShards::new(vec![proto.empty_clone(), proto.empty_clone()], true).unwrap();
    assert!(load_read(two, &save(&shards)).is_err());
    let flat_shards = IndexShards::new(vec![IndexFlat::new(d, Metric::L2).unwrap()], true).unwrap();
    assert!(load_read(flat_shards, &save(&shards)).is_err());
}

/// A line of `/proc/self/status` in KiB (`VmRSS`, `RssFile`: resident pages of mapped
/// files).
fn status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1).map(|v| v.parse().unwrap()))
        })
        .unwrap_or(0)
}

/// Saves `index` to a file, drops it, loads the file mapped into `fresh`; checks that
/// the load maps in only a small part of the file, and returns the loaded index.
fn mapped_load<I: Index>(index: I, fresh: I, dir: &Path) -> I {
    let path = dir.join("big.vqi");
    write_atomic(&path, |w| {
        let mut s = StateWriter::new(w)?;
        index.save_state(&mut s)?;
        s.finish()
    })
    .unwrap();
    drop(index);
    let size = std::fs::metadata(&path).unwrap().len();
    let mut index = fresh;
    let (rss0, file0) = (status_kib("VmRSS:"), status_kib("RssFile:"));
    let t = std::time::Instant::now();
    let mut r = StateReader::open(&path, LoadMode::Mmap).unwrap();
    index.load_state(&mut r).unwrap();
    r.finish().unwrap();
    let took = t.elapsed();
    let rss = status_kib("VmRSS:").saturating_sub(rss0);
    let file = status_kib("RssFile:").saturating_sub(file0);
    eprintln!(
        "{}: {} vectors, file {} KiB, mapped load {took:?}, RSS +{rss} KiB \
         (of which the mapped file +{file} KiB)",
        index.describe(),
        index.len(),
        size >> 10
    );
    assert!(
        file * 1024 < size / 16,
        "{file} KiB of a {size}-byte file were paged in"
    );
    index
}

/// Large IVF-Flat and IVF-PQ (1M vectors) opened memory-mapped: loading pages in only
/// the offsets and the small sections, not the lists (run alone, in release:
/// `cargo test -p vq-ivf --release --test persist -- --ignored --nocapture`).
#[test]
#[ignore = "large; measures load time and resident memory"]
fn large_mapped_loads_page_in_little() {
    let dir = tempfile::tempdir().unwrap();
    let (n, d, nlist) = (400_000, 64, 1024);
    let x = SyntheticSpec::new(n, d, 100).generate().unwrap();
    let mut index = IndexIvf::new_flat(d, nlist, Metric::L2).unwrap();
    index.train(x.base.as_ref().slice(0..50_000)).unwrap();
    index.add(x.base.as_ref()).unwrap();
    let p = SearchParams::new().with_nprobe(8);
    let want = index.search(x.queries.as_ref(), 10, &p).unwrap();
    let fresh = IndexIvf::new_flat(d, nlist, Metric::L2).unwrap();
    let index = mapped_load(index, fresh, dir.path());
    let got = index.search(x.queries.as_ref(), 10, &p).unwrap();
    assert_eq!(got.labels(), want.labels());
    drop((index, x));

    let (n, d, nlist, m) = (1_000_000, 32, 1024, 8);
    let x = SyntheticSpec::new(n, d, 100).generate().unwrap();
    let mut index = IndexIvf::new_pq(d, nlist, m, 8, Metric::L2).unwrap();
    index.train(x.base.as_ref().slice(0..100_000)).unwrap();
    index.add(x.base.as_ref()).unwrap();
    let p = SearchParams::new().with_nprobe(16);
    let want = index.search(x.queries.as_ref(), 10, &p).unwrap();
    let fresh = IndexIvf::new_pq(d, nlist, m, 8, Metric::L2).unwrap();
    let index = mapped_load(index, fresh, dir.path());
    assert!(index.encoding().has_precomputed());
    let got = index.search(x.queries.as_ref(), 10, &p).unwrap();
    assert_eq!(got.labels(), want.labels());
}

#[test]
fn the_training_seed_survives_a_round_trip() {
    let x = data(2_000, 8);
    let mut index = IndexIvf::new_pq(8, 8, 2, 4, Metric::L2).unwrap();
    index.set_build_param("seed", "77").unwrap();
    index.train(x.base.as_ref()).unwrap();
    index.add(x.base.as_ref()).unwrap();
    let back = load_read(
        IndexIvf::new_pq(8, 8, 2, 4, Metric::L2).unwrap(),
        &save(&index),
    )
    .unwrap();
    assert_eq!(back.encoding().pq().kmeans_params().seed, 77);
}
