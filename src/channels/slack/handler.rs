//! `POST /slack/{app}`: a Slack request comes in, is verified over its raw bytes, and is
//! told apart by shape — form with `command` (slash command), form with `payload`
//! (interactivity), JSON (Events API). Each call is queued durably with where its result
//! goes; the acknowledgement goes out within Slack's 3 s — with the result when a slash
//! command or view submission finishes within the route's budget — and other results
//! follow from the queue ([`super::reply::deliver`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde_json::{json, Value};

use super::reply::{self, ResponseType, SlackReply};
use super::verify;
use super::{SlackRoute, RESPONSE_URL_HOST, RESPONSE_URL_VALIDITY};
use crate::channels::common::delivery::invocation;
use crate::channels::common::route::Outcome;
use crate::channels::common::{
    contract, ChannelCall, ChannelError, ChannelRoute, Delivery, Handled, ReplyTo,
};
use crate::dispatch::queue::Submitted;
use crate::egress::EgressPolicy;
use crate::server::AppState;
use crate::channels::common::ChannelReplies;
use crate::dispatch::queue::CallResult;
use crate::verify::{Offline, Report};

/// `X-Slack-Retry-Num`: how many times Slack has retried this event.
pub const HEADER_RETRY_NUM: &str = "x-slack-retry-num";
/// `X-Slack-Retry-Reason`: why Slack retried (e.g. `http_timeout`).
pub const HEADER_RETRY_REASON: &str = "x-slack-retry-reason";

contract::endpoint! {
    #[utoipa::path(post, path = "/slack/{app}", operation_id = "slack_delivery", tag = "channels", description = "Slack deliveries for the `slack` route named `app` in hark.yml: slash commands, Events API callbacks (with `url_verification`) and interactivity, signed with `X-Slack-Signature`/`X-Slack-Request-Timestamp`.", params(("app" = String, Path, description = "Route name in hark.yml")), request_body(content = String, description = "Form-encoded or JSON, as Slack sends it", content_type = "application/x-www-form-urlencoded"), responses((status = 200, description = "Acknowledged; the reply is in the body or posted to `response_url` later", body = Object), (status = 400, description = "Malformed headers or body", body = crate::channels::api::openapi::ErrorBody), (status = 401, description = "Signature missing, stale or wrong", body = crate::channels::api::openapi::ErrorBody), (status = 404, description = "No route of that name in hark.yml", body = crate::channels::api::openapi::ErrorBody), (status = 413, description = "Body over the route's limit", body = crate::channels::api::openapi::ErrorBody), (status = 429, description = "The route is at its max_inflight", body = crate::channels::api::openapi::ErrorBody)))]
    SlackRoute
}

impl ChannelRoute for SlackRoute {
    fn explain(report: &mut Report, r: &Offline<'_>) {
        verify::explain_into(report, r.secret, r.headers, r.body, r.now);
    }

    type Reply = SlackReply;

    async fn deliver(
        replies: &ChannelReplies,
        reply: SlackReply,
        result: &CallResult,
    ) -> Result<(), String> {
        super::reply::deliver(&replies.channels, &reply, result).await
    }

    async fn serve(route: &Arc<Self>, d: Delivery<'_>) -> Handled {
        let (state, call_id, parts, body, delivery) = d.into_parts();
        verify::verify(
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
}

/// The answer carrying a message, or an empty 200 for none.
fn answer(message: Option<Value>) -> Response {
    match message {
        Some(message) => Json(message).into_response(),
        None => StatusCode::OK.into_response(),
    }
}

/// A reply to `response_url`, if the request has one, valid for Slack's 30 minutes.
/// Slack's are always `https://hooks.slack.com/...`; any other is dropped (and logged)
/// unless its host is on the gateway's egress allow-list, since a request whose signing
/// secret leaked could otherwise make the gateway post to the private network.
fn to_response_url(
    route: &SlackRoute,
    egress: &EgressPolicy,
    url: Option<&str>,
) -> Option<ReplyTo> {
    let url = url.filter(|u| !u.is_empty())?;
    if let Err(e) = response_url_allowed(egress, url) {
        tracing::warn!(channel = "slack", route = %route.core.name, error = e, "response_url refused; a late result has nowhere to go");
        return None;
    }
    Some(ReplyTo::new::<SlackRoute>(&SlackReply::ResponseUrl {
        app: route.core.name.clone(),
        url: url.to_owned(),
        response_type: route.response_type,
        expires_at: chrono::Utc::now().timestamp() + RESPONSE_URL_VALIDITY.as_secs() as i64,
    }))
}

/// Whether a `response_url` may be posted to: Slack's own host over https, or a host the
/// egress allow-list names (an address in an allowed block, or an allowed name).
fn response_url_allowed(egress: &EgressPolicy, raw: &str) -> Result<(), String> {
    let url = crate::egress::parse_http(raw).map_err(|e| e.to_string())?;
    let allowed = match url.host() {
        Some(url::Host::Domain(name)) => {
            (url.scheme() == "https" && name.eq_ignore_ascii_case(RESPONSE_URL_HOST))
                || egress.allows_host(name)
        }
        Some(url::Host::Ipv4(ip)) => egress.lists_ip(ip.into()),
        Some(url::Host::Ipv6(ip)) => egress.lists_ip(ip.into()),
        None => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(format!(
            "its host is not https://{RESPONSE_URL_HOST} nor allowed with --egress-allow"
        ))
    }
}

async fn command(
    state: &Arc<AppState>,
    route: &Arc<SlackRoute>,
    call_id: &str,
    form: BTreeMap<String, String>,
    delivery: &mut Option<String>,
) -> Handled {
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
        route.core.channel,
        &route.core.name,
        delivery.as_deref(),
        "application/json",
        Bytes::from(input.to_string()),
        HeaderMap::new(),
    );
    let reply = to_response_url(
        route,
        &state.channels.outbound.egress,
        form.get("response_url").map(String::as_str),
    );
    if reply.is_none() {
        tracing::info!(channel = "slack", route = %route.core.name, command = name, "no response_url: a late result has nowhere to go");
    }
    let submitted = ChannelCall {
        route: &route.core,
        function,
        call,
        reply,
        dedupe: None,
        wait: Some(route.ack_budget),
        answers: true,
        no_retries: false,
    }
    .submit(&state.queue)
    .await?;
    match submitted {
        Submitted::Finished(result) => {
            let message = reply::message(&result, route.response_type);
            Ok((Outcome::Accepted, answer(message)))
        }
        Submitted::Queued | Submitted::Duplicate => {
            let working = (!route.working_message.is_empty())
                .then(|| reply::text(ResponseType::Ephemeral, &route.working_message));
            Ok((Outcome::Accepted, answer(working)))
        }
    }
}

/// Where an event's result goes: the event's channel, as the app's bot, when the route
/// has a bot token.
fn to_channel(route: &SlackRoute, event: &Value) -> Option<ReplyTo> {
    route.bot_token.as_ref()?;
    let channel = event["channel"]
        .as_str()
        .or_else(|| event["channel"]["id"].as_str())
        .or_else(|| event["item"]["channel"].as_str())?;
    let thread_ts = if route.reply_in_thread {
        event["thread_ts"]
            .as_str()
            .or_else(|| event["ts"].as_str())
            .map(str::to_owned)
    } else {
        None
    };
    Some(ReplyTo::new::<SlackRoute>(&SlackReply::PostMessage {
        app: route.core.name.clone(),
        channel: channel.to_owned(),
        thread_ts,
    }))
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
                route.core.channel,
                &route.core.name,
                Some(event_id),
                "application/json",
                body.clone(),
                HeaderMap::new(),
            );
            let submitted = ChannelCall {
                route: &route.core,
                function,
                call,
                reply: to_channel(route, &envelope["event"]),
                dedupe: Some(event_id),
                wait: None,
                answers: false,
                no_retries: false,
            }
            .submit(&state.queue)
            .await?;
            if let Submitted::Duplicate = submitted {
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
        route.core.channel,
        &route.core.name,
        delivery.as_deref(),
        "application/json",
        Bytes::from(payload.to_owned()),
        HeaderMap::new(),
    );
    if kind == "view_submission" {
        // A view submission's answer may carry a `response_action` (errors, update, push);
        // it has no response_url, so a late result goes nowhere.
        let submitted = ChannelCall {
            route: &route.core,
            function,
            call,
            reply: None,
            dedupe: None,
            wait: Some(route.ack_budget),
            answers: true,
            no_retries: false,
        }
        .submit(&state.queue)
        .await?;
        let answer = match submitted {
            Submitted::Finished(result) if result.is_success() => {
                let text = String::from_utf8_lossy(&result.body);
                match serde_json::from_str::<Value>(text.trim()) {
                    Ok(Value::Object(object)) => Json(Value::Object(object)).into_response(),
                    _ => StatusCode::OK.into_response(),
                }
            }
            _ => StatusCode::OK.into_response(),
        };
        return Ok((Outcome::Accepted, answer));
    }
    // Everything else is acknowledged at once; a result goes to response_url.
    let response_url = value["response_url"]
        .as_str()
        .or_else(|| value["response_urls"][0]["response_url"].as_str());
    ChannelCall {
        route: &route.core,
        function,
        call,
        reply: to_response_url(route, &state.channels.outbound.egress, response_url),
        dedupe: None,
        wait: None,
        answers: false,
        no_retries: false,
    }
    .submit(&state.queue)
    .await?;
    Ok((Outcome::Accepted, StatusCode::OK.into_response()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_urls_must_be_slacks_unless_allowed() {
        let strict = EgressPolicy::strict();
        assert!(response_url_allowed(&strict, "https://hooks.slack.com/commands/T1/2/x").is_ok());
        assert!(response_url_allowed(&strict, "https://HOOKS.slack.com/actions/T1/2/x").is_ok());
        for url in [
            "http://hooks.slack.com/commands/T1/2/x",
            "https://hooks.slack.com.evil.example/x",
            "https://evil.example/x",
            "http://127.0.0.1:9/x",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]/x",
            "not a url",
        ] {
            let e = response_url_allowed(&strict, url).unwrap_err();
            assert!(!e.is_empty(), "{url}");
        }
        let loopback = EgressPolicy::allowing(&["127.0.0.1", "slack-mock.internal"]).unwrap();
        assert!(response_url_allowed(&loopback, "http://127.0.0.1:9/x").is_ok());
        assert!(response_url_allowed(&loopback, "http://slack-mock.internal/x").is_ok());
        assert!(response_url_allowed(&loopback, "http://127.0.0.2:9/x").is_err());
    }
}
