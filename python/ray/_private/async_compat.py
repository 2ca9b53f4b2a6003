"""Refs in asyncio code: `await ref`, `ref.as_future()`, `ref.future()`. Each
waits for the value on a thread of its own pool, so the event loop keeps
running other coroutines meanwhile."""

import asyncio
import concurrent.futures
import threading

_lock = threading.Lock()
_pool = None


def _executor():
    global _pool
    with _lock:
        if _pool is None:
            # Async actors run up to 1000 calls at once, each may await a ref.
            _pool = concurrent.futures.ThreadPoolExecutor(max_workers=256, thread_name_prefix="ray-await")
        return _pool


def _get(ref):
    import ray

    return ray.get(ref)


def concurrent_future(ref):
    return _executor().submit(_get, ref)


def as_future(ref):
    return asyncio.wrap_future(concurrent_future(ref))


def await_ref(ref):
    return as_future(ref).__await__()
