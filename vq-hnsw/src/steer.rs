//! 8-bit codes that steer a build's graph searches over raw vectors.
//!
//! Inserting a node is mostly a beam search, and over raw vectors that search is bound by
//! memory traffic: each distance reads a whole `4·d`-byte row from a random place. While a
//! build runs, the index keeps a temporary copy of every stored vector quantized to one byte
//! per component (per-component min/max ranges, as `SQ8`), a quarter of the bytes, and the
//! searches that find a new node's candidates score those codes. The candidates found are
//! then scored again with the exact distance before the heuristic chooses among them, so
//! neighbour selection and every re-selection see the same distances as without the codes;
//! only the beam's path can differ (and, under Faiss's rule, the order of a list that takes
//! every candidate, which then needs no exact distance: it stays in the codes' order). The
//! copy is dropped when the build returns.

use rayon::prelude::*;
use vq_core::distance::{Kernels, prefetch};
use vq_core::mem::reserve_with_huge_pages;
use vq_core::{Codec, Metric, VectorsRef};
use vq_pq::{ScalarQuantizer, SqType};

use crate::graph::{Near, NodeDistance, PREFETCH_LINES};

/// Rows per parallel encoding task.
const CHUNK: usize = 4096;

/// Byte codes of every stored vector, with the ranges that decode them.
#[derive(Debug)]
pub(crate) struct SteerCodes {
    d: usize,
    codes: Vec<u8>,
    vmin: Vec<f32>,
    step: Vec<f32>,
    ip: bool,
}

impl SteerCodes {
    /// Codes of the `rows.len() / d` vectors in `rows` (row-major, finite values), each
    /// component quantized to 256 levels over its range in `rows`; `None` when `rows` holds
    /// no vector or the ranges cannot be trained (the build then searches exact distances).
    ///
    /// The ranges are an `SQ8` quantizer's (min/max per component); the codes put level
    /// `c` at `min + c·step` with `step = (max − min)/255`, so both ends of a range are
    /// exact and a code is off by at most half a step, as `SQ8`'s. A component whose values
    /// span exactly 255 (integers from 0 to 255, say) codes exactly, which the tests use
    /// to compare graphs. A component whose step is not a normal float (a constant one or
    /// a range too small to divide) gets step 0: every value codes to 0 and the component
    /// does not steer. A range wider than an f32 holds fails the training: no codes.
    pub(crate) fn new(rows: &[f32], d: usize, metric: Metric) -> Option<SteerCodes> {
        let x = VectorsRef::new(rows, d).ok().filter(|x| !x.is_empty())?;
        let mut sq = ScalarQuantizer::new(d, SqType::Q8).ok()?;
        sq.train(x).ok()?;
        let (vmin, step): (Vec<f32>, Vec<f32>) = sq
            .vmin()
            .iter()
            .zip(sq.vdiff())
            .map(|(&l, &w)| {
                let s = w / 255.0;
                let usable = s.is_normal() && s > 0.0 && (1.0 / s).is_finite();
                (l, if usable { s } else { 0.0 })
            })
            .unzip();
        let inv: Vec<f32> = step
            .iter()
            .map(|&s| if s > 0.0 { 1.0 / s } else { 0.0 })
            .collect();
        let mut codes = Vec::new();
        reserve_with_huge_pages(&mut codes, rows.len());
        // Zeroed by every thread, so the page faults of fresh memory run in parallel.
        codes.par_extend(rayon::iter::repeat_n(0u8, rows.len()));
        codes
            .par_chunks_mut(CHUNK * d)
            .zip(rows.par_chunks(CHUNK * d))
            .for_each(|(out, x)| {
                for (o, r) in out.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
                    for (((c, &v), &l), &i) in o.iter_mut().zip(r).zip(&vmin).zip(&inv) {
                        *c = ((v - l) * i + 0.5).clamp(0.0, 255.0) as u8;
                    }
                }
            });
        Some(SteerCodes {
            d,
            codes,
            vmin,
            step,
            ip: metric == Metric::InnerProduct,
        })
    }

    /// Number of coded vectors.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.codes.len() / self.d
    }

    /// The quantization step of each component.
    #[cfg(test)]
    pub(crate) fn steps(&self) -> &[f32] {
        &self.step
    }

    /// A distance computer for `x` (`d` values) over the codes; `buf` holds its
    /// per-query terms.
    pub(crate) fn query<'a>(&'a self, x: &[f32], buf: &'a mut Vec<f32>) -> SteerQuery<'a> {
        buf.clear();
        let mut add = 0.0;
        if self.ip {
            // −⟨x, min + c·step⟩ = −(Σ x·min + Σ c·(x·step)).
            buf.extend(x.iter().zip(&self.step).map(|(&q, &s)| q * s));
            add = x.iter().zip(&self.vmin).map(|(&q, &l)| q * l).sum();
        } else {
            // ‖min + c·step − x‖² = Σ (c·step + (min − x))².
            buf.extend(x.iter().zip(&self.vmin).map(|(&q, &l)| l - q));
        }
        SteerQuery {
            codes: &self.codes,
            d: self.d,
            step: &self.step,
            terms: buf,
            add,
            ip: self.ip,
            k: Kernels::get(),
        }
    }
}

/// Distances from one query to coded vectors (smaller is closer, as the graph's).
#[derive(Debug)]
pub(crate) struct SteerQuery<'a> {
    codes: &'a [u8],
    d: usize,
    step: &'a [f32],
    /// L2: `min − x`; inner product: `x·step`.
    terms: &'a [f32],
    add: f32,
    ip: bool,
    k: &'static Kernels,
}

impl SteerQuery<'_> {
    #[inline]
    fn row(&self, id: u32) -> &[u8] {
        &self.codes[id as usize * self.d..][..self.d]
    }
}

impl NodeDistance for SteerQuery<'_> {
    #[inline]
    fn distance(&mut self, id: u32) -> f32 {
        self.distance4_ahead([id; 4], [id; 4])[0]
    }

    #[inline]
    fn distance4(&mut self, ids: [u32; 4]) -> [f32; 4] {
        self.distance4_ahead(ids, ids)
    }

    #[inline]
    fn distance4_ahead(&mut self, ids: [u32; 4], next: [u32; 4]) -> [f32; 4] {
        let rows = ids.map(|id| self.row(id));
        let next = next.map(|id| self.codes.get(id as usize * self.d..).unwrap_or(&[]));
        if self.ip {
            self.k
                .u8_dot_4_ahead(self.terms, rows, next)
                .map(|v| -(v + self.add))
        } else {
            self.k.u8_l2_4_ahead(self.step, self.terms, rows, next)
        }
    }

    #[inline]
    fn prefetch(&self, id: u32) {
        if let Some(r) = self.codes.get(id as usize * self.d..) {
            prefetch(&r[..self.d.min(r.len())], PREFETCH_LINES);
        }
    }
}

/// Scores `v` again with `q` (the exact distances) and sorts it nearest first.
pub(crate) fn rescore<D: NodeDistance>(q: &mut D, v: &mut [Near]) {
    let whole = v.len() / 4 * 4;
    for j in (0..whole).step_by(4) {
        let ids = [v[j].id, v[j + 1].id, v[j + 2].id, v[j + 3].id];
        let next = std::array::from_fn(|i| v[(j + 4 + i).min(v.len() - 1)].id);
        let ds = q.distance4_ahead(ids, next);
        for (n, d) in v[j..j + 4].iter_mut().zip(ds) {
            n.d = d;
        }
    }
    for n in &mut v[whole..] {
        n.d = q.distance(n.id);
    }
    v.sort_unstable();
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use vq_core::distance::scalar;

    use super::*;

    fn rows(n: usize, d: usize) -> Vec<f32> {
        (0..n * d)
            .map(|i| ((i * 7919 % 1013) as f32 / 97.0).sin() * (1.0 + (i % d) as f32))
            .collect()
    }

    /// The vector a code stands for.
    fn decoded(c: &SteerCodes, id: usize) -> Vec<f32> {
        let d = c.d;
        (0..d)
            .map(|j| c.vmin[j] + f32::from(c.codes[id * d + j]) * c.step[j])
            .collect()
    }

    #[test]
    fn codes_stay_within_half_a_step_and_distances_are_those_of_the_decoded_vectors() {
        let (n, d) = (300, 19);
        let x = rows(n, d);
        for metric in [Metric::L2, Metric::InnerProduct] {
            let c = SteerCodes::new(&x, d, metric).unwrap();
            assert_eq!(c.len(), n);
            for i in 0..n {
                let dec = decoded(&c, i);
                for j in 0..d {
                    assert!((dec[j] - x[i * d + j]).abs() <= c.step[j] * 0.5001 + 1e-6);
                }
            }
            let q: Vec<f32> = (0..d).map(|j| (j as f32 * 0.37).cos()).collect();
            let mut buf = Vec::new();
            let mut sq = c.query(&q, &mut buf);
            for ids in [[0u32, 1, 2, 3], [299, 7, 150, 42]] {
                let got = sq.distance4(ids);
                for (r, &id) in ids.iter().enumerate() {
                    let dec = decoded(&c, id as usize);
                    let want = match metric {
                        Metric::L2 => scalar::l2_sqr(&q, &dec),
                        _ => -scalar::inner_product(&q, &dec),
                    };
                    assert!(
                        (got[r] - want).abs() <= 1e-3 * (1.0 + want.abs()),
                        "{metric:?}"
                    );
                    assert_eq!(sq.distance(id), got[r]);
                }
            }
        }
    }

    #[test]
    fn constant_components_and_empty_sets_code_to_zero() {
        let d = 3;
        let x = vec![1.0, 5.0, -2.0, 1.0, 6.0, -2.0];
        let c = SteerCodes::new(&x, d, Metric::L2).unwrap();
        assert_eq!(c.step[0], 0.0);
        assert_eq!(c.codes[0], 0);
        assert_eq!(c.codes[3], 0);
        assert_eq!(c.codes[1], 0);
        assert_eq!(c.codes[4], 255);
        let mut buf = Vec::new();
        let mut q = c.query(&x[..3], &mut buf);
        assert_eq!(q.distance(0), 0.0);
        assert_eq!(q.distance(1), 1.0);
        assert!(SteerCodes::new(&[], d, Metric::L2).is_none());
    }

    #[test]
    fn ranges_too_small_or_too_wide_for_a_step_do_not_steer() {
        // Component 0 spans 1e-40 (its step would be subnormal, its inverse infinite),
        // component 1 spans more than f32::MAX (SQ8 cannot train: no codes at all, the
        // build scores exact distances), component 2 is ordinary.
        let x = vec![1e-40, -3e38, 0.0, 0.0, 3e38, 255.0, 1e-40, 0.0, 100.0];
        assert!(SteerCodes::new(&x, 3, Metric::L2).is_none());
        let x = vec![1e-40, -1e38, 0.0, 0.0, 1e38, 255.0, 1e-40, 0.0, 100.0];
        let c = SteerCodes::new(&x, 3, Metric::L2).unwrap();
        assert_eq!(c.step[0], 0.0);
        assert!(c.step[1] > 0.0);
        assert_eq!(c.step[2], 1.0);
        // 0 is mid-range for component 1: level 127 or 128 by rounding.
        assert!((127..=128).contains(&c.codes[7]), "{:?}", c.codes);
        let mut rest = c.codes.clone();
        rest[7] = 0;
        assert_eq!(rest, [0, 0, 0, 0, 255, 255, 0, 0, 100]);
        // Without the over-wide component the distances are the decoded vectors' (the
        // tiny component decodes to its minimum).
        let y = vec![1e-40, 0.0, 0.0, 255.0, 1e-40, 100.0];
        let c = SteerCodes::new(&y, 2, Metric::L2).unwrap();
        let mut buf = Vec::new();
        let mut q = c.query(&[1e-40, 100.0], &mut buf);
        assert_eq!(q.distance(2), 0.0);
        assert_eq!(q.distance(1), 155.0 * 155.0);
    }

    #[test]
    fn rescoring_replaces_the_distances_and_sorts() {
        struct Exact(Vec<f32>);
        impl NodeDistance for Exact {
            fn distance(&mut self, id: u32) -> f32 {
                self.0[id as usize]
            }
            fn prefetch(&self, _: u32) {}
        }
        let mut e = Exact(vec![5.0, 1.0, 4.0, 2.0, 3.0, 0.5]);
        let mut v: Vec<Near> = (0..6).map(|id| Near { d: id as f32, id }).collect();
        rescore(&mut e, &mut v);
        let ids: Vec<u32> = v.iter().map(|n| n.id).collect();
        assert_eq!(ids, [5, 1, 3, 4, 2, 0]);
        assert!(v.iter().all(|n| n.d == e.0[n.id as usize]));
        let mut none: Vec<Near> = Vec::new();
        rescore(&mut e, &mut none);
    }
}
