//! The HNSW graph: levels, adjacency lists, entry point, and the searches over it.
//!
//! Every adjacency list is a fixed block of `cap + 1` atomic `u32`, so the graph can be read
//! and extended by several threads at once without `unsafe`: relaxed atomic loads compile to
//! plain loads, and writers of one list hold its lock. Slot 0 holds the count in its low 16
//! bits and, in its high 16 bits, how many of the first links the neighbour-selection
//! heuristic chose together (see [`Hnsw::pruned_prefix`]); saved files hold the count only.

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use rayon::prelude::*;
use vq_core::{Error, Result};

/// Marks an absent node (no entry point yet, a missing list).
pub(crate) const NONE: u32 = u32::MAX;

/// Faiss's default `prune_headroom` (Faiss 1.15).
pub(crate) const DEFAULT_PRUNE_HEADROOM: f32 = 0.2;

/// The re-selection headrooms accepted (Faiss clamps to this range).
pub(crate) const PRUNE_HEADROOM_RANGE: std::ops::RangeInclusive<f32> = 0.0..=0.5;

/// Cache lines of a row loaded up front when a node is about to be scored (the first 256
/// bytes): a search asks for every unvisited neighbour's row at once, and asking for whole
/// long rows fills the core's line-fill buffers, so the prefetches stall it. The rest of a
/// row is loaded by the beam's `_ahead` kernels while they score the rows before it, or
/// streamed by the hardware once its first lines are read (the greedy descent).
pub(crate) const PREFETCH_LINES: usize = 4;

/// Bits of a list's first slot that hold its count (the rest: the pruned prefix).
const COUNT_MASK: u32 = 0xFFFF;

/// The number of links in a list block (the low bits of its first slot, bounded by the block).
#[inline]
pub(crate) fn list_count(l: &[AtomicU32]) -> usize {
    ((l[0].load(Relaxed) & COUNT_MASK) as usize).min(l.len() - 1)
}

/// Highest level a node can be drawn at (P = M^-30 is far below anything drawn in practice).
pub(crate) const MAX_LEVEL: usize = 30;

/// A scored node; orders by distance (smaller is closer), ties by node number.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Near {
    pub(crate) d: f32,
    pub(crate) id: u32,
}

impl Eq for Near {}

impl PartialOrd for Near {
    #[inline]
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Near {
    #[inline]
    fn cmp(&self, other: &Self) -> CmpOrdering {
        self.d.total_cmp(&other.d).then(self.id.cmp(&other.id))
    }
}

/// Distances from one query (a vector, or a stored node) to stored nodes, smaller = closer.
pub(crate) trait NodeDistance {
    /// Distance to node `id`.
    fn distance(&mut self, id: u32) -> f32;
    /// Distances to four nodes (storages that can read several rows side by side
    /// override this; equal to four [`NodeDistance::distance`] calls up to rounding).
    fn distance4(&mut self, ids: [u32; 4]) -> [f32; 4] {
        ids.map(|id| self.distance(id))
    }
    /// [`NodeDistance::distance4`], while starting to load the nodes of `next` (those
    /// the caller scores next); equal results.
    fn distance4_ahead(&mut self, ids: [u32; 4], next: [u32; 4]) -> [f32; 4] {
        for id in next {
            self.prefetch(id);
        }
        self.distance4(ids)
    }
    /// Starts loading node `id`'s data; a hint.
    fn prefetch(&self, id: u32);
}

/// Visited marks by epoch: clearing is one increment, not a pass over the array (the
/// array is zeroed once every 255 searches). One byte per node, so that the marks of a
/// graph of a few hundred thousand nodes stay in the core's L2 cache.
#[derive(Debug, Default)]
pub(crate) struct Visited {
    marks: Vec<u8>,
    epoch: u8,
}

impl Visited {
    /// Starts a new search over `n` nodes.
    pub(crate) fn prepare(&mut self, n: usize) {
        if self.marks.len() < n {
            self.marks.resize(n, 0);
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.marks.fill(0);
            self.epoch = 1;
        }
    }

    /// Keeps in `ids` those not marked yet (in order), marks them all, and calls `fetch`
    /// once per id: with the id when it is new, with `hot` (a node whose data is cached)
    /// otherwise.
    ///
    /// Branch-free: whether a neighbour was seen is about as predictable as a coin toss,
    /// and a branch on it stalls on every mispredicted mark's load; here the marks' loads
    /// of a whole list are in flight together.
    #[inline]
    pub(crate) fn retain_new(&mut self, ids: &mut Vec<u32>, hot: u32, mut fetch: impl FnMut(u32)) {
        let mut kept = 0;
        for i in 0..ids.len() {
            let id = ids[i];
            let m = &mut self.marks[id as usize];
            let new = *m != self.epoch;
            *m = self.epoch;
            fetch(if new { id } else { hot });
            ids[kept] = id;
            kept += usize::from(new);
        }
        ids.truncate(kept);
    }

    /// Marks `id`; true when it was already marked.
    #[inline]
    pub(crate) fn test_and_set(&mut self, id: u32) -> bool {
        let m = &mut self.marks[id as usize];
        if *m == self.epoch {
            true
        } else {
            *m = self.epoch;
            false
        }
    }
}

/// Per-thread working memory of a graph search.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    pub(crate) visited: Visited,
    pub(crate) cand: BinaryHeap<Reverse<Near>>,
    pub(crate) top: BinaryHeap<Near>,
    pub(crate) buf: Vec<u32>,
}

/// A hierarchical navigable small-world graph (Malkov & Yashunin), laid out as Faiss and
/// hnswlib do: level 0 gives every node `2·M` links, upper levels `M`.
///
/// The graph holds node numbers only; the vectors live in the index's storage. Read it
/// through [`crate::IndexHnsw::graph`] to inspect degrees, levels and the entry point.
#[derive(Debug)]
pub struct Hnsw {
    pub(crate) m: usize,
    pub(crate) ef_construction: usize,
    pub(crate) ef_search: usize,
    pub(crate) seed: u64,
    /// Top level of every node.
    pub(crate) levels: Vec<u8>,
    /// Level 0: `n × (2M + 1)`, the count slot first (see the module docs).
    pub(crate) links0: Vec<AtomicU32>,
    /// Per node, the index of its level-1 list in `upper` (`NONE` for level-0 nodes).
    pub(crate) upper_off: Vec<u32>,
    /// Upper-level lists, `M + 1` values each (the count slot first); a node's levels are
    /// consecutive.
    pub(crate) upper: Vec<AtomicU32>,
    pub(crate) entry: u32,
    pub(crate) max_level: usize,
    /// Levels drawn so far: the level generator is a pure function of (seed, draw number).
    pub(crate) draws: u64,
    /// Faiss's rule: a new node links every candidate its beam found when they are fewer
    /// than its list holds (otherwise the heuristic selects).
    pub(crate) link_all: bool,
    /// Re-selections ignore pruned prefixes (tests compare the graphs both ways).
    pub(crate) full_reselect: bool,
    /// Fraction of a full list's capacity a re-selection leaves free (Faiss's
    /// `prune_headroom`, 0 to 0.5).
    pub(crate) prune_headroom: f32,
    /// Builds over raw vectors steer their searches with 8-bit codes ([`crate::steer`]).
    pub(crate) steer: bool,
    /// Upper-level blocks given up by re-used slots, by their number of levels (index
    /// `levels - 1`): a slot re-used at another level takes a block of its new size from
    /// here before the array grows, so removing and adding again keeps memory bounded.
    pub(crate) free_upper: Vec<Vec<u32>>,
}

impl Clone for Hnsw {
    fn clone(&self) -> Self {
        let copy = |v: &[AtomicU32]| v.iter().map(|a| AtomicU32::new(a.load(Relaxed))).collect();
        Hnsw {
            m: self.m,
            ef_construction: self.ef_construction,
            ef_search: self.ef_search,
            seed: self.seed,
            levels: self.levels.clone(),
            links0: copy(&self.links0),
            upper_off: self.upper_off.clone(),
            upper: copy(&self.upper),
            entry: self.entry,
            max_level: self.max_level,
            draws: self.draws,
            link_all: self.link_all,
            full_reselect: self.full_reselect,
            prune_headroom: self.prune_headroom,
            steer: self.steer,
            free_upper: self.free_upper.clone(),
        }
    }
}

/// SplitMix64: a counter-based generator, so level `i` does not depend on thread timing.
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Scores the fewer than four `ids` left after the quads, in order: one alone, two or
/// three in one four-row call (the last row repeated, its extra results unused), so
/// their rows are still read side by side.
#[inline]
fn score_leftover<D: NodeDistance>(dist: &mut D, ids: &[u32], mut f: impl FnMut(u32, f32)) {
    match *ids {
        [] => {}
        [nb] => f(nb, dist.distance(nb)),
        _ => {
            let last = ids.len() - 1;
            let ds = dist.distance4(std::array::from_fn(|i| ids[i.min(last)]));
            for (&nb, d) in ids.iter().zip(ds) {
                f(nb, d);
            }
        }
    }
}

impl Hnsw {
    /// An empty graph with `m` links per node on upper levels (`2·m` on level 0),
    /// `efConstruction` 40 and `efSearch` 16 (Faiss's defaults), level seed 12345.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when `m < 2` (levels are drawn with P(level ≥ l) = m^-l)
    /// or `m > 4096`.
    pub fn new(m: usize) -> Result<Hnsw> {
        if !(2..=4096).contains(&m) {
            return Err(Error::invalid_param(
                "M",
                format!("M = {m}: the number of links per node must be 2 to 4096"),
            ));
        }
        Ok(Hnsw {
            m,
            ef_construction: 40,
            ef_search: 16,
            seed: 12345,
            levels: Vec::new(),
            links0: Vec::new(),
            upper_off: Vec::new(),
            upper: Vec::new(),
            entry: NONE,
            max_level: 0,
            draws: 0,
            link_all: true,
            full_reselect: false,
            prune_headroom: DEFAULT_PRUNE_HEADROOM,
            steer: true,
            free_upper: Vec::new(),
        })
    }

    /// Links per node on levels ≥ 1.
    pub fn m(&self) -> usize {
        self.m
    }

    /// Capacity of a node's list on `level`: `2·M` on level 0, `M` above.
    pub fn capacity(&self, level: usize) -> usize {
        if level == 0 { 2 * self.m } else { self.m }
    }

    /// How many links a re-selection of a full list on `level` keeps at most: the
    /// capacity less [`Hnsw::prune_headroom`] of it, rounded down as Faiss does (in `f32`:
    /// 51 of 64 and 12 of 16 at 0.2), so the next links are appended without one.
    pub fn reselect_cap(&self, level: usize) -> usize {
        let cap = self.capacity(level) as f32;
        let (lo, hi) = PRUNE_HEADROOM_RANGE.into_inner();
        (cap - cap * self.prune_headroom.clamp(lo, hi)) as usize
    }

    /// Fraction of a full list's capacity that its re-selection leaves free; see
    /// [`crate::IndexHnsw::set_prune_headroom`].
    pub fn prune_headroom(&self) -> f32 {
        self.prune_headroom
    }

    /// Beam width while inserting.
    pub fn ef_construction(&self) -> usize {
        self.ef_construction
    }

    /// Default beam width of a search (a call's `efSearch` overrides it).
    pub fn ef_search(&self) -> usize {
        self.ef_search
    }

    /// Seed of the level generator.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Whether a new node links all its candidates when they are fewer than its list holds
    /// (Faiss's rule, the default); see [`crate::IndexHnsw::set_link_all_candidates`].
    pub fn links_all_candidates(&self) -> bool {
        self.link_all
    }

    /// Whether a new node's list on `level` takes all of its `n` candidates (Faiss's rule
    /// applies: on, and fewer candidates than the list holds).
    pub(crate) fn takes_all(&self, n: usize, level: usize) -> bool {
        self.link_all && n < self.capacity(level)
    }

    /// Number of node slots (live and deleted).
    pub fn len(&self) -> usize {
        self.levels.len()
    }

    /// True when the graph has no node.
    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }

    /// Top level of `node`, or `None` when out of range.
    pub fn level(&self, node: usize) -> Option<usize> {
        self.levels.get(node).map(|&l| l as usize)
    }

    /// Highest level of the graph.
    pub fn max_level(&self) -> usize {
        self.max_level
    }

    /// The entry point of searches, `None` while the graph is empty.
    pub fn entry_point(&self) -> Option<usize> {
        (self.entry != NONE).then_some(self.entry as usize)
    }

    /// The neighbours of `node` on `level` (empty when the node does not reach that level).
    pub fn neighbors(&self, node: usize, level: usize) -> Vec<u32> {
        let mut out = Vec::new();
        if node < self.len() && level <= self.levels[node] as usize {
            self.neighbors_into(node as u32, level, &mut out);
        }
        out
    }

    /// The list block of `node` on `level` (the count slot first). The caller checks the level.
    #[inline]
    pub(crate) fn list(&self, node: u32, level: usize) -> &[AtomicU32] {
        if level == 0 {
            let w = 2 * self.m + 1;
            &self.links0[node as usize * w..][..w]
        } else {
            let w = self.m + 1;
            let idx = self.upper_off[node as usize] as usize + level - 1;
            &self.upper[idx * w..][..w]
        }
    }

    /// Reads a list into `out` (replacing its contents).
    #[inline]
    pub(crate) fn neighbors_into(&self, node: u32, level: usize, out: &mut Vec<u32>) {
        let l = self.list(node, level);
        let cnt = list_count(l);
        out.clear();
        out.extend(l[1..=cnt].iter().map(|a| a.load(Relaxed)));
    }

    /// Replaces a list (ids first, then the count), with no pruned prefix. The caller holds
    /// the node's lock.
    pub(crate) fn set_neighbors(&self, node: u32, level: usize, ids: &[u32]) {
        self.set_pruned_neighbors(node, level, ids, 0);
    }

    /// [`Hnsw::set_neighbors`], recording that the first `pruned` of `ids` are what one run
    /// of the neighbour-selection heuristic kept (see [`Hnsw::pruned_prefix`]).
    pub(crate) fn set_pruned_neighbors(&self, node: u32, level: usize, ids: &[u32], pruned: usize) {
        let l = self.list(node, level);
        let n = ids.len().min(l.len() - 1);
        for (a, &id) in l[1..=n].iter().zip(ids) {
            a.store(id, Relaxed);
        }
        l[0].store(n as u32 | (pruned.min(n) as u32) << 16, Relaxed);
    }

    /// How many of the first links of `node` on `level` one run of the neighbour-selection
    /// heuristic kept, in its order (nearest first), all scored with the storage's symmetric
    /// distance between stored vectors: under that distance no one of them is closer to a
    /// later one than `node` is, so re-selecting the list need not compare those pairs
    /// again. Links appended after them, or written any other way, are not counted.
    pub(crate) fn pruned_prefix(&self, node: u32, level: usize) -> usize {
        let l = self.list(node, level);
        ((l[0].load(Relaxed) >> 16) as usize).min(list_count(l))
    }

    /// Appends `id` when there is room (the pruned prefix stays); false when the list is full.
    pub(crate) fn try_append(&self, node: u32, level: usize, id: u32) -> bool {
        let l = self.list(node, level);
        let w = l[0].load(Relaxed);
        let cnt = (w & COUNT_MASK) as usize;
        if cnt + 1 >= l.len() {
            return false;
        }
        l[cnt + 1].store(id, Relaxed);
        l[0].store(w + 1, Relaxed);
        true
    }

    /// Draws the next node's level: P(level ≥ l) = M^-l.
    pub(crate) fn draw_level(&mut self) -> usize {
        let r = splitmix(self.seed ^ splitmix(self.draws));
        self.draws += 1;
        // Uniform in (0, 1]: 53 random bits, never 0.
        let u = ((r >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let level = (-u.ln() / (self.m as f64).ln()).floor();
        (level as usize).min(MAX_LEVEL)
    }

    /// Allocates the upper lists of a node of level `level`; returns the offset or `NONE`.
    fn alloc_upper(&mut self, level: usize) -> u32 {
        if level == 0 {
            return NONE;
        }
        let w = self.m + 1;
        if let Some(idx) = self.free_upper.get_mut(level - 1).and_then(Vec::pop) {
            for a in &mut self.upper[idx as usize * w..][..level * w] {
                *a.get_mut() = 0;
            }
            return idx;
        }
        let idx = self.upper.len() / w;
        self.upper.extend((0..level * w).map(|_| AtomicU32::new(0)));
        idx as u32
    }

    /// Makes room for `n` more nodes (level-0 lists in huge-page-advised memory).
    ///
    /// The new lists' memory is written once by every thread and the vector cut back to
    /// its length: the first write to fresh memory costs a page fault per page, and these
    /// faults then run in parallel rather than in [`Hnsw::push_node`], one node at a time.
    pub(crate) fn reserve(&mut self, n: usize) {
        self.levels.reserve(n);
        self.upper_off.reserve(n);
        let len = self.links0.len();
        let more = n * (2 * self.m + 1);
        vq_core::mem::reserve_with_huge_pages(&mut self.links0, more);
        self.links0
            .par_extend(rayon::iter::repeat_n(0, more).map(AtomicU32::new));
        self.links0.truncate(len);
    }

    /// Appends a node with no links.
    pub(crate) fn push_node(&mut self, level: usize) {
        self.levels.push(level as u8);
        let w = 2 * self.m + 1;
        self.links0.extend((0..w).map(|_| AtomicU32::new(0)));
        let off = self.alloc_upper(level);
        self.upper_off.push(off);
    }

    /// Gives a (deleted, unlinked) slot a new level and empty lists.
    pub(crate) fn reinit_node(&mut self, node: u32, level: usize) {
        let old = self.levels[node as usize] as usize;
        self.clear_links(node);
        let off = self.upper_off[node as usize];
        if level != old || (level > 0 && off == NONE) {
            if old > 0 && off != NONE {
                if self.free_upper.len() < old {
                    self.free_upper.resize_with(old, Vec::new);
                }
                self.free_upper[old - 1].push(off);
            }
            self.upper_off[node as usize] = self.alloc_upper(level);
        }
        self.levels[node as usize] = level as u8;
    }

    /// Empties every list of `node`.
    pub(crate) fn clear_links(&self, node: u32) {
        for l in 0..=self.levels[node as usize] as usize {
            self.list(node, l)[0].store(0, Relaxed);
        }
    }

    /// Drops every node.
    pub(crate) fn clear(&mut self) {
        self.levels.clear();
        self.links0.clear();
        self.upper_off.clear();
        self.upper.clear();
        self.free_upper.clear();
        self.entry = NONE;
        self.max_level = 0;
        self.draws = 0;
    }

    /// Greedy descent on one level: moves to a closer neighbour until none is closer.
    ///
    /// Nodes already scored by the descent (on this level or a higher one, marked in
    /// `sc.visited`, see [`Hnsw::descend`]) are not scored again. That changes nothing:
    /// each was no closer than the node the descent held when it was scored, and that node
    /// only ever gets closer. Consecutive nodes of a path share neighbours (and each links
    /// back to the one before), so a quarter of the descent's distances go.
    #[inline]
    fn greedy<D: NodeDistance>(
        &self,
        dist: &mut D,
        level: usize,
        mut cur: u32,
        mut dcur: f32,
        sc: &mut Scratch,
    ) -> (u32, f32) {
        let Scratch { visited, buf, .. } = sc;
        loop {
            let l = self.list(cur, level);
            let cnt = list_count(l);
            buf.clear();
            buf.extend(l[1..=cnt].iter().map(|a| a.load(Relaxed)));
            visited.retain_new(buf, cur, |id| dist.prefetch(id));
            let mut moved = false;
            let mut step = |nb: u32, d: f32| {
                if d < dcur || (d == dcur && nb < cur) {
                    dcur = d;
                    cur = nb;
                    moved = true;
                }
            };
            // Four neighbours per call, as in the beam search: their rows are read side
            // by side. The moves are made in list order, as one at a time would make them.
            let whole = buf.len() / 4 * 4;
            for j in (0..whole).step_by(4) {
                let ids = [buf[j], buf[j + 1], buf[j + 2], buf[j + 3]];
                for (nb, d) in ids.into_iter().zip(dist.distance4(ids)) {
                    step(nb, d);
                }
            }
            score_leftover(dist, &buf[whole..], step);
            if !moved {
                return (cur, dcur);
            }
        }
    }

    /// Greedy descent from `cur` (an entry point, at distance `dcur`) over levels `top`
    /// down to `bottom` (none when `bottom > top`); the node reached, and its distance.
    /// Uses `sc`'s visited marks (a search over the graph prepares them again).
    pub(crate) fn descend<D: NodeDistance>(
        &self,
        dist: &mut D,
        (mut cur, mut dcur): (u32, f32),
        top: usize,
        bottom: usize,
        sc: &mut Scratch,
    ) -> (u32, f32) {
        if top >= bottom {
            sc.visited.prepare(self.len());
            sc.visited.test_and_set(cur);
            for level in (bottom..=top).rev() {
                (cur, dcur) = self.greedy(dist, level, cur, dcur, sc);
            }
        }
        (cur, dcur)
    }

    /// Greedy descent from the entry point over the upper levels: the starts of the level-0
    /// search, the node the descent reached first and the entry point second (when they
    /// differ). Level 0 is directed, so what the descent reached may not lead everywhere the
    /// entry point does; the entry point, usually far, is expanded only when the beam runs
    /// dry before holding `ef` accepted nodes, and then everything reachable is searched.
    pub(crate) fn starts<D: NodeDistance>(
        &self,
        dist: &mut D,
        sc: &mut Scratch,
    ) -> ([Near; 2], usize) {
        let cur = self.entry;
        let d_entry = dist.distance(cur);
        let (cur, dcur) = self.descend(dist, (cur, d_entry), self.max_level, 1, sc);
        let first = Near { d: dcur, id: cur };
        let entry = Near {
            d: d_entry,
            id: self.entry,
        };
        ([first, entry], if cur == self.entry { 1 } else { 2 })
    }

    /// Best-first beam search on `level` from `start[0]` with beam width `ef` (the other
    /// starts are expanded, in order, only if the beam runs dry first). Only nodes with
    /// `accept(id)` enter the result heap `scratch.top` (others are still traversed: a filter
    /// or a deletion never cuts the graph). `seen(id, d)` observes every scored node.
    /// The search stops when the closest unexpanded candidate is farther than the worst of
    /// `ef` accepted results (hnswlib's rule); while fewer than `ef` are accepted it goes on,
    /// so a restrictive filter still fills the results when the graph is connected.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn search_level<D, A, S>(
        &self,
        dist: &mut D,
        start: &[Near],
        level: usize,
        ef: usize,
        scratch: &mut Scratch,
        accept: A,
        mut seen: S,
    ) where
        D: NodeDistance,
        A: Fn(u32) -> bool,
        S: FnMut(u32, f32),
    {
        let Scratch {
            visited,
            cand,
            top,
            buf,
        } = scratch;
        visited.prepare(self.len());
        cand.clear();
        top.clear();
        let (primary, fallbacks) = match start.split_first() {
            Some((p, rest)) => (std::slice::from_ref(p), rest),
            None => (start, start),
        };
        let mut fallbacks = fallbacks.iter();
        for &s in primary {
            if visited.test_and_set(s.id) {
                continue;
            }
            seen(s.id, s.d);
            cand.push(Reverse(s));
            if accept(s.id) {
                top.push(s);
                if top.len() > ef {
                    top.pop();
                }
            }
        }
        loop {
            let c = match cand.pop() {
                Some(Reverse(c)) => c,
                // The beam ran dry short of `ef` accepted nodes: go on from the next start.
                None if top.len() < ef => {
                    let Some(&f) = fallbacks.find(|f| !visited.test_and_set(f.id)) else {
                        break;
                    };
                    seen(f.id, f.d);
                    if accept(f.id) {
                        top.push(f);
                    }
                    f
                }
                None => break,
            };
            if top.len() >= ef && top.peek().is_some_and(|w| c.d > w.d) {
                break;
            }
            let l = self.list(c.id, level);
            let cnt = list_count(l);
            buf.clear();
            buf.extend(l[1..=cnt].iter().map(|a| a.load(Relaxed)));
            visited.retain_new(buf, c.id, |id| dist.prefetch(id));
            if let Some(Reverse(next)) = cand.peek() {
                let nl = self.list(next.id, level);
                vq_core::distance::prefetch(nl, usize::MAX);
            }
            // Four neighbours per call: their rows are read side by side.
            let mut consider = |nb: u32, d: f32| {
                seen(nb, d);
                let full = top.len() >= ef;
                if !full || top.peek().is_some_and(|w| d < w.d) {
                    let n = Near { d, id: nb };
                    cand.push(Reverse(n));
                    if accept(nb) {
                        if full {
                            top.pop();
                        }
                        top.push(n);
                    }
                }
            };
            // While a quad is read, the next one's rows are loaded line by line.
            let whole = buf.len() / 4 * 4;
            let last = buf.len().saturating_sub(1);
            for j in (0..whole).step_by(4) {
                let ids = [buf[j], buf[j + 1], buf[j + 2], buf[j + 3]];
                let next = std::array::from_fn(|i| buf[(j + 4 + i).min(last)]);
                let ds = dist.distance4_ahead(ids, next);
                for (nb, d) in ids.into_iter().zip(ds) {
                    consider(nb, d);
                }
            }
            score_leftover(dist, &buf[whole..], consider);
        }
    }

    /// Goes on from `seeds` (level-0 nodes already scored, marked in `scratch`'s
    /// visited set by the search that found them): every unvisited neighbour of a seed
    /// is scored (`seen(id, d)`) and becomes a seed in turn when `expand(d)`. A range
    /// search floods the part of the graph within its radius this way, so its hits are
    /// not capped by the beam's `ef`.
    pub(crate) fn flood<D: NodeDistance>(
        &self,
        dist: &mut D,
        seeds: &mut Vec<u32>,
        scratch: &mut Scratch,
        expand: impl Fn(f32) -> bool,
        mut seen: impl FnMut(u32, f32),
    ) {
        let Scratch { visited, buf, .. } = scratch;
        while let Some(c) = seeds.pop() {
            let l = self.list(c, 0);
            let cnt = list_count(l);
            buf.clear();
            buf.extend(l[1..=cnt].iter().map(|a| a.load(Relaxed)));
            visited.retain_new(buf, c, |id| dist.prefetch(id));
            let mut consider = |nb: u32, d: f32| {
                seen(nb, d);
                if expand(d) {
                    seeds.push(nb);
                }
            };
            let whole = buf.len() / 4 * 4;
            for j in (0..whole).step_by(4) {
                let ids = [buf[j], buf[j + 1], buf[j + 2], buf[j + 3]];
                for (nb, d) in ids.into_iter().zip(dist.distance4(ids)) {
                    consider(nb, d);
                }
            }
            score_leftover(dist, &buf[whole..], consider);
        }
    }

    /// Nodes reachable on level 0 from the entry point, skipping nodes with `skip(id)`.
    pub(crate) fn reachable(&self, skip: impl Fn(u32) -> bool) -> Vec<bool> {
        let mut seen = vec![false; self.len()];
        if self.entry != NONE {
            seen[self.entry as usize] = true;
            self.mark_from(self.entry, &mut seen, skip);
        }
        seen
    }

    /// Marks on `seen` what is reachable from `from` (already marked itself).
    pub(crate) fn mark_from(&self, from: u32, seen: &mut [bool], skip: impl Fn(u32) -> bool) {
        let mut stack = vec![from];
        let mut buf = Vec::new();
        while let Some(u) = stack.pop() {
            self.neighbors_into(u, 0, &mut buf);
            for &v in &buf {
                if (v as usize) < seen.len() && !seen[v as usize] && !skip(v) {
                    seen[v as usize] = true;
                    stack.push(v);
                }
            }
        }
    }

    /// Bytes of graph memory per node slot.
    pub(crate) fn bytes(&self) -> usize {
        self.levels.len() + 4 * (self.links0.len() + self.upper_off.len() + self.upper.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_m_to_the_minus_l() {
        let mut g = Hnsw::new(16).unwrap();
        let n = 200_000;
        let mut at_least = [0usize; 4];
        for _ in 0..n {
            let l = g.draw_level();
            for (i, c) in at_least.iter_mut().enumerate() {
                if l >= i {
                    *c += 1;
                }
            }
        }
        assert_eq!(at_least[0], n);
        let p1 = at_least[1] as f64 / n as f64;
        let p2 = at_least[2] as f64 / n as f64;
        assert!((p1 - 1.0 / 16.0).abs() < 0.003, "{p1}");
        assert!((p2 - 1.0 / 256.0).abs() < 0.001, "{p2}");
        // Same seed, same draws.
        let mut a = Hnsw::new(8).unwrap();
        let mut b = Hnsw::new(8).unwrap();
        let la: Vec<_> = (0..100).map(|_| a.draw_level()).collect();
        let lb: Vec<_> = (0..100).map(|_| b.draw_level()).collect();
        assert_eq!(la, lb);
    }

    #[test]
    fn m_out_of_range_is_an_error() {
        assert!(Hnsw::new(1).is_err());
        assert!(Hnsw::new(0).is_err());
        assert!(Hnsw::new(2).is_ok());
    }

    #[test]
    fn retain_new_keeps_unmarked_ids_in_order() {
        let mut v = Visited::default();
        v.prepare(10);
        assert!(!v.test_and_set(3));
        let mut ids = vec![7, 3, 1, 9, 4];
        let mut fetched = Vec::new();
        v.retain_new(&mut ids, 0, |id| fetched.push(id));
        assert_eq!(ids, [7, 1, 9, 4]);
        assert_eq!(fetched, [7, 0, 1, 9, 4]);
        for id in [7, 3, 1, 9, 4] {
            assert!(v.test_and_set(id), "{id} marked");
        }
        assert!(!v.test_and_set(5));
        let mut again = vec![1, 2, 5];
        v.retain_new(&mut again, 8, |_| {});
        assert_eq!(again, [2]);
        // A new search forgets every mark, also when the epoch wraps around.
        for _ in 0..600 {
            v.prepare(10);
            let mut all: Vec<u32> = (0..10).collect();
            v.retain_new(&mut all, 0, |_| {});
            assert_eq!(all.len(), 10);
            assert!(v.test_and_set(4));
        }
    }

    #[test]
    fn lists_append_and_replace() {
        let mut g = Hnsw::new(2).unwrap();
        g.push_node(1);
        g.push_node(0);
        assert!(g.try_append(0, 0, 1));
        assert_eq!(g.neighbors(0, 0), vec![1]);
        for i in 0..3 {
            assert!(g.try_append(0, 0, i));
        }
        assert!(!g.try_append(0, 0, 9));
        g.set_neighbors(0, 1, &[1]);
        assert_eq!(g.neighbors(0, 1), vec![1]);
        assert!(g.neighbors(1, 1).is_empty());
        g.reinit_node(0, 2);
        assert!(g.neighbors(0, 0).is_empty());
        assert_eq!(g.level(0), Some(2));
        // Re-used slots give their blocks back: with levels going up and down in turn,
        // the upper lists hold at most one block of each size per node (2 · (1 + 2 + 3)
        // lists), where keeping every old block would hold about 100.
        g.set_neighbors(0, 2, &[1]);
        for i in 0..50 {
            g.reinit_node(0, [1, 3, 2, 0][i % 4]);
            g.reinit_node(1, [2, 0, 3, 1][i % 4]);
            for n in 0..2 {
                for l in 1..=g.levels[n] as usize {
                    assert!(g.neighbors(n, l).is_empty(), "fresh lists are empty");
                }
            }
            g.set_neighbors(0, g.levels[0] as usize, &[1]);
        }
        assert!(
            g.upper.len() <= 12 * (g.m + 1),
            "{} lists",
            g.upper.len() / (g.m + 1)
        );
    }
}
