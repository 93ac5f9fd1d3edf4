//! `POST /slack/{app}`: a Slack request comes in, is verified over its raw bytes, and is
//! told apart by shape — form with `command` (slash command), form with `payload`
//! (interactivity), JSON (Events API); the acknowledgement goes out within Slack's 3 s, and
//! slower results follow to `response_url`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::reply::{self, ResponseType};
use super::{SlackRoute, RESPONSE_URL_VALIDITY};
use crate::channels::common::delivery::{invocation, Budget};
use crate::channels::common::route::Outcome;
use crate::channels::common::{unknown_route, ChannelError};
use crate::function::FunctionName;
use crate::provider::{Output, ProviderError};
use crate::server::{AppState, CallId};
use crate::verify;

/// `X-Slack-Retry-Num`: how many times Slack has retried this event.
pub const HEADER_RETRY_NUM: &str = "x-slack-retry-num";
/// `X-Slack-Retry-Reason`: why Slack retried (e.g. `http_timeout`).
pub const HEADER_RETRY_REASON: &str = "x-slack-retry-reason";

type Handled = Result<(Outcome, Response), ChannelError>;

pub async fn handle(
    State(state): State<Arc<AppState>>,
    Path(app): Path<String>,
    Extension(call_id): Extension<CallId>,
    request: Request,
) -> Response {
    let Some(route) = state.channels.slack.get(&app).cloned() else {
        return unknown_route("slack", &app);
    };
    let mut delivery = None;
    let result = serve(&state, &route, &call_id.0, request, &mut delivery).await;
    route.core.finish(&call_id.0, delivery.as_deref(), result)
}

async fn serve(
    state: &Arc<AppState>,
    route: &Arc<SlackRoute>,
    call_id: &str,
    request: Request,
    delivery: &mut Option<String>,
) -> Handled {
    let (parts, body) = request.into_parts();
    let body = route.core.read_body(body).await?;
    verify::slack::verify(
        &route.signing_secrets,
        &parts.headers,
        &body,
        state.clock.now().timestamp(),
    )?;
    let is_json = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return event(state, route, call_id, &parts.headers, body, delivery).await;
    }
    let form: BTreeMap<String, String> = serde_urlencoded::from_bytes(&body)
        .map_err(|e| ChannelError::Malformed(format!("form body: {e}")))?;
    if let Some(payload) = form.get("payload") {
        interaction(state, route, call_id, payload, delivery).await
    } else if form.contains_key("command") {
        command(state, route, call_id, form, delivery).await
    } else if form.contains_key("ssl_check") {
        Ok((Outcome::Accepted, StatusCode::OK.into_response()))
    } else {
        Err(ChannelError::Malformed(
            "neither a slash command, an interaction nor an event".into(),
        ))
    }
}

/// The answer carrying a message, or an empty 200 for none.
fn answer(message: Option<Value>) -> Response {
    match message {
        Some(message) => Json(message).into_response(),
        None => StatusCode::OK.into_response(),
    }
}

/// Runs `function` in the background, holding a place in the route's limit.
fn start(
    state: &Arc<AppState>,
    route: &Arc<SlackRoute>,
    function: &FunctionName,
    call: crate::provider::Invocation,
) -> Result<
    impl std::future::Future<Output = Result<Output, ProviderError>> + Send + 'static,
    ChannelError,
> {
    let permit = route.core.permit()?;
    let dispatcher = state.registry.dispatcher.clone();
    let function = function.clone();
    Ok(async move {
        let result = dispatcher.invoke(&function, "slack", call).await;
        drop(permit);
        result
    })
}

/// After the acknowledgement: waits for the function and posts its message to
/// `response_url`, retrying until the URL expires.
fn follow_up(
    state: &Arc<AppState>,
    route: &Arc<SlackRoute>,
    function: FunctionName,
    run: tokio::task::JoinHandle<Result<Output, ProviderError>>,
    response_url: Option<String>,
    response_type: ResponseType,
    expires: Instant,
) {
    let state2 = state.clone();
    let route_name = route.core.name.clone();
    state.channels.outbound.spawn(async move {
        let result = match run.await {
            Ok(result) => result,
            Err(e) => Err(ProviderError::Internal(format!("function task failed: {e}"))),
        };
        let Some(message) = reply::message(&function, &result, response_type) else {
            return;
        };
        let Some(url) = response_url else {
            tracing::info!(channel = "slack", route = %route_name, function = %function, "result has nowhere to go: no response_url");
            return;
        };
        let sent = state2
            .channels
            .outbound
            .send("slack response_url", expires, |client| {
                client.post(url.as_str()).json(&message)
            })
            .await;
        match sent {
            Ok(_) => tracing::info!(channel = "slack", route = %route_name, function = %function, "posted result to response_url"),
            Err(e) => tracing::warn!(channel = "slack", route = %route_name, function = %function, error = %e, "could not post result to response_url"),
        }
    });
}

async fn command(
    state: &Arc<AppState>,
    route: &Arc<SlackRoute>,
    call_id: &str,
    form: BTreeMap<String, String>,
    delivery: &mut Option<String>,
) -> Handled {
    let received = Instant::now();
    let field = |k: &str| form.get(k).cloned().unwrap_or_default();
    *delivery = form.get("trigger_id").cloned();
    let name = field("command");
    let Some(function) = route.commands.get(&name) else {
        let text = format!("No function is set up for {name} on this Hark gateway.");
        return Ok((
            Outcome::Accepted,
            answer(Some(reply::text(ResponseType::Ephemeral, &text))),
        ));
    };
    let input = json!({
        "type": "slash_command",
        "command": name,
        "text": field("text"),
        "user": { "id": field("user_id"), "name": field("user_name") },
        "channel": { "id": field("channel_id"), "name": field("channel_name") },
        "team": { "id": field("team_id"), "domain": field("team_domain") },
        "enterprise": form.get("enterprise_id").map(|id| json!({ "id": id, "name": field("enterprise_name") })),
        "response_url": field("response_url"),
        "trigger_id": field("trigger_id"),
        "api_app_id": field("api_app_id"),
    });
    let call = invocation(
        call_id,
        "slack",
        &route.core.name,
        delivery.as_deref(),
        "application/json",
        Bytes::from(input.to_string()),
        HeaderMap::new(),
    );
    let run = start(state, route, function, call)?;
    match state.channels.outbound.within(route.ack_budget, run).await {
        Budget::Done(result) => {
            let result = result.unwrap_or_else(|e| {
                Err(ProviderError::Internal(format!(
                    "function task failed: {e}"
                )))
            });
            let message = reply::message(function, &result, route.response_type);
            Ok((Outcome::Accepted, answer(message)))
        }
        Budget::Late(run) => {
            follow_up(
                state,
                route,
                function.clone(),
                run,
                form.get("response_url").cloned().filter(|u| !u.is_empty()),
                route.response_type,
                received + RESPONSE_URL_VALIDITY,
            );
            let working = (!route.working_message.is_empty())
                .then(|| reply::text(ResponseType::Ephemeral, &route.working_message));
            Ok((Outcome::Accepted, answer(working)))
        }
    }
}

async fn event(
    state: &Arc<AppState>,
    route: &Arc<SlackRoute>,
    call_id: &str,
    headers: &HeaderMap,
    body: Bytes,
    delivery: &mut Option<String>,
) -> Handled {
    let envelope: Value = serde_json::from_slice(&body)
        .map_err(|e| ChannelError::Malformed(format!("JSON body: {e}")))?;
    match envelope["type"].as_str() {
        Some("url_verification") => {
            let challenge = envelope["challenge"].as_str().ok_or_else(|| {
                ChannelError::Malformed("url_verification without challenge".into())
            })?;
            Ok((
                Outcome::Accepted,
                Json(json!({ "challenge": challenge })).into_response(),
            ))
        }
        Some("event_callback") => {
            let event_id = envelope["event_id"]
                .as_str()
                .ok_or_else(|| ChannelError::Malformed("event_callback without event_id".into()))?;
            *delivery = Some(event_id.to_owned());
            let retry = headers
                .get(HEADER_RETRY_NUM)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("0");
            let kind = envelope["event"]["type"].as_str().unwrap_or_default();
            let Some(function) = route.events.get(kind) else {
                tracing::info!(channel = "slack", route = %route.core.name, delivery = event_id, event = kind, "no function for this event type; acknowledged");
                return Ok((Outcome::Accepted, StatusCode::OK.into_response()));
            };
            let call = invocation(
                call_id,
                "slack",
                &route.core.name,
                Some(event_id),
                "application/json",
                body.clone(),
                HeaderMap::new(),
            );
            let run = start(state, route, function, call)?;
            let now = chrono::Utc::now().timestamp();
            let first = state
                .registry
                .store
                .first_delivery(&route.core.key(), event_id, now)
                .await
                .map_err(|e| ChannelError::Internal(e.to_string()))?;
            if !first {
                tracing::info!(channel = "slack", route = %route.core.name, delivery = event_id, retry, "event already received; not run again");
                return Ok((Outcome::Duplicate, StatusCode::OK.into_response()));
            }
            if retry != "0" {
                let reason = headers
                    .get(HEADER_RETRY_REASON)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                tracing::info!(channel = "slack", route = %route.core.name, delivery = event_id, retry, reason, "retried event not seen before; running it");
            }
            let function = function.clone();
            let route_name = route.core.name.clone();
            state.channels.outbound.spawn(async move {
                if let Err(e) = run.await {
                    tracing::warn!(channel = "slack", route = %route_name, function = %function, error = %e, "event function failed");
                }
            });
            Ok((Outcome::Accepted, StatusCode::OK.into_response()))
        }
        other => {
            tracing::info!(channel = "slack", route = %route.core.name, kind = other.unwrap_or("?"), "event envelope of another type; acknowledged");
            Ok((Outcome::Accepted, StatusCode::OK.into_response()))
        }
    }
}

async fn interaction(
    state: &Arc<AppState>,
    route: &Arc<SlackRoute>,
    call_id: &str,
    payload: &str,
    delivery: &mut Option<String>,
) -> Handled {
    let value: Value = serde_json::from_str(payload)
        .map_err(|e| ChannelError::Malformed(format!("payload is not JSON: {e}")))?;
    let kind = value["type"].as_str().unwrap_or_default();
    let key = match kind {
        "block_actions" => value["actions"][0]["action_id"].as_str(),
        "view_submission" | "view_closed" => value["view"]["callback_id"].as_str(),
        _ => value["callback_id"].as_str(),
    }
    .unwrap_or_default();
    *delivery = value["trigger_id"].as_str().map(str::to_owned);
    let Some(function) = route.actions.get(key) else {
        tracing::info!(channel = "slack", route = %route.core.name, kind, key, "no function for this interaction; acknowledged");
        return Ok((Outcome::Accepted, StatusCode::OK.into_response()));
    };
    let call = invocation(
        call_id,
        "slack",
        &route.core.name,
        delivery.as_deref(),
        "application/json",
        Bytes::from(payload.to_owned()),
        HeaderMap::new(),
    );
    let run = start(state, route, function, call)?;
    let response_url = value["response_url"]
        .as_str()
        .or_else(|| value["response_urls"][0]["response_url"].as_str())
        .map(str::to_owned);
    let expires = Instant::now() + RESPONSE_URL_VALIDITY;
    if kind == "view_submission" {
        // A view submission's answer may carry a `response_action` (errors, update, push).
        return match state.channels.outbound.within(route.ack_budget, run).await {
            Budget::Done(Ok(Ok(output))) if output.status.is_success() => {
                let text = String::from_utf8_lossy(&output.body);
                let answer = match serde_json::from_str::<Value>(text.trim()) {
                    Ok(Value::Object(object)) => Json(Value::Object(object)).into_response(),
                    _ => StatusCode::OK.into_response(),
                };
                Ok((Outcome::Accepted, answer))
            }
            Budget::Done(_) => Ok((Outcome::Accepted, StatusCode::OK.into_response())),
            Budget::Late(run) => {
                follow_up(
                    state,
                    route,
                    function.clone(),
                    run,
                    None,
                    route.response_type,
                    expires,
                );
                Ok((Outcome::Accepted, StatusCode::OK.into_response()))
            }
        };
    }
    // Everything else is acknowledged at once; a result goes to response_url.
    let run = state.channels.outbound.spawn(run);
    follow_up(
        state,
        route,
        function.clone(),
        run,
        response_url,
        route.response_type,
        expires,
    );
    Ok((Outcome::Accepted, StatusCode::OK.into_response()))
}
