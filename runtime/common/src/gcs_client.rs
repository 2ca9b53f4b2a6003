//! A client of every GCS service over one authenticated channel.

use std::time::Duration;

use ray_proto::rpc::autoscaler::autoscaler_state_service_client::AutoscalerStateServiceClient;
use ray_proto::rpc::gcs_subscriber_service_client::GcsSubscriberServiceClient;
use ray_proto::rpc::internal_kv_gcs_service_client::InternalKvGcsServiceClient;
use ray_proto::rpc::node_info_gcs_service_client::NodeInfoGcsServiceClient;
use ray_proto::rpc::node_resource_gcs_service_client::NodeResourceGcsServiceClient;
use ray_proto::rpc::placement_group_info_gcs_service_client::PlacementGroupInfoGcsServiceClient;
use ray_proto::rpc::{GetClusterInfoReply, GetClusterInfoRequest, KvGetRequest, KvPutRequest, KvDelRequest, KvKeysRequest, KvMultiGetRequest};

use crate::gcs_reconnect::Reconnecting;
use crate::rpc::{Channel, ConnectError, MAX_MESSAGE_BYTES, Security, explain_status};

/// The channel every GCS client uses: it waits out a GCS restart.
pub type GcsChannel = Reconnecting;

/// Typed clients of the GCS sharing one connection.
#[derive(Clone)]
pub struct GcsClient {
    addr: String,
    /// Node table.
    pub nodes: NodeInfoGcsServiceClient<GcsChannel>,
    /// Resource reports and usage.
    pub resources: NodeResourceGcsServiceClient<GcsChannel>,
    /// Internal KV.
    pub kv: InternalKvGcsServiceClient<GcsChannel>,
    /// Autoscaler state.
    pub autoscaler: AutoscalerStateServiceClient<GcsChannel>,
    /// Change stream.
    pub subscriber: GcsSubscriberServiceClient<GcsChannel>,
    /// Placement groups.
    pub placement_groups: PlacementGroupInfoGcsServiceClient<GcsChannel>,
    /// Task events.
    pub tasks: ray_proto::rpc::task_info_gcs_service_client::TaskInfoGcsServiceClient<GcsChannel>,
    /// Jobs.
    pub jobs: ray_proto::rpc::job_info_gcs_service_client::JobInfoGcsServiceClient<GcsChannel>,
    /// Actors.
    pub actors: ray_proto::rpc::actor_info_gcs_service_client::ActorInfoGcsServiceClient<GcsChannel>,
}

/// A GCS that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum GcsConnectError {
    /// No connection.
    #[error("cannot reach the GCS: {0}")]
    Connect(#[from] ConnectError),
    /// Connected, but the first call failed (wrong token, not a GCS, ...).
    #[error("{0}")]
    Call(String),
}

impl GcsClient {
    /// Connects and checks the GCS answers (and accepts our token) with one call.
    pub async fn connect(addr: &str, security: &Security, timeout: Duration) -> Result<(Self, GetClusterInfoReply), GcsConnectError> {
        let ch = security.connect(addr, timeout).await?;
        let client = Self::from_channel(addr, ch);
        let info = tokio::time::timeout(timeout, client.nodes.clone().get_cluster_info(GetClusterInfoRequest {}))
            .await
            .map_err(|_| GcsConnectError::Call(format!("the GCS at {addr} did not answer within {timeout:?}")))?
            .map_err(|s| GcsConnectError::Call(explain_status(addr, &s)))?
            .into_inner();
        Ok((client, info))
    }

    /// A client that connects on first use.
    pub fn lazy(addr: &str, security: &Security, timeout: Duration) -> Result<Self, ConnectError> {
        Ok(Self::from_channel(addr, security.connect_lazy(addr, timeout)?))
    }

    fn from_channel(addr: &str, ch: Channel) -> Self {
        let patience = crate::config::RayConfig::from_env()
            .map(|c| c.gcs_rpc_server_reconnect_timeout_s)
            .unwrap_or(60);
        let ch = Reconnecting::new(ch, addr, Duration::from_secs(patience));
        Self {
            addr: addr.to_string(),
            nodes: NodeInfoGcsServiceClient::new(ch.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES),
            resources: NodeResourceGcsServiceClient::new(ch.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES),
            kv: InternalKvGcsServiceClient::new(ch.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES),
            autoscaler: AutoscalerStateServiceClient::new(ch.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES),
            subscriber: GcsSubscriberServiceClient::new(ch.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES),
            placement_groups: PlacementGroupInfoGcsServiceClient::new(ch.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES),
            tasks: ray_proto::rpc::task_info_gcs_service_client::TaskInfoGcsServiceClient::new(ch.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            jobs: ray_proto::rpc::job_info_gcs_service_client::JobInfoGcsServiceClient::new(ch.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            actors: ray_proto::rpc::actor_info_gcs_service_client::ActorInfoGcsServiceClient::new(ch)
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        }
    }

    /// The address it talks to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Reads one KV key.
    pub async fn kv_get(&self, namespace: &str, key: &[u8]) -> Result<Option<Vec<u8>>, tonic::Status> {
        Ok(self
            .kv
            .clone()
            .get(KvGetRequest { namespace: namespace.into(), key: key.to_vec() })
            .await?
            .into_inner()
            .value)
    }

    /// Reads several KV keys in one call. Keys that do not exist are left out of
    /// the answer, so it may hold fewer entries than `keys`, in any order.
    pub async fn kv_multi_get(&self, namespace: &str, keys: &[Vec<u8>]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, tonic::Status> {
        Ok(self
            .kv
            .clone()
            .multi_get(KvMultiGetRequest { namespace: namespace.into(), keys: keys.to_vec() })
            .await?
            .into_inner()
            .entries
            .into_iter()
            .map(|e| (e.key, e.value))
            .collect())
    }

    /// Writes one KV key (overwriting).
    pub async fn kv_put(&self, namespace: &str, key: &[u8], value: Vec<u8>) -> Result<(), tonic::Status> {
        self.kv
            .clone()
            .put(KvPutRequest { namespace: namespace.into(), key: key.to_vec(), value, overwrite: true })
            .await?;
        Ok(())
    }

    /// Deletes one KV key.
    pub async fn kv_del(&self, namespace: &str, key: &[u8]) -> Result<(), tonic::Status> {
        self.kv
            .clone()
            .del(KvDelRequest { namespace: namespace.into(), key: key.to_vec(), del_by_prefix: false })
            .await?;
        Ok(())
    }

    /// Keys under a prefix.
    pub async fn kv_keys(&self, namespace: &str, prefix: &[u8]) -> Result<Vec<Vec<u8>>, tonic::Status> {
        Ok(self
            .kv
            .clone()
            .keys(KvKeysRequest { namespace: namespace.into(), prefix: prefix.to_vec() })
            .await?
            .into_inner()
            .keys)
    }
}
