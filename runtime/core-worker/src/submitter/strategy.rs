//! Scheduling strategies other than the default (Ray's `scheduling_strategy`):
//! `SPREAD`, `NodeAffinitySchedulingStrategy` and `NodeLabelSchedulingStrategy`.
//! Each picks the raylet a lease request goes to first, from the GCS's view of
//! the nodes; the default asks the local raylet, which spills as it sees fit.
//! (Placement groups need no strategy here: their tasks ask for the bundle's
//! own resources, which only the nodes holding the bundle have.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use ray_common::ResourceSet;
use ray_common::gcs_client::GcsClient;
use ray_proto::rpc::{GetAllNodeInfoRequest, GetAllResourceUsageRequest, NodeState};

/// How a task picks its node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// The local raylet first; it spills to less loaded nodes (Ray's hybrid policy).
    #[default]
    Default,
    /// Over the nodes that can run it, in turn.
    Spread,
    /// On one node; with `soft`, elsewhere when that node is gone or cannot hold it.
    NodeAffinity {
        /// The node (hex id).
        node_id: String,
        /// May run elsewhere.
        soft: bool,
    },
    /// On a node whose labels match `hard`, preferring those that match `soft`.
    NodeLabel {
        /// Must match.
        hard: Vec<LabelExpr>,
        /// Preferred.
        soft: Vec<LabelExpr>,
    },
}

/// One label condition.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LabelExpr {
    /// The label's key.
    pub key: String,
    /// The condition.
    pub op: LabelOp,
    /// Values for `In` and `NotIn`.
    pub values: Vec<String>,
}

/// Ray's label operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LabelOp {
    /// The label has one of the values.
    In,
    /// The label is absent or has none of the values.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

impl LabelOp {
    /// From Ray's class names (`In`, `NotIn`, `Exists`, `DoesNotExist`).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "In" => Self::In,
            "NotIn" => Self::NotIn,
            "Exists" => Self::Exists,
            "DoesNotExist" => Self::DoesNotExist,
            _ => return None,
        })
    }
}

impl LabelExpr {
    /// True when `labels` satisfy this condition.
    pub fn matches(&self, labels: &HashMap<String, String>) -> bool {
        let v = labels.get(&self.key);
        match self.op {
            LabelOp::In => v.is_some_and(|v| self.values.contains(v)),
            LabelOp::NotIn => v.is_none_or(|v| !self.values.contains(v)),
            LabelOp::Exists => v.is_some(),
            LabelOp::DoesNotExist => v.is_none(),
        }
    }
}

/// An alive node as the GCS reports it.
#[derive(Debug, Clone)]
pub struct NodeView {
    /// Hex id.
    pub node_id: String,
    /// Its raylet.
    pub address: String,
    /// Labels.
    pub labels: HashMap<String, String>,
    /// All its resources.
    pub total: ResourceSet,
    /// Free now (as last reported).
    pub available: ResourceSet,
}

/// Where a lease request goes first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The local raylet (it may spill).
    Local,
    /// The raylet of one node. `pinned`: it queues there; otherwise it is granted
    /// there or sent back (the node looked free).
    Node {
        /// Hex id.
        node_id: String,
        /// Raylet address.
        address: String,
        /// Wait there rather than be sent back.
        pinned: bool,
    },
    /// No alive node can run it now; ask again later (a node may join).
    NotYet,
    /// It can never run (a hard affinity to a dead node): fail the tasks.
    Unschedulable(String),
}

/// The alive nodes, with their labels and resources.
pub async fn cluster_view(gcs: &GcsClient) -> Result<Vec<NodeView>, String> {
    let nodes = gcs
        .nodes
        .clone()
        .get_all_node_info(GetAllNodeInfoRequest { state_filter: Some(NodeState::Alive as i32) })
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner()
        .nodes;
    let usage = gcs.resources.clone().get_all_resource_usage(GetAllResourceUsageRequest {}).await.map_err(|s| s.message().to_string())?;
    let available: HashMap<String, ResourceSet> =
        usage.into_inner().nodes.into_iter().map(|n| (n.node_id, ResourceSet::from_f64_map_lossy(&n.resources_available))).collect();
    Ok(nodes
        .into_iter()
        .map(|n| {
            let total = ResourceSet::from_f64_map_lossy(&n.resources_total);
            NodeView {
                address: format!("{}:{}", n.node_manager_address, n.node_manager_port),
                available: available.get(&n.node_id).cloned().unwrap_or_else(|| total.clone()),
                labels: n.labels,
                total,
                node_id: n.node_id,
            }
        })
        .collect())
}

fn load(n: &NodeView, shape: &ResourceSet) -> f64 {
    shape
        .iter()
        .map(|(k, _)| {
            let t = n.total.get(k).to_f64();
            if t <= 0.0 { 1.0 } else { 1.0 - n.available.get(k).to_f64() / t }
        })
        .fold(0.0, f64::max)
}

fn node(n: &NodeView, pinned: bool) -> Target {
    Target::Node { node_id: n.node_id.clone(), address: n.address.clone(), pinned }
}

/// SPREAD's memory: when each node was last picked.
#[derive(Debug, Default)]
pub struct SpreadTurns {
    next: AtomicUsize,
    last: std::sync::Mutex<HashMap<String, usize>>,
}

impl SpreadTurns {
    /// The node of `among` picked longest ago (never picked first, then in
    /// order), now recorded as picked.
    fn pick<'a>(&self, among: &[&'a NodeView]) -> &'a NodeView {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let best = among.iter().min_by_key(|n| last.get(&n.node_id).copied().unwrap_or(0)).expect("a node to pick from");
        let turn = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        last.insert(best.node_id.clone(), turn);
        best
    }
}

/// Picks where a lease request for `shape` under `strategy` goes. `turns`
/// rotates SPREAD's choice: the free node picked longest ago goes next, so
/// consecutive requests land on different nodes even as the view changes.
pub fn choose(strategy: &Strategy, shape: &ResourceSet, nodes: &[NodeView], turns: &SpreadTurns) -> Target {
    match strategy {
        Strategy::Default => Target::Local,
        Strategy::Spread => {
            let feasible: Vec<&NodeView> = nodes.iter().filter(|n| shape.is_subset_of(&n.total)).collect();
            if feasible.is_empty() {
                return Target::Local;
            }
            let free: Vec<&NodeView> = feasible.iter().copied().filter(|n| shape.is_subset_of(&n.available)).collect();
            match free.is_empty() {
                false => node(turns.pick(&free), false),
                true => node(turns.pick(&feasible), true),
            }
        }
        Strategy::NodeAffinity { node_id, soft } => match nodes.iter().find(|n| &n.node_id == node_id) {
            Some(n) if shape.is_subset_of(&n.total) => node(n, true),
            Some(_) if *soft => Target::Local,
            Some(n) => Target::Unschedulable(format!(
                "the node {} named by NodeAffinitySchedulingStrategy has {} in total; the task needs {shape}",
                ray_common::ids::truncate(node_id, 12),
                n.total
            )),
            None if *soft => Target::Local,
            None => Target::Unschedulable(format!(
                "the node {} named by NodeAffinitySchedulingStrategy(soft=False) is not alive",
                ray_common::ids::truncate(node_id, 12)
            )),
        },
        Strategy::NodeLabel { hard, soft } => {
            let ok: Vec<&NodeView> =
                nodes.iter().filter(|n| shape.is_subset_of(&n.total) && hard.iter().all(|e| e.matches(&n.labels))).collect();
            if ok.is_empty() {
                return Target::NotYet;
            }
            let preferred: Vec<&NodeView> = ok.iter().copied().filter(|n| soft.iter().all(|e| e.matches(&n.labels))).collect();
            let pool = if preferred.is_empty() { &ok } else { &preferred };
            let best = pool
                .iter()
                .min_by(|a, b| {
                    let fa = !shape.is_subset_of(&a.available);
                    let fb = !shape.is_subset_of(&b.available);
                    fa.cmp(&fb).then(load(a, shape).total_cmp(&load(b, shape)))
                })
                .expect("pool is not empty");
            node(best, true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: &str, cpus: i64, free: i64, labels: &[(&str, &str)]) -> NodeView {
        let set = |n: i64| -> ResourceSet { [("CPU".to_string(), ray_common::FixedPoint::from_int(n))].into_iter().collect() };
        NodeView {
            node_id: id.into(),
            address: format!("{id}:1"),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            total: set(cpus),
            available: set(free),
        }
    }

    fn cpu(n: i64) -> ResourceSet {
        [("CPU".to_string(), ray_common::FixedPoint::from_int(n))].into_iter().collect()
    }

    fn id_of(t: &Target) -> &str {
        match t {
            Target::Node { node_id, .. } => node_id,
            other => panic!("expected a node, got {other:?}"),
        }
    }

    #[test]
    fn spread_takes_free_nodes_in_turn_and_skips_ones_too_small() {
        let nodes = [view("a", 2, 2, &[]), view("b", 1, 0, &[]), view("c", 2, 1, &[]), view("tiny", 0, 0, &[])];
        let turn = SpreadTurns::default();
        let picks: Vec<String> = (0..4).map(|_| id_of(&choose(&Strategy::Spread, &cpu(1), &nodes, &turn)).to_string()).collect();
        assert_eq!(picks, ["a", "c", "a", "c"], "b is busy, tiny cannot hold it");
        // The view changes between requests (a node looks busy, then free again):
        // the next pick is still the node picked longest ago.
        let turn = SpreadTurns::default();
        let all = [view("a", 2, 2, &[]), view("b", 2, 2, &[]), view("c", 2, 2, &[])];
        let a_busy = [view("a", 2, 0, &[]), view("b", 2, 2, &[]), view("c", 2, 2, &[])];
        let p1 = id_of(&choose(&Strategy::Spread, &cpu(1), &all, &turn)).to_string();
        let p2 = id_of(&choose(&Strategy::Spread, &cpu(1), &all, &turn)).to_string();
        let p3 = id_of(&choose(&Strategy::Spread, &cpu(1), &a_busy, &turn)).to_string();
        assert_eq!([p1, p2, p3], ["a", "b", "c"]);
        let busy = [view("a", 2, 0, &[]), view("b", 2, 0, &[])];
        let t = choose(&Strategy::Spread, &cpu(1), &busy, &turn);
        assert!(matches!(t, Target::Node { pinned: true, .. }), "all busy: it waits on one of them");
    }

    #[test]
    fn node_affinity_is_hard_unless_soft() {
        let nodes = [view("a", 2, 0, &[])];
        let hard = |id: &str, soft| Strategy::NodeAffinity { node_id: id.into(), soft };
        let turn = SpreadTurns::default();
        assert_eq!(choose(&hard("a", false), &cpu(1), &nodes, &turn), node(&nodes[0], true), "busy: it waits there");
        assert!(matches!(choose(&hard("gone", false), &cpu(1), &nodes, &turn), Target::Unschedulable(m) if m.contains("not alive")));
        assert_eq!(choose(&hard("gone", true), &cpu(1), &nodes, &turn), Target::Local);
        assert!(matches!(choose(&hard("a", false), &cpu(4), &nodes, &turn), Target::Unschedulable(_)));
        assert_eq!(choose(&hard("a", true), &cpu(4), &nodes, &turn), Target::Local);
    }

    #[test]
    fn node_labels_filter_hard_and_prefer_soft() {
        let nodes = [
            view("gpu1", 4, 4, &[("accel", "A100"), ("zone", "a")]),
            view("gpu2", 4, 4, &[("accel", "A100"), ("zone", "b")]),
            view("cpu", 4, 4, &[("zone", "b")]),
        ];
        let e = |key: &str, op, values: &[&str]| LabelExpr { key: key.into(), op, values: values.iter().map(|v| v.to_string()).collect() };
        let turn = SpreadTurns::default();
        let s = Strategy::NodeLabel { hard: vec![e("accel", LabelOp::In, &["A100"])], soft: vec![e("zone", LabelOp::In, &["b"])] };
        assert_eq!(id_of(&choose(&s, &cpu(1), &nodes, &turn)), "gpu2");
        let s = Strategy::NodeLabel { hard: vec![e("accel", LabelOp::DoesNotExist, &[])], soft: vec![] };
        assert_eq!(id_of(&choose(&s, &cpu(1), &nodes, &turn)), "cpu");
        let s = Strategy::NodeLabel { hard: vec![e("zone", LabelOp::NotIn, &["a", "b"])], soft: vec![] };
        assert_eq!(choose(&s, &cpu(1), &nodes, &turn), Target::NotYet, "no node matches yet");
    }
}
