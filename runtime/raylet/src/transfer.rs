//! Objects between nodes. A core worker that needs an object held on another
//! node asks its own raylet to pull it ([`pull_objects`]); the raylet reads it
//! from a raylet that holds a copy in chunks, several in flight
//! ([`read_chunk`] serves them), writes them into a secondary copy in its own
//! store and seals it. Concurrent pulls of one object share one transfer.
//! Raylet-to-raylet calls go through the same token check as every other call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use ray_common::rpc::{self, Channel, Security};
use ray_object_store::{Lookup, hex};
use ray_proto::rpc::node_manager_service_client::NodeManagerServiceClient;
use ray_proto::rpc::{
    GetAllNodeInfoRequest, NodeState as WireNodeState, PullObject, PullObjectsReply, PullObjectsRequest, PullResult,
    ReadObjectChunkReply, ReadObjectChunkRequest,
};
use tokio::sync::OnceCell;

use crate::Raylet;
use crate::spill;

/// Bytes per chunk.
pub const CHUNK_BYTES: u64 = 4 << 20;
/// Chunks of one object in flight at once.
const CHUNKS_IN_FLIGHT: usize = 8;
/// Connections to one peer that chunks are spread over (HTTP/2 handles one
/// connection on one thread; several use several cores).
const CONNECTIONS_PER_PEER: usize = 4;
/// The pin a peer's read holds while its chunk is copied out.
const PEER_CLIENT: &str = "peer-read";


/// The other raylets: their addresses, connections, and the pulls under way.
pub struct Transfers {
    security: Security,
    /// Alive nodes: node id -> raylet address (from the cluster view loop).
    directory: Mutex<HashMap<String, String>>,
    channels: Mutex<HashMap<String, Vec<Channel>>>,
    inflight: Mutex<HashMap<Vec<u8>, Arc<OnceCell<PullResult>>>>,
}

impl Transfers {
    /// The token and TLS settings this raylet's clients use.
    pub fn security(&self) -> &Security {
        &self.security
    }

    /// No nodes known yet.
    pub fn new(security: Security) -> Self {
        Self {
            security,
            directory: Mutex::new(HashMap::new()),
            channels: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
        }
    }

    /// Replaces the addresses of the alive nodes.
    pub fn set_directory(&self, nodes: HashMap<String, String>) {
        *self.directory.lock().unwrap_or_else(|p| p.into_inner()) = nodes;
    }

    fn address_of(&self, node: &str) -> Option<String> {
        self.directory.lock().unwrap_or_else(|p| p.into_inner()).get(node).cloned()
    }

    /// Clients of the raylet at `addr`, one per connection.
    async fn clients(&self, addr: &str) -> Result<Vec<NodeManagerServiceClient<Channel>>, String> {
        let cached = self.channels.lock().unwrap_or_else(|p| p.into_inner()).get(addr).cloned();
        let chans = match cached {
            Some(c) => c,
            None => {
                let mut c = Vec::with_capacity(CONNECTIONS_PER_PEER);
                for _ in 0..CONNECTIONS_PER_PEER {
                    c.push(self.security.connect(addr, Duration::from_secs(5)).await.map_err(|e| e.to_string())?);
                }
                self.channels.lock().unwrap_or_else(|p| p.into_inner()).insert(addr.to_string(), c.clone());
                c
            }
        };
        Ok(chans.into_iter().map(|ch| NodeManagerServiceClient::new(ch).max_decoding_message_size(rpc::MAX_MESSAGE_BYTES)).collect())
    }

    fn forget(&self, addr: &str) {
        self.channels.lock().unwrap_or_else(|p| p.into_inner()).remove(addr);
    }
}

/// A pinned region of the store, handed to the encoder without a copy; the pin
/// goes when the encoder drops it.
struct PinnedChunk {
    raylet: Arc<Raylet>,
    id: Vec<u8>,
    offset: u64,
    len: u64,
}

impl AsRef<[u8]> for PinnedChunk {
    fn as_ref(&self) -> &[u8] {
        self.raylet.mapping.slice(self.offset, self.len).unwrap_or_default()
    }
}

impl Drop for PinnedChunk {
    fn drop(&mut self) {
        self.raylet.state.lock().release_objects(std::slice::from_ref(&self.id), PEER_CLIENT);
    }
}

/// Serves part of a sealed object to a peer raylet (restoring it from disk first
/// if it was spilled, and waiting while someone else restores it). The object
/// stays pinned until the chunk is sent.
pub async fn read_chunk(r: &Arc<Raylet>, req: ReadObjectChunkRequest) -> ReadObjectChunkReply {
    let not_found = ReadObjectChunkReply { found: false, total_size: 0, data: bytes::Bytes::new() };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let loc = loop {
        let sealed = r.state.sealed_notifier();
        let (lookup, pinned) = {
            let mut s = r.state.lock();
            let pinned = s.pin_object(&req.object_id, PEER_CLIENT);
            (s.lookup_object(&req.object_id), pinned)
        };
        if let Some(loc) = pinned {
            break loc;
        }
        match lookup {
            Lookup::Missing => return not_found,
            _ if tokio::time::Instant::now() >= deadline => return not_found,
            Lookup::Spilled => {
                if spill::restore(r, &req.object_id).await.is_err() {
                    return not_found;
                }
            }
            // Being restored or written: wait for its seal.
            Lookup::Unsealed | Lookup::Ready => {
                let _ = tokio::time::timeout(Duration::from_millis(200), sealed).await;
            }
        }
    };
    let offset = req.offset.min(loc.size);
    let len = req.length.min(CHUNK_BYTES * 2).min(loc.size - offset);
    let chunk = PinnedChunk { raylet: r.clone(), id: req.object_id, offset: loc.offset + offset, len };
    if r.mapping.slice(chunk.offset, chunk.len).is_none() {
        return not_found;
    }
    ReadObjectChunkReply { found: true, total_size: loc.size, data: bytes::Bytes::from_owner(chunk) }
}

/// Brings each object into this node's store unless it is here already.
pub async fn pull_objects(r: &Arc<Raylet>, req: PullObjectsRequest) -> PullObjectsReply {
    let timeout = Duration::from_millis(if req.timeout_ms == 0 { 600_000 } else { req.timeout_ms.min(3_600_000) });
    let pulls = req.objects.into_iter().map(|o| {
        let r = r.clone();
        async move {
            let id = o.object_id.clone();
            match tokio::time::timeout(timeout, pull_shared(&r, o)).await {
                Ok(res) => res,
                Err(_) => PullResult { object_id: id, ok: false, error: format!("the pull took longer than {timeout:?}"), ..Default::default() },
            }
        }
    });
    PullObjectsReply { results: futures::future::join_all(pulls).await }
}

/// One pull per object at a time: later callers wait for the first one's result.
async fn pull_shared(r: &Arc<Raylet>, o: PullObject) -> PullResult {
    let id = o.object_id.clone();
    let cell = r.transfers.inflight.lock().unwrap_or_else(|p| p.into_inner()).entry(id.clone()).or_default().clone();
    // The transfer runs as a task of its own: a caller that gives up (a timeout,
    // a cancelled call) never leaves a half-written copy behind.
    let res = cell
        .get_or_init(|| {
            let (r, o) = (r.clone(), o.clone());
            async move {
                let id = o.object_id.clone();
                tokio::spawn(async move { pull_one(&r, o).await }).await.unwrap_or_else(|_| PullResult {
                    object_id: id,
                    error: "the pull stopped".into(),
                    ..Default::default()
                })
            }
        })
        .await
        .clone();
    let mut inflight = r.transfers.inflight.lock().unwrap_or_else(|p| p.into_inner());
    if inflight.get(&id).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
        inflight.remove(&id);
    }
    res
}

async fn pull_one(r: &Arc<Raylet>, o: PullObject) -> PullResult {
    let id = o.object_id.clone();
    let ok = || PullResult { object_id: id.clone(), ok: true, ..Default::default() };
    let here = r.state.lock().lookup_object(&id);
    match here {
        Lookup::Ready | Lookup::Unsealed => return ok(),
        Lookup::Spilled => {
            return match spill::restore(r, &id).await {
                Ok(()) => ok(),
                Err(e) => PullResult { object_id: id.clone(), error: e.to_string(), ..Default::default() },
            };
        }
        Lookup::Missing => {}
    }
    let me = r.node_id.to_string();
    let started = std::time::Instant::now();
    let mut dead = Vec::new();
    let mut errors = Vec::new();
    let mut missing = 0;
    for node in o.node_ids.iter().filter(|n| **n != me) {
        let addr = match r.transfers.address_of(node) {
            Some(a) => a,
            None => {
                if node_is_dead(r, node).await {
                    dead.push(node.clone());
                } else {
                    errors.push(format!("node {} is not in the cluster view yet", short(node)));
                }
                continue;
            }
        };
        match fetch(r, &addr, &id, &o.owner_address).await {
            Ok(true) => {
                tracing::debug!(object = %hex(&id), from = %short(node), elapsed_ms = started.elapsed().as_millis() as u64, "pulled an object");
                return ok();
            }
            Ok(false) => missing += 1,
            Err(e) => {
                r.transfers.forget(&addr);
                if node_is_dead(r, node).await {
                    dead.push(node.clone());
                } else {
                    errors.push(format!("node {}: {e}", short(node)));
                }
            }
        }
    }
    let named = o.node_ids.iter().filter(|n| **n != me).count();
    let lost = errors.is_empty() && dead.len() + missing == named;
    let error = if lost {
        if dead.is_empty() {
            "no node holds a copy any more".to_string()
        } else {
            format!("the node that held it died ({})", dead.iter().map(|n| short(n)).collect::<Vec<_>>().join(", "))
        }
    } else {
        errors.join("; ")
    };
    PullResult { object_id: id, ok: false, error, lost, dead_nodes: dead }
}

fn short(node: &str) -> &str {
    ray_common::ids::truncate(node, 12)
}

/// True when the GCS has the node as dead, or does not know it at all.
async fn node_is_dead(r: &Arc<Raylet>, node: &str) -> bool {
    match r.gcs.nodes.clone().get_all_node_info(GetAllNodeInfoRequest { state_filter: None }).await {
        Ok(reply) => match reply.into_inner().nodes.into_iter().find(|n| n.node_id == node) {
            Some(n) => n.state == WireNodeState::Dead as i32,
            None => true,
        },
        Err(_) => false,
    }
}

/// Copies an object from the raylet at `addr` into a secondary copy here.
/// `Ok(false)` when that raylet does not hold it.
async fn fetch(r: &Arc<Raylet>, addr: &str, id: &[u8], owner: &str) -> Result<bool, String> {
    let clients = r.transfers.clients(addr).await?;
    let first = clients[0]
        .clone()
        .read_object_chunk(ReadObjectChunkRequest { object_id: id.to_vec(), offset: 0, length: CHUNK_BYTES })
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner();
    if !first.found {
        return Ok(false);
    }
    let size = first.total_size;
    let created = spill::create_with_room(r, size, |s| s.create_secondary(id, size, owner)).await;
    let offset = match created {
        Ok(o) => o,
        // Someone else brought it here meanwhile (a restore, or a task's return).
        Err(ray_object_store::StoreError::Exists(_)) => return Ok(true),
        Err(e) => return Err(e.to_string()),
    };
    let written = copy_chunks(r, &clients, id, offset, size, first.data).await;
    let mut s = r.state.lock();
    match written {
        Ok(()) => {
            s.seal_object(id).map_err(|e| e.to_string())?;
            Ok(true)
        }
        Err(e) => {
            s.abort_object(id);
            Err(e)
        }
    }
}

async fn copy_chunks(
    r: &Arc<Raylet>,
    clients: &[NodeManagerServiceClient<Channel>],
    id: &[u8],
    offset: u64,
    size: u64,
    first: bytes::Bytes,
) -> Result<(), String> {
    let put = |at: u64, data: &[u8], want: u64| -> Result<(), String> {
        if data.len() as u64 != want {
            return Err(format!("a chunk at {at} came back with {} bytes, expected {want}", data.len()));
        }
        r.mapping.write(offset + at, data).ok_or_else(|| "a chunk fell outside the store".to_string())
    };
    put(0, &first, CHUNK_BYTES.min(size))?;
    let starts: Vec<u64> = (1..size.div_ceil(CHUNK_BYTES)).map(|i| i * CHUNK_BYTES).collect();
    let mut chunks = futures::stream::iter(starts.into_iter().enumerate().map(|(i, at)| {
        let mut c = clients[i % clients.len()].clone();
        let len = CHUNK_BYTES.min(size - at);
        async move {
            let reply = c.read_object_chunk(ReadObjectChunkRequest { object_id: id.to_vec(), offset: at, length: len }).await;
            (at, len, reply)
        }
    }))
    .buffer_unordered(CHUNKS_IN_FLIGHT);
    while let Some((at, len, reply)) = chunks.next().await {
        let reply = reply.map_err(|s| s.message().to_string())?.into_inner();
        if !reply.found {
            return Err("the object was freed on the node it was read from".into());
        }
        put(at, &reply.data, len)?;
    }
    Ok(())
}
