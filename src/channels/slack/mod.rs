//! Slack: `POST /slack/{app}` requests signed by Slack come in (slash commands, Events API
//! callbacks, interactivity payloads); function calls go into the durable queue, and their
//! results come back as Slack messages — in the HTTP answer when the function is quick,
//! otherwise posted to the request's `response_url`, or for events posted by the app's bot
//! with `chat.postMessage`. A gateway killed after acknowledging a request still runs the
//! function and posts its result after a restart.
//!
//! Verification: <https://api.slack.com/authentication/verifying-requests-from-slack>
//! (in [`verify`]). Slack waits 3 s for an answer; see
//! <https://api.slack.com/interactivity/handling#acknowledgment_response>.

pub mod api;
#[cfg(feature = "fuzzing")]
pub mod fuzz;
pub(crate) mod handler;
pub mod reply;
pub mod verify;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::common::{
    api_url, duration_setting, invalid, BuildContext, ByteSize, ConfigError, RouteCore,
};
use crate::function::FunctionName;
pub use handler::handle;
pub use reply::{deliver, ResponseType, SlackReply};

/// Default time a slash command's function gets before Hark answers "working on it":
/// Slack's 3 s less a margin for the network.
pub const DEFAULT_ACK_BUDGET: Duration = Duration::from_millis(2500);
/// Default answer while a slow slash command runs.
pub const DEFAULT_WORKING_MESSAGE: &str = "Working on it…";
/// The host of every `response_url` Slack sends.
pub const RESPONSE_URL_HOST: &str = "hooks.slack.com";
/// How long a `response_url` accepts messages, per Slack's documentation.
pub const RESPONSE_URL_VALIDITY: Duration = Duration::from_secs(30 * 60);

/// One Slack app, as written under `channels.slack.NAME` in `hark.yml`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct SlackRouteConfig {
    /// Names of signing secrets; two while rotating.
    pub signing_secrets: Vec<String>,
    /// Slash command (`/standup`) → function.
    #[serde(default)]
    pub commands: BTreeMap<String, String>,
    /// Events API event type (`app_mention`) → function.
    #[serde(default)]
    pub events: BTreeMap<String, String>,
    /// Interactivity: `action_id` of a block action, or `callback_id` of a view submission
    /// or shortcut → function.
    #[serde(default, alias = "interactivity")]
    pub actions: BTreeMap<String, String>,
    /// Who sees a command's result: `ephemeral` (default) or `in_channel`.
    #[serde(default)]
    pub response_type: ResponseType,
    /// The answer while a slow command runs (default "Working on it…"; empty for none).
    #[serde(default)]
    pub working_message: Option<String>,
    /// How long a function may take before the working message is sent (default 2.5s).
    #[serde(default)]
    pub ack_budget: Option<String>,
    /// Name of a secret holding the app's bot token (`xoxb-...`): events' results are
    /// posted with `chat.postMessage` in the event's channel. Without it they are dropped.
    #[serde(default)]
    pub bot_token: Option<String>,
    /// Web API base URL (default <https://slack.com/api>).
    #[serde(default)]
    pub api: Option<String>,
    /// Post events' results in the event's thread (its `thread_ts`, else its `ts`).
    #[serde(default)]
    pub reply_in_thread: bool,
    #[serde(default)]
    pub max_body: Option<ByteSize>,
    #[serde(default)]
    pub max_inflight: Option<usize>,
}

/// A checked Slack route.
pub struct SlackRoute {
    pub core: RouteCore,
    signing_secrets: Vec<Vec<u8>>,
    commands: BTreeMap<String, FunctionName>,
    events: BTreeMap<String, FunctionName>,
    actions: BTreeMap<String, FunctionName>,
    response_type: ResponseType,
    working_message: String,
    ack_budget: Duration,
    bot_token: Option<String>,
    api: String,
    reply_in_thread: bool,
}

impl SlackRouteConfig {
    /// Resolves secrets and checks functions.
    pub async fn build(
        self,
        name: &str,
        ctx: &BuildContext<'_>,
    ) -> Result<SlackRoute, ConfigError> {
        let route = format!("channels.slack.{name}");
        let core = ctx.core::<SlackRoute>(name, self.max_body, self.max_inflight)?;
        if self.signing_secrets.is_empty() {
            return Err(invalid(
                &route,
                "signing_secrets needs at least one secret name",
            ));
        }
        if self.commands.is_empty() && self.events.is_empty() && self.actions.is_empty() {
            return Err(invalid(&route, "no commands, events or actions are routed"));
        }
        let map = |section: &str, m: BTreeMap<String, String>| {
            m.into_iter()
                .map(|(key, f)| Ok((key, ctx.function(&format!("{route}.{section}"), &f)?)))
                .collect::<Result<BTreeMap<_, _>, ConfigError>>()
        };
        let commands = map("commands", self.commands)?;
        if let Some(bad) = commands.keys().find(|c| !c.starts_with('/')) {
            return Err(invalid(
                &route,
                format!("command {bad:?} must start with /"),
            ));
        }
        let api = api_url(&route, self.api.as_deref(), api::DEFAULT_API)?;
        let bot_token = match &self.bot_token {
            None => None,
            Some(name) => {
                let value = ctx.secret(&route, name).await?;
                let value = String::from_utf8(value)
                    .map_err(|_| invalid(&route, format!("secret {name:?} is not text")))?;
                Some(value.trim().to_owned())
            }
        };
        Ok(SlackRoute {
            bot_token,
            api,
            reply_in_thread: self.reply_in_thread,
            signing_secrets: ctx.secrets(&route, &self.signing_secrets).await?,
            commands,
            events: map("events", self.events)?,
            actions: map("actions", self.actions)?,
            response_type: self.response_type,
            working_message: self
                .working_message
                .unwrap_or_else(|| DEFAULT_WORKING_MESSAGE.to_owned()),
            ack_budget: duration_setting(
                &route,
                "ack_budget",
                self.ack_budget.as_deref(),
                DEFAULT_ACK_BUDGET,
            )?,
            core,
        })
    }
}
