#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages ttsd needs to build, run and test, skipping those already there.
# Usage: scripts/install-deps.sh [run|test]   (test adds what the test suite needs)
set -euo pipefail
mode="${1:-run}"
packages=(espeak-ng espeak-ng-data libespeak-ng-dev python3 python3-venv gcc make)
if [ "$mode" = "test" ]; then
  # promtool (in Debian's prometheus package) lints a real /metrics scrape and tests the alert rules, and
  # the live rule check runs a real prometheus; prometheus-alertmanager gives amtool, which checks the
  # Alertmanager config, and the real Alertmanager the alert engine posts to in its tests; go tool pprof
  # (golang-go) reads the CPU and heap profiles; the worker tests start their own redis-server on a
  # loopback port.
  packages+=(procps prometheus prometheus-alertmanager golang-go redis-server)
  # make deploy-check: node-exporter for the live scrape, node and npm for the CRD and compose schemas
  # (Debian's, unless a node with npm is already installed), curl.
  packages+=(prometheus-node-exporter curl)
  command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)
  # The dashboard's browser test drives Debian's Chromium through playwright-core (npm, pinned in
  # tests/browser/package-lock.json); no browser is ever downloaded.
  packages+=(chromium)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "Installing: ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is missing: install Rust with rustup (https://rustup.rs); rust-toolchain.toml pins the version." >&2
  exit 1
fi
if [ "$mode" = "test" ]; then
  # Python tools of the tests (the real OpenAI and Wyoming clients) and of deploy-check, pinned, in a
  # git-ignored venv.
  VENV="${TEST_VENV:-.cache/test-venv}"
  cd "$(dirname "$0")/.."
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  if ! cmp -s scripts/test-requirements.txt "$VENV/.requirements"; then
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r scripts/test-requirements.txt
    cp scripts/test-requirements.txt "$VENV/.requirements"
  fi
  # npm validators, pinned by deploy/.tools/package-lock.json, into the git-ignored deploy/.tools/node_modules.
  if ! cmp -s deploy/.tools/package-lock.json deploy/.tools/node_modules/.ttsd-lock 2>/dev/null; then
    (cd deploy/.tools && npm ci --no-audit --no-fund --loglevel=error && cp package-lock.json node_modules/.ttsd-lock)
  fi
  # playwright-core, pinned by tests/browser/package-lock.json, into the git-ignored tests/browser/node_modules.
  if ! cmp -s tests/browser/package-lock.json tests/browser/node_modules/.ttsd-lock 2>/dev/null; then
    (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error && cp package-lock.json node_modules/.ttsd-lock)
  fi
fi
