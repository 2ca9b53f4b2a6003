//! The config the head's autoscaler runs with (`~/ray_bootstrap_config.yaml`, as
//! Ray names it): the resolved cluster config (defaults filled, command-line
//! overrides applied, the provider's bootstrap done), with the file mounts
//! pointing at the head's own copies and the SSH key at the copy the launcher
//! puts on the head (`~/ray_bootstrap_key.pem`). It is JSON, which YAML readers
//! take as it is.

use std::collections::BTreeMap;

use ray_autoscaler::config::{ClusterConfig, NodeTypeConfig};
use serde_json::{Map, Value, json};

/// Where the head keeps the launcher's SSH key (for reaching the workers).
pub const HEAD_KEY_PATH: &str = "~/ray_bootstrap_key.pem";
/// Where the head keeps its config.
pub const HEAD_CONFIG_PATH: &str = "~/ray_bootstrap_config.yaml";

fn strings(v: &[String]) -> Value {
    Value::Array(v.iter().map(|s| Value::String(s.clone())).collect())
}

fn node_type(t: &NodeTypeConfig) -> Value {
    let mut m = Map::new();
    m.insert("node_config".into(), t.node_config.clone());
    m.insert("resources".into(), json!(t.declared_resources));
    m.insert("min_workers".into(), json!(t.min_workers));
    m.insert("max_workers".into(), json!(t.max_workers));
    if let Some(s) = t.idle_timeout_s {
        m.insert("idle_timeout_s".into(), json!(s));
    }
    if t.priority != 0 {
        m.insert("priority".into(), json!(t.priority));
    }
    if let Some(p) = t.price {
        m.insert("price".into(), json!(p));
    }
    if !t.labels.is_empty() {
        m.insert("labels".into(), json!(t.labels));
    }
    if let Some(c) = &t.initialization_commands {
        m.insert("initialization_commands".into(), strings(c));
    }
    if let Some(c) = &t.worker_setup_commands {
        m.insert("worker_setup_commands".into(), strings(c));
    }
    if let Some(d) = &t.docker {
        m.insert("docker".into(), d.clone());
    }
    Value::Object(m)
}

/// The part of a config a provider's bootstrap reads and fills in: the provider
/// section, `auth`, the head's type and each type's `node_config`.
pub fn provider_doc(config: &ClusterConfig) -> Value {
    let types: Map<String, Value> = config.node_types.iter().map(|t| (t.name.clone(), json!({"node_config": t.node_config}))).collect();
    json!({
        "cluster_name": config.cluster_name,
        "provider": config.provider,
        "auth": crate::node_plan::auth_json(config),
        "head_node_type": config.head_node_type,
        "available_node_types": types,
    })
}

/// Takes what a provider's bootstrap filled in ([`provider_doc`]'s shape) into
/// `config`.
pub fn apply(config: &mut ClusterConfig, doc: &Value) {
    if let Some(p) = doc.get("provider") {
        config.provider = p.clone();
    }
    if let Some(k) = doc.pointer("/auth/ssh_private_key").and_then(Value::as_str) {
        config.auth.ssh_private_key = Some(k.to_string());
    }
    for t in &mut config.node_types {
        if let Some(nc) = doc.get("available_node_types").and_then(|ts| ts.get(&t.name)).and_then(|t| t.get("node_config")) {
            t.node_config = nc.clone();
        }
    }
}

/// The head's config. `key_on_head` is where the SSH key is copied (None when
/// the config names no key: the head then relies on its own SSH set-up).
pub fn head_config(config: &ClusterConfig, key_on_head: Option<&str>) -> Value {
    let mut auth = Map::new();
    if let Some(u) = &config.auth.ssh_user {
        auth.insert("ssh_user".into(), json!(u));
    }
    if let Some(k) = key_on_head {
        auth.insert("ssh_private_key".into(), json!(k));
    }
    // No `ssh_proxy_command`: the proxy is how this machine reaches the cluster;
    // the head reaches its workers directly, inside the cluster (as Ray's does).
    // The workers' file mounts come from the head's copies.
    let mounts: BTreeMap<&String, &String> = config.file_mounts.keys().map(|k| (k, k)).collect();
    let types: Map<String, Value> = config.node_types.iter().map(|t| (t.name.clone(), node_type(t))).collect();
    let mut m = Map::new();
    m.insert("cluster_name".into(), json!(config.cluster_name));
    m.insert("max_workers".into(), json!(config.max_workers));
    m.insert("upscaling_speed".into(), json!(config.upscaling_speed));
    m.insert("idle_timeout_minutes".into(), json!(config.idle_timeout_minutes));
    m.insert("provider".into(), config.provider.clone());
    m.insert("auth".into(), Value::Object(auth));
    if let Some(d) = &config.docker {
        m.insert("docker".into(), d.clone());
    }
    m.insert("available_node_types".into(), Value::Object(types));
    m.insert("head_node_type".into(), json!(config.head_node_type));
    m.insert("file_mounts".into(), json!(mounts));
    m.insert("cluster_synced_files".into(), strings(&config.cluster_synced_files));
    m.insert("file_mounts_sync_continuously".into(), json!(config.file_mounts_sync_continuously));
    m.insert("rsync_exclude".into(), strings(&config.rsync_exclude));
    m.insert("rsync_filter".into(), strings(&config.rsync_filter));
    m.insert("initialization_commands".into(), strings(&config.initialization_commands));
    // Already merged into the head's and the workers' lists: loading the file
    // merges `setup_commands` in again, so it is left empty here.
    m.insert("setup_commands".into(), json!([]));
    m.insert("head_setup_commands".into(), strings(&config.head_setup_commands));
    m.insert("worker_setup_commands".into(), strings(&config.worker_setup_commands));
    m.insert("head_start_ray_commands".into(), strings(&config.head_start_ray_commands));
    m.insert("worker_start_ray_commands".into(), strings(&config.worker_start_ray_commands));
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
cluster_name: t
max_workers: 3
provider: {type: fake_multinode}
auth: {ssh_user: ubuntu, ssh_private_key: ~/.ssh/id_ed25519}
available_node_types:
  head: {resources: {CPU: 0}, node_config: {}, max_workers: 0}
  worker: {resources: {CPU: 2, custom: 1}, node_config: {}, min_workers: 1, max_workers: 1}
head_node_type: head
file_mounts: {"~/app": "./app"}
setup_commands: [pip install x]
worker_setup_commands: [echo worker]
head_start_ray_commands: [ray stop, "ray start --head --autoscaling-config=~/ray_bootstrap_config.yaml"]
worker_start_ray_commands: [ray stop, "ray start --address=$RAY_HEAD_IP:6379"]
"#;

    #[test]
    fn the_heads_config_loads_back_to_the_same_cluster_with_head_paths() {
        let config = ClusterConfig::parse("cluster.yaml", CONFIG).unwrap();
        let doc = head_config(&config, Some(HEAD_KEY_PATH));
        let back = ClusterConfig::parse("bootstrap.yaml", &doc.to_string()).expect("the head's config loads");
        assert_eq!(back.worker_setup_commands, config.worker_setup_commands, "setup commands are not merged twice");
        assert_eq!(back.head_setup_commands, config.head_setup_commands);
        assert_eq!(back.file_mounts.get("~/app").map(String::as_str), Some("~/app"), "workers copy from the head's copy");
        assert_eq!(back.auth.ssh_private_key.as_deref(), Some(HEAD_KEY_PATH));
        assert_eq!(back.node_types, config.node_types);
        assert_eq!((back.max_workers, &back.head_node_type), (3, &config.head_node_type));
    }
}
