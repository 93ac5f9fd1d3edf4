//! The one HTTP error type: module errors come in through `From`, a status code and a
//! JSON body `{"error": "..."}` go out. Client errors pass their message through;
//! internal errors answer a generic 500 and log the detail.

use axum::response::{IntoResponse, Response};
use axum::Json;
use http::StatusCode;

use crate::auth::AuthError;
use crate::function::InvalidName;
use crate::provider::ProviderError;
use crate::store::StoreError;

/// Marks a response whose refusal was already logged, so that the server's catch-all
/// log line for other 4xx answers (extractor rejections, unknown routes) skips it.
#[derive(Debug, Clone, Copy)]
pub struct Logged;

/// An error answer of the HTTP API.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// A failure inside Hark: logged in full, answered as a generic 500.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; see the gateway log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_client_error() {
            tracing::info!(status = self.status.as_u16(), error = %self.message, "request refused");
        }
        let mut response = (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response();
        response.extensions_mut().insert(Logged);
        if matches!(
            self.status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            // Overload is brief by design: tell clients when to come back.
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Missing | AuthError::Invalid(_) => {
                Self::new(StatusCode::UNAUTHORIZED, e.to_string())
            }
            AuthError::Forbidden(_) => Self::new(StatusCode::FORBIDDEN, e.to_string()),
            AuthError::UnknownScope(_) | AuthError::Ttl(_) | AuthError::BadSubject => {
                Self::bad_request(e.to_string())
            }
            AuthError::UnknownKey(_) => Self::not_found(e.to_string()),
            AuthError::CurrentKey(_) | AuthError::AdminTokenKey(_) => {
                Self::new(StatusCode::CONFLICT, e.to_string())
            }
            AuthError::Store(e) => e.into(),
            AuthError::Key { .. }
            | AuthError::KeyExists(_)
            | AuthError::ShortKey { .. }
            | AuthError::Sign(_)
            | AuthError::NotTheSharedKey { .. } => Self::internal(e),
        }
    }
}

/// The status code that answers a provider error; also what activation records store.
pub fn provider_status(e: &ProviderError) -> StatusCode {
    match e {
        ProviderError::NotFound(_) => StatusCode::NOT_FOUND,
        ProviderError::Unsupported { .. } => StatusCode::NOT_IMPLEMENTED,
        ProviderError::BadSpec(_) => StatusCode::BAD_REQUEST,
        ProviderError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        ProviderError::Overloaded(_) => StatusCode::TOO_MANY_REQUESTS,
        ProviderError::Unavailable { .. } => StatusCode::BAD_GATEWAY,
        ProviderError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        ProviderError::Unwritable(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

impl From<ProviderError> for ApiError {
    fn from(e: ProviderError) -> Self {
        match provider_status(&e) {
            StatusCode::INTERNAL_SERVER_ERROR => Self::internal(e),
            status => Self::new(status, e.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unwritable(_) => {
                tracing::error!(error = %e, "the store cannot write; answering 503");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the gateway cannot write to its store (its disk is full or read-only); try again later",
                )
            }
            e => Self::internal(e),
        }
    }
}

impl From<InvalidName> for ApiError {
    fn from(e: InvalidName) -> Self {
        Self::bad_request(e.to_string())
    }
}
