//! The core worker: the Rust half of every driver and worker process.
//!
//! It owns the objects its process creates (reference counted; small values in
//! memory, large ones in the node's shared-memory store), submits tasks by leasing
//! workers from the local raylet and pushing tasks straight to them, executes tasks
//! in workers by handing them to the language runtime, and answers other workers
//! asking for objects it owns. Everything language-specific (pickling, calling the
//! function) stays in the language frontend (the `ray` Python package).

pub mod executor;
pub mod ids;
pub mod layout;
pub mod objects;
pub mod plasma;
pub mod submitter;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use ray_common::ResourceSet;
use ray_common::gcs_client::GcsClient;
use ray_common::rpc::{self, Channel, Security};
use ray_proto::rpc::core_worker_service_client::CoreWorkerServiceClient;
use ray_proto::rpc::core_worker_service_server::CoreWorkerServiceServer;
use ray_proto::rpc::job_info_gcs_service_client::JobInfoGcsServiceClient;
use ray_proto::rpc::node_manager_service_client::NodeManagerServiceClient;
use ray_proto::rpc::*;
use tokio::sync::mpsc;

use crate::executor::{ExecQueue, ExecTask};
use crate::ids::IdGen;
use crate::objects::{ObjectTable, Value};
use crate::plasma::{Pin, PlasmaClient, PlasmaError};
use crate::submitter::{LeaseConn, PumpOut, Submitter, TaskEntry, TaskState};

/// Values up to this size travel inline (in messages, in the owner's memory).
pub const MAX_INLINE_BYTES: usize = 100 * 1024;

/// Kind of a serialized value: a pickled value.
pub const KIND_VALUE: u32 = 0;
/// Kind: a pickled exception raised by a task.
pub const KIND_ERROR: u32 = 1;
/// Kind: an error made by the runtime itself, as JSON `{"type", "message"}`.
pub const KIND_SYSTEM_ERROR: u32 = 3;

/// Driver or worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A user's script.
    Driver,
    /// A process the raylet started to run tasks.
    Worker,
}

/// How to start a core worker.
#[derive(Debug, Clone)]
pub struct Options {
    /// Driver or worker.
    pub mode: Mode,
    /// GCS `host:port`.
    pub gcs_address: String,
    /// Local raylet `host:port`.
    pub raylet_address: String,
    /// This node's IP (the server binds here).
    pub node_ip: IpAddr,
    /// Workers: the job they serve.
    pub job_id: Option<String>,
    /// Worker id (hex).
    pub worker_id: String,
    /// Drivers: argv that starts this job's workers.
    pub worker_command: Vec<String>,
    /// Drivers: the command line, for the job table.
    pub entrypoint: String,
    /// Token and TLS.
    pub security: Security,
}

/// Why the core worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// GCS trouble.
    #[error("{0}")]
    Gcs(String),
    /// Raylet trouble.
    #[error("{0}")]
    Raylet(String),
    /// Server trouble.
    #[error("{0}")]
    Server(String),
}

/// A result of `get`.
pub enum Got {
    /// In memory.
    Inline(Arc<SerializedObject>),
    /// Pinned in the store.
    Plasma(Pin),
}

/// Why `get` failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    /// Some objects were not ready in time.
    #[error("get timed out")]
    Timeout,
    /// Something else.
    #[error("{0}")]
    Other(String),
}

/// An argument as the frontend gives it.
pub enum ArgIn {
    /// A value (serialized).
    Value(SerializedObject),
    /// A reference.
    Ref {
        /// Object id.
        id: Vec<u8>,
        /// Owner address.
        owner: String,
    },
}

/// A task as the frontend submits it.
pub struct SubmitSpec {
    /// Function key in the GCS KV.
    pub function_id: Vec<u8>,
    /// Function name (logs, output prefixes).
    pub function_name: String,
    /// Arguments.
    pub args: Vec<ArgIn>,
    /// Names of keyword arguments (the last ones of `args`).
    pub kwarg_names: Vec<String>,
    /// Number of return objects.
    pub num_returns: u32,
    /// Resources it needs.
    pub resources: ResourceSet,
    /// Retries on worker failure (-1 = unlimited).
    pub max_retries: i64,
    /// Also retry when the task raises.
    pub retry_exceptions: bool,
    /// Refs inside argument values (kept alive until the task ends).
    pub nested_refs: Vec<(Vec<u8>, String)>,
}

struct State {
    objects: ObjectTable,
    submitter: Submitter,
}

/// The core worker of this process.
pub struct CoreWorker {
    mode: Mode,
    rt: tokio::runtime::Handle,
    worker_id: String,
    job_id: String,
    node_id: String,
    address: String,
    gcs: GcsClient,
    raylet: NodeManagerServiceClient<Channel>,
    plasma: PlasmaClient,
    security: Security,
    ids: IdGen,
    state: Mutex<State>,
    /// Workers: tasks for the main thread.
    pub exec: Option<Arc<ExecQueue>>,
    log_tx: mpsc::UnboundedSender<String>,
    log_rx: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
    channels: Mutex<HashMap<String, Channel>>,
    /// Raylets of other nodes that granted us leases (to delete objects there).
    node_raylets: Mutex<HashMap<String, NodeManagerServiceClient<Channel>>>,
    max_inflight: usize,
    lease_linger: Duration,
    interrupt: OnceLock<Box<dyn Fn() + Send + Sync>>,
    /// The task `ray.cancel` asked to interrupt (checked by the signal handler).
    cancel_requested: Mutex<Option<Vec<u8>>>,
    weak: Weak<CoreWorker>,
}

fn system_error(kind: &str, message: &str) -> SerializedObject {
    let body = format!(
        "{{\"type\": {}, \"message\": {}}}",
        json_string(kind),
        json_string(message)
    );
    SerializedObject { kind: KIND_SYSTEM_ERROR, data: body.into_bytes(), buffers: Vec::new(), nested_refs: Vec::new() }
}

/// `s` as a JSON string literal.
pub fn json_string(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

impl CoreWorker {
    /// Connects to the GCS and the raylet, registers, and starts serving.
    pub async fn start(opts: Options) -> Result<Arc<Self>, StartError> {
        let timeout = Duration::from_secs(10);
        let (gcs, _) = GcsClient::connect(&opts.gcs_address, &opts.security, timeout)
            .await
            .map_err(|e| StartError::Gcs(e.to_string()))?;
        let job_id = match (&opts.mode, &opts.job_id) {
            (Mode::Worker, Some(j)) => j.clone(),
            _ => {
                let job = JobInfo {
                    driver_pid: std::process::id(),
                    entrypoint: opts.entrypoint.clone(),
                    start_time_ms: ray_common::time::now_ms(),
                    ..Default::default()
                };
                let ch = opts.security.connect_lazy(&opts.gcs_address, timeout).map_err(|e| StartError::Gcs(e.to_string()))?;
                JobInfoGcsServiceClient::new(ch)
                    .add_job(AddJobRequest { job: Some(job) })
                    .await
                    .map_err(|s| StartError::Gcs(rpc::explain_status(&opts.gcs_address, &s)))?
                    .into_inner()
                    .job_id
            }
        };
        // Our own server first, so the raylet can hand our address to owners.
        let listener = rpc::bind(SocketAddr::new(opts.node_ip, 0)).await.map_err(|e| StartError::Server(e.to_string()))?;
        let local = listener.local_addr().map_err(|e| StartError::Server(e.to_string()))?;
        let address = match local.ip() {
            IpAddr::V6(v6) => format!("[{v6}]:{}", local.port()),
            IpAddr::V4(v4) => format!("{v4}:{}", local.port()),
        };
        let service = executor::Service { core: Arc::new(OnceLock::new()) };
        let router = opts
            .security
            .server_builder()
            .map_err(|e| StartError::Server(rpc::error_chain(&e)))?
            .add_service(CoreWorkerServiceServer::new(service.clone()).max_decoding_message_size(rpc::MAX_MESSAGE_BYTES).max_encoding_message_size(rpc::MAX_MESSAGE_BYTES));
        let incoming = rpc::bounded_incoming(listener, 4096);
        tokio::spawn(async move {
            if let Err(e) = router.serve_with_incoming(incoming).await {
                tracing::error!(error = %rpc::error_chain(&e), "core worker server failed");
            }
        });

        let ch = opts.security.connect(&opts.raylet_address, timeout).await.map_err(|e| StartError::Raylet(e.to_string()))?;
        let raylet = NodeManagerServiceClient::new(ch).max_decoding_message_size(rpc::MAX_MESSAGE_BYTES);
        let reg = RegisterWorkerRequest {
            worker_id: opts.worker_id.clone(),
            pid: std::process::id(),
            address: address.clone(),
            job_id: job_id.clone(),
            is_driver: opts.mode == Mode::Driver,
            worker_command: opts.worker_command.clone(),
        };
        let info = raylet
            .clone()
            .register_worker(reg)
            .await
            .map_err(|s| StartError::Raylet(rpc::explain_status(&opts.raylet_address, &s)))?
            .into_inner();
        let plasma = PlasmaClient::new(raylet.clone(), std::path::Path::new(&info.object_store_path), opts.worker_id.clone())
            .map_err(|e| StartError::Raylet(format!("cannot map the object store {}: {e}", info.object_store_path)))?;
        let cfg = ray_common::config::RayConfig::from_env().unwrap_or_default();
        let (log_tx, log_rx) = mpsc::unbounded_channel();
        let core = Arc::new_cyclic(|weak| CoreWorker {
            mode: opts.mode,
            rt: tokio::runtime::Handle::current(),
            worker_id: opts.worker_id.clone(),
            job_id,
            node_id: info.node_id,
            address,
            gcs,
            raylet,
            plasma,
            security: opts.security.clone(),
            ids: IdGen::new(),
            state: Mutex::new(State { objects: ObjectTable::default(), submitter: Submitter::default() }),
            exec: (opts.mode == Mode::Worker).then(|| Arc::new(ExecQueue::default())),
            log_tx,
            log_rx: Mutex::new(Some(log_rx)),
            channels: Mutex::new(HashMap::new()),
            node_raylets: Mutex::new(HashMap::new()),
            max_inflight: cfg.max_tasks_in_flight_per_worker.max(1),
            lease_linger: Duration::from_millis(cfg.worker_lease_linger_ms),
            interrupt: OnceLock::new(),
            cancel_requested: Mutex::new(None),
            weak: weak.clone(),
        });
        let _ = service.core.set(Arc::downgrade(&core));
        tokio::spawn(sweeper(Arc::downgrade(&core)));
        Ok(core)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn me(&self) -> Arc<CoreWorker> {
        self.weak.upgrade().expect("the core worker is alive while its methods run")
    }

    /// The runtime it runs on.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.rt
    }

    /// Worker id.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// Job id.
    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    /// Node id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// This core worker's address (owners of its objects are reached here).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Driver or worker.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The GCS client.
    pub fn gcs(&self) -> &GcsClient {
        &self.gcs
    }

    /// The store mapping (base, len), for zero-copy checks.
    pub fn store_mapping(&self) -> (usize, usize) {
        (self.plasma.mapping().base(), self.plasma.mapping().len())
    }

    /// Sets how to interrupt the task running on the main thread (`ray.cancel`).
    pub fn set_interrupt(&self, f: Box<dyn Fn() + Send + Sync>) {
        let _ = self.interrupt.set(f);
    }

    // ------------------------------------------------------------ references

    /// A frontend reference to `id` appeared.
    pub fn add_local_ref(&self, id: &[u8], owner: &str) {
        self.state().objects.add_local_ref(id, owner);
    }

    /// A frontend reference to `id` went away.
    pub fn remove_local_ref(&self, id: &[u8]) {
        let freed = self.state().objects.remove_local_ref(id);
        self.delete_freed(freed);
    }

    fn delete_freed(&self, freed: objects::Freed) {
        for (id, node) in freed {
            if node == self.node_id {
                self.plasma.delete(id);
                continue;
            }
            // A large return left on the node that ran the task.
            let raylet = self.node_raylets.lock().unwrap_or_else(|p| p.into_inner()).get(&node).cloned();
            if let Some(mut raylet) = raylet {
                self.rt.spawn(async move {
                    let _ = raylet.delete_objects(DeleteObjectsRequest { object_ids: vec![id] }).await;
                });
            }
        }
    }

    // ------------------------------------------------------------ put

    /// Stores a value; returns its new object id (owned by this worker), with one
    /// local reference already counted for the caller.
    pub fn put(&self, kind: u32, data: &[u8], buffers: &[&[u8]], nested: Vec<(Vec<u8>, String)>) -> Result<Vec<u8>, String> {
        let id = ids::object_id(&self.ids.task_id(), 0);
        let value = self.store_value(&id, kind, data, buffers, nested.clone())?;
        let mut st = self.state();
        st.objects.add_ready(id.clone(), value);
        // The caller's reference, counted before anyone else can see the object.
        st.objects.add_local_ref(&id, "");
        for (inner, _) in &nested {
            st.objects.add_contained(&id, inner);
        }
        Ok(id)
    }

    /// Inline when small, else in the store.
    fn store_value(&self, id: &[u8], kind: u32, data: &[u8], buffers: &[&[u8]], nested: Vec<(Vec<u8>, String)>) -> Result<Value, String> {
        let size = data.len() + buffers.iter().map(|b| b.len()).sum::<usize>();
        if size <= MAX_INLINE_BYTES {
            let nested_refs = nested.into_iter().map(|(object_id, owner_address)| ObjectRefProto { object_id, owner_address }).collect();
            return Ok(Value::Inline(Arc::new(SerializedObject {
                kind,
                data: data.to_vec(),
                buffers: buffers.iter().map(|b| b.to_vec()).collect(),
                nested_refs,
            })));
        }
        self.put_plasma(id, kind, data, buffers).map_err(|e| e.to_string())?;
        Ok(Value::Plasma { node_id: self.node_id.clone() })
    }

    fn put_plasma(&self, id: &[u8], kind: u32, data: &[u8], buffers: &[&[u8]]) -> Result<(), PlasmaError> {
        let lens: Vec<u64> = buffers.iter().map(|b| b.len() as u64).collect();
        let layout = layout::Layout::plan(kind, data.len() as u64, &lens);
        let offset = self.rt.block_on(self.plasma.create(id, layout.total, &self.address))?;
        let written = self.plasma.write(offset, &layout, data, buffers).and_then(|_| self.rt.block_on(self.plasma.seal(id)));
        if written.is_err() {
            // Give the reserved space back.
            self.plasma.delete(id.to_vec());
        }
        written
    }

    // ------------------------------------------------------------ get / wait

    /// Waits for the values of `ids` (all of them, or until `timeout`).
    pub fn get(&self, ids: &[(Vec<u8>, String)], timeout: Option<Duration>) -> Result<Vec<Got>, GetError> {
        let me = self.me();
        let ids = ids.to_vec();
        self.rt.block_on(async move { me.get_async(&ids, timeout).await })
    }

    async fn get_async(&self, ids: &[(Vec<u8>, String)], timeout: Option<Duration>) -> Result<Vec<Got>, GetError> {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut blocked = false;
        let mut out = Vec::with_capacity(ids.len());
        let mut result = Ok(());
        for (id, owner) in ids {
            match self.value_of(id, owner, deadline, &mut blocked).await {
                Ok(v) => out.push(v),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if blocked {
            self.notify_blocked(false).await;
        }
        result.map(|_| out)
    }

    async fn notify_blocked(&self, blocked: bool) {
        if self.mode == Mode::Worker {
            let req = NotifyWorkerBlockedRequest { worker_id: self.worker_id.clone(), blocked };
            let _ = self.raylet.clone().notify_worker_blocked(req).await;
        }
    }

    async fn value_of(&self, id: &[u8], owner: &str, deadline: Option<tokio::time::Instant>, blocked: &mut bool) -> Result<Got, GetError> {
        let value = loop {
            let (owned, notify) = {
                let st = self.state();
                match st.objects.owned_value(id) {
                    Ok(Some(v)) => break v,
                    Ok(None) => (true, st.objects.ready_notify(id)),
                    Err(()) => (false, None),
                }
            };
            if !owned {
                break self.borrowed_value(id, owner, deadline, blocked).await?;
            }
            let Some(notify) = notify else { continue };
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Ok(Some(v)) = self.state().objects.owned_value(id) {
                break v;
            }
            if !*blocked {
                *blocked = true;
                self.notify_blocked(true).await;
            }
            match deadline {
                Some(d) => {
                    if tokio::time::timeout_at(d, notified).await.is_err() {
                        return Err(GetError::Timeout);
                    }
                }
                None => notified.await,
            }
        };
        match value {
            Value::Inline(v) => Ok(Got::Inline(v)),
            Value::Plasma { node_id } => self.plasma_value(id, &node_id).await,
        }
    }

    async fn plasma_value(&self, id: &[u8], node_id: &str) -> Result<Got, GetError> {
        if node_id != self.node_id {
            return Err(GetError::Other(format!(
                "ObjectLostError: object {} is on node {} and moving objects between nodes is not available yet",
                ids::hex(id),
                ray_common::ids::truncate(node_id, 12)
            )));
        }
        let pins = self.plasma.get(&[id.to_vec()], Duration::from_secs(10)).await.map_err(|e| GetError::Other(e.to_string()))?;
        pins.into_iter()
            .next()
            .flatten()
            .map(Got::Plasma)
            .ok_or_else(|| GetError::Other(format!("ObjectLostError: object {} is no longer in the object store", ids::hex(id))))
    }

    /// A channel to another process of the cluster, cached by address.
    async fn channel_to(&self, addr: &str) -> Result<Channel, String> {
        let cached = self.channels.lock().unwrap_or_else(|p| p.into_inner()).get(addr).cloned();
        if let Some(c) = cached {
            return Ok(c);
        }
        let c = self.security.connect(addr, Duration::from_secs(5)).await.map_err(|e| e.to_string())?;
        self.channels.lock().unwrap_or_else(|p| p.into_inner()).insert(addr.to_string(), c.clone());
        Ok(c)
    }

    async fn owner_client(&self, owner: &str) -> Result<CoreWorkerServiceClient<Channel>, GetError> {
        let ch = self
            .channel_to(owner)
            .await
            .map_err(|e| GetError::Other(format!("OwnerDiedError: cannot reach the owner at {owner}: {e}")))?;
        Ok(CoreWorkerServiceClient::new(ch).max_decoding_message_size(rpc::MAX_MESSAGE_BYTES))
    }

    async fn borrowed_value(&self, id: &[u8], owner: &str, deadline: Option<tokio::time::Instant>, blocked: &mut bool) -> Result<Value, GetError> {
        let (owner, cached) = {
            let st = self.state();
            st.objects.borrowed_owner(id).unwrap_or((owner.to_string(), None))
        };
        if let Some(v) = cached {
            return Ok(v);
        }
        if owner.is_empty() || owner == self.address {
            return Err(GetError::Other(format!("ObjectLostError: object {} was freed", ids::hex(id))));
        }
        let mut client = self.owner_client(&owner).await?;
        loop {
            let wait = match deadline {
                Some(d) => d.saturating_duration_since(tokio::time::Instant::now()).min(Duration::from_secs(5)),
                None => Duration::from_secs(5),
            };
            let r = client
                .get_object_status(GetObjectStatusRequest { object_id: id.to_vec(), timeout_ms: wait.as_millis() as u64 })
                .await
                .map_err(|s| GetError::Other(format!("OwnerDiedError: the owner at {owner} of object {} is gone: {}", ids::hex(id), s.message())))?
                .into_inner();
            let v = match r.status {
                1 => Value::Inline(Arc::new(r.value.unwrap_or_default())),
                2 => Value::Plasma { node_id: r.plasma_node_id },
                3 => return Err(GetError::Other(format!("ObjectLostError: object {} was freed by its owner", ids::hex(id)))),
                _ => {
                    if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                        return Err(GetError::Timeout);
                    }
                    if !*blocked {
                        *blocked = true;
                        self.notify_blocked(true).await;
                    }
                    continue;
                }
            };
            self.state().objects.cache_borrowed(id, v.clone());
            return Ok(v);
        }
    }

    /// What a borrower asking for `id` gets (waiting up to `timeout` if pending).
    pub async fn object_status(&self, id: &[u8], timeout: Duration) -> GetObjectStatusReply {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (v, notify) = {
                let st = self.state();
                match st.objects.owned_value(id) {
                    Ok(Some(v)) => (Some(v), None),
                    Ok(None) => (None, st.objects.ready_notify(id)),
                    Err(()) => return GetObjectStatusReply { status: 3, ..Default::default() },
                }
            };
            match v {
                Some(Value::Inline(v)) => return GetObjectStatusReply { status: 1, value: Some((*v).clone()), plasma_node_id: String::new() },
                Some(Value::Plasma { node_id }) => return GetObjectStatusReply { status: 2, value: None, plasma_node_id: node_id },
                None => {}
            }
            let Some(n) = notify else { continue };
            let notified = n.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.state().objects.owned_value(id).ok().flatten().is_some() {
                continue;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return GetObjectStatusReply { status: 0, ..Default::default() };
            }
        }
    }

    /// Which of `ids` are ready, waiting until `num_returns` are or `timeout`.
    pub fn wait(&self, ids: &[(Vec<u8>, String)], num_returns: usize, timeout: Option<Duration>) -> Vec<bool> {
        let me = self.me();
        let ids = ids.to_vec();
        self.rt.block_on(async move {
            let deadline = timeout.map(|t| Instant::now() + t);
            let mut blocked = false;
            loop {
                let ready: Vec<bool> = {
                    let mut out = Vec::with_capacity(ids.len());
                    for (id, owner) in &ids {
                        out.push(me.is_ready(id, owner).await);
                    }
                    out
                };
                let n = ready.iter().filter(|r| **r).count();
                if n >= num_returns || deadline.is_some_and(|d| Instant::now() >= d) {
                    if blocked {
                        me.notify_blocked(false).await;
                    }
                    return ready;
                }
                if !blocked {
                    blocked = true;
                    me.notify_blocked(true).await;
                }
                // Owned objects wake us; borrowed ones are polled.
                let notifies: Vec<_> = {
                    let st = me.state();
                    ids.iter().filter_map(|(id, _)| st.objects.ready_notify(id)).collect()
                };
                let wait = deadline.map(|d| d.saturating_duration_since(Instant::now())).unwrap_or(Duration::from_secs(3600)).min(Duration::from_millis(50));
                type Fut<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;
                let mut futs: Vec<Fut<'_>> = notifies.iter().map(|n| Box::pin(n.notified()) as Fut<'_>).collect();
                futs.push(Box::pin(tokio::time::sleep(wait)));
                let _ = futures::future::select_all(futs).await;
            }
        })
    }

    async fn is_ready(&self, id: &[u8], owner: &str) -> bool {
        let owned = self.state().objects.owned_value(id);
        match owned {
            Ok(v) => v.is_some(),
            Err(()) => {
                let Ok(mut c) = self.owner_client(owner).await else { return true };
                match c.get_object_status(GetObjectStatusRequest { object_id: id.to_vec(), timeout_ms: 0 }).await {
                    Ok(r) => r.into_inner().status != 0,
                    Err(_) => true,
                }
            }
        }
    }

    // ------------------------------------------------------------ submission

    /// Submits a task; returns its return object ids (owned by this worker), each
    /// with one local reference already counted for the caller.
    pub fn submit(&self, spec: SubmitSpec) -> Vec<Vec<u8>> {
        let task_id = self.ids.task_id();
        let returns: Vec<Vec<u8>> = (1..=spec.num_returns.max(1)).map(|i| ids::object_id(&task_id, i)).collect();
        let mut args = Vec::with_capacity(spec.args.len());
        let mut held = Vec::new();
        let mut waiting = Vec::new();
        let mut st = self.state();
        for (i, a) in spec.args.into_iter().enumerate() {
            match a {
                ArgIn::Value(v) => args.push(TaskArg { arg: Some(task_arg::Arg::Value(v)) }),
                ArgIn::Ref { id, owner } => {
                    if st.objects.is_owned(&id) {
                        st.objects.add_task_ref(&id);
                        held.push(id.clone());
                        if let Ok(None) = st.objects.owned_value(&id) {
                            waiting.push((i, id.clone()));
                        }
                    }
                    args.push(TaskArg { arg: Some(task_arg::Arg::PlasmaRef(ObjectRefProto { object_id: id, owner_address: owner })) });
                }
            }
        }
        for (id, _) in &spec.nested_refs {
            if st.objects.is_owned(id) {
                st.objects.add_task_ref(id);
                held.push(id.clone());
            }
        }
        for r in &returns {
            st.objects.add_pending(r.clone());
            // The caller's reference, counted under the same lock: a fast task's result
            // must not find the object unreferenced and free it.
            st.objects.add_local_ref(r, "");
        }
        let proto = TaskSpec {
            task_id: task_id.clone(),
            job_id: self.job_id.clone(),
            function_id: spec.function_id,
            function_name: spec.function_name,
            args,
            kwarg_names: spec.kwarg_names,
            num_returns: spec.num_returns.max(1),
            return_ids: returns.clone(),
            owner_address: self.address.clone(),
            attempt: 0,
            resources: spec.resources.to_f64_map(),
        };
        st.submitter.tasks.insert(
            task_id.clone(),
            TaskEntry {
                spec: proto,
                shape: spec.resources,
                retries_left: spec.max_retries,
                retry_exceptions: spec.retry_exceptions,
                held,
                state: TaskState::Resolving,
                cancelled: false,
            },
        );
        if waiting.is_empty() {
            self.resolve_args(&mut st, &task_id);
            let out = st.submitter.enqueue(&task_id, self.max_inflight);
            drop(st);
            self.act(out);
        } else {
            drop(st);
            let me = self.me();
            self.rt.spawn(async move {
                for (_, id) in waiting {
                    let n = me.state().objects.ready_notify(&id);
                    if let Some(n) = n {
                        let notified = n.notified();
                        tokio::pin!(notified);
                        notified.as_mut().enable();
                        if me.state().objects.owned_value(&id).ok().flatten().is_none() {
                            notified.await;
                        }
                    }
                }
                let out = {
                    let mut st = me.state();
                    me.resolve_args(&mut st, &task_id);
                    st.submitter.enqueue(&task_id, me.max_inflight)
                };
                me.act(out);
            });
        }
        returns
    }

    /// Inlines owned, ready, small arguments into the spec (Ray's dependency
    /// resolution): the worker then needs no round trip for them.
    fn resolve_args(&self, st: &mut State, task_id: &[u8]) {
        let State { objects, submitter } = st;
        if let Some(t) = submitter.tasks.get_mut(task_id) {
            for a in t.spec.args.iter_mut() {
                if let Some(task_arg::Arg::PlasmaRef(r)) = &a.arg
                    && let Ok(Some(Value::Inline(v))) = objects.owned_value(&r.object_id)
                {
                    a.arg = Some(task_arg::Arg::Value((*v).clone()));
                }
            }
        }
    }

    fn act(&self, out: PumpOut) {
        for shape in out.request_leases {
            let me = self.me();
            self.rt.spawn(async move { me.request_lease(shape).await });
        }
        for shape in out.cancel_requests {
            let mut raylet = self.raylet.clone();
            let req = CancelWorkerLeaseRequest { owner_worker_id: self.worker_id.clone(), resources: shape.to_f64_map() };
            self.rt.spawn(async move {
                let _ = raylet.cancel_worker_lease(req).await;
            });
        }
    }

    async fn request_lease(self: Arc<Self>, shape: ResourceSet) {
        // Idle leases of other shapes go back first, so this request can get their resources.
        let idle = self.state().submitter.idle_leases(Duration::ZERO, Some(&shape));
        for key in idle {
            self.return_lease(key, false).await;
        }
        let mut raylet = self.raylet.clone();
        let mut granting_node = self.node_id.clone();
        let mut no_spillback = false;
        let mut reply;
        let mut hops = 0;
        loop {
            let req = RequestWorkerLeaseRequest {
                resources: shape.to_f64_map(),
                job_id: self.job_id.clone(),
                owner_worker_id: self.worker_id.clone(),
                wait: true,
                no_spillback,
            };
            reply = raylet.request_worker_lease(req).await;
            // Spillback: that node has the resources free; ask its raylet.
            let target = match &reply {
                Ok(r) if !r.get_ref().spillback_address.is_empty() && hops < 4 => r.get_ref().spillback_address.clone(),
                _ => break,
            };
            hops += 1;
            let target_node = reply.as_ref().map(|r| r.get_ref().spillback_node_id.clone()).unwrap_or_default();
            match self.channel_to(&target).await {
                Ok(ch) => {
                    raylet = NodeManagerServiceClient::new(ch).max_decoding_message_size(rpc::MAX_MESSAGE_BYTES);
                    granting_node = target_node;
                    no_spillback = true;
                }
                Err(e) => {
                    tracing::warn!(raylet = %target, error = %e, "cannot reach the raylet a lease was spilled to");
                    raylet = self.raylet.clone();
                    granting_node = self.node_id.clone();
                    no_spillback = false;
                }
            }
        }
        let reply = match reply {
            Ok(r) if r.get_ref().rejection.is_empty() && r.get_ref().spillback_address.is_empty() => r.into_inner(),
            other => {
                if let Ok(r) = &other
                    && r.get_ref().infeasible
                {
                    tracing::warn!(shape = %shape, "no node can hold this shape: {}", r.get_ref().rejection);
                }
                let out = {
                    let mut st = self.state();
                    if let Some(c) = st.submitter.classes.get_mut(&shape) {
                        c.requests_inflight = c.requests_inflight.saturating_sub(1);
                    }
                    st.submitter.pump(&shape, self.max_inflight)
                };
                if !out.request_leases.is_empty() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                self.act(out);
                return;
            }
        };
        if granting_node != self.node_id {
            self.node_raylets.lock().unwrap_or_else(|p| p.into_inner()).insert(granting_node, raylet.clone());
        }
        let connected = self.open_stream(&reply.worker_address, &reply.lease_id).await;
        let (tx, stream) = match connected {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(worker = %reply.worker_address, error = %e, "cannot reach a leased worker; returning it");
                let _ = raylet.return_worker(ReturnWorkerRequest { lease_id: reply.lease_id, disconnect: true }).await;
                let out = {
                    let mut st = self.state();
                    if let Some(c) = st.submitter.classes.get_mut(&shape) {
                        c.requests_inflight = c.requests_inflight.saturating_sub(1);
                    }
                    st.submitter.pump(&shape, self.max_inflight)
                };
                self.act(out);
                return;
            }
        };
        let (key, out) = {
            let mut st = self.state();
            let key = st.submitter.next_key();
            let class = st.submitter.classes.entry(shape.clone()).or_default();
            class.requests_inflight = class.requests_inflight.saturating_sub(1);
            class.leases.push(LeaseConn {
                key,
                lease_id: reply.lease_id.clone(),
                worker_addr: reply.worker_address.clone(),
                worker_pid: reply.worker_pid,
                raylet: raylet.clone(),
                tx,
                inflight: Default::default(),
                idle_since: Some(Instant::now()),
            });
            (key, st.submitter.pump(&shape, self.max_inflight))
        };
        self.act(out);
        let me = self.clone();
        tokio::spawn(async move { me.read_results(key, shape, stream).await });
    }

    async fn open_stream(&self, addr: &str, lease_id: &str) -> Result<(mpsc::UnboundedSender<PushTasksRequest>, tonic::Streaming<PushTasksReply>), String> {
        let mut client = self.owner_client(addr).await.map_err(|e| e.to_string())?;
        let (tx, rx) = mpsc::unbounded_channel();
        let mut req = tonic::Request::new(tokio_stream::wrappers::UnboundedReceiverStream::new(rx));
        if let Ok(v) = tonic::metadata::MetadataValue::try_from(lease_id) {
            req.metadata_mut().insert(executor::LEASE_HEADER, v);
        }
        let resp = client.push_tasks(req).await.map_err(|s| s.message().to_string())?;
        Ok((tx, resp.into_inner()))
    }

    /// A worker's task stream closed: tell the raylet (it ends the lease if the
    /// owner did not return it first).
    pub async fn lease_stream_closed(&self, lease_id: String) {
        let _ = self.raylet.clone().lease_stream_closed(LeaseStreamClosedRequest { lease_id }).await;
    }

    async fn read_results(self: Arc<Self>, key: u64, shape: ResourceSet, mut stream: tonic::Streaming<PushTasksReply>) {
        let why = loop {
            match stream.message().await {
                Ok(Some(m)) => {
                    for l in m.log_lines {
                        let _ = self.log_tx.send(l);
                    }
                    if let Some(r) = m.result {
                        self.on_result(key, &shape, r);
                    }
                }
                Ok(None) => break "the worker closed its task stream".to_string(),
                Err(s) => break s.message().to_string(),
            }
        };
        self.on_lease_broken(key, &why).await;
    }

    fn on_result(&self, key: u64, shape: &ResourceSet, r: TaskResult) {
        let mut freed = Vec::new();
        let out = {
            let mut st = self.state();
            let mut took = None;
            if let Some(l) = st.submitter.lease_mut(shape, key) {
                took = l.inflight.remove(&r.task_id).map(|t| t.elapsed().as_secs_f64() * 1e3);
                if l.inflight.is_empty() {
                    l.idle_since = Some(Instant::now());
                }
            }
            if let (Some(ms), Some(c)) = (took, st.submitter.classes.get_mut(shape)) {
                c.record(ms);
            }
            let retry = st.submitter.tasks.get_mut(&r.task_id).is_some_and(|t| {
                let again = r.is_error && r.is_application_error && t.retry_exceptions && t.retries_left != 0 && !t.cancelled;
                if again {
                    if t.retries_left > 0 {
                        t.retries_left -= 1;
                    }
                    t.spec.attempt += 1;
                }
                again
            });
            if retry {
                tracing::info!(task = %ids::hex(&r.task_id), "retrying a task that raised (retry_exceptions)");
                let mut out = st.submitter.enqueue(&r.task_id, self.max_inflight);
                let more = st.submitter.pump(shape, self.max_inflight);
                out.request_leases.extend(more.request_leases);
                out
            } else {
                let cancelled = r.cancelled;
                let task = st.submitter.tasks.remove(&r.task_id);
                if let Some(t) = task {
                    if cancelled {
                        for id in &t.spec.return_ids {
                            freed.extend(st.objects.set_value(id, Value::Inline(Arc::new(system_error("TaskCancelledError", "the task was cancelled")))));
                        }
                    } else {
                        for ret in r.returns {
                            let mut nested: Vec<Vec<u8>> = ret.nested_refs.iter().map(|n| n.object_id.clone()).collect();
                            if let Some(v) = &ret.value {
                                nested.extend(v.nested_refs.iter().map(|n| n.object_id.clone()));
                            }
                            // Refs the value holds to our objects (a task returning its argument)
                            // keep those objects alive as long as the value.
                            for inner in &nested {
                                st.objects.add_contained(&ret.object_id, inner);
                            }
                            let v = if ret.in_plasma {
                                Value::Plasma { node_id: ret.plasma_node_id }
                            } else {
                                Value::Inline(Arc::new(ret.value.unwrap_or_default()))
                            };
                            freed.extend(st.objects.set_value(&ret.object_id, v));
                        }
                    }
                    for id in &t.held {
                        freed.extend(st.objects.remove_task_ref(id));
                    }
                }
                st.submitter.pump(shape, self.max_inflight)
            }
        };
        self.delete_freed(freed);
        self.act(out);
    }

    async fn on_lease_broken(&self, key: u64, why: &str) {
        let removed = self.state().submitter.remove_lease(key);
        let Some((shape, lease)) = removed else { return };
        let _ = lease.raylet.clone().return_worker(ReturnWorkerRequest { lease_id: lease.lease_id.clone(), disconnect: true }).await;
        if lease.inflight.is_empty() {
            return;
        }
        let mut freed = Vec::new();
        let out = {
            let mut st = self.state();
            let mut requeue = Vec::new();
            for tid in lease.inflight.keys() {
                let Some(t) = st.submitter.tasks.get_mut(tid) else { continue };
                if !t.cancelled && t.retries_left != 0 {
                    if t.retries_left > 0 {
                        t.retries_left -= 1;
                    }
                    t.spec.attempt += 1;
                    tracing::warn!(task = %ids::hex(tid), function = %t.spec.function_name, worker_pid = lease.worker_pid, "the worker died ({why}); retrying the task");
                    requeue.push(tid.clone());
                } else {
                    let Some(t) = st.submitter.tasks.remove(tid) else { continue };
                    let err = if t.cancelled {
                        system_error("TaskCancelledError", "the task was cancelled")
                    } else {
                        system_error(
                            "WorkerCrashedError",
                            &format!(
                                "The worker died unexpectedly while executing this task ({}, pid {}): {why}. Check the worker's log in the session's logs folder.",
                                t.spec.function_name, lease.worker_pid
                            ),
                        )
                    };
                    for id in &t.spec.return_ids {
                        freed.extend(st.objects.set_value(id, Value::Inline(Arc::new(err.clone()))));
                    }
                    for id in &t.held {
                        freed.extend(st.objects.remove_task_ref(id));
                    }
                }
            }
            let mut out = PumpOut::default();
            for tid in requeue {
                let more = st.submitter.enqueue(&tid, self.max_inflight);
                out.request_leases.extend(more.request_leases);
            }
            let more = st.submitter.pump(&shape, self.max_inflight);
            out.request_leases.extend(more.request_leases);
            out
        };
        self.delete_freed(freed);
        self.act(out);
    }

    /// Returns an idle lease. It is removed only if it is still idle under the lock
    /// (a task may have been pushed since it was found idle); the raylet hears of
    /// the return before the task stream closes, so the worker never looks orphaned.
    async fn return_lease(&self, key: u64, disconnect: bool) {
        let removed = {
            let mut st = self.state();
            let idle = st
                .submitter
                .classes
                .values()
                .flat_map(|c| c.leases.iter())
                .any(|l| l.key == key && l.inflight.is_empty());
            if idle { st.submitter.remove_lease(key) } else { None }
        };
        if let Some((_, lease)) = removed {
            let _ = lease.raylet.clone().return_worker(ReturnWorkerRequest { lease_id: lease.lease_id, disconnect }).await;
            drop(lease.tx);
        }
    }

    /// Cancels the task producing `object_id`.
    pub fn cancel(&self, object_id: &[u8], force: bool) -> Result<(), String> {
        let task_id = ids::task_of(object_id).to_vec();
        let (pushed_to, freed) = {
            let mut st = self.state();
            let Some(t) = st.submitter.tasks.get_mut(&task_id) else { return Ok(()) };
            t.cancelled = true;
            match t.state.clone() {
                TaskState::Pushed(key) => {
                    let shape = t.shape.clone();
                    let addr = st.submitter.lease_mut(&shape, key).map(|l| l.worker_addr.clone());
                    (addr, Vec::new())
                }
                _ => {
                    let t = st.submitter.tasks.remove(&task_id).expect("present");
                    let mut freed = Vec::new();
                    for id in &t.spec.return_ids {
                        freed.extend(st.objects.set_value(id, Value::Inline(Arc::new(system_error("TaskCancelledError", "the task was cancelled before it ran")))));
                    }
                    for id in &t.held {
                        freed.extend(st.objects.remove_task_ref(id));
                    }
                    (None, freed)
                }
            }
        };
        self.delete_freed(freed);
        if let Some(addr) = pushed_to {
            let me = self.me();
            self.rt.block_on(async move {
                let mut c = me.owner_client(&addr).await.map_err(|e| e.to_string())?;
                c.cancel_task(CancelTaskRequest { task_id, force }).await.map_err(|s| s.message().to_string())?;
                Ok::<(), String>(())
            })?;
        }
        Ok(())
    }

    /// A worker's side of `ray.cancel`: drop a queued task, or interrupt (or, with
    /// `force`, exit on) the running one.
    pub fn cancel_local(&self, task_id: &[u8], force: bool) -> bool {
        let Some(exec) = &self.exec else { return false };
        if let Some(t) = exec.remove(task_id) {
            let _ = t.reply.send(Ok(PushTasksReply {
                result: Some(TaskResult { task_id: task_id.to_vec(), cancelled: true, ..Default::default() }),
                ..Default::default()
            }));
            return true;
        }
        let running = exec.current.lock().unwrap_or_else(|p| p.into_inner()).as_ref().is_some_and(|(id, _)| id == task_id);
        if running {
            if force {
                tracing::info!("force-cancelled: exiting");
                std::process::exit(1);
            }
            *self.cancel_requested.lock().unwrap_or_else(|p| p.into_inner()) = Some(task_id.to_vec());
            if let Some(f) = self.interrupt.get() {
                f();
            }
            return true;
        }
        false
    }

    // ------------------------------------------------------------ execution (workers)

    /// True (once) when `ray.cancel` asked to interrupt `task_id`: the worker's
    /// SIGINT handler raises KeyboardInterrupt only then, and only in user code.
    pub fn take_cancel(&self, task_id: &[u8]) -> bool {
        let mut c = self.cancel_requested.lock().unwrap_or_else(|p| p.into_inner());
        if c.as_deref() == Some(task_id) {
            *c = None;
            true
        } else {
            false
        }
    }

    /// The next task for the main thread (waits up to `timeout`).
    pub fn next_task(&self, timeout: Duration) -> Option<ExecTask> {
        let exec = self.exec.as_ref()?;
        let t = exec.pop(timeout)?;
        *exec.current.lock().unwrap_or_else(|p| p.into_inner()) = Some((t.spec.task_id.clone(), t.reply.clone()));
        Some(t)
    }

    /// A return value of a task, stored the way its size asks for. Objects this
    /// worker owns that the value refers to are kept for the worker's lifetime:
    /// the task's owner may read them after the task's own references are gone
    /// (a full borrower protocol would release them once the caller drops them).
    pub fn make_return(&self, id: &[u8], kind: u32, data: &[u8], buffers: &[&[u8]], nested: Vec<(Vec<u8>, String)>) -> Result<ReturnObject, String> {
        {
            let mut st = self.state();
            for (nid, _) in &nested {
                if st.objects.is_owned(nid) {
                    st.objects.add_task_ref(nid);
                }
            }
        }
        let size = data.len() + buffers.iter().map(|b| b.len()).sum::<usize>();
        let nested_protos: Vec<ObjectRefProto> =
            nested.iter().map(|(object_id, owner_address)| ObjectRefProto { object_id: object_id.clone(), owner_address: owner_address.clone() }).collect();
        match self.store_value(id, kind, data, buffers, nested)? {
            Value::Inline(v) => Ok(ReturnObject {
                object_id: id.to_vec(),
                value: Some((*v).clone()),
                in_plasma: false,
                plasma_node_id: String::new(),
                size: size as u64,
                nested_refs: Vec::new(),
            }),
            Value::Plasma { node_id } => Ok(ReturnObject {
                object_id: id.to_vec(),
                value: None,
                in_plasma: true,
                plasma_node_id: node_id,
                size: size as u64,
                nested_refs: nested_protos,
            }),
        }
    }

    /// Sends a finished task's result to its owner.
    pub fn finish_task(&self, task: &ExecTask, result: TaskResult) {
        if let Some(exec) = &self.exec {
            *exec.current.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
        let _ = task.reply.send(Ok(PushTasksReply { result: Some(result), log_lines: Vec::new(), pid: std::process::id() }));
    }

    /// A line printed by the running task, for its owner's console.
    pub fn log_line(&self, line: String) {
        if let Some(exec) = &self.exec
            && let Some((_, reply)) = exec.current.lock().unwrap_or_else(|p| p.into_inner()).as_ref()
        {
            let _ = reply.send(Ok(PushTasksReply { result: None, log_lines: vec![line], pid: std::process::id() }));
        }
    }

    /// Lines printed by this driver's tasks, as they arrive (waits up to `timeout`).
    pub fn next_log_lines(&self, timeout: Duration) -> Vec<String> {
        let rx = self.log_rx.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(mut rx) = rx else { return Vec::new() };
        let mut out = Vec::new();
        self.rt.block_on(async {
            if let Ok(Some(l)) = tokio::time::timeout(timeout, rx.recv()).await {
                out.push(l);
                while let Ok(l) = rx.try_recv() {
                    out.push(l);
                }
            }
        });
        *self.log_rx.lock().unwrap_or_else(|p| p.into_inner()) = Some(rx);
        out
    }

    /// Stores a pickled function under its id (once per function).
    pub fn export_function(&self, id: &[u8], body: Vec<u8>) -> Result<(), String> {
        let key = [self.job_id.as_bytes(), b":", id].concat();
        self.rt.block_on(self.gcs.kv_put("fun", &key, body)).map_err(|s| s.message().to_string())
    }

    /// Reads a pickled function.
    pub fn fetch_function(&self, job_id: &str, id: &[u8]) -> Result<Vec<u8>, String> {
        let key = [job_id.as_bytes(), b":", id].concat();
        self.rt
            .block_on(self.gcs.kv_get("fun", &key))
            .map_err(|s| s.message().to_string())?
            .ok_or_else(|| format!("function {} of job {job_id} is not registered", ids::hex(id)))
    }

    /// Ends this driver's job: leases back, the job marked finished.
    pub fn shutdown(&self) {
        let keys: Vec<u64> = {
            let st = self.state();
            st.submitter.classes.values().flat_map(|c| c.leases.iter().map(|l| l.key)).collect()
        };
        let me = self.me();
        self.rt.block_on(async move {
            for k in keys {
                me.return_lease(k, false).await;
            }
            if me.mode == Mode::Driver
                && let Ok(ch) = me.security.connect_lazy(me.gcs.addr(), Duration::from_secs(2))
            {
                let _ = tokio::time::timeout(
                    Duration::from_secs(2),
                    JobInfoGcsServiceClient::new(ch).mark_job_finished(MarkJobFinishedRequest { job_id: me.job_id.clone() }),
                )
                .await;
            }
        });
    }

    /// The local raylet's stats (workers, object store use).
    pub fn node_stats(&self) -> Result<GetNodeStatsReply, String> {
        let mut r = self.raylet.clone();
        self.rt.block_on(r.get_node_stats(GetNodeStatsRequest {})).map(|r| r.into_inner()).map_err(|s| s.message().to_string())
    }

    /// Counts of owned and borrowed objects (tests and debugging).
    pub fn object_counts(&self) -> (usize, usize) {
        let st = self.state();
        (st.objects.len_owned(), st.objects.len_borrowed())
    }
}

/// Returns leases idle past the linger time.
async fn sweeper(weak: Weak<CoreWorker>) {
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tick.tick().await;
        let Some(core) = weak.upgrade() else { return };
        let idle = core.state().submitter.idle_leases(core.lease_linger, None);
        for key in idle {
            core.return_lease(key, false).await;
        }
    }
}
