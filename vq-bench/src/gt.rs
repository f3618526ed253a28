//! `vq gt`: exact ground truth (ids as `.ivecs`, distances as `.fvecs`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;
use vq_core::io::{write_fvecs, write_ivecs};
use vq_core::{Index, IndexFlat, Metric, SearchParams, Vectors};

use crate::dataset::{DataOptions, Dataset};
use crate::progress;

/// Arguments of `vq gt`.
#[derive(Args, Debug)]
pub(crate) struct GtArgs {
    /// The data: a folder, an ann-benchmarks `.hdf5` file, or `synthetic:N,D,NQ[,SEED]`.
    #[arg(long)]
    data: String,
    /// Neighbours per query.
    #[arg(short, long, default_value_t = 100)]
    k: usize,
    /// Metric: `l2` or `ip` (default: the data's own, else `l2`).
    #[arg(long)]
    metric: Option<String>,
    /// Where to write the ids (`.ivecs`); the distances go beside it as `.fvecs`.
    /// Default: in the data folder, the name its base file implies (`groundtruth.ivecs`
    /// beside `base.fvecs`, `sift_groundtruth.ivecs` beside `sift_base.fvecs`), with
    /// `.max<N>` before the extension for `--max-base` and `.ip` for inner product (how
    /// `vq bench` finds it).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Replace existing files.
    #[arg(long)]
    force: bool,
    /// Use only the first N base vectors.
    #[arg(long)]
    max_base: Option<usize>,
    /// Threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

/// Queries per block: one progress step, and bounds the distance tiles' memory.
const BLOCK: usize = 2048;

/// The exact `k` nearest base vectors of every query, in blocks of queries (each block a
/// GEMM-based, parallel flat search); returns ids and distances, row-major.
pub(crate) fn exact_knn(
    base: &Vectors,
    queries: &Vectors,
    k: usize,
    metric: Metric,
    what: &str,
) -> Result<(Vec<i64>, Vec<f32>)> {
    let mut flat = IndexFlat::new(base.dim(), metric)?;
    flat.add(base.as_ref())?;
    let nq = queries.len();
    let bar = progress::bar(nq as u64, what);
    let mut ids = Vec::with_capacity(nq * k);
    let mut dist = Vec::with_capacity(nq * k);
    let mut start = 0;
    while start < nq {
        let end = (start + BLOCK).min(nq);
        let res = flat.search(
            queries.as_ref().slice(start..end),
            k,
            &SearchParams::default(),
        )?;
        ids.extend_from_slice(res.labels());
        dist.extend_from_slice(res.distances());
        bar.inc((end - start) as u64);
        start = end;
    }
    bar.finish_and_clear();
    Ok((ids, dist))
}

pub(crate) fn run(a: &GtArgs) -> Result<()> {
    let pool = crate::bench::pool(a.threads)?;
    let threads = pool.current_num_threads();
    pool.install(|| {
        let opts = DataOptions {
            learn: None,
            max_base: a.max_base,
            // The files this replaces may be broken: they are not read.
            skip_gt: true,
        };
        let ds = Dataset::load_with(&a.data, &opts)?;
        let metric = ds.metric(a.metric.as_deref())?;
        if ds.queries.is_empty() {
            bail!("{}: no queries (NQ = 0)", ds.name);
        }
        let n = ds.base.len();
        if a.k == 0 || a.k > n {
            bail!("-k {}: must be in 1..={n} (the base vectors)", a.k);
        }
        if n > i32::MAX as usize {
            bail!("{n} base vectors: ids do not fit in .ivecs (i32)");
        }
        ds.queries.as_ref().check_finite().context("queries")?;
        let out = match &a.out {
            Some(p) => p.clone(),
            None => ds.gt_path(metric).with_context(|| {
                format!(
                    "--out is needed: `{}` is not a folder to write the ground truth into",
                    a.data
                )
            })?,
        };
        if out.extension().is_none_or(|e| e != "ivecs") {
            bail!("--out {}: must end in .ivecs", out.display());
        }
        let dist_path = out.with_extension("fvecs");
        for p in [&out, &dist_path] {
            if p.exists() && !a.force {
                bail!("{} exists (use --force to replace it)", p.display());
            }
        }
        let t0 = Instant::now();
        let (ids, dist) = exact_knn(&ds.base, &ds.queries, a.k, metric, "ground truth")?;
        let secs = t0.elapsed().as_secs_f64();
        let ids32: Vec<i32> = ids
            .iter()
            .map(|&l| i32::try_from(l).context("an id does not fit in i32"))
            .collect::<Result<_>>()?;
        // Each file is replaced atomically; the distances first, so a failure leaves
        // the ids vq reads as they were.
        let dv = Vectors::new(dist, a.k)?;
        write_fvecs(&dist_path, dv.as_ref())?;
        write_ivecs(&out, &ids32, a.k)?;
        let (nq, d) = (ds.queries.len(), ds.base.dim());
        let row = json!({
            "case": "gt",
            "library": "vq",
            "version": env!("CARGO_PKG_VERSION"),
            "dataset": ds.name,
            "n": n, "d": d, "nq": nq, "k": a.k,
            "metric": metric.name(),
            "threads": threads,
            "seconds": secs,
            "gflops_effective": 2.0 * n as f64 * d as f64 * nq as f64 / secs / 1e9,
            "ids": out.display().to_string(),
            "distances": dist_path.display().to_string(),
        });
        let mut report = progress::Report::new(vec![
            ("dataset", "dataset"),
            ("n", "n"),
            ("nq", "nq"),
            ("k", "k"),
            ("seconds", "seconds"),
            ("ids", "ids"),
        ]);
        report.row(&row);
        Ok(())
    })
}
