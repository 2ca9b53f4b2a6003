//! The `dashboard` daemon (this binary under argv[0] `dashboard`), started by
//! `ray start --head`: serves the Jobs API and the dashboard page until SIGTERM,
//! then stops the jobs it runs.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use ray_common::process;
use ray_common::rpc::Security;
use tokio_util::sync::CancellationToken;

/// Flags of the dashboard daemon.
#[derive(Debug, Parser)]
#[command(
    name = "dashboard",
    about = "Ray's dashboard and Jobs API (started by `ray start --head`)"
)]
pub struct DashboardArgs {
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    #[arg(long, default_value_t = ray_dashboard::DEFAULT_PORT)]
    port: u16,
    /// Take a free port when `--port` is taken.
    #[arg(long = "port-fallback")]
    port_fallback: bool,
    #[arg(long = "gcs-address")]
    gcs_address: String,
    #[arg(long = "node-ip-address")]
    node_ip_address: String,
    #[arg(long = "temp-root")]
    temp_root: PathBuf,
    #[arg(long = "session-name")]
    session_name: String,
    #[arg(long = "ready-file")]
    ready_file: Option<PathBuf>,
}

/// Seconds a stopped job's driver gets between SIGTERM and SIGKILL (Ray's
/// variable and default).
fn job_stop_grace() -> Duration {
    let secs = std::env::var("RAY_JOB_STOP_WAIT_TIME_S")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok());
    Duration::from_secs_f64(
        secs.filter(|s| s.is_finite() && *s >= 0.0)
            .unwrap_or(3.0)
            .min(60.0),
    )
}

/// Runs the dashboard until SIGTERM. Returns the exit code.
pub fn main(args: DashboardArgs) -> i32 {
    process::set_process_name("dashboard");
    process::raise_fd_limit();
    ray_common::logging::init("dashboard");
    let security = match Security::from_env() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e}");
            return 2;
        }
    };
    if let Some(w) = security.auth.disabled_warning() {
        tracing::warn!("{w}");
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return 1;
        }
    };
    let opts = ray_dashboard::Options {
        host: args.host,
        port: args.port,
        port_fallback: args.port_fallback,
        gcs_address: args.gcs_address,
        node_ip: args.node_ip_address,
        temp_root: args.temp_root,
        session_name: args.session_name,
        security,
        ready_file: args.ready_file,
        job_stop_grace: job_stop_grace(),
    };
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        crate::daemons::cancel_on_signals(shutdown.clone());
        match ray_dashboard::run(opts, shutdown).await {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!("{e}");
                1
            }
        }
    })
}
