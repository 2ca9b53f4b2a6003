//! The owner's side of an actor: lease a worker for it, run its creation task
//! there, report it ALIVE, watch its worker, and restart it when the worker dies
//! (up to `max_restarts`), reporting each step to the GCS actor table.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ray_common::{ObjectId, ResourceSet};
use ray_proto::rpc::{
    ActorCreationSpec, ActorTableData, PushTasksReply, PushTasksRequest, ReturnWorkerRequest, TaskArg, TaskResult, TaskSpec,
    UpdateActorRequest,
};

use super::Actors;
use crate::context::Context;
use crate::error::KIND_SYSTEM_ERROR;
use crate::ownership::Reference;
use crate::submitter::leases::LeaseExtra;
use crate::submitter::queues::QueueKey;
use crate::submitter::{ArgIn, Strategy};

/// An actor as its creator asks for it.
pub struct ActorCreateSpec {
    /// The pickled class's key in the GCS KV.
    pub class_id: Vec<u8>,
    /// The class name.
    pub class_name: String,
    /// `__init__` arguments.
    pub args: Vec<ArgIn>,
    /// Names of keyword arguments (the last ones of `args`).
    pub kwarg_names: Vec<String>,
    /// Refs inside argument values.
    pub nested_refs: Vec<Reference>,
    /// What must be free on a node to place it.
    pub placement: ResourceSet,
    /// What it holds while it lives, when not `placement`.
    pub hold: Option<ResourceSet>,
    /// Where it may run.
    pub strategy: Strategy,
    /// Its placement group (hex id), bundle (-1: any), capture child tasks.
    pub placement_group: Option<(String, i64, bool)>,
    /// Name ("" = none) and namespace.
    pub name: String,
    /// Namespace of the name.
    pub namespace: String,
    /// Outlives its owner.
    pub detached: bool,
    /// Return the live actor of the same name instead of failing.
    pub get_if_exists: bool,
    /// Restarts allowed (-1 = unlimited).
    pub max_restarts: i64,
    /// Retries of calls when it dies (-1 = unlimited).
    pub max_task_retries: i64,
    /// Calls at once.
    pub max_concurrency: u32,
    /// An asyncio actor.
    pub is_async: bool,
    /// Named concurrency groups and their limits.
    pub concurrency_groups: HashMap<String, u32>,
    /// The runtime environment its worker needs (JSON; "" = none).
    pub runtime_env: String,
}

impl ActorCreateSpec {
    /// Its first record in the actor table.
    pub(super) fn record(&self, actor_id: &str, ctx: &Context) -> ActorTableData {
        ActorTableData {
            actor_id: actor_id.to_string(),
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            class_name: self.class_name.clone(),
            // Arguments by reference may still be computing; PENDING_CREATION
            // once they are all ready.
            state: if self.args.iter().any(|a| matches!(a, ArgIn::Ref(_))) { "DEPENDENCIES_UNREADY" } else { "PENDING_CREATION" }.into(),
            job_id: ctx.job_id.to_string(),
            owner_address: ctx.address.clone(),
            owner_worker_id: ctx.worker_id.to_string(),
            detached: self.detached,
            max_restarts: self.max_restarts,
            max_task_retries: self.max_task_retries,
            required_resources: self.placement.to_f64_map(),
            placement_group_id: self.placement_group.as_ref().map(|p| p.0.clone()).unwrap_or_default(),
            function_id: self.class_id.clone(),
            ..Default::default()
        }
    }
}

/// An actor this process owns.
pub(crate) struct OwnedActor {
    id: String,
    no_restart: AtomicBool,
    killed: tokio::sync::Notify,
}

impl OwnedActor {
    pub fn new(id: String) -> Arc<Self> {
        Arc::new(Self { id, no_restart: AtomicBool::new(false), killed: tokio::sync::Notify::new() })
    }

    /// The actor's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `ray.kill(no_restart=True)` from this process.
    pub fn forbid_restart(&self) {
        self.no_restart.store(true, Ordering::SeqCst);
        self.killed.notify_one();
    }

    /// Waits until the actor is killed for good: by this process, or (seen in
    /// the GCS, checked every second) by another.
    async fn until_killed(&self, ctx: &Context) {
        loop {
            if !self.may_restart() {
                return;
            }
            tokio::select! {
                _ = self.killed.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            if self.dead_in_gcs(ctx).await {
                self.no_restart.store(true, Ordering::SeqCst);
            }
        }
    }

    async fn dead_in_gcs(&self, ctx: &Context) -> bool {
        let req = ray_proto::rpc::GetActorInfoRequest { actor_id: self.id.clone(), ..Default::default() };
        match ctx.gcs.actors.clone().get_actor_info(req).await {
            Ok(r) => r.into_inner().actor.is_none_or(|a| a.state == "DEAD"),
            Err(_) => false,
        }
    }

    fn may_restart(&self) -> bool {
        !self.no_restart.load(Ordering::SeqCst)
    }
}

/// How one incarnation of the actor ended.
enum Ended {
    /// `__init__` raised: the actor is dead with this cause.
    InitFailed(String),
    /// The worker died (or could not be reached): restart if allowed.
    WorkerDied(String),
}

/// Reports a step to the GCS, trying again for a while if it cannot be reached
/// (callers wait on these reports). `None` if it never answered.
async fn update(ctx: &Context, actor: ActorTableData) -> Option<(String, bool)> {
    let mut wait = Duration::from_millis(50);
    for _ in 0..30 {
        match ctx.gcs.actors.clone().update_actor(UpdateActorRequest { actor: Some(actor.clone()) }).await {
            Ok(r) => {
                let r = r.into_inner();
                return Some((r.state, r.no_restart));
            }
            Err(s) if s.code() == tonic::Code::NotFound || s.code() == tonic::Code::InvalidArgument => return None,
            Err(s) => {
                tracing::warn!(actor = %actor.actor_id, error = %s.message(), "cannot report the actor's state to the GCS; trying again");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
        }
    }
    None
}

fn death(actor_id: &str, cause: String) -> ActorTableData {
    ActorTableData { actor_id: actor_id.into(), state: "DEAD".into(), death_cause: cause, ..Default::default() }
}

/// Creates the actor and keeps it alive while allowed; ends when it is dead.
pub(super) async fn run(actors: Arc<Actors>, me: Arc<OwnedActor>, mut spec: ActorCreateSpec) {
    let sub = actors.submitter.clone();
    let ctx = sub.ctx.clone();
    // The creation task's arguments, held (and resolved) for every restart.
    let task_id = ctx.ids.task_id();
    let kind = crate::task_events::ACTOR_CREATION_TASK;
    ctx.task_events.submitted(&ctx, task_id, &format!("{}.__init__", spec.class_name), kind, &me.id);
    let arg_refs: Vec<ObjectId> = spec.args.iter().filter_map(|a| if let ArgIn::Ref(r) = a { Some(r.id) } else { None }).collect();
    let nested: Vec<ObjectId> = spec.nested_refs.iter().map(|r| r.id).collect();
    let (held, waiting) = sub.own.prepare_task(&arg_refs, &nested, &[]);
    let has_refs = spec.args.iter().any(|a| matches!(a, ArgIn::Ref(_)));
    let mut args: Vec<TaskArg> = std::mem::take(&mut spec.args).into_iter().map(ArgIn::into_task_arg).collect();
    for arg in waiting {
        let _ = sub.own.owned_value_by(arg, None).await;
    }
    sub.own.inline_args(&mut args);
    if has_refs {
        update(&ctx, ActorTableData { actor_id: me.id.clone(), state: "PENDING_CREATION".into(), ..Default::default() }).await;
    }
    let mut task = TaskSpec {
        task_id: task_id.as_bytes().to_vec(),
        job_id: ctx.job_id.to_string(),
        function_id: spec.class_id.clone(),
        function_name: spec.class_name.clone(),
        args,
        kwarg_names: spec.kwarg_names.clone(),
        num_returns: 1,
        return_ids: vec![ObjectId::for_return(task_id, 1).to_vec()],
        owner_address: ctx.address.clone(),
        resources: spec.hold.clone().unwrap_or_else(|| spec.placement.clone()).to_f64_map(),
        placement_group_id: spec.placement_group.as_ref().map(|p| p.0.clone()).unwrap_or_default(),
        placement_group_bundle_index: spec.placement_group.as_ref().map(|p| p.1).unwrap_or(-1),
        placement_group_capture_child_tasks: spec.placement_group.as_ref().is_some_and(|p| p.2),
        actor_creation: Some(ActorCreationSpec {
            actor_id: me.id.clone(),
            max_concurrency: spec.max_concurrency.max(1),
            is_async: spec.is_async,
            detached: spec.detached,
            concurrency_groups: spec.concurrency_groups.clone(),
            class_name: spec.class_name.clone(),
            num_restarts: 0,
        }),
        ..Default::default()
    };
    let key = QueueKey::with_env(spec.placement.clone(), spec.strategy.clone(), spec.runtime_env.clone());
    let extra = LeaseExtra { hold: spec.hold.clone(), detached: spec.detached };
    let mut restarts: u64 = 0;
    loop {
        let who = me.clone();
        let leased = tokio::select! {
            g = sub.lease_for_actor(&key, &extra, move || !who.may_restart()) => g,
            _ = me.until_killed(&ctx) => None,
        };
        let Some(grant) = leased else {
            // Killed while waiting for a worker: its queued request goes.
            let req = ray_proto::rpc::CancelWorkerLeaseRequest { owner_worker_id: ctx.worker_id.to_string(), resources: spec.placement.to_f64_map() };
            let _ = ctx.raylet.clone().cancel_worker_lease(req).await;
            break;
        };
        // Killed meanwhile (here or elsewhere): the worker goes back unused.
        if !me.may_restart() || me.dead_in_gcs(&ctx).await {
            let _ = grant.raylet.clone().return_worker(ReturnWorkerRequest { lease_id: grant.reply.lease_id.clone(), disconnect: true }).await;
            break;
        }
        let lease_id = grant.reply.lease_id.clone();
        let addr = grant.reply.worker_address.clone();
        task.attempt = restarts;
        if let Some(c) = task.actor_creation.as_mut() {
            c.num_restarts = restarts;
        }
        let ended = match sub.open_stream(&addr, &lease_id).await {
            Err(e) => Ended::WorkerDied(format!("its worker could not be reached: {e}")),
            Ok((tx, mut stream)) => {
                // Where it is being created, so `ray.kill` can stop its __init__.
                let placing = ActorTableData {
                    actor_id: me.id.clone(),
                    state: if restarts == 0 { "PENDING_CREATION" } else { "RESTARTING" }.into(),
                    address: addr.clone(),
                    worker_id: grant.reply.worker_id.clone(),
                    pid: grant.reply.worker_pid,
                    node_id: grant.node.as_ref().map(|n| n.to_string()).unwrap_or_default(),
                    num_restarts: restarts,
                    ..Default::default()
                };
                update(&ctx, placing).await;
                let _ = tx.send(PushTasksRequest { task: Some(task.clone()) });
                match first_result(&ctx, &mut stream).await {
                    None => Ended::WorkerDied("its worker died while running __init__".into()),
                    Some(r) if r.is_error => {
                        // Recorded before the stream closes (the worker would otherwise
                        // report its owner gone first).
                        let cause = init_error(&r, &spec.class_name);
                        ctx.task_events.ended(task_id, restarts, Some("TASK_EXECUTION_EXCEPTION"));
                        update(&ctx, death(&me.id, cause.clone())).await;
                        Ended::InitFailed(cause)
                    }
                    Some(_) => {
                        let alive = ActorTableData {
                            actor_id: me.id.clone(),
                            state: "ALIVE".into(),
                            address: addr.clone(),
                            node_id: grant.node.as_ref().map(|n| n.to_string()).unwrap_or_default(),
                            worker_id: grant.reply.worker_id.clone(),
                            pid: grant.reply.worker_pid,
                            num_restarts: restarts,
                            ..Default::default()
                        };
                        let state = update(&ctx, alive).await;
                        ctx.task_events.ended(task_id, restarts, None);
                        actors.wake(&me.id);
                        if state.is_some_and(|(s, _)| s == "DEAD") {
                            // Killed meanwhile.
                            let _ = grant.raylet.clone().return_worker(ReturnWorkerRequest { lease_id, disconnect: true }).await;
                            break;
                        }
                        tracing::info!(actor = %me.id, class = %spec.class_name, worker = %addr, "actor is alive");
                        Ended::WorkerDied(watch(&ctx, &mut stream).await)
                    }
                }
                // `tx` drops here: the worker is gone or the lease goes back.
            }
        };
        let _ = grant.raylet.clone().return_worker(ReturnWorkerRequest { lease_id, disconnect: true }).await;
        match ended {
            Ended::InitFailed(cause) => {
                update(&ctx, death(&me.id, cause)).await;
                break;
            }
            Ended::WorkerDied(why) => {
                let allowed = me.may_restart() && (spec.max_restarts < 0 || restarts < spec.max_restarts as u64);
                if !allowed {
                    let cause = if me.may_restart() {
                        format!("The actor died unexpectedly: {why}. It was restarted {restarts} time(s) and max_restarts={}.", spec.max_restarts)
                    } else {
                        super::caller::KILLED.to_string()
                    };
                    update(&ctx, death(&me.id, cause)).await;
                    break;
                }
                restarts += 1;
                let restarting =
                    ActorTableData { actor_id: me.id.clone(), state: "RESTARTING".into(), num_restarts: restarts, ..Default::default() };
                match update(&ctx, restarting).await {
                    Some((s, _)) if s == "DEAD" => break,
                    _ => {}
                }
                tracing::warn!(actor = %me.id, class = %spec.class_name, restarts, "the actor's worker died ({why}); restarting it");
                actors.wake(&me.id);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    actors.wake(&me.id);
    // Its arguments are not needed any more.
    sub.own.task_failed(&[], &crate::error::system_error(crate::error::SystemErrorKind::ActorDiedError, ""), &held);
}

/// Reads the stream until the creation task's result (printed lines go to the
/// console); `None` when the stream broke first.
async fn first_result(ctx: &Context, stream: &mut tonic::Streaming<PushTasksReply>) -> Option<TaskResult> {
    loop {
        match stream.message().await {
            Ok(Some(m)) => {
                for l in m.log_lines {
                    ctx.emit_line(l);
                }
                if let Some(r) = m.result {
                    return Some(r);
                }
            }
            _ => return None,
        }
    }
}

/// Reads the creation stream while the actor lives (its printed lines); returns
/// why it ended.
async fn watch(ctx: &Context, stream: &mut tonic::Streaming<PushTasksReply>) -> String {
    loop {
        match stream.message().await {
            Ok(Some(m)) => {
                for l in m.log_lines {
                    ctx.emit_line(l);
                }
            }
            Ok(None) => return "its worker process exited".into(),
            Err(_) => return "its worker process exited or was killed (the connection to it was lost)".into(),
        }
    }
}

/// The death cause of an actor whose `__init__` raised: the worker sends it as
/// a runtime error whose message holds the traceback.
fn init_error(r: &TaskResult, class: &str) -> String {
    let body = r.returns.first().and_then(|x| x.value.as_ref()).filter(|v| v.kind == KIND_SYSTEM_ERROR);
    let message = body
        .and_then(|v| serde_json::from_slice::<serde_json::Value>(&v.data).ok())
        .and_then(|j| j.get("message").and_then(|m| m.as_str()).map(str::to_string));
    message.unwrap_or_else(|| format!("The actor died because of an error raised in its creation task ({class}.__init__)."))
}
