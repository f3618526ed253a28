//! Property-testing helpers for your own quantizers and indexes (feature `testing`).
//!
//! - proptest strategies for vector sets and queries ([`vectors`], [`integer_vectors`],
//!   [`dataset`]);
//! - the brute-force oracle in `f64` ([`brute_force_knn`], [`brute_force_range`]),
//!   independent of the SIMD kernels and of GEMM;
//! - a tie- and rounding-tolerant comparison of k-NN results with the oracle
//!   ([`check_knn`]);
//! - recall helpers, re-exported from [`crate::eval`].
//!
//! ```
//! use proptest::prelude::*;
//! use vq_core::testing::{brute_force_knn, check_knn, dataset};
//! use vq_core::{Index, IndexFlat, Metric, SearchParams};
//!
//! proptest!(ProptestConfig::with_cases(8), |((base, queries) in dataset(1..=16, 1..200, 1..5))| {
//!     let mut index = IndexFlat::new(base.dim(), Metric::L2).unwrap();
//!     index.add(base.as_ref()).unwrap();
//!     let k = 3.min(base.len());
//!     let got = index.search(queries.as_ref(), k, &SearchParams::default()).unwrap();
//!     let want = brute_force_knn(base.as_ref(), queries.as_ref(), k, Metric::L2);
//!     check_knn(&got, &want, base.as_ref(), queries.as_ref(), Metric::L2, 1e-4)
//!         .map_err(TestCaseError::fail)?;
//! });
//! ```
// Test support: a broken invariant here is a failed test, documented under # Panics.
#![allow(clippy::expect_used)]

use std::ops::{Range, RangeInclusive};

use proptest::prelude::*;

pub use crate::eval::{GroundTruth, intersection_recall, recall_1_at_r, recall_at_1};
use crate::metric::Metric;
use crate::results::{RangeSearchResults, SearchResults};
use crate::vectors::{Label, NO_LABEL, Vectors, VectorsRef};

/// `n` vectors of dimension `dim` (both drawn from the ranges), values in `[-100, 100]`.
///
/// # Panics
/// When a generated case has dimension 0 (give a `dim` range starting at 1 or more).
pub fn vectors(dim: RangeInclusive<usize>, n: Range<usize>) -> impl Strategy<Value = Vectors> {
    (dim, n).prop_flat_map(|(d, n)| {
        prop::collection::vec(-100.0f32..100.0, n * d)
            .prop_map(move |v| Vectors::new(v, d).expect("invariant: whole rows"))
    })
}

/// Like [`vectors`] with small integer values (`-8..=8`), so that every kernel's sum is
/// exact and ties are frequent.
///
/// # Panics
/// As [`vectors`], for a dimension of 0.
pub fn integer_vectors(
    dim: RangeInclusive<usize>,
    n: Range<usize>,
) -> impl Strategy<Value = Vectors> {
    (dim, n).prop_flat_map(|(d, n)| {
        prop::collection::vec(-8i8..=8, n * d).prop_map(move |v| {
            Vectors::new(v.into_iter().map(f32::from).collect(), d).expect("invariant: whole rows")
        })
    })
}

/// A database and a query set of the same dimension, values in `[-100, 100]`.
///
/// # Panics
/// As [`vectors`], for a dimension of 0.
pub fn dataset(
    dim: RangeInclusive<usize>,
    n: Range<usize>,
    nq: Range<usize>,
) -> impl Strategy<Value = (Vectors, Vectors)> {
    (dim, n, nq).prop_flat_map(|(d, n, nq)| {
        (
            prop::collection::vec(-100.0f32..100.0, n * d),
            prop::collection::vec(-100.0f32..100.0, nq * d),
        )
            .prop_map(move |(b, q)| {
                (
                    Vectors::new(b, d).expect("invariant: whole rows"),
                    Vectors::new(q, d).expect("invariant: whole rows"),
                )
            })
    })
}

/// The exact distance in `f64`.
pub fn exact_distance(metric: Metric, a: &[f32], b: &[f32]) -> f64 {
    match metric {
        Metric::L2 => a
            .iter()
            .zip(b)
            .map(|(&x, &y)| {
                let d = x as f64 - y as f64;
                d * d
            })
            .sum(),
        Metric::InnerProduct => a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum(),
    }
}

fn sorted_hits(metric: Metric, base: VectorsRef<'_>, q: &[f32]) -> Vec<(f64, Label)> {
    let mut all: Vec<(f64, Label)> = base
        .rows()
        .enumerate()
        .map(|(i, y)| (exact_distance(metric, q, y), i as Label))
        .collect();
    all.sort_by(|a, b| {
        let (ka, kb) = match metric {
            Metric::L2 => (a.0, b.0),
            Metric::InnerProduct => (-a.0, -b.0),
        };
        ka.total_cmp(&kb).then(a.1.cmp(&b.1))
    });
    all
}

/// The oracle: exact k-NN computed in `f64`, ties by smaller id, padded with `-1`.
pub fn brute_force_knn(
    base: VectorsRef<'_>,
    queries: VectorsRef<'_>,
    k: usize,
    metric: Metric,
) -> SearchResults {
    let mut out = SearchResults::new(queries.len(), k, metric);
    for (qi, q) in queries.rows().enumerate() {
        let all = sorted_hits(metric, base, q);
        let (d, l) = out.row_mut(qi);
        for (j, &(dist, id)) in all.iter().take(k).enumerate() {
            d[j] = dist as f32;
            l[j] = id;
        }
    }
    out
}

/// The oracle for range search: every id with `f64` distance `< radius` (L2) or
/// similarity `> radius` (inner product).
pub fn brute_force_range(
    base: VectorsRef<'_>,
    queries: VectorsRef<'_>,
    radius: f32,
    metric: Metric,
) -> RangeSearchResults {
    let lists = queries
        .rows()
        .map(|q| {
            base.rows()
                .enumerate()
                .map(|(i, y)| (exact_distance(metric, q, y), i as Label))
                .filter(|&(d, _)| match metric {
                    Metric::L2 => d < radius as f64,
                    Metric::InnerProduct => d > radius as f64,
                })
                .map(|(d, i)| (d as f32, i))
                .collect()
        })
        .collect();
    RangeSearchResults::from_lists(lists, metric)
}

/// Checks approximate-arithmetic k-NN results against the oracle `want`:
/// row by row, the `j`-th distance must equal the oracle's `j`-th within `tol` (relative
/// to the scale of the distances involved), every returned id must be valid and
/// distinct, its true distance must match the reported one within `tol`, and padding
/// must sit exactly where the oracle pads. Different ids at equal distances (ties) pass.
///
/// # Errors
/// A message describing the first difference.
pub fn check_knn(
    got: &SearchResults,
    want: &SearchResults,
    base: VectorsRef<'_>,
    queries: VectorsRef<'_>,
    metric: Metric,
    tol: f64,
) -> Result<(), String> {
    if got.nq() != want.nq() || got.k() != want.k() {
        return Err(format!(
            "shape {}x{} != {}x{}",
            got.nq(),
            got.k(),
            want.nq(),
            want.k()
        ));
    }
    for qi in 0..got.nq() {
        let q = queries.row(qi);
        let scale = 1.0
            + exact_distance(Metric::L2, q, &vec![0.0; q.len()])
            + base
                .rows()
                .map(|y| exact_distance(Metric::L2, y, &vec![0.0; y.len()]))
                .fold(0.0, f64::max);
        let (gd, gl) = got.row(qi);
        let (wd, wl) = want.row(qi);
        let mut seen = std::collections::HashSet::new();
        for j in 0..got.k() {
            if (gl[j] == NO_LABEL) != (wl[j] == NO_LABEL) {
                return Err(format!(
                    "query {qi} rank {j}: padding differs ({} vs {})",
                    gl[j], wl[j]
                ));
            }
            if gl[j] == NO_LABEL {
                continue;
            }
            if gl[j] < 0 || gl[j] as usize >= base.len() || !seen.insert(gl[j]) {
                return Err(format!("query {qi} rank {j}: bad or repeated id {}", gl[j]));
            }
            let true_d = exact_distance(metric, q, base.row(gl[j] as usize));
            if (gd[j] as f64 - wd[j] as f64).abs() > tol * scale {
                return Err(format!(
                    "query {qi} rank {j}: distance {} != oracle {} (ids {} vs {})",
                    gd[j], wd[j], gl[j], wl[j]
                ));
            }
            if (true_d - gd[j] as f64).abs() > tol * scale {
                return Err(format!(
                    "query {qi} rank {j}: id {} reported at {} but is at {true_d}",
                    gl[j], gd[j]
                ));
            }
        }
    }
    Ok(())
}

/// Edits the section `name` of a [`crate::persist`] container in place (`edit` gets its
/// payload; `shrink` bytes are then cut from its recorded length) and recomputes the
/// checksums, so that only the loader's own validation can notice: for tests of what a
/// hostile but well-formed file does.
///
/// # Panics
/// If `buf` is not a container or has no section `name` (a test bug).
pub fn patch_section(buf: &mut [u8], name: &str, shrink: u64, edit: impl FnOnce(&mut [u8])) {
    let u64_at = |b: &[u8], at: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[at..at + 8]);
        u64::from_le_bytes(a)
    };
    let n = buf.len();
    let t_off = u64_at(buf, n - 32) as usize;
    let t_len = u64_at(buf, n - 24) as usize;
    let count = u32::from_le_bytes([buf[t_off], buf[t_off + 1], buf[t_off + 2], buf[t_off + 3]]);
    let mut at = t_off + 4;
    for _ in 0..count {
        let nl = u16::from_le_bytes([buf[at], buf[at + 1]]) as usize;
        let this = String::from_utf8_lossy(&buf[at + 2..at + 2 + nl]).into_owned();
        let e = at + 2 + nl + 1;
        if this == name {
            let (off, len) = (u64_at(buf, e) as usize, u64_at(buf, e + 8));
            edit(&mut buf[off..off + len as usize]);
            let len = len - shrink;
            buf[e + 8..e + 16].copy_from_slice(&len.to_le_bytes());
            let crc = crc32fast::hash(&buf[off..off + len as usize]);
            buf[e + 16..e + 20].copy_from_slice(&crc.to_le_bytes());
            let tcrc = crc32fast::hash(&buf[t_off..t_off + t_len]);
            buf[n - 16..n - 12].copy_from_slice(&tcrc.to_le_bytes());
            return;
        }
        at = e + 20;
    }
    panic!("no section {name}");
}

/// An index's sections ([`crate::Index::save_state`]) as a complete container in memory.
///
/// # Errors
/// The index's save errors.
pub fn state_bytes(index: &dyn crate::Index) -> crate::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut w = crate::persist::StateWriter::new(&mut buf)?;
    index.save_state(&mut w)?;
    w.finish()?;
    Ok(buf)
}

/// Loads a container made by [`state_bytes`] into `fresh` (an index of the same shape),
/// from memory or — with `mapped_in: Some(dir)` — from a file written in `dir` and
/// memory-mapped; every section must be read ([`crate::persist::StateReader::finish`]).
///
/// # Errors
/// The load's errors.
pub fn load_state_bytes<I: crate::Index>(
    mut fresh: I,
    bytes: &[u8],
    mapped_in: Option<&std::path::Path>,
) -> crate::Result<I> {
    use crate::persist::{LoadMode, StateReader, write_atomic};
    let mut r = match mapped_in {
        None => StateReader::from_bytes(bytes.to_vec(), "memory")?,
        Some(dir) => {
            let path = dir.join("index.vqi");
            write_atomic(&path, |w| {
                w.write_all(bytes)
                    .map_err(|e| crate::Error::Serialization(e.to_string()))
            })?;
            StateReader::open(&path, LoadMode::Mmap)?
        }
    };
    fresh.load_state(&mut r)?;
    r.finish()?;
    Ok(fresh)
}
