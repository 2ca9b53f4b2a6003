//! Reserving placement groups on the raylets, Ray's two-phase protocol: for a
//! waiting group, [`crate::placement_groups::place`] picks a node per bundle
//! from the nodes' reported free resources; every chosen raylet is asked to
//! prepare its bundles, and only when all of them did are they committed. If
//! any prepare fails, the prepared ones are cancelled and the group waits for
//! the next round. A round runs when a group is created or removed, when nodes
//! or resources change, and at least once a second; it also notices bundles on
//! dead nodes (placed again) and groups whose job ended (removed).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use ray_common::rpc::{Channel as RpcChannel, MAX_MESSAGE_BYTES};
use ray_proto::rpc::node_manager_service_client::NodeManagerServiceClient;
use ray_proto::rpc::{BundleSpec, CancelResourceReserveRequest, CommitBundleResourcesRequest, PlacementGroupInfo, PrepareBundleResourcesRequest};

use crate::Gcs;
use crate::placement_groups::{NodeFree, bundle_sets, place};

type Raylet = NodeManagerServiceClient<RpcChannel>;

/// Runs rounds until the GCS shuts down.
pub async fn run(gcs: Arc<Gcs>) {
    let mut events = gcs.subscribe();
    let mut conns: HashMap<String, Raylet> = HashMap::new();
    loop {
        tokio::select! {
            _ = gcs.placement_wake.notified() => {}
            _ = events.recv() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = gcs.shutdown_token().cancelled() => return,
        }
        round(&gcs, &mut conns).await;
    }
}

async fn raylet(gcs: &Gcs, conns: &mut HashMap<String, Raylet>, addr: &str) -> Option<Raylet> {
    if let Some(c) = conns.get(addr) {
        return Some(c.clone());
    }
    let ch = gcs.security().connect(addr, Duration::from_secs(5)).await.ok()?;
    let c = NodeManagerServiceClient::new(ch).max_decoding_message_size(MAX_MESSAGE_BYTES);
    conns.insert(addr.to_string(), c.clone());
    Some(c)
}

/// Gives back `indices` of `group` (all when empty) on each node of `nodes`.
/// A raylet that cannot be reached is asked again in the next rounds, for as
/// long as its node lives (a dead node's bundles went with it).
pub async fn cancel_on(gcs: &Gcs, conns: &mut HashMap<String, Raylet>, group: &str, nodes: &[(String, Vec<u32>)]) {
    for (node, indices) in nodes {
        let addr = {
            let st = gcs.state();
            st.node(node).filter(|e| e.is_alive()).map(|e| format!("{}:{}", e.info.node_manager_address, e.info.node_manager_port))
        };
        let Some(addr) = addr else { continue };
        let req = CancelResourceReserveRequest { placement_group_id: group.to_string(), bundle_indices: indices.clone() };
        let result = match raylet(gcs, conns, &addr).await {
            Some(mut c) => c.cancel_resource_reserve(req).await.map(|_| ()).map_err(|s| s.message().to_string()),
            None => Err("cannot connect".to_string()),
        };
        if let Err(e) = result {
            conns.remove(&addr);
            tracing::warn!(group, node = %node, error = %e, "cannot give back a placement group's bundles yet; will ask again");
            gcs.pending_cancels.lock().unwrap_or_else(|p| p.into_inner()).push((group.to_string(), node.clone(), indices.clone()));
        }
    }
}

/// Asks again the raylets that could not be told to give bundles back.
async fn retry_cancels(gcs: &Gcs, conns: &mut HashMap<String, Raylet>) {
    let pending = std::mem::take(&mut *gcs.pending_cancels.lock().unwrap_or_else(|p| p.into_inner()));
    for (group, node, indices) in pending {
        cancel_on(gcs, conns, &group, &[(node, indices)]).await;
    }
}

async fn round(gcs: &Arc<Gcs>, conns: &mut HashMap<String, Raylet>) {
    retry_cancels(gcs, conns).await;
    let (removals, waiting, mut free, addrs) = {
        let mut st = gcs.state();
        let alive: Vec<_> = st.nodes().into_iter().filter(|e| e.is_alive()).map(|e| {
            let draining = e.info.state == ray_proto::rpc::NodeState::Draining as i32;
            (e.info.node_id.clone(), format!("{}:{}", e.info.node_manager_address, e.info.node_manager_port), e.available.clone(), draining)
        }).collect();
        let alive_ids: HashSet<String> = alive.iter().map(|a| a.0.clone()).collect();
        let dead_jobs = st.dead_jobs();
        let pgs = st.placement_groups_mut();
        for id in pgs.nodes_gone(&alive_ids) {
            tracing::warn!(group = %id, "a node holding bundles of a placement group died; placing them again");
        }
        let removals = pgs.remove_for_dead_jobs(&dead_jobs);
        let waiting = pgs.waiting();
        let free: Vec<NodeFree> =
            alive.iter().filter(|a| !a.3).map(|a| NodeFree { node_id: a.0.clone(), available: a.2.clone() }).collect();
        let addrs: HashMap<String, String> = alive.into_iter().map(|a| (a.0, a.1)).collect();
        (removals, waiting, free, addrs)
    };
    for (id, nodes) in removals {
        tracing::info!(group = %id, "the job of a placement group ended; removing it");
        let nodes: Vec<(String, Vec<u32>)> = nodes.into_iter().map(|n| (n, Vec::new())).collect();
        cancel_on(gcs, conns, &id, &nodes).await;
        gcs.change(|st| ((), Some(st.placement_groups_changed())));
    }
    for g in waiting {
        let bundles = bundle_sets(&g);
        let mut trial = free.clone();
        let Some(plan) = place(&g.strategy, &bundles, &g.bundle_node_ids, &mut trial) else {
            let why = format!("waiting for resources: no set of nodes has room for its {} bundle(s) under {} now", bundles.len(), g.strategy);
            gcs.state().placement_groups_mut().set_scheduling_state(&g.placement_group_id, &why);
            continue;
        };
        if reserve(gcs, conns, &g, &plan, &addrs).await {
            free = trial;
        }
    }
}

/// Prepares the bundles `plan` places anew, commits them if every node
/// prepared, and records the group as created. False when it did not happen.
async fn reserve(gcs: &Arc<Gcs>, conns: &mut HashMap<String, Raylet>, g: &PlacementGroupInfo, plan: &[String], addrs: &HashMap<String, String>) -> bool {
    let id = &g.placement_group_id;
    let mut per_node: BTreeMap<String, Vec<BundleSpec>> = BTreeMap::new();
    for (i, node) in plan.iter().enumerate() {
        if g.bundle_node_ids.get(i).is_some_and(|n| !n.is_empty()) {
            continue;
        }
        per_node.entry(node.clone()).or_default().push(BundleSpec { index: i as u32, resources: g.bundles[i].amounts.clone() });
    }
    let before = gcs.state().placement_groups_mut().reserving(id, plan.to_vec());
    let mut prepared: Vec<(String, Vec<u32>)> = Vec::new();
    let mut failure = None;
    for (node, bundles) in &per_node {
        let indices: Vec<u32> = bundles.iter().map(|b| b.index).collect();
        let client = match addrs.get(node) {
            Some(a) => raylet(gcs, conns, a).await,
            None => None,
        };
        let Some(mut c) = client else {
            failure = Some(format!("cannot reach node {node}"));
            break;
        };
        match c.prepare_bundle_resources(PrepareBundleResourcesRequest { placement_group_id: id.clone(), bundles: bundles.clone() }).await {
            Ok(r) if r.get_ref().success => prepared.push((node.clone(), indices)),
            Ok(r) => {
                failure = Some(format!("node {}: {}", ray_common::ids::truncate(node, 12), r.into_inner().error));
                break;
            }
            Err(s) => {
                if let Some(a) = addrs.get(node) {
                    conns.remove(a);
                }
                failure = Some(format!("node {}: {}", ray_common::ids::truncate(node, 12), s.message()));
                break;
            }
        }
    }
    if let Some(why) = failure {
        tracing::debug!(group = %id, %why, "placement group not reserved this round");
        cancel_on(gcs, conns, id, &prepared).await;
        let mut st = gcs.state();
        st.placement_groups_mut().reservation_failed(id, before);
        st.placement_groups_mut().set_scheduling_state(id, &format!("waiting: {why}"));
        return false;
    }
    let mut commit_failed = None;
    for (node, _) in &prepared {
        let committed = match addrs.get(node) {
            Some(a) => match raylet(gcs, conns, a).await {
                Some(mut c) => match c.commit_bundle_resources(CommitBundleResourcesRequest { placement_group_id: id.clone() }).await {
                    Ok(r) if r.get_ref().success => Ok(()),
                    Ok(_) => Err("the raylet holds no prepared bundles of it".to_string()),
                    Err(s) => Err(s.message().to_string()),
                },
                None => Err("cannot reach the raylet".to_string()),
            },
            None => Err("the node is gone".to_string()),
        };
        if let Err(e) = committed {
            commit_failed = Some(format!("node {}: {e}", ray_common::ids::truncate(node, 12)));
            break;
        }
    }
    if let Some(why) = commit_failed {
        // Nothing is half-reserved: the bundles go back everywhere, and the
        // group waits for the next round.
        tracing::warn!(group = %id, %why, "a prepared placement group could not be committed; giving its bundles back");
        cancel_on(gcs, conns, id, &prepared).await;
        let mut st = gcs.state();
        st.placement_groups_mut().reservation_failed(id, before);
        st.placement_groups_mut().set_scheduling_state(id, &format!("waiting: commit failed on {why}"));
        return false;
    }
    let created = gcs.change(|st| {
        let ok = st.placement_groups_mut().created(id, plan.to_vec());
        (ok, Some(st.placement_groups_changed()))
    });
    if !created {
        // Removed while it was being reserved.
        cancel_on(gcs, conns, id, &prepared).await;
        return false;
    }
    tracing::info!(group = %id, strategy = %g.strategy, bundles = plan.len(), "placement group created");
    true
}
