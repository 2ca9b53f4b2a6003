//! `ray stop`: every process `ray start` (and the autoscaler) recorded on this
//! machine: the autoscaler first, then raylets, then the rest, the GCS last.

use std::time::{Duration, Instant};

use anyhow::Result;
use ray_common::process;
use ray_common::session::{self, ProcessRecord};

fn alive(r: &ProcessRecord) -> bool {
    process::is_same_process_alive(r.pid, r.start_ticks)
}

/// Signals a whole process group (daemons lead their own, so workers they started go too).
fn signal_group(r: &ProcessRecord, sig: i32) {
    let pid = r.pid as i32;
    // SAFETY: kill(2) on a process group; no memory is touched.
    unsafe {
        if libc::kill(-pid, sig) != 0 {
            libc::kill(pid, sig);
        }
    }
}

fn live_processes(root: &std::path::Path) -> Vec<ProcessRecord> {
    let mut live = Vec::new();
    for r in session::list_processes(root) {
        if alive(&r) {
            live.push(r);
        } else {
            session::unregister_process(root, r.pid);
        }
    }
    live
}

/// Stops `live` in order; returns the ones that had to be killed. `verbose` says
/// what was sent to whom.
fn stop_all(live: &[ProcessRecord], force: bool, grace: Duration, verbose: bool) -> Vec<String> {
    // The autoscaler and the Ray Client server first (so nothing new starts while nodes go), then raylets,
    // then anything else, the GCS last.
    let bucket = |r: &ProcessRecord| match r.name.as_str() {
        // The Ray Client server and the dashboard first too: their drivers (clients' sessions, jobs) end while the cluster still runs.
        "monitor" | "ray_client_server" | "dashboard" => 0,
        "raylet" => 1,
        "gcs_server" | "gcs_supervisor" => 3,
        _ => 2,
    };
    let per_bucket = grace / 4;
    let mut stubborn = Vec::new();
    for b in 0..4 {
        let procs: Vec<&ProcessRecord> = live.iter().filter(|r| bucket(r) == b).collect();
        if procs.is_empty() {
            continue;
        }
        for r in &procs {
            if force {
                signal_group(r, libc::SIGKILL);
            } else {
                process::signal(r.pid, libc::SIGTERM);
            }
            if verbose {
                let how = if force { "Killed" } else { "Sent a termination request to" };
                let sig = if force { "SIGKILL" } else { "SIGTERM" };
                println!("{how} {} (pid {}, session {}) via {sig}", r.name, r.pid, r.session);
            }
        }
        let start = Instant::now();
        while procs.iter().any(|r| alive(r)) && start.elapsed() < per_bucket {
            std::thread::sleep(Duration::from_millis(10));
        }
        for r in procs.iter().filter(|r| alive(r)) {
            stubborn.push(format!("{} (pid {})", r.name, r.pid));
            if verbose {
                println!("{} (pid {}) did not exit within {per_bucket:?}; killing it", r.name, r.pid);
            }
        }
        // Whatever the daemons started (workers) goes with them.
        for r in &procs {
            signal_group(r, libc::SIGKILL);
        }
        let start = Instant::now();
        while procs.iter().any(|r| alive(r)) && start.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    stubborn
}

/// Entry point.
pub fn run(a: crate::args::StopArgs) -> Result<()> {
    let ignored = a.log.ignored();
    if let Some(line) = crate::args::no_effect_line("ray stop", &ignored) {
        eprintln!("{line}");
    }
    let root = session::temp_root(a.temp_dir.as_deref());
    let mut total = 0;
    let mut stubborn = Vec::new();
    // A process started while we were stopping (a node the autoscaler launched a
    // moment before it got the signal) is caught by the next pass.
    for _ in 0..3 {
        let live = live_processes(&root);
        if live.is_empty() {
            break;
        }
        total += live.len();
        stubborn.extend(stop_all(&live, a.force, Duration::from_secs(a.grace_period), a.log.verbose > 0));
        for r in &live {
            session::unregister_process(&root, r.pid);
        }
    }
    session::clear_current_cluster(&root);
    crate::start_dashboard::clear(&root);
    // Shared-memory store files of raylets that died without cleaning up.
    ray_object_store::remove_stale_files(&ray_object_store::default_dir());
    if total == 0 {
        println!("Did not find any active Ray processes.");
    } else if stubborn.is_empty() {
        println!("Stopped all {total} Ray processes.");
    } else {
        println!(
            "Stopped only {} out of {total} Ray processes within the grace period {} seconds; killed the rest: {}. \
             Use `--force` to kill at once, or a higher `--grace-period` to wait longer.",
            total - stubborn.len(),
            a.grace_period,
            stubborn.join(", ")
        );
    }
    Ok(())
}
