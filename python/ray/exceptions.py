"""Exceptions raised by the Ray API, named and shaped as Ray's."""

import traceback as _traceback


class RayError(Exception):
    """Base of every Ray error."""


class RaySystemError(RayError):
    """An error of the runtime itself."""


class GetTimeoutError(RayError, TimeoutError):
    """`ray.get` or `ray.wait` did not finish within `timeout`."""


class WorkerCrashedError(RayError):
    """The worker running the task died (after all retries)."""

    def __init__(self, message="The worker died unexpectedly while executing this task."):
        super().__init__(message)


class TaskCancelledError(RayError):
    """The task was cancelled with `ray.cancel`."""

    def __init__(self, message="This task or its dependency was cancelled by ray.cancel"):
        super().__init__(message)


class TaskUnschedulableError(RayError):
    """No node can ever run the task (e.g. a hard node affinity to a node that
    is gone)."""


class ObjectStoreFullError(RayError):
    """The node's shared-memory object store has no room for the object."""


class ObjectLostError(RayError):
    """The object's value is no longer available."""


class OwnerDiedError(ObjectLostError):
    """The process that owned the object exited."""


class ObjectReconstructionFailedError(ObjectLostError):
    """The object was lost and re-running the task that made it failed or was
    not allowed (no retries left, or the object was made by ``ray.put``)."""


class RayActorError(RayError):
    """The actor died, or cannot be reached, so its method could not run."""

    def __init__(self, message="The actor died unexpectedly before finishing this task."):
        super().__init__(message)
        self.error_msg = message

    @property
    def actor_init_failed(self):
        return "error raised in its creation task" in self.error_msg


class ActorDiedError(RayActorError):
    """The actor is dead: killed, its process died with no restarts left, or
    its `__init__` raised."""


class ActorUnavailableError(RayActorError):
    """The actor is restarting or cannot be reached for now; it may come back."""


class RayTaskError(RayError):
    """A task raised. The message holds the remote traceback; `cause` is the original
    exception, and the raised object is also an instance of the original type."""

    def __init__(self, function_name, traceback_str, cause, proctitle=None, pid=None, ip=None):
        self.function_name = function_name
        self.traceback_str = traceback_str
        self.cause = cause
        self.pid = pid
        self.ip = ip
        super().__init__(self._message())

    def _message(self):
        where = ""
        if self.pid is not None:
            where = " (pid={}{})".format(self.pid, ", ip={}".format(self.ip) if self.ip else "")
        return "{}{}: {}".format(
            "ray::" + self.function_name + "()", where, self.traceback_str.rstrip()
        )

    def __str__(self):
        return self._message()

    def __reduce__(self):
        return (_rebuild_task_error, (self.function_name, self.traceback_str, self.cause, self.pid, self.ip))

    def as_instanceof_cause(self):
        """This error as an instance of both RayTaskError and the cause's type, so
        `except ValueError` catches a task's ValueError."""
        cause_cls = type(self.cause)
        if cause_cls is RayTaskError or issubclass(cause_cls, RayTaskError):
            return self
        if not isinstance(self.cause, BaseException):
            return self
        name = "RayTaskError({})".format(cause_cls.__name__)
        try:
            cls = _dual_classes.get(cause_cls)
            if cls is None:
                cls = type(name, (RayTaskError, cause_cls), {
                    "__init__": _dual_init,
                    "__str__": RayTaskError.__str__,
                    "__reduce__": RayTaskError.__reduce__,
                })
                cls.__module__ = "ray.exceptions"
                _dual_classes[cause_cls] = cls
            err = cls.__new__(cls)
            _dual_init(err, self.function_name, self.traceback_str, self.cause, self.pid, self.ip)
            return err
        except TypeError:
            # A cause type that cannot be subclassed (e.g. with a custom metaclass).
            return self


_dual_classes = {}


def _dual_init(self, function_name, traceback_str, cause, pid=None, ip=None):
    self.function_name = function_name
    self.traceback_str = traceback_str
    self.cause = cause
    self.pid = pid
    self.ip = ip
    self.args = (self._message(),)


def _rebuild_task_error(function_name, traceback_str, cause, pid, ip):
    return RayTaskError(function_name, traceback_str, cause, pid=pid, ip=ip)


def _format_remote_traceback(exc):
    return "".join(_traceback.format_exception(type(exc), exc, exc.__traceback__))


_SYSTEM_ERRORS = {
    "WorkerCrashedError": WorkerCrashedError,
    "TaskCancelledError": TaskCancelledError,
    "ObjectStoreFullError": ObjectStoreFullError,
    "TaskUnschedulableError": TaskUnschedulableError,
    "ObjectLostError": ObjectLostError,
    "OwnerDiedError": OwnerDiedError,
    "ObjectReconstructionFailedError": ObjectReconstructionFailedError,
    "ActorDiedError": ActorDiedError,
    "ActorUnavailableError": ActorUnavailableError,
}


def system_error(kind, message):
    """The exception for a runtime error named `kind`."""
    cls = _SYSTEM_ERRORS.get(kind, RaySystemError)
    return cls(message)


__all__ = [
    "RayError",
    "RaySystemError",
    "GetTimeoutError",
    "WorkerCrashedError",
    "TaskCancelledError",
    "ObjectStoreFullError",
    "TaskUnschedulableError",
    "ObjectLostError",
    "OwnerDiedError",
    "ObjectReconstructionFailedError",
    "RayTaskError",
    "RayActorError",
    "ActorDiedError",
    "ActorUnavailableError",
]
