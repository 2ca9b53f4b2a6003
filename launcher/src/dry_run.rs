//! `ray up --dry-run`: the resolved config and what `ray up` would do, node by
//! node, without calling the provider or any host.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ray_autoscaler::config::ClusterConfig;

use crate::bootstrap::{HEAD_CONFIG_PATH, HEAD_KEY_PATH, head_config};
use crate::node_plan::{self, Role};

/// The report: the resolved config (as the head would get it) and the plan.
pub fn report(config: &ClusterConfig, provider_name: &str, starts_ray_itself: bool) -> String {
    let mut s = String::new();
    let key = config.auth.ssh_private_key.as_ref().map(|_| HEAD_KEY_PATH);
    let doc = head_config(config, key);
    let _ = writeln!(s, "Resolved config (as the head's autoscaler would read it, {HEAD_CONFIG_PATH}):");
    for line in serde_json::to_string_pretty(&doc).unwrap_or_default().lines() {
        let _ = writeln!(s, "  {line}");
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "What `ray up` would do (nothing below has been done):");
    let _ = writeln!(s, "  1. provider {provider_name}: bootstrap the config (fill in cloud defaults, if the provider has any)");
    let head_type = &config.head_node_type;
    if starts_ray_itself {
        let _ = writeln!(s, "  2. head node: this machine (worker nodes are local raylet processes the autoscaler starts)");
    } else {
        let _ = writeln!(s, "  2. head node: reuse the cluster's head if its launch config is unchanged, else launch one of type {head_type:?}");
    }
    let mut mounts: BTreeMap<String, String> = config.file_mounts.clone();
    mounts.insert(HEAD_CONFIG_PATH.into(), "(the resolved config above)".into());
    if let Some(k) = &config.auth.ssh_private_key {
        mounts.insert(HEAD_KEY_PATH.into(), k.clone());
    }
    let _ = writeln!(s, "  3. on the head:");
    write_node(&mut s, config, head_type, Role::Head, &mounts);
    for t in config.node_types.iter().filter(|t| t.name != *head_type) {
        let _ = writeln!(s, "  workers of type {:?} (min {}, max {}), set up by the head's autoscaler when it launches them:", t.name, t.min_workers, t.max_workers);
        if starts_ray_itself {
            let _ = writeln!(s, "      started as local raylet processes with {}", t.resources);
        } else {
            let worker_mounts: BTreeMap<String, String> = config.file_mounts.keys().map(|k| (k.clone(), k.clone())).collect();
            write_node(&mut s, config, &t.name, Role::Worker, &worker_mounts);
        }
    }
    s
}

fn write_node(s: &mut String, config: &ClusterConfig, node_type: &str, role: Role, mounts: &BTreeMap<String, String>) {
    let c = node_plan::commands(config, node_type, role);
    for (remote, local) in mounts {
        let _ = writeln!(s, "      sync {local} -> {remote}");
    }
    for (what, list) in [("initialization", &c.initialization), ("setup", &c.setup), ("start", &c.start)] {
        for cmd in list {
            let _ = writeln!(s, "      {what}: {cmd}");
        }
    }
    if c.start.is_empty() {
        let _ = writeln!(s, "      (no start commands: nothing starts Ray there)");
    }
}
