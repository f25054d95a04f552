#!/usr/bin/env bash
# First audio over ttsd's OpenAI-compatible HTTP API, over its WebSocket API, and over Piper's own HTTP
# server (`python -m piper.http_server` from piper-tts, same voice file), at 1 and 4 concurrent clients, in
# the same window on the same machine. Prints the machine, then a Markdown table (scripts/bench_http.py).
# Usage: scripts/bench-http.sh [requests-per-client]   (needs target/release/ttsd: make release, and the
# Piper voice in .cache/voices: scripts/fetch-assets.sh; creates .cache/piper-venv with piper-tts[http])
set -euo pipefail
cd "$(dirname "$0")/.."
REQUESTS="${1:-6}"
BIN=target/release/ttsd
VOICE=.cache/voices/en_US-joe-medium.onnx
[ -x "$BIN" ] || { echo "build first: make release" >&2; exit 1; }
[ -f "$VOICE" ] || { echo "fetch the voice first: scripts/fetch-assets.sh" >&2; exit 1; }
VENV=.cache/piper-venv
if [ ! -x "$VENV/bin/python" ]; then python3 -m venv "$VENV"; fi
"$VENV/bin/python" -c 'import piper.http_server, flask' 2>/dev/null \
  || "$VENV/bin/pip" install --quiet --disable-pip-version-check 'piper-tts[http]==1.8.0'

PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true' EXIT
TMP=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

"$BIN" serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --voice en_US-joe-medium >"$TMP/ttsd.out" 2>"$TMP/ttsd.err" &
PIDS+=($!)
PIPER_PORT=$(free_port)
"$VENV/bin/python" -m piper.http_server --host 127.0.0.1 --port "$PIPER_PORT" -m "$VOICE" >"$TMP/piper.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 600); do grep -q '^ttsd ready:' "$TMP/ttsd.out" && break; sleep 0.1; done
TTSD=$(sed -n 's|.*stream=ws://\([^/]*\)/v1/stream.*|\1|p' "$TMP/ttsd.out")
[ -n "$TTSD" ] || { echo "ttsd did not start:" >&2; tail "$TMP/ttsd.err" >&2; exit 1; }
for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$PIPER_PORT/voices" >/dev/null && break; sleep 0.1; done

echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) vCPUs; ttsd engine threads: $(nproc)"
python3 scripts/bench_http.py --ttsd "$TTSD" --piper "127.0.0.1:$PIPER_PORT" --requests "$REQUESTS"
