//! `ray._raylet.CoreWorker`: the Python face of the Rust core worker. Values
//! cross as `(kind, data, [buffers], [nested refs])`; byte buffers are read in
//! place (no copy) while the GIL is released for the store write.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use ray_common::ResourceSet;
use ray_common::rpc::Security;
use ray_common::{JobId, TaskId, WorkerId};
use ray_core_worker::{ArgIn, CoreError, CoreWorker as Core, Got, Mode, Options, Reference, Serialized, SubmitSpec};
use ray_proto::rpc::{ReturnObject, SerializedObject, TaskResult};

use crate::errors::to_py;
use crate::object_ref::{ObjectRef, PlasmaBuffer, object_id, set_current};
use crate::task::{Task, serialized_to_py};

fn rt_err(e: impl std::fmt::Display) -> PyErr {
    PyRuntimeError::new_err(e.to_string())
}

/// Seconds from Python as a duration: negative or NaN is 0, and anything past a
/// year (infinity included) is a year.
fn seconds(s: f64) -> Duration {
    if s.is_nan() || s <= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(s.min(365.0 * 86_400.0)) }
}

/// A `timeout=` argument: `None` and infinity wait forever.
fn timeout_of(t: Option<f64>) -> Option<Duration> {
    t.filter(|s| s.is_finite() || s.is_nan()).map(seconds)
}

/// Extracts contiguous byte views of buffers (PickleBuffer.raw() memoryviews).
fn byte_views(bufs: &Bound<'_, PyList>) -> PyResult<Vec<PyBuffer<u8>>> {
    bufs.iter()
        .map(|b| {
            let pb = PyBuffer::<u8>::get(&b)?;
            if !pb.is_c_contiguous() {
                return Err(PyValueError::new_err("out-of-band buffers must be contiguous"));
            }
            Ok(pb)
        })
        .collect()
}

/// Runs `f` on a frontend value `(kind, data, [buffers], [nested refs])`, read
/// in place, with the GIL released.
fn on_serialized<R: Send>(py: Python<'_>, item: &Bound<'_, PyAny>, f: impl FnOnce(&Serialized<'_>) -> R + Send) -> PyResult<R> {
    let (kind, data, bufs, nested): (u32, Bound<'_, PyAny>, Bound<'_, PyList>, Bound<'_, PyList>) = item.extract()?;
    let data = PyBuffer::<u8>::get(&data)?;
    let views = byte_views(&bufs)?;
    let nested = nested_from(&nested)?;
    let (d, b) = (SendSlices(slices(std::slice::from_ref(&data))), SendSlices(slices(&views)));
    Ok(py.detach(move || {
        let (d, b) = (d, b);
        f(&Serialized { kind, data: d.0[0], buffers: b.0, nested })
    }))
}

fn slices(bufs: &[PyBuffer<u8>]) -> Vec<&[u8]> {
    bufs.iter()
        // SAFETY: the PyBuffer guards keep the memory alive and unmoved while the
        // slices are used; callers keep them alive for the slices' lifetime.
        .map(|b| unsafe { std::slice::from_raw_parts(b.buf_ptr() as *const u8, b.len_bytes()) })
        .collect()
}

/// References pickled inside a value: a list of `(id bytes, owner address)`.
/// Task arguments from the frontend: ("r", ObjectRef) or ("v", (kind, data, [buffers])).
pub(crate) fn args_from(args: &Bound<'_, PyList>) -> PyResult<Vec<ArgIn>> {
    let mut a = Vec::with_capacity(args.len());
    for item in args.iter() {
        let (tag, payload): (String, Bound<'_, PyAny>) = item.extract()?;
        if tag == "r" {
            a.push(ArgIn::Ref(payload.cast::<ObjectRef>()?.get().reference().clone()));
        } else {
            let (kind, data, bufs): (u32, Vec<u8>, Vec<Vec<u8>>) = payload.extract()?;
            a.push(ArgIn::Value(SerializedObject { kind, data, buffers: bufs, nested_refs: Vec::new() }));
        }
    }
    Ok(a)
}

pub(crate) fn nested_from(list: &Bound<'_, PyList>) -> PyResult<Vec<Reference>> {
    list.iter()
        .map(|r| {
            let (id, owner) = r.extract::<(Vec<u8>, String)>()?;
            Ok(Reference { id: object_id(&id)?, owner })
        })
        .collect()
}

/// `ray._raylet.CoreWorker`.
#[pyclass(module = "ray._raylet")]
pub struct CoreWorker {
    pub(crate) core: Arc<Core>,
}

fn start(py: Python<'_>, opts: Options) -> PyResult<CoreWorker> {
    let rt = crate::runtime::get()?;
    let core = py.detach(|| rt.block_on(Core::start(opts))).map_err(|e| pyo3::exceptions::PyConnectionError::new_err(e.to_string()))?;
    set_current(Some(core.clone()));
    Ok(CoreWorker { core })
}

fn parse_ip(s: &str) -> PyResult<std::net::IpAddr> {
    s.parse().map_err(|_| PyValueError::new_err(format!("node_ip_address {s:?} is not an IP address")))
}

fn to_tuple<'py>(py: Python<'py>, g: Got) -> PyResult<Bound<'py, PyAny>> {
    match g {
        Got::Inline(v) => Ok(serialized_to_py(py, &v)?.into_any()),
        Got::Plasma(pin) => {
            let layout = pin.layout().ok_or_else(|| to_py(CoreError::Store("a corrupt object in the object store".into())))?;
            let pin = Arc::new(pin);
            let view = |off: u64, len: u64| PlasmaBuffer { pin: pin.clone(), offset: off, len };
            let data = Bound::new(py, view(layout.data.0, layout.data.1))?;
            let bufs: Vec<Bound<'_, PlasmaBuffer>> = layout.buffers.iter().map(|(o, l)| Bound::new(py, view(*o, *l))).collect::<PyResult<_>>()?;
            Ok((layout.kind, data, PyList::new(py, bufs)?).into_pyobject(py)?.into_any())
        }
    }
}

#[pymethods]
impl CoreWorker {
    /// Starts the core worker of a driver.
    #[staticmethod]
    fn start_driver(
        py: Python<'_>,
        gcs_address: String,
        raylet_address: String,
        node_ip: &str,
        worker_id: String,
        worker_command: Vec<String>,
        entrypoint: String,
    ) -> PyResult<Self> {
        let security = Security::from_env().map_err(rt_err)?;
        let opts = Options {
            mode: Mode::Driver,
            gcs_address,
            raylet_address,
            node_ip: parse_ip(node_ip)?,
            job_id: None,
            worker_id: WorkerId::new(worker_id),
            worker_command,
            entrypoint,
            security,
        };
        start(py, opts)
    }

    /// Starts the core worker of a worker process.
    #[staticmethod]
    fn start_worker(py: Python<'_>, gcs_address: String, raylet_address: String, node_ip: &str, worker_id: String, job_id: String) -> PyResult<Self> {
        let security = Security::from_env().map_err(rt_err)?;
        let opts = Options {
            mode: Mode::Worker,
            gcs_address,
            raylet_address,
            node_ip: parse_ip(node_ip)?,
            job_id: Some(JobId::new(job_id)),
            worker_id: WorkerId::new(worker_id),
            worker_command: Vec::new(),
            entrypoint: String::new(),
            security,
        };
        let w = start(py, opts)?;
        // ray.cancel interrupts the main thread (where tasks run) with SIGINT, which
        // Python turns into KeyboardInterrupt there, waking it from sleeps and I/O.
        // SAFETY: pthread_self has no preconditions; this is the main thread.
        let main_thread = unsafe { libc::pthread_self() } as usize;
        w.core.set_interrupt(Box::new(move || {
            // SAFETY: the main thread lives as long as the process.
            unsafe {
                libc::pthread_kill(main_thread as libc::pthread_t, libc::SIGINT);
            }
        }));
        Ok(w)
    }

    #[getter]
    fn worker_id(&self) -> String {
        self.core.worker_id().to_string()
    }

    #[getter]
    fn job_id(&self) -> String {
        self.core.job_id().to_string()
    }

    #[getter]
    fn node_id(&self) -> String {
        self.core.node_id().to_string()
    }

    #[getter]
    fn address(&self) -> String {
        self.core.address().to_string()
    }

    /// (base address, length) of the object store mapping.
    fn store_mapping(&self) -> (usize, usize) {
        self.core.store_mapping()
    }

    /// Stores a serialized value; returns its ObjectRef.
    fn put(&self, py: Python<'_>, kind: u32, data: &Bound<'_, PyAny>, buffers: &Bound<'_, PyList>, nested: &Bound<'_, PyList>) -> PyResult<ObjectRef> {
        let data = PyBuffer::<u8>::get(data)?;
        let views = byte_views(buffers)?;
        let nested = nested_from(nested)?;
        let core = self.core.clone();
        let id = {
            let (d, b) = (SendSlices(slices(std::slice::from_ref(&data))), SendSlices(slices(&views)));
            py.detach(move || {
                let (d, b) = (d, b);
                core.put(&Serialized { kind, data: d.0[0], buffers: b.0, nested })
            })
        }
        .map_err(to_py)?;
        Ok(ObjectRef::adopt(id, self.core.address().to_string(), self.core.clone()))
    }

    /// Submits a task; returns its ObjectRefs.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (function_id, function_name, args, kwarg_names, num_returns, resources, max_retries, retry_exceptions, nested, strategy=None, placement_group=None, generator=0, runtime_env=String::new()))]
    fn submit(
        &self,
        function_id: Vec<u8>,
        function_name: String,
        args: &Bound<'_, PyList>,
        kwarg_names: Vec<String>,
        num_returns: u32,
        resources: HashMap<String, f64>,
        max_retries: i64,
        retry_exceptions: bool,
        nested: &Bound<'_, PyList>,
        strategy: Option<&Bound<'_, PyAny>>,
        placement_group: Option<(String, i64, bool)>,
        generator: u32,
        runtime_env: String,
    ) -> PyResult<Vec<ObjectRef>> {
        let strategy = crate::strategy::parse(strategy)?;
        let resources = ResourceSet::from_f64_map(&resources).map_err(|e| PyValueError::new_err(format!("invalid resources: {e}")))?;
        let a = args_from(args)?;
        let spec = SubmitSpec {
            function_id,
            function_name,
            args: a,
            kwarg_names,
            num_returns,
            resources,
            max_retries,
            retry_exceptions,
            nested_refs: nested_from(nested)?,
            strategy,
            placement_group,
            returns: ray_core_worker::generators::ReturnKind::from_wire(generator),
            runtime_env,
        };
        let owner = self.core.address().to_string();
        Ok(self.core.submit(spec).into_iter().map(|id| ObjectRef::adopt(id, owner.clone(), self.core.clone())).collect())
    }

    /// Values of refs: (kind, data, [buffers]) each. Raises Ray's errors
    /// (GetTimeoutError, ObjectLostError, OwnerDiedError, ...).
    #[pyo3(signature = (refs, timeout = None))]
    fn get<'py>(&self, py: Python<'py>, refs: Vec<Bound<'py, ObjectRef>>, timeout: Option<f64>) -> PyResult<Bound<'py, PyList>> {
        let refs: Vec<Reference> = refs.iter().map(|r| r.get().reference().clone()).collect();
        let core = self.core.clone();
        let t = timeout_of(timeout);
        let values = py.detach(move || core.get(&refs, t)).map_err(to_py)?;
        let out = PyList::empty(py);
        for v in values {
            out.append(to_tuple(py, v)?)?;
        }
        Ok(out)
    }

    /// Which refs are ready.
    #[pyo3(signature = (refs, num_returns, timeout = None))]
    fn wait(&self, py: Python<'_>, refs: Vec<Bound<'_, ObjectRef>>, num_returns: usize, timeout: Option<f64>) -> Vec<bool> {
        let refs: Vec<Reference> = refs.iter().map(|r| r.get().reference().clone()).collect();
        let core = self.core.clone();
        let t = timeout_of(timeout);
        py.detach(move || core.wait(&refs, num_returns, t))
    }

    /// Cancels the task producing `r`.
    #[pyo3(signature = (r, force = false))]
    fn cancel(&self, py: Python<'_>, r: Bound<'_, ObjectRef>, force: bool) -> PyResult<()> {
        let id = r.get().reference().id;
        let core = self.core.clone();
        py.detach(move || core.cancel(id, force)).map_err(to_py)
    }

    /// Stores a pickled function.
    fn export_function(&self, py: Python<'_>, function_id: Vec<u8>, body: Vec<u8>) -> PyResult<()> {
        let core = self.core.clone();
        py.detach(move || core.export_function(&function_id, body)).map_err(to_py)
    }

    /// Reads a pickled function.
    fn fetch_function<'py>(&self, py: Python<'py>, job_id: String, function_id: Vec<u8>) -> PyResult<Bound<'py, PyBytes>> {
        let core = self.core.clone();
        let job_id = JobId::new(job_id);
        let body = py.detach(move || core.fetch_function(&job_id, &function_id)).map_err(to_py)?;
        Ok(PyBytes::new(py, &body))
    }

    /// The next task to run (waits up to `timeout` seconds), or None.
    fn next_task(&self, py: Python<'_>, timeout: f64) -> Option<Task> {
        let core = self.core.clone();
        py.detach(move || core.next_task(seconds(timeout))).map(|t| Task { inner: Some(t) })
    }

    /// Stores item `index` (kind, data, [buffers], [nested refs]) of the running
    /// generator task and sends it to the task's owner; returns the item's
    /// object id.
    fn generator_item<'py>(&self, py: Python<'py>, task: PyRef<'_, Task>, index: u64, item: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
        let t = task.inner.as_ref().ok_or_else(|| PyRuntimeError::new_err("the task was already finished"))?;
        let core = self.core.clone();
        let id = on_serialized(py, item, move |v| core.generator_item(t, index, v))?.map_err(to_py)?;
        Ok(PyBytes::new(py, id.as_bytes()))
    }

    /// The next item of a generator task this process submitted (its task id):
    /// an ObjectRef, None at the end, or False when nothing came within `timeout`
    /// seconds (None: wait as long as it takes).
    #[pyo3(signature = (task_id, timeout = None))]
    fn generator_next<'py>(&self, py: Python<'py>, task_id: Vec<u8>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        let task = TaskId::from_bytes(&task_id).map_err(|e| PyValueError::new_err(e.to_string()))?;
        let core = self.core.clone();
        let t = timeout_of(timeout);
        let next = py.detach(move || core.generator_next(task, t));
        use ray_core_worker::generators::Next;
        Ok(match next {
            Next::Item(id) => ObjectRef::adopt(id, self.core.address().to_string(), self.core.clone()).into_pyobject(py)?.into_any(),
            Next::End => py.None().into_bound(py),
            Next::Pending => pyo3::types::PyBool::new(py, false).to_owned().into_any(),
        })
    }

    /// True when the generator's next item (or its end) is there.
    fn generator_ready(&self, task_id: Vec<u8>) -> PyResult<bool> {
        let task = TaskId::from_bytes(&task_id).map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(self.core.generator_ready(task))
    }

    /// The frontend dropped a generator: its items not taken are released.
    fn generator_drop(&self, task_id: Vec<u8>) {
        if let Ok(task) = TaskId::from_bytes(&task_id) {
            self.core.generator_drop(task);
        }
    }

    /// Finishes a task: `returns` is a list of (kind, data, [buffers], [nested refs]).
    #[pyo3(signature = (task, returns, is_error = false, is_application_error = false))]
    fn finish_task(&self, py: Python<'_>, mut task: PyRefMut<'_, Task>, returns: &Bound<'_, PyList>, is_error: bool, is_application_error: bool) -> PyResult<()> {
        let t = task.inner.take().ok_or_else(|| PyRuntimeError::new_err("the task was already finished"))?;
        let mut out: Vec<ReturnObject> = Vec::with_capacity(t.return_ids.len());
        for (item, &id) in returns.iter().zip(&t.return_ids) {
            let core = self.core.clone();
            let task_ref = &t;
            let r = on_serialized(py, &item, move |v| core.make_return(task_ref, id, v))?;
            // A value that could not be stored (e.g. a full store): the owner gets the error.
            out.push(r.unwrap_or_else(|e| ReturnObject { object_id: id.to_vec(), value: Some(e.to_value()), ..Default::default() }));
        }
        let result = TaskResult { task_id: t.id.as_bytes().to_vec(), returns: out, is_error, is_application_error, ..Default::default() };
        self.core.finish_task(&t, result);
        Ok(())
    }

    /// True (once) when `ray.cancel` asked to interrupt this task.
    fn take_cancel(&self, task_id: Vec<u8>) -> bool {
        TaskId::from_bytes(&task_id).is_ok_and(|t| self.core.take_cancel(t))
    }

    /// Forwards a printed line of the running task to its owner.
    fn log_line(&self, line: String) {
        self.core.log_line(line);
    }

    /// Lines printed by this driver's tasks (waits up to `timeout` seconds for the first).
    fn next_log_lines(&self, py: Python<'_>, timeout: f64) -> Vec<String> {
        let core = self.core.clone();
        py.detach(move || core.next_log_lines(seconds(timeout)))
    }

    /// The local node's stats: a dict with num_workers, object_store_used_bytes,
    /// object_store_capacity_bytes, num_objects, and the spill and eviction counters.
    fn node_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let core = self.core.clone();
        let s = py.detach(move || core.node_stats()).map_err(to_py)?;
        let d = PyDict::new(py);
        d.set_item("num_workers", s.num_workers)?;
        d.set_item("object_store_used_bytes", s.object_store_used_bytes)?;
        d.set_item("object_store_capacity_bytes", s.object_store_capacity_bytes)?;
        d.set_item("num_objects", s.num_objects)?;
        d.set_item("spilled_bytes", s.spilled_bytes)?;
        d.set_item("spilled_objects", s.spilled_objects)?;
        d.set_item("spilled_total", s.spilled_total)?;
        d.set_item("restored_total", s.restored_total)?;
        d.set_item("evicted_total", s.evicted_total)?;
        d.set_item("resources_available", s.resources_available)?;
        let demand = PyList::empty(py);
        for r in &s.demand {
            let item = PyDict::new(py);
            item.set_item("shape", r.shape.clone())?;
            item.set_item("count", r.num_ready_requests_queued + r.backlog_size + r.num_infeasible_requests_queued)?;
            demand.append(item)?;
        }
        d.set_item("demand", demand)?;
        Ok(d)
    }

    /// (owned, borrowed) object counts.
    fn object_counts(&self) -> (usize, usize) {
        self.core.object_counts()
    }

    /// Returns of submitted tasks not finished yet.
    fn pending_returns(&self) -> usize {
        self.core.pending_returns()
    }

    /// Ends this driver's job.
    fn shutdown(&self, py: Python<'_>) {
        let core = self.core.clone();
        py.detach(move || core.shutdown());
        set_current(None);
    }

    /// GCS client helpers (KV) for the frontend.
    fn kv_get<'py>(&self, py: Python<'py>, namespace: String, key: Vec<u8>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let core = self.core.clone();
        let rt = crate::runtime::get()?;
        let v = py.detach(move || rt.block_on(core.gcs().kv_get(&namespace, &key))).map_err(|s| to_py(CoreError::Rpc(s.message().to_string())))?;
        Ok(v.map(|b| PyBytes::new(py, &b)))
    }

    /// Writes a KV key; returns whether the key is new.
    fn kv_put(&self, py: Python<'_>, namespace: String, key: Vec<u8>, value: Vec<u8>, overwrite: bool) -> PyResult<bool> {
        let core = self.core.clone();
        let rt = crate::runtime::get()?;
        let req = ray_proto::rpc::KvPutRequest { namespace, key, value, overwrite };
        let r = py.detach(move || rt.block_on(core.gcs().kv.clone().put(req))).map_err(|s| to_py(CoreError::Rpc(s.message().to_string())))?;
        Ok(r.into_inner().added)
    }

    /// Deletes a KV key (or every key under it as a prefix); returns how many went.
    fn kv_del(&self, py: Python<'_>, namespace: String, key: Vec<u8>, by_prefix: bool) -> PyResult<u64> {
        let core = self.core.clone();
        let rt = crate::runtime::get()?;
        let req = ray_proto::rpc::KvDelRequest { namespace, key, del_by_prefix: by_prefix };
        let r = py.detach(move || rt.block_on(core.gcs().kv.clone().del(req))).map_err(|s| to_py(CoreError::Rpc(s.message().to_string())))?;
        Ok(r.into_inner().deleted_num)
    }

    /// KV keys under a prefix.
    fn kv_keys<'py>(&self, py: Python<'py>, namespace: String, prefix: Vec<u8>) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let core = self.core.clone();
        let rt = crate::runtime::get()?;
        let keys = py.detach(move || rt.block_on(core.gcs().kv_keys(&namespace, &prefix))).map_err(|s| to_py(CoreError::Rpc(s.message().to_string())))?;
        Ok(keys.iter().map(|k| PyBytes::new(py, k)).collect())
    }
}

/// Byte slices moved into a closure that runs without the GIL; the PyBuffer
/// guards that own the memory stay alive on the caller's stack meanwhile.
struct SendSlices<'a>(Vec<&'a [u8]>);
// SAFETY: the slices point into buffers kept alive and unchanged by the caller,
// which waits for the closure to finish.
unsafe impl Send for SendSlices<'_> {}

/// Registers the classes.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<CoreWorker>()?;
    m.add_class::<ObjectRef>()?;
    m.add_class::<PlasmaBuffer>()?;
    m.add_class::<Task>()?;
    Ok(())
}
