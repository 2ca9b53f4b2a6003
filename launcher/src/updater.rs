//! The node updater: brings one node up to date, as Ray's updater does. It waits
//! for SSH, syncs the file mounts, runs the initialization and setup commands and
//! then the commands that start Ray, moving the node's status tag along
//! (`waiting-for-ssh`, `syncing-files`, `setting-up`, then `up-to-date` or
//! `update-failed`). Everything the commands print goes to the node's own log.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use ray_providers::node_status;

use crate::runner::{CommandRunner, OutputTo, RunError, RunOptions, SyncFilters, log_line};

/// What to do on a node.
#[derive(Debug, Clone, Default)]
pub struct UpdatePlan {
    /// `remote path -> local path` to copy before the commands.
    pub file_mounts: Vec<(String, String)>,
    /// rsync excludes and filters.
    pub filters: SyncFilters,
    /// `initialization_commands` (run first, once per machine).
    pub initialization_commands: Vec<String>,
    /// Setup commands (`setup_commands` merged with the head's or the workers').
    pub setup_commands: Vec<String>,
    /// Commands that (re)start Ray.
    pub start_commands: Vec<String>,
    /// Exported for the start commands (`RAY_HEAD_IP`, `RAY_CLOUD_INSTANCE_ID`, ...).
    pub start_env: Vec<(String, String)>,
    /// Copy the file mounts and run the initialization and setup commands (false
    /// when the node is already set up with the same runtime hash).
    pub set_up: bool,
    /// Run the start commands.
    pub start: bool,
}

/// Hears where an update stands: the provider's status tag and the launcher's
/// progress lines.
#[async_trait]
pub trait UpdateObserver: Send + Sync {
    /// The node's status changed (one of [`node_status`]).
    async fn status(&self, status: &'static str);
    /// A step began (`running setup command 2/5: ...`).
    fn step(&self, message: &str);
}

/// Why an update failed: the step and what went wrong there.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{step}: {error}")]
pub struct UpdateError {
    /// The step (`waiting for SSH`, `syncing ~/app`, `setup command 2`, ...).
    pub step: String,
    /// What happened.
    pub error: RunError,
}

/// How long a node may take to answer SSH: Ray's `AUTOSCALER_NODE_START_WAIT_S`
/// (default 300 s here; Ray's is 900 s).
pub fn ssh_wait() -> Duration {
    // At most a day: a larger value would overflow the deadline's arithmetic.
    let s = std::env::var("AUTOSCALER_NODE_START_WAIT_S")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0);
    Duration::from_secs_f64(s.unwrap_or(300.0).min(86_400.0))
}

/// Brings a node up to date. On failure the status is `update-failed` and the
/// error names the step; the node's log holds the output.
pub async fn update(plan: &UpdatePlan, runner: &dyn CommandRunner, observer: &dyn UpdateObserver, log: &OutputTo) -> Result<(), UpdateError> {
    let t0 = Instant::now();
    log_line(log, &format!("==> updating {} ({} setup, {} start)", runner.target(), yes_no(plan.set_up), yes_no(plan.start))).await;
    let result = steps(plan, runner, observer, log).await;
    match &result {
        Ok(()) => {
            observer.status(node_status::UP_TO_DATE).await;
            log_line(log, &format!("==> up to date after {:.1} s", t0.elapsed().as_secs_f64())).await;
        }
        Err(e) => {
            observer.status(node_status::UPDATE_FAILED).await;
            log_line(log, &format!("==> update failed after {:.1} s: {e}", t0.elapsed().as_secs_f64())).await;
        }
    }
    result
}

fn yes_no(b: bool) -> &'static str {
    if b { "with" } else { "without" }
}

async fn steps(plan: &UpdatePlan, runner: &dyn CommandRunner, observer: &dyn UpdateObserver, log: &OutputTo) -> Result<(), UpdateError> {
    if runner.is_remote() {
        observer.status(node_status::WAITING_FOR_SSH).await;
        observer.step("waiting for SSH");
        let deadline = tokio::time::Instant::now() + ssh_wait();
        runner.wait_ready(deadline, log).await.map_err(|error| UpdateError { step: "waiting for SSH".into(), error })?;
    }
    if plan.set_up {
        observer.status(node_status::SYNCING_FILES).await;
        for (remote, local) in &plan.file_mounts {
            let step = format!("syncing {local} to {remote}");
            observer.step(&step);
            log_line(log, &format!("--> {step}")).await;
            let source = crate::hash::expand_home(local);
            // A folder's contents go into the target folder (rsync's trailing slash).
            let source = if std::path::Path::new(&source).is_dir() && !source.ends_with('/') {
                format!("{source}/")
            } else {
                source
            };
            // Keys and the token stay readable by their owner alone.
            let secret = [
                crate::bootstrap::HEAD_KEY_PATH,
                crate::cluster::TOKEN_PATH_ON_NODES,
            ]
            .contains(&remote.as_str());
            let filters = if secret {
                plan.filters.private()
            } else {
                plan.filters.clone()
            };
            runner
                .rsync_up(&source, remote, &filters, log)
                .await
                .map_err(|error| UpdateError { step, error })?;
        }
        observer.status(node_status::SETTING_UP).await;
        let setup = plan.initialization_commands.iter().map(|c| ("initialization command", c)).chain(plan.setup_commands.iter().map(|c| ("setup command", c)));
        run_all(setup, &[], runner, observer, log).await?;
    } else {
        observer.status(node_status::SETTING_UP).await;
        log_line(log, "--> already set up with this configuration; skipping file mounts, initialization and setup commands").await;
    }
    if plan.start {
        run_all(plan.start_commands.iter().map(|c| ("start command", c)), &plan.start_env, runner, observer, log).await?;
    }
    Ok(())
}

async fn run_all<'a>(
    commands: impl Iterator<Item = (&'static str, &'a String)>,
    env: &[(String, String)],
    runner: &dyn CommandRunner,
    observer: &dyn UpdateObserver,
    log: &OutputTo,
) -> Result<(), UpdateError> {
    let commands: Vec<_> = commands.collect();
    let n = commands.len();
    for (i, (what, command)) in commands.into_iter().enumerate() {
        let step = format!("{what} {}/{n}: {command}", i + 1);
        observer.step(&step);
        log_line(log, &format!("--> {step}")).await;
        let opts = RunOptions { env: env.to_vec(), output: log.clone(), timeout: None, port_forward: Vec::new() };
        runner.run(command, &opts).await.map_err(|error| UpdateError { step, error })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::runner::LocalRunner;

    #[derive(Default)]
    struct Seen(Mutex<Vec<String>>);

    #[async_trait]
    impl UpdateObserver for Seen {
        async fn status(&self, status: &'static str) {
            self.0.lock().unwrap().push(status.to_string());
        }
        fn step(&self, _message: &str) {}
    }

    #[tokio::test]
    async fn an_update_syncs_sets_up_and_starts_with_status_tags_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("a.txt"), "hello").unwrap();
        let dst = dir.path().join("dst");
        let out = dir.path().join("out");
        let plan = UpdatePlan {
            file_mounts: vec![(dst.display().to_string(), src.display().to_string())],
            setup_commands: vec![format!("cat {}/a.txt > {}", dst.display(), out.display())],
            start_commands: vec![format!("echo $RAY_HEAD_IP >> {}", out.display())],
            start_env: vec![("RAY_HEAD_IP".into(), "10.1.2.3".into())],
            set_up: true,
            start: true,
            ..Default::default()
        };
        let seen = Seen::default();
        let log = OutputTo::Log(dir.path().join("node.log"));
        update(&plan, &LocalRunner::new(), &seen, &log).await.unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "hello10.1.2.3\n");
        assert_eq!(*seen.0.lock().unwrap(), ["syncing-files", "setting-up", "up-to-date"], "no SSH to wait for on this machine");
    }

    #[tokio::test]
    async fn a_failing_setup_command_stops_there_and_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("started");
        let plan = UpdatePlan {
            setup_commands: vec!["true".into(), "echo no such package >&2; exit 7".into()],
            start_commands: vec![format!("touch {}", marker.display())],
            set_up: true,
            start: true,
            ..Default::default()
        };
        let seen = Seen::default();
        let log = OutputTo::Log(dir.path().join("node.log"));
        let e = update(&plan, &LocalRunner::new(), &seen, &log).await.unwrap_err();
        assert!(e.step.starts_with("setup command 2/2"), "{e}");
        assert!(e.to_string().contains("no such package"), "{e}");
        assert!(!marker.exists(), "nothing after the failing command runs");
        assert_eq!(seen.0.lock().unwrap().last().map(String::as_str), Some("update-failed"));
    }
}
