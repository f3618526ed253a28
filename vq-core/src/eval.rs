//! Recall measures and ground truth, with Faiss's definitions.

use crate::error::{Error, Result};
use crate::io::Matrix;
use crate::results::SearchResults;
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
}
