"""Actors: `@ray.remote` classes, their handles and methods, `ray.method`,
`ray.get_actor`, `ray.kill` and `ray.actor.exit_actor`."""

import hashlib
import inspect
import numbers
import os
import pickle


from ray import _raylet
from ray._private import object_ref_generator as _gen
from ray._private import serialization as _serialization
from ray._private import runtime_env_packaging as _env
from ray._private import client_mode as _client_mode
from ray._private import worker as _worker
from ray.remote_function import _placement, encode_args

_ACTOR_OPTIONS = {
    "num_cpus",
    "num_gpus",
    "resources",
    "memory",
    "object_store_memory",
    "accelerator_type",
    "max_restarts",
    "max_task_retries",
    "max_concurrency",
    "max_pending_calls",
    "name",
    "namespace",
    "lifetime",
    "get_if_exists",
    "scheduling_strategy",
    "concurrency_groups",
    "runtime_env",
    "enable_task_events",
    "label_selector",
    "_metadata",
}

# Async actors run this many calls at once unless told otherwise (Ray's default).
DEFAULT_ASYNC_MAX_CONCURRENCY = 1000


def method(*args, **kwargs):
    """Options of one actor method: `@ray.method(num_returns=2)`,
    `@ray.method(concurrency_group="io")`."""
    valid = {"num_returns", "concurrency_group", "max_task_retries", "retry_exceptions", "enable_task_events", "tensor_transport"}

    def wrap(f):
        for k, v in kwargs.items():
            if k not in valid:
                raise ValueError("Invalid option {!r} for @ray.method; valid ones are {}.".format(k, sorted(valid)))
        if "num_returns" in kwargs:
            f.__ray_num_returns__ = kwargs["num_returns"]
        if "concurrency_group" in kwargs:
            f.__ray_concurrency_group__ = kwargs["concurrency_group"]
        if "max_task_retries" in kwargs:
            f.__ray_max_task_retries__ = kwargs["max_task_retries"]
        return f

    if len(args) == 1 and not kwargs and callable(args[0]):
        return args[0]
    if args:
        raise TypeError("@ray.method takes keyword arguments only, e.g. @ray.method(num_returns=2).")
    return wrap


def _methods(cls):
    """{name: (num_returns, concurrency group, is coroutine, max_task_retries)} of a class."""
    out = {}
    for name, m in inspect.getmembers(cls, predicate=lambda x: inspect.isfunction(x) or inspect.ismethod(x)):
        if name.startswith("__") and name not in ("__call__",):
            continue
        is_async = inspect.iscoroutinefunction(m) or inspect.isasyncgenfunction(m)
        # Generator methods stream their values by default, as in Ray.
        is_gen = inspect.isgeneratorfunction(m) or inspect.isasyncgenfunction(m)
        out[name] = (
            getattr(m, "__ray_num_returns__", "streaming" if is_gen else 1),
            getattr(m, "__ray_concurrency_group__", ""),
            is_async,
            getattr(m, "__ray_max_task_retries__", None),
        )
    return out


def _validate(options):
    for key in options:
        if key not in _ACTOR_OPTIONS:
            raise ValueError("Invalid option keyword {} for actors. Valid ones are {}.".format(key, sorted(_ACTOR_OPTIONS)))
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
    for key in ("max_restarts", "max_task_retries"):
        v = options.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < -1):
            raise ValueError("The option `{}` must be an integer >= -1, got {!r}.".format(key, v))
    mc = options.get("max_concurrency")
    if mc is not None and (not isinstance(mc, int) or isinstance(mc, bool) or mc < 1):
        raise ValueError("max_concurrency must be >= 1, got {!r}.".format(mc))
    lifetime = options.get("lifetime")
    if lifetime not in (None, "detached", "non_detached"):
        raise ValueError("actor `lifetime` argument must be one of 'detached', 'non_detached' and 'None'.")
    name = options.get("name")
    if name is not None and (not isinstance(name, str) or not name):
        raise ValueError("The actor `name` must be a non-empty string, got {!r}.".format(name))
    ns = options.get("namespace")
    if ns is not None and (not isinstance(ns, str) or not ns):
        raise ValueError("The actor `namespace` must be a non-empty string, got {!r}.".format(ns))
    if options.get("get_if_exists") and not name:
        raise ValueError("The actor name must be specified to use `get_if_exists`.")
    groups = options.get("concurrency_groups")
    if groups is not None:
        if not isinstance(groups, dict) or not all(isinstance(k, str) and isinstance(v, int) and v >= 1 for k, v in groups.items()):
            raise ValueError("concurrency_groups must be a dict of group name to a limit >= 1, got {!r}.".format(groups))


def _connection():
    import ray

    conn = _worker.global_connection()
    if conn is None:
        ray.init()
        conn = _worker.global_connection()
    return conn


class ActorID:
    """An actor's id."""

    def __init__(self, hex_id):
        self._hex = hex_id

    def hex(self):
        return self._hex

    def binary(self):
        return bytes.fromhex(self._hex)

    def __eq__(self, other):
        return isinstance(other, ActorID) and other._hex == self._hex

    def __hash__(self):
        return hash(self._hex)

    def __repr__(self):
        return "ActorID({})".format(self._hex)


class _Meta:
    """What a handle needs to know of its class: name, methods, how it is pickled."""

    def __init__(self, class_name, methods, class_id, job_id):
        self.class_name = class_name
        self.methods = methods
        self.class_id = class_id
        self.job_id = job_id


class ActorClass:
    """A class made remote with `@ray.remote`: `.remote(...)` creates an actor."""

    def __init__(self, cls, options):
        _validate(options)
        self.__ray_actor_class__ = cls
        self._cls = cls
        self._options = dict(options)
        self._pickled = None
        self._class_id = None
        self._methods = _methods(cls)
        self.__name__ = cls.__name__
        self.__doc__ = cls.__doc__

    def __call__(self, *args, **kwargs):
        raise TypeError(
            "Actors cannot be instantiated directly. Instead of '{0}()', use '{0}.remote()'.".format(self._cls.__name__)
        )

    def remote(self, *args, **kwargs):
        """Creates an actor; returns its handle."""
        return self._remote(args, kwargs, self._options)

    def options(self, **options):
        """The same class with other actor options."""
        merged = dict(self._options)
        merged.update(options)
        _validate(merged)
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

    def bind(self, *args, **kwargs):
        """A Ray DAG node creating this actor (ray.dag.ClassNode): nothing runs
        until `dag.execute()`; `node.method.bind(...)` binds its method calls."""
        return self._bind(args, kwargs, self._options)

    def _bind(self, args, kwargs, options):
        from ray.dag.class_node import ClassNode

        return ClassNode(self._cls, args, kwargs, dict(options), _actor_class=self)

    def _export(self, conn):
        if self._pickled is None:
            self._pickled = _serialization.dumps(self._cls)
            self._class_id = hashlib.sha1(self._pickled).digest()[:16]
        key = (id(conn), self._class_id)
        if key not in conn.exported:
            conn.core.export_function(self._class_id, self._pickled)
            conn.exported.add(key)
        return self._class_id

    def _remote(self, args, kwargs, options):
        if _client_mode.active() is not None:  # Ray Client mode: the server creates the actor
            return _client_mode.current().create_actor(self, args, kwargs, options)
        conn = _connection()
        class_id = self._export(conn)
        encoded, nested, keep = encode_args(conn, list(args) + list(kwargs.values()))
        is_async = any(m[2] for m in self._methods.values())
        max_concurrency = options.get("max_concurrency") or (DEFAULT_ASYNC_MAX_CONCURRENCY if is_async else 1)
        # Ray's default actor needs a CPU to be placed and holds none while it
        # runs; one that names any resource holds what it asks for (1 CPU unless
        # num_cpus says otherwise).
        explicit_cpus = options.get("num_cpus") is not None or any(
            options.get(k) for k in ("num_gpus", "resources", "accelerator_type")
        )
        resources = dict(options.get("resources") or {})
        resources["CPU"] = options["num_cpus"] if options.get("num_cpus") is not None else 1
        if options.get("num_gpus"):
            resources["GPU"] = options["num_gpus"]
        if options.get("memory"):
            resources["memory"] = options["memory"]
        if options.get("accelerator_type"):
            resources["accelerator_type:" + options["accelerator_type"]] = 0.001
        strategy, placement = _placement(conn, options, resources)
        placement_shape = {k: float(v) for k, v in resources.items() if v}
        hold = None
        if not explicit_cpus:
            hold = {k: v for k, v in placement_shape.items() if not (k == "CPU" or k.startswith("CPU_group_"))}
        namespace = options.get("namespace") or conn.namespace()
        actor_id, existing = _raylet.actor_create(
            conn.core,
            class_id,
            self._cls.__name__,
            encoded,
            list(kwargs.keys()),
            nested,
            placement_shape,
            hold,
            strategy,
            placement,
            options.get("name") or "",
            namespace,
            options.get("lifetime") == "detached",
            bool(options.get("get_if_exists")),
            options.get("max_restarts", 0),
            options.get("max_task_retries", 0),
            max_concurrency,
            is_async,
            dict(options.get("concurrency_groups") or {}),
            _env.for_task(conn, options.get("runtime_env")),
        )
        del keep
        if existing is not None:
            return _handle_from_info(conn, existing)
        meta = _Meta(self._cls.__name__, self._methods, class_id, conn.core.job_id)
        return ActorHandle(actor_id, meta)


class ActorMethod:
    """One method of an actor: `.remote(...)` calls it, `.options(...)` changes
    `num_returns` or the concurrency group."""

    def __init__(self, handle, name, num_returns, concurrency_group, max_task_retries):
        self._handle = handle
        self._name = name
        self._num_returns = num_returns
        self._group = concurrency_group
        self._max_task_retries = max_task_retries

    def __call__(self, *args, **kwargs):
        raise TypeError(
            "Actor methods cannot be called directly. Instead of running 'object.{0}()', try 'object.{0}.remote()'.".format(
                self._name
            )
        )

    def remote(self, *args, **kwargs):
        return self._call(args, kwargs, self._num_returns, self._group)

    def bind(self, *args, **kwargs):
        """A Ray DAG node of this call (ray.dag.ClassMethodNode; a tuple of
        nodes, one per return value, when it returns several)."""
        from ray.dag import class_node as cn

        handle = self._handle
        index = handle.__dict__.get("_ray_dag_bind_index", 0)
        handle.__dict__["_ray_dag_bind_index"] = index + 1
        options = {"num_returns": self._num_returns, "concurrency_group": self._group or None}
        if self._max_task_retries is not None:
            options["max_task_retries"] = self._max_task_retries
        other = {cn.PARENT_CLASS_NODE_KEY: handle, cn.PREV_CLASS_METHOD_CALL_KEY: None, cn.BIND_INDEX_KEY: index}
        node = cn.ClassMethodNode(self._name, args, kwargs, options, other_args_to_resolve=other)
        if isinstance(self._num_returns, int) and self._num_returns > 1:
            return tuple(
                cn.ClassMethodNode(
                    "return_idx_{}".format(i),
                    (node, i),
                    {},
                    {},
                    {cn.IS_CLASS_METHOD_OUTPUT_KEY: True, cn.PARENT_CLASS_NODE_KEY: handle},
                )
                for i in range(self._num_returns)
            )
        return node

    def options(self, **options):
        for k in options:
            if k not in ("num_returns", "concurrency_group", "name", "max_task_retries", "retry_exceptions", "enable_task_events"):
                raise ValueError("Invalid option {!r} for an actor method.".format(k))
        m = ActorMethod(
            self._handle,
            self._name,
            options.get("num_returns", self._num_returns),
            options.get("concurrency_group", self._group),
            options.get("max_task_retries", self._max_task_retries),
        )
        return m

    def _call(self, args, kwargs, num_returns, group):
        if _client_mode.active() is not None:  # Ray Client mode: the server calls the actor
            return _client_mode.current().call_method(
                self._handle, self._name, args, kwargs, num_returns, group, self._max_task_retries
            )
        conn = _connection()
        _gen.check_num_returns(num_returns)
        encoded, nested, keep = encode_args(conn, list(args) + list(kwargs.values()))
        kind, num_returns = _gen.return_kind(None, num_returns)
        refs = _raylet.actor_call(
            conn.core,
            self._handle._ray_actor_id,
            self._name,
            encoded,
            list(kwargs.keys()),
            max(num_returns, 1),
            nested,
            group or "",
            self._max_task_retries,
            kind,
        )
        del keep
        if kind == _gen.STREAMING:
            return _gen.ObjectRefGenerator(refs[0], conn.core)
        if num_returns == 0:
            return None
        if num_returns == 1:
            return refs[0]
        return refs


# Methods every actor has: `__ray_ready__` (True once it runs) and
# `__ray_terminate__` (ends it after the calls before it, as exit_actor()).
_BUILTIN_METHODS = ("__ray_ready__", "__ray_terminate__")


class ActorHandle:
    """A handle to an actor: its methods are called with `.remote(...)`. Handles
    can be passed to tasks and other actors, and pickled."""

    def __init__(self, actor_id, meta):
        self._ray_actor_id = actor_id
        self._ray_meta = meta

    @property
    def _actor_id(self):
        return ActorID(self._ray_actor_id)

    def __getattr__(self, name):
        if name.startswith("_ray_"):
            raise AttributeError(name)
        if name in _BUILTIN_METHODS:
            return ActorMethod(self, name, 1, "", None)
        m = self._ray_meta.methods.get(name)
        if m is None:
            raise AttributeError("'ActorHandle' object has no attribute '{}'".format(name))
        return ActorMethod(self, name, m[0], m[1], m[3])

    def __reduce__(self):
        meta = self._ray_meta
        return _rebuild_handle, (self._ray_actor_id, meta.class_name, meta.methods, meta.class_id, meta.job_id)

    def __repr__(self):
        return "Actor({}, {})".format(self._ray_meta.class_name, self._ray_actor_id)

    def __eq__(self, other):
        return isinstance(other, ActorHandle) and other._ray_actor_id == self._ray_actor_id

    def __hash__(self):
        return hash(self._ray_actor_id)


def _rebuild_handle(actor_id, class_name, methods, class_id, job_id):
    return ActorHandle(actor_id, _Meta(class_name, methods, class_id, job_id))


def _handle_from_info(conn, info):
    """A handle for an actor found in the GCS: its class is read from the
    function table of the job that created it."""
    class_id = bytes(info["function_id"])
    try:
        cls = pickle.loads(conn.core.fetch_function(info["job_id"], class_id))
        methods = _methods(cls)
    except Exception:  # noqa: BLE001 - a class that cannot be loaded here: every attribute is a method
        methods = _AnyMethods()
    return ActorHandle(info["actor_id"], _Meta(info["class_name"], methods, class_id, info["job_id"]))


class _AnyMethods(dict):
    def get(self, name, default=None):
        return (1, "", False, None)


def get_actor(name, namespace=None):
    """The handle of the live actor named `name` (in `namespace`, else the job's)."""
    if not isinstance(name, str) or not name:
        raise ValueError("Please supply a non-empty value to get_actor")
    if namespace is not None and not isinstance(namespace, str):
        raise TypeError("namespace must be None or a string, got {!r}.".format(namespace))
    if _client_mode.active() is not None:  # Ray Client mode
        return _client_mode.current().get_actor(name, namespace)
    conn = _connection()
    ns = namespace if namespace is not None else conn.namespace()
    info = _raylet.actor_info(conn.core, "", name, ns)
    if info is None or info["state"] == "DEAD":
        raise ValueError(
            "Failed to look up actor with name '{}'. This could because 1. You are trying to look up a named actor you "
            "didn't create. 2. The named actor died. 3. You did not use a namespace matching the namespace of the "
            "actor.".format(name)
        )
    return _handle_from_info(conn, info)


def kill(actor, *, no_restart=True):
    """Stops an actor at once (calls in flight fail). With no_restart=False it is
    restarted if its max_restarts allows."""
    if not isinstance(actor, ActorHandle):
        raise ValueError("ray.kill() only supported for actors. For tasks, try ray.cancel(). Got: {}.".format(type(actor)))
    if _client_mode.active() is not None:  # Ray Client mode
        return _client_mode.current().kill(actor, bool(no_restart))
    conn = _connection()
    _raylet.actor_kill(conn.core, actor._ray_actor_id, bool(no_restart))


def exit_actor():
    """Ends the actor this runs in, for good (it is not restarted); calls that
    come after fail with RayActorError."""
    conn = _worker.global_connection()
    if conn is None or getattr(conn, "actor_id", None) is None:
        raise TypeError("exit_actor API is called on a non-actor worker.")
    conn.exiting = True
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    _raylet.actor_kill(
        conn.core, conn.actor_id, True, "The actor is dead because its worker exited by a user request: exit_actor() was called."
    )
    raise SystemExit(0)


def list_named_actors(all_namespaces=False):
    """Names of the live named actors: of this namespace, or every one as
    {"name", "namespace"} dicts with all_namespaces=True."""
    if _client_mode.active() is not None:  # Ray Client mode
        return _client_mode.current().list_named_actors(bool(all_namespaces))
    conn = _connection()
    live = [a for a in _raylet.actor_list(conn.core, "", True) if a["name"]]
    if all_namespaces:
        return [{"name": a["name"], "namespace": a["namespace"]} for a in live]
    ns = conn.namespace()
    return [a["name"] for a in live if a["namespace"] == ns]


