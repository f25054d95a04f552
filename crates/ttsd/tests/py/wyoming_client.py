"""Talks to ttsd's Wyoming server with the `wyoming` package's AsyncTcpClient: describe, synthesize, then
the streaming events. Prints one JSON object of what came back.

Usage: wyoming_client.py HOST PORT VOICE TEXT
"""
import asyncio
import json
import sys

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.info import Describe, Info
from wyoming.tts import (
    Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped, SynthesizeVoice,
)

host, port, voice, text = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
TIMEOUT = 60


def summarise(events):
    """Event types in order (runs of audio-chunk collapsed), audio bytes, and the chunks' format."""
    order, audio, formats = [], 0, set()
    for event in events:
        if AudioChunk.is_type(event.type):
            chunk = AudioChunk.from_event(event)
            audio += len(chunk.audio)
            formats.add((chunk.rate, chunk.width, chunk.channels))
            if order and order[-1] == "audio-chunk":
                continue
        order.append(event.type)
    return {"order": order, "audio_bytes": audio, "formats": sorted(formats)}


async def read_until(client, stop_type):
    events = []
    while True:
        event = await asyncio.wait_for(client.read_event(), TIMEOUT)
        if event is None:
            raise RuntimeError(f"connection closed before {stop_type}; got {[e.type for e in events]}")
        events.append(event)
        if event.type == stop_type or event.type == "error":
            return events


async def main():
    result = {}
    async with AsyncTcpClient(host, port) as client:
        await client.write_event(Describe().event())
        event = await asyncio.wait_for(client.read_event(), TIMEOUT)
        info = Info.from_event(event)
        program = info.tts[0]
        result["info"] = {
            "program": program.name,
            "streaming": program.supports_synthesize_streaming,
            "voices": [
                {"name": v.name, "languages": v.languages, "speakers": v.speakers} for v in program.voices
            ],
        }

        await client.write_event(Synthesize(text=text, voice=SynthesizeVoice(name=voice)).event())
        result["synthesize"] = summarise(await read_until(client, AudioStop().event().type))

        # Streaming, as Home Assistant sends it: start, text in pieces, the full synthesize for servers
        # without streaming, then stop.
        await client.write_event(SynthesizeStart(voice=SynthesizeVoice(name=voice)).event())
        words = text.split(" ")
        half = len(words) // 2
        for piece in (" ".join(words[:half]) + " ", " ".join(words[half:])):
            await client.write_event(SynthesizeChunk(text=piece).event())
        await client.write_event(Synthesize(text=text, voice=SynthesizeVoice(name=voice)).event())
        await client.write_event(SynthesizeStop().event())
        result["streaming"] = summarise(await read_until(client, SynthesizeStopped().event().type))

        await client.write_event(Synthesize(text=text, voice=SynthesizeVoice(name="no-such-voice")).event())
        error = await asyncio.wait_for(client.read_event(), TIMEOUT)
        result["unknown_voice"] = {"type": error.type, "data": error.data}
    print(json.dumps(result))


asyncio.run(main())
