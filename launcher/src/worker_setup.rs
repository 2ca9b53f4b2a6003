//! The autoscaler's node set-up, done by the updater over SSH: the head's
//! autoscaler hands it each worker it launched on a provider that does not
//! start Ray itself, and it runs the workers' file mounts, setup commands and
//! `worker_start_ray_commands` there, keeping the node's status tag current and
//! its output in `<logs>/updater-<node>.log`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use ray_autoscaler::config::ClusterConfig;
use ray_autoscaler::setup::NodeSetup;
use ray_providers::{CloudInstance, NodeProvider, TAG_FILE_MOUNTS_CONTENTS, TAG_NODE_STATUS, TAG_RUNTIME_CONFIG};

use crate::hash::RuntimeHash;
use crate::node_plan::{self, Role};
use crate::runner::{OutputTo, SshAuth, SshRunner};
use crate::updater::{self, UpdateObserver};

/// Sets Ray up on the workers of one cluster.
pub struct WorkerSetup {
    config: ClusterConfig,
    provider: Arc<dyn NodeProvider>,
    auth: SshAuth,
    head_ip: String,
    log_dir: PathBuf,
    mounts: BTreeMap<String, String>,
    hashes: HashMap<String, (String, RuntimeHash)>,
}

impl WorkerSetup {
    /// For the cluster of `config` (the head's config: file mounts point at the
    /// head's copies), whose workers join the head at `head_ip`; logs go to `log_dir`.
    pub fn new(config: ClusterConfig, provider: Arc<dyn NodeProvider>, head_ip: impl Into<String>, log_dir: PathBuf) -> Self {
        let auth = SshAuth::from_config(&node_plan::auth_json(&config));
        let mut mounts = config.file_mounts.clone();
        for f in &config.cluster_synced_files {
            mounts.insert(f.clone(), f.clone());
        }
        // The head's copy of the cluster token (`ray up` put it there).
        let token = crate::cluster::TOKEN_PATH_ON_NODES.to_string();
        if std::path::Path::new(&crate::hash::expand_home(&token)).exists() {
            mounts.insert(token.clone(), token);
        }
        // Every type, the head's too: workers of the head's type are launched
        // when it allows them (`local` clusters have one type for both).
        let hashes = config
            .node_types
            .iter()
            .map(|t| {
                let launch = node_plan::type_launch_hash(&config, &t.name);
                (t.name.clone(), (launch, node_plan::node_runtime_hash(&config, &t.name, Role::Worker, &mounts)))
            })
            .collect();
        Self { config, provider, auth, head_ip: head_ip.into(), log_dir, mounts, hashes }
    }
}

/// Hears each step of an update (the CLI prints them).
pub type StepSink = Arc<dyn Fn(&str) + Send + Sync>;

/// Moves a node's status tag along as the updater goes.
pub struct TagObserver {
    provider: Arc<dyn NodeProvider>,
    cloud_id: String,
    name: String,
    progress: Option<StepSink>,
}

impl TagObserver {
    /// Tags `cloud_id` of `provider`; `progress` hears each step (the CLI prints it).
    pub fn new(provider: Arc<dyn NodeProvider>, cloud_id: &str, name: &str, progress: Option<StepSink>) -> Self {
        Self { provider, cloud_id: cloud_id.to_string(), name: name.to_string(), progress }
    }
}

#[async_trait]
impl UpdateObserver for TagObserver {
    async fn status(&self, status: &'static str) {
        let tags = [(TAG_NODE_STATUS.to_string(), status.to_string())].into();
        if let Err(e) = self.provider.set_tags(&self.cloud_id, &tags).await {
            tracing::warn!(node = %self.name, status, error = %e, "cannot tag the node's status");
        }
    }

    fn step(&self, message: &str) {
        tracing::info!(node = %self.name, "{message}");
        if let Some(p) = &self.progress {
            p(message);
        }
    }
}

#[async_trait]
impl NodeSetup for WorkerSetup {
    fn launch_hash(&self, node_type: &str) -> Option<String> {
        self.hashes.get(node_type).map(|h| h.0.clone())
    }

    fn runtime_hash(&self, node_type: &str) -> Option<String> {
        self.hashes.get(node_type).map(|h| h.1.runtime.clone())
    }

    async fn set_up(&self, instance: &CloudInstance, node_type: &str) -> Result<(), String> {
        let address = instance.internal_ip.clone().unwrap_or_else(|| instance.cloud_id.clone());
        let runner = SshRunner::new(self.auth.clone(), address.clone(), &self.config.cluster_name);
        let env = node_plan::start_env(&self.config, node_type, &instance.cloud_id, Some(&self.head_ip));
        let mut plan = node_plan::plan(&self.config, node_type, Role::Worker, &self.mounts, env);
        let hash = self.hashes.get(node_type).map(|h| h.1.clone());
        // Already set up with these commands and files: only restart Ray.
        plan.set_up = hash.as_ref().is_none_or(|h| instance.tags.get(TAG_RUNTIME_CONFIG) != Some(&h.runtime));
        let log = OutputTo::Log(self.log_dir.join(format!("updater-{}.log", sanitize(&instance.cloud_id))));
        let observer = TagObserver::new(self.provider.clone(), &instance.cloud_id, &address, None);
        tracing::info!(node = %address, node_type, set_up = plan.set_up, "setting Ray up on a worker");
        updater::update(&plan, &runner, &observer, &log).await.map_err(|e| e.to_string())?;
        if let Some(h) = hash {
            let tags = [(TAG_RUNTIME_CONFIG.to_string(), h.runtime), (TAG_FILE_MOUNTS_CONTENTS.to_string(), h.file_mounts)].into();
            self.provider.set_tags(&instance.cloud_id, &tags).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// A name fit for a file name.
pub fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' { c } else { '_' }).collect()
}
