//! vq index → Faiss file: the index saves itself as a container, and its sections are
//! rewritten as the Faiss objects of the same structure.

use vq_core::{Codec, Error, Index, Metric, Result};
use vq_hnsw::io::Reader;
use vq_pq::fastscan::FastScanLayout;
use vq_pq::{ScalarQuantizer, SqType};

use super::Sections;
use super::format::{
    self, DirectMap, Graph, Header, HnswKind, IvfHeader, LinearKind, Lists, Node, Pq, Sq, Transform,
};
use super::import::faiss_fs_pos;
use crate::{CoarseSpec, EncodingSpec, FactoryIndex, FactorySpec, IdMapKind, TransformSpec};

fn unsupported(what: impl Into<String>) -> Error {
    Error::not_supported("write as a Faiss index", what)
}

fn bad(what: impl std::fmt::Display) -> Error {
    Error::Serialization(format!("vq index: {what}"))
}

pub(crate) fn write(index: &FactoryIndex) -> Result<Vec<u8>> {
    // Faiss writes an untrained quantizer's arrays empty, which no reader (Faiss's
    // own `read_index` of a PQ included) takes back as an index: train first.
    if !index.is_trained() {
        return Err(Error::not_supported(
            "writing an untrained index in Faiss's format (train it first)",
            index.describe(),
        ));
    }
    let mut buf = Vec::new();
    index.write_to(&mut buf)?;
    let secs = Sections::from_container(buf)?;
    let d = secs.usize("dim")?;
    let metric: Metric = secs
        .str("metric")?
        .parse()
        .map_err(|e| bad(format!("metric: {e}")))?;
    let fm = match metric {
        Metric::InnerProduct => 0,
        Metric::L2 => 1,
    };
    let cx = Cx { metric: fm };
    let node = cx.node(index.spec(), &secs, "index/", d)?;
    drop(secs); // the arrays now live in `node`: halve the peak memory
    Ok(format::serialize(&node))
}

struct Cx {
    metric: i32,
}

fn hdr(d: usize, ntotal: usize, is_trained: bool, metric: i32) -> Header {
    Header {
        d: d as i32,
        ntotal: ntotal as i64,
        is_trained,
        metric,
        metric_arg: 0.0,
    }
}

fn faiss_qtype(t: SqType) -> Result<i32> {
    Ok(match t {
        SqType::Q8 => 0,
        SqType::Q4 => 1,
        SqType::Q8Uniform => 2,
        SqType::Q4Uniform => 3,
        SqType::Fp16 => 4,
        SqType::Q8Direct => 5,
        SqType::Q6 => 6,
        SqType::Bf16 => 7,
        SqType::Q8DirectSigned => 8,
        t => return Err(unsupported(format!("scalar quantizer {t}"))),
    })
}

fn rangestat_code(kind: &str) -> i32 {
    match kind {
        "mean_std" => 1,
        "quantiles" => 2,
        _ => 0,
    }
}

/// Faiss's `trained` vector of a scalar quantizer with vq's ranges: one (min, width)
/// pair for the uniform types, all minima then all widths otherwise.
fn faiss_trained(t: SqType, vmin: &[f32], vdiff: &[f32]) -> Vec<f32> {
    if matches!(t, SqType::Q8Uniform | SqType::Q4Uniform) {
        vec![vmin[0], vdiff[0]]
    } else {
        vmin.iter().chain(vdiff).copied().collect()
    }
}

/// The Faiss `ScalarQuantizer` of vq's codec sections at `p`.
fn sq_of(t: SqType, secs: &Sections, p: &str, d: usize) -> Result<(Sq, bool)> {
    let trained = secs.bool(&format!("{p}trained"))?;
    let tv = if trained && t.needs_training() {
        faiss_trained(
            t,
            &secs.f32s(&format!("{p}vmin"))?,
            &secs.f32s(&format!("{p}vdiff"))?,
        )
    } else {
        Vec::new()
    };
    let code_size = ScalarQuantizer::new(d, t)?.code_size();
    Ok((
        Sq {
            qtype: faiss_qtype(t)?,
            rangestat: rangestat_code(&secs.str(&format!("{p}range_stat"))?),
            rangestat_arg: secs.f64(&format!("{p}range_stat_arg"))? as f32,
            d: d as u64,
            code_size: code_size as u64,
            trained: tv,
        },
        trained,
    ))
}

/// The Faiss `ProductQuantizer` of vq's PQ sections at `p`.
fn pq_of(secs: &Sections, p: &str) -> Result<(Pq, bool)> {
    let trained = secs.bool(&format!("{p}trained"))?;
    Ok((
        Pq {
            d: secs.u64(&format!("{p}d"))?,
            m: secs.u64(&format!("{p}m"))?,
            nbits: secs.u64(&format!("{p}nbits"))?,
            centroids: if trained {
                secs.f32s(&format!("{p}centroids"))?
            } else {
                Vec::new()
            },
        },
        trained,
    ))
}

fn ntotal_of(n: &Node) -> usize {
    n.header().ntotal as usize
}

fn trained_of(n: &Node) -> bool {
    n.header().is_trained
}

/// vq's block layout → Faiss's packed fast-scan codes for `n` vectors.
fn to_faiss_blocks(blocks: &[u8], n: usize, m: usize, bbs: usize) -> Result<Vec<u8>> {
    let layout = FastScanLayout::new(m, bbs)?;
    if blocks.len() < layout.bytes_for(n) {
        return Err(bad("fast-scan codes shorter than their count"));
    }
    let m2 = layout.m2();
    let mut out = vec![0u8; n.div_ceil(bbs) * bbs * m2 / 2];
    let mut code = vec![0u8; m];
    for i in 0..n {
        layout.read_code(blocks, i, &mut code);
        for (sq, &c) in code.iter().enumerate() {
            let (b, s) = faiss_fs_pos(i, sq, bbs, m2);
            out[b] |= (c & 15) << s;
        }
    }
    Ok(out)
}

/// Faiss's direct map for lists holding `ids` (`list << 32 | offset` per id): an array
/// when the ids are `0..n`, a hash table otherwise.
fn direct_map(lists: &[(Vec<i64>, Vec<u8>)]) -> DirectMap {
    let n: usize = lists.iter().map(|(i, _)| i.len()).sum();
    let mut array = vec![-1i64; n];
    let mut pairs = Vec::with_capacity(n);
    let mut dense = true;
    for (l, (ids, _)) in lists.iter().enumerate() {
        for (o, &id) in ids.iter().enumerate() {
            let lo = ((l as i64) << 32) | o as i64;
            pairs.push((id, lo));
            match usize::try_from(id).ok().and_then(|i| array.get_mut(i)) {
                Some(slot) if *slot == -1 => *slot = lo,
                _ => dense = false,
            }
        }
    }
    if dense {
        DirectMap {
            kind: 1,
            array,
            hashtable: Vec::new(),
        }
    } else {
        DirectMap {
            kind: 2,
            array: Vec::new(),
            hashtable: pairs,
        }
    }
}

/// Faiss's `levelMult = 1 / ln(M)` level distribution (`HNSW::set_default_probas`,
/// computed in `float` as Faiss does, so the file matches Faiss's bytes).
fn default_probas(m: usize) -> (Vec<f64>, Vec<i32>) {
    let level_mult = (1.0 / (m as f64).ln()) as f32;
    let (mut probas, mut cum) = (Vec::new(), vec![0i32]);
    let mut nn = 0i32;
    for level in 0.. {
        // The quotients in float, `exp` and the product in double, the result stored
        // as float (C's `exp` on float arguments).
        let e = |x: f32| f64::from(x).exp();
        let p = (e(-(level as f32) / level_mult) * (1.0 - e(-1.0 / level_mult))) as f32;
        if p < 1e-9 {
            break;
        }
        probas.push(f64::from(p));
        nn += if level == 0 { 2 * m as i32 } else { m as i32 };
        cum.push(nn);
    }
    (probas, cum)
}

impl Cx {
    /// The Faiss HNSW index (and, when vq's graph carries its own ids, the id map around
    /// it) of vq's HNSW stream.
    fn hnsw(&self, stream: &[u8], metric: i32) -> Result<Node> {
        let mut src = stream;
        let mut s = Reader::new(&mut src);
        s.bytes(8)?; // magic
        let version = s.u32()?;
        let kind = s.str()?;
        let _metric = s.u8()?;
        let d = s.usize()?;
        let m = s.usize()?;
        let efc = s.usize()?;
        let efs = s.usize()?;
        let n = s.usize()?;
        let _seed = s.u64()?;
        let _draws = s.u64()?;
        let _flags = s.u8()?;
        if version >= 4 {
            // The re-selection headroom (not in Faiss's files).
            s.bytes(4)?;
        }
        if d == 0 || m < 2 || n > u32::MAX as usize {
            return Err(bad("HNSW header"));
        }
        let storage = match kind.as_str() {
            "flat" => Node::Flat {
                h: hdr(d, n, true, metric),
                xb: s.f32s(n * d)?,
            },
            "sq" => {
                let name = s.str()?;
                let t = name
                    .strip_prefix("SQ")
                    .and_then(SqType::parse)
                    .ok_or_else(|| bad(format!("SQ type {name}")))?;
                let tag = s.u8()?;
                let arg = s.f32s(1)?[0];
                let trained = s.u8()? == 1;
                let (vmin, vdiff) = if trained {
                    (s.f32s(d)?, s.f32s(d)?)
                } else {
                    (Vec::new(), Vec::new())
                };
                let cs = ScalarQuantizer::new(d, t)?.code_size();
                let codes = s.bytes(n * cs)?;
                let tv = if trained && t.needs_training() {
                    faiss_trained(t, &vmin, &vdiff)
                } else {
                    Vec::new()
                };
                Node::Sq {
                    h: hdr(d, n, trained, metric),
                    sq: Sq {
                        qtype: faiss_qtype(t)?,
                        rangestat: i32::from(tag),
                        rangestat_arg: arg,
                        d: d as u64,
                        code_size: cs as u64,
                        trained: tv,
                    },
                    codes,
                }
            }
            "pq" => {
                let pm = s.usize()?;
                let nbits = s.usize()?;
                let trained = s.u8()? == 1;
                if !(1..=16).contains(&nbits) || pm == 0 {
                    return Err(bad("HNSW PQ storage"));
                }
                let centroids = if trained {
                    s.f32s(d << nbits)?
                } else {
                    Vec::new()
                };
                let cs = (pm * nbits).div_ceil(8);
                let codes = s.bytes(n * cs)?;
                Node::Pq {
                    h: hdr(d, n, trained, metric),
                    pq: Pq {
                        d: d as u64,
                        m: pm as u64,
                        nbits: nbits as u64,
                        centroids,
                    },
                    codes,
                    search_type: 0,
                    encode_signs: false,
                    polysemous_ht: (pm * nbits + 1) as i32,
                }
            }
            k => return Err(unsupported(format!("HNSW storage `{k}`"))),
        };
        let levels = s.bytes(n)?;
        let (probas, mut cum) = default_probas(m);
        let top = levels.iter().copied().max().unwrap_or(0) as usize;
        while cum.len() < top + 2 {
            let last = cum[cum.len() - 1];
            cum.push(last + m as i32);
        }
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0u64);
        for &l in &levels {
            let last = offsets[offsets.len() - 1];
            offsets.push(last + cum[l as usize + 1] as u64);
        }
        let mut neighbors = vec![-1i32; offsets[n] as usize];
        let mut put = |i: usize, l: usize, words: &[u32], cap: usize| -> Result<()> {
            let cnt = words[0] as usize;
            if cnt > cap {
                return Err(bad("HNSW list longer than its capacity"));
            }
            let start = offsets[i] as usize + cum[l] as usize;
            for (k, &v) in words[1..=cnt].iter().enumerate() {
                neighbors[start + k] = v as i32;
            }
            Ok(())
        };
        for i in 0..n {
            put(i, 0, &s.u32s(2 * m + 1)?, 2 * m)?;
        }
        for (i, &l) in levels.iter().enumerate() {
            for lv in 1..=l as usize {
                put(i, lv, &s.u32s(m + 1)?, m)?;
            }
        }
        let entry = s.u32()?;
        let max_level = s.u32()?;
        let n_removed = s.usize()?;
        if n_removed > 0 {
            return Err(unsupported(format!(
                "an HNSW index with {n_removed} removed vectors (Faiss's HNSW cannot delete)"
            )));
        }
        let labels = match s.u8()? {
            1 => Some(s.i64s(n)?),
            _ => None,
        };
        let (entry_point, max_level) = if entry == u32::MAX {
            (-1, -1)
        } else {
            (entry as i32, max_level as i32)
        };
        let kind = match kind.as_str() {
            "flat" => HnswKind::Flat,
            "sq" => HnswKind::Sq,
            _ => HnswKind::Pq,
        };
        let trained = trained_of(&storage);
        let node = Node::Hnsw {
            kind,
            h: hdr(d, n, trained, metric),
            graph: Graph {
                assign_probas: probas,
                cum_nneighbor_per_level: cum,
                levels: levels.iter().map(|&l| i32::from(l) + 1).collect(),
                offsets,
                neighbors,
                entry_point,
                max_level,
                ef_construction: efc.min(i32::MAX as usize) as i32,
                ef_search: efs.min(i32::MAX as usize) as i32,
            },
            storage: Box::new(storage),
        };
        Ok(match labels {
            Some(ids) if ids.iter().enumerate().any(|(i, &id)| id != i as i64) => Node::IdMap {
                map2: false,
                h: hdr(d, n, trained, metric),
                inner: Box::new(node),
                ids,
            },
            _ => node,
        })
    }

    fn transform(
        &self,
        t: &TransformSpec,
        secs: &Sections,
        p: &str,
        d_in: usize,
    ) -> Result<(Transform, usize)> {
        let lin = |kind: LinearKind, have_bias: bool, d_out: usize| -> Result<(Transform, usize)> {
            let trained = secs.bool(&format!("{p}trained"))?;
            let (a, b) = if trained {
                let a = secs.f32s(&format!("{p}linear/matrix"))?;
                let b = secs.f32s(&format!("{p}linear/bias"))?;
                (a, if have_bias { b } else { Vec::new() })
            } else {
                (Vec::new(), Vec::new())
            };
            Ok((
                Transform::Linear {
                    kind,
                    have_bias,
                    a,
                    b,
                    d_in: d_in as i32,
                    d_out: d_out as i32,
                    is_trained: trained,
                },
                d_out,
            ))
        };
        let d_out = || secs.usize(&format!("{p}d_out"));
        match t {
            TransformSpec::L2Norm => Ok((
                Transform::Norm {
                    norm: 2.0,
                    d_in: d_in as i32,
                    d_out: d_in as i32,
                    is_trained: true,
                },
                d_in,
            )),
            TransformSpec::RandomRotation { .. } => {
                lin(LinearKind::RandomRotation, false, d_out()?)
            }
            TransformSpec::Opq { .. } => lin(LinearKind::Generic, false, d_out()?),
            TransformSpec::Pca { .. } => {
                let trained = secs.bool(&format!("{p}trained"))?;
                let get = |n: &str| -> Result<Vec<f32>> {
                    if trained {
                        secs.f32s(&format!("{p}{n}"))
                    } else {
                        Ok(Vec::new())
                    }
                };
                let kind = LinearKind::Pca {
                    eigen_power: secs.f64(&format!("{p}eigen_power"))? as f32,
                    epsilon: secs.f64(&format!("{p}epsilon"))? as f32,
                    random_rotation: secs.bool(&format!("{p}random_rotation"))?,
                    balanced_bins: 0,
                    mean: get("mean")?,
                    eigenvalues: get("eigenvalues")?,
                    pca_mat: get("components")?,
                };
                lin(kind, true, d_out()?)
            }
            TransformSpec::Custom { name, .. } => Err(unsupported(format!(
                "the registered transform `{name}` (Faiss has no such class)"
            ))),
        }
    }

    fn node(&self, spec: &FactorySpec, secs: &Sections, p: &str, d: usize) -> Result<Node> {
        let metric = self.metric;
        Ok(match spec {
            FactorySpec::Codes(EncodingSpec::Flat) => {
                let xb = secs.f32s(&format!("{p}xb"))?;
                Node::Flat {
                    h: hdr(d, xb.len() / d, true, metric),
                    xb,
                }
            }
            FactorySpec::IdMap { kind, inner } => {
                let inner = self.node(inner, secs, &format!("{p}inner/"), d)?;
                let ids = secs.i64s(&format!("{p}ids"))?;
                // Removals from an inner index that keeps its ids leave gaps in the map,
                // which Faiss's (one id per stored vector, in order) cannot hold.
                let gaps = ids.iter().filter(|&&id| id == vq_core::NO_LABEL).count();
                if gaps > 0 {
                    return Err(unsupported(format!(
                        "an id map with {gaps} removed vectors over an index that keeps its \
                         ids (Faiss's id map has no gaps; rebuild without them)"
                    )));
                }
                Node::IdMap {
                    map2: *kind == IdMapKind::IdMap2,
                    h: hdr(d, ids.len(), trained_of(&inner), metric),
                    inner: Box::new(inner),
                    ids,
                }
            }
            FactorySpec::PreTransform { chain, inner } => {
                let mut dim = d;
                let mut ts = Vec::with_capacity(chain.len());
                let mut trained = true;
                for (i, t) in chain.iter().enumerate() {
                    let (t, out) = self.transform(t, secs, &format!("{p}chain{i}/"), dim)?;
                    if let Transform::Linear { is_trained, .. } = &t {
                        trained &= *is_trained;
                    }
                    ts.push(t);
                    dim = out;
                }
                let inner = self.node(inner, secs, &format!("{p}index/"), dim)?;
                Node::PreTransform {
                    h: hdr(d, ntotal_of(&inner), trained && trained_of(&inner), metric),
                    chain: ts,
                    inner: Box::new(inner),
                }
            }
            FactorySpec::Codes(EncodingSpec::Pq { .. }) => {
                let (pq, trained) = pq_of(secs, &format!("{p}codec/"))?;
                let n = secs.usize(&format!("{p}ntotal"))?;
                let ht = (pq.m * pq.nbits + 1) as i32;
                Node::Pq {
                    h: hdr(d, n, trained, metric),
                    pq,
                    codes: secs.bytes(&format!("{p}codes"))?.to_vec(),
                    search_type: 0,
                    encode_signs: false,
                    polysemous_ht: ht,
                }
            }
            FactorySpec::Codes(EncodingSpec::Sq(t)) => {
                let (sq, trained) = sq_of(*t, secs, &format!("{p}codec/"), d)?;
                let n = secs.usize(&format!("{p}ntotal"))?;
                Node::Sq {
                    h: hdr(d, n, trained, metric),
                    sq,
                    codes: secs.bytes(&format!("{p}codes"))?.to_vec(),
                }
            }
            FactorySpec::Codes(EncodingSpec::PqFastScan { m, bbs, .. }) => {
                let (pq, trained) = pq_of(secs, &format!("{p}pq/"))?;
                let n = secs.usize(&format!("{p}ntotal"))?;
                let codes = to_faiss_blocks(secs.bytes(&format!("{p}codes"))?, n, *m, *bbs)?;
                Node::PqFastScan {
                    h: hdr(d, n, trained, metric),
                    pq,
                    implem: 0,
                    bbs: *bbs as i32,
                    qbs: 0,
                    ntotal2: n.next_multiple_of(*bbs) as u64,
                    m2: m.next_multiple_of(2) as u64,
                    codes,
                }
            }
            FactorySpec::Refine { base, refine } => {
                let b = self.node(base, secs, &format!("{p}base/"), d)?;
                let r = self.node(refine, secs, &format!("{p}refine/"), d)?;
                Node::Refine {
                    h: hdr(d, ntotal_of(&b), trained_of(&b) && trained_of(&r), metric),
                    base: Box::new(b),
                    refine: Box::new(r),
                    k_factor: secs.f64(&format!("{p}k_factor"))? as f32,
                }
            }
            FactorySpec::Hnsw { .. } => self.hnsw(secs.bytes(&format!("{p}hnsw"))?, metric)?,
            FactorySpec::Ivf { coarse, encoding } => self.ivf(coarse, encoding, secs, p, d)?,
            FactorySpec::Codes(e) => {
                return Err(unsupported(format!(
                    "the encoding `{e}` (a registered codec: Faiss has no such class)"
                )));
            }
        })
    }

    fn ivf_header(
        &self,
        coarse: &CoarseSpec,
        secs: &Sections,
        p: &str,
        d: usize,
        lists: &[(Vec<i64>, Vec<u8>)],
    ) -> Result<(IvfHeader, bool)> {
        let metric = self.metric;
        let nlist = secs.usize(&format!("{p}nlist"))?;
        let q = format!("{p}quantizer/");
        let quantizer = match coarse {
            CoarseSpec::Ivf { .. } => {
                let xb = secs.f32s(&format!("{q}xb"))?;
                Node::Flat {
                    h: hdr(d, xb.len() / d, true, metric),
                    xb,
                }
            }
            CoarseSpec::IvfHnsw { .. } => self.hnsw(secs.bytes(&format!("{q}hnsw"))?, metric)?,
            CoarseSpec::Imi { bits } => {
                let trained = secs.bool(&format!("{q}trained"))?;
                Node::Imi {
                    h: hdr(d, if trained { nlist } else { 0 }, trained, 1),
                    pq: Pq {
                        d: d as u64,
                        m: 2,
                        nbits: *bits as u64,
                        centroids: if trained {
                            secs.f32s(&format!("{q}centroids"))?
                        } else {
                            Vec::new()
                        },
                    },
                }
            }
            c => {
                return Err(unsupported(format!(
                    "the coarse quantizer `{c}` (vq writes flat, HNSW and IMI quantizers)"
                )));
            }
        };
        let q_trained = match &quantizer {
            Node::Imi { h, .. } => h.is_trained,
            n => ntotal_of(n) == nlist,
        };
        let total: usize = lists.iter().map(|(i, _)| i.len()).sum();
        let dm = if secs.bool(&format!("{p}direct_map"))? {
            direct_map(lists)
        } else {
            DirectMap::default()
        };
        Ok((
            IvfHeader {
                h: hdr(d, total, q_trained, metric),
                nlist: nlist as u64,
                nprobe: secs.u64(&format!("{p}nprobe"))?,
                quantizer: Box::new(quantizer),
                direct_map: dm,
            },
            q_trained,
        ))
    }

    fn ivf(
        &self,
        coarse: &CoarseSpec,
        encoding: &EncodingSpec,
        secs: &Sections,
        p: &str,
        d: usize,
    ) -> Result<Node> {
        if let EncodingSpec::PqFastScan {
            m,
            by_residual,
            bbs,
        } = encoding
        {
            let q = format!("{p}ivf/");
            let sizes = secs.u64s(&format!("{p}lists/sizes"))?;
            let ids = secs.i64s(&format!("{p}lists/ids"))?;
            let codes = secs.bytes(&format!("{p}lists/codes"))?;
            let layout = FastScanLayout::new(*m, *bbs)?;
            let (mut io, mut co) = (0usize, 0usize);
            let mut lists = Vec::with_capacity(sizes.len());
            for &s in &sizes {
                let s = s as usize;
                let nb = layout.bytes_for(s);
                if io + s > ids.len() || co + nb > codes.len() {
                    return Err(bad("fast-scan lists shorter than their sizes"));
                }
                lists.push((
                    ids[io..io + s].to_vec(),
                    to_faiss_blocks(&codes[co..co + nb], s, *m, *bbs)?,
                ));
                io += s;
                co += nb;
            }
            let (ivf, q_trained) = self.ivf_header(coarse, secs, &q, d, &lists)?;
            let (pq, pq_trained) = pq_of(secs, &format!("{q}encoding/pq/"))?;
            let mut ivf = ivf;
            ivf.h.is_trained = q_trained && pq_trained;
            let m2 = m.next_multiple_of(2);
            return Ok(Node::IvfPqFastScan {
                ivf,
                by_residual: *by_residual,
                code_size: (m * 4).div_ceil(8) as u64,
                bbs: *bbs as i32,
                m2: m2 as u64,
                implem: 0,
                qbs2: 0,
                pq,
                lists: Lists::Block {
                    // Faiss's BlockInvertedLists store no per-entry size.
                    code_size: u64::MAX,
                    n_per_block: *bbs as u64,
                    block_size: (bbs * m2 / 2) as u64,
                    lists,
                },
            });
        }
        let offsets = secs.u64s(&format!("{p}lists/offsets"))?;
        let ids = secs.i64s(&format!("{p}lists/ids"))?;
        let codes = secs.bytes(&format!("{p}lists/codes"))?;
        let cs = secs.usize(&format!("{p}code_size"))?;
        let mut lists = Vec::with_capacity(offsets.len().saturating_sub(1));
        for w in offsets.windows(2) {
            let (a, b) = (w[0] as usize, w[1] as usize);
            if a > b || b > ids.len() || b * cs > codes.len() {
                return Err(bad("inverted lists shorter than their offsets"));
            }
            lists.push((ids[a..b].to_vec(), codes[a * cs..b * cs].to_vec()));
        }
        let (mut ivf, q_trained) = self.ivf_header(coarse, secs, p, d, &lists)?;
        let lists = Lists::Array {
            code_size: cs as u64,
            lists,
        };
        let e = format!("{p}encoding/");
        Ok(match encoding {
            EncodingSpec::Flat => Node::IvfFlat { ivf, lists },
            EncodingSpec::Sq(t) => {
                let (sq, trained) = sq_of(*t, secs, &format!("{e}codec/"), d)?;
                ivf.h.is_trained = q_trained && trained;
                Node::IvfSq {
                    ivf,
                    code_size: sq.code_size,
                    sq,
                    by_residual: secs.bool(&format!("{e}by_residual"))?,
                    lists,
                }
            }
            EncodingSpec::Pq { .. } => {
                let (pq, trained) = pq_of(secs, &format!("{e}pq/"))?;
                ivf.h.is_trained = q_trained && trained;
                Node::IvfPq {
                    ivf,
                    by_residual: secs.bool(&format!("{e}by_residual"))?,
                    code_size: cs as u64,
                    pq,
                    lists,
                }
            }
            e => {
                return Err(unsupported(format!(
                    "inverted lists of `{e}` (a registered codec: Faiss has no such class)"
                )));
            }
        })
    }
}
