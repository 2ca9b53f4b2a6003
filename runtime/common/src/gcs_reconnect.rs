//! Calls to a GCS that may be restarting. A supervised GCS is back within
//! seconds of dying, with its tables; until then its clients (raylets, drivers,
//! workers, the autoscaler) wait instead of failing: a unary call that cannot
//! reach the GCS, or that the GCS answers with UNAVAILABLE, is sent again with
//! back-off until `gcs_rpc_server_reconnect_timeout_s` (Ray's setting, 60 s)
//! has passed. The request is buffered for that (GCS requests are small).
//! Client-streaming calls go through as they are; their callers reconnect.
//!
//! A call cut off mid-flight by the GCS's death is sent again, so it may reach
//! the new GCS after the old one applied it: the GCS's handlers accept a
//! repeated registration, update or removal.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::BodyExt as _;
use tonic::body::Body;
use tower::{Service, ServiceExt as _};

use crate::rpc::Channel;

/// Paths whose request is a stream: not buffered, not retried here.
const STREAMING_REQUESTS: &[&str] = &["/ray.rpc.NodeResourceGcsService/ReportResources"];

type Response = <Channel as Service<http::Request<Body>>>::Response;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A GCS channel that rides out a GCS restart.
#[derive(Clone)]
pub struct Reconnecting {
    inner: Channel,
    patience: Duration,
    addr: std::sync::Arc<str>,
}

impl Reconnecting {
    /// Wraps `inner`; calls are retried for up to `patience`.
    pub fn new(inner: Channel, addr: &str, patience: Duration) -> Self {
        Self { inner, patience, addr: addr.into() }
    }
}

fn unavailable(resp: &Response) -> bool {
    resp.headers().get("grpc-status").is_some_and(|v| v.as_bytes() == b"14")
}

impl Service<http::Request<Body>> for Reconnecting {
    type Response = Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Readiness is awaited on a clone inside each call.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        let patience = self.patience;
        let addr = self.addr.clone();
        Box::pin(async move {
            if STREAMING_REQUESTS.contains(&req.uri().path()) {
                return Ok(inner.oneshot(req).await?);
            }
            let (parts, body) = req.into_parts();
            let bytes = body.collect().await.map_err(|s| Box::new(s) as BoxError)?.to_bytes();
            let start = Instant::now();
            let mut backoff = Duration::from_millis(50);
            let mut warned = false;
            loop {
                let mut b = http::Request::builder().method(parts.method.clone()).uri(parts.uri.clone()).version(parts.version);
                if let Some(h) = b.headers_mut() {
                    *h = parts.headers.clone();
                }
                let attempt = b.body(Body::new(http_body_util::Full::new(bytes.clone()))).map_err(|e| Box::new(e) as BoxError)?;
                let outcome = inner.clone().oneshot(attempt).await;
                let failure = match &outcome {
                    Ok(resp) if !unavailable(resp) => return outcome.map_err(Into::into),
                    Ok(_) => "the GCS answered UNAVAILABLE".to_string(),
                    Err(e) => crate::rpc::error_chain(e),
                };
                if start.elapsed() + backoff > patience {
                    return outcome.map_err(Into::into);
                }
                if !warned {
                    warned = true;
                    crate::logging::warn_rate_limited(format_args!(
                        "the GCS at {addr} cannot be reached ({failure}); retrying {} for up to {patience:?} \
                         (gcs_rpc_server_reconnect_timeout_s) while it restarts",
                        parts.uri.path()
                    ));
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        })
    }
}
