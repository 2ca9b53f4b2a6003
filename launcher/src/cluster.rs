//! A cluster as the launcher sees it: the config, its node provider, how to reach
//! the head, and what went wrong, said plainly.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use ray_autoscaler::config::{ClusterConfig, ConfigErrors};
use ray_providers::{CloudInstance, NODE_KIND_HEAD, NodeProvider, ProviderError, TAG_NODE_KIND};

use crate::runner::{CommandRunner, LocalRunner, RunError, SshAuth, SshRunner};
use crate::updater::UpdateError;

/// The file in [`Cluster::log_dir`] that keeps the provider's bootstrap.
const BOOTSTRAP_CACHE: &str = "bootstrap-cache.json";

/// Why a launcher command failed.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The config file is wrong.
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// The provider refused or failed.
    #[error("{what}: {error}")]
    Provider {
        /// What was being done.
        what: String,
        /// What the provider said.
        error: ProviderError,
    },
    /// Setting a node up failed.
    #[error("{node}: {error}\n  (the node's output is in {log})")]
    Update {
        /// The node's address.
        node: String,
        /// What failed.
        error: Box<UpdateError>,
        /// Its log.
        log: String,
    },
    /// A command on a node failed.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The cluster has no head node.
    #[error("cluster {0:?} has no head node: start it with `ray up` first")]
    NoHead(String),
    /// The user answered no.
    #[error("aborted")]
    Aborted,
    /// A question needs an answer and nobody can give it.
    #[error("{0} (no terminal to ask on: pass --yes)")]
    NeedsYes(String),
    /// Something on this machine.
    #[error("{0}")]
    Local(String),
}

/// Where the head runs.
#[derive(Debug, Clone)]
pub enum Head {
    /// On this machine (the local-process provider).
    Local,
    /// An instance of the provider.
    Instance(CloudInstance),
}

impl Head {
    /// The head's address as this machine reaches it.
    pub fn address(&self) -> String {
        match self {
            Head::Local => "127.0.0.1".into(),
            Head::Instance(c) => c.external_ip.clone().or_else(|| c.internal_ip.clone()).unwrap_or_else(|| c.cloud_id.clone()),
        }
    }

    /// The head's address inside the cluster (what workers join).
    pub fn internal_address(&self) -> String {
        match self {
            Head::Local => "127.0.0.1".into(),
            Head::Instance(c) => c.internal_ip.clone().unwrap_or_else(|| self.address()),
        }
    }
}

/// A cluster config with its provider.
pub struct Cluster {
    /// The config, defaults filled and overrides applied.
    pub config: ClusterConfig,
    /// Its provider.
    pub provider: Arc<dyn NodeProvider>,
    /// SSH settings from `auth`.
    pub auth: SshAuth,
    /// This machine's folder for launcher logs and caches.
    pub temp_root: PathBuf,
}

impl Cluster {
    /// A cluster of `config` over `provider`.
    pub fn new(config: ClusterConfig, provider: Arc<dyn NodeProvider>, temp_root: PathBuf) -> Self {
        let auth = SshAuth::from_config(&crate::node_plan::auth_json(&config));
        Self { config, provider, auth, temp_root }
    }

    /// This cluster with what the provider's bootstrap fills in (security group,
    /// key pair, subnets, ...). The result is kept in [`Cluster::log_dir`], so the
    /// launcher's other commands see the same config ([`Cluster::with_cached_bootstrap`]).
    pub async fn bootstrapped(&self) -> Result<Cluster, LaunchError> {
        let input = crate::bootstrap::provider_doc(&self.config);
        let output = self
            .provider
            .bootstrap(input.clone())
            .await
            .map_err(|error| LaunchError::Provider { what: "the provider's bootstrap failed".into(), error })?;
        let mut config = self.config.clone();
        crate::bootstrap::apply(&mut config, &output);
        if output != input {
            let path = self.private_log_dir()?.join(BOOTSTRAP_CACHE);
            let doc = serde_json::json!({"input": input, "output": output});
            std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap_or_default())
                .map_err(|e| LaunchError::Local(format!("cannot write {}: {e}", path.display())))?;
        }
        Ok(Cluster::new(config, self.provider.clone(), self.temp_root.clone()))
    }

    /// This cluster with the bootstrap `ray up` last did for the same config, if any.
    pub fn with_cached_bootstrap(mut self) -> Self {
        let path = self.log_dir().join(BOOTSTRAP_CACHE);
        let Some(doc) = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok()) else { return self };
        if doc.get("input") == Some(&crate::bootstrap::provider_doc(&self.config))
            && let Some(out) = doc.get("output")
        {
            crate::bootstrap::apply(&mut self.config, out);
            self.auth = SshAuth::from_config(&crate::node_plan::auth_json(&self.config));
        }
        self
    }

    /// True when the provider runs nodes as processes on this machine.
    pub fn is_local(&self) -> bool {
        self.provider.starts_ray_itself()
    }

    /// Where this machine keeps the launcher's per-node logs of this cluster.
    pub fn log_dir(&self) -> PathBuf {
        self.temp_root.join("launcher").join(crate::worker_setup::sanitize(&self.config.cluster_name))
    }

    /// [`Cluster::log_dir`], created if need be and closed to other users (it
    /// holds the head's config and, briefly, the cluster token); an error when
    /// it is not this user's own.
    pub fn private_log_dir(&self) -> Result<PathBuf, LaunchError> {
        let dir = self.log_dir();
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent).map_err(|e| {
                LaunchError::Local(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        // SAFETY: geteuid cannot fail and touches no memory.
        let uid = unsafe { libc::geteuid() };
        crate::runner::private_dir(&dir, uid).map_err(LaunchError::Local)?;
        Ok(dir)
    }

    /// The provider's instances of this cluster.
    pub async fn instances(&self) -> Result<Vec<CloudInstance>, LaunchError> {
        self.provider.list().await.map_err(|error| LaunchError::Provider { what: format!("cannot list the nodes of {}", self.provider.name()), error })
    }

    /// The head, if there is one.
    pub async fn head(&self) -> Result<Option<Head>, LaunchError> {
        if self.is_local() {
            return Ok(Some(Head::Local));
        }
        let listed = self.instances().await?;
        Ok(listed
            .into_iter()
            .find(|c| c.tags.get(TAG_NODE_KIND).map(String::as_str) == Some(NODE_KIND_HEAD))
            .map(|c| self.seen(c)))
    }

    /// True when this machine reaches nodes by their internal addresses
    /// (`provider.use_internal_ips`: a laptop on the cluster's VPN, a bastion).
    pub fn uses_internal_ips(&self) -> bool {
        self.config
            .provider
            .get("use_internal_ips")
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
    }

    /// A listed instance as this machine reaches it: without its external
    /// address when the config says to use internal ones.
    pub fn seen(&self, mut c: CloudInstance) -> Head {
        if self.uses_internal_ips() && c.internal_ip.is_some() {
            c.external_ip = None;
        }
        Head::Instance(c)
    }

    /// The head, or an error saying to run `ray up`.
    pub async fn require_head(&self) -> Result<Head, LaunchError> {
        self.head().await?.ok_or_else(|| LaunchError::NoHead(self.config.cluster_name.clone()))
    }

    /// Runs commands on `head`.
    pub fn runner(&self, head: &Head) -> Box<dyn CommandRunner> {
        match head {
            Head::Local => Box::new(LocalRunner::new()),
            Head::Instance(_) => Box::new(SshRunner::new(self.auth.clone(), head.address(), &self.config.cluster_name)),
        }
    }
}

/// Where nodes keep the cluster token (Ray's default token file).
pub const TOKEN_PATH_ON_NODES: &str = "~/.ray/auth_token";

/// The local file holding the cluster token, to copy to the nodes (created, as
/// `ray start --head` creates it, when there is none; a token given by value in
/// `RAY_AUTH_TOKEN` is written to a 0600 file under `dir`). `None` when
/// authentication is disabled. The token never appears on a command line.
pub fn token_file(dir: &std::path::Path) -> Result<Option<PathBuf>, LaunchError> {
    use ray_common::auth::{self, AuthConfig, TokenSource};
    let err = |e: auth::AuthError| LaunchError::Local(format!("the cluster token: {e}"));
    let (config, created) = AuthConfig::from_env_or_create().map_err(err)?;
    let Some(token) = config.token else { return Ok(None) };
    if let Some(p) = created {
        return Ok(Some(p));
    }
    match auth::find_token().map_err(err)? {
        Some((_, TokenSource::DefaultFile(p) | TokenSource::EnvPath(p))) => Ok(Some(p)),
        _ => {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let path = dir.join("auth_token");
            let _ = std::fs::remove_file(&path);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| LaunchError::Local(format!("cannot write {}: {e}", path.display())))?;
            f.write_all(token.expose_secret().as_bytes()).map_err(|e| LaunchError::Local(e.to_string()))?;
            Ok(Some(path))
        }
    }
}

/// Progress lines with the time since the command started.
pub struct Progress {
    t0: Instant,
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress {
    /// Starts the clock.
    pub fn new() -> Self {
        Self { t0: Instant::now() }
    }

    /// Prints `[  1.2s] message`.
    pub fn say(&self, message: &str) {
        println!("[{:>6.1}s] {message}", self.t0.elapsed().as_secs_f64());
    }

    /// Seconds since the start.
    pub fn elapsed_s(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }
}

/// Asks a yes/no question on the terminal; `yes` answers it in advance.
pub fn confirm(question: &str, yes: bool) -> Result<(), LaunchError> {
    use std::io::{BufRead, IsTerminal, Write};
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(LaunchError::NeedsYes(question.to_string()));
    }
    print!("{question} [y/N]: ");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    if matches!(line.trim(), "y" | "Y" | "yes" | "Yes") { Ok(()) } else { Err(LaunchError::Aborted) }
}
