"""Finding the `ray` executable and starting a local cluster for `ray.init()`."""

import json
import os
import shutil
import subprocess
import sys
import tempfile


def ray_executable():
    """The native `ray` executable shipped with this package."""
    env = os.environ.get("RAY_BINARY")
    if env:
        return env
    here = os.path.join(os.path.dirname(sys.executable), "ray")
    if os.path.isfile(here) and os.access(here, os.X_OK):
        return here
    try:
        from importlib import metadata

        for f in metadata.files("ray") or []:
            if f.name == "ray" and "bin" in str(f.parent):
                p = str(f.locate())
                if os.access(p, os.X_OK):
                    return p
    except Exception:  # noqa: BLE001 - fall through to PATH
        pass
    found = shutil.which("ray")
    if found:
        return found
    raise RuntimeError(
        "cannot find the `ray` executable (looked next to {}, in the package's files and on PATH); "
        "reinstall with `pip install .` or set RAY_BINARY".format(sys.executable)
    )


def start_local_cluster(num_cpus=None, num_gpus=None, resources=None, object_store_memory=None, temp_dir=None, system_config=None):
    """Starts a GCS and a raylet on 127.0.0.1 that stop when this process exits.
    Returns the info dict the launcher wrote (gcs_address, raylet_address, ...)."""
    fd, info_path = tempfile.mkstemp(prefix="ray-init-", suffix=".json")
    os.close(fd)
    os.unlink(info_path)
    cmd = [
        ray_executable(),
        "start",
        "--head",
        "--port",
        "0",
        "--node-ip-address",
        "127.0.0.1",
        "--init-local-info",
        info_path,
        "--watch-pid",
        str(os.getpid()),
    ]
    if num_cpus is not None:
        cmd += ["--num-cpus", str(num_cpus)]
    if num_gpus is not None:
        cmd += ["--num-gpus", str(num_gpus)]
    if resources:
        cmd += ["--resources", json.dumps(resources)]
    if object_store_memory is not None:
        cmd += ["--object-store-memory", str(int(object_store_memory))]
    if temp_dir is not None:
        cmd += ["--temp-dir", str(temp_dir)]
    if system_config:
        cmd += ["--system-config", json.dumps(system_config)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise RuntimeError("Failed to start a local Ray cluster:\n" + (proc.stderr.strip() or proc.stdout.strip()))
    with open(info_path) as f:
        info = json.load(f)
    os.unlink(info_path)
    return info


def stop_local_cluster(info):
    """Stops the processes of a local cluster: the raylet first (it unregisters while
    the GCS still runs), then the GCS; anything left after a second is killed."""
    import signal
    import time

    def alive(pid):
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        try:
            with open("/proc/{}/stat".format(pid)) as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    for pid in reversed(info.get("pids", [])):
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            continue
        deadline = time.time() + 1.0
        while alive(pid) and time.time() < deadline:
            time.sleep(0.002)
        if alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
