//! Where a queued channel call's result goes: a [`ReplyTo`] comes in with the call (stored
//! in its queue row as JSON, so it survives a restart) and, once the call has finished,
//! the result goes out through the channel that wrote it ([`ChannelReplies`] implements
//! the queue's [`Replies`] for every channel, by the channel's name). A descriptor names
//! routes and ids, and a platform's short-lived reply handle where it needs one, never a
//! route's own secret: bot tokens are looked up in the route when the reply is delivered.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::contract::ChannelRoute;
use super::Channels;
use crate::channels::alexa::AlexaChannel;
use crate::dispatch::queue::{CallResult, Replies};
use crate::store::Store;

/// Where a channel call's result goes: the channel's name and its own descriptor
/// ([`ChannelRoute::Reply`]), stored as `{"CHANNEL": descriptor}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplyTo {
    channel: String,
    descriptor: Value,
}

impl ReplyTo {
    /// `reply`, a descriptor of channel `R`. Descriptors are strings, numbers and JSON
    /// maps, which always serialize; were one not to, its delivery fails with a log line.
    pub fn new<R: ChannelRoute>(reply: &R::Reply) -> ReplyTo {
        let descriptor = serde_json::to_value(reply).unwrap_or_else(|e| {
            tracing::error!(channel = R::NAME, error = %e, "reply descriptor does not serialize");
            Value::Null
        });
        ReplyTo {
            channel: R::NAME.to_owned(),
            descriptor,
        }
    }

    /// The channel that wrote it.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The descriptor as channel `R` wrote it.
    pub fn descriptor<R: ChannelRoute>(self) -> Result<R::Reply, String> {
        serde_json::from_value(self.descriptor)
            .map_err(|e| format!("unreadable {} reply descriptor: {e}", R::NAME))
    }
}

impl Serialize for ReplyTo {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry(&self.channel, &self.descriptor)?;
        map.end()
    }
}

impl<'de> Deserialize<'de> for ReplyTo {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = serde_json::Map::<String, Value>::deserialize(d)?;
        let mut entries = map.into_iter();
        match (entries.next(), entries.next()) {
            (Some((channel, descriptor)), None) => Ok(ReplyTo {
                channel,
                descriptor,
            }),
            _ => Err(serde::de::Error::custom(
                "a reply descriptor names exactly one channel",
            )),
        }
    }
}

/// The descriptor of a channel that answers only while the request is open.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum NoReply {}

/// Delivers a late reply of channel `R`.
pub async fn deliver_to<R: ChannelRoute>(
    replies: &ChannelReplies,
    reply: ReplyTo,
    result: &CallResult,
) -> Result<(), String> {
    R::deliver(replies, reply.descriptor::<R>()?, result).await
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
        crate::channels::deliver(self, reply, result).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::telegram::TelegramRoute;

    #[test]
    fn descriptors_keep_the_shape_queue_rows_store() {
        let stored = r#"{"telegram":{"bot":"hark","chat_id":42,"reply_to":7}}"#;
        let reply: ReplyTo = serde_json::from_str(stored).unwrap();
        assert_eq!(reply.channel(), "telegram");
        assert_eq!(serde_json::to_string(&reply).unwrap(), stored);
        let telegram = reply.clone().descriptor::<TelegramRoute>().unwrap();
        assert_eq!((telegram.chat_id, telegram.reply_to), (42, 7));
        assert_eq!(ReplyTo::new::<TelegramRoute>(&telegram), reply);
        for bad in ["{}", r#"{"slack":{},"github":{}}"#, "[]"] {
            assert!(serde_json::from_str::<ReplyTo>(bad).is_err(), "{bad}");
        }
    }
}
