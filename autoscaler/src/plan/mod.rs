//! `ray plan`: what the autoscaler would launch for a demand on a fresh cluster
//! of a config (only the head running), what it costs per hour, the proven
//! lower bound beside it, and what stays unplaced and why. The same `decide`
//! the monitor runs, with the same node types, caps and prices.

pub mod demand;
pub mod replay;

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Instant;

use ray_common::ResourceSet;

use crate::config::ClusterConfig;
use crate::scheduler::bound::{self, Costing};
use crate::scheduler::{Demand, Input, NodeTypeSpec, NodeView, decide};
pub use demand::{DemandError, DemandFile};

/// Bundles left unplaced, and why.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Unplaced {
    /// The shape, as Ray writes resources.
    pub resources: BTreeMap<String, f64>,
    /// How many.
    pub count: u64,
    /// `infeasible` (no node type can hold it) or `capped` (`max_workers`
    /// reached).
    pub why: &'static str,
}

/// The plan, as `ray plan --json` prints it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Plan {
    /// Nodes to add by type, over the whole plan.
    pub launch: BTreeMap<String, u32>,
    /// Of those, what one autoscaler round launches now; the rest follow as
    /// `upscaling_speed` allows.
    pub launch_now: BTreeMap<String, u32>,
    /// Why each type is launched (`pending tasks/actors`, `pending placement
    /// groups`, `min_workers`).
    pub reasons: BTreeMap<String, Vec<&'static str>>,
    /// Hourly cost of the launched nodes.
    pub cost_per_hour: f64,
    /// No plan that places the same bundles costs less (absent when some are
    /// capped).
    pub lower_bound_per_hour: Option<f64>,
    /// Node types without a `price`: their cost is estimated from capacity (1
    /// per CPU, 16 per GPU, 0.25 per GiB of memory), not in dollars.
    pub unpriced_types: Vec<String>,
    /// What stays unplaced.
    pub unplaced: Vec<Unplaced>,
    /// Bundles in the demand (placement groups' and request_resources' included).
    pub bundles: u64,
    /// How long the decision took, in milliseconds.
    pub decision_ms: f64,
}

/// The scheduler's view of a fresh cluster of `config`: its node types and the
/// head alone.
pub fn input(config: &ClusterConfig, demand: &DemandFile) -> Input {
    let types: Vec<NodeTypeSpec> = config
        .node_types
        .iter()
        .map(|t| NodeTypeSpec {
            name: t.name.clone(),
            resources: t.resources.clone(),
            min_workers: t.min_workers,
            max_workers: t.max_workers,
            is_head: t.name == config.head_node_type && t.max_workers == 0,
            price: t.price,
            priority: t.priority,
        })
        .collect();
    let head = config.node_type(&config.head_node_type).map(|t| t.resources.clone()).unwrap_or_default();
    Input {
        types,
        max_workers: config.max_workers,
        upscaling_speed: config.upscaling_speed,
        nodes: vec![NodeView {
            id: "head".into(),
            node_type: config.head_node_type.clone(),
            total: head.clone(),
            available: head,
            pending: false,
            is_head: true,
            unmanaged: false,
            draining: false,
            idle_ms: 0,
        }],
        demands: demand.bundles.clone(),
        gangs: demand.placement_groups.clone(),
        constraints: demand.request_resources.clone(),
        ..Default::default()
    }
}

fn shape_map(s: &ResourceSet) -> BTreeMap<String, f64> {
    s.iter().map(|(k, v)| (k.to_string(), v.to_f64())).collect()
}

/// Plans `demand` on a fresh cluster of `config`.
pub fn plan(config: &ClusterConfig, demand: &DemandFile) -> Plan {
    let input = input(config, demand);
    let started = Instant::now();
    let d = decide(&input);
    let decision_ms = started.elapsed().as_secs_f64() * 1e3;
    let Costing { plan_per_hour, lower_bound_per_hour } = bound::costing(&input, &d);
    let mut launch = d.launch_by_type();
    for (t, n) in &d.held_back {
        *launch.entry(t.clone()).or_default() += n;
    }
    let mut reasons: BTreeMap<String, Vec<&'static str>> = BTreeMap::new();
    for (t, r) in d.launch.keys() {
        reasons.entry(t.clone()).or_default().push(r.describe());
    }
    for t in d.held_back.keys() {
        let r = reasons.entry(t.clone()).or_default();
        if !r.contains(&"pending tasks/actors") {
            r.push("pending tasks/actors");
        }
    }
    let mut unplaced = Vec::new();
    let mut add = |ds: &[Demand], why| {
        unplaced.extend(ds.iter().map(|x| Unplaced { resources: shape_map(&x.shape), count: x.count, why }));
    };
    add(&d.infeasible, "infeasible");
    add(&d.infeasible_constraint, "infeasible");
    add(&d.capped, "capped");
    for g in &d.infeasible_gangs {
        unplaced.extend(g.bundles.iter().map(|b| Unplaced { resources: shape_map(b), count: 1, why: "infeasible" }));
    }
    Plan {
        launch,
        launch_now: d.launch_by_type(),
        reasons,
        cost_per_hour: plan_per_hour,
        lower_bound_per_hour,
        unpriced_types: input.types.iter().filter(|t| !t.is_head && t.price.is_none()).map(|t| t.name.clone()).collect(),
        unplaced,
        bundles: demand.bundle_count(),
        decision_ms,
    }
}

/// The pending demand of a running cluster (`ray plan --from-cluster`): its
/// queued tasks and actors by shape, its pending placement groups, and its
/// `request_resources` bundles.
pub fn demand_from_state(state: &ray_proto::rpc::autoscaler::ClusterResourceState) -> DemandFile {
    let shape = |r: &Option<ray_proto::rpc::autoscaler::ResourceRequest>| {
        r.as_ref().map(|r| ResourceSet::from_f64_map_lossy(&r.resources_bundle)).unwrap_or_default()
    };
    DemandFile {
        bundles: state
            .pending_resource_requests
            .iter()
            .map(|r| Demand { shape: shape(&r.request), count: r.count })
            .filter(|d| d.count > 0 && !d.shape.is_empty())
            .collect(),
        placement_groups: state
            .pending_gang_resource_requests
            .iter()
            .map(|g| crate::scheduler::Gang {
                bundles: g.requests.iter().map(|r| ResourceSet::from_f64_map_lossy(&r.resources_bundle)).collect(),
                strategy: crate::scheduler::PlacementStrategy::parse(&g.strategy),
            })
            .filter(|g| !g.bundles.is_empty())
            .collect(),
        request_resources: state
            .cluster_resource_constraints
            .iter()
            .flat_map(|c| c.resource_requests.iter())
            .map(|r| Demand { shape: shape(&r.request), count: r.count })
            .filter(|d| d.count > 0 && !d.shape.is_empty())
            .collect(),
    }
}

/// Ray's way of writing a shape: `{'CPU': 1.0, 'GPU': 0.5}`.
fn python_dict(m: &BTreeMap<String, f64>) -> String {
    let items: Vec<String> = m.iter().map(|(k, v)| format!("'{k}': {}", ray_common::resources::python_float(*v))).collect();
    format!("{{{}}}", items.join(", "))
}

/// The plan for people.
pub fn render(p: &Plan, config: &ClusterConfig) -> String {
    let mut s = String::new();
    let money = |v: f64| if p.unpriced_types.is_empty() { format!("${v:.3}/h") } else { format!("{v:.3} cost units/h") };
    let _ = writeln!(s, "Plan for {} bundle(s) on cluster {:?} (max_workers {}, upscaling_speed {}):", p.bundles, config.cluster_name, config.max_workers, config.upscaling_speed);
    if p.launch.is_empty() {
        let _ = writeln!(s, "  launch nothing: the head has room for what can be placed");
    }
    for (t, n) in &p.launch {
        let price = config.node_type(t).and_then(|c| c.price).map(|v| format!(" at ${v:.3}/h each")).unwrap_or_default();
        let now = p.launch_now.get(t).copied().unwrap_or(0);
        let later = if now < *n { format!("; {now} now, the rest as upscaling_speed allows") } else { String::new() };
        let why = p.reasons.get(t).map(|r| r.join(", ")).unwrap_or_default();
        let _ = writeln!(s, "  launch {n} x {t}{price} ({why}{later})");
    }
    match p.lower_bound_per_hour {
        Some(b) if b > 0.0 => {
            let _ = writeln!(
                s,
                "Cost: {}; no plan that places these bundles can cost less than {} ({:+.1}%).",
                money(p.cost_per_hour),
                money(b),
                (p.cost_per_hour / b - 1.0) * 100.0
            );
        }
        Some(_) => {
            let _ = writeln!(s, "Cost: {}.", money(p.cost_per_hour));
        }
        None => {
            let _ = writeln!(s, "Cost: {}; no lower bound: some bundles are capped, and a plan that places fewer can cost less.", money(p.cost_per_hour));
        }
    }
    if !p.unpriced_types.is_empty() {
        let _ = writeln!(s, "  (no `price` for {}: costs are estimated from capacity, not dollars)", p.unpriced_types.join(", "));
    }
    if !p.unplaced.is_empty() {
        let _ = writeln!(s, "Unplaced:");
        for u in &p.unplaced {
            let why = match u.why {
                "infeasible" => "infeasible: no node type can hold it",
                _ => "capped: max_workers is reached",
            };
            let _ = writeln!(s, "  {}: {} - {why}", python_dict(&u.resources), u.count);
        }
    }
    let _ = writeln!(s, "Decided in {:.2} ms.", p.decision_ms);
    s
}

#[cfg(test)]
mod tests;
