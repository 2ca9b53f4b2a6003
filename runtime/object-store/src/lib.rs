//! A node's shared-memory object store.
//!
//! The raylet owns one file in `/dev/shm` sized to the node's
//! `object_store_memory` and hands out regions of it; drivers and workers map the
//! same file (memmap2) and write or read objects in place, so a large numpy array
//! moves between processes of a node without a copy. The store keeps the object
//! table (created / sealed, who pins what) and frees a region once its owner
//! deleted the object and no reader pins it any more.

pub mod alloc;
pub mod mapping;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use alloc::Allocator;

/// Alignment of every object (and of every buffer inside one).
pub const ALIGNMENT: u64 = 64;

/// Object ids as bytes.
pub type ObjectId = Vec<u8>;

/// Why an operation on the store failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    /// Not enough free space.
    #[error(
        "the object store is full: an object of {requested} bytes does not fit ({free} bytes free of {capacity}; \
         raise object_store_memory, or drop references to objects you no longer need)"
    )]
    Full {
        /// Size asked for.
        requested: u64,
        /// Free bytes.
        free: u64,
        /// Capacity.
        capacity: u64,
    },
    /// The id is taken.
    #[error("object {0} already exists")]
    Exists(String),
    /// No such object.
    #[error("object {0} is not in the store")]
    Missing(String),
}

#[derive(Debug, Clone)]
struct Entry {
    offset: u64,
    size: u64,
    /// Bytes reserved (size rounded up).
    reserved: u64,
    sealed: bool,
    /// Reader pins per client.
    pins: HashMap<String, u32>,
    /// The owner asked to delete it; freed when the last pin goes.
    deleted: bool,
    creator: String,
    /// The owner's address: its objects go when it does.
    owner: String,
}

/// Where a sealed object lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Offset in the file.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
}

/// The store of one node.
pub struct ObjectStore {
    path: PathBuf,
    capacity: u64,
    alloc: Allocator,
    objects: HashMap<ObjectId, Entry>,
    _file: std::fs::File,
}

fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where store files live: `/dev/shm` when it is usable, else the system temp dir.
pub fn default_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() && std::fs::metadata(shm).map(|m| !m.permissions().readonly()).unwrap_or(false) {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// Removes store files left by raylets that died without cleaning up.
pub fn remove_stale_files(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("ray-rs-store.") else { continue };
        let pid = rest.split('.').next().and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && std::fs::metadata(format!("/proc/{pid}")).is_err()
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

impl ObjectStore {
    /// Creates the backing file `<dir>/ray-rs-store.<pid>.<tag>` of `capacity` bytes
    /// (sparse: memory is used only as objects are written).
    pub fn create(dir: &Path, tag: &str, capacity: u64) -> std::io::Result<Self> {
        remove_stale_files(dir);
        let path = dir.join(format!("ray-rs-store.{}.{tag}", std::process::id()));
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path)?;
        file.set_len(capacity.max(ALIGNMENT))?;
        Ok(Self { path, capacity, alloc: Allocator::new(capacity), objects: HashMap::new(), _file: file })
    }

    /// The backing file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes in use.
    pub fn used(&self) -> u64 {
        self.capacity - self.alloc.free()
    }

    /// Number of objects held.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Reserves room for an object; the creator writes it, then seals it.
    pub fn create_object(&mut self, id: &[u8], size: u64, creator: &str) -> Result<u64, StoreError> {
        self.create_owned(id, size, creator, "")
    }

    /// Like [`Self::create_object`], recording the owner's address.
    pub fn create_owned(&mut self, id: &[u8], size: u64, creator: &str, owner: &str) -> Result<u64, StoreError> {
        if self.objects.contains_key(id) {
            return Err(StoreError::Exists(hex(id)));
        }
        let full = StoreError::Full { requested: size, free: self.alloc.free(), capacity: self.capacity };
        if size > self.capacity {
            return Err(full);
        }
        let reserved = size.max(1).div_ceil(ALIGNMENT) * ALIGNMENT;
        let offset = self.alloc.allocate(reserved).ok_or(StoreError::Full {
            requested: size,
            free: self.alloc.free(),
            capacity: self.capacity,
        })?;
        self.objects.insert(
            id.to_vec(),
            Entry {
                offset,
                size,
                reserved,
                sealed: false,
                pins: HashMap::new(),
                deleted: false,
                creator: creator.to_string(),
                owner: owner.to_string(),
            },
        );
        Ok(offset)
    }

    /// Makes an object readable.
    pub fn seal(&mut self, id: &[u8]) -> Result<(), StoreError> {
        let e = self.objects.get_mut(id).ok_or_else(|| StoreError::Missing(hex(id)))?;
        e.sealed = true;
        Ok(())
    }

    /// True when the object exists and is sealed.
    pub fn is_sealed(&self, id: &[u8]) -> bool {
        self.objects.get(id).is_some_and(|e| e.sealed && !e.deleted)
    }

    /// Pins a sealed object for `client` and says where it is.
    pub fn get(&mut self, id: &[u8], client: &str) -> Option<Location> {
        let e = self.objects.get_mut(id).filter(|e| e.sealed && !e.deleted)?;
        *e.pins.entry(client.to_string()).or_default() += 1;
        Some(Location { offset: e.offset, size: e.size })
    }

    /// Drops one pin of `client`.
    pub fn release(&mut self, id: &[u8], client: &str) {
        if let Some(e) = self.objects.get_mut(id) {
            if let Some(n) = e.pins.get_mut(client) {
                *n -= 1;
                if *n == 0 {
                    e.pins.remove(client);
                }
            }
            self.maybe_free(id);
        }
    }

    /// The owner no longer needs the object: freed now, or when its last reader lets go.
    pub fn delete(&mut self, id: &[u8]) {
        if let Some(e) = self.objects.get_mut(id) {
            e.deleted = true;
            self.maybe_free(id);
        }
    }

    fn maybe_free(&mut self, id: &[u8]) {
        let free = self.objects.get(id).is_some_and(|e| e.deleted && e.pins.is_empty());
        if free && let Some(e) = self.objects.remove(id) {
            self.alloc.free_block(e.offset, e.reserved);
        }
    }

    /// The owner at `owner` is gone: every object it owned is deleted (freed as
    /// soon as no reader pins it). Returns how many.
    pub fn delete_owned_by(&mut self, owner: &str) -> usize {
        if owner.is_empty() {
            return 0;
        }
        let ids: Vec<ObjectId> = self.objects.iter().filter(|(_, e)| e.owner == owner).map(|(k, _)| k.clone()).collect();
        for id in &ids {
            self.delete(id);
        }
        ids.len()
    }

    /// A client went away: its pins go, and objects it created but never sealed.
    pub fn disconnect(&mut self, client: &str) {
        let ids: Vec<ObjectId> = self.objects.keys().cloned().collect();
        for id in ids {
            let mut unsealed_orphan = false;
            if let Some(e) = self.objects.get_mut(&id) {
                e.pins.remove(client);
                unsealed_orphan = !e.sealed && e.creator == client;
            }
            if unsealed_orphan && let Some(e) = self.objects.get_mut(&id) {
                e.deleted = true;
            }
            self.maybe_free(&id);
        }
    }
}

impl Drop for ObjectStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_freed_when_deleted_and_unpinned() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ObjectStore::create(dir.path(), "t", 1024).unwrap();
        let off = s.create_object(b"a", 100, "w1").unwrap();
        assert_eq!(off % ALIGNMENT, 0);
        assert!(s.get(b"a", "w2").is_none(), "unsealed objects are not readable");
        s.seal(b"a").unwrap();
        assert_eq!(s.get(b"a", "w2"), Some(Location { offset: off, size: 100 }));
        s.delete(b"a");
        assert_eq!(s.len(), 1, "still pinned by a reader");
        assert!(s.get(b"a", "w3").is_none(), "a deleted object is not handed out again");
        s.release(b"a", "w2");
        assert_eq!((s.len(), s.used()), (0, 0));
    }

    #[test]
    fn a_full_store_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ObjectStore::create(dir.path(), "t", 1024).unwrap();
        s.create_object(b"a", 600, "w").unwrap();
        assert!(matches!(s.create_object(b"huge", u64::MAX - 3, "w"), Err(StoreError::Full { .. })), "no wrap-around");
        let e = s.create_object(b"b", 600, "w").unwrap_err();
        assert!(matches!(e, StoreError::Full { requested: 600, .. }), "{e}");
        assert!(e.to_string().contains("object_store_memory"));
        assert!(matches!(s.create_object(b"a", 1, "w"), Err(StoreError::Exists(_))));
    }

    #[test]
    fn a_dead_clients_pins_and_unsealed_objects_are_released() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ObjectStore::create(dir.path(), "t", 4096).unwrap();
        s.create_object(b"a", 100, "owner").unwrap();
        s.seal(b"a").unwrap();
        s.get(b"a", "reader").unwrap();
        s.delete(b"a");
        s.create_object(b"half", 100, "crasher").unwrap();
        s.disconnect("reader");
        s.disconnect("crasher");
        assert!(s.is_empty());
    }

    #[test]
    fn a_dead_owners_objects_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ObjectStore::create(dir.path(), "t", 4096).unwrap();
        s.create_owned(b"a", 10, "w", "owner:1").unwrap();
        s.create_owned(b"b", 10, "w", "owner:2").unwrap();
        s.seal(b"a").unwrap();
        s.seal(b"b").unwrap();
        assert_eq!(s.delete_owned_by("owner:1"), 1);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn the_file_goes_with_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = {
            let s = ObjectStore::create(dir.path(), "t", 1 << 20).unwrap();
            assert_eq!(std::fs::metadata(s.path()).unwrap().len(), 1 << 20);
            s.path().to_path_buf()
        };
        assert!(!path.exists());
    }
}
