//! `/system/*` handlers: management requests come in; registry, store and log
//! operations go out as OpenFaaS-shaped JSON.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use http::{header, HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use crate::auth::scope;
use crate::error::ApiError;
use crate::function::{FunctionDeployment, FunctionName, FunctionStatus};
use crate::provider::{Cursor, Logged, Start};
use crate::registry::{DeployMode, Deployer};
use crate::server::{AppState, RawBody};

use super::openapi::ErrorBody;

#[utoipa::path(get, path = "/healthz", tag = "system", description = "Health: 200 with `OK` while the gateway serves; 503 with `draining` once it is stopping (running calls finish, new work should go elsewhere).",  responses((status = 200, description = "The gateway is up", body = String, content_type = "text/plain"), (status = 503, description = "The gateway is stopping", body = String, content_type = "text/plain")))]
pub async fn healthz(State(state): State<Arc<AppState>>) -> (StatusCode, &'static str) {
    if *state.shutdown.borrow() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else {
        (StatusCode::OK, "OK")
    }
}

#[utoipa::path(get, path = "/system/info", tag = "system", description = "Provider name and gateway version (OpenFaaS `SystemInfo`), and the store's `durability` (`full` or `normal`).", security(("bearer" = [])), responses((status = 200, description = "Gateway and provider information", body = Object), (status = 401, description = "No valid bearer token", body = ErrorBody), (status = 403, description = "The token lacks the scope", body = ErrorBody)))]
pub async fn info(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.auth.check(&headers, scope::FUNCTIONS_READ).await?;
    // As the database commits now, not as asked.
    let durability = match state.registry.store.committed_durability().await {
        Ok(Some(durability)) => durability.as_str(),
        _ => "unknown",
    };
    let version = serde_json::json!({ "release": env!("CARGO_PKG_VERSION"), "sha": option_env!("HARK_GIT_SHA").unwrap_or("unknown") });
    Ok(Json(serde_json::json!({
        "provider": {
            "provider": "hark",
            "orchestration": state.registry.provider.name(),
            "version": version,
        },
        "version": version,
        "arch": std::env::consts::ARCH,
        "durability": durability,
    })))
}

#[utoipa::path(get, path = "/system/functions", tag = "functions", description = "Every deployed function with replicas and invocation count.", security(("bearer" = [])), responses((status = 200, description = "The functions", body = Vec<FunctionStatus>), (status = 401, description = "No valid bearer token", body = ErrorBody), (status = 403, description = "The token lacks the scope", body = ErrorBody)))]
pub async fn list_functions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Vec<FunctionStatus>>, ApiError> {
    state.auth.check(&headers, scope::FUNCTIONS_READ).await?;
    Ok(Json(state.registry.list().await?))
}

#[utoipa::path(get, path = "/system/function/{name}", tag = "functions", description = "One function's status.", security(("bearer" = [])), params(("name" = String, Path, description = "Function name")), responses((status = 200, description = "The function", body = FunctionStatus), (status = 404, description = "No such function", body = ErrorBody), (status = 401, description = "No valid bearer token", body = ErrorBody), (status = 403, description = "The token lacks the scope", body = ErrorBody)))]
pub async fn get_function(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Json<FunctionStatus>, ApiError> {
    state.auth.check(&headers, scope::FUNCTIONS_READ).await?;
    let name: FunctionName = name.parse()?;
    Ok(Json(state.registry.status(&name).await?))
}

#[utoipa::path(post, path = "/system/functions", tag = "functions", description = "Deploys a new function (OpenFaaS `FunctionDeployment`). Each secret it names needs the `secrets:use` scope, or a `secrets:use:NAME` / `secrets:use:PREFIX*` scope matching it.", security(("bearer" = [])), request_body = FunctionDeployment, responses((status = 202, description = "Deployment accepted"), (status = 400, description = "Invalid deployment", body = ErrorBody), (status = 409, description = "A function of that name exists", body = ErrorBody), (status = 401, description = "No valid bearer token", body = ErrorBody), (status = 403, description = "The token lacks the scope, or may not use a secret the deployment names", body = ErrorBody)))]
pub async fn create_function(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: RawBody,
) -> Result<StatusCode, ApiError> {
    deploy(state, headers, body, DeployMode::Create).await
}

#[utoipa::path(put, path = "/system/functions", tag = "functions", description = "Replaces a function's deployment. Each secret it names needs the `secrets:use` scope, or a `secrets:use:NAME` / `secrets:use:PREFIX*` scope matching it, even when the function named it before.", security(("bearer" = [])), request_body = FunctionDeployment, responses((status = 202, description = "Update accepted"), (status = 400, description = "Invalid deployment", body = ErrorBody), (status = 404, description = "No such function", body = ErrorBody), (status = 401, description = "No valid bearer token", body = ErrorBody), (status = 403, description = "The token lacks the scope, or may not use a secret the deployment names", body = ErrorBody)))]
pub async fn update_function(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: RawBody,
) -> Result<StatusCode, ApiError> {
    deploy(state, headers, body, DeployMode::Update).await
}

async fn deploy(
    state: Arc<AppState>,
    headers: HeaderMap,
    body: RawBody,
    mode: DeployMode,
) -> Result<StatusCode, ApiError> {
    let claims = state.auth.check(&headers, scope::FUNCTIONS_WRITE).await?;
    let spec: FunctionDeployment = body.json()?;
    state
        .registry
        .deploy(spec, mode, Deployer::Token(&claims))
        .await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct DeleteFunction {
    function_name: FunctionName,
}

#[utoipa::path(delete, path = "/system/functions", tag = "functions", description = "Removes a function.", security(("bearer" = [])), request_body = DeleteFunction, responses((status = 202, description = "Removed"), (status = 404, description = "No such function", body = ErrorBody), (status = 401, description = "No valid bearer token", body = ErrorBody), (status = 403, description = "The token lacks the scope", body = ErrorBody)))]
pub async fn delete_function(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: RawBody,
) -> Result<StatusCode, ApiError> {
    state.auth.check(&headers, scope::FUNCTIONS_WRITE).await?;
    let request: DeleteFunction = body.json()?;
    state.registry.remove(&request.function_name).await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct ScaleRequest {
    #[serde(default)]
    service_name: Option<String>,
    replicas: u32,
}

/// The most replicas one function may ask for.
const MAX_REPLICAS: u32 = 64;

#[utoipa::path(post, path = "/system/scale-function/{name}", tag = "functions", description = "Sets a function's replica count.", security(("bearer" = [])), params(("name" = String, Path, description = "Function name")), request_body = ScaleRequest, responses((status = 202, description = "Scaling accepted"), (status = 404, description = "No such function", body = ErrorBody), (status = 401, description = "No valid bearer token", body = ErrorBody), (status = 403, description = "The token lacks the scope", body = ErrorBody)))]
pub async fn scale_function(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: RawBody,
) -> Result<StatusCode, ApiError> {
    state.auth.check(&headers, scope::FUNCTIONS_WRITE).await?;
    let name: FunctionName = name.parse()?;
    let request: ScaleRequest = body.json()?;
    if let Some(service) = request.service_name.filter(|s| !s.is_empty()) {
        if service != name.as_str() {
            return Err(ApiError::bad_request(format!(
                "serviceName {service:?} does not match the path's {name}"
            )));
        }
    }
    if request.replicas > MAX_REPLICAS {
        return Err(ApiError::bad_request(format!(
            "replicas must be at most {MAX_REPLICAS}"
        )));
    }
    state.registry.scale(&name, request.replicas).await?;
    Ok(StatusCode::ACCEPTED)
}

/// OpenFaaS's `Secret`: `value` as text or `rawValue` as base64 bytes.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct SecretRequest {
    name: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    raw_value: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SecretName {
    name: String,
}

/// Secret names become file names: letters, digits, `.`, `_` and `-`, not starting with `.`.
fn check_secret_name(name: &str) -> Result<(), ApiError> {
    let valid = !name.is_empty()
        && name.len() <= 253
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "invalid secret name {:?}: use letters, digits, '.', '_' and '-', not starting with '.'",
            name.chars().take(80).collect::<String>()
        )))
    }
}

#[utoipa::path(get, path = "/system/secrets", tag = "secrets", description = "Names of the stored secrets (never their values).", security(("bearer" = [])), responses((status = 200, description = "Secret names", body = Vec<SecretName>), (status = 401, description = "No valid bearer token", body = ErrorBody), (status = 403, description = "The token lacks the scope", body = ErrorBody)))]
pub async fn list_secrets(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Vec<SecretName>>, ApiError> {
    state.auth.check(&headers, scope::SECRETS_READ).await?;
    let names = state.registry.store.secret_names().await?;
    Ok(Json(
        names.into_iter().map(|name| SecretName { name }).collect(),
    ))
}

#[utoipa::path(post, path = "/system/secrets", tag = "secrets", description = "Stores a new secret.", security(("bearer" = [])), request_body = SecretRequest, responses((status = 201, description = "Created"), (status = 409, description = "A secret of that name exists", body = ErrorBody), (status = 401, description = "No valid bearer token", body = ErrorBody), (status = 403, description = "The token lacks the scope", body = ErrorBody)))]
pub async fn create_secret(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: RawBody,
) -> Result<StatusCode, ApiError> {
    put_secret(state, headers, body, true).await
}

#[utoipa::path(put, path = "/system/secrets", tag = "secrets", description = "Replaces a secret's value; functions using it are redeployed.", security(("bearer" = [])), request_body = SecretRequest, responses((status = 200, description = "Updated"), (status = 404, description = "No such secret", body = ErrorBody), (status = 401, description = "No valid bearer token", body = ErrorBody), (status = 403, description = "The token lacks the scope", body = ErrorBody)))]
pub async fn update_secret(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: RawBody,
) -> Result<StatusCode, ApiError> {
    put_secret(state, headers, body, false).await
}

async fn put_secret(
    state: Arc<AppState>,
    headers: HeaderMap,
    body: RawBody,
    create: bool,
) -> Result<StatusCode, ApiError> {
    state.auth.check(&headers, scope::SECRETS_WRITE).await?;
    let request: SecretRequest = body.json()?;
    check_secret_name(&request.name)?;
    let value = match (request.value, request.raw_value) {
        (Some(v), None) => v.into_bytes(),
        (None, Some(raw)) => base64::engine::general_purpose::STANDARD
            .decode(raw.trim())
            .map_err(|_| ApiError::bad_request("rawValue is not valid base64"))?,
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of value and rawValue",
            ))
        }
    };
    let store = &state.registry.store;
    let exists = store.secret(&request.name).await?.is_some();
    match (create, exists) {
        (true, true) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "secret {} already exists; use PUT to update it",
                    request.name
                ),
            ))
        }
        (false, false) => {
            return Err(ApiError::not_found(format!(
                "secret {} not found",
                request.name
            )))
        }
        _ => {}
    }
    store.put_secret(&request.name, value).await?;
    state.registry.refresh_secret(&request.name).await?;
    tracing::info!(secret = %request.name, "secret stored");
    Ok(if create {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    })
}

#[derive(Deserialize, utoipa::ToSchema)]
struct DeleteSecret {
    name: String,
}

#[utoipa::path(delete, path = "/system/secrets", tag = "secrets", description = "Removes a secret no function uses.", security(("bearer" = [])), request_body = DeleteSecret, responses((status = 200, description = "Removed"), (status = 404, description = "No such secret", body = ErrorBody), (status = 401, description = "No valid bearer token", body = ErrorBody), (status = 403, description = "The token lacks the scope", body = ErrorBody)))]
pub async fn delete_secret(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: RawBody,
) -> Result<StatusCode, ApiError> {
    state.auth.check(&headers, scope::SECRETS_WRITE).await?;
    let request: DeleteSecret = body.json()?;
    check_secret_name(&request.name)?;
    let users = state.registry.users_of_secret(&request.name).await?;
    if !users.is_empty() {
        let users: Vec<String> = users.iter().map(ToString::to_string).collect();
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "secret {} is used by {}; remove it from them first",
                request.name,
                users.join(", ")
            ),
        ));
    }
    if !state.registry.store.delete_secret(&request.name).await? {
        return Err(ApiError::not_found(format!(
            "secret {} not found",
            request.name
        )));
    }
    tracing::info!(secret = %request.name, "secret removed");
    Ok(StatusCode::OK)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    name: Option<String>,
    tail: Option<usize>,
    follow: Option<bool>,
    since: Option<String>,
}

#[utoipa::path(get, path = "/system/logs", tag = "functions", description = "A function's log lines as JSON lines (`follow=true` streams them). With `Accept: text/event-stream` they come as server-sent events instead, each with an id; a client that reconnects with that id in `Last-Event-ID` gets every kept line after it, once.", security(("bearer" = [])), params(LogsQuery), responses((status = 200, description = "One JSON object per line, or one event per line", body = String, content_type = "application/x-ndjson"), (status = 400, description = "A malformed `since` or `Last-Event-ID`", body = ErrorBody), (status = 404, description = "No such function", body = ErrorBody), (status = 401, description = "No valid bearer token", body = ErrorBody), (status = 403, description = "The token lacks the scope", body = ErrorBody)))]
pub async fn logs(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    state.auth.check(&headers, scope::FUNCTIONS_READ).await?;
    let name: FunctionName = query
        .name
        .as_deref()
        .ok_or_else(|| ApiError::bad_request("the name query parameter is required"))?
        .parse()?;
    if state.registry.spec(&name).await?.is_none() {
        return Err(ApiError::not_found(format!("function {name} not found")));
    }
    let since: Option<DateTime<Utc>> = match &query.since {
        None => None,
        Some(s) => Some(
            DateTime::parse_from_rfc3339(s)
                .map_err(|_| {
                    ApiError::bad_request(
                        "since must be an RFC 3339 time, e.g. 2026-11-30T09:00:00Z",
                    )
                })?
                .with_timezone(&Utc),
        ),
    };
    let start = match last_event_id(&headers)? {
        Some(cursor) => Start::After(cursor),
        None => Start::Tail {
            tail: query.tail,
            since,
        },
    };
    let follow = query.follow.unwrap_or(false);
    let hub = state.registry.provider.logs().clone();
    let lines = hub.clone().read(name, start, follow);
    let lines = until_stopping(&state, lines);
    let (auth, asked) = (state.auth.clone(), headers.clone());
    let lines = while_allowed(lines, move || {
        let (auth, asked) = (auth.clone(), asked.clone());
        async move { auth.check(&asked, scope::FUNCTIONS_READ).await.is_ok() }
    });
    if wants_events(&headers) {
        return Ok(events(lines, move |line| {
            Event::default()
                .id(hub.cursor(line).to_string())
                .json_data(&line.line)
        }));
    }
    let body = Body::from_stream(lines.map(|logged| {
        let mut json = serde_json::to_vec(&logged.line).unwrap_or_default();
        json.push(b'\n');
        Ok::<_, std::io::Error>(bytes::Bytes::from(json))
    }));
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

/// The cursor a reconnecting event-stream client sends back, if any.
pub fn last_event_id(headers: &HeaderMap) -> Result<Option<Cursor>, ApiError> {
    headers
        .get("last-event-id")
        .map(|id| {
            id.to_str()
                .ok()
                .and_then(|id| id.parse().ok())
                .ok_or_else(|| {
                    ApiError::bad_request("Last-Event-ID is not an id this gateway sent")
                })
        })
        .transpose()
}

/// Whether the client asked for server-sent events (`Accept: text/event-stream`).
pub fn wants_events(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"))
}

/// How often a long stream asks again whether its reader may still read it.
pub const RECHECK: std::time::Duration = std::time::Duration::from_secs(10);

/// `lines` while `still_allowed` says yes, asked every [`RECHECK`]: a stream outlives
/// a revoked or expired token, or an ended web UI session, by at most that long.
pub fn while_allowed<S, F, Fut>(
    lines: S,
    still_allowed: F,
) -> impl Stream<Item = S::Item> + Send + 'static
where
    S: Stream + Send + 'static,
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    lines.take_until(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + RECHECK, RECHECK);
        loop {
            tick.tick().await;
            if !still_allowed().await {
                break;
            }
        }
    })
}

/// `lines` until the gateway starts stopping, so that long streams let it drain.
pub fn until_stopping<S: Stream + Send + 'static>(
    state: &AppState,
    lines: S,
) -> impl Stream<Item = S::Item> + Send + 'static {
    let mut shutdown = state.shutdown.clone();
    lines.take_until(async move {
        let _ = shutdown.wait_for(|stopping| *stopping).await;
    })
}

/// `lines` as server-sent events made by `event`, with a comment every 15 s so that
/// proxies keep an idle stream open.
pub fn events<S>(
    lines: S,
    event: impl Fn(&Logged) -> Result<Event, axum::Error> + Send + 'static,
) -> Response
where
    S: Stream<Item = Logged> + Send + 'static,
{
    let events = lines.map(move |line| event(&line));
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ActivationsQuery {
    function: Option<String>,
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/system/activations", tag = "functions", description = "Recent invocations, newest first.", security(("bearer" = [])), params(ActivationsQuery), responses((status = 200, description = "Activations", body = Vec<crate::store::Activation>), (status = 401, description = "No valid bearer token", body = ErrorBody), (status = 403, description = "The token lacks the scope", body = ErrorBody)))]
pub async fn activations(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<ActivationsQuery>,
) -> Result<Json<Vec<crate::store::Activation>>, ApiError> {
    state.auth.check(&headers, scope::FUNCTIONS_READ).await?;
    let function: Option<FunctionName> = query.function.as_deref().map(str::parse).transpose()?;
    let limit = query.limit.unwrap_or(50).clamp(1, 1000);
    Ok(Json(
        state
            .registry
            .store
            .activations(function.as_ref(), limit)
            .await?,
    ))
}

/// `GET /system/activations/ID`: one activation with its story (what the function was
/// given, what it answered and the lines it logged), and its screenshot's URL when a
/// failed browser call left one.
#[utoipa::path(get, path = "/system/activations/{call_id}", tag = "activations", description = "One activation record. `story` holds what the function was given and answered (bodies capped by `--history-max-body`, credentials and the function's secret values redacted) and the log lines of that call, while it is kept (`--history-max-bytes`); `screenshot` names the failure screenshot when a browser call left one.", security(("bearer" = [])), params(("call_id" = String, Path, description = "The call id")), responses((status = 200, description = "The activation", body = Object), (status = 404, description = "No such activation", body = ErrorBody), (status = 401, description = "No valid bearer token", body = ErrorBody), (status = 403, description = "The token lacks the scope", body = ErrorBody)))]
pub async fn activation(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(call_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.auth.check(&headers, scope::FUNCTIONS_READ).await?;
    let store = &state.registry.store;
    let Some((activation, story)) = store.activation(&call_id).await? else {
        return Err(ApiError::not_found(format!(
            "no activation with call id {call_id}"
        )));
    };
    let mut body = serde_json::to_value(&activation).unwrap_or_default();
    if let Some(story) = story {
        body["story"] = serde_json::to_value(story).unwrap_or_default();
    }
    if let Some(shot) = store.screenshot(&call_id).await? {
        body["screenshot"] = serde_json::json!({
            "url": shot.url,
            "bytes": shot.png.len(),
            "takenAt": shot.taken_at,
            "path": format!("/system/activations/{call_id}/screenshot"),
        });
    }
    Ok(Json(body))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QueueQuery {
    state: Option<crate::store::CallState>,
    function: Option<String>,
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/system/queue", tag = "async", description = "Queued async calls, newest first.", security(("bearer" = [])), params(QueueQuery), responses((status = 200, description = "Queue entries", body = Vec<crate::store::QueueEntry>), (status = 401, description = "No valid bearer token", body = ErrorBody), (status = 403, description = "The token lacks the scope", body = ErrorBody)))]
pub async fn queue(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<QueueQuery>,
) -> Result<Json<Vec<crate::store::QueueEntry>>, ApiError> {
    state.auth.check(&headers, scope::FUNCTIONS_READ).await?;
    let function: Option<FunctionName> = query.function.as_deref().map(str::parse).transpose()?;
    let limit = query.limit.unwrap_or(50).clamp(1, 1000);
    let entries = state
        .registry
        .store
        .queue_entries(query.state, function.map(|f| f.to_string()), limit)
        .await?;
    Ok(Json(entries))
}

#[utoipa::path(post, path = "/system/queue/{call_id}/retry", tag = "async", description = "Puts a dead-lettered call back in the queue.", security(("bearer" = [])), params(("call_id" = String, Path, description = "The call id")), responses((status = 202, description = "Queued again"), (status = 404, description = "No such call", body = ErrorBody), (status = 409, description = "The call is not dead", body = ErrorBody), (status = 401, description = "No valid bearer token", body = ErrorBody), (status = 403, description = "The token lacks the scope", body = ErrorBody)))]
pub async fn retry_call(
    State(state): State<Arc<AppState>>,
    Path(call_id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    state.auth.check(&headers, scope::FUNCTIONS_WRITE).await?;
    match state.registry.store.requeue_dead(&call_id).await? {
        None => Err(ApiError::not_found(format!("no queued call {call_id}"))),
        Some(crate::store::CallState::Dead) => {
            state.queue.wake();
            tracing::info!(call_id, "dead-lettered call queued again");
            Ok(StatusCode::ACCEPTED)
        }
        Some(other) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "call {call_id} is {}; only dead-lettered calls can be retried",
                other.as_str()
            ),
        )),
    }
}

#[utoipa::path(get, path = "/system/schedules", tag = "schedules", description = "Every scheduled function: its cron line, next tick and recent runs.", security(("bearer" = [])), responses((status = 200, description = "Schedules", body = Vec<Object>), (status = 401, description = "No valid bearer token", body = ErrorBody), (status = 403, description = "The token lacks the scope", body = ErrorBody)))]
pub async fn schedules(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Vec<crate::dispatch::schedule::ScheduleStatus>>, ApiError> {
    state.auth.check(&headers, scope::FUNCTIONS_READ).await?;
    Ok(Json(state.scheduler.status().await?))
}
