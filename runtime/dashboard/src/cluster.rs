//! The dashboard page's data: the cluster's status (the same text as `ray
//! status`), its nodes with their usage, and its actors, as JSON.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ray_proto::rpc::GetAllActorInfoRequest;
use ray_proto::rpc::autoscaler::{GetClusterStatusRequest, NodeStatus};
use serde_json::{Value, json};

use crate::App;
use crate::gcs::DEFAULT_PATIENCE;

/// The most actors one reply lists (the newest).
const MAX_ACTORS: usize = 500;

fn unavailable(what: &str, s: &tonic::Status) -> Response {
    ray_http::json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("cannot read {what} from the GCS: {}", s.message()),
    )
}

/// `GET /api/cluster_status`: `{status_text, nodes: [...], autoscaler_active, ...}`.
pub async fn cluster_status(State(app): State<Arc<App>>) -> Response {
    let reply = app
        .gcs
        .retry("get_cluster_status", DEFAULT_PATIENCE, |c| async move {
            c.autoscaler
                .clone()
                .get_cluster_status(GetClusterStatusRequest {})
                .await
                .map(|r| r.into_inner())
        })
        .await;
    let reply = match reply {
        Ok(r) => r,
        Err(s) => return unavailable("the cluster status", &s),
    };
    let text = ray_status::format_status(&reply, chrono::Local::now(), false);
    let state = reply.cluster_resource_state.clone().unwrap_or_default();
    let mut nodes: Vec<Value> = state
        .node_states
        .iter()
        .map(|n| {
            let status = NodeStatus::try_from(n.status)
                .map(|s| s.as_str_name())
                .unwrap_or("UNKNOWN");
            let usage: BTreeMap<&str, Value> = n
                .total_resources
                .iter()
                .filter(|(k, _)| !k.starts_with("node:") && !k.contains("_group_"))
                .map(|(k, total)| {
                    let free = n.available_resources.get(k).copied().unwrap_or(0.0);
                    (
                        k.as_str(),
                        json!({ "used": (total - free).max(0.0), "total": total }),
                    )
                })
                .collect();
            json!({
                "node_id": n.node_id,
                "node_ip": n.node_ip_address,
                "is_head": n.is_head_node,
                "node_type": n.ray_node_type_name,
                "instance_id": n.instance_id,
                "status": status,
                "idle_ms": n.idle_duration_ms,
                "resources": usage,
            })
        })
        .collect();
    nodes.sort_by_key(|n| {
        (
            !n["is_head"].as_bool().unwrap_or(false),
            n["status"] == "DEAD",
            n["node_id"].to_string(),
        )
    });
    let autoscaler = reply.autoscaling_state.as_ref().map(|a| {
        json!({
            "pending_launches": a.pending_instance_requests.iter().map(|p| json!({"node_type": p.ray_node_type_name, "count": p.count})).collect::<Vec<_>>(),
            "pending_nodes": a.pending_instances.len(),
            "failures": a.failed_instance_requests.len(),
        })
    });
    axum::Json(json!({
        "session_name": app.session_name,
        "status_text": text,
        "nodes": nodes,
        "autoscaler": autoscaler,
    }))
    .into_response()
}

/// `GET /api/actors`: the newest actors, alive and dead.
pub async fn actors(State(app): State<Arc<App>>) -> Response {
    let reply = app
        .gcs
        .retry("get_all_actor_info", DEFAULT_PATIENCE, |c| async move {
            c.actors
                .clone()
                .get_all_actor_info(GetAllActorInfoRequest::default())
                .await
                .map(|r| r.into_inner())
        })
        .await;
    let mut actors = match reply {
        Ok(r) => r.actors,
        Err(s) => return unavailable("the actors", &s),
    };
    actors.sort_by_key(|a| std::cmp::Reverse(a.start_time_ms));
    actors.truncate(MAX_ACTORS);
    let out: Vec<Value> = actors
        .iter()
        .map(|a| {
            json!({
                "actor_id": a.actor_id,
                "class_name": a.class_name,
                "name": a.name,
                "state": a.state,
                "job_id": a.job_id,
                "node_id": a.node_id,
                "pid": a.pid,
                "num_restarts": a.num_restarts,
                "death_cause": a.death_cause,
            })
        })
        .collect();
    axum::Json(out).into_response()
}

/// `GET /api/dashboard/jobs`: the jobs with `env_vars` values hidden (a browser
/// has no need for secrets).
pub async fn jobs_for_page(State(app): State<Arc<App>>) -> Response {
    match app.jobs.list().await {
        Ok(mut jobs) => {
            jobs.reverse();
            axum::Json(jobs.iter().map(|j| j.details(true)).collect::<Vec<_>>()).into_response()
        }
        Err(e) => crate::api::job_error(e),
    }
}
