//! Exhaustive (brute-force) k-NN and range search over a row-major database.
//!
//! Two engines, chosen per call:
//! - **GEMM tiles** for batches of queries: inner products of a block of queries with a
//!   block of database vectors come from faer's GEMM into a tile held in cache, written
//!   with the queries contiguous (the fastest layout on this hardware, see
//!   `toolchain-probe.md`); L2 uses `‖x‖² + ‖y‖² − 2⟨x, y⟩`. The top-k scan is fused:
//!   each tile is compared against per-query thresholds while it is still in cache, and
//!   only candidates that beat a threshold reach the heaps. The final `k` L2 distances
//!   are recomputed exactly with the SIMD kernel, so reported distances carry no GEMM
//!   cancellation error.
//! - **SIMD kernels** for a few queries: one query against blocks of database rows,
//!   parallel over database chunks (this is the latency path for single queries).
//!
//! Work is split into (query block × database range) tasks run on the caller's rayon
//! pool, so one query is parallel over the database and large batches over queries.

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

use crate::distance::Kernels;
use crate::error::{Error, Result};
use crate::metric::Metric;
use crate::results::{RangeSearchResults, SearchResults};
use crate::selector::IdFilter;
use crate::topk::{TopK, write_entries};
use crate::vectors::{Label, VectorsRef};

/// Batches with fewer queries than this use the per-query kernel engine.
pub const GEMM_MIN_QUERIES: usize = 8;
/// Queries per GEMM tile.
const QUERY_BLOCK: usize = 256;
/// Database vectors per GEMM tile (tile = 256 × 1024 floats = 1 MiB).
const DB_BLOCK: usize = 1024;
/// Database rows per kernel call in the per-query engine.
const KERNEL_BLOCK: usize = 256;
/// Smallest database range worth a task of its own.
const MIN_DB_SPLIT: usize = 8192;

/// Where candidates go: a top-k collector or a range collector.
trait Sink: Send {
    /// Keys above this cannot be kept (`<=` passes the cheap pre-check).
    fn threshold(&self) -> f32;
    fn push(&mut self, key: f32, label: Label);
}

impl Sink for TopK {
    #[inline]
    fn threshold(&self) -> f32 {
        TopK::threshold(self)
    }
    #[inline]
    fn push(&mut self, key: f32, label: Label) {
        TopK::push(self, key, label)
    }
}

/// Keeps every candidate with `key < bound`.
struct RangeSink {
    bound: f32,
    hits: Vec<(f32, Label)>,
}

impl Sink for RangeSink {
    #[inline]
    fn threshold(&self) -> f32 {
        self.bound
    }
    #[inline]
    fn push(&mut self, key: f32, label: Label) {
        if key < self.bound {
            self.hits.push((key, label));
        }
    }
}

/// A database to search exhaustively: row-major vectors, and for L2 their squared norms
/// when the caller keeps them (otherwise they are computed per call when needed).
#[derive(Clone, Copy, Debug)]
pub struct Database<'a> {
    vectors: VectorsRef<'a>,
    norms: Option<&'a [f32]>,
    max_norm_sqr: Option<f64>,
}

impl<'a> Database<'a> {
    /// A database over `vectors`, with optional precomputed squared norms.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] if `norms` does not have one value per vector.
    pub fn new(vectors: VectorsRef<'a>, norms: Option<&'a [f32]>) -> Result<Self> {
        if let Some(n) = norms
            && n.len() != vectors.len()
        {
            return Err(Error::LengthMismatch {
                what: "database norms",
                expected: vectors.len(),
                got: n.len(),
            });
        }
        Ok(Database {
            vectors,
            norms,
            max_norm_sqr: None,
        })
    }

    /// The same database with `bound` as the largest squared norm of its vectors,
    /// summed in `f64` (an upper bound the caller keeps, as [`crate::IndexFlat`] does):
    /// batched inner-product searches bound their GEMM keys' error with it, and
    /// otherwise find it with a pass over the vectors.
    pub fn with_max_norm_sqr(mut self, bound: f64) -> Self {
        self.max_norm_sqr = Some(bound);
        self
    }

    /// The largest squared norm: the caller's bound, else computed from the vectors.
    fn max_norm_sqr(&self) -> f64 {
        self.max_norm_sqr
            .unwrap_or_else(|| max_norm_sqr(self.vectors))
    }
}

/// A row's squared norm summed in `f64`: no overflow or underflow for `f32` values.
fn norm_sqr_f64(r: &[f32]) -> f64 {
    r.iter().map(|&v| f64::from(v) * f64::from(v)).sum()
}

/// The largest squared norm of `x`'s rows (0 for none), in `f64`, in parallel.
pub(crate) fn max_norm_sqr(x: VectorsRef<'_>) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    x.as_slice()
        .par_chunks(x.dim())
        .with_min_len(4096)
        .map(norm_sqr_f64)
        .reduce(|| 0.0, f64::max)
}

/// Squared norms of the queries in `f64` (for the inner product's error bounds).
fn query_norms_f64(queries: VectorsRef<'_>) -> Vec<f64> {
    queries.rows().map(norm_sqr_f64).collect()
}

/// For L2 batches through GEMM: the queries' squared norms, the database's (kept by the
/// caller or computed into `computed`) and their largest; `None` when ‖q‖² + ‖y‖² could
/// leave the f32 range (the keys would be inf − inf = NaN and every candidate lost; the
/// kernels subtract first and are used instead).
fn l2_gemm_norms<'a>(
    db: &Database<'a>,
    queries: VectorsRef<'_>,
    computed: &'a mut Vec<f32>,
) -> Option<(Vec<f32>, &'a [f32], f64)> {
    let dbn: &'a [f32] = match db.norms {
        Some(nm) => nm,
        None => {
            *computed = crate::distance::norms_sqr(db.vectors);
            computed
        }
    };
    let qn = crate::distance::norms_sqr(queries);
    let top = |v: &[f32]| v.iter().copied().fold(0f32, f32::max);
    let bn_max = top(dbn);
    let sum = top(&qn) + bn_max;
    (sum.is_finite() && sum < f32::MAX / 4.0).then_some((qn, dbn, f64::from(bn_max)))
}

/// How far a GEMM key may lie from the kernels' distance for the same pair (both f32
/// sums of `dim` terms), for a query of squared norm `qn` against vectors of squared
/// norm at most `bn_max`, near a key of size `near`. L2: ‖q‖² + ‖y‖² − 2⟨q,y⟩ is off by
/// at most (2·dim + 4)·ε·(‖q‖² + max ‖y‖²), the kernels' Σ(q − y)² by (dim + 2)·ε
/// times the distance; inner product: each side by dim·ε·‖q‖·max ‖y‖; both: rounding
/// below the normal range ([`underflow_error`]).
fn key_margin(metric: Metric, dim: f64, qn: f64, bn_max: f64, near: f32) -> f64 {
    let eps = f64::from(f32::EPSILON);
    let m = match metric {
        Metric::L2 => {
            (2.0 * dim + 4.0) * eps * (qn + bn_max) + (dim + 2.0) * eps * f64::from(near).abs()
        }
        Metric::InnerProduct => (2.0 * dim + 4.0) * eps * (qn * bn_max).sqrt(),
    };
    m + underflow_error(dim)
}

/// Whether an inner product of vectors with these squared norms may leave the `f32`
/// range (GEMM and the kernels may then disagree on `inf` and NaN: such a query is
/// searched with the kernels alone).
fn ip_may_overflow(qn: f64, bn_max: f64) -> bool {
    (qn * bn_max).sqrt() >= f64::from(f32::MAX) / 4.0
}

/// Plans (query range, database range) tasks for `nq` queries over `n` vectors.
fn plan(nq: usize, n: usize, query_block: usize) -> Vec<(usize, usize, usize, usize)> {
    let threads = rayon::current_num_threads().max(1);
    let nqb = nq.div_ceil(query_block).max(1);
    let want = 2 * threads;
    let splits = if nqb >= want {
        1
    } else {
        want.div_ceil(nqb).min(n.div_ceil(MIN_DB_SPLIT)).max(1)
    };
    let per = n.div_ceil(splits).div_ceil(DB_BLOCK) * DB_BLOCK;
    let mut tasks = Vec::with_capacity(nqb * splits);
    for qb in 0..nqb {
        let (q0, q1) = (qb * query_block, ((qb + 1) * query_block).min(nq));
        let mut s = 0;
        while s < n {
            let e = (s + per.max(1)).min(n);
            tasks.push((q0, q1, s, e));
            s = e;
        }
    }
    tasks
}

/// One computed GEMM tile and what its keys need.
#[derive(Clone, Copy)]
struct Tile<'a> {
    /// `qb × nb` values, queries contiguous.
    values: &'a [f32],
    qb: usize,
    nb: usize,
    /// Squared norms of the tile's queries (L2 only).
    qnorms: &'a [f32],
    /// Squared norms of the tile's database vectors (L2 only).
    bnorms: &'a [f32],
    /// Id of the tile's first database vector.
    base: usize,
}

/// Fused scan of one GEMM tile, column `j` = database vector `base + j`; `tile` holds
/// `alpha · ⟨q_i, y_j⟩` at `i + j·qb` with `alpha = -2` (L2) or `-1` (inner product),
/// so the key is `(‖q_i‖² + ‖y_j‖²) + tile` for L2 and `tile` itself for inner product.
/// The SIMD pre-check finds the queries whose threshold a column beats; only those
/// reach the heaps.
#[inline]
fn scan_tile<S: Sink, const L2: bool>(
    kernels: &Kernels,
    t: Tile<'_>,
    sinks: &mut [S],
    thresh: &mut [f32],
    selector: Option<&dyn IdFilter>,
    hits: &mut Vec<u32>,
) {
    let Tile {
        values: tile,
        qb,
        nb,
        qnorms,
        bnorms,
        base,
    } = t;
    for j in 0..nb {
        let col = &tile[j * qb..(j + 1) * qb];
        let bn = if L2 { bnorms[j] } else { 0.0 };
        hits.clear();
        kernels.le_hits(col, if L2 { qnorms } else { &[] }, bn, thresh, hits);
        if hits.is_empty() {
            continue;
        }
        let label = (base + j) as Label;
        if selector.is_some_and(|s| !s.is_member(label)) {
            continue;
        }
        for &i in hits.iter() {
            let i = i as usize;
            let mut key = if L2 {
                (qnorms[i] + bn) + col[i]
            } else {
                col[i]
            };
            if L2 && key < 0.0 {
                // Rounding can make ‖x‖² + ‖y‖² − 2⟨x,y⟩ slightly negative.
                key = 0.0;
            }
            sinks[i].push(key, label);
            thresh[i] = sinks[i].threshold();
        }
    }
}

/// GEMM engine for queries `q0..q1` against database rows `s..e`.
#[allow(clippy::too_many_arguments)]
fn gemm_task<S: Sink>(
    kernels: &Kernels,
    queries: VectorsRef<'_>,
    qnorms: &[f32],
    db: VectorsRef<'_>,
    dbnorms: &[f32],
    metric: Metric,
    (q0, q1, s, e): (usize, usize, usize, usize),
    sinks: &mut [S],
    selector: Option<&dyn IdFilter>,
) {
    let d = db.dim();
    let qb = q1 - q0;
    let qmat = MatRef::from_row_major_slice(queries.slice(q0..q1).as_slice(), qb, d);
    let qn = if metric == Metric::L2 {
        &qnorms[q0..q1]
    } else {
        &[][..]
    };
    let mut tile = vec![0.0f32; qb * DB_BLOCK];
    let mut thresh: Vec<f32> = sinks.iter().map(Sink::threshold).collect();
    let alpha = if metric == Metric::L2 { -2.0f32 } else { -1.0 };
    let mut hits = Vec::with_capacity(qb);
    let mut b0 = s;
    while b0 < e {
        let nb = DB_BLOCK.min(e - b0);
        let ymat = MatRef::from_row_major_slice(db.slice(b0..b0 + nb).as_slice(), nb, d);
        let dst = MatMut::from_column_major_slice_mut(&mut tile[..qb * nb], qb, nb);
        matmul(dst, Accum::Replace, qmat, ymat.transpose(), alpha, Par::Seq);
        let bn: &[f32] = if metric == Metric::L2 {
            &dbnorms[b0..b0 + nb]
        } else {
            &[]
        };
        let args = Tile {
            values: &tile[..qb * nb],
            qb,
            nb,
            qnorms: qn,
            bnorms: bn,
            base: b0,
        };
        match metric {
            Metric::L2 => {
                scan_tile::<S, true>(kernels, args, sinks, &mut thresh, selector, &mut hits)
            }
            Metric::InnerProduct => {
                scan_tile::<S, false>(kernels, args, sinks, &mut thresh, selector, &mut hits)
            }
        }
        b0 += nb;
    }
}

/// Kernel engine: each query of `q0..q1` against database rows `s..e`.
#[allow(clippy::too_many_arguments)]
fn kernel_task<S: Sink>(
    kernels: &Kernels,
    queries: VectorsRef<'_>,
    db: VectorsRef<'_>,
    metric: Metric,
    (q0, q1, s, e): (usize, usize, usize, usize),
    sinks: &mut [S],
    selector: Option<&dyn IdFilter>,
) {
    let d = db.dim();
    let mut buf = [0.0f32; KERNEL_BLOCK];
    for (qi, sink) in (q0..q1).zip(sinks.iter_mut()) {
        let q = queries.row(qi);
        let mut thresh = sink.threshold();
        let mut b0 = s;
        while b0 < e {
            let nb = KERNEL_BLOCK.min(e - b0);
            let out = &mut buf[..nb];
            kernels.distance_ny(metric, q, &db.as_slice()[b0 * d..(b0 + nb) * d], out);
            for (j, &v) in out.iter().enumerate() {
                let key = metric.to_key(v);
                if key <= thresh {
                    let label = (b0 + j) as Label;
                    if selector.is_some_and(|s| !s.is_member(label)) {
                        continue;
                    }
                    sink.push(key, label);
                    thresh = sink.threshold();
                }
            }
            b0 += nb;
        }
    }
}

fn validate(db: &Database<'_>, queries: VectorsRef<'_>) -> Result<()> {
    queries.check_dim(db.vectors.dim())?;
    queries.check_finite()
}

/// Exact k-NN of every query in `db`; results are padded when fewer than `k` vectors
/// (or fewer that pass `selector`) exist. Ties are broken by the smaller id.
///
/// # Errors
/// Dimension mismatch, non-finite queries, `k == 0`, `nq × k` results that cannot be
/// allocated.
///
/// ```
/// use vq_core::knn::{knn, Database};
/// use vq_core::{Metric, VectorsRef};
/// let base = [0.0, 0.0, 3.0, 4.0, 1.0, 1.0];
/// let db = Database::new(VectorsRef::new(&base, 2)?, None)?;
/// let res = knn(&db, VectorsRef::new(&[0.0, 0.0], 2)?, 2, Metric::L2, None)?;
/// assert_eq!(res.row(0), (&[0.0, 2.0][..], &[0, 2][..]));
/// # Ok::<(), vq_core::Error>(())
/// ```
pub fn knn(
    db: &Database<'_>,
    queries: VectorsRef<'_>,
    k: usize,
    metric: Metric,
    selector: Option<&dyn IdFilter>,
) -> Result<SearchResults> {
    let mut out = SearchResults::new(0, 0, metric);
    knn_into(db, queries, k, metric, selector, &mut out)?;
    Ok(out)
}

/// [`knn`] writing into `out` (resized to `nq × k`).
///
/// # Errors
/// As [`knn`].
pub fn knn_into(
    db: &Database<'_>,
    queries: VectorsRef<'_>,
    k: usize,
    metric: Metric,
    selector: Option<&dyn IdFilter>,
    out: &mut SearchResults,
) -> Result<()> {
    validate(db, queries)?;
    if k == 0 {
        return Err(Error::invalid_param("k", "must be at least 1"));
    }
    let nq = queries.len();
    let n = db.vectors.len();
    crate::check_result_size(nq, k)?;
    if k > n {
        // The rows are padded past the vectors: refuse what cannot be had rather than
        // abort the process.
        crate::mem::check_alloc::<[u8; 12]>(nq.saturating_mul(k), "k")?;
    }
    out.reset(nq, k, metric);
    if nq == 0 || n == 0 {
        return Ok(());
    }
    let kernels = Kernels::get();
    let mut use_gemm = nq >= GEMM_MIN_QUERIES;
    let mut computed_norms = Vec::new();
    // Squared norms for the GEMM keys (L2) and their error bound: the queries' (in f64
    // for inner products, whose bound alone needs them) and the database's largest.
    let mut qnorms64: Vec<f64> = Vec::new();
    let (qnorms, dbnorms, bn_max): (Vec<f32>, &[f32], f64) = if !use_gemm {
        (Vec::new(), &[], 0.0)
    } else if metric == Metric::L2 {
        match l2_gemm_norms(db, queries, &mut computed_norms) {
            Some(norms) => norms,
            None => {
                use_gemm = false;
                (Vec::new(), &[], 0.0)
            }
        }
    } else {
        qnorms64 = query_norms_f64(queries);
        (Vec::new(), &[], db.max_norm_sqr())
    };
    let block = if use_gemm { QUERY_BLOCK } else { 1 };
    // GEMM keys select with an error that grows with the norms (L2's expansion more so):
    // the search keeps extra candidates, all rescored exactly below, and a query whose
    // margin does not cover the error is searched again with the kernels.
    let guarded = use_gemm;
    let kk = if guarded { (k + k.max(8)).min(n) } else { k };
    let tasks = plan(nq, n, block);
    let partial: Vec<(usize, Vec<TopK>)> = tasks
        .into_par_iter()
        .map(|t| {
            let mut sinks: Vec<TopK> = (t.0..t.1).map(|_| TopK::new(kk.max(k))).collect();
            if use_gemm {
                gemm_task(
                    kernels, queries, &qnorms, db.vectors, dbnorms, metric, t, &mut sinks, selector,
                );
            } else {
                kernel_task(
                    kernels, queries, db.vectors, metric, t, &mut sinks, selector,
                );
            }
            (t.0, sinks)
        })
        .collect();
    // Merge database splits per query (tasks of one query block are contiguous).
    let mut merged: Vec<Option<TopK>> = (0..nq).map(|_| None).collect();
    for (q0, sinks) in partial {
        for (i, s) in sinks.into_iter().enumerate() {
            match &mut merged[q0 + i] {
                Some(m) => m.merge(&s),
                slot @ None => *slot = Some(s),
            }
        }
    }
    let (dist, labels) = out.parts_mut();
    let recompute = use_gemm;
    let dim = db.vectors.dim() as f64;
    let qn = |qi: usize| match metric {
        Metric::L2 => f64::from(qnorms[qi]),
        Metric::InnerProduct => qnorms64[qi],
    };
    // Inner products that may overflow: GEMM and the kernels can disagree on inf and NaN.
    let unsafe_scale =
        |qi: usize| metric == Metric::InnerProduct && ip_may_overflow(qnorms64[qi], bn_max);
    dist.par_chunks_mut(k)
        .zip(labels.par_chunks_mut(k))
        .zip(merged.par_iter())
        .enumerate()
        .for_each(|(qi, ((d, l), top))| {
            let Some(top) = top else { return };
            let mut entries = top.to_sorted_vec();
            if recompute {
                // GEMM-derived L2 keys carry cancellation error, and GEMM sums products
                // in another order than the kernels: report the kernels' distances for
                // the kept ids (what a search of fewer queries gives) and restore the
                // (distance, id) order.
                let worst_kept = entries.last().map(|e| e.0);
                let q = queries.row(qi);
                for e in &mut entries {
                    let row = db.vectors.row(e.1 as usize);
                    e.0 = metric.to_key(kernels.distance(metric, q, row));
                }
                // A NaN distance (an overflowing inner product) is no result, as for a
                // single query: such a row is searched again by the kernels.
                let nan = entries.iter().any(|e| e.0.is_nan());
                entries.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                // Every vector left out has a GEMM key of at least the worst kept one,
                // so an exact distance of at least that minus the error: if that could
                // reach the k-th exact distance, the query is searched again exactly.
                let margin_too_small = entries.len() == kk
                    && kk < n
                    && match (worst_kept, entries.get(k - 1)) {
                        (Some(g), Some(kth)) => {
                            // A NaN bound searches again too (no ordering: not `Greater`).
                            let e = key_margin(metric, dim, qn(qi), bn_max, kth.0);
                            (f64::from(g) - e).partial_cmp(&f64::from(kth.0))
                                != Some(std::cmp::Ordering::Greater)
                        }
                        _ => false,
                    };
                if guarded && (nan || unsafe_scale(qi) || margin_too_small) {
                    let sink = rescan(kernels, queries, db, metric, qi, TopK::new(k), selector);
                    entries = sink.to_sorted_vec();
                }
                entries.truncate(k);
            }
            write_entries(metric, &entries, d, l);
        });
    Ok(())
}

/// Every database vector within `radius` of each query (L2: `< radius`; inner product:
/// `> radius`), sorted best first. Distances come from the SIMD kernels, so the result
/// equals filtering exact kernel distances.
///
/// # Errors
/// Dimension mismatch, non-finite queries, a NaN radius.
pub fn range_search(
    db: &Database<'_>,
    queries: VectorsRef<'_>,
    radius: f32,
    metric: Metric,
    selector: Option<&dyn IdFilter>,
) -> Result<RangeSearchResults> {
    validate(db, queries)?;
    if radius.is_nan() {
        return Err(Error::invalid_param("radius", "must not be NaN"));
    }
    let nq = queries.len();
    let n = db.vectors.len();
    let kernels = Kernels::get();
    let bound = metric.to_key(radius);
    if nq == 0 || n == 0 {
        return Ok(RangeSearchResults::from_lists(vec![Vec::new(); nq], metric));
    }
    // Batches go through GEMM tiles (as `knn`): each query keeps the vectors whose GEMM
    // key is within its bound widened by the keys' error, and those are scored again
    // with the kernels, so the hits are those of the kernel path.
    let mut computed_norms = Vec::new();
    let gemm: Option<(Vec<f32>, &[f32], f64)> = if nq < GEMM_MIN_QUERIES {
        None
    } else if metric == Metric::L2 {
        l2_gemm_norms(db, queries, &mut computed_norms)
    } else {
        Some((Vec::new(), &[][..], db.max_norm_sqr()))
    };
    let Some((qnorms, dbnorms, bn_max)) = gemm else {
        let partial = range_tasks(
            plan(nq, n, 1),
            |_| bound,
            |t, sinks| {
                kernel_task(kernels, queries, db.vectors, metric, t, sinks, selector);
            },
        );
        let mut lists: Vec<Vec<(f32, Label)>> = vec![Vec::new(); nq];
        for (q0, sinks) in partial {
            for (i, s) in sinks.into_iter().enumerate() {
                lists[q0 + i].extend(s.hits.into_iter().map(|(key, l)| (metric.from_key(key), l)));
            }
        }
        return Ok(RangeSearchResults::from_lists(lists, metric));
    };
    let dim = db.vectors.dim() as f64;
    let qnorms64 = match metric {
        Metric::L2 => qnorms.iter().map(|&v| f64::from(v)).collect(),
        Metric::InnerProduct => query_norms_f64(queries),
    };
    let widened = |qi: usize| -> f32 {
        let margin = key_margin(metric, dim, qnorms64[qi], bn_max, bound);
        let b = f64::from(bound) + margin;
        let w = b as f32;
        if f64::from(w) < b { w.next_up() } else { w }
    };
    let partial = range_tasks(plan(nq, n, QUERY_BLOCK), widened, |t, sinks| {
        gemm_task(
            kernels, queries, &qnorms, db.vectors, dbnorms, metric, t, sinks, selector,
        );
    });
    let mut lists: Vec<Vec<(f32, Label)>> = vec![Vec::new(); nq];
    for (q0, sinks) in partial {
        for (i, s) in sinks.into_iter().enumerate() {
            // A query searched by one task keeps that task's hits as they are.
            if lists[q0 + i].is_empty() {
                lists[q0 + i] = s.hits;
            } else {
                lists[q0 + i].extend(s.hits);
            }
        }
    }
    lists.par_iter_mut().enumerate().for_each(|(qi, hits)| {
        let q = queries.row(qi);
        // The hits' rows lie scattered over the database: each is loaded a few hits
        // before it is scored.
        const AHEAD: usize = 4;
        for i in 0..hits.len() {
            if let Some(&(_, next)) = hits.get(i + AHEAD) {
                crate::distance::prefetch(db.vectors.row(next as usize), usize::MAX);
            }
            let row = db.vectors.row(hits[i].1 as usize);
            hits[i].0 = metric.to_key(kernels.distance(metric, q, row));
        }
        hits.retain_mut(|(v, _)| {
            let inside = *v < bound;
            *v = metric.from_key(*v);
            inside
        });
    });
    // Queries whose inner products may overflow (GEMM and the kernels may disagree on
    // inf and NaN) are searched again with the kernels alone.
    if metric == Metric::InnerProduct {
        lists.par_iter_mut().enumerate().for_each(|(qi, hits)| {
            if ip_may_overflow(qnorms64[qi], bn_max) {
                let sink = RangeSink {
                    bound,
                    hits: Vec::new(),
                };
                let s = rescan(kernels, queries, db, metric, qi, sink, selector);
                *hits = s
                    .hits
                    .into_iter()
                    .map(|(key, l)| (metric.from_key(key), l))
                    .collect();
            }
        });
    }
    Ok(RangeSearchResults::from_lists(lists, metric))
}

/// Query `qi` searched again over the whole database with the kernels alone (a batch's
/// query whose GEMM keys could not be trusted), into `sink`.
fn rescan<S: Sink>(
    kernels: &Kernels,
    queries: VectorsRef<'_>,
    db: &Database<'_>,
    metric: Metric,
    qi: usize,
    sink: S,
    selector: Option<&dyn IdFilter>,
) -> S {
    let mut sinks = [sink];
    let n = db.vectors.len();
    kernel_task(
        kernels,
        queries,
        db.vectors,
        metric,
        (qi, qi + 1, 0, n),
        &mut sinks,
        selector,
    );
    let [s] = sinks;
    s
}

/// Rounding that the relative bounds miss: products and sums below the normal range
/// are rounded to a multiple of the smallest subnormal (an absolute error of up to half
/// of it per operation, about `2·dim` operations per key on each side).
fn underflow_error(dim: f64) -> f64 {
    (4.0 * dim + 8.0) * f64::from(f32::from_bits(1))
}

/// Runs `task` over every planned (query range, database range), each with range sinks
/// bounded by `bound(query)`; returns each task's first query and its sinks.
fn range_tasks(
    tasks: Vec<(usize, usize, usize, usize)>,
    bound: impl Fn(usize) -> f32 + Sync,
    task: impl Fn((usize, usize, usize, usize), &mut [RangeSink]) + Sync,
) -> Vec<(usize, Vec<RangeSink>)> {
    tasks
        .into_par_iter()
        .map(|t| {
            let mut sinks: Vec<RangeSink> = (t.0..t.1)
                .map(|qi| RangeSink {
                    bound: bound(qi),
                    hits: Vec::new(),
                })
                .collect();
            task(t, &mut sinks);
            (t.0, sinks)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_covers_everything_once() {
        for (nq, n) in [(1, 100_000), (3, 10), (1000, 50_000), (7, 0), (300, 9000)] {
            let tasks = plan(
                nq,
                n,
                if nq >= GEMM_MIN_QUERIES {
                    QUERY_BLOCK
                } else {
                    1
                },
            );
            let mut cover = vec![0usize; nq];
            for &(q0, q1, s, e) in &tasks {
                for c in &mut cover[q0..q1] {
                    *c += e - s;
                }
            }
            assert!(cover.iter().all(|&c| c == n), "nq={nq} n={n}");
        }
    }
}
