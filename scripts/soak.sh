#!/usr/bin/env bash
# Soak: a release `ttsd serve` (default config, Piper and espeak-ng voices) under 16 mixed sessions for a
# stated time, sampled every 10 s (RSS, open fds, threads, sessions, errors, underruns), then first-half vs
# second-half means. Fails when the server dies, fds or threads (and RSS, in runs of 30 minutes or more)
# grow by more than 5 % between the halves, an utterance fails or a client sees anything unexpected.
# Usage: scripts/soak.sh [seconds] [out-dir]    (default 3600 s and bench-results; 120 s is a quick check)
#   SOAK_SESSIONS=16 SOAK_SEED=1 TTSD_BIN=target/release/ttsd (built here when missing)
# Output: OUT/soak-<seconds>s.csv (one row per sample), OUT/soak-<seconds>s.txt (summary),
#         OUT/soak-<seconds>s-server.log (the server's log).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-3600}"; OUT="${2:-bench-results}"
SESSIONS="${SOAK_SESSIONS:-16}"; SEED="${SOAK_SEED:-1}"
BIN="${TTSD_BIN:-target/release/ttsd}"
VENV="${TEST_VENV:-.cache/test-venv}"
[ -f .cache/voices/en_US-joe-medium.onnx ] || ./scripts/fetch-assets.sh
[ -x "$BIN" ] || cargo build --release --locked -p ttsd
"$VENV/bin/python" -c 'import websockets' 2>/dev/null || ./scripts/install-deps.sh test
mkdir -p "$OUT"
NAME="$OUT/soak-${SECS}s"
TMP=$(mktemp -d)
SERVER=""
cleanup() {
  if [ -n "$SERVER" ] && kill -0 "$SERVER" 2>/dev/null; then
    kill -TERM "$SERVER" 2>/dev/null || true
    for _ in $(seq 1 300); do kill -0 "$SERVER" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$BIN" serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 >"$TMP/out" 2>"$NAME-server.log" &
SERVER=$!
for _ in $(seq 1 1200); do grep -qs '^ttsd ready:' "$TMP/out" && break; kill -0 "$SERVER" || break; sleep 0.1; done
line=$(grep '^ttsd ready:' "$TMP/out") || { echo "soak: the server did not become ready" >&2; tail "$NAME-server.log" >&2; exit 1; }
URL=$(sed -n 's|.*stream=\(ws://[^/]*\)/v1/stream.*|\1|p' <<<"$line")
ADMIN=$(sed -n 's|.*admin=\(http://[^ ]*\).*|\1|p' <<<"$line")

{
  echo "soak of $(date -u +%FT%TZ): ttsd $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates || echo '+changes'),"
  echo "  $BIN ($("$BIN" --version 2>/dev/null || echo unknown)), $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) vCPUs,"
  echo "  $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), load average at start $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "  server: $BIN serve, default config, default voice en_US-joe-medium (Piper) + espeak-en-us; $URL, $ADMIN"
} | tee "$NAME.txt"

status=0
timeout --kill-after=30 $((SECS + 300)) "$VENV/bin/python" scripts/soak.py --url "$URL" --admin "$ADMIN" \
  --pid "$SERVER" --seconds "$SECS" --sessions "$SESSIONS" --seed "$SEED" --csv "$NAME.csv" \
  --summary "$NAME.txt" || status=$?
warn=$(grep -c '"level":"WARN"\|WARN' "$NAME-server.log" || true)
err=$(grep -c '"level":"ERROR"\| ERROR ' "$NAME-server.log" || true)
echo "server log: $warn WARN lines, $err ERROR lines ($NAME-server.log)" | tee -a "$NAME.txt"
if ! kill -0 "$SERVER" 2>/dev/null; then
  echo "soak: FAIL, the server died" | tee -a "$NAME.txt"
  exit 1
fi
exit "$status"
