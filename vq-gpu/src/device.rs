//! Finding a GPU, compiling the kernels, and the per-device state every GPU index
//! shares.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, MutexGuard};

use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaFunction, CudaStream, PinnedHostSlice, sys};
use cudarc::nvrtc::{CompileOptions, compile_ptx_with_opts};
use vq_core::{Error, Result};

const KERNELS: &str = include_str!("kernels.cu");

/// What [`probe`] found about one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The CUDA ordinal (`0` for the first device).
    pub ordinal: usize,
    /// The device's name, e.g. `"NVIDIA H100 80GB HBM3"`.
    pub name: String,
    /// Compute capability, e.g. `(9, 0)`.
    pub compute_capability: (i32, i32),
    /// Total device memory in bytes.
    pub total_memory: usize,
    /// Free device memory in bytes when probed.
    pub free_memory: usize,
}

pub(crate) fn unavailable(reason: impl Into<String>) -> Error {
    Error::GpuUnavailable {
        reason: reason.into(),
    }
}

/// Wraps a CUDA, cuBLAS or NVRTC error.
pub(crate) fn gpu_err<E: std::error::Error + Send + Sync + 'static>(
    what: &str,
) -> impl Fn(E) -> Error + '_ {
    move |e| Error::Gpu(format!("{what}: {e}").into())
}

/// Runs a cudarc call that may panic (cudarc panics when a library or one of its
/// symbols is missing) and turns the panic into [`Error::GpuUnavailable`].
fn guarded<T>(what: &str, f: impl FnOnce() -> T) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        let msg = p
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| p.downcast_ref::<&str>().copied())
            .unwrap_or("a CUDA library could not be used");
        unavailable(format!("{what}: {msg}"))
    })
}

/// Checks that the driver, NVRTC and cuBLAS libraries can be loaded, before any cudarc
/// call that would panic without them.
fn check_libraries() -> Result<()> {
    // SAFETY: each function only tries to open the library's candidate file names with
    // `dlopen` and closes them again; no symbol is called.
    let driver = unsafe { cudarc::driver::sys::is_culib_present() };
    if !driver {
        return Err(unavailable(
            "the CUDA driver library (libcuda.so) was not found: no NVIDIA driver is installed \
             or it is not on the loader path",
        ));
    }
    // SAFETY: as above.
    let nvrtc = unsafe { cudarc::nvrtc::sys::is_culib_present() };
    if !nvrtc {
        return Err(unavailable(
            "the NVRTC library (libnvrtc.so or libnvrtc.so.12) was not found: install the CUDA \
             toolkit's libraries or add their folder to LD_LIBRARY_PATH (with CUDA 13's \
             libnvrtc.so.13 only, link libnvrtc.so to it in a folder on that path)",
        ));
    }
    // SAFETY: as above.
    let cublas = unsafe { cudarc::cublas::sys::is_culib_present() };
    if !cublas {
        return Err(unavailable(
            "the cuBLAS library (libcublas.so or libcublas.so.12) was not found: install it or \
             add its folder to LD_LIBRARY_PATH (with CUDA 13's libcublas.so.13 only, link \
             libcublas.so to it in a folder on that path)",
        ));
    }
    Ok(())
}

/// Number of CUDA devices.
///
/// # Errors
/// [`Error::GpuUnavailable`] when the driver or the libraries cannot be loaded or the
/// driver reports an error (e.g. no device, driver too old).
pub fn device_count() -> Result<usize> {
    check_libraries()?;
    let n = guarded("cuDeviceGetCount", CudaContext::device_count)?
        .map_err(|e| unavailable(format!("the CUDA driver failed: {e}")))?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Every CUDA device, with its name, compute capability and memory.
///
/// ```
/// match vq_gpu::probe() {
///     Ok(devices) => println!("{} GPU(s)", devices.len()),
///     Err(e) => println!("no GPU: {e}"), // e.g. on a machine without a driver
/// }
/// ```
///
/// # Errors
/// [`Error::GpuUnavailable`] when no device can be used, saying why.
pub fn probe() -> Result<Vec<DeviceInfo>> {
    let n = device_count()?;
    if n == 0 {
        return Err(unavailable("the CUDA driver reports no device"));
    }
    (0..n)
        .map(|i| GpuDevice::new(i).map(|d| d.info().clone()))
        .collect()
}

pub(crate) struct Kernels {
    pub(crate) select_k: CudaFunction,
    pub(crate) select_k_warp: CudaFunction,
    pub(crate) select_k_buf: CudaFunction,
    pub(crate) sort_k: CudaFunction,
    pub(crate) range_tile: CudaFunction,
    pub(crate) ivf_flat_scan: CudaFunction,
    pub(crate) ivf_pq_scan: CudaFunction,
    /// Dynamic shared memory one block may use (opted in), bytes.
    pub(crate) max_shared: usize,
}

/// The state one index operation holds exclusively: the cuBLAS handle bound to the
/// device's stream.
pub(crate) struct Exec {
    pub(crate) blas: CudaBlas,
}

/// Makes a device's context current on the thread that drops it: a field declared
/// before an index's device buffers, so that they are freed in the right context even
/// on a thread that never used the device (cudarc frees without binding).
pub(crate) struct BindOnDrop(pub(crate) GpuDevice);

impl Drop for BindOnDrop {
    fn drop(&mut self) {
        self.0.bind();
    }
}

/// Smallest page-locked staging buffer (grown to the next power of two beyond).
const STAGING_MIN: usize = 16 << 20;

struct DeviceInner {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    kernels: Kernels,
    exec: Mutex<Exec>,
    /// Page-locked host memory through which results come back (grown on demand);
    /// `None` also after a failed allocation, when copies go through pageable memory.
    staging: Mutex<Option<PinnedHostSlice<u8>>>,
    info: DeviceInfo,
}

/// One CUDA device with its stream, cuBLAS handle and compiled kernels; cheap to clone
/// and shared by the GPU indexes built on it (Faiss's `StandardGpuResources`).
///
/// Operations on one device are serialised (each holds the device's execution lock),
/// so a GPU index may be searched from many threads at once: the calls queue.
#[derive(Clone)]
pub struct GpuDevice {
    inner: Arc<DeviceInner>,
}

impl std::fmt::Debug for GpuDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuDevice")
            .field("info", &self.inner.info)
            .finish()
    }
}

impl GpuDevice {
    /// Opens device `ordinal`, creates its stream and cuBLAS handle, and compiles the
    /// kernels for its architecture with NVRTC (a fraction of a second, once).
    ///
    /// # Errors
    /// [`Error::GpuUnavailable`] when there is no driver, no such device or a library is
    /// missing; [`Error::Gpu`] when the kernels do not compile or load.
    pub fn new(ordinal: usize) -> Result<GpuDevice> {
        let n = device_count()?;
        if ordinal >= n {
            return Err(unavailable(format!(
                "device {ordinal} requested, the driver reports {n}"
            )));
        }
        let ctx = guarded("cuCtxCreate", || CudaContext::new(ordinal))?
            .map_err(|e| unavailable(format!("device {ordinal} could not be opened: {e}")))?;
        let err = |what: &'static str| gpu_err::<cudarc::driver::DriverError>(what);
        let name = ctx.name().map_err(err("device name"))?;
        let cc = ctx
            .compute_capability()
            .map_err(err("compute capability"))?;
        let (free, total) = ctx.mem_get_info().map_err(err("memory info"))?;
        let info = DeviceInfo {
            ordinal,
            name,
            compute_capability: cc,
            total_memory: total,
            free_memory: free,
        };
        let stream = ctx.default_stream();
        let kernels = compile_kernels(&ctx, cc)?;
        let blas = guarded("cublasCreate", || CudaBlas::new(stream.clone()))?
            .map_err(gpu_err("cuBLAS handle"))?;
        Ok(GpuDevice {
            inner: Arc::new(DeviceInner {
                ctx,
                stream,
                kernels,
                exec: Mutex::new(Exec { blas }),
                staging: Mutex::new(None),
                info,
            }),
        })
    }

    /// What the device is.
    pub fn info(&self) -> &DeviceInfo {
        &self.inner.info
    }

    /// Free and total device memory now, in bytes.
    ///
    /// # Errors
    /// [`Error::Gpu`] when the driver call fails.
    pub fn memory(&self) -> Result<(usize, usize)> {
        self.inner
            .ctx
            .mem_get_info()
            .map_err(gpu_err("memory info"))
    }

    /// Makes the device's context current on this thread (where buffers are freed).
    pub(crate) fn bind(&self) {
        // A failure here leaves cudarc to report it at the next call.
        let _ = self.inner.ctx.bind_to_thread();
    }

    pub(crate) fn stream(&self) -> &Arc<CudaStream> {
        &self.inner.stream
    }

    pub(crate) fn kernels(&self) -> &Kernels {
        &self.inner.kernels
    }

    /// The device's page-locked staging buffer, at least `bytes` long (allocated or
    /// grown here), or `None` when page-locked memory cannot be had.
    pub(crate) fn staging(&self, bytes: usize) -> MutexGuard<'_, Option<PinnedHostSlice<u8>>> {
        let mut g = self
            .inner
            .staging
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if g.as_ref().is_none_or(|p| p.len() < bytes) {
            *g = None;
            let len = bytes.max(STAGING_MIN).next_power_of_two();
            // SAFETY: the allocation's bytes are uninitialised until a copy fills them;
            // callers read only the bytes a completed copy wrote. Flags 0: cached
            // memory, fast for the host to read (write-combined memory is not).
            *g = unsafe { self.inner.ctx.alloc_pinned_with_flags::<u8>(len, 0) }.ok();
        }
        g
    }

    /// Takes the device's execution lock (a poisoned lock is taken over: the state it
    /// guards is a handle, never left half-updated).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Exec> {
        self.inner
            .exec
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Compiles the kernels to a cubin for the device's exact architecture (`sm_XY`), which
/// runs on any driver of the same CUDA major version; where NVRTC does not know the
/// architecture, to PTX for `compute_XY`, which the driver compiles.
fn compile_module(
    ctx: &Arc<CudaContext>,
    cc: (i32, i32),
) -> Result<Arc<cudarc::driver::CudaModule>> {
    match compile_cubin(cc) {
        Ok(cubin) => {
            if let Ok(m) = ctx.load_module(cudarc::nvrtc::Ptx::from_binary(cubin)) {
                return Ok(m);
            }
        }
        Err(e) if matches!(e, Error::GpuUnavailable { .. }) => return Err(e),
        Err(_) => {}
    }
    let opts = CompileOptions {
        options: vec![
            format!("--gpu-architecture=compute_{}{}", cc.0, cc.1),
            "--std=c++14".to_string(),
        ],
        ..Default::default()
    };
    let ptx = guarded("NVRTC", || compile_ptx_with_opts(KERNELS, opts))?
        .map_err(gpu_err("compiling vq-gpu's kernels with NVRTC"))?;
    ctx.load_module(ptx).map_err(|e| {
        Error::Gpu(
            format!(
                "loading the kernels' PTX: {e} (a CUDA_ERROR_UNSUPPORTED_PTX_VERSION means \
                 libnvrtc is newer than the driver: use an NVRTC of the driver's CUDA version)"
            )
            .into(),
        )
    })
}

/// The kernels as a cubin for `sm_XY`, through NVRTC's C API (cudarc returns only PTX).
fn compile_cubin(cc: (i32, i32)) -> Result<Vec<u8>> {
    use cudarc::nvrtc::{result, sys as nv};
    let src = std::ffi::CString::new(KERNELS)
        .map_err(|_| Error::Gpu("kernels.cu holds a NUL byte".into()))?;
    let prog = guarded("NVRTC", || result::create_program(&src, None))?
        .map_err(gpu_err("NVRTC program"))?;
    let opts = [
        format!("--gpu-architecture=sm_{}{}", cc.0, cc.1),
        "--std=c++14".to_string(),
    ];
    // SAFETY: `prog` was just created and is destroyed once, below; the size query and
    // the copy use a buffer of exactly the size NVRTC reports.
    let out = unsafe {
        let compiled = result::compile_program(prog, &opts).map_err(gpu_err("NVRTC (cubin)"));
        let cubin = compiled.and_then(|()| {
            let mut size = 0usize;
            nv::nvrtcGetCUBINSize(prog, &mut size)
                .result()
                .map_err(gpu_err("NVRTC cubin size"))?;
            let mut buf = vec![0u8; size];
            nv::nvrtcGetCUBIN(prog, buf.as_mut_ptr().cast())
                .result()
                .map_err(gpu_err("NVRTC cubin"))?;
            Ok(buf)
        });
        let _ = result::destroy_program(prog);
        cubin
    };
    match out {
        Ok(b) if !b.is_empty() => Ok(b),
        Ok(_) => Err(Error::Gpu("NVRTC returned an empty cubin".into())),
        Err(e) => Err(e),
    }
}

fn compile_kernels(ctx: &Arc<CudaContext>, cc: (i32, i32)) -> Result<Kernels> {
    let module = compile_module(ctx, cc)?;
    let f = |name: &str| {
        module
            .load_function(name)
            .map_err(gpu_err("loading a kernel"))
    };
    let optin = ctx
        .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
        .map_err(gpu_err("device attribute"))?;
    let max_shared = usize::try_from(optin).unwrap_or(48 * 1024).max(48 * 1024);
    let k = Kernels {
        select_k: f("select_k")?,
        select_k_warp: f("select_k_warp")?,
        select_k_buf: f("select_k_buf")?,
        sort_k: f("sort_k")?,
        range_tile: f("range_tile")?,
        ivf_flat_scan: f("ivf_flat_scan")?,
        ivf_pq_scan: f("ivf_pq_scan")?,
        max_shared,
    };
    // The list scans keep a look-up table (PQ: m × 256 floats) and the query in shared
    // memory: opt in to all of it.
    for f in [&k.ivf_pq_scan, &k.ivf_flat_scan] {
        let static_shared = f.shared_size_bytes().unwrap_or(0).max(0);
        let dynamic = i32::try_from(max_shared).unwrap_or(i32::MAX) - static_shared;
        f.set_attribute(
            sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            dynamic,
        )
        .map_err(gpu_err("shared memory opt-in"))?;
    }
    Ok(k)
}
