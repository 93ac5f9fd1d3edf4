//! The Alexa channel's HTTP routes:
//!
//! - `POST /alexa/{skill}`: Amazon's requests. The raw body and signature headers are verified
//!   (see [`super::verify`]) with the gateway's clock; any failure is a 400 and a log line
//!   naming the reason. Verified requests get the skill's spoken answer. Each skill is a
//!   route of the one channel contract ([`ChannelRoute`]), with the limits and counters
//!   of the other channels (`alexa.max_body`, `alexa.max_inflight`, `/system/channels`).
//! - `POST /system/skills/{skill}/say`: the same turn for a request envelope built by
//!   `hark say`, authorised by a bearer token with `functions:invoke` instead of Amazon's
//!   signature.
//! - `GET /system/skills`: the loaded skills.

use super::conversation::{self, AlexaReply};
use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use http::HeaderMap;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::channel::AlexaRoute;
use super::conversation::{respond, respond_explained};
use super::types::{RequestEnvelope, Response};
use super::verify::SignatureHeaders;
use crate::auth::scope;
use crate::channels::common::route::Outcome;
use crate::channels::common::ChannelReplies;
use crate::channels::common::{
    contract, ChannelError, ChannelRoute, Delivery, Handled, Registered, RouteCore,
};
use crate::dispatch::queue::CallResult;
use crate::error::ApiError;
use crate::route::skills::Skill;
use crate::server::{AppState, CallId, RawBody};

/// The channel's routes, with their descriptions.
pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(handle))
        .routes(routes!(list_skills))
        .routes(routes!(say))
}

fn find_skill(state: &AppState, name: &str) -> Result<Arc<Skill>, ApiError> {
    state
        .alexa
        .skill(name)
        .ok_or_else(|| ApiError::not_found(format!("no skill named {name:?} is loaded")))
}

contract::endpoint! {
    #[utoipa::path(post, path = "/alexa/{skill}", operation_id = "skill_request", tag = "alexa", description = "Alexa Skills Kit requests for the skill named `skill` (skills/NAME/skill.yaml), verified by Amazon's certificate chain and `Signature-256`.", params(("skill" = String, Path, description = "Skill name")), request_body(content = Object, description = "An Alexa request envelope", content_type = "application/json"), responses((status = 200, description = "An Alexa response envelope (speech, card)", body = Object), (status = 400, description = "Verification failed or not an Alexa request", body = crate::channels::api::openapi::ErrorBody), (status = 404, description = "No skill of that name", body = crate::channels::api::openapi::ErrorBody), (status = 413, description = "Body over `alexa.max_body`", body = crate::channels::api::openapi::ErrorBody), (status = 429, description = "The skill is at `alexa.max_inflight`", body = crate::channels::api::openapi::ErrorBody)))]
    AlexaRoute
}

impl Registered for AlexaRoute {
    const NAME: &'static str = "alexa";

    fn routes(state: &AppState) -> &BTreeMap<String, Arc<Self>> {
        &state.alexa.routes
    }

    fn core(&self) -> &RouteCore {
        &self.core
    }
}

impl ChannelRoute for AlexaRoute {
    type Reply = AlexaReply;

    async fn deliver(
        replies: &ChannelReplies,
        reply: AlexaReply,
        result: &CallResult,
    ) -> Result<(), String> {
        conversation::deliver(&replies.alexa, &replies.store, &reply, result).await
    }

    /// Verifies the request (Amazon's chain and signature, or only the skill id for a
    /// `verify: false` skill) and speaks the skill's answer. Amazon wants every refusal
    /// answered 400.
    async fn serve(route: &Arc<Self>, d: Delivery<'_>) -> Handled {
        let skill = &route.skill;
        let envelope = if skill.def.verify {
            let signature = SignatureHeaders::from_header_map(&d.parts.headers);
            d.state
                .alexa
                .verifier
                .verify(&signature, &d.body, d.state.clock.now(), &skill.def.id)
                .await
                .map_err(|e| ChannelError::Rejected {
                    reason: e.reason(),
                    detail: e.to_string(),
                })?
                .envelope
        } else {
            // Development skill (`verify: false`): only the body and the skill id are checked.
            let envelope = RequestEnvelope::from_slice(&d.body)
                .map_err(|e| ChannelError::Malformed(format!("not an Alexa request: {e}")))?;
            if envelope.application_id() != Some(skill.def.id.as_str()) {
                return Err(ChannelError::Rejected {
                    reason: "app_id_mismatch",
                    detail: "the request is for another skill id".to_owned(),
                });
            }
            envelope
        };
        *d.id = Some(envelope.request.request_id.clone());
        let _permit = route.core.permit()?;
        let response = respond(d.state, skill, &envelope, d.call_id).await;
        Ok((Outcome::Accepted, Json(response).into_response()))
    }
}

#[utoipa::path(post, path = "/system/skills/{skill}/say", tag = "alexa", description = "Runs one turn of a skill for a request envelope built by `hark say` (no Amazon signature; a token with `functions:invoke`).", security(("bearer" = [])), params(("skill" = String, Path, description = "Skill name")), request_body(content = Object, description = "An Alexa request envelope", content_type = "application/json"), responses((status = 200, description = "An Alexa response envelope", body = Object), (status = 401, description = "No valid bearer token", body = crate::channels::api::openapi::ErrorBody), (status = 404, description = "No skill of that name", body = crate::channels::api::openapi::ErrorBody)))]
/// `POST /system/skills/{skill}/say`: a request envelope from `hark say`. When the
/// intent's function call failed, [`HEADER_CALL_ERROR`] says why (the caller may invoke
/// functions, so it may read their errors).
async fn say(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    Extension(call_id): Extension<CallId>,
    headers: HeaderMap,
    body: RawBody,
) -> Result<(HeaderMap, Json<Response>), ApiError> {
    state.auth.check(&headers, scope::FUNCTIONS_INVOKE).await?;
    let skill = find_skill(&state, &name)?;
    let envelope = RequestEnvelope::from_slice(&body.0)
        .map_err(|e| ApiError::bad_request(format!("not an Alexa request: {e}")))?;
    let turn = respond_explained(&state, &skill, &envelope, &call_id.0).await;
    let mut headers = HeaderMap::new();
    if let Some(value) = turn.failure.and_then(|f| header_text(&f)) {
        headers.insert(HEADER_CALL_ERROR, value);
    }
    if turn.deferred {
        headers.insert(HEADER_DEFERRED, http::HeaderValue::from_static("true"));
    }
    Ok((headers, Json(turn.response)))
}

/// Header of `hark say`'s answers naming why the intent's function call failed.
pub const HEADER_CALL_ERROR: &str = "x-hark-call-error";
/// Header of `hark say`'s answers when the intent's call goes on past the skill's budget.
pub const HEADER_DEFERRED: &str = "x-hark-deferred";

/// `text` as a header value: one line of printable ASCII, at most 500 characters.
fn header_text(text: &str) -> Option<http::HeaderValue> {
    let line: String = text
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { ' ' })
        .take(500)
        .collect();
    http::HeaderValue::from_str(line.trim()).ok()
}

#[utoipa::path(get, path = "/system/skills", tag = "alexa", description = "The loaded skills with their intents.", security(("bearer" = [])), responses((status = 200, description = "Skills", body = Vec<Object>), (status = 401, description = "No valid bearer token", body = crate::channels::api::openapi::ErrorBody)))]
/// `GET /system/skills`.
async fn list_skills(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.auth.check(&headers, scope::FUNCTIONS_READ).await?;
    let skills: Vec<Value> = state
        .alexa
        .skills()
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "id": s.def.id,
                "invocation": s.def.invocation,
                "locales": s.def.locales,
                "verify": s.def.verify,
                "intents": s.def.intents.keys().collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(Value::Array(skills)))
}
