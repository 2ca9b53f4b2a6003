//! In-memory fakes for whole-round tests: a cluster (node states, drains, reports),
//! a provider (creates "register" nodes in that cluster; failures on demand), and
//! a storage wrapper that fails the writes it is told to. Time is tokio's, so
//! tests run under `tokio::time::pause()`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use ray_common::ResourceSet;
use ray_proto::rpc::NodeDeathInfo;
use ray_proto::rpc::autoscaler::{
    AutoscalingState, ClusterResourceConstraint, ClusterResourceState, DrainNodeReason, NodeState, NodeStatus, ResourceRequest,
    ResourceRequestByCount,
};
use ray_providers::{CloudInstance, CloudState, CreateRequest, NodeProvider, ProviderError, TAG_INSTANCE_ID, TAG_LAUNCH_REQUEST};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cluster::{Cluster, ClusterError, DrainOutcome};
use crate::instance::store::{InstanceStorage, MemoryInstanceStorage, StoreError};
use crate::instance::{Instance, InstanceStatus};

/// One round, a second for the background work, and its outcomes applied.
pub async fn step(a: &mut crate::Autoscaler) {
    a.round().await.expect("round");
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    a.apply_outcomes().await;
}

/// `n` rounds.
pub async fn steps(a: &mut crate::Autoscaler, n: usize) {
    for _ in 0..n {
        step(a).await;
    }
}

/// Instances of the table in status `s`.
pub fn count(a: &crate::Autoscaler, s: InstanceStatus) -> usize {
    a.instances().values().filter(|i| i.status() == s).count()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Requests of one shape, as the GCS reports them.
pub fn by_count(shape: &[(&str, f64)], count: u64) -> ResourceRequestByCount {
    let bundle = shape.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    ResourceRequestByCount { request: Some(ResourceRequest { resources_bundle: bundle }), count }
}

/// One node of the fake cluster.
#[derive(Debug, Clone)]
pub struct FakeNode {
    /// Ray's node id.
    pub node_id: String,
    /// The provider's id ("" for the head).
    pub cloud_id: String,
    /// Node type.
    pub node_type: String,
    /// Total resources.
    pub total: HashMap<String, f64>,
    /// Busy nodes are not idle and refuse drains.
    pub busy: bool,
    /// Idle since (tokio time).
    pub idle_since: Instant,
    /// Accepted a drain.
    pub draining: bool,
    /// Dead, with why.
    pub dead: Option<String>,
}

#[derive(Default)]
struct ClusterState {
    nodes: Vec<FakeNode>,
    version: u64,
    demands: Vec<ResourceRequestByCount>,
    constraints: Vec<ResourceRequestByCount>,
    events: Vec<String>,
    reports: Vec<AutoscalingState>,
    manual_register: bool,
}

/// A cluster in memory: a head node, nodes that register when the fake provider
/// creates them, idle times from tokio's clock.
pub struct FakeCluster {
    state: Mutex<ClusterState>,
}

impl FakeCluster {
    /// A cluster with a head node of no CPUs.
    pub fn new() -> Arc<Self> {
        let head = FakeNode {
            node_id: "head0000node".into(),
            cloud_id: String::new(),
            node_type: "head".into(),
            total: HashMap::new(),
            busy: false,
            idle_since: Instant::now(),
            draining: false,
            dead: None,
        };
        Arc::new(Self { state: Mutex::new(ClusterState { nodes: vec![head], version: 1, ..Default::default() }) })
    }

    fn change(&self, f: impl FnOnce(&mut ClusterState)) {
        let mut s = lock(&self.state);
        f(&mut s);
        s.version += 1;
    }

    /// Nodes register only through [`FakeCluster::register`] from now on.
    pub fn register_manually(&self) {
        lock(&self.state).manual_register = true;
    }

    /// A raylet started on `cloud_id` registers (under a new node id each time
    /// Ray starts there).
    pub fn register(&self, cloud_id: &str, node_type: &str, total: &ResourceSet) {
        let starts = lock(&self.state)
            .nodes
            .iter()
            .filter(|n| n.cloud_id == cloud_id)
            .count();
        let node = FakeNode {
            node_id: if starts == 0 {
                format!("node{cloud_id}")
            } else {
                format!("node{cloud_id}-{starts}")
            },
            cloud_id: cloud_id.into(),
            node_type: node_type.into(),
            total: total.to_f64_map(),
            busy: false,
            idle_since: Instant::now(),
            draining: false,
            dead: None,
        };
        self.change(|s| s.nodes.push(node));
    }

    fn created(&self, cloud_id: &str, node_type: &str, total: &ResourceSet) {
        if !lock(&self.state).manual_register {
            self.register(cloud_id, node_type, total);
        }
    }

    /// Sets the request_resources constraint.
    pub fn request_resources(&self, shape: &[(&str, f64)], count: u64) {
        self.change(|s| s.constraints = if count == 0 { Vec::new() } else { vec![by_count(shape, count)] });
    }

    /// Sets the queued task demand.
    pub fn set_demand(&self, shape: &[(&str, f64)], count: u64) {
        self.change(|s| s.demands = if count == 0 { Vec::new() } else { vec![by_count(shape, count)] });
    }

    /// Marks the node on `cloud_id` busy or idle (idle from now).
    pub fn set_busy(&self, cloud_id: &str, busy: bool) {
        self.change(|s| {
            for n in s.nodes.iter_mut().filter(|n| n.cloud_id == cloud_id) {
                n.busy = busy;
                n.idle_since = Instant::now();
            }
        });
    }

    /// The node on `cloud_id` died (its process is gone).
    pub fn kill(&self, cloud_id: &str, why: &str) {
        self.change(|s| {
            for n in s.nodes.iter_mut().filter(|n| n.cloud_id == cloud_id && n.dead.is_none()) {
                n.dead = Some(why.to_string());
            }
        });
    }

    /// Live nodes of a type.
    pub fn alive_of_type(&self, node_type: &str) -> usize {
        lock(&self.state).nodes.iter().filter(|n| n.node_type == node_type && n.dead.is_none()).count()
    }

    /// What the autoscaler did to this cluster and its provider, in order
    /// ("drain <cloud id>", "terminate <cloud id>", "create <instance id>").
    pub fn events(&self) -> Vec<String> {
        lock(&self.state).events.clone()
    }

    fn event(&self, e: String) {
        lock(&self.state).events.push(e);
    }

    /// The last autoscaling state reported.
    pub fn last_report(&self) -> Option<AutoscalingState> {
        lock(&self.state).reports.last().cloned()
    }
}

#[async_trait]
impl Cluster for FakeCluster {
    async fn resource_state(&self, _last_seen_version: u64) -> Result<ClusterResourceState, ClusterError> {
        let s = lock(&self.state);
        let now = Instant::now();
        let node_states = s
            .nodes
            .iter()
            .map(|n| {
                let status = match (&n.dead, n.draining, n.busy) {
                    (Some(_), _, _) => NodeStatus::Dead,
                    (None, true, _) => NodeStatus::Draining,
                    (None, false, true) => NodeStatus::Running,
                    (None, false, false) => NodeStatus::Idle,
                };
                let idle = status == NodeStatus::Idle;
                NodeState {
                    node_id: n.node_id.clone(),
                    instance_id: n.cloud_id.clone(),
                    ray_node_type_name: n.node_type.clone(),
                    available_resources: if n.busy { HashMap::new() } else { n.total.clone() },
                    total_resources: n.total.clone(),
                    status: status as i32,
                    idle_duration_ms: if idle { now.saturating_duration_since(n.idle_since).as_millis() as u64 } else { 0 },
                    is_head_node: n.cloud_id.is_empty(),
                    death_info: n.dead.as_ref().map(|m| NodeDeathInfo { reason: 0, reason_message: m.clone() }),
                    ..Default::default()
                }
            })
            .collect();
        Ok(ClusterResourceState {
            cluster_resource_state_version: s.version,
            node_states,
            pending_resource_requests: s.demands.clone(),
            cluster_resource_constraints: if s.constraints.is_empty() {
                Vec::new()
            } else {
                vec![ClusterResourceConstraint { resource_requests: s.constraints.clone() }]
            },
            ..Default::default()
        })
    }

    async fn drain_node(&self, node_id: &str, reason: DrainNodeReason, _message: &str) -> Result<DrainOutcome, ClusterError> {
        let mut s = lock(&self.state);
        let Some(n) = s.nodes.iter_mut().find(|n| n.node_id == node_id && n.dead.is_none()) else {
            return Ok(DrainOutcome { accepted: true, rejection: String::new() });
        };
        if n.busy {
            return Ok(DrainOutcome { accepted: false, rejection: "the node is busy".into() });
        }
        n.draining = true;
        let e = format!("drain {} {}", n.cloud_id, reason.as_str_name());
        s.events.push(e);
        s.version += 1;
        Ok(DrainOutcome { accepted: true, rejection: String::new() })
    }

    async fn report(&self, state: &AutoscalingState) -> Result<(), ClusterError> {
        lock(&self.state).reports.push(state.clone());
        Ok(())
    }

    async fn watch(&self, _wake: Arc<Notify>, shutdown: CancellationToken) {
        shutdown.cancelled().await;
    }
}

#[derive(Default)]
struct ProviderState {
    instances: BTreeMap<String, CloudInstance>,
    next_id: u64,
    create_calls: Vec<CreateRequest>,
    created: Vec<String>,
    fail_once: Option<ProviderError>,
    crash_after: Option<usize>,
}

/// A provider in memory whose instances run at once, and whose nodes register in
/// a [`FakeCluster`]. Idempotent by instance id, as real providers must be.
pub struct FakeProvider {
    state: Mutex<ProviderState>,
    cluster: Arc<FakeCluster>,
    starts_ray: bool,
}

impl FakeProvider {
    /// A provider whose nodes join `cluster`.
    pub fn new(cluster: Arc<FakeCluster>) -> Arc<Self> {
        Arc::new(Self { state: Mutex::new(ProviderState::default()), cluster, starts_ray: true })
    }

    /// A provider of machines Ray must be set up on (as over SSH): its nodes
    /// join `cluster` only when a [`FakeSetup`] sets them up.
    pub fn needing_setup(cluster: Arc<FakeCluster>) -> Arc<Self> {
        cluster.register_manually();
        Arc::new(Self { state: Mutex::new(ProviderState::default()), cluster, starts_ray: false })
    }

    /// The next launch fails with `e`.
    pub fn fail_next_launch(&self, e: ProviderError) {
        lock(&self.state).fail_once = Some(e);
    }

    /// The next launch creates `n` instances and then never answers (the
    /// autoscaler dies during the call).
    pub fn hang_next_launch_after(&self, n: usize) {
        lock(&self.state).crash_after = Some(n);
    }

    /// Every create call so far.
    pub fn create_calls(&self) -> Vec<CreateRequest> {
        lock(&self.state).create_calls.clone()
    }

    /// Instance ids created, one entry per creation.
    pub fn created(&self) -> Vec<String> {
        lock(&self.state).created.clone()
    }

    /// Instances that exist.
    pub fn instances(&self) -> Vec<CloudInstance> {
        lock(&self.state).instances.values().cloned().collect()
    }

    /// Creates an instance the autoscaler never recorded (it died between the
    /// provider's answer and its own write).
    pub fn add_unrecorded(&self, node_type: &str, instance_id: &str, resources: &ResourceSet) -> String {
        let mut s = lock(&self.state);
        let c = Self::make(&mut s, node_type, instance_id, BTreeMap::new());
        drop(s);
        self.cluster.created(&c, node_type, resources);
        c
    }

    fn make(s: &mut ProviderState, node_type: &str, instance_id: &str, mut tags: BTreeMap<String, String>) -> String {
        s.next_id += 1;
        let cloud_id = format!("fake{:04}", s.next_id);
        tags.insert(TAG_INSTANCE_ID.into(), instance_id.into());
        let c = CloudInstance {
            cloud_id: cloud_id.clone(),
            node_type: node_type.into(),
            state: CloudState::Running,
            tags,
            internal_ip: None,
            external_ip: None,
        };
        s.instances.insert(cloud_id.clone(), c);
        s.created.push(instance_id.to_string());
        cloud_id
    }
}

#[async_trait]
impl NodeProvider for FakeProvider {
    fn name(&self) -> &str {
        "fake"
    }

    async fn create(&self, req: &CreateRequest) -> Result<Vec<CloudInstance>, ProviderError> {
        let (out, new, hang) = {
            let mut s = lock(&self.state);
            s.create_calls.push(req.clone());
            if let Some(e) = s.fail_once.take() {
                return Err(e);
            }
            let limit = s.crash_after.take();
            let mut out = Vec::new();
            let mut new = Vec::new();
            for id in &req.instance_ids {
                let existing = s.instances.values().find(|c| c.tags.get(TAG_INSTANCE_ID) == Some(id)).cloned();
                if let Some(c) = existing {
                    out.push(c);
                    continue;
                }
                if limit.is_some_and(|l| new.len() >= l) {
                    break;
                }
                let mut tags = req.tags.clone();
                tags.insert(TAG_LAUNCH_REQUEST.into(), req.request_id.clone());
                let cloud_id = Self::make(&mut s, &req.node_type, id, tags);
                out.extend(s.instances.get(&cloud_id).cloned());
                new.push((cloud_id, id.clone()));
            }
            (out, new, limit.is_some())
        };
        for (cloud_id, id) in new {
            self.cluster.event(format!("create {id}"));
            self.cluster.created(&cloud_id, &req.node_type, &req.resources);
        }
        if hang {
            std::future::pending::<()>().await;
        }
        Ok(out)
    }

    async fn terminate(&self, cloud_ids: &[String]) -> Result<(), ProviderError> {
        for c in cloud_ids {
            if lock(&self.state).instances.remove(c).is_some() {
                self.cluster.event(format!("terminate {c}"));
                self.cluster.kill(c, "terminated by the autoscaler");
            }
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<CloudInstance>, ProviderError> {
        Ok(self.instances())
    }

    async fn set_tags(&self, cloud_id: &str, tags: &BTreeMap<String, String>) -> Result<(), ProviderError> {
        if let Some(c) = lock(&self.state).instances.get_mut(cloud_id) {
            c.tags.extend(tags.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        Ok(())
    }

    /// Its instances join the fake cluster as soon as they are created (unless
    /// made by [`FakeProvider::needing_setup`]).
    fn starts_ray_itself(&self) -> bool {
        self.starts_ray
    }
}

#[derive(Default)]
struct SetupState {
    launch_hash: String,
    runtime_hash: String,
    calls: Vec<String>,
    fail_next: usize,
    hang: bool,
    delay: std::time::Duration,
    running: usize,
}

/// Counts a set-up as running until it finishes or is dropped (cancelled).
struct Running<'a>(&'a Mutex<SetupState>);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        lock(self.0).running -= 1;
    }
}

/// A node updater in memory: "setting up" an instance tags it (status, hashes)
/// and registers its node in the cluster; failures and hangs on demand.
pub struct FakeSetup {
    state: Mutex<SetupState>,
    provider: Arc<FakeProvider>,
    cluster: Arc<FakeCluster>,
    resources: ResourceSet,
}

impl FakeSetup {
    /// Sets up `provider`'s instances, whose nodes join `cluster` with `resources`.
    pub fn new(provider: Arc<FakeProvider>, cluster: Arc<FakeCluster>, resources: ResourceSet) -> Arc<Self> {
        let state = SetupState { launch_hash: "launch-1".into(), runtime_hash: "runtime-1".into(), ..Default::default() };
        Arc::new(Self { state: Mutex::new(state), provider, cluster, resources })
    }

    /// The config changed: new launch and runtime hashes.
    pub fn set_hashes(&self, launch: &str, runtime: &str) {
        let mut s = lock(&self.state);
        s.launch_hash = launch.into();
        s.runtime_hash = runtime.into();
    }

    /// The next `n` set-ups fail.
    pub fn fail_next(&self, n: usize) {
        lock(&self.state).fail_next = n;
    }

    /// Set-ups never finish (the autoscaler dies during them) until cleared.
    pub fn hang(&self, hang: bool) {
        lock(&self.state).hang = hang;
    }

    /// Each set-up takes this long.
    pub fn take(&self, d: std::time::Duration) {
        lock(&self.state).delay = d;
    }

    /// Cloud ids set up so far, one entry per set-up.
    pub fn calls(&self) -> Vec<String> {
        lock(&self.state).calls.clone()
    }

    /// Set-ups under way now (neither finished nor cancelled).
    pub fn running(&self) -> usize {
        lock(&self.state).running
    }
}

#[async_trait]
impl crate::setup::NodeSetup for FakeSetup {
    fn launch_hash(&self, _node_type: &str) -> Option<String> {
        Some(lock(&self.state).launch_hash.clone())
    }

    fn runtime_hash(&self, _node_type: &str) -> Option<String> {
        Some(lock(&self.state).runtime_hash.clone())
    }

    async fn set_up(&self, instance: &CloudInstance, node_type: &str) -> Result<(), String> {
        let (fail, hang, delay, runtime) = {
            let mut s = lock(&self.state);
            s.calls.push(instance.cloud_id.clone());
            s.running += 1;
            let fail = s.fail_next > 0;
            s.fail_next = s.fail_next.saturating_sub(1);
            (fail, s.hang, s.delay, s.runtime_hash.clone())
        };
        let _running = Running(&self.state);
        let tag = |status: &str| {
            [(
                ray_providers::TAG_NODE_STATUS.to_string(),
                status.to_string(),
            )]
            .into()
        };
        let _ = self
            .provider
            .set_tags(&instance.cloud_id, &tag("setting-up"))
            .await;
        if hang {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(delay).await;
        if fail {
            let _ = self.provider.set_tags(&instance.cloud_id, &tag("update-failed")).await;
            return Err("waiting for SSH: cannot reach root@10.0.0.9: Connection refused".into());
        }
        let mut tags: BTreeMap<String, String> = tag("up-to-date");
        tags.insert(ray_providers::TAG_RUNTIME_CONFIG.into(), runtime);
        let _ = self.provider.set_tags(&instance.cloud_id, &tags).await;
        // A re-setup restarts Ray: the node comes back under a new node id.
        self.cluster.kill(&instance.cloud_id, "restarted by a set-up");
        self.cluster.register(&instance.cloud_id, node_type, &self.resources);
        Ok(())
    }
}

/// Memory storage that fails the writes it is told to.
#[derive(Default)]
pub struct FailingStorage {
    inner: MemoryInstanceStorage,
    fail_status: Mutex<Option<InstanceStatus>>,
}

impl FailingStorage {
    /// Puts of records in `status` fail (`None`: they work again).
    pub fn fail_writes_of(&self, status: Option<InstanceStatus>) {
        *lock(&self.fail_status) = status;
    }

    /// The stored records.
    pub async fn records(&self) -> Vec<Instance> {
        self.inner.load_all().await.unwrap_or_default()
    }
}

#[async_trait]
impl InstanceStorage for FailingStorage {
    async fn load_all(&self) -> Result<Vec<Instance>, StoreError> {
        self.inner.load_all().await
    }

    async fn put(&self, i: &Instance) -> Result<(), StoreError> {
        if *lock(&self.fail_status) == Some(i.status()) {
            return Err(StoreError::Gcs(format!("injected failure writing {} as {}", i.id, i.status())));
        }
        self.inner.put(i).await
    }

    async fn delete(&self, id: &str) -> Result<(), StoreError> {
        self.inner.delete(id).await
    }
}
