//! Graph construction: neighbour selection, insertion with per-node locks, the deterministic
//! batch build, deletion repair and the reachability pass.

use std::cell::RefCell;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU32, AtomicUsize};
use std::sync::{Mutex, MutexGuard};

use rayon::prelude::*;
use vq_core::distance::Kernels;
use vq_core::{Result, VectorsRef};

use crate::graph::{Hnsw, NONE, Near, NodeDistance, PREFETCH_LINES, Scratch};
use crate::steer::{SteerCodes, rescore};
use crate::storage::{HnswStorage, vector_distance};

/// Working memory of one builder thread.
#[derive(Debug, Default)]
pub(crate) struct BuildScratch {
    pub(crate) search: Scratch,
    cands: Vec<Near>,
    sel: Vec<Near>,
    dec: Vec<f32>,
    tmp: Vec<f32>,
    tmp2: Vec<f32>,
    ids: Vec<u32>,
    /// Positions in `sel` of the links the heuristic kept that were not known to it.
    fresh: Vec<u32>,
    /// Per candidate of a re-selection: kept together by the list's last selection.
    known: Vec<bool>,
    /// A re-selection's candidates with those flags, while they are sorted.
    flagged: Vec<(Near, bool)>,
    /// Positions of a re-selection's candidates whose distances it computes.
    need: Vec<u32>,
    /// Per-query terms of a [`crate::steer::SteerQuery`].
    steer: Vec<f32>,
}

impl BuildScratch {
    /// The buffers [`select_neighbors`] works in.
    fn select(&mut self) -> SelectScratch<'_> {
        SelectScratch {
            dec: &mut self.dec,
            tmp: &mut self.tmp,
            fresh: &mut self.fresh,
        }
    }
}

thread_local! {
    static BUILD_SCRATCH: RefCell<BuildScratch> = RefCell::new(BuildScratch::default());
    static SEARCH_SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `f` with this thread's build scratch (a fresh one if it is already in use).
pub(crate) fn with_build_scratch<R>(f: impl FnOnce(&mut BuildScratch) -> R) -> R {
    BUILD_SCRATCH.with(|c| match c.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        Err(_) => f(&mut BuildScratch::default()),
    })
}

/// Runs `f` with this thread's search scratch (a fresh one if it is already in use).
pub(crate) fn with_search_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SEARCH_SCRATCH.with(|c| match c.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        Err(_) => f(&mut Scratch::default()),
    })
}

/// The vector of node `id`: the stored row, or its decoding into `buf`.
pub(crate) fn node_vector<'b, S: HnswStorage>(
    s: &'b S,
    id: u32,
    buf: &'b mut Vec<f32>,
) -> &'b [f32] {
    if let Some(r) = s.raw(id) {
        return r;
    }
    buf.resize(s.dim(), 0.0);
    s.decode(id, buf);
    buf
}

/// Malkov's neighbour-selection heuristic over `cands` (sorted nearest first, distances to
/// the base node): a candidate is kept unless an already kept neighbour is closer to it than
/// the base is. At most `cap` are kept, in `out`.
///
/// `known` is empty, or flags the candidates (one per candidate) that an earlier run of the
/// heuristic kept together for the same base, with the same distances to it as in `cands`:
/// none of them is closer to a later one than the base, so pairs of flagged candidates are
/// not compared again (the result is the same).
/// Re-selecting a full list for one new link then costs about one distance per kept link
/// instead of one per pair.
#[allow(clippy::too_many_arguments)]
pub(crate) fn select_neighbors<S: HnswStorage>(
    s: &S,
    cands: &[Near],
    known: &[bool],
    cap: usize,
    out: &mut Vec<Near>,
    dec: &mut Vec<f32>,
    tmp: &mut Vec<f32>,
    fresh: &mut Vec<u32>,
) {
    out.clear();
    dec.clear();
    fresh.clear();
    let k = Kernels::get();
    let metric = s.metric();
    let d = s.dim();
    for (ci, c) in cands.iter().enumerate() {
        if out.len() >= cap {
            break;
        }
        let was_kept = known.get(ci).copied().unwrap_or(false);
        let cv = node_vector(s, c.id, tmp);
        let dominated = |i: usize| {
            let rv = match s.raw(out[i].id) {
                Some(v) => v,
                None => &dec[i * d..][..d],
            };
            vector_distance(k, metric, cv, rv) < c.d
        };
        let good = if was_kept {
            !fresh.iter().any(|&i| dominated(i as usize))
        } else {
            !(0..out.len()).any(dominated)
        };
        if good {
            if !was_kept {
                fresh.push(out.len() as u32);
            }
            out.push(*c);
            if s.raw(c.id).is_none() {
                dec.extend_from_slice(cv);
            }
        }
    }
}

/// A new node's links on `level` from its candidates `cands` (sorted nearest first), in
/// `out`. Under Faiss's rule ([`Hnsw::link_all`]) a node with fewer candidates than its list
/// holds links them all, as Faiss's `shrink_neighbor_list` leaves such a list alone: with
/// `efConstruction` below `2·M` level 0 becomes denser and reaches higher recall per `ef`.
/// Otherwise (and always with the rule off) the heuristic selects.
/// The list gets no pruned prefix: its distances are the search's (query to node, which
/// for SQ or PQ storage is the codec's asymmetric distance), not the symmetric ones a
/// re-selection computes.
fn new_links<S: HnswStorage>(
    g: &Hnsw,
    s: &S,
    cands: &[Near],
    level: usize,
    out: &mut Vec<Near>,
    sc: &mut SelectScratch<'_>,
) {
    if g.takes_all(cands.len(), level) {
        out.clear();
        out.extend_from_slice(cands);
    } else {
        select_neighbors(
            s,
            cands,
            &[],
            g.capacity(level),
            out,
            sc.dec,
            sc.tmp,
            sc.fresh,
        );
    }
}

/// Buffers of [`select_neighbors`] borrowed from a [`BuildScratch`].
struct SelectScratch<'a> {
    dec: &'a mut Vec<f32>,
    tmp: &'a mut Vec<f32>,
    fresh: &'a mut Vec<u32>,
}

/// Level-0 distances from each node to the links of its pruned prefix, kept while one
/// build runs: a re-selection then computes only the distances to links appended since
/// the last one (usually the one link that overflowed the list), not to the whole list.
/// Stored as `!bits` so that 0 means unknown (a node whose list was not re-selected in
/// this build, or only partly known).
pub(crate) struct PrefixDistances {
    d: Vec<AtomicU32>,
    w: usize,
}

impl PrefixDistances {
    /// The distances of a build adding `adding` nodes to `g` (counted in `g.len()`), when
    /// they pay: `4·2M` bytes per node to write once, against about one distance saved per
    /// link of each re-selection, so only when the add is at least an eighth of the graph.
    pub(crate) fn for_build(g: &Hnsw, adding: usize) -> Option<PrefixDistances> {
        (adding.saturating_mul(8) >= g.len()).then(|| Self::new(g.len(), g.capacity(0)))
    }

    /// Unknown distances for `nodes` nodes of a graph whose level-0 lists hold `w`.
    fn new(nodes: usize, w: usize) -> PrefixDistances {
        let mut d = Vec::new();
        // Written by every thread: the page faults of fresh memory run in parallel.
        d.par_extend(
            (0..nodes.saturating_mul(w))
                .into_par_iter()
                .map(|_| AtomicU32::new(0)),
        );
        PrefixDistances { d, w }
    }

    /// The distance from `node` to the `i`-th link of its list, when known.
    #[inline]
    fn get(&self, node: u32, i: usize) -> Option<f32> {
        let v = self.d.get(node as usize * self.w + i)?.load(Relaxed);
        (v != 0).then(|| f32::from_bits(!v))
    }

    /// Records the distances of `node`'s new list, in order.
    #[inline]
    fn set(&self, node: u32, ds: impl Iterator<Item = f32>) {
        let at = node as usize * self.w;
        if let Some(row) = self.d.get(at..at + self.w) {
            for (a, d) in row.iter().zip(ds) {
                a.store(!d.to_bits(), Relaxed);
            }
        }
    }
}

/// How many rows ahead of its distances a re-selection starts loading them.
const ROWS_AHEAD: usize = 8;

/// Sorts nearest first and drops repeated nodes (keeping the nearest copy).
fn sort_dedup(v: &mut Vec<Near>) {
    v.sort_unstable();
    let mut seen = std::collections::HashSet::with_capacity(v.len());
    v.retain(|n| seen.insert(n.id));
}

/// Re-selects `target`'s list on `level` from its current neighbours plus the nodes
/// `extra`, keeping at most [`Hnsw::reselect_cap`] (Faiss's `add_link` with its
/// `prune_headroom`: the list is left with room for the next links). Every distance is the storage's symmetric one between
/// stored vectors (as Faiss's `add_link` does), so a re-selection repeats exactly what an
/// earlier one computed: the links of the list's pruned prefix are known to the heuristic
/// ([`select_neighbors`]), and the new list is all pruned prefix.
fn reprune<S: HnswStorage>(
    g: &Hnsw,
    s: &S,
    target: u32,
    level: usize,
    extra: &[u32],
    cache: Option<&PrefixDistances>,
    sc: &mut BuildScratch,
) {
    let k = Kernels::get();
    let metric = s.metric();
    g.neighbors_into(target, level, &mut sc.ids);
    let pruned = g.pruned_prefix(target, level);
    let tv = node_vector(s, target, &mut sc.tmp2);
    sc.flagged.clear();
    let pruned = if g.full_reselect { 0 } else { pruned };
    // The rows are read a few ahead of their distances, so their loads overlap.
    let lines = (4 * s.dim()).div_ceil(64).min(PREFETCH_LINES);
    let fetch = |x: u32| {
        if let Some(r) = s.raw(x) {
            vq_core::distance::prefetch(r, lines);
        }
    };
    let all = sc.ids.len() + extra.len();
    let at = |i: usize| {
        if i < sc.ids.len() {
            sc.ids[i]
        } else {
            extra[i - sc.ids.len()]
        }
    };
    let cache = cache.filter(|_| level == 0);
    let known_d = |i: usize| {
        if i < pruned {
            cache.and_then(|c| c.get(target, i))
        } else {
            None
        }
    };
    // The positions whose distances must be computed (rows loaded a few ahead).
    sc.need.clear();
    for i in 0..all {
        match known_d(i) {
            Some(d) => {
                // Not scored here, but the heuristic may compare it with the new links.
                fetch(at(i));
                sc.flagged.push((Near { d, id: at(i) }, true));
            }
            None => sc.need.push(i as u32),
        }
    }
    for &i in sc.need.iter().take(ROWS_AHEAD) {
        fetch(at(i as usize));
    }
    for (j, &i) in sc.need.iter().enumerate() {
        if let Some(&ahead) = sc.need.get(j + ROWS_AHEAD) {
            fetch(at(ahead as usize));
        }
        let i = i as usize;
        let x = at(i);
        let xv = node_vector(s, x, &mut sc.tmp);
        let d = vector_distance(k, metric, tv, xv);
        sc.flagged.push((Near { d, id: x }, i < pruned));
    }
    // Every distance is one function of the two stored vectors, so a node listed twice
    // (callers pass new links that are not in the list already) sorts next to itself.
    sc.flagged.sort_unstable_by_key(|x| x.0);
    sc.flagged.dedup_by_key(|x| x.0.id);
    sc.cands.clear();
    sc.cands.extend(sc.flagged.iter().map(|x| x.0));
    sc.known.clear();
    sc.known.extend(sc.flagged.iter().map(|x| x.1));
    select_neighbors(
        s,
        &sc.cands,
        &sc.known,
        g.reselect_cap(level),
        &mut sc.sel,
        &mut sc.dec,
        &mut sc.tmp,
        &mut sc.fresh,
    );
    sc.ids.clear();
    sc.ids.extend(sc.sel.iter().map(|n| n.id));
    g.set_pruned_neighbors(target, level, &sc.ids, sc.ids.len());
    if let Some(c) = cache {
        c.set(target, sc.sel.iter().map(|n| n.d));
    }
}

/// Whether `id` is marked deleted in the bit set.
#[inline]
pub(crate) fn is_deleted(deleted: &[u64], id: u32) -> bool {
    deleted
        .get(id as usize / 64)
        .is_some_and(|w| w >> (id % 64) & 1 == 1)
}

/// The `efConstruction` nearest candidates on `level` from `start` (appended to `out`,
/// nearest first); `start` moves to the nearest, where the next level down begins.
fn level_candidates<D: NodeDistance>(
    g: &Hnsw,
    q: &mut D,
    level: usize,
    start: &mut Near,
    search: &mut Scratch,
    out: &mut Vec<Near>,
    accept: impl Fn(u32) -> bool,
) {
    g.search_level(
        q,
        &[*start],
        level,
        g.ef_construction,
        search,
        accept,
        |_, _| {},
    );
    out.extend(search.top.drain());
    out.sort_unstable();
    if let Some(&b) = out.first() {
        *start = b;
    }
}

/// The build's steering codes ([`crate::steer`]) when they pay: raw storage, steering on,
/// and enough nodes to add that coding every stored vector (about one distance's work per
/// vector) is small beside inserting them (hundreds of distances each).
pub(crate) fn steer_codes<S: HnswStorage>(g: &Hnsw, s: &S, adding: usize) -> Option<SteerCodes> {
    if !g.steer || adding.saturating_mul(64) < s.len() {
        return None;
    }
    SteerCodes::new(s.raw_rows()?, s.dim(), s.metric())
}

/// Shared state of a parallel (lock-based) build.
pub(crate) struct LockedBuild<'a, S> {
    g: &'a Hnsw,
    s: &'a S,
    deleted: &'a [u64],
    steer: Option<SteerCodes>,
    locks: Vec<Mutex<()>>,
    entry: Mutex<(u32, usize)>,
    prefix: Option<PrefixDistances>,
}

impl<'a, S: HnswStorage> LockedBuild<'a, S> {
    /// A build of `adding` nodes (pushed to `g` already, lists empty).
    pub(crate) fn new(
        g: &'a Hnsw,
        s: &'a S,
        deleted: &'a [u64],
        steer: Option<SteerCodes>,
        adding: usize,
    ) -> Self {
        let nlocks = g.len().next_power_of_two().clamp(1, 1 << 16);
        LockedBuild {
            g,
            s,
            deleted,
            steer,
            locks: (0..nlocks).map(|_| Mutex::new(())).collect(),
            entry: Mutex::new((g.entry, g.max_level)),
            prefix: PrefixDistances::for_build(g, adding),
        }
    }

    fn lock(&self, node: u32) -> MutexGuard<'_, ()> {
        let m = &self.locks[node as usize & (self.locks.len() - 1)];
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The entry point and top level at the end.
    pub(crate) fn entry(&self) -> (u32, usize) {
        *self.entry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Inserts `node` (storage written, lists empty) with `x` its original vector.
    pub(crate) fn insert(&self, node: u32, x: &[f32], sc: &mut BuildScratch) -> Result<()> {
        let mut q = self.s.query(x)?;
        match &self.steer {
            Some(st) => {
                let mut buf = std::mem::take(&mut sc.steer);
                let mut nav = st.query(x, &mut buf);
                self.insert_with(node, &mut nav, Some(&mut q), sc);
                sc.steer = buf;
            }
            None => self.insert_with(node, &mut q, None::<&mut S::Query<'_>>, sc),
        }
        Ok(())
    }

    /// [`LockedBuild::insert`] with the searches scored by `nav`, and the candidates they
    /// find scored again by `exact` when given.
    fn insert_with<D: NodeDistance, E: NodeDistance>(
        &self,
        node: u32,
        nav: &mut D,
        mut exact: Option<&mut E>,
        sc: &mut BuildScratch,
    ) {
        let g = self.g;
        let level = g.levels[node as usize] as usize;
        let mut guard = self.entry.lock().unwrap_or_else(|e| e.into_inner());
        let (ep, maxl) = *guard;
        if ep == NONE {
            *guard = (node, level);
            return;
        }
        let hold = if level > maxl {
            Some(guard)
        } else {
            drop(guard);
            None
        };
        let d_ep = nav.distance(ep);
        let (cur, dcur) = g.descend(nav, (ep, d_ep), maxl, level + 1, &mut sc.search);
        let deleted = self.deleted;
        let mut start = Near { d: dcur, id: cur };
        for l in (0..=level.min(maxl)).rev() {
            let mut cands = std::mem::take(&mut sc.cands);
            cands.clear();
            level_candidates(g, nav, l, &mut start, &mut sc.search, &mut cands, |id| {
                id != node && !is_deleted(deleted, id)
            });
            // A list that takes every candidate (Faiss's rule) needs no exact distances:
            // they would only reorder it.
            if let Some(e) = exact.as_mut().filter(|_| !g.takes_all(cands.len(), l)) {
                rescore(&mut **e, &mut cands);
            }
            let mut sel = std::mem::take(&mut sc.sel);
            new_links(g, self.s, &cands, l, &mut sel, &mut sc.select());
            sc.cands = cands;
            sc.ids.clear();
            sc.ids.extend(sel.iter().map(|n| n.id));
            {
                let _l = self.lock(node);
                g.set_neighbors(node, l, &sc.ids);
            }
            // Each back link reads its target's list: start loading them all.
            for nb in &sel {
                vq_core::distance::prefetch(g.list(nb.id, l), usize::MAX);
            }
            for nb in &sel {
                self.add_link(nb.id, node, l, sc);
            }
            sc.sel = sel;
        }
        if let Some(mut h) = hold {
            *h = (node, level);
        }
    }

    /// Adds the link `target → src` on `level`, re-selecting `target`'s list when full.
    fn add_link(&self, target: u32, src: u32, level: usize, sc: &mut BuildScratch) {
        let _l = self.lock(target);
        let g = self.g;
        g.neighbors_into(target, level, &mut sc.ids);
        if sc.ids.contains(&src) || g.try_append(target, level, src) {
            return;
        }
        reprune(g, self.s, target, level, &[src], self.prefix.as_ref(), sc);
    }
}

/// Inserts `slots` (rows of `x`, in order) with per-node locks, in parallel.
///
/// Every thread of the pool takes the next slot from one shared counter (the schedule of
/// hnswlib's `ParallelFor`), so the slots go in about in order whatever the thread count,
/// and rebuilding gives about the same graph. Giving each thread one long range of slots
/// instead (a parallel iterator's split into halves) built graphs that varied more from
/// build to build and were worse on average on Fashion-MNIST, whose rows are in random
/// order (2 threads, 10-R@10): `HNSW16`, `efConstruction` 40, `efSearch` 32: 0.9881 over
/// ten seeds (0.9835–0.9905) against 0.9900 (0.9884–0.9911), as good as one thread's
/// 0.9901; `efConstruction` 200, `efSearch` 24, five seeds: 0.9917 against 0.9938 (M = 16),
/// 0.9935 against 0.9954 (M = 32); M = 32, `efConstruction` 40: 0.9810 against 0.9828 at
/// `efSearch` 10, but 0.9959 against 0.9950 at 24. On a synthetic set and on GloVe the
/// graphs were as good either way. Why the ranges hurt was not found.
pub(crate) fn build_locked<S: HnswStorage>(
    g: &mut Hnsw,
    s: &S,
    deleted: &[u64],
    slots: &[u32],
    x: VectorsRef<'_>,
) -> Result<()> {
    let steer = steer_codes(g, s, slots.len());
    let b = LockedBuild::new(g, s, deleted, steer, slots.len());
    // One at a time while the graph holds fewer nodes than a beam: then every insertion's
    // search reaches every node, and two running at once would miss only each other (the
    // first node also becomes the entry point every other insertion starts from).
    let linked = g.len().saturating_sub(slots.len());
    let alone = g
        .ef_construction
        .saturating_sub(linked)
        .max(usize::from(g.entry == NONE))
        .min(slots.len());
    for (i, &slot) in slots[..alone].iter().enumerate() {
        with_build_scratch(|sc| b.insert(slot, x.row(i), sc))?;
    }
    let next = AtomicUsize::new(alone);
    // One worker per thread of the pool (a busy thread's worker finds the slots taken).
    (0..rayon::current_num_threads())
        .into_par_iter()
        .try_for_each(|_| {
            loop {
                let i = next.fetch_add(1, Relaxed);
                let Some(&slot) = slots.get(i) else {
                    return Ok(());
                };
                if let Err(e) = with_build_scratch(|sc| b.insert(slot, x.row(i), sc)) {
                    // The other workers stop after the insertion they are in.
                    next.store(slots.len(), Relaxed);
                    return Err(e);
                }
            }
        })?;
    let (e, l) = b.entry();
    g.entry = e;
    g.max_level = l;
    Ok(())
}

/// One batch member's chosen neighbours per level (level 0 first).
struct Plan {
    lists: Vec<Vec<Near>>,
}

/// Inserts `slots` in batches: each batch's neighbours are chosen in parallel against the
/// graph as it was before the batch (plus exact distances to earlier batch members), then
/// links are written target by target in a fixed order. The graph does not depend on the
/// number of threads.
pub(crate) fn build_deterministic<S: HnswStorage>(
    g: &mut Hnsw,
    s: &S,
    deleted: &[u64],
    slots: &[u32],
    x: VectorsRef<'_>,
) -> Result<()> {
    let steer = steer_codes(g, s, slots.len());
    let prefix = PrefixDistances::for_build(g, slots.len());
    let mut done = 0usize;
    let mut linked = g.len() - slots.len();
    while done < slots.len() {
        let bsize = (linked / 16).clamp(8, 256).min(slots.len() - done);
        let batch = &slots[done..done + bsize];
        let rows = x.slice(done..done + bsize);
        let plans: Vec<Plan> = (0..bsize)
            .into_par_iter()
            .with_min_len(4)
            .map(|bi| {
                with_build_scratch(|sc| {
                    plan_one(g, s, steer.as_ref(), deleted, batch, rows, bi, sc)
                })
            })
            .collect::<Result<_>>()?;
        apply_plans(g, s, prefix.as_ref(), batch, &plans);
        done += bsize;
        linked += bsize;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn plan_one<S: HnswStorage>(
    g: &Hnsw,
    s: &S,
    steer: Option<&SteerCodes>,
    deleted: &[u64],
    batch: &[u32],
    rows: VectorsRef<'_>,
    bi: usize,
    sc: &mut BuildScratch,
) -> Result<Plan> {
    let node = batch[bi];
    let level = g.levels[node as usize] as usize;
    let x = rows.row(bi);
    let mut q = s.query(x)?;
    let mut per_level = match steer {
        Some(st) => {
            let mut buf = std::mem::take(&mut sc.steer);
            let mut nav = st.query(x, &mut buf);
            let mut w = plan_candidates(g, &mut nav, deleted, node, level, sc);
            for l in &mut w {
                rescore(&mut q, l);
            }
            sc.steer = buf;
            w
        }
        None => plan_candidates(g, &mut q, deleted, node, level, sc),
    };
    for &other in &batch[..bi] {
        let ol = g.levels[other as usize] as usize;
        let d = q.distance(other);
        for w in per_level.iter_mut().take(ol.min(level) + 1) {
            w.push(Near { d, id: other });
        }
    }
    let mut lists = Vec::with_capacity(level + 1);
    for (l, w) in per_level.iter_mut().enumerate() {
        sort_dedup(w);
        // The `efConstruction` nearest, as a search over a graph already holding the
        // earlier members would return: more would turn off Faiss's link-all rule.
        w.truncate(g.ef_construction);
        let mut sel = std::mem::take(&mut sc.sel);
        new_links(g, s, w, l, &mut sel, &mut sc.select());
        lists.push(sel.clone());
        sc.sel = sel;
    }
    Ok(Plan { lists })
}

/// A batch member's candidates per level (level 0 first) in the graph before the batch,
/// scored by `q`.
fn plan_candidates<D: NodeDistance>(
    g: &Hnsw,
    q: &mut D,
    deleted: &[u64],
    node: u32,
    level: usize,
    sc: &mut BuildScratch,
) -> Vec<Vec<Near>> {
    let mut per_level: Vec<Vec<Near>> = vec![Vec::new(); level + 1];
    if g.entry != NONE {
        let maxl = g.max_level;
        let d_entry = q.distance(g.entry);
        let (cur, dcur) = g.descend(q, (g.entry, d_entry), maxl, level + 1, &mut sc.search);
        let mut start = Near { d: dcur, id: cur };
        for l in (0..=level.min(maxl)).rev() {
            level_candidates(
                g,
                q,
                l,
                &mut start,
                &mut sc.search,
                &mut per_level[l],
                |id| id != node && !is_deleted(deleted, id),
            );
        }
    }
    per_level
}

fn apply_plans<S: HnswStorage>(
    g: &mut Hnsw,
    s: &S,
    prefix: Option<&PrefixDistances>,
    batch: &[u32],
    plans: &[Plan],
) {
    let gr: &Hnsw = g;
    // Forward lists: each member writes only its own.
    batch.par_iter().zip(plans).for_each(|(&node, p)| {
        for (l, list) in p.lists.iter().enumerate() {
            let ids: Vec<u32> = list.iter().map(|n| n.id).collect();
            gr.set_neighbors(node, l, &ids);
        }
    });
    // Reverse links grouped by (level, target), in batch order within a group.
    let mut rev: Vec<(u8, u32, u32, u32)> = Vec::new();
    for (bi, (&node, p)) in batch.iter().zip(plans).enumerate() {
        for (l, list) in p.lists.iter().enumerate() {
            for n in list {
                rev.push((l as u8, n.id, bi as u32, node));
            }
        }
    }
    link_back(gr, s, prefix, rev);
    // Entry point: the first member above the current top level.
    for &node in batch {
        let l = g.levels[node as usize] as usize;
        if g.entry == NONE || l > g.max_level {
            g.entry = node;
            g.max_level = l;
        }
    }
}

/// Adds reverse links `target → source` (entries `(level, target, order, source)`), target
/// by target in parallel and in `order` within a target: appended while the list has room,
/// then the list is re-selected with the heuristic over old and new links.
fn link_back<S: HnswStorage>(
    gr: &Hnsw,
    s: &S,
    prefix: Option<&PrefixDistances>,
    mut rev: Vec<(u8, u32, u32, u32)>,
) {
    rev.sort_unstable_by_key(|r| (r.0, r.1, r.2));
    let mut groups: Vec<&[(u8, u32, u32, u32)]> = Vec::new();
    let mut i = 0;
    while i < rev.len() {
        let mut j = i + 1;
        while j < rev.len() && rev[j].0 == rev[i].0 && rev[j].1 == rev[i].1 {
            j += 1;
        }
        groups.push(&rev[i..j]);
        i = j;
    }
    groups.par_iter().with_min_len(8).for_each(|grp| {
        with_build_scratch(|sc| {
            let (level, target) = (grp[0].0 as usize, grp[0].1);
            let mut overflow: Vec<u32> = Vec::new();
            for r in grp.iter() {
                gr.neighbors_into(target, level, &mut sc.ids);
                if sc.ids.contains(&r.3) {
                    continue;
                }
                if !gr.try_append(target, level, r.3) {
                    overflow.push(r.3);
                }
            }
            if !overflow.is_empty() {
                reprune(gr, s, target, level, &overflow, prefix, sc);
            }
        })
    });
}

/// Re-links every live node that points at a deleted one: its new list is chosen with the
/// heuristic among its live neighbours and the live neighbours of its deleted neighbours
/// (two hops through deleted nodes).
pub(crate) fn repair<S: HnswStorage>(g: &Hnsw, s: &S, deleted: &[u64]) {
    let k = Kernels::get();
    let metric = s.metric();
    for level in 0..=g.max_level {
        let new_edges: Vec<Vec<(u8, u32, u32, u32)>> = (0..g.len() as u32)
            .into_par_iter()
            .with_min_len(256)
            .filter(|&u| !is_deleted(deleted, u) && g.levels[u as usize] as usize >= level)
            .map(|u| {
                with_build_scratch(|sc| {
                    g.neighbors_into(u, level, &mut sc.ids);
                    if !sc.ids.iter().any(|&v| is_deleted(deleted, v)) {
                        return Vec::new();
                    }
                    let before: Vec<u32> = sc.ids.clone();
                    let mut cand: Vec<u32> = Vec::new();
                    let mut hop1: Vec<u32> = Vec::new();
                    let mut far: Vec<u32> = Vec::new();
                    for &v in &sc.ids {
                        if is_deleted(deleted, v) {
                            g.neighbors_into(v, level, &mut hop1);
                            for &w in &hop1 {
                                if is_deleted(deleted, w) {
                                    far.push(w);
                                } else {
                                    cand.push(w);
                                }
                            }
                        } else {
                            cand.push(v);
                        }
                    }
                    // The second hop through removed nodes takes only the head of each list
                    // (lists are kept nearest first): whole lists along chains of removed
                    // nodes would grow the candidates, and the distances to compute, as the
                    // square of the degree.
                    far.sort_unstable();
                    far.dedup();
                    let head = (g.capacity(level) / 4).max(2);
                    for &w in &far {
                        g.neighbors_into(w, level, &mut hop1);
                        cand.extend(hop1.iter().take(head).filter(|&&z| !is_deleted(deleted, z)));
                    }
                    cand.retain(|&c| c != u);
                    cand.sort_unstable();
                    cand.dedup();
                    let uv = node_vector(s, u, &mut sc.tmp2);
                    sc.cands.clear();
                    for &c in &cand {
                        let cv = node_vector(s, c, &mut sc.tmp);
                        sc.cands.push(Near {
                            d: vector_distance(k, metric, uv, cv),
                            id: c,
                        });
                    }
                    sc.cands.sort_unstable();
                    let cands = std::mem::take(&mut sc.cands);
                    select_neighbors(
                        s,
                        &cands,
                        &[],
                        g.capacity(level),
                        &mut sc.sel,
                        &mut sc.dec,
                        &mut sc.tmp,
                        &mut sc.fresh,
                    );
                    sc.cands = cands;
                    let pruned = sc.sel.len();
                    // Back-fill to half the capacity with the nearest candidates the
                    // heuristic passed over: a repaired node has lost in-links as well, and
                    // the extra out-links keep its region well connected.
                    let want = g.capacity(level) / 2;
                    if sc.sel.len() < want {
                        for c in &sc.cands {
                            if sc.sel.len() >= want {
                                break;
                            }
                            if !sc.sel.iter().any(|n| n.id == c.id) {
                                sc.sel.push(*c);
                            }
                        }
                    }
                    let ids: Vec<u32> = sc.sel.iter().map(|n| n.id).collect();
                    g.set_pruned_neighbors(u, level, &ids, pruned);
                    // New edges u → v also get v → u, as an insertion links both ways.
                    sc.sel
                        .iter()
                        .filter(|n| !before.contains(&n.id))
                        .map(|n| (level as u8, n.id, u, u))
                        .collect()
                })
            })
            .collect();
        link_back(g, s, None, new_edges.into_iter().flatten().collect());
    }
}

/// Every reachable list is full: in the nearest node whose list allows it, `u` replaces a
/// link to a node that has another in-link from a reachable node (the next round checks
/// that nothing was cut off); failing that, the nearest node's last link.
fn replace_link(g: &Hnsw, by_distance: &[Near], seen: &[bool], u: u32) {
    let mut indeg = vec![0u32; g.len()];
    let mut buf = Vec::new();
    for v in (0..g.len() as u32).filter(|&v| seen[v as usize]) {
        g.neighbors_into(v, 0, &mut buf);
        for &w in &buf {
            indeg[w as usize] += 1;
        }
    }
    for v in by_distance {
        let mut ids = g.neighbors(v.id as usize, 0);
        if let Some(j) = (0..ids.len()).rev().find(|&j| indeg[ids[j] as usize] >= 2) {
            ids[j] = u;
            g.set_neighbors(v.id, 0, &ids);
            return;
        }
    }
    if let Some(v) = by_distance.first() {
        let mut ids = g.neighbors(v.id as usize, 0);
        match ids.last_mut() {
            Some(last) => *last = u,
            None => ids.push(u),
        }
        g.set_neighbors(v.id, 0, &ids);
    }
}

/// Makes every live node reachable on level 0 from the entry point: an unreachable node is
/// linked from the nearest reachable node that has room (or, failing that, replaces the
/// farthest link of the nearest one), then what it reaches is marked; repeated until a
/// full pass finds every live node reachable. Returns the number of links added.
pub(crate) fn link_unreachable<S: HnswStorage>(g: &Hnsw, s: &S, deleted: &[u64]) -> Result<usize> {
    let skip = |id: u32| is_deleted(deleted, id);
    let mut added = 0;
    for _round in 0..16 {
        let mut seen = g.reachable(skip);
        let missing: Vec<u32> = (0..g.len() as u32)
            .filter(|&u| !seen[u as usize] && !skip(u))
            .collect();
        if missing.is_empty() || g.entry == NONE {
            return Ok(added);
        }
        let mut buf = Vec::new();
        let mut sc = Scratch::default();
        for u in missing {
            if seen[u as usize] {
                continue;
            }
            let uv = node_vector(s, u, &mut buf).to_vec();
            let mut q = s.query(&uv)?;
            // Search the reachable part from the entry point (reachable by definition).
            let e = g.entry;
            let de = q.distance(e);
            let seen_ref = &seen;
            g.search_level(
                &mut q,
                &[Near { d: de, id: e }],
                0,
                g.ef_construction.max(16),
                &mut sc,
                |id| id != u && seen_ref[id as usize],
                |_, _| {},
            );
            let mut near: Vec<Near> = sc.top.drain().collect();
            near.sort_unstable();
            if !near.iter().any(|n| g.try_append(n.id, 0, u)) {
                // Any reachable node with room, nearest first.
                let mut all: Vec<Near> = (0..g.len() as u32)
                    .filter(|&v| v != u && seen[v as usize] && !skip(v))
                    .map(|v| Near {
                        d: q.distance(v),
                        id: v,
                    })
                    .collect();
                all.sort_unstable();
                if !all.iter().any(|n| g.try_append(n.id, 0, u)) {
                    replace_link(g, &all, &seen, u);
                }
            }
            added += 1;
            seen[u as usize] = true;
            g.mark_from(u, &mut seen, skip);
        }
    }
    Ok(added)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use vq_core::{Index, Label, Metric, Vectors};

    use super::*;
    use crate::storage::FlatStorage;
    use crate::{IndexHnsw, IndexHnswFlat};

    /// `n` vectors of small integers: every distance is exact in `f32`, whatever the order
    /// of the sums, so the heuristic's decisions can be replayed exactly.
    fn integer_data(n: usize, d: usize, seed: u64) -> Vectors {
        let mut z = seed;
        let v: Vec<f32> = (0..n * d)
            .map(|_| {
                z = z
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((z >> 33) % 16) as f32
            })
            .collect();
        Vectors::new(v, d).unwrap()
    }

    fn exact(x: &Vectors, a: u32, b: u32) -> f32 {
        x.row(a as usize)
            .iter()
            .zip(x.row(b as usize))
            .map(|(p, q)| (p - q) * (p - q))
            .sum()
    }

    /// Every list's pruned prefix is what the heuristic keeps: nearest first, and no link
    /// of it closer to a later one than the node is.
    fn check_prefixes(idx: &IndexHnswFlat, x: &Vectors) -> usize {
        let g = idx.graph();
        let mut total = 0;
        for u in 0..g.len() as u32 {
            if idx.is_removed_slot(u as usize) {
                continue;
            }
            for l in 0..=g.level(u as usize).unwrap() {
                let links = g.neighbors(u as usize, l);
                let h = g.pruned_prefix(u, l);
                total += h;
                let near: Vec<Near> = links[..h]
                    .iter()
                    .map(|&v| Near {
                        d: exact(x, u, v),
                        id: v,
                    })
                    .collect();
                for j in 0..h {
                    if j > 0 {
                        assert!(near[j - 1] < near[j], "node {u} level {l}: prefix order");
                    }
                    for i in 0..j {
                        assert!(
                            exact(x, near[j].id, near[i].id) >= near[j].d,
                            "node {u} level {l}: link {i} dominates link {j}"
                        );
                    }
                }
            }
        }
        total
    }

    #[test]
    fn pruned_prefixes_hold_after_builds_and_removals() {
        let x = integer_data(1500, 8, 7);
        for deterministic in [false, true] {
            for link_all in [true, false] {
                let mut idx = IndexHnswFlat::new(8, 4, Metric::L2).unwrap();
                idx.set_deterministic(deterministic);
                idx.set_link_all_candidates(link_all);
                idx.add(x.as_ref().slice(0..1000)).unwrap();
                idx.add(x.as_ref().slice(1000..1500)).unwrap();
                let h = check_prefixes(&idx, &x);
                // Lists fill and get re-selected: most links end up in pruned prefixes.
                assert!(h > 1500, "{deterministic} {link_all}: {h}");
                idx.remove_ids(&|id: Label| id % 4 == 1).unwrap();
                check_prefixes(&idx, &x);
                // Saved files hold the counts only; loaded lists have no pruned prefix.
                let mut buf = Vec::new();
                idx.write_to(&mut buf).unwrap();
                let back = IndexHnswFlat::read_from(&mut buf.as_slice()).unwrap();
                let g = back.graph();
                for u in 0..g.len() {
                    for l in 0..=g.level(u).unwrap() {
                        assert_eq!(g.pruned_prefix(u as u32, l), 0);
                        assert_eq!(g.neighbors(u, l), idx.graph().neighbors(u, l));
                    }
                }
            }
        }
    }

    #[test]
    fn known_candidates_give_the_full_heuristic_result() {
        let x = integer_data(400, 6, 3);
        let mut s = FlatStorage::new(6, Metric::L2).unwrap();
        s.push(x.as_ref()).unwrap();
        let (mut out, mut full) = (Vec::new(), Vec::new());
        let (mut dec, mut tmp, mut fresh) = (Vec::new(), Vec::new(), Vec::new());
        let mut z = 99u64;
        let mut next = |m: u64| {
            z = z
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (z >> 33) % m
        };
        let mut differ = 0;
        for round in 0..300 {
            let base = next(400) as u32;
            let near = |id: u32| Near {
                d: exact(&x, base, id),
                id,
            };
            // A first selection over some nodes, then a re-selection over what it kept
            // plus a few more (as a full list with new links).
            let mut first: Vec<Near> = (0..40)
                .map(|_| next(400) as u32)
                .filter(|&v| v != base)
                .map(near)
                .collect();
            sort_dedup(&mut first);
            let cap = 4 + round % 12;
            select_neighbors(
                &s,
                &first,
                &[],
                cap,
                &mut out,
                &mut dec,
                &mut tmp,
                &mut fresh,
            );
            let mut again: Vec<(Near, bool)> = out.iter().map(|&n| (n, true)).collect();
            again.extend(
                (0..1 + round % 5)
                    .map(|_| next(400) as u32)
                    .filter(|&v| v != base)
                    .map(|v| (near(v), false)),
            );
            again.sort_unstable_by_key(|x| x.0);
            again.dedup_by_key(|x| x.0.id);
            let cands: Vec<Near> = again.iter().map(|x| x.0).collect();
            let known: Vec<bool> = again.iter().map(|x| x.1).collect();
            select_neighbors(
                &s, &cands, &known, cap, &mut out, &mut dec, &mut tmp, &mut fresh,
            );
            select_neighbors(
                &s,
                &cands,
                &[],
                cap,
                &mut full,
                &mut dec,
                &mut tmp,
                &mut fresh,
            );
            assert_eq!(out, full, "round {round}");
            // A new candidate knocks out one the first selection kept (the case the
            // comparisons against unknown candidates are there for).
            let last = full.last().map_or(f32::INFINITY, |l| l.d);
            let dropped = again
                .iter()
                .any(|a| a.1 && a.0.d < last && !full.iter().any(|f| f.id == a.0.id));
            differ += usize::from(dropped);
        }
        assert!(differ > 10, "{differ}");
    }

    /// Level lists of every node, level 0 first.
    fn all_lists<S: HnswStorage>(idx: &IndexHnsw<S>) -> Vec<Vec<u32>> {
        let g = idx.graph();
        (0..g.len())
            .flat_map(|u| (0..=g.level(u).unwrap()).map(move |l| (u, l)))
            .map(|(u, l)| g.neighbors(u, l))
            .collect()
    }

    /// 1-thread builds of `x` give the same graph with `switch(index, false)` and with
    /// `switch(index, true)`, in both build modes and under both linking rules.
    fn same_graph_both_ways<S: HnswStorage>(
        make: impl Fn() -> IndexHnsw<S>,
        x: &Vectors,
        switch: impl Fn(&mut IndexHnsw<S>, bool),
    ) {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        for deterministic in [false, true] {
            for link_all in [true, false] {
                let graphs: Vec<Vec<Vec<u32>>> = [false, true]
                    .iter()
                    .map(|&on| {
                        let mut idx = make();
                        idx.set_deterministic(deterministic);
                        idx.set_link_all_candidates(link_all);
                        switch(&mut idx, on);
                        idx.train(x.as_ref()).unwrap();
                        pool.install(|| idx.add(x.as_ref())).unwrap();
                        all_lists(&idx)
                    })
                    .collect();
                assert!(
                    graphs[0] == graphs[1],
                    "deterministic {deterministic}, link_all {link_all}"
                );
            }
        }
    }

    #[test]
    fn coded_builds_give_the_exact_build_graph_when_the_codes_are_exact() {
        // Integers 0..=255 with every component's range exactly [0, 255]: the 8-bit codes
        // are the values themselves, so the coded searches score exactly what the raw ones
        // do and the graphs must be identical (this checks the plumbing: both searches,
        // the candidates' rescoring, both build modes, both linking rules).
        let (n, d) = (1500, 12);
        let mut v = integer_data(n, d, 3).as_slice().to_vec();
        for x in &mut v {
            *x = (*x * 17.0).min(255.0);
        }
        v[..d].fill(0.0);
        v[d..2 * d].fill(255.0);
        let x = Vectors::new(v, d).unwrap();
        let codes = SteerCodes::new(x.as_slice(), d, Metric::L2).unwrap();
        assert_eq!(codes.len(), n);
        assert!(codes.steps().iter().all(|&s| s == 1.0));
        same_graph_both_ways(
            || IndexHnswFlat::new(d, 8, Metric::L2).unwrap(),
            &x,
            |idx, on| idx.set_coded_build(on),
        );
    }

    #[test]
    fn coded_builds_are_used_only_for_raw_storage_and_large_enough_adds() {
        let x = integer_data(640, 8, 4);
        let mut s = FlatStorage::new(8, Metric::L2).unwrap();
        s.push(x.as_ref()).unwrap();
        let mut g = Hnsw::new(8).unwrap();
        assert!(steer_codes(&g, &s, 10).is_some());
        assert!(steer_codes(&g, &s, 9).is_none(), "9 of 640 is under 1/64");
        g.steer = false;
        assert!(steer_codes(&g, &s, 640).is_none());
        let g = Hnsw::new(8).unwrap();
        let mut sq = crate::storage::CodecStorage::new(
            vq_pq::ScalarQuantizer::new(8, vq_pq::SqType::Q8).unwrap(),
            Metric::L2,
        );
        sq.train(x.as_ref()).unwrap();
        sq.push(x.as_ref()).unwrap();
        assert!(steer_codes(&g, &sq, 640).is_none());
    }

    #[test]
    fn coded_builds_choose_links_by_exact_distances() {
        // The last node a 1-thread build inserts keeps its level-0 list as chosen. With the
        // heuristic choosing (Faiss's rule off), the list is the heuristic's picks nearest
        // first by the distances the candidates were rescored with, which must be the
        // exact ones, not the codes'. Under Faiss's rule the list is every candidate (fewer
        // than 2M), whose exact distances are not needed.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let mut unordered_by_codes = 0;
        for seed in [1, 2, 3] {
            let s = vq_core::synthetic::SyntheticSpec::new(2000, 24, 0)
                .with_seed(seed)
                .generate()
                .unwrap();
            let x = s.base;
            let last = x.len() - 1;
            let exact = |nb: &[u32]| -> Vec<f32> {
                nb.iter()
                    .map(|&v| vq_core::distance::l2_sqr(x.row(last), x.row(v as usize)))
                    .collect()
            };
            let sorted = |d: &[f32]| d.windows(2).all(|w| w[0] <= w[1]);
            let mut idx = IndexHnswFlat::new(24, 32, Metric::L2).unwrap();
            idx.set_link_all_candidates(false);
            pool.install(|| idx.add(x.as_ref())).unwrap();
            let nb = idx.graph().neighbors(last, 0);
            assert!(nb.len() > 1 && nb.len() < 40, "seed {seed}: {}", nb.len());
            let d = exact(&nb);
            assert!(sorted(&d), "seed {seed}: {d:?}");
            let mut idx = IndexHnswFlat::new(24, 32, Metric::L2).unwrap();
            pool.install(|| idx.add(x.as_ref())).unwrap();
            let nb = idx.graph().neighbors(last, 0);
            assert_eq!(nb.len(), 40);
            unordered_by_codes += usize::from(!sorted(&exact(&nb)));
        }
        // The codes are lossy here: lists in their order are not in the exact order (so the
        // first half of the test would catch lists left unrescored).
        assert!(unordered_by_codes > 0);
    }

    #[test]
    fn coded_builds_reach_the_exact_builds_recall() {
        // Lossy codes (continuous clustered data): the coded build's graph differs, its
        // recall must not.
        for metric in [Metric::L2, Metric::InnerProduct] {
            let s = vq_core::synthetic::SyntheticSpec::new(6000, 24, 200)
                .with_seed(8)
                .generate()
                .unwrap();
            let mut flat = vq_core::IndexFlat::new(24, metric).unwrap();
            flat.add(s.base.as_ref()).unwrap();
            let p = vq_core::SearchParams::new();
            let want = vq_core::eval::GroundTruth::from_results(
                &flat.search(s.queries.as_ref(), 10, &p).unwrap(),
            );
            let recall = |coded: bool| {
                let mut idx = IndexHnswFlat::new(24, 16, metric).unwrap();
                idx.set_coded_build(coded);
                idx.set_deterministic(true);
                idx.add(s.base.as_ref()).unwrap();
                let p = vq_core::SearchParams::new().with_ef_search(48);
                let got = idx.search(s.queries.as_ref(), 10, &p).unwrap();
                vq_core::eval::intersection_recall(&got, &want, 10).unwrap()
            };
            let (on, off) = (recall(true), recall(false));
            assert!(off > 0.9, "{metric:?}: exact build {off}");
            assert!(on >= off - 0.02, "{metric:?}: coded {on}, exact {off}");
        }
    }

    /// Builds whose re-selections use the pruned prefixes (and the prefixes' kept
    /// distances, [`PrefixDistances`]) give the same graphs as builds whose re-selections
    /// compare every pair and compute every distance, for raw, SQ and PQ storage (whose
    /// searches score with asymmetric distances), in both build modes.
    #[test]
    fn prefix_distances_are_kept_only_for_large_adds() {
        let mut g = Hnsw::new(4).unwrap();
        for _ in 0..80 {
            g.push_node(0);
        }
        assert!(
            PrefixDistances::for_build(&g, 9).is_none(),
            "9 of 80 is under 1/8"
        );
        let p = PrefixDistances::for_build(&g, 10).unwrap();
        assert_eq!(p.get(3, 0), None);
        p.set(3, [0.0, 2.5].into_iter());
        assert_eq!(
            (p.get(3, 0), p.get(3, 1), p.get(3, 2)),
            (Some(0.0), Some(2.5), None)
        );
        assert_eq!(p.get(80, 0), None, "out of range");
    }

    #[test]
    fn pruned_prefixes_change_no_graph() {
        let mut z = 5u64;
        let v: Vec<f32> = (0..1200 * 16)
            .map(|_| {
                z = z
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (z >> 40) as f32 / (1u64 << 24) as f32
            })
            .collect();
        let x = Vectors::new(v, 16).unwrap();
        fn full<S: HnswStorage>(idx: &mut IndexHnsw<S>, on: bool) {
            idx.graph_mut().full_reselect = on;
        }
        same_graph_both_ways(|| IndexHnswFlat::new(16, 4, Metric::L2).unwrap(), &x, full);
        same_graph_both_ways(
            || crate::IndexHnswSq::new_sq(16, 4, vq_pq::SqType::Q8, Metric::L2).unwrap(),
            &x,
            full,
        );
        same_graph_both_ways(
            || crate::IndexHnswPq::new_pq(16, 4, 4, 4, Metric::L2).unwrap(),
            &x,
            full,
        );
    }

    /// Exact distances from a query to the rows of `x`, counting the nodes scored (a
    /// quad padded with repeats counts its distinct nodes).
    struct Counted<'a> {
        x: &'a Vectors,
        q: Vec<f32>,
        scored: usize,
    }

    impl Counted<'_> {
        fn exact(&self, id: u32) -> f32 {
            let r = self.x.row(id as usize);
            r.iter().zip(&self.q).map(|(a, b)| (a - b) * (a - b)).sum()
        }
    }

    impl NodeDistance for Counted<'_> {
        fn distance(&mut self, id: u32) -> f32 {
            self.scored += 1;
            self.exact(id)
        }
        fn distance4(&mut self, ids: [u32; 4]) -> [f32; 4] {
            self.scored += (0..4).filter(|&i| !ids[..i].contains(&ids[i])).count();
            ids.map(|id| self.exact(id))
        }
        fn prefetch(&self, _: u32) {}
    }

    #[test]
    fn the_descent_skips_scored_nodes_and_reaches_the_same_node() {
        let x = integer_data(3000, 8, 11);
        let mut idx = IndexHnswFlat::new(8, 4, Metric::L2).unwrap();
        idx.add(x.as_ref()).unwrap();
        let g = idx.graph();
        assert!(g.max_level >= 2, "{}", g.max_level);
        let queries = integer_data(200, 8, 12);
        let mut sc = Scratch::default();
        let (mut fewer, mut skipping, mut plain) = (0, 0, 0);
        for qi in 0..queries.len() {
            let q = queries.row(qi).to_vec();
            let mut a = Counted {
                x: &x,
                q: q.clone(),
                scored: 0,
            };
            let d_entry = a.distance(g.entry);
            for bottom in [1, 2] {
                a.scored = 0;
                let got = g.descend(&mut a, (g.entry, d_entry), g.max_level, bottom, &mut sc);
                // Every neighbour of every node on the path scored, each time.
                let mut b = Counted {
                    x: &x,
                    q: q.clone(),
                    scored: 0,
                };
                let (mut cur, mut dcur) = (g.entry, d_entry);
                for level in (bottom..=g.max_level).rev() {
                    loop {
                        let mut moved = false;
                        for nb in g.neighbors(cur as usize, level) {
                            let d = b.distance(nb);
                            if d < dcur || (d == dcur && nb < cur) {
                                (cur, dcur, moved) = (nb, d, true);
                            }
                        }
                        if !moved {
                            break;
                        }
                    }
                }
                assert_eq!(got, (cur, dcur), "query {qi}, bottom {bottom}");
                assert!(a.scored <= b.scored);
                fewer += usize::from(a.scored < b.scored);
                skipping += a.scored;
                plain += b.scored;
            }
        }
        // Consecutive nodes of a path share neighbours: most descents score fewer nodes.
        assert!(
            fewer > 200 && skipping * 10 < plain * 9,
            "{fewer} {skipping} {plain}"
        );
        // No descent (no level above the bottom): the start comes back, nothing scored.
        let mut a = Counted {
            x: &x,
            q: queries.row(0).to_vec(),
            scored: 0,
        };
        let top = g.max_level;
        assert_eq!(
            g.descend(&mut a, (g.entry, 1.5), top, top + 1, &mut sc),
            (g.entry, 1.5)
        );
        assert_eq!(a.scored, 0);
    }
}
