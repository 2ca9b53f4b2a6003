//! `ray._raylet`: the native core of the `ray` Python package.

mod actor;
mod core;
mod errors;
mod gcs;
mod object_ref;
mod runtime;
mod state;
mod strategy;
mod task;

use pyo3::prelude::*;

/// The native module.
#[pymodule]
fn _raylet(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<gcs::GcsConnection>()?;
    core::register(m)?;
    actor::register(m)?;
    state::register(m)?;
    m.add_function(wrap_pyfunction!(gcs::temp_root, m)?)?;
    Ok(())
}
