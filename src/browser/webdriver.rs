//! `/webdriver`: W3C WebDriver requests of functions come in; they are answered from the
//! browser pool. `POST …/session` leases a warm session (answering its id and
//! capabilities in the W3C shape), `DELETE …/session/ID` releases it, and every other
//! `…/session/ID/…` request is proxied to ChromeDriver when the asker holds that session.
//!
//! The prefix says who asks: `/webdriver/` (anyone on this machine),
//! `/webdriver/fn/NAME/` (a function) or `/webdriver/fn/NAME/call/CALL_ID/` (one call of
//! it, so the lease ends with the call). A session is reachable only under the prefix it
//! was leased under. Only peers on loopback or on an allowed network (the functions'
//! Docker network) are served: WebDriver has no authentication of its own.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use http::{header, HeaderValue, Method, StatusCode};
use serde_json::json;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{BrowserError, Owner};
use crate::channels::api::openapi::ErrorBody;
use crate::server::AppState;

/// Largest WebDriver request body (file uploads are base64 in JSON).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// The `/webdriver` routes alone: what the listener on the functions' Docker network
/// serves.
pub fn function_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/webdriver/{*path}", any(handle))
        .route("/webdriver", any(|| async { not_found("") }))
}

/// `/system/browser` and the activations' screenshots, described in `/openapi.json`.
pub fn documented_routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(system_status))
        .routes(routes!(activation))
        .routes(routes!(screenshot))
}

/// The base URL a function uses: the gateway's `base` (e.g. `http://127.0.0.1:8080`)
/// with the function's (and, for one call, the call's) prefix, ending in `/` as
/// WebDriver clients such as fantoccini expect.
pub fn function_url(base: &str, function: &str, call: Option<&str>) -> String {
    let base = base.trim_end_matches('/');
    match call.filter(|c| {
        c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    }) {
        Some(call) => format!("{base}/webdriver/fn/{function}/call/{call}/"),
        None => format!("{base}/webdriver/fn/{function}/"),
    }
}

/// A W3C error answer.
fn w3c_error(status: StatusCode, error: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"value": {"error": error, "message": message, "stacktrace": ""}})),
    )
        .into_response()
}

fn not_found(path: &str) -> Response {
    w3c_error(
        StatusCode::NOT_FOUND,
        "unknown command",
        &format!("no WebDriver command at /webdriver/{path}"),
    )
}

impl IntoResponse for BrowserError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        match self {
            BrowserError::Disabled(_) => w3c_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "session not created",
                &message,
            ),
            BrowserError::QueueFull(_) => {
                let mut response = w3c_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "session not created",
                    &message,
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
                response
            }
            BrowserError::QueueTimeout(_) => w3c_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "session not created",
                &message,
            ),
            BrowserError::UnknownSession(_) => {
                w3c_error(StatusCode::NOT_FOUND, "invalid session id", &message)
            }
            BrowserError::Driver(_) => {
                tracing::error!(error = %message, "browser pool failure");
                w3c_error(StatusCode::BAD_GATEWAY, "unknown error", &message)
            }
        }
    }
}

/// Whether `peer` may use the endpoint.
fn allowed(state: &AppState, peer: Option<IpAddr>) -> bool {
    match peer {
        // No socket (a test calling the router directly).
        None => true,
        Some(ip) => {
            let ip = match ip {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
                v4 => v4,
            };
            ip.is_loopback() || state.browser.allows(ip)
        }
    }
}

/// Splits `fn/NAME/call/ID/rest…` into the owner and the rest.
fn owner_of(path: &str) -> (Owner, Vec<&str>) {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    match parts.as_slice() {
        ["fn", function, "call", call, rest @ ..] => (
            Owner {
                function: Some((*function).to_owned()),
                call: Some((*call).to_owned()),
            },
            rest.to_vec(),
        ),
        ["fn", function, rest @ ..] => (
            Owner {
                function: Some((*function).to_owned()),
                call: None,
            },
            rest.to_vec(),
        ),
        rest => (
            Owner {
                function: None,
                call: None,
            },
            rest.to_vec(),
        ),
    }
}

async fn handle(
    State(state): State<Arc<AppState>>,
    Path(path): Path<String>,
    request: Request,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if !allowed(&state, peer) {
        tracing::warn!(peer = ?peer, "webdriver request from a peer that is not allowed; refused");
        return w3c_error(
            StatusCode::FORBIDDEN,
            "unknown error",
            "the WebDriver endpoint serves only this machine and the functions' network",
        );
    }
    let pool = &state.browser;
    let (owner, rest) = owner_of(&path);
    let method = request.method().clone();
    match (&method, rest.as_slice()) {
        (&Method::GET, ["status"]) => {
            let status = pool.status();
            let message = match &status.reason {
                Some(reason) => format!("browser automation is off: {reason}"),
                None => format!(
                    "{} warm, {} in use of {}",
                    status.warm, status.in_use, status.max_sessions
                ),
            };
            Json(json!({"value": {"ready": status.enabled, "message": message}})).into_response()
        }
        (&Method::POST, ["session"]) => match pool.lease(owner).await {
            Ok(lease) => Json(json!({"value": {
                "sessionId": lease.session_id,
                "capabilities": lease.capabilities,
            }}))
            .into_response(),
            Err(e) => {
                tracing::warn!(error = %e, "browser lease refused");
                e.into_response()
            }
        },
        (&Method::DELETE, ["session", id]) => match pool.release(&owner, id) {
            Ok(()) => Json(json!({"value": null})).into_response(),
            Err(e) => e.into_response(),
        },
        (_, ["session", id, command @ ..]) if !command.is_empty() => {
            let target = match pool.session_url(&owner, id).await {
                Ok(url) => format!("{url}/{}", command.join("/")),
                Err(e) => return e.into_response(),
            };
            proxy(&state, method, target, request).await
        }
        _ => not_found(&path),
    }
}

/// Forwards one command to ChromeDriver and its answer back.
async fn proxy(state: &AppState, method: Method, target: String, request: Request) -> Response {
    let body = match axum::body::to_bytes(request.into_body(), MAX_BODY).await {
        Ok(body) => body,
        Err(e) => {
            return w3c_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid argument",
                &format!("request body: {e}"),
            )
        }
    };
    let mut outbound = state.browser.http().request(method, &target);
    if !body.is_empty() {
        outbound = outbound
            .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
            .body(body);
    }
    match outbound.send().await {
        Ok(answer) => {
            let status = answer.status();
            match answer.bytes().await {
                Ok(bytes) => (
                    status,
                    [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
                    bytes,
                )
                    .into_response(),
                Err(e) => BrowserError::Driver(format!("reading chromedriver's answer: {e}"))
                    .into_response(),
            }
        }
        Err(e) => BrowserError::Driver(format!("chromedriver did not answer: {e}")).into_response(),
    }
}

/// `GET /system/browser`: the pool's counts and sessions (token with `functions:read`).
#[utoipa::path(get, path = "/system/browser", tag = "browser", description = "The browser pool: warm, leased and queued sessions, limits, crashes.", security(("bearer" = [])), responses((status = 200, description = "The pool's state", body = Object), (status = 401, description = "No valid bearer token", body = ErrorBody), (status = 403, description = "The token lacks the scope", body = ErrorBody)))]
async fn system_status(
    State(state): State<Arc<AppState>>,
    headers: http::HeaderMap,
) -> Result<Json<super::PoolStatus>, crate::error::ApiError> {
    state
        .auth
        .check(&headers, crate::auth::scope::FUNCTIONS_READ)
        .await?;
    Ok(Json(state.browser.status()))
}

/// Header of `GET /system/activations/ID/screenshot` naming the page's URL.
pub const HEADER_PAGE_URL: &str = "x-hark-page-url";

/// `GET /system/activations/ID`: one activation, with its screenshot's URL when a failed
/// browser call left one.
#[utoipa::path(get, path = "/system/activations/{call_id}", tag = "activations", description = "One activation record; `screenshot` names the failure screenshot when a browser call left one.", security(("bearer" = [])), params(("call_id" = String, Path, description = "The call id")), responses((status = 200, description = "The activation", body = Object), (status = 404, description = "No such activation", body = ErrorBody), (status = 401, description = "No valid bearer token", body = ErrorBody), (status = 403, description = "The token lacks the scope", body = ErrorBody)))]
async fn activation(
    State(state): State<Arc<AppState>>,
    headers: http::HeaderMap,
    Path(call_id): Path<String>,
) -> Result<Response, crate::error::ApiError> {
    state
        .auth
        .check(&headers, crate::auth::scope::FUNCTIONS_READ)
        .await?;
    let store = &state.registry.store;
    let Some(activation) = store.activation(&call_id).await? else {
        return Err(crate::error::ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no activation with call id {call_id}"),
        ));
    };
    let mut body = serde_json::to_value(&activation).unwrap_or_default();
    if let Some(shot) = store.screenshot(&call_id).await? {
        body["screenshot"] = json!({
            "url": shot.url,
            "bytes": shot.png.len(),
            "takenAt": shot.taken_at,
            "path": format!("/system/activations/{call_id}/screenshot"),
        });
    }
    Ok(Json(body).into_response())
}

/// `GET /system/activations/ID/screenshot`: the PNG of the last page a failed browser
/// call showed; its URL in [`HEADER_PAGE_URL`].
#[utoipa::path(get, path = "/system/activations/{call_id}/screenshot", tag = "activations", description = "The PNG of the last page a failed browser call showed; the page's URL in `X-Hark-Page-Url`.", security(("bearer" = [])), params(("call_id" = String, Path, description = "The call id")), responses((status = 200, description = "The screenshot", body = Vec<u8>, content_type = "image/png"), (status = 404, description = "No screenshot for that call", body = ErrorBody), (status = 401, description = "No valid bearer token", body = ErrorBody), (status = 403, description = "The token lacks the scope", body = ErrorBody)))]
async fn screenshot(
    State(state): State<Arc<AppState>>,
    headers: http::HeaderMap,
    Path(call_id): Path<String>,
) -> Result<Response, crate::error::ApiError> {
    state
        .auth
        .check(&headers, crate::auth::scope::FUNCTIONS_READ)
        .await?;
    let Some(shot) = state.registry.store.screenshot(&call_id).await? else {
        return Err(crate::error::ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no screenshot for call {call_id}"),
        ));
    };
    let mut response = ([(header::CONTENT_TYPE, "image/png")], shot.png).into_response();
    if let Ok(url) = HeaderValue::from_str(&shot.url) {
        response.headers_mut().insert(HEADER_PAGE_URL, url);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_names_the_owner() {
        let (owner, rest) = owner_of("fn/shop/call/abc-1/session/42/url");
        assert_eq!(owner.function.as_deref(), Some("shop"));
        assert_eq!(owner.call.as_deref(), Some("abc-1"));
        assert_eq!(rest, ["session", "42", "url"]);
        let (owner, rest) = owner_of("session");
        assert_eq!(owner.function, None);
        assert_eq!(rest, ["session"]);
    }

    #[test]
    fn function_urls_end_in_a_slash_and_skip_odd_call_ids() {
        assert_eq!(
            function_url("http://127.0.0.1:8080/", "shop", Some("c1")),
            "http://127.0.0.1:8080/webdriver/fn/shop/call/c1/"
        );
        assert_eq!(
            function_url("http://127.0.0.1:8080", "shop", Some("a/b")),
            "http://127.0.0.1:8080/webdriver/fn/shop/"
        );
    }
}
