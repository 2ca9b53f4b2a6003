//! `ray stop`: every process `ray start` recorded on this machine, raylets and the
//! autoscaler first, the GCS last.

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

/// Entry point.
pub fn run(a: crate::args::StopArgs) -> Result<()> {
    let root = session::temp_root(a.temp_dir.as_deref());
    let mut live = Vec::new();
    for r in session::list_processes(&root) {
        if alive(&r) {
            live.push(r);
        } else {
            session::unregister_process(&root, r.pid);
        }
    }
    if live.is_empty() {
        println!("Did not find any active Ray processes.");
        session::clear_current_cluster(&root);
        return Ok(());
    }
    let total = live.len();
    let bucket = |r: &ProcessRecord| match r.name.as_str() {
        "raylet" => 0,
        "gcs_server" => 2,
        _ => 1,
    };
    let per_bucket = Duration::from_secs(a.grace_period) / 3;
    let mut stubborn = Vec::new();
    for b in 0..3 {
        let procs: Vec<&ProcessRecord> = live.iter().filter(|r| bucket(r) == b).collect();
        if procs.is_empty() {
            continue;
        }
        for r in &procs {
            if a.force {
                signal_group(r, libc::SIGKILL);
            } else {
                process::signal(r.pid, libc::SIGTERM);
            }
        }
        let start = Instant::now();
        while procs.iter().any(|r| alive(r)) && start.elapsed() < per_bucket {
            std::thread::sleep(Duration::from_millis(10));
        }
        for r in procs.iter().filter(|r| alive(r)) {
            stubborn.push(format!("{} (pid {})", r.name, r.pid));
            signal_group(r, libc::SIGKILL);
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
    for r in &live {
        session::unregister_process(&root, r.pid);
    }
    session::clear_current_cluster(&root);
    if stubborn.is_empty() {
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
