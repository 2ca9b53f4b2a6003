//! Identifiers: random, fixed-length, hex encoded on the wire.

use rand::RngCore;
use std::fmt;

/// Bytes in a node id (Ray uses 28).
pub const NODE_ID_LEN: usize = 28;

/// Random bytes as lowercase hex.
pub fn random_hex(num_bytes: usize) -> String {
    let mut buf = vec![0u8; num_bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// Identifies one raylet (one node) for the lifetime of the cluster.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(String);

impl NodeId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(random_hex(NODE_ID_LEN))
    }

    /// Parses a hex id, checking its length and alphabet.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.len() != NODE_ID_LEN * 2 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "invalid node id {:?}: expected {} hex characters",
                truncate(s, 80),
                NODE_ID_LEN * 2
            ));
        }
        Ok(Self(s.to_ascii_lowercase()))
    }

    /// The hex form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// First characters of the id, for logs and status lines.
    pub fn short(&self) -> &str {
        &self.0[..8.min(self.0.len())]
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.short())
    }
}

/// Bytes of a task id.
pub const TASK_ID_LEN: usize = 16;
/// Bytes of an object id: its task's id and a 4-byte return index.
pub const OBJECT_ID_LEN: usize = TASK_ID_LEN + 4;

/// An id of the wrong length (from a peer or from Python).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} id: expected {expected} bytes, got {got}")]
pub struct IdError {
    /// Which kind of id.
    pub what: &'static str,
    /// Bytes expected.
    pub expected: usize,
    /// Bytes given.
    pub got: usize,
}

/// Identifies one task (and, with a return index, its returns).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId([u8; TASK_ID_LEN]);

impl TaskId {
    /// From its raw bytes.
    pub fn new(bytes: [u8; TASK_ID_LEN]) -> Self {
        Self(bytes)
    }

    /// Parses bytes from the wire, checking the length.
    pub fn from_bytes(b: &[u8]) -> Result<Self, IdError> {
        b.try_into().map(Self).map_err(|_| IdError { what: "task", expected: TASK_ID_LEN, got: b.len() })
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Identifies one object: the task that makes it and a return index (0 for
/// `put`), so the returns of a task are known before it runs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId([u8; OBJECT_ID_LEN]);

impl ObjectId {
    /// Return `index` (1-based; 0 is a `put`) of `task`.
    pub fn for_return(task: TaskId, index: u32) -> Self {
        let mut b = [0u8; OBJECT_ID_LEN];
        b[..TASK_ID_LEN].copy_from_slice(&task.0);
        b[TASK_ID_LEN..].copy_from_slice(&index.to_be_bytes());
        Self(b)
    }

    /// Parses bytes from the wire, checking the length.
    pub fn from_bytes(b: &[u8]) -> Result<Self, IdError> {
        b.try_into().map(Self).map_err(|_| IdError { what: "object", expected: OBJECT_ID_LEN, got: b.len() })
    }

    /// The task that makes it.
    pub fn task_id(&self) -> TaskId {
        let mut t = [0u8; TASK_ID_LEN];
        t.copy_from_slice(&self.0[..TASK_ID_LEN]);
        TaskId(t)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The raw bytes, owned (for protobuf messages).
    pub fn to_vec(&self) -> Vec<u8> {
        self.0.to_vec()
    }
}

macro_rules! hex_display {
    ($t:ident) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($t), hex::encode(self.0))
            }
        }
    };
}

hex_display!(TaskId);
hex_display!(ObjectId);

macro_rules! string_id {
    ($(#[$doc:meta])* $t:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $t(String);

        impl $t {
            /// Wraps the id's text.
            pub fn new(s: impl Into<String>) -> Self {
                Self(s.into())
            }

            /// The id's text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(
    /// Identifies a worker or driver process (hex, chosen by whoever starts it).
    WorkerId
);
string_id!(
    /// Identifies a job (given by the GCS when a driver connects).
    JobId
);

/// Cuts a peer-supplied string for an error message, on a char boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_round_trips_and_rejects_garbage() {
        let id = NodeId::random();
        assert_eq!(NodeId::parse(id.as_str()).unwrap(), id);
        assert!(NodeId::parse("abc").is_err());
        assert!(NodeId::parse(&"zz".repeat(NODE_ID_LEN)).is_err());
    }

    #[test]
    fn object_ids_carry_their_task_and_reject_wrong_lengths() {
        let t = TaskId::new([7; TASK_ID_LEN]);
        let o = ObjectId::for_return(t, 3);
        assert_eq!(o.task_id(), t);
        assert_eq!(ObjectId::from_bytes(o.as_bytes()).unwrap(), o);
        assert_eq!(o.to_string().len(), OBJECT_ID_LEN * 2);
        let e = ObjectId::from_bytes(b"abc").unwrap_err();
        assert_eq!(e.to_string(), "invalid object id: expected 20 bytes, got 3");
        assert!(TaskId::from_bytes(&[0; 17]).is_err());
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
