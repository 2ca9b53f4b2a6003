//! The autoscaler's loop: observe (GCS state + provider listing), reconcile the
//! instance table with what was observed, decide (the pure scheduler), act
//! (launch, drain, terminate, in background tasks), and report to the GCS.
//! It wakes on every GCS change and on a short tick.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use ray_common::ResourceSet;
use ray_common::gcs_client::GcsClient;
use ray_common::time::now_ms;
use ray_proto::rpc::autoscaler::{
    AutoscalingState, ClusterResourceConstraint, ClusterResourceState, DrainNodeReason, DrainNodeRequest,
    FailedInstanceRequest, GangResourceRequest, GetClusterResourceStateRequest, GetClusterStatusReply,
    NodeStatus, PendingInstance, PendingInstanceRequest, ReportAutoscalingStateRequest, ResourceRequest,
    ResourceRequestByCount,
};
use ray_proto::rpc::{Channel as EventChannel, SubscribeRequest};
use ray_providers::{CloudInstance, CreateRequest, NodeProvider, ProviderError, TAG_CLUSTER_NAME, TAG_INSTANCE_ID, TAG_NODE_KIND, TAG_NODE_NAME, TAG_USER_NODE_TYPE};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::config::ClusterConfig;
use crate::instance::store::InstanceStorage;
use crate::instance::{Instance, InstanceStatus};
use crate::scheduler::{self, Decision, Demand, Gang, NodeTypeSpec, NodeView, PlacementStrategy, TerminateReason};

/// A node allocated but not registered with the GCS after this long is given up.
const REGISTER_TIMEOUT_MS: u64 = 120_000;
/// Recent launch failures shown by `ray status`.
const MAX_FAILURES: usize = 20;
/// First back-off after a failed launch; doubles per failure.
const BACKOFF_BASE: Duration = Duration::from_secs(5);
/// Longest back-off.
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Back-off state of a node type whose launches failed.
#[derive(Debug, Clone)]
struct Backoff {
    until: tokio::time::Instant,
    failures: u32,
}

/// What a background task reports.
enum TaskResult {
    Launched { request_id: String, node_type: String, instance_ids: Vec<String>, result: Result<Vec<CloudInstance>, ProviderError>, started_ms: u64 },
    Drained { instance_id: String, accepted: bool, message: String },
    Terminated { instance_id: String, result: Result<(), ProviderError> },
}

/// The autoscaler.
pub struct Autoscaler {
    config: ClusterConfig,
    gcs: GcsClient,
    provider: Arc<dyn NodeProvider>,
    storage: Arc<dyn InstanceStorage>,
    tick: Duration,
    instances: BTreeMap<String, Instance>,
    inflight_launch: HashSet<String>,
    inflight_terminate: HashSet<String>,
    backoff: HashMap<String, Backoff>,
    failures: VecDeque<FailedInstanceRequest>,
    state_version: u64,
    last_report: Option<AutoscalingState>,
    last_report_at: Option<tokio::time::Instant>,
    last_resized: String,
    last_infeasible: Vec<String>,
    results_tx: mpsc::UnboundedSender<TaskResult>,
    results_rx: mpsc::UnboundedReceiver<TaskResult>,
    limiter: Arc<DefaultDirectRateLimiter>,
}

fn new_id() -> String {
    ray_common::ids::random_hex(8)
}

impl Autoscaler {
    /// An autoscaler over a config, a GCS, a provider and a record store.
    pub fn new(config: ClusterConfig, gcs: GcsClient, provider: Arc<dyn NodeProvider>, storage: Arc<dyn InstanceStorage>) -> Self {
        let (results_tx, results_rx) = mpsc::unbounded_channel();
        let quota = Quota::per_second(NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN));
        Self {
            config,
            gcs,
            provider,
            storage,
            tick: Duration::from_millis(1000),
            instances: BTreeMap::new(),
            inflight_launch: HashSet::new(),
            inflight_terminate: HashSet::new(),
            backoff: HashMap::new(),
            failures: VecDeque::new(),
            state_version: 0,
            last_report: None,
            last_report_at: None,
            last_resized: String::new(),
            last_infeasible: Vec::new(),
            results_tx,
            results_rx,
            limiter: Arc::new(RateLimiter::direct(quota)),
        }
    }

    /// Sets the longest sleep between rounds when nothing changes.
    pub fn with_tick(mut self, tick: Duration) -> Self {
        self.tick = tick;
        self
    }

    /// The instance table (for tests and tools).
    pub fn instances(&self) -> &BTreeMap<String, Instance> {
        &self.instances
    }

    /// Runs until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            match self.storage.load_all().await {
                Ok(list) => {
                    for i in list {
                        self.instances.insert(i.id.clone(), i);
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the instance table yet; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
            }
        }
        if !self.instances.is_empty() {
            let summary: Vec<String> = self.instances.values().map(|i| format!("{}={}", i.id, i.status())).collect();
            tracing::info!(instances = %summary.join(" "), "resumed with the instance table from the GCS");
        }
        let wake = Arc::new(Notify::new());
        tokio::spawn(watch_gcs(self.gcs.clone(), wake.clone(), shutdown.clone()));
        loop {
            if let Err(e) = self.round().await {
                tracing::warn!(error = %e, "autoscaler round failed; retrying");
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(self.tick) => {}
                Some(r) = self.results_rx.recv() => self.handle(r).await,
                _ = shutdown.cancelled() => break,
            }
            while let Ok(r) = self.results_rx.try_recv() {
                self.handle(r).await;
            }
        }
        tracing::info!("autoscaler stopped");
    }

    async fn persist(&mut self, id: &str) {
        let Some(i) = self.instances.get(id) else { return };
        let r = if i.status().is_final() { self.storage.delete(id).await } else { self.storage.put(i).await };
        if let Err(e) = r {
            tracing::warn!(instance = %id, error = %e, "cannot persist the instance record");
        }
        if self.instances.get(id).is_some_and(|i| i.status().is_final()) {
            self.instances.remove(id);
        }
    }

    async fn transition(&mut self, id: &str, to: InstanceStatus, details: impl Into<String>) -> bool {
        let details = details.into();
        let Some(i) = self.instances.get_mut(id) else { return false };
        let from = i.status();
        match i.transition(to, now_ms(), details.clone()) {
            Ok(()) => {
                tracing::info!(instance = %id, node_type = %i.node_type, %from, %to, "{details}");
                self.persist(id).await;
                true
            }
            Err(e) => {
                tracing::warn!("{e}");
                false
            }
        }
    }

    /// One observe-decide-act-report round.
    pub async fn round(&mut self) -> Result<(), String> {
        let state = self
            .gcs
            .autoscaler
            .clone()
            .get_cluster_resource_state(GetClusterResourceStateRequest { last_seen_cluster_resource_state_version: self.state_version })
            .await
            .map_err(|s| format!("cannot read the cluster state from the GCS: {}", s.message()))?
            .into_inner()
            .cluster_resource_state
            .unwrap_or_default();
        self.state_version = state.cluster_resource_state_version;
        let cloud = match self.provider.list().await {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, provider = self.provider.name(), "cannot list instances; skipping cleanup this round");
                None
            }
        };
        self.sync(&state, cloud.as_deref()).await;
        let input = self.input(&state);
        let decision = scheduler::decide(&input);
        self.act(&decision, &state).await;
        self.report(&state, &decision).await;
        Ok(())
    }

    /// Moves instances forward (or out) according to what the GCS and the
    /// provider show; adopts instances this table does not know.
    async fn sync(&mut self, state: &ClusterResourceState, cloud: Option<&[CloudInstance]>) {
        let alive_by_cloud: HashMap<&str, &ray_proto::rpc::autoscaler::NodeState> = state
            .node_states
            .iter()
            .filter(|n| n.status != NodeStatus::Dead as i32 && !n.instance_id.is_empty())
            .map(|n| (n.instance_id.as_str(), n))
            .collect();
        let dead_by_cloud: HashMap<&str, &ray_proto::rpc::autoscaler::NodeState> = state
            .node_states
            .iter()
            .filter(|n| n.status == NodeStatus::Dead as i32 && !n.instance_id.is_empty())
            .map(|n| (n.instance_id.as_str(), n))
            .collect();
        let cloud_by_instance: HashMap<String, &CloudInstance> = cloud
            .unwrap_or_default()
            .iter()
            .map(|c| (c.tags.get(TAG_INSTANCE_ID).cloned().unwrap_or_else(|| c.cloud_id.clone()), c))
            .collect();
        let now = now_ms();
        let ids: Vec<String> = self.instances.keys().cloned().collect();
        let mut relaunch: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
        for id in ids {
            let Some(i) = self.instances.get(&id).cloned() else { continue };
            let in_cloud = cloud_by_instance.get(&id).copied();
            let cloud_known = cloud.is_some();
            match i.status() {
                InstanceStatus::Queued => {
                    // Decided before a restart but never requested: request it now.
                    let rid = i.launch_request_id.clone().unwrap_or_else(new_id);
                    if let Some(x) = self.instances.get_mut(&id) {
                        x.launch_request_id = Some(rid.clone());
                    }
                    if self.transition(&id, InstanceStatus::Requested, format!("requested with launch request {rid}")).await {
                        relaunch.entry(rid).or_insert_with(|| (i.node_type.clone(), Vec::new())).1.push(id.clone());
                    }
                }
                InstanceStatus::Requested => {
                    if let Some(c) = in_cloud {
                        if let Some(x) = self.instances.get_mut(&id) {
                            x.cloud_id = Some(c.cloud_id.clone());
                        }
                        self.transition(&id, InstanceStatus::Allocated, format!("the provider lists it as {}", c.cloud_id)).await;
                    } else if let Some(rid) = &i.launch_request_id
                        && cloud_known
                        && !self.inflight_launch.contains(rid)
                    {
                        // Asked for, but nobody is asking now (a restart): ask again with the
                        // same request id; the provider creates only what is missing.
                        relaunch.entry(rid.clone()).or_insert_with(|| (i.node_type.clone(), Vec::new())).1.push(id.clone());
                    }
                }
                InstanceStatus::Allocated | InstanceStatus::Installing => {
                    let cid = i.cloud_id.clone().unwrap_or_default();
                    if let Some(n) = alive_by_cloud.get(cid.as_str()) {
                        if let Some(x) = self.instances.get_mut(&id) {
                            x.node_id = Some(n.node_id.clone());
                        }
                        self.transition(&id, InstanceStatus::Running, format!("Ray node {} registered", short(&n.node_id))).await;
                    } else if cloud_known && in_cloud.is_none() {
                        self.transition(&id, InstanceStatus::Terminated, "the instance disappeared before Ray started on it").await;
                    } else if now.saturating_sub(i.status_since_ms()) > REGISTER_TIMEOUT_MS {
                        let why = format!("its raylet did not register within {} s", REGISTER_TIMEOUT_MS / 1000);
                        self.start_terminate(&id, &why).await;
                    }
                }
                InstanceStatus::Running | InstanceStatus::Draining => {
                    let cid = i.cloud_id.clone().unwrap_or_default();
                    if cloud_known && in_cloud.is_none() {
                        self.transition(&id, InstanceStatus::Terminated, "the instance is gone (its process or VM no longer exists)").await;
                    } else if let Some(dead) = dead_by_cloud.get(cid.as_str())
                        && !alive_by_cloud.contains_key(cid.as_str())
                    {
                        let why = dead.death_info.as_ref().map(|d| d.reason_message.clone()).unwrap_or_default();
                        self.start_terminate(&id, &format!("its Ray node died: {why}")).await;
                    }
                }
                InstanceStatus::Terminating => {
                    if cloud_known && in_cloud.is_none() {
                        self.transition(&id, InstanceStatus::Terminated, "terminated").await;
                    } else if !self.inflight_terminate.contains(&id) {
                        self.spawn_terminate(&id);
                    }
                }
                InstanceStatus::InstallFailed => {
                    self.start_terminate(&id, "Ray could not be installed").await;
                }
                InstanceStatus::Terminated | InstanceStatus::AllocationFailed => {
                    self.persist(&id).await;
                }
            }
        }
        for (rid, (node_type, ids)) in relaunch {
            tracing::info!(request = %rid, node_type = %node_type, count = ids.len(), "re-issuing a launch request after a restart (idempotent)");
            self.spawn_launch(rid, node_type, ids);
        }
        // Instances the provider has that the table does not know (a crash between a
        // provider call and a record write): adopt them, or remove strays.
        if let Some(cloud) = cloud {
            let known_cloud: HashSet<String> = self.instances.values().filter_map(|i| i.cloud_id.clone()).collect();
            for c in cloud {
                let iid = c.tags.get(TAG_INSTANCE_ID).cloned().unwrap_or_else(|| c.cloud_id.clone());
                if self.instances.contains_key(&iid) || known_cloud.contains(&c.cloud_id) {
                    continue;
                }
                if self.inflight_launch.iter().any(|r| c.launch_request().is_some_and(|x| x == r)) {
                    continue;
                }
                if self.config.node_type(&c.node_type).is_some() && c.state != ray_providers::CloudState::Terminating {
                    let mut i = Instance::new(iid.clone(), c.node_type.clone(), now, "adopted from the provider's listing");
                    i.cloud_id = Some(c.cloud_id.clone());
                    i.launch_request_id = c.launch_request().map(str::to_string);
                    let _ = i.transition(InstanceStatus::Requested, now, "adopted");
                    let _ = i.transition(InstanceStatus::Allocated, now, "adopted");
                    tracing::info!(instance = %iid, cloud_id = %c.cloud_id, node_type = %c.node_type, "adopted an instance the table did not know");
                    self.instances.insert(iid.clone(), i);
                    self.persist(&iid).await;
                } else if c.state != ray_providers::CloudState::Terminating {
                    tracing::warn!(cloud_id = %c.cloud_id, node_type = %c.node_type, "terminating a stray instance of an unknown node type");
                    let provider = self.provider.clone();
                    let ids = vec![c.cloud_id.clone()];
                    tokio::spawn(async move {
                        let _ = provider.terminate(&ids).await;
                    });
                }
            }
        }
    }

    fn type_specs(&self) -> Vec<NodeTypeSpec> {
        let now = tokio::time::Instant::now();
        self.config
            .node_types
            .iter()
            .map(|t| {
                let is_head = t.name == self.config.head_node_type;
                let mut max = t.max_workers;
                if self.backoff.get(&t.name).is_some_and(|b| b.until > now) {
                    // Backing off: no new launches of this type until the back-off ends.
                    max = self.instances.values().filter(|i| i.node_type == t.name && !i.status().is_final()).count() as u32;
                }
                NodeTypeSpec {
                    name: t.name.clone(),
                    resources: t.resources.clone(),
                    min_workers: t.min_workers,
                    max_workers: max,
                    is_head,
                    price: None,
                    priority: t.priority,
                }
            })
            .collect()
    }

    fn input(&self, state: &ClusterResourceState) -> scheduler::Input {
        let types = self.type_specs();
        let by_cloud: HashMap<&str, &Instance> =
            self.instances.values().filter_map(|i| i.cloud_id.as_deref().map(|c| (c, i))).collect();
        let mut nodes = Vec::new();
        for n in state.node_states.iter().filter(|n| n.status != NodeStatus::Dead as i32) {
            let inst = by_cloud.get(n.instance_id.as_str());
            let total = ResourceSet::from_f64_map_lossy(&n.total_resources);
            nodes.push(NodeView {
                id: inst.map(|i| i.id.clone()).unwrap_or_else(|| n.node_id.clone()),
                node_type: inst.map(|i| i.node_type.clone()).unwrap_or_else(|| n.ray_node_type_name.clone()),
                available: ResourceSet::from_f64_map_lossy(&n.available_resources),
                total,
                pending: false,
                is_head: n.is_head_node,
                unmanaged: inst.is_none() && !n.is_head_node,
                draining: n.status == NodeStatus::Draining as i32
                    || inst.is_some_and(|i| matches!(i.status(), InstanceStatus::Draining | InstanceStatus::Terminating)),
                idle_ms: if n.status == NodeStatus::Idle as i32 { n.idle_duration_ms.max(1) } else { 0 },
            });
        }
        // Instances on their way count in full.
        for i in self.instances.values().filter(|i| i.status().is_pending()) {
            let resources = self.config.node_type(&i.node_type).map(|t| t.resources.clone()).unwrap_or_default();
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
        scheduler::Input {
            idle_timeout_ms: types.iter().map(|t| (t.name.clone(), self.config.idle_timeout_ms(&t.name))).collect(),
            types,
            max_workers: self.config.max_workers,
            upscaling_speed: self.config.upscaling_speed,
            nodes,
            demands: state.pending_resource_requests.iter().map(by_count).collect(),
            gangs,
            constraints: state.cluster_resource_constraints.iter().flat_map(|c| c.resource_requests.iter().map(by_count)).collect(),
        }
    }

    async fn act(&mut self, d: &Decision, state: &ClusterResourceState) {
        let now = now_ms();
        for ((node_type, reason), n) in &d.launch {
            let rid = new_id();
            let mut ids = Vec::new();
            for _ in 0..*n {
                let id = new_id();
                let mut i = Instance::new(id.clone(), node_type.clone(), now, format!("queued for {}", reason.describe()));
                i.launch_request_id = Some(rid.clone());
                self.instances.insert(id.clone(), i);
                // Persist before asking the provider: a crash after the call finds the
                // request id and re-issues it instead of launching again.
                self.transition(&id, InstanceStatus::Requested, format!("requested with launch request {rid}")).await;
                ids.push(id);
            }
            tracing::info!(node_type = %node_type, count = n, reason = reason.describe(), "Adding {n} node(s) of type {node_type} ({}).", reason.describe());
            self.spawn_launch(rid, node_type.clone(), ids);
        }
        for (id, why) in &d.terminate {
            let Some(i) = self.instances.get(id) else { continue };
            if self.inflight_terminate.contains(id) || i.status() != InstanceStatus::Running {
                continue;
            }
            let node_type = i.node_type.clone();
            let node_id = i.node_id.clone().unwrap_or_default();
            let idle_s = state
                .node_states
                .iter()
                .find(|n| n.node_id == node_id)
                .map(|n| n.idle_duration_ms as f64 / 1000.0)
                .unwrap_or(0.0);
            let message = match why {
                TerminateReason::Idle => format!("idle for {idle_s:.1} s (idle_timeout_minutes reached)"),
                other => other.describe().to_string(),
            };
            tracing::info!(instance = %id, node_type = %node_type, reason = why.describe(), "Removing 1 node(s) of type {node_type} ({}): draining first.", why.describe());
            self.spawn_drain(id.clone(), node_id, *why, message);
        }
        // Tell people once about demand no node type can hold.
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

    fn spawn_launch(&mut self, request_id: String, node_type: String, instance_ids: Vec<String>) {
        let Some(t) = self.config.node_type(&node_type) else {
            tracing::warn!(node_type = %node_type, "cannot launch: the node type is not in the config");
            return;
        };
        let mut tags = BTreeMap::new();
        tags.insert(TAG_CLUSTER_NAME.to_string(), self.config.cluster_name.clone());
        tags.insert(TAG_NODE_KIND.to_string(), "worker".to_string());
        tags.insert(TAG_USER_NODE_TYPE.to_string(), node_type.clone());
        tags.insert(TAG_NODE_NAME.to_string(), format!("ray-{}-worker", self.config.cluster_name));
        let req = CreateRequest {
            request_id: request_id.clone(),
            node_type: node_type.clone(),
            instance_ids: instance_ids.clone(),
            node_config: t.node_config.clone(),
            resources: t.resources.clone(),
            labels: t.labels.clone(),
            tags,
        };
        self.inflight_launch.insert(request_id.clone());
        let provider = self.provider.clone();
        let limiter = self.limiter.clone();
        let tx = self.results_tx.clone();
        tokio::spawn(async move {
            limiter.until_ready().await;
            let started_ms = now_ms();
            let result = provider.create(&req).await;
            let _ = tx.send(TaskResult::Launched { request_id, node_type, instance_ids, result, started_ms });
        });
    }

    fn spawn_drain(&mut self, instance_id: String, node_id: String, why: TerminateReason, message: String) {
        self.inflight_terminate.insert(instance_id.clone());
        let gcs = self.gcs.clone();
        let tx = self.results_tx.clone();
        tokio::spawn(async move {
            let reason = if why == TerminateReason::Idle { DrainNodeReason::IdleTermination } else { DrainNodeReason::Preemption };
            let req = DrainNodeRequest { node_id, reason: reason as i32, reason_message: message.clone(), deadline_timestamp_ms: 0 };
            let (accepted, message) = match gcs.autoscaler.clone().drain_node(req).await {
                Ok(r) => {
                    let r = r.into_inner();
                    (r.is_accepted, if r.is_accepted { message } else { r.rejection_reason_message })
                }
                Err(s) => (false, format!("drain call failed: {}", s.message())),
            };
            let _ = tx.send(TaskResult::Drained { instance_id, accepted, message });
        });
    }

    async fn start_terminate(&mut self, id: &str, why: &str) {
        if let Some(i) = self.instances.get_mut(id) {
            i.termination_reason = Some(why.to_string());
        }
        if self.transition(id, InstanceStatus::Terminating, why.to_string()).await {
            self.spawn_terminate(id);
        }
    }

    fn spawn_terminate(&mut self, id: &str) {
        let Some(cloud_id) = self.instances.get(id).and_then(|i| i.cloud_id.clone()) else { return };
        self.inflight_terminate.insert(id.to_string());
        let provider = self.provider.clone();
        let tx = self.results_tx.clone();
        let limiter = self.limiter.clone();
        let instance_id = id.to_string();
        tokio::spawn(async move {
            limiter.until_ready().await;
            let result = provider.terminate(&[cloud_id]).await;
            let _ = tx.send(TaskResult::Terminated { instance_id, result });
        });
    }

    async fn handle(&mut self, r: TaskResult) {
        match r {
            TaskResult::Launched { request_id, node_type, instance_ids, result, started_ms } => {
                self.inflight_launch.remove(&request_id);
                match result {
                    Ok(created) => {
                        self.backoff.remove(&node_type);
                        for c in created {
                            let Some(iid) = c.tags.get(TAG_INSTANCE_ID).cloned() else { continue };
                            if self.instances.get(&iid).is_some_and(|i| i.status() == InstanceStatus::Requested) {
                                if let Some(x) = self.instances.get_mut(&iid) {
                                    x.cloud_id = Some(c.cloud_id.clone());
                                }
                                self.transition(&iid, InstanceStatus::Allocated, format!("allocated as {}", c.cloud_id)).await;
                            }
                        }
                    }
                    Err(e) => {
                        let b = self.backoff.entry(node_type.clone()).or_insert(Backoff { until: tokio::time::Instant::now(), failures: 0 });
                        b.failures += 1;
                        let wait = if e.class.is_retryable() {
                            (BACKOFF_BASE * 2u32.saturating_pow(b.failures - 1)).min(BACKOFF_MAX)
                        } else {
                            BACKOFF_MAX
                        };
                        b.until = tokio::time::Instant::now() + wait;
                        let reason = format!("{e} (launches of this type paused for {} s)", wait.as_secs());
                        tracing::warn!(node_type = %node_type, count = instance_ids.len(), class = %e.class, "Failed to launch {} node(s) of type {node_type}: {reason}", instance_ids.len());
                        for id in &instance_ids {
                            self.transition(id, InstanceStatus::AllocationFailed, format!("launch failed: {e}")).await;
                        }
                        self.failures.push_front(FailedInstanceRequest {
                            instance_type_name: node_type.clone(),
                            ray_node_type_name: node_type,
                            count: instance_ids.len() as u64,
                            reason,
                            start_ts_ms: started_ms,
                            failed_ts_ms: now_ms(),
                        });
                        self.failures.truncate(MAX_FAILURES);
                    }
                }
            }
            TaskResult::Drained { instance_id, accepted, message } => {
                self.inflight_terminate.remove(&instance_id);
                if accepted {
                    if let Some(i) = self.instances.get_mut(&instance_id) {
                        i.termination_reason = Some(message.clone());
                    }
                    if self.transition(&instance_id, InstanceStatus::Draining, format!("drain accepted: {message}")).await {
                        self.start_terminate(&instance_id, &message).await;
                    }
                } else {
                    tracing::info!(instance = %instance_id, why = %message, "drain not accepted; keeping the node");
                }
            }
            TaskResult::Terminated { instance_id, result } => {
                self.inflight_terminate.remove(&instance_id);
                if let Err(e) = result {
                    tracing::warn!(instance = %instance_id, error = %e, "terminate failed; will retry");
                }
            }
        }
    }

    async fn report(&mut self, state: &ClusterResourceState, d: &Decision) {
        let mut pending_requests: BTreeMap<String, u64> = BTreeMap::new();
        let mut pending_instances = Vec::new();
        let mut node_types = std::collections::HashMap::new();
        for i in self.instances.values() {
            match i.status() {
                InstanceStatus::Queued | InstanceStatus::Requested => *pending_requests.entry(i.node_type.clone()).or_default() += 1,
                InstanceStatus::Allocated | InstanceStatus::Installing => pending_instances.push(PendingInstance {
                    instance_id: i.cloud_id.clone().unwrap_or_else(|| i.id.clone()),
                    instance_type_name: i.node_type.clone(),
                    ray_node_type_name: i.node_type.clone(),
                    ip_address: String::new(),
                    details: i.status().to_string(),
                }),
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
        let mut report = AutoscalingState {
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
            failed_instance_requests: self.failures.iter().cloned().collect(),
            instance_node_types: node_types,
        };
        let unchanged = self.last_report.as_ref().is_some_and(|last| {
            let mut l = last.clone();
            l.autoscaler_state_version = 0;
            l.last_seen_cluster_resource_state_version = report.last_seen_cluster_resource_state_version;
            l == report
        });
        let stale = self.last_report_at.is_none_or(|t| t.elapsed() > Duration::from_secs(10));
        if unchanged && !stale {
            return;
        }
        let version = self.last_report.as_ref().map(|r| r.autoscaler_state_version).unwrap_or(0) + 1;
        report.autoscaler_state_version = version;
        let req = ReportAutoscalingStateRequest { autoscaling_state: Some(report.clone()) };
        match self.gcs.autoscaler.clone().report_autoscaling_state(req).await {
            Ok(_) => {
                if !unchanged {
                    let status = crate::status::format_status(
                        &GetClusterStatusReply { autoscaling_state: Some(report.clone()), cluster_resource_state: Some(state.clone()) },
                        chrono::Local::now(),
                        false,
                    );
                    tracing::info!("\n{status}");
                }
                self.last_report = Some(report);
                self.last_report_at = Some(tokio::time::Instant::now());
            }
            Err(s) => tracing::warn!(error = %s.message(), "cannot report the autoscaling state"),
        }
    }
}

fn short(id: &str) -> &str {
    &id[..8.min(id.len())]
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

/// Wakes the loop on every GCS change that matters to scaling; reconnects on errors.
async fn watch_gcs(gcs: GcsClient, wake: Arc<Notify>, shutdown: CancellationToken) {
    let channels = vec![EventChannel::Nodes as i32, EventChannel::Resources as i32, EventChannel::Constraints as i32];
    loop {
        let stream = gcs.subscriber.clone().subscribe(SubscribeRequest { channels: channels.clone() }).await;
        match stream {
            Ok(resp) => {
                let mut s = resp.into_inner();
                loop {
                    tokio::select! {
                        m = s.message() => match m {
                            Ok(Some(_)) => wake.notify_one(),
                            Ok(None) | Err(_) => break,
                        },
                        _ = shutdown.cancelled() => return,
                    }
                }
            }
            Err(s) => tracing::debug!(error = %s.message(), "cannot subscribe to GCS changes yet"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
