#!/usr/bin/env python3
"""Generates ttsd's Grafana dashboards (deploy/grafana/dashboards/*.json) from one description.

Usage: deploy/grafana/generate.py          write the JSON files
       deploy/grafana/generate.py --check  fail when a committed file differs from what this writes

Plain Python, standard library only. Metric names are those of docs/telemetry.md; SLO series come from
`tts_slo_events_total{slo, result}` and the recording rules `ttsd rules` writes (`slo:objective:ratio`,
`slo:sli_error:ratio_rate<window>`).

Every panel has a unit, a description and the `${datasource}` variable; every range selector is
`[$__rate_interval]` (budget panels over the whole time range use `[$__range]`). Each panel also names,
in `needs`, what must run for its query to return data: `gateway` (ttsd serve), `worker` (ttsd worker),
`remote` (a gateway with remote workers), `redis`, `gpu` (an NVIDIA GPU), `node` (node-exporter),
`rules` (Prometheus loaded deploy/prometheus/rules), `slo` (a ttsd that counts `tts_slo_events_total`). The live check evaluates the queries whose needs it
can meet and lists the others. `needs` is kept out of the JSON Grafana reads: it goes to
deploy/grafana/needs.json.
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "dashboards"
DATASOURCE_UID = "ttsd-prometheus"
DS = {"type": "prometheus", "uid": "${datasource}"}
SCHEMA_VERSION = 39
RI = "$__rate_interval"


def q(quantile, metric, by="le", where=""):
    """histogram_quantile over a rate of `metric`_bucket."""
    selector = f"{metric}_bucket{{{where}}}" if where else f"{metric}_bucket"
    return f"histogram_quantile({quantile}, sum by ({by}) (rate({selector}[{RI}])))"


def target(expr, legend, ref):
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "range": True, "refId": ref}


class Board:
    """Lays panels out on Grafana's 24-column grid, two per row unless told otherwise."""

    def __init__(self, uid, title, description, tags, variables=()):
        self.uid, self.title, self.description, self.tags = uid, title, description, tags
        self.variables = list(variables)
        self.panels, self.needs = [], {}
        self.x = self.y = self.row_h = 0

    def panel(self, kind, title, description, unit, queries, needs, width=12, height=8, **extra):
        if self.x + width > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        panel_id = len(self.panels) + 1
        refs = "ABCDEFGH"
        defaults = {"unit": unit}
        defaults.update(extra.pop("defaults", {}))
        panel = {
            "datasource": DS,
            "description": description,
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "gridPos": {"h": height, "w": width, "x": self.x, "y": self.y},
            "id": panel_id,
            "targets": [target(expr, legend, refs[i]) for i, (expr, legend) in enumerate(queries)],
            "title": title,
            "type": kind,
        }
        panel.update(extra)
        self.panels.append(panel)
        self.needs[str(panel_id)] = sorted(needs)
        self.x += width
        self.row_h = max(self.row_h, height)

    def json(self):
        return {
            "annotations": {"list": []},
            "description": self.description,
            "editable": True,
            "graphTooltip": 1,
            "links": [],
            "panels": self.panels,
            "refresh": "30s",
            "schemaVersion": SCHEMA_VERSION,
            "tags": self.tags,
            "templating": {"list": [DATASOURCE_VARIABLE, *self.variables]},
            "time": {"from": "now-1h", "to": "now"},
            "timezone": "utc",
            "title": self.title,
            "uid": self.uid,
            "version": 1,
        }


DATASOURCE_VARIABLE = {
    "current": {"text": "Prometheus", "value": DATASOURCE_UID},
    "description": "Prometheus that scrapes ttsd",
    "hide": 0,
    "label": "Data source",
    "name": "datasource",
    "query": "prometheus",
    "type": "datasource",
}


def instance_variable(metric):
    return {
        "allValue": ".*",
        "current": {"text": "All", "value": "$__all"},
        "datasource": DS,
        "description": "Scrape targets (admin ports) to show",
        "hide": 0,
        "includeAll": True,
        "label": "Instance",
        "multi": True,
        "name": "instance",
        "query": {"qryType": 1, "query": f"label_values({metric}, instance)", "refId": "instance"},
        "refresh": 2,
        "type": "query",
    }


def slo_line(value, color="red"):
    """A threshold drawn as a dashed line: the SLO on a latency chart."""
    return {
        "custom": {"thresholdsStyle": {"mode": "dashed"}},
        "thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": None}, {"color": color, "value": value}]},
    }


def overview():
    b = Board("ttsd-overview", "ttsd / Overview", "Is ttsd up, busy and within its SLOs: the page to open first.",
              ["ttsd"], [instance_variable("tts_build_info")])
    b.panel("stat", "Active sessions", "Sessions open now on every gateway (tts_sessions_active).", "short",
            [("sum(tts_sessions_active)", "sessions")], {"gateway"}, width=6)
    b.panel("stat", "Session starts", "Sessions started per second, all gateways (tts_sessions_started_total).", "ops",
            [(f"sum(rate(tts_sessions_started_total[{RI}]))", "starts/s")], {"gateway"}, width=6)
    b.panel("stat", "First audio p95", "95th percentile of text read → first frame sent (tts_first_audio_seconds); the SLO threshold is 0.3 s.",
            "s", [(q(0.95, "tts_first_audio_seconds"), "p95")], {"gateway"}, width=6, defaults=slo_line(0.3))
    b.panel("stat", "Failed utterances", "Share of utterances that ended in failure (tts_utterances_total{outcome=\"failed\"}).",
            "percentunit", [(f'sum(rate(tts_utterances_total{{outcome="failed"}}[{RI}])) / sum(rate(tts_utterances_total[{RI}]))', "failed")],
            {"gateway"}, width=6)
    b.panel("timeseries", "Processes up", "ttsd processes reporting tts_build_info, by version.", "short",
            [('count by (version) (tts_build_info{instance=~"$instance"})', "{{version}}")], {"gateway"})
    b.panel("timeseries", "Utterances by outcome", "Utterances ended per second, by outcome (tts_utterances_total).", "ops",
            [(f"sum by (outcome) (rate(tts_utterances_total[{RI}]))", "{{outcome}}")], {"gateway"})
    b.panel("timeseries", "Error messages sent", "Protocol error messages sent to clients per second, by code (tts_errors_sent_total).",
            "ops", [(f"sum by (code) (rate(tts_errors_sent_total[{RI}]))", "{{code}}")], {"gateway"})
    b.panel("timeseries", "SLO compliance (window)", "Share of events within each SLO over the server's own sliding window (tts_slo_*_compliance_ratio).",
            "percentunit", [("min(tts_slo_first_audio_compliance_ratio)", "first audio"),
                            ("min(tts_slo_barge_in_compliance_ratio)", "barge-in"),
                            ("min(tts_slo_jitter_compliance_ratio)", "pacing"),
                            ("min(tts_slo_availability_compliance_ratio)", "availability")], {"gateway"})
    return b


def realtime():
    b = Board("ttsd-realtime", "ttsd / Realtime performance",
              "What a listener hears: first audio, barge-in and pacing against their SLO lines, sessions and errors.", ["ttsd"])
    b.panel("gauge", "Active sessions", "Sessions open now (tts_sessions_active), summed over gateways.", "short",
            [("sum(tts_sessions_active)", "sessions")], {"gateway"}, width=6,
            defaults={"min": 0, "thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": None}, {"color": "orange", "value": 200}]}})
    b.panel("timeseries", "First audio p50 / p95 / p99", "Text read → first frame sent (tts_first_audio_seconds); dashed line: the 0.3 s SLO.",
            "s", [(q(p, "tts_first_audio_seconds"), f"p{int(p * 100)}") for p in (0.5, 0.95, 0.99)], {"gateway"}, width=18,
            defaults=slo_line(0.3))
    b.panel("timeseries", "Barge-in p95", "STOP/PAUSE read → audio stopped (tts_barge_in_seconds), by command; dashed line: 50 ms.",
            "s", [(q(0.95, "tts_barge_in_seconds", "le, command"), "{{command}}")], {"gateway"}, defaults=slo_line(0.05))
    b.panel("timeseries", "Pacing: frame interval p50 / p99", "Interval between consecutive frames of an utterance (tts_frame_interval_seconds), nominally 20 ms; dashed line: the 30 ms SLO.",
            "s", [(q(0.5, "tts_frame_interval_seconds"), "p50"), (q(0.99, "tts_frame_interval_seconds"), "p99")], {"gateway"},
            defaults=slo_line(0.03))
    b.panel("timeseries", "Session start rate", "Sessions started per second by endpoint (tts_sessions_started_total).", "ops",
            [(f"sum by (endpoint) (rate(tts_sessions_started_total[{RI}]))", "{{endpoint}}")], {"gateway"})
    b.panel("timeseries", "Error rate", "Error messages sent per second by code (tts_errors_sent_total) and refused sessions by reason (tts_sessions_refused_total).",
            "ops", [(f"sum by (code) (rate(tts_errors_sent_total[{RI}]))", "error {{code}}"),
                    (f"sum by (reason) (rate(tts_sessions_refused_total[{RI}]))", "refused {{reason}}")], {"gateway"})
    b.panel("timeseries", "First audio stages p95", "Where first audio goes: intake, queue, engine, delivery (tts_first_audio_stage_seconds).",
            "s", [(q(0.95, "tts_first_audio_stage_seconds", "le, stage"), "{{stage}}")], {"gateway"})
    b.panel("timeseries", "Underruns", "Times synthesis fell behind the 20 ms clock, per second (tts_underruns_total).", "ops",
            [(f"sum by (engine) (rate(tts_underruns_total[{RI}]))", "{{engine}}")], {"gateway"})
    b.panel("timeseries", "Real-time factor p50", "Engine seconds per second of audio, per chunk (tts_real_time_factor_ratio); below 1 is faster than real time.",
            "short", [(q(0.5, "tts_real_time_factor_ratio", "le, voice"), "{{voice}}")], {"gateway"})
    b.panel("timeseries", "Frames dropped", "Synthesised frames never sent, by reason (tts_frames_dropped_total).", "ops",
            [(f"sum by (reason) (rate(tts_frames_dropped_total[{RI}]))", "{{reason}}")], {"gateway"})
    return b


def resources():
    b = Board("ttsd-resources", "ttsd / Resources", "CPU, memory, GPUs, queues and Redis, per ttsd process.", ["ttsd"],
              [instance_variable("tts_build_info")])
    b.panel("timeseries", "CPU", "CPU cores busy per process (rate of process_cpu_seconds_total); 1 = one core.", "short",
            [(f'rate(process_cpu_seconds_total{{instance=~"$instance"}}[{RI}]) and on (instance) tts_build_info', "{{instance}}")],
            {"gateway"})
    b.panel("timeseries", "Resident memory", "Resident set size per process (process_resident_memory_bytes).", "bytes",
            [('process_resident_memory_bytes{instance=~"$instance"} and on (instance) tts_build_info', "{{instance}}")],
            {"gateway"})
    b.panel("timeseries", "Engine queue depth", "Chunks waiting for an engine thread (tts_queue_depth) against the queue's capacity (tts_queue_capacity).",
            "short", [('tts_queue_depth{instance=~"$instance"}', "depth {{instance}}"),
                      ('tts_queue_capacity{instance=~"$instance"}', "capacity {{instance}}")], {"gateway"})
    b.panel("timeseries", "Engine pool utilisation", "Share of engine-thread time spent on chunks (tts_pool_busy_seconds_total ÷ tts_pool_threads).",
            "percentunit", [(f'rate(tts_pool_busy_seconds_total{{instance=~"$instance"}}[{RI}]) / tts_pool_threads{{instance=~"$instance"}}', "{{instance}}")],
            {"gateway"})
    b.panel("timeseries", "Queue wait p95", "Chunk submitted → engine thread takes it (tts_queue_wait_seconds), by lane.", "s",
            [(q(0.95, "tts_queue_wait_seconds", "le, lane"), "{{lane}}")], {"gateway"})
    b.panel("timeseries", "Runtime stalls", "Async runtime timer wakes later than 20 ms, per second (tts_runtime_stalls_total).", "ops",
            [(f'rate(tts_runtime_stalls_total{{instance=~"$instance"}}[{RI}])', "{{instance}}")], {"gateway"})
    b.panel("timeseries", "GPU memory", "GPU memory used and total per worker and GPU (tts_gpu_memory_used_bytes, tts_gpu_memory_total_bytes).",
            "bytes", [('tts_gpu_memory_used_bytes{instance=~"$instance"}', "used {{instance}} gpu {{gpu}}"),
                      ('tts_gpu_memory_total_bytes{instance=~"$instance"}', "total {{instance}} gpu {{gpu}}")], {"worker", "gpu"})
    b.panel("timeseries", "GPU utilisation", "Share of NVML's sample period a kernel ran, per worker and GPU (tts_gpu_utilization_ratio).",
            "percentunit", [('tts_gpu_utilization_ratio{instance=~"$instance"}', "{{instance}} gpu {{gpu}}")], {"worker", "gpu"})
    b.panel("timeseries", "Worker queue depth", "Chunks waiting at each remote worker's pool, from its heartbeat (tts_worker_queue_depth).",
            "short", [("sum by (worker) (tts_worker_queue_depth)", "{{worker}}")], {"remote"})
    b.panel("timeseries", "Redis command latency p95", "Redis command sent → reply read, by command (tts_redis_command_seconds).", "s",
            [(q(0.95, "tts_redis_command_seconds", "le, command"), "{{command}}")], {"redis"})
    b.panel("timeseries", "Host CPU busy", "Share of host CPU time not idle (node-exporter's node_cpu_seconds_total).", "percentunit",
            [(f'1 - avg by (instance) (rate(node_cpu_seconds_total{{mode="idle"}}[{RI}]))', "{{instance}}")], {"node"})
    b.panel("timeseries", "Host memory available", "Memory available to new processes (node-exporter's node_memory_MemAvailable_bytes).",
            "bytes", [("node_memory_MemAvailable_bytes", "{{instance}}")], {"node"})
    return b


def models():
    b = Board("ttsd-models", "ttsd / Models", "Voices on the workers: resident, loaded, evicted, and what loading costs.", ["ttsd"],
              [instance_variable("tts_model_resident_voices")])
    b.panel("timeseries", "Resident voices", "Voices with a loaded instance, per worker and engine (tts_model_resident_voices).", "short",
            [('sum by (worker, engine) (tts_model_resident_voices{instance=~"$instance"})', "{{worker}} {{engine}}")], {"worker"})
    b.panel("timeseries", "Loads", "Voice loads finished per second, by reason (tts_model_loads_total).", "ops",
            [(f'sum by (reason) (rate(tts_model_loads_total{{instance=~"$instance"}}[{RI}]))', "{{reason}}")], {"worker"})
    b.panel("timeseries", "Evictions and unloads", "Voices unloaded per second: ttl and lru are evictions, manual is the admin API (tts_model_unloads_total).",
            "ops", [(f'sum by (reason) (rate(tts_model_unloads_total{{instance=~"$instance"}}[{RI}]))', "{{reason}}")], {"worker"})
    b.panel("timeseries", "Load failures", "Loads that gave no usable voice, per second, by reason (tts_model_load_failures_total).", "ops",
            [(f'sum by (reason) (rate(tts_model_load_failures_total{{instance=~"$instance"}}[{RI}]))', "{{reason}}")], {"worker"})
    b.panel("timeseries", "Mean load time", "Load started → instance ready, mean since each worker started (tts_model_load_seconds), per voice; loads are rare, so a rate over a short interval is mostly empty.",
            "s", [('sum by (voice) (tts_model_load_seconds_sum{instance=~"$instance"}) / sum by (voice) (tts_model_load_seconds_count{instance=~"$instance"})', "{{voice}}")],
            {"worker"})
    b.panel("timeseries", "Mean warm-up time", "Warm-up sentence submitted → synthesised on a new instance, mean since start (tts_model_warmup_seconds), per voice.",
            "s", [('sum by (voice) (tts_model_warmup_seconds_sum{instance=~"$instance"}) / sum by (voice) (tts_model_warmup_seconds_count{instance=~"$instance"})', "{{voice}}")],
            {"worker"})
    b.panel("timeseries", "Chunks by outcome", "Chunks received on Synthesize streams per second, by outcome (tts_worker_server_chunks_total).",
            "ops", [(f'sum by (outcome) (rate(tts_worker_server_chunks_total{{instance=~"$instance"}}[{RI}]))', "{{outcome}}")], {"worker"})
    b.panel("timeseries", "Worker first audio p95", "Chunk read from the stream → first audio handed back, per worker (tts_worker_server_first_audio_seconds).",
            "s", [(q(0.95, "tts_worker_server_first_audio_seconds", "le, worker"), "{{worker}}")], {"worker"})
    return b


def slos():
    b = Board("ttsd-slos", "ttsd / SLOs", "Error-budget burn per SLO, from tts_slo_events_total{slo, result} and the recording rules ttsd rules writes.",
              ["ttsd", "slo"])
    bad = f'sum by (slo) (rate(tts_slo_events_total{{result="bad"}}[{RI}]))'
    every = f"sum by (slo) (rate(tts_slo_events_total[{RI}]))"
    b.panel("timeseries", "Burn rate", "Bad-event share over the panel's interval divided by the error budget (1 − objective, slo:objective:ratio); 1 spends the budget exactly over the SLO period.",
            "short", [(f"({bad} / {every}) / (1 - slo:objective:ratio)", "{{slo}}")], {"gateway", "rules", "slo"}, width=24,
            defaults={"custom": {"thresholdsStyle": {"mode": "dashed"}},
                      "thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": None}, {"color": "orange", "value": 1}, {"color": "red", "value": 14.4}]}})
    b.panel("bargauge", "Error budget left (time range)", "1 − (bad share over the dashboard's time range ÷ error budget), per SLO: below 0 the range overspent.",
            "percentunit", [(f'1 - (sum by (slo) (increase(tts_slo_events_total{{result="bad"}}[$__range])) / sum by (slo) (increase(tts_slo_events_total[$__range]))) / (1 - slo:objective:ratio)', "{{slo}}")],
            {"gateway", "rules", "slo"}, defaults={"min": 0, "max": 1})
    b.panel("timeseries", "Events per second", "SLO events counted by the gateways, by SLO and result (tts_slo_events_total).", "ops",
            [(f"sum by (slo, result) (rate(tts_slo_events_total[{RI}]))", "{{slo}} {{result}}")], {"gateway", "slo"})
    b.panel("timeseries", "Error ratio, 5m and 1h windows", "Bad share per SLO as the alerting rules see it (slo:sli_error:ratio_rate5m, …1h), against the budget.",
            "percentunit", [("max by (slo) (slo:sli_error:ratio_rate5m)", "{{slo}} 5m"), ("max by (slo) (slo:sli_error:ratio_rate1h)", "{{slo}} 1h"),
                            ("max by (slo) (1 - slo:objective:ratio)", "{{slo}} budget")], {"gateway", "rules", "slo"}, width=24)
    return b


BOARDS = {"overview": overview, "realtime-performance": realtime, "resources": resources, "models": models, "slos": slos}


def render():
    files, needs = {}, {}
    for name, build in BOARDS.items():
        board = build()
        files[f"{name}.json"] = json.dumps(board.json(), indent=2, ensure_ascii=False) + "\n"
        needs[board.uid] = board.needs
    files["../needs.json"] = json.dumps(needs, indent=2, sort_keys=True) + "\n"
    return files


def main():
    check = "--check" in sys.argv[1:]
    stale = []
    for name, text in render().items():
        path = OUT / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path.resolve().relative_to(HERE.parent.parent)))
        else:
            OUT.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        sys.exit(f"stale, run deploy/grafana/generate.py: {', '.join(stale)}")
    print(f"{'checked' if check else 'wrote'} {len(BOARDS)} dashboards in {OUT.relative_to(HERE.parent.parent)}")


if __name__ == "__main__":
    main()
