//! The raylet's gRPC services (behind the shared auth layer): node manager and
//! the standard health service the GCS checks.

use std::sync::Arc;

use ray_common::rpc::{MAX_MESSAGE_BYTES, Security};
use ray_proto::rpc::autoscaler::DrainNodeReason;
use ray_proto::rpc::node_manager_service_server::{NodeManagerService, NodeManagerServiceServer};
use ray_proto::rpc::*;
use tonic::transport::server::Router;
use tonic::{Request, Response, Status};

use crate::{ExitReason, Raylet};

/// The router type every secured server of this process uses.
pub type SecureRouter = Router<
    tower::layer::util::Stack<
        tonic::service::interceptor::InterceptorLayer<ray_common::auth::ServerAuth>,
        tower::layer::util::Identity,
    >,
>;

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
        let r = self.raylet.resources();
        Ok(Response::new(GetNodeStatsReply {
            node_id: self.raylet.node_id().to_string(),
            resources_total: r.total().to_f64_map(),
            resources_available: r.available().to_f64_map(),
            demand: r.demand_report(),
            state: if r.drain_state().is_some() { NodeState::Draining as i32 } else { NodeState::Alive as i32 },
            num_workers: 0,
        }))
    }

    async fn shutdown_raylet(&self, req: Request<ShutdownRayletRequest>) -> Result<Response<ShutdownRayletReply>, Status> {
        tracing::info!(graceful = req.get_ref().graceful, "shutdown requested over RPC");
        self.raylet.stop(ExitReason::Requested);
        Ok(Response::new(ShutdownRayletReply {}))
    }
}
