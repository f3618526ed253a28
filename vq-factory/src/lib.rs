#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use vq_core::{
    Index, IndexFlat, IndexIDMap, IndexIDMap2, L2Normalize, Metric, PreTransform, VectorTransform,
};
use vq_hnsw::{IndexHnswFlat, IndexHnswPq, IndexHnswSq};
use vq_ivf::{AnyQuantizer, IndexIvf, IvfCodec, IvfFlat, IvfPq};
use vq_pq::{
    IndexPQ, IndexScalarQuantizer, Opq, Pca, ProductQuantizer, RandomRotation, ScalarQuantizer,
    SqType,
};

/// Why a factory string was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// The string (or a token between commas) is empty.
    Empty,
    /// A token that is not part of the grammar.
    UnknownToken(String),
    /// A Faiss token the workspace does not implement yet.
    NotAvailableYet(String),
    /// A token in a place where it cannot stand (e.g. `IDMap` after a transform).
    Misplaced(String),
    /// The string ends without an index (e.g. `"L2norm"`).
    MissingIndex,
    /// Tokens after the index (e.g. `"Flat,Flat"`).
    Trailing(String),
}

/// A factory-string error with the input and the span of the offending token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    /// What is wrong.
    pub kind: ParseErrorKind,
    /// The whole input.
    pub input: String,
    /// Byte range of the offending token in `input`.
    pub span: Range<usize>,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.span.start;
        match &self.kind {
            ParseErrorKind::Empty => write!(f, "empty token at position {at}")?,
            ParseErrorKind::UnknownToken(t) => write!(f, "unknown token `{t}` at position {at}")?,
            ParseErrorKind::NotAvailableYet(t) => write!(
                f,
                "token `{t}` at position {at} is a Faiss index type vq does not provide yet"
            )?,
            ParseErrorKind::Misplaced(t) => write!(f, "token `{t}` cannot stand at position {at}")?,
            ParseErrorKind::MissingIndex => write!(
                f,
                "the string ends at position {at} without an index (e.g. `Flat`)"
            )?,
            ParseErrorKind::Trailing(t) => {
                write!(f, "unexpected `{t}` at position {at} after the index")?
            }
        }
        write!(f, " in `{}`", self.input)?;
        let width = (self.span.end - self.span.start).max(1);
        write!(
            f,
            "\n  {}\n  {}{}",
            self.input,
            " ".repeat(self.span.start),
            "^".repeat(width)
        )
    }
}

/// Id mapping around the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdMapKind {
    /// `IDMap`: `add_with_ids`, ids translated on search.
    IdMap,
    /// `IDMap2`: also reconstructs by id.
    IdMap2,
}

/// A vector transform in front of the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransformSpec {
    /// `L2norm`.
    L2Norm,
    /// `PCA{d}`, `PCAW{d}` (whitening), `PCAR{d}` (random rotation), `PCAWR{d}`.
    Pca {
        /// Output dimension.
        d_out: usize,
        /// Whitening (`W`).
        whiten: bool,
        /// Random rotation of the output (`R`).
        rotate: bool,
    },
    /// `OPQ{M}` or `OPQ{M}_{D}`.
    Opq {
        /// Sub-quantizers the rotation is optimised for.
        m: usize,
        /// Output dimension (the input's when absent).
        d_out: Option<usize>,
    },
    /// `RR` or `RR{D}`: random rotation.
    RandomRotation {
        /// Output dimension (the input's when absent).
        d_out: Option<usize>,
    },
}

/// The index at the end of the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IndexSpec {
    /// `Flat`.
    Flat,
    /// `PQ{M}` or `PQ{M}x{nbits}` (an `np` suffix, Faiss's "no polysemous training", is
    /// accepted: vq never runs polysemous training).
    Pq {
        /// Sub-quantizers.
        m: usize,
        /// Bits per sub-quantizer code.
        nbits: usize,
    },
    /// `SQ8`, `SQ6`, `SQ4`, `SQfp16`, `SQbf16`, `SQ8_direct`, `SQ8_direct_signed`,
    /// and the vq spellings `SQ8_uniform`, `SQ4_uniform`.
    Sq(SqType),
}

/// The coarse quantizer of an inverted-file index, before its encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CoarseSpec {
    /// `IVF{n}` (also `IVF{n}k`, `IVF{n}M`): k-means centroids in a flat index.
    Ivf {
        /// Number of lists.
        nlist: usize,
    },
    /// `IMI2x{b}`: inverted multi-index, `2^(2b)` cells (L2 only).
    Imi {
        /// Bits per half.
        bits: usize,
    },
    /// `IVF{n}_HNSW{M}` (`IVF{n}_HNSW` = M 32): k-means centroids inserted into an HNSW
    /// graph, which assigns vectors and queries approximately (`quantizer_efSearch`).
    IvfHnsw {
        /// Number of lists.
        nlist: usize,
        /// Links per node of the quantizer's graph.
        m: usize,
    },
}

/// A parsed factory string. `Display` prints the canonical string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FactorySpec {
    /// `IDMap`/`IDMap2` prefix, if any.
    pub id_map: Option<IdMapKind>,
    /// Transforms, applied first to last.
    pub transforms: Vec<TransformSpec>,
    /// Coarse quantizer: the index is an inverted file over `index`'s encoding.
    pub coarse: Option<CoarseSpec>,
    /// `HNSW{M}`: the index is an HNSW graph with `M` links per node over `index`'s
    /// encoding (`HNSW32` = `HNSW32,Flat` = `HNSW32_Flat`; `HNSW32_SQ8`; `HNSW32_PQ16`).
    pub graph: Option<usize>,
    /// The index (or, after a coarse quantizer, the encoding of the lists).
    pub index: IndexSpec,
}

/// Faiss token prefixes recognised but not implemented yet.
const LATER: [&str; 8] = [
    "IVF", "IMI", "NSG", "RFlat", "Refine", "LSH", "ITQ", "Residual",
];

/// Parses what follows `IVF`: `{n}[k|M]`, optionally `_HNSW[{M}]`.
fn ivf_coarse(rest: &str) -> Option<CoarseSpec> {
    match rest.split_once("_HNSW") {
        Some((n, m)) => Some(CoarseSpec::IvfHnsw {
            nlist: ivf_lists(n)?,
            m: if m.is_empty() { 32 } else { num(m)? },
        }),
        None => Some(CoarseSpec::Ivf {
            nlist: ivf_lists(rest)?,
        }),
    }
}

/// Parses an encoding token (`Flat`, `PQ…`, `SQ…`), `None` for anything else.
fn encoding(t: &str) -> Option<IndexSpec> {
    match classify(t)? {
        Tok::Index(ix) => Some(ix),
        _ => None,
    }
}

/// Parses what follows `HNSW`: `[{M}][_{encoding}]`.
fn hnsw(rest: &str) -> Option<Tok> {
    let (m, enc) = match rest.split_once('_') {
        Some((m, e)) => (m, Some(encoding(e)?)),
        None => (rest, None),
    };
    let m = if m.is_empty() { 32 } else { num(m)? };
    Some(Tok::Graph(m, enc))
}

/// Parses `{n}[k|M]`.
fn ivf_lists(rest: &str) -> Option<usize> {
    let (digits, mult) = if let Some(r) = rest.strip_suffix('k') {
        (r, 1 << 10)
    } else if let Some(r) = rest.strip_suffix('M') {
        (r, 1 << 20)
    } else {
        (rest, 1)
    };
    num(digits)?.checked_mul(mult)
}

/// One classified token.
enum Tok {
    IdMap(IdMapKind),
    Transform(TransformSpec),
    Coarse(CoarseSpec),
    Index(IndexSpec),
    /// `HNSW{M}` with its encoding when spelled with `_`.
    Graph(usize, Option<IndexSpec>),
    /// A known family in a form vq does not provide yet (e.g. `PQ16x4fs`).
    Later,
}

/// Parses a positive decimal number (no sign, no leading `+`).
fn num(s: &str) -> Option<usize> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|&v| v > 0)
}

fn classify(t: &str) -> Option<Tok> {
    Some(match t {
        "IDMap" => Tok::IdMap(IdMapKind::IdMap),
        "IDMap2" => Tok::IdMap(IdMapKind::IdMap2),
        "L2norm" => Tok::Transform(TransformSpec::L2Norm),
        "Flat" => Tok::Index(IndexSpec::Flat),
        "RR" => Tok::Transform(TransformSpec::RandomRotation { d_out: None }),
        _ => {
            if let Some(rest) = t.strip_prefix("IVF") {
                Tok::Coarse(ivf_coarse(rest)?)
            } else if let Some(rest) = t.strip_prefix("HNSW") {
                return hnsw(rest);
            } else if let Some(rest) = t.strip_prefix("IMI2x") {
                Tok::Coarse(CoarseSpec::Imi { bits: num(rest)? })
            } else if let Some(rest) = t.strip_prefix("OPQ") {
                let (m, d) = match rest.split_once('_') {
                    Some((m, d)) => (num(m)?, Some(num(d)?)),
                    None => (num(rest)?, None),
                };
                Tok::Transform(TransformSpec::Opq { m, d_out: d })
            } else if let Some(rest) = t.strip_prefix("PCA") {
                let (whiten, rest) = match rest.strip_prefix('W') {
                    Some(r) => (true, r),
                    None => (false, rest),
                };
                let (rotate, rest) = match rest.strip_prefix('R') {
                    Some(r) => (true, r),
                    None => (false, rest),
                };
                Tok::Transform(TransformSpec::Pca {
                    d_out: num(rest)?,
                    whiten,
                    rotate,
                })
            } else if let Some(rest) = t.strip_prefix("RR") {
                Tok::Transform(TransformSpec::RandomRotation {
                    d_out: Some(num(rest)?),
                })
            } else if let Some(rest) = t.strip_prefix("PQ") {
                if rest.ends_with("fs") || rest.ends_with("fsr") {
                    return Some(Tok::Later);
                }
                let rest = rest.strip_suffix("np").unwrap_or(rest);
                let (m, nbits) = match rest.split_once('x') {
                    Some((m, b)) => (num(m)?, num(b)?),
                    None => (num(rest)?, 8),
                };
                Tok::Index(IndexSpec::Pq { m, nbits })
            } else if let Some(rest) = t.strip_prefix("SQ") {
                Tok::Index(IndexSpec::Sq(SqType::parse(rest)?))
            } else {
                return None;
            }
        }
    })
}

fn tokens(s: &str) -> Vec<(&str, Range<usize>)> {
    let mut out = Vec::new();
    let mut start = 0;
    for part in s.split(',') {
        let lead = part.len() - part.trim_start().len();
        let t = part.trim();
        let b = start + lead;
        out.push((t, b..b + t.len()));
        start += part.len() + 1;
    }
    out
}

impl FactorySpec {
    /// Parses a factory string.
    ///
    /// # Errors
    /// A [`ParseError`] naming the first offending token and its position.
    pub fn parse(input: &str) -> Result<FactorySpec, ParseError> {
        let err = |kind, span: Range<usize>| ParseError {
            kind,
            input: input.to_string(),
            span,
        };
        if input.trim().is_empty() {
            return Err(err(ParseErrorKind::Empty, 0..input.len()));
        }
        let toks = tokens(input);
        let mut id_map = None;
        let mut transforms = Vec::new();
        let mut coarse = None;
        let mut graph = None;
        let mut index = None;
        for (i, (t, span)) in toks.iter().enumerate() {
            let span = span.clone();
            if t.is_empty() {
                return Err(err(ParseErrorKind::Empty, span));
            }
            let tok = match classify(t) {
                Some(Tok::Later) => {
                    return Err(err(ParseErrorKind::NotAvailableYet(t.to_string()), span));
                }
                Some(tok) => tok,
                None => {
                    let kind = if LATER.iter().any(|p| t.starts_with(p)) {
                        ParseErrorKind::NotAvailableYet(t.to_string())
                    } else {
                        ParseErrorKind::UnknownToken(t.to_string())
                    };
                    return Err(err(kind, span));
                }
            };
            if index.is_some() {
                return Err(err(ParseErrorKind::Trailing(t.to_string()), span));
            }
            match tok {
                Tok::IdMap(kind) => {
                    if i != 0 {
                        return Err(err(ParseErrorKind::Misplaced(t.to_string()), span));
                    }
                    id_map = Some(kind);
                }
                Tok::Transform(tr) => {
                    if coarse.is_some() || graph.is_some() {
                        return Err(err(ParseErrorKind::Misplaced(t.to_string()), span));
                    }
                    transforms.push(tr)
                }
                Tok::Graph(m, enc) => {
                    if coarse.is_some() || graph.is_some() {
                        return Err(err(ParseErrorKind::Misplaced(t.to_string()), span));
                    }
                    graph = Some(m);
                    index = enc;
                }
                Tok::Coarse(c) => {
                    if coarse.is_some() || graph.is_some() {
                        return Err(err(ParseErrorKind::Misplaced(t.to_string()), span));
                    }
                    coarse = Some(c)
                }
                Tok::Index(ix) => index = Some(ix),
                Tok::Later => unreachable!("handled above"),
            }
        }
        let index = match (index, graph) {
            (Some(ix), _) => ix,
            (None, Some(_)) => IndexSpec::Flat,
            (None, None) => {
                return Err(err(ParseErrorKind::MissingIndex, input.len()..input.len()));
            }
        };
        Ok(FactorySpec {
            id_map,
            transforms,
            coarse,
            graph,
            index,
        })
    }

    /// Builds an empty (untrained where training is needed) index of dimension `d`.
    ///
    /// # Errors
    /// Invalid dimensions: `d == 0`, a PCA or OPQ output larger than allowed, `M` not
    /// dividing the dimension it applies to, `nbits` outside 1..=16.
    pub fn build(&self, d: usize, metric: Metric) -> vq_core::Result<Box<dyn Index>> {
        let mut dim = d;
        let mut chain: Vec<Box<dyn VectorTransform>> = Vec::new();
        for t in &self.transforms {
            let tr: Box<dyn VectorTransform> = match *t {
                TransformSpec::L2Norm => Box::new(L2Normalize::new(dim)?),
                TransformSpec::Pca {
                    d_out,
                    whiten,
                    rotate,
                } => Box::new(
                    Pca::new(dim, d_out)?
                        .with_eigen_power(if whiten { -0.5 } else { 0.0 })
                        .with_random_rotation(rotate),
                ),
                TransformSpec::Opq { m, d_out } => {
                    Box::new(Opq::with_output(dim, m, d_out.unwrap_or(dim))?)
                }
                TransformSpec::RandomRotation { d_out } => {
                    Box::new(RandomRotation::new(dim, d_out.unwrap_or(dim))?)
                }
            };
            dim = tr.d_out();
            chain.push(tr);
        }
        let hnsw_quantizer = |m: usize| -> vq_core::Result<AnyQuantizer<IndexHnswFlat>> {
            Ok(AnyQuantizer(IndexHnswFlat::new(dim, m, metric)?))
        };
        let base: Box<dyn Index> = match (self.coarse, self.index) {
            _ if self.graph.is_some() => {
                let m = self.graph.unwrap_or(32);
                match self.index {
                    IndexSpec::Flat => Box::new(IndexHnswFlat::new(dim, m, metric)?),
                    IndexSpec::Sq(t) => Box::new(IndexHnswSq::new_sq(dim, m, t, metric)?),
                    IndexSpec::Pq { m: pm, nbits } => {
                        Box::new(IndexHnswPq::new_pq(dim, m, pm, nbits, metric)?)
                    }
                }
            }
            (Some(CoarseSpec::IvfHnsw { nlist, m }), IndexSpec::Flat) => Box::new(IndexIvf::new(
                hnsw_quantizer(m)?,
                nlist,
                IvfFlat::new(dim)?,
                metric,
            )?),
            (Some(CoarseSpec::IvfHnsw { nlist, m }), IndexSpec::Pq { m: pm, nbits }) => {
                Box::new(IndexIvf::new(
                    hnsw_quantizer(m)?,
                    nlist,
                    IvfPq::new(ProductQuantizer::new(dim, pm, nbits)?, true),
                    metric,
                )?)
            }
            (Some(CoarseSpec::IvfHnsw { nlist, m }), IndexSpec::Sq(t)) => Box::new(IndexIvf::new(
                hnsw_quantizer(m)?,
                nlist,
                IvfCodec::new(ScalarQuantizer::new(dim, t)?, true),
                metric,
            )?),
            (None, IndexSpec::Flat) => Box::new(IndexFlat::new(dim, metric)?),
            (None, IndexSpec::Pq { m, nbits }) => {
                Box::new(IndexPQ::new(ProductQuantizer::new(dim, m, nbits)?, metric))
            }
            (None, IndexSpec::Sq(t)) => Box::new(IndexScalarQuantizer::new(
                ScalarQuantizer::new(dim, t)?,
                metric,
            )),
            (Some(CoarseSpec::Ivf { nlist }), IndexSpec::Flat) => {
                Box::new(IndexIvf::new_flat(dim, nlist, metric)?)
            }
            (Some(CoarseSpec::Ivf { nlist }), IndexSpec::Pq { m, nbits }) => {
                Box::new(IndexIvf::new_pq(dim, nlist, m, nbits, metric)?)
            }
            (Some(CoarseSpec::Ivf { nlist }), IndexSpec::Sq(t)) => {
                Box::new(IndexIvf::new_sq(dim, nlist, t, metric)?)
            }
            (Some(CoarseSpec::Imi { bits }), ix) => {
                if metric != Metric::L2 {
                    return Err(vq_core::Error::invalid_param(
                        "metric",
                        format!("IMI2x{bits} supports L2 only (as Faiss)"),
                    ));
                }
                match ix {
                    IndexSpec::Flat => Box::new(IndexIvf::new_imi(dim, bits, IvfFlat::new(dim)?)?),
                    IndexSpec::Pq { m, nbits } => Box::new(IndexIvf::new_imi(
                        dim,
                        bits,
                        IvfPq::new(ProductQuantizer::new(dim, m, nbits)?, true),
                    )?),
                    IndexSpec::Sq(t) => Box::new(IndexIvf::new_imi(
                        dim,
                        bits,
                        IvfCodec::new(ScalarQuantizer::new(dim, t)?, true),
                    )?),
                }
            }
        };
        let inner: Box<dyn Index> = if chain.is_empty() {
            base
        } else {
            Box::new(PreTransform::new(chain, base)?)
        };
        Ok(match self.id_map {
            None => inner,
            Some(IdMapKind::IdMap) => Box::new(IndexIDMap::new(inner)?),
            Some(IdMapKind::IdMap2) => Box::new(IndexIDMap2::new(inner)?),
        })
    }
}

impl FromStr for FactorySpec {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FactorySpec::parse(s)
    }
}

impl fmt::Display for TransformSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            TransformSpec::L2Norm => f.write_str("L2norm"),
            TransformSpec::Pca {
                d_out,
                whiten,
                rotate,
            } => write!(
                f,
                "PCA{}{}{d_out}",
                if whiten { "W" } else { "" },
                if rotate { "R" } else { "" }
            ),
            TransformSpec::Opq { m, d_out: None } => write!(f, "OPQ{m}"),
            TransformSpec::Opq { m, d_out: Some(d) } => write!(f, "OPQ{m}_{d}"),
            TransformSpec::RandomRotation { d_out: None } => f.write_str("RR"),
            TransformSpec::RandomRotation { d_out: Some(d) } => write!(f, "RR{d}"),
        }
    }
}

impl fmt::Display for CoarseSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            CoarseSpec::Ivf { nlist } => write!(f, "IVF{nlist}"),
            CoarseSpec::Imi { bits } => write!(f, "IMI2x{bits}"),
            CoarseSpec::IvfHnsw { nlist, m } => write!(f, "IVF{nlist}_HNSW{m}"),
        }
    }
}

impl fmt::Display for IndexSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            IndexSpec::Flat => f.write_str("Flat"),
            IndexSpec::Pq { m, nbits: 8 } => write!(f, "PQ{m}"),
            IndexSpec::Pq { m, nbits } => write!(f, "PQ{m}x{nbits}"),
            IndexSpec::Sq(t) => write!(f, "{t}"),
        }
    }
}

impl fmt::Display for FactorySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        match self.id_map {
            Some(IdMapKind::IdMap) => parts.push("IDMap".into()),
            Some(IdMapKind::IdMap2) => parts.push("IDMap2".into()),
            None => {}
        }
        parts.extend(self.transforms.iter().map(ToString::to_string));
        if let Some(c) = self.coarse {
            parts.push(c.to_string());
        }
        match (self.graph, self.index) {
            (Some(m), IndexSpec::Flat) => parts.push(format!("HNSW{m}")),
            (Some(m), ix) => parts.push(format!("HNSW{m}_{ix}")),
            (None, ix) => parts.push(ix.to_string()),
        }
        f.write_str(&parts.join(","))
    }
}

/// Parses `description` and builds the index (Faiss's `index_factory`).
///
/// # Errors
/// [`vq_core::Error::Factory`] wrapping a [`ParseError`], or the build's errors.
pub fn index_factory(
    d: usize,
    description: &str,
    metric: Metric,
) -> vq_core::Result<Box<dyn Index>> {
    let spec = FactorySpec::parse(description).map_err(|e| vq_core::Error::Factory(Box::new(e)))?;
    spec.build(d, metric)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_print_round_trip() {
        for s in [
            "Flat",
            "IDMap,Flat",
            "IDMap2,L2norm,Flat",
            "L2norm,L2norm,Flat",
            "PQ16",
            "PQ16x4",
            "OPQ16_64,PQ16",
            "OPQ8,PQ8x10",
            "PCA64,SQ8",
            "PCAW32,SQ4",
            "PCAR16,Flat",
            "PCAWR16,SQfp16",
            "RR,SQ4",
            "RR64,SQbf16",
            "IDMap2,L2norm,SQ8_direct",
            "SQ8_direct_signed",
            "SQ6",
            "SQ8_uniform",
            "IVF1024,Flat",
            "IVF4096,PQ32",
            "OPQ16_64,IVF1024,PQ16",
            "IMI2x8,PQ16",
            "IDMap2,PCA32,IVF16,SQ8",
            "HNSW32",
            "HNSW16_SQ8",
            "HNSW32_PQ16",
            "PCA32,HNSW8_PQ8x4",
            "IVF4096_HNSW32,Flat",
            "IVF64_HNSW16,PQ8",
            "IDMap2,IVF16_HNSW8,SQ8",
        ] {
            let spec = FactorySpec::parse(s).unwrap();
            assert_eq!(spec.to_string(), s);
            assert_eq!(FactorySpec::parse(&spec.to_string()).unwrap(), spec);
        }
    }

    #[test]
    fn errors_name_the_token_and_position() {
        let e = FactorySpec::parse("Flat,Bogus").unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::UnknownToken("Bogus".into()));
        let e = FactorySpec::parse("Flat,Flat").unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::Trailing("Flat".into()));
        let e = FactorySpec::parse("IDMap,Bogus,Flat").unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::UnknownToken("Bogus".into()));
        assert_eq!(e.span, 6..11);
        assert!(e.to_string().contains("position 6"));
        assert!(e.to_string().ends_with("      ^^^^^"));
        assert_eq!(
            FactorySpec::parse("PQ16np").unwrap().index,
            IndexSpec::Pq { m: 16, nbits: 8 }
        );
        for bad in [
            "PQ", "PQx4", "PQ16x", "PQ0", "PQ-1", "SQ7", "PCA", "OPQ_64", "RR0", "SQ",
        ] {
            let e = FactorySpec::parse(bad).unwrap_err();
            assert_eq!(e.kind, ParseErrorKind::UnknownToken(bad.into()), "{bad}");
        }
        let e = FactorySpec::parse("PQ16x4fs").unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::NotAvailableYet("PQ16x4fs".into()));
        let e = FactorySpec::parse("IVF1024_NSG32,Flat").unwrap_err();
        assert_eq!(
            e.kind,
            ParseErrorKind::NotAvailableYet("IVF1024_NSG32".into())
        );
        assert_eq!(e.span, 0..13);
        // HNSW spellings: Faiss's equivalent forms and the default M.
        for (s, canon) in [
            ("HNSW", "HNSW32"),
            ("HNSW32,Flat", "HNSW32"),
            ("HNSW32_Flat", "HNSW32"),
            ("HNSW16,SQ8", "HNSW16_SQ8"),
            ("IVF64_HNSW,Flat", "IVF64_HNSW32,Flat"),
            ("IVF1k_HNSW8,Flat", "IVF1024_HNSW8,Flat"),
        ] {
            assert_eq!(FactorySpec::parse(s).unwrap().to_string(), canon, "{s}");
        }
        for (bad, tok, kind_unknown) in [
            ("HNSW0", "HNSW0", false),
            ("HNSW32_Bogus", "HNSW32_Bogus", false),
            ("IVF16,HNSW32", "HNSW32", true),
            ("HNSW32,PCA8,Flat", "PCA8", true),
            ("HNSW32_SQ8,Flat", "Flat", true),
            ("IVF16_HNSW0,Flat", "IVF16_HNSW0", false),
        ] {
            let e = FactorySpec::parse(bad).unwrap_err();
            let ok = match &e.kind {
                ParseErrorKind::NotAvailableYet(t) | ParseErrorKind::UnknownToken(t) => {
                    !kind_unknown && t == tok
                }
                ParseErrorKind::Misplaced(t) | ParseErrorKind::Trailing(t) => {
                    kind_unknown && t == tok
                }
                _ => false,
            };
            assert!(ok, "{bad}: {e}");
        }
        assert_eq!(
            FactorySpec::parse("IVF4k,Flat").unwrap().coarse,
            Some(CoarseSpec::Ivf { nlist: 4096 })
        );
        let e = FactorySpec::parse("IVF16,PCA8,Flat").unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::Misplaced("PCA8".into()));
        let e = FactorySpec::parse("IVF16,IMI2x4,Flat").unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::Misplaced("IMI2x4".into()));
        assert_eq!(
            FactorySpec::parse("IVF16").unwrap_err().kind,
            ParseErrorKind::MissingIndex
        );
        let e = FactorySpec::parse("L2norm,IDMap,Flat").unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::Misplaced("IDMap".into()));
        assert_eq!(
            FactorySpec::parse("L2norm").unwrap_err().kind,
            ParseErrorKind::MissingIndex
        );
        assert_eq!(
            FactorySpec::parse("").unwrap_err().kind,
            ParseErrorKind::Empty
        );
        assert_eq!(FactorySpec::parse("Flat,").unwrap_err().span, 5..5);
        assert_eq!(
            FactorySpec::parse(" , Flat").unwrap_err().kind,
            ParseErrorKind::Empty
        );
    }

    #[test]
    fn builds_compressed_pipelines_and_checks_dimensions() {
        let ix = index_factory(128, "OPQ16_64,PQ16", Metric::L2).unwrap();
        assert_eq!(ix.dim(), 128);
        assert!(!ix.is_trained());
        let ix = index_factory(128, "PCA64,SQ8", Metric::L2).unwrap();
        assert_eq!(ix.dim(), 128);
        let ix = index_factory(32, "PQ8x4", Metric::InnerProduct).unwrap();
        assert_eq!(ix.bytes_per_vector(), 4.0);
        let ix = index_factory(30, "SQ4", Metric::L2).unwrap();
        assert_eq!(ix.bytes_per_vector(), 15.0);
        // M must divide the dimension it applies to (after the transforms).
        assert!(index_factory(128, "PQ7", Metric::L2).is_err());
        assert!(index_factory(128, "OPQ16_60,PQ16", Metric::L2).is_err());
        assert!(index_factory(128, "PCA64,PQ5", Metric::L2).is_err());
        assert!(index_factory(16, "PCA64,Flat", Metric::L2).is_err());
        assert!(index_factory(16, "PQ4x17", Metric::L2).is_err());
        let ix = index_factory(64, "OPQ16_64,IVF256,PQ16", Metric::L2).unwrap();
        assert_eq!(ix.bytes_per_vector(), 24.0);
        assert_eq!(ix.search_param_names()[0], "nprobe");
        assert!(index_factory(64, "IMI2x8,PQ16", Metric::InnerProduct).is_err());
        assert!(index_factory(63, "IMI2x8,Flat", Metric::L2).is_err());
        assert!(index_factory(64, "IVF0,Flat", Metric::L2).is_err());
        assert!(index_factory(64, "HNSW1", Metric::L2).is_err());
        assert!(index_factory(64, "HNSW8_PQ7", Metric::L2).is_err());
    }

    #[test]
    fn builds_hnsw_indexes_and_hnsw_quantizers() {
        let data = vq_core::synthetic::SyntheticSpec::new(3000, 16, 20)
            .generate()
            .unwrap();
        let (x, q) = (data.base.as_ref(), data.queries.as_ref());
        for s in [
            "HNSW8",
            "HNSW8_SQ8",
            "HNSW8_PQ8",
            "IVF32_HNSW8,Flat",
            "IVF32_HNSW8,SQ8",
        ] {
            let mut ix = index_factory(16, s, Metric::L2).unwrap();
            assert_eq!(
                ix.describe().starts_with("HNSW"),
                s.starts_with("HNSW"),
                "{s}"
            );
            ix.train(x).unwrap();
            ix.add(x).unwrap();
            let p = vq_core::SearchParams::parse(if s.starts_with("IVF") {
                "nprobe=8,quantizer_efSearch=32"
            } else {
                "efSearch=32"
            })
            .unwrap();
            let r = ix.search(q, 5, &p).unwrap();
            assert!(r.labels().iter().all(|&l| (0..3000).contains(&l)), "{s}");
        }
        let ix = index_factory(16, "HNSW8", Metric::L2).unwrap();
        assert_eq!(ix.search_param_names(), vec!["efSearch".to_string()]);
        // The HNSW coarse quantizer finds the lists the exact one does: recall against
        // exact search with enough probes.
        let mut exact = IndexFlat::new(16, Metric::L2).unwrap();
        exact.add(x).unwrap();
        let want = exact.search(q, 10, &vq_core::SearchParams::new()).unwrap();
        let mut ivf = index_factory(16, "IVF64_HNSW16,Flat", Metric::L2).unwrap();
        ivf.train(x).unwrap();
        ivf.add(x).unwrap();
        let p = vq_core::SearchParams::parse("nprobe=16,quantizer_efSearch=64").unwrap();
        let got = ivf.search(q, 10, &p).unwrap();
        let hits: usize = (0..q.len())
            .map(|i| {
                let w = want.row(i).1;
                got.row(i).1.iter().filter(|l| w.contains(l)).count()
            })
            .sum();
        let recall = hits as f64 / (10 * q.len()) as f64;
        assert!(recall > 0.9, "IVF64_HNSW16 recall {recall}");
    }

    #[test]
    fn parsing_arbitrary_strings_never_panics_and_spans_are_inside() {
        let alphabet = [
            "Flat", "IDMap", "IDMap2", "L2norm", ",", " ", "IVF", "x", "é", ",,",
        ];
        let mut state = 12345u64;
        for _ in 0..2000 {
            let mut s = String::new();
            for _ in 0..(state % 6) {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                s.push_str(alphabet[(state >> 33) as usize % alphabet.len()]);
            }
            state = state.wrapping_add(7);
            if let Err(e) = FactorySpec::parse(&s) {
                assert!(e.span.start <= e.span.end && e.span.end <= s.len(), "{s:?}");
                assert!(s.is_char_boundary(e.span.start) && s.is_char_boundary(e.span.end));
            }
        }
    }
}
