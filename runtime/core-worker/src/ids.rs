//! Task and object ids. An object id is its task id plus a return index, so the
//! returns of a task are known before it runs.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes of a task id.
pub const TASK_ID_LEN: usize = 16;
/// Bytes of an object id: task id + 4-byte index.
pub const OBJECT_ID_LEN: usize = TASK_ID_LEN + 4;

/// Makes unique ids for one worker: a random prefix and a counter.
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
    pub fn task_id(&self) -> Vec<u8> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut id = Vec::with_capacity(TASK_ID_LEN);
        id.extend_from_slice(&self.prefix);
        id.extend_from_slice(&n.to_be_bytes());
        id
    }
}

/// The id of return `index` (1-based) of `task_id`; index 0 is used by `put`.
pub fn object_id(task_id: &[u8], index: u32) -> Vec<u8> {
    let mut id = Vec::with_capacity(OBJECT_ID_LEN);
    id.extend_from_slice(task_id);
    id.extend_from_slice(&index.to_be_bytes());
    id
}

/// The task an object id belongs to.
pub fn task_of(object_id: &[u8]) -> &[u8] {
    &object_id[..object_id.len().saturating_sub(4)]
}

/// Lowercase hex.
pub fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_returns_derive_from_tasks() {
        let g = IdGen::new();
        let a = g.task_id();
        let b = g.task_id();
        assert_ne!(a, b);
        let o = object_id(&a, 2);
        assert_eq!(o.len(), OBJECT_ID_LEN);
        assert_eq!(task_of(&o), a.as_slice());
    }
}
