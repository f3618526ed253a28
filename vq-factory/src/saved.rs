//! The index the factory builds: it knows its own string, saves itself, takes
//! parameter strings.

use std::io::Write;
use std::path::Path;

use vq_core::persist::{StateReader, StateWriter, write_atomic};
use vq_core::{
    Codec, Error, IdFilter, Index, Label, Metric, RangeSearchResults, Result, SearchParams,
    SearchResults, VectorsRef,
};

use crate::Factory;
use crate::spec::FactorySpec;

/// An index built from a factory string. It forwards every [`Index`] call to the
/// pipeline inside, describes itself by its canonical string (the reverse factory),
/// saves itself ([`FactoryIndex::save`]; load with [`Factory::load`] or
/// [`crate::load_index`]) and takes Faiss parameter strings ([`FactoryIndex::set_params`]).
#[derive(Debug)]
pub struct FactoryIndex {
    spec: FactorySpec,
    canonical: String,
    inner: Box<dyn Index>,
    /// The file a memory-mapped index reads from ([`Factory::mmap`]), watched.
    watch: Option<MappedWatch>,
}

/// A memory-mapped file, opened again to notice when it is changed in place: a read of
/// a mapped page past a new end of file would kill the process (SIGBUS). Its own
/// length and modification time are compared (not the path's: a file renamed over the
/// path, as a save writes, leaves the mapped one whole).
#[derive(Debug)]
struct MappedWatch {
    path: std::path::PathBuf,
    file: std::fs::File,
    stamp: (u64, Option<std::time::SystemTime>),
}

impl MappedWatch {
    fn stamp(file: &std::fs::File) -> Option<(u64, Option<std::time::SystemTime>)> {
        let m = file.metadata().ok()?;
        Some((m.len(), m.modified().ok()))
    }

    fn open(path: &Path) -> Result<MappedWatch> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let stamp = Self::stamp(&file).ok_or_else(|| Error::format(path, "cannot stat"))?;
        Ok(MappedWatch {
            path: path.to_path_buf(),
            file,
            stamp,
        })
    }

    fn check(&self) -> Result<()> {
        if Self::stamp(&self.file) == Some(self.stamp) {
            Ok(())
        } else {
            Err(Error::format(
                &self.path,
                "the memory-mapped index file was changed in place after it was opened; \
                 open it again",
            ))
        }
    }
}

impl FactoryIndex {
    pub(crate) fn new(spec: FactorySpec, inner: Box<dyn Index>) -> FactoryIndex {
        FactoryIndex {
            canonical: spec.to_string(),
            spec,
            inner,
            watch: None,
        }
    }

    /// Watches `path`, the file this index was memory-mapped from: every later call
    /// that reads the index's data first checks the file was not changed in place.
    pub(crate) fn watch_mapped(&mut self, path: &Path) -> Result<()> {
        self.watch = Some(MappedWatch::open(path)?);
        Ok(())
    }

    fn check_mapped(&self) -> Result<()> {
        self.watch.as_ref().map_or(Ok(()), MappedWatch::check)
    }

    /// The parsed description.
    pub fn spec(&self) -> &FactorySpec {
        &self.spec
    }

    /// The pipeline inside.
    pub fn inner(&self) -> &dyn Index {
        &*self.inner
    }

    /// The pipeline inside, mutably (e.g. to set typed parameters).
    pub fn inner_mut(&mut self) -> &mut dyn Index {
        &mut *self.inner
    }

    /// The pipeline inside, unwrapped.
    pub fn into_inner(self) -> Box<dyn Index> {
        self.inner
    }

    /// Sets index-resident search defaults from a Faiss parameter string (see
    /// [`set_params`]).
    ///
    /// # Errors
    /// As [`set_params`].
    pub fn set_params(&mut self, params: &str) -> Result<()> {
        set_params(&mut *self.inner, params)
    }

    /// Writes the index as a container to `out` (see [`vq_core::persist`]).
    ///
    /// # Errors
    /// I/O errors; a component that cannot be saved.
    pub fn write_to(&self, out: &mut dyn Write) -> Result<()> {
        self.check_mapped()?;
        let mut w = StateWriter::new(out)?;
        w.put_str("factory", &self.canonical)?;
        w.put_usize("dim", self.inner.dim())?;
        w.put_str("metric", self.inner.metric().name())?;
        w.scope("index", |w| self.inner.save_state(w))?;
        w.finish()
    }

    /// Saves the index to `path` atomically (temporary file, fsync, rename): a crash
    /// leaves the previous file or none, never a partial one.
    ///
    /// # Errors
    /// As [`FactoryIndex::write_to`].
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        write_atomic(path, |w| self.write_to(w))
    }

    pub(crate) fn read(factory: &Factory, r: &mut StateReader) -> Result<FactoryIndex> {
        let bound = r.total_bytes();
        Self::read_bounded(factory, r, bound)
    }

    /// As [`FactoryIndex::read`], with the list count bounded by `file_bytes` (the size
    /// of the file the container was made from, when its lists are attached parts).
    pub(crate) fn read_bounded(
        factory: &Factory,
        r: &mut StateReader,
        file_bytes: usize,
    ) -> Result<FactoryIndex> {
        let s = r.get_str("factory")?;
        let d = r.get_usize("dim", 1 << 24)?;
        let metric: Metric = r
            .get_str("metric")?
            .parse()
            .map_err(|e| r.error("metric", e))?;
        let spec = factory.parse(&s).map_err(|e| {
            r.error(
                "factory",
                e.to_string().lines().next().unwrap_or_default().to_string(),
            )
        })?;
        // Every list of a saved IVF has at least its 8-byte offset in the file: a string
        // asking for more lists than that is hostile, refused before building allocates.
        if spec.total_lists() > (file_bytes / 8) as u128 {
            return Err(r.error(
                "factory",
                format!("`{s}` has more lists than the file could hold"),
            ));
        }
        let mut inner = factory
            .build(&spec, d, metric)
            .map_err(|e| r.error("factory", format!("`{s}` does not build: {e}")))?;
        r.scope("index", |r| inner.load_state(r))?;
        r.finish()?;
        Ok(FactoryIndex::new(spec, inner))
    }
}

/// Sets index-resident search defaults from a Faiss parameter string such as
/// `"nprobe=16,efSearch=64,quantizer_efSearch=32,k_factor_rf=4"` (Faiss's
/// `ParameterSpace::set_index_parameters`). Names reach through transforms, id maps,
/// refinement (`k_factor_rf`, others go to the base index) and shards; `quantizer_`
/// addresses an IVF's coarse quantizer. The same string converts to per-call parameters
/// with [`SearchParams::parse`].
///
/// The string's syntax and every name are checked before anything is set: an unknown
/// name or a malformed value leaves the index unchanged. A value the index itself
/// refuses (e.g. `nprobe` above `nlist`) is reported; the items before it stay set.
///
/// ```
/// use vq_core::Metric;
/// use vq_factory::{index_factory, set_params};
/// let mut index = index_factory(8, "IVF16,Flat", Metric::L2)?;
/// set_params(&mut index, "nprobe=4")?;
/// assert!(set_params(&mut index, "efSearch=4").is_err());
/// assert!(set_params(&mut index, "nprobes=4").is_err());
/// # Ok::<(), vq_core::Error>(())
/// ```
///
/// # Errors
/// [`Error::InvalidParameter`] for a malformed string, a name the index does not have,
/// or a value out of range.
pub fn set_params(index: &mut dyn Index, params: &str) -> Result<()> {
    // Syntax, names and values first, so that a bad string sets nothing.
    SearchParams::parse(params)?;
    let names = index.search_param_names();
    let items: Vec<(&str, &str)> = params
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .filter_map(|x| x.split_once('='))
        .map(|(n, v)| (n.trim(), v.trim()))
        .collect();
    // `k_factor` is Faiss's alias of `k_factor_rf`, at any nesting (`quantizer_k_factor`).
    let known = |n: &str| {
        names.iter().any(|x| x == n)
            || n.strip_suffix("k_factor")
                .is_some_and(|pre| names.iter().any(|x| *x == format!("{pre}k_factor_rf")))
    };
    if let Some((n, _)) = items.iter().find(|(n, _)| !known(n)) {
        return Err(Error::invalid_param(
            *n,
            format!(
                "not a search parameter of {} (it has: {})",
                index.describe(),
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ),
        ));
    }
    for (n, v) in items {
        index.set_search_param(n, v)?;
    }
    Ok(())
}

impl Index for FactoryIndex {
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn metric(&self) -> Metric {
        self.inner.metric()
    }
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn add(&mut self, x: VectorsRef<'_>) -> Result<()> {
        self.check_mapped()?;
        self.inner.add(x)
    }
    fn search_into(
        &self,
        queries: VectorsRef<'_>,
        k: usize,
        params: &SearchParams<'_>,
        out: &mut SearchResults,
    ) -> Result<()> {
        self.check_mapped()?;
        self.inner.search_into(queries, k, params, out)
    }
    fn reset(&mut self) {
        self.inner.reset()
    }
    fn describe(&self) -> String {
        self.canonical.clone()
    }
    fn is_trained(&self) -> bool {
        self.inner.is_trained()
    }
    fn train(&mut self, x: VectorsRef<'_>) -> Result<()> {
        self.inner.train(x)
    }
    fn add_with_ids(&mut self, x: VectorsRef<'_>, ids: &[Label]) -> Result<()> {
        self.check_mapped()?;
        self.inner.add_with_ids(x, ids)
    }
    fn range_search(
        &self,
        queries: VectorsRef<'_>,
        radius: f32,
        params: &SearchParams<'_>,
    ) -> Result<RangeSearchResults> {
        self.check_mapped()?;
        self.inner.range_search(queries, radius, params)
    }
    fn reconstruct_into(&self, id: Label, out: &mut [f32]) -> Result<()> {
        self.check_mapped()?;
        self.inner.reconstruct_into(id, out)
    }
    fn assign(&self, x: VectorsRef<'_>) -> Result<Vec<Label>> {
        self.check_mapped()?;
        self.inner.assign(x)
    }
    fn remove_ids(&mut self, selector: &dyn IdFilter) -> Result<usize> {
        self.check_mapped()?;
        self.inner.remove_ids(selector)
    }
    fn removal_keeps_ids(&self) -> bool {
        self.inner.removal_keeps_ids()
    }
    fn search_param_names(&self) -> Vec<String> {
        self.inner.search_param_names()
    }
    fn set_build_param(&mut self, name: &str, value: &str) -> Result<()> {
        self.inner.set_build_param(name, value)
    }
    fn set_search_param(&mut self, name: &str, value: &str) -> Result<()> {
        self.inner.set_search_param(name, value)
    }
    fn bytes_per_vector(&self) -> f64 {
        self.inner.bytes_per_vector()
    }
    fn as_codec(&self) -> Option<&dyn Codec> {
        self.inner.as_codec()
    }
    fn save_state(&self, w: &mut StateWriter<'_>) -> Result<()> {
        self.check_mapped()?;
        self.inner.save_state(w)
    }
    fn load_state(&mut self, r: &mut StateReader) -> Result<()> {
        self.inner.load_state(r)?;
        // Everything now comes from `r`.
        self.watch = None;
        Ok(())
    }
}
