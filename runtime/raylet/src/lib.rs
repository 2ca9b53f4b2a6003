//! The raylet: one per node. It registers the node with the GCS, reports its
//! resources and queued demand (on change and at least every second), answers
//! health checks, honours drain requests, and unregisters on shutdown.

pub mod detect;
pub mod leases;
pub mod local_resources;
pub mod service;
pub mod worker_pool;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ray_common::config::RayConfig;
use ray_common::gcs_client::GcsClient;
use ray_common::rpc::{self, Security, explain_status};
use ray_common::{NodeId, ResourceSet};
use ray_proto::rpc::autoscaler::DrainNodeReason;
use ray_proto::rpc::{
    DeathReason, NodeDeathInfo, NodeInfo, RegisterNodeRequest, ResourceReport, UnregisterNodeRequest,
};
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::leases::{Leasing, PoolConfig};
use crate::local_resources::LocalResources;
use crate::worker_pool::{PoolEvent, Spawner};
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

/// State shared by the raylet's tasks.
pub struct Raylet {
    node_id: NodeId,
    resources: Mutex<LocalResources>,
    /// Workers, jobs, leases. Lock before `resources` when both are needed.
    leasing: Mutex<Leasing>,
    /// The node's shared-memory object store.
    store: Mutex<ObjectStore>,
    /// Woken whenever an object is sealed.
    sealed: Notify,
    /// Arguments every worker of this node gets.
    worker_args: Vec<String>,
    /// Default worker command.
    worker_command: Vec<String>,
    session_dir: String,
    gcs_address: String,
    changed: Notify,
    shutdown: CancellationToken,
    exit: Mutex<Option<ExitReason>>,
    gcs: GcsClient,
    config: RayConfig,
    seq: std::sync::atomic::AtomicU64,
}

impl Raylet {
    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.node_id
    }

    /// Locks the resource accounting. Call [`Self::notify_changed`] after a change.
    pub fn resources(&self) -> MutexGuard<'_, LocalResources> {
        self.resources.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes the reporter so the GCS hears about a change at once.
    pub fn notify_changed(&self) {
        self.changed.notify_one();
    }

    /// Locks the pool and leases.
    pub fn leasing(&self) -> MutexGuard<'_, Leasing> {
        self.leasing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Locks the object store.
    pub fn store(&self) -> MutexGuard<'_, ObjectStore> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes readers waiting for objects.
    pub fn notify_sealed(&self) {
        self.sealed.notify_waiters();
    }

    /// A future that completes when an object is sealed after this call (registered
    /// at once, so a seal between a check and the wait is not missed).
    pub fn sealed_notifier(&self) -> std::pin::Pin<Box<tokio::sync::futures::Notified<'_>>> {
        let mut n = Box::pin(self.sealed.notified());
        n.as_mut().enable();
        n
    }

    /// Grants what can be granted and refreshes the reported demand.
    pub fn dispatch(&self) {
        let mut l = self.leasing();
        let mut r = self.resources();
        let demand = l.dispatch(&mut r, &self.worker_args);
        r.replace_demand(demand);
        drop(r);
        drop(l);
        self.notify_changed();
    }

    /// The default worker command.
    pub fn worker_command(&self) -> &[String] {
        &self.worker_command
    }

    /// The session folder.
    pub fn session_dir(&self) -> &str {
        &self.session_dir
    }

    /// The GCS address.
    pub fn gcs_address(&self) -> &str {
        &self.gcs_address
    }

    /// Stops the raylet with a reason.
    pub fn stop(&self, reason: ExitReason) {
        let mut e = self.exit.lock().unwrap_or_else(|p| p.into_inner());
        if e.is_none() {
            *e = Some(reason);
        }
        self.shutdown.cancel();
    }

    fn report(&self) -> ResourceReport {
        let r = self.resources();
        ResourceReport {
            node_id: self.node_id.to_string(),
            resources_total: r.total().to_f64_map(),
            resources_available: r.available().to_f64_map(),
            demand: r.demand_report(),
            gang_demand: Vec::new(),
            seq: self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1,
            idle_duration_ms: r.idle_duration_ms(),
            object_store_bytes_used: self.store().used(),
        }
    }
}

/// Keeps the view of the other nodes (for spillback) fresh: refetched whenever the
/// GCS announces a node or resource change (at most every 100 ms), else every 2 s.
async fn cluster_view_loop(r: Arc<Raylet>) {
    use ray_proto::rpc::{Channel as Ch, GetAllNodeInfoRequest, GetAllResourceUsageRequest, NodeState, SubscribeRequest};
    let wake = Arc::new(Notify::new());
    {
        let gcs = r.gcs.clone();
        let wake = wake.clone();
        let shutdown = r.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let req = SubscribeRequest { channels: vec![Ch::Nodes as i32, Ch::Resources as i32] };
                if let Ok(resp) = gcs.subscriber.clone().subscribe(req).await {
                    let mut s = resp.into_inner();
                    loop {
                        tokio::select! {
                            m = s.message() => match m {
                                Ok(Some(_)) => wake.notify_one(),
                                _ => break,
                            },
                            _ = shutdown.cancelled() => return,
                        }
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        });
    }
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = r.shutdown.cancelled() => return,
        }
        let nodes = r.gcs.nodes.clone().get_all_node_info(GetAllNodeInfoRequest { state_filter: Some(NodeState::Alive as i32) }).await;
        let usage = r.gcs.resources.clone().get_all_resource_usage(GetAllResourceUsageRequest {}).await;
        if let (Ok(nodes), Ok(usage)) = (nodes, usage) {
            let addrs: HashMap<String, String> = nodes
                .into_inner()
                .nodes
                .into_iter()
                .map(|n| (n.node_id, format!("{}:{}", n.node_manager_address, n.node_manager_port)))
                .collect();
            let me = r.node_id.to_string();
            let view: Vec<leases::RemoteNode> = usage
                .into_inner()
                .nodes
                .into_iter()
                .filter(|n| n.node_id != me)
                .filter_map(|n| {
                    Some(leases::RemoteNode {
                        address: addrs.get(&n.node_id)?.clone(),
                        node_id: n.node_id,
                        available: ResourceSet::from_f64_map_lossy(&n.resources_available),
                        total: ResourceSet::from_f64_map_lossy(&n.resources_total),
                    })
                })
                .collect();
            r.leasing().cluster = view;
            r.dispatch();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `host:port`, bracketing IPv6.
pub fn rpc_address(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
        IpAddr::V4(v4) => format!("{v4}:{port}"),
    }
}

/// Follows worker processes (started, exited), retires idle workers, and ends
/// jobs whose driver exited.
async fn pool_loop(r: Arc<Raylet>, mut events: tokio::sync::mpsc::UnboundedReceiver<PoolEvent>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(PoolEvent::Started { worker_id, pid }) => {
                    if let Some(w) = r.leasing().workers.get_mut(&worker_id) {
                        w.pid = pid;
                    }
                    tracing::debug!(worker_id = %worker_id, pid, "worker process started");
                }
                Some(PoolEvent::SpawnFailed { worker_id, error }) => {
                    tracing::error!(worker_id = %worker_id, "{error}");
                    r.leasing().workers.remove(&worker_id);
                }
                Some(PoolEvent::Exited { pid, status }) => {
                    let gone = {
                        let mut l = r.leasing();
                        let mut res = r.resources();
                        l.worker_exited(pid, &mut res)
                    };
                    if let Some((id, address, leased)) = gone {
                        if leased {
                            tracing::warn!(worker_id = %id, pid, %status, "a worker exited while leased");
                        } else {
                            tracing::debug!(worker_id = %id, pid, %status, "worker exited");
                        }
                        let mut store = r.store();
                        store.disconnect(&id);
                        // Objects it owned (put in its tasks) have no owner any more.
                        store.delete_owned_by(&address);
                        drop(store);
                        r.dispatch();
                    }
                }
                None => return,
            },
            _ = tick.tick() => {
                let (kill, dead_jobs) = {
                    let l = r.leasing();
                    let kill: Vec<(String, u32)> = l.idle_to_kill().into_iter().filter_map(|id| l.workers.get(&id).map(|w| (id, w.pid))).collect();
                    let dead: Vec<(String, String, String)> = l
                        .jobs
                        .iter()
                        .filter(|(_, j)| j.driver_pid > 0 && std::fs::metadata(format!("/proc/{}", j.driver_pid)).is_err())
                        .map(|(id, j)| (id.clone(), j.driver_id.clone(), j.driver_address.clone()))
                        .collect();
                    (kill, dead)
                };
                for (id, _) in kill {
                    // Checked again under the lock: it may have been leased meanwhile.
                    let removed = r.leasing().remove_if_idle(&id);
                    if let Some(pid) = removed {
                        tracing::debug!(worker_id = %id, pid, "stopping an idle worker");
                        crate::worker_pool::kill(pid);
                    }
                }
                for (job, driver, driver_address) in dead_jobs {
                    tracing::info!(job_id = %job, "the driver exited; stopping the job's workers and freeing its objects");
                    let pids = {
                        let mut l = r.leasing();
                        let mut res = r.resources();
                        l.end_job(&job, &mut res)
                    };
                    for pid in pids {
                        crate::worker_pool::kill(pid);
                    }
                    {
                        let mut store = r.store();
                        store.disconnect(&driver);
                        store.delete_owned_by(&driver_address);
                    }
                    r.dispatch();
                }
            }
            _ = r.shutdown.cancelled() => {
                let pids: Vec<u32> = r.leasing().workers.values().map(|w| w.pid).collect();
                for pid in pids {
                    crate::worker_pool::kill(pid);
                }
                return;
            }
        }
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
    };
    let raylet = Arc::new(Raylet {
        node_id: opts.node_id.clone(),
        resources: Mutex::new(LocalResources::new(opts.resources.clone())),
        leasing: Mutex::new(Leasing::new(pool, Spawner::start(events_tx))),
        store: Mutex::new(store),
        sealed: Notify::new(),
        worker_args,
        worker_command: opts.worker_command.clone(),
        session_dir: opts.session_dir.clone(),
        gcs_address: opts.gcs_address.clone(),
        changed: Notify::new(),
        shutdown: shutdown.clone(),
        exit: Mutex::new(None),
        gcs: gcs.clone(),
        config: opts.config.clone(),
        seq: Default::default(),
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
    let reporter = tokio::spawn(report_loop(raylet.clone()));
    tokio::spawn(pool_loop(raylet.clone(), events_rx));
    tokio::spawn(cluster_view_loop(raylet.clone()));
    Ok(RunningRaylet { raylet, addr, server, reporter })
}

impl RunningRaylet {
    /// Waits for shutdown, unregisters from the GCS and returns why it stopped.
    pub async fn wait(self) -> ExitReason {
        self.raylet.shutdown.cancelled().await;
        let reason = self.raylet.exit.lock().unwrap_or_else(|p| p.into_inner()).clone().unwrap_or(ExitReason::Requested);
        let _ = self.reporter.await;
        if reason == ExitReason::Requested {
            let death = {
                let r = self.raylet.resources();
                match r.drain_state() {
                    Some(d) => NodeDeathInfo {
                        reason: match d.reason {
                            DrainNodeReason::Preemption => DeathReason::AutoscalerDrainPreempted as i32,
                            _ => DeathReason::AutoscalerDrainIdle as i32,
                        },
                        reason_message: d.message.clone(),
                    },
                    None => NodeDeathInfo {
                        reason: DeathReason::ExpectedTermination as i32,
                        reason_message: "received SIGTERM".into(),
                    },
                }
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

/// Streams reports to the GCS: on every change and at least once a period.
/// Reconnects when the stream breaks; stops the raylet when the GCS says the node
/// is dead or stays unreachable past the reconnect timeout.
async fn report_loop(r: Arc<Raylet>) {
    let period = Duration::from_millis(r.config.raylet_report_resources_period_ms.max(10));
    let give_up_after = Duration::from_secs(r.config.gcs_rpc_server_reconnect_timeout_s);
    let mut last_ok = Instant::now();
    let mut backoff = Duration::from_millis(100);
    loop {
        let (tx, rx) = mpsc::channel::<ResourceReport>(8);
        let mut client = r.gcs.resources.clone();
        let mut call = tokio::spawn(async move { client.report_resources(ReceiverStream::new(rx)).await });
        let outcome = loop {
            if tx.send(r.report()).await.is_err() {
                break None;
            }
            tokio::select! {
                _ = r.changed.notified() => {}
                _ = tokio::time::sleep(period) => {}
                res = &mut call => break Some(res),
                _ = r.shutdown.cancelled() => {
                    drop(tx);
                    call.abort();
                    return;
                }
            }
            last_ok = Instant::now();
            backoff = Duration::from_millis(100);
        };
        let res = match outcome {
            Some(res) => res,
            None => call.await,
        };
        match res {
            Ok(Err(s)) if s.code() == tonic::Code::FailedPrecondition || s.code() == tonic::Code::NotFound => {
                let msg = format!("the GCS no longer accepts this node: {}", s.message());
                tracing::error!("{msg}; exiting");
                r.stop(ExitReason::Fatal(msg));
                return;
            }
            Ok(Err(s)) if s.code() == tonic::Code::Unauthenticated => {
                let msg = format!("the GCS refused our cluster token: {}", s.message());
                tracing::error!("{msg}; exiting");
                r.stop(ExitReason::Fatal(msg));
                return;
            }
            Ok(Err(s)) => tracing::warn!(code = ?s.code(), error = %s.message(), "resource report stream broke; reconnecting"),
            Ok(Ok(_)) => tracing::warn!("the GCS closed the report stream; reconnecting"),
            Err(_) => {}
        }
        if last_ok.elapsed() > give_up_after {
            let msg = format!("the GCS at {} has been unreachable for {:?}", r.gcs.addr(), give_up_after);
            tracing::error!("{msg}; exiting");
            r.stop(ExitReason::Fatal(msg));
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = r.shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}
