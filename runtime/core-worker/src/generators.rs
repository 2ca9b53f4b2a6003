//! Generator tasks, on the owner's side. A generator task's worker stores each
//! value it yields as an object of its own (return index `2 + i` for item `i`;
//! index 1 is the task's completion) and sends it on the task's stream as soon as
//! it is made, before the task's result. The owner keeps the items of each
//! generator in order; the frontend takes them one by one (a streaming
//! `ObjectRefGenerator`), or they end up inside the task's one return value (a
//! `DynamicObjectRefGenerator`, `num_returns="dynamic"`).
//!
//! An item arrives with one reference counted for the generator; taking it hands
//! that reference to the frontend's `ObjectRef`. Items never taken are released
//! when the frontend drops the generator, or when a dynamic generator's task ends
//! (its return value then holds them).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ray_common::{ObjectId, TaskId};
use tokio::sync::Notify;

/// How a task returns its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnKind {
    /// A fixed number of returns.
    Fixed,
    /// `num_returns="dynamic"`: one return holding every yielded item's ref.
    Dynamic,
    /// A streaming generator: items are taken as they arrive.
    Streaming,
}

impl ReturnKind {
    /// The wire form (`TaskSpec.generator`).
    pub fn wire(self) -> u32 {
        match self {
            Self::Fixed => 0,
            Self::Dynamic => 1,
            Self::Streaming => 2,
        }
    }

    /// From the wire form; unknown values are a fixed-returns task.
    pub fn from_wire(v: u32) -> Self {
        match v {
            1 => Self::Dynamic,
            2 => Self::Streaming,
            _ => Self::Fixed,
        }
    }
}

/// The object id of item `index` of the generator task `task`.
pub fn item_id(task: TaskId, index: u64) -> ObjectId {
    let i = u32::try_from(index.saturating_add(2)).unwrap_or(u32::MAX);
    ObjectId::for_return(task, i)
}

/// What taking the next item found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The next item (its reference now belongs to the caller).
    Item(ObjectId),
    /// The task ended and every item was taken.
    End,
    /// Nothing arrived before the timeout.
    Pending,
}

struct State {
    kind: ReturnKind,
    /// Items received, in order.
    items: Vec<ObjectId>,
    /// How many the frontend took.
    taken: usize,
    ended: bool,
    /// The frontend dropped the generator: later items are released at once.
    dropped: bool,
    notify: Arc<Notify>,
}

/// The generators this worker owns.
#[derive(Default)]
pub(crate) struct Generators {
    table: Mutex<HashMap<TaskId, State>>,
}

/// What the caller must do with the ownership table after a call.
pub(crate) type Release = Vec<ObjectId>;

impl Generators {
    fn table(&self) -> MutexGuard<'_, HashMap<TaskId, State>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A generator task was submitted.
    pub fn register(&self, task: TaskId, kind: ReturnKind) {
        if kind == ReturnKind::Fixed {
            return;
        }
        self.table().insert(task, State { kind, items: Vec::new(), taken: 0, ended: false, dropped: false, notify: Arc::new(Notify::new()) });
    }

    /// Whether item `index` of `task` is the next one expected. A task that runs
    /// again after its worker died yields its items again from the first: those
    /// already received are ignored.
    pub fn expects(&self, task: TaskId, index: u64) -> bool {
        self.table().get(&task).is_some_and(|s| !s.ended && s.items.len() as u64 == index)
    }

    /// Item `index` arrived and was stored in the ownership table with one
    /// reference for the generator. Returns the references to release now (the
    /// frontend dropped the generator).
    pub fn add_item(&self, task: TaskId, index: u64, id: ObjectId) -> Release {
        let mut t = self.table();
        let Some(s) = t.get_mut(&task) else { return vec![id] };
        if s.ended || s.items.len() as u64 != index {
            return vec![id];
        }
        s.items.push(id);
        s.notify.notify_waiters();
        if s.dropped {
            s.taken = s.items.len();
            return vec![id];
        }
        Vec::new()
    }

    /// The task ended (succeeded, failed or was cancelled): no more items come.
    /// A dynamic generator's items not taken are released (its return value
    /// holds them now), and so is everything of a generator already dropped.
    pub fn end(&self, task: TaskId) -> Release {
        let mut t = self.table();
        let Some(s) = t.get_mut(&task) else { return Vec::new() };
        s.ended = true;
        s.notify.notify_waiters();
        if s.kind == ReturnKind::Dynamic || s.dropped {
            let s = t.remove(&task).expect("present");
            return s.items[s.taken..].to_vec();
        }
        Vec::new()
    }

    /// Takes the next item, waiting up to `timeout` (forever when `None`).
    pub async fn next(&self, task: TaskId, timeout: Option<Duration>) -> Next {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        loop {
            let notify = {
                let mut t = self.table();
                let Some(s) = t.get_mut(&task) else { return Next::End };
                if s.taken < s.items.len() {
                    s.taken += 1;
                    return Next::Item(s.items[s.taken - 1]);
                }
                if s.ended {
                    return Next::End;
                }
                s.notify.clone()
            };
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // A second look: an item may have come between the lock and enable().
            if self.peek(task) {
                continue;
            }
            match deadline {
                Some(d) => {
                    if tokio::time::timeout_at(d, notified).await.is_err() {
                        return Next::Pending;
                    }
                }
                None => notified.await,
            }
        }
    }

    /// True when `next` would not wait: an item is there, or the task ended.
    pub fn peek(&self, task: TaskId) -> bool {
        self.table().get(&task).is_none_or(|s| s.taken < s.items.len() || s.ended)
    }

    /// The frontend dropped the generator: the items it did not take are released.
    pub fn drop_generator(&self, task: TaskId) -> Release {
        let mut t = self.table();
        let Some(s) = t.get_mut(&task) else { return Vec::new() };
        let rest = s.items[s.taken..].to_vec();
        s.taken = s.items.len();
        if s.ended {
            t.remove(&task);
        } else {
            s.dropped = true;
        }
        rest
    }

    /// Number of generators tracked (for tests and stats).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.table().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> TaskId {
        TaskId::new([7u8; ray_common::ids::TASK_ID_LEN])
    }

    #[tokio::test]
    async fn items_are_taken_in_order_then_the_end() {
        let g = Generators::default();
        let t = task();
        g.register(t, ReturnKind::Streaming);
        assert!(g.expects(t, 0));
        assert!(g.add_item(t, 0, item_id(t, 0)).is_empty());
        assert!(g.add_item(t, 1, item_id(t, 1)).is_empty());
        assert_eq!(g.next(t, Some(Duration::ZERO)).await, Next::Item(item_id(t, 0)));
        assert_eq!(g.next(t, Some(Duration::from_millis(1))).await, Next::Item(item_id(t, 1)));
        assert_eq!(g.next(t, Some(Duration::from_millis(1))).await, Next::Pending);
        assert!(g.end(t).is_empty());
        assert_eq!(g.next(t, None).await, Next::End);
    }

    #[tokio::test]
    async fn a_retried_task_does_not_repeat_items() {
        let g = Generators::default();
        let t = task();
        g.register(t, ReturnKind::Streaming);
        g.add_item(t, 0, item_id(t, 0));
        assert!(!g.expects(t, 0), "item 0 came already");
        assert_eq!(g.add_item(t, 0, item_id(t, 0)), vec![item_id(t, 0)], "a repeat is released");
        assert!(g.expects(t, 1));
    }

    #[tokio::test]
    async fn a_waiting_taker_wakes_when_an_item_arrives() {
        let g = Arc::new(Generators::default());
        let t = task();
        g.register(t, ReturnKind::Streaming);
        let g2 = g.clone();
        let taker = tokio::spawn(async move { g2.next(t, Some(Duration::from_secs(5))).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        g.add_item(t, 0, item_id(t, 0));
        assert_eq!(taker.await.unwrap(), Next::Item(item_id(t, 0)));
    }

    #[test]
    fn dropping_releases_what_was_not_taken_and_later_items() {
        let g = Generators::default();
        let t = task();
        g.register(t, ReturnKind::Streaming);
        g.add_item(t, 0, item_id(t, 0));
        g.add_item(t, 1, item_id(t, 1));
        assert_eq!(g.drop_generator(t), vec![item_id(t, 0), item_id(t, 1)]);
        assert_eq!(g.add_item(t, 2, item_id(t, 2)), vec![item_id(t, 2)]);
        assert!(g.end(t).is_empty(), "nothing left to release");
        assert_eq!(g.len(), 0);
    }

    #[test]
    fn a_dynamic_generator_releases_its_items_when_the_task_ends() {
        let g = Generators::default();
        let t = task();
        g.register(t, ReturnKind::Dynamic);
        g.add_item(t, 0, item_id(t, 0));
        assert_eq!(g.end(t), vec![item_id(t, 0)]);
        assert_eq!(g.len(), 0);
    }
}
