"""Multi-node benchmark, run unchanged on this package and on Ray from PyPI:
three nodes on this machine (`ray start`), then an autoscaling cluster on the
fake multi-node provider. Prints one JSON object of figures.
Usage: python multinode.py [--quick]"""

import json
import os
import subprocess
import sys
import tempfile
import time

QUICK = "--quick" in sys.argv
RAY = os.path.join(os.path.dirname(sys.executable), "ray")
MIB = 1024 * 1024


def ray_cli(*args, env=None):
    out = subprocess.run([RAY, *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300)
    if out.returncode != 0:
        raise RuntimeError("ray {} failed:\n{}{}".format(" ".join(args), out.stdout, out.stderr))
    return out


def free_port():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def stop():
    subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=120)


def three_nodes(results):
    import numpy as np
    import ray

    address = "127.0.0.1:%d" % free_port()
    ray_cli("start", "--head", "--port", address.split(":")[1], "--num-cpus", "0", "--resources", '{"A": 1}', "--node-ip-address", "127.0.0.1", "--include-dashboard=false")
    for r in ("B", "C"):
        ray_cli("start", "--address", address, "--num-cpus", "2", "--resources", '{"%s": 1}' % r, "--node-ip-address", "127.0.0.1")
    ray.init(address=address)
    try:
        deadline = time.time() + 60
        while len([n for n in ray.nodes() if n["Alive"]]) < 3 and time.time() < deadline:
            time.sleep(0.1)

        @ray.remote(num_cpus=1, resources={"B": 0.01})
        def make(seed):
            return np.full(100 * MIB // 8, seed, dtype=np.int64)

        # Cross-node get of 100 MB: made on node B, read by the driver on the head.
        rates = []
        for i in range(3 if QUICK else 5):
            ref = make.remote(i)
            ray.wait([ref], fetch_local=False)
            t = time.perf_counter()
            arr = ray.get(ref)
            rates.append(arr.nbytes / 1e9 / (time.perf_counter() - t))
            assert int(arr[0]) == i
            del arr, ref
        rates.sort()
        results["cross_node_get_100mb_gb_per_s"] = rates[len(rates) // 2]

        # Many small objects across nodes: the driver puts them; a task on node C reads them all.
        n = 1000 if QUICK else 5000
        refs = [ray.put(i.to_bytes(8, "little") * 128) for i in range(n)]

        @ray.remote(num_cpus=1, resources={"C": 0.01})
        def read_all(refs):
            t = time.perf_counter()
            values = ray.get(refs)
            return len(values), time.perf_counter() - t

        ray.get(read_all.remote(refs[:10]))  # warm the worker
        count, took = ray.get(read_all.remote(refs))
        assert count == n
        results["cross_node_small_objects_per_s"] = n / took
    finally:
        ray.shutdown()
        stop()


CONFIG = """
cluster_name: bench
max_workers: 4
upscaling_speed: 1.0
idle_timeout_minutes: 0.1
provider:
  type: fake_multinode
  disable_launch_config_check: true
  disable_node_updaters: true
  use_node_id_as_ip: true
auth:
  ssh_user: ubuntu
available_node_types:
  ray.head.default:
    resources: {CPU: 0}
    node_config: {}
    max_workers: 0
  ray.worker.cpu:
    resources: {CPU: 1}
    node_config: {}
    min_workers: 0
    max_workers: 4
head_node_type: ray.head.default
file_mounts: {}
cluster_synced_files: []
file_mounts_sync_continuously: false
rsync_exclude: []
rsync_filter: []
initialization_commands: []
setup_commands: []
head_setup_commands: []
worker_setup_commands: []
head_start_ray_commands: []
worker_start_ray_commands: []
"""


def first_task_on_new_node(results):
    import ray

    fd, path = tempfile.mkstemp(suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        f.write(CONFIG)
    # Ray's fake provider starts its nodes against the default GCS port.
    port = 6379
    ray_cli("start", "--head", "--port", str(port), "--num-cpus", "0", "--autoscaling-config", path, "--include-dashboard=false", env={"RAY_FAKE_CLUSTER": "1"})
    ray.init(address="127.0.0.1:%d" % port)
    try:

        @ray.remote(num_cpus=1)
        def started():
            return time.time()

        t0 = time.time()
        ref = started.remote()
        results["first_task_on_new_node_s"] = ray.get(ref, timeout=300) - t0
    finally:
        ray.shutdown()
        stop()
        os.unlink(path)


def main():
    import ray

    results = {"ray_version": getattr(ray, "__version__", "?")}
    stop()
    three_nodes(results)
    first_task_on_new_node(results)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
