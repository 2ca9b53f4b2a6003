//! Core worker errors as Python exceptions: each variant raises one of Ray's
//! exception classes from `ray.exceptions`, chosen by variant, never by text.

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyType;
use ray_core_worker::CoreError;

/// The exception class of `ray.exceptions` for an error.
fn class_name(e: &CoreError) -> &'static str {
    match e {
        CoreError::Timeout => "GetTimeoutError",
        CoreError::ObjectLost { .. } => "ObjectLostError",
        CoreError::OwnerDied { .. } => "OwnerDiedError",
        CoreError::ReconstructionFailed { .. } => "ObjectReconstructionFailedError",
        CoreError::StoreFull(_) => "ObjectStoreFullError",
        CoreError::Store(_) | CoreError::Rpc(_) | CoreError::FunctionNotFound { .. } | CoreError::InvalidId(_) | CoreError::Invalid(_) => {
            "RaySystemError"
        }
    }
}

/// Raises `e` as Ray's exception for it (a `ValueError` for malformed ids).
pub fn to_py(e: CoreError) -> PyErr {
    if let CoreError::InvalidId(id) = &e {
        return PyValueError::new_err(id.to_string());
    }
    if let CoreError::Invalid(m) = &e {
        return PyValueError::new_err(m.clone());
    }
    let message = e.to_string();
    Python::attach(|py| {
        let class = py.import("ray.exceptions").and_then(|m| m.getattr(class_name(&e))).and_then(|c| Ok(c.cast_into::<PyType>()?));
        match class {
            Ok(c) => PyErr::from_type(c, (message,)),
            Err(_) => PyRuntimeError::new_err(message),
        }
    })
}
