//! Serving `/metrics` from the daemons: each daemon hands a function that
//! writes its text (`ray_gcs::metrics`, `ray_raylet::metrics`,
//! `ray_autoscaler::metrics`), and this module binds its port, puts the route
//! behind the cluster token (`ray_http::require_token`, as every server) and
//! serves it until shutdown. The text is built off the async threads: it takes
//! the daemon's state lock and may read `/proc`.
//!
//! Where each endpoint is registered, so tools and Prometheus find it: the GCS
//! writes the service discovery file itself, raylets put their port in the
//! node table (`metrics_export_port`), and the autoscaler puts its address in
//! the internal KV under `AutoscalerMetricsAddress`, Ray's key.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use ray_common::rpc::Security;
use tokio_util::sync::CancellationToken;

/// Ray's default port of the autoscaler's endpoint (`AUTOSCALER_METRIC_PORT`).
pub const AUTOSCALER_METRIC_PORT: u16 = 44217;

/// Writes a daemon's `/metrics` text.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// The `/metrics` route, behind the cluster token.
pub fn router(render: Render, security: &Security) -> axum::Router {
    let route = axum::routing::get(move || {
        let render = render.clone();
        async move { answer(tokio::task::spawn_blocking(move || render()).await) }
    });
    ray_http::require_token(
        axum::Router::new().route("/metrics", route),
        security.auth.server_check(),
        &[],
    )
}

fn answer(text: Result<String, tokio::task::JoinError>) -> Response {
    match text {
        Ok(body) => (
            [(header::CONTENT_TYPE, ray_common::metrics::CONTENT_TYPE)],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "building the /metrics answer failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot build the metrics",
            )
                .into_response()
        }
    }
}

/// Serves `render` on `listener` in the background until `shutdown`.
pub fn spawn(
    listener: tokio::net::TcpListener,
    render: Render,
    security: &Security,
    shutdown: CancellationToken,
    daemon: &'static str,
) {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(daemon, %addr, "serving Prometheus metrics at /metrics");
    let app = router(render, security);
    tokio::spawn(async move {
        if let Err(e) = ray_http::serve(listener, app, shutdown).await {
            tracing::error!(daemon, error = %e, "the metrics server stopped");
        }
    });
}

/// Binds `ip:port` for a daemon whose endpoint is optional: a port that cannot
/// be had is logged, and the daemon runs without one (as Ray's autoscaler does).
pub async fn bind_or_warn(
    ip: IpAddr,
    port: u16,
    daemon: &'static str,
) -> Option<tokio::net::TcpListener> {
    match ray_http::bind(ip, port).await {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!(daemon, error = %e, "no /metrics endpoint: {e}");
            None
        }
    }
}

/// `host:port`, bracketing IPv6.
pub fn host_port(addr: SocketAddr) -> String {
    ray_raylet::rpc_address(addr.ip(), addr.port())
}

/// The GCS's endpoint and the service discovery file, for a running GCS.
pub async fn start_gcs(
    gcs: Arc<ray_gcs::Gcs>,
    bind: IpAddr,
    port: u16,
    files: Option<ray_gcs::prom_discovery::DiscoveryFiles>,
    security: &Security,
    shutdown: CancellationToken,
) {
    let Some(listener) = bind_or_warn(bind, port, "gcs_server").await else {
        return;
    };
    let own = listener.local_addr().map(host_port).unwrap_or_default();
    let g = gcs.clone();
    spawn(
        listener,
        Arc::new(move || ray_gcs::metrics::render(&g)),
        security,
        shutdown.clone(),
        "gcs_server",
    );
    if let Some(files) = files {
        tokio::spawn(ray_gcs::prom_discovery::run(gcs, files, own, shutdown));
    }
}

/// Where the GCS writes the service discovery file, given `--temp-root`.
pub fn discovery_files(
    temp_root: Option<PathBuf>,
    session_name: &str,
) -> Option<ray_gcs::prom_discovery::DiscoveryFiles> {
    temp_root.map(|root| ray_gcs::prom_discovery::DiscoveryFiles {
        session_dir: root.join(session_name),
        temp_root: root,
    })
}

/// The autoscaler's endpoint on the head's address, registered in the KV.
pub async fn start_monitor(
    metrics: Arc<ray_autoscaler::metrics::AutoscalerMetrics>,
    gcs: &ray_common::gcs_client::GcsClient,
    ip: IpAddr,
    port: u16,
    security: &Security,
    shutdown: CancellationToken,
) {
    let Some(listener) = bind_or_warn(ip, port, "monitor").await else {
        return;
    };
    let addr = listener.local_addr().map(host_port).unwrap_or_default();
    spawn(
        listener,
        Arc::new(move || metrics.render()),
        security,
        shutdown,
        "monitor",
    );
    if let Err(e) = gcs
        .kv_put("", b"AutoscalerMetricsAddress", addr.clone().into_bytes())
        .await
    {
        tracing::warn!(%addr, error = %e.message(), "cannot register the autoscaler's metrics address in the GCS");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use ray_common::auth::{AuthConfig, ClusterToken};
    use tower::ServiceExt;

    fn security() -> Security {
        Security {
            auth: AuthConfig {
                token: Some(ClusterToken::from_secret("t0ken").unwrap()),
            },
            tls: None,
        }
    }

    async fn get(app: axum::Router, auth: Option<&str>) -> (StatusCode, Option<String>, String) {
        let mut req = Request::get("/metrics");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let res = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let code = res.status();
        let ct = res
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let body = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        (code, ct, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn metrics_need_the_cluster_token() {
        let render: Render = Arc::new(|| "up 1\n".to_string());
        let app = router(render, &security());
        let (code, ct, body) = get(app.clone(), Some("Bearer t0ken")).await;
        assert_eq!((code, body.as_str()), (StatusCode::OK, "up 1\n"));
        assert_eq!(ct.as_deref(), Some(ray_common::metrics::CONTENT_TYPE));
        assert_eq!(get(app.clone(), None).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(
            get(app, Some("Bearer nope")).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
}
