//! Flags of `ray start`: every flag of Ray 2.60's `ray start` (hidden ones too),
//! a few older names Ray's cluster templates still pass, and two internal ones of
//! `ray.init()`. What each does here is decided in `start_flags.rs`.
//!
//! Parsing follows click's, as Ray's CLI does: `--flag value` and `--flag=value`,
//! BOOLEAN options take true/false, yes/no, on/off, 1/0, and a flag given twice
//! keeps its last value.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use clap::{ArgAction, Args, ValueEnum};

use super::flag_values::*;

/// `--log-style`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogStyle {
    /// Pretty on a terminal, record otherwise.
    Auto,
    /// Plain lines.
    Record,
    /// Formatted and coloured.
    Pretty,
}

/// `--log-color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogColor {
    /// Colour on a terminal.
    Auto,
    /// Never.
    False,
    /// Always.
    True,
}

/// Ray's output flags, which `ray start`, `ray stop` and the launcher's commands
/// all take.
#[derive(Debug, Args, Default)]
pub struct LogFlags {
    /// Output style; output here is always plain ("record").
    #[arg(long = "log-style", value_enum, ignore_case = true)]
    pub log_style: Option<LogStyle>,
    /// Colour; output here is never coloured.
    #[arg(long = "log-color", value_enum, ignore_case = true)]
    pub log_color: Option<LogColor>,
    /// Say more about what is done.
    #[arg(short, long, action = ArgAction::Count)]
    pub verbose: u8,
}

impl LogFlags {
    /// What these flags ask for that this build does not do.
    pub fn ignored(&self) -> Vec<Ignored> {
        log_flags_ignored(self.log_style, self.log_color)
    }
}

/// Flags of `ray start`, boxed: there are many of them, and `Command` holds one
/// variant per subcommand.
pub type StartArgs = Box<StartFlags>;

/// Flags of `ray start`.
#[derive(Debug, Args)]
#[command(args_override_self = true)]
pub struct StartFlags {
    /// Start the head node (GCS, raylet, and the autoscaler when --autoscaling-config is given).
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_value = "false",
          default_missing_value = "true", hide_default_value = true, value_name = "BOOL", value_parser = parse_click_bool)]
    pub head: bool,
    /// Address of the head's GCS to join, as HOST:PORT, or "auto" (then $RAY_ADDRESS or the
    /// cluster started on this machine). Without --head and without --address, $RAY_ADDRESS is used.
    #[arg(long)]
    pub address: Option<String>,
    /// Port of the GCS (head only; default 6379); 0 picks a free port.
    #[arg(long, value_parser = parse_port)]
    pub port: Option<u16>,
    /// IP address of this node, as other nodes reach it.
    #[arg(long = "node-ip-address", value_parser = parse_node_ip)]
    pub node_ip_address: Option<IpAddr>,
    /// Name of this node (nodes are named by their IP here; accepted and ignored).
    #[arg(long = "node-name", hide = true)]
    pub node_name: Option<String>,
    /// Username of an external Redis (there is none here; ignored).
    #[arg(long = "redis-username", hide = true)]
    pub redis_username: Option<String>,
    /// Password of an external Redis (there is none here; ignored).
    #[arg(long = "redis-password", hide = true)]
    pub redis_password: Option<String>,
    /// Ports of Redis shards (head only; there is no Redis here; ignored).
    #[arg(long = "redis-shard-ports", hide = true)]
    pub redis_shard_ports: Option<String>,
    /// Port of the object manager (objects move between nodes over the node manager port; ignored).
    #[arg(long = "object-manager-port", value_parser = parse_port)]
    pub object_manager_port: Option<u16>,
    /// Port of the raylet's node manager; 0 picks a free port.
    #[arg(long = "node-manager-port", default_value_t = 0, value_parser = parse_port)]
    pub node_manager_port: u16,
    /// Lowest port workers listen on (1024-65535, or 0; checked, but workers take any free port).
    #[arg(long = "min-worker-port", value_parser = parse_port)]
    pub min_worker_port: Option<u16>,
    /// Highest port workers listen on (needs --min-worker-port; checked, but workers take any free port).
    #[arg(long = "max-worker-port", value_parser = parse_port)]
    pub max_worker_port: Option<u16>,
    /// Comma-separated ports for workers (checked, but workers take any free port).
    #[arg(long = "worker-port-list", value_parser = parse_port_list)]
    pub worker_port_list: Option<PortList>,
    /// Port of the Ray Client server that a head starts for `ray.init("ray://HOST:PORT")` (default 10001; 0: none).
    #[arg(long = "ray-client-server-port", value_parser = parse_port)]
    pub ray_client_server_port: Option<u16>,
    /// Bytes of memory offered to tasks (default: 70% of available memory less the object store).
    #[arg(long, value_parser = parse_bytes, allow_negative_numbers = true)]
    pub memory: Option<u64>,
    /// Bytes of shared memory for the object store (default: 30% of available memory).
    #[arg(long = "object-store-memory", value_parser = parse_bytes, allow_negative_numbers = true)]
    pub object_store_memory: Option<u64>,
    /// Number of CPUs this node offers (default: detected).
    #[arg(long = "num-cpus", value_parser = parse_quantity, allow_negative_numbers = true)]
    pub num_cpus: Option<f64>,
    /// Number of GPUs this node offers (default: detected with nvidia-smi).
    #[arg(long = "num-gpus", value_parser = parse_quantity, allow_negative_numbers = true)]
    pub num_gpus: Option<f64>,
    /// Custom resources as a JSON object, e.g. '{"A": 1}'.
    #[arg(long, value_parser = parse_resources_flag)]
    pub resources: Option<BTreeMap<String, f64>>,
    /// Start the dashboard: the Jobs API and the page (head only; default true).
    #[arg(long = "include-dashboard", value_name = "BOOL", value_parser = parse_click_bool)]
    pub include_dashboard: Option<bool>,
    /// Address the dashboard listens on (default 127.0.0.1; 0.0.0.0 opens it to every network).
    #[arg(long = "dashboard-host")]
    pub dashboard_host: Option<String>,
    /// Port of the dashboard (default 8265, or a free one when 8265 is taken).
    #[arg(long = "dashboard-port", value_parser = parse_port)]
    pub dashboard_port: Option<u16>,
    /// HTTP port of the dashboard agent (no dashboard agent yet; ignored).
    #[arg(long = "dashboard-agent-listen-port", value_parser = parse_port)]
    pub dashboard_agent_listen_port: Option<u16>,
    /// gRPC port of the dashboard agent (no dashboard agent yet; ignored).
    #[arg(long = "dashboard-agent-grpc-port", value_parser = parse_port)]
    pub dashboard_agent_grpc_port: Option<u16>,
    /// Port of the runtime-env agent (none yet; ignored).
    #[arg(long = "runtime-env-agent-port", value_parser = parse_port)]
    pub runtime_env_agent_port: Option<u16>,
    /// Stay in the foreground; stop every started process when one of them exits or on Ctrl-C.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_value = "false",
          default_missing_value = "true", hide_default_value = true, value_name = "BOOL", value_parser = parse_click_bool)]
    pub block: bool,
    /// Folder of the object store's memory-mapped file (it is always in /dev/shm here; ignored).
    #[arg(long = "plasma-directory", value_parser = parse_path)]
    pub plasma_directory: Option<PathBuf>,
    /// Folder objects spill to (no spilling yet; ignored).
    #[arg(long = "object-spilling-directory", value_parser = parse_path)]
    pub object_spilling_directory: Option<PathBuf>,
    /// Cluster config YAML: also start the autoscaler on this head (`~` is the home folder).
    #[arg(long = "autoscaling-config", value_parser = parse_path)]
    pub autoscaling_config: Option<PathBuf>,
    /// Keep daemons' output on this terminal (they always log to the session's files here; ignored).
    #[arg(long = "no-redirect-output", action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", hide_default_value = true, value_name = "BOOL",
          value_parser = parse_click_bool)]
    pub no_redirect_output: bool,
    /// Root folder of session files (default: /tmp/ray, or $RAY_TMPDIR/ray).
    #[arg(long = "temp-dir", value_parser = parse_path)]
    pub temp_dir: Option<PathBuf>,
    /// Settings as a JSON object, e.g. '{"health_check_period_ms": 1000}': each known one is
    /// passed to the started daemons as RAY_<name>; unknown ones are ignored.
    #[arg(long = "system-config", hide = true, value_parser = parse_json_object)]
    pub system_config: Option<serde_json::Map<String, serde_json::Value>>,
    /// Lineage reconstruction of lost objects (always on, bounded by each task's max_retries; ignored).
    #[arg(long = "enable-object-reconstruction", hide = true, action = ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_value = "false", default_missing_value = "true", value_parser = parse_click_bool)]
    pub enable_object_reconstruction: bool,
    /// Port of this node's Prometheus endpoint (`/metrics` of the raylet; default: a free port).
    #[arg(long = "metrics-export-port", value_parser = parse_port)]
    pub metrics_export_port: Option<u16>,
    /// With --autoscaling-config: check the config and tag the head with its node type, but
    /// start no autoscaler (one runs elsewhere).
    #[arg(long = "no-monitor", hide = true, action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = parse_click_bool)]
    pub no_monitor: bool,
    /// Tracing set-up hook (no tracing hooks yet; ignored).
    #[arg(long = "tracing-startup-hook", hide = true)]
    pub tracing_startup_hook: Option<String>,
    /// Let the Ray debugger accept remote connections (no debugger yet; ignored).
    #[arg(long = "ray-debugger-external", action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", hide_default_value = true, value_name = "BOOL",
          value_parser = parse_click_bool)]
    pub ray_debugger_external: bool,
    /// Accepted for compatibility; this build collects no usage statistics.
    #[arg(long = "disable-usage-stats", action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", hide_default_value = true, value_name = "BOOL",
          value_parser = parse_click_bool)]
    pub disable_usage_stats: bool,
    /// Node labels as "key1=value1,key2=value2" (or a JSON object); these win over --labels-file.
    #[arg(long, value_parser = parse_labels)]
    pub labels: Option<BTreeMap<String, String>>,
    /// YAML file of node labels (a mapping of keys to string values).
    #[arg(long = "labels-file", value_parser = parse_path)]
    pub labels_file: Option<PathBuf>,
    /// Run a log monitor on this node (there is none: workers' output goes straight to the driver; ignored).
    #[arg(long = "include-log-monitor", value_name = "BOOL", value_parser = parse_click_bool)]
    pub include_log_monitor: Option<bool>,
    /// Reserve CPU and memory for Ray's own processes with cgroup v2 (not available yet; ignored).
    #[arg(long = "enable-resource-isolation", action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", hide_default_value = true, value_name = "BOOL",
          value_parser = parse_click_bool)]
    pub enable_resource_isolation: bool,
    /// CPU cores reserved for Ray's processes (needs --enable-resource-isolation; ignored).
    #[arg(long = "system-reserved-cpu", value_parser = parse_quantity)]
    pub system_reserved_cpu: Option<f64>,
    /// Bytes of memory reserved for Ray's processes (needs --enable-resource-isolation; ignored).
    #[arg(long = "system-reserved-memory", value_parser = parse_bytes)]
    pub system_reserved_memory: Option<u64>,
    /// Cgroup used for resource isolation (needs --enable-resource-isolation; ignored).
    #[arg(long = "cgroup-path", value_parser = parse_path)]
    pub cgroup_path: Option<PathBuf>,
    /// Server that dashboard requests go to (no dashboard yet; ignored).
    #[arg(long = "proxy-server-url")]
    pub proxy_server_url: Option<String>,
    /// `--log-style`, `--log-color`, `-v` (each process started, with its pid and log file).
    #[command(flatten)]
    pub log: LogFlags,

    // Older names that Ray's earlier releases and cluster templates use.
    /// Ray 1.x's name of --port.
    #[arg(long = "redis-port", hide = true, value_parser = parse_port)]
    pub redis_port: Option<u16>,
    /// The GCS port (as --port).
    #[arg(long = "gcs-server-port", hide = true, value_parser = parse_port)]
    pub gcs_server_port: Option<u16>,
    /// Cluster storage URI (removed from Ray; ignored).
    #[arg(long, hide = true)]
    pub storage: Option<String>,
    /// Redis memory cap (no Redis here; ignored).
    #[arg(long = "redis-max-memory", hide = true, value_parser = parse_bytes)]
    pub redis_max_memory: Option<u64>,
    /// gRPC port of the dashboard (no dashboard yet; ignored).
    #[arg(long = "dashboard-grpc-port", hide = true, value_parser = parse_port)]
    pub dashboard_grpc_port: Option<u16>,
    /// Socket of the object store (daemons talk gRPC over TCP here; ignored).
    #[arg(long = "plasma-store-socket-name", hide = true)]
    pub plasma_store_socket_name: Option<String>,
    /// Socket of the raylet (daemons talk gRPC over TCP here; ignored).
    #[arg(long = "raylet-socket-name", hide = true)]
    pub raylet_socket_name: Option<String>,

    /// For `ray.init()`: write the new cluster's addresses to this JSON file, print
    /// nothing, and do not record the cluster as this machine's current one.
    #[arg(long = "init-local-info", hide = true)]
    pub init_local_info: Option<PathBuf>,
    /// Stop the started processes when this process exits (`ray.init()`'s driver).
    #[arg(long = "watch-pid", hide = true)]
    pub watch_pid: Option<u32>,
}

/// A flag that was given but has no effect in this build, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    /// The flag as the user wrote it (or a part of it, e.g. a --system-config key).
    pub flag: String,
    /// What this build lacks.
    pub reason: &'static str,
}

impl Ignored {
    /// `flag` ignored because of `reason`.
    pub fn new(flag: impl Into<String>, reason: &'static str) -> Self {
        Self { flag: flag.into(), reason }
    }
}

/// The one line that names every ignored flag, grouped by reason, e.g.
/// "ray start: --include-dashboard has no effect in this build (no dashboard yet); ignored".
pub fn no_effect_line(command: &str, ignored: &[Ignored]) -> Option<String> {
    let mut groups: Vec<(&'static str, Vec<&str>)> = Vec::new();
    for i in ignored {
        match groups.iter_mut().find(|(r, _)| *r == i.reason) {
            Some((_, flags)) => flags.push(&i.flag),
            None => groups.push((i.reason, vec![&i.flag])),
        }
    }
    match groups.as_slice() {
        [] => None,
        [(reason, flags)] if flags.len() == 1 => {
            Some(format!("{command}: {} has no effect in this build ({reason}); ignored", flags[0]))
        }
        _ => {
            let parts: Vec<String> = groups.iter().map(|(r, f)| format!("{} ({r})", f.join(", "))).collect();
            Some(format!("{command}: {} have no effect in this build; ignored", parts.join("; ")))
        }
    }
}

/// `--log-style`/`--log-color` ask for formatting this build does not do.
pub fn log_flags_ignored(style: Option<LogStyle>, color: Option<LogColor>) -> Vec<Ignored> {
    let mut out = Vec::new();
    if style == Some(LogStyle::Pretty) {
        out.push(Ignored::new("--log-style=pretty", "output is always plain"));
    }
    if color == Some(LogColor::True) {
        out.push(Ignored::new("--log-color=true", "output is always plain"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_no_effect_line_names_every_flag_once() {
        assert_eq!(no_effect_line("ray start", &[]), None);
        let one = [Ignored::new("--include-dashboard", "no dashboard yet")];
        assert_eq!(
            no_effect_line("ray start", &one).unwrap(),
            "ray start: --include-dashboard has no effect in this build (no dashboard yet); ignored"
        );
        let many = [
            Ignored::new("--include-dashboard", "no dashboard yet"),
            Ignored::new("--object-manager-port", "objects move between nodes over the node manager port"),
            Ignored::new("--dashboard-host", "no dashboard yet"),
        ];
        let line = no_effect_line("ray start", &many).unwrap();
        assert_eq!(
            line,
            "ray start: --include-dashboard, --dashboard-host (no dashboard yet); --object-manager-port (objects \
             move between nodes over the node manager port) have no effect in this build; ignored"
        );
        assert!(!line.contains('\n'));
    }
}
