"""Every test gets its own temp root and home folder (its own cluster token and
session files); clusters are real processes started by ray.init() or `ray start`."""

import os
import subprocess
import sys

import pytest

import ray

VENV_BIN = os.path.dirname(sys.executable)
RAY = os.path.join(VENV_BIN, "ray")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "tmp"))
    for var in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE", "RAY_USE_TLS"):
        monkeypatch.delenv(var, raising=False)
    yield tmp_path
    if ray.is_initialized():
        ray.shutdown()
    subprocess.run([RAY, "stop", "--force"], capture_output=True)


@pytest.fixture
def ray_1cpu():
    ray.init(num_cpus=1)
    yield
    ray.shutdown()


@pytest.fixture
def ray_2cpu():
    ray.init(num_cpus=2)
    yield
    ray.shutdown()


def run_script(code, env=None, timeout=60):
    """Runs Python code in a fresh interpreter (a separate driver); returns the result."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )
