//! The factory AST and its canonical printer.

use std::fmt;

use vq_pq::SqType;

/// Id mapping around the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdMapKind {
    /// `IDMap`: `add_with_ids`, ids translated on search.
    IdMap,
    /// `IDMap2`: also reconstructs by id.
    IdMap2,
}

/// A vector transform in front of the index.
#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// A transform registered with [`crate::Factory::register_transform`]: its name and
    /// the text that follows it in the token (e.g. `"32"` in `MyRot32`).
    Custom {
        /// Registered name.
        name: String,
        /// Arguments (the rest of the token).
        args: String,
    },
}

/// How vectors are stored: stand-alone, in inverted lists, or in a graph's storage.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodingSpec {
    /// `Flat`: raw floats.
    Flat,
    /// `PQ{M}` or `PQ{M}x{nbits}` (an `np` suffix, Faiss's "no polysemous training", is
    /// accepted: vq never runs polysemous training).
    Pq {
        /// Sub-quantizers.
        m: usize,
        /// Bits per sub-quantizer code.
        nbits: usize,
    },
    /// `PQ{M}x4fs` (stand-alone or in an IVF), `PQ{M}x4fsr` (IVF, by residual), with an
    /// optional block size `_{bbs}` (a multiple of 32, default 32): 4-bit PQ codes in
    /// the fast-scan layout, scanned with SIMD byte shuffles.
    PqFastScan {
        /// Sub-quantizers.
        m: usize,
        /// Codes of residuals (`r`; inverted files only).
        by_residual: bool,
        /// Vectors per block.
        bbs: usize,
    },
    /// `SQ8`, `SQ6`, `SQ4`, `SQfp16`, `SQbf16`, `SQ8_direct`, `SQ8_direct_signed`,
    /// and the vq spellings `SQ8_uniform`, `SQ4_uniform`.
    Sq(SqType),
    /// A codec registered with [`crate::Factory::register_codec`].
    Custom {
        /// Registered name.
        name: String,
        /// Arguments (the rest of the token, e.g. `"16"` in `MyCodec16`).
        args: String,
    },
}

/// The coarse quantizer of an inverted-file index.
#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// `IVF{n}(<index>)`: k-means centroids added to any index built from the
    /// parenthesised string (e.g. `IVF65536(IVF256,PQ16,RFlat)`).
    IvfIndex {
        /// Number of lists.
        nlist: usize,
        /// The quantizer's own description.
        quantizer: Box<FactorySpec>,
    },
}

/// A parsed factory string (Faiss's `index_factory` grammar). `Display` prints the
/// canonical string, which parses back to the same value.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FactorySpec {
    /// `IDMap,…` / `IDMap2,…` (also written as a suffix): wraps everything else.
    IdMap {
        /// Which map.
        kind: IdMapKind,
        /// The wrapped index.
        inner: Box<FactorySpec>,
    },
    /// `…,RFlat` (refine = `Flat`) or `…,Refine(<index>)`: re-ranks the candidates of
    /// `base` (transforms included) with `refine`, which stores the raw input vectors.
    Refine {
        /// Candidate index.
        base: Box<FactorySpec>,
        /// Re-ranking index.
        refine: Box<FactorySpec>,
    },
    /// Transforms followed by the index they feed.
    PreTransform {
        /// Transforms, applied first to last (never empty).
        chain: Vec<TransformSpec>,
        /// The index on transformed vectors.
        inner: Box<FactorySpec>,
    },
    /// A stand-alone encoding: `Flat` (exact), `PQ…`, `SQ…`, or a registered codec.
    Codes(EncodingSpec),
    /// `HNSW{M}[_{storage}]` (or `HNSW{M},{storage}`): an HNSW graph over the storage.
    Hnsw {
        /// Links per node (level 0 has 2·M).
        m: usize,
        /// How vectors are stored (`Flat`, `SQ…`, `PQ…`).
        storage: EncodingSpec,
    },
    /// `{coarse},{encoding}`: an inverted file.
    Ivf {
        /// The coarse quantizer.
        coarse: CoarseSpec,
        /// The encoding of the lists.
        encoding: EncodingSpec,
    },
}

impl fmt::Display for TransformSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransformSpec::L2Norm => f.write_str("L2norm"),
            TransformSpec::Pca {
                d_out,
                whiten,
                rotate,
            } => write!(
                f,
                "PCA{}{}{d_out}",
                if *whiten { "W" } else { "" },
                if *rotate { "R" } else { "" }
            ),
            TransformSpec::Opq { m, d_out: None } => write!(f, "OPQ{m}"),
            TransformSpec::Opq { m, d_out: Some(d) } => write!(f, "OPQ{m}_{d}"),
            TransformSpec::RandomRotation { d_out: None } => f.write_str("RR"),
            TransformSpec::RandomRotation { d_out: Some(d) } => write!(f, "RR{d}"),
            TransformSpec::Custom { name, args } => write!(f, "{name}{args}"),
        }
    }
}

impl fmt::Display for CoarseSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoarseSpec::Ivf { nlist } => write!(f, "IVF{nlist}"),
            CoarseSpec::Imi { bits } => write!(f, "IMI2x{bits}"),
            CoarseSpec::IvfHnsw { nlist, m } => write!(f, "IVF{nlist}_HNSW{m}"),
            CoarseSpec::IvfIndex { nlist, quantizer } => write!(f, "IVF{nlist}({quantizer})"),
        }
    }
}

impl fmt::Display for EncodingSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodingSpec::Flat => f.write_str("Flat"),
            EncodingSpec::Pq { m, nbits: 8 } => write!(f, "PQ{m}"),
            EncodingSpec::Pq { m, nbits } => write!(f, "PQ{m}x{nbits}"),
            EncodingSpec::PqFastScan {
                m,
                by_residual,
                bbs,
            } => {
                write!(f, "PQ{m}x4fs{}", if *by_residual { "r" } else { "" })?;
                if *bbs != 32 {
                    write!(f, "_{bbs}")?;
                }
                Ok(())
            }
            EncodingSpec::Sq(t) => write!(f, "{t}"),
            EncodingSpec::Custom { name, args } => write!(f, "{name}{args}"),
        }
    }
}

impl fmt::Display for FactorySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FactorySpec::IdMap {
                kind: IdMapKind::IdMap,
                inner,
            } => write!(f, "IDMap,{inner}"),
            FactorySpec::IdMap {
                kind: IdMapKind::IdMap2,
                inner,
            } => write!(f, "IDMap2,{inner}"),
            FactorySpec::Refine { base, refine } => {
                if **refine == FactorySpec::Codes(EncodingSpec::Flat) {
                    write!(f, "{base},RFlat")
                } else {
                    write!(f, "{base},Refine({refine})")
                }
            }
            FactorySpec::PreTransform { chain, inner } => {
                for t in chain {
                    write!(f, "{t},")?;
                }
                write!(f, "{inner}")
            }
            FactorySpec::Codes(e) => write!(f, "{e}"),
            FactorySpec::Hnsw {
                m,
                storage: EncodingSpec::Flat,
            } => write!(f, "HNSW{m}"),
            FactorySpec::Hnsw { m, storage } => write!(f, "HNSW{m}_{storage}"),
            FactorySpec::Ivf { coarse, encoding } => write!(f, "{coarse},{encoding}"),
        }
    }
}

impl FactorySpec {
    /// Total inverted lists of every IVF in the spec (a quantizer's own lists included):
    /// what building it allocates per list.
    pub fn total_lists(&self) -> u128 {
        match self {
            FactorySpec::IdMap { inner, .. } | FactorySpec::PreTransform { inner, .. } => {
                inner.total_lists()
            }
            FactorySpec::Refine { base, refine } => base.total_lists() + refine.total_lists(),
            FactorySpec::Codes(_) | FactorySpec::Hnsw { .. } => 0,
            FactorySpec::Ivf { coarse, .. } => match coarse {
                CoarseSpec::Ivf { nlist } | CoarseSpec::IvfHnsw { nlist, .. } => *nlist as u128,
                CoarseSpec::Imi { bits } => 1u128 << (2 * (*bits).min(63)),
                CoarseSpec::IvfIndex { nlist, quantizer } => {
                    *nlist as u128 + quantizer.total_lists()
                }
            },
        }
    }

    /// A tree of what the spec builds, one component a line, indented by depth (what
    /// `vq describe` prints).
    pub fn tree(&self) -> String {
        let mut out = String::new();
        self.tree_into(0, &mut out);
        out
    }

    fn tree_into(&self, depth: usize, out: &mut String) {
        let pad = "  ".repeat(depth);
        let line = |out: &mut String, s: String| {
            out.push_str(&pad);
            out.push_str(&s);
            out.push('\n');
        };
        match self {
            FactorySpec::IdMap { kind, inner } => {
                line(
                    out,
                    match kind {
                        IdMapKind::IdMap => "IndexIDMap (user ids)".into(),
                        IdMapKind::IdMap2 => "IndexIDMap2 (user ids, reconstruct by id)".into(),
                    },
                );
                inner.tree_into(depth + 1, out);
            }
            FactorySpec::Refine { base, refine } => {
                line(
                    out,
                    "IndexRefine (re-rank k_factor_rf × k candidates)".into(),
                );
                line(out, "  base:".into());
                base.tree_into(depth + 2, out);
                line(out, "  refine:".into());
                refine.tree_into(depth + 2, out);
            }
            FactorySpec::PreTransform { chain, inner } => {
                line(out, "PreTransform".into());
                for t in chain {
                    line(out, format!("  {}", describe_transform(t)));
                }
                inner.tree_into(depth + 1, out);
            }
            FactorySpec::Codes(e) => line(out, describe_codes(e)),
            FactorySpec::Hnsw { m, storage } => line(
                out,
                format!(
                    "IndexHNSW (M {m}, {} links at level 0) over {}",
                    2 * m,
                    describe_encoding(storage)
                ),
            ),
            FactorySpec::Ivf { coarse, encoding } => {
                line(
                    out,
                    format!(
                        "IndexIVF over {} (by residual)",
                        describe_encoding(encoding)
                    )
                    .replace("raw vectors (by residual)", "raw vectors"),
                );
                match coarse {
                    CoarseSpec::Ivf { nlist } => {
                        line(out, format!("  quantizer: flat, {nlist} k-means centroids"))
                    }
                    CoarseSpec::Imi { bits } => line(
                        out,
                        format!(
                            "  quantizer: multi-index 2×{bits} bits = {} cells",
                            1u128 << (2 * (*bits).min(63))
                        ),
                    ),
                    CoarseSpec::IvfHnsw { nlist, m } => line(
                        out,
                        format!("  quantizer: HNSW (M {m}) over {nlist} k-means centroids"),
                    ),
                    CoarseSpec::IvfIndex { nlist, quantizer } => {
                        line(out, format!("  quantizer: {nlist} k-means centroids in"));
                        quantizer.tree_into(depth + 2, out);
                    }
                }
            }
        }
    }
}

fn describe_transform(t: &TransformSpec) -> String {
    match t {
        TransformSpec::L2Norm => "L2 normalisation".into(),
        TransformSpec::Pca {
            d_out,
            whiten,
            rotate,
        } => format!(
            "PCA to {d_out} dimensions{}{}",
            if *whiten { ", whitened" } else { "" },
            if *rotate { ", randomly rotated" } else { "" }
        ),
        TransformSpec::Opq { m, d_out } => match d_out {
            Some(d) => format!("OPQ rotation for {m} sub-quantizers, to {d} dimensions"),
            None => format!("OPQ rotation for {m} sub-quantizers"),
        },
        TransformSpec::RandomRotation { d_out } => match d_out {
            Some(d) => format!("random rotation to {d} dimensions"),
            None => "random rotation".into(),
        },
        TransformSpec::Custom { name, args } => format!("registered transform {name}{args}"),
    }
}

fn describe_encoding(e: &EncodingSpec) -> String {
    match e {
        EncodingSpec::Flat => "raw vectors".into(),
        EncodingSpec::Pq { m, nbits } => format!("PQ codes ({m} × {nbits} bits)"),
        EncodingSpec::PqFastScan {
            m,
            by_residual,
            bbs,
            ..
        } => format!(
            "4-bit fast-scan PQ codes ({m} × 4 bits{}, blocks of {bbs})",
            if *by_residual { ", of residuals" } else { "" }
        ),
        EncodingSpec::Sq(t) => format!("scalar-quantized codes ({t})"),
        EncodingSpec::Custom { name, args } => format!("registered codec {name}{args}"),
    }
}

fn describe_codes(e: &EncodingSpec) -> String {
    match e {
        EncodingSpec::Flat => "IndexFlat (exact search)".into(),
        EncodingSpec::PqFastScan { .. } => format!(
            "IndexPQFastScan, exhaustive SIMD scan of {}",
            describe_encoding(e)
        ),
        other => format!(
            "IndexFlatCodes, exhaustive scan of {}",
            describe_encoding(other)
        ),
    }
}
