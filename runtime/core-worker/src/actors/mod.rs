//! Actors: a worker leased for good, running one instance of a class.
//!
//! - `owner.rs`: the process that creates an actor leases its worker (the lease
//!   request waits in a raylet's queue, so the autoscaler sees it as demand),
//!   runs the creation task there, reports each step to the GCS actor table, and
//!   restarts the actor when its worker dies, up to `max_restarts`.
//! - `caller.rs`: any process holding a handle sends calls straight to the
//!   actor's worker over one stream per actor, in submission order, finds the
//!   actor again (GCS) after a restart, and retries calls up to
//!   `max_task_retries`.

mod caller;
mod owner;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use ray_common::ObjectId;
use ray_proto::rpc::{ActorTableData, GetActorInfoRequest, GetAllActorInfoRequest, KillActorRequest, RegisterActorRequest};

use crate::error::CoreError;
use crate::ownership::Reference;
use crate::submitter::{ArgIn, Submitter};

pub use owner::ActorCreateSpec;

/// An actor method call as the frontend submits it.
pub struct ActorCallSpec {
    /// The actor (hex id).
    pub actor_id: String,
    /// The method.
    pub method: String,
    /// Arguments.
    pub args: Vec<ArgIn>,
    /// Names of keyword arguments (the last ones of `args`).
    pub kwarg_names: Vec<String>,
    /// Number of return objects.
    pub num_returns: u32,
    /// Refs inside argument values.
    pub nested_refs: Vec<Reference>,
    /// The concurrency group it runs in ("" = default).
    pub concurrency_group: String,
    /// Retries when the actor dies while it runs (`None`: the actor's `max_task_retries`).
    pub max_task_retries: Option<i64>,
    /// Fixed returns, or a generator method's.
    pub returns: crate::generators::ReturnKind,
}

/// What `create` did.
pub enum Created {
    /// A new actor (hex id).
    New(String),
    /// `get_if_exists`: the live actor of that name.
    Existing(ActorTableData),
}

/// This process's actors: those it owns and the queues of its calls.
pub(crate) struct Actors {
    submitter: Arc<Submitter>,
    queues: Mutex<HashMap<String, Arc<caller::ActorQueue>>>,
    /// Actors this process owns, by id: set when `ray.kill` asked for no restart.
    owned: Mutex<HashMap<String, Arc<owner::OwnedActor>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn rpc_err(s: tonic::Status) -> CoreError {
    CoreError::Rpc(s.message().to_string())
}

impl Actors {
    pub fn new(submitter: Arc<Submitter>) -> Arc<Self> {
        Arc::new(Self { submitter, queues: Mutex::new(HashMap::new()), owned: Mutex::new(HashMap::new()) })
    }

    /// Creates an actor: registers it (its name must be free), then leases its
    /// worker and runs its creation task in the background.
    pub async fn create(self: &Arc<Self>, spec: ActorCreateSpec) -> Result<Created, CoreError> {
        let ctx = &self.submitter.ctx;
        let actor_id = format!("{}{}", ray_common::ids::random_hex(12), ctx.job_id);
        let record = spec.record(&actor_id, ctx);
        let req = RegisterActorRequest { actor: Some(record), get_if_exists: spec.get_if_exists };
        let reply = ctx.gcs.actors.clone().register_actor(req).await.map_err(|s| {
            if s.code() == tonic::Code::AlreadyExists || s.code() == tonic::Code::InvalidArgument {
                CoreError::Invalid(s.message().to_string())
            } else {
                rpc_err(s)
            }
        })?;
        if let Some(existing) = reply.into_inner().existing {
            return Ok(Created::Existing(existing));
        }
        let owned = owner::OwnedActor::new(actor_id.clone());
        lock(&self.owned).insert(actor_id.clone(), owned.clone());
        let me = self.clone();
        ctx.rt.spawn(async move {
            let id = owned.id().to_string();
            owner::run(me.clone(), owned, spec).await;
            lock(&me.owned).remove(&id);
        });
        Ok(Created::New(actor_id))
    }

    /// Submits a call; returns its return ids (owned here), each with one
    /// reference counted for the caller.
    pub fn call(self: &Arc<Self>, spec: ActorCallSpec) -> Vec<ObjectId> {
        let q = {
            let mut qs = lock(&self.queues);
            qs.entry(spec.actor_id.clone()).or_insert_with(|| caller::ActorQueue::new(spec.actor_id.clone())).clone()
        };
        caller::submit(self, &q, spec)
    }

    /// `ray.kill`: stops the actor's worker; with `no_restart` it stays dead.
    pub async fn kill(self: &Arc<Self>, actor_id: &str, no_restart: bool, cause: &str) -> Result<(), CoreError> {
        if no_restart && let Some(o) = lock(&self.owned).get(actor_id) {
            o.forbid_restart();
        }
        let req = KillActorRequest { actor_id: actor_id.to_string(), no_restart, cause: cause.to_string() };
        self.submitter.ctx.gcs.actors.clone().kill_actor(req).await.map_err(rpc_err)?;
        let q = lock(&self.queues).get(actor_id).cloned();
        if let Some(q) = q {
            if no_restart {
                // Calls made from here on fail at once, as in Ray.
                caller::killed(&q, self);
            } else {
                caller::restarting(self, &q);
            }
        }
        Ok(())
    }

    /// The actor of `actor_id`, or of `name` in `namespace` when the id is empty.
    pub async fn info(&self, actor_id: &str, name: &str, namespace: &str) -> Result<Option<ActorTableData>, CoreError> {
        let req = GetActorInfoRequest { actor_id: actor_id.into(), name: name.into(), namespace: namespace.into() };
        Ok(self.submitter.ctx.gcs.actors.clone().get_actor_info(req).await.map_err(rpc_err)?.into_inner().actor)
    }

    /// Every actor the GCS knows (of `job_id` when not empty).
    pub async fn list(&self, job_id: &str, alive_only: bool) -> Result<Vec<ActorTableData>, CoreError> {
        let req = GetAllActorInfoRequest { job_id: job_id.into(), alive_only };
        Ok(self.submitter.ctx.gcs.actors.clone().get_all_actor_info(req).await.map_err(rpc_err)?.into_inner().actors)
    }

    /// `ray.cancel` of an actor call made here: one not sent yet fails with
    /// TaskCancelledError; a sent one is cancelled by the actor's worker.
    /// `None` if `task` is no actor call of this process.
    pub async fn cancel(&self, task: ray_common::TaskId, force: bool) -> Option<Result<(), CoreError>> {
        let queues: Vec<Arc<caller::ActorQueue>> = lock(&self.queues).values().cloned().collect();
        for q in queues {
            match caller::cancel(&q, &self.submitter, task) {
                caller::Cancelled::NotHere => continue,
                caller::Cancelled::Dropped => return Some(Ok(())),
                caller::Cancelled::Sent(addr) => {
                    let req = ray_proto::rpc::CancelTaskRequest { task_id: task.as_bytes().to_vec(), force };
                    let r = match self.submitter.ctx.peers.worker(&addr).await {
                        Ok(mut c) => c.cancel_task(req).await.map(|_| ()).map_err(rpc_err),
                        Err(e) => Err(CoreError::Rpc(format!("cannot reach the actor's worker at {addr}: {e}"))),
                    };
                    return Some(r);
                }
            }
        }
        None
    }

    /// The local queue of `actor_id` heard that the actor's state changed.
    fn wake(&self, actor_id: &str) {
        if let Some(q) = lock(&self.queues).get(actor_id) {
            q.wake.notify_one();
        }
    }
}
