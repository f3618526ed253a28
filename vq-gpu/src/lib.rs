#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod device;
mod flat;
mod ivf;
mod kmeans;
mod ops;

pub use device::{DeviceInfo, GpuDevice, device_count, probe};
pub use flat::{GpuFlatConfig, GpuIndexFlat, Storage};
pub use ivf::{GpuEncoding, GpuIndexIvf, GpuIndexIvfFlat, GpuIndexIvfPq, GpuScan};
pub use kmeans::train_kmeans;
