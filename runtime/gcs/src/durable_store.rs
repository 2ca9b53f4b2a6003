//! The tables that outlive the GCS process: every read is served from memory
//! (the [`InMemoryStore`] in front), every write goes to memory and to a durable
//! [`Backend`] (the embedded redb file on the head, or Redis) before it is
//! acknowledged. Writes that arrive while one is being committed are committed
//! together in the next transaction (group commit), so a burst of writes costs a
//! few commits, not one each.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use crate::storage::{InMemoryStore, StoreClient, StoreError};

/// One write to a table: `Some` puts the value, `None` deletes the key.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreOp {
    /// The table.
    pub table: String,
    /// The key.
    pub key: Vec<u8>,
    /// The new value, or `None` to delete.
    pub value: Option<Vec<u8>>,
}

/// Every table's entries.
pub type Tables = HashMap<String, BTreeMap<Vec<u8>, Vec<u8>>>;

/// Where durable tables live.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Every table, to fill the memory in front at start.
    async fn load(&self) -> Result<Tables, StoreError>;
    /// Applies `ops` in order, all or nothing, durably.
    async fn apply(&self, ops: Vec<StoreOp>) -> Result<(), StoreError>;
    /// Where it is, for logs (never a password).
    fn describe(&self) -> String;
}

type Pending = (Vec<StoreOp>, oneshot::Sender<Result<(), StoreError>>);

/// Memory in front of a durable backend.
pub struct DurableStore {
    mem: InMemoryStore,
    /// Taken while memory is changed and the write queued, so the backend sees
    /// writes in the order memory did.
    order: tokio::sync::Mutex<()>,
    queue: mpsc::UnboundedSender<Pending>,
    describe: String,
}

/// Most writes committed in one transaction.
const MAX_GROUP: usize = 4096;

impl DurableStore {
    /// Loads every table from `backend` and starts the committing task.
    pub async fn open(backend: Arc<dyn Backend>) -> Result<Arc<Self>, StoreError> {
        let tables = backend.load().await?;
        let entries: usize = tables.values().map(|t| t.len()).sum();
        tracing::info!(backend = %backend.describe(), tables = tables.len(), entries, "GCS tables loaded");
        let mem = InMemoryStore::from_tables(tables);
        let (tx, rx) = mpsc::unbounded_channel();
        let describe = backend.describe();
        tokio::spawn(commit_loop(backend, rx));
        Ok(Arc::new(Self { mem, order: tokio::sync::Mutex::new(()), queue: tx, describe }))
    }

    /// Where the tables are kept.
    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// Applies `ops` to memory and waits until the backend has them.
    pub async fn write(&self, ops: Vec<StoreOp>) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        let rx = {
            let _order = self.order.lock().await;
            self.mem.apply(&ops);
            let (tx, rx) = oneshot::channel();
            self.queue.send((ops, tx)).map_err(|_| StoreError("the GCS storage writer stopped".into()))?;
            rx
        };
        rx.await.map_err(|_| StoreError("the GCS storage writer stopped".into()))?
    }
}

async fn commit_loop(backend: Arc<dyn Backend>, mut rx: mpsc::UnboundedReceiver<Pending>) {
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        let mut n = group[0].0.len();
        while n < MAX_GROUP {
            match rx.try_recv() {
                Ok(p) => {
                    n += p.0.len();
                    group.push(p);
                }
                Err(_) => break,
            }
        }
        let ops: Vec<StoreOp> = group.iter().flat_map(|(ops, _)| ops.iter().cloned()).collect();
        let result = backend.apply(ops).await;
        if let Err(e) = &result {
            tracing::error!(backend = %backend.describe(), error = %e, writes = n, "cannot write the GCS tables");
        }
        for (_, done) in group {
            let _ = done.send(result.as_ref().map(|_| ()).map_err(|e| StoreError(e.0.clone())));
        }
    }
}

#[async_trait]
impl StoreClient for DurableStore {
    async fn put(&self, table: &str, key: &[u8], value: Vec<u8>, overwrite: bool) -> Result<bool, StoreError> {
        let rx = {
            let _order = self.order.lock().await;
            let is_new = self.mem.get(table, key).await?.is_none();
            if !is_new && !overwrite {
                return Ok(false);
            }
            let ops = vec![StoreOp { table: table.to_string(), key: key.to_vec(), value: Some(value) }];
            self.mem.apply(&ops);
            let (tx, rx) = oneshot::channel();
            self.queue.send((ops, tx)).map_err(|_| StoreError("the GCS storage writer stopped".into()))?;
            (rx, is_new)
        };
        rx.0.await.map_err(|_| StoreError("the GCS storage writer stopped".into()))??;
        Ok(rx.1)
    }

    async fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.mem.get(table, key).await
    }

    async fn multi_get(&self, table: &str, keys: &[Vec<u8>]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        self.mem.multi_get(table, keys).await
    }

    async fn delete(&self, table: &str, key: &[u8], by_prefix: bool) -> Result<u64, StoreError> {
        let doomed: Vec<Vec<u8>> = if by_prefix {
            self.mem.keys(table, key).await?
        } else if self.mem.get(table, key).await?.is_some() {
            vec![key.to_vec()]
        } else {
            Vec::new()
        };
        let n = doomed.len() as u64;
        let ops = doomed.into_iter().map(|k| StoreOp { table: table.to_string(), key: k, value: None }).collect();
        self.write(ops).await?;
        Ok(n)
    }

    async fn keys(&self, table: &str, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        self.mem.keys(table, prefix).await
    }

    async fn get_all(&self, table: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        self.mem.get_all(table).await
    }

    async fn write_batch(&self, ops: Vec<StoreOp>) -> Result<(), StoreError> {
        self.write(ops).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A backend that records what it was asked to do.
    #[derive(Default)]
    struct Recorder {
        applied: Mutex<Vec<Vec<StoreOp>>>,
        start: Tables,
    }

    #[async_trait]
    impl Backend for Recorder {
        async fn load(&self) -> Result<Tables, StoreError> {
            Ok(self.start.clone())
        }
        async fn apply(&self, ops: Vec<StoreOp>) -> Result<(), StoreError> {
            self.applied.lock().unwrap().push(ops);
            Ok(())
        }
        fn describe(&self) -> String {
            "recorder".into()
        }
    }

    #[tokio::test]
    async fn reads_come_from_what_was_loaded_and_writes_reach_the_backend() {
        let mut start = Tables::new();
        start.entry("kv:ns".into()).or_default().insert(b"a".to_vec(), b"1".to_vec());
        let backend = Arc::new(Recorder { start, ..Default::default() });
        let s = DurableStore::open(backend.clone()).await.unwrap();
        assert_eq!(s.get("kv:ns", b"a").await.unwrap(), Some(b"1".to_vec()));
        assert!(!s.put("kv:ns", b"a", b"2".to_vec(), false).await.unwrap(), "kept without overwrite");
        assert_eq!(s.get("kv:ns", b"a").await.unwrap(), Some(b"1".to_vec()));
        assert!(s.put("kv:ns", b"b", b"3".to_vec(), false).await.unwrap());
        assert_eq!(s.delete("kv:ns", b"", true).await.unwrap(), 2);
        assert!(s.keys("kv:ns", b"").await.unwrap().is_empty());
        let all: Vec<StoreOp> = backend.applied.lock().unwrap().iter().flatten().cloned().collect();
        assert_eq!(all.len(), 3, "the refused put wrote nothing: {all:?}");
        assert_eq!(all[0].value.as_deref(), Some(&b"3"[..]));
        assert!(all[1..].iter().all(|o| o.value.is_none()));
    }
}
