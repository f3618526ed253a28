#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod bits;
pub mod fastscan;
mod fastscan_index;
mod flat_codes;
mod linear;
mod opq;
mod pca;
mod pq;
mod simd;
mod sq;
mod state;

pub use fastscan_index::IndexPQFastScan;
pub use flat_codes::{IndexFlatCodes, IndexPQ, IndexScalarQuantizer};
pub use linear::{LinearTransform, RandomRotation};
pub use opq::Opq;
pub use pca::Pca;
pub use pq::{PqDistanceTable, ProductQuantizer};
pub use sq::{RangeStat, ScalarQuantizer, SqDistance, SqType};
/// Re-exported: the `L2norm` transform lives in `vq-core`.
pub use vq_core::L2Normalize;

use rand::SeedableRng;
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;
use vq_core::{Vectors, VectorsRef};

/// A seeded random subset of at most `max` rows of `x`, in their original order, or
/// `None` when `x` is small enough already.
pub fn subsample(x: VectorsRef<'_>, max: usize, seed: u64) -> Option<Vectors> {
    let n = x.len();
    if n <= max {
        return None;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut idx = sample(&mut rng, n, max).into_vec();
    idx.sort_unstable();
    let d = x.dim();
    let mut data = Vec::with_capacity(max * d);
    for i in idx {
        data.extend_from_slice(x.row(i));
    }
    Vectors::new(data, d).ok()
}
