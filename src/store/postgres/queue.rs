//! The durable queue on PostgreSQL: [`crate::store::Store`]'s queue methods (see
//! `src/store/queue.rs`), for calls that any gateway on the database may run. An accepted
//! call comes in and is committed (with its delivery id, in one transaction per group of
//! calls) before its 202 goes out; gateways claim due calls, each call by one of them
//! (`FOR UPDATE SKIP LOCKED`), and write each call's outcome back.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Object, Pool};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_postgres::Row;

use super::PgStore;
use crate::store::queue::{FINISHED_KEPT, PRUNE_EVERY};
use crate::store::{answer_batch, commit, next_batch, GroupCommit, DELIVERY_IDS_KEPT_SECS};
use crate::store::{
    CallState, CallbackDue, Finish, QueueCounts, QueueEntry, QueuedCall, StoreError,
};

/// The queue's table (part of schema version 1). As on SQLite, `next_attempt_at` and
/// `lease_until` are unix milliseconds; `seq` orders the calls as they were queued (what
/// SQLite's `rowid` does), for pruning finished calls.
pub(super) const SCHEMA: &str = "
CREATE TABLE queue (
    call_id TEXT PRIMARY KEY,
    function TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    query TEXT,
    headers TEXT NOT NULL,
    body BYTEA NOT NULL,
    callback_url TEXT,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    owner TEXT,
    lease_until BIGINT,
    status INTEGER,
    error TEXT,
    duration_ms DOUBLE PRECISION,
    result BYTEA,
    callback_state TEXT,
    callback_attempts BIGINT NOT NULL DEFAULT 0,
    created_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    trigger TEXT,
    reply TEXT,
    seq BIGSERIAL NOT NULL
);
CREATE INDEX queue_due ON queue (state, next_attempt_at);
CREATE INDEX queue_callbacks ON queue (callback_state);
CREATE INDEX queue_by_seq ON queue (seq);
";

/// The most items one group commit takes.
const BATCH_MAX: usize = 1024;

/// Batches of one writer committing at once.
const IN_FLIGHT: usize = 2;

/// The group-commit writers of enqueues and finishes. Cloning shares them.
#[derive(Clone)]
pub(super) struct Writers {
    enqueues: GroupCommit<QueuedCall, bool>,
    finishes: GroupCommit<Finish, ()>,
}

impl Writers {
    /// Starts the two writers, each committing on a connection of `pool`; they stop
    /// when the last clone is dropped.
    pub(super) fn start(pool: Pool) -> Writers {
        // Calls finished through this writer, for pruning.
        let mut finished: u64 = 0;
        Writers {
            enqueues: group_commit(pool.clone(), "committing queued calls", insert_calls),
            finishes: group_commit(pool, "recording finished calls", move |client, batch| {
                let before = finished;
                finished += batch.len() as u64;
                let prune = before / PRUNE_EVERY != finished / PRUNE_EVERY;
                finish_calls(client, batch, prune)
            }),
        }
    }
}

/// Starts a group-commit writer, as on SQLite: every item that arrives while a commit
/// is under way joins the next one (up to [`BATCH_MAX`] per transaction). Unlike SQLite,
/// whose one writer commits at a time, PostgreSQL commits [`IN_FLIGHT`] batches at once,
/// each on a connection of its own: a commit spends most of its time waiting for a round
/// trip or the server's disk. `write` commits one batch on a pooled connection and returns
/// each item's outcome; when it fails (or no connection is to be had), every item of the
/// batch gets the error.
fn group_commit<T, R, W, F>(pool: Pool, what: &'static str, mut write: W) -> GroupCommit<T, R>
where
    T: Send + 'static,
    R: Copy + Default + Send + 'static,
    W: FnMut(Object, Vec<T>) -> F + Send + 'static,
    F: Future<Output = Result<Vec<R>, StoreError>> + Send + 'static,
{
    let (tx, mut rx) = mpsc::unbounded_channel::<(T, oneshot::Sender<Result<R, StoreError>>)>();
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            // Items go on arriving while the batches in flight commit: they make the next.
            let Ok(permit) = in_flight.clone().acquire_owned().await else {
                return;
            };
            let (items, acks) = next_batch(&mut rx, first, BATCH_MAX);
            let written = match pool.get().await {
                Ok(client) => Ok(write(client, items)),
                Err(e) => Err(StoreError::from(e)),
            };
            tokio::spawn(async move {
                let outcome = match written {
                    Ok(commit) => commit.await,
                    Err(e) => Err(e),
                };
                drop(permit);
                answer_batch(acks, &outcome, what);
            });
        }
    });
    tx
}

/// Inserts calls in one transaction; whether each was queued. As on SQLite: a call id
/// already queued is left as it is, a call whose delivery id was seen before is not
/// queued (its delivery id is remembered otherwise), and within the batch the first of
/// two calls with one call id or one delivery id wins. Rows are written in key order, so
/// that two gateways' batches wait on each other at most, never deadlock.
async fn insert_calls(mut client: Object, calls: Vec<QueuedCall>) -> Result<Vec<bool>, StoreError> {
    let now = Utc::now();
    // The first call of each delivery id in the batch is the one that may remember it.
    let mut first_delivery: HashMap<(&str, &str), usize> = HashMap::new();
    for (i, c) in calls.iter().enumerate() {
        if let Some((route, id)) = &c.delivery {
            first_delivery
                .entry((route.as_str(), id.as_str()))
                .or_insert(i);
        }
    }
    if first_delivery.is_empty() {
        // One statement, its own transaction: one round trip (a slash command, an API
        // call) instead of four.
        let every = vec![true; calls.len()];
        return insert_rows(&client, &calls, &every, now).await;
    }
    let tx = client.transaction().await?;
    tx.execute(
        "DELETE FROM deliveries WHERE received_at < $1",
        &[&(now.timestamp() - DELIVERY_IDS_KEPT_SECS)],
    )
    .await?;
    let mut keys: Vec<(&str, &str)> = first_delivery.keys().copied().collect();
    keys.sort_unstable();
    let (routes, ids): (Vec<&str>, Vec<&str>) = keys.into_iter().unzip();
    let remember = tx
        .prepare_cached(
            "INSERT INTO deliveries (channel, id, received_at)
             SELECT d.channel, d.id, $3::BIGINT FROM unnest($1::TEXT[], $2::TEXT[]) AS d(channel, id)
             ON CONFLICT DO NOTHING
             RETURNING channel, id",
        )
        .await?;
    let remembered = tx
        .query(&remember, &[&routes, &ids, &now.timestamp()])
        .await?;
    // A call without a delivery id, or the first of a delivery id seen for the first time.
    let mut new: Vec<bool> = calls.iter().map(|c| c.delivery.is_none()).collect();
    for row in &remembered {
        let key: (&str, &str) = (row.get(0), row.get(1));
        if let Some(&i) = first_delivery.get(&key) {
            new[i] = true;
        }
    }
    let queued = insert_rows(&tx, &calls, &new, now).await?;
    tx.commit().await?;
    Ok(queued)
}

/// Inserts the calls marked `new` (the first of each call id among them), in call id
/// order; whether each was queued.
async fn insert_rows(
    db: &impl GenericClient,
    calls: &[QueuedCall],
    new: &[bool],
    now: DateTime<Utc>,
) -> Result<Vec<bool>, StoreError> {
    let mut first_call: HashMap<&str, usize> = HashMap::new();
    for (i, c) in calls.iter().enumerate() {
        if new[i] {
            first_call.entry(c.call_id.as_str()).or_insert(i);
        }
    }
    let mut queued = vec![false; calls.len()];
    if first_call.is_empty() {
        return Ok(queued);
    }
    let mut order: Vec<usize> = first_call.values().copied().collect();
    order.sort_unstable_by_key(|&i| calls[i].call_id.as_str());
    let picked = || order.iter().map(|&i| &calls[i]);
    let call_ids: Vec<&str> = picked().map(|c| c.call_id.as_str()).collect();
    let functions: Vec<&str> = picked().map(|c| c.function.as_str()).collect();
    let methods: Vec<&str> = picked().map(|c| c.method.as_str()).collect();
    let paths: Vec<&str> = picked().map(|c| c.path.as_str()).collect();
    let queries: Vec<Option<&str>> = picked().map(|c| c.query.as_deref()).collect();
    let headers = picked()
        .map(|c| serde_json::to_string(&c.headers))
        .collect::<Result<Vec<_>, _>>()?;
    let bodies: Vec<&[u8]> = picked().map(|c| c.body.as_slice()).collect();
    let callbacks: Vec<Option<&str>> = picked().map(|c| c.callback_url.as_deref()).collect();
    let triggers: Vec<Option<&str>> = picked().map(|c| c.trigger.as_deref()).collect();
    let replies: Vec<Option<&str>> = picked().map(|c| c.reply.as_deref()).collect();
    let owners: Vec<Option<&str>> = picked()
        .map(|c| c.lease.as_ref().map(|(owner, _)| owner.as_str()))
        .collect();
    let leases: Vec<Option<i64>> = picked()
        .map(|c| c.lease.as_ref().map(|(_, until)| until.timestamp_millis()))
        .collect();
    let insert = db
        .prepare_cached(
            "INSERT INTO queue (call_id, function, method, path, query, headers, body,
                callback_url, trigger, reply, owner, lease_until, state, attempts,
                next_attempt_at, created_at)
             SELECT c.call_id, c.function, c.method, c.path, c.query, c.headers, c.body,
                c.callback_url, c.trigger, c.reply, c.owner, c.lease_until,
                CASE WHEN c.owner IS NULL THEN 'pending' ELSE 'running' END, 0, $13::BIGINT,
                $14::TIMESTAMPTZ
             FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[],
                $6::TEXT[], $7::BYTEA[], $8::TEXT[], $9::TEXT[], $10::TEXT[], $11::TEXT[],
                $12::BIGINT[])
                AS c(call_id, function, method, path, query, headers, body, callback_url,
                     trigger, reply, owner, lease_until)
             ON CONFLICT (call_id) DO NOTHING
             RETURNING call_id",
        )
        .await?;
    let inserted = db
        .query(
            &insert,
            &[
                &call_ids,
                &functions,
                &methods,
                &paths,
                &queries,
                &headers,
                &bodies,
                &callbacks,
                &triggers,
                &replies,
                &owners,
                &leases,
                &now.timestamp_millis(),
                &now,
            ],
        )
        .await?;
    for row in &inserted {
        if let Some(&i) = first_call.get(row.get::<_, &str>(0)) {
            queued[i] = true;
        }
    }
    Ok(queued)
}

/// Records finished calls in one statement (the last outcome of a call sent twice in
/// the batch wins, as one after the other would); with `prune`, also forgets the done
/// and cancelled calls with nothing left to deliver that are older than the newest
/// [`FINISHED_KEPT`] calls. Dead letters stay until someone re-queues or removes them.
async fn finish_calls(
    mut client: Object,
    finishes: Vec<Finish>,
    prune: bool,
) -> Result<Vec<()>, StoreError> {
    let mut last: HashMap<&str, &Finish> = HashMap::new();
    for f in &finishes {
        last.insert(&f.call_id, f);
    }
    let mut batch: Vec<&Finish> = last.into_values().collect();
    batch.sort_unstable_by(|x, y| x.call_id.cmp(&y.call_id));
    let call_ids: Vec<&str> = batch.iter().map(|f| f.call_id.as_str()).collect();
    let states: Vec<&str> = batch.iter().map(|f| f.state.as_str()).collect();
    let attempts: Vec<i64> = batch.iter().map(|f| i64::from(f.attempts)).collect();
    let statuses: Vec<i32> = batch.iter().map(|f| i32::from(f.status)).collect();
    let errors: Vec<Option<String>> = batch
        .iter()
        .map(|f| f.error.as_deref().map(|e| super::text(e).into_owned()))
        .collect();
    let durations: Vec<f64> = batch.iter().map(|f| f.duration_ms).collect();
    let results: Vec<Option<&[u8]>> = batch.iter().map(|f| f.result.as_deref()).collect();
    let ats: Vec<DateTime<Utc>> = batch.iter().map(|f| f.at).collect();
    let answered: Vec<bool> = batch.iter().map(|f| f.answered).collect();

    let record = "UPDATE queue SET state = f.state, attempts = f.attempts, status = f.status,
            error = f.error, duration_ms = f.duration_ms,
            result = CASE WHEN f.answered OR (queue.callback_url IS NULL AND queue.reply IS NULL)
                THEN NULL ELSE f.result END,
            callback_state = CASE WHEN f.answered THEN 'answered'
                WHEN queue.callback_url IS NULL AND queue.reply IS NULL THEN NULL
                ELSE 'pending' END,
            body = CASE WHEN f.state = 'done' THEN ''::BYTEA ELSE queue.body END,
            owner = NULL, lease_until = NULL, finished_at = f.at
         FROM unnest($1::TEXT[], $2::TEXT[], $3::BIGINT[], $4::INTEGER[], $5::TEXT[],
            $6::FLOAT8[], $7::BYTEA[], $8::TIMESTAMPTZ[], $9::BOOLEAN[])
            AS f(call_id, state, attempts, status, error, duration_ms, result, at, answered)
         WHERE queue.call_id = f.call_id";
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 9] = [
        &call_ids, &states, &attempts, &statuses, &errors, &durations, &results, &ats, &answered,
    ];
    if !prune {
        // One statement, its own transaction: one round trip.
        let record = client.prepare_cached(record).await?;
        client.execute(&record, &params).await?;
        return Ok(vec![(); finishes.len()]);
    }
    let tx = client.transaction().await?;
    tx.execute(record, &params).await?;
    tx.execute(
        "DELETE FROM queue WHERE state IN ('done', 'cancelled')
            AND (callback_state IS NULL OR callback_state <> 'pending')
            AND seq <= (SELECT MAX(seq) FROM queue) - $1",
        &[&FINISHED_KEPT],
    )
    .await?;
    tx.commit().await?;
    Ok(vec![(); finishes.len()])
}

/// A count stored from a `u32` (attempts), back as one.
fn stored_u32(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// An HTTP status stored from a `u16`, back as one.
fn stored_status(status: Option<i32>) -> Option<u16> {
    status.and_then(|s| u16::try_from(s).ok())
}

fn queue_entry(r: &Row) -> QueueEntry {
    let state = CallState::parse(r.get(2));
    QueueEntry {
        call_id: r.get(0),
        function: r.get(1),
        state,
        attempts: stored_u32(r.get(3)),
        status: stored_status(r.get(4)),
        error: r.get(5),
        created_at: r.get(6),
        next_attempt_at: (state == CallState::Pending)
            .then(|| DateTime::from_timestamp_millis(r.get(7)))
            .flatten(),
        callback_url: r.get(8),
        callback_state: r.get(9),
        trigger: r.get(10),
    }
}

impl PgStore {
    /// Queues an async call durably: when this returns `Ok(true)`, the call is committed;
    /// `Ok(false)`: its call id or delivery id was queued before (through any gateway),
    /// and it is not again.
    pub async fn enqueue(&self, call: QueuedCall) -> Result<bool, StoreError> {
        commit(&self.queue.enqueues, call).await
    }

    /// Claims up to `limit` due calls for `owner`, marking them running until
    /// `lease_until`, and at most `room(function)` calls of each function. Also says
    /// whether due calls were left (for want of room, or being claimed by another
    /// gateway). Calls another gateway is claiming at the same moment are skipped, never
    /// taken by both.
    ///
    /// Two statements, each its own transaction: the due calls are read without a lock,
    /// then those of them still pending and not being claimed elsewhere are locked, chosen
    /// (oldest first, within each function's room), marked and read back. An explicit
    /// transaction would cost three more round trips (BEGIN, a setting, COMMIT), and on a
    /// busy machine each is a wait for the server to be scheduled.
    pub async fn claim_calls(
        &self,
        owner: &str,
        limit: usize,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        mut room: impl FnMut(&str) -> usize + Send + 'static,
    ) -> Result<(Vec<QueuedCall>, bool), StoreError> {
        let scan = i64::try_from(limit.saturating_mul(8)).unwrap_or(i64::MAX);
        let client = self.pool.get().await?;
        let due = client
            .prepare_cached(
                "SELECT call_id, function FROM queue
                 WHERE state = 'pending' AND next_attempt_at <= $1
                 ORDER BY next_attempt_at LIMIT $2",
            )
            .await?;
        let rows = client
            .query(&due, &[&now.timestamp_millis(), &scan])
            .await?;
        let mut ids: Vec<&str> = Vec::with_capacity(rows.len());
        let mut rooms: HashMap<&str, i64> = HashMap::new();
        for r in &rows {
            let function: &str = r.get(1);
            let free = *rooms
                .entry(function)
                .or_insert_with(|| i64::try_from(room(function)).unwrap_or(i64::MAX));
            if free > 0 {
                ids.push(r.get(0));
            }
        }
        if ids.is_empty() {
            return Ok((Vec::new(), !rows.is_empty()));
        }
        let (functions, rooms): (Vec<&str>, Vec<i64>) = rooms.into_iter().unzip();
        // `set_config(…, true)` holds until this statement's own commit, which therefore
        // does not wait for the server's disk: a claim lost with the server's last commits
        // leaves its calls pending, to run again (at least once, as after any crash).
        let mark = client
            .prepare_cached(
                "WITH quick AS MATERIALIZED (
                     SELECT set_config('synchronous_commit', 'off', true)
                 ), free AS (
                     SELECT call_id, function, next_attempt_at FROM queue
                     WHERE call_id = ANY($1) AND state = 'pending'
                     FOR UPDATE SKIP LOCKED
                 ), ranked AS (
                     SELECT call_id, next_attempt_at, room,
                            row_number() OVER (PARTITION BY function
                                               ORDER BY next_attempt_at) AS nth
                     FROM free JOIN unnest($2::text[], $3::int8[]) AS r(function, room)
                          USING (function)
                 ), chosen AS (
                     SELECT call_id FROM ranked WHERE nth <= room
                     ORDER BY next_attempt_at LIMIT $4
                 ), marked AS (
                     UPDATE queue SET state = 'running', owner = $5, lease_until = $6
                     FROM quick
                     WHERE call_id IN (SELECT call_id FROM chosen)
                     RETURNING call_id, function, method, path, query, headers, body,
                               callback_url, attempts, trigger, reply, next_attempt_at
                 )
                 SELECT * FROM marked ORDER BY next_attempt_at",
            )
            .await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let marked = client
            .query(
                &mark,
                &[
                    &ids,
                    &functions,
                    &rooms,
                    &limit,
                    &owner,
                    &lease_until.timestamp_millis(),
                ],
            )
            .await?;
        let mut claimed = Vec::with_capacity(marked.len());
        for r in &marked {
            claimed.push(QueuedCall {
                call_id: r.get(0),
                function: r.get(1),
                method: r.get(2),
                path: r.get(3),
                query: r.get(4),
                headers: serde_json::from_str(r.get(5))?,
                body: r.get(6),
                callback_url: r.get(7),
                attempts: stored_u32(r.get(8)),
                trigger: r.get(9),
                reply: r.get(10),
                delivery: None,
                lease: None,
            });
        }
        Ok((claimed, marked.len() < rows.len()))
    }

    /// Puts back to pending the running calls whose owner is gone (`is_alive` says no)
    /// or whose lease ran out by `now`; how many. A call two gateways reclaim at the same
    /// moment is reclaimed by one.
    pub async fn reclaim_calls(
        &self,
        is_alive: fn(&str) -> bool,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let now = now.timestamp_millis();
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let running = tx
            .query(
                "SELECT call_id, owner, lease_until FROM queue WHERE state = 'running'
                 FOR UPDATE SKIP LOCKED",
                &[],
            )
            .await?;
        let gone: Vec<&str> = running
            .iter()
            .filter(|r| {
                let expired = r.get::<_, Option<i64>>(2).is_none_or(|l| l < now);
                let orphaned = r.get::<_, Option<&str>>(1).is_none_or(|o| !is_alive(o));
                expired || orphaned
            })
            .map(|r| r.get(0))
            .collect();
        let reclaimed = if gone.is_empty() {
            0
        } else {
            tx.execute(
                "UPDATE queue SET state = 'pending', owner = NULL, lease_until = NULL,
                    next_attempt_at = $2
                 WHERE call_id = ANY($1) AND state = 'running'",
                &[&gone, &now],
            )
            .await?
        };
        tx.commit().await?;
        Ok(usize::try_from(reclaimed).unwrap_or(usize::MAX))
    }

    /// Moves to `until` the lease of every call `owner` is running: the heartbeat that
    /// keeps other gateways from running them again. How many. A call whose row another
    /// transaction holds (its outcome being recorded, as a rule) is left for the next
    /// heartbeat: locking rows in the table's order while a finishing batch locks them in
    /// its own could deadlock, and make both fail.
    pub async fn renew_leases(
        &self,
        owner: &str,
        until: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let client = self.pool.get().await?;
        let renewed = client
            .execute(
                "UPDATE queue SET lease_until = $2::BIGINT WHERE call_id IN (
                    SELECT call_id FROM queue WHERE owner = $1::TEXT AND state = 'running'
                    FOR UPDATE SKIP LOCKED)",
                &[&owner, &until.timestamp_millis()],
            )
            .await?;
        Ok(usize::try_from(renewed).unwrap_or(usize::MAX))
    }

    /// Records that a call finished for good. Calls finishing at once are recorded in one
    /// transaction.
    pub async fn finish_call(&self, finish: Finish) -> Result<(), StoreError> {
        commit(&self.queue.finishes, finish).await
    }

    /// Schedules another attempt, at `at`, of a failed call that is running.
    pub async fn retry_call_later(
        &self,
        call_id: &str,
        attempts: u32,
        status: u16,
        error: Option<String>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let error = error.map(|e| super::text(&e).into_owned());
        let client = self.pool.get().await?;
        client
            .execute(
                "UPDATE queue SET state = 'pending', attempts = $2, status = $3, error = $4,
                    next_attempt_at = $5, owner = NULL, lease_until = NULL
                 WHERE call_id = $1 AND state = 'running'",
                &[
                    &call_id,
                    &i64::from(attempts),
                    &i32::from(status),
                    &error,
                    &at.timestamp_millis(),
                ],
            )
            .await?;
        Ok(())
    }

    /// Cancels a pending call; the state it was in, if it exists.
    pub async fn cancel_call(&self, call_id: &str) -> Result<Option<CallState>, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let Some(state) = locked_state(&tx, call_id).await? else {
            return Ok(None);
        };
        if state == CallState::Pending {
            tx.execute(
                "UPDATE queue SET state = 'cancelled', finished_at = $2, body = ''::BYTEA
                 WHERE call_id = $1",
                &[&call_id, &Utc::now()],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Some(state))
    }

    /// Moves a dead-lettered call back to pending; the state it was in, if it exists.
    pub async fn requeue_dead(&self, call_id: &str) -> Result<Option<CallState>, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let Some(state) = locked_state(&tx, call_id).await? else {
            return Ok(None);
        };
        if state == CallState::Dead {
            tx.execute(
                "UPDATE queue SET state = 'pending', attempts = 0, next_attempt_at = $2,
                    error = NULL, callback_state = NULL, result = NULL, finished_at = NULL
                 WHERE call_id = $1",
                &[&call_id, &Utc::now().timestamp_millis()],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Some(state))
    }

    /// Queued calls, newest first, optionally in one state and of one function.
    pub async fn queue_entries(
        &self,
        state: Option<CallState>,
        function: Option<String>,
        limit: u32,
    ) -> Result<Vec<QueueEntry>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT call_id, function, state, attempts, status, error, created_at,
                        next_attempt_at, callback_url, callback_state, trigger
                 FROM queue WHERE ($1::TEXT IS NULL OR state = $1)
                    AND ($2::TEXT IS NULL OR function = $2)
                 ORDER BY created_at DESC, seq DESC LIMIT $3",
                &[&state.map(CallState::as_str), &function, &i64::from(limit)],
            )
            .await?;
        Ok(rows.iter().map(queue_entry).collect())
    }

    /// How many calls are pending or running.
    pub async fn queue_depth(&self) -> Result<u64, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "SELECT COUNT(*) FROM queue WHERE state IN ('pending', 'running')",
                &[],
            )
            .await?;
        Ok(row.get::<_, i64>(0).max(0) as u64)
    }

    /// How many calls wait or run (`depth`) and how many used up their retries (`dead`),
    /// for `/metrics`.
    pub async fn queue_counts(&self) -> Result<QueueCounts, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "SELECT COUNT(*) FILTER (WHERE state IN ('pending', 'running')),
                        COUNT(*) FILTER (WHERE state = 'dead')
                 FROM queue",
                &[],
            )
            .await?;
        Ok(QueueCounts {
            depth: row.get::<_, i64>(0).max(0) as u64,
            dead: row.get::<_, i64>(1).max(0) as u64,
        })
    }

    /// The bytes ([`QueuedCall::stored_bytes`]) that pending, running and dead calls
    /// hold, by function: what the queue's byte quota starts from.
    pub async fn queue_bytes(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT function, SUM(octet_length(headers)::BIGINT + octet_length(body))::BIGINT
                 FROM queue WHERE state IN ('pending', 'running', 'dead')
                 GROUP BY function ORDER BY function",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get::<_, i64>(1).max(0) as u64))
            .collect())
    }

    /// The function and the bytes ([`QueuedCall::stored_bytes`]) of a call, if it exists.
    pub async fn call_bytes(&self, call_id: &str) -> Result<Option<(String, u64)>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT function, octet_length(headers)::BIGINT + octet_length(body)
                 FROM queue WHERE call_id = $1",
                &[&call_id],
            )
            .await?;
        Ok(row.map(|r| (r.get(0), r.get::<_, i64>(1).max(0) as u64)))
    }

    /// Finished calls whose callback or reply is still to be delivered, oldest first.
    pub async fn callbacks_due(&self) -> Result<Vec<CallbackDue>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT call_id, function, callback_url, reply, status, error, duration_ms,
                        result, callback_attempts
                 FROM queue WHERE callback_state = 'pending'
                    AND (callback_url IS NOT NULL OR reply IS NOT NULL)
                 ORDER BY seq",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| CallbackDue {
                call_id: r.get(0),
                function: r.get(1),
                url: r.get(2),
                reply: r.get(3),
                status: stored_status(r.get(4)).unwrap_or(0),
                error: r.get(5),
                duration_ms: r.get::<_, Option<f64>>(6).unwrap_or(0.0),
                body: r.get::<_, Option<Vec<u8>>>(7).unwrap_or_default(),
                attempts: stored_u32(r.get(8)),
            })
            .collect())
    }

    /// Records a callback delivery attempt; `delivered` or `failed` ends it.
    pub async fn record_callback(
        &self,
        call_id: &str,
        state: &'static str,
        attempts: u32,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "UPDATE queue SET callback_state = $2, callback_attempts = $3,
                    result = CASE WHEN $2 = 'pending' THEN result ELSE NULL END
                 WHERE call_id = $1",
                &[&call_id, &state, &i64::from(attempts)],
            )
            .await?;
        Ok(())
    }
}

/// The state of a queued call, if it exists, with its row locked until `tx` ends.
async fn locked_state(
    tx: &deadpool_postgres::Transaction<'_>,
    call_id: &str,
) -> Result<Option<CallState>, StoreError> {
    let row = tx
        .query_opt(
            "SELECT state FROM queue WHERE call_id = $1 FOR UPDATE",
            &[&call_id],
        )
        .await?;
    Ok(row.map(|r| CallState::parse(r.get(0))))
}
