//! Admission control of synchronous calls: a call asking to run comes in; a slot under
//! the gateway-wide limit of in-flight calls goes out, or — when none frees up within a
//! short wait — a 429 with `Retry-After`, counted in `/metrics`. Under overload the
//! gateway refuses the excess at once instead of queueing it without bound, so the calls
//! it accepts keep a sane latency, and it serves normally as soon as the load drops.
//! Refusals are logged at most once per [`LOG_EVERY`], with their count.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::response::{IntoResponse, Response};
use axum::Json;
use http::{HeaderValue, StatusCode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Default most synchronous calls in flight over all functions, before the descriptor
/// limit is taken into account (see [`default_limit`]).
pub const DEFAULT_MAX_INFLIGHT: usize = 1024;
/// Default longest wait for a slot before a call is refused.
pub const DEFAULT_WAIT: Duration = Duration::from_millis(50);
/// Refusals are logged at most this often.
pub const LOG_EVERY: Duration = Duration::from_secs(5);
/// Calls refused because the gateway was at its limit (counter).
pub const ADMISSION_REFUSED_TOTAL: &str = "hark_admission_refused_total";
/// What `Retry-After` tells a refused caller, in seconds.
const RETRY_AFTER_SECS: &str = "1";

/// The gateway-wide limit of in-flight synchronous calls.
pub struct Admission {
    slots: Arc<Semaphore>,
    limit: usize,
    wait: Duration,
    /// Refusals since the last log line, and when that line was written (milliseconds
    /// since `epoch`, plus one so that 0 means never).
    unlogged: AtomicU64,
    logged_at: AtomicU64,
    epoch: Instant,
    refused: OnceLock<metrics::Counter>,
}

/// A call refused for overload: answers 429 with `Retry-After`.
#[derive(Debug)]
pub struct Refused;

impl Admission {
    /// At most `limit` calls in flight (at least 1); a call waits at most `wait` for one.
    pub fn new(limit: usize, wait: Duration) -> Self {
        let limit = limit.max(1);
        Admission {
            slots: Arc::new(Semaphore::new(limit)),
            limit,
            wait,
            unlogged: AtomicU64::new(0),
            logged_at: AtomicU64::new(0),
            epoch: Instant::now(),
            refused: OnceLock::new(),
        }
    }

    /// The limit of in-flight calls.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Calls in flight now.
    pub fn inflight(&self) -> usize {
        self.limit - self.slots.available_permits()
    }

    /// A slot for one call, kept until the permit drops: at once when one is free, else
    /// after at most the configured wait, else [`Refused`].
    pub async fn admit(&self) -> Result<OwnedSemaphorePermit, Refused> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        if !self.wait.is_zero() {
            if let Ok(Ok(permit)) =
                tokio::time::timeout(self.wait, self.slots.clone().acquire_owned()).await
            {
                return Ok(permit);
            }
        }
        Err(self.refuse())
    }

    /// A slot for one call if one is free now, without waiting.
    pub fn try_admit(&self) -> Result<OwnedSemaphorePermit, Refused> {
        self.slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| self.refuse())
    }

    /// Counts a refusal, and logs the refusals so far when the last line is old enough.
    fn refuse(&self) -> Refused {
        self.refused
            .get_or_init(|| metrics::counter!(ADMISSION_REFUSED_TOTAL))
            .increment(1);
        self.unlogged.fetch_add(1, Ordering::Relaxed);
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let last = self.logged_at.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= LOG_EVERY.as_millis() as u64;
        if due
            && self
                .logged_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let refused = self.unlogged.swap(0, Ordering::Relaxed);
            tracing::warn!(
                refused,
                limit = self.limit,
                wait_ms = self.wait.as_millis() as u64,
                "gateway at its limit of in-flight calls: refusing calls with 429 (logged at most every {LOG_EVERY:?})"
            );
        }
        Refused
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        // Not through `ApiError`, which logs every refusal: under overload that would be
        // one line per refused call. Marked `Logged` so the server's catch-all line for
        // unlogged 4xx answers skips it too: `refuse` logs at most every LOG_EVERY.
        let mut response = (
            StatusCode::TOO_MANY_REQUESTS,
            Json(serde_json::json!({
                "error": "the gateway is at its limit of in-flight calls; try again shortly"
            })),
        )
            .into_response();
        response.headers_mut().insert(
            http::header::RETRY_AFTER,
            HeaderValue::from_static(RETRY_AFTER_SECS),
        );
        response.extensions_mut().insert(crate::error::Logged);
        response
    }
}

impl From<Refused> for crate::error::ApiError {
    fn from(_: Refused) -> Self {
        crate::error::ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "the gateway is at its limit of in-flight calls; try again shortly",
        )
    }
}

/// The default limit of in-flight calls: [`DEFAULT_MAX_INFLIGHT`], lowered so that the
/// calls cannot use up the process's file descriptors (each holds at least the caller's
/// connection and one to the function; a quarter of the soft `RLIMIT_NOFILE` leaves room
/// for the rest).
pub fn default_limit() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes only into the struct it is given.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    if !ok || limit.rlim_cur == libc::RLIM_INFINITY {
        return DEFAULT_MAX_INFLIGHT;
    }
    let by_descriptors = usize::try_from(limit.rlim_cur / 4).unwrap_or(DEFAULT_MAX_INFLIGHT);
    DEFAULT_MAX_INFLIGHT.min(by_descriptors).max(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn calls_past_the_limit_wait_briefly_then_are_refused() {
        let admission = Admission::new(2, Duration::from_millis(50));
        let a = admission.admit().await.unwrap();
        let _b = admission.admit().await.unwrap();
        assert_eq!(admission.inflight(), 2);
        let started = tokio::time::Instant::now();
        assert!(admission.admit().await.is_err());
        assert_eq!(started.elapsed(), Duration::from_millis(50));
        assert!(admission.try_admit().is_err());
        // A slot freed during the wait goes to the waiting call.
        let waiting = admission.admit();
        let free = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            drop(a);
        };
        let (admitted, ()) = tokio::join!(waiting, free);
        assert!(admitted.is_ok());
        // The first refusal was logged; the second waits for the next line.
        assert_eq!(admission.unlogged.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn refusals_answer_429_with_retry_after() {
        let response = Refused.into_response();
        assert!(
            response
                .extensions()
                .get::<crate::error::Logged>()
                .is_some(),
            "not logged again per call by the server's catch-all"
        );
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[http::header::RETRY_AFTER], "1");
    }

    #[test]
    fn the_default_limit_leaves_descriptors_to_spare() {
        let limit = default_limit();
        assert!((16..=DEFAULT_MAX_INFLIGHT).contains(&limit), "{limit}");
    }
}
