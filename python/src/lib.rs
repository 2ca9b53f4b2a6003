//! `ray._raylet`: the native core of the `ray` Python package.

use pyo3::prelude::*;

/// The native module.
#[pymodule]
fn _raylet(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
