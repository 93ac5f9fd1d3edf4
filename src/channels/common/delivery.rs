//! A verified delivery's function call goes into the durable queue ([`ChannelCall`]),
//! with a reply descriptor saying where its result goes and, where the platform waits for
//! an answer, a wait of at most the route's acknowledgement budget; replies that cannot
//! ride on the HTTP answer go out as outbound HTTP requests retried with backoff until a
//! deadline ([`Outbound::send`]).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use tokio::time::Instant;

use super::reply::ReplyTo;
use super::route::{ChannelError, RouteCore};
use crate::dispatch::queue::{AsyncQueue, EnqueueError, Submit, Submitted};
use crate::egress::EgressPolicy;
use crate::function::FunctionName;
use crate::provider::Invocation;
use crate::server::HEADER_CALL_ID;
use crate::store::QueuedCall;

/// Header telling a function which channel called it (`slack`, `github`, `hooks`).
pub const HEADER_CHANNEL: &str = "x-hark-channel";
/// Header telling a function which route called it.
pub const HEADER_ROUTE: &str = "x-hark-route";
/// Header carrying the platform's delivery id, when it has one.
pub const HEADER_DELIVERY: &str = "x-hark-delivery";

/// User-Agent of Hark's outbound requests (GitHub refuses requests without one).
pub const USER_AGENT: &str = concat!("hark/", env!("CARGO_PKG_VERSION"));

/// Why an outbound request finally failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The other side refused it in a way a retry cannot fix.
    #[error("{what}: answered {status}: {body}")]
    Refused {
        what: String,
        status: StatusCode,
        body: String,
    },
    /// Every attempt failed or the deadline passed.
    #[error("{what}: gave up after {attempts} attempts: {last}")]
    GaveUp {
        what: String,
        attempts: u32,
        last: String,
    },
}

/// Backoff between attempts of an outbound request.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub first_delay: Duration,
    pub max_delay: Duration,
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    /// 0.5 s, doubling to at most a minute, ten attempts.
    fn default() -> Self {
        RetryPolicy {
            first_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(60),
            max_attempts: 10,
        }
    }
}

/// The outbound HTTP clients and their retry policy.
pub struct Outbound {
    /// For the URLs of the configuration (the Slack and GitHub APIs).
    pub client: reqwest::Client,
    pub retry: RetryPolicy,
    /// Which special addresses URLs that requests supply (Slack's `response_url`) may reach.
    pub egress: Arc<EgressPolicy>,
    /// For URLs that requests supply: connects only to addresses `egress` allows.
    pub guarded: reqwest::Client,
}

impl Default for Outbound {
    fn default() -> Self {
        Self::new()
    }
}

impl Outbound {
    pub fn new() -> Outbound {
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .build()
            // Building a client fails only if the TLS backend cannot start; fall back to
            // the default one rather than refuse to start the gateway.
            .unwrap_or_default();
        let egress = Arc::new(EgressPolicy::strict());
        Outbound {
            client,
            retry: RetryPolicy::default(),
            guarded: egress.client(Duration::from_secs(30)),
            egress,
        }
    }

    /// Sets which special addresses URLs that requests supply may reach.
    pub fn set_egress(&mut self, egress: Arc<EgressPolicy>) {
        self.guarded = egress.client(Duration::from_secs(30));
        self.egress = egress;
    }

    /// Sends the request `build` makes, again after network errors, 429 and 5xx answers,
    /// with backoff, until it succeeds, the attempts run out or `deadline` passes.
    pub async fn send(
        &self,
        what: &str,
        deadline: Instant,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, SendError> {
        let mut delay = self.retry.first_delay;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let last = match build(&self.client).send().await {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response) => {
                    let status = response.status();
                    let body = response.text().await.unwrap_or_default();
                    let body: String = body.chars().take(300).collect();
                    if status != StatusCode::TOO_MANY_REQUESTS && !status.is_server_error() {
                        return Err(SendError::Refused {
                            what: what.to_owned(),
                            status,
                            body,
                        });
                    }
                    format!("answered {status}")
                }
                // Without the URL: some APIs (Telegram's) carry the token in it.
                Err(e) => e.without_url().to_string(),
            };
            let next = Instant::now() + delay;
            if attempts >= self.retry.max_attempts || next > deadline {
                return Err(SendError::GaveUp {
                    what: what.to_owned(),
                    attempts,
                    last,
                });
            }
            tracing::info!(what, attempts, error = %last, retry_in_ms = delay.as_millis() as u64, "outbound request failed; retrying");
            tokio::time::sleep_until(next).await;
            delay = (delay * 2).min(self.retry.max_delay);
        }
    }
}

/// [`invocation`] of a JSON `event` that came to `route`.
pub fn json_invocation(
    call_id: &str,
    route: &RouteCore,
    delivery: Option<&str>,
    event: &serde_json::Value,
) -> Invocation {
    invocation(
        call_id,
        route.channel,
        &route.name,
        delivery,
        "application/json",
        Bytes::from(event.to_string()),
        HeaderMap::new(),
    )
}

/// A function call carrying a channel's event: `POST /` with `body` of `content_type`,
/// the call id, and the channel, route and delivery id as `X-Hark-*` headers, plus `extra`.
pub fn invocation(
    call_id: &str,
    channel: &'static str,
    route: &str,
    delivery: Option<&str>,
    content_type: &str,
    body: Bytes,
    extra: HeaderMap,
) -> Invocation {
    let mut headers = extra;
    let mut set = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    set("content-type", content_type);
    set(HEADER_CALL_ID, call_id);
    set(HEADER_CHANNEL, channel);
    set(HEADER_ROUTE, route);
    if let Some(delivery) = delivery {
        set(HEADER_DELIVERY, delivery);
    }
    Invocation {
        call_id: call_id.to_owned(),
        method: Method::POST,
        path: "/".to_owned(),
        query: None,
        headers,
        body,
    }
}

/// A channel's function call on its way into the durable queue.
pub struct ChannelCall<'a> {
    /// The route it came in by; its in-flight permit is held until the call ends.
    pub route: &'a RouteCore,
    pub function: &'a FunctionName,
    pub call: Invocation,
    /// Where the result goes when nobody answers with it.
    pub reply: Option<ReplyTo>,
    /// The platform's delivery id: queued only the first time it is seen.
    pub dedupe: Option<&'a str>,
    /// How long the request waits for the result.
    pub wait: Option<Duration>,
    /// Whether the request answers with the result when it comes in time (then the
    /// reply is not delivered as well).
    pub answers: bool,
    /// A failure is final rather than retried while this gateway runs the call: for a
    /// platform that shows the answer now and takes no later one.
    pub no_retries: bool,
}

impl ChannelCall<'_> {
    /// Commits the call to the queue; the route's limit applies until it ends.
    pub async fn submit(self, queue: &Arc<AsyncQueue>) -> Result<Submitted, ChannelError> {
        let permit = self.route.permit()?;
        let reply = match &self.reply {
            Some(reply) => Some(
                serde_json::to_string(reply)
                    .map_err(|e| ChannelError::Internal(format!("reply descriptor: {e}")))?,
            ),
            None => None,
        };
        let queued = QueuedCall {
            function: self.function.to_string(),
            trigger: Some(self.route.trigger.as_str().to_owned()),
            reply,
            delivery: self.dedupe.map(|id| (self.route.key(), id.to_owned())),
            ..queued_call(self.call)
        };
        let submit = Submit {
            hold: Some(Box::new(permit)),
            wait: self.wait,
            answers: self.answers,
            no_retries: self.no_retries,
        };
        queue.submit(queued, submit).await.map_err(|e| match e {
            EnqueueError::Store(e) => ChannelError::Internal(e.to_string()),
            EnqueueError::Full(_)
            | EnqueueError::FunctionBytes { .. }
            | EnqueueError::Bytes { .. }
            | EnqueueError::LowDisk { .. } => ChannelError::Overloaded,
        })
    }
}

/// The queue's copy of a call's request.
pub fn queued_call(call: Invocation) -> QueuedCall {
    let headers = call
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_owned())))
        .collect();
    QueuedCall {
        call_id: call.call_id,
        method: call.method.to_string(),
        path: call.path,
        query: call.query,
        headers,
        body: call.body.to_vec(),
        ..QueuedCall::default()
    }
}
