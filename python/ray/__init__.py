"""Ray, with a Rust runtime: the cluster's Python API.

    import ray
    ray.init()

    @ray.remote
    def f(x):
        return x * x

    print(ray.get([f.remote(i) for i in range(4)]))  # [0, 1, 4, 9]
"""

import inspect as _inspect
import os as _os
import sys as _sys

from ray._private import log as _log
from ray import exceptions
from ray._private import api_checks as _checks
from ray._private import client_mode as _client_mode
from ray._raylet import ObjectRef, __version__  # noqa: F401
from ray._private import serialization as _ser
from ray._private import object_ref_generator as _generators
from ray._private import worker as _worker
from ray._private.object_ref_generator import DynamicObjectRefGenerator, ObjectRefGenerator  # noqa: F401

from ray import _raylet as _raylet_ext

# Where Ray's own code and examples import them from.
_raylet_ext.ObjectRefGenerator = ObjectRefGenerator
_raylet_ext.DynamicObjectRefGenerator = DynamicObjectRefGenerator
from ray.remote_function import RemoteFunction as _RemoteFunction
from ray.runtime_context import get_runtime_context as _local_runtime_context
from ray import actor  # noqa: E402
from ray.actor import get_actor, kill, method  # noqa: F401

__all__ = [
    "__version__",
    "init",
    "shutdown",
    "is_initialized",
    "remote",
    "get",
    "put",
    "wait",
    "cancel",
    "get_runtime_context",
    "get_actor",
    "kill",
    "method",
    "nodes",
    "cluster_resources",
    "available_resources",
    "ObjectRef",
    "ObjectRefGenerator",
    "DynamicObjectRefGenerator",
    "exceptions",
]


class RayContext(dict):
    """What ray.init() returns: the address info, also as attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __enter__(self):
        return self

    def disconnect(self):
        """Disconnects this process from the cluster (ray.shutdown())."""
        shutdown()

    def __exit__(self, *exc):
        shutdown()


def init(
    address=None,
    *,
    num_cpus=None,
    num_gpus=None,
    resources=None,
    object_store_memory=None,
    ignore_reinit_error=False,
    namespace=None,
    log_to_driver=True,
    runtime_env=None,
    _temp_dir=None,
    _system_config=None,
    **kwargs,
):
    """Connects this process to a Ray cluster, starting a local one if none runs.

    `address`: None (the cluster started on this machine by `ray start`, or a new
    local one), "auto" (must find a running one), "local" (always a new one),
    "HOST:PORT" of a head's GCS, or "ray://HOST:PORT" of a head's Ray Client
    server (from outside the cluster; returns a ClientContext).
    """
    if _client_mode.current() is not None or _client_mode.is_client_address(address):  # Ray Client mode
        node_args = dict(num_cpus=num_cpus, num_gpus=num_gpus, resources=resources,
                         object_store_memory=object_store_memory, _system_config=_system_config)
        return _client_mode.api().init(address, ignore_reinit_error=ignore_reinit_error, namespace=namespace,
                                       log_to_driver=log_to_driver, node_args=node_args,
                                       kwargs=dict(kwargs, runtime_env=runtime_env))
    conn = _worker.global_connection()
    if conn is not None:
        if ignore_reinit_error:
            return RayContext(_address_info(conn))
        raise RuntimeError(
            "Maybe you called ray.init twice by accident? This error can be suppressed by passing in "
            "'ignore_reinit_error=True' or by calling 'ray.shutdown()' prior to 'ray.init()'."
        )
    for key in ("num_cpus", "num_gpus"):
        v = locals()[key]
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
            raise ValueError("ray.init: `{}` must be a non-negative number, got {!r}.".format(key, v))
    if namespace is not None and (not isinstance(namespace, str) or not namespace):
        raise TypeError("namespace must be None or a non-empty string, got {!r}.".format(namespace))
    if resources is not None and not isinstance(resources, dict):
        raise TypeError("ray.init: `resources` must be a dict, got {!r}.".format(resources))
    from ray.runtime_env.runtime_env import validate as _validate_env

    runtime_env = _with_job_runtime_env(runtime_env)
    # Checked before anything starts: a bad runtime_env leaves nothing behind.
    _validate_env(runtime_env, "ray.init(runtime_env=...)")
    from ray import _raylet
    from ray._private import services

    gcs_address = _worker.resolve_address(address)
    local = None
    gcs = None
    if gcs_address is not None:
        try:
            gcs = _raylet.GcsConnection(gcs_address)
        except (ConnectionError, RuntimeError) as e:
            if address is not None or _os.environ.get("RAY_ADDRESS"):
                raise
            # A stale record of a cluster on this machine: start a new local one.
            print(
                "ray.init(): the cluster recorded at {} is not usable ({}); starting a new local cluster.".format(
                    gcs_address, e
                ),
                file=_sys.stderr,
            )
            gcs_address = None
        if gcs is not None and _system_config:
            raise ValueError("When connecting to an existing cluster, _system_config must not be provided.")
        if gcs is not None and any(v is not None for v in (num_cpus, num_gpus, resources, object_store_memory)):
            raise ValueError(
                "When connecting to an existing cluster, num_cpus, num_gpus, resources and object_store_memory "
                "must not be given; they are set when the cluster's nodes start (ray start)."
            )
    if gcs_address is None:
        if _system_config is not None and not isinstance(_system_config, dict):
            raise TypeError("ray.init: `_system_config` must be a dict, got {!r}.".format(_system_config))
        local = services.start_local_cluster(num_cpus, num_gpus, resources, object_store_memory, _temp_dir, _system_config)
        gcs_address = local["gcs_address"]
        gcs = _raylet.GcsConnection(gcs_address)
    node_ip = _worker.local_ip_towards(gcs_address)
    if local is not None:
        raylet_address = local["raylet_address"]
        node_ip = raylet_address.rpartition(":")[0].strip("[]")
    else:
        _, raylet_address = _worker.choose_raylet(gcs, node_ip)
        node_ip = raylet_address.rpartition(":")[0].strip("[]")
    worker_id = _os.urandom(16).hex()
    core = _raylet.CoreWorker.start_driver(
        gcs_address, raylet_address, node_ip, worker_id, _worker.worker_command(), " ".join(_sys.argv)
    )
    conn = _worker._Connection(
        core, gcs, _worker.SCRIPT_MODE, gcs_address, local_cluster=local, session_dir=(local or {}).get("session_dir")
    )
    import uuid as _uuid

    conn.set_namespace(namespace or str(_uuid.uuid4()))
    _worker.set_connection(conn)
    if runtime_env:
        from ray._private import runtime_env_packaging as _pkg

        try:
            conn.runtime_env = _pkg.resolve(conn, runtime_env, "ray.init(runtime_env=...)")
        except BaseException:
            _worker.disconnect()
            raise
    if log_to_driver:
        _worker.start_printer(conn)
    return RayContext(_address_info(conn))


def _with_job_runtime_env(runtime_env):
    """The runtime_env of a submitted job's driver: the job's (the dashboard
    hands it over in RAY_JOB_CONFIG_JSON_ENV_VAR, as Ray's does) under
    ray.init's own, whose fields win (env_vars are merged)."""
    text = _os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "").strip()
    if not text:
        return runtime_env
    import json as _json

    try:
        job_env = (_json.loads(text) or {}).get("runtime_env") or {}
    except (ValueError, AttributeError) as e:
        raise ValueError("RAY_JOB_CONFIG_JSON_ENV_VAR does not hold a JSON object: {}".format(e)) from None
    if not job_env:
        return runtime_env
    from ray._private.runtime_env_packaging import merge

    return merge(job_env, runtime_env)


def _address_info(conn):
    return {
        "address": conn.gcs_address,
        "gcs_address": conn.gcs_address,
        "node_id": conn.core.node_id,
        "session_dir": conn.session_dir,
        "webui_url": "",
    }


def shutdown():
    """Disconnects from the cluster (and stops the local one ray.init() started)."""
    if _client_mode.current() is not None:  # Ray Client mode: the server ends this client's job
        _client_mode.api().shutdown()
    _worker.disconnect()


def is_initialized():
    """True after ray.init()."""
    return _client_mode.current() is not None or _worker.global_connection() is not None


def get_runtime_context():
    """Where the calling code runs: job, node, worker, task and actor ids."""
    if _client_mode.current() is not None:  # Ray Client mode
        return _client_mode.api().get_runtime_context()
    return _local_runtime_context()


def _connection():
    conn = _worker.global_connection()
    if conn is None:
        init()
        conn = _worker.global_connection()
    return conn


def remote(*args, **kwargs):
    """Makes a function a remote function: `@ray.remote` or `@ray.remote(num_cpus=2, ...)`."""

    def make(obj, options):
        if _inspect.isclass(obj):
            return actor.ActorClass(obj, options)
        if not callable(obj):
            raise TypeError("@ray.remote expects a function, got {!r}.".format(obj))
        return _RemoteFunction(obj, options)

    if len(args) == 1 and not kwargs and callable(args[0]):
        return make(args[0], {})
    if args:
        raise TypeError("The @ray.remote decorator takes keyword arguments only, e.g. @ray.remote(num_cpus=2).")
    return lambda obj: make(obj, kwargs)


def get(object_refs, *, timeout=None):
    """The values of ObjectRefs: a single value for one ref, a list for a list.
    Raises the task's error (RayTaskError, also an instance of the original
    exception type) or GetTimeoutError."""
    if _client_mode.active() is not None:  # Ray Client mode
        return _client_mode.api().get(object_refs, timeout=timeout)
    conn = _connection()
    single, refs = _checks.refs_for_get(object_refs, timeout, ObjectRef)
    # The core raises Ray's exceptions itself (GetTimeoutError, ObjectLostError, ...).
    raw = conn.core.get(refs, timeout)
    out = []
    for kind, data, buffers in raw:
        value = _ser.deserialize(kind, data, buffers)
        if _ser.is_error_kind(kind):
            raise value
        out.append(value)
    return out[0] if single else out


def put(value):
    """Stores a value in the cluster; returns its ObjectRef."""
    if _client_mode.active() is not None:  # Ray Client mode
        return _client_mode.api().put(value)
    if type(value) is ObjectRef:
        raise TypeError("Calling 'put' on an ray.ObjectRef is not allowed. If you really want to do this, you can wrap the ray.ObjectRef in a list and call 'put' on it.")
    conn = _connection()
    data, buffers, refs = _ser.serialize(value)
    return conn.core.put(_ser.KIND_VALUE, data, buffers, refs)


def wait(object_refs, *, num_returns=1, timeout=None, fetch_local=True):
    """Splits refs into (ready, not_ready) once `num_returns` are ready or `timeout` passes."""
    if _client_mode.active() is not None:  # Ray Client mode
        return _client_mode.api().wait(object_refs, num_returns=num_returns, timeout=timeout, fetch_local=fetch_local)
    conn = _connection()
    refs = _checks.refs_for_wait(object_refs, num_returns, timeout, ObjectRef, also=ObjectRefGenerator)
    if not refs:
        return [], []
    if any(isinstance(r, ObjectRefGenerator) for r in refs):
        return _generators.wait(conn.core, refs, num_returns, timeout)
    flags = conn.core.wait(refs, num_returns, timeout)
    ready = [r for r, f in zip(refs, flags) if f][:num_returns]
    chosen = set(ready)
    not_ready = [r for r in refs if r not in chosen]
    return ready, not_ready


def cancel(object_ref, *, force=False, recursive=True):
    """Cancels the task producing `object_ref`: a queued task never runs; a running
    one gets KeyboardInterrupt (or its worker exits, with force=True). Its ray.get
    raises TaskCancelledError."""
    if _client_mode.active() is not None:  # Ray Client mode
        return _client_mode.api().cancel(object_ref, force=force, recursive=recursive)
    if type(object_ref) is not ObjectRef:
        raise TypeError("ray.cancel() only supported for object refs. For actors, try ray.kill().")
    _connection().core.cancel(object_ref, force)


def nodes():
    """Every node of the cluster, in Ray's dict layout."""
    if _client_mode.active() is not None:  # Ray Client mode
        return _client_mode.api().cluster_call("nodes")
    out = []
    for node_id, alive, addr, port, res, labels, node_type, is_head in _connection().gcs.nodes():
        out.append(
            {
                "NodeID": node_id,
                "Alive": alive,
                "NodeManagerAddress": addr,
                "NodeManagerHostname": addr,
                "NodeManagerPort": port,
                "Resources": dict(res) if alive else {},
                "Labels": dict(labels),
                "NodeName": addr,
                "NodeTypeName": node_type,
                "IsHeadNode": is_head,
            }
        )
    return out


def cluster_resources():
    """Total resources of the live nodes."""
    if _client_mode.active() is not None:  # Ray Client mode
        return _client_mode.api().cluster_call("cluster_resources")
    total = {}
    for n in nodes():
        if n["Alive"]:
            for k, v in n["Resources"].items():
                total[k] = total.get(k, 0.0) + v
    return total


def available_resources():
    """Free resources of the live nodes (from the last reports)."""
    if _client_mode.active() is not None:  # Ray Client mode
        return _client_mode.api().cluster_call("available_resources")
    status = _connection().gcs.resource_usage()
    free = {}
    for avail in status:
        for k, v in avail.items():
            free[k] = free.get(k, 0.0) + v
    return {k: v for k, v in free.items() if v > 0}
from ray import util  # noqa: E402,F401  (ray.util.placement_group, scheduling strategies)
from ray import cloudpickle  # noqa: E402,F401  (ray.cloudpickle: the cloudpickle module)
