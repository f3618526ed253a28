"""Faiss and hnswlib HNSW, built once and searched search-only, as the README's HNSW table.

Needs `pip install faiss-cpu hnswlib numpy` (a throw-away venv; nothing here is a
dependency of vq). DATA is a folder with `*base.fvecs`, `*query.fvecs` and
`*groundtruth.ivecs`, as for `vq build --data`.

    python hnsw_peers.py build DATA M EFC PREFIX [--threads 2] [--ip]
        builds Faiss `IndexHNSWFlat` and hnswlib indexes, prints each `add` time,
        writes PREFIX.faiss and PREFIX.hnswlib
    python hnsw_peers.py search PREFIX.faiss|PREFIX.hnswlib DATA THREADS "16 32 64" [--ip]
        one line per efSearch: library, efSearch, 10-R@10, QPS of the best of up to 20
        repetitions (at least 3, and at least 1 s in all), the rule vq's side follows
        (`vq search --repeat`)
"""
import glob
import sys
import time

import numpy as np


def fvecs(path):
    a = np.fromfile(path, dtype="int32")
    return a.reshape(-1, a[0] + 1)[:, 1:].copy().view("float32")


def ivecs(path):
    a = np.fromfile(path, dtype="int32")
    return a.reshape(-1, a[0] + 1)[:, 1:]


def one(data, pattern):
    files = glob.glob(f"{data}/*{pattern}")
    if len(files) != 1:
        sys.exit(f"{data}: expected one *{pattern}, found {files}")
    return files[0]


def build(data, m, efc, prefix, threads, ip):
    import faiss
    import hnswlib

    xb = fvecs(one(data, "base.fvecs"))
    n, d = xb.shape
    faiss.omp_set_num_threads(threads)
    metric = faiss.METRIC_INNER_PRODUCT if ip else faiss.METRIC_L2
    index = faiss.IndexHNSWFlat(d, m, metric)
    index.hnsw.efConstruction = efc
    t = time.perf_counter()
    index.add(xb)
    print("faiss build", time.perf_counter() - t)
    faiss.write_index(index, prefix + ".faiss")
    h = hnswlib.Index(space="ip" if ip else "l2", dim=d)
    h.init_index(max_elements=n, M=m, ef_construction=efc, random_seed=100)
    t = time.perf_counter()
    h.add_items(xb, np.arange(n), num_threads=threads)
    print("hnswlib build", time.perf_counter() - t)
    h.save_index(prefix + ".hnswlib")


def search(path, data, threads, efs, ip):
    xq = fvecs(one(data, "query.fvecs"))
    gt = ivecs(one(data, "groundtruth.ivecs"))[:, :10]
    if path.endswith(".faiss"):
        import faiss

        lib = "faiss"
        faiss.omp_set_num_threads(threads)
        index = faiss.read_index(path)

        def set_ef(e):
            index.hnsw.efSearch = e

        def run():
            return index.search(xq, 10)[1]
    else:
        import hnswlib

        lib = "hnswlib"
        index = hnswlib.Index(space="ip" if ip else "l2", dim=xq.shape[1])
        index.load_index(path)

        def set_ef(e):
            index.set_ef(e)

        def run():
            return index.knn_query(xq, k=10, num_threads=threads)[0]

    for e in efs:
        set_ef(e)
        ids = run()
        best, n, spent = float("inf"), 0, 0.0
        while n < 20 and not (n >= 3 and spent >= 1.0):
            t = time.perf_counter()
            run()
            dt = time.perf_counter() - t
            best, n, spent = min(best, dt), n + 1, spent + dt
        recall = np.mean([len(set(ids[i]) & set(gt[i])) / 10 for i in range(len(xq))])
        print(lib, e, round(float(recall), 4), round(len(xq) / best))


def main(argv):
    ip = "--ip" in argv
    argv = [a for a in argv if a != "--ip"]
    threads = 2
    if "--threads" in argv:
        i = argv.index("--threads")
        threads = int(argv[i + 1])
        del argv[i : i + 2]
    if len(argv) == 5 and argv[0] == "build":
        build(argv[1], int(argv[2]), int(argv[3]), argv[4], threads, ip)
    elif len(argv) == 5 and argv[0] == "search":
        search(argv[1], argv[2], int(argv[3]), [int(e) for e in argv[4].split()], ip)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
