"""Scheduling strategies for tasks (`f.options(scheduling_strategy=...)`), as in
Ray: "DEFAULT", "SPREAD", and the classes below."""


class PlacementGroupSchedulingStrategy:
    """Run in a placement group's bundle (`placement_group_bundle_index`, -1 for
    any), optionally making the tasks it submits run in the group too."""

    def __init__(self, placement_group, placement_group_bundle_index=-1, placement_group_capture_child_tasks=None):
        self.placement_group = placement_group
        self.placement_group_bundle_index = placement_group_bundle_index
        self.placement_group_capture_child_tasks = placement_group_capture_child_tasks


class NodeAffinitySchedulingStrategy:
    """Run on the node `node_id` (hex). With `soft=True` the task may run
    elsewhere when that node is gone or cannot hold it."""

    def __init__(self, node_id, soft, _spill_on_unavailable=False, _fail_on_unavailable=False):
        if not isinstance(node_id, str):
            node_id = node_id.hex() if hasattr(node_id, "hex") else str(node_id)
        self.node_id = node_id
        self.soft = soft
        self._spill_on_unavailable = _spill_on_unavailable
        self._fail_on_unavailable = _fail_on_unavailable


class _LabelOperator:
    op = None

    def __init__(self, *values):
        if len(values) == 1 and isinstance(values[0], (list, tuple, set)):
            values = tuple(values[0])
        for v in values:
            if not isinstance(v, str):
                raise ValueError("Label values must be strings, got {!r}.".format(v))
        self.values = list(values)


class In(_LabelOperator):
    """The label has one of these values."""

    op = "In"

    def __init__(self, *values):
        super().__init__(*values)
        if not self.values:
            raise ValueError("In() needs at least one value.")


class NotIn(_LabelOperator):
    """The label is absent or has none of these values."""

    op = "NotIn"

    def __init__(self, *values):
        super().__init__(*values)
        if not self.values:
            raise ValueError("NotIn() needs at least one value.")


class Exists(_LabelOperator):
    """The label is present."""

    op = "Exists"


class DoesNotExist(_LabelOperator):
    """The label is absent."""

    op = "DoesNotExist"


class NodeLabelSchedulingStrategy:
    """Run on a node whose labels match every condition of `hard`, preferring
    nodes that also match `soft`. Conditions map a label key to In, NotIn,
    Exists or DoesNotExist."""

    def __init__(self, hard, *, soft=None):
        self.hard = _check_conditions(hard, "hard")
        self.soft = _check_conditions(soft or {}, "soft")
        if not self.hard and not self.soft:
            raise ValueError("NodeLabelSchedulingStrategy needs at least one hard or soft condition.")


def _check_conditions(conds, which):
    if not isinstance(conds, dict):
        raise ValueError("NodeLabelSchedulingStrategy: `{}` must be a dict of label key to operator.".format(which))
    for k, v in conds.items():
        if not isinstance(k, str) or not k:
            raise ValueError("NodeLabelSchedulingStrategy: label keys must be non-empty strings, got {!r}.".format(k))
        if not isinstance(v, _LabelOperator):
            raise ValueError(
                "NodeLabelSchedulingStrategy: the condition on {!r} must be In, NotIn, Exists or DoesNotExist, got {!r}.".format(
                    k, v
                )
            )
    return conds


def encode(strategy):
    """The strategy as the core worker takes it, and the placement group it names
    (or None)."""
    if strategy is None or strategy == "DEFAULT":
        return None, None
    if strategy == "SPREAD":
        return ("spread",), None
    if isinstance(strategy, NodeAffinitySchedulingStrategy):
        return ("node", strategy.node_id, bool(strategy.soft)), None
    if isinstance(strategy, NodeLabelSchedulingStrategy):
        enc = lambda conds: [(k, v.op, list(v.values)) for k, v in conds.items()]  # noqa: E731
        return ("label", enc(strategy.hard), enc(strategy.soft)), None
    if isinstance(strategy, PlacementGroupSchedulingStrategy):
        return None, strategy
    raise ValueError(
        "Invalid scheduling_strategy {!r}: expected \"DEFAULT\", \"SPREAD\", PlacementGroupSchedulingStrategy, "
        "NodeAffinitySchedulingStrategy or NodeLabelSchedulingStrategy.".format(strategy)
    )
