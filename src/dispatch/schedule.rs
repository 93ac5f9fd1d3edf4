//! Schedules: functions annotated `schedule` (a cron expression) come in; calls at each
//! tick go out, with a run record per tick. The deciding is pure ([`plan`]) so that it is
//! tested with a fixed clock; [`Scheduler::run`] applies it with the real one.
//!
//! Annotations: `schedule` (5 fields, an optional leading seconds field, or `@hourly`
//! style macros), `schedule.timezone` (IANA name, default UTC), `schedule.concurrency`
//! (`allow` | `forbid` | `replace`), `schedule.missed` (`skip` | `run-once`),
//! `schedule.deadline` (how late a missed run may still start), `schedule.suspend`.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use http::{HeaderMap, HeaderValue, Method};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use super::Trigger;
use crate::error::provider_status;
use crate::function::{
    parse_duration_within, AnnotationError, FunctionDeployment, FunctionName, MAX_TIMEOUT,
};
use crate::provider::Invocation;
use crate::registry::Registry;
use crate::server::HEADER_CALL_ID;

pub const ANNOTATION_SCHEDULE: &str = "schedule";
pub const ANNOTATION_TIMEZONE: &str = "schedule.timezone";
pub const ANNOTATION_CONCURRENCY: &str = "schedule.concurrency";
pub const ANNOTATION_MISSED: &str = "schedule.missed";
pub const ANNOTATION_DEADLINE: &str = "schedule.deadline";
pub const ANNOTATION_SUSPEND: &str = "schedule.suspend";
/// Header telling the function which tick it runs for (RFC 3339, UTC).
pub const HEADER_TICK: &str = "x-hark-schedule-tick";

/// A tick this late is "missed" (the gateway was down or busy) rather than on time.
pub const ON_TIME: Duration = Duration::from_secs(60);

/// What to do when a tick comes while the previous run still goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Concurrency {
    Allow,
    Forbid,
    Replace,
}

/// What to do with ticks missed while the gateway was down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Missed {
    Skip,
    RunOnce,
}

/// A function's schedule, parsed from its annotations.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub expression: String,
    cron: Cron,
    pub timezone: Tz,
    pub concurrency: Concurrency,
    pub missed: Missed,
    pub deadline: Option<Duration>,
    pub suspended: bool,
}

fn bad(key: &'static str, message: String) -> AnnotationError {
    AnnotationError { key, message }
}

impl Schedule {
    /// The schedule of `spec`, if it has one.
    pub fn of(spec: &FunctionDeployment) -> Result<Option<Schedule>, AnnotationError> {
        let a = &spec.annotations;
        let Some(expression) = a.get(ANNOTATION_SCHEDULE) else {
            return Ok(None);
        };
        let cron = Cron::from_str(expression).map_err(|e| {
            bad(
                ANNOTATION_SCHEDULE,
                format!("{expression:?} is not a cron expression: {e}"),
            )
        })?;
        let timezone = match a.get(ANNOTATION_TIMEZONE) {
            None => Tz::UTC,
            Some(name) => name.parse().map_err(|_| {
                bad(
                    ANNOTATION_TIMEZONE,
                    format!("{name:?} is not an IANA time zone such as Europe/London"),
                )
            })?,
        };
        let concurrency = match a.get(ANNOTATION_CONCURRENCY).map(String::as_str) {
            None | Some("allow") => Concurrency::Allow,
            Some("forbid") => Concurrency::Forbid,
            Some("replace") => Concurrency::Replace,
            Some(other) => {
                return Err(bad(
                    ANNOTATION_CONCURRENCY,
                    format!("{other:?} is not allow, forbid or replace"),
                ))
            }
        };
        let missed = match a.get(ANNOTATION_MISSED).map(String::as_str) {
            None | Some("skip") => Missed::Skip,
            Some("run-once") => Missed::RunOnce,
            Some(other) => {
                return Err(bad(
                    ANNOTATION_MISSED,
                    format!("{other:?} is not skip or run-once"),
                ))
            }
        };
        let deadline = match a.get(ANNOTATION_DEADLINE) {
            None => None,
            Some(v) => Some(
                parse_duration_within(v, MAX_TIMEOUT)
                    .map_err(|e| bad(ANNOTATION_DEADLINE, format!("{v:?} {e}")))?,
            ),
        };
        let suspended = match a.get(ANNOTATION_SUSPEND).map(String::as_str) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(bad(
                    ANNOTATION_SUSPEND,
                    format!("{other:?} is not true or false"),
                ))
            }
        };
        Ok(Some(Schedule {
            expression: expression.clone(),
            cron,
            timezone,
            concurrency,
            missed,
            deadline,
            suspended,
        }))
    }

    /// The first tick strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.timezone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// What [`plan`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Ticks to fire now, oldest first.
    pub fire: Vec<DateTime<Utc>>,
    /// Ticks passed over (missed and skipped, or suspended).
    pub skip: Vec<DateTime<Utc>>,
    /// The new anchor: every tick up to it has been decided.
    pub anchor: DateTime<Utc>,
}

/// At most this many past ticks are looked at in one plan (after a long downtime).
const MAX_TICKS: usize = 10_000;

/// Decides which ticks in `(anchor, now]` fire. Ticks within [`ON_TIME`] of `now` fire;
/// older ones were missed: `skip` passes over them, `run-once` fires the newest missed
/// tick once if it is within `deadline`. A suspended schedule passes over every tick.
pub fn plan(schedule: &Schedule, anchor: DateTime<Utc>, now: DateTime<Utc>) -> Plan {
    let mut ticks = Vec::new();
    let mut at = anchor;
    while let Some(tick) = schedule.next_after(at) {
        if tick > now || ticks.len() == MAX_TICKS {
            break;
        }
        ticks.push(tick);
        at = tick;
    }
    let on_time = chrono::Duration::from_std(ON_TIME).unwrap_or_default();
    let (mut missed, current): (Vec<_>, Vec<_>) =
        ticks.into_iter().partition(|t| now - *t > on_time);
    let mut fire = Vec::new();
    let mut skip = Vec::new();
    if schedule.suspended {
        skip.extend(missed);
        skip.extend(current);
        return Plan {
            fire,
            skip,
            anchor: now,
        };
    }
    if schedule.missed == Missed::RunOnce {
        if let Some(latest) = missed.pop() {
            let in_time = schedule
                .deadline
                .and_then(|d| chrono::Duration::from_std(d).ok())
                .is_none_or(|d| now - latest <= d);
            if in_time {
                fire.push(latest);
            } else {
                skip.push(latest);
            }
        }
    }
    skip.extend(missed);
    fire.extend(current);
    skip.sort();
    Plan {
        fire,
        skip,
        anchor: now,
    }
}

/// The schedule of one function, as `GET /system/schedules` shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleStatus {
    pub function: String,
    pub schedule: String,
    pub timezone: String,
    pub concurrency: Concurrency,
    pub missed: Missed,
    pub suspended: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<DateTime<Utc>>,
    pub runs: Vec<crate::store::ScheduleRun>,
}

/// Fires the ticks of every scheduled function.
pub struct Scheduler {
    registry: Registry,
    owner: String,
    /// The run in progress per function, for `forbid` and `replace`.
    running: Mutex<HashMap<String, (DateTime<Utc>, AbortHandle)>>,
}

impl Scheduler {
    pub fn new(registry: Registry) -> Arc<Scheduler> {
        Arc::new(Scheduler {
            registry,
            owner: super::queue::process_owner().to_owned(),
            running: Mutex::new(HashMap::new()),
        })
    }

    /// The scheduled functions with their next tick and recent runs.
    pub async fn status(&self) -> Result<Vec<ScheduleStatus>, crate::store::StoreError> {
        let mut out = Vec::new();
        for spec in self.registry.deployed_all() {
            let Ok(Some(schedule)) = Schedule::of(&spec) else {
                continue;
            };
            let runs = self
                .registry
                .store
                .schedule_runs(spec.service.as_str(), 20)
                .await?;
            out.push(ScheduleStatus {
                function: spec.service.to_string(),
                schedule: schedule.expression.clone(),
                timezone: schedule.timezone.name().to_owned(),
                concurrency: schedule.concurrency,
                missed: schedule.missed,
                suspended: schedule.suspended,
                next: (!schedule.suspended)
                    .then(|| schedule.next_after(Utc::now()))
                    .flatten(),
                runs,
            });
        }
        out.sort_by(|a, b| a.function.cmp(&b.function));
        Ok(out)
    }

    /// Fires ticks until `stopping` turns true.
    pub async fn run(self: Arc<Self>, mut stopping: watch::Receiver<bool>) {
        let mut anchors: HashMap<String, DateTime<Utc>> = HashMap::new();
        while !*stopping.borrow() {
            let now = Utc::now();
            let mut wake = now + chrono::Duration::seconds(1);
            for spec in self.registry.deployed_all() {
                let schedule = match Schedule::of(&spec) {
                    Ok(Some(s)) => s,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(function = %spec.service, error = %e, "schedule ignored");
                        continue;
                    }
                };
                let name = spec.service.to_string();
                let anchor = match anchors.get(&name) {
                    Some(a) => *a,
                    None => match self.registry.store.schedule_anchor(&name).await {
                        Ok(Some(a)) => a,
                        // First sight of this schedule: nothing before now counts as missed.
                        Ok(None) => now,
                        Err(e) => {
                            tracing::error!(function = name, error = %e, "reading schedule state failed");
                            continue;
                        }
                    },
                };
                let plan = plan(&schedule, anchor, now);
                for tick in &plan.skip {
                    let _ = self
                        .registry
                        .store
                        .claim_tick(&name, *tick, &self.owner, "skipped", None)
                        .await;
                }
                for tick in plan.fire {
                    self.fire(&spec.service, &schedule, tick).await;
                }
                anchors.insert(name.clone(), plan.anchor);
                if let Err(e) = self
                    .registry
                    .store
                    .set_schedule_anchor(&name, plan.anchor)
                    .await
                {
                    tracing::error!(function = name, error = %e, "saving schedule state failed");
                }
                if let Some(next) = schedule.next_after(now) {
                    wake = wake.min(next);
                }
            }
            let sleep = (wake - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            tokio::select! {
                () = tokio::time::sleep(sleep) => {}
                _ = stopping.changed() => {}
            }
        }
        let running: Vec<_> = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect();
        for (_, (_, handle)) in running {
            handle.abort();
        }
    }

    /// Fires one tick, unless another gateway did or the concurrency policy says no.
    async fn fire(self: &Arc<Self>, name: &FunctionName, schedule: &Schedule, tick: DateTime<Utc>) {
        let function = name.to_string();
        let busy = {
            let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            running
                .get(&function)
                .filter(|(_, h)| !h.is_finished())
                .map(|(t, h)| (*t, h.clone()))
        };
        if let Some((previous, handle)) = busy {
            match schedule.concurrency {
                Concurrency::Allow => {}
                Concurrency::Forbid => {
                    if self
                        .registry
                        .store
                        .claim_tick(&function, tick, &self.owner, "skipped", None)
                        .await
                        .unwrap_or(false)
                    {
                        tracing::info!(function, %tick, "schedule tick skipped: previous run still going (forbid)");
                        crate::telemetry::meters::schedule_run(&function, "skipped");
                    }
                    return;
                }
                Concurrency::Replace => {
                    handle.abort();
                    let _ = self
                        .registry
                        .store
                        .finish_tick(&function, previous, "cancelled", None, 0.0)
                        .await;
                    tracing::info!(function, %previous, "previous scheduled run cancelled (replace)");
                    crate::telemetry::meters::schedule_run(&function, "cancelled");
                }
            }
        }
        let call_id = uuid::Uuid::new_v4().to_string();
        match self
            .registry
            .store
            .claim_tick(
                &function,
                tick,
                &self.owner,
                "running",
                Some(call_id.clone()),
            )
            .await
        {
            Ok(true) => {}
            Ok(false) => return, // Another gateway fired it.
            Err(e) => {
                tracing::error!(function, error = %e, "claiming a schedule tick failed");
                return;
            }
        }
        let scheduler = self.clone();
        let name = name.clone();
        let task = tokio::spawn(async move {
            let mut headers = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&tick.to_rfc3339()) {
                headers.insert(HEADER_TICK, v);
            }
            if let Ok(v) = HeaderValue::from_str(&call_id) {
                headers.insert(HEADER_CALL_ID, v);
            }
            let call = Invocation {
                call_id,
                method: Method::POST,
                path: "/".into(),
                query: None,
                headers,
                body: Bytes::new(),
            };
            let started = Instant::now();
            let result = scheduler
                .registry
                .dispatcher
                .invoke(&name, Trigger::Schedule, call)
                .await;
            let status = match &result {
                Ok(output) => output.status.as_u16(),
                Err(e) => provider_status(e).as_u16(),
            };
            let outcome = if (200..300).contains(&status) {
                "ok"
            } else {
                "failed"
            };
            crate::telemetry::meters::schedule_run(name.as_str(), outcome);
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            let _ = scheduler
                .registry
                .store
                .finish_tick(name.as_str(), tick, outcome, Some(status), ms)
                .await;
        });
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.insert(function, (tick, task.abort_handle()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn schedule(pairs: &[(&str, &str)]) -> Schedule {
        let annotations: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let spec = FunctionDeployment {
            service: "f".parse().unwrap(),
            annotations,
            ..Default::default()
        };
        Schedule::of(&spec).unwrap().unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn expressions_macros_and_bad_annotations() {
        let every_5 = schedule(&[("schedule", "*/5 * * * *")]);
        assert_eq!(
            every_5.next_after(at("2026-11-30T10:02:00Z")),
            Some(at("2026-11-30T10:05:00Z"))
        );
        let seconds = schedule(&[("schedule", "*/10 * * * * *")]);
        assert_eq!(
            seconds.next_after(at("2026-11-30T10:00:01Z")),
            Some(at("2026-11-30T10:00:10Z"))
        );
        let hourly = schedule(&[("schedule", "@hourly")]);
        assert_eq!(
            hourly.next_after(at("2026-11-30T10:00:00Z")),
            Some(at("2026-11-30T11:00:00Z"))
        );
        let weekdays = schedule(&[("schedule", "0 9 * * MON-FRI")]);
        // 2026-12-05 is a Saturday: the next run is Monday the 7th.
        assert_eq!(
            weekdays.next_after(at("2026-12-04T09:00:00Z")),
            Some(at("2026-12-07T09:00:00Z"))
        );
        for (key, value) in [
            ("schedule", "every day"),
            ("schedule.timezone", "Mars/Olympus"),
            ("schedule.concurrency", "sometimes"),
            ("schedule.missed", "all"),
            ("schedule.suspend", "maybe"),
        ] {
            let mut annotations = BTreeMap::from([("schedule".to_owned(), "* * * * *".to_owned())]);
            annotations.insert(key.to_owned(), value.to_owned());
            let spec = FunctionDeployment {
                annotations,
                ..Default::default()
            };
            let err = Schedule::of(&spec).unwrap_err();
            assert_eq!(err.key, key);
        }
    }

    #[test]
    fn local_times_hold_across_daylight_saving_changes() {
        let s = schedule(&[
            ("schedule", "0 9 * * *"),
            ("schedule.timezone", "Europe/London"),
        ]);
        // Before the clocks go back (BST, UTC+1) 09:00 local is 08:00 UTC ...
        assert_eq!(
            s.next_after(at("2026-10-24T12:00:00Z")),
            Some(at("2026-10-25T09:00:00Z"))
        );
        assert_eq!(
            s.next_after(at("2026-10-23T12:00:00Z")),
            Some(at("2026-10-24T08:00:00Z"))
        );
        // ... and after it (GMT) 09:00 UTC; in spring it moves back to 08:00 UTC.
        assert_eq!(
            s.next_after(at("2027-03-27T12:00:00Z")),
            Some(at("2027-03-28T08:00:00Z"))
        );
        // A tick inside the skipped spring hour does not vanish for good: the next day's runs.
        let night = schedule(&[
            ("schedule", "30 1 * * *"),
            ("schedule.timezone", "Europe/London"),
        ]);
        let after_gap = night.next_after(at("2027-03-28T00:30:00Z")).unwrap();
        assert!(after_gap > at("2027-03-28T00:30:00Z"));
        // In autumn 01:30 local happens twice; it fires once that night.
        let ticks: Vec<_> =
            std::iter::successors(night.next_after(at("2026-10-25T00:00:00Z")), |t| {
                night.next_after(*t)
            })
            .take_while(|t| *t < at("2026-10-25T12:00:00Z"))
            .collect();
        assert_eq!(ticks.len(), 1, "{ticks:?}");
    }

    #[test]
    fn on_time_ticks_fire_and_missed_ones_follow_the_policy() {
        let skip = schedule(&[("schedule", "*/10 * * * *")]);
        // Normal operation: the tick that just passed fires.
        let p = plan(
            &skip,
            at("2026-11-30T10:09:59Z"),
            at("2026-11-30T10:10:01Z"),
        );
        assert_eq!(p.fire, [at("2026-11-30T10:10:00Z")]);
        assert!(p.skip.is_empty());
        // Nothing due: nothing fires, and the anchor moves on.
        let p = plan(
            &skip,
            at("2026-11-30T10:10:01Z"),
            at("2026-11-30T10:15:00Z"),
        );
        assert!(p.fire.is_empty() && p.skip.is_empty());
        assert_eq!(p.anchor, at("2026-11-30T10:15:00Z"));
        // Down from 10:05 to 10:45: 10:10..10:40 were missed and are skipped.
        let p = plan(
            &skip,
            at("2026-11-30T10:05:00Z"),
            at("2026-11-30T10:45:00Z"),
        );
        assert!(p.fire.is_empty());
        assert_eq!(p.skip.len(), 4);

        let once = schedule(&[
            ("schedule", "*/10 * * * *"),
            ("schedule.missed", "run-once"),
        ]);
        let p = plan(
            &once,
            at("2026-11-30T10:05:00Z"),
            at("2026-11-30T10:45:00Z"),
        );
        assert_eq!(
            p.fire,
            [at("2026-11-30T10:40:00Z")],
            "one run for all missed ticks, the newest"
        );
        assert_eq!(p.skip.len(), 3);
        let late = schedule(&[
            ("schedule", "*/10 * * * *"),
            ("schedule.missed", "run-once"),
            ("schedule.deadline", "2m"),
        ]);
        let p = plan(
            &late,
            at("2026-11-30T10:05:00Z"),
            at("2026-11-30T10:45:00Z"),
        );
        assert!(
            p.fire.is_empty(),
            "the newest missed tick is 5 minutes old, past its 2-minute deadline"
        );
        assert_eq!(p.skip.len(), 4);
    }

    #[test]
    fn a_suspended_schedule_fires_nothing() {
        let s = schedule(&[("schedule", "* * * * *"), ("schedule.suspend", "true")]);
        let p = plan(&s, at("2026-11-30T10:00:30Z"), at("2026-11-30T10:03:10Z"));
        assert!(p.fire.is_empty());
        assert_eq!(p.skip.len(), 3);
    }
}
