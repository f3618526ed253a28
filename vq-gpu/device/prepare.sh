#!/usr/bin/env bash
# Builds what device/run.sh needs into .devcarry/ (git-ignored through
# .git/info/exclude), small enough for the device tool's 64 MiB: the `vq` binary, the
# vq-gpu test binary and the gpu_sweep example, release, stripped. Then, with the device tool:
#   run(command="bash vq-gpu/device/run.sh", carry=[".devcarry"], timeout_s=590)
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.devcarry/' .git/info/exclude 2>/dev/null || echo '/.devcarry/' >> .git/info/exclude
mkdir -p .devcarry
cargo build --release -p vq-bench
cp target/release/vq .devcarry/vq
cargo build --release -p vq-gpu --example gpu_sweep
cp target/release/examples/gpu_sweep .devcarry/gpu_sweep
t=$(cargo test --release -p vq-gpu --test gpu --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m.get("executable"): print(m["executable"])' | tail -1)
cp "$t" .devcarry/gpu-tests
strip .devcarry/vq .devcarry/gpu-tests .devcarry/gpu_sweep
du -sh .devcarry/*
