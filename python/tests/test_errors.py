"""Errors as in Ray: remote tracebacks, timeouts, crashed workers, retries."""

import os
import signal
import time

import pytest

import ray


class CustomError(Exception):
    pass


def test_task_errors_carry_the_remote_traceback_and_the_original_type(ray_1cpu):
    @ray.remote
    def fails(x):
        raise CustomError("broken input %d" % x)

    with pytest.raises(CustomError) as info:
        ray.get(fails.remote(7))
    e = info.value
    assert isinstance(e, ray.exceptions.RayTaskError)
    assert "broken input 7" in str(e)
    # Ray's layout: the frames of the task without a "Traceback" header.
    assert 'in fails' in str(e) and "Traceback (most recent call last)" not in str(e)
    assert "fails" in str(e) and "pid=" in str(e)
    assert isinstance(e.cause, CustomError)


def test_errors_propagate_through_dependent_tasks(ray_1cpu):
    @ray.remote
    def fails():
        raise ZeroDivisionError("root cause")

    @ray.remote
    def consumer(x):
        return x

    with pytest.raises(ZeroDivisionError, match="root cause"):
        ray.get(consumer.remote(fails.remote()))


def test_get_timeout(ray_1cpu):
    @ray.remote
    def slow():
        time.sleep(5)

    with pytest.raises(ray.exceptions.GetTimeoutError):
        ray.get(slow.remote(), timeout=0.2)
    with pytest.raises(TimeoutError):
        ray.get(slow.remote(), timeout=0.1)


def test_a_worker_killed_mid_task_is_retried(ray_1cpu, tmp_path):
    marker = str(tmp_path / "died_once")

    @ray.remote(max_retries=2)
    def dies_once(path):
        if not os.path.exists(path):
            open(path, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return "done after retry"

    assert ray.get(dies_once.remote(marker), timeout=60) == "done after retry"


def test_a_worker_killed_from_outside_is_retried(ray_1cpu, tmp_path):
    pidfile = tmp_path / "pid"

    @ray.remote(max_retries=1)
    def long_task(path):
        if not os.path.exists(path):
            with open(path, "w") as f:
                f.write(str(os.getpid()))
            time.sleep(30)
        return os.getpid()

    ref = long_task.remote(str(pidfile))
    deadline = time.time() + 20
    while not pidfile.exists() and time.time() < deadline:
        time.sleep(0.05)
    first = int(pidfile.read_text())
    os.kill(first, signal.SIGKILL)
    assert ray.get(ref, timeout=60) != first


def test_worker_crashed_error_after_max_retries(ray_1cpu):
    @ray.remote(max_retries=1)
    def always_dies():
        os.kill(os.getpid(), signal.SIGKILL)

    with pytest.raises(ray.exceptions.WorkerCrashedError):
        ray.get(always_dies.remote(), timeout=60)


def test_retry_exceptions(ray_1cpu, tmp_path):
    counter = tmp_path / "count"
    counter.write_text("0")

    @ray.remote(max_retries=3, retry_exceptions=True)
    def flaky(path):
        n = int(open(path).read()) + 1
        open(path, "w").write(str(n))
        if n < 3:
            raise RuntimeError("not yet")
        return n

    assert ray.get(flaky.remote(str(counter)), timeout=60) == 3

    @ray.remote(max_retries=3, retry_exceptions=[KeyError])
    def wrong_kind():
        raise ValueError("not retried")

    with pytest.raises(ValueError):
        ray.get(wrong_kind.remote(), timeout=60)


def test_bad_api_use_is_reported_clearly(ray_1cpu):
    with pytest.raises(TypeError, match="not an ray.ObjectRef"):
        ray.get([1, 2])
    with pytest.raises(TypeError, match="put"):
        ray.put(ray.put(1))
    @ray.remote
    class A:
        pass

    with pytest.raises(TypeError, match=r"Instead of 'A\(\)', use 'A.remote\(\)'"):
        A()
    with pytest.raises(ValueError, match="Invalid option keyword"):
        A.options(colour="red")
    with pytest.raises(ValueError, match="max_concurrency must be >= 1"):
        A.options(max_concurrency=0)


def test_an_unpicklable_return_value_is_an_error_not_a_crash(ray_1cpu):
    import threading

    @ray.remote(max_retries=0)
    def returns_a_lock():
        return threading.Lock()

    with pytest.raises(ray.exceptions.RayTaskError) as info:
        ray.get(returns_a_lock.remote())
    assert not isinstance(info.value, ray.exceptions.WorkerCrashedError)
    assert "lock" in str(info.value).lower()


def test_core_errors_arrive_as_rays_exception_classes(ray_1cpu):
    """The core raises Ray's exception class for each kind of failure (chosen by
    the error's variant, not parsed from its text)."""
    from ray import _raylet
    from ray._private import worker

    me = worker.global_connection().core.address
    # Owned by this driver once, and gone: ObjectLostError, not the OwnerDiedError subclass.
    freed = _raylet.ObjectRef._from_pickle(b"\x01" * 20, me)
    with pytest.raises(ray.exceptions.ObjectLostError) as info:
        ray.get(freed)
    assert not isinstance(info.value, ray.exceptions.OwnerDiedError)
    assert "was freed" in str(info.value) and not str(info.value).startswith("ObjectLostError")
    # An owner nobody can reach: OwnerDiedError.
    orphan = _raylet.ObjectRef._from_pickle(b"\x02" * 20, "127.0.0.1:1")
    with pytest.raises(ray.exceptions.OwnerDiedError, match="127.0.0.1:1"):
        ray.get(orphan, timeout=10)
    # A malformed id is refused where it enters, naming what was expected.
    with pytest.raises(ValueError, match="expected 20 bytes, got 3"):
        _raylet.ObjectRef._from_pickle(b"abc", me)


def test_an_infinite_timeout_waits_like_none(ray_1cpu):
    @ray.remote
    def f():
        return 5

    ref = f.remote()
    assert ray.get(ref, timeout=float("inf")) == 5
    assert ray.wait([ref], timeout=float("inf")) == ([ref], [])
