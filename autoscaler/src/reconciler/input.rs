//! The scheduler's input, built from the config, the instance table, back-off and
//! the cluster state.

use std::collections::{BTreeMap, HashMap, HashSet};

use ray_common::ResourceSet;
use ray_proto::rpc::autoscaler::{ClusterResourceState, NodeStatus, ResourceRequestByCount};

use super::Context;
use crate::instance::{Instance, InstanceStatus};
use crate::scheduler::{Demand, Gang, Input, NodeTypeSpec, NodeView, PlacementStrategy};

/// What a node of `node_type` offers: the config's resources, or, for a type
/// that leaves them to detection (Ray's on-prem `local.cluster.node`), what a
/// live node of the type reports (a worker's if there is one, else the head's).
pub fn type_resources(cx: &Context<'_>, state: &ClusterResourceState, node_type: &str) -> ResourceSet {
    let configured = cx.config.node_type(node_type).map(|t| t.resources.clone()).unwrap_or_default();
    if !configured.is_empty() {
        return configured;
    }
    let live = |head: bool| {
        state
            .node_states
            .iter()
            .filter(|n| n.status != NodeStatus::Dead as i32 && n.ray_node_type_name == node_type && n.is_head_node == head)
            .map(|n| ResourceSet::from_f64_map_lossy(&n.total_resources))
            .find(|r| !r.is_empty())
    };
    live(false).or_else(|| live(true)).unwrap_or_default()
}

/// Node types as the scheduler sees them: the config's caps and prices, with the
/// cap of a type that is backing off held at what it already has.
pub fn type_specs(cx: &Context<'_>, instances: &BTreeMap<String, Instance>, state: &ClusterResourceState) -> Vec<NodeTypeSpec> {
    cx.config
        .node_types
        .iter()
        .map(|t| {
            let mut max = t.max_workers;
            if cx.backoff.is_backing_off(&t.name, cx.now) {
                // Backing off: no new launches of this type until the back-off ends.
                max = instances.values().filter(|i| i.node_type == t.name && !i.status().is_final()).count() as u32;
            }
            NodeTypeSpec {
                name: t.name.clone(),
                resources: type_resources(cx, state, &t.name),
                min_workers: t.min_workers,
                max_workers: max,
                // A head type with room for workers (Ray's on-prem clusters run one
                // type for both) also launches workers.
                is_head: t.name == cx.config.head_node_type && t.max_workers == 0,
                price: t.price,
                priority: t.priority,
            }
        })
        .collect()
}

/// Everything [`crate::scheduler::decide`] looks at.
pub fn input(cx: &Context<'_>, instances: &BTreeMap<String, Instance>, state: &ClusterResourceState) -> Input {
    let types = type_specs(cx, instances, state);
    let by_cloud: HashMap<&str, &Instance> = instances.values().filter_map(|i| i.cloud_id.as_deref().map(|c| (c, i))).collect();
    let mut nodes = Vec::new();
    for n in state.node_states.iter().filter(|n| n.status != NodeStatus::Dead as i32) {
        let inst = by_cloud.get(n.instance_id.as_str());
        nodes.push(NodeView {
            id: inst.map(|i| i.id.clone()).unwrap_or_else(|| n.node_id.clone()),
            node_type: inst.map(|i| i.node_type.clone()).unwrap_or_else(|| n.ray_node_type_name.clone()),
            available: ResourceSet::from_f64_map_lossy(&n.available_resources),
            total: ResourceSet::from_f64_map_lossy(&n.total_resources),
            pending: false,
            is_head: n.is_head_node,
            unmanaged: inst.is_none() && !n.is_head_node,
            draining: n.status == NodeStatus::Draining as i32
                || inst.is_some_and(|i| matches!(i.status(), InstanceStatus::Draining | InstanceStatus::Terminating)),
            idle_ms: if n.status == NodeStatus::Idle as i32 { n.idle_duration_ms.max(1) } else { 0 },
        });
    }
    // Instances on their way count in full, except one whose raylet has already
    // registered (it can reach the GCS in the round that first sees it listed):
    // its Ray node above stands for it, and counting both would put the type over
    // its cap and retire a node that was never over it.
    let registered: HashSet<&str> = state
        .node_states
        .iter()
        .filter(|n| n.status != NodeStatus::Dead as i32 && !n.instance_id.is_empty())
        .map(|n| n.instance_id.as_str())
        .collect();
    let on_its_way = |i: &&Instance| i.status().is_pending() && !i.cloud_id.as_deref().is_some_and(|c| registered.contains(c));
    for i in instances.values().filter(on_its_way) {
        let resources = type_resources(cx, state, &i.node_type);
        nodes.push(NodeView {
            id: i.id.clone(),
            node_type: i.node_type.clone(),
            available: resources.clone(),
            total: resources,
            pending: true,
            is_head: false,
            unmanaged: false,
            draining: false,
            idle_ms: 0,
        });
    }
    let by_count = |r: &ResourceRequestByCount| Demand {
        shape: r.request.as_ref().map(|r| ResourceSet::from_f64_map_lossy(&r.resources_bundle)).unwrap_or_default(),
        count: r.count,
    };
    let gangs = state
        .pending_gang_resource_requests
        .iter()
        .map(|g| Gang {
            bundles: g.requests.iter().map(|r| ResourceSet::from_f64_map_lossy(&r.resources_bundle)).collect(),
            strategy: PlacementStrategy::parse(&g.strategy),
        })
        .collect();
    Input {
        idle_timeout_ms: types.iter().map(|t| (t.name.clone(), cx.config.idle_timeout_ms(&t.name))).collect(),
        types,
        max_workers: cx.config.max_workers,
        upscaling_speed: cx.config.upscaling_speed,
        nodes,
        demands: state.pending_resource_requests.iter().map(by_count).collect(),
        gangs,
        constraints: state.cluster_resource_constraints.iter().flat_map(|c| c.resource_requests.iter().map(by_count)).collect(),
    }
}
