//! The web UI at `/ui/`: a browser's requests come in — a session cookie holding an opaque
//! session id, a CSRF token on every form — and HTML pages rendered from the registry, the
//! store, the async queue, the scheduler and the skills go out. `/` redirects here.
//!
//! - Sign-in takes an API token (the admin token of `.hark/admin-token`, or one minted with
//!   `hark token create`) and starts a session kept in the store (with the token's id, never
//!   the token); the cookie holds only the session's random id: `HttpOnly;
//!   SameSite=Strict; Path=/ui`, or, when the gateway's public URL is https,
//!   `__Host-hark_session` with `Secure; Path=/`. Sign-out deletes the session; revoking
//!   its token (or retiring its key) ends it too.
//! - Every POST carries a CSRF token: an HMAC under the gateway's root key of the session
//!   id (or, before sign-in, of a nonce cookie), compared in constant time.
//! - Fetch Metadata: a script's request for a UI page (`Sec-Fetch-Mode` other than
//!   `navigate`) is answered only with the session's CSRF token in `X-CSRF-Token` (which
//!   the UI's own script sends and a function's page on the same origin cannot know); a
//!   POST whose `Sec-Fetch-Site` is not `same-origin` is refused. Requests without these
//!   headers (curl, old browsers) are judged by the session cookie and CSRF token alone.
//! - Pages are minijinja templates and one CSS and one JS file, all embedded in the binary;
//!   the Content-Security-Policy allows nothing from elsewhere.
//!
//! [`pages`] holds the handlers; they call the same registry, store, queue and skills code
//! as the REST API.

mod charts;
mod pages;

use std::sync::{Arc, LazyLock};

use axum::extract::{FromRequestParts, Request};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use http::request::Parts;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use minijinja::Environment;
use serde_json::Value;
use subtle::ConstantTimeEq;

use crate::auth::{scope, AuthError, Claims};
use crate::error::ApiError;
use crate::server::AppState;
use crate::telemetry::throttle::{Throttle, REPEAT_INTERVAL};

/// Refused UI requests are logged once per kind per interval: a hostile page can send
/// them in a loop.
pub(crate) static REFUSED: Throttle = Throttle::new(REPEAT_INTERVAL);

/// Cookie holding the signed-in session's id (over plain http).
pub const SESSION_COOKIE: &str = "hark_session";
/// Cookie holding the signed-in session's id when the gateway's public URL is https.
pub const SECURE_SESSION_COOKIE: &str = "__Host-hark_session";
/// Cookie holding the sign-in form's nonce (its CSRF token is derived from it).
pub const LOGIN_COOKIE: &str = "hark_login";
/// Form field carrying the CSRF token.
pub const CSRF_FIELD: &str = "csrf";
/// Header carrying the CSRF token on the invoke panel's `fetch`.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// [`crate::auth::Auth::derive`] purpose of a session's CSRF token.
const CSRF_PURPOSE: &str = "hark-ui-csrf";
/// [`crate::auth::Auth::derive`] purpose of the sign-in form's CSRF token.
const LOGIN_PURPOSE: &str = "hark-ui-login";

/// What the UI's pages may load: only the gateway's own files, and pictures made in the
/// page (`blob:`, the invoke panel's image responses).
const CSP: &str = "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; \
                   script-src 'self'; connect-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// Why a UI request failed.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    /// No session, or its token is no longer valid: the browser goes to the sign-in page.
    #[error("sign in first")]
    SignedOut,
    /// A POST without the right CSRF token.
    #[error("the form's CSRF token is missing or wrong; reload the page and try again")]
    Csrf,
    /// The session's token lacks a scope.
    #[error("your token lacks the {0} scope")]
    Forbidden(&'static str),
    /// A form field is missing or malformed.
    #[error("{0}")]
    BadForm(String),
    /// The registry, store or provider refused or failed.
    #[error("{}", .0.message)]
    Api(ApiError),
    /// A template failed to render (a bug in the UI).
    #[error("rendering {name}: {source}")]
    Template {
        name: &'static str,
        source: minijinja::Error,
    },
}

impl From<ApiError> for UiError {
    fn from(e: ApiError) -> Self {
        UiError::Api(e)
    }
}

impl From<crate::store::StoreError> for UiError {
    fn from(e: crate::store::StoreError) -> Self {
        UiError::Api(e.into())
    }
}

impl From<crate::function::InvalidName> for UiError {
    fn from(e: crate::function::InvalidName) -> Self {
        UiError::BadForm(e.to_string())
    }
}

impl UiError {
    fn status(&self) -> StatusCode {
        match self {
            UiError::SignedOut => StatusCode::UNAUTHORIZED,
            UiError::Csrf | UiError::Forbidden(_) => StatusCode::FORBIDDEN,
            UiError::BadForm(_) => StatusCode::BAD_REQUEST,
            UiError::Api(e) => e.status,
            UiError::Template { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        if let UiError::SignedOut = self {
            return Redirect::to("/ui/login").into_response();
        }
        let status = self.status();
        let message = match &self {
            UiError::Template { .. } => {
                tracing::error!(error = %self, "web UI template failed");
                "internal error; see the gateway log".to_owned()
            }
            UiError::Api(e) if e.status.is_server_error() => e.message.clone(),
            other => {
                tracing::info!(status = status.as_u16(), error = %other, "web UI request refused");
                other.to_string()
            }
        };
        let ctx = serde_json::json!({ "status": status.as_u16(), "reason": status.canonical_reason(), "message": message });
        match render_raw("error.html", ctx) {
            Ok(html) => (status, Html(html)).into_response(),
            Err(_) => (status, message).into_response(),
        }
    }
}

/// A signed-in browser: its session id, the session token's claims and the session's
/// CSRF token.
pub struct Session {
    id: String,
    pub claims: Claims,
    pub csrf: String,
}

impl Session {
    /// Refuses unless `provided` is this session's CSRF token.
    pub fn check_csrf(&self, provided: Option<&str>) -> Result<(), UiError> {
        match provided {
            Some(p) if bool::from(p.as_bytes().ct_eq(self.csrf.as_bytes())) => Ok(()),
            _ => {
                crate::warn_repeated!(REFUSED, "bad CSRF token", subject = ?self.claims.sub, "web UI request refused: bad CSRF token");
                Err(UiError::Csrf)
            }
        }
    }

    /// The session's id (what its cookie holds): never to be logged.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Refuses unless the session's token grants `scope`.
    pub fn require(&self, scope: &'static str) -> Result<(), UiError> {
        if self.claims.allows(scope) {
            Ok(())
        } else {
            Err(UiError::Forbidden(scope))
        }
    }
}

impl FromRequestParts<Arc<AppState>> for Session {
    type Rejection = UiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let name = session_cookie_name(state.auth.secure_cookies());
        let id = cookie(&parts.headers, name).ok_or(UiError::SignedOut)?;
        let claims = match state.auth.session(&id).await {
            Ok(claims) => claims,
            Err(AuthError::Store(e)) => return Err(UiError::Api(e.into())),
            Err(_) => return Err(UiError::SignedOut),
        };
        let csrf = state.auth.derive(CSRF_PURPOSE, id.as_bytes());
        let session = Session { id, claims, csrf };
        session.require(scope::FUNCTIONS_READ)?;
        if parts.extensions.get::<ScriptRequest>().is_some() {
            session.check_csrf(script_csrf(parts).as_deref())?;
        }
        Ok(session)
    }
}

impl From<AuthError> for UiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Forbidden(scope) => UiError::Forbidden(scope),
            AuthError::Missing | AuthError::Invalid(_) => UiError::SignedOut,
            other => UiError::Api(other.into()),
        }
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// The name of the session cookie: `__Host-` prefixed when the gateway is reached over
/// https, so that only a secure response of this very host can set it.
pub fn session_cookie_name(secure: bool) -> &'static str {
    if secure {
        SECURE_SESSION_COOKIE
    } else {
        SESSION_COOKIE
    }
}

/// A `Set-Cookie` value for the UI's cookies: `HttpOnly`, `SameSite=Strict`, path `/ui`;
/// with `secure`, `Secure` too, and path `/` for a `__Host-` cookie (the prefix demands
/// it). An empty value expires the cookie.
fn set_cookie(name: &str, value: &str, secure: bool) -> String {
    let expire = if value.is_empty() { "; Max-Age=0" } else { "" };
    let path = if name.starts_with("__Host-") {
        "/"
    } else {
        "/ui"
    };
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path={path}; HttpOnly; SameSite=Strict{secure}{expire}")
}

/// Removes the UI's session cookie from a request's `Cookie` headers (a `__Host-` cookie
/// goes to the whole origin, functions included; they never see it). Other cookies stay.
pub fn strip_session_cookie(headers: &mut HeaderMap) {
    let values: Vec<HeaderValue> = headers.get_all(header::COOKIE).iter().cloned().collect();
    if values.is_empty() {
        return;
    }
    let is_session = |pair: &str| {
        pair.split_once('=').is_some_and(|(k, _)| {
            let k = k.trim();
            k == SESSION_COOKIE || k == SECURE_SESSION_COOKIE
        })
    };
    headers.remove(header::COOKIE);
    for value in values {
        let Ok(text) = value.to_str() else {
            headers.append(header::COOKIE, value);
            continue;
        };
        let kept: Vec<&str> = text
            .split(';')
            .map(str::trim)
            .filter(|p| !p.is_empty() && !is_session(p))
            .collect();
        if kept.is_empty() {
            continue;
        }
        if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
            headers.append(header::COOKIE, v);
        }
    }
}

/// Marks a UI request made by a script (`Sec-Fetch-Mode` other than `navigate`): the
/// [`Session`] answers it only with the session's CSRF token.
#[derive(Clone, Copy)]
struct ScriptRequest;

/// The CSRF token a script's request carries: the `X-CSRF-Token` header, or a `csrf`
/// query parameter (an `<img>` cannot send headers).
fn script_csrf(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| {
            url::form_urlencoded::parse(parts.uri.query()?.as_bytes())
                .find(|(k, _)| k == CSRF_FIELD)
                .map(|(_, v)| v.into_owned())
        })
}

/// Fetch Metadata: refuses a cross-site POST (`Sec-Fetch-Site` present and not
/// `same-origin`) and a script's request for a UI page without a CSRF token, and marks
/// the other script requests so their [`Session`] checks the token. Requests without
/// these headers pass: the session cookie and the CSRF token judge them.
async fn fetch_metadata(mut request: Request, next: Next) -> Response {
    let (site, mode) = {
        let header_text = |name: &str| {
            request
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap_or("?").to_ascii_lowercase())
        };
        (header_text("sec-fetch-site"), header_text("sec-fetch-mode"))
    };
    let path = request.uri().path().to_owned();
    if path.starts_with("/ui/assets/") {
        return next.run(request).await;
    }
    if request.method() == http::Method::POST && site.as_deref().is_some_and(|s| s != "same-origin")
    {
        crate::warn_repeated!(REFUSED, "cross-site POST", path, site = ?site, "web UI refused a cross-site POST (Fetch Metadata)");
        return refuse_script();
    }
    if let Some(mode) = mode.filter(|m| m != "navigate") {
        let (mut parts, body) = request.into_parts();
        // The sign-in page has no session to check a token against.
        if path == "/ui/login" && parts.method != http::Method::POST
            || script_csrf(&parts).is_none()
        {
            crate::warn_repeated!(
                REFUSED,
                "script without CSRF token",
                path,
                mode,
                "web UI refused a script's request without its CSRF token (Fetch Metadata)"
            );
            return refuse_script();
        }
        parts.extensions.insert(ScriptRequest);
        request = Request::from_parts(parts, body);
    }
    next.run(request).await
}

fn refuse_script() -> Response {
    (
        StatusCode::FORBIDDEN,
        "web UI pages answer navigations and the UI's own scripts only\n",
    )
        .into_response()
}

/// The templates, parsed once. A template that fails to parse is logged and its pages
/// answer 500 (the unit tests render every page, so this does not ship).
static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    for (name, source) in [
        ("base.html", include_str!("templates/base.html")),
        ("error.html", include_str!("templates/error.html")),
        ("login.html", include_str!("templates/login.html")),
        ("functions.html", include_str!("templates/functions.html")),
        ("function.html", include_str!("templates/function.html")),
        ("remove.html", include_str!("templates/remove.html")),
        (
            "activations.html",
            include_str!("templates/activations.html"),
        ),
        ("activation.html", include_str!("templates/activation.html")),
        ("skills.html", include_str!("templates/skills.html")),
        ("schedules.html", include_str!("templates/schedules.html")),
        ("queue.html", include_str!("templates/queue.html")),
        ("charts.html", include_str!("templates/charts.html")),
        ("overview.html", include_str!("templates/overview.html")),
    ] {
        if let Err(e) = env.add_template(name, source) {
            tracing::error!(template = name, error = %e, "web UI template does not parse");
        }
    }
    env
});

fn render_raw(name: &'static str, mut ctx: Value) -> Result<String, UiError> {
    if let Some(map) = ctx.as_object_mut() {
        map.insert("version".into(), env!("CARGO_PKG_VERSION").into());
    }
    TEMPLATES
        .get_template(name)
        .and_then(|t| t.render(minijinja::Value::from(minijinja::value::Serde(&ctx))))
        .map_err(|source| UiError::Template { name, source })
}

/// Renders page `name` for `session` with `ctx` (an object) plus what every page shows.
fn render(name: &'static str, session: &Session, mut ctx: Value) -> Result<Html<String>, UiError> {
    if let Some(map) = ctx.as_object_mut() {
        map.insert("csrf".into(), session.csrf.clone().into());
        map.insert("user".into(), session.claims.sub.clone().into());
    }
    render_raw(name, ctx).map(Html)
}

/// Security headers on every UI response.
async fn headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    // Pages show function names, logs and results: not for shared caches or history.
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

const CSS: &str = include_str!("assets/ui.css");
const JS: &str = include_str!("assets/ui.js");

async fn asset_css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        CSS,
    )
}

async fn asset_js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        JS,
    )
}

/// The UI's routes: `/` and everything under `/ui/`.
pub fn routes() -> Router<Arc<AppState>> {
    let ui = Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(pages::functions))
        .route("/ui/overview", get(pages::overview))
        .route("/ui/login", get(pages::login_form).post(pages::login))
        .route("/ui/logout", post(pages::logout))
        .route("/ui/functions", post(pages::deploy))
        .route("/ui/functions/{name}", get(pages::function))
        .route("/ui/functions/{name}/invoke", post(pages::invoke))
        .route("/ui/functions/{name}/logs", get(pages::logs))
        .route("/ui/functions/{name}/scale", post(pages::scale))
        .route(
            "/ui/functions/{name}/remove",
            get(pages::remove_form).post(pages::remove),
        )
        .route("/ui/activations", get(pages::activations))
        .route("/ui/activations/{id}", get(pages::activation))
        .route("/ui/activations/{id}/replay", post(pages::replay))
        .route(
            "/ui/activations/{id}/screenshot",
            get(pages::activation_screenshot),
        )
        .route("/ui/skills", get(pages::skills).post(pages::try_utterance))
        .route("/ui/schedules", get(pages::schedules))
        .route("/ui/queue", get(pages::queue))
        .route("/ui/queue/{id}/retry", post(pages::retry))
        .route("/ui/assets/ui.css", get(asset_css))
        .route("/ui/assets/ui.js", get(asset_js))
        .layer(middleware::from_fn(fetch_metadata))
        .layer(middleware::from_fn(headers));
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .merge(ui)
}

#[cfg(test)]
mod tests;
