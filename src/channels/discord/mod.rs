//! Discord interactions: `POST /discord/{app}` comes in for each slash command, component
//! click and modal submission of the application whose Interactions Endpoint URL it is;
//! it is checked by its Ed25519 signature ([`verify`]) and timestamp, a PING is answered
//! PONG, a repeated interaction id runs nothing, and the rest is routed by command name or
//! `custom_id` and queued durably. A result within the route's budget is the answer
//! (type 4, or 7 for a component's message); a slower one is deferred (type 5 or 6) and
//! the result edits the original message through the webhook API when it is ready
//! ([`ChannelRoute::deliver`]) — within the 15 minutes the interaction token lives, across restarts.

#[cfg(feature = "fuzzing")]
pub mod fuzz;
pub mod verify;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::common::route::Outcome;
use super::common::{
    ack_budget, api_url, contract, delivery::json_invocation, invalid, BuildContext, ByteSize,
    ChannelCall, ChannelError, ChannelRoute, ConfigError, Delivery, Handled, ReplyTo, RouteCore,
};
use crate::dispatch::queue::{CallResult, Submitted};
use crate::function::FunctionName;
use crate::channels::common::ChannelReplies;
use crate::verify::{Offline, Report};

/// Discord's API base.
pub const DEFAULT_API: &str = "https://discord.com/api/v10";
/// How long a function may take for its result to be the answer (Discord waits 3 s).
pub const DEFAULT_ACK_BUDGET: Duration = Duration::from_millis(2000);
/// The longest `ack_budget` a route may set.
pub const MAX_ACK_BUDGET: Duration = Duration::from_millis(2500);
/// How long an interaction token may be used for follow-ups.
pub const TOKEN_VALIDITY: Duration = Duration::from_secs(15 * 60);

/// Interaction and response types (discord.com/developers/docs/interactions/receiving-and-responding).
mod kind {
    pub const PING: u64 = 1;
    pub const APPLICATION_COMMAND: u64 = 2;
    pub const MESSAGE_COMPONENT: u64 = 3;
    pub const MODAL_SUBMIT: u64 = 5;
    pub const PONG: u64 = 1;
    pub const CHANNEL_MESSAGE: u64 = 4;
    pub const DEFERRED_CHANNEL_MESSAGE: u64 = 5;
    pub const DEFERRED_UPDATE_MESSAGE: u64 = 6;
    pub const UPDATE_MESSAGE: u64 = 7;
}

/// One application, as written under `channels.discord.NAME` in `hark.yml`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct DiscordRouteConfig {
    /// The application's public key from the Developer Portal (64 hex digits; not a
    /// secret); two while one replaces the other.
    pub public_keys: Vec<String>,
    /// Slash command name (`book`) → function.
    #[serde(default)]
    pub commands: BTreeMap<String, String>,
    /// `custom_id` of a button, select menu or modal → function.
    #[serde(default)]
    pub components: BTreeMap<String, String>,
    /// How long a function may take for its result to be the answer (default 2s, at most
    /// 2.5s: Discord waits 3 s); a slower one is deferred and edits the message later.
    #[serde(default)]
    pub ack_budget: Option<String>,
    /// API base URL (default <https://discord.com/api/v10>).
    #[serde(default)]
    pub api: Option<String>,
    #[serde(default)]
    pub max_body: Option<ByteSize>,
    #[serde(default)]
    pub max_inflight: Option<usize>,
}

/// A checked Discord application.
pub struct DiscordRoute {
    pub core: RouteCore,
    keys: Vec<[u8; 32]>,
    commands: BTreeMap<String, FunctionName>,
    components: BTreeMap<String, FunctionName>,
    ack_budget: Duration,
    api: String,
}

impl DiscordRouteConfig {
    /// Reads the keys and checks the functions.
    pub async fn build(
        self,
        name: &str,
        ctx: &BuildContext<'_>,
    ) -> Result<DiscordRoute, ConfigError> {
        let route = format!("channels.discord.{name}");
        let core = ctx.core::<DiscordRoute>(name, self.max_body, self.max_inflight)?;
        if self.public_keys.is_empty() {
            return Err(invalid(
                &route,
                "public_keys needs the application's public key",
            ));
        }
        let keys = self
            .public_keys
            .iter()
            .map(|k| {
                verify::public_key(k)
                    .map_err(|problem| invalid(&route, format!("public key {k:?} is {problem}")))
            })
            .collect::<Result<_, _>>()?;
        if self.commands.is_empty() && self.components.is_empty() {
            return Err(invalid(&route, "no commands or components are routed"));
        }
        let map = |section: &str, m: BTreeMap<String, String>| {
            m.into_iter()
                .map(|(key, f)| Ok((key, ctx.function(&format!("{route}.{section}"), &f)?)))
                .collect::<Result<BTreeMap<_, _>, ConfigError>>()
        };
        let ack_budget = ack_budget(
            &route,
            self.ack_budget.as_deref(),
            DEFAULT_ACK_BUDGET,
            MAX_ACK_BUDGET,
            "Discord stops waiting after 3 s",
        )?;
        let api = api_url(&route, self.api.as_deref(), DEFAULT_API)?;
        Ok(DiscordRoute {
            core,
            keys,
            commands: map("commands", self.commands)?,
            components: map("components", self.components)?,
            ack_budget,
            api,
        })
    }
}

contract::endpoint! {
    #[utoipa::path(post, path = "/discord/{app}", operation_id = "discord_interaction", tag = "channels", description = "Discord interactions for the `discord` route named `app` in hark.yml, signed with Ed25519 (`X-Signature-Ed25519`, `X-Signature-Timestamp`): PING, slash commands, components and modals.", params(("app" = String, Path, description = "Route name in hark.yml")), request_body(content = Object, description = "An interaction", content_type = "application/json"), responses((status = 200, description = "An interaction response", body = Object), (status = 400, description = "Malformed body", body = crate::channels::api::openapi::ErrorBody), (status = 401, description = "Signature missing, wrong or stale", body = crate::channels::api::openapi::ErrorBody), (status = 404, description = "No route of that name in hark.yml", body = crate::channels::api::openapi::ErrorBody), (status = 413, description = "Body over the route's limit", body = crate::channels::api::openapi::ErrorBody), (status = 429, description = "The route is at its max_inflight", body = crate::channels::api::openapi::ErrorBody)))]
    DiscordRoute
}

/// The parts of an interaction Hark reads.
#[derive(Debug, Deserialize)]
pub struct Interaction {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: u64,
    #[serde(default)]
    pub application_id: String,
    #[serde(default)]
    pub token: String,
    #[serde(default)]
    pub data: Value,
    #[serde(default)]
    member: Value,
    #[serde(default)]
    user: Value,
    #[serde(default)]
    channel_id: Option<String>,
    #[serde(default)]
    guild_id: Option<String>,
}

impl Interaction {
    /// The command name or `custom_id` it is routed by, and the map it is looked up in.
    pub fn route_key(&self) -> Option<(&'static str, &str)> {
        match self.kind {
            kind::APPLICATION_COMMAND => Some(("command", self.data["name"].as_str()?)),
            kind::MESSAGE_COMPONENT => Some(("component", self.data["custom_id"].as_str()?)),
            kind::MODAL_SUBMIT => Some(("modal", self.data["custom_id"].as_str()?)),
            _ => None,
        }
    }
}

/// Whether an id or token may go into a URL path as one segment.
fn path_safe(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 512
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && text != "."
        && text != ".."
}

impl ChannelRoute for DiscordRoute {
    fn explain(report: &mut Report, r: &Offline<'_>) {
        verify::explain_into(report, r.secret, r.headers, r.body, r.now);
    }

    type Reply = DiscordReply;

    /// Edits the deferred response with a finished call's result: `PATCH
    /// {api}/webhooks/{application_id}/{token}/messages/@original`, retried while the token
    /// lives.
    async fn deliver(
        replies: &ChannelReplies,
        reply: DiscordReply,
        result: &CallResult,
    ) -> Result<(), String> {
        let (channels, reply) = (&replies.channels, &reply);
        let route = channels
            .discord
            .get(&reply.app)
            .ok_or_else(|| format!("no Discord route named {:?} any more", reply.app))?;
        let left = reply.expires_at - chrono::Utc::now().timestamp();
        if left <= 0 {
            return Err(format!(
                "the interaction token of route {:?} expired",
                reply.app
            ));
        }
        if !path_safe(&reply.application_id) || !path_safe(&reply.token) {
            return Err("unusable interaction ids".into());
        }
        let url = format!(
            "{}/webhooks/{}/{}/messages/@original",
            route.api, reply.application_id, reply.token
        );
        let data = message(result);
        let outbound = &channels.outbound;
        outbound
            .send(
                "discord edit original response",
                Instant::now() + Duration::from_secs(left as u64),
                |client| client.patch(&url).json(&data),
            )
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(channel = "discord", route = %reply.app, function = result.function, "edited the deferred response");
        Ok(())
    }

    async fn serve(route: &Arc<Self>, d: Delivery<'_>) -> Handled {
        let (state, call_id, parts, body, delivery) = d.into_parts();
        let headers = parts.headers;
        verify::verify(&route.keys, &headers, &body, state.clock.now().timestamp())?;
        let interaction: Interaction = serde_json::from_slice(&body)
            .map_err(|e| ChannelError::Malformed(format!("not an interaction: {e}")))?;
        if interaction.kind == kind::PING {
            return Ok((
                Outcome::Accepted,
                Json(json!({ "type": kind::PONG })).into_response(),
            ));
        }
        *delivery = Some(interaction.id.clone());
        let Some((what, key)) = interaction.route_key() else {
            return Err(ChannelError::Malformed(format!(
                "interaction type {} is not handled",
                interaction.kind
            )));
        };
        let table = if what == "command" {
            &route.commands
        } else {
            &route.components
        };
        let Some(function) = table.get(key) else {
            let text = format!("No function is set up for {key} on this Hark gateway.");
            let answer =
                json!({ "type": kind::CHANNEL_MESSAGE, "data": { "content": text, "flags": 64 } });
            return Ok((Outcome::Accepted, Json(answer).into_response()));
        };
        if !path_safe(&interaction.application_id) || !path_safe(&interaction.token) {
            return Err(ChannelError::Malformed(
                "the interaction's application_id or token has characters Discord never sends"
                    .into(),
            ));
        }
        let input = json!({
            "type": what,
            "name": key,
            "options": interaction.data.get("options").cloned().unwrap_or(json!([])),
            "values": interaction.data.get("values").cloned().unwrap_or(Value::Null),
            "user": if interaction.member["user"].is_object() { &interaction.member["user"] } else { &interaction.user },
            "channel_id": interaction.channel_id,
            "guild_id": interaction.guild_id,
            "interaction": serde_json::from_slice::<Value>(&body).unwrap_or_default(),
        });
        let call = json_invocation(call_id, &route.core, delivery.as_deref(), &input);
        let reply = DiscordReply {
            app: route.core.name.clone(),
            application_id: interaction.application_id.clone(),
            token: interaction.token.clone(),
            expires_at: chrono::Utc::now().timestamp() + TOKEN_VALIDITY.as_secs() as i64,
        };
        let component = interaction.kind == kind::MESSAGE_COMPONENT;
        let submitted = ChannelCall {
            route: &route.core,
            function,
            call,
            reply: Some(ReplyTo::new::<DiscordRoute>(&reply)),
            dedupe: delivery.as_deref(),
            wait: Some(route.ack_budget),
            answers: true,
            no_retries: false,
        }
        .submit(&state.queue)
        .await?;
        let answer = match submitted {
            Submitted::Finished(result) => {
                let kind = if component {
                    kind::UPDATE_MESSAGE
                } else {
                    kind::CHANNEL_MESSAGE
                };
                json!({ "type": kind, "data": message(&result) })
            }
            Submitted::Queued => {
                let kind = if component {
                    kind::DEFERRED_UPDATE_MESSAGE
                } else {
                    kind::DEFERRED_CHANNEL_MESSAGE
                };
                json!({ "type": kind })
            }
            Submitted::Duplicate => {
                let id = delivery.as_deref().unwrap_or_default();
                return Ok((
                    Outcome::Duplicate,
                    Json(json!({ "duplicate": id })).into_response(),
                ));
            }
        };
        Ok((Outcome::Accepted, Json(answer).into_response()))
    }
}

/// The message data for a result: an apology for a failure (seen only by the user), the
/// function's own message object (`content`, `embeds`, `components`), or its output as
/// `content`, cut to Discord's 2,000 characters.
fn message(result: &CallResult) -> Value {
    if let Some(apology) = super::common::reply::apology(result) {
        return json!({ "content": apology, "flags": 64 });
    }
    let body = String::from_utf8_lossy(&result.body);
    let body = body.trim();
    if let Ok(Value::Object(object)) = serde_json::from_str::<Value>(body) {
        if ["content", "embeds", "components"]
            .iter()
            .any(|k| object.contains_key(*k))
        {
            return Value::Object(object);
        }
    }
    let content: String = body.chars().take(2000).collect();
    json!({ "content": content })
}

/// Where a deferred interaction's result goes: the original response, edited through the
/// webhook API with the interaction's token (a capability for 15 minutes, like Slack's
/// `response_url`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscordReply {
    pub app: String,
    pub application_id: String,
    pub token: String,
    /// Unix seconds after which the token is no longer accepted.
    pub expires_at: i64,
}


#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn only_plain_ids_go_into_paths() {
        assert!(path_safe("aW50ZXJhY3Rpb246MTIz.abc-_"));
        for bad in ["", ".", "..", "a/b", "a?b", "a%2f", "a b"] {
            assert!(!path_safe(bad), "{bad:?}");
        }
    }

    #[test]
    fn results_become_message_data() {
        let result = |status: u16, body: &str| CallResult {
            call_id: "c".into(),
            function: "book".into(),
            status,
            error: None,
            body: Bytes::from(body.to_owned()),
            duration_ms: 1.0,
        };
        assert_eq!(
            message(&result(200, "booked\n")),
            json!({"content": "booked"})
        );
        assert_eq!(
            message(&result(200, r#"{"embeds":[{"title":"t"}]}"#))["embeds"][0]["title"],
            "t"
        );
        let apology = message(&result(500, "trace"));
        assert_eq!(apology["flags"], 64);
        assert_eq!(
            message(&result(200, &"x".repeat(3000)))["content"]
                .as_str()
                .unwrap()
                .len(),
            2000
        );
    }
}
