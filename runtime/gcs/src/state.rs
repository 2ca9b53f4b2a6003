//! The GCS's in-memory view of the cluster: the node table, each node's resources
//! and demand, the request_resources constraint and the autoscaler's last report.
//! One struct with methods behind one lock; every change bumps a version and is
//! published on the change stream.

use std::collections::{BTreeMap, HashMap, VecDeque};

use ray_common::ResourceSet;
use ray_common::time::now_ms;
use ray_proto::rpc::autoscaler::{
    AutoscalingState, ClusterResourceConstraint, ClusterResourceState, GangResourceRequest, NodeState,
    NodeStatus, ResourceRequest, ResourceRequestByCount,
};
use ray_proto::rpc::{
    Channel, DeathReason, GangDemand, NodeDeathInfo, NodeInfo, NodeResources, NodeState as TableState,
    ResourceDemand, ResourceReport,
};

pub(crate) mod persist;

/// Dead nodes kept for `ray status` and `ray.nodes()` (Ray keeps 1000).
pub const MAX_DEAD_NODES: usize = 1000;

/// One node as the GCS knows it.
#[derive(Debug, Clone)]
pub struct NodeEntry {
    /// The registration record, with the current state.
    pub info: NodeInfo,
    /// Latest reported available resources.
    pub available: ResourceSet,
    /// Latest reported demand by shape.
    pub demand: Vec<ResourceDemand>,
    /// Latest reported placement-group demand.
    pub gang_demand: Vec<GangDemand>,
    /// Idle time at the last report, and when that report came.
    pub idle_duration_ms: u64,
    /// When the last report arrived.
    pub last_report_ms: u64,
    /// Highest report sequence number seen.
    pub last_seq: u64,
    /// Object store bytes in use.
    pub object_store_bytes_used: u64,
    /// Bumped on every change of this node.
    pub version: u64,
}

impl NodeEntry {
    pub fn is_alive(&self) -> bool {
        self.info.state == TableState::Alive as i32 || self.info.state == TableState::Draining as i32
    }

    /// Idle time now, extrapolated from the last report.
    pub fn idle_now_ms(&self, now: u64) -> u64 {
        if self.idle_duration_ms == 0 { 0 } else { self.idle_duration_ms + now.saturating_sub(self.last_report_ms) }
    }
}

/// Why a change was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StateError {
    /// The node id is registered and alive already.
    #[error("node {0} is already registered and alive")]
    AlreadyAlive(String),
    /// No such node.
    #[error("node {0} is not registered with this GCS")]
    UnknownNode(String),
    /// The node was marked dead; its raylet must exit.
    #[error("node {0} was marked dead by the GCS ({1}); its raylet must restart to rejoin")]
    NodeDead(String, String),
    /// Bad field in a peer's message.
    #[error("invalid {field}: {detail}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        detail: String,
    },
}

/// A change to announce on the stream: (channel, node concerned).
pub type Change = (Channel, Option<NodeInfo>);

/// The cluster as seen by the GCS.
#[derive(Debug, Default)]
pub struct ClusterState {
    nodes: HashMap<String, NodeEntry>,
    dead_order: VecDeque<String>,
    version: u64,
    constraint: Option<ClusterResourceConstraint>,
    autoscaling_state: Option<AutoscalingState>,
    session_name: String,
    jobs: Vec<ray_proto::rpc::JobInfo>,
    placement_groups: crate::placement_groups::PlacementGroups,
    actors: crate::actors::Actors,
    tasks: crate::tasks::Tasks,
    /// Records changed since they were last written to storage (`persist.rs`).
    pub(crate) dirty: persist::Dirty,
}

impl ClusterState {
    /// An empty cluster of the given session.
    pub fn new(session_name: String) -> Self {
        Self { session_name, ..Default::default() }
    }

    /// The task table.
    pub fn tasks(&self) -> &crate::tasks::Tasks {
        &self.tasks
    }

    /// The task table, to change.
    pub fn tasks_mut(&mut self) -> &mut crate::tasks::Tasks {
        &mut self.tasks
    }

    /// The actor table.
    pub fn actors(&self) -> &crate::actors::Actors {
        &self.actors
    }

    /// The actor table, to change.
    pub fn actors_mut(&mut self) -> &mut crate::actors::Actors {
        &mut self.actors
    }

    /// The placement group table.
    pub fn placement_groups(&self) -> &crate::placement_groups::PlacementGroups {
        &self.placement_groups
    }

    /// The placement group table, to change.
    pub fn placement_groups_mut(&mut self) -> &mut crate::placement_groups::PlacementGroups {
        &mut self.placement_groups
    }

    /// A placement group changed (its demand, or resources on nodes): the
    /// version moves so the autoscaler and raylets look again.
    pub fn placement_groups_changed(&mut self) -> Change {
        self.bump();
        (Channel::Resources, None)
    }

    /// Ids of jobs that ended.
    pub fn dead_jobs(&self) -> std::collections::HashSet<String> {
        self.jobs.iter().filter(|j| j.is_dead).map(|j| j.job_id.clone()).collect()
    }

    /// Registers a driver's job; returns its new id (4 bytes, little-endian
    /// counter, hex, as Ray numbers jobs: "01000000" first).
    pub fn add_job(&mut self, mut job: ray_proto::rpc::JobInfo) -> String {
        let n = self.jobs.len() as u32 + 1;
        job.job_id = hex_le(n);
        job.is_dead = false;
        job.start_time_ms = now_ms();
        let id = job.job_id.clone();
        self.jobs.push(job);
        self.dirty.jobs.insert(id.clone());
        id
    }

    /// Marks a job finished.
    pub fn finish_job(&mut self, job_id: &str) {
        if let Some(j) = self.jobs.iter_mut().find(|j| j.job_id == job_id) {
            j.is_dead = true;
            j.end_time_ms = now_ms();
            self.dirty.jobs.insert(job_id.to_string());
        }
    }

    /// Every job.
    pub fn jobs(&self) -> &[ray_proto::rpc::JobInfo] {
        &self.jobs
    }

    /// Session name.
    pub fn session_name(&self) -> &str {
        &self.session_name
    }

    /// Current version of the cluster resource state.
    pub fn version(&self) -> u64 {
        self.version
    }

    fn bump(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    /// Adds a node in state ALIVE.
    pub fn register(&mut self, mut info: NodeInfo) -> Result<Change, StateError> {
        ray_common::NodeId::parse(&info.node_id).map_err(|d| StateError::Invalid { field: "node_id", detail: d })?;
        if info.node_manager_address.is_empty() || info.node_manager_address.len() > 255 {
            return Err(StateError::Invalid {
                field: "node_manager_address",
                detail: "must be a host name or IP address".into(),
            });
        }
        if info.node_manager_port == 0 || info.node_manager_port > 65535 {
            return Err(StateError::Invalid { field: "node_manager_port", detail: "must be 1..65535".into() });
        }
        let total = ResourceSet::from_f64_map(&info.resources_total)
            .map_err(|e| StateError::Invalid { field: "resources_total", detail: e.to_string() })?;
        if let Some(e) = self.nodes.get(&info.node_id)
            && e.is_alive()
        {
            return Err(StateError::AlreadyAlive(info.node_id.clone()));
        }
        info.state = TableState::Alive as i32;
        info.death_info = None;
        info.start_time_ms = now_ms();
        info.end_time_ms = 0;
        let v = self.bump();
        let entry = NodeEntry {
            available: total,
            info: info.clone(),
            demand: Vec::new(),
            gang_demand: Vec::new(),
            idle_duration_ms: 1,
            last_report_ms: now_ms(),
            last_seq: 0,
            object_store_bytes_used: 0,
            version: v,
        };
        self.nodes.insert(info.node_id.clone(), entry);
        self.dirty.nodes.insert(info.node_id.clone());
        Ok((Channel::Nodes, Some(info)))
    }

    /// Marks a node DEAD. Idempotent: a dead node stays dead with its first reason.
    pub fn mark_dead(&mut self, node_id: &str, death: NodeDeathInfo) -> Result<Option<Change>, StateError> {
        let Some(e) = self.nodes.get_mut(node_id) else {
            return Err(StateError::UnknownNode(node_id.to_string()));
        };
        if !e.is_alive() {
            return Ok(None);
        }
        e.info.state = TableState::Dead as i32;
        e.info.death_info = Some(death);
        e.info.end_time_ms = now_ms();
        e.available = ResourceSet::new();
        e.demand.clear();
        e.gang_demand.clear();
        let info = e.info.clone();
        let v = self.bump();
        if let Some(e) = self.nodes.get_mut(node_id) {
            e.version = v;
        }
        self.dead_order.push_back(node_id.to_string());
        self.dirty.nodes.insert(node_id.to_string());
        while self.dead_order.len() > MAX_DEAD_NODES {
            if let Some(old) = self.dead_order.pop_front() {
                self.nodes.remove(&old);
                self.dirty.nodes.insert(old);
            }
        }
        Ok(Some((Channel::Nodes, Some(info))))
    }

    /// Marks an alive node DRAINING.
    pub fn mark_draining(&mut self, node_id: &str) -> Result<Option<Change>, StateError> {
        let Some(e) = self.nodes.get_mut(node_id) else {
            return Err(StateError::UnknownNode(node_id.to_string()));
        };
        if e.info.state != TableState::Alive as i32 {
            return Ok(None);
        }
        e.info.state = TableState::Draining as i32;
        let info = e.info.clone();
        self.dirty.nodes.insert(node_id.to_string());
        let v = self.bump();
        if let Some(e) = self.nodes.get_mut(node_id) {
            e.version = v;
        }
        Ok(Some((Channel::Nodes, Some(info))))
    }

    /// Applies a raylet's report. Returns a change only when something an
    /// autoscaler cares about changed (not for every heartbeat).
    pub fn apply_report(&mut self, r: ResourceReport) -> Result<Option<Change>, StateError> {
        let Some(e) = self.nodes.get_mut(&r.node_id) else {
            return Err(StateError::UnknownNode(ray_common::ids::truncate(&r.node_id, 64).to_string()));
        };
        if !e.is_alive() {
            let why = e.info.death_info.as_ref().map(|d| d.reason_message.clone()).unwrap_or_default();
            return Err(StateError::NodeDead(r.node_id.clone(), why));
        }
        if r.seq != 0 && r.seq <= e.last_seq {
            return Ok(None);
        }
        let now = now_ms();
        e.last_seq = r.seq;
        e.last_report_ms = now;
        e.object_store_bytes_used = r.object_store_bytes_used;
        let available = ResourceSet::from_f64_map_lossy(&r.resources_available);
        let demand: Vec<ResourceDemand> = r.demand.into_iter().filter(|d| !d.shape.is_empty()).collect();
        let was_idle = e.idle_duration_ms > 0;
        let is_idle = r.idle_duration_ms > 0;
        e.idle_duration_ms = r.idle_duration_ms;
        let changed =
            e.available != available || e.demand != demand || e.gang_demand != r.gang_demand || was_idle != is_idle;
        if !changed {
            return Ok(None);
        }
        e.available = available;
        e.demand = demand;
        e.gang_demand = r.gang_demand;
        let info = e.info.clone();
        let v = self.bump();
        if let Some(e) = self.nodes.get_mut(&info.node_id) {
            e.version = v;
        }
        Ok(Some((Channel::Resources, Some(info))))
    }

    /// Replaces the request_resources constraint (an empty one clears it).
    pub fn set_constraint(&mut self, c: ClusterResourceConstraint) -> Change {
        let empty = c.resource_requests.iter().all(|r| r.count == 0);
        self.constraint = if empty { None } else { Some(c) };
        self.dirty.meta = true;
        self.bump();
        (Channel::Constraints, None)
    }

    /// Stores the autoscaler's report if it is newer than the one held.
    pub fn set_autoscaling_state(&mut self, s: AutoscalingState) -> Option<Change> {
        if let Some(cur) = &self.autoscaling_state
            && s.autoscaler_state_version < cur.autoscaler_state_version
        {
            return None;
        }
        self.autoscaling_state = Some(s);
        Some((Channel::Autoscaler, None))
    }

    /// The autoscaler's last report.
    pub fn autoscaling_state(&self) -> Option<&AutoscalingState> {
        self.autoscaling_state.as_ref()
    }

    /// A node by id.
    pub fn node(&self, node_id: &str) -> Option<&NodeEntry> {
        self.nodes.get(node_id)
    }

    /// Every node, alive first, in start order.
    pub fn nodes(&self) -> Vec<&NodeEntry> {
        let mut v: Vec<&NodeEntry> = self.nodes.values().collect();
        v.sort_by_key(|e| (!e.is_alive(), e.info.start_time_ms, e.info.node_id.clone()));
        v
    }

    /// Every node's resources, for `GetAllResourceUsage`.
    pub fn resource_usage(&self) -> Vec<NodeResources> {
        self.nodes()
            .into_iter()
            .filter(|e| e.is_alive())
            .map(|e| NodeResources {
                node_id: e.info.node_id.clone(),
                resources_total: e.info.resources_total.clone(),
                resources_available: e.available.to_f64_map(),
                demand: e.demand.clone(),
                gang_demand: e.gang_demand.clone(),
                idle_duration_ms: e.idle_duration_ms,
                object_store_bytes_used: e.object_store_bytes_used,
            })
            .collect()
    }

    /// The state the autoscaler reads.
    pub fn cluster_resource_state(&self) -> ClusterResourceState {
        let now = now_ms();
        let mut node_states = Vec::with_capacity(self.nodes.len());
        let mut demand: BTreeMap<ResourceSet, u64> = BTreeMap::new();
        let mut infeasible: BTreeMap<ResourceSet, u64> = BTreeMap::new();
        let mut gangs = Vec::new();
        for e in self.nodes() {
            let alive = e.is_alive();
            let status = if !alive {
                NodeStatus::Dead
            } else if e.info.state == TableState::Draining as i32 {
                NodeStatus::Draining
            } else if e.idle_duration_ms > 0 {
                NodeStatus::Idle
            } else {
                NodeStatus::Running
            };
            node_states.push(NodeState {
                node_id: e.info.node_id.clone(),
                instance_id: e.info.instance_id.clone(),
                ray_node_type_name: e.info.node_type_name.clone(),
                available_resources: e.available.to_f64_map(),
                total_resources: if alive { e.info.resources_total.clone() } else { Default::default() },
                labels: e.info.labels.clone(),
                node_state_version: e.version,
                status: status as i32,
                idle_duration_ms: if alive { e.idle_now_ms(now) } else { 0 },
                node_ip_address: e.info.node_manager_address.clone(),
                is_head_node: e.info.is_head_node,
                death_info: e.info.death_info.clone(),
            });
            if !alive {
                continue;
            }
            for d in &e.demand {
                let shape = ResourceSet::from_f64_map_lossy(&d.shape);
                // Tasks waiting for a placement group's bundle resources are the
                // group's demand, reported as its gang below (as Ray's autoscaler
                // ignores `*_group_*` resources).
                if shape.is_empty() || shape.iter().any(|(k, _)| k.contains("_group_")) {
                    continue;
                }
                // A request that is ready (its node has the resources free and is
                // starting a worker for it) needs no new capacity: counting it
                // would count twice a request that another raylet's report,
                // older by a few ms, still lists from before it spilled here,
                // and launch a node for it.
                let n = d.backlog_size;
                let inf = d.num_infeasible_requests_queued;
                let total = n.saturating_add(inf);
                if total > 0 {
                    let e = demand.entry(shape.clone()).or_default();
                    *e = e.saturating_add(total);
                }
                if inf > 0 {
                    let e = infeasible.entry(shape).or_default();
                    *e = e.saturating_add(inf);
                }
            }
            for g in &e.gang_demand {
                gangs.push(GangResourceRequest {
                    requests: g
                        .bundles
                        .iter()
                        .map(|b| ResourceRequest { resources_bundle: b.amounts.clone() })
                        .collect(),
                    strategy: g.strategy.clone(),
                    details: format!("placement group {}", g.placement_group_id),
                });
            }
        }
        for (id, strategy, bundles) in self.placement_groups.gang_demand() {
            gangs.push(GangResourceRequest {
                requests: bundles.into_iter().map(|b| ResourceRequest { resources_bundle: b.amounts }).collect(),
                strategy,
                details: format!("placement group {id}"),
            });
        }
        let by_count = |m: BTreeMap<ResourceSet, u64>| {
            m.into_iter()
                .map(|(shape, count)| ResourceRequestByCount {
                    request: Some(ResourceRequest { resources_bundle: shape.to_f64_map() }),
                    count,
                })
                .collect()
        };
        ClusterResourceState {
            cluster_resource_state_version: self.version,
            last_seen_autoscaler_state_version: self
                .autoscaling_state
                .as_ref()
                .map(|s| s.autoscaler_state_version)
                .unwrap_or(0),
            node_states,
            pending_resource_requests: by_count(demand),
            pending_gang_resource_requests: gangs,
            cluster_resource_constraints: self.constraint.iter().cloned().collect(),
            cluster_session_name: self.session_name.clone(),
            infeasible_by_raylets: by_count(infeasible),
        }
    }
}

fn hex_le(n: u32) -> String {
    n.to_le_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// A death record.
pub fn death(reason: DeathReason, message: impl Into<String>) -> NodeDeathInfo {
    NodeDeathInfo { reason: reason as i32, reason_message: message.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(cpus: f64) -> NodeInfo {
        NodeInfo {
            node_id: ray_common::NodeId::random().to_string(),
            node_manager_address: "127.0.0.1".into(),
            node_manager_port: 1234,
            resources_total: [("CPU".to_string(), cpus)].into(),
            ..Default::default()
        }
    }

    #[test]
    fn register_validates_and_refuses_duplicates() {
        let mut s = ClusterState::new("s".into());
        let n = node(4.0);
        s.register(n.clone()).unwrap();
        assert_eq!(s.register(n.clone()), Err(StateError::AlreadyAlive(n.node_id.clone())));
        let mut bad = node(1.0);
        bad.node_id = "xyz".into();
        assert!(matches!(s.register(bad), Err(StateError::Invalid { field: "node_id", .. })));
        let mut neg = node(-1.0);
        neg.node_id = ray_common::NodeId::random().to_string();
        assert!(matches!(s.register(neg), Err(StateError::Invalid { field: "resources_total", .. })));
        assert_eq!(s.nodes().len(), 1);
    }

    #[test]
    fn heartbeats_without_change_do_not_bump_the_version() {
        let mut s = ClusterState::new("s".into());
        let n = node(4.0);
        s.register(n.clone()).unwrap();
        let report = |seq, cpu: f64, idle| ResourceReport {
            node_id: n.node_id.clone(),
            resources_total: n.resources_total.clone(),
            resources_available: [("CPU".to_string(), cpu)].into(),
            seq,
            idle_duration_ms: idle,
            ..Default::default()
        };
        assert!(s.apply_report(report(1, 4.0, 10)).unwrap().is_none());
        let v = s.version();
        assert!(s.apply_report(report(2, 4.0, 1010)).unwrap().is_none());
        assert_eq!(s.version(), v);
        assert!(s.apply_report(report(3, 3.0, 0)).unwrap().is_some());
        assert_eq!(s.version(), v + 1);
        // Stale sequence numbers are ignored.
        assert!(s.apply_report(report(2, 1.0, 0)).unwrap().is_none());
    }

    #[test]
    fn dead_nodes_refuse_reports_and_leave_demand() {
        let mut s = ClusterState::new("s".into());
        let n = node(1.0);
        s.register(n.clone()).unwrap();
        let r = ResourceReport {
            node_id: n.node_id.clone(),
            seq: 1,
            demand: vec![ResourceDemand {
                shape: [("CPU".to_string(), 1.0)].into(),
                backlog_size: 3,
                ..Default::default()
            }],
            ..Default::default()
        };
        s.apply_report(r.clone()).unwrap();
        let st = s.cluster_resource_state();
        assert_eq!(st.pending_resource_requests[0].count, 3);
        s.mark_dead(&n.node_id, death(DeathReason::UnexpectedTermination, "gone")).unwrap();
        assert!(matches!(s.apply_report(ResourceReport { seq: 2, ..r }), Err(StateError::NodeDead(..))));
        let st = s.cluster_resource_state();
        assert!(st.pending_resource_requests.is_empty());
        assert_eq!(st.node_states[0].status, NodeStatus::Dead as i32);
    }

    #[test]
    fn ready_requests_are_not_demand_for_new_nodes() {
        let mut s = ClusterState::new("s".into());
        let n = node(1.0);
        s.register(n.clone()).unwrap();
        s.apply_report(ResourceReport {
            node_id: n.node_id.clone(),
            seq: 1,
            demand: vec![ResourceDemand {
                shape: [("CPU".to_string(), 1.0)].into(),
                num_ready_requests_queued: 1,
                backlog_size: 2,
                num_infeasible_requests_queued: 1,
                ..Default::default()
            }],
            ..Default::default()
        })
        .unwrap();
        let st = s.cluster_resource_state();
        assert_eq!(st.pending_resource_requests[0].count, 3, "backlog and infeasible, not the ready one");
    }

    #[test]
    fn constraint_replaces_and_clears() {
        let mut s = ClusterState::new("s".into());
        let req = |count| ClusterResourceConstraint {
            resource_requests: vec![ResourceRequestByCount {
                request: Some(ResourceRequest { resources_bundle: [("CPU".to_string(), 1.0)].into() }),
                count,
            }],
        };
        s.set_constraint(req(8));
        assert_eq!(s.cluster_resource_state().cluster_resource_constraints[0].resource_requests[0].count, 8);
        s.set_constraint(req(0));
        assert!(s.cluster_resource_state().cluster_resource_constraints.is_empty());
    }
}
