// Tests of vq-gpu's kernels under the CPU emulation (emulate.h) against plain loops.
#include <algorithm>
#include <cstdio>
#include <random>
#include <utility>
#include "emulate.h"
#include "kernels_emu.cu"

static int failures = 0;
#define CHECK(c, ...) do { if (!(c)) { ++failures; std::printf("FAIL %s:%d: ", __FILE__, __LINE__); std::printf(__VA_ARGS__); std::printf("\n"); } } while (0)

using Pair = std::pair<float, i64>;

static bool pair_lt(const Pair& a, const Pair& b) {
    if (a.first != b.first) return a.first < b.first;
    return (unsigned long long)a.second < (unsigned long long)b.second;
}

// Selects and sorts with the kernels; returns rows of k pairs.
static std::vector<std::vector<Pair>> gpu_select(
    int nrows, int k, const std::vector<float>& a_keys, const std::vector<i64>& a_ids, int a_len,
    const std::vector<float>& vals, i64 stride, const std::vector<i64>* starts,
    const std::vector<int>* lens, int b_len, int mode, const std::vector<float>* qn,
    const std::vector<float>* xn, i64 id_base, const std::vector<i64>* ids, unsigned threads,
    int which = 0) {
    std::vector<float> ok(nrows * k);
    std::vector<i64> oi(nrows * k);
    // which: 0 radix (`select_k`), 1 warp lists (k <= 32), 2 shared buffer (k <= 2048,
    // at most 256 threads).
    auto kern = which == 1 ? select_k_warp : which == 2 ? select_k_buf : select_k;
    if (which == 2) threads = std::min(threads, 256u);
    vq_launch({(unsigned)nrows, 1, 1}, threads, [&] {
        kern(a_len ? a_keys.data() : nullptr, a_len ? a_ids.data() : nullptr, a_len,
             vals.data(), stride, starts ? starts->data() : nullptr,
             lens ? lens->data() : nullptr, b_len, mode, qn ? qn->data() : nullptr,
             xn ? xn->data() : nullptr, id_base, ids ? ids->data() : nullptr, k, ok.data(),
             oi.data());
    });
    int kpad = 1;
    while (kpad < k) kpad <<= 1;
    bool global = kpad > 2048;
    std::vector<float> sk(global ? (size_t)nrows * kpad : 0);
    std::vector<i64> si(global ? (size_t)nrows * kpad : 0);
    unsigned st = std::max(32, std::min(kpad, 1024) / 2);
    vq_launch({(unsigned)nrows, 1, 1}, st, [&] {
        sort_k(ok.data(), oi.data(), k, kpad, global ? sk.data() : nullptr,
               global ? si.data() : nullptr);
    });
    std::vector<std::vector<Pair>> out(nrows);
    for (int q = 0; q < nrows; ++q)
        for (int j = 0; j < k; ++j) out[q].push_back({ok[q * k + j], oi[q * k + j]});
    return out;
}

static std::vector<Pair> cpu_topk(std::vector<Pair> c, int k) {
    std::sort(c.begin(), c.end(), pair_lt);
    while ((int)c.size() < k) c.push_back({VQ_INF, -1});
    c.resize(k);
    return c;
}

// The selected multiset of keys must equal the true k smallest; ids must carry their
// keys; rows sorted.
static void compare(const std::vector<Pair>& got, const std::vector<Pair>& want,
                    const std::vector<Pair>& all, const char* what) {
    for (size_t j = 0; j < want.size(); ++j) {
        CHECK(got[j].first == want[j].first, "%s: key %zu: %g vs %g", what, j, got[j].first,
              want[j].first);
        if (j > 0) CHECK(!pair_lt(got[j], got[j - 1]), "%s: row not sorted at %zu", what, j);
    }
    // Every returned id is a real candidate with that key (ties may pick other ids).
    for (auto& g : got) {
        if (g.second < 0) continue;
        bool found = false;
        for (auto& a : all) if (a.second == g.second && a.first == g.first) { found = true; break; }
        CHECK(found, "%s: id %lld with key %g is not a candidate", what, (long long)g.second, g.first);
    }
    std::vector<i64> ids;
    for (auto& g : got) if (g.second >= 0) ids.push_back(g.second);
    std::sort(ids.begin(), ids.end());
    CHECK(std::adjacent_find(ids.begin(), ids.end()) == ids.end(), "%s: an id returned twice", what);
}

static const char* kname(int which) {
    return which == 1 ? "warp" : which == 2 ? "buf" : "radix";
}

// The fast kernel for k (as ops.rs picks it).
static int fast_for(int k) { return k <= 32 ? 1 : k <= 2048 ? 2 : 0; }

static void test_select_modes(std::mt19937& rng) {
    for (int trial = 0; trial < 12; ++trial) {
        int nrows = 3, len = 1 + rng() % 3000;
        int k = trial % 2 ? 1 + rng() % 32 : 1 + rng() % 300;
        bool ties = (trial / 2) % 2;
        int mode = trial % 3;
        std::vector<float> vals(nrows * len), qn(nrows), xn(len);
        std::uniform_real_distribution<float> u(-2, 2);
        for (auto& v : vals) v = ties ? (float)(rng() % 7) - 3.0f : u(rng);
        for (auto& v : qn) v = 10 + u(rng);
        for (auto& v : xn) v = 10 + u(rng);
        i64 base = 1000;
        unsigned threads = 64 + 32 * (rng() % 8);
        for (int which : {0, fast_for(k)}) {
            auto got = gpu_select(nrows, k, {}, {}, 0, vals, len, nullptr, nullptr, len, mode,
                                  &qn, &xn, base, nullptr, threads, which);
            for (int q = 0; q < nrows; ++q) {
                std::vector<Pair> all;
                for (int c = 0; c < len; ++c) {
                    float v = vals[q * len + c];
                    float key = mode == 1 ? std::fmax(qn[q] + xn[c] - 2.0f * v, 0.0f)
                                          : mode == 2 ? -v : v;
                    all.push_back({key, base + c});
                }
                char what[128];
                std::snprintf(what, sizeof what, "%s mode %d len %d k %d ties %d row %d",
                              kname(which), mode, len, k, ties, q);
                auto want = cpu_topk(all, k);
                compare(got[q], want, all, what);
                // The fast kernels keep the first of equal keys: exactly the CPU's ids.
                if (which != 0)
                    for (int j = 0; j < k; ++j)
                        CHECK(got[q][j].second == want[j].second, "%s: id %d: %lld vs %lld",
                              what, j, (long long)got[q][j].second, (long long)want[j].second);
            }
        }
    }
}

static void test_carry_and_rows(std::mt19937& rng) {
    // Carried best of an earlier tile + variable-length rows with explicit ids.
    for (int k : {17, 100}) {
        for (int which : {0, fast_for(k)}) {
            int nrows = 4;
            std::vector<float> a_keys(nrows * k);
            std::vector<i64> a_ids(nrows * k);
            std::uniform_real_distribution<float> u(0, 1);
            for (int i = 0; i < nrows * k; ++i) { a_keys[i] = u(rng); a_ids[i] = 5000 + i; }
            // Row 1's carry is short: padded with (+inf, -1) as select_k writes it.
            for (int j = 3; j < k; ++j) { a_keys[k + j] = VQ_INF; a_ids[k + j] = -1; }
            std::vector<int> lens = {0, 5, 40, 700};
            std::vector<i64> starts;
            i64 tot = 0;
            for (int l : lens) { starts.push_back(tot); tot += l; }
            std::vector<float> vals(tot);
            std::vector<i64> ids(tot);
            for (i64 i = 0; i < tot; ++i) { vals[i] = u(rng); ids[i] = 10 * i; }
            auto got = gpu_select(nrows, k, a_keys, a_ids, k, vals, 0, &starts, &lens, 0, 0,
                                  nullptr, nullptr, 0, &ids, 256, which);
            for (int q = 0; q < nrows; ++q) {
                std::vector<Pair> all;
                for (int j = 0; j < k; ++j)
                    if (a_ids[q * k + j] >= 0) all.push_back({a_keys[q * k + j], a_ids[q * k + j]});
                for (int j = 0; j < lens[q]; ++j)
                    all.push_back({vals[starts[q] + j], ids[starts[q] + j]});
                char what[64];
                std::snprintf(what, sizeof what, "%s carry + rows k %d row %d", kname(which), k, q);
                compare(got[q], cpu_topk(all, k), all, what);
            }
            // Rows shorter than k are padded.
            std::vector<int> short_lens = {0, 3, 7, 2};
            std::vector<i64> s2 = {0, 0, 3, 10};
            auto got2 = gpu_select(nrows, 8, {}, {}, 0, vals, 0, &s2, &short_lens, 0, 0, nullptr,
                                   nullptr, 0, &ids, 128, which == 2 ? 2 : which);
            for (int q = 0; q < nrows; ++q) {
                std::vector<Pair> all;
                for (int j = 0; j < short_lens[q]; ++j)
                    all.push_back({vals[s2[q] + j], ids[s2[q] + j]});
                compare(got2[q], cpu_topk(all, 8), all, "padding");
            }
        }
    }
}

// Two tiles of a long row through the fast kernels, the second carrying the first's
// result (as knn_tile runs them): the buffer fills and is cut several times.
static void test_tiles_carry(std::mt19937& rng) {
    for (int k : {1, 32, 200, 2048}) {
        int which = fast_for(k);
        int len = 6000, nrows = 2;
        std::vector<float> vals(nrows * 2 * len);
        std::uniform_real_distribution<float> u(-1, 1);
        for (auto& v : vals) v = u(rng);
        // Tile 1: columns [0, len) of each row; tile 2: [len, 2 len).
        std::vector<float> t1(nrows * len), t2(nrows * len);
        for (int q = 0; q < nrows; ++q)
            for (int c = 0; c < len; ++c) {
                t1[q * len + c] = vals[q * 2 * len + c];
                t2[q * len + c] = vals[q * 2 * len + len + c];
            }
        auto r1 = gpu_select(nrows, k, {}, {}, 0, t1, len, nullptr, nullptr, len, 0, nullptr,
                             nullptr, 0, nullptr, 256, which);
        std::vector<float> ck;
        std::vector<i64> ci;
        for (auto& row : r1)
            for (auto& p : row) { ck.push_back(p.first); ci.push_back(p.second); }
        auto r2 = gpu_select(nrows, k, ck, ci, k, t2, len, nullptr, nullptr, len, 0, nullptr,
                             nullptr, len, nullptr, 256, which);
        for (int q = 0; q < nrows; ++q) {
            std::vector<Pair> all;
            for (int c = 0; c < 2 * len; ++c) all.push_back({vals[q * 2 * len + c], c});
            auto want = cpu_topk(all, k);
            char what[64];
            std::snprintf(what, sizeof what, "%s two tiles k %d row %d", kname(which), k, q);
            compare(r2[q], want, all, what);
            for (int j = 0; j < k; ++j)
                CHECK(r2[q][j].second == want[j].second, "%s: id %d", what, j);
        }
    }
}

static void test_large_k(std::mt19937& rng) {
    // k beyond the shared-memory sort (global scratch) and beyond 2048.
    int nrows = 2, len = 9000, k = 3000;
    std::vector<float> vals(nrows * len);
    std::uniform_real_distribution<float> u(-1, 1);
    for (auto& v : vals) v = u(rng);
    auto got = gpu_select(nrows, k, {}, {}, 0, vals, len, nullptr, nullptr, len, 0, nullptr,
                          nullptr, 0, nullptr, 256);
    for (int q = 0; q < nrows; ++q) {
        std::vector<Pair> all;
        for (int c = 0; c < len; ++c) all.push_back({vals[q * len + c], c});
        compare(got[q], cpu_topk(all, k), all, "k = 3000");
    }
}

static void test_range(std::mt19937& rng) {
    int nq = 3, nx = 500;
    std::vector<float> ip(nq * nx), qn(nq), xn(nx);
    std::uniform_real_distribution<float> u(-1, 1);
    for (auto& v : ip) v = u(rng);
    for (auto& v : qn) v = 1 + u(rng);
    for (auto& v : xn) v = 1 + u(rng);
    for (int mode = 1; mode <= 2; ++mode) {
        float limit = mode == 1 ? 1.5f : -0.5f;
        std::vector<int> counts(nq);
        vq_launch({(unsigned)nq, 1, 1}, 256, [&] {
            range_tile(ip.data(), nx, nx, mode, qn.data(), xn.data(), limit, 7, 0, counts.data(),
                       nullptr, nullptr, nullptr);
        });
        std::vector<i64> off;
        i64 tot = 0;
        for (int c : counts) { off.push_back(tot); tot += c; }
        std::vector<float> ok(tot);
        std::vector<i64> oi(tot);
        vq_launch({(unsigned)nq, 1, 1}, 256, [&] {
            range_tile(ip.data(), nx, nx, mode, qn.data(), xn.data(), limit, 7, 1, counts.data(),
                       off.data(), ok.data(), oi.data());
        });
        for (int q = 0; q < nq; ++q) {
            std::vector<i64> want, got(oi.begin() + off[q], oi.begin() + off[q] + counts[q]);
            for (int c = 0; c < nx; ++c) {
                float v = ip[q * nx + c];
                float key = mode == 1 ? std::fmax(qn[q] + xn[c] - 2 * v, 0.0f) : -v;
                if (key < limit) want.push_back(7 + c);
            }
            std::sort(got.begin(), got.end());
            CHECK(got == want, "range mode %d row %d: %zu hits vs %zu", mode, q, got.size(), want.size());
        }
    }
}

static void test_ivf_scans(std::mt19937& rng) {
    const int d = 16, m = 4, dsub = d / m, nlist = 5, nq = 3, nprobe = 3;
    std::uniform_real_distribution<float> u(-1, 1);
    std::vector<float> q(nq * d), cents(nlist * d), cb(m * 256 * dsub);
    for (auto& v : q) v = u(rng);
    for (auto& v : cents) v = u(rng);
    for (auto& v : cb) v = u(rng);
    std::vector<int> len = {3, 0, 40, 7, 1};
    std::vector<i64> start;
    i64 tot = 0;
    for (int l : len) { start.push_back(tot); tot += l; }
    std::vector<float> data(tot * d);
    for (auto& v : data) v = u(rng);
    std::vector<unsigned char> codes(tot * m);
    for (auto& c : codes) c = rng() % 256;
    std::vector<i64> ids(tot);
    for (i64 i = 0; i < tot; ++i) ids[i] = 100 + 3 * i;
    std::vector<i64> probes = {2, 0, 4, 1, 3, -1, 2, 3, 0};
    std::vector<float> pkeys(nq * nprobe);
    for (auto& v : pkeys) v = u(rng);
    std::vector<i64> off;
    i64 acc = 0;
    for (i64 p : probes) { off.push_back(acc); acc += p < 0 ? 0 : len[p]; }
    for (int ip = 0; ip <= 1; ++ip) {
        std::vector<float> ck(acc, NAN);
        std::vector<i64> ci(acc, -7);
        vq_launch({nq * nprobe, 1, 1}, 64, [&] {
            ivf_flat_scan(q.data(), d, nprobe, probes.data(), data.data(), start.data(),
                          len.data(), ids.data(), off.data(), ip, ck.data(), ci.data());
        });
        for (int qi = 0; qi < nq; ++qi)
            for (int p = 0; p < nprobe; ++p) {
                i64 l = probes[qi * nprobe + p];
                if (l < 0) continue;
                for (int i = 0; i < len[l]; ++i) {
                    float s = 0;
                    for (int j = 0; j < d; ++j) {
                        float a = q[qi * d + j], b = data[(start[l] + i) * d + j];
                        s += ip ? a * b : (a - b) * (a - b);
                    }
                    float want = ip ? -s : s;
                    i64 o = off[qi * nprobe + p] + i;
                    CHECK(std::fabs(ck[o] - want) < 1e-4f, "flat scan ip=%d: %g vs %g", ip, ck[o], want);
                    CHECK(ci[o] == ids[start[l] + i], "flat scan id");
                }
            }
        for (int res = 0; res <= 1; ++res) {
            std::vector<float> pk(acc, NAN);
            std::vector<i64> pi(acc, -7);
            vq_launch({nq * nprobe, 1, 1}, 64, [&] {
                ivf_pq_scan(q.data(), d, m, nprobe, probes.data(), pkeys.data(), cents.data(),
                            cb.data(), codes.data(), start.data(), len.data(), ids.data(),
                            off.data(), ip, res, pk.data(), pi.data());
            });
            for (int qi = 0; qi < nq; ++qi)
                for (int p = 0; p < nprobe; ++p) {
                    i64 l = probes[qi * nprobe + p];
                    if (l < 0) continue;
                    for (int i = 0; i < len[l]; ++i) {
                        float s = 0;
                        for (int sub = 0; sub < m; ++sub) {
                            int c = codes[(start[l] + i) * m + sub];
                            for (int t = 0; t < dsub; ++t) {
                                float x = q[qi * d + sub * dsub + t];
                                if (res && !ip) x -= cents[l * d + sub * dsub + t];
                                float y = cb[(sub * 256 + c) * dsub + t];
                                s += ip ? x * y : (x - y) * (x - y);
                            }
                        }
                        float bias = (ip && res) ? -pkeys[qi * nprobe + p] : 0.0f;
                        float want = ip ? -(bias + s) : s;
                        i64 o = off[qi * nprobe + p] + i;
                        CHECK(std::fabs(pk[o] - want) < 1e-4f, "pq scan ip=%d res=%d: %g vs %g", ip, res, pk[o], want);
                        CHECK(pi[o] == ids[start[l] + i], "pq scan id");
                    }
                }
        }
    }
}

int main() {
    std::mt19937 rng(12345);
    test_select_modes(rng);
    test_carry_and_rows(rng);
    test_large_k(rng);
    test_tiles_carry(rng);
    test_range(rng);
    test_ivf_scans(rng);
    std::printf("%s (%d failures)\n", failures ? "FAILED" : "all kernel checks passed", failures);
    return failures ? 1 : 0;
}
