//! One job's life: reserve its entrypoint resources, unpack its working_dir,
//! run `sh -c <entrypoint>` in a process group of its own with its output in
//! `job-driver-<id>.log`, and record each state in the job table. A stop sends
//! SIGTERM to the group and SIGKILL after the grace period.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use ray_common::process;
use ray_common::session::{self, ProcessRecord};
use ray_proto::rpc::GetAllJobInfoRequest;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::model::{ERROR_ENTRYPOINT, ERROR_SETUP, JobRecord, JobStatus};
use super::{JobsContext, log_path, reserve};
use crate::packages::{self, PackageName};

/// The variable a driver reads its job's runtime_env and metadata from (Ray's).
pub const JOB_CONFIG_ENV: &str = "RAY_JOB_CONFIG_JSON_ENV_VAR";

/// How long the last writes of a job stopped at shutdown wait for the GCS.
const SHUTDOWN_PATIENCE: Duration = Duration::from_millis(500);

/// How much of the log's end a FAILED job's message carries.
const MESSAGE_LOG_BYTES: usize = 4000;

/// Why a stop was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `POST /api/jobs/<id>/stop`.
    Request,
    /// The dashboard is shutting down (`ray stop`).
    Shutdown,
}

impl StopReason {
    fn message(self) -> &'static str {
        match self {
            Self::Request => "Job was stopped on request.",
            Self::Shutdown => "Job was stopped because the dashboard shut down (ray stop).",
        }
    }
}

/// Supervises `job` (already stored as PENDING) until it ends. `stop` is
/// cancelled to stop it; `reason` then says why.
pub async fn supervise(
    ctx: Arc<JobsContext>,
    mut job: JobRecord,
    stop: CancellationToken,
    reason: Arc<std::sync::Mutex<StopReason>>,
) {
    let id = job.submission_id.clone();
    let why_stopped = || reason.lock().map(|r| *r).unwrap_or(StopReason::Request);
    let end = run(&ctx, &mut job, &stop, &why_stopped).await;
    // At shutdown (`ray stop`) the GCS may be gone already: wait for it briefly.
    let patience = if why_stopped() == StopReason::Shutdown {
        SHUTDOWN_PATIENCE
    } else {
        Duration::from_secs(60)
    };
    if let Some(pg) = job.placement_group_id.take() {
        let _ = tokio::time::timeout(patience, reserve::release(&ctx.gcs, &pg)).await;
    }
    let (status, message, error_type, code) = end;
    job.status = status;
    job.message = Some(message);
    job.error_type = error_type.map(str::to_string);
    job.driver_exit_code = code;
    job.end_time = Some(ray_common::time::now_ms());
    tracing::info!(submission_id = %id, status = status.as_str(), exit_code = ?code, "job ended");
    if let Err(s) = ctx.store.put_within(&job, patience).await {
        tracing::error!(submission_id = %id, error = %s.message(), "cannot record the job's end in the GCS");
    }
    ctx.job_ended.notify_waiters();
}

type End = (JobStatus, String, Option<&'static str>, Option<i32>);

async fn run(
    ctx: &JobsContext,
    job: &mut JobRecord,
    stop: &CancellationToken,
    why_stopped: &(dyn Fn() -> StopReason + Sync),
) -> End {
    let stopped = |r: StopReason| (JobStatus::Stopped, r.message().to_string(), None, None);
    let shape = job.entrypoint_shape();
    if !shape.is_empty() {
        let desc = shape
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ");
        job.message = Some(format!(
            "Waiting for the entrypoint resources {{{desc}}} to be reserved."
        ));
        let _ = ctx.store.put(job).await;
        match reserve::reserve(&ctx.gcs, &job.submission_id, &shape, stop).await {
            Ok(pg) => job.placement_group_id = Some(pg),
            Err(reserve::NotReserved::Stopped) => return stopped(why_stopped()),
            Err(reserve::NotReserved::Failed(m)) => {
                return (JobStatus::Failed, m, Some(ERROR_SETUP), None);
            }
        }
    }
    let cwd = match job.runtime_env.get("working_dir").and_then(Value::as_str) {
        None => None,
        Some(uri) => {
            let unpacked = async {
                let name = PackageName::from_uri(uri)?;
                packages::unpacked(&ctx.gcs, &name, &ctx.packages_dir).await
            };
            tokio::select! {
                () = stop.cancelled() => return stopped(why_stopped()),
                r = unpacked => match r {
                    Ok(dir) => Some(dir),
                    Err(e) => return (JobStatus::Failed, format!("runtime_env[\"working_dir\"]: {e}"), Some(ERROR_SETUP), None),
                },
            }
        }
    };
    let log = log_path(&ctx.logs_dir, &job.submission_id);
    let mut child = match spawn(ctx, job, cwd.as_deref(), &log) {
        Ok(c) => c,
        Err(m) => return (JobStatus::Failed, m, Some(ERROR_SETUP), None),
    };
    let pid = child.id().unwrap_or(0);
    let record = ProcessRecord {
        pid,
        start_ticks: process::start_time_ticks(pid).unwrap_or(0),
        name: "job_driver".into(),
        session: ctx.session_name.clone(),
    };
    if let Err(e) = session::register_process(&ctx.temp_root, &record) {
        tracing::warn!(pid, error = %e, "cannot record the driver for `ray stop`");
    }
    job.status = JobStatus::Running;
    job.driver_pid = Some(pid);
    job.driver_start_ticks = Some(record.start_ticks);
    job.driver_node_ip = Some(ctx.node_ip.clone());
    job.driver_agent_http_address = Some(ctx.dashboard_url.clone());
    job.message = Some("Job is currently running.".into());
    tracing::info!(submission_id = %job.submission_id, pid, log = %log.display(), "driver started");
    if let Err(s) = ctx.store.put(job).await {
        tracing::warn!(submission_id = %job.submission_id, error = %s.message(), "cannot record the job as RUNNING");
    }
    let mut look_for_job_id = tokio::time::interval(Duration::from_millis(500));
    let status = loop {
        tokio::select! {
            s = child.wait() => break s,
            () = stop.cancelled() => {
                let reason = why_stopped();
                terminate_group(pid, &mut child, ctx.stop_grace).await;
                session::unregister_process(&ctx.temp_root, pid);
                return stopped(reason);
            }
            _ = look_for_job_id.tick(), if job.job_id.is_none() => find_job_id(ctx, job, pid).await,
        }
    };
    // Whatever the driver left behind in its group goes with it.
    kill_group(pid, libc::SIGKILL);
    session::unregister_process(&ctx.temp_root, pid);
    match status {
        Ok(s) if s.success() => (
            JobStatus::Succeeded,
            "Job finished successfully.".into(),
            None,
            Some(0),
        ),
        Ok(s) => {
            use std::os::unix::process::ExitStatusExt;
            let tail = log_tail(&log).await;
            let (what, code) = match (s.code(), s.signal()) {
                (Some(c), _) => (format!("exit code {c}"), Some(c)),
                (None, Some(sig)) => (format!("signal {sig}"), Some(128 + sig)),
                _ => ("an unknown status".to_string(), None),
            };
            let message =
                format!("Job entrypoint command failed with {what}. The end of its log:\n{tail}");
            (JobStatus::Failed, message, Some(ERROR_ENTRYPOINT), code)
        }
        Err(e) => (
            JobStatus::Failed,
            format!("cannot wait for the driver: {e}"),
            Some(ERROR_ENTRYPOINT),
            None,
        ),
    }
}

/// Starts the driver: `sh -c <entrypoint>` leading a new process group.
fn spawn(
    ctx: &JobsContext,
    job: &JobRecord,
    cwd: Option<&std::path::Path>,
    log: &std::path::Path,
) -> Result<tokio::process::Child, String> {
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
    };
    let (out, err) = match (open(), open()) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            return Err(format!("cannot open the job's log {}: {e}", log.display()));
        }
    };
    let mut env_for_tasks = job.runtime_env.clone();
    env_for_tasks.remove("excludes");
    if let Some(dir) = cwd {
        // The driver ships the unpacked folder to its tasks as ray.init(runtime_env=...) does.
        env_for_tasks.insert(
            "working_dir".into(),
            Value::String(dir.display().to_string()),
        );
    }
    let mut metadata = job.metadata.clone();
    metadata.insert("job_submission_id".into(), job.submission_id.clone());
    let config = json!({ "runtime_env": env_for_tasks, "metadata": metadata });
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(&job.entrypoint)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .kill_on_drop(false);
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    // `python` is the interpreter next to this `ray` (the one with the ray package).
    if let Ok(exe) = process::current_exe()
        && let Some(bin) = exe.parent()
    {
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env(
            "PATH",
            if path.is_empty() {
                bin.display().to_string()
            } else {
                format!("{}:{path}", bin.display())
            },
        );
    }
    cmd.env("RAY_ADDRESS", &ctx.gcs_address)
        .env(JOB_CONFIG_ENV, config.to_string())
        .env("RAY_JOB_SUBMISSION_ID", &job.submission_id)
        .env("PYTHONUNBUFFERED", "1");
    if let Some(Value::Object(vars)) = job.runtime_env.get("env_vars") {
        for (k, v) in vars {
            if let Some(v) = v.as_str() {
                cmd.env(k, v);
            }
        }
    }
    cmd.spawn()
        .map_err(|e| format!("cannot start the entrypoint with /bin/sh: {e}"))
}

/// Signals the driver's process group (ignoring one that is gone).
fn kill_group(pgid: u32, sig: i32) {
    if pgid > 1 {
        // SAFETY: kill(2) on a process group this dashboard created; no memory is touched.
        unsafe {
            libc::kill(-(pgid as i32), sig);
        }
    }
}

/// SIGTERM to the group, SIGKILL after `grace`, then reaps the driver.
async fn terminate_group(pgid: u32, child: &mut tokio::process::Child, grace: Duration) {
    kill_group(pgid, libc::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        tracing::info!(
            pid = pgid,
            ?grace,
            "the driver did not exit after SIGTERM; killing its group"
        );
    }
    kill_group(pgid, libc::SIGKILL);
    let _ = child.wait().await;
}

/// Records the Ray job id the driver registered (its pid, or a child of its
/// shell in the same process group).
async fn find_job_id(ctx: &JobsContext, job: &mut JobRecord, pgid: u32) {
    let Ok(reply) = ctx
        .gcs
        .client()
        .jobs
        .clone()
        .get_all_job_info(GetAllJobInfoRequest {})
        .await
    else {
        return;
    };
    let found = reply
        .into_inner()
        .jobs
        .into_iter()
        .find(|j| !j.is_dead && process_group_of(j.driver_pid) == Some(pgid));
    if let Some(j) = found {
        job.job_id = Some(j.job_id);
        job.driver_node_id = Some(j.driver_node_id).filter(|n| !n.is_empty());
        let _ = ctx.store.put(job).await;
    }
}

fn process_group_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(2)?.parse().ok()
}

/// The end of a log, for a FAILED job's message.
async fn log_tail(path: &std::path::Path) -> String {
    let data = tokio::fs::read(path).await.unwrap_or_default();
    let from = data.len().saturating_sub(MESSAGE_LOG_BYTES);
    String::from_utf8_lossy(&data[from..]).into_owned()
}

/// Stops a driver this dashboard no longer supervises (it was started by an
/// earlier dashboard process): its group, if that process still runs.
pub fn kill_orphan(pid: u32, start_ticks: Option<u64>) -> bool {
    let alive = match start_ticks {
        Some(t) if t != 0 => process::is_same_process_alive(pid, t),
        _ => false,
    };
    if alive {
        kill_group(pid, libc::SIGKILL);
    }
    alive
}
