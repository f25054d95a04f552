#!/usr/bin/env bash
# Quality of the default Piper voice as ttsd streams it: word error rate (PocketSphinx, whose US English
# model ships inside its PyPI wheel) of the streamed decoder against the whole graph, and the SNR between
# them, with deterministic noise (engine.piper_noise_scale = 0). Optionally (--int8) a dynamically quantised
# copy of the voice, with its real-time factor next to the fp32 voice's.
#   1. a git-ignored venv (.cache/quality-venv, scripts/quality-requirements.txt);
#   2. .cache/quality-voices: the shipped voice, `<id>-whole` (the same graph, the decoder's first
#      convolution renamed so that ttsd cannot split it and decodes whole chunks) and `<id>-int8`;
#   3. a release `ttsd serve` on loopback over that directory speaks 24 sentences with each voice over
#      /v1/stream; scripts/quality.py transcribes and compares.
# Usage: scripts/quality-check.sh [--int8] [out-dir]     Output: OUT/quality.txt, OUT/quality.json
set -euo pipefail
cd "$(dirname "$0")/.."
INT8=""
if [ "${1:-}" = "--int8" ]; then INT8="--int8"; shift; fi
OUT="${1:-bench-results}"
BIN="${TTSD_BIN:-target/release/ttsd}"
VENV=.cache/quality-venv
VOICES=.cache/quality-voices
VOICE=en_US-joe-medium
[ -f ".cache/voices/$VOICE.onnx" ] || ./scripts/fetch-assets.sh
[ -x "$BIN" ] || cargo build --release --locked -p ttsd
if ! cmp -s scripts/quality-requirements.txt "$VENV/.requirements" 2>/dev/null; then
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r scripts/quality-requirements.txt
  cp scripts/quality-requirements.txt "$VENV/.requirements"
fi
"$VENV/bin/python" scripts/quality.py prepare .cache/voices "$VOICES" --voice "$VOICE" $INT8
mkdir -p "$OUT"
TMP=$(mktemp -d)
SERVER=""
cleanup() {
  [ -z "$SERVER" ] || kill "$SERVER" 2>/dev/null || true
  [ -z "$SERVER" ] || wait "$SERVER" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

TTSD_ENGINE__PIPER_NOISE_SCALE=0 "$BIN" serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
  --voices-dir "$VOICES" >"$TMP/out" 2>"$TMP/err" &
SERVER=$!
for _ in $(seq 1 1200); do grep -qs '^ttsd ready:' "$TMP/out" && break; kill -0 "$SERVER" || break; sleep 0.1; done
line=$(grep '^ttsd ready:' "$TMP/out") || { echo "quality: the server did not become ready" >&2; tail "$TMP/err" >&2; exit 1; }
URL=$(sed -n 's|.*stream=\(ws://[^/]*\)/v1/stream.*|\1|p' <<<"$line")
ADMIN=$(sed -n 's|.*admin=\(http://[^ ]*\).*|\1|p' <<<"$line")
voices="$VOICE-whole,$VOICE"
[ -z "$INT8" ] || voices="$voices,$VOICE-int8"

{
  echo "quality check of $(date -u +%FT%TZ): ttsd $(git rev-parse --short HEAD), $(lscpu | sed -n 's/^Model name: *//p'),"
  echo "  $(nproc) vCPUs, load average $(cut -d' ' -f1-3 /proc/loadavg); engine.piper_noise_scale = 0"
} | tee "$OUT/quality.txt"
"$VENV/bin/python" scripts/quality.py run --url "$URL" --admin "$ADMIN" --voices "$voices" --out "$OUT/quality"
curl -s "$ADMIN/metrics" | grep '^tts_engine_decoder_mode' | tee -a "$OUT/quality.txt"
if [ -n "$INT8" ]; then
  "$VENV/bin/python" scripts/quality.py rtf "$VOICES" --voice "$VOICE" | tee -a "$OUT/quality.txt"
fi
