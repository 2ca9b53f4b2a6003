//! Task ids for one worker: a random prefix and a counter, so ids are unique
//! across the cluster without coordination. Object ids derive from them
//! (`ObjectId::for_return`), so the returns of a task are known before it runs.

use std::sync::atomic::{AtomicU64, Ordering};

use ray_common::TaskId;
use ray_common::ids::TASK_ID_LEN;

/// Makes unique task ids for one worker.
pub struct IdGen {
    prefix: [u8; 8],
    counter: AtomicU64,
}

impl Default for IdGen {
    fn default() -> Self {
        Self::new()
    }
}

impl IdGen {
    /// A generator with a fresh random prefix.
    pub fn new() -> Self {
        let mut prefix = [0u8; 8];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut prefix);
        Self { prefix, counter: AtomicU64::new(1) }
    }

    /// A new task id.
    pub fn task_id(&self) -> TaskId {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut id = [0u8; TASK_ID_LEN];
        id[..8].copy_from_slice(&self.prefix);
        id[8..].copy_from_slice(&n.to_be_bytes());
        TaskId::new(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ray_common::ObjectId;

    #[test]
    fn ids_are_unique_and_returns_derive_from_tasks() {
        let g = IdGen::new();
        let a = g.task_id();
        let b = g.task_id();
        assert_ne!(a, b);
        let o = ObjectId::for_return(a, 2);
        assert_eq!(o.task_id(), a);
    }
}
