//! The cluster-token check on HTTP: the same token and constant-time compare as
//! gRPC ([`ServerAuth::check_header`]), taken from an `Authorization: Bearer`
//! header or from the dashboard's login cookie.
//!
//! The cookie holds the token hex encoded (so any printable token is a legal
//! cookie value), is `HttpOnly` (page scripts cannot read it) and
//! `SameSite=Strict` (other sites cannot make a browser send it, which also
//! defeats cross-site request forgery and DNS rebinding).

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ray_common::auth::ServerAuth;

/// The name of the dashboard's login cookie.
pub const LOGIN_COOKIE: &str = "ray_token";

const EXPECTED: &str = "an 'Authorization: Bearer <token>' header, or the dashboard's login cookie (sign in at /login)";

/// Puts every route of `router` behind the cluster token, except the paths in
/// `open_paths` (exact paths; one ending in `*` opens every path that starts
/// with what precedes it). A refusal is `401` with a JSON body saying what was
/// expected, and the handler never runs, so it changes nothing.
pub fn require_token(
    router: Router,
    auth: ServerAuth,
    open_paths: &'static [&'static str],
) -> Router {
    router.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            let auth = auth.clone();
            async move {
                if is_open(req.uri().path(), open_paths) {
                    return next.run(req).await;
                }
                match check(&auth, req.headers()) {
                    Ok(()) => next.run(req).await,
                    Err(message) => {
                        ray_common::logging::warn_rate_limited(format_args!(
                            "refused an HTTP request without a valid cluster token (path {:?})",
                            req.uri().path()
                        ));
                        refusal(message)
                    }
                }
            }
        },
    ))
}

/// Whether `token` (as typed into the login form) is the cluster token.
pub fn token_is_valid(auth: &ServerAuth, token: &str) -> bool {
    auth.check_header(Some(format!("Bearer {}", token.trim()).as_bytes()))
        .is_ok()
}

/// The `Set-Cookie` value that signs a browser in.
pub fn login_cookie(token: &str) -> String {
    format!(
        "{LOGIN_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
        hex::encode(token.trim())
    )
}

/// The `Set-Cookie` value that signs a browser out.
pub fn logout_cookie() -> String {
    format!("{LOGIN_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

fn is_open(path: &str, open_paths: &[&str]) -> bool {
    open_paths.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => path == *p,
    })
}

fn check(auth: &ServerAuth, headers: &HeaderMap) -> Result<(), String> {
    let bearer = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    let header_result = auth.check_header(bearer);
    if header_result.is_ok() {
        return Ok(());
    }
    if let Some(token) = cookie_token(headers)
        && token_is_valid(auth, &token)
    {
        return Ok(());
    }
    Err(header_result
        .err()
        .map(|s| s.message().to_string())
        .unwrap_or_default())
}

/// The token in the login cookie, if there is one that decodes.
fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == LOGIN_COOKIE)
        .and_then(|(_, value)| hex::decode(value).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
}

fn refusal(message: String) -> Response {
    let body = serde_json::json!({ "error": message, "expected": EXPECTED });
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        axum::Json(body),
    )
        .into_response()
}
