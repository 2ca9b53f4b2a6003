"""Defects Ray's own examples found: objects lost in nested tasks, exception
classes of the driver's script in retry_exceptions, printed output lost at exit,
and task errors that did not read like Ray's."""

import random

import pytest

import ray
from conftest import run_script


def test_nested_divide_and_conquer_keeps_every_object(ray_2cpu):
    """A quicksort that hands `ray.put` halves to tasks of its own, over many
    sizes and thresholds (the returned lists cross the store; the workers that
    made them become idle and are stopped while their callers still read)."""

    @ray.remote
    def qsort(col, threshold):
        if len(col) <= threshold:
            return sorted(col)
        pivot = col[len(col) // 2]
        lesser = [x for x in col if x < pivot]
        equal = [x for x in col if x == pivot]
        greater = [x for x in col if x > pivot]
        left = qsort.remote(ray.put(lesser), threshold)
        right = qsort.remote(ray.put(greater), threshold)
        return ray.get(left) + equal + ray.get(right)

    rng = random.Random(7)
    for n, threshold in [(50_000, 5_000), (200_000, 30_000), (400_000, 100_000), (1_000_000, 200_000)]:
        data = [rng.randint(0, 10**6) for _ in range(n)]
        assert ray.get(qsort.remote(data, threshold)) == sorted(data), n


def test_tree_of_tasks_returning_large_values(ray_2cpu):
    @ray.remote
    def leaf(i):
        return [i] * 50_000

    @ray.remote
    def node(depth, i):
        if depth == 0:
            return ray.get(leaf.remote(i))
        parts = ray.get([node.remote(depth - 1, i * 2), node.remote(depth - 1, i * 2 + 1)])
        return parts[0][:10] + parts[1][:10]

    for _ in range(3):
        assert len(ray.get(node.remote(3, 1))) == 20


def test_retry_exceptions_with_a_class_of_the_driver_script():
    r = run_script(
        "import ray\nray.init(num_cpus=1)\n"
        "class MyError(Exception):\n    pass\n"
        "@ray.remote(max_retries=2, retry_exceptions=[MyError])\n"
        "def f(path):\n"
        "    import os\n"
        "    n = int(open(path).read()) if os.path.exists(path) else 0\n"
        "    open(path, 'w').write(str(n + 1))\n"
        "    if n < 2:\n        raise MyError('attempt %d' % n)\n"
        "    return n\n"
        "import tempfile, os\np = os.path.join(tempfile.mkdtemp(), 'count')\n"
        "print('result', ray.get(f.remote(p)))\n"
        "@ray.remote(max_retries=1, retry_exceptions=[MyError])\n"
        "def g():\n    raise MyError('always')\n"
        "try:\n    ray.get(g.remote())\nexcept MyError as e:\n    print('caught', type(e).__name__)\n"
    )
    assert r.returncode == 0, r.stderr
    assert "result 2" in r.stdout
    assert "caught RayTaskError(MyError)" in r.stdout


def test_output_of_nested_tasks_reaches_the_driver_before_it_exits():
    code = (
        "import ray\nray.init(num_cpus=2)\n"
        "@ray.remote\ndef inner(i):\n    print('inner line', i)\n    return i\n"
        "@ray.remote\ndef outer():\n    print('outer line')\n    return sum(ray.get([inner.remote(i) for i in range(3)]))\n"
        "print('result', ray.get(outer.remote()))\n"
    )
    for _ in range(3):
        r = run_script(code)
        assert r.returncode == 0, r.stderr
        for line in ("outer line", "inner line 0", "inner line 1", "inner line 2", "result 3"):
            assert line in r.stdout, (line, r.stdout)


def test_a_task_error_reads_like_rays(ray_1cpu):
    @ray.remote
    def fails():
        return 1 / 0

    with pytest.raises(ZeroDivisionError) as info:
        ray.get(fails.remote())
    text = str(info.value)
    first, *rest = text.splitlines()
    assert first.startswith("\x1b[36mray::fails()\x1b[39m (pid=") and ", ip=" in first
    assert 'in fails' in text and "return 1 / 0" in text
    assert rest[-1] == "ZeroDivisionError: division by zero"
    assert "default_worker" not in text and "_private" not in text and "Traceback" not in text


def test_an_argument_that_failed_is_named_as_such(ray_1cpu):
    @ray.remote
    def fails():
        raise KeyError("k")

    @ray.remote
    def uses(x):
        return x

    with pytest.raises(KeyError) as info:
        ray.get(uses.remote(fails.remote()))
    err = info.value
    assert isinstance(err, ray.exceptions.RayTaskError)
    lines = str(err).splitlines()
    assert lines[0].startswith("\x1b[36mray::uses()\x1b[39m")
    assert lines[1] == "  At least one of the input arguments for this task could not be computed:"
    assert lines[2].startswith("ray.exceptions.RayTaskError: \x1b[36mray::fails()\x1b[39m")
    assert lines[-1] == "KeyError: 'k'"


def test_an_actor_error_names_the_actor(ray_1cpu):
    @ray.remote
    class A:
        def __repr__(self):
            return "A(7)"

        def boom(self):
            raise RuntimeError("actor failed")

    a = A.remote()
    with pytest.raises(RuntimeError) as info:
        ray.get(a.boom.remote())
    first = str(info.value).splitlines()[0]
    assert first.startswith("\x1b[36mray::A.boom()\x1b[39m (pid=")
    assert "actor_id=" in first and first.endswith("repr=A(7))")


def test_a_cancel_right_after_submission_is_never_lost(ray_2cpu):
    """The task may be on its way to a warm worker, or starting there, when the
    cancel arrives: it must still be cancelled (Ray's tasks.py example)."""

    @ray.remote
    def quick():
        return 1

    @ray.remote
    def forever():
        import time

        time.sleep(10**6)

    for _ in range(15):
        ray.get([quick.remote(), quick.remote()])
        ref = forever.remote()
        ray.cancel(ref)
        ready, _ = ray.wait([ref], timeout=10)
        assert ready, "the cancel was lost"
        with pytest.raises(ray.exceptions.TaskCancelledError):
            ray.get(ref)
