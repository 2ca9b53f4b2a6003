"""PEP 517 backend: maturin, after building the native `ray` executable.

`pip install .` gets the `ray._raylet` extension from maturin and the `ray`
executable (the CLI, which is also the GCS and raylet daemons) from this step.
The executable is built with the same cargo profile and target folder as the
extension, so dependencies compile once, and lands in the wheel's scripts
(`.venv/bin/ray`) through maturin's data folder.
"""

import os
import shutil
import subprocess
import sys

import maturin
from maturin import *  # noqa: F401,F403  (get_requires_*, prepare_metadata_*, build_sdist)

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_DATA = os.path.join(_ROOT, "build", "wheel-data", "scripts")
# maturin checks the data folder exists even when only writing metadata.
os.makedirs(_DATA, exist_ok=True)
# maturin's PEP 517 hooks run the `maturin` executable from PATH; make sure the one
# installed next to this interpreter is found even in a venv that is not activated.
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")


def _build_ray_executable():
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(_ROOT, "target")
    features = os.environ.get("RAY_CARGO_FEATURES", "")
    cmd = ["cargo", "build", "--release", "--locked", "-p", "ray-cli", "--bin", "ray"]
    if features:
        cmd += ["--features", features]
    print("ray build: " + " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, cwd=_ROOT, check=True)
    os.makedirs(_DATA, exist_ok=True)
    dest = os.path.join(_DATA, "ray")
    shutil.copy2(os.path.join(target, "release", "ray"), dest)
    os.chmod(dest, 0o755)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _build_ray_executable()
    return maturin.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    _build_ray_executable()
    return maturin.build_editable(wheel_directory, config_settings, metadata_directory)
