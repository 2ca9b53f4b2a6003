//! Objects this worker owns (created by `put` or as returns of tasks it
//! submitted) and objects it borrows (refs owned elsewhere), with their reference
//! counts. An owned object is freed once no Python reference and no pending task
//! holds it; one in the object store is then deleted there too.

use std::collections::HashMap;
use std::sync::Arc;

use ray_common::{NodeId, ObjectId};
use ray_proto::rpc::SerializedObject;
use tokio::sync::Notify;

use crate::submitter::queues::Lineage;

/// Where a ready value is.
#[derive(Debug, Clone)]
pub enum Value {
    /// In this process's memory.
    Inline(Arc<SerializedObject>),
    /// In the object store of a node.
    Plasma {
        /// The node.
        node_id: NodeId,
    },
}

/// One owned object.
#[derive(Debug)]
pub struct Owned {
    /// `None` while its task runs.
    pub value: Option<Value>,
    /// Python references.
    pub local_refs: u32,
    /// Pending tasks using it as an argument (or holding it nested).
    pub task_refs: u32,
    /// Wakes `get`/`wait` when the value arrives.
    pub ready: Arc<Notify>,
    /// Owned objects referenced from inside this one's value: held until it goes.
    pub contains: Vec<ObjectId>,
    /// Other nodes holding a copy of a stored value (deleted with it).
    pub copies: Vec<NodeId>,
    /// How to make the value again (a task return kept in a store), if allowed.
    pub lineage: Option<Arc<Lineage>>,
}

impl Owned {
    fn new(value: Option<Value>) -> Self {
        Self { value, local_refs: 0, task_refs: 0, ready: Arc::new(Notify::new()), contains: Vec::new(), copies: Vec::new(), lineage: None }
    }
}

/// One borrowed object.
#[derive(Debug)]
pub struct Borrowed {
    /// The owner's core worker address.
    pub owner: String,
    /// Python references.
    pub local_refs: u32,
    /// A value fetched once, kept while references remain.
    pub cache: Option<Value>,
}

/// What freeing released: store objects to delete on a node.
pub type Freed = Vec<(ObjectId, NodeId)>;

/// Asked for the value of an object this worker does not own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotOwned;

/// The table.
#[derive(Debug, Default)]
pub struct ObjectTable {
    owned: HashMap<ObjectId, Owned>,
    borrowed: HashMap<ObjectId, Borrowed>,
}

impl ObjectTable {
    /// Registers an owned object whose value comes later (a task return).
    pub fn add_pending(&mut self, id: ObjectId) {
        self.owned.insert(id, Owned::new(None));
    }

    /// Registers an owned object with its value (`put`).
    pub fn add_ready(&mut self, id: ObjectId, value: Value) {
        self.owned.insert(id, Owned::new(Some(value)));
    }

    /// Sets the value of a pending owned object. Returns a store object to delete
    /// when nobody references it any more.
    pub fn set_value(&mut self, id: ObjectId, value: Value) -> Freed {
        let Some(o) = self.owned.get_mut(&id) else {
            // Freed before its task finished: drop what the task stored.
            return match value {
                Value::Plasma { node_id } => vec![(id, node_id)],
                Value::Inline(_) => Vec::new(),
            };
        };
        o.value = Some(value);
        o.ready.notify_waiters();
        self.maybe_free(id)
    }

    /// Records that `node` now holds a copy of the stored object `id`.
    pub fn add_copy(&mut self, id: ObjectId, node: NodeId) {
        if let Some(o) = self.owned.get_mut(&id)
            && !o.copies.contains(&node)
            && !matches!(&o.value, Some(Value::Plasma { node_id }) if *node_id == node)
        {
            o.copies.push(node);
        }
    }

    /// Nodes holding copies of `id` besides its primary.
    pub fn copies(&self, id: ObjectId) -> Vec<NodeId> {
        self.owned.get(&id).map(|o| o.copies.clone()).unwrap_or_default()
    }

    /// Keeps how `id` was made, so it can be made again if lost.
    pub fn set_lineage(&mut self, id: ObjectId, lineage: Arc<Lineage>) {
        if let Some(o) = self.owned.get_mut(&id) {
            o.lineage = Some(lineage);
        }
    }

    /// `id`'s stored value on `lost` is gone: if it is still the value recorded,
    /// it becomes pending again (with its sibling returns `siblings`) and the
    /// lineage is handed out to re-run it once. `Ok(None)` when someone else
    /// started that already (the value changed); `Err` with the reason when it
    /// cannot be made again.
    pub fn begin_reconstruction(&mut self, id: ObjectId, lost: &NodeId) -> Result<(Option<Arc<Lineage>>, Freed), String> {
        let Some(o) = self.owned.get(&id) else { return Err("its owner freed it".into()) };
        match &o.value {
            Some(Value::Plasma { node_id }) if node_id == lost => {}
            _ => return Ok((None, Vec::new())),
        }
        let Some(lineage) = o.lineage.clone() else {
            return Err("it was made by ray.put (or its task allows no retries), so it cannot be made again".into());
        };
        if lineage.retries_left == 0 {
            return Err("the task that made it has no retries left (max_retries)".into());
        }
        // Every return the task stored on that node is made again; the copies
        // that survive elsewhere are deleted (the re-run stores them anew).
        let mut stale = Vec::new();
        for r in &lineage.spec.return_ids {
            let Ok(r) = ObjectId::from_bytes(r) else { continue };
            if let Some(o) = self.owned.get_mut(&r)
                && matches!(&o.value, Some(Value::Plasma { node_id }) if node_id == lost)
            {
                o.value = None;
                stale.extend(o.copies.drain(..).filter(|n| n != lost).map(|n| (r, n)));
                o.lineage = None;
            }
        }
        Ok((Some(lineage), stale))
    }

    /// Records that `outer`'s value refers to `inner` (both owned here): `inner`
    /// stays while `outer` does.
    pub fn add_contained(&mut self, outer: ObjectId, inner: ObjectId) {
        if outer == inner || !self.owned.contains_key(&inner) {
            return;
        }
        if let Some(o) = self.owned.get_mut(&outer) {
            o.contains.push(inner);
            if let Some(i) = self.owned.get_mut(&inner) {
                i.task_refs += 1;
            }
        }
    }

    /// True when this worker owns `id`.
    pub fn is_owned(&self, id: ObjectId) -> bool {
        self.owned.contains_key(&id)
    }

    /// The value of an owned object, if ready; `None` if pending; `Err` if this
    /// worker does not own it.
    pub fn owned_value(&self, id: ObjectId) -> Result<Option<Value>, NotOwned> {
        self.owned.get(&id).map(|o| o.value.clone()).ok_or(NotOwned)
    }

    /// The notifier of an owned object.
    pub fn ready_notify(&self, id: ObjectId) -> Option<Arc<Notify>> {
        self.owned.get(&id).map(|o| o.ready.clone())
    }

    /// Owner of a borrowed object.
    pub fn borrowed_owner(&self, id: ObjectId) -> Option<(String, Option<Value>)> {
        self.borrowed.get(&id).map(|b| (b.owner.clone(), b.cache.clone()))
    }

    /// Drops a borrowed object's cached value.
    pub fn forget_borrowed_value(&mut self, id: ObjectId) {
        if let Some(b) = self.borrowed.get_mut(&id) {
            b.cache = None;
        }
    }

    /// Caches a borrowed object's value.
    pub fn cache_borrowed(&mut self, id: ObjectId, v: Value) {
        if let Some(b) = self.borrowed.get_mut(&id) {
            b.cache = Some(v);
        }
    }

    /// A Python reference appeared. `owner` is the owner's address for refs that
    /// are not ours.
    pub fn add_local_ref(&mut self, id: ObjectId, owner: &str) {
        if let Some(o) = self.owned.get_mut(&id) {
            o.local_refs += 1;
            return;
        }
        self.borrowed
            .entry(id)
            .or_insert_with(|| Borrowed { owner: owner.to_string(), local_refs: 0, cache: None })
            .local_refs += 1;
    }

    /// A Python reference went away.
    pub fn remove_local_ref(&mut self, id: ObjectId) -> Freed {
        if let Some(o) = self.owned.get_mut(&id) {
            o.local_refs = o.local_refs.saturating_sub(1);
            return self.maybe_free(id);
        }
        if let Some(b) = self.borrowed.get_mut(&id) {
            b.local_refs = b.local_refs.saturating_sub(1);
            if b.local_refs == 0 {
                self.borrowed.remove(&id);
            }
        }
        Vec::new()
    }

    /// A pending task holds `id` (an argument).
    pub fn add_task_ref(&mut self, id: ObjectId) {
        if let Some(o) = self.owned.get_mut(&id) {
            o.task_refs += 1;
        }
    }

    /// A task that held `id` finished.
    pub fn remove_task_ref(&mut self, id: ObjectId) -> Freed {
        if let Some(o) = self.owned.get_mut(&id) {
            o.task_refs = o.task_refs.saturating_sub(1);
            return self.maybe_free(id);
        }
        Vec::new()
    }

    fn maybe_free(&mut self, id: ObjectId) -> Freed {
        let mut freed = Vec::new();
        let mut work = vec![id];
        while let Some(id) = work.pop() {
            let free = self.owned.get(&id).is_some_and(|o| o.local_refs == 0 && o.task_refs == 0 && o.value.is_some());
            if !free {
                continue;
            }
            let Some(o) = self.owned.remove(&id) else { continue };
            if let Some(Value::Plasma { node_id }) = o.value {
                freed.push((id, node_id));
                freed.extend(o.copies.into_iter().map(|n| (id, n)));
            }
            // What it referred to may go now too.
            for inner in o.contains {
                if let Some(i) = self.owned.get_mut(&inner) {
                    i.task_refs = i.task_refs.saturating_sub(1);
                    work.push(inner);
                }
            }
        }
        freed
    }

    /// Number of owned objects (pending ones included).
    pub fn len_owned(&self) -> usize {
        self.owned.len()
    }

    /// Number of owned objects whose task has not finished yet.
    pub fn len_pending(&self) -> usize {
        self.owned.values().filter(|o| o.value.is_none()).count()
    }

    /// Number of borrowed objects.
    pub fn len_borrowed(&self) -> usize {
        self.borrowed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ray_common::TaskId;

    fn id(n: u8) -> ObjectId {
        ObjectId::for_return(TaskId::new([n; 16]), 1)
    }

    fn node() -> NodeId {
        NodeId::parse(&"ab".repeat(28)).unwrap()
    }

    fn plasma() -> Value {
        Value::Plasma { node_id: node() }
    }

    #[test]
    fn freed_when_refs_and_task_refs_are_gone() {
        let mut t = ObjectTable::default();
        let a = id(1);
        t.add_ready(a, plasma());
        t.add_local_ref(a, "");
        t.add_task_ref(a);
        assert!(t.remove_local_ref(a).is_empty(), "a pending task still holds it");
        assert_eq!(t.remove_task_ref(a), vec![(a, node())]);
        assert!(!t.is_owned(a));
    }

    #[test]
    fn a_pending_object_is_kept_until_its_value_arrives() {
        let mut t = ObjectTable::default();
        let r = id(2);
        t.add_pending(r);
        t.add_local_ref(r, "");
        assert!(t.remove_local_ref(r).is_empty());
        assert!(t.is_owned(r));
        assert_eq!(t.set_value(r, plasma()).len(), 1, "nobody wants it: delete at once");
        assert!(!t.is_owned(r));
    }

    #[test]
    fn objects_inside_others_live_as_long_as_their_container() {
        let mut t = ObjectTable::default();
        let (inner, outer) = (id(3), id(4));
        t.add_ready(inner, plasma());
        t.add_ready(outer, plasma());
        t.add_local_ref(outer, "");
        t.add_contained(outer, inner);
        assert!(t.is_owned(inner), "held by the container");
        assert_eq!(t.remove_local_ref(outer).len(), 2, "both go, the inner one with its container");
        assert!(!t.is_owned(inner));
    }

    #[test]
    fn borrowed_refs_are_counted_separately() {
        let mut t = ObjectTable::default();
        let x = id(5);
        t.add_local_ref(x, "owner:1");
        t.add_local_ref(x, "owner:1");
        assert_eq!(t.borrowed_owner(x).unwrap().0, "owner:1");
        t.remove_local_ref(x);
        assert_eq!(t.len_borrowed(), 1);
        t.remove_local_ref(x);
        assert_eq!(t.len_borrowed(), 0);
    }
}
