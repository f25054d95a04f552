#!/usr/bin/env python3
"""Speak one sentence through ttsd and save it as a WAV file (the README's 30-second example).

Usage: example_client.py [ws://127.0.0.1:8080/v1/stream] [out.wav]
"""
import asyncio, base64, json, sys, wave

import websockets


async def main(url: str, out: str) -> None:
    async with websockets.connect(url) as ws:
        print(json.loads(await ws.recv()))  # session_start
        await ws.send(json.dumps({"type": "text", "text": "Hello from ttsd. Streaming speech, twenty milliseconds at a time.", "is_final": True}))
        pcm = bytearray()
        while True:
            msg = json.loads(await ws.recv())
            if msg["type"] == "audio":
                pcm += base64.b64decode(msg["pcm"])
            elif msg["type"] == "utterance_end":
                print(msg)
                break
            elif msg["type"] == "error":
                raise SystemExit(f"error: {msg}")
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1); wav.setsampwidth(2); wav.setframerate(48000); wav.writeframes(bytes(pcm))
    print(f"wrote {out}: {len(pcm) / 96000:.2f} s")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:8080/v1/stream",
                     sys.argv[2] if len(sys.argv) > 2 else "hello.wav"))
