//! Prometheus file-based service discovery, as Ray's head writes it: every
//! metrics endpoint of the cluster in `<session>/prom_metrics_service_discovery.json`
//! (`[{"labels": {"job": "ray"}, "targets": ["ip:port", ...]}]`), with a link
//! to it at `<temp root>/prom_metrics_service_discovery.json`, where Ray's
//! stock Prometheus config looks.
//!
//! The targets are the GCS's own endpoint, each alive raylet's
//! (`node_manager_address:metrics_export_port` from the node table), and the
//! addresses the autoscaler and the dashboard put in the internal KV
//! (`AutoscalerMetricsAddress`, `DashboardMetricsAddress`, Ray's keys). The file
//! is rewritten when a node joins or leaves and checked every few seconds (the
//! KV has no change stream); it is replaced atomically, so Prometheus never
//! reads half a file.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ray_proto::rpc::Channel;
use tokio_util::sync::CancellationToken;

use crate::Gcs;

/// Ray's file name.
pub const FILE_NAME: &str = "prom_metrics_service_discovery.json";

/// KV keys (namespace "") under which other daemons register their endpoint.
pub const KV_KEYS: [&str; 2] = ["AutoscalerMetricsAddress", "DashboardMetricsAddress"];

/// How often the file is checked when nothing in the node table changed (Ray's period).
pub const PERIOD: Duration = Duration::from_secs(5);

/// Where the file goes.
#[derive(Debug, Clone)]
pub struct DiscoveryFiles {
    /// The session folder: the file itself.
    pub session_dir: PathBuf,
    /// The temp root: a link to it, where Ray's stock config looks.
    pub temp_root: PathBuf,
}

impl DiscoveryFiles {
    /// The file in the session.
    pub fn file(&self) -> PathBuf {
        self.session_dir.join(FILE_NAME)
    }

    /// The link at the temp root.
    pub fn link(&self) -> PathBuf {
        self.temp_root.join(FILE_NAME)
    }
}

/// The file's content for these targets.
pub fn content(targets: &[String]) -> String {
    serde_json::json!([{ "labels": { "job": "ray" }, "targets": targets }]).to_string()
}

/// Every metrics endpoint the GCS knows now: its own first, then alive raylets,
/// then the KV's.
pub async fn targets(gcs: &Gcs, own: &str) -> Vec<String> {
    let mut out = vec![own.to_string()];
    {
        let st = gcs.state();
        for n in st.nodes() {
            let port = n.info.metrics_export_port;
            if n.is_alive() && port > 0 && port <= u32::from(u16::MAX) {
                let ip = &n.info.node_manager_address;
                out.push(if ip.contains(':') {
                    format!("[{ip}]:{port}")
                } else {
                    format!("{ip}:{port}")
                });
            }
        }
    }
    for key in KV_KEYS {
        match gcs
            .store()
            .get(&crate::services::kv_table(""), key.as_bytes())
            .await
        {
            Ok(Some(v)) => match String::from_utf8(v) {
                Ok(addr) if !addr.is_empty() && addr.len() < 300 => out.push(addr),
                _ => tracing::warn!(
                    key,
                    "ignoring a metrics address in the KV that is not a host:port"
                ),
            },
            Ok(None) => {}
            Err(e) => tracing::warn!(key, error = %e, "cannot read a metrics address from the KV"),
        }
    }
    out.dedup();
    out
}

/// Writes `body` to the session's file (through a temporary file and a rename)
/// and points the temp root's link at it.
pub fn write(files: &DiscoveryFiles, body: &str) -> std::io::Result<()> {
    let file = files.file();
    let tmp = files.session_dir.join(format!("tmp_{FILE_NAME}"));
    std::fs::write(&tmp, body)?;
    std::fs::rename(&tmp, &file)?;
    let link = files.link();
    if std::fs::read_link(&link).ok().as_deref() != Some(file.as_path()) {
        let tmp_link = files.temp_root.join(format!("tmp_{FILE_NAME}"));
        let _ = std::fs::remove_file(&tmp_link);
        std::os::unix::fs::symlink(&file, &tmp_link)?;
        std::fs::rename(&tmp_link, &link)?;
    }
    Ok(())
}

/// Keeps the file current until `shutdown`. `own` is the GCS's metrics address.
pub async fn run(gcs: Arc<Gcs>, files: DiscoveryFiles, own: String, shutdown: CancellationToken) {
    let mut changes = gcs.subscribe();
    let mut last = String::new();
    loop {
        let body = content(&targets(&gcs, &own).await);
        if body != last {
            let (f, b) = (files.clone(), body.clone());
            match tokio::task::spawn_blocking(move || write(&f, &b)).await {
                Ok(Ok(())) => {
                    tracing::debug!(file = %files.file().display(), targets = %body, "wrote the Prometheus service discovery file");
                    last = body;
                }
                Ok(Err(e)) => {
                    tracing::warn!(file = %files.file().display(), error = %e, "cannot write the Prometheus service discovery file")
                }
                Err(e) => tracing::warn!(error = %e, "the service discovery writer failed"),
            }
        }
        let deadline = tokio::time::sleep(PERIOD);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                _ = shutdown.cancelled() => return,
                ev = changes.recv() => match ev {
                    Ok(e) if e.channel == Channel::Nodes as i32 => break,
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_rays_format_and_the_temp_root_links_to_it() {
        let root = tempfile::tempdir().unwrap();
        let session = root.path().join("session_x");
        std::fs::create_dir_all(&session).unwrap();
        let files = DiscoveryFiles {
            session_dir: session.clone(),
            temp_root: root.path().to_path_buf(),
        };
        write(
            &files,
            &content(&["10.0.0.1:8080".into(), "10.0.0.1:44217".into()]),
        )
        .unwrap();
        write(&files, &content(&["10.0.0.1:8080".into()])).unwrap();
        let read: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(files.link()).unwrap()).unwrap();
        assert_eq!(
            read,
            serde_json::json!([{"labels": {"job": "ray"}, "targets": ["10.0.0.1:8080"]}])
        );
        assert_eq!(
            std::fs::read_link(files.link()).unwrap(),
            session.join(FILE_NAME)
        );
    }
}
