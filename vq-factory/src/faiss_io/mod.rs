//! Faiss's own index files: read them into vq, write vq indexes for Faiss.
//!
//! [`read_index`] parses a file written by Faiss's `write_index` and returns the
//! equivalent [`FactoryIndex`] (its canonical factory string, the same trained
//! quantizers, the same stored codes, ids and graph links), so that a Faiss index built
//! over days is searched by vq unchanged. [`write_index`] does the reverse: Faiss's
//! `read_index` loads the file and returns vq's results.
//!
//! | Faiss class (tag) | vq factory string |
//! |---|---|
//! | `IndexFlatL2` / `IndexFlatIP` (`IxF2`, `IxFI`) | `Flat` |
//! | `IndexIDMap` / `IndexIDMap2` (`IxMp`, `IxM2`) | `IDMap,…` / `IDMap2,…` |
//! | `IndexPreTransform` (`IxPT`) with `PCAMatrix` (`Pcam`), `RandomRotationMatrix` (`rrot`), `LinearTransform` (`LTra`, how Faiss stores OPQ), `NormalizationTransform` (`VNrm`) | `PCA{d}` / `PCAW{d}` / `PCAR{d}`, `RR{d}`, `OPQ…` written as `LTra` and read as `RR{d}` (see below), `L2norm` |
//! | `IndexPQ` (`IxPq`) | `PQ{M}x{nbits}` |
//! | `IndexScalarQuantizer` (`IxSQ`) | `SQ8`, `SQ4`, `SQ6`, `SQfp16`, `SQbf16`, `SQ8_uniform`, `SQ4_uniform`, `SQ8_direct`, `SQ8_direct_signed` |
//! | `IndexIVFFlat` (`IwFl`), `IndexIVFScalarQuantizer` (`IwSq`), `IndexIVFPQ` (`IwPQ`, by residual or not) | `IVF{n},Flat`, `IVF{n},SQ…`, `IVF{n},PQ…` |
//! | coarse quantizers: `IndexFlat`, `IndexHNSWFlat`, `MultiIndexQuantizer` (`Imiq`) | `IVF{n}`, `IVF{n}_HNSW{M}`, `IMI2x{b}` |
//! | `IndexHNSWFlat` / `SQ` / `PQ` (`IHNf`, `IHNs`, `IHNp`) | `HNSW{M}`, `HNSW{M}_SQ…`, `HNSW{M}_PQ…` |
//! | `IndexPQFastScan` (`IPfs`), `IndexIVFPQFastScan` (`IwPf`, block lists `ilbl`) | `PQ{M}x4fs[_bbs]`, `IVF{n},PQ{M}x4fs[r][_bbs]` |
//! | `IndexRefine` / `IndexRefineFlat` (`IxRF`) | `…,RFlat`, `…,Refine(…)` |
//!
//! Search-time settings stored in the file are kept: `nprobe`, `efSearch`,
//! `efConstruction`, `k_factor`. Any other Faiss type is an [`Error::NotSupported`]
//! naming its tag (and its class when known), and a corrupt or truncated file is an
//! [`Error::Format`] naming the byte where reading stopped; nothing in the file is
//! trusted before it is checked, and no count read from it allocates more than the file
//! holds.
//!
//! Notes on the mapping:
//! - Faiss writes an `OPQMatrix` as a plain `LinearTransform`; vq reads such a matrix
//!   (orthonormal rows, no bias) as a fixed rotation `RR{d_out}` holding that matrix, which
//!   transforms exactly as the OPQ did. Other linear transforms are refused.
//! - vq's fast-scan indexes return the exact 4-bit ADC top-k of the same codes (Faiss's
//!   return the order of their quantised sums): the results of a read file are those
//!   of Faiss's `IndexPQ` / `IndexIVFPQ` with the same quantizers.
//! - An HNSW graph is read link for link. An HNSW index with removed vectors has no Faiss
//!   equivalent (Faiss cannot delete from HNSW) and is refused by [`write_index`].
//!   A read graph links new vectors by Faiss's rule (`linkAllCandidates` on) with coded
//!   builds on (`codedBuild`) and Faiss's re-selection headroom (`pruneHeadroom` 0.2);
//!   Faiss's files hold none of these, so a vq index built with `linkAllCandidates=0`,
//!   `codedBuild=0` or another headroom is read back with the defaults.
//! - Faiss's on-disk inverted lists (`OnDiskInvertedLists`, `ilod`) are read from their
//!   data file (where the index names it, else beside the index file, as Faiss's
//!   `IO_FLAG_ONDISK_SAME_DIR`): into memory by [`read_index`], mapped by
//!   [`mmap_index`].
//! - [`mmap_index`] is Faiss's `IO_FLAG_MMAP`: an IVF's inverted lists stay in the
//!   mapped file and are read when searched (read-only); the rest is read into memory.
//!
//! ```
//! use vq_core::{Index, Metric, SearchParams, VectorsRef};
//! use vq_factory::{faiss_io, index_factory};
//! let d = 8;
//! let xb: Vec<f32> = (0..64 * d).map(|i| ((i * 37) % 101) as f32).collect();
//! let mut index = index_factory(d, "IDMap,Flat", Metric::L2)?;
//! let ids: Vec<i64> = (0..64).map(|i| 1000 + i).collect();
//! index.add_with_ids(VectorsRef::new(&xb, d)?, &ids)?;
//! let mut bytes = Vec::new();
//! faiss_io::write_index_to(&index, &mut bytes)?; // what faiss.read_index reads
//! let back = faiss_io::read_index_bytes(&bytes)?;
//! assert_eq!(back.spec().to_string(), "IDMap,Flat");
//! let q = VectorsRef::new(&xb[..d], d)?;
//! assert_eq!(back.search(q, 1, &SearchParams::default())?.labels()[0], 1000);
//! # Ok::<(), vq_core::Error>(())
//! ```

mod export;
mod format;
mod import;
mod mapped;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use vq_core::persist::{DType, StateReader, StateWriter, write_atomic};
use vq_core::{Error, Result};

use crate::FactoryIndex;

/// Reads a file written by Faiss's `write_index`.
///
/// # Errors
/// I/O errors; [`Error::NotSupported`] for a Faiss index type vq does not read (the
/// message names its tag); [`Error::Format`] for a truncated or corrupt file, or one
/// whose parts disagree (sizes, dimensions, links out of range).
pub fn read_index(path: impl AsRef<Path>) -> Result<FactoryIndex> {
    let path = path.as_ref();
    // A regular file is mapped (lists are then copied once, straight from the map);
    // anything else (a pipe), or a file that cannot be mapped, is read whole.
    let regular = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .is_file();
    let mapped = if regular {
        vq_core::persist::SharedBytes::map_file(path).ok()
    } else {
        None
    };
    let bytes = match mapped {
        Some(b) => b,
        None => vq_core::persist::SharedBytes::copy_from_slice(
            &std::fs::read(path).map_err(|e| Error::io(path, e))?,
        ),
    };
    let file = format::MappedFile {
        bytes,
        path: path.to_path_buf(),
    };
    import::read(&file, &path.display().to_string(), true)
}

/// Reads a file written by Faiss's `write_index`, leaving its inverted lists in the
/// file: what Faiss's `read_index(path, IO_FLAG_MMAP)` does. The file is memory-mapped;
/// an IVF's list codes are read in place when a search probes them (ids too, where the
/// file stores them 8-byte aligned; elsewhere they are copied, 8 bytes per vector), so
/// opening a large IVF file is near-instant and its memory is shared with the page
/// cache. Faiss's on-disk lists (`OnDiskInvertedLists`) are mapped from their data
/// file. Everything else (quantizers, codebooks, flat and HNSW storage, fast-scan block
/// lists, which vq lays out differently) is read into memory as by [`read_index`].
///
/// The mapped lists are read-only (adding or removing is an
/// [`Error::NotSupported`]), and the file must not be modified in place while it is
/// mapped: a change of the opened file's length or modification time is detected
/// before each search, which then fails with [`Error::Format`]. A file renamed over the
/// path (as [`write_index`] writes, even this index over its own file) or the path
/// removed leaves the mapped file whole: the index keeps answering from it.
///
/// # Errors
/// As [`read_index`].
pub fn mmap_index(path: impl AsRef<Path>) -> Result<FactoryIndex> {
    let path = path.as_ref();
    let file = format::MappedFile {
        bytes: vq_core::persist::SharedBytes::map_file(path)?,
        path: path.to_path_buf(),
    };
    import::read(&file, &path.display().to_string(), false)
}

/// Reads a Faiss index from its bytes (what Faiss's `serialize_index` returns).
///
/// # Errors
/// As [`read_index`].
pub fn read_index_bytes(bytes: &[u8]) -> Result<FactoryIndex> {
    import::read(&format::MappedFile::in_memory(bytes), "<memory>", true)
}

/// Writes `index` in Faiss's format to `out`.
///
/// # Errors
/// [`Error::NotSupported`] for an untrained index, or a part Faiss has no equivalent of
/// (a registered codec or transform, an HNSW index with removed vectors, a coarse
/// quantizer other than flat, HNSW or IMI); I/O errors.
pub fn write_index_to(index: &FactoryIndex, out: &mut dyn Write) -> Result<()> {
    let bytes = export::write(index)?;
    out.write_all(&bytes)
        .map_err(|e| Error::Serialization(format!("write failed: {e}")))
}

/// Writes `index` in Faiss's format to `path`, atomically (a temporary file renamed
/// into place).
///
/// # Errors
/// As [`write_index_to`].
pub fn write_index(index: &FactoryIndex, path: impl AsRef<Path>) -> Result<()> {
    let bytes = export::write(index)?;
    write_atomic(path, |w| {
        w.write_all(&bytes)
            .map_err(|e| Error::Serialization(format!("write failed: {e}")))
    })
}

/// `true` when `bytes` start like a Faiss index file (a tag vq knows) rather than a vq
/// container: lets tools accept either.
pub fn looks_like_faiss(bytes: &[u8]) -> bool {
    bytes.len() >= 4 && !bytes.starts_with(&vq_core::persist::MAGIC[..4]) && {
        let tag = [bytes[0], bytes[1], bytes[2], bytes[3]];
        tag.iter().all(|c| c.is_ascii_alphanumeric())
    }
}

/// A vq container's sections by full name, to rewrite them one by one.
#[derive(Debug, Default)]
pub(crate) struct Sections {
    map: BTreeMap<String, (DType, Vec<u8>)>,
}

impl Sections {
    /// Every section of a container.
    pub(crate) fn from_container(bytes: Vec<u8>) -> Result<Sections> {
        let mut r = StateReader::from_bytes(bytes, "<memory>")?;
        let names: Vec<String> = r.sections().map(|(n, _)| n.to_string()).collect();
        let mut map = BTreeMap::new();
        for n in names {
            let v = r.get_raw(&n)?;
            map.insert(n, v);
        }
        Ok(Sections { map })
    }

    /// The container holding these sections.
    pub(crate) fn to_container(&self) -> Result<Vec<u8>> {
        // Payloads, alignment padding and the table: sized once, no regrowth copies.
        let size: usize = self
            .map
            .iter()
            .map(|(k, (_, v))| v.len() + k.len() + 128)
            .sum();
        let mut out = Vec::with_capacity(size + 4096);
        let mut w = StateWriter::new(&mut out)?;
        fn put(w: &mut StateWriter<'_>, name: &str, dtype: DType, payload: &[u8]) -> Result<()> {
            match name.split_once('/') {
                Some((scope, rest)) => w.scope(scope, |w| put(w, rest, dtype, payload)),
                None => w.put_raw(name, dtype, payload),
            }
        }
        for (name, (dtype, payload)) in &self.map {
            put(&mut w, name, *dtype, payload)?;
        }
        w.finish()?;
        Ok(out)
    }

    fn missing(name: &str) -> Error {
        Error::Serialization(format!("vq index has no section `{name}`"))
    }

    fn get(&self, name: &str, dtype: DType) -> Result<&[u8]> {
        match self.map.get(name) {
            Some((t, v)) if *t == dtype => Ok(v),
            Some((t, _)) => Err(Error::Serialization(format!(
                "section `{name}` holds {t:?}, expected {dtype:?}"
            ))),
            None => Err(Self::missing(name)),
        }
    }

    pub(crate) fn u64(&self, name: &str) -> Result<u64> {
        let b = self.get(name, DType::U64)?;
        let a: [u8; 8] = b
            .try_into()
            .map_err(|_| Error::Serialization(format!("section `{name}` is not one u64")))?;
        Ok(u64::from_le_bytes(a))
    }

    pub(crate) fn usize(&self, name: &str) -> Result<usize> {
        usize::try_from(self.u64(name)?)
            .map_err(|_| Error::Serialization(format!("section `{name}` is too large")))
    }

    pub(crate) fn bool(&self, name: &str) -> Result<bool> {
        Ok(self.u64(name)? != 0)
    }

    pub(crate) fn f64(&self, name: &str) -> Result<f64> {
        let b = self.get(name, DType::F64)?;
        let a: [u8; 8] = b
            .try_into()
            .map_err(|_| Error::Serialization(format!("section `{name}` is not one f64")))?;
        Ok(f64::from_le_bytes(a))
    }

    pub(crate) fn str(&self, name: &str) -> Result<String> {
        Ok(String::from_utf8_lossy(self.get(name, DType::Str)?).into_owned())
    }

    pub(crate) fn bytes(&self, name: &str) -> Result<&[u8]> {
        self.get(name, DType::U8)
    }

    pub(crate) fn f32s(&self, name: &str) -> Result<Vec<f32>> {
        Ok(format::le_vec(
            self.get(name, DType::F32)?,
            f32::from_le_bytes,
        ))
    }

    pub(crate) fn i64s(&self, name: &str) -> Result<Vec<i64>> {
        Ok(format::le_vec(
            self.get(name, DType::I64)?,
            i64::from_le_bytes,
        ))
    }

    pub(crate) fn u64s(&self, name: &str) -> Result<Vec<u64>> {
        Ok(format::le_vec(
            self.get(name, DType::U64)?,
            u64::from_le_bytes,
        ))
    }

    pub(crate) fn remove(&mut self, name: &str) {
        self.map.remove(name);
    }

    pub(crate) fn set(&mut self, name: impl Into<String>, dtype: DType, payload: Vec<u8>) {
        self.map.insert(name.into(), (dtype, payload));
    }

    pub(crate) fn set_u64(&mut self, name: impl Into<String>, v: u64) {
        self.set(name, DType::U64, v.to_le_bytes().to_vec());
    }

    pub(crate) fn set_bool(&mut self, name: impl Into<String>, v: bool) {
        self.set_u64(name, u64::from(v));
    }

    pub(crate) fn set_f64(&mut self, name: impl Into<String>, v: f64) {
        self.set(name, DType::F64, v.to_le_bytes().to_vec());
    }

    pub(crate) fn set_str(&mut self, name: impl Into<String>, v: &str) {
        self.set(name, DType::Str, v.as_bytes().to_vec());
    }

    pub(crate) fn set_bytes(&mut self, name: impl Into<String>, v: Vec<u8>) {
        self.set(name, DType::U8, v);
    }

    pub(crate) fn set_f32s(&mut self, name: impl Into<String>, v: &[f32]) {
        self.set(name, DType::F32, format::le_bytes(v, f32::to_le_bytes));
    }

    pub(crate) fn set_i64s(&mut self, name: impl Into<String>, v: &[i64]) {
        self.set(name, DType::I64, format::le_bytes(v, i64::to_le_bytes));
    }

    pub(crate) fn set_u64s(&mut self, name: impl Into<String>, v: &[u64]) {
        self.set(name, DType::U64, format::le_bytes(v, u64::to_le_bytes));
    }
}
