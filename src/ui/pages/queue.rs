//! The schedules page, the async queue and retrying a dead-lettered call.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{Html, Response};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::scope;
use crate::error::ApiError;
use crate::server::{AppState, RawBody};
use crate::store::CallState;
use crate::ui::{render, Session};

use super::{form, see_other, time, CsrfForm, Done, Ui};

/// `GET /ui/schedules`: scheduled functions, their next tick and recent runs.
pub async fn schedules(State(state): State<Arc<AppState>>, session: Session) -> Ui<Html<String>> {
    let schedules = state.scheduler.status().await?;
    let rows: Vec<Value> = schedules
        .iter()
        .map(|s| {
            let mut row = serde_json::to_value(s).unwrap_or_default();
            row["next_text"] = s.next.as_ref().map(time).into();
            row
        })
        .collect();
    render(
        "schedules.html",
        &session,
        json!({ "nav": "schedules", "schedules": rows }),
    )
}

#[derive(Deserialize, Default)]
pub struct QueueQuery {
    state: Option<CallState>,
    done: Option<String>,
}

/// `GET /ui/queue`: async calls by state; dead-lettered ones can be retried.
pub async fn queue(
    State(state): State<Arc<AppState>>,
    session: Session,
    Query(query): Query<QueueQuery>,
) -> Ui<Html<String>> {
    let entries = state
        .registry
        .store
        .queue_entries(query.state, None, 200)
        .await?;
    let depth = state.registry.store.queue_depth().await?;
    let rows: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!({
                "call_id": e.call_id,
                "function": e.function,
                "state": e.state.as_str(),
                "attempts": e.attempts,
                "status": e.status,
                "error": e.error,
                "created_at": time(&e.created_at),
                "next_attempt_at": e.next_attempt_at.as_ref().map(time),
                "trigger": e.trigger,
            })
        })
        .collect();
    let done = Done { done: query.done };
    render(
        "queue.html",
        &session,
        json!({
            "nav": "queue",
            "rows": rows,
            "depth": depth,
            "state": query.state.map(CallState::as_str),
            "notice": done.notice(),
            "can_write": session.claims.allows(scope::FUNCTIONS_WRITE),
        }),
    )
}

/// `POST /ui/queue/{id}/retry`: queues a dead-lettered call again.
pub async fn retry(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path(id): Path<String>,
    body: RawBody,
) -> Ui<Response> {
    let form: CsrfForm = form(&body)?;
    session.check_csrf(form.csrf.as_deref())?;
    session.require(scope::FUNCTIONS_WRITE)?;
    match state.registry.store.requeue_dead(&id).await? {
        None => Err(ApiError::not_found(format!("no queued call {id}")).into()),
        Some(CallState::Dead) => {
            state.queue.wake();
            tracing::info!(call_id = id, subject = ?session.claims.sub, "dead-lettered call queued again from the web UI");
            Ok(see_other("/ui/queue?state=dead&done=retried"))
        }
        Some(other) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "call {id} is {}; only dead-lettered calls can be retried",
                other.as_str()
            ),
        )
        .into()),
    }
}
