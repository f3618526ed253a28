#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![deny(unsafe_code)]

mod encoding;
mod fastscan;
mod invlists;
mod ivf;
mod ondisk;
mod quantizer;
mod shards;

pub use encoding::{
    CodecScanner, FlatScanner, IvfCodec, IvfEncoding, IvfFlat, IvfPq, ListScanner,
    PRECOMPUTED_TABLE_MAX_BYTES, PqScanner,
};
pub use fastscan::IndexIvfPqFastScan;
pub use invlists::{ArrayInvertedLists, InvertedLists, SharedInvertedLists, merge_into};
pub use ivf::{IndexIvf, IndexIvfFlat, IndexIvfPq, IndexIvfSq};
pub use ondisk::OnDiskInvertedLists;
pub use quantizer::{AnyQuantizer, CoarseQuantizer, MultiIndexQuantizer};
pub use shards::IndexShards;
