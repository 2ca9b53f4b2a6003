//! `ray plan CLUSTER.yaml --demand FILE`: what the autoscaler would launch for
//! a demand on a fresh cluster of the config, what it costs per hour, the lower
//! bound no plan can beat, and what stays unplaced and why. `--replay TRACE`
//! steps the autoscaler through a demand trace and prints the node count and
//! cost curve.

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
    /// The demand: a JSON or YAML file with `bundles` ({resources, count}),
    /// `placement_groups` ({strategy, bundles, count}) and `request_resources`
    /// ({resources, count}); memory in bytes.
    #[arg(long, required_unless_present_any = ["replay", "from_cluster"], conflicts_with_all = ["replay", "from_cluster"])]
    pub demand: Option<PathBuf>,
    /// Take the demand from a running cluster: its queued tasks and actors, its
    /// pending placement groups and its request_resources (see --address).
    #[arg(long, conflicts_with = "replay")]
    pub from_cluster: bool,
    /// With --from-cluster: the GCS address as HOST:PORT, or "auto" for the
    /// cluster started on this machine.
    #[arg(long, default_value = "auto")]
    pub address: String,
    /// With --from-cluster: write the snapshot to this file as a demand file.
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// A demand trace: `steps`, a list of {at (seconds), bundles,
    /// placement_groups}; prints the node count and cost curve over time.
    #[arg(long)]
    pub replay: Option<PathBuf>,
    /// With --replay: seconds between autoscaler decisions.
    #[arg(long, default_value_t = 10.0, value_parser = positive)]
    pub tick_s: f64,
    /// With --replay: seconds from a launch until the node takes work.
    #[arg(long, default_value_t = 60.0, value_parser = non_negative)]
    pub launch_delay_s: f64,
    /// Print one JSON object (launch, launch_now, unplaced, cost_per_hour,
    /// lower_bound_per_hour, decision_ms, ...) instead of text.
    #[arg(long)]
    pub json: bool,
}

fn number(s: &str) -> Result<f64, String> {
    s.parse::<f64>().ok().filter(|v| v.is_finite()).ok_or_else(|| format!("expected a number of seconds, got {s:?}"))
}

fn positive(s: &str) -> Result<f64, String> {
    number(s).and_then(|v| if v > 0.0 { Ok(v) } else { Err(format!("expected a number of seconds > 0, got {s}")) })
}

fn non_negative(s: &str) -> Result<f64, String> {
    number(s).and_then(|v| if v >= 0.0 { Ok(v) } else { Err(format!("expected a number of seconds >= 0, got {s}")) })
}

pub fn run(a: PlanArgs) -> anyhow::Result<()> {
    let config = match ClusterConfig::load(&a.cluster_config) {
        Ok(c) => c,
        Err(e) => bail!("{}: {e}", a.cluster_config.display()),
    };
    if let Some(trace) = &a.replay {
        let file = trace.display().to_string();
        let text = std::fs::read_to_string(trace).with_context(|| format!("--replay {file}: cannot read the file"))?;
        let steps = plan::replay::parse_trace(&file, &text).map_err(|e| anyhow::anyhow!("--replay {e}"))?;
        let r = plan::replay::replay(&config, &steps, plan::replay::Options { tick_s: a.tick_s, launch_delay_s: a.launch_delay_s });
        if a.json {
            println!("{}", serde_json::to_string_pretty(&r)?);
        } else {
            let priced = config.node_types.iter().filter(|t| t.name != config.head_node_type).all(|t| t.price.is_some());
            print!("{}", plan::replay::render(&r, priced));
        }
        return Ok(());
    }
    let demand = if a.from_cluster {
        let d = snapshot(&a.address)?;
        if let Some(path) = &a.save {
            std::fs::write(path, demand_json(&d)).with_context(|| format!("--save {}: cannot write the file", path.display()))?;
        }
        d
    } else {
        let Some(demand_path) = &a.demand else { bail!("--demand FILE, --from-cluster or --replay TRACE is required") };
        let file = demand_path.display().to_string();
        let text = std::fs::read_to_string(demand_path).with_context(|| format!("--demand {file}: cannot read the file"))?;
        plan::demand::parse(&file, &text).map_err(|e| anyhow::anyhow!("--demand {e}"))?
    };
    if demand.is_empty() && !a.json {
        println!("The cluster has no pending demand.");
    }
    let p = plan::plan(&config, &demand);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&p)?);
    } else {
        print!("{}", plan::render(&p, &config));
    }
    Ok(())
}

/// The pending demand of the cluster at `address`.
fn snapshot(address: &str) -> anyhow::Result<plan::DemandFile> {
    use ray_common::gcs_client::GcsClient;
    use ray_common::rpc::{Security, explain_status};
    use ray_proto::rpc::autoscaler::GetClusterStatusRequest;
    let root = ray_common::session::temp_root(None);
    let addr = crate::address::resolve_gcs_address(Some(address), &root)?;
    let security = Security::from_env()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let reply = rt
        .block_on(async {
            let (gcs, _) = GcsClient::connect(&addr, &security, std::time::Duration::from_secs(5)).await?;
            gcs.autoscaler
                .clone()
                .get_cluster_status(GetClusterStatusRequest {})
                .await
                .map_err(|s| anyhow::anyhow!(explain_status(&addr, &s)))
                .map(|r| r.into_inner())
        })
        .with_context(|| format!("--from-cluster: cannot read the pending demand from {addr}"))?;
    Ok(plan::demand_from_state(&reply.cluster_resource_state.unwrap_or_default()))
}

/// A demand file (JSON) for `d`, as `--demand` reads it.
fn demand_json(d: &plan::DemandFile) -> String {
    let shape = |s: &ray_common::ResourceSet| s.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v.to_f64()))).collect::<serde_json::Map<_, _>>();
    let strategy = |s: ray_autoscaler::scheduler::PlacementStrategy| match s {
        ray_autoscaler::scheduler::PlacementStrategy::Pack => "PACK",
        ray_autoscaler::scheduler::PlacementStrategy::Spread => "SPREAD",
        ray_autoscaler::scheduler::PlacementStrategy::StrictPack => "STRICT_PACK",
        ray_autoscaler::scheduler::PlacementStrategy::StrictSpread => "STRICT_SPREAD",
    };
    let v = serde_json::json!({
        "bundles": d.bundles.iter().map(|b| serde_json::json!({"resources": shape(&b.shape), "count": b.count})).collect::<Vec<_>>(),
        "placement_groups": d.placement_groups.iter().map(|g| serde_json::json!({
            "strategy": strategy(g.strategy),
            "bundles": g.bundles.iter().map(shape).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "request_resources": d.request_resources.iter().map(|b| serde_json::json!({"resources": shape(&b.shape), "count": b.count})).collect::<Vec<_>>(),
    });
    serde_json::to_string_pretty(&v).unwrap_or_default()
}
