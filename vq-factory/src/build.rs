//! The registry of tokens and the builder: AST → index.

use std::path::Path;
use std::sync::Arc;

use vq_core::persist::{LoadMode, StateReader};
use vq_core::{
    BoxedCodec, DynAdcCodec, Error, Index, IndexFlat, IndexIDMap, IndexIDMap2, IndexRefine,
    L2Normalize, Metric, PreTransform, Result, VectorTransform,
};
use vq_hnsw::{IndexHnswFlat, IndexHnswPq, IndexHnswSq};
use vq_ivf::{
    AnyQuantizer, CoarseQuantizer, IndexIvf, IndexIvfPqFastScan, IvfCodec, IvfFlat, IvfPq,
    MultiIndexQuantizer,
};
use vq_pq::{
    IndexFlatCodes, IndexPQ, IndexPQFastScan, IndexScalarQuantizer, Opq, Pca, ProductQuantizer,
    RandomRotation, ScalarQuantizer,
};

use crate::parse::{ParseError, Parser};
use crate::saved::FactoryIndex;
use crate::spec::{CoarseSpec, EncodingSpec, FactorySpec, IdMapKind, TransformSpec};

/// Largest vector dimension the factory builds (input or transform output): a bound on
/// what a string (or a saved file's string) can make the builder allocate.
pub const MAX_DIM: usize = 1 << 20;

fn check_dim(what: &str, d: usize) -> Result<()> {
    if d > MAX_DIM {
        return Err(Error::invalid_param(
            what,
            format!("dimension {d} exceeds the factory's limit of {MAX_DIM}"),
        ));
    }
    Ok(())
}

/// Makes a registered codec from the token's arguments (the text after its name) and
/// the dimension it encodes.
pub type CodecConstructor = Arc<dyn Fn(&str, usize) -> Result<Box<dyn DynAdcCodec>> + Send + Sync>;

/// Makes a registered transform from the token's arguments and its input dimension.
pub type TransformConstructor =
    Arc<dyn Fn(&str, usize) -> Result<Box<dyn VectorTransform>> + Send + Sync>;

/// A component a researcher registers under a token name.
#[derive(Clone)]
pub enum Component {
    /// A codec: usable stand-alone (`MyCodec16`) and as an IVF encoding
    /// (`IVF1024,MyCodec16`).
    Codec(CodecConstructor),
    /// A transform: usable in front of any index (`MyRot,IVF1024,Flat`).
    Transform(TransformConstructor),
}

impl std::fmt::Debug for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Component::Codec(_) => "Codec",
            Component::Transform(_) => "Transform",
        })
    }
}

/// Parses and builds factory strings; holds the tokens registered on top of Faiss's.
///
/// [`index_factory`](crate::index_factory) uses a `Factory` with the built-in tokens only.
/// Register your own codec or transform to use it in strings:
///
/// ```
/// use vq_core::{FlatCodec, Index, Metric};
/// use vq_factory::Factory;
/// let mut f = Factory::new();
/// // `Raw` stores vectors as they are (the identity codec).
/// f.register_codec("Raw", |args, d| {
///     if !args.is_empty() {
///         return Err(vq_core::Error::invalid_param("Raw", "takes no arguments"));
///     }
///     Ok(Box::new(FlatCodec::new(d)?))
/// })?;
/// let index = f.index(16, "IVF8,Raw", Metric::L2)?;
/// assert_eq!(index.describe(), "IVF8,Raw");
/// # Ok::<(), vq_core::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct Factory {
    registered: Vec<(String, Component)>,
}

impl std::fmt::Debug for Factory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.registered.iter().map(|(n, c)| (n, c)))
            .finish()
    }
}

impl Factory {
    /// A factory with Faiss's tokens only.
    pub fn new() -> Factory {
        Factory::default()
    }

    /// Registers `component` under `name`: a token is then `name` followed by optional
    /// arguments made of letters, digits, `_` and `.` (`MyCodec16`, `MyCodec4_2`), which
    /// the constructor receives. Built-in tokens take precedence.
    ///
    /// # Errors
    /// A name that is empty, does not start with an ASCII letter, holds other characters
    /// than ASCII letters and digits, or is registered already.
    pub fn register(&mut self, name: &str, component: Component) -> Result<&mut Factory> {
        let ok = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && name.chars().all(|c| c.is_ascii_alphanumeric());
        if !ok {
            return Err(Error::invalid_param(
                "name",
                format!("`{name}`: a token name is an ASCII letter followed by letters and digits"),
            ));
        }
        if self.registered.iter().any(|(n, _)| n == name) {
            return Err(Error::invalid_param(
                "name",
                format!("`{name}` is registered already"),
            ));
        }
        self.registered.push((name.to_string(), component));
        // Longest names first, so `MyCodecX` wins over `MyCodec`.
        self.registered
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        Ok(self)
    }

    /// Registers a codec (see [`Factory::register`]).
    ///
    /// # Errors
    /// As [`Factory::register`].
    pub fn register_codec(
        &mut self,
        name: &str,
        make: impl Fn(&str, usize) -> Result<Box<dyn DynAdcCodec>> + Send + Sync + 'static,
    ) -> Result<&mut Factory> {
        self.register(name, Component::Codec(Arc::new(make)))
    }

    /// Registers a transform (see [`Factory::register`]).
    ///
    /// # Errors
    /// As [`Factory::register`].
    pub fn register_transform(
        &mut self,
        name: &str,
        make: impl Fn(&str, usize) -> Result<Box<dyn VectorTransform>> + Send + Sync + 'static,
    ) -> Result<&mut Factory> {
        self.register(name, Component::Transform(Arc::new(make)))
    }

    fn lookup(&self, token: &str, want_codec: bool) -> Option<(String, String, &Component)> {
        self.registered.iter().find_map(|(name, c)| {
            let args = token.strip_prefix(name.as_str())?;
            let args_ok = args
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
            let kind_ok = matches!(c, Component::Codec(_)) == want_codec;
            (args_ok && kind_ok).then(|| (name.clone(), args.to_string(), c))
        })
    }

    pub(crate) fn codec_token(&self, token: &str) -> Option<(String, String)> {
        self.lookup(token, true).map(|(n, a, _)| (n, a))
    }

    pub(crate) fn transform_token(&self, token: &str) -> Option<(String, String)> {
        self.lookup(token, false).map(|(n, a, _)| (n, a))
    }

    /// Parses a factory string.
    ///
    /// # Errors
    /// A [`ParseError`] naming the first offending token and its position.
    pub fn parse(&self, description: &str) -> std::result::Result<FactorySpec, ParseError> {
        Parser::new(description, self).parse()
    }

    /// Parses `description` and builds an empty index of dimension `d` (untrained where
    /// training is needed). The index describes itself by its canonical string.
    ///
    /// # Errors
    /// [`Error::Factory`] wrapping a [`ParseError`]; the build's errors (dimensions,
    /// metric restrictions).
    pub fn index(&self, d: usize, description: &str, metric: Metric) -> Result<FactoryIndex> {
        let spec = self
            .parse(description)
            .map_err(|e| Error::Factory(Box::new(e)))?;
        self.build_spec(spec, d, metric)
    }

    /// Builds an index from a parsed spec.
    ///
    /// # Errors
    /// As [`Factory::index`], without the parse errors.
    pub fn build_spec(&self, spec: FactorySpec, d: usize, metric: Metric) -> Result<FactoryIndex> {
        let inner = self.build(&spec, d, metric)?;
        Ok(FactoryIndex::new(spec, inner))
    }

    /// Loads an index saved with [`FactoryIndex::save`], reading the whole file and
    /// verifying every checksum.
    ///
    /// # Errors
    /// I/O errors, a file that is not a vq index, truncated or corrupt sections, a newer
    /// format version, sections this build does not know, a string with unregistered
    /// tokens.
    pub fn load(&self, path: impl AsRef<Path>) -> Result<FactoryIndex> {
        let mut r = StateReader::open(path, LoadMode::Read)?;
        FactoryIndex::read(self, &mut r)
    }

    /// Loads an index saved with [`FactoryIndex::save`], mapping the file: large arrays
    /// (inverted lists) stay on disk and are paged in when searched, so opening is
    /// near-instant and memory is shared with the page cache. Such an index is read-only
    /// where its storage is mapped (adding returns an error). The file must not be
    /// modified in place while mapped: the index checks the file's length and
    /// modification time before each call that reads it, and a change is an
    /// [`vq_core::Error::Format`] rather than a fault. `save` replaces files by renaming,
    /// which is safe (the map keeps the file it opened).
    ///
    /// # Errors
    /// As [`Factory::load`].
    pub fn mmap(&self, path: impl AsRef<Path>) -> Result<FactoryIndex> {
        let path = path.as_ref();
        let mut r = StateReader::open(path, LoadMode::Mmap)?;
        let mut index = FactoryIndex::read(self, &mut r)?;
        if r.is_mapped() {
            index.watch_mapped(path)?;
        }
        Ok(index)
    }

    /// Loads an index from the bytes of a saved file.
    ///
    /// # Errors
    /// As [`Factory::load`].
    pub fn load_bytes(&self, bytes: Vec<u8>) -> Result<FactoryIndex> {
        let mut r = StateReader::from_bytes(bytes, "<memory>")?;
        FactoryIndex::read(self, &mut r)
    }

    fn component(&self, name: &str) -> Result<&Component> {
        self.registered
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c)
            .ok_or_else(|| Error::invalid_param(name, "not a registered token"))
    }

    fn codec(&self, name: &str, args: &str, d: usize) -> Result<BoxedCodec> {
        match self.component(name)? {
            Component::Codec(make) => {
                let c = make(args, d)
                    .map_err(|e| Error::invalid_param(format!("{name}{args}"), e.to_string()))?;
                if c.dim() != d {
                    return Err(Error::DimensionMismatch {
                        expected: d,
                        got: c.dim(),
                    });
                }
                Ok(BoxedCodec(c))
            }
            Component::Transform(_) => {
                Err(Error::invalid_param(name, "is a transform, not a codec"))
            }
        }
    }

    fn transform(&self, t: &TransformSpec, d: usize) -> Result<Box<dyn VectorTransform>> {
        let d_out = match t {
            TransformSpec::Pca { d_out, .. } => Some(*d_out),
            TransformSpec::Opq { d_out, .. } | TransformSpec::RandomRotation { d_out } => *d_out,
            TransformSpec::L2Norm | TransformSpec::Custom { .. } => None,
        };
        if let Some(d_out) = d_out {
            check_dim(&t.to_string(), d_out)?;
        }
        Ok(match t {
            TransformSpec::L2Norm => Box::new(L2Normalize::new(d)?),
            TransformSpec::Pca {
                d_out,
                whiten,
                rotate,
            } => Box::new(
                Pca::new(d, *d_out)?
                    .with_eigen_power(if *whiten { -0.5 } else { 0.0 })
                    .with_random_rotation(*rotate),
            ),
            TransformSpec::Opq { m, d_out } => {
                Box::new(Opq::with_output(d, *m, d_out.unwrap_or(d))?)
            }
            TransformSpec::RandomRotation { d_out } => {
                Box::new(RandomRotation::new(d, d_out.unwrap_or(d))?)
            }
            TransformSpec::Custom { name, args } => match self.component(name)? {
                Component::Transform(make) => {
                    let t = make(args, d).map_err(|e| {
                        Error::invalid_param(format!("{name}{args}"), e.to_string())
                    })?;
                    if t.d_in() != d {
                        return Err(Error::DimensionMismatch {
                            expected: d,
                            got: t.d_in(),
                        });
                    }
                    t
                }
                Component::Codec(_) => {
                    return Err(Error::invalid_param(
                        name.as_str(),
                        "is a codec, not a transform",
                    ));
                }
            },
        })
    }

    /// Builds the index a spec describes, at dimension `d`.
    ///
    /// # Errors
    /// Invalid dimensions (`d == 0`, a PCA or OPQ output larger than allowed, `M` not
    /// dividing the dimension it applies to, `nbits` outside 1..=16), metric
    /// restrictions (IMI is L2 only, as in Faiss), a graph over a registered codec.
    pub fn build(&self, spec: &FactorySpec, d: usize, metric: Metric) -> Result<Box<dyn Index>> {
        check_dim("d", d)?;
        Ok(match spec {
            FactorySpec::IdMap { kind, inner } => {
                let inner = self.build(inner, d, metric)?;
                match kind {
                    IdMapKind::IdMap => Box::new(IndexIDMap::new(inner)?),
                    IdMapKind::IdMap2 => Box::new(IndexIDMap2::new(inner)?),
                }
            }
            FactorySpec::Refine { base, refine } => {
                let mut refine = self.build(refine, d, metric)?;
                // The refinement scores candidates by reconstructing them: an inverted
                // file (also under a transform or an id map) needs its direct map. An
                // index without the parameter reconstructs anyway.
                let _ = refine.set_build_param("direct_map", "1");
                Box::new(IndexRefine::new(self.build(base, d, metric)?, refine)?)
            }
            FactorySpec::PreTransform { chain, inner } => {
                let mut dim = d;
                let mut ts = Vec::with_capacity(chain.len());
                for t in chain {
                    let t = self.transform(t, dim)?;
                    dim = t.d_out();
                    check_dim("transform output", dim)?;
                    ts.push(t);
                }
                Box::new(PreTransform::new(ts, self.build(inner, dim, metric)?)?)
            }
            FactorySpec::Codes(e) => match e {
                EncodingSpec::Flat => Box::new(IndexFlat::new(d, metric)?),
                EncodingSpec::Pq { m, nbits } => {
                    Box::new(IndexPQ::new(ProductQuantizer::new(d, *m, *nbits)?, metric))
                }
                EncodingSpec::PqFastScan {
                    m,
                    by_residual: false,
                    bbs,
                } => Box::new(IndexPQFastScan::from_pq(
                    ProductQuantizer::new(d, *m, 4)?,
                    metric,
                    *bbs,
                )?),
                EncodingSpec::PqFastScan { .. } => {
                    return Err(Error::invalid_param(
                        spec.to_string(),
                        "fast-scan codes by residual (`fsr`) need an inverted file",
                    ));
                }
                EncodingSpec::Sq(t) => Box::new(IndexScalarQuantizer::new(
                    ScalarQuantizer::new(d, *t)?,
                    metric,
                )),
                EncodingSpec::Custom { name, args } => {
                    Box::new(IndexFlatCodes::new(self.codec(name, args, d)?, metric))
                }
            },
            FactorySpec::Hnsw { m, storage } => match storage {
                EncodingSpec::Flat => Box::new(IndexHnswFlat::new(d, *m, metric)?),
                EncodingSpec::Sq(t) => Box::new(IndexHnswSq::new_sq(d, *m, *t, metric)?),
                EncodingSpec::Pq { m: pm, nbits } => {
                    Box::new(IndexHnswPq::new_pq(d, *m, *pm, *nbits, metric)?)
                }
                EncodingSpec::PqFastScan { .. } => {
                    return Err(Error::not_supported(
                        "HNSW storage",
                        format!(
                            "{storage} (fast-scan codes are scanned in blocks, not by a graph)"
                        ),
                    ));
                }
                EncodingSpec::Custom { name, args } => {
                    return Err(Error::not_supported(
                        "HNSW storage",
                        format!(
                            "registered codec {name}{args} (graphs store Flat, SQ or PQ codes)"
                        ),
                    ));
                }
            },
            FactorySpec::Ivf { coarse, encoding } => match coarse {
                CoarseSpec::Ivf { nlist } => {
                    self.ivf(IndexFlat::new(d, metric)?, *nlist, encoding, d, metric)?
                }
                CoarseSpec::Imi { bits } => {
                    if metric != Metric::L2 {
                        return Err(Error::invalid_param(
                            "metric",
                            format!("IMI2x{bits} supports L2 only (as Faiss)"),
                        ));
                    }
                    let q = MultiIndexQuantizer::new(d, *bits)?;
                    let nlist = q.nlist();
                    self.ivf(q, nlist, encoding, d, metric)?
                }
                CoarseSpec::IvfHnsw { nlist, m } => self.ivf(
                    AnyQuantizer(IndexHnswFlat::new(d, *m, metric)?),
                    *nlist,
                    encoding,
                    d,
                    metric,
                )?,
                CoarseSpec::IvfIndex { nlist, quantizer } => self.ivf(
                    AnyQuantizer(self.build(quantizer, d, metric)?),
                    *nlist,
                    encoding,
                    d,
                    metric,
                )?,
            },
        })
    }

    fn ivf<Q: CoarseQuantizer + 'static>(
        &self,
        q: Q,
        nlist: usize,
        encoding: &EncodingSpec,
        d: usize,
        metric: Metric,
    ) -> Result<Box<dyn Index>> {
        Ok(match encoding {
            EncodingSpec::Flat => Box::new(IndexIvf::new(q, nlist, IvfFlat::new(d)?, metric)?),
            EncodingSpec::Pq { m, nbits } => Box::new(IndexIvf::new(
                q,
                nlist,
                IvfPq::new(ProductQuantizer::new(d, *m, *nbits)?, true),
                metric,
            )?),
            EncodingSpec::PqFastScan {
                m,
                by_residual,
                bbs,
            } => Box::new(IndexIvfPqFastScan::new(
                q,
                nlist,
                ProductQuantizer::new(d, *m, 4)?,
                *by_residual,
                metric,
                *bbs,
            )?),
            EncodingSpec::Sq(t) => Box::new(IndexIvf::new(
                q,
                nlist,
                IvfCodec::new(ScalarQuantizer::new(d, *t)?, true),
                metric,
            )?),
            EncodingSpec::Custom { name, args } => Box::new(IndexIvf::new(
                q,
                nlist,
                IvfCodec::new(self.codec(name, args, d)?, true),
                metric,
            )?),
        })
    }
}
