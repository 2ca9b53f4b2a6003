//! Start-up: connect to the GCS (a driver registers its job), bind this worker's
//! server, register with the local raylet, map the node's store, and only then
//! serve. Calls that arrive in between wait in the listener's backlog, so nothing
//! has to poll for a half-built core worker.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ray_common::gcs_client::GcsClient;
use ray_common::rpc::{self, Security};
use ray_common::{JobId, NodeId, WorkerId};
use ray_proto::rpc::core_worker_service_server::CoreWorkerServiceServer;
use ray_proto::rpc::job_info_gcs_service_client::JobInfoGcsServiceClient;
use ray_proto::rpc::node_manager_service_client::NodeManagerServiceClient;
use ray_proto::rpc::{AddJobRequest, JobInfo, RegisterWorkerRequest};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::context::{Context, Mode, Peers};
use crate::executor::Executor;
use crate::ids::IdGen;
use crate::ownership::Ownership;
use crate::plasma::PlasmaClient;
use crate::reader::Reader;
use crate::server::Server;
use crate::submitter::Submitter;

/// How to start a core worker.
#[derive(Debug, Clone)]
pub struct Options {
    /// Driver or worker.
    pub mode: Mode,
    /// GCS `host:port`.
    pub gcs_address: String,
    /// Local raylet `host:port`.
    pub raylet_address: String,
    /// This node's IP (the server binds here).
    pub node_ip: IpAddr,
    /// Workers: the job they serve.
    pub job_id: Option<JobId>,
    /// This process's worker id.
    pub worker_id: WorkerId,
    /// Drivers: argv that starts this job's workers.
    pub worker_command: Vec<String>,
    /// Drivers: the command line, for the job table.
    pub entrypoint: String,
    /// Token and TLS.
    pub security: Security,
}

/// Why the core worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The GCS could not be reached or refused.
    #[error("{0}")]
    Gcs(String),
    /// The local raylet could not be reached or refused.
    #[error("{0}")]
    Raylet(String),
    /// This worker's own server could not start.
    #[error("{0}")]
    Server(String),
}

/// The parts of a started core worker.
pub(crate) struct Parts {
    pub ctx: Arc<Context>,
    pub own: Arc<Ownership>,
    pub reader: Arc<Reader>,
    pub submitter: Arc<Submitter>,
    pub executor: Arc<Executor>,
    pub actors: Arc<crate::actors::Actors>,
    pub log_rx: mpsc::UnboundedReceiver<String>,
    /// Stops the server when dropped (with the core worker).
    pub serving: DropGuard,
}

/// Connects, registers, and starts serving.
pub(crate) async fn start(opts: Options) -> Result<Parts, StartError> {
    let timeout = Duration::from_secs(10);
    let (gcs, _) = GcsClient::connect(&opts.gcs_address, &opts.security, timeout).await.map_err(|e| StartError::Gcs(e.to_string()))?;
    let job_id = match (&opts.mode, &opts.job_id) {
        (Mode::Worker, Some(j)) => j.clone(),
        _ => register_job(&opts, timeout).await?,
    };
    // Bound first, so the raylet can hand our address to owners; served once built.
    let listener = rpc::bind(SocketAddr::new(opts.node_ip, 0)).await.map_err(|e| StartError::Server(e.to_string()))?;
    let local = listener.local_addr().map_err(|e| StartError::Server(e.to_string()))?;
    let address = match local.ip() {
        IpAddr::V6(v6) => format!("[{v6}]:{}", local.port()),
        IpAddr::V4(v4) => format!("{v4}:{}", local.port()),
    };
    // TLS problems show before the raylet hears of a worker that would never serve.
    let mut builder = opts.security.server_builder().map_err(|e| StartError::Server(rpc::error_chain(&e)))?;
    let ch = opts.security.connect(&opts.raylet_address, timeout).await.map_err(|e| StartError::Raylet(e.to_string()))?;
    let raylet = NodeManagerServiceClient::new(ch).max_decoding_message_size(rpc::MAX_MESSAGE_BYTES);
    let reg = RegisterWorkerRequest {
        worker_id: opts.worker_id.to_string(),
        pid: std::process::id(),
        address: address.clone(),
        job_id: job_id.to_string(),
        is_driver: opts.mode == Mode::Driver,
        worker_command: opts.worker_command.clone(),
    };
    let info = raylet
        .clone()
        .register_worker(reg)
        .await
        .map_err(|s| StartError::Raylet(rpc::explain_status(&opts.raylet_address, &s)))?
        .into_inner();
    let node_id = NodeId::parse(&info.node_id).map_err(|e| StartError::Raylet(format!("the raylet answered with {e}")))?;
    let plasma = PlasmaClient::new(raylet.clone(), std::path::Path::new(&info.object_store_path), opts.worker_id.to_string())
        .map_err(|e| StartError::Raylet(format!("cannot map the object store {}: {e}", info.object_store_path)))?;
    let cfg = ray_common::config::RayConfig::from_env().unwrap_or_default();
    let (log_tx, log_rx) = mpsc::unbounded_channel();
    let ctx = Arc::new(Context {
        mode: opts.mode,
        rt: tokio::runtime::Handle::current(),
        worker_id: opts.worker_id.clone(),
        job_id,
        node_id,
        address,
        security: opts.security.clone(),
        gcs,
        raylet,
        raylet_address: opts.raylet_address.clone(),
        ids: IdGen::new(),
        peers: Peers::new(opts.security.clone()),
        max_inflight: cfg.max_tasks_in_flight_per_worker.max(1),
        lease_linger: Duration::from_millis(cfg.worker_lease_linger_ms),
        log_tx,
        line_sink: std::sync::OnceLock::new(),
        task_events: Default::default(),
    });
    tokio::spawn(crate::task_events::flusher(Arc::downgrade(&ctx)));
    let own = Arc::new(Ownership::new(ctx.clone(), plasma));
    let reader = Arc::new(Reader::new(ctx.clone(), own.clone()));
    let submitter = Submitter::new(ctx.clone(), own.clone());
    reader.set_submitter(&submitter);
    let executor = Arc::new(Executor::default());
    let server = Server { ctx: Arc::downgrade(&ctx), reader: Arc::downgrade(&reader), executor: Arc::downgrade(&executor) };
    let router = builder.add_service(
        CoreWorkerServiceServer::new(server).max_decoding_message_size(rpc::MAX_MESSAGE_BYTES).max_encoding_message_size(rpc::MAX_MESSAGE_BYTES),
    );
    let incoming = rpc::bounded_incoming(listener, 4096);
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(async move {
        if let Err(e) = router.serve_with_incoming_shutdown(incoming, stopped.cancelled_owned()).await {
            tracing::error!(error = %rpc::error_chain(&e), "core worker server failed");
        }
    });
    let actors = crate::actors::Actors::new(submitter.clone());
    Ok(Parts { ctx, own, reader, submitter, executor, actors, log_rx, serving: stop.drop_guard() })
}

/// A driver's job, added to the GCS job table.
async fn register_job(opts: &Options, timeout: Duration) -> Result<JobId, StartError> {
    let job = JobInfo {
        driver_pid: std::process::id(),
        entrypoint: opts.entrypoint.clone(),
        start_time_ms: ray_common::time::now_ms(),
        ..Default::default()
    };
    let ch = opts.security.connect_lazy(&opts.gcs_address, timeout).map_err(|e| StartError::Gcs(e.to_string()))?;
    let reply = JobInfoGcsServiceClient::new(ch)
        .add_job(AddJobRequest { job: Some(job) })
        .await
        .map_err(|s| StartError::Gcs(rpc::explain_status(&opts.gcs_address, &s)))?;
    Ok(JobId::new(reply.into_inner().job_id))
}
