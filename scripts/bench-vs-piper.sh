#!/usr/bin/env bash
# Side by side in one window: Piper's own Python library (piper-tts) against ttsd, same voice file, same
# four sentences (fox, hold, obs, para), then the ratios the Piper targets are stated in.
#   1. piper-tts in a git-ignored venv (.cache/bench-venv): first chunk and total, default and 1 ORT thread.
#   2. ttsd serve (release) + `ttsd bench` at 1, 4 and 16 sessions, then 16 again (RSS after each run).
#      The 1-session level runs three times as long as the others (about 20 utterances at 20 s a level,
#      as many as the library's first chunks), so its p95 is not just its slowest utterance.
#   3. Each lever on its own at 1 session (as long as the 1-session level): early first chunk off, spare
#      cores off, first chunks' warm arena off, and (when BASELINE_BIN names a ttsd built before the
#      streaming decoder) neither lever nor streaming decoder.
#   4. Each memory lever on its own (MEMORY_LEVERS=0 skips it): RSS after warm-up and after two 16-session
#      runs with ORT's CPU arena on, with prepacked weights not shared, with first chunks' warm arena off,
#      and without the quiet sessions.
#   5. With CAPACITY_LEVELS="22 23" (about 2 minutes a level): for each level, Python ORT's 1-thread RTF
#      right before and right after 60 s of `ttsd bench` at that many sessions against a fresh server, so
#      the capacity target (0.9 x cores / RTF) comes from the same minutes as the underruns it is held to,
#      on a machine whose speed drifts; and the server's CPU seconds per second of audio it sent.
#      CAPACITY_BARGE_IN=N sets `ttsd bench --barge-in-every` for these levels (default 4, as `ttsd bench`:
#      every fourth utterance STOPped after 10 frames; 0: continuous speech, like the library's RTF, and
#      the files are then named vs-piper-capacity-continuous-*).
#      LEVELS=0 skips 2 and 3 (and the ratios that need them): the library's timings, then capacity only.
# Usage: scripts/bench-vs-piper.sh [seconds-per-level] [library-reps]
# Output: bench-results/vs-piper.txt (this log), vs-piper-*.json; OUT=DIR writes them into DIR instead.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-20}"; REPS="${2:-10}"
BIN=target/release/ttsd
MODEL=.cache/voices/en_US-joe-medium.onnx
VENV=.cache/bench-venv
OUT=${OUT:-bench-results}
[ -f "$MODEL" ] || ./scripts/fetch-assets.sh
[ -x "$BIN" ] || cargo build --release --locked -p ttsd
mkdir -p "$OUT"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import piper' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -r scripts/bench-requirements.txt
fi
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true' EXIT
TMP=$(mktemp -d)
exec > >(tee "$OUT/vs-piper.txt") 2>&1

echo "== $(date -u +%FT%TZ), $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) vCPUs, $(git rev-parse --short HEAD)"
echo "== 1. Piper library (piper-tts), same voice file, $REPS runs per sentence"
"$VENV/bin/python" scripts/bench_piper_lib.py "$MODEL" "$REPS" "$OUT/vs-piper-library.json"

# serve NAME BIN [ENV...]: starts `BIN serve` with the Piper voice, waits until it is ready, sets URL and ADMIN.
serve() {
  local name="$1" bin="$2"; shift 2
  env "$@" "$bin" serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --max-sessions 100 \
    >"$TMP/$name.out" 2>"$TMP/$name.err" &
  PIDS+=($!)
  for _ in $(seq 1 900); do grep -qs '^ttsd ready:' "$TMP/$name.out" && break; sleep 0.1; done
  local line; line=$(grep '^ttsd ready:' "$TMP/$name.out") || { tail "$TMP/$name.err"; exit 1; }
  URL=$(sed -n 's|.*stream=\(ws://[^/]*\)/v1/stream.*|\1|p' <<<"$line")
  ADMIN=$(sed -n 's|.*admin=\(http://[^ ]*\).*|\1|p' <<<"$line")
}
stop_all() { kill "${PIDS[@]}" 2>/dev/null || true; wait "${PIDS[@]}" 2>/dev/null || true; PIDS=(); }
rss_mb() { curl -s "$ADMIN/metrics" | awk '/^process_resident_memory_bytes /{printf "%.0f", $2/1e6}'; }
bench() { "$BIN" bench --url "$URL" --duration-seconds "$SECS" "$@"; }
bench1() { "$BIN" bench --url "$URL" --duration-seconds "$((3 * SECS))" --sessions 1 "$@"; }

if [ "${LEVELS:-1}" != 0 ]; then
echo "== 2. ttsd (all levers), 1 / 4 / 16 sessions, then 16 again"
serve all "$BIN"
echo "RSS after warm-up: $(rss_mb) MB"
bench1 --json "$OUT/vs-piper-ttsd-1.json"
bench --sessions 4,16 --json "$OUT/vs-piper-ttsd.json"
echo "RSS after the first run: $(rss_mb) MB" | tee "$TMP/rss1"
bench --sessions 16 --json "$OUT/vs-piper-ttsd-16-again.json"
echo "RSS after the second 16-session run: $(rss_mb) MB" | tee "$TMP/rss2"
curl -s "$ADMIN/metrics" | grep '^tts_engine_decoder_mode' || true
stop_all

echo "== 3. one lever at a time, 1 session"
serve no-early "$BIN" TTSD_GATEWAY__FIRST_CHUNK_MAX_WORDS=0
bench1 --json "$OUT/vs-piper-no-early-chunk.json"
stop_all
serve no-quiet "$BIN" TTSD_ENGINE__ONNX_QUIET_INTRA_THREADS=1
bench1 --json "$OUT/vs-piper-no-quiet-threads.json"
stop_all
serve no-warm "$BIN" TTSD_ENGINE__FIRST_CHUNK_WARM_ARENA=false
bench1 --json "$OUT/vs-piper-no-warm-arena.json"
stop_all
if [ -n "${BASELINE_BIN:-}" ] && [ -x "$BASELINE_BIN" ]; then
  serve baseline "$BASELINE_BIN"
  bench1 --json "$OUT/vs-piper-baseline.json"
  stop_all
fi
fi # LEVELS

# memory NAME [ENV...]: RSS after warm-up and after two 16-session runs, with one setting changed.
memory() {
  local name="$1"; shift
  serve "mem-$name" "$BIN" "$@"
  local warm; warm=$(rss_mb)
  bench --sessions 16 --json "$OUT/vs-piper-mem-$name-1.json" >/dev/null
  local one; one=$(rss_mb)
  bench --sessions 16 --json "$OUT/vs-piper-mem-$name-2.json" >/dev/null
  echo "memory, $name ($*): RSS $warm MB after warm-up, $one MB after one 16-session run, $(rss_mb) MB after two"
  stop_all
}
if [ "${MEMORY_LEVERS:-1}" != 0 ] && [ "${LEVELS:-1}" != 0 ]; then
  echo "== 4. one memory lever at a time, RSS around two 16-session runs"
  memory cpu-arena-on TTSD_ENGINE__ONNX_CPU_ARENA=true
  memory prepacked-not-shared TTSD_ENGINE__ONNX_SHARE_PREPACKED_WEIGHTS=false
  memory warm-arena-off TTSD_ENGINE__FIRST_CHUNK_WARM_ARENA=false
  memory no-quiet-sessions TTSD_ENGINE__ONNX_QUIET_INTRA_THREADS=1
fi

if [ -n "${CAPACITY_LEVELS:-}" ]; then
  echo "== 5. capacity, each 60 s level bracketed by Python ORT's 1-thread RTF (20 s before, 20 s after)"
  TICKS=$(getconf CLK_TCK)
  frames_sent() { curl -s "$ADMIN/metrics" | awk '/^tts_frames_sent_total /{print $2}'; }
  cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
  BARGE_IN="${CAPACITY_BARGE_IN:-4}"
  KIND=capacity; [ "$BARGE_IN" = 0 ] && KIND=capacity-continuous
  echo "ttsd bench --barge-in-every $BARGE_IN (0: continuous speech)"
  run=0
  for n in $CAPACITY_LEVELS; do
    run=$((run + 1))
    before=$("$VENV/bin/python" scripts/bench_piper_lib.py "$MODEL" --rtf 20)
    serve "capacity-$n" "$BIN"
    pid=${PIDS[-1]}
    cpu0=$(cpu_ticks "$pid"); sent0=$(frames_sent)
    "$BIN" bench --url "$URL" --duration-seconds 60 --sessions "$n" \
      --barge-in-every "$BARGE_IN" --json "$OUT/vs-piper-$KIND-$run-$n.json" >/dev/null
    cpu1=$(cpu_ticks "$pid"); sent1=$(frames_sent)
    stop_all
    after=$("$VENV/bin/python" scripts/bench_piper_lib.py "$MODEL" --rtf 20)
    "$VENV/bin/python" - "$OUT/vs-piper-$KIND-$run-$n.json" "$(nproc)" "$before" "$after" \
      "$(( cpu1 - cpu0 ))" "$TICKS" "$sent0" "$sent1" <<'PY'
import json, sys
path, cores, before, after, ticks, hz, sent0, sent1 = sys.argv[1:]
level = json.load(open(path))["levels"][0]
rtf = (float(before) + float(after)) / 2
target = 0.9 * int(cores) / rtf
sent = (float(sent1) - float(sent0)) * 0.02
cpu = int(ticks) / int(hz)
verdict = "met" if level["underruns"] == 0 and level["sessions"] >= target else "not met"
print(f"capacity: {level['sessions']} sessions, 60 s: {level['underruns']} underruns, first audio p50/p95 "
      f"{level['first_audio_ms']['p50']:.0f} / {level['first_audio_ms']['p95']:.0f} ms, {level['utterances']} "
      f"utterances; ttsd {cpu / max(sent, 1e-9):.4f} CPU s per audio s sent; Python ORT 1-thread RTF {before} "
      f"before, {after} after -> target 0.9 x {cores} / {rtf:.4f} = {target:.2f} sessions: {verdict}")
PY
  done
fi

[ "${LEVELS:-1}" = 0 ] && exit 0
echo "== ratios (same window)"
"$VENV/bin/python" - "$OUT" "$(nproc)" "$TMP/rss1" "$TMP/rss2" <<'PY'
import json, os, re, sys
out, cores = sys.argv[1], int(sys.argv[2])
rss = [float(re.findall(r"(\d+) MB", open(p).read())[0]) for p in sys.argv[3:5]]
lib = json.load(open(f"{out}/vs-piper-library.json"))
levels = {l["sessions"]: l for name in ("ttsd-1", "ttsd") for l in json.load(open(f"{out}/vs-piper-{name}.json"))["levels"]}
def p95(level): return level["first_audio_ms"]["p95"]
lib_p95, lib1_p95 = lib["default"]["first_p95_ms"], lib["1"]["first_p95_ms"]
print(f"Piper library first chunk p95, all sentences: {lib_p95:.1f} ms (default threads), {lib1_p95:.1f} ms (1 thread)")
for n, target in [(1, "<= 0.5"), (4, "<= 1")]:
    print(f"ttsd {n} session(s) first audio p95 {p95(levels[n]):.1f} ms = {p95(levels[n]) / lib_p95:.2f} x Piper "
          f"library's 1-session p95 at default threads, {p95(levels[n]) / lib1_p95:.2f} x at 1 thread (target {target})")
capacity = cores / lib["1"]["rtf"]
print(f"capacity: {cores} cores / Python ORT 1-thread RTF {lib['1']['rtf']:.4f} = {capacity:.0f} sessions; "
      f"target 0.9 x that = {0.9 * capacity:.0f} sessions with zero underruns")
for n, level in sorted(levels.items()):
    if level["utterances"] == 0:
        print(f"  {n} sessions: no utterance finished within the level (the machine is too slow for it)")
        continue
    print(f"  {n} sessions: first audio p50/p95 {level['first_audio_ms']['p50']:.1f} / {p95(level):.1f} ms, "
          f"underruns {level['underruns']}, late frames {level['late_frames']} / {level['frames']}")
print(f"RSS after two 16-session runs: {rss[1]:.0f} MB (target <= 300), second run added "
      f"{100 * (rss[1] - rss[0]) / rss[0]:+.1f} % (target <= 5 %)")
for name, label in [("no-early-chunk", "early first chunk off"), ("no-quiet-threads", "spare cores off"),
                    ("no-warm-arena", "first chunks' warm arena off"),
                    ("baseline", "baseline binary (no streaming decoder, no levers)")]:
    path = f"{out}/vs-piper-{name}.json"
    # Only files this run wrote (a baseline from an earlier run is not from this window).
    if os.path.exists(path) and os.path.getmtime(path) >= os.path.getmtime(f"{out}/vs-piper-library.json"):
        level = json.load(open(path))["levels"][0]
        print(f"1 session, {label}: first audio p50/p95 {level['first_audio_ms']['p50']:.1f} / {p95(level):.1f} ms "
              f"= {p95(level) / lib_p95:.2f} x Piper library's p95")
PY
