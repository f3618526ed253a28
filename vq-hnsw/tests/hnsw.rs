//! Graph invariants, exactness with a full beam, deletion, filters, ids, storage types and
//! files of the HNSW indexes.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;

use proptest::prelude::*;
use vq_core::synthetic::SyntheticSpec;
use vq_core::testing::brute_force_knn;
use vq_core::{
    Error, IdSelector, Index, Label, Metric, SearchParams, SearchResults, Vectors, VectorsRef,
};
use vq_hnsw::{HnswStorage, IndexHnsw, IndexHnswFlat, IndexHnswPq, IndexHnswSq};
use vq_pq::SqType;

fn data(n: usize, d: usize, nq: usize, seed: u64) -> (Vectors, Vectors) {
    let s = SyntheticSpec::new(n, d, nq)
        .with_seed(seed)
        .generate()
        .unwrap();
    (s.base, s.queries)
}

fn recall(got: &SearchResults, want: &SearchResults) -> f64 {
    let k = got.k();
    let mut hit = 0;
    for q in 0..got.nq() {
        let w: HashSet<Label> = want.row(q).1.iter().copied().collect();
        hit += got.row(q).1.iter().filter(|l| w.contains(l)).count();
    }
    hit as f64 / (got.nq() * k) as f64
}

/// Every list within capacity, no self/out-of-range/removed links, entry on top.
fn check_degrees<S: HnswStorage>(idx: &IndexHnsw<S>) {
    idx.check_graph().unwrap();
    let g = idx.graph();
    for u in 0..g.len() {
        for l in 0..=g.level(u).unwrap() {
            assert!(g.neighbors(u, l).len() <= g.capacity(l));
        }
    }
    if let Some(e) = g.entry_point() {
        assert_eq!(g.level(e), Some(g.max_level()));
    }
}

#[test]
fn ef_at_least_n_is_exact_search() {
    for metric in [Metric::L2, Metric::InnerProduct] {
        let (x, q) = data(600, 12, 20, 3);
        let mut idx = IndexHnswFlat::new(12, 8, metric).unwrap();
        idx.add(x.as_ref()).unwrap();
        let p = SearchParams::new().with_ef_search(600);
        let got = idx.search(q.as_ref(), 10, &p).unwrap();
        let want = brute_force_knn(x.as_ref(), q.as_ref(), 10, metric);
        assert_eq!(recall(&got, &want), 1.0, "{metric:?}");
        for qi in 0..q.len() {
            for (a, b) in got.row(qi).0.iter().zip(want.row(qi).0) {
                assert!((a - b).abs() <= 1e-3 * b.abs().max(1.0), "{a} {b}");
            }
        }
    }
}

#[test]
fn degrees_connectivity_and_recall_after_build() {
    let (x, q) = data(5000, 24, 100, 5);
    for m in [4, 16] {
        let mut idx = IndexHnswFlat::new(24, m, Metric::L2).unwrap();
        idx.add(x.as_ref()).unwrap();
        check_degrees(&idx);
        assert_eq!(idx.reachable_count(), 5000);
        let want = brute_force_knn(x.as_ref(), q.as_ref(), 10, Metric::L2);
        let got = idx
            .search(q.as_ref(), 10, &SearchParams::new().with_ef_search(128))
            .unwrap();
        let r = recall(&got, &want);
        assert!(r > 0.95, "M={m}: recall {r}");
        assert_eq!(idx.describe(), format!("HNSW{m}"));
        let bpv = idx.bytes_per_vector();
        assert!(bpv <= (4 * 24 + 8 * m + 16) as f64, "{bpv}");
    }
}

#[test]
fn incremental_adds_match_one_add_in_quality() {
    let (x, q) = data(3000, 16, 50, 8);
    let mut idx = IndexHnswFlat::new(16, 12, Metric::L2).unwrap();
    for c in 0..30 {
        idx.add(x.as_ref().slice(c * 100..(c + 1) * 100)).unwrap();
    }
    check_degrees(&idx);
    assert_eq!(idx.reachable_count(), 3000);
    let want = brute_force_knn(x.as_ref(), q.as_ref(), 10, Metric::L2);
    let got = idx
        .search(q.as_ref(), 10, &SearchParams::new().with_ef_search(64))
        .unwrap();
    assert!(recall(&got, &want) > 0.95);
}

#[test]
fn link_all_candidates_follows_faiss_and_can_be_turned_off() {
    // 30 points, level 0 holds 2·M = 32 links, efConstruction 40 finds every earlier node:
    // under Faiss's rule each node links all of them, so level 0 is the complete graph.
    let (x, _) = data(30, 2, 1, 40);
    for deterministic in [false, true] {
        let mut on = IndexHnswFlat::new(2, 16, Metric::L2).unwrap();
        assert!(on.graph().links_all_candidates());
        on.set_deterministic(deterministic);
        on.add(x.as_ref()).unwrap();
        check_degrees(&on);
        for u in 0..30 {
            let mut nb = on.graph().neighbors(u, 0);
            nb.sort_unstable();
            let all: Vec<u32> = (0..30).filter(|&v| v != u as u32).collect();
            assert_eq!(nb, all, "node {u}, deterministic {deterministic}");
        }
        // The rule off: the heuristic prunes 2-d neighbourhoods to a few links.
        let mut off = IndexHnswFlat::new(2, 16, Metric::L2).unwrap();
        off.set_deterministic(deterministic);
        off.set_build_param("linkAllCandidates", "0").unwrap();
        assert!(!off.graph().links_all_candidates());
        off.add(x.as_ref()).unwrap();
        check_degrees(&off);
        assert_eq!(off.reachable_count(), 30);
        let links: usize = (0..30).map(|u| off.graph().neighbors(u, 0).len()).sum();
        assert!(links < 30 * 29 / 2, "{links} links");
    }
    // The rule is saved with the graph, so adds after a load follow it: 20 points, a
    // round trip, 10 more: complete with the rule on, sparse with it off.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.hnsw");
    for on in [true, false] {
        let mut idx = IndexHnswFlat::new(2, 16, Metric::L2).unwrap();
        idx.set_link_all_candidates(on);
        idx.add(x.as_ref().slice(0..20)).unwrap();
        idx.save(&path).unwrap();
        let mut back = IndexHnswFlat::load(&path).unwrap();
        assert_eq!(back.graph().links_all_candidates(), on);
        back.add(x.as_ref().slice(20..30)).unwrap();
        let links: usize = (0..30).map(|u| back.graph().neighbors(u, 0).len()).sum();
        assert_eq!(links == 30 * 29, on, "{links} links, rule {on}");
    }
    let mut idx = IndexHnswFlat::new(2, 16, Metric::L2).unwrap();
    assert!(idx.set_build_param("linkAllCandidates", "some").is_err());
}

#[test]
fn build_flags_round_trip_and_older_streams_read_as_they_were_built() {
    // magic, version, kind "flat" (length-prefixed), metric, d M efC efS n, seed, draws.
    const FLAGS: usize = 8 + 4 + 8 + 4 + 1 + 5 * 8 + 8 + 8;
    // Version 4's re-selection headroom follows the flags.
    const HEADROOM: std::ops::Range<usize> = FLAGS + 1..FLAGS + 5;
    let (x, q) = data(300, 4, 5, 41);
    for det in [false, true] {
        for on in [false, true] {
            for coded in [false, true] {
                let mut idx = IndexHnswFlat::new(4, 8, Metric::L2).unwrap();
                idx.set_deterministic(det);
                idx.set_link_all_candidates(on);
                idx.set_coded_build(coded);
                idx.set_prune_headroom(0.25).unwrap();
                idx.add(x.as_ref()).unwrap();
                let mut buf = Vec::new();
                idx.write_to(&mut buf).unwrap();
                assert_eq!(buf[8..12], 4u32.to_le_bytes());
                assert_eq!(
                    buf[FLAGS],
                    u8::from(det) | u8::from(on) << 1 | u8::from(!coded) << 2
                );
                assert_eq!(buf[HEADROOM], 0.25f32.to_le_bytes());
                let back = IndexHnswFlat::read_from(&mut buf.as_slice()).unwrap();
                assert_eq!(back.deterministic(), det);
                assert_eq!(back.graph().links_all_candidates(), on);
                assert_eq!(back.coded_build(), coded);
                assert_eq!(back.graph().prune_headroom(), 0.25);
                let p = SearchParams::new();
                assert_eq!(
                    back.search(q.as_ref(), 5, &p).unwrap(),
                    idx.search(q.as_ref(), 5, &p).unwrap()
                );
                // Unknown flag bits, a headroom out of range, and a newer version: errors.
                let mut bad = buf.clone();
                bad[FLAGS] |= 8;
                assert!(IndexHnswFlat::read_from(&mut bad.as_slice()).is_err());
                for h in [0.75f32, -0.1, f32::NAN] {
                    let mut bad = buf.clone();
                    bad[HEADROOM].copy_from_slice(&h.to_le_bytes());
                    assert!(IndexHnswFlat::read_from(&mut bad.as_slice()).is_err());
                }
                let mut newer = buf.clone();
                newer[8..12].copy_from_slice(&5u32.to_le_bytes());
                assert!(matches!(
                    IndexHnswFlat::read_from(&mut newer.as_slice()),
                    Err(Error::UnsupportedVersion { .. })
                ));
                // Older streams have no headroom: read with 0, as they were built.
                let older = |version: u32| {
                    let mut v: Vec<u8> = buf[..HEADROOM.start]
                        .iter()
                        .chain(&buf[HEADROOM.end..])
                        .copied()
                        .collect();
                    v[8..12].copy_from_slice(&version.to_le_bytes());
                    IndexHnswFlat::read_from(&mut v.as_slice())
                };
                let v3 = older(3).unwrap();
                assert_eq!(v3.graph().prune_headroom(), 0.0);
                assert_eq!(v3.coded_build(), coded);
                // Version 2 (before the coded-build bit): read with it on; bit 2 is corrupt.
                match older(2) {
                    Ok(old) => {
                        assert!(coded);
                        assert!(old.coded_build());
                        assert_eq!(old.graph().links_all_candidates(), on);
                    }
                    Err(e) => assert!(!coded, "{e}"),
                }
                // Version 1 (before the rule's bit): read with the rule off; bits 1 and 2
                // set are corrupt.
                match older(1) {
                    Ok(old) => {
                        assert!(!on && coded);
                        assert!(!old.graph().links_all_candidates());
                        assert_eq!(old.deterministic(), det);
                    }
                    Err(e) => assert!(on || !coded, "{e}"),
                }
            }
        }
    }
    let mut idx = IndexHnswFlat::new(4, 8, Metric::L2).unwrap();
    assert!(idx.coded_build());
    idx.set_build_param("codedBuild", "0").unwrap();
    assert!(!idx.coded_build());
    assert!(idx.set_build_param("codedBuild", "maybe").is_err());
    // Faiss's default headroom; 0 to 0.5 accepted.
    assert_eq!(idx.graph().prune_headroom(), 0.2);
    assert_eq!(idx.graph().reselect_cap(0), 12);
    assert_eq!(idx.graph().reselect_cap(1), 6);
    idx.set_build_param("pruneHeadroom", "0").unwrap();
    assert_eq!(idx.graph().reselect_cap(0), 16);
    idx.set_build_param("pruneHeadroom", "0.5").unwrap();
    assert_eq!(idx.graph().reselect_cap(1), 4);
    for bad in ["0.6", "-0.1", "NaN", "x"] {
        assert!(idx.set_build_param("pruneHeadroom", bad).is_err(), "{bad}");
    }
    assert_eq!(idx.graph().prune_headroom(), 0.5);
}

#[test]
fn deterministic_build_is_identical_at_1_and_2_threads() {
    let (x, _) = data(3000, 16, 1, 9);
    let build = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut idx = IndexHnswFlat::new(16, 8, Metric::L2).unwrap();
            idx.set_deterministic(true);
            idx.add(x.as_ref().slice(0..1000)).unwrap();
            idx.add(x.as_ref().slice(1000..3000)).unwrap();
            idx
        })
    };
    let a = build(1);
    let b = build(2);
    let (ga, gb) = (a.graph(), b.graph());
    assert_eq!(ga.entry_point(), gb.entry_point());
    assert_eq!(ga.max_level(), gb.max_level());
    for u in 0..3000 {
        assert_eq!(ga.level(u), gb.level(u));
        for l in 0..=ga.level(u).unwrap() {
            assert_eq!(ga.neighbors(u, l), gb.neighbors(u, l), "node {u} level {l}");
        }
    }
    check_degrees(&a);
    assert_eq!(a.reachable_count(), 3000);
    // And the deterministic graph is as good as the locked one.
    let (_, q) = data(3000, 16, 50, 9);
    let want = brute_force_knn(x.as_ref(), q.as_ref(), 10, Metric::L2);
    let got = a
        .search(q.as_ref(), 10, &SearchParams::new().with_ef_search(64))
        .unwrap();
    assert!(recall(&got, &want) > 0.95);
}

#[test]
fn deterministic_and_locked_builds_are_equally_dense() {
    // Level 0 holds 64 links and efConstruction 40 finds fewer: under Faiss's rule a new
    // node links all it finds. The deterministic build adds a batch's earlier members to
    // what the graph search found; the candidates must still be the 40 nearest, or the
    // heuristic thins the lists (it did: about half the links).
    let (x, _) = data(4000, 16, 1, 10);
    let mean_degree = |deterministic: bool| {
        let mut idx = IndexHnswFlat::new(16, 32, Metric::L2).unwrap();
        idx.set_deterministic(deterministic);
        idx.add(x.as_ref()).unwrap();
        let g = idx.graph();
        (0..g.len()).map(|u| g.neighbors(u, 0).len()).sum::<usize>() as f64 / g.len() as f64
    };
    let (locked, det) = (mean_degree(false), mean_degree(true));
    assert!(
        (det / locked - 1.0).abs() < 0.05,
        "locked {locked}, deterministic {det}"
    );
}

#[test]
fn removed_ids_are_never_returned_and_graph_stays_connected() {
    let (x, q) = data(4000, 16, 100, 11);
    let mut idx = IndexHnswFlat::new(16, 8, Metric::L2).unwrap();
    idx.add(x.as_ref()).unwrap();
    // Remove 30 % (every id with id % 10 < 3), then 20 % more in a second round.
    let n1 = idx.remove_ids(&|id: Label| id % 10 < 3).unwrap();
    assert_eq!(n1, 1200);
    assert_eq!(idx.len(), 2800);
    check_degrees(&idx);
    assert_eq!(idx.reachable_count(), 2800);
    let n2 = idx.remove_ids(&IdSelector::range(0, 1000)).unwrap();
    assert_eq!(n2, 700);
    assert_eq!(idx.reachable_count(), 2100);
    check_degrees(&idx);
    let live: Vec<Label> = (0..4000).filter(|&i| i % 10 >= 3 && i >= 1000).collect();
    let res = idx
        .search(q.as_ref(), 10, &SearchParams::new().with_ef_search(32))
        .unwrap();
    let set: HashSet<Label> = live.iter().copied().collect();
    assert!(res.labels().iter().all(|l| set.contains(l)));
    // Recall against exact search over the survivors.
    let surv: Vec<f32> = live
        .iter()
        .flat_map(|&i| x.row(i as usize).to_vec())
        .collect();
    let sv = VectorsRef::new(&surv, 16).unwrap();
    let want = brute_force_knn(sv, q.as_ref(), 10, Metric::L2);
    let want_ids: Vec<Label> = want.labels().iter().map(|&j| live[j as usize]).collect();
    let want = SearchResults::from_parts(100, 10, want.distances().to_vec(), want_ids).unwrap();
    let got = idx
        .search(q.as_ref(), 10, &SearchParams::new().with_ef_search(128))
        .unwrap();
    assert!(recall(&got, &want) > 0.95, "{}", recall(&got, &want));
    // Removed ids cannot be reconstructed; live ones can.
    assert!(matches!(
        idx.reconstruct(0),
        Err(Error::IdNotFound { id: 0 })
    ));
    assert_eq!(idx.reconstruct(1005).unwrap(), x.row(1005));
    // Slots are re-used and new ids continue after the largest.
    let slots_before = idx.slots();
    idx.add(x.as_ref().slice(0..500)).unwrap();
    assert_eq!(idx.slots(), slots_before);
    assert_eq!(idx.len(), 2600);
    assert_eq!(idx.reconstruct(4000).unwrap(), x.row(0));
    assert_eq!(idx.reachable_count(), 2600);
    check_degrees(&idx);
    let r = idx
        .search(
            x.as_ref().slice(0..1),
            1,
            &SearchParams::new().with_ef_search(64),
        )
        .unwrap();
    assert_eq!(r.labels()[0], 4000);
    // Removing everything leaves an empty, usable index.
    let all = idx.len();
    assert_eq!(idx.remove_ids(&IdSelector::All).unwrap(), all);
    assert!(idx.is_empty());
    assert!(matches!(
        idx.search(q.as_ref(), 1, &SearchParams::new()),
        Err(Error::EmptyIndex)
    ));
    idx.add(x.as_ref().slice(0..100)).unwrap();
    assert_eq!(idx.reachable_count(), 100);
}

#[test]
fn filtered_search_satisfies_filter_and_reaches_k() {
    let (x, q) = data(5000, 16, 30, 13);
    let mut idx = IndexHnswFlat::new(16, 8, Metric::L2).unwrap();
    idx.add(x.as_ref()).unwrap();
    // From a filter keeping half (graph search) to one keeping 12 ids (exact scan).
    for keep_every in [2, 7, 50, 400] {
        let f = move |id: Label| id % keep_every == 0;
        let kept = (0..5000).filter(|&i| f(i)).count();
        let k = 10.min(kept);
        let res = idx
            .search(q.as_ref(), k, &SearchParams::new().with_selector(&f))
            .unwrap();
        for qi in 0..q.len() {
            let labels = res.row(qi).1;
            assert!(
                labels.iter().all(|&l| l >= 0 && f(l)),
                "{keep_every}: {labels:?}"
            );
            let uniq: HashSet<_> = labels.iter().collect();
            assert_eq!(uniq.len(), k);
        }
        // Quality: against exact search over the kept ids.
        let ids: Vec<Label> = (0..5000).filter(|&i| f(i)).collect();
        let sub: Vec<f32> = ids
            .iter()
            .flat_map(|&i| x.row(i as usize).to_vec())
            .collect();
        let want = brute_force_knn(
            VectorsRef::new(&sub, 16).unwrap(),
            q.as_ref(),
            k,
            Metric::L2,
        );
        let want_ids: Vec<Label> = want.labels().iter().map(|&j| ids[j as usize]).collect();
        let want =
            SearchResults::from_parts(q.len(), k, want.distances().to_vec(), want_ids).unwrap();
        let r = recall(&res, &want);
        assert!(r > 0.9, "keep 1/{keep_every}: recall {r}");
    }
    // A filter keeping fewer than k: what passes, then -1.
    let f = |id: Label| id == 17 || id == 4000;
    let res = idx
        .search(
            q.as_ref().slice(0..1),
            5,
            &SearchParams::new().with_selector(&f),
        )
        .unwrap();
    let mut l = res.labels().to_vec();
    l[..2].sort_unstable();
    assert_eq!(l, vec![17, 4000, -1, -1, -1]);
}

#[test]
fn add_with_ids_reconstruct_and_duplicates() {
    let (x, q) = data(1000, 8, 10, 17);
    let mut idx = IndexHnswFlat::new(8, 6, Metric::L2).unwrap();
    let ids: Vec<Label> = (0..1000).map(|i| 10_000 + 3 * i).collect();
    idx.add_with_ids(x.as_ref(), &ids).unwrap();
    assert_eq!(idx.reconstruct(10_003).unwrap(), x.row(1));
    assert!(matches!(
        idx.reconstruct(5),
        Err(Error::IdNotFound { id: 5 })
    ));
    let res = idx
        .search(
            x.as_ref().slice(0..3),
            1,
            &SearchParams::new().with_ef_search(32),
        )
        .unwrap();
    assert_eq!(res.labels(), &[10_000, 10_003, 10_006]);
    // Wrong lengths and duplicates are errors and add nothing.
    assert!(matches!(
        idx.add_with_ids(x.as_ref().slice(0..2), &[1]),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        idx.add_with_ids(x.as_ref().slice(0..1), &[10_000]),
        Err(Error::DuplicateId { id: 10_000 })
    ));
    assert!(matches!(
        idx.add_with_ids(x.as_ref().slice(0..2), &[7, 7]),
        Err(Error::DuplicateId { id: 7 })
    ));
    assert_eq!(idx.len(), 1000);
    // Plain add after explicit ids continues after the largest.
    idx.add(x.as_ref().slice(0..1)).unwrap();
    assert_eq!(idx.reconstruct(10_000 + 3 * 999 + 1).unwrap(), x.row(0));
    let r = idx.search(q.as_ref(), 5, &SearchParams::new()).unwrap();
    assert!(r.labels().iter().all(|&l| l >= 10_000));
}

#[test]
fn range_search_with_large_ef_is_exact() {
    let (x, q) = data(800, 8, 10, 19);
    let mut idx = IndexHnswFlat::new(8, 8, Metric::L2).unwrap();
    idx.add(x.as_ref()).unwrap();
    let knn = brute_force_knn(x.as_ref(), q.as_ref(), 20, Metric::L2);
    // Half-way between the 19th and 20th neighbours of query 0: no distance sits on it.
    let radius = 0.5 * (knn.row(0).0[18] + knn.row(0).0[19]);
    let got = idx
        .range_search(q.as_ref(), radius, &SearchParams::new().with_ef_search(800))
        .unwrap();
    let want = vq_core::testing::brute_force_range(x.as_ref(), q.as_ref(), radius, Metric::L2);
    for qi in 0..q.len() {
        let a: HashSet<_> = got.row(qi).1.iter().collect();
        let b: HashSet<_> = want.row(qi).1.iter().collect();
        assert_eq!(a, b, "query {qi}");
    }
    assert!(
        idx.range_search(q.as_ref(), f32::NAN, &SearchParams::new())
            .is_err()
    );
}

/// A range search is not capped by the beam: from the hits the beam finds it floods
/// every node within the radius linked to one already found, so at the default
/// `efSearch` (16) it finds nearly all of a radius that holds ~600 vectors per query;
/// filtered-out and removed nodes relay the flood but are never returned.
#[test]
fn range_search_floods_the_radius_past_ef() {
    let (x, q) = data(4000, 16, 20, 31);
    for metric in [Metric::L2, Metric::InnerProduct] {
        let mut idx = IndexHnswFlat::new(16, 16, metric).unwrap();
        idx.add(x.as_ref()).unwrap();
        let knn = brute_force_knn(x.as_ref(), q.as_ref(), 150, metric);
        let radius = knn.row(0).0[149];
        let want = vq_core::testing::brute_force_range(x.as_ref(), q.as_ref(), radius, metric);
        let p = SearchParams::new();
        let got = idx.range_search(q.as_ref(), radius, &p).unwrap();
        let m = vq_core::eval::RangeMatch::new(&got, &want).unwrap();
        assert!(m.truth > 20 * 100, "{metric}: {m:?}");
        assert_eq!(m.found, m.reported, "{metric}: only true hits");
        // Measured: L2 0.999 (0.27 before the flood), inner product 0.91 (its hits, the
        // largest vectors in a direction, are fewer and less linked to each other).
        let floor = if metric == Metric::L2 { 0.99 } else { 0.85 };
        assert!(m.recall().unwrap() > floor, "{metric}: {m:?}");
        // A selector: the same hits, those it keeps.
        let sel = IdSelector::range(1000, 3000);
        let got_sel = idx
            .range_search(q.as_ref(), radius, &SearchParams::new().with_selector(&sel))
            .unwrap();
        assert!(got_sel.labels().iter().all(|l| (1000..3000).contains(l)));
        let ms = vq_core::eval::RangeMatch::new(&got_sel, &want).unwrap();
        assert!(ms.found as f64 > 0.4 * m.found as f64, "{metric}: {ms:?}");
        // Removed nodes are never returned; the rest is still found.
        let gone = IdSelector::range(0, 1200);
        idx.remove_ids(&gone).unwrap();
        let after = idx.range_search(q.as_ref(), radius, &p).unwrap();
        assert!(after.labels().iter().all(|&l| l >= 1200));
        let survivors = x.as_ref().slice(1200..4000);
        let mut want_after =
            vq_core::testing::brute_force_range(survivors, q.as_ref(), radius, metric);
        want_after.labels_mut().iter_mut().for_each(|l| *l += 1200);
        let ma = vq_core::eval::RangeMatch::new(&after, &want_after).unwrap();
        assert_eq!(ma.found, ma.reported);
        assert!(
            ma.recall().unwrap() > floor - 0.05,
            "{metric} after removal: {ma:?}"
        );
    }
}

/// An unbounded radius returns every reachable node: the entry point (scored by the
/// descent, expanded by the beam only when it runs dry) seeds the flood too, so a node
/// that only it links to is found, and a beam filled with duplicates does not hide the
/// rest (from a review: 199 of 200, and 33 of 200, before).
#[test]
fn unbounded_range_search_reaches_every_node() {
    let (x, q) = data(200, 8, 1, 0);
    let mut idx = IndexHnswFlat::new(8, 4, Metric::InnerProduct).unwrap();
    idx.add(x.as_ref()).unwrap();
    assert_eq!(idx.reachable_count(), 200);
    let got = idx
        .range_search(q.as_ref(), f32::NEG_INFINITY, &SearchParams::new())
        .unwrap();
    assert_eq!(got.row(0).1.len(), 200);
    let (x, _) = data(200, 8, 1, 12);
    let mut all = Vec::new();
    for i in 0..200 {
        all.extend_from_slice(if i % 2 == 0 { x.row(0) } else { x.row(i) });
    }
    let base = VectorsRef::new(&all, 8).unwrap();
    let mut idx = IndexHnswFlat::new(8, 16, Metric::L2).unwrap();
    idx.add(base).unwrap();
    assert_eq!(idx.reachable_count(), 200);
    let q = VectorsRef::new(x.row(0), 8).unwrap();
    let got = idx
        .range_search(q, f32::INFINITY, &SearchParams::new())
        .unwrap();
    assert_eq!(got.row(0).1.len(), 200);
}

#[test]
fn sq8_and_pq_storage() {
    let (x, q) = data(4000, 32, 50, 23);
    let want = brute_force_knn(x.as_ref(), q.as_ref(), 10, Metric::L2);
    let mut sq = IndexHnswSq::new_sq(32, 16, SqType::Q8, Metric::L2).unwrap();
    assert!(matches!(sq.add(x.as_ref()), Err(Error::NotTrained { .. })));
    sq.train(x.as_ref()).unwrap();
    sq.add(x.as_ref()).unwrap();
    assert_eq!(sq.describe(), "HNSW16_SQ8");
    check_degrees(&sq);
    assert_eq!(sq.reachable_count(), 4000);
    let r = recall(
        &sq.search(q.as_ref(), 10, &SearchParams::new().with_ef_search(64))
            .unwrap(),
        &want,
    );
    assert!(r > 0.9, "SQ8 recall {r}");
    let rec = sq.reconstruct(3).unwrap();
    let err: f32 = rec.iter().zip(x.row(3)).map(|(a, b)| (a - b).abs()).sum();
    assert!(err / 32.0 < 0.1, "{err}");

    let mut pq = IndexHnswPq::new_pq(32, 16, 16, 8, Metric::L2).unwrap();
    pq.train(x.as_ref()).unwrap();
    pq.add(x.as_ref()).unwrap();
    assert_eq!(pq.describe(), "HNSW16_PQ16");
    check_degrees(&pq);
    let r = recall(
        &pq.search(q.as_ref(), 10, &SearchParams::new().with_ef_search(64))
            .unwrap(),
        &want,
    );
    assert!(r > 0.5, "PQ16 recall {r}");
    // Save/load round trips for codec storage too.
    let mut buf = Vec::new();
    pq.write_to(&mut buf).unwrap();
    let back = IndexHnswPq::read_from(&mut buf.as_slice()).unwrap();
    let p = SearchParams::new().with_ef_search(32);
    assert_eq!(
        back.search(q.as_ref(), 10, &p).unwrap(),
        pq.search(q.as_ref(), 10, &p).unwrap()
    );
    let mut buf = Vec::new();
    sq.write_to(&mut buf).unwrap();
    let back = IndexHnswSq::read_from(&mut buf.as_slice()).unwrap();
    assert_eq!(
        back.search(q.as_ref(), 10, &p).unwrap(),
        sq.search(q.as_ref(), 10, &p).unwrap()
    );
    // A flat file is not an SQ file.
    let mut flat = IndexHnswFlat::new(32, 16, Metric::L2).unwrap();
    flat.add(x.as_ref().slice(0..10)).unwrap();
    let mut buf = Vec::new();
    flat.write_to(&mut buf).unwrap();
    assert!(IndexHnswSq::read_from(&mut buf.as_slice()).is_err());
}

#[test]
fn save_load_gives_identical_results_and_corrupt_files_are_errors() {
    let (x, q) = data(2000, 16, 20, 29);
    let mut idx = IndexHnswFlat::new(16, 8, Metric::InnerProduct).unwrap();
    idx.add(x.as_ref()).unwrap();
    idx.remove_ids(&IdSelector::range(100, 300)).unwrap();
    idx.set_ef_search(24).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.hnsw");
    idx.save(&path).unwrap();
    let back = IndexHnswFlat::load(&path).unwrap();
    assert_eq!(back.len(), idx.len());
    assert_eq!(back.graph().ef_search(), 24);
    let p = SearchParams::new();
    assert_eq!(
        back.search(q.as_ref(), 10, &p).unwrap(),
        idx.search(q.as_ref(), 10, &p).unwrap()
    );
    let bytes = std::fs::read(&path).unwrap();
    // Truncated anywhere: an error, never a panic.
    for cut in [0, 7, 12, 40, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        assert!(IndexHnswFlat::load(&path).is_err(), "cut at {cut}");
    }
    // Trailing garbage.
    let mut longer = bytes.clone();
    longer.push(0);
    std::fs::write(&path, &longer).unwrap();
    assert!(IndexHnswFlat::load(&path).is_err());
    // Flipped bytes: an error or (for bytes of vectors) a still-valid index.
    let mut rng = 12345u64;
    for _ in 0..300 {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let pos = (rng >> 33) as usize % bytes.len();
        let mut bad = bytes.clone();
        bad[pos] ^= 0xA5;
        std::fs::write(&path, &bad).unwrap();
        if let Ok(ix) = IndexHnswFlat::load(&path) {
            ix.check_graph().unwrap();
            let _ = ix.search(q.as_ref(), 5, &p);
        }
    }
    // Wrong magic.
    let mut bad = bytes.clone();
    bad[0] = b'X';
    std::fs::write(&path, &bad).unwrap();
    assert!(matches!(
        IndexHnswFlat::load(&path),
        Err(Error::Format { .. })
    ));
}

#[test]
fn bad_input_is_an_error() {
    assert!(IndexHnswFlat::new(8, 1, Metric::L2).is_err());
    assert!(IndexHnswFlat::new(0, 8, Metric::L2).is_err());
    let mut idx = IndexHnswFlat::new(4, 4, Metric::L2).unwrap();
    assert!(idx.set_ef_construction(0).is_err());
    assert!(idx.set_ef_search(0).is_err());
    assert!(idx.set_build_param("efSearch", "0").is_err());
    assert!(idx.set_build_param("M", "8").is_err());
    assert!(idx.set_build_param("deterministic", "maybe").is_err());
    let nan = [1.0, f32::NAN, 0.0, 0.0];
    assert!(matches!(
        idx.add(VectorsRef::new(&nan, 4).unwrap()),
        Err(Error::NonFinite { .. })
    ));
    assert!(idx.add(VectorsRef::new(&[1.0; 6], 3).unwrap()).is_err());
    assert!(idx.is_empty());
    let (x, _) = data(50, 4, 1, 31);
    idx.add(x.as_ref()).unwrap();
    let q = x.as_ref().slice(0..1);
    let mut p = SearchParams::new();
    p.ef_search = Some(0);
    assert!(idx.search(q, 1, &p).is_err());
    assert!(idx.search(q, 0, &SearchParams::new()).is_err());
    assert!(idx.search(q, 51, &SearchParams::new()).is_err());
    assert!(
        idx.search(VectorsRef::new(&nan, 4).unwrap(), 1, &SearchParams::new())
            .is_err()
    );
    let mut out = vec![0.0; 3];
    assert!(idx.reconstruct_into(0, &mut out).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    /// Any data, any M: with ef >= n the graph search is exact, and after random removals
    /// every live node stays reachable and no removed id comes back.
    #[test]
    fn exact_with_full_beam_and_connected_after_removals(
        n in 20usize..300, d in 1usize..10, m in 2usize..12, seed in 0u64..1000,
        cut in 0usize..100,
    ) {
        let (x, q) = data(n, d, 5, seed);
        let mut idx = IndexHnswFlat::new(d, m, Metric::L2).unwrap();
        idx.add(x.as_ref()).unwrap();
        check_degrees(&idx);
        prop_assert_eq!(idx.reachable_count(), n);
        let p = SearchParams::new().with_ef_search(n);
        let k = 5.min(n);
        let got = idx.search(q.as_ref(), k, &p).unwrap();
        let want = brute_force_knn(x.as_ref(), q.as_ref(), k, Metric::L2);
        for qi in 0..q.len() {
            for (a, b) in got.row(qi).0.iter().zip(want.row(qi).0) {
                prop_assert!((a - b).abs() <= 1e-3 * b.abs().max(1.0));
            }
        }
        let thr = (cut * n / 100) as Label;
        let removed = idx.remove_ids(&|id: Label| ((id * 7919) % n as Label) < thr).unwrap();
        prop_assert_eq!(idx.len(), n - removed);
        check_degrees(&idx);
        prop_assert_eq!(idx.reachable_count(), idx.len());
        if idx.len() >= k {
            let got = idx.search(q.as_ref(), k, &p).unwrap();
            for &l in got.labels() {
                prop_assert!(l >= 0 && (l * 7919) % n as Label >= thr);
            }
        }
    }
}

#[test]
fn ids_at_the_top_of_the_range_are_errors_not_overflows() {
    let (x, _) = data(20, 4, 1, 41);
    // An explicit id of `Label::MAX`: no automatic id is left after it.
    let mut idx = IndexHnswFlat::new(4, 4, Metric::L2).unwrap();
    idx.add_with_ids(x.as_ref().slice(0..2), &[Label::MAX, 5])
        .unwrap();
    assert!(matches!(
        idx.add(x.as_ref().slice(2..3)),
        Err(Error::InvalidParameter { .. })
    ));
    assert_eq!((idx.len(), idx.slots()), (2, 2));
    idx.add_with_ids(x.as_ref().slice(2..3), &[6]).unwrap();
    assert_eq!(idx.reconstruct(Label::MAX).unwrap(), x.row(0));
    // Automatic ids run up to `Label::MAX - 1`, then stop with an error.
    let mut idx = IndexHnswFlat::new(4, 4, Metric::L2).unwrap();
    idx.add_with_ids(x.as_ref().slice(0..1), &[Label::MAX - 3])
        .unwrap();
    idx.add(x.as_ref().slice(1..3)).unwrap();
    assert_eq!(idx.reconstruct(Label::MAX - 1).unwrap(), x.row(2));
    assert!(idx.add(x.as_ref().slice(3..4)).is_err());
    assert_eq!(idx.len(), 3);
    // The same after removals (slots re-used, ids from the map).
    idx.remove_ids(&IdSelector::set([Label::MAX - 2])).unwrap();
    assert!(idx.add(x.as_ref().slice(3..4)).is_err());
    assert_eq!((idx.len(), idx.slots()), (2, 3));
    let mut b = Vec::new();
    idx.write_to(&mut b).unwrap();
    let back = IndexHnswFlat::read_from(&mut &b[..]).unwrap();
    assert_eq!(back.reconstruct(Label::MAX - 1).unwrap(), x.row(2));
}

#[test]
fn saving_a_loaded_index_writes_the_same_bytes() {
    let (x, _) = data(600, 8, 1, 53);
    let mut idx = IndexHnswFlat::new(8, 4, Metric::L2).unwrap();
    idx.add(x.as_ref()).unwrap();
    // Removals repair lists, which leaves stale links past their counts.
    idx.remove_ids(&IdSelector::range(0, 200)).unwrap();
    let mut a = Vec::new();
    idx.write_to(&mut a).unwrap();
    let mut b = Vec::new();
    IndexHnswFlat::read_from(&mut &a[..])
        .unwrap()
        .write_to(&mut b)
        .unwrap();
    assert!(a == b, "the second save differs");
}

#[test]
fn corrupt_id_sections_and_counts_are_errors() {
    let (x, _) = data(50, 64, 1, 43);
    let mut idx = IndexHnswFlat::new(64, 4, Metric::L2).unwrap();
    idx.add_with_ids(x.as_ref().slice(0..3), &[10, 20, 30])
        .unwrap();
    let mut b = Vec::new();
    idx.write_to(&mut b).unwrap();
    IndexHnswFlat::read_from(&mut &b[..]).unwrap();
    let n = b.len();
    // The stream ends with the ids (8 bytes each) and the next id to hand out.
    let mut low_next = b.clone();
    low_next[n - 8..].copy_from_slice(&15i64.to_le_bytes());
    assert!(IndexHnswFlat::read_from(&mut &low_next[..]).is_err());
    let mut no_label = b.clone();
    no_label[n - 32..n - 24].copy_from_slice(&(-1i64).to_le_bytes());
    assert!(IndexHnswFlat::read_from(&mut &no_label[..]).is_err());
    // Without an id map, the next id cannot be below the number of slots.
    let mut plain = IndexHnswFlat::new(64, 4, Metric::L2).unwrap();
    plain.add(x.as_ref().slice(0..3)).unwrap();
    let mut b = Vec::new();
    plain.write_to(&mut b).unwrap();
    let n = b.len();
    b[n - 8..].copy_from_slice(&1i64.to_le_bytes());
    assert!(IndexHnswFlat::read_from(&mut &b[..]).is_err());
    // A code count far above what the stream holds: an error, not an allocation of it.
    for qtype in [SqType::Q8, SqType::Fp16] {
        let mut sq = IndexHnswSq::new_sq(64, 4, qtype, Metric::L2).unwrap();
        sq.train(x.as_ref()).unwrap();
        sq.add(x.as_ref()).unwrap();
        let mut b = Vec::new();
        sq.write_to(&mut b).unwrap();
        let header: Vec<u8> = [64u64, 4, 40, 16, 50]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let at = b
            .windows(header.len())
            .position(|w| w == header.as_slice())
            .unwrap()
            + 32;
        for huge in [u64::from(u32::MAX) - 2, 1 << 40] {
            let mut bad = b.clone();
            bad[at..at + 8].copy_from_slice(&huge.to_le_bytes());
            assert!(IndexHnswSq::read_from(&mut &bad[..]).is_err());
        }
    }
}

#[test]
fn removing_and_adding_again_keeps_memory_bounded() {
    let (x, _) = data(1500, 3, 1, 47);
    let mut idx = IndexHnswFlat::new(3, 4, Metric::L2).unwrap();
    idx.add(x.as_ref().slice(0..1000)).unwrap();
    let fresh = idx.bytes_per_vector();
    let mut next = 0;
    for round in 0..40 {
        let live: Vec<Label> = (0..idx.slots())
            .filter_map(|s| idx.slot_label(s))
            .step_by(2)
            .collect();
        idx.remove_ids(&IdSelector::set(live.iter().copied()))
            .unwrap();
        let n = live.len();
        idx.add(x.as_ref().slice(next..next + n)).unwrap();
        next = (next + n) % 1000;
        assert_eq!(idx.slots(), 1000, "round {round}");
    }
    idx.check_graph().unwrap();
    assert_eq!(idx.reachable_count(), 1000);
    // The same index saved and loaded again holds exactly the lists its levels need.
    let mut b = Vec::new();
    idx.write_to(&mut b).unwrap();
    let compact = IndexHnswFlat::read_from(&mut &b[..])
        .unwrap()
        .bytes_per_vector();
    let after = idx.bytes_per_vector();
    assert!(
        after < compact * 1.15,
        "{fresh} B/vector fresh, {after} after churn, {compact} reloaded"
    );
    assert!(!idx.is_removed_slot((1 << 32) + 3));
}
