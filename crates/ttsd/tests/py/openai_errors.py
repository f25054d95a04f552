"""Sends bad speech requests (through the `openai` package where it can send them, plain urllib where it
cannot) and prints each case's status and error body as JSON.

Usage: openai_errors.py BASE_URL VOICE MAX_TEXT_CHARS
"""
import json
import sys
import urllib.error
import urllib.request

import openai

base_url, voice, max_chars = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=60)
cases = {
    "empty_input": dict(input="   "),
    "oversize_input": dict(input="a" * (max_chars + 1)),
    "unknown_voice": dict(voice="no-such-voice"),
    "unknown_format": dict(response_format="mp3"),
    "speed_out_of_range": dict(speed=5.0),
    "speed_too_slow": dict(speed=0.1),
    "unknown_model": dict(model="whisper-1"),
}
results = {}
for name, override in cases.items():
    args = dict(model="tts-1", voice=voice, input="Hello.", response_format="wav")
    args.update(override)
    try:
        client.audio.speech.create(**args)
        results[name] = {"status": 200}
    except openai.APIStatusError as error:
        results[name] = {"status": error.status_code, "body": error.response.json()}

url = base_url.rstrip("/") + "/audio/speech"
raw = {
    "wrong_content_type": (b"model=tts-1", "text/plain"),
    "malformed_json": (b'{"model": "tts-1", "input": ', "application/json"),
    "missing_input": (b'{"model": "tts-1", "voice": "alloy"}', "application/json"),
}
for name, (body, content_type) in raw.items():
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            results[name] = {"status": response.status}
    except urllib.error.HTTPError as error:
        results[name] = {"status": error.code, "body": json.loads(error.read())}
print(json.dumps(results))
