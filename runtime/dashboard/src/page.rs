//! The dashboard page and its sign-in: a static page and script (no build
//! step) that poll the JSON API every second, and a login form that trades the
//! cluster token for an HttpOnly, SameSite=Strict cookie. The token never goes
//! in a URL.

use std::sync::Arc;

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Router, routing::post};
use serde::Deserialize;

use crate::App;

const INDEX: &str = include_str!("../assets/index.html");
const LOGIN: &str = include_str!("../assets/login.html");
const SCRIPT: &str = include_str!("../assets/dashboard.js");
const STYLE: &str = include_str!("../assets/dashboard.css");

/// Paths served without the token: the page shell, its script and style, and
/// the login form. None of them carries cluster data.
pub const OPEN_PATHS: &[&str] = &["/", "/login", "/logout", "/static/*", "/favicon.ico"];

/// The routes.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/", get(|| async { html(INDEX, StatusCode::OK) }))
        .route(
            "/login",
            get(|| async { html(&LOGIN.replace("{{error}}", ""), StatusCode::OK) }).post(login),
        )
        .route("/logout", post(logout))
        .route(
            "/static/dashboard.js",
            get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/static/dashboard.css",
            get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
        )
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/api/cluster_status", get(crate::cluster::cluster_status))
        .route("/api/actors", get(crate::cluster::actors))
        .route("/api/dashboard/jobs", get(crate::cluster::jobs_for_page))
}

/// Headers every page gets: scripts only from this origin, no framing.
fn hardened(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors 'none'; form-action 'self'"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn html(body: &str, status: StatusCode) -> Response {
    hardened(
        (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body.to_string(),
        )
            .into_response(),
    )
}

fn asset(body: &'static str, kind: &'static str) -> Response {
    hardened(([(header::CONTENT_TYPE, kind)], body).into_response())
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(app): State<Arc<App>>, Form(form): Form<LoginForm>) -> Response {
    if ray_http::token_is_valid(&app.auth, &form.token) {
        let mut r = Redirect::to("/").into_response();
        if let Ok(v) = HeaderValue::from_str(&ray_http::login_cookie(&form.token)) {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
        return hardened(r);
    }
    ray_common::logging::warn_rate_limited(format_args!(
        "refused a dashboard sign-in with a wrong token"
    ));
    let page = LOGIN.replace(
        "{{error}}",
        "<p class=\"error\" id=\"error\">That is not this cluster's token. Run <code>ray get-auth-token</code> on the head to see it.</p>",
    );
    html(&page, StatusCode::UNAUTHORIZED)
}

async fn logout() -> Response {
    let mut r = Redirect::to("/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&ray_http::logout_cookie()) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    hardened(r)
}
