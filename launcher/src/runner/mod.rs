//! Running commands on a node: over SSH with the system `ssh` and `rsync` (so a
//! user's ssh config, agent and keys work), or on this machine for the
//! local-process provider. Commands run in a login shell with the cluster's
//! environment exported, as Ray's command runner runs them.

mod local;
mod ssh;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;

pub use local::LocalRunner;
pub use ssh::{SshAuth, SshRunner};

/// Why a command on a node did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RunError {
    /// The node could not be reached (ssh exits 255 on connection failures).
    #[error("cannot reach {target}: {message}")]
    Unreachable {
        /// `user@host`, or "this machine".
        target: String,
        /// What ssh said.
        message: String,
    },
    /// The command ran and failed.
    #[error("`{command}` failed on {target} with exit code {code}{}", tail_suffix(.tail))]
    Failed {
        /// `user@host`, or "this machine".
        target: String,
        /// The command, as the user wrote it.
        command: String,
        /// Its exit code (-1 when killed by a signal).
        code: i32,
        /// The last lines it printed.
        tail: String,
    },
    /// It did not finish in time.
    #[error("`{command}` on {target} did not finish within {} s", .after.as_secs())]
    Timeout {
        /// `user@host`, or "this machine".
        target: String,
        /// The command.
        command: String,
        /// The limit.
        after: Duration,
    },
    /// The local program (`ssh`, `rsync`, `bash`) could not be started.
    #[error("cannot run {program}: {message}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        message: String,
    },
}

fn tail_suffix(tail: &str) -> String {
    if tail.trim().is_empty() { String::new() } else { format!(":\n{}", tail.trim_end()) }
}

/// Where a command's output goes.
#[derive(Debug, Clone)]
pub enum OutputTo {
    /// The caller's terminal (`ray exec`, `ray submit`).
    Terminal,
    /// Appended to a log file; the last lines are kept for error messages.
    Log(PathBuf),
    /// Captured and returned.
    Capture,
}

/// How to run one command.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Variables exported before the command.
    pub env: Vec<(String, String)>,
    /// Where the output goes.
    pub output: OutputTo,
    /// Longest time the command may take; `None` for no limit.
    pub timeout: Option<Duration>,
    /// Ports forwarded from this machine to the node's localhost (`ray exec --port-forward`).
    pub port_forward: Vec<u16>,
}

impl RunOptions {
    /// Output to `log`, no time limit, no extra environment.
    pub fn logged(log: &Path) -> Self {
        Self { env: Vec::new(), output: OutputTo::Log(log.to_path_buf()), timeout: None, port_forward: Vec::new() }
    }

    /// Output captured, with a time limit.
    pub fn captured(timeout: Duration) -> Self {
        Self { env: Vec::new(), output: OutputTo::Capture, timeout: Some(timeout), port_forward: Vec::new() }
    }

    /// Output to the terminal, no time limit.
    pub fn terminal() -> Self {
        Self { env: Vec::new(), output: OutputTo::Terminal, timeout: None, port_forward: Vec::new() }
    }
}

/// rsync's `rsync_exclude` and `rsync_filter` settings from the cluster config.
#[derive(Debug, Clone, Default)]
pub struct SyncFilters {
    /// Patterns passed as `--exclude`.
    pub exclude: Vec<String>,
    /// Per-directory filter files (e.g. `.gitignore`), as `--filter 'dir-merge,- NAME'`.
    pub filter: Vec<String>,
    /// Copies are readable by their owner alone, whatever the source's mode
    /// (keys and the cluster token).
    pub private: bool,
}

impl SyncFilters {
    /// The same filters, for a secret: the copy gets mode 0600.
    pub fn private(&self) -> Self {
        Self {
            private: true,
            ..self.clone()
        }
    }

    fn args(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.private {
            v.push("--chmod=D700,F600".to_string());
        }
        for e in &self.exclude {
            v.extend(["--exclude".to_string(), e.clone()]);
        }
        for f in &self.filter {
            v.extend(["--filter".to_string(), format!("dir-merge,- {f}")]);
        }
        v
    }
}

/// Runs commands and copies files on one node.
#[async_trait]
pub trait CommandRunner: Send + Sync {
    /// Where commands run, for messages (`root@10.0.0.2`, `this machine`).
    fn target(&self) -> String;

    /// Runs `command` in a login shell there. Returns what it printed when the
    /// output is captured (else an empty string).
    async fn run(&self, command: &str, opts: &RunOptions) -> Result<String, RunError>;

    /// Copies a local file or folder to `target` on the node (rsync semantics:
    /// a trailing `/` on `source` copies the folder's contents).
    async fn rsync_up(&self, source: &str, target: &str, filters: &SyncFilters, log: &OutputTo) -> Result<(), RunError>;

    /// Copies `source` on the node to a local `target`.
    async fn rsync_down(&self, source: &str, target: &str, filters: &SyncFilters, log: &OutputTo) -> Result<(), RunError>;

    /// argv of an interactive session there (`ray attach`), running `command`
    /// when given.
    fn interactive(&self, command: Option<&str>, port_forward: &[u16]) -> Vec<String>;

    /// True when commands cross the network (SSH): the updater then waits for
    /// the node to answer first.
    fn is_remote(&self) -> bool {
        true
    }

    /// Waits until the node can run commands (a booting VM answers SSH), until
    /// `deadline`. This machine is always ready.
    async fn wait_ready(&self, _deadline: tokio::time::Instant, _log: &OutputTo) -> Result<(), RunError> {
        Ok(())
    }
}

/// `export K=V;` for each variable, then the command; values are shell-quoted.
pub fn with_env(command: &str, env: &[(String, String)]) -> String {
    let mut s = String::new();
    for (k, v) in env {
        s.push_str(&format!("export {k}={}; ", quote(v)));
    }
    s.push_str(command);
    s
}

/// A string quoted for a POSIX shell.
pub fn quote(s: &str) -> String {
    shlex::try_quote(s).map(|c| c.into_owned()).unwrap_or_else(|_| format!("'{}'", s.replace('\0', "").replace('\'', "'\\''")))
}

/// The command in a login shell, as Ray runs it: `~/.bashrc` is read (conda and
/// virtualenv set-ups live there) and threads are kept to one per process.
pub fn login_shell(command: &str) -> Vec<String> {
    let inner = format!("source ~/.bashrc >/dev/null 2>&1; export OMP_NUM_THREADS=1 PYTHONWARNINGS=ignore && ({command})");
    vec!["bash".into(), "--login".into(), "-c".into(), inner]
}

/// Makes the folder `dir` (its parent must exist) owned by `uid` and closed to
/// everyone else, or says why it is not: in a shared `/tmp`, another user could
/// have made it first (or put a symlink there).
pub(crate) fn private_dir(dir: &Path, uid: u32) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
    }
    let m = std::fs::symlink_metadata(dir)
        .map_err(|e| format!("cannot inspect {}: {e}", dir.display()))?;
    if !m.is_dir() || m.uid() != uid || m.mode() & 0o077 != 0 {
        return Err(format!(
            "{} is not a folder of this user's, closed to others",
            dir.display()
        ));
    }
    Ok(())
}

/// How a local program ended.
pub(crate) struct Finished {
    /// Exit code; `None` when it ran past its time limit (it was killed).
    pub code: Option<i32>,
    /// Captured output (stdout and stderr), or the last lines it wrote to its
    /// log: for error messages.
    pub text: String,
    /// Captured stdout alone: what a query answers.
    pub stdout: String,
}

/// Runs a local program (bash, ssh, rsync) with output sent where `output` says
/// (and, for the terminal, input read from it). Dropping the future kills it.
pub(crate) async fn run_local(
    argv: &[String],
    output: &OutputTo,
    timeout: Option<Duration>,
) -> Result<Finished, RunError> {
    let (program, args) = argv.split_first().ok_or_else(|| RunError::Spawn {
        program: String::new(),
        message: "empty command".into(),
    })?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).stdin(Stdio::null()).kill_on_drop(true);
    let log_file = match output {
        OutputTo::Terminal => {
            cmd.stdin(Stdio::inherit())
                .stdout(Stdio::inherit())
                .stderr(Stdio::inherit());
            None
        }
        OutputTo::Capture => {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            None
        }
        OutputTo::Log(path) => {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| RunError::Spawn { program: program.clone(), message: format!("cannot open the log {}: {e}", path.display()) })?;
            let start = f.metadata().map(|m| m.len()).unwrap_or(0);
            let err = f.try_clone().map_err(|e| RunError::Spawn { program: program.clone(), message: e.to_string() })?;
            cmd.stdout(Stdio::from(f)).stderr(Stdio::from(err));
            Some((path.clone(), start))
        }
    };
    let child = cmd.spawn().map_err(|e| RunError::Spawn { program: program.clone(), message: e.to_string() })?;
    let waited = child.wait_with_output();
    let out = match timeout {
        Some(t) => match tokio::time::timeout(t, waited).await {
            Ok(r) => r,
            Err(_) => {
                return Ok(Finished {
                    code: None,
                    text: String::new(),
                    stdout: String::new(),
                });
            }
        },
        None => waited.await,
    }
    .map_err(|e| RunError::Spawn { program: program.clone(), message: e.to_string() })?;
    let code = out.status.code().unwrap_or(-1);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let text = match (output, log_file) {
        (OutputTo::Capture, _) => format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
        (_, Some((path, start))) => log_tail(&path, start),
        _ => String::new(),
    };
    Ok(Finished {
        code: Some(code),
        text,
        stdout,
    })
}

/// How much of a log's end is read for its last lines.
const TAIL_BYTES: u64 = 16 * 1024;

/// The last lines written to `path` after byte `start` (read from its end only).
fn log_tail(path: &Path, start: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let from = start.max(len.saturating_sub(TAIL_BYTES)).min(len);
    let mut bytes = Vec::new();
    if f.seek(SeekFrom::Start(from)).is_err() || f.read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&bytes).replace('\r', "");
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Appends a line to a node's log (steps and errors, between command outputs).
pub async fn log_line(output: &OutputTo, line: &str) {
    if let OutputTo::Log(path) = output
        && let Ok(mut f) = tokio::fs::OpenOptions::new().create(true).append(true).open(path).await
    {
        let _ = f.write_all(format!("{line}\n").as_bytes()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_values_are_quoted_for_the_shell() {
        let cmd = with_env("ray start", &[("RAY_HEAD_IP".into(), "10.0.0.1".into()), ("X".into(), "a b'c".into())]);
        assert_eq!(cmd, "export RAY_HEAD_IP=10.0.0.1; export X=\"a b'c\"; ray start");
    }

    #[test]
    fn rsync_filters_become_excludes_and_dir_merges() {
        let f = SyncFilters {
            exclude: vec!["**/.git".into()],
            filter: vec![".gitignore".into()],
            private: false,
        };
        assert_eq!(
            f.args(),
            ["--exclude", "**/.git", "--filter", "dir-merge,- .gitignore"]
        );
        assert_eq!(f.private().args()[0], "--chmod=D700,F600");
    }

    #[tokio::test]
    async fn a_failing_local_command_reports_its_code_and_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("node.log");
        let r = LocalRunner::new().run("echo setting up; echo broken >&2; exit 3", &RunOptions::logged(&log)).await;
        let e = r.unwrap_err();
        assert!(matches!(&e, RunError::Failed { code: 3, .. }), "{e}");
        assert!(e.to_string().contains("broken"), "{e}");
        assert!(std::fs::read_to_string(&log).unwrap().contains("setting up"));
    }
}
