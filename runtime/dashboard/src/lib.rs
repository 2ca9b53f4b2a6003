//! The head's dashboard port (8265 by default): Ray's Jobs REST API, the jobs'
//! supervised driver processes, and a small dashboard page over a JSON API.
//! `ray start --head` runs it as the `dashboard` daemon; every route but the
//! page shell and the login form needs the cluster token.

pub mod api;
pub mod cluster;
pub mod gcs;
pub mod jobs;
pub mod logs;
pub mod packages;
pub mod page;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ray_common::gcs_client::GcsClient;
use ray_common::rpc::Security;
use tokio_util::sync::CancellationToken;

/// The dashboard's default port (Ray's).
pub const DEFAULT_PORT: u16 = 8265;

/// How the dashboard is run.
pub struct Options {
    /// Address to listen on (loopback unless the user opens it).
    pub host: IpAddr,
    /// Port (0: any free one).
    pub port: u16,
    /// When `port` is taken, take a free one instead of failing (the default
    /// port was not asked for explicitly).
    pub port_fallback: bool,
    /// The GCS (host:port).
    pub gcs_address: String,
    /// This head's address (drivers report it).
    pub node_ip: String,
    /// The temp root (`/tmp/ray`).
    pub temp_root: PathBuf,
    /// The session's name (`session_<date>_<pid>`).
    pub session_name: String,
    /// Token and TLS settings.
    pub security: Security,
    /// Written with `{"port", "url"}` once serving.
    pub ready_file: Option<PathBuf>,
    /// Between SIGTERM and SIGKILL when a job is stopped.
    pub job_stop_grace: Duration,
}

/// Why the dashboard could not run.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// The port could not be bound.
    #[error("--dashboard-port: {0}")]
    Bind(#[from] ray_http::HttpError),
    /// The GCS address is unusable.
    #[error("cannot set up a connection to the GCS at {addr}: {error}")]
    Gcs { addr: String, error: String },
    /// The ready file could not be written.
    #[error("cannot write the ready file {path}: {error}")]
    ReadyFile {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// What every handler shares.
pub struct App {
    /// The GCS.
    pub gcs: gcs::Gcs,
    /// The jobs.
    pub jobs: jobs::manager::JobManager,
    /// The session's name.
    pub session_name: String,
    /// The token check (for the login form).
    pub auth: ray_common::auth::ServerAuth,
    /// Cancelled when the dashboard shuts down.
    pub shutdown: CancellationToken,
}

/// Runs the dashboard until `shutdown` is cancelled; then stops running jobs
/// and returns.
pub async fn run(opts: Options, shutdown: CancellationToken) -> Result<(), DashboardError> {
    let client = GcsClient::lazy(&opts.gcs_address, &opts.security, Duration::from_secs(5))
        .map_err(|e| DashboardError::Gcs {
            addr: opts.gcs_address.clone(),
            error: e.to_string(),
        })?;
    let gcs = gcs::Gcs::new(client);
    let listener = match ray_http::bind(opts.host, opts.port).await {
        Ok(l) => l,
        Err(ray_http::HttpError::Bind { source, .. })
            if opts.port_fallback && source.kind() == std::io::ErrorKind::AddrInUse =>
        {
            tracing::warn!(
                port = opts.port,
                "the dashboard port is taken; using a free one"
            );
            ray_http::bind(opts.host, 0).await?
        }
        Err(e) => return Err(e.into()),
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(opts.port);
    let url_host = if opts.host.is_unspecified() {
        opts.node_ip.clone()
    } else {
        opts.host.to_string()
    };
    let url = if url_host.contains(':') {
        format!("http://[{url_host}]:{port}")
    } else {
        format!("http://{url_host}:{port}")
    };
    let session_dir = opts.temp_root.join(&opts.session_name);
    let ctx = jobs::JobsContext {
        gcs: gcs.clone(),
        store: jobs::store::JobStore::new(gcs.clone()),
        gcs_address: opts.gcs_address.clone(),
        logs_dir: session_dir.join("logs"),
        packages_dir: opts
            .temp_root
            .join("runtime_resources")
            .join("job_packages"),
        temp_root: opts.temp_root.clone(),
        session_name: opts.session_name.clone(),
        node_ip: opts.node_ip.clone(),
        dashboard_url: url.clone(),
        stop_grace: opts.job_stop_grace,
        job_ended: tokio::sync::Notify::new(),
    };
    let manager = jobs::manager::JobManager::new(ctx);
    let auth = opts.security.auth.server_check();
    let app = Arc::new(App {
        gcs,
        jobs: manager,
        session_name: opts.session_name.clone(),
        auth: auth.clone(),
        shutdown: shutdown.clone(),
    });
    let recovering = app.clone();
    tokio::spawn(async move {
        if let Err(e) = recovering.jobs.recover().await {
            tracing::warn!(error = %e, "cannot check for jobs left over by an earlier dashboard");
        }
    });
    let router = api::routes().merge(page::routes()).with_state(app.clone());
    let router = ray_http::require_token(router, auth, page::OPEN_PATHS);
    let http_stop = CancellationToken::new();
    let server = tokio::spawn(ray_http::serve(listener, router, http_stop.clone()));
    if let Some(path) = &opts.ready_file {
        let body = serde_json::json!({ "port": port, "url": url }).to_string();
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, body)
            .and_then(|_| std::fs::rename(&tmp, path))
            .map_err(|error| DashboardError::ReadyFile {
                path: path.clone(),
                error,
            })?;
    }
    tracing::info!(%url, host = %opts.host, port, "dashboard serving");
    shutdown.cancelled().await;
    tracing::info!("dashboard shutting down; stopping running jobs");
    // Jobs stop while the server finishes its requests; both are bounded.
    http_stop.cancel();
    let (_, served) = tokio::join!(app.jobs.shutdown(), server);
    match served {
        Ok(Err(e)) => tracing::warn!(error = %e, "the HTTP server ended with an error"),
        Err(e) => tracing::warn!(error = %e, "the HTTP server task failed"),
        Ok(Ok(())) => {}
    }
    Ok(())
}
