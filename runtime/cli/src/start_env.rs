//! What a cluster launcher tells `ray start` through the environment, as Ray's
//! updater does: the node's instance id and node type (so the autoscaler knows
//! which of its instances a new node is), its resources and labels from the
//! config's node type (they win over flags and detection, as in Ray), and, our
//! own addition, the node's address (`RAY_NODE_IP_ADDRESS`, used when
//! `--node-ip-address` is not given).

use std::collections::BTreeMap;

use anyhow::{Result, anyhow};

use crate::args::StartFlags;

/// The provider's id of this machine.
pub const INSTANCE_ID: &str = "RAY_CLOUD_INSTANCE_ID";
/// The node type from the cluster config.
pub const NODE_TYPE: &str = "RAY_NODE_TYPE_NAME";
/// The node type's resources, JSON.
pub const RESOURCES: &str = "RAY_OVERRIDE_RESOURCES";
/// The node type's labels, JSON.
pub const LABELS: &str = "RAY_OVERRIDE_LABELS";
/// This machine's address, when `--node-ip-address` is not given.
pub const NODE_IP: &str = "RAY_NODE_IP_ADDRESS";

/// The instance id and node type a launcher gave, for the raylet.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct LaunchedAs {
    /// `RAY_CLOUD_INSTANCE_ID`.
    pub instance_id: Option<String>,
    /// `RAY_NODE_TYPE_NAME`.
    pub node_type: Option<String>,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Applies the launcher's variables to `a`; returns the instance id and type.
pub fn apply(a: &mut StartFlags) -> Result<LaunchedAs> {
    if a.node_ip_address.is_none()
        && let Some(ip) = var(NODE_IP)
    {
        a.node_ip_address = Some(ip.trim().parse().map_err(|_| anyhow!("{NODE_IP}={ip:?}: expected an IP address"))?);
    }
    if let Some(json) = var(RESOURCES) {
        let map: BTreeMap<String, f64> =
            serde_json::from_str(&json).map_err(|e| anyhow!("{RESOURCES}: expected a JSON object of resource amounts: {e}"))?;
        let mut custom = a.resources.take().unwrap_or_default();
        for (k, v) in map {
            if !v.is_finite() || v < 0.0 {
                return Err(anyhow!("{RESOURCES}: {k} = {v}: expected a non-negative number"));
            }
            match k.as_str() {
                "CPU" => a.num_cpus = Some(v),
                "GPU" => a.num_gpus = Some(v),
                "memory" => a.memory = Some(v as u64),
                "object_store_memory" => a.object_store_memory = Some(v as u64),
                _ => {
                    custom.insert(k, v);
                }
            }
        }
        a.resources = (!custom.is_empty()).then_some(custom);
    }
    if let Some(json) = var(LABELS) {
        let map: BTreeMap<String, String> =
            serde_json::from_str(&json).map_err(|e| anyhow!("{LABELS}: expected a JSON object of string labels: {e}"))?;
        let mut labels = a.labels.take().unwrap_or_default();
        labels.extend(map);
        a.labels = Some(labels);
    }
    Ok(LaunchedAs { instance_id: var(INSTANCE_ID), node_type: var(NODE_TYPE) })
}
