//! Leasing workers to task owners: jobs, the queue of lease requests, dispatch
//! onto free resources and idle workers (starting workers on demand, spilling to
//! other nodes), returns, blocked workers lending their CPU, owners and jobs that
//! go away, and the demand this node reports to the GCS.
//!
//! Every method takes the node's [`LocalResources`] from its one owner
//! (`state.rs`), which re-dispatches after each change; none of them blocks.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use ray_common::ResourceSet;
use ray_common::resources::CPU;
use ray_proto::rpc::RequestWorkerLeaseReply;
use tokio::sync::oneshot;

use crate::local_resources::{DemandCount, LocalResources};
use crate::worker_pool::{Exited, WorkerPool, WorkerStatus};

/// A job's settings on this node.
#[derive(Debug, Clone)]
pub struct Job {
    /// argv that starts a worker of this job.
    pub command: Vec<String>,
    /// The driver's pid (watched: the job ends when it exits); 0 when the driver
    /// is on another node.
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
    /// A detached actor's: it outlives its owner and its job.
    pub detached: bool,
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
    /// All its resources.
    pub total: ResourceSet,
}

impl RemoteNode {
    /// How busy the node would be in the resources `shape` asks for (0 idle, 1
    /// full): the largest used share among them.
    fn load_for(&self, shape: &ResourceSet) -> f64 {
        shape
            .iter()
            .map(|(name, _)| {
                let total = self.total.get(name).to_f64();
                if total <= 0.0 { 1.0 } else { 1.0 - self.available.get(name).to_f64() / total }
            })
            .fold(0.0, f64::max)
    }
}

/// A lease request waiting for resources or a worker.
pub struct Pending {
    /// Sent here by another raylet: never passed on again.
    pub no_spillback: bool,
    /// A strategy chose this node: it waits here, whatever else is free.
    pub pinned: bool,
    /// Resource shape (what must be free to grant it).
    pub shape: ResourceSet,
    /// What the lease holds once granted, when not `shape` (an actor that needs
    /// a CPU to be placed but none to run).
    pub hold: Option<ResourceSet>,
    /// A detached actor's lease.
    pub detached: bool,
    /// The runtime environment its worker needs (JSON; "" = none).
    pub runtime_env: String,
    /// Job.
    pub job_id: String,
    /// Owner worker id.
    pub owner: String,
    /// Where the answer goes.
    pub reply: oneshot::Sender<RequestWorkerLeaseReply>,
}

/// A worker process that exited, as the store and the log need it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExitedWorker {
    /// Worker id (its store client id).
    pub id: String,
    /// Its core worker's address (it owned objects).
    pub address: String,
    /// It held a lease when it exited.
    pub leased: bool,
}

/// Workers, jobs, leases and the queue of one node.
pub struct Leasing {
    pool: WorkerPool,
    jobs: HashMap<String, Job>,
    leases: HashMap<String, Lease>,
    /// Waiting requests, in arrival order.
    queue: Vec<Pending>,
    /// The other nodes, from the GCS.
    cluster: Vec<RemoteNode>,
}

impl Leasing {
    /// No jobs, no leases, an empty queue.
    pub fn new(pool: WorkerPool) -> Self {
        Self { pool, jobs: HashMap::new(), leases: HashMap::new(), queue: Vec::new(), cluster: Vec::new() }
    }

    /// The worker pool.
    pub fn pool(&self) -> &WorkerPool {
        &self.pool
    }

    /// The worker pool, for changes that touch no lease (a process started or
    /// registered, a failed spawn, idle workers stopped, all killed).
    pub fn pool_mut(&mut self) -> &mut WorkerPool {
        &mut self.pool
    }

    /// A job by id.
    pub fn job(&self, job_id: &str) -> Option<&Job> {
        self.jobs.get(job_id)
    }

    /// Jobs whose driver runs on this node: (job id, driver pid).
    pub fn local_drivers(&self) -> Vec<(String, u32)> {
        self.jobs.iter().filter(|(_, j)| j.driver_pid > 0).map(|(id, j)| (id.clone(), j.driver_pid)).collect()
    }

    /// A driver connected: its job is (re)defined, and workers are prestarted so
    /// its first tasks find them warm.
    pub fn register_driver(&mut self, job_id: &str, job: Job) {
        self.jobs.insert(job_id.to_string(), job);
        let n = self.pool.config().soft_limit.min(8);
        let have = self.pool.of_job(job_id).len();
        for _ in have..n {
            self.start_worker(job_id, "");
        }
    }

    /// Adds `job_id` with `command` unless it is known (a lease request whose
    /// driver is on another node).
    pub fn ensure_job(&mut self, job_id: &str, command: &[String]) {
        self.jobs.entry(job_id.to_string()).or_insert_with(|| Job {
            command: command.to_vec(),
            driver_pid: 0,
            driver_id: String::new(),
            driver_address: String::new(),
        });
    }

    /// Queues a request (granted by the next dispatch if it can be).
    pub fn enqueue(&mut self, p: Pending) {
        self.queue.push(p);
    }

    /// Drops the queued requests of `owner` (of `shape` only, unless it is
    /// empty); returns how many.
    pub fn cancel(&mut self, owner: &str, shape: &ResourceSet) -> u32 {
        let before = self.queue.len();
        self.queue.retain(|p| !(p.owner == owner && (shape.is_empty() || &p.shape == shape)));
        (before - self.queue.len()) as u32
    }

    /// Drops every queued request (their callers hear that it was dropped).
    pub fn clear_queue(&mut self) {
        self.queue.clear();
    }

    /// Replaces the view of the other nodes.
    pub fn set_cluster_view(&mut self, view: Vec<RemoteNode>) {
        self.cluster = view;
    }

    fn start_worker(&mut self, job_id: &str, runtime_env: &str) -> Option<String> {
        let job = self.jobs.get(job_id)?;
        Some(self.pool.start(job_id, &job.command, runtime_env))
    }

    /// Grants what can be granted now; starts workers for requests that have
    /// resources but no idle worker; spills what another node can take. Returns
    /// the demand by shape.
    pub fn dispatch(&mut self, res: &mut LocalResources) -> BTreeMap<ResourceSet, DemandCount> {
        // Requests that wait longer than a while are still served in order, but a
        // request that fits is never held up by one that does not (no head-of-line
        // blocking).
        self.queue.retain(|p| !p.reply.is_closed());
        self.reject_stale_spillbacks(res);
        let mut waiting_for_worker: HashMap<(String, String), usize> = HashMap::new();
        let mut i = 0;
        while i < self.queue.len() {
            let p = &self.queue[i];
            if !p.shape.is_subset_of(res.available()) || res.drain_state().is_some() {
                i += 1;
                continue;
            }
            match self.pool.idle_worker(&p.job_id, &p.runtime_env) {
                Some(wid) => {
                    let p = self.queue.remove(i);
                    let held = p.hold.clone().unwrap_or_else(|| p.shape.clone());
                    if !res.try_acquire(&held) {
                        self.queue.insert(i, p);
                        i += 1;
                        continue;
                    }
                    res.lease_started();
                    let lease_id = ray_common::ids::random_hex(16);
                    let w = self.pool.get_mut(&wid).expect("idle worker exists");
                    w.status = WorkerStatus::Leased(lease_id.clone());
                    let reply = RequestWorkerLeaseReply {
                        lease_id: lease_id.clone(),
                        worker_id: wid.clone(),
                        worker_address: w.address.clone(),
                        worker_pid: w.pid,
                        ..Default::default()
                    };
                    self.leases.insert(lease_id.clone(), Lease { worker_id: wid.clone(), resources: held, owner: p.owner.clone(), detached: p.detached });
                    if p.reply.send(reply).is_err() {
                        // The requester went away meanwhile: take it back.
                        self.return_lease(&lease_id, false, res);
                    }
                }
                None => {
                    *waiting_for_worker.entry((p.job_id.clone(), p.runtime_env.clone())).or_default() += 1;
                    i += 1;
                }
            }
        }
        self.spill(res);
        for ((job, env), n) in waiting_for_worker {
            let mut need = n.saturating_sub(self.pool.starting(&job, &env));
            while need > 0 && self.pool.total_starting() < self.pool.config().max_starting.max(1) {
                if self.start_worker(&job, &env).is_none() {
                    break;
                }
                need -= 1;
            }
        }
        self.demand(res)
    }

    /// A request spilled here was sent because this node looked free. If its
    /// resources are taken now, it goes back to its owner, which asks its own
    /// raylet again (with a fresher view), instead of waiting here while other
    /// nodes, perhaps just launched for it, stand idle (Ray's grant-or-reject).
    fn reject_stale_spillbacks(&mut self, res: &LocalResources) {
        let mut i = 0;
        while i < self.queue.len() {
            let p = &self.queue[i];
            let fits = p.shape.is_subset_of(res.available()) && res.drain_state().is_none();
            if !p.no_spillback || p.pinned || fits {
                i += 1;
                continue;
            }
            let p = self.queue.remove(i);
            tracing::debug!(shape = %p.shape, "a spilled lease request no longer fits here; sending it back");
            let _ = p.reply.send(RequestWorkerLeaseReply {
                rejection: "the resources were taken before a worker was free; ask again".into(),
                retry: true,
                ..Default::default()
            });
        }
    }

    /// Sends requests this node cannot serve now to a node that has the resources
    /// free (Ray's spillback): the owner asks that node's raylet instead. Among
    /// the nodes that can take it, the least loaded in what it asks for is chosen
    /// (Ray's hybrid policy spreads once the local node is busy).
    fn spill(&mut self, res: &LocalResources) {
        let mut i = 0;
        while i < self.queue.len() {
            let p = &self.queue[i];
            let local_now = p.shape.is_subset_of(res.available()) && res.drain_state().is_none();
            if p.no_spillback || p.pinned || local_now {
                i += 1;
                continue;
            }
            let target = self
                .cluster
                .iter_mut()
                .filter(|n| p.shape.is_subset_of(&n.available))
                .min_by(|a, b| a.load_for(&p.shape).total_cmp(&b.load_for(&p.shape)));
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
    fn demand(&self, res: &LocalResources) -> BTreeMap<ResourceSet, DemandCount> {
        let mut d: BTreeMap<ResourceSet, DemandCount> = BTreeMap::new();
        for p in &self.queue {
            let c = d.entry(p.shape.clone()).or_default();
            if !p.shape.is_subset_of(res.total()) {
                c.infeasible += 1;
            } else if p.shape.is_subset_of(res.available()) && res.drain_state().is_none() {
                c.ready += 1;
            } else {
                c.backlog += 1;
            }
        }
        d
    }

    /// Ends a lease: resources back, the worker idle again (or killed when
    /// `disconnect`). False for an unknown lease.
    pub fn return_lease(&mut self, lease_id: &str, disconnect: bool, res: &mut LocalResources) -> bool {
        let Some(lease) = self.leases.remove(lease_id) else { return false };
        let mut to_release = lease.resources.clone();
        if let Some(w) = self.pool.get_mut(&lease.worker_id) {
            if w.blocked {
                // Its CPU was lent out while blocked: only the rest comes back.
                to_release.set(CPU, ray_common::FixedPoint::ZERO);
                w.blocked = false;
            }
            if disconnect {
                self.pool.kill(&lease.worker_id);
            } else {
                w.status = WorkerStatus::Idle(Instant::now());
            }
        }
        res.release(&to_release);
        res.lease_ended();
        true
    }

    /// Ends the leases holding any of `names` (a placement group's resources that
    /// are going away): their workers are stopped. Returns how many.
    pub fn end_leases_using(&mut self, names: &ResourceSet, res: &mut LocalResources) -> usize {
        let ids: Vec<String> = self
            .leases
            .iter()
            .filter(|(_, l)| l.resources.iter().any(|(k, _)| names.get(k).is_positive()))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &ids {
            self.return_lease(id, true, res);
        }
        ids.len()
    }

    /// A worker blocked in `ray.get` lends its CPU out; when unblocked it takes it
    /// back (even beyond what is free: the shortfall is owed).
    pub fn set_blocked(&mut self, worker_id: &str, blocked: bool, res: &mut LocalResources) {
        let Some(w) = self.pool.get_mut(worker_id) else { return };
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

    /// A worker process exited: its own lease ends, and so do the leases it held
    /// as an owner (the workers running its tasks are stopped: nobody waits for
    /// their results). Returns the worker (also for workers already removed).
    pub fn worker_exited(&mut self, pid: u32, res: &mut LocalResources) -> Option<ExitedWorker> {
        // Returned while the worker is still in the pool, so a CPU it lent out
        // while blocked is not given back twice.
        let lease = self.pool.lease_of_pid(pid);
        if let Some(lease_id) = &lease {
            self.return_lease(lease_id, false, res);
        }
        let gone = match self.pool.exited(pid)? {
            Exited::Departed { id, address } => ExitedWorker { id, address, leased: false },
            Exited::Live(w) => ExitedWorker { id: w.id, address: w.address, leased: lease.is_some() },
        };
        self.owner_gone(&gone.id, res);
        Some(gone)
    }

    /// Workers (by id) that hold at least one lease as an owner.
    pub fn active_owners(&self) -> std::collections::HashSet<String> {
        self.leases.values().map(|l| l.owner.clone()).collect()
    }

    /// The owner `owner_id` is gone: its queued requests are dropped and its leases
    /// end, stopping the workers that run its tasks. Returns how many leases.
    pub fn owner_gone(&mut self, owner_id: &str, res: &mut LocalResources) -> usize {
        self.queue.retain(|p| p.owner != owner_id);
        let leases: Vec<String> =
            self.leases.iter().filter(|(_, l)| l.owner == owner_id && !l.detached).map(|(id, _)| id.clone()).collect();
        for l in &leases {
            self.return_lease(l, true, res);
        }
        leases.len()
    }

    /// A job ended: its leases end, its workers are killed, its queued requests
    /// are dropped (their callers hear so). Returns the job, if it was known.
    pub fn end_job(&mut self, job_id: &str, res: &mut LocalResources) -> Option<Job> {
        self.queue.retain(|p| p.job_id != job_id);
        let leases: Vec<String> = self
            .leases
            .iter()
            .filter(|(_, l)| !l.detached && self.pool.get(&l.worker_id).is_some_and(|w| w.job_id == job_id))
            .map(|(id, _)| id.clone())
            .collect();
        for l in leases {
            self.return_lease(&l, false, res);
        }
        // Detached actors' workers live on.
        let detached: std::collections::HashSet<&str> =
            self.leases.values().filter(|l| l.detached).map(|l| l.worker_id.as_str()).collect();
        let doomed: Vec<String> = self.pool.of_job(job_id).into_iter().filter(|w| !detached.contains(w.as_str())).collect();
        for id in doomed {
            self.pool.kill(&id);
        }
        self.jobs.remove(job_id)
    }
}
