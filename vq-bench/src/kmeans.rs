//! `vq kmeans`.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;
use vq_kmeans::{Init, KMeans, KMeansParams, imbalance_factor};

use crate::bench::{peak_rss_mb, pool};
use crate::dataset::Dataset;

/// Arguments of `vq kmeans`.
#[derive(Args, Debug)]
pub(crate) struct KmeansArgs {
    /// A folder with `*base.fvecs` (the base vectors are clustered), or
    /// `synthetic:N,D,NQ[,SEED]`.
    #[arg(long)]
    data: String,
    /// Number of centroids.
    #[arg(long)]
    k: usize,
    /// Lloyd iterations.
    #[arg(long, default_value_t = 25)]
    niter: usize,
    /// Initialisation: `random`, `kmeans++`, `afkmc2`.
    #[arg(long, default_value = "random")]
    init: String,
    /// Seed.
    #[arg(long, default_value_t = 1234)]
    seed: u64,
    /// Runs from different seeds (the best is kept).
    #[arg(long, default_value_t = 1)]
    nredo: usize,
    /// Threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Two-level clustering (√k groups, then each group).
    #[arg(long)]
    two_level: bool,
    /// Spherical k-means (unit-norm centroids, inner-product assignment).
    #[arg(long)]
    spherical: bool,
    /// Print per-iteration progress on stderr.
    #[arg(long)]
    verbose: bool,
    /// Assign points on GPU N (default 0) at each iteration (vq-kmeans' assigner hook
    /// with a GPU flat index); the JSON line gains `"gpu"`.
    #[arg(long, num_args = 0..=1, default_missing_value = "0", value_name = "N")]
    gpu: Option<usize>,
}

pub(crate) fn run(a: &KmeansArgs) -> Result<()> {
    if a.k == 0 {
        bail!("--k must be at least 1");
    }
    let mut params = KMeansParams::new(a.k)
        .with_niter(a.niter)
        .with_seed(a.seed)
        .with_nredo(a.nredo)
        .with_init(Init::parse(&a.init)?)
        .with_spherical(a.spherical);
    params.verbose = a.verbose;
    if a.gpu.is_some() && a.two_level {
        bail!("--gpu and --two-level cannot be combined");
    }
    let gpu = match a.gpu {
        Some(n) => Some(vq_gpu::GpuDevice::new(n).context("--gpu")?),
        None => None,
    };
    let pool = pool(a.threads)?;
    let threads = pool.current_num_threads();
    pool.install(|| -> Result<()> {
        let ds = Dataset::load(&a.data)?;
        let x = ds.base.as_ref();
        let (n, d) = (x.len(), x.dim());
        let mut km = KMeans::new(d, params)?;
        let t0 = Instant::now();
        let spin = crate::progress::spinner(&format!("k-means, {} centroids", a.k));
        if let Some(dev) = &gpu {
            vq_gpu::train_kmeans(&mut km, dev, x)
        } else if a.two_level {
            km.train_two_level(x)
        } else {
            km.train(x)
        }
        .context("k-means training")?;
        spin.finish_and_clear();
        let train_s = t0.elapsed().as_secs_f64();
        let (labels, dist) = km.assign(x)?;
        // Spherical k-means assigns by similarity: the squared error to the (unit)
        // centroid is ‖x‖² + ‖c‖² − 2·x·c.
        let mse = if a.spherical {
            let c = km.centroids();
            (0..n)
                .map(|i| {
                    let cv = c.row(labels[i] as usize);
                    let sq =
                        |v: &[f32]| v.iter().map(|&t| f64::from(t) * f64::from(t)).sum::<f64>();
                    (sq(x.row(i)) + sq(cv) - 2.0 * f64::from(dist[i])).max(0.0)
                })
                .sum::<f64>()
                / n as f64
        } else {
            dist.iter().map(|&v| v as f64).sum::<f64>() / n as f64
        };
        let stats = km.iteration_stats();
        let row = json!({
            "case": "kmeans",
            "library": "vq",
            "version": env!("CARGO_PKG_VERSION"),
            "dataset": ds.name,
            "n": n, "d": d, "k": a.k, "niter": a.niter,
            "init": a.init, "seed": a.seed, "nredo": a.nredo, "two_level": a.two_level,
            "threads": threads,
            "train_s": train_s,
            "objective": km.objective(),
            "objective_per_point": km.objective().map(|o| o / km.n_train() as f64),
            "n_train": km.n_train(),
            "mse_full_base": mse,
            "imbalance_factor": imbalance_factor(&labels, a.k),
            "nsplit": stats.iter().map(|s| s.nsplit).sum::<usize>(),
            "objectives": stats.iter().map(|s| s.objective).collect::<Vec<_>>(),
            "time_search_s": stats.last().map(|s| s.time_search_s),
            "peak_rss_mb": peak_rss_mb(),
            "warnings": km.warnings(),
            "gpu": gpu.as_ref().map(|g| g.info().name.clone()),
        });
        crate::progress::Report::new(vec![
            ("n", "n"),
            ("k", "k"),
            ("train_s", "train_s"),
            ("objective", "objective"),
            ("mse", "mse_full_base"),
            ("imbalance", "imbalance_factor"),
        ])
        .row(&row);
        Ok(())
    })
}
