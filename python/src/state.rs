//! Cluster state for `ray.util.state`: the task table (the actor table is in
//! `actor.rs`).

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::core::CoreWorker;
use crate::errors::to_py;

/// The latest tasks the cluster knows (of `job_id` when not empty), as dicts.
#[pyfunction]
#[pyo3(signature = (core, job_id = String::new()))]
pub fn task_list<'py>(py: Python<'py>, core: PyRef<'py, CoreWorker>, job_id: String) -> PyResult<Bound<'py, PyList>> {
    let c = core.core.clone();
    let all = py.detach(move || c.list_tasks(&job_id)).map_err(to_py)?;
    let out = PyList::empty(py);
    for t in &all {
        let d = PyDict::new(py);
        d.set_item("task_id", &t.task_id)?;
        d.set_item("attempt_number", t.attempt)?;
        d.set_item("name", &t.name)?;
        d.set_item("state", &t.state)?;
        d.set_item("job_id", &t.job_id)?;
        d.set_item("actor_id", if t.actor_id.is_empty() { None } else { Some(&t.actor_id) })?;
        d.set_item("type", &t.r#type)?;
        d.set_item("func_or_class_name", &t.name)?;
        d.set_item("error_type", if t.error_type.is_empty() { None } else { Some(&t.error_type) })?;
        out.append(d)?;
    }
    Ok(out)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(task_list, m)?)
}
