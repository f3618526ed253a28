//! `vq bench` and `vq generate`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;
use vq_core::distance::Kernels;
use vq_core::eval::{GroundTruth, RangeMatch, intersection_recall, recall_at_1};
use vq_core::io::{Matrix, write_bin, write_fbin, write_fvecs, write_ivecs};
use vq_core::knn::Database;
use vq_core::synthetic::parse_spec;
use vq_core::{Index, Label, Metric, RangeSearchResults, SearchParams, SearchResults, VectorsRef};
use vq_factory::{FactoryIndex, FactorySpec};

use crate::dataset::{DataArgs, Dataset};
use crate::formats::{write_ann_hdf5, write_npy};
use crate::progress::{self, Report};

/// Arguments of `vq bench`.
#[derive(Args, Debug)]
pub(crate) struct BenchArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Factory string, e.g. `Flat` or `IVF1024,PQ32`; repeat to compare several indexes
    /// on the same data in one run (each built, searched and dropped in turn).
    #[arg(long, required = true)]
    index: Vec<String>,
    /// Neighbours per query.
    #[arg(short, long, default_value_t = 10)]
    k: usize,
    /// Range search instead of k-NN: every vector within this radius (L2: squared
    /// distance below it; inner product: similarity above it). Repeat for several radii
    /// (one line per radius and `--params`); lines report hits per query, and range
    /// recall and precision against exact range search over the base (brute force,
    /// once per radius).
    #[arg(long, allow_hyphen_values = true)]
    radius: Vec<f32>,
    /// Threads (a rayon pool of this size runs everything); default: all cores.
    #[arg(long)]
    threads: Option<usize>,
    /// Search with these thread counts (comma list, e.g. `1,2`), each in its own pool,
    /// after one build with `--threads`; one JSON line per count and `--params`.
    #[arg(long, value_delimiter = ',')]
    search_threads: Vec<usize>,
    /// Build-time parameters applied before training and adding (`efConstruction=200`);
    /// with several `--index`, each index takes those it has.
    #[arg(long, default_value = "")]
    build_params: String,
    /// Search parameters, Faiss syntax (`nprobe=16,efSearch=64`); one pass (and one
    /// line) per occurrence, on every `--index` that has all the parameters named.
    #[arg(long)]
    params: Vec<String>,
    /// Timed repetitions of each search pass; the median time is reported (`search_s`),
    /// with the fastest (`search_s_min`) and all of them (`search_s_all`).
    #[arg(long, alias = "repeats", default_value_t = 3)]
    repeat: usize,
    /// Untimed passes before the timed ones (caches, lazily built tables).
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Send queries one at a time (latency) instead of as one batch.
    #[arg(long)]
    one_at_a_time: bool,
    /// Use only the first NQ queries (and their ground truth).
    #[arg(long)]
    nq: Option<usize>,
    /// Write computed ground truth next to the data (folders only).
    #[arg(long)]
    cache_gt: bool,
    /// The `case` field of the JSON lines (default: the factory string, lower case).
    #[arg(long)]
    case: Option<String>,
    /// Build and search on GPU N (default 0): `Flat`, `IVF<n>,Flat` and
    /// `IVF<n>,PQ<m>` run on the GPU (coarse centroids trained by GPU k-means); the
    /// JSON lines gain `"gpu"` (the device's name).
    #[arg(long, num_args = 0..=1, default_missing_value = "0", value_name = "N")]
    gpu: Option<usize>,
}

/// Arguments of `vq generate`.
#[derive(Args, Debug)]
pub(crate) struct GenerateArgs {
    /// `synthetic:N,D,NQ[,SEED]`.
    #[arg(long)]
    data: String,
    /// Output folder (created; one that already holds a dataset's files is refused
    /// unless `--force`).
    #[arg(long)]
    out: PathBuf,
    /// Replace the dataset files (`base`, `query`, `learn`, `groundtruth`, `.hdf5`)
    /// already in the output folder; other files are left alone.
    #[arg(long)]
    force: bool,
    /// Training vectors to write (`learn.fvecs`); 0 for none.
    #[arg(long, default_value_t = 0)]
    learn: usize,
    /// Neighbours per query in the ground truth (exact; at most N).
    #[arg(long, default_value_t = 100)]
    gt_k: usize,
    /// Metric of the ground truth: `l2` (`groundtruth.ivecs`) or `ip`
    /// (`groundtruth.ip.ivecs`, which makes inner product the folder's metric).
    #[arg(long, default_value = "l2")]
    metric: String,
    /// File format: `fvecs` (texmex; ids as `.ivecs`), `fbin` (BigANN; `.ibin`), `npy`
    /// (NumPy `float32`, ids `int32`), or `hdf5` (one ann-benchmarks file,
    /// `OUT/<name>.hdf5`, with `train`, `test`, `neighbors`, `distances`).
    #[arg(long, default_value = "fvecs")]
    format: String,
}

pub(crate) fn peak_rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

pub(crate) fn pool(threads: Option<usize>) -> Result<rayon::ThreadPool> {
    let mut b = rayon::ThreadPoolBuilder::new();
    if let Some(t) = threads {
        if t == 0 {
            bail!("--threads must be at least 1");
        }
        b = b.num_threads(t);
    }
    b.build().context("cannot start the thread pool")
}

pub(crate) fn parse_build_params(s: &str) -> Result<Vec<(String, String)>> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|item| {
            item.split_once('=')
                .map(|(a, b)| (a.trim().to_string(), b.trim().to_string()))
                .with_context(|| format!("build parameter `{item}`: expected `name=value`"))
        })
        .collect()
}

/// One timed search pass: all queries as one batch, or one at a time.
pub(crate) fn search_pass(
    index: &dyn Index,
    queries: VectorsRef<'_>,
    k: usize,
    params: &SearchParams<'_>,
    one_at_a_time: bool,
) -> Result<(f64, SearchResults)> {
    let t0 = Instant::now();
    if !one_at_a_time {
        let res = index.search(queries, k, params)?;
        return Ok((t0.elapsed().as_secs_f64(), res));
    }
    let nq = queries.len();
    let mut dist = Vec::with_capacity(nq * k);
    let mut labels: Vec<Label> = Vec::with_capacity(nq * k);
    let mut one = SearchResults::new(0, 0, index.metric());
    for i in 0..nq {
        index.search_into(queries.slice(i..i + 1), k, params, &mut one)?;
        dist.extend_from_slice(one.distances());
        labels.extend_from_slice(one.labels());
    }
    let s = t0.elapsed().as_secs_f64();
    Ok((s, SearchResults::from_parts(nq, k, dist, labels)?))
}

/// One timed range-search pass: the whole batch, or one query at a time.
pub(crate) fn range_pass(
    index: &dyn Index,
    queries: VectorsRef<'_>,
    radius: f32,
    params: &SearchParams<'_>,
    one_at_a_time: bool,
) -> Result<(f64, RangeSearchResults)> {
    let t0 = Instant::now();
    if !one_at_a_time {
        let res = index.range_search(queries, radius, params)?;
        return Ok((t0.elapsed().as_secs_f64(), res));
    }
    let mut lists: Vec<Vec<(f32, Label)>> = Vec::with_capacity(queries.len());
    for i in 0..queries.len() {
        let r = index.range_search(queries.slice(i..i + 1), radius, params)?;
        let (d, l) = r.row(0);
        lists.push(d.iter().copied().zip(l.iter().copied()).collect());
    }
    let s = t0.elapsed().as_secs_f64();
    Ok((s, RangeSearchResults::from_lists(lists, index.metric())))
}

/// The exact hits of every query within `radius` (brute force over the base, the SIMD
/// kernels' distances), for range recall and precision.
pub(crate) fn range_truth(ds: &Dataset, radius: f32, metric: Metric) -> Result<RangeSearchResults> {
    if radius.is_nan() {
        bail!("--radius must not be NaN");
    }
    let db = Database::new(ds.base.as_ref(), None)?;
    Ok(vq_core::knn::range_search(
        &db,
        ds.queries.as_ref(),
        radius,
        metric,
        None,
    )?)
}

/// A radius as JSON: the number as written (an `f32`'s shortest form, not its `f64`
/// widening), or `"inf"` / `"-inf"`, which JSON numbers cannot hold.
pub(crate) fn radius_json(radius: f32) -> serde_json::Value {
    if radius.is_finite() {
        // The shortest decimal that reads back as this f32, as an f64 for JSON.
        json!(
            radius
                .to_string()
                .parse::<f64>()
                .unwrap_or(f64::from(radius))
        )
    } else {
        json!(radius.to_string())
    }
}

/// The JSON fields of a range-search line: the radius, hits, range recall and precision.
pub(crate) fn range_fields(
    row: &mut serde_json::Value,
    radius: f32,
    res: &RangeSearchResults,
    truth: Option<&RangeSearchResults>,
) -> Result<()> {
    let nq = res.nq();
    let hits = res.labels().len();
    row["radius"] = radius_json(radius);
    row["hits"] = json!(hits);
    row["hits_per_query"] = json!(hits as f64 / nq.max(1) as f64);
    row["queries_without_hits"] = json!((0..nq).filter(|&i| res.row(i).1.is_empty()).count());
    if let Some(t) = truth {
        let m = RangeMatch::new(res, t)?;
        row["true_hits"] = json!(m.truth);
        row["range_recall"] = json!(m.recall());
        row["range_precision"] = json!(m.precision());
    }
    Ok(())
}

/// Builds the index of `spec` and applies the build-time parameters.
pub(crate) fn build_with_params(
    spec: &FactorySpec,
    d: usize,
    metric: Metric,
    build_params: &[(String, String)],
    gpu: Option<&vq_gpu::GpuDevice>,
) -> Result<FactoryIndex> {
    let mut index = match gpu {
        Some(dev) => vq_factory::build_gpu(spec, d, metric, dev)
            .with_context(|| format!("--gpu: building {spec}"))?,
        None => spec.build(d, metric)?,
    };
    for (name, value) in build_params {
        index
            .set_build_param(name, value)
            .with_context(|| format!("--build-params `{name}={value}`"))?;
    }
    Ok(index)
}

/// Vectors added per step of the progress bar.
const ADD_CHUNK: usize = 1 << 16;

/// Whether the index is an HNSW graph (possibly behind an id map, a transform or a
/// refinement). A graph is added in one call: each call re-grows its storage and lists,
/// codes every stored vector for the build and checks reachability, which in steps of
/// [`ADD_CHUNK`] made a 1M-vector build about a quarter slower.
fn adds_in_one_call(spec: &FactorySpec) -> bool {
    match spec {
        FactorySpec::Hnsw { .. } => true,
        FactorySpec::IdMap { inner, .. } | FactorySpec::PreTransform { inner, .. } => {
            adds_in_one_call(inner)
        }
        FactorySpec::Refine { base, .. } => adds_in_one_call(base),
        _ => false,
    }
}

/// Trains on the learn set (the base when there is none), then adds the base with ids
/// `0..n` (explicitly when the index maps ids), in chunks that drive a progress bar (in
/// one call, under a spinner, for a graph); returns the two times in seconds.
pub(crate) fn train_and_add(index: &mut FactoryIndex, ds: &Dataset) -> Result<(f64, f64)> {
    let train_set = ds.learn.as_ref().unwrap_or(&ds.base);
    let t0 = Instant::now();
    {
        let _spin = if index.is_trained() {
            None
        } else {
            Some(progress::spinner(&format!(
                "training {} on {} vectors",
                index.describe(),
                train_set.len()
            )))
        };
        index.train(train_set.as_ref()).context("training")?;
    }
    let train_s = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let n = ds.base.len();
    let with_ids = matches!(index.spec(), FactorySpec::IdMap { .. });
    let one_call = adds_in_one_call(index.spec());
    let chunk = if one_call { n.max(1) } else { ADD_CHUNK };
    let bar = if one_call {
        progress::spinner(&format!("adding {n} vectors to {}", index.describe()))
    } else {
        progress::bar(n as u64, "adding")
    };
    let mut start = 0;
    while start < n {
        let end = (start + chunk).min(n);
        let part = ds.base.as_ref().slice(start..end);
        if with_ids {
            let ids: Vec<Label> = (start as Label..end as Label).collect();
            index.add_with_ids(part, &ids)
        } else {
            index.add(part)
        }
        .context("adding the base vectors")?;
        bar.inc((end - start) as u64);
        start = end;
    }
    bar.finish_and_clear();
    Ok((train_s, t0.elapsed().as_secs_f64()))
}

pub(crate) fn run_bench(a: &BenchArgs) -> Result<()> {
    let specs: Vec<FactorySpec> = a
        .index
        .iter()
        .map(|s| FactorySpec::parse(s).map_err(|e| anyhow::anyhow!("--index: {e}")))
        .collect::<Result<_>>()?;
    if a.k == 0 && a.radius.is_empty() {
        bail!("-k must be at least 1");
    }
    if a.repeat == 0 {
        bail!("--repeat must be at least 1");
    }
    let build_params = parse_build_params(&a.build_params)?;
    let gpu = match a.gpu {
        Some(n) => Some(vq_gpu::GpuDevice::new(n).context("--gpu")?),
        None => None,
    };
    let search_params: Vec<SearchParams<'static>> = a
        .params
        .iter()
        .map(|p| SearchParams::parse(p).with_context(|| format!("--params `{p}`")))
        .collect::<Result<_>>()?;
    let pool = pool(a.threads)?;
    let build_threads = pool.current_num_threads();
    let mut search_pools = Vec::with_capacity(a.search_threads.len());
    for &t in &a.search_threads {
        if t == 0 {
            bail!("--search-threads: each count must be at least 1");
        }
        search_pools.push(self::pool(Some(t))?);
    }
    let (mut ds, metric) = pool.install(|| -> Result<(Dataset, Metric)> {
        let (mut ds, metric) = a.data.load()?;
        if ds.queries.is_empty() {
            bail!("{}: no queries to search (NQ = 0)", ds.name);
        }
        if let Some(m) = a.nq {
            ds.keep_queries(m)?;
        }
        let n = ds.base.len();
        if a.k > n && a.radius.is_empty() {
            bail!("-k {} exceeds the {n} base vectors", a.k);
        }
        ds.queries.as_ref().check_finite().context("queries")?;
        Ok((ds, metric))
    })?;
    let d = ds.base.dim();

    // Which `--build-params` and `--params` each index takes. One index: all of them (a
    // wrong one is its error). Several: the build parameters it accepts, and the search
    // settings whose every name it has; one that no index takes is an error.
    let mut plans: Vec<Plan> = Vec::new();
    let mut used = vec![false; search_params.len()];
    let mut build_used = vec![false; build_params.len()];
    for spec in &specs {
        let mine_build: Vec<(String, String)> = if specs.len() == 1 {
            build_params.clone()
        } else {
            let mut ok = Vec::new();
            for (i, (name, value)) in build_params.iter().enumerate() {
                let mut probe = spec.build(d, metric)?;
                if probe.set_build_param(name, value).is_ok() {
                    build_used[i] = true;
                    ok.push((name.clone(), value.clone()));
                }
            }
            ok
        };
        let probe = build_with_params(spec, d, metric, &mine_build, gpu.as_ref())?;
        let known = probe.search_param_names();
        let mut mine = Vec::new();
        for (i, p) in search_params.iter().enumerate() {
            if p.names_set().iter().all(|n| has_param(&known, n)) {
                used[i] = true;
                mine.push(p.clone());
            }
        }
        if mine.is_empty() {
            mine.push(SearchParams::default());
        }
        plans.push(Plan {
            spec: spec.clone(),
            build: mine_build,
            search: mine,
        });
    }
    if specs.len() > 1
        && let Some(i) = build_used.iter().position(|u| !u)
    {
        let (name, value) = &build_params[i];
        bail!("--build-params `{name}={value}`: no --index accepts it");
    }
    if let Some(i) = used.iter().position(|u| !u) {
        bail!(
            "--params `{}`: no --index has all these parameters{}",
            a.params[i],
            if specs.len() == 1 {
                let probe = build_with_params(&specs[0], d, metric, &build_params, gpu.as_ref())?;
                let known = probe.search_param_names();
                if known.is_empty() {
                    format!(" ({} has none)", specs[0])
                } else {
                    format!(" ({} has: {})", specs[0], known.join(", "))
                }
            } else {
                String::new()
            }
        );
    }

    // k-NN ground truth, or the exact hits of each radius.
    let (gt, truths) = if a.radius.is_empty() {
        let gt = pool.install(|| ds.ground_truth(a.k, metric, a.cache_gt).cloned())?;
        (Some(gt), Vec::new())
    } else {
        let truths = pool.install(|| {
            a.radius
                .iter()
                .map(|&r| Ok((r, range_truth(&ds, r, metric)?)))
                .collect::<Result<Vec<_>>>()
        })?;
        (None, truths)
    };
    let mut report = if a.radius.is_empty() {
        Report::new(vec![
            ("index", "index"),
            ("params", "params"),
            ("threads", "threads"),
            ("qps", "qps"),
            ("R@1", "recall_at_1"),
            ("10-R@10", "recall_10_at_10"),
            ("search_s", "search_s"),
            ("bytes/vec", "bytes_per_vector"),
        ])
    } else {
        Report::new(vec![
            ("index", "index"),
            ("params", "params"),
            ("radius", "radius"),
            ("threads", "threads"),
            ("qps", "qps"),
            ("hits/q", "hits_per_query"),
            ("recall", "range_recall"),
            ("precision", "range_precision"),
        ])
    };
    for Plan {
        spec,
        build,
        search: params,
    } in &plans
    {
        let built = pool.install(|| -> Result<Built<'_>> {
            let mut index = build_with_params(spec, d, metric, build, gpu.as_ref())?;
            let (train_s, add_s) = train_and_add(&mut index, &ds)?;
            Ok(Built {
                ds: &ds,
                index,
                gt: gt.as_ref(),
                truths: &truths,
                train_s,
                add_s,
                build_params: build
                    .iter()
                    .map(|(n, v)| format!("{n}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
                gpu: gpu.as_ref().map(|g| g.info().name.clone()),
            })
        })?;
        if search_pools.is_empty() {
            pool.install(|| {
                search_all(
                    a,
                    spec,
                    params,
                    &built,
                    build_threads,
                    build_threads,
                    &mut report,
                )
            })?;
        } else {
            for p in &search_pools {
                let t = p.current_num_threads();
                p.install(|| search_all(a, spec, params, &built, build_threads, t, &mut report))?;
            }
        }
    }
    Ok(())
}

/// Whether `known` (an index's search parameter names) has `name` as
/// [`SearchParams::names_set`] spells it (`k_factor` for `k_factor_rf` too).
pub(crate) fn has_param(known: &[String], name: &str) -> bool {
    known.iter().any(|k| k == name)
        || name
            .strip_suffix("k_factor")
            .is_some_and(|pre| known.iter().any(|k| *k == format!("{pre}k_factor_rf")))
}

/// One `--index` of a run: its string, the build parameters it takes, its search settings.
struct Plan {
    spec: FactorySpec,
    build: Vec<(String, String)>,
    search: Vec<SearchParams<'static>>,
}

/// What one build leaves for the search passes.
struct Built<'a> {
    ds: &'a Dataset,
    index: FactoryIndex,
    /// k-NN ground truth (none under `--radius`).
    gt: Option<&'a GroundTruth>,
    /// Each `--radius` with its exact hits.
    truths: &'a [(f32, RangeSearchResults)],
    train_s: f64,
    add_s: f64,
    /// The build parameters it was built with (`name=value,…`; empty for none).
    build_params: String,
    /// The GPU's name when built with `--gpu`.
    gpu: Option<String>,
}

/// 10-recall@10 when the results and the ground truth both have 10 columns.
pub(crate) fn recall_10(res: &SearchResults, gt: &GroundTruth) -> Result<Option<f64>> {
    Ok(if res.k() >= 10 && gt.k() >= 10 {
        Some(intersection_recall(res, gt, 10)?)
    } else {
        None
    })
}

/// The median of `v` (not empty): the mean of the two middle values for an even count.
pub(crate) fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        0.5 * (s[m - 1] + s[m])
    }
}

/// Every `--params` pass of one index on the current thread pool, one row each.
fn search_all(
    a: &BenchArgs,
    spec: &FactorySpec,
    search_params: &[SearchParams<'static>],
    built: &Built<'_>,
    build_threads: usize,
    threads: usize,
    report: &mut Report,
) -> Result<()> {
    let Built {
        ds,
        index,
        gt,
        train_s,
        add_s,
        ..
    } = built;
    let (n, d, nq) = (ds.base.len(), ds.base.dim(), ds.queries.len());
    let metric = index.metric();
    let case = a
        .case
        .clone()
        .unwrap_or_else(|| spec.to_string().to_lowercase());
    let common = |params: &SearchParams<'_>, med: f64, best: f64, times: &[f64]| {
        let mut row = json!({
            "case": case,
            "library": "vq",
            "version": env!("CARGO_PKG_VERSION"),
            "index": spec.to_string(),
            "params": params.to_string(),
            "build_params": built.build_params,
            "threads": threads,
            "build_threads": build_threads,
            "n": n, "d": d, "nq": nq,
            "train_s": train_s,
            "add_s": add_s,
            "search_s": med,
            "qps": nq as f64 / med,
            "bytes_per_vector": index.bytes_per_vector(),
            "peak_rss_mb": peak_rss_mb(),
            "dataset": ds.name,
            "metric": metric.name(),
            "mode": if a.one_at_a_time { "one-at-a-time" } else { "batch" },
            "search_s_min": best,
            "search_s_all": times,
            "warmup": a.warmup,
            "simd": Kernels::get().level().to_string(),
        });
        if let Some(g) = &built.gpu {
            row["gpu"] = json!(g);
        }
        if a.one_at_a_time {
            row["latency_ms"] = json!(med / nq as f64 * 1e3);
        }
        row
    };
    for params in search_params {
        for (radius, truth) in built.truths {
            let q = ds.queries.as_ref();
            for _ in 0..a.warmup {
                range_pass(index, q, *radius, params, a.one_at_a_time)?;
            }
            let mut times = Vec::with_capacity(a.repeat);
            let mut last = None;
            for _ in 0..a.repeat {
                let (s, res) = range_pass(index, q, *radius, params, a.one_at_a_time)?;
                times.push(s);
                last = Some(res);
            }
            let res = last.context("invariant: at least one repeat")?;
            let med = median(&times);
            let best = times.iter().copied().fold(f64::INFINITY, f64::min);
            let mut row = common(params, med, best, &times);
            range_fields(&mut row, *radius, &res, Some(truth))?;
            report.row(&row);
        }
        let Some(gt) = gt else { continue };
        for _ in 0..a.warmup {
            search_pass(index, ds.queries.as_ref(), a.k, params, a.one_at_a_time)?;
        }
        let mut times = Vec::with_capacity(a.repeat);
        let mut last = None;
        for _ in 0..a.repeat {
            let (s, res) = search_pass(index, ds.queries.as_ref(), a.k, params, a.one_at_a_time)?;
            times.push(s);
            last = Some(res);
        }
        let res = last.context("invariant: at least one repeat")?;
        let med = median(&times);
        let best = times.iter().copied().fold(f64::INFINITY, f64::min);
        let r1 = recall_at_1(&res, gt)?;
        let r10 = recall_10(&res, gt)?;
        let mut row = common(params, med, best, &times);
        row["k"] = json!(a.k);
        row["recall_at_1"] = json!(r1);
        row["recall_10_at_10"] = json!(r10);
        if *spec == FactorySpec::Codes(vq_factory::EncodingSpec::Flat) {
            row["gflops_effective"] = json!(2.0 * n as f64 * d as f64 * nq as f64 / med / 1e9);
        }
        report.row(&row);
    }
    Ok(())
}

/// The files of a dataset in `dir` (what a folder dataset is read from, and what `vq
/// generate` writes): refused unless `force`, then removed, so the folder never mixes
/// two datasets.
fn clear_dataset_files(dir: &std::path::Path, force: bool) -> Result<()> {
    let parts = [
        "base",
        "query",
        "learn",
        "groundtruth",
        "gt",
        "groundtruth.ip",
    ];
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = e
            .with_context(|| format!("cannot read {}", dir.display()))?
            .path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let Some((stem, ext)) = name.rsplit_once('.') else {
            continue;
        };
        let stem = stem.split(".max").next().unwrap_or(stem);
        let known = crate::formats::VECTOR_EXTENSIONS.contains(&ext)
            || crate::formats::ID_EXTENSIONS.contains(&ext)
            || crate::formats::HDF5_EXTENSIONS.contains(&ext);
        let dataset = crate::formats::HDF5_EXTENSIONS.contains(&ext)
            || parts.iter().any(|p| stem.ends_with(p));
        if known && dataset && path.is_file() {
            found.push(path);
        }
    }
    found.sort();
    if found.is_empty() {
        return Ok(());
    }
    if !force {
        bail!(
            "{} already holds a dataset ({}); use --force to replace it",
            dir.display(),
            found
                .iter()
                .filter_map(|p| p.file_name().and_then(|n| n.to_str()))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for p in &found {
        std::fs::remove_file(p).with_context(|| format!("cannot remove {}", p.display()))?;
    }
    Ok(())
}

pub(crate) fn run_generate(a: &GenerateArgs) -> Result<()> {
    let metric: Metric = a.metric.parse()?;
    let format = a.format.as_str();
    if !["fvecs", "fbin", "npy", "hdf5"].contains(&format) {
        bail!("--format `{format}`: expected fvecs, fbin, npy or hdf5");
    }
    let mut spec = parse_spec(&a.data)?;
    spec.n_learn = a.learn;
    if format == "hdf5" && a.learn > 0 {
        bail!("--format hdf5 has no learn set (ann-benchmarks files train on `train`)");
    }
    if spec.n == 0 || spec.nq == 0 {
        bail!(
            "--data {}: a dataset needs base and query vectors (N and NQ at least 1; \
             `vq kmeans` takes `synthetic:N,D,0` directly)",
            a.data
        );
    }
    if a.gt_k == 0 {
        bail!("--gt-k 0: must be at least 1");
    }
    let data = spec.generate()?;
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    clear_dataset_files(&a.out, a.force)?;
    let write_vectors = |name: &str, v: &vq_core::Vectors| -> Result<()> {
        let path = a.out.join(format!("{name}.{format}"));
        match format {
            "fvecs" => write_fvecs(&path, v.as_ref())?,
            "fbin" => write_fbin(&path, v.as_ref())?,
            _ => write_npy(&path, v.as_slice(), v.dim())?,
        }
        Ok(())
    };
    let k = a.gt_k.min(data.base.len());
    let (ids, dist) = crate::gt::exact_knn(&data.base, &data.queries, k, metric, "ground truth")?;
    let ids: Vec<i32> = ids
        .iter()
        .map(|&l| i32::try_from(l).context("an id does not fit in i32"))
        .collect::<Result<_>>()?;
    if format == "hdf5" {
        let name = crate::dataset::synthetic_name(&spec);
        let path = a.out.join(format!("{name}.hdf5"));
        let distance = match metric {
            Metric::L2 => "euclidean",
            _ => "dot",
        };
        write_ann_hdf5(
            &path,
            data.base.as_ref(),
            data.queries.as_ref(),
            &Matrix::new(ids, k)?,
            &Matrix::new(dist, k)?,
            distance,
        )?;
    } else {
        write_vectors("base", &data.base)?;
        write_vectors("query", &data.queries)?;
        if a.learn > 0 {
            write_vectors("learn", &data.learn)?;
        }
        // The metric is in the name: a folder's plain `groundtruth` is for L2.
        let gt = match metric {
            Metric::L2 => "groundtruth",
            Metric::InnerProduct => "groundtruth.ip",
        };
        match format {
            "fvecs" => write_ivecs(a.out.join(format!("{gt}.ivecs")), &ids, k)?,
            "fbin" => write_bin(a.out.join(format!("{gt}.ibin")), &ids, k)?,
            _ => write_npy(a.out.join(format!("{gt}.npy")), &ids, k)?,
        }
    }
    progress::note(format!(
        "wrote {} base, {} query{} vectors of dimension {} to {} ({format})",
        data.base.len(),
        data.queries.len(),
        if a.learn > 0 {
            format!(", {} learn", a.learn)
        } else {
            String::new()
        },
        spec.d,
        a.out.display()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn graphs_are_added_in_one_call_and_other_indexes_in_chunks() {
        let one = |s: &str| adds_in_one_call(&FactorySpec::parse(s).unwrap());
        for s in [
            "HNSW32",
            "HNSW16_SQ8",
            "IDMap,HNSW32",
            "PCA32,HNSW32",
            "HNSW32,RFlat",
        ] {
            assert!(one(s), "{s}");
        }
        for s in [
            "Flat",
            "IVF64,Flat",
            "IVF64_HNSW32,Flat",
            "PQ8",
            "IDMap,Flat",
        ] {
            assert!(!one(s), "{s}");
        }
    }
}
