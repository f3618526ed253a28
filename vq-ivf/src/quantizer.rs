//! Coarse quantizers: what an IVF index needs from the index that assigns vectors to
//! lists, and the inverted multi-index quantizer.

use std::collections::{BinaryHeap, HashSet};

use rayon::prelude::*;
use vq_core::persist::{StateReader, StateWriter};
use vq_core::{
    Error, Index, IndexFlat, Label, Metric, Result, SearchParams, SearchResults, VectorsRef,
    check_search,
};
use vq_pq::ProductQuantizer;

/// The coarse quantizer of an [`crate::IndexIvf`]: an [`Index`] whose stored vectors
/// (ids `0..nlist()`) are the list centroids.
///
/// Implemented by [`IndexFlat`] (Faiss's default), [`MultiIndexQuantizer`], and by
/// [`AnyQuantizer`] for any other index (e.g. an HNSW graph over the centroids).
pub trait CoarseQuantizer: Index {
    /// Number of lists (cells).
    fn nlist(&self) -> usize {
        self.len()
    }

    /// The centroid of `list` into `out` (`dim()` values).
    ///
    /// # Errors
    /// `list` out of range, or an index that cannot reconstruct.
    fn centroid_into(&self, list: usize, out: &mut [f32]) -> Result<()> {
        self.reconstruct_into(list as Label, out)
    }

    /// `true` when the quantizer is trained on the data itself (the inverted
    /// multi-index) instead of receiving k-means centroids through `add`.
    fn trains_alone(&self) -> bool {
        false
    }

    /// For a two-part multi-index: the bits per part and the two codebooks
    /// (`2^bits × dim/2` each). List `i + (j << bits)` has centroid `[c0[i], c1[j]]`.
    fn multi_index_parts(&self) -> Option<(usize, &[f32], &[f32])> {
        None
    }
}

impl CoarseQuantizer for IndexFlat {
    fn centroid_into(&self, list: usize, out: &mut [f32]) -> Result<()> {
        let d = self.dim();
        if list >= self.len() || out.len() != d {
            return Err(Error::invalid_param(
                "list",
                format!(
                    "list {list} of {} (or output of {} values)",
                    self.len(),
                    out.len()
                ),
            ));
        }
        out.copy_from_slice(self.vectors().row(list));
        Ok(())
    }
}

impl CoarseQuantizer for Box<dyn CoarseQuantizer> {
    fn nlist(&self) -> usize {
        (**self).nlist()
    }
    fn centroid_into(&self, list: usize, out: &mut [f32]) -> Result<()> {
        (**self).centroid_into(list, out)
    }
    fn trains_alone(&self) -> bool {
        (**self).trains_alone()
    }
    fn multi_index_parts(&self) -> Option<(usize, &[f32], &[f32])> {
        (**self).multi_index_parts()
    }
}

/// Wraps any [`Index`] that can reconstruct its vectors as a coarse quantizer (ids
/// `0..len()` are the lists).
#[derive(Debug)]
pub struct AnyQuantizer<I>(pub I);

impl<I: Index> Index for AnyQuantizer<I> {
    fn dim(&self) -> usize {
        self.0.dim()
    }
    fn metric(&self) -> Metric {
        self.0.metric()
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn add(&mut self, x: VectorsRef<'_>) -> Result<()> {
        self.0.add(x)
    }
    fn search_into(
        &self,
        queries: VectorsRef<'_>,
        k: usize,
        params: &SearchParams<'_>,
        out: &mut SearchResults,
    ) -> Result<()> {
        self.0.search_into(queries, k, params, out)
    }
    fn reset(&mut self) {
        self.0.reset()
    }
    fn describe(&self) -> String {
        self.0.describe()
    }
    fn is_trained(&self) -> bool {
        self.0.is_trained()
    }
    fn train(&mut self, x: VectorsRef<'_>) -> Result<()> {
        self.0.train(x)
    }
    fn reconstruct_into(&self, id: Label, out: &mut [f32]) -> Result<()> {
        self.0.reconstruct_into(id, out)
    }
    fn search_param_names(&self) -> Vec<String> {
        self.0.search_param_names()
    }
    fn set_search_param(&mut self, name: &str, value: &str) -> Result<()> {
        self.0.set_search_param(name, value)
    }
    fn save_state(&self, w: &mut StateWriter<'_>) -> Result<()> {
        self.0.save_state(w)
    }
    fn load_state(&mut self, r: &mut StateReader) -> Result<()> {
        self.0.load_state(r)
    }
}

impl<I: Index> CoarseQuantizer for AnyQuantizer<I> {}

/// The inverted multi-index quantizer `IMI2x<bits>` (Faiss's `MultiIndexQuantizer`):
/// two codebooks of `2^bits` centroids over the two halves of the vector, so
/// `2^(2·bits)` cells. L2 only. Trained alone (a two-part product quantizer, Faiss's
/// defaults); `search` returns the `k` nearest cells in order by the multi-sequence
/// algorithm, without enumerating all cells.
///
/// ```
/// use vq_core::{Index, SearchParams, synthetic::SyntheticSpec};
/// use vq_ivf::MultiIndexQuantizer;
/// let data = SyntheticSpec::new(3_000, 16, 10).generate()?;
/// let mut imi = MultiIndexQuantizer::new(16, 4)?;
/// imi.train(data.base.as_ref())?;
/// assert_eq!(imi.len(), 256);
/// let cells = imi.search(data.queries.as_ref(), 8, &SearchParams::default())?;
/// let d = cells.row(0).0;
/// assert!(d.windows(2).all(|w| w[0] <= w[1]));
/// # Ok::<(), vq_core::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct MultiIndexQuantizer {
    pq: ProductQuantizer,
    bits: usize,
}

impl MultiIndexQuantizer {
    /// `IMI2x<bits>` for vectors of dimension `d` (even), `bits` in `1..=16`.
    ///
    /// # Errors
    /// Odd `d` or `bits` out of range.
    pub fn new(d: usize, bits: usize) -> Result<MultiIndexQuantizer> {
        if !d.is_multiple_of(2) {
            return Err(Error::invalid_param(
                "d",
                format!("IMI2x{bits} splits vectors in two halves: d = {d} must be even"),
            ));
        }
        if !(1..=16).contains(&bits) {
            return Err(Error::invalid_param(
                "bits",
                format!("IMI2x{bits}: bits per half must be 1 to 16"),
            ));
        }
        Ok(MultiIndexQuantizer {
            pq: ProductQuantizer::new(d, 2, bits)?,
            bits,
        })
    }

    /// Bits per half.
    pub fn bits(&self) -> usize {
        self.bits
    }

    /// The two-part product quantizer holding the codebooks.
    pub fn product_quantizer(&self) -> &ProductQuantizer {
        &self.pq
    }

    fn ksub(&self) -> usize {
        1 << self.bits
    }

    /// The `k` nearest cells of one query: distances to both codebooks, each sorted,
    /// then the multi-sequence walk over the sum matrix.
    fn query_cells(&self, q: &[f32], k: usize, table: &[f32], top: &mut Vec<(f32, Label)>) {
        let ks = self.ksub();
        let _ = q;
        let mut order: [Vec<u32>; 2] = [(0..ks as u32).collect(), (0..ks as u32).collect()];
        for (h, o) in order.iter_mut().enumerate() {
            let t = &table[h * ks..(h + 1) * ks];
            o.sort_unstable_by(|&a, &b| t[a as usize].total_cmp(&t[b as usize]));
        }
        let d0 = |i: usize| table[order[0][i] as usize];
        let d1 = |j: usize| table[ks + order[1][j] as usize];
        // Min-heap on the sum through reversed ordering of keys.
        let mut heap = BinaryHeap::new();
        let mut seen = HashSet::new();
        heap.push(Cell(-(d0(0) + d1(0)), 0, 0));
        seen.insert((0u32, 0u32));
        top.clear();
        while let Some(Cell(negd, i, j)) = heap.pop() {
            let label =
                order[0][i as usize] as Label | (order[1][j as usize] as Label) << self.bits;
            top.push((-negd, label));
            if top.len() == k {
                break;
            }
            for (a, b) in [(i + 1, j), (i, j + 1)] {
                if (a as usize) < ks && (b as usize) < ks && seen.insert((a, b)) {
                    heap.push(Cell(-(d0(a as usize) + d1(b as usize)), a, b));
                }
            }
        }
    }
}

/// A heap entry: negated distance (so the max-heap pops the smallest) and the ranks.
#[derive(Debug, PartialEq)]
struct Cell(f32, u32, u32);

impl Eq for Cell {}

impl PartialOrd for Cell {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Cell {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Ties: smaller ranks first, so the order is deterministic.
        self.0
            .total_cmp(&other.0)
            .then_with(|| (other.1, other.2).cmp(&(self.1, self.2)))
    }
}

impl Index for MultiIndexQuantizer {
    fn dim(&self) -> usize {
        self.pq.dim()
    }

    fn metric(&self) -> Metric {
        Metric::L2
    }

    fn len(&self) -> usize {
        if self.pq.is_trained() {
            1 << (2 * self.bits)
        } else {
            0
        }
    }

    fn add(&mut self, _x: VectorsRef<'_>) -> Result<()> {
        Err(Error::not_supported(
            "add (the multi-index cells are implicit; train it instead)",
            self.describe(),
        ))
    }

    fn search_into(
        &self,
        queries: VectorsRef<'_>,
        k: usize,
        _params: &SearchParams<'_>,
        out: &mut SearchResults,
    ) -> Result<()> {
        if !self.pq.is_trained() {
            return Err(Error::NotTrained {
                what: self.describe(),
            });
        }
        check_search(self, queries, k)?;
        let nq = queries.len();
        out.reset(nq, k, Metric::L2);
        let ks = self.ksub();
        let d = queries.dim();
        // The cell tables (2·2^bits floats a query: 512 KiB at 2x16) are made for a
        // block of queries at a time, so a large batch does not hold them all at once.
        let block = ((64 << 20) / (8 * ks)).max(1);
        let (dist, labels) = out.parts_mut();
        for (b, (db, lb)) in dist
            .chunks_mut(block * k)
            .zip(labels.chunks_mut(block * k))
            .enumerate()
        {
            let q0 = b * block;
            let qb = VectorsRef::new(&queries.as_slice()[q0 * d..(q0 + db.len() / k) * d], d)?;
            let tables = self.pq.compute_distance_tables(qb, Metric::L2)?;
            db.par_chunks_mut(k)
                .zip(lb.par_chunks_mut(k))
                .zip(tables.par_chunks(2 * ks))
                .enumerate()
                .for_each_init(Vec::new, |top, (qi, ((dc, lc), t))| {
                    self.query_cells(qb.row(qi), k, t, top);
                    for (i, &(d, l)) in top.iter().enumerate() {
                        dc[i] = d;
                        lc[i] = l;
                    }
                });
        }
        Ok(())
    }

    fn reset(&mut self) {}

    fn describe(&self) -> String {
        format!("MultiIndexQuantizer(d={}, 2x{})", self.pq.dim(), self.bits)
    }

    fn is_trained(&self) -> bool {
        self.pq.is_trained()
    }

    fn train(&mut self, x: VectorsRef<'_>) -> Result<()> {
        vq_core::Codec::train(&mut self.pq, x)
    }

    fn reconstruct_into(&self, id: Label, out: &mut [f32]) -> Result<()> {
        let list = usize::try_from(id).map_err(|_| Error::IdNotFound { id })?;
        self.centroid_into(list, out)
    }

    /// `dim`, `bits`, `trained` and the two codebooks (`centroids`, when trained).
    fn save_state(&self, w: &mut StateWriter<'_>) -> Result<()> {
        w.put_usize("dim", self.pq.dim())?;
        w.put_usize("bits", self.bits)?;
        w.put_bool("trained", self.pq.is_trained())?;
        if self.pq.is_trained() {
            w.put_f32s("centroids", self.pq.centroids())?;
        }
        Ok(())
    }

    fn load_state(&mut self, r: &mut StateReader) -> Result<()> {
        let d = r.get_usize("dim", usize::MAX)?;
        if d != self.pq.dim() {
            return Err(r.error("dim", format!("{d}, the quantizer has {}", self.pq.dim())));
        }
        let bits = r.get_usize("bits", usize::MAX)?;
        if bits != self.bits {
            return Err(r.error("bits", format!("{bits}, the quantizer has {}", self.bits)));
        }
        let mut pq = ProductQuantizer::new(d, 2, bits)?;
        pq.set_kmeans_params(self.pq.kmeans_params().clone())?;
        if r.get_bool("trained")? {
            let c = r.get_f32s("centroids")?;
            pq.set_centroids(&c).map_err(|e| r.error("centroids", e))?;
        }
        self.pq = pq;
        Ok(())
    }
}

impl CoarseQuantizer for MultiIndexQuantizer {
    fn nlist(&self) -> usize {
        1 << (2 * self.bits)
    }

    fn centroid_into(&self, list: usize, out: &mut [f32]) -> Result<()> {
        let d = self.pq.dim();
        if list >= self.nlist() || out.len() != d || !self.pq.is_trained() {
            return Err(Error::invalid_param(
                "list",
                format!(
                    "cell {list} of {} (trained: {})",
                    self.nlist(),
                    self.pq.is_trained()
                ),
            ));
        }
        let ks = self.ksub();
        let (i, j) = (list & (ks - 1), list >> self.bits);
        let h = d / 2;
        out[..h].copy_from_slice(self.pq.centroid(0, i));
        out[h..].copy_from_slice(self.pq.centroid(1, j));
        Ok(())
    }

    fn trains_alone(&self) -> bool {
        true
    }

    fn multi_index_parts(&self) -> Option<(usize, &[f32], &[f32])> {
        if !self.pq.is_trained() {
            return None;
        }
        let c = self.pq.centroids();
        let half = c.len() / 2;
        Some((self.bits, &c[..half], &c[half..]))
    }
}
