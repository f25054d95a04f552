#!/usr/bin/env bash
# A/B: the same ttsd bench load against servers configured differently, reporting the server's CPU seconds
# (utime + stime from /proc) per second of audio delivered:
#   minimal  server.metrics = "minimal" (session counters only)
#   full     every metric (the default), tracing and profiling off
#   traced   every metric and OpenTelemetry traces at 100 % sampling, exported to a local OTLP receiver
# Usage: scripts/bench-overhead.sh [sessions] [seconds] [voice] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
SESSIONS="${1:-16}"; SECONDS_PER_RUN="${2:-20}"; VOICE="${3:-espeak-en-us}"; ROUNDS="${4:-2}"
cargo build --release --locked -q -p tts-test-support --example otlp_sink
SINK_OUT=$(mktemp)
target/release/examples/otlp_sink --seconds 3600 >"$SINK_OUT" 2>/dev/null &
SINK_PID=$!
trap 'kill $SINK_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do grep -q '^otlp sink:' "$SINK_OUT" && break; sleep 0.1; done
SINK=$(sed -n 's/^otlp sink: //p' "$SINK_OUT")
BIN=target/release/ttsd
TICKS=$(getconf CLK_TCK)
run() {
  local level="$1" cfg out pid
  cfg=$(mktemp); out=$(mktemp)
  case "$level" in
    minimal) printf '[server]\nmetrics = "minimal"\n' > "$cfg" ;;
    full) printf '[server]\nmetrics = "full"\n' > "$cfg" ;;
    traced) printf '[server]\nmetrics = "full"\n[tracing]\notlp_endpoint = "%s"\nsample_ratio = 1.0\n' "$SINK" > "$cfg" ;;
  esac
  "$BIN" serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --voice "$VOICE" --config "$cfg" >"$out" 2>/dev/null &
  pid=$!
  for _ in $(seq 1 300); do grep -q '^ttsd ready:' "$out" && break; sleep 0.1; done
  local url; url=$(sed -n 's|^ttsd ready: stream=\(ws://[^/]*\)/v1/stream.*|\1|p' "$out")
  local before; before=$(awk '{print $14+$15}' /proc/$pid/stat)
  "$BIN" bench --url "$url" --sessions "$SESSIONS" --duration-seconds "$SECONDS_PER_RUN" --warmup-seconds 0 \
    --barge-in-every 0 --json "$out.json" >/dev/null 2>&1
  local after; after=$(awk '{print $14+$15}' /proc/$pid/stat)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  python3 - "$level" "$before" "$after" "$TICKS" "$out.json" <<'PY'
import json, sys
level, before, after, ticks, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
level_report = json.load(open(path))["levels"][0]
cpu = (after - before) / ticks
audio = level_report["audio_seconds"]
print(f"{level:8} cpu {cpu:7.2f} s  audio {audio:8.1f} s  cpu per audio second {1000 * cpu / audio:6.2f} ms  "
      f"first audio p95 {level_report['first_audio_ms']['p95']:.1f} ms")
PY
  rm -f "$cfg" "$out" "$out.json"
}
echo "A/B instrumentation overhead: $SESSIONS sessions x ${SECONDS_PER_RUN}s, voice $VOICE, $(nproc) cores"
for _ in $(seq 1 "$ROUNDS"); do run minimal; run full; run traced; done
