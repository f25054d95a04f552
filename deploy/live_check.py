#!/usr/bin/env python3
"""Runs deploy/prometheus/prometheus.yml for real: Debian's Prometheus scraping a real `ttsd serve` and
Debian's prometheus-node-exporter, all on loopback ports chosen here, until every target is up.

The shipped file is used as it is except for addresses: the `ttsd-gateway` job's targets become the
started ttsd's admin port, jobs with no process here (`ttsd-worker`) are dropped and listed, a `node`
job is added for node-exporter, alerting is left out, and `rule_files` points at the shipped rules.

Usage: deploy/live_check.py TTSD_BINARY   (exit 0 when every target is up within the deadline, 77 when
there is no deploy/prometheus/prometheus.yml yet)
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEADLINE_SECONDS = 120


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def wait(what, deadline, probe):
    while time.monotonic() < deadline:
        try:
            if probe():
                return
        except OSError:
            pass
        time.sleep(0.5)
    sys.exit(f"live: {what} did not happen within {DEADLINE_SECONDS} s")


def start_ttsd(binary, workdir):
    log = open(workdir / "ttsd.log", "w")
    process = subprocess.Popen(
        [binary, "serve", "--listen", "127.0.0.1:0", "--admin-listen", f"127.0.0.1:{free_port()}",
         "--voice", "espeak-en-us", "--threads", "1"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
    deadline = time.monotonic() + DEADLINE_SECONDS
    for line in process.stdout:
        match = re.match(r"ttsd admin: http://(\S+)", line)
        if match:
            return process, match.group(1)
        if time.monotonic() > deadline:
            break
    sys.exit("live: ttsd did not announce its admin address; see its log")


def config(source, ttsd_admin, node):
    shipped = yaml.safe_load(source.read_text())
    kept, dropped = [], []
    for job in shipped.get("scrape_configs", []):
        if job["job_name"] == "ttsd-gateway":
            job["static_configs"] = [{"targets": [ttsd_admin]}]
            kept.append(job)
        else:
            dropped.append(job["job_name"])
    kept.append({"job_name": "node", "static_configs": [{"targets": [node]}]})
    shipped["scrape_configs"] = kept
    shipped.pop("alerting", None)
    shipped["global"]["scrape_interval"] = "1s"
    shipped["rule_files"] = [str(ROOT / "deploy/prometheus/rules/*.yml")]
    return shipped, dropped


def main():
    binary = sys.argv[1]
    source = ROOT / "deploy/prometheus/prometheus.yml"
    if not source.exists():
        print("live: skipped: deploy/prometheus/prometheus.yml does not exist yet")
        sys.exit(77)
    node_exporter = shutil.which("prometheus-node-exporter")
    prometheus = shutil.which("prometheus")
    if not node_exporter or not prometheus:
        sys.exit("live: needs prometheus and prometheus-node-exporter (scripts/install-deps.sh test)")
    workdir = Path(tempfile.mkdtemp(prefix="ttsd-live-"))
    processes = []
    try:
        ttsd, admin = start_ttsd(binary, workdir)
        processes.append(ttsd)
        node = f"127.0.0.1:{free_port()}"
        processes.append(subprocess.Popen(
            [node_exporter, f"--web.listen-address={node}", "--collector.disable-defaults",
             "--collector.cpu", "--collector.meminfo", "--collector.loadavg"],
            stdout=subprocess.DEVNULL, stderr=open(workdir / "node.log", "w")))
        shipped, dropped = config(source, admin, node)
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(shipped))
        web = f"127.0.0.1:{free_port()}"
        processes.append(subprocess.Popen(
            [prometheus, f"--config.file={workdir / 'prometheus.yml'}", f"--web.listen-address={web}",
             f"--storage.tsdb.path={workdir / 'data'}"],
            stdout=subprocess.DEVNULL, stderr=open(workdir / "prometheus.log", "w")))
        deadline = time.monotonic() + DEADLINE_SECONDS
        health = {}

        def all_up():
            targets = json.loads(get(f"http://{web}/api/v1/targets"))["data"]["activeTargets"]
            health.clear()
            health.update({t["labels"]["job"]: t["health"] for t in targets})
            return len(health) == 2 and all(h == "up" for h in health.values())

        wait("every target up", deadline, all_up)
        rules = json.loads(get(f"http://{web}/api/v1/rules"))["data"]["groups"]
        print(f"live: Prometheus {web} ran deploy/prometheus/prometheus.yml: targets up: "
              f"{', '.join(f'{job}={state}' for job, state in sorted(health.items()))}; "
              f"{sum(len(g['rules']) for g in rules)} rules in {len(rules)} groups loaded; "
              f"jobs without a process here: {', '.join(dropped) or 'none'}")
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
