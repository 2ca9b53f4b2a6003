"""Whether this process talks to a cluster through the Ray Client
(`ray.init("ray://HOST:PORT")`). The API functions check `current()` first
and hand the call to the client when it is set. Kept free of imports so every
module of the package can use it."""

import sys

_client = None  # the ray.util.client.worker.ClientWorker, when connected


def current():
    """The connected Ray Client, or None (a normal driver or worker)."""
    return _client


def set_current(client):
    global _client
    _client = client


def api():
    """ray.util.client.api: the Ray API functions of client mode."""
    from ray.util.client import api as _api

    return _api


def is_client_address(address):
    """True when ray.init(address) asks for Ray Client ("ray://...", or RAY_ADDRESS holds one)."""
    import os

    if address in (None, "auto"):
        return os.environ.get("RAY_ADDRESS", "").strip().startswith("ray://")
    return isinstance(address, str) and address.startswith("ray://")


def active():
    """The Ray Client to hand an API call to: the connected one, or, when this
    is the process's first Ray call and RAY_ADDRESS holds a "ray://" address,
    the one ray.init() connects then (as a first call starts a driver
    otherwise). None in a normal driver or worker."""
    if _client is not None:
        return _client
    # Called by every API call: a cheap look at the driver's connection first.
    worker = sys.modules.get("ray._private.worker")
    if worker is not None and getattr(worker, "_global", None) is None and is_client_address(None):
        import ray

        ray.init()
    return _client
