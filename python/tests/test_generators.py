"""Generator tasks: streaming (ObjectRefGenerator) and num_returns="dynamic",
from tasks and actors, with ray.wait, errors mid-stream and async iteration."""

import asyncio
import time

import numpy as np
import pytest

import ray


def test_a_generator_function_streams_its_values_by_default(ray_2cpu):
    @ray.remote
    def gen(n):
        for i in range(n):
            yield i * 10

    g = gen.remote(5)
    assert isinstance(g, ray.ObjectRefGenerator)
    refs = list(g)
    assert all(isinstance(r, ray.ObjectRef) for r in refs)
    assert ray.get(refs) == [0, 10, 20, 30, 40]
    with pytest.raises(StopIteration):
        next(g)
    assert g.is_finished()
    assert ray.get(g.completed()) is None


def test_items_arrive_while_the_task_still_runs(ray_2cpu):
    @ray.remote(num_returns="streaming")
    def slow(n):
        for i in range(n):
            yield i
            time.sleep(1.0)

    g = slow.remote(3)
    t0 = time.time()
    first = next(g)
    assert ray.get(first) == 0
    # The first value came long before the task (3 s) ended.
    assert time.time() - t0 < 2.0
    assert ray.get(list(g)) == [1, 2]


def test_large_items_go_through_the_store(ray_2cpu):
    @ray.remote
    def arrays(n):
        for i in range(n):
            yield np.full(200_000, i, dtype=np.int64)

    got = [ray.get(r) for r in arrays.remote(4)]
    assert [int(a[0]) for a in got] == [0, 1, 2, 3]
    assert all(a.shape == (200_000,) for a in got)


def test_an_error_mid_stream_is_the_item_after_the_last_good_one(ray_2cpu):
    @ray.remote
    def flaky():
        yield 1
        yield 2
        raise ValueError("third item fails")

    g = flaky.remote()
    assert ray.get(next(g)) == 1
    assert ray.get(next(g)) == 2
    bad = next(g)
    with pytest.raises(ValueError, match="third item fails"):
        ray.get(bad)
    with pytest.raises(StopIteration):
        next(g)


def test_a_worker_that_dies_ends_the_stream_with_its_error(ray_2cpu):
    @ray.remote(max_retries=0)
    def dies():
        yield 1
        import os

        # The first item is on its way before the worker dies.
        time.sleep(0.5)
        os._exit(1)

    g = dies.remote()
    assert ray.get(next(g)) == 1
    last = next(g)
    with pytest.raises(ray.exceptions.WorkerCrashedError):
        ray.get(last)
    with pytest.raises(StopIteration):
        next(g)


def test_ray_wait_on_generators(ray_2cpu):
    @ray.remote
    def slow(delay):
        time.sleep(delay)
        yield delay

    fast, late = slow.remote(0.1), slow.remote(5)
    ready, not_ready = ray.wait([late, fast], num_returns=1, timeout=4)
    assert ready == [fast] and not_ready == [late]
    assert ray.get(next(fast)) == 0.1
    ready, _ = ray.wait([late], timeout=0.1)
    assert ready == []


def test_dynamic_returns_give_a_generator_of_refs(ray_2cpu):
    @ray.remote(num_returns="dynamic")
    def split(n):
        for i in range(n):
            yield i * i

    ref = split.remote(4)
    assert isinstance(ref, ray.ObjectRef)
    dyn = ray.get(ref)
    assert isinstance(dyn, ray.DynamicObjectRefGenerator)
    refs = list(dyn)
    assert ray.get(refs) == [0, 1, 4, 9]
    # The items live as long as the refs do, after the task ended.
    del ref, dyn
    assert ray.get(refs) == [0, 1, 4, 9]

    @ray.remote
    def total(dyn_ref):
        return sum(ray.get(list(dyn_ref)))

    assert ray.get(total.remote(split.remote(5))) == 30


def test_actor_generator_methods_sync_and_async(ray_2cpu):
    @ray.remote
    class Source:
        def items(self, n):
            for i in range(n):
                yield "s%d" % i

    @ray.remote
    class AsyncSource:
        async def items(self, n):
            for i in range(n):
                await asyncio.sleep(0.01)
                yield "a%d" % i

    s, a = Source.remote(), AsyncSource.remote()
    assert [ray.get(r) for r in s.items.remote(3)] == ["s0", "s1", "s2"]
    assert [ray.get(r) for r in a.items.remote(3)] == ["a0", "a1", "a2"]


def test_async_iteration_in_a_driver(ray_2cpu):
    @ray.remote
    def gen(n):
        for i in range(n):
            yield i

    async def consume():
        out = []
        async for ref in gen.remote(4):
            out.append(await ref)
        return out

    assert asyncio.run(consume()) == [0, 1, 2, 3]


def test_a_dropped_generator_frees_the_items_never_taken(ray_2cpu):
    @ray.remote
    def gen(n):
        for i in range(n):
            yield np.zeros(100_000)

    conn = ray._private.worker.global_connection()
    g = gen.remote(5)
    first = next(g)
    ray.get(g.completed())
    del g
    owned, _ = conn.core.object_counts()
    # The completion ref and the one item still held; the four others are gone.
    assert owned <= 2, owned
    assert ray.get(first).shape == (100_000,)


def test_num_returns_is_checked(ray_2cpu):
    with pytest.raises(ValueError, match="'dynamic' or 'streaming'"):

        @ray.remote(num_returns="sometimes")
        def f():
            yield 1

    @ray.remote(num_returns="streaming")
    def not_a_generator():
        return 5

    g = not_a_generator.remote()
    with pytest.raises(TypeError, match="must be a generator function"):
        ray.get(next(g))


def test_asyncio_gather_wait_and_futures_over_refs_in_a_driver(ray_2cpu):
    @ray.remote
    def double(x):
        return x * 2

    async def main():
        gathered = await asyncio.gather(*[double.remote(i) for i in range(5)])
        done, _ = await asyncio.wait([asyncio.ensure_future(double.remote(9).as_future())], timeout=10)
        return gathered, [d.result() for d in done]

    assert asyncio.run(main()) == ([0, 2, 4, 6, 8], [18])
    assert double.remote(3).future().result(timeout=10) == 6
