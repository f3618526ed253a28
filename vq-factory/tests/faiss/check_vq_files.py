#!/usr/bin/env python3
"""Faiss reads the files vq wrote (`vq-factory/tests/faiss_io.rs`) and must return vq's
neighbours. Arguments: the directory holding the files and `manifest.json`, and the
queries (fvecs). Exit status 1 on any disagreement."""

import json
import os
import sys

import faiss
import numpy as np


def read_fvecs(path):
    a = np.fromfile(path, dtype=np.int32)
    d = a[0]
    return a.reshape(-1, d + 1)[:, 1:].copy().view(np.float32)


def main():
    out, qpath = sys.argv[1], sys.argv[2]
    xq = read_fvecs(qpath)
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    bad = 0
    for name, case in sorted(manifest.items()):
        index = faiss.read_index(os.path.join(out, name))
        k = 10
        want_i = np.array(case["labels"]).reshape(-1, k)
        want_d = np.array(case["distances"], dtype=np.float32).reshape(-1, k)
        fs = "x4fs" in case["factory"]
        if fs and "RFlat" not in case["factory"]:
            # Faiss's fast scan ranks by quantised sums, vq by exact ADC: compare sets.
            d, i = index.search(xq, k)
            ok = np.mean([len(set(a) & set(b)) / k for a, b in zip(i, want_i)]) >= 0.8
        elif fs:
            # Candidates chosen by quantised sums in both, by different kernels.
            d, i = index.search(xq, k)
            ok = np.mean([len(set(a) & set(b)) / k for a, b in zip(i, want_i)]) >= 0.7
        elif "HNSW" in case["factory"]:
            d, i = index.search(xq, k)
            ok = np.mean([len(set(a) & set(b)) / k for a, b in zip(i, want_i)]) >= 0.9
        else:
            d, i = index.search(xq, k)
            found = want_i >= 0  # -1 pads a short result (its distance is a sentinel)
            tol = 1e-3 * np.maximum(1, np.abs(want_d[found]))
            ok = bool(np.all(np.abs(d[found] - want_d[found]) <= tol))
            ok = ok and np.mean(i == want_i) >= 0.95
        print(f"{name:12} {case['factory']:24} {'ok' if ok else 'DIFFERENT'}")
        if not ok:
            bad_q = [q for q in range(len(i)) if (i[q] != want_i[q]).any()][:2]
            print("  queries", bad_q, "nprobe", getattr(faiss.try_extract_index_ivf(index), "nprobe", None))
            for q in bad_q:
                print("  faiss", i[q].tolist(), d[q].tolist())
                print("  vq   ", want_i[q].tolist(), want_d[q].tolist())
            bad += 1
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
