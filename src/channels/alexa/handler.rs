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
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use http::HeaderMap;
use serde_json::{json, Value};
use tracing::warn;

use super::conversation::respond;
use super::types::{RequestEnvelope, Response};
use super::verify::SignatureHeaders;
use crate::auth::scope;
use crate::error::ApiError;
use crate::route::skills::Skill;
use crate::server::{AppState, CallId, RawBody};

/// The channel's routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/alexa/{skill}", post(skill_request))
        .route("/system/skills", get(list_skills))
        .route("/system/skills/{skill}/say", post(say))
}

fn find_skill(state: &AppState, name: &str) -> Result<Arc<Skill>, ApiError> {
    state
        .alexa
        .skill(name)
        .ok_or_else(|| ApiError::not_found(format!("no skill named {name:?} is loaded")))
}

/// `POST /alexa/{skill}`.
async fn skill_request(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    Extension(call_id): Extension<CallId>,
    headers: HeaderMap,
    body: RawBody,
) -> Result<Json<Response>, ApiError> {
    let skill = find_skill(&state, &name)?;
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
                warn!(channel = "alexa", skill = %skill.name, call_id = %call_id.0, reason = e.reason(), error = %e, "request refused: verification failed");
                return Err(ApiError::bad_request(format!(
                    "request verification failed: {}",
                    e.reason()
                )));
            }
        }
    } else {
        // Development skill (`verify: false`): only the body and the skill id are checked.
        let envelope = RequestEnvelope::from_slice(&body.0)
            .map_err(|e| ApiError::bad_request(format!("not an Alexa request: {e}")))?;
        if envelope.context_application_id() != Some(skill.def.id.as_str()) {
            warn!(channel = "alexa", skill = %skill.name, reason = "app_id_mismatch", "request refused");
            return Err(ApiError::bad_request(
                "request verification failed: app_id_mismatch",
            ));
        }
        envelope
    };
    Ok(Json(respond(&state, &skill, &envelope, &call_id.0).await))
}

/// `POST /system/skills/{skill}/say`: a request envelope from `hark say`.
async fn say(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    Extension(call_id): Extension<CallId>,
    headers: HeaderMap,
    body: RawBody,
) -> Result<Json<Response>, ApiError> {
    state.auth.check(&headers, scope::FUNCTIONS_INVOKE)?;
    let skill = find_skill(&state, &name)?;
    let envelope = RequestEnvelope::from_slice(&body.0)
        .map_err(|e| ApiError::bad_request(format!("not an Alexa request: {e}")))?;
    Ok(Json(respond(&state, &skill, &envelope, &call_id.0).await))
}

/// `GET /system/skills`.
async fn list_skills(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.auth.check(&headers, scope::FUNCTIONS_READ)?;
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
