//! The OpenFaaS-compatible HTTP API: `/system/*` (management, bearer token required)
//! and `/function/NAME` (invocation). Requests come in as HTTP; registry operations
//! and dispatched calls go out. Every route is registered together with its OpenAPI
//! description (`routes!` reads the handler's `#[utoipa::path]`), served at
//! `/openapi.json` by [`openapi`].

pub mod invoke;
pub mod openapi;
pub mod replay;
pub mod system;
mod tokens;

pub use invoke::HEADER_DURATION;

use std::sync::Arc;

use axum::routing::{any, MethodRouter};
use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
use utoipa::openapi::{Object, Required, Type};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};
use utoipa_axum::routes;

use crate::server::AppState;

/// The API's routes, with their descriptions.
pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(system::healthz))
        .routes(routes!(system::info))
        .routes(routes!(
            system::list_functions,
            system::create_function,
            system::update_function,
            system::delete_function
        ))
        .routes(routes!(system::get_function))
        .routes(routes!(system::scale_function))
        .routes(routes!(
            system::list_secrets,
            system::create_secret,
            system::update_secret,
            system::delete_secret
        ))
        .routes(routes!(system::logs))
        .routes(routes!(system::activations))
        .routes(routes!(system::activation))
        .routes(routes!(replay::replay_activation))
        .routes(routes!(tokens::list_tokens, tokens::create_token))
        .routes(routes!(tokens::revoke_token))
        .routes(routes!(tokens::rotate_admin))
        .routes(routes!(tokens::list_keys, tokens::rotate_key))
        .routes(routes!(tokens::retire_key))
        .routes(served_for_any_method(
            routes!(invoke::invoke),
            any(invoke::invoke),
            &["/function/{name}/", "/function/{name}/{*path}"],
        ))
        .routes(routes!(invoke::enqueue, invoke::cancel))
        .routes(served_for_any_method(
            routes!(invoke::enqueue),
            any(invoke::enqueue),
            &["/async-function/{name}/", "/async-function/{name}/{*path}"],
        ))
        .routes(routes!(system::queue))
        .routes(routes!(system::schedules))
        .routes(routes!(system::retry_call))
}

/// A documented handler served by `router` (e.g. axum's `any`, which `routes!` cannot
/// express) at its own path and at the `extra` paths: its description is copied to each
/// of them, with a distinct operation id and the `{*path}` tail described as a path
/// parameter.
fn served_for_any_method<S>(
    (schemas, documented, _): UtoipaMethodRouter<S>,
    router: MethodRouter<S>,
    extra: &[&str],
) -> UtoipaMethodRouter<S> {
    let mut paths = documented.clone();
    let Some(item) = documented.paths.values().next() else {
        return (schemas, paths, router);
    };
    for (n, path) in extra.iter().enumerate() {
        let mut item = item.clone();
        for operation in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            let id = operation.operation_id.take().unwrap_or_default();
            operation.operation_id = Some(format!("{id}_{}", n + 1));
            if path.contains("{*path}") {
                operation.parameters.get_or_insert_with(Vec::new).push(
                    ParameterBuilder::new()
                        .name("path")
                        .parameter_in(ParameterIn::Path)
                        .required(Required::True)
                        .description(Some("The rest of the path, passed to the function"))
                        .schema(Some(Object::with_type(Type::String)))
                        .build(),
                );
            }
        }
        paths.paths.insert((*path).to_owned(), item);
    }
    (schemas, paths, router)
}
