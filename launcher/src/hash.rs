//! The hashes that tell whether a node is up to date, as Ray's launcher keeps
//! them in tags: the launch hash (what the machine was created with: its
//! node_config and the cluster's auth) and the runtime hash (what was set up on
//! it: its commands and the contents of its file mounts).

use std::collections::BTreeMap;
use std::path::Path;

use sha2::{Digest, Sha256};

/// Hex digest of the bytes fed in.
struct Hasher(Sha256);

impl Hasher {
    fn new() -> Self {
        Self(Sha256::new())
    }

    fn part(&mut self, bytes: &[u8]) {
        // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }

    fn hex(self) -> String {
        self.0.finalize().iter().take(20).map(|b| format!("{b:02x}")).collect()
    }
}

/// JSON with object keys sorted at every level, so equal values hash equally.
fn canonical(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Object(m) => {
            let sorted: BTreeMap<&String, String> = m.iter().map(|(k, v)| (k, canonical(v))).collect();
            let inner: Vec<String> = sorted.iter().map(|(k, v)| format!("{}:{v}", serde_json::Value::String((*k).clone()))).collect();
            format!("{{{}}}", inner.join(","))
        }
        serde_json::Value::Array(a) => format!("[{}]", a.iter().map(canonical).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

/// The launch hash of a node type: its `node_config` and the cluster's `auth`.
pub fn launch_hash(node_config: &serde_json::Value, auth: &serde_json::Value) -> String {
    let mut h = Hasher::new();
    h.part(canonical(node_config).as_bytes());
    h.part(canonical(auth).as_bytes());
    h.hex()
}

/// The hashes of what gets set up on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeHash {
    /// Commands and file mounts together: a node whose tag differs is updated.
    pub runtime: String,
    /// The file mounts' contents alone.
    pub file_mounts: String,
}

/// Hashes the commands run on a node and the contents of its file mounts
/// (`remote -> local path`; folders are walked in name order).
pub fn runtime_hash(commands: &[&[String]], file_mounts: &BTreeMap<String, String>) -> RuntimeHash {
    let mut mounts = Hasher::new();
    for (remote, local) in file_mounts {
        mounts.part(remote.as_bytes());
        hash_path(&mut mounts, Path::new(&expand_home(local)));
    }
    let file_mounts = mounts.hex();
    let mut h = Hasher::new();
    for list in commands {
        h.part(b"[");
        for c in *list {
            h.part(c.as_bytes());
        }
    }
    h.part(file_mounts.as_bytes());
    RuntimeHash { runtime: h.hex(), file_mounts }
}

/// Hashes a mount's contents as rsync -a copies them: the mount itself is
/// followed when it is a link; inside it, links are hashed by their target
/// (rsync copies them as links, and a loop cannot trap the walk), files by
/// their bytes (streamed), and anything else (FIFOs, sockets) by its kind alone.
fn hash_path(h: &mut Hasher, path: &Path) {
    match std::fs::metadata(path) {
        Ok(m) => hash_entry(h, path, &m),
        Err(_) => h.part(b"<missing>"),
    }
}

fn hash_entry(h: &mut Hasher, path: &Path, m: &std::fs::Metadata) {
    let kind = m.file_type();
    if kind.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        entries.sort();
        for e in entries {
            h.part(
                e.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
                    .as_bytes(),
            );
            match std::fs::symlink_metadata(&e) {
                Ok(m) => hash_entry(h, &e, &m),
                Err(_) => h.part(b"<missing>"),
            }
        }
    } else if kind.is_symlink() {
        h.part(b"<link>");
        h.part(
            std::fs::read_link(path)
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default()
                .as_bytes(),
        );
    } else if kind.is_file() {
        let mut file = Sha256::new();
        match std::fs::File::open(path).and_then(|mut f| std::io::copy(&mut f, &mut file)) {
            Ok(_) => h.part(&file.finalize()),
            Err(_) => h.part(b"<unreadable>"),
        }
    } else {
        h.part(b"<special>");
    }
}

/// `~` and `~/...` against this machine's HOME.
pub fn expand_home(path: &str) -> String {
    let home = std::env::var("HOME").unwrap_or_default();
    if path == "~" {
        home
    } else if let Some(rest) = path.strip_prefix("~/") {
        format!("{home}/{rest}")
    } else {
        path.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launch_hash_ignores_key_order_and_follows_values() {
        let a = serde_json::json!({"InstanceType": "m5.large", "ImageId": "ami-1"});
        let b = serde_json::json!({"ImageId": "ami-1", "InstanceType": "m5.large"});
        let auth = serde_json::json!({"ssh_user": "ubuntu"});
        assert_eq!(launch_hash(&a, &auth), launch_hash(&b, &auth));
        let c = serde_json::json!({"ImageId": "ami-2", "InstanceType": "m5.large"});
        assert_ne!(launch_hash(&a, &auth), launch_hash(&c, &auth));
    }

    #[test]
    fn runtime_hash_follows_commands_and_file_contents() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.py"), "print(1)").unwrap();
        let mounts: BTreeMap<String, String> = [("~/app".to_string(), dir.path().display().to_string())].into();
        let setup = vec!["pip install x".to_string()];
        let one = runtime_hash(&[&setup], &mounts);
        assert_eq!(one, runtime_hash(&[&setup], &mounts), "stable");
        std::fs::write(dir.path().join("app.py"), "print(2)").unwrap();
        let two = runtime_hash(&[&setup], &mounts);
        assert_ne!(one.file_mounts, two.file_mounts);
        assert_ne!(one.runtime, two.runtime);
        let other = vec!["pip install y".to_string()];
        let three = runtime_hash(&[&other], &mounts);
        assert_eq!(two.file_mounts, three.file_mounts);
        assert_ne!(two.runtime, three.runtime);
    }

    #[test]
    fn links_are_hashed_by_target_and_fifos_by_kind_so_loops_and_pipes_cannot_hang_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::os::unix::fs::symlink("..", dir.path().join("sub/up")).unwrap();
        let fifo = std::ffi::CString::new(dir.path().join("pipe").display().to_string()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let mounts: BTreeMap<String, String> =
            [("~/d".to_string(), dir.path().display().to_string())].into();
        let one = runtime_hash(&[], &mounts);
        std::fs::remove_file(dir.path().join("sub/up")).unwrap();
        std::os::unix::fs::symlink("../..", dir.path().join("sub/up")).unwrap();
        assert_ne!(
            one,
            runtime_hash(&[], &mounts),
            "a link's target is part of the contents"
        );
    }
}
