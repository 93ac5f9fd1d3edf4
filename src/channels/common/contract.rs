//! The one shape of a channel: a request for `POST /{channel}/{route}` comes in; the
//! route is looked up, its body read within the route's limit, the channel verifies,
//! routes and answers it ([`ChannelRoute::serve`]), and the outcome goes out counted and
//! logged as accepted, duplicate or refused, with refusals answered by their status
//! ([`RouteCore::finish`]). A channel implements [`ChannelRoute`] on its checked route and
//! registers itself with one line in `channels/mod.rs` (Alexa, whose routes are its skills,
//! by hand); this handler does the rest. A late reply ([`ChannelRoute::deliver`]) comes
//! back to the channel that wrote it by name, and `hark webhook verify --kind` reaches the
//! channel's [`ChannelRoute::explain`] by its [`ChannelRoute::VERIFY_KIND`].

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::response::Response;
use axum::Extension;
use bytes::Bytes;
use http::request::Parts;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::reply::ChannelReplies;
use super::route::{ChannelError, Outcome, RouteCore};
use super::unknown_route;
use crate::dispatch::queue::CallResult;
use crate::dispatch::Trigger;
use crate::server::{AppState, CallId};
use crate::verify::{Offline, Report};

/// How a delivery ended: counted as accepted or duplicate, with the answer; or refused.
pub type Handled = Result<(Outcome, Response), ChannelError>;

/// What a channel's registration line (`webhook_channels!` in `channels/mod.rs`) gives
/// its route type: the channel's name and where its routes and their limits are found.
/// Written by hand only for a channel whose routes come from elsewhere (Alexa's skills).
pub trait Registered: Send + Sync + Sized + 'static {
    /// The channel's name: its path segment, counters' and logs' `channel` field.
    const NAME: &'static str;

    /// This channel's routes, by name.
    fn routes(state: &AppState) -> &BTreeMap<String, Arc<Self>>;

    /// The route's name, limits and counters.
    fn core(&self) -> &RouteCore;
}

/// One delivery, as [`ChannelRoute::serve`] gets it.
pub struct Delivery<'a> {
    pub state: &'a Arc<AppState>,
    pub call_id: &'a str,
    pub parts: Parts,
    /// The body, read within the route's limit.
    pub body: Bytes,
    /// The platform's delivery id, to be set as soon as it is known, for the log line.
    pub id: &'a mut Option<String>,
}

impl<'a> Delivery<'a> {
    /// The state, call id, request head, body and delivery id, in that order.
    pub fn into_parts(
        self,
    ) -> (
        &'a Arc<AppState>,
        &'a str,
        Parts,
        Bytes,
        &'a mut Option<String>,
    ) {
        (self.state, self.call_id, self.parts, self.body, self.id)
    }
}

/// A checked route of one channel: what it does with a delivery, and with a late result.
///
/// [`NoReply`]: super::reply::NoReply
pub trait ChannelRoute: Registered {
    /// What its calls are recorded as: the channel's name unless it says otherwise.
    const TRIGGER: Trigger = Trigger::Channel(Self::NAME);

    /// What a late reply of this channel keeps in the queue row, to be delivered once the
    /// call finishes: routes and ids, and the platform's short-lived reply handle where it
    /// needs one (Slack's `response_url`, Discord's interaction token), never a route's own
    /// secret (bot tokens are looked up when delivering). [`NoReply`] for a channel that
    /// answers only while the request is open.
    type Reply: Serialize + DeserializeOwned + Send + Sync;

    /// Verifies the delivery for `route`, routes it and answers.
    fn serve(route: &Arc<Self>, delivery: Delivery<'_>) -> impl Future<Output = Handled> + Send;

    /// The `--kind` of `hark webhook verify` that runs [`ChannelRoute::explain`]: the
    /// channel's name unless it says otherwise.
    const VERIFY_KIND: &'static str = Self::NAME;

    /// Explains step by step whether `request` passes this channel's check, for
    /// `hark webhook verify` (offline: no gateway, the secret given on the command line).
    fn explain(report: &mut Report, request: &Offline<'_>) {
        let _ = request;
        report.fail(format!("the {} channel has no offline check", Self::NAME));
    }

    /// Delivers `result` where `reply` says, after the queue has run the call.
    fn deliver(
        replies: &ChannelReplies,
        reply: Self::Reply,
        result: &CallResult,
    ) -> impl Future<Output = Result<(), String>> + Send {
        let _ = (replies, reply, result);
        async { Err(format!("the {} channel has no late replies", Self::NAME)) }
    }
}

/// `POST /{R::NAME}/{name}`: every channel's request skeleton.
pub async fn handle<R: ChannelRoute>(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    Extension(call_id): Extension<CallId>,
    request: Request,
) -> Response {
    let Some(route) = R::routes(&state).get(&name).cloned() else {
        return unknown_route(R::NAME, &name);
    };
    let (parts, body) = request.into_parts();
    let mut id = None;
    let result = match route.core().read_body(body).await {
        Ok(body) => {
            let delivery = Delivery {
                state: &state,
                call_id: &call_id.0,
                parts,
                body,
                id: &mut id,
            };
            R::serve(&route, delivery).await
        }
        Err(e) => Err(e),
    };
    route.core().finish(&call_id.0, id.as_deref(), result)
}

/// Declares a channel's `handle`, the axum handler of `POST /{channel}/{route}` that
/// [`handle`] serves for route type `$route`, under the OpenAPI description given as its
/// `#[utoipa::path]` attribute.
macro_rules! endpoint {
    ($(#[$attr:meta])* $route:ty) => {
        $(#[$attr])*
        pub async fn handle(
            state: axum::extract::State<std::sync::Arc<crate::server::AppState>>,
            name: axum::extract::Path<String>,
            call_id: axum::Extension<crate::server::CallId>,
            request: axum::extract::Request,
        ) -> axum::response::Response {
            crate::channels::common::contract::handle::<$route>(state, name, call_id, request).await
        }
    };
}
pub(crate) use endpoint;
