//! Inverted lists: for each coarse cell, the codes and ids of the vectors it holds.

use std::fmt::Debug;

use vq_core::persist::SharedBytes;
use vq_core::{Error, Label, Result};

/// Storage of an inverted file: `nlist()` lists, each a sequence of `(id, code)` entries
/// with codes of `code_size()` bytes (Faiss's `InvertedLists`).
///
/// Reads borrow slices (`&self`, any number of threads at once); writes take
/// `&mut self`. Entry order inside a list is insertion order, kept by removal.
///
/// # Panics
/// The per-list accessors panic when `list >= nlist()`, as slice indexing does; the
/// indexes in this crate only pass lists their quantizer produced.
pub trait InvertedLists: Send + Sync + Debug {
    /// Number of lists.
    fn nlist(&self) -> usize;

    /// Bytes per code.
    fn code_size(&self) -> usize;

    /// Entries in `list`.
    fn list_len(&self, list: usize) -> usize;

    /// The codes of `list`, `list_len(list) × code_size()` bytes.
    fn codes(&self, list: usize) -> &[u8];

    /// The ids of `list`, `list_len(list)` values.
    fn ids(&self, list: usize) -> &[Label];

    /// Appends entries to `list`: `ids.len()` ids and as many codes.
    ///
    /// # Errors
    /// Mismatched lengths, `list` out of range, read-only or failing storage. Nothing
    /// is appended on error.
    fn append(&mut self, list: usize, ids: &[Label], codes: &[u8]) -> Result<()>;

    /// Keeps the entries of `list` whose id `keep` accepts (order preserved) and
    /// returns how many were removed.
    ///
    /// # Errors
    /// `list` out of range, read-only or failing storage.
    fn retain(&mut self, list: usize, keep: &mut dyn FnMut(Label) -> bool) -> Result<usize>;

    /// Empties every list.
    ///
    /// # Errors
    /// Read-only or failing storage.
    fn clear(&mut self) -> Result<()>;

    /// Total number of entries.
    fn total(&self) -> usize {
        (0..self.nlist()).map(|l| self.list_len(l)).sum()
    }

    /// Checks that the storage is still usable before a batch of reads (on-disk lists
    /// check that their file was not changed underneath). In-memory lists always are.
    ///
    /// # Errors
    /// A storage problem, e.g. [`Error::Format`] for a file changed by someone else.
    fn check(&self) -> Result<()> {
        Ok(())
    }

    /// A short description for messages.
    fn describe(&self) -> String {
        format!(
            "inverted lists ({} lists, {} bytes/code)",
            self.nlist(),
            self.code_size()
        )
    }
}

/// Checks the arguments of [`InvertedLists::append`].
pub(crate) fn check_append(
    lists: &dyn InvertedLists,
    list: usize,
    ids: &[Label],
    codes: &[u8],
) -> Result<()> {
    if list >= lists.nlist() {
        return Err(Error::invalid_param(
            "list",
            format!("list {list} out of range (nlist = {})", lists.nlist()),
        ));
    }
    let expected = ids.len() * lists.code_size();
    if codes.len() != expected {
        return Err(Error::LengthMismatch {
            what: "codes of appended entries",
            expected,
            got: codes.len(),
        });
    }
    Ok(())
}

/// Growable bytes whose start is 8-byte aligned, so that flat codes can be read as
/// `f32` without copying.
#[derive(Clone, Debug, Default)]
struct AlignedBytes {
    words: Vec<u64>,
    len: usize,
}

impl AlignedBytes {
    fn as_slice(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.words)[..self.len]
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.words)[..self.len]
    }

    fn extend(&mut self, b: &[u8]) {
        let new = self.len + b.len();
        self.words.resize(new.div_ceil(8), 0);
        bytemuck::cast_slice_mut(&mut self.words)[self.len..new].copy_from_slice(b);
        self.len = new;
    }

    fn truncate(&mut self, len: usize) {
        self.len = len.min(self.len);
        self.words.truncate(self.len.div_ceil(8));
    }
}

#[derive(Clone, Debug, Default)]
struct List {
    codes: AlignedBytes,
    ids: Vec<Label>,
}

/// In-memory inverted lists (Faiss's `ArrayInvertedLists`). Empty lists cost one
/// pointer, so very many lists (an inverted multi-index) stay cheap.
///
/// ```
/// use vq_ivf::{ArrayInvertedLists, InvertedLists};
/// let mut lists = ArrayInvertedLists::new(4, 2);
/// lists.append(1, &[10, 11], &[1, 2, 3, 4])?;
/// assert_eq!(lists.ids(1), &[10, 11]);
/// assert_eq!(lists.codes(1), &[1, 2, 3, 4]);
/// assert_eq!(lists.retain(1, &mut |id| id != 10)?, 1);
/// assert_eq!(lists.codes(1), &[3, 4]);
/// # Ok::<(), vq_core::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct ArrayInvertedLists {
    code_size: usize,
    lists: Vec<Option<Box<List>>>,
}

impl ArrayInvertedLists {
    /// `nlist` empty lists for codes of `code_size` bytes.
    pub fn new(nlist: usize, code_size: usize) -> ArrayInvertedLists {
        ArrayInvertedLists {
            code_size,
            lists: vec![None; nlist],
        }
    }

    /// A copy of any inverted lists in memory.
    ///
    /// # Errors
    /// The source's [`InvertedLists::check`].
    pub fn from_lists(src: &dyn InvertedLists) -> Result<ArrayInvertedLists> {
        src.check()?;
        let mut out = ArrayInvertedLists::new(src.nlist(), src.code_size());
        for l in 0..src.nlist() {
            if src.list_len(l) > 0 {
                out.append(l, src.ids(l), src.codes(l))?;
            }
        }
        Ok(out)
    }
}

const EMPTY_IDS: &[Label] = &[];

impl InvertedLists for ArrayInvertedLists {
    fn nlist(&self) -> usize {
        self.lists.len()
    }

    fn code_size(&self) -> usize {
        self.code_size
    }

    fn list_len(&self, list: usize) -> usize {
        self.lists[list].as_ref().map_or(0, |l| l.ids.len())
    }

    fn codes(&self, list: usize) -> &[u8] {
        self.lists[list]
            .as_ref()
            .map_or(&[], |l| l.codes.as_slice())
    }

    fn ids(&self, list: usize) -> &[Label] {
        self.lists[list].as_ref().map_or(EMPTY_IDS, |l| &l.ids)
    }

    fn append(&mut self, list: usize, ids: &[Label], codes: &[u8]) -> Result<()> {
        check_append(self, list, ids, codes)?;
        if ids.is_empty() {
            return Ok(());
        }
        let l = self.lists[list].get_or_insert_with(Box::default);
        l.codes.extend(codes);
        l.ids.extend_from_slice(ids);
        Ok(())
    }

    fn retain(&mut self, list: usize, keep: &mut dyn FnMut(Label) -> bool) -> Result<usize> {
        let cs = self.code_size;
        let Some(slot) = self.lists.get_mut(list) else {
            return Err(Error::invalid_param(
                "list",
                format!("list {list} out of range"),
            ));
        };
        let Some(l) = slot.as_mut() else {
            return Ok(0);
        };
        let n = l.ids.len();
        let mut w = 0;
        let codes = l.codes.as_mut_slice();
        for r in 0..n {
            if !keep(l.ids[r]) {
                continue;
            }
            if w != r {
                l.ids[w] = l.ids[r];
                codes.copy_within(r * cs..(r + 1) * cs, w * cs);
            }
            w += 1;
        }
        if w == 0 {
            *slot = None;
        } else {
            l.ids.truncate(w);
            l.codes.truncate(w * cs);
        }
        Ok(n - w)
    }

    fn clear(&mut self) -> Result<()> {
        self.lists.iter_mut().for_each(|l| *l = None);
        Ok(())
    }

    fn describe(&self) -> String {
        format!(
            "ArrayInvertedLists({} lists, {} bytes/code)",
            self.lists.len(),
            self.code_size
        )
    }
}

/// Checks that every id of `src` shifted by `shift` is a valid label: no overflow, and
/// not [`vq_core::NO_LABEL`] (the mark of a missing result).
pub(crate) fn check_id_shift(src: &dyn InvertedLists, shift: Label) -> Result<()> {
    if shift == 0 {
        return Ok(());
    }
    for l in 0..src.nlist() {
        for &id in src.ids(l) {
            if id.checked_add(shift).is_none_or(|s| s == vq_core::NO_LABEL) {
                return Err(Error::invalid_param(
                    "id shift",
                    format!("id {id} shifted by {shift} is not a valid id"),
                ));
            }
        }
    }
    Ok(())
}

/// Appends every entry of `src` to `dst` (same `nlist` and code size), adding
/// `id_shift` to each id. `src` is left unchanged.
///
/// # Errors
/// Mismatched shapes, shifted ids that overflow or equal [`vq_core::NO_LABEL`] (checked
/// before anything is written), or the destination's write errors.
pub fn merge_into(
    dst: &mut dyn InvertedLists,
    src: &dyn InvertedLists,
    id_shift: Label,
) -> Result<()> {
    if dst.nlist() != src.nlist() || dst.code_size() != src.code_size() {
        return Err(Error::invalid_param(
            "lists",
            format!(
                "cannot merge {} into {}: shapes differ",
                src.describe(),
                dst.describe()
            ),
        ));
    }
    src.check()?;
    check_id_shift(src, id_shift)?;
    let mut ids = Vec::new();
    for l in 0..src.nlist() {
        if src.list_len(l) == 0 {
            continue;
        }
        ids.clear();
        ids.extend(src.ids(l).iter().map(|&i| i + id_shift));
        dst.append(l, &ids, src.codes(l))?;
    }
    Ok(())
}

/// Read-only inverted lists over three arrays borrowed from a loaded index container
/// ([`vq_core::persist::SharedBytes`]): all lists' codes concatenated, all ids
/// concatenated, and `nlist + 1` offsets (in entries) where each list starts. This is
/// how an IVF index opened with [`vq_core::persist::LoadMode::Mmap`] serves searches
/// straight from the mapped file: opening touches only the offsets, and the pages of a
/// list are read when a search probes it.
///
/// Appending, removing and clearing return [`Error::NotSupported`] ("memory-mapped
/// index is read-only"): load with [`vq_core::persist::LoadMode::Read`] to modify the
/// index. Ids and offsets are read in place, so the host must be little-endian (as for
/// [`crate::OnDiskInvertedLists`]).
///
/// ```
/// use vq_core::persist::{DType, StateReader, StateWriter};
/// use vq_ivf::{InvertedLists, SharedInvertedLists};
/// let mut buf = Vec::new();
/// let mut w = StateWriter::new(&mut buf)?;
/// w.put_u64s("offsets", &[0, 2, 2, 3])?;
/// w.put_i64s("ids", &[10, 11, 12])?;
/// w.put_bytes("codes", &[1, 1, 2, 2, 3, 3])?;
/// w.finish()?;
/// let mut r = StateReader::from_bytes(buf, "memory")?;
/// let lists = SharedInvertedLists::new(
///     3,
///     2,
///     r.get_shared("offsets", DType::U64)?,
///     r.get_shared("ids", DType::I64)?,
///     r.get_shared("codes", DType::U8)?,
/// )?;
/// assert_eq!(lists.ids(0), &[10, 11]);
/// assert_eq!(lists.codes(2), &[3, 3]);
/// assert_eq!(lists.total(), 3);
/// # Ok::<(), vq_core::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct SharedInvertedLists {
    nlist: usize,
    code_size: usize,
    offsets: SharedBytes,
    ids: SharedBytes,
    codes: SharedBytes,
}

impl SharedInvertedLists {
    /// Lists over `offsets` (`nlist + 1` `u64`, starting at 0, non-decreasing),
    /// `ids` (`i64`, as many as the last offset) and `codes` (`code_size` bytes per id).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for arrays that do not fit each other (every
    /// inconsistency is checked: nothing is trusted), or a big-endian host.
    pub fn new(
        nlist: usize,
        code_size: usize,
        offsets: SharedBytes,
        ids: SharedBytes,
        codes: SharedBytes,
    ) -> Result<SharedInvertedLists> {
        Self::validated(nlist, code_size, offsets, ids, codes)
            .map_err(|e| Error::invalid_param("lists", e))
    }

    /// As [`SharedInvertedLists::new`], with the reason of a refusal as text.
    pub(crate) fn validated(
        nlist: usize,
        code_size: usize,
        offsets: SharedBytes,
        ids: SharedBytes,
        codes: SharedBytes,
    ) -> std::result::Result<SharedInvertedLists, String> {
        if code_size == 0 {
            return Err("codes of 0 bytes".into());
        }
        let offs = offsets.cast::<u64>().ok_or_else(|| {
            "the offsets cannot be read in place (misaligned, or a big-endian host)".to_string()
        })?;
        let want = nlist.checked_add(1).ok_or("nlist overflows")?;
        if offs.len() != want {
            return Err(format!(
                "{} offsets for {nlist} lists (expected {want})",
                offs.len()
            ));
        }
        if offs[0] != 0 {
            return Err(format!("the first offset is {}, not 0", offs[0]));
        }
        if let Some(i) = offs.windows(2).position(|w| w[1] < w[0]) {
            return Err(format!(
                "offsets decrease at list {i} ({} then {})",
                offs[i],
                offs[i + 1]
            ));
        }
        let total = usize::try_from(offs[nlist])
            .map_err(|_| format!("{} entries do not fit this platform", offs[nlist]))?;
        let id_vals = ids.cast::<Label>().ok_or_else(|| {
            "the ids cannot be read in place (misaligned, or a big-endian host)".to_string()
        })?;
        if id_vals.len() != total {
            return Err(format!(
                "{} ids for {total} entries (the last offset)",
                id_vals.len()
            ));
        }
        match total.checked_mul(code_size) {
            Some(n) if n == codes.len() => {}
            _ => {
                return Err(format!(
                    "{} bytes of codes for {total} entries of {code_size} bytes",
                    codes.len()
                ));
            }
        }
        Ok(SharedInvertedLists {
            nlist,
            code_size,
            offsets,
            ids,
            codes,
        })
    }

    /// `true` when the arrays live in a memory-mapped file.
    pub fn is_mapped(&self) -> bool {
        self.codes.is_mapped()
    }

    fn offs(&self) -> &[u64] {
        // Checked by the constructor: the cast succeeds.
        self.offsets.cast::<u64>().unwrap_or(&[])
    }

    /// Entry range of `list` (panics when `list >= nlist`, as the trait documents).
    fn range(&self, list: usize) -> (usize, usize) {
        let o = self.offs();
        // Offsets are checked to be at most `total`, which fits a `usize`.
        (o[list] as usize, o[list + 1] as usize)
    }

    fn read_only(&self, op: &'static str) -> Error {
        let what = if self.is_mapped() {
            "a memory-mapped index: memory-mapped index is read-only (load it with \
             LoadMode::Read to modify it)"
        } else {
            "read-only shared inverted lists"
        };
        Error::not_supported(op, what)
    }
}

impl InvertedLists for SharedInvertedLists {
    fn nlist(&self) -> usize {
        self.nlist
    }

    fn code_size(&self) -> usize {
        self.code_size
    }

    fn list_len(&self, list: usize) -> usize {
        let (a, b) = self.range(list);
        b - a
    }

    fn codes(&self, list: usize) -> &[u8] {
        let (a, b) = self.range(list);
        &self.codes.as_bytes()[a * self.code_size..b * self.code_size]
    }

    fn ids(&self, list: usize) -> &[Label] {
        let (a, b) = self.range(list);
        // Checked by the constructor: the cast succeeds.
        &self.ids.cast::<Label>().unwrap_or(EMPTY_IDS)[a..b]
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
        self.offs().last().map_or(0, |&t| t as usize)
    }

    fn describe(&self) -> String {
        format!(
            "SharedInvertedLists({} lists, {} bytes/code, {} entries{})",
            self.nlist,
            self.code_size,
            self.total(),
            if self.is_mapped() { ", mapped" } else { "" }
        )
    }
}
