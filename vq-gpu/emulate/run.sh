#!/usr/bin/env bash
# Runs vq-gpu's kernels (src/kernels.cu) on the CPU under emulate.h and checks them
# against plain loops: the three selections (radix, warp lists, shared buffer) (all modes, ties, carried rows, padding, k = 3000),
# bitonic sort (shared and global paths), range filtering, the IVF-Flat and IVF-PQ scans.
# Needs a C++20 compiler (g++ 11+ or clang 14+); no GPU, no CUDA. Not part of CI (the
# device tests run the same kernels on a GPU): run it after changing kernels.cu.
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Dynamic shared memory becomes one static buffer under each kernel's own name.
sed -E 's/extern __shared__ ([a-z0-9_ ]+) ([a-z_]+)\[\];/\1* \2 = (\1*)vq_dyn_shared;/' \
    ../src/kernels.cu > "$tmp/kernels_emu.cu"
"${CXX:-g++}" -std=c++20 -O1 -pthread -Wall -Wno-unused-function -Wno-unknown-pragmas -I. -I"$tmp" test.cpp -o "$tmp/test"
# With CUDA_CLANG set to a clang (e.g. `python -m ziglang clang`), the file is also
# checked as CUDA C for sm_90 (syntax and types; clang_prelude.h stands in for NVRTC's
# built-ins).
if [ -n "${CUDA_CLANG:-}" ]; then
    $CUDA_CLANG -x cuda --cuda-gpu-arch=sm_90 -nocudainc -nocudalib --cuda-device-only \
        -fsyntax-only -Wall -Wextra -Wno-unused-parameter -include clang_prelude.h ../src/kernels.cu
    echo "kernels.cu checked as CUDA C"
fi
"$tmp/test"
