#!/usr/bin/env python3
"""The micro-operations of crates/tts-telemetry/benches/overhead.rs, measured with Python's prometheus_client.

Counter inc, histogram observe, labels(...).observe() on an existing series, and generate_latest over a
registry holding 10,000 counter series; each timed with timeit (best of several repeats) and printed as
ns/op or ms/op, with the machine, Python and prometheus_client versions.

Usage: python3 -m venv /tmp/pcvenv && /tmp/pcvenv/bin/pip install prometheus_client==0.26.0
       /tmp/pcvenv/bin/python scripts/bench_prometheus_client.py
"""
import os
import platform
import sys
import timeit
from importlib.metadata import version

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

# Same bounds as the Rust bench: exponential_buckets(0.001, 2.0, 14).
BUCKETS = [0.001 * 2**i for i in range(14)]


def best_seconds_per_op(stmt, number: int, repeat: int = 7) -> float:
    return min(timeit.repeat(stmt, number=number, repeat=repeat)) / number


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}")
    print(f"python {platform.python_version()} ({platform.python_implementation()}), "
          f"prometheus_client {version('prometheus_client')}")

    registry = CollectorRegistry()
    counter = Counter("bench_counter", "Counter", registry=registry)
    histogram = Histogram("bench_histogram_seconds", "Histogram", buckets=BUCKETS, registry=registry)
    family = Histogram("bench_family_seconds", "Labelled histogram", ["model", "outcome"],
                       buckets=BUCKETS, registry=registry)
    family.labels("en_US-lessac-medium", "ok").observe(0.1)

    rows = [
        ("counter_inc", best_seconds_per_op(counter.inc, 200_000)),
        ("histogram_observe", best_seconds_per_op(lambda: histogram.observe(0.042), 200_000)),
        ("labels_observe", best_seconds_per_op(
            lambda: family.labels("en_US-lessac-medium", "ok").observe(0.042), 100_000)),
    ]
    for name, seconds in rows:
        print(f"{name:<32} {seconds * 1e9:10.1f} ns/op")

    big = CollectorRegistry()
    events = Counter("bench_events", "Events per series", ["series"], registry=big)
    for i in range(10_000):
        events.labels(f"series-{i}").inc(i)
    seconds = best_seconds_per_op(lambda: generate_latest(big), 5, repeat=5)
    print(f"{'generate_latest_10k_series':<32} {seconds * 1e3:10.2f} ms/op")


if __name__ == "__main__":
    sys.exit(main())
