//! The raylet: one per node. It registers the node with the GCS, reports its
//! resources and queued demand (on change and at least every second), answers
//! health checks, honours drain requests, leases workers to task owners, and
//! serves the node's object store; it unregisters on shutdown.
//!
//! Module map:
//! - `state.rs`: the one owner of the node's mutable state (`NodeState` behind
//!   one lock); every operation is a method that keeps the invariants,
//!   re-dispatches and wakes the reporter and readers by itself.
//! - `leases.rs`: jobs, the request queue, dispatch, spillback, returns, blocked
//!   workers, owners and jobs that go away.
//! - `worker_pool.rs`: the pool's bookkeeping of worker processes.
//! - `spawner.rs`: the thread that spawns and reaps worker processes.
//! - `local_resources.rs`: resource accounting, idleness and drain.
//! - `service.rs`: the gRPC handlers (thin: decode, call one method, encode).
//! - `loops.rs`: the background tasks (pool events, cluster view, reports).
//! - `transfer.rs`: objects between nodes (pulls from other raylets, in chunks).
//! - `bundles.rs`: placement group bundles reserved here (prepare, commit, cancel).
//! - `spill.rs`: writing objects to disk when the store is full, and back.
//! - `detect.rs`: what this machine has.
//! - `metrics.rs` (with `host_stats.rs`): the node's `/metrics` text.

mod bundles;
pub mod detect;
mod host_stats;
mod leases;
mod local_resources;
mod loops;
pub mod metrics;
mod owner_sweep;
mod service;
mod spawner;
mod spill;
pub mod spot;
mod state;
mod transfer;
mod worker_pool;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ray_common::config::RayConfig;
use ray_common::gcs_client::GcsClient;
use ray_common::rpc::{self, Security, explain_status};
use ray_common::{NodeId, ResourceSet};
use ray_proto::rpc::autoscaler::DrainNodeReason;
use ray_proto::rpc::{DeathReason, NodeDeathInfo, NodeInfo, RegisterNodeRequest, UnregisterNodeRequest};
use tokio_util::sync::CancellationToken;

use crate::spawner::Spawner;
use crate::state::{NodeState, SharedState};
use crate::worker_pool::{PoolConfig, WorkerPool};
use ray_object_store::ObjectStore;

/// How a raylet is started.
#[derive(Debug, Clone)]
pub struct RayletOptions {
    /// This node's id (the CLI picks it so it can find the node afterwards).
    pub node_id: NodeId,
    /// `host:port` of the GCS.
    pub gcs_address: String,
    /// The node's IP, as other nodes reach it; the server binds here.
    pub node_ip: IpAddr,
    /// Node manager port; 0 picks a free one.
    pub port: u16,
    /// Total resources.
    pub resources: ResourceSet,
    /// Labels (`ray.io/node-id` is added).
    pub labels: HashMap<String, String>,
    /// True on the head node.
    pub is_head: bool,
    /// Session folder on this machine.
    pub session_dir: String,
    /// Provider instance id, when launched by an autoscaler.
    pub instance_id: String,
    /// Node type name from the cluster config, when launched by an autoscaler.
    pub node_type_name: String,
    /// When set, `{"node_id":..., "port":...}` is written here once registered.
    pub ready_file: Option<PathBuf>,
    /// argv that starts a Python worker when a job gave none.
    pub worker_command: Vec<String>,
    /// Port of this node's `/metrics` (served by the caller; recorded in the
    /// node table so the head's service discovery lists it); 0 for none.
    pub metrics_export_port: u16,
    /// Tunables.
    pub config: RayConfig,
    /// Token and TLS.
    pub security: Security,
}

/// Why the raylet stopped.
#[derive(Debug, Clone, PartialEq)]
pub enum ExitReason {
    /// Asked to stop (signal or ShutdownRaylet).
    Requested,
    /// Something made it impossible to go on.
    Fatal(String),
}

/// Why the raylet could not start.
#[derive(Debug, thiserror::Error)]
pub enum RayletError {
    /// The listening socket.
    #[error("{0}")]
    Bind(std::io::Error),
    /// TLS set-up.
    #[error("TLS set-up failed: {0}")]
    Tls(String),
    /// The GCS refused or could not be reached.
    #[error("{0}")]
    Register(String),
    /// The ready file.
    #[error("cannot write the ready file {0:?}: {1}")]
    ReadyFile(PathBuf, std::io::Error),
}

/// What the raylet's tasks share: the node state behind its one lock, and the
/// settings that never change.
pub struct Raylet {
    node_id: NodeId,
    /// Resources, workers, leases, queue, cluster view and object store.
    state: SharedState,
    session_dir: String,
    gcs_address: String,
    shutdown: CancellationToken,
    /// The first reason given to [`Raylet::stop`].
    exit: OnceLock<ExitReason>,
    gcs: GcsClient,
    config: RayConfig,
    /// This raylet's own view of the store file (peers' reads, pulls, spills).
    mapping: Arc<ray_object_store::mapping::StoreMapping>,
    /// Where spilled objects go.
    spill_dir: PathBuf,
    /// Other raylets, and pulls under way.
    transfers: transfer::Transfers,
}

impl Raylet {
    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.node_id
    }

    /// Stops the raylet with a reason.
    pub fn stop(&self, reason: ExitReason) {
        let _ = self.exit.set(reason);
        self.shutdown.cancel();
    }
}

/// `host:port`, bracketing IPv6.
pub fn rpc_address(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
        IpAddr::V4(v4) => format!("{v4}:{port}"),
    }
}

/// A raylet that is registered and serving.
pub struct RunningRaylet {
    /// The shared state.
    pub raylet: Arc<Raylet>,
    /// Where its node manager listens.
    pub addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
    reporter: tokio::task::JoinHandle<()>,
}

/// Binds, registers with the GCS, writes the ready file and starts reporting.
pub async fn start(opts: RayletOptions, shutdown: CancellationToken) -> Result<RunningRaylet, RayletError> {
    let listener = rpc::bind(SocketAddr::new(opts.node_ip, opts.port)).await.map_err(RayletError::Bind)?;
    let addr = listener.local_addr().map_err(RayletError::Bind)?;
    let timeout = opts.config.gcs_connect_timeout();
    let (gcs, _) = GcsClient::connect(&opts.gcs_address, &opts.security, timeout)
        .await
        .map_err(|e| RayletError::Register(e.to_string()))?;
    let capacity = opts.resources.get(ray_common::resources::OBJECT_STORE_MEMORY).to_f64().max(0.0) as u64;
    let store = ObjectStore::create(&ray_object_store::default_dir(), opts.node_id.short(), capacity)
        .map_err(|e| RayletError::Register(format!("cannot create the object store ({capacity} bytes): {e}")))?;
    let mapping = Arc::new(
        ray_object_store::mapping::StoreMapping::open(store.path())
            .map_err(|e| RayletError::Register(format!("cannot map the object store {}: {e}", store.path().display())))?,
    );
    let spill_dir = spill::spill_dir(&opts.config.object_spilling_config, &opts.session_dir, opts.node_id.as_str())
        .map_err(RayletError::Register)?;
    let worker_args = vec![
        "--node-id".to_string(),
        opts.node_id.to_string(),
        "--raylet-address".into(),
        rpc_address(opts.node_ip, addr.port()),
        "--gcs-address".into(),
        opts.gcs_address.clone(),
        "--node-ip-address".into(),
        opts.node_ip.to_string(),
    ];
    let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
    let cpus = opts.resources.get(ray_common::resources::CPU).to_f64().ceil().max(1.0) as usize;
    let pool = PoolConfig {
        soft_limit: cpus,
        idle_kill_threshold: Duration::from_millis(opts.config.idle_worker_killing_time_threshold_ms),
        max_idle: Duration::from_millis(opts.config.worker_max_idle_ms),
        max_starting: cpus.max(2),
        log_dir: PathBuf::from(&opts.session_dir).join("logs"),
        env: opts.security.child_env().into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        worker_args,
    };
    let pool = WorkerPool::new(pool, Box::new(Spawner::start(events_tx)));
    let state = NodeState::new(opts.node_id.to_string(), opts.resources.clone(), pool, store, opts.worker_command.clone());
    let raylet = Arc::new(Raylet {
        node_id: opts.node_id.clone(),
        state: SharedState::new(state),
        session_dir: opts.session_dir.clone(),
        gcs_address: opts.gcs_address.clone(),
        shutdown: shutdown.clone(),
        exit: OnceLock::new(),
        gcs: gcs.clone(),
        config: opts.config.clone(),
        mapping,
        spill_dir,
        transfers: transfer::Transfers::new(opts.security.clone()),
    });

    let router = service::router(&raylet, &opts.security).map_err(|e| RayletError::Tls(rpc::error_chain(&e)))?;
    let incoming = rpc::bounded_incoming(listener, opts.config.max_connections);
    let stop = shutdown.clone();
    let server = tokio::spawn(async move {
        if let Err(e) = router.serve_with_incoming_shutdown(incoming, stop.cancelled_owned()).await {
            tracing::error!(error = %rpc::error_chain(&e), "node manager server failed");
        }
    });

    let mut labels = opts.labels.clone();
    labels.insert("ray.io/node-id".into(), opts.node_id.to_string());
    // The node's type, as Ray derives it from RAY_NODE_TYPE_NAME (for
    // NodeLabelSchedulingStrategy); a label given with --labels wins.
    if !opts.node_type_name.is_empty() {
        labels.entry("ray.io/node-group".into()).or_insert_with(|| opts.node_type_name.clone());
    }
    let info = NodeInfo {
        node_id: opts.node_id.to_string(),
        node_manager_address: opts.node_ip.to_string(),
        node_manager_port: u32::from(addr.port()),
        object_manager_port: 0,
        node_name: opts.node_ip.to_string(),
        is_head_node: opts.is_head,
        resources_total: opts.resources.to_f64_map(),
        labels,
        session_dir: opts.session_dir.clone(),
        instance_id: opts.instance_id.clone(),
        node_type_name: opts.node_type_name.clone(),
        metrics_export_port: u32::from(opts.metrics_export_port),
        ..Default::default()
    };
    if let Err(s) = gcs.nodes.clone().register_node(RegisterNodeRequest { node: Some(info) }).await {
        shutdown.cancel();
        return Err(RayletError::Register(format!("registration refused: {}", explain_status(&opts.gcs_address, &s))));
    }
    tracing::info!(node_id = %opts.node_id, %addr, gcs = %opts.gcs_address, resources = %opts.resources, "raylet registered");

    if let Some(path) = &opts.ready_file {
        let body = serde_json::json!({ "node_id": opts.node_id.to_string(), "port": addr.port() }).to_string();
        let tmp = path.with_extension("tmp");
        if let Err(e) = std::fs::write(&tmp, body).and_then(|_| std::fs::rename(&tmp, path)) {
            shutdown.cancel();
            return Err(RayletError::ReadyFile(path.clone(), e));
        }
    }
    let reporter = tokio::spawn(loops::report_loop(raylet.clone()));
    tokio::spawn(loops::pool_loop(raylet.clone(), events_rx));
    tokio::spawn(loops::cluster_view_loop(raylet.clone()));
    tokio::spawn(owner_sweep::owner_sweep_loop(raylet.clone()));
    if let Some(endpoint) = spot::metadata_endpoint() {
        tokio::spawn(spot::watch(raylet.clone(), endpoint));
    }
    Ok(RunningRaylet { raylet, addr, server, reporter })
}

impl RunningRaylet {
    /// Waits for shutdown, unregisters from the GCS and returns why it stopped.
    pub async fn wait(self) -> ExitReason {
        self.raylet.shutdown.cancelled().await;
        let reason = self.raylet.exit.get().cloned().unwrap_or(ExitReason::Requested);
        let _ = self.reporter.await;
        if reason == ExitReason::Requested {
            let drain = self.raylet.state.lock().drain_state();
            let death = match drain {
                Some(d) => NodeDeathInfo {
                    reason: match d.reason {
                        DrainNodeReason::Preemption => DeathReason::AutoscalerDrainPreempted as i32,
                        _ => DeathReason::AutoscalerDrainIdle as i32,
                    },
                    reason_message: d.message,
                },
                None => NodeDeathInfo {
                    reason: DeathReason::ExpectedTermination as i32,
                    reason_message: "received SIGTERM".into(),
                },
            };
            let req = UnregisterNodeRequest { node_id: self.raylet.node_id.to_string(), death_info: Some(death) };
            let mut client = self.raylet.gcs.nodes.clone();
            match tokio::time::timeout(Duration::from_secs(3), client.unregister_node(req)).await {
                Ok(Ok(_)) => tracing::info!("unregistered from the GCS"),
                Ok(Err(s)) => tracing::warn!(error = %s.message(), "could not unregister from the GCS"),
                Err(_) => tracing::warn!("the GCS did not answer the unregister call in time"),
            }
        }
        // Clients' connections may stay open (a driver exiting at the same time):
        // do not wait for them.
        let _ = tokio::time::timeout(Duration::from_millis(100), self.server).await;
        reason
    }
}
