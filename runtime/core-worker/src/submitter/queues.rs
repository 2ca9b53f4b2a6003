//! The submitter's bookkeeping, free of I/O: every submitted task, the queues
//! they wait in, and the leased workers they are pushed to. Each method keeps the
//! books consistent and returns what the caller must do outside the lock (lease
//! requests to send or cancel).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use ray_common::{ObjectId, ResourceSet, TaskId};
use ray_proto::rpc::{PushTasksRequest, TaskArg, TaskResult, TaskSpec};
use tokio::sync::mpsc;

use super::strategy::Strategy;
use crate::context::RayletClient;

/// Lease requests outstanding per queue.
pub const MAX_PENDING_LEASE_REQUESTS: usize = 10;

/// What tasks queue by. Normal tasks queue by resource shape (Ray's scheduling
/// class) and run on any worker leased for that shape; an actor's calls will get
/// a key of their own here (one ordered queue per caller per actor, pinned to the
/// actor's worker).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum QueueKey {
    /// Tasks needing these resources, placed by the default policy.
    Shape(ResourceSet),
    /// Tasks needing these resources, placed by a strategy of their own.
    Placed(ResourceSet, Strategy),
    /// Tasks that need workers set up with a runtime environment (JSON): they
    /// never share leases with tasks of another environment.
    InEnv(ResourceSet, Strategy, String),
}

impl QueueKey {
    /// The key for `resources` under `strategy`.
    pub fn new(resources: ResourceSet, strategy: Strategy) -> Self {
        match strategy {
            Strategy::Default => Self::Shape(resources),
            s => Self::Placed(resources, s),
        }
    }

    /// The key for tasks in `runtime_env` ("" = none).
    pub fn with_env(resources: ResourceSet, strategy: Strategy, runtime_env: String) -> Self {
        if runtime_env.is_empty() { Self::new(resources, strategy) } else { Self::InEnv(resources, strategy, runtime_env) }
    }

    /// The resources a lease for this queue asks for.
    pub fn shape(&self) -> &ResourceSet {
        match self {
            Self::Shape(s) | Self::Placed(s, _) | Self::InEnv(s, _, _) => s,
        }
    }

    /// The strategy of this queue's tasks.
    pub fn strategy(&self) -> Option<&Strategy> {
        match self {
            Self::Shape(_) | Self::InEnv(_, Strategy::Default, _) => None,
            Self::Placed(_, s) | Self::InEnv(_, s, _) => Some(s),
        }
    }

    /// The runtime environment its workers need ("" = none).
    pub fn runtime_env(&self) -> &str {
        match self {
            Self::InEnv(_, _, e) => e,
            _ => "",
        }
    }
}

/// How a stored return can be made again: the task that made it, as it was
/// last submitted, with the retries it has left.
#[derive(Debug)]
pub struct Lineage {
    /// The spec (same task id and return ids).
    pub spec: TaskSpec,
    /// Its queue.
    pub key: QueueKey,
    /// Retries left (-1 = unlimited).
    pub retries_left: i64,
    /// Retry when the task raises.
    pub retry_exceptions: bool,
}

/// A lease, as this worker knows it.
pub type LeaseKey = u64;

/// Where a task is.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskState {
    /// Waiting for owned arguments.
    Resolving,
    /// Waiting for a worker.
    Queued,
    /// Sent to a leased worker.
    Pushed(LeaseKey),
}

/// A submitted task.
#[derive(Debug)]
pub struct TaskEntry {
    /// Its id.
    pub id: TaskId,
    /// The spec sent to workers.
    pub spec: TaskSpec,
    /// Its queue.
    pub key: QueueKey,
    /// Its returns.
    pub return_ids: Vec<ObjectId>,
    /// Retries left (-1 = unlimited).
    pub retries_left: i64,
    /// Retry when the task raises.
    pub retry_exceptions: bool,
    /// Owned objects held until the task finishes.
    pub held: Vec<ObjectId>,
    /// Where it is.
    pub state: TaskState,
    /// `ray.cancel` was called.
    pub cancelled: bool,
}

impl TaskEntry {
    /// Takes one retry if any is left (and the task was not cancelled).
    fn take_retry(&mut self) -> bool {
        if self.cancelled || self.retries_left == 0 {
            return false;
        }
        if self.retries_left > 0 {
            self.retries_left -= 1;
        }
        self.spec.attempt += 1;
        true
    }
}

/// A leased worker with its task stream.
#[derive(Debug)]
pub struct LeaseConn {
    /// Local key.
    pub key: LeaseKey,
    /// The raylet's lease id.
    pub lease_id: String,
    /// Worker address.
    pub worker_addr: String,
    /// Worker pid.
    pub worker_pid: u32,
    /// The raylet that granted it (gets it back).
    pub raylet: RayletClient,
    /// Sends tasks on the stream.
    pub tx: mpsc::UnboundedSender<PushTasksRequest>,
    /// Tasks pushed and not finished, with when they were pushed.
    pub inflight: HashMap<TaskId, Instant>,
    /// When it became idle.
    pub idle_since: Option<Instant>,
}

/// One queue: its waiting tasks and the leases serving it.
#[derive(Debug, Default)]
pub struct Queue {
    /// Tasks waiting for a worker, in order.
    pub waiting: VecDeque<TaskId>,
    /// Leases held.
    pub leases: Vec<LeaseConn>,
    /// Lease requests on their way.
    pub requests_inflight: usize,
    /// Moving average of push-to-result time of this queue's tasks (ms).
    pub avg_task_ms: Option<f64>,
}

impl Queue {
    /// Records how long a task took, push to result.
    pub fn record(&mut self, ms: f64) {
        self.avg_task_ms = Some(match self.avg_task_ms {
            None => ms,
            Some(a) => 0.8 * a + 0.2 * ms,
        });
    }

    /// Tasks to keep queued on one worker: several only for short tasks, where the
    /// round trip would otherwise idle the worker; one for long ones, so that every
    /// worker (and every node the work spills to) gets its share.
    pub fn depth(&self, max_inflight: usize) -> usize {
        match self.avg_task_ms {
            Some(ms) if ms < 2.0 => max_inflight,
            Some(ms) if ms < 20.0 => 2.min(max_inflight),
            _ => 1,
        }
    }
}

/// What the caller must do after a change (outside the lock).
#[derive(Debug, Default)]
pub struct PumpOut {
    /// Lease requests to send, per queue.
    pub request_leases: Vec<QueueKey>,
    /// Queues whose outstanding lease requests are no longer needed.
    pub cancel_requests: Vec<QueueKey>,
}

impl PumpOut {
    /// Adds the lease requests of `other` (its cancellations are left out: a
    /// queue drained by one of several steps must not cancel what the others need).
    fn with_requests_of(mut self, other: PumpOut) -> Self {
        self.request_leases.extend(other.request_leases);
        self
    }
}

/// What a task result meant.
pub enum Outcome {
    /// The task raised and is queued again (`retry_exceptions`).
    Retried(TaskId),
    /// The task is done; its entry, to store its returns.
    Done(Box<TaskEntry>),
    /// Nothing known about it (cancelled and dropped before).
    Unknown,
}

/// What `ray.cancel` found.
pub enum Cancel {
    /// No such task (finished already).
    Unknown,
    /// Running on the worker at this address: ask it to stop.
    Running(String),
    /// Removed before it ran; its entry, to fail its returns.
    Dropped(Box<TaskEntry>),
}

/// Tasks a broken lease was running: to retry (already queued again) and to fail.
pub struct Broken {
    /// The lease, removed.
    pub lease: LeaseConn,
    /// Tasks out of retries (or cancelled): their returns get an error.
    pub failed: Vec<TaskEntry>,
    /// Tasks queued again, for logs.
    pub retried: Vec<(TaskId, String)>,
}

/// Every submitted task and every queue.
#[derive(Debug)]
pub struct Queues {
    tasks: HashMap<TaskId, TaskEntry>,
    queues: HashMap<QueueKey, Queue>,
    next_key: LeaseKey,
    max_inflight: usize,
}

impl Queues {
    /// Empty books; `max_inflight` caps the tasks queued on one worker.
    pub fn new(max_inflight: usize) -> Self {
        Self { tasks: HashMap::new(), queues: HashMap::new(), next_key: 0, max_inflight: max_inflight.max(1) }
    }

    /// Records a task still resolving its arguments.
    pub fn add(&mut self, t: TaskEntry) {
        self.tasks.insert(t.id, t);
    }

    /// Takes a resolving task's arguments out (to inline them outside the lock);
    /// `None` if the task is gone (cancelled meanwhile).
    pub fn take_args(&mut self, task: TaskId) -> Option<Vec<TaskArg>> {
        self.tasks.get_mut(&task).map(|t| std::mem::take(&mut t.spec.args))
    }

    /// Puts resolved arguments back and queues the task.
    pub fn resolved(&mut self, task: TaskId, args: Vec<TaskArg>) -> PumpOut {
        if let Some(t) = self.tasks.get_mut(&task) {
            t.spec.args = args;
        }
        self.enqueue(task)
    }

    /// Queues a resolved task and pushes what can be pushed.
    pub fn enqueue(&mut self, task: TaskId) -> PumpOut {
        let Some(t) = self.tasks.get_mut(&task) else { return PumpOut::default() };
        t.state = TaskState::Queued;
        let key = t.key.clone();
        self.queues.entry(key.clone()).or_default().waiting.push_back(task);
        self.pump(&key)
    }

    /// Sends queued tasks to leased workers, least loaded first, as deep as the
    /// queue's task duration allows (see [`Queue::depth`]). Asks for more leases
    /// while tasks are left, and cancels the outstanding requests once the queue
    /// is empty.
    pub fn pump(&mut self, key: &QueueKey) -> PumpOut {
        let mut out = PumpOut::default();
        let Some(q) = self.queues.get_mut(key) else { return out };
        let depth = q.depth(self.max_inflight);
        while let Some(task) = q.waiting.front().copied() {
            let Some(t) = self.tasks.get_mut(&task) else {
                q.waiting.pop_front();
                continue;
            };
            if t.cancelled {
                q.waiting.pop_front();
                continue;
            }
            let best = q.leases.iter_mut().filter(|l| l.inflight.len() < depth).min_by_key(|l| l.inflight.len());
            let Some(lease) = best else { break };
            q.waiting.pop_front();
            let mut spec = t.spec.clone();
            spec.exception_retries_left = if t.retry_exceptions { t.retries_left } else { 0 };
            if lease.tx.send(PushTasksRequest { task: Some(spec) }).is_err() {
                q.waiting.push_front(task);
                break;
            }
            t.state = TaskState::Pushed(lease.key);
            lease.inflight.insert(task, Instant::now());
            lease.idle_since = None;
        }
        if q.waiting.is_empty() {
            if q.requests_inflight > 0 {
                out.cancel_requests.push(key.clone());
            }
            return out;
        }
        let idle = q.leases.iter().filter(|l| l.inflight.is_empty()).count();
        let want = q.waiting.len().saturating_sub(idle).min(MAX_PENDING_LEASE_REQUESTS);
        for _ in q.requests_inflight..want {
            q.requests_inflight += 1;
            out.request_leases.push(key.clone());
        }
        out
    }

    /// A lease request of `key` came back without a lease (refused, or the
    /// worker could not be reached).
    pub fn lease_request_failed(&mut self, key: &QueueKey) -> PumpOut {
        if let Some(q) = self.queues.get_mut(key) {
            q.requests_inflight = q.requests_inflight.saturating_sub(1);
        }
        self.pump(key)
    }

    /// A lease of `key` was granted and its stream opened: tasks go to it now.
    #[allow(clippy::too_many_arguments)]
    pub fn lease_granted(
        &mut self,
        key: &QueueKey,
        lease_id: String,
        worker_addr: String,
        worker_pid: u32,
        raylet: RayletClient,
        tx: mpsc::UnboundedSender<PushTasksRequest>,
    ) -> (LeaseKey, PumpOut) {
        self.next_key += 1;
        let lease = self.next_key;
        let q = self.queues.entry(key.clone()).or_default();
        q.requests_inflight = q.requests_inflight.saturating_sub(1);
        q.leases.push(LeaseConn {
            key: lease,
            lease_id,
            worker_addr,
            worker_pid,
            raylet,
            tx,
            inflight: HashMap::new(),
            idle_since: Some(Instant::now()),
        });
        (lease, self.pump(key))
    }

    /// A result arrived on `lease`: the task is retried (it raised and may be
    /// retried on exceptions) or done.
    pub fn on_result(&mut self, lease: LeaseKey, key: &QueueKey, r: &TaskResult) -> (Outcome, PumpOut) {
        let task = TaskId::from_bytes(&r.task_id).ok();
        if let Some(q) = self.queues.get_mut(key) {
            let took = q.leases.iter_mut().find(|l| l.key == lease).and_then(|l| {
                let took = task.and_then(|t| l.inflight.remove(&t)).map(|t| t.elapsed().as_secs_f64() * 1e3);
                if l.inflight.is_empty() {
                    l.idle_since = Some(Instant::now());
                }
                took
            });
            if let Some(ms) = took {
                q.record(ms);
            }
        }
        let Some(task) = task else { return (Outcome::Unknown, self.pump(key)) };
        let retry = self.tasks.get_mut(&task).is_some_and(|t| r.is_error && r.is_application_error && t.retry_exceptions && t.take_retry());
        if retry {
            let out = self.enqueue(task);
            return (Outcome::Retried(task), out.with_requests_of(self.pump(key)));
        }
        let outcome = match self.tasks.remove(&task) {
            Some(t) => Outcome::Done(Box::new(t)),
            None => Outcome::Unknown,
        };
        (outcome, self.pump(key))
    }

    /// The stream of `lease` broke (its worker died): the lease goes, its tasks
    /// are queued again while they have retries, and fail otherwise.
    pub fn remove_lease(&mut self, lease: LeaseKey) -> Option<(QueueKey, LeaseConn)> {
        for (key, q) in self.queues.iter_mut() {
            if let Some(i) = q.leases.iter().position(|l| l.key == lease) {
                return Some((key.clone(), q.leases.remove(i)));
            }
        }
        None
    }

    /// Handles the tasks a removed, broken lease was running.
    pub fn lease_broken(&mut self, key: &QueueKey, lease: LeaseConn) -> (Broken, PumpOut) {
        let mut failed = Vec::new();
        let mut retried = Vec::new();
        let mut out = PumpOut::default();
        for task in lease.inflight.keys() {
            let Some(t) = self.tasks.get_mut(task) else { continue };
            if t.take_retry() {
                retried.push((*task, t.spec.function_name.clone()));
            } else if let Some(t) = self.tasks.remove(task) {
                failed.push(t);
            }
        }
        for (task, _) in &retried {
            out = out.with_requests_of(self.enqueue(*task));
        }
        out = out.with_requests_of(self.pump(key));
        (Broken { lease, failed, retried }, out)
    }

    /// `ray.cancel` of `task`: a task not yet pushed is dropped; a running one is
    /// marked so it is not retried, and its worker is named.
    pub fn cancel(&mut self, task: TaskId) -> Cancel {
        let Some(t) = self.tasks.get_mut(&task) else { return Cancel::Unknown };
        t.cancelled = true;
        if let TaskState::Pushed(lease) = t.state {
            let addr = self.queues.get(&t.key).and_then(|q| q.leases.iter().find(|l| l.key == lease)).map(|l| l.worker_addr.clone());
            return match addr {
                Some(a) => Cancel::Running(a),
                None => Cancel::Unknown,
            };
        }
        match self.tasks.remove(&task) {
            Some(t) => Cancel::Dropped(Box::new(t)),
            None => Cancel::Unknown,
        }
    }

    /// The worker a pushed task was sent to (None once it is done or not pushed).
    pub fn running_on(&self, task: TaskId) -> Option<String> {
        let t = self.tasks.get(&task)?;
        let TaskState::Pushed(lease) = t.state else { return None };
        self.queues.get(&t.key).and_then(|q| q.leases.iter().find(|l| l.key == lease)).map(|l| l.worker_addr.clone())
    }

    /// Queues with tasks waiting.
    pub fn waiting_keys(&self) -> Vec<QueueKey> {
        self.queues.iter().filter(|(_, q)| !q.waiting.is_empty()).map(|(k, _)| k.clone()).collect()
    }

    /// The by-reference arguments of the next task waiting in `key`'s queue.
    pub fn front_ref_args(&self, key: &QueueKey) -> Vec<ObjectId> {
        let Some(t) = self.queues.get(key).and_then(|q| q.waiting.front()).and_then(|t| self.tasks.get(t)) else { return Vec::new() };
        t.spec
            .args
            .iter()
            .filter_map(|a| match &a.arg {
                Some(ray_proto::rpc::task_arg::Arg::PlasmaRef(r)) => ObjectId::from_bytes(&r.object_id).ok(),
                _ => None,
            })
            .collect()
    }

    /// Takes every task waiting in `key`'s queue out (they cannot be scheduled).
    pub fn take_waiting(&mut self, key: &QueueKey) -> Vec<TaskEntry> {
        let Some(q) = self.queues.get_mut(key) else { return Vec::new() };
        let waiting: Vec<TaskId> = q.waiting.drain(..).collect();
        waiting.into_iter().filter_map(|t| self.tasks.remove(&t)).collect()
    }

    /// Removes a lease if it is still idle (a task may have been pushed since it
    /// was found idle).
    pub fn take_idle_lease(&mut self, lease: LeaseKey) -> Option<LeaseConn> {
        let idle = self.queues.values().flat_map(|q| q.leases.iter()).any(|l| l.key == lease && l.inflight.is_empty());
        if idle { self.remove_lease(lease).map(|(_, l)| l) } else { None }
    }

    /// Leases idle for longer than `linger`, or any idle lease of another queue
    /// when `for_key` waits (so its request can get the resources).
    pub fn idle_leases(&self, linger: Duration, for_key: Option<&QueueKey>) -> Vec<LeaseKey> {
        let mut out = Vec::new();
        for (key, q) in &self.queues {
            for l in &q.leases {
                let Some(since) = l.idle_since else { continue };
                let other_waits = for_key.is_some_and(|k| k != key);
                if q.waiting.is_empty() && (since.elapsed() >= linger || other_waits) {
                    out.push(l.key);
                }
            }
        }
        out
    }

    /// Every lease held.
    pub fn lease_keys(&self) -> Vec<LeaseKey> {
        self.queues.values().flat_map(|q| q.leases.iter().map(|l| l.key)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> QueueKey {
        QueueKey::Shape(ResourceSet::new())
    }

    fn entry(n: u8, retries: i64) -> TaskEntry {
        let id = TaskId::new([n; 16]);
        TaskEntry {
            id,
            spec: TaskSpec { task_id: id.as_bytes().to_vec(), function_name: format!("f{n}"), ..Default::default() },
            key: key(),
            return_ids: vec![ObjectId::for_return(id, 1)],
            retries_left: retries,
            retry_exceptions: false,
            held: Vec::new(),
            state: TaskState::Resolving,
            cancelled: false,
        }
    }

    fn raylet() -> RayletClient {
        let security = ray_common::rpc::Security { auth: ray_common::auth::AuthConfig::disabled(), tls: None };
        RayletClient::new(security.connect_lazy("127.0.0.1:1", Duration::from_secs(1)).unwrap())
    }

    #[tokio::test]
    async fn queued_tasks_ask_for_leases_then_go_to_the_granted_worker() {
        let mut q = Queues::new(4);
        q.add(entry(1, 0));
        q.add(entry(2, 0));
        let t1 = TaskId::new([1; 16]);
        let out = q.enqueue(t1);
        assert_eq!(out.request_leases.len(), 1, "one waiting task, one request");
        let out = q.enqueue(TaskId::new([2; 16]));
        assert_eq!(out.request_leases.len(), 1, "a second task, a second request");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (lease, out) = q.lease_granted(&key(), "l".into(), "w".into(), 1, raylet(), tx);
        assert!(out.request_leases.is_empty());
        assert_eq!(rx.try_recv().unwrap().task.unwrap().function_name, "f1", "the first task goes first");
        assert!(rx.try_recv().is_err(), "one at a time until tasks are known to be short");
        let r = TaskResult { task_id: t1.as_bytes().to_vec(), ..Default::default() };
        let (outcome, _) = q.on_result(lease, &key(), &r);
        assert!(matches!(outcome, Outcome::Done(t) if t.spec.function_name == "f1"));
        assert_eq!(rx.try_recv().unwrap().task.unwrap().function_name, "f2", "the freed worker takes the next task");
    }

    #[tokio::test]
    async fn a_broken_lease_retries_tasks_with_retries_and_fails_the_rest() {
        let mut q = Queues::new(4);
        q.add(entry(1, 1));
        q.enqueue(TaskId::new([1; 16]));
        let (tx, _rx) = mpsc::unbounded_channel();
        let (lease, _) = q.lease_granted(&key(), "l".into(), "w".into(), 1, raylet(), tx);
        let (k, conn) = q.remove_lease(lease).unwrap();
        let (broken, out) = q.lease_broken(&k, conn);
        assert_eq!(broken.retried.len(), 1);
        assert!(broken.failed.is_empty());
        assert_eq!(out.request_leases.len(), 1, "the retried task needs a worker");
        // The second time it has no retries left.
        let (tx, _rx) = mpsc::unbounded_channel();
        let (lease, _) = q.lease_granted(&key(), "l2".into(), "w".into(), 1, raylet(), tx);
        let (k, conn) = q.remove_lease(lease).unwrap();
        let (broken, _) = q.lease_broken(&k, conn);
        assert_eq!(broken.failed.len(), 1);
        assert_eq!(broken.failed[0].spec.attempt, 1);
    }

    #[tokio::test]
    async fn cancel_drops_a_queued_task_and_names_the_worker_of_a_running_one() {
        let mut q = Queues::new(4);
        q.add(entry(1, 3));
        q.add(entry(2, 3));
        q.enqueue(TaskId::new([1; 16]));
        let (tx, _rx) = mpsc::unbounded_channel();
        q.lease_granted(&key(), "l".into(), "worker:1".into(), 1, raylet(), tx);
        q.enqueue(TaskId::new([2; 16]));
        assert!(matches!(q.cancel(TaskId::new([1; 16])), Cancel::Running(a) if a == "worker:1"));
        assert!(matches!(q.cancel(TaskId::new([2; 16])), Cancel::Dropped(_)));
        assert!(matches!(q.cancel(TaskId::new([9; 16])), Cancel::Unknown));
    }
}
