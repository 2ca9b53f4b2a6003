//! Submitting tasks: resolve owned arguments, queue by resource shape, lease
//! workers from the raylet, and push tasks straight to the leased workers over one
//! stream per lease (no raylet hop per task). Results come back on the same
//! stream; a broken stream means the worker died: its tasks are retried or fail.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

use ray_common::ResourceSet;
use ray_proto::rpc::{PushTasksRequest, TaskSpec};
use tokio::sync::mpsc;

/// Where a task is.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskState {
    /// Waiting for owned arguments.
    Resolving,
    /// Waiting for a worker.
    Queued,
    /// Sent to a leased worker.
    Pushed(u64),
}

/// A submitted task.
#[derive(Debug)]
pub struct TaskEntry {
    /// The spec sent to workers.
    pub spec: TaskSpec,
    /// Resource shape (scheduling class).
    pub shape: ResourceSet,
    /// Retries left (-1 = unlimited).
    pub retries_left: i64,
    /// Retry when the task raises.
    pub retry_exceptions: bool,
    /// Owned objects held until the task finishes.
    pub held: Vec<Vec<u8>>,
    /// State.
    pub state: TaskState,
    /// `ray.cancel` was called.
    pub cancelled: bool,
}

/// A leased worker with its task stream.
#[derive(Debug)]
pub struct LeaseConn {
    /// Local key.
    pub key: u64,
    /// Raylet's lease id.
    pub lease_id: String,
    /// Worker address.
    pub worker_addr: String,
    /// Worker pid.
    pub worker_pid: u32,
    /// Sends tasks on the stream.
    pub tx: mpsc::UnboundedSender<PushTasksRequest>,
    /// Tasks pushed and not finished.
    pub inflight: HashSet<Vec<u8>>,
    /// When it became idle.
    pub idle_since: Option<Instant>,
}

/// Tasks of one resource shape.
#[derive(Debug, Default)]
pub struct ClassState {
    /// Tasks waiting for a worker, in order.
    pub queue: VecDeque<Vec<u8>>,
    /// Leases held.
    pub leases: Vec<LeaseConn>,
    /// Lease requests on their way.
    pub requests_inflight: usize,
}

/// All submitted tasks.
#[derive(Debug, Default)]
pub struct Submitter {
    /// By task id.
    pub tasks: HashMap<Vec<u8>, TaskEntry>,
    /// By shape.
    pub classes: HashMap<ResourceSet, ClassState>,
    next_key: u64,
}

/// What `pump` asks the caller to do (outside the lock).
#[derive(Debug, Default)]
pub struct PumpOut {
    /// Lease requests to send, per shape.
    pub request_leases: Vec<ResourceSet>,
    /// Shapes whose outstanding lease requests are no longer needed.
    pub cancel_requests: Vec<ResourceSet>,
}

/// Tasks pushed at most to one worker at a time.
pub const DEFAULT_MAX_INFLIGHT: usize = 8;
/// Lease requests outstanding per shape.
pub const MAX_PENDING_LEASE_REQUESTS: usize = 10;

impl Submitter {
    /// A new lease key.
    pub fn next_key(&mut self) -> u64 {
        self.next_key += 1;
        self.next_key
    }

    /// Queues a resolved task and pushes what can be pushed.
    pub fn enqueue(&mut self, task_id: &[u8], max_inflight: usize) -> PumpOut {
        let Some(t) = self.tasks.get_mut(task_id) else { return PumpOut::default() };
        t.state = TaskState::Queued;
        let shape = t.shape.clone();
        self.classes.entry(shape.clone()).or_default().queue.push_back(task_id.to_vec());
        self.pump(&shape, max_inflight)
    }

    /// Sends queued tasks to leased workers: idle workers first; several tasks per
    /// worker (up to `max_inflight`) only when many small tasks wait or no more
    /// workers are coming. Asks for more leases while tasks are left, and cancels
    /// the outstanding requests once the queue is empty.
    pub fn pump(&mut self, shape: &ResourceSet, max_inflight: usize) -> PumpOut {
        let mut out = PumpOut::default();
        let Some(class) = self.classes.get_mut(shape) else { return out };
        while let Some(task_id) = class.queue.front().cloned() {
            let Some(t) = self.tasks.get_mut(&task_id) else {
                class.queue.pop_front();
                continue;
            };
            if t.cancelled {
                class.queue.pop_front();
                continue;
            }
            let pipelining = class.requests_inflight == 0 || class.queue.len() > 2 * class.leases.len().max(1);
            let best = class
                .leases
                .iter_mut()
                .filter(|l| l.inflight.is_empty() || (pipelining && l.inflight.len() < max_inflight))
                .min_by_key(|l| l.inflight.len());
            let Some(lease) = best else { break };
            class.queue.pop_front();
            if lease.tx.send(PushTasksRequest { task: Some(t.spec.clone()) }).is_err() {
                class.queue.push_front(task_id);
                break;
            }
            t.state = TaskState::Pushed(lease.key);
            lease.inflight.insert(task_id);
            lease.idle_since = None;
        }
        if class.queue.is_empty() {
            if class.requests_inflight > 0 {
                out.cancel_requests.push(shape.clone());
            }
            return out;
        }
        let idle = class.leases.iter().filter(|l| l.inflight.is_empty()).count();
        let want = class.queue.len().saturating_sub(idle).min(MAX_PENDING_LEASE_REQUESTS);
        for _ in class.requests_inflight..want {
            class.requests_inflight += 1;
            out.request_leases.push(shape.clone());
        }
        out
    }

    /// Finds the lease by key.
    pub fn lease_mut(&mut self, shape: &ResourceSet, key: u64) -> Option<&mut LeaseConn> {
        self.classes.get_mut(shape)?.leases.iter_mut().find(|l| l.key == key)
    }

    /// Removes a lease; returns it.
    pub fn remove_lease(&mut self, key: u64) -> Option<(ResourceSet, LeaseConn)> {
        for (shape, c) in self.classes.iter_mut() {
            if let Some(i) = c.leases.iter().position(|l| l.key == key) {
                return Some((shape.clone(), c.leases.remove(i)));
            }
        }
        None
    }

    /// Leases idle for longer than `linger`, or any idle lease of another shape
    /// when `for_shape` waits (so its request can get the resources).
    pub fn idle_leases(&self, linger: std::time::Duration, for_shape: Option<&ResourceSet>) -> Vec<u64> {
        let mut out = Vec::new();
        for (shape, c) in &self.classes {
            for l in &c.leases {
                let Some(since) = l.idle_since else { continue };
                let other_waits = for_shape.is_some_and(|s| s != shape);
                if c.queue.is_empty() && (since.elapsed() >= linger || other_waits) {
                    out.push(l.key);
                }
            }
        }
        out
    }
}
