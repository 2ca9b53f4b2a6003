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
    def gcs_address(self):
        return self._conn.gcs_address

    def get(self):
        return {"job_id": self.get_job_id(), "node_id": self.get_node_id(), "task_id": self.get_task_id()}


def get_runtime_context():
    conn = _worker.global_connection()
    if conn is None:
        raise RuntimeError("Ray is not initialized yet: call ray.init() first.")
    return RuntimeContext(conn)
