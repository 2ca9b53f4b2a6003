//! Commands over SSH with the system `ssh` and `rsync`: the user's ssh config,
//! agent and keys work as they do in a terminal. One control connection per node
//! is shared by the commands of an update (ControlMaster), and host keys are not
//! pinned, since a cloud's addresses are reused by new machines (as Ray does).

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::{
    CommandRunner, OutputTo, RunError, RunOptions, SyncFilters, login_shell, private_dir, quote,
    run_local, with_env,
};

/// The cluster's `auth` section, as the runner needs it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SshAuth {
    /// `ssh_user`.
    pub user: String,
    /// `ssh_private_key` (expanded); `None` lets ssh use the agent and ssh config.
    pub private_key: Option<PathBuf>,
    /// `ssh_proxy_command`.
    pub proxy_command: Option<String>,
}

impl SshAuth {
    /// From a cluster config's `auth` section (`ssh_user`, `ssh_private_key`,
    /// `ssh_proxy_command`); a key path's `~` is expanded.
    pub fn from_config(auth: &serde_json::Value) -> Self {
        let text = |k: &str| auth.get(k).and_then(|v| v.as_str()).map(str::to_string).filter(|s| !s.is_empty());
        Self {
            user: text("ssh_user").unwrap_or_default(),
            private_key: text("ssh_private_key").map(|p| PathBuf::from(crate::hash::expand_home(&p))),
            proxy_command: text("ssh_proxy_command"),
        }
    }
}

/// Runs commands on one node over SSH.
#[derive(Debug, Clone)]
pub struct SshRunner {
    auth: SshAuth,
    host: String,
    /// Where the control sockets live; `None` when no private folder could be
    /// made (then each command connects on its own).
    control_dir: Option<PathBuf>,
}

/// Seconds ssh may take to connect for an ordinary command.
const CONNECT_TIMEOUT_S: u64 = 60;

fn short_hash(s: &str) -> String {
    let d = Sha256::digest(s.as_bytes());
    d.iter().take(5).map(|b| format!("{b:02x}")).collect()
}

impl SshRunner {
    /// A runner for `host` (an IP or name) of cluster `cluster_name`.
    pub fn new(auth: SshAuth, host: impl Into<String>, cluster_name: &str) -> Self {
        // In /tmp and short: the socket path (with ssh's %C hash and its temporary
        // suffix) must fit in 104 bytes whatever TMPDIR is. Per local user, and
        // private to them: whoever can plant a socket there gets the sessions.
        // SAFETY: geteuid cannot fail and touches no memory.
        let uid = unsafe { libc::geteuid() };
        let dir = PathBuf::from("/tmp")
            .join(format!("ray_ssh_{uid}_{}", short_hash(&auth.user)))
            .join(short_hash(cluster_name));
        let control_dir = match dir
            .parent()
            .map_or(Ok(()), |p| private_dir(p, uid))
            .and_then(|()| private_dir(&dir, uid))
        {
            Ok(()) => Some(dir),
            Err(why) => {
                tracing::warn!(dir = %dir.display(), %why, "not sharing SSH connections (no private folder for the control sockets)");
                None
            }
        };
        Self {
            auth,
            host: host.into(),
            control_dir,
        }
    }

    /// The node's address.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// ssh's options (without the program name or the target).
    fn options(&self, connect_timeout: u64) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(k) = &self.auth.private_key {
            v.extend(["-i".to_string(), k.display().to_string(), "-o".into(), "IdentitiesOnly=yes".into()]);
        }
        let mut o = |k: &str, val: String| v.extend(["-o".to_string(), format!("{k}={val}")]);
        o("StrictHostKeyChecking", "no".into());
        o("UserKnownHostsFile", "/dev/null".into());
        o("LogLevel", "ERROR".into());
        o("ExitOnForwardFailure", "yes".into());
        o("ServerAliveInterval", "5".into());
        o("ServerAliveCountMax", "3".into());
        o("ConnectTimeout", format!("{connect_timeout}s"));
        if let Some(dir) = &self.control_dir {
            o("ControlMaster", "auto".into());
            o("ControlPath", format!("{}/%C", dir.display()));
            o("ControlPersist", "10s".into());
        }
        if let Some(p) = &self.auth.proxy_command {
            o("ProxyCommand", p.clone());
        }
        v
    }

    fn destination(&self) -> String {
        if self.auth.user.is_empty() { self.host.clone() } else { format!("{}@{}", self.auth.user, self.host) }
    }

    /// ssh's argv. `tty` gives the command a terminal, as Ray's runner does:
    /// when ssh ends (killed, timed out, the autoscaler stopped) the node's
    /// commands get SIGHUP instead of running on unseen. `prompts` lets ssh ask
    /// for passwords and passphrases (only in an interactive session).
    fn ssh_argv(
        &self,
        remote: Option<String>,
        port_forward: &[u16],
        connect_timeout: u64,
        tty: bool,
        prompts: bool,
    ) -> Vec<String> {
        let mut argv = vec!["ssh".to_string()];
        if tty {
            argv.push("-tt".into());
        }
        if !prompts {
            argv.extend(["-o".to_string(), "BatchMode=yes".into()]);
        }
        for p in port_forward {
            argv.extend(["-L".to_string(), format!("{p}:localhost:{p}")]);
        }
        argv.extend(self.options(connect_timeout));
        argv.extend(["--".to_string(), self.destination()]);
        if let Some(r) = remote {
            argv.push(r);
        }
        argv
    }

    /// The remote side of a command: a login shell running it with `env`.
    fn remote(command: &str, env: &[(String, String)]) -> String {
        login_shell(&with_env(command, env)).iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ")
    }

    /// `rsync -e "ssh ..."` argv with `source` and `target` already spelled.
    fn rsync_argv(&self, filters: &SyncFilters, source: String, target: String) -> Vec<String> {
        let rsh = ["ssh", "-o", "BatchMode=yes"]
            .into_iter()
            .map(str::to_string)
            .chain(self.options(CONNECT_TIMEOUT_S))
            .map(|a| quote(&a))
            .collect::<Vec<_>>()
            .join(" ");
        let mut argv = vec!["rsync".to_string(), "--rsh".into(), rsh, "-az".into()];
        argv.extend(filters.args());
        argv.extend(["--".to_string(), source, target]);
        argv
    }

    async fn rsync(&self, argv: Vec<String>, log: &OutputTo) -> Result<(), RunError> {
        let done = run_local(&argv, log, None).await?;
        match done.code {
            Some(0) => Ok(()),
            Some(255) => Err(RunError::Unreachable { target: self.destination(), message: done.text.trim().to_string() }),
            code => Err(RunError::Failed { target: self.destination(), command: argv.join(" "), code: code.unwrap_or(-1), tail: done.text }),
        }
    }

    /// Waits until the node accepts SSH and runs a command, retrying with back-off
    /// while it boots; gives up at `deadline` with the last error.
    async fn ready(&self, deadline: tokio::time::Instant, log: &OutputTo) -> Result<(), RunError> {
        let mut backoff = Duration::from_millis(500);
        loop {
            let argv = self.ssh_argv(Some("uptime".into()), &[], 10, false, false);
            let done = run_local(&argv, &OutputTo::Capture, Some(Duration::from_secs(20))).await?;
            let err = match done.code {
                Some(0) => return Ok(()),
                Some(255) | None => RunError::Unreachable { target: self.destination(), message: last_line(&done.text) },
                Some(code) => RunError::Failed { target: self.destination(), command: "uptime".into(), code, tail: done.text },
            };
            super::log_line(log, &format!("waiting for SSH on {}: {err}", self.destination())).await;
            let now = tokio::time::Instant::now();
            if now + backoff > deadline {
                return Err(err);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

fn last_line(s: &str) -> String {
    s.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or("no answer").to_string()
}

#[async_trait]
impl CommandRunner for SshRunner {
    fn target(&self) -> String {
        self.destination()
    }

    async fn run(&self, command: &str, opts: &RunOptions) -> Result<String, RunError> {
        // Queries (captured output) read a clean stdout; everything else runs
        // with a terminal, so it stops when ssh does.
        let tty = !matches!(opts.output, OutputTo::Capture);
        let argv = self.ssh_argv(
            Some(Self::remote(command, &opts.env)),
            &opts.port_forward,
            CONNECT_TIMEOUT_S,
            tty,
            false,
        );
        let done = run_local(&argv, &opts.output, opts.timeout).await?;
        match done.code {
            Some(0) => Ok(done.stdout),
            Some(255) => Err(RunError::Unreachable {
                target: self.destination(),
                message: last_line(&done.text),
            }),
            Some(code) => Err(RunError::Failed {
                target: self.destination(),
                command: command.to_string(),
                code,
                tail: done.text,
            }),
            None => Err(RunError::Timeout {
                target: self.destination(),
                command: command.to_string(),
                after: opts.timeout.unwrap_or_default(),
            }),
        }
    }

    async fn rsync_up(&self, source: &str, target: &str, filters: &SyncFilters, log: &OutputTo) -> Result<(), RunError> {
        // The target folder must exist for rsync to create the file in it.
        if let Some(parent) = std::path::Path::new(target).parent().map(|p| p.display().to_string())
            && !parent.is_empty()
        {
            self.run(&format!("mkdir -p {}", home_quoted(&parent)), &RunOptions { output: log.clone(), ..RunOptions::captured(Duration::from_secs(120)) })
                .await?;
        }
        let argv = self.rsync_argv(filters, source.to_string(), format!("{}:{}", self.destination(), target));
        self.rsync(argv, log).await
    }

    async fn rsync_down(&self, source: &str, target: &str, filters: &SyncFilters, log: &OutputTo) -> Result<(), RunError> {
        let argv = self.rsync_argv(filters, format!("{}:{}", self.destination(), source), target.to_string());
        self.rsync(argv, log).await
    }

    fn interactive(&self, command: Option<&str>, port_forward: &[u16]) -> Vec<String> {
        self.ssh_argv(
            command.map(|c| Self::remote(c, &[])),
            port_forward,
            CONNECT_TIMEOUT_S,
            true,
            true,
        )
    }

    async fn wait_ready(&self, deadline: tokio::time::Instant, log: &OutputTo) -> Result<(), RunError> {
        self.ready(deadline, log).await
    }
}

/// A remote path for the shell, leaving a leading `~` unquoted so it expands.
fn home_quoted(path: &str) -> String {
    match path.strip_prefix("~/") {
        Some(rest) => format!("~/{}", quote(rest)),
        None if path == "~" => "~".into(),
        None => quote(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_uses_the_key_when_given_and_a_short_control_path() {
        let auth = SshAuth { user: "ubuntu".into(), private_key: Some("/k/id".into()), proxy_command: None };
        let r = SshRunner::new(auth, "10.0.0.5", "my-cluster");
        let argv = r.ssh_argv(Some("uptime".into()), &[8265], 10, false, false);
        assert_eq!(argv[0], "ssh");
        assert!(argv.windows(2).any(|w| w == ["-L", "8265:localhost:8265"]));
        assert!(argv.windows(2).any(|w| w == ["-i", "/k/id"]));
        assert!(argv.contains(&"ConnectTimeout=10s".to_string()));
        assert_eq!(
            argv[argv.len() - 2..],
            ["ubuntu@10.0.0.5".to_string(), "uptime".to_string()]
        );
        assert!(
            argv.contains(&"BatchMode=yes".to_string()),
            "no prompts outside a terminal session"
        );
        let cp = argv.iter().find(|a| a.starts_with("ControlPath=")).unwrap();
        assert!(cp.len() < 60, "{cp}");
        // The sockets' folder is the user's alone.
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::path::Path::new(cp.trim_start_matches("ControlPath="))
            .parent()
            .unwrap();
        assert_eq!(
            std::fs::metadata(dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        // No key: ssh's own config and agent decide.
        let r = SshRunner::new(
            SshAuth {
                user: "u".into(),
                ..Default::default()
            },
            "h",
            "c",
        );
        assert!(
            !r.ssh_argv(None, &[], 10, false, false)
                .iter()
                .any(|a| a == "-i" || a == "IdentitiesOnly=yes")
        );
    }

    #[test]
    fn a_control_folder_someone_else_can_write_is_not_used() {
        use std::os::unix::fs::PermissionsExt as _;
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("shared");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        // SAFETY: geteuid cannot fail.
        let uid = unsafe { libc::geteuid() };
        let e = private_dir(&dir, uid).unwrap_err();
        assert!(e.contains("closed to others"), "{e}");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(private_dir(&dir, uid).is_ok());
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(
            private_dir(&link, uid).is_err(),
            "a symlink planted in its place"
        );
        assert!(private_dir(&dir, uid + 1).is_err(), "another user's folder");
    }

    #[test]
    fn remote_commands_run_in_a_login_shell_with_their_environment() {
        let remote = SshRunner::remote("ray start --head", &[("RAY_HEAD_IP".into(), "10.0.0.1".into())]);
        assert!(remote.starts_with("bash --login -c "), "{remote}");
        assert!(remote.contains("export RAY_HEAD_IP=10.0.0.1; ray start --head"), "{remote}");
        assert_eq!(home_quoted("~/a b"), "~/'a b'");
    }
}
