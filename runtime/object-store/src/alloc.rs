//! First-fit allocation of aligned regions of the store file, with coalescing of
//! neighbouring free regions.

use std::collections::BTreeMap;

/// Free-list allocator over `[0, capacity)`.
#[derive(Debug)]
pub struct Allocator {
    /// offset -> length of free regions; neighbours are always merged.
    free: BTreeMap<u64, u64>,
    free_bytes: u64,
}

impl Allocator {
    /// Everything free.
    pub fn new(capacity: u64) -> Self {
        let mut free = BTreeMap::new();
        if capacity > 0 {
            free.insert(0, capacity);
        }
        Self { free, free_bytes: capacity }
    }

    /// Free bytes.
    pub fn free(&self) -> u64 {
        self.free_bytes
    }

    /// A region of `len` bytes (callers round to the alignment), first fit.
    pub fn allocate(&mut self, len: u64) -> Option<u64> {
        let (&off, &avail) = self.free.iter().find(|(_, l)| **l >= len)?;
        self.free.remove(&off);
        if avail > len {
            self.free.insert(off + len, avail - len);
        }
        self.free_bytes -= len;
        Some(off)
    }

    /// Returns a region.
    pub fn free_block(&mut self, mut off: u64, mut len: u64) {
        self.free_bytes += len;
        // Merge with the free region after it.
        if let Some(next_len) = self.free.remove(&(off + len)) {
            len += next_len;
        }
        // And with the one before it.
        if let Some((&prev_off, &prev_len)) = self.free.range(..off).next_back()
            && prev_off + prev_len == off
        {
            self.free.remove(&prev_off);
            off = prev_off;
            len += prev_len;
        }
        self.free.insert(off, len);
    }

    /// Number of free regions (fragmentation).
    pub fn fragments(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the order of allocations and frees, regions never overlap, the
        /// free count is exact, and freeing everything leaves one region.
        #[test]
        fn regions_never_overlap_and_everything_comes_back(ops in proptest::collection::vec((1u64..64, any::<bool>()), 1..200)) {
            let cap = 4096;
            let mut a = Allocator::new(cap);
            let mut live: Vec<(u64, u64)> = Vec::new();
            for (size, free_one) in ops {
                if free_one && !live.is_empty() {
                    let (o, l) = live.remove(size as usize % live.len());
                    a.free_block(o, l);
                } else if let Some(o) = a.allocate(size * 8) {
                    for (lo, ll) in &live {
                        prop_assert!(o + size * 8 <= *lo || *lo + *ll <= o, "overlap");
                    }
                    prop_assert!(o + size * 8 <= cap);
                    live.push((o, size * 8));
                }
                let used: u64 = live.iter().map(|(_, l)| l).sum();
                prop_assert_eq!(a.free(), cap - used);
            }
            for (o, l) in live.drain(..) {
                a.free_block(o, l);
            }
            prop_assert_eq!(a.free(), cap);
            prop_assert_eq!(a.fragments(), 1);
        }
    }
}
