#!/usr/bin/env bash
# `cargo deny check` with deny.toml: licences, bans (duplicate versions warn), sources (crates.io only),
# and advisories when a local RustSec database exists (docs/robustness.md, "Dependency policy").
# Installs cargo-deny once (`cargo install --locked cargo-deny`) when `cargo deny --version` fails.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo deny --version >/dev/null 2>&1; then
    echo "deny.sh: installing cargo-deny (once; several minutes on 2 cores)"
    cargo install --locked cargo-deny
fi
checks=(licenses bans sources)
db="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs"
if [ -n "$(ls -A "$db" 2>/dev/null)" ]; then
    checks+=(advisories)
else
    echo "deny.sh: no advisory database in $db (GitHub is unreachable here); advisories not checked"
fi
exec cargo deny --locked --offline check "${checks[@]}"
