"""Writes tests/faiss/links_*.txt: graphs that Faiss builds by adding seeded vectors one at a
time on one thread (so in order), with each vector's level and every list's links.
`tests/faiss_links.rs` rebuilds them with vq (`add_with_levels`, one thread, exact build)
and compares them link for link.

    python make_links_fixture.py   # faiss-cpu and numpy (pip install faiss-cpu numpy)
"""
import os

import faiss
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
N, D = 400, 12


def fixture(name, m, ef_construction, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, D)).astype(np.float32)
    faiss.omp_set_num_threads(1)
    index = faiss.IndexHNSWFlat(D, m)
    index.hnsw.efConstruction = ef_construction
    for i in range(N):
        index.add(x[i : i + 1])
    h = index.hnsw
    levels = faiss.vector_to_array(h.levels) - 1
    nb = faiss.vector_to_array(h.neighbors)
    off = faiss.vector_to_array(h.offsets).astype(np.int64)
    cum = faiss.vector_to_array(h.cum_nneighbor_per_level).astype(np.int64)
    with open(os.path.join(HERE, f"links_{name}.txt"), "w") as f:
        f.write(f"# faiss {faiss.__version__}: IndexHNSWFlat({D}, {m}), efConstruction {ef_construction}, "
                f"{N} seeded vectors added one at a time, one thread\n")
        f.write(f"m {m} efc {ef_construction} d {D} n {N} entry {h.entry_point}\n")
        for row in x:  # the bits of each f32, in hex
            f.write("v " + " ".join(f"{int(b):08x}" for b in row.view(np.uint32)) + "\n")
        for i in range(N):
            f.write(f"l {int(levels[i])}\n")
            for lv in range(int(levels[i]) + 1):
                a = nb[off[i] + cum[lv] : off[i] + cum[lv + 1]]
                f.write(" ".join(str(int(v)) for v in sorted(a[a >= 0])) + "\n")


fixture("m8", 8, 40, 7)
fixture("m32", 32, 40, 8)
