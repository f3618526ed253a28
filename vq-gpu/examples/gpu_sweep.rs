//! Device measurements behind vq-gpu's README figures (run on a GPU machine; see
//! `device/run.sh`): cuBLAS SGEMM alone at the flat search's tile shape (the arithmetic
//! ceiling), host ↔ device copy rates (pageable and page-locked), then `GpuIndexFlat`
//! over a dataset's base and queries for several tile settings, storages and `k`. One
//! JSON line per case.
//!
//! ```text
//! cargo run --release -p vq-gpu --example gpu_sweep -- DIR   # DIR/base.fvecs, DIR/query.fvecs
//! ```

#![allow(clippy::print_stdout)] // a measuring tool: its output is the point

use std::error::Error;
use std::time::Instant;

use cudarc::cublas::{CudaBlas, Gemm, GemmConfig, sys};
use cudarc::driver::CudaContext;
use vq_core::{Index, Metric, SearchParams, io::read_fvecs};
use vq_gpu::{GpuDevice, GpuFlatConfig, GpuIndexFlat, Storage};

fn median(mut t: Vec<f64>) -> f64 {
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// SGEMM of `nq × d` queries against `nx × d` rows, as `gemm_ip` calls it.
fn sgemm_rate(nq: usize, nx: usize, d: usize) -> Result<f64, Box<dyn Error>> {
    let ctx = CudaContext::new(0)?;
    let stream = ctx.default_stream();
    let blas = CudaBlas::new(stream.clone())?;
    let x = stream.alloc_zeros::<f32>(nx * d)?;
    let q = stream.alloc_zeros::<f32>(nq * d)?;
    let mut c = stream.alloc_zeros::<f32>(nq * nx)?;
    let cfg = GemmConfig {
        transa: sys::cublasOperation_t::CUBLAS_OP_T,
        transb: sys::cublasOperation_t::CUBLAS_OP_N,
        m: i32::try_from(nx)?,
        n: i32::try_from(nq)?,
        k: i32::try_from(d)?,
        alpha: 1.0f32,
        lda: i32::try_from(d)?,
        ldb: i32::try_from(d)?,
        beta: 0.0f32,
        ldc: i32::try_from(nx)?,
    };
    let reps = 50;
    let mut times = Vec::new();
    for round in 0..4 {
        stream.synchronize()?;
        let t = Instant::now();
        for _ in 0..reps {
            // SAFETY: x holds nx × d, q nq × d and c nq × nx floats, as the config says.
            unsafe { blas.gemm(cfg, &x, &q, &mut c) }?;
        }
        stream.synchronize()?;
        if round > 0 {
            times.push(t.elapsed().as_secs_f64() / f64::from(reps));
        }
    }
    Ok(2.0 * (nq * nx * d) as f64 / median(times) / 1e12)
}

/// Host ↔ device copy rates (GB/s) of 256 MiB, pageable and page-locked.
fn transfer_rates() -> Result<(), Box<dyn Error>> {
    let ctx = CudaContext::new(0)?;
    let stream = ctx.default_stream();
    let n = 64 << 20; // f32 values
    let host = vec![1.0f32; n];
    let mut back = vec![0.0f32; n];
    let mut dev = stream.alloc_zeros::<f32>(n)?;
    // SAFETY: filled by the copies below before it is read.
    let mut pinned = unsafe { ctx.alloc_pinned_with_flags::<f32>(n, 0) }?;
    let gb = (n * 4) as f64 / 1e9;
    let time = |f: &mut dyn FnMut() -> Result<(), Box<dyn Error>>| -> Result<f64, Box<dyn Error>> {
        let mut t = Vec::new();
        for _ in 0..4 {
            let s = Instant::now();
            f()?;
            t.push(s.elapsed().as_secs_f64());
        }
        Ok(gb / median(t))
    };
    let h2d = time(&mut || {
        stream.memcpy_htod(&host, &mut dev)?;
        stream.synchronize()?;
        Ok(())
    })?;
    let d2h = time(&mut || {
        stream.memcpy_dtoh(&dev, &mut back)?;
        stream.synchronize()?;
        Ok(())
    })?;
    let h2d_pinned = time(&mut || {
        stream.memcpy_htod(&pinned, &mut dev)?;
        stream.synchronize()?;
        Ok(())
    })?;
    let d2h_pinned = time(&mut || {
        stream.memcpy_dtoh(&dev, &mut pinned)?;
        stream.synchronize()?;
        Ok(())
    })?;
    println!(
        "{{\"case\":\"transfer\",\"mib\":256,\"h2d_gbs\":{h2d:.2},\"d2h_gbs\":{d2h:.2},\"h2d_pinned_gbs\":{h2d_pinned:.2},\"d2h_pinned_gbs\":{d2h_pinned:.2}}}"
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let dir = std::env::args()
        .nth(1)
        .ok_or("usage: gpu_sweep DIR (with base.fvecs and query.fvecs)")?;
    for (nq, nx) in [(1024, 65_536), (4096, 16_384), (16_384, 4096)] {
        let tflops = sgemm_rate(nq, nx, 128)?;
        println!("{{\"case\":\"sgemm\",\"nq\":{nq},\"nx\":{nx},\"d\":128,\"tflops\":{tflops:.2}}}");
    }
    transfer_rates()?;
    let base = read_fvecs(format!("{dir}/base.fvecs"))?;
    let queries = read_fvecs(format!("{dir}/query.fvecs"))?;
    let (n, d, nq) = (base.len(), base.dim(), queries.len());
    let dev = GpuDevice::new(0)?;
    let cases: &[(Storage, usize, usize, usize)] = &[
        (Storage::F32, 65_536, 256 << 20, 10),
        (Storage::F32, 16_384, 64 << 20, 10),
        (Storage::F32, 131_072, 512 << 20, 10),
        (Storage::F32, 65_536, 1 << 30, 10),
        (Storage::F32, 65_536, 256 << 20, 1),
        (Storage::F32, 65_536, 256 << 20, 32),
        (Storage::F32, 65_536, 256 << 20, 33),
        (Storage::F32, 65_536, 256 << 20, 100),
        (Storage::F32, 65_536, 256 << 20, 1000),
        (Storage::F32, 262_144, 1 << 30, 1000),
        (Storage::F16, 65_536, 256 << 20, 10),
        (Storage::F16, 16_384, 64 << 20, 10),
    ];
    for &(storage, tile_rows, tile_bytes, k) in cases {
        let config = GpuFlatConfig {
            storage,
            tile_rows,
            tile_bytes,
            ..GpuFlatConfig::default()
        };
        let mut index = GpuIndexFlat::with_config(&dev, d, Metric::L2, config)?;
        index.add(base.as_ref())?;
        let params = SearchParams::default();
        index.search(queries.as_ref(), k, &params)?; // upload and warm-up
        let mut times = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            index.search(queries.as_ref(), k, &params)?;
            times.push(t.elapsed().as_secs_f64());
        }
        let s = median(times);
        println!(
            "{{\"case\":\"flat\",\"storage\":\"{storage:?}\",\"tile_rows\":{tile_rows},\"tile_mib\":{},\"k\":{k},\"n\":{n},\"nq\":{nq},\"search_s\":{s:.5},\"qps\":{:.0},\"tflops_effective\":{:.2}}}",
            tile_bytes >> 20,
            nq as f64 / s,
            2.0 * (n * d * nq) as f64 / s / 1e12
        );
    }
    Ok(())
}
