//! A caller's side of an actor: its calls in submission order, one stream to the
//! actor's worker, and what happens when that worker dies (calls retried up to
//! `max_task_retries` once the actor is back, else failed with Ray's errors).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ray_common::{ObjectId, TaskId};
use ray_proto::rpc::{PushTasksReply, PushTasksRequest, SerializedObject, TaskArg, TaskSpec};
use tokio::sync::{Notify, mpsc};

use super::{ActorCallSpec, Actors};
use crate::error::{SystemErrorKind, system_error};
use crate::submitter::ArgIn;

/// How long an actor whose recorded worker cannot be reached (and whose owner
/// reports nothing new) is waited for before its calls fail.
const UNREACHABLE_LIMIT: Duration = Duration::from_secs(10);

/// One call.
struct Call {
    id: TaskId,
    seq: u64,
    spec: TaskSpec,
    return_ids: Vec<ObjectId>,
    held: Vec<ObjectId>,
    /// `None`: the actor's `max_task_retries`, learnt when it is first reached.
    retries_left: Option<i64>,
}

/// The open stream to the actor's worker.
struct Conn {
    tx: mpsc::UnboundedSender<PushTasksRequest>,
    addr: String,
}

#[derive(Default)]
struct Inner {
    next_seq: u64,
    /// Not sent yet, in order.
    unsent: VecDeque<Call>,
    /// Sent, by sequence number.
    inflight: BTreeMap<u64, Call>,
    conn: Option<Conn>,
    epoch: u64,
    connecting: bool,
    /// The actor is dead: every call fails with this.
    dead: Option<SerializedObject>,
    /// From the actor table.
    max_task_retries: Option<i64>,
    /// Calls that were running when the worker died and may not be retried:
    /// failed once the actor's fate is known.
    orphans: Vec<Call>,
    /// The address whose stream broke (not to be used again).
    broken_addr: String,
}

/// The calls of this process to one actor.
pub(super) struct ActorQueue {
    actor_id: String,
    inner: Mutex<Inner>,
    /// The owner (in this process) changed the actor's state.
    pub wake: Notify,
}

impl ActorQueue {
    pub fn new(actor_id: String) -> Arc<Self> {
        Arc::new(Self { actor_id, inner: Mutex::new(Inner::default()), wake: Notify::new() })
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Queues a call and sends it if the actor is reachable.
pub(super) fn submit(actors: &Arc<Actors>, q: &Arc<ActorQueue>, spec: ActorCallSpec) -> Vec<ObjectId> {
    let sub = &actors.submitter;
    let ctx = &sub.ctx;
    let id = ctx.ids.task_id();
    ctx.task_events.submitted(ctx, id, &spec.method, crate::task_events::ACTOR_TASK, &q.actor_id);
    let num_returns = spec.num_returns.max(1);
    let returns: Vec<ObjectId> = (1..=num_returns).map(|i| ObjectId::for_return(id, i)).collect();
    let arg_refs: Vec<ObjectId> = spec.args.iter().filter_map(|a| if let ArgIn::Ref(r) = a { Some(r.id) } else { None }).collect();
    let nested: Vec<ObjectId> = spec.nested_refs.iter().map(|r| r.id).collect();
    sub.own.generators.register(id, spec.returns);
    let (held, waiting) = sub.own.prepare_task(&arg_refs, &nested, &returns);
    let mut args: Vec<TaskArg> = spec.args.into_iter().map(ArgIn::into_task_arg).collect();
    if waiting.is_empty() {
        // Pending arguments go by reference: the actor's worker waits for them, in order.
        sub.own.inline_args(&mut args);
    }
    let mut inner = q.inner();
    let seq = inner.next_seq;
    inner.next_seq += 1;
    let call = Call {
        id,
        seq,
        spec: TaskSpec {
            task_id: id.as_bytes().to_vec(),
            job_id: ctx.job_id.to_string(),
            function_name: spec.method,
            args,
            kwarg_names: spec.kwarg_names,
            num_returns,
            return_ids: returns.iter().map(ObjectId::to_vec).collect(),
            owner_address: ctx.address.clone(),
            actor_id: q.actor_id.clone(),
            sequence_number: seq,
            concurrency_group: spec.concurrency_group,
            generator: spec.returns.wire(),
            ..Default::default()
        },
        return_ids: returns.clone(),
        held,
        retries_left: spec.max_task_retries,
    };
    if let Some(err) = inner.dead.clone() {
        drop(inner);
        sub.own.task_failed(&call.return_ids, &err, &call.held);
        return returns;
    }
    inner.unsent.push_back(call);
    if inner.conn.is_some() {
        flush(&mut inner);
    } else if !inner.connecting {
        inner.connecting = true;
        let (a, q) = (actors.clone(), q.clone());
        ctx.rt.spawn(async move { connect(a, q).await });
    }
    returns
}

/// Sends every unsent call on the open stream, in order.
fn flush(inner: &mut Inner) {
    let Some(conn) = &inner.conn else { return };
    let tx = conn.tx.clone();
    while let Some(mut c) = inner.unsent.pop_front() {
        if c.retries_left.is_none() {
            c.retries_left = inner.max_task_retries.or(Some(0));
        }
        if tx.send(PushTasksRequest { task: Some(c.spec.clone()) }).is_err() {
            inner.unsent.push_front(c);
            return;
        }
        inner.inflight.insert(c.seq, c);
    }
}

/// Finds the actor (GCS), opens the stream to its worker and sends what waits.
/// Gives up on the calls when the actor is dead.
async fn connect(actors: Arc<Actors>, q: Arc<ActorQueue>) {
    let ctx = actors.submitter.ctx.clone();
    let mut wait = Duration::from_millis(5);
    // Since when the actor's recorded worker cannot be reached.
    let mut unreachable: Option<std::time::Instant> = None;
    loop {
        let info = actors.info(&q.actor_id, "", "").await;
        let info = match info {
            Ok(Some(a)) => a,
            Ok(None) => {
                fail_all(&q, &actors, system_error(SystemErrorKind::ActorDiedError, "The actor is not known to the cluster (it may have been created by a job that ended)."));
                return;
            }
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let broken = q.inner().broken_addr.clone();
        if info.state != "ALIVE" {
            // Pending or restarting: the owner is at work, no timer runs.
            unreachable = None;
        }
        match info.state.as_str() {
            "DEAD" => {
                let cause = if info.death_cause.is_empty() { "The actor is dead.".to_string() } else { info.death_cause.clone() };
                fail_all(&q, &actors, system_error(SystemErrorKind::ActorDiedError, &cause));
                return;
            }
            "ALIVE" if info.address != broken => {
                fail_orphans(&q, &actors, SystemErrorKind::ActorUnavailableError, "The actor restarted while this call ran, and max_task_retries did not allow running it again.");
                match open(&ctx, &info.address).await {
                    Ok((tx, stream)) => {
                        let epoch = {
                            let mut inner = q.inner();
                            inner.epoch += 1;
                            let epoch = inner.epoch;
                            inner.conn = Some(Conn { tx, addr: info.address.clone() });
                            inner.connecting = false;
                            inner.max_task_retries = Some(info.max_task_retries);
                            flush(&mut inner);
                            epoch
                        };
                        let (a, q2, addr) = (actors.clone(), q.clone(), info.address.clone());
                        tokio::spawn(async move { read(a, q2, epoch, addr, stream).await });
                        return;
                    }
                    Err(e) => {
                        let since = *unreachable.get_or_insert_with(std::time::Instant::now);
                        tracing::debug!(actor = %q.actor_id, worker = %info.address, error = %e, "cannot reach the actor's worker");
                        if since.elapsed() > UNREACHABLE_LIMIT {
                            let why = format!("The actor's worker at {} cannot be reached: {e}", info.address);
                            fail_all(&q, &actors, system_error(SystemErrorKind::ActorDiedError, &why));
                            return;
                        }
                    }
                }
            }
            _ => {
                if info.state == "ALIVE" {
                    // Still recorded at the worker whose stream broke: its owner has
                    // not reported the death (yet, or ever if the owner is gone).
                    let since = *unreachable.get_or_insert_with(std::time::Instant::now);
                    if since.elapsed() > UNREACHABLE_LIMIT {
                        let why = format!("The actor's worker at {} died and its owner did not restart it.", info.address);
                        fail_all(&q, &actors, system_error(SystemErrorKind::ActorDiedError, &why));
                        return;
                    }
                }
                if info.state == "RESTARTING" {
                    fail_orphans(&q, &actors, SystemErrorKind::ActorUnavailableError, "The actor is restarting: this call was running when its worker died, and max_task_retries did not allow running it again.");
                }
            }
        }
        tokio::select! {
            _ = q.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(Duration::from_millis(100));
    }
}

async fn open(ctx: &crate::context::Context, addr: &str) -> Result<(mpsc::UnboundedSender<PushTasksRequest>, tonic::Streaming<PushTasksReply>), String> {
    let mut client = ctx.peers.worker(addr).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    let resp = client.push_tasks(tokio_stream::wrappers::UnboundedReceiverStream::new(rx)).await.map_err(|s| s.message().to_string())?;
    Ok((tx, resp.into_inner()))
}

/// Reads results until the stream ends; then retries or sets aside what ran.
async fn read(actors: Arc<Actors>, q: Arc<ActorQueue>, epoch: u64, addr: String, mut stream: tonic::Streaming<PushTasksReply>) {
    let sub = &actors.submitter;
    loop {
        match stream.message().await {
            Ok(Some(m)) => {
                for l in m.log_lines {
                    sub.ctx.emit_line(l);
                }
                if let Some(item) = m.item {
                    sub.own.generator_item_from_wire(item);
                }
                let Some(r) = m.result else { continue };
                let Ok(task) = TaskId::from_bytes(&r.task_id) else { continue };
                let done = {
                    let mut inner = q.inner();
                    let seq = inner.inflight.iter().find(|(_, c)| c.id == task).map(|(s, _)| *s);
                    seq.and_then(|s| inner.inflight.remove(&s))
                };
                let Some(c) = done else { continue };
                let failed = if r.cancelled { Some("TASK_CANCELLED".to_string()) } else { crate::task_events::error_type(&r) };
                sub.ctx.task_events.ended(c.id, c.spec.attempt, failed.as_deref());
                if r.cancelled {
                    let err = system_error(SystemErrorKind::TaskCancelledError, "the task was cancelled");
                    sub.own.task_failed(&c.return_ids, &err, &c.held);
                } else {
                    sub.own.task_succeeded(r.returns, &c.held, None);
                }
            }
            _ => break,
        }
    }
    let reconnect = {
        let mut inner = q.inner();
        if inner.epoch != epoch {
            return;
        }
        detach(&mut inner, addr)
    };
    if reconnect {
        tokio::spawn(connect_boxed(actors.clone(), q.clone()));
    }
}

/// The stream to the worker at `addr` is done with: running calls go again if
/// they may (ahead of the unsent ones, in order), the others wait for the
/// actor's fate. Returns whether a `connect` must start.
fn detach(inner: &mut Inner, addr: String) -> bool {
    inner.conn = None;
    inner.epoch += 1;
    inner.broken_addr = addr;
    let ran: Vec<Call> = std::mem::take(&mut inner.inflight).into_values().collect();
    let mut again = Vec::new();
    for mut c in ran {
        match c.retries_left {
            Some(n) if n != 0 => {
                c.retries_left = Some(if n > 0 { n - 1 } else { n });
                c.spec.attempt += 1;
                again.push(c);
            }
            _ => inner.orphans.push(c),
        }
    }
    for c in again.into_iter().rev() {
        inner.unsent.push_front(c);
    }
    let start = !inner.connecting;
    inner.connecting = true;
    start
}

/// This process asked for the actor to be restarted (`ray.kill(no_restart=False)`):
/// later calls wait for the new incarnation instead of reaching the old one.
pub(super) fn restarting(actors: &Arc<Actors>, q: &Arc<ActorQueue>) {
    let start = {
        let mut inner = q.inner();
        match inner.conn.as_ref().map(|c| c.addr.clone()) {
            Some(addr) => detach(&mut inner, addr),
            None => false,
        }
    };
    if start {
        actors.submitter.ctx.rt.spawn(connect_boxed(actors.clone(), q.clone()));
    }
}

/// `connect` as a boxed future (it and `read` start each other).
fn connect_boxed(actors: Arc<Actors>, q: Arc<ActorQueue>) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    Box::pin(connect(actors, q))
}

/// Fails the calls that were running when the worker died.
fn fail_orphans(q: &ActorQueue, actors: &Actors, kind: SystemErrorKind, why: &str) {
    let own = &actors.submitter.own;
    let orphans = std::mem::take(&mut q.inner().orphans);
    let err = system_error(kind, why);
    for c in orphans {
        actors.submitter.ctx.task_events.ended(c.id, c.spec.attempt, Some("ACTOR_UNAVAILABLE"));
        own.task_failed(&c.return_ids, &err, &c.held);
    }
}

/// Where a call to cancel was.
pub(super) enum Cancelled {
    /// Not a call of this queue.
    NotHere,
    /// Not sent yet: it failed with TaskCancelledError.
    Dropped,
    /// Sent to the worker at this address.
    Sent(String),
}

/// `ray.cancel` of a call of this queue.
pub(super) fn cancel(q: &ActorQueue, sub: &crate::submitter::Submitter, task: TaskId) -> Cancelled {
    let mut inner = q.inner();
    if let Some(i) = inner.unsent.iter().position(|c| c.id == task) {
        let c = inner.unsent.remove(i).expect("found");
        drop(inner);
        sub.ctx.task_events.ended(c.id, c.spec.attempt, Some("TASK_CANCELLED"));
        let err = system_error(SystemErrorKind::TaskCancelledError, "the task was cancelled before it ran");
        sub.own.task_failed(&c.return_ids, &err, &c.held);
        return Cancelled::Dropped;
    }
    if inner.inflight.values().any(|c| c.id == task)
        && let Some(conn) = &inner.conn
    {
        return Cancelled::Sent(conn.addr.clone());
    }
    Cancelled::NotHere
}

/// This process killed the actor: calls not yet answered and every later call
/// fail with ActorDiedError.
pub(super) fn killed(q: &ActorQueue, actors: &Actors) {
    fail_all(q, actors, system_error(SystemErrorKind::ActorDiedError, KILLED));
}

/// Ray's words for an actor stopped by `ray.kill`.
pub(super) const KILLED: &str = "The actor is dead because it was killed by `ray.kill`.";

/// The actor is dead: every call fails, now and from now on.
fn fail_all(q: &ActorQueue, actors: &Actors, err: SerializedObject) {
    let own = &actors.submitter.own;
    let calls: Vec<Call> = {
        let mut inner = q.inner();
        inner.dead = Some(err.clone());
        inner.connecting = false;
        inner.conn = None;
        let mut v: Vec<Call> = std::mem::take(&mut inner.orphans);
        v.extend(std::mem::take(&mut inner.inflight).into_values());
        v.extend(inner.unsent.drain(..));
        v
    };
    for c in calls {
        actors.submitter.ctx.task_events.ended(c.id, c.spec.attempt, Some("ACTOR_DIED"));
        own.task_failed(&c.return_ids, &err, &c.held);
    }
}
