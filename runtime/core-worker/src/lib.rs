//! The core worker: the Rust half of every driver and worker process.
//!
//! Its parts, each a module with a narrow API:
//! - [`ownership`]: the objects this process owns and borrows, reference counts,
//!   and where values live (inline, or in the node's shared-memory store);
//! - [`reader`]: `get` and `wait`, borrowing from other owners, and answering
//!   borrowers of owned objects;
//! - [`submitter`]: task submission over leased workers (queues, leases,
//!   spillback, results, retries, cancel);
//! - [`executor`]: the worker side, handing tasks to the language runtime;
//! - `startup` and `server`: start-up and the gRPC service.
//!
//! [`CoreWorker`] is the facade the language frontend (the `ray` Python package)
//! calls; everything language-specific (pickling, calling the function) stays there.

pub mod actors;
mod context;
pub mod error;
mod executor;
mod functions;
pub mod generators;
pub mod ids;
pub mod layout;
pub mod objects;
pub mod ownership;
pub mod plasma;
pub mod reader;
mod server;
mod startup;
pub mod submitter;
mod task_events;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ray_common::gcs_client::GcsClient;
use ray_common::{JobId, NodeId, ObjectId, TaskId, WorkerId};
use ray_proto::rpc::job_info_gcs_service_client::JobInfoGcsServiceClient;
use ray_proto::rpc::{GetNodeStatsReply, GetNodeStatsRequest, MarkJobFinishedRequest, ReturnObject, TaskResult};
use tokio::sync::mpsc;

pub use context::Mode;
pub use error::{CoreError, KIND_ERROR, KIND_SYSTEM_ERROR, KIND_VALUE, SystemErrorKind};
pub use executor::ExecTask;
pub use ownership::{MAX_INLINE_BYTES, Reference, Serialized};
pub use reader::Got;
pub use startup::{Options, StartError};
pub use actors::{ActorCallSpec, ActorCreateSpec, Created};
pub use submitter::{ArgIn, SubmitSpec, Strategy};

use context::Context;
use executor::Executor;
use ownership::Ownership;
use reader::Reader;
use submitter::Submitter;

/// The core worker of this process.
pub struct CoreWorker {
    ctx: Arc<Context>,
    own: Arc<Ownership>,
    reader: Arc<Reader>,
    submitter: Arc<Submitter>,
    executor: Arc<Executor>,
    actors: Arc<actors::Actors>,
    log_rx: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
    /// Stops this worker's server when the core worker is dropped.
    _serving: tokio_util::sync::DropGuard,
}

impl CoreWorker {
    /// Connects to the GCS and the raylet, registers, and starts serving.
    pub async fn start(opts: Options) -> Result<Arc<Self>, StartError> {
        let p = startup::start(opts).await?;
        if p.ctx.mode == Mode::Worker {
            // A worker has no console: lines printed by the tasks it submitted
            // go up to its own owner, and so on to the driver (as in Ray, where
            // every line of a job reaches its driver).
            let executor = p.executor.clone();
            let _ = p.ctx.line_sink.set(Box::new(move |line| executor.log_line(line)));
        }
        Ok(Arc::new(Self {
            ctx: p.ctx,
            own: p.own,
            reader: p.reader,
            submitter: p.submitter,
            executor: p.executor,
            actors: p.actors,
            log_rx: Mutex::new(Some(p.log_rx)),
            _serving: p.serving,
        }))
    }

    /// The runtime it runs on.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.ctx.rt
    }

    /// Worker id.
    pub fn worker_id(&self) -> &WorkerId {
        &self.ctx.worker_id
    }

    /// Job id.
    pub fn job_id(&self) -> &JobId {
        &self.ctx.job_id
    }

    /// Node id.
    pub fn node_id(&self) -> &NodeId {
        &self.ctx.node_id
    }

    /// This core worker's address (owners of its objects are reached here).
    pub fn address(&self) -> &str {
        &self.ctx.address
    }

    /// Driver or worker.
    pub fn mode(&self) -> Mode {
        self.ctx.mode
    }

    /// The GCS client.
    pub fn gcs(&self) -> &GcsClient {
        &self.ctx.gcs
    }

    /// The store mapping (base, len), for zero-copy checks.
    pub fn store_mapping(&self) -> (usize, usize) {
        let m = self.own.plasma().mapping();
        (m.base(), m.len())
    }

    /// Sets how to interrupt the task running on the main thread (`ray.cancel`).
    pub fn set_interrupt(&self, f: Box<dyn Fn() + Send + Sync>) {
        self.executor.set_interrupt(f);
    }

    // ------------------------------------------------------------ objects

    /// A frontend reference to an object appeared.
    pub fn add_local_ref(&self, r: &Reference) {
        self.own.add_local_ref(r);
    }

    /// A frontend reference to an object went away.
    pub fn remove_local_ref(&self, id: ObjectId) {
        self.own.remove_local_ref(id);
    }

    /// Stores a value; returns its new object id (owned by this worker), with one
    /// reference already counted for the caller.
    pub fn put(&self, v: &Serialized<'_>) -> Result<ObjectId, CoreError> {
        self.own.put(v)
    }

    /// Waits for the values of `refs` (all of them, or until `timeout`).
    pub fn get(&self, refs: &[Reference], timeout: Option<Duration>) -> Result<Vec<Got>, CoreError> {
        self.ctx.rt.block_on(self.reader.get(refs, timeout))
    }

    /// Which of `refs` are ready, waiting until `num_returns` are or `timeout`.
    pub fn wait(&self, refs: &[Reference], num_returns: usize, timeout: Option<Duration>) -> Vec<bool> {
        self.ctx.rt.block_on(self.reader.wait(refs, num_returns, timeout))
    }

    /// Counts of owned and borrowed objects (tests and debugging).
    pub fn object_counts(&self) -> (usize, usize) {
        self.own.counts()
    }

    /// Returns of submitted tasks not finished yet.
    pub fn pending_returns(&self) -> usize {
        self.own.pending()
    }

    // ------------------------------------------------------------ tasks

    /// Submits a task; returns its return object ids (owned by this worker), each
    /// with one reference already counted for the caller.
    pub fn submit(&self, spec: SubmitSpec) -> Vec<ObjectId> {
        self.submitter.submit(spec)
    }

    /// Cancels the task producing `object`.
    pub fn cancel(&self, object: ObjectId, force: bool) -> Result<(), CoreError> {
        if let Some(r) = self.ctx.rt.block_on(self.actors.cancel(object.task_id(), force)) {
            return r;
        }
        self.submitter.cancel(object, force)
    }

    /// Stores a pickled function under its id (once per function).
    pub fn export_function(&self, id: &[u8], body: Vec<u8>) -> Result<(), CoreError> {
        self.ctx.rt.block_on(functions::export(&self.ctx, id, body))
    }

    /// Reads a pickled function of `job`.
    pub fn fetch_function(&self, job: &JobId, id: &[u8]) -> Result<Vec<u8>, CoreError> {
        self.ctx.rt.block_on(functions::fetch(&self.ctx, job, id))
    }

    /// Lines printed by this driver's tasks, as they arrive (waits up to `timeout`).
    pub fn next_log_lines(&self, timeout: Duration) -> Vec<String> {
        let rx = self.log_rx.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(mut rx) = rx else { return Vec::new() };
        let mut out = Vec::new();
        self.ctx.rt.block_on(async {
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

    // ------------------------------------------------------------ actors

    /// Creates an actor (its name must be free unless `get_if_exists`).
    pub fn create_actor(&self, spec: ActorCreateSpec) -> Result<Created, CoreError> {
        self.ctx.rt.block_on(self.actors.create(spec))
    }

    /// Calls an actor's method; returns its return ids (owned here).
    pub fn call_actor(&self, spec: ActorCallSpec) -> Vec<ObjectId> {
        let _guard = self.ctx.rt.enter();
        self.actors.call(spec)
    }

    /// `ray.kill`.
    pub fn kill_actor(&self, actor_id: &str, no_restart: bool, cause: &str) -> Result<(), CoreError> {
        self.ctx.rt.block_on(self.actors.kill(actor_id, no_restart, cause))
    }

    /// An actor by id, or by name in a namespace when the id is empty.
    pub fn actor_info(&self, actor_id: &str, name: &str, namespace: &str) -> Result<Option<ray_proto::rpc::ActorTableData>, CoreError> {
        self.ctx.rt.block_on(self.actors.info(actor_id, name, namespace))
    }

    /// Every actor the GCS knows (of `job_id` when not empty).
    pub fn list_actors(&self, job_id: &str, alive_only: bool) -> Result<Vec<ray_proto::rpc::ActorTableData>, CoreError> {
        self.ctx.rt.block_on(self.actors.list(job_id, alive_only))
    }

    /// The latest tasks the GCS knows (of `job_id` when not empty), after this
    /// worker's own buffered events are sent.
    pub fn list_tasks(&self, job_id: &str) -> Result<Vec<ray_proto::rpc::TaskEvent>, CoreError> {
        self.ctx.rt.block_on(async {
            task_events::flush(&self.ctx).await;
            let req = ray_proto::rpc::GetTaskEventsRequest { job_id: job_id.to_string(), limit: 0 };
            let r = self.ctx.gcs.tasks.clone().get_task_events(req).await.map_err(|s| CoreError::Rpc(s.message().to_string()))?;
            Ok(r.into_inner().events)
        })
    }

    // ------------------------------------------------------------ execution (workers)

    /// The next task for the main thread (waits up to `timeout`).
    pub fn next_task(&self, timeout: Duration) -> Option<ExecTask> {
        self.executor.next(timeout)
    }

    /// A return value of the running task, stored the way its size asks for.
    pub fn make_return(&self, task: &ExecTask, id: ObjectId, v: &Serialized<'_>) -> Result<ReturnObject, CoreError> {
        self.own.make_return(id, &task.spec.owner_address, v)
    }

    /// Stores item `index` of the running generator task and sends it to the
    /// task's owner; returns the item's object id.
    pub fn generator_item(&self, task: &ExecTask, index: u64, v: &Serialized<'_>) -> Result<ObjectId, CoreError> {
        let id = generators::item_id(task.id, index);
        let ret = self.own.make_return(id, &task.spec.owner_address, v)?;
        self.executor.send_item(task, index, ret);
        Ok(id)
    }

    /// The next item of the generator task `task` this worker submitted.
    pub fn generator_next(&self, task: TaskId, timeout: Option<Duration>) -> generators::Next {
        self.ctx.rt.block_on(self.own.generators.next(task, timeout))
    }

    /// True when `generator_next` would not wait.
    pub fn generator_ready(&self, task: TaskId) -> bool {
        self.own.generators.peek(task)
    }

    /// The frontend dropped a generator: the items it did not take are released.
    pub fn generator_drop(&self, task: TaskId) {
        self.own.drop_generator(task);
    }

    /// Sends a finished task's result to its owner.
    pub fn finish_task(&self, task: &ExecTask, result: TaskResult) {
        self.executor.finish(task, result);
    }

    /// A line printed by the running task, for its owner's console.
    pub fn log_line(&self, line: String) {
        self.executor.log_line(line);
    }

    /// True (once) when `ray.cancel` asked to interrupt `task`.
    pub fn take_cancel(&self, task: ray_common::TaskId) -> bool {
        self.executor.take_cancel(task)
    }

    // ------------------------------------------------------------ lifetime

    /// Ends this driver's job: leases back, the job marked finished.
    pub fn shutdown(&self) {
        self.ctx.rt.block_on(async {
            self.submitter.return_all().await;
            task_events::flush(&self.ctx).await;
            if self.ctx.mode == Mode::Driver
                && let Ok(ch) = self.ctx.security.connect_lazy(self.ctx.gcs.addr(), Duration::from_secs(2))
            {
                let req = MarkJobFinishedRequest { job_id: self.ctx.job_id.to_string() };
                let _ = tokio::time::timeout(Duration::from_secs(2), JobInfoGcsServiceClient::new(ch).mark_job_finished(req)).await;
            }
        });
    }

    /// The local raylet's stats (workers, object store use).
    pub fn node_stats(&self) -> Result<GetNodeStatsReply, CoreError> {
        let mut r = self.ctx.raylet.clone();
        self.ctx.rt.block_on(r.get_node_stats(GetNodeStatsRequest {})).map(|r| r.into_inner()).map_err(|s| CoreError::Rpc(s.message().to_string()))
    }
}
