//! The gateway's HTTP server: a listener and a shutdown signal come in; every channel's
//! routes are served until the signal, then in-flight requests drain and the functions
//! stop. [`app`] builds the router alone so tests can call it without a socket.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tokio::sync::watch;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Auth;
use crate::channels::alexa::AlexaChannel;
use crate::channels::Channels;
use crate::clock::Clock;
use crate::error::ApiError;
use crate::registry::Registry;

/// Header naming each call; kept when the caller sends one.
pub const HEADER_CALL_ID: &str = "x-call-id";
/// Default largest request body.
pub const DEFAULT_MAX_BODY: usize = 10 * 1024 * 1024;
/// How long in-flight requests get to finish after a shutdown signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default limit of in-flight synchronous calls over all functions.
pub const DEFAULT_MAX_INFLIGHT: usize = crate::dispatch::admission::DEFAULT_MAX_INFLIGHT;

/// What every handler shares.
pub struct AppState {
    pub registry: Registry,
    pub auth: Arc<Auth>,
    pub max_body: usize,
    /// Fires scheduled functions.
    pub scheduler: Arc<crate::dispatch::schedule::Scheduler>,
    /// The durable queue of async calls.
    pub queue: Arc<crate::dispatch::queue::AsyncQueue>,
    /// Slots for in-flight synchronous calls over all functions (429 when none frees up
    /// within a short wait).
    pub admission: Arc<crate::dispatch::admission::Admission>,
    /// Turns true when the gateway is shutting down; long streams end on it.
    pub shutdown: watch::Receiver<bool>,
    /// The Slack, GitHub and webhook routes of `hark.yml`.
    pub channels: Arc<Channels>,
    /// The Alexa channel: its verifier and skills.
    pub alexa: Arc<AlexaChannel>,
    /// The time as channels that check timestamps see it (fixed in tests).
    pub clock: Arc<dyn Clock>,
    /// The browser pool behind `/webdriver` (off when Chromium is missing).
    pub browser: crate::browser::BrowserPool,
}

/// The id of the call being served.
#[derive(Debug, Clone)]
pub struct CallId(pub String);

/// A request body read whole, refused with a JSON 413 over the body limit.
pub struct RawBody(pub Bytes);

impl RawBody {
    /// The body parsed as JSON, or a 400 naming what is wrong.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        serde_json::from_slice(&self.0)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Bytes::from_request(req, state).await {
            Ok(bytes) => Ok(RawBody(bytes)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request body is larger than the gateway's limit",
                ))
            }
            Err(rejection) => Err(ApiError::bad_request(format!(
                "cannot read request body: {rejection}"
            ))),
        }
    }
}

/// Gives each request a call id (the caller's `X-Call-Id` if it is sensible), and
/// echoes it on the response.
async fn call_id(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(HEADER_CALL_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    request.extensions_mut().insert(CallId(id.clone()));
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER_CALL_ID, value);
    }
    response
}

/// The routes of the REST API and the channels, each registered with its OpenAPI
/// description (served at `/openapi.json`).
pub fn documented_routes() -> OpenApiRouter<Arc<AppState>> {
    crate::channels::api::routes()
        .merge(crate::channels::routes())
        .merge(crate::channels::alexa::routes())
        .merge(crate::browser::webdriver::documented_routes())
        .routes(routes!(crate::telemetry::exporter::metrics))
        .routes(routes!(crate::channels::api::openapi::openapi_json))
}

/// Every route the gateway serves, before state and layers. Routes that are not part of
/// the REST API description (the web UI, `/webdriver`) are merged here, and listed in
/// `UNDOCUMENTED` of the test in `channels::api::openapi`.
pub fn routes() -> Router<Arc<AppState>> {
    let (documented, _) = documented_routes().split_for_parts();
    documented
        .merge(crate::ui::routes())
        .merge(crate::browser::webdriver::function_routes())
}

/// The gateway's router.
pub fn app(state: Arc<AppState>) -> Router {
    let max_body = state.max_body;
    // The recorder must exist before anything is counted (`hark up` installs it earlier,
    // with its `--metrics-auth` choice; this covers routers built by tests).
    crate::telemetry::exporter::install(crate::telemetry::exporter::Access::default());
    routes()
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(call_id))
        .with_state(state)
}

/// Serves until `shutdown` completes, then drains in-flight requests (for at most
/// [`DRAIN_TIMEOUT`]) and stops the functions.
pub async fn run(
    listener: TcpListener,
    state: Arc<AppState>,
    stopping: watch::Sender<bool>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let registry = state.registry.clone();
    let browser = state.browser.clone();
    let queue = tokio::spawn(state.queue.clone().run(stopping.subscribe()));
    let scheduler = tokio::spawn(state.scheduler.clone().run(stopping.subscribe()));
    let mut drained = stopping.subscribe();
    let graceful = async move {
        shutdown.await;
        tracing::info!("shutting down: draining in-flight requests");
        let _ = stopping.send(true);
    };
    // Peer addresses reach handlers as `ConnectInfo` (webhook `ip-whitelist` rules).
    let server = axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(graceful);
    let deadline = async move {
        let _ = drained.wait_for(|stopping| *stopping).await;
        tokio::time::sleep(DRAIN_TIMEOUT).await;
    };
    tokio::select! {
        result = server => result?,
        () = deadline => tracing::warn!("drain took longer than {DRAIN_TIMEOUT:?}; stopping anyway"),
    }
    let _ = scheduler.await;
    if let Err(e) = queue.await {
        tracing::error!(error = %e, "async queue runner failed");
    }
    registry.provider.shutdown().await;
    browser.shutdown().await;
    registry.store.flush().await;
    tracing::info!("stopped");
    Ok(())
}
