//! Ingress: each channel receives requests of one kind, verifies them, turns them into
//! calls of functions and formats the replies.
//!
//! - [`api`]: the OpenFaaS-compatible REST API and the plain `/function/NAME` path.
//! - [`slack`]: `POST /slack/{app}` — slash commands, events, interactivity.
//! - [`github`]: `POST /github/{app}` — webhook deliveries; replies as comments or labels.
//! - [`discord`]: `POST /discord/{app}` — Discord interactions; deferred results edit the reply.
//! - [`hooks`]: `POST /hooks/{name}` — Standard Webhooks, trigger rules, or public hooks.
//! - [`teams`]: `POST /teams/{route}` — Microsoft Teams outgoing webhooks, answered inline.
//! - [`twilio`]: `POST /twilio/{route}` — phone calls answered by the Alexa skills, in TwiML.
//! - [`telegram`]: `POST /telegram/{bot}` — Telegram bots; replies inline or by `sendMessage`.
//! - [`common`]: what the webhook channels share: the contract each implements
//!   ([`common::ChannelRoute`]) and its one request handler — the routing table built from `hark.yml`,
//!   delivery-id dedupe, acknowledgement budgets, outbound HTTP with retries, counters.

pub mod alexa;
pub mod api;
pub mod common;

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use http::HeaderMap;

use crate::auth::scope;
use crate::error::ApiError;
use crate::server::AppState;

// The webhook channels, one line each: the line declares the channel's module (its
// folder) and registers its configuration, routes, triggers, late replies, offline check
// and fuzz target.
common::webhook_channels! {
    /// `POST /slack/{app}`.
    slack: slack::SlackRouteConfig => slack::SlackRoute, slack::handler::handle;
    /// `POST /github/{app}`.
    github: github::GitHubRouteConfig => github::GitHubRoute, github::handler::handle;
    /// `POST /discord/{app}`: Discord interactions.
    discord: discord::DiscordRouteConfig => discord::DiscordRoute, discord::handle;
    /// `POST /hooks/{name}`.
    hooks: hooks::HookRouteConfig => hooks::HookRoute, hooks::handler::handle;
    /// `POST /teams/{route}`: Microsoft Teams outgoing webhooks.
    teams: teams::TeamsRouteConfig => teams::TeamsRoute, teams::handle;
    /// `POST /twilio/{route}`: phone calls (Twilio Voice) answered by a skill.
    twilio: twilio::TwilioRouteConfig => twilio::TwilioRoute, twilio::handle;
    /// `POST /telegram/{bot}`: Telegram bots' webhooks.
    telegram: telegram::TelegramRouteConfig => telegram::TelegramRoute, telegram::handle, telegram::set_webhook;
}

/// What every channel's calls are recorded as: Alexa's, then the webhook channels'.
pub fn triggers() -> impl Iterator<Item = crate::dispatch::Trigger> {
    use common::ChannelRoute;
    std::iter::once(alexa::channel::AlexaRoute::TRIGGER).chain(Channels::TRIGGERS.iter().copied())
}

/// Delivers a late reply through the channel that wrote it.
pub async fn deliver(
    replies: &common::ChannelReplies,
    reply: common::ReplyTo,
    result: &crate::dispatch::queue::CallResult,
) -> Result<(), String> {
    use common::Registered;
    if reply.channel() == alexa::channel::AlexaRoute::NAME {
        return common::reply::deliver_to::<alexa::channel::AlexaRoute>(replies, reply, result)
            .await;
    }
    let channel = reply.channel().to_owned();
    Channels::deliver(replies, reply, result)
        .await
        .unwrap_or_else(|| Err(format!("no channel named {channel:?} delivers replies")))
}

#[utoipa::path(get, path = "/system/channels", tag = "channels", description = "Every channel route (each Alexa skill, and the Slack, GitHub, Discord, Teams, Telegram, Twilio and hooks routes of hark.yml) with its limits and counters.", security(("bearer" = [])), responses((status = 200, description = "Routes", body = Vec<Object>), (status = 401, description = "No valid bearer token", body = crate::channels::api::openapi::ErrorBody)))]
/// `GET /system/channels`: every route with its limits and counters.
async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Vec<common::route::RouteSummary>>, ApiError> {
    state.auth.check(&headers, scope::FUNCTIONS_READ).await?;
    let skills = state.alexa.routes.values().map(|r| &r.core);
    Ok(Json(
        skills
            .chain(state.channels.cores())
            .map(|c| c.summary())
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unique(names: &[&str]) -> bool {
        let mut sorted = names.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        sorted.len() == names.len()
    }

    /// A channel registered under a name another already has would take its calls'
    /// records, its late replies or its offline check.
    #[test]
    fn triggers_verify_kinds_and_fuzz_targets_are_each_unique() {
        let triggers: Vec<&str> = crate::dispatch::Trigger::all()
            .iter()
            .map(|t| t.as_str())
            .collect();
        assert!(unique(&triggers), "{triggers:?}");
        assert!(triggers.contains(&"alexa") && triggers.contains(&"hook"));
        let kinds = Channels::VERIFY_KINDS;
        assert!(unique(kinds), "{kinds:?}");
        assert!(kinds.iter().all(|k| !k.starts_with("hmac-")), "{kinds:?}");
        let targets: Vec<&str> = Channels::FUZZ_TARGETS.iter().map(|(t, _)| *t).collect();
        assert!(unique(&targets), "{targets:?}");
    }
}
