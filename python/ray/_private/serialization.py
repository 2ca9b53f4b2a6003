"""Turning Python values into bytes and back: pickle protocol 5 with out-of-band
buffers (so numpy arrays travel without copies and are read in place from the
shared-memory store), cloudpickle for what plain pickle cannot handle, and
ObjectRefs recorded as they are pickled (the owner keeps them alive for the task)."""

import collections
import io
import json
import pickle
import threading
import types

import cloudpickle

from ray import _raylet
from ray import exceptions as _exc

KIND_VALUE = 0
KIND_ERROR = 1
KIND_SYSTEM_ERROR = 3

_local = threading.local()


def _reduce_ref(ref):
    refs = getattr(_local, "refs", None)
    if refs is not None:
        refs.append((ref.binary(), ref.owner_address()))
    return (_raylet.ObjectRef._from_pickle, (ref.binary(), ref.owner_address()))


class _ByValue(pickle.PicklingError):
    """Raised to hand a value to cloudpickle."""


class _FastPickler(pickle.Pickler):
    dispatch_table = {_raylet.ObjectRef: _reduce_ref}

    def reducer_override(self, obj):
        # Classes and functions of the driver's script exist only there: plain
        # pickle would name them by reference and other processes could not find
        # them (e.g. an exception class given to retry_exceptions). cloudpickle
        # sends them by value, as Ray does. (Not called for plain ints, strs,
        # lists, dicts..., so the fast path stays fast.)
        if isinstance(obj, type) or callable(obj) and hasattr(obj, "__code__"):
            if getattr(obj, "__module__", None) == "__main__":
                raise _ByValue(obj)
        return NotImplemented


def _code_reduce_keeping_file(code):
    # cloudpickle (3.x) names every shipped function's file "<dynamic-code>",
    # so a task's traceback could not show its source; keep the real name (a
    # worker on the same machine then reads the line, as Ray's does).
    func, args = _CODE_REDUCE(code)
    args = tuple(code.co_filename if a == "<dynamic-code>" else a for a in args)
    return func, args


_CODE_REDUCE = cloudpickle.Pickler.dispatch_table[types.CodeType]


class _CloudPickler(cloudpickle.Pickler):
    dispatch_table = collections.ChainMap({types.CodeType: _code_reduce_keeping_file}, cloudpickle.Pickler.dispatch_table)

    def reducer_override(self, obj):
        if type(obj) is _raylet.ObjectRef:
            return _reduce_ref(obj)
        return super().reducer_override(obj)


# `bytes` above this size travel as an out-of-band buffer: a put copies them into
# the store once (plain pickle would first copy them into the pickle stream).
_OUT_OF_BAND_BYTES = 64 * 1024


def _bytes_from_buffer(buf):
    return bytes(buf)


class _OutOfBandBytes:
    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __reduce_ex__(self, protocol):
        return (_bytes_from_buffer, (pickle.PickleBuffer(self.value),))


def dumps(obj):
    """cloudpickle bytes of a function or class (its code keeps its file name)."""
    f = io.BytesIO()
    _CloudPickler(f, protocol=5).dump(obj)
    return f.getvalue()


def serialize(value):
    """Returns (data, [buffers], [nested refs]) for a value."""
    if type(value) is bytes and len(value) > _OUT_OF_BAND_BYTES:
        value = _OutOfBandBytes(value)
    buffers = []
    _local.refs = []
    try:
        f = io.BytesIO()
        try:
            _FastPickler(f, protocol=5, buffer_callback=buffers.append).dump(value)
        except (pickle.PicklingError, AttributeError, TypeError):
            f = io.BytesIO()
            buffers.clear()
            _local.refs = []
            _CloudPickler(f, protocol=5, buffer_callback=buffers.append).dump(value)
        refs = _local.refs
    finally:
        _local.refs = None
    raw = []
    for b in buffers:
        try:
            raw.append(b.raw())
        except BufferError:
            # Not contiguous: keep a contiguous copy.
            raw.append(memoryview(bytes(b)))
    return f.getbuffer(), raw, refs


def serialize_error(err):
    """(data, buffers, refs) for an exception value."""
    try:
        return serialize(err)
    except Exception:  # noqa: BLE001 - an unpicklable exception still reaches the caller
        fallback = _exc.RayTaskError(
            getattr(err, "function_name", "task"),
            getattr(err, "traceback_str", repr(err)),
            _exc.RaySystemError("the exception could not be pickled: " + repr(getattr(err, "cause", err))),
        )
        return serialize(fallback)


def deserialize(kind, data, buffers):
    """The value of a serialized object; errors are returned (not raised)."""
    if kind == KIND_SYSTEM_ERROR:
        body = json.loads(bytes(data).decode("utf-8"))
        return _exc.system_error(body.get("type", ""), body.get("message", ""))
    value = pickle.loads(data, buffers=buffers)
    if kind == KIND_ERROR and isinstance(value, _exc.RayTaskError):
        return value.as_instanceof_cause()
    return value


def system_error(type_name, message):
    """The stored form of an error the runtime reports: JSON {"type", "message"}."""
    return json.dumps({"type": type_name, "message": message}).encode()


def is_error_kind(kind):
    return kind in (KIND_ERROR, KIND_SYSTEM_ERROR)
