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
use axum::Json;
use http::HeaderMap;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::scope;
use crate::error::ApiError;
use crate::server::AppState;
pub use common::{Channels, ChannelsConfig};

/// The webhook channels' routes, and `GET /system/channels`, with their descriptions.
pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(slack::handler::handle))
        .routes(routes!(github::handler::handle))
        .routes(routes!(hooks::handler::handle))
        .routes(routes!(list))
}

#[utoipa::path(get, path = "/system/channels", tag = "channels", description = "Every Slack, GitHub and hooks route with its limits and counters.", security(("bearer" = [])), responses((status = 200, description = "Routes", body = Vec<Object>), (status = 401, description = "No valid bearer token", body = crate::channels::api::openapi::ErrorBody)))]
/// `GET /system/channels`: every route with its limits and counters.
async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Vec<common::route::RouteSummary>>, ApiError> {
    state.auth.check(&headers, scope::FUNCTIONS_READ).await?;
    Ok(Json(
        state
            .channels
            .cores()
            .into_iter()
            .map(|c| c.summary())
            .collect(),
    ))
}
