"""Generator tasks: `ObjectRefGenerator` (a streaming generator: refs to the
values a task yields, taken as they arrive) and `DynamicObjectRefGenerator`
(`num_returns="dynamic"`: every yielded value's ref, inside the task's one
return value). The worker side, which runs the generator and sends each item
as it is yielded, is `run_generator`."""

import asyncio
import inspect
import time

from ray import _raylet
from ray import exceptions as _exc
from ray._private import serialization

# TaskSpec.generator values.
FIXED = 0
DYNAMIC = 1
STREAMING = 2

# An ObjectId is a TaskId and a 4-byte return index.
_INDEX_BYTES = 4


def warn_dynamic(num_returns, stacklevel):
    """Ray deprecates num_returns="dynamic" for "streaming", and says so."""
    if num_returns == "dynamic":
        import warnings

        from ray.util.annotations import RayDeprecationWarning

        warnings.warn(
            "num_returns='dynamic' is deprecated and will be removed in a future Ray release. "
            "Use num_returns='streaming' instead.",
            RayDeprecationWarning,
            stacklevel=stacklevel + 1,
        )


def return_kind(fn, num_returns):
    """(core worker generator kind, number of returns) for a task's num_returns
    option: generator functions stream by default, as in Ray."""
    if num_returns == "dynamic":
        return DYNAMIC, 1
    if num_returns == "streaming":
        return STREAMING, 1
    if num_returns is None:
        if fn is not None and (inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)):
            return STREAMING, 1
        return FIXED, 1
    return FIXED, num_returns


def check_num_returns(value, what="num_returns"):
    if value in ("dynamic", "streaming"):
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(
            "The option `{}` must be a non-negative integer, 'dynamic' or 'streaming', got {!r}.".format(what, value)
        )


class ObjectRefGenerator:
    """The refs of the values a streaming generator task yields, in order, as
    they are made. `next(gen)` waits for the next one; `StopIteration` follows
    the last. An error the generator raised is the ref after the last good one
    (`ray.get` on it raises); so is a failure of the task itself."""

    def __init__(self, completion_ref, core):
        self._completion = completion_ref
        self._core = core
        self._task_id = completion_ref.binary()[:-_INDEX_BYTES]
        self._finished = False

    # -- sync iteration
    def __iter__(self):
        return self

    def __next__(self):
        return self._next(None)

    def _next(self, timeout):
        if self._finished:
            raise StopIteration
        item = self._core.generator_next(self._task_id, timeout)
        if item is False:
            raise _exc.GetTimeoutError("No item of the generator was ready within {} s.".format(timeout))
        if item is None:
            self._finished = True
            # The task failed as a whole (e.g. its worker died): the caller sees
            # that as the last item.
            if self._completion_failed():
                return self._completion
            raise StopIteration
        return item

    def _completion_failed(self):
        try:
            kind = self._core.get([self._completion], None)[0][0]
        except Exception:  # noqa: BLE001 - e.g. ObjectLostError: a failure too
            return True
        return serialization.is_error_kind(kind)

    # -- async iteration
    def __aiter__(self):
        return self

    async def __anext__(self):
        while True:
            try:
                return self._next(0)
            except StopIteration:
                raise StopAsyncIteration from None
            except _exc.GetTimeoutError:
                pass
            # Not there yet: wait off the event loop for a while, then look again.
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, self._wait_ready, 0.5)

    def _wait_ready(self, seconds):
        end = time.monotonic() + seconds
        while not self._core.generator_ready(self._task_id) and time.monotonic() < end:
            time.sleep(0.001)

    # -- Ray's methods
    def completed(self):
        """A ref that is ready once the task ended (ray.get raises its failure)."""
        return self._completion

    def next_ready(self):
        """True when `next()` would not wait."""
        return self._finished or self._core.generator_ready(self._task_id)

    def is_finished(self):
        """True once the last item was taken."""
        return self._finished

    def _generator_ref(self):
        return self._completion

    def __reduce__(self):
        raise TypeError("An ObjectRefGenerator cannot be passed to other tasks or pickled; pass the ObjectRefs it yields.")

    def __del__(self):
        try:
            self._core.generator_drop(self._task_id)
        except Exception:  # noqa: BLE001 - at interpreter exit
            pass


class DynamicObjectRefGenerator:
    """What `ray.get` returns for a `num_returns="dynamic"` task: the refs of
    every value the task yielded."""

    def __init__(self, refs):
        self._refs = list(refs)

    def __iter__(self):
        return iter(self._refs)

    def __len__(self):
        return len(self._refs)

    def __reduce__(self):
        return (DynamicObjectRefGenerator, (self._refs,))


# Shown as Ray shows it: <ray.ObjectRefGenerator object at 0x...>.
ObjectRefGenerator.__module__ = "ray"


def wait(core, items, num_returns, timeout):
    """`ray.wait` over refs and streaming generators (a generator is ready when
    its next item, or its end, is there)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        refs = [x for x in items if type(x) is _raylet.ObjectRef]
        flags = dict(zip(refs, core.wait(refs, len(refs), 0))) if refs else {}
        ready = []
        for x in items:
            ok = x.next_ready() if isinstance(x, ObjectRefGenerator) else flags.get(x, False)
            if ok:
                ready.append(x)
        if len(ready) >= num_returns or (deadline is not None and time.monotonic() >= deadline):
            ready = ready[:num_returns]
            chosen = set(id(x) for x in ready)
            return ready, [x for x in items if id(x) not in chosen]
        time.sleep(0.001)


# -- the worker's side


def _send(core, task, index, value):
    data, buffers, refs = serialization.serialize(value)
    return core.generator_item(task, index, (serialization.KIND_VALUE, data, buffers, refs))


def _send_error(core, task, index, err):
    data, buffers, refs = serialization.serialize_error(err)
    return core.generator_item(task, index, (serialization.KIND_ERROR, data, buffers, refs))


def check_generator(value):
    """A generator task must return a generator."""
    if inspect.isgenerator(value) or inspect.isasyncgen(value) or hasattr(value, "__next__"):
        return
    raise TypeError(
        "A task with num_returns='streaming' or 'dynamic' must be a generator function (use `yield`), "
        "but it returned {!r}.".format(type(value).__name__)
    )


def run_generator(core, task, gen, make_error, owner_address):
    """Runs a (sync) generator a task returned, sending each value as it is
    yielded. Returns the task's one return value: None, or for a dynamic
    generator a DynamicObjectRefGenerator of every item. An exception the
    generator raises becomes the last item (`make_error(exc)` is its error)."""
    index = 0
    ids = []
    try:
        for value in gen:
            ids.append(_send(core, task, index, value))
            index += 1
    except Exception as e:  # noqa: BLE001 - the error is the caller's next item
        ids.append(_send_error(core, task, index, make_error(e)))
    return _result(task, ids, owner_address)


async def run_async_generator(core, task, agen, make_error, owner_address):
    """`run_generator` for an async generator (async actors)."""
    index = 0
    ids = []
    try:
        async for value in agen:
            ids.append(_send(core, task, index, value))
            index += 1
    except asyncio.CancelledError:
        raise
    except Exception as e:  # noqa: BLE001
        ids.append(_send_error(core, task, index, make_error(e)))
    return _result(task, ids, owner_address)


def _result(task, ids, owner_address):
    if task.generator != DYNAMIC:
        return None
    return DynamicObjectRefGenerator([_raylet.ObjectRef._from_pickle(bytes(i), owner_address) for i in ids])
