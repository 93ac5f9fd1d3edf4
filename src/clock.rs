//! The wall clock as a value: channels that check timestamps (Alexa's 150-second window,
//! certificate validity) read the time through a [`Clock`] held in the app state, so tests
//! can set it. Nothing else about time goes through here: timeouts use tokio's monotonic clock.

use chrono::{DateTime, Utc};

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that started at a chosen time and runs at the real rate from there. A testing
/// aid (`hark up --clock`): replaying a recorded request needs the time it was signed at.
#[derive(Debug, Clone, Copy)]
pub struct OffsetClock {
    offset: chrono::Duration,
}

impl OffsetClock {
    /// A clock reading `start` now.
    pub fn starting_at(start: DateTime<Utc>) -> Self {
        OffsetClock {
            offset: start - Utc::now(),
        }
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.offset
    }
}

/// A start time given as RFC 3339 or unix seconds (`hark up --clock`).
pub fn parse_start(text: &str) -> Option<DateTime<Utc>> {
    match text.parse::<i64>() {
        Ok(unix) => DateTime::from_timestamp(unix, 0),
        Err(_) => DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| t.with_timezone(&Utc)),
    }
}

/// A clock that always reads the same time (tests).
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub DateTime<Utc>);

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offset_clock_starts_where_asked_and_runs() {
        let start = DateTime::parse_from_rfc3339("2017-11-20T08:45:05Z")
            .unwrap()
            .with_timezone(&Utc);
        let clock = OffsetClock::starting_at(start);
        let first = clock.now();
        assert!((first - start).num_seconds().abs() <= 1, "{first}");
        assert!(clock.now() >= first);
        assert_eq!(FixedClock(start).now(), start);
    }
}
