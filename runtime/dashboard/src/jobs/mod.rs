//! Submitted jobs: their records, the supervision of their drivers, and the
//! resources their entrypoints reserve.

pub mod driver;
pub mod manager;
pub mod model;
pub mod reserve;
pub mod store;

use std::path::PathBuf;
use std::time::Duration;

use crate::gcs::Gcs;

/// What every job's supervision needs to know about the cluster and this head.
pub struct JobsContext {
    /// The GCS.
    pub gcs: Gcs,
    /// The job table.
    pub store: store::JobStore,
    /// `RAY_ADDRESS` for drivers (the GCS's host:port).
    pub gcs_address: String,
    /// `<session>/logs`, where `job-driver-<id>.log` files go.
    pub logs_dir: PathBuf,
    /// Where `working_dir` packages are unpacked.
    pub packages_dir: PathBuf,
    /// The temp root (`ray stop` finds drivers recorded under it).
    pub temp_root: PathBuf,
    /// The session's name.
    pub session_name: String,
    /// This head's address, as drivers report it.
    pub node_ip: String,
    /// The dashboard's URL (`driver_agent_http_address`).
    pub dashboard_url: String,
    /// How long a stopped driver gets between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// Woken whenever a job's end is recorded (log followers wait on it).
    pub job_ended: tokio::sync::Notify,
}

/// The log file of a job's driver (Ray's name).
pub fn log_path(logs_dir: &std::path::Path, submission_id: &str) -> PathBuf {
    logs_dir.join(format!("job-driver-{submission_id}.log"))
}
