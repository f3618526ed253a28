#!/usr/bin/env bash
# vq-gpu's checks on a GPU machine, as one run (the device tool's machines have no Rust
# toolchain: binaries are built here first, see prepare.sh). Prints the device tests'
# results and JSON lines for: exact k = 10 search of 10,000 queries over 1,000,000 × 128
# (vq GPU f32 and f16, PyTorch; k = 100 and 1000 too), k-means 1M × 128 with k = 4096 and 20 iterations (vq GPU,
# PyTorch), IVF4096,PQ32 search on the GPU (nprobe 16, 64), the SGEMM ceiling and tile
# settings (examples/gpu_sweep.rs). Everything under $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
bin=.devcarry
OUT=${OUT:-/tmp/vq-gpu-out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
# cudarc opens libnvrtc.so / libcublas.so (or their .12 names): point unversioned names
# at whatever CUDA this machine has (pip's nvidia-* wheels or the toolkit).
libs=/tmp/vq-cuda-libs
mkdir -p $libs
for name in nvrtc cublas cublasLt; do
    f=$(python3 - "$name" <<'PY'
import glob, os, site, sys
name = sys.argv[1]
roots = site.getsitepackages() + ["/usr/local/cuda/lib64", "/usr/lib/x86_64-linux-gnu"]
hits = []
for r in roots:
    hits += glob.glob(os.path.join(r, "**", f"lib{name}.so*"), recursive=True)
hits = [h for h in hits if not h.endswith(".alt")]
print(sorted(hits, key=len)[0] if hits else "")
PY
)
    [ -n "$f" ] && ln -sf "$f" "$libs/lib$name.so" && echo "lib$name.so -> $f"
    [ -n "$f" ] && export LD_LIBRARY_PATH="$(dirname "$f"):$libs:${LD_LIBRARY_PATH:-}"
done
export LD_LIBRARY_PATH="$libs:${LD_LIBRARY_PATH:-}"

echo "== device tests"
timeout 240 $bin/gpu-tests --ignored --test-threads 1 2>&1 | tee "$OUT/tests.txt"

echo "== data"
data=/tmp/syn1m
timeout 120 $bin/vq generate --data synthetic:1000000,128,10000 --out $data --gt-k 10 >/dev/null

echo "== flat, k-means, IVF-PQ on the GPU"
{
    timeout 120 $bin/vq bench --data $data --index Flat --gpu -k 10 --repeat 3 --quiet --json
    timeout 120 $bin/vq bench --data $data --index Flat --gpu -k 100 --repeat 3 --quiet --json --case flat-k100
    timeout 120 $bin/vq bench --data $data --index Flat --gpu -k 1000 --repeat 3 --quiet --json --case flat-k1000
    timeout 200 $bin/vq kmeans --data $data --k 4096 --niter 20 --gpu --json
    timeout 200 $bin/vq bench --data $data --index IVF4096,PQ32 --gpu -k 10 --params nprobe=16 --params nprobe=64 --quiet --json
} 2>&1 | tee "$OUT/vq.jsonl"

echo "== SGEMM ceiling, flat tile settings and storages"
timeout 150 $bin/gpu_sweep $data 2>&1 | tee "$OUT/sweep.jsonl"

echo "== PyTorch on the same data"
{
    PYTHONUNBUFFERED=1 timeout 200 python3 vq-gpu/device/torch_baseline.py $data
    for k in 100 1000; do
        PYTHONUNBUFFERED=1 timeout 100 python3 vq-gpu/device/torch_baseline.py $data --k $k --kmeans-k 0
    done
} 2>&1 | tee "$OUT/torch.jsonl"
