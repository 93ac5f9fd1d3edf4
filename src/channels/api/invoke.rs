//! `ANY /function/NAME[/PATH]`: an HTTP request comes in; the function's status,
//! headers and body go out, with `X-Call-Id` and `X-Duration-Seconds` added.
//! `ANY /async-function/NAME[/PATH]`: the request is committed to the durable queue and
//! 202 goes out at once; the result goes to `X-Callback-Url` when the call is done.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};

use crate::auth::scope;
use crate::dispatch::admission::Refused;
use crate::dispatch::queue::{EnqueueError, HEADER_CALLBACK_URL};
use crate::dispatch::Trigger;
use crate::error::ApiError;
use crate::function::FunctionName;
use crate::provider::{Invocation, Output, ProviderError};
use crate::server::{AppState, CallId, RawBody, HEADER_CALL_ID};
use crate::store::{CallState, QueuedCall};
use crate::telemetry::throttle::{Throttle, REPEAT_INTERVAL};

use super::openapi::ErrorBody;

/// Header carrying the call's duration, as the OpenFaaS gateway sends it.
pub const HEADER_DURATION: &str = "x-duration-seconds";

/// The path parameters of `/function/{name}[/{*path}]` and `/async-function/...`.
type Target = Path<HashMap<String, String>>;

fn split(Path(params): Target) -> (String, String) {
    let name = params.get("name").cloned().unwrap_or_default();
    let path = params.get("path").cloned().unwrap_or_default();
    (name, path)
}

/// Checks the function and the caller, and builds the call.
#[allow(clippy::too_many_arguments)]
async fn prepare(
    state: &AppState,
    name: String,
    path: String,
    call_id: &CallId,
    method: Method,
    uri: &Uri,
    mut headers: HeaderMap,
    body: RawBody,
) -> Result<(FunctionName, Invocation), ApiError> {
    let name: FunctionName = name.parse()?;
    let spec = state
        .registry
        .deployed(&name)
        .ok_or_else(|| ApiError::not_found(format!("function {name} not found")))?;
    if spec.auth_required() {
        state.auth.check(&headers, scope::FUNCTIONS_INVOKE).await?;
        // The function never sees Hark's token.
        headers.remove(http::header::AUTHORIZATION);
    }
    // Nor the web UI's session cookie (sent to the whole origin over https).
    crate::ui::strip_session_cookie(&mut headers);
    if let Ok(value) = HeaderValue::from_str(&call_id.0) {
        headers.insert(HEADER_CALL_ID, value);
    }
    let call = Invocation {
        call_id: call_id.0.clone(),
        method,
        path: format!("/{path}"),
        query: uri.query().map(str::to_owned),
        headers,
        body: body.0,
    };
    Ok((name, call))
}

#[utoipa::path(method(get, post, put, patch, delete), path = "/function/{name}", tag = "invoke", description = "Calls a function synchronously; any method, headers, query and body reach it. Also served at `/function/{name}/` and `/function/{name}/{path}` (the path reaches the function). A token with `functions:invoke` is needed only when the function is deployed with `com.hark.auth: required`.", params(("name" = String, Path, description = "Function name")), request_body(content = Vec<u8>, description = "Passed to the function as is", content_type = "*/*"), responses((status = 200, description = "The function's answer: its status, headers and body, with `X-Call-Id` and `X-Duration-Seconds`", body = Vec<u8>, content_type = "*/*"), (status = 404, description = "No such function", body = ErrorBody), (status = 429, description = "Too many calls in flight", body = ErrorBody), (status = 504, description = "The function took longer than its timeout", body = ErrorBody)))]
/// `ANY /function/{name}[/{*path}]`: runs the call and answers with its output.
pub async fn invoke(
    State(state): State<Arc<AppState>>,
    target: Target,
    Extension(call_id): Extension<CallId>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: RawBody,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let (name, path) = split(target);
    let (name, call) = prepare(&state, name, path, &call_id, method, &uri, headers, body).await?;
    let output = match call_sync(&state, &name, Trigger::Http, call).await {
        Ok(result) => result?,
        Err(refused) => return Ok(refused.into_response()),
    };
    let mut response = (output.status, output.headers, output.body).into_response();
    set_duration(response.headers_mut(), started);
    Ok(response)
}

/// A synchronous call on the gateway's one path, for the REST API and the web UI's invoke
/// panel alike: a slot of the in-flight limit (waiting for one as configured), then the
/// dispatcher (time limit, sandbox, browser leases, activation record). Refused when no
/// slot frees up; the call's own outcome otherwise.
pub async fn call_sync(
    state: &AppState,
    name: &FunctionName,
    trigger: Trigger,
    call: Invocation,
) -> Result<Result<Output, ProviderError>, Refused> {
    let _slot = state.admission.admit().await?;
    Ok(state.registry.dispatcher.invoke(name, trigger, call).await)
}

/// `X-Duration-Seconds`: the time since `started`, as OpenFaaS reports it.
pub fn set_duration(headers: &mut HeaderMap, started: Instant) {
    let seconds = format!("{:.6}", started.elapsed().as_secs_f64());
    // The string's buffer becomes the value's: no second copy.
    if let Ok(value) = HeaderValue::from_maybe_shared(bytes::Bytes::from(seconds)) {
        headers.insert(HEADER_DURATION, value);
    }
}

#[utoipa::path(method(post, put), path = "/async-function/{name}", tag = "async", description = "Queues a call durably and answers 202 at once; `X-Callback-Url` receives the result (a URL whose host is or resolves to a private, loopback, link-local or other special address is refused with 400 unless `hark up --egress-allow` allows it). Also served, for any method, at `/async-function/{name}/` and `/async-function/{name}/{path}`.", params(("name" = String, Path, description = "Function name")), request_body(content = Vec<u8>, description = "Passed to the function as is", content_type = "*/*"), responses((status = 202, description = "Queued; `X-Call-Id` names the call"), (status = 400, description = "`X-Callback-Url` is not an http(s) URL or is not allowed", body = ErrorBody), (status = 404, description = "No such function", body = ErrorBody), (status = 503, description = "The queue is full", body = ErrorBody)))]
/// `ANY /async-function/{name}[/{*path}]`: commits the call to the durable queue, then
/// answers 202 with its `X-Call-Id`.
pub async fn enqueue(
    State(state): State<Arc<AppState>>,
    target: Target,
    Extension(call_id): Extension<CallId>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: RawBody,
) -> Result<Response, ApiError> {
    let (name, path) = split(target);
    let callback = match headers.get(HEADER_CALLBACK_URL) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::bad_request("X-Callback-Url is not an http(s) URL"))?
                .to_owned(),
        ),
    };
    let (name, call) = prepare(&state, name, path, &call_id, method, &uri, headers, body).await?;
    // After the function and the caller are checked, so that nobody else makes the
    // gateway resolve names.
    let callback_url = match callback {
        None => None,
        Some(raw) => {
            // Refused now when it points at a private, loopback, link-local... address
            // (or a name resolving to one); checked again when the result is posted.
            let url = state.queue.egress().check_url(&raw).await.map_err(|e| {
                static REFUSED: Throttle = Throttle::new(REPEAT_INTERVAL);
                crate::warn_repeated!(REFUSED, &format!("callback refused {e}"), call_id = call_id.0, error = %e, "async call refused: X-Callback-Url not allowed");
                ApiError::bad_request(format!("X-Callback-Url refused: {e}"))
            })?;
            Some(url.to_string())
        }
    };
    let headers = call
        .headers
        .iter()
        .filter(|(k, _)| *k != HEADER_CALLBACK_URL)
        .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_owned())))
        .collect();
    let queued = QueuedCall {
        call_id: call.call_id.clone(),
        function: name.to_string(),
        method: call.method.to_string(),
        path: call.path,
        query: call.query,
        headers,
        body: call.body.to_vec(),
        callback_url,
        ..QueuedCall::default()
    };
    state.queue.enqueue(queued).await.map_err(|e| match e {
        EnqueueError::Store(e) => ApiError::from(e),
        // Full, over a byte quota, or short of disk: 503 with Retry-After.
        e => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    })?;
    tracing::info!(call_id = call.call_id, function = %name, "async call queued");
    Ok(StatusCode::ACCEPTED.into_response())
}

#[utoipa::path(delete, path = "/async-function/{name}", tag = "async", description = "Cancels a queued call that has not started.", security(("bearer" = [])), params(("name" = String, Path, description = "The call id (the path segment is shared with the function name of POST)")), responses((status = 200, description = "Cancelled"), (status = 404, description = "No such call", body = ErrorBody), (status = 409, description = "The call already runs or ended", body = ErrorBody), (status = 401, description = "No valid bearer token", body = ErrorBody), (status = 403, description = "The token lacks the scope", body = ErrorBody)))]
/// `DELETE /async-function/{call-id}`: cancels a call that has not started.
pub async fn cancel(
    State(state): State<Arc<AppState>>,
    Path(call_id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    state.auth.check(&headers, scope::FUNCTIONS_WRITE).await?;
    match state.queue.cancel(&call_id).await? {
        None => Err(ApiError::not_found(format!("no queued call {call_id}"))),
        Some(CallState::Pending) => {
            tracing::info!(call_id, "async call cancelled");
            Ok(StatusCode::OK)
        }
        Some(other) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "call {call_id} is {}; only pending calls can be cancelled",
                other.as_str()
            ),
        )),
    }
}
