//! The index container: one versioned, checksummed file per index (ARCHITECTURE.md §4).
//!
//! An index saves itself as named *sections* (`"index/quantizer/xb"`, `"index/ntotal"`):
//! scalars, strings and little-endian arrays. Components write their own sections under a
//! scope ([`StateWriter::scope`]) and read them back the same way, so a pipeline (transforms,
//! id map, coarse quantizer, encoding, lists) persists by each part persisting itself.
//!
//! Layout (version 1), all integers little-endian:
//!
//! | bytes | content |
//! |---|---|
//! | 16 | header: magic `VQINDEX\0`, format version `u32`, flags `u32` (0) |
//! | … | section payloads; arrays of 64 bytes or more start on a 64-byte boundary |
//! | … | table: `u32` count, then per section: `u16` name length, name (UTF-8), `u8` type, `u64` offset, `u64` length in bytes, `u32` CRC-32 of the payload |
//! | 32 | footer: `u64` table offset, `u64` table length, `u32` CRC-32 of the table, `u32` 0, magic `VQEND\0\0\0` |
//!
//! Reading validates everything before any allocation it sizes: magic, version, footer,
//! table checksum, every section's bounds, and each payload's checksum when it is read. A
//! section the reader never asked for is an error ([`StateReader::finish`]): it was written
//! by a newer vq that stores something this build would silently drop. With
//! [`LoadMode::Mmap`] large arrays are borrowed from the mapped file
//! ([`StateReader::get_shared`]) instead of being read, so opening a large index touches
//! only the pages it needs; the checksums of those arrays are then not verified (use
//! [`LoadMode::Read`], or [`verify_file`], to check them).
//!
//! ```
//! use vq_core::persist::{StateReader, StateWriter};
//! let mut buf = Vec::new();
//! let mut w = StateWriter::new(&mut buf)?;
//! w.scope("pq", |w| {
//!     w.put_u64("m", 8)?;
//!     w.put_f32s("centroids", &[0.5, 1.5])
//! })?;
//! w.finish()?;
//! let mut r = StateReader::from_bytes(buf, "memory")?;
//! let (m, c) = r.scope("pq", |r| Ok((r.get_u64("m")?, r.get_f32s("centroids")?)))?;
//! assert_eq!((m, c), (8, vec![0.5, 1.5]));
//! r.finish()?;
//! # Ok::<(), vq_core::Error>(())
//! ```

use std::any::Any;
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};

/// The container's magic bytes.
pub const MAGIC: [u8; 8] = *b"VQINDEX\0";
const END_MAGIC: [u8; 8] = *b"VQEND\0\0\0";
/// The newest container version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
const HEADER: usize = 16;
const FOOTER: usize = 32;
/// Arrays at least this long are aligned to this many bytes (a cache line), so that
/// mapped arrays can be cast to `f32`/`i64` slices in place.
const ALIGN: u64 = 64;
/// Longest section name.
const MAX_NAME: usize = 1024;
/// In [`LoadMode::Mmap`], shared arrays at least this long are not checksummed on open.
const MAP_VERIFY_LIMIT: usize = 1 << 20;

/// What a section holds (its element type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum DType {
    /// Raw bytes (codes).
    U8 = 0,
    /// `f32` array.
    F32 = 1,
    /// `u32` array.
    U32 = 2,
    /// `i64` array (ids).
    I64 = 3,
    /// `u64` array, or one `u64` scalar.
    U64 = 4,
    /// UTF-8 text.
    Str = 5,
    /// One `f64` scalar.
    F64 = 6,
}

impl DType {
    fn from_u8(v: u8) -> Option<DType> {
        Some(match v {
            0 => DType::U8,
            1 => DType::F32,
            2 => DType::U32,
            3 => DType::I64,
            4 => DType::U64,
            5 => DType::Str,
            6 => DType::F64,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::U8 | DType::Str => 1,
            DType::F32 | DType::U32 => 4,
            DType::I64 | DType::U64 | DType::F64 => 8,
        }
    }
}

#[derive(Clone, Debug)]
struct Entry {
    dtype: DType,
    offset: u64,
    len: u64,
    crc: u32,
}

/// Writes an index's sections to a byte stream (see the [module docs](self)).
pub struct StateWriter<'a> {
    out: &'a mut dyn Write,
    pos: u64,
    prefix: String,
    entries: Vec<(String, Entry)>,
    names: HashSet<String>,
}

impl std::fmt::Debug for StateWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateWriter")
            .field("pos", &self.pos)
            .field("prefix", &self.prefix)
            .field("sections", &self.entries.len())
            .finish()
    }
}

fn write_err(e: std::io::Error) -> Error {
    Error::Serialization(format!("write failed: {e}"))
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') || name.len() > MAX_NAME {
        return Err(Error::Serialization(format!(
            "section name `{name}` must be non-empty, at most {MAX_NAME} bytes, without `/`"
        )));
    }
    Ok(())
}

impl<'a> StateWriter<'a> {
    /// Starts a container on `out` (writes the header).
    ///
    /// # Errors
    /// I/O errors.
    pub fn new(out: &'a mut dyn Write) -> Result<StateWriter<'a>> {
        let mut header = [0u8; HEADER];
        header[..8].copy_from_slice(&MAGIC);
        header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.write_all(&header).map_err(write_err)?;
        Ok(StateWriter {
            out,
            pos: HEADER as u64,
            prefix: String::new(),
            entries: Vec::new(),
            names: HashSet::new(),
        })
    }

    /// Runs `f` with every section name prefixed by `name/`.
    ///
    /// # Errors
    /// `f`'s errors; an invalid name.
    pub fn scope<R>(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut StateWriter<'a>) -> Result<R>,
    ) -> Result<R> {
        check_name(name)?;
        let saved = self.prefix.len();
        self.prefix.push_str(name);
        self.prefix.push('/');
        let r = f(self);
        self.prefix.truncate(saved);
        r
    }

    fn pad_to(&mut self, align: u64) -> Result<()> {
        let pad = (align - self.pos % align) % align;
        if pad > 0 {
            self.out
                .write_all(&[0u8; ALIGN as usize][..pad as usize])
                .map_err(write_err)?;
            self.pos += pad;
        }
        Ok(())
    }

    /// Writes one section whose payload is produced in pieces by `body` (which calls the
    /// sink once per piece): large arrays are streamed, never copied into one buffer.
    ///
    /// # Errors
    /// A name written twice, a payload that is not whole elements, I/O errors.
    pub fn put_streamed(
        &mut self,
        name: &str,
        dtype: DType,
        body: impl FnOnce(&mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()>,
    ) -> Result<()> {
        check_name(name)?;
        let full = format!("{}{name}", self.prefix);
        if !self.names.insert(full.clone()) {
            return Err(Error::Serialization(format!(
                "section `{full}` written twice"
            )));
        }
        self.pad_to(8)?;
        // Alignment is decided before the length is known: align everything that is not
        // a scalar or a short string on a cache line.
        if !matches!(dtype, DType::Str | DType::F64) {
            self.pad_to(ALIGN)?;
        }
        let offset = self.pos;
        let mut hasher = crc32fast::Hasher::new();
        let mut len = 0u64;
        {
            let out = &mut *self.out;
            let mut sink = |b: &[u8]| -> Result<()> {
                hasher.update(b);
                len += b.len() as u64;
                out.write_all(b).map_err(write_err)
            };
            body(&mut sink)?;
        }
        if !len.is_multiple_of(dtype.size() as u64) {
            return Err(Error::Serialization(format!(
                "section `{full}`: {len} bytes is not a whole number of elements"
            )));
        }
        self.pos += len;
        self.entries.push((
            full,
            Entry {
                dtype,
                offset,
                len,
                crc: hasher.finalize(),
            },
        ));
        Ok(())
    }

    fn put(&mut self, name: &str, dtype: DType, bytes: &[u8]) -> Result<()> {
        self.put_streamed(name, dtype, |sink| sink(bytes))
    }

    /// A `u64` scalar.
    ///
    /// # Errors
    /// As [`StateWriter::put_streamed`].
    pub fn put_u64(&mut self, name: &str, v: u64) -> Result<()> {
        self.put(name, DType::U64, &v.to_le_bytes())
    }

    /// A `usize` scalar (stored as `u64`).
    ///
    /// # Errors
    /// As [`StateWriter::put_streamed`].
    pub fn put_usize(&mut self, name: &str, v: usize) -> Result<()> {
        self.put_u64(name, v as u64)
    }

    /// A flag (stored as a `u64`, 0 or 1).
    ///
    /// # Errors
    /// As [`StateWriter::put_streamed`].
    pub fn put_bool(&mut self, name: &str, v: bool) -> Result<()> {
        self.put_u64(name, u64::from(v))
    }

    /// An `f64` scalar.
    ///
    /// # Errors
    /// As [`StateWriter::put_streamed`].
    pub fn put_f64(&mut self, name: &str, v: f64) -> Result<()> {
        self.put(name, DType::F64, &v.to_le_bytes())
    }

    /// A UTF-8 string.
    ///
    /// # Errors
    /// As [`StateWriter::put_streamed`].
    pub fn put_str(&mut self, name: &str, s: &str) -> Result<()> {
        self.put(name, DType::Str, s.as_bytes())
    }

    /// Raw bytes (codes).
    ///
    /// # Errors
    /// As [`StateWriter::put_streamed`].
    pub fn put_bytes(&mut self, name: &str, b: &[u8]) -> Result<()> {
        self.put(name, DType::U8, b)
    }

    /// A section of any type from its little-endian payload (what
    /// [`StateReader::get_raw`] returns): for tools that rewrite containers section by
    /// section, e.g. converters from other formats.
    ///
    /// # Errors
    /// A payload whose length is not a multiple of the type's size; as
    /// [`StateWriter::put_streamed`].
    pub fn put_raw(&mut self, name: &str, dtype: DType, payload: &[u8]) -> Result<()> {
        if !payload.len().is_multiple_of(dtype.size()) {
            return Err(Error::Serialization(format!(
                "section `{name}`: {} bytes are not whole {dtype:?} values",
                payload.len()
            )));
        }
        self.put(name, dtype, payload)
    }

    /// An `f32` array.
    ///
    /// # Errors
    /// As [`StateWriter::put_streamed`].
    pub fn put_f32s(&mut self, name: &str, v: &[f32]) -> Result<()> {
        self.put_pod(name, DType::F32, v, |x: &f32| x.to_le_bytes())
    }

    /// A `u32` array.
    ///
    /// # Errors
    /// As [`StateWriter::put_streamed`].
    pub fn put_u32s(&mut self, name: &str, v: &[u32]) -> Result<()> {
        self.put_pod(name, DType::U32, v, |x: &u32| x.to_le_bytes())
    }

    /// An `i64` array.
    ///
    /// # Errors
    /// As [`StateWriter::put_streamed`].
    pub fn put_i64s(&mut self, name: &str, v: &[i64]) -> Result<()> {
        self.put_pod(name, DType::I64, v, |x: &i64| x.to_le_bytes())
    }

    /// A `u64` array.
    ///
    /// # Errors
    /// As [`StateWriter::put_streamed`].
    pub fn put_u64s(&mut self, name: &str, v: &[u64]) -> Result<()> {
        self.put_pod(name, DType::U64, v, |x: &u64| x.to_le_bytes())
    }

    fn put_pod<T: bytemuck::Pod, const N: usize>(
        &mut self,
        name: &str,
        dtype: DType,
        v: &[T],
        le: impl Fn(&T) -> [u8; N],
    ) -> Result<()> {
        self.put_streamed(name, dtype, |sink| {
            if cfg!(target_endian = "little") {
                sink(bytemuck::cast_slice(v))
            } else {
                let mut buf = Vec::with_capacity(v.len().min(8192) * N);
                for chunk in v.chunks(8192) {
                    buf.clear();
                    for x in chunk {
                        buf.extend_from_slice(&le(x));
                    }
                    sink(&buf)?;
                }
                Ok(())
            }
        })
    }

    /// Writes the table and footer; the stream then holds a complete container.
    ///
    /// # Errors
    /// I/O errors.
    pub fn finish(mut self) -> Result<()> {
        self.pad_to(8)?;
        let table_offset = self.pos;
        let mut table = Vec::new();
        table.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for (name, e) in &self.entries {
            table.extend_from_slice(&(name.len() as u16).to_le_bytes());
            table.extend_from_slice(name.as_bytes());
            table.push(e.dtype as u8);
            table.extend_from_slice(&e.offset.to_le_bytes());
            table.extend_from_slice(&e.len.to_le_bytes());
            table.extend_from_slice(&e.crc.to_le_bytes());
        }
        let mut footer = [0u8; FOOTER];
        footer[..8].copy_from_slice(&table_offset.to_le_bytes());
        footer[8..16].copy_from_slice(&(table.len() as u64).to_le_bytes());
        footer[16..20].copy_from_slice(&crc32fast::hash(&table).to_le_bytes());
        footer[24..].copy_from_slice(&END_MAGIC);
        self.out.write_all(&table).map_err(write_err)?;
        self.out.write_all(&footer).map_err(write_err)?;
        self.out.flush().map_err(write_err)
    }
}

/// Writes a file atomically: `body` writes to a temporary file beside `path`, which is
/// flushed, synced and renamed over `path` only if `body` succeeds. A crash or an error
/// leaves the old file (or none) in place, never a half-written one.
///
/// # Errors
/// `body`'s errors and I/O errors (the temporary file is removed).
pub fn write_atomic(
    path: impl AsRef<Path>,
    body: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    let path = path.as_ref();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::format(path, "not a file path"))?;
    // Unique per process and per call, so concurrent saves never share a temporary.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{}.tmp{}-{}",
        file_name.to_string_lossy(),
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let result = (|| {
        let f = File::options()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| Error::io(&tmp, e))?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        body(&mut w)?;
        let f = w
            .into_inner()
            .map_err(|e| Error::io(&tmp, e.into_error()))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        // Make the rename itself durable (best effort where directories cannot be opened).
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// How [`StateReader::open`] gets at the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadMode {
    /// Read the whole file into memory and verify every checksum.
    Read,
    /// Map the file; large arrays stay in the file and are paged in on use.
    Mmap,
}

#[derive(Debug)]
enum Source {
    /// Backed by `u64`s so every 8-aligned offset is aligned in memory too.
    Owned(Vec<u64>, usize),
    Mapped(memmap2::Mmap),
}

impl Source {
    fn bytes(&self) -> &[u8] {
        match self {
            Source::Owned(v, len) => &bytemuck::cast_slice(v)[..*len],
            Source::Mapped(m) => m,
        }
    }
}

/// An array borrowed from a loaded container (from memory, or from the mapped file),
/// cheap to clone, aligned for its element type.
#[derive(Clone, Debug)]
pub struct SharedBytes {
    src: Arc<Source>,
    start: usize,
    len: usize,
}

impl SharedBytes {
    /// The payload bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.src.bytes()[self.start..self.start + self.len]
    }

    /// The payload as a slice of `T` (little-endian hosts; `None` if the length or the
    /// alignment does not fit `T`, which a container written by vq never gives).
    pub fn cast<T: bytemuck::Pod>(&self) -> Option<&[T]> {
        if cfg!(target_endian = "big") && std::mem::size_of::<T>() > 1 {
            return None;
        }
        bytemuck::try_cast_slice(self.as_bytes()).ok()
    }

    /// Payload length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` for an empty payload.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `true` when the bytes live in a mapped file rather than in memory.
    pub fn is_mapped(&self) -> bool {
        matches!(*self.src, Source::Mapped(_))
    }

    /// The whole file at `path`, memory-mapped read-only: pages are read when used.
    ///
    /// The file must not be modified while it is mapped (as for [`LoadMode::Mmap`]);
    /// holders that can, check its length and modification time before use.
    ///
    /// # Errors
    /// I/O errors (a missing file, one that cannot be mapped), a file larger than the
    /// address space.
    pub fn map_file(path: impl AsRef<Path>) -> Result<SharedBytes> {
        let path = path.as_ref();
        let f = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
        let len = usize::try_from(len)
            .map_err(|_| Error::format(path, "file too large for this platform"))?;
        // SAFETY: the map is read-only. As with every mmap, another process truncating
        // or rewriting the file while it is mapped is undefined behaviour; this is
        // documented above, and holders check the file's length and time before use.
        let m = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| Error::io(path, e))?;
        if m.len() != len {
            return Err(Error::format(path, "the file changed size while opening"));
        }
        Ok(SharedBytes {
            src: Arc::new(Source::Mapped(m)),
            start: 0,
            len,
        })
    }

    /// A copy of `bytes` held in memory (aligned to 8 bytes), shared like a mapped file's.
    pub fn copy_from_slice(bytes: &[u8]) -> SharedBytes {
        let len = bytes.len();
        let mut words = vec![0u64; len.div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..len].copy_from_slice(bytes);
        SharedBytes {
            src: Arc::new(Source::Owned(words, len)),
            start: 0,
            len,
        }
    }

    /// The `len` bytes from `start` (relative to this slice), sharing the same storage;
    /// `None` when the range is out of bounds.
    pub fn slice(&self, start: usize, len: usize) -> Option<SharedBytes> {
        let end = start.checked_add(len)?;
        (end <= self.len).then(|| SharedBytes {
            src: Arc::clone(&self.src),
            start: self.start + start,
            len,
        })
    }
}

/// Parts handed to a [`StateReader`] besides its sections (see [`StateReader::attach`]).
#[derive(Default)]
struct Attached(BTreeMap<String, Box<dyn Any + Send + Sync>>);

impl std::fmt::Debug for Attached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// Reads an index's sections from a container (see the [module docs](self)).
#[derive(Debug)]
pub struct StateReader {
    src: Arc<Source>,
    entries: BTreeMap<String, Entry>,
    used: HashSet<String>,
    prefix: String,
    path: PathBuf,
    version: u32,
    attached: Attached,
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

impl StateReader {
    /// Reads a container held in memory; `label` names it in error messages.
    ///
    /// # Errors
    /// A malformed container (see [`StateReader::open`]).
    pub fn from_bytes(bytes: Vec<u8>, label: &str) -> Result<StateReader> {
        let len = bytes.len();
        let mut words = vec![0u64; len.div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..len].copy_from_slice(&bytes);
        drop(bytes);
        StateReader::parse(Source::Owned(words, len), PathBuf::from(label))
    }

    /// Opens the container at `path`.
    ///
    /// # Errors
    /// I/O errors; a file that is not a vq container, is truncated, has a newer format
    /// version ([`Error::UnsupportedVersion`]), a corrupt table or section bounds
    /// outside the file ([`Error::Format`]).
    pub fn open(path: impl AsRef<Path>, mode: LoadMode) -> Result<StateReader> {
        let path = path.as_ref();
        let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
        let len = usize::try_from(len)
            .map_err(|_| Error::format(path, "file too large for this platform"))?;
        let src = match mode {
            LoadMode::Read => {
                let mut words = vec![0u64; len.div_ceil(8)];
                f.read_exact(&mut bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..len])
                    .map_err(|e| Error::io(path, e))?;
                Source::Owned(words, len)
            }
            LoadMode::Mmap => {
                // SAFETY: the map is read-only. As with every mmap, another process
                // truncating or rewriting the file while it is mapped is undefined
                // behaviour; `save` never rewrites a file in place (it renames a new
                // one over it), and callers must not modify a mapped index file.
                let m = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| Error::io(path, e))?;
                if m.len() != len {
                    return Err(Error::format(path, "the file changed size while opening"));
                }
                Source::Mapped(m)
            }
        };
        StateReader::parse(src, path.to_path_buf())
    }

    fn parse(src: Source, path: PathBuf) -> Result<StateReader> {
        let bad = |m: String| Error::format(&path, m);
        let b = src.bytes();
        if b.len() < 8 || b[..8] != MAGIC {
            return Err(bad("not a vq index file (bad magic)".into()));
        }
        if b.len() < HEADER + FOOTER {
            return Err(bad(format!("truncated: {} bytes", b.len())));
        }
        let version = u32_at(b, 8);
        if u32_at(b, 12) != 0 {
            return Err(bad("unknown header flags".into()));
        }
        if version == 0 {
            return Err(bad("format version 0 is invalid".into()));
        }
        if version > FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let foot = &b[b.len() - FOOTER..];
        if foot[24..] != END_MAGIC || u32_at(foot, 20) != 0 {
            return Err(bad("truncated or corrupt: no end marker".into()));
        }
        let t_off = u64_at(foot, 0);
        let t_len = u64_at(foot, 8);
        let t_crc = u32_at(foot, 16);
        let body_end = (b.len() - FOOTER) as u64;
        if t_off < HEADER as u64 || t_off.checked_add(t_len) != Some(body_end) {
            return Err(bad("corrupt footer: the table is out of place".into()));
        }
        let table = &b[t_off as usize..body_end as usize];
        if crc32fast::hash(table) != t_crc {
            return Err(bad("corrupt section table (checksum mismatch)".into()));
        }
        let mut at = 0usize;
        let take = |at: &mut usize, n: usize| -> Result<&[u8]> {
            let s = table
                .get(*at..*at + n)
                .ok_or_else(|| bad("section table is truncated".into()))?;
            *at += n;
            Ok(s)
        };
        let count = u32_at(take(&mut at, 4)?, 0) as usize;
        // Each entry is at least 23 bytes: a hostile count cannot allocate.
        if count > table.len() / 23 {
            return Err(bad(format!("section table claims {count} sections")));
        }
        let mut entries = BTreeMap::new();
        for _ in 0..count {
            let nl = u16::from_le_bytes([take(&mut at, 1)?[0], take(&mut at, 1)?[0]]) as usize;
            let name = std::str::from_utf8(take(&mut at, nl)?)
                .map_err(|_| bad("a section name is not UTF-8".into()))?
                .to_string();
            let dtype = DType::from_u8(take(&mut at, 1)?[0])
                .ok_or_else(|| bad(format!("section `{name}` has an unknown type")))?;
            let offset = u64_at(take(&mut at, 8)?, 0);
            let len = u64_at(take(&mut at, 8)?, 0);
            let crc = u32_at(take(&mut at, 4)?, 0);
            let end = offset.checked_add(len);
            if offset < HEADER as u64 || end.is_none_or(|e| e > t_off) {
                return Err(bad(format!("section `{name}` lies outside the file")));
            }
            if !len.is_multiple_of(dtype.size() as u64) {
                return Err(bad(format!(
                    "section `{name}` is not a whole number of elements"
                )));
            }
            if entries
                .insert(
                    name.clone(),
                    Entry {
                        dtype,
                        offset,
                        len,
                        crc,
                    },
                )
                .is_some()
            {
                return Err(bad(format!("section `{name}` appears twice")));
            }
        }
        if at != table.len() {
            return Err(bad("trailing bytes in the section table".into()));
        }
        Ok(StateReader {
            src: Arc::new(src),
            entries,
            used: HashSet::new(),
            prefix: String::new(),
            path,
            version,
            attached: Attached::default(),
        })
    }

    /// Size of the whole container in bytes (bounds what a loader may allocate from
    /// counts it reads before the sections that justify them).
    pub fn total_bytes(&self) -> usize {
        self.src.bytes().len()
    }

    /// Names and byte lengths of every section, in name order.
    pub fn sections(&self) -> impl Iterator<Item = (&str, u64)> {
        self.entries.iter().map(|(k, e)| (k.as_str(), e.len))
    }

    /// The container's format version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// `true` when the file is memory-mapped ([`LoadMode::Mmap`]).
    pub fn is_mapped(&self) -> bool {
        matches!(*self.src, Source::Mapped(_))
    }

    /// The file (or label) errors name.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A [`Error::Format`] about the section `name` (in the current scope).
    pub fn error(&self, name: &str, reason: impl std::fmt::Display) -> Error {
        Error::format(
            &self.path,
            format!("section `{}{name}`: {reason}", self.prefix),
        )
    }

    /// Runs `f` with every section name prefixed by `name/`.
    ///
    /// # Errors
    /// `f`'s errors.
    pub fn scope<R>(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut StateReader) -> Result<R>,
    ) -> Result<R> {
        let saved = self.prefix.len();
        self.prefix.push_str(name);
        self.prefix.push('/');
        let r = f(self);
        self.prefix.truncate(saved);
        r
    }

    /// `true` when the section `name` (in the current scope) exists.
    pub fn has(&self, name: &str) -> bool {
        self.entries.contains_key(&format!("{}{name}", self.prefix))
    }

    fn entry(&mut self, name: &str, dtype: DType) -> Result<(Entry, String)> {
        let full = format!("{}{name}", self.prefix);
        let e = self
            .entries
            .get(&full)
            .cloned()
            .ok_or_else(|| Error::format(&self.path, format!("missing section `{full}`")))?;
        if e.dtype != dtype {
            return Err(Error::format(
                &self.path,
                format!("section `{full}` holds {:?}, expected {dtype:?}", e.dtype),
            ));
        }
        self.used.insert(full.clone());
        Ok((e, full))
    }

    fn payload(&mut self, name: &str, dtype: DType, verify: bool) -> Result<(usize, usize)> {
        let (e, full) = self.entry(name, dtype)?;
        let (start, len) = (e.offset as usize, e.len as usize);
        if verify && crc32fast::hash(&self.src.bytes()[start..start + len]) != e.crc {
            return Err(Error::format(
                &self.path,
                format!("section `{full}` is corrupt (checksum mismatch)"),
            ));
        }
        Ok((start, len))
    }

    fn bytes_of(&mut self, name: &str, dtype: DType) -> Result<&[u8]> {
        let (s, l) = self.payload(name, dtype, true)?;
        Ok(&self.src.bytes()[s..s + l])
    }

    /// The type and little-endian payload of the section `name` (in the current scope),
    /// whatever its type; the checksum is verified. See [`StateWriter::put_raw`].
    ///
    /// # Errors
    /// A missing or corrupt section.
    pub fn get_raw(&mut self, name: &str) -> Result<(DType, Vec<u8>)> {
        let full = format!("{}{name}", self.prefix);
        let dtype = self
            .entries
            .get(&full)
            .map(|e| e.dtype)
            .ok_or_else(|| Error::format(&self.path, format!("missing section `{full}`")))?;
        Ok((dtype, self.bytes_of(name, dtype)?.to_vec()))
    }

    /// A `u64` scalar.
    ///
    /// # Errors
    /// A missing or corrupt section, or one of another type or length.
    pub fn get_u64(&mut self, name: &str) -> Result<u64> {
        let b = self.bytes_of(name, DType::U64)?;
        if b.len() != 8 {
            return Err(self.error(name, "expected one u64"));
        }
        Ok(u64_at(b, 0))
    }

    /// A `usize` scalar no larger than `max` (bounds what a hostile file can make the
    /// reader allocate or index).
    ///
    /// # Errors
    /// As [`StateReader::get_u64`], or a value above `max`.
    pub fn get_usize(&mut self, name: &str, max: usize) -> Result<usize> {
        let v = self.get_u64(name)?;
        match usize::try_from(v) {
            Ok(v) if v <= max => Ok(v),
            _ => Err(self.error(name, format!("value {v} exceeds {max}"))),
        }
    }

    /// A flag written by [`StateWriter::put_bool`].
    ///
    /// # Errors
    /// As [`StateReader::get_u64`], or a value other than 0 and 1.
    pub fn get_bool(&mut self, name: &str) -> Result<bool> {
        match self.get_u64(name)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(self.error(name, format!("{v} is not a flag (0 or 1)"))),
        }
    }

    /// An `f64` scalar.
    ///
    /// # Errors
    /// As [`StateReader::get_u64`].
    pub fn get_f64(&mut self, name: &str) -> Result<f64> {
        let b = self.bytes_of(name, DType::F64)?;
        if b.len() != 8 {
            return Err(self.error(name, "expected one f64"));
        }
        Ok(f64::from_bits(u64_at(b, 0)))
    }

    /// A UTF-8 string.
    ///
    /// # Errors
    /// As [`StateReader::get_u64`], or invalid UTF-8.
    pub fn get_str(&mut self, name: &str) -> Result<String> {
        let b = self.bytes_of(name, DType::Str)?;
        match std::str::from_utf8(b) {
            Ok(s) => Ok(s.to_string()),
            Err(_) => Err(self.error(name, "not UTF-8")),
        }
    }

    /// Raw bytes, copied.
    ///
    /// # Errors
    /// As [`StateReader::get_u64`].
    pub fn get_bytes(&mut self, name: &str) -> Result<Vec<u8>> {
        Ok(self.bytes_of(name, DType::U8)?.to_vec())
    }

    /// An `f32` array, copied.
    ///
    /// # Errors
    /// As [`StateReader::get_u64`].
    pub fn get_f32s(&mut self, name: &str) -> Result<Vec<f32>> {
        let b = self.bytes_of(name, DType::F32)?;
        Ok(b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// A `u32` array, copied.
    ///
    /// # Errors
    /// As [`StateReader::get_u64`].
    pub fn get_u32s(&mut self, name: &str) -> Result<Vec<u32>> {
        let b = self.bytes_of(name, DType::U32)?;
        Ok(b.chunks_exact(4).map(|c| u32_at(c, 0)).collect())
    }

    /// An `i64` array, copied.
    ///
    /// # Errors
    /// As [`StateReader::get_u64`].
    pub fn get_i64s(&mut self, name: &str) -> Result<Vec<i64>> {
        let b = self.bytes_of(name, DType::I64)?;
        Ok(b.chunks_exact(8).map(|c| u64_at(c, 0) as i64).collect())
    }

    /// A `u64` array, copied.
    ///
    /// # Errors
    /// As [`StateReader::get_u64`].
    pub fn get_u64s(&mut self, name: &str) -> Result<Vec<u64>> {
        let b = self.bytes_of(name, DType::U64)?;
        Ok(b.chunks_exact(8).map(|c| u64_at(c, 0)).collect())
    }

    /// An array borrowed without copying. Its checksum is verified, except for large
    /// arrays of a mapped file (verifying would read them all; [`verify_file`] does).
    ///
    /// # Errors
    /// As [`StateReader::get_u64`].
    pub fn get_shared(&mut self, name: &str, dtype: DType) -> Result<SharedBytes> {
        let verify = !self.is_mapped()
            || self
                .entries
                .get(&format!("{}{name}", self.prefix))
                .is_some_and(|e| (e.len as usize) < MAP_VERIFY_LIMIT);
        let (start, len) = self.payload(name, dtype, verify)?;
        Ok(SharedBytes {
            src: Arc::clone(&self.src),
            start,
            len,
        })
    }

    /// Hands the loader a part that is not stored in the container, under `name` (in
    /// the current scope): a loader that knows such a part takes it with
    /// [`StateReader::take_attached`] instead of reading its sections. This is how a
    /// file of another format is loaded with some of its storage left where it is
    /// (e.g. inverted lists read in place from a mapped Faiss file). A second part under
    /// the same name replaces the first.
    pub fn attach(&mut self, name: &str, part: Box<dyn Any + Send + Sync>) {
        self.attached
            .0
            .insert(format!("{}{name}", self.prefix), part);
    }

    /// Takes the part attached under `name` (in the current scope), if any.
    pub fn take_attached(&mut self, name: &str) -> Option<Box<dyn Any + Send + Sync>> {
        self.attached.0.remove(&format!("{}{name}", self.prefix))
    }

    /// Checks that every section was read and every attached part taken. A section
    /// nobody asked for was written by a newer vq (or by another index type): loading
    /// would silently drop it, so it is an error.
    ///
    /// # Errors
    /// [`Error::Format`] naming the first unread section or untaken part.
    pub fn finish(&self) -> Result<()> {
        if let Some(k) = self.attached.0.keys().next() {
            return Err(Error::format(
                &self.path,
                format!("the part attached as `{k}` was not used by the index"),
            ));
        }
        match self.entries.keys().find(|k| !self.used.contains(*k)) {
            None => Ok(()),
            Some(k) => Err(Error::format(
                &self.path,
                format!(
                    "unknown section `{k}`: the file was written by a newer vq or for \
                     another index type (this build reads format version {FORMAT_VERSION})"
                ),
            )),
        }
    }
}

/// Reads a whole container file and verifies every section's checksum.
///
/// # Errors
/// As [`StateReader::open`], and the first section whose checksum does not match.
pub fn verify_file(path: impl AsRef<Path>) -> Result<()> {
    let mut r = StateReader::open(path, LoadMode::Read)?;
    let names: Vec<(String, DType)> = r
        .entries
        .iter()
        .map(|(k, e)| (k.clone(), e.dtype))
        .collect();
    for (name, dtype) in names {
        r.payload(&name, dtype, true)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sample() -> Vec<u8> {
        let mut buf = Vec::new();
        let mut w = StateWriter::new(&mut buf).unwrap();
        w.put_str("kind", "test").unwrap();
        w.scope("a", |w| {
            w.put_u64("n", 3)?;
            w.put_f32s("x", &[1.0, 2.0, 3.0])?;
            w.put_i64s("ids", &[-1, 7, 9])?;
            w.put_bytes("codes", &[1, 2, 3, 4, 5])
        })
        .unwrap();
        w.put_f64("r", 0.25).unwrap();
        w.finish().unwrap();
        buf
    }

    #[test]
    fn round_trip_and_alignment() {
        let buf = sample();
        let mut r = StateReader::from_bytes(buf, "mem").unwrap();
        assert_eq!(r.get_str("kind").unwrap(), "test");
        r.scope("a", |r| {
            assert_eq!(r.get_u64("n")?, 3);
            assert_eq!(r.get_f32s("x")?, vec![1.0, 2.0, 3.0]);
            let ids = r.get_shared("ids", DType::I64)?;
            assert_eq!(ids.cast::<i64>().unwrap(), &[-1, 7, 9]);
            assert_eq!(r.get_bytes("codes")?, vec![1, 2, 3, 4, 5]);
            Ok(())
        })
        .unwrap();
        assert_eq!(r.get_f64("r").unwrap(), 0.25);
        r.finish().unwrap();
    }

    #[test]
    fn unread_sections_missing_sections_and_wrong_types_are_errors() {
        let mut r = StateReader::from_bytes(sample(), "mem").unwrap();
        assert_eq!(r.get_str("kind").unwrap(), "test");
        let e = r.finish().unwrap_err().to_string();
        assert!(e.contains("unknown section `a/codes`"), "{e}");
        assert!(r.get_u64("nothing").is_err());
        assert!(r.get_u64("kind").is_err());
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_is_an_error_or_detected() {
        let buf = sample();
        for cut in 0..buf.len() {
            assert!(
                StateReader::from_bytes(buf[..cut].to_vec(), "m").is_err(),
                "{cut}"
            );
        }
        let read_all = |b: Vec<u8>| -> Result<()> {
            let mut r = StateReader::from_bytes(b, "m")?;
            r.get_str("kind")?;
            r.scope("a", |r| {
                r.get_u64("n")?;
                r.get_f32s("x")?;
                r.get_i64s("ids")?;
                r.get_bytes("codes")?;
                Ok(())
            })?;
            r.get_f64("r")?;
            r.finish()
        };
        read_all(buf.clone()).unwrap();
        for i in 0..buf.len() {
            let mut b = buf.clone();
            b[i] ^= 0x20;
            // Padding bytes carry no information; every other byte is covered by a
            // checksum, the magic, or the version.
            if let Ok(()) = read_all(b) {
                assert!(
                    buf[i] == 0 && i >= HEADER && i < buf.len() - FOOTER,
                    "flipping byte {i} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn newer_versions_and_foreign_files_are_refused() {
        let mut b = sample();
        b[8] = 2;
        assert!(matches!(
            StateReader::from_bytes(b, "m"),
            Err(Error::UnsupportedVersion { found: 2, .. })
        ));
        assert!(StateReader::from_bytes(b"hello world".to_vec(), "m").is_err());
        assert!(StateReader::from_bytes(Vec::new(), "m").is_err());
    }

    #[test]
    fn atomic_write_and_mmap() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.vqi");
        write_atomic(&p, |w| {
            let mut s = StateWriter::new(w)?;
            s.put_f32s("big", &vec![0.5f32; 1 << 19])?;
            s.finish()
        })
        .unwrap();
        // A failing body leaves the old file untouched.
        let e = write_atomic(&p, |w| {
            w.write_all(b"partial").map_err(write_err)?;
            Err(Error::Serialization("boom".into()))
        });
        assert!(e.is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let mut r = StateReader::open(&p, LoadMode::Mmap).unwrap();
        let big = r.get_shared("big", DType::F32).unwrap();
        assert!(big.is_mapped());
        assert_eq!(big.cast::<f32>().unwrap().len(), 1 << 19);
        verify_file(&p).unwrap();
    }
}
