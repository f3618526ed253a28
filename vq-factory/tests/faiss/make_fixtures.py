#!/usr/bin/env python3
"""Writes the Faiss fixture files that `vq-factory/tests/faiss_io.rs` reads.

Every index is built by Faiss itself (faiss-cpu from PyPI) from seeded data, saved
with `faiss.write_index`, and searched by Faiss; the test checks that vq reads each
file and returns the same neighbours. Run from anywhere (the output goes next to
this script) with a Python that has faiss-cpu and numpy:

    python -m venv /tmp/venv-faiss && /tmp/venv-faiss/bin/pip install faiss-cpu numpy
    /tmp/venv-faiss/bin/python vq-factory/tests/faiss/make_fixtures.py

The files are small (at most a few hundred KB in all) and committed; rerunning the
script with the same faiss-cpu gives the same bytes.
"""

import json
import os
import sys

import faiss
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures")
D, NB, NQ, K = 16, 600, 8, 10


def write_fvecs(path, x):
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    out = np.empty((n, d + 1), dtype=np.float32)
    out[:, 0] = np.array([d], dtype=np.int32).view(np.float32)[0]
    out[:, 1:] = x
    out.tofile(path)


def data():
    rng = np.random.default_rng(20261203)
    # Clustered, so that coarse quantizers and PQ have structure to find.
    centers = rng.normal(size=(12, D)).astype(np.float32) * 4
    assign = rng.integers(0, 12, size=NB + NQ)
    x = centers[assign] + rng.normal(size=(NB + NQ, D)).astype(np.float32)
    return x[:NB].copy(), x[NB:].copy()


def ids_of(name):
    # Ids an IDMap maps to: sparse, large, not in insertion order.
    return (np.arange(NB, dtype=np.int64) * 7919 + 1_000_003) % 10_000_019


def build(desc, metric, xb):
    if desc == "SQ8_uniform":  # not a Faiss factory token (vq's spelling)
        index = faiss.IndexScalarQuantizer(D, faiss.ScalarQuantizer.QT_8bit_uniform, metric)
    else:
        index = faiss.index_factory(D, desc, metric)
    index.train(xb)
    if desc.startswith("IDMap"):
        index.add_with_ids(xb, ids_of(desc))
    else:
        index.add(xb)
    return index


def exact_equivalent(index):
    """Faiss's fast-scan indexes return the order of their quantised sums; vq's return
    the exact 4-bit ADC top-k. The reference for those is the plain PQ (IVF-PQ) index
    with the same quantizers and codes, which Faiss searches exactly."""
    if isinstance(index, faiss.IndexPQFastScan):
        ref = faiss.IndexPQ(index.d, index.pq.M, 4, index.metric_type)
        ref.pq = index.pq
        ref.is_trained = True
        return ref
    if isinstance(index, faiss.IndexIVFPQFastScan):
        ref = faiss.IndexIVFPQ(index.quantizer, index.d, index.nlist, index.pq.M, 4,
                               index.metric_type)
        ref.pq = index.pq
        ref.by_residual = index.by_residual
        ref.use_precomputed_table = 0
        ref.is_trained = True
        ref.nprobe = index.nprobe
        return ref
    if isinstance(index, faiss.IndexRefine):
        base = faiss.downcast_index(index.base_index)
        if isinstance(base, (faiss.IndexPQFastScan, faiss.IndexIVFPQFastScan)):
            ref = faiss.IndexRefineFlat(exact_equivalent(base))
            ref.k_factor = index.k_factor
            return ref
    return None


def search(index, xq, params=None):
    if params is not None:
        faiss.ParameterSpace().set_index_parameters(index, params)
    d, i = index.search(xq, K)
    return d, i


CASES = [
    # name, factory string, metric, parameters set before saving, search parameters
    # the test also passes (None: the file's own), exact (results must match)
    ("flat_l2", "Flat", faiss.METRIC_L2, None, None),
    ("flat_ip", "Flat", faiss.METRIC_INNER_PRODUCT, None, None),
    ("idmap_flat", "IDMap,Flat", faiss.METRIC_L2, None, None),
    ("idmap2_flat", "IDMap2,Flat", faiss.METRIC_L2, None, None),
    ("pq8", "PQ8", faiss.METRIC_L2, None, None),
    ("pq4x6", "PQ4x6", faiss.METRIC_L2, None, None),
    ("pq8_ip", "PQ8", faiss.METRIC_INNER_PRODUCT, None, None),
    ("sq8", "SQ8", faiss.METRIC_L2, None, None),
    ("sq4", "SQ4", faiss.METRIC_L2, None, None),
    ("sq6", "SQ6", faiss.METRIC_L2, None, None),
    ("sqfp16", "SQfp16", faiss.METRIC_L2, None, None),
    ("sq8_uniform_ip", "SQ8_uniform", faiss.METRIC_INNER_PRODUCT, None, None),
    ("ivf_flat", "IVF16,Flat", faiss.METRIC_L2, "nprobe=4", None),
    ("ivf_flat_ip", "IVF16,Flat", faiss.METRIC_INNER_PRODUCT, "nprobe=4", None),
    ("ivf_sq8", "IVF16,SQ8", faiss.METRIC_L2, "nprobe=4", None),
    ("ivf_pq", "IVF16,PQ8", faiss.METRIC_L2, "nprobe=4", None),
    ("ivf_pq_ip", "IVF16,PQ8", faiss.METRIC_INNER_PRODUCT, "nprobe=4", None),
    ("ivf_pq_x4", "IVF16,PQ8x4", faiss.METRIC_L2, "nprobe=16", None),
    ("imi_pq", "IMI2x4,PQ8", faiss.METRIC_L2, "nprobe=32", None),
    ("ivf_hnsw_flat", "IVF16_HNSW8,Flat", faiss.METRIC_L2, "nprobe=4,quantizer_efSearch=64", None),
    ("pca_flat", "PCA8,Flat", faiss.METRIC_L2, None, None),
    ("pcaw_flat", "PCAW8,Flat", faiss.METRIC_L2, None, None),
    ("opq_ivf_pq", "OPQ4_16,IVF16,PQ4", faiss.METRIC_L2, "nprobe=4", None),
    ("rr_flat", "RR16,Flat", faiss.METRIC_L2, None, None),
    ("l2norm_flat", "L2norm,Flat", faiss.METRIC_INNER_PRODUCT, None, None),
    ("hnsw_flat", "HNSW8", faiss.METRIC_L2, "efSearch=16", "efSearch=600"),
    ("hnsw_flat_ip", "HNSW8", faiss.METRIC_INNER_PRODUCT, "efSearch=16", "efSearch=600"),
    ("hnsw_sq8", "HNSW8_SQ8", faiss.METRIC_L2, "efSearch=16", "efSearch=600"),
    ("hnsw_pq", "HNSW8_PQ4", faiss.METRIC_L2, "efSearch=16", "efSearch=600"),
    ("pq_fs", "PQ8x4fs", faiss.METRIC_L2, None, None),
    ("pq_fs_ip", "PQ8x4fs", faiss.METRIC_INNER_PRODUCT, None, None),
    ("ivf_pq_fs", "IVF16,PQ8x4fs", faiss.METRIC_L2, "nprobe=4", None),
    ("ivf_pq_fsr", "IVF16,PQ8x4fsr", faiss.METRIC_L2, "nprobe=4", None),
    ("ivf_pq_fs_bbs64", "IVF16,PQ4x4fs_64", faiss.METRIC_L2, "nprobe=4", None),
    ("pq_refine_flat", "PQ8,RFlat", faiss.METRIC_L2, "k_factor_rf=4", None),
    ("ivf_pq_fs_rflat", "IVF16,PQ8x4fs,RFlat", faiss.METRIC_L2, "nprobe=4,k_factor_rf=4", None),
    ("idmap_ivf_sq8", "IDMap,IVF16,SQ8", faiss.METRIC_L2, "nprobe=4", None),
    # IVF lists in an OnDiskInvertedLists data file beside the index (relative name).
    ("ivf_flat_ondisk", "IVF16,Flat", faiss.METRIC_L2, "nprobe=4", None),
]


def to_ondisk(index, name):
    """Moves the lists of `index` to `<name>.ivfdata` (an OnDiskInvertedLists)."""
    old = os.getcwd()
    os.chdir(OUT)  # Faiss stores the data file's name as given: keep it relative
    try:
        data = name + ".ivfdata"
        if os.path.exists(data):
            os.remove(data)
        il = index.invlists
        od = faiss.OnDiskInvertedLists(index.nlist, index.code_size, data)
        for l in range(index.nlist):
            n = il.list_size(l)
            if n:
                od.add_entries(l, n, il.get_ids(l), il.get_codes(l))
        index.replace_invlists(od, True)
        od.this.disown()  # the index owns the lists now
        faiss.write_index(index, name + ".faiss")
    finally:
        os.chdir(old)


def main():
    os.makedirs(OUT, exist_ok=True)
    faiss.omp_set_num_threads(1)
    xb, xq = data()
    write_fvecs(os.path.join(OUT, "base.fvecs"), xb)
    write_fvecs(os.path.join(OUT, "queries.fvecs"), xq)
    expected = {"faiss_version": faiss.__version__, "k": K, "cases": {}}
    for name, desc, metric, saved_params, search_params in CASES:
        index = build(desc, metric, xb)
        if saved_params:
            faiss.ParameterSpace().set_index_parameters(index, saved_params)
        if name.endswith("_ondisk"):
            to_ondisk(index, name)
        else:
            faiss.write_index(index, os.path.join(OUT, name + ".faiss"))
        own_d, own_i = search(index, xq)
        ref = exact_equivalent(index)
        if ref is not None:
            if saved_params:
                faiss.ParameterSpace().set_index_parameters(ref, saved_params)
            ref.add(xb)
            ref_d, ref_i = search(ref, xq, search_params)
        else:
            ref_d, ref_i = search(index, xq, search_params)
        expected["cases"][name] = {
            "factory": desc,
            "metric": "ip" if metric == faiss.METRIC_INNER_PRODUCT else "l2",
            "params": search_params or "",
            "ids": ref_i.tolist(),
            "distances": [[float(v) for v in row] for row in ref_d],
            # Faiss's own results with the file's parameters (approximate for graphs
            # and fast scan): the test checks their overlap with vq's.
            "own_ids": own_i.tolist(),
        }
        print(f"{name:18} {desc:24} {os.path.getsize(os.path.join(OUT, name + '.faiss')):8} bytes",
              file=sys.stderr)
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=0)
        f.write("\n")


if __name__ == "__main__":
    main()
