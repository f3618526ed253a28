//! `vq describe`, `vq build` and `vq search`: the factory's strings and files from the
//! command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;
use vq_core::eval::recall_at_1;
use vq_core::io::write_ivecs;
use vq_core::{Index, Metric, SearchParams};
use vq_factory::{Factory, FactoryIndex, FactorySpec, faiss_io};

use crate::bench::{
    build_with_params, has_param, median, parse_build_params, peak_rss_mb, pool, range_fields,
    range_pass, range_truth, recall_10, search_pass, train_and_add,
};
use crate::dataset::{DataArgs, Dataset};
use crate::progress::Report;

/// Arguments of `vq describe`.
#[derive(Args, Debug)]
pub(crate) struct DescribeArgs {
    /// Input dimension the index is built for (checks that the string fits it).
    #[arg(long)]
    dim: usize,
    /// Metric: `l2` or `ip`.
    #[arg(long, default_value = "l2")]
    metric: String,
    /// The factory string, e.g. `"OPQ16_64,IVF4096,PQ16"`.
    description: String,
}

/// `vq describe`: the canonical string and the tree of what it builds, or the error
/// with a marker under the offending token (and a non-zero exit).
pub(crate) fn run_describe(a: &DescribeArgs) -> Result<ExitCode> {
    let metric: Metric = a.metric.parse()?;
    let spec = match FactorySpec::parse(&a.description) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let index = match Factory::new().build_spec(spec.clone(), a.dim, metric) {
        Ok(ix) => ix,
        Err(e) => {
            eprintln!(
                "error: `{spec}` cannot be built for d = {} ({metric}): {e}",
                a.dim
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    crate::progress::print_out(&format!(
        "{spec}\n{}d = {}, metric = {metric}, search parameters: {}\n",
        spec.tree(),
        a.dim,
        match index.search_param_names() {
            v if v.is_empty() => "none".to_string(),
            v => v.join(", "),
        }
    ));
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `vq build`.
#[derive(Args, Debug)]
pub(crate) struct BuildArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Factory string.
    #[arg(long)]
    index: String,
    /// Build-time parameters (`efConstruction=200`).
    #[arg(long, default_value = "")]
    build_params: String,
    /// Threads; default: all cores.
    #[arg(long)]
    threads: Option<usize>,
    /// Where to save the index (written atomically).
    #[arg(long)]
    out: PathBuf,
}

/// `vq build`: train, add, save; one JSON line.
pub(crate) fn run_build(a: &BuildArgs) -> Result<()> {
    let spec = FactorySpec::parse(&a.index).map_err(|e| anyhow::anyhow!("--index: {e}"))?;
    let build_params = parse_build_params(&a.build_params)?;
    pool(a.threads)?.install(|| -> Result<()> {
        let (ds, metric) = a.data.load()?;
        let (n, d) = (ds.base.len(), ds.base.dim());
        let mut index = build_with_params(&spec, d, metric, &build_params, None)?;
        let (train_s, add_s) = train_and_add(&mut index, &ds)?;
        let t0 = Instant::now();
        index
            .save(&a.out)
            .with_context(|| format!("saving to {}", a.out.display()))?;
        let save_s = t0.elapsed().as_secs_f64();
        let bytes = std::fs::metadata(&a.out).map(|m| m.len()).ok();
        Report::new(vec![
            ("index", "index"),
            ("n", "n"),
            ("train_s", "train_s"),
            ("add_s", "add_s"),
            ("file", "file"),
            ("file_bytes", "file_bytes"),
        ])
        .row(&json!({
                "library": "vq",
                "version": env!("CARGO_PKG_VERSION"),
                "index": spec.to_string(),
                "build_params": build_params
                    .iter()
                    .map(|(n, v)| format!("{n}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
                "dataset": ds.name,
                "metric": metric.name(),
                "n": n, "d": d,
                "train_s": train_s,
                "add_s": add_s,
                "save_s": save_s,
                "file": a.out.display().to_string(),
                "file_bytes": bytes,
                "bytes_per_vector": index.bytes_per_vector(),
                "peak_rss_mb": peak_rss_mb(),
        }));
        Ok(())
    })
}

/// Arguments of `vq search`.
#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("file").required(true).args(["index_file", "faiss_index"])))]
pub(crate) struct SearchArgs {
    /// An index file written by `vq build` (or `FactoryIndex::save`).
    #[arg(long)]
    index_file: Option<PathBuf>,
    /// An index file written by Faiss (`faiss.write_index`), searched as vq reads it
    /// (see `vq_factory::faiss_io`).
    #[arg(long)]
    faiss_index: Option<PathBuf>,
    /// The queries (and ground truth): a folder or `synthetic:N,D,NQ[,SEED]`, as for
    /// `vq build`.
    #[arg(long)]
    data: String,
    /// Neighbours per query.
    #[arg(short, long, default_value_t = 10)]
    k: usize,
    /// Range search instead of k-NN: every vector within this radius (L2: squared
    /// distance below it; inner product: similarity above it); the line reports hits per
    /// query and, when the data is the index's, range recall and precision against exact
    /// range search over the base (brute force).
    #[arg(long, allow_hyphen_values = true)]
    radius: Option<f32>,
    /// Search parameters, Faiss syntax (`nprobe=16,efSearch=64`).
    #[arg(long, default_value = "")]
    params: String,
    /// Map the file instead of reading it (large arrays stay on disk; for a Faiss
    /// file, the inverted lists, as Faiss's `IO_FLAG_MMAP`).
    #[arg(long)]
    mmap: bool,
    /// Threads; default: all cores.
    #[arg(long)]
    threads: Option<usize>,
    /// Timed repetitions; the median is reported (`search_s`), with the fastest.
    #[arg(long, alias = "repeats", default_value_t = 3)]
    repeat: usize,
    /// Write the result ids here (`.ivecs`, one row of k ids per query, -1 padding).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// `vq search`: load, search, report one JSON line (the `vq bench` fields plus load
/// time and memory after loading), optionally write the ids.
pub(crate) fn run_search(a: &SearchArgs) -> Result<()> {
    if a.k == 0 && a.radius.is_none() {
        bail!("-k must be at least 1");
    }
    if a.repeat == 0 {
        bail!("--repeat must be at least 1");
    }
    if let Some(r) = a.radius {
        if r.is_nan() {
            bail!("--radius must not be NaN");
        }
        if a.out.is_some() {
            bail!("--out writes k-NN ids; it does not go with --radius");
        }
    }
    let params =
        SearchParams::parse(&a.params).with_context(|| format!("--params `{}`", a.params))?;
    let pool = pool(a.threads)?;
    let threads = pool.current_num_threads();
    pool.install(|| -> Result<()> {
        let rss0 = peak_rss_mb();
        let t0 = Instant::now();
        let factory = Factory::new();
        let (file, index) = match (&a.index_file, &a.faiss_index) {
            (Some(f), _) => (
                f,
                if a.mmap {
                    factory.mmap(f)
                } else {
                    factory.load(f)
                }
                .with_context(|| format!("loading {}", f.display()))?,
            ),
            (None, Some(f)) => (
                f,
                if a.mmap {
                    faiss_io::mmap_index(f)
                } else {
                    faiss_io::read_index(f)
                }
                .with_context(|| format!("reading the Faiss index {}", f.display()))?,
            ),
            (None, None) => bail!("--index-file or --faiss-index is required"),
        };
        let load_s = t0.elapsed().as_secs_f64();
        let rss_after_load = current_rss_mb();
        let known = index.search_param_names();
        for name in params.names_set() {
            if !has_param(&known, &name) {
                bail!("{} has no search parameter `{name}`", index.describe());
            }
        }
        let mut ds = Dataset::load(&a.data)?;
        if ds.queries.dim() != index.dim() {
            bail!(
                "the queries have dimension {}, the index {}",
                ds.queries.dim(),
                index.dim()
            );
        }
        let loaded = Loaded {
            file,
            index: &index,
            params: &params,
            threads,
            load_s,
            rss0,
            rss_after_load,
        };
        if let Some(radius) = a.radius {
            return range_search_line(a, &loaded, &ds, radius);
        }
        if a.k > index.len() {
            bail!(
                "-k {} exceeds the {} vectors in the index",
                a.k,
                index.len()
            );
        }
        let metric = index.metric();
        let mut times = Vec::with_capacity(a.repeat);
        let mut last = None;
        for _ in 0..a.repeat {
            let (s, res) = search_pass(&index, ds.queries.as_ref(), a.k, &params, false)?;
            times.push(s);
            last = Some(res);
        }
        let res = last.context("invariant: at least one repeat")?;
        // Recall only when the data set is the one the index holds.
        let (r1, r10) = if ds.base.len() == index.len() {
            let gt = ds.ground_truth(a.k, metric, false)?;
            let r10 = recall_10(&res, gt)?;
            (Some(recall_at_1(&res, gt)?), r10)
        } else {
            (None, None)
        };
        if let Some(out) = &a.out {
            let ids: Vec<i32> = res
                .labels()
                .iter()
                .map(|&l| i32::try_from(l).unwrap_or(-1))
                .collect();
            write_ivecs(out, &ids, a.k)?;
        }
        Report::new(vec![
            ("index", "index"),
            ("params", "params"),
            ("load_s", "load_s"),
            ("qps", "qps"),
            ("R@1", "recall_at_1"),
            ("10-R@10", "recall_10_at_10"),
        ])
        .row(&{
            let mut row = loaded.row(a, &ds, &times);
            row["k"] = json!(a.k);
            row["recall_at_1"] = json!(r1);
            row["recall_10_at_10"] = json!(r10);
            row
        });
        Ok(())
    })
}

/// What `vq search` loaded, for its JSON line.
struct Loaded<'a> {
    file: &'a std::path::Path,
    index: &'a FactoryIndex,
    params: &'a SearchParams<'a>,
    threads: usize,
    load_s: f64,
    rss0: Option<f64>,
    rss_after_load: Option<f64>,
}

impl Loaded<'_> {
    /// The fields every `vq search` line has, from the timed passes' `times`.
    fn row(&self, a: &SearchArgs, ds: &Dataset, times: &[f64]) -> serde_json::Value {
        let index = self.index;
        let med = median(times);
        let nq = ds.queries.len();
        json!({
            "case": index.describe().to_lowercase(),
            "library": "vq",
            "version": env!("CARGO_PKG_VERSION"),
            "index": index.describe(),
            "params": self.params.to_string(),
            "threads": self.threads,
            "n": index.len(), "d": index.dim(), "nq": nq,
            "load_s": self.load_s,
            "mmap": a.mmap,
            "rss_before_load_mb": self.rss0,
            "rss_after_load_mb": self.rss_after_load,
            "file_bytes": std::fs::metadata(self.file).map(|m| m.len()).ok(),
            "file_format": if a.faiss_index.is_some() { "faiss" } else { "vq" },
            "search_s": med,
            "search_s_min": times.iter().copied().fold(f64::INFINITY, f64::min),
            "search_s_all": times,
            "qps": nq as f64 / med,
            "bytes_per_vector": index.bytes_per_vector(),
            "peak_rss_mb": peak_rss_mb(),
            "dataset": ds.name,
            "metric": index.metric().name(),
        })
    }
}

/// `vq search --radius`: timed range-search passes, one JSON line with hits per query
/// and, when the data set is the one the index holds, range recall and precision.
fn range_search_line(a: &SearchArgs, l: &Loaded<'_>, ds: &Dataset, radius: f32) -> Result<()> {
    let q = ds.queries.as_ref();
    let mut times = Vec::with_capacity(a.repeat);
    let mut last = None;
    for _ in 0..a.repeat {
        let (s, res) = range_pass(l.index, q, radius, l.params, false)?;
        times.push(s);
        last = Some(res);
    }
    let res = last.context("invariant: at least one repeat")?;
    let truth = if ds.base.len() == l.index.len() {
        Some(range_truth(ds, radius, l.index.metric())?)
    } else {
        None
    };
    let mut row = l.row(a, ds, &times);
    range_fields(&mut row, radius, &res, truth.as_ref())?;
    Report::new(vec![
        ("index", "index"),
        ("params", "params"),
        ("radius", "radius"),
        ("load_s", "load_s"),
        ("qps", "qps"),
        ("hits/q", "hits_per_query"),
        ("recall", "range_recall"),
        ("precision", "range_precision"),
    ])
    .row(&row);
    Ok(())
}

/// Resident set size now (Linux `/proc/self/statm`), in MiB.
fn current_rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: f64 = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096.0 / (1024.0 * 1024.0))
}

/// Arguments of `vq convert`.
#[derive(Args, Debug)]
pub(crate) struct ConvertArgs {
    /// The index to convert: a vq container or a Faiss index file (told apart by
    /// their first bytes).
    input: PathBuf,
    /// Where to write the converted index (atomically).
    output: PathBuf,
    /// Output format: `faiss` or `vq`; default: the other one.
    #[arg(long)]
    to: Option<String>,
}

/// `vq convert`: a Faiss index file to a vq container or back (one JSON line).
pub(crate) fn run_convert(a: &ConvertArgs) -> Result<()> {
    let head = {
        use std::io::Read;
        let mut f = std::fs::File::open(&a.input)
            .with_context(|| format!("opening {}", a.input.display()))?;
        let mut b = [0u8; 8];
        let n = f.read(&mut b)?;
        b[..n].to_vec()
    };
    let from = if faiss_io::looks_like_faiss(&head) {
        "faiss"
    } else {
        "vq"
    };
    let to = match a.to.as_deref() {
        None => {
            if from == "faiss" {
                "vq"
            } else {
                "faiss"
            }
        }
        Some(t @ ("faiss" | "vq")) => t,
        Some(t) => bail!("--to `{t}`: expected `faiss` or `vq`"),
    };
    let t0 = Instant::now();
    let index = if from == "faiss" {
        faiss_io::read_index(&a.input)
            .with_context(|| format!("reading the Faiss index {}", a.input.display()))?
    } else {
        Factory::new()
            .load(&a.input)
            .with_context(|| format!("loading {}", a.input.display()))?
    };
    if to == "faiss" {
        faiss_io::write_index(&index, &a.output)
    } else {
        index.save(&a.output)
    }
    .with_context(|| format!("writing {}", a.output.display()))?;
    Report::new(vec![
        ("index", "index"),
        ("from", "from"),
        ("to", "to"),
        ("n", "n"),
    ])
    .row(&json!({
        "input": a.input.display().to_string(),
        "output": a.output.display().to_string(),
        "from": from,
        "to": to,
        "index": index.describe(),
        "factory": index.spec().to_string(),
        "n": index.len(),
        "d": index.dim(),
        "metric": index.metric().name(),
        "bytes_in": std::fs::metadata(&a.input).map(|m| m.len()).ok(),
        "bytes_out": std::fs::metadata(&a.output).map(|m| m.len()).ok(),
        "seconds": t0.elapsed().as_secs_f64(),
    }));
    Ok(())
}

/// Arguments of `vq info`.
#[derive(Args, Debug)]
pub(crate) struct InfoArgs {
    /// An index file written by `vq build` (or `FactoryIndex::save`).
    file: PathBuf,
}

/// `vq info`: what a saved index holds, read from the mapped file (one JSON line).
pub(crate) fn run_info(a: &InfoArgs) -> Result<()> {
    use vq_core::persist::{LoadMode, StateReader};
    let r = StateReader::open(&a.file, LoadMode::Mmap)
        .with_context(|| format!("reading {}", a.file.display()))?;
    let (mut lists, mut codes, mut other) = (0u64, 0u64, 0u64);
    for (name, len) in r.sections() {
        if name.contains("lists/") {
            lists += len;
        } else if !name.contains("quantizer/")
            && (name.ends_with("/codes") || name.ends_with("/xb") || name.ends_with("/hnsw"))
        {
            // The base's vectors or codes; a coarse quantizer's centroids are `other`.
            codes += len;
        } else {
            other += len;
        }
    }
    let index = Factory::new()
        .mmap(&a.file)
        .with_context(|| format!("loading {}", a.file.display()))?;
    Report::new(vec![
        ("index", "index"),
        ("d", "d"),
        ("n", "n"),
        ("metric", "metric"),
        ("trained", "is_trained"),
        ("file_bytes", "file_bytes"),
    ])
    .row(&json!({
            "file": a.file.display().to_string(),
            "file_bytes": std::fs::metadata(&a.file).map(|m| m.len()).ok(),
            "format_version": r.version(),
            "index": index.describe(),
            "d": index.dim(),
            "metric": index.metric().name(),
            "n": index.len(),
            "is_trained": index.is_trained(),
            "bytes_per_vector": index.bytes_per_vector(),
            "search_params": index.search_param_names(),
            "sections": r.sections().count(),
            "bytes_inverted_lists": lists,
            "bytes_stored_vectors": codes,
            "bytes_other": other,
    }));
    Ok(())
}
