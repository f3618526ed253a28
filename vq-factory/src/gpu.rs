//! Factory strings built on the GPU (vq-gpu).

use vq_core::{Error, Metric, Result};
use vq_gpu::{GpuDevice, GpuIndexFlat, GpuIndexIvfFlat, GpuIndexIvfPq};

use crate::saved::FactoryIndex;
use crate::spec::{CoarseSpec, EncodingSpec, FactorySpec};

/// Builds the GPU version of `spec` on `dev` (what `vq bench --gpu` runs): `Flat`
/// ([`GpuIndexFlat`]), `IVF{n},Flat` ([`GpuIndexIvfFlat`]) and `IVF{n},PQ{m}` with 8-bit
/// codes ([`GpuIndexIvfPq`]). The index searches on the GPU and trains its coarse
/// centroids with GPU k-means; it cannot be saved as it is — convert it to the CPU
/// (`into_cpu` / `to_cpu`) for that.
///
/// ```no_run
/// use vq_core::Metric;
/// let dev = vq_gpu::GpuDevice::new(0)?;
/// let spec = vq_factory::FactorySpec::parse("IVF1024,PQ32")?;
/// let index = vq_factory::build_gpu(&spec, 128, Metric::L2, &dev)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// [`Error::NotSupported`] for other strings (naming what the GPU covers); the
/// constructors' errors for invalid shapes.
pub fn build_gpu(
    spec: &FactorySpec,
    d: usize,
    metric: Metric,
    dev: &GpuDevice,
) -> Result<FactoryIndex> {
    let inner: Box<dyn vq_core::Index> = match spec {
        FactorySpec::Codes(EncodingSpec::Flat) => Box::new(GpuIndexFlat::new(dev, d, metric)?),
        FactorySpec::Ivf {
            coarse: CoarseSpec::Ivf { nlist },
            encoding: EncodingSpec::Flat,
        } => Box::new(GpuIndexIvfFlat::new_flat(dev, d, *nlist, metric)?),
        FactorySpec::Ivf {
            coarse: CoarseSpec::Ivf { nlist },
            encoding: EncodingSpec::Pq { m, nbits: 8 },
        } => Box::new(GpuIndexIvfPq::new_pq(dev, d, *nlist, *m, metric)?),
        other => {
            return Err(Error::not_supported(
                "building on the GPU",
                format!("`{other}` (the GPU builds Flat, IVF<n>,Flat and IVF<n>,PQ<m>)"),
            ));
        }
    };
    Ok(FactoryIndex::new(spec.clone(), inner))
}
