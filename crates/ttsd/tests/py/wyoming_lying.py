"""Sends Wyoming events whose framing lies, on raw sockets, and reads what the server answers with the
`wyoming` package's reader. Prints one JSON object per case.

Usage: wyoming_lying.py HOST PORT
"""
import asyncio
import json
import sys

from wyoming.event import async_read_event

host, port = sys.argv[1], int(sys.argv[2])
TIMEOUT = 60
CASES = {
    # Promises a gigabyte.
    "oversize_payload_length": b'{"type": "audio-chunk", "payload_length": 1000000000}\n',
    # Promises 100 bytes, sends 10, and waits.
    "short_payload": b'{"type": "synthesize", "data": {"text": "hi"}, "payload_length": 100}\n0123456789',
    # Not JSON at all.
    "garbage_header": b"this is not json\n",
    # A header that never ends within the limit.
    "oversize_header": b'{"type": "' + b"x" * 70000,
}


async def case(payload):
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(payload)
    await writer.drain()
    event = await asyncio.wait_for(async_read_event(reader), TIMEOUT)
    after = await asyncio.wait_for(reader.read(), TIMEOUT)
    writer.close()
    return {
        "type": event.type if event else None,
        "data": event.data if event else None,
        "closed": after == b"",
    }


async def main():
    print(json.dumps({name: await case(payload) for name, payload in CASES.items()}))


asyncio.run(main())
