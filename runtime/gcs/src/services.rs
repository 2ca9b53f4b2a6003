//! The GCS's gRPC services, all behind the shared auth layer of
//! [`ray_common::rpc::Security::server_builder`].

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use ray_common::rpc::{MAX_MESSAGE_BYTES, SecureRouter, Security};
use ray_proto::rpc::autoscaler::autoscaler_state_service_server::{AutoscalerStateService, AutoscalerStateServiceServer};
use ray_proto::rpc::autoscaler::*;
use ray_proto::rpc::gcs_subscriber_service_server::{GcsSubscriberService, GcsSubscriberServiceServer};
use ray_proto::rpc::internal_kv_gcs_service_server::{InternalKvGcsService, InternalKvGcsServiceServer};
use ray_proto::rpc::job_info_gcs_service_server::{JobInfoGcsService, JobInfoGcsServiceServer};
use ray_proto::rpc::node_info_gcs_service_server::{NodeInfoGcsService, NodeInfoGcsServiceServer};
use ray_proto::rpc::node_manager_service_client::NodeManagerServiceClient;
use ray_proto::rpc::node_resource_gcs_service_server::{NodeResourceGcsService, NodeResourceGcsServiceServer};
use ray_proto::rpc::*;
use tokio::sync::broadcast::error::RecvError;
use tonic::{Request, Response, Status, Streaming};

use crate::Gcs;
use crate::state::{StateError, death};

/// Every service of the GCS on one router.
pub fn router(
    gcs: &Arc<Gcs>,
    security: &Security,
) -> Result<SecureRouter, tonic::transport::Error> {
    let svc = GcsService { gcs: gcs.clone() };
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    drop(health_reporter); // Serving by default.
    Ok(security
        .server_builder()?
        .add_service(health_service)
        .add_service(NodeInfoGcsServiceServer::new(svc.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES))
        .add_service(NodeResourceGcsServiceServer::new(svc.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES))
        .add_service(InternalKvGcsServiceServer::new(svc.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES))
        .add_service(AutoscalerStateServiceServer::new(svc.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES))
        .add_service(JobInfoGcsServiceServer::new(svc.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES))
        .add_service(
            ray_proto::rpc::placement_group_info_gcs_service_server::PlacementGroupInfoGcsServiceServer::new(svc.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            ray_proto::rpc::actor_info_gcs_service_server::ActorInfoGcsServiceServer::new(svc.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            ray_proto::rpc::task_info_gcs_service_server::TaskInfoGcsServiceServer::new(svc.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(GcsSubscriberServiceServer::new(svc).max_decoding_message_size(MAX_MESSAGE_BYTES)))
}

/// One handle implementing every GCS service.
#[derive(Clone)]
pub struct GcsService {
    pub(crate) gcs: Arc<Gcs>,
}

fn to_status(e: StateError) -> Status {
    match e {
        StateError::AlreadyAlive(_) => Status::already_exists(e.to_string()),
        StateError::UnknownNode(_) => Status::not_found(e.to_string()),
        StateError::NodeDead(..) => Status::failed_precondition(e.to_string()),
        StateError::Invalid { .. } => Status::invalid_argument(e.to_string()),
    }
}

fn store_err(e: crate::storage::StoreError) -> Status {
    Status::internal(e.to_string())
}

pub(crate) fn kv_table(ns: &str) -> String {
    format!("kv:{ns}")
}

#[tonic::async_trait]
impl NodeInfoGcsService for GcsService {
    async fn register_node(&self, req: Request<RegisterNodeRequest>) -> Result<Response<RegisterNodeReply>, Status> {
        let Some(node) = req.into_inner().node else {
            return Err(Status::invalid_argument("invalid node: missing"));
        };
        let info = self.gcs.change(|st| match st.register(node) {
            Ok(c) => (Ok(c.1.clone()), Some(c)),
            Err(e) => (Err(e), None),
        });
        let info = info.map_err(to_status)?.ok_or_else(|| Status::internal("registration lost"))?;
        let addr = format!("{}:{}", info.node_manager_address, info.node_manager_port);
        tracing::info!(
            node_id = %info.node_id, %addr, head = info.is_head_node, resources = ?info.resources_total,
            "node registered"
        );
        crate::health::watch(&self.gcs, info.node_id.clone(), addr);
        let session_name = self.gcs.state().session_name().to_string();
        self.gcs.persist().await;
        Ok(Response::new(RegisterNodeReply { session_name }))
    }

    async fn unregister_node(&self, req: Request<UnregisterNodeRequest>) -> Result<Response<UnregisterNodeReply>, Status> {
        let r = req.into_inner();
        let d = r.death_info.unwrap_or_else(|| death(DeathReason::ExpectedTermination, "the raylet unregistered"));
        tracing::info!(node_id = %r.node_id, reason = ?d.reason(), message = %d.reason_message, "node unregistered");
        self.gcs.health().stop(&r.node_id);
        self.gcs.change(|st| match st.mark_dead(&r.node_id, d) {
            Ok(c) => (Ok(()), c),
            Err(e) => (Err(e), None),
        })
        .map_err(to_status)?;
        self.gcs.persist().await;
        Ok(Response::new(UnregisterNodeReply {}))
    }

    async fn get_all_node_info(&self, req: Request<GetAllNodeInfoRequest>) -> Result<Response<GetAllNodeInfoReply>, Status> {
        let filter = req.into_inner().state_filter;
        let st = self.gcs.state();
        let nodes = st
            .nodes()
            .into_iter()
            .filter(|e| filter.is_none_or(|f| e.info.state == f))
            .map(|e| e.info.clone())
            .collect();
        Ok(Response::new(GetAllNodeInfoReply { nodes }))
    }

    async fn get_cluster_info(&self, _req: Request<GetClusterInfoRequest>) -> Result<Response<GetClusterInfoReply>, Status> {
        Ok(Response::new(GetClusterInfoReply {
            session_name: self.gcs.state().session_name().to_string(),
            gcs_version: env!("CARGO_PKG_VERSION").to_string(),
            start_time_ms: self.gcs.started_ms(),
        }))
    }
}

#[tonic::async_trait]
impl NodeResourceGcsService for GcsService {
    async fn report_resources(
        &self,
        req: Request<Streaming<ResourceReport>>,
    ) -> Result<Response<ReportResourcesReply>, Status> {
        let mut stream = req.into_inner();
        loop {
            let msg = tokio::select! {
                m = stream.message() => m,
                _ = self.gcs.shutdown_token().cancelled() => return Err(Status::unavailable("GCS shutting down")),
            };
            match msg {
                Ok(Some(report)) => {
                    self.gcs
                        .change(|st| match st.apply_report(report) {
                            Ok(c) => (Ok(()), c),
                            Err(e) => (Err(e), None),
                        })
                        .map_err(to_status)?;
                }
                Ok(None) => return Ok(Response::new(ReportResourcesReply {})),
                Err(s) => return Err(s),
            }
        }
    }

    async fn get_all_resource_usage(
        &self,
        _req: Request<GetAllResourceUsageRequest>,
    ) -> Result<Response<GetAllResourceUsageReply>, Status> {
        Ok(Response::new(GetAllResourceUsageReply { nodes: self.gcs.state().resource_usage() }))
    }
}

#[tonic::async_trait]
impl InternalKvGcsService for GcsService {
    async fn get(&self, req: Request<KvGetRequest>) -> Result<Response<KvGetReply>, Status> {
        let r = req.into_inner();
        let value = self.gcs.store().get(&kv_table(&r.namespace), &r.key).await.map_err(store_err)?;
        Ok(Response::new(KvGetReply { value }))
    }

    async fn multi_get(&self, req: Request<KvMultiGetRequest>) -> Result<Response<KvMultiGetReply>, Status> {
        let r = req.into_inner();
        let entries = self.gcs.store().multi_get(&kv_table(&r.namespace), &r.keys).await.map_err(store_err)?;
        Ok(Response::new(KvMultiGetReply {
            entries: entries.into_iter().map(|(key, value)| KvEntry { key, value }).collect(),
        }))
    }

    async fn put(&self, req: Request<KvPutRequest>) -> Result<Response<KvPutReply>, Status> {
        let r = req.into_inner();
        let added = self.gcs.store().put(&kv_table(&r.namespace), &r.key, r.value, r.overwrite).await.map_err(store_err)?;
        Ok(Response::new(KvPutReply { added }))
    }

    async fn del(&self, req: Request<KvDelRequest>) -> Result<Response<KvDelReply>, Status> {
        let r = req.into_inner();
        let deleted_num = self.gcs.store().delete(&kv_table(&r.namespace), &r.key, r.del_by_prefix).await.map_err(store_err)?;
        Ok(Response::new(KvDelReply { deleted_num }))
    }

    async fn keys(&self, req: Request<KvKeysRequest>) -> Result<Response<KvKeysReply>, Status> {
        let r = req.into_inner();
        let keys = self.gcs.store().keys(&kv_table(&r.namespace), &r.prefix).await.map_err(store_err)?;
        Ok(Response::new(KvKeysReply { keys }))
    }

    async fn exists(&self, req: Request<KvExistsRequest>) -> Result<Response<KvExistsReply>, Status> {
        let r = req.into_inner();
        let v = self.gcs.store().get(&kv_table(&r.namespace), &r.key).await.map_err(store_err)?;
        Ok(Response::new(KvExistsReply { exists: v.is_some() }))
    }
}

#[tonic::async_trait]
impl AutoscalerStateService for GcsService {
    async fn get_cluster_resource_state(
        &self,
        _req: Request<GetClusterResourceStateRequest>,
    ) -> Result<Response<GetClusterResourceStateReply>, Status> {
        Ok(Response::new(GetClusterResourceStateReply {
            cluster_resource_state: Some(self.gcs.state().cluster_resource_state()),
        }))
    }

    async fn report_autoscaling_state(
        &self,
        req: Request<ReportAutoscalingStateRequest>,
    ) -> Result<Response<ReportAutoscalingStateReply>, Status> {
        let Some(s) = req.into_inner().autoscaling_state else {
            return Err(Status::invalid_argument("invalid autoscaling_state: missing"));
        };
        self.gcs.change(|st| ((), st.set_autoscaling_state(s)));
        Ok(Response::new(ReportAutoscalingStateReply {}))
    }

    async fn request_cluster_resource_constraint(
        &self,
        req: Request<RequestClusterResourceConstraintRequest>,
    ) -> Result<Response<RequestClusterResourceConstraintReply>, Status> {
        let c = req.into_inner().cluster_resource_constraint.unwrap_or_default();
        for r in &c.resource_requests {
            let bundle = r.request.as_ref().map(|r| &r.resources_bundle);
            if let Some(b) = bundle {
                ray_common::ResourceSet::from_f64_map(b)
                    .map_err(|e| Status::invalid_argument(format!("invalid resource request bundle: {e}")))?;
            }
        }
        tracing::info!(constraint = ?c.resource_requests, "request_resources constraint set");
        self.gcs.change(|st| ((), Some(st.set_constraint(c))));
        self.gcs.persist().await;
        Ok(Response::new(RequestClusterResourceConstraintReply {}))
    }

    async fn get_cluster_status(
        &self,
        _req: Request<GetClusterStatusRequest>,
    ) -> Result<Response<GetClusterStatusReply>, Status> {
        let st = self.gcs.state();
        Ok(Response::new(GetClusterStatusReply {
            autoscaling_state: st.autoscaling_state().cloned(),
            cluster_resource_state: Some(st.cluster_resource_state()),
        }))
    }

    async fn drain_node(&self, req: Request<DrainNodeRequest>) -> Result<Response<DrainNodeReply>, Status> {
        let r = req.into_inner();
        let (addr, alive) = {
            let st = self.gcs.state();
            let Some(e) = st.node(&r.node_id) else {
                return Err(Status::not_found(format!("node {} is not registered with this GCS", ray_common::ids::truncate(&r.node_id, 64))));
            };
            let alive = e.info.state != ray_proto::rpc::NodeState::Dead as i32;
            (format!("{}:{}", e.info.node_manager_address, e.info.node_manager_port), alive)
        };
        if !alive {
            // Draining a dead node is trivially done.
            return Ok(Response::new(DrainNodeReply { is_accepted: true, rejection_reason_message: String::new() }));
        }
        let ch = self
            .gcs
            .security()
            .connect(&addr, Duration::from_secs(5))
            .await
            .map_err(|e| Status::unavailable(format!("cannot reach the raylet to drain it: {e}")))?;
        let reply = NodeManagerServiceClient::new(ch)
            .drain_raylet(DrainRayletRequest {
                reason: r.reason,
                reason_message: r.reason_message.clone(),
                deadline_timestamp_ms: r.deadline_timestamp_ms,
            })
            .await
            .map_err(|s| Status::unavailable(format!("the raylet at {addr} did not take the drain request: {}", s.message())))?
            .into_inner();
        if reply.is_accepted {
            tracing::info!(node_id = %r.node_id, reason = ?r.reason(), message = %r.reason_message, "node draining");
            self.gcs.change(|st| ((), st.mark_draining(&r.node_id).ok().flatten()));
        } else {
            tracing::info!(node_id = %r.node_id, why = %reply.rejection_reason_message, "drain rejected by raylet");
        }
        self.gcs.persist().await;
        Ok(Response::new(DrainNodeReply {
            is_accepted: reply.is_accepted,
            rejection_reason_message: reply.rejection_reason_message,
        }))
    }
}

#[tonic::async_trait]
impl JobInfoGcsService for GcsService {
    async fn add_job(&self, req: Request<AddJobRequest>) -> Result<Response<AddJobReply>, Status> {
        let job = req.into_inner().job.unwrap_or_default();
        let pid = job.driver_pid;
        let job_id = self.gcs.state().add_job(job);
        tracing::info!(job_id = %job_id, driver_pid = pid, "job started");
        self.gcs.persist().await;
        Ok(Response::new(AddJobReply { job_id }))
    }

    async fn mark_job_finished(&self, req: Request<MarkJobFinishedRequest>) -> Result<Response<MarkJobFinishedReply>, Status> {
        let id = req.into_inner().job_id;
        self.gcs.state().finish_job(&id);
        tracing::info!(job_id = %id, "job finished");
        self.end_actors_of_job(&id).await;
        self.gcs.persist().await;
        Ok(Response::new(MarkJobFinishedReply {}))
    }

    async fn get_all_job_info(&self, _req: Request<GetAllJobInfoRequest>) -> Result<Response<GetAllJobInfoReply>, Status> {
        Ok(Response::new(GetAllJobInfoReply { jobs: self.gcs.state().jobs().to_vec() }))
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<ChangeEvent, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl GcsSubscriberService for GcsService {
    type SubscribeStream = EventStream;

    async fn subscribe(&self, req: Request<SubscribeRequest>) -> Result<Response<Self::SubscribeStream>, Status> {
        let channels: Vec<i32> = req.into_inner().channels;
        let mut rx = self.gcs.subscribe();
        let gcs = self.gcs.clone();
        let shutdown = self.gcs.shutdown_token().clone();
        let stream = async_stream::stream! {
            // Start with the current version so a subscriber knows where it stands.
            let v = gcs.state().version();
            yield Ok(ChangeEvent { channel: Channel::Unspecified as i32, version: v, node: None });
            loop {
                let ev = tokio::select! {
                    ev = rx.recv() => ev,
                    _ = shutdown.cancelled() => break,
                };
                match ev {
                    Ok(ev) if channels.is_empty() || channels.contains(&ev.channel) => yield Ok(ev),
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => {
                        let v = gcs.state().version();
                        yield Ok(ChangeEvent { channel: Channel::Unspecified as i32, version: v, node: None });
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }
}
