#!/usr/bin/env python3
"""Checks ttsd's Grafana dashboards without a Grafana server.

1. Round trip through grafana-foundation-sdk: `Dashboard.from_json` then `to_json` (with the default
   panel and query plugins registered) must give back every key and value of the committed file, so a
   misspelt or unknown field, or a value of the wrong type, shows up as lost or changed.
2. A subset of grafana/dashboard-linter's rules, re-implemented: uid and title present and uids unique;
   a `datasource` variable of type datasource; every panel and target uses `${datasource}`; every panel
   has a unit and a description; every range selector is `[$__rate_interval]` (or `[$__range]`); no
   target without an expression; no two panels with the same id or title on one dashboard; refIds
   unique within a panel.
3. The datasource uid the dashboards default to is the one provisioning pins.

Usage: deploy/grafana/check.py  (needs the test venv: scripts/install-deps.sh test)
"""

import json
import re
import sys
from pathlib import Path

import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models.dashboard import Dashboard

HERE = Path(__file__).resolve().parent
RANGE = re.compile(r"\[([^\]]*)\]")
ALLOWED_RANGES = {"$__rate_interval", "$__range"}


def lost(original, round_tripped, path="$"):
    """Differences where the round trip dropped or changed something the original had."""
    if isinstance(original, dict):
        if not isinstance(round_tripped, dict):
            return [f"{path}: became {type(round_tripped).__name__}"]
        problems = []
        for key, value in original.items():
            if key not in round_tripped:
                problems.append(f"{path}.{key}: dropped")
            else:
                problems += lost(value, round_tripped[key], f"{path}.{key}")
        return problems
    if isinstance(original, list):
        if not isinstance(round_tripped, list) or len(original) != len(round_tripped):
            return [f"{path}: list changed"]
        return [p for i, (a, b) in enumerate(zip(original, round_tripped)) for p in lost(a, b, f"{path}[{i}]")]
    if original != round_tripped:
        return [f"{path}: {original!r} became {round_tripped!r}"]
    return []


def round_trip(board):
    decoded = Dashboard.from_json(board)
    return json.loads(json.dumps(decoded, cls=JSONEncoder))


def lint(name, board):
    problems = []
    say = lambda text: problems.append(f"{name}: {text}")  # noqa: E731
    for key in ("uid", "title"):
        if not board.get(key):
            say(f"no {key}")
    variables = board.get("templating", {}).get("list", [])
    ds = [v for v in variables if v.get("name") == "datasource"]
    if len(ds) != 1 or ds[0].get("type") != "datasource" or ds[0].get("query") != "prometheus":
        say("needs exactly one `datasource` variable of type datasource, query prometheus")
    for variable in variables:
        if variable.get("type") == "query" and variable.get("datasource", {}).get("uid") != "${datasource}":
            say(f"variable {variable.get('name')} does not use ${{datasource}}")
    ids, titles = set(), set()
    for panel in board.get("panels", []):
        title = panel.get("title", "")
        where = f"panel {panel.get('id')} {title!r}"
        if panel.get("id") in ids or title in titles:
            say(f"{where}: duplicate id or title")
        ids.add(panel.get("id"))
        titles.add(title)
        if not title:
            say(f"{where}: no title")
        if not panel.get("description"):
            say(f"{where}: no description")
        if not panel.get("fieldConfig", {}).get("defaults", {}).get("unit"):
            say(f"{where}: no unit")
        if panel.get("datasource", {}).get("uid") != "${datasource}":
            say(f"{where}: panel datasource is not ${{datasource}}")
        targets = panel.get("targets", [])
        if not targets:
            say(f"{where}: no targets")
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs):
            say(f"{where}: duplicate refIds")
        for t in targets:
            expr = t.get("expr", "").strip()
            if not expr:
                say(f"{where}: empty target {t.get('refId')}")
            if t.get("datasource", {}).get("uid") != "${datasource}":
                say(f"{where}: target {t.get('refId')} datasource is not ${{datasource}}")
            for window in RANGE.findall(expr):
                if window not in ALLOWED_RANGES:
                    say(f"{where}: range [{window}] is not [$__rate_interval]")
    return problems


def main():
    register_default_plugins()
    pinned = yaml.safe_load((HERE / "provisioning/datasources/prometheus.yml").read_text())
    pinned_uid = pinned["datasources"][0]["uid"]
    problems, uids, panels, targets = [], set(), 0, 0
    files = sorted((HERE / "dashboards").glob("*.json"))
    for path in files:
        board = json.loads(path.read_text())
        name = path.name
        for problem in lost(board, round_trip(board)):
            problems.append(f"{name}: grafana-foundation-sdk round trip: {problem}")
        problems += lint(name, board)
        if board.get("uid") in uids:
            problems.append(f"{name}: uid {board.get('uid')} used twice")
        uids.add(board.get("uid"))
        ds = next(v for v in board["templating"]["list"] if v.get("name") == "datasource")
        if ds.get("current", {}).get("value") != pinned_uid:
            problems.append(f"{name}: datasource default {ds.get('current')} is not the provisioned uid {pinned_uid}")
        panels += len(board.get("panels", []))
        targets += sum(len(p.get("targets", [])) for p in board.get("panels", []))
    for problem in problems:
        print(f"FAIL {problem}")
    if problems or not files:
        sys.exit(1)
    print(f"{len(files)} dashboards, {panels} panels, {targets} queries: grafana-foundation-sdk round trip "
          f"lossless, lint subset clean, datasource uid {pinned_uid} pinned")


if __name__ == "__main__":
    main()
