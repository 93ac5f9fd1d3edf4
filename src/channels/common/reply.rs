//! Where a queued channel call's result goes: a [`ReplyTo`] comes in with the call (stored
//! in its queue row as JSON, so it survives a restart) and, once the call has finished,
//! the result goes out through the channel that wrote it ([`ChannelReplies`] implements
//! the queue's [`Replies`] for every channel). A descriptor names routes and ids, never a
//! secret: tokens are looked up in the route when the reply is delivered.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::Channels;
use crate::channels::alexa::conversation::AlexaReply;
use crate::channels::alexa::AlexaChannel;
use crate::channels::discord::DiscordReply;
use crate::channels::github::GitHubReply;
use crate::channels::slack::SlackReply;
use crate::channels::telegram::TelegramReply;
use crate::dispatch::queue::{CallResult, Replies};
use crate::store::Store;

/// Where a channel call's result goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplyTo {
    Slack(SlackReply),
    #[serde(rename = "github")]
    GitHub(GitHubReply),
    Alexa(AlexaReply),
    Telegram(TelegramReply),
    Discord(DiscordReply),
}

/// What a chat channel says instead of a failed call's output, or `None` for a success.
pub fn apology(result: &CallResult) -> Option<String> {
    let function = &result.function;
    match result.status {
        200..=299 => None,
        504 => Some(format!(
            "Sorry, `{function}` took too long and was stopped."
        )),
        429 => Some(format!(
            "Sorry, `{function}` is busy; try again in a moment."
        )),
        502 | 404 if result.error.is_some() => Some(format!("Sorry, `{function}` could not run.")),
        status => Some(format!("Sorry, `{function}` failed (status {status}).")),
    }
}

/// The channels a gateway delivers replies through: the Slack, GitHub and hook routes,
/// and the Alexa skills (whose late answers wait in the store for the user's next turn).
pub struct ChannelReplies {
    pub channels: Arc<Channels>,
    pub alexa: Arc<AlexaChannel>,
    pub store: Store,
}

#[async_trait]
impl Replies for ChannelReplies {
    async fn deliver(&self, reply: &str, result: &CallResult) -> Result<(), String> {
        let reply: ReplyTo =
            serde_json::from_str(reply).map_err(|e| format!("unreadable reply descriptor: {e}"))?;
        match reply {
            ReplyTo::Slack(reply) => {
                crate::channels::slack::deliver(&self.channels, &reply, result).await
            }
            ReplyTo::GitHub(reply) => {
                crate::channels::github::deliver(&self.channels, &reply, result).await
            }
            ReplyTo::Discord(reply) => {
                crate::channels::discord::deliver(&self.channels, &reply, result).await
            }
            ReplyTo::Telegram(reply) => {
                crate::channels::telegram::deliver(&self.channels, &reply, result).await
            }
            ReplyTo::Alexa(reply) => {
                crate::channels::alexa::conversation::deliver(
                    &self.alexa,
                    &self.store,
                    &reply,
                    result,
                )
                .await
            }
        }
    }
}
