//! Typed errors of the core worker, and the runtime's own error values that travel
//! to owners in place of a task's returns. The language frontend maps each
//! variant to one of Ray's exception classes; nothing is parsed back out of text.

use ray_common::ids::IdError;
use ray_common::{JobId, ObjectId};
use ray_proto::rpc::SerializedObject;
use serde::Serialize;

/// Kind of a serialized value: a pickled value.
pub const KIND_VALUE: u32 = 0;
/// Kind: a pickled exception raised by a task.
pub const KIND_ERROR: u32 = 1;
/// Kind: an error made by the runtime itself, as JSON `{"type", "message"}`.
pub const KIND_SYSTEM_ERROR: u32 = 3;

/// Why a core worker call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CoreError {
    /// Some objects were not ready before the timeout.
    #[error("Get timed out: some object(s) not ready.")]
    Timeout,
    /// The object's value is gone: freed, or out of reach.
    #[error("{message}")]
    ObjectLost {
        /// The object.
        id: ObjectId,
        /// What happened, for people.
        message: String,
    },
    /// The object's owner cannot be reached, so its value cannot be had.
    #[error("{message}")]
    OwnerDied {
        /// The object.
        id: ObjectId,
        /// The owner's address.
        owner: String,
        /// What happened, for people.
        message: String,
    },
    /// The object was lost and re-running the task that made it failed or is
    /// not allowed (out of retries).
    #[error("{message}")]
    ReconstructionFailed {
        /// The object.
        id: ObjectId,
        /// What happened, for people.
        message: String,
    },
    /// The node's object store has no room for the object.
    #[error("{0}")]
    StoreFull(String),
    /// The node's object store (or its raylet) failed.
    #[error("object store: {0}")]
    Store(String),
    /// A call to another process of the cluster failed.
    #[error("{0}")]
    Rpc(String),
    /// A task's function is not registered in the GCS.
    #[error("function {function} of job {job} is not registered")]
    FunctionNotFound {
        /// The job.
        job: JobId,
        /// The function id (hex).
        function: String,
    },
    /// An id of the wrong length.
    #[error(transparent)]
    InvalidId(#[from] IdError),
    /// A request the cluster refused as invalid (e.g. an actor name that is taken).
    #[error("{0}")]
    Invalid(String),
}

impl From<crate::plasma::PlasmaError> for CoreError {
    fn from(e: crate::plasma::PlasmaError) -> Self {
        match e {
            crate::plasma::PlasmaError::Full(m) => Self::StoreFull(m),
            crate::plasma::PlasmaError::Other(m) => Self::Store(m),
        }
    }
}

impl CoreError {
    /// The runtime error kind an owner sees when this error replaces a task's return.
    pub fn kind(&self) -> SystemErrorKind {
        match self {
            Self::ObjectLost { .. } => SystemErrorKind::ObjectLostError,
            Self::OwnerDied { .. } => SystemErrorKind::OwnerDiedError,
            Self::ReconstructionFailed { .. } => SystemErrorKind::ObjectReconstructionFailedError,
            Self::StoreFull(_) => SystemErrorKind::ObjectStoreFullError,
            _ => SystemErrorKind::RaySystemError,
        }
    }

    /// This error as a value stored in place of a return.
    pub fn to_value(&self) -> SerializedObject {
        system_error(self.kind(), &self.to_string())
    }
}

/// Errors the runtime itself puts in place of a task's returns; the names are
/// Ray's exception classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SystemErrorKind {
    /// The worker died while running the task, after all retries.
    WorkerCrashedError,
    /// The task was cancelled.
    TaskCancelledError,
    /// No room in the object store.
    ObjectStoreFullError,
    /// The value is gone.
    ObjectLostError,
    /// The owner of the value is gone.
    OwnerDiedError,
    /// The value was lost and could not be made again.
    ObjectReconstructionFailedError,
    /// No node can ever run the task (e.g. a hard node affinity to a dead node).
    TaskUnschedulableError,
    /// The actor is dead (killed, its process died with no restarts left, or
    /// its `__init__` raised).
    ActorDiedError,
    /// The actor is restarting or cannot be reached for now.
    ActorUnavailableError,
    /// Anything else the runtime failed at.
    RaySystemError,
}

#[derive(Serialize)]
struct SystemErrorBody<'a> {
    #[serde(rename = "type")]
    kind: SystemErrorKind,
    message: &'a str,
}

/// A runtime error as a stored value: JSON `{"type": kind, "message": message}`.
pub fn system_error(kind: SystemErrorKind, message: &str) -> SerializedObject {
    let data = serde_json::to_vec(&SystemErrorBody { kind, message }).unwrap_or_default();
    SerializedObject { kind: KIND_SYSTEM_ERROR, data, buffers: Vec::new(), nested_refs: Vec::new() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_errors_are_json_with_the_exception_name() {
        let v = system_error(SystemErrorKind::WorkerCrashedError, "died: \"quoted\"\nnewline");
        assert_eq!(v.kind, KIND_SYSTEM_ERROR);
        let back: serde_json::Value = serde_json::from_slice(&v.data).unwrap();
        assert_eq!(back["type"], "WorkerCrashedError");
        assert_eq!(back["message"], "died: \"quoted\"\nnewline");
    }

    #[test]
    fn store_full_errors_replace_returns_as_object_store_full() {
        let v = CoreError::StoreFull("no room".into()).to_value();
        let back: serde_json::Value = serde_json::from_slice(&v.data).unwrap();
        assert_eq!(back["type"], "ObjectStoreFullError");
    }
}
