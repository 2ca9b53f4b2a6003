"""One Ray Client's session: a driver of its own (its own job) that serves
that client over the socket the server handed over.

`python -m ray.util.client.session --fd N --address GCS`, started by the Ray
Client server after the client proved the token, which writes the session's
settings (JSON) to its stdin. It connects to
the cluster with ray.init(), tells the client it is ready, and then runs the
client's requests. It holds the real ObjectRefs the client has stand-ins for
(counted per stand-in, dropped when the client releases them), streams the
printed output of the job's tasks to the client, and when the client goes it
shuts the driver down, which ends the job with its actors and workers."""

import argparse
import concurrent.futures
import json
import logging
import os
import pickle
import signal
import socket
import sys
import threading

import cloudpickle

import ray
from ray import _raylet
from ray import exceptions as _exc
from ray.util.client import common

logger = logging.getLogger("ray.util.client.session")

# Requests that may wait on the cluster run on threads, so that one client
# thread blocked in ray.get does not hold up the others.
_BLOCKING = {"get", "wait", "generator_next"}
GENERATOR_PREFIX = b"gen:"


def _is_streaming_generator(obj):
    return type(obj).__name__ == "ObjectRefGenerator" and hasattr(obj, "__next__")


class _Pickler(cloudpickle.Pickler):
    """Pickles replies: ObjectRefs travel as ids, each one counted."""

    def __init__(self, file, buffer_callback, found):
        super().__init__(file, protocol=5, buffer_callback=buffer_callback)
        self._found = found

    def persistent_id(self, obj):
        if type(obj) is _raylet.ObjectRef:
            self._found.append(obj)
            return ("ref", obj.binary())
        if _is_streaming_generator(obj):
            self._found.append(obj)
            return ("gen", GENERATOR_PREFIX + str(id(obj)).encode())
        return None


class _Unpickler(pickle.Unpickler):
    """Unpickles requests: ids of ObjectRefs become the refs held for them."""

    def __init__(self, file, buffers, session):
        super().__init__(file, buffers=buffers)
        self._session = session

    def persistent_load(self, pid):
        if isinstance(pid, tuple) and len(pid) == 2 and pid[0] == "ref" and isinstance(pid[1], bytes):
            return self._session.lookup(pid[1])
        raise pickle.UnpicklingError("unknown persistent id")


class Session:
    def __init__(self, sock, params):
        self.sock = sock
        self.params = params
        self.send_lock = threading.Lock()
        self.refs = {}  # object id -> [ObjectRef, stand-ins the client holds]
        self.refs_lock = threading.Lock()
        self.functions = {}
        self.classes = {}
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="ray-client-call")
        self.done = threading.Event()

    # ---------------------------------------------------------- references

    def lookup(self, object_id):
        with self.refs_lock:
            entry = self.refs.get(object_id)
        if entry is None:
            raise ValueError(
                "ObjectRef {} is not held for this client (released already, or from another session)".format(
                    object_id.hex()
                )
            )
        return entry[0]

    def _hold(self, refs):
        with self.refs_lock:
            for r in refs:
                key = GENERATOR_PREFIX + str(id(r)).encode() if _is_streaming_generator(r) else r.binary()
                entry = self.refs.get(key)
                if entry is None:
                    self.refs[key] = [r, 1]
                else:
                    entry[1] += 1

    def release(self, ids):
        dropped = []
        with self.refs_lock:
            for i in ids:
                entry = self.refs.get(i)
                if entry is None:
                    continue
                entry[1] -= 1
                if entry[1] <= 0:
                    dropped.append(self.refs.pop(i)[0])
        del dropped  # the refs go out of scope here, outside the lock

    # ---------------------------------------------------------- the wire

    def encode(self, value, what=None):
        found = []
        parts = common.encode_body(lambda f, cb: _Pickler(f, cb, found), value)
        if what is not None:
            common.check_size(parts, what)
        # Counted only once the whole reply is pickled (and will be sent).
        self._hold(found)
        return parts

    def decode(self, body):
        return common.decode_body(body, lambda f, bufs: _Unpickler(f, bufs, self))

    def reply(self, req_id, kind, parts):
        try:
            common.send_message(self.sock, [common.REPLY_HEADER.pack(req_id, kind)] + parts, self.send_lock)
        except OSError:
            self.done.set()

    def reply_error(self, req_id, err):
        # A task's error pickles as the plain RayTaskError (with its cause); the
        # client makes it an instance of the cause's type again.
        try:
            parts = self.encode(err)
        except Exception:  # noqa: BLE001 - an error that cannot be pickled still reaches the client
            parts = self.encode(_exc.RaySystemError("{}: {}".format(type(err).__name__, err)))
        self.reply(req_id, common.ERROR, parts)

    def run(self, req_id, handler, args):
        try:
            result = handler(*args)
            parts = self.encode(result, "The reply")
        except BaseException as e:  # noqa: BLE001 - every failure goes back to the caller
            if req_id:
                self.reply_error(req_id, e)
            else:
                logger.warning("request without a reply failed: %r", e)
            return
        if req_id:
            self.reply(req_id, common.OK, parts)

    # ---------------------------------------------------------- serving

    def serve(self):
        limit = common.max_message_bytes()
        while not self.done.is_set():
            try:
                msg = common.recv_message(self.sock, limit)
            except common.ConnectionClosed:
                logger.info("the client disconnected")
                break
            except common.ProtocolError as e:
                logger.warning("closing the connection: the client broke the protocol: %s", e)
                break
            except OSError as e:
                logger.info("the connection ended: %s", e.strerror or e)
                break
            if len(msg) < common.REQUEST_HEADER.size:
                logger.warning("closing the connection: request too short")
                break
            req_id, op_len = common.REQUEST_HEADER.unpack_from(msg, 0)
            start = common.REQUEST_HEADER.size
            try:
                op = bytes(msg[start : start + op_len]).decode("ascii")
            except UnicodeDecodeError:
                logger.warning("closing the connection: malformed operation name")
                break
            body = memoryview(msg)[start + op_len :]
            handler = getattr(self, "op_" + op, None) if op.isidentifier() else None
            if handler is None:
                if req_id:
                    self.reply_error(req_id, _exc.RaySystemError("unknown Ray Client request {!r}".format(op)))
                continue
            try:
                args = self.decode(body)
                if not isinstance(args, tuple):
                    args = (args,)
            except Exception as e:  # noqa: BLE001 - a bad body fails that request only
                if req_id:
                    self.reply_error(req_id, e)
                continue
            if op in _BLOCKING:
                self.pool.submit(self.run, req_id, handler, args)
            else:
                self.run(req_id, handler, args)
            if op == "bye":
                break
        self.done.set()

    # ---------------------------------------------------------- requests

    def op_release(self, ids):
        self.release([i for i in ids if isinstance(i, bytes)])

    def op_bye(self, _):
        _drain_logs(self, 0.2)
        return None

    def op_export(self, kind, key, target):
        if kind == "function":
            from ray.remote_function import RemoteFunction

            self.functions[key] = RemoteFunction(target, {})
        elif kind == "class":
            from ray.actor import ActorClass

            self.classes[key] = ActorClass(target, {})
        else:
            raise ValueError("unknown export kind {!r}".format(kind))

    def op_task(self, key, args, kwargs, options):
        return self.functions[key]._remote(args, kwargs, options)

    def op_actor(self, key, args, kwargs, options):
        return self.classes[key]._remote(args, kwargs, options)

    def op_method(self, handle, name, args, kwargs, num_returns, group, max_task_retries):
        from ray.actor import ActorHandle, ActorMethod

        if not isinstance(handle, ActorHandle):
            raise TypeError("expected an actor handle, got {!r}".format(type(handle)))
        return ActorMethod(handle, name, num_returns, group, max_task_retries)._call(args, kwargs, num_returns, group)

    def op_get(self, refs, timeout):
        return ray.get(list(refs), timeout=timeout)

    def op_put(self, value):
        return ray.put(value)

    def op_wait(self, refs, num_returns, timeout, fetch_local):
        ready, _ = ray.wait(list(refs), num_returns=num_returns, timeout=timeout, fetch_local=fetch_local)
        chosen = set(ready)
        return [i for i, r in enumerate(refs) if r in chosen]

    def op_cancel(self, ref, force, recursive):
        ray.cancel(ref, force=force, recursive=recursive)

    def op_get_actor(self, name, namespace):
        return ray.get_actor(name, namespace=namespace)

    def op_kill(self, handle, no_restart):
        ray.kill(handle, no_restart=no_restart)

    def op_list_named_actors(self, all_namespaces):
        return ray.util.list_named_actors(all_namespaces=all_namespaces)

    def op_held(self):
        """How many ObjectRefs are held for the client (for tests and debugging)."""
        with self.refs_lock:
            return len(self.refs)

    def op_generator_next(self, generator_id):
        """The next ref of a streaming generator (StopIteration after the last)."""
        with self.refs_lock:
            entry = self.refs.get(generator_id)
        if entry is None or not generator_id.startswith(GENERATOR_PREFIX):
            raise ValueError("this streaming generator is not held for this client")
        return next(entry[0])

    def op_nodes(self):
        return ray.nodes()

    def op_cluster_resources(self):
        return ray.cluster_resources()

    def op_available_resources(self):
        return ray.available_resources()


def _drain_logs(session, timeout):
    from ray._private import worker as _worker

    conn = _worker.global_connection()
    if conn is None or not session.params.get("log_to_driver", True):
        return
    try:
        lines = conn.core.next_log_lines(timeout)
    except Exception:  # noqa: BLE001 - the core is shutting down
        return
    if lines:
        session.reply(0, common.LOG, session.encode(list(lines)))


def _pump_logs(session):
    while not session.done.is_set():
        _drain_logs(session, 0.2)


def _die_with_parent():
    """Ends this process when the server that started it dies (Linux)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - not Linux: the socket's end stops us instead
        pass


def _info():
    from ray._private import worker as _worker

    conn = _worker.global_connection()
    return {
        "job_id": conn.core.job_id,
        "node_id": conn.core.node_id,
        "worker_id": conn.core.worker_id,
        "namespace": conn.namespace(),
        "gcs_address": conn.gcs_address,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m ray.util.client.session")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--address", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s ray_client_session[%(process)d]: %(message)s",
        stream=sys.stderr,
    )
    _die_with_parent()

    def on_signal(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_signal)
    sock = socket.socket(fileno=args.fd)
    sock.settimeout(None)
    params = json.loads(sys.stdin.read() or "{}")
    session = Session(sock, params)
    try:
        init_args = {"namespace": params.get("namespace"), "log_to_driver": False}
        if params.get("runtime_env"):
            init_args["runtime_env"] = params["runtime_env"]
        ray.init(address=args.address, **init_args)
    except BaseException as e:  # noqa: BLE001 - told to the client
        logger.error("cannot connect to the cluster at %s: %s", args.address, e)
        session.reply_error(0, RuntimeError("the Ray Client server cannot connect to the cluster: {}".format(e)))
        sock.close()
        return 1
    logger.info("serving a client as job %s", ray.get_runtime_context().get_job_id())
    pump = None
    try:
        session.reply(0, common.READY, session.encode(_info()))
        if params.get("log_to_driver", True):
            pump = threading.Thread(target=_pump_logs, args=(session,), name="ray-client-logs", daemon=True)
            pump.start()
        session.serve()
    finally:
        session.done.set()
        session.pool.shutdown(wait=False, cancel_futures=True)
        if pump is not None:
            pump.join(timeout=1)
        try:
            sock.close()
        except OSError:
            pass
        session.refs.clear()
        ray.shutdown()
        logger.info("session ended")
    return 0


if __name__ == "__main__":
    _code = 1
    try:
        _code = main() or 0
    except SystemExit as _e:
        _code = _e.code if isinstance(_e.code, int) else 0
    finally:
        # No interpreter teardown: threads still blocked on the cluster must
        # not keep this process alive.
        for _stream in (sys.stdout, sys.stderr):
            try:
                _stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(_code)
