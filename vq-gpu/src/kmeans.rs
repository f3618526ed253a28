//! k-means with the assignment step on the GPU.

use vq_core::{Metric, Result, VectorsRef};
use vq_kmeans::{KMeans, TrainOptions};

use crate::device::GpuDevice;
use crate::flat::{GpuFlatConfig, GpuIndexFlat};

/// Trains `km` on `x` with a [`GpuIndexFlat`] assigning the points to the centroids at
/// each iteration (vq-kmeans' assigner hook; Faiss passes a GPU flat index to
/// `Clustering::train` the same way). Everything else — initialisation, updates,
/// empty-cluster splitting, the objective — is vq-kmeans' own, so the result matches
/// the CPU's up to the assignment of near-ties. Points larger than device memory are
/// streamed through the GPU in tiles.
///
/// ```no_run
/// use vq_core::synthetic::SyntheticSpec;
/// use vq_kmeans::{KMeans, KMeansParams};
/// let dev = vq_gpu::GpuDevice::new(0)?;
/// let data = SyntheticSpec::new(100_000, 64, 0).generate()?;
/// let mut km = KMeans::new(64, KMeansParams::new(1024).with_niter(20))?;
/// vq_gpu::train_kmeans(&mut km, &dev, data.base.as_ref())?;
/// assert_eq!(km.centroids().len(), 1024);
/// # Ok::<(), vq_core::Error>(())
/// ```
///
/// # Errors
/// As [`KMeans::train`], and GPU errors.
pub fn train_kmeans(km: &mut KMeans, dev: &GpuDevice, x: VectorsRef<'_>) -> Result<()> {
    let metric = if km.params().spherical {
        Metric::InnerProduct
    } else {
        Metric::L2
    };
    let mut assigner = GpuIndexFlat::with_config(dev, km.dim(), metric, GpuFlatConfig::default())?;
    km.train_with(
        x,
        TrainOptions {
            assigner: Some(&mut assigner),
            ..TrainOptions::default()
        },
    )
}
