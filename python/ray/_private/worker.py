"""Process-wide state of the Ray API: the connection made by ray.init()."""

import os
import threading

from ray import _raylet

_lock = threading.RLock()
_global = None  # the _Connection of this process, once ray.init() ran


class _Connection:
    def __init__(self, gcs, address):
        self.gcs = gcs
        self.address = address


def _read_current_cluster():
    path = os.path.join(_raylet.temp_root(), "ray_current_cluster")
    try:
        with open(path) as f:
            addr = f.read().strip()
    except OSError:
        return None
    return addr or None


def resolve_address(address):
    """Turns ray.init's `address` into HOST:PORT of a running cluster, or None."""
    if address in (None, "auto"):
        env = os.environ.get("RAY_ADDRESS", "").strip()
        if env and env != "auto":
            return env
        found = _read_current_cluster()
        if found is None and address == "auto":
            raise ConnectionError(
                "Could not find any running Ray instance. Please specify the one to connect to by "
                "setting `address` or the `RAY_ADDRESS` environment variable (no address is recorded "
                "in {}).".format(os.path.join(_raylet.temp_root(), "ray_current_cluster"))
            )
        return found
    addr = str(address)
    for prefix in ("ray://", "http://"):
        if addr.startswith(prefix):
            addr = addr[len(prefix):]
    return addr


def global_connection():
    with _lock:
        return _global


def connect(address):
    global _global
    with _lock:
        gcs = _raylet.GcsConnection(address)
        _global = _Connection(gcs, address)
        return _global


def disconnect():
    global _global
    with _lock:
        _global = None
