//! The function table: pickled functions stored in the GCS KV under
//! `<job>:<function id>`, written once by the driver, read by workers.

use ray_common::JobId;

use crate::context::Context;
use crate::error::CoreError;

/// KV namespace of exported functions.
const NAMESPACE: &str = "fun";

fn key(job: &JobId, id: &[u8]) -> Vec<u8> {
    [job.as_str().as_bytes(), b":", id].concat()
}

/// Stores a pickled function of this worker's job.
pub(crate) async fn export(ctx: &Context, id: &[u8], body: Vec<u8>) -> Result<(), CoreError> {
    ctx.gcs.kv_put(NAMESPACE, &key(&ctx.job_id, id), body).await.map_err(|s| CoreError::Rpc(s.message().to_string()))
}

/// Reads a pickled function of `job`.
pub(crate) async fn fetch(ctx: &Context, job: &JobId, id: &[u8]) -> Result<Vec<u8>, CoreError> {
    ctx.gcs
        .kv_get(NAMESPACE, &key(job, id))
        .await
        .map_err(|s| CoreError::Rpc(s.message().to_string()))?
        .ok_or_else(|| CoreError::FunctionNotFound { job: job.clone(), function: id.iter().map(|b| format!("{b:02x}")).collect() })
}
