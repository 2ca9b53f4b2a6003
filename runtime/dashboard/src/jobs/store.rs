//! Job records in the GCS KV (namespace `job`, one JSON value per submission),
//! so they outlive the dashboard process and, with a persistent GCS, a GCS
//! restart.

use std::time::Duration;

use super::model::JobRecord;
use crate::gcs::Gcs;

const NAMESPACE: &str = "job";
const PREFIX: &[u8] = b"_ray_internal_job_info_";

/// How long a change of a job's record waits for an unreachable GCS.
const WRITE_PATIENCE: Duration = Duration::from_secs(60);

/// The table of submitted jobs.
#[derive(Clone)]
pub struct JobStore {
    gcs: Gcs,
}

fn key(id: &str) -> Vec<u8> {
    [PREFIX, id.as_bytes()].concat()
}

impl JobStore {
    /// Over `gcs`.
    pub fn new(gcs: Gcs) -> Self {
        Self { gcs }
    }

    /// Writes a record.
    pub async fn put(&self, job: &JobRecord) -> Result<(), tonic::Status> {
        let body = serde_json::to_vec(job).map_err(|e| tonic::Status::internal(e.to_string()))?;
        self.gcs
            .kv_put(NAMESPACE, key(&job.submission_id), body, WRITE_PATIENCE)
            .await
    }

    /// Writes a record, giving up after `limit` (shutdown must not wait for a GCS
    /// that is away).
    pub async fn put_within(&self, job: &JobRecord, limit: Duration) -> Result<(), tonic::Status> {
        tokio::time::timeout(limit, self.put(job))
            .await
            .unwrap_or_else(|_| {
                Err(tonic::Status::deadline_exceeded(format!(
                    "the GCS did not answer within {limit:?}"
                )))
            })
    }

    /// One record by submission id.
    pub async fn get(&self, id: &str) -> Result<Option<JobRecord>, tonic::Status> {
        let raw = self.gcs.kv_get(NAMESPACE, key(id)).await?;
        Ok(raw.and_then(|b| decode(id.as_bytes(), &b)))
    }

    /// Every record, oldest submission first.
    pub async fn list(&self) -> Result<Vec<JobRecord>, tonic::Status> {
        let mut jobs: Vec<JobRecord> = self
            .gcs
            .kv_scan(NAMESPACE, PREFIX)
            .await?
            .into_iter()
            .filter_map(|(k, v)| decode(&k, &v))
            .collect();
        jobs.sort_by(|a, b| {
            a.start_time
                .cmp(&b.start_time)
                .then_with(|| a.submission_id.cmp(&b.submission_id))
        });
        Ok(jobs)
    }

    /// Forgets a record.
    pub async fn delete(&self, id: &str) -> Result<(), tonic::Status> {
        self.gcs.kv_del(NAMESPACE, key(id)).await
    }
}

/// A record, or `None` (logged) for one that does not decode.
fn decode(key: &[u8], body: &[u8]) -> Option<JobRecord> {
    match serde_json::from_slice(body) {
        Ok(j) => Some(j),
        Err(e) => {
            tracing::warn!(key = %String::from_utf8_lossy(key), error = %e, "skipping a job record that does not decode");
            None
        }
    }
}
