//! Schedule state in the store: how far each schedule has looked (its anchor), and one
//! row per tick. The `(function, tick)` key is what makes a tick fire once, even when
//! several gateways share the data directory: only the one whose insert lands fires it.

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::{SqliteStore, StoreError};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS schedule_anchors (
    function TEXT PRIMARY KEY,
    anchor INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS schedule_runs (
    function TEXT NOT NULL,
    tick INTEGER NOT NULL,
    owner TEXT NOT NULL,
    outcome TEXT NOT NULL,
    call_id TEXT,
    status INTEGER,
    duration_ms REAL,
    started_at TEXT NOT NULL,
    PRIMARY KEY (function, tick)
);
";

/// One tick of a schedule and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleRun {
    pub tick: DateTime<Utc>,
    /// `running`, `ok`, `failed`, `skipped` (forbid, suspend, missed), `cancelled` (replace).
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    pub started_at: DateTime<Utc>,
}

impl SqliteStore {
    /// The last time a schedule was looked at, if ever.
    pub async fn schedule_anchor(
        &self,
        function: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let function = function.to_owned();
        self.with(move |c| {
            let ms: Option<i64> = c
                .query_row(
                    "SELECT anchor FROM schedule_anchors WHERE function = ?1",
                    [function],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(ms.and_then(DateTime::from_timestamp_millis))
        })
        .await
    }

    /// Moves a schedule's anchor forward (never back).
    pub async fn set_schedule_anchor(
        &self,
        function: &str,
        anchor: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let function = function.to_owned();
        self.with(move |c| {
            c.execute(
                "INSERT INTO schedule_anchors (function, anchor) VALUES (?1, ?2)
                 ON CONFLICT(function) DO UPDATE SET anchor = MAX(anchor, excluded.anchor)",
                params![function, anchor.timestamp_millis()],
            )?;
            Ok(())
        })
        .await
    }

    /// Claims a tick for `owner`; `false` if another gateway (or an earlier look) has it.
    pub async fn claim_tick(
        &self,
        function: &str,
        tick: DateTime<Utc>,
        owner: &str,
        outcome: &str,
        call_id: Option<String>,
    ) -> Result<bool, StoreError> {
        let (function, owner, outcome) =
            (function.to_owned(), owner.to_owned(), outcome.to_owned());
        self.with(move |c| {
            let inserted = c.execute(
                "INSERT OR IGNORE INTO schedule_runs (function, tick, owner, outcome, call_id, started_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![function, tick.timestamp_millis(), owner, outcome, call_id, Utc::now()],
            )?;
            Ok(inserted == 1)
        })
        .await
    }

    /// Records how a tick's run ended.
    pub async fn finish_tick(
        &self,
        function: &str,
        tick: DateTime<Utc>,
        outcome: &str,
        status: Option<u16>,
        duration_ms: f64,
    ) -> Result<(), StoreError> {
        let (function, outcome) = (function.to_owned(), outcome.to_owned());
        self.with(move |c| {
            c.execute(
                "UPDATE schedule_runs SET outcome = ?3, status = ?4, duration_ms = ?5
                 WHERE function = ?1 AND tick = ?2",
                params![
                    function,
                    tick.timestamp_millis(),
                    outcome,
                    status,
                    duration_ms
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// The newest runs of a schedule.
    pub async fn schedule_runs(
        &self,
        function: &str,
        limit: u32,
    ) -> Result<Vec<ScheduleRun>, StoreError> {
        let function = function.to_owned();
        self.with(move |c| {
            let mut stmt = c.prepare(
                "SELECT tick, outcome, call_id, status, duration_ms, started_at FROM schedule_runs
                 WHERE function = ?1 ORDER BY tick DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![function, limit], |r| {
                Ok(ScheduleRun {
                    tick: DateTime::from_timestamp_millis(r.get(0)?).unwrap_or_default(),
                    outcome: r.get(1)?,
                    call_id: r.get(2)?,
                    status: r.get(3)?,
                    duration_ms: r.get(4)?,
                    started_at: r.get(5)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }
}
