//! The building blocks the GPU indexes are made of: transfers, tiled GEMM distances,
//! k-selection and sorting on the device, range filtering.

use cudarc::cublas::{Gemm, GemmConfig, sys as blas_sys};
use cudarc::driver::{
    CudaSlice, CudaView, CudaViewMut, DevicePtr, DevicePtrMut, DeviceRepr, LaunchConfig,
    PushKernelArg, ValidAsZeroBits,
};
use vq_core::{Error, Label, Metric, Result};

use crate::device::{Exec, GpuDevice, gpu_err};

/// A null device pointer for the kernels' optional arguments.
pub(crate) const NULL: u64 = 0;

/// Threads per block of the selection and scan kernels (8 warps).
pub(crate) const BLOCK: u32 = 256;

/// Largest `k` of the warp-register selection (`select_k_warp`: one list entry per lane).
const WARP_SELECT_MAX: usize = 32;

/// Largest `k` of the shared-buffer selection (`select_k_buf`): the buffer holds
/// `BUF_SELECT_CAP` candidates, `k` kept plus one round of `BLOCK * 8` new ones.
const BUF_SELECT_MAX: usize = 2048;

/// `VQ_BUF_CAP` in kernels.cu.
const BUF_SELECT_CAP: u32 = 4096;

const _: () = assert!(BUF_SELECT_MAX + BLOCK as usize * 8 <= BUF_SELECT_CAP as usize);

/// Largest `k` sorted in shared memory (2048 × 12 bytes); larger `k` sorts in global
/// scratch memory.
const SHARED_SORT_MAX: usize = 2048;

pub(crate) fn upload<T: DeviceRepr>(dev: &GpuDevice, host: &[T]) -> Result<CudaSlice<T>> {
    dev.stream()
        .clone_htod(host)
        .map_err(gpu_err("copy to the device"))
}

pub(crate) fn alloc<T: DeviceRepr + ValidAsZeroBits>(
    dev: &GpuDevice,
    n: usize,
) -> Result<CudaSlice<T>> {
    dev.stream()
        .alloc_zeros::<T>(n.max(1))
        .map_err(gpu_err("device allocation"))
}

pub(crate) fn download<T: DeviceRepr + Default + Clone>(
    dev: &GpuDevice,
    src: &CudaView<'_, T>,
) -> Result<Vec<T>> {
    dev.stream()
        .clone_dtoh(src)
        .map_err(gpu_err("copy from the device"))
}

/// Element types whose every bit pattern is a value (what results come back as).
pub(crate) trait Plain: DeviceRepr + Copy + Default {}
impl Plain for f32 {}
impl Plain for i64 {}

/// Largest copy that goes through the page-locked staging buffer (larger ones use
/// pageable memory rather than pinning more).
const STAGED_MAX: usize = 1 << 30;

/// Copies a device view into `dst` (`src.len()` values) through the device's
/// page-locked staging buffer — several times faster than pageable memory — or
/// directly when no staging buffer can be had.
pub(crate) fn download_into<T: Plain>(
    dev: &GpuDevice,
    src: &CudaView<'_, T>,
    dst: &mut [T],
) -> Result<()> {
    let n = src.len();
    if dst.len() < n {
        return Err(Error::Gpu("download: destination too short".into()));
    }
    let bytes = n * std::mem::size_of::<T>();
    if n == 0 {
        return Ok(());
    }
    if bytes <= STAGED_MAX {
        let mut guard = dev.staging(bytes);
        if let Some(pinned) = guard.as_mut() {
            // SAFETY: the same device memory seen as its `bytes` bytes (u8 has no
            // alignment or validity requirement).
            let raw = unsafe { src.transmute::<u8>(bytes) }
                .ok_or_else(|| Error::Gpu("download: view size".into()))?;
            let host = pinned
                .as_mut_slice()
                .map_err(gpu_err("copy from the device"))?;
            let host = &mut host[..bytes];
            // The copy's size is its destination's: exactly `bytes` (a plain slice, so
            // cudarc neither waits nor records; the synchronisation below does).
            dev.stream()
                .memcpy_dtoh(&raw, host)
                .map_err(gpu_err("copy from the device"))?;
            dev.stream()
                .synchronize()
                .map_err(gpu_err("copy from the device"))?;
            // SAFETY: `host` holds `bytes` bytes, written by the copy the stream has
            // completed; `dst` holds at least `n` values of T, a type whose every bit
            // pattern is valid (`Plain`); the buffers do not overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(host.as_ptr(), dst.as_mut_ptr().cast::<u8>(), bytes);
            }
            return Ok(());
        }
    }
    dev.stream()
        .memcpy_dtoh(src, &mut dst[..n])
        .and_then(|()| dev.stream().synchronize())
        .map_err(gpu_err("copy from the device"))
}

pub(crate) fn to_i32(v: usize, what: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| {
        Error::invalid_param(
            what,
            format!("{v} exceeds what one GPU kernel launch handles"),
        )
    })
}

pub(crate) fn to_u32(v: usize, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| {
        Error::invalid_param(
            what,
            format!("{v} exceeds what one GPU kernel launch handles"),
        )
    })
}

/// Key of a distance (smaller is better) and back, as the kernels compute them.
pub(crate) fn key_to_distance(metric: Metric, key: f32) -> f32 {
    match metric {
        Metric::L2 => key,
        Metric::InnerProduct => -key,
    }
}

/// Element type of stored vectors and queries on the device.
#[derive(Clone, Copy)]
pub(crate) enum Elem {
    F32,
    F16,
}

/// A device matrix of row-major vectors, f32 or f16 (stored as `u16` bits).
pub(crate) enum DevRows<'a> {
    F32(CudaView<'a, f32>),
    F16(CudaView<'a, u16>),
}

/// `out[q][x] = <queries[q], data[x]>` for a tile: `nq × nx` row-major (leading
/// dimension `nx`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_ip(
    dev: &GpuDevice,
    exec: &Exec,
    queries: &DevRows<'_>,
    nq: usize,
    data: &DevRows<'_>,
    nx: usize,
    d: usize,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    let (m, n, k) = (to_i32(nx, "tile")?, to_i32(nq, "tile")?, to_i32(d, "d")?);
    match (queries, data) {
        (DevRows::F32(q), DevRows::F32(x)) => {
            let cfg = GemmConfig {
                transa: blas_sys::cublasOperation_t::CUBLAS_OP_T,
                transb: blas_sys::cublasOperation_t::CUBLAS_OP_N,
                m,
                n,
                k,
                alpha: 1.0f32,
                lda: k,
                ldb: k,
                beta: 0.0f32,
                ldc: m,
            };
            // SAFETY: x holds nx × d floats (lda = d), q holds nq × d (ldb = d), out
            // holds at least nq × nx floats (ldc = nx); the sizes were checked by the
            // callers that sliced the views.
            unsafe { exec.blas.gemm(cfg, x, q, out) }.map_err(gpu_err("cuBLAS SGEMM"))
        }
        (DevRows::F16(q), DevRows::F16(x)) => {
            let stream = dev.stream();
            let (xp, _rx) = x.device_ptr(stream);
            let (qp, _rq) = q.device_ptr(stream);
            let (op, _ro) = out.device_ptr_mut(stream);
            let alpha = 1.0f32;
            let beta = 0.0f32;
            // SAFETY: as for SGEMM; the matrices are f16 (u16 bits) and the output f32,
            // which the declared data types say; alpha and beta outlive the call.
            unsafe {
                cudarc::cublas::result::gemm_ex(
                    *exec.blas.handle(),
                    blas_sys::cublasOperation_t::CUBLAS_OP_T,
                    blas_sys::cublasOperation_t::CUBLAS_OP_N,
                    m,
                    n,
                    k,
                    (&raw const alpha).cast(),
                    xp as *const _,
                    blas_sys::cudaDataType::CUDA_R_16F,
                    k,
                    qp as *const _,
                    blas_sys::cudaDataType::CUDA_R_16F,
                    k,
                    (&raw const beta).cast(),
                    op as *mut _,
                    blas_sys::cudaDataType::CUDA_R_32F,
                    m,
                    blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                    blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                )
            }
            .map_err(gpu_err("cuBLAS GemmEx (f16)"))
        }
        _ => Err(Error::invalid_param(
            "storage",
            "queries and data must have the same element type",
        )),
    }
}

/// Where the candidates of a selection come from (see `select_k` in `kernels.cu`).
pub(crate) struct SelectInput<'a> {
    /// The carried best `(keys, ids)`, `k` per row, or none.
    pub(crate) carry: Option<(&'a CudaSlice<f32>, &'a CudaSlice<i64>)>,
    /// The values of part B.
    pub(crate) vals: CudaView<'a, f32>,
    /// Row stride of part B when rows are uniform.
    pub(crate) row_stride: usize,
    /// Row starts and lengths of part B when rows vary (IVF candidates).
    pub(crate) rows: Option<(&'a CudaSlice<i64>, &'a CudaSlice<i32>)>,
    /// Uniform row length of part B.
    pub(crate) len: usize,
    /// 0: keys; 1: L2 from inner products and norms; 2: minus inner products.
    pub(crate) mode: i32,
    /// Query norms (mode 1).
    pub(crate) qnorm: Option<CudaView<'a, f32>>,
    /// Data norms of the tile (mode 1).
    pub(crate) xnorm: Option<CudaView<'a, f32>>,
    /// The id of column 0 when ids are implicit.
    pub(crate) id_base: i64,
    /// Explicit ids of part B (same offsets as `vals`).
    pub(crate) ids: Option<&'a CudaSlice<i64>>,
}

/// The `k` smallest keys of each of `nrows` rows, unsorted, into `out`.
pub(crate) fn select_k(
    dev: &GpuDevice,
    nrows: usize,
    k: usize,
    input: &SelectInput<'_>,
    out_keys: &mut CudaSlice<f32>,
    out_ids: &mut CudaSlice<i64>,
) -> Result<()> {
    if nrows == 0 {
        return Ok(());
    }
    let kern = dev.kernels();
    let a_len = if input.carry.is_some() {
        to_i32(k, "k")?
    } else {
        0
    };
    let b_stride = input.row_stride as i64;
    let b_len = to_i32(input.len, "tile")?;
    let k32 = to_i32(k, "k")?;
    // One pass with the best k in warp registers (k <= 32), one pass through a
    // shared-memory buffer (k <= 2048), else the multi-pass radix selection.
    let (func, shared_mem_bytes) = if k <= WARP_SELECT_MAX {
        (&kern.select_k_warp, (BLOCK / 32) * 32 * 8)
    } else if k <= BUF_SELECT_MAX {
        (&kern.select_k_buf, BUF_SELECT_CAP * 8)
    } else {
        (&kern.select_k, (BLOCK / 32) * 256 * 4)
    };
    let cfg = LaunchConfig {
        grid_dim: (to_u32(nrows, "queries")?, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes,
    };
    let stream = dev.stream();
    let mut b = stream.launch_builder(func);
    match input.carry {
        Some((ck, ci)) => {
            b.arg(ck);
            b.arg(ci);
        }
        None => {
            b.arg(&NULL);
            b.arg(&NULL);
        }
    }
    b.arg(&a_len);
    b.arg(&input.vals);
    b.arg(&b_stride);
    match input.rows {
        Some((starts, lens)) => {
            b.arg(starts);
            b.arg(lens);
        }
        None => {
            b.arg(&NULL);
            b.arg(&NULL);
        }
    }
    b.arg(&b_len);
    b.arg(&input.mode);
    match &input.qnorm {
        Some(q) => b.arg(q),
        None => b.arg(&NULL),
    };
    match &input.xnorm {
        Some(x) => b.arg(x),
        None => b.arg(&NULL),
    };
    b.arg(&input.id_base);
    match input.ids {
        Some(i) => b.arg(i),
        None => b.arg(&NULL),
    };
    b.arg(&k32);
    b.arg(out_keys);
    b.arg(out_ids);
    // SAFETY: the argument list matches the signature that `select_k`, `select_k_warp`
    // and `select_k_buf` share in kernels.cu (pointers
    // as device buffers or NULL, i32/i64 scalars in order); every buffer holds the rows
    // the grid reads: `carry` and `out` nrows × k, part B the rows described by the
    // stride/len or the starts/lengths, which the callers built from the same sizes.
    unsafe { b.launch(cfg) }.map_err(gpu_err("launching select_k"))?;
    Ok(())
}

/// Sorts each of `nrows` rows of `k` (key, id) pairs by key, then id.
pub(crate) fn sort_k(
    dev: &GpuDevice,
    nrows: usize,
    k: usize,
    keys: &mut CudaSlice<f32>,
    ids: &mut CudaSlice<i64>,
) -> Result<()> {
    if nrows == 0 || k <= 1 {
        return Ok(());
    }
    let kpad = k.next_power_of_two();
    let threads = to_u32(kpad.min(1024) / 2, "k")?.max(32);
    let kern = dev.kernels();
    let k32 = to_i32(k, "k")?;
    let kpad32 = to_i32(kpad, "k")?;
    let grid = (to_u32(nrows, "queries")?, 1, 1);
    let stream = dev.stream();
    if kpad <= SHARED_SORT_MAX {
        let cfg = LaunchConfig {
            grid_dim: grid,
            block_dim: (threads, 1, 1),
            shared_mem_bytes: to_u32(kpad * 12, "k")?,
        };
        let mut b = stream.launch_builder(&kern.sort_k);
        b.arg(keys)
            .arg(ids)
            .arg(&k32)
            .arg(&kpad32)
            .arg(&NULL)
            .arg(&NULL);
        // SAFETY: matches `sort_k(float*, i64*, int, int, float*, i64*)`; keys and ids
        // hold nrows × k values; the shared memory holds kpad keys and ids.
        unsafe { b.launch(cfg) }.map_err(gpu_err("launching sort_k"))?;
    } else {
        let mut sk = alloc::<f32>(dev, nrows * kpad)?;
        let mut si = alloc::<i64>(dev, nrows * kpad)?;
        let cfg = LaunchConfig {
            grid_dim: grid,
            block_dim: (threads, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = stream.launch_builder(&kern.sort_k);
        b.arg(keys)
            .arg(ids)
            .arg(&k32)
            .arg(&kpad32)
            .arg(&mut sk)
            .arg(&mut si);
        // SAFETY: as above, with the scratch rows (nrows × kpad) in global memory.
        unsafe { b.launch(cfg) }.map_err(gpu_err("launching sort_k"))?;
    }
    Ok(())
}

/// Downloads sorted `(keys, ids)` rows into `(distances, labels)` in the metric's
/// convention, padding (`-1`) with the metric's worst distance.
pub(crate) fn finish_rows(
    dev: &GpuDevice,
    metric: Metric,
    n: usize,
    keys: &CudaSlice<f32>,
    ids: &CudaSlice<i64>,
    dist_out: &mut [f32],
    label_out: &mut [Label],
) -> Result<()> {
    // Straight into the caller's rows (no intermediate vectors: k = 1000 over 10,000
    // queries is 120 MB of results), then converted in place.
    download_into(dev, &keys.slice(..n), &mut dist_out[..n])?;
    download_into(dev, &ids.slice(..n), &mut label_out[..n])?;
    for (d, l) in dist_out[..n].iter_mut().zip(&mut label_out[..n]) {
        if *l < 0 {
            *d = metric.worst();
            *l = -1;
        } else {
            *d = key_to_distance(metric, *d);
        }
    }
    Ok(())
}

/// Counts (pass 0) or writes (pass 1) the columns of a GEMM tile within the range.
#[allow(clippy::too_many_arguments)]
pub(crate) fn range_tile(
    dev: &GpuDevice,
    ip: &CudaView<'_, f32>,
    nq: usize,
    ncols: usize,
    metric: Metric,
    qnorm: &CudaView<'_, f32>,
    xnorm: &CudaView<'_, f32>,
    key_limit: f32,
    id_base: i64,
    counts: &mut CudaSlice<i32>,
    write: Option<(&CudaSlice<i64>, &mut CudaSlice<f32>, &mut CudaSlice<i64>)>,
) -> Result<()> {
    let kern = dev.kernels();
    let stride = ncols as i64;
    let ncols32 = to_i32(ncols, "tile")?;
    let mode: i32 = if metric == Metric::L2 { 1 } else { 2 };
    let pass: i32 = i32::from(write.is_some());
    let cfg = LaunchConfig {
        grid_dim: (to_u32(nq, "queries")?, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    };
    let stream = dev.stream();
    let mut b = stream.launch_builder(&kern.range_tile);
    b.arg(ip)
        .arg(&stride)
        .arg(&ncols32)
        .arg(&mode)
        .arg(qnorm)
        .arg(xnorm)
        .arg(&key_limit)
        .arg(&id_base)
        .arg(&pass)
        .arg(counts);
    match write {
        Some((off, keys, ids)) => {
            b.arg(off).arg(keys).arg(ids);
            // SAFETY: matches `range_tile`'s signature; ip holds nq × ncols floats,
            // the norms nq and ncols, counts nq, and the outputs the counted total at
            // the offsets computed from pass 0.
            unsafe { b.launch(cfg) }.map_err(gpu_err("launching range_tile"))?;
        }
        None => {
            b.arg(&NULL).arg(&NULL).arg(&NULL);
            // SAFETY: as above; pass 0 writes only the counts.
            unsafe { b.launch(cfg) }.map_err(gpu_err("launching range_tile"))?;
        }
    }
    Ok(())
}

/// Squared norms of row-major vectors, on the host (they are uploaded with the data).
/// (vq-core's SIMD kernels; `x` is whole rows of `d`.)
pub(crate) fn sq_norms(x: &[f32], d: usize) -> Vec<f32> {
    let k = vq_core::distance::Kernels::get();
    x.chunks_exact(d).map(|r| k.norm_sqr(r)).collect()
}

/// f32 → f16 bits.
pub(crate) fn to_f16_bits(x: &[f32]) -> Vec<u16> {
    x.iter()
        .map(|&v| half::f16::from_f32(v).to_bits())
        .collect()
}

/// Rounds values to the nearest f16 (what f16 storage keeps).
pub(crate) fn round_f16(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect()
}
