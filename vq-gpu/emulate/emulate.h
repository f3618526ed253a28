// A CPU emulation of the few CUDA features vq-gpu's kernels use, so that their logic
// (radix selection, bitonic sort, list scans) can be tested on a machine without a GPU:
// every CUDA thread of a block is an OS thread, `__syncthreads` is a barrier over the
// block, warp shuffles exchange through memory between two barriers of the warp, and
// `__shared__` variables are statics (blocks run one after another). Dev-only: see
// run.sh.
#pragma once
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __shared__ static
#define __forceinline__ inline
#define __launch_bounds__(...)

struct vq_dim3 { unsigned x, y, z; };
inline thread_local vq_dim3 threadIdx;
inline vq_dim3 blockIdx, blockDim;

struct vq_block_state {
    std::unique_ptr<std::barrier<>> block;
    std::vector<std::unique_ptr<std::barrier<>>> warps;
    std::vector<float> shfl;
};
inline vq_block_state vq_state;

inline void __syncthreads() { vq_state.block->arrive_and_wait(); }

inline float __shfl_xor_sync(unsigned, float v, int o) {
    unsigned t = threadIdx.x;
    unsigned w = t / 32;
    vq_state.shfl[t] = v;
    vq_state.warps[w]->arrive_and_wait();
    float r = vq_state.shfl[(w * 32) + ((t % 32) ^ (unsigned)o)];
    vq_state.warps[w]->arrive_and_wait();
    return r;
}

inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }

template <class T> inline T atomicAdd(T* p, T v) {
    return std::atomic_ref<T>(*p).fetch_add(v);
}

// Dynamic shared memory: one buffer, named as each kernel names it.
alignas(16) inline unsigned char vq_dyn_shared[1 << 20];

// Runs `kernel` over a grid, one block at a time.
inline void vq_launch(vq_dim3 grid, unsigned threads, const std::function<void()>& kernel) {
    blockDim = {threads, 1, 1};
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x) {
                blockIdx = {x, y, z};
                vq_state.block = std::make_unique<std::barrier<>>(threads);
                vq_state.warps.clear();
                for (unsigned w = 0; w < (threads + 31) / 32; ++w)
                    vq_state.warps.push_back(std::make_unique<std::barrier<>>(
                        std::min(32u, threads - w * 32)));
                vq_state.shfl.assign(threads, 0.0f);
                std::vector<std::thread> ts;
                for (unsigned t = 0; t < threads; ++t)
                    ts.emplace_back([t, &kernel] { threadIdx = {t, 0, 0}; kernel(); });
                for (auto& th : ts) th.join();
            }
}
