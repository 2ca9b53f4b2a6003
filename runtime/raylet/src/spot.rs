//! Spot interruption: on an EC2 spot instance, EC2 posts a notice two minutes
//! before it takes the instance back (`/latest/meta-data/spot/instance-action`
//! of the instance metadata service). The raylet polls for it and, when it comes,
//! asks the GCS to drain its own node (reason PREEMPTION, deadline the notice's
//! time): no new work is placed here, and the autoscaler, which sees the node
//! draining, launches a replacement while this one still runs.
//!
//! The metadata service is `AWS_EC2_METADATA_SERVICE_ENDPOINT` when set (as the
//! AWS SDKs read it; tests point it at their own server), else EC2's own
//! address, polled only when this machine is an EC2 instance.
//! `AWS_EC2_METADATA_DISABLED=true` turns the watch off.

use std::sync::Arc;
use std::time::Duration;

use ray_proto::rpc::autoscaler::{DrainNodeReason, DrainNodeRequest};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::Raylet;

/// The metadata endpoint variable the AWS SDKs read.
pub const ENDPOINT_ENV: &str = "AWS_EC2_METADATA_SERVICE_ENDPOINT";
const EC2_ENDPOINT: &str = "http://169.254.169.254";

/// Where to ask for notices, or `None` when this is not an EC2 instance.
pub fn metadata_endpoint() -> Option<String> {
    if std::env::var("AWS_EC2_METADATA_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true")) {
        return None;
    }
    if let Ok(e) = std::env::var(ENDPOINT_ENV)
        && !e.is_empty()
    {
        return Some(e.trim_end_matches('/').to_string());
    }
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let on_ec2 = read("/sys/devices/virtual/dmi/id/sys_vendor").trim() == "Amazon EC2" || read("/sys/hypervisor/uuid").starts_with("ec2");
    on_ec2.then(|| EC2_ENDPOINT.to_string())
}

/// A notice: what EC2 will do and when (RFC 3339).
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    /// `terminate`, `stop` or `hibernate`.
    pub action: String,
    /// When.
    pub time: String,
}

/// One HTTP/1.1 request to the metadata service (plain HTTP on a link-local or
/// loopback address); returns the status and the body.
async fn http(method: &str, url: &str, headers: &[(&str, &str)]) -> std::io::Result<(u16, String)> {
    let rest = url.strip_prefix("http://").ok_or_else(|| std::io::Error::other(format!("{url}: only http:// is supported")))?;
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
    // `host`, `host:port`, `[v6]` or `[v6]:port`.
    let has_port = match host.rfind(']') {
        Some(end) => host[end..].contains(':'),
        None => host.contains(':'),
    };
    let addr = if has_port { host.to_string() } else { format!("{host}:80") };
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(&addr))
        .await
        .map_err(|_| std::io::Error::other(format!("{addr}: connect timed out")))??;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: 0\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.take(64 * 1024).read_to_end(&mut buf))
        .await
        .map_err(|_| std::io::Error::other("metadata service: read timed out"))??;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| std::io::Error::other("metadata service: bad reply"))?;
    Ok((status, body.to_string()))
}

/// Asks for a notice (IMDSv2: a session token first, then the document).
pub async fn poll(endpoint: &str) -> std::io::Result<Option<Notice>> {
    let (code, token) = http("PUT", &format!("{endpoint}/latest/api/token"), &[("X-aws-ec2-metadata-token-ttl-seconds", "300")]).await?;
    let token = if code == 200 { token.trim().to_string() } else { String::new() };
    let headers: Vec<(&str, &str)> = if token.is_empty() { Vec::new() } else { vec![("X-aws-ec2-metadata-token", token.as_str())] };
    let (code, body) = http("GET", &format!("{endpoint}/latest/meta-data/spot/instance-action"), &headers).await?;
    if code != 200 {
        return Ok(None);
    }
    let v: serde_json::Value = serde_json::from_str(body.trim()).map_err(|e| std::io::Error::other(format!("metadata service: {e}")))?;
    Ok(Some(Notice {
        action: v.get("action").and_then(|a| a.as_str()).unwrap_or("terminate").to_string(),
        time: v.get("time").and_then(|a| a.as_str()).unwrap_or_default().to_string(),
    }))
}

/// Polls until a notice comes, then drains this node through the GCS.
pub async fn watch(r: Arc<Raylet>, endpoint: String) {
    let period = Duration::from_millis(r.config.spot_interruption_poll_ms.max(100));
    tracing::info!(endpoint = %endpoint, period_ms = period.as_millis() as u64, "watching for spot interruption notices");
    let notice = loop {
        tokio::select! {
            _ = r.shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        match poll(&endpoint).await {
            Ok(Some(n)) => break n,
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "spot notice poll failed"),
        }
    };
    let deadline_ms = chrono::DateTime::parse_from_rfc3339(&notice.time).map(|t| t.timestamp_millis().max(0) as u64).unwrap_or(0);
    let message = format!("spot interruption notice: EC2 will {} this instance at {}", notice.action, notice.time);
    tracing::warn!(action = %notice.action, time = %notice.time, "spot interruption notice received; draining this node");
    let req = DrainNodeRequest {
        node_id: r.node_id.to_string(),
        reason: DrainNodeReason::Preemption as i32,
        reason_message: message,
        deadline_timestamp_ms: deadline_ms,
    };
    match r.gcs.autoscaler.clone().drain_node(req).await {
        Ok(reply) if reply.get_ref().is_accepted => tracing::info!("drain for the spot interruption accepted"),
        Ok(reply) => tracing::warn!(why = %reply.get_ref().rejection_reason_message, "drain for the spot interruption refused"),
        Err(s) => tracing::warn!(error = %s.message(), "cannot ask the GCS to drain this node"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_notice_is_read_with_an_imdsv2_token() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            for reply in ["HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntok", "HTTP/1.1 200 OK\r\n\r\n{\"action\": \"stop\", \"time\": \"2026-12-02T01:02:03Z\"}"] {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap();
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                if reply.ends_with("tok") {
                    assert!(req.starts_with("PUT /latest/api/token"), "{req}");
                } else {
                    assert!(req.starts_with("GET /latest/meta-data/spot/instance-action") && req.contains("X-aws-ec2-metadata-token: tok"), "{req}");
                }
                s.write_all(reply.as_bytes()).await.unwrap();
            }
        });
        let n = poll(&format!("http://{addr}")).await.unwrap().unwrap();
        assert_eq!(n, Notice { action: "stop".into(), time: "2026-12-02T01:02:03Z".into() });
    }
}
