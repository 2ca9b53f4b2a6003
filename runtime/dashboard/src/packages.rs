//! `working_dir` packages uploaded through `PUT /api/packages/gcs/<name>`: kept
//! in the GCS KV in 8 MiB pieces (as the Python driver stores its own), and
//! unpacked once per content on the head for the drivers that use them.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::gcs::Gcs;

/// The largest package accepted (as Ray).
pub const MAX_PACKAGE_BYTES: usize = 512 * 1024 * 1024;
const PIECE_BYTES: usize = 8 * 1024 * 1024;
const NAMESPACE: &str = "packages";
const PREFIX: &str = "_ray_pkg_";

/// Why a package could not be stored, read or unpacked.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("{0}")]
    BadName(String),
    #[error("package {0} was never uploaded (PUT /api/packages/gcs/<name> first)")]
    Missing(String),
    #[error("package {name} is damaged: {why}")]
    Damaged { name: String, why: String },
    #[error("cannot unpack package {name} into {dir}: {error}")]
    Unpack {
        name: String,
        dir: PathBuf,
        error: std::io::Error,
    },
    #[error("the GCS did not store or return package {name}: {status}")]
    Gcs { name: String, status: String },
}

/// A checked package name (`_ray_pkg_<letters and digits>.zip`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageName(String);

impl PackageName {
    /// From the two parts of the HTTP path.
    pub fn from_parts(protocol: &str, name: &str) -> Result<Self, PackageError> {
        if protocol != "gcs" {
            return Err(PackageError::BadName(format!(
                "package protocol {protocol:?} is not supported; use \"gcs\""
            )));
        }
        let stem = name
            .strip_prefix(PREFIX)
            .and_then(|s| s.strip_suffix(".zip"))
            .filter(|s| {
                !s.is_empty()
                    && s.len() <= 100
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            });
        match stem {
            Some(_) => Ok(Self(name.to_string())),
            None => Err(PackageError::BadName(format!(
                "package name {:?} is not of the form {PREFIX}<letters or digits>.zip",
                ray_common::ids::truncate(name, 120)
            ))),
        }
    }

    /// From a URI (`gcs://_ray_pkg_<hash>.zip`).
    pub fn from_uri(uri: &str) -> Result<Self, PackageError> {
        match uri.split_once("://") {
            Some((protocol, name)) => Self::from_parts(protocol, name),
            None => Err(PackageError::BadName(format!(
                "{:?} is not a package URI (gcs://{PREFIX}<hash>.zip); a local folder must be uploaded by the client \
                 (`ray job submit --working-dir` and JobSubmissionClient do this)",
                ray_common::ids::truncate(uri, 120)
            ))),
        }
    }

    /// `gcs://<name>`.
    pub fn uri(&self) -> String {
        format!("gcs://{}", self.0)
    }

    /// The folder name it unpacks to.
    fn stem(&self) -> &str {
        self.0.trim_end_matches(".zip")
    }

    fn key(&self, part: &str) -> Vec<u8> {
        format!("{}#{part}", self.uri()).into_bytes()
    }
}

/// Stores `data` under `name`: the pieces first, the header (`{"pieces", "size"}`)
/// last, so a package exists only once it is whole.
pub async fn store(gcs: &Gcs, name: &PackageName, data: bytes::Bytes) -> Result<(), PackageError> {
    let fail = |s: tonic::Status| PackageError::Gcs {
        name: name.uri(),
        status: s.message().to_string(),
    };
    let pieces: Vec<&[u8]> = if data.is_empty() {
        vec![&[][..]]
    } else {
        data.chunks(PIECE_BYTES).collect()
    };
    for (i, piece) in pieces.iter().enumerate() {
        gcs.kv_put(
            NAMESPACE,
            name.key(&i.to_string()),
            piece.to_vec(),
            crate::gcs::DEFAULT_PATIENCE,
        )
        .await
        .map_err(fail)?;
    }
    let head = serde_json::json!({ "pieces": pieces.len(), "size": data.len() }).to_string();
    gcs.kv_put(
        NAMESPACE,
        name.key("head"),
        head.into_bytes(),
        crate::gcs::DEFAULT_PATIENCE,
    )
    .await
    .map_err(fail)?;
    tracing::info!(package = %name.uri(), bytes = data.len(), "package stored");
    Ok(())
}

/// Whether `name` was stored whole.
pub async fn exists(gcs: &Gcs, name: &PackageName) -> Result<bool, PackageError> {
    let head = gcs.kv_get(NAMESPACE, name.key("head")).await;
    head.map(|h| h.is_some()).map_err(|s| PackageError::Gcs {
        name: name.uri(),
        status: s.message().to_string(),
    })
}

async fn fetch(gcs: &Gcs, name: &PackageName) -> Result<Vec<u8>, PackageError> {
    let fail = |s: tonic::Status| PackageError::Gcs {
        name: name.uri(),
        status: s.message().to_string(),
    };
    let damaged = |why: String| PackageError::Damaged {
        name: name.uri(),
        why,
    };
    let head = gcs
        .kv_get(NAMESPACE, name.key("head"))
        .await
        .map_err(fail)?
        .ok_or_else(|| PackageError::Missing(name.uri()))?;
    let head: serde_json::Value =
        serde_json::from_slice(&head).map_err(|e| damaged(e.to_string()))?;
    let (pieces, size) = (
        head["pieces"].as_u64().unwrap_or(0),
        head["size"].as_u64().unwrap_or(0),
    );
    if size as usize > MAX_PACKAGE_BYTES || pieces > (MAX_PACKAGE_BYTES / PIECE_BYTES + 1) as u64 {
        return Err(damaged(format!(
            "its header claims {size} bytes in {pieces} pieces"
        )));
    }
    let mut data = Vec::with_capacity(size as usize);
    for i in 0..pieces {
        let piece = gcs
            .kv_get(NAMESPACE, name.key(&i.to_string()))
            .await
            .map_err(fail)?;
        data.extend(piece.ok_or_else(|| damaged(format!("piece {i} is missing")))?);
    }
    if data.len() as u64 != size {
        return Err(damaged(format!("{} of {size} bytes", data.len())));
    }
    Ok(data)
}

/// The folder holding `name` unpacked under `root` (made once per content; a
/// package's name is its hash).
pub async fn unpacked(gcs: &Gcs, name: &PackageName, root: &Path) -> Result<PathBuf, PackageError> {
    let dest = root.join(name.stem());
    if dest.is_dir() {
        return Ok(dest);
    }
    let data = fetch(gcs, name).await?;
    let (name2, root2, dest2) = (name.clone(), root.to_path_buf(), dest.clone());
    tokio::task::spawn_blocking(move || unpack(&name2, &data, &root2, &dest2))
        .await
        .map_err(|e| PackageError::Damaged {
            name: name.uri(),
            why: format!("unpacking stopped: {e}"),
        })??;
    Ok(dest)
}

fn unpack(name: &PackageName, data: &[u8], root: &Path, dest: &Path) -> Result<(), PackageError> {
    let io_err = |error| PackageError::Unpack {
        name: name.uri(),
        dir: root.to_path_buf(),
        error,
    };
    let damaged = |why: String| PackageError::Damaged {
        name: name.uri(),
        why,
    };
    std::fs::create_dir_all(root).map_err(io_err)?;
    let tmp = root.join(format!(
        ".{}.{}",
        name.stem(),
        ray_common::ids::random_hex(4)
    ));
    let result = (|| {
        let mut zip =
            zip::ZipArchive::new(std::io::Cursor::new(data)).map_err(|e| damaged(e.to_string()))?;
        let mut total: u64 = 0;
        for i in 0..zip.len() {
            let mut entry = zip.by_index(i).map_err(|e| damaged(e.to_string()))?;
            let rel = entry.enclosed_name().ok_or_else(|| {
                damaged(format!(
                    "it holds a path outside its folder: {:?}",
                    entry.name()
                ))
            })?;
            let target = tmp.join(rel);
            if entry.is_dir() {
                std::fs::create_dir_all(&target).map_err(io_err)?;
                continue;
            }
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(io_err)?;
            }
            let mut body = Vec::new();
            // Bounded: a zip bomb stops at the package limit.
            (&mut entry)
                .take(MAX_PACKAGE_BYTES as u64 + 1)
                .read_to_end(&mut body)
                .map_err(|e| damaged(e.to_string()))?;
            total += body.len() as u64;
            if total > MAX_PACKAGE_BYTES as u64 {
                return Err(damaged(format!(
                    "it unpacks to more than {MAX_PACKAGE_BYTES} bytes"
                )));
            }
            std::fs::write(&target, &body).map_err(io_err)?;
            if let Some(mode) = entry.unix_mode() {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(
                    &target,
                    std::fs::Permissions::from_mode((mode & 0o777) | 0o600),
                );
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    std::fs::create_dir_all(&tmp).map_err(io_err)?;
    if std::fs::rename(&tmp, dest).is_err() {
        // Another job unpacked the same content first.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(())
}

/// How long a package upload may wait for the GCS.
pub const UPLOAD_PATIENCE: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(PackageName::from_parts("gcs", "_ray_pkg_0a1b2c.zip").is_ok());
        assert_eq!(
            PackageName::from_uri("gcs://_ray_pkg_ab.zip")
                .unwrap()
                .uri(),
            "gcs://_ray_pkg_ab.zip"
        );
        for bad in [
            "_ray_pkg_.zip",
            "_ray_pkg_a/../b.zip",
            "x.zip",
            "_ray_pkg_a.tar",
            "_ray_pkg_a b.zip",
        ] {
            assert!(PackageName::from_parts("gcs", bad).is_err(), "{bad}");
        }
        assert!(PackageName::from_parts("s3", "_ray_pkg_a.zip").is_err());
        let e = PackageName::from_uri("/home/me/project")
            .unwrap_err()
            .to_string();
        assert!(e.contains("must be uploaded"), "{e}");
    }

    fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        use std::io::Write;
        let mut buf = std::io::Cursor::new(Vec::new());
        {
            let mut z = zip::ZipWriter::new(&mut buf);
            for (name, body) in files {
                z.start_file(
                    *name,
                    zip::write::SimpleFileOptions::default().unix_permissions(0o644),
                )
                .unwrap();
                z.write_all(body).unwrap();
            }
            z.finish().unwrap();
        }
        buf.into_inner()
    }

    #[test]
    fn unpacks_into_its_folder_and_refuses_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let name = PackageName::from_parts("gcs", "_ray_pkg_abc.zip").unwrap();
        let data = zip_of(&[("main.py", b"print(1)"), ("pkg/helper.py", b"X = 1")]);
        let dest = dir.path().join("_ray_pkg_abc");
        unpack(&name, &data, dir.path(), &dest).unwrap();
        assert_eq!(std::fs::read(dest.join("pkg/helper.py")).unwrap(), b"X = 1");
        let evil = zip_of(&[("../evil.py", b"x")]);
        let e = unpack(&name, &evil, dir.path(), &dir.path().join("_ray_pkg_evil"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("outside its folder"), "{e}");
        assert!(!dir.path().join("evil.py").exists());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    }
}
