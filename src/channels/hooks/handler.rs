//! `POST /hooks/{name}`: a request comes in and is checked over its raw bytes (Standard
//! Webhooks signature, with `webhook-id` dedupe, and/or the trigger rule); the function's
//! status, headers and body go out as the answer, or 202 when the hook is `async` (the call
//! is then queued durably, deduplicated by `webhook-id` in the same commit).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ConnectInfo;
use axum::response::IntoResponse;
use axum::Json;
use http::{header, HeaderMap, StatusCode};
use serde_json::json;

use super::verify as standard;
use super::HookRoute;
use crate::channels::common::delivery::invocation;
use crate::channels::common::route::Outcome;
use crate::channels::common::{
    contract, ChannelCall, ChannelError, ChannelRoute, Delivery, Handled,
};
use crate::dispatch::queue::Submitted;
use crate::dispatch::Trigger;
use crate::error::provider_status;
use crate::verify::rules::{parse_payload, RuleError, RuleRequest};
use crate::channels::common::NoReply;
use crate::verify::{Offline, Report};

/// Request headers a function does not get.
const DROPPED_HEADERS: &[header::HeaderName] = &[
    header::AUTHORIZATION,
    header::COOKIE,
    header::HOST,
    header::CONTENT_LENGTH,
    header::CONNECTION,
    header::TRANSFER_ENCODING,
];

contract::endpoint! {
    #[utoipa::path(post, path = "/hooks/{name}", operation_id = "hook_delivery", tag = "channels", description = "A webhook for the `hooks` route named `name` in hark.yml: Standard Webhooks signatures, payload HMAC trigger rules, or a public hook.", params(("name" = String, Path, description = "Route name in hark.yml")), request_body(content = Vec<u8>, description = "Passed to the function", content_type = "*/*"), responses((status = 200, description = "The function's answer, or 202 when the route is async", body = Vec<u8>, content_type = "*/*"), (status = 400, description = "Malformed headers or body", body = crate::channels::api::openapi::ErrorBody), (status = 401, description = "Signature missing, stale or wrong", body = crate::channels::api::openapi::ErrorBody), (status = 404, description = "No route of that name in hark.yml", body = crate::channels::api::openapi::ErrorBody), (status = 413, description = "Body over the route's limit", body = crate::channels::api::openapi::ErrorBody), (status = 429, description = "The route is at its max_inflight", body = crate::channels::api::openapi::ErrorBody)))]
    HookRoute
}

impl ChannelRoute for HookRoute {
    const VERIFY_KIND: &'static str = "standard";

    fn explain(report: &mut Report, r: &Offline<'_>) {
        super::verify::explain_into(report, r.secret, r.headers, r.body, r.now);
    }

    type Reply = NoReply;

    const TRIGGER: Trigger = Trigger::Channel("hook");

    async fn serve(route: &Arc<Self>, d: Delivery<'_>) -> Handled {
        let (state, call_id, parts, body, delivery) = d.into_parts();
        if !route.standard_secrets.is_empty() {
            let verified = standard::verify(
                &route.standard_secrets,
                &parts.headers,
                &body,
                state.clock.now().timestamp(),
            )?;
            *delivery = verified.id;
        }
        let query: Vec<(String, String)> = parts
            .uri
            .query()
            .map(|q| serde_urlencoded::from_str(q).unwrap_or_default())
            .unwrap_or_default();
        if let Some(rule) = &route.rule {
            let payload = parse_payload(&body);
            let remote_ip = parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip());
            let request = RuleRequest {
                headers: &parts.headers,
                query: &query,
                body: &body,
                payload: payload.as_ref(),
                remote_ip,
            };
            match rule.evaluate(&request) {
                Ok(true) => {}
                Ok(false) => return Err(ChannelError::RuleNotSatisfied),
                Err(e @ RuleError::NoRemoteAddr) => {
                    return Err(ChannelError::Internal(e.to_string()))
                }
                Err(e) => return Err(ChannelError::Internal(format!("trigger rule: {e}"))),
            }
        }
        let mut headers: HeaderMap = parts.headers.clone();
        for name in DROPPED_HEADERS {
            headers.remove(name);
        }
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_owned();
        let mut call = invocation(
            call_id,
            route.core.channel,
            &route.core.name,
            delivery.as_deref(),
            &content_type,
            body,
            headers,
        );
        call.query = parts.uri.query().map(str::to_owned);
        if route.run_async {
            let submitted = ChannelCall {
                route: &route.core,
                function: &route.function,
                call,
                reply: None,
                dedupe: delivery.as_deref(),
                wait: None,
                answers: false,
                no_retries: false,
            }
            .submit(&state.queue)
            .await?;
            if let Submitted::Duplicate = submitted {
                let id = delivery.as_deref().unwrap_or_default();
                return Ok((
                    Outcome::Duplicate,
                    Json(json!({ "duplicate": id })).into_response(),
                ));
            }
            let answer = (
                StatusCode::ACCEPTED,
                Json(json!({ "accepted": true, "call_id": call_id })),
            );
            return Ok((Outcome::Accepted, answer.into_response()));
        }
        let permit = route.core.permit()?;
        if let Some(id) = delivery.as_deref() {
            let now = chrono::Utc::now().timestamp();
            let first = state
                .registry
                .store
                .first_delivery(&route.core.key(), id, now)
                .await
                .map_err(|e| ChannelError::Internal(e.to_string()))?;
            if !first {
                return Ok((
                    Outcome::Duplicate,
                    Json(json!({ "duplicate": id })).into_response(),
                ));
            }
        }
        let result = state
            .registry
            .dispatcher
            .invoke(&route.function, HookRoute::TRIGGER, call)
            .await;
        drop(permit);
        let answer = match result {
            Ok(output) => (output.status, output.headers, output.body).into_response(),
            Err(e) => {
                (provider_status(&e), Json(json!({ "error": e.to_string() }))).into_response()
            }
        };
        Ok((Outcome::Accepted, answer))
    }
}
