"""`@ray.remote` functions."""

import hashlib
import inspect
import numbers


from ray import _raylet
from ray._private import object_ref_generator as _gen
from ray._private import runtime_env_packaging as _env
from ray._private import serialization
from ray._private import client_mode as _client_mode
from ray._private import worker as _worker

MAX_INLINE_ARG_BYTES = 100 * 1024
RETRY_EXCEPTIONS_KWARG = "__ray_retry_exceptions__"

_TASK_OPTIONS = {
    "num_cpus",
    "num_gpus",
    "resources",
    "memory",
    "max_retries",
    "retry_exceptions",
    "name",
    "num_returns",
    "accelerator_type",
    "scheduling_strategy",
    "runtime_env",
    "max_calls",
    "object_store_memory",
    "_generator_backpressure_num_objects",
    "enable_task_events",
}


def validate_options(options):
    for key in options:
        if key not in _TASK_OPTIONS:
            raise ValueError(
                "Invalid option keyword {} for remote functions. Valid ones are {}.".format(key, sorted(_TASK_OPTIONS))
            )
    for key in ("num_cpus", "num_gpus", "memory"):
        v = options.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Number) or v < 0):
            raise ValueError("The option `{}` must be a non-negative number, got {!r}.".format(key, v))
    res = options.get("resources")
    if res is not None:
        if not isinstance(res, dict):
            raise TypeError("The option `resources` must be a dict, got {!r}.".format(res))
        for k, v in res.items():
            if k in ("CPU", "GPU"):
                raise ValueError(
                    "Use the 'num_cpus' and 'num_gpus' keyword instead of specifying 'CPU' and 'GPU' in 'resources' keyword"
                )
            if isinstance(v, bool) or not isinstance(v, numbers.Number) or v < 0:
                raise ValueError("Resource quantities must be non-negative numbers, got {}={!r}.".format(k, v))
    mr = options.get("max_retries")
    if mr is not None and (not isinstance(mr, int) or isinstance(mr, bool) or mr < -1):
        raise ValueError("The option `max_retries` must be an integer >= -1, got {!r}.".format(mr))
    re_ = options.get("retry_exceptions")
    if re_ is not None and not isinstance(re_, bool):
        if not isinstance(re_, (list, tuple)) or not all(inspect.isclass(c) and issubclass(c, BaseException) for c in re_):
            raise TypeError("The option `retry_exceptions` must be a bool or a list of exception types.")
    nr = options.get("num_returns")
    if nr is not None:
        _gen.check_num_returns(nr)


def encode_args(conn, values):
    """Arguments for the core worker: refs as they are, small values inline, large
    ones put in the store first. Returns (encoded, nested refs, refs to keep
    alive until the task is submitted)."""
    encoded = []
    nested = []
    keep = []
    for v in values:
        if type(v) is _raylet.ObjectRef:
            encoded.append(("r", v))
            continue
        data, buffers, refs = serialization.serialize(v)
        size = len(data) + sum(len(b) for b in buffers)
        if size > MAX_INLINE_ARG_BYTES:
            ref = conn.core.put(serialization.KIND_VALUE, data, buffers, refs)
            keep.append(ref)
            encoded.append(("r", ref))
        else:
            encoded.append(("v", (serialization.KIND_VALUE, bytes(data), [bytes(b) for b in buffers])))
            nested.extend(refs)
    return encoded, nested, keep


class RemoteFunction:
    """A function that runs as a task: `f.remote(...)` returns ObjectRefs."""

    def __init__(self, function, options):
        validate_options(options)
        # Called from the decorator: user line <- lambda <- make <- here.
        _gen.warn_dynamic(options.get("num_returns"), stacklevel=4)
        self._function = function
        self._options = dict(options)
        # Ray names a task by its function's __name__ (output prefixes, errors).
        self._name = options.get("name") or getattr(function, "__name__", "task")
        self._pickled = None
        self._function_id = None
        # (generator kind, returns) when num_returns is not given.
        self._plain = None
        self.__doc__ = getattr(function, "__doc__", None)
        self.__name__ = getattr(function, "__name__", "task")
        self.__wrapped__ = function

    def __call__(self, *args, **kwargs):
        raise TypeError(
            "Remote functions cannot be called directly. Instead of running '{0}()', try '{0}.remote()'.".format(
                self.__name__
            )
        )

    def options(self, **options):
        """The same function with other task options."""
        merged = dict(self._options)
        merged.update(options)
        validate_options(merged)
        parent = self

        class _Bound:
            def remote(_self, *args, **kwargs):
                return parent._remote(args, kwargs, merged)

            def options(_self, **more):
                m = dict(merged)
                m.update(more)
                return parent.options(**m)

            def bind(_self, *args, **kwargs):
                return parent._bind(args, kwargs, merged)

        return _Bound()

    def remote(self, *args, **kwargs):
        """Submits the function as a task; returns its ObjectRef(s)."""
        return self._remote(args, kwargs, self._options)

    def bind(self, *args, **kwargs):
        """A Ray DAG node of this call (ray.dag.FunctionNode): nothing runs
        until `dag.execute()`; args may be other DAG nodes."""
        return self._bind(args, kwargs, self._options)

    def _bind(self, args, kwargs, options):
        from ray.dag.function_node import FunctionNode

        return FunctionNode(self._function, args, kwargs, dict(options), _remote_function=self)

    def _export(self, conn):
        if self._pickled is None:
            self._pickled = serialization.dumps(self._function)
            self._function_id = hashlib.sha1(self._pickled).digest()[:16]
        key = (id(conn), self._function_id)
        if key not in conn.exported:
            conn.core.export_function(self._function_id, self._pickled)
            conn.exported.add(key)
        return self._function_id

    def _remote(self, args, kwargs, options):
        import ray

        client = _client_mode.active()
        if client is not None:  # Ray Client mode: the server submits the task
            return client.call_function(self, args, kwargs, options)
        conn = _worker.global_connection()
        if conn is None:
            ray.init()
            conn = _worker.global_connection()
        function_id = self._export(conn)
        nr = options.get("num_returns")
        if nr is None or nr == 1:
            # The common case, decided once per function.
            if self._plain is None:
                self._plain = _gen.return_kind(self._function, None)
            kind, num_returns = self._plain if nr is None else (_gen.FIXED, 1)
        else:
            kind, num_returns = _gen.return_kind(self._function, nr)
        values = list(args) + list(kwargs.values())
        kwarg_names = list(kwargs.keys())
        retry_exceptions = options.get("retry_exceptions", False)
        if isinstance(retry_exceptions, (list, tuple)):
            values.append(list(retry_exceptions))
            kwarg_names.append(RETRY_EXCEPTIONS_KWARG)
            retry_exceptions = True
        encoded, nested, keep = encode_args(conn, values)  # noqa: F841 - `keep` holds large args until submitted
        resources = dict(options.get("resources") or {})
        resources["CPU"] = options.get("num_cpus", 1)
        if options.get("num_gpus"):
            resources["GPU"] = options["num_gpus"]
        if options.get("memory"):
            resources["memory"] = options["memory"]
        if options.get("accelerator_type"):
            resources["accelerator_type:" + options["accelerator_type"]] = 0.001
        strategy, placement = _placement(conn, options, resources)
        refs = conn.core.submit(
            function_id,
            options.get("name") or self._name,
            encoded,
            kwarg_names,
            max(num_returns, 1),
            {k: float(v) for k, v in resources.items() if v},
            options.get("max_retries", 3),
            bool(retry_exceptions),
            nested,
            strategy,
            placement,
            kind,
            _env.for_task(conn, options.get("runtime_env")),
        )
        if kind == _gen.STREAMING:
            return _gen.ObjectRefGenerator(refs[0], conn.core)
        if num_returns == 0:
            return None
        if num_returns == 1:
            return refs[0]
        return refs


def _placement(conn, options, resources):
    """The core worker's strategy tuple and placement group for a task, with its
    `resources` rewritten to a placement group's bundle resources (Ray's names:
    `CPU_group_<index>_<id>`, or `CPU_group_<id>` for any bundle) when it runs
    in one. Tasks submitted from a task whose group captures child tasks run in
    that group unless they name a strategy of their own."""
    from ray.util import scheduling_strategies as ss

    given = options.get("scheduling_strategy")
    strategy, pg = ss.encode(given)
    if pg is not None:
        group = pg.placement_group
        index = pg.placement_group_bundle_index
        if index is None:
            index = -1
        if not isinstance(index, int) or isinstance(index, bool) or index < -1:
            raise ValueError("placement_group_bundle_index must be an integer >= -1, got {!r}.".format(index))
        if group is None:
            return strategy, None
        count = len(group._bundle_cache) if group._bundle_cache is not None else None
        if count is not None and index >= count:
            raise ValueError(
                "placement_group_bundle_index {} is out of range: the placement group has {} bundle(s).".format(index, count)
            )
        placement = (group.id.hex(), index, bool(pg.placement_group_capture_child_tasks))
    else:
        current = getattr(conn, "current_placement_group", None)
        if given is None and current and current[2]:
            placement = (current[0], -1, True)
        else:
            return strategy, None
    gid, index, _ = placement
    plain = {k: v for k, v in resources.items() if v}
    resources.clear()
    # A task in bundle i takes from that bundle and from the group as a whole
    # (so tasks in "any bundle" cannot take the same share again).
    suffixes = [gid] + (["{}_{}".format(index, gid)] if index >= 0 else [])
    for suffix in suffixes:
        for k, v in plain.items():
            resources["{}_group_{}".format(k, suffix)] = v
        resources["bundle_group_{}".format(suffix)] = 0.001
    return strategy, placement
