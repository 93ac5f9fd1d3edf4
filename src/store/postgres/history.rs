//! Activation records and their stories on PostgreSQL: [`super::super::Store`]'s
//! activation methods (see `src/store/mod.rs` and `src/store/story.rs`). Records come in
//! through a channel send and are committed in batches by a background writer, which
//! also prunes the history to its [`Retention`]; reads go out from the pool.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use deadpool_postgres::{Pool, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::{text, PgStore};
use crate::function::FunctionName;
use crate::store::{
    settle_stories, story, write_batches, Activation, CallPoint, Record, Retention, StoreError,
    Story, Write,
};

/// The activation records' table (part of schema version 1). `seq` orders records as
/// they were written, across gateways: SQLite's `rowid`. The partial index lets a prune
/// sum and walk the kept stories without reading the records' rows.
pub(super) const SCHEMA: &str = "
CREATE TABLE activations (
    seq BIGSERIAL PRIMARY KEY,
    call_id TEXT NOT NULL,
    function TEXT NOT NULL,
    trigger TEXT NOT NULL,
    status INTEGER NOT NULL CHECK (status BETWEEN 0 AND 65535),
    duration_ms DOUBLE PRECISION NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    error TEXT,
    replay_of TEXT,
    story TEXT,
    story_bytes BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX activations_by_function ON activations (function, started_at);
CREATE INDEX activations_by_time ON activations (started_at);
CREATE INDEX activations_by_call ON activations (call_id, seq);
CREATE INDEX activations_with_stories ON activations (seq) INCLUDE (story_bytes)
    WHERE story IS NOT NULL;
";

/// The advisory lock a gateway holds while it prunes ("harkhist" in ASCII): one prunes
/// at a time, and the others skip theirs meanwhile.
const PRUNE_LOCK: i64 = 0x6861_726b_6869_7374;

/// The background writer of activation records: where records are sent, and how much
/// history it keeps. Cloning shares both; the writer stops when the last clone goes.
#[derive(Clone)]
pub(super) struct Writer {
    writes: mpsc::UnboundedSender<Write>,
    retention: Arc<Mutex<Retention>>,
}

impl Writer {
    /// Starts the tasks that finish stories (`settle_stories`) and write records to
    /// `pool`, keeping [`Retention::default`] until told otherwise.
    pub(super) fn start(pool: Pool) -> Writer {
        let (writes, settling) = mpsc::unbounded_channel();
        let (settled, rx) = mpsc::unbounded_channel();
        let retention = Arc::new(Mutex::new(Retention::default()));
        tokio::spawn(settle_stories(settling, settled));
        tokio::spawn(write_activations(pool, rx, retention.clone()));
        Writer { writes, retention }
    }
}

impl PgStore {
    /// Queues an activation record, with its story when one was told (and the work left
    /// on it, done just before it is written), for the background writer.
    pub fn record(&self, activation: Activation, story: Option<(Story, Option<story::Later>)>) {
        let (story, later) = story.map_or((None, None), |(s, l)| (Some(s), l));
        let record = Box::new(Record {
            activation,
            story,
            later,
        });
        if self.history.writes.send(Write::Record(record)).is_err() {
            tracing::error!("activation writer has stopped; record dropped");
        }
    }

    /// Marks the newest activation of `call_id` as a replay of `original` (once this
    /// gateway's record of it is written).
    pub async fn link_replay(&self, call_id: &str, original: &str) -> Result<(), StoreError> {
        self.flush().await;
        let client = self.pool.get().await?;
        client
            .execute(
                "UPDATE activations SET replay_of = $2 WHERE seq =
                 (SELECT MAX(seq) FROM activations WHERE call_id = $1)",
                &[&call_id, &original],
            )
            .await?;
        Ok(())
    }

    /// Sets how much activation history is kept, from this gateway's next prune on.
    pub fn set_retention(&self, retention: Retention) {
        *self
            .history
            .retention
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = retention;
    }

    /// The newest activation of call `call_id`, with its story when it is still kept.
    pub async fn activation(
        &self,
        call_id: &str,
    ) -> Result<Option<(Activation, Option<Story>)>, StoreError> {
        self.flush().await;
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT call_id, function, trigger, status, duration_ms, started_at, error, replay_of, story
                 FROM activations WHERE call_id = $1 ORDER BY seq DESC LIMIT 1",
                &[&call_id],
            )
            .await?;
        Ok(row.map(|r| {
            let story = r
                .get::<_, Option<&str>>(8)
                .and_then(|json| serde_json::from_str(json).ok());
            (activation_row(&r), story)
        }))
    }

    /// Waits until every activation this gateway recorded so far is written (or its
    /// batch was tried).
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.history.writes.send(Write::Flush(done)).is_ok() {
            let _ = written.await;
        }
    }

    /// The newest activations, optionally of one function. Records this gateway still
    /// has queued are written first, so a call that has answered here is always listed.
    pub async fn activations(
        &self,
        function: Option<&FunctionName>,
        limit: u32,
    ) -> Result<Vec<Activation>, StoreError> {
        self.flush().await;
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT call_id, function, trigger, status, duration_ms, started_at, error, replay_of
                 FROM activations WHERE ($1::TEXT IS NULL OR function = $1)
                 ORDER BY started_at DESC, seq DESC LIMIT $2",
                &[&function.map(FunctionName::as_str), &i64::from(limit)],
            )
            .await?;
        Ok(rows.iter().map(activation_row).collect())
    }

    /// When each activation since `since` started, how long it took and how it ended,
    /// optionally of one function: what the UI's charts are drawn from. At most `limit`
    /// rows, the newest.
    pub async fn calls_since(
        &self,
        function: Option<&FunctionName>,
        since: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<CallPoint>, StoreError> {
        self.flush().await;
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT function, started_at, duration_ms, status FROM activations
                 WHERE started_at >= $1 AND ($2::TEXT IS NULL OR function = $2)
                 ORDER BY started_at DESC LIMIT $3",
                &[
                    &since,
                    &function.map(FunctionName::as_str),
                    &i64::from(limit),
                ],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| CallPoint {
                function: r.get(0),
                started_at: r.get(1),
                duration_ms: r.get(2),
                status: status(r.get(3)),
            })
            .collect())
    }

    /// How many activations each function has, by name.
    pub async fn activation_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT function, COUNT(*) FROM activations GROUP BY function ORDER BY function",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), u64::try_from(r.get::<_, i64>(1)).unwrap_or(0)))
            .collect())
    }
}

/// An activation's record as it is read back: the columns of `activations` in order.
fn activation_row(r: &tokio_postgres::Row) -> Activation {
    Activation {
        call_id: r.get(0),
        function: r.get(1),
        trigger: r.get(2),
        status: status(r.get(3)),
        duration_ms: r.get(4),
        started_at: r.get(5),
        error: r.get(6),
        replay_of: r.get(7),
    }
}

/// A stored status: the column's `CHECK` keeps it within `u16`.
fn status(stored: i32) -> u16 {
    u16::try_from(stored).unwrap_or_default()
}

/// PostgreSQL's activation writer: [`write_batches`], each batch in one transaction on
/// a connection of `pool`.
async fn write_activations(
    pool: Pool,
    rx: mpsc::UnboundedReceiver<Write>,
    retention: Arc<Mutex<Retention>>,
) {
    write_batches(rx, retention, move |records, prune| {
        let pool = pool.clone();
        async move {
            let written = insert_activations(&pool, Rows::of(&records), prune).await;
            (written, records)
        }
    })
    .await;
}

/// A batch of records as the columns [`insert_activations`] sends, in the records' order,
/// stories as JSON. It holds none of a record's story work ([`story::Later`]), which is
/// not `Sync`, so the insert can await while holding it.
struct Rows<'a> {
    call_ids: Vec<Cow<'a, str>>,
    functions: Vec<Cow<'a, str>>,
    triggers: Vec<Cow<'a, str>>,
    statuses: Vec<i32>,
    durations: Vec<f64>,
    started: Vec<DateTime<Utc>>,
    errors: Vec<Option<Cow<'a, str>>>,
    stories: Vec<Option<String>>,
    story_bytes: Vec<i64>,
}

impl<'a> Rows<'a> {
    /// The columns of `records`.
    fn of(records: &'a [Box<Record>]) -> Rows<'a> {
        let activations = records.iter().map(|r| &r.activation);
        let stories: Vec<Option<String>> = records
            .iter()
            .map(|r| r.story.as_ref().and_then(|s| serde_json::to_string(s).ok()))
            .collect();
        Rows {
            call_ids: activations.clone().map(|a| text(&a.call_id)).collect(),
            functions: activations.clone().map(|a| text(&a.function)).collect(),
            triggers: activations.clone().map(|a| text(&a.trigger)).collect(),
            statuses: activations.clone().map(|a| i32::from(a.status)).collect(),
            durations: activations.clone().map(|a| a.duration_ms).collect(),
            started: activations.clone().map(|a| a.started_at).collect(),
            errors: activations.map(|a| a.error.as_deref().map(text)).collect(),
            story_bytes: stories
                .iter()
                .map(|s| s.as_ref().map_or(0, |s| s.len() as i64))
                .collect(),
            stories,
        }
    }
}

/// Inserts `rows` in one transaction, in their order; with `prune`, also prunes the
/// history to it ([`prune_history`]). Returns the bytes of the stories written.
async fn insert_activations(
    pool: &Pool,
    rows: Rows<'_>,
    prune: Option<Retention>,
) -> Result<u64, StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute(
        "INSERT INTO activations (call_id, function, trigger, status, duration_ms, started_at, error, story, story_bytes)
         SELECT call_id, function, trigger, status, duration_ms, started_at, error, story, story_bytes
         FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::INTEGER[], $5::FLOAT8[],
                     $6::TIMESTAMPTZ[], $7::TEXT[], $8::TEXT[], $9::BIGINT[])
              WITH ORDINALITY AS r (call_id, function, trigger, status, duration_ms, started_at,
                                    error, story, story_bytes, n)
         ORDER BY n",
        &[
            &rows.call_ids,
            &rows.functions,
            &rows.triggers,
            &rows.statuses,
            &rows.durations,
            &rows.started,
            &rows.errors,
            &rows.stories,
            &rows.story_bytes,
        ],
    )
    .await?;
    if let Some(keep) = prune {
        prune_history(&tx, keep).await?;
    }
    tx.commit().await?;
    Ok(rows.story_bytes.iter().map(|&b| b as u64).sum())
}

/// Deletes the records past `keep`'s count and age, then drops the oldest stories (their
/// records stay) until those kept hold at most its bytes, to 7/8 of them so that pruning
/// is not needed again at once (`story::prune`). The bytes are summed over the table at
/// each prune, as other gateways add stories too. Skipped while another gateway prunes.
async fn prune_history(tx: &Transaction<'_>, keep: Retention) -> Result<(), StoreError> {
    let ours: bool = tx
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&PRUNE_LOCK])
        .await?
        .get(0);
    if !ours {
        return Ok(());
    }
    tx.execute(
        "DELETE FROM activations WHERE seq <= (SELECT MAX(seq) FROM activations) - $1",
        &[&i64::try_from(keep.max_records).unwrap_or(i64::MAX)],
    )
    .await?;
    let oldest = keep
        .max_age
        .and_then(|a| chrono::Duration::from_std(a).ok())
        .and_then(|age| Utc::now().checked_sub_signed(age))
        // No record started before 1970; PostgreSQL refuses times before 4713 BC.
        .filter(|oldest| oldest.timestamp() > 0);
    if let Some(oldest) = oldest {
        tx.execute("DELETE FROM activations WHERE started_at < $1", &[&oldest])
            .await?;
    }
    let total: i64 = tx
        .query_one(
            "SELECT COALESCE(SUM(story_bytes), 0)::BIGINT FROM activations WHERE story IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    let total = u64::try_from(total).unwrap_or(0);
    if total <= keep.max_story_bytes {
        return Ok(());
    }
    let goal = i64::try_from(total - keep.max_story_bytes / 8 * 7).unwrap_or(i64::MAX);
    // The oldest story with which the bytes freed reach the goal; none: every story goes.
    let last: i64 = tx
        .query_opt(
            "SELECT seq FROM (
                 SELECT seq, SUM(story_bytes) OVER (ORDER BY seq ROWS UNBOUNDED PRECEDING) AS freed
                 FROM activations WHERE story IS NOT NULL
             ) oldest WHERE freed >= $1::BIGINT ORDER BY seq LIMIT 1",
            &[&goal],
        )
        .await?
        .map_or(i64::MAX, |r| r.get(0));
    tx.execute(
        "UPDATE activations SET story = NULL, story_bytes = 0
         WHERE story IS NOT NULL AND seq <= $1",
        &[&last],
    )
    .await?;
    Ok(())
}
