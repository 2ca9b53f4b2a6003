//! `ray down`: Ray is stopped on the head (so its autoscaler launches nothing
//! while the nodes go), then every instance carrying the cluster's tags is
//! terminated: workers first, the head last. Running it twice is harmless.

use std::collections::BTreeMap;
use std::time::Duration;

use ray_providers::{NODE_KIND_HEAD, TAG_NODE_KIND};

use crate::cluster::{Cluster, Head, LaunchError, Progress, confirm};
use crate::runner::RunOptions;

/// `ray down`'s flags.
#[derive(Debug, Clone, Default)]
pub struct DownOptions {
    /// Answer yes to every question.
    pub yes: bool,
    /// Keep the head.
    pub workers_only: bool,
    /// Keep `min_workers` workers of each type.
    pub keep_min_workers: bool,
    /// Terminate what this machine's provider lists, without asking the head
    /// (what the head runs when it is asked).
    pub from_provider: bool,
}

/// What `ray down` did: the instances it terminated.
pub async fn down(cluster: &Cluster, opts: &DownOptions, progress: &Progress) -> Result<Vec<String>, LaunchError> {
    let what = if opts.workers_only { "the workers of" } else { "" };
    confirm(&format!("This will destroy {what} cluster {:?}. Continue?", cluster.config.cluster_name).replace("  ", " "), opts.yes)?;
    let head = cluster.head().await?;
    if let Some(h) = &head {
        let runner = cluster.runner(h);
        let mut reachable = true;
        if !opts.workers_only {
            // Stop the autoscaler (and Ray) on the head first, so it launches nothing more.
            progress.say(&format!("Stopping Ray on the head node {}", h.address()));
            if let Err(e) = runner
                .run("ray stop", &RunOptions::captured(Duration::from_secs(120)))
                .await
            {
                progress.say(&format!(
                    "(could not stop Ray on the head: {e}; terminating its instance anyway)"
                ));
                reachable = !matches!(e, crate::runner::RunError::Unreachable { .. });
            }
        }
        if let (Head::Instance(_), true, false) = (h, reachable, opts.from_provider) {
            // The head's provider launched the workers, and some providers (`local`)
            // know them only there: the head tears them down itself first.
            progress.say("Terminating the workers from the head node");
            let keep = if opts.keep_min_workers {
                " --keep-min-workers"
            } else {
                ""
            };
            let command = format!(
                "ray down {} --workers-only --yes --from-provider{keep}",
                crate::bootstrap::HEAD_CONFIG_PATH
            );
            if let Err(e) = runner
                .run(&command, &RunOptions::captured(Duration::from_secs(600)))
                .await
            {
                progress.say(&format!(
                    "(the head could not terminate its workers: {e}; terminating those listed here)"
                ));
            }
        }
    }
    let listed = cluster.instances().await?;
    let is_head = |tags: &BTreeMap<String, String>| tags.get(TAG_NODE_KIND).map(String::as_str) == Some(NODE_KIND_HEAD);
    let mut workers: Vec<_> = listed.iter().filter(|c| !is_head(&c.tags)).collect();
    if opts.keep_min_workers {
        let mut kept: BTreeMap<String, u32> = BTreeMap::new();
        workers.retain(|c| {
            let min = cluster.config.node_type(&c.node_type).map(|t| t.min_workers).unwrap_or(0);
            let n = kept.entry(c.node_type.clone()).or_default();
            if *n < min {
                *n += 1;
                false
            } else {
                true
            }
        });
    }
    let mut gone: Vec<String> = workers.iter().map(|c| c.cloud_id.clone()).collect();
    if !gone.is_empty() {
        progress.say(&format!("Terminating {} worker node(s)", gone.len()));
        cluster
            .provider
            .terminate(&gone)
            .await
            .map_err(|error| LaunchError::Provider { what: "cannot terminate the workers".into(), error })?;
    }
    if !opts.workers_only {
        let heads: Vec<String> = listed.iter().filter(|c| is_head(&c.tags)).map(|c| c.cloud_id.clone()).collect();
        if !heads.is_empty() {
            progress.say(&format!("Terminating the head node {}", heads.join(", ")));
            cluster
                .provider
                .terminate(&heads)
                .await
                .map_err(|error| LaunchError::Provider { what: "cannot terminate the head node".into(), error })?;
            gone.extend(heads);
        }
        if matches!(head, Some(Head::Local)) {
            let _ = std::fs::remove_file(cluster.log_dir().join("head-tags.json"));
        }
    }
    Ok(gone)
}
