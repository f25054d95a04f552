"""Times Piper's own Python library (piper-tts) on the sentences `ttsd bench` speaks, with the same voice file.

Usage: bench_piper_lib.py MODEL.onnx REPS OUT.json
For ORT's default intra-op threads (what PiperVoice.load gives) and for 1 thread: one warm-up per sentence,
then REPS runs; first chunk = first AudioChunk's int16 bytes in hand, total = last chunk. Also the
real-time factor with 1 thread (total / audio seconds), from which `ttsd` capacity targets are derived.

Usage: bench_piper_lib.py MODEL.onnx --rtf SECONDS
Prints only that 1-thread real-time factor, over the four sentences in a loop for SECONDS (after one
warm-up each), to bracket a `ttsd bench` level in time.
"""

import json
import sys
import time

import numpy as np
import onnxruntime
from piper import PiperVoice
from piper.config import PiperConfig

SENTENCES = {
    "fox": "The quick brown fox jumps over the lazy dog.",
    "hold": "Please hold while I check the schedule for tomorrow morning.",
    "obs": "Observability means you can answer new questions without shipping new code.",
    "para": (
        "Our service turns short pieces of text into speech for phone menus and alerts. Each request carries "
        "a voice name and the words to say, and the answer streams back as audio. When traffic rises, "
        "operators watch the latency graphs and the queue depth before adding machines. Tonight the scheduled "
        "backup job starts at eleven o'clock, so please keep all of your recorded messages brief, friendly "
        "and clear."
    ),
}


def load(model, threads):
    if threads == "default":
        return PiperVoice.load(model)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    with open(model + ".json", encoding="utf-8") as f:
        config = PiperConfig.from_dict(json.load(f))
    return PiperVoice(session=session, config=config)


def run_once(voice, text):
    start = time.perf_counter()
    first = None
    samples = 0
    for chunk in voice.synthesize(text):
        _ = chunk.audio_int16_bytes
        if first is None:
            first = time.perf_counter() - start
        samples += len(chunk.audio_float_array)
    return first, time.perf_counter() - start, samples / voice.config.sample_rate


def pct(values, q):
    return float(np.percentile(np.array(values) * 1000.0, q))


def rtf(model, seconds):
    voice = load(model, "1")
    for text in SENTENCES.values():
        run_once(voice, text)
    totals = audio = 0.0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for text in SENTENCES.values():
            _, total, length = run_once(voice, text)
            totals += total
            audio += length
    print(f"{totals / audio:.4f}")


def main():
    if len(sys.argv) == 4 and sys.argv[2] == "--rtf":
        rtf(sys.argv[1], float(sys.argv[3]))
        return
    model, reps, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    result = {}
    for threads in ["default", "1"]:
        voice = load(model, threads)
        rows = {}
        firsts_all = []
        totals = audio = 0.0
        for name, text in SENTENCES.items():
            run_once(voice, text)
            firsts, whole = [], []
            for _ in range(reps):
                first, total, seconds = run_once(voice, text)
                firsts.append(first)
                whole.append(total)
                totals += total
                audio += seconds
            firsts_all += firsts
            rows[name] = {
                "first_p50_ms": pct(firsts, 50),
                "first_p95_ms": pct(firsts, 95),
                "total_p50_ms": pct(whole, 50),
                "total_p95_ms": pct(whole, 95),
            }
            print(f"piper library, threads={threads}, {name}: first chunk p50/p95 "
                  f"{rows[name]['first_p50_ms']:.1f} / {rows[name]['first_p95_ms']:.1f} ms, total p50/p95 "
                  f"{rows[name]['total_p50_ms']:.1f} / {rows[name]['total_p95_ms']:.1f} ms", flush=True)
        result[threads] = {
            "sentences": rows,
            "first_p50_ms": pct(firsts_all, 50),
            "first_p95_ms": pct(firsts_all, 95),
            "rtf": totals / audio,
        }
        print(f"piper library, threads={threads}, all sentences: first chunk p50/p95 "
              f"{result[threads]['first_p50_ms']:.1f} / {result[threads]['first_p95_ms']:.1f} ms, "
              f"RTF {result[threads]['rtf']:.4f}", flush=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
