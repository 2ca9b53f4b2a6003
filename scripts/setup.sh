#!/usr/bin/env bash
# Set-up shared by the README's two commands: a Python venv in .venv with maturin,
# then the project installed into it (`pip install .`: the `ray` executable with the
# GCS, raylet and autoscaler daemons, and the `ray` Python package with its Rust
# extension), exactly as a user's `pip install .` would.
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

step "pip install . (release build of the ray executable and the extension; the first build takes a few minutes)"
.venv/bin/python -m pip install --quiet --no-build-isolation .
.venv/bin/ray --version
.venv/bin/python -c "import ray; print('import ray:', ray.__version__)"
