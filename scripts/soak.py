"""Soak load for scripts/soak.sh: mixed WebSocket sessions against a running `ttsd serve`, plus a sampler.

N sessions (half Piper, half espeak-ng) run for the stated time. Each connection speaks 3-8 utterances
and then closes, and its slot reconnects at once. Per utterance, at random (seeded): a voice change before
it, a bad message before it (invalid JSON, an unknown type, a binary frame, a lowercase command), the text
in one final piece or in non-final pieces, and STOP after a few frames or PAUSE, a wait, RESUME.
Every 10 s the sampler records the server's RSS, open fds and threads (from /proc) and its session,
error and underrun counters (from /metrics) in a CSV. At the end it prints first-half vs second-half means.

Usage: soak.py --url ws://HOST:PORT --admin http://HOST:PORT --pid PID --seconds S --csv F --summary F
Exit status: 0 when the server lived and every check held, 1 otherwise.
"""

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import sys
import time
import urllib.request
from collections import Counter

import websockets

PIPER = "en_US-joe-medium"
ESPEAK = "espeak-en-us"
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please hold while I transfer your call to the next available agent.",
    "Your order has shipped, and it should arrive on Thursday afternoon.",
    "It is twenty past four; the meeting starts in ten minutes, in room six.",
    "Dr. Smith said the results, version 3.2 of the report, look fine.",
    "Streaming speech should start quickly, keep a steady pace, and stop at once when asked.",
]
BAD_MESSAGES = ["{not json", '{"type":"dance"}', b"\x00\x01junk", '{"type":"control","command":"stop"}']
SAMPLE_SECONDS = 10
# Allocator and ONNX Runtime arenas grow for the first ~25 minutes under this load (docs/performance.md,
# "Soak"), so a shorter run judges only fds and threads; it still checks liveness, failures and errors.
RSS_JUDGED_FROM_S = 1800
# Metric families summed over their labels into one CSV column each.
COUNTERS = {
    "sessions_active": "tts_sessions_active",
    "sessions_started": "tts_sessions_started_total",
    "errors_sent": "tts_errors_sent_total",
    "underruns": "tts_underruns_total",
    "utterances": "tts_utterances_total",
    "engine_failed": 'tts_engine_tasks_total{outcome="failed"}',
    "engine_panics": "tts_engine_panics_total",
    "runtime_stalls": "tts_runtime_stalls_total",
    "cpu_seconds": "process_cpu_seconds_total",
}
COLUMNS = ["elapsed_s", "rss_mb", "fds", "threads", "tasks"] + list(COUNTERS) + ["load1"]


class Stats:
    """What the clients saw, summed over all sessions."""

    def __init__(self):
        self.connections = 0
        self.utterances = Counter()
        self.errors = Counter()
        self.unexpected = Counter()
        self.frames = 0
        self.underruns = 0
        self.bad_sent = 0
        self.voice_changes = 0
        self.pauses = 0


class Connection:
    """One WebSocket session: a reader task keeps counts, the driver waits on them."""

    def __init__(self, ws, stats):
        self.ws, self.stats = ws, stats
        self.frames = 0
        self.ends = asyncio.Queue()
        self.closed = False
        self.reader = asyncio.create_task(self.read())

    async def read(self):
        try:
            async for msg in self.ws:
                if isinstance(msg, bytes) or msg.startswith('{"type":"audio"'):
                    self.frames += 1
                    self.stats.frames += 1
                    continue
                m = json.loads(msg)
                if m["type"] == "utterance_end":
                    self.ends.put_nowait(m)
                elif m["type"] == "error":
                    self.stats.errors[m["code"]] += 1
                    if m["code"] != "INVALID_MESSAGE":
                        self.stats.unexpected["error " + m["code"]] += 1
                elif m["type"] == "session_end":
                    self.stats.unexpected["session_end " + m["reason"]] += 1
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed = True

    async def wait_frames(self, count, deadline):
        """Waits until `count` frames of the current utterance arrived; False when it ended first."""
        while self.frames < count and self.ends.empty() and not self.closed and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return self.frames >= count and self.ends.empty()


async def utterance(conn, rng, voice, stats):
    """Sends one utterance with its random extras and waits for its utterance_end. Returns the voice."""
    ws = conn.ws
    if rng.random() < 0.15:
        voice = ESPEAK if voice == PIPER else PIPER
        await ws.send(json.dumps({"type": "config", "voice": voice}))
        stats.voice_changes += 1
    if rng.random() < 0.1:
        await ws.send(rng.choice(BAD_MESSAGES))
        stats.bad_sent += 1
    conn.frames = 0
    text = " ".join(rng.sample(SENTENCES, rng.randint(1, 2)))
    if rng.random() < 0.3:
        words = text.split(" ")
        cut = rng.randint(1, len(words) - 1)
        await ws.send(json.dumps({"type": "text", "text": " ".join(words[:cut]) + " ", "is_final": False}))
        await asyncio.sleep(rng.uniform(0.05, 0.4))
        await ws.send(json.dumps({"type": "text", "text": " ".join(words[cut:]), "is_final": False}))
        await ws.send(json.dumps({"type": "text", "text": "", "is_final": True}))
    else:
        await ws.send(json.dumps({"type": "text", "text": text, "is_final": True}))
    deadline = time.monotonic() + 120
    action = rng.random()
    if action < 0.2 and await conn.wait_frames(rng.randint(3, 40), deadline):
        await ws.send(json.dumps({"type": "control", "command": "STOP"}))
    elif action < 0.35 and await conn.wait_frames(rng.randint(3, 40), deadline):
        await ws.send(json.dumps({"type": "control", "command": "PAUSE"}))
        stats.pauses += 1
        await asyncio.sleep(rng.uniform(0.2, 1.5))
        await ws.send(json.dumps({"type": "control", "command": "RESUME"}))
    end = await asyncio.wait_for(conn.ends.get(), max(1.0, deadline - time.monotonic()))
    stats.utterances[end["reason"]] += 1
    stats.underruns += end["underruns"]
    await asyncio.sleep(rng.uniform(0.0, 0.5))
    return voice


async def slot(index, url, stop_at, stats, seed):
    """One of the N concurrent sessions: connects, speaks a few utterances, closes, reconnects."""
    rng = random.Random(seed * 1000 + index)
    while time.monotonic() < stop_at:
        voice = PIPER if index % 2 == 0 else ESPEAK
        conn = None
        encoding = rng.choice(["binary", "base64"])
        try:
            async with websockets.connect(f"{url}/v1/stream?voice={voice}&encoding={encoding}",
                                          max_size=None, open_timeout=30, close_timeout=10) as ws:
                start = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if start["type"] != "session_start":
                    stats.unexpected["refused " + json.dumps(start)[:80]] += 1
                    await asyncio.sleep(1)
                    continue
                stats.connections += 1
                conn = Connection(ws, stats)
                for _ in range(rng.randint(3, 8)):
                    if time.monotonic() >= stop_at or conn.closed:
                        break
                    voice = await utterance(conn, rng, voice, stats)
                if conn.closed:
                    stats.unexpected["connection closed by the server"] += 1
            if conn:
                await conn.reader
        except (OSError, asyncio.TimeoutError, websockets.WebSocketException) as e:
            stats.unexpected[f"client {type(e).__name__}"] += 1
            await asyncio.sleep(1)


def scrape(admin):
    text = urllib.request.urlopen(f"{admin}/metrics", timeout=10).read().decode()
    values = {}
    for column, name in COUNTERS.items():
        family, _, label = name.partition("{")
        total = 0.0
        for line in text.splitlines():
            if line.startswith(family) and (line[len(family)] in " {") and (not label or "{" + label in line):
                total += float(line.rsplit(" ", 1)[1])
        values[column] = total
    tasks = re.search(r"^tokio_\w*alive_tasks\w* (\S+)$", text, re.M)
    values["tasks"] = float(tasks.group(1)) if tasks else ""
    return values


def sample(pid, admin, started):
    with open(f"/proc/{pid}/status") as f:
        rss_kb = int(re.search(r"^VmRSS:\s+(\d+)", f.read(), re.M).group(1))
    row = {"elapsed_s": round(time.monotonic() - started), "rss_mb": round(rss_kb / 1024, 1),
           "fds": len(os.listdir(f"/proc/{pid}/fd")), "threads": len(os.listdir(f"/proc/{pid}/task"))}
    row.update(scrape(admin))
    with open("/proc/loadavg") as f:
        row["load1"] = float(f.read().split()[0])
    return row


async def sampler(pid, admin, started, stop_at, rows, csv):
    csv.write(",".join(COLUMNS) + "\n")
    while True:
        try:
            row = sample(pid, admin, started)
        except (OSError, AttributeError) as e:
            print(f"soak: the server (pid {pid}) is gone or unreadable: {e}", file=sys.stderr)
            return False
        rows.append(row)
        csv.write(",".join(str(row[c]) for c in COLUMNS) + "\n")
        csv.flush()
        if time.monotonic() >= stop_at:
            return True
        await asyncio.sleep(SAMPLE_SECONDS)


def halves(rows, warmup_s):
    """First-half and second-half means of each level column, after the warm-up samples."""
    kept = [r for r in rows if r["elapsed_s"] >= warmup_s]
    mid = len(kept) // 2
    out = {}
    for column in ["rss_mb", "fds", "threads", "tasks", "sessions_active"]:
        values = [r[column] for r in kept if r[column] != ""]
        if len(values) < 2:
            continue
        a, b = statistics.mean(values[:mid]), statistics.mean(values[mid:])
        out[column] = (a, b, b / a if a else float("nan"), min(values), max(values))
    return out, len(kept)


def report(args, rows, stats, server_alive):
    if len(rows) < 2:
        print(f"soak: FAIL, only {len(rows)} sample(s) taken; server alive: {server_alive}")
        return False
    lines = []
    warmup = min(60, args.seconds // 10)
    table, kept = halves(rows, warmup)
    first, last = rows[0], rows[-1]
    lines.append(f"soak: {args.sessions} sessions, {args.seconds} s, {len(rows)} samples every {SAMPLE_SECONDS} s; "
                 f"halves over the {kept} samples after the first {warmup} s (warm-up)")
    lines.append("metric            first-half mean  second-half mean  ratio   min      max")
    flat = True
    for column, (a, b, ratio, lo, hi) in table.items():
        verdict = ""
        if column in ("rss_mb", "fds", "threads", "tasks"):
            ok = ratio <= 1.05
            verdict = "flat" if ok else "GROWING"
            if column == "rss_mb" and args.seconds < RSS_JUDGED_FROM_S:
                verdict += f" (not judged: RSS warms up for many minutes; judged from {RSS_JUDGED_FROM_S} s)"
            else:
                flat &= ok
        lines.append(f"{column:<17} {a:>15.1f} {b:>17.1f}  {ratio:6.3f}  {lo:7.1f}  {hi:7.1f}  {verdict}")
    if "tasks" not in table:
        lines.append("tasks             not exposed by /metrics (no tokio task gauge); threads and fds stand in")
    delta = {c: last[c] - first[c] for c in COUNTERS if c not in ("sessions_active",)}
    lines.append("server counters over the run: " + ", ".join(f"{c} +{v:g}" for c, v in delta.items()))
    lines.append(f"clients: {stats.connections} sessions, utterances {dict(stats.utterances)}, "
                 f"{stats.frames} frames, {stats.underruns} underruns in utterance_end, "
                 f"{stats.bad_sent} bad messages sent, {stats.voice_changes} voice changes, {stats.pauses} pauses, "
                 f"errors received {dict(stats.errors)}")
    lines.append(f"unexpected: {dict(stats.unexpected) or 'none'}")
    ok = server_alive and flat and not stats.unexpected and stats.utterances.get("failed", 0) == 0
    lines.append(f"server alive at the end: {'yes' if server_alive else 'NO'}; resources judged flat (second half "
                 f"within 5 % of the first): {'yes' if flat else 'NO'}; verdict: {'PASS' if ok else 'FAIL'}")
    text = "\n".join(lines)
    print(text)
    if args.summary:
        with open(args.summary, "a") as f:
            f.write(text + "\n")
    return ok


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--admin", required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--seconds", type=int, default=3600)
    p.add_argument("--sessions", type=int, default=16)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--csv", required=True)
    p.add_argument("--summary")
    args = p.parse_args()
    started = time.monotonic()
    stop_at = started + args.seconds
    stats, rows = Stats(), []
    with open(args.csv, "w") as csv:
        sampling = asyncio.create_task(sampler(args.pid, args.admin, started, stop_at, rows, csv))
        slots = [asyncio.create_task(slot(i, args.url, stop_at, stats, args.seed)) for i in range(args.sessions)]
        alive = await sampling
        if not alive:
            for s in slots:
                s.cancel()
        # Sessions finish the utterance they are on (bounded by its 120 s deadline), then close.
        done, pending = await asyncio.wait(slots, timeout=180)
        for s in pending:
            stats.unexpected["session still open 180 s after the end"] += 1
            s.cancel()
    alive = alive and os.path.exists(f"/proc/{args.pid}")
    return 0 if report(args, rows, stats, alive) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
