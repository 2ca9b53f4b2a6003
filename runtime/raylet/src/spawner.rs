//! Worker processes as the operating system sees them: one dedicated thread
//! spawns and reaps them (so a parent-death signal stays tied to a thread that
//! lives as long as the raylet) and reports what happened as [`PoolEvent`]s;
//! killing is one non-blocking signal.
//!
//! The node state reaches processes only through [`ProcessControl`], whose calls
//! never block, so they may be made while the state's lock is held (and tests
//! replace it with a recorder).

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A request to the spawner thread.
#[derive(Debug, Clone)]
pub struct SpawnRequest {
    /// Worker id (passed to the process).
    pub worker_id: String,
    /// argv.
    pub command: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Log file for stdout and stderr.
    pub log: PathBuf,
}

/// What the spawner thread reports.
#[derive(Debug)]
pub enum PoolEvent {
    /// The process runs.
    Started {
        /// Worker id.
        worker_id: String,
        /// Its pid.
        pid: u32,
    },
    /// It could not be started.
    SpawnFailed {
        /// Worker id.
        worker_id: String,
        /// Why.
        error: String,
    },
    /// A worker process exited.
    Exited {
        /// Its pid.
        pid: u32,
        /// How.
        status: String,
    },
}

/// Starting and stopping worker processes. Neither call may block: both are made
/// while the node state is locked.
pub trait ProcessControl: Send {
    /// Asks for a worker process; the outcome comes back as a [`PoolEvent`].
    fn spawn(&self, req: SpawnRequest);
    /// Sends SIGKILL to `pid` (nothing for 0: a worker not started yet).
    fn kill(&self, pid: u32);
}

/// Handle to the spawner thread.
#[derive(Clone)]
pub struct Spawner {
    tx: mpsc::Sender<SpawnRequest>,
}

impl Spawner {
    /// Starts the thread; events go to `events`.
    pub fn start(events: tokio::sync::mpsc::UnboundedSender<PoolEvent>) -> Self {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("worker-spawner".into())
            .spawn(move || spawner_loop(rx, events))
            .expect("spawn the worker spawner thread");
        Self { tx }
    }
}

impl ProcessControl for Spawner {
    fn spawn(&self, req: SpawnRequest) {
        let _ = self.tx.send(req);
    }

    fn kill(&self, pid: u32) {
        if pid > 0 {
            ray_common::process::signal(pid, libc::SIGKILL);
        }
    }
}

fn spawner_loop(rx: mpsc::Receiver<SpawnRequest>, events: tokio::sync::mpsc::UnboundedSender<PoolEvent>) {
    let mut children: HashMap<u32, Child> = HashMap::new();
    loop {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(req) => {
                let worker_id = req.worker_id.clone();
                match start(req) {
                    Ok(child) => {
                        let pid = child.id();
                        children.insert(pid, child);
                        let _ = events.send(PoolEvent::Started { worker_id, pid });
                    }
                    Err(error) => {
                        let _ = events.send(PoolEvent::SpawnFailed { worker_id, error });
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                for (_, mut c) in children.drain() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                return;
            }
        }
        let mut gone = Vec::new();
        for (pid, c) in children.iter_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                gone.push((*pid, status.to_string()));
            }
        }
        for (pid, status) in gone {
            children.remove(&pid);
            let _ = events.send(PoolEvent::Exited { pid, status });
        }
    }
}

fn start(req: SpawnRequest) -> Result<Child, String> {
    let (prog, args) = req.command.split_first().ok_or("empty worker command")?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&req.log)
        .map_err(|e| format!("cannot open {:?}: {e}", req.log))?;
    let err = log.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .envs(req.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(err));
    // SAFETY: prctl is async-signal-safe; it only asks for SIGKILL if the raylet dies.
    unsafe {
        cmd.pre_exec(|| ray_common::process::set_parent_death_signal(libc::SIGKILL));
    }
    cmd.spawn().map_err(|e| format!("cannot start the worker command {:?}: {e}", req.command))
}
