//! The jobs of this head: submit, look up, stop, delete, and the supervision
//! tasks of the running ones.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::driver::{self, StopReason};
use super::model::{ERROR_SUPERVISOR, JobRecord, JobStatus, SubmitRequest};
use super::{JobsContext, reserve};

/// Why a job request was refused.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("Job {0} does not exist")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("the GCS did not answer: {0}")]
    Gcs(String),
}

impl From<tonic::Status> for JobError {
    fn from(s: tonic::Status) -> Self {
        Self::Gcs(s.message().to_string())
    }
}

struct Running {
    stop: CancellationToken,
    reason: Arc<Mutex<StopReason>>,
}

/// Every job of this head.
pub struct JobManager {
    ctx: Arc<JobsContext>,
    running: Arc<Mutex<HashMap<String, Running>>>,
    tasks: TaskTracker,
    /// Serialises submissions, so two with one id cannot both be accepted.
    submit_lock: tokio::sync::Mutex<()>,
}

/// `raysubmit_` and 16 random letters and digits (Ray's form).
fn new_submission_id() -> String {
    const CHARS: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz123456789";
    let mut rng = rand::rng();
    let tail: String = (0..16)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect();
    format!("raysubmit_{tail}")
}

impl JobManager {
    /// A manager over `ctx`.
    pub fn new(ctx: JobsContext) -> Self {
        Self {
            ctx: Arc::new(ctx),
            running: Arc::default(),
            tasks: TaskTracker::new(),
            submit_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The shared context.
    pub fn context(&self) -> &JobsContext {
        &self.ctx
    }

    /// Marks jobs that an earlier dashboard process left PENDING or RUNNING as
    /// FAILED, stopping their drivers if they still run: nothing supervises them.
    pub async fn recover(&self) -> Result<(), JobError> {
        // No submission runs meanwhile, so every job found unended is an old one.
        let _no_submissions = self.submit_lock.lock().await;
        for mut job in self.ctx.store.list().await? {
            let ours = self
                .running
                .lock()
                .map(|r| r.contains_key(&job.submission_id))
                .unwrap_or(true);
            if job.status.is_terminal() || ours {
                continue;
            }
            let killed = job
                .driver_pid
                .is_some_and(|pid| driver::kill_orphan(pid, job.driver_start_ticks));
            if let Some(pg) = job.placement_group_id.take() {
                reserve::release(&self.ctx.gcs, &pg).await;
            }
            job.status = JobStatus::Failed;
            job.error_type = Some(ERROR_SUPERVISOR.into());
            job.message = Some(format!(
                "The dashboard restarted while this job was {}; nothing supervised it any more{}.",
                if job.driver_pid.is_some() {
                    "running"
                } else {
                    "pending"
                },
                if killed {
                    ", so its driver was stopped"
                } else {
                    ""
                }
            ));
            job.end_time = Some(ray_common::time::now_ms());
            tracing::warn!(submission_id = %job.submission_id, killed, "job left over by an earlier dashboard marked FAILED");
            self.ctx.store.put(&job).await?;
        }
        Ok(())
    }

    /// Accepts a job and starts supervising it; returns its submission id.
    pub async fn submit(&self, req: SubmitRequest) -> Result<String, JobError> {
        let _one_at_a_time = self.submit_lock.lock().await;
        let id = match req.submission_id {
            Some(id) => {
                if self.ctx.store.get(&id).await?.is_some() {
                    return Err(JobError::BadRequest(format!(
                        "a job with submission_id {id:?} already exists; choose another submission_id"
                    )));
                }
                id
            }
            None => new_submission_id(),
        };
        let job = JobRecord {
            submission_id: id.clone(),
            status: JobStatus::Pending,
            entrypoint: req.entrypoint,
            message: Some("Job has not started yet.".into()),
            error_type: None,
            start_time: Some(ray_common::time::now_ms()),
            end_time: None,
            metadata: req.metadata,
            runtime_env: req.runtime_env,
            entrypoint_num_cpus: req.entrypoint_num_cpus,
            entrypoint_num_gpus: req.entrypoint_num_gpus,
            entrypoint_memory: req.entrypoint_memory,
            entrypoint_resources: req.entrypoint_resources,
            driver_exit_code: None,
            driver_node_id: None,
            driver_agent_http_address: None,
            job_id: None,
            driver_pid: None,
            driver_start_ticks: None,
            driver_node_ip: None,
            placement_group_id: None,
        };
        self.ctx.store.put(&job).await?;
        tracing::info!(submission_id = %id, entrypoint = %job.entrypoint, "job submitted");
        let stop = CancellationToken::new();
        let reason = Arc::new(Mutex::new(StopReason::Request));
        if let Ok(mut running) = self.running.lock() {
            running.insert(
                id.clone(),
                Running {
                    stop: stop.clone(),
                    reason: reason.clone(),
                },
            );
        }
        let (ctx, running, key) = (self.ctx.clone(), self.running.clone(), id.clone());
        self.tasks.spawn(async move {
            driver::supervise(ctx, job, stop, reason).await;
            if let Ok(mut r) = running.lock() {
                r.remove(&key);
            }
        });
        Ok(id)
    }

    /// A job by submission id or by its driver's Ray job id.
    pub async fn find(&self, id: &str) -> Result<JobRecord, JobError> {
        if let Some(job) = self.ctx.store.get(id).await? {
            return Ok(job);
        }
        let all = self.ctx.store.list().await?;
        all.into_iter()
            .find(|j| j.job_id.as_deref() == Some(id))
            .ok_or_else(|| JobError::NotFound(id.to_string()))
    }

    /// Every job.
    pub async fn list(&self) -> Result<Vec<JobRecord>, JobError> {
        Ok(self.ctx.store.list().await?)
    }

    /// Asks a job to stop. `Ok(false)`: it had already ended.
    pub async fn stop(&self, id: &str) -> Result<bool, JobError> {
        let job = self.find(id).await?;
        if job.status.is_terminal() {
            return Ok(false);
        }
        let token = self
            .running
            .lock()
            .ok()
            .and_then(|r| r.get(&job.submission_id).map(|r| r.stop.clone()));
        match token {
            Some(t) => {
                tracing::info!(submission_id = %job.submission_id, "stopping job on request");
                t.cancel();
                Ok(true)
            }
            // Not supervised here (a record being written as we look): say so.
            None => Err(JobError::BadRequest(format!(
                "job {} is not supervised by this dashboard",
                job.submission_id
            ))),
        }
    }

    /// Forgets an ended job (its log file stays).
    pub async fn delete(&self, id: &str) -> Result<bool, JobError> {
        let job = self.find(id).await?;
        if !job.status.is_terminal() {
            return Err(JobError::BadRequest(format!(
                "job {} is {}; only a job that has ended can be deleted (stop it first)",
                job.submission_id,
                job.status.as_str()
            )));
        }
        self.ctx.store.delete(&job.submission_id).await?;
        tracing::info!(submission_id = %job.submission_id, "job deleted");
        Ok(true)
    }

    /// Stops every running job (the dashboard is shutting down) and waits for
    /// their supervisors to record it, at most the grace period and a margin.
    pub async fn shutdown(&self) {
        if let Ok(running) = self.running.lock() {
            for r in running.values() {
                if let Ok(mut why) = r.reason.lock() {
                    *why = StopReason::Shutdown;
                }
                r.stop.cancel();
            }
        }
        self.tasks.close();
        // `ray stop` gives the dashboard a quarter of its grace period (4 s by default).
        let limit = self.ctx.stop_grace + Duration::from_millis(800);
        if tokio::time::timeout(limit, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(?limit, "some jobs did not finish stopping before shutdown");
        }
    }
}
