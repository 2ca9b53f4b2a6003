//! `ray start`: a head node (GCS + raylet [+ autoscaler]) or a node joining one.

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use ray_common::NodeId;
use ray_common::config::RayConfig;
use ray_common::gcs_client::{GcsClient, GcsConnectError};
use ray_common::raylet_command::RayletCommand;
use ray_common::rpc::Security;
use ray_common::session::{self, Session};

use crate::address::{detect_node_ip, join_host_port, local_ip_towards, resolve_gcs_address};
use crate::args::{StartArgs, no_effect_line};
use crate::spawn::{Launched, Launcher};

// What each of Ray's flags does here: cross-flag checks, older names, ignored flags.
#[path = "start_flags.rs"]
mod flags;
use flags::Resolved;

// The head's Ray Client server (a Python process).
#[path = "start_client_server.rs"]
mod client_server;

/// How long a daemon may take to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Processes started so far; killed again if a later step fails.
struct Started(Vec<Launched>);

impl Started {
    fn abort(&mut self) {
        while let Some(mut p) = self.0.pop() {
            p.kill();
        }
    }
}

/// Entry point.
pub fn run(mut a: StartArgs) -> Result<()> {
    let resolved = flags::resolve(&mut a)?;
    if let Some(line) = no_effect_line("ray start", &resolved.ignored) {
        eprintln!("{line}");
    }
    if a.head { start_head(a, &resolved) } else { start_worker(a, &resolved) }
}

/// The daemons' environment: token and TLS settings, this process's `RAY_<name>`
/// settings, and `--system-config`'s (which win, as in Ray).
fn child_env(security: &Security, r: &Resolved) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> =
        security.child_env().into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    env.extend(RayConfig::env_overrides());
    env.extend(r.system_env.iter().cloned());
    env
}

/// `-v`: says which process was started and where it logs.
fn note_started(a: &StartArgs, p: &Launched) {
    if a.log.verbose > 0 && a.init_local_info.is_none() {
        println!("Started {} (pid {}), logging to {}", p.name, p.child.id(), p.log.display());
    }
}

/// The raylet's command line for this `ray start`.
#[allow(clippy::too_many_arguments)]
fn raylet_command(a: &StartArgs, r: &Resolved, node_id: NodeId, gcs: &str, ip: IpAddr, head: bool, session: &Session, ready: PathBuf) -> RayletCommand {
    let mut c = RayletCommand::new(node_id, gcs, ip, session.dir());
    c.instance_id = r.launched.instance_id.clone();
    c.node_type = r.launched.node_type.clone();
    c.port = a.node_manager_port;
    c.num_cpus = a.num_cpus;
    c.num_gpus = a.num_gpus;
    c.memory = a.memory;
    c.object_store_memory = a.object_store_memory;
    c.resources = a.resources.clone().unwrap_or_default();
    c.labels = a.labels.clone().unwrap_or_default();
    c.head = head;
    c.watch_pid = a.watch_pid;
    c.metrics_export_port = a.metrics_export_port;
    c.ready_file = Some(ready);
    c
}

/// Refuses a port that a running cluster or another program holds, with a message
/// that names which.
fn check_port_free(ip: IpAddr, port: u16, security: &Security, rt: &tokio::runtime::Runtime) -> Result<()> {
    if port == 0 {
        return Ok(());
    }
    let addr = SocketAddr::new(ip, port);
    match TcpListener::bind(addr) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let target = join_host_port(ip, port);
            let probe = rt.block_on(GcsClient::connect(&target, security, Duration::from_secs(2)));
            match probe {
                Ok((_, info)) => bail!(
                    "Ray is trying to start at {target}, but is already running at {target} (session {}). \
                     Please specify a different port using the `--port` flag of `ray start`, or stop the running \
                     cluster with `ray stop`.",
                    info.session_name
                ),
                Err(GcsConnectError::Call(m)) if m.contains("token") => bail!(
                    "Ray is trying to start at {target}, but a Ray cluster with a different cluster token is already \
                     running there. Please specify a different port using the `--port` flag."
                ),
                Err(_) => bail!("--port {port}: {target} is already in use by another program"),
            }
        }
        Err(e) => bail!("--node-ip-address {ip}: cannot listen on {addr}: {e}"),
    }
}

/// Reads and checks the cluster config before anything starts.
fn load_autoscaling_config(path: &std::path::Path) -> Result<ray_autoscaler::config::ClusterConfig> {
    let cfg = ray_autoscaler::config::ClusterConfig::load(path).map_err(|e| anyhow!("--autoscaling-config: {e}"))?;
    // Build the provider once with a throw-away context: its own settings are checked now.
    let ctx = ray_providers::ProviderContext {
        cluster_name: cfg.cluster_name.clone(),
        gcs_address: "127.0.0.1:1".into(),
        temp_root: std::env::temp_dir(),
        session_name: "check".into(),
        ray_executable: std::path::PathBuf::from("ray"),
        node_env: Vec::new(),
        auth: ray_launcher::node_plan::auth_json(&cfg),
        boot_commands: Default::default(),
    };
    ray_provider_registry::make_provider(&cfg.provider, ctx).map_err(|e| anyhow!("--autoscaling-config {}: provider: {e}", path.display()))?;
    Ok(cfg)
}

fn start_head(a: StartArgs, r: &Resolved) -> Result<()> {
    let t0 = Instant::now();
    let autoscaling = match &a.autoscaling_config {
        Some(p) => Some((std::path::absolute(p)?, load_autoscaling_config(p)?)),
        None => None,
    };
    crate::start_dashboard::check_flags(&a)?;
    let (security, created) = Security::from_env_or_create_token()?;
    if let Some(path) = created {
        eprintln!("Generated a new cluster token and saved it to {} (mode 0600).", path.display());
    }
    if let Some(w) = security.auth.disabled_warning() {
        eprintln!("{w}");
    }
    let ip = a.node_ip_address.unwrap_or_else(detect_node_ip);
    let port = a.port.unwrap_or(ray_gcs::DEFAULT_PORT);
    let root = session::temp_root(a.temp_dir.as_deref());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    check_port_free(ip, port, &security, &rt)?;

    let session = Session::create(&root, &session::new_session_name())?;
    let launcher = Launcher { session: &session, env: child_env(&security, r) };
    if a.init_local_info.is_none() {
        println!("Local node IP: {ip}");
    }
    if let Err(e) = crate::prometheus::write_config(&session) {
        eprintln!("warning: cannot write the Prometheus config of this session: {e:#}");
    }
    let mut started = Started(Vec::new());
    let mut raylet_info = (String::new(), String::new());
    let mut dashboard_url: Option<String> = None;
    let result = (|| -> Result<String> {
        let ready = launcher.ready_file("gcs");
        let args = vec![
            "--port".to_string(),
            port.to_string(),
            "--bind".into(),
            ip.to_string(),
            "--session-name".into(),
            session.name().to_string(),
            "--ready-file".into(),
            ready.display().to_string(),
            // Its /metrics on a free port, listed in the service discovery
            // file it writes under the temp root.
            "--metrics-export-port".into(),
            "0".into(),
            "--temp-root".into(),
            session.root().display().to_string(),
        ];
        let mut args = args;
        if let Some(pid) = a.watch_pid {
            args.extend(["--watch-pid".into(), pid.to_string()]);
        }
        // `ray start --head`: the tables live in a redb file in the session (or
        // in Redis with RAY_REDIS_ADDRESS), and a supervisor starts the GCS
        // again when it dies. A private `ray.init()` cluster lives and dies with
        // its driver, as Ray's does: memory only, no supervisor.
        let gcs = if a.init_local_info.is_some() {
            launcher.spawn("gcs_server", "gcs_server", "out", &args)?
        } else {
            args.extend(["--storage-path".into(), session.dir().join("gcs").join("tables.redb").display().to_string()]);
            let mut sup = vec![
                "--temp-root".to_string(),
                session.root().display().to_string(),
                "--session-name".into(),
                session.name().to_string(),
                "--".into(),
            ];
            sup.extend(args);
            launcher.spawn("gcs_supervisor", "gcs_server", "out", &sup)?
        };
        note_started(&a, &gcs);
        started.0.push(gcs);
        let info = started.0.last_mut().map(|g| g.wait_ready(&ready, READY_TIMEOUT)).transpose()?.unwrap_or_default();
        let gcs_port = info["port"].as_u64().and_then(|p| u16::try_from(p).ok()).ok_or_else(|| anyhow!("the GCS did not report its port"))?;
        let gcs_addr = join_host_port(ip, gcs_port);
        tracing::debug!(elapsed = ?t0.elapsed(), "GCS ready");

        let node_id = NodeId::random();
        let ready = launcher.ready_file("raylet");
        let mut command = raylet_command(&a, r, node_id, &gcs_addr, ip, true, &session, ready.clone());
        if let Some((_, cfg)) = &autoscaling {
            command.node_type = Some(cfg.head_node_type.clone());
        }
        let raylet = launcher.spawn("raylet", "raylet", "out", &command.args())?;
        note_started(&a, &raylet);
        started.0.push(raylet);
        let info = started.0.last_mut().map(|r| r.wait_ready(&ready, READY_TIMEOUT)).transpose()?.unwrap_or_default();
        raylet_info = (
            info["node_id"].as_str().unwrap_or_default().to_string(),
            join_host_port(ip, info["port"].as_u64().unwrap_or(0) as u16),
        );

        // `--no-monitor`: the config types this head, but the autoscaler runs elsewhere.
        if let Some((path, _)) = autoscaling.as_ref().filter(|_| !a.no_monitor) {
            // The session keeps a copy of the config it started with; the
            // autoscaler watches the file itself, as Ray's re-reads it: an edit
            // that loads (`ray up --no-restart`) takes effect without a restart.
            let copy = session.dir().join("autoscaling_config.yaml");
            std::fs::copy(path, &copy).with_context(|| format!("cannot copy {}", path.display()))?;
            let ready = launcher.ready_file("monitor");
            let args = vec![
                "--gcs-address".to_string(),
                gcs_addr.clone(),
                "--autoscaling-config".into(),
                path.display().to_string(),
                "--session-name".into(),
                session.name().to_string(),
                "--temp-root".into(),
                session.root().display().to_string(),
                "--ready-file".into(),
                ready.display().to_string(),
                "--metrics-export-port".into(),
                crate::prometheus::autoscaler_metric_port()?.to_string(),
            ];
            let monitor = launcher.spawn("monitor", "monitor", "log", &args)?;
            note_started(&a, &monitor);
            started.0.push(monitor);
            started.0.last_mut().map(|m| m.wait_ready(&ready, READY_TIMEOUT)).transpose()?;
        }
        // The dashboard (Jobs API and page); a private `ray.init()` cluster has none.
        if crate::start_dashboard::wanted(&a) {
            let (dashboard, url) = crate::start_dashboard::start(&launcher, &a, ip, &gcs_addr)?;
            note_started(&a, &dashboard);
            started.0.push(dashboard);
            dashboard_url = Some(url);
        }
        Ok(gcs_addr)
    })();
    let gcs_addr = match result {
        Ok(a) => a,
        Err(e) => {
            started.abort();
            return Err(e);
        }
    };
    if let Some(path) = &a.init_local_info {
        // `ray.init()`: a private cluster; tell the caller where it is and go.
        let body = serde_json::json!({
            "gcs_address": gcs_addr,
            "raylet_address": raylet_info.1,
            "node_id": raylet_info.0,
            "session_dir": session.dir().display().to_string(),
            "pids": started.0.iter().map(|p| p.child.id()).collect::<Vec<u32>>(),
        });
        std::fs::write(path, body.to_string()).with_context(|| format!("cannot write {}", path.display()))?;
        return Ok(());
    }
    let client_url = client_server::start(&launcher, ip, a.ray_client_server_port, &gcs_addr).map(|(p, url)| {
        note_started(&a, &p);
        started.0.push(p);
        url
    });
    if let Some(old) = session::read_current_cluster(&root)
        && old != gcs_addr
    {
        println!("Overwriting previous Ray address ({old}). `ray.init(address=\"auto\")` on this node will now connect to the new instance at {gcs_addr}.");
    }
    session::write_current_cluster(&root, &gcs_addr)?;
    match &dashboard_url {
        Some(url) => crate::start_dashboard::record(&root, url)?,
        None => crate::start_dashboard::clear(&root),
    }

    println!();
    println!("--------------------");
    println!("Ray runtime started.");
    println!("--------------------");
    println!();
    if let Some(url) = &dashboard_url {
        println!("View the Ray dashboard at {url}");
        println!();
    }
    println!("Next steps");
    println!("  To add another node to this Ray cluster, run");
    println!("    ray start --address='{gcs_addr}'");
    println!();
    println!("  To connect to this Ray cluster:");
    println!("    import ray");
    println!("    ray.init()");
    println!();
    if let Some(url) = &client_url {
        println!("  To connect to this Ray cluster from another machine (Ray Client):");
        println!("    ray.init(\"{url}\")");
        println!();
    }
    println!("  To terminate the Ray runtime, run");
    println!("    ray stop");
    println!();
    println!("  To view the status of the cluster, use");
    println!("    ray status");
    println!();
    if let Some(url) = &dashboard_url {
        println!("  To submit a job, use");
        println!("    ray job submit --address {url} --working-dir . -- python script.py");
        println!();
    }
    if autoscaling.is_some() && !a.no_monitor {
        println!("  To follow the autoscaler, use");
        println!("    ray monitor");
        println!();
    }
    println!("  Logs: {}", session.logs_dir().display());
    tracing::debug!(elapsed = ?t0.elapsed(), "head started");
    if a.block {
        block(started.0);
    }
    Ok(())
}

fn start_worker(a: StartArgs, r: &Resolved) -> Result<()> {
    let security = Security::from_env()?;
    if let Some(w) = security.auth.disabled_warning() {
        eprintln!("{w}");
    }
    let root = session::temp_root(a.temp_dir.as_deref());
    let gcs_addr = resolve_gcs_address(a.address.as_deref(), &root)?;
    let config = RayConfig::from_env().map_err(|e| anyhow!(e))?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let timeout = config.gcs_connect_timeout().min(Duration::from_secs(10));
    let (_, info) = rt.block_on(GcsClient::connect(&gcs_addr, &security, timeout)).map_err(|e| match e {
        GcsConnectError::Call(m) => anyhow!("cannot join the cluster at {gcs_addr}: {m}"),
        GcsConnectError::Connect(c) => anyhow!(
            "cannot join the cluster at {gcs_addr}: {c}. Check that the head node is running (`ray start --head`) \
             and that --address is right."
        ),
    })?;
    let ip = a.node_ip_address.or_else(|| local_ip_towards(&gcs_addr)).unwrap_or_else(detect_node_ip);
    let session = Session::open(&root, &info.session_name).context("cannot create the session folder")?;
    let launcher = Launcher { session: &session, env: child_env(&security, r) };
    println!("Local node IP: {ip}");
    let node_id = NodeId::random();
    let ready = launcher.ready_file("raylet");
    let command = raylet_command(&a, r, node_id, &gcs_addr, ip, false, &session, ready.clone());
    let raylet = launcher.spawn("raylet", "raylet", "out", &command.args())?;
    note_started(&a, &raylet);
    let mut started = Started(vec![raylet]);
    if let Err(e) = started.0[0].wait_ready(&ready, READY_TIMEOUT) {
        started.abort();
        return Err(e);
    }
    session::write_current_cluster(&root, &gcs_addr)?;
    println!();
    println!("--------------------");
    println!("Ray runtime started.");
    println!("--------------------");
    println!();
    println!("To terminate the Ray runtime, run");
    println!("  ray stop");
    if a.block {
        block(started.0);
    }
    Ok(())
}

/// `--block`: stay up until a signal or until a daemon exits; then stop the rest.
fn block(mut procs: Vec<Launched>) -> ! {
    println!();
    println!("--block");
    println!("  This command will now block forever until terminated by a signal.");
    println!("  Running subprocesses are monitored and a message will be printed if any of them terminate unexpectedly.");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let _ = signal_flag(sig, stop.clone());
    }
    loop {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            // Raylets (and the autoscaler) first, the GCS last, as `ray stop` does.
            while let Some(mut p) = procs.pop() {
                p.terminate(Duration::from_secs(5));
            }
            std::process::exit(0);
        }
        for i in 0..procs.len() {
            if let Ok(Some(status)) = procs[i].child.try_wait() {
                eprintln!("Some Ray subprocesses exited unexpectedly:");
                eprintln!("  {} [exit code={}]", procs[i].name, status.code().unwrap_or(-1));
                eprintln!("{}", crate::spawn::log_tail(&procs[i].log, 20));
                eprintln!("Remaining processes will be killed.");
                let mut gone = procs.remove(i);
                gone.kill();
                while let Some(mut p) = procs.pop() {
                    p.kill();
                }
                std::process::exit(1);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn signal_flag(sig: i32, flag: std::sync::Arc<std::sync::atomic::AtomicBool>) -> std::io::Result<()> {
    use std::sync::OnceLock;
    static FLAG: OnceLock<std::sync::Arc<std::sync::atomic::AtomicBool>> = OnceLock::new();
    let _ = FLAG.set(flag);
    extern "C" fn on_signal(_: i32) {
        if let Some(f) = FLAG.get() {
            f.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    // SAFETY: the handler only performs an atomic store, which is async-signal-safe.
    let rc = unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    if rc == libc::SIG_ERR { Err(std::io::Error::last_os_error()) } else { Ok(()) }
}
