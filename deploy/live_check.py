#!/usr/bin/env python3
"""Runs deploy/prometheus/prometheus.yml for real: Debian's Prometheus scraping a real `ttsd serve` (one
in-process, one routing to the worker it finds through a real `redis-server`), a real `ttsd worker` and
Debian's prometheus-node-exporter, all on loopback ports chosen here, until every target is up; then drives
a small load (`ttsd bench`, with barge-ins) and evaluates every Grafana dashboard query whose needs
(deploy/grafana/needs.json) this setup meets, failing on any that returns no series.

The shipped file is used as it is except for addresses: the `ttsd-gateway` and `ttsd-worker` jobs' targets
become the started processes' admin ports, jobs with no process here are dropped and listed, a `node`
job is added for node-exporter, alerting is left out, and `rule_files` points at the shipped rules. Without
a shipped file yet, a minimal one (the same two jobs, no rules) still serves the dashboard queries.

Usage: deploy/live_check.py TTSD_BINARY   (exit 0 when every target is up and every checkable query returns
data within the deadline)
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
import urllib.parse
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


def start_redis(workdir):
    """Starts a throwaway `redis-server` on loopback (no persistence); returns it and its URL."""
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=open(workdir / "redis.log", "w"))
    deadline = time.monotonic() + DEADLINE_SECONDS

    def answers():
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")

    wait("redis-server answering", deadline, answers)
    return process, f"redis://127.0.0.1:{port}"


def start_ttsd(binary, workdir, name="ttsd", extra=()):
    """Starts `ttsd serve` on loopback; returns it, its WebSocket base URL and its admin address."""
    log = open(workdir / f"{name}.log", "w")
    process = subprocess.Popen(
        [binary, "serve", "--listen", "127.0.0.1:0", "--admin-listen", f"127.0.0.1:{free_port()}",
         "--voice", "espeak-en-us", "--threads", "1", *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
    deadline = time.monotonic() + DEADLINE_SECONDS
    for line in process.stdout:
        match = re.match(r"ttsd ready: stream=(ws://[^/\s]+)\S* admin=http://(\S+)", line)
        if match:
            return process, match.group(1), match.group(2)
        if time.monotonic() > deadline:
            break
    sys.exit("live: ttsd did not announce its addresses; see its log")


def start_worker(binary, workdir, redis):
    """Starts `ttsd worker` on loopback, registered in `redis`; returns it and its admin address once its
    voice is resident."""
    admin = f"127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        [binary, "worker", "--listen", f"127.0.0.1:{free_port()}", "--admin-listen", admin, "--name", "live",
         "--voice", "espeak-en-us", "--threads", "1", "--redis", redis],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(workdir / "worker.log", "w"))
    deadline = time.monotonic() + DEADLINE_SECONDS
    wait("the worker ready", deadline, lambda: urllib.request.urlopen(f"http://{admin}/readiness", timeout=5).status == 200)
    return process, admin


def minimal_config():
    return {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "ttsd-gateway", "static_configs": [{"targets": []}]}]}


GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "5m", "$__interval": "1m", "$instance": ".*"}


def dashboard_queries(available):
    """(dashboard uid, panel title, query) for every query whose needs are all in `available`, and the
    panels left out with what they need."""
    needs = json.loads((ROOT / "deploy/grafana/needs.json").read_text())
    checkable, left_out = [], []
    for path in sorted((ROOT / "deploy/grafana/dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            panel_needs = set(needs[board["uid"]][str(panel["id"])])
            if not panel_needs <= available:
                left_out.append(f"{board['uid']}/{panel['title']} ({'+'.join(sorted(panel_needs - available))})")
                continue
            for target in panel["targets"]:
                expr = target["expr"]
                for name, value in GRAFANA_VARIABLES.items():
                    expr = expr.replace(name, value)
                checkable.append((board["uid"], panel["title"], expr))
    return checkable, left_out


def check_dashboards(binary, ws, web, available):
    subprocess.run([binary, "bench", "--url", ws, "--voice", "espeak-en-us", "--sessions", "4",
                    "--duration-seconds", "8", "--warmup-seconds", "0", "--barge-in-every", "2"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=DEADLINE_SECONDS)
    time.sleep(3)  # a few more scrapes after the load, so every rate has two samples
    checkable, left_out = dashboard_queries(available)
    empty = []
    for uid, title, expr in checkable:
        query = urllib.parse.urlencode({"query": expr})
        result = json.loads(get(f"http://{web}/api/v1/query?{query}"))["data"]["result"]
        if not result:
            empty.append(f"{uid}/{title}: {expr}")
    for line in empty:
        print(f"live: NO DATA {line}")
    print(f"live: {len(checkable) - len(empty)} of {len(checkable)} dashboard queries returned data under load; "
          f"{len(left_out)} panels need what does not run here: {', '.join(left_out)}")
    return not empty


def config(source, gateway_admins, worker_admin, node):
    shipped = yaml.safe_load(source.read_text())
    kept, dropped = [], []
    local = {"ttsd-gateway": gateway_admins, "ttsd-worker": [worker_admin]}
    for job in shipped.get("scrape_configs", []):
        if job["job_name"] in local:
            job["static_configs"] = [{"targets": local[job["job_name"]]}]
            kept.append(job)
        else:
            dropped.append(job["job_name"])
    kept.append({"job_name": "node", "static_configs": [{"targets": [node]}]})
    shipped["scrape_configs"] = kept
    shipped.pop("alerting", None)
    shipped["global"]["scrape_interval"] = "1s"
    shipped["global"]["evaluation_interval"] = "1s"
    shipped["rule_files"] = [str(ROOT / "deploy/prometheus/rules/*.yml")]
    return shipped, dropped


def main():
    binary = sys.argv[1]
    source = ROOT / "deploy/prometheus/prometheus.yml"
    shipped_exists = source.exists()
    node_exporter = shutil.which("prometheus-node-exporter")
    prometheus = shutil.which("prometheus")
    if not node_exporter or not prometheus:
        sys.exit("live: needs prometheus and prometheus-node-exporter (scripts/install-deps.sh test)")
    workdir = Path(tempfile.mkdtemp(prefix="ttsd-live-"))
    processes = []
    try:
        redis, redis_url = start_redis(workdir)
        processes.append(redis)
        ttsd, ws, admin = start_ttsd(binary, workdir)
        processes.append(ttsd)
        worker, worker_admin = start_worker(binary, workdir, redis_url)
        processes.append(worker)
        # A second gateway routing to the worker it discovers: the remote and Redis series.
        remote, _, remote_admin = start_ttsd(binary, workdir, "remote", ("--redis", redis_url))
        processes.append(remote)
        node = f"127.0.0.1:{free_port()}"
        processes.append(subprocess.Popen(
            [node_exporter, f"--web.listen-address={node}", "--collector.disable-defaults",
             "--collector.cpu", "--collector.meminfo", "--collector.loadavg"],
            stdout=subprocess.DEVNULL, stderr=open(workdir / "node.log", "w")))
        if shipped_exists:
            shipped, dropped = config(source, [admin, remote_admin], worker_admin, node)
        else:
            shipped = minimal_config()
            shipped["scrape_configs"][0]["static_configs"][0]["targets"] = [admin, remote_admin]
            shipped["scrape_configs"].append({"job_name": "ttsd-worker", "static_configs": [{"targets": [worker_admin]}]})
            shipped["scrape_configs"].append({"job_name": "node", "static_configs": [{"targets": [node]}]})
            dropped = []
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
            health.update({f'{t["labels"]["job"]}/{t["labels"]["instance"]}': t["health"] for t in targets})
            return len(health) == 4 and all(h == "up" for h in health.values())

        wait("every target up", deadline, all_up)
        rules = json.loads(get(f"http://{web}/api/v1/rules"))["data"]["groups"]
        what = "deploy/prometheus/prometheus.yml" if shipped_exists else "a minimal config (no deploy/prometheus/prometheus.yml yet)"
        print(f"live: Prometheus {web} ran {what}: targets up: "
              f"{', '.join(f'{job}={state}' for job, state in sorted(health.items()))}; "
              f"{sum(len(g['rules']) for g in rules)} rules in {len(rules)} groups loaded; "
              f"jobs without a process here: {', '.join(dropped) or 'none'}")
        available = {"gateway", "worker", "node", "redis", "remote"} | ({"rules"} if rules else set())
        slo_series = get(f"http://{web}/api/v1/query?{urllib.parse.urlencode({'query': 'count(tts_slo_events_total)'})}")
        if json.loads(slo_series)["data"]["result"]:
            available.add("slo")
        if not check_dashboards(binary, ws, web, available):
            sys.exit(1)
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
