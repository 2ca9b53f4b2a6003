"""The benchmark workload, run unchanged on this package and on Ray from PyPI.
Prints one JSON object of figures. Usage: python workload.py [--quick]"""

import json
import os
import subprocess
import sys
import tempfile
import time

QUICK = "--quick" in sys.argv

SEED = """
import ray
ray.init(num_cpus=2)

@ray.remote
def f(x):
    return x * x

futures = [f.remote(i) for i in range(4)]
print(ray.get(futures)) # [0, 1, 4, 9]
"""


def seed_seconds(runs):
    fd, path = tempfile.mkstemp(suffix=".py")
    with os.fdopen(fd, "w") as f:
        f.write(SEED)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        out = subprocess.run([sys.executable, path], capture_output=True, text=True, timeout=300)
        times.append(time.perf_counter() - t)
        assert "[0, 1, 4, 9]" in out.stdout, out.stdout + out.stderr
    os.unlink(path)
    times.sort()
    return times[len(times) // 2]


def actor_rows(ray, results):
    """Actor calls per second (one at a time; a batch in flight, on a plain actor
    and on an async one), and actors created (and first called) per second."""

    @ray.remote
    class Echo:
        def ping(self):
            return None

    @ray.remote
    class AsyncEcho:
        async def ping(self):
            return None

    a = Echo.remote()
    ray.get([a.ping.remote() for _ in range(100)])
    n = 500 if QUICK else 3000
    t0 = time.perf_counter()
    for _ in range(n):
        ray.get(a.ping.remote())
    results["actor_sync_calls_per_s"] = n / (time.perf_counter() - t0)

    n = 2000 if QUICK else 10000
    t0 = time.perf_counter()
    ray.get([a.ping.remote() for _ in range(n)])
    results["actor_batch_calls_per_s"] = n / (time.perf_counter() - t0)

    b = AsyncEcho.remote()
    ray.get([b.ping.remote() for _ in range(100)])
    n = 2000 if QUICK else 10000
    t0 = time.perf_counter()
    ray.get([b.ping.remote() for _ in range(n)])
    results["actor_async_calls_per_s"] = n / (time.perf_counter() - t0)
    ray.kill(a)
    ray.kill(b)

    # Zero-CPU actors, so the creations are not capped by the 2 CPUs.
    n = 10 if QUICK else 20
    t0 = time.perf_counter()
    actors = [Echo.options(num_cpus=0).remote() for _ in range(n)]
    ray.get([x.ping.remote() for x in actors])
    results["actor_creations_per_s"] = n / (time.perf_counter() - t0)
    for x in actors:
        ray.kill(x)


def generator_rows(ray, results):
    """Streaming generator throughput: items a task yields, taken by the driver
    as they arrive (a small int each, and a 100 KiB bytes each)."""

    @ray.remote(num_returns="streaming")
    def count(n, size):
        blob = b"x" * size
        for i in range(n):
            yield blob if size else i

    for _ in count.remote(100, 0):
        pass
    n = 2000 if QUICK else 20000
    t0 = time.perf_counter()
    got = 0
    for ref in count.remote(n, 0):
        ray.get(ref)
        got += 1
    assert got == n
    results["streaming_items_per_s"] = n / (time.perf_counter() - t0)
    n = 200 if QUICK else 1000
    t0 = time.perf_counter()
    for ref in count.remote(n, 100 * 1024):
        ray.get(ref)
    results["streaming_100kb_items_per_s"] = n / (time.perf_counter() - t0)


def main():
    import numpy as np
    import ray

    results = {"ray_version": getattr(ray, "__version__", "?")}
    results["seed_example_s"] = seed_seconds(3 if QUICK else 5)

    ray.init(num_cpus=2, include_dashboard=False) if "include_dashboard" in ray.init.__code__.co_varnames else ray.init(num_cpus=2)

    @ray.remote
    def noop():
        return None

    # Warm up the workers.
    ray.get([noop.remote() for _ in range(200)])

    n = 300 if QUICK else 2000
    lat = []
    t0 = time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        ray.get(noop.remote())
        lat.append(time.perf_counter() - t)
    results["sync_noop_tasks_per_s"] = n / (time.perf_counter() - t0)
    lat.sort()
    results["task_roundtrip_p50_ms"] = lat[len(lat) // 2] * 1e3
    results["task_roundtrip_p99_ms"] = lat[int(len(lat) * 0.99)] * 1e3

    n = 2000 if QUICK else 10000
    t0 = time.perf_counter()
    ray.get([noop.remote() for _ in range(n)])
    results["async_noop_tasks_per_s"] = n / (time.perf_counter() - t0)

    payload = b"x" * 1024
    n = 2000 if QUICK else 10000
    t0 = time.perf_counter()
    for _ in range(n):
        ray.get(ray.put(payload))
    results["put_get_1kb_per_s"] = n / (time.perf_counter() - t0)

    arr = np.ones(100 * 1024 * 1024 // 8)
    gb = arr.nbytes / 1e9
    puts, gets = [], []
    for _ in range(3 if QUICK else 5):
        t = time.perf_counter()
        ref = ray.put(arr)
        puts.append(time.perf_counter() - t)
        t = time.perf_counter()
        out = ray.get(ref)
        gets.append(time.perf_counter() - t)
        assert out.shape == arr.shape
        del out, ref
    puts.sort()
    gets.sort()
    results["put_100mb_gb_per_s"] = gb / puts[len(puts) // 2]
    results["get_100mb_gb_per_s"] = gb / gets[len(gets) // 2]

    # The same size as plain `bytes` (no out-of-band buffer of its own).
    blob = b"x" * (100 * 1024 * 1024)
    puts = []
    for _ in range(3 if QUICK else 5):
        t = time.perf_counter()
        ref = ray.put(blob)
        puts.append(time.perf_counter() - t)
        del ref
    puts.sort()
    results["put_100mb_bytes_gb_per_s"] = len(blob) / 1e9 / puts[len(puts) // 2]
    del blob
    actor_rows(ray, results)
    generator_rows(ray, results)
    ray.shutdown()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
