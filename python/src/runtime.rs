//! The one async runtime of a Python process: started on first use, shared by
//! every connection, never blocking the interpreter (calls release the GIL).

use std::sync::OnceLock;

use pyo3::PyResult;
use pyo3::exceptions::PyRuntimeError;

static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

/// The runtime, started on first use.
pub fn get() -> PyResult<&'static tokio::runtime::Runtime> {
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("ray-core")
        .enable_all()
        .build()
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start Ray's async runtime: {e}")))?;
    Ok(RUNTIME.get_or_init(|| rt))
}
