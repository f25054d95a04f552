"""Starts a long streamed speech request with the `openai` package, reads the first piece of audio, then
closes the connection. Prints the request id and the bytes read.

Usage: openai_disconnect.py BASE_URL VOICE TEXT
"""
import json
import sys

import openai

base_url, voice, text = sys.argv[1:4]
client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=60)
with client.audio.speech.with_streaming_response.create(
    model="tts-1", voice=voice, input=text, response_format="pcm"
) as response:
    request_id = response.headers.get("x-request-id")
    first = next(response.iter_bytes())
    # Leaving the block closes the response (and its connection) mid-stream.
print(json.dumps({"request_id": request_id, "bytes": len(first)}))
