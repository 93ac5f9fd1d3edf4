//! Where a queued channel call's result goes: a [`ReplyTo`] comes in with the call (stored
//! in its queue row as JSON, so it survives a restart) and, once the call has finished,
//! the result goes out through the channel that wrote it ([`Channels`] implements the
//! queue's [`Replies`]). A descriptor names routes and ids, never a secret: tokens are
//! looked up in the route when the reply is delivered.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::Channels;
use crate::channels::github::GitHubReply;
use crate::channels::slack::SlackReply;
use crate::dispatch::queue::{CallResult, Replies};

/// Where a channel call's result goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplyTo {
    Slack(SlackReply),
    #[serde(rename = "github")]
    GitHub(GitHubReply),
}

#[async_trait]
impl Replies for Channels {
    async fn deliver(&self, reply: &str, result: &CallResult) -> Result<(), String> {
        let reply: ReplyTo =
            serde_json::from_str(reply).map_err(|e| format!("unreadable reply descriptor: {e}"))?;
        match reply {
            ReplyTo::Slack(reply) => crate::channels::slack::deliver(self, &reply, result).await,
            ReplyTo::GitHub(reply) => crate::channels::github::deliver(self, &reply, result).await,
        }
    }
}
