//! `POST /github/{app}`: a webhook delivery comes in and is verified over its raw bytes;
//! `ping` is answered, other events are routed by `X-GitHub-Event` and `action`, and queued
//! durably — deduplicated by `X-GitHub-Delivery` in the same commit — with a reply
//! descriptor for the comment or labels. The answer is 200 when the function finished
//! within the budget, 202 when it carries on from the queue; the reply goes out either way
//! once the function is done ([`ChannelRoute::deliver`]).

use std::sync::Arc;

use axum::response::IntoResponse;
use axum::Json;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::api::{self, ReplyError, Target};
use super::verify::{self, DELIVERY, EVENT};
use super::{GitHubRoute, ReplyKind};
use crate::channels::common::delivery::invocation;
use crate::channels::common::route::Outcome;
use crate::channels::common::{
    contract, ChannelCall, ChannelError, ChannelRoute, Channels, Delivery, Handled, ReplyTo,
};
use crate::dispatch::queue::{CallResult, Submitted};
use crate::channels::common::ChannelReplies;
use crate::verify::{Offline, Report};

/// Where a GitHub delivery's result goes: a comment or labels on an issue or pull request,
/// made with the route's credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitHubReply {
    /// The route (`channels.github.NAME`) whose credentials and API are used.
    pub app: String,
    pub kind: ReplyKind,
    /// `owner/repo`.
    pub repo: String,
    pub number: u64,
    pub installation_id: Option<u64>,
}

contract::endpoint! {
    #[utoipa::path(post, path = "/github/{app}", operation_id = "github_delivery", tag = "channels", description = "GitHub webhook deliveries for the `github` route named `app` in hark.yml, signed with `X-Hub-Signature-256`; the function's reply becomes a comment or labels.", params(("app" = String, Path, description = "Route name in hark.yml")), request_body(content = Object, description = "The webhook payload", content_type = "application/json"), responses((status = 202, description = "Accepted (or 200 for `ping` and duplicates)", body = Object), (status = 400, description = "Malformed headers or body", body = crate::channels::api::openapi::ErrorBody), (status = 401, description = "Signature missing, stale or wrong", body = crate::channels::api::openapi::ErrorBody), (status = 404, description = "No route of that name in hark.yml", body = crate::channels::api::openapi::ErrorBody), (status = 413, description = "Body over the route's limit", body = crate::channels::api::openapi::ErrorBody), (status = 415, description = "A content type other than JSON (a webhook set to form encoding)", body = crate::channels::api::openapi::ErrorBody), (status = 429, description = "The route is at its max_inflight", body = crate::channels::api::openapi::ErrorBody)))]
    GitHubRoute
}

fn header<'h>(headers: &'h HeaderMap, name: &'static str) -> Result<&'h str, ChannelError> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ChannelError::Malformed(format!("header {name} is missing or unreadable")))
}

impl ChannelRoute for GitHubRoute {
    fn explain(report: &mut Report, r: &Offline<'_>) {
        verify::explain_into(report, r.secret, r.headers, r.body);
    }

    type Reply = GitHubReply;

    /// Makes a finished call's reply on GitHub: its output as a comment, or as labels. A
    /// failed call, or empty output, makes none.
    async fn deliver(
        replies: &ChannelReplies,
        reply: GitHubReply,
        result: &CallResult,
    ) -> Result<(), String> {
        let (channels, reply) = (&replies.channels, &reply);
        let route = channels
            .github
            .get(&reply.app)
            .ok_or_else(|| format!("no GitHub route named {:?} any more", reply.app))?;
        if !result.is_success() {
            tracing::info!(channel = "github", route = %reply.app, function = result.function, status = result.status, "function failed; no reply to GitHub");
            return Ok(());
        }
        let target = Target {
            repo: reply.repo.clone(),
            number: reply.number,
            installation: reply.installation_id,
        };
        make_reply(channels, route, reply.kind, &target, &result.body)
            .await
            .map_err(|e| e.to_string())
    }

    async fn serve(route: &Arc<Self>, d: Delivery<'_>) -> Handled {
        let (state, call_id, parts, body, delivery) = d.into_parts();
        verify::verify(
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
        // GitHub sends JSON, or `payload=...` forms when the webhook is set to form encoding.
        if let Some(content_type) = parts.headers.get(http::header::CONTENT_TYPE) {
            let content_type = content_type.to_str().unwrap_or("?");
            let essence = content_type.split(';').next().unwrap_or("").trim();
            if !(essence.eq_ignore_ascii_case("application/json") || essence.ends_with("+json")) {
                return Err(ChannelError::UnsupportedMediaType(format!(
                "content type {essence:?} is not read: set the webhook's content type to application/json"
            )));
            }
        }
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
        let reply = match route.reply {
            ReplyKind::None => None,
            kind => match Target::of(&payload) {
                Ok(target) => Some(ReplyTo::new::<GitHubRoute>(&GitHubReply {
                    app: route.core.name.clone(),
                    kind,
                    repo: target.repo,
                    number: target.number,
                    installation_id: target.installation,
                })),
                Err(e) => {
                    tracing::warn!(channel = "github", route = %route.core.name, delivery = id, error = %e, "this delivery cannot be replied to; running the function without a reply");
                    None
                }
            },
        };
        let mut extra = HeaderMap::new();
        for name in [EVENT, DELIVERY] {
            if let Some(value) = parts.headers.get(name) {
                extra.insert(name, value.clone());
            }
        }
        let call = invocation(
            call_id,
            route.core.channel,
            &route.core.name,
            Some(id),
            "application/json",
            body,
            extra,
        );
        let submitted = ChannelCall {
            route: &route.core,
            function,
            call,
            reply,
            dedupe: Some(id),
            wait: Some(route.ack_budget),
            answers: false,
            no_retries: false,
        }
        .submit(&state.queue)
        .await?;
        match submitted {
            Submitted::Duplicate => {
                let answer = Json(json!({ "duplicate": id }));
                Ok((Outcome::Duplicate, answer.into_response()))
            }
            Submitted::Finished(result) => Ok((
                Outcome::Accepted,
                Json(json!({ "function": function.as_str(), "status": result.status }))
                    .into_response(),
            )),
            Submitted::Queued => {
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
}


async fn make_reply(
    channels: &Channels,
    route: &GitHubRoute,
    kind: ReplyKind,
    target: &Target,
    output: &[u8],
) -> Result<(), ReplyError> {
    let outbound = &channels.outbound;
    match kind {
        ReplyKind::None => Ok(()),
        ReplyKind::Comment => {
            let text = String::from_utf8_lossy(output);
            let text = text.trim();
            if text.is_empty() {
                return Ok(());
            }
            api::comment(outbound, &route.auth, &route.api, target, text).await
        }
        ReplyKind::Labels => {
            if output.iter().all(u8::is_ascii_whitespace) {
                return Ok(());
            }
            let labels = api::parse_labels(output)?;
            if labels.is_empty() {
                return Ok(());
            }
            api::labels(outbound, &route.auth, &route.api, target, &labels).await
        }
    }
}
