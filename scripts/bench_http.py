#!/usr/bin/env python3
"""First audio, as a client sees it, at 1 and 4 concurrent requests, over three paths with the same text:

- ttsd-http: POST /v1/audio/speech (pcm, streamed): request sent -> first body byte;
- ttsd-ws:   /v1/stream: final text sent -> first audio message;
- piper-http: Piper's own `python -m piper.http_server`, POST /synthesize -> first body byte (its WAV is sent whole).

Standard library only (the WebSocket client is the minimum the protocol needs). Each concurrency level
runs `--requests` requests per client, one after another, after one warm-up request per client.
Usage: bench_http.py --ttsd HOST:PORT --piper HOST:PORT [--levels 1,4] [--requests 6]
"""
import argparse
import base64
import http.client
import json
import os
import socket
import statistics
import struct
import threading
import time

TEXT = "The weather today is mild, with a light breeze from the west. Expect a clear and quiet evening."


def http_first_byte(addr, path, body):
    host, port = addr.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    started = time.monotonic()
    conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200, (response.status, response.read()[:200])
    first = response.read1(65536) if hasattr(response, "read1") else response.read(1)
    at = time.monotonic() - started
    assert first
    response.read()
    conn.close()
    return at


def ttsd_http(addr):
    body = {"model": "tts-1", "voice": "en_US-joe-medium", "input": TEXT, "response_format": "pcm"}
    return http_first_byte(addr, "/v1/audio/speech", body)


def piper_http(addr):
    return http_first_byte(addr, "/synthesize", {"text": TEXT})


def ws_frame(payload: bytes, opcode=1) -> bytes:
    mask = os.urandom(4)
    header = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        header += bytes([0x80 | n])
    elif n < 65536:
        header += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        header += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def ws_read(sock_file):
    first, second = sock_file.read(2)
    n = second & 0x7F
    if n == 126:
        n = struct.unpack(">H", sock_file.read(2))[0]
    elif n == 127:
        n = struct.unpack(">Q", sock_file.read(8))[0]
    return first & 0x0F, sock_file.read(n)


def ttsd_ws(addr):
    host, port = addr.split(":")
    sock = socket.create_connection((host, int(port)), timeout=120)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (f"GET /v1/stream?voice=en_US-joe-medium HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n"
         f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
    )
    f = sock.makefile("rb")
    while f.readline() not in (b"\r\n", b""):
        pass
    ws_read(f)  # session_start
    started = time.monotonic()
    sock.sendall(ws_frame(json.dumps({"type": "text", "text": TEXT, "is_final": True}).encode()))
    first = None
    while True:
        _, payload = ws_read(f)
        message = json.loads(payload)
        if message["type"] == "audio" and first is None:
            first = time.monotonic() - started
        if message["type"] == "utterance_end":
            break
    sock.sendall(ws_frame(b"", opcode=8))
    sock.close()
    return first


def run_level(fn, addr, clients, requests):
    results, errors = [], []

    def client():
        try:
            fn(addr)  # warm-up, not counted
            for _ in range(requests):
                results.append(fn(addr))
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(repr(error))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(errors[0])
    return results


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ttsd", required=True)
    parser.add_argument("--piper", required=True)
    parser.add_argument("--levels", default="1,4")
    parser.add_argument("--requests", type=int, default=6)
    args = parser.parse_args()
    paths = [("ttsd-http", ttsd_http, args.ttsd), ("ttsd-ws", ttsd_ws, args.ttsd), ("piper-http", piper_http, args.piper)]
    print("| path | concurrent | requests | first audio p50 (ms) | p95 (ms) | max (ms) |")
    print("| --- | --- | --- | --- | --- | --- |")
    summary = {}
    for level in [int(x) for x in args.levels.split(",")]:
        for name, fn, addr in paths:
            values = sorted(v * 1000 for v in run_level(fn, addr, level, args.requests))
            p50 = statistics.median(values)
            p95 = values[min(len(values) - 1, int(round(0.95 * (len(values) - 1))))]
            summary[(name, level)] = p50
            print(f"| {name} | {level} | {len(values)} | {p50:.0f} | {p95:.0f} | {values[-1]:.0f} |", flush=True)
    for level in [int(x) for x in args.levels.split(",")]:
        http, ws, piper = (summary[(n, level)] for n in ("ttsd-http", "ttsd-ws", "piper-http"))
        print(f"level {level}: ttsd-http/ttsd-ws p50 = {http / ws:.2f}, piper-http/ttsd-http p50 = {piper / http:.2f}")


if __name__ == "__main__":
    main()
