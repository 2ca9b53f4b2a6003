//! The autoscaler's Prometheus metrics, with the names of Ray's autoscaler:
//! nodes by type and phase (`autoscaler_pending_nodes`, `autoscaler_active_nodes`,
//! `autoscaler_recently_failed_nodes`), the resources of those nodes
//! (`autoscaler_pending_resources`, `autoscaler_cluster_resources`), what the
//! provider and the node set-up did (`autoscaler_started_nodes_total`,
//! `autoscaler_stopped_nodes_total`, `autoscaler_failed_create_nodes_total`,
//! `autoscaler_node_launch_exceptions_total`, `autoscaler_successful_updates_total`,
//! `autoscaler_failed_updates_total`, `autoscaler_update_loop_exceptions_total`)
//! and how long things took (`autoscaler_update_time_seconds`, one round;
//! `autoscaler_worker_create_node_time_seconds`, one launch call).
//!
//! The loop records into an [`AutoscalerMetrics`] it shares with whoever
//! serves `/metrics`; [`AutoscalerMetrics::render`] writes the text.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use ray_common::metrics::{Exposition, Histogram, Kind};

use ray_proto::rpc::autoscaler::FailedInstanceRequest;

use crate::config::ClusterConfig;
use crate::instance::{Instance, InstanceStatus};

/// Ray's buckets for one autoscaler round, in seconds.
pub const UPDATE_TIME_BUCKETS: [f64; 6] = [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0];

/// Ray's buckets for launching a worker, in seconds.
pub const CREATE_TIME_BUCKETS: [f64; 19] = [
    5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 240.0, 300.0, 360.0, 480.0, 600.0,
    720.0, 900.0, 1200.0, 1500.0, 1800.0,
];

/// Instances of one node type by phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Phases {
    /// Queued, requested, allocated or having Ray set up (Ray's "pending").
    pub pending: u64,
    /// Ray runs on it (RUNNING or DRAINING).
    pub active: u64,
    /// Nodes whose launch or set-up failed recently (the failures `ray status` lists).
    pub failed: u64,
}

/// Counters since the autoscaler started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Nodes the provider created.
    pub started_nodes: u64,
    /// Nodes the provider terminated.
    pub stopped_nodes: u64,
    /// Nodes whose launch failed.
    pub failed_create_nodes: u64,
    /// Launch calls that failed.
    pub node_launch_exceptions: u64,
    /// Set-ups of Ray on a node that ended well.
    pub successful_updates: u64,
    /// Set-ups that failed.
    pub failed_updates: u64,
    /// Rounds that failed.
    pub update_loop_exceptions: u64,
}

#[derive(Debug)]
struct Inner {
    phases: BTreeMap<String, Phases>,
    pending_resources: BTreeMap<String, f64>,
    cluster_resources: BTreeMap<String, f64>,
    counts: Counts,
    update_time: Histogram,
    create_time: Histogram,
}

/// The autoscaler's figures, shared between its loop and `/metrics`.
#[derive(Debug)]
pub struct AutoscalerMetrics {
    session: String,
    inner: Mutex<Inner>,
}

impl AutoscalerMetrics {
    /// Nothing recorded yet, for the cluster's session `session`.
    pub fn new(session: impl Into<String>) -> Self {
        Self {
            session: session.into(),
            inner: Mutex::new(Inner {
                phases: BTreeMap::new(),
                pending_resources: BTreeMap::new(),
                cluster_resources: BTreeMap::new(),
                counts: Counts::default(),
                update_time: Histogram::new(&UPDATE_TIME_BUCKETS),
                create_time: Histogram::new(&CREATE_TIME_BUCKETS),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A round ended after `took`: the instance table and the recent failures
    /// as they stand now.
    pub fn round<'a>(
        &self,
        took: Duration,
        instances: &BTreeMap<String, Instance>,
        recent_failures: impl Iterator<Item = &'a FailedInstanceRequest>,
        config: &ClusterConfig,
    ) {
        // Every worker type is reported, at 0 when it has no nodes (the head is not the autoscaler's).
        let mut phases: BTreeMap<String, Phases> = config
            .node_types
            .iter()
            .filter(|t| t.name != config.head_node_type)
            .map(|t| (t.name.clone(), Phases::default()))
            .collect();
        let mut pending_resources: BTreeMap<String, f64> = BTreeMap::new();
        let mut cluster_resources: BTreeMap<String, f64> = BTreeMap::new();
        for i in instances.values() {
            let p = phases.entry(i.node_type.clone()).or_default();
            let resources = match i.status() {
                InstanceStatus::Queued
                | InstanceStatus::Requested
                | InstanceStatus::Allocated
                | InstanceStatus::Installing => {
                    p.pending += 1;
                    Some(&mut pending_resources)
                }
                InstanceStatus::Running | InstanceStatus::Draining => {
                    p.active += 1;
                    Some(&mut cluster_resources)
                }
                InstanceStatus::AllocationFailed
                | InstanceStatus::InstallFailed
                | InstanceStatus::Terminating
                | InstanceStatus::Terminated => None,
            };
            if let (Some(sum), Some(t)) = (
                resources,
                config.node_types.iter().find(|t| t.name == i.node_type),
            ) {
                for (name, v) in t.resources.iter() {
                    *sum.entry(name.to_string()).or_default() += v.to_f64();
                }
            }
        }
        for f in recent_failures {
            phases
                .entry(f.ray_node_type_name.clone())
                .or_default()
                .failed += f.count;
        }
        let mut guard = self.lock();
        let m = &mut *guard;
        m.update_time.observe(took.as_secs_f64());
        // Resources seen once stay reported (at 0 when none are left), as gauges should.
        for v in m
            .pending_resources
            .values_mut()
            .chain(m.cluster_resources.values_mut())
        {
            *v = 0.0;
        }
        m.pending_resources.extend(pending_resources);
        m.cluster_resources.extend(cluster_resources);
        // Types no longer seen stay reported, at 0.
        for p in m.phases.values_mut() {
            *p = Phases::default();
        }
        m.phases.extend(phases);
    }

    /// A round failed.
    pub fn round_failed(&self) {
        self.lock().counts.update_loop_exceptions += 1;
    }

    /// A launch call returned `created` nodes after `took`.
    pub fn launched(&self, created: usize, took: Duration) {
        let mut m = self.lock();
        m.counts.started_nodes += created as u64;
        let secs = took.as_secs_f64();
        for _ in 0..created {
            m.create_time.observe(secs);
        }
    }

    /// A launch call for `count` nodes failed.
    pub fn launch_failed(&self, count: usize) {
        let mut m = self.lock();
        m.counts.failed_create_nodes += count as u64;
        m.counts.node_launch_exceptions += 1;
    }

    /// Setting Ray up on a node ended.
    pub fn set_up(&self, ok: bool) {
        let mut m = self.lock();
        if ok {
            m.counts.successful_updates += 1;
        } else {
            m.counts.failed_updates += 1;
        }
    }

    /// The provider terminated a node.
    pub fn stopped(&self) {
        self.lock().counts.stopped_nodes += 1;
    }

    /// The counters so far.
    pub fn counts(&self) -> Counts {
        self.lock().counts
    }

    /// Nodes by type and phase, as of the last round.
    pub fn phases(&self) -> BTreeMap<String, Phases> {
        self.lock().phases.clone()
    }

    /// The `/metrics` text.
    pub fn render(&self) -> String {
        let m = self.lock();
        let mut e = Exposition::new(&[("SessionName", &self.session)]);
        let by_type = |f: fn(&Phases) -> u64| -> Vec<([(&str, &str); 1], f64)> {
            m.phases
                .iter()
                .map(|(t, p)| ([("NodeType", t.as_str())], f(p) as f64))
                .collect()
        };
        e.gauge(
            "autoscaler_pending_nodes",
            "Nodes being launched or having Ray set up, by node type.",
            by_type(|p| p.pending),
        );
        e.gauge(
            "autoscaler_active_nodes",
            "Nodes running Ray, by node type.",
            by_type(|p| p.active),
        );
        e.gauge(
            "autoscaler_recently_failed_nodes",
            "Nodes whose launch or set-up failed recently (the failures `ray status` lists), by node type.",
            by_type(|p| p.failed),
        );
        for (name, help, values) in [
            (
                "autoscaler_pending_resources",
                "Resources of the nodes being launched.",
                &m.pending_resources,
            ),
            (
                "autoscaler_cluster_resources",
                "Resources of the nodes running Ray (workers the autoscaler launched).",
                &m.cluster_resources,
            ),
        ] {
            let mut f = e.family(name, Kind::Gauge, help);
            for (resource, v) in values {
                f.sample(&[("resource", resource.as_str())], *v);
            }
        }
        let c = m.counts;
        for (name, help, v) in [
            (
                "autoscaler_started_nodes_total",
                "Nodes the provider created.",
                c.started_nodes,
            ),
            (
                "autoscaler_stopped_nodes_total",
                "Nodes the provider terminated.",
                c.stopped_nodes,
            ),
            (
                "autoscaler_failed_create_nodes_total",
                "Nodes whose launch failed.",
                c.failed_create_nodes,
            ),
            (
                "autoscaler_node_launch_exceptions_total",
                "Launch calls to the provider that failed.",
                c.node_launch_exceptions,
            ),
            (
                "autoscaler_successful_updates_total",
                "Set-ups of Ray on a launched node that succeeded.",
                c.successful_updates,
            ),
            (
                "autoscaler_failed_updates_total",
                "Set-ups of Ray on a launched node that failed.",
                c.failed_updates,
            ),
            (
                "autoscaler_update_loop_exceptions_total",
                "Autoscaler rounds that failed.",
                c.update_loop_exceptions,
            ),
        ] {
            e.counter(name, help, [([], v as f64)]);
        }
        e.histogram(
            "autoscaler_update_time_seconds",
            "Time of one autoscaler round.",
            &[],
            &m.update_time,
        );
        e.histogram(
            "autoscaler_worker_create_node_time_seconds",
            "Time of the provider's launch call, observed once per node it created.",
            &[],
            &m.create_time,
        );
        e.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ray_common::metrics::parse;

    fn value(text: &str, name: &str, label: (&str, &str)) -> Option<f64> {
        parse(text)
            .unwrap()
            .into_iter()
            .find(|s| s.name == name && s.label(label.0) == label.1)
            .map(|s| s.value)
    }

    #[test]
    fn nodes_are_counted_by_type_and_phase_with_their_resources() {
        let yaml = "cluster_name: t\nmax_workers: 5\nprovider:\n  type: fake_multinode\navailable_node_types:\n  \
                    head:\n    resources: {CPU: 0}\n    node_config: {}\n  small:\n    resources: {CPU: 2}\n    \
                    node_config: {}\n    max_workers: 5\nhead_node_type: head\n";
        let config = ClusterConfig::parse("t.yaml", yaml).expect("valid");
        let mut instances = BTreeMap::new();
        for (id, to) in [
            ("a", vec![]),
            (
                "b",
                vec![
                    InstanceStatus::Requested,
                    InstanceStatus::Allocated,
                    InstanceStatus::Running,
                ],
            ),
        ] {
            let mut i = Instance::new(id.into(), "small".into(), 0, "test");
            for s in to {
                i.transition(s, 0, "test").unwrap();
            }
            instances.insert(id.to_string(), i);
        }
        let m = AutoscalerMetrics::new("s");
        let failed = FailedInstanceRequest {
            ray_node_type_name: "small".into(),
            count: 3,
            ..Default::default()
        };
        m.round(
            Duration::from_millis(20),
            &instances,
            std::iter::once(&failed),
            &config,
        );
        let text = m.render();
        assert_eq!(
            value(
                &text,
                "autoscaler_recently_failed_nodes",
                ("NodeType", "small")
            ),
            Some(3.0)
        );
        assert_eq!(
            value(&text, "autoscaler_pending_nodes", ("NodeType", "small")),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "autoscaler_active_nodes", ("NodeType", "small")),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "autoscaler_active_nodes", ("NodeType", "head")),
            None,
            "the head is not the autoscaler's"
        );
        assert_eq!(
            value(&text, "autoscaler_pending_resources", ("resource", "CPU")),
            Some(2.0)
        );
        assert_eq!(
            value(&text, "autoscaler_cluster_resources", ("resource", "CPU")),
            Some(2.0)
        );
        assert_eq!(
            value(
                &text,
                "autoscaler_update_time_seconds_bucket",
                ("le", "0.1")
            ),
            Some(1.0)
        );
        m.round(
            Duration::from_millis(20),
            &BTreeMap::new(),
            std::iter::empty(),
            &config,
        );
        assert_eq!(
            value(
                &m.render(),
                "autoscaler_cluster_resources",
                ("resource", "CPU")
            ),
            Some(0.0)
        );
    }

    #[test]
    fn counters_and_histograms_are_written_with_rays_names() {
        let m = AutoscalerMetrics::new("session_a");
        m.launched(2, Duration::from_secs(7));
        m.launch_failed(3);
        m.stopped();
        m.set_up(false);
        m.round_failed();
        let text = m.render();
        let s = ("SessionName", "session_a");
        assert_eq!(value(&text, "autoscaler_started_nodes_total", s), Some(2.0));
        assert_eq!(
            value(&text, "autoscaler_failed_create_nodes_total", s),
            Some(3.0)
        );
        assert_eq!(
            value(&text, "autoscaler_node_launch_exceptions_total", s),
            Some(1.0)
        );
        assert_eq!(value(&text, "autoscaler_stopped_nodes_total", s), Some(1.0));
        assert_eq!(
            value(&text, "autoscaler_failed_updates_total", s),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "autoscaler_update_loop_exceptions_total", s),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                "autoscaler_worker_create_node_time_seconds_bucket",
                ("le", "10")
            ),
            Some(2.0)
        );
        assert_eq!(
            value(
                &text,
                "autoscaler_worker_create_node_time_seconds_bucket",
                ("le", "5")
            ),
            Some(0.0)
        );
        assert_eq!(
            value(&text, "autoscaler_update_time_seconds_count", s),
            Some(0.0)
        );
    }
}
