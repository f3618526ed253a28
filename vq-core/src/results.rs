//! Result containers for k-NN and range search, in Faiss's layouts.

use rayon::prelude::*;

use crate::metric::Metric;
use crate::vectors::{Label, NO_LABEL};

/// The `k` nearest neighbours of each of `nq` queries, row-major (`nq × k`).
///
/// Row `i` holds query `i`'s neighbours, best first. Where fewer than `k` neighbours
/// exist (a filter removed candidates, an approximate index visited too few), the row is
/// padded with label [`NO_LABEL`] (`-1`) and distance [`Metric::worst`].
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SearchResults {
    nq: usize,
    k: usize,
    distances: Vec<f32>,
    labels: Vec<Label>,
}

impl SearchResults {
    /// `nq × k` results, all padding.
    pub fn new(nq: usize, k: usize, metric: Metric) -> SearchResults {
        SearchResults {
            nq,
            k,
            distances: vec![metric.worst(); nq * k],
            labels: vec![NO_LABEL; nq * k],
        }
    }

    /// Builds results from row-major buffers of `nq × k` values each.
    ///
    /// # Errors
    /// [`crate::Error::LengthMismatch`] if a buffer is not `nq * k` long.
    pub fn from_parts(
        nq: usize,
        k: usize,
        distances: Vec<f32>,
        labels: Vec<Label>,
    ) -> crate::Result<SearchResults> {
        for (what, len) in [("distances", distances.len()), ("labels", labels.len())] {
            if len != nq * k {
                return Err(crate::Error::LengthMismatch {
                    what,
                    expected: nq * k,
                    got: len,
                });
            }
        }
        Ok(SearchResults {
            nq,
            k,
            distances,
            labels,
        })
    }

    /// Resizes to `nq × k` and fills with padding, reusing the allocation.
    pub fn reset(&mut self, nq: usize, k: usize, metric: Metric) {
        self.nq = nq;
        self.k = k;
        self.distances.clear();
        self.distances.resize(nq * k, metric.worst());
        self.labels.clear();
        self.labels.resize(nq * k, NO_LABEL);
    }

    /// Number of queries.
    pub fn nq(&self) -> usize {
        self.nq
    }

    /// Neighbours per query.
    pub fn k(&self) -> usize {
        self.k
    }

    /// All distances, row-major.
    pub fn distances(&self) -> &[f32] {
        &self.distances
    }

    /// All labels, row-major.
    pub fn labels(&self) -> &[Label] {
        &self.labels
    }

    /// Mutable access to both buffers (for indexes writing results and for id mapping).
    pub fn parts_mut(&mut self) -> (&mut [f32], &mut [Label]) {
        (&mut self.distances, &mut self.labels)
    }

    /// Distances and labels of query `i`.
    ///
    /// # Panics
    /// If `i >= nq()`.
    pub fn row(&self, i: usize) -> (&[f32], &[Label]) {
        let r = i * self.k..(i + 1) * self.k;
        (&self.distances[r.clone()], &self.labels[r])
    }

    /// Mutable distances and labels of query `i`.
    ///
    /// # Panics
    /// If `i >= nq()`.
    pub fn row_mut(&mut self, i: usize) -> (&mut [f32], &mut [Label]) {
        let r = i * self.k..(i + 1) * self.k;
        (&mut self.distances[r.clone()], &mut self.labels[r])
    }

    /// Gives back `(distances, labels)`.
    pub fn into_parts(self) -> (Vec<f32>, Vec<Label>) {
        (self.distances, self.labels)
    }
}

/// Range-search results in Faiss's layout: query `i`'s hits are
/// `labels[lims[i]..lims[i + 1]]` with matching `distances`. Within a query, hits are
/// sorted best first (ties by label), which Faiss does not guarantee but we do.
#[derive(Clone, Debug, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RangeSearchResults {
    lims: Vec<usize>,
    labels: Vec<Label>,
    distances: Vec<f32>,
}

impl RangeSearchResults {
    /// Builds results from per-query hit lists (each `(distance, label)`, any order);
    /// every list is sorted best first under `metric`.
    pub fn from_lists(mut lists: Vec<Vec<(f32, Label)>>, metric: Metric) -> RangeSearchResults {
        let mut lims = Vec::with_capacity(lists.len() + 1);
        lims.push(0);
        for l in &lists {
            lims.push(lims[lims.len() - 1] + l.len());
        }
        let total = lims[lims.len() - 1];
        let mut labels: Vec<Label> = vec![0; total];
        let mut distances = vec![0f32; total];
        // Each list sorted and written into its own part of the output, in parallel (a
        // search with many hits per query spends a good part of its time here).
        let mut parts = Vec::with_capacity(lists.len());
        let (mut lr, mut dr) = (&mut labels[..], &mut distances[..]);
        for l in &lists {
            let (la, lb) = lr.split_at_mut(l.len());
            let (da, db) = dr.split_at_mut(l.len());
            parts.push((la, da));
            (lr, dr) = (lb, db);
        }
        lists
            .par_iter_mut()
            .zip(parts)
            .with_min_len(64)
            .for_each(|(l, (ls, ds))| {
                l.sort_unstable_by(|a, b| {
                    metric
                        .to_key(a.0)
                        .total_cmp(&metric.to_key(b.0))
                        .then(a.1.cmp(&b.1))
                });
                for ((&(d, id), lo), dout) in l.iter().zip(ls).zip(ds) {
                    *dout = d;
                    *lo = id;
                }
            });
        RangeSearchResults {
            lims,
            labels,
            distances,
        }
    }

    /// Number of queries.
    pub fn nq(&self) -> usize {
        self.lims.len().saturating_sub(1)
    }

    /// Offsets: query `i`'s hits are at `lims[i]..lims[i + 1]` (`nq + 1` values).
    pub fn lims(&self) -> &[usize] {
        &self.lims
    }

    /// All hit labels.
    pub fn labels(&self) -> &[Label] {
        &self.labels
    }

    /// All hit distances.
    pub fn distances(&self) -> &[f32] {
        &self.distances
    }

    /// Mutable labels (for id mapping).
    pub fn labels_mut(&mut self) -> &mut [Label] {
        &mut self.labels
    }

    /// Distances and labels of query `i`.
    ///
    /// # Panics
    /// If `i >= nq()`.
    pub fn row(&self, i: usize) -> (&[f32], &[Label]) {
        let r = self.lims[i]..self.lims[i + 1];
        (&self.distances[r.clone()], &self.labels[r])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_and_padding() {
        let mut r = SearchResults::new(2, 3, Metric::InnerProduct);
        assert_eq!(r.row(1).1, &[-1, -1, -1]);
        r.row_mut(1).1[0] = 7;
        assert_eq!(r.labels()[3], 7);
        assert!(SearchResults::from_parts(2, 2, vec![0.0; 4], vec![0; 3]).is_err());
        let rr = RangeSearchResults::from_lists(
            vec![vec![(3.0, 1), (1.0, 2)], vec![], vec![(0.5, 4)]],
            Metric::L2,
        );
        assert_eq!(rr.lims(), &[0, 2, 2, 3]);
        assert_eq!(rr.row(0).1, &[2, 1]);
        assert_eq!(rr.nq(), 3);
    }
}
