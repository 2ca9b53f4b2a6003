//! Reading objects: `get` and `wait` over owned objects (woken when their task's
//! result arrives) and borrowed ones (asked of their owner), pinned zero-copy
//! reads from the store, and the owner's side that answers borrowers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ray_common::{NodeId, ObjectId};
use ray_proto::rpc::{GetObjectStatusReply, GetObjectStatusRequest, SerializedObject};

use crate::context::{Context, WorkerClient};
use crate::error::CoreError;
use crate::objects::Value;
use crate::ownership::{Ownership, Reference};
use crate::plasma::Pin;

/// `GetObjectStatusReply.status`: not ready yet.
const STATUS_PENDING: u32 = 0;
/// Ready, inline in the reply.
const STATUS_INLINE: u32 = 1;
/// Ready, in the store of `plasma_node_id`.
const STATUS_IN_STORE: u32 = 2;
/// Freed (or never owned here).
const STATUS_FREED: u32 = 3;

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
}

impl Reader {
    pub fn new(ctx: Arc<Context>, own: Arc<Ownership>) -> Self {
        Self { ctx, own }
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
        let value = match self.own.owned_value(r.id) {
            Ok(Some(v)) => v,
            Ok(None) => {
                self.block(blocked).await;
                match self.own.owned_value_by(r.id, deadline).await {
                    Ok(Some(v)) => v,
                    Ok(None) => return Err(CoreError::Timeout),
                    Err(_) => self.borrowed_value(r, deadline, blocked).await?,
                }
            }
            Err(_) => self.borrowed_value(r, deadline, blocked).await?,
        };
        match value {
            Value::Inline(v) => Ok(Got::Inline(v)),
            Value::Plasma { node_id } => self.plasma_value(r.id, &node_id).await,
        }
    }

    async fn plasma_value(&self, id: ObjectId, node_id: &NodeId) -> Result<Got, CoreError> {
        if *node_id != self.ctx.node_id {
            return Err(CoreError::ObjectLost {
                id,
                message: format!(
                    "object {id} is on node {} and moving objects between nodes is not available yet",
                    ray_common::ids::truncate(node_id.as_str(), 12)
                ),
            });
        }
        let pins = self.own.plasma().get(&[id], Duration::from_secs(10)).await.map_err(CoreError::from)?;
        pins.into_iter()
            .next()
            .flatten()
            .map(Got::Plasma)
            .ok_or_else(|| CoreError::ObjectLost { id, message: format!("object {id} is no longer in the object store") })
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
    async fn borrowed_value(&self, r: &Reference, deadline: Option<tokio::time::Instant>, blocked: &mut bool) -> Result<Value, CoreError> {
        let id = r.id;
        let (owner, cached) = self.own.borrowed(id).unwrap_or((r.owner.clone(), None));
        if let Some(v) = cached {
            return Ok(v);
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
            let reply = client
                .get_object_status(GetObjectStatusRequest { object_id: id.to_vec(), timeout_ms: wait.as_millis() as u64 })
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
                _ => {
                    if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                        return Err(CoreError::Timeout);
                    }
                    self.block(blocked).await;
                    continue;
                }
            };
            self.own.cache_borrowed(id, v.clone());
            return Ok(v);
        }
    }

    /// What a borrower asking for `id` gets (waiting up to `timeout` while its
    /// task runs).
    pub async fn object_status(&self, id: ObjectId, timeout: Duration) -> GetObjectStatusReply {
        let deadline = tokio::time::Instant::now() + timeout;
        match self.own.owned_value_by(id, Some(deadline)).await {
            Ok(Some(Value::Inline(v))) => GetObjectStatusReply { status: STATUS_INLINE, value: Some((*v).clone()), plasma_node_id: String::new() },
            Ok(Some(Value::Plasma { node_id })) => {
                GetObjectStatusReply { status: STATUS_IN_STORE, value: None, plasma_node_id: node_id.to_string() }
            }
            Ok(None) => GetObjectStatusReply { status: STATUS_PENDING, ..Default::default() },
            Err(_) => GetObjectStatusReply { status: STATUS_FREED, ..Default::default() },
        }
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
                match c.get_object_status(GetObjectStatusRequest { object_id: r.id.to_vec(), timeout_ms: 0 }).await {
                    Ok(reply) => reply.into_inner().status != STATUS_PENDING,
                    Err(_) => true,
                }
            }
        }
    }
}
