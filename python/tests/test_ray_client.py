"""Ray Client: a driver on "another machine" (its own HOME and temp root, no
`ray start` there, knowing only the ray:// address and the token) uses the
whole API through the head's Ray Client server, which `ray start --head`
runs and `ray stop` stops."""

import os
import re
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time

import pytest

import ray
from conftest import RAY


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_head(client_port, *extra):
    out = subprocess.run(
        [RAY, "start", "--head", "--port", str(free_port()), "--node-ip-address", "127.0.0.1", "--num-cpus", "2",
         "--ray-client-server-port", str(client_port), *extra],
        capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stderr
    return out


def token():
    with open(os.path.join(os.environ["HOME"], ".ray", "auth_token")) as f:
        return f.read().strip()


def elsewhere(tmp_path, **env):
    """The environment of a process on another machine: a fresh HOME and temp
    root (no token file, no record of a cluster), plus `env`."""
    home = tmp_path / "client-home"
    home.mkdir(exist_ok=True)
    out = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    out.update(HOME=str(home), RAY_TMPDIR=str(tmp_path / "client-tmp"), PYTHONUNBUFFERED="1")
    out.update(env)
    return out


def run_client(code, env, timeout=120):
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout, env=env
    )


def server_pids():
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/{}/cmdline".format(pid), "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if b"ray.util.client.server" in args:
            pids.append(int(pid))
    return pids


def wait_until(pred, timeout=20):
    deadline = time.time() + timeout
    while True:
        try:
            if pred():
                return True
        except OSError:
            pass
        if time.time() >= deadline:
            return False
        time.sleep(0.1)


CLIENT_API = """
    import os, time
    import numpy as np
    import ray
    from ray.util.client.common import ClientObjectRef

    assert not os.path.exists(os.path.join(os.environ["HOME"], ".ray")), "no token file on this machine"
    ctx = ray.init("ray://127.0.0.1:{port}", namespace="client-ns", runtime_env={{"env_vars": {{"CLIENT_VAR": "v1"}}}})
    assert repr(ctx).startswith("ClientContext(dashboard_url=None, python_version="), repr(ctx)
    assert ctx.dashboard_url is None and ctx.ray_version == ray.__version__, repr(ctx)
    assert ctx.python_version.split(".")[:2] == [str(v) for v in __import__("sys").version_info[:2]]
    assert isinstance(ctx.ray_commit, str)
    assert ray.is_initialized()

    # Tasks, options, several returns.
    @ray.remote
    def square(x):
        return x * x

    @ray.remote(num_returns=2)
    def pair(x):
        return x, -x

    assert ray.get([square.remote(i) for i in range(5)]) == [0, 1, 4, 9, 16]
    assert ray.get(square.options(num_cpus=0.5, name="sq").remote(7)) == 49
    a, b = pair.remote(3)
    assert ray.get([a, b]) == [3, -3]
    ref = square.remote(2)
    assert type(ref) is ClientObjectRef and len(ref.hex()) > 8 and repr(ref).startswith("ClientObjectRef(")

    # Generator tasks stream their refs.
    @ray.remote
    def count_to(n):
        for i in range(n):
            yield i * 10

    assert [ray.get(r) for r in count_to.remote(3)] == [0, 10, 20]

    # A large array through put and get, and as a task's argument.
    big = np.arange(2_000_000, dtype=np.float64)  # 16 MB
    big_ref = ray.put(big)
    back = ray.get(big_ref)
    assert back.shape == big.shape and np.array_equal(back, big)

    @ray.remote
    def total(arr):
        return float(arr.sum())

    assert ray.get(total.remote(big_ref)) == float(big.sum())
    assert ray.get(total.remote(big[:1000])) == float(big[:1000].sum())

    # Refs nested in values, both ways.
    @ray.remote
    def unwrap(refs):
        return sum(ray.get(refs))

    inner = [ray.put(i) for i in range(4)]
    assert ray.get(unwrap.remote(inner)) == 6
    outer = ray.put({{"refs": inner}})
    got = ray.get(outer)["refs"]
    assert all(type(r) is ClientObjectRef for r in got) and ray.get(got) == [0, 1, 2, 3]

    @ray.remote
    def make_ref(v):
        return [ray.put(v)]

    (nested,) = ray.get(make_ref.remote("deep"))
    assert type(nested) is ClientObjectRef and ray.get(nested) == "deep"

    # wait, timeouts, cancel. (No CPU: leases lingering from the tasks above
    # must not hold these back.)
    @ray.remote(num_cpus=0)
    def sleepy(s):
        time.sleep(s)
        return s

    slow, fast = sleepy.remote(30), sleepy.remote(0)
    ready, not_ready = ray.wait([slow, fast], num_returns=1, timeout=20)
    assert ready == [fast] and not_ready == [slow], (ready, not_ready)
    try:
        ray.get(slow, timeout=0.2)
        raise AssertionError("expected GetTimeoutError")
    except ray.exceptions.GetTimeoutError:
        pass
    ray.cancel(slow)
    try:
        ray.get(slow, timeout=30)
        raise AssertionError("expected TaskCancelledError")
    except ray.exceptions.TaskCancelledError:
        pass

    # A task's error arrives with the same types as locally.
    @ray.remote
    def boom():
        raise ValueError("bad value 17")

    try:
        ray.get(boom.remote())
        raise AssertionError("expected ValueError")
    except ValueError as e:
        assert isinstance(e, ray.exceptions.RayTaskError) and "bad value 17" in str(e), repr(e)

    # Actors: methods, named actors, handles passed on, kill.
    @ray.remote
    class Counter:
        def __init__(self, start):
            self.n = start

        def inc(self, by=1):
            self.n += by
            return self.n

        def fail(self):
            raise KeyError("nope")

    c = Counter.remote(10)
    assert ray.get([c.inc.remote(), c.inc.remote(by=5)]) == [11, 16]
    try:
        ray.get(c.fail.remote())
        raise AssertionError("expected KeyError")
    except KeyError:
        pass
    named = Counter.options(name="counter", max_concurrency=2).remote(0)
    assert ray.get(named.inc.remote()) == 1
    again = ray.get_actor("counter")
    assert ray.get(again.inc.remote()) == 2
    assert "counter" in ray.util.list_named_actors()

    @ray.remote
    def bump(h):
        return ray.get(h.inc.remote(100))

    assert ray.get(bump.remote(named)) == 102
    ray.kill(named)
    try:
        ray.get(again.inc.remote(), timeout=30)
        raise AssertionError("expected RayActorError")
    except ray.exceptions.RayActorError:
        pass
    try:
        ray.get_actor("no-such-actor")
        raise AssertionError("expected ValueError")
    except ValueError:
        pass

    # Threads share the connection: one blocked in ray.get holds up no other.
    import threading
    box = []
    waiter = threading.Thread(target=lambda: box.append(ray.get(sleepy.remote(3))))
    waiter.start()
    time.sleep(0.3)
    assert ray.get(square.remote(3)) == 9 and waiter.is_alive()
    waiter.join()
    assert box == [3]

    # The server lets go of objects once the client's refs are gone.
    client = ray._private.client_mode.current()
    held = client.request("held", ())
    many = [ray.put(i) for i in range(50)]
    copies = ray.get(ray.put(many))
    assert client.request("held", ()) >= held + 50
    del many
    time.sleep(1.5)  # a round of releases: the copies still hold the objects
    assert client.request("held", ()) >= held + 50 and ray.get(copies[7]) == 7
    del copies
    deadline = time.time() + 10
    while client.request("held", ()) > held and time.time() < deadline:
        time.sleep(0.2)
    assert client.request("held", ()) == held, (client.request("held", ()), held)

    # The cluster, as the client sees it.
    assert ray.cluster_resources()["CPU"] == 2.0
    assert "CPU" in ray.available_resources() or ray.available_resources() == {{}}
    nodes = ray.nodes()
    assert len(nodes) == 1 and nodes[0]["Alive"] and nodes[0]["NodeManagerAddress"] == "127.0.0.1"
    rc = ray.get_runtime_context()
    assert rc.get_job_id() and rc.get_node_id() == nodes[0]["NodeID"] and rc.namespace == "client-ns"
    assert rc.get_task_id() is None and rc.get_actor_id() is None

    @ray.remote
    def job():
        return ray.get_runtime_context().get_job_id()

    assert ray.get(job.remote()) == rc.get_job_id()

    @ray.remote
    def env_var():
        return os.environ.get("CLIENT_VAR")

    assert ray.get(env_var.remote()) == "v1", "the job's runtime_env reaches its tasks"

    # Printed output of tasks shows up here.
    @ray.remote
    def chatty():
        print("hello from a task on the cluster")
        return 1

    ray.get(chatty.remote())
    time.sleep(1.0)
    ray.shutdown()
    assert not ray.is_initialized()
    print("CLIENT-OK")
"""


def test_a_client_elsewhere_uses_the_whole_api(tmp_path):
    port = free_port()
    start_head(port)
    r = run_client(CLIENT_API.format(port=port), elsewhere(tmp_path, RAY_AUTH_TOKEN=token()), timeout=240)
    assert r.returncode == 0 and "CLIENT-OK" in r.stdout, r.stdout + r.stderr
    assert "hello from a task on the cluster" in r.stdout, r.stdout


def test_wrong_or_missing_tokens_and_garbage_are_refused_and_the_server_lives_on(tmp_path):
    port = free_port()
    start_head(port)
    check = """
        import ray
        try:
            ray.init("ray://127.0.0.1:{port}")
        except ray.exceptions.AuthenticationError as e:
            print("REFUSED:", e)
        else:
            print("CONNECTED")
    """.format(port=port)
    r = run_client(check, elsewhere(tmp_path, RAY_AUTH_TOKEN="wrong-token-value"))
    assert "REFUSED:" in r.stdout and "invalid cluster token" in r.stdout, r.stdout + r.stderr
    assert "wrong-token-value" not in r.stdout + r.stderr
    r = run_client(check, elsewhere(tmp_path))
    assert "REFUSED:" in r.stdout and "no cluster token found" in r.stdout, r.stdout + r.stderr

    # Peers that speak nonsense, claim huge frames, or say nothing.
    for payload in [b"GET / HTTP/1.1\r\n\r\n", struct.pack("!IB", 0xFFFFFFF0, 0) + b"x" * 64, b"\x00" * 5, b""]:
        s = socket.create_connection(("127.0.0.1", port))
        s.settimeout(15)
        s.recv(4096)  # the server's hello
        if payload:
            s.sendall(payload)
        else:
            s.shutdown(socket.SHUT_WR)
        try:
            while s.recv(4096):
                pass
        except OSError:
            pass
        s.close()

    # An authenticated client that sends nonsense gets errors, and its session serves on.
    abuse = textwrap.dedent(check) + textwrap.dedent("""
        client = ray._private.client_mode.current()
        try:
            client.request("no_such_request", ())
        except ray.exceptions.RaySystemError as e:
            assert "unknown Ray Client request" in str(e), e
        client._send(10**9, "get", [b"\\x00\\x01 not a body"])
        client._send(10**9 + 1, "0bad op", [b""])
        assert ray.get(ray.put(41)) == 41
        print("STILL-SERVING")
    """)
    ok = run_client(abuse, elsewhere(tmp_path, RAY_AUTH_TOKEN=token()))
    assert "CONNECTED" in ok.stdout and "STILL-SERVING" in ok.stdout, ok.stdout + ok.stderr
    logs = os.path.join(os.environ["RAY_TMPDIR"], "ray", "session_latest", "logs", "ray_client_server.out")
    text = open(logs).read()
    assert "refused the Ray Client connection" in text and token() not in text, text


def test_a_clients_job_ends_when_it_disconnects(tmp_path):
    port = free_port()
    start_head(port)
    env = elsewhere(tmp_path, RAY_AUTH_TOKEN=token())
    code = """
        import os, signal, sys, ray
        ray.init("ray://127.0.0.1:{port}", namespace="gone")

        @ray.remote
        class Keeper:
            def ping(self):
                return "pong"

        k = Keeper.options(name="{name}").remote()
        d = Keeper.options(name="detached-{name}", lifetime="detached").remote()
        assert ray.get([k.ping.remote(), d.ping.remote()]) == ["pong", "pong"]
        print("READY", flush=True)
        if sys.argv[1] == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        ray.shutdown()
    """
    ray.init(address="auto")
    for how in ("shutdown", "kill"):
        name = "keeper-" + how
        r = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code.format(port=port, name=name)), how],
            capture_output=True, text=True, timeout=120, env=env,
        )
        assert "READY" in r.stdout, r.stdout + r.stderr

        def gone():
            try:
                ray.get_actor(name, namespace="gone")
                return False
            except ValueError:
                return True

        assert wait_until(gone, 30), "the actor of a disconnected client ({}) still lives".format(how)
        survivor = ray.get_actor("detached-" + name, namespace="gone")
        assert ray.get(survivor.ping.remote(), timeout=30) == "pong", "detached actors outlive their job"


def test_ray_start_runs_the_client_server_and_ray_stop_stops_it(tmp_path):
    port = free_port()
    out = start_head(port)
    assert 'ray.init("ray://127.0.0.1:{}")'.format(port) in out.stdout, out.stdout
    assert wait_until(lambda: len(server_pids()) == 1), server_pids()
    pid = server_pids()[0]
    cmdline = open("/proc/{}/cmdline".format(pid)).read()
    assert "--port={}".format(port) in cmdline and "--host=127.0.0.1" in cmdline, cmdline
    assert token() not in cmdline
    assert wait_until(lambda: socket.create_connection(("127.0.0.1", port)).close() is None)
    stop = subprocess.run([RAY, "stop"], capture_output=True, text=True)
    assert stop.returncode == 0, stop.stderr
    assert wait_until(lambda: not server_pids(), 10), "ray stop left the Ray Client server running"

    # A taken port: a clear warning, and the cluster starts anyway.
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    taken = blocker.getsockname()[1]
    out = start_head(taken)
    assert "Ray Client server was not started" in out.stderr and str(taken) in out.stderr, out.stderr
    assert "Ray runtime started." in out.stdout
    assert not server_pids()
    blocker.close()


def test_client_and_api_misuse_give_clear_errors(tmp_path):
    env = elsewhere(tmp_path, RAY_AUTH_TOKEN="x", RAY_CLIENT_CONNECT_TIMEOUT_S="1")
    r = run_client(
        """
        import ray
        try:
            ray.init("ray://127.0.0.1:{port}")
        except ConnectionError as e:
            print("NOCONN:", e)
        try:
            ray.init("ray://127.0.0.1:{port}", num_cpus=2)
        except ValueError as e:
            print("BADARG:", e)
        assert not ray.is_initialized()
        """.format(port=free_port()),
        env,
    )
    assert "NOCONN:" in r.stdout and "could not connect" in r.stdout, r.stdout + r.stderr
    assert "BADARG:" in r.stdout and "num_cpus" in r.stdout, r.stdout + r.stderr
    with pytest.raises(ValueError, match="Ray Client address"):
        ray._private.worker.resolve_address("ray://1.2.3.4:10001")


def make_pki(d):
    """A CA and a certificate for 127.0.0.1 signed by it (openssl), as Ray's TLS variables want them."""

    def ssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=test-ca")
    ssl("req", *ec, "-keyout", "key.pem", "-out", "req.csr", "-subj", "/CN=127.0.0.1")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    ssl("x509", "-req", "-in", "req.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "cert.pem",
        "-days", "1", "-extfile", "ext.cnf")
    return {"RAY_USE_TLS": "1", "RAY_TLS_SERVER_CERT": str(d / "cert.pem"), "RAY_TLS_SERVER_KEY": str(d / "key.pem"),
            "RAY_TLS_CA_CERT": str(d / "ca.pem")}


def test_a_tls_cluster_serves_ray_client_over_tls(tmp_path, monkeypatch):
    pki = tmp_path / "pki"
    pki.mkdir()
    tls = make_pki(pki)
    for k, v in tls.items():
        monkeypatch.setenv(k, v)
    port = free_port()
    start_head(port)
    code = """
        import numpy as np, ray
        ray.init("ray://127.0.0.1:{port}")

        @ray.remote
        def double(a):
            return a * 2

        arr = np.ones(1_000_000)
        assert np.array_equal(ray.get(double.remote(ray.put(arr))), arr * 2)
        ray.shutdown()
        print("TLS-OK")
    """.format(port=port)
    r = run_client(code, elsewhere(tmp_path, RAY_AUTH_TOKEN=token(), **tls))
    assert "TLS-OK" in r.stdout, r.stdout + r.stderr
    plain = run_client(code, elsewhere(tmp_path, RAY_AUTH_TOKEN=token()))
    assert plain.returncode != 0 and "RAY_USE_TLS" in plain.stderr, plain.stdout + plain.stderr


def test_ray_address_with_ray_scheme_selects_ray_client(tmp_path):
    port = free_port()
    start_head(port)
    code = """
        import ray

        @ray.remote
        def f():
            return "auto"

        assert ray.get(f.remote()) == "auto"  # the first call connects, as it starts a driver otherwise
        assert type(ray.init(ignore_reinit_error=True)).__name__ == "ClientContext"
        try:
            ray.init()
            raise AssertionError("expected RuntimeError")
        except RuntimeError as e:
            assert "ray.init twice" in str(e), e
        ray.shutdown()
        assert not ray.is_initialized()
        assert type(ray.init()).__name__ == "ClientContext"
        assert ray.get(ray.put(5)) == 5
        print("ENV-OK")
    """
    env = elsewhere(tmp_path, RAY_AUTH_TOKEN=token(), RAY_ADDRESS="ray://127.0.0.1:{}".format(port))
    r = run_client(code, env)
    assert "ENV-OK" in r.stdout, r.stdout + r.stderr


def test_messages_over_the_size_limit_fail_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_CLIENT_MAX_MESSAGE_BYTES", str(1 << 20))  # the server's (and its sessions') limit
    port = free_port()
    start_head(port)
    code = """
        import ray
        ray.init("ray://127.0.0.1:{port}")

        @ray.remote
        def blob(n):
            return b"x" * n

        try:
            ray.put(b"y" * (2 << 20))
            raise AssertionError("expected ValueError")
        except ValueError as e:
            assert "RAY_CLIENT_MAX_MESSAGE_BYTES" in str(e), e
        big = blob.remote(2 << 20)
        try:
            ray.get(big)
            raise AssertionError("expected ValueError")
        except ValueError as e:
            assert "more than Ray Client carries" in str(e), e
        assert len(ray.get(blob.remote(1000))) == 1000
        print("LIMITS-OK")
    """.format(port=port)
    r = run_client(code, elsewhere(tmp_path, RAY_AUTH_TOKEN=token(), RAY_CLIENT_MAX_MESSAGE_BYTES=str(1 << 20)))
    assert "LIMITS-OK" in r.stdout, r.stdout + r.stderr
