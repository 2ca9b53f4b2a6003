//! Submitting tasks: resolve owned arguments, queue by [`QueueKey`], lease workers
//! from the raylet (following spillback to other nodes), and push tasks straight
//! to the leased workers over one stream per lease (no raylet hop per task).
//! Results come back on the same stream; a broken stream means the worker died,
//! and its tasks are retried or fail.
//!
//! The books live in [`queues::Queues`] (no I/O, unit-tested); this module and
//! its siblings do the calls: `leases.rs` asks for and returns leases, `results.rs`
//! reads task streams.

pub(crate) mod leases;
pub mod queues;
mod results;
pub mod strategy;

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use ray_common::{ObjectId, ResourceSet};
use ray_proto::rpc::{CancelTaskRequest, CancelWorkerLeaseRequest, SerializedObject, TaskArg, TaskSpec, task_arg};

use crate::context::Context;
use crate::error::{CoreError, SystemErrorKind, system_error};
use crate::ownership::{Ownership, Reference};
use queues::{Cancel, Lineage, PumpOut, QueueKey, Queues, TaskEntry, TaskState};
pub use strategy::{LabelExpr, LabelOp, Strategy};

/// An argument as the frontend gives it.
pub enum ArgIn {
    /// A value (serialized).
    Value(SerializedObject),
    /// A reference.
    Ref(Reference),
}

impl ArgIn {
    /// The argument as a task spec carries it.
    pub fn into_task_arg(self) -> TaskArg {
        TaskArg {
            arg: Some(match self {
                Self::Value(v) => task_arg::Arg::Value(v),
                Self::Ref(r) => task_arg::Arg::PlasmaRef(ray_proto::rpc::ObjectRefProto { object_id: r.id.to_vec(), owner_address: r.owner }),
            }),
        }
    }
}

/// A task as the frontend submits it.
pub struct SubmitSpec {
    /// Function key in the GCS KV.
    pub function_id: Vec<u8>,
    /// Function name (logs, output prefixes).
    pub function_name: String,
    /// Arguments.
    pub args: Vec<ArgIn>,
    /// Names of keyword arguments (the last ones of `args`).
    pub kwarg_names: Vec<String>,
    /// Number of return objects.
    pub num_returns: u32,
    /// Resources it needs.
    pub resources: ResourceSet,
    /// Retries on worker failure (-1 = unlimited).
    pub max_retries: i64,
    /// Also retry when the task raises.
    pub retry_exceptions: bool,
    /// Refs inside argument values (kept alive until the task ends).
    pub nested_refs: Vec<Reference>,
    /// Where it may run.
    pub strategy: Strategy,
    /// The placement group it runs in (hex id), its bundle (-1: any) and whether
    /// the tasks it submits run in the group too.
    pub placement_group: Option<(String, i64, bool)>,
    /// Fixed returns, or a generator's.
    pub returns: crate::generators::ReturnKind,
    /// The runtime environment its worker needs (JSON; "" = none).
    pub runtime_env: String,
}

/// Submits this worker's tasks and owns its leases and queues.
pub(crate) struct Submitter {
    pub(crate) ctx: Arc<Context>,
    pub(crate) own: Arc<Ownership>,
    queues: Mutex<Queues>,
    /// SPREAD's turns.
    spread_turn: strategy::SpreadTurns,
}

impl Submitter {
    pub fn new(ctx: Arc<Context>, own: Arc<Ownership>) -> Arc<Self> {
        let queues = Mutex::new(Queues::new(ctx.max_inflight));
        let me = Arc::new(Self { ctx, own, queues, spread_turn: strategy::SpreadTurns::default() });
        me.ctx.rt.spawn(sweeper(Arc::downgrade(&me)));
        me
    }

    fn queues(&self) -> MutexGuard<'_, Queues> {
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Submits a task; returns its return object ids (owned here), each with one
    /// reference already counted for the caller.
    pub fn submit(self: &Arc<Self>, spec: SubmitSpec) -> Vec<ObjectId> {
        let id = self.ctx.ids.task_id();
        self.ctx.task_events.submitted(&self.ctx, id, &spec.function_name, crate::task_events::NORMAL_TASK, "");
        let num_returns = spec.num_returns.max(1);
        let returns: Vec<ObjectId> = (1..=num_returns).map(|i| ObjectId::for_return(id, i)).collect();
        let arg_refs: Vec<ObjectId> = spec.args.iter().filter_map(|a| if let ArgIn::Ref(r) = a { Some(r.id) } else { None }).collect();
        let nested: Vec<ObjectId> = spec.nested_refs.iter().map(|r| r.id).collect();
        self.own.generators.register(id, spec.returns);
        let (held, waiting) = self.own.prepare_task(&arg_refs, &nested, &returns);
        let mut args: Vec<TaskArg> = spec.args.into_iter().map(ArgIn::into_task_arg).collect();
        if waiting.is_empty() {
            self.own.inline_args(&mut args);
        }
        let entry = TaskEntry {
            id,
            spec: TaskSpec {
                task_id: id.as_bytes().to_vec(),
                job_id: self.ctx.job_id.to_string(),
                function_id: spec.function_id,
                function_name: spec.function_name,
                args,
                kwarg_names: spec.kwarg_names,
                num_returns,
                return_ids: returns.iter().map(ObjectId::to_vec).collect(),
                owner_address: self.ctx.address.clone(),
                attempt: 0,
                resources: spec.resources.to_f64_map(),
                placement_group_id: spec.placement_group.as_ref().map(|p| p.0.clone()).unwrap_or_default(),
                placement_group_bundle_index: spec.placement_group.as_ref().map(|p| p.1).unwrap_or(-1),
                placement_group_capture_child_tasks: spec.placement_group.as_ref().is_some_and(|p| p.2),
                generator: spec.returns.wire(),
                ..Default::default()
            },
            key: QueueKey::with_env(spec.resources, spec.strategy, spec.runtime_env),
            return_ids: returns.clone(),
            retries_left: spec.max_retries,
            retry_exceptions: spec.retry_exceptions,
            held,
            state: TaskState::Resolving,
            cancelled: false,
        };
        if waiting.is_empty() {
            let out = {
                let mut q = self.queues();
                q.add(entry);
                q.enqueue(id)
            };
            self.act(out);
        } else {
            self.queues().add(entry);
            let me = self.clone();
            self.ctx.rt.spawn(async move {
                for arg in waiting {
                    let _ = me.own.owned_value_by(arg, None).await;
                }
                // Inlined outside the books' lock: the arguments leave the entry for a moment.
                let Some(mut args) = me.queues().take_args(id) else { return };
                me.own.inline_args(&mut args);
                let out = me.queues().resolved(id, args);
                me.act(out);
            });
        }
        returns
    }

    /// Runs the task of `lineage` again to remake its lost returns (already
    /// pending again in the ownership table), taking one of its retries.
    pub fn resubmit(self: &Arc<Self>, lineage: &Lineage) {
        let Ok(id) = ray_common::TaskId::from_bytes(&lineage.spec.task_id) else { return };
        let mut spec = lineage.spec.clone();
        spec.attempt += 1;
        let entry = TaskEntry {
            id,
            return_ids: spec.return_ids.iter().filter_map(|r| ObjectId::from_bytes(r).ok()).collect(),
            spec,
            key: lineage.key.clone(),
            retries_left: if lineage.retries_left > 0 { lineage.retries_left - 1 } else { lineage.retries_left },
            retry_exceptions: lineage.retry_exceptions,
            held: Vec::new(),
            state: TaskState::Resolving,
            cancelled: false,
        };
        tracing::info!(task = %id, function = %entry.spec.function_name, "an object it returned was lost; running the task again");
        let out = {
            let mut q = self.queues();
            q.add(entry);
            q.enqueue(id)
        };
        self.act(out);
    }

    /// Fails every task waiting in `key`'s queue: no node can ever run them.
    fn fail_unschedulable(self: &Arc<Self>, key: &QueueKey, why: &str) {
        let failed = self.queues().take_waiting(key);
        let err = system_error(SystemErrorKind::TaskUnschedulableError, &format!("The task is not schedulable: {why}"));
        for t in failed {
            tracing::warn!(task = %t.id, function = %t.spec.function_name, "{why}");
            self.ctx.task_events.ended(t.id, t.spec.attempt, Some("TASK_UNSCHEDULABLE_ERROR"));
            self.own.task_failed(&t.return_ids, &err, &t.held);
        }
    }

    /// Sends the lease requests and cancellations the books asked for.
    fn act(self: &Arc<Self>, out: PumpOut) {
        for key in out.request_leases {
            let me = self.clone();
            self.ctx.rt.spawn(async move { me.request_lease(key).await });
        }
        for key in out.cancel_requests {
            let mut raylet = self.ctx.raylet.clone();
            let req = CancelWorkerLeaseRequest { owner_worker_id: self.ctx.worker_id.to_string(), resources: key.shape().to_f64_map() };
            self.ctx.rt.spawn(async move {
                let _ = raylet.cancel_worker_lease(req).await;
            });
        }
    }

    /// Cancels the task producing `object`: a task not yet running never runs; a
    /// running one is interrupted by its worker (or the worker exits, with `force`).
    pub fn cancel(self: &Arc<Self>, object: ObjectId, force: bool) -> Result<(), CoreError> {
        let task = object.task_id();
        let found = self.queues().cancel(task);
        match found {
            Cancel::Unknown => Ok(()),
            Cancel::Dropped(t) => {
                self.ctx.task_events.ended(t.id, t.spec.attempt, Some("TASK_CANCELLED"));
                let err = system_error(SystemErrorKind::TaskCancelledError, "the task was cancelled before it ran");
                self.own.task_failed(&t.return_ids, &err, &t.held);
                Ok(())
            }
            Cancel::Running(addr) => self.ctx.rt.block_on(async {
                let mut c = self.ctx.peers.worker(&addr).await.map_err(|e| CoreError::Rpc(format!("cannot reach the worker at {addr}: {e}")))?;
                // A task just pushed may still be on its way to the worker, which
                // then knows nothing of it yet: ask again while it is out there.
                let deadline = tokio::time::Instant::now() + CANCEL_IN_TRANSIT;
                loop {
                    let attempted = c
                        .cancel_task(CancelTaskRequest { task_id: task.as_bytes().to_vec(), force })
                        .await
                        .map_err(|s| CoreError::Rpc(s.message().to_string()))?
                        .into_inner()
                        .attempted;
                    if attempted || tokio::time::Instant::now() >= deadline {
                        if !force {
                            self.watch_cancel(task, addr.clone(), c.clone());
                        }
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    if !matches!(self.queues().running_on(task), Some(a) if a == addr) {
                        return Ok(());
                    }
                }
            }),
        }
    }

    /// After `ray.cancel` of a task running on `addr`: while it still runs
    /// there, asks again now and then (a task that reached its worker late, or
    /// an interrupt that came before the task could take it, is cancelled
    /// then; asking again never interrupts a task twice).
    fn watch_cancel(self: &Arc<Self>, task: ray_common::TaskId, addr: String, mut c: crate::context::WorkerClient) {
        let weak = Arc::downgrade(self);
        self.ctx.rt.spawn(async move {
            let until = tokio::time::Instant::now() + CANCEL_WATCH;
            while tokio::time::Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let Some(s) = weak.upgrade() else { return };
                if !matches!(s.queues().running_on(task), Some(a) if a == addr) {
                    return;
                }
                drop(s);
                let _ = c.cancel_task(CancelTaskRequest { task_id: task.as_bytes().to_vec(), force: false }).await;
            }
        });
    }

    /// Returns every lease (a driver's job is ending).
    pub async fn return_all(&self) {
        let keys = self.queues().lease_keys();
        for k in keys {
            self.return_lease(k, false).await;
        }
    }
}

/// How long a cancel keeps asking a worker that does not know the task yet.
const CANCEL_IN_TRANSIT: Duration = Duration::from_secs(2);
/// How long, after that, a cancelled task still running is asked again.
const CANCEL_WATCH: Duration = Duration::from_secs(30);

/// Returns leases idle past the linger time; stops when the submitter is gone.
async fn sweeper(weak: Weak<Submitter>) {
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut n = 0u64;
    loop {
        tick.tick().await;
        let Some(s) = weak.upgrade() else { return };
        let idle = s.queues().idle_leases(s.ctx.lease_linger, None);
        for key in idle {
            s.return_lease(key, false).await;
        }
        n += 1;
        if n % 20 == 0 {
            s.fail_tasks_of_removed_groups().await;
        }
    }
}

/// The placement group a queue's tasks run in (from Ray's `bundle_group_<id>`
/// resource), if any.
fn group_of(key: &QueueKey) -> Option<String> {
    key.shape()
        .iter()
        .find_map(|(name, _)| name.strip_prefix("bundle_group_").map(|rest| rest.rsplit('_').next().unwrap_or(rest).to_string()))
}

impl Submitter {
    /// Tasks waiting for the bundles of a placement group that was removed can
    /// never run: their lease requests are cancelled and they fail with
    /// `TaskUnschedulableError`, as in Ray.
    async fn fail_tasks_of_removed_groups(self: &Arc<Self>) {
        let keys = self.queues().waiting_keys();
        for key in keys {
            let Some(group) = group_of(&key) else { continue };
            let req = ray_proto::rpc::GetPlacementGroupRequest { placement_group_id: group.clone(), ..Default::default() };
            let Ok(reply) = self.ctx.gcs.placement_groups.clone().get_placement_group(req).await else { continue };
            let removed = reply.into_inner().group.is_none_or(|g| g.state == "REMOVED");
            if removed {
                self.fail_unschedulable(&key, &format!("its placement group {group} was removed"));
                self.act(PumpOut { request_leases: Vec::new(), cancel_requests: vec![key] });
            }
        }
    }
}
