//! HTTP serving for the head's ports (the dashboard and the metrics endpoints):
//! binding with a clear error, the cluster-token check every route sits behind,
//! a cap on open connections, and shutdown through one cancellation token.
//!
//! Routes are plain [`axum::Router`]s. Request bodies are bounded by axum's
//! extractors (2 MiB unless a route sets [`axum::extract::DefaultBodyLimit`]).

mod auth;
mod listener;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

pub use auth::{LOGIN_COOKIE, login_cookie, logout_cookie, require_token, token_is_valid};
pub use listener::Peer;

use tokio_util::sync::CancellationToken;

/// How many connections one server keeps open at once; more wait in the backlog.
pub const MAX_CONNECTIONS: usize = 256;

/// How long shutdown waits for requests in flight before it gives up on them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Why a server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The address could not be bound (taken, not this machine's, no permission).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("the HTTP server on {addr} failed: {source}")]
    Serve {
        /// Where it listened.
        addr: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Binds `host:port` (port 0 picks a free one; read it back with `local_addr`).
pub async fn bind(host: IpAddr, port: u16) -> Result<tokio::net::TcpListener, HttpError> {
    let addr = SocketAddr::new(host, port);
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then stops taking
/// connections and gives requests in flight [`SHUTDOWN_GRACE`] to finish.
/// Handlers can read the peer's address with `ConnectInfo<Peer>`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: CancellationToken,
) -> Result<(), HttpError> {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    let bounded = listener::Bounded::new(listener, MAX_CONNECTIONS);
    let make = router.into_make_service_with_connect_info::<Peer>();
    let stop = shutdown.clone();
    let server =
        axum::serve(bounded, make).with_graceful_shutdown(async move { stop.cancelled().await });
    let server = std::future::IntoFuture::into_future(server);
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => r.map_err(|source| HttpError::Serve { addr, source }),
        () = async { shutdown.cancelled().await; tokio::time::sleep(SHUTDOWN_GRACE).await } => {
            tracing::warn!(addr, grace = ?SHUTDOWN_GRACE, "requests still running at shutdown were dropped");
            Ok(())
        }
    }
}

/// A JSON error body `{"error": message}` with a status, for handlers.
pub fn json_error(
    status: axum::http::StatusCode,
    message: impl Into<String>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        status,
        axum::Json(serde_json::json!({ "error": message.into() })),
    )
        .into_response()
}

#[cfg(test)]
mod tests;
