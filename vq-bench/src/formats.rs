//! Vector files beyond texmex and BigANN: NumPy `.npy` and ann-benchmarks HDF5, and
//! readers that pick the format from the extension.
//!
//! - **`.npy`** (NumPy, read and written through `npyz`): a 2-D array is `n` vectors
//!   of dimension `d`; a 1-D array is one vector. Vectors may be `float32`, `float64`,
//!   `float16`, `uint8` or `int8` (all converted to `f32`); ids (ground truth) `int32`,
//!   `int64`, `uint32` or `uint64`. C order, or Fortran order (transposed on reading);
//!   either byte order.
//! - **ann-benchmarks HDF5** (read and written through the pure-Rust `hdf5-pure`, no C
//!   library): datasets `train` (base), `test` (queries), `neighbors` (ground truth)
//!   and `distances`, and the file attribute `distance` (`euclidean`, `angular`, `dot`).
//!   Contiguous, chunked and compressed (deflate, shuffle, LZF) datasets read alike.
//!
//! Every error names the file and what is wrong with it (dtype, rank, shape, a missing
//! dataset, a truncated file, a NaN): nothing panics and nothing is truncated silently.
//! Vectors are checked to be finite.

use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use npyz::{Order, TypeChar, WriterBuilder};
use vq_core::eval::GroundTruth;
use vq_core::io::{Matrix, read_ibin, read_ivecs, read_vectors};
use vq_core::{Label, Metric, NO_LABEL, Vectors, VectorsRef};

/// Extensions [`read_vectors_any`] reads.
pub(crate) const VECTOR_EXTENSIONS: [&str; 5] = ["fvecs", "bvecs", "fbin", "u8bin", "npy"];

/// Extensions [`read_ids_any`] reads.
pub(crate) const ID_EXTENSIONS: [&str; 3] = ["ivecs", "ibin", "npy"];

/// Extensions of ann-benchmarks HDF5 files.
pub(crate) const HDF5_EXTENSIONS: [&str; 2] = ["hdf5", "h5"];

/// The lower-cased extension of `path` ("" when it has none).
pub(crate) fn extension(path: &Path) -> String {
    path.extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase()
}

fn list(exts: &[&str]) -> String {
    exts.iter()
        .map(|e| format!(".{e}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks that every value is finite, naming the file and the first bad value.
fn check_finite(path: &Path, v: &Vectors) -> Result<()> {
    v.as_ref()
        .check_finite()
        .with_context(|| path.display().to_string())
}

/// Reads float or byte vectors from any supported file, chosen by the extension:
/// `.fvecs`, `.bvecs`, `.fbin`, `.u8bin` (through `vq_core::io`) or `.npy`. Bytes are
/// converted to floats; every value must be finite.
///
/// # Errors
/// An unknown extension (the message lists the supported ones), the reader's errors,
/// a NaN or infinity.
pub(crate) fn read_vectors_any(path: impl AsRef<Path>) -> Result<Vectors> {
    let path = path.as_ref();
    let v = match extension(path).as_str() {
        "fvecs" | "bvecs" | "fbin" | "u8bin" => read_vectors(path)?,
        "npy" => read_npy_vectors(path)?,
        "hdf5" | "h5" => bail!(
            "{}: an HDF5 file holds a whole dataset (train, test, neighbors); pass it as \
             --data, not as a single vector file",
            path.display()
        ),
        _ => bail!(
            "{}: unknown vector file extension (supported: {})",
            path.display(),
            list(&VECTOR_EXTENSIONS)
        ),
    };
    check_finite(path, &v)?;
    Ok(v)
}

/// Reads ground-truth ids from any supported file, chosen by the extension: `.ivecs`,
/// `.ibin` (through `vq_core::io`) or `.npy` (`int32`, `int64`, `uint32`, `uint64`).
/// Ids must be at least `-1` (Faiss's padding).
///
/// # Errors
/// An unknown extension (the message lists the supported ones), the reader's errors, an
/// id below `-1`.
pub(crate) fn read_ids_any(path: impl AsRef<Path>) -> Result<GroundTruth> {
    let path = path.as_ref();
    let gt = match extension(path).as_str() {
        "ivecs" => GroundTruth::from_ivecs(&read_ivecs(path)?),
        "ibin" => GroundTruth::from_ivecs(&read_ibin(path)?),
        "npy" => read_npy_ids(path)?,
        _ => bail!(
            "{}: unknown ground-truth file extension (supported: {})",
            path.display(),
            list(&ID_EXTENSIONS)
        ),
    };
    check_ids(path, &gt)?;
    Ok(gt)
}

/// Ids below `-1` are an error (`-1` pads missing neighbours, as in Faiss).
fn check_ids(path: &Path, gt: &GroundTruth) -> Result<()> {
    for i in 0..gt.nq() {
        if let Some(j) = gt.row(i).iter().position(|&x| x < NO_LABEL) {
            bail!(
                "{}: row {i} holds the id {} (ids must be at least -1)",
                path.display(),
                gt.row(i)[j]
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// NumPy .npy
// ---------------------------------------------------------------------------------

/// The element type of an `.npy` file, as far as this module reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NpyElem {
    F16,
    F32,
    F64,
    U8,
    I8,
    I32,
    I64,
    U32,
    U64,
}

impl NpyElem {
    fn width(self) -> usize {
        match self {
            NpyElem::U8 | NpyElem::I8 => 1,
            NpyElem::F16 => 2,
            NpyElem::F32 | NpyElem::I32 | NpyElem::U32 => 4,
            NpyElem::F64 | NpyElem::I64 | NpyElem::U64 => 8,
        }
    }
}

/// NumPy's name for a type string (`float32` for `<f4`), for messages.
fn numpy_name(tc: TypeChar, size: u64) -> String {
    let bits = size * 8;
    match tc {
        TypeChar::Bool => "bool".to_string(),
        TypeChar::Int => format!("int{bits}"),
        TypeChar::Uint => format!("uint{bits}"),
        TypeChar::Float => format!("float{bits}"),
        TypeChar::Complex => format!("complex{bits}"),
        TypeChar::TimeDelta => "timedelta64".to_string(),
        TypeChar::DateTime => "datetime64".to_string(),
        TypeChar::ByteStr => format!("bytes{size}"),
        TypeChar::UnicodeStr => format!("str{size}"),
        TypeChar::RawData => format!("void{bits}"),
        TypeChar::Object => "object".to_string(),
        _ => format!("kind {tc:?} of {size} bytes"),
    }
}

/// A parsed `.npy` header, with the reader at the first data byte.
struct NpyInput {
    reader: BufReader<File>,
    elem: NpyElem,
    big_endian: bool,
    fortran: bool,
    rows: usize,
    cols: usize,
}

/// Reads and parses the header of an `.npy` file (leaving `reader` at the data), with
/// the checks `npyz` leaves out: a header length beyond the file, a shape whose product
/// overflows (`npyz` would panic on it in debug builds).
fn read_npy_header(
    reader: &mut BufReader<File>,
    path: &Path,
    file_len: u64,
) -> Result<(npyz::NpyHeader, u64)> {
    let invalid = |why: &str| anyhow!("{}: not a valid .npy file ({why})", path.display());
    let mut pre = [0u8; 12];
    let got =
        read_up_to(reader, &mut pre).with_context(|| format!("cannot read {}", path.display()))?;
    if got < 10 || &pre[..6] != b"\x93NUMPY" {
        return Err(invalid("no NumPy magic string"));
    }
    let (len, start) = match pre[6] {
        1 => (u64::from(u16::from_le_bytes([pre[8], pre[9]])), 10u64),
        2 | 3 if got == 12 => (
            u64::from(u32::from_le_bytes([pre[8], pre[9], pre[10], pre[11]])),
            12,
        ),
        2 | 3 => return Err(invalid("truncated in the header")),
        v => return Err(invalid(&format!("unsupported format version {v}"))),
    };
    let end = start + len;
    if end > file_len {
        return Err(invalid(&format!(
            "truncated: the header needs {end} bytes, the file has {file_len}"
        )));
    }
    let mut bytes = pre[..start as usize].to_vec();
    bytes.resize(end as usize, 0);
    reader
        .seek(std::io::SeekFrom::Start(start))
        .and_then(|_| reader.read_exact(&mut bytes[start as usize..]))
        .with_context(|| format!("cannot read {}", path.display()))?;
    if let Some(shape) = shape_text(&bytes[start as usize..]) {
        let dims: Vec<u64> = shape
            .split(',')
            .map(|t| t.trim().trim_end_matches('L'))
            .filter(|t| !t.is_empty())
            .filter_map(|t| t.parse().ok())
            .collect();
        let product = dims
            .iter()
            .filter(|&&d| d != 0)
            .try_fold(1u64, |acc, &d| acc.checked_mul(d));
        if product.is_none() {
            bail!(
                "{}: shape ({shape}) is too large (more than 2^64 values)",
                path.display()
            );
        }
    }
    let header = npyz::NpyHeader::from_reader(&bytes[..]).map_err(|e| invalid(&e.to_string()))?;
    Ok((header, end))
}

/// The text inside the parentheses or brackets after `shape` in a header, if any.
fn shape_text(header: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(header).ok()?;
    let at = text.find("shape")?;
    let rest = &text[at..];
    let open = rest.find(['(', '['])?;
    let close = rest[open..].find([')', ']'])?;
    Some(&rest[open + 1..open + close])
}

/// Reads until `buf` is full or the end of the input; returns how much was read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Opens an `.npy` file, checks its header (dtype among `accept`, rank 1 or 2, no zero
/// extent) and that the file holds exactly the data the header announces.
fn open_npy(path: &Path, accept: &[NpyElem], what: &str) -> Result<NpyInput> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let file_len = f
        .metadata()
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    let mut reader = BufReader::with_capacity(1 << 20, f);
    let (header, data_start) = read_npy_header(&mut reader, path, file_len)?;
    let dtype = header.dtype();
    let ts = match &dtype {
        npyz::DType::Plain(ts) => ts,
        other => bail!(
            "{}: structured dtype {} is not supported for {what} (expected {})",
            path.display(),
            other.descr(),
            accepted_names(accept)
        ),
    };
    let (tc, size) = (ts.type_char(), ts.size_field());
    let elem = match (tc, size) {
        (TypeChar::Float, 2) => Some(NpyElem::F16),
        (TypeChar::Float, 4) => Some(NpyElem::F32),
        (TypeChar::Float, 8) => Some(NpyElem::F64),
        (TypeChar::Uint, 1) => Some(NpyElem::U8),
        (TypeChar::Int, 1) => Some(NpyElem::I8),
        (TypeChar::Int, 4) => Some(NpyElem::I32),
        (TypeChar::Int, 8) => Some(NpyElem::I64),
        (TypeChar::Uint, 4) => Some(NpyElem::U32),
        (TypeChar::Uint, 8) => Some(NpyElem::U64),
        _ => None,
    }
    .filter(|e| accept.contains(e));
    let Some(elem) = elem else {
        bail!(
            "{}: dtype {} ('{ts}') is not supported for {what} (expected {})",
            path.display(),
            numpy_name(tc, size),
            accepted_names(accept)
        );
    };
    let big_endian = ts.endianness() == npyz::Endianness::Big;
    let shape = header.shape();
    let to_usize = |x: u64| {
        usize::try_from(x).map_err(|_| anyhow!("{}: extent {x} is too large", path.display()))
    };
    let (rows, cols) = match shape {
        [d] => (1, to_usize(*d)?),
        [n, d] => (to_usize(*n)?, to_usize(*d)?),
        _ => bail!(
            "{}: a {}-D array of shape {shape:?}; expected 2-D (one row per vector) or 1-D \
             (one vector)",
            path.display(),
            shape.len()
        ),
    };
    if rows == 0 || cols == 0 {
        bail!(
            "{}: the array of shape {shape:?} is empty; expected at least one row of at \
             least one value",
            path.display()
        );
    }
    if cols > vq_core::io::MAX_DIM {
        bail!(
            "{}: dimension {cols} exceeds the largest supported ({})",
            path.display(),
            vq_core::io::MAX_DIM
        );
    }
    let want = (rows as u64)
        .checked_mul(cols as u64)
        .and_then(|v| v.checked_mul(elem.width() as u64));
    let have = file_len.saturating_sub(data_start);
    match want {
        Some(w) if w == have => {}
        Some(w) if w > have => bail!(
            "{}: truncated: shape {shape:?} of {} needs {w} data bytes, the file has {have}",
            path.display(),
            numpy_name(tc, size)
        ),
        Some(w) => bail!(
            "{}: shape {shape:?} of {} needs {w} data bytes, but the file has {have} \
             (trailing bytes)",
            path.display(),
            numpy_name(tc, size)
        ),
        None => bail!(
            "{}: shape {shape:?} is too large (the file has {have} data bytes)",
            path.display()
        ),
    }
    Ok(NpyInput {
        reader,
        elem,
        big_endian,
        fortran: header.order() == Order::Fortran,
        rows,
        cols,
    })
}

fn accepted_names(accept: &[NpyElem]) -> String {
    accept
        .iter()
        .map(|e| match e {
            NpyElem::F16 => "float16",
            NpyElem::F32 => "float32",
            NpyElem::F64 => "float64",
            NpyElem::U8 => "uint8",
            NpyElem::I8 => "int8",
            NpyElem::I32 => "int32",
            NpyElem::I64 => "int64",
            NpyElem::U32 => "uint32",
            NpyElem::U64 => "uint64",
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads `count` values of `width` bytes, converting each with `conv` (which receives
/// the bytes in little-endian order), a block at a time.
fn read_converted<T>(
    input: &mut NpyInput,
    path: &Path,
    mut conv: impl FnMut(&[u8]) -> T,
) -> Result<Vec<T>> {
    let width = input.elem.width();
    let count = input.rows * input.cols;
    let mut out = Vec::new();
    out.try_reserve_exact(count)
        .map_err(|_| anyhow!("{}: cannot allocate {count} values", path.display()))?;
    let block = ((1 << 20) / width).max(1);
    let mut buf = vec![0u8; block.min(count) * width];
    let mut left = count;
    while left > 0 {
        let m = left.min(block);
        let bytes = &mut buf[..m * width];
        input.reader.read_exact(bytes).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                anyhow!("{}: truncated in the data", path.display())
            } else {
                anyhow!("{}: {e}", path.display())
            }
        })?;
        if input.big_endian {
            for c in bytes.chunks_exact_mut(width) {
                c.reverse();
            }
        }
        out.extend(bytes.chunks_exact(width).map(&mut conv));
        left -= m;
    }
    Ok(out)
}

/// Column-major `rows × cols` values to row-major.
fn transpose<T: Copy>(data: Vec<T>, rows: usize, cols: usize) -> Vec<T> {
    if rows == 1 || cols == 1 {
        return data;
    }
    let mut out = Vec::with_capacity(data.len());
    for i in 0..rows {
        out.extend((0..cols).map(|j| data[j * rows + i]));
    }
    out
}

fn le4(c: &[u8]) -> [u8; 4] {
    [c[0], c[1], c[2], c[3]]
}

fn le8(c: &[u8]) -> [u8; 8] {
    [c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]
}

/// Reads an `.npy` file of vectors (`float32`, `float64`, `float16`, `uint8`, `int8`)
/// as `f32`; a 1-D array is one vector. Values are not checked to be finite here (see
/// [`read_vectors_any`]).
///
/// # Errors
/// Another dtype or rank, a zero extent, a file shorter or longer than its header says.
pub(crate) fn read_npy_vectors(path: impl AsRef<Path>) -> Result<Vectors> {
    use NpyElem::*;
    let path = path.as_ref();
    let mut input = open_npy(path, &[F32, F64, F16, U8, I8], "vectors")?;
    let data: Vec<f32> = match input.elem {
        F32 => read_converted(&mut input, path, |c| f32::from_le_bytes(le4(c)))?,
        F64 => read_converted(&mut input, path, |c| f64::from_le_bytes(le8(c)) as f32)?,
        F16 => read_converted(&mut input, path, |c| {
            half::f16::from_le_bytes([c[0], c[1]]).to_f32()
        })?,
        U8 => read_converted(&mut input, path, |c| f32::from(c[0]))?,
        I8 => read_converted(&mut input, path, |c| f32::from(c[0] as i8))?,
        I32 | I64 | U32 | U64 => bail!("invariant: integer dtype refused by open_npy"),
    };
    let (rows, cols) = (input.rows, input.cols);
    let data = if input.fortran {
        transpose(data, rows, cols)
    } else {
        data
    };
    Vectors::new(data, cols).with_context(|| path.display().to_string())
}

/// Reads an `.npy` file of ids (`int32`, `int64`, `uint32`, `uint64`) as ground truth:
/// one row per query; a 1-D array is one row.
///
/// # Errors
/// Another dtype or rank, a zero extent, a file shorter or longer than its header says,
/// a `uint64` id beyond `i64`.
pub(crate) fn read_npy_ids(path: impl AsRef<Path>) -> Result<GroundTruth> {
    use NpyElem::*;
    let path = path.as_ref();
    let mut input = open_npy(path, &[I32, I64, U32, U64], "ids")?;
    let mut too_big = None;
    let ids: Vec<Label> = match input.elem {
        I32 => read_converted(&mut input, path, |c| {
            Label::from(i32::from_le_bytes(le4(c)))
        })?,
        I64 => read_converted(&mut input, path, |c| i64::from_le_bytes(le8(c)))?,
        U32 => read_converted(&mut input, path, |c| {
            Label::from(u32::from_le_bytes(le4(c)))
        })?,
        U64 => read_converted(&mut input, path, |c| {
            let x = u64::from_le_bytes(le8(c));
            Label::try_from(x).unwrap_or_else(|_| {
                too_big.get_or_insert(x);
                Label::MAX
            })
        })?,
        F16 | F32 | F64 | U8 | I8 => bail!("invariant: non-id dtype refused by open_npy"),
    };
    if let Some(x) = too_big {
        bail!("{}: id {x} does not fit a signed 64-bit id", path.display());
    }
    let (rows, cols) = (input.rows, input.cols);
    let ids = if input.fortran {
        transpose(ids, rows, cols)
    } else {
        ids
    };
    GroundTruth::new(ids, cols).with_context(|| path.display().to_string())
}

/// Writes `values` as a C-order `.npy` array of shape `(values.len() / dim, dim)`, with
/// NumPy's default dtype for `T` (`<f4` for `f32`, `|u1` for `u8`, `<i4`, `<i8`...).
///
/// # Errors
/// `dim == 0` or `values` not whole rows; I/O errors.
pub(crate) fn write_npy<T>(path: impl AsRef<Path>, values: &[T], dim: usize) -> Result<()>
where
    T: npyz::AutoSerialize + Copy,
{
    let path = path.as_ref();
    if dim == 0 || !values.len().is_multiple_of(dim) {
        bail!(
            "{}: {} values do not make rows of {dim}",
            path.display(),
            values.len()
        );
    }
    // Atomically, as vq-core's writers: a failed write leaves the old file in place.
    let io = |e: std::io::Error| vq_core::Error::io(path, e);
    vq_core::persist::write_atomic(path, |w| {
        let mut w = npyz::WriteOptions::<T>::new()
            .default_dtype()
            .shape(&[(values.len() / dim) as u64, dim as u64])
            .writer(w)
            .begin_nd()
            .map_err(io)?;
        w.extend(values.iter().copied()).map_err(io)?;
        w.finish().map_err(io)
    })?;
    Ok(())
}

// ---------------------------------------------------------------------------------
// ann-benchmarks HDF5
// ---------------------------------------------------------------------------------

/// The contents of an ann-benchmarks HDF5 file.
#[derive(Debug)]
pub(crate) struct AnnHdf5 {
    /// `train`: the vectors to index.
    pub(crate) train: Vectors,
    /// `test`: the queries.
    pub(crate) test: Vectors,
    /// `neighbors`: the true nearest neighbours of each query, when present.
    pub(crate) neighbors: Option<GroundTruth>,
    /// `distances`: their distances (`test.len() × k`), when present.
    #[allow(dead_code, reason = "read and checked; not needed to measure recall")]
    pub(crate) distances: Option<Matrix<f32>>,
    /// The file attribute `distance` (`euclidean`, `angular`...), when present.
    pub(crate) distance: Option<String>,
}

/// What an ann-benchmarks `distance` name means here: the metric to search with, and
/// whether vectors must be normalised to unit length first (`angular`: cosine is the
/// inner product of unit vectors).
///
/// # Errors
/// A name other than `euclidean`/`l2`, `angular`/`cosine`, `dot`/`ip`/`inner_product`.
pub(crate) fn metric_for_distance(name: &str) -> Result<(Metric, bool)> {
    match name.trim().to_ascii_lowercase().as_str() {
        "euclidean" | "l2" => Ok((Metric::L2, false)),
        "angular" | "cosine" => Ok((Metric::InnerProduct, true)),
        "dot" | "ip" | "inner_product" | "innerproduct" => Ok((Metric::InnerProduct, false)),
        other => bail!(
            "unsupported distance `{other}` (supported: euclidean/l2, angular/cosine, \
             dot/ip/inner_product)"
        ),
    }
}

/// Scales every vector to unit length (for cosine similarity) with vq-core's
/// normaliser; zero vectors stay zero.
pub(crate) fn normalize_rows(v: &mut Vectors) {
    let d = v.dim();
    vq_core::L2Normalize::normalize_in_place(v.as_mut_slice(), d);
}

fn h5_err(path: &Path, e: hdf5_pure::Error) -> anyhow::Error {
    anyhow!("{}: {e}", path.display())
}

/// A hint for the one known gap of the HDF5 reader.
fn h5_hint(e: &hdf5_pure::Error) -> &'static str {
    if e.to_string().contains("layout version: 5") {
        " (a compressed dataset written by HDF5 2.x with libver=\"latest\", which this \
         reader cannot decode yet; rewrite it with h5py's default libver or `h5repack`)"
    } else {
        ""
    }
}

/// The dataset `name`, or an error listing the datasets the file has.
fn h5_dataset(
    file: &hdf5_pure::File,
    path: &Path,
    name: &str,
) -> Result<Option<hdf5_pure::Dataset>> {
    let names = file.root().datasets().map_err(|e| h5_err(path, e))?;
    if !names.iter().any(|n| n == name) {
        return Ok(None);
    }
    file.dataset(name)
        .map(Some)
        .map_err(|e| anyhow!("{}: dataset `{name}`: {e}", path.display()))
}

/// The 2-D (or 1-D: one row) shape of dataset `name`, as (rows, cols), both non-zero.
fn h5_shape(ds: &hdf5_pure::Dataset, path: &Path, name: &str) -> Result<(usize, usize)> {
    let shape = ds
        .shape()
        .map_err(|e| anyhow!("{}: dataset `{name}`: {e}", path.display()))?;
    let to_usize = |x: u64| {
        usize::try_from(x).map_err(|_| {
            anyhow!(
                "{}: dataset `{name}`: extent {x} is too large",
                path.display()
            )
        })
    };
    let (rows, cols) = match shape.as_slice() {
        [d] => (1, to_usize(*d)?),
        [n, d] => (to_usize(*n)?, to_usize(*d)?),
        _ => bail!(
            "{}: dataset `{name}` has {} dimensions (shape {shape:?}); expected 2",
            path.display(),
            shape.len()
        ),
    };
    if rows == 0 || cols == 0 {
        bail!(
            "{}: dataset `{name}` is empty (shape {shape:?})",
            path.display()
        );
    }
    let count = rows.checked_mul(cols).with_context(|| {
        format!(
            "{}: dataset `{name}`: shape {shape:?} is too large",
            path.display()
        )
    })?;
    let file_len = std::fs::metadata(path).map_or(u64::MAX, |m| m.len());
    check_extent(count, file_len)
        .with_context(|| format!("{}: dataset `{name}` (shape {shape:?})", path.display()))?;
    Ok((rows, cols))
}

/// Refuses, before anything is allocated, a dataset of `count` values that a file of
/// `file_len` bytes cannot hold: every element takes at least one byte, and deflate stores
/// at most ~1,032 bytes per byte of file.
fn check_extent(count: usize, file_len: u64) -> Result<()> {
    if count as u64 > file_len.saturating_mul(1100) {
        bail!("{count} values cannot be stored in a file of {file_len} bytes");
    }
    Ok(())
}

/// Checks that a read returned exactly `rows × cols` values.
fn h5_check_len<T>(
    data: Vec<T>,
    rows: usize,
    cols: usize,
    path: &Path,
    name: &str,
) -> Result<Vec<T>> {
    if data.len() != rows * cols {
        bail!(
            "{}: dataset `{name}` of shape [{rows}, {cols}] gave {} values",
            path.display(),
            data.len()
        );
    }
    Ok(data)
}

/// Reads a float (`f32`, `f64`) or byte (`u8`, `i8`) dataset as vectors.
fn h5_vectors(file: &hdf5_pure::File, path: &Path, name: &str) -> Result<Vectors> {
    let ds = h5_dataset(file, path, name)?.with_context(|| {
        format!(
            "{}: no `{name}` dataset (an ann-benchmarks file has `train`, `test`, \
             `neighbors`, `distances`; this one has: {})",
            path.display(),
            file.root()
                .datasets()
                .map(|d| d.join(", "))
                .unwrap_or_default()
        )
    })?;
    let (rows, cols) = h5_shape(&ds, path, name)?;
    let ctx =
        |e: hdf5_pure::Error| anyhow!("{}: dataset `{name}`: {e}{}", path.display(), h5_hint(&e));
    let data: Vec<f32> = match ds.dtype().map_err(ctx)? {
        hdf5_pure::DType::F32 => ds.read_f32().map_err(ctx)?,
        hdf5_pure::DType::F64 => ds
            .read_f64()
            .map_err(ctx)?
            .into_iter()
            .map(|x| x as f32)
            .collect(),
        hdf5_pure::DType::U8 => ds
            .read_u8()
            .map_err(ctx)?
            .into_iter()
            .map(f32::from)
            .collect(),
        hdf5_pure::DType::I8 => ds
            .read_i8()
            .map_err(ctx)?
            .into_iter()
            .map(f32::from)
            .collect(),
        other => bail!(
            "{}: dataset `{name}` has dtype {other}; expected float32, float64, uint8 or int8",
            path.display()
        ),
    };
    let data = h5_check_len(data, rows, cols, path, name)?;
    let v = Vectors::new(data, cols).with_context(|| format!("{}: `{name}`", path.display()))?;
    v.as_ref()
        .check_finite()
        .with_context(|| format!("{}: dataset `{name}`", path.display()))?;
    Ok(v)
}

/// Reads an integer dataset as ground-truth ids.
fn h5_ids(ds: &hdf5_pure::Dataset, path: &Path, name: &str) -> Result<GroundTruth> {
    let (rows, cols) = h5_shape(ds, path, name)?;
    let ctx =
        |e: hdf5_pure::Error| anyhow!("{}: dataset `{name}`: {e}{}", path.display(), h5_hint(&e));
    let ids: Vec<Label> = match ds.dtype().map_err(ctx)? {
        hdf5_pure::DType::I32 => ds
            .read_i32()
            .map_err(ctx)?
            .into_iter()
            .map(Label::from)
            .collect(),
        hdf5_pure::DType::I64 => ds.read_i64().map_err(ctx)?,
        hdf5_pure::DType::U32 => ds
            .read_u32()
            .map_err(ctx)?
            .into_iter()
            .map(Label::from)
            .collect(),
        hdf5_pure::DType::U64 => ds
            .read_u64()
            .map_err(ctx)?
            .into_iter()
            .map(|x| {
                Label::try_from(x).map_err(|_| {
                    anyhow!(
                        "{}: dataset `{name}`: id {x} does not fit a signed 64-bit id",
                        path.display()
                    )
                })
            })
            .collect::<Result<_>>()?,
        other => bail!(
            "{}: dataset `{name}` has dtype {other}; expected int32, int64, uint32 or uint64",
            path.display()
        ),
    };
    let ids = h5_check_len(ids, rows, cols, path, name)?;
    let gt =
        GroundTruth::new(ids, cols).with_context(|| format!("{}: `{name}`", path.display()))?;
    check_ids(path, &gt).with_context(|| format!("dataset `{name}`"))?;
    Ok(gt)
}

/// A string attribute's value, whichever string encoding the writer chose.
fn attr_string(v: &hdf5_pure::AttrValue) -> Option<String> {
    use hdf5_pure::AttrValue as A;
    if let Some(s) = v.as_str() {
        return Some(s.to_string());
    }
    match v {
        A::String(s) | A::AsciiString(s) | A::VarLenString(s) | A::VarLenAsciiString(s) => {
            Some(s.clone())
        }
        A::StringArray(a)
        | A::AsciiStringArray(a)
        | A::VarLenStringArray(a)
        | A::VarLenAsciiStringArray(a)
            if a.len() == 1 =>
        {
            Some(a[0].clone())
        }
        // h5py stores `numpy.bytes_` as fixed-width bytes, sometimes as u8 arrays.
        A::U8Array(b) => String::from_utf8(b.clone())
            .ok()
            .map(|s| s.trim_end_matches('\0').to_string()),
        _ => None,
    }
}

/// Reads an ann-benchmarks HDF5 file: `train` and `test` (required, same dimension),
/// `neighbors` and `distances` (optional, one row per test vector), and the `distance`
/// attribute (optional). Works on what h5py writes: contiguous or chunked, compressed
/// or not.
///
/// # Errors
/// Not an HDF5 file or a damaged one; a missing `train`/`test`; a wrong dtype or rank;
/// shapes that disagree; a NaN or infinity in the vectors; a non-string `distance`.
pub(crate) fn read_ann_hdf5(path: impl AsRef<Path>) -> Result<AnnHdf5> {
    let path = path.as_ref();
    if !path.is_file() {
        bail!("{}: no such file", path.display());
    }
    let is_hdf5 =
        hdf5_pure::is_hdf5(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !is_hdf5 {
        bail!("{}: not an HDF5 file (no HDF5 signature)", path.display());
    }
    // Streaming: metadata and chunks are read on demand, so the file is not held in
    // memory beside the vectors read from it.
    let file = hdf5_pure::File::open_streaming(path).map_err(|e| h5_err(path, e))?;
    let sb = file.superblock();
    let need = sb.base_address.get().saturating_add(sb.eof_address);
    if file.file_size() < need {
        bail!(
            "{}: truncated: the superblock says the file ends at byte {need}, it has {} bytes",
            path.display(),
            file.file_size()
        );
    }
    let train = h5_vectors(&file, path, "train")?;
    let test = h5_vectors(&file, path, "test")?;
    if test.dim() != train.dim() {
        bail!(
            "{}: `test` vectors have dimension {} but `train` vectors {}",
            path.display(),
            test.dim(),
            train.dim()
        );
    }
    let neighbors = match h5_dataset(&file, path, "neighbors")? {
        Some(ds) => Some(h5_ids(&ds, path, "neighbors")?),
        None => None,
    };
    if let Some(g) = &neighbors
        && g.nq() != test.len()
    {
        bail!(
            "{}: `neighbors` has {} rows but `test` has {} vectors",
            path.display(),
            g.nq(),
            test.len()
        );
    }
    let distances = match h5_dataset(&file, path, "distances")? {
        Some(ds) => {
            let (rows, cols) = h5_shape(&ds, path, "distances")?;
            let ctx = |e: hdf5_pure::Error| {
                anyhow!(
                    "{}: dataset `distances`: {e}{}",
                    path.display(),
                    h5_hint(&e)
                )
            };
            let data = match ds.dtype().map_err(ctx)? {
                hdf5_pure::DType::F32 => ds.read_f32().map_err(ctx)?,
                hdf5_pure::DType::F64 => ds
                    .read_f64()
                    .map_err(ctx)?
                    .into_iter()
                    .map(|x| x as f32)
                    .collect(),
                other => bail!(
                    "{}: dataset `distances` has dtype {other}; expected float32 or float64",
                    path.display()
                ),
            };
            let data = h5_check_len(data, rows, cols, path, "distances")?;
            if rows != test.len() {
                bail!(
                    "{}: `distances` has {rows} rows but `test` has {} vectors",
                    path.display(),
                    test.len()
                );
            }
            if let Some(g) = &neighbors
                && g.k() != cols
            {
                bail!(
                    "{}: `distances` has {cols} columns but `neighbors` {}",
                    path.display(),
                    g.k()
                );
            }
            Some(Matrix::new(data, cols).with_context(|| path.display().to_string())?)
        }
        None => None,
    };
    let root = file.root();
    let attrs = root.attrs().map_err(|e| h5_err(path, e))?;
    let distance = match attrs.get("distance") {
        Some(v) => Some(attr_string(v).with_context(|| {
            format!(
                "{}: the `distance` attribute is not a string ({v:?})",
                path.display()
            )
        })?),
        // `attrs` leaves out what it cannot decode: an attribute that is there but
        // unreadable must not pass for an absent one.
        None if root
            .attr_datatypes()
            .map_err(|e| h5_err(path, e))?
            .contains_key("distance") =>
        {
            bail!(
                "{}: the `distance` attribute cannot be read (damaged file or unsupported \
                 type)",
                path.display()
            )
        }
        None => None,
    };
    Ok(AnnHdf5 {
        train,
        test,
        neighbors,
        distances,
        distance,
    })
}

/// Writes an ann-benchmarks HDF5 file: `train`, `test` (`float32`), `neighbors`
/// (`int32`), `distances` (`float32`), and the attributes `distance` (a
/// variable-length string, as h5py writes it), `dimension` and `point_type`.
///
/// # Errors
/// Dimensions or row counts that disagree; I/O errors.
pub(crate) fn write_ann_hdf5(
    path: impl AsRef<Path>,
    train: VectorsRef<'_>,
    test: VectorsRef<'_>,
    neighbors: &Matrix<i32>,
    distances: &Matrix<f32>,
    distance_name: &str,
) -> Result<()> {
    let path = path.as_ref();
    if train.dim() != test.dim() {
        bail!(
            "{}: test dimension {} differs from train dimension {}",
            path.display(),
            test.dim(),
            train.dim()
        );
    }
    if neighbors.len() != test.len() || distances.len() != test.len() {
        bail!(
            "{}: {} test vectors but {} rows of neighbors and {} of distances",
            path.display(),
            test.len(),
            neighbors.len(),
            distances.len()
        );
    }
    if neighbors.dim() != distances.dim() {
        bail!(
            "{}: {} neighbors but {} distances per query",
            path.display(),
            neighbors.dim(),
            distances.dim()
        );
    }
    let mut b = hdf5_pure::FileBuilder::new();
    let shape = |n: usize, d: usize| [n as u64, d as u64];
    b.create_dataset("train")
        .with_f32_data(train.as_slice())
        .with_shape(&shape(train.len(), train.dim()));
    b.create_dataset("test")
        .with_f32_data(test.as_slice())
        .with_shape(&shape(test.len(), test.dim()));
    b.create_dataset("neighbors")
        .with_i32_data(neighbors.as_slice())
        .with_shape(&shape(neighbors.len(), neighbors.dim()));
    b.create_dataset("distances")
        .with_f32_data(distances.as_slice())
        .with_shape(&shape(distances.len(), distances.dim()));
    b.set_attr(
        "distance",
        hdf5_pure::AttrValue::VarLenString(distance_name.to_string()),
    );
    b.set_attr("dimension", hdf5_pure::AttrValue::I64(train.dim() as i64));
    b.set_attr(
        "point_type",
        hdf5_pure::AttrValue::VarLenString("float".to_string()),
    );
    let bytes = b.finish().map_err(|e| h5_err(path, e))?;
    vq_core::persist::write_atomic(path, |w| {
        w.write_all(&bytes).map_err(|e| vq_core::Error::io(path, e))
    })?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use vq_core::io::{write_bin, write_bvecs, write_fbin, write_fvecs, write_ivecs};

    /// A hand-made `.npy` file: `descr` such as `<f8`, a Python tuple `shape`.
    pub(crate) fn raw_npy(path: &Path, descr: &str, fortran: bool, shape: &str, data: &[u8]) {
        let order = if fortran { "True" } else { "False" };
        let descr = if descr.starts_with('[') {
            descr.to_string()
        } else {
            format!("'{descr}'")
        };
        let mut h = format!("{{'descr': {descr}, 'fortran_order': {order}, 'shape': {shape}, }}")
            .into_bytes();
        let pad = (64 - (10 + h.len() + 1) % 64) % 64;
        h.extend(std::iter::repeat_n(b' ', pad));
        h.push(b'\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend((h.len() as u16).to_le_bytes());
        bytes.extend(h);
        bytes.extend(data);
        std::fs::write(path, bytes).unwrap();
    }

    fn values(n: usize, d: usize) -> Vec<f32> {
        (0..n * d).map(|i| (i as f32) * 0.5 - 3.0).collect()
    }

    fn err_of<T: std::fmt::Debug>(r: Result<T>) -> String {
        format!("{:#}", r.unwrap_err())
    }

    #[test]
    fn npy_f32_round_trip_and_1d_is_one_vector() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.npy");
        let v = values(7, 5);
        write_npy(&p, &v, 5).unwrap();
        let back = read_vectors_any(&p).unwrap();
        assert_eq!((back.len(), back.dim()), (7, 5));
        assert_eq!(back.as_slice(), v.as_slice());

        let one: Vec<u8> = [1.0f32, 2.0, 3.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        raw_npy(&p, "<f4", false, "(3,)", &one);
        let back = read_vectors_any(&p).unwrap();
        assert_eq!((back.len(), back.dim()), (1, 3));
        assert_eq!(back.row(0), &[1.0, 2.0, 3.0]);
    }

    #[test]
    fn npy_u8_reads_as_floats() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.npy");
        let v: Vec<u8> = (0..=255).collect();
        write_npy(&p, &v, 16).unwrap();
        let back = read_vectors_any(&p).unwrap();
        assert_eq!((back.len(), back.dim()), (16, 16));
        assert!(
            back.as_slice()
                .iter()
                .zip(&v)
                .all(|(&a, &b)| a == f32::from(b))
        );
    }

    #[test]
    fn npy_ids_round_trip_i32_i64() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("gt.npy");
        let ids: Vec<i32> = (0..30).rev().collect();
        write_npy(&p, &ids, 10).unwrap();
        let gt = read_ids_any(&p).unwrap();
        assert_eq!((gt.nq(), gt.k()), (3, 10));
        assert_eq!(gt.row(0)[0], 29);
        assert_eq!(gt.row(2)[9], 0);

        let ids: Vec<i64> = vec![5_000_000_000, -1, 3, 4];
        write_npy(&p, &ids, 2).unwrap();
        let gt = read_ids_any(&p).unwrap();
        assert_eq!((gt.nq(), gt.k()), (2, 2));
        assert_eq!(gt.row(0), &[5_000_000_000, -1]);

        write_npy(&p, &[1i64, -2], 2).unwrap();
        assert!(err_of(read_ids_any(&p)).contains("at least -1"));
    }

    #[test]
    fn npy_f64_f16_big_endian_and_fortran_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.npy");
        // 2 × 3, values 0..6.
        let want: Vec<f32> = (0..6).map(|i| i as f32 + 0.25).collect();
        let f64le: Vec<u8> = want
            .iter()
            .flat_map(|&x| f64::from(x).to_le_bytes())
            .collect();
        raw_npy(&p, "<f8", false, "(2, 3)", &f64le);
        assert_eq!(read_vectors_any(&p).unwrap().as_slice(), want.as_slice());

        let f16le: Vec<u8> = want
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect();
        raw_npy(&p, "<f2", false, "(2, 3)", &f16le);
        assert_eq!(read_vectors_any(&p).unwrap().as_slice(), want.as_slice());

        let f32be: Vec<u8> = want.iter().flat_map(|&x| x.to_be_bytes()).collect();
        raw_npy(&p, ">f4", false, "(2, 3)", &f32be);
        assert_eq!(read_vectors_any(&p).unwrap().as_slice(), want.as_slice());

        // Fortran order: column-major storage of the same 2 × 3 matrix.
        let cols: Vec<u8> = [0, 3, 1, 4, 2, 5]
            .iter()
            .flat_map(|&i: &usize| want[i].to_le_bytes())
            .collect();
        raw_npy(&p, "<f4", true, "(2, 3)", &cols);
        let back = read_vectors_any(&p).unwrap();
        assert_eq!((back.len(), back.dim()), (2, 3));
        assert_eq!(back.as_slice(), want.as_slice());

        let ids: Vec<u8> = [0i64, 3, 1, 4, 2, 5]
            .iter()
            .flat_map(|x| x.to_be_bytes())
            .collect();
        raw_npy(&p, ">i8", true, "(2, 3)", &ids);
        let gt = read_ids_any(&p).unwrap();
        assert_eq!(gt.row(0), &[0, 1, 2]);
        assert_eq!(gt.row(1), &[3, 4, 5]);
    }

    #[test]
    fn npy_bad_inputs_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.npy");
        write_npy(&p, &values(4, 4), 4).unwrap();
        let full = std::fs::read(&p).unwrap();
        // Truncated anywhere: in the magic, the header or the data.
        for cut in [0, 5, 9, 20, full.len() - 65, full.len() - 1] {
            std::fs::write(&p, &full[..cut]).unwrap();
            assert!(read_vectors_any(&p).is_err(), "cut at {cut}");
        }
        std::fs::write(&p, &full[..full.len() - 4]).unwrap();
        assert!(err_of(read_vectors_any(&p)).contains("truncated"));
        let mut longer = full.clone();
        longer.extend([0u8; 4]);
        std::fs::write(&p, &longer).unwrap();
        assert!(err_of(read_vectors_any(&p)).contains("trailing"));

        // Wrong dtypes name the dtype.
        raw_npy(&p, "<i2", false, "(2, 2)", &[0; 8]);
        let e = err_of(read_vectors_any(&p));
        assert!(e.contains("int16") && e.contains("x.npy"), "{e}");
        raw_npy(&p, "|b1", false, "(2, 2)", &[0; 4]);
        assert!(err_of(read_vectors_any(&p)).contains("bool"));
        raw_npy(&p, "<c8", false, "(1, 2)", &[0; 16]);
        assert!(err_of(read_vectors_any(&p)).contains("complex64"));
        write_npy(&p, &values(2, 2), 2).unwrap();
        assert!(err_of(read_ids_any(&p)).contains("float32"));
        raw_npy(&p, "[('a', '<f4'), ('b', '<f4')]", false, "(2,)", &[0; 16]);
        let e = err_of(read_vectors_any(&p));
        assert!(e.contains("structured"), "{e}");

        // Ranks and empty arrays.
        raw_npy(&p, "<f4", false, "(2, 2, 2)", &[0; 32]);
        assert!(err_of(read_vectors_any(&p)).contains("3-D"));
        raw_npy(&p, "<f4", false, "()", &[0; 4]);
        assert!(err_of(read_vectors_any(&p)).contains("0-D"));
        raw_npy(&p, "<f4", false, "(0, 4)", &[]);
        assert!(err_of(read_vectors_any(&p)).contains("empty"));
        // A hostile shape is refused before any allocation.
        raw_npy(&p, "<f4", false, "(1000000000000, 1000)", &[0; 8]);
        assert!(err_of(read_vectors_any(&p)).contains("truncated"));
        for shape in [
            "(1099511627776, 1099511627776)",
            "(0, 1099511627776, 1099511627776)",
        ] {
            raw_npy(&p, "<f4", false, shape, &[0; 8]);
            assert!(
                err_of(read_vectors_any(&p)).contains("too large"),
                "{shape}"
            );
        }
        // A header length beyond the file.
        let mut bytes = b"\x93NUMPY\x02\x00".to_vec();
        bytes.extend(u32::MAX.to_le_bytes());
        bytes.extend(b"{'descr': '<f4'");
        std::fs::write(&p, bytes).unwrap();
        assert!(err_of(read_vectors_any(&p)).contains("truncated"));

        // Random bytes, NaN.
        std::fs::write(&p, b"definitely not numpy at all, just some bytes").unwrap();
        assert!(err_of(read_vectors_any(&p)).contains("not a valid .npy"));
        let mut v = values(3, 2);
        v[3] = f32::NAN;
        write_npy(&p, &v, 2).unwrap();
        let e = err_of(read_vectors_any(&p));
        assert!(e.contains("non-finite") && e.contains("x.npy"), "{e}");
        assert!(err_of(read_vectors_any(dir.path().join("missing.npy"))).contains("missing.npy"));
    }

    #[test]
    fn texmex_and_bigann_through_the_generic_readers() {
        let dir = tempfile::tempdir().unwrap();
        let v = values(6, 4);
        let x = VectorsRef::new(&v, 4).unwrap();
        let bytes: Vec<u8> = (0..24).collect();
        let ids: Vec<i32> = (0..12).collect();
        let d = dir.path();
        write_fvecs(d.join("a.fvecs"), x).unwrap();
        write_fbin(d.join("a.fbin"), x).unwrap();
        write_bvecs(d.join("a.bvecs"), &bytes, 4).unwrap();
        write_bin(d.join("a.u8bin"), &bytes, 4).unwrap();
        write_ivecs(d.join("a.ivecs"), &ids, 3).unwrap();
        write_bin(d.join("a.ibin"), &ids, 3).unwrap();
        for f in ["a.fvecs", "a.fbin"] {
            assert_eq!(
                read_vectors_any(d.join(f)).unwrap().as_slice(),
                v.as_slice()
            );
        }
        let want: Vec<f32> = bytes.iter().map(|&b| f32::from(b)).collect();
        for f in ["a.bvecs", "a.u8bin"] {
            assert_eq!(
                read_vectors_any(d.join(f)).unwrap().as_slice(),
                want.as_slice()
            );
        }
        for f in ["a.ivecs", "a.ibin"] {
            let gt = read_ids_any(d.join(f)).unwrap();
            assert_eq!((gt.nq(), gt.k()), (4, 3));
            assert_eq!(gt.row(3), &[9, 10, 11]);
        }
        let e = err_of(read_vectors_any(d.join("a.csv")));
        assert!(e.contains(".fvecs, .bvecs, .fbin, .u8bin, .npy"), "{e}");
        assert!(err_of(read_ids_any(d.join("a.fvecs"))).contains(".ivecs, .ibin, .npy"));
        // NaN in an .fvecs file is caught too.
        let mut bad = v.clone();
        bad[5] = f32::INFINITY;
        write_fvecs(d.join("bad.fvecs"), VectorsRef::new(&bad, 4).unwrap()).unwrap();
        assert!(err_of(read_vectors_any(d.join("bad.fvecs"))).contains("non-finite"));
    }

    fn small_ann(dir: &Path, distance: &str) -> (std::path::PathBuf, Vec<f32>, Vec<f32>) {
        let p = dir.join("ann.hdf5");
        let train = values(20, 3);
        let test = values(4, 3);
        let nb: Vec<i32> = (0..8).collect();
        let dist: Vec<f32> = (0..8).map(|i| i as f32).collect();
        write_ann_hdf5(
            &p,
            VectorsRef::new(&train, 3).unwrap(),
            VectorsRef::new(&test, 3).unwrap(),
            &Matrix::new(nb, 2).unwrap(),
            &Matrix::new(dist, 2).unwrap(),
            distance,
        )
        .unwrap();
        (p, train, test)
    }

    #[test]
    fn hdf5_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let (p, train, test) = small_ann(dir.path(), "angular");
        let f = read_ann_hdf5(&p).unwrap();
        assert_eq!((f.train.len(), f.train.dim()), (20, 3));
        assert_eq!(f.train.as_slice(), train.as_slice());
        assert_eq!(f.test.as_slice(), test.as_slice());
        let gt = f.neighbors.unwrap();
        assert_eq!((gt.nq(), gt.k()), (4, 2));
        assert_eq!(gt.row(3), &[6, 7]);
        let dist = f.distances.unwrap();
        assert_eq!((dist.len(), dist.dim()), (4, 2));
        assert_eq!(dist.row(1), &[2.0, 3.0]);
        assert_eq!(f.distance.as_deref(), Some("angular"));
    }

    #[test]
    fn hdf5_chunked_compressed_f64_i64_and_fixed_string_attribute() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.h5");
        let train: Vec<f64> = (0..300).map(|i| f64::from(i) / 7.0).collect();
        let test: Vec<f64> = (0..30).map(f64::from).collect();
        let nb: Vec<i64> = (0..50).collect();
        let mut b = hdf5_pure::FileBuilder::new();
        b.create_dataset("train")
            .with_f64_data(&train)
            .with_shape(&[100, 3])
            .with_chunks(&[16, 3])
            .with_shuffle()
            .with_deflate(6);
        b.create_dataset("test")
            .with_f64_data(&test)
            .with_shape(&[10, 3])
            .with_chunks(&[4, 3])
            .with_deflate(1);
        b.create_dataset("neighbors")
            .with_i64_data(&nb)
            .with_shape(&[10, 5])
            .with_chunks(&[3, 5])
            .with_deflate(4);
        b.set_attr(
            "distance",
            hdf5_pure::AttrValue::AsciiString("euclidean".into()),
        );
        b.write(&p).unwrap();
        let f = read_ann_hdf5(&p).unwrap();
        assert_eq!((f.train.len(), f.train.dim()), (100, 3));
        let want: Vec<f32> = train.iter().map(|&x| x as f32).collect();
        assert_eq!(f.train.as_slice(), want.as_slice());
        assert_eq!(f.test.row(9), &[27.0, 28.0, 29.0]);
        assert_eq!(f.neighbors.unwrap().row(9), &[45, 46, 47, 48, 49]);
        assert!(f.distances.is_none());
        assert_eq!(f.distance.as_deref(), Some("euclidean"));
    }

    #[test]
    fn hdf5_bad_inputs_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let write = |name: &str, build: &dyn Fn(&mut hdf5_pure::FileBuilder)| {
            let p = d.join(name);
            let mut b = hdf5_pure::FileBuilder::new();
            build(&mut b);
            b.write(&p).unwrap();
            p
        };
        let p = write("no-test.hdf5", &|b| {
            b.create_dataset("train")
                .with_f32_data(&[1.0; 6])
                .with_shape(&[2, 3]);
        });
        let e = err_of(read_ann_hdf5(&p));
        assert!(
            e.contains("no `test` dataset") && e.contains("train"),
            "{e}"
        );

        let p = write("rank.hdf5", &|b| {
            b.create_dataset("train")
                .with_f32_data(&[1.0; 8])
                .with_shape(&[2, 2, 2]);
            b.create_dataset("test")
                .with_f32_data(&[1.0; 2])
                .with_shape(&[1, 2]);
        });
        assert!(err_of(read_ann_hdf5(&p)).contains("3 dimensions"));

        let p = write("dtype.hdf5", &|b| {
            b.create_dataset("train")
                .with_i32_data(&[1; 4])
                .with_shape(&[2, 2]);
            b.create_dataset("test")
                .with_f32_data(&[1.0; 2])
                .with_shape(&[1, 2]);
        });
        let e = err_of(read_ann_hdf5(&p));
        assert!(e.contains("dtype i32") && e.contains("`train`"), "{e}");

        let p = write("nan.hdf5", &|b| {
            b.create_dataset("train")
                .with_f32_data(&[1.0, f32::NAN, 0.0, 0.0])
                .with_shape(&[2, 2]);
            b.create_dataset("test")
                .with_f32_data(&[1.0; 2])
                .with_shape(&[1, 2]);
        });
        assert!(err_of(read_ann_hdf5(&p)).contains("non-finite"));

        let p = write("dims.hdf5", &|b| {
            b.create_dataset("train")
                .with_f32_data(&[1.0; 4])
                .with_shape(&[2, 2]);
            b.create_dataset("test")
                .with_f32_data(&[1.0; 3])
                .with_shape(&[1, 3]);
        });
        assert!(err_of(read_ann_hdf5(&p)).contains("dimension 3"));

        let p = write("rows.hdf5", &|b| {
            b.create_dataset("train")
                .with_f32_data(&[1.0; 4])
                .with_shape(&[2, 2]);
            b.create_dataset("test")
                .with_f32_data(&[1.0; 2])
                .with_shape(&[1, 2]);
            b.create_dataset("neighbors")
                .with_i32_data(&[0; 4])
                .with_shape(&[2, 2]);
        });
        assert!(err_of(read_ann_hdf5(&p)).contains("`neighbors` has 2 rows"));

        let p = write("attr.hdf5", &|b| {
            b.create_dataset("train")
                .with_f32_data(&[1.0; 4])
                .with_shape(&[2, 2]);
            b.create_dataset("test")
                .with_f32_data(&[1.0; 2])
                .with_shape(&[1, 2]);
            b.set_attr("distance", hdf5_pure::AttrValue::I32(3));
        });
        assert!(err_of(read_ann_hdf5(&p)).contains("not a string"));

        let p = d.join("random.hdf5");
        let junk: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(&p, &junk).unwrap();
        assert!(err_of(read_ann_hdf5(&p)).contains("not an HDF5 file"));
        assert!(err_of(read_ann_hdf5(d.join("absent.hdf5"))).contains("no such file"));
    }

    #[test]
    fn extents_a_file_cannot_hold_are_refused() {
        assert!(check_extent(1100, 1).is_ok());
        assert!(check_extent(1101, 1).is_err());
        assert!(check_extent(1 << 40, 1 << 20).is_err());
        assert!(check_extent(1_000_000 * 128, 512_000_000).is_ok());
        // A real file's datasets pass.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ok.hdf5");
        let mut b = hdf5_pure::FileBuilder::new();
        b.create_dataset("train")
            .with_f32_data(&[1.0; 4])
            .with_shape(&[2, 2]);
        b.create_dataset("test")
            .with_f32_data(&[1.0; 2])
            .with_shape(&[1, 2]);
        std::fs::write(&p, b.finish().unwrap()).unwrap();
        assert_eq!(read_ann_hdf5(&p).unwrap().train.len(), 2);
    }

    #[test]
    fn hdf5_truncated_or_damaged_never_panics() {
        let dir = tempfile::tempdir().unwrap();
        let (p, _, _) = small_ann(dir.path(), "euclidean");
        let full = std::fs::read(&p).unwrap();
        let q = dir.path().join("cut.hdf5");
        for cut in (0..full.len()).step_by(7) {
            std::fs::write(&q, &full[..cut]).unwrap();
            let r = read_ann_hdf5(&q);
            assert!(r.is_err(), "cut at {cut} of {}: {r:?}", full.len());
        }
        // Flipped bytes: an error or (in data bytes) different values, never a panic.
        for at in (0..full.len()).step_by(13) {
            let mut bad = full.clone();
            bad[at] ^= 0xA5;
            std::fs::write(&q, &bad).unwrap();
            let _ = read_ann_hdf5(&q);
        }
    }

    #[test]
    fn distance_names() {
        assert_eq!(
            metric_for_distance("euclidean").unwrap(),
            (Metric::L2, false)
        );
        assert_eq!(metric_for_distance("L2").unwrap(), (Metric::L2, false));
        assert_eq!(
            metric_for_distance("angular").unwrap(),
            (Metric::InnerProduct, true)
        );
        assert_eq!(
            metric_for_distance("cosine").unwrap(),
            (Metric::InnerProduct, true)
        );
        for ip in ["dot", "ip", "inner_product"] {
            assert_eq!(
                metric_for_distance(ip).unwrap(),
                (Metric::InnerProduct, false)
            );
        }
        assert!(err_of(metric_for_distance("hamming")).contains("hamming"));
        let mut v = Vectors::new(vec![3.0, 4.0, 0.0, 0.0], 2).unwrap();
        normalize_rows(&mut v);
        assert_eq!(v.as_slice(), &[0.6, 0.8, 0.0, 0.0]);
    }

    /// Files written by h5py and NumPy (not in CI): set `VQ_H5PY_DIR` to a folder with
    /// ann-benchmarks files `ann.hdf5` (contiguous, `distance="angular"`),
    /// `ann-gzip.hdf5` (chunked, gzip + shuffle), `ann-lzf.hdf5` (chunked, LZF),
    /// `ann-latest.hdf5` (`libver="latest"`, `euclidean`, chunked int64 neighbours) of
    /// train `float32 (1000, 20)`, test `(50, 20)`, neighbors `int32 (50, 10)` (exact
    /// cosine), distances `float32`, and the same arrays saved with `np.save`
    /// (`train`, `test`, `neighbors`, `neighbors64` as int64, `train_f64_fortran`,
    /// `train_f16`, `distances`), then run with `--ignored`.
    #[test]
    #[ignore = "needs files written by h5py: set VQ_H5PY_DIR"]
    fn h5py_and_numpy_written_files() {
        let dir = std::path::PathBuf::from(std::env::var("VQ_H5PY_DIR").unwrap());
        let train = read_vectors_any(dir.join("train.npy")).unwrap();
        let test = read_vectors_any(dir.join("test.npy")).unwrap();
        let nb = read_ids_any(dir.join("neighbors.npy")).unwrap();
        assert_eq!((train.len(), train.dim(), test.len()), (1000, 20, 50));
        assert_eq!(read_ids_any(dir.join("neighbors64.npy")).unwrap(), nb);
        let f64f = read_vectors_any(dir.join("train_f64_fortran.npy")).unwrap();
        assert_eq!(f64f.as_slice(), train.as_slice());
        let f16 = read_vectors_any(dir.join("train_f16.npy")).unwrap();
        assert!(
            f16.as_slice()
                .iter()
                .zip(train.as_slice())
                .all(|(a, b)| (a - b).abs() <= 4e-3 * b.abs().max(1.0))
        );
        let dist = read_npy_vectors(dir.join("distances.npy")).unwrap();
        for name in [
            "ann.hdf5",
            "ann-gzip.hdf5",
            "ann-lzf.hdf5",
            "ann-latest.hdf5",
        ] {
            let f = read_ann_hdf5(dir.join(name)).unwrap();
            assert_eq!(f.train, train, "{name}");
            assert_eq!(f.test, test, "{name}");
            assert_eq!(f.neighbors.as_ref(), Some(&nb), "{name}");
            if let Some(d) = &f.distances {
                assert_eq!(d.as_slice(), dist.as_slice(), "{name}");
            }
            let want = if name == "ann-latest.hdf5" {
                "euclidean"
            } else {
                "angular"
            };
            assert_eq!(f.distance.as_deref(), Some(want), "{name}");
        }
        // And back: `vq-written.hdf5`, for h5py to read (`f["train"][:]`, attrs).
        let dist_m = Matrix::new(dist.as_slice().to_vec(), dist.dim()).unwrap();
        let nb_m = Matrix::new(nb.to_i32().unwrap(), nb.k()).unwrap();
        let out = dir.join("vq-written.hdf5");
        write_ann_hdf5(
            &out,
            train.as_ref(),
            test.as_ref(),
            &nb_m,
            &dist_m,
            "angular",
        )
        .unwrap();
        // The angular file through `Dataset`: unit vectors, inner product, and the
        // exact inner-product neighbours of the normalised data match h5py's.
        let spec = dir.join("ann.hdf5");
        let mut ds = crate::dataset::Dataset::load(spec.to_str().unwrap()).unwrap();
        assert_eq!(ds.name, "ann");
        assert_eq!(ds.metric_hint, Some(Metric::InnerProduct));
        for i in 0..ds.base.len() {
            let n: f32 = ds.base.row(i).iter().map(|x| x * x).sum();
            assert!((n - 1.0).abs() < 1e-5);
        }
        let file_gt = ds.gt.clone().unwrap();
        ds.gt = None;
        let exact = ds.ground_truth(10, Metric::InnerProduct, false).unwrap();
        let mut agree = 0;
        for q in 0..file_gt.nq() {
            agree += file_gt
                .row(q)
                .iter()
                .filter(|id| exact.row(q)[..10].contains(id))
                .count();
        }
        assert!(
            agree >= file_gt.nq() * 10 - 2,
            "{agree} of {}",
            file_gt.nq() * 10
        );
    }
}
