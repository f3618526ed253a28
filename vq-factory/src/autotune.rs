//! Auto-tuning of search parameters: Faiss's `ParameterSpace` exploration.
//!
//! [`ParameterSpace::for_index`] lists, for every search parameter of a pipeline, the
//! values worth trying, cheapest first (`nprobe` = 1, 2, 4, …, `efSearch` = 16 … 512,
//! `k_factor_rf` = 1 … 64, `max_codes` for an IMI, `quantizer_efSearch` for an HNSW
//! coarse quantizer). A *combination* picks one value of each; it is numbered as a
//! mixed-radix number (the first parameter varies slowest). Search cost and accuracy are
//! assumed to grow with each parameter, so a combination whose every value is at least
//! another's costs at least as much and is at least as accurate.
//!
//! [`ParameterSpace::explore`] first runs the most expensive combination (the best
//! accuracy reachable), then every combination in order of increasing cost (the sum of
//! its value ranks). Before running one it bounds its accuracy from above (by the runs
//! that dominate it) and its time from below (by the runs it dominates); when the Pareto
//! frontier of [`OperatingPoints`] already reaches that accuracy in that time, the
//! combination cannot improve the frontier and is skipped, as in Faiss.
//!
//! ```
//! use vq_core::{Index, Metric, SearchParams, synthetic::SyntheticSpec};
//! use vq_core::eval::GroundTruth;
//! use vq_factory::autotune::{Criterion, ExploreOptions, ParameterSpace};
//!
//! let data = SyntheticSpec::new(2_000, 16, 50).generate()?;
//! let mut exact = vq_factory::index_factory(16, "Flat", Metric::L2)?;
//! exact.add(data.base.as_ref())?;
//! let gt = GroundTruth::from_results(&exact.search(data.queries.as_ref(), 10, &SearchParams::default())?);
//!
//! let mut index = vq_factory::index_factory(16, "IVF32,Flat", Metric::L2)?;
//! index.train(data.base.as_ref())?;
//! index.add(data.base.as_ref())?;
//! let space = ParameterSpace::for_index(&index, 10)?;
//! assert_eq!(space.ranges()[0].name, "nprobe");
//! let criterion: Criterion = "10-recall@10".parse()?;
//! let ops = space.explore(&index, data.queries.as_ref(), &criterion, &gt, &ExploreOptions::default(), |_| {})?;
//! let best = ops.fastest_reaching(0.9).expect("nprobe=32 is exhaustive");
//! assert!(best.perf >= 0.9);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use vq_core::eval::GroundTruth;
use vq_core::{Error, Index, NO_LABEL, Result, SearchParams, SearchResults, VectorsRef};

use crate::FactoryIndex;
use crate::spec::{CoarseSpec, FactorySpec};

/// How good a search result is: Faiss's `OneRecallAtRCriterion` or
/// `IntersectionCriterion`, measured against exact ground truth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Criterion {
    /// `1-recall@R` (also written `R@R`): the fraction of queries whose true nearest
    /// neighbour is among the first `R` results.
    OneRecallAt(usize),
    /// `N-recall@R` (N > 1): the mean fraction of the true `N` nearest neighbours found
    /// among the first `R` results (`10-recall@10` is Faiss's intersection criterion).
    Intersection {
        /// True neighbours looked for.
        n: usize,
        /// Results looked at.
        r: usize,
    },
}

impl Criterion {
    /// Results each query must return (`R`).
    pub fn k(&self) -> usize {
        match *self {
            Criterion::OneRecallAt(r) | Criterion::Intersection { r, .. } => r,
        }
    }

    /// Ground-truth neighbours each query needs (`N`, 1 for `1-recall@R`).
    pub fn gt_k(&self) -> usize {
        match *self {
            Criterion::OneRecallAt(_) => 1,
            Criterion::Intersection { n, .. } => n,
        }
    }

    /// The criterion's value for `res` (in `[0, 1]`).
    ///
    /// # Errors
    /// Query counts that differ, results with fewer than `R` columns, ground truth with
    /// fewer than `N`.
    pub fn evaluate(&self, res: &SearchResults, gt: &GroundTruth) -> Result<f64> {
        if res.nq() != gt.nq() {
            return Err(Error::invalid_param(
                "ground truth",
                format!("{} rows for {} queries", gt.nq(), res.nq()),
            ));
        }
        let (n, r) = (self.gt_k(), self.k());
        if res.k() < r || gt.k() < n {
            return Err(Error::invalid_param(
                "criterion",
                format!(
                    "{self} needs {r} results and {n} true neighbours per query \
                     (have {} and {})",
                    res.k(),
                    gt.k()
                ),
            ));
        }
        let nq = res.nq().max(1) as f64;
        let mut hits = 0usize;
        for i in 0..res.nq() {
            let found = &res.row(i).1[..r];
            hits += gt.row(i)[..n]
                .iter()
                .filter(|&&t| t != NO_LABEL && found.contains(&t))
                .count();
        }
        Ok(hits as f64 / (nq * n as f64))
    }
}

impl fmt::Display for Criterion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Criterion::OneRecallAt(r) => write!(f, "1-recall@{r}"),
            Criterion::Intersection { n, r } => write!(f, "{n}-recall@{r}"),
        }
    }
}

impl FromStr for Criterion {
    type Err = Error;
    /// `1-recall@1`, `10-recall@10`, `N-recall@R` (N ≤ R), `N-R@R`, or `R@R` (=
    /// `1-recall@R`).
    fn from_str(s: &str) -> Result<Criterion> {
        let bad = |why: &str| {
            Error::invalid_param(
                "criterion",
                format!(
                    "`{s}`: {why} (expected `1-recall@R`, `N-recall@R` with N <= R, \
                     or `R@R`)"
                ),
            )
        };
        let t = s.trim();
        let (lhs, r) = t.split_once('@').ok_or_else(|| bad("no `@`"))?;
        let r: usize = r
            .trim()
            .parse()
            .map_err(|_| bad("R is not a positive integer"))?;
        let n: usize = match lhs.trim() {
            "R" | "r" => 1,
            other => {
                let num = other
                    .strip_suffix("-recall")
                    .or_else(|| other.strip_suffix("-R"))
                    .ok_or_else(|| bad("unknown criterion"))?;
                num.trim()
                    .parse()
                    .map_err(|_| bad("N is not a positive integer"))?
            }
        };
        if n == 0 || r == 0 {
            return Err(bad("N and R must be at least 1"));
        }
        if n > r {
            return Err(bad("N is larger than R"));
        }
        Ok(if n == 1 {
            Criterion::OneRecallAt(r)
        } else {
            Criterion::Intersection { n, r }
        })
    }
}

/// The values tried for one search parameter, cheapest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParameterRange {
    /// Faiss name (`nprobe`, `quantizer_efSearch`, …).
    pub name: String,
    /// Values, in increasing cost and accuracy.
    pub values: Vec<String>,
}

/// The search parameters of one pipeline and the values to explore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParameterSpace {
    ranges: Vec<ParameterRange>,
}

/// Powers of two from `lo` to `hi`, both included when they are powers of two.
fn powers(lo: usize, hi: usize) -> Vec<String> {
    let mut v = Vec::new();
    let mut x = 1usize;
    while x <= hi {
        if x >= lo {
            v.push(x.to_string());
        }
        x = match x.checked_mul(2) {
            Some(y) => y,
            None => break,
        };
    }
    v
}

/// `nprobe` values for `nlist` lists: 1, 2, 4, … below `nlist` (at most 4096, as
/// Faiss), then `nlist` itself (exhaustive) when it is at most 4096.
fn nprobe_range(nlist: usize) -> Vec<String> {
    let mut v: Vec<String> = powers(1, nlist.saturating_sub(1).min(4096));
    if (1..=4096).contains(&nlist) {
        v.push(nlist.to_string());
    }
    v
}

/// `efSearch` values: 16 … 512 (Faiss starts at 4; below `k` the graph search widens
/// to `k` anyway, so values under `k` are skipped).
fn ef_range(k: usize) -> Vec<String> {
    let lo = k.next_power_of_two().max(4);
    let v = powers(lo, 512);
    if v.is_empty() { vec![k.to_string()] } else { v }
}

impl ParameterSpace {
    /// A space from explicit ranges (none empty, no name twice).
    ///
    /// # Errors
    /// An empty range or a repeated name.
    pub fn new(ranges: Vec<ParameterRange>) -> Result<ParameterSpace> {
        for (i, r) in ranges.iter().enumerate() {
            if r.values.is_empty() {
                return Err(Error::invalid_param(&r.name, "no values to explore"));
            }
            if ranges[..i].iter().any(|o| o.name == r.name) {
                return Err(Error::invalid_param(&r.name, "listed twice"));
            }
        }
        Ok(ParameterSpace { ranges })
    }

    /// The default ranges for `index`'s search parameters when it returns `k` results:
    /// `nprobe` for an IVF (and IMI `max_codes` = 2^8 … 2^19, then no limit),
    /// `quantizer_…` for a coarse quantizer that has parameters, `efSearch` for an HNSW
    /// graph, `k_factor_rf` = 1 … 64 for re-ranking.
    ///
    /// # Errors
    /// `k` is 0.
    pub fn for_index(index: &FactoryIndex, k: usize) -> Result<ParameterSpace> {
        if k == 0 {
            return Err(Error::invalid_param("k", "must be at least 1"));
        }
        let mut ranges = Vec::new();
        ranges_of(index.spec(), "", k, &mut ranges);
        // Only what the built index reads (a registered codec may add nothing).
        let known = index.search_param_names();
        ranges.retain(|r| known.contains(&r.name));
        ParameterSpace::new(ranges)
    }

    /// The parameter ranges, first = slowest-varying digit of a combination number.
    pub fn ranges(&self) -> &[ParameterRange] {
        &self.ranges
    }

    /// Number of combinations (1 when there is no parameter: the defaults).
    pub fn n_combinations(&self) -> usize {
        self.ranges
            .iter()
            .map(|r| r.values.len())
            .fold(1usize, usize::saturating_mul)
    }

    /// The value index of each parameter in combination `cno`.
    pub fn digits(&self, cno: usize) -> Vec<usize> {
        let mut rest = cno;
        let mut d = vec![0; self.ranges.len()];
        for (slot, r) in d.iter_mut().zip(&self.ranges).rev() {
            *slot = rest % r.values.len();
            rest /= r.values.len();
        }
        d
    }

    /// The Faiss parameter string of combination `cno` (`"nprobe=16,efSearch=64"`;
    /// empty when the space has no parameter).
    pub fn combination_string(&self, cno: usize) -> String {
        self.digits(cno)
            .iter()
            .zip(&self.ranges)
            .map(|(&i, r)| format!("{}={}", r.name, r.values[i]))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Whether every value of `c1` is at least the matching value of `c2`.
    pub fn combination_ge(&self, c1: usize, c2: usize) -> bool {
        self.digits(c1)
            .iter()
            .zip(self.digits(c2))
            .all(|(a, b)| *a >= b)
    }

    /// Runs the combinations (see the module documentation), calling `on_run` after
    /// each search with the point just measured, and returns every measured point with
    /// the Pareto frontier.
    ///
    /// # Errors
    /// A search error, a criterion that does not fit the ground truth, queries that do
    /// not match the ground truth.
    pub fn explore(
        &self,
        index: &dyn Index,
        queries: VectorsRef<'_>,
        criterion: &Criterion,
        gt: &GroundTruth,
        opts: &ExploreOptions,
        mut on_run: impl FnMut(&OperatingPoint),
    ) -> Result<OperatingPoints> {
        if queries.len() != gt.nq() {
            return Err(Error::invalid_param(
                "ground truth",
                format!("{} rows for {} queries", gt.nq(), queries.len()),
            ));
        }
        if criterion.gt_k() > gt.k() {
            return Err(Error::invalid_param(
                "criterion",
                format!(
                    "{criterion} needs {} true neighbours per query, the ground truth has {}",
                    criterion.gt_k(),
                    gt.k()
                ),
            ));
        }
        let k = criterion.k();
        if k > index.len() {
            return Err(Error::invalid_param(
                "criterion",
                format!(
                    "{criterion} needs {k} results but the index holds {} vectors",
                    index.len()
                ),
            ));
        }
        let started = Instant::now();
        let n = self.n_combinations();
        // The most expensive first (it bounds every accuracy), then cheapest first.
        let mut order: Vec<usize> = (0..n.saturating_sub(1)).collect();
        order.sort_by_key(|&c| (self.digits(c).iter().sum::<usize>(), c));
        order.insert(0, n - 1);

        let mut ops = OperatingPoints::new();
        for cno in order {
            if opts.budget.is_some_and(|b| started.elapsed() >= b) && !ops.all.is_empty() {
                ops.truncated = true;
                break;
            }
            let mut upper_perf = 1.0f64;
            let mut lower_t = 0.0f64;
            for p in &ops.all {
                if self.combination_ge(p.cno, cno) {
                    upper_perf = upper_perf.min(p.perf);
                }
                if self.combination_ge(cno, p.cno) {
                    lower_t = lower_t.max(p.time_s);
                }
            }
            if ops.t_for_perf(upper_perf) <= lower_t {
                ops.skipped += 1;
                continue;
            }
            let params_str = self.combination_string(cno);
            let params = SearchParams::parse(&params_str)?;
            let (time_s, res) = timed_search(index, queries, k, &params, opts)?;
            let point = OperatingPoint {
                cno,
                params: params_str,
                perf: criterion.evaluate(&res, gt)?,
                time_s,
                nq: queries.len(),
                results: res,
            };
            on_run(&point);
            ops.add(point);
        }
        Ok(ops)
    }
}

/// Appends the ranges of `spec`'s parameters, names prefixed by `prefix`.
fn ranges_of(spec: &FactorySpec, prefix: &str, k: usize, out: &mut Vec<ParameterRange>) {
    let mut push = |name: &str, values: Vec<String>| {
        out.push(ParameterRange {
            name: format!("{prefix}{name}"),
            values,
        })
    };
    match spec {
        FactorySpec::IdMap { inner, .. } | FactorySpec::PreTransform { inner, .. } => {
            ranges_of(inner, prefix, k, out);
        }
        FactorySpec::Refine { base, .. } => {
            ranges_of(base, prefix, k, out);
            // A refinement of a refinement: `k_factor_rf` reaches the outer one only.
            let name = format!("{prefix}k_factor_rf");
            out.retain(|r| r.name != name);
            out.push(ParameterRange {
                name,
                values: powers(1, 64),
            });
        }
        FactorySpec::Codes(_) => {}
        FactorySpec::Hnsw { .. } => push("efSearch", ef_range(k)),
        FactorySpec::Ivf { coarse, .. } => match coarse {
            CoarseSpec::Ivf { nlist } => push("nprobe", nprobe_range(*nlist)),
            CoarseSpec::Imi { bits } => {
                let nlist = 1usize.checked_shl(2 * *bits as u32).unwrap_or(usize::MAX);
                push("nprobe", nprobe_range(nlist));
                let mut mc = powers(1 << 8, 1 << 19);
                mc.push("0".to_string()); // no limit
                push("max_codes", mc);
            }
            CoarseSpec::IvfHnsw { nlist, .. } => {
                push("nprobe", nprobe_range(*nlist));
                push("quantizer_efSearch", ef_range(1));
            }
            CoarseSpec::IvfIndex { nlist, quantizer } => {
                push("nprobe", nprobe_range(*nlist));
                ranges_of(quantizer, &format!("{prefix}quantizer_"), 1, out);
            }
        },
    }
}

/// Runs one search, then repeats it until `min_test_s` has passed (or `max_repeats`);
/// returns the fastest time and the results.
fn timed_search(
    index: &dyn Index,
    queries: VectorsRef<'_>,
    k: usize,
    params: &SearchParams<'_>,
    opts: &ExploreOptions,
) -> Result<(f64, SearchResults)> {
    let t0 = Instant::now();
    let mut res = index.search(queries, k, params)?;
    let mut best = t0.elapsed().as_secs_f64();
    let mut total = best;
    let mut runs = 1;
    while total < opts.min_test_s && runs < opts.max_repeats.max(1) {
        let t = Instant::now();
        res = index.search(queries, k, params)?;
        let s = t.elapsed().as_secs_f64();
        best = best.min(s);
        total += s;
        runs += 1;
    }
    Ok((best, res))
}

/// Options of [`ParameterSpace::explore`].
#[derive(Clone, Debug)]
pub struct ExploreOptions {
    /// Stop starting new combinations after this long (the points measured so far are
    /// kept; [`OperatingPoints::truncated`] says so). `None`: no limit.
    pub budget: Option<Duration>,
    /// Repeat each search until this many seconds have passed (Faiss's
    /// `min_test_duration`); the fastest run is timed.
    pub min_test_s: f64,
    /// At most this many runs per combination.
    pub max_repeats: usize,
}

impl Default for ExploreOptions {
    fn default() -> Self {
        ExploreOptions {
            budget: None,
            min_test_s: 0.2,
            max_repeats: 5,
        }
    }
}

/// One measured combination.
#[derive(Clone, Debug)]
pub struct OperatingPoint {
    /// Combination number in its [`ParameterSpace`].
    pub cno: usize,
    /// Its parameter string.
    pub params: String,
    /// The criterion's value.
    pub perf: f64,
    /// Seconds for all queries (fastest run).
    pub time_s: f64,
    /// Queries searched.
    pub nq: usize,
    /// The search's results (for further recalls).
    pub results: SearchResults,
}

impl OperatingPoint {
    /// Queries per second.
    pub fn qps(&self) -> f64 {
        self.nq as f64 / self.time_s.max(f64::MIN_POSITIVE)
    }
}

/// Every measured point and the Pareto-optimal ones (Faiss's `OperatingPoints`).
#[derive(Clone, Debug, Default)]
pub struct OperatingPoints {
    all: Vec<OperatingPoint>,
    /// Indices into `all`, by increasing perf and strictly increasing time.
    optimal: Vec<usize>,
    skipped: usize,
    truncated: bool,
}

impl OperatingPoints {
    /// No points.
    pub fn new() -> OperatingPoints {
        OperatingPoints::default()
    }

    /// Adds a point; returns whether it is on the frontier (no other point is at least
    /// as accurate and at least as fast, with one of the two strictly).
    pub fn add(&mut self, p: OperatingPoint) -> bool {
        let dominated = self.optimal.iter().any(|&i| {
            let q = &self.all[i];
            q.perf >= p.perf && q.time_s <= p.time_s && (q.perf > p.perf || q.time_s < p.time_s)
        });
        let i = self.all.len();
        let (perf, t) = (p.perf, p.time_s);
        self.all.push(p);
        if dominated {
            return false;
        }
        let all = &self.all;
        self.optimal
            .retain(|&j| !(perf >= all[j].perf && t <= all[j].time_s));
        self.optimal.push(i);
        self.optimal.sort_by(|&a, &b| {
            all[a]
                .perf
                .total_cmp(&all[b].perf)
                .then(all[a].time_s.total_cmp(&all[b].time_s))
        });
        true
    }

    /// The least time of a frontier point reaching `perf` (infinity if none does; 0 for
    /// `perf <= 0`).
    pub fn t_for_perf(&self, perf: f64) -> f64 {
        if perf <= 0.0 {
            return 0.0;
        }
        self.optimal
            .iter()
            .map(|&i| &self.all[i])
            .filter(|p| p.perf >= perf)
            .map(|p| p.time_s)
            .fold(f64::INFINITY, f64::min)
    }

    /// Every measured point, in the order run.
    pub fn all(&self) -> &[OperatingPoint] {
        &self.all
    }

    /// The Pareto frontier, by increasing perf (and time).
    pub fn optimal(&self) -> impl Iterator<Item = &OperatingPoint> {
        self.optimal.iter().map(|&i| &self.all[i])
    }

    /// The fastest measured point whose perf is at least `target`.
    pub fn fastest_reaching(&self, target: f64) -> Option<&OperatingPoint> {
        self.optimal()
            .filter(|p| p.perf >= target)
            .min_by(|a, b| a.time_s.total_cmp(&b.time_s))
    }

    /// Combinations skipped because the frontier already dominated them.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// Whether the time budget ended the exploration early.
    pub fn truncated(&self) -> bool {
        self.truncated
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pt(cno: usize, perf: f64, time_s: f64) -> OperatingPoint {
        OperatingPoint {
            cno,
            params: String::new(),
            perf,
            time_s,
            nq: 1,
            results: SearchResults::new(0, 0, vq_core::Metric::L2),
        }
    }

    #[test]
    fn criteria_parse() {
        assert_eq!(
            "1-recall@1".parse::<Criterion>().unwrap(),
            Criterion::OneRecallAt(1)
        );
        assert_eq!(
            "R@10".parse::<Criterion>().unwrap(),
            Criterion::OneRecallAt(10)
        );
        assert_eq!(
            "10-recall@10".parse::<Criterion>().unwrap(),
            Criterion::Intersection { n: 10, r: 10 }
        );
        assert_eq!(
            "10-R@100".parse::<Criterion>().unwrap(),
            Criterion::Intersection { n: 10, r: 100 }
        );
        for bad in [
            "",
            "recall",
            "10-recall@5",
            "0-recall@1",
            "1-recall@0",
            "x@3",
            "1-recall@-1",
        ] {
            assert!(bad.parse::<Criterion>().is_err(), "{bad}");
        }
        assert_eq!(
            Criterion::Intersection { n: 10, r: 10 }.to_string(),
            "10-recall@10"
        );
    }

    #[test]
    fn criterion_values() {
        let gt = GroundTruth::new(vec![1, 2, 3, 4, 5, 6], 3).unwrap();
        let res = SearchResults::from_parts(2, 3, vec![0.0; 6], vec![9, 1, 3, 6, 5, 4]).unwrap();
        assert_eq!(Criterion::OneRecallAt(1).evaluate(&res, &gt).unwrap(), 0.0);
        assert_eq!(Criterion::OneRecallAt(2).evaluate(&res, &gt).unwrap(), 0.5);
        assert_eq!(Criterion::OneRecallAt(3).evaluate(&res, &gt).unwrap(), 1.0);
        let c = Criterion::Intersection { n: 3, r: 3 };
        assert!((c.evaluate(&res, &gt).unwrap() - 5.0 / 6.0).abs() < 1e-12);
        assert!(Criterion::OneRecallAt(4).evaluate(&res, &gt).is_err());
    }

    #[test]
    fn ranges_follow_the_spec() {
        let sp = |s: &str| {
            let mut r = Vec::new();
            ranges_of(&FactorySpec::parse(s).unwrap(), "", 10, &mut r);
            r.into_iter()
                .map(|r| format!("{}:{}", r.name, r.values.join("/")))
                .collect::<Vec<_>>()
        };
        assert_eq!(sp("IVF16,Flat"), ["nprobe:1/2/4/8/16"]);
        assert_eq!(sp("IVF10,Flat"), ["nprobe:1/2/4/8/10"]);
        assert_eq!(sp("HNSW32"), ["efSearch:16/32/64/128/256/512"]);
        assert_eq!(
            sp("IVF64_HNSW32,PQ8,RFlat"),
            [
                "nprobe:1/2/4/8/16/32/64",
                "quantizer_efSearch:4/8/16/32/64/128/256/512",
                "k_factor_rf:1/2/4/8/16/32/64"
            ]
        );
        assert_eq!(
            sp("IVF16(HNSW8),Flat"),
            [
                "nprobe:1/2/4/8/16",
                "quantizer_efSearch:4/8/16/32/64/128/256/512"
            ]
        );
        let imi = sp("IMI2x4,PQ8");
        assert_eq!(imi[0], "nprobe:1/2/4/8/16/32/64/128/256");
        assert!(imi[1].starts_with("max_codes:256/512/") && imi[1].ends_with("/524288/0"));
        assert!(sp("PQ8").is_empty());
        assert_eq!(sp("PCA16,IDMap,Flat").len(), 0);
    }

    #[test]
    fn combinations_are_mixed_radix() {
        let s = ParameterSpace::new(vec![
            ParameterRange {
                name: "nprobe".into(),
                values: vec!["1".into(), "2".into()],
            },
            ParameterRange {
                name: "k_factor_rf".into(),
                values: vec!["1".into(), "4".into(), "8".into()],
            },
        ])
        .unwrap();
        assert_eq!(s.n_combinations(), 6);
        assert_eq!(s.digits(4), [1, 1]);
        assert_eq!(s.combination_string(5), "nprobe=2,k_factor_rf=8");
        assert!(s.combination_ge(5, 0) && s.combination_ge(4, 3) && !s.combination_ge(2, 3));
        assert!(
            ParameterSpace::new(vec![ParameterRange {
                name: "a".into(),
                values: vec![]
            }])
            .is_err()
        );
    }

    #[test]
    fn frontier_keeps_only_non_dominated_points() {
        let mut ops = OperatingPoints::new();
        assert!(ops.add(pt(0, 0.5, 1.0)));
        assert!(ops.add(pt(1, 0.9, 2.0)));
        assert!(!ops.add(pt(2, 0.8, 3.0))); // slower and worse than (0.9, 2.0)
        assert!(ops.add(pt(3, 0.6, 0.5))); // dominates (0.5, 1.0)
        let f: Vec<usize> = ops.optimal().map(|p| p.cno).collect();
        assert_eq!(f, [3, 1]);
        assert_eq!(ops.t_for_perf(0.7), 2.0);
        assert_eq!(ops.t_for_perf(0.95), f64::INFINITY);
        assert_eq!(ops.fastest_reaching(0.6).unwrap().cno, 3);
        assert_eq!(ops.all().len(), 4);
    }
}
