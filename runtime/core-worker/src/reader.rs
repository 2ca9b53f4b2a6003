//! Reading objects: `get` and `wait` over owned objects (woken when their task's
//! result arrives) and borrowed ones (asked of their owner), pinned zero-copy
//! reads from the store (pulled to this node first when another node holds
//! them), remaking lost task returns from their lineage, and the owner's side
//! that answers borrowers.

use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use ray_common::{NodeId, ObjectId};
use ray_proto::rpc::{AddObjectLocationRequest, GetObjectStatusReply, GetObjectStatusRequest, PullObject, PullObjectsRequest, SerializedObject};

use crate::context::{Context, WorkerClient};
use crate::error::CoreError;
use crate::objects::Value;
use crate::ownership::{Ownership, Reference};
use crate::plasma::Pin;
use crate::submitter::Submitter;

/// `GetObjectStatusReply.status`: not ready yet.
const STATUS_PENDING: u32 = 0;
/// Ready, inline in the reply.
const STATUS_INLINE: u32 = 1;
/// Ready, in the store of `plasma_node_id`.
const STATUS_IN_STORE: u32 = 2;
/// Freed (or never owned here).
const STATUS_FREED: u32 = 3;
/// Lost, and it cannot be made again (`error` says why).
const STATUS_LOST: u32 = 4;

/// What a pull of a stored object ended with.
enum Pulled {
    /// It is in this node's store now.
    Here,
    /// Every node that held it is gone; `dead` names the dead one.
    Lost { message: String, dead: Option<NodeId> },
}

/// A value `get` returns.
pub enum Got {
    /// In memory.
    Inline(Arc<SerializedObject>),
    /// Pinned in this node's store; read in place.
    Plasma(Pin),
}

/// Reads objects for `get`/`wait`, and answers borrowers of owned ones.
pub(crate) struct Reader {
    ctx: Arc<Context>,
    own: Arc<Ownership>,
    /// Re-runs tasks whose stored returns were lost.
    submitter: OnceLock<Weak<Submitter>>,
}

impl Reader {
    pub fn new(ctx: Arc<Context>, own: Arc<Ownership>) -> Self {
        Self { ctx, own, submitter: OnceLock::new() }
    }

    /// The submitter that re-runs tasks for lost objects.
    pub fn set_submitter(&self, s: &Arc<Submitter>) {
        let _ = self.submitter.set(Arc::downgrade(s));
    }

    /// The values of `refs`, all of them, or `Timeout` after `timeout`. A worker
    /// that has to wait lends its CPU back to the raylet meanwhile.
    pub async fn get(&self, refs: &[Reference], timeout: Option<Duration>) -> Result<Vec<Got>, CoreError> {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut blocked = false;
        let mut out = Vec::with_capacity(refs.len());
        let mut result = Ok(());
        for r in refs {
            match self.value_of(r, deadline, &mut blocked).await {
                Ok(v) => out.push(v),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if blocked {
            self.ctx.notify_blocked(false).await;
        }
        result.map(|_| out)
    }

    async fn block(&self, blocked: &mut bool) {
        if !*blocked {
            *blocked = true;
            self.ctx.notify_blocked(true).await;
        }
    }

    async fn value_of(&self, r: &Reference, deadline: Option<tokio::time::Instant>, blocked: &mut bool) -> Result<Got, CoreError> {
        let mut lost_on: Option<NodeId> = None;
        loop {
            let (value, copies) = match self.own.owned_value(r.id) {
                Ok(Some(v)) => (v, self.own.copies(r.id)),
                Ok(None) => {
                    self.block(blocked).await;
                    match self.own.owned_value_by(r.id, deadline).await {
                        Ok(Some(v)) => (v, self.own.copies(r.id)),
                        Ok(None) => return Err(CoreError::Timeout),
                        Err(_) => self.borrowed_value(r, deadline, blocked, lost_on.take()).await?,
                    }
                }
                Err(_) => self.borrowed_value(r, deadline, blocked, lost_on.take()).await?,
            };
            let node_id = match value {
                Value::Inline(v) => return Ok(Got::Inline(v)),
                Value::Plasma { node_id } => node_id,
            };
            match self.stored_value(r, &node_id, &copies, deadline).await? {
                Some(pin) => return Ok(Got::Plasma(pin)),
                None => {
                    // Lost: an owner remakes it (below); a borrower asks its owner to.
                    if self.own.owned_value(r.id).is_ok() {
                        self.reconstruct(r.id, &node_id)?;
                    } else {
                        self.own.forget_borrowed_value(r.id);
                        lost_on = Some(node_id);
                    }
                    self.block(blocked).await;
                }
            }
        }
    }

    /// Starts remaking an owned object whose stored value on `lost` is gone.
    /// Ok when it is being remade (by this call or an earlier one).
    fn reconstruct(&self, id: ObjectId, lost: &NodeId) -> Result<(), CoreError> {
        match self.own.begin_reconstruction(id, lost) {
            Ok(Some(lineage)) => match self.submitter.get().and_then(Weak::upgrade) {
                Some(s) => {
                    s.resubmit(&lineage);
                    Ok(())
                }
                None => Err(CoreError::ReconstructionFailed { id, message: format!("object {id} was lost and this worker is shutting down") }),
            },
            Ok(None) => Ok(()),
            Err(why) => Err(CoreError::ReconstructionFailed {
                id,
                message: format!(
                    "object {id} was lost: the node {} that held it is gone, and {why}",
                    ray_common::ids::truncate(lost.as_str(), 12)
                ),
            }),
        }
    }

    /// A stored value pinned in this node's store, pulled here first when other
    /// nodes hold it. `None` when every copy is gone (the caller remakes it).
    async fn stored_value(&self, r: &Reference, node_id: &NodeId, copies: &[NodeId], deadline: Option<tokio::time::Instant>) -> Result<Option<Pin>, CoreError> {
        let id = r.id;
        // A copy here may have been evicted since: ask the raylet, which answers
        // at once when it still holds the object.
        if *node_id != self.ctx.node_id {
            match self.pull(r, node_id, copies, deadline).await? {
                Pulled::Here => {}
                Pulled::Lost { message, dead } => {
                    tracing::warn!(object = %id, "{message}");
                    if dead.is_none() && self.own.owned_value(id).is_ok() {
                        // Freed on every node while we read it: nothing to remake.
                        return Err(CoreError::ObjectLost { id, message: format!("object {id}: {message}") });
                    }
                    return Ok(None);
                }
            }
        }
        let pins = self.own.plasma().get(&[id], Duration::from_secs(10)).await.map_err(CoreError::from)?;
        match pins.into_iter().next().flatten() {
            Some(pin) => Ok(Some(pin)),
            None => Err(CoreError::ObjectLost { id, message: format!("object {id} is no longer in the object store") }),
        }
    }

    /// Asks this node's raylet to copy the object from a node that holds it,
    /// retrying while those nodes cannot be reached but are not known dead.
    async fn pull(&self, r: &Reference, node_id: &NodeId, copies: &[NodeId], deadline: Option<tokio::time::Instant>) -> Result<Pulled, CoreError> {
        let id = r.id;
        let owner = if self.own.owned_value(id).is_ok() { self.ctx.address.clone() } else { r.owner.clone() };
        let mut nodes = vec![node_id.to_string()];
        nodes.extend(copies.iter().map(NodeId::to_string));
        loop {
            let timeout_ms = deadline.map(|d| d.saturating_duration_since(tokio::time::Instant::now()).as_millis().max(1) as u64).unwrap_or(0);
            let req = PullObjectsRequest {
                objects: vec![PullObject { object_id: id.to_vec(), node_ids: nodes.clone(), owner_address: owner.clone() }],
                timeout_ms,
            };
            let reply = self
                .ctx
                .raylet
                .clone()
                .pull_objects(req)
                .await
                .map_err(|s| CoreError::Store(format!("cannot pull object {id} to this node: {}", s.message())))?
                .into_inner();
            let Some(res) = reply.results.into_iter().next() else {
                return Err(CoreError::Store(format!("the raylet answered no result for pulling object {id}")));
            };
            if res.ok {
                self.record_copy(id, &owner);
                return Ok(Pulled::Here);
            }
            if res.lost {
                let dead = res.dead_nodes.first().and_then(|n| NodeId::parse(n).ok());
                return Ok(Pulled::Lost { message: format!("object {id} is lost: {}", res.error), dead });
            }
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                return Err(CoreError::Timeout);
            }
            tracing::debug!(object = %id, error = %res.error, "cannot pull an object yet; trying again");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Tells the owner that this node holds a copy now (it deletes it with the object).
    fn record_copy(&self, id: ObjectId, owner: &str) {
        if owner == self.ctx.address {
            self.own.add_copy(id, self.ctx.node_id.clone());
            return;
        }
        let req = AddObjectLocationRequest {
            object_id: id.to_vec(),
            node_id: self.ctx.node_id.to_string(),
            raylet_address: self.ctx.raylet_address.clone(),
        };
        let ctx = self.ctx.clone();
        let owner = owner.to_string();
        self.ctx.rt.spawn(async move {
            if let Ok(mut c) = ctx.peers.worker(&owner).await {
                let _ = c.add_object_location(req).await;
            }
        });
    }

    async fn owner_client(&self, id: ObjectId, owner: &str) -> Result<WorkerClient, CoreError> {
        self.ctx.peers.worker(owner).await.map_err(|e| CoreError::OwnerDied {
            id,
            owner: owner.to_string(),
            message: format!("cannot reach the owner at {owner}: {e}"),
        })
    }

    /// A borrowed object's value, from the cache or asked of its owner (waiting
    /// while its task runs, in rounds of at most 5 s).
    async fn borrowed_value(
        &self,
        r: &Reference,
        deadline: Option<tokio::time::Instant>,
        blocked: &mut bool,
        mut lost_on: Option<NodeId>,
    ) -> Result<(Value, Vec<NodeId>), CoreError> {
        let id = r.id;
        let (owner, cached) = self.own.borrowed(id).unwrap_or((r.owner.clone(), None));
        if let Some(v) = cached.filter(|_| lost_on.is_none()) {
            return Ok((v, Vec::new()));
        }
        if owner.is_empty() || owner == self.ctx.address {
            return Err(CoreError::ObjectLost { id, message: format!("object {id} was freed") });
        }
        let mut client = self.owner_client(id, &owner).await?;
        loop {
            let wait = match deadline {
                Some(d) => d.saturating_duration_since(tokio::time::Instant::now()).min(Duration::from_secs(5)),
                None => Duration::from_secs(5),
            };
            let lost_node_id = lost_on.take().map(|n| n.to_string()).unwrap_or_default();
            let reply = client
                .get_object_status(GetObjectStatusRequest { object_id: id.to_vec(), timeout_ms: wait.as_millis() as u64, lost_node_id })
                .await
                .map_err(|s| CoreError::OwnerDied {
                    id,
                    owner: owner.clone(),
                    message: format!("the owner at {owner} of object {id} is gone: {}", s.message()),
                })?
                .into_inner();
            let v = match reply.status {
                STATUS_INLINE => Value::Inline(Arc::new(reply.value.unwrap_or_default())),
                STATUS_IN_STORE => match NodeId::parse(&reply.plasma_node_id) {
                    Ok(node_id) => Value::Plasma { node_id },
                    Err(e) => return Err(CoreError::ObjectLost { id, message: format!("object {id}: its owner named no valid node: {e}") }),
                },
                STATUS_FREED => return Err(CoreError::ObjectLost { id, message: format!("object {id} was freed by its owner") }),
                STATUS_LOST => return Err(CoreError::ReconstructionFailed { id, message: reply.error }),
                _ => {
                    if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                        return Err(CoreError::Timeout);
                    }
                    self.block(blocked).await;
                    continue;
                }
            };
            self.own.cache_borrowed(id, v.clone());
            let copies = reply.copy_node_ids.iter().filter_map(|n| NodeId::parse(n).ok()).collect();
            return Ok((v, copies));
        }
    }

    /// What a borrower asking for `id` gets (waiting up to `timeout` while its
    /// task runs). With `lost`, the borrower found the stored value gone from
    /// that node: it is remade first, if it can be.
    pub async fn object_status(&self, id: ObjectId, timeout: Duration, lost: Option<NodeId>) -> GetObjectStatusReply {
        if let Some(node) = lost
            && let Err(e) = self.reconstruct(id, &node)
        {
            return GetObjectStatusReply { status: STATUS_LOST, error: e.to_string(), ..Default::default() };
        }
        let deadline = tokio::time::Instant::now() + timeout;
        match self.own.owned_value_by(id, Some(deadline)).await {
            Ok(Some(Value::Inline(v))) => GetObjectStatusReply { status: STATUS_INLINE, value: Some((*v).clone()), ..Default::default() },
            Ok(Some(Value::Plasma { node_id })) => GetObjectStatusReply {
                status: STATUS_IN_STORE,
                plasma_node_id: node_id.to_string(),
                copy_node_ids: self.own.copies(id).iter().map(NodeId::to_string).collect(),
                ..Default::default()
            },
            Ok(None) => GetObjectStatusReply { status: STATUS_PENDING, ..Default::default() },
            Err(_) => GetObjectStatusReply { status: STATUS_FREED, ..Default::default() },
        }
    }

    /// A borrower's node holds a copy of owned `id` now.
    pub async fn add_location(&self, id: ObjectId, node: NodeId, raylet_address: &str) {
        if self.own.owned_value(id).is_err() {
            return;
        }
        if self.ctx.peers.raylet_of(&node).is_none()
            && let Ok(c) = self.ctx.peers.raylet_at(raylet_address).await
        {
            self.ctx.peers.remember_raylet(node.clone(), c);
        }
        self.own.add_copy(id, node);
    }

    /// Which of `refs` are ready, once `num_returns` are or `timeout` passes.
    /// Owned objects wake the wait; borrowed ones are polled every 50 ms.
    pub async fn wait(&self, refs: &[Reference], num_returns: usize, timeout: Option<Duration>) -> Vec<bool> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut blocked = false;
        loop {
            let mut ready = Vec::with_capacity(refs.len());
            for r in refs {
                ready.push(self.is_ready(r).await);
            }
            let n = ready.iter().filter(|r| **r).count();
            if n >= num_returns || deadline.is_some_and(|d| Instant::now() >= d) {
                if blocked {
                    self.ctx.notify_blocked(false).await;
                }
                return ready;
            }
            self.block(&mut blocked).await;
            let notifies = self.own.ready_notifies(refs.iter().map(|r| r.id));
            let wait = deadline.map(|d| d.saturating_duration_since(Instant::now())).unwrap_or(Duration::from_secs(3600)).min(Duration::from_millis(50));
            type Fut<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;
            let mut futs: Vec<Fut<'_>> = notifies.iter().map(|n| Box::pin(n.notified()) as Fut<'_>).collect();
            futs.push(Box::pin(tokio::time::sleep(wait)));
            let _ = futures::future::select_all(futs).await;
        }
    }

    async fn is_ready(&self, r: &Reference) -> bool {
        match self.own.owned_value(r.id) {
            Ok(v) => v.is_some(),
            Err(_) => {
                // An owner that cannot be reached makes the object "ready": `get`
                // then raises the error.
                let Ok(mut c) = self.owner_client(r.id, &r.owner).await else { return true };
                match c.get_object_status(GetObjectStatusRequest { object_id: r.id.to_vec(), timeout_ms: 0, lost_node_id: String::new() }).await {
                    Ok(reply) => reply.into_inner().status != STATUS_PENDING,
                    Err(_) => true,
                }
            }
        }
    }
}
