//! The one owner of the node's mutable state: resource accounting, workers, jobs,
//! leases, the request queue, the view of the other nodes, and the object store.
//!
//! [`NodeState`] keeps them together, with private fields, behind one lock
//! ([`SharedState`]). Callers (the gRPC handlers, the background loops) name an
//! operation; the state keeps its own invariants:
//!
//! - Every change to something dispatch depends on (queue, workers, jobs, leases,
//!   resources, drain, cluster view) goes through [`NodeState::change`], which
//!   re-dispatches (grants queued leases, starts workers, spills back) and
//!   refreshes the reported demand. No caller can forget it.
//! - Who must be woken (the reporter, readers waiting for a seal) is recorded in
//!   the state and notified by [`StateGuard`] when it is dropped: the one access
//!   path, so no change goes unreported.
//! - Nothing blocks while the lock is held: no filesystem, no process waits, no
//!   awaits (the guard is not `Send`, so it cannot be held across an await in a
//!   handler). Methods return what the caller must do outside (wait for a reply,
//!   log); signals to workers (SIGKILL) and spawn requests to the spawner thread
//!   are non-blocking and stay inside.

use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};

use ray_common::ResourceSet;
use ray_object_store::{Lookup, ObjectStore, RestoreJob, SpillJob, StoreError};
use ray_proto::rpc::autoscaler::DrainNodeReason;
use ray_proto::rpc::{GetNodeStatsReply, ObjectLocation, RequestWorkerLeaseReply, ResourceReport};
use tokio::sync::{Notify, futures::Notified, oneshot};

use crate::bundles::Bundles;
use crate::leases::{ExitedWorker, Job, Leasing, Pending, RemoteNode};
use crate::local_resources::{Drain, LocalResources};
use crate::worker_pool::WorkerPool;

/// Who must hear about what changed since the last time the lock was released.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wake {
    /// Something in the report changed: the reporter sends one now.
    pub report: bool,
    /// An object was sealed: waiting readers look again.
    pub sealed: bool,
}

/// A lease request as the node manager received it.
#[derive(Debug, Clone)]
pub struct LeaseRequest {
    /// Resource shape.
    pub shape: ResourceSet,
    /// Job.
    pub job_id: String,
    /// Owner worker id.
    pub owner: String,
    /// Sent here by another raylet: never passed on again.
    pub no_spillback: bool,
    /// A strategy chose this node: it waits here.
    pub pinned: bool,
    /// The caller waits even for a shape this node can never hold.
    pub wait: bool,
    /// What the lease holds once granted, when not `shape` (an actor's).
    pub hold: Option<ResourceSet>,
    /// A detached actor's lease: it survives its owner and its job.
    pub detached: bool,
    /// The runtime environment its worker needs (JSON; "" = none).
    pub runtime_env: String,
}

/// The answer to a lease request: now (a rejection) or when dispatch decides.
#[derive(Debug)]
pub enum LeaseAnswer {
    /// Refused at once (draining, infeasible).
    Now(RequestWorkerLeaseReply),
    /// Queued: the grant or spillback comes here (dropped if the job ends).
    Later(oneshot::Receiver<RequestWorkerLeaseReply>),
}

/// The node's mutable state. See the module documentation for its rules.
pub struct NodeState {
    node_id: String,
    resources: LocalResources,
    leasing: Leasing,
    store: ObjectStore,
    /// Placement group bundles held here.
    bundles: Bundles,
    /// Worker command of jobs that gave none.
    default_command: Vec<String>,
    report_seq: u64,
    wake: Wake,
    /// Shut down: nothing is dispatched or queued any more.
    stopping: bool,
}

impl NodeState {
    /// A node with `total` resources free, no workers and an empty store.
    pub fn new(node_id: String, total: ResourceSet, pool: WorkerPool, store: ObjectStore, default_command: Vec<String>) -> Self {
        Self {
            node_id,
            resources: LocalResources::new(total),
            leasing: Leasing::new(pool),
            store,
            bundles: Bundles::default(),
            default_command,
            report_seq: 0,
            wake: Wake::default(),
            stopping: false,
        }
    }

    /// The one path for changes that dispatch depends on: runs `f`, wakes the
    /// reporter, then (unless shut down) grants what can be granted, starts
    /// workers, spills back and refreshes the demand.
    fn change<T>(&mut self, f: impl FnOnce(&mut Leasing, &mut LocalResources, &mut ObjectStore) -> T) -> T {
        let out = f(&mut self.leasing, &mut self.resources, &mut self.store);
        self.changed();
        out
    }

    /// The second half of [`Self::change`], for operations that also touch the
    /// bundles: wake the reporter, re-dispatch.
    fn changed(&mut self) {
        self.wake.report = true;
        if self.stopping {
            return;
        }
        let demand = self.leasing.dispatch(&mut self.resources);
        self.resources.replace_demand(demand);
    }

    /// Takes who must be woken (the guard does this on drop; tests look).
    pub fn take_wake(&mut self) -> Wake {
        std::mem::take(&mut self.wake)
    }

    // ----- drivers, workers, jobs -----

    /// A driver connected: its job is defined (with `command`, or the default one)
    /// and workers are prestarted for it.
    pub fn register_driver(&mut self, job_id: &str, pid: u32, worker_id: &str, address: &str, command: Vec<String>) {
        let command = if command.is_empty() { self.default_command.clone() } else { command };
        let job = Job { command, driver_pid: pid, driver_id: worker_id.to_string(), driver_address: address.to_string() };
        self.change(|l, _, _| l.register_driver(job_id, job));
    }

    /// A worker this raylet started is up at `address` and idle. False when this
    /// raylet did not start it.
    pub fn register_worker(&mut self, worker_id: &str, address: &str, pid: u32) -> bool {
        self.change(|l, _, _| l.pool_mut().register(worker_id, address, pid))
    }

    /// A worker's process runs (its pid is known). One whose job ended while it
    /// was being spawned is killed; returns false then. Nothing to dispatch: a
    /// starting worker stays starting.
    pub fn worker_started(&mut self, worker_id: &str, pid: u32) -> bool {
        self.leasing.pool_mut().started(worker_id, pid)
    }

    /// A worker could not be spawned: it is forgotten. Not re-dispatched at once
    /// (a broken worker command would otherwise respawn in a hot loop); the next
    /// change or cluster view refresh starts another.
    pub fn worker_spawn_failed(&mut self, worker_id: &str) {
        self.leasing.pool_mut().spawn_failed(worker_id);
    }

    /// A worker process exited: its lease and the leases it held as an owner end,
    /// its store pins and unsealed objects go, and so do the objects it owned.
    pub fn worker_exited(&mut self, pid: u32) -> Option<ExitedWorker> {
        self.change(|l, res, store| {
            let gone = l.worker_exited(pid, res)?;
            store.disconnect(&gone.id);
            store.delete_owned_by(&gone.address);
            Some(gone)
        })
    }

    /// Stops the idle workers that are due to go; returns (worker id, pid) of each.
    pub fn stop_idle_workers(&mut self) -> Vec<(String, u32)> {
        // A worker that holds leases as an owner (an actor it created lives on
        // them) is not idle: stopping it would end what it owns.
        let owners = self.leasing.active_owners();
        let stopped = self.leasing.pool_mut().stop_idle(&owners);
        if !stopped.is_empty() {
            self.change(|_, _, _| ());
        }
        stopped
    }

    /// The raylet is stopping: every worker is killed, queued requests are
    /// dropped (their callers hear so), and nothing is dispatched any more (it
    /// would start workers again).
    pub fn shut_down(&mut self) {
        self.change(|l, _, _| {
            l.pool_mut().kill_all();
            l.clear_queue();
        });
        self.stopping = true;
    }

    /// Jobs whose driver runs on this node: (job id, driver pid). The caller
    /// checks the pids outside the lock and calls [`Self::driver_exited`].
    pub fn local_drivers(&self) -> Vec<(String, u32)> {
        self.leasing.local_drivers()
    }

    /// The driver `driver_pid` of `job_id` exited: the job ends (its workers are
    /// killed, its queued requests dropped, the driver's pins and objects freed).
    /// Nothing happens if the job has another driver by now; returns whether it ended.
    pub fn driver_exited(&mut self, job_id: &str, driver_pid: u32) -> bool {
        if self.leasing.job(job_id).map(|j| j.driver_pid) != Some(driver_pid) {
            return false;
        }
        self.change(|l, res, store| {
            let Some(job) = l.end_job(job_id, res) else { return false };
            store.disconnect(&job.driver_id);
            store.delete_owned_by(&job.driver_address);
            true
        })
    }

    // ----- leases -----

    /// Queues a lease request, or refuses it at once (the node is draining, or
    /// the shape can never fit here and may not go elsewhere).
    pub fn request_lease(&mut self, req: LeaseRequest) -> LeaseAnswer {
        let reject = |why: String, infeasible: bool| {
            LeaseAnswer::Now(RequestWorkerLeaseReply { rejection: why, infeasible, ..Default::default() })
        };
        if self.stopping {
            return reject("the raylet is shutting down".into(), false);
        }
        if self.resources.drain_state().is_some() {
            return reject("the node is draining".into(), false);
        }
        let fits_total = req.shape.is_subset_of(self.resources.total());
        if !fits_total && ((!req.wait && req.no_spillback) || req.pinned) {
            return reject(format!("this node has {} in total; {} does not fit", self.resources.total(), req.shape), true);
        }
        if !fits_total && req.no_spillback {
            // Sent here for locality or by a stale view: back to the owner's raylet.
            return LeaseAnswer::Now(RequestWorkerLeaseReply {
                rejection: format!("this node has {} in total; {} does not fit", self.resources.total(), req.shape),
                retry: true,
                ..Default::default()
            });
        }
        let (tx, rx) = oneshot::channel();
        let command = self.default_command.clone();
        self.change(|l, _, _| {
            l.ensure_job(&req.job_id, &command);
            l.enqueue(Pending {
                no_spillback: req.no_spillback,
                pinned: req.pinned,
                shape: req.shape,
                hold: req.hold,
                detached: req.detached,
                runtime_env: req.runtime_env,
                job_id: req.job_id,
                owner: req.owner,
                reply: tx,
            });
        });
        LeaseAnswer::Later(rx)
    }

    /// The owner returns a lease: its resources come back and its worker is idle
    /// again (or killed when `disconnect`). False for an unknown lease.
    pub fn return_lease(&mut self, lease_id: &str, disconnect: bool) -> bool {
        self.change(|l, res, _| l.return_lease(lease_id, disconnect, res))
    }

    /// Drops the queued requests of `owner` (only those of `shape` unless it is
    /// empty); returns how many.
    pub fn cancel_lease_requests(&mut self, owner: &str, shape: &ResourceSet) -> u32 {
        self.change(|l, _, _| l.cancel(owner, shape))
    }

    /// A leased worker blocks in `ray.get` (lending its CPU) or wakes up (taking
    /// it back, overdrawing if need be).
    pub fn set_blocked(&mut self, worker_id: &str, blocked: bool) {
        self.change(|l, res, _| l.set_blocked(worker_id, blocked, res));
    }

    /// The owner's task stream to a leased worker closed while the lease was
    /// active: the owner died, so the lease ends and the worker is killed.
    /// Returns whether there was such a lease.
    pub fn lease_stream_closed(&mut self, lease_id: &str) -> bool {
        self.change(|l, res, _| l.return_lease(lease_id, true, res))
    }

    /// Replaces the view of the other nodes (for spillback).
    pub fn set_cluster_view(&mut self, view: Vec<RemoteNode>) {
        self.change(|l, _, _| l.set_cluster_view(view));
    }

    /// A drain request: idle termination is refused while work runs or waits;
    /// preemption is always accepted. Once draining, nothing new is granted.
    pub fn drain(&mut self, reason: DrainNodeReason, message: String) -> Result<(), String> {
        self.change(|_, res, _| res.drain(reason, message))
    }

    /// The accepted drain, if any.
    pub fn drain_state(&self) -> Option<Drain> {
        self.resources.drain_state().cloned()
    }

    // ----- placement group bundles -----

    /// Phase one: sets the bundles aside, all or none.
    pub fn prepare_bundles(&mut self, group: &str, bundles: Vec<(u32, ResourceSet)>) -> Result<(), String> {
        let r = self.bundles.prepare(group, bundles, &mut self.resources);
        self.changed();
        r
    }

    /// Phase two: the prepared bundles become the group's resources.
    pub fn commit_bundles(&mut self, group: &str) -> bool {
        let r = self.bundles.commit(group, &mut self.resources);
        self.changed();
        r
    }

    /// Gives back the group's bundles; workers running on them are stopped.
    /// Returns how many leases ended.
    pub fn cancel_bundles(&mut self, group: &str, indices: &[u32]) -> usize {
        let Some((gone, back)) = self.bundles.cancel(group, indices) else { return 0 };
        self.change(|l, res, _| {
            let ended = l.end_leases_using(&gone, res);
            res.remove_total(&gone);
            res.release(&back);
            ended
        })
    }

    // ----- objects -----

    /// Each owner of a stored object, with one of its objects.
    pub fn store_owners(&self) -> std::collections::HashMap<String, Vec<u8>> {
        self.store.owners()
    }

    /// The owner at `owner` is gone (it stopped answering): its objects go.
    pub fn owner_died(&mut self, owner: &str) -> usize {
        self.change(|_, _, store| store.delete_owned_by(owner))
    }

    /// Where the store file is and how large it is (handed to workers).
    pub fn store_location(&self) -> (String, u64) {
        (self.store.path().display().to_string(), self.store.capacity())
    }

    /// Reserves room for an object owned by `owner`; returns its offset.
    pub fn create_object(&mut self, id: &[u8], size: u64, client: &str, owner: &str) -> Result<u64, StoreError> {
        let r = self.store.create_owned(id, size, client, owner);
        self.wake.report = true;
        r
    }

    /// Reserves room for a copy pulled from another node.
    pub fn create_secondary(&mut self, id: &[u8], size: u64, owner: &str) -> Result<u64, StoreError> {
        let r = self.store.create_secondary(id, size, owner);
        self.wake.report = true;
        r
    }

    /// What a reader of `id` finds here.
    pub fn lookup_object(&self, id: &[u8]) -> Lookup {
        self.store.lookup(id)
    }

    /// Pins a sealed object for `client` (a peer reading it); `None` if not ready here.
    pub fn pin_object(&mut self, id: &[u8], client: &str) -> Option<ray_object_store::Location> {
        self.store.get(id, client)
    }

    /// A pull failed half-way: the unsealed copy goes.
    pub fn abort_object(&mut self, id: &[u8]) {
        self.store.abort(id);
        self.wake.report = true;
    }

    /// True when an object of `size` bytes could ever fit in the store.
    pub fn could_fit(&self, size: u64) -> bool {
        self.store.could_fit(size)
    }

    /// Unpinned primary copies to write to disk to free `need` bytes (marked busy).
    pub fn spill_victims(&mut self, need: u64) -> Vec<SpillJob> {
        self.store.spill_victims(need)
    }

    /// A spill ended (see [`ObjectStore::finish_spill`]); returns files to remove.
    pub fn finish_spill(&mut self, id: &[u8], path: Option<std::path::PathBuf>) -> Vec<std::path::PathBuf> {
        self.store.finish_spill(id, path);
        self.wake.report = true;
        self.store.take_garbage()
    }

    /// Gives a spilled object a region to be read back into.
    pub fn begin_restore(&mut self, id: &[u8]) -> Result<Option<RestoreJob>, StoreError> {
        let r = self.store.begin_restore(id);
        self.wake.report = true;
        r
    }

    /// A restore ended; returns files to remove. Wakes readers.
    pub fn finish_restore(&mut self, job: RestoreJob, ok: bool) -> Vec<std::path::PathBuf> {
        self.store.finish_restore(job, ok);
        self.wake.sealed = true;
        self.wake.report = true;
        self.store.take_garbage()
    }

    /// Spill files of deleted objects, to remove outside the lock.
    pub fn take_spill_garbage(&mut self) -> Vec<std::path::PathBuf> {
        self.store.take_garbage()
    }

    /// Makes an object readable and wakes the readers waiting for it.
    pub fn seal_object(&mut self, id: &[u8]) -> Result<(), StoreError> {
        self.store.seal(id)?;
        self.wake.sealed = true;
        Ok(())
    }

    /// Pins and locates `ids` for `client` once all are sealed, or at once (the
    /// missing ones not found) when `give_up`. None means: wait for a seal.
    pub fn get_objects(&mut self, ids: &[Vec<u8>], client: &str, give_up: bool) -> Option<Vec<ObjectLocation>> {
        if !give_up && !ids.iter().all(|id| self.store.is_sealed(id)) {
            return None;
        }
        Some(
            ids.iter()
                .map(|id| match self.store.get(id, client) {
                    Some(loc) => ObjectLocation { object_id: id.clone(), found: true, offset: loc.offset, size: loc.size },
                    None => ObjectLocation { object_id: id.clone(), found: false, offset: 0, size: 0 },
                })
                .collect(),
        )
    }

    /// Drops one pin of `client` on each object.
    pub fn release_objects(&mut self, ids: &[Vec<u8>], client: &str) {
        for id in ids {
            self.store.release(id, client);
        }
        self.wake.report = true;
    }

    /// The owner deletes objects (freed once no reader pins them).
    pub fn delete_objects(&mut self, ids: &[Vec<u8>]) {
        for id in ids {
            self.store.delete(id);
        }
        self.wake.report = true;
    }

    // ----- snapshots -----

    /// What `GetNodeStats` answers.
    pub fn stats(&self) -> GetNodeStatsReply {
        use ray_proto::rpc::NodeState as Wire;
        let r = &self.resources;
        let st = self.store.stats();
        GetNodeStatsReply {
            node_id: self.node_id.clone(),
            resources_total: r.total().to_f64_map(),
            resources_available: r.available().to_f64_map(),
            demand: r.demand_report(),
            state: if r.drain_state().is_some() { Wire::Draining as i32 } else { Wire::Alive as i32 },
            num_workers: self.leasing.pool().len() as u32,
            object_store_used_bytes: self.store.used(),
            object_store_capacity_bytes: self.store.capacity(),
            num_objects: self.store.len() as u32,
            spilled_bytes: st.spilled_bytes,
            spilled_objects: st.spilled_objects as u32,
            spilled_total: st.spilled_total,
            restored_total: st.restored_total,
            evicted_total: st.evicted_total,
        }
    }

    /// What `/metrics` reports: the node's stats and its workers by status.
    pub fn metrics(&self) -> (GetNodeStatsReply, crate::worker_pool::WorkerCounts) {
        (self.stats(), self.leasing.pool().counts())
    }

    /// The next report to the GCS (numbered).
    pub fn report(&mut self) -> ResourceReport {
        self.report_seq += 1;
        let r = &self.resources;
        ResourceReport {
            node_id: self.node_id.clone(),
            resources_total: r.total().to_f64_map(),
            resources_available: r.available().to_f64_map(),
            demand: r.demand_report(),
            gang_demand: Vec::new(),
            seq: self.report_seq,
            idle_duration_ms: r.idle_duration_ms(),
            object_store_bytes_used: self.store.used(),
        }
    }
}

/// The node state behind its one lock, with the notifiers its guard wakes.
pub struct SharedState {
    state: Mutex<NodeState>,
    /// Woken when the report changed (one stored permit: a change while the
    /// reporter is busy is not lost).
    changed: Notify,
    /// Woken (all waiters) when an object is sealed.
    sealed: Notify,
}

impl SharedState {
    /// Puts `state` behind the lock.
    pub fn new(state: NodeState) -> Self {
        Self { state: Mutex::new(state), changed: Notify::new(), sealed: Notify::new() }
    }

    /// Locks the state. Keep the guard for one operation: nothing may block while
    /// it is held. Dropping it wakes whoever the operation said must hear.
    pub fn lock(&self) -> StateGuard<'_> {
        StateGuard { guard: self.state.lock().unwrap_or_else(|p| p.into_inner()), changed: &self.changed, sealed: &self.sealed }
    }

    /// Completes when the report changed (since the last such wake-up).
    pub fn changed(&self) -> Notified<'_> {
        self.changed.notified()
    }

    /// A future that completes when an object is sealed after this call (registered
    /// at once, so a seal between a check and the wait is not missed).
    pub fn sealed_notifier(&self) -> Pin<Box<Notified<'_>>> {
        let mut n = Box::pin(self.sealed.notified());
        n.as_mut().enable();
        n
    }
}

/// The locked state. Wakes the reporter and readers on drop, as the operations
/// done through it asked.
pub struct StateGuard<'a> {
    guard: MutexGuard<'a, NodeState>,
    changed: &'a Notify,
    sealed: &'a Notify,
}

impl Deref for StateGuard<'_> {
    type Target = NodeState;
    fn deref(&self) -> &NodeState {
        &self.guard
    }
}

impl DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut NodeState {
        &mut self.guard
    }
}

impl Drop for StateGuard<'_> {
    fn drop(&mut self) {
        // Notifying never blocks; the mutex is released right after.
        let wake = self.guard.take_wake();
        if wake.report {
            self.changed.notify_one();
        }
        if wake.sealed {
            self.sealed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests;
