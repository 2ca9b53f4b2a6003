"""Exceptions raised by the Ray API, named and shaped as Ray's."""

import logging as _logging
import traceback as _traceback

_logger = _logging.getLogger(__name__)


class RayError(Exception):
    """Base of every Ray error."""


class RaySystemError(RayError):
    """An error of the runtime itself: `client_exc` (what failed) and, when
    known, `traceback_str`."""

    def __init__(self, client_exc, traceback_str=None):
        super().__init__(*((client_exc,) if traceback_str is None else (client_exc, traceback_str)))
        self.client_exc = client_exc
        self.traceback_str = traceback_str

    def __str__(self):
        text = "System error: {}".format(self.client_exc)
        if self.traceback_str:
            text += "\ntraceback: {}".format(self.traceback_str)
        return text


class GetTimeoutError(RayError, TimeoutError):
    """`ray.get` or `ray.wait` did not finish within `timeout`."""


class WorkerCrashedError(RayError):
    """The worker running the task died (after all retries)."""

    def __init__(self, message="The worker died unexpectedly while executing this task."):
        super().__init__(message)


class TaskCancelledError(RayError):
    """The task was cancelled with `ray.cancel`. Made as Ray makes it,
    `TaskCancelledError(task_id, error_message)`, or from a message alone."""

    def __init__(self, task_id=None, error_message=None):
        if isinstance(task_id, str) and error_message is None:
            message, task_id, error_message = task_id, None, task_id
        elif task_id is None and error_message is None:
            message = "This task or its dependency was cancelled by ray.cancel"
        else:
            message = ("Task: {} was cancelled. ".format(task_id) if task_id else "") + (error_message or "")
        super().__init__(message)
        self.task_id = task_id
        self.error_message = error_message


class TaskUnschedulableError(RayError):
    """No node can ever run the task (e.g. a hard node affinity to a node that
    is gone)."""

    def __init__(self, error_message=""):
        super().__init__(error_message)
        self.error_message = error_message


class ObjectStoreFullError(RayError):
    """The node's shared-memory object store has no room for the object."""


def _is_hex_id(value):
    return isinstance(value, str) and len(value) >= 8 and all(c in "0123456789abcdefABCDEF" for c in value)


class ObjectLostError(RayError):
    """The object's value is no longer available. Made as Ray makes it,
    `ObjectLostError(object_ref_hex, owner_address, call_site)`, or from the
    runtime's message alone."""

    def __init__(self, object_ref_hex=None, owner_address=None, call_site=None):
        if owner_address is None and call_site is None and not _is_hex_id(object_ref_hex):
            # The runtime's message (its text is what str() shows).
            super().__init__(*(() if object_ref_hex is None else (object_ref_hex,)))
            self._message = "" if object_ref_hex is None else str(object_ref_hex)
            object_ref_hex = None
        else:
            super().__init__(object_ref_hex, owner_address, call_site)
            self._message = None
        self.object_ref_hex = object_ref_hex
        self.owner_address = owner_address
        self.call_site = (call_site or "").replace("\x1e", "\n  ")

    def _base_str(self):
        text = "Failed to retrieve object {}. ".format(self.object_ref_hex)
        if self.call_site:
            return text + "The ObjectRef was created at: {}".format(self.call_site)
        return text + (
            "To see information about where this ObjectRef was created in Python, set the environment "
            "variable RAY_record_ref_creation_sites=1 during `ray start` and `ray.init()`."
        )

    def _detail(self):
        return (
            "All copies of {} have been lost due to node failure. Check cluster logs "
            "(`/tmp/ray/session_latest/logs`) for more information about the failure.".format(self.object_ref_hex)
        )

    def __str__(self):
        if self._message is not None:
            return self._message
        return self._base_str() + "\n\n" + self._detail()


class OwnerDiedError(ObjectLostError):
    """The process that owned the object exited."""

    def _detail(self):
        text = (
            "The object's owner has exited. This is the Python worker that first created the ObjectRef via "
            "`.remote()` or `ray.put()`. Check cluster logs (`/tmp/ray/session_latest/logs`) for more "
            "information about the Python worker failure."
        )
        if isinstance(self.owner_address, str) and self.owner_address:
            text += "\n\nOwner address: {}.".format(self.owner_address)
        return text


class ObjectReconstructionFailedError(ObjectLostError):
    """The object was lost and re-running the task that made it failed or was
    not allowed (no retries left, or the object was made by ``ray.put``).
    `reason` names why (Ray's ErrorType name) and `reason_message` explains."""

    def __init__(self, object_ref_hex=None, reason=None, reason_message=None, owner_address=None, call_site=None):
        if reason is None and reason_message is None and owner_address is None and call_site is None:
            super().__init__(object_ref_hex)
        else:
            super().__init__(object_ref_hex, owner_address, call_site or "")
            self.args = (object_ref_hex, reason, reason_message, owner_address, call_site)
        self.reason = reason
        self.reason_message = reason_message

    def __str__(self):
        if self._message is not None:
            return self._message
        text = self._base_str()
        if self.reason_message:
            text += "\n\n[{}] {}".format(self.reason or "UNKNOWN", self.reason_message)
        return text


class RayActorError(RayError):
    """The actor died, or cannot be reached, so its method could not run. Made
    as Ray makes it, `RayActorError(actor_id, error_msg, actor_init_failed,
    preempted)`, or from a message alone."""

    BASE_ERROR_MSG = "The actor experienced an error before finishing this task."

    def __init__(self, actor_id=None, error_msg=None, actor_init_failed=None, preempted=False):
        if error_msg is None and isinstance(actor_id, str) and not _is_hex_id(actor_id):
            error_msg, actor_id = actor_id, None
        if error_msg is None:
            error_msg = self.BASE_ERROR_MSG
        super().__init__(error_msg)
        self.actor_id = actor_id
        self.error_msg = error_msg
        self._actor_init_failed = actor_init_failed
        self._preempted = bool(preempted)

    def __str__(self):
        return self.error_msg

    @property
    def actor_init_failed(self):
        """Whether the actor's `__init__` raised."""
        if self._actor_init_failed is None:
            return "error raised in its creation task" in self.error_msg
        return bool(self._actor_init_failed)

    @property
    def preempted(self):
        """Whether the actor died because its node was preempted."""
        return self._preempted


class ActorDiedError(RayActorError):
    """The actor is dead: killed, its process died with no restarts left, or
    its `__init__` raised (then `ActorDiedError(task_error)` names it)."""

    BASE_ERROR_MSG = "The actor died unexpectedly before finishing this task."

    def __init__(self, cause=None, error_msg=None, actor_init_failed=None, preempted=False):
        if isinstance(cause, RayTaskError):
            message = "The actor died because of an error raised in its creation task, {}".format(cause)
            super().__init__(getattr(cause, "actor_id", None), message, True, preempted)
            return
        super().__init__(cause, error_msg, actor_init_failed, preempted)

    @staticmethod
    def from_task_error(task_error):
        return ActorDiedError(task_error)


class ActorUnavailableError(RayActorError):
    """The actor is restarting or cannot be reached for now; it may come back."""

    def __init__(self, error_message=None, actor_id=None):
        if isinstance(actor_id, (bytes, bytearray)):
            actor_id = bytes(actor_id).hex()
        if actor_id is not None:
            error_message = (
                "The actor {} is unavailable: {}. The task may or may not have been executed on the actor.".format(
                    actor_id, error_message
                )
            )
        super().__init__(actor_id=actor_id, error_msg=error_message)


class RayTaskError(RayError):
    """A task raised. The message holds the remote traceback; `cause` is the original
    exception, and the raised object is also an instance of the original type."""

    def __init__(self, function_name, traceback_str, cause, proctitle=None, pid=None, ip=None, actor_repr=None, actor_id=None):
        self.function_name = function_name
        self.traceback_str = traceback_str
        self.cause = cause
        self.proctitle = proctitle
        self.pid = pid
        self.ip = ip
        self.actor_repr = actor_repr
        self.actor_id = actor_id
        super().__init__(self._message())

    def _message(self):
        # Ray's layout: the task's process title (in cyan), where it ran, then
        # the user's frames and the exception line.
        title = "\x1b[36m{}\x1b[39m".format(self.proctitle or "ray::{}()".format(self.function_name))
        where = []
        if self.pid is not None:
            where.append("pid={}".format(self.pid))
        if self.ip:
            where.append("ip={}".format(self.ip))
        if self.actor_id:
            where.append("actor_id={}".format(self.actor_id))
        if self.actor_repr:
            where.append("repr={}".format(self.actor_repr))
        if where:
            title += " (" + ", ".join(where) + ")"
        body = (self.traceback_str or "").rstrip()
        return title + ("\n" + body if body else "")

    def __str__(self):
        return self._message()

    def __reduce__(self):
        return (_rebuild_task_error, (self.function_name, self.traceback_str, self.cause, self.pid, self.ip, self.proctitle, self.actor_repr, self.actor_id))

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
            _dual_init(err, self.function_name, self.traceback_str, self.cause, self.pid, self.ip, self.proctitle, self.actor_repr, self.actor_id)
            return err
        except TypeError as e:
            # A cause type that cannot be subclassed (e.g. a custom metaclass or
            # an __init_subclass__ that refuses): Ray warns and raises it plain.
            _logger.warning(
                "User exception type %s in RayTaskError can't be subclassed! This exception is raised as "
                "RayTaskError only. You can use `ray_task_error.cause` to access the user exception. "
                "Failure in subclassing: %s",
                cause_cls,
                e,
            )
            return self


_dual_classes = {}


def _dual_init(self, function_name, traceback_str, cause, pid=None, ip=None, proctitle=None, actor_repr=None, actor_id=None):
    self.function_name = function_name
    self.traceback_str = traceback_str
    self.cause = cause
    self.pid = pid
    self.ip = ip
    self.proctitle = proctitle
    self.actor_repr = actor_repr
    self.actor_id = actor_id
    self.args = (self._message(),)


def _rebuild_task_error(function_name, traceback_str, cause, pid, ip, proctitle=None, actor_repr=None, actor_id=None):
    return RayTaskError(function_name, traceback_str, cause, proctitle=proctitle, pid=pid, ip=ip, actor_repr=actor_repr, actor_id=actor_id)


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
    if kind == "ActorDiedError" and RUNTIME_ENV_SETUP_FAILED in message:
        return RuntimeEnvSetupError(message)
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


# ---------------------------------------------------------------------------
# The rest of Ray's public exception classes, with Ray's fields and bases.


class CrossLanguageError(RayError):
    """An exception raised by code in another language (`ray_exception` has
    `language` and `formatted_exception_string`, or is the message itself)."""

    def __init__(self, ray_exception):
        if isinstance(ray_exception, str):
            message = ray_exception
        else:
            message = "An exception raised from {}:\n{}".format(
                getattr(ray_exception, "language", "another language"),
                getattr(ray_exception, "formatted_exception_string", ""),
            )
        super().__init__(message)


class LocalRayletDiedError(RayError):
    """The raylet of the task's node died."""

    def __str__(self):
        return "The task's local raylet died. Check raylet.out for more information."


class AuthenticationError(RayError):
    """A token was missing or did not match the cluster's (see RAY_AUTH_MODE)."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message
        self.__suppress_context__ = True

    def __str__(self):
        return self.message


class UserCodeException(RayError):
    """An exception of user code, wrapped (retry_exceptions still looks at
    its cause)."""


class OutOfDiskError(RayError):
    """The object store is full and the node's disk is over its capacity
    threshold, so the object could not be stored or spilled."""

    def __str__(self):
        return super().__str__() + (
            "\nThe object cannot be created because the local object store is full and the local disk's "
            "utilization is over capacity (95% by default).Tip: Use `df` on this node to check disk usage and "
            "`ray memory` to check object store memory usage."
        )


class OutOfMemoryError(RayError):
    """The node ran low on memory and the task or actor was killed to free some."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message

    def __str__(self):
        return self.message


class NodeDiedError(RayError):
    """The node is dead or cannot be reached."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message

    def __str__(self):
        return self.message


class ObjectFetchTimedOutError(ObjectLostError):
    """No copy of the object could be found to fetch in time."""

    def _detail(self):
        return (
            "Fetch for object {} timed out because no locations were found for the object. This may indicate "
            "a system-level bug.".format(self.object_ref_hex)
        )


class RpcError(RayError):
    """A call of Ray's RPC layer failed (`rpc_code`: its status code)."""

    def __init__(self, message, rpc_code=None):
        super().__init__(message)
        self.message = message
        self.rpc_code = rpc_code

    def __str__(self):
        return self.message


class ReferenceCountingAssertionError(ObjectLostError, AssertionError):
    """The object was deleted while a reference to it was still held."""

    def _detail(self):
        return "The object has already been deleted by the reference counting protocol. This should not happen."


class ObjectFreedError(ObjectLostError):
    """The object was freed on purpose (the internal `free` call)."""

    def _detail(self):
        return (
            "The object was manually freed using the internal `free` call. Please ensure that `free` is only "
            "called once the object is no longer needed."
        )


class PlasmaObjectNotAvailable(RayError):
    """An object was not available within the given timeout."""


class AsyncioActorExit(RayError):
    """An asyncio actor exits on purpose (exit_actor())."""


class RuntimeEnvSetupError(RayError):
    """The runtime environment of a task or actor could not be set up."""

    def __init__(self, error_message=None):
        super().__init__(*(() if error_message is None else (error_message,)))
        self.error_message = error_message

    def __str__(self):
        lines = ["Failed to set up runtime environment."]
        if self.error_message:
            lines.append(self.error_message)
        return "\n".join(lines)


class TaskPlacementGroupRemoved(RayError):
    """The task's placement group was removed."""

    def __str__(self):
        return "The placement group corresponding to this task has been removed."


class ActorPlacementGroupRemoved(RayError):
    """The actor's placement group was removed."""

    def __str__(self):
        return "The placement group corresponding to this Actor has been removed."


class PendingCallsLimitExceeded(RayError):
    """More calls wait for the actor than its `max_pending_calls` allows."""


class ActorUnschedulableError(RayError):
    """No node can ever run the actor."""

    def __init__(self, error_message):
        super().__init__(error_message)
        self.error_message = error_message

    def __str__(self):
        return "The actor is not schedulable: {}".format(self.error_message)


class ObjectRefStreamEndOfStreamError(RayError):
    """A streaming generator has no more ObjectRefs to give."""


class StreamingGeneratorReplayInconsistentError(RaySystemError):
    """A re-run of a streaming generator task yielded a different number of
    objects than its first successful run."""


class OufOfBandObjectRefSerializationException(RayError):
    """An ObjectRef was pickled out of band (with ray.cloudpickle directly)."""


class RayChannelError(RaySystemError):
    """A system error of ray.experimental.channel."""


class RayChannelTimeoutError(RayChannelError, TimeoutError):
    """A Compiled Graph channel operation timed out."""


class RayCgraphCapacityExceeded(RaySystemError):
    """A Compiled Graph channel's buffer is full."""


class RayDirectTransportError(RaySystemError):
    """A Ray direct transport transfer failed."""


class UnserializableException(RayError):
    """A task's exception could not be unpickled; `str()` shows what it was."""

    def __init__(self, original_stack_trace):
        super().__init__(original_stack_trace)
        self._original_stack_trace = original_stack_trace

    def __str__(self):
        return (
            "Failed to deserialize exception. Refer to https://docs.ray.io/en/latest/ray-core/objects/"
            "serialization.html#custom-serializers-for-exceptions for more information.\nOriginal exception:\n"
            "{}".format(self._original_stack_trace)
        )


class ActorAlreadyExistsError(ValueError, RayError):
    """An actor of that name already exists (also a ValueError)."""

    def __init__(self, error_message):
        super().__init__(error_message)
        self.error_message = error_message

    def __str__(self):
        return self.error_message


class ActorHandleNotFoundError(ValueError, RayError):
    """The actor handle is not known here, e.g. one of an earlier session
    (also a ValueError)."""

    def __init__(self, error_message):
        super().__init__(error_message)
        self.error_message = error_message

    def __str__(self):
        return self.error_message


RAY_EXCEPTION_TYPES = [
    PlasmaObjectNotAvailable,
    RayError,
    RayTaskError,
    WorkerCrashedError,
    RayActorError,
    ObjectStoreFullError,
    ObjectLostError,
    ObjectFetchTimedOutError,
    ReferenceCountingAssertionError,
    ObjectReconstructionFailedError,
    OwnerDiedError,
    GetTimeoutError,
    AsyncioActorExit,
    RuntimeEnvSetupError,
    TaskPlacementGroupRemoved,
    ActorPlacementGroupRemoved,
    PendingCallsLimitExceeded,
    LocalRayletDiedError,
    TaskUnschedulableError,
    ActorDiedError,
    ActorUnschedulableError,
    ActorUnavailableError,
    RayChannelError,
    RayChannelTimeoutError,
    OufOfBandObjectRefSerializationException,
    RayCgraphCapacityExceeded,
    UnserializableException,
    ActorAlreadyExistsError,
    ActorHandleNotFoundError,
    AuthenticationError,
]

__all__ += [
    "CrossLanguageError",
    "LocalRayletDiedError",
    "AuthenticationError",
    "UserCodeException",
    "OutOfDiskError",
    "OutOfMemoryError",
    "NodeDiedError",
    "ObjectFetchTimedOutError",
    "RpcError",
    "ReferenceCountingAssertionError",
    "ObjectFreedError",
    "PlasmaObjectNotAvailable",
    "AsyncioActorExit",
    "RuntimeEnvSetupError",
    "TaskPlacementGroupRemoved",
    "ActorPlacementGroupRemoved",
    "PendingCallsLimitExceeded",
    "ActorUnschedulableError",
    "ObjectRefStreamEndOfStreamError",
    "StreamingGeneratorReplayInconsistentError",
    "OufOfBandObjectRefSerializationException",
    "RayChannelError",
    "RayChannelTimeoutError",
    "RayCgraphCapacityExceeded",
    "RayDirectTransportError",
    "UnserializableException",
    "ActorAlreadyExistsError",
    "ActorHandleNotFoundError",
]

# Runtime errors that travel by name (see system_error) defined after the table.
_SYSTEM_ERRORS["RuntimeEnvSetupError"] = RuntimeEnvSetupError

# How a worker that could not set up its runtime env says so; an actor that
# died of it raises RuntimeEnvSetupError from its calls, as in Ray.
RUNTIME_ENV_SETUP_FAILED = "The worker could not set up its runtime environment"
