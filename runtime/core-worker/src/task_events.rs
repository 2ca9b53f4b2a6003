//! Task events: the owner's view of each task's state, buffered and sent to the
//! GCS once a second (one call per second however many tasks ran), where `ray
//! list tasks` reads them. Only the latest state of a task is buffered.

use std::collections::HashMap;
use std::sync::{Mutex, Weak};
use std::time::Duration;

use ray_common::TaskId;
use ray_proto::rpc::{AddTaskEventsRequest, TaskEvent};

use crate::context::Context;

/// Tasks buffered between two flushes; more are counted out (the GCS keeps a
/// bounded table anyway).
const MAX_BUFFERED: usize = 20_000;

/// Task kinds, as Ray names them.
pub const NORMAL_TASK: &str = "NORMAL_TASK";
/// An actor's method call.
pub const ACTOR_TASK: &str = "ACTOR_TASK";
/// An actor's creation task.
pub const ACTOR_CREATION_TASK: &str = "ACTOR_CREATION_TASK";

/// The buffer of one core worker.
#[derive(Default)]
pub(crate) struct TaskEvents {
    buf: Mutex<HashMap<TaskId, TaskEvent>>,
}

impl TaskEvents {
    /// A task was submitted (`kind`, `name`; `actor_id` for an actor's).
    pub fn submitted(&self, ctx: &Context, id: TaskId, name: &str, kind: &str, actor_id: &str) {
        self.put(id, |e| {
            e.name = name.to_string();
            e.r#type = kind.to_string();
            e.actor_id = actor_id.to_string();
            e.job_id = ctx.job_id.to_string();
            e.state = "PENDING_NODE_ASSIGNMENT".into();
        });
    }

    /// A task ended: FINISHED, or FAILED with the error's class.
    pub fn ended(&self, id: TaskId, attempt: u64, error_type: Option<&str>) {
        self.put(id, |e| {
            e.state = if error_type.is_some() { "FAILED" } else { "FINISHED" }.into();
            e.error_type = error_type.unwrap_or_default().to_string();
            e.attempt = attempt;
        });
    }

    fn put(&self, id: TaskId, f: impl FnOnce(&mut TaskEvent)) {
        let mut buf = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        if buf.len() >= MAX_BUFFERED && !buf.contains_key(&id) {
            return;
        }
        let e = buf.entry(id).or_insert_with(|| TaskEvent { task_id: id.to_string(), ..Default::default() });
        f(e);
        e.time_ms = ray_common::time::now_ms();
    }

    fn take(&self) -> Vec<TaskEvent> {
        let mut buf = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        buf.drain().map(|(_, e)| e).collect()
    }
}

/// Sends the buffer every second while the core worker lives (and once more at the end).
pub(crate) async fn flusher(ctx: Weak<Context>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(c) = ctx.upgrade() else { return };
        flush(&c).await;
    }
}

/// Sends what is buffered now.
pub(crate) async fn flush(ctx: &Context) {
    let events = ctx.task_events.take();
    if events.is_empty() {
        return;
    }
    let mut call = ctx.gcs.tasks.clone();
    let _ = tokio::time::timeout(Duration::from_secs(5), call.add_task_events(AddTaskEventsRequest { events })).await;
}

/// The error class of a failed result's first return (Ray's `error_type`).
pub(crate) fn error_type(r: &ray_proto::rpc::TaskResult) -> Option<String> {
    if !r.is_error {
        return None;
    }
    let v = r.returns.first().and_then(|x| x.value.as_ref());
    let kind = v
        .filter(|v| v.kind == crate::error::KIND_SYSTEM_ERROR)
        .and_then(|v| serde_json::from_slice::<serde_json::Value>(&v.data).ok())
        .and_then(|j| j.get("type").and_then(|t| t.as_str()).map(str::to_string));
    Some(kind.unwrap_or_else(|| "TASK_EXECUTION_EXCEPTION".into()))
}
