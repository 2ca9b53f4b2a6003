//! What gets set up on a node of a cluster config: its file mounts, its
//! initialization, setup and start commands, the environment Ray's start commands
//! see (`RAY_HEAD_IP`, `RAY_CLOUD_INSTANCE_ID`, `RAY_NODE_TYPE_NAME`,
//! `RAY_OVERRIDE_RESOURCES`, `RAY_OVERRIDE_LABELS`, as Ray's updater exports them),
//! and the hashes that say whether a node already has all that.

use std::collections::BTreeMap;

use ray_autoscaler::config::ClusterConfig;

use crate::hash::{RuntimeHash, launch_hash, runtime_hash};
use crate::runner::SyncFilters;
use crate::updater::UpdatePlan;

/// Head or worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The head node.
    Head,
    /// A worker node.
    Worker,
}

/// The commands of one node type in one role.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeCommands {
    /// `initialization_commands` (the type's own, else the cluster's).
    pub initialization: Vec<String>,
    /// Setup commands (`setup_commands` merged with the role's).
    pub setup: Vec<String>,
    /// `head_start_ray_commands` or `worker_start_ray_commands`.
    pub start: Vec<String>,
}

/// The commands a node of `node_type` runs in `role`.
pub fn commands(config: &ClusterConfig, node_type: &str, role: Role) -> NodeCommands {
    let t = config.node_type(node_type);
    let initialization = t.and_then(|t| t.initialization_commands.clone()).unwrap_or_else(|| config.initialization_commands.clone());
    let (setup, start) = match role {
        Role::Head => (config.head_setup_commands.clone(), config.head_start_ray_commands.clone()),
        Role::Worker => (
            t.and_then(|t| t.worker_setup_commands.clone()).unwrap_or_else(|| config.worker_setup_commands.clone()),
            config.worker_start_ray_commands.clone(),
        ),
    };
    NodeCommands { initialization, setup, start }
}

/// Per node type, a worker's commands in the order they run (initialization,
/// setup, start): what a provider that boots workers itself runs on them.
pub fn boot_commands(config: &ClusterConfig) -> BTreeMap<String, Vec<String>> {
    config
        .node_types
        .iter()
        .map(|t| {
            let c = commands(config, &t.name, Role::Worker);
            (t.name.clone(), [c.initialization, c.setup, c.start].concat())
        })
        .collect()
}

/// The launch hash of a node type: its node_config and the cluster's auth.
pub fn type_launch_hash(config: &ClusterConfig, node_type: &str) -> String {
    let node_config = config.node_type(node_type).map(|t| t.node_config.clone()).unwrap_or_default();
    launch_hash(&node_config, &auth_json(config))
}

/// The cluster's `auth` section as JSON (what the launch hash covers).
pub fn auth_json(config: &ClusterConfig) -> serde_json::Value {
    let a = &config.auth;
    let mut m = serde_json::Map::new();
    let mut put = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            m.insert(k.to_string(), serde_json::Value::String(v.clone()));
        }
    };
    put("ssh_user", &a.ssh_user);
    put("ssh_private_key", &a.ssh_private_key);
    put("ssh_public_key", &a.ssh_public_key);
    put("ssh_proxy_command", &a.ssh_proxy_command);
    serde_json::Value::Object(m)
}

/// The runtime hash of a node in `role`: its commands and file mounts.
pub fn node_runtime_hash(config: &ClusterConfig, node_type: &str, role: Role, file_mounts: &BTreeMap<String, String>) -> RuntimeHash {
    let c = commands(config, node_type, role);
    runtime_hash(&[&c.initialization, &c.setup, &c.start], file_mounts)
}

/// The environment of a node's start commands.
pub fn start_env(config: &ClusterConfig, node_type: &str, cloud_id: &str, head_ip: Option<&str>) -> Vec<(String, String)> {
    let mut env = Vec::new();
    if let Some(ip) = head_ip {
        env.push(("RAY_HEAD_IP".to_string(), ip.to_string()));
    }
    env.push(("RAY_CLOUD_INSTANCE_ID".to_string(), cloud_id.to_string()));
    env.push(("RAY_NODE_TYPE_NAME".to_string(), node_type.to_string()));
    if let Some(t) = config.node_type(node_type) {
        if !t.declared_resources.is_empty() {
            let json = serde_json::to_string(&t.declared_resources).unwrap_or_default();
            env.push(("RAY_OVERRIDE_RESOURCES".to_string(), json));
        }
        if !t.labels.is_empty() {
            env.push(("RAY_OVERRIDE_LABELS".to_string(), serde_json::to_string(&t.labels).unwrap_or_default()));
        }
    }
    env
}

/// rsync settings of the cluster.
pub fn filters(config: &ClusterConfig) -> SyncFilters {
    SyncFilters {
        exclude: config.rsync_exclude.clone(),
        filter: config.rsync_filter.clone(),
        private: false,
    }
}

/// An update plan for a node: `file_mounts` (remote -> local), the role's
/// commands, and the start commands' environment.
pub fn plan(config: &ClusterConfig, node_type: &str, role: Role, file_mounts: &BTreeMap<String, String>, env: Vec<(String, String)>) -> UpdatePlan {
    let c = commands(config, node_type, role);
    UpdatePlan {
        file_mounts: file_mounts.iter().map(|(r, l)| (r.clone(), l.clone())).collect(),
        filters: filters(config),
        initialization_commands: c.initialization,
        setup_commands: c.setup,
        start_commands: c.start,
        start_env: env,
        set_up: true,
        start: true,
    }
}
