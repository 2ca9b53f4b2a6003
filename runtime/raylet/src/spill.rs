//! Spilling: when the store is full, unpinned primary copies are written to
//! files (in the session's `spill` folder, or the directory Ray's
//! `object_spilling_config` names) and their regions freed; a read of a spilled
//! object copies it back first. Unpinned secondary copies are evicted before
//! anything is spilled (the store does that on its own).
//!
//! The store picks and marks the objects under the node lock; the file I/O runs
//! here, outside it, on blocking threads.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ray_object_store::{StoreError, hex};
use ray_object_store::mapping::StoreMapping;

use crate::Raylet;

/// Where spill files go: the `object_spilling_config` (Ray's JSON,
/// `{"type": "filesystem", "params": {"directory_path": ...}}`) or
/// `<session>/spill`.
pub fn spill_dir(config_json: &str, session_dir: &str, node_id: &str) -> Result<PathBuf, String> {
    let default = || Path::new(session_dir).join("spill").join(node_id);
    if config_json.trim().is_empty() {
        return Ok(default());
    }
    let v: serde_json::Value = serde_json::from_str(config_json)
        .map_err(|e| format!("object_spilling_config is not valid JSON ({e}); expected {{\"type\": \"filesystem\", \"params\": {{\"directory_path\": ...}}}}"))?;
    let kind = v.get("type").and_then(|t| t.as_str()).unwrap_or("filesystem");
    if kind != "filesystem" {
        return Err(format!(
            "object_spilling_config: type {kind:?} is not supported here; expected \"filesystem\" (spilling to S3 or other smart_open URIs is not available)"
        ));
    }
    let params = v.get("params");
    let path = params.and_then(|p| p.get("directory_path"));
    let dir = match path {
        None => return Ok(default()),
        Some(serde_json::Value::String(s)) => s.clone(),
        // Ray accepts a list of directories and spreads files over them; the first is used here.
        Some(serde_json::Value::Array(a)) => match a.first().and_then(|x| x.as_str()) {
            Some(s) => s.to_string(),
            None => return Err("object_spilling_config: params.directory_path is an empty list; expected a path".into()),
        },
        Some(other) => return Err(format!("object_spilling_config: params.directory_path is {other}; expected a path")),
    };
    Ok(PathBuf::from(dir).join(format!("ray_spilled_objects_{node_id}")))
}


/// Removes files no object needs any more, on a blocking thread.
pub fn remove_files(paths: Vec<PathBuf>) {
    if paths.is_empty() {
        return;
    }
    tokio::task::spawn_blocking(move || {
        for p in paths {
            let _ = std::fs::remove_file(p);
        }
    });
}

fn write_file(mapping: &StoreMapping, dir: &Path, id: &[u8], offset: u64, size: u64) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let bytes = mapping.slice(offset, size).ok_or_else(|| std::io::Error::other("object outside the store"))?;
    // A name of its own per spill: the file of an earlier spill of the same
    // object may still be waiting to be removed.
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!("{}-{n}", hex(id)));
    let tmp = path.with_extension("tmp");
    let written = std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(path)
}

/// Writes unpinned primary copies to disk until `need` bytes are freed. False
/// when nothing could be spilled (or the object could never fit). Runs as a
/// task of its own, so a caller that gives up does not leave objects busy.
pub async fn make_room(r: &Arc<Raylet>, need: u64) -> bool {
    if !r.state.lock().could_fit(need) {
        return false;
    }
    let r = r.clone();
    tokio::spawn(async move { spill_some(&r, need).await }).await.unwrap_or(false)
}

async fn spill_some(r: &Arc<Raylet>, need: u64) -> bool {
    let jobs = r.state.lock().spill_victims(need);
    if jobs.is_empty() {
        return false;
    }
    let mut spilled = 0;
    for job in jobs {
        let mapping = r.mapping.clone();
        let dir = r.spill_dir.clone();
        let id = job.id.clone();
        let written = tokio::task::spawn_blocking(move || write_file(&mapping, &dir, &job.id, job.offset, job.size)).await;
        let path = match written {
            Ok(Ok(p)) => {
                spilled += 1;
                Some(p)
            }
            Ok(Err(e)) => {
                tracing::error!(object = %hex(&id), dir = %r.spill_dir.display(), error = %e, "cannot spill an object");
                None
            }
            Err(_) => None,
        };
        let garbage = r.state.lock().finish_spill(&id, path);
        remove_files(garbage);
    }
    tracing::debug!(objects = spilled, need, "spilled objects to make room");
    spilled > 0
}

/// Reserves room for an object, spilling others while the store is full.
pub async fn create_with_room(
    r: &Arc<Raylet>,
    size: u64,
    mut create: impl FnMut(&mut crate::state::NodeState) -> Result<u64, StoreError>,
) -> Result<u64, StoreError> {
    loop {
        let res = create(&mut r.state.lock());
        match res {
            Err(StoreError::Full { .. }) if make_room(r, size).await => continue,
            other => return other,
        }
    }
}

/// Brings a spilled object back into memory (spilling others if need be). Ok
/// when it is in memory (or being restored by someone else) afterwards. Runs as
/// a task of its own, so a caller that gives up does not leave the object busy.
pub async fn restore(r: &Arc<Raylet>, id: &[u8]) -> Result<(), StoreError> {
    let (r, id) = (r.clone(), id.to_vec());
    tokio::spawn(async move { restore_now(&r, &id).await }).await.unwrap_or(Ok(()))
}

async fn restore_now(r: &Arc<Raylet>, id: &[u8]) -> Result<(), StoreError> {
    let job = loop {
        let res = r.state.lock().begin_restore(id);
        match res {
            Ok(Some(job)) => break job,
            Ok(None) => return Ok(()),
            Err(StoreError::Full { requested, .. }) if make_room(r, requested).await => continue,
            Err(e) => return Err(e),
        }
    };
    let mapping = r.mapping.clone();
    let j = job.clone();
    let read = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let bytes = std::fs::read(&j.path)?;
        if bytes.len() as u64 != j.size {
            return Err(std::io::Error::other(format!("the spill file has {} bytes, expected {}", bytes.len(), j.size)));
        }
        mapping.write(j.offset, &bytes).ok_or_else(|| std::io::Error::other("object outside the store"))
    })
    .await;
    let ok = matches!(read, Ok(Ok(())));
    if let Ok(Err(e)) = &read {
        tracing::error!(object = %hex(id), file = %job.path.display(), error = %e, "cannot restore a spilled object");
    }
    let garbage = r.state.lock().finish_restore(job, ok);
    remove_files(garbage);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spill_directory_follows_rays_config() {
        assert_eq!(spill_dir("", "/s", "n").unwrap(), PathBuf::from("/s/spill/n"));
        let cfg = r#"{"type": "filesystem", "params": {"directory_path": "/tmp/sp"}}"#;
        assert_eq!(spill_dir(cfg, "/s", "n").unwrap(), PathBuf::from("/tmp/sp/ray_spilled_objects_n"));
        let list = r#"{"type": "filesystem", "params": {"directory_path": ["/a", "/b"]}}"#;
        assert_eq!(spill_dir(list, "/s", "n").unwrap(), PathBuf::from("/a/ray_spilled_objects_n"));
        let e = spill_dir(r#"{"type": "smart_open", "params": {"uri": "s3://b"}}"#, "/s", "n").unwrap_err();
        assert!(e.contains("\"smart_open\"") && e.contains("filesystem"), "{e}");
        assert!(spill_dir("{", "/s", "n").unwrap_err().contains("not valid JSON"));
    }
}
