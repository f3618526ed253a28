//! Faiss's binary index format, as objects: every field Faiss writes for the types vq
//! reads, parsed with bounds checks (no count is trusted before the bytes behind it are
//! known to exist) and written back byte for byte.
//!
//! The layout follows Faiss's `impl/index_read.cpp` / `index_write.cpp`: little-endian
//! native scalars (`int` 4 bytes, `size_t`/`idx_t` 8, `bool` 1, `float` 4), vectors as a
//! `size_t` element count then the elements, every index introduced by a four-character
//! tag (`"IxF2"`, `"IwPQ"`…).

use vq_core::persist::SharedBytes;
use vq_core::{Error, Result};

/// Deepest nesting of indexes (an id map around a refine around a transform around an
/// IVF with an HNSW quantizer is 5): deeper files are refused before recursing.
const MAX_DEPTH: usize = 16;

/// A four-character tag as Faiss stores it (`fourcc`: first character in the low byte).
pub(crate) fn fourcc(s: &[u8; 4]) -> u32 {
    u32::from_le_bytes(*s)
}

/// A tag printed for errors: its characters when printable, else its hex value.
pub(crate) fn tag_name(h: u32) -> String {
    let b = h.to_le_bytes();
    if b.iter().all(|c| c.is_ascii_graphic()) {
        format!("\"{}\"", String::from_utf8_lossy(&b))
    } else {
        format!("0x{h:08x}")
    }
}

/// Faiss's `Index` header.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Header {
    pub d: i32,
    pub ntotal: i64,
    pub is_trained: bool,
    /// `METRIC_INNER_PRODUCT` = 0, `METRIC_L2` = 1; others are refused by the translator.
    pub metric: i32,
    /// Written only for metrics above 1.
    pub metric_arg: f32,
}

/// `ProductQuantizer`: `d`, `M`, `nbits` and `M × 2^nbits × d/M` centroids.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Pq {
    pub d: u64,
    pub m: u64,
    pub nbits: u64,
    pub centroids: Vec<f32>,
}

/// `ScalarQuantizer`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Sq {
    pub qtype: i32,
    pub rangestat: i32,
    pub rangestat_arg: f32,
    pub d: u64,
    pub code_size: u64,
    pub trained: Vec<f32>,
}

/// What kind of linear transform a `LinearTransform` record is.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum LinearKind {
    /// `"LTra"`: a plain matrix (Faiss writes OPQ this way).
    Generic,
    /// `"rrot"`.
    RandomRotation,
    /// `"Pcam"`.
    Pca {
        eigen_power: f32,
        epsilon: f32,
        random_rotation: bool,
        balanced_bins: i32,
        mean: Vec<f32>,
        eigenvalues: Vec<f32>,
        pca_mat: Vec<f32>,
    },
}

/// A `VectorTransform`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Transform {
    /// `LinearTransform` and its subclasses: `y = A x + b`, `A` row-major `d_out × d_in`.
    Linear {
        kind: LinearKind,
        have_bias: bool,
        a: Vec<f32>,
        b: Vec<f32>,
        d_in: i32,
        d_out: i32,
        is_trained: bool,
    },
    /// `"VNrm"`: `NormalizationTransform`.
    Norm {
        norm: f32,
        d_in: i32,
        d_out: i32,
        is_trained: bool,
    },
}

/// An IVF's `DirectMap`.
#[derive(Clone, Debug, PartialEq, Default)]
pub(crate) struct DirectMap {
    /// 0 none, 1 array, 2 hash table.
    pub kind: u8,
    pub array: Vec<i64>,
    pub hashtable: Vec<(i64, i64)>,
}

/// The inverted lists of an IVF.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Lists {
    /// `"ilar"`: `ArrayInvertedLists`, `code_size` bytes per entry, as written.
    Array {
        code_size: u64,
        /// Per list: ids and codes.
        lists: Vec<(Vec<i64>, Vec<u8>)>,
    },
    /// `"ilar"` or `"ilod"` lists as read: left in their file, with where each list's
    /// codes and ids are in `file` (the index file, or the on-disk lists' data file).
    /// Every span is checked to lie inside `file`.
    Mapped {
        code_size: u64,
        file: MappedFile,
        spans: Vec<Span>,
    },
    /// `"ilbl"`: `BlockInvertedLists` (fast scan): codes in whole blocks of `n_per_block`
    /// vectors, `block_size` bytes each.
    Block {
        code_size: u64,
        n_per_block: u64,
        block_size: u64,
        lists: Vec<(Vec<i64>, Vec<u8>)>,
    },
}

/// Where one inverted list lies in a mapped file: `n` entries, their codes from byte
/// `codes_at`, their ids (`i64`) from byte `ids_at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    pub n: u64,
    pub codes_at: u64,
    pub ids_at: u64,
}

/// A memory-mapped file holding inverted lists, and its path (for the checks that it
/// did not change underneath).
#[derive(Clone, Debug)]
pub(crate) struct MappedFile {
    pub bytes: SharedBytes,
    pub path: std::path::PathBuf,
}

impl MappedFile {
    /// Bytes held in memory, as a file without a path.
    pub(crate) fn in_memory(bytes: &[u8]) -> MappedFile {
        MappedFile {
            bytes: SharedBytes::copy_from_slice(bytes),
            path: std::path::PathBuf::new(),
        }
    }
}

impl PartialEq for MappedFile {
    fn eq(&self, other: &MappedFile) -> bool {
        self.path == other.path && self.bytes.as_bytes() == other.bytes.as_bytes()
    }
}

/// Fields every `IndexIVF` writes first.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct IvfHeader {
    pub h: Header,
    pub nlist: u64,
    pub nprobe: u64,
    pub quantizer: Box<Node>,
    pub direct_map: DirectMap,
}

/// `HNSW`: the graph of an `IndexHNSW`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Graph {
    pub assign_probas: Vec<f64>,
    pub cum_nneighbor_per_level: Vec<i32>,
    /// Per node: how many levels it is on (its top level + 1).
    pub levels: Vec<i32>,
    /// `ntotal + 1` offsets into `neighbors`.
    pub offsets: Vec<u64>,
    /// All adjacency lists, `-1` padded.
    pub neighbors: Vec<i32>,
    pub entry_point: i32,
    pub max_level: i32,
    pub ef_construction: i32,
    pub ef_search: i32,
}

/// Which `IndexHNSW` subclass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HnswKind {
    /// `"IHNf"`.
    Flat,
    /// `"IHNs"`.
    Sq,
    /// `"IHNp"`.
    Pq,
}

/// One Faiss index object (the subset vq reads and writes).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Node {
    /// `"IxF2"` / `"IxFI"`: `IndexFlatL2` / `IndexFlatIP`.
    Flat { h: Header, xb: Vec<f32> },
    /// `"IxMp"` / `"IxM2"`: `IndexIDMap` / `IndexIDMap2`.
    IdMap {
        map2: bool,
        h: Header,
        inner: Box<Node>,
        ids: Vec<i64>,
    },
    /// `"IxPT"`: `IndexPreTransform`.
    PreTransform {
        h: Header,
        chain: Vec<Transform>,
        inner: Box<Node>,
    },
    /// `"IxPq"`: `IndexPQ`.
    Pq {
        h: Header,
        pq: Pq,
        codes: Vec<u8>,
        search_type: i32,
        encode_signs: bool,
        polysemous_ht: i32,
    },
    /// `"IxSQ"`: `IndexScalarQuantizer`.
    Sq { h: Header, sq: Sq, codes: Vec<u8> },
    /// `"IwFl"`: `IndexIVFFlat`.
    IvfFlat { ivf: IvfHeader, lists: Lists },
    /// `"IwSq"` (`"IwSQ"`: older, always by residual): `IndexIVFScalarQuantizer`.
    IvfSq {
        ivf: IvfHeader,
        sq: Sq,
        code_size: u64,
        by_residual: bool,
        lists: Lists,
    },
    /// `"IwPQ"`: `IndexIVFPQ`.
    IvfPq {
        ivf: IvfHeader,
        by_residual: bool,
        code_size: u64,
        pq: Pq,
        lists: Lists,
    },
    /// `"IwPf"`: `IndexIVFPQFastScan`.
    IvfPqFastScan {
        ivf: IvfHeader,
        by_residual: bool,
        code_size: u64,
        bbs: i32,
        m2: u64,
        implem: i32,
        qbs2: u64,
        pq: Pq,
        lists: Lists,
    },
    /// `"IHNf"`, `"IHNs"`, `"IHNp"`: `IndexHNSWFlat`, `…SQ`, `…PQ`.
    Hnsw {
        kind: HnswKind,
        h: Header,
        graph: Graph,
        storage: Box<Node>,
    },
    /// `"IPfs"`: `IndexPQFastScan` (codes packed in Faiss's block layout).
    PqFastScan {
        h: Header,
        pq: Pq,
        implem: i32,
        bbs: i32,
        qbs: i32,
        ntotal2: u64,
        m2: u64,
        codes: Vec<u8>,
    },
    /// `"IxRF"`: `IndexRefine` / `IndexRefineFlat`.
    Refine {
        h: Header,
        base: Box<Node>,
        refine: Box<Node>,
        k_factor: f32,
    },
    /// `"Imiq"`: `MultiIndexQuantizer` (the IMI coarse quantizer).
    Imi { h: Header, pq: Pq },
}

impl Node {
    /// The index header (an IVF's is inside its [`IvfHeader`]).
    pub(crate) fn header(&self) -> &Header {
        match self {
            Node::Flat { h, .. }
            | Node::IdMap { h, .. }
            | Node::PreTransform { h, .. }
            | Node::Pq { h, .. }
            | Node::Sq { h, .. }
            | Node::Hnsw { h, .. }
            | Node::PqFastScan { h, .. }
            | Node::Refine { h, .. }
            | Node::Imi { h, .. } => h,
            Node::IvfFlat { ivf, .. }
            | Node::IvfSq { ivf, .. }
            | Node::IvfPq { ivf, .. }
            | Node::IvfPqFastScan { ivf, .. } => &ivf.h,
        }
    }
}

// ---------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------

/// A cursor over a Faiss file's bytes. Every read checks the bytes are there; every
/// vector's element count is checked against the bytes left before anything is
/// allocated, so a hostile count cannot make the reader allocate more than the file
/// holds.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    label: &'a str,
    depth: usize,
    /// The index file's folder, where on-disk lists are also looked for.
    dir: Option<&'a std::path::Path>,
    /// The file the bytes belong to: inverted lists are left in it ([`Lists::Mapped`]).
    file: &'a MappedFile,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(file: &'a MappedFile, label: &'a str) -> Reader<'a> {
        Reader {
            bytes: file.bytes.as_bytes(),
            pos: 0,
            label,
            depth: 0,
            dir: file.path.parent(),
            file,
        }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// A format error at the current position.
    pub(crate) fn bad(&self, what: impl std::fmt::Display) -> Error {
        Error::format(
            self.label,
            format!("Faiss index, byte {}: {what}", self.pos),
        )
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.bad(format!(
                "truncated: {what} needs {n} bytes, {} left",
                self.remaining()
            )));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    pub(crate) fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }

    /// A C++ `bool`: one byte, 0 or 1 (anything else is corruption).
    pub(crate) fn bool(&mut self, what: &str) -> Result<bool> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(self.bad(format!("{what}: {b} is not a bool"))),
        }
    }

    pub(crate) fn i32(&mut self, what: &str) -> Result<i32> {
        Ok(i32::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn i64(&mut self, what: &str) -> Result<i64> {
        Ok(i64::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn f32(&mut self, what: &str) -> Result<f32> {
        Ok(f32::from_le_bytes(self.array(what)?))
    }

    /// `n` elements of `size` bytes, checked against what is left.
    fn elems(&mut self, n: u64, size: usize, what: &str) -> Result<&'a [u8]> {
        let bytes = usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_mul(size))
            .filter(|&b| b <= self.remaining())
            .ok_or_else(|| {
                self.bad(format!(
                    "{what}: {n} elements of {size} bytes, but only {} bytes are left",
                    self.remaining()
                ))
            })?;
        self.take(bytes, what)
    }

    fn count(&mut self, what: &str) -> Result<u64> {
        self.u64(what)
    }

    pub(crate) fn vec_u8(&mut self, what: &str) -> Result<Vec<u8>> {
        let n = self.count(what)?;
        Ok(self.elems(n, 1, what)?.to_vec())
    }

    pub(crate) fn vec_f32(&mut self, what: &str) -> Result<Vec<f32>> {
        let n = self.count(what)?;
        self.f32s(n, what)
    }

    /// `n` floats without a length prefix.
    pub(crate) fn f32s(&mut self, n: u64, what: &str) -> Result<Vec<f32>> {
        Ok(le_vec(self.elems(n, 4, what)?, f32::from_le_bytes))
    }

    pub(crate) fn vec_f64(&mut self, what: &str) -> Result<Vec<f64>> {
        let n = self.count(what)?;
        Ok(self
            .elems(n, 8, what)?
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect())
    }

    pub(crate) fn vec_i32(&mut self, what: &str) -> Result<Vec<i32>> {
        let n = self.count(what)?;
        Ok(le_vec(self.elems(n, 4, what)?, i32::from_le_bytes))
    }

    pub(crate) fn vec_i64(&mut self, what: &str) -> Result<Vec<i64>> {
        let n = self.count(what)?;
        self.i64s(n, what)
    }

    /// `n` `i64` without a length prefix.
    pub(crate) fn i64s(&mut self, n: u64, what: &str) -> Result<Vec<i64>> {
        Ok(le_vec(self.elems(n, 8, what)?, i64::from_le_bytes))
    }

    pub(crate) fn vec_u64(&mut self, what: &str) -> Result<Vec<u64>> {
        let n = self.count(what)?;
        Ok(le_vec(self.elems(n, 8, what)?, u64::from_le_bytes))
    }
}

/// Little-endian values from bytes (a copy; on little-endian hosts a plain `memcpy`).
pub(crate) fn le_vec<T: bytemuck::Pod, const N: usize>(b: &[u8], from: fn([u8; N]) -> T) -> Vec<T> {
    if cfg!(target_endian = "little") {
        bytemuck::pod_collect_to_vec(b)
    } else {
        b.chunks_exact(N)
            .map(|c| from(c.try_into().unwrap_or([0; N])))
            .collect()
    }
}

/// The little-endian bytes of values.
pub(crate) fn le_bytes<T: bytemuck::Pod, const N: usize>(v: &[T], to: fn(T) -> [u8; N]) -> Vec<u8> {
    if cfg!(target_endian = "little") {
        bytemuck::cast_slice(v).to_vec()
    } else {
        v.iter().flat_map(|&x| to(x)).collect()
    }
}

fn read_header(r: &mut Reader<'_>) -> Result<Header> {
    let d = r.i32("d")?;
    let ntotal = r.i64("ntotal")?;
    let _ = r.i64("dummy")?;
    let _ = r.i64("dummy")?;
    let is_trained = r.bool("is_trained")?;
    let metric = r.i32("metric_type")?;
    let metric_arg = if metric > 1 {
        r.f32("metric_arg")?
    } else {
        0.0
    };
    if d <= 0 || ntotal < 0 {
        return Err(r.bad(format!("bad index header: d = {d}, ntotal = {ntotal}")));
    }
    Ok(Header {
        d,
        ntotal,
        is_trained,
        metric,
        metric_arg,
    })
}

fn read_pq(r: &mut Reader<'_>) -> Result<Pq> {
    let d = r.u64("pq.d")?;
    let m = r.u64("pq.M")?;
    let nbits = r.u64("pq.nbits")?;
    let centroids = r.vec_f32("pq.centroids")?;
    Ok(Pq {
        d,
        m,
        nbits,
        centroids,
    })
}

fn read_sq(r: &mut Reader<'_>) -> Result<Sq> {
    Ok(Sq {
        qtype: r.i32("sq.qtype")?,
        rangestat: r.i32("sq.rangestat")?,
        rangestat_arg: r.f32("sq.rangestat_arg")?,
        d: r.u64("sq.d")?,
        code_size: r.u64("sq.code_size")?,
        trained: r.vec_f32("sq.trained")?,
    })
}

fn read_transform(r: &mut Reader<'_>) -> Result<Transform> {
    let at = r.pos();
    let h = r.u32("transform tag")?;
    let kind = if h == fourcc(b"LTra") {
        Some(LinearKind::Generic)
    } else if h == fourcc(b"rrot") {
        Some(LinearKind::RandomRotation)
    } else if h == fourcc(b"Pcam") || h == fourcc(b"PcAm") || h == fourcc(b"PCAm") {
        let eigen_power = r.f32("pca.eigen_power")?;
        let epsilon = if h == fourcc(b"Pcam") {
            r.f32("pca.epsilon")?
        } else {
            0.0
        };
        let random_rotation = r.bool("pca.random_rotation")?;
        let balanced_bins = if h == fourcc(b"PCAm") {
            0
        } else {
            r.i32("pca.balanced_bins")?
        };
        Some(LinearKind::Pca {
            eigen_power,
            epsilon,
            random_rotation,
            balanced_bins,
            mean: r.vec_f32("pca.mean")?,
            eigenvalues: r.vec_f32("pca.eigenvalues")?,
            pca_mat: r.vec_f32("pca.PCAMat")?,
        })
    } else {
        None
    };
    if let Some(kind) = kind {
        let have_bias = r.bool("have_bias")?;
        let a = r.vec_f32("A")?;
        let b = r.vec_f32("b")?;
        return Ok(Transform::Linear {
            kind,
            have_bias,
            a,
            b,
            d_in: r.i32("d_in")?,
            d_out: r.i32("d_out")?,
            is_trained: r.bool("is_trained")?,
        });
    }
    if h == fourcc(b"VNrm") {
        return Ok(Transform::Norm {
            norm: r.f32("norm")?,
            d_in: r.i32("d_in")?,
            d_out: r.i32("d_out")?,
            is_trained: r.bool("is_trained")?,
        });
    }
    r.pos = at;
    Err(Error::not_supported(
        "read",
        format!(
            "Faiss vector transform {} (byte {at}): vq reads LinearTransform (OPQ), \
             RandomRotationMatrix, PCAMatrix and NormalizationTransform",
            tag_name(h)
        ),
    ))
}

fn read_direct_map(r: &mut Reader<'_>) -> Result<DirectMap> {
    let kind = r.u8("direct map type")?;
    if kind > 2 {
        return Err(r.bad(format!("direct map type {kind}")));
    }
    let array = r.vec_i64("direct map")?;
    let mut hashtable = Vec::new();
    if kind == 2 {
        let flat = {
            let n = r.count("direct map hash table")?;
            let n2 = n
                .checked_mul(2)
                .ok_or_else(|| r.bad("direct map hash table size overflows"))?;
            r.i64s(n2, "direct map hash table")?
        };
        hashtable = flat.chunks_exact(2).map(|p| (p[0], p[1])).collect();
    }
    Ok(DirectMap {
        kind,
        array,
        hashtable,
    })
}

fn read_ivf_header(r: &mut Reader<'_>) -> Result<IvfHeader> {
    let h = read_header(r)?;
    let nlist = r.u64("nlist")?;
    let nprobe = r.u64("nprobe")?;
    let quantizer = Box::new(read_node(r)?);
    let direct_map = read_direct_map(r)?;
    Ok(IvfHeader {
        h,
        nlist,
        nprobe,
        quantizer,
        direct_map,
    })
}

fn read_lists(r: &mut Reader<'_>) -> Result<Lists> {
    let at = r.pos();
    let h = r.u32("inverted lists tag")?;
    if h == fourcc(b"ilar") {
        let nlist = r.u64("nlist")?;
        let code_size = r.u64("code_size")?;
        // Every list costs at least... nothing in a sparse file: bound nlist by what a
        // `full` size table would need, or by the sparse table's entries.
        let list_type = r.u32("list type")?;
        let sizes: Vec<u64> = if list_type == fourcc(b"full") {
            let s = r.vec_u64("list sizes")?;
            if s.len() as u64 != nlist {
                return Err(r.bad(format!("{} list sizes for {nlist} lists", s.len())));
            }
            s
        } else if list_type == fourcc(b"sprs") {
            let pairs = r.vec_u64("sparse list sizes")?;
            if pairs.len() % 2 != 0 {
                return Err(r.bad("odd sparse list size table"));
            }
            // nlist itself is unchecked by the table: refuse one the rest of the file
            // could not justify (vq keeps a small record per list).
            if nlist > (r.remaining() as u64 + pairs.len() as u64 * 8).max(1 << 20) {
                return Err(r.bad(format!("{nlist} lists")));
            }
            let mut s = vec![0u64; nlist as usize];
            for p in pairs.chunks_exact(2) {
                let slot = usize::try_from(p[0])
                    .ok()
                    .filter(|&i| i < s.len())
                    .ok_or_else(|| r.bad(format!("sparse list number {}", p[0])))?;
                s[slot] = p[1];
            }
            s
        } else {
            return Err(r.bad(format!("inverted list layout {}", tag_name(list_type))));
        };
        // Left in place: record where each list is, checking it is all there.
        let mut spans = Vec::with_capacity(sizes.len());
        for (i, &n) in sizes.iter().enumerate() {
            let bytes = n
                .checked_mul(code_size)
                .ok_or_else(|| r.bad(format!("list {i}: size overflows")))?;
            let codes_at = r.pos() as u64;
            r.elems(bytes, 1, "list codes")?;
            let ids_at = r.pos() as u64;
            r.elems(n, 8, "list ids")?;
            spans.push(Span {
                n,
                codes_at,
                ids_at,
            });
        }
        return Ok(Lists::Mapped {
            code_size,
            file: r.file.clone(),
            spans,
        });
    }
    if h == fourcc(b"ilbl") {
        let nlist = r.u64("nlist")?;
        let code_size = r.u64("code_size")?;
        let n_per_block = r.u64("n_per_block")?;
        let block_size = r.u64("block_size")?;
        if n_per_block == 0 || block_size == 0 {
            return Err(r.bad(format!("block lists of {n_per_block} × {block_size}")));
        }
        // Each list stores two counts (16 bytes) at least.
        if nlist > r.remaining() as u64 / 16 {
            return Err(r.bad(format!("{nlist} lists in {} bytes", r.remaining())));
        }
        let mut lists = Vec::with_capacity(nlist as usize);
        for i in 0..nlist {
            let ids = r.vec_i64("list ids")?;
            let codes = r.vec_u8("list codes")?;
            let blocks = (ids.len() as u64).div_ceil(n_per_block);
            if Some(codes.len() as u64) != blocks.checked_mul(block_size) {
                return Err(r.bad(format!(
                    "list {i}: {} code bytes for {} ids in blocks of {n_per_block} × {block_size} bytes",
                    codes.len(),
                    ids.len()
                )));
            }
            lists.push((ids, codes));
        }
        return Ok(Lists::Block {
            code_size,
            n_per_block,
            block_size,
            lists,
        });
    }
    if h == fourcc(b"ilod") {
        return read_ondisk_lists(r);
    }
    r.pos = at;
    Err(Error::not_supported(
        "read",
        format!(
            "Faiss inverted lists {} (byte {at}): vq reads ArrayInvertedLists (\"ilar\"), \
             BlockInvertedLists (\"ilbl\") and OnDiskInvertedLists (\"ilod\")",
            tag_name(h)
        ),
    ))
}

/// `"ilod"`: `OnDiskInvertedLists`. The index file holds, per list, its size, capacity
/// and offset in a separate data file (codes for `capacity` entries, then their ids);
/// that file is mapped and the lists are left in it.
fn read_ondisk_lists(r: &mut Reader<'_>) -> Result<Lists> {
    let nlist = r.u64("nlist")?;
    let code_size = r.u64("code_size")?;
    let n = r.count("on-disk lists")?;
    if n != nlist {
        return Err(r.bad(format!("{n} on-disk list records for {nlist} lists")));
    }
    let n3 = n
        .checked_mul(3)
        .ok_or_else(|| r.bad("on-disk list count overflows"))?;
    let records = r.i64s(n3, "on-disk lists")?;
    let slots = r.count("on-disk slots")?;
    let s2 = slots
        .checked_mul(2)
        .ok_or_else(|| r.bad("slot count overflows"))?;
    let _ = r.i64s(s2, "on-disk slots")?;
    let name = String::from_utf8_lossy(&r.vec_u8("on-disk file name")?).into_owned();
    let _totsize = r.u64("totsize")?;
    let stored = std::path::PathBuf::from(&name);
    let beside = r.dir.zip(stored.file_name()).map(|(d, f)| d.join(f));
    let path = if stored.is_file() {
        stored
    } else if let Some(p) = beside.filter(|p| p.is_file()) {
        p
    } else {
        return Err(Error::format(
            r.label,
            format!(
                "Faiss index: its on-disk inverted lists `{name}` are not found (nor beside the index)"
            ),
        ));
    };
    let check = |i: usize, size: u64, cap: u64, off: u64, len: u64| -> Result<()> {
        let span = cap
            .checked_mul(code_size.saturating_add(8))
            .and_then(|b| b.checked_add(off));
        if size > cap || span.is_none_or(|end| end > len) {
            return Err(Error::format(
                &path,
                format!(
                    "Faiss on-disk list {i}: {size} of {cap} entries at byte {off} exceed the file's {len} bytes"
                ),
            ));
        }
        Ok(())
    };
    // The data file is mapped (as Faiss always does).
    let bytes = SharedBytes::map_file(&path)?;
    let len = bytes.len() as u64;
    let mut spans = Vec::with_capacity(nlist as usize);
    for (i, rec) in records.chunks_exact(3).enumerate() {
        let (size, cap, off) = (rec[0] as u64, rec[1] as u64, rec[2] as u64);
        if size == 0 {
            spans.push(Span {
                n: 0,
                codes_at: 0,
                ids_at: 0,
            });
            continue;
        }
        check(i, size, cap, off, len)?;
        spans.push(Span {
            n: size,
            codes_at: off,
            ids_at: off + cap * code_size,
        });
    }
    Ok(Lists::Mapped {
        code_size,
        file: MappedFile { bytes, path },
        spans,
    })
}

fn read_graph(r: &mut Reader<'_>) -> Result<Graph> {
    let assign_probas = r.vec_f64("assign_probas")?;
    let cum_nneighbor_per_level = r.vec_i32("cum_nneighbor_per_level")?;
    let levels = r.vec_i32("levels")?;
    let offsets = r.vec_u64("offsets")?;
    let neighbors = r.vec_i32("neighbors")?;
    Ok(Graph {
        assign_probas,
        cum_nneighbor_per_level,
        levels,
        offsets,
        neighbors,
        entry_point: r.i32("entry_point")?,
        max_level: r.i32("max_level")?,
        ef_construction: r.i32("efConstruction")?,
        ef_search: {
            let v = r.i32("efSearch")?;
            let _upper_beam = r.i32("upper_beam")?;
            v
        },
    })
}

/// Reads one index (recursively: id maps, transforms, quantizers, storages).
pub(crate) fn read_node(r: &mut Reader<'_>) -> Result<Node> {
    if r.depth >= MAX_DEPTH {
        return Err(r.bad(format!("indexes nested deeper than {MAX_DEPTH}")));
    }
    r.depth += 1;
    let node = read_node_inner(r);
    r.depth -= 1;
    node
}

fn read_node_inner(r: &mut Reader<'_>) -> Result<Node> {
    let at = r.pos();
    let h = r.u32("index tag")?;
    let t = |s: &[u8; 4]| h == fourcc(s);
    if t(b"IxF2") || t(b"IxFI") {
        let hd = read_header(r)?;
        // Faiss writes the floats as a count of 4-byte words then the bytes.
        let n = r.count("codes")?;
        let xb = r.f32s(n, "stored vectors")?;
        let want_metric = if t(b"IxF2") { 1 } else { 0 };
        if hd.metric != want_metric {
            return Err(r.bad(format!("{} with metric {}", tag_name(h), hd.metric)));
        }
        return Ok(Node::Flat { h: hd, xb });
    }
    if t(b"IxMp") || t(b"IxM2") {
        let hd = read_header(r)?;
        let inner = Box::new(read_node(r)?);
        let ids = r.vec_i64("id_map")?;
        return Ok(Node::IdMap {
            map2: t(b"IxM2"),
            h: hd,
            inner,
            ids,
        });
    }
    if t(b"IxPT") {
        let hd = read_header(r)?;
        let nt = r.i32("chain length")?;
        if !(0..=64).contains(&nt) {
            return Err(r.bad(format!("{nt} transforms")));
        }
        let mut chain = Vec::with_capacity(nt as usize);
        for _ in 0..nt {
            chain.push(read_transform(r)?);
        }
        let inner = Box::new(read_node(r)?);
        return Ok(Node::PreTransform {
            h: hd,
            chain,
            inner,
        });
    }
    if t(b"IxPq") {
        let hd = read_header(r)?;
        let pq = read_pq(r)?;
        let codes = r.vec_u8("codes")?;
        return Ok(Node::Pq {
            h: hd,
            pq,
            codes,
            search_type: r.i32("search_type")?,
            encode_signs: r.bool("encode_signs")?,
            polysemous_ht: r.i32("polysemous_ht")?,
        });
    }
    if t(b"IxSQ") {
        let hd = read_header(r)?;
        let sq = read_sq(r)?;
        let codes = r.vec_u8("codes")?;
        return Ok(Node::Sq { h: hd, sq, codes });
    }
    if t(b"IwFl") {
        let ivf = read_ivf_header(r)?;
        let lists = read_lists(r)?;
        return Ok(Node::IvfFlat { ivf, lists });
    }
    if t(b"IwSq") || t(b"IwSQ") {
        let ivf = read_ivf_header(r)?;
        let sq = read_sq(r)?;
        let code_size = r.u64("code_size")?;
        let by_residual = if t(b"IwSQ") {
            true
        } else {
            r.bool("by_residual")?
        };
        let lists = read_lists(r)?;
        return Ok(Node::IvfSq {
            ivf,
            sq,
            code_size,
            by_residual,
            lists,
        });
    }
    if t(b"IwPQ") {
        let ivf = read_ivf_header(r)?;
        let by_residual = r.bool("by_residual")?;
        let code_size = r.u64("code_size")?;
        let pq = read_pq(r)?;
        let lists = read_lists(r)?;
        return Ok(Node::IvfPq {
            ivf,
            by_residual,
            code_size,
            pq,
            lists,
        });
    }
    if t(b"IwPf") {
        let ivf = read_ivf_header(r)?;
        let by_residual = r.bool("by_residual")?;
        let code_size = r.u64("code_size")?;
        let bbs = r.i32("bbs")?;
        let m2 = r.u64("M2")?;
        let implem = r.i32("implem")?;
        let qbs2 = r.u64("qbs2")?;
        let pq = read_pq(r)?;
        let lists = read_lists(r)?;
        return Ok(Node::IvfPqFastScan {
            ivf,
            by_residual,
            code_size,
            bbs,
            m2,
            implem,
            qbs2,
            pq,
            lists,
        });
    }
    if t(b"IHNf") || t(b"IHNs") || t(b"IHNp") {
        let kind = if t(b"IHNf") {
            HnswKind::Flat
        } else if t(b"IHNs") {
            HnswKind::Sq
        } else {
            HnswKind::Pq
        };
        let hd = read_header(r)?;
        let graph = read_graph(r)?;
        let storage = Box::new(read_node(r)?);
        return Ok(Node::Hnsw {
            kind,
            h: hd,
            graph,
            storage,
        });
    }
    if t(b"IPfs") {
        let hd = read_header(r)?;
        let pq = read_pq(r)?;
        return Ok(Node::PqFastScan {
            h: hd,
            pq,
            implem: r.i32("implem")?,
            bbs: r.i32("bbs")?,
            qbs: r.i32("qbs")?,
            ntotal2: r.u64("ntotal2")?,
            m2: r.u64("M2")?,
            codes: r.vec_u8("codes")?,
        });
    }
    if t(b"IxRF") {
        let hd = read_header(r)?;
        let base = Box::new(read_node(r)?);
        let refine = Box::new(read_node(r)?);
        let k_factor = r.f32("k_factor")?;
        return Ok(Node::Refine {
            h: hd,
            base,
            refine,
            k_factor,
        });
    }
    if t(b"Imiq") {
        let hd = read_header(r)?;
        let pq = read_pq(r)?;
        return Ok(Node::Imi { h: hd, pq });
    }
    r.pos = at;
    let known = known_name(h);
    Err(Error::not_supported(
        "read",
        format!(
            "Faiss index type {}{} at byte {at}: vq reads IndexFlat, IndexIDMap(2), \
             IndexPreTransform, IndexPQ, IndexScalarQuantizer, IndexIVFFlat, \
             IndexIVFScalarQuantizer, IndexIVFPQ, IndexIVFPQFastScan, IndexHNSWFlat/SQ/PQ, \
             IndexPQFastScan, IndexRefine and MultiIndexQuantizer",
            tag_name(h),
            known.map(|k| format!(" ({k})")).unwrap_or_default()
        ),
    ))
}

/// Faiss's class for tags vq does not read, to make the refusal clear.
fn known_name(h: u32) -> Option<&'static str> {
    const NAMES: &[(&[u8; 4], &str)] = &[
        (b"IxFl", "IndexFlat with another metric"),
        (b"IxFP", "IndexFlatPanorama"),
        (b"IxFp", "IndexFlatPanorama"),
        (b"IxHe", "IndexLSH"),
        (b"IxHE", "IndexLSH"),
        (b"IxPQ", "IndexPQ (legacy)"),
        (b"IxPo", "IndexPQ (legacy)"),
        (b"IxRq", "IndexResidualQuantizer"),
        (b"IxRQ", "IndexResidualQuantizer"),
        (b"IxLS", "IndexLocalSearchQuantizer"),
        (b"IxPR", "IndexProductResidualQuantizer"),
        (b"IxPL", "IndexProductLocalSearchQuantizer"),
        (b"ImRQ", "ResidualCoarseQuantizer"),
        (b"Ix2L", "Index2Layer"),
        (b"IxLa", "IndexLattice"),
        (b"IwFd", "IndexIVFFlatDedup"),
        (b"IwP2", "IndexIVFFlatPanorama"),
        (b"IvFl", "IndexIVFFlat (legacy)"),
        (b"IvFL", "IndexIVFFlat (legacy)"),
        (b"IvSQ", "IndexIVFScalarQuantizer (legacy)"),
        (b"IvPQ", "IndexIVFPQ (legacy)"),
        (b"IvQR", "IndexIVFPQR (legacy)"),
        (b"IwQR", "IndexIVFPQR"),
        (b"IwLS", "IndexIVFLocalSearchQuantizer"),
        (b"IwRQ", "IndexIVFResidualQuantizer"),
        (b"IwPL", "IndexIVFProductLocalSearchQuantizer"),
        (b"IwPR", "IndexIVFProductResidualQuantizer"),
        (b"IwSh", "IndexIVFSpectralHash"),
        (b"IwIQ", "IndexIVFIndependentQuantizer"),
        (b"IHN2", "IndexHNSW2Level"),
        (b"IHNc", "IndexHNSWCagra"),
        (b"IHc2", "IndexHNSWCagra"),
        (b"IHfP", "IndexHNSWFlatPanorama"),
        (b"IH00", "IndexHNSW"),
        (b"INSf", "IndexNSGFlat"),
        (b"INSp", "IndexNSGPQ"),
        (b"INSs", "IndexNSGSQ"),
        (b"INNf", "IndexNNDescentFlat"),
        (b"IRMf", "IndexRowwiseMinMax"),
        (b"IRMh", "IndexRowwiseMinMaxFP16"),
        (b"IxRP", "IndexRefinePanorama"),
        (b"ILfs", "IndexLocalSearchQuantizerFastScan"),
        (b"IRfs", "IndexResidualQuantizerFastScan"),
        (b"IVLf", "IndexIVFLocalSearchQuantizerFastScan"),
        (b"IVRf", "IndexIVFResidualQuantizerFastScan"),
        (b"Ixrq", "IndexRaBitQ"),
        (b"Ixrr", "IndexRaBitQ"),
        (b"Iwrq", "IndexIVFRaBitQ"),
        (b"Iwrr", "IndexIVFRaBitQ"),
        (b"Irfn", "IndexRaBitQFastScan"),
        (b"IxEe", "IndexEDEN"),
        (b"IwEe", "IndexIVFEDEN"),
        (b"null", "a null index"),
    ];
    NAMES.iter().find(|(t, _)| fourcc(t) == h).map(|(_, n)| *n)
}

/// Parses a whole Faiss file (one index, nothing after it); on-disk inverted lists are
/// looked for where the file names them, then in `dir` (the index file's folder).
pub(crate) fn parse(file: &MappedFile, label: &str) -> Result<Node> {
    let mut r = Reader::new(file, label);
    let node = read_node(&mut r)?;
    if r.remaining() != 0 {
        return Err(r.bad(format!("{} bytes after the index", r.remaining())));
    }
    Ok(node)
}

// ---------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------

/// Appends Faiss's encoding of values to a byte buffer.
#[derive(Default)]
pub(crate) struct Writer {
    pub out: Vec<u8>,
}

impl Writer {
    fn tag(&mut self, s: &[u8; 4]) {
        self.out.extend_from_slice(s);
    }
    fn u8(&mut self, v: u8) {
        self.out.push(v);
    }
    fn bool(&mut self, v: bool) {
        self.out.push(u8::from(v));
    }
    fn i32(&mut self, v: i32) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn f32(&mut self, v: f32) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn f32s(&mut self, v: &[f32]) {
        self.out.extend_from_slice(&le_bytes(v, f32::to_le_bytes));
    }
    fn vec_f32(&mut self, v: &[f32]) {
        self.u64(v.len() as u64);
        self.f32s(v);
    }
    fn vec_u8(&mut self, v: &[u8]) {
        self.u64(v.len() as u64);
        self.out.extend_from_slice(v);
    }
    fn i64s(&mut self, v: &[i64]) {
        self.out.extend_from_slice(&le_bytes(v, i64::to_le_bytes));
    }
    fn vec_i64(&mut self, v: &[i64]) {
        self.u64(v.len() as u64);
        self.i64s(v);
    }
    fn vec_i32(&mut self, v: &[i32]) {
        self.u64(v.len() as u64);
        self.out.extend_from_slice(&le_bytes(v, i32::to_le_bytes));
    }
    fn vec_u64(&mut self, v: &[u64]) {
        self.u64(v.len() as u64);
        self.out.extend_from_slice(&le_bytes(v, u64::to_le_bytes));
    }
    fn vec_f64(&mut self, v: &[f64]) {
        self.u64(v.len() as u64);
        for x in v {
            self.out.extend_from_slice(&x.to_le_bytes());
        }
    }
}

fn write_header(w: &mut Writer, h: &Header) {
    w.i32(h.d);
    w.i64(h.ntotal);
    w.i64(1 << 20);
    w.i64(1 << 20);
    w.bool(h.is_trained);
    w.i32(h.metric);
    if h.metric > 1 {
        w.f32(h.metric_arg);
    }
}

fn write_pq(w: &mut Writer, pq: &Pq) {
    w.u64(pq.d);
    w.u64(pq.m);
    w.u64(pq.nbits);
    w.vec_f32(&pq.centroids);
}

fn write_sq(w: &mut Writer, sq: &Sq) {
    w.i32(sq.qtype);
    w.i32(sq.rangestat);
    w.f32(sq.rangestat_arg);
    w.u64(sq.d);
    w.u64(sq.code_size);
    w.vec_f32(&sq.trained);
}

fn write_transform(w: &mut Writer, t: &Transform) {
    match t {
        Transform::Linear {
            kind,
            have_bias,
            a,
            b,
            d_in,
            d_out,
            is_trained,
        } => {
            match kind {
                LinearKind::Generic => w.tag(b"LTra"),
                LinearKind::RandomRotation => w.tag(b"rrot"),
                LinearKind::Pca {
                    eigen_power,
                    epsilon,
                    random_rotation,
                    balanced_bins,
                    mean,
                    eigenvalues,
                    pca_mat,
                } => {
                    w.tag(b"Pcam");
                    w.f32(*eigen_power);
                    w.f32(*epsilon);
                    w.bool(*random_rotation);
                    w.i32(*balanced_bins);
                    w.vec_f32(mean);
                    w.vec_f32(eigenvalues);
                    w.vec_f32(pca_mat);
                }
            }
            w.bool(*have_bias);
            w.vec_f32(a);
            w.vec_f32(b);
            w.i32(*d_in);
            w.i32(*d_out);
            w.bool(*is_trained);
        }
        Transform::Norm {
            norm,
            d_in,
            d_out,
            is_trained,
        } => {
            w.tag(b"VNrm");
            w.f32(*norm);
            w.i32(*d_in);
            w.i32(*d_out);
            w.bool(*is_trained);
        }
    }
}

fn write_ivf_header(w: &mut Writer, ivf: &IvfHeader) {
    write_header(w, &ivf.h);
    w.u64(ivf.nlist);
    w.u64(ivf.nprobe);
    write_node(w, &ivf.quantizer);
    w.u8(ivf.direct_map.kind);
    w.vec_i64(&ivf.direct_map.array);
    if ivf.direct_map.kind == 2 {
        w.u64(ivf.direct_map.hashtable.len() as u64);
        for &(a, b) in &ivf.direct_map.hashtable {
            w.i64(a);
            w.i64(b);
        }
    }
}

fn write_lists(w: &mut Writer, l: &Lists) {
    match l {
        Lists::Array { code_size, lists } => {
            w.tag(b"ilar");
            w.u64(lists.len() as u64);
            w.u64(*code_size);
            // Faiss's rule: a full size table when more than half the lists are used.
            let used = lists.iter().filter(|(ids, _)| !ids.is_empty()).count();
            if used > lists.len() / 2 {
                w.tag(b"full");
                let sizes: Vec<u64> = lists.iter().map(|(ids, _)| ids.len() as u64).collect();
                w.vec_u64(&sizes);
            } else {
                w.tag(b"sprs");
                let mut pairs = Vec::with_capacity(2 * used);
                for (i, (ids, _)) in lists.iter().enumerate() {
                    if !ids.is_empty() {
                        pairs.push(i as u64);
                        pairs.push(ids.len() as u64);
                    }
                }
                w.vec_u64(&pairs);
            }
            for (ids, codes) in lists {
                if !ids.is_empty() {
                    w.out.extend_from_slice(codes);
                    w.i64s(ids);
                }
            }
        }
        Lists::Mapped {
            code_size,
            file,
            spans,
        } => {
            // Written as Faiss's in-file lists, copied from the mapped file.
            let b = file.bytes.as_bytes();
            let cs = *code_size as usize;
            let lists: Vec<(Vec<i64>, Vec<u8>)> = spans
                .iter()
                .map(|s| {
                    let (n, c, i) = (s.n as usize, s.codes_at as usize, s.ids_at as usize);
                    (
                        le_vec(&b[i..i + 8 * n], i64::from_le_bytes),
                        b[c..c + n * cs].to_vec(),
                    )
                })
                .collect();
            write_lists(
                w,
                &Lists::Array {
                    code_size: *code_size,
                    lists,
                },
            );
        }
        Lists::Block {
            code_size,
            n_per_block,
            block_size,
            lists,
        } => {
            w.tag(b"ilbl");
            w.u64(lists.len() as u64);
            w.u64(*code_size);
            w.u64(*n_per_block);
            w.u64(*block_size);
            for (ids, codes) in lists {
                w.vec_i64(ids);
                w.vec_u8(codes);
            }
        }
    }
}

fn write_graph(w: &mut Writer, g: &Graph) {
    w.vec_f64(&g.assign_probas);
    w.vec_i32(&g.cum_nneighbor_per_level);
    w.vec_i32(&g.levels);
    w.vec_u64(&g.offsets);
    w.vec_i32(&g.neighbors);
    w.i32(g.entry_point);
    w.i32(g.max_level);
    w.i32(g.ef_construction);
    w.i32(g.ef_search);
    w.i32(1); // upper_beam, which Faiss writes and ignores
}

/// Appends one index (recursively).
pub(crate) fn write_node(w: &mut Writer, n: &Node) {
    match n {
        Node::Flat { h, xb } => {
            w.tag(if h.metric == 0 { b"IxFI" } else { b"IxF2" });
            write_header(w, h);
            w.vec_f32(xb);
        }
        Node::IdMap {
            map2,
            h,
            inner,
            ids,
        } => {
            w.tag(if *map2 { b"IxM2" } else { b"IxMp" });
            write_header(w, h);
            write_node(w, inner);
            w.vec_i64(ids);
        }
        Node::PreTransform { h, chain, inner } => {
            w.tag(b"IxPT");
            write_header(w, h);
            w.i32(chain.len() as i32);
            for t in chain {
                write_transform(w, t);
            }
            write_node(w, inner);
        }
        Node::Pq {
            h,
            pq,
            codes,
            search_type,
            encode_signs,
            polysemous_ht,
        } => {
            w.tag(b"IxPq");
            write_header(w, h);
            write_pq(w, pq);
            w.vec_u8(codes);
            w.i32(*search_type);
            w.bool(*encode_signs);
            w.i32(*polysemous_ht);
        }
        Node::Sq { h, sq, codes } => {
            w.tag(b"IxSQ");
            write_header(w, h);
            write_sq(w, sq);
            w.vec_u8(codes);
        }
        Node::IvfFlat { ivf, lists } => {
            w.tag(b"IwFl");
            write_ivf_header(w, ivf);
            write_lists(w, lists);
        }
        Node::IvfSq {
            ivf,
            sq,
            code_size,
            by_residual,
            lists,
        } => {
            w.tag(b"IwSq");
            write_ivf_header(w, ivf);
            write_sq(w, sq);
            w.u64(*code_size);
            w.bool(*by_residual);
            write_lists(w, lists);
        }
        Node::IvfPq {
            ivf,
            by_residual,
            code_size,
            pq,
            lists,
        } => {
            w.tag(b"IwPQ");
            write_ivf_header(w, ivf);
            w.bool(*by_residual);
            w.u64(*code_size);
            write_pq(w, pq);
            write_lists(w, lists);
        }
        Node::IvfPqFastScan {
            ivf,
            by_residual,
            code_size,
            bbs,
            m2,
            implem,
            qbs2,
            pq,
            lists,
        } => {
            w.tag(b"IwPf");
            write_ivf_header(w, ivf);
            w.bool(*by_residual);
            w.u64(*code_size);
            w.i32(*bbs);
            w.u64(*m2);
            w.i32(*implem);
            w.u64(*qbs2);
            write_pq(w, pq);
            write_lists(w, lists);
        }
        Node::Hnsw {
            kind,
            h,
            graph,
            storage,
        } => {
            w.tag(match kind {
                HnswKind::Flat => b"IHNf",
                HnswKind::Sq => b"IHNs",
                HnswKind::Pq => b"IHNp",
            });
            write_header(w, h);
            write_graph(w, graph);
            write_node(w, storage);
        }
        Node::PqFastScan {
            h,
            pq,
            implem,
            bbs,
            qbs,
            ntotal2,
            m2,
            codes,
        } => {
            w.tag(b"IPfs");
            write_header(w, h);
            write_pq(w, pq);
            w.i32(*implem);
            w.i32(*bbs);
            w.i32(*qbs);
            w.u64(*ntotal2);
            w.u64(*m2);
            w.vec_u8(codes);
        }
        Node::Refine {
            h,
            base,
            refine,
            k_factor,
        } => {
            w.tag(b"IxRF");
            write_header(w, h);
            write_node(w, base);
            write_node(w, refine);
            w.f32(*k_factor);
        }
        Node::Imi { h, pq } => {
            w.tag(b"Imiq");
            write_header(w, h);
            write_pq(w, pq);
        }
    }
}

/// Faiss's bytes for `node`.
pub(crate) fn serialize(node: &Node) -> Vec<u8> {
    let mut w = Writer::default();
    write_node(&mut w, node);
    w.out
}
