#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod build;
mod graph;
mod index;
pub mod io;
mod steer;
mod storage;

pub use graph::Hnsw;
pub use index::{IndexHnsw, IndexHnswFlat, IndexHnswPq, IndexHnswSq};
pub use storage::{
    CodecQuery, CodecStorage, FlatQuery, FlatStorage, HnswStorage, NodeQuery, StorableCodec,
};
