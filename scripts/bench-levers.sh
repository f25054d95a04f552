#!/usr/bin/env bash
# The 1-session first-audio levers measured alternating: everything on, the quiet set off
# (engine.onnx_quiet_intra_threads = 1) and first chunks' warm arena off, each against a fresh release
# `ttsd serve`, in an order that rotates every round so that no setting always runs first.
# Usage: scripts/bench-levers.sh [rounds] [seconds-per-level]     (defaults 3 and 60)
# Output: OUT/<setting>-<round>.json (`ttsd bench --json`), and a line per level on stdout;
# OUT defaults to bench-results/levers-alternating.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"; SECS="${2:-60}"
BIN=target/release/ttsd
OUT=${OUT:-bench-results/levers-alternating}
[ -f .cache/voices/en_US-joe-medium.onnx ] || ./scripts/fetch-assets.sh
[ -x "$BIN" ] || cargo build --release --locked -p ttsd
mkdir -p "$OUT"
TMP=$(mktemp -d)
PID=
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$TMP"' EXIT

# level NAME ROUND [ENV...]: one `ttsd bench` level of 1 session against a fresh server with ENV set.
level() {
  local name="$1" round="$2"; shift 2
  env "$@" "$BIN" serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 >"$TMP/out" 2>"$TMP/err" &
  PID=$!
  for _ in $(seq 1 900); do grep -qs '^ttsd ready:' "$TMP/out" && break; sleep 0.1; done
  local line; line=$(grep '^ttsd ready:' "$TMP/out") || { tail "$TMP/err"; exit 1; }
  local url; url=$(sed -n 's|.*stream=\(ws://[^/]*\)/v1/stream.*|\1|p' <<<"$line")
  "$BIN" bench --url "$url" --duration-seconds "$SECS" --sessions 1 --json "$OUT/$name-$round.json" >/dev/null
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
  python3 - "$OUT/$name-$round.json" "$name" "$round" <<'PY'
import json, sys
level = json.load(open(sys.argv[1]))["levels"][0]
fa = level["first_audio_ms"]
print(f"round {sys.argv[3]}, {sys.argv[2]}: {level['utterances']} utterances, first audio p50 / p95 "
      f"{fa['p50']:.1f} / {fa['p95']:.1f} ms, underruns {level['underruns']}")
PY
}

echo "== $(date -u +%FT%TZ), $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) vCPUs, $(git rev-parse --short HEAD)"
settings=(all no-quiet no-warm)
for round in $(seq 1 "$ROUNDS"); do
  for i in 0 1 2; do
    name=${settings[$(( (i + round - 1) % 3 ))]}
    case $name in
      all) level all "$round" ;;
      no-quiet) level no-quiet "$round" TTSD_ENGINE__ONNX_QUIET_INTRA_THREADS=1 ;;
      no-warm) level no-warm "$round" TTSD_ENGINE__FIRST_CHUNK_WARM_ARENA=false ;;
    esac
  done
done
