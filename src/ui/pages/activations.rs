//! The activations list with its filters, an activation's page and its screenshot.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Response};
use axum::Extension;
use http::{header, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::scope;
use crate::channels::api::replay::{self, ReplayRequest};
use crate::dispatch::story::difference;
use crate::dispatch::Trigger;
use crate::error::ApiError;
use crate::function::FunctionName;
use crate::server::{AppState, CallId, RawBody};
use crate::store::story::{Body, Story};
use crate::ui::{render, Session};

use super::{activation_row, form, see_other, CsrfForm, Done, Ui, ACTIVATIONS_SCANNED};

#[derive(Deserialize, Default)]
pub struct ActivationFilter {
    #[serde(default)]
    function: String,
    #[serde(default)]
    trigger: String,
    #[serde(default)]
    status: String,
}

impl ActivationFilter {
    fn keeps(&self, a: &crate::store::Activation) -> bool {
        let status_ok = match self.status.as_str() {
            "" => true,
            "ok" => a.status < 400,
            "error" => a.status >= 400,
            code => code.parse::<u16>().is_ok_and(|c| c == a.status),
        };
        status_ok && (self.trigger.is_empty() || self.trigger == a.trigger)
    }
}

/// `GET /ui/activations`: the newest activations, filtered by function, channel and status.
pub async fn activations(
    State(state): State<Arc<AppState>>,
    session: Session,
    Query(filter): Query<ActivationFilter>,
) -> Ui<Html<String>> {
    let function: Option<FunctionName> = match filter.function.trim() {
        "" => None,
        f => Some(f.parse()?),
    };
    let all = state
        .registry
        .store
        .activations(function.as_ref(), ACTIVATIONS_SCANNED)
        .await?;
    let mut triggers: Vec<&str> = all.iter().map(|a| a.trigger.as_str()).collect();
    let known = Trigger::all();
    triggers.extend(known.iter().map(|t| t.as_str()));
    triggers.sort_unstable();
    triggers.dedup();
    let rows: Vec<Value> = all
        .iter()
        .filter(|a| filter.keeps(a))
        .take(200)
        .map(activation_row)
        .collect();
    let names: Vec<String> = state
        .registry
        .deployed_all()
        .iter()
        .map(|f| f.service.to_string())
        .collect();
    render(
        "activations.html",
        &session,
        json!({
            "nav": "activations",
            "rows": rows,
            "functions": names,
            "triggers": triggers,
            "filter": { "function": filter.function, "trigger": filter.trigger, "status": filter.status },
            "scanned": ACTIVATIONS_SCANNED,
        }),
    )
}

/// `GET /ui/activations/{id}`: one activation with its error text, its story (request,
/// answer, log lines) while it is kept, and its browser screenshot when the gateway keeps one.
pub async fn activation(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path(id): Path<String>,
    Query(done): Query<Done>,
) -> Ui<Html<String>> {
    let (found, story) = state
        .registry
        .store
        .activation(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no activation with call id {id}")))?;
    let record = serde_json::to_string_pretty(&found).unwrap_or_default();
    // A replay shows how its answer differs from the first call's.
    let compared = match (&found.replay_of, &story) {
        (Some(of), Some(after)) => Some(match state.registry.store.activation(of).await? {
            Some((_, Some(before))) => match difference(&before, after) {
                Ok(d) if d.same => json!({ "same": true }),
                Ok(d) => json!({ "same": false, "diff": d.diff }),
                Err(why) => json!({ "note": why }),
            },
            _ => json!({ "note": "the first call's answer is no longer kept" }),
        }),
        _ => None,
    };
    render(
        "activation.html",
        &session,
        json!({
            "nav": "activations",
            "a": activation_row(&found),
            "replay_of": found.replay_of,
            "compared": compared,
            "record": record,
            "story": story.as_ref().map(story_view),
            "replayable": story.as_ref().is_some_and(|s| !s.request.body.truncated),
            "notice": done.notice(),
        }),
    )
}

/// `POST /ui/activations/{id}/replay`: runs the kept request again (as the API's replay)
/// and shows the new activation, with the difference between the two answers.
pub async fn replay(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path(id): Path<String>,
    Extension(call_id): Extension<CallId>,
    body: RawBody,
) -> Ui<Response> {
    let form: CsrfForm = form(&body)?;
    session.check_csrf(form.csrf.as_deref())?;
    session.require(scope::FUNCTIONS_WRITE)?;
    let may_invoke = session.require(scope::FUNCTIONS_INVOKE).is_ok();
    let replayed =
        replay::replay(&state, &id, &call_id, ReplayRequest::default(), may_invoke).await?;
    tracing::info!(call_id = %replayed.call_id, replay_of = id, subject = ?session.claims.sub, "replayed from the web UI");
    let encoded: String =
        url::form_urlencoded::byte_serialize(replayed.call_id.as_bytes()).collect();
    Ok(see_other(&format!(
        "/ui/activations/{encoded}?done=replayed"
    )))
}

/// What the page shows of a story: headers as lines, bodies as text or a note saying
/// what they are, with a mark where they were cut.
fn story_view(story: &Story) -> Value {
    let headers = |h: &[(String, String)]| {
        h.iter()
            .map(|(n, v)| format!("{n}: {v}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let body = |b: &Body| {
        let kind = b.content_type.as_deref().unwrap_or("no content type");
        let shown = match &b.text {
            Some(text) if text.is_empty() => "(empty)".to_owned(),
            Some(text) => text.clone(),
            None => format!("(binary: {} bytes of {kind})", b.size),
        };
        let cut = b.truncated.then(|| {
            format!(
                "…cut: the first {} of {} bytes are kept",
                b.bytes().len(),
                b.size
            )
        });
        json!({ "shown": shown, "cut": cut, "size": b.size, "kind": kind })
    };
    let request = &story.request;
    let target = match &request.query {
        Some(q) => format!("{} {}?{q}", request.method, request.path),
        None => format!("{} {}", request.method, request.path),
    };
    json!({
        "request": { "target": target, "headers": headers(&request.headers), "body": body(&request.body) },
        "response": story.response.as_ref().map(|r| json!({
            "status": r.status, "headers": headers(&r.headers), "body": body(&r.body),
        })),
        "logs": story.logs.iter().map(|l| format!("{}  {}  {}", l.timestamp.format("%H:%M:%S%.3f"), l.instance, l.text)).collect::<Vec<_>>().join("\n"),
        "logs_by": story.logs_by,
    })
}

/// `GET /ui/activations/{id}/screenshot`: the gateway's own
/// `GET /system/activations/{id}/screenshot` (the browser pool's failure screenshot), asked
/// with the session's token. Gateways without that route answer 404, and the page shows no
/// picture.
pub async fn activation_screenshot(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path(id): Path<String>,
) -> Ui<Response> {
    session.require(scope::FUNCTIONS_READ)?;
    match state.registry.store.screenshot(&id).await? {
        Some(shot) => Ok(([(header::CONTENT_TYPE, "image/png")], shot.png).into_response()),
        None => Ok(StatusCode::NOT_FOUND.into_response()),
    }
}
