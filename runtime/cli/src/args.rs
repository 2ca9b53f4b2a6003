//! Command-line flags, named as Ray names them.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};

// `ray start`'s flags and the value parsers live in files of their own.
#[path = "flag_values.rs"]
mod flag_values;
#[path = "start_args.rs"]
mod start_args;
pub use flag_values::*;
pub use start_args::*;

/// The `ray` command.
#[derive(Debug, Parser)]
#[command(name = "ray", version, about = "Start, stop and inspect a Ray cluster", disable_help_subcommand = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start Ray processes on this machine (a head node, or a node joining a cluster).
    Start(StartArgs),
    /// Stop every Ray process that `ray start` launched on this machine.
    Stop(StopArgs),
    /// Print the cluster's nodes, resource usage and pending demand.
    Status(StatusArgs),
    /// List cluster state (Ray's state CLI): actors, nodes, jobs or placement groups.
    List(ListArgs),
    /// Summarize cluster state (Ray's state CLI): actors.
    Summary(SummaryArgs),
    /// Follow the autoscaler's log (monitor.log) of the cluster on this machine.
    Monitor(MonitorCmdArgs),
    /// Submit jobs to the cluster's dashboard and follow them (Ray's Jobs CLI).
    Job(crate::job_cmd::JobArgs),
    /// Prometheus for the cluster on this machine (`ray metrics launch-prometheus`).
    Metrics(crate::prometheus::MetricsArgs),
    /// What the autoscaler would launch for a demand, its hourly cost and the
    /// lower bound no plan can beat, and what stays unplaced and why.
    Plan(crate::plan_cmd::PlanArgs),
    /// Print the cluster token, or create one with --generate.
    #[command(name = "get-auth-token")]
    GetAuthToken(GetAuthTokenArgs),
    /// Create or update a cluster from its config YAML: the head node, set up and
    /// running the autoscaler, which then launches the workers.
    Up(crate::launch::UpArgs),
    /// Tear a cluster down: every node of its provider carrying its tags.
    Down(crate::launch::DownArgs),
    /// Run a command on the cluster's head node.
    Exec(crate::launch::ExecArgs),
    /// Copy a Python script to the head node and run it there.
    Submit(crate::launch::SubmitArgs),
    /// Open a shell on the head node.
    Attach(crate::launch::AttachArgs),
    /// Print the head node's address.
    #[command(name = "get-head-ip", alias = "get_head_ip")]
    GetHeadIp(crate::launch::IpArgs),
    /// Print the worker nodes' addresses.
    #[command(name = "get-worker-ips", alias = "get_worker_ips")]
    GetWorkerIps(crate::launch::IpArgs),
    /// Copy files from here to the head node (or every node with --all-nodes).
    #[command(name = "rsync-up", alias = "rsync_up")]
    RsyncUp(crate::launch::RsyncArgs),
    /// Copy files from the head node to here.
    #[command(name = "rsync-down", alias = "rsync_down")]
    RsyncDown(crate::launch::RsyncArgs),
}

/// Flags of `ray stop` (Ray 2.60's, plus --temp-dir).
#[derive(Debug, Args)]
#[command(args_override_self = true)]
pub struct StopArgs {
    /// Kill with SIGKILL at once instead of asking processes to exit.
    #[arg(short, long, action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_value = "false",
          default_missing_value = "true", hide_default_value = true, value_name = "BOOL", value_parser = parse_click_bool)]
    pub force: bool,
    /// Seconds to wait for processes to exit before killing them.
    #[arg(short = 'g', long = "grace-period", default_value_t = 16)]
    pub grace_period: u64,
    /// Root folder of session files (default: /tmp/ray, or $RAY_TMPDIR/ray).
    #[arg(long = "temp-dir", value_parser = parse_path)]
    pub temp_dir: Option<PathBuf>,
    /// `--log-style`, `--log-color`, `-v` (each process signalled).
    #[command(flatten)]
    pub log: LogFlags,
}

/// Flags of `ray status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// GCS address as HOST:PORT, or "auto" for the cluster started on this machine.
    #[arg(long, default_value = "auto")]
    pub address: String,
    /// Also list every node with its resources.
    #[arg(short, long)]
    pub verbose: bool,
    /// Root folder of session files, to resolve "auto".
    #[arg(long = "temp-dir")]
    pub temp_dir: Option<PathBuf>,
}

/// What `ray list` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StateResource {
    /// Actors, live and dead.
    Actors,
    /// Nodes, live and dead.
    Nodes,
    /// Jobs (drivers).
    Jobs,
    /// Tasks (the latest, as their owners report them).
    Tasks,
    /// Placement groups.
    #[value(name = "placement-groups")]
    PlacementGroups,
}

/// Output format of the state CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StateFormat {
    /// Ray's table.
    Table,
    /// A JSON list.
    Json,
    /// A YAML list.
    Yaml,
}

/// Flags of `ray list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// What to list.
    pub resource: StateResource,
    /// GCS address as HOST:PORT, or "auto" for the cluster started on this machine.
    #[arg(long, default_value = "auto")]
    pub address: String,
    /// `key=value` (or `key!=value`) conditions on the listed fields.
    #[arg(short, long = "filter")]
    pub filter: Vec<String>,
    /// At most this many rows.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Every field, not only the main ones.
    #[arg(long)]
    pub detail: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: StateFormat,
    /// Root folder of session files, to resolve "auto".
    #[arg(long = "temp-dir")]
    pub temp_dir: Option<PathBuf>,
}

/// What `ray summary` summarizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SummaryResource {
    /// Actors by class and state.
    Actors,
    /// Tasks by function and state.
    Tasks,
}

/// Flags of `ray summary`.
#[derive(Debug, Args)]
pub struct SummaryArgs {
    /// What to summarize.
    pub resource: SummaryResource,
    /// GCS address as HOST:PORT, or "auto" for the cluster started on this machine.
    #[arg(long, default_value = "auto")]
    pub address: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: StateFormat,
    /// Root folder of session files, to resolve "auto".
    #[arg(long = "temp-dir")]
    pub temp_dir: Option<PathBuf>,
}

/// Flags of `ray monitor`.
#[derive(Debug, Args)]
pub struct MonitorCmdArgs {
    /// The cluster's config YAML (optional for the cluster started on this machine).
    pub cluster_config_file: Option<PathBuf>,
    /// Lines of history to show first.
    #[arg(long, default_value_t = 100)]
    pub lines: usize,
    /// Root folder of session files (default: /tmp/ray, or $RAY_TMPDIR/ray).
    #[arg(long = "temp-dir")]
    pub temp_dir: Option<PathBuf>,
    /// Print the history and exit instead of following.
    #[arg(long = "no-follow", hide = true)]
    pub no_follow: bool,
}

/// Flags of `ray get-auth-token`.
#[derive(Debug, Args)]
pub struct GetAuthTokenArgs {
    /// Create ~/.ray/auth_token when no token exists.
    #[arg(long)]
    pub generate: bool,
}
