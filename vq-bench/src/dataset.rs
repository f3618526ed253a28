//! Datasets: a folder of vector files (texmex, BigANN or NumPy), an ann-benchmarks HDF5
//! file, or the built-in synthetic generator.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use vq_core::eval::GroundTruth;
use vq_core::io::write_ivecs;
use vq_core::synthetic::{SyntheticSpec, parse_spec};
use vq_core::{Metric, Vectors};

use crate::formats::{
    HDF5_EXTENSIONS, ID_EXTENSIONS, VECTOR_EXTENSIONS, extension, metric_for_distance,
    normalize_rows, read_ann_hdf5, read_ids_any, read_vectors_any,
};

/// Vectors to index and search, with optional training vectors and ground truth.
pub(crate) struct Dataset {
    /// For reports: the folder's name, the HDF5 file's stem, or the synthetic spec.
    pub(crate) name: String,
    /// The vectors to index.
    pub(crate) base: Vectors,
    /// The queries.
    pub(crate) queries: Vectors,
    /// Training vectors, when the data (or `--learn`) has them; else train on the base.
    pub(crate) learn: Option<Vectors>,
    /// The true neighbours of each query, when known.
    pub(crate) gt: Option<GroundTruth>,
    /// Where computed L2 ground truth may be cached (folders only); inner-product
    /// ground truth goes beside it as `….ip.ivecs` ([`Dataset::gt_path`]).
    pub(crate) gt_cache: Option<PathBuf>,
    /// The metric the data was made for (an HDF5 file's `distance` attribute); `None`
    /// for folders and synthetic data. For `angular` data the vectors are already
    /// normalised, so the hint is inner product.
    pub(crate) metric_hint: Option<Metric>,
    /// The metric `gt` is known to be for: a folder's `*groundtruth` file is L2 (the
    /// texmex convention) and its `*groundtruth.ip` file inner product; HDF5
    /// `neighbors` follow the `distance` attribute; `None` (an HDF5 file without one)
    /// is trusted as is.
    gt_metric: Option<Metric>,
    /// The number of queries before [`Dataset::keep_queries`] (ground truth read from or
    /// written to a file has a row for each).
    queries_total: usize,
}

/// A synthetic set's name, as the peers' harness writes it (`syn-100k-d128-q1k-s12345`,
/// `syn-1M-…`), so both sides' lines name the same dataset.
pub(crate) fn synthetic_name(s: &SyntheticSpec) -> String {
    let count = |n: usize| match n {
        0 => "0".to_string(),
        n if n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    };
    format!("syn-{}-d{}-q{}-s{}", count(s.n), s.d, count(s.nq), s.seed)
}

/// The data options shared by `vq bench`, `vq tune` and `vq build`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct DataArgs {
    /// A folder with `*base` and `*query` vectors and optional `*learn` vectors and
    /// `*groundtruth` ids (`.fvecs/.bvecs/.fbin/.u8bin/.npy`; `.ivecs/.ibin/.npy`), an
    /// ann-benchmarks `.hdf5` file, or `synthetic:N,D,NQ[,SEED]`.
    #[arg(long)]
    pub(crate) data: String,
    /// Metric: `l2` or `ip` (default: the data's own, else `l2`).
    #[arg(long)]
    pub(crate) metric: Option<String>,
    /// Train on the vectors of this file instead of the data's learn set or the base.
    #[arg(long)]
    pub(crate) learn: Option<PathBuf>,
    /// Use only the first N base vectors (ground truth is recomputed for the prefix).
    #[arg(long)]
    pub(crate) max_base: Option<usize>,
}

impl DataArgs {
    /// Loads the data with `--learn` and `--max-base`, and picks the metric.
    ///
    /// # Errors
    /// As [`Dataset::load_with`]; an unknown metric.
    pub(crate) fn load(&self) -> Result<(Dataset, Metric)> {
        let opts = DataOptions {
            learn: self.learn.clone(),
            max_base: self.max_base,
            skip_gt: false,
        };
        let ds = Dataset::load_with(&self.data, &opts)?;
        let metric = ds.metric(self.metric.as_deref())?;
        Ok((ds, metric))
    }
}

/// How to load a dataset beyond its spec.
#[derive(Default, Debug, Clone)]
pub(crate) struct DataOptions {
    /// Train on the vectors of this file (any vector format) instead of the data's own
    /// learn file or the base.
    pub(crate) learn: Option<PathBuf>,
    /// Keep only the first N base vectors (ground truth from the data is then dropped
    /// and recomputed exactly).
    pub(crate) max_base: Option<usize>,
    /// Do not read a folder's ground truth (`vq gt`, which replaces it, even broken).
    pub(crate) skip_gt: bool,
}

/// The extensions for a folder's base/query/learn files.
const FOLDER_VECTOR_EXTS: [&str; 5] = VECTOR_EXTENSIONS;

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

fn check_dim(what: &str, got: &Vectors, base: &Vectors) -> Result<()> {
    if got.dim() != base.dim() {
        bail!(
            "{what} have dimension {} but base vectors {}",
            got.dim(),
            base.dim()
        );
    }
    Ok(())
}

impl Dataset {
    /// Loads `spec`: a folder of vector files, an ann-benchmarks `.hdf5`/`.h5` file, or
    /// `synthetic:N,D,NQ[,SEED]`.
    pub(crate) fn load(spec: &str) -> Result<Dataset> {
        Self::load_with(spec, &DataOptions::default())
    }

    /// Loads `spec` (see [`Dataset::load`]) with `opts`: another training set, a prefix
    /// of the base.
    ///
    /// - A folder holds `*base`, `*query` and optionally `*learn` vectors (`.fvecs`,
    ///   `.bvecs`, `.fbin`, `.u8bin`, `.npy`) and `*groundtruth` or `*gt` ids (`.ivecs`,
    ///   `.ibin`, `.npy`).
    /// - An HDF5 file holds `train` (base), `test` (queries), `neighbors` (ground
    ///   truth); its `distance` attribute sets [`Dataset::metric_hint`], and `angular`
    ///   data are normalised to unit length.
    pub(crate) fn load_with(spec: &str, opts: &DataOptions) -> Result<Dataset> {
        let (mut ds, normalise) = if spec.starts_with("synthetic:") {
            (Self::synthetic(spec)?, false)
        } else {
            let path = Path::new(spec);
            if path.is_dir() {
                (Self::folder(path, !opts.skip_gt)?, false)
            } else if HDF5_EXTENSIONS.contains(&extension(path).as_str()) {
                Self::hdf5(path)?
            } else if path.exists() {
                bail!(
                    "--data `{spec}`: a single file must be an ann-benchmarks .hdf5/.h5 file \
                     (or pass a folder of vector files, or `synthetic:N,D,NQ[,SEED]`)"
                );
            } else {
                bail!(
                    "--data `{spec}`: no such folder or file (expected a folder of vector \
                     files, an ann-benchmarks .hdf5/.h5 file, or `synthetic:N,D,NQ[,SEED]`)"
                );
            }
        };
        if let Some(p) = &opts.learn {
            let mut l = read_vectors_any(p).context("--learn")?;
            check_dim(&format!("--learn vectors ({})", p.display()), &l, &ds.base)?;
            if normalise {
                normalize_rows(&mut l);
            }
            ds.learn = Some(l);
        }
        if let Some(n) = opts.max_base {
            ds.keep_base(n)?;
        }
        ds.validate()?;
        Ok(ds)
    }

    fn synthetic(spec: &str) -> Result<Dataset> {
        let s: SyntheticSpec = parse_spec(spec)?;
        let data = s.generate()?;
        Ok(Dataset {
            name: synthetic_name(&s),
            base: data.base,
            learn: None,
            gt: None,
            gt_cache: None,
            metric_hint: None,
            gt_metric: None,
            queries_total: data.queries.len(),
            queries: data.queries,
        })
    }

    /// A folder's vectors and (with `read_gt`) ground truth: `*groundtruth` (or `*gt`)
    /// ids are for L2, `*groundtruth.ip` ids for inner product (which then becomes the
    /// folder's metric when it has no L2 file).
    fn folder(dir: &Path, read_gt: bool) -> Result<Dataset> {
        let spec = dir.display();
        let base_path = find(dir, "base", &FOLDER_VECTOR_EXTS)?
            .with_context(|| format!("no `*base.fvecs` (or .bvecs/.fbin/.u8bin/.npy) in {spec}"))?;
        let query_path = find(dir, "query", &FOLDER_VECTOR_EXTS)?.with_context(|| {
            format!("no `*query.fvecs` (or .bvecs/.fbin/.u8bin/.npy) in {spec}")
        })?;
        let base = read_vectors_any(&base_path)?;
        let queries = read_vectors_any(&query_path)?;
        check_dim("queries", &queries, &base)?;
        let learn = match find(dir, "learn", &FOLDER_VECTOR_EXTS)? {
            Some(p) => {
                let l = read_vectors_any(&p)?;
                check_dim("learn vectors", &l, &base)?;
                Some(l)
            }
            None => None,
        };
        let gt_path = match find(dir, "groundtruth", &ID_EXTENSIONS)? {
            Some(p) => Some(p),
            None => find(dir, "gt", &ID_EXTENSIONS)?,
        };
        let ip_path = find(dir, "groundtruth.ip", &ID_EXTENSIONS)?;
        let (gt_file, gt_metric, metric_hint) = match (gt_path, ip_path) {
            (Some(p), _) => (Some(p), Some(Metric::L2), None),
            (None, Some(p)) => (
                Some(p),
                Some(Metric::InnerProduct),
                Some(Metric::InnerProduct),
            ),
            (None, None) => (None, None, None),
        };
        let gt = match gt_file {
            Some(p) if read_gt => Some(read_ids_any(p)?),
            _ => None,
        };
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
            learn,
            gt_metric: gt.as_ref().and(gt_metric),
            gt,
            gt_cache: Some(dir.join(format!("{stem}groundtruth.ivecs"))),
            metric_hint,
            queries_total: queries.len(),
            queries,
        })
    }

    /// An ann-benchmarks file, and whether its vectors were normalised (`angular`).
    fn hdf5(path: &Path) -> Result<(Dataset, bool)> {
        let f = read_ann_hdf5(path)?;
        let (hint, normalise) = match &f.distance {
            Some(d) => {
                let (m, norm) = metric_for_distance(d)
                    .with_context(|| format!("{}: the `distance` attribute", path.display()))?;
                (Some(m), norm)
            }
            None => (None, false),
        };
        let (mut base, mut queries) = (f.train, f.test);
        if normalise {
            normalize_rows(&mut base);
            normalize_rows(&mut queries);
        }
        let name = path
            .file_stem()
            .and_then(|n| n.to_str())
            .unwrap_or("data")
            .to_string();
        Ok((
            Dataset {
                name,
                base,
                queries_total: queries.len(),
                queries,
                learn: None,
                gt_metric: f.neighbors.as_ref().and(hint),
                gt: f.neighbors,
                gt_cache: None,
                metric_hint: hint,
            },
            normalise,
        ))
    }

    /// Keeps the first `n` base vectors. Ground truth from the data is for the whole
    /// base, so it is dropped (to be recomputed exactly), and computed ground truth is
    /// cached under a name of its own (`*groundtruth.max{n}.ivecs`, `….ip.ivecs` for
    /// inner product), read back by [`Dataset::ground_truth`] when present.
    fn keep_base(&mut self, n: usize) -> Result<()> {
        let total = self.base.len();
        if n == 0 || n > total {
            bail!("--max-base {n}: the base has {total} vectors (give 1..={total})");
        }
        if n == total {
            return Ok(());
        }
        self.base.truncate(n);
        self.gt_metric = None;
        if self.gt.take().is_some() {
            crate::progress::note(format!(
                "note: --max-base {n}: the data's ground truth is for all {total} base \
                 vectors; ground truth for the first {n} is read from a cache file when \
                 there is one, else computed exactly"
            ));
        }
        self.gt_cache = self.gt_cache.take().map(|p| {
            let name = p
                .file_name()
                .and_then(|f| f.to_str())
                .and_then(|f| f.strip_suffix(".ivecs"))
                .unwrap_or("groundtruth")
                .to_string();
            p.with_file_name(format!("{name}.max{n}.ivecs"))
        });
        Ok(())
    }

    /// Where ground truth for `metric` is cached (folders only): [`Dataset::gt_cache`]
    /// for L2, the same name with `.ip` before `.ivecs` for inner product.
    pub(crate) fn gt_path(&self, metric: Metric) -> Option<PathBuf> {
        let p = self.gt_cache.as_ref()?;
        match metric {
            Metric::L2 => Some(p.clone()),
            Metric::InnerProduct => {
                let stem = p.file_stem()?.to_str()?;
                Some(p.with_file_name(format!("{stem}.ip.ivecs")))
            }
        }
    }

    /// Ground truth from `path` if it fits: a row for each of the data's queries, ids
    /// of base vectors, at least `need` per row. The rows of the kept queries.
    fn read_cached_gt(&self, path: &Path, need: usize) -> Result<GroundTruth> {
        let g = read_ids_any(path)?;
        let n = self.base.len() as vq_core::Label;
        if g.nq() != self.queries_total {
            bail!("{} rows for {} queries", g.nq(), self.queries_total);
        }
        if g.k() < need {
            bail!("{} neighbours per query, {need} needed", g.k());
        }
        if (0..g.nq()).any(|i| g.row(i).iter().any(|&id| id >= n)) {
            bail!("ids past the {n} base vectors");
        }
        let m = self.queries.len();
        let ids: Vec<vq_core::Label> = (0..m).flat_map(|i| g.row(i).to_vec()).collect();
        Ok(GroundTruth::new(ids, g.k())?)
    }

    /// Checks that the parts agree: dimensions, ground-truth rows and ids.
    fn validate(&self) -> Result<()> {
        check_dim("queries", &self.queries, &self.base)?;
        if let Some(l) = &self.learn {
            check_dim("learn vectors", l, &self.base)?;
        }
        if let Some(g) = &self.gt {
            if g.nq() != self.queries.len() {
                bail!(
                    "ground truth has {} rows but there are {} queries",
                    g.nq(),
                    self.queries.len()
                );
            }
            let n = self.base.len() as vq_core::Label;
            for i in 0..g.nq() {
                if let Some(&id) = g.row(i).iter().find(|&&id| id >= n) {
                    bail!(
                        "ground truth row {i} names vector {id}, but the base has {n} \
                         vectors (ground truth for other data?)"
                    );
                }
            }
        }
        Ok(())
    }

    /// The metric to use: `arg` (`--metric`) when given, else the data's own
    /// ([`Dataset::metric_hint`]), else L2.
    ///
    /// # Errors
    /// An unknown metric name.
    pub(crate) fn metric(&self, arg: Option<&str>) -> Result<Metric> {
        Ok(match arg {
            Some(m) => m.parse()?,
            None => self.metric_hint.unwrap_or(Metric::L2),
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
        if let Some(hint) = self.metric_hint
            && hint != metric
        {
            crate::progress::note(format!(
                "note: {} was made for metric {hint} (its `distance` attribute); the search \
                 uses {metric}",
                self.name
            ));
        }
        let need = k.max(10);
        let want = need.min(self.base.len());
        let stale = self.gt.as_ref().is_some_and(|g| g.k() < want);
        let other_metric = self.gt.is_some() && self.gt_metric.is_some_and(|m| m != metric);
        if other_metric {
            crate::progress::note(format!(
                "note: the ground truth of {} is for {} (a folder's `*groundtruth` file is \
                 for L2, its `*groundtruth.ip` file for inner product); using {metric}'s",
                self.name,
                self.gt_metric.map_or("another metric", |m| m.name())
            ));
        }
        if self.gt.is_none() || stale || other_metric {
            self.gt = None;
            if let Some(p) = self.gt_path(metric).filter(|p| p.is_file()) {
                match self.read_cached_gt(&p, want) {
                    Ok(g) => {
                        crate::progress::note(format!(
                            "using ground truth ({metric}) from {}",
                            p.display()
                        ));
                        self.gt = Some(g);
                    }
                    Err(e) => {
                        crate::progress::note(format!("note: not using {}: {e:#}", p.display()))
                    }
                }
            }
        }
        if self.gt.is_none() {
            let kk = need.max(100).min(self.base.len());
            crate::progress::note(format!(
                "computing exact ground truth (k = {kk}, {metric})..."
            ));
            let (ids, _) =
                crate::gt::exact_knn(&self.base, &self.queries, kk, metric, "ground truth")?;
            let gt = GroundTruth::new(ids, kk)?;
            if cache {
                match self.gt_path(metric) {
                    None => {
                        crate::progress::note("synthetic or HDF5 data: ground truth is not cached")
                    }
                    Some(_) if self.queries.len() != self.queries_total => {
                        crate::progress::note(format!(
                            "note: ground truth not cached: --nq keeps {} of the {} queries",
                            self.queries.len(),
                            self.queries_total
                        ))
                    }
                    Some(p) if p.exists() => {
                        crate::progress::note(format!("not overwriting {}", p.display()))
                    }
                    Some(p) => {
                        write_ivecs(&p, &gt.to_i32()?, gt.k())?;
                        crate::progress::note(format!("cached ground truth in {}", p.display()));
                    }
                }
            }
            self.gt = Some(gt);
        }
        self.gt_metric = Some(metric);
        self.gt
            .as_ref()
            .context("invariant: ground truth set above")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::formats::{write_ann_hdf5, write_npy};
    use vq_core::VectorsRef;
    use vq_core::io::{Matrix, write_fvecs};

    fn values(n: usize, d: usize, seed: u32) -> Vec<f32> {
        (0..n * d)
            .map(|i| {
                let x = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8;
                (x % 1000) as f32 / 100.0 - 5.0
            })
            .collect()
    }

    fn spec(p: &Path) -> &str {
        p.to_str().unwrap()
    }

    fn err_of<T>(r: Result<T>) -> String {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => format!("{e:#}"),
        }
    }

    /// A folder with base (200 × 8), query (10 × 8), learn (50 × 8) and ground truth
    /// (10 × 5, ids 0..50) as .npy files.
    fn npy_folder(dir: &Path, gt_name: &str) {
        write_npy(dir.join("base.npy"), &values(200, 8, 1), 8).unwrap();
        write_npy(dir.join("query.npy"), &values(10, 8, 2), 8).unwrap();
        write_npy(dir.join("learn.npy"), &values(50, 8, 3), 8).unwrap();
        let ids: Vec<i64> = (0..50).collect();
        write_npy(dir.join(gt_name), &ids, 5).unwrap();
    }

    fn ann_file(path: &Path, distance: &str) {
        let train = values(100, 4, 5);
        let test = values(6, 4, 6);
        write_ann_hdf5(
            path,
            VectorsRef::new(&train, 4).unwrap(),
            VectorsRef::new(&test, 4).unwrap(),
            &Matrix::new((0..60).collect(), 10).unwrap(),
            &Matrix::new(vec![0.5; 60], 10).unwrap(),
            distance,
        )
        .unwrap();
    }

    #[test]
    fn synthetic_names_match_the_peers_harness() {
        let name = |n, nq| synthetic_name(&SyntheticSpec::new(n, 128, nq));
        assert_eq!(name(100_000, 1_000), "syn-100k-d128-q1k-s12345");
        assert_eq!(name(1_000_000, 10_000), "syn-1M-d128-q10k-s12345");
        assert_eq!(name(1_500, 30), "syn-1500-d128-q30-s12345");
    }

    #[test]
    fn npy_folder_loads() {
        for gt_name in ["groundtruth.npy", "gt.npy"] {
            let dir = tempfile::tempdir().unwrap();
            npy_folder(dir.path(), gt_name);
            let ds = Dataset::load(spec(dir.path())).unwrap();
            assert_eq!(
                (ds.base.len(), ds.base.dim(), ds.queries.len()),
                (200, 8, 10)
            );
            assert_eq!(ds.learn.as_ref().unwrap().len(), 50);
            let gt = ds.gt.as_ref().unwrap();
            assert_eq!((gt.nq(), gt.k()), (10, 5));
            assert_eq!(gt.row(9), &[45, 46, 47, 48, 49]);
            assert_eq!(ds.metric_hint, None);
            assert_eq!(ds.gt_cache, Some(dir.path().join("groundtruth.ivecs")));
        }
    }

    #[test]
    fn folder_checks_dimensions_rows_and_ids() {
        let dir = tempfile::tempdir().unwrap();
        npy_folder(dir.path(), "groundtruth.npy");
        write_npy(dir.path().join("query.npy"), &values(10, 4, 2), 4).unwrap();
        assert!(err_of(Dataset::load(spec(dir.path()))).contains("dimension 4"));
        write_npy(dir.path().join("query.npy"), &values(9, 8, 2), 8).unwrap();
        assert!(err_of(Dataset::load(spec(dir.path()))).contains("10 rows but there are 9"));
        write_npy(dir.path().join("query.npy"), &values(10, 8, 2), 8).unwrap();
        let mut ids: Vec<i32> = (0..50).collect();
        ids[7] = 200;
        write_npy(dir.path().join("groundtruth.npy"), &ids, 5).unwrap();
        assert!(err_of(Dataset::load(spec(dir.path()))).contains("names vector 200"));
    }

    #[test]
    fn hdf5_file_loads_with_metric_hint() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tiny-4-angular.hdf5");
        ann_file(&p, "angular");
        let mut ds = Dataset::load(spec(&p)).unwrap();
        assert_eq!(ds.name, "tiny-4-angular");
        assert_eq!(ds.metric_hint, Some(Metric::InnerProduct));
        assert_eq!(
            (ds.base.len(), ds.queries.len(), ds.base.dim()),
            (100, 6, 4)
        );
        for v in [&ds.base, &ds.queries] {
            for i in 0..v.len() {
                let n: f32 = v.row(i).iter().map(|x| x * x).sum();
                assert!((n - 1.0).abs() < 1e-5 || n == 0.0);
            }
        }
        assert_eq!(ds.gt.as_ref().unwrap().row(5)[..3], [50, 51, 52]);
        assert!(ds.gt_cache.is_none());
        // The file's neighbours are for inner product: kept for it, recomputed for L2.
        let kept = ds.ground_truth(3, Metric::InnerProduct, true).unwrap();
        assert_eq!(kept.row(5)[..3], [50, 51, 52]);
        assert_eq!(ds.ground_truth(3, Metric::L2, true).unwrap().k(), 100);

        let p = dir.path().join("e.h5");
        ann_file(&p, "euclidean");
        let ds = Dataset::load(spec(&p)).unwrap();
        assert_eq!(ds.metric_hint, Some(Metric::L2));
        assert_eq!(ds.base.as_slice(), values(100, 4, 5).as_slice());

        ann_file(&p, "hamming");
        let e = err_of(Dataset::load(spec(&p)));
        assert!(e.contains("hamming") && e.contains("e.h5"), "{e}");

        let p = dir.path().join("x.fvecs");
        write_fvecs(&p, VectorsRef::new(&[1.0; 4], 2).unwrap()).unwrap();
        assert!(err_of(Dataset::load(spec(&p))).contains("single file"));
        assert!(err_of(Dataset::load("/no/such/place.h5")).contains("no such"));
    }

    #[test]
    fn learn_option() {
        let dir = tempfile::tempdir().unwrap();
        npy_folder(dir.path(), "groundtruth.npy");
        let other = dir.path().join("other.fvecs");
        write_fvecs(&other, VectorsRef::new(&values(30, 8, 9), 8).unwrap()).unwrap();
        let opts = DataOptions {
            learn: Some(other.clone()),
            max_base: None,
            skip_gt: false,
        };
        let ds = Dataset::load_with(spec(dir.path()), &opts).unwrap();
        assert_eq!(ds.learn.as_ref().unwrap().len(), 30);
        let ds = Dataset::load_with("synthetic:500,8,5", &opts).unwrap();
        assert_eq!(ds.learn.as_ref().unwrap().len(), 30);
        let e = err_of(Dataset::load_with("synthetic:500,16,5", &opts));
        assert!(e.contains("--learn") && e.contains("dimension 8"), "{e}");

        // Angular data: the learn vectors are normalised like the base.
        let p = dir.path().join("a.hdf5");
        ann_file(&p, "angular");
        let l = dir.path().join("l.npy");
        write_npy(&l, &[3.0f32, 0.0, 4.0, 0.0, 0.0, 0.0, 0.0, 0.0], 4).unwrap();
        let opts = DataOptions {
            learn: Some(l),
            max_base: None,
            skip_gt: false,
        };
        let ds = Dataset::load_with(spec(&p), &opts).unwrap();
        assert_eq!(
            ds.learn.as_ref().unwrap().as_slice(),
            &[0.6, 0.0, 0.8, 0.0, 0.0, 0.0, 0.0, 0.0]
        );
    }

    #[test]
    fn max_base_keeps_a_prefix_and_recomputes_ground_truth() {
        let dir = tempfile::tempdir().unwrap();
        npy_folder(dir.path(), "groundtruth.npy");
        let opts = |n| DataOptions {
            learn: None,
            max_base: Some(n),
            skip_gt: false,
        };
        let full = Dataset::load(spec(dir.path())).unwrap();
        let mut ds = Dataset::load_with(spec(dir.path()), &opts(120)).unwrap();
        assert_eq!(ds.base.len(), 120);
        assert_eq!(ds.base.as_slice(), &full.base.as_slice()[..120 * 8]);
        assert!(ds.gt.is_none());
        let cache = dir.path().join("groundtruth.max120.ivecs");
        assert_eq!(ds.gt_cache.as_ref(), Some(&cache));
        let gt = ds.ground_truth(10, Metric::L2, true).unwrap().clone();
        assert_eq!((gt.nq(), gt.k()), (10, 100));
        assert!((0..10).all(|i| gt.row(i).iter().all(|&id| (0..120).contains(&id))));
        assert!(cache.is_file());
        assert!(!dir.path().join("groundtruth.ivecs").exists());
        // Read back on the next load with the same prefix; not for the full data.
        let mut again = Dataset::load_with(spec(dir.path()), &opts(120)).unwrap();
        assert_eq!(again.ground_truth(10, Metric::L2, false).unwrap(), &gt);
        assert_eq!(Dataset::load(spec(dir.path())).unwrap().gt, full.gt);
        // The whole base: nothing changes.
        let same = Dataset::load_with(spec(dir.path()), &opts(200)).unwrap();
        assert_eq!(same.gt, full.gt);
        assert_eq!(same.gt_cache, full.gt_cache);
        for bad in [0, 201] {
            let e = err_of(Dataset::load_with(spec(dir.path()), &opts(bad)));
            assert!(
                e.contains(&format!("--max-base {bad}")) && e.contains("200"),
                "{e}"
            );
        }
        // HDF5 and synthetic data: a prefix, no cache.
        let p = dir.path().join("a.hdf5");
        ann_file(&p, "euclidean");
        let ds = Dataset::load_with(spec(&p), &opts(40)).unwrap();
        assert_eq!(
            (ds.base.len(), ds.gt.is_none(), ds.gt_cache.is_none()),
            (40, true, true)
        );
        let ds = Dataset::load_with("synthetic:500,8,5", &opts(499)).unwrap();
        assert_eq!(ds.base.len(), 499);
    }

    /// A folder of 200 × 8 base and 10 queries in .fvecs, without ground truth.
    fn fvecs_folder(dir: &Path) {
        write_fvecs(
            dir.join("base.fvecs"),
            VectorsRef::new(&values(200, 8, 1), 8).unwrap(),
        )
        .unwrap();
        write_fvecs(
            dir.join("query.fvecs"),
            VectorsRef::new(&values(10, 8, 2), 8).unwrap(),
        )
        .unwrap();
    }

    #[test]
    fn ground_truth_files_carry_their_metric() {
        let dir = tempfile::tempdir().unwrap();
        fvecs_folder(dir.path());
        let mut ds = Dataset::load(spec(dir.path())).unwrap();
        let ip = ds
            .ground_truth(10, Metric::InnerProduct, true)
            .unwrap()
            .clone();
        let ip_file = dir.path().join("groundtruth.ip.ivecs");
        assert!(ip_file.is_file() && !dir.path().join("groundtruth.ivecs").exists());
        // Cached inner-product ground truth makes inner product the folder's metric...
        let mut ds = Dataset::load(spec(dir.path())).unwrap();
        assert_eq!(ds.metric(None).unwrap(), Metric::InnerProduct);
        assert_eq!(
            ds.ground_truth(10, Metric::InnerProduct, false).unwrap(),
            &ip
        );
        // ...and is never taken for L2's, which is computed (and cached beside it).
        let l2 = ds.ground_truth(10, Metric::L2, true).unwrap().clone();
        assert_ne!(l2, ip);
        assert!(dir.path().join("groundtruth.ivecs").is_file());
        let mut ds = Dataset::load(spec(dir.path())).unwrap();
        assert_eq!(ds.metric(None).unwrap(), Metric::L2);
        assert_eq!(ds.ground_truth(10, Metric::L2, false).unwrap(), &l2);
        assert_eq!(
            ds.ground_truth(10, Metric::InnerProduct, false).unwrap(),
            &ip
        );
        assert_eq!(ds.ground_truth(10, Metric::L2, false).unwrap(), &l2);
    }

    #[test]
    fn ground_truth_for_some_queries_is_not_cached() {
        let dir = tempfile::tempdir().unwrap();
        fvecs_folder(dir.path());
        let mut ds = Dataset::load(spec(dir.path())).unwrap();
        ds.keep_queries(4).unwrap();
        assert_eq!(ds.ground_truth(10, Metric::L2, true).unwrap().nq(), 4);
        assert!(!dir.path().join("groundtruth.ivecs").exists());
        // A cache of all the queries serves a prefix of them.
        let mut all = Dataset::load(spec(dir.path())).unwrap();
        let full = all.ground_truth(10, Metric::L2, true).unwrap().clone();
        let mut ds = Dataset::load(spec(dir.path())).unwrap();
        ds.keep_queries(4).unwrap();
        let some = ds.ground_truth(10, Metric::L2, false).unwrap();
        assert_eq!(
            (0..4).map(|i| some.row(i)).collect::<Vec<_>>(),
            (0..4).map(|i| full.row(i)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn broken_ground_truth_can_be_skipped() {
        let dir = tempfile::tempdir().unwrap();
        fvecs_folder(dir.path());
        std::fs::write(dir.path().join("groundtruth.ivecs"), [1u8; 10]).unwrap();
        assert!(Dataset::load(spec(dir.path())).is_err());
        let opts = DataOptions {
            skip_gt: true,
            ..DataOptions::default()
        };
        let ds = Dataset::load_with(spec(dir.path()), &opts).unwrap();
        assert!(ds.gt.is_none());
        assert_eq!(
            ds.gt_path(Metric::InnerProduct),
            Some(dir.path().join("groundtruth.ip.ivecs"))
        );
    }
}
