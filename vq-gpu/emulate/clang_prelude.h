// Minimal stand-ins for what NVRTC provides, to syntax-check kernels.cu with clang.
#define __global__ __attribute__((global))
#define __device__ __attribute__((device))
#define __shared__ __attribute__((shared))
#define __forceinline__ __inline__ __attribute__((always_inline))
typedef __SIZE_TYPE__ size_t;
struct __vq_dim3 { unsigned x, y, z; };
extern const __device__ __vq_dim3 threadIdx, blockIdx, blockDim, gridDim;
__device__ float fmaxf(float, float);
__device__ unsigned __float_as_uint(float);
__device__ float __uint_as_float(unsigned);
__device__ float __int_as_float(int);
__device__ float __shfl_xor_sync(unsigned, float, int);
__device__ void __syncthreads();
__device__ unsigned atomicAdd(unsigned*, unsigned);
__device__ int atomicAdd(int*, int);
#define __launch_bounds__(...) __attribute__((launch_bounds(__VA_ARGS__)))
__device__ unsigned __ballot_sync(unsigned, int);
__device__ unsigned __shfl_sync(unsigned, unsigned, int);
__device__ int __shfl_sync(unsigned, int, int);
__device__ unsigned __shfl_up_sync(unsigned, unsigned, unsigned);
__device__ int __shfl_up_sync(unsigned, int, unsigned);
__device__ int __popc(unsigned);
__device__ int __ffs(int);
__device__ unsigned atomicMax(unsigned*, unsigned);
