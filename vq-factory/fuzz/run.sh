#!/usr/bin/env bash
# Runs the fuzz targets of vq-factory, one after the other, and prints one line per target:
# the executions libFuzzer ran and the crashes it found.
#
#   fuzz/run.sh                     # every target
#   fuzz/run.sh params vecfiles     # the targets named
#
# Environment:
#   FUZZ_SECONDS       time per target (default 60)
#   FUZZ_ARGS          more libFuzzer options (e.g. "-jobs=4 -workers=4", "-max_len=8192")
#   CARGO_FUZZ_ARGS    more `cargo fuzz run` options (e.g. "--sanitizer=none")
#
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Each target's
# corpus grows in fuzz/corpus/<target>/ (seeded from fuzz/regressions/<target>/ and, for
# faiss_read, tests/faiss/fixtures/), its log goes to fuzz/logs/<target>.log, and crashes
# to fuzz/artifacts/<target>/ (crash-*, oom-*, timeout-*). The exit status is 1 when a
# target failed or left new artifacts.
set -euo pipefail

fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
crate_dir="$(dirname "$fuzz_dir")"
all=(parse params load faiss_read vecfiles)

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    targets=("${all[@]}")
fi
for t in "${targets[@]}"; do
    if [[ " ${all[*]} " != *" $t "* ]]; then
        echo "run.sh: unknown target '$t' (targets: ${all[*]})" >&2
        exit 2
    fi
done
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "run.sh: needs a nightly toolchain and cargo-fuzz (cargo install cargo-fuzz)" >&2
    exit 2
fi

seconds="${FUZZ_SECONDS:-60}"
read -r -a fuzz_args <<<"${FUZZ_ARGS:-}"
read -r -a cargo_fuzz_args <<<"${CARGO_FUZZ_ARGS:-}"
mkdir -p "$fuzz_dir/logs"

# crash-*, oom-* and timeout-* files in fuzz/artifacts/<target>/.
artifacts() {
    local dir="$fuzz_dir/artifacts/$1"
    if [ -d "$dir" ]; then
        find "$dir" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' \) |
            wc -l | tr -d ' '
    else
        echo 0
    fi
}

summary=()
failed=0
cd "$crate_dir"
for t in "${targets[@]}"; do
    corpus="$fuzz_dir/corpus/$t"
    seeds=("$fuzz_dir/regressions/$t")
    if [ "$t" = faiss_read ]; then
        seeds+=("$crate_dir/tests/faiss/fixtures")
    fi
    mkdir -p "$corpus"
    log="$fuzz_dir/logs/$t.log"
    before="$(artifacts "$t")"
    echo "== $t: ${seconds}s, log in $log" >&2
    status=0
    cargo +nightly fuzz run ${cargo_fuzz_args[@]+"${cargo_fuzz_args[@]}"} "$t" \
        "$corpus" "${seeds[@]}" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 \
        ${fuzz_args[@]+"${fuzz_args[@]}"} >"$log" 2>&1 || status=$?
    execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" |
        tail -n 1 | grep -o '[0-9]*$' || true)"
    after="$(artifacts "$t")"
    found=$((after - before))
    if [ "$status" -ne 0 ] || [ "$found" -gt 0 ]; then
        failed=1
    fi
    summary+=("$(printf '%-12s %14s %8s %10s %s' "$t" "${execs:-?}" "$found" "$after" \
        "$([ "$status" -eq 0 ] && echo ok || echo "exit $status")")")
done

printf '%-12s %14s %8s %10s %s\n' target executions crashes artifacts status
printf '%s\n' "${summary[@]}"
exit "$failed"
