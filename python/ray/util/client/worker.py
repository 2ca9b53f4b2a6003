"""The client end of a Ray Client connection: `ray.init("ray://HOST:PORT")`
connects here, and the Ray API functions hand their calls to the
`ClientWorker` while it is connected.

One TCP connection per client. Requests carry ids, so several threads can wait
on the server at once; one reader thread takes the replies (and the printed
output of this session's tasks, which it prints here). ObjectRefs are
`ClientObjectRef` stand-ins: the server holds the real references, and lets go
of one when every stand-in for it is gone (released in batches)."""

import atexit
import collections
import itertools
import os
import pickle
import socket
import sys
import threading
import time
import weakref

import cloudpickle

from ray import exceptions as _exc
from ray.util.client import common
from ray.util.client.common import ClientObjectRef, ClientObjectRefGenerator

HANDSHAKE_TIMEOUT_S = common.HANDSHAKE_TIMEOUT_S


def _env_seconds(name, default):
    try:
        value = float(os.environ.get(name, ""))
        return value if value > 0 else default
    except ValueError:
        return default


def _python_version():
    return "{}.{}.{}".format(*sys.version_info[:3])


class _Pickler(cloudpickle.Pickler):
    """Pickles what the client sends: ClientObjectRefs travel as their ids."""

    def __init__(self, file, buffer_callback, worker):
        super().__init__(file, protocol=5, buffer_callback=buffer_callback)
        self._worker = worker

    def persistent_id(self, obj):
        if type(obj) is ClientObjectRef:
            if obj._worker is not self._worker:
                raise ValueError(
                    "{!r} belongs to an earlier Ray Client connection; its object is gone.".format(obj)
                )
            return ("ref", obj._id)
        return None


class _Unpickler(pickle.Unpickler):
    """Unpickles what the server sends: ObjectRefs arrive as ids."""

    def __init__(self, file, buffers, worker):
        super().__init__(file, buffers=buffers)
        self._worker = worker

    def persistent_load(self, pid):
        if isinstance(pid, tuple) and len(pid) == 2 and pid[0] == "ref":
            return ClientObjectRef(pid[1], self._worker)
        if isinstance(pid, tuple) and len(pid) == 2 and pid[0] == "gen":
            return ClientObjectRefGenerator(pid[1], self._worker)
        raise pickle.UnpicklingError("unknown persistent id from the Ray Client server")


class _Slot:
    __slots__ = ("event", "result")

    def __init__(self):
        self.event = threading.Event()
        self.result = None

    def set(self, kind, body):
        self.result = (kind, body)
        self.event.set()


class ClientContext:
    """What `ray.init("ray://...")` returns, as Ray's ClientContext: versions
    of the server, no dashboard; a context manager that disconnects."""

    def __init__(self, info):
        self.dashboard_url = None
        self.python_version = info.get("python_version")
        self.ray_version = info.get("ray_version")
        self.ray_commit = info.get("ray_commit")
        self.protocol_version = info.get("protocol_version")
        self._num_clients = info.get("num_clients", 1)
        self._context_to_restore = None

    def __repr__(self):
        fields = ("dashboard_url", "python_version", "ray_version", "ray_commit", "protocol_version", "_num_clients", "_context_to_restore")
        return "ClientContext({})".format(", ".join("{}={!r}".format(f, getattr(self, f)) for f in fields))

    def __eq__(self, other):
        return isinstance(other, ClientContext) and repr(self) == repr(other)

    def disconnect(self):
        """Disconnects the Ray Client (ray.shutdown())."""
        import ray

        ray.shutdown()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.disconnect()


class _ContextConn:
    """What ray.get_runtime_context() reads, for a client: the ids of the
    server-side driver that runs this client's job."""

    current_task_id = None
    current_task_name = None
    current_placement_group = None
    current_resources = None
    actor_id = None
    actor_meta = None
    actor_restarts = 0
    cancelled = frozenset()

    def __init__(self, info):
        import types

        self.core = types.SimpleNamespace(job_id=info.get("job_id"), node_id=info.get("node_id"), worker_id=info.get("worker_id"))
        self.gcs_address = info.get("gcs_address")
        self._namespace = info.get("namespace")

    def namespace(self):
        return self._namespace


class ClientWorker:
    """One connection to a Ray Client server."""

    def __init__(self, address, namespace=None, log_to_driver=True, runtime_env=None):
        self.address = address
        self.runtime_env = runtime_env
        self.host, self.port = common.split_address(address)
        self.namespace = namespace
        self.log_to_driver = bool(log_to_driver)
        self._sock = None
        self._send_lock = threading.Lock()
        self._pending = {}
        self._pending_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._releases = collections.deque()
        self._wake = threading.Event()
        self._lost = None
        self._closed = False
        self._exported = weakref.WeakKeyDictionary()
        self._export_lock = threading.Lock()
        self._reader = None
        self.info = {}
        self.context = None

    # ------------------------------------------------------------ connecting

    def _where(self):
        return "ray://{}:{}".format(self.host if ":" not in self.host else "[" + self.host + "]", self.port)

    def _open_socket(self, deadline):
        last = None
        while True:
            left = deadline - time.monotonic()
            try:
                sock = socket.create_connection((self.host, self.port), timeout=max(0.5, min(5.0, left)))
                break
            except socket.gaierror as e:
                raise ConnectionError("Ray Client: cannot resolve the host of {}: {}".format(self._where(), e)) from None
            except OSError as e:
                last = e
            if time.monotonic() + 0.25 >= deadline:
                raise ConnectionError(
                    "Ray Client: could not connect to {} ({}). Check that the head node runs (`ray start --head` starts "
                    "the Ray Client server, on port 10001 unless --ray-client-server-port says otherwise) and that "
                    "this machine can reach that port.".format(self._where(), getattr(last, "strerror", None) or last)
                )
            time.sleep(0.25)
        common.set_keepalive(sock)
        try:
            ctx = common.tls_context(server_side=False)
            if ctx is not None:
                sock.settimeout(HANDSHAKE_TIMEOUT_S)
                sock = ctx.wrap_socket(sock, server_hostname=self.host)
        except (OSError, ValueError) as e:
            sock.close()
            raise ConnectionError("Ray Client: TLS with {} failed: {}".format(self._where(), e)) from None
        return sock

    def connect(self):
        """Connects, proves the token both ways, and waits until the server
        has started this client's session. Raises ConnectionError,
        ray.exceptions.AuthenticationError, or RuntimeError (versions)."""
        try:
            token = common.find_token()
        except common.TokenError as e:
            raise _exc.AuthenticationError("Ray Client: {}".format(e)) from None
        # The server may still be starting (`ray start` does not wait for it).
        deadline = time.monotonic() + _env_seconds("RAY_CLIENT_CONNECT_TIMEOUT_S", 10.0)
        sock = self._open_socket(deadline)
        try:
            info = self._handshake(sock, token)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self.info = info
        self.context = ClientContext(info)
        self._reader = threading.Thread(target=self._read_loop, name="ray-client-reader", daemon=True)
        self._reader.start()
        threading.Thread(target=self._release_loop, name="ray-client-release", daemon=True).start()
        atexit.register(self.close)
        return self.context

    def _handshake(self, sock, token):
        where = self._where()
        sock.settimeout(HANDSHAKE_TIMEOUT_S)
        try:
            hello = common.recv_json(sock)
        except (OSError, common.ProtocolError, common.ConnectionClosed) as e:
            raise ConnectionError(
                "Ray Client: {} did not answer as a Ray Client server ({}). Is that the head's Ray Client port "
                "(10001 unless `ray start --ray-client-server-port` chose another)? If the cluster uses TLS, set "
                "RAY_USE_TLS and the RAY_TLS_* variables here as well.".format(where, str(e) or type(e).__name__)
            ) from None
        if hello.get("server") != "ray-client" or not common.valid_nonce(hello.get("nonce")):
            raise ConnectionError("Ray Client: {} is not a Ray Client server.".format(where))
        if hello.get("protocol") != common.PROTOCOL_VERSION:
            raise RuntimeError(
                "Ray Client: the server at {} speaks protocol {!r}, this client {}; use the same Ray version on both "
                "sides.".format(where, hello.get("protocol"), common.PROTOCOL_VERSION)
            )
        server_nonce = hello["nonce"]
        if hello.get("auth") == "disabled" and token is not None:
            raise _exc.AuthenticationError(
                "Ray Client: the server at {} runs without authentication (RAY_AUTH_MODE=disabled), so it cannot "
                "prove it belongs to your cluster. Set RAY_AUTH_MODE=disabled here as well to connect anyway.".format(where)
            )
        client_nonce = common.new_nonce()
        import ray

        common.send_json(
            sock,
            {
                "protocol": common.PROTOCOL_VERSION,
                "nonce": client_nonce,
                "proof": common.proof(token, "client", server_nonce, client_nonce) if token is not None else None,
                "python_version": _python_version(),
                "ray_version": ray.__version__,
                "namespace": self.namespace,
            },
        )
        try:
            verdict = common.recv_json(sock)
        except (OSError, common.ProtocolError, common.ConnectionClosed) as e:
            raise ConnectionError("Ray Client: the server at {} closed the connection during the handshake ({})".format(where, e)) from None
        if not verdict.get("ok"):
            message = str(verdict.get("error") or "no reason given")[:2000]
            if verdict.get("reason") == "auth":
                raise _exc.AuthenticationError("Ray Client: the server at {} refused this client: {}".format(where, message))
            raise ConnectionError("Ray Client: the server at {} refused this client: {}".format(where, message))
        if token is not None and not common.proof_matches(token, "server", server_nonce, client_nonce, verdict.get("proof")):
            raise _exc.AuthenticationError(
                "Ray Client: the server at {} could not prove that it knows this cluster's token; not connecting. "
                "{}.".format(where, common.WHERE_TOKENS_COME_FROM)
            )
        self._check_versions(verdict)
        # The server proved it knows the token: the session's settings may go now.
        common.send_json(sock, {"runtime_env": self.runtime_env, "log_to_driver": self.log_to_driver})
        # The server starts a driver for this client; that takes a moment.
        sock.settimeout(_env_seconds("RAY_CLIENT_SESSION_START_TIMEOUT_S", 120.0))
        try:
            msg = common.recv_message(sock, common.max_message_bytes())
        except (OSError, common.ProtocolError, common.ConnectionClosed) as e:
            raise ConnectionError(
                "Ray Client: the server at {} did not start a session for this client ({}); see "
                "ray_client_server.out in the head's session logs.".format(where, str(e) or type(e).__name__)
            ) from None
        sock.settimeout(None)
        req_id, kind = common.REPLY_HEADER.unpack_from(msg, 0)
        body = memoryview(msg)[common.REPLY_HEADER.size :]
        if kind == common.ERROR:
            err = self._decode_error(body)
            raise ConnectionError("Ray Client: the server at {} could not start a session: {}".format(where, err))
        if kind != common.READY:
            raise ConnectionError("Ray Client: unexpected first message from {}".format(where))
        info = dict(verdict)
        info.update(self._decode(body))
        info.pop("proof", None)
        return info

    def _check_versions(self, server):
        import ray

        mine = (ray.__version__, _python_version())
        theirs = (str(server.get("ray_version")), str(server.get("python_version")))
        same_python = mine[1].split(".")[:2] == theirs[1].split(".")[:2]
        if mine[0] == theirs[0] and same_python:
            return
        message = (
            "Version mismatch: the Ray Client server at {} runs Ray {} on Python {}, while this process runs Ray {} "
            "on Python {}. Ray Client needs the same Ray version and Python minor version on both sides.".format(
                self._where(), theirs[0], theirs[1], mine[0], mine[1]
            )
        )
        if "RAY_IGNORE_VERSION_MISMATCH" in os.environ:
            print("WARNING: " + message, file=sys.stderr)
            return
        raise RuntimeError(message + " Set RAY_IGNORE_VERSION_MISMATCH=1 to connect anyway.")

    # ------------------------------------------------------------ the wire

    def _encode(self, value):
        return common.encode_body(lambda f, cb: _Pickler(f, cb, self), value)

    def _decode(self, body):
        return common.decode_body(body, lambda f, bufs: _Unpickler(f, bufs, self))

    def _decode_error(self, body):
        try:
            err = self._decode(body)
        except Exception as e:  # noqa: BLE001 - the error's class is missing here
            return _exc.RaySystemError("the server's error could not be unpickled here: {!r}".format(e))
        if type(err) is _exc.RayTaskError:
            err = err.as_instanceof_cause()
        if not isinstance(err, BaseException):
            err = _exc.RaySystemError(repr(err))
        return err

    def _lost_error(self):
        return ConnectionError(self._lost or "Ray Client is disconnected; call ray.init() to connect again.")

    def _read_loop(self):
        sock = self._sock
        limit = common.max_message_bytes()
        reason = None
        try:
            while True:
                msg = common.recv_message(sock, limit)
                if len(msg) < common.REPLY_HEADER.size:
                    raise common.ProtocolError("reply too short")
                req_id, kind = common.REPLY_HEADER.unpack_from(msg, 0)
                body = memoryview(msg)[common.REPLY_HEADER.size :]
                if kind == common.LOG:
                    self._print(body)
                    continue
                with self._pending_lock:
                    slot = self._pending.pop(req_id, None)
                if slot is not None:
                    slot.set(kind, body)
        except common.ConnectionClosed:
            reason = "the server closed the connection"
        except common.ProtocolError as e:
            reason = "the server broke the protocol: {}".format(e)
        except OSError as e:
            reason = e.strerror or str(e)
        except Exception as e:  # noqa: BLE001 - never die silently
            reason = repr(e)
        self._connection_lost(reason)

    def _print(self, body):
        try:
            lines = self._decode(body)
        except Exception:  # noqa: BLE001 - a bad log message is dropped
            return
        from ray._private import worker as _worker

        _worker._emit([str(line) for line in lines])

    def _connection_lost(self, reason):
        with self._pending_lock:
            if self._lost is None:
                if self._closed:
                    self._lost = "Ray Client is disconnected; call ray.init() to connect again."
                else:
                    self._lost = (
                        "Ray Client: the connection to {} was lost ({}). The objects and actors of this session are "
                        "gone; call ray.shutdown() and ray.init() to connect again.".format(self._where(), reason)
                    )
            slots = list(self._pending.values())
            self._pending.clear()
        for slot in slots:
            slot.set(None, None)
        self._wake.set()

    def _send(self, req_id, op, parts):
        opb = op.encode("ascii")
        common.send_message(self._sock, [common.REQUEST_HEADER.pack(req_id, len(opb)), opb] + parts, self._send_lock)

    def _flush_releases(self):
        ids = []
        while self._releases:
            try:
                ids.append(self._releases.popleft())
            except IndexError:
                break
        if ids:
            self._send(0, "release", common.encode_body(lambda f, cb: pickle.Pickler(f, protocol=5), ids))

    def _release_loop(self):
        while not self._closed and self._lost is None:
            self._wake.wait(1.0)
            self._wake.clear()
            if self._closed or self._lost is not None:
                return
            try:
                self._flush_releases()
            except OSError:
                return

    def _release(self, object_id):
        if self._lost is None and not self._closed:
            self._releases.append(object_id)
            if len(self._releases) >= 1024:
                self._wake.set()

    def request(self, op, value, timeout=None):
        """Sends one request and waits for its reply; raises what the server raised."""
        if self._lost is not None or self._sock is None:
            raise self._lost_error()
        parts = self._encode(value)
        common.check_size(parts, "The request ({})".format(op))
        slot = _Slot()
        with self._pending_lock:
            if self._lost is not None:
                raise self._lost_error()
            req_id = next(self._ids)
            self._pending[req_id] = slot
        try:
            self._flush_releases()
            self._send(req_id, op, parts)
        except OSError as e:
            with self._pending_lock:
                self._pending.pop(req_id, None)
            self._connection_lost(e.strerror or str(e))
            raise self._lost_error() from None
        if not slot.event.wait(timeout):
            with self._pending_lock:
                self._pending.pop(req_id, None)
            raise TimeoutError("Ray Client: no reply to {} within {} s".format(op, timeout))
        kind, body = slot.result
        if kind is None:
            raise self._lost_error()
        if kind == common.OK:
            return self._decode(body)
        if kind == common.ERROR:
            raise self._decode_error(body)
        raise _exc.RaySystemError("Ray Client: unexpected reply kind {}".format(kind))

    def close(self):
        """Says goodbye (the server ends this client's job) and closes."""
        if self._closed:
            return
        if self._lost is None and self._sock is not None:
            try:
                self.request("bye", None, timeout=10)
            except Exception:  # noqa: BLE001 - best effort
                pass
        self._closed = True
        self._wake.set()
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(timeout=2)
        try:
            atexit.unregister(self.close)
        except Exception:  # noqa: BLE001
            pass

    # ------------------------------------------------------------ the API

    def _export(self, owner, kind, target):
        key = self._exported.get(owner)
        if key is not None:
            return key
        with self._export_lock:
            key = self._exported.get(owner)
            if key is None:
                key = os.urandom(8).hex()
                self.request("export", (kind, key, target))
                self._exported[owner] = key
        return key

    def call_function(self, remote_function, args, kwargs, options):
        key = self._export(remote_function, "function", remote_function._function)
        return self.request("task", (key, tuple(args), dict(kwargs), dict(options)))

    def create_actor(self, actor_class, args, kwargs, options):
        key = self._export(actor_class, "class", actor_class._cls)
        return self.request("actor", (key, tuple(args), dict(kwargs), dict(options)))

    def call_method(self, handle, name, args, kwargs, num_returns, group, max_task_retries):
        return self.request("method", (handle, name, tuple(args), dict(kwargs), num_returns, group, max_task_retries))

    def get(self, refs, timeout):
        return self.request("get", (list(refs), timeout))

    def put(self, value):
        return self.request("put", value)

    def wait(self, refs, num_returns, timeout, fetch_local):
        ready = set(self.request("wait", (list(refs), num_returns, timeout, fetch_local)))
        return [r for i, r in enumerate(refs) if i in ready], [r for i, r in enumerate(refs) if i not in ready]

    def cancel(self, ref, force, recursive):
        return self.request("cancel", (ref, force, recursive))

    def get_actor(self, name, namespace):
        return self.request("get_actor", (name, namespace))

    def kill(self, handle, no_restart):
        return self.request("kill", (handle, no_restart))

    def list_named_actors(self, all_namespaces):
        return self.request("list_named_actors", (all_namespaces,))

    def cluster_call(self, op):
        """nodes, cluster_resources, available_resources."""
        return self.request(op, ())

    def runtime_context(self):
        from ray.runtime_context import RuntimeContext

        return RuntimeContext(_ContextConn(self.info))
