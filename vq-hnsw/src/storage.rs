//! What an HNSW graph links: raw vectors or codes of any ADC codec.

use std::fmt::Debug;

use rayon::prelude::*;
use vq_core::distance::{Kernels, prefetch};
use vq_core::mem::reserve_with_huge_pages;
use vq_core::{AdcCodec, CodeDistance, Codec, Error, Metric, Result, VectorsRef};
use vq_pq::{ProductQuantizer, RangeStat, ScalarQuantizer, SqType};

use crate::graph::{NodeDistance, PREFETCH_LINES};
use crate::io::{Reader, Writer};

/// The vectors behind the graph's nodes. Distances are "smaller is closer": inner products
/// are negated inside the graph and turned back at the interface.
pub trait HnswStorage: Send + Sync + Debug {
    /// Distance computer of one query against stored nodes.
    type Query<'a>: NodeQuery
    where
        Self: 'a;

    /// Storage tag written in saved files.
    const KIND: &'static str;
    /// Vector dimension.
    fn dim(&self) -> usize;
    /// Metric of the distances.
    fn metric(&self) -> Metric;
    /// Number of stored slots.
    fn len(&self) -> usize;
    /// True when nothing is stored.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Bytes stored per vector.
    fn code_size(&self) -> usize;
    /// Whether the codec is trained (raw storage always is).
    fn is_trained(&self) -> bool;
    /// Trains the codec.
    ///
    /// # Errors
    /// As the codec's training.
    fn train(&mut self, x: VectorsRef<'_>) -> Result<()>;
    /// Appends vectors (validated by the caller: dimension, finite, trained).
    ///
    /// # Errors
    /// As the codec's encoder.
    fn push(&mut self, x: VectorsRef<'_>) -> Result<()>;
    /// Replaces the vector in `slot`.
    ///
    /// # Errors
    /// As the codec's encoder.
    fn overwrite(&mut self, slot: usize, x: &[f32]) -> Result<()>;
    /// Drops every vector.
    fn clear(&mut self);
    /// Decodes slot `id` into `out` (`dim` values).
    fn decode(&self, id: u32, out: &mut [f32]);
    /// The raw vector of `id` when the storage keeps raw vectors.
    fn raw(&self, id: u32) -> Option<&[f32]>;
    /// Every raw vector, slot by slot (`len × dim`, row-major), when the storage keeps
    /// raw vectors; `None` (the default) for codes.
    fn raw_rows(&self) -> Option<&[f32]> {
        None
    }
    /// A distance computer for `query` (already validated).
    ///
    /// # Errors
    /// As the codec's query computer.
    fn query<'a>(&'a self, query: &'a [f32]) -> Result<Self::Query<'a>>;
    /// The factory name of the encoding after `HNSW{M}`: `""`, `"_SQ8"`, `"_PQ16"`.
    fn suffix(&self) -> String;
    /// Writes the codec and the codes.
    ///
    /// # Errors
    /// I/O errors of the writer.
    fn write(&self, w: &mut Writer<'_>) -> Result<()>;
    /// Reads what [`HnswStorage::write`] wrote.
    ///
    /// # Errors
    /// A truncated or inconsistent stream.
    fn read(r: &mut Reader<'_>, dim: usize, metric: Metric, n: usize) -> Result<Self>
    where
        Self: Sized;
}

/// The distance computer of [`HnswStorage::query`]: smaller is closer.
pub trait NodeQuery {
    /// Distance to stored node `id`.
    fn node_distance(&mut self, id: u32) -> f32;
    /// Distances to four stored nodes; by default four [`NodeQuery::node_distance`]
    /// calls. Storages that read rows side by side faster override it (results equal
    /// up to rounding).
    fn node_distance4(&mut self, ids: [u32; 4]) -> [f32; 4] {
        ids.map(|id| self.node_distance(id))
    }
    /// [`NodeQuery::node_distance4`] while starting to load the nodes of `next` (the
    /// ones asked for next); by default a [`NodeQuery::node_prefetch`] of each first.
    /// Equal results.
    fn node_distance4_ahead(&mut self, ids: [u32; 4], next: [u32; 4]) -> [f32; 4] {
        for id in next {
            self.node_prefetch(id);
        }
        self.node_distance4(ids)
    }
    /// Starts loading node `id`'s data.
    fn node_prefetch(&self, id: u32);
}

impl<T: NodeQuery> NodeDistance for T {
    #[inline]
    fn distance(&mut self, id: u32) -> f32 {
        self.node_distance(id)
    }
    #[inline]
    fn distance4(&mut self, ids: [u32; 4]) -> [f32; 4] {
        self.node_distance4(ids)
    }
    #[inline]
    fn distance4_ahead(&mut self, ids: [u32; 4], next: [u32; 4]) -> [f32; 4] {
        self.node_distance4_ahead(ids, next)
    }
    #[inline]
    fn prefetch(&self, id: u32) {
        self.node_prefetch(id)
    }
}

/// Distance between two decoded vectors, smaller is closer.
#[inline]
pub(crate) fn vector_distance(k: &Kernels, metric: Metric, a: &[f32], b: &[f32]) -> f32 {
    match metric {
        Metric::L2 => k.l2_sqr(a, b),
        Metric::InnerProduct => -k.inner_product(a, b),
    }
}

/// Raw `f32` vectors (`HNSW32`, `HNSW32,Flat`).
#[derive(Clone, Debug)]
pub struct FlatStorage {
    d: usize,
    metric: Metric,
    data: Vec<f32>,
}

impl FlatStorage {
    /// Empty storage of dimension `d`.
    ///
    /// # Errors
    /// `d == 0`.
    pub fn new(d: usize, metric: Metric) -> Result<FlatStorage> {
        if d == 0 {
            return Err(Error::invalid_param(
                "d",
                "the dimension must be at least 1",
            ));
        }
        Ok(FlatStorage {
            d,
            metric,
            data: Vec::new(),
        })
    }

    /// The stored vectors, slot by slot (`len × d`, row-major).
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }
}

/// Query computer over [`FlatStorage`].
#[derive(Debug)]
pub struct FlatQuery<'a> {
    q: &'a [f32],
    data: &'a [f32],
    d: usize,
    lines: usize,
    ip: bool,
    k: &'static Kernels,
}

impl NodeQuery for FlatQuery<'_> {
    #[inline]
    fn node_distance(&mut self, id: u32) -> f32 {
        let row = &self.data[id as usize * self.d..][..self.d];
        if self.ip {
            -self.k.inner_product(self.q, row)
        } else {
            self.k.l2_sqr(self.q, row)
        }
    }

    #[inline]
    fn node_distance4(&mut self, ids: [u32; 4]) -> [f32; 4] {
        let rows = ids.map(|id| &self.data[id as usize * self.d..][..self.d]);
        if self.ip {
            self.k.inner_product_4(self.q, rows).map(|v| -v)
        } else {
            self.k.l2_sqr_4(self.q, rows)
        }
    }

    #[inline]
    fn node_distance4_ahead(&mut self, ids: [u32; 4], next: [u32; 4]) -> [f32; 4] {
        let rows = ids.map(|id| &self.data[id as usize * self.d..][..self.d]);
        let next = next.map(|id| self.data.get(id as usize * self.d..).unwrap_or(&[]));
        if self.ip {
            self.k.inner_product_4_ahead(self.q, rows, next).map(|v| -v)
        } else {
            self.k.l2_sqr_4_ahead(self.q, rows, next)
        }
    }

    #[inline]
    fn node_prefetch(&self, id: u32) {
        if let Some(row) = self.data.get(id as usize * self.d..) {
            prefetch(row, self.lines);
        }
    }
}

impl HnswStorage for FlatStorage {
    type Query<'a> = FlatQuery<'a>;
    const KIND: &'static str = "flat";

    fn dim(&self) -> usize {
        self.d
    }
    fn metric(&self) -> Metric {
        self.metric
    }
    fn len(&self) -> usize {
        self.data.len() / self.d
    }
    fn code_size(&self) -> usize {
        4 * self.d
    }
    fn is_trained(&self) -> bool {
        true
    }
    fn train(&mut self, x: VectorsRef<'_>) -> Result<()> {
        x.check_dim(self.d)
    }
    fn push(&mut self, x: VectorsRef<'_>) -> Result<()> {
        reserve_with_huge_pages(&mut self.data, x.as_slice().len());
        // Copied by every thread: the first write to fresh memory costs a page fault per
        // page, and these faults then run in parallel instead of on one thread.
        self.data.par_extend(x.as_slice().par_iter().copied());
        Ok(())
    }
    fn overwrite(&mut self, slot: usize, x: &[f32]) -> Result<()> {
        self.data[slot * self.d..][..self.d].copy_from_slice(x);
        Ok(())
    }
    fn clear(&mut self) {
        self.data.clear();
    }
    fn decode(&self, id: u32, out: &mut [f32]) {
        out.copy_from_slice(&self.data[id as usize * self.d..][..self.d]);
    }
    fn raw(&self, id: u32) -> Option<&[f32]> {
        self.data.get(id as usize * self.d..)?.get(..self.d)
    }
    fn raw_rows(&self) -> Option<&[f32]> {
        Some(&self.data)
    }
    fn query<'a>(&'a self, query: &'a [f32]) -> Result<FlatQuery<'a>> {
        if query.len() != self.d {
            return Err(Error::DimensionMismatch {
                expected: self.d,
                got: query.len(),
            });
        }
        Ok(FlatQuery {
            q: query,
            data: &self.data,
            d: self.d,
            lines: (4 * self.d).div_ceil(64).min(PREFETCH_LINES),
            ip: self.metric == Metric::InnerProduct,
            k: Kernels::get(),
        })
    }
    fn suffix(&self) -> String {
        String::new()
    }
    fn write(&self, w: &mut Writer<'_>) -> Result<()> {
        w.f32s(&self.data)
    }
    fn read(r: &mut Reader<'_>, dim: usize, metric: Metric, n: usize) -> Result<Self> {
        let mut s = FlatStorage::new(dim, metric)?;
        s.data = r.f32s(n.checked_mul(dim).ok_or_else(|| r.bad("size overflow"))?)?;
        if s.data.iter().any(|v| !v.is_finite()) {
            return Err(r.bad("stored vectors hold NaN or infinity"));
        }
        Ok(s)
    }
}

/// A codec that can be saved with an HNSW index.
pub trait StorableCodec: AdcCodec + Sized {
    /// Tag written in saved files.
    const KIND: &'static str;
    /// The factory suffix (`_SQ8`, `_PQ16`).
    fn suffix(&self) -> String;
    /// Writes the trained codec.
    ///
    /// # Errors
    /// I/O errors.
    fn write_codec(&self, w: &mut Writer<'_>) -> Result<()>;
    /// Reads a codec of dimension `dim`.
    ///
    /// # Errors
    /// A truncated or inconsistent stream.
    fn read_codec(r: &mut Reader<'_>, dim: usize) -> Result<Self>;
}

impl StorableCodec for ScalarQuantizer {
    const KIND: &'static str = "sq";
    fn suffix(&self) -> String {
        format!("_{}", self.qtype())
    }
    fn write_codec(&self, w: &mut Writer<'_>) -> Result<()> {
        w.str(&self.qtype().to_string())?;
        let (tag, v) = match self.range_stat() {
            RangeStat::MinMax { margin } => (0u8, margin),
            RangeStat::MeanStd { k } => (1, k),
            RangeStat::Quantiles { fraction } => (2, fraction),
            _ => (0, 0.0),
        };
        w.u8(tag)?;
        w.f32s(&[v])?;
        w.u8(u8::from(self.is_trained()))?;
        if self.is_trained() {
            w.f32s(self.vmin())?;
            w.f32s(self.vdiff())?;
        }
        Ok(())
    }
    fn read_codec(r: &mut Reader<'_>, dim: usize) -> Result<Self> {
        let name = r.str()?;
        let qtype = name
            .strip_prefix("SQ")
            .and_then(SqType::parse)
            .ok_or_else(|| r.bad(format!("unknown SQ type {name}")))?;
        let tag = r.u8()?;
        let v = r.f32s(1)?[0];
        let rs = match tag {
            0 => RangeStat::MinMax { margin: v },
            1 => RangeStat::MeanStd { k: v },
            2 => RangeStat::Quantiles { fraction: v },
            t => return Err(r.bad(format!("unknown range statistic {t}"))),
        };
        let mut sq = ScalarQuantizer::new(dim, qtype)?
            .with_range_stat(rs)
            .map_err(|e| r.bad(e.to_string()))?;
        if r.u8()? == 1 {
            let vmin = r.f32s(dim)?;
            let vdiff = r.f32s(dim)?;
            sq.set_ranges(&vmin, &vdiff)
                .map_err(|e| r.bad(e.to_string()))?;
        }
        Ok(sq)
    }
}

impl StorableCodec for ProductQuantizer {
    const KIND: &'static str = "pq";
    fn suffix(&self) -> String {
        if self.nbits() == 8 {
            format!("_PQ{}", self.m())
        } else {
            format!("_PQ{}x{}", self.m(), self.nbits())
        }
    }
    fn write_codec(&self, w: &mut Writer<'_>) -> Result<()> {
        w.u64(self.m() as u64)?;
        w.u64(self.nbits() as u64)?;
        w.u8(u8::from(self.is_trained()))?;
        if self.is_trained() {
            w.f32s(self.centroids())?;
        }
        Ok(())
    }
    fn read_codec(r: &mut Reader<'_>, dim: usize) -> Result<Self> {
        let m = r.usize()?;
        let nbits = r.usize()?;
        let mut pq = ProductQuantizer::new(dim, m, nbits).map_err(|e| r.bad(e.to_string()))?;
        if r.u8()? == 1 {
            let c = r.f32s(dim << nbits)?;
            pq.set_centroids(&c).map_err(|e| r.bad(e.to_string()))?;
        }
        Ok(pq)
    }
}

/// Codes of an ADC codec (`HNSW32_SQ8`, `HNSW32_PQ16`): the graph is built and searched
/// with the codec's asymmetric distances, as Faiss's `IndexHNSWSQ` / `IndexHNSWPQ`.
#[derive(Clone, Debug)]
pub struct CodecStorage<C> {
    codec: C,
    metric: Metric,
    codes: Vec<u8>,
}

impl<C: StorableCodec> CodecStorage<C> {
    /// Empty storage over `codec` (trained or not).
    pub fn new(codec: C, metric: Metric) -> CodecStorage<C> {
        CodecStorage {
            codec,
            metric,
            codes: Vec::new(),
        }
    }

    /// The codec.
    pub fn codec(&self) -> &C {
        &self.codec
    }

    /// The codes, slot by slot.
    pub fn codes(&self) -> &[u8] {
        &self.codes
    }
}

/// Query computer over [`CodecStorage`].
#[derive(Debug)]
pub struct CodecQuery<'a, D> {
    inner: D,
    codes: &'a [u8],
    cs: usize,
    ip: bool,
}

impl<D: CodeDistance> NodeQuery for CodecQuery<'_, D> {
    #[inline]
    fn node_distance(&mut self, id: u32) -> f32 {
        let d = self
            .inner
            .distance(&self.codes[id as usize * self.cs..][..self.cs]);
        if self.ip { -d } else { d }
    }
    #[inline]
    fn node_prefetch(&self, id: u32) {
        if let Some(c) = self.codes.get(id as usize * self.cs..) {
            prefetch(c, 1);
        }
    }
}

impl<C: StorableCodec> HnswStorage for CodecStorage<C> {
    type Query<'a>
        = CodecQuery<'a, C::Computer<'a>>
    where
        C: 'a;
    const KIND: &'static str = C::KIND;

    fn dim(&self) -> usize {
        self.codec.dim()
    }
    fn metric(&self) -> Metric {
        self.metric
    }
    fn len(&self) -> usize {
        self.codes.len() / self.codec.code_size().max(1)
    }
    fn code_size(&self) -> usize {
        self.codec.code_size()
    }
    fn is_trained(&self) -> bool {
        self.codec.is_trained()
    }
    fn train(&mut self, x: VectorsRef<'_>) -> Result<()> {
        self.codec.train(x)
    }
    fn push(&mut self, x: VectorsRef<'_>) -> Result<()> {
        let codes = self.codec.encode(x)?;
        reserve_with_huge_pages(&mut self.codes, codes.len());
        self.codes.extend_from_slice(&codes);
        Ok(())
    }
    fn overwrite(&mut self, slot: usize, x: &[f32]) -> Result<()> {
        let cs = self.codec.code_size();
        let code = self.codec.encode(VectorsRef::new(x, self.codec.dim())?)?;
        self.codes[slot * cs..][..cs].copy_from_slice(&code);
        Ok(())
    }
    fn clear(&mut self) {
        self.codes.clear();
    }
    fn decode(&self, id: u32, out: &mut [f32]) {
        let cs = self.codec.code_size();
        // The codes were produced by this codec: decoding a whole code cannot fail.
        if self
            .codec
            .decode_into(&self.codes[id as usize * cs..][..cs], out)
            .is_err()
        {
            out.fill(0.0);
        }
    }
    fn raw(&self, _id: u32) -> Option<&[f32]> {
        None
    }
    fn query<'a>(&'a self, query: &'a [f32]) -> Result<Self::Query<'a>> {
        Ok(CodecQuery {
            inner: self.codec.query_computer(query, self.metric)?,
            codes: &self.codes,
            cs: self.codec.code_size(),
            ip: self.metric == Metric::InnerProduct,
        })
    }
    fn suffix(&self) -> String {
        self.codec.suffix()
    }
    fn write(&self, w: &mut Writer<'_>) -> Result<()> {
        self.codec.write_codec(w)?;
        w.bytes(&self.codes)
    }
    fn read(r: &mut Reader<'_>, dim: usize, metric: Metric, n: usize) -> Result<Self> {
        let codec = C::read_codec(r, dim)?;
        let len = n
            .checked_mul(codec.code_size())
            .ok_or_else(|| r.bad("size overflow"))?;
        if n > 0 && !codec.is_trained() {
            return Err(r.bad("codes stored with an untrained codec"));
        }
        // Read first (in bounded chunks), so that a corrupt `n` fails as a truncated
        // stream instead of reserving what the header claims; then copied into
        // huge-page-advised memory, as `push` makes it.
        let read = r.bytes(len)?;
        let mut codes = Vec::new();
        reserve_with_huge_pages(&mut codes, len);
        codes.extend_from_slice(&read);
        Ok(CodecStorage {
            codec,
            metric,
            codes,
        })
    }
}
