//! GitHub: `POST /github/{app}` webhook deliveries signed with `X-Hub-Signature-256` come
//! in; a function runs per routed event (`issues.opened`, `push`, `pull_request.*`), and its
//! result goes back to GitHub as an issue or pull-request comment or as labels, through the
//! REST API with a GitHub App installation token or a personal token. Calls run through the
//! durable queue: a delivery answered 202 still gets its function run and its reply made
//! after a gateway restart.
//!
//! Verification: <https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries>
//! (in [`verify`]). GitHub waits 10 s for an answer:
//! <https://docs.github.com/en/webhooks/using-webhooks/best-practices-for-using-webhooks#respond-within-10-seconds>.

pub mod api;
#[cfg(feature = "fuzzing")]
pub mod fuzz;
pub(crate) mod handler;
pub mod verify;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::common::{
    api_url, duration_setting, invalid, BuildContext, ByteSize, ConfigError, RouteCore,
};
use crate::function::FunctionName;
pub use api::{ApiAuth, AppCredentials};
pub use handler::{handle, GitHubReply};

/// Default time a function gets before Hark answers 202 and lets it finish from the
/// queue: GitHub's 10 s less a margin.
pub const DEFAULT_ACK_BUDGET: Duration = Duration::from_secs(8);
/// The public GitHub REST API.
pub const DEFAULT_API: &str = "https://api.github.com";

/// One GitHub App (or repository webhook), as written under `channels.github.NAME`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct GitHubRouteConfig {
    /// Names of webhook secrets; two while rotating.
    pub webhook_secrets: Vec<String>,
    /// `issues.opened`, `issues.*` or `issues`, `push` → function.
    pub events: BTreeMap<String, String>,
    /// GitHub App credentials, for replies.
    #[serde(default)]
    pub app: Option<AppConfig>,
    /// Name of a secret holding a personal access token: the simpler alternative to `app`.
    #[serde(default)]
    pub token: Option<String>,
    /// REST API base URL (GitHub Enterprise: `https://HOST/api/v3`); `app.api` also works.
    #[serde(default)]
    pub api: Option<String>,
    /// What the function's result becomes: `none` (default), `comment` or `labels`.
    #[serde(default)]
    pub reply: ReplyKind,
    /// How long the function may take before Hark answers 202 (default 8s).
    #[serde(default)]
    pub ack_budget: Option<String>,
    #[serde(default)]
    pub max_body: Option<ByteSize>,
    #[serde(default)]
    pub max_inflight: Option<usize>,
}

/// `app:` of a GitHub route.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct AppConfig {
    /// The App's id (shown on its settings page).
    pub id: u64,
    /// Name of the secret holding the App's private key (PEM).
    pub private_key: String,
    #[serde(default)]
    pub api: Option<String>,
}

/// What a function's result becomes on GitHub.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ReplyKind {
    /// Nothing: the function talks to GitHub itself, if at all.
    #[default]
    None,
    /// The output, as Markdown, is a comment on the issue or pull request.
    Comment,
    /// The output is a JSON list of label names (or `{"labels": [...]}`) added to it.
    Labels,
}

/// A checked GitHub route.
pub struct GitHubRoute {
    pub core: RouteCore,
    webhook_secrets: Vec<Vec<u8>>,
    events: BTreeMap<String, FunctionName>,
    reply: ReplyKind,
    auth: ApiAuth,
    api: String,
    ack_budget: Duration,
}

impl GitHubRouteConfig {
    /// Resolves secrets, reads the App key, checks functions.
    pub async fn build(
        self,
        name: &str,
        ctx: &BuildContext<'_>,
    ) -> Result<GitHubRoute, ConfigError> {
        let route = format!("channels.github.{name}");
        let core = ctx.core::<GitHubRoute>(name, self.max_body, self.max_inflight)?;
        if self.webhook_secrets.is_empty() {
            return Err(invalid(
                &route,
                "webhook_secrets needs at least one secret name",
            ));
        }
        if self.events.is_empty() {
            return Err(invalid(&route, "events routes no event to a function"));
        }
        let mut events = BTreeMap::new();
        for (event, function) in self.events {
            let key = event.trim();
            if key.is_empty() || key.split('.').count() > 2 {
                return Err(invalid(
                    &route,
                    format!("event {event:?}: use EVENT, EVENT.ACTION or EVENT.*"),
                ));
            }
            events.insert(
                key.to_owned(),
                ctx.function(&format!("{route}.events"), &function)?,
            );
        }
        let api_setting = match (&self.app, &self.api) {
            (Some(AppConfig { api: Some(_), .. }), Some(_)) => {
                return Err(invalid(
                    &route,
                    "give api either at the route or in app, not both",
                ))
            }
            (Some(AppConfig { api: Some(api), .. }), None) | (_, Some(api)) => Some(api.as_str()),
            _ => None,
        };
        let api = api_url(&route, api_setting, DEFAULT_API)?;
        let auth = match (self.app, self.token) {
            (Some(_), Some(_)) => {
                return Err(invalid(&route, "give either app or token, not both"));
            }
            (Some(app), None) => {
                let pem = ctx.secret(&route, &app.private_key).await?;
                let credentials = AppCredentials::new(app.id, &pem).map_err(|e| {
                    invalid(
                        &route,
                        format!(
                            "secret {:?} is not an RSA private key in PEM: {e}",
                            app.private_key
                        ),
                    )
                })?;
                ApiAuth::App(credentials)
            }
            (None, Some(token)) => {
                let value = ctx.secret(&route, &token).await?;
                let value = String::from_utf8(value)
                    .map_err(|_| invalid(&route, format!("secret {token:?} is not text")))?;
                ApiAuth::Token(value.trim().to_owned())
            }
            (None, None) => ApiAuth::None,
        };
        if self.reply != ReplyKind::None && matches!(auth, ApiAuth::None) {
            return Err(invalid(
                &route,
                "reply needs GitHub credentials: add app (id, private_key) or token",
            ));
        }
        Ok(GitHubRoute {
            webhook_secrets: ctx.secrets(&route, &self.webhook_secrets).await?,
            events,
            reply: self.reply,
            auth,
            api,
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

impl GitHubRoute {
    /// The function for `event` with `action`: `event.action`, then `event.*`, then `event`.
    pub fn function_for(&self, event: &str, action: Option<&str>) -> Option<&FunctionName> {
        let exact = action.and_then(|a| self.events.get(&format!("{event}.{a}")));
        exact
            .or_else(|| self.events.get(&format!("{event}.*")))
            .or_else(|| self.events.get(event))
    }
}
