//! A client's view of the store file: the whole file mapped shared, read and
//! written in place.

use std::path::Path;

use memmap2::MmapMut;

/// The store file mapped into this process.
pub struct StoreMapping {
    map: MmapMut,
}

impl StoreMapping {
    /// Maps the file at `path` (created by the raylet).
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new().read(true).write(true).open(path)?;
        // SAFETY: the store file is shared memory that processes of this node write
        // only into regions the raylet reserved for them; readers read sealed
        // regions, which nobody writes again.
        let map = unsafe { MmapMut::map_mut(&file)? };
        Ok(Self { map })
    }

    /// Start address of the mapping.
    pub fn base(&self) -> usize {
        self.map.as_ptr() as usize
    }

    /// Length of the mapping.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True for an empty mapping.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Raw pointer to `offset`, if `offset + len` lies inside the mapping.
    pub fn ptr(&self, offset: u64, len: u64) -> Option<*mut u8> {
        let end = offset.checked_add(len)?;
        if end > self.map.len() as u64 {
            return None;
        }
        // SAFETY: offset is within the mapping (checked above).
        Some(unsafe { self.map.as_ptr().add(offset as usize) as *mut u8 })
    }

    /// Copies `data` to `offset`; large copies are split over two threads, which
    /// moves more bytes per second than one core can.
    pub fn write(&self, offset: u64, data: &[u8]) -> Option<()> {
        let p = self.ptr(offset, data.len() as u64)? as usize;
        const SPLIT_ABOVE: usize = 8 << 20;
        if data.len() < SPLIT_ABOVE {
            // SAFETY: the region is inside the mapping and reserved for this writer.
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p as *mut u8, data.len()) };
            return Some(());
        }
        let half = (data.len() / 2) & !63;
        let (a, b) = data.split_at(half);
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: the second half of the reserved region; disjoint from the first.
                unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), (p + half) as *mut u8, b.len()) };
            });
            // SAFETY: the first half of the reserved region.
            unsafe { std::ptr::copy_nonoverlapping(a.as_ptr(), p as *mut u8, a.len()) };
        });
        Some(())
    }

    /// A read-only view of `len` bytes at `offset`.
    pub fn slice(&self, offset: u64, len: u64) -> Option<&[u8]> {
        let p = self.ptr(offset, len)?;
        // SAFETY: inside the mapping; the region is sealed and not written again.
        Some(unsafe { std::slice::from_raw_parts(p, len as usize) })
    }
}

// SAFETY: the mapping is plain shared memory; concurrent access follows the store's
// protocol (writers own unsealed regions, readers read sealed ones).
unsafe impl Send for StoreMapping {}
// SAFETY: see above.
unsafe impl Sync for StoreMapping {}
