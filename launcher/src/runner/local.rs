//! Commands on this machine, for the local-process provider: the same login
//! shell and environment as over SSH, without the SSH.

use async_trait::async_trait;

use super::{CommandRunner, OutputTo, RunError, RunOptions, SyncFilters, login_shell, run_local, with_env};

/// Runs commands on this machine.
#[derive(Debug, Clone, Default)]
pub struct LocalRunner;

impl LocalRunner {
    /// A runner for this machine.
    pub fn new() -> Self {
        Self
    }

    async fn copy(&self, source: &str, target: &str, filters: &SyncFilters, log: &OutputTo) -> Result<(), RunError> {
        let target = crate::hash::expand_home(target);
        if let Some(dir) = std::path::Path::new(&target).parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let mut argv = vec!["rsync".to_string(), "-a".into()];
        argv.extend(filters.args());
        argv.extend([crate::hash::expand_home(source), target]);
        let done = run_local(&argv, log, None).await?;
        match done.code {
            Some(0) => Ok(()),
            code => Err(RunError::Failed { target: self.target(), command: argv.join(" "), code: code.unwrap_or(-1), tail: done.text }),
        }
    }
}

#[async_trait]
impl CommandRunner for LocalRunner {
    fn target(&self) -> String {
        "this machine".into()
    }

    fn is_remote(&self) -> bool {
        false
    }

    async fn run(&self, command: &str, opts: &RunOptions) -> Result<String, RunError> {
        // `ray` in the commands is this `ray` (whether or not its venv is active).
        let mut env = opts.env.clone();
        if let Some(dir) = ray_common::process::current_exe().ok().and_then(|p| p.parent().map(|d| d.display().to_string())) {
            env.insert(0, ("PATH".to_string(), format!("{dir}:{}", std::env::var("PATH").unwrap_or_default())));
        }
        let argv = login_shell(&with_env(command, &env));
        let done = run_local(&argv, &opts.output, opts.timeout).await?;
        match done.code {
            Some(0) => Ok(done.stdout),
            Some(code) => Err(RunError::Failed {
                target: self.target(),
                command: command.to_string(),
                code,
                tail: done.text,
            }),
            None => Err(RunError::Timeout {
                target: self.target(),
                command: command.to_string(),
                after: opts.timeout.unwrap_or_default(),
            }),
        }
    }

    async fn rsync_up(&self, source: &str, target: &str, filters: &SyncFilters, log: &OutputTo) -> Result<(), RunError> {
        self.copy(source, target, filters, log).await
    }

    async fn rsync_down(&self, source: &str, target: &str, filters: &SyncFilters, log: &OutputTo) -> Result<(), RunError> {
        self.copy(source, target, filters, log).await
    }

    fn interactive(&self, command: Option<&str>, _port_forward: &[u16]) -> Vec<String> {
        match command {
            Some(c) => login_shell(c),
            None => vec!["bash".into(), "--login".into()],
        }
    }
}
