//! Inverted lists read in place from a memory-mapped Faiss file (Faiss's
//! `IO_FLAG_MMAP`): each list's codes are borrowed from the map; its ids are borrowed
//! when they lie 8-byte aligned (and the host is little-endian), else copied out of the
//! map the first time the list is read.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::SystemTime;

use vq_core::persist::SharedBytes;
use vq_core::{Error, Label, Result};
use vq_ivf::InvertedLists;

use super::format::{MappedFile, Span};

#[derive(Debug)]
struct List {
    len: usize,
    codes_at: usize,
    ids_at: usize,
    /// Ids read in place (8-byte aligned in the map, little-endian host); else copied
    /// out of the map into `copy` the first time the list is read.
    in_place: bool,
    copy: OnceLock<Box<[Label]>>,
}

/// The length and modification time of the opened file (the inode that is mapped, not
/// whatever the path names now), to notice it changed underneath.
fn stamp(file: Option<&std::fs::File>) -> Option<(u64, Option<SystemTime>)> {
    let m = file?.metadata().ok()?;
    Some((m.len(), m.modified().ok()))
}

/// Read-only inverted lists over a mapped Faiss file (`ilar` lists of the index file
/// itself, or the data file of `OnDiskInvertedLists`).
#[derive(Debug)]
pub(crate) struct FaissMappedLists {
    code_size: usize,
    file: SharedBytes,
    path: PathBuf,
    lists: Vec<List>,
    total: usize,
    /// The mapped file, opened again to watch it (`None` for bytes read into memory).
    opened: Option<std::fs::File>,
    stamp: Option<(u64, Option<SystemTime>)>,
}

impl FaissMappedLists {
    /// Lists over `spans` of `file`, every span already checked to lie inside it.
    pub(crate) fn new(code_size: u64, file: &MappedFile, spans: &[Span]) -> Result<Self> {
        let bad = |what: String| Error::format(&file.path, format!("Faiss index: {what}"));
        let code_size = usize::try_from(code_size)
            .ok()
            .filter(|&c| c > 0)
            .ok_or_else(|| bad(format!("codes of {code_size} bytes")))?;
        let bytes = file.bytes.as_bytes();
        let mut lists = Vec::with_capacity(spans.len());
        let mut total = 0usize;
        for (i, s) in spans.iter().enumerate() {
            let (len, codes_at, ids_at) = (
                usize::try_from(s.n),
                usize::try_from(s.codes_at),
                usize::try_from(s.ids_at),
            );
            let (Ok(len), Ok(codes_at), Ok(ids_at)) = (len, codes_at, ids_at) else {
                return Err(bad(format!("list {i} lies beyond the address space")));
            };
            let ids_bytes = len
                .checked_mul(8)
                .and_then(|b| b.checked_add(ids_at))
                .and_then(|end| bytes.get(ids_at..end));
            let codes_ok = len
                .checked_mul(code_size)
                .and_then(|b| b.checked_add(codes_at))
                .is_some_and(|end| end <= bytes.len());
            let Some(id_bytes) = ids_bytes.filter(|_| codes_ok) else {
                return Err(bad(format!("list {i} lies outside the file")));
            };
            // Only the address is looked at: opening reads nothing of the lists.
            let in_place = cfg!(target_endian = "little")
                && bytemuck::try_cast_slice::<u8, Label>(id_bytes).is_ok();
            total += len;
            lists.push(List {
                len,
                codes_at,
                ids_at,
                in_place,
                copy: OnceLock::new(),
            });
        }
        // Only a mapped file can change underneath (bytes read into memory cannot).
        let opened = if file.bytes.is_mapped() {
            Some(std::fs::File::open(&file.path).map_err(|e| Error::io(&file.path, e))?)
        } else {
            None
        };
        Ok(FaissMappedLists {
            code_size,
            file: file.bytes.clone(),
            path: file.path.clone(),
            lists,
            total,
            stamp: stamp(opened.as_ref()),
            opened,
        })
    }

    fn read_only(&self, op: &'static str) -> Error {
        Error::not_supported(
            op,
            "an index whose lists are mapped from a Faiss file (read-only: read the file \
             with faiss_io::read_index to modify the index)",
        )
    }
}

impl InvertedLists for FaissMappedLists {
    fn nlist(&self) -> usize {
        self.lists.len()
    }

    fn code_size(&self) -> usize {
        self.code_size
    }

    fn list_len(&self, list: usize) -> usize {
        self.lists[list].len
    }

    fn codes(&self, list: usize) -> &[u8] {
        let l = &self.lists[list];
        // Checked by the constructor: inside the file.
        &self.file.as_bytes()[l.codes_at..l.codes_at + l.len * self.code_size]
    }

    fn ids(&self, list: usize) -> &[Label] {
        let l = &self.lists[list];
        // Checked by the constructor: inside the file (and aligned when in place).
        let bytes = &self.file.as_bytes()[l.ids_at..l.ids_at + 8 * l.len];
        if l.in_place {
            bytemuck::try_cast_slice(bytes).unwrap_or(&[])
        } else {
            l.copy.get_or_init(|| {
                bytes
                    .chunks_exact(8)
                    .map(|c| Label::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                    .collect()
            })
        }
    }

    fn append(&mut self, _list: usize, _ids: &[Label], _codes: &[u8]) -> Result<()> {
        Err(self.read_only("add"))
    }

    fn retain(&mut self, _list: usize, _keep: &mut dyn FnMut(Label) -> bool) -> Result<usize> {
        Err(self.read_only("remove_ids"))
    }

    fn clear(&mut self) -> Result<()> {
        Err(self.read_only("clear"))
    }

    fn total(&self) -> usize {
        self.total
    }

    /// The mapped file must be as it was opened: its length and modification time are
    /// checked before each batch of reads. Those of the opened file itself: a file
    /// renamed over the path, or the path removed, leaves the mapped one whole (the map
    /// keeps serving it, as a vq container's map does); a file cut short or rewritten in
    /// place is an error rather than a fault.
    fn check(&self) -> Result<()> {
        if stamp(self.opened.as_ref()) == self.stamp {
            Ok(())
        } else {
            Err(Error::format(
                &self.path,
                "the mapped Faiss file was changed in place after it was opened; open it again",
            ))
        }
    }

    fn describe(&self) -> String {
        format!(
            "Faiss inverted lists mapped from {} ({} lists, {} bytes/code, {} entries; ids \
             of {} lists misaligned in the file, copied when first read)",
            self.path.display(),
            self.lists.len(),
            self.code_size,
            self.total,
            self.lists.iter().filter(|l| !l.in_place).count()
        )
    }
}
