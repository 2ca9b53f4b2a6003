//! `ray status`.

use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use ray_common::gcs_client::GcsClient;
use ray_common::rpc::{Security, explain_status};
use ray_common::session;
use ray_proto::rpc::autoscaler::GetClusterStatusRequest;

/// Prints the report.
pub fn run(a: crate::args::StatusArgs) -> Result<()> {
    let root = session::temp_root(a.temp_dir.as_deref());
    let addr = crate::address::resolve_gcs_address(Some(&a.address), &root)?;
    let security = Security::from_env()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let reply = rt.block_on(async {
        let (gcs, _) = GcsClient::connect(&addr, &security, Duration::from_secs(5)).await?;
        gcs.autoscaler
            .clone()
            .get_cluster_status(GetClusterStatusRequest {})
            .await
            .map_err(|s| anyhow!(explain_status(&addr, &s)))
            .map(|r| r.into_inner())
    })
    .with_context(|| format!("cannot read the cluster status from {addr}"))?;
    println!("{}", ray_status::format_status(&reply, chrono::Local::now(), a.verbose));
    Ok(())
}
