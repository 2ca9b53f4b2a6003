//! Plan: turns the scheduler's [`Decision`] into recorded instances and actions.
//! A launch is recorded as QUEUED and then REQUESTED (with its launch request id)
//! before it is returned; a retirement is recorded as DRAINING before the drain is
//! returned. What could not be recorded is not done.

use std::collections::BTreeMap;

use ray_proto::rpc::autoscaler::ClusterResourceState;
use ray_providers::{CreateRequest, TAG_CLUSTER_NAME, TAG_LAUNCH_CONFIG, TAG_NODE_KIND, TAG_NODE_NAME, TAG_USER_NODE_TYPE};

use super::{Action, Context, new_id};
use crate::instance::manager::InstanceManager;
use crate::instance::{Instance, InstanceStatus};
use crate::scheduler::{Decision, TerminateReason};

/// The actions of a decision: launches of what it adds, drains of what it retires.
pub async fn plan(m: &mut InstanceManager, cx: &Context<'_>, d: &Decision, state: &ClusterResourceState) -> Vec<Action> {
    let mut actions = Vec::new();
    for ((node_type, reason), n) in &d.launch {
        if cx.config.node_type(node_type).is_none() {
            tracing::warn!(node_type = %node_type, "cannot launch: the node type is not in the config");
            continue;
        }
        let rid = new_id();
        let mut ids = Vec::new();
        for _ in 0..*n {
            let id = new_id();
            let mut i = Instance::new(id.clone(), node_type.clone(), cx.now_ms, format!("queued for {}", reason.describe()));
            i.launch_request_id = Some(rid.clone());
            if m.create(i).await.is_err() {
                continue;
            }
            // Recorded before the provider is asked: after a crash, the request id is
            // found and re-issued instead of launching again.
            let details = format!("requested with launch request {rid}");
            if m.transition(&id, InstanceStatus::Requested, details, |_| {}).await.is_ok() {
                ids.push(id);
            }
        }
        if ids.len() < *n as usize {
            tracing::warn!(node_type = %node_type, wanted = n, recorded = ids.len(), "not launching what could not be recorded; the next round tries again");
        }
        if ids.is_empty() {
            continue;
        }
        let k = ids.len();
        tracing::info!(node_type = %node_type, count = k, reason = reason.describe(), "Adding {k} node(s) of type {node_type} ({}).", reason.describe());
        actions.extend(launch(cx, rid, node_type, ids).map(Action::Launch));
    }
    for (id, why) in &d.terminate {
        let Some(i) = m.get(id) else { continue };
        if cx.in_flight.drains.contains(id) || i.status() != InstanceStatus::Running {
            continue;
        }
        let Some(node_id) = i.node_id.clone() else { continue };
        let node_type = i.node_type.clone();
        let message = match why {
            TerminateReason::Idle => {
                let idle_s = state
                    .node_states
                    .iter()
                    .find(|n| n.node_id == node_id)
                    .map(|n| n.idle_duration_ms as f64 / 1000.0)
                    .unwrap_or(0.0);
                format!("idle for {idle_s:.1} s (idle_timeout_minutes reached)")
            }
            other => other.describe().to_string(),
        };
        tracing::info!(instance = %id, node_type = %node_type, reason = why.describe(), "Removing 1 node(s) of type {node_type} ({}): draining first.", why.describe());
        let (msg, reason) = (message.clone(), *why);
        let details = format!("asking the GCS to drain it: {message}");
        let recorded = m
            .transition(id, InstanceStatus::Draining, details, |x| {
                x.termination_reason = Some(msg);
                x.retire_reason = Some(reason);
            })
            .await;
        if recorded.is_ok() {
            actions.push(Action::Drain { instance_id: id.clone(), node_id, reason: *why, message });
        }
    }
    actions
}

/// The provider request that launches `instance_ids` of `node_type` under the
/// launch request `request_id`; `None` when the type is not in the config.
pub fn launch(cx: &Context<'_>, request_id: String, node_type: &str, instance_ids: Vec<String>) -> Option<CreateRequest> {
    let config = cx.config;
    let Some(t) = config.node_type(node_type) else {
        tracing::warn!(node_type = %node_type, "cannot launch: the node type is not in the config");
        return None;
    };
    let mut tags = BTreeMap::new();
    tags.insert(TAG_CLUSTER_NAME.to_string(), config.cluster_name.clone());
    tags.insert(TAG_NODE_KIND.to_string(), "worker".to_string());
    tags.insert(TAG_USER_NODE_TYPE.to_string(), node_type.to_string());
    tags.insert(TAG_NODE_NAME.to_string(), format!("ray-{}-worker", config.cluster_name));
    if let Some(h) = cx.setup.and_then(|s| s.launch_hash(node_type)) {
        tags.insert(TAG_LAUNCH_CONFIG.to_string(), h);
    }
    Some(CreateRequest {
        request_id,
        node_type: node_type.to_string(),
        instance_ids,
        node_config: t.node_config.clone(),
        resources: t.resources.clone(),
        labels: t.labels.clone(),
        tags,
    })
}
