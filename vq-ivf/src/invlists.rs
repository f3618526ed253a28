//! Inverted lists: for each coarse cell, the codes and ids of the vectors it holds.

use std::fmt::Debug;

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

/// Appends every entry of `src` to `dst` (same `nlist` and code size), adding
/// `id_shift` to each id. `src` is left unchanged.
///
/// # Errors
/// Mismatched shapes, or the destination's write errors.
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
