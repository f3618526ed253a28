//! Re-ranking: a fast index proposes candidates, a more exact one orders them (Faiss's
//! `IndexRefine`, factory suffixes `RFlat` and `Refine(...)`).

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::index::{Index, check_range_search, check_search};
use crate::metric::Metric;
use crate::params::SearchParams;
use crate::persist::{StateReader, StateWriter};
use crate::results::{RangeSearchResults, SearchResults};
use crate::selector::IdFilter;
use crate::vectors::{Label, NO_LABEL, VectorsRef};

/// Searches `base` for `k_factor × k` candidates, then re-ranks them by their distance to
/// the query as stored in `refine` (exact for an [`crate::IndexFlat`], decoded for a
/// compressed index) and keeps the best `k`.
///
/// Both indexes receive every added vector, so a candidate's id is its position in
/// `refine`. `k_factor` (Faiss's `k_factor_rf` parameter, default 1) is set per call
/// ([`SearchParams::k_factor`]) or as a default ([`Index::set_search_param`]).
///
/// ```
/// use vq_core::{Index, IndexFlat, IndexRefine, Metric, SearchParams, VectorsRef};
/// let base = IndexFlat::new(2, Metric::L2)?;
/// let exact = IndexFlat::new(2, Metric::L2)?;
/// let mut index = IndexRefine::new(Box::new(base), Box::new(exact))?;
/// index.add(VectorsRef::new(&[0.0, 0.0, 1.0, 0.0, 5.0, 5.0], 2)?)?;
/// let p = SearchParams::parse("k_factor_rf=2")?;
/// let res = index.search(VectorsRef::new(&[0.9, 0.1], 2)?, 1, &p)?;
/// assert_eq!(res.row(0).1, &[1]);
/// # Ok::<(), vq_core::Error>(())
/// ```
#[derive(Debug)]
pub struct IndexRefine {
    base: Box<dyn Index>,
    refine: Box<dyn Index>,
    k_factor: f32,
}

impl IndexRefine {
    /// Re-ranks `base`'s candidates with `refine`. Both must be empty, of the same
    /// dimension and metric.
    ///
    /// # Errors
    /// Different dimensions or metrics, or a non-empty index.
    pub fn new(base: Box<dyn Index>, refine: Box<dyn Index>) -> Result<IndexRefine> {
        if base.dim() != refine.dim() {
            return Err(Error::DimensionMismatch {
                expected: base.dim(),
                got: refine.dim(),
            });
        }
        if base.metric() != refine.metric() {
            return Err(Error::invalid_param(
                "metric",
                "the base and refine indexes must use the same metric",
            ));
        }
        if !base.is_empty() || !refine.is_empty() {
            return Err(Error::invalid_param(
                "index",
                "IndexRefine must wrap empty indexes",
            ));
        }
        Ok(IndexRefine {
            base,
            refine,
            k_factor: 1.0,
        })
    }

    /// The candidate index.
    pub fn base(&self) -> &dyn Index {
        &*self.base
    }

    /// The re-ranking index.
    pub fn refine(&self) -> &dyn Index {
        &*self.refine
    }

    /// The default `k_factor`.
    pub fn k_factor(&self) -> f32 {
        self.k_factor
    }

    /// Sets the default `k_factor` (at least 1).
    ///
    /// # Errors
    /// A value below 1 or not finite.
    pub fn set_k_factor(&mut self, k_factor: f32) -> Result<()> {
        if !(k_factor.is_finite() && k_factor >= 1.0) {
            return Err(Error::invalid_param("k_factor_rf", "must be a number >= 1"));
        }
        self.k_factor = k_factor;
        Ok(())
    }
}

impl Index for IndexRefine {
    fn dim(&self) -> usize {
        self.base.dim()
    }
    fn metric(&self) -> Metric {
        self.base.metric()
    }
    fn len(&self) -> usize {
        self.base.len()
    }
    fn describe(&self) -> String {
        format!(
            "IndexRefine({}, {})",
            self.base.describe(),
            self.refine.describe()
        )
    }
    fn is_trained(&self) -> bool {
        self.base.is_trained() && self.refine.is_trained()
    }
    fn train(&mut self, x: VectorsRef<'_>) -> Result<()> {
        self.base.train(x)?;
        self.refine.train(x)
    }
    fn add(&mut self, x: VectorsRef<'_>) -> Result<()> {
        if !self.refine.is_trained() {
            return Err(Error::NotTrained {
                what: self.refine.describe(),
            });
        }
        // Both check the same things (dimension, finite values): validate first so that
        // the second add cannot fail after the first succeeded.
        x.check_dim(self.dim())?;
        x.check_finite()?;
        // The refinement first: it is usually flat storage, which renumbers when its
        // tail is removed. Should the base then fail, the batch comes back out of the
        // refinement (positions n0.., its ids: an IndexRefine never removes). A base
        // that keeps ids after removals (a graph) would otherwise number later adds past
        // the batch it gave back, and a candidate's id would no longer be its position
        // in the refinement.
        let n0 = self.refine.len();
        self.refine.add(x)?;
        if let Err(e) = self.base.add(x) {
            let end = (n0 + x.len()) as Label;
            let back = self
                .refine
                .remove_ids(&crate::IdSelector::range(n0 as Label, end));
            // Should that fail too, both are left empty rather than of different sizes.
            if !back.is_ok_and(|r| r == x.len()) || self.base.len() != self.refine.len() {
                self.reset();
            }
            return Err(e);
        }
        Ok(())
    }
    fn search_into(
        &self,
        queries: VectorsRef<'_>,
        k: usize,
        params: &SearchParams<'_>,
        out: &mut SearchResults,
    ) -> Result<()> {
        check_search(self, queries, k)?;
        let kf = params.k_factor.unwrap_or(self.k_factor).max(1.0);
        let kb = ((k as f64 * kf as f64).ceil() as usize).clamp(k, self.base.len());
        // The candidates are re-ranked below: the base may rank them approximately.
        let base_params = params.clone().with_approximate(true);
        let cand = self.base.search(queries, kb, &base_params)?;
        let metric = self.metric();
        out.reset(queries.len(), k, metric);
        let (od, ol) = out.parts_mut();
        od.par_chunks_mut(k)
            .zip(ol.par_chunks_mut(k))
            .enumerate()
            .try_for_each_init(
                || (Vec::with_capacity(kb), Vec::with_capacity(kb)),
                |(dis, scored): &mut (Vec<f32>, Vec<(f32, Label)>),
                 (i, (dist, lab))|
                 -> Result<()> {
                    let ids = cand.row(i).1;
                    dis.resize(ids.len(), 0.0);
                    self.refine.distances_to(queries.row(i), ids, dis)?;
                    scored.clear();
                    scored.extend(
                        dis.iter()
                            .zip(ids)
                            .filter(|&(_, &l)| l != NO_LABEL)
                            .map(|(&s, &l)| (s, l)),
                    );
                    let order = |a: &(f32, Label), b: &(f32, Label)| {
                        let (x, y) = (metric.to_key(a.0), metric.to_key(b.0));
                        x.total_cmp(&y).then(a.1.cmp(&b.1))
                    };
                    if scored.len() > k {
                        scored.select_nth_unstable_by(k - 1, order);
                        scored.truncate(k);
                    }
                    scored.sort_unstable_by(order);
                    for (j, &(s, l)) in scored.iter().enumerate() {
                        dist[j] = s;
                        lab[j] = l;
                    }
                    Ok(())
                },
            )
    }
    /// The base's hits within `radius`, each scored again by the refinement and kept
    /// when that distance is within `radius` too: the distances are the refinement's
    /// (exact for `RFlat`), the candidates the base's (a vector whose base distance is
    /// outside the radius is not considered, as a k-NN refinement considers only the
    /// base's `k_factor · k`). Faiss's `IndexRefine` has no range search.
    fn range_search(
        &self,
        queries: VectorsRef<'_>,
        radius: f32,
        params: &SearchParams<'_>,
    ) -> Result<RangeSearchResults> {
        check_range_search(self, queries, radius)?;
        let cand = self.base.range_search(queries, radius, params)?;
        let metric = self.metric();
        let lists = (0..queries.len())
            .into_par_iter()
            .map_init(
                Vec::new,
                |dis: &mut Vec<f32>, i| -> Result<Vec<(f32, Label)>> {
                    let ids = cand.row(i).1;
                    dis.resize(ids.len(), 0.0);
                    self.refine.distances_to(queries.row(i), ids, dis)?;
                    Ok(dis
                        .iter()
                        .zip(ids)
                        .filter(|&(&v, _)| match metric {
                            Metric::L2 => v < radius,
                            Metric::InnerProduct => v > radius,
                        })
                        .map(|(&v, &l)| (v, l))
                        .collect())
                },
            )
            .collect::<Result<Vec<_>>>()?;
        Ok(RangeSearchResults::from_lists(lists, metric))
    }
    fn reset(&mut self) {
        self.base.reset();
        self.refine.reset();
    }
    fn reconstruct_into(&self, id: Label, out: &mut [f32]) -> Result<()> {
        self.refine.reconstruct_into(id, out)
    }
    /// Not supported: the two indexes may number their vectors differently after a
    /// removal (a flat index compacts, a graph keeps its ids), and the refine step
    /// relies on them agreeing (Faiss's `IndexRefine` does not remove either).
    fn remove_ids(&mut self, selector: &dyn IdFilter) -> Result<usize> {
        let _ = selector;
        Err(Error::not_supported(
            "remove_ids",
            format!(
                "{} (rebuild the index without the vectors)",
                self.describe()
            ),
        ))
    }
    fn search_param_names(&self) -> Vec<String> {
        let mut v = self.base.search_param_names();
        // A refined base's own `k_factor_rf` is out of reach (the name sets this one).
        v.retain(|n| n != "k_factor_rf");
        v.push("k_factor_rf".into());
        v
    }
    fn set_search_param(&mut self, name: &str, value: &str) -> Result<()> {
        match name {
            "k_factor_rf" | "k_factor" => match value.parse::<f32>() {
                Ok(v) => self.set_k_factor(v),
                Err(_) => Err(Error::invalid_param(
                    name,
                    format!("`{value}` is not a number"),
                )),
            },
            _ => self.base.set_search_param(name, value),
        }
    }
    fn set_build_param(&mut self, name: &str, value: &str) -> Result<()> {
        self.base.set_build_param(name, value)
    }
    fn bytes_per_vector(&self) -> f64 {
        self.base.bytes_per_vector() + self.refine.bytes_per_vector()
    }
    fn save_state(&self, w: &mut StateWriter<'_>) -> Result<()> {
        w.put_f64("k_factor", self.k_factor as f64)?;
        w.scope("base", |w| self.base.save_state(w))?;
        w.scope("refine", |w| self.refine.save_state(w))
    }
    fn load_state(&mut self, r: &mut StateReader) -> Result<()> {
        let kf = r.get_f64("k_factor")?;
        let old_kf = self.k_factor;
        self.set_k_factor(kf as f32)
            .map_err(|e| r.error("k_factor", e))?;
        // Either index may have loaded before the other failed: empty both on error.
        let loaded = r
            .scope("base", |r| self.base.load_state(r))
            .and_then(|()| r.scope("refine", |r| self.refine.load_state(r)))
            .and_then(|()| {
                if self.base.len() == self.refine.len() {
                    Ok(())
                } else {
                    let (a, b) = (self.base.len(), self.refine.len());
                    Err(r.error("refine", format!("{b} vectors, the base has {a}")))
                }
            });
        if loaded.is_err() {
            self.k_factor = old_kf;
            self.reset();
        }
        loaded
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::IndexFlat;

    #[test]
    fn refining_a_flat_base_changes_nothing_and_padding_survives() {
        let data = crate::synthetic::SyntheticSpec::new(500, 8, 20)
            .generate()
            .unwrap();
        let mut flat = IndexFlat::new(8, Metric::L2).unwrap();
        flat.add(data.base.as_ref()).unwrap();
        let mut r = IndexRefine::new(
            Box::new(IndexFlat::new(8, Metric::L2).unwrap()),
            Box::new(IndexFlat::new(8, Metric::L2).unwrap()),
        )
        .unwrap();
        r.add(data.base.as_ref()).unwrap();
        let p = SearchParams::parse("k_factor_rf=4").unwrap();
        let a = flat.search(data.queries.as_ref(), 5, &p).unwrap();
        let b = r.search(data.queries.as_ref(), 5, &p).unwrap();
        assert_eq!(a.labels(), b.labels());
        assert!(r.set_search_param("k_factor_rf", "0.5").is_err());
        assert!(r.remove_ids(&crate::IdSelector::range(0, 5)).is_err());
        assert_eq!(r.len(), 500);
        assert!(r.set_search_param("nprobe", "2").is_err());
        r.set_search_param("k_factor_rf", "3").unwrap();
        assert_eq!(r.k_factor(), 3.0);
    }
}
