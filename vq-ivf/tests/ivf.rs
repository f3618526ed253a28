//! IVF indexes, inverted lists and the multi-index against brute force and models.
#![allow(clippy::unwrap_used, clippy::needless_range_loop)]

use std::collections::HashSet;

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vq_core::testing::{brute_force_knn, brute_force_range, check_knn};
use vq_core::{
    Error, IdSelector, Index, IndexFlat, Label, Metric, SearchParams, SearchResults, VectorsRef,
};
use vq_ivf::{
    ArrayInvertedLists, CoarseQuantizer, IndexIvf, IndexShards, InvertedLists, IvfFlat, IvfPq,
    MultiIndexQuantizer, OnDiskInvertedLists,
};
use vq_pq::{ProductQuantizer, SqType};

/// Clustered data: `centres` random centres, points spread around them.
fn clustered(n: usize, d: usize, centres: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let c: Vec<f32> = (0..centres * d)
        .map(|_| rng.random_range(-4.0f32..4.0))
        .collect();
    let mut out = Vec::with_capacity(n * d);
    for _ in 0..n {
        let k = rng.random_range(0..centres);
        for j in 0..d {
            out.push(c[k * d + j] + rng.random_range(-1.0f32..1.0));
        }
    }
    out
}

fn v(data: &[f32], d: usize) -> VectorsRef<'_> {
    VectorsRef::new(data, d).unwrap()
}

fn recall(got: &SearchResults, want: &SearchResults) -> f64 {
    let mut hit = 0;
    for q in 0..got.nq() {
        let w: HashSet<Label> = want.row(q).1.iter().copied().collect();
        hit += got.row(q).1.iter().filter(|l| w.contains(l)).count();
    }
    hit as f64 / (got.nq() * got.k()) as f64
}

fn params(nprobe: usize) -> SearchParams<'static> {
    SearchParams::new().with_nprobe(nprobe)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// With every list probed, IVF-Flat is exact.
    #[test]
    fn ivf_flat_full_probe_is_exact(
        d in 1usize..12,
        n in 20usize..200,
        nlist in 1usize..8,
        ip in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let metric = if ip { Metric::InnerProduct } else { Metric::L2 };
        let base = clustered(n, d, 5, seed);
        let q = clustered(7, d, 5, seed ^ 1);
        let mut index = IndexIvf::new_flat(d, nlist, metric).unwrap();
        index.train(v(&base, d)).unwrap();
        index.add(v(&base, d)).unwrap();
        let k = 5.min(n);
        let got = index.search(v(&q, d), k, &params(nlist)).unwrap();
        let want = brute_force_knn(v(&base, d), v(&q, d), k, metric);
        prop_assert!(check_knn(&got, &want, v(&base, d), v(&q, d), metric, 1e-4).is_ok(),
            "{:?}", check_knn(&got, &want, v(&base, d), v(&q, d), metric, 1e-4));
    }

    /// The multi-sequence walk returns exactly the first cells of the full sort.
    #[test]
    fn imi_order_equals_full_sort(bits in 1usize..5, half in 1usize..4, seed in any::<u64>()) {
        let d = 2 * half;
        let data = clustered(400, d, 7, seed);
        let mut imi = MultiIndexQuantizer::new(d, bits).unwrap();
        imi.train(v(&data, d)).unwrap();
        let q = clustered(3, d, 7, seed ^ 9);
        let nl = imi.nlist();
        let k = nl.min(37);
        let got = imi.search(v(&q, d), k, &SearchParams::default()).unwrap();
        let pq = imi.product_quantizer();
        let ks = 1usize << bits;
        for qi in 0..3 {
            let mut t = vec![0f32; 2 * ks];
            pq.compute_distance_table(&q[qi * d..(qi + 1) * d], Metric::L2, &mut t).unwrap();
            let mut all: Vec<(f32, usize)> = (0..nl)
                .map(|l| (t[l & (ks - 1)] + t[ks + (l >> bits)], l))
                .collect();
            all.sort_by(|a, b| a.0.total_cmp(&b.0));
            let (gd, gl) = got.row(qi);
            for j in 0..k {
                prop_assert_eq!(gd[j], all[j].0);
                let l = gl[j] as usize;
                prop_assert_eq!(t[l & (ks - 1)] + t[ks + (l >> bits)], gd[j]);
            }
            let distinct: HashSet<Label> = gl.iter().copied().collect();
            prop_assert_eq!(distinct.len(), k);
        }
    }

    /// Inverted lists behave like a `Vec<Vec<(id, code)>>` under random operations, in
    /// memory and on disk.
    #[test]
    fn inverted_lists_follow_the_model(
        ops in prop::collection::vec((0u8..4, 0usize..5, 0usize..20, any::<u8>()), 1..40),
        on_disk in any::<bool>(),
    ) {
        let (nlist, cs) = (5, 3);
        let dir = tempfile::tempdir().unwrap();
        let mut lists: Box<dyn InvertedLists> = if on_disk {
            Box::new(OnDiskInvertedLists::create(dir.path().join("l.ivf"), nlist, cs).unwrap())
        } else {
            Box::new(ArrayInvertedLists::new(nlist, cs))
        };
        let mut model: Vec<Vec<(Label, Vec<u8>)>> = vec![Vec::new(); nlist];
        let mut next: Label = 0;
        for (op, list, n, salt) in ops {
            match op {
                0 | 1 => {
                    let ids: Vec<Label> = (0..n as Label).map(|i| next + i).collect();
                    next += n as Label;
                    let codes: Vec<u8> = (0..n * cs).map(|i| (i as u8).wrapping_mul(salt)).collect();
                    lists.append(list, &ids, &codes).unwrap();
                    for (i, &id) in ids.iter().enumerate() {
                        model[list].push((id, codes[i * cs..(i + 1) * cs].to_vec()));
                    }
                }
                2 => {
                    let m = (salt % 3 + 2) as Label;
                    let removed = lists.retain(list, &mut |id| id % m != 0).unwrap();
                    let before = model[list].len();
                    model[list].retain(|(id, _)| id % m != 0);
                    prop_assert_eq!(removed, before - model[list].len());
                }
                _ => {
                    // Merge a small in-memory set into the lists.
                    let mut other = ArrayInvertedLists::new(nlist, cs);
                    other.append(list, &[1000 + salt as Label], &[salt; 3]).unwrap();
                    vq_ivf::merge_into(&mut *lists, &other, 7).unwrap();
                    model[list].push((1007 + salt as Label, vec![salt; 3]));
                }
            }
            for l in 0..nlist {
                let ids: Vec<Label> = model[l].iter().map(|e| e.0).collect();
                let codes: Vec<u8> = model[l].iter().flat_map(|e| e.1.clone()).collect();
                prop_assert_eq!(lists.ids(l), &ids[..]);
                prop_assert_eq!(lists.codes(l), &codes[..]);
            }
        }
        prop_assert_eq!(lists.total(), model.iter().map(Vec::len).sum::<usize>());
        if on_disk {
            drop(lists);
            let again = OnDiskInvertedLists::open(dir.path().join("l.ivf")).unwrap();
            for l in 0..nlist {
                let ids: Vec<Label> = model[l].iter().map(|e| e.0).collect();
                prop_assert_eq!(again.ids(l), &ids[..]);
            }
        }
    }
}

#[test]
fn recall_is_monotone_in_nprobe() {
    let (n, d) = (4000, 16);
    let base = clustered(n, d, 50, 3);
    let q = clustered(50, d, 50, 4);
    let mut index = IndexIvf::new_flat(d, 32, Metric::L2).unwrap();
    index.train(v(&base, d)).unwrap();
    index.add(v(&base, d)).unwrap();
    let want = brute_force_knn(v(&base, d), v(&q, d), 10, Metric::L2);
    let mut last = 0.0;
    for np in [1, 2, 4, 8, 16, 32] {
        let r = recall(&index.search(v(&q, d), 10, &params(np)).unwrap(), &want);
        assert!(r >= last, "nprobe {np}: recall {r} < {last}");
        last = r;
    }
    assert!(last > 0.999);
}

/// IVF-PQ's precomputed decomposition gives the ADC distance of the residual.
#[test]
fn ivf_pq_distances_are_adc_on_the_residual() {
    let (n, d, m) = (3000, 16, 4);
    let base = clustered(n, d, 20, 5);
    let q = clustered(5, d, 20, 6);
    // 16 lists of ~190 codes: the precomputed terms are added into one table per list;
    // 128 lists of ~23: short lists are scanned from the two tables directly.
    for (metric, nlist) in [
        (Metric::L2, 16),
        (Metric::L2, 128),
        (Metric::InnerProduct, 16),
    ] {
        for pre in [true, false] {
            let mut index = IndexIvf::new_pq(d, nlist, m, 8, metric).unwrap();
            index.train(v(&base, d)).unwrap();
            index.set_use_precomputed_table(pre).unwrap();
            assert_eq!(
                index.encoding().has_precomputed(),
                pre && metric == Metric::L2
            );
            index.add(v(&base, d)).unwrap();
            index.make_direct_map(true).unwrap();
            let res = index.search(v(&q, d), 10, &params(nlist)).unwrap();
            let pq: &ProductQuantizer = index.encoding().pq();
            let lists = index.lists();
            for qi in 0..5 {
                let qv = &q[qi * d..(qi + 1) * d];
                let (dist, labels) = res.row(qi);
                for (&got, &id) in dist.iter().zip(labels) {
                    let (l, o) = (0..nlist)
                        .find_map(|l| lists.ids(l).iter().position(|&x| x == id).map(|o| (l, o)))
                        .unwrap();
                    let code = &lists.codes(l)[o * pq.code_size()..(o + 1) * pq.code_size()];
                    let mut c = vec![0f32; d];
                    index.quantizer().centroid_into(l, &mut c).unwrap();
                    let want = match metric {
                        Metric::L2 => {
                            let r: Vec<f32> = qv.iter().zip(&c).map(|(a, b)| a - b).collect();
                            pq.distance_table(&r, Metric::L2).unwrap().distance(code)
                        }
                        Metric::InnerProduct => {
                            let qc: f32 = qv.iter().zip(&c).map(|(a, b)| a * b).sum();
                            qc + pq
                                .distance_table(qv, Metric::InnerProduct)
                                .unwrap()
                                .distance(code)
                        }
                    };
                    assert!(
                        (got - want).abs() <= 1e-3 * (1.0 + want.abs()),
                        "{metric} nlist={nlist} pre={pre}: {got} vs {want}"
                    );
                }
            }
        }
    }
}

#[test]
fn ivf_sq_and_pq_have_high_recall_with_all_lists() {
    let (n, d) = (3000, 32);
    let base = clustered(n, d, 30, 7);
    let q = clustered(40, d, 30, 8);
    let want = brute_force_knn(v(&base, d), v(&q, d), 10, Metric::L2);
    let mut sq = IndexIvf::new_sq(d, 16, SqType::Q8, Metric::L2).unwrap();
    sq.train(v(&base, d)).unwrap();
    sq.add(v(&base, d)).unwrap();
    let r = recall(&sq.search(v(&q, d), 10, &params(16)).unwrap(), &want);
    assert!(r > 0.95, "IVF-SQ8 recall {r}");
    let mut pq = IndexIvf::new_pq(d, 16, 16, 8, Metric::L2).unwrap();
    pq.train(v(&base, d)).unwrap();
    pq.add(v(&base, d)).unwrap();
    let r = recall(&pq.search(v(&q, d), 10, &params(16)).unwrap(), &want);
    assert!(r > 0.6, "IVF-PQ16 recall {r}");
}

#[test]
fn imi_pq_finds_neighbours() {
    let (n, d) = (4000, 16);
    let base = clustered(n, d, 30, 9);
    let q = clustered(30, d, 30, 10);
    let pq = ProductQuantizer::new(d, 8, 8).unwrap();
    let mut index = IndexIvf::new_imi(d, 4, IvfPq::new(pq, true)).unwrap();
    index.train(v(&base, d)).unwrap();
    assert!(index.encoding().has_precomputed());
    index.add(v(&base, d)).unwrap();
    assert_eq!(index.len(), n);
    let want = brute_force_knn(v(&base, d), v(&q, d), 10, Metric::L2);
    let r1 = recall(&index.search(v(&q, d), 10, &params(4)).unwrap(), &want);
    let r2 = recall(&index.search(v(&q, d), 10, &params(64)).unwrap(), &want);
    assert!(r2 >= r1 && r2 > 0.6, "{r1} {r2}");
    // Flat lists in the multi-index are exact when every cell is probed.
    let mut flat = IndexIvf::new_imi(d, 2, IvfFlat::new(d).unwrap()).unwrap();
    flat.train(v(&base, d)).unwrap();
    flat.add(v(&base, d)).unwrap();
    let got = flat.search(v(&q, d), 10, &params(16)).unwrap();
    check_knn(&got, &want, v(&base, d), v(&q, d), Metric::L2, 1e-4).unwrap();
}

#[test]
fn imi_assignment_of_a_large_batch_goes_block_by_block_with_the_same_result() {
    // At 2x12 the cell tables are made for 2,048 queries at a time: 5,000 queries take
    // three blocks, and each row equals the query searched alone.
    let d = 4;
    let base = clustered(9000, d, 50, 21);
    let q = clustered(5000, d, 50, 22);
    let mut imi = vq_ivf::MultiIndexQuantizer::new(d, 12).unwrap();
    imi.train(v(&base, d)).unwrap();
    let all = imi.search(v(&q, d), 3, &SearchParams::default()).unwrap();
    for qi in [0, 2047, 2048, 4095, 4096, 4999] {
        let one = imi
            .search(v(&q[qi * d..(qi + 1) * d], d), 3, &SearchParams::default())
            .unwrap();
        assert_eq!(all.row(qi), one.row(0), "query {qi}");
    }
}

#[test]
fn ids_given_are_returned_and_removed_ids_never_come_back() {
    let (n, d) = (1000, 8);
    let base = clustered(n, d, 10, 11);
    let q = clustered(20, d, 10, 12);
    let ids: Vec<Label> = (0..n as Label).map(|i| 1000 + 7 * i).collect();
    let mut index = IndexIvf::new_flat(d, 8, Metric::L2).unwrap();
    index.train(v(&base, d)).unwrap();
    index.add_with_ids(v(&base, d), &ids).unwrap();
    let got = index.search(v(&q, d), 10, &params(8)).unwrap();
    let want = brute_force_knn(v(&base, d), v(&q, d), 10, Metric::L2);
    for qi in 0..20 {
        let mapped: Vec<Label> = want.row(qi).1.iter().map(|&i| ids[i as usize]).collect();
        assert_eq!(got.row(qi).1, &mapped[..]);
    }
    index.make_direct_map(true).unwrap();
    let gone: Vec<Label> = ids.iter().copied().step_by(3).collect();
    let removed = index
        .remove_ids(&IdSelector::set(gone.iter().copied()))
        .unwrap();
    assert_eq!(removed, gone.len());
    assert_eq!(index.len(), n - gone.len());
    let gone: HashSet<Label> = gone.into_iter().collect();
    let got = index.search(v(&q, d), 50, &params(8)).unwrap();
    assert!(got.labels().iter().all(|l| !gone.contains(l)));
    let first_gone = *gone.iter().next().unwrap();
    assert!(matches!(
        index.reconstruct(first_gone),
        Err(Error::IdNotFound { .. })
    ));
    // Reconstruction of a kept vector is exact for IVF-Flat.
    let keep = ids[1];
    assert_eq!(index.reconstruct(keep).unwrap(), &base[d..2 * d]);
    // A direct map refuses duplicates, and nothing is added.
    let before = index.len();
    let err = index
        .add_with_ids(v(&base[..2 * d], d), &[keep, 5])
        .unwrap_err();
    assert!(matches!(err, Error::DuplicateId { id } if id == keep));
    assert_eq!(index.len(), before);
    // Without a direct map, duplicates are stored (as Faiss) and removed together.
    index.make_direct_map(false).unwrap();
    index.add_with_ids(v(&base[d..2 * d], d), &[keep]).unwrap();
    assert_eq!(index.remove_ids(&IdSelector::set([keep])).unwrap(), 2);
}

#[test]
fn range_search_with_all_lists_equals_brute_force() {
    let (n, d) = (800, 6);
    let base = clustered(n, d, 8, 13);
    let q = clustered(10, d, 8, 14);
    let mut index = IndexIvf::new_flat(d, 8, Metric::L2).unwrap();
    index.train(v(&base, d)).unwrap();
    index.add(v(&base, d)).unwrap();
    let got = index.range_search(v(&q, d), 3.0, &params(8)).unwrap();
    let want = brute_force_range(v(&base, d), v(&q, d), 3.0, Metric::L2);
    for qi in 0..10 {
        let g: HashSet<Label> = got.row(qi).1.iter().copied().collect();
        let w: HashSet<Label> = want.row(qi).1.iter().copied().collect();
        // Boundary cases may differ by rounding; the sets must agree elsewhere.
        assert!(g.symmetric_difference(&w).count() <= 1, "query {qi}");
    }
}

#[test]
fn filters_and_max_codes_limit_the_scan() {
    let (n, d) = (2000, 8);
    let base = clustered(n, d, 16, 15);
    let q = clustered(5, d, 16, 16);
    let mut index = IndexIvf::new_flat(d, 16, Metric::L2).unwrap();
    index.train(v(&base, d)).unwrap();
    index.add(v(&base, d)).unwrap();
    let even = |id: Label| id % 2 == 0;
    let mut p = params(16);
    p.selector = Some(&even);
    let got = index.search(v(&q, d), 10, &p).unwrap();
    assert!(got.labels().iter().all(|&l| l >= 0 && l % 2 == 0));
    // max_codes = 1 stops after the first (non-empty) list.
    let mut p = params(16);
    p.max_codes = Some(1);
    let got = index.search(v(&q, d), 10, &p).unwrap();
    let one = index.search(v(&q, d), 10, &params(1)).unwrap();
    assert_eq!(got.labels(), one.labels());
}

#[test]
fn bad_input_is_an_error() {
    let d = 4;
    let base = clustered(100, d, 4, 17);
    let mut index = IndexIvf::new_flat(d, 8, Metric::L2).unwrap();
    assert!(matches!(
        index.search(v(&base[..d], d), 1, &params(1)),
        Err(Error::NotTrained { .. })
    ));
    assert!(matches!(
        index.add(v(&base, d)),
        Err(Error::NotTrained { .. })
    ));
    assert!(matches!(
        index.train(v(&base[..4 * d], d)),
        Err(Error::InsufficientTrainingData { needed: 8, got: 4 })
    ));
    index.train(v(&base, d)).unwrap();
    index.add(v(&base, d)).unwrap();
    assert!(index.search(v(&base[..d], d), 1, &params(0)).is_err());
    // nprobe above nlist is clamped.
    let a = index.search(v(&base[..d], d), 3, &params(1000)).unwrap();
    let b = index.search(v(&base[..d], d), 3, &params(8)).unwrap();
    assert_eq!(a.labels(), b.labels());
    assert!(matches!(
        index.add_with_ids(v(&base[..2 * d], d), &[1]),
        Err(Error::LengthMismatch { .. })
    ));
    let nan = [f32::NAN, 0.0, 0.0, 0.0];
    assert!(index.add(v(&nan, d)).is_err());
    assert!(index.search(v(&nan, d), 1, &params(1)).is_err());
    assert!(index.search(v(&base[..d], d), 0, &params(1)).is_err());
    assert!(IndexIvf::new_flat(d, 0, Metric::L2).is_err());
    assert!(MultiIndexQuantizer::new(5, 4).is_err());
    assert!(MultiIndexQuantizer::new(4, 17).is_err());
    assert_eq!(index.len(), 100);
}

fn trained_pq(d: usize, nlist: usize, base: &[f32]) -> vq_ivf::IndexIvfPq {
    let mut index = IndexIvf::new_pq(d, nlist, 4, 8, Metric::L2).unwrap();
    index.train(v(base, d)).unwrap();
    index
}

/// Faiss's "build huge indexes in blocks": train once, add blocks to copies, merge the
/// lists into one on-disk file, search from disk.
#[test]
fn blocks_merged_on_disk_equal_one_index() {
    let (n, d, nlist) = (3000, 16, 16);
    let base = clustered(n, d, 20, 18);
    let q = clustered(20, d, 20, 19);
    let mut whole = trained_pq(d, nlist, &base);
    let mut b1 = whole.empty_clone();
    let mut b2 = whole.empty_clone();
    whole.add(v(&base, d)).unwrap();
    b1.add(v(&base[..1000 * d], d)).unwrap();
    b2.add(v(&base[1000 * d..], d)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("merged.ivfdata");
    let disk = OnDiskInvertedLists::create_merged(&path, &[b1.lists(), b2.lists()], true).unwrap();
    let mut from_disk = whole.empty_clone();
    from_disk.replace_invlists(Box::new(disk)).unwrap();
    assert_eq!(from_disk.len(), n);
    let p = params(4);
    let a = whole.search(v(&q, d), 10, &p).unwrap();
    let b = from_disk.search(v(&q, d), 10, &p).unwrap();
    assert_eq!(a.labels(), b.labels());
    assert_eq!(a.distances(), b.distances());
    // In-memory merge_from gives the same index too.
    let mut m1 = b1;
    let mut m2 = b2;
    m1.merge_from(&mut m2, 1000).unwrap();
    assert_eq!(m2.len(), 0);
    let c = m1.search(v(&q, d), 10, &p).unwrap();
    assert_eq!(a.labels(), c.labels());
    // Incompatible quantizers are refused.
    let other_base = clustered(n, d, 20, 99);
    let mut other = trained_pq(d, nlist, &other_base);
    other.add(v(&other_base[..100 * d], d)).unwrap();
    assert!(m1.merge_from(&mut other, 0).is_err());
    assert_eq!(other.len(), 100);
}

#[test]
fn corrupt_or_changed_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.ivfdata");
    let mut a = ArrayInvertedLists::new(4, 8);
    a.append(1, &[1, 2, 3], &[7u8; 24]).unwrap();
    drop(OnDiskInvertedLists::create_merged(&path, &[&a], false).unwrap());
    let bytes = std::fs::read(&path).unwrap();
    // Truncations anywhere: a clear error, never a panic.
    for cut in [0, 10, 64, 100, bytes.len() - 1] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        assert!(OnDiskInvertedLists::open(&path).is_err(), "cut at {cut}");
    }
    // A flipped byte in the table fails the checksum.
    let mut bad = bytes.clone();
    bad[64 + 24 + 8] ^= 1;
    std::fs::write(&path, &bad).unwrap();
    assert!(matches!(
        OnDiskInvertedLists::open(&path),
        Err(Error::Format { .. })
    ));
    // Changed underneath an open handle.
    std::fs::write(&path, &bytes).unwrap();
    let lists = OnDiskInvertedLists::open(&path).unwrap();
    assert!(lists.check().is_ok());
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(lists.check(), Err(Error::Format { .. })));
    // Not an inverted-lists file at all.
    std::fs::write(&path, vec![0u8; 200]).unwrap();
    assert!(OnDiskInvertedLists::open(&path).is_err());
}

#[test]
fn shards_equal_one_index() {
    let (n, d, nlist) = (2000, 8, 8);
    let base = clustered(n, d, 10, 20);
    let q = clustered(15, d, 10, 21);
    let mut whole = IndexIvf::new_flat(d, nlist, Metric::L2).unwrap();
    whole.train(v(&base, d)).unwrap();
    let mut shards = IndexShards::new(
        vec![
            whole.empty_clone(),
            whole.empty_clone(),
            whole.empty_clone(),
        ],
        true,
    )
    .unwrap();
    whole.add(v(&base, d)).unwrap();
    shards.add(v(&base, d)).unwrap();
    assert_eq!(shards.len(), n);
    let p = params(3);
    let a = whole.search(v(&q, d), 10, &p).unwrap();
    let b = shards.search(v(&q, d), 10, &p).unwrap();
    let c = shards.search_shared_quantizer(v(&q, d), 10, &p).unwrap();
    assert_eq!(a.labels(), b.labels());
    assert_eq!(a.labels(), c.labels());
    // A selector sees global ids.
    let sel = IdSelector::range(500, 1500);
    let mut ps = params(8);
    ps.selector = Some(&sel);
    let got = shards.search(v(&q, d), 5, &ps).unwrap();
    assert!(got.labels().iter().all(|&l| (500..1500).contains(&l)));
    // Plain flat shards work the same way.
    let flats = vec![
        IndexFlat::new(d, Metric::L2).unwrap(),
        IndexFlat::new(d, Metric::L2).unwrap(),
    ];
    let mut fs = IndexShards::new(flats, true).unwrap();
    fs.add(v(&base, d)).unwrap();
    let want = brute_force_knn(v(&base, d), v(&q, d), 10, Metric::L2);
    check_knn(
        &fs.search(v(&q, d), 10, &p).unwrap(),
        &want,
        v(&base, d),
        v(&q, d),
        Metric::L2,
        1e-4,
    )
    .unwrap();
}

#[test]
fn single_query_search_splits_probes_and_agrees() {
    let (n, d) = (3000, 8);
    let base = clustered(n, d, 10, 22);
    let q = clustered(1, d, 10, 23);
    let mut index = IndexIvf::new_flat(d, 32, Metric::L2).unwrap();
    index.train(v(&base, d)).unwrap();
    index.add(v(&base, d)).unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(4)
        .build()
        .unwrap();
    let a = pool.install(|| index.search(v(&q, d), 10, &params(16)).unwrap());
    let b = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(|| index.search(v(&q, d), 10, &params(16)).unwrap());
    assert_eq!(a.labels(), b.labels());
}

/// Batch search scans memory-bound encodings list by list (a block's queries share
/// each list read); it must return what query-by-query search returns.
#[test]
fn list_major_batches_equal_query_by_query_search() {
    let (n, d, nq) = (4000, 64, 300);
    let base = clustered(n, d, 20, 31);
    let queries = clustered(nq, d, 20, 32);
    // Every third id is filtered out.
    let keep: Vec<Label> = (0..n as Label).filter(|i| i % 3 != 0).collect();
    let sel = IdSelector::set(keep.iter().copied());
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    for metric in [Metric::L2, Metric::InnerProduct] {
        let mut flat = IndexIvf::new_flat(d, 16, metric).unwrap();
        let mut sq = IndexIvf::new_sq(d, 16, SqType::Q8, metric).unwrap();
        let indexes: [&mut dyn Index; 2] = [&mut flat, &mut sq];
        for index in indexes {
            index.train(v(&base, d)).unwrap();
            index.add(v(&base, d)).unwrap();
            for filtered in [false, true] {
                let mut p = params(8);
                if filtered {
                    p = p.with_selector(&sel);
                }
                let batch = pool.install(|| index.search(v(&queries, d), 10, &p).unwrap());
                for qi in 0..nq {
                    let one = pool.install(|| {
                        index
                            .search(v(&queries[qi * d..(qi + 1) * d], d), 10, &p)
                            .unwrap()
                    });
                    // Labels agree exactly; distances to the last bits (IVF-SQ with
                    // inner product adds the coarse score, which a batch gets from a
                    // GEMM and a single query from a dot-product kernel).
                    let ((bd, bl), (od, ol)) = (batch.row(qi), one.row(0));
                    assert_eq!(bl, ol, "{metric:?} query {qi}");
                    for (x, y) in bd.iter().zip(od) {
                        assert!((x - y).abs() <= 1e-5 * x.abs().max(1.0), "{x} vs {y}");
                    }
                    if filtered {
                        assert!(one.row(0).1.iter().all(|l| l % 3 != 0));
                    }
                }
            }
        }
    }
}

#[test]
fn build_parameters_seed_and_iterations() {
    let (n, d) = (3000, 16);
    let base = clustered(n, d, 12, 41);
    let build = |params: &[(&str, &str)]| {
        let mut index = IndexIvf::new_pq(d, 32, 4, 8, Metric::L2).unwrap();
        for (k, val) in params {
            index.set_build_param(k, val).unwrap();
        }
        index.train(v(&base, d)).unwrap();
        let mut c = vec![0f32; d];
        index.quantizer().centroid_into(0, &mut c).unwrap();
        (c, index.encoding().pq().centroids().to_vec())
    };
    let a = build(&[]);
    assert_eq!(a, build(&[("seed", "1234")]), "1234 is the default seed");
    let b = build(&[("seed", "7")]);
    assert_ne!(a.0, b.0, "the seed reaches the coarse k-means");
    assert_ne!(a.1, b.1, "the seed reaches the PQ training");
    assert_ne!(a.0, build(&[("niter", "2")]).0);

    let mut index = IndexIvf::new_flat(d, 32, Metric::L2).unwrap();
    index.set_build_param("nprobe", "4").unwrap();
    assert_eq!(index.nprobe(), 4);
    for (k, val) in [
        ("niter", "0"),
        ("nprobe", "0"),
        ("seed", "-1"),
        ("max_codes", "x"),
        ("efSearch", "16"),
    ] {
        assert!(
            matches!(
                index.set_build_param(k, val),
                Err(Error::InvalidParameter { .. })
            ),
            "{k}={val}"
        );
    }
}

/// Range search over shards: the hits of one index over all the vectors, with global
/// ids (successive ids or the caller's), through a selector; and reconstruction.
#[test]
fn shards_range_search_and_reconstruct() {
    let (n, d) = (1500, 8);
    let base = clustered(n, d, 10, 24);
    let q = clustered(12, d, 10, 25);
    for metric in [Metric::L2, Metric::InnerProduct] {
        let mut whole = IndexFlat::new(d, metric).unwrap();
        whole.add(v(&base, d)).unwrap();
        let knn = whole
            .search(v(&q, d), 20, &SearchParams::default())
            .unwrap();
        let radius = knn.row(0).0[19];
        let want = whole
            .range_search(v(&q, d), radius, &SearchParams::default())
            .unwrap();
        assert!(want.labels().len() >= 12 * 10, "{metric}: a useful radius");
        let shards = || {
            vec![
                IndexFlat::new(d, metric).unwrap(),
                IndexFlat::new(d, metric).unwrap(),
                IndexFlat::new(d, metric).unwrap(),
            ]
        };
        let mut succ = IndexShards::new(shards(), true).unwrap();
        succ.add(v(&base, d)).unwrap();
        let got = succ
            .range_search(v(&q, d), radius, &SearchParams::default())
            .unwrap();
        assert_eq!(got, want, "{metric}: successive ids");
        // The caller's ids (the positions shifted by 1000), and a selector on them.
        let own_shards = shards()
            .into_iter()
            .map(|s| vq_core::IndexIDMap2::new(s).unwrap())
            .collect();
        let mut own = IndexShards::new(own_shards, false).unwrap();
        let ids: Vec<Label> = (0..n as Label).map(|i| i + 1000).collect();
        own.add_with_ids(v(&base, d), &ids).unwrap();
        let sel = IdSelector::range(1300, 2200);
        let mut p = SearchParams::default();
        p.selector = Some(&sel);
        let got = own.range_search(v(&q, d), radius, &p).unwrap();
        for qi in 0..q.len() / d {
            let (wd, wl) = want.row(qi);
            let expect: Vec<(f32, Label)> = wd
                .iter()
                .zip(wl)
                .map(|(&d, &l)| (d, l + 1000))
                .filter(|&(_, l)| (1300..2200).contains(&l))
                .collect();
            let (gd, gl) = got.row(qi);
            let have: Vec<(f32, Label)> = gd.iter().copied().zip(gl.iter().copied()).collect();
            assert_eq!(have, expect, "{metric}: query {qi}, own ids and a selector");
        }
        let mut out = vec![0f32; d];
        for id in [0, 499, 500, 1499] {
            succ.reconstruct_into(id, &mut out).unwrap();
            assert_eq!(out, &base[id as usize * d..(id as usize + 1) * d]);
            own.reconstruct_into(id + 1000, &mut out).unwrap();
            assert_eq!(out, &base[id as usize * d..(id as usize + 1) * d]);
        }
        assert!(matches!(
            succ.reconstruct_into(1500, &mut out),
            Err(Error::IdNotFound { id: 1500 })
        ));
        assert!(matches!(
            own.reconstruct_into(999, &mut out),
            Err(Error::IdNotFound { id: 999 })
        ));
        assert!(
            succ.range_search(v(&q, d), f32::NAN, &SearchParams::default())
                .is_err()
        );
    }
}
