"""The errors a task's caller sees, shaped as Ray shows them: a title line naming
the task and where it ran, then the user's own frames (never the worker's), then
the exception line; an argument that failed is named as such."""

import os
import traceback

from ray import exceptions as _exc

# Frames from these parts of the package are the worker's own, never shown.
_PKG = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_INTERNAL_DIRS = (os.path.join(_PKG, "_private") + os.sep,)
_INTERNAL_FILES = tuple(os.path.join(_PKG, f) for f in ("__init__.py", "actor.py", "remote_function.py"))

DEPENDENCY_FAILED = "  At least one of the input arguments for this task could not be computed:"


def _internal(filename):
    return filename.startswith(_INTERNAL_DIRS) or filename in _INTERNAL_FILES


def _strip(te, seen):
    """Drops internal frames from a TracebackException and the ones it chains."""
    while te is not None and id(te) not in seen:
        seen.add(id(te))
        te.stack = traceback.StackSummary.from_list([f for f in te.stack if not _internal(f.filename)])
        _strip(te.__context__, seen)
        te = te.__cause__


def user_traceback(exc):
    """The traceback of `exc` as Ray prints it under a task's title: the user's
    frames (with their source lines where the file is readable) and the
    exception line, without the "Traceback (most recent call last):" headers."""
    te = traceback.TracebackException(type(exc), exc, exc.__traceback__, capture_locals=False)
    _strip(te, set())
    lines = [line for line in te.format() if not line.startswith("Traceback (most recent call last)")]
    return "".join(lines).rstrip("\n")


def task_error(name, exc, pid, ip, actor_id=None, actor_repr=None):
    """A RayTaskError for `exc`, raised by the task `name` (e.g. "f" or "A.m")."""
    return _exc.RayTaskError(
        name, user_traceback(exc), exc, pid=pid, ip=ip, actor_id=actor_id, actor_repr=actor_repr
    )


def dependency_failed(name, inner, pid, ip, actor_id=None, actor_repr=None):
    """The error of a task one of whose arguments is a failed task's result: the
    argument's error under a line saying an input could not be computed."""
    plain = _exc.RayTaskError(
        inner.function_name, inner.traceback_str, inner.cause, pid=inner.pid, ip=inner.ip,
        actor_id=getattr(inner, "actor_id", None), actor_repr=getattr(inner, "actor_repr", None),
    )
    body = "{}\nray.exceptions.RayTaskError: {}".format(DEPENDENCY_FAILED, str(plain))
    return _exc.RayTaskError(name, body, inner.cause, pid=pid, ip=ip, actor_id=actor_id, actor_repr=actor_repr)
