//! `ray plan CLUSTER.yaml --demand FILE`: what the autoscaler would launch for
//! a demand on a fresh cluster of the config, what it costs per hour, the lower
//! bound no plan can beat, and what stays unplaced and why.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use ray_autoscaler::config::ClusterConfig;
use ray_autoscaler::plan;

/// Flags of `ray plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The cluster config YAML (Ray's schema; a node type's `price` is its hourly price).
    pub cluster_config: PathBuf,
    /// The demand: a JSON or YAML file with `bundles` ({resources, count}) and
    /// `placement_groups` ({strategy, bundles, count}); memory in bytes.
    #[arg(long)]
    pub demand: PathBuf,
    /// Print one JSON object (launch, launch_now, unplaced, cost_per_hour,
    /// lower_bound_per_hour, decision_ms, ...) instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: PlanArgs) -> anyhow::Result<()> {
    let config = match ClusterConfig::load(&a.cluster_config) {
        Ok(c) => c,
        Err(e) => bail!("{}: {e}", a.cluster_config.display()),
    };
    let file = a.demand.display().to_string();
    let text = std::fs::read_to_string(&a.demand).with_context(|| format!("--demand {file}: cannot read the file"))?;
    let demand = plan::demand::parse(&file, &text).map_err(|e| anyhow::anyhow!("--demand {e}"))?;
    let p = plan::plan(&config, &demand);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&p)?);
    } else {
        print!("{}", plan::render(&p, &config));
    }
    Ok(())
}
