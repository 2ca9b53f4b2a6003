//! `ray up`: create or reuse the head node and bring it up to date: its file
//! mounts (with the head's own config and SSH key), initialization and setup
//! commands, and the commands that start Ray and the autoscaler on it. A second
//! `ray up` with the same config does nothing; a changed config updates the head,
//! and the autoscaler it restarts then updates or replaces the workers.

use std::collections::BTreeMap;
use std::sync::Arc;

use ray_providers::*;

use crate::bootstrap::{HEAD_CONFIG_PATH, HEAD_KEY_PATH, head_config};
use crate::cluster::{Cluster, Head, LaunchError, Progress, confirm};
use crate::node_plan::{self, Role};
use crate::runner::{OutputTo, RunOptions};
use crate::updater::{self, UpdatePlan};
use crate::worker_setup::{StepSink, TagObserver};

/// `ray up`'s flags that change what it does.
#[derive(Debug, Clone, Default)]
pub struct UpOptions {
    /// Answer yes to every question.
    pub yes: bool,
    /// Do not restart Ray on an existing head (setup commands still run when changed).
    pub no_restart: bool,
    /// Only restart Ray on the head: changed file mounts are synced, setup
    /// commands skipped.
    pub restart_only: bool,
}

/// What `ray up` did.
#[derive(Debug, Clone)]
pub struct UpOutcome {
    /// The head.
    pub head: Head,
    /// A new head was launched.
    pub created: bool,
    /// Setup commands ran.
    pub set_up: bool,
    /// Ray was (re)started.
    pub started: bool,
}

/// How `ray up` starts a head on this machine when the config says nothing.
pub const LOCAL_HEAD_START: &[&str] = &["ray stop", "ray start --head --autoscaling-config=~/ray_bootstrap_config.yaml"];

/// Where the launcher keeps a local head's hashes (it has no provider tags).
fn local_head_tags_path(cluster: &Cluster) -> std::path::PathBuf {
    cluster.log_dir().join("head-tags.json")
}

async fn head_tags(cluster: &Cluster, head: &Head) -> BTreeMap<String, String> {
    match head {
        Head::Instance(c) => c.tags.clone(),
        Head::Local => std::fs::read(local_head_tags_path(cluster)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default(),
    }
}

async fn set_head_tags(cluster: &Cluster, head: &Head, tags: BTreeMap<String, String>) -> Result<(), LaunchError> {
    match head {
        Head::Instance(c) => cluster
            .provider
            .set_tags(&c.cloud_id, &tags)
            .await
            .map_err(|error| LaunchError::Provider { what: format!("cannot tag the head node {}", c.cloud_id), error }),
        Head::Local => {
            let path = local_head_tags_path(cluster);
            let mut all = head_tags(cluster, head).await;
            all.extend(tags);
            cluster.private_log_dir()?;
            std::fs::write(&path, serde_json::to_vec(&all).unwrap_or_default())
                .map_err(|e| LaunchError::Local(format!("cannot write {}: {e}", path.display())))
        }
    }
}

/// Finds the head (replacing it when its launch config changed) or launches one.
async fn get_or_create_head(cluster: &Cluster, opts: &UpOptions, progress: &Progress) -> Result<(Head, bool), LaunchError> {
    let config = &cluster.config;
    let head_type = config.head_node_type.clone();
    if cluster.is_local() {
        progress.say("Head node: this machine (the local-process provider runs every node here)");
        // New when `ray up` never set it up here (or `ray down` took it down).
        let new = !local_head_tags_path(cluster).exists();
        return Ok((Head::Local, new));
    }
    let launch_hash = node_plan::type_launch_hash(config, &head_type);
    if let Some(Head::Instance(c)) = cluster.head().await? {
        if c.tags
            .get(TAG_LAUNCH_CONFIG)
            .is_none_or(|h| *h == launch_hash)
        {
            progress.say(&format!(
                "Head node: reusing {} ({})",
                cluster.seen(c.clone()).address(),
                c.cloud_id
            ));
            return Ok((cluster.seen(c), false));
        }
        confirm(&format!("The head node {}'s node_config or auth changed. Terminate it and launch a new one?", c.cloud_id), opts.yes)?;
        progress.say(&format!("Terminating the out-of-date head node {}", c.cloud_id));
        cluster
            .provider
            .terminate(std::slice::from_ref(&c.cloud_id))
            .await
            .map_err(|error| LaunchError::Provider { what: "cannot terminate the head node".into(), error })?;
    } else {
        confirm(&format!("This will create a new cluster {:?}. Continue?", config.cluster_name), opts.yes)?;
    }
    let t = config.node_type(&head_type).ok_or_else(|| LaunchError::Local(format!("head_node_type {head_type:?} is not in available_node_types")))?;
    let mut tags = BTreeMap::new();
    tags.insert(TAG_CLUSTER_NAME.to_string(), config.cluster_name.clone());
    tags.insert(TAG_NODE_KIND.to_string(), NODE_KIND_HEAD.to_string());
    tags.insert(TAG_USER_NODE_TYPE.to_string(), head_type.clone());
    tags.insert(TAG_NODE_NAME.to_string(), format!("ray-{}-head", config.cluster_name));
    tags.insert(TAG_NODE_STATUS.to_string(), node_status::UNINITIALIZED.to_string());
    tags.insert(TAG_LAUNCH_CONFIG.to_string(), launch_hash);
    let req = CreateRequest {
        request_id: ray_common::ids::random_hex(8),
        node_type: head_type.clone(),
        instance_ids: vec![ray_common::ids::random_hex(8)],
        node_config: t.node_config.clone(),
        resources: t.resources.clone(),
        labels: t.labels.clone(),
        tags,
    };
    progress.say(&format!(
        "Launching the head node ({head_type}) with provider {}",
        cluster.provider.name()
    ));
    let created = cluster
        .provider
        .create(&req)
        .await
        .map_err(|error| LaunchError::Provider {
            what: "cannot launch the head node".into(),
            error,
        })?;
    let c = created
        .into_iter()
        .next()
        .ok_or_else(|| LaunchError::Local("the provider launched no head node".into()))?;
    progress.say(&format!(
        "Head node: launched {} ({})",
        cluster.seen(c.clone()).address(),
        c.cloud_id
    ));
    Ok((cluster.seen(c), true))
}

/// Creates or updates the cluster's head.
pub async fn up(cluster: &Cluster, opts: &UpOptions, progress: &Progress) -> Result<UpOutcome, LaunchError> {
    // The provider fills in what the config leaves out (security group, key
    // pair, subnets, ...) before anything launches.
    let bootstrapped = cluster.bootstrapped().await?;
    let cluster = &bootstrapped;
    let config = &cluster.config;
    let (head, created) = get_or_create_head(cluster, opts, progress).await?;
    let log_dir = cluster.private_log_dir()?;

    // The head's own config and key travel as file mounts.
    let key_on_head = cluster.auth.private_key.as_ref().map(|_| HEAD_KEY_PATH);
    let doc = head_config(config, if cluster.is_local() { cluster.auth.private_key.as_ref().map(|k| k.to_str().unwrap_or_default()) } else { key_on_head });
    let doc_path = log_dir.join("ray_bootstrap_config.yaml");
    std::fs::write(&doc_path, serde_json::to_vec_pretty(&doc).unwrap_or_default())
        .map_err(|e| LaunchError::Local(format!("cannot write {}: {e}", doc_path.display())))?;
    let mut mounts = config.file_mounts.clone();
    mounts.insert(HEAD_CONFIG_PATH.to_string(), doc_path.display().to_string());
    if let (Some(k), false) = (&cluster.auth.private_key, cluster.is_local()) {
        mounts.insert(HEAD_KEY_PATH.to_string(), k.display().to_string());
    }
    for f in &config.cluster_synced_files {
        mounts.entry(f.clone()).or_insert_with(|| f.clone());
    }
    let mut _token_copy = RemoveOnDrop(None);
    if !cluster.is_local()
        && let Some(token) = crate::cluster::token_file(&log_dir)?
    {
        // Every node must present the same cluster token. A copy the launcher
        // wrote (the token came by value) goes once the head has it.
        mounts.insert(
            crate::cluster::TOKEN_PATH_ON_NODES.to_string(),
            token.display().to_string(),
        );
        if token.starts_with(&log_dir) {
            _token_copy = RemoveOnDrop(Some(token));
        }
    }

    let head_type = &config.head_node_type;
    let hash = node_plan::node_runtime_hash(config, head_type, Role::Head, &mounts);
    let tags = head_tags(cluster, &head).await;
    let up_to_date = tags.get(TAG_RUNTIME_CONFIG) == Some(&hash.runtime);
    let runner = cluster.runner(&head);
    let log = OutputTo::Log(log_dir.join(format!(
        "head-{}.log",
        crate::worker_setup::sanitize(&head.address())
    )));
    // `--restart-only` still syncs changed file mounts (the head's config, key
    // and token among them) and runs the initialization commands; it skips the
    // setup commands, as Ray's does.
    let set_up = created || !up_to_date;
    let start = if created || opts.restart_only {
        true
    } else if opts.no_restart {
        false
    } else if up_to_date {
        // Nothing changed: restart only when Ray is not running there.
        let running = runner.run("ray status", &RunOptions::captured(std::time::Duration::from_secs(30))).await.is_ok();
        if running {
            progress.say("Head node: already up to date, with Ray running (nothing to do)");
        }
        !running
    } else {
        true
    };
    if !set_up && !start {
        return Ok(UpOutcome { head, created, set_up, started: false });
    }
    if !up_to_date && !created && !opts.restart_only {
        progress.say("Head node: the config changed; updating it (the autoscaler then updates or replaces the workers)");
    }
    let cloud_id = match &head {
        Head::Instance(c) => c.cloud_id.clone(),
        Head::Local => "local".into(),
    };
    let env = node_plan::start_env(config, head_type, &cloud_id, None);
    let mut plan = UpdatePlan {
        set_up,
        start,
        ..node_plan::plan(config, head_type, Role::Head, &mounts, env)
    };
    if opts.restart_only && !created {
        plan.setup_commands.clear();
    }
    if cluster.is_local() && plan.start_commands.is_empty() {
        // The local-process provider's config has no start commands (its workers
        // are raylets it starts itself): the head still needs Ray and the autoscaler.
        plan.start_commands = LOCAL_HEAD_START.iter().map(|c| c.to_string()).collect();
    }
    let address = head.address();
    let say: StepSink = {
        let t0 = std::time::Instant::now();
        let offset = progress.elapsed_s();
        let address = address.clone();
        Arc::new(move |m: &str| println!("[{:>6.1}s] {address}: {m}", offset + t0.elapsed().as_secs_f64()))
    };
    let result = match &head {
        Head::Instance(_) => {
            let observer = TagObserver::new(cluster.provider.clone(), &cloud_id, &address, Some(say));
            updater::update(&plan, runner.as_ref(), &observer, &log).await
        }
        Head::Local => updater::update(&plan, runner.as_ref(), &LocalObserver(say), &log).await,
    };
    let log_path = match &log {
        OutputTo::Log(p) => p.display().to_string(),
        _ => String::new(),
    };
    result.map_err(|error| LaunchError::Update { node: address.clone(), error: Box::new(error), log: log_path })?;
    let mut done = BTreeMap::new();
    done.insert(TAG_RUNTIME_CONFIG.to_string(), hash.runtime);
    done.insert(TAG_FILE_MOUNTS_CONTENTS.to_string(), hash.file_mounts);
    set_head_tags(cluster, &head, done).await?;
    Ok(UpOutcome { head, created, set_up, started: start })
}

/// Deletes a file when dropped (a temporary copy of a secret).
struct RemoveOnDrop(Option<std::path::PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Progress of a head on this machine (no provider tags).
struct LocalObserver(StepSink);

#[async_trait::async_trait]
impl updater::UpdateObserver for LocalObserver {
    async fn status(&self, _status: &'static str) {}

    fn step(&self, message: &str) {
        (self.0)(message);
    }
}
