//! The reporter: builds the `AutoscalingState` that `ray status` reads (pending
//! launches, pending instances, infeasible demand, recent failures), sends it when
//! it changed or at least every [`REPORT_EVERY`], and logs the status text when it
//! changed. It also tells the log, once, about demand nothing can hold and about
//! the cluster's new size.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use ray_proto::rpc::autoscaler::{
    AutoscalingState, ClusterResourceConstraint, ClusterResourceState, GangResourceRequest, GetClusterStatusReply,
    NodeStatus, PendingInstance, PendingInstanceRequest, ResourceRequest, ResourceRequestByCount,
};
use tokio::time::Instant;

use ray_providers::{CloudInstance, TAG_NODE_STATUS};

use crate::backoff::LaunchBackoff;
use crate::clock::Clock;
use crate::cluster::{Cluster, ClusterError};
use crate::instance::{Instance, InstanceStatus};
use crate::scheduler::{Decision, Demand};

/// An unchanged state is sent again after this long, so readers see it is fresh.
pub const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Remembers what was last reported and logged.
#[derive(Debug, Default)]
pub struct Reporter {
    last_report: Option<AutoscalingState>,
    last_report_at: Option<Instant>,
    last_resized: String,
    last_infeasible: Vec<String>,
}

impl Reporter {
    /// Nothing reported yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The last state the cluster took.
    pub fn last_report(&self) -> Option<&AutoscalingState> {
        self.last_report.as_ref()
    }

    /// Logs demand that no node type can hold (once per shape) and the cluster's
    /// new size (once per change).
    pub fn narrate(&mut self, state: &ClusterResourceState, d: &Decision) {
        let infeasible: Vec<String> = d.infeasible.iter().map(|x| x.shape.to_string()).collect();
        for s in &infeasible {
            if !self.last_infeasible.contains(s) {
                tracing::warn!("No available node types can fulfill resource request {s}. Add suitable node types to this cluster to resolve this issue.");
            }
        }
        self.last_infeasible = infeasible;
        let resized = resized_summary(state);
        if resized != self.last_resized && !resized.is_empty() {
            tracing::info!("Resized to {resized}.");
            self.last_resized = resized;
        }
    }

    /// Sends the autoscaling state if it changed or is due; logs the status text
    /// when it changed.
    pub async fn report(&mut self, cluster: &dyn Cluster, clock: &Clock, round: &Round<'_>) -> Result<(), ClusterError> {
        let state = round.state;
        let mut report = build(round);
        let unchanged = self.last_report.as_ref().is_some_and(|last| {
            let mut l = last.clone();
            l.autoscaler_state_version = 0;
            l.last_seen_cluster_resource_state_version = report.last_seen_cluster_resource_state_version;
            l == report
        });
        let now = clock.instant();
        let stale = self.last_report_at.is_none_or(|t| now.saturating_duration_since(t) > REPORT_EVERY);
        if unchanged && !stale {
            return Ok(());
        }
        report.autoscaler_state_version = self.last_report.as_ref().map(|r| r.autoscaler_state_version).unwrap_or(0) + 1;
        cluster.report(&report).await?;
        if !unchanged {
            let reply = GetClusterStatusReply { autoscaling_state: Some(report.clone()), cluster_resource_state: Some(state.clone()) };
            let status = ray_status::format_status(&reply, clock.local_now(), false);
            tracing::info!("\n{status}");
        }
        self.last_report = Some(report);
        self.last_report_at = Some(now);
        Ok(())
    }
}

/// What one round saw and decided, for its report.
pub struct Round<'a> {
    /// The cluster state read this round.
    pub state: &'a ClusterResourceState,
    /// The scheduler's decision.
    pub decision: &'a Decision,
    /// The instance table.
    pub instances: &'a BTreeMap<String, Instance>,
    /// The provider's listing (`None` when it could not be listed).
    pub cloud: Option<&'a [CloudInstance]>,
    /// Back-off and recent failures.
    pub backoff: &'a LaunchBackoff,
    /// Hourly price of one node, by node type (types with a price only).
    pub prices: &'a BTreeMap<String, f64>,
}

/// The autoscaling state for `ray status` (its version is left 0).
pub fn build(round: &Round<'_>) -> AutoscalingState {
    let Round { state, decision: d, instances, cloud, backoff, prices } = *round;
    let listed = |cloud_id: &Option<String>| cloud.unwrap_or_default().iter().find(|c| Some(&c.cloud_id) == cloud_id.as_ref());
    let mut pending_requests: BTreeMap<String, u64> = BTreeMap::new();
    let mut pending_instances = Vec::new();
    let mut node_types = HashMap::new();
    for i in instances.values() {
        match i.status() {
            InstanceStatus::Queued | InstanceStatus::Requested => *pending_requests.entry(i.node_type.clone()).or_default() += 1,
            InstanceStatus::Allocated | InstanceStatus::Installing => {
                // The launcher's step (waiting-for-ssh, setting-up, ...) says more
                // than INSTALLING, when the provider carries it.
                let c = listed(&i.cloud_id);
                let step = c.and_then(|c| c.tags.get(TAG_NODE_STATUS)).filter(|_| i.status() == InstanceStatus::Installing);
                pending_instances.push(PendingInstance {
                    instance_id: i.cloud_id.clone().unwrap_or_else(|| i.id.clone()),
                    instance_type_name: i.node_type.clone(),
                    ray_node_type_name: i.node_type.clone(),
                    ip_address: c.and_then(|c| c.internal_ip.clone()).unwrap_or_default(),
                    details: step.cloned().unwrap_or_else(|| i.status().to_string()),
                })
            }
            _ => {}
        }
        if let Some(c) = &i.cloud_id {
            node_types.insert(c.clone(), i.node_type.clone());
        }
    }
    let to_req = |x: &Demand| ResourceRequestByCount {
        request: Some(ResourceRequest { resources_bundle: x.shape.to_f64_map() }),
        count: x.count,
    };
    AutoscalingState {
        last_seen_cluster_resource_state_version: state.cluster_resource_state_version,
        autoscaler_state_version: 0,
        pending_instance_requests: pending_requests
            .into_iter()
            .map(|(t, c)| PendingInstanceRequest { instance_type_name: t.clone(), ray_node_type_name: t, count: c, request_ts_ms: 0 })
            .collect(),
        infeasible_resource_requests: d.infeasible.iter().map(to_req).collect(),
        infeasible_gang_resource_requests: d
            .infeasible_gangs
            .iter()
            .map(|g| GangResourceRequest {
                requests: g.bundles.iter().map(|b| ResourceRequest { resources_bundle: b.to_f64_map() }).collect(),
                strategy: format!("{:?}", g.strategy),
                details: String::new(),
            })
            .collect(),
        infeasible_cluster_resource_constraints: if d.infeasible_constraint.is_empty() {
            Vec::new()
        } else {
            vec![ClusterResourceConstraint { resource_requests: d.infeasible_constraint.iter().map(to_req).collect() }]
        },
        pending_instances,
        failed_instance_requests: backoff.recent_failures().cloned().collect(),
        instance_node_types: node_types,
        node_type_hourly_price: prices.iter().map(|(k, v)| (k.clone(), *v)).collect(),
    }
}

/// "8 CPUs, 1 GPUs" over live nodes, as Ray's "Resized to" lines say it.
fn resized_summary(state: &ClusterResourceState) -> String {
    let mut cpu = 0.0;
    let mut gpu = 0.0;
    let mut any_gpu = false;
    for n in state.node_states.iter().filter(|n| n.status != NodeStatus::Dead as i32) {
        cpu += n.total_resources.get("CPU").copied().unwrap_or(0.0);
        if let Some(g) = n.total_resources.get("GPU") {
            gpu += g;
            any_gpu = true;
        }
    }
    if state.node_states.is_empty() {
        return String::new();
    }
    if any_gpu { format!("{} CPUs, {} GPUs", cpu as u64, gpu as u64) } else { format!("{} CPUs", cpu as u64) }
}
