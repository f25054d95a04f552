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
  # The real Python clients (OpenAI SDK, Wyoming) for the HTTP API and Wyoming tests, in a git-ignored venv
  # at the versions scripts/test-requirements.txt pins.
  root="$(cd "$(dirname "$0")/.." && pwd)"
  venv="$root/.cache/test-venv"
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
  fi
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$root/scripts/test-requirements.txt"
fi
