//! One route's request plumbing: a request body comes in and is read within the route's
//! limit; a handler's result goes out as the HTTP answer, counted as accepted or refused by
//! reason and logged with the route and delivery id (never a secret or a signature).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::dispatch::Trigger;
use crate::telemetry::meters::{self, ChannelOutcome};
use crate::telemetry::throttle::{Throttle, REPEAT_INTERVAL};
use crate::verify::{ErrorClass, VerifyError};

/// Why a channel request was refused, or failed before its function could answer.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// No route of that name (404).
    #[error("no {channel} route named {name:?}")]
    UnknownRoute { channel: &'static str, name: String },
    /// The body is over the route's limit (413).
    #[error("request body is larger than this route's limit of {limit} bytes")]
    TooLarge { limit: usize },
    /// The body did not arrive within the gateway's body timeout (408).
    #[error("request body not received in time")]
    BodyTimeout,
    /// The signature check failed: 401, 400 for unreadable headers, 500 for our own
    /// misconfiguration.
    #[error("{0}")]
    Verify(#[from] VerifyError),
    /// A platform that wants every refusal answered 400 (Alexa) sent a request that fails
    /// its check `reason` (400). `detail` is logged, not answered.
    #[error("request verification failed: {reason}: {detail}")]
    Rejected {
        reason: &'static str,
        detail: String,
    },
    /// A hook's trigger rule did not match (401).
    #[error("the hook's trigger rule is not satisfied")]
    RuleNotSatisfied,
    /// The verified request comes in a content type the channel does not read (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The verified request cannot be understood (400).
    #[error("{0}")]
    Malformed(String),
    /// The route is at its concurrency limit (429).
    #[error("this route is at its max_inflight limit; try again later")]
    Overloaded,
    /// Hark failed (500; the detail is logged, not answered).
    #[error("{0}")]
    Internal(String),
}

impl ChannelError {
    /// A stable name for counters and log fields.
    pub fn reason(&self) -> &'static str {
        match self {
            ChannelError::UnknownRoute { .. } => "unknown_route",
            ChannelError::TooLarge { .. } => "too_large",
            ChannelError::BodyTimeout => "body_timeout",
            ChannelError::Verify(e) => e.reason(),
            ChannelError::Rejected { reason, .. } => reason,
            ChannelError::RuleNotSatisfied => "rule_not_satisfied",
            ChannelError::UnsupportedMediaType(_) => "unsupported_media_type",
            ChannelError::Malformed(_) => "malformed",
            ChannelError::Overloaded => "overloaded",
            ChannelError::Internal(_) => "internal",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ChannelError::UnknownRoute { .. } => StatusCode::NOT_FOUND,
            ChannelError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ChannelError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ChannelError::Verify(e) => match e.class() {
                ErrorClass::Misconfigured => StatusCode::INTERNAL_SERVER_ERROR,
                ErrorClass::Malformed => StatusCode::BAD_REQUEST,
                ErrorClass::Unauthenticated => StatusCode::UNAUTHORIZED,
            },
            ChannelError::Rejected { .. } => StatusCode::BAD_REQUEST,
            ChannelError::RuleNotSatisfied => StatusCode::UNAUTHORIZED,
            ChannelError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ChannelError::Malformed(_) => StatusCode::BAD_REQUEST,
            ChannelError::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            ChannelError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ChannelError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            _ if status.is_server_error() => "internal error; see the gateway log".to_owned(),
            // The detail (a certificate's problem, a download's error) is for the log only.
            ChannelError::Rejected { reason, .. } => {
                format!("request verification failed: {reason}")
            }
            _ => self.to_string(),
        };
        let mut response = (status, Json(serde_json::json!({ "error": message }))).into_response();
        // `RouteCore::finish` logged it.
        response.extensions_mut().insert(crate::error::Logged);
        if status == StatusCode::TOO_MANY_REQUESTS {
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}

/// How one delivery ended, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Verified and handed to a function (or answered, like a ping or a challenge).
    Accepted,
    /// Verified, but its id was seen before: acknowledged without running anything.
    Duplicate,
}

/// Counters of one route, kept in memory.
#[derive(Debug, Default)]
pub struct RouteStats {
    accepted: AtomicU64,
    duplicates: AtomicU64,
    refused: Mutex<BTreeMap<&'static str, u64>>,
}

impl RouteStats {
    pub fn count(&self, outcome: Outcome) {
        match outcome {
            Outcome::Accepted => &self.accepted,
            Outcome::Duplicate => &self.duplicates,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    pub fn refuse(&self, reason: &'static str) {
        let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        *refused.entry(reason).or_default() += 1;
    }

    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }

    pub fn refused(&self) -> BTreeMap<&'static str, u64> {
        self.refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// What every route has: its name, limits and counters.
#[derive(Debug)]
pub struct RouteCore {
    /// The channel's name (`slack`, `teams`, ...): the first segment of its path.
    pub channel: &'static str,
    /// What its calls are recorded as.
    pub trigger: Trigger,
    pub name: String,
    pub max_body: usize,
    pub max_inflight: usize,
    inflight: Arc<Semaphore>,
    pub stats: RouteStats,
}

/// A route as `GET /system/channels` lists it.
#[derive(Debug, Serialize)]
pub struct RouteSummary {
    pub channel: &'static str,
    pub name: String,
    pub path: String,
    pub max_body: usize,
    pub max_inflight: usize,
    pub inflight: usize,
    pub accepted: u64,
    pub duplicates: u64,
    pub refused: BTreeMap<&'static str, u64>,
}

impl RouteCore {
    pub fn new(
        channel: &'static str,
        trigger: Trigger,
        name: &str,
        max_body: usize,
        max_inflight: usize,
    ) -> Self {
        RouteCore {
            channel,
            trigger,
            name: name.to_owned(),
            max_body,
            max_inflight,
            inflight: Arc::new(Semaphore::new(max_inflight)),
            stats: RouteStats::default(),
        }
    }

    /// `slack/acme`: the key of this route's delivery ids in the store.
    pub fn key(&self) -> String {
        format!("{}/{}", self.channel, self.name)
    }

    /// Reads the body within [`RouteCore::max_body`].
    pub async fn read_body(&self, body: Body) -> Result<Bytes, ChannelError> {
        // A declared length over the limit is refused before any of it is read.
        if axum::body::HttpBody::size_hint(&body).lower() > self.max_body as u64 {
            return Err(ChannelError::TooLarge {
                limit: self.max_body,
            });
        }
        match Limited::new(body, self.max_body).collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
                Err(ChannelError::TooLarge {
                    limit: self.max_body,
                })
            }
            Err(e) if crate::server::is_body_timeout(&*e) => Err(ChannelError::BodyTimeout),
            Err(e) if crate::server::is_budget_spent(&*e) => Err(ChannelError::Overloaded),
            Err(e) => Err(ChannelError::Malformed(format!("cannot read body: {e}"))),
        }
    }

    /// A place among the route's running deliveries, or [`ChannelError::Overloaded`].
    pub fn permit(&self) -> Result<OwnedSemaphorePermit, ChannelError> {
        self.inflight
            .clone()
            .try_acquire_owned()
            .map_err(|_| ChannelError::Overloaded)
    }

    /// Counts and logs how a request ended and turns it into the answer.
    pub fn finish(
        &self,
        call_id: &str,
        delivery: Option<&str>,
        result: Result<(Outcome, Response), ChannelError>,
    ) -> Response {
        let delivery = delivery.unwrap_or("-");
        match result {
            Ok((outcome, response)) => {
                self.stats.count(outcome);
                let (counted, reason) = match outcome {
                    Outcome::Accepted => (ChannelOutcome::Accepted, "ok"),
                    Outcome::Duplicate => (ChannelOutcome::Duplicate, "duplicate_delivery"),
                };
                meters::channel_request(self.channel, counted, reason);
                tracing::info!(
                    channel = self.channel,
                    route = %self.name,
                    call_id,
                    delivery,
                    duplicate = outcome == Outcome::Duplicate,
                    status = response.status().as_u16(),
                    "delivery accepted"
                );
                response
            }
            Err(e) => {
                let reason = e.reason();
                self.stats.refuse(reason);
                meters::channel_request(self.channel, ChannelOutcome::Refused, reason);
                let status = e.status().as_u16();
                if status >= 500 {
                    tracing::error!(channel = self.channel, route = %self.name, call_id, delivery, reason, status, error = %e, "delivery failed");
                } else {
                    // Forged or malformed deliveries can come by the thousand: one line
                    // per route, reason and error text per interval, with a count.
                    static REFUSED: Throttle = Throttle::new(REPEAT_INTERVAL);
                    let kind = format!(
                        "delivery refused route={}/{} reason={reason} status={status} error={e}",
                        self.channel, self.name
                    );
                    crate::warn_repeated!(REFUSED, &kind, channel = self.channel, route = %self.name, call_id, delivery, reason, status, error = %e, "delivery refused");
                }
                e.into_response()
            }
        }
    }

    pub fn summary(&self) -> RouteSummary {
        RouteSummary {
            channel: self.channel,
            name: self.name.clone(),
            path: format!("/{}/{}", self.channel, self.name),
            max_body: self.max_body,
            max_inflight: self.max_inflight,
            inflight: self.max_inflight - self.inflight.available_permits(),
            accepted: self.stats.accepted(),
            duplicates: self.stats.duplicates(),
            refused: self.stats.refused(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bodies_over_the_limit_are_too_large() {
        let core = RouteCore::new("hooks", Trigger::Channel("hook"), "h", 4, 1);
        assert_eq!(
            &core.read_body(Body::from("1234")).await.unwrap()[..],
            b"1234"
        );
        let err = core.read_body(Body::from("12345")).await.unwrap_err();
        assert_eq!(err.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn permits_run_out_and_come_back() {
        let core = RouteCore::new("hooks", Trigger::Channel("hook"), "h", 4, 1);
        let permit = core.permit().unwrap();
        assert!(matches!(core.permit(), Err(ChannelError::Overloaded)));
        assert_eq!(core.summary().inflight, 1);
        drop(permit);
        assert!(core.permit().is_ok());
    }

    #[test]
    fn verify_errors_map_to_401_400_and_500() {
        let status = |e: VerifyError| ChannelError::Verify(e).status();
        assert_eq!(status(VerifyError::Mismatch), StatusCode::UNAUTHORIZED);
        assert_eq!(
            status(VerifyError::MissingHeader { header: "x".into() }),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(VerifyError::DuplicateHeader { header: "x".into() }),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(VerifyError::NoSecrets),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
