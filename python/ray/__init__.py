"""Ray, with a Rust runtime: the cluster's Python API."""

from ray._raylet import __version__  # noqa: F401
from ray._private import worker as _worker

__all__ = ["__version__", "init", "shutdown", "is_initialized", "nodes", "cluster_resources"]


def init(address=None, *, ignore_reinit_error=False, **kwargs):
    """Connects this process to a Ray cluster.

    `address` is "HOST:PORT", "auto" (the cluster started on this machine with
    `ray start --head`, or $RAY_ADDRESS), or None (the same, when one is running).
    """
    if _worker.global_connection() is not None:
        if ignore_reinit_error:
            return _worker.global_connection()
        raise RuntimeError(
            "Maybe you called ray.init twice by accident? This error can be suppressed by passing in "
            "'ignore_reinit_error=True' or by calling 'ray.shutdown()' prior to 'ray.init()'."
        )
    resolved = _worker.resolve_address(address)
    if resolved is None:
        raise ConnectionError(
            "No running Ray cluster was found (start one with `ray start --head`, or pass address=)."
        )
    return _worker.connect(resolved)


def shutdown():
    """Disconnects this process from the cluster."""
    _worker.disconnect()


def is_initialized():
    """True after ray.init()."""
    return _worker.global_connection() is not None


def _connection():
    conn = _worker.global_connection()
    if conn is None:
        raise RuntimeError("Ray is not initialized yet: call ray.init() first.")
    return conn


def nodes():
    """Every node of the cluster, in Ray's dict layout."""
    out = []
    for node_id, alive, addr, port, resources, labels, node_type, is_head in _connection().gcs.nodes():
        out.append(
            {
                "NodeID": node_id,
                "Alive": alive,
                "NodeManagerAddress": addr,
                "NodeManagerPort": port,
                "Resources": dict(resources) if alive else {},
                "Labels": dict(labels),
                "NodeName": addr,
                "NodeTypeName": node_type,
                "IsHeadNode": is_head,
            }
        )
    return out


def cluster_resources():
    """Total resources of the live nodes."""
    total = {}
    for n in nodes():
        if n["Alive"]:
            for k, v in n["Resources"].items():
                total[k] = total.get(k, 0.0) + v
    return total
