//! The gateway's HTTP server: a listener and a shutdown signal come in; every channel's
//! routes are served until the signal, then in-flight requests drain and the functions
//! stop. [`app`] builds the router alone so tests can call it without a socket.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Auth;
use crate::channels::alexa::AlexaChannel;
use crate::channels::Channels;
use crate::clock::Clock;
use crate::error::ApiError;
use crate::registry::Registry;
use crate::telemetry::throttle::{Throttle, REPEAT_INTERVAL};

mod connections;

use connections::{Conn, Connections};

/// Header naming each call; kept when the caller sends one.
pub const HEADER_CALL_ID: &str = "x-call-id";
/// Default largest request body.
pub const DEFAULT_MAX_BODY: usize = 10 * 1024 * 1024;
/// How long in-flight requests get to finish after a shutdown signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default limit of in-flight synchronous calls over all functions.
pub const DEFAULT_MAX_INFLIGHT: usize = crate::dispatch::admission::DEFAULT_MAX_INFLIGHT;

/// Default time a client has to send a request's head (request line and headers).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time a client has to send a request's body, counted from its head.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// Default largest request head in bytes.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// Default most header fields in a request (hyper's own limit, kept on the stack).
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// The smallest head limit hyper accepts (its minimum read buffer).
pub const MIN_MAX_HEADER_BYTES: usize = 8192;
/// Default bytes of request bodies held at once over all requests.
pub const DEFAULT_MAX_BODY_TOTAL: u64 = 256 * 1024 * 1024;
/// Default most open connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default most concurrent HTTP/2 streams (requests) on one connection.
pub const DEFAULT_MAX_STREAMS: u32 = 128;

/// What one connection may cost the gateway: slow or oversized requests are cut off here,
/// before any handler runs (`hark up --header-timeout`, `--body-timeout`,
/// `--max-header-bytes`, `--max-headers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// A request head not received within it closes the connection (slowloris senders).
    pub header_timeout: Duration,
    /// A request body not received within it, counted from the head, answers 408.
    pub body_timeout: Duration,
    /// A request head larger than this answers 431 (at least [`MIN_MAX_HEADER_BYTES`]).
    pub max_header_bytes: usize,
    /// A request with more header fields answers 431.
    pub max_headers: usize,
    /// Connections open at once; past it, the connection idle longest is closed to make
    /// room, and when none is idle the next waits until one closes or falls idle.
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams one connection may open.
    pub max_streams: u32,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_streams: DEFAULT_MAX_STREAMS,
        }
    }
}

/// Bytes are counted against the body budget in units of this many.
const BUDGET_UNIT: u64 = 1024;
/// The warnings of requests refused because the body budget is spent, rate-limited.
static BUDGET_SPENT: Throttle = Throttle::new(REPEAT_INTERVAL);

/// The bytes of request bodies the gateway holds at once, over all requests (`hark up
/// --max-body-total`): a body takes its share as it is read (all of a declared
/// `Content-Length` before the first byte) and gives it back when its request is
/// answered. A request that finds the budget spent answers 503 instead of buffering.
#[derive(Debug)]
pub struct BodyBudget {
    permits: Arc<Semaphore>,
    total: u64,
}

impl BodyBudget {
    /// A budget of `total` bytes.
    pub fn new(total: u64) -> BodyBudget {
        let units = usize::try_from(total.div_ceil(BUDGET_UNIT))
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        BodyBudget {
            permits: Arc::new(Semaphore::new(units)),
            total,
        }
    }

    /// `bytes` of the budget, or `None` when that much is not free.
    fn take(&self, bytes: u64) -> Option<OwnedSemaphorePermit> {
        let units = u32::try_from(bytes.div_ceil(BUDGET_UNIT)).ok()?;
        self.permits.clone().try_acquire_many_owned(units).ok()
    }
}

/// The error of a request body read while the [`BodyBudget`] is spent; body readers turn
/// it into 503 (see [`is_budget_spent`]).
#[derive(Debug, thiserror::Error)]
#[error("the gateway holds as many request bodies as it may ({0} bytes); try again later")]
pub struct BudgetSpent(pub u64);

/// Whether `error`, or an error it wraps, is a [`BudgetSpent`].
pub fn is_budget_spent(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<BudgetSpent>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// The share of the body budget one request holds until it is answered.
type Held = Arc<std::sync::Mutex<Option<OwnedSemaphorePermit>>>;

fn hold(held: &Held, permit: OwnedSemaphorePermit) {
    let mut held = held.lock().unwrap_or_else(|e| e.into_inner());
    match held.as_mut() {
        Some(all) => all.merge(permit),
        None => *held = Some(permit),
    }
}

pin_project_lite::pin_project! {
    /// A request body that takes its bytes from the [`BodyBudget`] as they arrive
    /// (beyond `prepaid`, taken for its declared length), and fails with [`BudgetSpent`]
    /// when the budget has none left.
    struct BudgetBody {
        #[pin]
        inner: Body,
        budget: Arc<BodyBudget>,
        held: Held,
        prepaid: u64,
        spent: bool,
    }
}

impl hyper::body::Body for BudgetBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        if *this.spent {
            return Poll::Ready(None);
        }
        let frame = match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        if let Some(data) = frame.data_ref() {
            let len = data.len() as u64;
            let covered = len.min(*this.prepaid);
            *this.prepaid -= covered;
            if len > covered {
                match this.budget.take(len - covered) {
                    Some(permit) => hold(this.held, permit),
                    None => {
                        *this.spent = true;
                        crate::warn_repeated!(
                            BUDGET_SPENT,
                            "body budget spent",
                            max_body_total = this.budget.total,
                            "request refused: the budget of request bodies held at once is spent (503)"
                        );
                        return Poll::Ready(Some(Err(BudgetSpent(this.budget.total).into())));
                    }
                }
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.spent || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Puts every request body under the [`BodyBudget`]: a declared length that does not
/// fit answers 503 at once; the share is given back once the request is answered.
async fn body_budget(
    State(budget): State<Arc<BodyBudget>>,
    request: Request,
    next: Next,
) -> Response {
    use axum::response::IntoResponse as _;
    if hyper::body::Body::is_end_stream(request.body()) {
        return next.run(request).await;
    }
    let held: Held = Arc::default();
    let declared = hyper::body::Body::size_hint(request.body()).exact();
    let mut prepaid = 0;
    if let Some(len) = declared.filter(|len| *len <= budget.total) {
        match budget.take(len) {
            Some(permit) => {
                hold(&held, permit);
                prepaid = len;
            }
            None => {
                crate::warn_repeated!(
                    BUDGET_SPENT,
                    "body budget spent",
                    declared = len,
                    max_body_total = budget.total,
                    "request refused: the budget of request bodies held at once is spent (503)"
                );
                return ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    BudgetSpent(budget.total).to_string(),
                )
                .into_response();
            }
        }
    }
    let request = request.map(|inner| {
        Body::new(BudgetBody {
            inner,
            budget: budget.clone(),
            held: held.clone(),
            prepaid,
            spent: false,
        })
    });
    let response = next.run(request).await;
    drop(held);
    response
}

/// The error of a request body that did not arrive within [`ConnLimits::body_timeout`];
/// body readers turn it into 408 (see [`is_body_timeout`]).
#[derive(Debug, thiserror::Error)]
#[error("request body not received within {0:?}")]
pub struct BodyTimeout(pub Duration);

/// Whether `error`, or an error it wraps, is a [`BodyTimeout`].
pub fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<BodyTimeout>() {
            return true;
        }
        next = e.source();
    }
    false
}

pin_project_lite::pin_project! {
    /// A request body that fails with [`BodyTimeout`] once its deadline passes while the
    /// reader waits for more. Data already received is always handed out first.
    struct DeadlineBody {
        #[pin]
        inner: Incoming,
        #[pin]
        deadline: tokio::time::Sleep,
        limit: Duration,
        peer: SocketAddr,
        expired: bool,
    }
}

impl hyper::body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        if *this.expired {
            return Poll::Ready(None);
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => match this.deadline.poll(cx) {
                Poll::Ready(()) => {
                    *this.expired = true;
                    static LATE: Throttle = Throttle::new(REPEAT_INTERVAL);
                    crate::warn_repeated!(LATE, "body timeout", peer = %this.peer, limit_secs = this.limit.as_secs_f64(), "request body not received in time; refused with 408");
                    Poll::Ready(Some(Err(BodyTimeout(*this.limit).into())))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.expired || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

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
    /// The bytes of request bodies held at once over all requests.
    pub body_budget: Arc<BodyBudget>,
    /// The queue's and browser pool's gauges over the last day (the UI's overview).
    pub samples: Arc<crate::telemetry::samples::Samples>,
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

impl FromRequest<Arc<AppState>> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let too_large = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body is larger than the gateway's limit",
            )
        };
        // A declared length over the limit is refused before any of it is read (else a
        // sender announcing gigabytes holds the request until the body timeout).
        if hyper::body::Body::size_hint(req.body()).lower() > state.max_body as u64 {
            return Err(too_large());
        }
        match Bytes::from_request(req, state).await {
            Ok(bytes) => Ok(RawBody(bytes)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(too_large())
            }
            Err(rejection) if is_body_timeout(&rejection) => Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request body not received in time",
            )),
            Err(rejection) if is_budget_spent(&rejection) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                BudgetSpent(state.body_budget.total).to_string(),
            )),
            Err(rejection) => Err(ApiError::bad_request(format!(
                "cannot read request body: {rejection}"
            ))),
        }
    }
}

/// Gives each request a call id (the caller's `X-Call-Id` if it is sensible), and
/// echoes it on the response. A 4xx answer nobody logged (an extractor's rejection of a
/// malformed path or query, an unknown route) gets its log line here.
async fn call_id(mut request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let uri = request.uri().clone();
    let id = request
        .headers()
        .get(HEADER_CALL_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    request.extensions_mut().insert(CallId(id.clone()));
    let mut response = next.run(request).await;
    if response.status().is_client_error()
        && response
            .extensions()
            .get::<crate::error::Logged>()
            .is_none()
    {
        // A WebDriver path may hold a function's capability: it is not logged.
        let path = match uri.path() {
            p if p.starts_with("/webdriver/") => "/webdriver/…",
            p => p,
        };
        tracing::info!(status = response.status().as_u16(), %method, path = %path, call_id = %id, "request refused");
    }
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
        .merge(crate::browser::webdriver::public_routes())
}

/// The gateway's router.
pub fn app(state: Arc<AppState>) -> Router {
    let max_body = state.max_body;
    let budget = state.body_budget.clone();
    // The recorder must exist before anything is counted (`hark up` installs it earlier,
    // with its `--metrics-auth` choice; this covers routers built by tests).
    crate::telemetry::exporter::install(crate::telemetry::exporter::Access::default());
    routes()
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(budget, body_budget))
        .layer(middleware::from_fn(call_id))
        .with_state(state)
}

/// Serves until `shutdown` completes, then drains: the queue stops taking calls, the
/// calls still running finish (for at most [`DRAIN_TIMEOUT`]) while the listeners stay
/// open, then the listeners close, open requests finish, and the functions stop.
///
/// The listeners stay open while calls run because a running call may need them: a
/// function calling another through `HARK_GATEWAY_URL`, a pool browser loading a
/// function's page, a function driving its browser through `/webdriver` (`side`, the
/// functions' own listener). Closed at the signal, they failed such calls half-way.
pub async fn run(
    listener: TcpListener,
    state: Arc<AppState>,
    limits: ConnLimits,
    stopping: watch::Sender<bool>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    side: Option<(TcpListener, Router)>,
) -> std::io::Result<()> {
    let registry = state.registry.clone();
    let browser = state.browser.clone();
    let admission = state.admission.clone();
    let queue = tokio::spawn(state.queue.clone().run(stopping.subscribe()));
    let scheduler = tokio::spawn(state.scheduler.clone().run(stopping.subscribe()));
    tokio::spawn(crate::telemetry::samples::Samples::run(
        state.clone(),
        stopping.subscribe(),
    ));
    let (closing, _) = watch::channel(false);
    let closed = |closing: &watch::Sender<bool>| {
        let mut closed = closing.subscribe();
        async move {
            let _ = closed.wait_for(|closed| *closed).await;
        }
    };
    let side = side.map(|(listener, router)| {
        let serving = serve(listener, router, limits, closed(&closing));
        tokio::spawn(async move {
            if let Err(e) = serving.await {
                tracing::error!(error = %e, "the functions' /webdriver listener failed");
            }
        })
    });
    let router = app(state);
    release_start_up_memory();
    let main = serve(listener, router, limits, closed(&closing));
    let drain = async {
        shutdown.await;
        tracing::info!("shutting down: finishing running calls");
        let _ = stopping.send(true);
        let calls = async {
            let _ = scheduler.await;
            if let Err(e) = queue.await {
                tracing::error!(error = %e, "async queue runner failed");
            }
            while admission.inflight() > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        if tokio::time::timeout(DRAIN_TIMEOUT, calls).await.is_err() {
            tracing::warn!(
                "calls still running after {DRAIN_TIMEOUT:?}; closing the listeners anyway"
            );
        }
        tracing::info!("closing the listeners: draining in-flight requests");
        let _ = closing.send(true);
        tokio::time::sleep(DRAIN_TIMEOUT).await;
    };
    tokio::select! {
        result = main => result?,
        () = drain => tracing::warn!("drain took longer than {DRAIN_TIMEOUT:?}; stopping anyway"),
    }
    if let Some(side) = side {
        side.abort();
    }
    registry.provider.shutdown().await;
    browser.shutdown().await;
    registry.store.flush().await;
    tracing::info!("stopped");
    Ok(())
}

/// Gives the heap that start-up freed (the stack file, skills, templates, the migrations)
/// back to the system: glibc keeps freed memory for reuse, and an idle gateway would
/// otherwise carry it as resident memory for its whole life.
fn release_start_up_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim(3) only returns free memory of the heap to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown` completes, then stops
/// accepting and lets open connections finish their requests (idle ones close at once).
/// Peer addresses reach handlers as `ConnectInfo<SocketAddr>` (webhook `ip-whitelist`
/// rules). Connections refused by the limits are logged with the peer's address.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // The read buffer bounds the request head: hyper answers 431 when the head does not
        // fit. Bodies stream through it in chunks, so it bounds nothing else.
        .max_buf_size(limits.max_header_bytes.max(MIN_MAX_HEADER_BYTES));
    if limits.max_headers != DEFAULT_MAX_HEADERS {
        // Any other count moves hyper's header array from the stack to the heap, so the
        // default is left alone.
        builder.http1().max_headers(limits.max_headers);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams.max(1))
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let (closing, _) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let connections = Connections::new(limits.max_connections);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // At the cap, the connection idle longest makes room, or this one waits for a
        // place (and the next ones in the listen backlog).
        let slot = tokio::select! {
            slot = connections.slot() => slot,
            () = &mut shutdown => break,
        };
        let router = router.clone();
        let body_timeout = limits.body_timeout;
        let conn = slot.conn.clone();
        let service_conn = conn.clone();
        let service_connections = slot.connections().clone();
        let service = hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            // Bodies known to be empty (most GETs) need no deadline.
            let request = request.map(|inner| {
                if hyper::body::Body::is_end_stream(&inner) {
                    Body::new(inner)
                } else {
                    Body::new(DeadlineBody {
                        inner,
                        deadline: tokio::time::sleep(body_timeout),
                        limit: body_timeout,
                        peer,
                        expired: false,
                    })
                }
            });
            let http1 = request.version() < http::Version::HTTP_2;
            let busy = service_conn.start(&service_connections);
            let served = router.clone().oneshot(request);
            async move {
                let Ok(mut response) = served.await;
                drop(busy);
                // A body refused unread (too large, too slow) leaves bytes on the wire:
                // hyper closes the connection after the answer, so the client is told not
                // to send its next request on it.
                if http1 && body_left_unread(response.status()) {
                    let close = HeaderValue::from_static("close");
                    response
                        .headers_mut()
                        .insert(http::header::CONNECTION, close);
                }
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        let stream = Watched {
            stream,
            conn: conn.clone(),
        };
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let mut closing = closing.subscribe();
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            // Asked to close (to make room, or at shutdown): the request in progress, if
            // any, is answered first; an idle connection closes at once.
            let ask = async {
                tokio::select! {
                    () = conn.asked_to_close() => {}
                    _ = closing.wait_for(|closing| *closing) => {}
                }
            };
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = ask => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = ended {
                log_connection_error(peer, &*e, conn.received.load(Ordering::Relaxed));
            }
            drop(slot);
        });
    }
    drop(listener);
    closing.send_replace(true);
    connections.all_closed().await;
    Ok(())
}

pin_project_lite::pin_project! {
    /// A connection's stream that notes when bytes of a request arrive (`Conn::received`).
    struct Watched {
        #[pin]
        stream: TcpStream,
        conn: Arc<Conn>,
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let result = this.stream.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.conn.received.store(true, Ordering::Relaxed);
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.project().stream.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.project().stream.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().stream.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().stream.poll_shutdown(cx)
    }
}

/// Whether an answer with `status` refuses a request before reading its body.
fn body_left_unread(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT
    )
}

/// Logs how a connection ended badly: the limits' refusals as warnings, the rest quietly.
/// `slow` tells a header timeout of a sender that started a head from an idle keep-alive
/// connection's (closed after the same time, and not worth a warning).
fn log_connection_error(peer: SocketAddr, error: &(dyn std::error::Error + 'static), slow: bool) {
    let mut next = Some(error);
    let mut hyper_error = None;
    while let Some(e) = next {
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            hyper_error = Some(h);
            break;
        }
        next = e.source();
    }
    match hyper_error {
        Some(e) if e.is_timeout() && slow => {
            tracing::warn!(%peer, "connection closed: request head not received within the header timeout")
        }
        Some(e) if e.is_timeout() => {
            tracing::debug!(%peer, "idle connection closed after the header timeout")
        }
        Some(e) if e.is_parse_too_large() => {
            tracing::warn!(%peer, error = %e, "request refused: request head over the limit (431/414)")
        }
        Some(e) if e.is_parse() => {
            tracing::warn!(%peer, error = %e, "request refused: malformed request head (400)")
        }
        Some(e) if e.is_incomplete_message() => {
            tracing::info!(%peer, "connection closed by the client before its request was complete")
        }
        _ => tracing::debug!(%peer, error = %error, "connection ended with an error"),
    }
}

/// Waits out a failed `accept`: a reset connection is skipped, anything else (out of file
/// descriptors) is logged and retried after a second, as hyper and axum do.
async fn accept_error(e: std::io::Error) {
    if matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
