//! Prometheus for a cluster started here. `ray start --head` writes a scrape
//! config to `<session>/metrics/prometheus/prometheus.yml`, as Ray's dashboard
//! does: one job, `ray`, whose targets come from the service discovery file the
//! GCS keeps (`<session>/prom_metrics_service_discovery.json`), and which sends
//! the cluster token as a bearer credential read from the token's file (never
//! the token itself). `ray metrics launch-prometheus` starts Prometheus with that
//! config when a `prometheus` executable is on the PATH, and otherwise says how
//! to run it: unlike Ray's, it downloads nothing.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use ray_common::auth::{self, AuthMode, TokenSource};
use ray_common::session::{self, Session};

/// The variable that moves the autoscaler's endpoint, as in Ray.
pub const AUTOSCALER_METRIC_PORT_VAR: &str = "AUTOSCALER_METRIC_PORT";

/// `ray metrics ...`.
#[derive(Debug, Args)]
pub struct MetricsArgs {
    #[command(subcommand)]
    command: MetricsCommand,
}

#[derive(Debug, Subcommand)]
enum MetricsCommand {
    /// Start Prometheus on the scrape config of the cluster on this machine (a
    /// `prometheus` on the PATH), or print how to.
    #[command(name = "launch-prometheus")]
    LaunchPrometheus(LaunchArgs),
}

/// Flags of `ray metrics launch-prometheus`.
#[derive(Debug, Args)]
struct LaunchArgs {
    /// Root folder of session files (default: /tmp/ray, or $RAY_TMPDIR/ray).
    #[arg(long = "temp-dir")]
    temp_dir: Option<PathBuf>,
}

/// The autoscaler's metrics port: `AUTOSCALER_METRIC_PORT`, else Ray's 44217.
pub fn autoscaler_metric_port() -> Result<u16> {
    match std::env::var(AUTOSCALER_METRIC_PORT_VAR) {
        Err(_) => Ok(crate::metrics_serve::AUTOSCALER_METRIC_PORT),
        Ok(v) => v.trim().parse().map_err(|_| {
            anyhow!("{AUTOSCALER_METRIC_PORT_VAR}={v:?} is not a port number (0-65535)")
        }),
    }
}

/// `<session>/metrics/prometheus/prometheus.yml`.
pub fn config_path(session_dir: &Path) -> PathBuf {
    session_dir
        .join("metrics")
        .join("prometheus")
        .join("prometheus.yml")
}

/// How Prometheus proves it may read the endpoints.
#[derive(Debug, Clone, PartialEq)]
pub enum Credentials {
    /// The token's file.
    File(PathBuf),
    /// The token was given by value (`RAY_AUTH_TOKEN`): there is no file to name.
    ValueOnly,
    /// `RAY_AUTH_MODE=disabled`.
    None,
}

/// Where this process found the cluster token.
pub fn credentials() -> Result<Credentials> {
    if auth::auth_mode()? == AuthMode::Disabled {
        return Ok(Credentials::None);
    }
    Ok(match auth::find_token()? {
        Some((_, TokenSource::EnvPath(p) | TokenSource::DefaultFile(p))) => {
            Credentials::File(std::path::absolute(&p)?)
        }
        Some((_, TokenSource::EnvVar)) | None => Credentials::ValueOnly,
    })
}

/// A YAML single-quoted string.
fn quoted(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "''"))
}

/// The scrape config for a session whose discovery file is `discovery`.
pub fn render(discovery: &Path, creds: &Credentials) -> String {
    let auth = match creds {
        Credentials::File(p) => format!(
            "  # The cluster token, read from its file at each scrape.\n  authorization:\n    type: Bearer\n    \
             credentials_file: {}\n",
            quoted(p)
        ),
        Credentials::ValueOnly => "  # The cluster token came from RAY_AUTH_TOKEN, so there is no file to name here:\n  \
             # put the token in a file of mode 0600 and uncomment these lines.\n  # authorization:\n  #   type: Bearer\n  \
             #   credentials_file: /path/to/token\n"
            .to_string(),
        Credentials::None => "  # RAY_AUTH_MODE=disabled: the endpoints ask for no token.\n".to_string(),
    };
    format!(
        "# Prometheus config for a Ray cluster, written by `ray start --head`.\n\
         # Run: prometheus --config.file={}\n\
         global:\n  scrape_interval: 10s\n  evaluation_interval: 10s\n\n\
         scrape_configs:\n\
         # Every metrics endpoint of the cluster (GCS, raylets, autoscaler), as the head lists them.\n\
         - job_name: 'ray'\n{auth}  file_sd_configs:\n  - files:\n    - {}\n",
        discovery
            .parent()
            .map(config_path)
            .unwrap_or_default()
            .display(),
        quoted(discovery),
    )
}

/// Writes the session's Prometheus config; returns its path.
pub fn write_config(session: &Session) -> Result<PathBuf> {
    let path = config_path(&session.dir());
    let discovery = session.dir().join(ray_gcs::prom_discovery::FILE_NAME);
    let body = render(&discovery, &credentials()?);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(&path, body).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Entry point of `ray metrics`.
pub fn run(a: MetricsArgs) -> Result<()> {
    match a.command {
        MetricsCommand::LaunchPrometheus(l) => launch(l),
    }
}

fn launch(a: LaunchArgs) -> Result<()> {
    let root = session::temp_root(a.temp_dir.as_deref());
    let latest = root.join("session_latest");
    let session_dir = std::fs::canonicalize(&latest).map_err(|_| {
        anyhow!(
            "no Ray session at {}: start a cluster here with `ray start --head` first",
            latest.display()
        )
    })?;
    let config = config_path(&session_dir);
    if !config.exists() {
        bail!(
            "{} is missing: it is written by `ray start --head` on the head node",
            config.display()
        );
    }
    let data = session_dir.join("metrics").join("prometheus").join("data");
    let args = vec![
        format!("--config.file={}", config.display()),
        format!("--storage.tsdb.path={}", data.display()),
        "--web.enable-lifecycle".to_string(),
    ];
    let command = format!(
        "prometheus {}",
        shlex::try_join(args.iter().map(String::as_str)).unwrap_or_else(|_| args.join(" "))
    );
    println!("Prometheus config of this cluster: {}", config.display());
    let Some(exe) = find_on_path("prometheus") else {
        println!(
            "No `prometheus` executable on the PATH. This command does not download Prometheus (Ray's does);"
        );
        println!(
            "install it (https://prometheus.io/download/ or your distribution's package), then run:"
        );
        println!("  {command}");
        return Ok(());
    };
    let s = Session::open(
        &root,
        &session_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    )?;
    let (log, file) = s.create_log("prometheus", "out")?;
    let mut cmd = ray_common::process::daemon_command(&exe, "prometheus", &args, &[], file)?;
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", exe.display()))?;
    println!("Started {command}");
    println!(
        "Prometheus is running with PID {} (log: {}); it serves on http://localhost:9090.",
        child.id(),
        log.display()
    );
    println!("To stop it: kill {}", child.id());
    Ok(())
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| ray_common::process::is_executable(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_names_the_discovery_file_and_the_token_file_never_the_token() {
        let text = render(
            Path::new("/tmp/ray/session_x/prom_metrics_service_discovery.json"),
            &Credentials::File("/home/u/.ray/auth_token".into()),
        );
        assert!(text.contains("- job_name: 'ray'\n"), "{text}");
        assert!(
            text.contains("    - '/tmp/ray/session_x/prom_metrics_service_discovery.json'\n"),
            "{text}"
        );
        assert!(text.contains("  authorization:\n    type: Bearer\n    credentials_file: '/home/u/.ray/auth_token'\n"), "{text}");
        assert!(text.contains("# Run: prometheus --config.file=/tmp/ray/session_x/metrics/prometheus/prometheus.yml\n"), "{text}");
        let open = render(Path::new("/r/s/f.json"), &Credentials::None);
        assert!(!open.contains("\n  authorization:"), "{open}");
        let by_value = render(Path::new("/r/s/f.json"), &Credentials::ValueOnly);
        assert!(by_value.contains("# authorization:"), "{by_value}");
    }
}
