"""The Ray Client server: `python -m ray.util.client.server --address GCS
--host IP --port 10001`, started by `ray start --head`.

It listens on the node's address, and for each connection runs the token
handshake (see common.py) with a deadline and size limits, before anything
else. A client that proves the token gets a process of its own
(`ray.util.client.session`), which connects to the cluster as a driver with a
job of its own and serves that client over the same socket; when the client
goes, its job ends with it. Nothing a peer sends can stop this process: a bad
handshake closes that connection, with the reason logged (never the token)."""

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from ray.util.client import common

logger = logging.getLogger("ray.util.client.server")

MAX_PENDING_HANDSHAKES = 32


def _python_version():
    return "{}.{}.{}".format(*sys.version_info[:3])


class _RateLimited:
    """Logs at most one line per `period` seconds per key (a flood of bad
    connections must not flood the log)."""

    def __init__(self, period=10.0):
        self.period = period
        self.last = {}
        self.suppressed = {}
        self.lock = threading.Lock()

    def warning(self, key, message, *args):
        now = time.monotonic()
        with self.lock:
            if now - self.last.get(key, -1e9) < self.period:
                self.suppressed[key] = self.suppressed.get(key, 0) + 1
                return
            self.last[key] = now
            skipped = self.suppressed.pop(key, 0)
        if skipped:
            message += " (and %d more like it in the last %d s)"
            args = args + (skipped, self.period)
        logger.warning(message, *args)


class ClientServer:
    def __init__(self, gcs_address, host, port, token, max_clients):
        self.gcs_address = gcs_address
        self.host = host
        self.port = port
        self.token = token
        self.max_clients = max_clients
        self.children = []
        self.children_lock = threading.Lock()
        self.pending = threading.BoundedSemaphore(MAX_PENDING_HANDSHAKES)
        self.stopping = threading.Event()
        self.rate = _RateLimited()
        self.listener = None
        self.tls = common.tls_context(server_side=True)

    def listen(self):
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self.listener = socket.create_server((self.host, self.port), family=family, backlog=128)
        self.listener.settimeout(0.5)
        self.port = self.listener.getsockname()[1]

    def live_children(self):
        with self.children_lock:
            alive = []
            for p in self.children:
                code = p.poll()
                if code is None:
                    alive.append(p)
                else:
                    logger.info("client session (pid %d) ended with exit code %d", p.pid, code)
            self.children = alive
            return len(alive)

    def serve_forever(self):
        while not self.stopping.is_set():
            try:
                conn, peer = self.listener.accept()
            except socket.timeout:
                self.live_children()
                continue
            except OSError as e:
                if self.stopping.is_set():
                    break
                self.rate.warning("accept", "accept failed: %s", e)
                time.sleep(0.1)
                continue
            if not self.pending.acquire(blocking=False):
                self.rate.warning("busy", "too many connections in their handshake; closed one from %s", _peer(peer))
                conn.close()
                continue
            t = threading.Thread(target=self._handle, args=(conn, peer), name="ray-client-handshake", daemon=True)
            t.start()

    def _handle(self, conn, peer):
        accepted = None
        # One deadline for the whole handshake (a peer trickling bytes must not
        # hold a slot): past it, the socket is shut, which ends any read.
        current = [conn]  # the socket the handshake reads (TLS wraps it)
        timer = threading.Timer(common.HANDSHAKE_TIMEOUT_S, lambda: _shut(current[0]))
        timer.daemon = True
        timer.start()
        try:
            accepted = self._handshake(conn, peer, current)
        except Exception as e:  # noqa: BLE001 - a peer must never take the server down
            self.rate.warning("handshake:" + type(e).__name__, "closed the connection from %s: %s", _peer(peer), str(e) or type(e).__name__)
        finally:
            timer.cancel()
            self.pending.release()
        try:
            if accepted is not None:
                self._start_session(accepted[0], peer, accepted[1])
        except Exception as e:  # noqa: BLE001
            logger.error("could not start a session for %s: %s", _peer(peer), e)
        finally:
            for s in (conn, current[0]):
                if s is not None:
                    try:
                        s.close()
                    except OSError:
                        pass

    def _refuse(self, conn, peer, error, reason, log):
        try:
            common.send_json(conn, {"ok": False, "error": error, "reason": reason})
        except OSError:
            pass
        self.rate.warning("refuse:" + reason, "refused the Ray Client connection from %s: %s", _peer(peer), log)

    def _handshake(self, conn, peer, current):
        conn.settimeout(common.HANDSHAKE_TIMEOUT_S)
        if self.tls is not None:
            conn = self.tls.wrap_socket(conn, server_side=True)
            current[0] = conn
        common.set_keepalive(conn)
        server_nonce = common.new_nonce()
        common.send_json(
            conn,
            {
                "server": "ray-client",
                "protocol": common.PROTOCOL_VERSION,
                "auth": "token" if self.token is not None else "disabled",
                "nonce": server_nonce,
            },
        )
        try:
            hello = common.recv_json(conn)
        except common.ConnectionClosed:
            return
        except socket.timeout:
            self.rate.warning("timeout", "the peer at %s sent no handshake within %s s", _peer(peer), common.HANDSHAKE_TIMEOUT_S)
            return
        if hello.get("protocol") != common.PROTOCOL_VERSION:
            return self._refuse(
                conn, peer,
                "protocol mismatch: the client speaks {!r}, this server {}; use the same Ray version on both sides".format(
                    hello.get("protocol"), common.PROTOCOL_VERSION
                ),
                "protocol", "protocol mismatch",
            )
        client_nonce = hello.get("nonce")
        if not common.valid_nonce(client_nonce):
            return self._refuse(conn, peer, "malformed handshake", "protocol", "malformed handshake")
        if self.token is not None:
            presented = hello.get("proof")
            if presented is None:
                return self._refuse(
                    conn, peer,
                    "missing cluster token (this cluster requires one); " + common.WHERE_TOKENS_COME_FROM,
                    "auth", "no token",
                )
            if not common.proof_matches(self.token, "client", server_nonce, client_nonce, presented):
                return self._refuse(
                    conn, peer,
                    "invalid cluster token: this cluster uses a different token; " + common.WHERE_TOKENS_COME_FROM,
                    "auth", "invalid token",
                )
        namespace = hello.get("namespace")
        if namespace is not None and (not isinstance(namespace, str) or not namespace or len(namespace) > 1024):
            return self._refuse(conn, peer, "namespace must be a non-empty string of at most 1024 characters", "args", "bad namespace")
        live = self.live_children()
        if live >= self.max_clients:
            return self._refuse(
                conn, peer,
                "this Ray Client server already serves {} clients (RAY_CLIENT_MAX_CLIENTS)".format(live),
                "busy", "too many clients",
            )
        import ray

        common.send_json(
            conn,
            {
                "ok": True,
                "proof": common.proof(self.token, "server", server_nonce, client_nonce) if self.token is not None else None,
                "python_version": _python_version(),
                "ray_version": ray.__version__,
                "ray_commit": getattr(ray, "__commit__", "unknown"),
                "protocol_version": str(common.PROTOCOL_VERSION),
                "num_clients": live + 1,
            },
        )
        # Only now, with both sides proven, the session's settings (a
        # runtime_env may carry secrets in its env_vars).
        settings = common.recv_json(conn, common.SETTINGS_MAX_BYTES)
        runtime_env = settings.get("runtime_env")
        if runtime_env is not None and not isinstance(runtime_env, dict):
            return self._refuse(conn, peer, "runtime_env must be a dict", "args", "bad runtime_env")
        params = {"namespace": namespace, "log_to_driver": bool(settings.get("log_to_driver", True)), "runtime_env": runtime_env}
        return conn, params

    def _start_session(self, conn, peer, params):
        conn.settimeout(None)
        if self.tls is not None:
            # TLS state lives in this process: relay between the client and
            # the session over a socket pair.
            mine, theirs = socket.socketpair()
            child = self._spawn(theirs, params)
            theirs.close()
            logger.info("client %s connected (TLS); its session runs in pid %d", _peer(peer), child.pid)
            _relay(conn, mine)
        else:
            child = self._spawn(conn, params)
            logger.info("client %s connected; its session runs in pid %d", _peer(peer), child.pid)

    def _spawn(self, sock, params):
        fd = sock.fileno()
        cmd = [
            sys.executable,
            "-m",
            "ray.util.client.session",
            "--fd",
            str(fd),
            "--address",
            self.gcs_address,
        ]
        # The session's settings go through a pipe: a runtime_env's env_vars
        # may hold secrets, which must stay off command lines.
        child = subprocess.Popen(cmd, pass_fds=[fd], stdin=subprocess.PIPE, close_fds=True)
        with self.children_lock:
            self.children.append(child)
        try:
            child.stdin.write(json.dumps(params).encode())
        finally:
            child.stdin.close()
        return child

    def stop(self):
        self.stopping.set()
        with self.children_lock:
            children = list(self.children)
        for p in children:
            try:
                p.terminate()
            except OSError:
                pass
        deadline = time.monotonic() + 5
        for p in children:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()


def _relay(client, local):
    """Copies bytes both ways until either side closes (TLS mode only)."""

    def pump(src, dst):
        try:
            while True:
                data = src.recv(1 << 20)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    t = threading.Thread(target=pump, args=(local, client), name="ray-client-relay", daemon=True)
    t.start()
    pump(client, local)
    t.join()
    local.close()


def _shut(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _peer(peer):
    try:
        return "{}:{}".format(peer[0], peer[1])
    except (TypeError, IndexError):
        return str(peer)


def _max_clients():
    try:
        return max(1, int(os.environ.get("RAY_CLIENT_MAX_CLIENTS", "64")))
    except ValueError:
        return 64


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m ray.util.client.server", description="The Ray Client server.")
    parser.add_argument("--address", required=True, help="the cluster's GCS address, HOST:PORT")
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (the node's address)")
    parser.add_argument("--port", type=int, default=common.DEFAULT_PORT, help="the port to listen on")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s ray_client_server[%(process)d]: %(message)s",
        stream=sys.stderr,
    )
    try:
        token = common.find_token()
    except common.TokenError as e:
        logger.error("cannot start: %s", e)
        return 1
    if token is None:
        logger.warning("RAY_AUTH_MODE=disabled: Ray Client connections are NOT authenticated.")
    try:
        server = ClientServer(args.address, args.host, args.port, token, _max_clients())
    except (ValueError, OSError) as e:
        logger.error("cannot start: TLS settings: %s", e)
        return 1
    try:
        server.listen()
    except OSError as e:
        logger.error("cannot listen on %s:%d: %s", args.host, args.port, e.strerror or e)
        return 1
    logger.info("Ray Client server listening on %s:%d for the cluster at %s", args.host, server.port, args.address)

    def on_signal(signum, frame):
        server.stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server.serve_forever()
    finally:
        server.stop()
        server.listener.close()
        logger.info("Ray Client server stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
