//! Readers and writers for the common vector file formats.
//!
//! - **texmex** (`.fvecs`, `.ivecs`, `.bvecs`): each vector is a little-endian `i32`
//!   dimension followed by that many `f32`, `i32` or `u8` values.
//! - **BigANN** (`.fbin`, `.ibin`, `.u8bin`): a header of two little-endian `u32`
//!   (`n`, `d`) followed by `n × d` values.
//!
//! Every reader checks the whole structure: a truncated file, a dimension that changes
//! between vectors, a zero or negative dimension, or a header that disagrees with the
//! file size is an [`Error::Format`] naming the file — never a panic and never an
//! allocation larger than the file. Three ways to read: whole files
//! ([`read_fvecs`]...), streaming in batches ([`VectorReader`]) and
//! memory-mapped ([`MmapVecs`], [`MmapBin`]).
//!
//! ```
//! use vq_core::io::{read_fvecs, write_fvecs};
//! use vq_core::VectorsRef;
//! let dir = std::env::temp_dir().join("vq-io-doc");
//! std::fs::create_dir_all(&dir)?;
//! let path = dir.join("x.fvecs");
//! write_fvecs(&path, VectorsRef::new(&[1.0, 2.0, 3.0, 4.0], 2)?)?;
//! let back = read_fvecs(&path)?;
//! assert_eq!((back.len(), back.dim()), (2, 2));
//! assert_eq!(back.row(1), &[3.0, 4.0]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::vectors::{Vectors, VectorsRef};

/// Largest dimension a reader accepts (guards against hostile headers).
pub const MAX_DIM: usize = 1 << 20;

/// A value type stored in vector files: `f32`, `i32` or `u8`, little-endian.
pub trait Element: bytemuck::Pod + Default + Send + Sync + 'static {
    /// Bytes per value.
    const SIZE: usize = std::mem::size_of::<Self>();
    /// Name for messages.
    const NAME: &'static str;
    /// Converts from little-endian in place (no-op on little-endian machines).
    fn fix_endian(values: &mut [Self]);
}

macro_rules! element {
    ($t:ty, $name:literal) => {
        impl Element for $t {
            const NAME: &'static str = $name;
            #[inline]
            fn fix_endian(values: &mut [Self]) {
                if cfg!(target_endian = "big") {
                    for v in values {
                        *v = <$t>::from_le_bytes(v.to_ne_bytes());
                    }
                }
            }
        }
    };
}
element!(f32, "f32");
element!(i32, "i32");
element!(u8, "u8");

/// An owned row-major matrix of `len() × dim()` values (ids, bytes or floats read from a
/// file).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Matrix<T> {
    data: Vec<T>,
    dim: usize,
}

impl<T: Element> Matrix<T> {
    /// Takes `data` as rows of `dim` values.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `dim == 0` or `data.len()` is not a multiple.
    pub fn new(data: Vec<T>, dim: usize) -> Result<Self> {
        if dim == 0 || !data.len().is_multiple_of(dim) {
            return Err(Error::invalid_param(
                "dim",
                format!("{} values do not make rows of {dim}", data.len()),
            ));
        }
        Ok(Matrix { data, dim })
    }

    /// Values per row.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.dim).unwrap_or(0)
    }

    /// `true` when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Row `i`.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn row(&self, i: usize) -> &[T] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// All values, row-major.
    pub fn as_slice(&self) -> &[T] {
        &self.data
    }

    /// Gives back the values.
    pub fn into_vec(self) -> Vec<T> {
        self.data
    }
}

impl Matrix<u8> {
    /// Converts byte vectors (`.bvecs`, `.u8bin`) to floats.
    ///
    /// # Panics
    /// Never: the matrix already holds whole rows of `dim >= 1`.
    #[allow(clippy::expect_used)] // an invariant, documented under # Panics
    pub fn to_f32(&self) -> Vectors {
        Vectors::new(self.data.iter().map(|&b| b as f32).collect(), self.dim)
            .expect("invariant: same shape")
    }
}

fn open(path: &Path) -> Result<(File, u64)> {
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    Ok((f, len))
}

fn read_i32(r: &mut impl Read, path: &Path, what: &str) -> Result<i32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::format(path, format!("truncated while reading {what}"))
        } else {
            Error::io(path, e)
        }
    })?;
    Ok(i32::from_le_bytes(b))
}

fn read_values<T: Element>(r: &mut impl Read, path: &Path, out: &mut [T]) -> Result<()> {
    r.read_exact(bytemuck::cast_slice_mut(out)).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::format(path, "truncated in the middle of a vector")
        } else {
            Error::io(path, e)
        }
    })?;
    T::fix_endian(out);
    Ok(())
}

fn check_dim(path: &Path, d: i64) -> Result<usize> {
    if d <= 0 || d as u64 > MAX_DIM as u64 {
        return Err(Error::format(
            path,
            format!("invalid dimension {d} (must be 1..={MAX_DIM})"),
        ));
    }
    Ok(d as usize)
}

/// Shape of a texmex file: dimension and number of vectors, from the first header and
/// the file size.
fn vecs_shape<T: Element>(path: &Path, f: &mut File, len: u64) -> Result<(usize, usize)> {
    if len == 0 {
        return Err(Error::format(path, "the file is empty"));
    }
    let d = check_dim(path, read_i32(f, path, "the first dimension")? as i64)?;
    let rec = 4 + (d * T::SIZE) as u64;
    if !len.is_multiple_of(rec) {
        return Err(Error::format(
            path,
            format!(
                "size {len} is not a whole number of {}-byte records (d = {d}, {}); the file is truncated or not a .{}vecs file",
                rec,
                T::NAME,
                match T::NAME {
                    "f32" => "f",
                    "i32" => "i",
                    _ => "b",
                }
            ),
        ));
    }
    f.seek(SeekFrom::Start(0)).map_err(|e| Error::io(path, e))?;
    Ok((d, (len / rec) as usize))
}

/// Streams a vector file in batches: texmex (`.fvecs`, `.ivecs`, `.bvecs`) or BigANN
/// (`.fbin`, `.ibin`, `.u8bin`). The shape is checked at open; every texmex vector's
/// dimension header is checked as it is read.
///
/// ```
/// # use vq_core::io::{write_fvecs, VectorReader};
/// # use vq_core::VectorsRef;
/// # let path = std::env::temp_dir().join("vq-stream-doc.fvecs");
/// # write_fvecs(&path, VectorsRef::new(&[0.0; 10], 2)?)?;
/// let mut reader = VectorReader::<f32>::open_texmex(&path)?;
/// assert_eq!((reader.len(), reader.dim()), (5, 2));
/// let mut seen = 0;
/// while let Some(batch) = reader.next_batch(2)? {
///     seen += batch.len();
/// }
/// assert_eq!(seen, 5);
/// # Ok::<(), vq_core::Error>(())
/// ```
#[derive(Debug)]
pub struct VectorReader<T: Element> {
    path: PathBuf,
    reader: BufReader<File>,
    dim: usize,
    len: usize,
    pos: usize,
    /// Texmex: every vector is preceded by its dimension.
    texmex: bool,
    /// Set by a failed read: the stream position is then unknown, so every later read
    /// fails too rather than return misaligned vectors.
    failed: Option<String>,
    _t: PhantomData<T>,
}

impl<T: Element> VectorReader<T> {
    /// Opens a texmex file and checks its size against its first dimension.
    ///
    /// # Errors
    /// I/O errors, an empty or truncated file, an invalid dimension.
    pub fn open_texmex(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_as(path.as_ref(), true)
    }

    /// Opens a BigANN file and checks its header against its size.
    ///
    /// # Errors
    /// I/O errors, a short file, a header that disagrees with the size.
    pub fn open_bigann(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_as(path.as_ref(), false)
    }

    fn open_as(path: &Path, texmex: bool) -> Result<Self> {
        let (mut f, len) = open(path)?;
        let (dim, n) = if texmex {
            vecs_shape::<T>(path, &mut f, len)?
        } else {
            bin_shape::<T>(path, &mut f, len)?
        };
        Ok(VectorReader {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(1 << 20, f),
            dim,
            len: n,
            pos: 0,
            texmex,
            failed: None,
            _t: PhantomData,
        })
    }

    /// Dimension of every vector.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of vectors in the file.
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` for a file with no vectors.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads up to `max` more vectors; `None` at the end.
    ///
    /// # Errors
    /// I/O errors, truncation, a vector whose dimension differs from the first. After
    /// an error every later call fails as well (the reader no longer knows where the
    /// next vector starts): open the file again to retry.
    pub fn next_batch(&mut self, max: usize) -> Result<Option<Matrix<T>>> {
        if let Some(why) = &self.failed {
            return Err(Error::format(
                &self.path,
                format!("an earlier read failed ({why}); open the file again"),
            ));
        }
        let r = self.read_batch(max);
        if let Err(e) = &r {
            self.failed = Some(e.to_string());
        }
        r
    }

    fn read_batch(&mut self, max: usize) -> Result<Option<Matrix<T>>> {
        let m = max.max(1).min(self.len - self.pos);
        if m == 0 {
            return Ok(None);
        }
        let mut data = vec![T::default(); m * self.dim];
        if self.texmex {
            for (i, row) in data.chunks_exact_mut(self.dim).enumerate() {
                let d = read_i32(&mut self.reader, &self.path, "a dimension")?;
                if d as i64 != self.dim as i64 {
                    return Err(Error::format(
                        &self.path,
                        format!(
                            "vector {} has dimension {d}, the first had {}",
                            self.pos + i,
                            self.dim
                        ),
                    ));
                }
                read_values(&mut self.reader, &self.path, row)?;
            }
        } else {
            read_values(&mut self.reader, &self.path, &mut data)?;
        }
        self.pos += m;
        Ok(Some(Matrix {
            data,
            dim: self.dim,
        }))
    }

    /// Reads every remaining vector.
    ///
    /// # Errors
    /// As [`VectorReader::next_batch`].
    pub fn read_all(mut self) -> Result<Matrix<T>> {
        let rest = self.len - self.pos;
        Ok(self.next_batch(rest)?.unwrap_or(Matrix {
            data: Vec::new(),
            dim: self.dim,
        }))
    }
}

/// Reads a whole `.fvecs` file.
///
/// # Errors
/// See the [module docs](self).
pub fn read_fvecs(path: impl AsRef<Path>) -> Result<Vectors> {
    let m = VectorReader::<f32>::open_texmex(path)?.read_all()?;
    let dim = m.dim;
    Vectors::new(m.data, dim)
}

/// Reads a whole `.ivecs` file (e.g. ground truth).
///
/// # Errors
/// See the [module docs](self).
pub fn read_ivecs(path: impl AsRef<Path>) -> Result<Matrix<i32>> {
    VectorReader::<i32>::open_texmex(path)?.read_all()
}

/// Reads a whole `.bvecs` file.
///
/// # Errors
/// See the [module docs](self).
pub fn read_bvecs(path: impl AsRef<Path>) -> Result<Matrix<u8>> {
    VectorReader::<u8>::open_texmex(path)?.read_all()
}

fn write_le<T: Element>(w: &mut impl Write, values: &[T]) -> std::io::Result<()> {
    if cfg!(target_endian = "little") {
        w.write_all(bytemuck::cast_slice(values))
    } else {
        let mut v = values.to_vec();
        T::fix_endian(&mut v);
        w.write_all(bytemuck::cast_slice(&v))
    }
}

/// Writes rows of `dim` values in texmex layout, atomically (a temporary file renamed
/// over `path`: a failed write leaves the old file as it was).
///
/// # Errors
/// I/O errors; [`Error::InvalidParameter`] when `values.len()` is not a multiple of
/// `dim` or `dim` is 0 or too large.
pub fn write_vecs<T: Element>(path: impl AsRef<Path>, values: &[T], dim: usize) -> Result<()> {
    let path = path.as_ref();
    if dim == 0 || dim > MAX_DIM || !values.len().is_multiple_of(dim) {
        return Err(Error::invalid_param(
            "dim",
            format!("{} values do not make rows of {dim}", values.len()),
        ));
    }
    let header = (dim as i32).to_le_bytes();
    crate::persist::write_atomic(path, |mut w| {
        for row in values.chunks_exact(dim) {
            w.write_all(&header).map_err(|e| Error::io(path, e))?;
            write_le(&mut w, row).map_err(|e| Error::io(path, e))?;
        }
        Ok(())
    })
}

/// Writes a `.fvecs` file.
///
/// # Errors
/// I/O errors.
pub fn write_fvecs(path: impl AsRef<Path>, x: VectorsRef<'_>) -> Result<()> {
    write_vecs(path, x.as_slice(), x.dim())
}

/// Writes a `.ivecs` file.
///
/// # Errors
/// As [`write_vecs`].
pub fn write_ivecs(path: impl AsRef<Path>, values: &[i32], dim: usize) -> Result<()> {
    write_vecs(path, values, dim)
}

/// Writes a `.bvecs` file.
///
/// # Errors
/// As [`write_vecs`].
pub fn write_bvecs(path: impl AsRef<Path>, values: &[u8], dim: usize) -> Result<()> {
    write_vecs(path, values, dim)
}

fn bin_shape<T: Element>(path: &Path, f: &mut File, len: u64) -> Result<(usize, usize)> {
    if len < 8 {
        return Err(Error::format(path, "shorter than the 8-byte header"));
    }
    let n = read_i32(f, path, "the header")? as u32 as u64;
    let d = check_dim(path, read_i32(f, path, "the header")? as u32 as i64)?;
    let want = n
        .checked_mul((d * T::SIZE) as u64)
        .and_then(|b| b.checked_add(8));
    if want != Some(len) {
        return Err(Error::format(
            path,
            format!(
                "header says {n} vectors of dimension {d} ({}), but the file has {len} bytes",
                T::NAME
            ),
        ));
    }
    Ok((d, n as usize))
}

/// Reads a whole `.fbin` file.
///
/// # Errors
/// See the [module docs](self).
pub fn read_fbin(path: impl AsRef<Path>) -> Result<Vectors> {
    let m = VectorReader::<f32>::open_bigann(path)?.read_all()?;
    let dim = m.dim;
    Vectors::new(m.data, dim)
}

/// Reads a whole `.ibin` file.
///
/// # Errors
/// See the [module docs](self).
pub fn read_ibin(path: impl AsRef<Path>) -> Result<Matrix<i32>> {
    VectorReader::<i32>::open_bigann(path)?.read_all()
}

/// Reads a whole `.u8bin` file.
///
/// # Errors
/// See the [module docs](self).
pub fn read_u8bin(path: impl AsRef<Path>) -> Result<Matrix<u8>> {
    VectorReader::<u8>::open_bigann(path)?.read_all()
}

/// Writes a BigANN file (`n`, `d` header then the values), atomically as
/// [`write_vecs`].
///
/// # Errors
/// I/O errors; bad shape; more than `u32::MAX` vectors.
pub fn write_bin<T: Element>(path: impl AsRef<Path>, values: &[T], dim: usize) -> Result<()> {
    let path = path.as_ref();
    if dim == 0 || dim > MAX_DIM || !values.len().is_multiple_of(dim) {
        return Err(Error::invalid_param(
            "dim",
            format!("{} values do not make rows of {dim}", values.len()),
        ));
    }
    let n = u32::try_from(values.len() / dim)
        .map_err(|_| Error::invalid_param("n", "more than u32::MAX vectors"))?;
    crate::persist::write_atomic(path, |mut w| {
        w.write_all(&n.to_le_bytes())
            .and_then(|_| w.write_all(&(dim as u32).to_le_bytes()))
            .and_then(|_| write_le(&mut w, values))
            .map_err(|e| Error::io(path, e))
    })
}

/// Writes a `.fbin` file.
///
/// # Errors
/// As [`write_bin`].
pub fn write_fbin(path: impl AsRef<Path>, x: VectorsRef<'_>) -> Result<()> {
    write_bin(path, x.as_slice(), x.dim())
}

fn map(path: &Path) -> Result<memmap2::Mmap> {
    if cfg!(target_endian = "big") {
        return Err(Error::not_supported(
            "memory-mapped little-endian vectors",
            "a big-endian machine",
        ));
    }
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the map is read-only. As with every mmap, another process truncating or
    // rewriting the file while it is mapped is undefined behaviour; callers map files
    // they do not modify concurrently (documented on `MmapVecs` and `MmapBin`).
    unsafe { memmap2::Mmap::map(&f) }.map_err(|e| Error::io(path, e))
}

/// A memory-mapped texmex file, validated at open (every header checked), read without
/// copying. The file must not be modified while it is mapped.
#[derive(Debug)]
pub struct MmapVecs<T: Element> {
    map: memmap2::Mmap,
    dim: usize,
    len: usize,
    _t: PhantomData<T>,
}

impl<T: Element> MmapVecs<T> {
    /// Maps `path` and checks every vector's dimension header.
    ///
    /// # Errors
    /// I/O errors, an empty or truncated file, inconsistent dimensions.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let (mut f, len) = open(path)?;
        let (dim, n) = vecs_shape::<T>(path, &mut f, len)?;
        let map = map(path)?;
        if map.len() as u64 != len {
            return Err(Error::format(path, "the file changed size while opening"));
        }
        let rec = 4 + dim * T::SIZE;
        for i in 0..n {
            let h = &map[i * rec..i * rec + 4];
            let d = i32::from_le_bytes([h[0], h[1], h[2], h[3]]);
            if d as i64 != dim as i64 {
                return Err(Error::format(
                    path,
                    format!("vector {i} has dimension {d}, the first had {dim}"),
                ));
            }
        }
        Ok(MmapVecs {
            map,
            dim,
            len: n,
            _t: PhantomData,
        })
    }

    /// Dimension of every vector.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` when the file holds no vectors.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Vector `i`, or `None` past the end.
    pub fn row(&self, i: usize) -> Option<&[T]> {
        if i >= self.len {
            return None;
        }
        let rec = 4 + self.dim * T::SIZE;
        let bytes = &self.map[i * rec + 4..(i + 1) * rec];
        // Records start 4-byte aligned in a page-aligned map, so f32/i32 casts succeed.
        bytemuck::try_cast_slice(bytes).ok()
    }

    /// Copies vectors `start..end` into a contiguous matrix (clamped to the file).
    pub fn to_matrix(&self, start: usize, end: usize) -> Matrix<T> {
        let end = end.min(self.len);
        let mut data = Vec::with_capacity(end.saturating_sub(start) * self.dim);
        for i in start..end {
            if let Some(r) = self.row(i) {
                data.extend_from_slice(r);
            }
        }
        Matrix {
            data,
            dim: self.dim,
        }
    }
}

/// A memory-mapped BigANN file whose values are one contiguous slice (zero copy).
/// The file must not be modified while it is mapped.
#[derive(Debug)]
pub struct MmapBin<T: Element> {
    map: memmap2::Mmap,
    dim: usize,
    len: usize,
    _t: PhantomData<T>,
}

impl<T: Element> MmapBin<T> {
    /// Maps `path` and checks the header against the size.
    ///
    /// # Errors
    /// I/O errors, a short file, a header that disagrees with the size.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let (mut f, len) = open(path)?;
        let (dim, n) = bin_shape::<T>(path, &mut f, len)?;
        let map = map(path)?;
        if map.len() as u64 != len {
            return Err(Error::format(path, "the file changed size while opening"));
        }
        Ok(MmapBin {
            map,
            dim,
            len: n,
            _t: PhantomData,
        })
    }

    /// Dimension of every vector.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` when the file holds no vectors.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// All values, row-major, straight from the map.
    pub fn as_slice(&self) -> &[T] {
        // The data starts at byte 8 of a page-aligned map: aligned for 4-byte types.
        bytemuck::try_cast_slice(&self.map[8..]).unwrap_or(&[])
    }
}

impl MmapBin<f32> {
    /// The vectors as a view, without copying.
    ///
    /// # Errors
    /// Never for a file that opened; kept fallible for the view's own checks.
    pub fn vectors(&self) -> Result<VectorsRef<'_>> {
        VectorsRef::new(self.as_slice(), self.dim)
    }
}

/// Reads any supported float or byte vector file by its extension (`.fvecs`, `.bvecs`,
/// `.fbin`, `.u8bin`), converting bytes to floats.
///
/// # Errors
/// An unknown extension, or the reader's errors.
pub fn read_vectors(path: impl AsRef<Path>) -> Result<Vectors> {
    let path = path.as_ref();
    let name = path.to_string_lossy();
    if name.ends_with(".fvecs") {
        read_fvecs(path)
    } else if name.ends_with(".bvecs") {
        Ok(read_bvecs(path)?.to_f32())
    } else if name.ends_with(".fbin") {
        read_fbin(path)
    } else if name.ends_with(".u8bin") {
        Ok(read_u8bin(path)?.to_f32())
    } else {
        Err(Error::format(
            path,
            "unknown vector file extension (expected .fvecs, .bvecs, .fbin or .u8bin)",
        ))
    }
}
