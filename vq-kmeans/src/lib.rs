#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod init;
mod params;
mod train;
mod two_level;

pub use params::{Init, KMeansParams};
pub use train::{IterationStats, KMeans, TrainOptions, imbalance_factor};
