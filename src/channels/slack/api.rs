//! Slack Web API calls for replies: a message payload and a bot token come in; a
//! `chat.postMessage` request goes out (<https://api.slack.com/methods/chat.postMessage>).
//! Slack answers most errors with HTTP 200 and `{"ok": false, "error": ...}`; those are
//! refusals, not worth a retry. Rate limits (429) and server errors are retried.

use serde_json::Value;
use tokio::time::{Duration, Instant};

use crate::channels::common::delivery::SendError;
use crate::channels::common::Outbound;

/// The public Slack Web API.
pub const DEFAULT_API: &str = "https://slack.com/api";
/// How long a `chat.postMessage` is retried.
pub const POST_DEADLINE: Duration = Duration::from_secs(120);

/// Why a message was not posted.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    #[error(transparent)]
    Send(#[from] SendError),
    /// Slack answered `ok: false` (`channel_not_found`, `not_in_channel`, `invalid_auth`, ...).
    #[error("chat.postMessage refused: {0}")]
    Refused(String),
    #[error("unexpected answer from chat.postMessage: {0}")]
    Answer(String),
}

/// Posts `message` (which names its `channel`) as the bot whose token is `token`.
pub async fn post_message(
    outbound: &Outbound,
    api: &str,
    token: &str,
    message: &Value,
) -> Result<(), PostError> {
    let url = format!("{api}/chat.postMessage");
    let response = outbound
        .send(
            "slack chat.postMessage",
            Instant::now() + POST_DEADLINE,
            |client| client.post(&url).bearer_auth(token).json(message),
        )
        .await?;
    let answer: Value = response
        .json()
        .await
        .map_err(|e| PostError::Answer(e.to_string()))?;
    if answer["ok"].as_bool() == Some(true) {
        Ok(())
    } else {
        let error = answer["error"].as_str().unwrap_or("no error given");
        Err(PostError::Refused(error.chars().take(200).collect()))
    }
}
