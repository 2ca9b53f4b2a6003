"""The GCS's internal key-value store, as Ray's ``ray.experimental.internal_kv``
(used by libraries to share small values across a cluster). Keys and values are
bytes (str is encoded as UTF-8); ``namespace=None`` is the default namespace.
Values live in the GCS tables, so they survive a restart of the GCS."""

from ray._private import worker as _worker


def _core():
    conn = _worker.global_connection()
    if conn is None:
        raise RuntimeError("ray.experimental.internal_kv needs a connected Ray: call ray.init() first")
    return conn.core


def _b(v, what):
    if isinstance(v, str):
        return v.encode()
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v)
    raise TypeError(f"{what} must be bytes or str, not {type(v).__name__}")


def _ns(namespace):
    return "" if namespace is None else _b(namespace, "namespace").decode()


def _internal_kv_initialized():
    """True when connected to a cluster."""
    return _worker.global_connection() is not None


def _internal_kv_get(key, *, namespace=None):
    """The value of ``key``, or None."""
    v = _core().kv_get(_ns(namespace), _b(key, "key"))
    return None if v is None else bytes(v)


def _internal_kv_exists(key, *, namespace=None):
    """True when ``key`` has a value."""
    return _internal_kv_get(key, namespace=namespace) is not None


def _internal_kv_put(key, value, overwrite=True, *, namespace=None):
    """Stores ``value`` under ``key``. Returns True when the key already existed
    (Ray's meaning); without ``overwrite`` an existing value is kept."""
    added = _core().kv_put(_ns(namespace), _b(key, "key"), _b(value, "value"), bool(overwrite))
    return not added


def _internal_kv_del(key, *, del_by_prefix=False, namespace=None):
    """Deletes ``key`` (or every key starting with it); returns how many went."""
    return _core().kv_del(_ns(namespace), _b(key, "key"), bool(del_by_prefix))


def _internal_kv_list(prefix, *, namespace=None):
    """The keys starting with ``prefix``."""
    return [bytes(k) for k in _core().kv_keys(_ns(namespace), _b(prefix, "prefix"))]
