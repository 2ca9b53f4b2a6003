//! Leases: asking the local raylet for a worker (following spillback to the
//! raylet of a node with free resources), opening the task stream to the leased
//! worker, and giving leases back.

use std::sync::Arc;
use std::time::Duration;

use ray_common::NodeId;
use ray_proto::rpc::{PushTasksReply, PushTasksRequest, RequestWorkerLeaseReply, RequestWorkerLeaseRequest, ReturnWorkerRequest};
use tokio::sync::mpsc;

use super::Submitter;
use super::queues::{LeaseKey, QueueKey};
use super::strategy::{self, Target};
use crate::context::RayletClient;
use crate::server::LEASE_HEADER;

/// Where a lease request goes first.
pub(super) enum Start {
    /// This node's raylet.
    Local,
    /// Another node's, picked by the queue's strategy.
    Node {
        client: RayletClient,
        node: Option<NodeId>,
        /// Queue there; otherwise granted there or sent back.
        pinned: bool,
    },
}

/// What an actor's lease asks for beyond a task's.
#[derive(Debug, Clone, Default)]
pub(crate) struct LeaseExtra {
    /// Held while the actor lives, when not the placement shape.
    pub hold: Option<ray_common::ResourceSet>,
    /// Survives its owner and job.
    pub detached: bool,
}

/// A lease granted for an actor.
pub(crate) struct ActorGrant {
    pub reply: RequestWorkerLeaseReply,
    pub raylet: RayletClient,
    pub node: Option<NodeId>,
}

/// Spillback hops followed for one lease request.
const MAX_HOPS: u32 = 4;
/// Times a spilled request sent back (its node got busy) is asked again locally.
const MAX_BOUNCES: u32 = 16;

impl Submitter {
    /// Asks for one lease for `key`'s queue and, once granted, starts feeding it.
    pub(super) async fn request_lease(self: Arc<Self>, key: QueueKey) {
        // Idle leases of other queues go back first, so this request can get their resources.
        let idle = self.queues().idle_leases(Duration::ZERO, Some(&key));
        for lease in idle {
            self.return_lease(lease, false).await;
        }
        let start = match self.first_raylet(&key).await {
            Ok(s) => s,
            Err(wait) => {
                let out = self.queues().lease_request_failed(&key);
                if !out.request_leases.is_empty() {
                    tokio::time::sleep(wait).await;
                }
                self.act(out);
                return;
            }
        };
        let (raylet, granting_node, reply) = self.lease_following_spillback(&key, start, &LeaseExtra::default()).await;
        let reply = match reply {
            Some(r) => r,
            None => {
                let out = self.queues().lease_request_failed(&key);
                if !out.request_leases.is_empty() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                self.act(out);
                return;
            }
        };
        if let Some(node) = granting_node
            && node != self.ctx.node_id
        {
            self.ctx.peers.remember_raylet(node, raylet.clone());
        }
        let (tx, stream) = match self.open_stream(&reply.worker_address, &reply.lease_id).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(worker = %reply.worker_address, error = %e, "cannot reach a leased worker; returning it");
                let _ = raylet.clone().return_worker(ReturnWorkerRequest { lease_id: reply.lease_id, disconnect: true }).await;
                let out = self.queues().lease_request_failed(&key);
                self.act(out);
                return;
            }
        };
        let (lease, out) = self.queues().lease_granted(&key, reply.lease_id, reply.worker_address, reply.worker_pid, raylet, tx);
        self.act(out);
        let me = self.clone();
        tokio::spawn(async move { me.read_results(lease, key, stream).await });
    }

    /// Where the queue's next lease request goes first: the local raylet, or the
    /// node its strategy picks. `Err(wait)`: ask again after `wait` (no node fits
    /// yet, the GCS did not answer, or the tasks were failed as unschedulable).
    async fn first_raylet(self: &Arc<Self>, key: &QueueKey) -> Result<Start, Duration> {
        let Some(strategy) = key.strategy() else { return Ok(self.locality(key)) };
        let nodes = match strategy::cluster_view(&self.ctx.gcs).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the cluster's nodes to place a task; trying again");
                return Err(Duration::from_millis(500));
            }
        };
        match strategy::choose(strategy, key.shape(), &nodes, &self.spread_turn) {
            Target::Local => Ok(Start::Local),
            Target::Node { node_id, address, pinned } => match self.ctx.peers.raylet_at(&address).await {
                Ok(c) => Ok(Start::Node { client: c, node: NodeId::parse(&node_id).ok(), pinned }),
                Err(e) => {
                    tracing::warn!(raylet = %address, error = %e, "cannot reach the raylet its strategy picked; trying again");
                    Err(Duration::from_millis(500))
                }
            },
            Target::NotYet => Err(Duration::from_secs(1)),
            Target::Unschedulable(why) => {
                self.fail_unschedulable(key, &why);
                Err(Duration::ZERO)
            }
        }
    }

    /// The default policy with locality: when the next task's stored arguments
    /// (owned here) are all on one other node, that node's raylet is asked first;
    /// it grants the lease if it has room, else sends it back here.
    fn locality(&self, key: &QueueKey) -> Start {
        let args = self.queues().front_ref_args(key);
        let mut node: Option<NodeId> = None;
        for id in args {
            if let Ok(Some(crate::objects::Value::Plasma { node_id })) = self.own.owned_value(id) {
                match &node {
                    None => node = Some(node_id),
                    Some(n) if *n == node_id => {}
                    Some(_) => return Start::Local,
                }
            }
        }
        match node {
            Some(n) if n != self.ctx.node_id => match self.ctx.peers.raylet_of(&n) {
                Some(client) => Start::Node { client, node: Some(n), pinned: false },
                None => Start::Local,
            },
            _ => Start::Local,
        }
    }

    /// Requests a lease from the first raylet and follows spillback answers to
    /// other nodes' raylets. Returns the raylet that answered last, the node it
    /// runs on, and the grant (`None` when refused or unreachable).
    async fn lease_following_spillback(
        &self,
        key: &QueueKey,
        start: Start,
        extra: &LeaseExtra,
    ) -> (RayletClient, Option<NodeId>, Option<RequestWorkerLeaseReply>) {
        let (mut raylet, mut node, mut no_spillback, pinned) = match start {
            Start::Local => (self.ctx.raylet.clone(), Some(self.ctx.node_id.clone()), false, false),
            Start::Node { client, node, pinned } => (client, node, !pinned, pinned),
        };
        let mut hops = 0;
        let mut bounces = 0;
        loop {
            let req = RequestWorkerLeaseRequest {
                resources: key.shape().to_f64_map(),
                job_id: self.ctx.job_id.to_string(),
                owner_worker_id: self.ctx.worker_id.to_string(),
                wait: true,
                no_spillback,
                pinned,
                hold_differs: extra.hold.is_some(),
                hold_resources: extra.hold.as_ref().map(|h| h.to_f64_map()).unwrap_or_default(),
                detached: extra.detached,
                runtime_env: key.runtime_env().to_string(),
            };
            let reply = match raylet.request_worker_lease(req).await {
                Ok(r) => r.into_inner(),
                Err(_) => return (raylet, node, None),
            };
            // Spillback: that node has the resources free; ask its raylet.
            if !reply.spillback_address.is_empty() && hops < MAX_HOPS {
                hops += 1;
                match self.ctx.peers.raylet_at(&reply.spillback_address).await {
                    Ok(r) => {
                        raylet = r;
                        node = NodeId::parse(&reply.spillback_node_id).ok();
                        no_spillback = true;
                    }
                    Err(e) => {
                        tracing::warn!(raylet = %reply.spillback_address, error = %e, "cannot reach the raylet a lease was spilled to");
                        raylet = self.ctx.raylet.clone();
                        node = Some(self.ctx.node_id.clone());
                        no_spillback = false;
                    }
                }
                continue;
            }
            // A node it was spilled to is busy again: back to our own raylet,
            // which spills with a fresher view of the cluster.
            if reply.retry && no_spillback && bounces < MAX_BOUNCES {
                bounces += 1;
                hops = 0;
                raylet = self.ctx.raylet.clone();
                node = Some(self.ctx.node_id.clone());
                no_spillback = false;
                tokio::time::sleep(Duration::from_millis(10 * u64::from(bounces))).await;
                continue;
            }
            if !reply.rejection.is_empty() || !reply.spillback_address.is_empty() {
                if reply.infeasible {
                    tracing::warn!(shape = %key.shape(), "no node can hold this shape: {}", reply.rejection);
                }
                return (raylet, node, None);
            }
            return (raylet, node, Some(reply));
        }
    }

    /// A lease for an actor of `key`'s shape and strategy: asked for until one
    /// is granted (the request waits in a raylet's queue, where the autoscaler
    /// sees it as demand) or `give_up` says the actor no longer needs it.
    pub(crate) async fn lease_for_actor(self: &Arc<Self>, key: &QueueKey, extra: &LeaseExtra, give_up: impl Fn() -> bool) -> Option<ActorGrant> {
        let mut wait = Duration::from_millis(20);
        loop {
            if give_up() {
                return None;
            }
            let start = match self.first_raylet(key).await {
                Ok(s) => s,
                Err(w) => {
                    tokio::time::sleep(w.max(Duration::from_millis(50))).await;
                    continue;
                }
            };
            let (raylet, node, reply) = self.lease_following_spillback(key, start, extra).await;
            if let Some(reply) = reply {
                return Some(ActorGrant { reply, raylet, node });
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(1));
        }
    }

    /// Opens the task stream to a leased worker; the lease id travels in its metadata.
    pub(crate) async fn open_stream(&self, addr: &str, lease_id: &str) -> Result<(mpsc::UnboundedSender<PushTasksRequest>, tonic::Streaming<PushTasksReply>), String> {
        let mut client = self.ctx.peers.worker(addr).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let mut req = tonic::Request::new(tokio_stream::wrappers::UnboundedReceiverStream::new(rx));
        if let Ok(v) = tonic::metadata::MetadataValue::try_from(lease_id) {
            req.metadata_mut().insert(LEASE_HEADER, v);
        }
        let resp = client.push_tasks(req).await.map_err(|s| s.message().to_string())?;
        Ok((tx, resp.into_inner()))
    }

    /// Returns an idle lease. It is removed only if it is still idle under the lock
    /// (a task may have been pushed since it was found idle); the raylet hears of
    /// the return before the task stream closes, so the worker never looks orphaned.
    pub(super) async fn return_lease(&self, lease: LeaseKey, disconnect: bool) {
        let removed = self.queues().take_idle_lease(lease);
        if let Some(l) = removed {
            let _ = l.raylet.clone().return_worker(ReturnWorkerRequest { lease_id: l.lease_id, disconnect }).await;
            drop(l.tx);
        }
    }
}
