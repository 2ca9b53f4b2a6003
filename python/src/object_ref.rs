//! `ObjectRef` (a reference counted by its process's core worker) and
//! `PlasmaBuffer` (a zero-copy, read-only view of an object in the node's
//! shared-memory store).

use std::ffi::{c_int, c_void};
use std::sync::{Arc, Mutex};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use ray_common::ObjectId;
use ray_core_worker::{CoreWorker as Core, Reference};

/// The core worker of this process, for ObjectRef reference counting.
static CURRENT: Mutex<Option<Arc<Core>>> = Mutex::new(None);

/// The current core worker, if this process is connected.
pub fn current() -> Option<Arc<Core>> {
    CURRENT.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Sets (or clears) the current core worker.
pub fn set_current(core: Option<Arc<Core>>) {
    *CURRENT.lock().unwrap_or_else(|p| p.into_inner()) = core;
}

/// A reference to an object, counted by its process's core worker. Named
/// `ray.ObjectRef`, as Ray's (in messages and reprs of its type).
#[pyclass(module = "ray", frozen, eq, hash)]
pub struct ObjectRef {
    r: Reference,
    core: Option<Arc<Core>>,
}

impl PartialEq for ObjectRef {
    fn eq(&self, other: &Self) -> bool {
        self.r.id == other.r.id
    }
}

impl std::hash::Hash for ObjectRef {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.r.id.hash(state)
    }
}

impl ObjectRef {
    /// Takes over a reference the core worker already counted.
    pub fn adopt(id: ObjectId, owner: String, core: Arc<Core>) -> Self {
        Self { r: Reference { id, owner }, core: Some(core) }
    }

    /// A new reference, counted by the current core worker (if any).
    pub fn new(r: Reference) -> Self {
        let core = current();
        if let Some(c) = &core {
            c.add_local_ref(&r);
        }
        Self { r, core }
    }

    /// The id and the owner's address.
    pub fn reference(&self) -> &Reference {
        &self.r
    }
}

impl Drop for ObjectRef {
    fn drop(&mut self) {
        if let Some(c) = &self.core {
            c.remove_local_ref(self.r.id);
        }
    }
}

/// Parses an object id given by Python.
pub fn object_id(bytes: &[u8]) -> PyResult<ObjectId> {
    ObjectId::from_bytes(bytes).map_err(|e| PyValueError::new_err(e.to_string()))
}

#[pymethods]
impl ObjectRef {
    /// Rebuilds a ref from its pickled form (a borrowed reference).
    #[staticmethod]
    fn _from_pickle(id: Vec<u8>, owner: String) -> PyResult<Self> {
        Ok(Self::new(Reference { id: object_id(&id)?, owner }))
    }

    /// The id as hex.
    fn hex(&self) -> String {
        self.r.id.to_string()
    }

    /// The id as bytes.
    fn binary<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.r.id.as_bytes())
    }

    /// Where the owner's core worker listens.
    fn owner_address(&self) -> String {
        self.r.owner.clone()
    }

    /// The id of the task that returns this object.
    fn task_id(&self) -> String {
        self.r.id.task_id().to_string()
    }

    fn __repr__(&self) -> String {
        format!("ObjectRef({})", self.r.id)
    }

    /// `await ref` in asyncio code (async actors, async drivers).
    fn __await__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        slf.py().import("ray._private.async_compat")?.call_method1("await_ref", (slf,))
    }

    /// An asyncio future of the value (Ray's `ObjectRef.as_future()`).
    fn as_future<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        slf.py().import("ray._private.async_compat")?.call_method1("as_future", (slf,))
    }

    /// A concurrent.futures future of the value (Ray's `ObjectRef.future()`).
    fn future<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        slf.py().import("ray._private.async_compat")?.call_method1("concurrent_future", (slf,))
    }

    /// Pickling outside Ray's own serializer (plain `pickle`, `ray.cloudpickle`):
    /// nobody can track where the bytes go, so the object is kept for the life
    /// of this process, as Ray does for out-of-band serialized refs.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Reduced<'py>> {
        let py = slf.py();
        let f = slf.get_type().getattr("_from_pickle")?;
        let me = slf.get();
        if let Some(core) = &me.core {
            core.add_local_ref(&me.r);
        }
        Ok((f, (PyBytes::new(py, me.r.id.as_bytes()), me.r.owner.clone())))
    }
}

/// `__reduce__`'s answer: the rebuild function and its arguments.
type Reduced<'py> = (Bound<'py, PyAny>, (Bound<'py, PyBytes>, String));

/// A read-only view of part of an object in the shared-memory store. The object
/// stays pinned while any view (or any numpy array built on one) is alive.
#[pyclass(module = "ray._raylet", frozen)]
pub struct PlasmaBuffer {
    pub(crate) pin: Arc<ray_core_worker::plasma::Pin>,
    pub(crate) offset: u64,
    pub(crate) len: u64,
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
