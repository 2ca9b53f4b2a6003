"""`MultiOutputNode`: several nodes as the DAG's output; execute() returns
the list of their results."""

from ray.dag.dag_node import DAGNode


class MultiOutputNode(DAGNode):
    """The end of a DAG with several outputs: `MultiOutputNode([a, b])`."""

    def __init__(self, args, other_args_to_resolve=None):
        if isinstance(args, tuple):
            args = list(args)
        if not isinstance(args, list):
            raise ValueError(
                "Invalid input type for `args`, {}: MultiOutputNode takes a list or tuple of DAG nodes.".format(
                    type(args)
                )
            )
        super().__init__(args, {}, {}, other_args_to_resolve=other_args_to_resolve or {})

    def _copy_impl(self, new_args, new_kwargs, new_options, new_other_args_to_resolve):
        return MultiOutputNode(new_args, new_other_args_to_resolve)

    def _execute_impl(self, *args, **kwargs):
        return list(self._bound_args)

    def _body_line(self):
        return "__MultiOutputNode__"
