//! Faiss file → vq index: the factory string is derived from the file's structure, the
//! empty vq index it builds is saved, and its sections are overwritten with what the
//! file holds; the result is loaded through vq's own (fully checked) loader.

use std::cell::RefCell;

use vq_core::persist::StateReader;
use vq_core::{Error, Metric, Result};
use vq_hnsw::io::Reader;
use vq_ivf::{ArrayInvertedLists, InvertedLists};
use vq_pq::fastscan::FastScanLayout;
use vq_pq::{ScalarQuantizer, SqType};

use super::Sections;
use super::format::{
    self, Graph, HnswKind, IvfHeader, LinearKind, Lists, MappedFile, Node, Pq, Sq, Transform,
};
use super::mapped::FaissMappedLists;
use crate::{
    CoarseSpec, EncodingSpec, Factory, FactoryIndex, FactorySpec, IdMapKind, TransformSpec,
};

/// Largest level vq's graphs hold.
const MAX_LEVEL: i32 = 30;

struct Ctx<'a> {
    label: &'a str,
    /// Copy inverted lists into memory rather than leave them in the file.
    copy_lists: bool,
    /// The inverted lists of the IVFs, by the name of their `lists` part.
    attached: RefCell<Vec<(String, Box<dyn InvertedLists>)>>,
}

impl Ctx<'_> {
    fn bad(&self, what: impl std::fmt::Display) -> Error {
        Error::format(self.label, format!("Faiss index: {what}"))
    }
}

fn unsupported(what: impl Into<String>) -> Error {
    Error::not_supported("read", what)
}

/// Reads a Faiss file. Its inverted lists stay in `file` (Faiss's `IO_FLAG_MMAP`)
/// unless `copy_lists`, which copies them into memory.
pub(crate) fn read(file: &MappedFile, label: &str, copy_lists: bool) -> Result<FactoryIndex> {
    let node = format::parse(file, label)?;
    read_node(node, file.bytes.len(), label, copy_lists)
}

fn read_node(node: Node, file_len: usize, label: &str, copy_lists: bool) -> Result<FactoryIndex> {
    let cx = Ctx {
        label,
        copy_lists,
        attached: RefCell::new(Vec::new()),
    };
    let h = node.header();
    let metric = metric_of(h.metric)?;
    let d = h.d as usize;
    let spec = spec_of(&node, &cx)?;
    // vq keeps a record per inverted list: a file must justify its list count (as
    // vq's own loader demands of its containers) before building allocates them.
    if spec.total_lists() > (file_len / 8) as u128 {
        return Err(cx.bad(format!("`{spec}` has more lists than the file could hold")));
    }
    let factory = Factory::new();
    let empty = factory
        .build_spec(spec.clone(), d, metric)
        .map_err(|e| cx.bad(format!("`{spec}` (d = {d}) does not build in vq: {e}")))?;
    let mut buf = Vec::new();
    empty.write_to(&mut buf)?;
    let mut secs = Sections::from_container(buf)?;
    fill(&node, &spec, &mut secs, "index/", &cx)?;
    drop(node);
    let container = secs.to_container()?;
    drop(secs);
    let mut r = StateReader::from_bytes(container, label)?;
    for (name, lists) in cx.attached.take() {
        r.attach(&name, Box::new(lists));
    }
    FactoryIndex::read_bounded(&factory, &mut r, file_len).map_err(|e| match e {
        Error::Format { reason, .. } => cx.bad(format!("inconsistent contents ({reason})")),
        e => e,
    })
}

fn metric_of(m: i32) -> Result<Metric> {
    match m {
        0 => Ok(Metric::InnerProduct),
        1 => Ok(Metric::L2),
        m => Err(unsupported(format!(
            "Faiss metric {m} (vq has L2 and inner product)"
        ))),
    }
}

fn sq_type(q: i32) -> Result<SqType> {
    Ok(match q {
        0 => SqType::Q8,
        1 => SqType::Q4,
        2 => SqType::Q8Uniform,
        3 => SqType::Q4Uniform,
        4 => SqType::Fp16,
        5 => SqType::Q8Direct,
        6 => SqType::Q6,
        7 => SqType::Bf16,
        8 => SqType::Q8DirectSigned,
        q => {
            return Err(unsupported(format!(
                "Faiss scalar quantizer type {q} (vq has QT_8bit … QT_8bit_direct_signed, 0–8)"
            )));
        }
    })
}

fn pq_spec(pq: &Pq, cx: &Ctx<'_>) -> Result<(usize, usize)> {
    if pq.m == 0 || pq.m > 1 << 16 || !(1..=16).contains(&pq.nbits) {
        return Err(cx.bad(format!(
            "product quantizer M = {}, nbits = {}",
            pq.m, pq.nbits
        )));
    }
    Ok((pq.m as usize, pq.nbits as usize))
}

/// `M` of a Faiss HNSW graph: level 0 has `2M` links, the others `M`.
fn hnsw_m(g: &Graph, cx: &Ctx<'_>) -> Result<usize> {
    let c = &g.cum_nneighbor_per_level;
    let head = &c[..c.len().min(8)];
    if c.len() < 2 || c[0] != 0 || c[1] <= 0 || c[1] % 2 != 0 {
        return Err(cx.bad(format!("HNSW neighbour table starting {head:?}")));
    }
    let m = c[1] / 2;
    if c.windows(2)
        .skip(1)
        .any(|w| i64::from(w[1]) - i64::from(w[0]) != i64::from(m))
    {
        return Err(unsupported(format!(
            "a Faiss HNSW graph with per-level link counts starting {head:?} (vq's graphs \
             have 2·M links on level 0 and M above)"
        )));
    }
    Ok(m as usize)
}

fn transform_spec(t: &Transform, cx: &Ctx<'_>) -> Result<TransformSpec> {
    match t {
        Transform::Norm { norm, .. } => {
            if *norm != 2.0 {
                return Err(unsupported(format!(
                    "a Faiss NormalizationTransform with norm {norm} (vq normalises to L2)"
                )));
            }
            Ok(TransformSpec::L2Norm)
        }
        Transform::Linear {
            kind, d_in, d_out, ..
        } => {
            if *d_in <= 0 || *d_out <= 0 {
                return Err(cx.bad(format!("transform {d_in} → {d_out}")));
            }
            let same = d_in == d_out;
            Ok(match kind {
                LinearKind::Pca {
                    eigen_power,
                    random_rotation,
                    balanced_bins,
                    ..
                } => {
                    if *balanced_bins != 0 || (*eigen_power != 0.0 && *eigen_power != -0.5) {
                        return Err(unsupported(format!(
                            "a Faiss PCAMatrix with eigen_power {eigen_power} and balanced_bins \
                             {balanced_bins} (vq has PCA, PCAW = eigen_power -0.5, PCAR)"
                        )));
                    }
                    TransformSpec::Pca {
                        d_out: *d_out as usize,
                        whiten: *eigen_power == -0.5,
                        rotate: *random_rotation,
                    }
                }
                LinearKind::RandomRotation | LinearKind::Generic => TransformSpec::RandomRotation {
                    d_out: (!same).then_some(*d_out as usize),
                },
            })
        }
    }
}

fn coarse_of(ivf: &IvfHeader, cx: &Ctx<'_>) -> Result<CoarseSpec> {
    let nlist = usize::try_from(ivf.nlist)
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| cx.bad(format!("nlist {}", ivf.nlist)))?;
    Ok(match &*ivf.quantizer {
        Node::Flat { .. } => CoarseSpec::Ivf { nlist },
        Node::Hnsw {
            kind: HnswKind::Flat,
            graph,
            ..
        } => CoarseSpec::IvfHnsw {
            nlist,
            m: hnsw_m(graph, cx)?,
        },
        Node::Imi { pq, .. } => {
            if pq.m != 2 || pq.nbits == 0 || pq.nbits > 16 || ivf.nlist != 1 << (2 * pq.nbits) {
                return Err(unsupported(format!(
                    "a Faiss MultiIndexQuantizer with M = {}, nbits = {} for {} lists (vq has IMI2x{{b}})",
                    pq.m, pq.nbits, ivf.nlist
                )));
            }
            CoarseSpec::Imi {
                bits: pq.nbits as usize,
            }
        }
        other => {
            return Err(unsupported(format!(
                "a Faiss IVF whose coarse quantizer is {} (vq reads flat, HNSW-flat and IMI quantizers)",
                node_name(other)
            )));
        }
    })
}

fn node_name(n: &Node) -> &'static str {
    match n {
        Node::Flat { .. } => "IndexFlat",
        Node::IdMap { .. } => "IndexIDMap",
        Node::PreTransform { .. } => "IndexPreTransform",
        Node::Pq { .. } => "IndexPQ",
        Node::Sq { .. } => "IndexScalarQuantizer",
        Node::IvfFlat { .. } => "IndexIVFFlat",
        Node::IvfSq { .. } => "IndexIVFScalarQuantizer",
        Node::IvfPq { .. } => "IndexIVFPQ",
        Node::IvfPqFastScan { .. } => "IndexIVFPQFastScan",
        Node::Hnsw { .. } => "IndexHNSW",
        Node::PqFastScan { .. } => "IndexPQFastScan",
        Node::Refine { .. } => "IndexRefine",
        Node::Imi { .. } => "MultiIndexQuantizer",
    }
}

fn fs_spec(pq: &Pq, by_residual: bool, bbs: i32, cx: &Ctx<'_>) -> Result<EncodingSpec> {
    let (m, nbits) = pq_spec(pq, cx)?;
    if nbits != 4 || bbs <= 0 || bbs % 32 != 0 {
        return Err(cx.bad(format!("fast-scan PQ with nbits {nbits}, bbs {bbs}")));
    }
    Ok(EncodingSpec::PqFastScan {
        m,
        by_residual,
        bbs: bbs as usize,
    })
}

fn spec_of(n: &Node, cx: &Ctx<'_>) -> Result<FactorySpec> {
    Ok(match n {
        Node::Flat { .. } => FactorySpec::Codes(EncodingSpec::Flat),
        Node::IdMap { map2, inner, .. } => FactorySpec::IdMap {
            kind: if *map2 {
                IdMapKind::IdMap2
            } else {
                IdMapKind::IdMap
            },
            inner: Box::new(spec_of(inner, cx)?),
        },
        Node::PreTransform { chain, inner, .. } => {
            let mut c = chain
                .iter()
                .map(|t| transform_spec(t, cx))
                .collect::<Result<Vec<_>>>()?;
            let mut inner = spec_of(inner, cx)?;
            if let FactorySpec::PreTransform {
                chain: c2,
                inner: i2,
            } = inner
            {
                c.extend(c2);
                inner = *i2;
            }
            if c.is_empty() {
                inner
            } else {
                FactorySpec::PreTransform {
                    chain: c,
                    inner: Box::new(inner),
                }
            }
        }
        Node::Pq { pq, .. } => {
            let (m, nbits) = pq_spec(pq, cx)?;
            FactorySpec::Codes(EncodingSpec::Pq { m, nbits })
        }
        Node::Sq { sq, .. } => FactorySpec::Codes(EncodingSpec::Sq(sq_type(sq.qtype)?)),
        Node::IvfFlat { ivf, .. } => FactorySpec::Ivf {
            coarse: coarse_of(ivf, cx)?,
            encoding: EncodingSpec::Flat,
        },
        Node::IvfSq { ivf, sq, .. } => FactorySpec::Ivf {
            coarse: coarse_of(ivf, cx)?,
            encoding: EncodingSpec::Sq(sq_type(sq.qtype)?),
        },
        Node::IvfPq { ivf, pq, .. } => {
            let (m, nbits) = pq_spec(pq, cx)?;
            FactorySpec::Ivf {
                coarse: coarse_of(ivf, cx)?,
                encoding: EncodingSpec::Pq { m, nbits },
            }
        }
        Node::IvfPqFastScan {
            ivf,
            by_residual,
            bbs,
            pq,
            ..
        } => FactorySpec::Ivf {
            coarse: coarse_of(ivf, cx)?,
            encoding: fs_spec(pq, *by_residual, *bbs, cx)?,
        },
        Node::Hnsw {
            kind,
            graph,
            storage,
            ..
        } => {
            let m = hnsw_m(graph, cx)?;
            let storage = match (kind, &**storage) {
                (HnswKind::Flat, Node::Flat { .. }) => EncodingSpec::Flat,
                (HnswKind::Sq, Node::Sq { sq, .. }) => EncodingSpec::Sq(sq_type(sq.qtype)?),
                (HnswKind::Pq, Node::Pq { pq, .. }) => {
                    let (m, nbits) = pq_spec(pq, cx)?;
                    EncodingSpec::Pq { m, nbits }
                }
                (_, s) => {
                    return Err(cx.bad(format!("HNSW index whose storage is {}", node_name(s))));
                }
            };
            FactorySpec::Hnsw { m, storage }
        }
        Node::PqFastScan { pq, bbs, .. } => FactorySpec::Codes(fs_spec(pq, false, *bbs, cx)?),
        Node::Refine { base, refine, .. } => FactorySpec::Refine {
            base: Box::new(spec_of(base, cx)?),
            refine: Box::new(spec_of(refine, cx)?),
        },
        Node::Imi { .. } => {
            return Err(unsupported(
                "a stand-alone Faiss MultiIndexQuantizer (vq reads it as an IVF's coarse quantizer)",
            ));
        }
    })
}

fn check_ntotal(h: &format::Header, n: usize, what: &str, cx: &Ctx<'_>) -> Result<()> {
    if h.ntotal as u64 != n as u64 {
        return Err(cx.bad(format!(
            "{what} holds {n} vectors, its header says {}",
            h.ntotal
        )));
    }
    Ok(())
}

fn fill_pq(pq: &Pq, secs: &mut Sections, p: &str) {
    secs.set_bool(format!("{p}trained"), true);
    secs.set_f32s(format!("{p}centroids"), &pq.centroids);
}

/// Faiss's range statistic as vq's: its tag in vq's HNSW stream, its name in vq's
/// sections, its argument. RS_optim (a training choice vq does not have) becomes
/// min-max: the ranges it found are kept.
fn range_stat(sq: &Sq) -> (u8, &'static str, f32) {
    match sq.rangestat {
        1 => (1, "mean_std", sq.rangestat_arg),
        2 => (2, "quantiles", sq.rangestat_arg),
        _ => (0, "min_max", sq.rangestat_arg.max(0.0)),
    }
}

/// vq's per-dimension ranges (`vmin`, `vdiff`) of a Faiss scalar quantizer: Faiss's
/// trained values (one pair for the uniform types), or the fixed ranges vq gives the
/// types that need no training.
fn sq_ranges(sq: &Sq, t: SqType, d: usize, cx: &Ctx<'_>) -> Result<(Vec<f32>, Vec<f32>)> {
    if sq.d as usize != d {
        return Err(cx.bad(format!(
            "scalar quantizer of d = {} in an index of d = {d}",
            sq.d
        )));
    }
    let trained = &sq.trained;
    if !t.needs_training() {
        let fixed = ScalarQuantizer::new(d, t)?;
        return Ok((fixed.vmin().to_vec(), fixed.vdiff().to_vec()));
    }
    if matches!(t, SqType::Q8Uniform | SqType::Q4Uniform) {
        if trained.len() != 2 {
            return Err(cx.bad(format!(
                "{} trained values for a uniform quantizer",
                trained.len()
            )));
        }
        return Ok((vec![trained[0]; d], vec![trained[1]; d]));
    }
    if trained.len() != 2 * d {
        return Err(cx.bad(format!(
            "{} trained values for a scalar quantizer of d = {d}",
            trained.len()
        )));
    }
    Ok((trained[..d].to_vec(), trained[d..].to_vec()))
}

fn fill_sq(sq: &Sq, t: SqType, d: usize, secs: &mut Sections, p: &str, cx: &Ctx<'_>) -> Result<()> {
    let (vmin, vdiff) = sq_ranges(sq, t, d, cx)?;
    let (_, kind, arg) = range_stat(sq);
    secs.set_str(format!("{p}range_stat"), kind);
    secs.set_f64(format!("{p}range_stat_arg"), f64::from(arg));
    secs.set_bool(format!("{p}trained"), true);
    if t.needs_training() {
        secs.set_f32s(format!("{p}vmin"), &vmin);
        secs.set_f32s(format!("{p}vdiff"), &vdiff);
    }
    Ok(())
}

/// Fills the sections of `spec`'s index at prefix `p` from the Faiss object `n`.
fn fill(n: &Node, spec: &FactorySpec, secs: &mut Sections, p: &str, cx: &Ctx<'_>) -> Result<()> {
    match (n, spec) {
        (Node::Flat { h, xb }, FactorySpec::Codes(EncodingSpec::Flat)) => {
            let d = h.d as usize;
            if xb.len() % d != 0 {
                return Err(cx.bad(format!("{} floats in a flat index of d = {d}", xb.len())));
            }
            check_ntotal(h, xb.len() / d, "IndexFlat", cx)?;
            secs.set_f32s(format!("{p}xb"), xb);
        }
        (Node::IdMap { h, inner, ids, .. }, FactorySpec::IdMap { inner: si, .. }) => {
            check_ntotal(h, ids.len(), "IndexIDMap", cx)?;
            fill(inner, si, secs, &format!("{p}inner/"), cx)?;
            secs.set_i64s(format!("{p}ids"), ids);
        }
        (Node::PreTransform { chain, inner, .. }, FactorySpec::PreTransform { inner: si, .. }) => {
            // Faiss nests pre-transforms the factory flattens: walk both chains in order.
            let mut all: Vec<&Transform> = chain.iter().collect();
            let mut node = &**inner;
            while let Node::PreTransform { chain, inner, .. } = node {
                all.extend(chain.iter());
                node = inner;
            }
            for (i, t) in all.iter().enumerate() {
                fill_transform(t, secs, &format!("{p}chain{i}/"), cx)?;
            }
            fill(node, si, secs, &format!("{p}index/"), cx)?;
        }
        (Node::Pq { h, pq, codes, .. }, FactorySpec::Codes(EncodingSpec::Pq { .. })) => {
            fill_pq(pq, secs, &format!("{p}codec/"));
            secs.set_u64(format!("{p}ntotal"), h.ntotal as u64);
            secs.set_bytes(format!("{p}codes"), codes.clone());
        }
        (Node::Sq { h, sq, codes }, FactorySpec::Codes(EncodingSpec::Sq(t))) => {
            fill_sq(sq, *t, h.d as usize, secs, &format!("{p}codec/"), cx)?;
            secs.set_u64(format!("{p}ntotal"), h.ntotal as u64);
            secs.set_bytes(format!("{p}codes"), codes.clone());
        }
        (
            Node::PqFastScan {
                h, pq, m2, codes, ..
            },
            FactorySpec::Codes(EncodingSpec::PqFastScan { m, bbs, .. }),
        ) => {
            let n = h.ntotal as usize;
            let blocks = from_faiss_blocks(codes, n, *m, *m2 as usize, *bbs, cx)?;
            fill_pq(pq, secs, &format!("{p}pq/"));
            secs.set_u64(format!("{p}ntotal"), n as u64);
            secs.set_bytes(format!("{p}codes"), blocks);
        }
        (
            Node::Refine {
                base,
                refine,
                k_factor,
                ..
            },
            FactorySpec::Refine {
                base: sb,
                refine: sr,
            },
        ) => {
            secs.set_f64(format!("{p}k_factor"), f64::from(*k_factor));
            fill(base, sb, secs, &format!("{p}base/"), cx)?;
            fill(refine, sr, secs, &format!("{p}refine/"), cx)?;
        }
        (
            Node::Hnsw {
                h, graph, storage, ..
            },
            FactorySpec::Hnsw { .. },
        ) => {
            let stream = secs.bytes(&format!("{p}hnsw"))?.to_vec();
            let built = hnsw_stream(&stream, h, graph, storage, cx)?;
            secs.set_bytes(format!("{p}hnsw"), built);
        }
        (
            Node::IvfFlat { ivf, lists }
            | Node::IvfSq { ivf, lists, .. }
            | Node::IvfPq { ivf, lists, .. },
            FactorySpec::Ivf { coarse, .. },
        ) => {
            fill_ivf_common(ivf, coarse, secs, p, cx)?;
            let enc = format!("{p}encoding/");
            match n {
                Node::IvfSq {
                    sq, by_residual, ..
                } => {
                    let t = sq_type(sq.qtype)?;
                    secs.set_bool(format!("{enc}by_residual"), *by_residual);
                    fill_sq(sq, t, ivf.h.d as usize, secs, &format!("{enc}codec/"), cx)?;
                }
                Node::IvfPq {
                    pq, by_residual, ..
                } => {
                    secs.set_bool(format!("{enc}by_residual"), *by_residual);
                    fill_pq(pq, secs, &format!("{enc}pq/"));
                }
                _ => {}
            }
            let lists = match lists {
                Lists::Array { lists, .. } => lists,
                Lists::Mapped {
                    code_size,
                    file,
                    spans,
                } => {
                    if spans.len() as u64 != ivf.nlist {
                        return Err(cx.bad(format!(
                            "{} inverted lists for nlist {}",
                            spans.len(),
                            ivf.nlist
                        )));
                    }
                    let mapped = FaissMappedLists::new(*code_size, file, spans)?;
                    check_ntotal(&ivf.h, mapped.total(), "the inverted lists", cx)?;
                    let lists: Box<dyn InvertedLists> = if cx.copy_lists {
                        Box::new(ArrayInvertedLists::from_lists(&mapped)?)
                    } else {
                        Box::new(mapped)
                    };
                    // The lists are handed to the loader in place of these sections.
                    for part in ["offsets", "ids", "codes"] {
                        secs.remove(&format!("{p}lists/{part}"));
                    }
                    cx.attached.borrow_mut().push((format!("{p}lists"), lists));
                    return Ok(());
                }
                Lists::Block { .. } => {
                    return Err(cx.bad("block inverted lists outside a fast-scan IVF"));
                }
            };
            let total = check_lists(ivf, lists, cx)?;
            let mut offsets = Vec::with_capacity(lists.len() + 1);
            let mut acc = 0u64;
            offsets.push(0);
            let mut ids = Vec::with_capacity(total);
            let mut codes = Vec::new();
            for (i, c) in lists {
                acc += i.len() as u64;
                offsets.push(acc);
                ids.extend_from_slice(i);
                codes.extend_from_slice(c);
            }
            secs.set_u64s(format!("{p}lists/offsets"), &offsets);
            secs.set_i64s(format!("{p}lists/ids"), &ids);
            secs.set_bytes(format!("{p}lists/codes"), codes);
        }
        (
            Node::IvfPqFastScan {
                ivf,
                by_residual,
                m2,
                pq,
                lists,
                ..
            },
            FactorySpec::Ivf {
                coarse,
                encoding: EncodingSpec::PqFastScan { m, bbs, .. },
            },
        ) => {
            let q = format!("{p}ivf/");
            fill_ivf_common(ivf, coarse, secs, &q, cx)?;
            secs.set_bool(format!("{q}encoding/by_residual"), *by_residual);
            fill_pq(pq, secs, &format!("{q}encoding/pq/"));
            let Lists::Block {
                n_per_block,
                block_size,
                lists,
                ..
            } = lists
            else {
                return Err(cx.bad("a fast-scan IVF without block inverted lists"));
            };
            let m2 = *m2 as usize;
            if m2 != m.next_multiple_of(2) {
                return Err(cx.bad(format!("fast-scan M2 {m2} for M {m}")));
            }
            if *n_per_block != *bbs as u64 || *block_size != (*bbs * m2 / 2) as u64 {
                return Err(cx.bad(format!(
                    "blocks of {n_per_block} vectors × {block_size} bytes for bbs {bbs}, M2 {m2}"
                )));
            }
            let total = check_lists(ivf, lists, cx)?;
            let mut sizes = Vec::with_capacity(lists.len());
            let mut ids = Vec::with_capacity(total);
            let mut codes = Vec::new();
            for (i, c) in lists {
                sizes.push(i.len() as u64);
                ids.extend_from_slice(i);
                codes.extend(from_faiss_blocks(c, i.len(), *m, m2, *bbs, cx)?);
            }
            secs.set_u64s(format!("{p}lists/sizes"), &sizes);
            secs.set_i64s(format!("{p}lists/ids"), &ids);
            secs.set_bytes(format!("{p}lists/codes"), codes);
        }
        (n, s) => {
            return Err(cx.bad(format!("{} does not match `{s}`", node_name(n))));
        }
    }
    Ok(())
}

/// Checks the lists' count against `nlist` and their entries against `ntotal`; returns
/// the entries.
fn check_lists(ivf: &IvfHeader, lists: &[(Vec<i64>, Vec<u8>)], cx: &Ctx<'_>) -> Result<usize> {
    if lists.len() as u64 != ivf.nlist {
        return Err(cx.bad(format!(
            "{} inverted lists for nlist {}",
            lists.len(),
            ivf.nlist
        )));
    }
    let total: usize = lists.iter().map(|(ids, _)| ids.len()).sum();
    check_ntotal(&ivf.h, total, "the inverted lists", cx)?;
    Ok(total)
}

fn fill_ivf_common(
    ivf: &IvfHeader,
    coarse: &CoarseSpec,
    secs: &mut Sections,
    p: &str,
    cx: &Ctx<'_>,
) -> Result<()> {
    secs.set_u64(format!("{p}nprobe"), ivf.nprobe.max(1));
    secs.set_bool(format!("{p}direct_map"), ivf.direct_map.kind != 0);
    let q = format!("{p}quantizer/");
    match (&*ivf.quantizer, coarse) {
        (Node::Flat { h, xb }, CoarseSpec::Ivf { .. }) => {
            let d = h.d as usize;
            if h.d != ivf.h.d || xb.len() % d != 0 {
                return Err(cx.bad("coarse quantizer of another dimension"));
            }
            if h.metric != ivf.h.metric {
                return Err(unsupported(
                    "a Faiss IVF whose flat quantizer has another metric than the index",
                ));
            }
            secs.set_f32s(format!("{q}xb"), xb);
        }
        (
            Node::Hnsw {
                h, graph, storage, ..
            },
            CoarseSpec::IvfHnsw { .. },
        ) => {
            if h.metric != ivf.h.metric {
                return Err(unsupported(
                    "a Faiss IVF whose HNSW quantizer has another metric than the index",
                ));
            }
            let stream = secs.bytes(&format!("{q}hnsw"))?.to_vec();
            let built = hnsw_stream(&stream, h, graph, storage, cx)?;
            secs.set_bytes(format!("{q}hnsw"), built);
        }
        (Node::Imi { pq, .. }, CoarseSpec::Imi { .. }) => {
            secs.set_bool(format!("{q}trained"), true);
            secs.set_f32s(format!("{q}centroids"), &pq.centroids);
        }
        (n, c) => return Err(cx.bad(format!("{} as the quantizer of `{c}`", node_name(n)))),
    }
    Ok(())
}

fn fill_transform(t: &Transform, secs: &mut Sections, p: &str, cx: &Ctx<'_>) -> Result<()> {
    match t {
        Transform::Norm { .. } => {}
        Transform::Linear {
            kind,
            have_bias,
            a,
            b,
            d_in,
            d_out,
            is_trained,
        } => {
            let (di, dout) = (*d_in as usize, *d_out as usize);
            if !is_trained {
                return Err(cx.bad("an untrained transform in a stored index"));
            }
            if a.len() != di * dout || (*have_bias && b.len() != dout) {
                return Err(cx.bad(format!(
                    "linear transform {di} → {dout} with {} matrix and {} bias values",
                    a.len(),
                    b.len()
                )));
            }
            let bias = if *have_bias {
                b.clone()
            } else {
                vec![0.0; dout]
            };
            let ortho = orthonormal_rows(a, di, dout);
            let linear = format!("{p}linear/");
            match kind {
                LinearKind::Pca {
                    eigen_power,
                    epsilon,
                    mean,
                    eigenvalues,
                    pca_mat,
                    ..
                } => {
                    if mean.len() != di || eigenvalues.len() != di || pca_mat.len() != di * di {
                        return Err(unsupported(format!(
                            "a Faiss PCAMatrix with {} eigenvalues and a {}-value basis for d = {di} \
                             (trained on fewer points than dimensions)",
                            eigenvalues.len(),
                            pca_mat.len()
                        )));
                    }
                    secs.set_f64(format!("{p}eigen_power"), f64::from(*eigen_power));
                    secs.set_f64(format!("{p}epsilon"), f64::from(*epsilon));
                    secs.set_f32s(format!("{p}mean"), mean);
                    secs.set_f32s(format!("{p}eigenvalues"), eigenvalues);
                    secs.set_f32s(format!("{p}components"), pca_mat);
                }
                LinearKind::RandomRotation | LinearKind::Generic => {
                    if !ortho || bias.iter().any(|&v| v != 0.0) {
                        return Err(unsupported(
                            "a Faiss LinearTransform that is not a rotation (orthonormal rows, \
                             no bias): vq reads OPQ and random rotations",
                        ));
                    }
                }
            }
            secs.set_bool(format!("{p}trained"), true);
            secs.set_f32s(format!("{linear}matrix"), a);
            secs.set_f32s(format!("{linear}bias"), &bias);
            // The reverse map is the transpose when the rows are orthonormal (Faiss's
            // `reverse_transform` needs that too); otherwise there is none.
            secs.set_u64(format!("{linear}reverse"), u64::from(ortho));
        }
    }
    Ok(())
}

fn orthonormal_rows(a: &[f32], d_in: usize, d_out: usize) -> bool {
    if d_out > d_in {
        return false;
    }
    for i in 0..d_out {
        for j in i..d_out {
            let dot: f64 = (0..d_in)
                .map(|k| f64::from(a[i * d_in + k]) * f64::from(a[j * d_in + k]))
                .sum();
            let want = if i == j { 1.0 } else { 0.0 };
            if (dot - want).abs() > 1e-3 {
                return false;
            }
        }
    }
    true
}

/// Position of vector `r` (0–15) within a sub-quantizer's 16 bytes (both layouts).
fn byte_of(r: usize) -> usize {
    if r < 8 { 2 * r } else { 2 * (r - 8) + 1 }
}

/// Byte and shift of sub-quantizer `sq`'s code of vector `i` in Faiss's fast-scan
/// blocks (`pq4_pack_codes`: per block, per pair of sub-quantizers, per 32 vectors, 32
/// bytes: 16 for the even sub-quantizer then 16 for the odd one).
pub(crate) fn faiss_fs_pos(i: usize, sq: usize, bbs: usize, m2: usize) -> (usize, u32) {
    let (block, within) = (i / bbs, i % bbs);
    let (sub, r) = (within / 32, within % 32);
    let base = block * (bbs * m2 / 2) + ((sq / 2) * (bbs / 32) + sub) * 32 + (sq % 2) * 16;
    (base + byte_of(r % 16), if r >= 16 { 4 } else { 0 })
}

/// Faiss's packed fast-scan codes of `n` vectors → vq's block layout.
fn from_faiss_blocks(
    codes: &[u8],
    n: usize,
    m: usize,
    m2: usize,
    bbs: usize,
    cx: &Ctx<'_>,
) -> Result<Vec<u8>> {
    if m2 != m.next_multiple_of(2) {
        return Err(cx.bad(format!("fast-scan M2 {m2} for M {m}")));
    }
    let need = n
        .div_ceil(bbs)
        .checked_mul(bbs * m2 / 2)
        .ok_or_else(|| cx.bad(format!("{n} fast-scan vectors")))?;
    if codes.len() < need {
        return Err(cx.bad(format!(
            "{} fast-scan code bytes for {n} vectors (need {need})",
            codes.len()
        )));
    }
    let layout = FastScanLayout::new(m, bbs)?;
    let mut out = vec![0u8; layout.bytes_for(n)];
    let mut code = vec![0u8; m];
    for i in 0..n {
        for (sq, c) in code.iter_mut().enumerate() {
            let (b, s) = faiss_fs_pos(i, sq, bbs, m2);
            *c = (codes[b] >> s) & 15;
        }
        layout.write_code(&mut out, i, &code);
    }
    Ok(out)
}

/// vq's HNSW stream (see `IndexHnsw::write_to`) for the Faiss graph and storage, the
/// constant parts (magic, version, storage kind, level seed) taken from `default`, the
/// stream of the empty index of the same string.
fn hnsw_stream(
    default: &[u8],
    h: &format::Header,
    g: &Graph,
    storage: &Node,
    cx: &Ctx<'_>,
) -> Result<Vec<u8>> {
    // Header of the default stream: magic(8) version(4) kind(str) metric(1) d m efc efs
    // n (u64 each) seed draws (u64) build flags (1 byte: deterministic, linkAllCandidates,
    // codedBuild off) re-selection headroom (f32, Faiss's `prune_headroom` default; not in
    // Faiss's files).
    let mut src = default;
    let mut s = Reader::new(&mut src);
    s.bytes(12)?;
    let kind = s.str()?;
    let metric = s.u8()?;
    let _d = s.u64()?;
    let m = s.usize()?;
    let _ = (s.u64()?, s.u64()?, s.u64()?);
    let seed = s.u64()?;
    let _draws = s.u64()?;
    let flags = s.u8()?;
    let headroom = s.bytes(4)?;
    let prefix = &default[..12 + 8 + kind.len()];

    let n = usize::try_from(h.ntotal).map_err(|_| cx.bad("ntotal"))?;
    if g.levels.len() != n || g.offsets.len() != n + 1 {
        return Err(cx.bad(format!(
            "HNSW graph with {} levels and {} offsets for {n} vectors",
            g.levels.len(),
            g.offsets.len()
        )));
    }
    if hnsw_m(g, cx)? != m {
        return Err(cx.bad("HNSW M disagrees with the factory string"));
    }
    if g.ef_construction <= 0 || g.ef_search <= 0 {
        return Err(cx.bad(format!(
            "efConstruction {} / efSearch {}",
            g.ef_construction, g.ef_search
        )));
    }
    let cum = &g.cum_nneighbor_per_level;
    let mut out = Vec::with_capacity(default.len() + n * (2 * m + 1) * 4);
    out.extend_from_slice(prefix);
    out.push(metric);
    for v in [
        h.d as u64,
        m as u64,
        g.ef_construction as u64,
        g.ef_search as u64,
        n as u64,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&seed.to_le_bytes());
    out.extend_from_slice(&(n as u64).to_le_bytes());
    out.push(flags);
    out.extend_from_slice(&headroom);
    write_storage(&mut out, storage, n, cx)?;
    // Levels, then level-0 lists, then the upper lists node by node.
    let mut levels = Vec::with_capacity(n);
    for (i, &l) in g.levels.iter().enumerate() {
        if !(1..=MAX_LEVEL + 1).contains(&l) || l as usize >= cum.len() {
            return Err(cx.bad(format!("node {i} on {l} levels")));
        }
        levels.push((l - 1) as u8);
    }
    out.extend_from_slice(&levels);
    let list = |i: usize, l: usize| -> Result<Vec<u32>> {
        let start = g.offsets[i]
            .checked_add(cum[l] as u64)
            .ok_or_else(|| cx.bad("offset overflow"))?;
        let end = g.offsets[i]
            .checked_add(cum[l + 1] as u64)
            .ok_or_else(|| cx.bad("offset overflow"))?;
        if end > g.offsets[i + 1] || end as usize > g.neighbors.len() {
            return Err(cx.bad(format!("node {i}: links outside the neighbour table")));
        }
        let mut v = Vec::new();
        for &x in &g.neighbors[start as usize..end as usize] {
            if x < 0 {
                break;
            }
            if x as usize >= n {
                return Err(cx.bad(format!("node {i} links to {x}, past {n} nodes")));
            }
            v.push(x as u32);
        }
        Ok(v)
    };
    let put_list = |out: &mut Vec<u8>, v: &[u32], cap: usize| {
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        for k in 0..cap {
            let x = v.get(k).copied().unwrap_or(u32::MAX);
            out.extend_from_slice(&x.to_le_bytes());
        }
    };
    for i in 0..n {
        if g.offsets[i] > g.offsets[i + 1] {
            return Err(cx.bad("decreasing HNSW offsets"));
        }
        let v = list(i, 0)?;
        put_list(&mut out, &v, 2 * m);
    }
    for (i, &l) in levels.iter().enumerate() {
        for lv in 1..=l as usize {
            let v = list(i, lv)?;
            put_list(&mut out, &v, m);
        }
    }
    let (entry, max_level) = if n == 0 || g.entry_point < 0 {
        (u32::MAX, 0u32)
    } else {
        if g.entry_point as usize >= n || g.max_level < 0 {
            return Err(cx.bad(format!(
                "entry point {} on level {}",
                g.entry_point, g.max_level
            )));
        }
        (g.entry_point as u32, g.max_level as u32)
    };
    out.extend_from_slice(&entry.to_le_bytes());
    out.extend_from_slice(&max_level.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes()); // no removed slots
    out.push(0); // no labels
    out.extend_from_slice(&(n as u64).to_le_bytes());
    Ok(out)
}

/// vq's HNSW storage record for the Faiss storage index.
fn write_storage(out: &mut Vec<u8>, s: &Node, n: usize, cx: &Ctx<'_>) -> Result<()> {
    let f32s = |out: &mut Vec<u8>, v: &[f32]| {
        for x in v {
            out.extend_from_slice(&x.to_le_bytes());
        }
    };
    match s {
        Node::Flat { h, xb } => {
            check_ntotal(h, xb.len() / (h.d as usize).max(1), "HNSW storage", cx)?;
            if xb.len() != n * h.d as usize {
                return Err(cx.bad("HNSW storage holds another number of vectors"));
            }
            f32s(out, xb);
        }
        Node::Sq { h, sq, codes } => {
            check_ntotal(h, n, "HNSW storage", cx)?;
            let t = sq_type(sq.qtype)?;
            let d = h.d as usize;
            let (vmin, vdiff) = sq_ranges(sq, t, d, cx)?;
            let name = t.to_string();
            out.extend_from_slice(&(name.len() as u64).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            let (tag, _, arg) = range_stat(sq);
            out.push(tag);
            f32s(out, &[arg]);
            out.push(1);
            f32s(out, &vmin);
            f32s(out, &vdiff);
            out.extend_from_slice(codes);
        }
        Node::Pq { h, pq, codes, .. } => {
            check_ntotal(h, n, "HNSW storage", cx)?;
            out.extend_from_slice(&pq.m.to_le_bytes());
            out.extend_from_slice(&pq.nbits.to_le_bytes());
            out.push(1);
            f32s(out, &pq.centroids);
            out.extend_from_slice(codes);
        }
        other => return Err(cx.bad(format!("HNSW storage {}", node_name(other)))),
    }
    Ok(())
}
