"""`InputNode`: the DAG's input, given at `dag.execute(...)` time, and
`InputAttributeNode`: a part of it (`inp[0]`, `inp["key"]`, `inp.attr`)."""

from ray.dag.dag_node import DAGNode

IN_CONTEXT_MANAGER = "__in_context_manager__"


class InputNode(DAGNode):
    """The input of a DAG (one per DAG), used inside a `with` block:

        with InputNode() as inp:
            dag = f.bind(inp[0], inp.x)
        dag.execute(1, x=2)

    With one argument and no keywords, `execute(value)` makes the node's value
    `value` itself (so `inp[0]`, `inp["k"]`, `inp.attr` index into it);
    otherwise the node's value is a DAGInputData of the args and kwargs."""

    _is_dag_input = True

    def __init__(self, *args, input_type=None, _other_args_to_resolve=None, **kwargs):
        if args or kwargs:
            raise ValueError("InputNode should not take any args or kwargs.")
        self.input_attribute_nodes = {}
        self.input_type = input_type
        other = dict(_other_args_to_resolve or {})
        if isinstance(input_type, type):
            other["result_type_string"] = input_type.__name__
        super().__init__([], {}, {}, other_args_to_resolve=other)

    def _copy_impl(self, new_args, new_kwargs, new_options, new_other_args_to_resolve):
        return InputNode(_other_args_to_resolve=new_other_args_to_resolve)

    def _execute_impl(self, *args, **kwargs):
        if not self._in_context_manager():
            raise AssertionError(
                "InputNode is a singleton instance that should be only used in context manager for dag building "
                "and execution: write `with InputNode() as inp:` and bind the DAG inside the block."
            )
        if len(args) == 1 and not kwargs:
            return args[0]
        return DAGInputData(*args, **kwargs)

    def _in_context_manager(self):
        return bool(self._bound_other_args_to_resolve.get(IN_CONTEXT_MANAGER, False))

    def set_context(self, key, val):
        self._bound_other_args_to_resolve[key] = val

    def get_result_type(self):
        return self._bound_other_args_to_resolve.get("result_type_string")

    def _body_line(self):
        return "__InputNode__"

    def __getattr__(self, key):
        if key.startswith("__") or "input_attribute_nodes" not in self.__dict__:
            raise AttributeError("'InputNode' object has no attribute '{}'".format(key))
        if key not in self.input_attribute_nodes:
            self.input_attribute_nodes[key] = InputAttributeNode(self, key, "__getattr__")
        return self.input_attribute_nodes[key]

    def __getitem__(self, key):
        if not isinstance(key, (str, int)) or isinstance(key, bool):
            raise AssertionError(
                "Please only use int index or str as first-level key to access fields of dag input, got {!r}.".format(
                    key
                )
            )
        input_type = None
        if isinstance(self.input_type, dict) and key in self.input_type:
            input_type = getattr(self.input_type[key], "__name__", str(self.input_type[key]))
        if key not in self.input_attribute_nodes:
            self.input_attribute_nodes[key] = InputAttributeNode(self, key, "__getitem__", input_type)
        return self.input_attribute_nodes[key]

    def __enter__(self):
        self.set_context(IN_CONTEXT_MANAGER, True)
        return self

    def __exit__(self, *exc):
        return None


class InputAttributeNode(DAGNode):
    """A part of the DAG's input: an index (int), a key or an attribute (str)."""

    def __init__(self, dag_input_node, key, accessor_method, input_type=None):
        self._dag_input_node = dag_input_node
        self._key = key
        self._accessor_method = accessor_method
        super().__init__(
            [],
            {},
            {},
            {
                "dag_input_node": dag_input_node,
                "key": key,
                "accessor_method": accessor_method,
                "result_type_string": input_type,
            },
        )

    def _copy_impl(self, new_args, new_kwargs, new_options, new_other_args_to_resolve):
        o = new_other_args_to_resolve
        return InputAttributeNode(o["dag_input_node"], o["key"], o["accessor_method"], o.get("result_type_string"))

    def _execute_impl(self, *args, **kwargs):
        value = self._dag_input_node
        if isinstance(value, DAGInputData):
            return value[self._key]
        if isinstance(self._key, str) and self._accessor_method == "__getattr__":
            return getattr(value, self._key)
        return value[self._key]

    @property
    def key(self):
        return self._key

    def get_result_type(self):
        return self._bound_other_args_to_resolve.get("result_type_string")

    def _body_line(self):
        return '["{}"]'.format(self._key)


class DAGInputData:
    """The DAG's input when execute() got several args or any kwargs: ints
    index the args, strs name the kwargs."""

    def __init__(self, *args, **kwargs):
        self._args = list(args)
        self._kwargs = kwargs

    def __getitem__(self, key):
        if isinstance(key, int) and not isinstance(key, bool):
            return self._args[key]
        if isinstance(key, str):
            return self._kwargs[key]
        raise ValueError("Please only use int index or str as first-level key to access fields of dag input.")

    def __repr__(self):
        return "DAGInputData(args={!r}, kwargs={!r})".format(self._args, self._kwargs)
