//! Regression tests for edge cases an API review found: empty batches, inner-product
//! range search, sharded adds, merges that fail or overflow, indexes built over a trained
//! quantizer, on-disk lists cut short underneath or crafted, and the reserved id −1.
#![allow(clippy::unwrap_used)]

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vq_core::testing::brute_force_range;
use vq_core::{Error, Index, IndexFlat, Metric, SearchParams, SearchResults, VectorsRef};
use vq_ivf::{
    ArrayInvertedLists, CoarseQuantizer, IndexIvf, IndexIvfPqFastScan, IndexShards, InvertedLists,
    IvfFlat, OnDiskInvertedLists,
};
use vq_pq::SqType;

fn clustered(n: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let c: Vec<f32> = (0..8 * d).map(|_| rng.random_range(-4.0f32..4.0)).collect();
    let mut out = Vec::with_capacity(n * d);
    for _ in 0..n {
        let k = rng.random_range(0..8);
        for j in 0..d {
            out.push(c[k * d + j] + rng.random_range(-1.0f32..1.0));
        }
    }
    out
}

fn v(data: &[f32], d: usize) -> VectorsRef<'_> {
    VectorsRef::new(data, d).unwrap()
}

fn np(n: usize) -> SearchParams<'static> {
    SearchParams::new().with_nprobe(n)
}

fn ivf_flat(d: usize, nlist: usize, metric: Metric, base: &[f32]) -> vq_ivf::IndexIvfFlat {
    let mut index = IndexIvf::new_flat(d, nlist, metric).unwrap();
    index.train(v(base, d)).unwrap();
    index.add(v(base, d)).unwrap();
    index
}

/// A one-dimensional IVF-Flat over the given centroids, built without training.
fn over_centroids(c: &[f32]) -> vq_ivf::IndexIvfFlat {
    let mut q = IndexFlat::new(1, Metric::L2).unwrap();
    q.add(v(c, 1)).unwrap();
    IndexIvf::new(q, c.len(), IvfFlat::new(1).unwrap(), Metric::L2).unwrap()
}

#[test]
fn an_empty_query_batch_gives_empty_results() {
    let d = 8;
    let base = clustered(2000, d, 1);
    let none: [f32; 0] = [];
    let flat = ivf_flat(d, 8, Metric::L2, &base);
    assert_eq!(flat.search(v(&none, d), 5, &np(2)).unwrap().nq(), 0);
    let mut pq = IndexIvf::new_pq(d, 8, 4, 4, Metric::L2).unwrap();
    pq.train(v(&base, d)).unwrap();
    pq.add(v(&base, d)).unwrap();
    assert_eq!(pq.search(v(&none, d), 5, &np(2)).unwrap().nq(), 0);
    let mut fs = IndexIvfPqFastScan::new_flat(d, 8, 4, false, Metric::L2).unwrap();
    fs.train(v(&base, d)).unwrap();
    fs.add(v(&base, d)).unwrap();
    assert_eq!(fs.search(v(&none, d), 5, &np(2)).unwrap().nq(), 0);
    let mut imi = IndexIvf::new_imi(d, 2, IvfFlat::new(d).unwrap()).unwrap();
    imi.train(v(&base, d)).unwrap();
    imi.add(v(&base, d)).unwrap();
    assert_eq!(imi.search(v(&none, d), 5, &np(2)).unwrap().nq(), 0);
    let mut shards = IndexShards::new(vec![flat.empty_clone(), flat.empty_clone()], true).unwrap();
    shards.add(v(&base, d)).unwrap();
    assert_eq!(shards.search(v(&none, d), 5, &np(2)).unwrap().nq(), 0);
    // Zero probes per query: nothing scanned, every row padding.
    let mut out = SearchResults::new(0, 0, Metric::L2);
    flat.search_preassigned(v(&base[..d], d), 3, &[], &[], &np(1), &mut out)
        .unwrap();
    assert_eq!(out.row(0).1, &[-1, -1, -1]);
}

#[test]
fn inner_product_range_search_reports_similarities_best_first() {
    let (d, nlist) = (8, 6);
    let base = clustered(600, d, 3);
    let q = clustered(5, d, 4);
    let flat = ivf_flat(d, nlist, Metric::InnerProduct, &base);
    let mut sq = IndexIvf::new_sq(d, nlist, SqType::Q8, Metric::InnerProduct).unwrap();
    sq.train(v(&base, d)).unwrap();
    sq.add(v(&base, d)).unwrap();
    let radius = 20.0;
    let got = flat.range_search(v(&q, d), radius, &np(nlist)).unwrap();
    let want = brute_force_range(v(&base, d), v(&q, d), radius, Metric::InnerProduct);
    let knn = sq.search(v(&q, d), 1, &np(nlist)).unwrap();
    let sq_range = sq
        .range_search(v(&q, d), f32::NEG_INFINITY, &np(nlist))
        .unwrap();
    let mut hits = 0;
    for qi in 0..5 {
        let ((gd, gl), (wd, wl)) = (got.row(qi), want.row(qi));
        let mut gs = gl.to_vec();
        let mut ws = wl.to_vec();
        gs.sort_unstable();
        ws.sort_unstable();
        assert_eq!(gs, ws, "query {qi}");
        hits += gl.len();
        assert!(gd.iter().all(|&s| s > radius), "{gd:?}");
        assert!(gd.windows(2).all(|w| w[0] >= w[1]), "{gd:?}");
        if let (Some(g), Some(w)) = (gd.first(), wd.iter().copied().reduce(f32::max)) {
            assert!((g - w).abs() <= 1e-4 * w.abs(), "{g} vs {w}");
        }
        // IVF-SQ: the k-NN best comes first in the range results, at the same value.
        let (rd, rl) = sq_range.row(qi);
        assert_eq!((rd[0], rl[0]), (knn.row(qi).0[0], knn.row(qi).1[0]));
    }
    assert!(hits > 0);
}

#[test]
fn a_second_add_to_shards_with_successive_ids_is_refused() {
    let d = 4;
    let base = clustered(300, d, 5);
    let mut whole = IndexIvf::new_flat(d, 4, Metric::L2).unwrap();
    whole.train(v(&base, d)).unwrap();
    let mut shards =
        IndexShards::new(vec![whole.empty_clone(), whole.empty_clone()], true).unwrap();
    // One vector lands in the last shard only, as global id 0.
    shards.add(v(&base[..d], d)).unwrap();
    let err = shards.add(v(&base[d..3 * d], d)).unwrap_err();
    assert!(matches!(err, Error::NotSupported { .. }), "{err}");
    assert_eq!(shards.len(), 1);
    let r = shards.search(v(&base[..d], d), 1, &np(4)).unwrap();
    assert_eq!((r.labels()[0], r.distances()[0]), (0, 0.0));
    // A single shard takes any number of adds.
    let mut one = IndexShards::new(vec![whole.empty_clone()], true).unwrap();
    one.add(v(&base[..d], d)).unwrap();
    one.add(v(&base[d..3 * d], d)).unwrap();
    assert_eq!(one.len(), 3);
}

#[test]
fn failed_merges_change_neither_index() {
    let d = 4;
    let base = clustered(400, d, 6);
    let mut a = IndexIvf::new_flat(d, 4, Metric::L2).unwrap();
    a.train(v(&base, d)).unwrap();
    let mut b = a.empty_clone();
    a.make_direct_map(true).unwrap();
    a.add_with_ids(v(&base[..10 * d], d), &(0..10).collect::<Vec<_>>())
        .unwrap();
    // Without a direct map `b` may hold repeats; merged into `a` they would collide.
    b.add_with_ids(v(&base[10 * d..14 * d], d), &[100, 100, 101, 102])
        .unwrap();
    let err = a.merge_from(&mut b, 0).unwrap_err();
    assert!(matches!(err, Error::DuplicateId { id: 100 }), "{err}");
    assert_eq!((a.len(), b.len()), (10, 4));
    a.reconstruct(9).unwrap();
    assert!(a.reconstruct(100).is_err());
    // Shifted ids that overflow, or land on −1, are refused before anything moves.
    let mut c = a.empty_clone();
    c.add_with_ids(v(&base[..d], d), &[5]).unwrap();
    for shift in [i64::MAX, -6] {
        let err = a.merge_from(&mut c, shift).unwrap_err();
        assert!(matches!(err, Error::InvalidParameter { .. }), "{err}");
        assert_eq!((a.len(), c.len()), (10, 1));
    }
    let mut x = ArrayInvertedLists::new(1, 1);
    x.append(0, &[0], &[0]).unwrap();
    let mut y = ArrayInvertedLists::new(1, 1);
    y.append(0, &[i64::MAX], &[0]).unwrap();
    let mut z = ArrayInvertedLists::new(1, 1);
    assert!(vq_ivf::merge_into(&mut z, &y, 1).is_err());
    assert_eq!(z.total(), 0);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("merged.ivfdata");
    assert!(OnDiskInvertedLists::create_merged(&path, &[&x, &y], true).is_err());
    assert!(!path.exists());
}

#[test]
fn merges_compare_every_centroid() {
    let nlist = 4097;
    let c1: Vec<f32> = (0..nlist).map(|i| i as f32).collect();
    let mut c2 = c1.clone();
    c2[nlist - 1] = -1.0e6;
    let (mut a, mut b) = (over_centroids(&c1), over_centroids(&c2));
    b.add_with_ids(v(&[-1.0e6], 1), &[42]).unwrap();
    let err = a.merge_from(&mut b, 0).unwrap_err();
    assert!(err.to_string().contains("list 4096"), "{err}");
    assert_eq!((a.len(), b.len()), (0, 1));
}

#[test]
fn an_index_over_a_trained_quantizer_searches_merged_or_replaced_lists() {
    let c = [0.0, 1.0, 2.0, 3.0];
    let (mut a, mut b) = (over_centroids(&c), over_centroids(&c));
    assert!(a.is_trained());
    b.add(v(&[0.5, 2.5], 1)).unwrap();
    a.merge_from(&mut b, 0).unwrap();
    let r = a.search(v(&[2.4], 1), 1, &np(4)).unwrap();
    assert_eq!(r.labels(), &[1]);
    let mut fresh = over_centroids(&c);
    let lists = ArrayInvertedLists::from_lists(a.lists()).unwrap();
    fresh.replace_invlists(Box::new(lists)).unwrap();
    let r = fresh.search(v(&[0.4], 1), 2, &np(4)).unwrap();
    assert_eq!(r.labels(), &[0, 1]);
    // The quantizer's centroids are what the lists were built against.
    let mut x = [0f32];
    fresh.quantizer().centroid_into(3, &mut x).unwrap();
    assert_eq!(x, [3.0]);
}

#[test]
fn the_missing_result_id_is_refused() {
    let (d, nlist) = (4, 3);
    let base = clustered(400, d, 74);
    let mut flat = IndexIvf::new_flat(d, nlist, Metric::L2).unwrap();
    flat.train(v(&base, d)).unwrap();
    let err = flat
        .add_with_ids(v(&base[..2 * d], d), &[3, -1])
        .unwrap_err();
    assert!(matches!(err, Error::InvalidParameter { .. }), "{err}");
    assert_eq!(flat.len(), 0);
    // Other negative ids are ids (as in Faiss).
    flat.add_with_ids(v(&base[..d], d), &[-2]).unwrap();
    let mut fs = IndexIvfPqFastScan::new_flat(d, nlist, 2, false, Metric::L2).unwrap();
    fs.train(v(&base, d)).unwrap();
    assert!(fs.add_with_ids(v(&base[..d], d), &[-1]).is_err());
    assert_eq!(fs.len(), 0);
}

/// FNV-1a, the list table's checksum in the on-disk format.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[test]
fn a_crafted_slot_offset_near_the_top_of_u64_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.ivfdata");
    let mut a = ArrayInvertedLists::new(2, 4);
    a.append(0, &[1], &[1, 2, 3, 4]).unwrap();
    drop(OnDiskInvertedLists::create_merged(&path, &[&a], false).unwrap());
    let mut b = std::fs::read(&path).unwrap();
    // List 0's slot (offset, len, cap) starts at byte 64; the table's checksum at 32.
    b[64..72].copy_from_slice(&(u64::MAX - 63).to_le_bytes());
    let sum = fnv1a(&b[64..64 + 2 * 24]);
    b[32..40].copy_from_slice(&sum.to_le_bytes());
    std::fs::write(&path, &b).unwrap();
    let err = OnDiskInvertedLists::open(&path).unwrap_err();
    assert!(err.to_string().contains("out of bounds"), "{err}");
}

#[test]
fn writable_lists_cut_short_underneath_are_errors_not_faults() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.ivfdata");
    let mut l = OnDiskInvertedLists::create(&path, 2, 8).unwrap();
    l.append(0, &[1, 2], &[0u8; 16]).unwrap();
    l.sync().unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    // Each of these stored into the map (a SIGBUS that killed the process).
    assert!(l.append(0, &[3], &[0u8; 8]).is_err());
    assert!(l.retain(0, &mut |_| true).is_err());
    assert!(l.clear().is_err());
    assert!(l.sync().is_err());
    // Dropping flushes only a file that is still whole.
    drop(l);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
}

#[test]
fn approximate_fast_scan_candidates_do_not_follow_the_thread_count() {
    // A refinement's base search (approximate): a single query in a pool of several
    // threads used to split its probes, rank ties per part and merge them by id.
    let (n, d) = (3000, 32);
    let base = clustered(n, d, 31);
    let queries = clustered(40, d, 32);
    for metric in [Metric::InnerProduct, Metric::L2] {
        let mut fs = IndexIvfPqFastScan::new_flat(d, 32, 8, false, metric).unwrap();
        fs.train(v(&base, d)).unwrap();
        fs.add(v(&base, d)).unwrap();
        let p = np(8).with_approximate(true);
        let batch = fs.search(v(&queries, d), 10, &p).unwrap();
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            for qi in 0..40 {
                let one = pool
                    .install(|| fs.search(v(&queries[qi * d..(qi + 1) * d], d), 10, &p))
                    .unwrap();
                assert_eq!(
                    one.row(0),
                    batch.row(qi),
                    "{metric}, {threads} threads, query {qi}"
                );
            }
        }
    }
}
