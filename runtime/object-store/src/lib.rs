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

/// Where an object's bytes are.
#[derive(Debug, Clone)]
enum Place {
    /// In the store file.
    Memory {
        offset: u64,
        /// Bytes reserved (size rounded up).
        reserved: u64,
    },
    /// Written out to a file to make room.
    Spilled { path: PathBuf },
}

#[derive(Debug, Clone)]
struct Entry {
    place: Place,
    size: u64,
    sealed: bool,
    /// Reader pins per client.
    pins: HashMap<String, u32>,
    /// The owner asked to delete it; freed when the last pin goes.
    deleted: bool,
    creator: String,
    /// The owner's address: its objects go when it does.
    owner: String,
    /// Made here by `put` or a task return (false: a copy pulled from another node,
    /// which may be evicted at any time while unpinned).
    primary: bool,
    /// Being spilled or restored: its region is not freed meanwhile.
    busy: bool,
    /// When it was last created or read (a counter), for least-recently-used order.
    used_at: u64,
}

/// Where a sealed object lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Offset in the file.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
}

/// What the store knows of an object, for readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Sealed and in memory.
    Ready,
    /// Written out to disk: restore it first.
    Spilled,
    /// Being created, pulled or restored.
    Unsealed,
    /// Not here (or deleted).
    Missing,
}

/// A primary copy chosen to be written to disk: copy `size` bytes at `offset`
/// to a file, then call [`ObjectStore::finish_spill`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpillJob {
    /// The object.
    pub id: ObjectId,
    /// Its offset in the store file.
    pub offset: u64,
    /// Its size.
    pub size: u64,
}

/// A spilled object given a region again: copy the file at `path` to `offset`,
/// then call [`ObjectStore::finish_restore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreJob {
    /// The object.
    pub id: ObjectId,
    /// Where its bytes go.
    pub offset: u64,
    /// Its size.
    pub size: u64,
    /// The spill file.
    pub path: PathBuf,
}

/// Counters for stats and reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Objects in the table (in memory or spilled).
    pub objects: usize,
    /// Bytes of objects on disk.
    pub spilled_bytes: u64,
    /// Objects on disk.
    pub spilled_objects: usize,
    /// Objects written out since start.
    pub spilled_total: u64,
    /// Objects read back since start.
    pub restored_total: u64,
    /// Secondary copies evicted since start.
    pub evicted_total: u64,
}

/// The store of one node.
pub struct ObjectStore {
    path: PathBuf,
    capacity: u64,
    alloc: Allocator,
    objects: HashMap<ObjectId, Entry>,
    clock: u64,
    /// Spill files of deleted objects, for the caller to remove (outside its lock).
    garbage: Vec<PathBuf>,
    stats: StoreStats,
    _file: std::fs::File,
}

/// An object id as hex (for messages and file names).
pub fn hex(id: &[u8]) -> String {
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
        Ok(Self {
            path,
            capacity,
            alloc: Allocator::new(capacity),
            objects: HashMap::new(),
            clock: 0,
            garbage: Vec::new(),
            stats: StoreStats::default(),
            _file: file,
        })
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

    /// Number of objects held (spilled ones included).
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Counters.
    pub fn stats(&self) -> StoreStats {
        let mut s = self.stats;
        s.objects = self.objects.len();
        s.spilled_objects = 0;
        s.spilled_bytes = 0;
        for e in self.objects.values() {
            if matches!(e.place, Place::Spilled { .. }) {
                s.spilled_objects += 1;
                s.spilled_bytes += e.size;
            }
        }
        s
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Reserves room for an object; the creator writes it, then seals it.
    pub fn create_object(&mut self, id: &[u8], size: u64, creator: &str) -> Result<u64, StoreError> {
        self.create_owned(id, size, creator, "")
    }

    /// Like [`Self::create_object`], recording the owner's address.
    pub fn create_owned(&mut self, id: &[u8], size: u64, creator: &str, owner: &str) -> Result<u64, StoreError> {
        self.create_entry(id, size, creator, owner, true)
    }

    /// Reserves room for a copy of an object held on another node (pulled here).
    /// Unpinned copies are evicted first when room is needed. The region is busy
    /// (never freed under the writer) until [`Self::seal`] or [`Self::abort`].
    pub fn create_secondary(&mut self, id: &[u8], size: u64, owner: &str) -> Result<u64, StoreError> {
        let offset = self.create_entry(id, size, "pull", owner, false)?;
        if let Some(e) = self.objects.get_mut(id) {
            e.busy = true;
        }
        Ok(offset)
    }

    /// A pull failed half-way: the copy goes (now, or when its readers let go).
    pub fn abort(&mut self, id: &[u8]) {
        if let Some(e) = self.objects.get_mut(id) {
            e.busy = false;
            e.deleted = true;
        }
        self.maybe_free(id);
    }

    fn create_entry(&mut self, id: &[u8], size: u64, creator: &str, owner: &str, primary: bool) -> Result<u64, StoreError> {
        if self.objects.contains_key(id) {
            return Err(StoreError::Exists(hex(id)));
        }
        let (offset, reserved) = self.allocate(size)?;
        let used_at = self.tick();
        self.objects.insert(
            id.to_vec(),
            Entry {
                place: Place::Memory { offset, reserved },
                size,
                sealed: false,
                pins: HashMap::new(),
                deleted: false,
                creator: creator.to_string(),
                owner: owner.to_string(),
                primary,
                busy: false,
                used_at,
            },
        );
        Ok(offset)
    }

    /// A region for `size` bytes, evicting unpinned secondary copies (least
    /// recently used first) when nothing else is free.
    /// True when an object of `size` bytes could ever fit.
    pub fn could_fit(&self, size: u64) -> bool {
        size <= self.capacity
    }

    fn allocate(&mut self, size: u64) -> Result<(u64, u64), StoreError> {
        let capacity = self.capacity;
        let full = |free| StoreError::Full { requested: size, free, capacity };
        if size > self.capacity {
            return Err(full(self.alloc.free()));
        }
        let reserved = size.max(1).div_ceil(ALIGNMENT) * ALIGNMENT;
        loop {
            if let Some(offset) = self.alloc.allocate(reserved) {
                return Ok((offset, reserved));
            }
            let victim = self
                .objects
                .iter()
                .filter(|(_, e)| !e.primary && e.sealed && !e.busy && e.pins.is_empty() && matches!(e.place, Place::Memory { .. }))
                .min_by_key(|(_, e)| e.used_at)
                .map(|(k, _)| k.clone());
            let Some(victim) = victim else { return Err(full(self.alloc.free())) };
            tracing::debug!(object = %hex(&victim), "evicting a secondary copy to make room");
            self.stats.evicted_total += 1;
            self.remove_entry(&victim);
        }
    }

    fn remove_entry(&mut self, id: &[u8]) {
        if let Some(e) = self.objects.remove(id) {
            match e.place {
                Place::Memory { offset, reserved } => self.alloc.free_block(offset, reserved),
                Place::Spilled { path } => self.garbage.push(path),
            }
        }
    }

    /// Makes an object readable (and a pulled copy no longer busy).
    pub fn seal(&mut self, id: &[u8]) -> Result<(), StoreError> {
        let e = self.objects.get_mut(id).ok_or_else(|| StoreError::Missing(hex(id)))?;
        e.sealed = true;
        if !e.primary {
            e.busy = false;
        }
        self.maybe_free(id);
        Ok(())
    }

    /// True when the object exists, is sealed and is in memory.
    pub fn is_sealed(&self, id: &[u8]) -> bool {
        self.lookup(id) == Lookup::Ready
    }

    /// What a reader of `id` finds.
    pub fn lookup(&self, id: &[u8]) -> Lookup {
        match self.objects.get(id) {
            None => Lookup::Missing,
            Some(e) if e.deleted => Lookup::Missing,
            Some(e) if matches!(e.place, Place::Spilled { .. }) => Lookup::Spilled,
            Some(e) if e.sealed => Lookup::Ready,
            Some(_) => Lookup::Unsealed,
        }
    }

    /// Pins a sealed object for `client` and says where it is.
    pub fn get(&mut self, id: &[u8], client: &str) -> Option<Location> {
        let now = self.tick();
        let e = self.objects.get_mut(id).filter(|e| e.sealed && !e.deleted)?;
        let Place::Memory { offset, .. } = e.place else { return None };
        *e.pins.entry(client.to_string()).or_default() += 1;
        e.used_at = now;
        Some(Location { offset, size: e.size })
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
        let free = self.objects.get(id).is_some_and(|e| e.deleted && e.pins.is_empty() && !e.busy);
        if free {
            self.remove_entry(id);
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

    /// Each owner of a stored object, with one of its objects (the sample an
    /// owner liveness check asks about).
    pub fn owners(&self) -> HashMap<String, ObjectId> {
        let mut out = HashMap::new();
        for (id, e) in &self.objects {
            if !e.owner.is_empty() && !e.deleted {
                out.entry(e.owner.clone()).or_insert_with(|| id.clone());
            }
        }
        out
    }

    /// A client went away: its pins go, and objects it created but never sealed.
    pub fn disconnect(&mut self, client: &str) {
        let ids: Vec<ObjectId> = self.objects.keys().cloned().collect();
        for id in ids {
            let mut unsealed_orphan = false;
            if let Some(e) = self.objects.get_mut(&id) {
                e.pins.remove(client);
                unsealed_orphan = !e.sealed && !e.busy && e.creator == client;
            }
            if unsealed_orphan && let Some(e) = self.objects.get_mut(&id) {
                e.deleted = true;
            }
            self.maybe_free(&id);
        }
    }

    // ----- spilling -----

    /// Picks unpinned primary copies (least recently used first) whose regions
    /// together free at least `need` bytes, and marks them busy. Empty when
    /// nothing can be spilled.
    pub fn spill_victims(&mut self, need: u64) -> Vec<SpillJob> {
        let mut candidates: Vec<(&ObjectId, &Entry)> = self
            .objects
            .iter()
            .filter(|(_, e)| e.primary && e.sealed && !e.deleted && !e.busy && e.pins.is_empty() && matches!(e.place, Place::Memory { .. }))
            .collect();
        candidates.sort_by_key(|(_, e)| e.used_at);
        let mut jobs = Vec::new();
        let mut freed = 0u64;
        for (id, e) in candidates {
            if freed >= need {
                break;
            }
            if let Place::Memory { offset, reserved } = e.place {
                freed += reserved;
                jobs.push(SpillJob { id: id.clone(), offset, size: e.size });
            }
        }
        for j in &jobs {
            if let Some(e) = self.objects.get_mut(&j.id) {
                e.busy = true;
            }
        }
        jobs
    }

    /// A spill finished: with `Some(path)` the object's region is freed and it is
    /// read from `path` from now on (unless a reader pinned it meanwhile or it was
    /// deleted: then the file is garbage); with `None` (the write failed) it stays.
    pub fn finish_spill(&mut self, id: &[u8], path: Option<PathBuf>) {
        let Some(e) = self.objects.get_mut(id) else {
            self.garbage.extend(path);
            return;
        };
        e.busy = false;
        match path {
            Some(path) if !e.deleted && e.pins.is_empty() => {
                if let Place::Memory { offset, reserved } = std::mem::replace(&mut e.place, Place::Spilled { path }) {
                    self.alloc.free_block(offset, reserved);
                }
                self.stats.spilled_total += 1;
            }
            Some(path) => self.garbage.push(path),
            None => {}
        }
        self.maybe_free(id);
    }

    /// Gives a spilled object a region again (evicting secondary copies if need
    /// be) and marks it busy; the caller copies the file in and calls
    /// [`Self::finish_restore`]. `Ok(None)` when it is not spilled (any more) or
    /// already being restored.
    pub fn begin_restore(&mut self, id: &[u8]) -> Result<Option<RestoreJob>, StoreError> {
        let (size, path) = match self.objects.get(id) {
            Some(e) if !e.busy && !e.deleted => match &e.place {
                Place::Spilled { path } => (e.size, path.clone()),
                Place::Memory { .. } => return Ok(None),
            },
            _ => return Ok(None),
        };
        let (offset, reserved) = self.allocate(size)?;
        let now = self.tick();
        let e = self.objects.get_mut(id).expect("looked up above");
        e.place = Place::Memory { offset, reserved };
        e.sealed = false;
        e.busy = true;
        e.used_at = now;
        Ok(Some(RestoreJob { id: id.to_vec(), offset, size, path }))
    }

    /// A restore finished: readable again (the file is garbage), or back on disk
    /// when the copy failed.
    pub fn finish_restore(&mut self, job: RestoreJob, ok: bool) {
        let Some(e) = self.objects.get_mut(&job.id) else { return };
        e.busy = false;
        if ok {
            e.sealed = true;
            self.stats.restored_total += 1;
            self.garbage.push(job.path);
        } else if let Place::Memory { offset, reserved } = std::mem::replace(&mut e.place, Place::Spilled { path: job.path }) {
            e.sealed = true;
            self.alloc.free_block(offset, reserved);
        }
        self.maybe_free(&job.id);
    }

    /// Spill files no object needs any more (the caller removes them).
    pub fn take_garbage(&mut self) -> Vec<PathBuf> {
        std::mem::take(&mut self.garbage)
    }
}

impl Drop for ObjectStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        for e in self.objects.values() {
            if let Place::Spilled { path } = &e.place {
                let _ = std::fs::remove_file(path);
            }
        }
        for p in &self.garbage {
            let _ = std::fs::remove_file(p);
        }
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
    fn unpinned_secondary_copies_are_evicted_first_and_primaries_never() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ObjectStore::create(dir.path(), "t", 1024).unwrap();
        s.create_owned(b"p", 512, "w", "o").unwrap();
        s.seal(b"p").unwrap();
        s.create_secondary(b"old", 256, "o").unwrap();
        s.seal(b"old").unwrap();
        s.create_secondary(b"pinned", 256, "o").unwrap();
        s.seal(b"pinned").unwrap();
        s.get(b"pinned", "reader").unwrap();
        s.create_owned(b"new", 200, "w", "o").unwrap();
        assert_eq!(s.lookup(b"old"), Lookup::Missing, "the unpinned copy made room");
        assert_eq!(s.lookup(b"pinned"), Lookup::Ready);
        assert_eq!(s.lookup(b"p"), Lookup::Ready);
        assert!(matches!(s.create_owned(b"more", 200, "w", "o"), Err(StoreError::Full { .. })), "primaries are spilled, not evicted");
        assert_eq!(s.stats().evicted_total, 1);
    }

    #[test]
    fn a_copy_being_pulled_is_not_freed_under_its_writer() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ObjectStore::create(dir.path(), "t", 1024).unwrap();
        s.create_secondary(b"x", 100, "owner").unwrap();
        assert_eq!(s.delete_owned_by("owner"), 1);
        assert_eq!(s.len(), 1, "the owner went, but the pull still writes into it");
        s.seal(b"x").unwrap();
        assert!(s.is_empty(), "freed once the writer is done");
        s.create_secondary(b"y", 100, "owner").unwrap();
        s.abort(b"y");
        assert!(s.is_empty());
    }

    #[test]
    fn spilled_objects_leave_memory_and_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ObjectStore::create(dir.path(), "t", 1024).unwrap();
        s.create_owned(b"a", 400, "w", "o").unwrap();
        s.seal(b"a").unwrap();
        s.create_owned(b"b", 400, "w", "o").unwrap();
        s.seal(b"b").unwrap();
        s.get(b"b", "reader").unwrap();
        let jobs = s.spill_victims(300);
        assert_eq!(jobs.len(), 1, "only the unpinned one: {jobs:?}");
        assert_eq!(jobs[0].id, b"a".to_vec());
        assert!(s.spill_victims(300).is_empty(), "a busy object is not picked twice");
        s.delete(b"a");
        assert_eq!(s.len(), 2, "a busy region is not freed under the spiller");
        let file = dir.path().join("a.spill");
        s.finish_spill(b"a", Some(file.clone()));
        assert_eq!(s.len(), 1, "deleted while spilling: gone once the spill ended");
        assert_eq!(s.take_garbage(), vec![file.clone()]);

        s.create_owned(b"c", 400, "w", "o").unwrap();
        s.seal(b"c").unwrap();
        let jobs = s.spill_victims(1);
        assert_eq!(jobs[0].id, b"c".to_vec());
        s.finish_spill(b"c", Some(file.clone()));
        assert_eq!(s.lookup(b"c"), Lookup::Spilled);
        assert!(s.get(b"c", "r").is_none());
        assert_eq!(s.used(), 448, "only b is in memory");
        let job = s.begin_restore(b"c").unwrap().unwrap();
        assert_eq!(s.lookup(b"c"), Lookup::Unsealed);
        assert!(s.begin_restore(b"c").unwrap().is_none(), "one restore at a time");
        s.finish_restore(job, true);
        assert_eq!(s.lookup(b"c"), Lookup::Ready);
        assert_eq!(s.take_garbage(), vec![file]);
        let st = s.stats();
        assert_eq!((st.spilled_total, st.restored_total, st.spilled_objects), (1, 1, 0), "a deleted object is not counted as spilled");
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
