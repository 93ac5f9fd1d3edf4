//! `/webdriver`: W3C WebDriver requests of functions come in; they are answered from the
//! browser pool. `POST …/session` leases a warm session (answering its id and
//! capabilities in the W3C shape), `DELETE …/session/ID` releases it, and the W3C
//! commands a script needs (`…/session/ID/…`, see [`COMMANDS`]) are proxied to
//! ChromeDriver when the asker holds that session.
//!
//! Every request carries a capability in its prefix: `/webdriver/fn/NAME/k/SECRET/` (a
//! function) or `/webdriver/fn/NAME/call/CALL_ID/k/SECRET/` (one call of it, so the lease
//! ends with the call); see [`super::capability`]. A session is reachable only under the
//! prefix it was leased under. A missing or wrong secret gets the same 404 as an unknown
//! command, whoever asks and from wherever: no address is trusted. These routes are served
//! only on the functions' listeners, never on the public one ([`public_routes`]).

use std::sync::Arc;

use axum::extract::{Path, Request, State};
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
use crate::telemetry::throttle::{Throttle, REPEAT_INTERVAL};

/// The refusals below are logged once per kind per interval (a function retrying in a
/// loop, or a flood, costs one line and a count).
static REFUSED: Throttle = Throttle::new(REPEAT_INTERVAL);

/// Largest WebDriver request body (file uploads are base64 in JSON).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// The W3C WebDriver commands forwarded to ChromeDriver, as (method, path after
/// `session/ID/`); `*` is one path segment (an element, shadow root, cookie or property
/// name). Anything else, vendor commands above all (`goog/cdp/execute`, `se/file`,
/// downloads), is refused with `unknown command` and never reaches ChromeDriver.
/// <https://www.w3.org/TR/webdriver2/#endpoints>
pub const COMMANDS: &[(&str, &str)] = &[
    ("GET", "timeouts"),
    ("POST", "timeouts"),
    ("POST", "url"),
    ("GET", "url"),
    ("POST", "back"),
    ("POST", "forward"),
    ("POST", "refresh"),
    ("GET", "title"),
    ("GET", "window"),
    ("DELETE", "window"),
    ("POST", "window"),
    ("POST", "window/new"),
    ("GET", "window/handles"),
    ("POST", "frame"),
    ("POST", "frame/parent"),
    ("GET", "window/rect"),
    ("POST", "window/rect"),
    ("POST", "window/maximize"),
    ("POST", "window/minimize"),
    ("POST", "window/fullscreen"),
    ("GET", "element/active"),
    ("GET", "element/*/shadow"),
    ("POST", "element"),
    ("POST", "elements"),
    ("POST", "element/*/element"),
    ("POST", "element/*/elements"),
    ("POST", "shadow/*/element"),
    ("POST", "shadow/*/elements"),
    ("GET", "element/*/selected"),
    ("GET", "element/*/attribute/*"),
    ("GET", "element/*/property/*"),
    ("GET", "element/*/css/*"),
    ("GET", "element/*/text"),
    ("GET", "element/*/name"),
    ("GET", "element/*/rect"),
    ("GET", "element/*/enabled"),
    ("GET", "element/*/displayed"),
    ("GET", "element/*/computedrole"),
    ("GET", "element/*/computedlabel"),
    ("POST", "element/*/click"),
    ("POST", "element/*/clear"),
    ("POST", "element/*/value"),
    ("GET", "source"),
    ("POST", "execute/sync"),
    ("POST", "execute/async"),
    ("GET", "cookie"),
    ("GET", "cookie/*"),
    ("POST", "cookie"),
    ("DELETE", "cookie/*"),
    ("DELETE", "cookie"),
    ("POST", "actions"),
    ("DELETE", "actions"),
    ("POST", "alert/dismiss"),
    ("POST", "alert/accept"),
    ("GET", "alert/text"),
    ("POST", "alert/text"),
    ("GET", "screenshot"),
    ("GET", "element/*/screenshot"),
    ("POST", "print"),
];

/// Whether `method command` is one of [`COMMANDS`]. A `*` matches one segment that is
/// neither empty nor `.`/`..` (a path that would climb out of the session).
pub fn allowed_command(method: &Method, command: &[&str]) -> bool {
    COMMANDS.iter().any(|(m, pattern)| {
        let pattern: Vec<&str> = pattern.split('/').collect();
        *m == method.as_str()
            && pattern.len() == command.len()
            && pattern.iter().zip(command).all(|(p, c)| match *p {
                "*" => !c.is_empty() && *c != "." && *c != "..",
                literal => literal == *c,
            })
    })
}

/// The `/webdriver` routes alone: what the functions' listeners serve (loopback for
/// process functions, the Docker network for containers).
pub fn function_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/webdriver/{*path}", any(handle))
        .route("/webdriver", any(|| async { not_found() }))
}

/// What the public listener answers under `/webdriver`: 404 `unknown command`, with or
/// without a capability, so that nothing reaches the pool through `--bind`.
pub fn public_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/webdriver/{*path}", any(|| async { not_found() }))
        .route("/webdriver", any(|| async { not_found() }))
}

/// `/system/browser` and the activations' screenshots, described in `/openapi.json`.
pub fn documented_routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(system_status))
        .routes(routes!(screenshot))
}

/// A W3C error answer.
fn w3c_error(status: StatusCode, error: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"value": {"error": error, "message": message, "stacktrace": ""}})),
    )
        .into_response()
}

/// The answer to a path that is no command, or to a missing or wrong capability: the
/// same, so the answer does not tell a good prefix from a bad one. The message names no
/// part of the path (it may hold a secret).
fn not_found() -> Response {
    w3c_error(
        StatusCode::NOT_FOUND,
        "unknown command",
        "no such WebDriver command here (is HARK_WEBDRIVER_URL complete?)",
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
            BrowserError::Capability(_) => {
                tracing::error!(error = %message, "browser pool failure");
                w3c_error(StatusCode::INTERNAL_SERVER_ERROR, "unknown error", &message)
            }
        }
    }
}

/// A request's prefix: whose capability it carries, the secret, and the rest of the path.
struct Prefix<'a> {
    owner: Owner,
    secret: &'a str,
    rest: Vec<&'a str>,
}

/// Splits `fn/NAME/call/ID/k/SECRET/rest…` (or `fn/NAME/k/SECRET/rest…`); `None` for a
/// path without a capability.
fn prefix_of(path: &str) -> Option<Prefix<'_>> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let (function, call, secret, rest) = match parts.as_slice() {
        ["fn", function, "call", call, "k", secret, rest @ ..] => {
            (function, Some(call), secret, rest)
        }
        ["fn", function, "k", secret, rest @ ..] => (function, None, secret, rest),
        _ => return None,
    };
    Some(Prefix {
        owner: Owner {
            function: Some((*function).to_owned()),
            call: call.map(|c| (*c).to_owned()),
        },
        secret,
        rest: rest.to_vec(),
    })
}

async fn handle(State(state): State<Arc<AppState>>, request: Request) -> Response {
    // The raw path: segments are forwarded as they came, never decoded into `/` or `..`.
    let path = request.uri().path().to_owned();
    let path = path.strip_prefix("/webdriver").unwrap_or(&path);
    let pool = &state.browser;
    let Some(Prefix {
        owner,
        secret,
        rest,
    }) = prefix_of(path)
    else {
        crate::warn_repeated!(
            REFUSED,
            "no capability",
            "webdriver request without a capability; refused"
        );
        return not_found();
    };
    let function = owner.function.as_deref().unwrap_or_default();
    if !pool
        .capabilities()
        .check(function, owner.call.as_deref(), secret)
    {
        // The secret is never logged; the names are escaped (they come from the path).
        crate::warn_repeated!(REFUSED, &format!("wrong capability function={function}"), function = ?function, call_id = ?owner.call, "webdriver request with a wrong capability; refused");
        return not_found();
    }
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
        (&Method::POST, ["session"]) => match pool.lease(owner.clone()).await {
            Ok(lease) => Json(json!({"value": {
                "sessionId": lease.session_id,
                "capabilities": lease.capabilities,
            }}))
            .into_response(),
            Err(e) => {
                crate::warn_repeated!(REFUSED, &format!("lease refused function={function} {e}"), function = ?function, error = %e, "browser lease refused");
                e.into_response()
            }
        },
        (&Method::DELETE, ["session", id]) => match pool.release(&owner, id) {
            Ok(()) => Json(json!({"value": null})).into_response(),
            Err(e) => e.into_response(),
        },
        (_, ["session", id, command @ ..]) if !command.is_empty() => {
            if !allowed_command(&method, command) {
                crate::warn_repeated!(REFUSED, &format!("not forwarded function={function}"), function = ?function, %method, command = ?command.join("/"), "webdriver command not forwarded; refused");
                return not_found();
            }
            let target = match pool.session_url(&owner, id).await {
                Ok(url) => format!("{url}/{}", command.join("/")),
                Err(e) => return e.into_response(),
            };
            proxy(&state, method, target, request).await
        }
        _ => not_found(),
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
    if let Some(refused) = refuse_navigation(&body) {
        return refused;
    }
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

/// Whether a browser may be sent to `url` by a WebDriver command: web pages (`http`,
/// `https`), inline documents (`data:`) and the empty page. `file:`, `chrome:`,
/// `view-source:`, `devtools:`, `about:` pages other than `about:blank` (`about:version`
/// is `chrome://version`) and every other scheme are refused; the browser's URL blocklist
/// refuses them too (see [`super::BLOCKED_URLS`]).
pub fn navigable(url: &str) -> bool {
    let url = url.trim();
    if url.eq_ignore_ascii_case("about:blank") {
        return true;
    }
    match url::Url::parse(url) {
        Ok(parsed) => match parsed.scheme() {
            "http" | "https" => parsed.host().is_some(),
            "data" => true,
            _ => false,
        },
        Err(_) => false,
    }
}

/// The refusal of a command whose JSON body names a `url` a browser may not open
/// (`POST …/url`, `POST …/window/new`, or any other command carrying one).
fn refuse_navigation(body: &[u8]) -> Option<Response> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let url = value.get("url")?.as_str()?;
    if navigable(url) {
        return None;
    }
    let scheme = url.split(':').next().unwrap_or_default();
    let scheme: String = scheme.chars().take(32).collect();
    crate::warn_repeated!(REFUSED, &format!("navigation refused scheme={scheme}"), scheme = %scheme, "browser navigation refused");
    Some(w3c_error(
        StatusCode::BAD_REQUEST,
        "invalid argument",
        "pool browsers open only http(s) and data: URLs and about:blank",
    ))
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
    fn the_prefix_names_the_owner_and_its_secret() {
        let p = prefix_of("/fn/shop/call/abc-1/k/s3cr3t/session/42/url").unwrap();
        assert_eq!(p.owner.function.as_deref(), Some("shop"));
        assert_eq!(p.owner.call.as_deref(), Some("abc-1"));
        assert_eq!(p.secret, "s3cr3t");
        assert_eq!(p.rest, ["session", "42", "url"]);
        let p = prefix_of("/fn/shop/k/s3cr3t/session").unwrap();
        assert_eq!(p.owner.call, None);
        assert_eq!(p.rest, ["session"]);
        assert!(prefix_of("/session").is_none());
        assert!(prefix_of("/fn/shop/session").is_none());
        assert!(prefix_of("/fn/shop/call/c1/session").is_none());
    }

    #[test]
    fn only_the_w3c_commands_a_script_needs_are_forwarded() {
        let ok = |m: Method, c: &str| allowed_command(&m, &c.split('/').collect::<Vec<_>>());
        assert!(ok(Method::POST, "url"));
        assert!(ok(Method::GET, "title"));
        assert!(ok(Method::POST, "element/f.1.d.2.e.3/click"));
        assert!(ok(Method::GET, "element/f.1.d.2.e.3/css/background-color"));
        assert!(ok(Method::POST, "execute/sync"));
        assert!(ok(Method::GET, "element/e1/screenshot"));
        assert!(ok(Method::POST, "print"));
        // Vendor commands and downloads.
        assert!(!ok(Method::POST, "goog/cdp/execute"));
        assert!(!ok(Method::POST, "goog/cdp/executeCdpCommand"));
        assert!(!ok(Method::POST, "chromium/send_command_and_get_result"));
        assert!(!ok(Method::POST, "se/file"));
        assert!(!ok(Method::POST, "se/files"));
        assert!(!ok(Method::GET, "se/files"));
        assert!(!ok(Method::DELETE, "se/files"));
        assert!(!ok(Method::GET, "moz/context"));
        // The right path with the wrong method, and paths that climb or trail.
        assert!(!ok(Method::GET, "url/extra"));
        assert!(!ok(Method::DELETE, "title"));
        assert!(!ok(Method::GET, "element/../title"));
        assert!(!ok(Method::GET, "element/./text"));
        assert!(!ok(Method::GET, "element//text"));
    }

    #[test]
    fn only_web_pages_are_navigable() {
        for ok in [
            "https://example.com/",
            "http://127.0.0.1:8080/function/x/",
            "data:text/html,<title>x</title>",
            "about:blank",
            "ABOUT:BLANK",
        ] {
            assert!(navigable(ok), "{ok}");
        }
        for refused in [
            "file:///root/.hark/admin-token",
            "FILE:///etc/passwd",
            " file:///etc/passwd",
            "view-source:http://127.0.0.1/",
            "chrome://version",
            "chrome-untrusted://print/",
            "devtools://devtools/bundled/inspector.html",
            "about:version",
            "javascript:alert(1)",
            "blob:http://x/1",
            "filesystem:http://x/temporary/a",
            "not a url",
        ] {
            assert!(!navigable(refused), "{refused}");
        }
        let refused = refuse_navigation(br#"{"url":"file:///etc/passwd"}"#).unwrap();
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
        assert!(refuse_navigation(br#"{"url":"https://example.com/"}"#).is_none());
        assert!(refuse_navigation(br#"{"type":"tab"}"#).is_none());
    }
}
