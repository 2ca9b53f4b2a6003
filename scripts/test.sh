#!/usr/bin/env bash
# The whole test suite, from a fresh machine: the set-up (venv, `pip install .`),
# then every Rust test (unit, property, integration with real processes on
# loopback, decoder fuzzing) and the Python tests (real clusters).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

step "Rust tests"
export RAY_BIN="$PWD/.venv/bin/ray"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --release --workspace --locked --no-fail-fast
else
    echo "cargo-nextest not found; using cargo test"
    cargo test --release --workspace --locked --no-fail-fast
fi

step "Python tests (real clusters started by ray.init() and ray start)"
.venv/bin/python -m pytest python/tests -q -p no:cacheprovider
