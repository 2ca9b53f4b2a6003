//! The reporter: builds the `AutoscalingState` that `ray status` reads (pending
//! launches, pending instances, infeasible demand, recent failures), sends it when
//! it changed or at least every [`REPORT_EVERY`], and logs the status text when it
//! changed. It also tells the log, once, about demand nothing can hold and about
//! the cluster's new size.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use ray_proto::rpc::autoscaler::{
    AutoscalingState, ClusterResourceConstraint, ClusterResourceState, GangResourceRequest, GetClusterStatusReply,
    NodeStatus, PendingDemandReason, PendingInstance, PendingInstanceRequest, ResourceRequest, ResourceRequestByCount,
};
use tokio::time::Instant;

use ray_providers::{CloudInstance, TAG_NODE_STATUS};

use crate::backoff::LaunchBackoff;
use crate::clock::Clock;
use crate::cluster::{Cluster, ClusterError};
use crate::instance::{Instance, InstanceStatus};
use crate::scheduler::{Decision, Demand, Input};

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
    /// What the decision was made from.
    pub input: &'a Input,
    /// When (for back-off).
    pub now: Instant,
}

/// Why each pending shape waits: infeasible, capped, backing off (or out of
/// quota) after a failed launch, held back by `upscaling_speed`, a launch on
/// its way, or waiting for running work to free resources.
fn pending_reasons(round: &Round<'_>) -> Vec<PendingDemandReason> {
    let Round { state, decision: d, instances, backoff, input, now, .. } = *round;
    let mut out = Vec::new();
    let entry = |shape: &ray_common::ResourceSet, count: u64, reason: String| PendingDemandReason {
        resources_bundle: shape.to_f64_map(),
        count,
        reason,
    };
    for x in &d.infeasible {
        out.push(entry(&x.shape, x.count, "infeasible: no node type can hold it".into()));
    }
    for x in &d.capped {
        let holders: Vec<&str> = input
            .types
            .iter()
            .filter(|t| !t.is_head && x.shape.is_subset_of(&t.resources))
            .map(|t| t.name.as_str())
            .collect();
        // Backing off only when every type that could hold it is; otherwise
        // a type without trouble is simply at its cap.
        let all_failing = !holders.is_empty() && holders.iter().all(|t| backoff.is_backing_off(t, now));
        let failing = holders.first().filter(|_| all_failing);
        let reason = match failing {
            Some(t) => {
                let last = backoff
                    .recent_failures()
                    .filter(|f| f.ray_node_type_name == *t)
                    .max_by_key(|f| f.failed_ts_ms)
                    .map(|f| f.reason.clone())
                    .unwrap_or_default();
                let quota = ["quota", "Quota", "QUOTA", "LimitExceeded", "limit exceeded"].iter().any(|q| last.contains(q));
                if quota {
                    format!("out of quota for {t}: {last}")
                } else {
                    format!("backing off after a failed launch of {t}: {last}")
                }
            }
            None => format!("capped: max_workers is reached for {}", holders.join(", ")),
        };
        out.push(entry(&x.shape, x.count, reason));
    }
    let launching = !d.launch.is_empty() || instances.values().any(|i| i.status().is_pending());
    let explained: Vec<&ray_common::ResourceSet> = d.infeasible.iter().chain(&d.capped).map(|x| &x.shape).collect();
    for r in &state.pending_resource_requests {
        let shape = r.request.as_ref().map(|q| ray_common::ResourceSet::from_f64_map_lossy(&q.resources_bundle)).unwrap_or_default();
        if shape.is_empty() || explained.contains(&&shape) {
            continue;
        }
        let reason = if !d.held_back.is_empty() && d.launch.is_empty() {
            "held back by upscaling_speed: launches wait for nodes already on their way".to_string()
        } else if launching {
            "a launch is on its way".to_string()
        } else {
            "fits the cluster: waiting for running work to free resources".to_string()
        };
        out.push(entry(&shape, r.count, reason));
    }
    out
}

/// The autoscaling state for `ray status` (its version is left 0).
pub fn build(round: &Round<'_>) -> AutoscalingState {
    let Round { state, decision: d, instances, cloud, backoff, prices, input, .. } = *round;
    let costing = crate::scheduler::bound::costing(input, d);
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
        pending_demand_reasons: pending_reasons(round),
        plan_cost_per_hour: costing.plan_per_hour,
        plan_lower_bound_per_hour: costing.lower_bound_per_hour,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backoff::{LAUNCH_FAILED, LaunchFailure};
    use crate::scheduler::NodeTypeSpec;
    use ray_common::{FixedPoint, ResourceSet};
    use ray_providers::{ErrorClass, ProviderError};

    fn rs(pairs: &[(&str, f64)]) -> ResourceSet {
        pairs.iter().map(|(k, v)| (k.to_string(), FixedPoint::from_f64(*v))).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn pending_shapes_say_why_they_wait() {
        let ty = |name: &str, res| NodeTypeSpec { name: name.into(), resources: res, min_workers: 0, max_workers: 2, is_head: false, price: Some(1.0), priority: 0 };
        let input = Input { types: vec![ty("cpu", rs(&[("CPU", 4.0)])), ty("gpu", rs(&[("CPU", 4.0), ("GPU", 1.0)]))], ..Default::default() };
        let decision = Decision {
            infeasible: vec![Demand { shape: rs(&[("CPU", 64.0)]), count: 1 }],
            capped: vec![Demand { shape: rs(&[("GPU", 1.0)]), count: 2 }, Demand { shape: rs(&[("CPU", 4.0)]), count: 5 }],
            ..Default::default()
        };
        let mut backoff = LaunchBackoff::new();
        let now = Instant::now();
        let e = ProviderError::new(ErrorClass::Quota, "VcpuLimitExceeded: You have requested more vCPU capacity than your current vCPU limit");
        backoff.failed(&LaunchFailure { kind: LAUNCH_FAILED, instance: None, node_type: "gpu", count: 1, error: &e, started_ms: 1, failed_ms: 2 }, now);
        let req = |pairs: &[(&str, f64)], count| ResourceRequestByCount { request: Some(ResourceRequest { resources_bundle: rs(pairs).to_f64_map() }), count };
        let state = ClusterResourceState {
            pending_resource_requests: vec![req(&[("CPU", 64.0)], 1), req(&[("GPU", 1.0)], 2), req(&[("CPU", 1.0)], 3)],
            ..Default::default()
        };
        let prices = BTreeMap::new();
        let instances = BTreeMap::new();
        let round = Round { state: &state, decision: &decision, instances: &instances, cloud: None, backoff: &backoff, prices: &prices, input: &input, now };
        let why: Vec<(String, u64, String)> = pending_reasons(&round)
            .into_iter()
            .map(|r| (ResourceSet::from_f64_map_lossy(&r.resources_bundle).to_string(), r.count, r.reason))
            .collect();
        let find = |shape: &ResourceSet| why.iter().find(|w| w.0 == shape.to_string()).unwrap_or_else(|| panic!("{shape} in {why:?}")).clone();
        assert!(find(&rs(&[("CPU", 64.0)])).2.starts_with("infeasible"), "{why:?}");
        let gpu = find(&rs(&[("GPU", 1.0)])).2;
        assert!(gpu.starts_with("out of quota for gpu: ") && gpu.contains("VcpuLimitExceeded"), "{why:?}");
        assert_eq!(find(&rs(&[("CPU", 4.0)])).2, "capped: max_workers is reached for cpu, gpu");
        assert_eq!(find(&rs(&[("CPU", 1.0)])), (rs(&[("CPU", 1.0)]).to_string(), 3, "fits the cluster: waiting for running work to free resources".into()));
    }
}
