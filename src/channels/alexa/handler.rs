//! The Alexa channel's HTTP routes:
//!
//! - `POST /alexa/{skill}`: Amazon's requests. The raw body and signature headers are verified
//!   (see [`super::verify`]) with the gateway's clock; any failure is a 400 and a log line
//!   naming the reason. Verified requests get the skill's spoken answer.
//! - `POST /system/skills/{skill}/say`: the same turn for a request envelope built by
//!   `hark say`, authorised by a bearer token with `functions:invoke` instead of Amazon's
//!   signature.
//! - `GET /system/skills`: the loaded skills.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::{Extension, Json};
use http::HeaderMap;
use serde_json::{json, Value};
use tracing::warn;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::conversation::{respond, respond_explained};
use super::types::{RequestEnvelope, Response};
use super::verify::SignatureHeaders;
use crate::auth::scope;
use crate::error::ApiError;
use crate::route::skills::Skill;
use crate::server::{AppState, CallId, RawBody};
use crate::telemetry::meters::{self, ChannelOutcome};
use crate::telemetry::throttle::{Throttle, REPEAT_INTERVAL};

/// The channel's routes, with their descriptions.
pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(skill_request))
        .routes(routes!(list_skills))
        .routes(routes!(say))
}

fn find_skill(state: &AppState, name: &str) -> Result<Arc<Skill>, ApiError> {
    state
        .alexa
        .skill(name)
        .ok_or_else(|| ApiError::not_found(format!("no skill named {name:?} is loaded")))
}

#[utoipa::path(post, path = "/alexa/{skill}", tag = "alexa", description = "Alexa Skills Kit requests for the skill named `skill` (skills/NAME/skill.yaml), verified by Amazon's certificate chain and `Signature-256`.", params(("skill" = String, Path, description = "Skill name")), request_body(content = Object, description = "An Alexa request envelope", content_type = "application/json"), responses((status = 200, description = "An Alexa response envelope (speech, card)", body = Object), (status = 400, description = "Verification failed or not an Alexa request", body = crate::channels::api::openapi::ErrorBody), (status = 404, description = "No skill of that name", body = crate::channels::api::openapi::ErrorBody)))]
/// `POST /alexa/{skill}`.
async fn skill_request(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    Extension(call_id): Extension<CallId>,
    headers: HeaderMap,
    body: RawBody,
) -> Result<Json<Response>, ApiError> {
    let skill = match find_skill(&state, &name) {
        Ok(skill) => skill,
        Err(e) => {
            refused("unknown_route");
            return Err(e);
        }
    };
    let envelope = if skill.def.verify {
        let signature = SignatureHeaders::from_header_map(&headers);
        let now = state.clock.now();
        match state
            .alexa
            .verifier
            .verify(&signature, &body.0, now, &skill.def.id)
            .await
        {
            Ok(verified) => verified.envelope,
            Err(e) => {
                static REFUSED: Throttle = Throttle::new(REPEAT_INTERVAL);
                let kind = format!(
                    "alexa request refused skill={} reason={} error={e}",
                    skill.name,
                    e.reason()
                );
                crate::warn_repeated!(REFUSED, &kind, channel = "alexa", skill = %skill.name, call_id = %call_id.0, reason = e.reason(), error = %e, "request refused: verification failed");
                refused(e.reason());
                return Err(ApiError::bad_request(format!(
                    "request verification failed: {}",
                    e.reason()
                )));
            }
        }
    } else {
        // Development skill (`verify: false`): only the body and the skill id are checked.
        let envelope = RequestEnvelope::from_slice(&body.0).map_err(|e| {
            refused("malformed");
            ApiError::bad_request(format!("not an Alexa request: {e}"))
        })?;
        if envelope.application_id() != Some(skill.def.id.as_str()) {
            warn!(channel = "alexa", skill = %skill.name, reason = "app_id_mismatch", "request refused");
            refused("app_id_mismatch");
            return Err(ApiError::bad_request(
                "request verification failed: app_id_mismatch",
            ));
        }
        envelope
    };
    meters::channel_request("alexa", ChannelOutcome::Accepted, "ok");
    Ok(Json(respond(&state, &skill, &envelope, &call_id.0).await))
}

/// Counts a refused `POST /alexa/{skill}` for `/metrics`.
fn refused(reason: &'static str) {
    meters::channel_request("alexa", ChannelOutcome::Refused, reason);
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
