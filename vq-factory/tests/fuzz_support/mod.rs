//! The checks of the fuzz targets, one function per target: each fuzz target
//! (`fuzz/fuzz_targets/<target>.rs`) includes this file with `#[path]` and calls its
//! function on every input, and `tests/fuzz_regressions.rs` calls the same function on
//! every file under `fuzz/regressions/<target>/`, so what a fuzz run found stays fixed in
//! `cargo test`.
//!
//! Every function takes arbitrary bytes, must never panic on them (a panic is a bug found)
//! and returns whether the input was *accepted* (parsed, loaded or read without error),
//! which the regression test requires of the files named `valid-*`.
//!
//! Only `std`, `vq_core` and `vq_factory` are used: the same names resolve in the fuzz
//! crate and in this package's tests.
#![allow(clippy::expect_used)]
// A fuzz target uses one of these functions, the regression test all of them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use vq_core::io::{
    Element, MAX_DIM, MmapBin, MmapVecs, VectorReader, read_bvecs, read_fbin, read_fvecs,
    read_ibin, read_ivecs, read_u8bin, read_vectors,
};
use vq_core::{Index, Metric, SearchParams, SearchResults, Vectors, VectorsRef};
use vq_factory::autotune::Criterion;
use vq_factory::{Factory, FactoryIndex, FactorySpec, faiss_io, index_factory, set_params};

/// `parse`: parsing any string never panics; errors point inside the input (on character
/// boundaries); whatever parses prints to a string that parses back to the same spec.
/// Accepted: the string parses.
pub(crate) fn parse(data: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(data) else {
        return false;
    };
    match FactorySpec::parse(s) {
        Ok(spec) => {
            // (Not built: a random `IVF…` count could ask for any amount of memory.)
            let printed = spec.to_string();
            assert_eq!(FactorySpec::parse(&printed).ok(), Some(spec), "{printed}");
            true
        }
        Err(e) => {
            assert!(e.span.start <= e.span.end, "{:?} in `{s}`", e.span);
            assert!(e.span.end <= s.len(), "{:?} in `{s}`", e.span);
            assert!(s.is_char_boundary(e.span.start) && s.is_char_boundary(e.span.end));
            let _ = e.to_string();
            false
        }
    }
}

/// `load`: loading any bytes as a vq index container never panics (and never allocates
/// without bound): every malformed file is an `Err`. Whatever loads searches without
/// panicking and saves to bytes that load again to the same factory string, dimension
/// and size. Accepted: the bytes load.
pub(crate) fn load(data: &[u8]) -> bool {
    let Ok(index) = Factory::new().load_bytes(data.to_vec()) else {
        return false;
    };
    search_smoke(&index);
    let mut out = Vec::new();
    if index.write_to(&mut out).is_ok() {
        let back = Factory::new()
            .load_bytes(out)
            .unwrap_or_else(|e| panic!("vq does not load what it saved: {e}"));
        assert_eq!(back.describe(), index.describe());
        assert_eq!((back.dim(), back.len()), (index.dim(), index.len()));
    }
    true
}

/// `faiss_read`: reading any bytes as a Faiss index never panics nor allocates beyond the
/// input's size; whatever reads searches without panicking and writes back to bytes that
/// read to the same factory string. Accepted: the bytes read.
pub(crate) fn faiss_read(data: &[u8]) -> bool {
    let Ok(index) = faiss_io::read_index_bytes(data) else {
        return false;
    };
    search_smoke(&index);
    let mut out = Vec::new();
    if faiss_io::write_index_to(&index, &mut out).is_ok() {
        let back = faiss_io::read_index_bytes(&out)
            .unwrap_or_else(|e| panic!("vq does not read the Faiss file it wrote: {e}"));
        assert_eq!(back.spec().to_string(), index.spec().to_string());
    }
    true
}

/// One search of up to 3 neighbours of a constant query: its result does not matter, only
/// that it does not panic.
fn search_smoke(index: &dyn Index) {
    let q = vec![0.5f32; index.dim()];
    if let Ok(q) = VectorsRef::new(&q, index.dim()) {
        let _ = index.search(q, index.len().clamp(1, 3), &SearchParams::default());
    }
}

// ---------------------------------------------------------------------------------------
// params

/// Dimension of the indexes the parameter strings are applied to.
const PARAMS_DIM: usize = 8;
/// Vectors in each of them.
const PARAMS_N: usize = 200;
/// Queries searched.
const PARAMS_NQ: usize = 4;
/// Neighbours per query.
const PARAMS_K: usize = 5;
/// Pipelines covering every search parameter: none, `nprobe`/`max_codes`, `efSearch`,
/// `quantizer_efSearch`, `k_factor_rf` (refinement), and names reaching through a
/// transform.
const PARAMS_SPECS: [&str; 6] = [
    "Flat",
    "IVF4,Flat",
    "HNSW8",
    "IVF4_HNSW8,Flat",
    "IVF4,SQ8,RFlat",
    "PCA4,IVF4,SQ8",
];

/// One trained and filled index of [`PARAMS_SPECS`].
struct ParamsIndex {
    /// Its factory string.
    spec: &'static str,
    /// The index as saved: every input sets parameters on a fresh copy loaded from it.
    saved: Vec<u8>,
    /// A copy with the default parameters, searched with per-call parameters.
    index: FactoryIndex,
    /// Its results for the queries with the default parameters.
    defaults: SearchResults,
}

/// The queries and indexes, built once per process.
struct ParamsSetup {
    queries: Vec<f32>,
    indexes: Vec<ParamsIndex>,
}

/// `n` deterministic vectors of [`PARAMS_DIM`] values in `[0, 1)` (xorshift64*; `seed`
/// must not be 0).
fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n * PARAMS_DIM)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            (s.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect()
}

/// The value of `r`, or a panic naming the index and the step that failed.
fn ok<T>(spec: &str, what: &str, r: vq_core::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{spec}: {what}: {e}"))
}

/// The [`PARAMS_K`] nearest neighbours of `q` (a failed search is a bug: every index of
/// [`PARAMS_SPECS`] holds [`PARAMS_N`] vectors).
fn neighbours(
    index: &dyn Index,
    q: VectorsRef<'_>,
    p: &SearchParams<'_>,
    what: &str,
) -> SearchResults {
    ok(what, "search", index.search(q, PARAMS_K, p))
}

fn params_setup() -> &'static ParamsSetup {
    static SETUP: OnceLock<ParamsSetup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let base = pseudo_random(PARAMS_N, 0x9e37_79b9_7f4a_7c15);
        let queries = pseudo_random(PARAMS_NQ, 0x2545_f491);
        let x = VectorsRef::new(&base, PARAMS_DIM).expect("whole vectors");
        let q = VectorsRef::new(&queries, PARAMS_DIM).expect("whole vectors");
        let indexes = PARAMS_SPECS
            .iter()
            .map(|&spec| {
                let mut built = ok(spec, "build", index_factory(PARAMS_DIM, spec, Metric::L2));
                if !built.is_trained() {
                    ok(spec, "train", built.train(x));
                }
                ok(spec, "add", built.add(x));
                let mut saved = Vec::new();
                ok(spec, "save", built.write_to(&mut saved));
                let index = ok(spec, "load", Factory::new().load_bytes(saved.clone()));
                let defaults = neighbours(&index, q, &SearchParams::default(), spec);
                ParamsIndex {
                    spec,
                    saved,
                    index,
                    defaults,
                }
            })
            .collect();
        ParamsSetup { queries, indexes }
    })
}

/// `params`: parameter strings (`"nprobe=16,efSearch=64,k_factor_rf=4"`) and recall
/// criteria (`"10-recall@10"`) never panic.
///
/// - [`SearchParams::parse`]: what parses prints (`Display`) to a string that parses to
///   the same print, and names the parameters [`SearchParams::names_set`] lists.
/// - [`FactoryIndex::set_params`] and [`set_params`] on a fresh copy of each index of
///   [`PARAMS_SPECS`]: a string that does not parse is refused and changes nothing (the
///   search results stay the defaults'); a string the index takes names only its
///   parameters and searches exactly as the same string passed per call does.
/// - [`Index::set_search_param`] and [`Index::set_build_param`] with the input split at
///   its first `=`, then a search: no panic.
/// - [`Criterion`]: what parses prints to a string that parses to the same criterion.
///
/// Accepted: [`SearchParams::parse`] takes the string.
pub(crate) fn params(data: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(data) else {
        return false;
    };
    criterion(s);
    let parsed = SearchParams::parse(s);
    match &parsed {
        Ok(p) => {
            let printed = p.to_string();
            let again = SearchParams::parse(&printed)
                .unwrap_or_else(|e| panic!("`{printed}` (printed from `{s}`) does not parse: {e}"));
            assert_eq!(again.to_string(), printed, "printed from `{s}`");
            let names: Vec<String> = printed
                .split(',')
                .filter(|x| !x.is_empty())
                .map(|x| x.split_once('=').map_or(x, |(n, _)| n).to_string())
                .collect();
            assert_eq!(names, p.names_set(), "`{printed}` printed from `{s}`");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    let setup = params_setup();
    let q = VectorsRef::new(&setup.queries, PARAMS_DIM).expect("whole vectors");
    for (i, fx) in setup.indexes.iter().enumerate() {
        let spec = fx.spec;
        let mut index = Factory::new()
            .load_bytes(fx.saved.clone())
            .unwrap_or_else(|e| panic!("{spec}: the saved index does not load: {e}"));
        // Both entry points: the method (straight to the pipeline inside) and the free
        // function (through `FactoryIndex`'s own `Index` forwarding).
        let set = if i % 2 == 0 {
            index.set_params(s)
        } else {
            set_params(&mut index, s)
        };
        match (&parsed, &set) {
            (Err(_), Ok(())) => panic!("{spec}: `{s}` was set, but it does not parse"),
            (Err(_), Err(e)) => {
                let _ = e.to_string();
                assert!(
                    neighbours(&index, q, &SearchParams::default(), spec) == fx.defaults,
                    "{spec}: `{s}` was refused, but the results changed"
                );
            }
            (Ok(p), Ok(())) => {
                let known = index.search_param_names();
                for n in p.names_set() {
                    assert!(
                        known.contains(&n)
                            || (n == "k_factor" && known.iter().any(|k| k == "k_factor_rf")),
                        "{spec}: `{s}` set `{n}`, which is not among {known:?}"
                    );
                }
                let resident = neighbours(&index, q, &SearchParams::default(), spec);
                let per_call = neighbours(&fx.index, q, p, spec);
                assert!(
                    resident == per_call,
                    "{spec}: `{s}` searches differently set on the index and per call"
                );
            }
            (Ok(_), Err(e)) => {
                // A name the index does not have, or a value it refuses (e.g. `nprobe`
                // above `nlist`).
                let _ = e.to_string();
            }
        }
        // The per-name setters take any name and value.
        if let Some((name, value)) = s.split_once('=') {
            if let Err(e) = index.set_search_param(name, value) {
                let _ = e.to_string();
            }
            if let Err(e) = index.set_build_param(name, value) {
                let _ = e.to_string();
            }
            let _ = index.search(q, PARAMS_K, &SearchParams::default());
        }
    }
    parsed.is_ok()
}

/// Recall criteria of the auto-tuner: what parses prints back to the same criterion.
fn criterion(s: &str) {
    match s.parse::<Criterion>() {
        Ok(c) => {
            assert!((1..=c.k()).contains(&c.gt_k()), "{c:?} from `{s}`");
            let printed = c.to_string();
            assert_eq!(
                printed.parse::<Criterion>().ok(),
                Some(c),
                "`{printed}` from `{s}`"
            );
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

// ---------------------------------------------------------------------------------------
// vecfiles

/// `vecfiles`: every vector-file reader of `vq_core::io` on the bytes (written to a
/// temporary file, as the readers take paths), read as each of the six formats
/// (`.fvecs`, `.ivecs`, `.bvecs`, `.fbin`, `.ibin`, `.u8bin`) in each of the three ways
/// (whole file, streamed by [`VectorReader`] in batches, memory-mapped by [`MmapVecs`] /
/// [`MmapBin`]), never panics, and agrees with the layout worked out from the bytes alone:
/// a reader opens exactly the files whose header fits their size, reads exactly the
/// well-formed ones, returns `n × d` values (its `len() × dim()`), and those values are
/// the file's bytes. A streamed read of a file with a bad vector header fails in the batch
/// holding it, after returning the vectors before it. [`read_vectors`] returns what the
/// reader its extension names returns.
///
/// Accepted: at least one whole-file reader reads the bytes.
pub(crate) fn vecfiles(data: &[u8]) -> bool {
    let mut file = TempFile::new(data, "fvecs");
    let path = file.path().to_path_buf();
    // Batch sizes vary with the input, from 1 to 7 vectors.
    let batch = 1 + data.len() % 7;
    let mut read = false;

    let lay = Layout::texmex(data, 4);
    let whole = read_fvecs(&path).map(|v| got_vectors("fvecs", &v));
    read |= check_format::<f32>("fvecs", &lay, data, &path, batch, whole);
    let whole = read_ivecs(&path).map(|m| got("ivecs", m.as_slice(), m.len(), m.dim()));
    read |= check_format::<i32>("ivecs", &lay, data, &path, batch, whole);
    let lay = Layout::texmex(data, 1);
    let whole = read_bvecs(&path).map(|m| got("bvecs", m.as_slice(), m.len(), m.dim()));
    read |= check_format::<u8>("bvecs", &lay, data, &path, batch, whole);

    let lay = Layout::bigann(data, 4);
    let whole = read_fbin(&path).map(|v| got_vectors("fbin", &v));
    read |= check_format::<f32>("fbin", &lay, data, &path, batch, whole);
    let whole = read_ibin(&path).map(|m| got("ibin", m.as_slice(), m.len(), m.dim()));
    read |= check_format::<i32>("ibin", &lay, data, &path, batch, whole);
    if let Ok(m) = MmapBin::<f32>::open(&path) {
        let v = m
            .vectors()
            .unwrap_or_else(|e| panic!("fbin (mmap): no view of an open file: {e}"));
        assert_eq!(
            (v.len(), v.dim(), v.as_slice().len()),
            (m.len(), m.dim(), m.len() * m.dim()),
            "fbin (mmap view)"
        );
    }
    let lay = Layout::bigann(data, 1);
    let whole = read_u8bin(&path).map(|m| got("u8bin", m.as_slice(), m.len(), m.dim()));
    read |= check_format::<u8>("u8bin", &lay, data, &path, batch, whole);

    // `read_vectors` picks the reader by extension (and converts bytes to floats).
    for ext in ["fvecs", "bvecs", "fbin", "u8bin"] {
        file.rename(ext);
        let p = file.path();
        let want = match ext {
            "fvecs" => read_fvecs(p),
            "bvecs" => read_bvecs(p).map(|m| m.to_f32()),
            "fbin" => read_fbin(p),
            _ => read_u8bin(p).map(|m| m.to_f32()),
        };
        let want = want.map(|v| got_vectors(ext, &v));
        let have = read_vectors(p).map(|v| got_vectors(ext, &v));
        if let Err(e) = &have {
            let _ = e.to_string();
        }
        assert_eq!(
            want.ok(),
            have.ok(),
            "read_vectors(….{ext}) differs from its reader"
        );
    }
    read
}

/// A file in the temporary directory, removed when dropped. Names hold the process id and
/// a per-process sequence number, so concurrent fuzzers and test threads do not collide.
struct TempFile {
    path: PathBuf,
}

impl TempFile {
    fn new(data: &[u8], ext: &str) -> TempFile {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!("vq-fuzz-vecfiles-{}-{seq}.{ext}", std::process::id());
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, data)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        TempFile { path }
    }

    fn path(&self) -> &Path {
        &self.path
    }

    /// Gives the file the extension `ext`.
    fn rename(&mut self, ext: &str) {
        let to = self.path.with_extension(ext);
        if to != self.path {
            std::fs::rename(&self.path, &to)
                .unwrap_or_else(|e| panic!("cannot rename {}: {e}", self.path.display()));
            self.path = to;
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The element types of vector files, as the little-endian bytes they were read from.
trait LeBytes: Element {
    fn extend_le(values: &[Self], out: &mut Vec<u8>);
}

impl LeBytes for f32 {
    fn extend_le(values: &[f32], out: &mut Vec<u8>) {
        // Bit patterns, NaN payloads included: readers must not convert values.
        for v in values {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

impl LeBytes for i32 {
    fn extend_le(values: &[i32], out: &mut Vec<u8>) {
        for v in values {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

impl LeBytes for u8 {
    fn extend_le(values: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(values);
    }
}

fn le<T: LeBytes>(values: &[T]) -> Vec<u8> {
    let mut out = Vec::with_capacity(std::mem::size_of_val(values));
    T::extend_le(values, &mut out);
    out
}

/// What a reader returned: `n` vectors of dimension `d`, as little-endian bytes.
#[derive(Debug, PartialEq)]
struct Got {
    n: usize,
    d: usize,
    bytes: Vec<u8>,
}

/// `values` as [`Got`], after checking that they are `n × d` values.
fn got<T: LeBytes>(what: &str, values: &[T], n: usize, d: usize) -> Got {
    assert_eq!(
        Some(values.len()),
        n.checked_mul(d),
        "{what}: {} values for {n} vectors of dimension {d}",
        values.len()
    );
    Got {
        n,
        d,
        bytes: le(values),
    }
}

fn got_vectors(what: &str, v: &Vectors) -> Got {
    got(what, v.as_slice(), v.len(), v.dim())
}

/// The layout of a vector file worked out from its bytes alone (the module docs of
/// `vq_core::io`): what every reader must agree with.
struct Layout {
    /// texmex (a dimension before every vector) or BigANN (one `n`, `d` header).
    texmex: bool,
    /// Bytes per value.
    size: usize,
    /// `(n, d)` when the header is valid (`1 ≤ d ≤ MAX_DIM`) and fits the file size: the
    /// file opens.
    shape: Option<(usize, usize)>,
    /// texmex: the first vector whose dimension header is not the first one's.
    first_bad: Option<usize>,
}

fn i32_at(data: &[u8], at: usize) -> Option<i32> {
    let b = data.get(at..at.checked_add(4)?)?;
    Some(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// BigANN: `(n, d)` from the header when `1 ≤ d ≤ MAX_DIM` and `8 + n·d·size` is the file
/// size.
fn bigann_shape(data: &[u8], size: usize) -> Option<(usize, usize)> {
    let n = i32_at(data, 0)? as u32 as usize;
    let d = i32_at(data, 4)? as u32 as usize;
    if !(1..=MAX_DIM).contains(&d) {
        return None;
    }
    let want = n.checked_mul(d * size)?.checked_add(8)?;
    (want == data.len()).then_some((n, d))
}

impl Layout {
    fn texmex(data: &[u8], size: usize) -> Layout {
        let shape = i32_at(data, 0).and_then(|d| {
            let d = usize::try_from(d)
                .ok()
                .filter(|d| (1..=MAX_DIM).contains(d))?;
            let rec = 4 + d * size;
            data.len()
                .is_multiple_of(rec)
                .then_some((data.len() / rec, d))
        });
        let first_bad = shape.and_then(|(n, d)| {
            let rec = 4 + d * size;
            (0..n).find(|&i| i32_at(data, i * rec) != Some(d as i32))
        });
        Layout {
            texmex: true,
            size,
            shape,
            first_bad,
        }
    }

    fn bigann(data: &[u8], size: usize) -> Layout {
        Layout {
            texmex: false,
            size,
            shape: bigann_shape(data, size),
            first_bad: None,
        }
    }

    /// Whether every reader must read the whole file.
    fn well_formed(&self) -> bool {
        self.shape.is_some() && self.first_bad.is_none()
    }

    /// The bytes of vector `i`'s values (the file has a shape).
    fn row<'a>(&self, data: &'a [u8], i: usize) -> &'a [u8] {
        let (_, d) = self.shape.expect("a file with a shape");
        let start = if self.texmex {
            i * (4 + d * self.size) + 4
        } else {
            8 + i * d * self.size
        };
        &data[start..start + d * self.size]
    }

    /// Every vector's values (the file has a shape).
    fn values(&self, data: &[u8]) -> Got {
        let (n, d) = self.shape.expect("a file with a shape");
        Got {
            n,
            d,
            bytes: (0..n).flat_map(|i| self.row(data, i)).copied().collect(),
        }
    }
}

/// Checks one format's three readers (whole file: `whole`, streamed, mapped) against
/// `lay`; `true` when the whole file read.
fn check_format<T: LeBytes>(
    what: &str,
    lay: &Layout,
    data: &[u8],
    path: &Path,
    batch: usize,
    whole: vq_core::Result<Got>,
) -> bool {
    let read = match whole {
        Ok(g) => {
            assert!(
                lay.well_formed(),
                "{what}: read a malformed file as {:?}",
                (g.n, g.d)
            );
            assert!(
                g == lay.values(data),
                "{what}: the values are not the file's"
            );
            true
        }
        Err(e) => {
            assert!(
                !lay.well_formed(),
                "{what}: refused a well-formed file: {e}"
            );
            false
        }
    };
    check_stream::<T>(what, lay, data, path, batch);
    if lay.texmex {
        check_mmap_vecs::<T>(what, lay, data, path);
    } else {
        check_mmap_bin::<T>(what, lay, data, path);
    }
    read
}

/// [`VectorReader`] in batches of `batch`.
fn check_stream<T: LeBytes>(what: &str, lay: &Layout, data: &[u8], path: &Path, batch: usize) {
    let opened = if lay.texmex {
        VectorReader::<T>::open_texmex(path)
    } else {
        VectorReader::<T>::open_bigann(path)
    };
    let mut reader = match opened {
        Ok(r) => r,
        Err(e) => {
            assert!(lay.shape.is_none(), "{what} (stream): refused to open: {e}");
            return;
        }
    };
    let shape = (reader.len(), reader.dim());
    assert_eq!(Some(shape), lay.shape, "{what} (stream): shape at open");
    let (n, d) = shape;
    assert_eq!(reader.is_empty(), n == 0, "{what} (stream)");
    let mut seen = 0;
    loop {
        let want = batch.min(n - seen);
        match reader.next_batch(batch) {
            Ok(Some(m)) => {
                assert!(want > 0, "{what} (stream): a batch after the last vector");
                assert_eq!(
                    (m.len(), m.dim()),
                    (want, d),
                    "{what} (stream): batch shape"
                );
                let g = got(what, m.as_slice(), m.len(), m.dim());
                let rows = (seen..seen + want).flat_map(|i| lay.row(data, i));
                assert!(
                    g.bytes.iter().eq(rows),
                    "{what} (stream): vectors {seen}.. are not the file's"
                );
                seen += want;
            }
            Ok(None) => {
                assert!(
                    want == 0 && lay.first_bad.is_none(),
                    "{what} (stream): ended after {seen} of {n} vectors ({:?} malformed)",
                    lay.first_bad
                );
                break;
            }
            Err(e) => {
                assert!(
                    lay.first_bad
                        .is_some_and(|b| (seen..seen + want).contains(&b)),
                    "{what} (stream): failed reading vectors {seen}..{} (first malformed: \
                     {:?}): {e}",
                    seen + want,
                    lay.first_bad
                );
                break;
            }
        }
    }
}

/// Memory maps are little-endian only: elsewhere they are refused.
const MAPS: bool = cfg!(target_endian = "little");

/// [`MmapVecs`] (texmex).
fn check_mmap_vecs<T: LeBytes>(what: &str, lay: &Layout, data: &[u8], path: &Path) {
    match MmapVecs::<T>::open(path) {
        Ok(m) => {
            assert!(lay.well_formed(), "{what} (mmap): opened a malformed file");
            let (n, d) = (m.len(), m.dim());
            assert_eq!(Some((n, d)), lay.shape, "{what} (mmap): shape");
            assert_eq!(m.is_empty(), n == 0, "{what} (mmap)");
            for i in 0..n {
                let row = m
                    .row(i)
                    .unwrap_or_else(|| panic!("{what} (mmap): no vector {i} of {n}"));
                assert!(le(row) == lay.row(data, i), "{what} (mmap): vector {i}");
            }
            assert!(m.row(n).is_none(), "{what} (mmap): a vector past the end");
            let all = m.to_matrix(0, n);
            let all = got(what, all.as_slice(), all.len(), all.dim());
            assert!(all == lay.values(data), "{what} (mmap): to_matrix(0, n)");
            let tail = m.to_matrix(n / 2, n + 3);
            assert_eq!(
                (tail.len(), tail.dim()),
                (n - n / 2, d),
                "{what} (mmap): clamped"
            );
        }
        Err(e) => {
            let must_open = MAPS && lay.well_formed();
            assert!(!must_open, "{what} (mmap): refused a well-formed file: {e}");
        }
    }
}

/// [`MmapBin`] (BigANN).
fn check_mmap_bin<T: LeBytes>(what: &str, lay: &Layout, data: &[u8], path: &Path) {
    match MmapBin::<T>::open(path) {
        Ok(m) => {
            assert!(lay.well_formed(), "{what} (mmap): opened a malformed file");
            let (n, d) = (m.len(), m.dim());
            assert_eq!(Some((n, d)), lay.shape, "{what} (mmap): shape");
            assert_eq!(m.is_empty(), n == 0, "{what} (mmap)");
            assert!(
                got(what, m.as_slice(), n, d) == lay.values(data),
                "{what} (mmap): values"
            );
        }
        Err(e) => {
            let must_open = MAPS && lay.well_formed();
            assert!(!must_open, "{what} (mmap): refused a well-formed file: {e}");
        }
    }
}
