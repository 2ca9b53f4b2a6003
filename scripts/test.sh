#!/usr/bin/env bash
# The whole test suite, from a fresh machine: Python venv, maturin, the project
# installed into .venv (`pip install .`, which builds the `ray` executable and the
# `ray._raylet` extension in the release profile), then every Rust test (unit,
# integration with real processes on loopback, decoder fuzzing) and the Python tests.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "Python environment (.venv)"
export PATH="$PWD/.venv/bin:$PATH"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "maturin>=1.8,<2" "pytest>=7" numpy

step "pip install . (release build of the ray executable and the extension)"
.venv/bin/python -m pip install --quiet --no-build-isolation .
.venv/bin/ray --version
.venv/bin/python -c "import ray; print('import ray:', ray.__version__)"

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
