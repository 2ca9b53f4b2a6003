//! Sync: brings the instance table in line with what the GCS (node states) and the
//! provider (its listing) report, one step per instance per round.
//!
//! | status | seen | becomes |
//! |---|---|---|
//! | QUEUED | (a round that could not record REQUESTED, or a restart) | REQUESTED, launched |
//! | REQUESTED | listed by the provider | ALLOCATED |
//! | REQUESTED | not listed, no launch under way (a restart) | launched again, same request id |
//! | ALLOCATED | listed as running, raylet not registered | INSTALLING |
//! | ALLOCATED | listed, the launcher sets Ray up on it | INSTALLING, set up |
//! | INSTALLING | set up, no set-up under way (a restart) | set up again |
//! | ALLOCATED, INSTALLING | its raylet registered | RUNNING |
//! | ALLOCATED, INSTALLING | not listed any more | TERMINATED |
//! | ALLOCATED, INSTALLING | no raylet within [`REGISTER_TIMEOUT_MS`] (after set-up, when the launcher sets it up) | TERMINATING |
//! | RUNNING, DRAINING | not listed any more | TERMINATED |
//! | RUNNING, DRAINING | its Ray node is dead (and no set-up restarts it) | TERMINATING |
//! | RUNNING | its launch hash is not the config's (node_config or auth changed) | TERMINATING |
//! | RUNNING | its runtime hash is not the config's (commands or file mounts changed), or it has none | set up again |
//! | RUNNING, DRAINING | registered again under a new node id (Ray restarted on it) | node id updated |
//! | DRAINING | no drain under way (a restart) | drained again |
//! | TERMINATING | not listed any more / still listed | TERMINATED / terminated again |
//!
//! Listed instances the table does not know are adopted (a crash between the
//! provider's answer and the record, or a new head over running workers), or
//! terminated when their node type is not in the config. The head is never
//! adopted.

use std::collections::{BTreeMap, HashMap, HashSet};

use ray_proto::rpc::autoscaler::{ClusterResourceState, NodeState, NodeStatus};
use ray_providers::{
    CloudInstance, CloudState, NODE_KIND_HEAD, TAG_INSTANCE_ID, TAG_LAUNCH_CONFIG, TAG_NODE_KIND,
    TAG_RUNTIME_CONFIG,
};

use super::{Action, Context, new_id, plan, short};
use crate::instance::InstanceStatus::{self, *};
use crate::instance::manager::InstanceManager;
use crate::instance::{Instance, StatusChange};

/// A node allocated but not registered with the GCS after this long is given up.
pub const REGISTER_TIMEOUT_MS: u64 = 120_000;

/// Launch requests to send again, by request id: node type and instance ids.
type Requests = BTreeMap<String, (String, Vec<String>)>;

/// Moves the table toward what was observed; returns what to do about it. `cloud`
/// is `None` when the provider could not be listed this round: then nothing is
/// declared gone and nothing is adopted.
pub async fn sync(
    m: &mut InstanceManager,
    cx: &Context<'_>,
    state: &ClusterResourceState,
    cloud: Option<&[CloudInstance]>,
) -> Vec<Action> {
    let nodes = |dead: bool| -> HashMap<&str, &NodeState> {
        state
            .node_states
            .iter()
            .filter(|n| (n.status == NodeStatus::Dead as i32) == dead && !n.instance_id.is_empty())
            .map(|n| (n.instance_id.as_str(), n))
            .collect()
    };
    let alive = nodes(false);
    let dead = nodes(true);
    let listed: HashMap<String, &CloudInstance> = cloud.unwrap_or_default().iter().map(|c| (instance_id_of(c), c)).collect();
    let cloud_known = cloud.is_some();
    let mut actions = Vec::new();
    let mut queued: Requests = BTreeMap::new();
    let mut reissue: Requests = BTreeMap::new();
    let ids: Vec<String> = m.instances().keys().cloned().collect();
    for id in ids {
        let Some(i) = m.get(&id).cloned() else { continue };
        let in_cloud = listed.get(&id).copied();
        let backing_off = cx.backoff.is_backing_off(&i.node_type, cx.now);
        let cid = i.cloud_id.clone().unwrap_or_default();
        match i.status() {
            Queued if !backing_off => {
                // Decided earlier, but REQUESTED was never recorded: request it now.
                let rid = i.launch_request_id.clone().unwrap_or_else(new_id);
                let r = rid.clone();
                let details = format!("requested with launch request {rid}");
                if m.transition(&id, Requested, details, |x| x.launch_request_id = Some(r)).await.is_ok() {
                    queued.entry(rid).or_insert_with(|| (i.node_type.clone(), Vec::new())).1.push(id);
                }
            }
            Queued => {}
            Requested => {
                if let Some(c) = in_cloud {
                    let c = c.cloud_id.clone();
                    let details = format!("the provider lists it as {c}");
                    let _ = m.transition(&id, Allocated, details, |x| x.cloud_id = Some(c)).await;
                } else if let Some(rid) = &i.launch_request_id
                    && cloud_known
                    && !backing_off
                    && !cx.in_flight.launches.contains(rid)
                {
                    // Asked for, but nobody is asking now (a restart): ask again with the
                    // same request id; the provider creates only what is missing.
                    reissue.entry(rid.clone()).or_insert_with(|| (i.node_type.clone(), Vec::new())).1.push(id);
                }
            }
            Allocated | Installing => {
                let allocated_ms = since(&i, Allocated);
                if let Some(n) = alive.get(cid.as_str()) {
                    let node_id = n.node_id.clone();
                    let details = format!("Ray node {} registered", short(&node_id));
                    let _ = m.transition(&id, Running, details, |x| x.node_id = Some(node_id)).await;
                } else if cloud_known && in_cloud.is_none() {
                    let _ = m.transition(&id, Terminated, "the instance disappeared before Ray started on it", |_| {}).await;
                } else if cx.setup.is_some() {
                    actions.extend(set_up_step(m, cx, &i, in_cloud).await);
                } else if cx.now_ms.saturating_sub(allocated_ms) > REGISTER_TIMEOUT_MS {
                    let why = format!("its raylet did not register within {} s", REGISTER_TIMEOUT_MS / 1000);
                    actions.extend(super::terminate(m, &id, why).await);
                } else if i.status() == Allocated && in_cloud.is_some_and(|c| c.state == CloudState::Running) {
                    let _ = m.transition(&id, Installing, "the provider reports it running; Ray is starting on it", |_| {}).await;
                }
            }
            Running | Draining => {
                let setting_up = cx.in_flight.setups.contains(&id);
                if cloud_known && in_cloud.is_none() {
                    let details = "the instance is gone (its process or VM no longer exists)";
                    let _ = m.transition(&id, Terminated, details, |_| {}).await;
                } else if let Some(d) = dead.get(cid.as_str())
                    && !alive.contains_key(cid.as_str())
                    && !setting_up
                {
                    let why = d
                        .death_info
                        .as_ref()
                        .map(|d| d.reason_message.clone())
                        .unwrap_or_default();
                    actions.extend(
                        super::terminate(m, &id, format!("its Ray node died: {why}")).await,
                    );
                } else if let Some(n) = alive.get(cid.as_str())
                    && i.node_id.as_deref() != Some(n.node_id.as_str())
                    && !n.node_id.is_empty()
                {
                    // Ray restarted on it (an update in place): a new node id, which
                    // drains must name.
                    let node_id = n.node_id.clone();
                    let details = format!("Ray node {} registered (restarted)", short(&node_id));
                    let _ = m.update(&id, &details, |x| x.node_id = Some(node_id)).await;
                } else if let (Running, Some(c), false) = (i.status(), in_cloud, setting_up)
                    && let Some(action) = out_of_date(m, cx, &i, c).await
                {
                    actions.push(action);
                } else if i.status() == Draining && !cx.in_flight.drains.contains(&id) {
                    // Recorded as draining, but no drain is under way (a restart, or the
                    // accepted drain could not be recorded as TERMINATING): ask again.
                    actions.push(Action::Drain {
                        instance_id: id.clone(),
                        node_id: i.node_id.clone().unwrap_or_default(),
                        reason: i.retire_reason.unwrap_or(crate::scheduler::TerminateReason::Idle),
                        message: i.termination_reason.clone().unwrap_or_default(),
                    });
                }
            }
            Terminating => {
                if cloud_known && in_cloud.is_none() {
                    let _ = m.transition(&id, Terminated, "terminated", |_| {}).await;
                } else if !cx.in_flight.terminations.contains(&id)
                    && let Some(a) = super::terminate_action(m, &id)
                {
                    actions.push(a);
                }
            }
            InstallFailed => actions.extend(super::terminate(m, &id, "Ray could not be installed".to_string()).await),
            // Final instances leave the table when they are recorded.
            Terminated | AllocationFailed => {}
        }
    }
    for (rid, (node_type, ids)) in queued {
        tracing::info!(request = %rid, node_type = %node_type, count = ids.len(), "Adding {} node(s) of type {node_type} (queued earlier).", ids.len());
        actions.extend(plan::launch(cx, rid, &node_type, ids).map(Action::Launch));
    }
    for (rid, (node_type, ids)) in reissue {
        tracing::info!(request = %rid, node_type = %node_type, count = ids.len(), "re-issuing a launch request after a restart (idempotent)");
        actions.extend(plan::launch(cx, rid, &node_type, ids).map(Action::Launch));
    }
    if let Some(cloud) = cloud {
        actions.extend(adopt(m, cx, cloud).await);
    }
    actions
}

/// Instances the provider lists that the table does not know (a crash between a
/// provider call and a record write): adopts them, or terminates strays.
async fn adopt(m: &mut InstanceManager, cx: &Context<'_>, cloud: &[CloudInstance]) -> Vec<Action> {
    let mut actions = Vec::new();
    let known_cloud: HashSet<String> = m.instances().values().filter_map(|i| i.cloud_id.clone()).collect();
    for c in cloud {
        let iid = instance_id_of(c);
        let head = c.tags.get(TAG_NODE_KIND).map(String::as_str) == Some(NODE_KIND_HEAD);
        if head
            || m.get(&iid).is_some()
            || known_cloud.contains(&c.cloud_id)
            || c.state == CloudState::Terminating
        {
            continue;
        }
        if c.launch_request().is_some_and(|r| cx.in_flight.launches.contains(r)) {
            continue;
        }
        if cx.config.node_type(&c.node_type).is_none() {
            tracing::warn!(cloud_id = %c.cloud_id, node_type = %c.node_type, "terminating a stray instance of an unknown node type");
            actions.push(Action::TerminateStray { cloud_id: c.cloud_id.clone() });
            continue;
        }
        let mut i = Instance::new(iid.clone(), c.node_type.clone(), cx.now_ms, "adopted from the provider's listing");
        i.cloud_id = Some(c.cloud_id.clone());
        i.launch_request_id = c.launch_request().map(str::to_string);
        if i.transition(Requested, cx.now_ms, "adopted").and_then(|_| i.transition(Allocated, cx.now_ms, "adopted")).is_err() {
            continue;
        }
        if m.create(i).await.is_ok() {
            tracing::info!(instance = %iid, cloud_id = %c.cloud_id, node_type = %c.node_type, "adopted an instance the table did not know");
        }
    }
    actions
}

/// An instance the launcher sets Ray up on, not registered yet: start the set-up
/// (ALLOCATED -> INSTALLING), run it again when a restart interrupted it, or give
/// up when its raylet does not register soon after a finished set-up. A node
/// adopted after a restart is set up again even when its tags say it is up to
/// date: its raylet died with the old head, and the set-up (which only restarts
/// Ray when the node's runtime hash is current) brings it back, as Ray's
/// autoscaler recovers such nodes.
async fn set_up_step(
    m: &mut InstanceManager,
    cx: &Context<'_>,
    i: &Instance,
    in_cloud: Option<&CloudInstance>,
) -> Option<Action> {
    let id = i.id.clone();
    let set_up = |c: &CloudInstance| Action::SetUp { instance_id: id.clone(), instance: c.clone(), node_type: i.node_type.clone() };
    if cx.in_flight.setups.contains(&id) {
        return None;
    }
    if let Some(done) = i.setup_done_ms {
        if cx.now_ms.saturating_sub(done) > REGISTER_TIMEOUT_MS {
            let why = format!("its raylet did not register within {} s of its set-up", REGISTER_TIMEOUT_MS / 1000);
            return super::terminate(m, &id, why).await;
        }
        return None;
    }
    let c = in_cloud?;
    if i.status() == Allocated {
        let details = "setting Ray up on it (file mounts, setup and start commands)";
        m.transition(&id, Installing, details, |_| {}).await.ok()?;
    } else {
        tracing::info!(instance = %id, "setting Ray up on it again (the last set-up did not finish)");
    }
    Some(set_up(c))
}

/// A running instance the launcher set up whose hashes differ from the config's:
/// a different launch hash (node_config or auth changed) replaces it; a different
/// runtime hash (setup commands or file mounts changed) sets it up again.
async fn out_of_date(m: &mut InstanceManager, cx: &Context<'_>, i: &Instance, c: &CloudInstance) -> Option<Action> {
    let setup = cx.setup?;
    // A node without a launch hash keeps its machine (it may predate hashes); one
    // without a runtime hash was never set up with a known config: set it up.
    let differs = |tag: &str, want: Option<String>, missing: bool| match (c.tags.get(tag), want) {
        (Some(have), Some(want)) => *have != want,
        (None, Some(_)) => missing,
        _ => false,
    };
    if differs(TAG_LAUNCH_CONFIG, setup.launch_hash(&i.node_type), false) {
        let why = "out of date: its node_config or auth changed".to_string();
        return super::terminate(m, &i.id, why).await;
    }
    if differs(TAG_RUNTIME_CONFIG, setup.runtime_hash(&i.node_type), true) {
        tracing::info!(instance = %i.id, node_type = %i.node_type, "updating it: its setup commands or file mounts changed, or it was never set up with this config");
        return Some(Action::SetUp {
            instance_id: i.id.clone(),
            instance: c.clone(),
            node_type: i.node_type.clone(),
        });
    }
    None
}

/// The autoscaler's id of a listed instance (its tag), else the provider's id.
fn instance_id_of(c: &CloudInstance) -> String {
    c.tags.get(TAG_INSTANCE_ID).cloned().unwrap_or_else(|| c.cloud_id.clone())
}

/// When the instance last entered `status` (its current status's start if the
/// history no longer says).
fn since(i: &Instance, status: InstanceStatus) -> u64 {
    i.history.iter().rev().find(|h: &&StatusChange| h.status == status).map(|h| h.at_ms).unwrap_or_else(|| i.status_since_ms())
}
