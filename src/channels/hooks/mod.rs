//! Generic webhooks: `POST /hooks/{name}` from any service comes in, checked by the Standard
//! Webhooks signature (<https://www.standardwebhooks.com/>), by an adnanh/webhook-style
//! trigger rule, or explicitly by nothing (`public: true`); the raw request goes to one
//! function, and its answer goes out as the HTTP response (or 202 at once with `async: true`).

#[cfg(feature = "fuzzing")]
pub mod fuzz;
pub(crate) mod handler;
pub mod verify;

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;

use super::common::{invalid, BuildContext, ByteSize, ConfigError, RouteCore};
use crate::function::FunctionName;
use crate::verify::rules::Rule;
pub use handler::handle;

/// One hook, as written under `channels.hooks.NAME`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct HookRouteConfig {
    /// The function that gets the request.
    pub function: String,
    /// Names of Standard Webhooks secrets (`whsec_...` values); two while rotating.
    #[serde(default)]
    pub standard_webhooks_secrets: Vec<String>,
    /// A trigger rule in adnanh/webhook's shape. In `payload-hmac-*` matches, `secret` is
    /// the *name* of a secret, not its value.
    #[serde(default, alias = "trigger-rule")]
    pub trigger_rule: Option<Value>,
    /// Must be `true` for a hook with neither secrets nor a rule: anyone may call it.
    #[serde(default)]
    pub public: bool,
    /// Answer 202 at once and run the function in the background.
    #[serde(default, rename = "async")]
    pub run_async: bool,
    #[serde(default)]
    pub max_body: Option<ByteSize>,
    #[serde(default)]
    pub max_inflight: Option<usize>,
}

/// A checked hook.
pub struct HookRoute {
    pub core: RouteCore,
    function: FunctionName,
    standard_secrets: Vec<Vec<u8>>,
    rule: Option<Rule>,
    run_async: bool,
}

impl HookRouteConfig {
    /// Resolves secrets (also those a rule names), compiles the rule, checks the function.
    pub async fn build(self, name: &str, ctx: &BuildContext<'_>) -> Result<HookRoute, ConfigError> {
        let route = format!("channels.hooks.{name}");
        let core = ctx.core::<HookRoute>(name, self.max_body, self.max_inflight)?;
        let checked = !self.standard_webhooks_secrets.is_empty() || self.trigger_rule.is_some();
        if checked && self.public {
            return Err(invalid(
                &route,
                "public: true cannot be combined with secrets or a trigger rule",
            ));
        }
        if !checked && !self.public {
            return Err(invalid(
                &route,
                "the hook has no standard_webhooks_secrets and no trigger_rule; \
                 anyone could call it. Add one, or set public: true to mean it",
            ));
        }
        let rule = match self.trigger_rule {
            None => None,
            Some(mut raw) => {
                resolve_rule_secrets(&route, &mut raw, ctx).await?;
                Some(
                    serde_json::from_value::<Rule>(raw)
                        .map_err(|e| invalid(&route, format!("trigger_rule: {e}")))?,
                )
            }
        };
        Ok(HookRoute {
            function: ctx.function(&route, &self.function)?,
            standard_secrets: ctx.secrets(&route, &self.standard_webhooks_secrets).await?,
            rule,
            run_async: self.run_async,
            core,
        })
    }
}

/// Replaces each `payload-hmac-*` match's `secret` (a secret name) with the secret's value.
async fn resolve_rule_secrets(
    route: &str,
    rule: &mut Value,
    ctx: &BuildContext<'_>,
) -> Result<(), ConfigError> {
    let mut names = Vec::new();
    visit_secrets(rule, &mut |name| {
        names.push(name.clone());
    });
    let mut values = HashMap::new();
    for name in names {
        let value = ctx.secret(route, &name).await?;
        let text = String::from_utf8(value).map_err(|_| {
            invalid(
                route,
                format!("secret {name:?} used by trigger_rule is not text"),
            )
        })?;
        values.insert(name, text);
    }
    visit_secrets(rule, &mut |slot| {
        if let Some(value) = values.get(slot.as_str()) {
            *slot = value.clone();
        }
    });
    Ok(())
}

/// Calls `f` on the `secret` string of every `payload-hmac-*` match in a rule tree.
fn visit_secrets(node: &mut Value, f: &mut dyn FnMut(&mut String)) {
    match node {
        Value::Object(map) => {
            let is_hmac = map
                .get("type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.starts_with("payload-hmac-") || t.starts_with("payload-hash-"));
            for (key, value) in map.iter_mut() {
                match value {
                    Value::String(secret) if is_hmac && key == "secret" => f(secret),
                    _ => visit_secrets(value, f),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| visit_secrets(v, f)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_secret_names_are_found_at_any_depth() {
        let mut rule = serde_json::json!({"and": [
            {"match": {"type": "payload-hmac-sha256", "secret": "hook-key",
                       "parameter": {"source": "header", "name": "x-sig"}}},
            {"not": {"match": {"type": "value", "value": "secret", "parameter": {"source": "payload", "name": "secret"}}}}
        ]});
        let mut seen = Vec::new();
        visit_secrets(&mut rule, &mut |s| {
            seen.push(s.clone());
            *s = "VALUE".into();
        });
        assert_eq!(seen, ["hook-key"]);
        assert_eq!(rule["and"][0]["match"]["secret"], "VALUE");
        // A `value` match's fields are left alone.
        assert_eq!(rule["and"][1]["not"]["match"]["value"], "secret");
    }
}
