//! `ray start --head` starts the dashboard (the Jobs API and the page) on
//! `--dashboard-host` (loopback by default) and `--dashboard-port` (8265), and
//! records its URL where `ray job` looks for it.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use anyhow::{Result, anyhow};

use crate::args::StartArgs;
use crate::spawn::{Launched, Launcher};

const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// `--dashboard-host` as an address (`localhost` is loopback).
fn host(a: &StartArgs) -> Result<IpAddr> {
    match a.dashboard_host.as_deref().map(str::trim) {
        None | Some("") | Some("localhost") => Ok(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        Some(h) => h.trim_matches(['[', ']']).parse().map_err(|_| {
            anyhow!("--dashboard-host {h:?}: expected an IP address such as 127.0.0.1 or 0.0.0.0")
        }),
    }
}

/// Whether this `ray start` runs a dashboard.
pub fn wanted(a: &StartArgs) -> bool {
    a.init_local_info.is_none() && a.include_dashboard != Some(false)
}

/// Starts the dashboard and waits until it serves; returns it and its URL.
pub fn start(
    launcher: &Launcher,
    a: &StartArgs,
    node_ip: IpAddr,
    gcs_addr: &str,
) -> Result<(Launched, String)> {
    let host = host(a)?;
    let mut args = vec![
        "--host".to_string(),
        host.to_string(),
        "--port".into(),
        a.dashboard_port
            .unwrap_or(ray_dashboard::DEFAULT_PORT)
            .to_string(),
        "--gcs-address".into(),
        gcs_addr.to_string(),
        "--node-ip-address".into(),
        node_ip.to_string(),
        "--temp-root".into(),
        launcher.session.root().display().to_string(),
        "--session-name".into(),
        launcher.session.name().to_string(),
    ];
    // Only the default port gives way to another cluster's dashboard; a port
    // the user chose must be the one used.
    if a.dashboard_port.is_none() {
        args.push("--port-fallback".into());
    }
    let ready = launcher.ready_file("dashboard");
    args.extend(["--ready-file".into(), ready.display().to_string()]);
    let mut p = launcher.spawn("dashboard", "dashboard", "log", &args)?;
    let info = match p.wait_ready(&ready, READY_TIMEOUT) {
        Ok(info) => info,
        Err(e) => {
            p.kill();
            return Err(e);
        }
    };
    let url = info["url"]
        .as_str()
        .ok_or_else(|| anyhow!("the dashboard did not report its URL"))?
        .to_string();
    Ok((p, url))
}

/// `<temp root>/ray_current_dashboard`: the URL of the dashboard of the cluster
/// started on this machine (what `ray job` uses when no address is given).
pub fn current_dashboard_file(root: &Path) -> std::path::PathBuf {
    root.join("ray_current_dashboard")
}

/// Records the dashboard's URL.
pub fn record(root: &Path, url: &str) -> Result<()> {
    let path = current_dashboard_file(root);
    std::fs::write(&path, url).map_err(|e| anyhow!("cannot write {}: {e}", path.display()))
}

/// Forgets it (`ray stop`).
pub fn clear(root: &Path) {
    let _ = std::fs::remove_file(current_dashboard_file(root));
}

/// The recorded URL, if any.
pub fn read(root: &Path) -> Option<String> {
    std::fs::read_to_string(current_dashboard_file(root))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Checks `--dashboard-host` before anything starts.
pub fn check_flags(a: &StartArgs) -> Result<()> {
    if wanted(a) {
        host(a)?;
    }
    Ok(())
}
