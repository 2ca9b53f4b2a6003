//! RPC plumbing shared by every server and client: the security settings (token and
//! TLS), a server builder with the auth layer and limits already in place, a bounded
//! listener, and client channels that attach the token.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::service::interceptor::{InterceptedService, InterceptorLayer};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::{Endpoint, Server};
use tower::layer::util::{Identity, Stack};

use crate::auth::{AuthConfig, AuthError, ClientAuth, ServerAuth};
use crate::tls::{TlsError, TlsSettings};

/// Largest message any server decodes. Control messages are small; object payloads
/// travel in chunks below this size.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// HTTP/2 flow-control window of one stream: an object chunk (4 MiB) flows
/// without waiting for window updates (the protocol's default is 64 KiB).
pub const STREAM_WINDOW_BYTES: u32 = 8 * 1024 * 1024;
/// Largest HTTP/2 frame a peer may send us (the default is 16 KiB, which cuts a
/// 4 MiB chunk into 256 frames).
pub const MAX_FRAME_BYTES: u32 = 1024 * 1024;
/// Window of a whole connection: several chunks in flight at once.
pub const CONNECTION_WINDOW_BYTES: u32 = 64 * 1024 * 1024;

/// Default cap on simultaneous connections per server.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;

/// A client channel that attaches the cluster token to every call.
pub type Channel = InterceptedService<tonic::transport::Channel, ClientAuth>;

/// The server type every process builds services on.
pub type SecureServer = Server<Stack<InterceptorLayer<ServerAuth>, Identity>>;

/// A [`SecureServer`] with its services added.
pub type SecureRouter = tonic::transport::server::Router<Stack<InterceptorLayer<ServerAuth>, Identity>>;

/// Token and TLS settings of one process.
#[derive(Debug, Clone)]
pub struct Security {
    /// The cluster token (or none when disabled).
    pub auth: AuthConfig,
    /// TLS certificates, when `RAY_USE_TLS` is on.
    pub tls: Option<TlsSettings>,
}

/// Why the security settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// Token problem.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// TLS problem.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

impl Security {
    /// For clients and joining nodes: the token must exist.
    pub fn from_env() -> Result<Self, SecurityError> {
        Ok(Self { auth: AuthConfig::from_env()?, tls: TlsSettings::from_env()? })
    }

    /// For a new head: creates `~/.ray/auth_token` when no token exists. Returns the
    /// created file's path, if any.
    pub fn from_env_or_create_token() -> Result<(Self, Option<std::path::PathBuf>), SecurityError> {
        let tls = TlsSettings::from_env()?;
        let (auth, created) = AuthConfig::from_env_or_create()?;
        Ok((Self { auth, tls }, created))
    }

    /// Environment for a child process: the token by value (never on its command
    /// line) and the TLS file paths.
    pub fn child_env(&self) -> Vec<(&'static str, String)> {
        let mut env = self.auth.child_env();
        if self.tls.is_some() {
            env.extend(TlsSettings::child_env());
        }
        env
    }

    /// A server builder with the auth layer, TLS and protocol limits in place.
    pub fn server_builder(&self) -> Result<SecureServer, tonic::transport::Error> {
        let mut b = Server::builder()
            .tcp_nodelay(true)
            .http2_max_header_list_size(Some(16 * 1024))
            .max_concurrent_streams(Some(4096))
            .initial_stream_window_size(Some(STREAM_WINDOW_BYTES))
            .initial_connection_window_size(Some(CONNECTION_WINDOW_BYTES))
            .max_frame_size(Some(MAX_FRAME_BYTES))
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)));
        if let Some(tls) = &self.tls {
            b = b.tls_config(tls.server_config())?;
        }
        Ok(b.layer(InterceptorLayer::new(self.auth.server_check())))
    }

    /// Connects to `host:port`, failing after `timeout` when nothing answers.
    pub async fn connect(&self, addr: &str, timeout: Duration) -> Result<Channel, ConnectError> {
        let endpoint = self.endpoint(addr, timeout)?;
        let ch = tokio::time::timeout(timeout, endpoint.connect())
            .await
            .map_err(|_| ConnectError::Timeout { addr: addr.to_string(), timeout })?
            .map_err(|e| ConnectError::Unreachable { addr: addr.to_string(), detail: error_chain(&e) })?;
        Ok(InterceptedService::new(ch, self.auth.client_attach()))
    }

    /// A channel that connects on first use and reconnects after failures.
    pub fn connect_lazy(&self, addr: &str, timeout: Duration) -> Result<Channel, ConnectError> {
        let endpoint = self.endpoint(addr, timeout)?;
        Ok(InterceptedService::new(endpoint.connect_lazy(), self.auth.client_attach()))
    }

    fn endpoint(&self, addr: &str, timeout: Duration) -> Result<Endpoint, ConnectError> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut ep = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| ConnectError::BadAddress { addr: addr.to_string(), detail: e.to_string() })?
            .connect_timeout(timeout)
            .tcp_nodelay(true)
            .initial_stream_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
            .max_frame_size(MAX_FRAME_BYTES)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20));
        if let Some(tls) = &self.tls {
            let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
            let host = host.trim_start_matches('[').trim_end_matches(']');
            ep = ep
                .tls_config(tls.client_config(host))
                .map_err(|e| ConnectError::BadAddress { addr: addr.to_string(), detail: error_chain(&e) })?;
        }
        Ok(ep)
    }
}

/// A connection that could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Not `host:port`.
    #[error("{addr:?} is not a valid address (expected HOST:PORT): {detail}")]
    BadAddress {
        /// What was given.
        addr: String,
        /// Parser detail.
        detail: String,
    },
    /// Nothing answered in time.
    #[error("nothing answered at {addr} within {timeout:?}")]
    Timeout {
        /// Where we tried.
        addr: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// The connection was refused or failed.
    #[error("cannot connect to {addr}: {detail}")]
    Unreachable {
        /// Where we tried.
        addr: String,
        /// The error chain.
        detail: String,
    },
}

/// An error and its sources on one line.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// Explains a failed call to a person, naming the address.
pub fn explain_status(addr: &str, status: &tonic::Status) -> String {
    match status.code() {
        tonic::Code::Unauthenticated => format!("{addr} refused our cluster token: {}", status.message()),
        tonic::Code::Unavailable => format!("nothing answers at {addr} ({})", status.message()),
        tonic::Code::DeadlineExceeded => format!("{addr} did not answer in time"),
        _ => format!("{addr}: {} ({:?})", status.message(), status.code()),
    }
}

/// A TCP connection holding a slot of its server's connection limit.
pub struct LimitedConn {
    inner: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl Connected for LimitedConn {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> TcpConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for LimitedConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Accepts connections while fewer than `max` are open; past that, new peers wait in
/// the kernel's backlog. Accept errors (e.g. out of file descriptors) are logged
/// and retried after a pause instead of ending the server.
pub fn bounded_incoming(
    listener: TcpListener,
    max: usize,
) -> impl Stream<Item = Result<LimitedConn, std::io::Error>> + Send + 'static {
    let sem = Arc::new(Semaphore::new(max));
    futures::stream::unfold((listener, sem), |(listener, sem)| async move {
        loop {
            let Ok(permit) = sem.clone().acquire_owned().await else { return None };
            match listener.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let conn = LimitedConn { inner: stream, _permit: permit };
                    return Some((Ok(conn), (listener, sem)));
                }
                Err(e) => {
                    crate::logging::warn_rate_limited(format_args!("accept failed: {e}"));
                    drop(permit);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    })
}

/// Pending connections the kernel queues for a listener (a restarted head may see
/// thousands of raylets reconnect at once).
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a TCP listener, with an error that names the address.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, std::io::Error> {
    let name = |e: std::io::Error| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"));
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }.map_err(name)?;
    socket.set_reuseaddr(true).map_err(name)?;
    socket.bind(addr).map_err(name)?;
    socket.listen(LISTEN_BACKLOG).map_err(name)
}
