//! The OpenFaaS-compatible HTTP API: `/system/*` (management, bearer token required)
//! and `/function/NAME` (invocation). Requests come in as HTTP; registry operations
//! and dispatched calls go out.

mod invoke;
mod system;

pub use invoke::HEADER_DURATION;

use std::sync::Arc;

use axum::routing::{any, get, post};
use axum::Router;

use crate::server::AppState;

/// The API's routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/healthz", get(system::healthz))
        .route("/system/info", get(system::info))
        .route(
            "/system/functions",
            get(system::list_functions)
                .post(system::create_function)
                .put(system::update_function)
                .delete(system::delete_function),
        )
        .route("/system/function/{name}", get(system::get_function))
        .route(
            "/system/scale-function/{name}",
            post(system::scale_function),
        )
        .route(
            "/system/secrets",
            get(system::list_secrets)
                .post(system::create_secret)
                .put(system::update_secret)
                .delete(system::delete_secret),
        )
        .route("/system/logs", get(system::logs))
        .route("/system/activations", get(system::activations))
        .route("/system/tokens", post(system::create_token))
        .route("/function/{name}", any(invoke::invoke))
        .route("/function/{name}/", any(invoke::invoke))
        .route("/function/{name}/{*path}", any(invoke::invoke))
        .route(
            "/async-function/{name}",
            post(invoke::enqueue)
                .put(invoke::enqueue)
                .delete(invoke::cancel),
        )
        .route("/async-function/{name}/", any(invoke::enqueue))
        .route("/async-function/{name}/{*path}", any(invoke::enqueue))
        .route("/system/queue", get(system::queue))
        .route("/system/schedules", get(system::schedules))
        .route("/system/queue/{call_id}/retry", post(system::retry_call))
}
