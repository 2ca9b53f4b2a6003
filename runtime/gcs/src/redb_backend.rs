//! The embedded store on the head: one redb file (in the session folder by
//! default). redb is a pure-Rust, crash-safe B-tree store; every commit here is
//! durable (fsync) before the GCS acknowledges the write, and the file is locked,
//! so two GCS processes can never write it at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};

use crate::durable_store::{Backend, StoreOp, Tables};
use crate::storage::StoreError;

/// The redb file.
pub struct RedbBackend {
    db: Arc<Database>,
    path: PathBuf,
}

fn err(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError(format!("{}: {e}", path.display()))
}

impl RedbBackend {
    /// Opens (or creates) the file. Fails when another process holds it.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(path, e))?;
        }
        let db = Database::create(path).map_err(|e| err(path, e))?;
        Ok(Self { db: Arc::new(db), path: path.to_path_buf() })
    }
}

fn def(name: &str) -> TableDefinition<'_, &'static [u8], &'static [u8]> {
    TableDefinition::new(name)
}

fn load(db: &Database) -> Result<Tables, redb::Error> {
    let tx = db.begin_read()?;
    let mut out = Tables::new();
    for handle in tx.list_tables()? {
        let name = handle.name().to_string();
        let table = tx.open_table(def(&name))?;
        let entries = out.entry(name.clone()).or_default();
        for row in table.iter()? {
            let (k, v) = row?;
            entries.insert(k.value().to_vec(), v.value().to_vec());
        }
    }
    Ok(out)
}

fn apply(db: &Database, ops: &[StoreOp]) -> Result<(), redb::Error> {
    let mut tx = db.begin_write()?;
    tx.set_durability(Durability::Immediate)?;
    {
        let mut tables: std::collections::HashMap<&str, redb::Table<'_, &'static [u8], &'static [u8]>> = Default::default();
        for op in ops {
            if !tables.contains_key(op.table.as_str()) {
                let t = tx.open_table(def(&op.table))?;
                tables.insert(op.table.as_str(), t);
            }
            let Some(t) = tables.get_mut(op.table.as_str()) else { continue };
            match &op.value {
                Some(v) => {
                    t.insert(op.key.as_slice(), v.as_slice())?;
                }
                None => {
                    t.remove(op.key.as_slice())?;
                }
            }
        }
    }
    tx.commit()?;
    Ok(())
}

#[async_trait]
impl Backend for RedbBackend {
    async fn load(&self) -> Result<Tables, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || load(&db))
            .await
            .map_err(|e| err(&self.path, e))?
            .map_err(|e| err(&self.path, e))
    }

    async fn apply(&self, ops: Vec<StoreOp>) -> Result<(), StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || apply(&db, &ops))
            .await
            .map_err(|e| err(&self.path, e))?
            .map_err(|e| err(&self.path, e))
    }

    fn describe(&self) -> String {
        format!("redb file {}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(table: &str, k: &str, v: &str) -> StoreOp {
        StoreOp { table: table.into(), key: k.as_bytes().to_vec(), value: Some(v.as_bytes().to_vec()) }
    }

    #[tokio::test]
    async fn what_was_committed_is_read_back_after_reopening() {
        let dir = std::env::temp_dir().join(format!("ray-redb-test-{}", ray_common::ids::random_hex(6)));
        let path = dir.join("gcs.redb");
        {
            let b = RedbBackend::open(&path).unwrap();
            b.apply(vec![put("kv:a", "x", "1"), put("kv:b", "y", "2"), put("kv:a", "z", "3")]).await.unwrap();
            b.apply(vec![StoreOp { table: "kv:a".into(), key: b"x".to_vec(), value: None }]).await.unwrap();
            assert!(RedbBackend::open(&path).is_err(), "a second opener is refused while the first holds the file");
        }
        let b = RedbBackend::open(&path).unwrap();
        let t = b.load().await.unwrap();
        assert_eq!(t["kv:a"].len(), 1);
        assert_eq!(t["kv:a"][&b"z".to_vec()], b"3".to_vec());
        assert_eq!(t["kv:b"][&b"y".to_vec()], b"2".to_vec());
        let _ = std::fs::remove_dir_all(dir);
    }
}
