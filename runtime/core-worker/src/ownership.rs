//! Ownership: the objects this worker owns (made by `put` or as returns of the
//! tasks it submitted) and the ones it borrows, with their reference counts, and
//! where their values are kept: small ones inline in memory, large ones in the
//! node's shared-memory store. When nothing refers to an owned object any more it
//! is freed, and a stored copy is deleted on whichever node holds it.

use std::sync::{Arc, Mutex, MutexGuard};

use ray_common::{NodeId, ObjectId};
use ray_proto::rpc::{DeleteObjectsRequest, ObjectRefProto, ReturnObject, SerializedObject, TaskArg, task_arg};
use tokio::sync::Notify;

use crate::context::Context;
use crate::error::{CoreError, SystemErrorKind, system_error};
use crate::generators::{Generators, Release};
use crate::layout::Layout;
use crate::objects::{Freed, NotOwned, ObjectTable, Value};
use crate::plasma::{PlasmaClient, PlasmaError};
use crate::submitter::queues::Lineage;

/// Values up to this size travel inline (in messages, in the owner's memory).
pub const MAX_INLINE_BYTES: usize = 100 * 1024;

/// A reference to an object as the frontend holds it: the id and where its owner
/// listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The object.
    pub id: ObjectId,
    /// The owner's core worker address.
    pub owner: String,
}

/// A value serialized by the frontend: pickle bytes, out-of-band buffers, and the
/// references pickled inside it.
pub struct Serialized<'a> {
    /// `KIND_VALUE`, `KIND_ERROR` or `KIND_SYSTEM_ERROR`.
    pub kind: u32,
    /// The pickle bytes.
    pub data: &'a [u8],
    /// Out-of-band buffers (pickle protocol 5).
    pub buffers: Vec<&'a [u8]>,
    /// References inside the value.
    pub nested: Vec<Reference>,
}

impl Serialized<'_> {
    fn size(&self) -> usize {
        self.data.len() + self.buffers.iter().map(|b| b.len()).sum::<usize>()
    }

    fn nested_protos(&self) -> Vec<ObjectRefProto> {
        self.nested.iter().map(|r| ObjectRefProto { object_id: r.id.to_vec(), owner_address: r.owner.clone() }).collect()
    }
}

/// The ownership table of this worker and its store client.
pub(crate) struct Ownership {
    ctx: Arc<Context>,
    table: Mutex<ObjectTable>,
    plasma: PlasmaClient,
    /// The generator tasks this worker submitted, with the items they yielded.
    pub generators: Generators,
}

/// The objects a returned value refers to (kept alive as long as it is).
fn contained_ids(ret: &ReturnObject) -> Vec<ObjectId> {
    let value_refs = ret.value.iter().flat_map(|v| v.nested_refs.iter());
    ret.nested_refs.iter().chain(value_refs).filter_map(|r| ObjectId::from_bytes(&r.object_id).ok()).collect()
}

/// The value recorded for a task's return, from what its worker sent.
fn value_of(id: ObjectId, ret: &mut ReturnObject) -> Value {
    if ret.in_plasma {
        match NodeId::parse(&ret.plasma_node_id) {
            Ok(node_id) => Value::Plasma { node_id },
            Err(e) => Value::Inline(Arc::new(system_error(SystemErrorKind::ObjectLostError, &format!("object {id}: {e}")))),
        }
    } else {
        Value::Inline(Arc::new(ret.value.take().unwrap_or_default()))
    }
}

impl Ownership {
    pub fn new(ctx: Arc<Context>, plasma: PlasmaClient) -> Self {
        Self { ctx, table: Mutex::new(ObjectTable::default()), plasma, generators: Generators::default() }
    }

    /// Drops the generator's references to `ids`.
    fn release(&self, ids: Release) {
        if ids.is_empty() {
            return;
        }
        let mut freed = Vec::new();
        {
            let mut t = self.table();
            for id in ids {
                freed.extend(t.remove_local_ref(id));
            }
        }
        self.free(freed);
    }

    /// A value the generator task `task` yielded, as its worker sent it. Items
    /// that were received already (a task run again yields them again) are
    /// ignored.
    pub fn generator_item(&self, task: ray_common::TaskId, index: u64, mut ret: ReturnObject) {
        if !self.generators.expects(task, index) {
            return;
        }
        let id = crate::generators::item_id(task, index);
        {
            let mut t = self.table();
            let inner = contained_ids(&ret);
            let value = value_of(id, &mut ret);
            t.add_ready(id, value);
            t.add_local_ref(id, "");
            for i in inner {
                t.add_contained(id, i);
            }
        }
        let release = self.generators.add_item(task, index, id);
        self.release(release);
    }

    /// A generator item as it came on a task stream (malformed ones are dropped).
    pub fn generator_item_from_wire(&self, item: ray_proto::rpc::GeneratorItem) {
        let (Ok(task), Some(object)) = (ray_common::TaskId::from_bytes(&item.task_id), item.object) else {
            tracing::warn!("a worker sent a malformed generator item; ignored");
            return;
        };
        self.generator_item(task, item.index, object);
    }

    /// A generator task ended (its result, or its failure, was recorded).
    fn generator_ended(&self, first_return: Option<&ObjectId>) {
        if let Some(id) = first_return {
            let release = self.generators.end(id.task_id());
            self.release(release);
        }
    }

    /// The frontend dropped a streaming generator.
    pub fn drop_generator(&self, task: ray_common::TaskId) {
        let release = self.generators.drop_generator(task);
        self.release(release);
    }

    fn table(&self) -> MutexGuard<'_, ObjectTable> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The store client.
    pub fn plasma(&self) -> &PlasmaClient {
        &self.plasma
    }

    // ------------------------------------------------------------ references

    /// A frontend reference appeared.
    pub fn add_local_ref(&self, r: &Reference) {
        self.table().add_local_ref(r.id, &r.owner);
    }

    /// A frontend reference went away.
    pub fn remove_local_ref(&self, id: ObjectId) {
        let freed = self.table().remove_local_ref(id);
        self.free(freed);
    }

    /// Deletes freed objects from the store that holds them: this node's, or the
    /// raylet of the node that ran the task that stored a large return.
    fn free(&self, freed: Freed) {
        for (id, node) in freed {
            if node == self.ctx.node_id {
                self.plasma.delete(id);
                continue;
            }
            if let Some(mut raylet) = self.ctx.peers.raylet_of(&node) {
                self.ctx.rt.spawn(async move {
                    let _ = raylet.delete_objects(DeleteObjectsRequest { object_ids: vec![id.to_vec()] }).await;
                });
            }
        }
    }

    // ------------------------------------------------------------ values

    /// Stores a value; returns its new object id (owned here), with one reference
    /// already counted for the caller.
    pub fn put(&self, v: &Serialized<'_>) -> Result<ObjectId, CoreError> {
        let id = ObjectId::for_return(self.ctx.ids.task_id(), 0);
        let value = self.store_value(id, &self.ctx.address, v)?;
        let mut t = self.table();
        t.add_ready(id, value);
        // The caller's reference, counted before anyone else can see the object.
        t.add_local_ref(id, "");
        for inner in &v.nested {
            t.add_contained(id, inner.id);
        }
        Ok(id)
    }

    /// A return value of a task this worker runs, stored the way its size asks
    /// for. Objects this worker owns that the value refers to are kept for the
    /// worker's lifetime: the task's owner may read them after the task's own
    /// references are gone (a full borrower protocol would release them once the
    /// caller drops them).
    ///
    /// A stored copy is recorded as `owner`'s (the task's caller): the store
    /// deletes it when that process exits, not when this worker does (an idle
    /// worker stopped by its raylet must not take its callers' results along).
    pub fn make_return(&self, id: ObjectId, owner: &str, v: &Serialized<'_>) -> Result<ReturnObject, CoreError> {
        {
            let mut t = self.table();
            for n in &v.nested {
                if t.is_owned(n.id) {
                    t.add_task_ref(n.id);
                }
            }
        }
        let size = v.size() as u64;
        Ok(match self.store_value(id, owner, v)? {
            Value::Inline(value) => ReturnObject {
                object_id: id.to_vec(),
                value: Some((*value).clone()),
                in_plasma: false,
                plasma_node_id: String::new(),
                size,
                nested_refs: Vec::new(),
            },
            Value::Plasma { node_id } => ReturnObject {
                object_id: id.to_vec(),
                value: None,
                in_plasma: true,
                plasma_node_id: node_id.to_string(),
                size,
                nested_refs: v.nested_protos(),
            },
        })
    }

    /// Inline when small, else in the store.
    fn store_value(&self, id: ObjectId, owner: &str, v: &Serialized<'_>) -> Result<Value, CoreError> {
        if v.size() <= MAX_INLINE_BYTES {
            return Ok(Value::Inline(Arc::new(SerializedObject {
                kind: v.kind,
                data: v.data.to_vec(),
                buffers: v.buffers.iter().map(|b| b.to_vec()).collect(),
                nested_refs: v.nested_protos(),
            })));
        }
        self.put_plasma(id, owner, v)?;
        Ok(Value::Plasma { node_id: self.ctx.node_id.clone() })
    }

    fn put_plasma(&self, id: ObjectId, owner: &str, v: &Serialized<'_>) -> Result<(), PlasmaError> {
        let lens: Vec<u64> = v.buffers.iter().map(|b| b.len() as u64).collect();
        let layout = Layout::plan(v.kind, v.data.len() as u64, &lens);
        let offset = self.ctx.rt.block_on(self.plasma.create(id, layout.total, owner))?;
        let written = self.plasma.write(offset, &layout, v.data, &v.buffers).and_then(|_| self.ctx.rt.block_on(self.plasma.seal(id)));
        if written.is_err() {
            // Give the reserved space back.
            self.plasma.delete(id);
        }
        written
    }

    // ------------------------------------------------------------ tasks

    /// Registers a new task's returns (pending, each with the caller's reference
    /// counted under the same lock, so a fast result cannot free an object before
    /// its ref exists) and holds the owned objects its arguments and nested refs
    /// name. Returns the held objects and the owned arguments still pending.
    pub fn prepare_task(&self, arg_refs: &[ObjectId], nested: &[ObjectId], returns: &[ObjectId]) -> (Vec<ObjectId>, Vec<ObjectId>) {
        let mut held = Vec::new();
        let mut waiting = Vec::new();
        let mut t = self.table();
        for &id in arg_refs {
            if t.is_owned(id) {
                t.add_task_ref(id);
                held.push(id);
                if let Ok(None) = t.owned_value(id) {
                    waiting.push(id);
                }
            }
        }
        for &id in nested {
            if t.is_owned(id) {
                t.add_task_ref(id);
                held.push(id);
            }
        }
        for &r in returns {
            t.add_pending(r);
            t.add_local_ref(r, "");
        }
        (held, waiting)
    }

    /// Inlines owned, ready, small arguments (Ray's dependency resolution): the
    /// worker then needs no round trip for them.
    pub fn inline_args(&self, args: &mut [TaskArg]) {
        let t = self.table();
        for a in args.iter_mut() {
            if let Some(task_arg::Arg::PlasmaRef(r)) = &a.arg
                && let Ok(id) = ObjectId::from_bytes(&r.object_id)
                && let Ok(Some(Value::Inline(v))) = t.owned_value(id)
            {
                a.arg = Some(task_arg::Arg::Value((*v).clone()));
            }
        }
    }

    /// Stores the returns of a finished task and releases what the task held.
    /// With `lineage`, returns kept in a store can be made again if lost; the
    /// task's arguments then stay held as long as those returns do.
    pub fn task_succeeded(&self, returns: Vec<ReturnObject>, held: &[ObjectId], lineage: Option<Arc<Lineage>>) {
        let first = returns.first().and_then(|r| ObjectId::from_bytes(&r.object_id).ok());
        let stored: Vec<ObjectId> =
            returns.iter().filter(|r| r.in_plasma).filter_map(|r| ObjectId::from_bytes(&r.object_id).ok()).collect();
        let lineage = lineage.filter(|_| !stored.is_empty());
        let mut freed = Vec::new();
        {
            let mut t = self.table();
            for mut ret in returns {
                let Ok(id) = ObjectId::from_bytes(&ret.object_id) else {
                    tracing::warn!(len = ret.object_id.len(), "a worker returned a malformed object id; ignored");
                    continue;
                };
                // Refs the value holds to our objects (a task returning its argument)
                // keep those objects alive as long as the value.
                for inner in contained_ids(&ret) {
                    t.add_contained(id, inner);
                }
                let value = value_of(id, &mut ret);
                freed.extend(t.set_value(id, value));
            }
            match lineage {
                // The arguments move from the task to its stored returns.
                Some(lineage) => {
                    for &id in &stored {
                        t.set_lineage(id, lineage.clone());
                    }
                    let keep: Vec<ObjectId> = stored.iter().copied().filter(|id| t.is_owned(*id)).collect();
                    for &arg in held {
                        for &ret in &keep {
                            t.add_contained(ret, arg);
                        }
                        freed.extend(t.remove_task_ref(arg));
                    }
                }
                None => {
                    for &id in held {
                        freed.extend(t.remove_task_ref(id));
                    }
                }
            }
        }
        self.free(freed);
        self.generator_ended(first.as_ref());
    }

    /// Records that `node` holds a copy of the owned object `id` (deleted with it).
    pub fn add_copy(&self, id: ObjectId, node: NodeId) {
        self.table().add_copy(id, node);
    }

    /// Nodes holding copies of owned `id` besides its primary.
    pub fn copies(&self, id: ObjectId) -> Vec<NodeId> {
        self.table().copies(id)
    }

    /// See [`crate::objects::ObjectTable::begin_reconstruction`]; the surviving
    /// copies of the returns being made again are deleted.
    pub fn begin_reconstruction(&self, id: ObjectId, lost: &NodeId) -> Result<Option<Arc<Lineage>>, String> {
        let (lineage, stale) = self.table().begin_reconstruction(id, lost)?;
        self.free(stale);
        Ok(lineage)
    }

    /// Stores `error` as every return of a task that failed or was cancelled,
    /// and releases what the task held.
    pub fn task_failed(&self, return_ids: &[ObjectId], error: &SerializedObject, held: &[ObjectId]) {
        let mut freed = Vec::new();
        {
            let mut t = self.table();
            let error = Arc::new(error.clone());
            for &id in return_ids {
                freed.extend(t.set_value(id, Value::Inline(error.clone())));
            }
            for &id in held {
                freed.extend(t.remove_task_ref(id));
            }
        }
        self.free(freed);
        self.generator_ended(return_ids.first());
    }

    // ------------------------------------------------------------ reading

    /// The value of an owned object: `Ok(Some)` if ready, `Ok(None)` while its
    /// task runs, `Err(NotOwned)` if this worker does not (or no longer) own it.
    pub fn owned_value(&self, id: ObjectId) -> Result<Option<Value>, NotOwned> {
        self.table().owned_value(id)
    }

    /// Waits for an owned object's value until `deadline` (forever when `None`):
    /// `Ok(None)` when the deadline passed first.
    pub async fn owned_value_by(&self, id: ObjectId, deadline: Option<tokio::time::Instant>) -> Result<Option<Value>, NotOwned> {
        loop {
            let notify = {
                let t = self.table();
                match t.owned_value(id)? {
                    Some(v) => return Ok(Some(v)),
                    None => t.ready_notify(id),
                }
            };
            let Some(notify) = notify else { continue };
            let notified = notify.notified();
            tokio::pin!(notified);
            // Registered before the second look, so a value set in between wakes us.
            notified.as_mut().enable();
            if let Some(v) = self.owned_value(id)? {
                return Ok(Some(v));
            }
            match deadline {
                Some(d) => {
                    if tokio::time::timeout_at(d, notified).await.is_err() {
                        return Ok(None);
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Notifiers of the owned objects among `ids` (woken when a value arrives).
    pub fn ready_notifies(&self, ids: impl Iterator<Item = ObjectId>) -> Vec<Arc<Notify>> {
        let t = self.table();
        ids.filter_map(|id| t.ready_notify(id)).collect()
    }

    /// The owner and cached value of a borrowed object.
    pub fn borrowed(&self, id: ObjectId) -> Option<(String, Option<Value>)> {
        self.table().borrowed_owner(id)
    }

    /// Drops the cached value of a borrowed object (its stored copy was lost).
    pub fn forget_borrowed_value(&self, id: ObjectId) {
        self.table().forget_borrowed_value(id);
    }

    /// Keeps a borrowed object's value while references to it remain.
    pub fn cache_borrowed(&self, id: ObjectId, v: Value) {
        self.table().cache_borrowed(id, v);
    }

    /// Owned objects whose task has not finished.
    pub fn pending(&self) -> usize {
        self.table().len_pending()
    }

    /// Counts of owned and borrowed objects.
    pub fn counts(&self) -> (usize, usize) {
        let t = self.table();
        (t.len_owned(), t.len_borrowed())
    }
}
