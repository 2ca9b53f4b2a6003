//! The node-provider seam: what the autoscaler needs from a cloud, and nothing
//! cloud-specific. Compare Kubernetes cluster-autoscaler's `NodeGroup` and Ray's
//! `NodeProvider`: create N instances of a node type with tags (idempotently, keyed
//! by a launch request id), terminate, list the cluster's instances, and an
//! optional bootstrap step. Errors are classified so the autoscaler can back off,
//! fall back, and tell the user why without knowing which cloud spoke.
//!
//! Providers live in crates of their own (`ray-provider-fake-multinode`, ...), and
//! `ray-provider-registry` builds the one a config names, each behind its own cargo
//! feature, so this crate stays free of every cloud SDK.

pub mod helpers;

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use ray_common::ResourceSet;
use serde::{Deserialize, Serialize};

/// Tag: the cluster an instance belongs to.
pub const TAG_CLUSTER_NAME: &str = "ray-cluster-name";
/// Tag: `head` or `worker` (Ray's legacy name for the node kind).
pub const TAG_NODE_KIND: &str = "ray-node-type";
/// Tag: the node type from `available_node_types`.
pub const TAG_USER_NODE_TYPE: &str = "ray-user-node-type";
/// Tag: the instance's name.
pub const TAG_NODE_NAME: &str = "ray-node-name";
/// Tag: the launch request that created the instance (idempotency key).
pub const TAG_LAUNCH_REQUEST: &str = "ray-launch-request";
/// Tag: the autoscaler's instance id for this cloud instance.
pub const TAG_INSTANCE_ID: &str = "ray-instance-id";
/// Tag: where setting Ray up on the node stands (see [`node_status`]).
pub const TAG_NODE_STATUS: &str = "ray-node-status";
/// Tag: hash of what the node was launched with (node_config and auth); a node
/// whose hash differs from the config's is out of date and replaced.
pub const TAG_LAUNCH_CONFIG: &str = "ray-launch-config";
/// Tag: hash of what was set up on the node (commands and file mounts); a node
/// whose hash differs is updated in place.
pub const TAG_RUNTIME_CONFIG: &str = "ray-runtime-config";
/// Tag: hash of the contents of the file mounts synced to the node.
pub const TAG_FILE_MOUNTS_CONTENTS: &str = "ray-file-mounts-contents";
/// `head` or `worker` values of [`TAG_NODE_KIND`].
pub const NODE_KIND_HEAD: &str = "head";
/// A worker node.
pub const NODE_KIND_WORKER: &str = "worker";

/// Values of [`TAG_NODE_STATUS`], as Ray shows them.
pub mod node_status {
    /// Launched; nothing set up yet.
    pub const UNINITIALIZED: &str = "uninitialized";
    /// Waiting until the node answers SSH.
    pub const WAITING_FOR_SSH: &str = "waiting-for-ssh";
    /// Copying file mounts.
    pub const SYNCING_FILES: &str = "syncing-files";
    /// Running initialization, setup and start commands.
    pub const SETTING_UP: &str = "setting-up";
    /// Set up with the current config.
    pub const UP_TO_DATE: &str = "up-to-date";
    /// Setting up failed; see the node's log.
    pub const UPDATE_FAILED: &str = "update-failed";
}

/// What a provider's failure means for the autoscaler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The cloud has no capacity for this type now (try later or another type/zone).
    Capacity,
    /// An account quota or limit was hit.
    Quota,
    /// The API asked us to slow down.
    Throttled,
    /// Credentials missing, expired or not allowed.
    Auth,
    /// The node_config or provider section is wrong; retrying will not help.
    InvalidConfig,
    /// A network or server hiccup; retry.
    Transient,
    /// Anything else.
    Other,
}

impl ErrorClass {
    /// True when retrying the same call later may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Capacity | Self::Quota | Self::Throttled | Self::Transient | Self::Other)
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Capacity => "capacity",
            Self::Quota => "quota",
            Self::Throttled => "throttled",
            Self::Auth => "auth",
            Self::InvalidConfig => "invalid config",
            Self::Transient => "transient",
            Self::Other => "other",
        })
    }
}

/// A classified provider failure.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{class}: {message}")]
pub struct ProviderError {
    /// What kind of failure.
    pub class: ErrorClass,
    /// What the cloud (or the local provider) said, for people.
    pub message: String,
}

impl ProviderError {
    /// A new error.
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Self { class, message: message.into() }
    }
}

/// Lifecycle of a cloud instance as the provider sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloudState {
    /// Being created or booting.
    Pending,
    /// Up.
    Running,
    /// Being shut down.
    Terminating,
}

/// One instance in the provider's listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudInstance {
    /// The provider's id (EC2 instance id, process-based id, ...).
    pub cloud_id: String,
    /// Node type from the cluster config.
    pub node_type: String,
    /// State.
    pub state: CloudState,
    /// Tags, including the launch request id.
    pub tags: BTreeMap<String, String>,
    /// Address inside the cluster's network.
    pub internal_ip: Option<String>,
    /// Public address, when there is one.
    pub external_ip: Option<String>,
}

impl CloudInstance {
    /// The launch request that created it.
    pub fn launch_request(&self) -> Option<&str> {
        self.tags.get(TAG_LAUNCH_REQUEST).map(String::as_str)
    }
}

/// A request to create instances.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    /// Idempotency key: creating twice with the same id never yields more than
    /// `instance_ids.len()` instances in total.
    pub request_id: String,
    /// Node type.
    pub node_type: String,
    /// The autoscaler's ids of the instances to create (one per instance).
    pub instance_ids: Vec<String>,
    /// Provider-specific settings of the node type (`node_config`).
    pub node_config: serde_json::Value,
    /// Resources the node offers to Ray.
    pub resources: ResourceSet,
    /// Node labels.
    pub labels: BTreeMap<String, String>,
    /// Tags to put on every instance.
    pub tags: BTreeMap<String, String>,
}

/// A node provider.
#[async_trait]
pub trait NodeProvider: Send + Sync {
    /// Short name for logs (`fake_multinode`, `aws`, ...).
    fn name(&self) -> &str;

    /// Creates the instances of `req` that do not exist yet (idempotent by
    /// `request_id` and instance id). Returns the instances of the request.
    async fn create(&self, req: &CreateRequest) -> Result<Vec<CloudInstance>, ProviderError>;

    /// Terminates instances. Unknown ids are ignored (already gone).
    async fn terminate(&self, cloud_ids: &[String]) -> Result<(), ProviderError>;

    /// The cluster's non-terminated instances.
    async fn list(&self) -> Result<Vec<CloudInstance>, ProviderError>;

    /// Adds or replaces tags of an instance (node status, config hashes).
    async fn set_tags(&self, cloud_id: &str, tags: &BTreeMap<String, String>) -> Result<(), ProviderError>;

    /// True when the provider starts Ray on its instances itself (the local
    /// processes of `fake_multinode`); false when the launcher sets Ray up on
    /// them (over SSH) with the config's setup and start commands.
    fn starts_ray_itself(&self) -> bool {
        false
    }

    /// True when the workers it launches start Ray and join the head by
    /// themselves (local processes, or cloud-init user data): the autoscaler then
    /// sets nothing up on them over SSH and waits for their raylets.
    fn boots_workers_itself(&self) -> bool {
        self.starts_ray_itself()
    }

    /// Fills in cloud defaults of a cluster config's `provider` and node configs
    /// (security group, key pair, IAM profile, subnets) before anything launches.
    /// Local providers need nothing.
    async fn bootstrap(&self, config: serde_json::Value) -> Result<serde_json::Value, ProviderError> {
        Ok(config)
    }
}

/// Where a provider runs and what it may hand to the nodes it starts.
#[derive(Debug, Clone)]
pub struct ProviderContext {
    /// `cluster_name` from the config.
    pub cluster_name: String,
    /// GCS address the nodes join.
    pub gcs_address: String,
    /// Temp root of the session (for local providers' state and logs).
    pub temp_root: std::path::PathBuf,
    /// Session name.
    pub session_name: String,
    /// The `ray` executable (local providers start raylets from it).
    pub ray_executable: std::path::PathBuf,
    /// Environment for started nodes (cluster token by value, TLS paths).
    pub node_env: Vec<(String, String)>,
    /// The cluster config's `auth` section (SSH user and key), for providers that
    /// reach their machines over SSH.
    pub auth: serde_json::Value,
    /// Per node type, the commands that set up and start Ray on a worker (its
    /// initialization, setup and start commands), for providers that boot
    /// workers themselves (the AWS provider's `launch_via: user_data`).
    pub boot_commands: BTreeMap<String, Vec<String>>,
}
