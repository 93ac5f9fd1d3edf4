//! Ingress: each channel receives requests of one kind, verifies them, turns them into
//! calls of functions and formats the replies.
//!
//! - [`api`]: the OpenFaaS-compatible REST API and the plain `/function/NAME` path.
//! - [`slack`]: `POST /slack/{app}` — slash commands, events, interactivity.
//! - [`github`]: `POST /github/{app}` — webhook deliveries; replies as comments or labels.
//! - [`hooks`]: `POST /hooks/{name}` — Standard Webhooks, trigger rules, or public hooks.
//! - [`common`]: what those three share — the routing table built from `hark.yml`,
//!   delivery-id dedupe, acknowledgement budgets, outbound HTTP with retries, counters.

pub mod alexa;
pub mod api;
pub mod common;
pub mod github;
pub mod hooks;
pub mod slack;

use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use http::HeaderMap;

use crate::auth::scope;
use crate::error::ApiError;
use crate::server::AppState;
pub use common::{Channels, ChannelsConfig};

/// The webhook channels' routes, and `GET /system/channels`.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/slack/{app}", post(slack::handle))
        .route("/github/{app}", post(github::handle))
        .route("/hooks/{name}", post(hooks::handle))
        .route("/system/channels", get(list))
}

/// `GET /system/channels`: every route with its limits and counters.
async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Vec<common::route::RouteSummary>>, ApiError> {
    state.auth.check(&headers, scope::FUNCTIONS_READ)?;
    Ok(Json(
        state
            .channels
            .cores()
            .into_iter()
            .map(|c| c.summary())
            .collect(),
    ))
}
