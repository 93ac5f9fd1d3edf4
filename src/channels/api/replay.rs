//! Replay: an activation's kept request comes in; the same call runs again as a new
//! activation linked to the first (`replayOf`), on the path every sync call takes
//! (in-flight limit, time limit, sandbox, browser leases), and the difference between the
//! two answers goes out. A channel's reply (Slack's `response_url`, an Alexa answer) is
//! not sent again: the replay calls the function, not the channel.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use serde::{Deserialize, Serialize};

use crate::auth::scope;
use crate::dispatch::story::{difference, REDACTED};
use crate::dispatch::Trigger;
use crate::error::ApiError;
use crate::function::FunctionName;
use crate::provider::Invocation;
use crate::server::{AppState, CallId, RawBody, HEADER_CALL_ID};

use super::invoke::call_sync;
use super::openapi::ErrorBody;

/// What a replay may change.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// Run the kept request against this function instead (e.g. a fixed version).
    pub function: Option<String>,
}

/// A replay's outcome.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Replayed {
    /// The new activation's call id.
    pub call_id: String,
    pub replay_of: String,
    pub function: String,
    pub status: u16,
    /// The two answers (status, content type and kept body) are the same.
    pub same: bool,
    /// A unified diff of the two answers, empty when they are the same.
    pub diff: String,
    /// What was not sent as it was first (redacted credentials), or could not be compared.
    pub notes: Vec<String>,
}

/// Runs activation `id`'s kept request again, for the API and the web UI alike. The
/// outer error is a refusal before the call ran (no story, a cut body, no function, no
/// slot); the call's own failure is a [`Replayed`] with its status.
pub async fn replay(
    state: &AppState,
    id: &str,
    call_id: &CallId,
    ask: ReplayRequest,
    may_invoke: bool,
) -> Result<Replayed, ApiError> {
    let store = &state.registry.store;
    let (original, story) = store
        .activation(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no activation with call id {id}")))?;
    let story = story.ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            format!("the request of call {id} is no longer kept (--history-max-bytes), or was never (--history-max-body 0): it cannot be replayed"),
        )
    })?;
    let request = &story.request;
    if request.body.truncated {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "only the first {} of the {} bytes of call {id}'s request body are kept (--history-max-body): replaying them would send another request",
                request.body.bytes().len(),
                request.body.size
            ),
        ));
    }
    let name: FunctionName = ask
        .function
        .as_deref()
        .unwrap_or(&original.function)
        .parse()?;
    let spec = state
        .registry
        .deployed(&name)
        .ok_or_else(|| ApiError::not_found(format!("function {name} not found")))?;
    // A function deployed with `com.hark.auth: required` is called only with the right
    // to call it, replayed or not.
    if spec.auth_required() && !may_invoke {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "function {name} needs the {} scope to be called, replays too",
                scope::FUNCTIONS_INVOKE
            ),
        ));
    }
    let mut notes = Vec::new();
    let mut headers = HeaderMap::new();
    for (header, value) in &request.headers {
        if value == REDACTED {
            notes.push(format!(
                "header {header} was redacted in the record and is not sent"
            ));
            continue;
        }
        let skip = matches!(header.as_str(), "content-length" | "host" | HEADER_CALL_ID);
        if let (false, Ok(header), Ok(value)) = (
            skip,
            HeaderName::try_from(header.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            headers.append(header, value);
        }
    }
    if let Ok(value) = HeaderValue::from_str(&call_id.0) {
        headers.insert(HEADER_CALL_ID, value);
    }
    let redacted_elsewhere = request
        .query
        .as_deref()
        .is_some_and(|q| q.contains(REDACTED))
        || request
            .body
            .text
            .as_deref()
            .is_some_and(|b| b.contains(REDACTED));
    if redacted_elsewhere {
        notes.push(format!(
            "the kept query or body holds {REDACTED} where a credential or secret was; it is sent as kept"
        ));
    }
    let call = Invocation {
        call_id: call_id.0.clone(),
        method: Method::from_bytes(request.method.as_bytes()).map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the kept request has no valid method",
            )
        })?,
        path: request.path.clone(),
        query: request.query.clone(),
        headers,
        body: request.body.bytes().into(),
    };
    let status = match call_sync(state, &name, Trigger::Replay, call).await {
        Ok(Ok(output)) => output.status.as_u16(),
        Ok(Err(e)) => crate::error::provider_status(&e).as_u16(),
        Err(refused) => return Err(refused.into()),
    };
    store.link_replay(&call_id.0, id).await?;
    let replayed = store.activation(&call_id.0).await?.and_then(|(_, s)| s);
    let compared = match &replayed {
        Some(after) => difference(&story, after),
        None => Err("the replay's answer is not kept, so it is not compared".to_owned()),
    };
    let (same, diff) = match compared {
        Ok(d) => (d.same, d.diff),
        Err(why) => {
            notes.push(why);
            (false, String::new())
        }
    };
    tracing::info!(call_id = %call_id.0, replay_of = id, function = %name, status, same, "replayed");
    Ok(Replayed {
        call_id: call_id.0.clone(),
        replay_of: id.to_owned(),
        function: name.to_string(),
        status,
        same,
        diff,
        notes,
    })
}

#[utoipa::path(post, path = "/system/activations/{call_id}/replay", tag = "activations", description = "Runs an activation's kept request again as a new call (`X-Call-Id` of this request names it) linked to the first by `replayOf`, on the path of every sync call (limits, sandbox, browser pool), and answers with the difference between the two answers. `function` runs it against another function. Channel replies are not sent again. 409 when the request is not kept whole.", security(("bearer" = [])), params(("call_id" = String, Path, description = "The call id")), request_body(content = Option<ReplayRequest>, description = "Optional", content_type = "application/json"), responses((status = 200, description = "The replay ran", body = Replayed), (status = 404, description = "No such activation or function", body = ErrorBody), (status = 409, description = "The request is not kept whole", body = ErrorBody), (status = 403, description = "The token lacks functions:write, or functions:invoke for a function deployed with `com.hark.auth: required`", body = ErrorBody), (status = 401, description = "No valid bearer token", body = ErrorBody)))]
pub async fn replay_activation(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Extension(call_id): Extension<CallId>,
    Path(id): Path<String>,
    body: RawBody,
) -> Result<Response, ApiError> {
    state.auth.check(&headers, scope::FUNCTIONS_WRITE).await?;
    let may_invoke = state
        .auth
        .check(&headers, scope::FUNCTIONS_INVOKE)
        .await
        .is_ok();
    let ask: ReplayRequest = if body.0.is_empty() {
        ReplayRequest::default()
    } else {
        body.json()?
    };
    let replayed = replay(&state, &id, &call_id, ask, may_invoke).await?;
    Ok(Json(replayed).into_response())
}
