//! Slack: `POST /slack/{app}` requests signed by Slack come in (slash commands, Events API
//! callbacks, interactivity payloads); function calls go out, and their results come back
//! as Slack messages — in the HTTP answer when the function is quick, otherwise posted to
//! the request's `response_url`.
//!
//! Verification: <https://api.slack.com/authentication/verifying-requests-from-slack>
//! (in [`crate::verify::slack`]). Slack waits 3 s for an answer; see
//! <https://api.slack.com/interactivity/handling#acknowledgment_response>.

mod handler;
pub mod reply;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::common::{duration_setting, invalid, BuildContext, ByteSize, ConfigError, RouteCore};
use crate::function::FunctionName;
pub use handler::handle;
pub use reply::ResponseType;

/// Default time a slash command's function gets before Hark answers "working on it":
/// Slack's 3 s less a margin for the network.
pub const DEFAULT_ACK_BUDGET: Duration = Duration::from_millis(2500);
/// Default answer while a slow slash command runs.
pub const DEFAULT_WORKING_MESSAGE: &str = "Working on it…";
/// How long a `response_url` accepts messages, per Slack's documentation.
pub const RESPONSE_URL_VALIDITY: Duration = Duration::from_secs(30 * 60);

/// One Slack app, as written under `channels.slack.NAME` in `hark.yml`.
#[derive(Debug, Deserialize)]
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
}

impl SlackRouteConfig {
    /// Resolves secrets and checks functions.
    pub async fn build(
        self,
        name: &str,
        ctx: &BuildContext<'_>,
    ) -> Result<SlackRoute, ConfigError> {
        let route = format!("channels.slack.{name}");
        let core = ctx.core("slack", name, self.max_body, self.max_inflight)?;
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
        Ok(SlackRoute {
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
