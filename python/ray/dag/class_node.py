"""`ClassNode` (an actor created by `Actor.bind(...)`) and `ClassMethodNode`
(a method call bound with `class_node.method.bind(...)` or
`actor_handle.method.bind(...)`).

Method calls bound on one ClassNode run in the order they were bound: each
call names the one bound before it (`prev_class_method_call`), which is
submitted first, so executing the last call also runs the earlier ones on the
same actor."""

from ray.dag.constants import (
    BIND_INDEX_KEY,
    IS_CLASS_METHOD_OUTPUT_KEY,
    PARENT_CLASS_NODE_KEY,
    PREV_CLASS_METHOD_CALL_KEY,
)
from ray.dag.dag_node import DAGNode


class ClassNode(DAGNode):
    """An actor creation in a Ray DAG; executing it creates a new actor and
    returns its handle."""

    def __init__(self, cls, cls_args, cls_kwargs, cls_options, other_args_to_resolve=None, _actor_class=None):
        self._body = getattr(cls, "__ray_actor_class__", cls)
        self._actor_class = _actor_class if _actor_class is not None else _as_actor_class(cls)
        self._last_call = None
        super().__init__(cls_args, cls_kwargs, cls_options, other_args_to_resolve=other_args_to_resolve)
        if any(n._is_dag_input for n in self._get_all_child_nodes()):
            raise ValueError(
                "InputNode handles user dynamic input the DAG, and cannot be used as args, kwargs, or "
                "other_args_to_resolve in ClassNode constructor because it is not available at class "
                "construction or binding time."
            )

    def _copy_impl(self, new_args, new_kwargs, new_options, new_other_args_to_resolve):
        return ClassNode(
            self._body,
            new_args,
            new_kwargs,
            new_options,
            other_args_to_resolve=new_other_args_to_resolve,
            _actor_class=self._actor_class,
        )

    def _execute_impl(self, *args, **kwargs):
        from ray.actor import _validate

        options = dict(self._bound_options)
        _validate(options)
        return self._actor_class._remote(tuple(self._bound_args), dict(self._bound_kwargs), options)

    def __getattr__(self, method_name):
        if method_name.startswith("__") or "_body" not in self.__dict__:
            raise AttributeError("'ClassNode' object has no attribute '{}'".format(method_name))
        if method_name == "bind" and not hasattr(self._body, "bind"):
            raise AttributeError(".bind() cannot be used again on {} ".format(type(self)))
        if method_name == "remote" and not hasattr(self._body, "remote"):
            raise AttributeError(
                ".remote() cannot be used on {}. To execute the task graph for this node, use .execute().".format(
                    type(self)
                )
            )
        if not callable(getattr(self._body, method_name, None)):
            raise AttributeError(
                "The actor class '{}' has no method '{}'.".format(self._body.__name__, method_name)
            )
        return _UnboundClassMethodNode(self, method_name, {})

    def _body_line(self):
        return str(self._body)


class _UnboundClassMethodNode:
    """`class_node.method`: `.bind(...)` makes the ClassMethodNode."""

    def __init__(self, actor, method_name, options):
        self._actor = actor
        self._method_name = method_name
        self._options = options

    def bind(self, *args, **kwargs):
        other = {
            PARENT_CLASS_NODE_KEY: self._actor,
            PREV_CLASS_METHOD_CALL_KEY: self._actor._last_call,
        }
        node = ClassMethodNode(self._method_name, args, kwargs, self._options, other_args_to_resolve=other)
        self._actor._last_call = node
        return node

    def options(self, **options):
        """Options (num_returns, concurrency_group, ...) of the calls bound next."""
        self._options = options
        return self

    def __getattr__(self, attr):
        if attr == "remote":
            raise AttributeError(
                ".remote() cannot be used on ClassMethodNodes. Use .bind() instead to express an symbolic actor call."
            )
        raise AttributeError("'{}' object has no attribute '{}'".format(type(self).__name__, attr))


class _ClassMethodOutput:
    """Which return value of a multi-return method call a node stands for."""

    def __init__(self, class_method_call, output_idx):
        self.class_method_call = class_method_call
        self.output_idx = output_idx


class ClassMethodNode(DAGNode):
    """An actor method call in a Ray DAG (or, with is_class_method_output, one
    of the return values of such a call)."""

    def __init__(self, method_name, method_args, method_kwargs, method_options, other_args_to_resolve):
        other = other_args_to_resolve or {}
        self._method_name = method_name
        self._parent_class_node = other.get(PARENT_CLASS_NODE_KEY)
        self._prev_class_method_call = other.get(PREV_CLASS_METHOD_CALL_KEY)
        self._bind_index = other.get(BIND_INDEX_KEY)
        self._is_class_method_output = bool(other.get(IS_CLASS_METHOD_OUTPUT_KEY, False))
        self._class_method_output = None
        if self._is_class_method_output:
            self._class_method_output = _ClassMethodOutput(method_args[0], method_args[1])
        super().__init__(method_args, method_kwargs, method_options, other_args_to_resolve=other)

    def _copy_impl(self, new_args, new_kwargs, new_options, new_other_args_to_resolve):
        return ClassMethodNode(self._method_name, new_args, new_kwargs, new_options, new_other_args_to_resolve)

    def _execute_impl(self, *args, **kwargs):
        if self._is_class_method_output:
            return self._bound_args[0][self._class_method_output.output_idx]
        method = getattr(self._parent_class_node, self._method_name)
        options = {k: v for k, v in self._bound_options.items() if v is not None and not k.startswith("_")}
        if options.get("name") == "":
            del options["name"]
        if options:
            method = method.options(**options)
        return method.remote(*self._bound_args, **self._bound_kwargs)

    def get_method_name(self):
        return self._method_name

    def _get_bind_index(self):
        return self._bind_index

    def _get_actor_handle(self):
        from ray.actor import ActorHandle

        return self._parent_class_node if isinstance(self._parent_class_node, ActorHandle) else None

    @property
    def num_returns(self):
        """How many values the call returns."""
        if self._is_class_method_output:
            return self._class_method_output.class_method_call.num_returns
        n = self._bound_options.get("num_returns")
        if n is not None:
            return n
        return _method_num_returns(self._parent_class_node, self._method_name)

    @property
    def is_class_method_call(self):
        return not self._is_class_method_output

    @property
    def is_class_method_output(self):
        return self._is_class_method_output

    @property
    def class_method_call(self):
        """For an output node: the call whose return value it is."""
        return None if self._class_method_output is None else self._class_method_output.class_method_call

    @property
    def output_idx(self):
        """For an output node: the index of its return value."""
        return None if self._class_method_output is None else self._class_method_output.output_idx

    def _body_line(self):
        return "{}()".format(self._method_name)

    def __repr__(self):
        return self.__str__()


def _method_num_returns(parent, method_name):
    from ray.actor import ActorHandle

    if isinstance(parent, ClassNode):
        method = getattr(parent._body, method_name, None)
        return getattr(method, "__ray_num_returns__", 1)
    if isinstance(parent, ActorHandle):
        entry = parent._ray_meta.methods.get(method_name)
        return entry[0] if entry else 1
    return 1


def _as_actor_class(cls):
    from ray.actor import ActorClass

    if isinstance(cls, ActorClass):
        return cls
    if not isinstance(cls, type):
        raise TypeError("ClassNode expects a class to create an actor of, got {!r}.".format(cls))
    return ActorClass(cls, {})
