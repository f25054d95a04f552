#!/usr/bin/env bash
# Coverage-guided fuzzing of ttsd's parsers on the pinned stable toolchain (docs/robustness.md, "Fuzzing").
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Builds fuzz/ (libFuzzer through libfuzzer-sys, with the same SanitizerCoverage flags cargo-fuzz passes,
# minus the nightly-only -Zsanitizer), then runs each target for SECONDS_PER_TARGET (default 600) over its
# committed seeds in fuzz/corpus/<target>/ plus a working corpus in fuzz/corpus-work/<target>/ (kept between
# runs, git-ignored). Prints executions, coverage and crashes per target; exits non-zero when any target
# crashed (the input is in fuzz/artifacts/<target>/). JOBS=2 runs two targets at a time. BUILD_ONLY=1 stops
# after the build. Needs a C++ compiler (libFuzzer is built from the crate's bundled source) and, for the
# targets that link tts-core, libespeak-ng-dev; scripts/install-deps.sh run installs both.
set -euo pipefail

cd "$(dirname "$0")/../fuzz"
SECONDS_PER_TARGET="${1:-600}"
shift || true
ALL_TARGETS=(client_message text worker_request config wyoming_event)
if [ "$#" -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL_TARGETS[@]}"); fi
JOBS="${JOBS:-1}"
HOST="$(rustc -vV | sed -n 's/^host: //p')"

if ! command -v c++ >/dev/null; then
    echo "fuzz.sh: a C++ compiler is needed to build libFuzzer (apt-get install g++)." >&2
    exit 2
fi

# The flags cargo-fuzz uses (inline 8-bit counters, PC table, comparison tracing for libFuzzer's value
# profile and CMP dictionary), all stable codegen options. An explicit --target keeps them off build
# scripts and proc macros, which run on the host and must not be instrumented.
export RUSTFLAGS="${RUSTFLAGS:-} -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cllvm-args=-sanitizer-coverage-stack-depth \
--cfg fuzzing -Cforce-frame-pointers"
echo "fuzz.sh: building ${TARGETS[*]} for $HOST"
BINS=()
for target in "${TARGETS[@]}"; do BINS+=(--bin "$target"); done
cargo build --locked --release --target "$HOST" "${BINS[@]}"
[ -n "${BUILD_ONLY:-}" ] && exit 0

mkdir -p logs
run_one() {
    local target="$1" log="logs/$1.log"
    mkdir -p "corpus-work/$target" "artifacts/$target" "corpus/$target"
    # -rss_limit_mb and -timeout catch memory blow-ups and hangs as crashes; -max_len lets inputs grow
    # past the messages' own size limits.
    "target/$HOST/release/$target" "corpus-work/$target" "corpus/$target" \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -use_value_profile=1 -print_final_stats=1 -artifact_prefix="artifacts/$target/" \
        >"$log" 2>&1
}

summarise() {
    local target="$1" rc="$2" log="logs/$1.log"
    local execs cov ft corpus crash
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
    cov="$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)"
    ft="$(grep -o 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)"
    corpus="$(grep -o 'corp: [0-9]*/[0-9a-zA-Z]*' "$log" | tail -1 | cut -d' ' -f2)"
    crash="$(ls "artifacts/$target" 2>/dev/null | wc -l)"
    printf '%-16s rc=%-3s execs=%-12s edges(cov)=%-6s features=%-7s corpus=%-12s crash-files=%s\n' \
        "$target" "$rc" "${execs:-?}" "${cov:-?}" "${ft:-?}" "${corpus:-?}" "$crash"
}

declare -A RCS=()
pending=("${TARGETS[@]}")
while [ "${#pending[@]}" -gt 0 ]; do
    batch=("${pending[@]:0:$JOBS}")
    pending=("${pending[@]:$JOBS}")
    declare -A PIDS=()
    for target in "${batch[@]}"; do
        echo "fuzz.sh: $target for ${SECONDS_PER_TARGET}s (log fuzz/logs/$target.log)"
        run_one "$target" &
        PIDS[$target]=$!
    done
    for target in "${batch[@]}"; do
        if wait "${PIDS[$target]}"; then RCS[$target]=0; else RCS[$target]=$?; fi
    done
    unset PIDS
done

echo "fuzz.sh: results, ${SECONDS_PER_TARGET}s per target"
failed=0
for target in "${TARGETS[@]}"; do
    summarise "$target" "${RCS[$target]}"
    if [ "${RCS[$target]}" -ne 0 ]; then
        failed=1
        grep -m1 -E 'panicked at|ERROR: libFuzzer' "logs/$target.log" || true
    fi
done
exit "$failed"
