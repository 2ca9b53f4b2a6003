//! The dashboard's GCS access: one lazily connected client, and calls retried
//! while the GCS is unreachable (restarting), so a GCS restart delays the
//! dashboard instead of failing it.

use std::future::Future;
use std::time::Duration;

use ray_common::gcs_client::GcsClient;
use tonic::{Code, Status};

/// How long a call retries by default before its error is returned.
pub const DEFAULT_PATIENCE: Duration = Duration::from_secs(20);

/// The cluster's GCS.
#[derive(Clone)]
pub struct Gcs {
    client: GcsClient,
}

/// Whether `s` means "the GCS is not there right now" (worth waiting for).
pub fn is_transient(s: &Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
    )
}

impl Gcs {
    /// Wraps a client.
    pub fn new(client: GcsClient) -> Self {
        Self { client }
    }

    /// The client itself (for calls that are not retried).
    pub fn client(&self) -> &GcsClient {
        &self.client
    }

    /// Runs `call` until it succeeds, fails with a non-transient error, or
    /// `patience` has passed. `what` names the call in the log.
    pub async fn retry<T, F, Fut>(
        &self,
        what: &'static str,
        patience: Duration,
        mut call: F,
    ) -> Result<T, Status>
    where
        F: FnMut(GcsClient) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let start = tokio::time::Instant::now();
        let mut delay = Duration::from_millis(100);
        let mut warned = false;
        loop {
            match call(self.client.clone()).await {
                Ok(v) => {
                    if warned {
                        tracing::info!(call = what, after = ?start.elapsed(), "the GCS answers again");
                    }
                    return Ok(v);
                }
                Err(s) if is_transient(&s) && start.elapsed() + delay < patience => {
                    if !warned {
                        tracing::warn!(call = what, gcs = self.client.addr(), error = %s.message(), "the GCS is unreachable; retrying");
                        warned = true;
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                Err(s) => return Err(s),
            }
        }
    }

    /// KV get, retried.
    pub async fn kv_get(&self, ns: &'static str, key: Vec<u8>) -> Result<Option<Vec<u8>>, Status> {
        self.retry("kv_get", DEFAULT_PATIENCE, |c| {
            let key = key.clone();
            async move { c.kv_get(ns, &key).await }
        })
        .await
    }

    /// KV put (overwriting), retried for `patience`.
    pub async fn kv_put(
        &self,
        ns: &'static str,
        key: Vec<u8>,
        value: Vec<u8>,
        patience: Duration,
    ) -> Result<(), Status> {
        self.retry("kv_put", patience, |c| {
            let (key, value) = (key.clone(), value.clone());
            async move { c.kv_put(ns, &key, value).await }
        })
        .await
    }

    /// KV delete, retried.
    pub async fn kv_del(&self, ns: &'static str, key: Vec<u8>) -> Result<(), Status> {
        self.retry("kv_del", DEFAULT_PATIENCE, |c| {
            let key = key.clone();
            async move { c.kv_del(ns, &key).await }
        })
        .await
    }

    /// Every (key, value) under `prefix`, retried.
    pub async fn kv_scan(
        &self,
        ns: &'static str,
        prefix: &'static [u8],
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, Status> {
        self.retry("kv_scan", DEFAULT_PATIENCE, |c| async move {
            let keys = c.kv_keys(ns, prefix).await?;
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            c.kv_multi_get(ns, &keys).await
        })
        .await
    }
}
