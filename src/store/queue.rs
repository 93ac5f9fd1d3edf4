//! The durable queue of async calls, in the same SQLite file: an accepted call comes in
//! and is committed before its 202 goes out; workers claim due calls, and each call's
//! outcome (done, retry later, dead-lettered, cancelled) is written back. Enqueues are
//! group-committed: one transaction for every call that arrived meanwhile. A call may
//! carry a platform delivery id, remembered in the same transaction, so a redelivered
//! webhook is refused as a duplicate exactly when the first one was queued; and an opaque
//! `reply` (where a channel wants the result to go), kept until the result is delivered.

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::{SqliteStore, StoreError};

/// Sizes of the queue, as `/metrics` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueCounts {
    /// Calls pending or running.
    pub depth: u64,
    /// Calls that used up their retries.
    pub dead: u64,
}

/// Where a queued call is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CallState {
    Pending,
    Running,
    Done,
    Dead,
    Cancelled,
}

impl CallState {
    pub fn as_str(self) -> &'static str {
        match self {
            CallState::Pending => "pending",
            CallState::Running => "running",
            CallState::Done => "done",
            CallState::Dead => "dead",
            CallState::Cancelled => "cancelled",
        }
    }

    pub(super) fn parse(s: &str) -> CallState {
        match s {
            "running" => CallState::Running,
            "done" => CallState::Done,
            "dead" => CallState::Dead,
            "cancelled" => CallState::Cancelled,
            _ => CallState::Pending,
        }
    }
}

/// A call as it is queued: the whole request, so it can run again after a crash.
#[derive(Debug, Clone, Default)]
pub struct QueuedCall {
    pub call_id: String,
    pub function: String,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub callback_url: Option<String>,
    /// Failed attempts so far.
    pub attempts: u32,
    /// What started the call, for its activation records (`None`: `async`).
    pub trigger: Option<String>,
    /// Where the result goes, as the channel that queued the call wrote it (JSON, never a
    /// secret); delivered like a callback.
    pub reply: Option<String>,
    /// `(route key, delivery id)`: the call is queued only if this delivery was not seen
    /// before (see [`Store::first_delivery`]). Not stored with the call.
    pub delivery: Option<(String, String)>,
    /// `(owner, lease end)`: the call is queued already claimed, as running, by the
    /// process that will run it at once (see [`Store::claim_calls`]).
    pub lease: Option<(String, DateTime<Utc>)>,
}

impl QueuedCall {
    /// What the call holds on disk while it waits, runs or lies dead: its headers (as
    /// stored, JSON) and its body, as [`Store::queue_bytes`] counts them back.
    pub fn stored_bytes(&self) -> u64 {
        let headers = serde_json::to_vec(&self.headers).map_or(0, |h| h.len());
        (headers + self.body.len()) as u64
    }
}

/// A queued call as `GET /system/queue` lists it (without its body).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueEntry {
    pub call_id: String,
    pub function: String,
    pub state: CallState,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_state: Option<String>,
    /// What started the call when it was not `POST /async-function` (`slack`, `github`,
    /// `hook`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
}

/// The final result kept for a callback or a channel reply until it is delivered.
#[derive(Debug, Clone)]
pub struct CallbackDue {
    pub call_id: String,
    pub function: String,
    /// `X-Callback-Url` of an API call.
    pub url: Option<String>,
    /// A channel's reply descriptor (see [`QueuedCall::reply`]).
    pub reply: Option<String>,
    pub status: u16,
    pub error: Option<String>,
    pub duration_ms: f64,
    pub body: Vec<u8>,
    pub attempts: u32,
}

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS queue (
    call_id TEXT PRIMARY KEY,
    function TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    query TEXT,
    headers TEXT NOT NULL,
    body BLOB NOT NULL,
    callback_url TEXT,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    owner TEXT,
    lease_until INTEGER,
    status INTEGER,
    error TEXT,
    duration_ms REAL,
    result BLOB,
    callback_state TEXT,
    callback_attempts INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    finished_at TEXT,
    trigger TEXT,
    reply TEXT
);
CREATE INDEX IF NOT EXISTS queue_due ON queue (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS queue_callbacks ON queue (callback_state);
";

/// The state of a queued call, if it exists.
fn state_of(c: &Connection, call_id: &str) -> Result<Option<CallState>, StoreError> {
    let state: Option<String> = c
        .query_row(
            "SELECT state FROM queue WHERE call_id = ?1",
            [call_id],
            |r| r.get(0),
        )
        .optional()?;
    Ok(state.map(|s| CallState::parse(&s)))
}

/// Columns added since the queue table was first written, for stores made before them.
const ADDED_COLUMNS: &[(&str, &str)] = &[("trigger", "TEXT"), ("reply", "TEXT")];

/// Brings a queue table made by a Hark from before schema versions up to [`SCHEMA`]:
/// part of the store's frozen migration step 0.
pub(super) fn migrate(conn: &Connection) -> Result<(), StoreError> {
    super::db::add_missing_columns(conn, "queue", ADDED_COLUMNS)
}

fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_millis(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
}

/// Inserts calls in one transaction; whether each was queued. A call id already queued
/// is left as it is, so a client that retries its enqueue does not run the call twice; a
/// call whose delivery id was seen before is not queued.
pub(super) fn insert_calls(
    conn: &mut Connection,
    calls: &[QueuedCall],
) -> Result<Vec<bool>, StoreError> {
    let tx = conn.transaction()?;
    let mut queued = Vec::with_capacity(calls.len());
    {
        let mut insert = tx.prepare_cached(
            "INSERT OR IGNORE INTO queue (call_id, function, method, path, query, headers, body,
                callback_url, state, attempts, next_attempt_at, created_at, trigger, reply,
                owner, lease_until)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8,
                CASE WHEN ?13 IS NULL THEN 'pending' ELSE 'running' END, 0, ?9, ?10, ?11, ?12,
                ?13, ?14)",
        )?;
        let mut remember = tx.prepare_cached(
            "INSERT OR IGNORE INTO deliveries (channel, id, received_at) VALUES (?1, ?2, ?3)",
        )?;
        let now = Utc::now();
        if calls.iter().any(|c| c.delivery.is_some()) {
            tx.execute(
                "DELETE FROM deliveries WHERE received_at < ?1",
                [now.timestamp() - super::DELIVERY_IDS_KEPT_SECS],
            )?;
        }
        for c in calls {
            if let Some((route, id)) = &c.delivery {
                if remember.execute(params![route, id, now.timestamp()])? == 0 {
                    queued.push(false);
                    continue;
                }
            }
            let inserted = insert.execute(params![
                c.call_id,
                c.function,
                c.method,
                c.path,
                c.query,
                serde_json::to_string(&c.headers)?,
                c.body,
                c.callback_url,
                millis(now),
                now,
                c.trigger,
                c.reply,
                c.lease.as_ref().map(|(owner, _)| owner),
                c.lease.as_ref().map(|(_, until)| millis(*until)),
            ])?;
            queued.push(inserted == 1);
        }
    }
    tx.commit()?;
    Ok(queued)
}

/// A call's final outcome, as [`Store::finish_call`] records it.
#[derive(Debug, Clone)]
pub struct Finish {
    pub call_id: String,
    /// Done or dead.
    pub state: CallState,
    pub attempts: u32,
    pub status: u16,
    pub error: Option<String>,
    pub duration_ms: f64,
    /// Kept for a callback or reply, if the call has one.
    pub result: Option<Vec<u8>>,
    /// The channel that queued the call already answered with the result (callback state
    /// `answered`): nothing is kept to deliver.
    pub answered: bool,
    pub at: DateTime<Utc>,
}

/// Records finished calls in one transaction.
pub(super) fn finish_calls(
    conn: &mut Connection,
    finishes: &[Finish],
) -> Result<Vec<()>, StoreError> {
    let tx = conn.transaction()?;
    {
        let mut update = tx.prepare_cached(
            "UPDATE queue SET state = ?2, attempts = ?3, status = ?4, error = ?5, duration_ms = ?6,
                result = CASE WHEN ?9 OR (callback_url IS NULL AND reply IS NULL) THEN NULL ELSE ?7 END,
                callback_state = CASE WHEN ?9 THEN 'answered'
                    WHEN callback_url IS NULL AND reply IS NULL THEN NULL ELSE 'pending' END,
                body = CASE WHEN ?2 = 'done' THEN x'' ELSE body END,
                owner = NULL, lease_until = NULL, finished_at = ?8
             WHERE call_id = ?1",
        )?;
        for f in finishes {
            update.execute(params![
                f.call_id,
                f.state.as_str(),
                f.attempts,
                f.status,
                f.error,
                f.duration_ms,
                f.result,
                f.at,
                f.answered
            ])?;
        }
    }
    // Every `PRUNE_EVERY` finished calls, the finished calls older than the newest
    // `FINISHED_KEPT` calls are forgotten: done and cancelled ones with nothing left to
    // deliver. Dead letters stay until someone re-queues or removes them.
    let before = FINISHED.fetch_add(finishes.len() as u64, Ordering::Relaxed);
    if before / PRUNE_EVERY != (before + finishes.len() as u64) / PRUNE_EVERY {
        tx.prepare_cached(
            "DELETE FROM queue WHERE state IN ('done', 'cancelled')
                AND (callback_state IS NULL OR callback_state <> 'pending')
                AND rowid <= (SELECT MAX(rowid) FROM queue) - ?1",
        )?
        .execute([FINISHED_KEPT])?;
    }
    tx.commit()?;
    Ok(vec![(); finishes.len()])
}

/// Finished calls kept in the queue table (as `GET /system/queue` lists them).
pub(super) const FINISHED_KEPT: i64 = 10_000;
/// How many finished calls between two prunings of the queue table.
pub(super) const PRUNE_EVERY: u64 = 1024;
/// Calls finished by this process, for pruning.
static FINISHED: AtomicU64 = AtomicU64::new(0);

/// Which of the due calls (their functions, oldest first) a claim takes: at most
/// `limit`, and at most `room(function)` of each function; and whether a due call was
/// left for want of room. (PostgreSQL chooses the same way, in its claim's statement.)
fn select_claims<'a>(
    functions: impl IntoIterator<Item = &'a str>,
    limit: usize,
    room: &mut impl FnMut(&str) -> usize,
) -> (Vec<usize>, bool) {
    let mut taken: Vec<usize> = Vec::new();
    let mut of_function: std::collections::HashMap<&str, usize> = Default::default();
    let mut left = false;
    for (i, function) in functions.into_iter().enumerate() {
        if taken.len() == limit {
            left = true;
            break;
        }
        let n = of_function.entry(function).or_default();
        if *n >= room(function) {
            left = true;
            continue;
        }
        *n += 1;
        taken.push(i);
    }
    (taken, left)
}

impl SqliteStore {
    /// Claims up to `limit` due calls for `owner`, marking them running until
    /// `lease_until`, and at most `room(function)` calls of each function. Also says
    /// whether due calls were left for want of room.
    pub async fn claim_calls(
        &self,
        owner: &str,
        limit: usize,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        mut room: impl FnMut(&str) -> usize + Send + 'static,
    ) -> Result<(Vec<QueuedCall>, bool), StoreError> {
        let owner = owner.to_owned();
        self.with_mut(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut claimed = Vec::new();
            let left;
            {
                let mut due = tx.prepare_cached(
                    "SELECT call_id, function, method, path, query, headers, body, callback_url, attempts,
                            trigger, reply
                     FROM queue WHERE state = 'pending' AND next_attempt_at <= ?1
                     ORDER BY next_attempt_at LIMIT ?2",
                )?;
                let rows = due.query_map(params![millis(now), (limit * 8) as i64], |r| {
                    Ok((
                        QueuedCall {
                            call_id: r.get(0)?,
                            function: r.get(1)?,
                            method: r.get(2)?,
                            path: r.get(3)?,
                            query: r.get(4)?,
                            headers: Vec::new(),
                            body: r.get(6)?,
                            callback_url: r.get(7)?,
                            attempts: r.get(8)?,
                            trigger: r.get(9)?,
                            reply: r.get(10)?,
                            delivery: None,
                            lease: None,
                        },
                        r.get::<_, String>(5)?,
                    ))
                })?;
                let due = rows.collect::<Result<Vec<_>, _>>()?;
                let (taken, rest) =
                    select_claims(due.iter().map(|(c, _)| c.function.as_str()), limit, &mut room);
                left = rest;
                // `taken` is in the order of `due`.
                let mut taken = taken.into_iter().peekable();
                for (i, (mut call, headers)) in due.into_iter().enumerate() {
                    if taken.next_if_eq(&i).is_some() {
                        call.headers = serde_json::from_str(&headers)?;
                        claimed.push(call);
                    }
                }
                let mut mark = tx.prepare_cached(
                    "UPDATE queue SET state = 'running', owner = ?2, lease_until = ?3 WHERE call_id = ?1",
                )?;
                for call in &claimed {
                    mark.execute(params![call.call_id, owner, millis(lease_until)])?;
                }
            }
            tx.commit()?;
            Ok((claimed, left))
        })
        .await
    }

    /// Puts back to pending the running calls whose owner is gone: those of `dead_owner`
    /// (a previous run of this process) and those whose lease ran out.
    pub async fn reclaim_calls(
        &self,
        is_alive: fn(&str) -> bool,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        self.with_mut(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let running: Vec<(String, Option<String>, Option<i64>)> = {
                let mut stmt = tx.prepare("SELECT call_id, owner, lease_until FROM queue WHERE state = 'running'")?;
                let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                rows.collect::<Result<_, _>>()?
            };
            let mut reclaimed = 0;
            for (call_id, owner, lease) in running {
                let expired = lease.is_none_or(|l| l < millis(now));
                let orphaned = owner.as_deref().is_none_or(|o| !is_alive(o));
                if expired || orphaned {
                    tx.execute(
                        "UPDATE queue SET state = 'pending', owner = NULL, lease_until = NULL, next_attempt_at = ?2
                         WHERE call_id = ?1 AND state = 'running'",
                        params![call_id, millis(now)],
                    )?;
                    reclaimed += 1;
                }
            }
            tx.commit()?;
            Ok(reclaimed)
        })
        .await
    }

    /// Moves to `until` the lease of every call `owner` is running: the heartbeat that
    /// keeps other gateways from running them again. How many.
    pub async fn renew_leases(
        &self,
        owner: &str,
        until: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let owner = owner.to_owned();
        self.with(move |c| {
            Ok(c.execute(
                "UPDATE queue SET lease_until = ?2 WHERE owner = ?1 AND state = 'running'",
                params![owner, millis(until)],
            )?)
        })
        .await
    }

    /// Records that a call finished for good. Calls finishing at once are recorded in one
    /// transaction.
    pub async fn finish_call(&self, finish: Finish) -> Result<(), StoreError> {
        super::commit(&self.finishes, finish).await
    }

    /// Schedules another attempt of a failed call.
    pub async fn retry_call_later(
        &self,
        call_id: &str,
        attempts: u32,
        status: u16,
        error: Option<String>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let call_id = call_id.to_owned();
        self.with(move |c| {
            c.execute(
                "UPDATE queue SET state = 'pending', attempts = ?2, status = ?3, error = ?4,
                    next_attempt_at = ?5, owner = NULL, lease_until = NULL
                 WHERE call_id = ?1 AND state = 'running'",
                params![call_id, attempts, status, error, millis(at)],
            )?;
            Ok(())
        })
        .await
    }

    /// Cancels a pending call; the state it was in, if it exists.
    pub async fn cancel_call(&self, call_id: &str) -> Result<Option<CallState>, StoreError> {
        let call_id = call_id.to_owned();
        self.with(move |c| {
            let Some(state) = state_of(c, &call_id)? else {
                return Ok(None);
            };
            if state == CallState::Pending {
                c.execute(
                    "UPDATE queue SET state = 'cancelled', finished_at = ?2, body = x'' WHERE call_id = ?1 AND state = 'pending'",
                    params![call_id, Utc::now()],
                )?;
            }
            Ok(Some(state))
        })
        .await
    }

    /// Moves a dead-lettered call back to pending; the state it was in, if it exists.
    pub async fn requeue_dead(&self, call_id: &str) -> Result<Option<CallState>, StoreError> {
        let call_id = call_id.to_owned();
        self.with(move |c| {
            let Some(state) = state_of(c, &call_id)? else {
                return Ok(None);
            };
            if state == CallState::Dead {
                c.execute(
                    "UPDATE queue SET state = 'pending', attempts = 0, next_attempt_at = ?2, error = NULL,
                        callback_state = NULL, result = NULL, finished_at = NULL
                     WHERE call_id = ?1",
                    params![call_id, millis(Utc::now())],
                )?;
            }
            Ok(Some(state))
        })
        .await
    }

    /// Queued calls, newest first, optionally in one state and of one function.
    pub async fn queue_entries(
        &self,
        state: Option<CallState>,
        function: Option<String>,
        limit: u32,
    ) -> Result<Vec<QueueEntry>, StoreError> {
        self.with(move |c| {
            let mut stmt = c.prepare(
                "SELECT call_id, function, state, attempts, status, error, created_at, next_attempt_at,
                        callback_url, callback_state, trigger
                 FROM queue WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR function = ?2)
                 ORDER BY created_at DESC LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![state.map(CallState::as_str), function, limit], |r| {
                let state = CallState::parse(&r.get::<_, String>(2)?);
                Ok(QueueEntry {
                    call_id: r.get(0)?,
                    function: r.get(1)?,
                    state,
                    attempts: r.get(3)?,
                    status: r.get(4)?,
                    error: r.get(5)?,
                    created_at: r.get(6)?,
                    next_attempt_at: (state == CallState::Pending)
                        .then(|| r.get::<_, i64>(7).ok().and_then(from_millis))
                        .flatten(),
                    callback_url: r.get(8)?,
                    callback_state: r.get(9)?,
                    trigger: r.get(10)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// How many calls are pending or running.
    pub async fn queue_depth(&self) -> Result<u64, StoreError> {
        self.with(|c| {
            let n: i64 = c.query_row(
                "SELECT COUNT(*) FROM queue WHERE state IN ('pending', 'running')",
                [],
                |r| r.get(0),
            )?;
            Ok(n as u64)
        })
        .await
    }

    /// How many calls wait or run (`depth`) and how many used up their retries (`dead`),
    /// for `/metrics`.
    pub async fn queue_counts(&self) -> Result<QueueCounts, StoreError> {
        self.with(|c| {
            let (depth, dead): (i64, i64) = c.query_row(
                "SELECT COUNT(*) FILTER (WHERE state IN ('pending', 'running')),
                        COUNT(*) FILTER (WHERE state = 'dead')
                 FROM queue",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            Ok(QueueCounts {
                depth: depth as u64,
                dead: dead as u64,
            })
        })
        .await
    }

    /// The bytes ([`QueuedCall::stored_bytes`]) that pending, running and dead calls
    /// hold, by function: what the queue's byte quota starts from.
    pub async fn queue_bytes(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT function, SUM(LENGTH(CAST(headers AS BLOB)) + LENGTH(body))
                 FROM queue WHERE state IN ('pending', 'running', 'dead') GROUP BY function",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<i64>>(1)?.unwrap_or(0).max(0) as u64,
                ))
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// The function and the bytes ([`QueuedCall::stored_bytes`]) of a call, if it exists.
    pub async fn call_bytes(&self, call_id: &str) -> Result<Option<(String, u64)>, StoreError> {
        let call_id = call_id.to_owned();
        self.with(move |c| {
            Ok(c.query_row(
                "SELECT function, LENGTH(CAST(headers AS BLOB)) + LENGTH(body) FROM queue WHERE call_id = ?1",
                [call_id],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64)),
            )
            .optional()?)
        })
        .await
    }

    /// Finished calls whose callback or reply is still to be delivered.
    pub async fn callbacks_due(&self) -> Result<Vec<CallbackDue>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT call_id, function, callback_url, reply, status, error, duration_ms, result,
                        callback_attempts
                 FROM queue WHERE callback_state = 'pending'
                    AND (callback_url IS NOT NULL OR reply IS NOT NULL)",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(CallbackDue {
                    call_id: r.get(0)?,
                    function: r.get(1)?,
                    url: r.get(2)?,
                    reply: r.get(3)?,
                    status: r.get::<_, Option<u16>>(4)?.unwrap_or(0),
                    error: r.get(5)?,
                    duration_ms: r.get::<_, Option<f64>>(6)?.unwrap_or(0.0),
                    body: r.get::<_, Option<Vec<u8>>>(7)?.unwrap_or_default(),
                    attempts: r.get(8)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Records a callback delivery attempt; `delivered` or `failed` ends it.
    pub async fn record_callback(
        &self,
        call_id: &str,
        state: &'static str,
        attempts: u32,
    ) -> Result<(), StoreError> {
        let call_id = call_id.to_owned();
        self.with(move |c| {
            c.execute(
                "UPDATE queue SET callback_state = ?2, callback_attempts = ?3,
                    result = CASE WHEN ?2 = 'pending' THEN result ELSE NULL END
                 WHERE call_id = ?1",
                params![call_id, state, attempts],
            )?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: &str, delivery: Option<&str>) -> QueuedCall {
        QueuedCall {
            call_id: id.into(),
            function: "f".into(),
            method: "POST".into(),
            path: "/".into(),
            trigger: Some("slack".into()),
            reply: Some(r#"{"slack":{"to":"post_message","app":"a","channel":"C1"}}"#.into()),
            delivery: delivery.map(|d| ("slack/a".to_owned(), d.to_owned())),
            ..QueuedCall::default()
        }
    }

    fn finish(call_id: String, state: CallState, with_result: bool) -> Finish {
        Finish {
            call_id,
            state,
            attempts: 1,
            status: 200,
            error: None,
            duration_ms: 1.0,
            result: with_result.then(|| b"ok".to_vec()),
            answered: false,
            at: Utc::now(),
        }
    }

    #[test]
    fn old_finished_calls_are_forgotten_but_dead_letters_and_undelivered_results_stay() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("q.db")).unwrap();
        conn.execute_batch(super::super::SCHEMA).unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        let total = FINISHED_KEPT as usize + 2_000;
        let calls: Vec<QueuedCall> = (0..total)
            .map(|i| QueuedCall {
                call_id: format!("c{i}"),
                function: "f".into(),
                method: "POST".into(),
                path: "/".into(),
                // The second call has a callback whose delivery is still to come.
                callback_url: (i == 1).then(|| "http://example.com/cb".to_owned()),
                ..QueuedCall::default()
            })
            .collect();
        insert_calls(&mut conn, &calls).unwrap();
        let finishes: Vec<Finish> = (0..total)
            .map(|i| {
                let state = if i == 0 {
                    CallState::Dead
                } else {
                    CallState::Done
                };
                finish(format!("c{i}"), state, i == 1)
            })
            .collect();
        for batch in finishes.chunks(1000) {
            finish_calls(&mut conn, batch).unwrap();
        }
        let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
        let left = count("SELECT COUNT(*) FROM queue");
        assert!(
            (FINISHED_KEPT..total as i64 - 1_000).contains(&left),
            "{left} of {total} calls left"
        );
        // The newest are all there; the dead letter and the pending callback too.
        assert_eq!(
            count(&format!(
                "SELECT COUNT(*) FROM queue WHERE rowid > {}",
                total as i64 - FINISHED_KEPT
            )),
            FINISHED_KEPT
        );
        assert_eq!(
            count("SELECT COUNT(*) FROM queue WHERE call_id IN ('c0', 'c1')"),
            2
        );
        assert_eq!(count("SELECT COUNT(*) FROM queue WHERE call_id = 'c2'"), 0);
    }

    #[tokio::test]
    async fn a_delivery_id_queues_its_call_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("hark.db")).unwrap();
        assert!(store.enqueue(call("c1", Some("Ev1"))).await.unwrap());
        assert!(!store.enqueue(call("c2", Some("Ev1"))).await.unwrap());
        // The same call id again is not queued twice either.
        assert!(!store.enqueue(call("c1", None)).await.unwrap());
        assert!(store.enqueue(call("c3", Some("Ev2"))).await.unwrap());
        assert_eq!(store.queue_depth().await.unwrap(), 2);
        // The delivery is remembered for the channel's own dedupe too.
        assert!(!store.first_delivery("slack/a", "Ev1", 0).await.unwrap());
    }

    #[tokio::test]
    async fn replies_are_kept_until_delivered_and_older_stores_get_the_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hark.db");
        {
            // A queue table as the first Hark with a queue made it.
            let conn = Connection::open(&path).unwrap();
            let old = SCHEMA.replace(",\n    trigger TEXT,\n    reply TEXT\n", "\n");
            conn.execute_batch(&old).unwrap();
            assert!(conn.prepare("SELECT reply FROM queue").is_err());
        }
        let store = SqliteStore::open(&path).unwrap();
        assert!(store.enqueue(call("c1", None)).await.unwrap());
        let now = Utc::now();
        let (claimed, left) = store
            .claim_calls("pid:1", 4, now, now, |_| 4)
            .await
            .unwrap();
        assert!(!left);
        assert_eq!(claimed[0].trigger.as_deref(), Some("slack"));
        assert!(claimed[0].reply.is_some());
        store
            .finish_call(Finish {
                result: Some(b"hi".to_vec()),
                ..finish("c1".into(), CallState::Done, false)
            })
            .await
            .unwrap();
        let due = store.callbacks_due().await.unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(
            (due[0].url.as_deref(), due[0].body.as_slice()),
            (None, &b"hi"[..])
        );
        store.record_callback("c1", "delivered", 1).await.unwrap();
        assert!(store.callbacks_due().await.unwrap().is_empty());
        // A result answered on the spot is not due at all.
        assert!(store.enqueue(call("c2", None)).await.unwrap());
        store
            .claim_calls("pid:1", 4, now, now, |_| 4)
            .await
            .unwrap();
        store
            .finish_call(Finish {
                result: Some(b"x".to_vec()),
                answered: true,
                ..finish("c2".into(), CallState::Done, false)
            })
            .await
            .unwrap();
        assert!(store.callbacks_due().await.unwrap().is_empty());
        let entries = store.queue_entries(None, None, 10).await.unwrap();
        let c2 = entries.iter().find(|e| e.call_id == "c2").unwrap();
        assert_eq!(c2.callback_state.as_deref(), Some("answered"));
        assert_eq!(c2.trigger.as_deref(), Some("slack"));
    }
}
