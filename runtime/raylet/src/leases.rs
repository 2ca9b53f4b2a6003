//! Leasing workers to task owners: the queue of lease requests, dispatch onto
//! free resources and idle workers (starting workers on demand), returns, blocked
//! workers lending their CPU, and the demand this node reports to the GCS.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ray_common::ResourceSet;
use ray_common::resources::CPU;
use ray_proto::rpc::RequestWorkerLeaseReply;
use tokio::sync::oneshot;

use crate::local_resources::{DemandCount, LocalResources};
use crate::worker_pool::{SpawnRequest, Spawner, Worker, WorkerStatus};

/// A job's settings on this node.
#[derive(Debug, Clone)]
pub struct Job {
    /// argv that starts a worker of this job.
    pub command: Vec<String>,
    /// The driver's pid (watched: the job ends when it exits).
    pub driver_pid: u32,
    /// The driver's worker id.
    pub driver_id: String,
    /// The driver's core worker address (it owns objects in the store).
    pub driver_address: String,
}

/// A granted lease.
#[derive(Debug, Clone)]
pub struct Lease {
    /// The worker.
    pub worker_id: String,
    /// What it holds.
    pub resources: ResourceSet,
    /// Who holds it.
    pub owner: String,
}

/// Another node as this raylet last saw it (for spillback).
#[derive(Debug, Clone)]
pub struct RemoteNode {
    /// Node id.
    pub node_id: String,
    /// Its raylet's address.
    pub address: String,
    /// Free resources.
    pub available: ResourceSet,
    /// Total resources.
    pub total: ResourceSet,
}

/// A lease request waiting for resources or a worker.
pub struct Pending {
    /// Sent here by another raylet: never passed on again.
    pub no_spillback: bool,
    /// Resource shape.
    pub shape: ResourceSet,
    /// Job.
    pub job_id: String,
    /// Owner worker id.
    pub owner: String,
    /// Where the answer goes.
    pub reply: oneshot::Sender<RequestWorkerLeaseReply>,
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
}

/// Workers, jobs, leases and the queue of one node.
pub struct Leasing {
    /// Every worker process.
    pub workers: HashMap<String, Worker>,
    /// Jobs with a driver on this node (or that leased here).
    pub jobs: HashMap<String, Job>,
    /// Granted leases.
    pub leases: HashMap<String, Lease>,
    /// Waiting requests, in arrival order.
    pub queue: Vec<Pending>,
    /// Pool settings.
    pub config: PoolConfig,
    /// The other nodes, from the GCS.
    pub cluster: Vec<RemoteNode>,
    /// Workers removed before their exit was seen (pid -> worker id, address), so
    /// their store pins are still released when they exit.
    pub departed: HashMap<u32, (String, String)>,
    spawner: Spawner,
}

fn new_id() -> String {
    ray_common::ids::random_hex(16)
}

impl Leasing {
    /// An empty pool.
    pub fn new(config: PoolConfig, spawner: Spawner) -> Self {
        Self {
            workers: HashMap::new(),
            jobs: HashMap::new(),
            leases: HashMap::new(),
            queue: Vec::new(),
            config,
            cluster: Vec::new(),
            departed: HashMap::new(),
            spawner,
        }
    }

    /// Starts a worker of `job_id`; returns its id.
    pub fn start_worker(&mut self, job_id: &str, extra_args: &[String]) -> Option<String> {
        let job = self.jobs.get(job_id)?;
        let id = new_id();
        let mut command = job.command.clone();
        command.extend(extra_args.iter().cloned());
        command.extend(["--worker-id".to_string(), id.clone(), "--job-id".to_string(), job_id.to_string()]);
        let log = self.config.log_dir.join(format!("worker-{id}-{job_id}.out"));
        let command = ray_common::process::joined_flags(&command);
        self.spawner.spawn(SpawnRequest { worker_id: id.clone(), command, env: self.config.env.clone(), log });
        self.workers.insert(
            id.clone(),
            Worker { id: id.clone(), pid: 0, job_id: job_id.to_string(), address: String::new(), status: WorkerStatus::Starting, blocked: false },
        );
        Some(id)
    }

    fn starting(&self, job_id: &str) -> usize {
        self.workers.values().filter(|w| w.job_id == job_id && w.status == WorkerStatus::Starting).count()
    }

    fn total_starting(&self) -> usize {
        self.workers.values().filter(|w| w.status == WorkerStatus::Starting).count()
    }

    fn idle_worker(&self, job_id: &str) -> Option<String> {
        // The most recently idle first: its caches are warm.
        self.workers
            .values()
            .filter(|w| w.job_id == job_id)
            .filter_map(|w| match w.status {
                WorkerStatus::Idle(t) => Some((t, w.id.clone())),
                _ => None,
            })
            .max_by_key(|(t, _)| *t)
            .map(|(_, id)| id)
    }

    /// Grants what can be granted now; starts workers for requests that have
    /// resources but no idle worker. Returns the demand by shape.
    pub fn dispatch(&mut self, res: &mut LocalResources, worker_args: &[String]) -> BTreeMap<ResourceSet, DemandCount> {
        // Requests that wait longer than a while are still served in order, but a
        // request that fits is never held up by one that does not (no head-of-line
        // blocking).
        self.queue.retain(|p| !p.reply.is_closed());
        let mut waiting_for_worker: HashMap<String, usize> = HashMap::new();
        let mut i = 0;
        while i < self.queue.len() {
            let p = &self.queue[i];
            if !p.shape.is_subset_of(res.available()) || res.drain_state().is_some() {
                i += 1;
                continue;
            }
            match self.idle_worker(&p.job_id) {
                Some(wid) => {
                    let p = self.queue.remove(i);
                    if !res.try_acquire(&p.shape) {
                        self.queue.insert(i, p);
                        i += 1;
                        continue;
                    }
                    res.lease_started();
                    let lease_id = new_id();
                    let w = self.workers.get_mut(&wid).expect("idle worker exists");
                    w.status = WorkerStatus::Leased(lease_id.clone());
                    let reply = RequestWorkerLeaseReply {
                        lease_id: lease_id.clone(),
                        worker_id: wid.clone(),
                        worker_address: w.address.clone(),
                        worker_pid: w.pid,
                        rejection: String::new(),
                        infeasible: false,
                        spillback_address: String::new(),
                        spillback_node_id: String::new(),
                    };
                    self.leases.insert(lease_id.clone(), Lease { worker_id: wid.clone(), resources: p.shape.clone(), owner: p.owner.clone() });
                    if p.reply.send(reply).is_err() {
                        // The requester went away meanwhile: take it back.
                        self.return_lease(&lease_id, false, res);
                    }
                }
                None => {
                    *waiting_for_worker.entry(p.job_id.clone()).or_default() += 1;
                    i += 1;
                }
            }
        }
        self.spill(res);
        for (job, n) in waiting_for_worker {
            let mut need = n.saturating_sub(self.starting(&job));
            while need > 0 && self.total_starting() < self.config.max_starting.max(1) {
                if self.start_worker(&job, worker_args).is_none() {
                    break;
                }
                need -= 1;
            }
        }
        self.demand(res)
    }

    /// Sends requests this node cannot serve now to a node that has the resources
    /// free (Ray's spillback): the owner asks that node's raylet instead.
    fn spill(&mut self, res: &LocalResources) {
        let mut i = 0;
        while i < self.queue.len() {
            let p = &self.queue[i];
            let local_now = p.shape.is_subset_of(res.available()) && res.drain_state().is_none();
            if p.no_spillback || local_now {
                i += 1;
                continue;
            }
            let target = self.cluster.iter_mut().find(|n| p.shape.is_subset_of(&n.available));
            let Some(node) = target else {
                i += 1;
                continue;
            };
            node.available.subtract(&p.shape);
            let reply = RequestWorkerLeaseReply {
                spillback_address: node.address.clone(),
                spillback_node_id: node.node_id.clone(),
                ..Default::default()
            };
            let p = self.queue.remove(i);
            tracing::debug!(shape = %p.shape, to = %reply.spillback_node_id, "spilling a lease request to another node");
            let _ = p.reply.send(reply);
        }
    }

    /// Demand by shape: ready (resources free, waiting for a worker), backlog
    /// (waiting for resources), infeasible (more than this node has).
    pub fn demand(&self, res: &LocalResources) -> BTreeMap<ResourceSet, DemandCount> {
        let mut d: BTreeMap<ResourceSet, DemandCount> = BTreeMap::new();
        for p in &self.queue {
            let c = d.entry(p.shape.clone()).or_default();
            if !p.shape.is_subset_of(res.total()) {
                c.infeasible += 1;
            } else if p.shape.is_subset_of(res.available()) {
                c.ready += 1;
            } else {
                c.backlog += 1;
            }
        }
        d
    }

    /// Ends a lease: resources back, the worker idle again (or killed when
    /// `disconnect`).
    pub fn return_lease(&mut self, lease_id: &str, disconnect: bool, res: &mut LocalResources) -> bool {
        let Some(lease) = self.leases.remove(lease_id) else { return false };
        let mut to_release = lease.resources.clone();
        if let Some(w) = self.workers.get_mut(&lease.worker_id) {
            if w.blocked {
                // Its CPU was lent out while blocked: only the rest comes back.
                to_release.set(CPU, ray_common::FixedPoint::ZERO);
                w.blocked = false;
            }
            if disconnect {
                crate::worker_pool::kill(w.pid);
                self.remove_worker(&lease.worker_id);
            } else {
                w.status = WorkerStatus::Idle(Instant::now());
            }
        }
        res.release(&to_release);
        res.lease_ended();
        true
    }

    /// Forgets a worker whose process is (being) killed; its exit event still finds
    /// its id to release what it held in the store.
    pub fn remove_worker(&mut self, worker_id: &str) -> Option<Worker> {
        let w = self.workers.remove(worker_id)?;
        if w.pid > 0 {
            self.departed.insert(w.pid, (w.id.clone(), w.address.clone()));
        }
        Some(w)
    }

    /// Removes an idle worker (checked under the caller's lock, so a worker leased
    /// a moment ago is never killed as idle); returns its pid.
    pub fn remove_if_idle(&mut self, worker_id: &str) -> Option<u32> {
        if !matches!(self.workers.get(worker_id)?.status, WorkerStatus::Idle(_)) {
            return None;
        }
        self.remove_worker(worker_id).map(|w| w.pid)
    }

    /// A worker blocked in `ray.get` lends its CPU out; when unblocked it takes it back.
    pub fn set_blocked(&mut self, worker_id: &str, blocked: bool, res: &mut LocalResources) {
        let Some(w) = self.workers.get_mut(worker_id) else { return };
        let WorkerStatus::Leased(lease_id) = &w.status else { return };
        if w.blocked == blocked {
            return;
        }
        let Some(lease) = self.leases.get(lease_id) else { return };
        let cpu: ResourceSet = [(CPU.to_string(), lease.resources.get(CPU))].into_iter().collect();
        w.blocked = blocked;
        if blocked {
            res.release(&cpu);
        } else {
            res.acquire_forced(&cpu);
        }
    }

    /// A worker process exited: its lease (if any) ends.
    /// A worker process exited: its own lease ends, and so do the leases it held as
    /// an owner (the workers running its tasks are stopped: nobody waits for
    /// their results). Returns the worker's id (also for workers already removed).
    pub fn worker_exited(&mut self, pid: u32, res: &mut LocalResources) -> Option<(String, String, bool)> {
        if let Some((id, address)) = self.departed.remove(&pid) {
            self.owner_gone(&id, res);
            return Some((id, address, false));
        }
        let w = self.workers.values().find(|w| w.pid == pid)?.clone();
        let leased = matches!(w.status, WorkerStatus::Leased(_));
        if let WorkerStatus::Leased(lease_id) = &w.status {
            self.return_lease(lease_id, false, res);
        }
        self.workers.remove(&w.id);
        self.owner_gone(&w.id, res);
        Some((w.id, w.address, leased))
    }

    /// The owner `owner_id` is gone: its queued requests are dropped and its leases
    /// end, stopping the workers that run its tasks.
    pub fn owner_gone(&mut self, owner_id: &str, res: &mut LocalResources) -> usize {
        self.queue.retain(|p| p.owner != owner_id);
        let leases: Vec<String> = self.leases.iter().filter(|(_, l)| l.owner == owner_id).map(|(id, _)| id.clone()).collect();
        for l in &leases {
            self.return_lease(l, true, res);
        }
        leases.len()
    }

    /// Idle workers to stop now: beyond the soft limit after the threshold, any
    /// after the maximum idle time.
    pub fn idle_to_kill(&self) -> Vec<String> {
        let mut idle: Vec<(Instant, String)> = self
            .workers
            .values()
            .filter_map(|w| match w.status {
                WorkerStatus::Idle(t) => Some((t, w.id.clone())),
                _ => None,
            })
            .collect();
        idle.sort();
        let mut out = Vec::new();
        let mut count = self.workers.len();
        for (since, id) in idle {
            let age = since.elapsed();
            if age >= self.config.max_idle || (count > self.config.soft_limit && age >= self.config.idle_kill_threshold) {
                out.push(id);
                count -= 1;
            }
        }
        out
    }

    /// A job ended: its workers go, its queued requests are dropped.
    pub fn end_job(&mut self, job_id: &str, res: &mut LocalResources) -> Vec<u32> {
        self.queue.retain(|p| p.job_id != job_id);
        let leases: Vec<String> = self
            .leases
            .iter()
            .filter(|(_, l)| self.workers.get(&l.worker_id).is_some_and(|w| w.job_id == job_id))
            .map(|(id, _)| id.clone())
            .collect();
        for l in leases {
            self.return_lease(&l, false, res);
        }
        let ids: Vec<String> = self.workers.values().filter(|w| w.job_id == job_id).map(|w| w.id.clone()).collect();
        let pids = ids.iter().filter_map(|id| self.remove_worker(id)).map(|w| w.pid).collect();
        self.jobs.remove(job_id);
        pids
    }
}
