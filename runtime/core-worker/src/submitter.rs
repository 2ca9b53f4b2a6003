//! Submitting tasks: resolve owned arguments, queue by resource shape, lease
//! workers from the raylet, and push tasks straight to the leased workers over one
//! stream per lease (no raylet hop per task). Results come back on the same
//! stream; a broken stream means the worker died: its tasks are retried or fail.

use std::collections::{HashMap, VecDeque};
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
    /// The raylet that granted it (gets it back).
    pub raylet: ray_proto::rpc::node_manager_service_client::NodeManagerServiceClient<ray_common::rpc::Channel>,
    /// Sends tasks on the stream.
    pub tx: mpsc::UnboundedSender<PushTasksRequest>,
    /// Tasks pushed and not finished, with when they were pushed.
    pub inflight: HashMap<Vec<u8>, Instant>,
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
    /// Moving average of push-to-result time of this shape's tasks (ms).
    pub avg_task_ms: Option<f64>,
}

impl ClassState {
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

    /// Sends queued tasks to leased workers, least loaded first, as deep as the
    /// shape's task duration allows (see [`ClassState::depth`]). Asks for more
    /// leases while tasks are left, and cancels the outstanding requests once the
    /// queue is empty.
    pub fn pump(&mut self, shape: &ResourceSet, max_inflight: usize) -> PumpOut {
        let mut out = PumpOut::default();
        let Some(class) = self.classes.get_mut(shape) else { return out };
        let depth = class.depth(max_inflight);
        while let Some(task_id) = class.queue.front().cloned() {
            let Some(t) = self.tasks.get_mut(&task_id) else {
                class.queue.pop_front();
                continue;
            };
            if t.cancelled {
                class.queue.pop_front();
                continue;
            }
            let best = class.leases.iter_mut().filter(|l| l.inflight.len() < depth).min_by_key(|l| l.inflight.len());
            let Some(lease) = best else { break };
            class.queue.pop_front();
            if lease.tx.send(PushTasksRequest { task: Some(t.spec.clone()) }).is_err() {
                class.queue.push_front(task_id);
                break;
            }
            t.state = TaskState::Pushed(lease.key);
            lease.inflight.insert(task_id, Instant::now());
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
