//! Results: reading a leased worker's task stream (results and printed lines),
//! storing returns, retrying tasks that raised (with `retry_exceptions`), and
//! handling a stream that broke because its worker died.

use std::sync::Arc;

use ray_proto::rpc::{PushTasksReply, ReturnWorkerRequest, TaskResult};

use super::Submitter;
use super::queues::{LeaseKey, Lineage, Outcome, QueueKey};
use crate::error::{SystemErrorKind, system_error};

impl Submitter {
    /// Reads results and printed lines until the stream ends.
    pub(super) async fn read_results(self: Arc<Self>, lease: LeaseKey, key: QueueKey, mut stream: tonic::Streaming<PushTasksReply>) {
        let why = loop {
            match stream.message().await {
                Ok(Some(m)) => {
                    for l in m.log_lines {
                        self.ctx.emit_line(l);
                    }
                    if let Some(item) = m.item {
                        self.own.generator_item_from_wire(item);
                    }
                    if let Some(r) = m.result {
                        self.on_result(lease, &key, r);
                    }
                }
                Ok(None) => break "the worker closed its task stream".to_string(),
                Err(s) => break s.message().to_string(),
            }
        };
        self.on_lease_broken(lease, &why).await;
    }

    fn on_result(self: &Arc<Self>, lease: LeaseKey, key: &QueueKey, r: TaskResult) {
        let (outcome, out) = self.queues().on_result(lease, key, &r);
        match outcome {
            Outcome::Retried(task) => tracing::info!(task = %task, "retrying a task that raised (retry_exceptions)"),
            Outcome::Done(t) if r.cancelled => {
                self.ctx.task_events.ended(t.id, t.spec.attempt, Some("TASK_CANCELLED"));
                let err = system_error(SystemErrorKind::TaskCancelledError, "the task was cancelled");
                self.own.task_failed(&t.return_ids, &err, &t.held);
            }
            Outcome::Done(t) => {
                self.ctx.task_events.ended(t.id, t.spec.attempt, crate::task_events::error_type(&r).as_deref());
                // Stored returns can be made again while retries are left (lineage
                // reconstruction, bounded by max_retries as in Ray).
                let t = *t;
                let lineage = (t.retries_left != 0 && r.returns.iter().any(|x| x.in_plasma)).then(|| {
                    Arc::new(Lineage { spec: t.spec, key: t.key, retries_left: t.retries_left, retry_exceptions: t.retry_exceptions })
                });
                self.own.task_succeeded(r.returns, &t.held, lineage);
            }
            Outcome::Unknown => {}
        }
        self.act(out);
    }

    /// The stream broke: the worker died. The lease goes back (the raylet stops
    /// the worker if it still runs); its tasks are retried or fail with
    /// `WorkerCrashedError` (`TaskCancelledError` for cancelled ones).
    async fn on_lease_broken(self: &Arc<Self>, lease: LeaseKey, why: &str) {
        let removed = self.queues().remove_lease(lease);
        let Some((key, conn)) = removed else { return };
        let _ = conn.raylet.clone().return_worker(ReturnWorkerRequest { lease_id: conn.lease_id.clone(), disconnect: true }).await;
        if conn.inflight.is_empty() {
            return;
        }
        let pid = conn.worker_pid;
        let (broken, out) = self.queues().lease_broken(&key, conn);
        for (task, function) in &broken.retried {
            tracing::warn!(task = %task, function = %function, worker_pid = pid, "the worker died ({why}); retrying the task");
        }
        for t in &broken.failed {
            self.ctx.task_events.ended(t.id, t.spec.attempt, Some(if t.cancelled { "TASK_CANCELLED" } else { "WORKER_DIED" }));
            let err = if t.cancelled {
                system_error(SystemErrorKind::TaskCancelledError, "the task was cancelled")
            } else {
                let message = format!(
                    "The worker died unexpectedly while executing this task ({}, pid {pid}): {why}. Check the worker's log in the session's logs folder.",
                    t.spec.function_name
                );
                system_error(SystemErrorKind::WorkerCrashedError, &message)
            };
            self.own.task_failed(&t.return_ids, &err, &t.held);
        }
        self.act(out);
    }
}
