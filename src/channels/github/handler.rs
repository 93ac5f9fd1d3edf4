//! `POST /github/{app}`: a webhook delivery comes in and is verified over its raw bytes;
//! `ping` is answered, other events are routed by `X-GitHub-Event` and `action`, deduplicated
//! by `X-GitHub-Delivery`, and run — 200 when the function (and its reply) finished within
//! the budget, 202 when it carries on in the background.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{json, Value};

use super::api::{self, ReplyError, Target};
use super::{GitHubRoute, ReplyKind};
use crate::channels::common::delivery::{invocation, Budget};
use crate::channels::common::route::Outcome;
use crate::channels::common::{unknown_route, ChannelError};
use crate::function::FunctionName;
use crate::server::{AppState, CallId};
use crate::verify::{
    self,
    github::{DELIVERY, EVENT},
};

type Handled = Result<(Outcome, Response), ChannelError>;

pub async fn handle(
    State(state): State<Arc<AppState>>,
    Path(app): Path<String>,
    Extension(call_id): Extension<CallId>,
    request: Request,
) -> Response {
    let Some(route) = state.channels.github.get(&app).cloned() else {
        return unknown_route("github", &app);
    };
    let mut delivery = None;
    let result = serve(&state, &route, &call_id.0, request, &mut delivery).await;
    route.core.finish(&call_id.0, delivery.as_deref(), result)
}

fn header<'h>(headers: &'h HeaderMap, name: &'static str) -> Result<&'h str, ChannelError> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ChannelError::Malformed(format!("header {name} is missing or unreadable")))
}

async fn serve(
    state: &Arc<AppState>,
    route: &Arc<GitHubRoute>,
    call_id: &str,
    request: Request,
    delivery: &mut Option<String>,
) -> Handled {
    let (parts, body) = request.into_parts();
    let body = route.core.read_body(body).await?;
    verify::github::verify(
        &route.webhook_secrets,
        &parts.headers,
        &body,
        state.clock.now().timestamp(),
    )?;
    let event = header(&parts.headers, EVENT)?;
    if event == "ping" {
        return Ok((
            Outcome::Accepted,
            Json(json!({ "ok": true })).into_response(),
        ));
    }
    let id = header(&parts.headers, DELIVERY)?;
    *delivery = Some(id.to_owned());
    let payload: Value = serde_json::from_slice(&body)
        .map_err(|e| ChannelError::Malformed(format!("JSON body: {e}")))?;
    let action = payload["action"].as_str();
    let Some(function) = route.function_for(event, action) else {
        let name = match action {
            Some(action) => format!("{event}.{action}"),
            None => event.to_owned(),
        };
        let answer = Json(json!({ "ignored": format!("no function for {name}") }));
        return Ok((Outcome::Accepted, answer.into_response()));
    };
    let permit = route.core.permit()?;
    let now = chrono::Utc::now().timestamp();
    let first = state
        .registry
        .store
        .first_delivery(&route.core.key(), id, now)
        .await
        .map_err(|e| ChannelError::Internal(e.to_string()))?;
    if !first {
        let answer = Json(json!({ "duplicate": id }));
        return Ok((Outcome::Duplicate, answer.into_response()));
    }
    let mut extra = HeaderMap::new();
    for name in [EVENT, DELIVERY] {
        if let Some(value) = parts.headers.get(name) {
            extra.insert(name, value.clone());
        }
    }
    let call = invocation(
        call_id,
        "github",
        &route.core.name,
        Some(id),
        "application/json",
        body,
        extra,
    );
    let work = run(
        state.clone(),
        route.clone(),
        function.clone(),
        call,
        payload,
        id.to_owned(),
    );
    let work = async move {
        let done = work.await;
        drop(permit);
        done
    };
    match state.channels.outbound.within(route.ack_budget, work).await {
        Budget::Done(Ok(status)) => Ok((
            Outcome::Accepted,
            Json(json!({ "function": function.as_str(), "status": status })).into_response(),
        )),
        Budget::Done(Err(e)) => Err(ChannelError::Internal(format!("function task failed: {e}"))),
        Budget::Late(_) => {
            let mut answer = (
                StatusCode::ACCEPTED,
                Json(json!({ "function": function.as_str(), "running": true })),
            )
                .into_response();
            if let Ok(value) = HeaderValue::from_str(call_id) {
                answer.headers_mut().insert("x-call-id", value);
            }
            Ok((Outcome::Accepted, answer))
        }
    }
}

/// Runs the function and makes its reply; returns the function's status code.
async fn run(
    state: Arc<AppState>,
    route: Arc<GitHubRoute>,
    function: FunctionName,
    call: crate::provider::Invocation,
    payload: Value,
    delivery: String,
) -> u16 {
    let result = state
        .registry
        .dispatcher
        .invoke(&function, "github", call)
        .await;
    let output = match result {
        Ok(output) if output.status.is_success() => output,
        Ok(output) => return output.status.as_u16(),
        Err(e) => return crate::error::provider_status(&e).as_u16(),
    };
    let status = output.status.as_u16();
    if let Err(e) = reply(&state, &route, &payload, &output.body).await {
        tracing::warn!(channel = "github", route = %route.core.name, function = %function, delivery, error = %e, "reply to GitHub failed");
    }
    status
}

async fn reply(
    state: &AppState,
    route: &GitHubRoute,
    payload: &Value,
    output: &Bytes,
) -> Result<(), ReplyError> {
    let outbound = &state.channels.outbound;
    match route.reply {
        ReplyKind::None => Ok(()),
        ReplyKind::Comment => {
            let text = String::from_utf8_lossy(output);
            let text = text.trim();
            if text.is_empty() {
                return Ok(());
            }
            let target = Target::of(payload)?;
            api::comment(outbound, &route.auth, &route.api, &target, text).await
        }
        ReplyKind::Labels => {
            if output.iter().all(u8::is_ascii_whitespace) {
                return Ok(());
            }
            let labels = api::parse_labels(output)?;
            if labels.is_empty() {
                return Ok(());
            }
            let target = Target::of(payload)?;
            api::labels(outbound, &route.auth, &route.api, &target, &labels).await
        }
    }
}
