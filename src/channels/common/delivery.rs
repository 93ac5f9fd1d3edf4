//! Running a verified delivery and sending answers elsewhere: a function call comes in and
//! runs in the background, watched for an acknowledgement budget ([`Outbound::within`]);
//! replies that cannot ride on the HTTP answer go out as outbound HTTP requests retried
//! with backoff until a deadline ([`Outbound::send`]). Background work is tracked so a
//! shutdown can let it finish.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use tokio::task::{JoinError, JoinHandle};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::provider::Invocation;
use crate::server::HEADER_CALL_ID;

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
    /// Hark is shutting down.
    #[error("{what}: stopped by shutdown")]
    Shutdown { what: String },
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

/// A function call started in the background, and whether it ended within the budget.
pub enum Budget<T> {
    /// It ended in time (`Err` if the task panicked).
    Done(Result<T, JoinError>),
    /// It is still running.
    Late(JoinHandle<T>),
}

/// The outbound HTTP client and the tracker of background work.
pub struct Outbound {
    pub client: reqwest::Client,
    pub retry: RetryPolicy,
    tasks: TaskTracker,
    stop: CancellationToken,
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
        Outbound {
            client,
            retry: RetryPolicy::default(),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
        }
    }

    /// Runs `work` in the background, tracked for shutdown.
    pub fn spawn<F>(&self, work: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn(work)
    }

    /// Starts `work` and waits for it at most `budget`.
    pub async fn within<F>(&self, budget: Duration, work: F) -> Budget<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let mut handle = self.spawn(work);
        match tokio::time::timeout(budget, &mut handle).await {
            Ok(done) => Budget::Done(done),
            Err(_) => Budget::Late(handle),
        }
    }

    /// Stops retrying and waits (at most `limit`) for background work to end.
    pub async fn drain(&self, limit: Duration) {
        self.stop.cancel();
        self.tasks.close();
        if tokio::time::timeout(limit, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                tasks = self.tasks.len(),
                "background channel work still running at shutdown"
            );
        }
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
                Err(e) => e.to_string(),
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
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                () = self.stop.cancelled() => return Err(SendError::Shutdown { what: what.to_owned() }),
            }
            delay = (delay * 2).min(self.retry.max_delay);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn within_reports_late_work_and_it_keeps_running() {
        let outbound = Outbound::new();
        match outbound.within(Duration::from_secs(1), async { 7 }).await {
            Budget::Done(Ok(7)) => {}
            _ => panic!("quick work should be done"),
        }
        let slow = async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            8
        };
        match outbound.within(Duration::from_secs(1), slow).await {
            Budget::Late(handle) => assert_eq!(handle.await.unwrap(), 8),
            Budget::Done(_) => panic!("slow work cannot be done in 1 s"),
        }
    }
}
