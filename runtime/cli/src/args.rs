//! Command-line flags, named as Ray names them.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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
    /// Follow the autoscaler's log (monitor.log) of the cluster on this machine.
    Monitor(MonitorCmdArgs),
    /// Print the cluster token, or create one with --generate.
    #[command(name = "get-auth-token")]
    GetAuthToken(GetAuthTokenArgs),
}

/// Flags of `ray start`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// Start the head node (GCS, raylet, and the autoscaler when --autoscaling-config is given).
    #[arg(long)]
    pub head: bool,
    /// Address of the head's GCS to join, as HOST:PORT (or "auto").
    #[arg(long, conflicts_with = "head")]
    pub address: Option<String>,
    /// Port of the GCS (head only; default 6379); 0 picks a free port.
    #[arg(long)]
    pub port: Option<u16>,
    /// IP address of this node, as other nodes reach it.
    #[arg(long = "node-ip-address")]
    pub node_ip_address: Option<IpAddr>,
    /// Port of the raylet's node manager; 0 picks a free port.
    #[arg(long = "node-manager-port", default_value_t = 0)]
    pub node_manager_port: u16,
    /// Number of CPUs this node offers (default: detected).
    #[arg(long = "num-cpus", value_parser = parse_quantity, allow_negative_numbers = true)]
    pub num_cpus: Option<f64>,
    /// Number of GPUs this node offers (default: detected with nvidia-smi).
    #[arg(long = "num-gpus", value_parser = parse_quantity, allow_negative_numbers = true)]
    pub num_gpus: Option<f64>,
    /// Custom resources as a JSON object, e.g. '{"A": 1}'.
    #[arg(long, value_parser = parse_resources_flag)]
    pub resources: Option<BTreeMap<String, f64>>,
    /// Bytes of memory offered to tasks (default: 70% of available memory less the object store).
    #[arg(long, value_parser = parse_bytes, allow_negative_numbers = true)]
    pub memory: Option<u64>,
    /// Bytes of shared memory for the object store (default: 30% of available memory).
    #[arg(long = "object-store-memory", value_parser = parse_bytes, allow_negative_numbers = true)]
    pub object_store_memory: Option<u64>,
    /// Node labels as "key1=value1,key2=value2" (or a JSON object).
    #[arg(long, value_parser = parse_labels)]
    pub labels: Option<BTreeMap<String, String>>,
    /// Root folder of session files (default: /tmp/ray, or $RAY_TMPDIR/ray).
    #[arg(long = "temp-dir")]
    pub temp_dir: Option<PathBuf>,
    /// Stay in the foreground; stop every started process when one of them exits or on Ctrl-C.
    #[arg(long)]
    pub block: bool,
    /// Cluster config YAML: also start the autoscaler on this head.
    #[arg(long = "autoscaling-config")]
    pub autoscaling_config: Option<PathBuf>,
    /// Accepted for compatibility; this build collects no usage statistics.
    #[arg(long = "disable-usage-stats")]
    pub disable_usage_stats: bool,
    /// For `ray.init()`: write the new cluster's addresses to this JSON file, print
    /// nothing, and do not record the cluster as this machine's current one.
    #[arg(long = "init-local-info", hide = true)]
    pub init_local_info: Option<PathBuf>,
    /// Stop the started processes when this process exits (`ray.init()`'s driver).
    #[arg(long = "watch-pid", hide = true)]
    pub watch_pid: Option<u32>,
}

/// Flags of `ray stop`.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// Kill with SIGKILL at once instead of asking processes to exit.
    #[arg(short, long)]
    pub force: bool,
    /// Seconds to wait for processes to exit before killing them.
    #[arg(short = 'g', long = "grace-period", default_value_t = 16)]
    pub grace_period: u64,
    /// Root folder of session files (default: /tmp/ray, or $RAY_TMPDIR/ray).
    #[arg(long = "temp-dir")]
    pub temp_dir: Option<PathBuf>,
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

/// A non-negative, finite number.
pub fn parse_quantity(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("expected a non-negative number, got {s:?}"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("expected a non-negative number, got {s:?}"));
    }
    Ok(v)
}

/// A byte count: a non-negative integer.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    s.trim().parse::<u64>().map_err(|_| format!("expected a non-negative whole number of bytes, got {s:?}"))
}

/// `--resources`: a JSON object of non-negative numbers, without CPU/GPU/memory
/// (those have flags of their own).
pub fn parse_resources_flag(s: &str) -> Result<BTreeMap<String, f64>, String> {
    let v: serde_json::Value = serde_json::from_str(s)
        .map_err(|e| format!("expected a JSON object such as '{{\"A\": 1}}': {e}"))?;
    let obj = v.as_object().ok_or_else(|| format!("expected a JSON object such as '{{\"A\": 1}}', got {v}"))?;
    let mut out = BTreeMap::new();
    for (k, q) in obj {
        if k.is_empty() {
            return Err("resource names must not be empty".into());
        }
        match k.as_str() {
            "CPU" => return Err("use --num-cpus instead of \"CPU\" in --resources".into()),
            "GPU" => return Err("use --num-gpus instead of \"GPU\" in --resources".into()),
            "memory" => return Err("use --memory instead of \"memory\" in --resources".into()),
            "object_store_memory" => {
                return Err("use --object-store-memory instead of \"object_store_memory\" in --resources".into());
            }
            _ => {}
        }
        let n = q.as_f64().ok_or_else(|| format!("quantity of {k:?} must be a number, got {q}"))?;
        if !n.is_finite() || n < 0.0 {
            return Err(format!("quantity of {k:?} must be a non-negative number, got {q}"));
        }
        out.insert(k.clone(), n);
    }
    Ok(out)
}

/// `--labels`: "k=v,k2=v2" or a JSON object of strings.
pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let t = s.trim();
    if t.starts_with('{') {
        let v: BTreeMap<String, String> =
            serde_json::from_str(t).map_err(|e| format!("expected a JSON object of strings: {e}"))?;
        return Ok(v);
    }
    let mut out = BTreeMap::new();
    for part in t.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("expected key=value pairs separated by commas, got {part:?}"))?;
        let k = k.trim();
        if k.is_empty() {
            return Err(format!("empty label key in {part:?}"));
        }
        if k.starts_with("ray.io/") {
            return Err(format!("label key {k:?} uses the reserved prefix \"ray.io/\""));
        }
        out.insert(k.to_string(), v.trim().to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_flag_accepts_objects_and_names_faults() {
        assert_eq!(parse_resources_flag(r#"{"A": 1, "B": 0.5}"#).unwrap().len(), 2);
        assert!(parse_resources_flag("{bad").unwrap_err().contains("JSON object"));
        assert!(parse_resources_flag("[1]").unwrap_err().contains("JSON object"));
        assert!(parse_resources_flag(r#"{"A": -1}"#).unwrap_err().contains("non-negative"));
        assert!(parse_resources_flag(r#"{"A": "x"}"#).unwrap_err().contains("must be a number"));
        assert!(parse_resources_flag(r#"{"CPU": 1}"#).unwrap_err().contains("--num-cpus"));
    }

    #[test]
    fn quantities_and_labels() {
        assert_eq!(parse_quantity("2").unwrap(), 2.0);
        assert!(parse_quantity("-1").is_err());
        assert!(parse_quantity("two").is_err());
        assert!(parse_bytes("1.5").is_err());
        let l = parse_labels("zone=a, tier = gold").unwrap();
        assert_eq!(l["tier"], "gold");
        assert!(parse_labels("novalue").is_err());
        assert!(parse_labels("ray.io/x=1").is_err());
        assert_eq!(parse_labels(r#"{"a":"b"}"#).unwrap()["a"], "b");
    }
}
