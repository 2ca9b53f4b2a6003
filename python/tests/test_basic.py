"""The classic example, against ray.init() and against a cluster from `ray start`."""

import os
import subprocess
import sys
import time

import pytest

from conftest import RAY, run_script

SEED = """
import ray
ray.init({init})

@ray.remote
def f(x):
    return x * x

futures = [f.remote(i) for i in range(4)]
print(ray.get(futures)) # [0, 1, 4, 9]
"""


def test_classic_example_with_a_local_cluster():
    r = run_script(SEED.format(init=""))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[0, 1, 4, 9]"


def test_classic_example_against_ray_start_head(tmp_path):
    out = subprocess.run(
        [RAY, "start", "--head", "--port", "0", "--node-ip-address", "127.0.0.1", "--num-cpus", "2"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    r = run_script(SEED.format(init="address='auto'"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[0, 1, 4, 9]"
    # The driver's job shows up in the cluster it joined, and its workers went with it.
    stop = subprocess.run([RAY, "stop"], capture_output=True, text=True)
    assert "Stopped all" in stop.stdout


def test_a_local_cluster_leaves_nothing_behind(tmp_path):
    code = SEED.format(init="") + "\nimport os\nprint(os.getpid())\n"
    before = set(os.listdir("/dev/shm"))
    r = run_script(code)
    assert r.returncode == 0, r.stderr
    time.sleep(1.0)
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    tmp = os.environ["RAY_TMPDIR"]
    leftovers = [l for l in ps.splitlines() if tmp in l and ("gcs_server" in l or "raylet" in l)]
    assert leftovers == [], leftovers
    new = set(os.listdir("/dev/shm")) - before
    assert not [f for f in new if f.startswith("ray-rs-store.")], "the store file must go with its raylet"


def test_init_twice_and_shutdown(ray_1cpu):
    import ray

    assert ray.is_initialized()
    with pytest.raises(RuntimeError, match="ray.init twice"):
        ray.init()
    ray.init(ignore_reinit_error=True)
    ctx = ray.get_runtime_context()
    assert len(ctx.get_job_id()) == 8
    assert len(ctx.get_node_id()) == 56
    assert ctx.get_task_id() is None
    ray.shutdown()
    assert not ray.is_initialized()


def test_shutdown_stops_the_drivers_core_worker_server(ray_1cpu):
    import gc
    import socket

    import ray
    from ray._private import worker

    host, _, port = worker.global_connection().core.address.rpartition(":")
    socket.create_connection((host, int(port)), timeout=2).close()
    ray.shutdown()
    gc.collect()
    # Nothing holds the core worker any more: it is freed and its server stops.
    deadline = time.time() + 5
    while time.time() < deadline:
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
        except OSError:
            return
        time.sleep(0.05)
    raise AssertionError("the core worker's server still accepts connections after ray.shutdown()")


def test_runtime_context_inside_a_task(ray_1cpu):
    import ray

    @ray.remote
    def ids():
        c = ray.get_runtime_context()
        return c.get_job_id(), c.get_node_id(), c.get_task_id()

    job, node, task = ray.get(ids.remote())
    ctx = ray.get_runtime_context()
    assert job == ctx.get_job_id()
    assert node == ctx.get_node_id()
    assert task is not None and len(task) == 32
