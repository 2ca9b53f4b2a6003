//! Actors for the Python frontend: create, call, kill, look up and list. The
//! `ray.actor` module builds handles and classes on these.

use std::collections::HashMap;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use ray_common::ResourceSet;
use ray_core_worker::{ActorCallSpec, ActorCreateSpec, Created};
use ray_proto::rpc::ActorTableData;

use crate::core::{CoreWorker, args_from, nested_from};
use crate::errors::to_py;
use crate::object_ref::ObjectRef;

fn resources(m: &HashMap<String, f64>, what: &str) -> PyResult<ResourceSet> {
    ResourceSet::from_f64_map(m).map_err(|e| PyValueError::new_err(format!("invalid {what}: {e}")))
}

/// An actor table record as a dict (Ray's field names where it has them).
fn info_dict<'py>(py: Python<'py>, a: &ActorTableData) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("actor_id", &a.actor_id)?;
    d.set_item("name", &a.name)?;
    d.set_item("namespace", &a.namespace)?;
    d.set_item("class_name", &a.class_name)?;
    d.set_item("state", &a.state)?;
    d.set_item("job_id", &a.job_id)?;
    d.set_item("owner_address", &a.owner_address)?;
    d.set_item("detached", a.detached)?;
    d.set_item("address", &a.address)?;
    d.set_item("node_id", &a.node_id)?;
    d.set_item("worker_id", &a.worker_id)?;
    d.set_item("pid", a.pid)?;
    d.set_item("num_restarts", a.num_restarts)?;
    d.set_item("max_restarts", a.max_restarts)?;
    d.set_item("max_task_retries", a.max_task_retries)?;
    d.set_item("death_cause", &a.death_cause)?;
    d.set_item("required_resources", a.required_resources.clone())?;
    d.set_item("start_time_ms", a.start_time_ms)?;
    d.set_item("end_time_ms", a.end_time_ms)?;
    d.set_item("placement_group_id", &a.placement_group_id)?;
    d.set_item("function_id", PyBytes::new(py, &a.function_id))?;
    Ok(d)
}

/// Creates an actor. Returns `(actor_id, None)` for a new one, or `(actor_id,
/// info)` for the live actor of that name (`get_if_exists`).
#[pyfunction]
#[pyo3(signature = (core, class_id, class_name, args, kwarg_names, nested, placement, hold, strategy, placement_group, name, namespace, detached, get_if_exists, max_restarts, max_task_retries, max_concurrency, is_async, concurrency_groups, runtime_env = String::new()))]
#[allow(clippy::too_many_arguments)]
pub fn actor_create<'py>(
    py: Python<'py>,
    core: PyRef<'py, CoreWorker>,
    class_id: Vec<u8>,
    class_name: String,
    args: &Bound<'py, PyList>,
    kwarg_names: Vec<String>,
    nested: &Bound<'py, PyList>,
    placement: HashMap<String, f64>,
    hold: Option<HashMap<String, f64>>,
    strategy: Option<&Bound<'py, PyAny>>,
    placement_group: Option<(String, i64, bool)>,
    name: String,
    namespace: String,
    detached: bool,
    get_if_exists: bool,
    max_restarts: i64,
    max_task_retries: i64,
    max_concurrency: u32,
    is_async: bool,
    concurrency_groups: HashMap<String, u32>,
    runtime_env: String,
) -> PyResult<(String, Option<Bound<'py, PyDict>>)> {
    let spec = ActorCreateSpec {
        class_id,
        class_name,
        args: args_from(args)?,
        kwarg_names,
        nested_refs: nested_from(nested)?,
        placement: resources(&placement, "resources")?,
        hold: hold.as_ref().map(|h| resources(h, "resources")).transpose()?,
        strategy: crate::strategy::parse(strategy)?,
        placement_group,
        name,
        namespace,
        detached,
        get_if_exists,
        max_restarts,
        max_task_retries,
        max_concurrency,
        is_async,
        concurrency_groups,
        runtime_env,
    };
    let c = core.core.clone();
    match py.detach(move || c.create_actor(spec)).map_err(to_py)? {
        Created::New(id) => Ok((id, None)),
        Created::Existing(a) => Ok((a.actor_id.clone(), Some(info_dict(py, &a)?))),
    }
}

/// Calls a method of an actor; returns its ObjectRefs.
#[pyfunction]
#[pyo3(signature = (core, actor_id, method, args, kwarg_names, num_returns, nested, concurrency_group = String::new(), max_task_retries = None, generator = 0))]
#[allow(clippy::too_many_arguments)]
pub fn actor_call(
    core: PyRef<'_, CoreWorker>,
    actor_id: String,
    method: String,
    args: &Bound<'_, PyList>,
    kwarg_names: Vec<String>,
    num_returns: u32,
    nested: &Bound<'_, PyList>,
    concurrency_group: String,
    max_task_retries: Option<i64>,
    generator: u32,
) -> PyResult<Vec<ObjectRef>> {
    let spec = ActorCallSpec {
        actor_id,
        method,
        args: args_from(args)?,
        kwarg_names,
        num_returns,
        nested_refs: nested_from(nested)?,
        concurrency_group,
        max_task_retries,
        returns: ray_core_worker::generators::ReturnKind::from_wire(generator),
    };
    let owner = core.core.address().to_string();
    Ok(core.core.call_actor(spec).into_iter().map(|id| ObjectRef::adopt(id, owner.clone(), core.core.clone())).collect())
}

/// `ray.kill`.
#[pyfunction]
#[pyo3(signature = (core, actor_id, no_restart, cause = String::new()))]
pub fn actor_kill(py: Python<'_>, core: PyRef<'_, CoreWorker>, actor_id: String, no_restart: bool, cause: String) -> PyResult<()> {
    let c = core.core.clone();
    py.detach(move || c.kill_actor(&actor_id, no_restart, &cause)).map_err(to_py)
}

/// An actor's record by id, or by name in a namespace (id empty); None if unknown.
#[pyfunction]
#[pyo3(signature = (core, actor_id, name = String::new(), namespace = String::new()))]
pub fn actor_info<'py>(py: Python<'py>, core: PyRef<'py, CoreWorker>, actor_id: String, name: String, namespace: String) -> PyResult<Option<Bound<'py, PyDict>>> {
    let c = core.core.clone();
    let a = py.detach(move || c.actor_info(&actor_id, &name, &namespace)).map_err(to_py)?;
    a.map(|a| info_dict(py, &a)).transpose()
}

/// Every actor the cluster knows (of `job_id` when not empty), as dicts.
#[pyfunction]
#[pyo3(signature = (core, job_id = String::new(), alive_only = false))]
pub fn actor_list<'py>(py: Python<'py>, core: PyRef<'py, CoreWorker>, job_id: String, alive_only: bool) -> PyResult<Bound<'py, PyList>> {
    let c = core.core.clone();
    let all = py.detach(move || c.list_actors(&job_id, alive_only)).map_err(to_py)?;
    let out = PyList::empty(py);
    for a in &all {
        out.append(info_dict(py, a)?)?;
    }
    Ok(out)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(actor_create, m)?)?;
    m.add_function(wrap_pyfunction!(actor_call, m)?)?;
    m.add_function(wrap_pyfunction!(actor_kill, m)?)?;
    m.add_function(wrap_pyfunction!(actor_info, m)?)?;
    m.add_function(wrap_pyfunction!(actor_list, m)?)?;
    Ok(())
}
