//! Python bindings of the core worker: `CoreWorker`, `ObjectRef`, `PlasmaBuffer`
//! (zero-copy views of the shared-memory store) and `Task` (a task to execute).

use std::collections::HashMap;
use std::ffi::{c_int, c_void};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyRuntimeError, PyTimeoutError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use ray_common::ResourceSet;
use ray_common::rpc::Security;
use ray_core_worker::executor::ExecTask;
use ray_core_worker::{ArgIn, CoreWorker as Core, GetError, Got, Mode, Options, SubmitSpec};
use ray_proto::rpc::{ReturnObject, SerializedObject, TaskResult, task_arg};

/// The core worker of this process, for ObjectRef reference counting.
static CURRENT: Mutex<Option<Arc<Core>>> = Mutex::new(None);

fn current() -> Option<Arc<Core>> {
    CURRENT.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

fn rt_err(e: impl std::fmt::Display) -> PyErr {
    PyRuntimeError::new_err(e.to_string())
}

/// A reference to an object, counted by its process's core worker.
#[pyclass(module = "ray._raylet", frozen, eq, hash)]
pub struct ObjectRef {
    id: Vec<u8>,
    owner: String,
    core: Option<Arc<Core>>,
}

impl PartialEq for ObjectRef {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl std::hash::Hash for ObjectRef {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.id.hash(state)
    }
}

impl ObjectRef {
    /// Takes over a reference the core worker already counted.
    fn adopt(id: Vec<u8>, owner: String, core: Arc<Core>) -> Self {
        Self { id, owner, core: Some(core) }
    }

    fn new(id: Vec<u8>, owner: String) -> Self {
        let core = current();
        if let Some(c) = &core {
            c.add_local_ref(&id, &owner);
        }
        Self { id, owner, core }
    }
}

impl Drop for ObjectRef {
    fn drop(&mut self) {
        if let Some(c) = &self.core {
            c.remove_local_ref(&self.id);
        }
    }
}

#[pymethods]
impl ObjectRef {
    /// Rebuilds a ref from its pickled form (a borrowed reference).
    #[staticmethod]
    fn _from_pickle(id: Vec<u8>, owner: String) -> Self {
        Self::new(id, owner)
    }

    /// The id as hex.
    fn hex(&self) -> String {
        ray_core_worker::ids::hex(&self.id)
    }

    /// The id as bytes.
    fn binary<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.id)
    }

    /// Where the owner's core worker listens.
    fn owner_address(&self) -> String {
        self.owner.clone()
    }

    /// The id of the task that returns this object.
    fn task_id(&self) -> String {
        ray_core_worker::ids::hex(ray_core_worker::ids::task_of(&self.id))
    }

    fn __repr__(&self) -> String {
        format!("ObjectRef({})", self.hex())
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyAny>, (Bound<'py, PyBytes>, String))> {
        let py = slf.py();
        let f = slf.get_type().getattr("_from_pickle")?;
        let me = slf.get();
        Ok((f, (PyBytes::new(py, &me.id), me.owner.clone())))
    }
}

/// A read-only view of part of an object in the shared-memory store. The object
/// stays pinned while any view (or any numpy array built on one) is alive.
#[pyclass(module = "ray._raylet", frozen)]
pub struct PlasmaBuffer {
    pin: Arc<ray_core_worker::plasma::Pin>,
    offset: u64,
    len: u64,
}

#[pymethods]
impl PlasmaBuffer {
    unsafe fn __getbuffer__(slf: Bound<'_, Self>, view: *mut pyo3::ffi::Py_buffer, flags: c_int) -> PyResult<()> {
        if (flags & pyo3::ffi::PyBUF_WRITABLE) == pyo3::ffi::PyBUF_WRITABLE {
            return Err(pyo3::exceptions::PyBufferError::new_err("objects in the object store are read-only"));
        }
        let me = slf.get();
        let ptr = (me.pin.address() + me.offset as usize) as *mut c_void;
        // SAFETY: the view points into the pinned object, which outlives the view
        // (the view holds a reference to this PlasmaBuffer, which holds the pin).
        let rc = unsafe { pyo3::ffi::PyBuffer_FillInfo(view, slf.as_ptr(), ptr, me.len as isize, 1, flags) };
        if rc != 0 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(())
    }

    unsafe fn __releasebuffer__(&self, _view: *mut pyo3::ffi::Py_buffer) {}

    /// Address of the first byte in this process.
    #[getter]
    fn address(&self) -> usize {
        self.pin.address() + self.offset as usize
    }

    fn __len__(&self) -> usize {
        self.len as usize
    }
}

/// A task for this worker to run.
#[pyclass(module = "ray._raylet")]
pub struct Task {
    inner: Option<ExecTask>,
}

fn serialized_to_py<'py>(py: Python<'py>, v: &SerializedObject) -> PyResult<Bound<'py, PyTuple>> {
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
        Ok(PyBytes::new(py, &self.spec()?.spec.task_id))
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

    /// Attempt number (0 first).
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
                Some(task_arg::Arg::PlasmaRef(r)) => out.append(("r", ObjectRef::new(r.object_id.clone(), r.owner_address.clone())))?,
                None => out.append(("v", (0u32, PyBytes::new(py, b""), PyList::empty(py))))?,
            }
        }
        Ok(out)
    }
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

fn slices(bufs: &[PyBuffer<u8>]) -> Vec<&[u8]> {
    bufs.iter()
        // SAFETY: the PyBuffer guards keep the memory alive and unmoved while the
        // slices are used; callers keep them alive for the slices' lifetime.
        .map(|b| unsafe { std::slice::from_raw_parts(b.buf_ptr() as *const u8, b.len_bytes()) })
        .collect()
}

fn nested_from(list: &Bound<'_, PyList>) -> PyResult<Vec<(Vec<u8>, String)>> {
    list.iter().map(|r| r.extract::<(Vec<u8>, String)>()).collect()
}

/// `ray._raylet.CoreWorker`.
#[pyclass(module = "ray._raylet")]
pub struct CoreWorker {
    core: Arc<Core>,
}

fn start(py: Python<'_>, opts: Options) -> PyResult<CoreWorker> {
    let rt = crate::runtime::get()?;
    let core = py.detach(|| rt.block_on(Core::start(opts))).map_err(|e| pyo3::exceptions::PyConnectionError::new_err(e.to_string()))?;
    *CURRENT.lock().unwrap_or_else(|p| p.into_inner()) = Some(core.clone());
    Ok(CoreWorker { core })
}

fn parse_ip(s: &str) -> PyResult<std::net::IpAddr> {
    s.parse().map_err(|_| PyValueError::new_err(format!("node_ip_address {s:?} is not an IP address")))
}

fn to_tuple<'py>(py: Python<'py>, g: Got) -> PyResult<Bound<'py, PyAny>> {
    match g {
        Got::Inline(v) => Ok(serialized_to_py(py, &v)?.into_any()),
        Got::Plasma(pin) => {
            let layout = pin.layout().ok_or_else(|| rt_err("a corrupt object in the object store"))?;
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
            worker_id,
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
            job_id: Some(job_id),
            worker_id,
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
            let d = slices(std::slice::from_ref(&data));
            let b = slices(&views);
            let (dp, bp) = (SendSlices(d), SendSlices(b));
            py.detach(move || {
                let (dp, bp) = (dp, bp);
                core.put(kind, dp.0[0], &bp.0, nested)
            })
        }
        .map_err(|e| if e.contains("full") { PyErr::new::<pyo3::exceptions::PyMemoryError, _>(e) } else { rt_err(e) })?;
        Ok(ObjectRef::adopt(id, self.core.address().to_string(), self.core.clone()))
    }

    /// Submits a task; returns its ObjectRefs.
    #[allow(clippy::too_many_arguments)]
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
    ) -> PyResult<Vec<ObjectRef>> {
        let resources = ResourceSet::from_f64_map(&resources).map_err(|e| PyValueError::new_err(format!("invalid resources: {e}")))?;
        let mut a = Vec::with_capacity(args.len());
        for item in args.iter() {
            let (tag, payload): (String, Bound<'_, PyAny>) = item.extract()?;
            if tag == "r" {
                let r = payload.cast::<ObjectRef>()?.get();
                a.push(ArgIn::Ref { id: r.id.clone(), owner: r.owner.clone() });
            } else {
                let (kind, data, bufs): (u32, Vec<u8>, Vec<Vec<u8>>) = payload.extract()?;
                a.push(ArgIn::Value(SerializedObject { kind, data, buffers: bufs, nested_refs: Vec::new() }));
            }
        }
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
        };
        let owner = self.core.address().to_string();
        Ok(self.core.submit(spec).into_iter().map(|id| ObjectRef::adopt(id, owner.clone(), self.core.clone())).collect())
    }

    /// Values of refs: (kind, data, [buffers]) each. Raises TimeoutError.
    #[pyo3(signature = (refs, timeout = None))]
    fn get<'py>(&self, py: Python<'py>, refs: Vec<Bound<'py, ObjectRef>>, timeout: Option<f64>) -> PyResult<Bound<'py, PyList>> {
        let ids: Vec<(Vec<u8>, String)> = refs.iter().map(|r| (r.get().id.clone(), r.get().owner.clone())).collect();
        let core = self.core.clone();
        let t = timeout.map(|s| Duration::from_secs_f64(s.max(0.0)));
        let got = py.detach(move || core.get(&ids, t));
        match got {
            Ok(values) => {
                let out = PyList::empty(py);
                for v in values {
                    out.append(to_tuple(py, v)?)?;
                }
                Ok(out)
            }
            Err(GetError::Timeout) => Err(PyTimeoutError::new_err("get timed out")),
            Err(GetError::Other(m)) => Err(rt_err(m)),
        }
    }

    /// Which refs are ready.
    #[pyo3(signature = (refs, num_returns, timeout = None))]
    fn wait(&self, py: Python<'_>, refs: Vec<Bound<'_, ObjectRef>>, num_returns: usize, timeout: Option<f64>) -> Vec<bool> {
        let ids: Vec<(Vec<u8>, String)> = refs.iter().map(|r| (r.get().id.clone(), r.get().owner.clone())).collect();
        let core = self.core.clone();
        let t = timeout.map(|s| Duration::from_secs_f64(s.max(0.0)));
        py.detach(move || core.wait(&ids, num_returns, t))
    }

    /// Cancels the task producing `r`.
    #[pyo3(signature = (r, force = false))]
    fn cancel(&self, py: Python<'_>, r: Bound<'_, ObjectRef>, force: bool) -> PyResult<()> {
        let id = r.get().id.clone();
        let core = self.core.clone();
        py.detach(move || core.cancel(&id, force)).map_err(rt_err)
    }

    /// Stores a pickled function.
    fn export_function(&self, py: Python<'_>, function_id: Vec<u8>, body: Vec<u8>) -> PyResult<()> {
        let core = self.core.clone();
        py.detach(move || core.export_function(&function_id, body)).map_err(rt_err)
    }

    /// Reads a pickled function.
    fn fetch_function<'py>(&self, py: Python<'py>, job_id: String, function_id: Vec<u8>) -> PyResult<Bound<'py, PyBytes>> {
        let core = self.core.clone();
        let body = py.detach(move || core.fetch_function(&job_id, &function_id)).map_err(rt_err)?;
        Ok(PyBytes::new(py, &body))
    }

    /// The next task to run (waits up to `timeout` seconds), or None.
    fn next_task(&self, py: Python<'_>, timeout: f64) -> Option<Task> {
        let core = self.core.clone();
        py.detach(move || core.next_task(Duration::from_secs_f64(timeout.max(0.0)))).map(|t| Task { inner: Some(t) })
    }

    /// Finishes a task: `returns` is a list of (kind, data, [buffers], [nested refs]).
    #[pyo3(signature = (task, returns, is_error = false, is_application_error = false))]
    fn finish_task(&self, py: Python<'_>, mut task: PyRefMut<'_, Task>, returns: &Bound<'_, PyList>, is_error: bool, is_application_error: bool) -> PyResult<()> {
        let t = task.inner.take().ok_or_else(|| PyRuntimeError::new_err("the task was already finished"))?;
        let ids = t.spec.return_ids.clone();
        let mut out: Vec<ReturnObject> = Vec::with_capacity(ids.len());
        for (i, item) in returns.iter().enumerate() {
            let Some(id) = ids.get(i) else { break };
            let (kind, data, bufs, nested): (u32, Bound<'_, PyAny>, Bound<'_, PyList>, Bound<'_, PyList>) = item.extract()?;
            let data = PyBuffer::<u8>::get(&data)?;
            let views = byte_views(&bufs)?;
            let nested = nested_from(&nested)?;
            let core = self.core.clone();
            let d = SendSlices(slices(std::slice::from_ref(&data)));
            let b = SendSlices(slices(&views));
            let id = id.clone();
            let r = py.detach(move || {
                let (d, b) = (d, b);
                core.make_return(&id, kind, d.0[0], &b.0, nested)
            });
            match r {
                Ok(r) => out.push(r),
                Err(e) => {
                    // The value could not be stored (e.g. a full store): the owner gets the error.
                    let body = format!("{{\"type\": \"ObjectStoreFullError\", \"message\": {}}}", ray_core_worker::json_string(&e));
                    out.push(ReturnObject {
                        object_id: ids[i].clone(),
                        value: Some(SerializedObject { kind: ray_core_worker::KIND_SYSTEM_ERROR, data: body.into_bytes(), ..Default::default() }),
                        ..Default::default()
                    });
                }
            }
        }
        let result = TaskResult { task_id: t.spec.task_id.clone(), returns: out, is_error, is_application_error, ..Default::default() };
        self.core.finish_task(&t, result);
        Ok(())
    }

    /// True (once) when `ray.cancel` asked to interrupt this task.
    fn take_cancel(&self, task_id: Vec<u8>) -> bool {
        self.core.take_cancel(&task_id)
    }

    /// Forwards a printed line of the running task to its owner.
    fn log_line(&self, line: String) {
        self.core.log_line(line);
    }

    /// Lines printed by this driver's tasks (waits up to `timeout` seconds for the first).
    fn next_log_lines(&self, py: Python<'_>, timeout: f64) -> Vec<String> {
        let core = self.core.clone();
        py.detach(move || core.next_log_lines(Duration::from_secs_f64(timeout.max(0.0))))
    }

    /// The local node's stats: a dict with num_workers, object_store_used_bytes,
    /// object_store_capacity_bytes, num_objects.
    fn node_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let core = self.core.clone();
        let s = py.detach(move || core.node_stats()).map_err(rt_err)?;
        let d = PyDict::new(py);
        d.set_item("num_workers", s.num_workers)?;
        d.set_item("object_store_used_bytes", s.object_store_used_bytes)?;
        d.set_item("object_store_capacity_bytes", s.object_store_capacity_bytes)?;
        d.set_item("num_objects", s.num_objects)?;
        d.set_item("resources_available", s.resources_available)?;
        Ok(d)
    }

    /// (owned, borrowed) object counts.
    fn object_counts(&self) -> (usize, usize) {
        self.core.object_counts()
    }

    /// Ends this driver's job.
    fn shutdown(&self, py: Python<'_>) {
        let core = self.core.clone();
        py.detach(move || core.shutdown());
        *CURRENT.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// GCS client helpers (KV) for the frontend.
    fn kv_get<'py>(&self, py: Python<'py>, namespace: String, key: Vec<u8>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let core = self.core.clone();
        let rt = crate::runtime::get()?;
        let v = py.detach(move || rt.block_on(core.gcs().kv_get(&namespace, &key))).map_err(|s| rt_err(s.message()))?;
        Ok(v.map(|b| PyBytes::new(py, &b)))
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
