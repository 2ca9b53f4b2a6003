use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::{get, post};
use ray_common::auth::{AuthConfig, ClusterToken};
use tower::ServiceExt;

use super::*;

fn auth() -> ray_common::auth::ServerAuth {
    AuthConfig {
        token: Some(ClusterToken::from_secret("s3cret;=,").unwrap()),
    }
    .server_check()
}

fn app(hits: Arc<AtomicUsize>) -> Router {
    let r = Router::new()
        .route("/open", get(|| async { "hi" }))
        .route("/static/a.js", get(|| async { "js" }))
        .route(
            "/change",
            post(move || {
                let hits = hits.clone();
                async move {
                    hits.fetch_add(1, Ordering::SeqCst);
                    "changed"
                }
            }),
        );
    require_token(r, auth(), &["/open", "/static/*"])
}

async fn status(app: Router, req: Request<Body>) -> (StatusCode, String) {
    let res = app.oneshot(req).await.unwrap();
    let code = res.status();
    let body = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    (code, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn refuses_without_token_and_runs_nothing() {
    let hits = Arc::new(AtomicUsize::new(0));
    let req = Request::post("/change").body(Body::empty()).unwrap();
    let (code, body) = status(app(hits.clone()), req).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert!(body.contains("Authorization: Bearer <token>"), "{body}");
    let wrong = Request::post("/change")
        .header("authorization", "Bearer nope")
        .body(Body::empty())
        .unwrap();
    let (code, body) = status(app(hits.clone()), wrong).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert!(
        !body.contains("nope"),
        "a refusal must not echo what was sent: {body}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn accepts_the_bearer_header_and_the_login_cookie() {
    let hits = Arc::new(AtomicUsize::new(0));
    let req = Request::post("/change")
        .header("authorization", "Bearer s3cret;=,")
        .body(Body::empty())
        .unwrap();
    assert_eq!(status(app(hits.clone()), req).await.0, StatusCode::OK);
    let cookie = login_cookie("s3cret;=,");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    let pair = cookie.split(';').next().unwrap().to_string();
    let req = Request::post("/change")
        .header("cookie", format!("other=1; {pair}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(status(app(hits.clone()), req).await.0, StatusCode::OK);
    let bad = Request::post("/change")
        .header("cookie", "ray_token=zz")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        status(app(hits.clone()), bad).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn open_paths_need_no_token() {
    let hits = Arc::new(AtomicUsize::new(0));
    let req = Request::get("/open").body(Body::empty()).unwrap();
    assert_eq!(status(app(hits.clone()), req).await.0, StatusCode::OK);
    let req = Request::get("/static/a.js").body(Body::empty()).unwrap();
    assert_eq!(status(app(hits.clone()), req).await.0, StatusCode::OK);
    let req = Request::get("/open/more").body(Body::empty()).unwrap();
    assert_eq!(status(app(hits), req).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn serves_on_a_port_and_stops_when_cancelled() {
    let listener = bind(IpAddr::V4(Ipv4Addr::LOCALHOST), 0).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(serve(
        listener,
        app(Arc::new(AtomicUsize::new(0))),
        stop.clone(),
    ));
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET /open HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(
        out.starts_with("HTTP/1.1 200") && out.ends_with("hi"),
        "{out}"
    );
    stop.cancel();
    task.await.unwrap().unwrap();
    let taken = bind(addr.ip(), addr.port()).await;
    assert!(taken.is_ok(), "the port is free again after shutdown");
}

#[tokio::test]
async fn a_taken_port_is_a_clear_error() {
    let first = bind(IpAddr::V4(Ipv4Addr::LOCALHOST), 0).await.unwrap();
    let port = first.local_addr().unwrap().port();
    let e = bind(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains(&format!("127.0.0.1:{port}")), "{e}");
}
