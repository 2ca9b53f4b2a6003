//! Persistence of instance records: one KV entry per instance in the GCS, written
//! with the record's version so a stale copy can never overwrite a newer one.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use ray_common::gcs_client::GcsClient;

use super::Instance;

/// KV namespace of the autoscaler's records.
pub const NAMESPACE: &str = "__autoscaler";
const PREFIX: &str = "instance/";

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The GCS call failed.
    #[error("GCS: {0}")]
    Gcs(String),
    /// A write carried an older version than the stored record.
    #[error("stale write of instance {id}: stored version {stored}, written {written}")]
    Stale {
        /// Instance id.
        id: String,
        /// Version in storage.
        stored: u64,
        /// Version of the write.
        written: u64,
    },
}

/// Where instance records live.
#[async_trait]
pub trait InstanceStorage: Send + Sync {
    /// Every record.
    async fn load_all(&self) -> Result<Vec<Instance>, StoreError>;
    /// Writes a record unless storage holds a newer version.
    async fn put(&self, i: &Instance) -> Result<(), StoreError>;
    /// Forgets a record.
    async fn delete(&self, id: &str) -> Result<(), StoreError>;
}

/// Records in the GCS KV.
pub struct GcsInstanceStorage {
    gcs: GcsClient,
    /// Versions this writer last saw, to refuse stale writes without a read.
    seen: Mutex<BTreeMap<String, u64>>,
}

impl GcsInstanceStorage {
    /// Over a GCS client.
    pub fn new(gcs: GcsClient) -> Self {
        Self { gcs, seen: Mutex::new(BTreeMap::new()) }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl InstanceStorage for GcsInstanceStorage {
    /// One `Keys` call and one `MultiGet` call, whatever the table's size. A record
    /// deleted between the two calls is simply absent from the answer.
    async fn load_all(&self) -> Result<Vec<Instance>, StoreError> {
        let keys = self.gcs.kv_keys(NAMESPACE, PREFIX.as_bytes()).await.map_err(|s| StoreError::Gcs(s.message().into()))?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let entries = self.gcs.kv_multi_get(NAMESPACE, &keys).await.map_err(|s| StoreError::Gcs(s.message().into()))?;
        let mut out = Vec::new();
        for (k, v) in entries {
            match serde_json::from_slice::<Instance>(&v) {
                Ok(i) => {
                    self.seen().insert(i.id.clone(), i.version);
                    out.push(i);
                }
                Err(e) => tracing::warn!(key = %String::from_utf8_lossy(&k), error = %e, "skipping an unreadable instance record"),
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn put(&self, i: &Instance) -> Result<(), StoreError> {
        if let Some(&stored) = self.seen().get(&i.id)
            && stored > i.version
        {
            return Err(StoreError::Stale { id: i.id.clone(), stored, written: i.version });
        }
        let body = serde_json::to_vec(i).map_err(|e| StoreError::Gcs(e.to_string()))?;
        self.gcs
            .kv_put(NAMESPACE, format!("{PREFIX}{}", i.id).as_bytes(), body)
            .await
            .map_err(|s| StoreError::Gcs(s.message().into()))?;
        self.seen().insert(i.id.clone(), i.version);
        Ok(())
    }

    async fn delete(&self, id: &str) -> Result<(), StoreError> {
        self.gcs.kv_del(NAMESPACE, format!("{PREFIX}{id}").as_bytes()).await.map_err(|s| StoreError::Gcs(s.message().into()))?;
        self.seen().remove(id);
        Ok(())
    }
}

/// Records in memory (tests and tools).
#[derive(Default)]
pub struct MemoryInstanceStorage {
    records: Mutex<BTreeMap<String, Instance>>,
}

#[async_trait]
impl InstanceStorage for MemoryInstanceStorage {
    async fn load_all(&self) -> Result<Vec<Instance>, StoreError> {
        Ok(self.records.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect())
    }

    async fn put(&self, i: &Instance) -> Result<(), StoreError> {
        let mut r = self.records.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cur) = r.get(&i.id)
            && cur.version > i.version
        {
            return Err(StoreError::Stale { id: i.id.clone(), stored: cur.version, written: i.version });
        }
        r.insert(i.id.clone(), i.clone());
        Ok(())
    }

    async fn delete(&self, id: &str) -> Result<(), StoreError> {
        self.records.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::InstanceStatus;

    #[tokio::test]
    async fn stale_writes_are_refused() {
        let s = MemoryInstanceStorage::default();
        let mut i = Instance::new("a".into(), "t".into(), 0, "q");
        let old = i.clone();
        i.transition(InstanceStatus::Requested, 1, "r").unwrap();
        s.put(&i).await.unwrap();
        assert!(matches!(s.put(&old).await, Err(StoreError::Stale { stored: 2, written: 1, .. })));
        assert_eq!(s.load_all().await.unwrap()[0].status(), InstanceStatus::Requested);
    }
}
