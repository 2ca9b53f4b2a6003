//! Entrypoint resources: a job that asks for `entrypoint_num_cpus` (or GPUs,
//! memory, custom resources) reserves them with a one-bundle placement group
//! before its driver starts, and gives them back when it ends. While the group
//! is pending the job is PENDING and the autoscaler sees the group as demand.

use std::collections::{BTreeMap, HashMap};

use ray_proto::rpc::{
    CreatePlacementGroupRequest, PlacementGroupInfo, RemovePlacementGroupRequest, ResourceMap,
    WaitPlacementGroupUntilReadyRequest,
};
use tokio_util::sync::CancellationToken;

use crate::gcs::{DEFAULT_PATIENCE, Gcs};

/// How a reservation ended without being ready.
#[derive(Debug)]
pub enum NotReserved {
    /// The job was stopped while it waited.
    Stopped,
    /// The GCS refused or failed.
    Failed(String),
}

/// A group's name for a job (one per submission).
fn group_name(submission_id: &str) -> String {
    format!("_ray_job_entrypoint_{submission_id}")
}

/// Creates the group and waits until it is placed (or `stop`). Returns its id.
pub async fn reserve(
    gcs: &Gcs,
    submission_id: &str,
    shape: &BTreeMap<String, f64>,
    stop: &CancellationToken,
) -> Result<String, NotReserved> {
    let id = ray_common::ids::random_hex(18);
    let group = PlacementGroupInfo {
        placement_group_id: id.clone(),
        name: group_name(submission_id),
        strategy: "STRICT_PACK".into(),
        bundles: vec![ResourceMap {
            amounts: shape
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect::<HashMap<_, _>>(),
        }],
        // Owned by the dashboard, which removes it when the job ends.
        detached: true,
        ..Default::default()
    };
    gcs.retry("create_placement_group", DEFAULT_PATIENCE, |c| {
        let group = group.clone();
        async move {
            c.placement_groups
                .clone()
                .create_placement_group(CreatePlacementGroupRequest { group: Some(group) })
                .await
        }
    })
    .await
    .map_err(|s| {
        NotReserved::Failed(format!(
            "cannot reserve the entrypoint resources: {}",
            s.message()
        ))
    })?;
    tracing::info!(submission_id, group = %id, ?shape, "reserving entrypoint resources");
    loop {
        let wait = gcs.retry("wait_placement_group", DEFAULT_PATIENCE, |c| {
            let id = id.clone();
            async move {
                c.placement_groups
                    .clone()
                    .wait_placement_group_until_ready(WaitPlacementGroupUntilReadyRequest {
                        placement_group_id: id,
                        timeout_ms: 1000,
                    })
                    .await
            }
        });
        tokio::select! {
            () = stop.cancelled() => {
                release(gcs, &id).await;
                return Err(NotReserved::Stopped);
            }
            r = wait => match r {
                Ok(reply) if reply.get_ref().ready => return Ok(id),
                Ok(reply) if reply.get_ref().state == "REMOVED" => {
                    return Err(NotReserved::Failed("the entrypoint resources' placement group was removed".into()));
                }
                Ok(_) => {}
                Err(s) => {
                    release(gcs, &id).await;
                    return Err(NotReserved::Failed(format!("cannot reserve the entrypoint resources: {}", s.message())));
                }
            }
        }
    }
}

/// Gives a reservation back (logged, never fatal: the group is detached and
/// named after its job, so a leftover is visible in `ray list placement-groups`).
pub async fn release(gcs: &Gcs, id: &str) {
    let r = gcs
        .retry("remove_placement_group", DEFAULT_PATIENCE, |c| {
            let id = id.to_string();
            async move {
                c.placement_groups
                    .clone()
                    .remove_placement_group(RemovePlacementGroupRequest {
                        placement_group_id: id,
                    })
                    .await
            }
        })
        .await;
    match r {
        Ok(_) => tracing::info!(group = id, "entrypoint resources released"),
        Err(s) if s.code() == tonic::Code::NotFound => {}
        Err(s) => {
            tracing::warn!(group = id, error = %s.message(), "cannot release the entrypoint resources")
        }
    }
}
