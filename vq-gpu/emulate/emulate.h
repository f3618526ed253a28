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
    std::vector<std::uint64_t> xchg;
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

// Generic warp exchange: every lane publishes `v`, then reads lane `src`'s value.
template <class T> inline T vq_exchange(T v, unsigned src) {
    static_assert(sizeof(T) <= 8);
    unsigned t = threadIdx.x;
    unsigned w = t / 32;
    std::uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    vq_state.xchg[t] = bits;
    vq_state.warps[w]->arrive_and_wait();
    std::uint64_t got = vq_state.xchg[w * 32 + src];
    vq_state.warps[w]->arrive_and_wait();
    T r;
    std::memcpy(&r, &got, sizeof(T));
    return r;
}
template <class T> inline T __shfl_sync(unsigned, T v, int src) {
    return vq_exchange(v, (unsigned)src & 31u);
}
template <class T> inline T __shfl_up_sync(unsigned, T v, unsigned delta) {
    unsigned lane = threadIdx.x % 32;
    return vq_exchange(v, lane >= delta ? lane - delta : lane);
}
inline unsigned __ballot_sync(unsigned, int pred) {
    unsigned t = threadIdx.x;
    unsigned w = t / 32;
    vq_state.xchg[t] = pred ? 1 : 0;
    vq_state.warps[w]->arrive_and_wait();
    unsigned m = 0;
    for (unsigned l = 0; l < 32 && w * 32 + l < vq_state.xchg.size(); ++l)
        if (vq_state.xchg[w * 32 + l]) m |= 1u << l;
    vq_state.warps[w]->arrive_and_wait();
    return m;
}
inline int __popc(unsigned m) { return __builtin_popcount(m); }
inline int __ffs(unsigned m) { return __builtin_ffs((int)m); }

inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }

template <class T> inline T atomicAdd(T* p, T v) {
    return std::atomic_ref<T>(*p).fetch_add(v);
}

template <class T> inline T atomicMax(T* p, T v) {
    std::atomic_ref<T> a(*p);
    T old = a.load();
    while (old < v && !a.compare_exchange_weak(old, v)) {
    }
    return old;
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
                vq_state.xchg.assign(threads, 0);
                std::vector<std::thread> ts;
                for (unsigned t = 0; t < threads; ++t)
                    ts.emplace_back([t, &kernel] { threadIdx = {t, 0, 0}; kernel(); });
                for (auto& th : ts) th.join();
            }
}
