"""The README's main job: a workload that makes the cluster grow and shrink.

Run on a cluster with the autoscaler, e.g.
    ray up configs/local.yaml --yes
    ray submit configs/local.yaml examples/autoscaling_demo.py
    ray down configs/local.yaml --yes
or against a head started with `ray start --head --num-cpus 0 --autoscaling-config
configs/local.yaml` as `python examples/autoscaling_demo.py`.
"""

import time

import ray
from ray.autoscaler.sdk import request_resources

T0 = time.time()


def say(msg):
    print("[{:6.1f}s] {}".format(time.time() - T0, msg), flush=True)


def workers():
    return [n for n in ray.nodes() if n["Alive"] and not n["IsHeadNode"]]


def describe():
    counts = {}
    for n in workers():
        counts[n["NodeTypeName"]] = counts.get(n["NodeTypeName"], 0) + 1
    cpus = ray.cluster_resources().get("CPU", 0)
    return "{} worker node(s) {} with {:g} CPUs".format(len(workers()), counts or "", cpus)


ray.init(address="auto")
say("connected: " + describe())

# 1. Work the head cannot run (it has no CPUs): the raylet reports the queued
#    tasks to the GCS, the autoscaler launches workers, the tasks spill to them.
@ray.remote(num_cpus=1)
def crunch(i):
    time.sleep(2)
    return i * i, ray.get_runtime_context().get_node_id()[:8]


say("submitting 16 tasks of 1 CPU x 2 s each")
refs = [crunch.remote(i) for i in range(16)]
peak = 0
pending = list(refs)
while pending:
    done, pending = ray.wait(pending, num_returns=len(pending), timeout=1.0)
    peak = max(peak, len(workers()))
    say("{:2d}/16 tasks done; {}".format(16 - len(pending), describe()))
results = ray.get(refs)
assert [r for r, _ in results] == [i * i for i in range(16)]
say("all 16 results correct, computed on {} node(s); peak {} workers".format(len({n for _, n in results}), peak))

# 2. request_resources: capacity on demand, here a GPU node (a fake GPU).
say("request_resources(bundles=[{'GPU': 1}])")
request_resources(bundles=[{"GPU": 1}])
while not any(n["Resources"].get("GPU") for n in workers()):
    time.sleep(0.2)
say("a GPU node joined: " + describe())


@ray.remote(num_gpus=1, num_cpus=1)
def on_gpu():
    return ray.get_runtime_context().get_node_id()[:8]


say("a task with num_gpus=1 ran on node " + ray.get(on_gpu.remote()))
request_resources(num_cpus=0)
say("request cleared; idle workers are drained and terminated after idle_timeout_minutes")

# 3. Scale down.
deadline = time.time() + 120
while workers() and time.time() < deadline:
    say("waiting for scale-down: " + describe())
    time.sleep(2)
if workers():
    raise SystemExit("the cluster did not scale down: " + describe())
say("scaled back down: " + describe())
