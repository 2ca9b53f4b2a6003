"""Objects: small ones inline, large ones in shared memory read without a copy,
freed when no reference remains; a full store says so."""

import gc
import time

import numpy as np
import pytest

import ray


def core():
    return ray._private.worker.global_connection().core


def test_small_objects_round_trip(ray_1cpu):
    for v in [1, "text", b"\x00" * 1024, {"a": [1, 2]}, None, (1.5, "x")]:
        assert ray.get(ray.put(v)) == v
    assert core().node_stats()["num_objects"] == 0, "small objects stay out of the shared store"


def test_100mb_numpy_round_trip_without_a_copy(ray_1cpu):
    a = np.random.default_rng(0).random(100 * 1024 * 1024 // 8)
    ref = ray.put(a)
    b = ray.get(ref)
    assert np.array_equal(a, b)
    base, length = core().store_mapping()
    addr = b.__array_interface__["data"][0]
    assert base <= addr < base + length, "the array must live in the shared mapping"
    assert not b.flags.writeable
    # A task's view of the same object is also in place.

    @ray.remote
    def where(x):
        c = ray._private.worker.global_connection().core
        base, length = c.store_mapping()
        addr = x.__array_interface__["data"][0]
        return base <= addr < base + length, float(x[-1])

    in_place, last = ray.get(where.remote(ref))
    assert in_place and last == a[-1]


def test_large_task_returns_live_in_the_store(ray_1cpu):
    @ray.remote
    def make():
        return np.full(10 * 1024 * 1024 // 8, 3.0)

    out = ray.get(make.remote())
    base, length = core().store_mapping()
    assert base <= out.__array_interface__["data"][0] < base + length
    assert out.sum() == 3.0 * out.size


def test_the_store_frees_objects_once_refs_are_dropped(ray_1cpu):
    refs = [ray.put(np.zeros(2 * 1024 * 1024)) for _ in range(5)]
    stats = core().node_stats()
    assert stats["num_objects"] == 5
    assert stats["object_store_used_bytes"] >= 5 * 16 * 1024 * 1024
    del refs
    gc.collect()
    deadline = time.time() + 5
    while time.time() < deadline and core().node_stats()["num_objects"] > 0:
        time.sleep(0.05)
    assert core().node_stats()["num_objects"] == 0
    assert core().node_stats()["object_store_used_bytes"] == 0


def test_an_object_stays_while_a_reader_holds_its_array(ray_1cpu):
    ref = ray.put(np.arange(1_000_000))
    arr = ray.get(ref)
    del ref
    gc.collect()
    time.sleep(0.3)
    assert core().node_stats()["num_objects"] == 1, "pinned by the live array"
    assert arr[-1] == 999_999
    del arr
    gc.collect()
    deadline = time.time() + 5
    while time.time() < deadline and core().node_stats()["num_objects"] > 0:
        time.sleep(0.05)
    assert core().node_stats()["num_objects"] == 0


def test_a_full_store_raises_object_store_full_error():
    ray.init(num_cpus=1, object_store_memory=200 * 1024 * 1024)
    # Values read back stay pinned (numpy views into the store), so nothing can
    # be spilled to make room.
    keep = [ray.get(ray.put(np.zeros(60 * 1024 * 1024 // 8))) for _ in range(3)]
    with pytest.raises(ray.exceptions.ObjectStoreFullError, match="object_store_memory"):
        ray.put(np.zeros(60 * 1024 * 1024 // 8))
    with pytest.raises(ray.exceptions.ObjectStoreFullError):
        ray.put(np.zeros(300 * 1024 * 1024 // 8))
    del keep
    gc.collect()
    time.sleep(0.3)
    assert ray.get(ray.put(np.ones(10))).sum() == 10


def test_refs_inside_stored_values_stay_alive(ray_1cpu):
    outer = ray.put([ray.put("inner value")])
    gc.collect()
    inner = ray.get(outer)[0]
    assert ray.get(inner) == "inner value"

    @ray.remote
    def echo(r):
        return r

    kept = ray.put("argument")
    back = ray.get(echo.remote([kept]))[0]
    del kept
    gc.collect()
    assert ray.get(back) == "argument"

    big = {"data": np.zeros(200_000), "ref": ray.put("inside a big argument")}

    @ray.remote
    def deref(d):
        return ray.get(d["ref"])

    assert ray.get(deref.remote(big)) == "inside a big argument"
