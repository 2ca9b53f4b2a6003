"""`ray.util.state`: the cluster's actors and nodes as Ray's state API lists them."""

from ray import _raylet
from ray._private import worker as _worker


class _State(dict):
    """One listed entity: fields as keys and as attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class ActorState(_State):
    pass


class NodeState(_State):
    pass


class TaskState(_State):
    pass


def _conn():
    import ray

    conn = _worker.global_connection()
    if conn is None:
        ray.init(address="auto")
        conn = _worker.global_connection()
    return conn


_OPS = {"=": lambda a, b: a == b, "!=": lambda a, b: a != b}


def _apply(rows, filters, limit):
    """Rows matching every (key, "=" or "!=", value) filter, at most `limit`."""
    for f in filters or []:
        if len(f) != 3 or f[1] not in _OPS:
            raise ValueError("A filter is (key, '=' or '!=', value), got {!r}.".format(f))
        key, op, value = f
        if rows and key not in rows[0]:
            raise ValueError("{!r} is not a field; the fields are {}.".format(key, sorted(rows[0])))
        rows = [r for r in rows if _OPS[op](str(r.get(key)).upper() if isinstance(value, str) else r.get(key), str(value).upper() if isinstance(value, str) else value)]
    return rows[:limit]


def _actor_row(a):
    return ActorState(
        actor_id=a["actor_id"],
        class_name=a["class_name"],
        state=a["state"],
        job_id=a["job_id"],
        name=a["name"],
        node_id=a["node_id"] or None,
        pid=a["pid"] or None,
        ray_namespace=a["namespace"],
        is_detached=a["detached"],
        death_cause=a["death_cause"] or None,
        num_restarts=str(a["num_restarts"]),
        required_resources=a["required_resources"],
        placement_group_id=a["placement_group_id"] or None,
        start_time=a["start_time_ms"] or None,
        end_time=a["end_time_ms"] or None,
    )


def list_actors(address=None, filters=None, limit=100, timeout=30, detail=False, raise_on_missing_output=True, _explain=False):
    """Every actor of the cluster (live and dead), as ActorState records."""
    rows = [_actor_row(a) for a in _raylet.actor_list(_conn().core)]
    return _apply(rows, filters, limit)


def get_actor(id, address=None, timeout=30, _explain=False):
    """One actor by id (hex), or None."""
    a = _raylet.actor_info(_conn().core, id)
    return _actor_row(a) if a else None


def list_nodes(address=None, filters=None, limit=100, timeout=30, detail=False, raise_on_missing_output=True, _explain=False):
    """Every node of the cluster, as NodeState records."""
    import ray

    rows = [
        NodeState(
            node_id=n["NodeID"],
            node_ip=n["NodeManagerAddress"],
            is_head_node=n["IsHeadNode"],
            state="ALIVE" if n["Alive"] else "DEAD",
            node_name=n["NodeName"],
            resources_total=n["Resources"],
            labels=n["Labels"],
        )
        for n in ray.nodes()
    ]
    return _apply(rows, filters, limit)


def list_tasks(address=None, filters=None, limit=100, timeout=30, detail=False, raise_on_missing_output=True, _explain=False):
    """The latest tasks of the cluster (their owners report each state), as TaskState records."""
    rows = [TaskState(t) for t in _raylet.task_list(_conn().core)]
    return _apply(rows, filters, limit)


def summarize_tasks(address=None, timeout=30, raise_on_missing_output=True, _explain=False):
    """Tasks by function with counts per state, in Ray's layout."""
    summary = {}
    tasks = _raylet.task_list(_conn().core)
    for t in tasks:
        s = summary.setdefault(t["func_or_class_name"], {"func_or_class_name": t["func_or_class_name"], "type": t["type"], "state_counts": {}})
        s["state_counts"][t["state"]] = s["state_counts"].get(t["state"], 0) + 1
    return {"cluster": {"summary": summary, "total_tasks": len(tasks), "summary_by": "func_name"}}


def summarize_actors(address=None, timeout=30, raise_on_missing_output=True, _explain=False):
    """Actors by class with counts per state, in Ray's layout."""
    summary = {}
    actors = _raylet.actor_list(_conn().core)
    for a in actors:
        s = summary.setdefault(a["class_name"], {"class_name": a["class_name"], "state_counts": {}})
        s["state_counts"][a["state"]] = s["state_counts"].get(a["state"], 0) + 1
    return {"cluster": {"summary": summary, "total_actors": len(actors), "summary_by": "class"}}


__all__ = [
    "ActorState",
    "NodeState",
    "TaskState",
    "get_actor",
    "list_actors",
    "list_nodes",
    "list_tasks",
    "summarize_actors",
    "summarize_tasks",
]
