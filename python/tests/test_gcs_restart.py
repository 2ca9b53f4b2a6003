"""A GCS that dies comes back with the whole cluster: kill -9 of the GCS on a
running 3-node cluster (its supervisor starts it again, and it reads its tables
back from the redb file on the head), and the same with Redis after every head
process is killed and the head is started again."""

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

import ray
from conftest import RAY, run_script


def start(*args, env=None):
    out = subprocess.run([RAY, "start", *args], capture_output=True, text=True, env={**os.environ, **(env or {})})
    assert out.returncode == 0, out.stderr
    return out


def records():
    root = os.path.join(os.environ["RAY_TMPDIR"], "ray", "processes")
    out = []
    for f in glob.glob(os.path.join(root, "*.json")):
        try:
            with open(f) as fh:
                out.append(json.load(fh))
        except (OSError, ValueError):
            pass
    return out


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ")[-1].split()[0] != "Z"


def gcs_pid():
    pids = [r["pid"] for r in records() if r["name"] == "gcs_server" and alive(r["pid"])]
    assert len(pids) == 1, records()
    return pids[0]


def status_ok(address):
    return subprocess.run([RAY, "status", "--address", address], capture_output=True, text=True, timeout=30)


def wait_for_gcs(address, timeout=30):
    t0 = time.time()
    while time.time() - t0 < timeout:
        r = status_ok(address)
        if r.returncode == 0:
            return time.time() - t0, r.stdout
        time.sleep(0.1)
    raise AssertionError(f"the GCS at {address} did not come back within {timeout} s")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


LOOP = """
import ray, sys, time
ray.init(address="auto")

@ray.remote
def square(i):
    time.sleep(0.05)
    return i * i

t0 = time.time()
n = 0
while time.time() - t0 < float(sys.argv[1]):
    assert ray.get([square.remote(i) for i in range(4)]) == [0, 1, 4, 9]
    n += 1
print("LOOP DONE", n, flush=True)
"""


def cluster(port, env=None):
    start("--head", "--port", str(port), "--node-ip-address", "127.0.0.1", "--num-cpus", "1", env=env)
    address = f"127.0.0.1:{port}"
    for r in ("a", "b"):
        start("--address", address, "--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--resources", json.dumps({r: 1}), env=env)
    return address


def test_kill_9_of_the_gcs_loses_nothing_and_no_node_dies(tmp_path):
    address = cluster(free_port())
    ray.init(address="auto")
    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert len(nodes) == 3
    from ray.experimental import internal_kv

    assert internal_kv._internal_kv_put(b"before", b"the restart") is False

    @ray.remote(resources={"a": 1}, num_cpus=0)
    class Counter:
        def __init__(self):
            self.n = 0

        def incr(self):
            self.n += 1
            return self.n

    c = Counter.options(name="counter").remote()
    assert ray.get(c.incr.remote()) == 1
    script = tmp_path / "loop.py"
    script.write_text(LOOP)
    loop = subprocess.Popen([sys.executable, str(script), "8"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2)

    old = gcs_pid()
    os.kill(old, signal.SIGKILL)
    back_in, status = wait_for_gcs(address)
    assert back_in < 10, f"the GCS took {back_in:.1f} s to come back"
    assert gcs_pid() != old
    print(f"GCS back {back_in:.2f} s after kill -9")

    assert internal_kv._internal_kv_get(b"before") == b"the restart"
    assert ray.get(c.incr.remote()) == 2, "the actor kept its state"
    assert ray.get(ray.get_actor("counter").incr.remote()) == 3, "its name is found in the restored table"
    out, err = loop.communicate(timeout=60)
    assert loop.returncode == 0 and "LOOP DONE" in out, err[-3000:]
    after = ray.nodes()
    assert {n["NodeID"] for n in after if n["Alive"]} == nodes
    assert not [n for n in after if not n["Alive"]], "no node was marked dead"
    status = status_ok(address).stdout
    assert status.count(" node_") == 3 or status.count("node_") >= 3, status

    @ray.remote
    def one():
        return 1

    assert ray.get([one.remote() for _ in range(10)]) == [1] * 10, "new work runs after the restart"


@pytest.fixture
def redis_server(tmp_path):
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    assert os.path.exists(exe), "redis-server is missing: scripts/test.sh installs Debian's redis-server package"
    port = free_port()
    data = tmp_path / "redis"
    data.mkdir()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        raise AssertionError("redis-server did not start")
    yield f"127.0.0.1:{port}"
    proc.kill()
    proc.wait()


def head_processes(head_node_id):
    """Every process of the head: the GCS, its supervisor and the head's raylet."""
    out = []
    for r in records():
        if not alive(r["pid"]):
            continue
        if r["name"] in ("gcs_server", "gcs_supervisor", "dashboard", "ray_client_server", "monitor"):
            out.append(r["pid"])
        elif r["name"] == "raylet":
            with open(f"/proc/{r['pid']}/cmdline", "rb") as f:
                if f"--node-id={head_node_id}".encode() in f.read():
                    out.append(r["pid"])
    return out


SETUP = """
import ray
from ray.experimental import internal_kv
ray.init(address="auto", namespace="ha")
internal_kv._internal_kv_put(b"kept", b"in redis")

@ray.remote(resources={"a": 1}, num_cpus=0)
class Keeper:
    def __init__(self):
        self.n = 0
    def incr(self):
        self.n += 1
        return self.n

k = Keeper.options(name="keeper", lifetime="detached").remote()
assert ray.get(k.incr.remote()) == 1
print("SET UP")
"""

AFTER = """
import ray
from ray.experimental import internal_kv
ray.init(address="auto", namespace="ha")
assert internal_kv._internal_kv_get(b"kept") == b"in redis", internal_kv._internal_kv_get(b"kept")
assert ray.get(ray.get_actor("keeper").incr.remote()) == 2

@ray.remote
def square(i):
    return i * i

assert ray.get([square.remote(i) for i in range(20)]) == [i * i for i in range(20)]
print("AFTER OK", sorted(n["NodeID"] for n in ray.nodes() if n["Alive"]))
"""


def test_with_redis_the_cluster_survives_a_restart_of_every_head_process(redis_server):
    env = {
        "RAY_REDIS_ADDRESS": redis_server,
        "RAY_health_check_initial_delay_ms": "1000",
        "RAY_health_check_period_ms": "500",
        "RAY_health_check_failure_threshold": "3",
    }
    port = free_port()
    address = cluster(port, env=env)
    ray.init(address="auto")
    nodes = {n["NodeID"]: n for n in ray.nodes() if n["Alive"]}
    head = next(i for i, n in nodes.items() if n["IsHeadNode"])
    workers = set(nodes) - {head}
    ray.shutdown()
    r = run_script(SETUP)
    assert "SET UP" in r.stdout, r.stderr[-3000:]

    for pid in head_processes(head):
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.time() + 10
    while head_processes(head) and time.time() < deadline:
        time.sleep(0.05)
    assert not head_processes(head)
    t0 = time.time()
    start("--head", "--port", str(port), "--node-ip-address", "127.0.0.1", "--num-cpus", "1", env=env)
    wait_for_gcs(address)
    print(f"head back {time.time() - t0:.2f} s after `ray start --head`")

    r = run_script(AFTER, env=env, timeout=120)
    assert "AFTER OK" in r.stdout, r.stderr[-3000:]
    ray.init(address="auto")
    # The old head's raylet is gone for good: it fails its health checks (the
    # fast settings above) and is marked dead; the workers never are.
    deadline = time.time() + 30
    while time.time() < deadline:
        now = {n["NodeID"]: n for n in ray.nodes()}
        if not now[head]["Alive"]:
            break
        time.sleep(0.2)
    assert not now[head]["Alive"], "the old head is marked dead"
    for w in workers:
        assert now[w]["Alive"], f"worker {w} stayed alive through the head's restart"
    assert len([n for n in now.values() if n["Alive"]]) == 3, "the two workers and the new head"
