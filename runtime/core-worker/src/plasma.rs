//! The client side of the node's object store: create-write-seal for puts and
//! large returns, pinned zero-copy reads, and batched releases and deletes.

use std::sync::Arc;
use std::time::Duration;

use ray_common::ObjectId;
use ray_common::rpc::Channel;
use ray_object_store::mapping::StoreMapping;
use ray_proto::rpc::node_manager_service_client::NodeManagerServiceClient;
use ray_proto::rpc::{CreateObjectRequest, DeleteObjectsRequest, GetObjectsRequest, ReleaseObjectsRequest, SealObjectRequest};
use tokio::sync::mpsc;

use crate::layout::Layout;

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PlasmaError {
    /// Not enough room.
    #[error("{0}")]
    Full(String),
    /// The raylet could not be reached or refused.
    #[error("object store: {0}")]
    Other(String),
}

enum Msg {
    Release(ObjectId),
    Delete(ObjectId),
    /// Answered once everything sent before it reached the raylet.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Sends releases and deletes in the background, counting what is on its way so a
/// create can first make sure the space they free is free.
#[derive(Clone)]
struct Outbox {
    tx: mpsc::UnboundedSender<Msg>,
    pending: Arc<std::sync::atomic::AtomicUsize>,
}

impl Outbox {
    fn send(&self, m: Msg) {
        self.pending.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.tx.send(m).is_err() {
            self.pending.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    async fn flush(&self) {
        if self.pending.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            return;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// A connection to the local raylet's store.
pub struct PlasmaClient {
    raylet: NodeManagerServiceClient<Channel>,
    mapping: Arc<StoreMapping>,
    client_id: String,
    outbox: Outbox,
}

/// A sealed object pinned in the store for this process; unpinned on drop.
pub struct Pin {
    id: ObjectId,
    /// Offset in the store file.
    pub offset: u64,
    /// Size.
    pub size: u64,
    /// The mapping.
    pub mapping: Arc<StoreMapping>,
    outbox: Outbox,
}

impl Pin {
    /// The object's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.mapping.slice(self.offset, self.size).unwrap_or_default()
    }

    /// Address of the object's first byte in this process.
    pub fn address(&self) -> usize {
        self.mapping.base() + self.offset as usize
    }

    /// The object's layout.
    pub fn layout(&self) -> Option<Layout> {
        Layout::parse(self.bytes(), self.size)
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        self.outbox.send(Msg::Release(self.id));
    }
}

impl PlasmaClient {
    /// Maps the store file and starts the release/delete batcher.
    pub fn new(raylet: NodeManagerServiceClient<Channel>, path: &std::path::Path, client_id: String) -> std::io::Result<Self> {
        let mapping = Arc::new(StoreMapping::open(path)?);
        let (tx, rx) = mpsc::unbounded_channel();
        let outbox = Outbox { tx, pending: Arc::new(std::sync::atomic::AtomicUsize::new(0)) };
        tokio::spawn(batcher(raylet.clone(), client_id.clone(), rx, outbox.pending.clone()));
        Ok(Self { raylet, mapping, client_id, outbox })
    }

    /// The mapping (base address and length, for zero-copy checks).
    pub fn mapping(&self) -> &Arc<StoreMapping> {
        &self.mapping
    }

    /// Reserves room for an object of `layout`; returns its offset.
    pub async fn create(&self, id: ObjectId, total: u64, owner: &str) -> Result<u64, PlasmaError> {
        // Objects freed just before (a loop of put, get, del) give their space back
        // first, so it is reused instead of touching fresh pages.
        self.outbox.flush().await;
        let req = CreateObjectRequest {
            object_id: id.to_vec(),
            data_size: total,
            owner_address: owner.to_string(),
            client_id: self.client_id.clone(),
        };
        let r = self.raylet.clone().create_object(req).await.map_err(|s| PlasmaError::Other(s.message().to_string()))?.into_inner();
        if r.store_full {
            return Err(PlasmaError::Full(r.error));
        }
        if !r.error.is_empty() {
            return Err(PlasmaError::Other(r.error));
        }
        Ok(r.offset)
    }

    /// Copies the parts of an object to `offset` (synchronous memcpy).
    pub fn write(&self, offset: u64, layout: &Layout, data: &[u8], buffers: &[&[u8]]) -> Result<(), PlasmaError> {
        let oob = || PlasmaError::Other("write outside the store".into());
        self.mapping.write(offset, &layout.header()).ok_or_else(oob)?;
        self.mapping.write(offset + layout.data.0, data).ok_or_else(oob)?;
        for ((o, _), b) in layout.buffers.iter().zip(buffers) {
            self.mapping.write(offset + o, b).ok_or_else(oob)?;
        }
        Ok(())
    }

    /// Makes a written object readable.
    pub async fn seal(&self, id: ObjectId) -> Result<(), PlasmaError> {
        self.raylet
            .clone()
            .seal_object(SealObjectRequest { object_id: id.to_vec() })
            .await
            .map_err(|s| PlasmaError::Other(s.message().to_string()))?;
        Ok(())
    }

    /// Pins and returns objects that are (or become, within `timeout`) sealed.
    pub async fn get(&self, ids: &[ObjectId], timeout: Duration) -> Result<Vec<Option<Pin>>, PlasmaError> {
        let req = GetObjectsRequest {
            object_ids: ids.iter().map(ObjectId::to_vec).collect(),
            timeout_ms: timeout.as_millis() as u64,
            client_id: self.client_id.clone(),
        };
        let r = self.raylet.clone().get_objects(req).await.map_err(|s| PlasmaError::Other(s.message().to_string()))?.into_inner();
        // The reply lists the objects in the order asked.
        Ok(ids
            .iter()
            .zip(r.objects)
            .map(|(id, o)| {
                o.found.then(|| Pin {
                    id: *id,
                    offset: o.offset,
                    size: o.size,
                    mapping: self.mapping.clone(),
                    outbox: self.outbox.clone(),
                })
            })
            .collect())
    }

    /// Deletes an object (its owner no longer needs it).
    pub fn delete(&self, id: ObjectId) {
        self.outbox.send(Msg::Delete(id));
    }
}

/// Sends releases and deletes in batches, in order, and answers flushes.
async fn batcher(
    raylet: NodeManagerServiceClient<Channel>,
    client_id: String,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    pending: Arc<std::sync::atomic::AtomicUsize>,
) {
    while let Some(first) = rx.recv().await {
        let mut release = Vec::new();
        let mut delete = Vec::new();
        let mut flushes = Vec::new();
        let mut n = 0usize;
        let mut push = |m: Msg| match m {
            Msg::Release(id) => {
                n += 1;
                release.push(id)
            }
            Msg::Delete(id) => {
                n += 1;
                delete.push(id)
            }
            Msg::Flush(tx) => flushes.push(tx),
        };
        push(first);
        while let Ok(m) = rx.try_recv() {
            push(m);
        }
        if !release.is_empty() {
            let object_ids = release.iter().map(ObjectId::to_vec).collect();
            let _ = raylet.clone().release_objects(ReleaseObjectsRequest { object_ids, client_id: client_id.clone() }).await;
        }
        if !delete.is_empty() {
            let object_ids = delete.iter().map(ObjectId::to_vec).collect();
            let _ = raylet.clone().delete_objects(DeleteObjectsRequest { object_ids }).await;
        }
        pending.fetch_sub(n, std::sync::atomic::Ordering::SeqCst);
        for f in flushes {
            let _ = f.send(());
        }
    }
}
