"""Remote functions: options, arguments, returns, nesting, workers."""

import os
import time

import pytest

import ray


def test_options_and_their_validation(ray_2cpu):
    @ray.remote(num_cpus=0.5)
    def f(x, y=1):
        return x + y

    assert ray.get(f.remote(1)) == 2
    assert ray.get(f.remote(1, y=5)) == 6
    assert ray.get(f.options(num_cpus=1, name="renamed").remote(2, y=2)) == 4
    with pytest.raises(ValueError, match="Invalid option keyword"):
        f.options(num_cpuz=1)
    with pytest.raises(ValueError, match="num_cpus"):
        f.options(num_cpus=-1)
    with pytest.raises(ValueError, match="num_cpus' and 'num_gpus"):
        f.options(resources={"CPU": 1})
    with pytest.raises(TypeError, match="cannot be called directly"):
        f(1)


def test_object_ref_arguments_are_resolved_and_nested_refs_passed_through(ray_2cpu):
    @ray.remote
    def add(a, b):
        return a + b

    @ray.remote
    def kinds(x, lst, dct):
        return type(x).__name__, [type(v).__name__ for v in lst], {k: type(v).__name__ for k, v in dct.items()}

    a = ray.put(10)
    b = add.remote(a, 5)
    assert ray.get(add.remote(b, a)) == 25
    inner = ray.put("payload")
    x, lst, dct = ray.get(kinds.remote(inner, [inner], {"k": inner}))
    assert x == "str"
    assert lst == ["ObjectRef"] and dct == {"k": "ObjectRef"}

    @ray.remote
    def deref(lst):
        return ray.get(lst[0])

    assert ray.get(deref.remote([inner])) == "payload"


def test_large_arguments_go_through_the_object_store(ray_2cpu):
    import numpy as np

    @ray.remote
    def total(a):
        return float(a.sum())

    a = np.ones(1_000_000)
    assert ray.get(total.remote(a)) == 1_000_000.0


def test_multiple_returns_and_generators(ray_2cpu):
    @ray.remote(num_returns=3)
    def three():
        return 1, 2, 3

    @ray.remote(num_returns=2)
    def gen():
        yield "a"
        yield "b"

    @ray.remote(num_returns=2)
    def wrong():
        return 1, 2, 3

    refs = three.remote()
    assert isinstance(refs, list) and len(refs) == 3
    assert ray.get(refs) == [1, 2, 3]
    assert ray.get(gen.remote()) == ["a", "b"]
    with pytest.raises(ValueError, match="num_returns=2"):
        ray.get(wrong.remote()[0])


def test_nested_tasks_do_not_deadlock_on_one_cpu(ray_1cpu):
    @ray.remote
    def leaf(x):
        return x + 1

    @ray.remote
    def middle(x):
        return ray.get(leaf.remote(x)) * 2

    @ray.remote
    def top(x):
        return sum(ray.get([middle.remote(x), middle.remote(x + 1)]))

    assert ray.get(top.remote(1), timeout=60) == (2 * 2) + (3 * 2)


def test_workers_are_reused_and_capped_by_cpus(ray_2cpu):
    @ray.remote
    def pid():
        time.sleep(0.05)
        return os.getpid()

    pids = ray.get([pid.remote() for _ in range(20)])
    assert 1 <= len(set(pids)) <= 2, pids
    assert os.getpid() not in pids


def test_idle_workers_are_stopped(monkeypatch):
    monkeypatch.setenv("RAY_worker_max_idle_ms", "500")
    ray.init(num_cpus=2)
    core = ray._private.worker.global_connection().core

    @ray.remote
    def f():
        return 1

    ray.get([f.remote() for _ in range(4)])
    assert core.node_stats()["num_workers"] >= 1
    deadline = time.time() + 15
    while time.time() < deadline and core.node_stats()["num_workers"] > 0:
        time.sleep(0.2)
    assert core.node_stats()["num_workers"] == 0
    # And they come back on demand.
    assert ray.get(f.remote()) == 1


def test_worker_output_reaches_the_driver_with_a_prefix(tmp_path):
    from conftest import run_script

    r = run_script(
        "import ray\nray.init(num_cpus=1)\n"
        "@ray.remote\ndef chatty(n):\n    print('line', n)\n    import sys; print('to stderr', file=sys.stderr)\n    return n\n"
        "ray.get(chatty.remote(7))\nray.shutdown()\n"
    )
    assert r.returncode == 0, r.stderr
    assert "(chatty pid=" in r.stdout and "\x1b[0m line 7" in r.stdout, r.stdout
    assert "(chatty pid=" in r.stderr and "to stderr" in r.stderr, r.stderr


def test_ray_wait(ray_2cpu):
    @ray.remote
    def sleep(t):
        time.sleep(t)
        return t

    fast, slow = sleep.remote(0), sleep.remote(3)
    ready, not_ready = ray.wait([slow, fast], num_returns=1, timeout=2)
    assert ready == [fast] and not_ready == [slow]
    ready, not_ready = ray.wait([slow], num_returns=1, timeout=0.1)
    assert ready == [] and not_ready == [slow]
    with pytest.raises(ValueError, match="unique"):
        ray.wait([fast, fast])
    with pytest.raises(TypeError):
        ray.wait(fast)


def test_cancel_a_queued_and_a_running_task(ray_1cpu):
    @ray.remote
    def forever():
        time.sleep(100)

    running = forever.remote()
    queued = forever.remote()
    time.sleep(0.5)
    ray.cancel(queued)
    with pytest.raises(ray.exceptions.TaskCancelledError):
        ray.get(queued, timeout=10)
    ray.cancel(running)
    with pytest.raises(ray.exceptions.TaskCancelledError):
        ray.get(running, timeout=10)

    @ray.remote
    def ok():
        return "still works"

    assert ray.get(ok.remote(), timeout=10) == "still works"


def test_fast_tasks_never_lose_their_results(ray_2cpu):
    # A result can arrive before the caller's ObjectRef exists; it must be kept.
    @ray.remote
    def noop():
        return 1

    assert sum(ray.get(noop.remote()) for _ in range(3000)) == 3000


def test_refs_made_inside_a_task_can_be_returned(ray_1cpu):
    @ray.remote
    def make():
        return [ray.put("made in a task"), ray.put(list(range(3)))]

    refs = ray.get(make.remote())
    assert ray.get(refs) == ["made in a task", [0, 1, 2]]
