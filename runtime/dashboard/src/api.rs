//! Ray's Jobs REST API (`/api/version`, `/api/jobs/...`, `/api/packages/...`),
//! with Ray 2.60's paths and JSON fields, so Ray's `JobSubmissionClient` and
//! `ray job` work against it unchanged.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::App;
use crate::jobs::manager::JobError;
use crate::jobs::model::SubmitRequest;
use crate::packages::{self, MAX_PACKAGE_BYTES, PackageName};

/// The Jobs API's version (Ray 2.60's).
pub const API_VERSION: &str = "4";
/// The Ray version the API reports (Ray's clients check it).
pub const RAY_VERSION: &str = "2.60.0";

/// The routes.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/api/version", get(version))
        .route(
            "/api/packages/{protocol}/{package_name}",
            get(package_exists)
                .put(upload_package)
                .layer(DefaultBodyLimit::max(MAX_PACKAGE_BYTES)),
        )
        .route("/api/jobs/", post(submit).get(list))
        .route("/api/jobs/{id}", get(job_info).delete(delete))
        .route("/api/jobs/{id}/stop", post(stop))
        .route("/api/jobs/{id}/logs", get(crate::logs::get_logs))
        .route("/api/jobs/{id}/logs/tail", get(crate::logs::tail_logs))
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (status, body.into()).into_response()
}

/// A refusal as Ray's server words it: plain text with the status.
pub fn job_error(e: JobError) -> Response {
    match e {
        JobError::NotFound(_) => text(StatusCode::NOT_FOUND, e.to_string()),
        JobError::BadRequest(_) => text(StatusCode::BAD_REQUEST, e.to_string()),
        JobError::Gcs(_) => text(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn version(State(app): State<Arc<App>>) -> Response {
    axum::Json(json!({
        "version": API_VERSION,
        "ray_version": RAY_VERSION,
        "ray_commit": "ray-rs",
        "session_name": app.session_name,
    }))
    .into_response()
}

async fn package_exists(
    State(app): State<Arc<App>>,
    Path((protocol, name)): Path<(String, String)>,
) -> Response {
    let name = match PackageName::from_parts(&protocol, &name) {
        Ok(n) => n,
        Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match packages::exists(&app.gcs, &name).await {
        Ok(true) => StatusCode::OK.into_response(),
        Ok(false) => text(
            StatusCode::NOT_FOUND,
            format!("Package {} does not exist", name.uri()),
        ),
        Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn upload_package(
    State(app): State<Arc<App>>,
    Path((protocol, name)): Path<(String, String)>,
    body: bytes::Bytes,
) -> Response {
    let name = match PackageName::from_parts(&protocol, &name) {
        Ok(n) => n,
        Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
    };
    if zip::ZipArchive::new(std::io::Cursor::new(&body[..])).is_err() {
        return text(
            StatusCode::BAD_REQUEST,
            format!("the body of PUT {} is not a zip file", name.uri()),
        );
    }
    match packages::store(&app.gcs, &name, body).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn submit(State(app): State<Arc<App>>, body: bytes::Bytes) -> Response {
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("the request body is not JSON: {e}"),
            );
        }
    };
    let req = match SubmitRequest::parse(&value) {
        Ok(r) => r,
        Err(m) => return text(StatusCode::BAD_REQUEST, m),
    };
    match app.jobs.submit(req).await {
        Ok(id) => axum::Json(json!({ "submission_id": id, "job_id": id })).into_response(),
        Err(e) => job_error(e),
    }
}

async fn list(State(app): State<Arc<App>>) -> Response {
    match app.jobs.list().await {
        Ok(jobs) => {
            axum::Json(jobs.iter().map(|j| j.details(false)).collect::<Vec<_>>()).into_response()
        }
        Err(e) => job_error(e),
    }
}

async fn job_info(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    match app.jobs.find(&id).await {
        Ok(job) => axum::Json(job.details(false)).into_response(),
        Err(e) => job_error(e),
    }
}

async fn stop(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    match app.jobs.stop(&id).await {
        Ok(stopped) => axum::Json(json!({ "stopped": stopped })).into_response(),
        Err(e) => job_error(e),
    }
}

async fn delete(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    match app.jobs.delete(&id).await {
        Ok(deleted) => axum::Json(json!({ "deleted": deleted })).into_response(),
        Err(e) => job_error(e),
    }
}
