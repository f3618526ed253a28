//! Recall measures and ground truth, with Faiss's definitions.

use crate::error::{Error, Result};
use crate::io::Matrix;
use crate::results::{RangeSearchResults, SearchResults};
use crate::vectors::{Label, NO_LABEL};

/// The true nearest neighbours of each query: `nq × k` ids, nearest first.
#[derive(Clone, Debug, PartialEq)]
pub struct GroundTruth {
    ids: Vec<Label>,
    k: usize,
}

impl GroundTruth {
    /// Ground truth from row-major ids.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for `k == 0` or ids that are not whole rows.
    pub fn new(ids: Vec<Label>, k: usize) -> Result<GroundTruth> {
        if k == 0 || !ids.len().is_multiple_of(k) {
            return Err(Error::invalid_param(
                "ground truth",
                format!("{} ids do not make rows of {k}", ids.len()),
            ));
        }
        Ok(GroundTruth { ids, k })
    }

    /// Ground truth from an `.ivecs` file's contents.
    pub fn from_ivecs(m: &Matrix<i32>) -> GroundTruth {
        GroundTruth {
            ids: m.as_slice().iter().map(|&x| x as Label).collect(),
            k: m.dim(),
        }
    }

    /// Ground truth from exact search results.
    pub fn from_results(r: &SearchResults) -> GroundTruth {
        GroundTruth {
            ids: r.labels().to_vec(),
            k: r.k(),
        }
    }

    /// Number of queries.
    pub fn nq(&self) -> usize {
        // `from_ivecs` / `from_results` of an empty matrix give k = 0: no queries.
        self.ids.len().checked_div(self.k).unwrap_or(0)
    }

    /// Neighbours per query.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Query `i`'s ids.
    pub fn row(&self, i: usize) -> &[Label] {
        &self.ids[i * self.k..(i + 1) * self.k]
    }

    /// All ids as `i32` (for `.ivecs`), or an error if one does not fit.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for an id beyond `i32`.
    pub fn to_i32(&self) -> Result<Vec<i32>> {
        self.ids
            .iter()
            .map(|&x| {
                i32::try_from(x)
                    .map_err(|_| Error::invalid_param("ids", format!("{x} does not fit i32")))
            })
            .collect()
    }
}

fn check(res: &SearchResults, gt: &GroundTruth, at: usize) -> Result<()> {
    if res.nq() != gt.nq() {
        return Err(Error::LengthMismatch {
            what: "queries in results vs ground truth",
            expected: gt.nq(),
            got: res.nq(),
        });
    }
    if at == 0 || at > res.k() || at > gt.k() {
        return Err(Error::invalid_param(
            "recall",
            format!(
                "cannot measure at {at} with k = {} and ground truth of {}",
                res.k(),
                gt.k()
            ),
        ));
    }
    Ok(())
}

/// Faiss's 1-recall@1: the fraction of queries whose first result is the true nearest
/// neighbour.
///
/// # Errors
/// Query counts that differ; empty results.
pub fn recall_at_1(res: &SearchResults, gt: &GroundTruth) -> Result<f64> {
    check(res, gt, 1)?;
    let nq = res.nq().max(1);
    let hits = (0..res.nq())
        .filter(|&i| res.row(i).1[0] == gt.row(i)[0])
        .count();
    Ok(hits as f64 / nq as f64)
}

/// The `at`-intersection recall (`10-recall@10` for `at = 10`): the mean fraction of the
/// true `at` nearest neighbours found among the first `at` results.
///
/// # Errors
/// Query counts that differ; `at` larger than either `k`.
pub fn intersection_recall(res: &SearchResults, gt: &GroundTruth, at: usize) -> Result<f64> {
    check(res, gt, at)?;
    let mut total = 0usize;
    for i in 0..res.nq() {
        let truth = &gt.row(i)[..at];
        let found = &res.row(i).1[..at];
        // Distinct true neighbours found: a result id repeated (an id map allows it)
        // counts once, as in Faiss's `ranklist_intersection_size`.
        total += truth
            .iter()
            .enumerate()
            .filter(|&(j, t)| *t != NO_LABEL && !truth[..j].contains(t) && found.contains(t))
            .count();
    }
    Ok(total as f64 / (res.nq().max(1) * at) as f64)
}

/// Faiss's `1-recall@r`: the fraction of queries whose true nearest neighbour appears
/// among the first `r` results.
///
/// # Errors
/// Query counts that differ; `r` larger than the results' `k`.
pub fn recall_1_at_r(res: &SearchResults, gt: &GroundTruth, r: usize) -> Result<f64> {
    check(res, gt, 1)?;
    if r == 0 || r > res.k() {
        return Err(Error::invalid_param(
            "r",
            format!("must be in 1..={}", res.k()),
        ));
    }
    let hits = (0..res.nq())
        .filter(|&i| res.row(i).1[..r].contains(&gt.row(i)[0]))
        .count();
    Ok(hits as f64 / res.nq().max(1) as f64)
}

/// Precision and recall of a range search against the exact hits, pooled over the
/// queries (as Faiss's `range_PR` with exact distances): `found` true hits reported
/// (each id counted once per query), out of `reported` distinct ids and `truth` true
/// hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeMatch {
    /// Distinct ids reported, summed over queries.
    pub reported: usize,
    /// True hits (exact search's ids), summed over queries.
    pub truth: usize,
    /// True hits among the reported ids, summed over queries.
    pub found: usize,
}

impl RangeMatch {
    /// Compares `res` with the exact hits `truth` of the same queries.
    ///
    /// # Errors
    /// Query counts that differ.
    pub fn new(res: &RangeSearchResults, truth: &RangeSearchResults) -> Result<RangeMatch> {
        if res.nq() != truth.nq() {
            return Err(Error::LengthMismatch {
                what: "range-search results (queries)",
                expected: truth.nq(),
                got: res.nq(),
            });
        }
        let mut m = RangeMatch {
            reported: 0,
            truth: 0,
            found: 0,
        };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for i in 0..res.nq() {
            a.clear();
            a.extend_from_slice(res.row(i).1);
            a.sort_unstable();
            a.dedup();
            b.clear();
            b.extend_from_slice(truth.row(i).1);
            b.sort_unstable();
            b.dedup();
            m.reported += a.len();
            m.truth += b.len();
            m.found += a.iter().filter(|id| b.binary_search(id).is_ok()).count();
        }
        Ok(m)
    }

    /// The fraction of true hits reported; `None` when there are none to find.
    pub fn recall(&self) -> Option<f64> {
        (self.truth > 0).then(|| self.found as f64 / self.truth as f64)
    }

    /// The fraction of reported ids that are true hits; `None` when nothing was reported.
    pub fn precision(&self) -> Option<f64> {
        (self.reported > 0).then(|| self.found as f64 / self.reported as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Metric;

    #[test]
    fn recalls() {
        let gt = GroundTruth::new(vec![1, 2, 3, 4, 5, 6], 3).unwrap();
        let res = SearchResults::from_parts(2, 3, vec![0.0; 6], vec![1, 3, 9, 6, 5, 4]).unwrap();
        assert_eq!(recall_at_1(&res, &gt).unwrap(), 0.5);
        assert!((intersection_recall(&res, &gt, 3).unwrap() - 5.0 / 6.0).abs() < 1e-12);
        assert_eq!(recall_1_at_r(&res, &gt, 3).unwrap(), 1.0);
        assert!(intersection_recall(&res, &gt, 4).is_err());
        let other = SearchResults::new(1, 3, Metric::L2);
        assert!(recall_at_1(&other, &gt).is_err());
        assert!(GroundTruth::new(vec![1, 2, 3], 2).is_err());
    }

    #[test]
    fn range_precision_and_recall() {
        let m = Metric::L2;
        let truth = RangeSearchResults::from_lists(
            vec![vec![(0.1, 1), (0.2, 2), (0.3, 3)], vec![], vec![(0.5, 7)]],
            m,
        );
        // Query 0: 2 of 3 found, one false hit, a repeated id counted once; query 1:
        // a false hit where there is none; query 2: nothing reported.
        let res = RangeSearchResults::from_lists(
            vec![
                vec![(0.1, 1), (0.1, 1), (0.25, 9), (0.3, 3)],
                vec![(0.4, 4)],
                vec![],
            ],
            m,
        );
        let pr = RangeMatch::new(&res, &truth).unwrap();
        assert_eq!(
            pr,
            RangeMatch {
                reported: 4,
                truth: 4,
                found: 2
            }
        );
        assert_eq!((pr.recall(), pr.precision()), (Some(0.5), Some(0.5)));
        let none = RangeSearchResults::from_lists(vec![vec![]; 3], m);
        let pr = RangeMatch::new(&none, &none).unwrap();
        assert_eq!((pr.recall(), pr.precision()), (None, None));
        let short = RangeSearchResults::from_lists(vec![vec![]; 2], m);
        assert!(RangeMatch::new(&short, &truth).is_err());
    }
}
