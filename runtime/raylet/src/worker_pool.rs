//! Worker processes: started on demand from the job's worker command, one
//! dedicated thread spawning and reaping them (so a parent-death signal stays tied
//! to a thread that lives as long as the raylet), and the pool's bookkeeping.

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What a worker is doing.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerStatus {
    /// Started, not yet registered.
    Starting,
    /// Registered and free since then.
    Idle(Instant),
    /// Leased (lease id).
    Leased(String),
}

/// One worker process.
#[derive(Debug, Clone)]
pub struct Worker {
    /// Worker id (hex).
    pub id: String,
    /// Process id, once started.
    pub pid: u32,
    /// Job it serves.
    pub job_id: String,
    /// Where its core worker listens, once registered.
    pub address: String,
    /// Status.
    pub status: WorkerStatus,
    /// Blocked in `ray.get`: its CPU is lent out.
    pub blocked: bool,
}

/// A request to the spawner thread.
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

    /// Asks for a worker process.
    pub fn spawn(&self, req: SpawnRequest) {
        let _ = self.tx.send(req);
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

/// Kills a worker process.
pub fn kill(pid: u32) {
    if pid > 0 {
        ray_common::process::signal(pid, libc::SIGKILL);
    }
}
