//! The core worker's server (every worker and driver runs one, behind the cluster
//! token): workers take tasks from their owners' streams; every owner answers
//! borrowers asking for its objects; the raylet may ask a worker to exit.

use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::Stream;
use ray_common::{NodeId, ObjectId, TaskId};
use ray_proto::rpc::core_worker_service_server::CoreWorkerService;
use ray_proto::rpc::*;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use crate::context::{Context, Mode};
use crate::executor::{ExecTask, Executor};
use crate::reader::Reader;

/// Metadata key carrying the lease id on a task stream.
pub const LEASE_HEADER: &str = "ray-lease-id";

/// The gRPC service. It holds the core worker's parts weakly: a core worker that
/// was shut down and dropped is freed (its store mapping with it), and calls that
/// still arrive are told it is stopping.
pub(crate) struct Server {
    pub ctx: Weak<Context>,
    pub reader: Weak<Reader>,
    pub executor: Weak<Executor>,
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<PushTasksReply, Status>> + Send + 'static>>;

fn alive<T>(w: &Weak<T>) -> Result<Arc<T>, Status> {
    w.upgrade().ok_or_else(|| Status::unavailable("the worker is stopping"))
}

impl Server {
    /// An owner's lease on this worker ended without a return (its stream closed
    /// while the lease was active): the owner died, and the raylet takes the lease back.
    async fn lease_stream_closed(ctx: &Context, lease_id: String) {
        let _ = ctx.raylet.clone().lease_stream_closed(LeaseStreamClosedRequest { lease_id }).await;
    }
}

#[tonic::async_trait]
impl CoreWorkerService for Server {
    type PushTasksStream = ReplyStream;

    async fn push_tasks(&self, req: Request<Streaming<PushTasksRequest>>) -> Result<Response<Self::PushTasksStream>, Status> {
        let (ctx, executor) = (alive(&self.ctx)?, alive(&self.executor)?);
        if ctx.mode == Mode::Driver {
            return Err(Status::failed_precondition("a driver does not execute tasks"));
        }
        let lease_id = req.metadata().get(LEASE_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let mut incoming = req.into_inner();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            // The actor whose creation task came on this stream (its owner's).
            let mut created: Option<String> = None;
            while let Ok(Some(m)) = incoming.message().await {
                let Some(spec) = m.task else { continue };
                if let Some(c) = &spec.actor_creation {
                    if c.detached {
                        executor.set_detached();
                    }
                    created = Some(c.actor_id.clone());
                }
                match ExecTask::parse(spec, tx.clone()) {
                    Ok(t) => executor.push(t),
                    Err(e) => tracing::warn!(error = %e, "ignoring a task with a malformed id"),
                }
            }
            // An owner returns its lease before closing the stream; if the lease is
            // still active, the owner died and the raylet takes the lease back.
            if !lease_id.is_empty() && !executor.is_detached() {
                if let Some(actor_id) = created {
                    // The owner is gone, and the actor with it (a DEAD actor stays as
                    // it was: an owner that killed it first said why).
                    let cause = "The actor is dead because its owner has died.".to_string();
                    let dead = ActorTableData { actor_id, state: "DEAD".into(), death_cause: cause, ..Default::default() };
                    let mut gcs = ctx.gcs.actors.clone();
                    let _ = tokio::time::timeout(Duration::from_secs(2), gcs.update_actor(UpdateActorRequest { actor: Some(dead) })).await;
                }
                Self::lease_stream_closed(&ctx, lease_id).await;
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))))
    }

    async fn get_object_status(&self, req: Request<GetObjectStatusRequest>) -> Result<Response<GetObjectStatusReply>, Status> {
        let r = req.into_inner();
        let id = ObjectId::from_bytes(&r.object_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let timeout = Duration::from_millis(r.timeout_ms.min(3_600_000));
        let lost = if r.lost_node_id.is_empty() {
            None
        } else {
            Some(NodeId::parse(&r.lost_node_id).map_err(|e| Status::invalid_argument(format!("invalid lost_node_id: {e}")))?)
        };
        Ok(Response::new(alive(&self.reader)?.object_status(id, timeout, lost).await))
    }

    async fn add_object_location(&self, req: Request<AddObjectLocationRequest>) -> Result<Response<AddObjectLocationReply>, Status> {
        let r = req.into_inner();
        let id = ObjectId::from_bytes(&r.object_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let node = NodeId::parse(&r.node_id).map_err(|e| Status::invalid_argument(format!("invalid node_id: {e}")))?;
        if r.raylet_address.len() > 300 {
            return Err(Status::invalid_argument("raylet_address is too long"));
        }
        alive(&self.reader)?.add_location(id, node, &r.raylet_address).await;
        Ok(Response::new(AddObjectLocationReply {}))
    }

    async fn cancel_task(&self, req: Request<CancelTaskRequest>) -> Result<Response<CancelTaskReply>, Status> {
        let r = req.into_inner();
        let id = TaskId::from_bytes(&r.task_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let attempted = alive(&self.ctx)?.mode == Mode::Worker && alive(&self.executor)?.cancel(id, r.force);
        Ok(Response::new(CancelTaskReply { attempted }))
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
