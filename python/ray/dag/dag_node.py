"""`DAGNode`: a lazily bound call (`f.bind(...)`, `Actor.bind(...)`,
`actor.method.bind(...)`) whose arguments may be other nodes. `execute()` runs
the graph below a node, each node once, children before parents, and returns
what the node's call returns (an ObjectRef, a list of them, or an actor handle).

DAG nodes are found among a node's arguments at any depth inside lists, tuples,
dicts and sets; other objects are passed as they are.
"""

import copy
import uuid
import warnings

from ray.util.annotations import RayDeprecationWarning

# Types that never hold DAG nodes (skipped quickly while scanning arguments).
_ATOMS = (str, bytes, bytearray, int, float, complex, bool, type(None))


def _find_nodes(value, found, seen_nodes, seen_containers):
    """Appends the DAG nodes inside `value` to `found` (each object once, in
    the order they appear)."""
    if isinstance(value, DAGNode):
        if id(value) not in seen_nodes:
            seen_nodes.add(id(value))
            found.append(value)
        return
    if isinstance(value, _ATOMS):
        return
    if isinstance(value, (list, tuple, set, frozenset, dict)):
        if id(value) in seen_containers:
            return
        seen_containers.add(id(value))
        if isinstance(value, dict):
            for k, v in value.items():
                _find_nodes(k, found, seen_nodes, seen_containers)
                _find_nodes(v, found, seen_nodes, seen_containers)
        else:
            for item in value:
                _find_nodes(item, found, seen_nodes, seen_containers)


def _rebuild(original, items):
    """A container like `original` (same type) holding `items`."""
    kind = type(original)
    if kind is list:
        return items
    if kind is tuple:
        return tuple(items)
    if kind in (set, frozenset):
        return kind(items)
    if isinstance(original, tuple) and hasattr(original, "_fields"):
        return kind(*items)  # a namedtuple
    if isinstance(original, dict):
        try:
            new = copy.copy(original)
            new.clear()
            new.update(items)
            return new
        except Exception:  # noqa: BLE001 - a dict subclass that cannot be copied
            return dict(items)
    try:
        return kind(items)
    except Exception:  # noqa: BLE001 - a subclass with another constructor: its base type
        for base in (list, tuple, set, frozenset):
            if isinstance(original, base):
                return base(items)
        return items


def _replace_nodes(value, table, memo):
    """`value` with every DAG node replaced by table[id(node)]; containers that
    hold no node are returned as they are."""
    if isinstance(value, DAGNode):
        return table[id(value)]
    if isinstance(value, _ATOMS) or not isinstance(value, (list, tuple, set, frozenset, dict)):
        return value
    if id(value) in memo:
        return memo[id(value)]
    memo[id(value)] = value  # a container that holds itself stays as it is
    changed = False
    if isinstance(value, dict):
        items = []
        for k, v in value.items():
            nk = _replace_nodes(k, table, memo)
            nv = _replace_nodes(v, table, memo)
            changed = changed or nk is not k or nv is not v
            items.append((nk, nv))
    else:
        items = []
        for item in value:
            new = _replace_nodes(item, table, memo)
            changed = changed or new is not item
            items.append(new)
    result = _rebuild(value, items) if changed else value
    memo[id(value)] = result
    return result


class DAGNode:
    """A node of a Ray DAG: bound arguments (`args`, `kwargs`, which may hold
    other nodes), Ray options, and `other_args_to_resolve` (nodes and values a
    node type needs besides its call arguments, e.g. the actor of a method call)."""

    # Set on InputNode (one InputNode per DAG).
    _is_dag_input = False

    def __init__(self, args, kwargs, options, other_args_to_resolve):
        self._bound_args = args if args is not None else []
        self._bound_kwargs = kwargs or {}
        self._bound_options = options or {}
        self._bound_other_args_to_resolve = other_args_to_resolve or {}
        # Kept by copies of this node (the key of its result in an execution).
        self._stable_uuid = uuid.uuid4().hex
        # Results of the last execute(_ray_cache_refs=True), by node uuid.
        self.cache_from_last_execute = {}

    # ------------------------------------------------------------------ access

    def get_args(self):
        """The bound positional arguments."""
        return self._bound_args

    def get_kwargs(self):
        """A copy of the bound keyword arguments."""
        return dict(self._bound_kwargs)

    def get_options(self):
        """A copy of the Ray options (num_cpus, ...) of this node's call."""
        return dict(self._bound_options)

    def get_other_args_to_resolve(self):
        """A copy of the node type's extra values to resolve."""
        return dict(self._bound_other_args_to_resolve)

    def get_stable_uuid(self):
        """The node's id: the same for the node and the copies made of it."""
        return self._stable_uuid

    def _get_toplevel_child_nodes(self):
        """Nodes given directly as args, kwargs or other args (not nested)."""
        out = []
        values = list(self._bound_args) + list(self._bound_kwargs.values())
        values += list(self._bound_other_args_to_resolve.values())
        for v in values:
            if isinstance(v, DAGNode) and not any(v is o for o in out):
                out.append(v)
        return out

    def _get_all_child_nodes(self):
        """Every node this one's arguments hold, at any depth, in order."""
        found = []
        _find_nodes(
            [self._bound_args, self._bound_kwargs, self._bound_other_args_to_resolve], found, set(), set()
        )
        return found

    # ------------------------------------------------------------- transforms

    def _replaced_parts(self, table):
        memo = {}
        return (
            _replace_nodes(self._bound_args, table, memo),
            _replace_nodes(self._bound_kwargs, table, memo),
            _replace_nodes(self._bound_other_args_to_resolve, table, memo),
        )

    def _apply_and_replace_all_child_nodes(self, fn):
        """A copy of this node whose child nodes are replaced by fn(child)
        (one level only; see apply_recursive for the whole graph)."""
        table = {}
        for child in self._get_all_child_nodes():
            table[id(child)] = fn(child)
        args, kwargs, other = self._replaced_parts(table)
        return self._copy(args, kwargs, self.get_options(), other)

    def apply_functional(self, source_input_list, predicate_fn, apply_fn):
        """`source_input_list` with each node in it for which predicate_fn is
        true replaced by apply_fn(node); nodes are not copied."""
        found = []
        _find_nodes(source_input_list, found, set(), set())
        table = {id(n): (apply_fn(n) if predicate_fn(n) else n) for n in found}
        return _replace_nodes(source_input_list, table, {})

    def apply_recursive(self, fn):
        """Applies `fn` to every node of the graph below (and including) this
        one, children first, once per node; each node is given as a copy whose
        child nodes are replaced by fn's results for them. Returns fn's result
        for this node."""
        return self._walk(fn, {})

    def _walk(self, fn, cache):
        # Iterative post-order walk (deep chains do not hit the recursion
        # limit); a child is finished before the next child is started, so
        # calls are submitted in the order the arguments name them.
        input_uuid = None
        stack = [(self, False)]
        while stack:
            node, expanded = stack.pop()
            uid = node._stable_uuid
            if uid in cache:
                continue
            children = node._get_all_child_nodes()
            if not expanded:
                stack.append((node, True))
                for child in reversed(children):
                    if child._stable_uuid not in cache:
                        stack.append((child, False))
                continue
            if node._is_dag_input:
                if input_uuid is None:
                    input_uuid = uid
                elif input_uuid != uid:
                    raise AssertionError("Each DAG should only have one unique InputNode.")
            table = {id(c): cache[c._stable_uuid] for c in children}
            args, kwargs, other = node._replaced_parts(table)
            resolved = node._copy(args, kwargs, node.get_options(), other)
            cache[uid] = fn(resolved)
        return cache[self._stable_uuid]

    # -------------------------------------------------------------- execution

    def execute(self, *args, _ray_cache_refs=False, **kwargs):
        """Runs the graph below this node: each node once, as a task, an actor
        or an actor call; `args`/`kwargs` are the DAG's input (InputNode).
        Returns this node's result: an ObjectRef (a list of them for
        MultiOutputNode or several returns), or an actor handle for a ClassNode."""
        warnings.warn(
            "DAGNode.execute() is deprecated and will be removed in a future release.",
            RayDeprecationWarning,
            stacklevel=2,
        )
        cache = {}
        result = self._walk(lambda node: node._execute_impl(*args, **kwargs), cache)
        if _ray_cache_refs:
            self.cache_from_last_execute = cache
        return result

    async def get_object_refs_from_last_execute(self):
        """{node uuid: result} of the last execute(_ray_cache_refs=True)."""
        return dict(self.cache_from_last_execute)

    def clear_cache(self):
        self.cache_from_last_execute = {}

    def experimental_compile(self, *args, **kwargs):
        raise NotImplementedError(
            "Ray Compiled Graphs (DAGNode.experimental_compile) are not supported by this Ray; "
            "run the DAG with dag.execute(...) instead."
        )

    def with_tensor_transport(self, *args, **kwargs):
        raise NotImplementedError(
            "with_tensor_transport() is a Ray Compiled Graphs feature, which this Ray does not support."
        )

    def _execute_impl(self, *args, **kwargs):
        """Runs this node, whose child nodes are already replaced by results."""
        raise NotImplementedError("{} does not implement _execute_impl().".format(type(self).__name__))

    def _copy_impl(self, new_args, new_kwargs, new_options, new_other_args_to_resolve):
        raise NotImplementedError("{} does not implement _copy_impl().".format(type(self).__name__))

    def _copy(self, new_args, new_kwargs, new_options, new_other_args_to_resolve):
        """A node of the same kind with other arguments and the same uuid."""
        instance = self._copy_impl(new_args, new_kwargs, new_options, new_other_args_to_resolve)
        instance._stable_uuid = self._stable_uuid
        return instance

    # ------------------------------------------------------------ python glue

    def __getstate__(self):
        return self.__dict__

    def __setstate__(self, state):
        self.__dict__.update(state)

    def __getattr__(self, attr):
        if attr == "bind":
            raise AttributeError(".bind() cannot be used again on {} ".format(type(self)))
        if attr == "remote":
            raise AttributeError(
                ".remote() cannot be used on {}. To execute the task graph for this node, use .execute().".format(
                    type(self)
                )
            )
        raise AttributeError("'{}' object has no attribute '{}'".format(type(self).__name__, attr))

    def _body_line(self):
        return str(getattr(self, "_body", None))

    def __str__(self):
        return _format_node(self, self._body_line())


_INDENT = "    "


def _indent_lines(text, prefix):
    return "\n".join(prefix + line for line in str(text).split("\n"))


def _format_value(value):
    if isinstance(value, DAGNode):
        return str(value)
    return repr(value)


def _format_node(node, body):
    """A node as text: its kind and uuid, then its body, args, kwargs, options
    and other args, child nodes nested and indented."""
    parts = ["({}, {})(".format(type(node).__name__, node._stable_uuid), _INDENT + "body=" + body]

    def block(name, entries):
        if not entries:
            parts.append(_INDENT + name + "=[]" if name == "args" else _INDENT + name + "={}")
            return
        parts.append(_INDENT + name + "=" + ("[" if name == "args" else "{"))
        for label, value in entries:
            text = _format_value(value)
            if label is None:
                parts.append(_indent_lines(text, _INDENT * 2))
            else:
                first, _, rest = text.partition("\n")
                parts.append(_INDENT * 2 + "{}: {}".format(label, first))
                if rest:
                    parts.append(_indent_lines(rest, _INDENT * 2))
        parts.append(_INDENT + ("]" if name == "args" else "}"))

    block("args", [(None, a) for a in node._bound_args])
    block("kwargs", list(node._bound_kwargs.items()))
    block("options", list(node._bound_options.items()))
    block("other_args_to_resolve", list(node._bound_other_args_to_resolve.items()))
    parts.append(")")
    return "\n".join(parts)
