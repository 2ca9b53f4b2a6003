"""Keys a DAG node keeps in its `other_args_to_resolve` (Ray's names)."""

# The ClassNode (or actor handle) whose method a ClassMethodNode calls.
PARENT_CLASS_NODE_KEY = "parent_class_node"
# The method call bound just before on the same ClassNode: it runs first.
PREV_CLASS_METHOD_CALL_KEY = "prev_class_method_call"
# The order of `handle.method.bind()` calls on one actor handle.
BIND_INDEX_KEY = "bind_index"
# Marks one of the outputs of a method call with several return values.
IS_CLASS_METHOD_OUTPUT_KEY = "is_class_method_output"
COLLECTIVE_OPERATION_KEY = "collective_operation"
DAGNODE_TYPE_KEY = "__dag_node_type__"
