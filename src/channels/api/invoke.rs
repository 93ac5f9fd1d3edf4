//! `ANY /function/NAME[/PATH]`: an HTTP request comes in; the function's status,
//! headers and body go out, with `X-Call-Id` and `X-Duration-Seconds` added.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use http::{HeaderMap, HeaderValue, Method, Uri};

use crate::auth::scope;
use crate::error::ApiError;
use crate::function::FunctionName;
use crate::provider::Invocation;
use crate::server::{AppState, CallId, RawBody, HEADER_CALL_ID};

/// Header carrying the call's duration, as the OpenFaaS gateway sends it.
pub const HEADER_DURATION: &str = "x-duration-seconds";

pub async fn invoke_root(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    Extension(call_id): Extension<CallId>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: RawBody,
) -> Result<Response, ApiError> {
    invoke(
        state,
        name,
        String::new(),
        call_id,
        method,
        uri,
        headers,
        body,
    )
    .await
}

pub async fn invoke_path(
    State(state): State<Arc<AppState>>,
    Path((name, path)): Path<(String, String)>,
    Extension(call_id): Extension<CallId>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: RawBody,
) -> Result<Response, ApiError> {
    invoke(state, name, path, call_id, method, uri, headers, body).await
}

#[allow(clippy::too_many_arguments)]
async fn invoke(
    state: Arc<AppState>,
    name: String,
    path: String,
    call_id: CallId,
    method: Method,
    uri: Uri,
    mut headers: HeaderMap,
    body: RawBody,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let name: FunctionName = name.parse()?;
    let spec = state
        .registry
        .deployed(&name)
        .ok_or_else(|| ApiError::not_found(format!("function {name} not found")))?;
    if spec.auth_required() {
        state.auth.check(&headers, scope::FUNCTIONS_INVOKE)?;
        // The function never sees Hark's token.
        headers.remove(http::header::AUTHORIZATION);
    }
    if let Ok(value) = HeaderValue::from_str(&call_id.0) {
        headers.insert(HEADER_CALL_ID, value);
    }
    let call = Invocation {
        call_id: call_id.0,
        method,
        path: format!("/{path}"),
        query: uri.query().map(str::to_owned),
        headers,
        body: body.0,
    };
    let output = state
        .registry
        .dispatcher
        .invoke(&name, "http", call)
        .await?;
    let mut response = (output.status, output.headers, output.body).into_response();
    let seconds = format!("{:.6}", started.elapsed().as_secs_f64());
    if let Ok(value) = HeaderValue::from_str(&seconds) {
        response.headers_mut().insert(HEADER_DURATION, value);
    }
    Ok(response)
}
