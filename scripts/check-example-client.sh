#!/usr/bin/env bash
# Runs the README's Python example against a real `ttsd serve` and checks the WAV it writes.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.cache/venv
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import websockets" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "websockets==15.*"
fi
BIN="${BIN:-target/debug/ttsd}"
OUT=$(mktemp -d)
"$BIN" serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 >"$OUT/stdout" 2>"$OUT/stderr" &
PID=$!
trap 'kill $PID 2>/dev/null || true; rm -rf "$OUT"' EXIT
for _ in $(seq 1 300); do
  grep -q "^ttsd ready:" "$OUT/stdout" && break
  kill -0 $PID 2>/dev/null || { cat "$OUT/stderr"; exit 1; }
  sleep 0.1
done
URL=$(sed -n 's/^ttsd ready: stream=\([^ ]*\).*/\1/p' "$OUT/stdout")
[ -n "$URL" ] || { echo "ttsd did not become ready"; cat "$OUT/stderr"; exit 1; }
timeout 60 "$VENV/bin/python" scripts/example_client.py "$URL" "$OUT/hello.wav"
"$VENV/bin/python" - "$OUT/hello.wav" <<'PY'
import sys, wave, struct, math
w = wave.open(sys.argv[1])
assert w.getframerate() == 48000 and w.getnchannels() == 1 and w.getsampwidth() == 2
n = w.getnframes(); samples = struct.unpack(f"<{n}h", w.readframes(n))
rms = math.sqrt(sum(s * s for s in samples) / max(n, 1))
seconds = n / 48000
assert 2.0 < seconds < 8.0, f"{seconds:.2f} s of audio"
assert rms > 500, f"rms {rms:.0f}: not speech"
print(f"example client: 1 passed, 0 failed ({seconds:.2f} s of speech, rms {rms:.0f})")
PY
