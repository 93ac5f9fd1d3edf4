//! What started a call: one name per way in, the same in activation records, the queue,
//! logs, `hark activations` and the web UI's filter.

use std::fmt;
use std::str::FromStr;

/// What started a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// `/function/NAME` (the REST API).
    Http,
    /// The web UI's invoke panel.
    Ui,
    /// `/async-function/NAME`, run by the queue.
    Async,
    /// A function's `schedule` annotation.
    Schedule,
    Alexa,
    Slack,
    Github,
    /// A `hooks:` route of `hark.yml`.
    Hook,
    /// A Discord interaction.
    Discord,
    /// A Microsoft Teams outgoing webhook.
    Teams,
    /// A Telegram bot's webhook.
    Telegram,
    /// A phone call (Twilio Voice).
    Twilio,
    /// An activation run again (`POST /system/activations/ID/replay`).
    Replay,
}

impl Trigger {
    /// Every trigger, in the order the UI lists them.
    pub const ALL: [Trigger; 13] = [
        Trigger::Http,
        Trigger::Ui,
        Trigger::Async,
        Trigger::Schedule,
        Trigger::Alexa,
        Trigger::Slack,
        Trigger::Github,
        Trigger::Hook,
        Trigger::Discord,
        Trigger::Teams,
        Trigger::Telegram,
        Trigger::Twilio,
        Trigger::Replay,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Http => "http",
            Trigger::Ui => "ui",
            Trigger::Async => "async",
            Trigger::Schedule => "schedule",
            Trigger::Alexa => "alexa",
            Trigger::Slack => "slack",
            Trigger::Github => "github",
            Trigger::Hook => "hook",
            Trigger::Discord => "discord",
            Trigger::Teams => "teams",
            Trigger::Telegram => "telegram",
            Trigger::Twilio => "twilio",
            Trigger::Replay => "replay",
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is no trigger's.
#[derive(Debug, thiserror::Error)]
#[error("unknown trigger {0:?}")]
pub struct UnknownTrigger(pub String);

impl FromStr for Trigger {
    type Err = UnknownTrigger;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Trigger::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownTrigger(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_trigger_reads_back_from_its_name_and_serde_agrees() {
        for trigger in Trigger::ALL {
            assert_eq!(trigger.as_str().parse::<Trigger>().unwrap(), trigger);
            assert_eq!(
                serde_json::to_value(trigger).unwrap(),
                serde_json::Value::from(trigger.as_str())
            );
        }
        assert!("cron".parse::<Trigger>().is_err());
    }
}
