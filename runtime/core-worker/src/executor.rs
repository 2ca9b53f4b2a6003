//! Execution, in workers: tasks arrive on their owners' streams and wait here, in
//! order, for the language runtime's main thread, which takes them one at a time
//! and sends each result (and the lines the task prints) back on the stream it
//! came from. `ray.cancel` drops a queued task or interrupts the running one.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use ray_common::ids::IdError;
use ray_common::{ObjectId, TaskId};
use ray_proto::rpc::{PushTasksReply, TaskResult, TaskSpec};
use tokio::sync::mpsc;
use tonic::Status;

/// Where a task's result and printed lines go: its owner's stream.
pub(crate) type ReplyTx = mpsc::UnboundedSender<Result<PushTasksReply, Status>>;

/// A task handed to the language runtime.
pub struct ExecTask {
    /// Its id.
    pub id: TaskId,
    /// Its returns.
    pub return_ids: Vec<ObjectId>,
    /// Its spec.
    pub spec: TaskSpec,
    reply: ReplyTx,
}

impl ExecTask {
    /// A task from an owner's stream; `Err` when its ids are malformed.
    pub(crate) fn parse(spec: TaskSpec, reply: ReplyTx) -> Result<Self, IdError> {
        let id = TaskId::from_bytes(&spec.task_id)?;
        let return_ids = spec.return_ids.iter().map(|r| ObjectId::from_bytes(r)).collect::<Result<_, _>>()?;
        Ok(Self { id, return_ids, spec, reply })
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The queue of tasks for the main thread, the task running now, and cancellation.
#[derive(Default)]
pub(crate) struct Executor {
    queue: Mutex<VecDeque<ExecTask>>,
    ready: Condvar,
    /// The task running now and its reply stream (for printed lines).
    current: Mutex<Option<(TaskId, ReplyTx)>>,
    /// The task `ray.cancel` asked to interrupt (checked by the signal handler).
    cancel_requested: Mutex<Option<TaskId>>,
    /// The last task the signal handler interrupted: a cancel asked again for
    /// it (the owner repeats itself) must not interrupt its clean-up.
    cancel_taken: Mutex<Option<TaskId>>,
    interrupt: OnceLock<Box<dyn Fn() + Send + Sync>>,
    /// This worker is an actor's: lines printed outside any one call go to its
    /// owner's creation stream.
    actor_output: Mutex<Option<ReplyTx>>,
    /// This worker is a detached actor's: it outlives its creator.
    detached: std::sync::atomic::AtomicBool,
    /// The stream of the last task that ran: lines printed by tasks this
    /// worker submitted, arriving after its own task ended, still go up while
    /// that stream is open (weak: it must not keep a returned lease's stream
    /// from closing).
    last_reply: Mutex<Option<mpsc::WeakUnboundedSender<Result<PushTasksReply, Status>>>>,
}

impl Executor {
    /// Queues a task from an owner's stream.
    pub fn push(&self, t: ExecTask) {
        lock(&self.queue).push_back(t);
        self.ready.notify_one();
    }

    /// The next task for the main thread (waits up to `timeout`); it becomes the
    /// running task.
    pub fn next(&self, timeout: Duration) -> Option<ExecTask> {
        let mut q = lock(&self.queue);
        if q.is_empty() {
            q = self.ready.wait_timeout(q, timeout).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0);
        }
        let t = q.pop_front()?;
        drop(q);
        *lock(&self.current) = Some((t.id, t.reply.clone()));
        *lock(&self.last_reply) = Some(t.reply.downgrade());
        Some(t)
    }

    /// Sends a finished task's result to its owner.
    pub fn finish(&self, task: &ExecTask, result: TaskResult) {
        {
            let mut cur = lock(&self.current);
            if cur.as_ref().is_some_and(|(id, _)| *id == task.id) {
                *cur = None;
            }
        }
        if task.spec.actor_creation.is_some() && !result.is_error {
            *lock(&self.actor_output) = Some(task.reply.clone());
        }
        let _ = task.reply.send(Ok(PushTasksReply { result: Some(result), pid: std::process::id(), ..Default::default() }));
    }

    /// A value the generator task `task` yielded, for its owner (sent before the
    /// task's result, on the same stream).
    pub fn send_item(&self, task: &ExecTask, index: u64, object: ray_proto::rpc::ReturnObject) {
        let item = ray_proto::rpc::GeneratorItem { task_id: task.id.as_bytes().to_vec(), index, object: Some(object) };
        let _ = task.reply.send(Ok(PushTasksReply { item: Some(item), pid: std::process::id(), ..Default::default() }));
    }

    /// A line printed by the running task (or by a task it submitted), for its
    /// owner's console: lines travel up the chain of owners to the driver.
    pub fn log_line(&self, line: String) {
        let reply = lock(&self.actor_output)
            .clone()
            .or_else(|| lock(&self.current).as_ref().map(|(_, r)| r.clone()))
            .or_else(|| lock(&self.last_reply).as_ref().and_then(|w| w.upgrade()));
        if let Some(reply) = reply {
            let _ = reply.send(Ok(PushTasksReply { log_lines: vec![line], pid: std::process::id(), ..Default::default() }));
        }
    }

    /// A detached actor's creation task arrived: this worker outlives its creator.
    pub fn set_detached(&self) {
        self.detached.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether this worker is a detached actor's.
    pub fn is_detached(&self) -> bool {
        self.detached.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Sets how to interrupt the task running on the main thread.
    pub fn set_interrupt(&self, f: Box<dyn Fn() + Send + Sync>) {
        let _ = self.interrupt.set(f);
    }

    /// `ray.cancel` on this worker: drop a queued task (its owner hears it was
    /// cancelled), or interrupt (with `force`, exit on) the running one. False if
    /// the task is neither queued nor running here.
    pub fn cancel(&self, task: TaskId, force: bool) -> bool {
        let queued = {
            let mut q = lock(&self.queue);
            q.iter().position(|t| t.id == task).and_then(|i| q.remove(i))
        };
        if let Some(t) = queued {
            let result = TaskResult { task_id: task.as_bytes().to_vec(), cancelled: true, ..Default::default() };
            let _ = t.reply.send(Ok(PushTasksReply { result: Some(result), ..Default::default() }));
            return true;
        }
        let running = lock(&self.current).as_ref().is_some_and(|(id, _)| *id == task);
        // An actor's calls may run on other threads or as coroutines, untracked
        // here: the language runtime is asked, and finds the call if it runs.
        let actor = lock(&self.actor_output).is_some();
        if !running && !actor {
            return false;
        }
        if force {
            tracing::info!("force-cancelled: exiting");
            // After the reply is on its way (the owner then sees the stream break).
            std::thread::spawn(|| {
                std::thread::sleep(std::time::Duration::from_millis(20));
                std::process::exit(1);
            });
            return true;
        }
        {
            // Both locks in this order here and in take_cancel.
            let mut requested = lock(&self.cancel_requested);
            if *lock(&self.cancel_taken) == Some(task) {
                return true; // already interrupted
            }
            *requested = Some(task);
        }
        // Asked again while the last signal is not acted on yet: signalling
        // again is safe, the handler interrupts once (take_cancel).
        if let Some(f) = self.interrupt.get() {
            f();
        }
        true
    }

    /// True (once) when `ray.cancel` asked to interrupt `task`: the worker's
    /// SIGINT handler raises KeyboardInterrupt only then, and only in user code.
    pub fn take_cancel(&self, task: TaskId) -> bool {
        let mut c = lock(&self.cancel_requested);
        if *c == Some(task) {
            *c = None;
            *lock(&self.cancel_taken) = Some(task);
            true
        } else {
            false
        }
    }
}
