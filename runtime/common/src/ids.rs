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
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
