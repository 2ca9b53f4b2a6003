//! The core worker's server (every worker and driver runs one): workers take
//! tasks from their owners' streams and hand them, in order, to the language
//! runtime's main thread; any owner answers borrowers asking for its objects.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use futures::Stream;
use ray_proto::rpc::core_worker_service_server::CoreWorkerService;
use ray_proto::rpc::*;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use crate::CoreWorker;

/// Metadata key carrying the lease id on a task stream.
pub const LEASE_HEADER: &str = "ray-lease-id";

/// A task handed to the language runtime.
pub struct ExecTask {
    /// Its spec.
    pub spec: TaskSpec,
    /// Where its result (and printed lines) go.
    pub reply: mpsc::UnboundedSender<Result<PushTasksReply, Status>>,
}

/// Tasks waiting for the main thread, in arrival order.
#[derive(Default)]
pub struct ExecQueue {
    queue: Mutex<VecDeque<ExecTask>>,
    ready: Condvar,
    /// The task running now: its id and reply stream (for printed lines).
    pub current: Mutex<Option<(Vec<u8>, mpsc::UnboundedSender<Result<PushTasksReply, Status>>)>>,
}

impl ExecQueue {
    fn push(&self, t: ExecTask) {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).push_back(t);
        self.ready.notify_one();
    }

    /// Waits up to `timeout` for the next task.
    pub fn pop(&self, timeout: Duration) -> Option<ExecTask> {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.is_empty() {
            q = self.ready.wait_timeout(q, timeout).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0);
        }
        q.pop_front()
    }

    /// Removes a queued task; returns it.
    pub fn remove(&self, task_id: &[u8]) -> Option<ExecTask> {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let i = q.iter().position(|t| t.spec.task_id == task_id)?;
        q.remove(i)
    }
}

/// The gRPC service, holding the core worker weakly (it outlives no one).
#[derive(Clone)]
pub struct Service {
    /// The core worker.
    pub core: Arc<std::sync::OnceLock<Weak<CoreWorker>>>,
}

impl Service {
    /// The core worker; a call that arrives while it is still starting (it
    /// registers with the raylet just before it is complete) waits a moment.
    async fn core(&self) -> Result<Arc<CoreWorker>, Status> {
        for _ in 0..500 {
            if let Some(c) = self.core.get() {
                return c.upgrade().ok_or_else(|| Status::unavailable("the worker is stopping"));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(Status::unavailable("the worker did not finish starting"))
    }
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<PushTasksReply, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl CoreWorkerService for Service {
    type PushTasksStream = ReplyStream;

    async fn push_tasks(&self, req: Request<Streaming<PushTasksRequest>>) -> Result<Response<Self::PushTasksStream>, Status> {
        let core = self.core().await?;
        let Some(exec) = core.exec.clone() else {
            return Err(Status::failed_precondition("a driver does not execute tasks"));
        };
        let lease_id = req.metadata().get(LEASE_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let mut incoming = req.into_inner();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match incoming.message().await {
                    Ok(Some(m)) => {
                        if let Some(spec) = m.task {
                            exec.push(ExecTask { spec, reply: tx.clone() });
                        }
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            // An owner returns its lease before closing the stream; if the lease is
            // still active, the owner died and the raylet takes the lease back.
            if !lease_id.is_empty() {
                core.lease_stream_closed(lease_id).await;
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))))
    }

    async fn get_object_status(&self, req: Request<GetObjectStatusRequest>) -> Result<Response<GetObjectStatusReply>, Status> {
        let core = self.core().await?;
        let r = req.into_inner();
        Ok(Response::new(core.object_status(&r.object_id, Duration::from_millis(r.timeout_ms.min(3_600_000))).await))
    }

    async fn cancel_task(&self, req: Request<CancelTaskRequest>) -> Result<Response<CancelTaskReply>, Status> {
        let core = self.core().await?;
        let r = req.into_inner();
        Ok(Response::new(CancelTaskReply { attempted: core.cancel_local(&r.task_id, r.force) }))
    }

    async fn exit(&self, _req: Request<ExitRequest>) -> Result<Response<ExitReply>, Status> {
        tracing::info!("exit requested by the raylet");
        tokio::spawn(async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            std::process::exit(0);
        });
        Ok(Response::new(ExitReply {}))
    }
}
