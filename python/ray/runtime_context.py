"""`ray.get_runtime_context()`."""

from ray._private import worker as _worker


class RuntimeContext:
    """Where the calling code runs: job, node, worker and task ids."""

    def __init__(self, conn):
        self._conn = conn

    def get_job_id(self):
        """The job id (hex)."""
        return self._conn.core.job_id

    def get_node_id(self):
        """The node id (hex)."""
        return self._conn.core.node_id

    def get_worker_id(self):
        """The worker id (hex)."""
        return self._conn.core.worker_id

    def get_task_id(self):
        """The running task's id (hex), or None in a driver."""
        tid = self._conn.current_task_id
        return tid.hex() if tid is not None else None

    def is_canceled(self):
        """Whether ray.cancel was called on the running task (actor calls check
        this to stop early)."""
        tid = self._conn.current_task_id
        return tid is not None and tid in self._conn.cancelled

    def get_actor_id(self):
        """The id (hex) of the actor this runs in, or None."""
        return self._conn.actor_id

    def get_actor_name(self):
        """The name of the actor this runs in, or None (unnamed, or no actor)."""
        if self._conn.actor_id is None:
            return None
        from ray import _raylet

        info = _raylet.actor_info(self._conn.core, self._conn.actor_id)
        return (info or {}).get("name") or None

    @property
    def current_actor(self):
        """A handle to the actor this runs in."""
        if self._conn.actor_id is None:
            raise RuntimeError("This method is only available in an actor.")
        from ray.actor import ActorHandle

        return ActorHandle(self._conn.actor_id, self._conn.actor_meta)

    @property
    def was_current_actor_reconstructed(self):
        """True in an actor that was restarted."""
        return self._conn.actor_restarts > 0

    def get_assigned_resources(self):
        """The resources given to the running task or actor (plain names)."""
        res = self._conn.current_resources or {}
        out = {}
        for k, v in res.items():
            if "_group_" in k:
                base = k.split("_group_")[0]
                if base == "bundle":
                    continue
                out[base] = max(out.get(base, 0.0), v)
            elif v:
                out[k] = v
        return out

    @property
    def namespace(self):
        return self._conn.namespace()

    def get_namespace(self):
        return self._conn.namespace()

    @property
    def actor_id(self):
        return self.get_actor_id()

    @property
    def job_id(self):
        return self.get_job_id()

    @property
    def node_id(self):
        return self.get_node_id()

    @property
    def worker_id(self):
        return self.get_worker_id()

    @property
    def task_id(self):
        return self.get_task_id()

    @property
    def runtime_env(self):
        """The runtime env this job, task or actor runs in (a RuntimeEnv; local
        folders appear as the package URIs they were shipped as)."""
        from ray.runtime_env import RuntimeEnv

        return RuntimeEnv(_validate=False, **dict(getattr(self._conn, "runtime_env", None) or {}))

    def get_runtime_env_string(self):
        """The runtime env as JSON."""
        import json

        return json.dumps(dict(getattr(self._conn, "runtime_env", None) or {}), sort_keys=True)

    @property
    def gcs_address(self):
        return self._conn.gcs_address

    def get(self):
        return {"job_id": self.get_job_id(), "node_id": self.get_node_id(), "task_id": self.get_task_id()}


def get_runtime_context():
    conn = _worker.global_connection()
    if conn is None:
        raise RuntimeError("Ray is not initialized yet: call ray.init() first.")
    return RuntimeContext(conn)
