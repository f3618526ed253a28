// vq-gpu's kernels, compiled at run time with NVRTC (see `device.rs`).
//
// Conventions shared with the Rust side (`kernels.rs`):
// - every selection works on *keys* where smaller is better: the squared L2 distance,
//   or minus the inner product;
// - ids are 64-bit (`long long`), -1 pads missing results (key +inf);
// - one thread block handles one query row; blocks are 256 threads (8 warps) unless a
//   launch says otherwise.

typedef long long i64;
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;

#define VQ_WARPS_MAX 32
#define VQ_INF __int_as_float(0x7f800000)

// Order-preserving map of a float onto an unsigned integer (ascending floats give
// ascending integers; -0.0 sorts just below +0.0; NaN never occurs here).
__device__ __forceinline__ u32 key_bits(float f) {
    u32 u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ float warp_sum(float s) {
    for (int o = 16; o > 0; o >>= 1) {
        s += __shfl_xor_sync(0xffffffffu, s, o);
    }
    return s;
}

// The candidates of one row. Part A (the carried best of earlier tiles, explicit keys
// and ids) comes first, then part B, whose values are
//   mode 0: keys, ids from b_ids (or b_id_base + column when b_ids is null);
//   mode 1: inner products of a GEMM tile, key = qnorm + xnorm[col] - 2 ip (L2);
//   mode 2: inner products, key = -ip.
struct Row {
    const float* a_keys;
    const i64* a_ids;
    int a_len;
    const float* b_vals;
    const i64* b_ids;
    i64 b_id_base;
    int b_len;
    int b_mode;
    float qnorm;
    const float* xnorm;
};

__device__ __forceinline__ void row_get(const Row& r, int j, float& key, i64& id) {
    if (j < r.a_len) {
        key = r.a_keys[j];
        id = r.a_ids[j];
        return;
    }
    int c = j - r.a_len;
    float v = r.b_vals[c];
    if (r.b_mode == 1) {
        key = fmaxf(r.qnorm + r.xnorm[c] - 2.0f * v, 0.0f);
    } else if (r.b_mode == 2) {
        key = -v;
    } else {
        key = v;
    }
    id = r.b_ids ? r.b_ids[c] : r.b_id_base + c;
}

// The key of candidate j of a row (as `row_get`, without the id).
__device__ __forceinline__ float row_key(const Row& r, int j) {
    if (j < r.a_len) {
        return r.a_keys[j];
    }
    int c = j - r.a_len;
    float v = r.b_vals[c];
    if (r.b_mode == 1) {
        return fmaxf(r.qnorm + r.xnorm[c] - 2.0f * v, 0.0f);
    }
    return r.b_mode == 2 ? -v : v;
}

// Sets up the Row of block q from `select_k`'s arguments (shared by the three selections).
__device__ __forceinline__ Row make_row(
    int q, const float* a_keys, const i64* a_ids, int a_len, const float* b_vals,
    i64 b_row_stride, const i64* b_row_start, const int* b_row_len, int b_len, int b_mode,
    const float* qnorm, const float* xnorm, i64 b_id_base, const i64* b_ids) {
    Row r;
    r.a_len = a_len;
    r.a_keys = a_keys ? a_keys + (i64)q * a_len : 0;
    r.a_ids = a_ids ? a_ids + (i64)q * a_len : 0;
    i64 start = b_row_start ? b_row_start[q] : (i64)q * b_row_stride;
    r.b_len = b_row_len ? b_row_len[q] : b_len;
    r.b_vals = b_vals + start;
    r.b_ids = b_ids ? b_ids + start : 0;
    r.b_id_base = b_id_base;
    r.b_mode = b_mode;
    r.qnorm = qnorm ? qnorm[q] : 0.0f;
    r.xnorm = xnorm;
    return r;
}

// The k smallest keys of each row (unsorted), by radix selection on the key bits:
// four passes of 8 bits find the k-th smallest key exactly, one more pass writes the
// keys below it and as many ties as needed. Any k works (no register-resident queue);
// rows shorter than k are copied whole and padded with (+inf, -1).
//
// grid.x = rows; dynamic shared memory: (blockDim.x / 32) * 256 * 4 bytes.
extern "C" __global__ void select_k(
    const float* a_keys, const i64* a_ids, int a_len,
    const float* b_vals, i64 b_row_stride, const i64* b_row_start, const int* b_row_len,
    int b_len, int b_mode, const float* qnorm, const float* xnorm, i64 b_id_base,
    const i64* b_ids,
    int k, float* out_keys, i64* out_ids) {
    extern __shared__ u32 hist[];  // [warps][256]
    __shared__ u32 s_prefix;
    __shared__ u32 s_mask;
    __shared__ int s_kleft;
    __shared__ int s_nless;
    __shared__ int s_neq;

    const int q = blockIdx.x;
    const int tid = threadIdx.x;
    const int nthreads = blockDim.x;
    const int warp = tid >> 5;
    const int nwarps = nthreads >> 5;

    Row r = make_row(q, a_keys, a_ids, a_len, b_vals, b_row_stride, b_row_start, b_row_len,
                     b_len, b_mode, qnorm, xnorm, b_id_base, b_ids);
    const int total = r.a_len + r.b_len;
    float* ok = out_keys + (i64)q * k;
    i64* oi = out_ids + (i64)q * k;

    if (total <= k) {
        for (int j = tid; j < k; j += nthreads) {
            float key = VQ_INF;
            i64 id = -1;
            if (j < total) {
                row_get(r, j, key, id);
            }
            ok[j] = key;
            oi[j] = id;
        }
        return;
    }

    u32 prefix = 0;
    u32 mask = 0;
    int kleft = k;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int i = tid; i < nwarps * 256; i += nthreads) {
            hist[i] = 0;
        }
        __syncthreads();
        u32* h = hist + warp * 256;
        for (int j = tid; j < total; j += nthreads) {
            float key;
            i64 id;
            row_get(r, j, key, id);
            u32 u = key_bits(key);
            if ((u & mask) == prefix) {
                atomicAdd(&h[(u >> shift) & 255u], 1u);
            }
        }
        __syncthreads();
        // Fold the per-warp histograms into the first one.
        for (int b = tid; b < 256; b += nthreads) {
            u32 s = 0;
            for (int w = 0; w < nwarps; ++w) {
                s += hist[w * 256 + b];
            }
            hist[b] = s;
        }
        __syncthreads();
        if (tid == 0) {
            u32 cum = 0;
            int b = 0;
            for (; b < 255; ++b) {
                if (cum + hist[b] >= (u32)kleft) {
                    break;
                }
                cum += hist[b];
            }
            s_kleft = kleft - (int)cum;
            s_prefix = prefix | ((u32)b << shift);
            s_mask = mask | (255u << shift);
        }
        __syncthreads();
        prefix = s_prefix;
        mask = s_mask;
        kleft = s_kleft;
        __syncthreads();
    }

    // prefix is now the exact bit pattern of the k-th smallest key; kleft of the keys
    // equal to it are needed after the k - kleft keys below it.
    if (tid == 0) {
        s_nless = 0;
        s_neq = 0;
    }
    __syncthreads();
    const int nless_total = k - kleft;
    for (int j = tid; j < total; j += nthreads) {
        float key;
        i64 id;
        row_get(r, j, key, id);
        u32 u = key_bits(key);
        if (u < prefix) {
            int p = atomicAdd(&s_nless, 1);
            if (p < nless_total) {  // always true; a bound, not a branch that matters
                ok[p] = key;
                oi[p] = id;
            }
        } else if (u == prefix) {
            int e = atomicAdd(&s_neq, 1);
            if (e < kleft) {
                ok[nless_total + e] = key;
                oi[nless_total + e] = id;
            }
        }
    }
}

#define VQ_FULL 0xffffffffu
// A free slot of a selection list: sorts after every candidate (key bits of +inf are
// 0xff800000, so even infinite keys are taken before it).
#define VQ_NONE_KEY 0xffffffffu
#define VQ_NONE_IDX 0x7fffffff

// Candidate (u, j) goes before (v, i): by key bits, then by position in the row (the
// carried results come first, then the columns in order, so equal keys keep the
// smaller id for flat search).
__device__ __forceinline__ bool cand_less(u32 u, int j, u32 v, int i) {
    return u < v || (u == v && j < i);
}

// Inserts candidate (cu, cj) into a warp's sorted list (lane l holds the l-th smallest)
// when it beats the k-th; returns the new k-th key bits. Warp-uniform arguments.
__device__ __forceinline__ u32 warp_insert(u32& wk, int& wj, u32 cu, int cj, int k, u32 tau) {
    if (!(cu < tau)) {
        return tau;
    }
    const int lane = threadIdx.x & 31;
    bool after = cand_less(cu, cj, wk, wj);  // my entry moves one lane up
    u32 up_k = __shfl_up_sync(VQ_FULL, wk, 1);
    int up_j = __shfl_up_sync(VQ_FULL, wj, 1);
    int up_after = __shfl_up_sync(VQ_FULL, (int)after, 1);
    if (after) {
        if (lane > 0 && up_after) {
            wk = up_k;
            wj = up_j;
        } else {
            wk = cu;
            wj = cj;
        }
    }
    return __shfl_sync(VQ_FULL, wk, k - 1);
}

// The k smallest keys of each row, k <= 32, sorted: each warp keeps its best k in
// registers (one per lane) and takes a strided share of the row in one pass — a
// candidate costs a compare unless it beats the warp's k-th — then warp 0 merges the
// warps' lists. Same arguments and output as `select_k` (rows shorter than k padded
// with (+inf, -1)). blockDim.x: a multiple of 32, at most 1024; dynamic shared memory:
// (blockDim.x / 32) * 32 * 8 bytes.
extern "C" __global__ void __launch_bounds__(1024) select_k_warp(
    const float* a_keys, const i64* a_ids, int a_len,
    const float* b_vals, i64 b_row_stride, const i64* b_row_start, const int* b_row_len,
    int b_len, int b_mode, const float* qnorm, const float* xnorm, i64 b_id_base,
    const i64* b_ids,
    int k, float* out_keys, i64* out_ids) {
    extern __shared__ u32 wlists[];  // [warps][32] key bits, then [warps][32] positions
    const int q = blockIdx.x;
    const int tid = threadIdx.x;
    const int nthreads = blockDim.x;
    const int lane = tid & 31;
    const int warp = tid >> 5;
    const int nwarps = nthreads >> 5;
    Row r = make_row(q, a_keys, a_ids, a_len, b_vals, b_row_stride, b_row_start, b_row_len,
                     b_len, b_mode, qnorm, xnorm, b_id_base, b_ids);
    const int total = r.a_len + r.b_len;
    u32 wk = VQ_NONE_KEY;
    int wj = VQ_NONE_IDX;
    u32 tau = VQ_NONE_KEY;
    // Four loads in flight per thread, then the compares.
    for (int j0 = 0; j0 < total; j0 += 4 * nthreads) {
        u32 u[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            int j = j0 + e * nthreads + tid;
            u[e] = j < total ? key_bits(row_key(r, j)) : VQ_NONE_KEY;
        }
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            unsigned m = __ballot_sync(VQ_FULL, u[e] < tau);
            while (m) {
                int src = __ffs(m) - 1;
                m &= m - 1;
                u32 cu = __shfl_sync(VQ_FULL, u[e], src);
                int cj = j0 + e * nthreads + warp * 32 + src;
                tau = warp_insert(wk, wj, cu, cj, k, tau);
            }
        }
    }
    u32* sk = wlists;
    int* sj = (int*)(wlists + nwarps * 32);
    sk[warp * 32 + lane] = wk;
    sj[warp * 32 + lane] = wj;
    __syncthreads();
    if (warp != 0) {
        return;
    }
    for (int w = 1; w < nwarps; ++w) {
        u32 cu_l = lane < k ? sk[w * 32 + lane] : VQ_NONE_KEY;
        int cj_l = lane < k ? sj[w * 32 + lane] : VQ_NONE_IDX;
        // Ties with the k-th go by position here (within a warp, positions arrive in
        // order, so there a key equal to the k-th never wins).
        int tau_j = __shfl_sync(VQ_FULL, wj, k - 1);
        unsigned m = __ballot_sync(VQ_FULL, cand_less(cu_l, cj_l, tau, tau_j));
        while (m) {
            int src = __ffs(m) - 1;
            m &= m - 1;
            u32 cu = __shfl_sync(VQ_FULL, cu_l, src);
            int cj = __shfl_sync(VQ_FULL, cj_l, src);
            tau_j = __shfl_sync(VQ_FULL, wj, k - 1);
            if (cand_less(cu, cj, tau, tau_j)) {
                if (cu == tau) {
                    tau = VQ_NONE_KEY;  // let warp_insert take the tie
                }
                tau = warp_insert(wk, wj, cu, cj, k, tau);
            }
        }
    }
    if (lane < k) {
        float key = VQ_INF;
        i64 id = -1;
        if (wj != VQ_NONE_IDX) {
            row_get(r, wj, key, id);
        }
        out_keys[(i64)q * k + lane] = key;
        out_ids[(i64)q * k + lane] = id;
    }
}

__device__ __forceinline__ bool pair_less(float ka, i64 ia, float kb, i64 ib) {
    // Padding (-1) sorts after every real id of the same key.
    u32 a = key_bits(ka);
    u32 b = key_bits(kb);
    if (a != b) {
        return a < b;
    }
    unsigned long long ua = (unsigned long long)ia;
    unsigned long long ub = (unsigned long long)ib;
    return ua < ub;
}

// The two orders the bitonic sort below is used with.
struct CandOrder {
    static __device__ __forceinline__ bool less(u32 u, int j, u32 v, int i) {
        return cand_less(u, j, v, i);
    }
};
struct PairOrder {
    static __device__ __forceinline__ bool less(float ka, i64 ia, float kb, i64 ib) {
        return pair_less(ka, ia, kb, ib);
    }
};

// Sorts n pairs (keys[i], vals[i]) ascending by Ord::less, n a power of two, in memory
// the whole block sees (bitonic network); every thread of the block calls it after a
// barrier that makes the pairs visible, and it ends with one.
template <class K, class V, class Ord>
__device__ void bitonic_pairs(K* keys, V* vals, int n) {
    const int tid = threadIdx.x;
    const int nthreads = blockDim.x;
    for (int size = 2; size <= n; size <<= 1) {
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int i = tid; i < n; i += nthreads) {
                int p = i ^ stride;
                if (p > i) {
                    bool up = (i & size) == 0;
                    bool swap = up ? Ord::less(keys[p], vals[p], keys[i], vals[i])
                                   : Ord::less(keys[i], vals[i], keys[p], vals[p]);
                    if (swap) {
                        K tk = keys[i];
                        keys[i] = keys[p];
                        keys[p] = tk;
                        V tv = vals[i];
                        vals[i] = vals[p];
                        vals[p] = tv;
                    }
                }
            }
            __syncthreads();
        }
    }
}

// Sorts n (key bits, position) pairs of shared memory ascending (bitonic over the next
// power of two, padding with free slots); every thread of the block calls it.
__device__ void block_sort_pairs(u32* bk, int* bj, int n) {
    const int tid = threadIdx.x;
    const int nthreads = blockDim.x;
    int p2 = 1;
    while (p2 < n) {
        p2 <<= 1;
    }
    for (int i = n + tid; i < p2; i += nthreads) {
        bk[i] = VQ_NONE_KEY;
        bj[i] = VQ_NONE_IDX;
    }
    __syncthreads();
    bitonic_pairs<u32, int, CandOrder>(bk, bj, p2);
}

#define VQ_BUF_CAP 4096

// The k smallest keys of each row, 32 < k <= 2048, sorted: one pass over the row
// appends the candidates below the current k-th key to a shared-memory buffer (one
// atomic per warp and step); when the buffer could overflow it is sorted and cut to the
// best k, which tightens the threshold. Same arguments and output as `select_k`.
// blockDim.x * 8 <= 2048 (256 threads); dynamic shared memory: VQ_BUF_CAP * 8 bytes.
extern "C" __global__ void __launch_bounds__(256) select_k_buf(
    const float* a_keys, const i64* a_ids, int a_len,
    const float* b_vals, i64 b_row_stride, const i64* b_row_start, const int* b_row_len,
    int b_len, int b_mode, const float* qnorm, const float* xnorm, i64 b_id_base,
    const i64* b_ids,
    int k, float* out_keys, i64* out_ids) {
    extern __shared__ u32 bufmem[];  // VQ_BUF_CAP key bits, then VQ_BUF_CAP positions
    __shared__ int s_count;
    __shared__ u32 s_tau;
    const int q = blockIdx.x;
    const int tid = threadIdx.x;
    const int nthreads = blockDim.x;
    const int lane = tid & 31;
    const int round = nthreads * 8;
    u32* bk = bufmem;
    int* bj = (int*)(bufmem + VQ_BUF_CAP);
    Row r = make_row(q, a_keys, a_ids, a_len, b_vals, b_row_stride, b_row_start, b_row_len,
                     b_len, b_mode, qnorm, xnorm, b_id_base, b_ids);
    const int total = r.a_len + r.b_len;
    // The carried results (at most k <= 2048) start the buffer; when they are k, the
    // largest of them is the threshold.
    if (tid == 0) {
        s_count = r.a_len;
        s_tau = r.a_len >= k ? 0u : VQ_NONE_KEY;
    }
    __syncthreads();
    for (int j = tid; j < r.a_len; j += nthreads) {
        u32 u = key_bits(r.a_keys[j]);
        bk[j] = u;
        bj[j] = j;
        if (r.a_len >= k) {
            atomicMax(&s_tau, u);
        }
    }
    __syncthreads();
    u32 tau = s_tau;
    for (int base = r.a_len; base < total; base += round) {
        u32 u[8];
#pragma unroll
        for (int e = 0; e < 8; ++e) {
            int j = base + e * nthreads + tid;
            u[e] = j < total ? key_bits(row_key(r, j)) : VQ_NONE_KEY;
        }
#pragma unroll
        for (int e = 0; e < 8; ++e) {
            bool take = u[e] < tau;
            unsigned m = __ballot_sync(VQ_FULL, take);
            if (m) {
                int leader = __ffs(m) - 1;
                int pos = 0;
                if (lane == leader) {
                    pos = atomicAdd(&s_count, __popc(m));
                }
                pos = __shfl_sync(VQ_FULL, pos, leader);
                if (take) {
                    int p = pos + __popc(m & ((1u << lane) - 1u));
                    bk[p] = u[e];
                    bj[p] = base + e * nthreads + tid;
                }
            }
        }
        __syncthreads();
        int cnt = s_count;
        __syncthreads();
        if (cnt + round > VQ_BUF_CAP) {
            block_sort_pairs(bk, bj, cnt);
            if (tid == 0) {
                s_count = cnt < k ? cnt : k;
                if (cnt >= k) {
                    s_tau = bk[k - 1];
                }
            }
            __syncthreads();
            tau = s_tau;
        }
    }
    __syncthreads();
    int cnt = s_count;
    block_sort_pairs(bk, bj, cnt);
    for (int i = tid; i < k; i += nthreads) {
        float key = VQ_INF;
        i64 id = -1;
        if (i < cnt && bj[i] != VQ_NONE_IDX) {
            row_get(r, bj[i], key, id);
        }
        out_keys[(i64)q * k + i] = key;
        out_ids[(i64)q * k + i] = id;
    }
}


// Sorts each row of k (key, id) pairs by key, then id (bitonic sort over kpad, the
// next power of two). In shared memory when `scratch_keys` is null (kpad * 12 bytes of
// dynamic shared memory), else in the global scratch rows (kpad per row) — the path for
// large k.
extern "C" __global__ void __launch_bounds__(1024) sort_k(float* keys, i64* ids, int k, int kpad,
                                  float* scratch_keys, i64* scratch_ids) {
    extern __shared__ unsigned char smem[];
    const int q = blockIdx.x;
    const int tid = threadIdx.x;
    const int nthreads = blockDim.x;
    float* sk;
    i64* si;
    if (scratch_keys) {
        sk = scratch_keys + (i64)q * kpad;
        si = scratch_ids + (i64)q * kpad;
    } else {
        si = (i64*)smem;
        sk = (float*)(smem + (size_t)kpad * sizeof(i64));
    }
    float* rk = keys + (i64)q * k;
    i64* ri = ids + (i64)q * k;
    for (int j = tid; j < kpad; j += nthreads) {
        if (j < k) {
            sk[j] = rk[j];
            si[j] = ri[j];
        } else {
            sk[j] = VQ_INF;
            si[j] = -1;
        }
    }
    __syncthreads();
    bitonic_pairs<float, i64, PairOrder>(sk, si, kpad);
    for (int j = tid; j < k; j += nthreads) {
        rk[j] = sk[j];
        ri[j] = si[j];
    }
}

// Range search over a GEMM tile (modes 1 and 2 of `select_k`): counts per row the
// columns whose key is below `key_limit` (pass 0), or writes them at the row's offset
// (pass 1, `offsets` from the counts; order within a row is arbitrary, the host sorts).
extern "C" __global__ void range_tile(const float* ip, i64 row_stride, int ncols, int mode,
                                      const float* qnorm, const float* xnorm, float key_limit,
                                      i64 id_base, int pass, int* counts, const i64* offsets,
                                      float* out_keys, i64* out_ids) {
    __shared__ int s_count;
    const int q = blockIdx.x;
    if (threadIdx.x == 0) {
        s_count = 0;
    }
    __syncthreads();
    const float* row = ip + (i64)q * row_stride;
    const float qn = qnorm ? qnorm[q] : 0.0f;
    int local = 0;
    for (int c = threadIdx.x; c < ncols; c += blockDim.x) {
        float v = row[c];
        float key = mode == 1 ? fmaxf(qn + xnorm[c] - 2.0f * v, 0.0f) : -v;
        if (key < key_limit) {
            if (pass == 0) {
                ++local;
            } else {
                int p = atomicAdd(&s_count, 1);
                out_keys[offsets[q] + p] = key;
                out_ids[offsets[q] + p] = id_base + c;
            }
        }
    }
    if (pass == 0) {
        atomicAdd(&s_count, local);
        __syncthreads();
        if (threadIdx.x == 0) {
            counts[q] = s_count;
        }
    }
}

// IVF-Flat list scan. grid.x = queries * nprobe (block b: query b / nprobe, probe
// b % nprobe; grid.y would cap nprobe at 65535); each block scores one probed list
// against its query, one warp per stored vector, and writes keys and ids at
// cand_off[q * nprobe + p] of the candidate buffers.
extern "C" __global__ void ivf_flat_scan(const float* queries, int d, int nprobe,
                                         const i64* probes, const float* data,
                                         const i64* list_start, const int* list_len,
                                         const i64* list_ids, const i64* cand_off,
                                         int metric_ip, float* cand_keys, i64* cand_ids) {
    extern __shared__ float sq[];  // the query, d floats
    const int q = blockIdx.x / nprobe;
    const int p = blockIdx.x % nprobe;
    const i64 list = probes[(i64)q * nprobe + p];
    if (list < 0) {
        return;
    }
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        sq[j] = queries[(i64)q * d + j];
    }
    __syncthreads();
    const i64 start = list_start[list];
    const int len = list_len[list];
    const i64 out = cand_off[(i64)q * nprobe + p];
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int nwarps = blockDim.x >> 5;
    for (int i = warp; i < len; i += nwarps) {
        const float* x = data + (start + i) * d;
        float s = 0.0f;
        if (metric_ip) {
            for (int j = lane; j < d; j += 32) {
                s += sq[j] * x[j];
            }
        } else {
            for (int j = lane; j < d; j += 32) {
                float t = sq[j] - x[j];
                s += t * t;
            }
        }
        s = warp_sum(s);
        if (lane == 0) {
            cand_keys[out + i] = metric_ip ? -s : s;
            cand_ids[out + i] = list_ids[start + i];
        }
    }
}

// IVF-PQ list scan (8-bit codes). grid.x = queries * nprobe as above; each block builds the
// query's look-up table for the probed list in shared memory (m * 256 floats, then d
// floats of query or residual) and scores the list's codes, one thread per code.
//   L2, by residual:  key = sum_m |r_m - c_mj|^2 with r = q - centroid;
//   L2, not:          key = sum_m |q_m - c_mj|^2;
//   IP:               key = -(coarse_ip + sum_m <q_m, c_mj>) (coarse_ip only by residual).
extern "C" __global__ void ivf_pq_scan(const float* queries, int d, int m, int nprobe,
                                       const i64* probes, const float* probe_keys,
                                       const float* centroids, const float* codebook,
                                       const u8* codes, const i64* list_start,
                                       const int* list_len, const i64* list_ids,
                                       const i64* cand_off, int metric_ip, int by_residual,
                                       float* cand_keys, i64* cand_ids) {
    extern __shared__ float smem_f[];
    float* lut = smem_f;             // m * 256
    float* sq = smem_f + m * 256;    // d
    const int q = blockIdx.x / nprobe;
    const int p = blockIdx.x % nprobe;
    const i64 list = probes[(i64)q * nprobe + p];
    if (list < 0) {
        return;
    }
    const int dsub = d / m;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float v = queries[(i64)q * d + j];
        if (by_residual && !metric_ip) {
            v -= centroids[list * d + j];
        }
        sq[j] = v;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < m * 256; e += blockDim.x) {
        const int sub = e >> 8;
        const float* c = codebook + (i64)e * dsub;
        const float* x = sq + sub * dsub;
        float s = 0.0f;
        if (metric_ip) {
            for (int t = 0; t < dsub; ++t) {
                s += x[t] * c[t];
            }
        } else {
            for (int t = 0; t < dsub; ++t) {
                float u = x[t] - c[t];
                s += u * u;
            }
        }
        lut[e] = s;
    }
    __syncthreads();
    // For inner product the coarse key is -<q, centroid>.
    const float bias = (metric_ip && by_residual) ? -probe_keys[(i64)q * nprobe + p] : 0.0f;
    const i64 start = list_start[list];
    const int len = list_len[list];
    const i64 out = cand_off[(i64)q * nprobe + p];
    for (int i = threadIdx.x; i < len; i += blockDim.x) {
        const u8* code = codes + (start + i) * m;
        float s = 0.0f;
        for (int sub = 0; sub < m; ++sub) {
            s += lut[(sub << 8) + code[sub]];
        }
        cand_keys[out + i] = metric_ip ? -(bias + s) : s;
        cand_ids[out + i] = list_ids[start + i];
    }
}
