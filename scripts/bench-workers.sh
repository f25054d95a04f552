#!/usr/bin/env bash
# The same ttsd bench load against (a) one in-process server with 2 engine threads and (b) a gateway with
# two `ttsd worker` processes of 1 engine thread each (same engine threads in total), over loopback.
# Prints both bench tables, then the gateway's own measure of the gRPC hop (tts_worker_hop_seconds:
# chunk sent -> first audio back, minus the worker's own share) as p50/p95/p99 from its histogram.
# Usage: scripts/bench-workers.sh [voice] [levels] [seconds]     (needs target/release/ttsd: make release)
set -euo pipefail
cd "$(dirname "$0")/.."
VOICE="${1:-espeak-en-us}"; LEVELS="${2:-1,4,16}"; SECONDS_PER_LEVEL="${3:-20}"
BIN=target/release/ttsd
[ -x "$BIN" ] || { echo "build first: make release" >&2; exit 1; }
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true' EXIT
TMP=$(mktemp -d)

# start NAME ARGS...: runs the binary, waits for its `ttsd ready:` line, prints that line.
start() {
  local name="$1"; shift
  "$BIN" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
  PIDS+=($!)
  for _ in $(seq 1 600); do grep -q '^ttsd ready:' "$TMP/$name.out" && break; sleep 0.1; done
  grep '^ttsd ready:' "$TMP/$name.out" || { echo "$name did not start:" >&2; tail "$TMP/$name.err" >&2; exit 1; }
}
bench() {
  "$BIN" bench --url "$1" --voice "$VOICE" --sessions "$LEVELS" --duration-seconds "$SECONDS_PER_LEVEL"
}
stop_all() { kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; PIDS=(); }

echo "== in-process: ttsd serve, 2 engine threads"
line=$(start local serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --voice "$VOICE" --threads 2 --max-sessions 200)
bench "$(sed -n 's|.*stream=\(ws://[^/]*\)/v1/stream.*|\1|p' <<<"$line")"
stop_all

echo "== remote: gateway + 2 workers (1 engine thread each), static --workers"
w1=$(start w1 worker --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --name w1 --voice "$VOICE" --threads 1 --max-sessions 200)
w2=$(start w2 worker --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --name w2 --voice "$VOICE" --threads 1 --max-sessions 200)
addr() { sed -n 's|.*grpc=\([^ ]*\).*|\1|p' <<<"$1"; }
line=$(start gateway serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --voice "$VOICE" --max-sessions 200 \
  --workers "$(addr "$w1"),$(addr "$w2")")
admin=$(sed -n 's|.*admin=\(http://[^ ]*\).*|\1|p' <<<"$line")
for _ in $(seq 1 100); do curl -sf "$admin/readiness" >/dev/null && break; sleep 0.1; done
bench "$(sed -n 's|.*stream=\(ws://[^/]*\)/v1/stream.*|\1|p' <<<"$line")"
curl -s "$admin/metrics" | python3 -c '
import sys, collections
buckets = collections.defaultdict(dict)
for line in sys.stdin:
    if line.startswith("tts_worker_hop_seconds_bucket"):
        labels, value = line.rsplit(" ", 1)
        worker = labels.split("worker=\"")[1].split("\"")[0]
        le = labels.split("le=\"")[1].split("\"")[0]
        buckets[worker][float("inf") if le == "+Inf" else float(le)] = float(value)
def quantile(q, b):
    bounds = sorted(b); total = b[bounds[-1]]; rank = q * total; lower, below = 0.0, 0.0
    for bound in bounds:
        if b[bound] >= rank:
            if bound == float("inf"): return lower
            return lower + (bound - lower) * (rank - below) / max(b[bound] - below, 1e-9)
        lower, below = bound, b[bound]
inf = float("inf")
for worker, b in sorted(buckets.items()):
    print(f"gRPC hop {worker}: {int(b[inf])} chunks, p50 {quantile(0.5, b)*1000:.2f} ms, "
          f"p95 {quantile(0.95, b)*1000:.2f} ms, p99 {quantile(0.99, b)*1000:.2f} ms (histogram_quantile)")
'
