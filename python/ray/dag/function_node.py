"""`FunctionNode`: a remote function's call bound with `f.bind(...)`; executed
as a task."""

from ray.dag.dag_node import DAGNode


class FunctionNode(DAGNode):
    """A task in a Ray DAG: `_body` is the Python function, options are the
    remote function's (`@ray.remote(...)` or `.options(...)`)."""

    def __init__(self, func_body, func_args, func_kwargs, func_options, other_args_to_resolve=None, _remote_function=None):
        self._body = getattr(func_body, "_function", func_body)
        # The RemoteFunction that submits the task (its pickled function is
        # exported once, not at every execute()).
        self._remote_function = _remote_function if _remote_function is not None else _as_remote(func_body)
        super().__init__(func_args, func_kwargs, func_options, other_args_to_resolve=other_args_to_resolve)

    def _copy_impl(self, new_args, new_kwargs, new_options, new_other_args_to_resolve):
        return FunctionNode(
            self._body,
            new_args,
            new_kwargs,
            new_options,
            other_args_to_resolve=new_other_args_to_resolve,
            _remote_function=self._remote_function,
        )

    def _execute_impl(self, *args, **kwargs):
        from ray.remote_function import validate_options

        options = dict(self._bound_options)
        validate_options(options)
        return self._remote_function._remote(tuple(self._bound_args), dict(self._bound_kwargs), options)

    def _body_line(self):
        return str(self._body)


def _as_remote(func):
    from ray.remote_function import RemoteFunction

    if isinstance(func, RemoteFunction):
        return func
    if not callable(func):
        raise TypeError("FunctionNode expects a function to run as a task, got {!r}.".format(func))
    return RemoteFunction(func, {})
