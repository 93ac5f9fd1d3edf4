//! What the gateway holds over time, for the UI's overview charts: every [`INTERVAL`] the
//! queue's depth and dead letters and the browser pool's use are read and kept in memory
//! for a day (a restart starts them again; activations, which the other charts draw, are
//! in the store).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::server::AppState;

/// How often the gauges are read.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// How long samples are kept.
pub const KEPT: Duration = Duration::from_secs(24 * 3600);

/// The gauges at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub at: DateTime<Utc>,
    /// Async calls pending or running.
    pub queue_depth: u64,
    /// Async calls that used up their retries.
    pub dead_letters: u64,
    /// Browser sessions leased to calls.
    pub browsers_in_use: usize,
    /// Browser sessions started and waiting for a call.
    pub browsers_warm: usize,
    /// Calls waiting for a browser session.
    pub browsers_queued: usize,
}

impl Sample {
    /// Reads the gauges now. `None` when the store cannot be read (the sample is skipped).
    pub async fn now(state: &AppState) -> Option<Sample> {
        let queue = match state.registry.store.queue_counts().await {
            Ok(counts) => counts,
            Err(e) => {
                tracing::debug!(error = %e, "queue gauges not sampled");
                return None;
            }
        };
        let pool = state.browser.status();
        Some(Sample {
            at: Utc::now(),
            queue_depth: queue.depth,
            dead_letters: queue.dead,
            browsers_in_use: pool.in_use,
            browsers_warm: pool.warm,
            browsers_queued: pool.queued,
        })
    }
}

/// The samples of the last [`KEPT`], oldest first.
#[derive(Default)]
pub struct Samples {
    kept: Mutex<VecDeque<Sample>>,
}

impl Samples {
    /// Keeps `sample`, forgetting those older than [`KEPT`] before it.
    pub fn push(&self, sample: Sample) {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let horizon = sample.at - KEPT;
        while kept.front().is_some_and(|s| s.at < horizon) {
            kept.pop_front();
        }
        kept.push_back(sample);
    }

    /// The samples taken at or after `since`, oldest first.
    pub fn since(&self, since: DateTime<Utc>) -> Vec<Sample> {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let first = kept.partition_point(|s| s.at < since);
        kept.range(first..).copied().collect()
    }

    /// Samples the gauges every [`INTERVAL`] until `stopping` turns true.
    pub async fn run(state: Arc<AppState>, mut stopping: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stopping.wait_for(|s| *s) => return,
            }
            if let Some(sample) = Sample::now(&state).await {
                state.samples.push(sample);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Sample {
        Sample {
            at: DateTime::from_timestamp(secs, 0).unwrap(),
            queue_depth: secs as u64,
            dead_letters: 0,
            browsers_in_use: 0,
            browsers_warm: 0,
            browsers_queued: 0,
        }
    }

    #[test]
    fn samples_older_than_a_day_are_forgotten_and_since_reads_from_a_time_on() {
        let samples = Samples::default();
        let day = KEPT.as_secs() as i64;
        for t in [0, 10, 20, day + 15] {
            samples.push(at(t));
        }
        let all = samples.since(DateTime::from_timestamp(0, 0).unwrap());
        let kept: Vec<u64> = all.iter().map(|s| s.queue_depth).collect();
        assert_eq!(
            kept,
            vec![20, day as u64 + 15],
            "0 and 10 are over a day old"
        );
        let recent = samples.since(DateTime::from_timestamp(21, 0).unwrap());
        assert_eq!(recent.len(), 1);
    }
}
