"""PyTorch baselines for vq-gpu's device figures (issue: flat search and k-means on the
same GPU). Reads the fvecs files `vq generate` writes; prints one JSON line per case.

    python3 torch_baseline.py DIR [--k 10] [--kmeans-k 4096] [--niter 20]
"""
import argparse
import json
import sys
import time

import numpy as np
import torch


def fvecs(path):
    raw = np.fromfile(path, dtype=np.int32)
    d = int(raw[0])
    return raw.reshape(-1, d + 1)[:, 1:].view(np.float32).copy()


def timed(f, repeat=3):
    f()  # warm-up
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = f()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2], out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--kmeans-k", type=int, default=4096)
    ap.add_argument("--niter", type=int, default=20)
    ap.add_argument("--chunk", type=int, default=2048)
    a = ap.parse_args()
    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = False  # exact f32, as vq's SGEMM
    xb = torch.from_numpy(fvecs(f"{a.dir}/base.fvecs")).to(dev)
    xq = torch.from_numpy(fvecs(f"{a.dir}/query.fvecs")).to(dev)
    n, d = xb.shape
    nq = xq.shape[0]
    xn = (xb * xb).sum(1)

    def flat():
        ids, vals = [], []
        for s in range(0, nq, a.chunk):
            q = xq[s : s + a.chunk]
            dist = (q * q).sum(1, keepdim=True) + xn[None, :] - 2.0 * (q @ xb.T)
            top = torch.topk(dist, a.k, dim=1, largest=False)
            ids.append(top.indices)
            vals.append(top.values)
        return torch.cat(ids), torch.cat(vals)

    def flat_to_host():
        # vq returns distances and ids in host memory: the same, for a like-for-like figure.
        ids, vals = flat()
        return ids.cpu(), vals.cpu()

    s, (ids, _) = timed(flat)
    s_host, _ = timed(flat_to_host)
    print(json.dumps({"case": f"flat-k{a.k}", "library": "torch", "version": torch.__version__,
                      "gpu": torch.cuda.get_device_name(0), "n": n, "d": d, "nq": nq,
                      "k": a.k, "search_s": s, "qps": nq / s,
                      "search_s_results_on_host": s_host, "qps_results_on_host": nq / s_host,
                      "tflops_effective": 2.0 * n * d * nq / s / 1e12}), flush=True)
    np.save(f"{a.dir}/torch_flat_ids.npy", ids.cpu().numpy())

    if a.kmeans_k <= 0:  # flat search only
        return 0
    # k-means: Lloyd iterations from the first k points (assignment by matmul + argmin).
    k = a.kmeans_k
    gen = torch.Generator(device="cpu").manual_seed(1234)
    perm = torch.randperm(n, generator=gen)[:k].to(dev)

    def kmeans():
        c = xb[perm].clone()
        for _ in range(a.niter):
            assign = []
            obj = 0.0
            for s0 in range(0, n, 65536):
                x = xb[s0 : s0 + 65536]
                dist = xn[s0 : s0 + 65536, None] + (c * c).sum(1)[None, :] - 2.0 * (x @ c.T)
                m, i = dist.min(1)
                assign.append(i)
                obj += float(m.clamp_min(0).sum())
            a_all = torch.cat(assign)
            sums = torch.zeros_like(c).index_add_(0, a_all, xb)
            cnt = torch.bincount(a_all, minlength=k).clamp_min(1).float()
            c = sums / cnt[:, None]
        return obj

    s, obj = timed(kmeans, repeat=1)
    print(json.dumps({"case": "kmeans", "library": "torch", "version": torch.__version__,
                      "n": n, "d": d, "k": k, "niter": a.niter, "train_s": s,
                      "objective": obj}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
