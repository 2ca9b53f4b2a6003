//! Session folders laid out as Ray lays them out:
//!
//! ```text
//! /tmp/ray/                       (or $RAY_TMPDIR/ray, or --temp-dir)
//!   session_<date>_<time>_<us>_<pid>/logs/   one log per process
//!   session_latest -> session_...            the newest session
//!   ray_current_cluster                      "HOST:PORT" of the head, for address="auto"
//!   processes/<pid>.json                     what `ray start` launched, for `ray stop`
//! ```

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Variable that moves the temp root (Ray's name).
pub const ENV_TMPDIR: &str = "RAY_TMPDIR";

/// The folder holding sessions: `explicit` (from `--temp-dir`), else
/// `$RAY_TMPDIR/ray`, else `/tmp/ray`.
pub fn temp_root(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    match std::env::var_os(ENV_TMPDIR).filter(|v| !v.is_empty()) {
        Some(base) => PathBuf::from(base).join("ray"),
        None => PathBuf::from("/tmp/ray"),
    }
}

/// A new session name: `session_2026-11-23_12-00-00_123456_4242`.
pub fn new_session_name() -> String {
    let now = chrono::Local::now();
    format!("session_{}_{}", now.format("%Y-%m-%d_%H-%M-%S_%6f"), std::process::id())
}

/// One session's folder.
#[derive(Debug, Clone)]
pub struct Session {
    root: PathBuf,
    name: String,
}

impl Session {
    /// Creates `<root>/<name>/logs` and points `session_latest` at it.
    pub fn create(root: &Path, name: &str) -> io::Result<Self> {
        let s = Self { root: root.to_path_buf(), name: name.to_string() };
        std::fs::create_dir_all(s.logs_dir())
            .map_err(|e| io::Error::new(e.kind(), format!("cannot create {:?}: {e}", s.logs_dir())))?;
        s.point_latest_here()?;
        Ok(s)
    }

    /// Opens an existing or new session folder without touching `session_latest`
    /// (a node joining a cluster whose session already lives here).
    pub fn open(root: &Path, name: &str) -> io::Result<Self> {
        let s = Self { root: root.to_path_buf(), name: name.to_string() };
        std::fs::create_dir_all(s.logs_dir())?;
        if !root.join("session_latest").exists() {
            s.point_latest_here()?;
        }
        Ok(s)
    }

    fn point_latest_here(&self) -> io::Result<()> {
        let link = self.root.join("session_latest");
        let tmp = self.root.join(format!(".session_latest.{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&self.name, &tmp)?;
        std::fs::rename(&tmp, &link)
    }

    /// The session's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The temp root holding it.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/<name>`.
    pub fn dir(&self) -> PathBuf {
        self.root.join(&self.name)
    }

    /// `<root>/<name>/logs`.
    pub fn logs_dir(&self) -> PathBuf {
        self.dir().join("logs")
    }

    /// Creates a log file `<base>.<ext>`, or `<base>.<n>.<ext>` when taken (several
    /// raylets of one session on one machine).
    pub fn create_log(&self, base: &str, ext: &str) -> io::Result<(PathBuf, File)> {
        for n in 0..10_000 {
            let name = if n == 0 { format!("{base}.{ext}") } else { format!("{base}.{n}.{ext}") };
            let path = self.logs_dir().join(name);
            match std::fs::OpenOptions::new().append(true).create_new(true).open(&path) {
                Ok(f) => return Ok((path, f)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io::Error::new(e.kind(), format!("cannot create {path:?}: {e}"))),
            }
        }
        Err(io::Error::other(format!("too many {base} logs in {:?}", self.logs_dir())))
    }
}

/// `<root>/ray_current_cluster`.
pub fn current_cluster_file(root: &Path) -> PathBuf {
    root.join("ray_current_cluster")
}

/// Records the head's address for `address="auto"`.
pub fn write_current_cluster(root: &Path, addr: &str) -> io::Result<()> {
    std::fs::create_dir_all(root)?;
    let tmp = root.join(format!(".ray_current_cluster.{}", std::process::id()));
    std::fs::write(&tmp, addr)?;
    std::fs::rename(tmp, current_cluster_file(root))
}

/// The head address recorded by the last `ray start --head` on this machine.
pub fn read_current_cluster(root: &Path) -> Option<String> {
    let s = std::fs::read_to_string(current_cluster_file(root)).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// Forgets the recorded head address.
pub fn clear_current_cluster(root: &Path) {
    let _ = std::fs::remove_file(current_cluster_file(root));
}

/// A process started by `ray start` (or `ray.init()`), as `ray stop` finds it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProcessRecord {
    /// Its pid.
    pub pid: u32,
    /// Start time in clock ticks, so a reused pid is never mistaken for it.
    pub start_ticks: u64,
    /// `gcs_server`, `raylet`, `monitor`, ...
    pub name: String,
    /// Session it belongs to.
    pub session: String,
}

fn registry_dir(root: &Path) -> PathBuf {
    root.join("processes")
}

/// Records a launched process.
pub fn register_process(root: &Path, rec: &ProcessRecord) -> io::Result<()> {
    let dir = registry_dir(root);
    std::fs::create_dir_all(&dir)?;
    let body = serde_json::to_vec(rec).map_err(io::Error::other)?;
    let tmp = dir.join(format!(".{}.tmp", rec.pid));
    std::fs::write(&tmp, body)?;
    std::fs::rename(tmp, dir.join(format!("{}.json", rec.pid)))
}

/// Every recorded process (alive or not).
pub fn list_processes(root: &Path) -> Vec<ProcessRecord> {
    let Ok(rd) = std::fs::read_dir(registry_dir(root)) else { return Vec::new() };
    rd.filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect()
}

/// Forgets a process.
pub fn unregister_process(root: &Path, pid: u32) {
    let _ = std::fs::remove_file(registry_dir(root).join(format!("{pid}.json")));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_layout_and_unique_logs() {
        let dir = tempfile::tempdir().unwrap();
        let name = new_session_name();
        assert!(name.starts_with("session_"));
        let s = Session::create(dir.path(), &name).unwrap();
        assert!(s.logs_dir().is_dir());
        let latest = std::fs::read_link(dir.path().join("session_latest")).unwrap();
        assert_eq!(latest, PathBuf::from(&name));
        let (a, _) = s.create_log("raylet", "out").unwrap();
        let (b, _) = s.create_log("raylet", "out").unwrap();
        assert!(a.ends_with("raylet.out") && b.ends_with("raylet.1.out"));
    }

    #[test]
    fn current_cluster_and_registry_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_current_cluster(dir.path()), None);
        write_current_cluster(dir.path(), "127.0.0.1:6379").unwrap();
        assert_eq!(read_current_cluster(dir.path()).as_deref(), Some("127.0.0.1:6379"));
        let rec = ProcessRecord { pid: 42, start_ticks: 7, name: "raylet".into(), session: "s".into() };
        register_process(dir.path(), &rec).unwrap();
        assert_eq!(list_processes(dir.path()), vec![rec]);
        unregister_process(dir.path(), 42);
        assert!(list_processes(dir.path()).is_empty());
    }
}
