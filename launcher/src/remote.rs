//! Working with a running cluster from this machine: `ray exec` (a command on
//! the head), `ray submit` (copy a script there and run it), `ray attach` (a
//! shell there), `ray rsync-up/down`, `ray get_head_ip`, `ray get_worker_ips`,
//! and `ray monitor CLUSTER.yaml` (the head's autoscaler log).

use std::path::Path;

use ray_providers::{NODE_KIND_HEAD, TAG_NODE_KIND};

use crate::cluster::{Cluster, LaunchError};
use crate::runner::{OutputTo, RunOptions, SshRunner, quote};

/// How `ray exec` runs the command.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// Run it in a detached tmux session.
    pub tmux: bool,
    /// Run it in a detached screen session.
    pub screen: bool,
    /// Ports forwarded from this machine to the head.
    pub port_forward: Vec<u16>,
    /// Tear the cluster down after the command. In a detached session the head
    /// does it when the command ends; otherwise the caller does, after
    /// [`exec`] returns.
    pub stop: bool,
}

impl ExecOptions {
    /// The command runs in a detached tmux or screen session.
    pub fn detached(&self) -> bool {
        self.tmux || self.screen
    }
}

/// The command, wrapped for tmux or screen when asked (and followed by the
/// cluster's teardown when it runs detached with `stop`).
pub fn wrap(command: &str, opts: &ExecOptions) -> String {
    let command = if opts.stop && opts.detached() {
        format!(
            "{command}; ray down {} --yes --from-provider",
            crate::bootstrap::HEAD_CONFIG_PATH
        )
    } else {
        command.to_string()
    };
    let command = command.as_str();
    if opts.tmux {
        format!("tmux new -d bash -c {}", quote(&format!("{command}; exec bash")))
    } else if opts.screen {
        format!("screen -dmS ray-exec bash -c {}", quote(&format!("{command}; exec bash")))
    } else {
        command.to_string()
    }
}

/// Runs `command` on the head with its output on this terminal; returns its
/// exit code (the remote command's).
pub async fn exec(cluster: &Cluster, command: &str, opts: &ExecOptions) -> Result<i32, LaunchError> {
    let head = cluster.require_head().await?;
    let runner = cluster.runner(&head);
    let run = RunOptions { port_forward: opts.port_forward.clone(), ..RunOptions::terminal() };
    match runner.run(&wrap(command, opts), &run).await {
        Ok(_) => Ok(0),
        Err(crate::runner::RunError::Failed { code, .. }) => Ok(code),
        Err(e) => Err(e.into()),
    }
}

/// `ray submit`: copies `script` to the head's home folder and runs it there
/// with the cluster's `python` and `args` (each passed as one argument), or,
/// when there are none, `raw_args` as the shell splits them (Ray's `--args`);
/// returns the script's exit code.
pub async fn submit(
    cluster: &Cluster,
    script: &Path,
    args: &[String],
    raw_args: Option<&str>,
    opts: &ExecOptions,
) -> Result<i32, LaunchError> {
    let name = script
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| LaunchError::Local(format!("{}: not a script file", script.display())))?;
    if !script.is_file() {
        return Err(LaunchError::Local(format!("{}: no such script", script.display())));
    }
    let head = cluster.require_head().await?;
    let runner = cluster.runner(&head);
    let target = format!("~/{name}");
    runner.rsync_up(&script.display().to_string(), &target, &Default::default(), &OutputTo::Capture).await?;
    let mut command = format!("python ~/{}", quote(&name));
    for a in args {
        command.push(' ');
        command.push_str(&quote(a));
    }
    if let (true, Some(raw)) = (args.is_empty(), raw_args) {
        command.push(' ');
        command.push_str(raw);
    }
    exec(cluster, &command, opts).await
}

/// The argv of an interactive session on the head, or on the node at `node_ip`
/// (`ray attach`), to run with this terminal.
pub async fn attach_command(
    cluster: &Cluster,
    node_ip: Option<&str>,
    tmux: bool,
    screen: bool,
    new: bool,
    port_forward: &[u16],
) -> Result<Vec<String>, LaunchError> {
    let head = cluster.require_head().await?;
    let runner: Box<dyn crate::runner::CommandRunner> = match node_ip {
        Some(ip) if ip != head.address() => Box::new(SshRunner::new(
            cluster.auth.clone(),
            ip,
            &cluster.config.cluster_name,
        )),
        _ => cluster.runner(&head),
    };
    let inner = match (tmux, screen) {
        (true, _) if new => Some("tmux new".to_string()),
        (true, _) => Some("tmux attach || tmux new".to_string()),
        (_, true) if new => Some("screen -L".to_string()),
        (_, true) => Some("screen -L -xRR".to_string()),
        _ => None,
    };
    Ok(runner.interactive(inner.as_deref(), port_forward))
}

/// `ray rsync-up` / `rsync-down`: copies between this machine and the head (or,
/// with `all_nodes`, every node for rsync-up).
pub async fn rsync(cluster: &Cluster, source: &str, target: &str, up: bool, all_nodes: bool) -> Result<(), LaunchError> {
    let head = cluster.require_head().await?;
    let filters = crate::node_plan::filters(&cluster.config);
    let out = OutputTo::Terminal;
    let runner = cluster.runner(&head);
    if up {
        runner.rsync_up(source, target, &filters, &out).await?;
        if all_nodes {
            for ip in worker_ips(cluster).await? {
                let r = SshRunner::new(cluster.auth.clone(), ip, &cluster.config.cluster_name);
                crate::runner::CommandRunner::rsync_up(&r, source, target, &filters, &out).await?;
            }
        }
    } else {
        runner.rsync_down(source, target, &filters, &out).await?;
    }
    Ok(())
}

/// The head's address as this machine reaches it.
pub async fn head_ip(cluster: &Cluster) -> Result<String, LaunchError> {
    Ok(cluster.require_head().await?.address())
}

/// The workers' addresses. The head's autoscaler launched them, and for some
/// providers (`local`: a state file on the machine that runs the provider) only
/// the head knows them: when the head is another machine, it is asked first.
pub async fn worker_ips(cluster: &Cluster) -> Result<Vec<String>, LaunchError> {
    if let Some(head @ crate::Head::Instance(_)) = cluster.head().await? {
        let command = format!("ray get-worker-ips {} --from-provider", crate::bootstrap::HEAD_CONFIG_PATH);
        match cluster.runner(&head).run(&command, &RunOptions::captured(std::time::Duration::from_secs(60))).await {
            Ok(out) => return Ok(out.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect()),
            Err(e) => tracing::warn!(error = %e, "cannot ask the head for its workers; listing them from here"),
        }
    }
    provider_worker_ips(cluster).await
}

/// The workers' addresses as this machine's provider lists them: external
/// ones, unless the config says to use internal ones (as Ray prints them).
pub async fn provider_worker_ips(cluster: &Cluster) -> Result<Vec<String>, LaunchError> {
    Ok(cluster
        .instances()
        .await?
        .into_iter()
        .filter(|c| c.tags.get(TAG_NODE_KIND).map(String::as_str) != Some(NODE_KIND_HEAD))
        .map(|c| cluster.seen(c).address())
        .collect())
}

/// The command that follows the autoscaler's log on the head.
pub fn monitor_command(lines: usize, follow: bool) -> String {
    let f = if follow { " -f" } else { "" };
    format!("tail -n {lines}{f} \"${{RAY_TMPDIR:-/tmp}}/ray/session_latest/logs/monitor.log\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmux_and_screen_wrap_the_command_in_a_detached_session() {
        let o = ExecOptions { tmux: true, ..Default::default() };
        assert_eq!(wrap("python x.py", &o), "tmux new -d bash -c 'python x.py; exec bash'");
        let o = ExecOptions { screen: true, ..Default::default() };
        assert!(wrap("ls", &o).starts_with("screen -dmS ray-exec bash -c "));
        assert_eq!(wrap("ls", &ExecOptions::default()), "ls");
        let o = ExecOptions {
            tmux: true,
            stop: true,
            ..Default::default()
        };
        assert_eq!(
            wrap("ls", &o),
            "tmux new -d bash -c 'ls; ray down ~/ray_bootstrap_config.yaml --yes --from-provider; exec bash'"
        );
        assert_eq!(
            wrap(
                "ls",
                &ExecOptions {
                    stop: true,
                    ..Default::default()
                }
            ),
            "ls",
            "the caller tears down after an attached command"
        );
        assert!(monitor_command(100, true).contains("tail -n 100 -f"));
    }
}
