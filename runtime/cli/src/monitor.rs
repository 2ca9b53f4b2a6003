//! `ray monitor`: follows the autoscaler's log, like `tail -n 100 -f monitor.log`.

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

use anyhow::{Context, Result};
use ray_common::session;

/// Entry point.
pub fn run(a: crate::args::MonitorCmdArgs) -> Result<()> {
    if let Some(cfg) = &a.cluster_config_file {
        let c = ray_autoscaler::config::ClusterConfig::load(cfg)?;
        if c.provider_type != "fake_multinode" {
            // The head is another machine: its log, over SSH.
            return crate::launch::monitor_remote(cfg, a.lines, !a.no_follow);
        }
    }
    let root = session::temp_root(a.temp_dir.as_deref());
    let path = root.join("session_latest").join("logs").join("monitor.log");
    let mut f = std::fs::File::open(&path).with_context(|| {
        format!(
            "no autoscaler log at {} (was the head started with `ray start --head --autoscaling-config`?)",
            path.display()
        )
    })?;
    let mut text = String::new();
    f.read_to_string(&mut text)?;
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(a.lines);
    let mut out = std::io::stdout();
    for l in &lines[from..] {
        writeln!(out, "{l}")?;
    }
    out.flush()?;
    if a.no_follow {
        return Ok(());
    }
    let mut pos = f.seek(SeekFrom::End(0))?;
    let mut buf = Vec::new();
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if len < pos {
            // Rotated or a new session: start over.
            f = std::fs::File::open(&path)?;
            pos = 0;
        }
        f.seek(SeekFrom::Start(pos))?;
        buf.clear();
        f.read_to_end(&mut buf)?;
        pos += buf.len() as u64;
        out.write_all(&buf)?;
        out.flush()?;
    }
}
