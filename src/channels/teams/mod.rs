//! Microsoft Teams outgoing webhooks: `POST /teams/{route}` comes in when someone @mentions
//! the webhook in a channel; it is checked by its HMAC ([`verify`]), refused when its
//! activity is stale or was seen before, routed by the first word after the mention, queued
//! durably, and the function's output goes out as the message Teams shows in reply. Teams
//! waits 5 s and offers no way to answer later: a slower function gets the route's working
//! message as the answer and finishes from the queue with its output kept in its activation.

#[cfg(feature = "fuzzing")]
pub mod fuzz;
pub mod verify;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::common::route::Outcome;
use super::common::{
    ack_budget, contract, delivery::json_invocation, invalid, BuildContext, ByteSize, ChannelCall,
    ChannelError, ChannelRoute, ConfigError, Delivery, Handled, RouteCore,
};
use crate::dispatch::queue::{CallResult, Submitted};
use crate::function::FunctionName;
use crate::verify::{check_window, TOLERANCE_SECS};
use crate::channels::common::NoReply;
use crate::verify::{Offline, Report};

/// How long a function may take before the working message answers (Teams waits 5 s).
pub const DEFAULT_ACK_BUDGET: Duration = Duration::from_millis(4000);
/// The longest `ack_budget` a route may set: Teams gives up after 5 s.
pub const MAX_ACK_BUDGET: Duration = Duration::from_millis(4500);
/// The answer while a slow function runs.
pub const DEFAULT_WORKING_MESSAGE: &str =
    "Still working on it; this reply cannot wait any longer, so look for the result in Hark.";

/// One outgoing webhook, as written under `channels.teams.NAME` in `hark.yml`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct TeamsRouteConfig {
    /// Names of secrets holding the security token Teams showed when the outgoing webhook
    /// was created (base64, as shown); two while one replaces the other.
    pub security_tokens: Vec<String>,
    /// First word after the mention (`deploy`) → function. Matched without case.
    #[serde(default)]
    pub commands: BTreeMap<String, String>,
    /// The function for messages whose first word is no command.
    #[serde(default)]
    pub function: Option<String>,
    /// How long a function may take before the working message answers (default 4s, at
    /// most 4.5s: Teams waits 5 s).
    #[serde(default)]
    pub ack_budget: Option<String>,
    /// The answer when the function is slower than `ack_budget`.
    #[serde(default)]
    pub working_message: Option<String>,
    #[serde(default)]
    pub max_body: Option<ByteSize>,
    #[serde(default)]
    pub max_inflight: Option<usize>,
}

/// A checked Teams route.
pub struct TeamsRoute {
    pub core: RouteCore,
    keys: Vec<Vec<u8>>,
    commands: BTreeMap<String, FunctionName>,
    function: Option<FunctionName>,
    ack_budget: Duration,
    working_message: String,
}

impl TeamsRouteConfig {
    /// Resolves and decodes the security tokens, checks the functions.
    pub async fn build(
        self,
        name: &str,
        ctx: &BuildContext<'_>,
    ) -> Result<TeamsRoute, ConfigError> {
        let route = format!("channels.teams.{name}");
        let core = ctx.core::<TeamsRoute>(name, self.max_body, self.max_inflight)?;
        if self.security_tokens.is_empty() {
            return Err(invalid(
                &route,
                "security_tokens needs at least one secret name",
            ));
        }
        if self.commands.is_empty() && self.function.is_none() {
            return Err(invalid(&route, "set function, commands or both"));
        }
        let mut keys = Vec::new();
        for (secret, value) in self
            .security_tokens
            .iter()
            .zip(ctx.secrets(&route, &self.security_tokens).await?)
        {
            keys.push(
                verify::key(&value).map_err(|problem| {
                    invalid(&route, format!("secret {secret:?} is {problem}"))
                })?,
            );
        }
        let commands = self
            .commands
            .into_iter()
            .map(|(word, f)| {
                let function = ctx.function(&format!("{route}.commands"), &f)?;
                Ok((word.to_lowercase(), function))
            })
            .collect::<Result<_, ConfigError>>()?;
        let function = match &self.function {
            Some(f) => Some(ctx.function(&route, f)?),
            None => None,
        };
        let ack_budget = ack_budget(
            &route,
            self.ack_budget.as_deref(),
            DEFAULT_ACK_BUDGET,
            MAX_ACK_BUDGET,
            "Teams stops waiting after 5 s",
        )?;
        Ok(TeamsRoute {
            core,
            keys,
            commands,
            function,
            ack_budget,
            working_message: self
                .working_message
                .unwrap_or_else(|| DEFAULT_WORKING_MESSAGE.to_owned()),
        })
    }
}

contract::endpoint! {
    #[utoipa::path(post, path = "/teams/{route}", operation_id = "teams_delivery", tag = "channels", description = "Microsoft Teams outgoing webhook for the `teams` route named `route` in hark.yml, signed with `Authorization: HMAC`; the answer is the message Teams shows.", params(("route" = String, Path, description = "Route name in hark.yml")), request_body(content = Object, description = "The Bot Framework activity Teams sends", content_type = "application/json"), responses((status = 200, description = "The reply message", body = Object), (status = 400, description = "Malformed header or body", body = crate::channels::api::openapi::ErrorBody), (status = 401, description = "Signature missing or wrong, or a stale activity", body = crate::channels::api::openapi::ErrorBody), (status = 404, description = "No route of that name in hark.yml", body = crate::channels::api::openapi::ErrorBody), (status = 413, description = "Body over the route's limit", body = crate::channels::api::openapi::ErrorBody), (status = 429, description = "The route is at its max_inflight", body = crate::channels::api::openapi::ErrorBody)))]
    TeamsRoute
}

/// The fields of a Teams activity Hark reads.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Activity {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    pub(crate) timestamp: Option<String>,
    /// Plain once read ([`read_activity`]).
    #[serde(default)]
    pub(crate) text: String,
    #[serde(default)]
    from: Value,
    #[serde(default)]
    conversation: Value,
}

/// A verified body read as an activity, refused when its timestamp is outside the window
/// around `now`; its text made plain ([`plain_text`]).
///
/// Teams signs no timestamp header; the activity's own timestamp is signed with the body,
/// so a captured request replayed later is refused as stale, and within the window by its
/// id. An activity without one can only come from a holder of the key.
pub(crate) fn read_activity(body: &[u8], now: i64) -> Result<Activity, ChannelError> {
    let mut activity: Activity = serde_json::from_slice(body)
        .map_err(|e| ChannelError::Malformed(format!("JSON body: {e}")))?;
    if let Some(timestamp) = &activity.timestamp {
        let at = chrono::DateTime::parse_from_rfc3339(timestamp).map_err(|_| {
            ChannelError::Malformed(format!("activity timestamp {timestamp:?} is not RFC 3339"))
        })?;
        check_window(at.timestamp(), now, TOLERANCE_SECS)?;
    }
    activity.text = plain_text(&activity.text);
    Ok(activity)
}

impl ChannelRoute for TeamsRoute {
    fn explain(report: &mut Report, r: &Offline<'_>) {
        verify::explain_into(report, r.secret, r.headers, r.body);
    }

    type Reply = NoReply;

    async fn serve(route: &Arc<Self>, d: Delivery<'_>) -> Handled {
        let (state, call_id, parts, body, delivery) = d.into_parts();
        let headers = parts.headers;
        verify::verify(&route.keys, &headers, &body)?;
        let activity = read_activity(&body, state.clock.now().timestamp())?;
        // Ids are unique within a conversation.
        *delivery = activity.id.as_ref().map(|id| {
            let conversation = activity.conversation["id"].as_str().unwrap_or_default();
            format!("{conversation}/{id}")
        });
        let text = activity.text;
        let (command, rest) = match text.split_once(char::is_whitespace) {
            Some((first, rest)) => (first.to_lowercase(), rest.trim()),
            None => (text.to_lowercase(), ""),
        };
        let (function, command, args) = match route.commands.get(&command) {
            Some(function) => (function, Some(command), rest),
            None => match &route.function {
                Some(function) => (function, None, text.as_str()),
                None => {
                    let known: Vec<&str> = route.commands.keys().map(String::as_str).collect();
                    let message = format!("I know: {}.", known.join(", "));
                    return Ok((Outcome::Accepted, answer(&message)));
                }
            },
        };
        let input = json!({
            "type": "message",
            "command": command,
            "text": args,
            "user": activity.from,
            "conversation": activity.conversation,
            "activity": serde_json::from_slice::<Value>(&body).unwrap_or_default(),
        });
        let call = json_invocation(call_id, &route.core, delivery.as_deref(), &input);
        let submitted = ChannelCall {
            route: &route.core,
            function,
            call,
            reply: None,
            dedupe: delivery.as_deref(),
            wait: Some(route.ack_budget),
            answers: true,
            no_retries: true,
        }
        .submit(&state.queue)
        .await?;
        match submitted {
            Submitted::Finished(result) => {
                Ok((Outcome::Accepted, Json(message(&result)).into_response()))
            }
            Submitted::Queued => Ok((Outcome::Accepted, answer(&route.working_message))),
            Submitted::Duplicate => {
                let id = delivery.as_deref().unwrap_or_default();
                Ok((
                    Outcome::Duplicate,
                    Json(json!({ "duplicate": id })).into_response(),
                ))
            }
        }
    }
}

/// A message answer Teams shows.
fn answer(text: &str) -> Response {
    Json(json!({ "type": "message", "text": text })).into_response()
}

/// The message for a function's result: an apology for a failure, a message object the
/// function wrote itself (with `text` or `attachments`), or its output as text.
fn message(result: &CallResult) -> Value {
    if let Some(apology) = super::common::reply::apology(result) {
        return json!({ "type": "message", "text": apology });
    }
    let body = String::from_utf8_lossy(&result.body);
    let body = body.trim();
    if let Ok(Value::Object(mut object)) = serde_json::from_str::<Value>(body) {
        if object.contains_key("text") || object.contains_key("attachments") {
            object
                .entry("type")
                .or_insert_with(|| Value::from("message"));
            return Value::Object(object);
        }
    }
    json!({ "type": "message", "text": body })
}

/// A message's text without its `<at>…</at>` mentions and markup, entities decoded and
/// spaces collapsed: `<at>Hark</at> deploy&nbsp;web` → `deploy web`.
pub(crate) fn plain_text(html: &str) -> String {
    let mut text = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(start) = rest.find('<') {
        text.push_str(&rest[..start]);
        let tag = &rest[start..];
        // Bytes, not a `str` slice: the third byte may be inside a character.
        let mention = tag.len() > 3 && tag.as_bytes()[..3].eq_ignore_ascii_case(b"<at");
        let skip = match (mention, tag.find('>'), tag.find("</at>")) {
            (true, Some(open), Some(close)) if open < close => {
                // The mention of the webhook that starts the message goes; a mention of
                // someone later on is kept as their name.
                let leading = text.replace("&nbsp;", " ").trim().is_empty();
                if !leading {
                    text.push(' ');
                    text.push_str(&tag[open + 1..close]);
                }
                Some(close + "</at>".len())
            }
            _ => None,
        };
        let skip = skip.or_else(|| tag.find('>').map(|end| end + 1));
        match skip {
            Some(skip) => {
                text.push(' ');
                rest = &tag[skip..];
            }
            None => {
                rest = tag;
                break;
            }
        }
    }
    text.push_str(rest);
    let text = text
        .replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn mentions_and_markup_are_taken_out_of_the_text() {
        assert_eq!(plain_text("<at>Hark</at> deploy&nbsp;web"), "deploy web");
        assert_eq!(
            plain_text("<p><at>Hark Bot</at>&nbsp;hello <b>there</b></p>\n"),
            "hello there"
        );
        assert_eq!(plain_text("a &lt;b&gt; &amp; c"), "a <b> & c");
        assert_eq!(plain_text("unclosed <at"), "unclosed <at");
        assert_eq!(plain_text("<€ x"), "<€ x");
        assert_eq!(
            plain_text("<at>Hark</at> assign <at>Ada Lovelace</at> the bug"),
            "assign Ada Lovelace the bug"
        );
        assert_eq!(plain_text("a <€> b"), "a b");
    }

    fn result(status: u16, body: &str) -> CallResult {
        CallResult {
            call_id: "c".into(),
            function: "ask".into(),
            status,
            error: None,
            body: Bytes::from(body.to_owned()),
            duration_ms: 1.0,
        }
    }

    #[test]
    fn results_become_messages() {
        assert_eq!(message(&result(200, "done\n"))["text"], "done");
        let card = message(&result(200, r#"{"attachments":[{"contentType":"x"}]}"#));
        assert_eq!(card["type"], "message");
        assert_eq!(card["attachments"][0]["contentType"], "x");
        assert_eq!(
            message(&result(500, "trace"))["text"],
            "Sorry, `ask` failed (status 500)."
        );
    }
}
