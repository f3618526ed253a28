//! `vq bench` and `vq generate`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;
use vq_core::distance::Kernels;
use vq_core::eval::{GroundTruth, intersection_recall, recall_at_1};
use vq_core::io::{write_fvecs, write_ivecs};
use vq_core::synthetic::parse_spec;
use vq_core::{Index, Label, Metric, SearchParams, SearchResults, VectorsRef};
use vq_factory::{FactoryIndex, FactorySpec};

use crate::dataset::Dataset;

/// Arguments of `vq bench`.
#[derive(Args, Debug)]
pub(crate) struct BenchArgs {
    /// A folder with `*base.fvecs`, `*query.fvecs` and optional `*learn.fvecs` and
    /// `*groundtruth.ivecs`, or `synthetic:N,D,NQ[,SEED]`.
    #[arg(long)]
    data: String,
    /// Factory string, e.g. `Flat` or `IDMap,Flat`.
    #[arg(long)]
    index: String,
    /// Metric: `l2` or `ip`.
    #[arg(long, default_value = "l2")]
    metric: String,
    /// Neighbours per query.
    #[arg(short, long, default_value_t = 10)]
    k: usize,
    /// Threads (a rayon pool of this size runs everything); default: all cores.
    #[arg(long)]
    threads: Option<usize>,
    /// Search with these thread counts (comma list, e.g. `1,2`), each in its own pool,
    /// after one build with `--threads`; one JSON line per count and `--params`.
    #[arg(long, value_delimiter = ',')]
    search_threads: Vec<usize>,
    /// Build-time parameters applied before training and adding (`efConstruction=200`).
    #[arg(long, default_value = "")]
    build_params: String,
    /// Search parameters, Faiss syntax (`nprobe=16,efSearch=64`); one pass (and one
    /// JSON line) per occurrence.
    #[arg(long)]
    params: Vec<String>,
    /// Timed repetitions of each search pass; the fastest is reported.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Send queries one at a time (latency) instead of as one batch.
    #[arg(long)]
    one_at_a_time: bool,
    /// Use only the first NQ queries (and their ground truth).
    #[arg(long)]
    nq: Option<usize>,
    /// Write computed ground truth next to the data (folders only).
    #[arg(long)]
    cache_gt: bool,
    /// The `case` field of the JSON lines (default: `flat`/`index` from the string).
    #[arg(long)]
    case: Option<String>,
}

/// Arguments of `vq generate`.
#[derive(Args, Debug)]
pub(crate) struct GenerateArgs {
    /// `synthetic:N,D,NQ[,SEED]`.
    #[arg(long)]
    data: String,
    /// Output folder (created).
    #[arg(long)]
    out: PathBuf,
    /// Training vectors to write (`learn.fvecs`); 0 for none.
    #[arg(long, default_value_t = 0)]
    learn: usize,
    /// Neighbours per query in `groundtruth.ivecs` (exact, L2).
    #[arg(long, default_value_t = 100)]
    gt_k: usize,
    /// Metric of the ground truth.
    #[arg(long, default_value = "l2")]
    metric: String,
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

/// Builds the index of `spec` and applies the build-time parameters.
pub(crate) fn build_with_params(
    spec: &FactorySpec,
    d: usize,
    metric: Metric,
    build_params: &[(String, String)],
) -> Result<FactoryIndex> {
    let mut index = spec.build(d, metric)?;
    for (name, value) in build_params {
        index
            .set_build_param(name, value)
            .with_context(|| format!("--build-params `{name}={value}`"))?;
    }
    Ok(index)
}

/// Trains on the learn set (the base when there is none), then adds the base with ids
/// `0..n` (explicitly when the index maps ids); returns the two times in seconds.
pub(crate) fn train_and_add(index: &mut FactoryIndex, ds: &Dataset) -> Result<(f64, f64)> {
    let train_set = ds.learn.as_ref().unwrap_or(&ds.base);
    let t0 = Instant::now();
    index.train(train_set.as_ref()).context("training")?;
    let train_s = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    if matches!(index.spec(), FactorySpec::IdMap { .. }) {
        let ids: Vec<Label> = (0..ds.base.len() as Label).collect();
        index.add_with_ids(ds.base.as_ref(), &ids)
    } else {
        index.add(ds.base.as_ref())
    }
    .context("adding the base vectors")?;
    Ok((train_s, t0.elapsed().as_secs_f64()))
}

pub(crate) fn run_bench(a: &BenchArgs) -> Result<()> {
    let metric: Metric = a.metric.parse()?;
    let spec = FactorySpec::parse(&a.index).map_err(|e| anyhow::anyhow!("--index: {e}"))?;
    if a.k == 0 {
        bail!("-k must be at least 1");
    }
    if a.repeats == 0 {
        bail!("--repeats must be at least 1");
    }
    let build_params = parse_build_params(&a.build_params)?;
    let search_params: Vec<SearchParams<'static>> = if a.params.is_empty() {
        vec![SearchParams::default()]
    } else {
        a.params
            .iter()
            .map(|p| SearchParams::parse(p).with_context(|| format!("--params `{p}`")))
            .collect::<Result<_>>()?
    };
    let pool = pool(a.threads)?;
    let build_threads = pool.current_num_threads();
    let mut search_pools = Vec::with_capacity(a.search_threads.len());
    for &t in &a.search_threads {
        if t == 0 {
            bail!("--search-threads: each count must be at least 1");
        }
        search_pools.push(self::pool(Some(t))?);
    }
    let built = pool.install(|| -> Result<Built> {
        let mut ds = Dataset::load(&a.data)?;
        if let Some(m) = a.nq {
            ds.keep_queries(m)?;
        }
        let (n, d) = (ds.base.len(), ds.base.dim());
        if a.k > n {
            bail!("-k {} exceeds the {n} base vectors", a.k);
        }
        ds.queries.as_ref().check_finite().context("queries")?;

        let mut index = build_with_params(&spec, d, metric, &build_params)?;
        let known = index.search_param_names();
        for p in &search_params {
            for name in p.names_set() {
                if !known.contains(&name) {
                    bail!(
                        "{} has no search parameter `{name}`{}",
                        index.describe(),
                        if known.is_empty() {
                            String::new()
                        } else {
                            format!(" (it has: {})", known.join(", "))
                        }
                    );
                }
            }
        }
        let gt: GroundTruth = ds.ground_truth(a.k, metric, a.cache_gt)?.clone();
        let (train_s, add_s) = train_and_add(&mut index, &ds)?;

        Ok(Built {
            ds,
            index,
            gt,
            train_s,
            add_s,
        })
    })?;
    if search_pools.is_empty() {
        pool.install(|| {
            search_all(
                a,
                &spec,
                &search_params,
                &built,
                build_threads,
                build_threads,
            )
        })
    } else {
        for p in &search_pools {
            let t = p.current_num_threads();
            p.install(|| search_all(a, &spec, &search_params, &built, build_threads, t))?;
        }
        Ok(())
    }
}

/// What one build leaves for the search passes.
struct Built {
    ds: Dataset,
    index: FactoryIndex,
    gt: GroundTruth,
    train_s: f64,
    add_s: f64,
}

/// Every `--params` pass on the current thread pool, one JSON line each.
fn search_all(
    a: &BenchArgs,
    spec: &FactorySpec,
    search_params: &[SearchParams<'static>],
    built: &Built,
    build_threads: usize,
    threads: usize,
) -> Result<()> {
    let Built {
        ds,
        index,
        gt,
        train_s,
        add_s,
    } = built;
    let (n, d, nq) = (ds.base.len(), ds.base.dim(), ds.queries.len());
    let metric = index.metric();
    {
        let case = a
            .case
            .clone()
            .unwrap_or_else(|| spec.to_string().to_lowercase());
        for params in search_params {
            let mut times = Vec::with_capacity(a.repeats);
            let mut last = None;
            for _ in 0..a.repeats {
                let (s, res) =
                    search_pass(index, ds.queries.as_ref(), a.k, params, a.one_at_a_time)?;
                times.push(s);
                last = Some(res);
            }
            let res = last.context("invariant: at least one repeat")?;
            let best = times.iter().copied().fold(f64::INFINITY, f64::min);
            let r1 = recall_at_1(&res, gt)?;
            let r10 = if a.k >= 10 && gt.k() >= 10 {
                Some(intersection_recall(&res, gt, 10)?)
            } else {
                None
            };
            let mut row = json!({
                "case": case,
                "library": "vq",
                "version": env!("CARGO_PKG_VERSION"),
                "index": spec.to_string(),
                "params": params.to_string(),
                "threads": threads,
                "build_threads": build_threads,
                "n": n, "d": d, "nq": nq, "k": a.k,
                "train_s": train_s,
                "add_s": add_s,
                "search_s": best,
                "qps": nq as f64 / best,
                "recall_at_1": r1,
                "recall_10_at_10": r10,
                "bytes_per_vector": index.bytes_per_vector(),
                "peak_rss_mb": peak_rss_mb(),
                "dataset": ds.name,
                "metric": metric.name(),
                "mode": if a.one_at_a_time { "one-at-a-time" } else { "batch" },
                "search_s_all": times,
                "simd": Kernels::get().level().to_string(),
            });
            if a.one_at_a_time {
                row["latency_ms"] = json!(best / nq as f64 * 1e3);
            }
            if *spec == FactorySpec::Codes(vq_factory::EncodingSpec::Flat) {
                row["gflops_effective"] = json!(2.0 * n as f64 * d as f64 * nq as f64 / best / 1e9);
            }
            println!("{row}");
        }
        Ok(())
    }
}

pub(crate) fn run_generate(a: &GenerateArgs) -> Result<()> {
    let metric: Metric = a.metric.parse()?;
    let mut spec = parse_spec(&a.data)?;
    spec.n_learn = a.learn;
    let data = spec.generate()?;
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    write_fvecs(a.out.join("base.fvecs"), data.base.as_ref())?;
    write_fvecs(a.out.join("query.fvecs"), data.queries.as_ref())?;
    if a.learn > 0 {
        write_fvecs(a.out.join("learn.fvecs"), data.learn.as_ref())?;
    }
    let k = a.gt_k.clamp(1, data.base.len().max(1));
    if !data.base.is_empty() && !data.queries.is_empty() {
        let mut flat = vq_core::IndexFlat::new(spec.d, metric)?;
        flat.add(data.base.as_ref())?;
        let res = flat.search(data.queries.as_ref(), k, &SearchParams::default())?;
        let gt = GroundTruth::from_results(&res);
        write_ivecs(a.out.join("groundtruth.ivecs"), &gt.to_i32()?, k)?;
    }
    eprintln!(
        "wrote {} base, {} query{} vectors of dimension {} to {}",
        data.base.len(),
        data.queries.len(),
        if a.learn > 0 {
            format!(", {} learn", a.learn)
        } else {
            String::new()
        },
        spec.d,
        a.out.display()
    );
    Ok(())
}
