"""`ray.util`: placement groups, scheduling strategies, ActorPool, queues and
the names of live actors."""

from ray.actor import list_named_actors

from ray.util import annotations  # noqa: F401  (RayDeprecationWarning's filter)
from ray.util import scheduling_strategies
from ray.util.check_serialize import inspect_serializability
from ray.util.actor_pool import ActorPool
from ray.util.placement_group import (
    PlacementGroup,
    get_current_placement_group,
    get_placement_group,
    placement_group,
    placement_group_table,
    remove_placement_group,
)

__all__ = [
    "ActorPool",
    "list_named_actors",
    "PlacementGroup",
    "get_current_placement_group",
    "get_placement_group",
    "inspect_serializability",
    "placement_group",
    "placement_group_table",
    "remove_placement_group",
    "scheduling_strategies",
]
