//! The storage seam behind the GCS tables: [`InMemoryStore`] (nothing survives
//! the process), and [`crate::durable_store::DurableStore`], memory in front of
//! the embedded redb file on the head or Redis, so a restarted GCS loses nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;

pub use crate::durable_store::StoreOp;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
#[error("storage error: {0}")]
pub struct StoreError(pub String);

/// Tables of byte keys and values.
#[async_trait]
pub trait StoreClient: Send + Sync + 'static {
    /// Writes `value` under `key`. Without `overwrite`, an existing value is kept.
    /// Returns true when the key is new.
    async fn put(&self, table: &str, key: &[u8], value: Vec<u8>, overwrite: bool) -> Result<bool, StoreError>;
    /// Reads one key.
    async fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Reads several keys; missing ones are left out.
    async fn multi_get(&self, table: &str, keys: &[Vec<u8>]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError>;
    /// Deletes one key, or every key starting with `key` when `by_prefix`.
    async fn delete(&self, table: &str, key: &[u8], by_prefix: bool) -> Result<u64, StoreError>;
    /// Keys starting with `prefix`, in order.
    async fn keys(&self, table: &str, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError>;
    /// Every entry of a table.
    async fn get_all(&self, table: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError>;
    /// Applies several writes, in order (all or nothing where the store can).
    async fn write_batch(&self, ops: Vec<StoreOp>) -> Result<(), StoreError> {
        for op in ops {
            match op.value {
                Some(v) => {
                    self.put(&op.table, &op.key, v, true).await?;
                }
                None => {
                    self.delete(&op.table, &op.key, false).await?;
                }
            }
        }
        Ok(())
    }
}

/// One table: keys to values, in key order.
type Table = BTreeMap<Vec<u8>, Vec<u8>>;

/// Everything in one process's memory.
#[derive(Default)]
pub struct InMemoryStore {
    tables: Mutex<HashMap<String, Table>>,
}

impl InMemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store holding `tables`.
    pub fn from_tables(tables: crate::durable_store::Tables) -> Self {
        Self { tables: Mutex::new(tables) }
    }

    /// Applies writes at once (the memory in front of a durable store).
    pub fn apply(&self, ops: &[StoreOp]) {
        self.with(|t| {
            for op in ops {
                let table = t.entry(op.table.clone()).or_default();
                match &op.value {
                    Some(v) => {
                        table.insert(op.key.clone(), v.clone());
                    }
                    None => {
                        table.remove(&op.key);
                    }
                }
            }
        })
    }

    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, BTreeMap<Vec<u8>, Vec<u8>>>) -> R) -> R {
        let mut g = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }
}

fn prefix_range<'a>(
    t: &'a BTreeMap<Vec<u8>, Vec<u8>>,
    prefix: &'a [u8],
) -> impl Iterator<Item = (&'a Vec<u8>, &'a Vec<u8>)> + 'a {
    t.range(prefix.to_vec()..).take_while(move |(k, _)| k.starts_with(prefix))
}

#[async_trait]
impl StoreClient for InMemoryStore {
    async fn put(&self, table: &str, key: &[u8], value: Vec<u8>, overwrite: bool) -> Result<bool, StoreError> {
        Ok(self.with(|t| {
            let t = t.entry(table.to_string()).or_default();
            match t.get_mut(key) {
                Some(v) => {
                    if overwrite {
                        *v = value;
                    }
                    false
                }
                None => {
                    t.insert(key.to_vec(), value);
                    true
                }
            }
        }))
    }

    async fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.with(|t| t.get(table).and_then(|t| t.get(key).cloned())))
    }

    async fn multi_get(&self, table: &str, keys: &[Vec<u8>]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        Ok(self.with(|t| match t.get(table) {
            None => Vec::new(),
            Some(t) => keys.iter().filter_map(|k| t.get(k).map(|v| (k.clone(), v.clone()))).collect(),
        }))
    }

    async fn delete(&self, table: &str, key: &[u8], by_prefix: bool) -> Result<u64, StoreError> {
        Ok(self.with(|t| {
            let Some(t) = t.get_mut(table) else { return 0 };
            if by_prefix {
                let doomed: Vec<Vec<u8>> = prefix_range(t, key).map(|(k, _)| k.clone()).collect();
                for k in &doomed {
                    t.remove(k);
                }
                doomed.len() as u64
            } else {
                u64::from(t.remove(key).is_some())
            }
        }))
    }

    async fn keys(&self, table: &str, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(self.with(|t| match t.get(table) {
            None => Vec::new(),
            Some(t) => prefix_range(t, prefix).map(|(k, _)| k.clone()).collect(),
        }))
    }

    async fn get_all(&self, table: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        Ok(self.with(|t| match t.get(table) {
            None => Vec::new(),
            Some(t) => t.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_respects_overwrite_and_prefix_ops_work() {
        let s = InMemoryStore::new();
        assert!(s.put("t", b"a/1", b"x".to_vec(), false).await.unwrap());
        assert!(!s.put("t", b"a/1", b"y".to_vec(), false).await.unwrap());
        assert_eq!(s.get("t", b"a/1").await.unwrap(), Some(b"x".to_vec()));
        assert!(!s.put("t", b"a/1", b"y".to_vec(), true).await.unwrap());
        assert_eq!(s.get("t", b"a/1").await.unwrap(), Some(b"y".to_vec()));
        s.put("t", b"a/2", b"z".to_vec(), true).await.unwrap();
        s.put("t", b"b/1", b"w".to_vec(), true).await.unwrap();
        assert_eq!(s.keys("t", b"a/").await.unwrap(), vec![b"a/1".to_vec(), b"a/2".to_vec()]);
        assert_eq!(s.delete("t", b"a/", true).await.unwrap(), 2);
        assert_eq!(s.keys("t", b"").await.unwrap(), vec![b"b/1".to_vec()]);
        assert_eq!(s.delete("other", b"x", false).await.unwrap(), 0);
    }
}
