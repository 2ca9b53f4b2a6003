//! The task table behind `ray list tasks`: each task's latest state as its owner
//! reported it, newest kept, oldest forgotten past a bound (Ray keeps the
//! latest tasks the same way).

use std::collections::{HashMap, VecDeque};

use ray_proto::rpc::TaskEvent;

/// Tasks kept (Ray's `task_events_max_num_task_in_gcs` is 100,000; rows here are
/// a few hundred bytes, so this bounds the table to a few MB).
pub const MAX_TASKS: usize = 10_000;

/// Latest state per task.
#[derive(Debug, Default)]
pub struct Tasks {
    rows: HashMap<String, TaskEvent>,
    order: VecDeque<String>,
    dropped: u64,
}

impl Tasks {
    /// Merges reported events: a task's fields are updated by what is set.
    pub fn add(&mut self, events: Vec<TaskEvent>) {
        for e in events {
            if e.task_id.is_empty() || e.task_id.len() > 64 {
                continue;
            }
            match self.rows.get_mut(&e.task_id) {
                Some(row) => merge(row, e),
                None => {
                    self.order.push_back(e.task_id.clone());
                    self.rows.insert(e.task_id.clone(), e);
                    while self.order.len() > MAX_TASKS {
                        if let Some(old) = self.order.pop_front() {
                            self.rows.remove(&old);
                            self.dropped += 1;
                        }
                    }
                }
            }
        }
    }

    /// Every task kept, in no order (for counts).
    pub fn iter(&self) -> impl Iterator<Item = &TaskEvent> {
        self.rows.values()
    }

    /// Tasks (of `job` when not empty), oldest first, at most `limit` newest (0: all).
    pub fn list(&self, job: &str, limit: usize) -> (Vec<TaskEvent>, u64) {
        let mut v: Vec<TaskEvent> =
            self.order.iter().filter_map(|id| self.rows.get(id)).filter(|t| job.is_empty() || t.job_id == job).cloned().collect();
        if limit > 0 && v.len() > limit {
            v.drain(..v.len() - limit);
        }
        (v, self.dropped)
    }
}

fn merge(row: &mut TaskEvent, e: TaskEvent) {
    let set = |to: &mut String, from: String| {
        if !from.is_empty() {
            *to = from;
        }
    };
    // A finished task stays finished unless it runs again (a later attempt).
    let done = row.state == "FINISHED" || row.state == "FAILED";
    if !done || e.attempt > row.attempt {
        set(&mut row.state, e.state);
        row.time_ms = e.time_ms.max(row.time_ms);
    }
    row.attempt = row.attempt.max(e.attempt);
    set(&mut row.name, e.name);
    set(&mut row.job_id, e.job_id);
    set(&mut row.actor_id, e.actor_id);
    set(&mut row.r#type, e.r#type);
    set(&mut row.node_id, e.node_id);
    set(&mut row.worker_id, e.worker_id);
    set(&mut row.error_type, e.error_type);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str, state: &str) -> TaskEvent {
        TaskEvent { task_id: id.into(), state: state.into(), job_id: "01000000".into(), ..Default::default() }
    }

    #[test]
    fn events_merge_by_task_and_the_oldest_go_past_the_bound() {
        let mut t = Tasks::default();
        t.add(vec![ev("a", "PENDING_NODE_ASSIGNMENT"), ev("b", "PENDING_NODE_ASSIGNMENT")]);
        t.add(vec![ev("a", "FINISHED"), ev("a", "PENDING_NODE_ASSIGNMENT")]);
        let (rows, dropped) = t.list("", 0);
        assert_eq!(rows.iter().map(|r| (r.task_id.as_str(), r.state.as_str())).collect::<Vec<_>>(), vec![("a", "FINISHED"), ("b", "PENDING_NODE_ASSIGNMENT")]);
        assert_eq!(dropped, 0);
        t.add((0..MAX_TASKS).map(|i| ev(&format!("t{i}"), "FINISHED")).collect());
        let (rows, dropped) = t.list("", 5);
        assert_eq!(dropped, 2);
        assert_eq!(rows.len(), 5);
        assert_eq!(rows.last().map(|r| r.task_id.clone()), Some(format!("t{}", MAX_TASKS - 1)));
        assert!(t.list("02000000", 0).0.is_empty());
    }
}
