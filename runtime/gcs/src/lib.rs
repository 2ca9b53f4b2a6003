//! The Global Control Service: the cluster's metadata server on the head node.
//!
//! It keeps the node table (with active health checks), each node's resources and
//! queued demand, an internal key-value store with namespaces, and the autoscaler
//! state (demand, request_resources constraint, the autoscaler's own report), the
//! placement groups (table in `placement_groups.rs`, reservation on the raylets
//! in `pg_scheduler.rs`), and streams every change to subscribers.

pub mod durable_store;
pub mod health;
pub mod metrics;
pub mod prom_discovery;
pub mod redb_backend;
pub mod redis_backend;
pub mod pg_scheduler;
mod pg_service;
pub mod placement_groups;
pub mod actors;
pub mod tasks;
mod actor_service;
pub mod services;
pub mod state;
pub mod storage;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::StreamExt;
use ray_common::config::RayConfig;
use ray_common::rpc::{self, Security};
use ray_common::time::now_ms;
use ray_proto::rpc::ChangeEvent;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::state::{Change, ClusterState};
use crate::storage::{InMemoryStore, StoreClient};

/// The GCS's default port (Ray's).
pub const DEFAULT_PORT: u16 = 6379;

/// How the GCS is started.
#[derive(Debug, Clone)]
pub struct GcsOptions {
    /// Address to listen on (the head's node IP; 127.0.0.1 for a local cluster).
    pub bind: IpAddr,
    /// Port; 0 picks a free one.
    pub port: u16,
    /// Name of the cluster's session.
    pub session_name: String,
    /// When set, `{"port": N}` is written here once the server listens.
    pub ready_file: Option<PathBuf>,
    /// Tunables.
    pub config: RayConfig,
    /// Token and TLS.
    pub security: Security,
    /// Where the tables are kept.
    pub storage: Storage,
}

/// Where the GCS keeps its tables.
#[derive(Debug, Clone)]
pub enum Storage {
    /// In this process only: a restarted GCS starts empty.
    Memory,
    /// An embedded redb file on the head: a restarted GCS finds everything.
    File(PathBuf),
    /// Redis (`RAY_REDIS_ADDRESS`): the tables outlive the whole head.
    Redis {
        /// `host:port` or `redis://[:password@]host:port`.
        address: String,
        /// `RAY_REDIS_PASSWORD`, when the address carries none.
        password: Option<String>,
        /// `RAY_external_storage_namespace` (`default`).
        namespace: String,
    },
}

/// Why the GCS could not run.
#[derive(Debug, thiserror::Error)]
pub enum GcsError {
    /// The port is taken or the address is not ours.
    #[error("{0}")]
    Bind(std::io::Error),
    /// TLS set-up failed.
    #[error("TLS set-up failed: {0}")]
    Tls(String),
    /// The server stopped with an error.
    #[error("server error: {0}")]
    Serve(String),
    /// The ready file could not be written.
    #[error("cannot write the ready file {0:?}: {1}")]
    ReadyFile(PathBuf, std::io::Error),
    /// The tables could not be opened or read.
    #[error("GCS storage: {0}")]
    Storage(String),
}

/// State shared by every service of one GCS.
pub struct Gcs {
    state: Mutex<ClusterState>,
    events: broadcast::Sender<ChangeEvent>,
    store: Arc<dyn StoreClient>,
    config: RayConfig,
    security: Security,
    health: health::HealthChecker,
    shutdown: CancellationToken,
    started_ms: u64,
    /// Wakes the placement group scheduler (a group was created or removed).
    pub placement_wake: tokio::sync::Notify,
    /// Bundles to give back whose raylet could not be reached yet:
    /// (group, node, bundle indices). Retried every round while the node lives.
    pub pending_cancels: Mutex<Vec<(String, String, Vec<u32>)>>,
    /// Whether the tables outlive the process (then changes are written out).
    durable: bool,
    /// Serialises flushes, so storage sees changes in the order they were made.
    persist_lock: tokio::sync::Mutex<()>,
    /// Wakes the background flush.
    persist_wake: tokio::sync::Notify,
}

impl Gcs {
    /// A GCS over the given store.
    pub fn new(
        session_name: String,
        config: RayConfig,
        security: Security,
        store: Arc<dyn StoreClient>,
        durable: bool,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let (events, _) = broadcast::channel(4096);
        Arc::new(Self {
            state: Mutex::new(ClusterState::new(session_name)),
            events,
            store,
            config,
            security,
            health: health::HealthChecker::default(),
            shutdown,
            started_ms: now_ms(),
            placement_wake: tokio::sync::Notify::new(),
            pending_cancels: Mutex::new(Vec::new()),
            durable,
            persist_lock: tokio::sync::Mutex::new(()),
            persist_wake: tokio::sync::Notify::new(),
        })
    }

    /// Writes every change made so far to storage (a no-op in memory). Called
    /// before replying to calls whose effect must survive a restart, and in
    /// the background after every change.
    pub async fn persist(&self) {
        if !self.durable {
            return;
        }
        let _order = self.persist_lock.lock().await;
        let ops = self.state().take_dirty();
        if ops.is_empty() {
            return;
        }
        let n = ops.len();
        if let Err(e) = self.store.write_batch(ops).await {
            tracing::error!(records = n, error = %e, "cannot write the cluster tables; a restarted GCS would miss these changes");
        }
    }

    async fn persist_loop(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = self.persist_wake.notified() => {}
                _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                _ = self.shutdown.cancelled() => {
                    self.persist().await;
                    return;
                }
            }
            self.persist().await;
        }
    }

    /// Locks the cluster state. Never held across an await.
    pub fn state(&self) -> MutexGuard<'_, ClusterState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the state and publishes the change it reports.
    pub fn change<R>(&self, f: impl FnOnce(&mut ClusterState) -> (R, Option<Change>)) -> R {
        let (r, event) = {
            let mut st = self.state();
            let (r, change) = f(&mut st);
            let event = change.map(|(channel, node)| ChangeEvent { channel: channel as i32, version: st.version(), node });
            if self.durable && st.has_dirty() {
                self.persist_wake.notify_one();
            }
            (r, event)
        };
        if let Some(e) = event {
            // No subscriber is fine.
            let _ = self.events.send(e);
        }
        r
    }

    /// Subscribes to changes.
    pub fn subscribe(&self) -> broadcast::Receiver<ChangeEvent> {
        self.events.subscribe()
    }

    /// The storage behind the tables.
    pub fn store(&self) -> &Arc<dyn StoreClient> {
        &self.store
    }

    /// Tunables.
    pub fn config(&self) -> &RayConfig {
        &self.config
    }

    /// Token and TLS settings (for calls to raylets).
    pub fn security(&self) -> &Security {
        &self.security
    }

    /// Cancelled when the GCS shuts down.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// When the GCS started.
    pub fn started_ms(&self) -> u64 {
        self.started_ms
    }

    /// The health checker.
    pub fn health(&self) -> &health::HealthChecker {
        &self.health
    }
}

/// A GCS that is listening.
pub struct RunningGcs {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The shared state (for in-process tests and tools).
    pub gcs: Arc<Gcs>,
    /// Resolves when the server has stopped.
    pub done: tokio::task::JoinHandle<Result<(), GcsError>>,
}

/// Binds, writes the ready file and serves until `shutdown` is cancelled.
pub async fn start(opts: GcsOptions, shutdown: CancellationToken) -> Result<RunningGcs, GcsError> {
    let listener = rpc::bind(SocketAddr::new(opts.bind, opts.port)).await.map_err(GcsError::Bind)?;
    let addr = listener.local_addr().map_err(GcsError::Bind)?;
    // A head on a routable address is also reachable over loopback on its own
    // machine (`ray status --address 127.0.0.1:6379`), as Ray's GCS is; the
    // token check is the same on both.
    let loopback = if opts.bind.is_loopback() || opts.bind.is_unspecified() {
        None
    } else {
        let lo: IpAddr = if opts.bind.is_ipv4() { std::net::Ipv4Addr::LOCALHOST.into() } else { std::net::Ipv6Addr::LOCALHOST.into() };
        Some(rpc::bind(SocketAddr::new(lo, addr.port())).await.map_err(GcsError::Bind)?)
    };
    let (store, durable): (Arc<dyn StoreClient>, bool) = match &opts.storage {
        Storage::Memory => (Arc::new(InMemoryStore::new()), false),
        Storage::File(path) => {
            let backend = redb_backend::RedbBackend::open(path).map_err(|e| GcsError::Storage(e.to_string()))?;
            (durable_store::DurableStore::open(Arc::new(backend)).await.map_err(|e| GcsError::Storage(e.to_string()))?, true)
        }
        Storage::Redis { address, password, namespace } => {
            let backend = redis_backend::RedisBackend::connect(address, password.as_deref(), namespace)
                .await
                .map_err(|e| GcsError::Storage(e.to_string()))?;
            (durable_store::DurableStore::open(Arc::new(backend)).await.map_err(|e| GcsError::Storage(e.to_string()))?, true)
        }
    };
    let mut tables = durable_store::Tables::new();
    if durable {
        for t in [state::persist::NODES, state::persist::JOBS, state::persist::ACTORS, state::persist::PLACEMENT_GROUPS, state::persist::META] {
            let rows = store.get_all(t).await.map_err(|e| GcsError::Storage(e.to_string()))?;
            tables.insert(t.to_string(), rows.into_iter().collect());
        }
    }
    let gcs = Gcs::new(opts.session_name.clone(), opts.config.clone(), opts.security.clone(), store, durable, shutdown.clone());
    let restored = gcs.state().restore(&tables);
    if restored != state::persist::Restored::default() {
        tracing::info!(
            alive_nodes = restored.alive_nodes.len(),
            dead_nodes = restored.dead_nodes,
            jobs = restored.jobs,
            actors = restored.actors,
            placement_groups = restored.placement_groups,
            "restored the cluster tables; nodes that were alive are health-checked again"
        );
    }
    let router = services::router(&gcs, &opts.security).map_err(|e| GcsError::Tls(rpc::error_chain(&e)))?;
    let incoming = rpc::bounded_incoming(listener, opts.config.max_connections);
    let incoming = match loopback {
        Some(lo) => futures::stream::select(incoming, rpc::bounded_incoming(lo, opts.config.max_connections)).boxed(),
        None => incoming.boxed(),
    };
    if let Some(path) = &opts.ready_file {
        let body = serde_json::json!({ "port": addr.port(), "session_name": opts.session_name }).to_string();
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, body)
            .and_then(|_| std::fs::rename(&tmp, path))
            .map_err(|e| GcsError::ReadyFile(path.clone(), e))?;
    }
    tracing::info!(%addr, session = %opts.session_name, auth = opts.security.auth.token.is_some(), tls = opts.security.tls.is_some(), "GCS listening");
    for (node_id, addr) in restored.alive_nodes {
        health::watch(&gcs, node_id, addr);
    }
    tokio::spawn(pg_scheduler::run(gcs.clone()));
    if durable {
        tokio::spawn(gcs.clone().persist_loop());
    }
    let stop = shutdown.clone();
    let g = gcs.clone();
    let done = tokio::spawn(async move {
        let r = router
            .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
            .await
            .map_err(|e| GcsError::Serve(rpc::error_chain(&e)));
        g.health.stop_all();
        r
    });
    Ok(RunningGcs { addr, gcs, done })
}
