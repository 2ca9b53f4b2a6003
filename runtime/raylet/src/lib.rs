//! The raylet: one per node. It registers the node with the GCS, reports its
//! resources and queued demand (on change and at least every second), answers
//! health checks, honours drain requests, and unregisters on shutdown.

pub mod detect;
pub mod local_resources;
pub mod service;

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

use crate::local_resources::LocalResources;

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
            object_store_bytes_used: 0,
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
    let raylet = Arc::new(Raylet {
        node_id: opts.node_id.clone(),
        resources: Mutex::new(LocalResources::new(opts.resources.clone())),
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
        let _ = tokio::time::timeout(Duration::from_secs(2), self.server).await;
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
