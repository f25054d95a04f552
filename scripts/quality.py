"""Intelligibility and fidelity of ttsd's Piper audio, for scripts/quality-check.sh.

  quality.py prepare SRC_DIR OUT_DIR [--int8]
      OUT_DIR gets the shipped voice (linked), `<id>-whole`: the same graph with the decoder's first
      convolution renamed so that ttsd cannot find the split and runs the whole graph per chunk (the
      weights and every computation are unchanged), and with --int8 `<id>-int8`: a dynamically quantised
      copy (onnxruntime.quantization.quantize_dynamic).
  quality.py run --url WS --admin HTTP --voices A,B,... --out PREFIX
      Speaks each sentence with each voice over /v1/stream (one session per voice, one utterance per
      sentence), transcribes the 48 kHz PCM with PocketSphinx's bundled US English model (the model ships
      inside the `pocketsphinx` wheel; nothing is downloaded), and reports per voice the word error rate
      against the text, the engine's real-time factor (from /metrics), and for each voice the SNR against
      the first voice (the reference: whole-graph decoding) over whole sentences and over 20 ms blocks.
  quality.py rtf VOICES_DIR [--reps N]
      The fp32 and int8 voices' whole graphs in Python's ONNX Runtime, 1 thread, run alternately on one
      phoneme sequence: median time and real-time factor of each, and their ratio.
"""

import argparse
import asyncio
import json
import os
import re
import shutil
import sys
import time
import urllib.request

import numpy as np

# IEEE "Harvard" sentences, lists 1 and 2 (the standard intelligibility set), then four longer sentences
# that cross several decoder windows and the early first chunk.
SENTENCES = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.",
    "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.",
    "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.",
    "The soft cushion broke the man's fall.",
    "The salt breeze came across from the sea.",
    "The girl at the booth sold fifty bonds.",
    "The quick brown fox jumps over the lazy dog and runs away into the green field behind the old barn.",
    "Please hold while I transfer your call to the next available agent in our billing department.",
    "When the train left the station early this morning, most of the passengers were still asleep.",
    "She opened the window, looked at the garden for a while, and then went back to her reading.",
]
RATE = 48000
FRAME = 960


def prepare(src, out, voice, int8):
    import onnx

    os.makedirs(out, exist_ok=True)
    model_path = os.path.join(src, voice + ".onnx")
    config_path = model_path + ".json"
    targets = [voice, voice + "-whole"] + ([voice + "-int8"] if int8 else [])
    for name in targets:
        shutil.copyfile(config_path, os.path.join(out, name + ".onnx.json"))
    link = os.path.join(out, voice + ".onnx")
    if not os.path.exists(link):
        os.symlink(os.path.abspath(model_path), link)
    whole = os.path.join(out, voice + "-whole.onnx")
    if not os.path.exists(whole):
        model = onnx.load(model_path)
        renamed = 0
        for init in model.graph.initializer:
            if init.name.startswith("dec.conv_pre."):
                init.name = init.name.replace("dec.conv_pre.", "whole_only.conv_pre.")
                renamed += 1
        for node in model.graph.node:
            node.input[:] = [i.replace("dec.conv_pre.", "whole_only.conv_pre.") for i in node.input]
            if "dec/conv_pre" in node.name:
                node.name = node.name.replace("dec/conv_pre", "whole_only/conv_pre")
                renamed += 1
        if renamed == 0:
            sys.exit(f"quality: no dec.conv_pre in {model_path}; nothing to rename")
        onnx.save(model, whole)
    if int8:
        quantised = os.path.join(out, voice + "-int8.onnx")
        if not os.path.exists(quantised):
            import logging

            from onnxruntime.quantization import QuantType, quantize_dynamic

            logging.getLogger().setLevel(logging.ERROR)  # one warning per attention Slice it leaves float

            # The decoder's first convolution stays float so that ttsd still finds the split there.
            keep = [n.name for n in onnx.load(model_path, load_external_data=False).graph.node
                    if "dec/conv_pre" in n.name or "dec.conv_pre.weight" in n.input]
            started = time.monotonic()
            quantize_dynamic(model_path, quantised, weight_type=QuantType.QInt8, nodes_to_exclude=keep)
            print(f"int8: quantize_dynamic took {time.monotonic() - started:.1f} s; "
                  f"{os.path.getsize(model_path) / 1e6:.1f} MB -> {os.path.getsize(quantised) / 1e6:.1f} MB")


async def speak(url, voice, sentences):
    """One session: each sentence as one utterance; returns the int16 PCM of each."""
    import websockets

    out = []
    async with websockets.connect(f"{url}/v1/stream?voice={voice}&encoding=binary", max_size=None,
                                  open_timeout=60) as ws:
        start = json.loads(await asyncio.wait_for(ws.recv(), 60))
        if start["type"] != "session_start":
            sys.exit(f"quality: {voice} refused: {start}")
        for text in sentences:
            await ws.send(json.dumps({"type": "text", "text": text, "is_final": True}))
            pcm = bytearray()
            while True:
                msg = await asyncio.wait_for(ws.recv(), 120)
                if isinstance(msg, bytes):
                    pcm += msg[8:]
                    continue
                m = json.loads(msg)
                if m["type"] == "utterance_end":
                    if m["reason"] != "completed":
                        sys.exit(f"quality: {voice} utterance ended {m}")
                    break
                if m["type"] in ("error", "session_end"):
                    sys.exit(f"quality: {voice}: {m}")
            out.append(np.frombuffer(bytes(pcm), dtype=np.int16))
    return out


def to_16k(pcm):
    """48 kHz -> 16 kHz: windowed-sinc low-pass at 7.2 kHz (Blackman, 193 taps), then every third sample."""
    n = np.arange(-96, 97)
    cutoff = 7200 / RATE
    taps = 2 * cutoff * np.sinc(2 * cutoff * n) * np.blackman(len(n))
    taps /= taps.sum()
    y = np.convolve(pcm.astype(np.float64), taps, mode="same")[::3]
    return np.clip(np.round(y), -32768, 32767).astype(np.int16)


def transcribe(decoder, pcm):
    decoder.start_utt()
    decoder.process_raw(to_16k(pcm).tobytes(), no_search=False, full_utt=True)
    decoder.end_utt()
    hyp = decoder.hyp()
    return hyp.hypstr if hyp else ""


def words(text):
    return re.sub(r"[^a-z' ]", " ", text.lower().replace("-", " ")).split()


def edits(ref, hyp):
    """Word-level Levenshtein distance."""
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def snr_db(ref, test):
    n = min(len(ref), len(test))
    r, t = ref[:n].astype(np.float64), test[:n].astype(np.float64)
    noise = np.sum((r - t) ** 2) + 1e-9
    return 10 * np.log10(np.sum(r ** 2) / noise), len(ref) - len(test)


def block_snrs(ref, test):
    """SNR of each 20 ms block whose reference is not near-silent (RMS above 1 % of full scale)."""
    n = min(len(ref), len(test)) // FRAME * FRAME
    r = ref[:n].astype(np.float64).reshape(-1, FRAME)
    t = test[:n].astype(np.float64).reshape(-1, FRAME)
    energy = np.sum(r ** 2, axis=1)
    keep = np.sqrt(energy / FRAME) > 327.68
    noise = np.sum((r - t) ** 2, axis=1) + 1e-9
    return list(10 * np.log10(energy[keep] / noise[keep]))


def rtf_by_voice(admin):
    text = urllib.request.urlopen(f"{admin}/metrics", timeout=10).read().decode()
    sums, counts = {}, {}
    for name, store in (("tts_real_time_factor_ratio_sum", sums), ("tts_real_time_factor_ratio_count", counts)):
        for m in re.finditer(name + r"\{([^}]*)\} (\S+)", text):
            voice = re.search(r'voice="([^"]*)"', m.group(1)).group(1)
            store[voice] = store.get(voice, 0) + float(m.group(2))
    return {v: sums[v] / counts[v] for v in sums if counts.get(v)}


def run(args):
    from pocketsphinx import Decoder

    voices = args.voices.split(",")
    audio = {}
    for voice in voices:
        audio[voice] = asyncio.run(speak(args.url, voice, SENTENCES))
    rtf = rtf_by_voice(args.admin)
    decoder = Decoder(samprate=16000, logfn=os.devnull)
    result = {"sentences": SENTENCES, "voices": {}}
    reference = voices[0]
    for voice in voices:
        errors = total = 0
        hyps = []
        for text, pcm in zip(SENTENCES, audio[voice]):
            hyp = transcribe(decoder, pcm)
            hyps.append(hyp)
            errors += edits(words(text), words(hyp))
            total += len(words(text))
        entry = {"wer": errors / total, "word_errors": errors, "words": total, "transcripts": hyps,
                 "audio_seconds": sum(len(p) for p in audio[voice]) / RATE, "engine_rtf_mean": rtf.get(voice)}
        if voice != reference:
            snrs, blocks, length_diffs = [], [], []
            for ref, test in zip(audio[reference], audio[voice]):
                value, diff = snr_db(ref, test)
                snrs.append(value)
                length_diffs.append(diff)
                blocks += block_snrs(ref, test)
            entry["snr_db_per_sentence"] = [round(s, 1) for s in snrs]
            entry["snr_db_min"] = min(snrs)
            entry["snr_db_median"] = float(np.median(snrs))
            entry["block_snr_db_p5"] = float(np.percentile(blocks, 5))
            entry["block_snr_db_min"] = min(blocks)
            entry["blocks"] = len(blocks)
            entry["length_diff_samples_max"] = max(abs(d) for d in length_diffs)
        result["voices"][voice] = entry
    with open(args.out + ".json", "w") as f:
        json.dump(result, f, indent=1)
    lines = [f"{len(SENTENCES)} sentences, {result['voices'][reference]['words']} words; ASR: PocketSphinx "
             f"5.1.1, bundled en-us model; reference for SNR: {reference}"]
    for voice, e in result["voices"].items():
        line = (f"{voice:<26} WER {e['wer']:.3f} ({e['word_errors']}/{e['words']})  "
                f"audio {e['audio_seconds']:.1f} s  engine RTF mean "
                f"{e['engine_rtf_mean']:.3f}" if e["engine_rtf_mean"] else f"{voice}: no RTF")
        if "snr_db_min" in e:
            line += (f"  SNR vs {reference}: min {e['snr_db_min']:.1f} dB, median {e['snr_db_median']:.1f} dB; "
                     f"20 ms blocks ({e['blocks']}): p5 {e['block_snr_db_p5']:.1f} dB, min "
                     f"{e['block_snr_db_min']:.1f} dB; max length difference {e['length_diff_samples_max']} samples")
        lines.append(line)
    ref_wer = result["voices"][reference]["wer"]
    for voice in voices[1:]:
        diff = result["voices"][voice]["wer"] - ref_wer
        lines.append(f"WER {voice} - {reference} = {diff:+.3f} (target: within 0.02)")
    text = "\n".join(lines)
    print(text)
    with open(args.out + ".txt", "a") as f:
        f.write(text + "\n")


def rtf(voices_dir, voice, reps):
    """fp32 against int8, whole graph, 1 ONNX Runtime thread, interleaved so both see the same load."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    models = {name: ort.InferenceSession(os.path.join(voices_dir, name + ".onnx"), so,
                                         providers=["CPUExecutionProvider"])
              for name in (voice, voice + "-int8")}
    ids = np.array([[1, 0] + [20, 0, 30, 0, 40, 0, 3, 0] * 13 + [2]], dtype=np.int64)
    feed = {"input": ids, "input_lengths": np.array([ids.shape[1]], dtype=np.int64),
            "scales": np.array([0.0, 1.0, 0.0], dtype=np.float32)}
    times = {name: [] for name in models}
    seconds = {}
    for _ in range(reps + 1):
        for name, session in models.items():
            started = time.perf_counter()
            audio = session.run(None, feed)[0]
            times[name].append(time.perf_counter() - started)
            seconds[name] = audio.size / 22050
    lines = []
    for name, values in times.items():
        median = float(np.median(values[1:]))
        lines.append(f"{name:<24} whole graph, 1 thread: median {median * 1000:.1f} ms for {seconds[name]:.2f} s "
                     f"of audio (RTF {median / seconds[name]:.3f}), {reps} runs after one warm-up")
    ratio = np.median(times[voice + "-int8"][1:]) / np.median(times[voice][1:])
    lines.append(f"int8 / fp32 time: {ratio:.2f}")
    print("\n".join(lines))
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command", required=True)
    pr = sub.add_parser("prepare")
    pr.add_argument("src")
    pr.add_argument("out")
    pr.add_argument("--voice", default="en_US-joe-medium")
    pr.add_argument("--int8", action="store_true")
    r = sub.add_parser("run")
    r.add_argument("--url", required=True)
    r.add_argument("--admin", required=True)
    r.add_argument("--voices", required=True)
    r.add_argument("--out", required=True)
    t = sub.add_parser("rtf")
    t.add_argument("voices_dir")
    t.add_argument("--voice", default="en_US-joe-medium")
    t.add_argument("--reps", type=int, default=10)
    args = p.parse_args()
    if args.command == "prepare":
        prepare(args.src, args.out, args.voice, args.int8)
    elif args.command == "rtf":
        rtf(args.voices_dir, args.voice, args.reps)
    else:
        run(args)


if __name__ == "__main__":
    main()
