//! Which parts of the cluster state outlive the GCS process, and how they are
//! written and read back: the node table, jobs, actors, placement groups and the
//! `request_resources` constraint, one protobuf record per key. Resource reports,
//! demand, task events and the autoscaler's own report are not kept: raylets and
//! the autoscaler send them again within a period of reconnecting.
//!
//! Mutations mark what they changed (`Dirty`); [`ClusterState::take_dirty`]
//! turns the marks into writes, which the GCS commits in one batch
//! (`Gcs::persist`).

use std::collections::HashSet;

use prost::Message;
use ray_common::ResourceSet;
use ray_common::time::now_ms;
use ray_proto::rpc::autoscaler::ClusterResourceConstraint;
use ray_proto::rpc::{ActorTableData, JobInfo, NodeInfo, NodeState as TableState, PlacementGroupInfo};

use super::{ClusterState, NodeEntry};
use crate::durable_store::{StoreOp, Tables};

/// The node table.
pub const NODES: &str = "gcs:nodes";
/// Jobs.
pub const JOBS: &str = "gcs:jobs";
/// Actors.
pub const ACTORS: &str = "gcs:actors";
/// Placement groups.
pub const PLACEMENT_GROUPS: &str = "gcs:placement_groups";
/// Single values (the constraint).
pub const META: &str = "gcs:meta";
const CONSTRAINT_KEY: &[u8] = b"request_resources_constraint";

/// Records changed since the last flush.
#[derive(Debug, Default)]
pub struct Dirty {
    pub nodes: HashSet<String>,
    pub jobs: HashSet<String>,
    pub meta: bool,
}

/// What a restart found in storage.
#[derive(Debug, Default, PartialEq)]
pub struct Restored {
    pub alive_nodes: Vec<(String, String)>,
    pub dead_nodes: usize,
    pub jobs: usize,
    pub actors: usize,
    pub placement_groups: usize,
}

fn op<M: Message>(table: &str, key: &str, value: Option<&M>) -> StoreOp {
    StoreOp { table: table.to_string(), key: key.as_bytes().to_vec(), value: value.map(|m| m.encode_to_vec()) }
}

fn decode_all<M: Message + Default>(tables: &Tables, table: &str) -> Vec<M> {
    let Some(t) = tables.get(table) else { return Vec::new() };
    t.iter()
        .filter_map(|(k, v)| match M::decode(v.as_slice()) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!(table, key = %String::from_utf8_lossy(k), error = %e, "skipping an unreadable stored record");
                None
            }
        })
        .collect()
}

impl ClusterState {
    /// True when something is waiting to be written.
    pub fn has_dirty(&self) -> bool {
        let d = &self.dirty;
        !d.nodes.is_empty() || !d.jobs.is_empty() || d.meta || !self.actors.dirty.is_empty() || !self.placement_groups.dirty.is_empty()
    }

    /// The writes that bring storage up to date, and forgets the marks.
    pub fn take_dirty(&mut self) -> Vec<StoreOp> {
        let mut ops = Vec::new();
        for id in std::mem::take(&mut self.dirty.nodes) {
            ops.push(op(NODES, &id, self.nodes.get(&id).map(|e| &e.info)));
        }
        for id in std::mem::take(&mut self.dirty.jobs) {
            ops.push(op(JOBS, &id, self.jobs.iter().find(|j| j.job_id == id)));
        }
        if std::mem::take(&mut self.dirty.meta) {
            ops.push(StoreOp {
                table: META.into(),
                key: CONSTRAINT_KEY.to_vec(),
                value: self.constraint.as_ref().map(|c| c.encode_to_vec()),
            });
        }
        for id in std::mem::take(&mut self.actors.dirty) {
            ops.push(op(ACTORS, &id, self.actors.get(&id)));
        }
        for id in std::mem::take(&mut self.placement_groups.dirty) {
            ops.push(op(PLACEMENT_GROUPS, &id, self.placement_groups.get(&id)));
        }
        ops
    }

    /// Rebuilds the state from what storage holds. Nodes that were alive are
    /// alive again, with a fresh report time, and must answer health checks
    /// from now on (the caller starts them); the version starts above any the
    /// previous process could have handed out, so readers see every change
    /// as new.
    pub fn restore(&mut self, tables: &Tables) -> Restored {
        let now = now_ms();
        let mut out = Restored::default();
        let mut dead: Vec<(u64, String)> = Vec::new();
        for info in decode_all::<NodeInfo>(tables, NODES) {
            let alive = info.state == TableState::Alive as i32 || info.state == TableState::Draining as i32;
            let total = ResourceSet::from_f64_map_lossy(&info.resources_total);
            if alive {
                out.alive_nodes.push((info.node_id.clone(), format!("{}:{}", info.node_manager_address, info.node_manager_port)));
            } else {
                dead.push((info.end_time_ms, info.node_id.clone()));
            }
            let entry = NodeEntry {
                available: if alive { total } else { ResourceSet::new() },
                info: info.clone(),
                demand: Vec::new(),
                gang_demand: Vec::new(),
                idle_duration_ms: 0,
                last_report_ms: now,
                last_seq: 0,
                object_store_bytes_used: 0,
                version: 0,
            };
            self.nodes.insert(info.node_id, entry);
        }
        dead.sort();
        out.dead_nodes = dead.len();
        self.dead_order = dead.into_iter().map(|(_, id)| id).collect();
        let mut jobs = decode_all::<JobInfo>(tables, JOBS);
        jobs.sort_by(|a, b| (a.start_time_ms, &a.job_id).cmp(&(b.start_time_ms, &b.job_id)));
        out.jobs = jobs.len();
        self.jobs = jobs;
        let actors = decode_all::<ActorTableData>(tables, ACTORS);
        out.actors = actors.len();
        self.actors.restore(actors);
        let groups = decode_all::<PlacementGroupInfo>(tables, PLACEMENT_GROUPS);
        out.placement_groups = groups.len();
        self.placement_groups.restore(groups);
        self.constraint = tables
            .get(META)
            .and_then(|t| t.get(CONSTRAINT_KEY))
            .and_then(|v| ClusterResourceConstraint::decode(v.as_slice()).ok());
        self.version = self.version.max(now);
        for e in self.nodes.values_mut() {
            e.version = self.version;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durable_store::Tables;
    use ray_proto::rpc::autoscaler::{ResourceRequest, ResourceRequestByCount};

    fn node(id: u8, port: u32) -> NodeInfo {
        NodeInfo {
            node_id: format!("{id:056x}"),
            node_manager_address: "127.0.0.1".into(),
            node_manager_port: port,
            resources_total: [("CPU".to_string(), 2.0)].into_iter().collect(),
            ..Default::default()
        }
    }

    fn replay(tables: &mut Tables, ops: Vec<StoreOp>) {
        for o in ops {
            let t = tables.entry(o.table).or_default();
            match o.value {
                Some(v) => {
                    t.insert(o.key, v);
                }
                None => {
                    t.remove(&o.key);
                }
            }
        }
    }

    #[test]
    fn what_a_gcs_changed_is_what_the_next_one_reads_back() {
        let mut a = ClusterState::new("s".into());
        a.register(node(1, 7001)).unwrap();
        a.register(node(2, 7002)).unwrap();
        a.mark_dead(&format!("{:056x}", 2), crate::state::death(ray_proto::rpc::DeathReason::UnexpectedTermination, "gone")).unwrap();
        let job = a.add_job(JobInfo { driver_pid: 7, ..Default::default() });
        a.actors_mut()
            .register(ActorTableData { actor_id: format!("{:032x}", 9), name: "keeper".into(), namespace: "ns".into(), job_id: job.clone(), ..Default::default() }, false)
            .unwrap();
        a.set_constraint(ClusterResourceConstraint {
            resource_requests: vec![ResourceRequestByCount {
                request: Some(ResourceRequest { resources_bundle: [("CPU".to_string(), 1.0)].into_iter().collect() }),
                count: 3,
            }],
        });
        assert!(a.has_dirty());
        let mut tables = Tables::new();
        replay(&mut tables, a.take_dirty());
        assert!(!a.has_dirty(), "the marks are taken");
        assert!(a.take_dirty().is_empty());

        let mut b = ClusterState::new("s".into());
        let r = b.restore(&tables);
        assert_eq!(r.alive_nodes, vec![(format!("{:056x}", 1), "127.0.0.1:7001".to_string())]);
        assert_eq!((r.dead_nodes, r.jobs, r.actors), (1, 1, 1));
        assert!(b.node(&format!("{:056x}", 1)).is_some_and(|e| e.is_alive()));
        assert!(b.node(&format!("{:056x}", 2)).is_some_and(|e| !e.is_alive()));
        assert_eq!(b.actors().named("keeper", "ns").map(|x| x.actor_id.clone()), Some(format!("{:032x}", 9)));
        assert_eq!(b.add_job(JobInfo::default()), "02000000", "job ids go on from where the last GCS stopped");
        assert_eq!(b.cluster_resource_state().cluster_resource_constraints.len(), 1);
        assert!(b.version() >= a.version(), "versions never go back");

        // A node dropped from the table is deleted from storage too.
        a.actors_mut().kill(&format!("{:032x}", 9), "bye");
        let ops = a.take_dirty();
        assert_eq!(ops.len(), 1);
        assert!(ops[0].value.is_some(), "a dead actor is kept, as DEAD");
    }
}
