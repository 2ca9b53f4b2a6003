//! The autoscaler's view of the Ray cluster: what it reads (the cluster resource
//! state), what it asks (drain a node), what it tells (the autoscaling state), and
//! how it learns that something changed. [`GcsCluster`] is the real one, over the
//! GCS; tests use an in-memory one.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ray_common::gcs_client::GcsClient;
use ray_proto::rpc::autoscaler::{
    AutoscalingState, ClusterResourceState, DrainNodeReason, DrainNodeRequest, GetClusterResourceStateRequest,
    ReportAutoscalingStateRequest,
};
use ray_proto::rpc::{Channel as EventChannel, SubscribeRequest};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// A call to the cluster that failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClusterError {
    /// The call did not get an answer (the GCS is down, restarting, unreachable).
    #[error("cannot {call}: {message}")]
    Call {
        /// What was being done, in words ("read the cluster state").
        call: &'static str,
        /// What the transport or the server said.
        message: String,
    },
}

/// The answer to a drain request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainOutcome {
    /// True when the node will take no new work and can be terminated.
    pub accepted: bool,
    /// Why it was refused (empty when accepted).
    pub rejection: String,
}

/// What the autoscaler needs from the cluster it scales.
#[async_trait]
pub trait Cluster: Send + Sync {
    /// The current resource state; `last_seen_version` is the version the caller
    /// last saw.
    async fn resource_state(&self, last_seen_version: u64) -> Result<ClusterResourceState, ClusterError>;

    /// Asks for a node to be drained; a busy node refuses.
    async fn drain_node(&self, node_id: &str, reason: DrainNodeReason, message: &str) -> Result<DrainOutcome, ClusterError>;

    /// Publishes the autoscaling state (`ray status` reads it).
    async fn report(&self, state: &AutoscalingState) -> Result<(), ClusterError>;

    /// Calls `wake.notify_one()` whenever something that matters to scaling
    /// changes, until `shutdown`.
    async fn watch(&self, wake: Arc<Notify>, shutdown: CancellationToken);
}

/// The cluster behind a GCS.
#[derive(Clone)]
pub struct GcsCluster {
    gcs: GcsClient,
}

impl GcsCluster {
    /// Over a GCS client.
    pub fn new(gcs: GcsClient) -> Self {
        Self { gcs }
    }
}

#[async_trait]
impl Cluster for GcsCluster {
    async fn resource_state(&self, last_seen_version: u64) -> Result<ClusterResourceState, ClusterError> {
        let req = GetClusterResourceStateRequest { last_seen_cluster_resource_state_version: last_seen_version };
        let reply = self
            .gcs
            .autoscaler
            .clone()
            .get_cluster_resource_state(req)
            .await
            .map_err(|s| ClusterError::Call { call: "read the cluster state from the GCS", message: s.message().into() })?;
        Ok(reply.into_inner().cluster_resource_state.unwrap_or_default())
    }

    async fn drain_node(&self, node_id: &str, reason: DrainNodeReason, message: &str) -> Result<DrainOutcome, ClusterError> {
        let req = DrainNodeRequest {
            node_id: node_id.to_string(),
            reason: reason as i32,
            reason_message: message.to_string(),
            deadline_timestamp_ms: 0,
        };
        let r = self
            .gcs
            .autoscaler
            .clone()
            .drain_node(req)
            .await
            .map_err(|s| ClusterError::Call { call: "drain the node", message: s.message().into() })?
            .into_inner();
        Ok(DrainOutcome { accepted: r.is_accepted, rejection: r.rejection_reason_message })
    }

    async fn report(&self, state: &AutoscalingState) -> Result<(), ClusterError> {
        let req = ReportAutoscalingStateRequest { autoscaling_state: Some(state.clone()) };
        self.gcs
            .autoscaler
            .clone()
            .report_autoscaling_state(req)
            .await
            .map_err(|s| ClusterError::Call { call: "report the autoscaling state", message: s.message().into() })?;
        Ok(())
    }

    /// Subscribes to the GCS change stream (nodes, resources, constraints) and
    /// reconnects after errors.
    async fn watch(&self, wake: Arc<Notify>, shutdown: CancellationToken) {
        let channels = vec![EventChannel::Nodes as i32, EventChannel::Resources as i32, EventChannel::Constraints as i32];
        loop {
            let stream = self.gcs.subscriber.clone().subscribe(SubscribeRequest { channels: channels.clone() }).await;
            match stream {
                Ok(resp) => {
                    let mut s = resp.into_inner();
                    loop {
                        tokio::select! {
                            m = s.message() => match m {
                                Ok(Some(_)) => wake.notify_one(),
                                Ok(None) | Err(_) => break,
                            },
                            _ = shutdown.cancelled() => return,
                        }
                    }
                }
                Err(s) => tracing::debug!(error = %s.message(), "cannot subscribe to GCS changes yet"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }
}
