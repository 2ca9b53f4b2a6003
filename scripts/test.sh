#!/usr/bin/env bash
# The whole test suite, from a fresh machine: the set-up (venv, `pip install .`),
# then every Rust test (unit, property, integration with real processes on
# loopback, decoder fuzzing) and the Python tests (real clusters).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

step "sshd and rsync (the cluster launcher's SSH tests start real sshd servers on loopback)"
ssh_pkgs=()
[ -x /usr/sbin/sshd ] && command -v ssh >/dev/null && command -v ssh-keygen >/dev/null || ssh_pkgs+=(openssh-server openssh-client)
command -v rsync >/dev/null || ssh_pkgs+=(rsync)
if [ ${#ssh_pkgs[@]} -gt 0 ]; then
    # No service start during the install: a system sshd on *:22 would take the tests' port.
    [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; rm_policy=1; }
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${ssh_pkgs[@]}"
    [ -z "${rm_policy:-}" ] || rm -f /usr/sbin/policy-rc.d
fi
mkdir -p /run/sshd

step "redis-server (the GCS fault-tolerance test keeps the cluster's tables in a real Redis)"
if ! [ -x /usr/bin/redis-server ]; then
    [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; rm_policy=1; }
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends redis-server
    [ -z "${rm_policy:-}" ] || rm -f /usr/sbin/policy-rc.d
fi

step "moto (a real EC2 and IAM API emulator: the AWS provider's tests talk to it)"
.venv/bin/python -m pip install --quiet "moto[server]==5.2.5"

step "python-hcl2 (python/tests/test_infra.py parses the Terraform under infra/ with it)"
.venv/bin/python -m pip install --quiet "python-hcl2==8.1.4"

step "Ray 2.60's wheel (its defaults.yaml files are test data for the config loader; downloaded once)"
export RAY_WHEEL_DIR="${RAY_WHEEL_DIR:-$HOME/.cache/ray-rs/ray-wheel}"
ls "$RAY_WHEEL_DIR"/ray-2.60.0-*.whl >/dev/null 2>&1 \
    || .venv/bin/python -m pip download --quiet --no-deps ray==2.60.0 -d "$RAY_WHEEL_DIR"

step "Chromium and websocket-client (python/tests/test_dashboard.py drives a real headless Chromium over the DevTools protocol)"
command -v chromium >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; }
.venv/bin/python -m pip install --quiet "websocket-client==1.8.0"

step "Ray 2.60 from PyPI in a venv of its own (tests/tests/jobs.rs points its JobSubmissionClient at our dashboard)"
export RAY_PYPI_PYTHON="$HOME/.cache/ray-rs/pyray-venv/bin/python"
"$RAY_PYPI_PYTHON" -c "import aiohttp, pydantic, ray.job_submission" 2>/dev/null || {
    rm -rf "$HOME/.cache/ray-rs/pyray-venv"
    .venv/bin/python -m venv "$HOME/.cache/ray-rs/pyray-venv"
    "$RAY_PYPI_PYTHON" -m pip install --quiet "$RAY_WHEEL_DIR"/ray-2.60.0-*.whl "aiohttp==3.14.5" "pydantic==2.14.4"
}

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
