"""Process-wide state of the Ray API: the core worker of this driver or worker,
the connection made by ray.init(), and the driver's output printer."""

import atexit
import contextvars
import os
import socket
import sys
import threading

from ray import _raylet

_lock = threading.RLock()
_global = None  # the _Connection of this process

SCRIPT_MODE = "driver"
# Where a job's namespace is kept (in its function table).
NAMESPACE_KEY = b"__ray_namespace__"
WORKER_MODE = "worker"


# What the running task is, per thread and per coroutine (threaded and async
# actors run several calls at once): id, name, placement group, resources.
_current = contextvars.ContextVar("ray_current_task", default=(None, None, None, None))


def _task_field(index, doc):
    def get(self):
        value = _current.get()[index]
        if value is None and index == 2:
            return self.actor_placement_group
        if value is None and index == 3:
            return self.actor_resources
        return value

    def set_(self, value):
        fields = list(_current.get())
        fields[index] = value
        _current.set(tuple(fields))

    return property(get, set_, doc=doc)


class _Connection:
    current_task_id = _task_field(0, "The running task's id (bytes), or None.")
    current_task_name = _task_field(1, "The running task's name (output prefixes).")
    current_placement_group = _task_field(2, "(group id hex, bundle index, capture child tasks) of the running task.")
    current_resources = _task_field(3, "Resources of the running task (or of the actor this worker runs).")

    def __init__(self, core, gcs, mode, gcs_address, local_cluster=None, session_dir=None):
        self.core = core
        self.gcs = gcs
        self.mode = mode
        self.gcs_address = gcs_address
        self.local_cluster = local_cluster
        self.session_dir = session_dir
        # This node's IP (shown in task errors); set by workers.
        self.node_ip = None
        # The runtime env (resolved: packages named by URI) of the job, or of
        # the worker's own environment; tasks submitted from here inherit it.
        self.runtime_env = {}
        self.exported = set()
        self.printer = None
        self.stop_printer = threading.Event()
        # The actor this worker runs: its id (hex), handle data, restarts, and
        # the placement group and resources it was created with.
        self.actor_placement_group = None
        self.actor_resources = None
        self.actor_id = None
        self.actor_meta = None
        self.actor_restarts = 0
        self.exiting = False
        # Actor calls ray.cancel asked to stop (task ids).
        self.cancelled = set()
        self._namespace = None

    def namespace(self):
        """The job's namespace (named actors live in one)."""
        if self._namespace is None:
            try:
                self._namespace = bytes(self.core.fetch_function(self.core.job_id, NAMESPACE_KEY)).decode()
            except Exception:  # noqa: BLE001 - a job started without one
                self._namespace = ""
        return self._namespace

    def set_namespace(self, namespace):
        """Records the driver's namespace where its workers can read it."""
        self._namespace = namespace
        self.core.export_function(NAMESPACE_KEY, namespace.encode())


def _read_current_cluster():
    path = os.path.join(_raylet.temp_root(), "ray_current_cluster")
    try:
        with open(path) as f:
            addr = f.read().strip()
    except OSError:
        return None
    return addr or None


def resolve_address(address):
    """ray.init's `address` as HOST:PORT of a running cluster, or None."""
    if address in (None, "auto"):
        env = os.environ.get("RAY_ADDRESS", "").strip()
        if env and env != "auto":
            return env
        found = _read_current_cluster()
        if found is None and address == "auto":
            raise ConnectionError(
                "Could not find any running Ray instance. Please specify the one to connect to by setting "
                "`address` or the `RAY_ADDRESS` environment variable (no address is recorded in {}).".format(
                    os.path.join(_raylet.temp_root(), "ray_current_cluster")
                )
            )
        return found
    if address == "local":
        return None
    addr = str(address)
    if addr.startswith("ray://"):
        # A Ray Client address (the head's Ray Client server), not a GCS: ray.init()
        # connects those through ray.util.client before it gets here.
        raise ValueError(
            "{!r} is a Ray Client address; pass it to ray.init() itself (ray.init({!r})), which connects "
            "through the head's Ray Client server.".format(addr, addr)
        )
    if addr.startswith("http://"):
        addr = addr[len("http://"):]
    return addr


def local_ip_towards(addr):
    """This machine's address as the cluster at `addr` sees it: RAY_NODE_IP_ADDRESS
    when set (as `ray start` takes it), else the source address of a route there."""
    if os.environ.get("RAY_NODE_IP_ADDRESS"):
        return os.environ["RAY_NODE_IP_ADDRESS"]
    host, _, port = addr.rpartition(":")
    host = host.strip("[]")
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        s = socket.socket(family, socket.SOCK_DGRAM)
        try:
            s.connect((host, int(port)))
            return s.getsockname()[0]
        finally:
            s.close()
    except OSError:
        return "127.0.0.1"


def _is_local_address(ip):
    """True when `ip` is an address of this machine (it can be bound here)."""
    try:
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        s = socket.socket(family, socket.SOCK_DGRAM)
        try:
            s.bind((ip, 0))
            return True
        finally:
            s.close()
    except OSError:
        return False


def choose_raylet(gcs, node_ip):
    """The raylet of this machine: a live node at our IP, the head first. A
    cluster reached over loopback (`ray.init(address="127.0.0.1:6379")` on the
    head) picks a node at any of this machine's own addresses."""
    nodes = [n for n in gcs.nodes() if n[1]]
    mine = [n for n in nodes if n[2] == node_ip] or [n for n in nodes if n[2] in ("127.0.0.1", "localhost")]
    if not mine and (node_ip.startswith("127.") or node_ip == "::1"):
        mine = [n for n in nodes if _is_local_address(n[2])]
    if not mine:
        raise ConnectionError(
            "No Ray node runs on this machine ({}): start one with `ray start --address=...` "
            "or connect from a node of the cluster.".format(node_ip)
        )
    mine.sort(key=lambda n: not n[7])
    # A node the GCS still lists may have just gone (a head restarted after a
    # crash is listed twice until the old one fails its health checks): take
    # the first whose raylet answers.
    for n in mine:
        if _answers(n[2], n[3]):
            mine = [n]
            break
    node_id, _, addr, port = mine[0][:4]
    return node_id, "{}:{}".format(addr, port)


def _answers(host, port):
    import socket

    try:
        socket.create_connection((host, int(port)), timeout=1).close()
        return True
    except OSError:
        return False


def global_connection():
    with _lock:
        return _global


def set_connection(conn):
    global _global
    with _lock:
        _global = conn


def worker_command():
    """How the raylet starts this job's workers: this interpreter, and this driver's
    import path (as Ray passes it), so workers import what the driver imports."""
    import json

    paths = [os.path.abspath(p) if p else os.getcwd() for p in sys.path]
    return [sys.executable, "-m", "ray._private.workers.default_worker", "--driver-sys-path", json.dumps(paths)]


def _print_loop(conn):
    core = conn.core
    while not conn.stop_printer.is_set():
        try:
            lines = core.next_log_lines(0.2)
        except Exception:  # noqa: BLE001 - the core is shutting down
            return
        _emit(lines)


# Lines carrying this are progress bar states of ray.experimental.tqdm_ray:
# drawn as bars, not printed.
_TQDM_MAGIC = "__ray_tqdm_magic_token__"


def _emit(lines):
    bars = sys.modules.get("ray.experimental.tqdm_ray")
    hidden = False
    for line in lines:
        if _TQDM_MAGIC in line:
            from ray.experimental import tqdm_ray as bars

            if bars.process_log_line(line[1:]):
                continue
        if bars is not None and not hidden:
            bars.hide_bars()
            hidden = True
        stream = sys.stderr if line[:1] == "2" else sys.stdout
        try:
            stream.write(line[1:] + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed stream must not kill the printer
            pass
    if hidden:
        bars.unhide_bars()


def start_printer(conn):
    t = threading.Thread(target=_print_loop, args=(conn,), name="ray-print-worker-output", daemon=True)
    conn.printer = t
    t.start()


def flush_output(conn):
    try:
        _emit(conn.core.next_log_lines(0))
    except Exception:  # noqa: BLE001
        pass


def disconnect():
    global _global
    with _lock:
        conn = _global
        _global = None
    if conn is None:
        return
    conn.stop_printer.set()
    if conn.printer is not None:
        conn.printer.join(timeout=1)
    flush_output(conn)
    if conn.mode == SCRIPT_MODE:
        try:
            conn.core.shutdown()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass
    if conn.local_cluster is not None:
        from ray._private import services

        services.stop_local_cluster(conn.local_cluster)


# At the end of a driver script, tasks it submitted and never waited for get a
# moment to finish, so what they print still reaches the console (Ray's slower
# teardown gives them that time too).
EXIT_GRACE_S = 1.0


def _at_exit():
    conn = global_connection()
    if conn is not None and conn.mode == SCRIPT_MODE:
        import time

        deadline = time.monotonic() + EXIT_GRACE_S
        try:
            while conn.core.pending_returns() > 0 and time.monotonic() < deadline:
                time.sleep(0.01)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass
    disconnect()


atexit.register(_at_exit)
