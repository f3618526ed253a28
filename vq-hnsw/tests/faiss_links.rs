//! vq's build against Faiss's, link for link. The fixtures under `tests/faiss` were
//! written by Faiss (`tests/faiss/make_links_fixture.py`, faiss-cpu from PyPI): seeded
//! vectors added one at a time to an `IndexHNSWFlat` on one thread, with every vector's
//! level and every list's links. Given the same levels (`add_with_levels`), one thread and
//! exact build searches, vq inserts the vectors in the same order and must choose the same
//! links: the same beam, the same neighbour-selection heuristic, Faiss's rule for a new
//! node whose beam found fewer candidates than its list holds (`M = 32`, efConstruction
//! 40) and the same re-selection of full lists.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use vq_core::{Metric, Vectors};
use vq_hnsw::IndexHnswFlat;

/// A Faiss-built graph: its vectors, levels and lists (sorted ids, level 0 first).
struct Fixture {
    m: usize,
    ef_construction: usize,
    entry: usize,
    x: Vectors,
    levels: Vec<u8>,
    lists: Vec<Vec<Vec<u32>>>,
}

fn fixture(name: &str) -> Fixture {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/faiss/links_{name}.txt"));
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines().filter(|l| !l.starts_with('#'));
    let head: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    let field = |key: &str| -> usize {
        let i = head.iter().position(|&w| w == key).unwrap();
        head[i + 1].parse().unwrap()
    };
    let (m, ef_construction, d, n, entry) = (
        field("m"),
        field("efc"),
        field("d"),
        field("n"),
        field("entry"),
    );
    let mut data = Vec::with_capacity(n * d);
    for _ in 0..n {
        let line = lines.next().unwrap();
        let bits = line.strip_prefix("v ").unwrap().split_whitespace();
        data.extend(bits.map(|b| f32::from_bits(u32::from_str_radix(b, 16).unwrap())));
    }
    let mut levels = Vec::with_capacity(n);
    let mut lists = Vec::with_capacity(n);
    for _ in 0..n {
        let level: u8 = lines
            .next()
            .unwrap()
            .strip_prefix("l ")
            .unwrap()
            .parse()
            .unwrap();
        levels.push(level);
        let node: Vec<Vec<u32>> = (0..=level)
            .map(|_| {
                let l = lines.next().unwrap();
                l.split_whitespace().map(|v| v.parse().unwrap()).collect()
            })
            .collect();
        lists.push(node);
    }
    assert!(lines.next().is_none());
    Fixture {
        m,
        ef_construction,
        entry,
        x: Vectors::new(data, d).unwrap(),
        levels,
        lists,
    }
}

/// Lists of `f`'s graph that vq's build, given its levels, links differently.
fn differing_lists(f: &Fixture) -> (usize, usize) {
    let mut idx = IndexHnswFlat::new(f.x.dim(), f.m, Metric::L2).unwrap();
    idx.set_ef_construction(f.ef_construction).unwrap();
    idx.set_coded_build(false);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| idx.add_with_levels(f.x.as_ref(), &f.levels))
        .unwrap();
    let g = idx.graph();
    assert_eq!(g.len(), f.levels.len());
    assert_eq!(g.entry_point(), Some(f.entry));
    let (mut total, mut differ) = (0, 0);
    for (u, want) in f.lists.iter().enumerate() {
        assert_eq!(g.level(u), Some(want.len() - 1), "node {u}");
        for (level, want) in want.iter().enumerate() {
            let mut got = g.neighbors(u, level);
            got.sort_unstable();
            total += 1;
            differ += usize::from(&got != want);
        }
    }
    (differ, total)
}

// Rounding could tell vq's kernels (whichever SIMD level runs) from Faiss's in a near tie
// and send one decision the other way: none does on these fixtures where this was written
// (AVX2: every list the same). A different rule changes many (re-selecting full lists to
// capacity instead of Faiss's 80 %: 20 of the 466 lists of `m8`), so a few are allowed.
const SLACK: usize = 4;

#[test]
fn m8_heuristic_rule_gives_faiss_links() {
    let f = fixture("m8");
    // efConstruction 40 finds more candidates than a list of 2M = 16 holds: the
    // heuristic selects every list.
    assert!(f.ef_construction >= 2 * f.m);
    let (differ, total) = differing_lists(&f);
    assert!(
        differ <= SLACK,
        "{differ} of {total} lists differ from Faiss's"
    );
}

#[test]
fn m32_link_all_rule_gives_faiss_links() {
    let f = fixture("m32");
    // efConstruction 40 < 2M = 64: a new node links every candidate (Faiss's rule),
    // reverse links fill lists until they are re-selected.
    assert!(f.ef_construction < 2 * f.m);
    let full = f.lists.iter().filter(|l| l[0].len() > 40).count();
    assert!(
        full > 50,
        "{full} level-0 lists hold more than the beam's 40"
    );
    let (differ, total) = differing_lists(&f);
    assert!(
        differ <= SLACK,
        "{differ} of {total} lists differ from Faiss's"
    );
}

#[test]
fn levels_must_fit() {
    let f = fixture("m8");
    let mut idx = IndexHnswFlat::new(f.x.dim(), f.m, Metric::L2).unwrap();
    let x = f.x.as_ref().slice(0..3);
    assert!(idx.add_with_levels(x, &[0, 1]).is_err());
    assert!(idx.add_with_levels(x, &[0, 31, 0]).is_err());
    assert_eq!(idx.graph().len(), 0);
    idx.add_with_levels(x, &[0, 30, 2]).unwrap();
    assert_eq!(idx.graph().max_level(), 30);
    assert_eq!(idx.graph().entry_point(), Some(1));
}
