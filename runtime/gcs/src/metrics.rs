//! The GCS's `/metrics`: the cluster's tables counted by state, with Ray's
//! metric names where Ray has them: tasks (`ray_tasks`), actors
//! (`ray_actors`), placement groups (`ray_placement_groups`), jobs
//! (`ray_running_jobs`, `ray_finished_jobs`), and nodes by type as the
//! dashboard exports them from the autoscaler's view (`ray_cluster_active_nodes`,
//! `ray_cluster_pending_nodes`, `ray_cluster_failed_nodes`). Nodes by table
//! state (`ray_gcs_nodes`) are this build's own.
//!
//! The figures are copied out under the state lock and formatted after it is
//! released.

use std::collections::BTreeMap;

use ray_common::metrics::{Exposition, Kind};
use ray_proto::rpc::{DeathReason, NodeState};

use crate::Gcs;
use crate::state::ClusterState;

/// What one scrape reports, copied out of the state.
#[derive(Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Session name (the `SessionName` label).
    pub session: String,
    /// Tasks by (name, state, is a retry).
    pub tasks: BTreeMap<(String, String, bool), u64>,
    /// Actors by (class name, state).
    pub actors: BTreeMap<(String, String), u64>,
    /// Placement groups by state.
    pub placement_groups: BTreeMap<String, u64>,
    /// Jobs still running, and finished.
    pub jobs: (u64, u64),
    /// Nodes by table state.
    pub nodes: BTreeMap<&'static str, u64>,
    /// Alive nodes by node type.
    pub active_by_type: BTreeMap<String, u64>,
    /// Nodes the autoscaler is launching or setting up, by node type.
    pub pending_by_type: BTreeMap<String, u64>,
    /// Nodes that died unexpectedly, by node type.
    pub failed_by_type: BTreeMap<String, u64>,
}

impl Snapshot {
    /// Counts the tables of `st`.
    pub fn of(st: &ClusterState) -> Self {
        let mut s = Snapshot {
            session: st.session_name().to_string(),
            ..Default::default()
        };
        for t in st.tasks().iter() {
            let state = if t.state.is_empty() {
                "NIL".to_string()
            } else {
                t.state.clone()
            };
            *s.tasks
                .entry((t.name.clone(), state, t.attempt > 0))
                .or_default() += 1;
        }
        for a in st.actors().all("", false) {
            *s.actors.entry((a.class_name, a.state)).or_default() += 1;
        }
        for g in st.placement_groups().all() {
            *s.placement_groups.entry(g.state).or_default() += 1;
        }
        for j in st.jobs() {
            if j.is_dead {
                s.jobs.1 += 1;
            } else {
                s.jobs.0 += 1;
            }
        }
        for n in st.nodes() {
            let state = match NodeState::try_from(n.info.state) {
                Ok(NodeState::Alive) => "ALIVE",
                Ok(NodeState::Draining) => "DRAINING",
                _ => "DEAD",
            };
            *s.nodes.entry(state).or_default() += 1;
            let node_type = n.info.node_type_name.clone();
            if n.is_alive() {
                *s.active_by_type.entry(node_type).or_default() += 1;
            } else if n
                .info
                .death_info
                .as_ref()
                .is_some_and(|d| d.reason == DeathReason::UnexpectedTermination as i32)
            {
                *s.failed_by_type.entry(node_type).or_default() += 1;
            }
        }
        if let Some(a) = st.autoscaling_state() {
            for r in &a.pending_instance_requests {
                *s.pending_by_type
                    .entry(r.ray_node_type_name.clone())
                    .or_default() += r.count;
            }
            for p in &a.pending_instances {
                *s.pending_by_type
                    .entry(p.ray_node_type_name.clone())
                    .or_default() += 1;
            }
        }
        s
    }

    /// The `/metrics` text.
    pub fn render(&self) -> String {
        let mut e = Exposition::new(&[("SessionName", &self.session), ("Component", "gcs_server")]);
        e.gauge(
            "ray_tasks",
            "Tasks the GCS task table holds (the latest 10,000), by name, state and whether the attempt is a retry.",
            self.tasks.iter().map(|((name, state, retry), n)| {
                ([("Name", name.as_str()), ("State", state.as_str()), ("IsRetry", if *retry { "1" } else { "0" })], *n as f64)
            }),
        );
        e.gauge(
            "ray_actors",
            "Actors by class name and state.",
            self.actors.iter().map(|((name, state), n)| {
                (
                    [("Name", name.as_str()), ("State", state.as_str())],
                    *n as f64,
                )
            }),
        );
        e.gauge(
            "ray_placement_groups",
            "Placement groups by state.",
            self.placement_groups
                .iter()
                .map(|(state, n)| ([("State", state.as_str())], *n as f64)),
        );
        e.gauge(
            "ray_running_jobs",
            "Jobs whose driver is running.",
            [([], self.jobs.0 as f64)],
        );
        e.gauge(
            "ray_finished_jobs",
            "Jobs that ended since the GCS started.",
            [([], self.jobs.1 as f64)],
        );
        e.gauge(
            "ray_gcs_nodes",
            "Nodes in the GCS node table by state (dead nodes are kept up to 1,000).",
            ["ALIVE", "DRAINING", "DEAD"].map(|st| {
                (
                    [("State", st)],
                    self.nodes.get(st).copied().unwrap_or(0) as f64,
                )
            }),
        );
        for (name, help, m) in [
            (
                "ray_cluster_active_nodes",
                "Alive nodes by node type.",
                &self.active_by_type,
            ),
            (
                "ray_cluster_pending_nodes",
                "Nodes the autoscaler is launching or setting up, by node type.",
                &self.pending_by_type,
            ),
            (
                "ray_cluster_failed_nodes",
                "Nodes that died unexpectedly, by node type.",
                &self.failed_by_type,
            ),
        ] {
            let mut f = e.family(name, Kind::Gauge, help);
            for (node_type, n) in m {
                f.sample(&[("node_type", node_type.as_str())], *n as f64);
            }
        }
        e.finish()
    }
}

/// The GCS's `/metrics` answer now.
pub fn render(gcs: &Gcs) -> String {
    let snapshot = Snapshot::of(&gcs.state());
    snapshot.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ray_common::metrics::parse;
    use ray_proto::rpc::{NodeInfo, TaskEvent};

    fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        parse(text)
            .unwrap()
            .into_iter()
            .find(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == *v))
            .map(|s| s.value)
    }

    #[test]
    fn tables_are_counted_by_state_with_rays_names() {
        let mut st = ClusterState::new("session_t".into());
        let task = |id: &str, state: &str, attempt| TaskEvent {
            task_id: id.into(),
            name: "f".into(),
            state: state.into(),
            attempt,
            ..Default::default()
        };
        st.tasks_mut().add(vec![
            task("a", "FINISHED", 0),
            task("b", "FINISHED", 0),
            task("c", "PENDING_NODE_ASSIGNMENT", 1),
        ]);
        let node = NodeInfo {
            node_id: ray_common::NodeId::random().to_string(),
            node_manager_address: "127.0.0.1".into(),
            node_manager_port: 1,
            node_type_name: "small".into(),
            ..Default::default()
        };
        st.register(node).unwrap();
        let text = Snapshot::of(&st).render();
        assert_eq!(
            value(
                &text,
                "ray_tasks",
                &[("Name", "f"), ("State", "FINISHED"), ("IsRetry", "0")]
            ),
            Some(2.0)
        );
        assert_eq!(
            value(
                &text,
                "ray_tasks",
                &[("State", "PENDING_NODE_ASSIGNMENT"), ("IsRetry", "1")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "ray_gcs_nodes", &[("State", "ALIVE")]),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "ray_gcs_nodes", &[("State", "DEAD")]),
            Some(0.0)
        );
        assert_eq!(
            value(&text, "ray_cluster_active_nodes", &[("node_type", "small")]),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "ray_running_jobs", &[("SessionName", "session_t")]),
            Some(0.0)
        );
    }
}
