//! Slack messages from function results: a function's output comes in; a message payload
//! (<https://api.slack.com/reference/messaging/payload>) goes out. Plain text becomes
//! `{"response_type", "text"}`; a JSON object with `blocks`, `text` or `attachments` is Block
//! Kit and passes through (with the route's `response_type` added when it has none); a
//! failure becomes a short ephemeral apology, since Slack shows nothing for an HTTP error.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::function::FunctionName;
use crate::provider::{Output, ProviderError};

/// Who sees a command's result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
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
pub fn message(
    function: &FunctionName,
    result: &Result<Output, ProviderError>,
    response_type: ResponseType,
) -> Option<Value> {
    let output = match result {
        Ok(output) if output.status.is_success() => output,
        Ok(output) => {
            return Some(text(
                ResponseType::Ephemeral,
                &format!(
                    "Sorry, `{function}` failed (status {}).",
                    output.status.as_u16()
                ),
            ))
        }
        Err(ProviderError::Timeout { .. }) => {
            return Some(text(
                ResponseType::Ephemeral,
                &format!("Sorry, `{function}` took too long and was stopped."),
            ))
        }
        Err(ProviderError::Overloaded(_)) => {
            return Some(text(
                ResponseType::Ephemeral,
                &format!("Sorry, `{function}` is busy; try again in a moment."),
            ))
        }
        Err(_) => {
            return Some(text(
                ResponseType::Ephemeral,
                &format!("Sorry, `{function}` could not run."),
            ))
        }
    };
    let body = String::from_utf8_lossy(&output.body);
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
    use http::{HeaderMap, StatusCode};

    fn ok(body: &str) -> Result<Output, ProviderError> {
        Ok(Output {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_owned()),
            error: None,
        })
    }

    fn f() -> FunctionName {
        "standup".parse().unwrap()
    }

    #[test]
    fn plain_text_becomes_a_message_of_the_route_type() {
        assert_eq!(
            message(&f(), &ok("All done\n"), ResponseType::InChannel),
            Some(json!({"response_type": "in_channel", "text": "All done"}))
        );
        assert_eq!(message(&f(), &ok("  \n"), ResponseType::Ephemeral), None);
        // JSON that is not a message is text too.
        assert_eq!(
            message(&f(), &ok("[1,2]"), ResponseType::Ephemeral),
            Some(json!({"response_type": "ephemeral", "text": "[1,2]"}))
        );
    }

    #[test]
    fn block_kit_passes_through() {
        let blocks = r#"{"blocks":[{"type":"section","text":{"type":"mrkdwn","text":"*hi*"}}]}"#;
        let got = message(&f(), &ok(blocks), ResponseType::InChannel).unwrap();
        assert_eq!(got["blocks"][0]["text"]["text"], "*hi*");
        assert_eq!(got["response_type"], "in_channel");
        let own = r#"{"text":"x","response_type":"ephemeral"}"#;
        let got = message(&f(), &ok(own), ResponseType::InChannel).unwrap();
        assert_eq!(got["response_type"], "ephemeral");
    }

    #[test]
    fn failures_become_ephemeral_apologies() {
        let failed = Ok(Output {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            headers: HeaderMap::new(),
            body: Bytes::from_static(b"stack trace with secrets"),
            error: None,
        });
        let got = message(&f(), &failed, ResponseType::InChannel).unwrap();
        assert_eq!(got["response_type"], "ephemeral");
        let text = got["text"].as_str().unwrap();
        assert!(text.contains("standup") && text.contains("500"), "{text}");
        assert!(!text.contains("secrets"));
        let timeout = Err(ProviderError::Timeout {
            name: f(),
            limit: std::time::Duration::from_secs(1),
        });
        let got = message(&f(), &timeout, ResponseType::InChannel).unwrap();
        assert!(got["text"].as_str().unwrap().contains("too long"));
    }
}
