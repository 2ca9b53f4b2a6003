//! The instance manager: the versioned instance table over an
//! [`InstanceStorage`], and the one place where it changes.
//!
//! Every change is made on a copy, written to storage (a put, or a delete when the
//! new status is final), and only then committed to the table. A write that fails
//! leaves the table as it was and returns an error, so a caller never acts on a
//! change that a restarted autoscaler would not find.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::store::{InstanceStorage, StoreError};
use super::{Instance, InstanceStatus, TransitionError};
use crate::clock::Clock;

/// Why a change to the table did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// The state machine does not allow the change.
    #[error(transparent)]
    Refused(#[from] TransitionError),
    /// Storage did not take the write; the table is unchanged.
    #[error("cannot persist instance {id} as {status}: {source}")]
    Storage {
        /// Instance id.
        id: String,
        /// The status that was being recorded.
        status: InstanceStatus,
        /// What storage said.
        source: StoreError,
    },
    /// No instance has this id.
    #[error("unknown instance {0}")]
    Unknown(String),
    /// An instance with this id is already in the table.
    #[error("instance {0} is already in the table")]
    Exists(String),
}

/// The instance table and its storage.
pub struct InstanceManager {
    storage: Arc<dyn InstanceStorage>,
    instances: BTreeMap<String, Instance>,
    clock: Clock,
}

impl InstanceManager {
    /// An empty table over `storage`; call [`InstanceManager::load`] to read it.
    pub fn new(storage: Arc<dyn InstanceStorage>, clock: Clock) -> Self {
        Self { storage, instances: BTreeMap::new(), clock }
    }

    /// Replaces the table with every record in storage; returns how many. A record
    /// in a final status (never written by this manager) is dropped and deleted.
    pub async fn load(&mut self) -> Result<usize, StoreError> {
        let (done, live): (Vec<Instance>, Vec<Instance>) = self.storage.load_all().await?.into_iter().partition(|i| i.status().is_final());
        for i in done {
            if let Err(e) = self.storage.delete(&i.id).await {
                tracing::warn!(instance = %i.id, status = %i.status(), error = %e, "cannot delete a finished instance record");
            }
        }
        self.instances = live.into_iter().map(|i| (i.id.clone(), i)).collect();
        Ok(self.instances.len())
    }

    /// Uses another clock for history timestamps.
    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }

    /// The table.
    pub fn instances(&self) -> &BTreeMap<String, Instance> {
        &self.instances
    }

    /// One instance.
    pub fn get(&self, id: &str) -> Option<&Instance> {
        self.instances.get(id)
    }

    /// Adds an instance that is not in the table yet: a new QUEUED one, or one
    /// adopted from the provider's listing (built with [`Instance::transition`]).
    /// It is persisted first and added only if that worked.
    pub async fn create(&mut self, instance: Instance) -> Result<(), ManagerError> {
        if self.instances.contains_key(&instance.id) {
            return Err(ManagerError::Exists(instance.id));
        }
        let status = instance.status();
        if let Err(source) = self.write(&instance).await {
            tracing::warn!(instance = %instance.id, node_type = %instance.node_type, %status, error = %source, "cannot record the new instance; it is not added");
            return Err(ManagerError::Storage { id: instance.id, status, source });
        }
        if !status.is_final() {
            self.instances.insert(instance.id.clone(), instance);
        }
        Ok(())
    }

    /// The one way to change an instance: moves it to `to` (the state machine must
    /// allow it), applies `edit` to the same copy (ids, reasons), persists it, and
    /// only then commits it; an instance reaching a final status leaves the table.
    /// Logs the change, or why it did not happen.
    pub async fn transition(
        &mut self,
        id: &str,
        to: InstanceStatus,
        details: impl Into<String>,
        edit: impl FnOnce(&mut Instance),
    ) -> Result<(), ManagerError> {
        let details = details.into();
        let Some(current) = self.instances.get(id) else {
            tracing::warn!(instance = %id, %to, "{details}: no such instance");
            return Err(ManagerError::Unknown(id.to_string()));
        };
        let from = current.status();
        let mut next = current.clone();
        if let Err(e) = next.transition(to, self.clock.now_ms(), details.clone()) {
            tracing::warn!("{e}");
            return Err(e.into());
        }
        edit(&mut next);
        if let Err(source) = self.write(&next).await {
            tracing::warn!(instance = %id, node_type = %next.node_type, %from, %to, error = %source, "cannot persist the change, so it is not made: {details}");
            return Err(ManagerError::Storage { id: id.to_string(), status: to, source });
        }
        tracing::info!(instance = %id, node_type = %next.node_type, %from, %to, "{details}");
        if to.is_final() {
            self.instances.remove(id);
        } else {
            self.instances.insert(id.to_string(), next);
        }
        Ok(())
    }

    /// Changes an instance's fields (not its status): applied to a copy,
    /// persisted, then committed, as [`InstanceManager::transition`] does.
    pub async fn update(&mut self, id: &str, details: &str, edit: impl FnOnce(&mut Instance)) -> Result<(), ManagerError> {
        let Some(current) = self.instances.get(id) else { return Err(ManagerError::Unknown(id.to_string())) };
        let mut next = current.clone();
        edit(&mut next);
        next.version += 1;
        if let Err(source) = self.write(&next).await {
            tracing::warn!(instance = %id, error = %source, "cannot persist the change, so it is not made: {details}");
            return Err(ManagerError::Storage { id: id.to_string(), status: next.status(), source });
        }
        tracing::info!(instance = %id, node_type = %next.node_type, "{details}");
        self.instances.insert(id.to_string(), next);
        Ok(())
    }

    async fn write(&self, i: &Instance) -> Result<(), StoreError> {
        if i.status().is_final() { self.storage.delete(&i.id).await } else { self.storage.put(i).await }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::store::MemoryInstanceStorage;
    use async_trait::async_trait;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Memory storage whose writes fail while `broken` is set.
    #[derive(Default)]
    struct Flaky {
        inner: MemoryInstanceStorage,
        broken: AtomicBool,
    }

    #[async_trait]
    impl InstanceStorage for Flaky {
        async fn load_all(&self) -> Result<Vec<Instance>, StoreError> {
            self.inner.load_all().await
        }
        async fn put(&self, i: &Instance) -> Result<(), StoreError> {
            if self.broken.load(Ordering::SeqCst) {
                return Err(StoreError::Gcs("unavailable".into()));
            }
            self.inner.put(i).await
        }
        async fn delete(&self, id: &str) -> Result<(), StoreError> {
            if self.broken.load(Ordering::SeqCst) {
                return Err(StoreError::Gcs("unavailable".into()));
            }
            self.inner.delete(id).await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_write_changes_nothing_and_a_good_one_commits() {
        let storage = Arc::new(Flaky::default());
        let mut m = InstanceManager::new(storage.clone(), Clock::starting_at(1_000));
        m.create(Instance::new("a".into(), "t".into(), 1_000, "queued")).await.unwrap();
        storage.broken.store(true, Ordering::SeqCst);
        let r = m.transition("a", InstanceStatus::Requested, "requested", |i| i.launch_request_id = Some("r".into())).await;
        assert!(matches!(r, Err(ManagerError::Storage { status: InstanceStatus::Requested, .. })), "{r:?}");
        let a = m.get("a").unwrap();
        assert_eq!((a.status(), a.version, a.launch_request_id.as_deref()), (InstanceStatus::Queued, 1, None));
        assert!(matches!(m.create(Instance::new("b".into(), "t".into(), 0, "q")).await, Err(ManagerError::Storage { .. })));
        assert!(m.get("b").is_none());

        storage.broken.store(false, Ordering::SeqCst);
        tokio::time::advance(std::time::Duration::from_secs(5)).await;
        m.transition("a", InstanceStatus::Requested, "requested", |i| i.launch_request_id = Some("r".into())).await.unwrap();
        let a = m.get("a").unwrap();
        assert_eq!((a.status(), a.status_since_ms(), a.launch_request_id.as_deref()), (InstanceStatus::Requested, 6_000, Some("r")));
        assert_eq!(storage.load_all().await.unwrap()[0].status(), InstanceStatus::Requested);
        assert!(matches!(m.transition("a", InstanceStatus::Running, "x", |_| {}).await, Err(ManagerError::Refused(_))));
        assert!(matches!(m.transition("zz", InstanceStatus::Running, "x", |_| {}).await, Err(ManagerError::Unknown(_))));

        // A final status deletes the record, and only then leaves the table.
        storage.broken.store(true, Ordering::SeqCst);
        assert!(m.transition("a", InstanceStatus::AllocationFailed, "failed", |_| {}).await.is_err());
        assert!(m.get("a").is_some());
        storage.broken.store(false, Ordering::SeqCst);
        m.transition("a", InstanceStatus::AllocationFailed, "failed", |_| {}).await.unwrap();
        assert!(m.get("a").is_none() && storage.load_all().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn load_reads_every_record() {
        let storage = Arc::new(MemoryInstanceStorage::default());
        for id in ["x", "y"] {
            storage.put(&Instance::new(id.into(), "t".into(), 0, "q")).await.unwrap();
        }
        let mut done = Instance::new("z".into(), "t".into(), 0, "q");
        done.transition(InstanceStatus::Terminated, 1, "gone").unwrap();
        storage.put(&done).await.unwrap();
        let mut m = InstanceManager::new(storage.clone(), Clock::starting_at(0));
        assert_eq!(m.load().await.unwrap(), 2);
        assert_eq!(m.instances().keys().collect::<Vec<_>>(), ["x", "y"]);
        assert_eq!(storage.load_all().await.unwrap().len(), 2, "the finished record is deleted");
    }
}
