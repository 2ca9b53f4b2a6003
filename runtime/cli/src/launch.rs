//! The cluster launcher's commands, with Ray 2.60's names and flags: `ray up`,
//! `ray down`, `ray exec`, `ray submit`, `ray attach`, `ray get-head-ip`,
//! `ray get-worker-ips`, `ray rsync-up`, `ray rsync-down`. The work is done by the
//! `ray-launcher` crate; this file reads flags and prints.

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow, bail};
use clap::Args;

use crate::args::LogFlags;
use ray_autoscaler::config::ClusterConfig;
use ray_common::session;
use ray_launcher::{Cluster, Progress};

/// `ray up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// The cluster's config YAML.
    pub cluster_config_file: PathBuf,
    /// Override the config's min_workers of the worker node type(s).
    #[arg(long = "min-workers")]
    pub min_workers: Option<u32>,
    /// Override the config's max_workers.
    #[arg(long = "max-workers")]
    pub max_workers: Option<u32>,
    /// Do not restart Ray on an existing head node.
    #[arg(long = "no-restart", conflicts_with = "restart_only")]
    pub no_restart: bool,
    /// Only restart Ray on the head node (changed file mounts are still synced;
    /// setup commands are skipped).
    #[arg(long = "restart-only")]
    pub restart_only: bool,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long = "yes")]
    pub yes: bool,
    /// Override the config's cluster_name.
    #[arg(short = 'n', long = "cluster-name")]
    pub cluster_name: Option<String>,
    /// Accepted for compatibility with Ray: the provider's bootstrap is not cached.
    #[arg(long = "no-config-cache")]
    pub no_config_cache: bool,
    /// Accepted for compatibility with Ray: command output always goes to the node's log.
    #[arg(long = "redirect-command-output")]
    pub redirect_command_output: bool,
    /// Accepted for compatibility with Ray: commands always run in login shells.
    #[arg(long = "use-login-shells", overrides_with = "use_normal_shells")]
    pub use_login_shells: bool,
    /// Accepted for compatibility with Ray.
    #[arg(long = "use-normal-shells", overrides_with = "use_login_shells")]
    pub use_normal_shells: bool,
    /// Accepted for compatibility with Ray; this build collects no usage statistics.
    #[arg(long = "disable-usage-stats")]
    pub disable_usage_stats: bool,
    /// Load, fill in the provider's defaults, validate, and print the resolved
    /// config and what `ray up` would do, without calling the provider or any host.
    #[arg(long = "dry-run")]
    pub dry_run: bool,
    #[command(flatten)]
    pub log: LogFlags,
}

/// `ray down`.
#[derive(Debug, Args)]
pub struct DownArgs {
    /// The cluster's config YAML.
    pub cluster_config_file: PathBuf,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long = "yes")]
    pub yes: bool,
    /// Only destroy the workers.
    #[arg(long = "workers-only")]
    pub workers_only: bool,
    /// Override the config's cluster_name.
    #[arg(short = 'n', long = "cluster-name")]
    pub cluster_name: Option<String>,
    /// Keep min_workers workers of each type.
    #[arg(long = "keep-min-workers")]
    pub keep_min_workers: bool,
    /// Terminate what this machine's provider lists, without asking the head.
    #[arg(long = "from-provider", hide = true)]
    pub from_provider: bool,
    #[command(flatten)]
    pub log: LogFlags,
}

/// Flags `ray exec`, `ray submit` and `ray attach` share.
#[derive(Debug, Args)]
pub struct SessionFlags {
    /// Start (or update) the cluster first, as `ray up --yes` does.
    #[arg(long)]
    pub start: bool,
    /// Run in a detached screen session.
    #[arg(long)]
    pub screen: bool,
    /// Run in a detached tmux session.
    #[arg(long)]
    pub tmux: bool,
    /// Override the config's cluster_name.
    #[arg(short = 'n', long = "cluster-name")]
    pub cluster_name: Option<String>,
    /// Accepted for compatibility with Ray: the provider's bootstrap is not cached.
    #[arg(long = "no-config-cache")]
    pub no_config_cache: bool,
    /// Forward this port from here to the head (repeatable).
    #[arg(short = 'p', long = "port-forward")]
    pub port_forward: Vec<u16>,
    #[command(flatten)]
    pub log: LogFlags,
}

/// `ray exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The cluster's config YAML.
    pub cluster_config_file: PathBuf,
    /// The command to run on the head.
    pub cmd: String,
    /// Accepted for compatibility with Ray (`host`: docker is not supported).
    #[arg(long = "run-env", default_value = "auto")]
    pub run_env: String,
    /// Tear the cluster down (`ray down --yes`) after the command.
    #[arg(long)]
    pub stop: bool,
    /// Accepted for compatibility with Ray; this build collects no usage statistics.
    #[arg(long = "disable-usage-stats")]
    pub disable_usage_stats: bool,
    #[command(flatten)]
    pub session: SessionFlags,
}

/// `ray submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The cluster's config YAML.
    pub cluster_config_file: PathBuf,
    /// The Python script to copy to the head and run there.
    pub script: PathBuf,
    /// Arguments for the script (after `--`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub script_args: Vec<String>,
    /// (deprecated in Ray) arguments for the script as one string.
    #[arg(long = "args")]
    pub args: Option<String>,
    /// Tear the cluster down (`ray down --yes`) after the script.
    #[arg(long)]
    pub stop: bool,
    /// Accepted for compatibility with Ray; this build collects no usage statistics.
    #[arg(long = "disable-usage-stats")]
    pub disable_usage_stats: bool,
    /// Extra arguments for screen.
    #[arg(long = "extra-screen-args")]
    pub extra_screen_args: Option<String>,
    #[command(flatten)]
    pub session: SessionFlags,
}

/// `ray attach`.
#[derive(Debug, Args)]
pub struct AttachArgs {
    /// The cluster's config YAML.
    pub cluster_config_file: PathBuf,
    /// Force a new screen or tmux session.
    #[arg(short = 'N', long = "new")]
    pub new: bool,
    /// Attach to the node at this address instead of the head.
    #[arg(long = "node-ip")]
    pub node_ip: Option<String>,
    #[command(flatten)]
    pub session: SessionFlags,
}

/// `ray get-head-ip` and `ray get-worker-ips`.
#[derive(Debug, Args)]
pub struct IpArgs {
    /// The cluster's config YAML.
    pub cluster_config_file: PathBuf,
    /// Override the config's cluster_name.
    #[arg(short = 'n', long = "cluster-name")]
    pub cluster_name: Option<String>,
    /// List the provider's workers as seen from this machine, without asking the head.
    #[arg(long = "from-provider", hide = true)]
    pub from_provider: bool,
}

/// `ray rsync-up` and `ray rsync-down`.
#[derive(Debug, Args)]
pub struct RsyncArgs {
    /// The cluster's config YAML.
    pub cluster_config_file: PathBuf,
    /// Source path.
    pub source: String,
    /// Target path.
    pub target: String,
    /// Override the config's cluster_name.
    #[arg(short = 'n', long = "cluster-name")]
    pub cluster_name: Option<String>,
    /// rsync-up only: upload to every node (workers and head).
    #[arg(short = 'A', long = "all-nodes")]
    pub all_nodes: bool,
    #[command(flatten)]
    pub log: LogFlags,
}

/// The config with the command line's overrides, and its provider.
pub fn load_cluster(path: &Path, name: Option<&str>, min_workers: Option<u32>, max_workers: Option<u32>) -> Result<Cluster> {
    let loaded = ClusterConfig::load_with_warnings(path)?;
    let mut config = loaded.config;
    for w in loaded.warnings {
        eprintln!("{w}");
    }
    if let Some(n) = name {
        config.cluster_name = n.to_string();
    }
    if let Some(m) = max_workers {
        config.max_workers = m;
    }
    if let Some(m) = min_workers {
        let head = config.head_node_type.clone();
        for t in config.node_types.iter_mut().filter(|t| t.name != head || t.max_workers > 0) {
            t.min_workers = m.min(t.max_workers);
        }
    }
    let root = session::temp_root(None);
    let exe = ray_common::process::current_exe().map_err(|e| anyhow!("cannot find the ray executable: {e}"))?;
    let ctx = ray_providers::ProviderContext {
        cluster_name: config.cluster_name.clone(),
        gcs_address: String::new(),
        temp_root: root.clone(),
        session_name: String::new(),
        ray_executable: exe,
        node_env: Vec::new(),
        auth: ray_launcher::node_plan::auth_json(&config),
        boot_commands: Default::default(),
    };
    let provider = ray_provider_registry::make_provider(&config.provider, ctx).map_err(|e| anyhow!("{}: provider: {e}", path.display()))?;
    Ok(Cluster::new(config, provider, root).with_cached_bootstrap())
}

/// The launcher's runtime.
struct Rt(tokio::runtime::Runtime);

fn runtime() -> Result<Rt> {
    Ok(Rt(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?))
}

impl Rt {
    /// Runs `work` to its end, or until Ctrl-C (SIGINT), which drops it: the ssh
    /// and rsync it started are killed, and with them (their terminal hangs up)
    /// the commands they ran on the nodes.
    fn block_on<T, E: Into<anyhow::Error>>(
        &self,
        work: impl std::future::Future<Output = std::result::Result<T, E>>,
    ) -> Result<T> {
        self.0.block_on(async {
            tokio::select! {
                r = work => r.map_err(Into::into),
                _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted (Ctrl-C); what was under way on the nodes was stopped")),
            }
        })
    }
}

/// `ray up`.
pub fn up(a: UpArgs) -> Result<()> {
    if a.dry_run {
        let cluster = load_cluster(&a.cluster_config_file, a.cluster_name.as_deref(), a.min_workers, a.max_workers)?;
        print!("{}", ray_launcher::dry_run::report(&cluster.config, cluster.provider.name(), cluster.is_local()));
        return Ok(());
    }
    let cluster = load_cluster(&a.cluster_config_file, a.cluster_name.as_deref(), a.min_workers, a.max_workers)?;
    let opts = ray_launcher::up::UpOptions { yes: a.yes, no_restart: a.no_restart, restart_only: a.restart_only };
    let progress = Progress::new();
    progress.say(&format!("Cluster: {} (provider: {})", cluster.config.cluster_name, cluster.provider.name()));
    let out = runtime()?.block_on(ray_launcher::up::up(&cluster, &opts, &progress))?;
    let cluster = cluster.with_cached_bootstrap();
    let cfg = a.cluster_config_file.display();
    let what = match (out.created, out.set_up, out.started) {
        (true, _, _) => "launched and set up",
        (false, true, _) => "updated",
        (false, false, true) => "restarted",
        (false, false, false) => "already up to date",
    };
    progress.say(&format!("Head node {} {what} ({:.1} s).", out.head.address(), progress.elapsed_s()));
    println!();
    println!("Useful commands:");
    println!("  Follow the autoscaler:   ray monitor {cfg}");
    println!("  Run a script there:      ray submit {cfg} script.py");
    println!("  Open a shell on the head: ray attach {cfg}");
    if let ray_launcher::Head::Instance(_) = &out.head {
        let key = cluster.auth.private_key.as_ref().map(|k| format!("-i {} ", k.display())).unwrap_or_default();
        let user = if cluster.auth.user.is_empty() { String::new() } else { format!("{}@", cluster.auth.user) };
        println!("  Or with ssh:              ssh {key}{user}{}", out.head.address());
    }
    println!("  Tear it down:             ray down {cfg}");
    Ok(())
}

/// `ray down`.
pub fn down(a: DownArgs) -> Result<()> {
    let cluster = load_cluster(
        &a.cluster_config_file,
        a.cluster_name.as_deref(),
        None,
        None,
    )?;
    let opts = ray_launcher::down::DownOptions {
        yes: a.yes,
        workers_only: a.workers_only,
        keep_min_workers: a.keep_min_workers,
        from_provider: a.from_provider,
    };
    let progress = Progress::new();
    let gone = runtime()?.block_on(ray_launcher::down::down(&cluster, &opts, &progress))?;
    progress.say(&format!("Cluster {} is down ({} node(s) terminated).", cluster.config.cluster_name, gone.len()));
    Ok(())
}

/// Starts the cluster first when `--start` says so.
fn maybe_start(rt: &Rt, cluster: &Cluster, start: bool) -> Result<()> {
    if start {
        let progress = Progress::new();
        let opts = ray_launcher::up::UpOptions { yes: true, no_restart: false, restart_only: false };
        rt.block_on(ray_launcher::up::up(cluster, &opts, &progress))?;
    }
    Ok(())
}

/// Tears the cluster down after an attached command (a detached one does it on
/// the head when it ends).
fn maybe_stop(rt: &Rt, cluster: &Cluster, opts: &ray_launcher::remote::ExecOptions) -> Result<()> {
    if opts.stop && !opts.detached() {
        let opts = ray_launcher::down::DownOptions {
            yes: true,
            ..Default::default()
        };
        rt.block_on(ray_launcher::down::down(cluster, &opts, &Progress::new()))?;
    }
    Ok(())
}

fn exec_options(s: &SessionFlags, stop: bool) -> ray_launcher::remote::ExecOptions {
    ray_launcher::remote::ExecOptions {
        tmux: s.tmux,
        screen: s.screen,
        port_forward: s.port_forward.clone(),
        stop,
    }
}

/// `ray exec`; returns the remote command's exit code.
pub fn exec(a: ExecArgs) -> Result<i32> {
    let cluster = load_cluster(&a.cluster_config_file, a.session.cluster_name.as_deref(), None, None)?;
    let rt = runtime()?;
    maybe_start(&rt, &cluster, a.session.start)?;
    let opts = exec_options(&a.session, a.stop);
    let code = rt.block_on(ray_launcher::remote::exec(&cluster, &a.cmd, &opts))?;
    maybe_stop(&rt, &cluster, &opts)?;
    Ok(code)
}

/// `ray submit`; returns the script's exit code.
pub fn submit(a: SubmitArgs) -> Result<i32> {
    let cluster = load_cluster(
        &a.cluster_config_file,
        a.session.cluster_name.as_deref(),
        None,
        None,
    )?;
    if !a.script_args.is_empty() && a.args.is_some() {
        bail!("ray submit: give the script's arguments after the script or with --args, not both");
    }
    let rt = runtime()?;
    maybe_start(&rt, &cluster, a.session.start)?;
    let opts = exec_options(&a.session, a.stop);
    let code = rt.block_on(ray_launcher::remote::submit(
        &cluster,
        &a.script,
        &a.script_args,
        a.args.as_deref(),
        &opts,
    ))?;
    maybe_stop(&rt, &cluster, &opts)?;
    Ok(code)
}

/// `ray attach`: an interactive shell on the head.
pub fn attach(a: AttachArgs) -> Result<i32> {
    let cluster = load_cluster(&a.cluster_config_file, a.session.cluster_name.as_deref(), None, None)?;
    let rt = runtime()?;
    maybe_start(&rt, &cluster, a.session.start)?;
    let argv = rt.block_on(ray_launcher::remote::attach_command(
        &cluster,
        a.node_ip.as_deref(),
        a.session.tmux,
        a.session.screen,
        a.new,
        &a.session.port_forward,
    ))?;
    let (prog, rest) = argv
        .split_first()
        .ok_or_else(|| anyhow!("no command to attach with"))?;
    let status = std::process::Command::new(prog)
        .args(rest)
        .status()
        .map_err(|e| anyhow!("cannot run {prog}: {e}"))?;
    Ok(status.code().unwrap_or(1))
}

/// `ray get-head-ip`.
pub fn head_ip(a: IpArgs) -> Result<()> {
    let cluster = load_cluster(&a.cluster_config_file, a.cluster_name.as_deref(), None, None)?;
    println!("{}", runtime()?.block_on(ray_launcher::remote::head_ip(&cluster))?);
    Ok(())
}

/// `ray get-worker-ips`.
pub fn worker_ips(a: IpArgs) -> Result<()> {
    let cluster = load_cluster(&a.cluster_config_file, a.cluster_name.as_deref(), None, None)?;
    let rt = runtime()?;
    let ips = if a.from_provider {
        rt.block_on(ray_launcher::remote::provider_worker_ips(&cluster))?
    } else {
        rt.block_on(ray_launcher::remote::worker_ips(&cluster))?
    };
    for ip in ips {
        println!("{ip}");
    }
    Ok(())
}

/// `ray rsync-up` / `ray rsync-down`.
pub fn rsync(a: RsyncArgs, up: bool) -> Result<()> {
    if a.all_nodes && !up {
        bail!("--all-nodes: only rsync-up copies to every node");
    }
    let cluster = load_cluster(&a.cluster_config_file, a.cluster_name.as_deref(), None, None)?;
    runtime()?.block_on(ray_launcher::remote::rsync(&cluster, &a.source, &a.target, up, a.all_nodes))?;
    Ok(())
}

/// `ray monitor CLUSTER.yaml` for a head on another machine: the head's log over SSH.
pub fn monitor_remote(path: &Path, lines: usize, follow: bool) -> Result<()> {
    let cluster = load_cluster(path, None, None, None)?;
    let rt = runtime()?;
    let code = rt.block_on(ray_launcher::remote::exec(&cluster, &ray_launcher::remote::monitor_command(lines, follow), &Default::default()))?;
    if code != 0 {
        bail!("could not read the autoscaler's log on the head (exit code {code})");
    }
    Ok(())
}
