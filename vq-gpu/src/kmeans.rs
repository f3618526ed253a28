//! k-means with the assignment step on the GPU.

use std::sync::Mutex;

use vq_core::{Index, Metric, Result, SearchParams, SearchResults, VectorsRef, check_search};
use vq_kmeans::{KMeans, TrainOptions};

use crate::device::GpuDevice;
use crate::flat::{GpuFlatConfig, GpuIndexFlat, ResidentQueries};

/// Trains `km` on `x` with a [`GpuIndexFlat`] assigning the points to the centroids at
/// each iteration (vq-kmeans' assigner hook; Faiss passes a GPU flat index to
/// `Clustering::train` the same way). Everything else — initialisation, updates,
/// empty-cluster splitting, the objective — is vq-kmeans' own, so the result matches
/// the CPU's up to the assignment of near-ties. The points are copied to the device
/// once and stay there for every iteration (vq-kmeans searches the same points at each
/// one); points larger than half the free device memory are streamed through the GPU
/// in tiles at each iteration instead.
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
    let mut assigner = Assigner {
        flat: GpuIndexFlat::with_config(dev, km.dim(), metric, GpuFlatConfig::default())?,
        resident: Mutex::new(None),
    };
    km.train_with(
        x,
        TrainOptions {
            assigner: Some(&mut assigner),
            ..TrainOptions::default()
        },
    )
}

/// The assignment index of [`train_kmeans`]: a [`GpuIndexFlat`] over the centroids that
/// keeps the points it is searched with on the device. vq-kmeans searches the same
/// points, in the same memory, unchanged, at every iteration of one training call (its
/// `TrainOptions::assigner` contract), and this assigner lives only for that call, so
/// the points' address and length identify the copy already uploaded.
struct Assigner {
    flat: GpuIndexFlat,
    /// Address and length of the points held, and their device copy.
    resident: Mutex<Option<(usize, usize, ResidentQueries)>>,
}

impl std::fmt::Debug for Assigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assigner")
            .field("flat", &self.flat)
            .finish()
    }
}

impl Index for Assigner {
    fn dim(&self) -> usize {
        self.flat.dim()
    }

    fn metric(&self) -> Metric {
        self.flat.metric()
    }

    fn len(&self) -> usize {
        self.flat.len()
    }

    fn add(&mut self, x: VectorsRef<'_>) -> Result<()> {
        self.flat.add(x)
    }

    fn reset(&mut self) {
        self.flat.reset();
    }

    fn search_into(
        &self,
        queries: VectorsRef<'_>,
        k: usize,
        params: &SearchParams<'_>,
        out: &mut SearchResults,
    ) -> Result<()> {
        let key = (
            queries.as_slice().as_ptr() as usize,
            queries.as_slice().len(),
        );
        let mut held = self
            .resident
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let hit = matches!(&*held, Some((p, l, _)) if (*p, *l) == key);
        if !hit && params.selector.is_none() {
            *held = None;
            let need = queries.as_slice().len() * 4 + queries.len() * 4;
            if need <= self.flat.device().memory()?.0 / 2 {
                check_search(&self.flat, queries, k)?;
                let r = self.flat.upload_resident(queries)?;
                *held = Some((key.0, key.1, r));
            }
        }
        match &*held {
            Some((_, _, r)) if params.selector.is_none() => {
                debug_assert_eq!(r.len(), queries.len());
                self.flat.search_resident(r, k, out)
            }
            _ => self.flat.search_into(queries, k, params, out),
        }
    }
}
