//! What each of Ray's `ray start` flags does in this build: checks that need more
//! than one flag, the older names mapped onto today's, `--labels-file` and
//! `--system-config` read, and the flags this build has no use for collected so
//! that `ray start` can name them in one line.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use ray_common::config::RayConfig;

use crate::args::{Ignored, StartFlags, read_labels_file};

const NO_DASHBOARD: &str = "no dashboard agent or gRPC port: the dashboard serves HTTP only";
const NO_REDIS: &str = "no Redis: the GCS keeps the cluster's state itself";
const NO_SOCKETS: &str = "daemons talk gRPC over TCP, not Unix sockets";

/// What `ray start` needs beyond the flags themselves.
#[derive(Debug, Default)]
pub struct Resolved {
    /// Given flags that change nothing here.
    pub ignored: Vec<Ignored>,
    /// `RAY_<name>` settings from `--system-config`, for every daemon started.
    pub system_env: Vec<(String, String)>,
    /// The instance id and node type a cluster launcher gave (environment).
    pub launched: crate::start_env::LaunchedAs,
}

/// Checks and completes `a` as Ray does before it starts anything: fills in the
/// address from `$RAY_ADDRESS`, maps the GCS port's older names onto `--port`,
/// refuses head-only flags on other nodes and inconsistent port or isolation
/// settings, and merges `--labels-file` under `--labels`.
pub fn resolve(a: &mut StartFlags) -> Result<Resolved> {
    let launched = crate::start_env::apply(a)?;
    if a.head && a.address.is_some() {
        bail!(
            "`--address` cannot be used with `--head`: a head node starts its own GCS (this build uses no external \
             Redis). Use `--port` to choose the GCS port, or drop `--head` to join the cluster at that address."
        );
    }
    if !a.head && a.address.is_none() {
        a.address = std::env::var("RAY_ADDRESS").ok().filter(|s| !s.trim().is_empty());
    }
    if !a.head && a.address.is_none() {
        bail!("`--address` is a required flag unless starting a head node with `--head`.");
    }
    for (flag, port) in [("--redis-port", a.redis_port), ("--gcs-server-port", a.gcs_server_port)] {
        let Some(p) = port else { continue };
        if !a.head {
            bail!("`{flag}` should only be specified when starting head node with `--head`.");
        }
        match a.port {
            Some(q) if q != p => bail!("{flag}={p} conflicts with --port={q}: both set the GCS port"),
            _ => a.port = Some(p),
        }
    }
    if !a.head {
        let head_only = [
            ("--port", a.port.is_some()),
            ("--autoscaling-config", a.autoscaling_config.is_some()),
            ("--include-dashboard", a.include_dashboard.is_some()),
            ("--redis-shard-ports", a.redis_shard_ports.is_some()),
        ];
        if let Some((flag, _)) = head_only.iter().find(|(_, given)| *given) {
            bail!("`{flag}` should only be specified when starting head node with `--head`.");
        }
    }
    check_worker_ports(a)?;
    check_isolation(a)?;
    if let Some(path) = &a.labels_file {
        let mut labels = read_labels_file(path).map_err(|e| anyhow::anyhow!("--labels-file: {e}"))?;
        labels.extend(a.labels.take().unwrap_or_default());
        a.labels = Some(labels);
    }
    let mut out = Resolved { ignored: ignored_flags(a), launched, ..Default::default() };
    if let Some(cfg) = &a.system_config {
        let SystemConfig { env, unknown } = system_config_env(cfg)?;
        out.system_env = env;
        out.ignored.extend(unknown.into_iter().map(|k| Ignored::new(format!("--system-config key {k:?}"), "not a setting of this build")));
    }
    Ok(out)
}

/// Ray's rules for the worker port range and list.
fn check_worker_ports(a: &StartFlags) -> Result<()> {
    if let Some(min) = a.min_worker_port
        && min != 0
        && min < 1024
    {
        bail!("--min-worker-port={min}: expected 0 or a port from 1024 to 65535");
    }
    if let Some(max) = a.max_worker_port {
        let Some(min) = a.min_worker_port else {
            bail!("--max-worker-port needs --min-worker-port as well");
        };
        if max != 0 && max < 1024 {
            bail!("--max-worker-port={max}: expected 0 or a port from 1024 to 65535");
        }
        if max != 0 && max <= min {
            bail!("--max-worker-port={max} must be higher than --min-worker-port={min}");
        }
    }
    Ok(())
}

/// Ray refuses isolation settings without `--enable-resource-isolation`.
fn check_isolation(a: &StartFlags) -> Result<()> {
    if a.enable_resource_isolation {
        return Ok(());
    }
    let given = [
        ("--cgroup-path", a.cgroup_path.is_some()),
        ("--system-reserved-cpu", a.system_reserved_cpu.is_some()),
        ("--system-reserved-memory", a.system_reserved_memory.is_some()),
    ];
    if let Some((flag, _)) = given.iter().find(|(_, g)| *g) {
        bail!("{flag} takes effect only with --enable-resource-isolation; add that flag or drop this one");
    }
    Ok(())
}

/// Every given flag that this build cannot honour, in the order of Ray's help.
fn ignored_flags(a: &StartFlags) -> Vec<Ignored> {
    let worker_ports = "workers listen on any free port";
    let isolation = "no cgroup resource isolation yet";
    let given: &[(&str, bool, &'static str)] = &[
        ("--node-name", a.node_name.is_some(), "nodes are named by their IP address"),
        ("--redis-username", a.redis_username.is_some(), NO_REDIS),
        ("--redis-password", a.redis_password.is_some(), NO_REDIS),
        ("--redis-shard-ports", a.redis_shard_ports.is_some(), NO_REDIS),
        ("--redis-max-memory", a.redis_max_memory.is_some(), NO_REDIS),
        ("--object-manager-port", a.object_manager_port.is_some(), "objects move between nodes over the node manager port"),
        ("--min-worker-port", a.min_worker_port.is_some(), worker_ports),
        ("--max-worker-port", a.max_worker_port.is_some(), worker_ports),
        ("--worker-port-list", a.worker_port_list.is_some(), worker_ports),
        ("--ray-client-server-port", !a.head && a.ray_client_server_port.is_some(), "only a head node runs the Ray Client server"),
        ("--dashboard-host", !a.head && a.dashboard_host.is_some(), "only a head node runs the dashboard"),
        ("--dashboard-port", !a.head && a.dashboard_port.is_some(), "only a head node runs the dashboard"),
        ("--dashboard-grpc-port", a.dashboard_grpc_port.is_some(), NO_DASHBOARD),
        ("--dashboard-agent-listen-port", a.dashboard_agent_listen_port.is_some(), NO_DASHBOARD),
        ("--dashboard-agent-grpc-port", a.dashboard_agent_grpc_port.is_some(), NO_DASHBOARD),
        ("--proxy-server-url", a.proxy_server_url.is_some(), "the dashboard is served directly, not behind a proxy"),
        ("--runtime-env-agent-port", a.runtime_env_agent_port.is_some(), "no runtime-env agent yet"),
        ("--plasma-directory", a.plasma_directory.is_some(), "the object store's file is always in /dev/shm"),
        ("--object-spilling-directory", a.object_spilling_directory.is_some(), "objects do not spill yet"),
        ("--no-redirect-output", a.no_redirect_output, "daemons always log to the session's logs folder"),
        ("--storage", a.storage.is_some(), "no cluster storage (Ray removed it too)"),
        ("--enable-object-reconstruction", a.enable_object_reconstruction, "lineage reconstruction is always on"),
        ("--tracing-startup-hook", a.tracing_startup_hook.is_some(), "no tracing hooks yet"),
        ("--ray-debugger-external", a.ray_debugger_external, "no Ray debugger yet"),
        ("--include-log-monitor", a.include_log_monitor.is_some(), "no log monitor: workers' output goes straight to the driver"),
        ("--enable-resource-isolation", a.enable_resource_isolation, isolation),
        ("--system-reserved-cpu", a.system_reserved_cpu.is_some(), isolation),
        ("--system-reserved-memory", a.system_reserved_memory.is_some(), isolation),
        ("--cgroup-path", a.cgroup_path.is_some(), isolation),
        ("--plasma-store-socket-name", a.plasma_store_socket_name.is_some(), NO_SOCKETS),
        ("--raylet-socket-name", a.raylet_socket_name.is_some(), NO_SOCKETS),
    ];
    let mut out: Vec<Ignored> = given.iter().filter(|(_, g, _)| *g).map(|(f, _, r)| Ignored::new(*f, r)).collect();
    out.extend(a.log.ignored());
    out
}

/// This build's settings and their defaults, by name (from `RayConfig`'s fields).
pub fn known_settings() -> BTreeMap<String, String> {
    let text = format!("{:?}", RayConfig::default());
    let body = text.split_once('{').map(|(_, b)| b.trim_end().trim_end_matches('}')).unwrap_or_default();
    body.split(',')
        .filter_map(|kv| kv.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

/// `--system-config`, read.
#[derive(Debug, Default)]
pub struct SystemConfig {
    /// `RAY_<name>` variables for the settings this build has.
    pub env: Vec<(String, String)>,
    /// The names it does not have.
    pub unknown: Vec<String>,
}

/// `--system-config` as `RAY_<name>` variables (known names, values checked
/// against the setting's type), plus the names this build does not have.
pub fn system_config_env(cfg: &serde_json::Map<String, serde_json::Value>) -> Result<SystemConfig> {
    let known = known_settings();
    let mut env = Vec::new();
    let mut unknown = Vec::new();
    for (k, v) in cfg {
        let Some(default) = known.get(k) else {
            unknown.push(k.clone());
            continue;
        };
        let text = match v {
            serde_json::Value::String(s) => s.trim().to_string(),
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            other => bail!("--system-config: {k:?} must be a single value, got {other}"),
        };
        let ok = if default.parse::<u64>().is_ok() {
            text.parse::<u64>().is_ok()
        } else if default.parse::<bool>().is_ok() {
            text.parse::<bool>().is_ok()
        } else if default.parse::<f64>().is_ok() {
            text.parse::<f64>().is_ok()
        } else {
            true
        };
        if !ok {
            let what = if default.parse::<u64>().is_ok() { "a non-negative whole number" } else { "a value like its default" };
            bail!("--system-config: {k:?} must be {what} (default {default}), got {v}");
        }
        env.push((format!("RAY_{k}"), text));
    }
    Ok(SystemConfig { env, unknown })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::StartArgs;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cmd {
        #[command(flatten)]
        a: StartArgs,
    }

    fn parse(args: &[&str]) -> Result<StartArgs, clap::Error> {
        Cmd::try_parse_from(std::iter::once("start").chain(args.iter().copied())).map(|c| c.a)
    }

    #[test]
    fn rays_template_lines_parse() {
        let a = parse(&[
            "--head",
            "--port=6379",
            "--object-manager-port=8076",
            "--autoscaling-config=/tmp/ray_bootstrap_config.yaml",
            "--dashboard-host=0.0.0.0",
        ])
        .unwrap();
        assert!(a.head);
        assert_eq!(a.port, Some(6379));
        assert_eq!(a.object_manager_port, Some(8076));
        let a = parse(&["--address=10.0.0.1:6379", "--object-manager-port", "8076"]).unwrap();
        assert_eq!(a.address.as_deref(), Some("10.0.0.1:6379"));
    }

    /// Every option of Ray 2.60's `ray start` (hidden ones too), as click lists them.
    const RAY_2_60_START_FLAGS: &[&str] = &[
        "--node-ip-address=127.0.0.1", "--port=6379", "--node-name=n1", "--redis-username=u",
        "--redis-password=p", "--redis-shard-ports=6380,6381", "--object-manager-port=8076", "--node-manager-port=0",
        "--min-worker-port=10002", "--max-worker-port=19999", "--worker-port-list=10002,10003",
        "--ray-client-server-port=10001", "--memory=1000000", "--object-store-memory=100000000", "--num-cpus=2",
        "--num-gpus=0", "--resources={\"A\": 1}", "--head", "--include-dashboard=true", "--dashboard-host=0.0.0.0",
        "--dashboard-port=8265", "--dashboard-agent-listen-port=52365", "--dashboard-agent-grpc-port=52366",
        "--runtime-env-agent-port=52367", "--block", "--plasma-directory=/dev/shm", "--object-spilling-directory=/tmp/s",
        "--autoscaling-config=/tmp/c.yaml", "--no-redirect-output", "--temp-dir=/tmp/ray", "--system-config={}",
        "--enable-object-reconstruction", "--metrics-export-port=8080", "--no-monitor", "--tracing-startup-hook=m:f",
        "--ray-debugger-external", "--disable-usage-stats", "--labels=a=b", "--labels-file=/tmp/l.yaml",
        "--include-log-monitor=false", "--enable-resource-isolation", "--system-reserved-cpu=1.5",
        "--system-reserved-memory=1000000", "--cgroup-path=/sys/fs/cgroup", "--proxy-server-url=http://h:8080",
        "--log-style=auto", "--log-color=auto", "-v", "--verbose",
    ];

    #[test]
    fn every_flag_of_rays_start_is_accepted() {
        parse(RAY_2_60_START_FLAGS).unwrap();
        for flag in RAY_2_60_START_FLAGS {
            let args: &[&str] = if *flag == "--head" { &[flag] } else { &["--head", flag] };
            parse(args).unwrap_or_else(|e| panic!("{flag}: {e}"));
        }
    }

    #[test]
    fn booleans_and_repeats_parse_as_click_does() {
        let a = parse(&["--head", "--include-dashboard=false", "--include-log-monitor", "True", "--block"]).unwrap();
        assert_eq!(a.include_dashboard, Some(false));
        assert_eq!(a.include_log_monitor, Some(true));
        assert!(a.block);
        assert!(!parse(&["--head", "--block=false"]).unwrap().block);
        assert!(parse(&["--head", "--include-dashboard"]).is_err(), "a BOOLEAN option needs its value");
        let e = parse(&["--head", "--include-dashboard=maybe"]).unwrap_err().to_string();
        assert!(e.contains("--include-dashboard"), "{e}");
        let a = parse(&["--head", "--port=1", "--port=2", "-vv", "--log-style=RECORD"]).unwrap();
        assert_eq!(a.port, Some(2), "the last value wins");
        assert_eq!(a.log.verbose, 2);
        let e = parse(&["--head", "--object-manager-port=70000"]).unwrap_err().to_string();
        assert!(e.contains("--object-manager-port"), "{e}");
    }

    #[test]
    fn ports_map_and_head_only_flags_are_refused_elsewhere() {
        let mut a = parse(&["--head", "--redis-port=7000"]).unwrap();
        resolve(&mut a).unwrap();
        assert_eq!(a.port, Some(7000));
        let mut a = parse(&["--head", "--port=7000", "--gcs-server-port=7001"]).unwrap();
        assert!(resolve(&mut a).unwrap_err().to_string().contains("--gcs-server-port"));
        for flag in ["--port=1", "--include-dashboard=false", "--redis-shard-ports=1", "--redis-port=1"] {
            let mut a = parse(&["--address=127.0.0.1:1", flag]).unwrap();
            let e = resolve(&mut a).unwrap_err().to_string();
            assert!(e.contains(flag.split('=').next().unwrap()) && e.contains("--head"), "{e}");
        }
        let mut a = parse(&["--head", "--address=127.0.0.1:1"]).unwrap();
        assert!(resolve(&mut a).unwrap_err().to_string().contains("--address"));
    }

    #[test]
    fn worker_ports_and_isolation_are_checked_as_ray_does() {
        let bad: &[(&[&str], &str)] = &[
            (&["--min-worker-port=80"], "--min-worker-port"),
            (&["--max-worker-port=20000"], "--max-worker-port"),
            (&["--min-worker-port=20000", "--max-worker-port=10000"], "--max-worker-port"),
            (&["--system-reserved-cpu=1"], "--system-reserved-cpu"),
            (&["--cgroup-path=/sys/fs/cgroup"], "--cgroup-path"),
        ];
        for (flags, name) in bad {
            let mut a = parse(&[&["--head"][..], *flags].concat()).unwrap();
            let e = resolve(&mut a).unwrap_err().to_string();
            assert!(e.contains(name), "{flags:?}: {e}");
        }
        let mut a = parse(&["--head", "--min-worker-port=0", "--max-worker-port=0", "--enable-resource-isolation", "--system-reserved-cpu=1.5"]).unwrap();
        let r = resolve(&mut a).unwrap();
        let names: Vec<&str> = r.ignored.iter().map(|i| i.flag.as_str()).collect();
        assert_eq!(names, ["--min-worker-port", "--max-worker-port", "--enable-resource-isolation", "--system-reserved-cpu"]);
    }

    #[test]
    fn system_config_becomes_settings_and_names_the_rest() {
        assert!(known_settings().contains_key("health_check_period_ms"), "{:?}", known_settings());
        let cfg = serde_json::json!({"health_check_period_ms": 500, "worker_lease_linger_ms": "100", "object_spilling_config": "{}", "lineage_pinning_enabled": true});
        let SystemConfig { env, unknown } = system_config_env(cfg.as_object().unwrap()).unwrap();
        assert!(env.contains(&("RAY_health_check_period_ms".into(), "500".into())), "{env:?}");
        assert!(env.contains(&("RAY_worker_lease_linger_ms".into(), "100".into())), "{env:?}");
        assert!(env.contains(&("RAY_object_spilling_config".into(), "{}".into())), "{env:?}");
        assert_eq!(unknown, ["lineage_pinning_enabled"]);
        for bad in [serde_json::json!({"health_check_period_ms": "soon"}), serde_json::json!({"health_check_period_ms": -1}), serde_json::json!({"health_check_period_ms": [1]})] {
            let e = system_config_env(bad.as_object().unwrap()).unwrap_err().to_string();
            assert!(e.contains("--system-config") && e.contains("health_check_period_ms"), "{e}");
        }
    }

    #[test]
    fn only_meaningless_log_flags_are_reported() {
        let mut a = parse(&["--head", "--log-style=record", "--log-color=auto", "--disable-usage-stats"]).unwrap();
        assert!(resolve(&mut a).unwrap().ignored.is_empty());
        let mut a = parse(&["--head", "--log-style=pretty", "--log-color=TRUE"]).unwrap();
        assert_eq!(resolve(&mut a).unwrap().ignored.len(), 2);
    }
}
