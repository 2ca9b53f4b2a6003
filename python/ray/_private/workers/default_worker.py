"""A worker process: started by the raylet, runs tasks its owners push to it."""

import argparse
import asyncio
import inspect
import os
import pickle
import signal
import sys
import threading

from ray import _raylet
from ray import exceptions as _exc
from ray._private import object_ref_generator as _gen
from ray._private import runtime_env_worker as _rt_env
from ray.exceptions import RUNTIME_ENV_SETUP_FAILED
from ray._private import serialization
from ray._private import task_errors
from ray._private import worker as _worker
from ray.remote_function import RETRY_EXCEPTIONS_KWARG


class _TaskOutput:
    """stdout/stderr of a worker: lines of a running task go to its owner, prefixed
    like Ray's "(f pid=123)"; everything also goes to the worker's log file."""

    def __init__(self, core, conn, stream_no, original):
        self._core = core
        self._conn = conn
        self._tag = str(stream_no)
        self._orig = original
        self._buf = ""
        self._lock = threading.Lock()

    def write(self, text):
        self._orig.write(text)
        with self._lock:
            self._buf += text
            while "\n" in self._buf:
                line, self._buf = self._buf.split("\n", 1)
                self._send(line)
        return len(text)

    def _send(self, line):
        name = self._conn.current_task_name
        if name is None and self._conn.actor_meta is not None:
            name = self._conn.actor_meta.class_name
        if name is None:
            return
        # Ray's prefix, in cyan: "(f pid=123) ".
        self._core.log_line("{}\x1b[36m({} pid={})\x1b[0m {}".format(self._tag, name, os.getpid(), line))

    def flush(self):
        self._orig.flush()
        with self._lock:
            if self._buf:
                line, self._buf = self._buf, ""
                self._send(line)

    def fileno(self):
        return self._orig.fileno()

    def isatty(self):
        return False

    @property
    def encoding(self):
        return getattr(self._orig, "encoding", "utf-8")


class _Worker:
    def __init__(self, core, conn):
        self.core = core
        self.conn = conn
        self.functions = {}
        # The actor this worker runs, once its creation task ran.
        self.actor = None
        self.class_name = None
        # The name an actor's printed lines carry: its repr, else its class name.
        self.log_name = None
        self.is_async = False
        self.pools = {}
        self.loop = None
        self.sems = {}
        # Actor calls running now: task id -> asyncio task (None for threads).
        self.running = {}
        # Why the runtime env could not be set up (every task then fails), or None.
        self.setup_error = None

    def function(self, job_id, function_id):
        fn = self.functions.get(function_id)
        if fn is None:
            fn = pickle.loads(self.core.fetch_function(job_id, function_id))
            self.functions[function_id] = fn
        return fn

    def resolve(self, args):
        values = []
        refs = [(i, p) for i, (tag, p) in enumerate(args) if tag == "r"]
        fetched = {}
        if refs:
            raw = self.core.get([p for _, p in refs], None)
            for (i, _), r in zip(refs, raw):
                fetched[i] = r
        for i, (tag, payload) in enumerate(args):
            kind, data, buffers = fetched[i] if tag == "r" else payload
            value = serialization.deserialize(kind, data, buffers)
            if serialization.is_error_kind(kind):
                # A dependency failed: this task fails with the same error.
                raise _DependencyFailed(value)
            values.append(value)
        return values

    def arguments(self, task):
        """(positional, keyword, retry_exceptions) of a task."""
        values = self.resolve(task.args())
        kw_names = task.kwarg_names
        kwargs = {}
        retry_on = None
        if kw_names:
            kw_values = values[len(values) - len(kw_names):]
            values = values[: len(values) - len(kw_names)]
            kwargs = dict(zip(kw_names, kw_values))
            retry_on = kwargs.pop(RETRY_EXCEPTIONS_KWARG, None)
        return values, kwargs, retry_on

    # ------------------------------------------------------------ dispatch

    def dispatch(self, task):
        """Runs a task: on this thread, or for concurrent actors on their pool or
        event loop (calls from one caller arrive, and start, in order)."""
        if self.setup_error is not None:
            # The runtime env could not be set up: nothing runs here.
            kind = "ActorDiedError" if task.actor_creation is not None else "RuntimeEnvSetupError"
            body = serialization.system_error(kind, self.setup_error)
            self._finish(task, [(serialization.KIND_SYSTEM_ERROR, body, [], [])] * task.num_returns, True, False)
            return
        if self.actor is not None and task.actor_id:
            if self.is_async:
                self.start_async(task)
                return
            pool = self.pools.get(task.concurrency_group) or self.pools.get("")
            if pool is not None:
                pool.submit(self.execute, task)
                return
        self.execute(task)

    def task_name(self, task):
        if task.actor_creation is not None:
            return task.actor_creation[4] + ".__init__"
        if task.actor_id and self.class_name:
            return self.class_name + "." + task.function_name
        return task.function_name

    def execute(self, task):
        name = self.task_name(task)
        returns = task.num_returns
        self.conn.current_task_id = bytes(task.task_id)
        creating = task.actor_creation
        self.conn.current_task_name = creating[4] if creating is not None else (self.log_name or name)
        self.conn.current_placement_group = task.placement_group
        self.conn.current_resources = task.resources if self.actor is None else None
        retry_on = None
        tid = bytes(task.task_id)
        if task.actor_id:
            # ray.cancel flags an actor call (is_canceled()) instead of interrupting it.
            self.running[tid] = None
        try:
            try:
                self.conn.interruptible = None if task.actor_id else tid
                if not task.actor_id and self.core.take_cancel(tid):
                    # ray.cancel came before this task could be interrupted.
                    raise KeyboardInterrupt
                if task.actor_id:
                    if self.actor is None:
                        raise RuntimeError("this worker runs no actor (its creation task did not run here)")
                    fn = _builtin(task.function_name) or getattr(self.actor, task.function_name)
                else:
                    fn = self.function(task.job_id, task.function_id)
                values, kwargs, retry_on = self.arguments(task)
                if task.actor_creation is not None:
                    self.create_actor(task, fn, values, kwargs)
                    result = None
                else:
                    result = fn(*values, **kwargs)
                    if inspect.iscoroutine(result):
                        result = asyncio.run(_awaited(result))
                    if task.generator:
                        result = self.stream(task, name, result)
                    if tid in self.conn.cancelled:
                        raise KeyboardInterrupt
                self.conn.interruptible = None
                result = self._as_returns(task, name, result, returns)
            except _DependencyFailed as dep:
                self._dependency_failed(task, dep, returns)
                return
            except KeyboardInterrupt as e:
                self._cancelled(task, name, returns, None if task.actor_id else e)
                return
            except SystemExit:
                if self.conn.exiting:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(0)
                raise
            except Exception as e:  # noqa: BLE001 - every task error goes back to the owner
                self._raised(task, name, e, retry_on, returns)
                return
            self.conn.interruptible = None
            self._complete(task, name, result)
        finally:
            self.conn.interruptible = None
            self.running.pop(tid, None)
            self.conn.cancelled.discard(tid)
            sys.stdout.flush()
            sys.stderr.flush()
            self.conn.current_task_id = None
            self.conn.current_task_name = None
            self.conn.current_placement_group = None

    def stream(self, task, name, result):
        """Runs the generator a generator task returned, sending each item as it
        is yielded; returns the task's own return value."""
        _gen.check_generator(result)
        make_error = self._item_error(task, name)
        if inspect.isasyncgen(result):
            return asyncio.run(_gen.run_async_generator(self.core, task, result, make_error, task.owner_address))
        return _gen.run_generator(self.core, task, result, make_error, task.owner_address)

    def _item_error(self, task, name):
        return lambda e: task_errors.task_error(name, e, *self._where(task))

    # ------------------------------------------------------------ actors

    def create_actor(self, task, cls, values, kwargs):
        from ray.actor import _Meta, _methods

        actor_id, max_concurrency, is_async, groups, class_name, restarts = task.actor_creation
        self.conn.actor_id = actor_id
        self.conn.actor_restarts = restarts
        self.conn.actor_meta = _Meta(class_name, _methods(cls), bytes(task.function_id), task.job_id)
        self.conn.actor_resources = task.resources
        self.conn.actor_placement_group = task.placement_group
        self.class_name = class_name
        self.log_name = class_name
        limits = dict(groups)
        limits[""] = max_concurrency
        if is_async:
            # __init__ sees the loop its methods run on (asyncio objects made
            # there, e.g. an asyncio.Queue, belong to it).
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
        instance = cls(*values, **kwargs)
        self.actor = instance
        if type(instance).__repr__ is not object.__repr__:
            # Ray names an actor's output by its repr when the class defines one.
            try:
                self.log_name = repr(instance)
            except Exception:  # noqa: BLE001 - a repr that fails keeps the class name
                pass
        self.is_async = is_async
        if is_async:
            threading.Thread(target=self.loop.run_forever, name="ray-actor-event-loop", daemon=True).start()

            async def make():
                return {g: asyncio.Semaphore(n) for g, n in limits.items()}

            self.sems = asyncio.run_coroutine_threadsafe(make(), self.loop).result()
        elif max_concurrency > 1 or groups:
            from concurrent.futures import ThreadPoolExecutor

            self.pools = {g: ThreadPoolExecutor(max_workers=n, thread_name_prefix="ray-actor-" + (g or "default")) for g, n in limits.items()}

    def start_async(self, task):
        # Arguments are resolved here, in the order calls arrive, so calls start
        # in that order; a call whose arguments fail never takes a slot.
        try:
            args = self.arguments(task)
        except _DependencyFailed as dep:
            self._dependency_failed(task, dep, task.num_returns)
            return
        except Exception as e:  # noqa: BLE001 - e.g. an argument that cannot be unpickled
            self._raised(task, self.task_name(task), e, None, task.num_returns)
            return
        asyncio.run_coroutine_threadsafe(self.run_async(task, args), self.loop)

    async def run_async(self, task, args):
        name = self.task_name(task)
        returns = task.num_returns
        values, kwargs, retry_on = args
        sem = self.sems.get(task.concurrency_group) or self.sems[""]
        tid = bytes(task.task_id)
        async with sem:
            self.conn.current_task_id = tid
            self.conn.current_task_name = self.log_name
            self.running[tid] = asyncio.current_task()
            try:
                try:
                    fn = _builtin(task.function_name) or getattr(self.actor, task.function_name)
                    result = fn(*values, **kwargs)
                    if inspect.iscoroutine(result):
                        result = await result
                    if task.generator and inspect.isasyncgen(result):
                        result = await _gen.run_async_generator(
                            self.core, task, result, self._item_error(task, name), task.owner_address
                        )
                    elif task.generator:
                        result = self.stream(task, name, result)
                    if tid in self.conn.cancelled:
                        raise asyncio.CancelledError()
                    result = self._as_returns(task, name, result, returns)
                except asyncio.CancelledError:
                    self._actor_call_cancelled(task, name, returns)
                    return
                except _DependencyFailed as dep:
                    self._dependency_failed(task, dep, returns)
                    return
                except SystemExit:
                    if self.conn.exiting:
                        sys.stdout.flush()
                        sys.stderr.flush()
                        os._exit(0)
                    raise
                except BaseException as e:  # noqa: BLE001 - e.g. asyncio.CancelledError
                    self._raised(task, name, e, retry_on, returns)
                    return
                self._complete(task, name, result)
            finally:
                self.running.pop(tid, None)
                self.conn.cancelled.discard(tid)
                sys.stdout.flush()
                sys.stderr.flush()

    # ------------------------------------------------------------ results

    def _where(self, task):
        """(pid, ip, actor id, actor repr) for a task error's title."""
        actor_id = actor_repr = None
        if task.actor_id and self.actor is not None:
            actor_id = self.conn.actor_id
            try:
                actor_repr = repr(self.actor)
            except Exception:  # noqa: BLE001 - a repr that fails is left out
                actor_repr = None
        return os.getpid(), self.conn.node_ip, actor_id, actor_repr

    def _dependency_failed(self, task, dep, returns):
        err = dep.error
        if not isinstance(err, _exc.RayTaskError):
            body = serialization.system_error(type(err).__name__, str(err))
            self._finish(task, [(serialization.KIND_SYSTEM_ERROR, body, [], [])] * returns, True, False)
            return
        new = task_errors.dependency_failed(self.task_name(task), err, *self._where(task))
        data, buffers, refs = serialization.serialize_error(new)
        self._finish(task, [(serialization.KIND_ERROR, data, buffers, refs)] * returns, True, False)

    def _actor_call_cancelled(self, task, name, returns):
        """A cancelled actor call: Ray's RayTaskError whose cause is TaskCancelledError."""
        self._cancelled(task, name, returns, None)

    def _cancelled(self, task, name, returns, exc):
        """A task or call cancelled while it ran: RayTaskError(TaskCancelledError)
        with the frames it was interrupted in, as Ray reports it."""
        cause = _exc.TaskCancelledError("Task: TaskID({}) was cancelled.".format(bytes(task.task_id).hex()))
        frames = task_errors.user_traceback(exc).rpartition("\n")[0] if exc is not None else ""
        body = (frames + "\n" if frames else "") + "ray.exceptions.TaskCancelledError: " + str(cause)
        pid, ip, actor_id, actor_repr = self._where(task)
        err = _exc.RayTaskError(name, body, cause, pid=pid, ip=ip, actor_id=actor_id, actor_repr=actor_repr)
        data, buffers, refs = serialization.serialize_error(err)
        self._finish(task, [(serialization.KIND_ERROR, data, buffers, refs)] * returns, True, False)

    def _raised(self, task, name, e, retry_on, returns):
        if task.actor_creation is not None:
            tb = task_errors.user_traceback(e)
            title = "ray::{}() (pid={}, ip={}, actor_id={})".format(name, os.getpid(), self.conn.node_ip, task.actor_creation[0])
            message = "The actor died because of an error raised in its creation task, {}\n{}".format(title, tb)
            body = serialization.system_error("ActorDiedError", message)
            self._finish(task, [(serialization.KIND_SYSTEM_ERROR, body, [], [])] * returns, True, False)
            return
        err = task_errors.task_error(name, e, *self._where(task))
        data, buffers, refs = serialization.serialize_error(err)
        retryable = retry_on is None or any(isinstance(e, c) for c in retry_on)
        left = task.exception_retries_left if not task.actor_id else 0
        if retryable and left:
            # Ray's raylet says so on the driver's console.
            self.core.log_line(
                "2\x1b[33m(raylet)\x1b[0m Task {} failed. There are {} retries remaining, so the task will be "
                "retried. Error: User exception:\n{}".format(name, "infinite" if left < 0 else left, err)
            )
        self._finish(task, [(serialization.KIND_ERROR, data, buffers, refs)] * returns, True, retryable)

    def _as_returns(self, task, name, result, returns):
        if returns > 1 and inspect.isgenerator(result):
            values = []
            try:
                for v in result:
                    values.append(v)
                    if len(values) > returns:
                        raise ValueError("Task returned more than num_returns={} objects.".format(returns))
            except Exception as e:  # noqa: BLE001 - what was yielded stays; the rest is the error
                if len(values) > returns:
                    raise
                err = _ErrorReturn(task_errors.task_error(name, e, *self._where(task)))
                values.extend([err] * (returns - len(values)))
            return _as_returns(values, returns)
        return _as_returns(result, returns)

    def _complete(self, task, name, result):
        try:
            out = []
            for r in result:
                if isinstance(r, _ErrorReturn):
                    data, buffers, refs = serialization.serialize_error(r.error)
                    out.append((serialization.KIND_ERROR, data, buffers, refs))
                    continue
                data, buffers, refs = serialization.serialize(r)
                out.append((serialization.KIND_VALUE, data, buffers, refs))
        except Exception as e:  # noqa: BLE001 - e.g. a return value that cannot be pickled
            err = task_errors.task_error(name, e, *self._where(task))
            data, buffers, refs = serialization.serialize_error(err)
            self._finish(task, [(serialization.KIND_ERROR, data, buffers, refs)] * task.num_returns, True, False)
            return
        self._finish(task, out, False, False)

    def _finish(self, task, returns, is_error, is_application_error):
        sys.stdout.flush()
        sys.stderr.flush()
        self.core.finish_task(task, returns, is_error, is_application_error)


def _builtin(name):
    """The methods every actor has."""
    if name == "__ray_ready__":
        return lambda: True
    if name == "__ray_terminate__":
        from ray.actor import exit_actor

        return exit_actor
    return None


async def _awaited(x):
    return await x


class _ErrorReturn:
    """A return value that holds an error (a generator with num_returns=N that
    raised after yielding some values: the rest hold its error, as in Ray)."""

    def __init__(self, error):
        self.error = error


def _as_returns(result, returns):
    if returns > 1:
        result = list(result)
        if len(result) != returns:
            raise ValueError("Task returned {} objects, but num_returns={}.".format(len(result), returns))
        return result
    return [result]


class _DependencyFailed(Exception):
    def __init__(self, error):
        super().__init__(str(error))
        self.error = error


def main(argv=None):
    p = argparse.ArgumentParser(description="Ray worker process (started by the raylet)")
    p.add_argument("--node-id", required=True)
    p.add_argument("--raylet-address", required=True)
    p.add_argument("--gcs-address", required=True)
    p.add_argument("--node-ip-address", required=True)
    p.add_argument("--worker-id", required=True)
    p.add_argument("--job-id", required=True)
    p.add_argument("--driver-sys-path", default="[]")
    args = p.parse_args(argv)
    import json

    for path in reversed(json.loads(args.driver_sys_path)):
        if path not in sys.path:
            sys.path.insert(0, path)
    core = _raylet.CoreWorker.start_worker(
        args.gcs_address, args.raylet_address, args.node_ip_address, args.worker_id, args.job_id
    )
    gcs = _raylet.GcsConnection(args.gcs_address)
    conn = _worker._Connection(core, gcs, _worker.WORKER_MODE, args.gcs_address)
    conn.node_ip = args.node_ip_address
    env_text = os.environ.pop(_rt_env.ENV_VAR, "")
    setup_error = None
    if env_text:
        try:
            conn.runtime_env = _rt_env.apply(core, args.job_id, env_text, os.path.join(_raylet.temp_root(), "runtime_resources"))
        except Exception as e:  # noqa: BLE001 - every task of this worker fails with it
            import traceback as _tb

            # The error, not the environment: env_vars may hold secrets.
            setup_error = "{}: {}".format(RUNTIME_ENV_SETUP_FAILED, "".join(_tb.format_exception_only(type(e), e)).strip())
            print(setup_error, file=sys.stderr)
    _worker.set_connection(conn)
    sys.stdout = _TaskOutput(core, conn, 1, sys.stdout)
    sys.stderr = _TaskOutput(core, conn, 2, sys.stderr)
    conn.interruptible = None

    w = _Worker(core, conn)
    w.setup_error = setup_error

    def on_sigint(signum, frame):
        # ray.cancel: interrupt only the user code of the task it names.
        task = conn.interruptible
        if task is not None and core.take_cancel(task):
            raise KeyboardInterrupt
        # An actor's call on another thread or on its event loop: flagged (so
        # is_canceled() says so and its result is TaskCancelledError); a
        # coroutine is cancelled too.
        for tid, fut in list(w.running.items()):
            if core.take_cancel(tid):
                conn.cancelled.add(tid)
                if fut is not None:
                    w.loop.call_soon_threadsafe(fut.cancel)

    signal.signal(signal.SIGINT, on_sigint)
    while True:
        try:
            task = core.next_task(1.0)
            if task is not None:
                w.dispatch(task)
        except KeyboardInterrupt:
            # A cancel that arrived after its task ended.
            continue


if __name__ == "__main__":
    main()
