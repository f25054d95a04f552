"""Drives POST /v1/audio/speech with the official `openai` package; prints one JSON object of what it got.

Usage: openai_speech.py BASE_URL VOICE SHORT_TEXT LONG_TEXT
"""
import base64
import json
import struct
import sys
import time

import openai

base_url, voice, short_text, long_text = sys.argv[1:5]
client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)


def wav_header(data: bytes) -> dict:
    riff, riff_size, wave = struct.unpack("<4sI4s", data[:12])
    fmt, fmt_size, tag, channels, rate, byte_rate, align, bits = struct.unpack("<4sIHHIIHH", data[12:36])
    chunk, data_size = struct.unpack("<4sI", data[36:44])
    return {
        "riff": riff.decode(), "wave": wave.decode(), "fmt": fmt.decode(), "data": chunk.decode(),
        "riff_size": riff_size, "data_size": data_size, "tag": tag, "channels": channels, "rate": rate,
        "byte_rate": byte_rate, "align": align, "bits": bits, "payload_bytes": len(data) - 44,
    }


result = {}
wav = client.audio.speech.create(model="tts-1", voice=voice, input=short_text, response_format="wav")
result["wav"] = wav_header(wav.content)
pcm = client.audio.speech.create(model="tts-1", voice=voice, input=short_text, response_format="pcm")
result["pcm_bytes"] = len(pcm.content)
pcm16 = client.audio.speech.create(
    model="tts-1", voice=voice, input=short_text, response_format="pcm", extra_body={"sample_rate": 16000}
)
result["pcm16k_bytes"] = len(pcm16.content)
for name, speed in (("pcm_fast_bytes", 2.0), ("pcm_slow_bytes", 0.5)):
    paced = client.audio.speech.create(
        model="tts-1", voice=voice, input=short_text, response_format="pcm", speed=speed
    )
    result[name] = len(paced.content)

# Streamed: note when each piece arrives; the server's own timings come from its log (request id).
chunks = []
started = time.monotonic()
with client.audio.speech.with_streaming_response.create(
    model="gpt-4o-mini-tts", voice=voice, input=long_text, response_format="pcm",
    instructions="Speak calmly.",
) as response:
    request_id = response.headers.get("x-request-id")
    content_type = response.headers.get("content-type")
    for piece in response.iter_bytes():
        chunks.append((time.monotonic() - started, len(piece)))
result["stream"] = {
    "request_id": request_id,
    "content_type": content_type,
    "pieces": len(chunks),
    "bytes": sum(n for _, n in chunks),
}

# SSE: speech.audio.delta events, then speech.audio.done with ttsd's timings.
sse = client.audio.speech.create(
    model="tts-1", voice=voice, input=long_text, response_format="pcm", stream_format="sse"
)
deltas, audio, done = 0, 0, None
for line in sse.content.decode().splitlines():
    if not line.startswith("data: "):
        continue
    event = json.loads(line[len("data: "):])
    if event["type"] == "speech.audio.delta":
        deltas += 1
        audio += len(base64.b64decode(event["audio"]))
    elif event["type"] == "speech.audio.done":
        done = event
result["sse"] = {"deltas": deltas, "bytes": audio, "done": done}
print(json.dumps(result))
