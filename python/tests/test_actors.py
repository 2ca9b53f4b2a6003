"""Actors on real clusters: order, concurrency, async actors, names and
namespaces, detached actors, restarts, kill, exit_actor, ActorPool, Queue, the
state API and CLI, and an actor as demand for the autoscaler."""

import json
import os
import subprocess
import time

import pytest

import ray
from conftest import RAY, run_script
from test_multinode import start


@ray.remote
class Counter:
    def __init__(self, start=0):
        self.n = start

    def incr(self, k=1):
        self.n += k
        return self.n

    def pid(self):
        return os.getpid()


def test_calls_from_one_caller_run_in_order_and_state_persists(ray_2cpu):
    c = Counter.remote(10)
    assert ray.get([c.incr.remote() for _ in range(200)]) == list(range(11, 211))
    assert ray.get(c.incr.remote(0)) == 210


def test_concurrent_callers_each_keep_their_order(ray_2cpu):
    @ray.remote
    class Log:
        def __init__(self):
            self.seen = []

        def add(self, who, i):
            self.seen.append((who, i))

        def get(self):
            return self.seen

    log = Log.remote()

    @ray.remote
    def caller(log, who):
        ray.get([log.add.remote(who, i) for i in range(50)])

    ray.get([caller.remote(log, w) for w in ("a", "b")] + [log.add.remote("driver", -1)])
    seen = ray.get(log.get.remote())
    assert len(seen) == 101
    for who in ("a", "b"):
        assert [i for w, i in seen if w == who] == list(range(50)), "each caller's calls ran in its order"


def test_an_async_actor_runs_100_sleeps_at_once(ray_2cpu):
    import asyncio

    @ray.remote
    class Sleeper:
        async def nap(self):
            await asyncio.sleep(1)
            return 1

    s = Sleeper.remote()
    ray.get(s.nap.remote())
    t0 = time.time()
    assert sum(ray.get([s.nap.remote() for _ in range(100)])) == 100
    assert time.time() - t0 < 3, "100 concurrent sleeps of 1 s finish in about one second"


def test_threaded_actors_and_awaiting_refs(ray_2cpu):
    import threading

    @ray.remote(max_concurrency=4)
    class Threads:
        def __init__(self):
            self.barrier = threading.Barrier(4, timeout=10)

        def meet(self):
            self.barrier.wait()
            return threading.get_ident()

    t = Threads.remote()
    assert len(set(ray.get([t.meet.remote() for _ in range(4)]))) == 4, "four calls ran at once on four threads"

    @ray.remote
    def value():
        return 21

    @ray.remote
    class Awaiter:
        async def double(self, refs):
            return 2 * await refs[0]

    assert ray.get(Awaiter.remote().double.remote([value.remote()])) == 42


def test_methods_with_several_returns_and_handles_passed_around(ray_2cpu):
    @ray.remote
    class Multi:
        @ray.method(num_returns=2)
        def pair(self):
            return 1, 2

        def three(self):
            return 1, 2, 3

    m = Multi.remote()
    a, b = m.pair.remote()
    assert ray.get([a, b]) == [1, 2]
    assert ray.get(m.three.options(num_returns=3).remote()) == [1, 2, 3]

    c = Counter.remote()

    @ray.remote
    def bump(h):
        return ray.get(h.incr.remote(5))

    assert ray.get(bump.remote(c)) == 5
    import pickle

    again = pickle.loads(pickle.dumps(c))
    assert ray.get(again.incr.remote()) == 6
    with pytest.raises(TypeError, match="cannot be instantiated directly"):
        Counter()
    with pytest.raises(AttributeError):
        c.nope


def test_named_actors_namespaces_and_get_if_exists():
    ray.init(num_cpus=2, namespace="team")
    a = Counter.options(name="shared").remote()
    assert ray.get(ray.get_actor("shared").incr.remote()) == 1
    with pytest.raises(ValueError, match="The name shared .namespace=team. is already taken"):
        Counter.options(name="shared").remote()
    same = Counter.options(name="shared", get_if_exists=True).remote()
    assert ray.get(same.incr.remote()) == 2, "get_if_exists returned the live actor"
    Counter.options(name="shared", namespace="other").remote()
    assert ray.util.list_named_actors() == ["shared"]
    assert sorted(d["namespace"] for d in ray.util.list_named_actors(all_namespaces=True)) == ["other", "team"]
    with pytest.raises(ValueError, match="Failed to look up actor with name 'missing'"):
        ray.get_actor("missing")
    ray.kill(a)
    with pytest.raises(ValueError):
        ray.get_actor("shared")


def test_a_detached_actor_outlives_its_driver_and_is_found_by_name():
    start("--head", "--port", "0", "--node-ip-address", "127.0.0.1", "--num-cpus", "2")
    r = run_script(
        "import ray\nray.init(address='auto', namespace='svc')\n"
        "@ray.remote\nclass Keeper:\n    def __init__(self):\n        self.v = 0\n"
        "    def add(self, k):\n        self.v += k\n        return self.v\n"
        "k = Keeper.options(name='keeper', lifetime='detached').remote()\n"
        "print(ray.get(k.add.remote(5)))\n"
        "a = Keeper.options(name='attached').remote()\nray.get(a.add.remote(1))\n"
    )
    assert r.returncode == 0 and r.stdout.strip().endswith("5"), r.stderr
    ray.init(address="auto", namespace="svc")
    assert ray.get(ray.get_actor("keeper").add.remote(1)) == 6, "the detached actor kept its state"
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            ray.get_actor("attached")
        except ValueError:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the attached actor should die with its driver")


def test_restarts_up_to_max_restarts_then_raises():
    ray.init(num_cpus=2)

    @ray.remote(max_restarts=1)
    class Phoenix:
        def __init__(self):
            self.calls = 0

        def pid(self):
            self.calls += 1
            return os.getpid(), self.calls, ray.get_runtime_context().was_current_actor_reconstructed

    p = Phoenix.remote()
    pid1, calls, restarted = ray.get(p.pid.remote())
    assert (calls, restarted) == (1, False)
    ray.kill(p, no_restart=False)
    pid2, calls, restarted = ray.get(p.pid.remote(), timeout=30)
    assert pid2 != pid1 and calls == 1 and restarted, "__init__ ran again in a new process"
    os.kill(pid2, 9)
    with pytest.raises(ray.exceptions.RayActorError) as e:
        for _ in range(50):
            ray.get(p.pid.remote(), timeout=30)
            time.sleep(0.1)
    assert isinstance(e.value, ray.exceptions.ActorDiedError)
    assert "max_restarts=1" in str(e.value)


def test_max_task_retries_reruns_calls_that_were_running():
    ray.init(num_cpus=2)

    @ray.remote(max_restarts=4, max_task_retries=-1)
    class Flaky:
        def __init__(self):
            self.counter = 0

        def step(self):
            if self.counter == 10:
                os._exit(0)
            self.counter += 1
            return self.counter

    f = Flaky.remote()
    got = [ray.get(f.step.remote(), timeout=30) for _ in range(50)]
    assert got == list(range(1, 11)) * 5
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(f.step.remote(), timeout=30)


def test_kill_init_errors_and_exit_actor(ray_2cpu):
    c = Counter.remote()
    ray.get(c.incr.remote())
    ray.kill(c)
    with pytest.raises(ray.exceptions.ActorDiedError, match="killed by `ray.kill`"):
        ray.get(c.incr.remote())

    @ray.remote
    class Broken:
        def __init__(self):
            raise ValueError("bad config")

        def f(self):
            return 1

    with pytest.raises(ray.exceptions.RayActorError) as e:
        ray.get(Broken.remote().f.remote())
    assert e.value.actor_init_failed and "bad config" in str(e.value)

    @ray.remote
    class Quitter:
        def quit(self):
            ray.actor.exit_actor()

    q = Quitter.remote()
    with pytest.raises(ray.exceptions.RayActorError, match="exit_actor"):
        ray.get(q.quit.remote())
    with pytest.raises(ValueError, match="only supported for actors"):
        ray.kill("not an actor")


def test_actor_pool_queue_and_runtime_context(ray_2cpu):
    from ray.util import ActorPool
    from ray.util.queue import Empty, Full, Queue

    @ray.remote
    class Doubler:
        def double(self, v):
            return 2 * v

        def me(self):
            ctx = ray.get_runtime_context()
            return ctx.get_actor_id(), ctx.current_actor._actor_id.hex()

    actors = [Doubler.remote(), Doubler.remote()]
    pool = ActorPool(actors)
    assert list(pool.map(lambda a, v: a.double.remote(v), range(6))) == [0, 2, 4, 6, 8, 10]
    assert sorted(pool.map_unordered(lambda a, v: a.double.remote(v), range(4))) == [0, 2, 4, 6]
    mine, via_handle = ray.get(actors[0].me.remote())
    assert mine == via_handle == actors[0]._actor_id.hex()
    assert ray.get_runtime_context().get_actor_id() is None

    q = Queue(maxsize=2)
    q.put(1)
    q.put(2)
    with pytest.raises(Full):
        q.put(3, block=False)

    @ray.remote
    def drain(q):
        return [q.get(timeout=5), q.get(timeout=5)]

    assert ray.get(drain.remote(q)) == [1, 2]
    with pytest.raises(Empty):
        q.get(timeout=0.2)
    assert q.empty()


def test_state_cli_and_api_list_actors():
    start("--head", "--port", "0", "--node-ip-address", "127.0.0.1", "--num-cpus", "2")
    ray.init(address="auto")
    a = Counter.options(name="listed").remote()
    ray.get(a.incr.remote())
    b = Counter.remote()
    ray.get(b.incr.remote())
    ray.kill(b)
    from ray.util.state import list_actors, summarize_actors

    states = sorted(x.state for x in list_actors())
    assert states == ["ALIVE", "DEAD"]
    assert [x.name for x in list_actors(filters=[("state", "=", "ALIVE")])] == ["listed"]
    assert summarize_actors()["cluster"]["summary"]["Counter"]["state_counts"] == {"ALIVE": 1, "DEAD": 1}
    out = subprocess.run([RAY, "list", "actors", "--format", "json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert {r["actor_id"]: r["state"] for r in rows} == {a._actor_id.hex(): "ALIVE", b._actor_id.hex(): "DEAD"}
    table = subprocess.run([RAY, "list", "actors", "--filter", "state=ALIVE"], capture_output=True, text=True)
    assert table.returncode == 0, table.stderr
    assert "ACTOR_ID" in table.stdout and "Total: 1" in table.stdout and "listed" in table.stdout
    summary = subprocess.run([RAY, "summary", "actors"], capture_output=True, text=True)
    assert "total_actors: 2" in summary.stdout and "ALIVE: 1, DEAD: 1" in summary.stdout, summary.stdout
    nodes = subprocess.run([RAY, "list", "nodes", "--format", "json"], capture_output=True, text=True)
    assert [n["state"] for n in json.loads(nodes.stdout)] == ["ALIVE"]
    bad = subprocess.run([RAY, "list", "actors", "--filter", "colour=red"], capture_output=True, text=True)
    assert bad.returncode != 0 and "colour" in bad.stderr


GPU_CONFIG = """
cluster_name: gpu
max_workers: 4
idle_timeout_minutes: 0.05
provider:
  type: fake_multinode
available_node_types:
  ray.head.default:
    resources: {CPU: 0}
    node_config: {}
  cpu_worker:
    resources: {CPU: 4}
    node_config: {}
    max_workers: 2
  gpu_worker:
    resources: {CPU: 1, GPU: 1}
    node_config: {}
    max_workers: 2
head_node_type: ray.head.default
"""


def test_a_gpu_actor_launches_only_the_gpu_type_and_the_node_goes_after_kill(tmp_path):
    cfg = tmp_path / "cluster.yaml"
    cfg.write_text(GPU_CONFIG)
    start("--head", "--port", "0", "--node-ip-address", "127.0.0.1", "--num-cpus", "0", "--autoscaling-config", str(cfg))
    ray.init(address="auto")

    @ray.remote(num_gpus=1)
    class Trainer:
        def gpus(self):
            return ray.get_runtime_context().get_assigned_resources().get("GPU"), ray.get_runtime_context().get_node_id()

    t = Trainer.remote()
    gpus, node = ray.get(t.gpus.remote(), timeout=60)
    assert gpus == 1
    workers = [n for n in ray.nodes() if not n["IsHeadNode"]]
    assert [n["NodeTypeName"] for n in workers] == ["gpu_worker"], "only the type that fits the actor was launched"
    assert workers[0]["NodeID"] == node
    ray.kill(t)
    deadline = time.time() + 60
    while time.time() < deadline and any(n["Alive"] for n in ray.nodes() if not n["IsHeadNode"]):
        time.sleep(0.5)
    assert not any(n["Alive"] for n in ray.nodes() if not n["IsHeadNode"]), "the idle GPU node was terminated"


def test_pending_calls_bounded_with_wait_groups_and_awaiting_from_a_driver(ray_2cpu):
    import asyncio

    @ray.remote(concurrency_groups={"io": 2, "compute": 1})
    class Worker:
        @ray.method(concurrency_group="io")
        async def fetch(self):
            await asyncio.sleep(0.01)
            return "io"

        @ray.method(concurrency_group="compute")
        async def crunch(self):
            return "compute"

        async def heavy(self):
            await asyncio.sleep(0.001)
            return 1

    w = Worker.remote()
    assert ray.get([w.fetch.remote(), w.crunch.remote(), w.fetch.options(concurrency_group="compute").remote()]) == ["io", "compute", "io"]
    # The "limit pending tasks" pattern: at most 20 calls in flight.
    pending, done = [], 0
    for _ in range(200):
        if len(pending) > 20:
            ready, pending = ray.wait(pending, num_returns=1)
            done += sum(ray.get(ready))
        pending.append(w.heavy.remote())
    done += sum(ray.get(pending))
    assert done == 200

    async def from_driver():
        return await w.crunch.remote()

    assert asyncio.run(from_driver()) == "compute"
    assert ray.get(w.__ray_ready__.remote()) is True
    w.__ray_terminate__.remote()
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(w.crunch.remote(), timeout=30)


def test_an_actor_waits_for_its_arguments_in_dependencies_unready(ray_2cpu):
    from ray.util.state import get_actor as actor_state

    @ray.remote
    def slow():
        time.sleep(1.5)
        return 7

    c = Counter.remote(slow.remote())
    assert actor_state(c._actor_id.hex()).state == "DEPENDENCIES_UNREADY"
    assert ray.get(c.incr.remote()) == 8
    assert actor_state(c._actor_id.hex()).state == "ALIVE"


def test_actors_in_a_placement_group_run_on_their_bundles_node():
    from ray.util import placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    start("--head", "--port", "0", "--node-ip-address", "127.0.0.1", "--num-cpus", "1")
    start("--address", "auto", "--node-ip-address", "127.0.0.1", "--num-cpus", "1")
    ray.init(address="auto")
    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD")
    ray.get(pg.ready(), timeout=30)

    @ray.remote(num_cpus=1)
    class Where:
        def node(self):
            return ray.get_runtime_context().get_node_id()

    actors = [
        Where.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=i)).remote()
        for i in range(2)
    ]
    nodes = ray.get([a.node.remote() for a in actors], timeout=30)
    assert len(set(nodes)) == 2, "each actor took its own bundle, one per node"
    assert ray.available_resources().get("CPU", 0) == 0


def test_an_actor_made_by_a_task_outlives_the_task(ray_1cpu):
    @ray.remote
    def make():
        c = Counter.remote(5)
        ray.get(c.incr.remote())
        return c

    c = ray.get(make.remote())
    # The task's worker is idle now (and over the one-CPU soft limit): it is kept
    # while it owns the actor.
    time.sleep(3)
    assert ray.get(c.incr.remote(), timeout=30) == 7


def test_killing_an_actor_that_waits_for_resources_drops_its_demand(ray_1cpu):
    @ray.remote(num_gpus=1)
    class NeedsGpu:
        def f(self):
            return 1

    g = NeedsGpu.remote()
    from ray.util.state import get_actor as actor_state

    time.sleep(0.5)
    assert actor_state(g._actor_id.hex()).state == "PENDING_CREATION"
    ray.kill(g)
    assert actor_state(g._actor_id.hex()).state == "DEAD"
    with pytest.raises(ray.exceptions.ActorDiedError):
        ray.get(g.f.remote(), timeout=10)
    conn = ray._private.worker.global_connection()
    deadline = time.time() + 10
    while time.time() < deadline and any(d["shape"].get("GPU") for d in conn.core.node_stats()["demand"]):
        time.sleep(0.2)
    assert not any(d["shape"].get("GPU") for d in conn.core.node_stats()["demand"]), "its lease request was cancelled"


def test_ray_list_tasks_shows_each_tasks_latest_state():
    start("--head", "--port", "0", "--node-ip-address", "127.0.0.1", "--num-cpus", "2")
    ray.init(address="auto")

    @ray.remote
    def ok():
        return 1

    @ray.remote(max_retries=0)
    def bad():
        raise ValueError("no")

    ray.get([ok.remote() for _ in range(3)])
    with pytest.raises(ValueError):
        ray.get(bad.remote())
    c = Counter.remote()
    ray.get(c.incr.remote())
    from ray.util.state import list_tasks, summarize_tasks

    tasks = list_tasks()
    by_name = {}
    for t in tasks:
        by_name.setdefault(t.name.split("<locals>.")[-1], []).append((t.state, t.type))
    assert by_name["ok"] == [("FINISHED", "NORMAL_TASK")] * 3
    assert by_name["bad"] == [("FAILED", "NORMAL_TASK")]
    assert by_name["incr"] == [("FINISHED", "ACTOR_TASK")]
    assert by_name["Counter.__init__"] == [("FINISHED", "ACTOR_CREATION_TASK")]
    summary = {k.split("<locals>.")[-1]: v for k, v in summarize_tasks()["cluster"]["summary"].items()}
    assert summary["ok"]["state_counts"] == {"FINISHED": 3}
    out = subprocess.run([RAY, "list", "tasks", "--format", "json", "--filter", "state=FAILED"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [(r["name"].split("<locals>.")[-1], r["error_type"]) for r in rows] == [("bad", "TASK_EXECUTION_EXCEPTION")]
    summary = subprocess.run([RAY, "summary", "tasks"], capture_output=True, text=True)
    assert "total_tasks: 6" in summary.stdout and "FINISHED: 3" in summary.stdout, summary.stdout


def test_cancelling_actor_calls(ray_2cpu):
    import asyncio

    @ray.remote
    class Slow:
        async def nap(self):
            await asyncio.sleep(30)
            return "woke"

    s = Slow.remote()
    ray.get(s.__ray_ready__.remote())
    ref = s.nap.remote()
    time.sleep(0.5)
    ray.cancel(ref)
    with pytest.raises(ray.exceptions.RayTaskError) as e:
        ray.get(ref, timeout=10)
    assert isinstance(e.value, ray.exceptions.TaskCancelledError), "Ray's RayTaskError caused by TaskCancelledError"

    @ray.remote
    class Polite:
        def work(self):
            for _ in range(100):
                if ray.get_runtime_context().is_canceled():
                    return "stopped early"
                time.sleep(0.1)
            return "ran to the end"

    p = Polite.remote()
    ray.get(p.__ray_ready__.remote())
    running = p.work.remote()
    queued = p.work.remote()
    time.sleep(0.5)
    ray.cancel(queued)
    ray.cancel(running)
    for r in (running, queued):
        with pytest.raises(ray.exceptions.TaskCancelledError):
            ray.get(r, timeout=15)
