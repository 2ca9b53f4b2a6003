//! The raylet's gRPC services (behind the shared auth layer): node manager and
//! the standard health service the GCS checks.

use std::sync::Arc;

use ray_common::rpc::{MAX_MESSAGE_BYTES, SecureRouter, Security};
use ray_proto::rpc::autoscaler::DrainNodeReason;
use ray_proto::rpc::node_manager_service_server::{NodeManagerService, NodeManagerServiceServer};
use ray_proto::rpc::*;
use tonic::{Request, Response, Status};

use crate::leases::{Job, Pending};
use crate::worker_pool::WorkerStatus;
use crate::{ExitReason, Raylet};
use ray_object_store::StoreError;

/// Every service of the raylet on one router.
pub fn router(raylet: &Arc<Raylet>, security: &Security) -> Result<SecureRouter, tonic::transport::Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    drop(reporter); // The empty service name reports SERVING while the server runs.
    Ok(security.server_builder()?.add_service(health).add_service(
        NodeManagerServiceServer::new(NodeManager { raylet: raylet.clone() }).max_decoding_message_size(MAX_MESSAGE_BYTES),
    ))
}

/// The node manager service.
#[derive(Clone)]
pub struct NodeManager {
    raylet: Arc<Raylet>,
}

impl NodeManager {
    fn raylet_args(&self) -> Vec<String> {
        self.raylet.worker_args.clone()
    }
}

#[tonic::async_trait]
impl NodeManagerService for NodeManager {
    async fn drain_raylet(&self, req: Request<DrainRayletRequest>) -> Result<Response<DrainRayletReply>, Status> {
        let r = req.into_inner();
        let reason = DrainNodeReason::try_from(r.reason).unwrap_or(DrainNodeReason::Unspecified);
        if reason == DrainNodeReason::Unspecified {
            return Err(Status::invalid_argument("invalid reason: expected IDLE_TERMINATION or PREEMPTION"));
        }
        let result = self.raylet.resources().drain(reason, r.reason_message.clone());
        self.raylet.notify_changed();
        Ok(Response::new(match result {
            Ok(()) => {
                tracing::info!(?reason, message = %r.reason_message, "drain accepted: taking no new work");
                DrainRayletReply { is_accepted: true, rejection_reason_message: String::new() }
            }
            Err(why) => {
                tracing::info!(?reason, %why, "drain rejected");
                DrainRayletReply { is_accepted: false, rejection_reason_message: why }
            }
        }))
    }

    async fn get_node_stats(&self, _req: Request<GetNodeStatsRequest>) -> Result<Response<GetNodeStatsReply>, Status> {
        let num_workers = self.raylet.leasing().workers.len() as u32;
        let (used, capacity, num_objects) = {
            let s = self.raylet.store();
            (s.used(), s.capacity(), s.len() as u32)
        };
        let r = self.raylet.resources();
        Ok(Response::new(GetNodeStatsReply {
            node_id: self.raylet.node_id().to_string(),
            resources_total: r.total().to_f64_map(),
            resources_available: r.available().to_f64_map(),
            demand: r.demand_report(),
            state: if r.drain_state().is_some() { NodeState::Draining as i32 } else { NodeState::Alive as i32 },
            num_workers,
            object_store_used_bytes: used,
            object_store_capacity_bytes: capacity,
            num_objects,
        }))
    }

    async fn register_worker(&self, req: Request<RegisterWorkerRequest>) -> Result<Response<RegisterWorkerReply>, Status> {
        let r = req.into_inner();
        if r.worker_id.is_empty() || r.worker_id.len() > 64 || r.job_id.len() > 64 {
            return Err(Status::invalid_argument("invalid worker_id or job_id"));
        }
        {
            let mut l = self.raylet.leasing();
            if r.is_driver {
                let command = if r.worker_command.is_empty() { self.raylet.worker_command().to_vec() } else { r.worker_command.clone() };
                l.jobs.insert(
                    r.job_id.clone(),
                    Job { command, driver_pid: r.pid, driver_id: r.worker_id.clone(), driver_address: r.address.clone() },
                );
                // Prestart workers so the driver's first tasks find them warm.
                let n = l.config.soft_limit.min(8);
                let have = l.workers.values().filter(|w| w.job_id == r.job_id).count();
                let args = self.raylet_args();
                for _ in have..n {
                    l.start_worker(&r.job_id, &args);
                }
                tracing::info!(job_id = %r.job_id, pid = r.pid, "driver connected");
            } else {
                let Some(w) = l.workers.get_mut(&r.worker_id) else {
                    return Err(Status::not_found("invalid worker_id: this raylet did not start that worker"));
                };
                w.address = r.address.clone();
                if w.pid == 0 {
                    w.pid = r.pid;
                }
                w.status = WorkerStatus::Idle(std::time::Instant::now());
            }
        }
        self.raylet.dispatch();
        let s = self.raylet.store();
        Ok(Response::new(RegisterWorkerReply {
            node_id: self.raylet.node_id().to_string(),
            object_store_path: s.path().display().to_string(),
            object_store_capacity: s.capacity(),
            session_dir: self.raylet.session_dir().to_string(),
            gcs_address: self.raylet.gcs_address().to_string(),
        }))
    }

    async fn request_worker_lease(
        &self,
        req: Request<RequestWorkerLeaseRequest>,
    ) -> Result<Response<RequestWorkerLeaseReply>, Status> {
        let r = req.into_inner();
        let shape = ray_common::ResourceSet::from_f64_map(&r.resources)
            .map_err(|e| Status::invalid_argument(format!("invalid resources: {e}")))?;
        let reject = |why: String, infeasible: bool| {
            Ok(Response::new(RequestWorkerLeaseReply { rejection: why, infeasible, ..Default::default() }))
        };
        {
            let res = self.raylet.resources();
            if res.drain_state().is_some() {
                return reject("the node is draining".into(), false);
            }
            if !shape.is_subset_of(res.total()) && !r.wait && r.no_spillback {
                return reject(format!("this node has {} in total; {shape} does not fit", res.total()), true);
            }
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let mut l = self.raylet.leasing();
            if !l.jobs.contains_key(&r.job_id) {
                let command = self.raylet.worker_command().to_vec();
                l.jobs.insert(r.job_id.clone(), Job { command, driver_pid: 0, driver_id: String::new(), driver_address: String::new() });
            }
            l.queue.push(Pending {
                no_spillback: r.no_spillback,
                shape,
                job_id: r.job_id,
                owner: r.owner_worker_id,
                reply: tx,
            });
        }
        self.raylet.dispatch();
        match rx.await {
            Ok(reply) => Ok(Response::new(reply)),
            Err(_) => reject("the lease request was dropped (the raylet is shutting down or the job ended)".into(), false),
        }
    }

    async fn return_worker(&self, req: Request<ReturnWorkerRequest>) -> Result<Response<ReturnWorkerReply>, Status> {
        let r = req.into_inner();
        {
            let mut l = self.raylet.leasing();
            let mut res = self.raylet.resources();
            l.return_lease(&r.lease_id, r.disconnect, &mut res);
        }
        self.raylet.dispatch();
        Ok(Response::new(ReturnWorkerReply {}))
    }

    async fn cancel_worker_lease(
        &self,
        req: Request<CancelWorkerLeaseRequest>,
    ) -> Result<Response<CancelWorkerLeaseReply>, Status> {
        let r = req.into_inner();
        let shape = ray_common::ResourceSet::from_f64_map_lossy(&r.resources);
        let cancelled = {
            let mut l = self.raylet.leasing();
            let before = l.queue.len();
            l.queue.retain(|p| !(p.owner == r.owner_worker_id && (shape.is_empty() || p.shape == shape)));
            (before - l.queue.len()) as u32
        };
        self.raylet.dispatch();
        Ok(Response::new(CancelWorkerLeaseReply { cancelled }))
    }

    async fn notify_worker_blocked(
        &self,
        req: Request<NotifyWorkerBlockedRequest>,
    ) -> Result<Response<NotifyWorkerBlockedReply>, Status> {
        let r = req.into_inner();
        {
            let mut l = self.raylet.leasing();
            let mut res = self.raylet.resources();
            l.set_blocked(&r.worker_id, r.blocked, &mut res);
        }
        self.raylet.dispatch();
        Ok(Response::new(NotifyWorkerBlockedReply {}))
    }

    async fn lease_stream_closed(
        &self,
        req: Request<LeaseStreamClosedRequest>,
    ) -> Result<Response<LeaseStreamClosedReply>, Status> {
        let r = req.into_inner();
        let ended = {
            let mut l = self.raylet.leasing();
            let mut res = self.raylet.resources();
            l.return_lease(&r.lease_id, true, &mut res)
        };
        if ended {
            tracing::info!(lease_id = %r.lease_id, "the owner of a lease went away; its worker was stopped");
            self.raylet.dispatch();
        }
        Ok(Response::new(LeaseStreamClosedReply { lease_ended: ended }))
    }

    async fn create_object(&self, req: Request<CreateObjectRequest>) -> Result<Response<CreateObjectReply>, Status> {
        let r = req.into_inner();
        let result = self.raylet.store().create_owned(&r.object_id, r.data_size, &r.client_id, &r.owner_address);
        self.raylet.notify_changed();
        Ok(Response::new(match result {
            Ok(offset) => CreateObjectReply { offset, error: String::new(), store_full: false },
            Err(e) => CreateObjectReply { offset: 0, store_full: matches!(e, StoreError::Full { .. }), error: e.to_string() },
        }))
    }

    async fn seal_object(&self, req: Request<SealObjectRequest>) -> Result<Response<SealObjectReply>, Status> {
        let r = req.into_inner();
        self.raylet.store().seal(&r.object_id).map_err(|e| Status::not_found(e.to_string()))?;
        self.raylet.notify_sealed();
        Ok(Response::new(SealObjectReply {}))
    }

    async fn get_objects(&self, req: Request<GetObjectsRequest>) -> Result<Response<GetObjectsReply>, Status> {
        let r = req.into_inner();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(r.timeout_ms.min(3_600_000));
        loop {
            let sealed = self.raylet.sealed_notifier();
            let ready = {
                let s = self.raylet.store();
                r.object_ids.iter().all(|id| s.is_sealed(id))
            };
            let now = tokio::time::Instant::now();
            if ready || now >= deadline {
                let mut s = self.raylet.store();
                let objects = r
                    .object_ids
                    .iter()
                    .map(|id| match s.get(id, &r.client_id) {
                        Some(loc) => ObjectLocation { object_id: id.clone(), found: true, offset: loc.offset, size: loc.size },
                        None => ObjectLocation { object_id: id.clone(), found: false, offset: 0, size: 0 },
                    })
                    .collect();
                return Ok(Response::new(GetObjectsReply { objects }));
            }
            let _ = tokio::time::timeout(deadline - now, sealed).await;
        }
    }

    async fn release_objects(&self, req: Request<ReleaseObjectsRequest>) -> Result<Response<ReleaseObjectsReply>, Status> {
        let r = req.into_inner();
        {
            let mut s = self.raylet.store();
            for id in &r.object_ids {
                s.release(id, &r.client_id);
            }
        }
        self.raylet.notify_changed();
        Ok(Response::new(ReleaseObjectsReply {}))
    }

    async fn delete_objects(&self, req: Request<DeleteObjectsRequest>) -> Result<Response<DeleteObjectsReply>, Status> {
        let r = req.into_inner();
        {
            let mut s = self.raylet.store();
            for id in &r.object_ids {
                s.delete(id);
            }
        }
        self.raylet.notify_changed();
        Ok(Response::new(DeleteObjectsReply {}))
    }

    async fn shutdown_raylet(&self, req: Request<ShutdownRayletRequest>) -> Result<Response<ShutdownRayletReply>, Status> {
        tracing::info!(graceful = req.get_ref().graceful, "shutdown requested over RPC");
        self.raylet.stop(ExitReason::Requested);
        Ok(Response::new(ShutdownRayletReply {}))
    }
}
