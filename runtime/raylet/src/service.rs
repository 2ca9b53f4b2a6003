//! The raylet's gRPC services (behind the shared auth layer): node manager and
//! the standard health service the GCS checks.
//!
//! Handlers are thin: validate the request, call one method of the node state
//! under its lock (which re-dispatches and wakes whoever must hear), and await
//! outside it when the answer comes later (a queued lease, an unsealed object).

use std::sync::Arc;

use ray_common::ResourceSet;
use ray_common::rpc::{MAX_MESSAGE_BYTES, SecureRouter, Security};
use ray_object_store::StoreError;
use ray_proto::rpc::autoscaler::DrainNodeReason;
use ray_proto::rpc::node_manager_service_server::{NodeManagerService, NodeManagerServiceServer};
use ray_proto::rpc::*;
use tonic::{Request, Response, Status};

use crate::state::{LeaseAnswer, LeaseRequest};
use crate::{ExitReason, Raylet};

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

#[tonic::async_trait]
impl NodeManagerService for NodeManager {
    async fn drain_raylet(&self, req: Request<DrainRayletRequest>) -> Result<Response<DrainRayletReply>, Status> {
        let r = req.into_inner();
        let reason = DrainNodeReason::try_from(r.reason).unwrap_or(DrainNodeReason::Unspecified);
        if reason == DrainNodeReason::Unspecified {
            return Err(Status::invalid_argument("invalid reason: expected IDLE_TERMINATION or PREEMPTION"));
        }
        let result = self.raylet.state.lock().drain(reason, r.reason_message.clone());
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
        Ok(Response::new(self.raylet.state.lock().stats()))
    }

    async fn register_worker(&self, req: Request<RegisterWorkerRequest>) -> Result<Response<RegisterWorkerReply>, Status> {
        let r = req.into_inner();
        if r.worker_id.is_empty() || r.worker_id.len() > 64 || r.job_id.len() > 64 {
            return Err(Status::invalid_argument("invalid worker_id or job_id"));
        }
        let (object_store_path, object_store_capacity) = {
            let mut s = self.raylet.state.lock();
            if r.is_driver {
                s.register_driver(&r.job_id, r.pid, &r.worker_id, &r.address, r.worker_command);
            } else if !s.register_worker(&r.worker_id, &r.address, r.pid) {
                return Err(Status::not_found("invalid worker_id: this raylet did not start that worker"));
            }
            s.store_location()
        };
        if r.is_driver {
            tracing::info!(job_id = %r.job_id, pid = r.pid, "driver connected");
        }
        Ok(Response::new(RegisterWorkerReply {
            node_id: self.raylet.node_id().to_string(),
            object_store_path,
            object_store_capacity,
            session_dir: self.raylet.session_dir.clone(),
            gcs_address: self.raylet.gcs_address.clone(),
        }))
    }

    async fn request_worker_lease(
        &self,
        req: Request<RequestWorkerLeaseRequest>,
    ) -> Result<Response<RequestWorkerLeaseReply>, Status> {
        let r = req.into_inner();
        let shape =
            ResourceSet::from_f64_map(&r.resources).map_err(|e| Status::invalid_argument(format!("invalid resources: {e}")))?;
        let hold = if r.hold_differs {
            Some(ResourceSet::from_f64_map(&r.hold_resources).map_err(|e| Status::invalid_argument(format!("invalid hold_resources: {e}")))?)
        } else {
            None
        };
        let request = LeaseRequest {
            shape,
            job_id: r.job_id,
            owner: r.owner_worker_id,
            no_spillback: r.no_spillback,
            pinned: r.pinned,
            wait: r.wait,
            hold,
            detached: r.detached,
            runtime_env: r.runtime_env,
        };
        let answer = self.raylet.state.lock().request_lease(request);
        let reply = match answer {
            LeaseAnswer::Now(reply) => reply,
            LeaseAnswer::Later(rx) => rx.await.unwrap_or_else(|_| RequestWorkerLeaseReply {
                rejection: "the lease request was dropped (the raylet is shutting down or the job ended)".into(),
                ..Default::default()
            }),
        };
        Ok(Response::new(reply))
    }

    async fn return_worker(&self, req: Request<ReturnWorkerRequest>) -> Result<Response<ReturnWorkerReply>, Status> {
        let r = req.into_inner();
        self.raylet.state.lock().return_lease(&r.lease_id, r.disconnect);
        Ok(Response::new(ReturnWorkerReply {}))
    }

    async fn cancel_worker_lease(
        &self,
        req: Request<CancelWorkerLeaseRequest>,
    ) -> Result<Response<CancelWorkerLeaseReply>, Status> {
        let r = req.into_inner();
        let shape = ResourceSet::from_f64_map_lossy(&r.resources);
        let cancelled = self.raylet.state.lock().cancel_lease_requests(&r.owner_worker_id, &shape);
        Ok(Response::new(CancelWorkerLeaseReply { cancelled }))
    }

    async fn notify_worker_blocked(
        &self,
        req: Request<NotifyWorkerBlockedRequest>,
    ) -> Result<Response<NotifyWorkerBlockedReply>, Status> {
        let r = req.into_inner();
        self.raylet.state.lock().set_blocked(&r.worker_id, r.blocked);
        Ok(Response::new(NotifyWorkerBlockedReply {}))
    }

    async fn lease_stream_closed(
        &self,
        req: Request<LeaseStreamClosedRequest>,
    ) -> Result<Response<LeaseStreamClosedReply>, Status> {
        let r = req.into_inner();
        let ended = self.raylet.state.lock().lease_stream_closed(&r.lease_id);
        if ended {
            tracing::info!(lease_id = %r.lease_id, "the owner of a lease went away; its worker was stopped");
        }
        Ok(Response::new(LeaseStreamClosedReply { lease_ended: ended }))
    }

    async fn create_object(&self, req: Request<CreateObjectRequest>) -> Result<Response<CreateObjectReply>, Status> {
        let r = req.into_inner();
        let result = crate::spill::create_with_room(&self.raylet, r.data_size, |s| {
            s.create_object(&r.object_id, r.data_size, &r.client_id, &r.owner_address)
        })
        .await;
        Ok(Response::new(match result {
            Ok(offset) => CreateObjectReply { offset, error: String::new(), store_full: false },
            Err(e) => CreateObjectReply { offset: 0, store_full: matches!(e, StoreError::Full { .. }), error: e.to_string() },
        }))
    }

    async fn seal_object(&self, req: Request<SealObjectRequest>) -> Result<Response<SealObjectReply>, Status> {
        let r = req.into_inner();
        self.raylet.state.lock().seal_object(&r.object_id).map_err(|e| Status::not_found(e.to_string()))?;
        Ok(Response::new(SealObjectReply {}))
    }

    async fn get_objects(&self, req: Request<GetObjectsRequest>) -> Result<Response<GetObjectsReply>, Status> {
        let r = req.into_inner();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(r.timeout_ms.min(3_600_000));
        if r.object_ids.len() > 100_000 {
            return Err(Status::invalid_argument("too many object ids in one call (at most 100000)"));
        }
        loop {
            // Spilled objects are read back first.
            let spilled: Vec<Vec<u8>> = {
                let s = self.raylet.state.lock();
                r.object_ids.iter().filter(|id| s.lookup_object(id) == ray_object_store::Lookup::Spilled).cloned().collect()
            };
            for id in spilled {
                if let Err(e) = crate::spill::restore(&self.raylet, &id).await {
                    tracing::warn!(error = %e, "cannot restore a spilled object for a reader");
                }
            }
            // Registered before looking, so a seal in between is not missed.
            let sealed = self.raylet.state.sealed_notifier();
            let now = tokio::time::Instant::now();
            let found = self.raylet.state.lock().get_objects(&r.object_ids, &r.client_id, now >= deadline);
            if let Some(objects) = found {
                return Ok(Response::new(GetObjectsReply { objects }));
            }
            let _ = tokio::time::timeout(deadline - now, sealed).await;
        }
    }

    async fn release_objects(&self, req: Request<ReleaseObjectsRequest>) -> Result<Response<ReleaseObjectsReply>, Status> {
        let r = req.into_inner();
        self.raylet.state.lock().release_objects(&r.object_ids, &r.client_id);
        Ok(Response::new(ReleaseObjectsReply {}))
    }

    async fn delete_objects(&self, req: Request<DeleteObjectsRequest>) -> Result<Response<DeleteObjectsReply>, Status> {
        let r = req.into_inner();
        let garbage = {
            let mut s = self.raylet.state.lock();
            s.delete_objects(&r.object_ids);
            s.take_spill_garbage()
        };
        crate::spill::remove_files(garbage);
        Ok(Response::new(DeleteObjectsReply {}))
    }

    async fn prepare_bundle_resources(
        &self,
        req: Request<PrepareBundleResourcesRequest>,
    ) -> Result<Response<PrepareBundleResourcesReply>, Status> {
        let r = req.into_inner();
        if r.placement_group_id.is_empty() || r.placement_group_id.len() > 64 || r.bundles.len() > 10_000 {
            return Err(Status::invalid_argument("invalid placement_group_id or too many bundles"));
        }
        let mut bundles = Vec::with_capacity(r.bundles.len());
        for b in &r.bundles {
            let set = ResourceSet::from_f64_map(&b.resources).map_err(|e| Status::invalid_argument(format!("invalid bundle resources: {e}")))?;
            bundles.push((b.index, set));
        }
        let result = self.raylet.state.lock().prepare_bundles(&r.placement_group_id, bundles);
        if let Err(e) = &result {
            tracing::debug!(group = %r.placement_group_id, error = %e, "cannot prepare placement group bundles");
        }
        Ok(Response::new(PrepareBundleResourcesReply { success: result.is_ok(), error: result.err().unwrap_or_default() }))
    }

    async fn commit_bundle_resources(
        &self,
        req: Request<CommitBundleResourcesRequest>,
    ) -> Result<Response<CommitBundleResourcesReply>, Status> {
        let r = req.into_inner();
        let success = self.raylet.state.lock().commit_bundles(&r.placement_group_id);
        if success {
            tracing::info!(group = %r.placement_group_id, "placement group bundles committed");
        }
        Ok(Response::new(CommitBundleResourcesReply { success }))
    }

    async fn cancel_resource_reserve(
        &self,
        req: Request<CancelResourceReserveRequest>,
    ) -> Result<Response<CancelResourceReserveReply>, Status> {
        let r = req.into_inner();
        let ended = self.raylet.state.lock().cancel_bundles(&r.placement_group_id, &r.bundle_indices);
        tracing::info!(group = %r.placement_group_id, stopped_workers = ended, "placement group bundles given back");
        Ok(Response::new(CancelResourceReserveReply {}))
    }

    async fn pull_objects(&self, req: Request<PullObjectsRequest>) -> Result<Response<PullObjectsReply>, Status> {
        let r = req.into_inner();
        if r.objects.len() > 10_000 {
            return Err(Status::invalid_argument("too many objects in one pull (at most 10000)"));
        }
        Ok(Response::new(crate::transfer::pull_objects(&self.raylet, r).await))
    }

    async fn read_object_chunk(&self, req: Request<ReadObjectChunkRequest>) -> Result<Response<ReadObjectChunkReply>, Status> {
        Ok(Response::new(crate::transfer::read_chunk(&self.raylet, req.into_inner()).await))
    }

    async fn shutdown_raylet(&self, req: Request<ShutdownRayletRequest>) -> Result<Response<ShutdownRayletReply>, Status> {
        tracing::info!(graceful = req.get_ref().graceful, "shutdown requested over RPC");
        self.raylet.stop(ExitReason::Requested);
        Ok(Response::new(ShutdownRayletReply {}))
    }
}
