//! The daemons this binary becomes when started under their own name (argv[0]):
//! `gcs_server`, `raylet`. `ray start` launches them; they read the cluster token
//! from the environment, never from their command line.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;

use clap::Parser;
use ray_common::config::RayConfig;
use ray_common::rpc::Security;
use ray_common::{NodeId, process};
use ray_raylet::detect::{self, ResourceOverrides};
use tokio_util::sync::CancellationToken;

/// Flags of the GCS daemon.
#[derive(Debug, Parser)]
#[command(name = "gcs_server", about = "Ray's Global Control Service (started by `ray start --head`)")]
pub struct GcsArgs {
    #[arg(long, default_value_t = ray_gcs::DEFAULT_PORT)]
    port: u16,
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    #[arg(long = "session-name")]
    session_name: String,
    #[arg(long = "ready-file")]
    ready_file: Option<PathBuf>,
    /// Exit when this process exits.
    #[arg(long = "watch-pid")]
    watch_pid: Option<u32>,
    /// Keep the tables in this redb file, so a restarted GCS finds them
    /// (`RAY_REDIS_ADDRESS`, when set, wins: the tables go to Redis).
    #[arg(long = "storage-path")]
    storage_path: Option<PathBuf>,
    /// Port of the GCS's Prometheus `/metrics` (0 or absent: a free port).
    #[arg(long = "metrics-export-port")]
    metrics_export_port: Option<u16>,
    /// The temp root: the head writes the Prometheus service discovery file there.
    #[arg(long = "temp-root")]
    temp_root: Option<PathBuf>,
}

/// Where the GCS keeps its tables: Redis when `RAY_REDIS_ADDRESS` is set (Ray's
/// GCS fault tolerance), else the redb file given, else memory.
fn gcs_storage(path: Option<PathBuf>) -> ray_gcs::Storage {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let Some(address) = env("RAY_REDIS_ADDRESS") {
        return ray_gcs::Storage::Redis {
            address,
            password: env("RAY_REDIS_PASSWORD"),
            namespace: env("RAY_external_storage_namespace").unwrap_or_else(|| "default".into()),
        };
    }
    match path {
        Some(p) => ray_gcs::Storage::File(p),
        None => ray_gcs::Storage::Memory,
    }
}

/// Flags of the raylet daemon.
#[derive(Debug, Parser)]
#[command(name = "raylet", about = "Ray's per-node daemon (started by `ray start`)")]
pub struct RayletArgs {
    #[arg(long = "node-id")]
    node_id: String,
    #[arg(long = "gcs-address")]
    gcs_address: String,
    #[arg(long = "node-ip-address")]
    node_ip_address: IpAddr,
    #[arg(long, default_value_t = 0)]
    port: u16,
    #[arg(long = "num-cpus", value_parser = crate::args::parse_quantity)]
    num_cpus: Option<f64>,
    #[arg(long = "num-gpus", value_parser = crate::args::parse_quantity)]
    num_gpus: Option<f64>,
    #[arg(long, value_parser = crate::args::parse_bytes)]
    memory: Option<u64>,
    #[arg(long = "object-store-memory", value_parser = crate::args::parse_bytes)]
    object_store_memory: Option<u64>,
    /// Custom resources as JSON.
    #[arg(long, value_parser = crate::args::parse_resources_flag)]
    resources: Option<BTreeMap<String, f64>>,
    /// Labels as JSON.
    #[arg(long, value_parser = crate::args::parse_labels)]
    labels: Option<BTreeMap<String, String>>,
    #[arg(long)]
    head: bool,
    #[arg(long = "session-dir", default_value = "")]
    session_dir: String,
    #[arg(long = "instance-id", default_value = "")]
    instance_id: String,
    #[arg(long = "node-type", default_value = "")]
    node_type: String,
    #[arg(long = "ready-file")]
    ready_file: Option<PathBuf>,
    /// argv (JSON list) that starts a worker when a job gives none.
    #[arg(long = "worker-command")]
    worker_command: Option<String>,
    /// Port of the node's Prometheus `/metrics` (0: a free port).
    #[arg(long = "metrics-export-port", default_value_t = 0)]
    metrics_export_port: u16,
    /// Exit when this process exits.
    #[arg(long = "watch-pid")]
    watch_pid: Option<u32>,
}

/// The worker command when none is given: the `python` next to this executable
/// (a venv's bin folder), else `python3` on PATH.
pub fn default_worker_command() -> Vec<String> {
    let python = process::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("python")))
        .filter(|p| process::is_executable(p))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "python3".to_string());
    vec![python, "-m".into(), "ray._private.workers.default_worker".into()]
}

/// Cancels `token` when process `pid` is gone.
fn watch_pid(pid: u32, token: CancellationToken) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            if std::fs::metadata(format!("/proc/{pid}")).is_err() || process::is_zombie(pid) {
                tracing::info!(pid, "the watched process exited; shutting down");
                token.cancel();
                return;
            }
        }
    });
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()
}

/// Runs a daemon's async main on a fresh runtime, with SIGTERM/SIGINT (and, when
/// given, the exit of a watched process) wired to one cancellation token.
fn run_daemon<F, Fut>(watch: Option<u32>, main: F) -> i32
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = i32>,
{
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return 1;
        }
    };
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        cancel_on_signals(shutdown.clone());
        if let Some(pid) = watch {
            watch_pid(pid, shutdown.clone());
        }
        main(shutdown).await
    })
}

/// Cancels `token` on SIGTERM or SIGINT.
pub fn cancel_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
            _ = int.recv() => tracing::info!("SIGINT received; shutting down"),
        }
        token.cancel();
    });
}

fn common_setup(name: &'static str) -> Result<(RayConfig, Security), i32> {
    process::set_process_name(name);
    process::raise_fd_limit();
    ray_common::logging::init(name);
    let config = RayConfig::from_env().map_err(|e| {
        tracing::error!("{e}");
        2
    })?;
    let security = Security::from_env().map_err(|e| {
        tracing::error!("{e}");
        2
    })?;
    if let Some(w) = security.auth.disabled_warning() {
        tracing::warn!("{w}");
    }
    Ok((config, security))
}

/// Runs the GCS until SIGTERM. Returns the exit code.
pub fn gcs_main(args: GcsArgs) -> i32 {
    let (config, security) = match common_setup("gcs_server") {
        Ok(x) => x,
        Err(code) => return code,
    };
    run_daemon(args.watch_pid, |shutdown| async move {
        let (metrics_security, discovery) = (security.clone(), crate::metrics_serve::discovery_files(args.temp_root, &args.session_name));
        let opts = ray_gcs::GcsOptions {
            bind: args.bind,
            port: args.port,
            session_name: args.session_name,
            ready_file: args.ready_file,
            config,
            security,
            storage: gcs_storage(args.storage_path),
        };
        let shutdown_wait = shutdown.clone();
        let running = match ray_gcs::start(opts, shutdown).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("GCS failed to start: {e}");
                return 1;
            }
        };
        let metrics_port = args.metrics_export_port.unwrap_or(0);
        crate::metrics_serve::start_gcs(running.gcs.clone(), args.bind, metrics_port, discovery, &metrics_security, shutdown_wait.clone()).await;
        // Stop serving at once on shutdown; connections still open get half a second.
        let mut done = running.done;
        let result = tokio::select! {
            r = &mut done => r,
            _ = async { shutdown_wait.cancelled().await; tokio::time::sleep(std::time::Duration::from_millis(500)).await } => {
                tracing::info!("GCS stopped (closing remaining connections)");
                return 0;
            }
        };
        match result {
            Ok(Ok(())) => {
                tracing::info!("GCS stopped");
                0
            }
            Ok(Err(e)) => {
                tracing::error!("GCS failed: {e}");
                1
            }
            Err(e) => {
                tracing::error!("GCS task failed: {e}");
                1
            }
        }
    })
}

/// Runs a raylet until SIGTERM, drain-and-terminate, or a fatal error.
pub fn raylet_main(args: RayletArgs) -> i32 {
    let (config, security) = match common_setup("raylet") {
        Ok(x) => x,
        Err(code) => return code,
    };
    let node_id = match NodeId::parse(&args.node_id) {
        Ok(id) => id,
        Err(e) => {
            tracing::error!("--node-id: {e}");
            return 2;
        }
    };
    let overrides = ResourceOverrides {
        num_cpus: args.num_cpus,
        num_gpus: args.num_gpus,
        memory: args.memory,
        object_store_memory: args.object_store_memory,
        custom: args.resources.unwrap_or_default(),
    };
    let detected = detect::detect();
    let mut resources = detect::resolve(&detected, &overrides);
    // Ray's implicit resources: one per node IP, and a marker on the head.
    resources.set(format!("node:{}", args.node_ip_address), ray_common::FixedPoint::from_int(1));
    if args.head {
        resources.set("node:__internal_head__", ray_common::FixedPoint::from_int(1));
    }
    let mut labels: HashMap<String, String> = args.labels.unwrap_or_default().into_iter().collect();
    if let Some(t) = detected.gpus.first().and_then(|g| detect::accelerator_type(&g.name))
        && resources.has_gpu()
    {
        labels.entry("ray.io/accelerator-type".into()).or_insert(t);
    }
    let worker_command = match &args.worker_command {
        Some(j) => match serde_json::from_str::<Vec<String>>(j) {
            Ok(v) if !v.is_empty() => v,
            _ => {
                tracing::error!("--worker-command: expected a JSON list of strings, got {j:?}");
                return 2;
            }
        },
        None => default_worker_command(),
    };
    run_daemon(args.watch_pid, |shutdown| async move {
        let metrics = match ray_http::bind(args.node_ip_address, args.metrics_export_port).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("--metrics-export-port: {e}");
                return 1;
            }
        };
        let (metrics_security, metrics_shutdown) = (security.clone(), shutdown.clone());
        let opts = ray_raylet::RayletOptions {
            node_id,
            gcs_address: args.gcs_address,
            node_ip: args.node_ip_address,
            port: args.port,
            resources,
            labels,
            is_head: args.head,
            session_dir: args.session_dir,
            instance_id: args.instance_id,
            node_type_name: args.node_type,
            ready_file: args.ready_file,
            worker_command,
            metrics_export_port: metrics.local_addr().map(|a| a.port()).unwrap_or(0),
            config,
            security,
        };
        let running = match ray_raylet::start(opts, shutdown).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("raylet failed to start: {e}");
                return 1;
            }
        };
        let collector = ray_raylet::metrics::Collector::new(running.raylet.clone(), args.node_ip_address.to_string());
        crate::metrics_serve::spawn(metrics, std::sync::Arc::new(move || collector.render()), &metrics_security, metrics_shutdown, "raylet");
        match running.wait().await {
            ray_raylet::ExitReason::Requested => {
                tracing::info!("raylet stopped");
                0
            }
            ray_raylet::ExitReason::Fatal(why) => {
                tracing::error!("raylet stopped: {why}");
                1
            }
        }
    })
}

/// Flags of the autoscaler daemon.
#[derive(Debug, Parser)]
#[command(name = "monitor", about = "Ray's autoscaler (started by `ray start --head --autoscaling-config`)")]
pub struct MonitorArgs {
    #[arg(long = "gcs-address")]
    gcs_address: String,
    #[arg(long = "autoscaling-config")]
    autoscaling_config: PathBuf,
    #[arg(long = "session-name")]
    session_name: String,
    #[arg(long = "temp-root")]
    temp_root: PathBuf,
    #[arg(long = "ready-file")]
    ready_file: Option<PathBuf>,
    /// Port of the autoscaler's Prometheus `/metrics` (Ray's AUTOSCALER_METRIC_PORT;
    /// 0: a free port). A port that is taken leaves the autoscaler without one.
    #[arg(long = "metrics-export-port", default_value_t = crate::metrics_serve::AUTOSCALER_METRIC_PORT)]
    metrics_export_port: u16,
}

/// The environment the autoscaler hands to nodes it starts: the cluster token by
/// value, TLS paths and tunables.
pub fn node_env(security: &Security) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = security.child_env().into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    env.extend(RayConfig::env_overrides());
    env
}

/// Runs the autoscaler until SIGTERM.
pub fn monitor_main(args: MonitorArgs) -> i32 {
    let (config, security) = match common_setup("monitor") {
        Ok(x) => x,
        Err(code) => return code,
    };
    let cluster = match ray_autoscaler::config::ClusterConfig::load(&args.autoscaling_config) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return 2;
        }
    };
    let exe = match process::current_exe() {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("cannot find the ray executable: {e}");
            return 1;
        }
    };
    let ctx = ray_providers::ProviderContext {
        cluster_name: cluster.cluster_name.clone(),
        gcs_address: args.gcs_address.clone(),
        temp_root: args.temp_root.clone(),
        session_name: args.session_name.clone(),
        ray_executable: exe,
        node_env: node_env(&security),
        auth: ray_launcher::node_plan::auth_json(&cluster),
        boot_commands: ray_launcher::node_plan::boot_commands(&cluster),
    };
    let provider = match ray_provider_registry::make_provider(&cluster.provider, ctx) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("provider: {e}");
            return 2;
        }
    };
    run_daemon(None, |shutdown| async move {
        let gcs = match ray_common::gcs_client::GcsClient::connect(&args.gcs_address, &security, config.gcs_connect_timeout()).await {
            Ok((g, _)) => g,
            Err(e) => {
                tracing::error!("{e}");
                return 1;
            }
        };
        tracing::info!(
            cluster = %cluster.cluster_name,
            provider = provider.name(),
            config = %args.autoscaling_config.display(),
            node_types = %cluster.node_types.iter().map(|t| format!("{}({} min {} max {})", t.name, t.resources, t.min_workers, t.max_workers)).collect::<Vec<_>>().join(", "),
            max_workers = cluster.max_workers,
            idle_timeout_minutes = cluster.idle_timeout_minutes,
            upscaling_speed = cluster.upscaling_speed,
            "Monitor: Started"
        );
        // The endpoint goes on the head's address, as Ray's (the GCS's host).
        let metrics = std::sync::Arc::new(ray_autoscaler::metrics::AutoscalerMetrics::new(args.session_name.clone()));
        match args.gcs_address.rsplit_once(':').map(|(h, _)| h.trim_matches(['[', ']']).parse::<IpAddr>()) {
            Some(Ok(ip)) => {
                crate::metrics_serve::start_monitor(metrics.clone(), &gcs, ip, args.metrics_export_port, &security, shutdown.clone()).await
            }
            _ => tracing::warn!(gcs = %args.gcs_address, "no /metrics endpoint: the GCS address has no IP to serve on"),
        }
        if let Some(path) = &args.ready_file {
            let tmp = path.with_extension("tmp");
            if let Err(e) = std::fs::write(&tmp, "{}").and_then(|_| std::fs::rename(&tmp, path)) {
                tracing::error!("cannot write the ready file: {e}");
                return 1;
            }
        }
        let storage = std::sync::Arc::new(ray_autoscaler::instance::store::GcsInstanceStorage::new(gcs.clone()));
        let gcs_cluster = std::sync::Arc::new(ray_autoscaler::cluster::GcsCluster::new(gcs));
        // Workers of providers that do not start Ray themselves are set up over
        // SSH by the launcher's updater, joining the head at the GCS's address.
        let head_ip = args.gcs_address.rsplit_once(':').map(|(h, _)| h.trim_matches(['[', ']'])).unwrap_or_default().to_string();
        let log_dir = args.temp_root.join(&args.session_name).join("logs");
        let setup = std::sync::Arc::new(ray_launcher::worker_setup::WorkerSetup::new(
            cluster.clone(),
            provider.clone(),
            head_ip.clone(),
            log_dir.clone(),
        ));
        let (updates, rx) = tokio::sync::mpsc::unbounded_channel();
        let watch = ConfigWatch {
            path: args.autoscaling_config.clone(),
            provider: provider.clone(),
            head_ip,
            log_dir,
        };
        tokio::spawn(watch.run(updates, shutdown.clone()));
        ray_autoscaler::Autoscaler::new(cluster, gcs_cluster, provider, storage)
            .with_setup(setup)
            .with_config_updates(rx)
            .with_metrics(metrics)
            .run(shutdown)
            .await;
        0
    })
}

/// Watches the autoscaling config file, as Ray's autoscaler re-reads it: each
/// change that loads goes to the autoscaler (with a node set-up for it); one
/// that does not is logged, and the running config kept.
struct ConfigWatch {
    path: PathBuf,
    provider: std::sync::Arc<dyn ray_providers::NodeProvider>,
    head_ip: String,
    log_dir: PathBuf,
}

impl ConfigWatch {
    async fn run(
        self,
        updates: tokio::sync::mpsc::UnboundedSender<ray_autoscaler::Reconfigure>,
        shutdown: CancellationToken,
    ) {
        let mut last = std::fs::read(&self.path).ok();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                _ = shutdown.cancelled() => return,
            }
            let now = std::fs::read(&self.path).ok();
            if now.is_none() || now == last {
                continue;
            }
            last = now;
            match ray_autoscaler::config::ClusterConfig::load(&self.path) {
                Ok(config) => {
                    let setup = ray_launcher::worker_setup::WorkerSetup::new(
                        config.clone(),
                        self.provider.clone(),
                        self.head_ip.clone(),
                        self.log_dir.clone(),
                    );
                    let update = ray_autoscaler::Reconfigure {
                        config,
                        setup: Some(std::sync::Arc::new(setup)),
                    };
                    if updates.send(update).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::error!(config = %self.path.display(), "the cluster config changed but does not load; keeping the running one: {e}")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ray_common::raylet_command::RayletCommand;

    /// The one builder of raylet command lines and the raylet's parser agree on
    /// every flag.
    #[test]
    fn the_raylet_parses_every_flag_the_command_builder_writes() {
        let id = NodeId::random();
        let mut c = RayletCommand::new(id.clone(), "10.0.0.1:6379", "10.0.0.2".parse().unwrap(), "/tmp/ray/session_x");
        c.port = 7000;
        c.num_cpus = Some(2.5);
        c.num_gpus = Some(1.0);
        c.memory = Some(1 << 30);
        c.object_store_memory = Some(1 << 28);
        c.resources.insert("TPU".into(), 4.0);
        c.labels.insert("zone".into(), "a".into());
        c.head = true;
        c.instance_id = Some("fake-1".into());
        c.node_type = Some("small".into());
        c.ready_file = Some("/tmp/r.json".into());
        c.watch_pid = Some(42);
        c.metrics_export_port = Some(8080);
        let a = RayletArgs::try_parse_from(std::iter::once("raylet".to_string()).chain(c.args())).expect("parses");
        assert_eq!(a.node_id, id.to_string());
        assert_eq!(a.gcs_address, "10.0.0.1:6379");
        assert_eq!(a.node_ip_address.to_string(), "10.0.0.2");
        assert_eq!(a.port, 7000);
        assert_eq!((a.num_cpus, a.num_gpus), (Some(2.5), Some(1.0)));
        assert_eq!((a.memory, a.object_store_memory), (Some(1 << 30), Some(1 << 28)));
        assert_eq!(a.resources.unwrap().get("TPU"), Some(&4.0));
        assert_eq!(a.labels.unwrap().get("zone").map(String::as_str), Some("a"));
        assert!(a.head);
        assert_eq!((a.session_dir.as_str(), a.instance_id.as_str(), a.node_type.as_str()), ("/tmp/ray/session_x", "fake-1", "small"));
        assert_eq!(a.ready_file, Some(PathBuf::from("/tmp/r.json")));
        assert_eq!(a.watch_pid, Some(42));
        assert_eq!(a.metrics_export_port, 8080);
    }
}
