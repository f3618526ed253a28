#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod codec;
pub mod distance;
mod error;
pub mod eval;
mod flat;
mod idmap;
mod index;
pub mod io;
pub mod knn;
pub mod mem;
mod metric;
mod params;
pub mod persist;
mod refine;
mod results;
mod selector;
pub mod synthetic;
#[cfg(feature = "testing")]
pub mod testing;
pub mod topk;
mod transform;
mod vectors;

pub use codec::{AdcCodec, BoxedCodec, CodeDistance, Codec, DynAdcCodec, FlatCodec};
pub use error::{Error, Result};
pub use flat::IndexFlat;
pub use idmap::{IndexIDMap, IndexIDMap2};
pub use index::{Index, check_range_search, check_result_size, check_search};
pub use metric::Metric;
pub use params::{PARAM_NAMES, SearchParams};
pub use refine::IndexRefine;
pub use results::{RangeSearchResults, SearchResults};
pub use selector::{IdFilter, IdSelector};
pub use transform::{L2Normalize, PreTransform, VectorTransform};
pub use vectors::{Label, NO_LABEL, Vectors, VectorsRef};
