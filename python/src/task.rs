//! `Task`: a task handed to this worker's main thread, with its spec's fields and
//! arguments as Python values.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use ray_core_worker::{ExecTask, Reference};
use ray_proto::rpc::{SerializedObject, task_arg};

use crate::object_ref::{ObjectRef, object_id};

/// A task for this worker to run.
#[pyclass(module = "ray._raylet")]
pub struct Task {
    pub(crate) inner: Option<ExecTask>,
}

/// `(kind, data, [buffers])` of an inline value.
pub fn serialized_to_py<'py>(py: Python<'py>, v: &SerializedObject) -> PyResult<Bound<'py, PyTuple>> {
    let bufs: Vec<Bound<'py, PyBytes>> = v.buffers.iter().map(|b| PyBytes::new(py, b)).collect();
    (v.kind, PyBytes::new(py, &v.data), PyList::new(py, bufs)?).into_pyobject(py)
}

impl Task {
    fn spec(&self) -> PyResult<&ExecTask> {
        self.inner.as_ref().ok_or_else(|| PyRuntimeError::new_err("the task was already finished"))
    }
}

#[pymethods]
impl Task {
    /// Task id (bytes).
    #[getter]
    fn task_id<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(py, self.spec()?.id.as_bytes()))
    }

    /// Job id.
    #[getter]
    fn job_id(&self) -> PyResult<String> {
        Ok(self.spec()?.spec.job_id.clone())
    }

    /// Function key.
    #[getter]
    fn function_id<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(py, &self.spec()?.spec.function_id))
    }

    /// Function name.
    #[getter]
    fn function_name(&self) -> PyResult<String> {
        Ok(self.spec()?.spec.function_name.clone())
    }

    /// Names of keyword arguments.
    #[getter]
    fn kwarg_names(&self) -> PyResult<Vec<String>> {
        Ok(self.spec()?.spec.kwarg_names.clone())
    }

    /// Number of returns.
    #[getter]
    fn num_returns(&self) -> PyResult<u32> {
        Ok(self.spec()?.spec.num_returns)
    }

    /// The placement group it runs in: (hex id, bundle index, capture child
    /// tasks), or None.
    #[getter]
    fn placement_group(&self) -> PyResult<Option<(String, i64, bool)>> {
        let s = &self.spec()?.spec;
        Ok((!s.placement_group_id.is_empty())
            .then(|| (s.placement_group_id.clone(), s.placement_group_bundle_index, s.placement_group_capture_child_tasks)))
    }

    /// For an actor's creation task: (actor id, max_concurrency, is_async,
    /// {group: limit}, class name, restarts so far); else None.
    #[getter]
    fn actor_creation(&self) -> PyResult<Option<(String, u32, bool, std::collections::HashMap<String, u32>, String, u64)>> {
        Ok(self.spec()?.spec.actor_creation.as_ref().map(|c| {
            (c.actor_id.clone(), c.max_concurrency, c.is_async, c.concurrency_groups.clone(), c.class_name.clone(), c.num_restarts)
        }))
    }

    /// For an actor method call: the actor's id; else "".
    #[getter]
    fn actor_id(&self) -> PyResult<String> {
        Ok(self.spec()?.spec.actor_id.clone())
    }

    /// The concurrency group of an actor method call ("" = default).
    #[getter]
    fn concurrency_group(&self) -> PyResult<String> {
        Ok(self.spec()?.spec.concurrency_group.clone())
    }

    /// The resources it was given.
    #[getter]
    fn resources(&self) -> PyResult<std::collections::HashMap<String, f64>> {
        Ok(self.spec()?.spec.resources.clone())
    }

    /// Attempt number (0 first).
    /// Retries left if the task raises an exception it may be retried on.
    #[getter]
    fn exception_retries_left(&self) -> PyResult<i64> {
        Ok(self.spec()?.spec.exception_retries_left)
    }

    /// The address of the task's owner (its caller).
    #[getter]
    fn owner_address(&self) -> PyResult<String> {
        Ok(self.spec()?.spec.owner_address.clone())
    }

    /// 0: fixed returns; 1: num_returns="dynamic"; 2: a streaming generator.
    #[getter]
    fn generator(&self) -> PyResult<u32> {
        Ok(self.spec()?.spec.generator)
    }

    #[getter]
    fn attempt(&self) -> PyResult<u64> {
        Ok(self.spec()?.spec.attempt)
    }

    /// Arguments: ("v", (kind, data, buffers)) or ("r", ObjectRef).
    fn args<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let spec = &self.spec()?.spec;
        let out = PyList::empty(py);
        for a in &spec.args {
            match &a.arg {
                Some(task_arg::Arg::Value(v)) => out.append(("v", serialized_to_py(py, v)?))?,
                Some(task_arg::Arg::PlasmaRef(r)) => {
                    let r = Reference { id: object_id(&r.object_id)?, owner: r.owner_address.clone() };
                    out.append(("r", ObjectRef::new(r)))?
                }
                None => out.append(("v", (0u32, PyBytes::new(py, b""), PyList::empty(py))))?,
            }
        }
        Ok(out)
    }
}
