//! IVF with 4-bit fast-scan PQ lists (Faiss's `IndexIVFPQFastScan`, factory
//! `IVF{n},PQ{M}x4fs` and, by residual, `IVF{n},PQ{M}x4fsr`).

use rayon::prelude::*;
use vq_core::distance::SimdLevel;
use vq_core::persist::{StateReader, StateWriter};
use vq_core::topk::TopK;
use vq_core::{
    Error, IdFilter, Index, IndexFlat, Label, Metric, RangeSearchResults, Result, SearchParams,
    SearchResults, VectorsRef, check_range_search, check_search,
};
use vq_pq::ProductQuantizer;
use vq_pq::fastscan::{
    self, FastScanLayout, FsCollector, MAX_QUERY_BLOCK, QuantizedLut, SUB_BLOCK,
};

use crate::encoding::{IvfEncoding, IvfPq, ListTables};
use crate::ivf::IndexIvf;
use crate::quantizer::CoarseQuantizer;

/// One inverted list: ids, and codes in the fast-scan block layout.
#[derive(Clone, Debug, Default)]
struct FsList {
    ids: Vec<Label>,
    codes: Vec<u8>,
}

/// An inverted file whose lists hold 4-bit PQ codes in the fast-scan block layout
/// ([`vq_pq::fastscan`]).
///
/// Training, the coarse quantizer (any [`CoarseQuantizer`]: flat, IMI, HNSW...), the
/// product quantizer and the search parameters are those of an [`IndexIvf`] with an
/// [`IvfPq`] encoding of 4 bits, by residual or not. Search quantises the tables of
/// each query (once per query when every list shares them, as without residuals; per
/// probed list otherwise), scans each probed list 32 codes per SIMD shuffle, and scores
/// exactly (float tables) every vector whose quantised sum could beat the current k-th
/// best: the results are those of the same `IndexIvf` with 4-bit PQ — the exact ADC
/// top-k of the probed lists — at integer-scan speed. Without residuals, candidates
/// are kept as quantised sums and only those within the error band of the k-th are
/// scored exactly; under [`SearchParams::approximate`] (set by `IndexRefine` for its
/// base, as in `IVF1024,PQ32x4fs,RFlat`) the k smallest sums are returned with their
/// estimated distances, Faiss's behaviour, and the re-ranking restores precision.
///
/// ```
/// use vq_core::{Index, Metric, SearchParams, synthetic::SyntheticSpec};
/// use vq_ivf::IndexIvfPqFastScan;
/// let data = SyntheticSpec::new(5_000, 32, 10).generate()?;
/// let mut index = IndexIvfPqFastScan::new_flat(32, 32, 16, false, Metric::L2)?;
/// index.train(data.base.as_ref())?;
/// index.add(data.base.as_ref())?;
/// let res = index.search(data.queries.as_ref(), 5, &SearchParams::new().with_nprobe(8))?;
/// assert_eq!(res.row(0).1.len(), 5);
/// # Ok::<(), vq_core::Error>(())
/// ```
#[derive(Debug)]
pub struct IndexIvfPqFastScan<Q> {
    ivf: IndexIvf<Q, IvfPq>,
    layout: FastScanLayout,
    lists: Vec<FsList>,
    ntotal: usize,
    level: Option<SimdLevel>,
    lut_max: u8,
}

impl IndexIvfPqFastScan<IndexFlat> {
    /// `IVF{nlist},PQ{m}x4fs` (or `…fsr` when `by_residual`) with a flat coarse
    /// quantizer, blocks of 32.
    ///
    /// # Errors
    /// As [`IndexIvfPqFastScan::new`].
    pub fn new_flat(
        d: usize,
        nlist: usize,
        m: usize,
        by_residual: bool,
        metric: Metric,
    ) -> Result<Self> {
        IndexIvfPqFastScan::new(
            IndexFlat::new(d, metric)?,
            nlist,
            ProductQuantizer::new(d, m, 4)?,
            by_residual,
            metric,
            SUB_BLOCK,
        )
    }
}

impl<Q: CoarseQuantizer> IndexIvfPqFastScan<Q> {
    /// An empty index over `quantizer` with `nlist` lists, codes from `pq` (4 bits),
    /// blocks of `bbs` vectors.
    ///
    /// # Errors
    /// As [`IndexIvf::new`]; a quantizer with other than 4 bits; `bbs` not a positive
    /// multiple of 32.
    pub fn new(
        quantizer: Q,
        nlist: usize,
        pq: ProductQuantizer,
        by_residual: bool,
        metric: Metric,
        bbs: usize,
    ) -> Result<Self> {
        if pq.nbits() != 4 {
            return Err(Error::invalid_param(
                "nbits",
                format!("fast scan needs 4-bit codes, not {}", pq.nbits()),
            ));
        }
        let layout = FastScanLayout::new(pq.m(), bbs)?;
        let ivf = IndexIvf::new(quantizer, nlist, IvfPq::new(pq, by_residual), metric)?;
        vq_core::mem::check_alloc::<FsList>(nlist, "nlist")?;
        Ok(IndexIvfPqFastScan {
            ivf,
            layout,
            lists: vec![FsList::default(); nlist],
            ntotal: 0,
            level: None,
            lut_max: (1u16 << fastscan::DEFAULT_LUT_BITS).wrapping_sub(1) as u8,
        })
    }

    /// The inverted-file part: coarse quantizer, product quantizer, parameters (its own
    /// lists stay empty).
    pub fn ivf(&self) -> &IndexIvf<Q, IvfPq> {
        &self.ivf
    }

    /// Mutable inverted-file part, for the coarse k-means parameters before training.
    pub fn ivf_mut(&mut self) -> &mut IndexIvf<Q, IvfPq> {
        &mut self.ivf
    }

    /// The block layout.
    pub fn layout(&self) -> &FastScanLayout {
        &self.layout
    }

    /// Number of lists.
    pub fn nlist(&self) -> usize {
        self.lists.len()
    }

    /// Vectors per list.
    pub fn list_sizes(&self) -> Vec<usize> {
        self.lists.iter().map(|l| l.ids.len()).collect()
    }

    /// Caps the kernel level (default: the best the CPU has, capped by `VQ_SIMD`).
    pub fn set_kernel_level(&mut self, level: Option<SimdLevel>) {
        self.level = level;
    }

    fn kernel_level(&self) -> SimdLevel {
        self.level
            .map_or_else(fastscan::kernel_level, |l| l.min(fastscan::kernel_level()))
    }

    /// Scans the given probes of one query into `top` (keys).
    ///
    /// Reported vectors go to a [`Reservoir`] with bounds on their keys (the estimate
    /// from the quantised sum, plus or minus the table's error bound); once it is
    /// full, everything whose lower bound is above the k-th smallest upper bound is
    /// dropped, which also tightens the scan's threshold. At the end the survivors —
    /// a superset of the exact top-k — are scored with the float tables.
    #[allow(clippy::too_many_arguments)]
    fn scan_probes(
        &self,
        q: &[f32],
        lists: &[Label],
        coarse_dis: &[f32],
        max_codes: usize,
        filter: Option<&dyn IdFilter>,
        level: SimdLevel,
        approximate: bool,
        top: &mut TopK,
        scratch: &mut Scratch,
    ) -> Result<()> {
        let m2 = self.layout.m2();
        let tsize = self.layout.m() * 16;
        let mut lt = ListTables::new(
            self.ivf.encoding(),
            self.ivf.quantizer(),
            q,
            self.ivf.metric(),
        )?;
        if lt.is_shared() && lt.offset_is_zero() {
            return self.scan_probes_sums(
                &lt,
                lists,
                max_codes,
                filter,
                level,
                approximate,
                top,
                scratch,
            );
        }
        let shared = lt.is_shared();
        let Scratch {
            tables,
            lut,
            probes,
            res,
            ..
        } = scratch;
        if shared {
            lut.set_with_max(lt.shared_table(), m2, self.lut_max)?;
        }
        probes.clear();
        res.reset(top.k());
        let mut scanned = 0usize;
        for (&l, &cd) in lists.iter().zip(coarse_dis) {
            if l < 0 {
                continue;
            }
            let list = &self.lists[l as usize];
            if list.ids.is_empty() {
                continue;
            }
            let pi = probes.len();
            let offset = if shared {
                lt.offset(cd)
            } else {
                tables.resize((pi + 1) * tsize, 0.0);
                let off = lt.table(l as usize, cd, &mut tables[pi * tsize..])?;
                lut.set_with_max(&tables[pi * tsize..], m2, self.lut_max)?;
                off
            };
            probes.push((l as usize, offset));
            let Some(threshold) = lut.threshold_with_offset(res.bound, offset) else {
                continue;
            };
            let e = lut.error_bound();
            let mut c = ListCollector {
                list,
                probe: pi as u32,
                lut,
                offset,
                // Float rounding of the estimate, on top of the quantisation bound.
                slack: e * 1.001 + 1e-6 * (1.0 + offset.abs() + lut.bias().abs()),
                filter,
                threshold,
                res,
            };
            let nsub = list.ids.len().div_ceil(SUB_BLOCK);
            fastscan::scan(level, &self.layout, &[lut], &list.codes, nsub, &mut c)?;
            scanned += list.ids.len();
            if max_codes > 0 && scanned >= max_codes {
                break;
            }
        }
        res.prune();
        // The k lowest lower bounds first, scored exactly; then the rest, each only while
        // its lower bound can still beat the k-th best key.
        let k = top.k();
        let first = if res.items.len() > k {
            res.items
                .select_nth_unstable_by(k - 1, |a, b| a.lo.total_cmp(&b.lo));
            k
        } else {
            res.items.len()
        };
        for (i, c) in res.items.iter().enumerate() {
            if i >= first && c.lo > top.threshold() {
                continue;
            }
            let (l, offset) = probes[c.probe as usize];
            let t = if shared {
                lt.shared_table()
            } else {
                let p = c.probe as usize;
                &tables[p * tsize..(p + 1) * tsize]
            };
            let list = &self.lists[l];
            let key = offset + self.layout.table_key(&list.codes, c.pos as usize, t);
            top.push(key, list.ids[c.pos as usize]);
        }
        Ok(())
    }
}

impl<Q: CoarseQuantizer> IndexIvfPqFastScan<Q> {
    /// [`IndexIvfPqFastScan::scan_probes`] when every list shares one table and no
    /// offset (no residuals): keys compare as quantised sums, so candidates are kept as
    /// `u16` sums and pruned with integer compares (Faiss's reservoir), and only those
    /// whose sum is within the error band of the k-th smallest are scored exactly.
    #[allow(clippy::too_many_arguments)]
    fn scan_probes_sums(
        &self,
        lt: &ListTables<'_>,
        lists: &[Label],
        max_codes: usize,
        filter: Option<&dyn IdFilter>,
        level: SimdLevel,
        approximate: bool,
        top: &mut TopK,
        scratch: &mut Scratch,
    ) -> Result<()> {
        let Scratch {
            lut, sres, pick, ..
        } = scratch;
        let table = lt.shared_table();
        lut.set_with_max(table, self.layout.m2(), self.lut_max)?;
        let (slack, band) = sum_bounds(lut);
        let Some(thr) = lut.threshold_for(top.threshold()) else {
            return Ok(());
        };
        // Approximate: the k smallest sums, ranked by their estimates (no band).
        sres.reset(top.k(), if approximate { 0 } else { band }, thr);
        let mut scanned = 0usize;
        for (rank, &l) in lists.iter().enumerate() {
            if l < 0 {
                continue;
            }
            let list = &self.lists[l as usize];
            if list.ids.is_empty() {
                continue;
            }
            let mut c = SumCollector {
                ids: &list.ids,
                list: l as u32,
                rank: rank as u32,
                filter,
                res: sres,
            };
            let nsub = list.ids.len().div_ceil(SUB_BLOCK);
            fastscan::scan(level, &self.layout, &[lut], &list.codes, nsub, &mut c)?;
            scanned += list.ids.len();
            if max_codes > 0 && scanned >= max_codes {
                break;
            }
        }
        self.finish_query(sres, lut, slack, table, approximate, top, pick);
        Ok(())
    }

    /// The chunk of queries [`IndexIvfPqFastScan::search_list_major`] takes at once, or
    /// `None` when queries are better scanned one by one: with residuals (each list its
    /// own table or offset), under `max_codes` (a per-query budget), with one probe,
    /// with fewer queries than threads (the probes are split instead), when a query
    /// scans fewer than [`LIST_MAJOR_MIN_CODES`] codes on average (the kernel is then a
    /// small part of the search, and the bookkeeping per list and query costs more than
    /// reading the codes once per block saves), or when a chunk would visit each list
    /// with fewer than [`LIST_MAJOR_MIN_GROUP`] of its queries on average (also when
    /// a large `k` leaves room for few queries' reservoirs).
    fn list_major_chunk(
        &self,
        nq: usize,
        k: usize,
        nprobe: usize,
        threads: usize,
        max_codes: usize,
    ) -> Option<usize> {
        if self.ivf.encoding().by_residual()
            || max_codes > 0
            || nprobe < 2
            || nq < threads
            || nprobe > u32::MAX as usize
        {
            return None;
        }
        let nlist = self.lists.len().max(1);
        if nprobe.saturating_mul(self.ntotal) < LIST_MAJOR_MIN_CODES.saturating_mul(nlist) {
            return None;
        }
        // About 32 queries per probed list (eight passes of the kernel's block of
        // four), at most 1,024 queries' state at once and at most
        // LIST_MAJOR_STATE_BYTES of reservoirs, and work for every thread.
        let reservoir = 14 * ((4 * k).max(64) + SUB_BLOCK);
        let chunk = (32 * nlist)
            .div_ceil(nprobe)
            .clamp(64, 1024)
            .min(nq.div_ceil(threads))
            .min(LIST_MAJOR_STATE_BYTES / reservoir);
        let probes = chunk.checked_mul(nprobe)?;
        (chunk > 0 && probes <= u32::MAX as usize && probes >= LIST_MAJOR_MIN_GROUP * nlist)
            .then_some(chunk)
    }

    /// Searches queries `q0..q0 + n` (results in `dist`/`labels`, `k` per query) list by
    /// list, as Faiss's `search_implem_12` does: the pairs (list, query) of the chunk's
    /// probes are sorted by list, and each list's codes are scanned once for up to
    /// [`MAX_QUERY_BLOCK`] of its queries at a time, each query with its own table and
    /// reservoir. Only for tables shared by every list with no offset (no residuals);
    /// the results are those of [`IndexIvfPqFastScan::scan_probes_sums`] query by query.
    #[allow(clippy::too_many_arguments)]
    fn search_list_major(
        &self,
        queries: VectorsRef<'_>,
        q0: usize,
        lists: &[Label],
        nprobe: usize,
        filter: Option<&dyn IdFilter>,
        level: SimdLevel,
        approximate: bool,
        dist: &mut [f32],
        labels: &mut [Label],
        top: &mut TopK,
        gs: &mut GroupScratch,
    ) -> Result<()> {
        let k = top.k();
        let n = dist.len() / k.max(1);
        let metric = self.metric();
        let tsize = self.layout.m() * 16;
        let GroupScratch {
            luts,
            tables,
            sres,
            slack,
            active,
            pairs,
            starts,
            pick,
        } = gs;
        luts.resize_with(n, QuantizedLut::default);
        sres.resize_with(n, SumReservoir::default);
        slack.resize(n, 0.0);
        active.resize(n, false);
        if !approximate {
            tables.resize(n * tsize, 0.0);
        }
        top.clear();
        let open = top.threshold();
        for i in 0..n {
            let lt = ListTables::new(
                self.ivf.encoding(),
                self.ivf.quantizer(),
                queries.row(q0 + i),
                metric,
            )?;
            let table = lt.shared_table();
            luts[i].set_with_max(table, self.layout.m2(), self.lut_max)?;
            let (sl, band) = sum_bounds(&luts[i]);
            slack[i] = sl;
            active[i] = match luts[i].threshold_for(open) {
                Some(thr) => {
                    sres[i].reset(k, if approximate { 0 } else { band }, thr);
                    true
                }
                None => false,
            };
            if !approximate {
                tables[i * tsize..(i + 1) * tsize].copy_from_slice(table);
            }
        }
        let nlist = self.lists.len();
        group_probes(
            &lists[q0 * nprobe..(q0 + n) * nprobe],
            nprobe,
            active,
            |l| !self.lists[l].ids.is_empty(),
            nlist,
            nlist <= 4 * n * nprobe,
            pairs,
            starts,
        );
        for run in pairs.chunk_by(|a, b| a.0 == b.0) {
            let l = run[0].0 as usize;
            let list = &self.lists[l];
            let nsub = list.ids.len().div_ceil(SUB_BLOCK);
            for grp in run.chunks(MAX_QUERY_BLOCK) {
                let mut qmap = [0usize; MAX_QUERY_BLOCK];
                let mut ranks = [0u32; MAX_QUERY_BLOCK];
                for ((q, r), &(_, qi, rank)) in qmap.iter_mut().zip(&mut ranks).zip(grp) {
                    *q = qi as usize;
                    *r = rank;
                }
                let block: [&QuantizedLut; MAX_QUERY_BLOCK] = qmap.map(|qi| &luts[qi]);
                let mut c = BlockCollector {
                    ids: &list.ids,
                    list: l as u32,
                    filter,
                    res: sres,
                    qmap,
                    ranks,
                };
                fastscan::scan(
                    level,
                    &self.layout,
                    &block[..grp.len()],
                    &list.codes,
                    nsub,
                    &mut c,
                )?;
            }
        }
        for i in 0..n {
            top.clear();
            if active[i] {
                let table = if approximate {
                    &[][..]
                } else {
                    &tables[i * tsize..(i + 1) * tsize]
                };
                self.finish_query(&sres[i], &luts[i], slack[i], table, approximate, top, pick);
            }
            top.write_sorted(
                metric,
                &mut dist[i * k..(i + 1) * k],
                &mut labels[i * k..(i + 1) * k],
            );
        }
        Ok(())
    }

    /// Hands a [`SumReservoir`]'s candidates to `top`: under `approximate` the k smallest
    /// sums with their estimated keys (see [`select_sorted`] for ties at the k-th);
    /// otherwise exactly scored ([`IndexIvfPqFastScan::finish_sums`]).
    #[allow(clippy::too_many_arguments)]
    fn finish_query(
        &self,
        sres: &SumReservoir,
        lut: &QuantizedLut,
        slack: f32,
        table: &[f32],
        approximate: bool,
        top: &mut TopK,
        pick: &mut Pick,
    ) {
        if approximate {
            let k = top.k();
            select_sorted(sres, k, pick);
            let Pick { order, ids, .. } = pick;
            // The ids first, in a loop of independent loads (mostly cache misses: the
            // scan read the codes, not the ids), so that many are in flight at once.
            ids.clear();
            ids.extend(order.iter().map(|&e| {
                let (l, pos) = sres.refs[(e & 0xffff_ffff) as usize];
                self.lists[l as usize].ids[pos as usize]
            }));
            // Equal sums by id (the results' order), then pushed worst first: each entry
            // lands at the end of `top` (heap or buffer) without sifting, and its entries
            // come out sorted by one reversal.
            sort_ties_by_id(order, ids);
            for (&e, &id) in order.iter().zip(ids.iter()).rev() {
                top.push(lut.key((e >> 32) as u16), id);
            }
        } else {
            self.finish_sums(sres, lut, slack, table, top, &mut pick.order);
        }
    }

    /// Scores a [`SumReservoir`]'s candidates exactly into `top`: the k smallest sums
    /// first, then the rest, each only while its lower bound can still beat the k-th
    /// best key.
    fn finish_sums(
        &self,
        sres: &SumReservoir,
        lut: &QuantizedLut,
        slack: f32,
        table: &[f32],
        top: &mut TopK,
        order: &mut Vec<u64>,
    ) {
        order.clear();
        order.extend(
            sres.sums()
                .iter()
                .enumerate()
                .map(|(i, &s)| (u64::from(s) << 32) | i as u64),
        );
        let k = top.k();
        let first = if order.len() > k {
            order.select_nth_unstable(k - 1);
            k
        } else {
            order.len()
        };
        // The first k largest sum first: the heap then rarely has to sift.
        order[..first].sort_unstable_by(|a, b| b.cmp(a));
        let at = |e: u64| {
            let (l, pos) = sres.refs[(e & 0xffff_ffff) as usize];
            (&self.lists[l as usize], pos as usize)
        };
        let score = |quad: &[u64], top: &mut TopK| {
            if let [a, b, c, d] = *quad {
                let v = [at(a), at(b), at(c), at(d)];
                // Four independent sums at a time.
                let keys = self
                    .layout
                    .table_keys(v.map(|(list, pos)| (&list.codes[..], pos)), table);
                for ((list, pos), key) in v.into_iter().zip(keys) {
                    top.push(key, list.ids[pos]);
                }
            } else {
                for &e in quad {
                    let (list, pos) = at(e);
                    top.push(
                        self.layout.table_key(&list.codes, pos, table),
                        list.ids[pos],
                    );
                }
            }
        };
        for quad in order[..first].chunks(4) {
            score(quad, top);
        }
        // A sum `s` can still beat the k-th best key `t` when its lower bound
        // `bias + s / scale - slack` is at most `t`: `s <= (t + slack - bias) · scale`.
        let (bias, scale) = (f64::from(lut.bias()), f64::from(lut.scale()));
        let cutoff = |t: f32| -> u64 {
            if t == f32::INFINITY {
                return u64::MAX;
            }
            let v = (f64::from(t) + f64::from(slack) - bias) * scale + 1e-3;
            if v < 0.0 { 0 } else { v.floor() as u64 }
        };
        let mut cut = cutoff(top.threshold());
        let rest = &order[first..];
        let mut i = 0;
        while i < rest.len() {
            // The next four that pass the current cut-off, scored together.
            let mut quad = [0u64; 4];
            let mut n = 0;
            while n < 4 && i < rest.len() {
                if rest[i] >> 32 <= cut {
                    quad[n] = rest[i];
                    n += 1;
                }
                i += 1;
            }
            score(&quad[..n], top);
            cut = cutoff(top.threshold());
        }
    }
}

/// How far an exact key may lie from its estimate under `lut` (quantisation, plus the
/// float rounding of the keys themselves), and the band of sums that follows: a sum
/// more than `band` above the k-th smallest cannot beat the k-th best key.
fn sum_bounds(lut: &QuantizedLut) -> (f32, u16) {
    let slack = lut.error_bound() * 1.001 + 1e-6 * (1.0 + lut.bias().abs());
    let band = (2.0 * f64::from(slack) * f64::from(lut.scale()))
        .floor()
        .min(f64::from(u16::MAX)) as u16;
    (slack, band)
}

/// Per-thread buffers of [`IndexIvfPqFastScan::scan_probes`].
#[derive(Debug, Default)]
struct Scratch {
    /// Float tables of the probed lists (when they differ per list).
    tables: Vec<f32>,
    lut: QuantizedLut,
    /// `(list, offset)` of each probe scanned.
    probes: Vec<(usize, f32)>,
    res: Reservoir,
    sres: SumReservoir,
    pick: Pick,
}

/// Puts into `pairs` the probes `(list, query, rank)` of the queries whose `active` is
/// set (`probes` holds `nprobe` lists per query; ids below zero and lists that `keep`
/// refuses are skipped), sorted by list, then query and rank: by counting (two passes
/// and a table of `nlist` entries in `starts`) when `counting`, by a sort otherwise (an
/// IMI quantizer numbers up to 2^28 cells, far more than a chunk probes).
#[allow(clippy::too_many_arguments)]
fn group_probes(
    probes: &[Label],
    nprobe: usize,
    active: &[bool],
    keep: impl Fn(usize) -> bool,
    nlist: usize,
    counting: bool,
    pairs: &mut Vec<(u32, u32, u32)>,
    starts: &mut Vec<u32>,
) {
    let of = |i: usize| {
        probes[i * nprobe..(i + 1) * nprobe]
            .iter()
            .enumerate()
            .filter(|&(_, &l)| l >= 0 && keep(l as usize))
            .map(|(rank, &l)| (l as u32, rank as u32))
    };
    let queries = || (0..active.len()).filter(|&i| active[i]);
    pairs.clear();
    if counting {
        starts.clear();
        starts.resize(nlist + 1, 0);
        for i in queries() {
            for (l, _) in of(i) {
                starts[l as usize + 1] += 1;
            }
        }
        for l in 0..nlist {
            starts[l + 1] += starts[l];
        }
        pairs.resize(starts[nlist] as usize, (0, 0, 0));
        for i in queries() {
            for (l, rank) in of(i) {
                let at = &mut starts[l as usize];
                pairs[*at as usize] = (l, i as u32, rank);
                *at += 1;
            }
        }
    } else {
        for i in queries() {
            pairs.extend(of(i).map(|(l, rank)| (l, i as u32, rank)));
        }
        pairs.sort_unstable();
    }
}

/// Buffers of the selection that finishes a query ([`select_sorted`]).
#[derive(Debug, Default)]
struct Pick {
    order: Vec<u64>,
    tmp: Vec<u64>,
    counts: Vec<u32>,
    /// `(rank, position, entry)` of the candidates whose sum equals the k-th.
    eq: Vec<(u32, u32, u32)>,
    /// Ids of the candidates handed on.
    ids: Vec<Label>,
}

/// List-major search: on average at least this many of a chunk's queries per list.
const LIST_MAJOR_MIN_GROUP: usize = 8;

/// List-major search: at most this many bytes of reservoirs (one per query of a chunk,
/// 14 bytes a candidate) per thread.
const LIST_MAJOR_STATE_BYTES: usize = 16 << 20;

/// List-major search: at least this many codes scanned per query on average (on the
/// 1M-vector set with 1,024 lists, `nprobe` 64 gains 12–20% and `nprobe` 16 nothing;
/// lists of 20 codes lose 5–10%).
const LIST_MAJOR_MIN_CODES: usize = 32_768;

/// Per-thread buffers of [`IndexIvfPqFastScan::search_list_major`]: one table and
/// reservoir per query of the chunk.
#[derive(Debug, Default)]
struct GroupScratch {
    luts: Vec<QuantizedLut>,
    /// The float tables, `m · 16` per query (for exact scoring).
    tables: Vec<f32>,
    sres: Vec<SumReservoir>,
    slack: Vec<f32>,
    /// Whether the query's table can report anything.
    active: Vec<bool>,
    /// `(list, query, rank)` of each probe, grouped by list.
    pairs: Vec<(u32, u32, u32)>,
    /// Where each list's probes begin in `pairs` (the counting sort).
    starts: Vec<u32>,
    pick: Pick,
}

/// Puts the reported vectors of one list into the reservoirs of a block of queries
/// (query `q` of the block is the chunk's `qmap[q]`).
struct BlockCollector<'a> {
    ids: &'a [Label],
    list: u32,
    filter: Option<&'a dyn IdFilter>,
    res: &'a mut [SumReservoir],
    qmap: [usize; MAX_QUERY_BLOCK],
    /// The list's rank among each query's probes.
    ranks: [u32; MAX_QUERY_BLOCK],
}

impl FsCollector for BlockCollector<'_> {
    #[inline(always)]
    fn threshold(&self, q: usize) -> u16 {
        self.res[self.qmap[q]].thr
    }

    #[inline(always)]
    fn collect(&mut self, q: usize, sb: usize, mask: u32, sums: &[u16; SUB_BLOCK]) {
        let qi = self.qmap[q];
        self.res[qi].offer(
            self.list,
            self.ranks[q],
            sb,
            mask,
            sums,
            self.ids,
            self.filter,
        );
    }
}

/// Candidates of one query as quantised sums under one table (Faiss's reservoir
/// collector): a vector whose sum is more than `band` above the k-th smallest cannot be
/// among the k best.
#[derive(Debug, Default)]
struct SumReservoir {
    /// The candidates' sums: the first `n` entries; the rest is room for one more
    /// sub-block, written before it is known which entries stay.
    sums: Vec<u16>,
    /// `(list, position)` of each candidate, like `sums`.
    refs: Vec<(u32, u32)>,
    /// The rank of each candidate's list among the query's probes, like `sums`: equal
    /// sums at the k-th are taken by rank, then position (the order of a query's scan,
    /// whichever order the lists were scanned in).
    ranks: Vec<u32>,
    n: usize,
    k: usize,
    cap: usize,
    band: u16,
    /// Sums above it cannot be among the k best.
    thr: u16,
}

impl SumReservoir {
    fn reset(&mut self, k: usize, band: u16, thr: u16) {
        self.n = 0;
        self.k = k;
        self.cap = (4 * k).max(64);
        self.band = band;
        self.thr = thr;
        self.make_room();
    }

    /// Room for `cap` candidates and one more sub-block.
    fn make_room(&mut self) {
        let len = self.cap + SUB_BLOCK;
        if self.sums.len() < len {
            self.sums.resize(len, 0);
            self.refs.resize(len, (0, 0));
            self.ranks.resize(len, 0);
        }
    }

    /// The candidates' sums.
    fn sums(&self) -> &[u16] {
        &self.sums[..self.n]
    }

    /// Offers the reported vectors of sub-block `sb` of `list` (probed at `rank` by the
    /// query; bits of `mask`, their sums in `sums`; `ids` the list's), then prunes when
    /// `cap` are held.
    /// Branch-free: each is written, and kept by moving on past it when its sum is
    /// within the threshold.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn offer(
        &mut self,
        list: u32,
        rank: u32,
        sb: usize,
        mut mask: u32,
        sums: &[u16; SUB_BLOCK],
        ids: &[Label],
        filter: Option<&dyn IdFilter>,
    ) {
        let base = sb * SUB_BLOCK;
        // The padding of the list's last sub-block is never a candidate.
        let left = ids.len().saturating_sub(base);
        if left < SUB_BLOCK {
            mask &= (1u32 << left) - 1;
        }
        let (thr, mut n) = (self.thr, self.n);
        // The candidates' ids are looked up after the scan, at random in the list's ids,
        // which the scan itself does not read: a sub-block that reports anything has its
        // 32 ids (256 bytes: four or five cache lines) requested now, so they arrive while
        // the scan goes on. (Requesting a whole list's ids up front, about 125 lines for
        // 1,000 vectors, stalls the core on its miss buffers: 6% slower at nprobe = 1 on
        // 1M vectors.)
        if mask != 0 {
            let sub = &ids[base.min(ids.len())..(base + SUB_BLOCK).min(ids.len())];
            vq_core::distance::prefetch(sub, 4);
            vq_core::distance::prefetch(&sub[sub.len().saturating_sub(1)..], 1);
        }
        while mask != 0 {
            let i = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            let pos = base + i;
            if let Some(f) = filter
                && !f.is_member(ids[pos])
            {
                continue;
            }
            let s = sums[i];
            self.sums[n] = s;
            self.refs[n] = (list, pos as u32);
            self.ranks[n] = rank;
            n += usize::from(s <= thr);
        }
        self.n = n;
        if n >= self.cap {
            self.prune();
        }
    }

    /// Lowers the threshold to the k-th smallest sum plus the band and drops what is
    /// above it; grows the capacity when most candidates stay (so that fewer than `cap`
    /// are held afterwards).
    fn prune(&mut self) {
        if self.k == 0 {
            self.n = 0;
            return;
        }
        if self.n < self.k {
            return;
        }
        let kth = kth_smallest(self.sums(), self.k);
        self.thr = self.thr.min(kth.saturating_add(self.band));
        let thr = self.thr;
        // Branch-free (whether a sum stays is a coin toss), as in `offer`.
        let mut w = 0;
        for r in 0..self.n {
            let s = self.sums[r];
            self.sums[w] = s;
            self.refs[w] = self.refs[r];
            self.ranks[w] = self.ranks[r];
            w += usize::from(s <= thr);
        }
        self.n = w;
        if w * 2 > self.cap {
            self.cap *= 2;
            self.make_room();
        }
    }
}

/// How many of `sums` are at most `t` (counted in chunks whose counts fit a `u16`, so
/// the loop vectorises).
fn count_le(sums: &[u16], t: u16) -> usize {
    sums.chunks(1 << 15)
        .map(|c| usize::from(c.iter().map(|&s| u16::from(s <= t)).sum::<u16>()))
        .sum()
}

/// The `k`-th smallest of `sums` (`1 <= k <= sums.len()`), by bisection on the value
/// between the smallest and the largest (found in one pass): at most 16 counting
/// passes, each a vectorised compare, instead of a selection that moves the values
/// (Faiss's `partition_fuzzy` counts the same way).
fn kth_smallest(sums: &[u16], k: usize) -> u16 {
    debug_assert!(k >= 1 && k <= sums.len());
    let (mut lo, mut hi) = sums
        .iter()
        .fold((u16::MAX, 0u16), |(a, b), &s| (a.min(s), b.max(s)));
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if count_le(sums, mid) >= k {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

/// Puts into `order` the `k` smallest sums of `res` (all of them when it holds no more),
/// as `sum << 32 | position`, sorted by sum and then position; of those equal to the
/// `k`-th smallest, the first by probe rank and then position in the list are taken.
fn select_sorted(res: &SumReservoir, k: usize, pick: &mut Pick) {
    let Pick {
        order,
        tmp,
        counts,
        eq,
        ..
    } = pick;
    let sums = res.sums();
    let n = sums.len();
    let entry = |i: usize, s: u16| (u64::from(s) << 32) | i as u64;
    tmp.clear();
    if n > k {
        let t = kth_smallest(sums, k);
        // Branch-free: every entry below `t` is written and kept by moving on past it;
        // those equal to it are set aside.
        tmp.resize(n, 0);
        let mut w = 0;
        eq.clear();
        for (i, &s) in sums.iter().enumerate() {
            tmp[w] = entry(i, s);
            w += usize::from(s < t);
            if s == t {
                eq.push((res.ranks[i], res.refs[i].1, i as u32));
            }
        }
        tmp.truncate(w);
        // Fewer than k lie below t (t is the smallest value with k at or below it).
        let ties = k - w;
        if eq.len() > ties {
            eq.select_nth_unstable(ties);
            eq.truncate(ties);
            eq.sort_unstable_by_key(|e| e.2);
        }
        tmp.extend(eq.iter().map(|&(_, _, i)| entry(i as usize, t)));
    } else {
        tmp.extend(sums.iter().enumerate().map(|(i, &s)| entry(i, s)));
    }
    // Sorted by sum, stably (positions ascend already): one counting pass when the
    // sums span a narrow range, as they do among a query's best candidates.
    let lo = tmp.iter().map(|&e| (e >> 32) as usize).min().unwrap_or(0);
    let hi = tmp.iter().map(|&e| (e >> 32) as usize).max().unwrap_or(0);
    order.clear();
    if hi - lo < 4096 {
        counts.clear();
        counts.resize(hi - lo + 2, 0);
        for &e in tmp.iter() {
            counts[(e >> 32) as usize - lo + 1] += 1;
        }
        for j in 1..counts.len() {
            counts[j] += counts[j - 1];
        }
        order.resize(tmp.len(), 0);
        for &e in tmp.iter() {
            let c = &mut counts[(e >> 32) as usize - lo];
            order[*c as usize] = e;
            *c += 1;
        }
    } else {
        order.extend_from_slice(tmp);
        order.sort_unstable();
    }
}

/// Sorts each run of equal sums in `order` (sorted by sum) by its ids in `ids` (one id
/// per entry), moving both together: insertion sort, linear when runs are short (the
/// usual case); past a budget of moves (long runs of equal sums), one sort of the pairs.
fn sort_ties_by_id(order: &mut [u64], ids: &mut [Label]) {
    let mut budget = 4 * order.len() + 16;
    for i in 1..order.len() {
        let mut j = i;
        while j > 0 && order[j - 1] >> 32 == order[j] >> 32 && ids[j - 1] > ids[j] {
            if budget == 0 {
                let mut all: Vec<(u64, Label, u64)> = order
                    .iter()
                    .zip(ids.iter())
                    .map(|(&e, &id)| (e >> 32, id, e))
                    .collect();
                all.sort_unstable();
                for ((o, id), (_, l, e)) in order.iter_mut().zip(ids.iter_mut()).zip(all) {
                    *o = e;
                    *id = l;
                }
                return;
            }
            budget -= 1;
            order.swap(j - 1, j);
            ids.swap(j - 1, j);
            j -= 1;
        }
    }
}

/// Puts the reported vectors of one list into a [`SumReservoir`].
struct SumCollector<'a> {
    ids: &'a [Label],
    list: u32,
    /// The list's rank among the query's probes.
    rank: u32,
    filter: Option<&'a dyn IdFilter>,
    res: &'a mut SumReservoir,
}

impl FsCollector for SumCollector<'_> {
    #[inline]
    fn threshold(&self, _q: usize) -> u16 {
        self.res.thr
    }

    #[inline]
    fn collect(&mut self, _q: usize, sb: usize, mask: u32, sums: &[u16; SUB_BLOCK]) {
        self.res
            .offer(self.list, self.rank, sb, mask, sums, self.ids, self.filter);
    }
}

/// A reported vector: bounds on its key, where its code is.
#[derive(Clone, Copy, Debug)]
struct Cand {
    lo: f32,
    up: f32,
    probe: u32,
    pos: u32,
}

/// Candidates of one query whose key may still be among the k best (Faiss's reservoir
/// collector, with bounds instead of quantised values so lists with different tables
/// compare).
#[derive(Debug, Default)]
struct Reservoir {
    items: Vec<Cand>,
    k: usize,
    cap: usize,
    /// The k-th smallest upper bound seen at the last pruning (`+inf` before).
    bound: f32,
    ups: Vec<f32>,
}

impl Reservoir {
    fn reset(&mut self, k: usize) {
        self.items.clear();
        self.k = k;
        self.cap = (4 * k).max(64);
        self.bound = f32::INFINITY;
    }

    #[inline]
    fn push(&mut self, c: Cand) -> bool {
        self.items.push(c);
        if self.items.len() >= self.cap {
            self.prune();
            return true;
        }
        false
    }

    /// Drops what cannot be in the top k; grows the capacity when most items stay
    /// (many keys within the error bounds of each other).
    fn prune(&mut self) {
        if self.items.len() < self.k || self.k == 0 {
            return;
        }
        self.ups.clear();
        self.ups.extend(self.items.iter().map(|c| c.up));
        let (_, kth, _) = self.ups.select_nth_unstable_by(self.k - 1, f32::total_cmp);
        self.bound = self.bound.min(*kth);
        let b = self.bound;
        self.items.retain(|c| c.lo <= b);
        if self.items.len() * 2 > self.cap {
            self.cap *= 2;
        }
    }
}

/// Scores the reported vectors of one list exactly (float tables) and keeps those
/// whose key is inside the range search's bound.
struct RangeCollector<'a> {
    list: &'a FsList,
    layout: &'a FastScanLayout,
    table: &'a [f32],
    offset: f32,
    bound: f32,
    filter: Option<&'a dyn IdFilter>,
    threshold: u16,
    hits: &'a mut Vec<(f32, Label)>,
}

impl FsCollector for RangeCollector<'_> {
    #[inline]
    fn threshold(&self, _q: usize) -> u16 {
        self.threshold
    }

    fn collect(&mut self, _q: usize, sb: usize, mut mask: u32, _sums: &[u16; SUB_BLOCK]) {
        let n = self.list.ids.len();
        while mask != 0 {
            let i = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            let pos = sb * SUB_BLOCK + i;
            if pos >= n {
                break;
            }
            let id = self.list.ids[pos];
            if self.filter.is_some_and(|f| !f.is_member(id)) {
                continue;
            }
            let key = self.offset + self.layout.table_key(&self.list.codes, pos, self.table);
            if key < self.bound {
                self.hits.push((key, id));
            }
        }
    }
}

/// Puts the reported vectors of one list into the query's reservoir.
struct ListCollector<'a> {
    list: &'a FsList,
    probe: u32,
    lut: &'a QuantizedLut,
    offset: f32,
    slack: f32,
    filter: Option<&'a dyn IdFilter>,
    threshold: u16,
    res: &'a mut Reservoir,
}

impl FsCollector for ListCollector<'_> {
    #[inline]
    fn threshold(&self, _q: usize) -> u16 {
        self.threshold
    }

    #[inline]
    fn collect(&mut self, _q: usize, sb: usize, mut mask: u32, sums: &[u16; SUB_BLOCK]) {
        let n = self.list.ids.len();
        while mask != 0 {
            let i = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            let pos = sb * SUB_BLOCK + i;
            if pos >= n {
                break;
            }
            if let Some(f) = self.filter
                && !f.is_member(self.list.ids[pos])
            {
                continue;
            }
            let est = self.offset + self.lut.key(sums[i]);
            let c = Cand {
                lo: est - self.slack,
                up: est + self.slack,
                probe: self.probe,
                pos: pos as u32,
            };
            if self.res.push(c) {
                self.threshold = self
                    .lut
                    .threshold_with_offset(self.res.bound, self.offset)
                    .unwrap_or(0);
            }
        }
    }
}

impl<Q: CoarseQuantizer> Index for IndexIvfPqFastScan<Q> {
    fn dim(&self) -> usize {
        self.ivf.dim()
    }

    fn metric(&self) -> Metric {
        self.ivf.metric()
    }

    fn len(&self) -> usize {
        self.ntotal
    }

    fn describe(&self) -> String {
        let pq = self.ivf.encoding().pq();
        format!(
            "IndexIvfPqFastScan(d={}, nlist={}, PQ{}x4fs{}, bbs={}, {})",
            self.dim(),
            self.nlist(),
            pq.m(),
            if self.ivf.encoding().by_residual() {
                "r"
            } else {
                ""
            },
            self.layout.bbs(),
            self.metric()
        )
    }

    fn is_trained(&self) -> bool {
        self.ivf.is_trained()
    }

    fn train(&mut self, x: VectorsRef<'_>) -> Result<()> {
        if self.ntotal > 0 {
            return Err(Error::not_supported(
                "train on a non-empty index",
                self.describe(),
            ));
        }
        self.ivf.train(x)
    }

    fn add(&mut self, x: VectorsRef<'_>) -> Result<()> {
        let n0 = self.ntotal as Label;
        let ids: Vec<Label> = (n0..n0 + x.len() as Label).collect();
        self.add_with_ids(x, &ids)
    }

    fn add_with_ids(&mut self, x: VectorsRef<'_>, ids: &[Label]) -> Result<()> {
        self.ivf.check_trained()?;
        x.check_dim(self.dim())?;
        x.check_finite()?;
        if ids.len() != x.len() {
            return Err(Error::LengthMismatch {
                what: "ids",
                expected: x.len(),
                got: ids.len(),
            });
        }
        if let Some(&bad) = ids.iter().find(|&&id| id == vq_core::NO_LABEL) {
            return Err(Error::invalid_param(
                "ids",
                format!("id {bad} is reserved for missing results"),
            ));
        }
        if x.is_empty() {
            return Ok(());
        }
        self.ivf.ensure_prepared()?;
        let assigned = self.ivf.assign_lists(x)?;
        let codes = self.ivf.encode(x, &assigned)?;
        // Nothing can fail from here: the lists change only now.
        let pq = self.ivf.encoding().pq();
        let cs = pq.code_size();
        let m = pq.m();
        let mut cids = vec![0u32; m];
        let mut nib = vec![0u8; m];
        for ((c, &l), &id) in codes.chunks_exact(cs).zip(&assigned).zip(ids) {
            pq.unpack_code(c, &mut cids);
            for (o, &v) in nib.iter_mut().zip(&cids) {
                *o = v as u8;
            }
            let list = &mut self.lists[l as usize];
            let pos = list.ids.len();
            list.ids.push(id);
            list.codes.resize(self.layout.bytes_for(pos + 1), 0);
            self.layout.write_code(&mut list.codes, pos, &nib);
        }
        self.ntotal += x.len();
        Ok(())
    }

    fn search_into(
        &self,
        queries: VectorsRef<'_>,
        k: usize,
        params: &SearchParams<'_>,
        out: &mut SearchResults,
    ) -> Result<()> {
        self.ivf.check_trained()?;
        check_search(self, queries, k)?;
        let nq = queries.len();
        if nq == 0 {
            out.reset(0, k, self.metric());
            return Ok(());
        }
        let (lists, coarse_dis) = self.ivf.coarse(queries, params)?;
        let nprobe = lists.len() / nq.max(1);
        let max_codes = params.max_codes.unwrap_or(self.ivf.max_codes);
        let filter = params.selector;
        let approximate = params.approximate;
        let level = self.kernel_level();
        let metric = self.metric();
        let threads = rayon::current_num_threads().max(1);
        out.reset(nq, k, metric);
        let (dist, labels) = out.parts_mut();
        if let Some(chunk) = self.list_major_chunk(nq, k, nprobe, threads, max_codes) {
            dist.par_chunks_mut(chunk * k)
                .zip(labels.par_chunks_mut(chunk * k))
                .enumerate()
                .try_for_each_init(
                    || (TopK::new(k), GroupScratch::default()),
                    |(top, gs), (ci, (dc, lc))| {
                        self.search_list_major(
                            queries,
                            ci * chunk,
                            &lists,
                            nprobe,
                            filter,
                            level,
                            approximate,
                            dc,
                            lc,
                            top,
                            gs,
                        )
                    },
                )
        } else if nq >= threads || nprobe == 1 || max_codes > 0 || approximate {
            // Approximate scans (a refinement's candidates) keep the sums tied with the
            // k-th by probe rank, then position, over the query's whole probe list: split
            // over threads, each part would rank its own ties and the merge pick by id,
            // so the candidates (and the refined results) would follow the thread count.
            dist.par_chunks_mut(k)
                .zip(labels.par_chunks_mut(k))
                .enumerate()
                .try_for_each_init(
                    || (TopK::new(k), Scratch::default()),
                    |(top, scratch), (qi, (dc, lc))| -> Result<()> {
                        top.clear();
                        let p = qi * nprobe..(qi + 1) * nprobe;
                        self.scan_probes(
                            queries.row(qi),
                            &lists[p.clone()],
                            &coarse_dis[p],
                            max_codes,
                            filter,
                            level,
                            approximate,
                            top,
                            scratch,
                        )?;
                        top.write_sorted(metric, dc, lc);
                        Ok(())
                    },
                )
        } else {
            // Few queries: split each query's probes over the threads and merge.
            let parts = (2 * threads).min(nprobe).max(1);
            let per = nprobe.div_ceil(parts);
            for qi in 0..nq {
                let pl = &lists[qi * nprobe..(qi + 1) * nprobe];
                let pd = &coarse_dis[qi * nprobe..(qi + 1) * nprobe];
                let tops = (0..parts)
                    .into_par_iter()
                    .map(|p| -> Result<TopK> {
                        let r = (p * per).min(nprobe)..((p + 1) * per).min(nprobe);
                        let mut top = TopK::new(k);
                        let mut scratch = Scratch::default();
                        self.scan_probes(
                            queries.row(qi),
                            &pl[r.clone()],
                            &pd[r],
                            0,
                            filter,
                            level,
                            approximate,
                            &mut top,
                            &mut scratch,
                        )?;
                        Ok(top)
                    })
                    .collect::<Result<Vec<_>>>()?;
                let mut top = TopK::new(k);
                for t in &tops {
                    top.merge(t);
                }
                top.write_sorted(
                    metric,
                    &mut dist[qi * k..(qi + 1) * k],
                    &mut labels[qi * k..(qi + 1) * k],
                );
            }
            Ok(())
        }
    }

    /// Every vector of the probed lists whose ADC distance (the float tables' key, as
    /// [`IndexIvf`] with 4-bit PQ scores it, up to the rounding of a sum taken in
    /// another order: a vector within an ulp of the radius may fall either side) is
    /// within `radius`: each list is scanned with the quantised tables, and only vectors
    /// whose quantised sum could be inside are scored exactly. `max_codes` does not
    /// apply, as for [`IndexIvf`].
    fn range_search(
        &self,
        queries: VectorsRef<'_>,
        radius: f32,
        params: &SearchParams<'_>,
    ) -> Result<RangeSearchResults> {
        self.ivf.check_trained()?;
        check_range_search(self, queries, radius)?;
        let nq = queries.len();
        let metric = self.metric();
        if nq == 0 || self.ntotal == 0 {
            return Ok(RangeSearchResults::from_lists(vec![Vec::new(); nq], metric));
        }
        let (lists, coarse_dis) = self.ivf.coarse(queries, params)?;
        if let Some(&bad) = lists.iter().find(|&&l| l >= self.lists.len() as Label) {
            return Err(Error::invalid_param(
                "lists",
                format!(
                    "the coarse quantizer returned list {bad} (nlist = {})",
                    self.lists.len()
                ),
            ));
        }
        let nprobe = lists.len() / nq;
        let bound = metric.to_key(radius);
        let filter = params.selector;
        let level = self.kernel_level();
        let m2 = self.layout.m2();
        let tsize = self.layout.m() * 16;
        let hits = (0..nq)
            .into_par_iter()
            .map_init(
                || (QuantizedLut::default(), Vec::new()),
                |(lut, table), qi| -> Result<Vec<(f32, Label)>> {
                    let mut lt = ListTables::new(
                        self.ivf.encoding(),
                        self.ivf.quantizer(),
                        queries.row(qi),
                        metric,
                    )?;
                    let shared = lt.is_shared();
                    if shared {
                        lut.set_with_max(lt.shared_table(), m2, self.lut_max)?;
                    }
                    let mut hits = Vec::new();
                    for p in qi * nprobe..(qi + 1) * nprobe {
                        let Ok(l) = usize::try_from(lists[p]) else {
                            continue;
                        };
                        let list = &self.lists[l];
                        if list.ids.is_empty() {
                            continue;
                        }
                        let offset = if shared {
                            lt.offset(coarse_dis[p])
                        } else {
                            table.resize(tsize, 0.0);
                            let off = lt.table(l, coarse_dis[p], table)?;
                            lut.set_with_max(table, m2, self.lut_max)?;
                            off
                        };
                        let Some(threshold) = lut.threshold_with_offset(bound, offset) else {
                            continue;
                        };
                        let mut c = RangeCollector {
                            list,
                            layout: &self.layout,
                            table: if shared { lt.shared_table() } else { table },
                            offset,
                            bound,
                            filter,
                            threshold,
                            hits: &mut hits,
                        };
                        let nsub = list.ids.len().div_ceil(SUB_BLOCK);
                        fastscan::scan(level, &self.layout, &[&*lut], &list.codes, nsub, &mut c)?;
                    }
                    Ok(hits
                        .into_iter()
                        .map(|(key, id)| (metric.from_key(key), id))
                        .collect())
                },
            )
            .collect::<Result<Vec<_>>>()?;
        Ok(RangeSearchResults::from_lists(hits, metric))
    }

    fn reset(&mut self) {
        for l in &mut self.lists {
            *l = FsList::default();
        }
        self.ntotal = 0;
    }

    /// Finds the id by scanning the lists' ids (no direct map is kept), then decodes
    /// its code (plus the centroid, by residual).
    fn reconstruct_into(&self, id: Label, out: &mut [f32]) -> Result<()> {
        if out.len() != self.dim() {
            return Err(Error::DimensionMismatch {
                expected: self.dim(),
                got: out.len(),
            });
        }
        let found = self
            .lists
            .iter()
            .enumerate()
            .find_map(|(l, list)| list.ids.iter().position(|&x| x == id).map(|p| (l, p)));
        let Some((l, pos)) = found else {
            return Err(Error::IdNotFound { id });
        };
        let enc = self.ivf.encoding();
        let pq = enc.pq();
        let mut nib = vec![0u8; pq.m()];
        self.layout.read_code(&self.lists[l].codes, pos, &mut nib);
        let cids: Vec<u32> = nib.iter().map(|&c| u32::from(c)).collect();
        let mut code = vec![0u8; pq.code_size()];
        pq.pack_code(&cids, &mut code);
        enc.decode_into(&code, out)?;
        if enc.by_residual() {
            let mut c = vec![0f32; self.dim()];
            self.ivf.quantizer().centroid_into(l, &mut c)?;
            out.iter_mut().zip(&c).for_each(|(o, c)| *o += c);
        }
        Ok(())
    }

    fn removal_keeps_ids(&self) -> bool {
        true
    }

    fn remove_ids(&mut self, selector: &dyn IdFilter) -> Result<usize> {
        let mut removed = 0;
        let zero = vec![0u8; self.layout.m()];
        for list in &mut self.lists {
            let n = list.ids.len();
            let mut w = 0;
            for r in 0..n {
                if selector.is_member(list.ids[r]) {
                    continue;
                }
                if w != r {
                    self.layout.move_code(&mut list.codes, r, w);
                    list.ids[w] = list.ids[r];
                }
                w += 1;
            }
            if w == n {
                continue;
            }
            let cap = self.layout.bytes_for(w) / self.layout.sub_block_bytes() * SUB_BLOCK;
            for i in w..n.min(cap) {
                self.layout.write_code(&mut list.codes, i, &zero);
            }
            list.ids.truncate(w);
            list.codes.truncate(self.layout.bytes_for(w));
            removed += n - w;
        }
        self.ntotal -= removed;
        Ok(removed)
    }

    fn search_param_names(&self) -> Vec<String> {
        self.ivf.search_param_names()
    }

    fn set_search_param(&mut self, name: &str, value: &str) -> Result<()> {
        self.ivf.set_search_param(name, value)
    }

    /// `lut_bits` (6, 7 or 8; default 7: see [`vq_pq::IndexPQFastScan`]), and those of
    /// the inverted file (`seed`, `niter`, `nprobe`, `max_codes`).
    fn set_build_param(&mut self, name: &str, value: &str) -> Result<()> {
        if name == "lut_bits" {
            self.lut_max = fastscan::lut_max_for_bits(value)?;
            return Ok(());
        }
        self.ivf.set_build_param(name, value)
    }

    /// Sections: `bbs` (checked on load), `lut_max` (the `lut_bits` setting), the
    /// inverted-file part under `ivf/` (coarse
    /// quantizer, product quantizer, parameters), then the lists: `lists/sizes`
    /// (`nlist` `u64`), `lists/ids` (`i64`) and `lists/codes` (each list's whole blocks,
    /// one after the other).
    fn save_state(&self, w: &mut StateWriter<'_>) -> Result<()> {
        w.put_usize("bbs", self.layout.bbs())?;
        w.put_usize("lut_max", usize::from(self.lut_max))?;
        w.scope("ivf", |w| self.ivf.save_state(w))?;
        let sizes: Vec<u64> = self.lists.iter().map(|l| l.ids.len() as u64).collect();
        let ids: Vec<i64> = self
            .lists
            .iter()
            .flat_map(|l| l.ids.iter().copied())
            .collect();
        let codes: Vec<u8> = self
            .lists
            .iter()
            .flat_map(|l| l.codes.iter().copied())
            .collect();
        w.scope("lists", |w| {
            w.put_u64s("sizes", &sizes)?;
            w.put_i64s("ids", &ids)?;
            w.put_bytes("codes", &codes)
        })
    }

    /// Checks the block size and shape, loads the inverted-file part, then the lists;
    /// on error the index is left empty.
    fn load_state(&mut self, r: &mut StateReader) -> Result<()> {
        let bbs = r.get_usize("bbs", usize::MAX)?;
        if bbs != self.layout.bbs() {
            return Err(r.error("bbs", format!("{bbs}, the index has {}", self.layout.bbs())));
        }
        let lut_max = r.get_usize("lut_max", 255)?;
        if ![63, 127, 255].contains(&lut_max) {
            return Err(r.error("lut_max", format!("{lut_max} is not 63, 127 or 255")));
        }
        self.lut_max = lut_max as u8;
        self.reset();
        r.scope("ivf", |r| self.ivf.load_state(r))?;
        let (sizes, ids, codes) = r.scope("lists", |r| {
            Ok((
                r.get_u64s("sizes")?,
                r.get_i64s("ids")?,
                r.get_bytes("codes")?,
            ))
        })?;
        if sizes.len() != self.nlist() {
            return Err(r.error(
                "lists/sizes",
                format!("{} lists, the index has {}", sizes.len(), self.nlist()),
            ));
        }
        let total = sizes.iter().try_fold(0u64, |a, &s| a.checked_add(s));
        if total != Some(ids.len() as u64) {
            return Err(r.error(
                "lists/ids",
                format!("{} ids for list sizes summing to {total:?}", ids.len()),
            ));
        }
        let want: usize = sizes
            .iter()
            .map(|&s| self.layout.bytes_for(s as usize))
            .sum();
        if want != codes.len() {
            return Err(r.error(
                "lists/codes",
                format!("{} bytes, the list sizes need {want}", codes.len()),
            ));
        }
        if !ids.is_empty() && !self.ivf.is_trained() {
            return Err(r.error("lists", "entries stored in an untrained index"));
        }
        let (mut io, mut co) = (0, 0);
        let mut lists = Vec::with_capacity(sizes.len());
        for &s in &sizes {
            let s = s as usize;
            let b = self.layout.bytes_for(s);
            lists.push(FsList {
                ids: ids[io..io + s].to_vec(),
                codes: codes[co..co + b].to_vec(),
            });
            io += s;
            co += b;
        }
        self.lists = lists;
        self.ntotal = ids.len();
        Ok(())
    }

    fn bytes_per_vector(&self) -> f64 {
        self.layout.m2() as f64 / 2.0 + std::mem::size_of::<Label>() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The counting selection equals sorting every `(sum, rank, position)` and
        /// keeping the first k (then ordered by sum and position), whatever the spread of
        /// the sums (narrow: the counting sort; wide: the fallback) and however many ties.
        #[test]
        fn select_sorted_equals_a_full_sort(
            sums in prop::collection::vec(0u16..64, 0..300),
            wide in prop::collection::vec(any::<u16>(), 0..300),
            ranks in prop::collection::vec(0u32..4, 300),
            k in 1usize..120,
        ) {
            let mut pick = Pick::default();
            for v in [&sums, &wide] {
                let n = v.len();
                let res = SumReservoir {
                    sums: v.to_vec(),
                    refs: (0..n as u32).map(|i| (0, i)).collect(),
                    ranks: ranks[..n].to_vec(),
                    n,
                    k,
                    ..SumReservoir::default()
                };
                let mut all: Vec<(u16, u32, usize)> =
                    v.iter().enumerate().map(|(i, &s)| (s, ranks[i], i)).collect();
                all.sort_unstable();
                all.truncate(k);
                let mut want: Vec<u64> = all
                    .iter()
                    .map(|&(s, _, i)| (u64::from(s) << 32) | i as u64)
                    .collect();
                want.sort_unstable();
                select_sorted(&res, k, &mut pick);
                prop_assert_eq!(&pick.order, &want);
                if !v.is_empty() {
                    let mut s = v.to_vec();
                    s.sort_unstable();
                    let kk = k.min(v.len());
                    prop_assert_eq!(kth_smallest(v, kk), s[kk - 1]);
                }
            }
        }

        /// Probes grouped by counting equal probes grouped by sorting: by list, then
        /// query and rank, without refused lists, padding or inactive queries.
        #[test]
        fn probes_grouped_by_counting_equal_a_sort(
            probes in prop::collection::vec(-1i64..40, 0..240),
            active in prop::collection::vec(any::<bool>(), 60),
            nprobe in 1usize..5,
        ) {
            let n = (probes.len() / nprobe).min(active.len());
            let probes = &probes[..n * nprobe];
            let keep = |l: usize| l % 7 != 3;
            let (mut a, mut b, mut starts) = (Vec::new(), Vec::new(), Vec::new());
            group_probes(probes, nprobe, &active[..n], keep, 40, true, &mut a, &mut starts);
            group_probes(probes, nprobe, &active[..n], keep, 40, false, &mut b, &mut starts);
            let mut want = Vec::new();
            for i in (0..n).filter(|&i| active[i]) {
                for (r, &l) in probes[i * nprobe..(i + 1) * nprobe].iter().enumerate() {
                    if l >= 0 && keep(l as usize) {
                        want.push((l as u32, i as u32, r as u32));
                    }
                }
            }
            want.sort_unstable();
            prop_assert_eq!(&a, &want);
            prop_assert_eq!(&b, &want);
        }

        /// Runs of equal sums end up ordered by id, the sums' order kept, each id with
        /// its entry.
        #[test]
        fn sort_ties_by_id_orders_each_run(
            mut pairs in prop::collection::vec((0u16..8, 0i64..1000), 0..200),
        ) {
            pairs.sort_by_key(|p| p.0);
            let mut order: Vec<u64> = pairs
                .iter()
                .enumerate()
                .map(|(i, &(s, _))| (u64::from(s) << 32) | i as u64)
                .collect();
            let mut ids: Vec<Label> = pairs.iter().map(|p| p.1).collect();
            sort_ties_by_id(&mut order, &mut ids);
            let mut want = pairs.clone();
            want.sort();
            let got: Vec<(u16, i64)> = order
                .iter()
                .zip(&ids)
                .map(|(&e, &id)| ((e >> 32) as u16, id))
                .collect();
            prop_assert_eq!(got, want.clone());
            for (&e, &id) in order.iter().zip(&ids) {
                prop_assert_eq!(pairs[(e & 0xffff_ffff) as usize].1, id);
            }
        }
    }
}
