//! Datasets: a texmex-style folder or the built-in synthetic generator.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use vq_core::eval::GroundTruth;
use vq_core::io::{read_ibin, read_ivecs, read_vectors, write_ivecs};
use vq_core::synthetic::{SyntheticSpec, parse_spec};
use vq_core::{Index, IndexFlat, Metric, SearchParams, Vectors};

/// Vectors to index and search, with optional training vectors and ground truth.
pub(crate) struct Dataset {
    pub(crate) name: String,
    pub(crate) base: Vectors,
    pub(crate) queries: Vectors,
    pub(crate) learn: Option<Vectors>,
    pub(crate) gt: Option<GroundTruth>,
    /// Where computed ground truth may be cached (folders only).
    pub(crate) gt_cache: Option<PathBuf>,
}

const VECTOR_EXTS: [&str; 4] = ["fvecs", "bvecs", "fbin", "u8bin"];

fn find(dir: &Path, part: &str, exts: &[&str]) -> Result<Option<PathBuf>> {
    let mut hits: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read data folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            exts.iter().any(|ext| {
                name.strip_suffix(&format!(".{ext}"))
                    .is_some_and(|stem| stem.ends_with(part))
            })
        })
        .collect();
    hits.sort();
    if hits.len() > 1 {
        bail!(
            "several `*{part}` files in {}: {}",
            dir.display(),
            hits.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(hits.pop())
}

impl Dataset {
    /// Loads `spec`: a folder with texmex-named files, or `synthetic:N,D,NQ[,SEED]`.
    pub(crate) fn load(spec: &str) -> Result<Dataset> {
        if spec.starts_with("synthetic:") {
            let s: SyntheticSpec = parse_spec(spec)?;
            let data = s.generate()?;
            return Ok(Dataset {
                name: format!("syn-{}-d{}-q{}-s{}", s.n, s.d, s.nq, s.seed),
                base: data.base,
                queries: data.queries,
                learn: None,
                gt: None,
                gt_cache: None,
            });
        }
        let dir = Path::new(spec);
        if !dir.is_dir() {
            bail!("--data `{spec}` is neither a folder nor `synthetic:N,D,NQ[,SEED]`");
        }
        let base_path = find(dir, "base", &VECTOR_EXTS)?
            .with_context(|| format!("no `*base.fvecs` (or .bvecs/.fbin/.u8bin) in {spec}"))?;
        let query_path = find(dir, "query", &VECTOR_EXTS)?
            .with_context(|| format!("no `*query.fvecs` in {spec}"))?;
        let base = read_vectors(&base_path)?;
        let queries = read_vectors(&query_path)?;
        if queries.dim() != base.dim() {
            bail!(
                "queries have dimension {} but base vectors {}",
                queries.dim(),
                base.dim()
            );
        }
        let learn = match find(dir, "learn", &VECTOR_EXTS)? {
            Some(p) => {
                let l = read_vectors(&p)?;
                if l.dim() != base.dim() {
                    bail!(
                        "learn vectors have dimension {} but base vectors {}",
                        l.dim(),
                        base.dim()
                    );
                }
                Some(l)
            }
            None => None,
        };
        let gt_path = match find(dir, "groundtruth", &["ivecs", "ibin"])? {
            Some(p) => Some(p),
            None => find(dir, "gt", &["ivecs", "ibin"])?,
        };
        let gt = match &gt_path {
            Some(p) if p.extension().is_some_and(|e| e == "ibin") => {
                Some(GroundTruth::from_ivecs(&read_ibin(p)?))
            }
            Some(p) => Some(GroundTruth::from_ivecs(&read_ivecs(p)?)),
            None => None,
        };
        if let Some(g) = &gt
            && g.nq() != queries.len()
        {
            bail!(
                "ground truth has {} rows but there are {} queries",
                g.nq(),
                queries.len()
            );
        }
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("data")
            .to_string();
        let stem = base_path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split_once("base.").map(|(pre, _)| pre.to_string()))
            .unwrap_or_default();
        Ok(Dataset {
            name,
            base,
            queries,
            learn,
            gt,
            gt_cache: Some(dir.join(format!("{stem}groundtruth.ivecs"))),
        })
    }

    /// Keeps the first `m` queries (and their ground-truth rows).
    pub(crate) fn keep_queries(&mut self, m: usize) -> Result<()> {
        if m == 0 || m > self.queries.len() {
            bail!("--nq {m}: the dataset has {} queries", self.queries.len());
        }
        self.queries.truncate(m);
        if let Some(g) = &self.gt {
            let k = g.k();
            let ids: Vec<vq_core::Label> = (0..m).flat_map(|i| g.row(i).to_vec()).collect();
            self.gt = Some(GroundTruth::new(ids, k)?);
        }
        Ok(())
    }

    /// The ground truth, computed exactly with `IndexFlat` (k = max(k, 100), at most n)
    /// when the dataset has none; cached next to the data when `cache` is set.
    pub(crate) fn ground_truth(
        &mut self,
        k: usize,
        metric: Metric,
        cache: bool,
    ) -> Result<&GroundTruth> {
        let need = k.max(10);
        let stale = self
            .gt
            .as_ref()
            .is_some_and(|g| g.k() < need.min(self.base.len()));
        if self.gt.is_none() || stale {
            let kk = need.max(100).min(self.base.len());
            eprintln!("computing exact ground truth (k = {kk}, {metric})...");
            let mut flat = IndexFlat::new(self.base.dim(), metric)?;
            flat.add(self.base.as_ref())?;
            let res = flat.search(self.queries.as_ref(), kk, &SearchParams::default())?;
            let gt = GroundTruth::from_results(&res);
            if cache {
                match &self.gt_cache {
                    Some(p) if !p.exists() => {
                        write_ivecs(p, &gt.to_i32()?, gt.k())?;
                        eprintln!("cached ground truth in {}", p.display());
                    }
                    Some(p) => eprintln!("not overwriting {}", p.display()),
                    None => eprintln!("synthetic data: ground truth is not cached"),
                }
            }
            self.gt = Some(gt);
        }
        self.gt
            .as_ref()
            .context("invariant: ground truth set above")
    }
}
