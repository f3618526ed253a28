//! `GpuIndexFlat`: exact k-NN and range search on the GPU.

use std::sync::Mutex;

use cudarc::driver::{CudaSlice, CudaView};
use vq_core::{
    Error, Index, IndexFlat, Label, Metric, RangeSearchResults, Result, SearchParams,
    SearchResults, VectorsRef, check_range_search, check_search,
};

use crate::device::{BindOnDrop, Exec, GpuDevice};
use crate::ops::{
    self, DevRows, Elem, SelectInput, alloc, download, finish_rows, gemm_ip, round_f16, select_k,
    sort_k, sq_norms, to_f16_bits, upload,
};

/// How a GPU flat index stores its vectors on the device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Storage {
    /// 32-bit floats (exact).
    #[default]
    F32,
    /// 16-bit floats: half the memory and GEMM on tensor cores; vectors and queries are
    /// rounded to f16 (values beyond ±65504 are refused), products accumulate in f32.
    F16,
}

/// Settings of a [`GpuIndexFlat`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuFlatConfig {
    /// Element type on the device.
    pub storage: Storage,
    /// Most device memory the stored vectors may take; beyond it they stay on the host
    /// and are streamed through the GPU tile by tile at each search. `None`: 80% of the
    /// memory free when the index is first searched.
    pub max_device_bytes: Option<usize>,
    /// Device memory for one tile of query × data inner products (default 256 MiB).
    pub tile_bytes: usize,
    /// Data rows per tile (default 65 536).
    pub tile_rows: usize,
}

impl Default for GpuFlatConfig {
    fn default() -> Self {
        GpuFlatConfig {
            storage: Storage::F32,
            max_device_bytes: None,
            tile_bytes: 256 << 20,
            tile_rows: 65_536,
        }
    }
}

enum DevData {
    F32(CudaSlice<f32>),
    F16(CudaSlice<u16>),
}

/// What is on the device: the stored vectors (or nothing when they are streamed) and
/// their norms, for the first `rows` vectors of the host copy.
#[derive(Default)]
struct Mirror {
    rows: usize,
    data: Option<(DevData, CudaSlice<f32>)>,
}

/// The data of one k-NN computation.
pub(crate) enum DataSrc<'a> {
    /// On the device: vectors and norms.
    Device(DevRows<'a>, CudaView<'a, f32>),
    /// On the host, streamed tile by tile (f32 values and norms).
    Host(&'a [f32], &'a [f32], Elem),
}

/// Tiles of a k-NN: data rows per tile and queries per tile.
pub(crate) fn tiles(n: usize, nq: usize, cfg: &GpuFlatConfig) -> (usize, usize) {
    let nx_t = cfg.tile_rows.clamp(1, n.max(1));
    let nq_t = (cfg.tile_bytes / 4 / nx_t).clamp(1, nq.max(1)).min(65_535);
    (nx_t, nq_t)
}

/// The `k` best of `n` data vectors for one tile of `nq` queries already on the device,
/// sorted, as device `(keys, ids)`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn knn_tile(
    dev: &GpuDevice,
    exec: &Exec,
    queries: &DevRows<'_>,
    qnorm: &CudaView<'_, f32>,
    nq: usize,
    data: &DataSrc<'_>,
    n: usize,
    d: usize,
    k: usize,
    metric: Metric,
    nx_t: usize,
) -> Result<(CudaSlice<f32>, CudaSlice<i64>)> {
    let mut ip = alloc::<f32>(dev, nq * nx_t.min(n))?;
    let (mut cur_k, mut cur_i) = (alloc::<f32>(dev, nq * k)?, alloc::<i64>(dev, nq * k)?);
    let (mut next_k, mut next_i) = (alloc::<f32>(dev, nq * k)?, alloc::<i64>(dev, nq * k)?);
    let mode = if metric == Metric::L2 { 1 } else { 2 };
    let mut x0 = 0usize;
    while x0 < n {
        let nx = nx_t.min(n - x0);
        let mut staged = None;
        let (rows, norms) = tile_of(dev, data, x0, nx, d, &mut staged)?;
        gemm_ip(
            dev,
            exec,
            queries,
            nq,
            &rows,
            nx,
            d,
            &mut ip.slice_mut(..nq * nx),
        )?;
        let input = SelectInput {
            carry: if x0 == 0 {
                None
            } else {
                Some((&cur_k, &cur_i))
            },
            vals: ip.slice(..nq * nx),
            row_stride: nx,
            rows: None,
            len: nx,
            mode,
            qnorm: Some(qnorm.slice(..)),
            xnorm: Some(norms),
            id_base: x0 as i64,
            ids: None,
        };
        select_k(dev, nq, k, &input, &mut next_k, &mut next_i)?;
        std::mem::swap(&mut cur_k, &mut next_k);
        std::mem::swap(&mut cur_i, &mut next_i);
        x0 += nx;
    }
    sort_k(dev, nq, k, &mut cur_k, &mut cur_i)?;
    Ok((cur_k, cur_i))
}

/// Exact search on the GPU (Faiss's `GpuIndexFlat`): L2 or inner product, f32 or f16
/// storage, any `k` up to the number of vectors (no 2048 cap), queries and data larger
/// than device memory streamed in tiles, and range search.
///
/// The vectors are also kept on the host (for `reconstruct`, [`GpuIndexFlat::to_cpu`]
/// and streaming); they are copied to the device at the first search after a change.
/// Distances are computed as `‖q‖² + ‖x‖² − 2⟨q, x⟩` from a cuBLAS GEMM, as Faiss
/// does, so they can differ from the CPU's in the last bits.
///
/// ```no_run
/// use vq_core::{Index, Metric, SearchParams, VectorsRef};
/// use vq_gpu::{GpuDevice, GpuIndexFlat};
/// let dev = GpuDevice::new(0)?; // Err(GpuUnavailable) on a machine without a GPU
/// let mut index = GpuIndexFlat::new(&dev, 2, Metric::L2)?;
/// index.add(VectorsRef::new(&[0.0, 0.0, 1.0, 0.0, 5.0, 5.0], 2)?)?;
/// let res = index.search(VectorsRef::new(&[0.9, 0.1], 2)?, 2, &SearchParams::default())?;
/// assert_eq!(res.row(0).1, &[1, 0]);
/// # Ok::<(), vq_core::Error>(())
/// ```
pub struct GpuIndexFlat {
    dev: GpuDevice,
    cpu: IndexFlat,
    norms: Vec<f32>,
    config: GpuFlatConfig,
    /// Dropped before `mirror` (fields drop in order): makes the context current.
    _bind: BindOnDrop,
    mirror: Mutex<Mirror>,
}

impl std::fmt::Debug for GpuIndexFlat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuIndexFlat")
            .field("device", &self.dev.info().ordinal)
            .field("d", &self.cpu.dim())
            .field("metric", &self.cpu.metric())
            .field("ntotal", &self.cpu.len())
            .field("config", &self.config)
            .finish()
    }
}

impl GpuIndexFlat {
    /// An empty index of dimension `d` with the default settings (f32 storage).
    ///
    /// # Errors
    /// `d == 0`.
    pub fn new(dev: &GpuDevice, d: usize, metric: Metric) -> Result<GpuIndexFlat> {
        GpuIndexFlat::with_config(dev, d, metric, GpuFlatConfig::default())
    }

    /// An empty index with explicit settings.
    ///
    /// # Errors
    /// `d == 0`, a tile size of 0.
    pub fn with_config(
        dev: &GpuDevice,
        d: usize,
        metric: Metric,
        config: GpuFlatConfig,
    ) -> Result<GpuIndexFlat> {
        if config.tile_bytes < 4 || config.tile_rows == 0 {
            return Err(Error::invalid_param(
                "tile_bytes",
                "tiles must hold at least one product",
            ));
        }
        Ok(GpuIndexFlat {
            dev: dev.clone(),
            cpu: IndexFlat::new(d, metric)?,
            norms: Vec::new(),
            config,
            _bind: BindOnDrop(dev.clone()),
            mirror: Mutex::new(Mirror::default()),
        })
    }

    /// Copies a CPU flat index to the GPU (Faiss's `index_cpu_to_gpu`). With f16
    /// storage the vectors are rounded to f16.
    ///
    /// # Errors
    /// As [`Index::add`] (f16 storage: values beyond the f16 range).
    pub fn from_cpu(dev: &GpuDevice, cpu: &IndexFlat, config: GpuFlatConfig) -> Result<Self> {
        let mut g = GpuIndexFlat::with_config(dev, cpu.dim(), cpu.metric(), config)?;
        if !cpu.is_empty() {
            g.add(cpu.vectors())?;
        }
        Ok(g)
    }

    /// The host copy as a CPU index (Faiss's `index_gpu_to_cpu`).
    pub fn to_cpu(&self) -> IndexFlat {
        self.cpu.clone()
    }

    /// The settings.
    pub fn config(&self) -> &GpuFlatConfig {
        &self.config
    }

    /// The device.
    pub fn device(&self) -> &GpuDevice {
        &self.dev
    }

    fn elem(&self) -> Elem {
        match self.config.storage {
            Storage::F32 => Elem::F32,
            Storage::F16 => Elem::F16,
        }
    }

    /// Uploads the stored vectors when they fit the budget and changed since the last
    /// search.
    fn sync_mirror(&self, m: &mut Mirror) -> Result<()> {
        let n = self.cpu.len();
        if m.rows == n && (m.data.is_some() || n == 0) {
            return Ok(());
        }
        m.data = None;
        m.rows = 0;
        let d = self.cpu.dim();
        let esize = match self.config.storage {
            Storage::F32 => 4,
            Storage::F16 => 2,
        };
        let need = n * d * esize + n * 4;
        let budget = match self.config.max_device_bytes {
            Some(b) => b,
            None => self.dev.memory()?.0 / 10 * 8,
        };
        if need <= budget && n > 0 {
            let x = self.cpu.vectors().as_slice();
            let data = match self.config.storage {
                Storage::F32 => DevData::F32(upload(&self.dev, x)?),
                Storage::F16 => DevData::F16(upload(&self.dev, &to_f16_bits(x))?),
            };
            let norms = upload(&self.dev, &self.norms)?;
            m.data = Some((data, norms));
        }
        m.rows = n;
        Ok(())
    }

    /// `true` when the vectors are held on the device (else streamed at each search).
    ///
    /// # Errors
    /// A failed upload.
    pub fn is_resident(&self) -> Result<bool> {
        let mut m = self
            .mirror
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.sync_mirror(&mut m)?;
        Ok(m.data.is_some())
    }

    /// Runs `f` over query tiles with the data source ready: `f(q0, nq, exec, queries,
    /// qnorm, data, nx_t)`. Host queries are uploaded tile by tile; resident ones are
    /// sliced.
    fn for_query_tiles(
        &self,
        queries: QuerySrc<'_>,
        mut f: impl FnMut(
            usize,
            usize,
            &Exec,
            &DevRows<'_>,
            &CudaView<'_, f32>,
            &DataSrc<'_>,
            usize,
        ) -> Result<()>,
    ) -> Result<()> {
        let exec = self.dev.lock();
        let mut m = self
            .mirror
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.sync_mirror(&mut m)?;
        let d = self.cpu.dim();
        let n = self.cpu.len();
        let total = queries.len();
        let (nx_t, nq_t) = tiles(n, total, &self.config);
        let data = match &m.data {
            Some((DevData::F32(v), nv)) => DataSrc::Device(DevRows::F32(v.as_view()), nv.as_view()),
            Some((DevData::F16(v), nv)) => DataSrc::Device(DevRows::F16(v.as_view()), nv.as_view()),
            None => DataSrc::Host(self.cpu.vectors().as_slice(), &self.norms, self.elem()),
        };
        let mut q0 = 0;
        while q0 < total {
            let nq = nq_t.min(total - q0);
            match queries {
                QuerySrc::Host(qs) => {
                    let part = &qs.as_slice()[q0 * d..(q0 + nq) * d];
                    let (qdev, qnorm) = upload_queries(&self.dev, self.config.storage, part, d)?;
                    f(q0, nq, &exec, &qdev.rows(), &qnorm.as_view(), &data, nx_t)?;
                }
                QuerySrc::Device(r) => {
                    let rows = match &r.rows {
                        DevQueries::F32(v) => DevRows::F32(v.slice(q0 * d..(q0 + nq) * d)),
                        DevQueries::F16(v) => DevRows::F16(v.slice(q0 * d..(q0 + nq) * d)),
                    };
                    f(
                        q0,
                        nq,
                        &exec,
                        &rows,
                        &r.norms.slice(q0..q0 + nq),
                        &data,
                        nx_t,
                    )?;
                }
            }
            q0 += nq;
        }
        Ok(())
    }

    /// Copies queries to the device once, for several searches
    /// ([`GpuIndexFlat::search_resident`]; k-means searches its points at every
    /// iteration).
    pub(crate) fn upload_resident(&self, queries: VectorsRef<'_>) -> Result<ResidentQueries> {
        queries.check_dim(self.cpu.dim())?;
        queries.check_finite()?;
        if self.config.storage == Storage::F16 {
            check_f16_range(queries)?;
        }
        let _exec = self.dev.lock();
        let (rows, norms) = upload_queries(
            &self.dev,
            self.config.storage,
            queries.as_slice(),
            self.cpu.dim(),
        )?;
        Ok(ResidentQueries {
            rows,
            norms,
            n: queries.len(),
        })
    }

    /// [`Index::search_into`] for queries already on the device (checked when they were
    /// uploaded).
    pub(crate) fn search_resident(
        &self,
        queries: &ResidentQueries,
        k: usize,
        out: &mut SearchResults,
    ) -> Result<()> {
        if k == 0 || k > self.len() {
            return Err(Error::invalid_param(
                "k",
                format!("k = {k} must be in 1..={}", self.len()),
            ));
        }
        self.knn_into(QuerySrc::Device(queries), k, out)
    }

    /// The k-NN of checked queries into `out`.
    fn knn_into(&self, queries: QuerySrc<'_>, k: usize, out: &mut SearchResults) -> Result<()> {
        let metric = self.metric();
        let (d, n) = (self.cpu.dim(), self.cpu.len());
        out.reset(queries.len(), k, metric);
        let (dist, labels) = out.parts_mut();
        self.for_query_tiles(queries, |q0, nq, exec, rows, qnorm, data, nx_t| {
            let (keys, ids) = knn_tile(
                &self.dev, exec, rows, qnorm, nq, data, n, d, k, metric, nx_t,
            )?;
            finish_rows(
                &self.dev,
                metric,
                nq * k,
                &keys,
                &ids,
                &mut dist[q0 * k..(q0 + nq) * k],
                &mut labels[q0 * k..(q0 + nq) * k],
            )
        })
    }

    /// What the GPU search does not take (id selectors) and queries f16 cannot hold.
    fn check_queries(
        &self,
        queries: VectorsRef<'_>,
        params: &SearchParams<'_>,
        op: &'static str,
    ) -> Result<()> {
        if params.selector.is_some() {
            return Err(Error::not_supported(op, self.describe()));
        }
        if self.config.storage == Storage::F16 {
            check_f16_range(queries)?;
        }
        Ok(())
    }

    fn check_values(&self, x: VectorsRef<'_>) -> Result<()> {
        x.check_dim(self.cpu.dim())?;
        x.check_finite()?;
        if self.config.storage == Storage::F16 {
            check_f16_range(x)?;
        }
        Ok(())
    }
}

/// Refuses values that f16 cannot hold (they would become infinities).
pub(crate) fn check_f16_range(x: VectorsRef<'_>) -> Result<()> {
    for (row, r) in x.rows().enumerate() {
        if let Some((col, &v)) = r.iter().enumerate().find(|(_, v)| v.abs() > 65504.0) {
            return Err(Error::invalid_param(
                "storage",
                format!(
                    "f16 storage cannot hold {v} (vector {row}, component {col}): the f16 range is ±65504"
                ),
            ));
        }
    }
    Ok(())
}

enum DevQueries {
    F32(CudaSlice<f32>),
    F16(CudaSlice<u16>),
}

/// Queries and their norms held on the device across searches.
pub(crate) struct ResidentQueries {
    rows: DevQueries,
    norms: CudaSlice<f32>,
    n: usize,
}

impl ResidentQueries {
    /// Number of queries.
    pub(crate) fn len(&self) -> usize {
        self.n
    }
}

/// Where the queries of a search are.
#[derive(Clone, Copy)]
enum QuerySrc<'a> {
    Host(VectorsRef<'a>),
    Device(&'a ResidentQueries),
}

impl QuerySrc<'_> {
    fn len(&self) -> usize {
        match self {
            QuerySrc::Host(q) => q.len(),
            QuerySrc::Device(r) => r.n,
        }
    }
}

/// Uploads row-major queries in the storage's element type (f16: rounded first) with
/// their squared norms.
fn upload_queries(
    dev: &GpuDevice,
    storage: Storage,
    part: &[f32],
    d: usize,
) -> Result<(DevQueries, CudaSlice<f32>)> {
    let (rows, norms) = match storage {
        Storage::F32 => (DevQueries::F32(upload(dev, part)?), sq_norms(part, d)),
        Storage::F16 => {
            let r = round_f16(part);
            (
                DevQueries::F16(upload(dev, &to_f16_bits(&r))?),
                sq_norms(&r, d),
            )
        }
    };
    Ok((rows, upload(dev, &norms)?))
}

impl DevQueries {
    fn rows(&self) -> DevRows<'_> {
        match self {
            DevQueries::F32(s) => DevRows::F32(s.as_view()),
            DevQueries::F16(s) => DevRows::F16(s.as_view()),
        }
    }
}

impl Index for GpuIndexFlat {
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
            "GpuIndexFlat(d={}, {}, {:?}, device {})",
            self.cpu.dim(),
            self.cpu.metric(),
            self.config.storage,
            self.dev.info().ordinal
        )
    }

    fn add(&mut self, x: VectorsRef<'_>) -> Result<()> {
        self.check_values(x)?;
        let d = self.cpu.dim();
        match self.config.storage {
            Storage::F32 => {
                self.cpu.add(x)?;
                self.norms.extend(sq_norms(x.as_slice(), d));
            }
            Storage::F16 => {
                let r = round_f16(x.as_slice());
                self.cpu.add(VectorsRef::new(&r, d)?)?;
                self.norms.extend(sq_norms(&r, d));
            }
        }
        Ok(())
    }

    fn search_into(
        &self,
        queries: VectorsRef<'_>,
        k: usize,
        params: &SearchParams<'_>,
        out: &mut SearchResults,
    ) -> Result<()> {
        check_search(self, queries, k)?;
        self.check_queries(queries, params, "search with an id selector")?;
        self.knn_into(QuerySrc::Host(queries), k, out)
    }

    fn range_search(
        &self,
        queries: VectorsRef<'_>,
        radius: f32,
        params: &SearchParams<'_>,
    ) -> Result<RangeSearchResults> {
        check_range_search(self, queries, radius)?;
        self.check_queries(queries, params, "range search with an id selector")?;
        let metric = self.metric();
        let mut lists: Vec<Vec<(f32, Label)>> = vec![Vec::new(); queries.len()];
        if self.is_empty() {
            return Ok(RangeSearchResults::from_lists(lists, metric));
        }
        let (d, n) = (self.cpu.dim(), self.cpu.len());
        let key_limit = match metric {
            Metric::L2 => radius,
            Metric::InnerProduct => -radius,
        };
        let dev = &self.dev;
        self.for_query_tiles(
            QuerySrc::Host(queries),
            |q0, nq, exec, rows, qnorm, data, nx_t| {
                let mut ip = alloc::<f32>(dev, nq * nx_t)?;
                let mut counts = alloc::<i32>(dev, nq)?;
                let mut staged: Option<(DevData, CudaSlice<f32>)> = None;
                let mut x0 = 0;
                while x0 < n {
                    let nx = nx_t.min(n - x0);
                    let (xrows, xnorm) = tile_of(dev, data, x0, nx, d, &mut staged)?;
                    gemm_ip(
                        dev,
                        exec,
                        rows,
                        nq,
                        &xrows,
                        nx,
                        d,
                        &mut ip.slice_mut(..nq * nx),
                    )?;
                    let ipv = ip.slice(..nq * nx);
                    ops::range_tile(
                        dev,
                        &ipv,
                        nq,
                        nx,
                        metric,
                        qnorm,
                        &xnorm,
                        key_limit,
                        x0 as i64,
                        &mut counts,
                        None,
                    )?;
                    let c = download(dev, &counts.slice(..nq))?;
                    let mut offsets = Vec::with_capacity(nq);
                    let mut total = 0i64;
                    for &v in &c {
                        offsets.push(total);
                        total += i64::from(v.max(0));
                    }
                    if total > 0 {
                        let tot = usize::try_from(total)
                            .map_err(|_| Error::invalid_param("radius", "too many results"))?;
                        let off = upload(dev, &offsets)?;
                        let mut ok = alloc::<f32>(dev, tot)?;
                        let mut oi = alloc::<i64>(dev, tot)?;
                        ops::range_tile(
                            dev,
                            &ipv,
                            nq,
                            nx,
                            metric,
                            qnorm,
                            &xnorm,
                            key_limit,
                            x0 as i64,
                            &mut counts,
                            Some((&off, &mut ok, &mut oi)),
                        )?;
                        let hk = download(dev, &ok.slice(..tot))?;
                        let hi = download(dev, &oi.slice(..tot))?;
                        for (q, (&o, &cnt)) in offsets.iter().zip(&c).enumerate() {
                            let o = o as usize;
                            let cnt = cnt.max(0) as usize;
                            let list = &mut lists[q0 + q];
                            for j in o..o + cnt {
                                list.push((ops::key_to_distance(metric, hk[j]), hi[j]));
                            }
                        }
                    }
                    x0 += nx;
                }
                Ok(())
            },
        )?;
        Ok(RangeSearchResults::from_lists(lists, metric))
    }

    fn reset(&mut self) {
        self.cpu.reset();
        self.norms.clear();
        let m = self
            .mirror
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *m = Mirror::default();
    }

    fn reconstruct_into(&self, id: Label, out: &mut [f32]) -> Result<()> {
        self.cpu.reconstruct_into(id, out)
    }

    fn bytes_per_vector(&self) -> f64 {
        match self.config.storage {
            Storage::F32 => (self.cpu.dim() * 4 + 4) as f64,
            Storage::F16 => (self.cpu.dim() * 2 + 4) as f64,
        }
    }
}

/// The device rows and norms of data tile `[x0, x0 + nx)`: a view of resident data, or
/// the tile copied into `staged` from the host.
fn tile_of<'a>(
    dev: &GpuDevice,
    data: &'a DataSrc<'a>,
    x0: usize,
    nx: usize,
    d: usize,
    staged: &'a mut Option<(DevData, CudaSlice<f32>)>,
) -> Result<(DevRows<'a>, CudaView<'a, f32>)> {
    match data {
        DataSrc::Device(DevRows::F32(v), nv) => Ok((
            DevRows::F32(v.slice(x0 * d..(x0 + nx) * d)),
            nv.slice(x0..x0 + nx),
        )),
        DataSrc::Device(DevRows::F16(v), nv) => Ok((
            DevRows::F16(v.slice(x0 * d..(x0 + nx) * d)),
            nv.slice(x0..x0 + nx),
        )),
        DataSrc::Host(x, xn, elem) => {
            let part = &x[x0 * d..(x0 + nx) * d];
            let rows = match elem {
                Elem::F32 => DevData::F32(upload(dev, part)?),
                Elem::F16 => DevData::F16(upload(dev, &to_f16_bits(part))?),
            };
            let norms = upload(dev, &xn[x0..x0 + nx])?;
            let (r, n) = staged.insert((rows, norms));
            let rows = match r {
                DevData::F32(b) => DevRows::F32(b.as_view()),
                DevData::F16(b) => DevRows::F16(b.as_view()),
            };
            Ok((rows, n.as_view()))
        }
    }
}
