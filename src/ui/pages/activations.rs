//! The activations list with its filters, an activation's page and its screenshot.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Response};
use http::{header, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::scope;
use crate::dispatch::Trigger;
use crate::error::ApiError;
use crate::function::FunctionName;
use crate::server::AppState;
use crate::ui::{render, Session};

use super::{activation_row, Ui, ACTIVATIONS_SCANNED};

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
    triggers.extend(Trigger::ALL.map(Trigger::as_str));
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

/// `GET /ui/activations/{id}`: one activation with its error text, and its browser
/// screenshot when the gateway keeps one.
pub async fn activation(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path(id): Path<String>,
) -> Ui<Html<String>> {
    let all = state
        .registry
        .store
        .activations(None, ACTIVATIONS_SCANNED)
        .await?;
    let found = all.iter().find(|a| a.call_id == id).ok_or_else(|| {
        ApiError::not_found(format!(
            "no activation {id} among the newest {ACTIVATIONS_SCANNED}"
        ))
    })?;
    let record = serde_json::to_string_pretty(found).unwrap_or_default();
    render(
        "activation.html",
        &session,
        json!({ "nav": "activations", "a": activation_row(found), "record": record }),
    )
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
