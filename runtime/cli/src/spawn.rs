//! Launching daemons: this same binary under another name, in its own session
//! (so Ctrl-C in the terminal does not reach it), logging to the session folder,
//! recorded for `ray stop`, and waited on until it says it is ready.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use ray_common::process;
use ray_common::session::{self, ProcessRecord, Session};

/// A daemon this command started.
pub struct Launched {
    /// Its name in `ps` (`gcs_server`, `raylet`, ...).
    pub name: String,
    /// The child process.
    pub child: Child,
    /// Its log file.
    pub log: PathBuf,
    root: PathBuf,
}

/// What every daemon gets: where logs go, the registry, and extra environment.
pub struct Launcher<'a> {
    /// The session it belongs to.
    pub session: &'a Session,
    /// Environment for children (token, TLS paths, settings).
    pub env: Vec<(String, String)>,
}

impl Launcher<'_> {
    /// Starts `argv0 args...` from this executable, logging to `<log_base>.<ext>`.
    pub fn spawn(&self, argv0: &str, log_base: &str, ext: &str, args: &[String]) -> Result<Launched> {
        let exe = process::current_exe().context("cannot find the ray executable")?;
        self.start(&exe, argv0, argv0, log_base, ext, args)
    }

    /// Starts another program `exe` (the Ray Client server's Python), recorded
    /// for `ray stop` under `name`, logging to `<log_base>.<ext>`.
    pub fn spawn_program(&self, exe: &Path, name: &str, log_base: &str, ext: &str, args: &[String]) -> Result<Launched> {
        self.start(exe, &exe.display().to_string(), name, log_base, ext, args)
    }

    fn start(&self, exe: &Path, argv0: &str, name: &str, log_base: &str, ext: &str, args: &[String]) -> Result<Launched> {
        let (log, file) = self.session.create_log(log_base, ext)?;
        let mut cmd = process::daemon_command(exe, argv0, args, &self.env, file)?;
        let child = cmd.spawn().with_context(|| format!("cannot start {name} from {exe:?}"))?;
        let pid = child.id();
        let rec = ProcessRecord {
            pid,
            start_ticks: process::start_time_ticks(pid).unwrap_or(0),
            name: name.to_string(),
            session: self.session.name().to_string(),
        };
        session::register_process(self.session.root(), &rec)?;
        tracing::debug!(process = name, pid, log = %log.display(), "started");
        Ok(Launched { name: name.to_string(), child, log, root: self.session.root().to_path_buf() })
    }

    /// A fresh path for a ready file in the session folder.
    pub fn ready_file(&self, name: &str) -> PathBuf {
        self.session.dir().join(format!(".ready_{name}_{}.json", ray_common::ids::random_hex(6)))
    }
}

impl Launched {
    /// Waits until `ready_file` appears (the daemon writes it once it serves), the
    /// daemon exits, or `timeout` passes. Returns the file's JSON.
    pub fn wait_ready(&mut self, ready_file: &Path, timeout: Duration) -> Result<serde_json::Value> {
        let start = Instant::now();
        loop {
            if let Ok(body) = std::fs::read(ready_file) {
                let _ = std::fs::remove_file(ready_file);
                return serde_json::from_slice(&body).context("unreadable ready file");
            }
            if let Some(status) = self.child.try_wait()? {
                return Err(anyhow!(
                    "{} exited ({status}) before it was ready. Its log {}:\n{}",
                    self.name,
                    self.log.display(),
                    log_tail(&self.log, 12)
                ));
            }
            if start.elapsed() > timeout {
                return Err(anyhow!(
                    "{} did not become ready within {timeout:?}. Its log {}:\n{}",
                    self.name,
                    self.log.display(),
                    log_tail(&self.log, 12)
                ));
            }
            std::thread::sleep(Duration::from_millis(3));
        }
    }

    /// Kills the daemon and forgets it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        session::unregister_process(&self.root, self.child.id());
    }

    /// Asks the daemon to exit (SIGTERM), waits up to `grace`, then kills it.
    pub fn terminate(&mut self, grace: Duration) {
        process::signal(self.child.id(), libc::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < grace {
            if let Ok(Some(_)) = self.child.try_wait() {
                session::unregister_process(&self.root, self.child.id());
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
    }
}

/// The last `n` lines of a log file, indented.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    lines[from..].iter().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
}
