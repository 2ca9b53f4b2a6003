//! The HTTP side of `ray job`: which dashboard to talk to, the cluster token
//! as `Authorization: Bearer`, and errors that name the address and the flag.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Where `ray job` sends requests when nothing says otherwise (Ray's default).
pub const DEFAULT_ADDRESS: &str = "http://127.0.0.1:8265";

/// A connection to one dashboard.
pub struct JobClient {
    http: reqwest::Client,
    /// `http(s)://host:port`, without a trailing slash.
    pub address: String,
    /// Where the address came from, for error messages.
    source: &'static str,
    token: Option<String>,
}

/// `--address`, else `RAY_ADDRESS` when it is an http(s) URL, else the
/// dashboard of the cluster started on this machine, else Ray's default.
pub fn resolve_address(flag: Option<&str>) -> (String, &'static str) {
    let (raw, source) = if let Some(a) = flag.map(str::trim).filter(|a| !a.is_empty()) {
        (a.to_string(), "--address")
    } else if let Some(a) = std::env::var("RAY_ADDRESS")
        .ok()
        .map(|a| a.trim().to_string())
        .filter(|a| a.starts_with("http://") || a.starts_with("https://"))
    {
        (a, "RAY_ADDRESS")
    } else if let Some(a) = crate::start_dashboard::read(&ray_common::session::temp_root(None)) {
        (a, "the cluster started on this machine")
    } else {
        (DEFAULT_ADDRESS.to_string(), "the default address")
    };
    let with_scheme = if raw.contains("://") {
        raw
    } else {
        format!("http://{raw}")
    };
    (with_scheme.trim_end_matches('/').to_string(), source)
}

impl JobClient {
    /// A client for `--address` (or what stands in for it).
    pub fn new(flag: Option<&str>) -> Result<Self> {
        let (address, source) = resolve_address(flag);
        if !(address.starts_with("http://") || address.starts_with("https://")) {
            bail!(
                "{source} {address:?}: expected an http:// or https:// address of the dashboard, e.g. {DEFAULT_ADDRESS}"
            );
        }
        let token = match ray_common::auth::AuthConfig::from_env() {
            Ok(cfg) => cfg.token.map(|t| t.expose_secret().to_string()),
            // No token anywhere: a cluster with authentication off still answers.
            Err(ray_common::auth::AuthError::NotFound) => None,
            Err(e) => return Err(anyhow!(e)),
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        Ok(Self {
            http,
            address,
            source,
            token,
        })
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, format!("{}{path}", self.address));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        r
    }

    /// Sends a request; returns the status and body, or an error naming the address.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Body>,
        timeout: Duration,
    ) -> Result<(StatusCode, String)> {
        let mut req = self.request(method.clone(), path).timeout(timeout);
        req = match body {
            Some(Body::Json(v)) => req.json(&v),
            Some(Body::Bytes(b)) => req.body(b),
            None => req,
        };
        let resp = req.send().await.map_err(|e| {
            anyhow!(
                "cannot reach the Ray dashboard at {} ({}): {}. Check that the head node runs (`ray start --head`) \
                 and that --address (or RAY_ADDRESS) names its dashboard, e.g. {DEFAULT_ADDRESS}",
                self.address,
                self.source,
                ray_common::rpc::error_chain(&e)
            )
        })?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if status == StatusCode::UNAUTHORIZED {
            bail!(
                "the Ray dashboard at {} refused the request (401): {}\n{}",
                self.address,
                text.trim(),
                ray_common::auth::WHERE_TOKENS_COME_FROM
            );
        }
        Ok((status, text))
    }

    /// A request whose answer must be 200 with a JSON body.
    pub async fn json(&self, method: Method, path: &str, body: Option<Body>) -> Result<Value> {
        let (status, text) = self
            .send(method.clone(), path, body, Duration::from_secs(60))
            .await?;
        if status != StatusCode::OK {
            bail!("{}", text.trim());
        }
        serde_json::from_str(&text)
            .with_context(|| format!("{method} {}{path} did not answer JSON", self.address))
    }

    /// Checks that the address is a Ray dashboard.
    pub async fn check(&self) -> Result<()> {
        let v = self
            .json(Method::GET, "/api/version", None)
            .await
            .map_err(|e| {
                anyhow!("{e:#}").context(format!(
                    "{} ({}) is not a Ray dashboard",
                    self.address, self.source
                ))
            })?;
        if v.get("version").is_none() {
            bail!(
                "{} ({}) is not a Ray dashboard: /api/version answered {v}",
                self.address,
                self.source
            );
        }
        Ok(())
    }

    /// Prints a job's log as it is written until the job ends (websocket for
    /// http://, reading the whole log again each second for https://).
    pub async fn follow_logs(&self, id: &str, out: &mut impl std::io::Write) -> Result<()> {
        let path = format!("/api/jobs/{}/logs/tail", urlencode(id));
        if let Some(rest) = self.address.strip_prefix("http://") {
            use tokio_tungstenite::tungstenite::client::IntoClientRequest;
            let mut req = format!("ws://{rest}{path}").into_client_request()?;
            if let Some(t) = &self.token {
                req.headers_mut()
                    .insert("authorization", format!("Bearer {t}").parse()?);
            }
            let (mut ws, _) = tokio_tungstenite::connect_async(req).await.map_err(|e| {
                anyhow!(
                    "cannot follow the logs of job {id} at {}: {e}",
                    self.address
                )
            })?;
            while let Some(msg) = ws.next().await {
                match msg? {
                    tokio_tungstenite::tungstenite::Message::Text(t) => {
                        out.write_all(t.as_bytes())?;
                        out.flush()?;
                    }
                    tokio_tungstenite::tungstenite::Message::Close(_) => break,
                    _ => {}
                }
            }
            return Ok(());
        }
        let mut printed = 0usize;
        loop {
            let info = self
                .json(Method::GET, &format!("/api/jobs/{}", urlencode(id)), None)
                .await?;
            let logs = self
                .json(
                    Method::GET,
                    &format!("/api/jobs/{}/logs", urlencode(id)),
                    None,
                )
                .await?;
            let text = logs["logs"].as_str().unwrap_or_default();
            if text.len() > printed && text.is_char_boundary(printed) {
                out.write_all(&text.as_bytes()[printed..])?;
                out.flush()?;
                printed = text.len();
            }
            if matches!(
                info["status"].as_str(),
                Some("SUCCEEDED" | "FAILED" | "STOPPED")
            ) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// A request body.
pub enum Body {
    /// JSON.
    Json(Value),
    /// Raw bytes (a package).
    Bytes(Vec<u8>),
}

/// Percent-encodes a path segment.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
