//! `GpuIndexIvfFlat` and `GpuIndexIvfPq`: IVF search on the GPU.

use std::sync::Mutex;

use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
use vq_core::{
    Error, Index, IndexFlat, Label, Metric, RangeSearchResults, Result, SearchParams,
    SearchResults, VectorsRef, check_search,
};
use vq_ivf::{IndexIvf, IvfEncoding, IvfFlat, IvfPq};
use vq_kmeans::{KMeans, TrainOptions};

use crate::device::{BindOnDrop, GpuDevice, gpu_err};
use crate::flat::{DataSrc, GpuFlatConfig, GpuIndexFlat, knn_tile, tiles};
use crate::ops::{
    BLOCK, DevRows, SelectInput, alloc, download, finish_rows, select_k, sort_k, sq_norms, to_i32,
    to_u32, upload,
};

/// Candidates (list entries scored) held on the device at once; a batch of queries
/// whose probed lists hold more is split.
const CANDIDATE_BUDGET: usize = 64 << 20;

/// Queries per batch of an IVF search.
const QUERY_BATCH: usize = 4096;

/// How the lists of an encoding are scanned on the GPU (built by
/// [`GpuEncoding::gpu_scan`]).
#[derive(Clone, Debug)]
pub struct GpuScan {
    kind: ScanKind,
}

#[derive(Clone, Debug)]
enum ScanKind {
    Flat,
    Pq {
        m: usize,
        by_residual: bool,
        codebook: Vec<f32>,
    },
}

/// The IVF encodings the GPU scans: raw vectors ([`IvfFlat`]) and 8-bit PQ ([`IvfPq`]).
pub trait GpuEncoding: IvfEncoding {
    /// The scan this encoding needs on the GPU.
    ///
    /// # Errors
    /// [`Error::NotSupported`] for shapes the GPU kernels do not cover (PQ with other
    /// than 8 bits per sub-quantizer).
    fn gpu_scan(&self) -> Result<GpuScan>;
}

impl GpuEncoding for IvfFlat {
    fn gpu_scan(&self) -> Result<GpuScan> {
        Ok(GpuScan {
            kind: ScanKind::Flat,
        })
    }
}

impl GpuEncoding for IvfPq {
    fn gpu_scan(&self) -> Result<GpuScan> {
        let pq = self.pq();
        if pq.nbits() != 8 {
            return Err(Error::not_supported(
                "GPU IVF-PQ with other than 8-bit codes",
                format!("PQ{}x{}", pq.m(), pq.nbits()),
            ));
        }
        Ok(GpuScan {
            kind: ScanKind::Pq {
                m: pq.m(),
                by_residual: self.by_residual(),
                codebook: pq.centroids().to_vec(),
            },
        })
    }
}

/// The lists on the device.
struct IvfMirror {
    centroids: CudaSlice<f32>,
    cnorms: CudaSlice<f32>,
    codes: CudaSlice<u8>,
    codebook: Option<CudaSlice<f32>>,
    list_start: CudaSlice<i64>,
    list_len: CudaSlice<i32>,
    ids: CudaSlice<i64>,
    host_len: Vec<usize>,
}

/// An IVF index searched on the GPU (Faiss's `GpuIndexIVFFlat` / `GpuIndexIVFPQ`):
/// coarse assignment, list scan and k-selection all run on the device, for any `k` and
/// `nprobe` (no 2048 cap). Training runs k-means with the GPU assigning points.
///
/// The index wraps the CPU index it was built from or converts to
/// ([`GpuIndexIvf::from_cpu`], [`GpuIndexIvf::into_cpu`]): adding, removal,
/// `reconstruct` and `range_search` use the CPU copy, and the lists are copied to the
/// device at the first search after a change.
///
/// ```no_run
/// use vq_core::{Index, Metric, SearchParams, synthetic::SyntheticSpec};
/// use vq_gpu::{GpuDevice, GpuIndexIvfFlat};
/// let dev = GpuDevice::new(0)?;
/// let data = SyntheticSpec::new(20_000, 32, 10).generate()?;
/// let mut index = GpuIndexIvfFlat::new_flat(&dev, 32, 256, Metric::L2)?;
/// index.train(data.base.as_ref())?;
/// index.add(data.base.as_ref())?;
/// let res = index.search(data.queries.as_ref(), 10, &SearchParams::new().with_nprobe(16))?;
/// assert_eq!(res.row(0).1.len(), 10);
/// # Ok::<(), vq_core::Error>(())
/// ```
pub struct GpuIndexIvf<E: GpuEncoding> {
    dev: GpuDevice,
    cpu: IndexIvf<IndexFlat, E>,
    scan: GpuScan,
    /// Dropped before `mirror` (fields drop in order): makes the context current.
    _bind: BindOnDrop,
    mirror: Mutex<Option<IvfMirror>>,
}

/// IVF with raw vectors on the GPU.
pub type GpuIndexIvfFlat = GpuIndexIvf<IvfFlat>;
/// IVF-PQ (8-bit codes) on the GPU.
pub type GpuIndexIvfPq = GpuIndexIvf<IvfPq>;

impl<E: GpuEncoding> std::fmt::Debug for GpuIndexIvf<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuIndexIvf")
            .field("device", &self.dev.info().ordinal)
            .field("cpu", &self.cpu.describe())
            .finish()
    }
}

impl GpuIndexIvf<IvfFlat> {
    /// `IVF<nlist>,Flat` on the GPU.
    ///
    /// # Errors
    /// `d == 0`, `nlist == 0`.
    pub fn new_flat(dev: &GpuDevice, d: usize, nlist: usize, metric: Metric) -> Result<Self> {
        GpuIndexIvf::from_cpu(dev, IndexIvf::new_flat(d, nlist, metric)?)
    }
}

impl GpuIndexIvf<IvfPq> {
    /// `IVF<nlist>,PQ<m>` (8-bit codes, by residual) on the GPU.
    ///
    /// # Errors
    /// Invalid PQ shape, `nlist == 0`.
    pub fn new_pq(
        dev: &GpuDevice,
        d: usize,
        nlist: usize,
        m: usize,
        metric: Metric,
    ) -> Result<Self> {
        GpuIndexIvf::from_cpu(dev, IndexIvf::new_pq(d, nlist, m, 8, metric)?)
    }
}

impl<E: GpuEncoding> GpuIndexIvf<E> {
    /// Moves a CPU IVF index (trained or not, filled or not) to the GPU (Faiss's
    /// `index_cpu_to_gpu`).
    ///
    /// # Errors
    /// An encoding the GPU does not scan ([`GpuEncoding::gpu_scan`]).
    pub fn from_cpu(dev: &GpuDevice, cpu: IndexIvf<IndexFlat, E>) -> Result<Self> {
        let scan = cpu.encoding().gpu_scan()?;
        Ok(GpuIndexIvf {
            dev: dev.clone(),
            cpu,
            scan,
            _bind: BindOnDrop(dev.clone()),
            mirror: Mutex::new(None),
        })
    }

    /// Back to the CPU (Faiss's `index_gpu_to_cpu`).
    pub fn into_cpu(self) -> IndexIvf<IndexFlat, E> {
        let GpuIndexIvf {
            cpu, _bind, mirror, ..
        } = self;
        drop(_bind);
        drop(mirror);
        cpu
    }

    /// The CPU copy.
    pub fn cpu(&self) -> &IndexIvf<IndexFlat, E> {
        &self.cpu
    }

    /// The device.
    pub fn device(&self) -> &GpuDevice {
        &self.dev
    }

    /// The default `nprobe`.
    ///
    /// # Errors
    /// `nprobe == 0`.
    pub fn set_nprobe(&mut self, nprobe: usize) -> Result<()> {
        self.cpu.set_nprobe(nprobe)
    }

    fn invalidate(&mut self) {
        *self
            .mirror
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    fn build_mirror(&self) -> Result<IvfMirror> {
        let dev = &self.dev;
        let d = self.cpu.dim();
        let nlist = self.cpu.nlist();
        let cents = self.cpu.quantizer().vectors();
        if cents.len() != nlist {
            return Err(Error::NotTrained {
                what: self.cpu.describe(),
            });
        }
        let lists = self.cpu.lists();
        let total = lists.total();
        let cs = lists.code_size();
        let mut codes = Vec::with_capacity(total * cs);
        let mut ids = Vec::with_capacity(total);
        let mut start = Vec::with_capacity(nlist);
        let mut len = Vec::with_capacity(nlist);
        let mut host_len = Vec::with_capacity(nlist);
        for l in 0..nlist {
            start.push(ids.len() as i64);
            let n = lists.list_len(l);
            len.push(to_i32(n, "list length")?);
            host_len.push(n);
            codes.extend_from_slice(lists.codes(l));
            ids.extend_from_slice(lists.ids(l));
        }
        let codebook = match &self.scan.kind {
            ScanKind::Flat => None,
            ScanKind::Pq { codebook, .. } => Some(upload(dev, codebook)?),
        };
        Ok(IvfMirror {
            centroids: upload(dev, cents.as_slice())?,
            cnorms: upload(dev, &sq_norms(cents.as_slice(), d))?,
            codes: upload(dev, &codes)?,
            codebook,
            list_start: upload(dev, &start)?,
            list_len: upload(dev, &len)?,
            ids: upload(dev, &ids)?,
            host_len,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn launch_scan(
        &self,
        m: &IvfMirror,
        queries: &CudaSlice<f32>,
        q0: usize,
        nq: usize,
        nprobe: usize,
        probes: &CudaSlice<i64>,
        probe_keys: &CudaSlice<f32>,
        cand_off: &CudaSlice<i64>,
        cand_keys: &mut CudaSlice<f32>,
        cand_ids: &mut CudaSlice<i64>,
    ) -> Result<()> {
        let dev = &self.dev;
        let d = self.cpu.dim();
        let d32 = to_i32(d, "d")?;
        let np32 = to_i32(nprobe, "nprobe")?;
        let ip: i32 = i32::from(self.cpu.metric() == Metric::InnerProduct);
        let qv = queries.slice(q0 * d..(q0 + nq) * d);
        let pv = probes.slice(q0 * nprobe..(q0 + nq) * nprobe);
        let kv = probe_keys.slice(q0 * nprobe..(q0 + nq) * nprobe);
        let grid = (to_u32(nq * nprobe, "queries × nprobe")?, 1, 1);
        let stream = dev.stream();
        let kern = dev.kernels();
        match &self.scan.kind {
            ScanKind::Flat => {
                if d * 4 > kern.max_shared {
                    return Err(Error::not_supported(
                        "GPU IVF-Flat with a query larger than shared memory",
                        format!("d = {d} (the device holds {} bytes)", kern.max_shared),
                    ));
                }
                let cfg = LaunchConfig {
                    grid_dim: grid,
                    block_dim: (BLOCK, 1, 1),
                    shared_mem_bytes: to_u32(d * 4, "d")?,
                };
                let mut b = stream.launch_builder(&kern.ivf_flat_scan);
                b.arg(&qv)
                    .arg(&d32)
                    .arg(&np32)
                    .arg(&pv)
                    .arg(&m.codes)
                    .arg(&m.list_start)
                    .arg(&m.list_len)
                    .arg(&m.ids)
                    .arg(cand_off)
                    .arg(&ip)
                    .arg(cand_keys)
                    .arg(cand_ids);
                // SAFETY: matches `ivf_flat_scan` in kernels.cu; the codes are the lists'
                // raw f32 vectors (4·d bytes each, 256-byte aligned allocation), the
                // probes index lists < nlist or are -1, and cand_off places each
                // (query, probe) inside the candidate buffers sized from the same list
                // lengths.
                unsafe { b.launch(cfg) }.map_err(gpu_err("launching ivf_flat_scan"))?;
            }
            ScanKind::Pq {
                m: msub,
                by_residual,
                ..
            } => {
                let shared = (msub * 256 + d) * 4;
                if shared > kern.max_shared {
                    return Err(Error::not_supported(
                        "GPU IVF-PQ whose look-up table exceeds shared memory",
                        format!(
                            "PQ{msub} (needs {shared} bytes, the device has {})",
                            kern.max_shared
                        ),
                    ));
                }
                let cfg = LaunchConfig {
                    grid_dim: grid,
                    block_dim: (BLOCK, 1, 1),
                    shared_mem_bytes: to_u32(shared, "m")?,
                };
                let m32 = to_i32(*msub, "m")?;
                let res: i32 = i32::from(*by_residual);
                let Some(cb) = m.codebook.as_ref() else {
                    return Err(Error::Gpu("the PQ codebook is not on the device".into()));
                };
                let mut b = stream.launch_builder(&kern.ivf_pq_scan);
                b.arg(&qv)
                    .arg(&d32)
                    .arg(&m32)
                    .arg(&np32)
                    .arg(&pv)
                    .arg(&kv)
                    .arg(&m.centroids)
                    .arg(cb)
                    .arg(&m.codes)
                    .arg(&m.list_start)
                    .arg(&m.list_len)
                    .arg(&m.ids)
                    .arg(cand_off)
                    .arg(&ip)
                    .arg(&res)
                    .arg(cand_keys)
                    .arg(cand_ids);
                // SAFETY: matches `ivf_pq_scan` in kernels.cu; codes are m bytes per
                // entry (8-bit PQ), the codebook m × 256 × (d / m) floats, shared memory
                // (m·256 + d) floats within the opted-in limit; offsets as for the flat
                // scan.
                unsafe { b.launch(cfg) }.map_err(gpu_err("launching ivf_pq_scan"))?;
            }
        }
        Ok(())
    }
}

impl<E: GpuEncoding> Index for GpuIndexIvf<E> {
    fn dim(&self) -> usize {
        self.cpu.dim()
    }

    fn metric(&self) -> Metric {
        self.cpu.metric()
    }

    fn len(&self) -> usize {
        self.cpu.len()
    }

    fn describe(&self) -> String {
        format!(
            "Gpu{} on device {}",
            self.cpu.describe(),
            self.dev.info().ordinal
        )
    }

    fn is_trained(&self) -> bool {
        self.cpu.is_trained()
    }

    /// Trains the coarse centroids by k-means with the GPU assigning points (the IVF's
    /// own k-means settings; centroids already trained are kept, as on the CPU), then
    /// the encoding on the CPU as the CPU index does. The CPU index is rebuilt around
    /// the new centroids with the same `nprobe` and k-means settings (other
    /// settings — `max_codes`, a direct map — are to be set after training).
    fn train(&mut self, x: VectorsRef<'_>) -> Result<()> {
        x.check_dim(self.dim())?;
        x.check_finite()?;
        if !self.cpu.is_empty() {
            return Err(Error::not_supported(
                "train on a non-empty index",
                self.describe(),
            ));
        }
        let (d, nlist, metric) = (self.dim(), self.cpu.nlist(), self.metric());
        if self.cpu.quantizer().len() == nlist {
            // As the CPU index: trained coarse centroids are kept, the encoding is
            // trained again.
            self.invalidate();
            return self.cpu.train(x);
        }
        let params = self.cpu.kmeans_params_mut().clone();
        let assign_metric = if params.spherical {
            Metric::InnerProduct
        } else {
            Metric::L2
        };
        let mut km = KMeans::new(d, params.clone())?;
        let mut assigner =
            GpuIndexFlat::with_config(&self.dev, d, assign_metric, GpuFlatConfig::default())?;
        km.train_with(
            x,
            TrainOptions {
                assigner: Some(&mut assigner),
                ..TrainOptions::default()
            },
        )?;
        let mut quantizer = IndexFlat::new(d, metric)?;
        quantizer.add(km.centroids())?;
        let mut cpu = IndexIvf::new(quantizer, nlist, self.cpu.encoding().clone(), metric)?;
        cpu.set_nprobe(self.cpu.nprobe())?;
        *cpu.kmeans_params_mut() = params;
        cpu.train(x)?;
        self.scan = cpu.encoding().gpu_scan()?;
        self.cpu = cpu;
        self.invalidate();
        Ok(())
    }

    fn add(&mut self, x: VectorsRef<'_>) -> Result<()> {
        self.invalidate();
        self.cpu.add(x)
    }

    fn add_with_ids(&mut self, x: VectorsRef<'_>, ids: &[Label]) -> Result<()> {
        self.invalidate();
        self.cpu.add_with_ids(x, ids)
    }

    fn remove_ids(&mut self, selector: &dyn vq_core::IdFilter) -> Result<usize> {
        self.invalidate();
        self.cpu.remove_ids(selector)
    }

    fn removal_keeps_ids(&self) -> bool {
        self.cpu.removal_keeps_ids()
    }

    fn reset(&mut self) {
        self.invalidate();
        self.cpu.reset();
    }

    fn reconstruct_into(&self, id: Label, out: &mut [f32]) -> Result<()> {
        self.cpu.reconstruct_into(id, out)
    }

    /// On the CPU copy.
    fn range_search(
        &self,
        queries: VectorsRef<'_>,
        radius: f32,
        params: &SearchParams<'_>,
    ) -> Result<RangeSearchResults> {
        self.cpu.range_search(queries, radius, params)
    }

    fn set_build_param(&mut self, name: &str, value: &str) -> Result<()> {
        self.invalidate();
        self.cpu.set_build_param(name, value)
    }

    fn search_param_names(&self) -> Vec<String> {
        vec!["nprobe".to_string()]
    }

    fn set_search_param(&mut self, name: &str, value: &str) -> Result<()> {
        self.cpu.set_search_param(name, value)
    }

    fn bytes_per_vector(&self) -> f64 {
        self.cpu.bytes_per_vector()
    }

    fn search_into(
        &self,
        queries: VectorsRef<'_>,
        k: usize,
        params: &SearchParams<'_>,
        out: &mut SearchResults,
    ) -> Result<()> {
        check_search(self, queries, k)?;
        if params.selector.is_some() {
            return Err(Error::not_supported(
                "search with an id selector",
                self.describe(),
            ));
        }
        if params.max_codes.is_some_and(|m| m > 0) {
            return Err(Error::not_supported("max_codes", self.describe()));
        }
        if !self.cpu.is_trained() {
            return Err(Error::NotTrained {
                what: self.describe(),
            });
        }
        let nlist = self.cpu.nlist();
        let nprobe = match params.nprobe {
            Some(0) => return Err(Error::invalid_param("nprobe", "must be at least 1")),
            Some(p) => p,
            None => self.cpu.nprobe(),
        }
        .min(nlist);
        let metric = self.metric();
        let d = self.dim();
        let dev = &self.dev;
        out.reset(queries.len(), k, metric);
        let (dist, labels) = out.parts_mut();

        let exec = dev.lock();
        let mut guard = self
            .mirror
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if guard.is_none() {
            *guard = Some(self.build_mirror()?);
        }
        let Some(m) = guard.as_ref() else {
            return Err(Error::Gpu("the IVF lists are not on the device".into()));
        };
        let coarse = DataSrc::Device(DevRows::F32(m.centroids.as_view()), m.cnorms.as_view());
        let (nx_t, _) = tiles(nlist, QUERY_BATCH, &GpuFlatConfig::default());
        let qs = queries.as_slice();
        let mut b0 = 0;
        while b0 < queries.len() {
            let nb = QUERY_BATCH.min(queries.len() - b0);
            let part = &qs[b0 * d..(b0 + nb) * d];
            let qdev = upload(dev, part)?;
            let qnorm = upload(dev, &sq_norms(part, d))?;
            let (pkeys, probes) = knn_tile(
                dev,
                &exec,
                &DevRows::F32(qdev.as_view()),
                &qnorm.as_view(),
                nb,
                &coarse,
                nlist,
                d,
                nprobe,
                metric,
                nx_t,
            )?;
            let hprobes = download(dev, &probes.slice(..nb * nprobe))?;
            // Split the batch so that the candidates fit the budget.
            let mut s0 = 0;
            while s0 < nb {
                let mut offs: Vec<i64> = Vec::new();
                let mut starts: Vec<i64> = Vec::new();
                let mut lens: Vec<i32> = Vec::new();
                let mut total = 0usize;
                let mut s1 = s0;
                while s1 < nb {
                    let row: usize = hprobes[s1 * nprobe..(s1 + 1) * nprobe]
                        .iter()
                        .map(|&l| {
                            usize::try_from(l)
                                .map_or(0, |l| m.host_len.get(l).copied().unwrap_or(0))
                        })
                        .sum();
                    if s1 > s0 && total + row > CANDIDATE_BUDGET {
                        break;
                    }
                    starts.push(total as i64);
                    lens.push(to_i32(row, "candidates of one query")?);
                    let mut acc = total;
                    for &l in &hprobes[s1 * nprobe..(s1 + 1) * nprobe] {
                        offs.push(acc as i64);
                        acc += usize::try_from(l)
                            .map_or(0, |l| m.host_len.get(l).copied().unwrap_or(0));
                    }
                    total += row;
                    s1 += 1;
                }
                let ns = s1 - s0;
                let cand_off = upload(dev, &offs)?;
                let row_start = upload(dev, &starts)?;
                let row_len = upload(dev, &lens)?;
                let mut cand_keys = alloc::<f32>(dev, total)?;
                let mut cand_ids = alloc::<i64>(dev, total)?;
                self.launch_scan(
                    m,
                    &qdev,
                    s0,
                    ns,
                    nprobe,
                    &probes,
                    &pkeys,
                    &cand_off,
                    &mut cand_keys,
                    &mut cand_ids,
                )?;
                let mut ok = alloc::<f32>(dev, ns * k)?;
                let mut oi = alloc::<i64>(dev, ns * k)?;
                let input = SelectInput {
                    carry: None,
                    vals: cand_keys.as_view(),
                    row_stride: 0,
                    rows: Some((&row_start, &row_len)),
                    len: 0,
                    mode: 0,
                    qnorm: None,
                    xnorm: None,
                    id_base: 0,
                    ids: Some(&cand_ids),
                };
                select_k(dev, ns, k, &input, &mut ok, &mut oi)?;
                sort_k(dev, ns, k, &mut ok, &mut oi)?;
                let r0 = (b0 + s0) * k;
                finish_rows(
                    dev,
                    metric,
                    ns * k,
                    &ok,
                    &oi,
                    &mut dist[r0..r0 + ns * k],
                    &mut labels[r0..r0 + ns * k],
                )?;
                s0 = s1;
            }
            b0 += nb;
        }
        drop(exec);
        Ok(())
    }
}
