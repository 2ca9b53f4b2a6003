//! The pool's bookkeeping: which worker processes exist, what each is doing
//! (starting, idle, leased), which idle one to hand out next, which idle ones to
//! stop, and the workers removed before their exit was seen.
//!
//! Processes themselves are started and killed through [`ProcessControl`]
//! (`spawner.rs`); nothing here blocks.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::spawner::{ProcessControl, SpawnRequest};

/// The environment variable a worker finds its runtime environment in.
pub const RUNTIME_ENV_VAR: &str = "RAY_RUNTIME_ENV";

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
    /// The runtime environment it was started with (JSON; "" = none): it
    /// runs tasks of that environment only.
    pub runtime_env: String,
    /// Where its core worker listens, once registered.
    pub address: String,
    /// Status.
    pub status: WorkerStatus,
    /// Blocked in `ray.get`: its CPU is lent out.
    pub blocked: bool,
}

/// How many workers do what.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerCounts {
    /// Started, not yet registered.
    pub starting: usize,
    /// Registered and free.
    pub idle: usize,
    /// Leased to a task owner (a granted lease each).
    pub leased: usize,
    /// Blocked in `ray.get`, their CPU lent out.
    pub blocked: usize,
}

/// Settings of the pool.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Idle workers kept without a time limit (the node's CPUs).
    pub soft_limit: usize,
    /// Idle workers beyond the soft limit go after this long.
    pub idle_kill_threshold: Duration,
    /// Any idle worker goes after this long.
    pub max_idle: Duration,
    /// Workers started at once, at most.
    pub max_starting: usize,
    /// Logs of workers go here.
    pub log_dir: PathBuf,
    /// Environment of every worker.
    pub env: Vec<(String, String)>,
    /// Arguments every worker of this node gets (node id, addresses).
    pub worker_args: Vec<String>,
}

/// The worker processes of one node.
pub struct WorkerPool {
    workers: HashMap<String, Worker>,
    /// Workers removed before their exit was seen (pid -> worker id, address), so
    /// their store pins are still released when they exit.
    departed: HashMap<u32, (String, String)>,
    config: PoolConfig,
    procs: Box<dyn ProcessControl>,
}

fn new_id() -> String {
    ray_common::ids::random_hex(16)
}

impl WorkerPool {
    /// An empty pool.
    pub fn new(config: PoolConfig, procs: Box<dyn ProcessControl>) -> Self {
        Self { workers: HashMap::new(), departed: HashMap::new(), config, procs }
    }

    /// The settings.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// Number of worker processes (starting, idle or leased).
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Workers by what they are doing (for `/metrics`).
    pub fn counts(&self) -> WorkerCounts {
        let mut c = WorkerCounts::default();
        for w in self.workers.values() {
            match w.status {
                WorkerStatus::Starting => c.starting += 1,
                WorkerStatus::Idle(_) => c.idle += 1,
                WorkerStatus::Leased(_) => c.leased += 1,
            }
            c.blocked += usize::from(w.blocked);
        }
        c
    }

    /// A worker by id.
    pub fn get(&self, worker_id: &str) -> Option<&Worker> {
        self.workers.get(worker_id)
    }

    /// A worker by id, to change its status or blocked flag.
    pub fn get_mut(&mut self, worker_id: &str) -> Option<&mut Worker> {
        self.workers.get_mut(worker_id)
    }

    /// Ids of the workers of `job_id`.
    pub fn of_job(&self, job_id: &str) -> Vec<String> {
        self.workers.values().filter(|w| w.job_id == job_id).map(|w| w.id.clone()).collect()
    }

    /// Starts a worker of `job_id` with the job's `command` in `runtime_env`
    /// (handed to it in `RAY_RUNTIME_ENV`, never on its command line); returns
    /// its id.
    pub fn start(&mut self, job_id: &str, command: &[String], runtime_env: &str) -> String {
        let id = new_id();
        let mut argv = command.to_vec();
        argv.extend(self.config.worker_args.iter().cloned());
        argv.extend(["--worker-id".to_string(), id.clone(), "--job-id".to_string(), job_id.to_string()]);
        let log = self.config.log_dir.join(format!("worker-{id}-{job_id}.out"));
        let command = ray_common::process::joined_flags(&argv);
        let mut env = self.config.env.clone();
        if !runtime_env.is_empty() {
            env.push((RUNTIME_ENV_VAR.to_string(), runtime_env.to_string()));
        }
        self.procs.spawn(SpawnRequest { worker_id: id.clone(), command, env, log });
        self.workers.insert(
            id.clone(),
            Worker {
                id: id.clone(),
                pid: 0,
                job_id: job_id.to_string(),
                runtime_env: runtime_env.to_string(),
                address: String::new(),
                status: WorkerStatus::Starting,
                blocked: false,
            },
        );
        id
    }

    /// Its process runs. A worker removed while it was being spawned (its job
    /// ended) is killed at once; returns false then.
    pub fn started(&mut self, worker_id: &str, pid: u32) -> bool {
        match self.workers.get_mut(worker_id) {
            Some(w) => {
                w.pid = pid;
                true
            }
            None => {
                self.procs.kill(pid);
                false
            }
        }
    }

    /// Its process could not be started: it is forgotten.
    pub fn spawn_failed(&mut self, worker_id: &str) {
        self.workers.remove(worker_id);
    }

    /// The worker's core worker is up at `address`: it becomes idle. False for a
    /// worker this raylet did not start.
    pub fn register(&mut self, worker_id: &str, address: &str, pid: u32) -> bool {
        let Some(w) = self.workers.get_mut(worker_id) else { return false };
        w.address = address.to_string();
        if w.pid == 0 {
            w.pid = pid;
        }
        w.status = WorkerStatus::Idle(Instant::now());
        true
    }

    /// Workers of `job_id` in `runtime_env` being started.
    pub fn starting(&self, job_id: &str, runtime_env: &str) -> usize {
        self.workers
            .values()
            .filter(|w| w.job_id == job_id && w.runtime_env == runtime_env && w.status == WorkerStatus::Starting)
            .count()
    }

    /// Workers being started, all jobs together.
    pub fn total_starting(&self) -> usize {
        self.workers.values().filter(|w| w.status == WorkerStatus::Starting).count()
    }

    /// The idle worker of `job_id` to lease next: the most recently idle (its
    /// caches are warm).
    pub fn idle_worker(&self, job_id: &str, runtime_env: &str) -> Option<String> {
        self.workers
            .values()
            .filter(|w| w.job_id == job_id && w.runtime_env == runtime_env)
            .filter_map(|w| match w.status {
                WorkerStatus::Idle(t) => Some((t, w.id.clone())),
                _ => None,
            })
            .max_by_key(|(t, _)| *t)
            .map(|(_, id)| id)
    }

    /// Kills a worker and forgets it; its exit event still finds its id and
    /// address to release what it held in the store.
    pub fn kill(&mut self, worker_id: &str) -> Option<Worker> {
        let w = self.remove(worker_id)?;
        self.procs.kill(w.pid);
        Some(w)
    }

    fn remove(&mut self, worker_id: &str) -> Option<Worker> {
        let w = self.workers.remove(worker_id)?;
        if w.pid > 0 {
            self.departed.insert(w.pid, (w.id.clone(), w.address.clone()));
        }
        Some(w)
    }

    /// The lease held by the pool's worker with process `pid`.
    pub fn lease_of_pid(&self, pid: u32) -> Option<String> {
        match &self.workers.values().find(|w| w.pid == pid)?.status {
            WorkerStatus::Leased(lease_id) => Some(lease_id.clone()),
            _ => None,
        }
    }

    /// A process exited: the worker it was, if it is known (still in the pool,
    /// then forgotten; or killed earlier, then `departed`).
    pub fn exited(&mut self, pid: u32) -> Option<Exited> {
        if let Some((id, address)) = self.departed.remove(&pid) {
            return Some(Exited::Departed { id, address });
        }
        let id = self.workers.values().find(|w| w.pid == pid)?.id.clone();
        self.workers.remove(&id).map(Exited::Live)
    }

    /// Stops the idle workers due to go: beyond the soft limit after the
    /// threshold, any after the maximum idle time. Returns (id, pid) of each.
    pub fn stop_idle(&mut self, keep: &std::collections::HashSet<String>) -> Vec<(String, u32)> {
        let mut idle: Vec<(Instant, String)> = self
            .workers
            .values()
            .filter_map(|w| match w.status {
                WorkerStatus::Idle(t) if !keep.contains(&w.id) => Some((t, w.id.clone())),
                _ => None,
            })
            .collect();
        idle.sort();
        let mut count = self.workers.len();
        let mut out = Vec::new();
        for (since, id) in idle {
            let age = since.elapsed();
            if age >= self.config.max_idle || (count > self.config.soft_limit && age >= self.config.idle_kill_threshold) {
                if let Some(w) = self.kill(&id) {
                    out.push((id, w.pid));
                }
                count -= 1;
            }
        }
        out
    }

    /// Kills every worker (the raylet is stopping).
    pub fn kill_all(&mut self) {
        let ids: Vec<String> = self.workers.keys().cloned().collect();
        for id in ids {
            self.kill(&id);
        }
    }
}

/// A worker whose process exited.
#[derive(Debug)]
pub enum Exited {
    /// It was still in the pool.
    Live(Worker),
    /// It had been killed and removed already.
    Departed {
        /// Worker id.
        id: String,
        /// Its core worker's address.
        address: String,
    },
}
