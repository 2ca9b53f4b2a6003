"""The Ray DAG API: build a graph of tasks and actor calls with `.bind()`, run
it with `dag.execute(...)`.

    @ray.remote
    def add(a, b):
        return a + b

    with InputNode() as inp:
        dag = add.bind(add.bind(inp, 1), inp)
    ray.get(dag.execute(2))  # 5
"""

from ray.dag.dag_node import DAGNode
from ray.dag.function_node import FunctionNode
from ray.dag.class_node import ClassMethodNode, ClassNode
from ray.dag.input_node import DAGInputData, InputAttributeNode, InputNode
from ray.dag.output_node import MultiOutputNode
from ray.dag.constants import (
    BIND_INDEX_KEY,
    COLLECTIVE_OPERATION_KEY,
    DAGNODE_TYPE_KEY,
    IS_CLASS_METHOD_OUTPUT_KEY,
    PARENT_CLASS_NODE_KEY,
    PREV_CLASS_METHOD_CALL_KEY,
)

__all__ = [
    "ClassNode",
    "ClassMethodNode",
    "DAGNode",
    "FunctionNode",
    "InputNode",
    "InputAttributeNode",
    "DAGInputData",
    "MultiOutputNode",
    "PARENT_CLASS_NODE_KEY",
    "PREV_CLASS_METHOD_CALL_KEY",
    "BIND_INDEX_KEY",
    "IS_CLASS_METHOD_OUTPUT_KEY",
    "COLLECTIVE_OPERATION_KEY",
    "DAGNODE_TYPE_KEY",
]
