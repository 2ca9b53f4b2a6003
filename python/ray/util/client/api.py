"""The Ray API in Ray Client mode: what `ray.init`, `ray.get`, `ray.put`, ...
do when this process is connected through `ray.init("ray://HOST:PORT")`.
The functions in `ray/__init__.py` hand their calls here (one marked line
each); the checks on arguments are the same as in a normal driver."""

import os

from ray._private import api_checks as _checks
from ray._private import client_mode as _client_mode
from ray.util.client.common import ClientObjectRef

_REINIT = (
    "Maybe you called ray.init twice by accident? This error can be suppressed by passing in "
    "'ignore_reinit_error=True' or by calling 'ray.shutdown()' prior to 'ray.init()'."
)


def init(address, *, ignore_reinit_error, namespace, log_to_driver, node_args, kwargs):
    """ray.init() for Ray Client: returns a ClientContext."""
    from ray._private import worker as _worker

    client = _client_mode.current()
    if client is not None:
        if ignore_reinit_error:
            return client.context
        raise RuntimeError(
            "{} (This process is connected to {} through Ray Client; an API that Ray Client does not support "
            "also ends up here when it tries to start a local driver.)".format(_REINIT, client.address)
        )
    if _worker.global_connection() is not None:
        if ignore_reinit_error:
            import ray

            return ray.init(ignore_reinit_error=True)
        raise RuntimeError(_REINIT)
    if not (isinstance(address, str) and address.startswith("ray://")):
        address = os.environ["RAY_ADDRESS"].strip()
    given = sorted(k for k, v in node_args.items() if v is not None)
    if given:
        raise ValueError(
            "When connecting to an existing cluster through Ray Client, {} must not be given; they are set when "
            "the cluster's nodes start (ray start).".format(", ".join(given))
        )
    if namespace is not None and (not isinstance(namespace, str) or not namespace):
        raise TypeError("namespace must be None or a non-empty string, got {!r}.".format(namespace))
    runtime_env = kwargs.get("runtime_env") or None
    if runtime_env is not None:
        if not isinstance(runtime_env, dict):
            raise TypeError("runtime_env must be a dict, got {!r}.".format(type(runtime_env)))
        local = sorted(k for k in ("working_dir", "py_modules") if k in runtime_env)
        if local:
            raise NotImplementedError(
                "Ray Client does not upload local files yet: runtime_env {} cannot be used with ray.init(\"ray://...\"); "
                "use paths or URIs that exist on the cluster's nodes in the tasks' own runtime_env.".format(", ".join(local))
            )
    from ray.util.client.worker import ClientWorker

    client = ClientWorker(address, namespace=namespace, log_to_driver=log_to_driver, runtime_env=runtime_env)
    context = client.connect()
    _client_mode.set_current(client)
    return context


def shutdown():
    client = _client_mode.current()
    _client_mode.set_current(None)
    if client is not None:
        client.close()


def get(object_refs, *, timeout=None):
    single, refs = _checks.refs_for_get(object_refs, timeout, ClientObjectRef)
    if not refs:
        return []
    out = _client_mode.current().get(refs, timeout)
    return out[0] if single else out


def put(value):
    if type(value) is ClientObjectRef:
        raise TypeError(
            "Calling 'put' on an ray.ObjectRef is not allowed. If you really want to do this, you can wrap the "
            "ray.ObjectRef in a list and call 'put' on it."
        )
    return _client_mode.current().put(value)


def wait(object_refs, *, num_returns=1, timeout=None, fetch_local=True):
    refs = _checks.refs_for_wait(object_refs, num_returns, timeout, ClientObjectRef)
    if not refs:
        return [], []
    return _client_mode.current().wait(refs, num_returns, timeout, fetch_local)


def cancel(object_ref, *, force=False, recursive=True):
    if type(object_ref) is not ClientObjectRef:
        raise TypeError("ray.cancel() only supported for object refs. For actors, try ray.kill().")
    _client_mode.current().cancel(object_ref, force, recursive)


def cluster_call(op):
    """ray.nodes(), ray.cluster_resources(), ray.available_resources()."""
    return _client_mode.current().cluster_call(op)


def get_runtime_context():
    return _client_mode.current().runtime_context()
