//! `IndexHnsw`: an HNSW graph over a storage, behind the workspace's `Index` trait.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use rayon::prelude::*;
use vq_core::persist::{DType, StateReader, StateWriter};
use vq_core::{
    Error, IdFilter, Index, Label, Metric, NO_LABEL, RangeSearchResults, Result, SearchParams,
    SearchResults, VectorsRef, check_range_search, check_search,
};
use vq_pq::{ProductQuantizer, ScalarQuantizer, SqType};

use crate::build::{
    build_deterministic, build_locked, is_deleted, link_unreachable, repair, with_search_scratch,
};
use crate::graph::{Hnsw, MAX_LEVEL, NONE, Near, NodeDistance, PRUNE_HEADROOM_RANGE};
use crate::io::{Reader, Writer};
use crate::storage::{CodecStorage, FlatStorage, HnswStorage};

const MAGIC: &[u8; 8] = b"VQHNSW\0\0";

/// An [`std::io::Write`] over a container section's sink; keeps the sink's own error.
struct SinkWrite<'s> {
    sink: &'s mut dyn FnMut(&[u8]) -> Result<()>,
    err: Option<Error>,
}

impl Write for SinkWrite<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        match (self.sink)(b) {
            Ok(()) => Ok(b.len()),
            Err(e) => {
                self.err = Some(e);
                Err(std::io::Error::other("writing the section failed"))
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
/// Version 2 added bit 1 of the build-flags byte (`linkAllCandidates`); version 1 files
/// (flags 0 or 1) are read with the rule off, as they were built. Version 3 added bit 2
/// (`codedBuild=0`); earlier files are read with coded builds on, the default. Version 4
/// added the re-selection headroom (`f32` after the flags); earlier files are read with 0,
/// as they were built.
const VERSION: u32 = 4;

/// An HNSW index over raw vectors (`"HNSW32"`, Faiss's `IndexHNSWFlat`).
pub type IndexHnswFlat = IndexHnsw<FlatStorage>;
/// An HNSW index over scalar-quantized codes (`"HNSW32_SQ8"`, Faiss's `IndexHNSWSQ`).
pub type IndexHnswSq = IndexHnsw<CodecStorage<ScalarQuantizer>>;
/// An HNSW index over PQ codes (`"HNSW32_PQ16"`, Faiss's `IndexHNSWPQ`).
pub type IndexHnswPq = IndexHnsw<CodecStorage<ProductQuantizer>>;

/// An HNSW graph index (Faiss's `IndexHNSW`) over any [`HnswStorage`], with what Faiss's
/// lacks: `add_with_ids`, `remove_ids` that repairs the graph and re-uses slots, and
/// filtered search that still returns `k` results (exact search over the survivors when a
/// filter keeps few).
///
/// Parameters as Faiss: `M` links per node on upper levels, `2·M` on level 0;
/// `efConstruction` 40; `efSearch` 16 by default, per call through
/// [`SearchParams::ef_search`]; the beam at level 0 is `max(efSearch, k)`.
///
/// Ids: without `add_with_ids` or removals the id of a vector is its insertion rank, as in
/// Faiss. After a removal (or with explicit ids) the index keeps an id map; `add` then
/// numbers new vectors after the largest id ever used, so ids are never recycled even when
/// slots are.
#[derive(Debug)]
pub struct IndexHnsw<S> {
    storage: S,
    graph: Hnsw,
    labels: Option<Vec<Label>>,
    slot_of: HashMap<Label, u32>,
    next_label: Label,
    deleted: Vec<u64>,
    n_deleted: usize,
    /// Deleted slots, highest first (`pop` re-uses the lowest).
    free: Vec<u32>,
    deterministic: bool,
}

impl IndexHnswFlat {
    /// An empty index over raw vectors of dimension `d` with `m` links per node.
    ///
    /// # Errors
    /// `d == 0`, `m < 2`.
    pub fn new(d: usize, m: usize, metric: Metric) -> Result<IndexHnswFlat> {
        IndexHnsw::with_storage(FlatStorage::new(d, metric)?, m)
    }
}

impl IndexHnswSq {
    /// An empty index over `qtype` scalar-quantized codes (train before adding).
    ///
    /// # Errors
    /// `d == 0`, `m < 2`.
    pub fn new_sq(d: usize, m: usize, qtype: SqType, metric: Metric) -> Result<IndexHnswSq> {
        IndexHnsw::with_storage(
            CodecStorage::new(ScalarQuantizer::new(d, qtype)?, metric),
            m,
        )
    }
}

impl IndexHnswPq {
    /// An empty index over PQ codes of `pq_m` sub-quantizers of `nbits` bits (train before
    /// adding).
    ///
    /// # Errors
    /// `m < 2`; `pq_m` not dividing `d`; `nbits` outside `1..=16`.
    pub fn new_pq(
        d: usize,
        m: usize,
        pq_m: usize,
        nbits: usize,
        metric: Metric,
    ) -> Result<IndexHnswPq> {
        IndexHnsw::with_storage(
            CodecStorage::new(ProductQuantizer::new(d, pq_m, nbits)?, metric),
            m,
        )
    }
}

fn label_err(what: &str, v: usize) -> Error {
    Error::invalid_param(what, format!("`{v}` must be at least 1"))
}

impl<S: HnswStorage> IndexHnsw<S> {
    /// An empty index over `storage` (which must be empty) with `m` links per node.
    ///
    /// # Errors
    /// `m < 2` or `m > 4096`; non-empty storage.
    pub fn with_storage(storage: S, m: usize) -> Result<IndexHnsw<S>> {
        if !storage.is_empty() {
            return Err(Error::invalid_param(
                "storage",
                "an HNSW index starts from empty storage",
            ));
        }
        Ok(IndexHnsw {
            storage,
            graph: Hnsw::new(m)?,
            labels: None,
            slot_of: HashMap::new(),
            next_label: 0,
            deleted: Vec::new(),
            n_deleted: 0,
            free: Vec::new(),
            deterministic: false,
        })
    }

    /// The graph (levels, neighbours, entry point).
    pub fn graph(&self) -> &Hnsw {
        &self.graph
    }

    /// The graph, to change test-only switches.
    #[cfg(test)]
    pub(crate) fn graph_mut(&mut self) -> &mut Hnsw {
        &mut self.graph
    }

    /// The storage behind the graph.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// Sets the beam width used while inserting (default 40).
    ///
    /// # Errors
    /// `ef == 0`.
    pub fn set_ef_construction(&mut self, ef: usize) -> Result<()> {
        if ef == 0 {
            return Err(label_err("efConstruction", ef));
        }
        self.graph.ef_construction = ef;
        Ok(())
    }

    /// Sets the default search beam width (default 16; a call's `efSearch` overrides it).
    ///
    /// # Errors
    /// `ef == 0`.
    pub fn set_ef_search(&mut self, ef: usize) -> Result<()> {
        if ef == 0 {
            return Err(label_err("efSearch", ef));
        }
        self.graph.ef_search = ef;
        Ok(())
    }

    /// Sets the seed of the level generator (default 12345, as Faiss).
    pub fn set_seed(&mut self, seed: u64) {
        self.graph.seed = seed;
    }

    /// Chooses the deterministic build: the same graph at any number of threads (batches
    /// planned in parallel against the graph before the batch, linked in a fixed order).
    /// Off by default: the default build inserts in parallel with per-node locks, as Faiss
    /// and hnswlib, and its graph depends on thread timing.
    pub fn set_deterministic(&mut self, on: bool) {
        self.deterministic = on;
    }

    /// Chooses how a new node picks its links when its beam found fewer candidates than
    /// its list holds (`efConstruction` below `2·M` on level 0, or a small graph).
    ///
    /// On (the default, Faiss's rule): it links them all, so level 0 is denser and reaches
    /// higher recall per `efSearch`, at about twice the build time for `M = 32`,
    /// `efConstruction = 40`. Off: the neighbour-selection heuristic always selects (close
    /// to hnswlib, which also caps a new node's level-0 links at `M`): a sparser graph,
    /// built faster, that needs a larger `efSearch` for the same recall on hard data.
    /// Either way full lists are re-selected with the heuristic. Build parameter
    /// `linkAllCandidates=0/1`.
    pub fn set_link_all_candidates(&mut self, on: bool) {
        self.graph.link_all = on;
    }

    /// Sets the fraction of a full list's capacity that re-selecting it leaves free
    /// (Faiss's `prune_headroom`, default 0.2 as in Faiss 1.15): when a new link overflows
    /// a list, the heuristic re-selects at most `capacity − capacity·h` links (rounded
    /// down: 51 of 64, 12 of 16), so the next few links are appended without another
    /// re-selection. 0 fills lists to capacity (Faiss before 1.14, hnswlib). Saved with
    /// the index; files written before it was are read with 0, as they were built. Build
    /// parameter `pruneHeadroom=0.2`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] unless `0 ≤ h ≤ 0.5`.
    pub fn set_prune_headroom(&mut self, h: f32) -> Result<()> {
        if !PRUNE_HEADROOM_RANGE.contains(&h) {
            return Err(Error::invalid_param(
                "pruneHeadroom",
                format!("{h}: the headroom is a fraction of a list, from 0 to 0.5"),
            ));
        }
        self.graph.prune_headroom = h;
        Ok(())
    }

    /// Chooses how a build over raw vectors finds each new node's candidates.
    ///
    /// On (the default): the build keeps a temporary copy of every stored vector quantized
    /// to one byte per component (per-component min/max ranges, as `SQ8`) and its beam
    /// searches score those codes, a quarter of the bytes of a raw row; the candidates they
    /// find are scored again with exact distances before the heuristic chooses among them,
    /// so neighbour selection and re-selection see exact distances as before, and only the
    /// search's path can differ (a list that takes every candidate under Faiss's rule is
    /// kept in the codes' order, nearest first). It is used when a call adds at least 1/64
    /// of the stored vectors (coding them all costs about one distance each) and dropped
    /// when the call returns: the index stays as small as without it. Off: the searches
    /// score the raw vectors, as Faiss's build does. No effect on SQ or PQ storage, whose
    /// searches score their codes anyway.
    /// Build parameter `codedBuild=0/1`.
    pub fn set_coded_build(&mut self, on: bool) {
        self.graph.steer = on;
    }

    /// Whether builds over raw vectors steer their searches with 8-bit codes
    /// ([`IndexHnsw::set_coded_build`]).
    pub fn coded_build(&self) -> bool {
        self.graph.steer
    }

    /// Whether the deterministic build is on.
    pub fn deterministic(&self) -> bool {
        self.deterministic
    }

    /// Number of slots (live and deleted vectors).
    pub fn slots(&self) -> usize {
        self.graph.len()
    }

    /// Whether slot `slot` holds a removed vector.
    pub fn is_removed_slot(&self, slot: usize) -> bool {
        slot < self.slots() && is_deleted(&self.deleted, slot as u32)
    }

    /// The id of the vector in `slot` (`None` when out of range or removed).
    pub fn slot_label(&self, slot: usize) -> Option<Label> {
        if slot >= self.slots() || self.is_removed_slot(slot) {
            return None;
        }
        Some(self.label(slot as u32))
    }

    #[inline]
    fn label(&self, slot: u32) -> Label {
        match &self.labels {
            Some(l) => l[slot as usize],
            None => slot as Label,
        }
    }

    fn slot(&self, id: Label) -> Option<u32> {
        match &self.labels {
            Some(_) => self.slot_of.get(&id).copied(),
            None => (id >= 0 && (id as usize) < self.slots()).then_some(id as u32),
        }
    }

    /// Switches to an explicit id map (ids = slots so far).
    fn materialize_labels(&mut self) {
        if self.labels.is_none() {
            let n = self.slots();
            self.labels = Some((0..n as Label).collect());
            self.slot_of = (0..n as u32)
                .filter(|&s| !is_deleted(&self.deleted, s))
                .map(|s| (s as Label, s))
                .collect();
            self.next_label = self.next_label.max(n as Label);
        }
    }

    /// Checks the node-level invariants: every list within its capacity, no node linking
    /// itself or a removed or out-of-range node, levels within the top level. Tests and
    /// `load` use it.
    ///
    /// # Errors
    /// The first violation found.
    pub fn check_graph(&self) -> Result<()> {
        let g = &self.graph;
        let n = g.len();
        let bad = |r: String| Err(Error::Serialization(format!("HNSW graph: {r}")));
        for u in 0..n {
            let lu = g.levels[u] as usize;
            if lu > g.max_level && !self.is_removed_slot(u) {
                return bad(format!(
                    "node {u} at level {lu} above the top {}",
                    g.max_level
                ));
            }
            for l in 0..=lu {
                // The raw count slot: count in the low 16 bits, pruned prefix above.
                let w = g.list(u as u32, l)[0].load(Relaxed);
                let (cnt, pruned) = ((w & 0xFFFF) as usize, (w >> 16) as usize);
                if cnt > g.capacity(l) || pruned > cnt {
                    return bad(format!(
                        "node {u} has {cnt} links on level {l} (pruned prefix {pruned})"
                    ));
                }
                for v in g.neighbors(u, l) {
                    if v as usize >= n || v as usize == u {
                        return bad(format!("node {u} links {v} on level {l}"));
                    }
                    if (g.levels[v as usize] as usize) < l && !self.is_removed_slot(v as usize) {
                        return bad(format!("node {u} links {v} on level {l} above its top"));
                    }
                    if !self.is_removed_slot(u) && self.is_removed_slot(v as usize) {
                        return bad(format!("node {u} links removed node {v}"));
                    }
                }
            }
        }
        if self.len() > 0 && (g.entry as usize >= n || self.is_removed_slot(g.entry as usize)) {
            return bad(format!("entry point {} is not a live node", g.entry));
        }
        Ok(())
    }

    /// Adds `x` as [`Index::add`] does, with each vector's top level given instead of
    /// drawn (Faiss's preset levels, `hnsw_add_vertices(…, preset_levels = true)`); the
    /// level generator is not advanced. With the levels of a graph built elsewhere, one
    /// thread and `set_coded_build(false)`, the vectors go in in order and the links are
    /// those of Faiss's build adding the same vectors one at a time (the tests compare a
    /// Faiss-built graph link for link).
    ///
    /// # Errors
    /// As [`Index::add`]; [`Error::LengthMismatch`] when `levels` does not hold one level
    /// per vector; [`Error::InvalidParameter`] for a level above 30.
    pub fn add_with_levels(&mut self, x: VectorsRef<'_>, levels: &[u8]) -> Result<()> {
        if levels.len() != x.len() {
            return Err(Error::LengthMismatch {
                what: "levels",
                expected: x.len(),
                got: levels.len(),
            });
        }
        if let Some(&l) = levels.iter().find(|&&l| usize::from(l) > MAX_LEVEL) {
            return Err(Error::invalid_param(
                "levels",
                format!("level {l}: the highest level a node can have is {MAX_LEVEL}"),
            ));
        }
        self.add_impl(x, None, Some(levels))
    }

    /// Number of live nodes reachable on level 0 from the entry point.
    pub fn reachable_count(&self) -> usize {
        let seen = self.graph.reachable(|id| is_deleted(&self.deleted, id));
        seen.iter()
            .enumerate()
            .filter(|&(i, &s)| s && !is_deleted(&self.deleted, i as u32))
            .count()
    }

    fn add_impl(
        &mut self,
        x: VectorsRef<'_>,
        ids: Option<&[Label]>,
        levels: Option<&[u8]>,
    ) -> Result<()> {
        if !self.storage.is_trained() {
            return Err(Error::NotTrained {
                what: self.describe(),
            });
        }
        x.check_dim(self.dim())?;
        x.check_finite()?;
        let n = x.len();
        if let Some(ids) = ids {
            if ids.len() != n {
                return Err(Error::LengthMismatch {
                    what: "ids",
                    expected: n,
                    got: ids.len(),
                });
            }
            self.materialize_labels();
            let mut fresh = std::collections::HashSet::with_capacity(n);
            for &id in ids {
                if id == NO_LABEL || self.slot_of.contains_key(&id) || !fresh.insert(id) {
                    return Err(Error::DuplicateId { id });
                }
            }
        }
        if n == 0 {
            return Ok(());
        }
        // Ids handed out next (checked before anything changes): they must not pass the
        // largest id, which would wrap around onto ids in use.
        let auto_ids = ids.is_none() && (self.labels.is_some() || !self.free.is_empty());
        if auto_ids && self.next_label.checked_add(n as Label).is_none() {
            return Err(Error::invalid_param(
                "ids",
                format!(
                    "no ids left: the next id is {} and {n} more would pass {}",
                    self.next_label,
                    Label::MAX
                ),
            ));
        }
        let live_before = self.len();
        if self.slots() + n > (u32::MAX - 1) as usize {
            return Err(Error::invalid_param(
                "n",
                "an HNSW index holds at most 2^32 - 2 vectors",
            ));
        }
        if !self.free.is_empty() {
            self.materialize_labels();
        }
        let reuse = n.min(self.free.len());
        let mut slots = Vec::with_capacity(n);
        for _ in 0..reuse {
            if let Some(s) = self.free.pop() {
                slots.push(s);
            }
        }
        let first_new = self.slots() as u32;
        slots.extend(first_new..first_new + (n - reuse) as u32);
        // Storage first (the graph reads it while linking).
        for (i, &s) in slots[..reuse].iter().enumerate() {
            self.storage.overwrite(s as usize, x.row(i))?;
        }
        self.storage.push(x.slice(reuse..n))?;
        // Ids.
        if self.labels.is_some() {
            let new_labels: Vec<Label> = match ids {
                Some(ids) => ids.to_vec(),
                None => (0..n as Label).map(|i| self.next_label + i).collect(),
            };
            if let Some(max) = new_labels.iter().max() {
                self.next_label = self.next_label.max(max.saturating_add(1));
            }
            let labels = self.labels.get_or_insert_with(Vec::new);
            for (&s, &l) in slots.iter().zip(&new_labels) {
                if (s as usize) < labels.len() {
                    labels[s as usize] = l;
                } else {
                    labels.push(l);
                }
                self.slot_of.insert(l, s);
            }
        } else {
            self.next_label = (self.slots() + n) as Label;
        }
        // Levels and empty lists.
        self.graph.reserve(n - reuse);
        for (i, &s) in slots.iter().enumerate() {
            let level = match levels {
                Some(l) => usize::from(l[i]),
                None => self.graph.draw_level(),
            };
            if (s as usize) < self.graph.len() {
                self.graph.reinit_node(s, level);
                self.deleted[s as usize / 64] &= !(1u64 << (s % 64));
                self.n_deleted -= 1;
            } else {
                self.graph.push_node(level);
            }
        }
        self.deleted.resize(self.graph.len().div_ceil(64), 0);
        if self.deterministic {
            build_deterministic(&mut self.graph, &self.storage, &self.deleted, &slots, x)?;
        } else {
            build_locked(&mut self.graph, &self.storage, &self.deleted, &slots, x)?;
        }
        // A large batch or re-used slots: make sure every node is reachable.
        if reuse > 0 || n.saturating_mul(64) >= live_before {
            link_unreachable(&self.graph, &self.storage, &self.deleted)?;
        }
        Ok(())
    }

    fn ef_for(&self, params: &SearchParams<'_>, k: usize) -> Result<usize> {
        let ef = params.ef_search.unwrap_or(self.graph.ef_search);
        if ef == 0 {
            return Err(label_err("efSearch", ef));
        }
        Ok(ef.max(k))
    }

    /// Live slots the filter keeps, when few enough that scanning them beats the graph
    /// (`count² < 2·ef·M·n`, the graph visiting about `ef·M / fraction kept` nodes).
    fn exact_candidates(&self, filter: &dyn IdFilter, ef: usize) -> Option<Vec<u32>> {
        let n = self.slots();
        let kept: Vec<u32> = (0..n as u32)
            .into_par_iter()
            .with_min_len(4096)
            .filter(|&s| !is_deleted(&self.deleted, s) && filter.is_member(self.label(s)))
            .collect();
        let c = kept.len() as f64;
        let live = self.len() as f64;
        (c * c < 2.0 * ef as f64 * self.graph.m as f64 * live).then_some(kept)
    }

    /// Writes the index (storage, graph, ids) to `w`.
    ///
    /// # Errors
    /// I/O errors.
    pub fn write_to(&self, w: &mut dyn Write) -> Result<()> {
        let mut w = Writer::new(w);
        let g = &self.graph;
        w.bytes(MAGIC)?;
        w.u32(VERSION)?;
        w.str(S::KIND)?;
        w.u8(match self.metric() {
            Metric::L2 => 0,
            Metric::InnerProduct => 1,
        })?;
        for v in [
            self.dim(),
            g.m,
            g.ef_construction,
            g.ef_search,
            self.slots(),
        ] {
            w.u64(v as u64)?;
        }
        w.u64(g.seed)?;
        w.u64(g.draws)?;
        w.u8(u8::from(self.deterministic) | u8::from(g.link_all) << 1 | u8::from(!g.steer) << 2)?;
        w.bytes(&g.prune_headroom.to_le_bytes())?;
        self.storage.write(&mut w)?;
        w.bytes(&g.levels)?;
        // Each block as count, links, then zeros: the count slot's pruned-prefix bits and
        // whatever a shortened list left past its count are working state, not part of
        // the format (so saving a loaded index writes the same bytes).
        fn block(list: &[AtomicU32]) -> impl Iterator<Item = u32> + '_ {
            let cnt = crate::graph::list_count(list);
            std::iter::once(cnt as u32).chain(
                list[1..]
                    .iter()
                    .enumerate()
                    .map(move |(i, a)| if i < cnt { a.load(Relaxed) } else { 0 }),
            )
        }
        w.u32s((0..self.slots() as u32).flat_map(|u| block(g.list(u, 0))))?;
        for u in 0..self.slots() as u32 {
            for l in 1..=g.levels[u as usize] as usize {
                w.u32s(block(g.list(u, l)))?;
            }
        }
        w.u32(g.entry)?;
        w.u32(g.max_level as u32)?;
        let removed: Vec<u32> = (0..self.slots() as u32)
            .filter(|&s| is_deleted(&self.deleted, s))
            .collect();
        w.u64(removed.len() as u64)?;
        w.u32s(removed.into_iter())?;
        match &self.labels {
            Some(l) => {
                w.u8(1)?;
                w.i64s(l)?;
            }
            None => w.u8(0)?,
        }
        w.u64(self.next_label as u64)?;
        Ok(())
    }

    /// Reads an index written by [`IndexHnsw::write_to`], checking every field.
    ///
    /// # Errors
    /// [`Error::Serialization`] for a truncated, corrupt or foreign stream (wrong magic,
    /// another storage type, links out of range...); [`Error::UnsupportedVersion`].
    pub fn read_from(r: &mut dyn Read) -> Result<IndexHnsw<S>> {
        let mut r = Reader::new(r);
        if r.bytes(8)? != MAGIC {
            return Err(r.bad("not an HNSW index file (bad magic)"));
        }
        let version = r.u32()?;
        if !(1..=VERSION).contains(&version) {
            return Err(Error::UnsupportedVersion {
                found: version,
                supported: VERSION,
            });
        }
        let kind = r.str()?;
        if kind != S::KIND {
            return Err(r.bad(format!(
                "the file holds `{kind}` storage, not `{}`",
                S::KIND
            )));
        }
        let metric = match r.u8()? {
            0 => Metric::L2,
            1 => Metric::InnerProduct,
            t => return Err(r.bad(format!("unknown metric {t}"))),
        };
        let d = r.usize()?;
        let m = r.usize()?;
        let efc = r.usize()?;
        let efs = r.usize()?;
        let n = r.usize()?;
        // d is bounded before anything is sized by it (a codec's per-dimension tables).
        if d == 0
            || d > 1 << 20
            || !(2..=4096).contains(&m)
            || efc == 0
            || efs == 0
            || n >= u32::MAX as usize
        {
            return Err(r.bad(format!("bad header: d {d}, M {m}, ef {efc}/{efs}, n {n}")));
        }
        let seed = r.u64()?;
        let draws = r.u64()?;
        let flags = r.u8()?;
        let known = match version {
            1 => 1,
            2 => 3,
            _ => 7,
        };
        if flags > known {
            return Err(r.bad(format!("unknown build flags {flags:#x}")));
        }
        let deterministic = flags & 1 == 1;
        let headroom = if version >= 4 {
            let h = r.f32s(1)?[0];
            if !PRUNE_HEADROOM_RANGE.contains(&h) {
                return Err(r.bad(format!("re-selection headroom {h}")));
            }
            h
        } else {
            0.0
        };
        let storage = S::read(&mut r, d, metric, n)?;
        if storage.len() != n || storage.dim() != d {
            return Err(r.bad("storage size disagrees with the header"));
        }
        let mut g = Hnsw::new(m)?;
        g.ef_construction = efc;
        g.link_all = flags & 2 == 2;
        g.steer = flags & 4 == 0;
        g.prune_headroom = headroom;
        g.ef_search = efs;
        g.seed = seed;
        g.draws = draws;
        let levels = r.bytes(n)?;
        for &l in &levels {
            if l > 30 {
                return Err(r.bad(format!("node level {l}")));
            }
        }
        let links0 = r.u32s(n * (2 * m + 1))?;
        g.reserve(n);
        for &l in &levels {
            g.push_node(l as usize);
        }
        let check = |r: &Reader<'_>, list: &[u32], cap: usize| -> Result<()> {
            if list[0] as usize > cap || list[1..=list[0] as usize].iter().any(|&v| v as usize >= n)
            {
                return Err(r.bad("adjacency list out of range"));
            }
            Ok(())
        };
        for (u, list) in links0.chunks_exact(2 * m + 1).enumerate() {
            check(&r, list, 2 * m)?;
            g.set_neighbors(u as u32, 0, &list[1..=list[0] as usize]);
        }
        for (u, &lu) in levels.iter().enumerate() {
            for l in 1..=lu as usize {
                let list = r.u32s(m + 1)?;
                check(&r, &list, m)?;
                g.set_neighbors(u as u32, l, &list[1..=list[0] as usize]);
            }
        }
        g.entry = r.u32()?;
        g.max_level = r.u32()? as usize;
        let n_removed = r.usize()?;
        if n_removed > n {
            return Err(r.bad("more removed slots than slots"));
        }
        let removed = r.u32s(n_removed)?;
        let mut deleted = vec![0u64; n.div_ceil(64)];
        for &s in &removed {
            if s as usize >= n || is_deleted(&deleted, s) {
                return Err(r.bad(format!("removed slot {s}")));
            }
            deleted[s as usize / 64] |= 1 << (s % 64);
        }
        let labels = match r.u8()? {
            0 => None,
            1 => Some(r.i64s(n)?),
            t => return Err(r.bad(format!("id map flag {t}"))),
        };
        let next_label = r.u64()? as Label;
        let mut slot_of = HashMap::new();
        if let Some(l) = &labels {
            for (s, &id) in l.iter().enumerate() {
                // Every stored id was used once, so the next id to hand out lies above it
                // (`add` keeps it so, saturating at the largest id).
                if next_label < id.saturating_add(1) {
                    return Err(r.bad(format!(
                        "next id {next_label} is not above the stored id {id}"
                    )));
                }
                if is_deleted(&deleted, s as u32) {
                    continue;
                }
                if id == NO_LABEL {
                    return Err(r.bad(format!("slot {s} holds the id {NO_LABEL}")));
                }
                if slot_of.insert(id, s as u32).is_some() {
                    return Err(r.bad(format!("id {id} appears twice")));
                }
            }
        } else if next_label < n as Label {
            return Err(r.bad(format!("next id {next_label} is below the {n} slots' ids")));
        }
        if (n > n_removed) != (g.entry != NONE) {
            return Err(r.bad("entry point disagrees with the number of nodes"));
        }
        if g.entry != NONE && levels.get(g.entry as usize).map(|&l| l as usize) != Some(g.max_level)
        {
            return Err(r.bad("entry point is not on the top level"));
        }
        let mut free = removed;
        free.sort_unstable_by(|a, b| b.cmp(a));
        let idx = IndexHnsw {
            storage,
            graph: g,
            labels,
            slot_of,
            next_label,
            deleted,
            n_deleted: n_removed,
            free,
            deterministic,
        };
        idx.check_graph()?;
        Ok(idx)
    }

    /// Saves to a file.
    ///
    /// # Errors
    /// [`Error::Io`] with the path.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let f = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
        let mut w = std::io::BufWriter::new(f);
        self.write_to(&mut w).map_err(|e| match e {
            Error::Serialization(m) => Error::format(path, m),
            e => e,
        })?;
        w.flush().map_err(|e| Error::io(path, e))
    }

    /// Loads a file written by [`IndexHnsw::save`].
    ///
    /// # Errors
    /// [`Error::Io`]; [`Error::Format`] with the path for a corrupt or truncated file.
    pub fn load(path: impl AsRef<Path>) -> Result<IndexHnsw<S>> {
        let path = path.as_ref();
        let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let mut r = std::io::BufReader::new(f);
        let idx = IndexHnsw::read_from(&mut r).map_err(|e| match e {
            Error::Serialization(m) => Error::format(path, m),
            e => e,
        })?;
        let mut rest = [0u8; 1];
        if r.read(&mut rest).map_err(|e| Error::io(path, e))? != 0 {
            return Err(Error::format(path, "trailing bytes after the index"));
        }
        Ok(idx)
    }

    /// Internal (smaller-is-closer) distance back to the metric's convention.
    #[inline]
    fn out_distance(&self, d: f32) -> f32 {
        match self.metric() {
            Metric::L2 => d,
            Metric::InnerProduct => -d,
        }
    }
}

impl<S: HnswStorage> Index for IndexHnsw<S> {
    fn dim(&self) -> usize {
        self.storage.dim()
    }

    fn metric(&self) -> Metric {
        self.storage.metric()
    }

    fn len(&self) -> usize {
        self.slots() - self.n_deleted
    }

    fn add(&mut self, x: VectorsRef<'_>) -> Result<()> {
        self.add_impl(x, None, None)
    }

    fn add_with_ids(&mut self, x: VectorsRef<'_>, ids: &[Label]) -> Result<()> {
        self.add_impl(x, Some(ids), None)
    }

    fn search_into(
        &self,
        queries: VectorsRef<'_>,
        k: usize,
        params: &SearchParams<'_>,
        out: &mut SearchResults,
    ) -> Result<()> {
        check_search(self, queries, k)?;
        let ef = self.ef_for(params, k)?;
        let nq = queries.len();
        out.reset(nq, k, self.metric());
        let exact = params.selector.and_then(|f| self.exact_candidates(f, ef));
        let selector = params.selector;
        let (dist, labels) = out.parts_mut();
        let g = &self.graph;
        let deleted = &self.deleted;
        dist.par_chunks_mut(k)
            .zip(labels.par_chunks_mut(k))
            .enumerate()
            .with_min_len(4)
            .try_for_each(|(qi, (dr, lr))| -> Result<()> {
                let mut q = self.storage.query(queries.row(qi))?;
                let mut found: Vec<Near> = match &exact {
                    Some(kept) => {
                        let mut v: Vec<Near> = kept
                            .iter()
                            .map(|&id| Near {
                                d: q.distance(id),
                                id,
                            })
                            .collect();
                        if v.len() > k {
                            v.select_nth_unstable(k - 1);
                            v.truncate(k);
                        }
                        v
                    }
                    None => with_search_scratch(|sc| {
                        let (starts, ns) = g.starts(&mut q, sc);
                        let st = &starts[..ns];
                        match selector {
                            Some(f) => g.search_level(
                                &mut q,
                                st,
                                0,
                                ef,
                                sc,
                                |id| !is_deleted(deleted, id) && f.is_member(self.label(id)),
                                |_, _| {},
                            ),
                            None if self.n_deleted > 0 => g.search_level(
                                &mut q,
                                st,
                                0,
                                ef,
                                sc,
                                |id| !is_deleted(deleted, id),
                                |_, _| {},
                            ),
                            None => g.search_level(&mut q, st, 0, ef, sc, |_| true, |_, _| {}),
                        }
                        sc.top.drain().collect()
                    }),
                };
                found.sort_unstable();
                for ((d, l), n) in dr.iter_mut().zip(lr.iter_mut()).zip(&found) {
                    *d = self.out_distance(n.d);
                    *l = self.label(n.id);
                }
                Ok(())
            })
    }

    fn reset(&mut self) {
        self.storage.clear();
        self.graph.clear();
        self.labels = None;
        self.slot_of.clear();
        self.next_label = 0;
        self.deleted.clear();
        self.n_deleted = 0;
        self.free.clear();
    }

    fn describe(&self) -> String {
        format!("HNSW{}{}", self.graph.m, self.storage.suffix())
    }

    fn is_trained(&self) -> bool {
        self.storage.is_trained()
    }

    fn train(&mut self, x: VectorsRef<'_>) -> Result<()> {
        x.check_dim(self.dim())?;
        x.check_finite()?;
        self.storage.train(x)
    }

    fn range_search(
        &self,
        queries: VectorsRef<'_>,
        radius: f32,
        params: &SearchParams<'_>,
    ) -> Result<RangeSearchResults> {
        check_range_search(self, queries, radius)?;
        let metric = self.metric();
        if self.is_empty() {
            return Ok(RangeSearchResults::from_lists(
                vec![Vec::new(); queries.len()],
                metric,
            ));
        }
        let ef = self.ef_for(params, 1)?;
        // Smaller-is-closer bound.
        let bound = match metric {
            Metric::L2 => radius,
            Metric::InnerProduct => -radius,
        };
        let selector = params.selector;
        let g = &self.graph;
        let deleted = &self.deleted;
        let accept = |id: u32| {
            !is_deleted(deleted, id) && selector.is_none_or(|f| f.is_member(self.label(id)))
        };
        let lists: Vec<Vec<(f32, Label)>> = (0..queries.len())
            .into_par_iter()
            .map(|qi| -> Result<Vec<(f32, Label)>> {
                let mut q = self.storage.query(queries.row(qi))?;
                let mut hits = Vec::new();
                let mut seeds = Vec::new();
                with_search_scratch(|sc| {
                    let (starts, ns) = g.starts(&mut q, sc);
                    let mut found = |id: u32, d: f32| {
                        if d < bound {
                            seeds.push(id);
                            if accept(id) {
                                hits.push((self.out_distance(d), self.label(id)));
                            }
                        }
                    };
                    g.search_level(&mut q, &starts[..ns], 0, ef, sc, accept, &mut found);
                    // The entry point, scored by the descent, is expanded by the beam only
                    // when it runs dry; nodes that only it links to would be missed.
                    for s in &starts[1..ns] {
                        if !sc.visited.test_and_set(s.id) {
                            found(s.id, s.d);
                        }
                    }
                    // Then every node within the radius that the graph links to one
                    // already found (removed and filtered-out nodes relay the flood).
                    g.flood(
                        &mut q,
                        &mut seeds,
                        sc,
                        |d| d < bound,
                        |id, d| {
                            if d < bound && accept(id) {
                                hits.push((self.out_distance(d), self.label(id)));
                            }
                        },
                    );
                });
                Ok(hits)
            })
            .collect::<Result<_>>()?;
        Ok(RangeSearchResults::from_lists(lists, metric))
    }

    fn reconstruct_into(&self, id: Label, out: &mut [f32]) -> Result<()> {
        if out.len() != self.dim() {
            return Err(Error::LengthMismatch {
                what: "reconstruction output",
                expected: self.dim(),
                got: out.len(),
            });
        }
        let slot = self
            .slot(id)
            .filter(|&s| !is_deleted(&self.deleted, s))
            .ok_or(Error::IdNotFound { id })?;
        self.storage.decode(slot, out);
        Ok(())
    }

    fn removal_keeps_ids(&self) -> bool {
        true
    }

    fn remove_ids(&mut self, selector: &dyn IdFilter) -> Result<usize> {
        let victims: Vec<u32> = (0..self.slots() as u32)
            .filter(|&s| !is_deleted(&self.deleted, s) && selector.is_member(self.label(s)))
            .collect();
        if victims.is_empty() {
            return Ok(0);
        }
        self.materialize_labels();
        for &v in &victims {
            self.deleted[v as usize / 64] |= 1 << (v % 64);
            let l = self.label(v);
            self.slot_of.remove(&l);
        }
        self.n_deleted += victims.len();
        repair(&self.graph, &self.storage, &self.deleted);
        for &v in &victims {
            self.graph.clear_links(v);
        }
        self.free.extend(&victims);
        self.free.sort_unstable_by(|a, b| b.cmp(a));
        // New entry point: the lowest live node on the highest level.
        let g = &mut self.graph;
        if g.entry != NONE && is_deleted(&self.deleted, g.entry) {
            let best = (0..g.len() as u32)
                .filter(|&s| !is_deleted(&self.deleted, s))
                .max_by(|&a, &b| {
                    g.levels[a as usize]
                        .cmp(&g.levels[b as usize])
                        .then(b.cmp(&a))
                });
            match best {
                Some(e) => {
                    g.entry = e;
                    g.max_level = g.levels[e as usize] as usize;
                }
                None => {
                    g.entry = NONE;
                    g.max_level = 0;
                }
            }
        }
        link_unreachable(&self.graph, &self.storage, &self.deleted)?;
        Ok(victims.len())
    }

    fn search_param_names(&self) -> Vec<String> {
        vec!["efSearch".to_string()]
    }

    /// `efSearch` (an integer >= 1): the default beam width of searches that do not
    /// set [`SearchParams::ef_search`] (the same default as the build parameter).
    fn set_search_param(&mut self, name: &str, value: &str) -> Result<()> {
        match name {
            "efSearch" => match value.trim().parse::<usize>() {
                Ok(ef) if ef >= 1 => self.set_ef_search(ef),
                _ => Err(Error::invalid_param(
                    name,
                    format!("`{value}` is not an integer >= 1"),
                )),
            },
            _ => Err(Error::invalid_param(
                name,
                format!(
                    "not a search parameter of {} (it has: efSearch)",
                    self.describe()
                ),
            )),
        }
    }

    /// One section, `hnsw`: the byte stream of [`IndexHnsw::write_to`] (storage,
    /// graph, ids, parameters), streamed into the container.
    fn save_state(&self, w: &mut StateWriter<'_>) -> Result<()> {
        w.put_streamed("hnsw", DType::U8, |sink| {
            let mut out = SinkWrite { sink, err: None };
            let res = {
                let mut buf = std::io::BufWriter::with_capacity(1 << 16, &mut out);
                match self.write_to(&mut buf) {
                    Ok(()) => buf
                        .flush()
                        .map_err(|e| Error::Serialization(format!("write failed: {e}"))),
                    Err(e) => {
                        // Drop what is buffered: the section is abandoned.
                        let _ = buf.into_parts();
                        Err(e)
                    }
                }
            };
            match (res, out.err.take()) {
                (Err(_), Some(e)) => Err(e),
                (res, _) => res,
            }
        })
    }

    /// Reads the `hnsw` section with [`IndexHnsw::read_from`] (every field checked)
    /// and replaces this index by it, after checking that it holds the same kind of
    /// storage, dimension, `M` and metric. On error this index is unchanged.
    fn load_state(&mut self, r: &mut StateReader) -> Result<()> {
        // Copied and checksummed even from a mapped file: the whole graph is read anyway.
        let bytes = r.get_bytes("hnsw")?;
        let mut rest: &[u8] = &bytes;
        let loaded = IndexHnsw::<S>::read_from(&mut rest).map_err(|e| match e {
            Error::Serialization(m) => r.error("hnsw", m),
            e => e,
        })?;
        if !rest.is_empty() {
            return Err(r.error(
                "hnsw",
                format!("{} trailing bytes after the index", rest.len()),
            ));
        }
        if loaded.dim() != self.dim()
            || loaded.metric() != self.metric()
            || loaded.graph.m != self.graph.m
            || loaded.describe() != self.describe()
        {
            return Err(r.error(
                "hnsw",
                format!(
                    "holds {} (d={}, {}), the index is {} (d={}, {})",
                    loaded.describe(),
                    loaded.dim(),
                    loaded.metric(),
                    self.describe(),
                    self.dim(),
                    self.metric()
                ),
            ));
        }
        *self = loaded;
        Ok(())
    }

    fn set_build_param(&mut self, name: &str, value: &str) -> Result<()> {
        let count = |v: &str| -> Result<usize> {
            match v.parse::<usize>() {
                Ok(x) if x >= 1 => Ok(x),
                _ => Err(Error::invalid_param(
                    name,
                    format!("`{v}` is not an integer >= 1"),
                )),
            }
        };
        let flag = |v: &str| -> Result<bool> {
            match v {
                "1" | "true" => Ok(true),
                "0" | "false" => Ok(false),
                _ => Err(Error::invalid_param(
                    name,
                    format!("`{v}` is not 0/1/true/false"),
                )),
            }
        };
        match name {
            "efConstruction" => self.set_ef_construction(count(value)?),
            "efSearch" => self.set_ef_search(count(value)?),
            "seed" => {
                let s = value.parse::<u64>().map_err(|_| {
                    Error::invalid_param(name, format!("`{value}` is not an unsigned integer"))
                })?;
                self.set_seed(s);
                Ok(())
            }
            "deterministic" => {
                self.set_deterministic(flag(value)?);
                Ok(())
            }
            "linkAllCandidates" => {
                self.set_link_all_candidates(flag(value)?);
                Ok(())
            }
            "codedBuild" => {
                self.set_coded_build(flag(value)?);
                Ok(())
            }
            "pruneHeadroom" => {
                let h = value.parse::<f32>().map_err(|_| {
                    Error::invalid_param(name, format!("`{value}` is not a number"))
                })?;
                self.set_prune_headroom(h)
            }
            _ => Err(Error::invalid_param(
                name,
                format!(
                    "not a build parameter of {} (known: efConstruction, efSearch, seed, deterministic, linkAllCandidates, codedBuild, pruneHeadroom)",
                    self.describe()
                ),
            )),
        }
    }

    fn bytes_per_vector(&self) -> f64 {
        let n = self.slots();
        if n == 0 {
            return 0.0;
        }
        let ids = self.labels.as_ref().map_or(0, |_| 8 * n);
        let total =
            self.storage.code_size() * n + self.graph.bytes() + ids + 8 * self.deleted.len();
        total as f64 / self.len().max(1) as f64
    }
}
