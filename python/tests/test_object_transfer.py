"""Objects across nodes on a real loopback cluster: large values made on one
node are pulled to the nodes that read them, a full store spills to disk and
reads back, and a value lost with its node is made again by re-running its task."""

import os
import signal
import subprocess
import time

import numpy as np
import pytest

import ray
from conftest import RAY

MIB = 1024 * 1024


def start(*args, env=None):
    out = subprocess.run([RAY, "start", *args], capture_output=True, text=True, env={**os.environ, **(env or {})})
    assert out.returncode == 0, out.stderr
    return out


def three_nodes(env=None):
    """A head without CPUs and two workers, each with a resource naming it."""
    start("--head", "--port", "0", "--node-ip-address", "127.0.0.1", "--num-cpus", "0", "--resources", '{"A": 1}', env=env)
    start("--address", "auto", "--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--resources", '{"B": 1}', env=env)
    start("--address", "auto", "--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--resources", '{"C": 1}', env=env)


def stats():
    return ray._private.worker.global_connection().core.node_stats()


@ray.remote
def node_report():
    core = ray._private.worker.global_connection().core
    return ray.get_runtime_context().get_node_id(), core.node_stats()


def test_a_100mb_array_made_on_one_node_is_read_on_two_others_and_freed_everywhere():
    three_nodes()
    ray.init(address="auto")
    n = 100 * MIB // 8

    @ray.remote(num_cpus=0, resources={"B": 1})
    def make():
        return np.arange(n, dtype=np.int64)

    @ray.remote(num_cpus=0)
    def read(a):
        core = ray._private.worker.global_connection().core
        base, length = core.store_mapping()
        # Read in place from this node's store: no copy once the object is local.
        in_store = base <= a.ctypes.data < base + length
        return ray.get_runtime_context().get_node_id(), int(a.sum()), int(a[-1]), in_store, a.flags.writeable

    ref = make.remote()
    expected = n * (n - 1) // 2
    on_c = ray.get(read.options(resources={"C": 1}).remote(ref), timeout=120)
    on_a = ray.get(read.options(resources={"A": 1}).remote(ref), timeout=120)
    assert on_c[1:] == (expected, n - 1, True, False)
    assert on_a[1:] == (expected, n - 1, True, False)
    assert on_a[0] != on_c[0]
    # The driver (on the head, node A) reads the copy already pulled there.
    arr = ray.get(ref, timeout=60)
    assert int(arr[-1]) == n - 1 and not arr.flags.writeable
    base, length = ray._private.worker.global_connection().core.store_mapping()
    assert base <= arr.ctypes.data < base + length, "zero-copy from the local store"
    assert stats()["num_objects"] >= 1
    del arr
    del ref
    # Secondary copies go with the primary: every store empties.
    deadline = time.time() + 20
    while True:
        reports = [ray.get(node_report.options(num_cpus=0, resources={r: 1}).remote(), timeout=60)[1] for r in "BC"]
        counts = [stats()["num_objects"]] + [s["num_objects"] for s in reports]
        if counts == [0, 0, 0] or time.time() > deadline:
            break
        time.sleep(0.3)
    assert counts == [0, 0, 0], counts


def test_many_small_stored_objects_cross_nodes():
    three_nodes()
    ray.init(address="auto")

    @ray.remote(num_cpus=0, resources={"B": 1})
    def make(i):
        return np.full(200 * 1024 // 8, i, dtype=np.int64)

    @ray.remote(num_cpus=0, resources={"C": 1})
    def total(*arrays):
        return sum(int(a[0]) for a in arrays)

    refs = [make.remote(i) for i in range(50)]
    assert ray.get(total.remote(*refs), timeout=120) == sum(range(50))
    got = ray.get(refs, timeout=60)
    assert [int(a[7]) for a in got] == list(range(50))


def test_two_gb_through_a_500mb_store_spills_and_reads_back(tmp_path):
    spill_dir = tmp_path / "spill-here"
    config = {"object_spilling_config": '{"type": "filesystem", "params": {"directory_path": "%s"}}' % spill_dir}
    ray.init(num_cpus=1, object_store_memory=500 * MIB, _system_config=config)
    n = 100 * MIB // 8
    refs = [ray.put(np.full(n, i, dtype=np.int64)) for i in range(20)]
    s = stats()
    assert s["spilled_total"] >= 15, s
    assert s["object_store_used_bytes"] <= 500 * MIB
    files = list(spill_dir.glob("ray_spilled_objects_*/*"))
    assert len(files) == s["spilled_objects"] > 0
    for i, r in enumerate(refs):
        a = ray.get(r)
        assert a.shape == (n,) and int(a[0]) == i and int(a[n // 2]) == i and int(a[-1]) == i
        del a
    assert stats()["restored_total"] >= 15
    # A task reads spilled arguments too.

    @ray.remote
    def first(a):
        return int(a[0])

    assert ray.get([first.remote(r) for r in refs[:3]]) == [0, 1, 2]
    del refs
    deadline = time.time() + 10
    while list(spill_dir.glob("ray_spilled_objects_*/*")) and time.time() < deadline:
        time.sleep(0.1)
    assert list(spill_dir.glob("ray_spilled_objects_*/*")) == [], "spill files go with their objects"


def test_a_store_full_of_pinned_objects_raises_object_store_full():
    ray.init(num_cpus=1, object_store_memory=300 * MIB)
    held = [ray.get(ray.put(np.ones(100 * MIB // 8))) for _ in range(2)]
    with pytest.raises(ray.exceptions.ObjectStoreFullError):
        ray.put(np.ones(150 * MIB // 8))
    assert len(held) == 2


def node_pids(node_id):
    """Pids of the raylet of `node_id` and the workers it started."""
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in ps.splitlines()[1:] if node_id in line]


FAST_HEALTH = {
    "RAY_health_check_initial_delay_ms": "0",
    "RAY_health_check_period_ms": "200",
    "RAY_health_check_failure_threshold": "3",
    "RAY_health_check_timeout_ms": "500",
}


def test_a_value_lost_with_its_node_is_made_again_by_its_task():
    three_nodes(env=FAST_HEALTH)
    ray.init(address="auto")
    n = 50 * MIB // 8

    @ray.remote(num_cpus=1, num_returns=2, max_retries=2)
    def make(seed):
        return np.full(n, seed, dtype=np.int64), ray.get_runtime_context().get_node_id()

    @ray.remote(num_cpus=1, num_returns=2, max_retries=0)
    def make_once(seed):
        return np.full(n, seed, dtype=np.int64), ray.get_runtime_context().get_node_id()

    arr, where = make.remote(7)
    node = ray.get(where, timeout=60)
    once, where_once = make_once.options(scheduling_strategy=ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(node, soft=False)).remote(8)
    assert ray.get(where_once, timeout=60) == node
    for pid in node_pids(node):
        os.kill(pid, signal.SIGKILL)

    @ray.remote(num_cpus=0, resources={"A": 1})
    def borrower(refs):
        a = ray.get(refs[0])
        return int(a[0]), int(a[-1]), a.shape[0]

    # A borrower on the head finds it lost; its owner (the driver) remakes it.
    assert ray.get(borrower.remote([arr]), timeout=120) == (7, 7, n)
    rebuilt = ray.get(arr, timeout=120)
    assert rebuilt.shape == (n,) and int(rebuilt[0]) == 7 and int(rebuilt[-1]) == 7
    with pytest.raises(ray.exceptions.ObjectReconstructionFailedError) as e:
        ray.get(once, timeout=120)
    assert "max_retries" in str(e.value) or "no retries" in str(e.value)
    assert isinstance(e.value, ray.exceptions.ObjectLostError)


def test_stored_returns_on_another_node_go_when_their_owner_dies():
    """A task's stored return belongs to its caller; when the caller (here a
    driver on the head, killed) dies, the node that holds the value hears of
    it by itself (the owner sweep) and deletes it."""
    three_nodes()
    script = (
        "import ray, numpy as np, os, sys\n"
        "ray.init(address='auto')\n"
        "@ray.remote(num_cpus=0, resources={'B': 1})\n"
        "def make(i):\n    return np.full(1024 * 1024, i)\n"
        "refs = [make.remote(i) for i in range(3)]\n"
        "ray.wait(refs, num_returns=3, fetch_local=False)\n"
        "print('made', flush=True)\n"
        "sys.stdin.read()\n"
    )
    import sys

    driver = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert driver.stdout.readline().strip() == "made"
        ray.init(address="auto")
        on_b = ray.get(node_report.options(num_cpus=0, resources={"B": 1}).remote(), timeout=60)[1]
        assert on_b["num_objects"] >= 3, on_b
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=10)
        deadline = time.time() + 30
        while time.time() < deadline:
            on_b = ray.get(node_report.options(num_cpus=0, resources={"B": 1}).remote(), timeout=60)[1]
            if on_b["num_objects"] == 0:
                break
            time.sleep(0.5)
        assert on_b["num_objects"] == 0, on_b
    finally:
        if driver.poll() is None:
            driver.kill()
