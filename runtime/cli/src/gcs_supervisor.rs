//! `gcs_supervisor`: keeps the head's GCS running. `ray start --head` starts this
//! process; it starts the GCS (this binary as `gcs_server`, with the arguments
//! after `--`) and starts it again when it dies of anything but a clean exit:
//! kill -9, a crash, the OOM killer. With durable storage the new GCS reads the
//! tables back and the raylets, drivers, workers and autoscaler reconnect to it.
//!
//! The GCS is in the supervisor's process group (so `ray stop --force` takes
//! both) and gets SIGTERM if the supervisor dies, so it is never orphaned. Each
//! GCS process is recorded for `ray stop` while it runs. Five deaths in a row
//! within five seconds of their starts (a port taken, unreadable storage) end
//! the supervision with an error: restarting would not help.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use clap::Parser;
use ray_common::process;
use ray_common::session::{self, ProcessRecord};
use tokio_util::sync::CancellationToken;

/// Flags of the supervisor.
#[derive(Debug, Parser)]
#[command(
    name = "gcs_supervisor",
    about = "Restarts the head's GCS when it dies (started by `ray start --head`)"
)]
pub struct SupervisorArgs {
    /// The temp root whose process registry `ray stop` reads.
    #[arg(long = "temp-root")]
    temp_root: PathBuf,
    /// The session, for the registry records.
    #[arg(long = "session-name")]
    session_name: String,
    /// The GCS's own flags.
    #[arg(last = true)]
    gcs_args: Vec<String>,
}

/// Deaths in a row, each soon after its start, that end the supervision.
const MAX_QUICK_DEATHS: u32 = 5;
/// A GCS that lived shorter than this died "soon after its start".
const QUICK: Duration = Duration::from_secs(5);

/// Runs until the GCS exits cleanly or a signal asks to stop. Returns the exit code.
pub fn main(args: SupervisorArgs) -> i32 {
    process::set_process_name("gcs_supervisor");
    ray_common::logging::init("gcs_supervisor");
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return 1;
        }
    };
    rt.block_on(async move {
        let stop = CancellationToken::new();
        crate::daemons::cancel_on_signals(stop.clone());
        supervise(args, stop).await
    })
}

/// Takes `--ready-file` out of the GCS's flags: the supervisor gives the first
/// GCS a ready file of its own, learns the port from it, and hands it on to
/// `ray start`, which is waiting for the path it asked for.
fn split_ready(first: &[String]) -> (Vec<String>, Option<PathBuf>) {
    let mut out = Vec::with_capacity(first.len());
    let mut ready = None;
    let mut it = first.iter();
    while let Some(a) = it.next() {
        if a == "--ready-file" {
            ready = it.next().map(PathBuf::from);
        } else if let Some(v) = a.strip_prefix("--ready-file=") {
            ready = Some(PathBuf::from(v));
        } else {
            out.push(a.clone());
        }
    }
    (out, ready)
}

/// The flags with `--port` set to `port`: a GCS started on `--port 0` comes
/// back on the port it first took, where every client looks for it.
fn with_port(args: &[String], port: u16) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len() + 2);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--port" {
            it.next();
        } else if !a.starts_with("--port=") {
            out.push(a.clone());
        }
    }
    out.extend(["--port".to_string(), port.to_string()]);
    out
}

/// Waits for the GCS's ready file, moves its contents to the path `ray start`
/// waits on (whole, by rename) and returns the port it reports.
async fn forward_ready(own: &std::path::Path, real: &std::path::Path) -> Option<u16> {
    let body = loop {
        if let Ok(b) = tokio::fs::read(own).await {
            break b;
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    };
    let port = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["port"].as_u64())
        .and_then(|p| u16::try_from(p).ok());
    if let Err(e) = tokio::fs::rename(own, real).await {
        tracing::warn!(error = %e, path = %real.display(), "cannot hand the GCS's ready file on");
    }
    port
}

fn spawn_gcs(args: &[String]) -> std::io::Result<tokio::process::Child> {
    use std::os::unix::process::CommandExt as _;
    let exe = process::current_exe()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg0("gcs_server")
        .args(args)
        .stdin(std::process::Stdio::null());
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| process::set_parent_death_signal(libc::SIGTERM));
    }
    tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
}

fn describe(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => status.to_string(),
    }
}

async fn supervise(a: SupervisorArgs, stop: CancellationToken) -> i32 {
    let (base_args, ready) = split_ready(&a.gcs_args);
    let mut port: Option<u16> = None;
    let mut quick_deaths = 0u32;
    let mut restarts = 0u64;
    loop {
        let started = Instant::now();
        let mut args = match port {
            Some(p) => with_port(&base_args, p),
            None => base_args.clone(),
        };
        // Only the first GCS reports ready: `ray start` waits for that one.
        let forward = ready
            .as_ref()
            .filter(|_| restarts == 0)
            .map(|real| (real.with_extension("gcs"), real.clone()));
        if let Some((own, _)) = &forward {
            args.extend(["--ready-file".to_string(), own.display().to_string()]);
        }
        let mut child = match spawn_gcs(&args) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the GCS");
                return 1;
            }
        };
        let pid = child.id().unwrap_or(0);
        let rec = ProcessRecord {
            pid,
            start_ticks: process::start_time_ticks(pid).unwrap_or(0),
            name: "gcs_server".into(),
            session: a.session_name.clone(),
        };
        if let Err(e) = session::register_process(&a.temp_root, &rec) {
            tracing::warn!(pid, error = %e, "cannot record the GCS for `ray stop`");
        }
        if restarts > 0 {
            tracing::warn!(pid, restarts, port = ?port, "GCS restarted");
        }
        let watch = async {
            match &forward {
                Some((own, real)) => forward_ready(own, real).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(watch);
        let mut watching = forward.is_some();
        let status = loop {
            tokio::select! {
                s = child.wait() => break s,
                p = &mut watch, if watching => {
                    watching = false;
                    port = port.or(p);
                }
                _ = stop.cancelled() => {
                    process::signal(pid, libc::SIGTERM);
                    let s = match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
                        Ok(s) => s,
                        Err(_) => {
                            tracing::warn!(pid, "the GCS did not stop within 10 s of SIGTERM; killing it");
                            let _ = child.kill().await;
                            child.wait().await
                        }
                    };
                    session::unregister_process(&a.temp_root, pid);
                    tracing::info!(status = ?s.as_ref().map(describe), "GCS stopped; supervisor exiting");
                    return 0;
                }
            }
        };
        if let Some((own, _)) = &forward {
            let _ = std::fs::remove_file(own);
        }
        session::unregister_process(&a.temp_root, pid);
        let status = match status {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(pid, error = %e, "cannot wait for the GCS");
                return 1;
            }
        };
        if status.success() {
            tracing::info!(pid, "the GCS exited cleanly; supervisor exiting");
            return 0;
        }
        let lived = started.elapsed();
        quick_deaths = if lived < QUICK { quick_deaths + 1 } else { 1 };
        if quick_deaths >= MAX_QUICK_DEATHS {
            tracing::error!(pid, status = %describe(&status), "the GCS died {quick_deaths} times in a row within {QUICK:?} of starting; giving up (see the errors above)");
            return 1;
        }
        let delay = if lived < QUICK {
            Duration::from_millis(200) * quick_deaths
        } else {
            Duration::ZERO
        };
        tracing::error!(pid, status = %describe(&status), lived = ?lived, delay = ?delay, "the GCS died; starting it again");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.cancelled() => return 0,
        }
        restarts += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_ready_file_is_taken_out_of_the_flags() {
        let (args, ready) = split_ready(&strings(&[
            "--port=6379",
            "--ready-file=/s/.ready",
            "--bind=1.2.3.4",
        ]));
        assert_eq!(args, strings(&["--port=6379", "--bind=1.2.3.4"]));
        assert_eq!(ready, Some(PathBuf::from("/s/.ready")));
        let (args, ready) = split_ready(&strings(&["--ready-file", "/x", "--port", "0"]));
        assert_eq!(args, strings(&["--port", "0"]));
        assert_eq!(ready, Some(PathBuf::from("/x")));
    }

    #[test]
    fn a_restart_keeps_the_port_the_first_gcs_took() {
        assert_eq!(
            with_port(&strings(&["--port", "0", "--bind=1.2.3.4"]), 41234),
            strings(&["--bind=1.2.3.4", "--port", "41234"])
        );
        assert_eq!(
            with_port(&strings(&["--port=0"]), 7),
            strings(&["--port", "7"])
        );
    }
}
