//! `vq tune`: explore the search parameters of a pipeline and print its Pareto frontier.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;
use vq_core::eval::recall_at_1;
use vq_core::{Index, SearchParams};
use vq_factory::FactorySpec;
use vq_factory::autotune::{Criterion, ExploreOptions, OperatingPoint, ParameterSpace};

use crate::bench::{
    build_with_params, parse_build_params, peak_rss_mb, pool, recall_10, train_and_add,
};
use crate::dataset::DataArgs;
use crate::progress::{self, Report};

/// Arguments of `vq tune`.
#[derive(Args, Debug)]
pub(crate) struct TuneArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Factory string of the pipeline to tune.
    #[arg(long)]
    index: String,
    /// What "accuracy" means: `1-recall@1`, `10-recall@10`, `N-recall@R`, or `R@R`
    /// (= 1-recall@R).
    #[arg(long, default_value = "10-recall@10")]
    criterion: String,
    /// Also print the fastest setting that reaches this accuracy (re-run to confirm).
    #[arg(long, allow_negative_numbers = true)]
    target_recall: Option<f64>,
    /// Stop starting new combinations after this many seconds of exploration.
    #[arg(long, allow_negative_numbers = true)]
    budget_s: Option<f64>,
    /// Repeat each search for at least this many seconds (the fastest run counts).
    #[arg(long, default_value_t = 0.2, allow_negative_numbers = true)]
    min_test_s: f64,
    /// Build-time parameters (`efConstruction=200,seed=7`).
    #[arg(long, default_value = "")]
    build_params: String,
    /// Threads for building and searching (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Use only the first NQ queries.
    #[arg(long)]
    nq: Option<usize>,
    /// Print every measured combination, not only the frontier.
    #[arg(long)]
    all: bool,
}

pub(crate) fn run(a: &TuneArgs) -> Result<()> {
    let criterion: Criterion = a
        .criterion
        .parse()
        .map_err(|e| anyhow::anyhow!("--criterion: {e}"))?;
    if let Some(t) = a.target_recall
        && !(t > 0.0 && t <= 1.0)
    {
        bail!("--target-recall {t}: must be in (0, 1]");
    }
    let budget = match a.budget_s {
        Some(s) if !(s.is_finite() && s >= 0.0) => bail!("--budget-s {s}: must be >= 0"),
        // Past what a Duration holds (~5.8e11 years) is no limit.
        Some(s) => Some(Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX)),
        None => None,
    };
    if !(a.min_test_s.is_finite() && a.min_test_s >= 0.0) {
        bail!("--min-test-s {}: must be >= 0", a.min_test_s);
    }
    let spec = FactorySpec::parse(&a.index).map_err(|e| anyhow::anyhow!("--index: {e}"))?;
    let build_params = parse_build_params(&a.build_params)?;
    let pool = pool(a.threads)?;
    let threads = pool.current_num_threads();
    pool.install(|| {
        let (mut ds, metric) = a.data.load()?;
        if ds.queries.is_empty() {
            bail!("{}: no queries to search (NQ = 0)", ds.name);
        }
        if let Some(m) = a.nq {
            ds.keep_queries(m)?;
        }
        let (n, d, nq) = (ds.base.len(), ds.base.dim(), ds.queries.len());
        let k = criterion.k();
        if k > n {
            bail!("--criterion {criterion} needs {k} results; the base has {n} vectors");
        }
        ds.queries.as_ref().check_finite().context("queries")?;
        let gt = ds
            .ground_truth(k.max(criterion.gt_k()), metric, false)?
            .clone();
        let mut index = build_with_params(&spec, d, metric, &build_params, None)?;
        let (train_s, add_s) = train_and_add(&mut index, &ds)?;
        let space = ParameterSpace::for_index(&index, k)?;
        let n_comb = space.n_combinations();
        progress::note(format!(
            "tuning {} ({}): {n_comb} combinations of {}",
            spec,
            criterion,
            if space.ranges().is_empty() {
                "no parameter (the defaults)".to_string()
            } else {
                space
                    .ranges()
                    .iter()
                    .map(|r| format!("{} [{}]", r.name, r.values.join(" ")))
                    .collect::<Vec<_>>()
                    .join(" × ")
            }
        ));
        let explore = ExploreOptions {
            budget,
            min_test_s: a.min_test_s,
            // As documented: every combination runs until --min-test-s has passed.
            max_repeats: usize::MAX,
        };
        let bar = progress::bar(n_comb as u64, "tuning");
        let t0 = Instant::now();
        let ops = space.explore(
            &index,
            ds.queries.as_ref(),
            &criterion,
            &gt,
            &explore,
            |p| {
                bar.inc(1);
                bar.set_message(format!("{:.3} {}", p.perf, p.params));
            },
        )?;
        bar.finish_and_clear();
        let explore_s = t0.elapsed().as_secs_f64();

        let mut report = Report::new(vec![
            ("params", "params"),
            (criterion_header(&criterion), "perf"),
            ("qps", "qps"),
            ("R@1", "recall_at_1"),
            ("10-R@10", "recall_10_at_10"),
            ("point", "tune"),
        ]);
        let row = |p: &OperatingPoint, kind: &str| -> Result<serde_json::Value> {
            let r1 = recall_at_1(&p.results, &gt)?;
            let r10 = recall_10(&p.results, &gt)?;
            Ok(json!({
                "case": "tune",
                "library": "vq",
                "version": env!("CARGO_PKG_VERSION"),
                "index": spec.to_string(),
                "params": p.params,
                "threads": threads,
                "build_threads": threads,
                "n": n, "d": d, "nq": nq, "k": k,
                "train_s": train_s,
                "add_s": add_s,
                "search_s": p.time_s,
                "qps": p.qps(),
                "criterion": criterion.to_string(),
                "perf": p.perf,
                "recall_at_1": r1,
                "recall_10_at_10": r10,
                "bytes_per_vector": index.bytes_per_vector(),
                "peak_rss_mb": peak_rss_mb(),
                "dataset": ds.name,
                "metric": metric.name(),
                "tune": kind,
            }))
        };
        if a.all {
            let optimal: Vec<usize> = ops.optimal().map(|p| p.cno).collect();
            for p in ops.all() {
                let kind = if optimal.contains(&p.cno) {
                    "frontier"
                } else {
                    "dominated"
                };
                report.row(&row(p, kind)?);
            }
        } else {
            for p in ops.optimal() {
                report.row(&row(p, "frontier")?);
            }
        }
        progress::note(format!(
            "explored {} of {n_comb} combinations in {explore_s:.1} s ({} skipped as \
             dominated{})",
            ops.all().len(),
            ops.skipped(),
            if ops.truncated() {
                ", stopped by --budget-s"
            } else {
                ""
            }
        ));
        if let Some(target) = a.target_recall {
            let Some(best) = ops.fastest_reaching(target) else {
                let top = ops
                    .optimal()
                    .last()
                    .map(|p| format!(" (the best is {:.4} at `{}`)", p.perf, p.params))
                    .unwrap_or_default();
                bail!("no setting reaches {criterion} >= {target}{top}");
            };
            // Re-run the chosen setting: the answer is what a user will get.
            let params = SearchParams::parse(&best.params)?;
            let again = index.search(ds.queries.as_ref(), k, &params)?;
            let verified = criterion.evaluate(&again, &gt)?;
            let mut r = row(best, "target")?;
            r["target_recall"] = json!(target);
            r["verified_perf"] = json!(verified);
            report.row(&r);
            if verified < target {
                bail!(
                    "`{}` reached {:.4} while exploring but {verified:.4} when re-run \
                     (below {target})",
                    best.params,
                    best.perf
                );
            }
        }
        Ok(())
    })
}

fn criterion_header(c: &Criterion) -> &'static str {
    match c {
        Criterion::OneRecallAt(1) => "1-R@1",
        Criterion::OneRecallAt(_) => "1-R@R",
        Criterion::Intersection { .. } => "N-R@R",
    }
}
