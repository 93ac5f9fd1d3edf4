//! The one shape of a webhook channel: a request for `POST /{channel}/{route}` comes in; the
//! route is looked up, its body read within the route's limit, the channel verifies,
//! routes and answers it ([`ChannelRoute::serve`]), and the outcome goes out counted and
//! logged as accepted, duplicate or refused, with refusals answered by their status
//! ([`RouteCore::finish`]). A channel implements [`ChannelRoute`] on its checked route and
//! registers itself with one line in `channels/mod.rs`; this handler does the rest.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::response::Response;
use axum::Extension;
use bytes::Bytes;
use http::request::Parts;

use super::route::{ChannelError, Outcome, RouteCore};
use super::{unknown_route, Channels};
use crate::dispatch::Trigger;
use crate::server::{AppState, CallId};

/// How a delivery ended: counted as accepted or duplicate, with the answer; or refused.
pub type Handled = Result<(Outcome, Response), ChannelError>;

/// A checked route of one webhook channel.
pub trait ChannelRoute: Send + Sync + Sized + 'static {
    /// The channel's name: its path segment, counters' and logs' `channel` field.
    const NAME: &'static str;
    /// What its calls are recorded as.
    const TRIGGER: Trigger;

    /// This channel's routes, by name.
    fn routes(channels: &Channels) -> &BTreeMap<String, Arc<Self>>;

    /// The route's name, limits and counters.
    fn core(&self) -> &RouteCore;

    /// Verifies `body` (read within the route's limit) with `parts`, routes it and
    /// answers. Sets `delivery` to the platform's delivery id as soon as it is known, for
    /// the log line.
    fn serve<'a>(
        self: &'a Arc<Self>,
        state: &'a Arc<AppState>,
        call_id: &'a str,
        parts: Parts,
        body: Bytes,
        delivery: &'a mut Option<String>,
    ) -> impl Future<Output = Handled> + Send + 'a;
}

/// `POST /{R::NAME}/{name}`: every channel's request skeleton.
pub async fn handle<R: ChannelRoute>(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    Extension(call_id): Extension<CallId>,
    request: Request,
) -> Response {
    let Some(route) = R::routes(&state.channels).get(&name).cloned() else {
        return unknown_route(R::NAME, &name);
    };
    let (parts, body) = request.into_parts();
    let mut delivery = None;
    let result = match route.core().read_body(body).await {
        Ok(body) => {
            route
                .serve(&state, &call_id.0, parts, body, &mut delivery)
                .await
        }
        Err(e) => Err(e),
    };
    route.core().finish(&call_id.0, delivery.as_deref(), result)
}
