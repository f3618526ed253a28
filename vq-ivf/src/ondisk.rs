//! Memory-mapped inverted lists in one file (Faiss's `OnDiskInvertedLists`), and the
//! merge that builds such a file from several in-memory lists ("build huge indexes in
//! blocks").
//!
//! File layout (little-endian): a 64-byte header (`VQIVFLS1`, version, `nlist`,
//! `code_size`, a checksum of the list table, the end of the used data), the list table
//! (`offset`, `len`, `capacity` per list), then one slot per non-empty list at a 64-byte
//! aligned offset: `capacity` codes, then (8-byte aligned) `capacity` ids.

#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use memmap2::{Mmap, MmapMut};
use vq_core::{Error, Label, Result};

use crate::invlists::{InvertedLists, check_append};

const MAGIC: &[u8; 8] = b"VQIVFLS1";
const VERSION: u32 = 1;
const HEADER: usize = 64;
const ENTRY: usize = 24;
const ALIGN: u64 = 64;

fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn rd(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Where a list lives in the file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Slot {
    offset: u64,
    len: u64,
    cap: u64,
}

impl Slot {
    fn ids_offset(&self, cs: u64) -> u64 {
        self.offset + align_up(self.cap * cs, 8)
    }

    fn bytes(cap: u64, cs: u64) -> u64 {
        align_up(align_up(cap * cs, 8) + 8 * cap, ALIGN)
    }
}

#[derive(Debug)]
enum Map {
    Read(Mmap),
    Write(MmapMut),
}

impl Map {
    fn bytes(&self) -> &[u8] {
        match self {
            Map::Read(m) => m,
            Map::Write(m) => m,
        }
    }
}

/// Inverted lists stored in one memory-mapped file.
///
/// Opened read-only ([`OnDiskInvertedLists::open`]) they serve searches straight from
/// the page cache; opened for writing ([`OnDiskInvertedLists::create`],
/// [`OnDiskInvertedLists::open_writable`]) they also take appends and removals. A list
/// that outgrows its slot moves to a new slot (twice the size) at the end of the file;
/// the old slot stays unused until the file is rebuilt by
/// [`OnDiskInvertedLists::create_merged`] (as in Faiss, appends are supported but the
/// intended workflow is to build in memory and merge).
///
/// Every open validates the header and the list table (checksum, bounds); before each
/// batch of reads [`InvertedLists::check`] verifies that the file's length and
/// modification time are what this handle last saw, so a file truncated or rewritten
/// underneath gives [`Error::Format`] instead of wrong results. (As with any memory
/// map, a change that lands *during* a search cannot be detected.)
///
/// ```
/// use vq_ivf::{ArrayInvertedLists, InvertedLists, OnDiskInvertedLists};
/// let dir = std::env::temp_dir().join(format!("vq-doc-ondisk-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let mut a = ArrayInvertedLists::new(3, 2);
/// a.append(0, &[1, 2], &[9, 9, 8, 8])?;
/// let mut b = ArrayInvertedLists::new(3, 2);
/// b.append(0, &[0], &[7, 7])?;
/// b.append(2, &[1], &[5, 5])?;
/// // Ids of the second block shifted by the size of the first, as Faiss's merge does.
/// let merged = OnDiskInvertedLists::create_merged(dir.join("lists.ivfdata"), &[&a, &b], true)?;
/// assert_eq!(merged.ids(0), &[1, 2, 2]);
/// assert_eq!(merged.codes(2), &[5, 5]);
/// let again = OnDiskInvertedLists::open(dir.join("lists.ivfdata"))?;
/// assert_eq!(again.ids(2), &[3]);
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct OnDiskInvertedLists {
    path: PathBuf,
    file: File,
    map: Map,
    nlist: usize,
    code_size: usize,
    slots: Vec<Slot>,
    data_end: u64,
    seen: (u64, Option<SystemTime>),
}

impl OnDiskInvertedLists {
    /// Creates (or truncates) `path` as `nlist` empty lists of `code_size`-byte codes,
    /// open for writing.
    ///
    /// # Errors
    /// `code_size == 0`, or I/O errors.
    pub fn create(
        path: impl AsRef<Path>,
        nlist: usize,
        code_size: usize,
    ) -> Result<OnDiskInvertedLists> {
        let path = path.as_ref();
        if code_size == 0 {
            return Err(Error::invalid_param("code_size", "must be at least 1"));
        }
        let slots = vec![Slot::default(); nlist];
        write_file(path, code_size, &slots, |_| Ok(()))?;
        Self::open_mode(path, true)
    }

    /// Opens an existing file read-only.
    ///
    /// # Errors
    /// I/O errors; [`Error::Format`] for a file that is not an inverted-lists file, is
    /// truncated, or whose table is inconsistent.
    pub fn open(path: impl AsRef<Path>) -> Result<OnDiskInvertedLists> {
        Self::open_mode(path.as_ref(), false)
    }

    /// Opens an existing file for reading and writing.
    ///
    /// # Errors
    /// As [`OnDiskInvertedLists::open`].
    pub fn open_writable(path: impl AsRef<Path>) -> Result<OnDiskInvertedLists> {
        Self::open_mode(path.as_ref(), true)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `true` when opened read-only.
    pub fn is_read_only(&self) -> bool {
        matches!(self.map, Map::Read(_))
    }

    /// Writes all of `sources` (same `nlist` and code size) into a new compact file at
    /// `path` and opens it read-only. With `shift_ids`, the ids of each source are
    /// offset by the total size of the sources before it (for blocks added with
    /// sequential ids). The file is written under a temporary name and renamed, so an
    /// existing file at `path` is only replaced by a complete one.
    ///
    /// # Errors
    /// No sources, mismatched shapes, shifted ids that overflow or equal
    /// [`vq_core::NO_LABEL`], I/O errors.
    pub fn create_merged(
        path: impl AsRef<Path>,
        sources: &[&dyn InvertedLists],
        shift_ids: bool,
    ) -> Result<OnDiskInvertedLists> {
        let path = path.as_ref();
        let Some(first) = sources.first() else {
            return Err(Error::invalid_param("sources", "nothing to merge"));
        };
        let (nlist, cs) = (first.nlist(), first.code_size());
        for s in sources {
            if s.nlist() != nlist || s.code_size() != cs {
                return Err(Error::invalid_param(
                    "sources",
                    format!(
                        "{} does not match {} lists of {cs} bytes",
                        s.describe(),
                        nlist
                    ),
                ));
            }
            s.check()?;
        }
        let mut shifts = Vec::with_capacity(sources.len());
        let mut acc: Label = 0;
        for s in sources {
            let shift = if shift_ids { acc } else { 0 };
            crate::invlists::check_id_shift(*s, shift)?;
            shifts.push(shift);
            acc = Label::try_from(s.total())
                .ok()
                .and_then(|t| acc.checked_add(t))
                .ok_or_else(|| Error::invalid_param("sources", "more entries than ids"))?;
        }
        let data0 = align_up((HEADER + ENTRY * nlist) as u64, ALIGN);
        let mut slots = Vec::with_capacity(nlist);
        let mut at = data0;
        for l in 0..nlist {
            let len: u64 = sources.iter().map(|s| s.list_len(l) as u64).sum();
            if len == 0 {
                slots.push(Slot::default());
            } else {
                slots.push(Slot {
                    offset: at,
                    len,
                    cap: len,
                });
                at += Slot::bytes(len, cs as u64);
            }
        }
        let tmp = path.with_extension("tmp-merge");
        let res = write_file(&tmp, cs, &slots, |w| {
            let mut pos = data0;
            let mut ids = Vec::new();
            for (l, slot) in slots.iter().enumerate() {
                if slot.len == 0 {
                    continue;
                }
                pad(w, &mut pos, slot.offset)?;
                for s in sources {
                    let c = s.codes(l);
                    w.write_all(c).map_err(|e| Error::io(&tmp, e))?;
                    pos += c.len() as u64;
                }
                pad(w, &mut pos, slot.ids_offset(cs as u64))?;
                for (s, &shift) in sources.iter().zip(&shifts) {
                    ids.clear();
                    for &id in s.ids(l) {
                        ids.extend_from_slice(&(id + shift).to_le_bytes());
                    }
                    w.write_all(&ids).map_err(|e| Error::io(&tmp, e))?;
                    pos += ids.len() as u64;
                }
            }
            pad(w, &mut pos, at)
        });
        if let Err(e) = res {
            std::fs::remove_file(&tmp).ok();
            return Err(e);
        }
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        Self::open(path)
    }

    fn open_mode(path: &Path, write: bool) -> Result<OnDiskInvertedLists> {
        if cfg!(target_endian = "big") {
            return Err(Error::not_supported(
                "on-disk inverted lists",
                "big-endian targets",
            ));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(write)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        let file_len = meta.len();
        if file_len < HEADER as u64 {
            return Err(Error::format(
                path,
                format!("{file_len} bytes: shorter than the {HEADER}-byte header"),
            ));
        }
        // SAFETY: the map is only read through bounds-checked slices validated below;
        // concurrent modification of the file by another process is detected by
        // `check` (length and modification time) before each batch of reads, and (length)
        // before each write through a writable map and before its flush.
        let map = unsafe {
            if write {
                Map::Write(MmapMut::map_mut(&file).map_err(|e| Error::io(path, e))?)
            } else {
                Map::Read(Mmap::map(&file).map_err(|e| Error::io(path, e))?)
            }
        };
        let b = map.bytes();
        if &b[..8] != MAGIC {
            return Err(Error::format(
                path,
                "not a vq inverted-lists file (bad magic)",
            ));
        }
        let version = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
        if version != VERSION {
            return Err(Error::UnsupportedVersion {
                found: version,
                supported: VERSION,
            });
        }
        let bad = |r: String| Error::format(path, r);
        let nlist = usize::try_from(rd(b, 16)).map_err(|_| bad("nlist too large".into()))?;
        let cs = rd(b, 24);
        let checksum = rd(b, 32);
        let data_end = rd(b, 40);
        if cs == 0 || cs > 1 << 24 {
            return Err(bad(format!("code size {cs} out of range")));
        }
        let table_end = nlist
            .checked_mul(ENTRY)
            .and_then(|t| t.checked_add(HEADER))
            .filter(|&t| t as u64 <= file_len)
            .ok_or_else(|| {
                bad(format!(
                    "truncated: the table of {nlist} lists does not fit"
                ))
            })?;
        let table = &b[HEADER..table_end];
        if fnv1a(table) != checksum {
            return Err(bad(
                "list table checksum mismatch (corrupt or partly written)".into(),
            ));
        }
        if data_end > file_len {
            return Err(bad(format!(
                "truncated: data ends at {data_end} but the file has {file_len} bytes"
            )));
        }
        let mut slots = Vec::with_capacity(nlist);
        for l in 0..nlist {
            let e = &table[l * ENTRY..];
            let s = Slot {
                offset: rd(e, 0),
                len: rd(e, 8),
                cap: rd(e, 16),
            };
            if s.cap > 0 {
                // A bound on `offset + Slot::bytes(cap, cs)` (rounding included) that
                // does not overflow, so the exact sum below does not either.
                let end = s
                    .cap
                    .checked_mul(cs + 8)
                    .and_then(|x| x.checked_add(s.offset))
                    .and_then(|x| x.checked_add(2 * ALIGN));
                let ok = s.len <= s.cap
                    && s.offset.is_multiple_of(ALIGN)
                    && s.offset >= table_end as u64
                    && end.is_some()
                    && s.offset + Slot::bytes(s.cap, cs) <= data_end;
                if !ok {
                    return Err(bad(format!("list {l}: slot {s:?} out of bounds")));
                }
            } else if s.len != 0 {
                return Err(bad(format!("list {l}: {} entries in an empty slot", s.len)));
            }
            slots.push(s);
        }
        Ok(OnDiskInvertedLists {
            path: path.to_path_buf(),
            seen: (file_len, meta.modified().ok()),
            file,
            map,
            nlist,
            code_size: cs as usize,
            slots,
            data_end,
        })
    }

    fn map_mut(&mut self) -> Result<&mut MmapMut> {
        match &mut self.map {
            Map::Write(m) => Ok(m),
            Map::Read(_) => Err(Error::not_supported(
                "writing to read-only on-disk lists",
                self.path.display().to_string(),
            )),
        }
    }

    fn write_slot(&mut self, list: usize) -> Result<()> {
        let s = self.slots[list];
        let m = self.map_mut()?;
        let at = HEADER + list * ENTRY;
        m[at..at + 8].copy_from_slice(&s.offset.to_le_bytes());
        m[at + 8..at + 16].copy_from_slice(&s.len.to_le_bytes());
        m[at + 16..at + 24].copy_from_slice(&s.cap.to_le_bytes());
        Ok(())
    }

    /// Writes the table checksum and flushes the map to the file; the file is then
    /// valid for other readers. Called on drop for writable lists.
    ///
    /// # Errors
    /// Read-only lists, I/O errors.
    pub fn sync(&mut self) -> Result<()> {
        let nlist = self.nlist;
        let data_end = self.data_end;
        let path = self.path.clone();
        self.map_mut()?;
        // A file cut short underneath would fault on the first store into the map.
        self.check()?;
        let m = self.map_mut()?;
        let sum = fnv1a(&m[HEADER..HEADER + ENTRY * nlist]);
        m[32..40].copy_from_slice(&sum.to_le_bytes());
        m[40..48].copy_from_slice(&data_end.to_le_bytes());
        m.flush().map_err(|e| Error::io(&path, e))?;
        self.refresh_seen()
    }

    fn refresh_seen(&mut self) -> Result<()> {
        let meta = self.file.metadata().map_err(|e| Error::io(&self.path, e))?;
        self.seen = (meta.len(), meta.modified().ok());
        Ok(())
    }

    /// Moves `list` to a new slot of at least `need` entries at the end of the file.
    fn grow(&mut self, list: usize, need: u64) -> Result<()> {
        let cs = self.code_size as u64;
        let old = self.slots[list];
        let cap = need.next_power_of_two().max(8);
        let offset = align_up(self.data_end, ALIGN);
        let end = offset + Slot::bytes(cap, cs);
        let path = self.path.clone();
        self.file.set_len(end).map_err(|e| Error::io(&path, e))?;
        // SAFETY: as in `open_mode`; the old map is dropped when replaced.
        let mut m = unsafe { MmapMut::map_mut(&self.file).map_err(|e| Error::io(&path, e))? };
        let new = Slot {
            offset,
            len: old.len,
            cap,
        };
        if old.len > 0 {
            let (o, n) = (old.offset as usize, offset as usize);
            let nc = (old.len * cs) as usize;
            m.copy_within(o..o + nc, n);
            let (oi, ni) = (old.ids_offset(cs) as usize, new.ids_offset(cs) as usize);
            m.copy_within(oi..oi + 8 * old.len as usize, ni);
        }
        self.map = Map::Write(m);
        self.slots[list] = new;
        self.data_end = end;
        self.write_slot(list)?;
        self.refresh_seen()
    }
}

/// Pads the writer with zeros from `*pos` to `to`.
fn pad(w: &mut dyn Write, pos: &mut u64, to: u64) -> Result<()> {
    let zeros = [0u8; 64];
    while *pos < to {
        let n = ((to - *pos) as usize).min(64);
        w.write_all(&zeros[..n])
            .map_err(|e| Error::io("inverted-lists file", e))?;
        *pos += n as u64;
    }
    Ok(())
}

/// Writes header and table for `slots`, then lets `body` write the data.
fn write_file(
    path: &Path,
    code_size: usize,
    slots: &[Slot],
    body: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    let f = File::create(path).map_err(|e| Error::io(path, e))?;
    let mut w = BufWriter::new(f);
    let mut table = Vec::with_capacity(ENTRY * slots.len());
    for s in slots {
        table.extend_from_slice(&s.offset.to_le_bytes());
        table.extend_from_slice(&s.len.to_le_bytes());
        table.extend_from_slice(&s.cap.to_le_bytes());
    }
    let data0 = align_up((HEADER + table.len()) as u64, ALIGN);
    let data_end = slots
        .iter()
        .filter(|s| s.cap > 0)
        .map(|s| s.offset + Slot::bytes(s.cap, code_size as u64))
        .max()
        .unwrap_or(data0)
        .max(data0);
    let mut h = Vec::with_capacity(HEADER);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&VERSION.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&(slots.len() as u64).to_le_bytes());
    h.extend_from_slice(&(code_size as u64).to_le_bytes());
    h.extend_from_slice(&fnv1a(&table).to_le_bytes());
    h.extend_from_slice(&data_end.to_le_bytes());
    h.resize(HEADER, 0);
    let io = |e| Error::io(path, e);
    w.write_all(&h).map_err(io)?;
    w.write_all(&table).map_err(io)?;
    let mut pos = (HEADER + table.len()) as u64;
    pad(&mut w, &mut pos, data0)?;
    body(&mut w)?;
    let f = w
        .into_inner()
        .map_err(|e| Error::io(path, e.into_error()))?;
    f.set_len(data_end).map_err(io)?;
    f.sync_all().map_err(io)
}

impl InvertedLists for OnDiskInvertedLists {
    fn nlist(&self) -> usize {
        self.nlist
    }

    fn code_size(&self) -> usize {
        self.code_size
    }

    fn list_len(&self, list: usize) -> usize {
        self.slots[list].len as usize
    }

    fn codes(&self, list: usize) -> &[u8] {
        let s = self.slots[list];
        let o = s.offset as usize;
        &self.map.bytes()[o..o + s.len as usize * self.code_size]
    }

    fn ids(&self, list: usize) -> &[Label] {
        let s = self.slots[list];
        if s.len == 0 {
            return &[];
        }
        let o = s.ids_offset(self.code_size as u64) as usize;
        // Aligned: the map starts on a page and id offsets are multiples of 8.
        bytemuck::cast_slice(&self.map.bytes()[o..o + 8 * s.len as usize])
    }

    fn append(&mut self, list: usize, ids: &[Label], codes: &[u8]) -> Result<()> {
        check_append(self, list, ids, codes)?;
        self.map_mut()?;
        if ids.is_empty() {
            return Ok(());
        }
        // A file cut short underneath would fault on the first store into the map.
        self.check()?;
        let cs = self.code_size as u64;
        let need = self.slots[list].len + ids.len() as u64;
        if need > self.slots[list].cap {
            self.grow(list, need)?;
        }
        let s = self.slots[list];
        let m = self.map_mut()?;
        let co = (s.offset + s.len * cs) as usize;
        m[co..co + codes.len()].copy_from_slice(codes);
        let io = (s.ids_offset(cs) + 8 * s.len) as usize;
        m[io..io + 8 * ids.len()].copy_from_slice(bytemuck::cast_slice(ids));
        self.slots[list].len = need;
        self.write_slot(list)
    }

    fn retain(&mut self, list: usize, keep: &mut dyn FnMut(Label) -> bool) -> Result<usize> {
        if list >= self.nlist {
            return Err(Error::invalid_param(
                "list",
                format!("list {list} out of range"),
            ));
        }
        self.map_mut()?;
        self.check()?;
        let s = self.slots[list];
        let cs = self.code_size;
        let n = s.len as usize;
        let (co, io) = (s.offset as usize, s.ids_offset(cs as u64) as usize);
        let m = self.map_mut()?;
        let mut w = 0;
        for r in 0..n {
            let id = i64::from_le_bytes(m[io + 8 * r..io + 8 * r + 8].try_into().unwrap_or([0; 8]));
            if !keep(id) {
                continue;
            }
            if w != r {
                m.copy_within(co + r * cs..co + (r + 1) * cs, co + w * cs);
                m.copy_within(io + 8 * r..io + 8 * r + 8, io + 8 * w);
            }
            w += 1;
        }
        self.slots[list].len = w as u64;
        self.write_slot(list)?;
        Ok(n - w)
    }

    fn clear(&mut self) -> Result<()> {
        self.map_mut()?;
        self.check()?;
        for l in 0..self.nlist {
            self.slots[l].len = 0;
            self.write_slot(l)?;
        }
        Ok(())
    }

    fn check(&self) -> Result<()> {
        let meta = std::fs::metadata(&self.path).map_err(|e| Error::io(&self.path, e))?;
        // A writer's own stores through the map may move the modification time, so a
        // writable handle compares the length only.
        let time_changed = self.is_read_only() && meta.modified().ok() != self.seen.1;
        if meta.len() != self.seen.0 || time_changed {
            return Err(Error::format(
                &self.path,
                format!(
                    "the file changed underneath ({} bytes, was {}); reopen it",
                    meta.len(),
                    self.seen.0
                ),
            ));
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!(
            "OnDiskInvertedLists({}, {} lists, {} bytes/code)",
            self.path.display(),
            self.nlist,
            self.code_size
        )
    }
}

impl Drop for OnDiskInvertedLists {
    fn drop(&mut self) {
        if !self.is_read_only() {
            // Best effort: errors cannot be reported from drop; `sync` reports them.
            let _ = self.sync();
        }
    }
}
