//! What started a call: one name per way in, the same in activation records, the queue,
//! logs, `hark activations` and the web UI's filter.

use std::fmt;
use std::str::FromStr;

/// What started a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trigger {
    /// `/function/NAME` (the REST API).
    Http,
    /// The web UI's invoke panel.
    Ui,
    /// `/async-function/NAME`, run by the queue.
    Async,
    /// A function's `schedule` annotation.
    Schedule,
    /// An activation run again (`POST /system/activations/ID/replay`).
    Replay,
    /// A delivery of a channel (`alexa`, `slack`, `hook`...): the name its route type
    /// gives as [`crate::channels::common::ChannelRoute::TRIGGER`], so a new channel adds
    /// no variant here.
    Channel(&'static str),
}

impl Trigger {
    /// Every trigger, in the order the UI lists them: the gateway's own, then each
    /// registered channel's.
    /// Listed once: the queue parses a stored trigger for every call it runs.
    pub fn all() -> &'static [Trigger] {
        static ALL: std::sync::OnceLock<Vec<Trigger>> = std::sync::OnceLock::new();
        ALL.get_or_init(|| {
            let mut all = vec![
                Trigger::Http,
                Trigger::Ui,
                Trigger::Async,
                Trigger::Schedule,
            ];
            all.extend(crate::channels::triggers());
            all.push(Trigger::Replay);
            all
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Http => "http",
            Trigger::Ui => "ui",
            Trigger::Async => "async",
            Trigger::Schedule => "schedule",
            Trigger::Replay => "replay",
            Trigger::Channel(name) => name,
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Trigger {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Trigger {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// A name that is no trigger's.
#[derive(Debug, thiserror::Error)]
#[error("unknown trigger {0:?}")]
pub struct UnknownTrigger(pub String);

impl FromStr for Trigger {
    type Err = UnknownTrigger;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Trigger::all()
            .iter()
            .copied()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownTrigger(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_trigger_reads_back_from_its_name_and_serde_agrees() {
        let all = Trigger::all();
        for name in [
            "http", "alexa", "slack", "github", "hook", "discord", "teams",
        ] {
            assert!(all.iter().any(|t| t.as_str() == name), "{name}");
        }
        for &trigger in all {
            assert_eq!(trigger.as_str().parse::<Trigger>().unwrap(), trigger);
            assert_eq!(
                serde_json::to_value(trigger).unwrap(),
                serde_json::Value::from(trigger.as_str())
            );
        }
        assert!("cron".parse::<Trigger>().is_err());
    }
}
