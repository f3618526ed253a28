//! Standalone codecs: vectors to fixed-size codes and back (Faiss's `sa_encode` /
//! `sa_decode`), and per-query distance computers for scanning codes.

use std::fmt::Debug;

use crate::distance::Kernels;
use crate::error::{Error, Result};
use crate::metric::Metric;
use crate::vectors::VectorsRef;

/// A vector codec: every vector becomes `code_size()` bytes.
///
/// Object safe, so pipelines can hold `Box<dyn Codec>`. Scan loops use the generic
/// [`AdcCodec`] extension instead, so that distance computation is monomorphised.
///
/// ```
/// use vq_core::{Codec, FlatCodec, VectorsRef};
/// let codec = FlatCodec::new(2)?;
/// let codes = codec.encode(VectorsRef::new(&[1.5, -2.0], 2)?)?;
/// assert_eq!(codes.len(), codec.code_size());
/// assert_eq!(codec.decode(&codes)?, vec![1.5, -2.0]);
/// # Ok::<(), vq_core::Error>(())
/// ```
pub trait Codec: Send + Sync + Debug {
    /// Dimension of the vectors encoded.
    fn dim(&self) -> usize;

    /// Bytes per encoded vector.
    fn code_size(&self) -> usize;

    /// `true` when the codec can encode (trainable codecs need [`Codec::train`] first).
    fn is_trained(&self) -> bool {
        true
    }

    /// Learns the codec's parameters from representative vectors.
    ///
    /// # Errors
    /// Dimension mismatch, non-finite values, too few vectors.
    fn train(&mut self, x: VectorsRef<'_>) -> Result<()> {
        x.check_dim(self.dim())
    }

    /// Writes the learned state (see [`crate::Index::save_state`]).
    ///
    /// # Errors
    /// [`Error::NotSupported`] by default; I/O errors.
    fn save_state(&self, w: &mut crate::persist::StateWriter<'_>) -> Result<()> {
        let _ = w;
        Err(Error::not_supported("save", format!("{self:?}")))
    }

    /// Restores what `save_state` wrote into a value of the same shape.
    ///
    /// # Errors
    /// [`Error::NotSupported`] by default; [`Error::Format`] for bad sections.
    fn load_state(&mut self, r: &mut crate::persist::StateReader) -> Result<()> {
        let _ = r;
        Err(Error::not_supported("load", format!("{self:?}")))
    }

    /// Encodes `x` into `codes` (`x.len() * code_size()` bytes).
    ///
    /// # Errors
    /// Dimension mismatch, wrong output length, not trained.
    fn encode_into(&self, x: VectorsRef<'_>, codes: &mut [u8]) -> Result<()>;

    /// Decodes `codes` (a whole number of codes) into `out` (`dim()` floats per code).
    ///
    /// # Errors
    /// Lengths that do not match, not trained.
    fn decode_into(&self, codes: &[u8], out: &mut [f32]) -> Result<()>;

    /// Allocating form of [`Codec::encode_into`].
    ///
    /// # Errors
    /// As [`Codec::encode_into`].
    fn encode(&self, x: VectorsRef<'_>) -> Result<Vec<u8>> {
        let mut codes = vec![0u8; x.len() * self.code_size()];
        self.encode_into(x, &mut codes)?;
        Ok(codes)
    }

    /// Allocating form of [`Codec::decode_into`].
    ///
    /// # Errors
    /// As [`Codec::decode_into`].
    fn decode(&self, codes: &[u8]) -> Result<Vec<f32>> {
        let cs = self.code_size().max(1);
        let mut out = vec![0.0; codes.len() / cs * self.dim()];
        self.decode_into(codes, &mut out)?;
        Ok(out)
    }
}

/// Distance from one query to encoded vectors (Faiss's `DistanceComputer` /
/// asymmetric distance computation). Made per query, used by one thread.
pub trait CodeDistance {
    /// Distance (squared L2 or inner product, per the metric it was made for) between
    /// the query and the vector encoded in `code` (`code_size()` bytes).
    fn distance(&mut self, code: &[u8]) -> f32;

    /// Distances to consecutive codes; `out.len()` codes are read from `codes`.
    fn distances(&mut self, codes: &[u8], out: &mut [f32]) {
        if out.is_empty() {
            return;
        }
        let cs = codes.len() / out.len();
        for (o, c) in out.iter_mut().zip(codes.chunks_exact(cs.max(1))) {
            *o = self.distance(c);
        }
    }
    /// Aims this computer at another query of the same dimension (same codec, same
    /// metric), reusing its buffers: what IVF scans do once per list with the residual
    /// query. Returns `false`, leaving the computer unchanged, when it cannot be re-aimed
    /// (it borrows its query, or `query` has the wrong length); the caller then builds a
    /// new one with [`AdcCodec::query_computer`].
    fn retarget(&mut self, query: &[f32]) -> bool {
        let _ = query;
        false
    }
}

/// A codec that can compare a raw query with codes without decoding them to a buffer
/// first. Generic (not object safe), so scan loops are monomorphised per codec.
pub trait AdcCodec: Codec {
    /// The per-query computer.
    type Computer<'a>: CodeDistance
    where
        Self: 'a;

    /// Prepares distance computation for `query` (tables, norms...).
    ///
    /// # Errors
    /// Dimension mismatch, not trained.
    fn query_computer<'a>(&'a self, query: &'a [f32], metric: Metric)
    -> Result<Self::Computer<'a>>;

    /// Computers for a batch of queries. The default makes them one by one; codecs
    /// override it when batching pays (product quantizers build their tables through
    /// one GEMM per sub-space).
    ///
    /// # Errors
    /// As [`AdcCodec::query_computer`].
    fn query_computers<'a>(
        &'a self,
        queries: VectorsRef<'a>,
        metric: Metric,
    ) -> Result<Vec<Self::Computer<'a>>> {
        queries
            .rows()
            .map(|q| self.query_computer(q, metric))
            .collect()
    }
}

/// The identity codec: a vector is stored as its `4 × dim` little-endian float bytes.
/// The first [`Codec`] implementation; `IndexFlat` stores floats directly instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct FlatCodec {
    dim: usize,
}

impl FlatCodec {
    /// A codec for vectors of dimension `dim`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `dim == 0`.
    pub fn new(dim: usize) -> Result<FlatCodec> {
        if dim == 0 {
            return Err(Error::invalid_param(
                "dim",
                "the dimension must be at least 1",
            ));
        }
        Ok(FlatCodec { dim })
    }
}

fn check_len(what: &'static str, expected: usize, got: usize) -> Result<()> {
    if expected != got {
        return Err(Error::LengthMismatch {
            what,
            expected,
            got,
        });
    }
    Ok(())
}

impl Codec for FlatCodec {
    fn save_state(&self, w: &mut crate::persist::StateWriter<'_>) -> Result<()> {
        w.put_usize("dim", self.dim)
    }

    fn load_state(&mut self, r: &mut crate::persist::StateReader) -> Result<()> {
        let dim = r.get_usize("dim", usize::MAX)?;
        if dim != self.dim {
            return Err(r.error("dim", format!("{dim}, the codec has {}", self.dim)));
        }
        Ok(())
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn code_size(&self) -> usize {
        4 * self.dim
    }

    fn encode_into(&self, x: VectorsRef<'_>, codes: &mut [u8]) -> Result<()> {
        x.check_dim(self.dim)?;
        check_len("codes", x.len() * self.code_size(), codes.len())?;
        for (c, v) in codes.chunks_exact_mut(4).zip(x.as_slice()) {
            c.copy_from_slice(&v.to_le_bytes());
        }
        Ok(())
    }

    fn decode_into(&self, codes: &[u8], out: &mut [f32]) -> Result<()> {
        if !codes.len().is_multiple_of(self.code_size()) {
            return Err(Error::invalid_param(
                "codes",
                format!(
                    "{} bytes are not whole codes of {} bytes",
                    codes.len(),
                    self.code_size()
                ),
            ));
        }
        check_len("decoded output", codes.len() / 4, out.len())?;
        for (o, c) in out.iter_mut().zip(codes.chunks_exact(4)) {
            *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        Ok(())
    }
}

/// Per-query computer of [`FlatCodec`]: decodes each code into a scratch row and runs
/// the SIMD kernel.
#[derive(Debug)]
pub struct FlatCodeDistance<'a> {
    query: &'a [f32],
    scratch: Vec<f32>,
    metric: Metric,
    kernels: &'static Kernels,
}

impl CodeDistance for FlatCodeDistance<'_> {
    #[inline]
    fn distance(&mut self, code: &[u8]) -> f32 {
        for (o, c) in self.scratch.iter_mut().zip(code.chunks_exact(4)) {
            *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        self.kernels
            .distance(self.metric, self.query, &self.scratch)
    }
}

impl AdcCodec for FlatCodec {
    type Computer<'a> = FlatCodeDistance<'a>;

    fn query_computer<'a>(
        &'a self,
        query: &'a [f32],
        metric: Metric,
    ) -> Result<FlatCodeDistance<'a>> {
        if query.len() != self.dim {
            return Err(Error::DimensionMismatch {
                expected: self.dim,
                got: query.len(),
            });
        }
        Ok(FlatCodeDistance {
            query,
            scratch: vec![0.0; self.dim],
            metric,
            kernels: Kernels::get(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_codec_round_trip_and_distance() {
        let c = FlatCodec::new(3).unwrap();
        let x = [1.0f32, -2.0, 0.25, 4.0, 5.0, 6.0];
        let codes = c.encode(VectorsRef::new(&x, 3).unwrap()).unwrap();
        assert_eq!(codes.len(), 24);
        assert_eq!(c.decode(&codes).unwrap(), x);
        assert!(c.decode(&codes[..5]).is_err());
        let mut dc = c.query_computer(&[1.0, -2.0, 0.25], Metric::L2).unwrap();
        assert_eq!(dc.distance(&codes[..12]), 0.0);
        let mut out = [0.0; 2];
        dc.distances(&codes, &mut out);
        assert_eq!(out[1], 9.0 + 49.0 + 5.75 * 5.75);
        assert!(c.query_computer(&[1.0], Metric::L2).is_err());
        assert!(FlatCodec::new(0).is_err());
    }
}

/// Object-safe form of [`AdcCodec`]: what a codec registered at run time (e.g. through
/// the factory's registry) offers. Implemented for every `AdcCodec + Clone`.
pub trait DynAdcCodec: Codec {
    /// A boxed per-query distance computer.
    ///
    /// # Errors
    /// As [`AdcCodec::query_computer`].
    fn dyn_query_computer<'a>(
        &'a self,
        query: &'a [f32],
        metric: Metric,
    ) -> Result<Box<dyn CodeDistance + 'a>>;

    /// A boxed copy.
    fn clone_boxed(&self) -> Box<dyn DynAdcCodec>;
}

impl<C: AdcCodec + Clone + 'static> DynAdcCodec for C {
    fn dyn_query_computer<'a>(
        &'a self,
        query: &'a [f32],
        metric: Metric,
    ) -> Result<Box<dyn CodeDistance + 'a>> {
        Ok(Box::new(self.query_computer(query, metric)?))
    }

    fn clone_boxed(&self) -> Box<dyn DynAdcCodec> {
        Box::new(self.clone())
    }
}

impl CodeDistance for Box<dyn CodeDistance + '_> {
    fn distance(&mut self, code: &[u8]) -> f32 {
        (**self).distance(code)
    }
    fn distances(&mut self, codes: &[u8], out: &mut [f32]) {
        (**self).distances(codes, out)
    }
    fn retarget(&mut self, query: &[f32]) -> bool {
        (**self).retarget(query)
    }
}

/// A codec chosen at run time: wraps any [`DynAdcCodec`] so that the generic containers
/// (`IndexFlatCodes<C>`, IVF lists, ...) can hold it. One virtual call per distance.
#[derive(Debug)]
pub struct BoxedCodec(pub Box<dyn DynAdcCodec>);

impl Clone for BoxedCodec {
    fn clone(&self) -> Self {
        BoxedCodec(self.0.clone_boxed())
    }
}

impl Codec for BoxedCodec {
    fn dim(&self) -> usize {
        self.0.dim()
    }
    fn code_size(&self) -> usize {
        self.0.code_size()
    }
    fn is_trained(&self) -> bool {
        self.0.is_trained()
    }
    fn train(&mut self, x: VectorsRef<'_>) -> Result<()> {
        self.0.train(x)
    }
    fn save_state(&self, w: &mut crate::persist::StateWriter<'_>) -> Result<()> {
        self.0.save_state(w)
    }
    fn load_state(&mut self, r: &mut crate::persist::StateReader) -> Result<()> {
        self.0.load_state(r)
    }
    fn encode_into(&self, x: VectorsRef<'_>, codes: &mut [u8]) -> Result<()> {
        self.0.encode_into(x, codes)
    }
    fn decode_into(&self, codes: &[u8], out: &mut [f32]) -> Result<()> {
        self.0.decode_into(codes, out)
    }
}

impl AdcCodec for BoxedCodec {
    type Computer<'a> = Box<dyn CodeDistance + 'a>;

    fn query_computer<'a>(
        &'a self,
        query: &'a [f32],
        metric: Metric,
    ) -> Result<Self::Computer<'a>> {
        self.0.dyn_query_computer(query, metric)
    }
}
