//! What the channels share: the contract each implements ([`contract`]); the `channels:` section of
//! `hark.yml` comes in and a checked routing table ([`Channels`]) goes out, built once at
//! start with every secret resolved and every function checked; per request, the route's
//! body limit, concurrency limit, counters and refusal answers ([`route`]); calls queued
//! durably with delivery-id dedupe and an acknowledgement budget, and outbound HTTP with
//! retries ([`delivery`]); where results go once their calls finish ([`reply`]).

pub mod contract;
pub mod delivery;
pub mod reply;
pub mod route;
pub mod secrets;

use std::time::Duration;

use serde::Deserialize;

use crate::function::{parse_duration_within, FunctionName, MAX_TIMEOUT};
use crate::registry::Registry;
use crate::store::StoreError;

pub use super::{Channels, ChannelsConfig};
pub use contract::{ChannelRoute, Delivery, Handled, Registered};
pub use delivery::{queued_call, ChannelCall, Outbound};
pub use reply::{ChannelReplies, NoReply, ReplyTo};
pub use route::{ChannelError, RouteCore};
pub use secrets::Secrets;

/// Default largest body a channel route accepts (413 above).
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;
/// Default number of deliveries of one route whose functions run at once (429 above).
pub const DEFAULT_MAX_INFLIGHT: usize = 16;

/// A byte count written as a number or with a `KiB`/`MiB` suffix.
#[derive(Debug, Clone, Copy)]
pub struct ByteSize(pub usize);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(usize),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(ByteSize(n)),
            Raw::Text(t) => parse_size(&t).map(ByteSize).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "invalid size {t:?}: use bytes, or a number with KiB or MiB"
                ))
            }),
        }
    }
}

impl schemars::JsonSchema for ByteSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteSize".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Bytes, or a number with B, K, KB, KiB, M, MB or MiB",
            "anyOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": "^\\s*[0-9]+\\s*(B|K|KB|KiB|M|MB|MiB)?\\s*$" }
            ]
        })
    }
}

fn parse_size(text: &str) -> Option<usize> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, ""),
    };
    let n: usize = number.parse().ok()?;
    let unit = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "KB" => 1024,
        "MiB" | "M" | "MB" => 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(unit)
}

/// Why the `channels:` section cannot be served. Each names the route as
/// `channels.KIND.NAME` so the operator can find it in `hark.yml`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "{route}: secret {secret:?} is neither in the secret store nor in the environment \
         variable {env}; create it with `hark secret create {secret}` or set {env}"
    )]
    MissingSecret {
        route: String,
        secret: String,
        env: String,
    },
    #[error(
        "{route}: function {function:?} is not deployed; add it to the stack file's functions"
    )]
    MissingFunction { route: String, function: String },
    #[error("{route}: {message}")]
    Invalid { route: String, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What building the routing table needs.
pub struct BuildContext<'a> {
    pub registry: &'a Registry,
    pub secrets: Secrets,
    /// The names of the loaded skills, for the voice channels that speak them.
    pub skills: Vec<String>,
}

impl BuildContext<'_> {
    /// A function a route names, checked to be deployed.
    pub fn function(&self, route: &str, name: &str) -> Result<FunctionName, ConfigError> {
        let missing = || ConfigError::MissingFunction {
            route: route.to_owned(),
            function: name.to_owned(),
        };
        let parsed: FunctionName = name.parse().map_err(|_| missing())?;
        self.registry.deployed(&parsed).ok_or_else(missing)?;
        Ok(parsed)
    }

    /// The values of the secrets `names`, in order.
    pub async fn secrets(
        &self,
        route: &str,
        names: &[String],
    ) -> Result<Vec<Vec<u8>>, ConfigError> {
        let mut values = Vec::with_capacity(names.len());
        for name in names {
            values.push(self.secret(route, name).await?);
        }
        Ok(values)
    }

    /// The value of secret `name`.
    pub async fn secret(&self, route: &str, name: &str) -> Result<Vec<u8>, ConfigError> {
        self.secrets
            .resolve(name)
            .await?
            .ok_or_else(|| ConfigError::MissingSecret {
                route: route.to_owned(),
                secret: name.to_owned(),
                env: secrets::env_name(name),
            })
    }

    /// The checked common settings of route `name` of channel `R`.
    pub fn core<R: ChannelRoute>(
        &self,
        name: &str,
        max_body: Option<ByteSize>,
        max_inflight: Option<usize>,
    ) -> Result<RouteCore, ConfigError> {
        if name.parse::<FunctionName>().is_err() {
            return Err(invalid(
                &format!("channels.{}.{name}", R::NAME),
                "route names use 1 to 63 characters of a-z, 0-9 and '-'",
            ));
        }
        let max_inflight = max_inflight.unwrap_or(DEFAULT_MAX_INFLIGHT);
        if max_inflight == 0 {
            return Err(invalid(
                &format!("channels.{}.{name}", R::NAME),
                "max_inflight must be at least 1",
            ));
        }
        Ok(RouteCore::new(
            R::NAME,
            R::TRIGGER,
            name,
            max_body.map_or(DEFAULT_MAX_BODY, |b| b.0),
            max_inflight,
        ))
    }
}

/// A configuration error about `route`.
pub fn invalid(route: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        route: route.to_owned(),
        message: message.into(),
    }
}

/// Reads an optional duration setting such as `ack_budget: 2.5s`.
pub fn duration_setting(
    route: &str,
    key: &str,
    value: Option<&str>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(text) => parse_duration_within(text, MAX_TIMEOUT)
            .map_err(|e| invalid(route, format!("{key}: {text:?} {e}"))),
    }
}

/// Reads a route's `ack_budget`: `default` when unset, and at most `max`; `why` says how
/// long the platform waits.
pub fn ack_budget(
    route: &str,
    value: Option<&str>,
    default: Duration,
    max: Duration,
    why: &str,
) -> Result<Duration, ConfigError> {
    let budget = duration_setting(route, "ack_budget", value, default)?;
    if budget > max {
        return Err(invalid(
            route,
            format!("ack_budget is at most {}s: {why}", max.as_secs_f64()),
        ));
    }
    Ok(budget)
}

/// Reads a route's `api` base URL: `default` when unset, without a trailing `/`, and
/// http(s) only.
pub fn api_url(route: &str, value: Option<&str>, default: &str) -> Result<String, ConfigError> {
    let api = value.unwrap_or(default).trim_end_matches('/').to_owned();
    if !(api.starts_with("https://") || api.starts_with("http://")) {
        return Err(invalid(route, format!("api {api:?} is not an http(s) URL")));
    }
    Ok(api)
}

/// Declares the webhook channels, one line each (`name: Config => Route, handlers`): each
/// channel's module (`pub mod name;`, the folder `channels/name/`), and from that list the
/// `channels:` section of `hark.yml` ([`ChannelsConfig`]), the routing
/// table ([`Channels`]) that checks and builds it, and the routes of the HTTP server.
/// Each `Config` has `async fn build(self, name, &BuildContext) -> Result<Route, _>`; each
/// `Route` has a `core: RouteCore` field and implements [`ChannelRoute`] (and, for the
/// tests, `fuzzing::ChannelTarget`); the line implements [`contract::Registered`] for it.
/// The first handler is the channel's [`contract::endpoint`]; a channel may name more
/// (Telegram's `set-webhook`).
macro_rules! webhook_channels {
    ($( $(#[$doc:meta])* $field:ident: $config:ty => $route:ty, $( $($handler:ident)::+ ),+; )*) => {
        $( pub mod $field; )*

        /// The `channels:` section of `hark.yml`, as written.
        #[derive(Debug, Default, serde::Deserialize, schemars::JsonSchema)]
        #[schemars(deny_unknown_fields)]
        pub struct ChannelsConfig {
            $( $(#[$doc])* #[serde(default)] pub $field: std::collections::BTreeMap<String, $config>, )*
        }

        impl ChannelsConfig {
            pub fn is_empty(&self) -> bool {
                true $( && self.$field.is_empty() )*
            }
        }

        /// The routing table: every configured route, checked and ready, and what the
        /// channels share at run time.
        pub struct Channels {
            $( pub $field: std::collections::BTreeMap<String, std::sync::Arc<$route>>, )*
            pub outbound: common::Outbound,
        }

        impl Channels {
            /// No routes: every channel path answers 404.
            pub fn empty() -> Channels {
                Channels {
                    $( $field: std::collections::BTreeMap::new(), )*
                    outbound: common::Outbound::new(),
                }
            }

            /// Checks every route of `config` and builds it: secrets resolved (see
            /// [`common::Secrets`]), functions checked to be deployed. The first problem
            /// is the error.
            pub async fn build(
                config: ChannelsConfig,
                ctx: &common::BuildContext<'_>,
            ) -> Result<Channels, common::ConfigError> {
                let mut channels = Channels::empty();
                $(
                    for (name, route) in config.$field {
                        let built = route.build(&name, ctx).await?;
                        channels.$field.insert(name, std::sync::Arc::new(built));
                    }
                )*
                Ok(channels)
            }

            /// What each webhook channel's calls are recorded as.
            pub const TRIGGERS: &'static [crate::dispatch::Trigger] =
                &[$( <$route as common::ChannelRoute>::TRIGGER, )*];

            /// Delivers a late reply through the webhook channel that wrote it; `None`
            /// when no webhook channel has that name.
            pub async fn deliver(
                replies: &common::ChannelReplies,
                reply: common::ReplyTo,
                result: &crate::dispatch::queue::CallResult,
            ) -> Option<Result<(), String>> {
                $(
                    if reply.channel() == <$route as common::Registered>::NAME {
                        return Some(common::reply::deliver_to::<$route>(replies, reply, result).await);
                    }
                )*
                None
            }

            /// The `--kind`s of `hark webhook verify` the webhook channels check.
            pub const VERIFY_KINDS: &'static [&'static str] =
                &[$( <$route as common::ChannelRoute>::VERIFY_KIND, )*];

            /// Explains `request` by the check of the channel whose kind is `kind`;
            /// `false` when no channel has that kind.
            pub fn explain(
                kind: &str,
                report: &mut crate::verify::Report,
                request: &crate::verify::Offline<'_>,
            ) -> bool {
                $(
                    if kind == <$route as common::ChannelRoute>::VERIFY_KIND {
                        <$route as common::ChannelRoute>::explain(report, request);
                        return true;
                    }
                )*
                false
            }

            /// Each webhook channel's fuzz target.
            #[cfg(feature = "fuzzing")]
            pub const FUZZ_TARGETS: &'static [(&'static str, crate::fuzzing::Target)] = &[$(
                (
                    <$route as crate::fuzzing::ChannelTarget>::TARGET,
                    <$route as crate::fuzzing::ChannelTarget>::run,
                ),
            )*];

            /// Every route's common part, for `GET /system/channels`.
            pub fn cores(&self) -> Vec<&common::RouteCore> {
                let mut cores = Vec::new();
                $( cores.extend(self.$field.values().map(|r| &r.core)); )*
                cores
            }
        }

        $(
            impl common::contract::Registered for $route {
                const NAME: &'static str = stringify!($field);

                fn routes(state: &crate::server::AppState) -> &std::collections::BTreeMap<String, std::sync::Arc<Self>> {
                    &state.channels.$field
                }

                fn core(&self) -> &common::RouteCore {
                    &self.core
                }
            }
        )*

        /// The webhook channels' routes, and `GET /system/channels`, with their descriptions.
        pub fn routes() -> utoipa_axum::router::OpenApiRouter<std::sync::Arc<crate::server::AppState>> {
            utoipa_axum::router::OpenApiRouter::new()
                $( $( .routes(utoipa_axum::routes!($($handler)::+)) )+ )*
                .routes(utoipa_axum::routes!(list))
        }
    };
}
pub(crate) use webhook_channels;

/// The answer for a route name that is not configured.
pub fn unknown_route(channel: &'static str, name: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    let e = ChannelError::UnknownRoute {
        channel,
        name: name.chars().take(80).collect(),
    };
    tracing::info!(
        channel,
        reason = e.reason(),
        "delivery refused: no such route"
    );
    crate::telemetry::meters::channel_request(
        channel,
        crate::telemetry::meters::ChannelOutcome::Refused,
        e.reason(),
    );
    e.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("512KiB"), Some(512 * 1024));
        assert_eq!(parse_size("2 MiB"), Some(2 * 1024 * 1024));
        assert_eq!(parse_size("2GiB"), None);
        assert_eq!(parse_size("lots"), None);
    }
}
