//! The seam to the launcher's node updater: setting Ray up on instances whose
//! provider does not start Ray itself (machines reached over SSH). The
//! autoscaler decides when; the implementation (`ray-launcher`) knows how: file
//! mounts, the workers' setup commands and `worker_start_ray_commands`, and the
//! status tags Ray shows (`waiting-for-ssh` ... `up-to-date`, `update-failed`).

use async_trait::async_trait;
use ray_providers::CloudInstance;

/// Sets Ray up on launched instances, and says which instances are out of date.
#[async_trait]
pub trait NodeSetup: Send + Sync {
    /// The launch hash new instances of `node_type` carry (its `node_config` and
    /// the cluster's `auth`). A running instance with another hash is replaced.
    fn launch_hash(&self, node_type: &str) -> Option<String>;

    /// The runtime hash an instance of `node_type` carries once set up with the
    /// current config (its commands and file mounts). A running instance with
    /// another one is set up again.
    fn runtime_hash(&self, node_type: &str) -> Option<String>;

    /// Sets Ray up on `instance`: waits for SSH, syncs the file mounts, runs the
    /// setup and start commands. The error says which step failed and why, for
    /// `ray status`; the node's log has the output.
    async fn set_up(&self, instance: &CloudInstance, node_type: &str) -> Result<(), String>;
}
