"""Work that the local node cannot run goes to nodes that can (spillback), and
queued work drives the autoscaler."""

import subprocess
import time

import ray
from conftest import RAY


def start(*args):
    out = subprocess.run([RAY, "start", *args], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out


def test_tasks_spill_to_a_node_with_free_cpus():
    start("--head", "--port", "0", "--node-ip-address", "127.0.0.1", "--num-cpus", "0")
    start("--address", "auto", "--node-ip-address", "127.0.0.1", "--num-cpus", "2")
    ray.init(address="auto")
    head = ray.get_runtime_context().get_node_id()

    @ray.remote
    def where(i):
        return ray.get_runtime_context().get_node_id(), i * 2

    out = ray.get([where.remote(i) for i in range(10)], timeout=60)
    assert [v for _, v in out] == [i * 2 for i in range(10)]
    nodes = {n for n, _ in out}
    assert head not in nodes and len(nodes) == 1


CONFIG = """
cluster_name: spill
max_workers: 4
idle_timeout_minutes: 0.05
provider:
  type: fake_multinode
available_node_types:
  ray.head.default:
    resources: {CPU: 0}
    node_config: {}
  worker:
    resources: {CPU: 2}
    node_config: {}
    max_workers: 4
head_node_type: ray.head.default
"""


def test_queued_tasks_make_the_cluster_grow_and_idle_workers_go(tmp_path):
    cfg = tmp_path / "cluster.yaml"
    cfg.write_text(CONFIG)
    start("--head", "--port", "0", "--node-ip-address", "127.0.0.1", "--num-cpus", "0", "--autoscaling-config", str(cfg))
    ray.init(address="auto")

    @ray.remote(num_cpus=1)
    def work(i):
        time.sleep(1)
        return ray.get_runtime_context().get_node_id()

    t0 = time.time()
    nodes = set(ray.get([work.remote(i) for i in range(8)], timeout=120))
    assert len(nodes) >= 2, "the work spread over the new workers"
    assert time.time() - t0 < 60
    workers = lambda: [n for n in ray.nodes() if n["Alive"] and not n["IsHeadNode"]]  # noqa: E731
    assert 1 <= len(workers()) <= 4
    deadline = time.time() + 60
    while workers() and time.time() < deadline:
        time.sleep(0.5)
    assert workers() == [], "idle workers are drained and terminated"


def test_a_dead_drivers_leases_on_other_nodes_are_released():
    from conftest import run_script

    start("--head", "--port", "0", "--node-ip-address", "127.0.0.1", "--num-cpus", "0")
    start("--address", "auto", "--node-ip-address", "127.0.0.1", "--num-cpus", "1")
    # A driver takes the other node's only CPU, then dies without a goodbye.
    r = run_script(
        "import os, time, ray\nray.init(address='auto')\n"
        "@ray.remote\ndef hold():\n    time.sleep(600)\n"
        "ref = hold.remote()\ntime.sleep(2)\nos._exit(0)\n"
    )
    assert r.returncode == 0, r.stderr
    ray.init(address="auto")

    @ray.remote
    def quick():
        return "ran"

    assert ray.get(quick.remote(), timeout=30) == "ran"


def test_queued_tasks_use_every_node_launched_for_them(tmp_path):
    # The main job's shape: 16 one-CPU tasks of 2 s on a head without CPUs. Every
    # node the autoscaler launches for them must get work, however the race
    # between their arrival and the queued lease requests goes.
    cfg = tmp_path / "cluster.yaml"
    cfg.write_text(CONFIG)
    start("--head", "--port", "0", "--node-ip-address", "127.0.0.1", "--num-cpus", "0", "--autoscaling-config", str(cfg))
    ray.init(address="auto")

    @ray.remote(num_cpus=1)
    def crunch(i):
        time.sleep(2)
        return ray.get_runtime_context().get_node_id()

    used = set(ray.get([crunch.remote(i) for i in range(16)], timeout=120))
    launched = {n["NodeID"] for n in ray.nodes() if not n["IsHeadNode"]}
    assert len(launched) == 4, "16 CPUs of demand, capped at max_workers=4"
    assert used == launched, "every launched node ran tasks"


def routable_ip():
    """This machine's address on its default route (not loopback)."""
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.123", 9))  # TEST-NET: nothing is sent, only a route is chosen
        ip = s.getsockname()[0]
    finally:
        s.close()
    assert not ip.startswith("127."), "this test needs a machine with a non-loopback address; found only " + ip
    return ip


def test_loopback_reaches_a_head_started_on_its_routable_address():
    ip = routable_ip()
    out = start("--head", "--port", "0", "--node-ip-address", ip, "--num-cpus", "1")
    import re

    port = re.search(r"--address='?{}:(\d+)".format(re.escape(ip)), out.stdout + out.stderr)
    assert port, out.stdout + out.stderr
    local = "127.0.0.1:" + port.group(1)
    status = subprocess.run([RAY, "status", "--address", local], capture_output=True, text=True)
    assert status.returncode == 0 and "Node status" in status.stdout, status.stderr
    start("--address", local, "--num-cpus", "1")
    ray.init(address=local)
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2

    @ray.remote
    def f(x):
        return x * 2

    assert ray.get([f.remote(i) for i in range(4)], timeout=60) == [0, 2, 4, 6]
