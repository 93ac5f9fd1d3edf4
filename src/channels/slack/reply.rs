//! Slack messages from function results: a function's output comes in; a message payload
//! (<https://api.slack.com/reference/messaging/payload>) goes out. Plain text becomes
//! `{"response_type", "text"}`; a JSON object with `blocks`, `text` or `attachments` is Block
//! Kit and passes through (with the route's `response_type` added when it has none); a
//! failure becomes a short ephemeral apology, since Slack shows nothing for an HTTP error.
//!
//! A result that does not ride on the HTTP answer goes where its [`SlackReply`] says, once
//! its queued call has finished ([`deliver`]): to a `response_url` (slash commands,
//! interactivity) or, as the app's bot, to a channel with `chat.postMessage` (events).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use tokio::time::Instant;

use super::api;
use crate::channels::common::Channels;
use crate::dispatch::queue::CallResult;

/// Where a Slack call's result goes. Holds the route's name, never its token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "to", rename_all = "snake_case")]
pub enum SlackReply {
    /// POST the message to the request's `response_url` until it expires.
    ResponseUrl {
        app: String,
        url: String,
        response_type: ResponseType,
        /// Unix seconds after which Slack no longer accepts messages there.
        expires_at: i64,
    },
    /// `chat.postMessage` with the route's bot token, in `channel` (and thread).
    PostMessage {
        app: String,
        channel: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        thread_ts: Option<String>,
    },
}

/// Sends a finished call's result where `reply` says.
pub async fn deliver(
    channels: &Channels,
    reply: &SlackReply,
    result: &CallResult,
) -> Result<(), String> {
    match reply {
        SlackReply::ResponseUrl {
            app,
            url,
            response_type,
            expires_at,
        } => {
            let Some(message) = message(result, *response_type) else {
                return Ok(());
            };
            let left = expires_at - chrono::Utc::now().timestamp();
            if left <= 0 {
                return Err(format!("response_url of route {app:?} expired"));
            }
            let deadline = Instant::now() + std::time::Duration::from_secs(left as u64);
            // Checked when the request came in, and again now: the allow-list or the
            // host's DNS answer may have changed. The guarded client checks the address
            // it connects to once more.
            let outbound = &channels.outbound;
            // A name that does not resolve now is retried by `send`.
            match outbound.egress.check_url(url).await {
                Ok(_) | Err(crate::egress::EgressError::Unresolved { .. }) => {}
                Err(e) => {
                    tracing::error!(channel = "slack", route = %app, error = %e, "response_url refused");
                    return Err(format!("response_url refused: {e}"));
                }
            }
            outbound
                .send("slack response_url", deadline, |_| {
                    outbound.guarded.post(url.as_str()).json(&message)
                })
                .await
                .map_err(|e| e.to_string())?;
            tracing::info!(channel = "slack", route = %app, function = result.function, "posted result to response_url");
            Ok(())
        }
        SlackReply::PostMessage {
            app,
            channel,
            thread_ts,
        } => {
            let route = channels
                .slack
                .get(app)
                .ok_or_else(|| format!("no Slack route named {app:?} any more"))?;
            let Some(token) = &route.bot_token else {
                return Err(format!("route {app:?} has no bot_token any more"));
            };
            if !result.is_success() {
                tracing::warn!(channel = "slack", route = %app, function = result.function, status = result.status, "event function failed; nothing posted");
                return Ok(());
            }
            let Some(message) = post_message(result, channel, thread_ts.as_deref()) else {
                return Ok(());
            };
            api::post_message(&channels.outbound, &route.api, token, &message)
                .await
                .map_err(|e| e.to_string())?;
            tracing::info!(channel = "slack", route = %app, function = result.function, "posted result with chat.postMessage");
            Ok(())
        }
    }
}

/// The `chat.postMessage` body for a successful result: its message, in `channel` and
/// the thread `thread_ts` unless the function chose others.
pub fn post_message(result: &CallResult, channel: &str, thread_ts: Option<&str>) -> Option<Value> {
    let Value::Object(mut object) = message(result, ResponseType::InChannel)? else {
        return None;
    };
    object.remove("response_type");
    object
        .entry("channel")
        .or_insert_with(|| Value::from(channel));
    if let Some(ts) = thread_ts {
        object.entry("thread_ts").or_insert_with(|| Value::from(ts));
    }
    Some(Value::Object(object))
}

/// Who sees a command's result.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ResponseType {
    /// Only the user who ran the command.
    #[default]
    Ephemeral,
    /// Everyone in the channel.
    InChannel,
}

impl ResponseType {
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseType::Ephemeral => "ephemeral",
            ResponseType::InChannel => "in_channel",
        }
    }
}

/// A plain text message.
pub fn text(response_type: ResponseType, text: &str) -> Value {
    json!({ "response_type": response_type.as_str(), "text": text })
}

/// The message for a function's result, or `None` when it printed nothing (Slack then
/// shows nothing either).
pub fn message(result: &CallResult, response_type: ResponseType) -> Option<Value> {
    if let Some(apology) = crate::channels::common::reply::apology(result) {
        return Some(text(ResponseType::Ephemeral, &apology));
    }
    let body = String::from_utf8_lossy(&result.body);
    let body = body.trim();
    if body.is_empty() {
        return None;
    }
    if let Ok(Value::Object(mut object)) = serde_json::from_str::<Value>(body) {
        if ["blocks", "text", "attachments"]
            .iter()
            .any(|k| object.contains_key(*k))
        {
            object
                .entry("response_type")
                .or_insert_with(|| Value::from(response_type.as_str()));
            return Some(Value::Object(object));
        }
    }
    Some(text(response_type, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn result(status: u16, body: &str, error: Option<&str>) -> CallResult {
        CallResult {
            call_id: "c".into(),
            function: "standup".into(),
            status,
            error: error.map(str::to_owned),
            body: Bytes::from(body.to_owned()),
            duration_ms: 1.0,
        }
    }

    fn ok(body: &str) -> CallResult {
        result(200, body, None)
    }

    #[test]
    fn plain_text_becomes_a_message_of_the_route_type() {
        assert_eq!(
            message(&ok("All done\n"), ResponseType::InChannel),
            Some(json!({"response_type": "in_channel", "text": "All done"}))
        );
        assert_eq!(message(&ok("  \n"), ResponseType::Ephemeral), None);
        // JSON that is not a message is text too.
        assert_eq!(
            message(&ok("[1,2]"), ResponseType::Ephemeral),
            Some(json!({"response_type": "ephemeral", "text": "[1,2]"}))
        );
    }

    #[test]
    fn block_kit_passes_through() {
        let blocks = r#"{"blocks":[{"type":"section","text":{"type":"mrkdwn","text":"*hi*"}}]}"#;
        let got = message(&ok(blocks), ResponseType::InChannel).unwrap();
        assert_eq!(got["blocks"][0]["text"]["text"], "*hi*");
        assert_eq!(got["response_type"], "in_channel");
        let own = r#"{"text":"x","response_type":"ephemeral"}"#;
        let got = message(&ok(own), ResponseType::InChannel).unwrap();
        assert_eq!(got["response_type"], "ephemeral");
    }

    #[test]
    fn failures_become_ephemeral_apologies() {
        let failed = result(500, "stack trace with secrets", None);
        let got = message(&failed, ResponseType::InChannel).unwrap();
        assert_eq!(got["response_type"], "ephemeral");
        let text = got["text"].as_str().unwrap();
        assert!(text.contains("standup") && text.contains("500"), "{text}");
        assert!(!text.contains("secrets"));
        let timeout = result(504, "", Some("function standup did not answer within 1s"));
        let got = message(&timeout, ResponseType::InChannel).unwrap();
        assert!(got["text"].as_str().unwrap().contains("too long"));
        let gone = result(502, "", Some("unavailable"));
        let got = message(&gone, ResponseType::InChannel).unwrap();
        assert!(got["text"].as_str().unwrap().contains("could not run"));
    }

    #[test]
    fn posted_messages_name_the_channel_and_thread() {
        assert_eq!(
            post_message(&ok("hi\n"), "C1", Some("1.5")),
            Some(json!({"channel": "C1", "thread_ts": "1.5", "text": "hi"}))
        );
        let blocks = r#"{"blocks":[],"text":"x","channel":"C9"}"#;
        assert_eq!(
            post_message(&ok(blocks), "C1", None),
            Some(json!({"channel": "C9", "blocks": [], "text": "x"}))
        );
        assert_eq!(post_message(&ok(""), "C1", None), None);
    }

    #[test]
    fn replies_are_stored_without_secrets() {
        let reply = SlackReply::PostMessage {
            app: "acme".into(),
            channel: "C1".into(),
            thread_ts: None,
        };
        let text = serde_json::to_string(&reply).unwrap();
        assert_eq!(text, r#"{"to":"post_message","app":"acme","channel":"C1"}"#);
        assert_eq!(serde_json::from_str::<SlackReply>(&text).unwrap(), reply);
    }
}
