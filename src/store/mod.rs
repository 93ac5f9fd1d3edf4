//! Persistence: deployed functions (with their replica counts), secrets, an activation
//! record per invocation, the durable queue, schedule ticks, tokens and sessions, and the
//! ids of recent webhook deliveries (so a redelivered event runs its function once).
//! Calls come in as plain values; rows go out. [`Store`] is the one interface, over one
//! SQLite file in the data directory ([`SqliteStore`], the embedded default) or a
//! PostgreSQL database several gateways share ([`postgres::PgStore`]). Activations are
//! written in batches by a background task so that recording a call costs the request
//! path one channel send. Secret values are sealed (AES-256-GCM) with a key kept outside
//! the database ([`sealed`]).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use self::db::Db;
use self::postgres::PgStore;
use crate::function::{FunctionDeployment, FunctionName};

#[cfg(test)]
mod contract;
mod db;
#[cfg(test)]
mod pg_cluster;
pub mod postgres;
mod queue;
mod schedule;
pub use queue::{CallState, CallbackDue, Finish, QueueCounts, QueueEntry, QueuedCall};
pub use schedule::ScheduleRun;
mod alexa;
pub use alexa::PendingReply;
mod screenshot;
pub use screenshot::Screenshot;
mod tokens;
pub use tokens::{TokenRecord, TokenStanding, UiSession};
pub mod sealed;
pub use sealed::{KeyError, KeySource, SecretKey};
pub mod story;
pub use story::Story;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sqlite(rusqlite::Error),
    #[error("store: PostgreSQL: {}", postgres::describe(.0))]
    Postgres(tokio_postgres::Error),
    /// The database cannot be reached (or its URL is not one).
    #[error("store: the database is unavailable: {0}")]
    Unavailable(String),
    /// The data directory's disk is full, read-only or failing: nothing can be written
    /// until that is fixed (503). What was committed before stays intact.
    #[error("store: cannot write to the data directory (disk full or read-only?): {0}")]
    Unwritable(String),
    #[error("store: stored record is unreadable: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("store: the writer has stopped")]
    Closed,
    #[error("store: write failed: {0}")]
    Write(String),
    #[error("store: {0}")]
    Key(#[from] KeyError),
    /// The database was written by a newer Hark, whose tables this one does not know.
    #[error(
        "store: the database has schema version {found}, newer than this Hark knows \
         ({supported}): a newer Hark has opened it. Run that version (or newer), or restore \
         the copy of the data directory taken before the upgrade"
    )]
    NewerSchema { found: i64, supported: i64 },
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match e.sqlite_error_code() {
            Some(
                ErrorCode::DiskFull
                | ErrorCode::ReadOnly
                | ErrorCode::SystemIoFailure
                | ErrorCode::CannotOpen,
            ) => StoreError::Unwritable(e.to_string()),
            _ => StoreError::Sqlite(e),
        }
    }
}

impl StoreError {
    /// The same failure again, for each of several callers of one batch.
    fn again(&self) -> StoreError {
        match self {
            StoreError::Unwritable(m) => StoreError::Unwritable(m.clone()),
            other => StoreError::Write(other.to_string()),
        }
    }
}

/// A deployed function as stored.
#[derive(Debug, Clone)]
pub struct StoredFunction {
    pub spec: FunctionDeployment,
    pub replicas: u32,
    pub created_at: DateTime<Utc>,
}

/// One invocation, as `GET /system/activations` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Activation {
    pub call_id: String,
    pub function: String,
    /// What started the call: `http`, `alexa`, `slack`, ...
    pub trigger: String,
    pub status: u16,
    pub duration_ms: f64,
    pub started_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The call this one replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_of: Option<String>,
}

/// One activation as the charts see it.
#[derive(Debug, Clone, PartialEq)]
pub struct CallPoint {
    pub function: String,
    pub started_at: DateTime<Utc>,
    pub duration_ms: f64,
    pub status: u16,
}

/// Durable state behind one interface: one SQLite file (the embedded default), or a
/// PostgreSQL database several gateways share. Every method answers the same on both
/// (the tests in `contract/` run each on both). Cloning shares the connection or pool.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

impl From<SqliteStore> for Store {
    fn from(store: SqliteStore) -> Self {
        Store {
            backend: Backend::Sqlite(store),
        }
    }
}

impl From<PgStore> for Store {
    fn from(store: PgStore) -> Self {
        Store {
            backend: Backend::Postgres(store),
        }
    }
}

impl Store {
    /// The SQLite store at `path` (see [`SqliteStore::open`]).
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        SqliteStore::open(path).map(Store::from)
    }

    /// The SQLite store at `path` with the secrets' key from `key` (see
    /// [`SqliteStore::open_with_key`]).
    pub fn open_with_key(path: &Path, key: KeySource) -> Result<Store, StoreError> {
        SqliteStore::open_with_key(path, key).map(Store::from)
    }

    /// The SQLite store at `path`, committing with `durability` (see
    /// [`SqliteStore::open_with`]).
    pub fn open_with(
        path: &Path,
        key: KeySource,
        durability: Durability,
    ) -> Result<Store, StoreError> {
        SqliteStore::open_with(path, key, durability).map(Store::from)
    }

    /// Connects to a PostgreSQL database that several gateways may share, committing with
    /// `durability`: `normal` turns PostgreSQL's `synchronous_commit` off for this
    /// gateway's connections (a commit is acknowledged once the server has it, and survives
    /// a gateway crash; the last ones may be lost if the database server, its OS or its
    /// power fails), like SQLite's NORMAL; `full` leaves the server's own setting, which
    /// waits for its disk unless turned off there.
    pub async fn connect(
        url: &str,
        key: KeySource,
        durability: Durability,
    ) -> Result<Store, StoreError> {
        PgStore::connect_with(url, key, durability)
            .await
            .map(Store::from)
    }

    /// Whether other gateways may share this store (PostgreSQL): what they change is to be
    /// followed.
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// What a commit survives now, as the database applies it: SQLite's `PRAGMA
    /// synchronous` on the store's connection (FULL or NORMAL), or PostgreSQL's
    /// `synchronous_commit` (`off` is like NORMAL: the last commits may be lost when the
    /// server crashes; any other value waits for the server's disk). `None`: neither.
    pub async fn committed_durability(&self) -> Result<Option<Durability>, StoreError> {
        Ok(match &self.backend {
            Backend::Sqlite(s) => match s.synchronous().await? {
                2 => Some(Durability::Full),
                1 => Some(Durability::Normal),
                _ => None,
            },
            Backend::Postgres(p) => match p.synchronous_commit().await?.as_str() {
                "off" => Some(Durability::Normal),
                "on" | "local" | "remote_write" | "remote_apply" => Some(Durability::Full),
                _ => None,
            },
        })
    }
}

/// Methods that do the same on either backend: each calls the backend's method of the
/// same name with the same arguments (and awaits it when it is async).
macro_rules! forward {
    () => {};
    (
        $(#[$attr:meta])*
        pub async fn $name:ident(&self $(, $arg:ident: $ty:ty)* $(,)?) $(-> $ret:ty)?;
        $($rest:tt)*
    ) => {
        $(#[$attr])*
        pub async fn $name(&self $(, $arg: $ty)*) $(-> $ret)? {
            match &self.backend {
                Backend::Sqlite(s) => s.$name($($arg),*).await,
                Backend::Postgres(p) => p.$name($($arg),*).await,
            }
        }
        forward!($($rest)*);
    };
    (
        $(#[$attr:meta])*
        pub fn $name:ident(&self $(, $arg:ident: $ty:ty)* $(,)?) $(-> $ret:ty)?;
        $($rest:tt)*
    ) => {
        $(#[$attr])*
        pub fn $name(&self $(, $arg: $ty)*) $(-> $ret)? {
            match &self.backend {
                Backend::Sqlite(s) => s.$name($($arg),*),
                Backend::Postgres(p) => p.$name($($arg),*),
            }
        }
        forward!($($rest)*);
    };
}

impl Store {
    forward! {
        /// The schema version of the database ([`SCHEMA_VERSION`] once opened).
        pub async fn schema_version(&self) -> Result<i64, StoreError>;

        /// Queues an async call durably: when this returns `Ok(true)`, the call is committed;
        /// `Ok(false)`: its call id or delivery id was queued before, and it is not again.
        pub async fn enqueue(&self, call: QueuedCall) -> Result<bool, StoreError>;

        /// Inserts or replaces a function, keeping its creation time if it existed.
        pub async fn put_function(
            &self,
            spec: &FunctionDeployment,
            replicas: u32,
        ) -> Result<(), StoreError>;

        /// Records a new replica count.
        pub async fn set_replicas(
            &self,
            name: &FunctionName,
            replicas: u32,
        ) -> Result<(), StoreError>;

        /// Deletes a function; `false` if there was none.
        pub async fn delete_function(&self, name: &FunctionName) -> Result<bool, StoreError>;

        /// One function.
        pub async fn function(
            &self,
            name: &FunctionName,
        ) -> Result<Option<StoredFunction>, StoreError>;

        /// Every function, by name.
        pub async fn functions(&self) -> Result<Vec<StoredFunction>, StoreError>;

        /// Creates or replaces a secret (sealed); `true` if it existed.
        pub async fn put_secret(&self, name: &str, value: Vec<u8>) -> Result<bool, StoreError>;

        /// A secret's value.
        pub async fn secret(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;

        /// The names of every secret.
        pub async fn secret_names(&self) -> Result<Vec<String>, StoreError>;

        /// Deletes a secret; `false` if there was none.
        pub async fn delete_secret(&self, name: &str) -> Result<bool, StoreError>;

        /// Remembers delivery `id` of `channel` (e.g. `github/triage`) at `now` (unix seconds);
        /// `true` the first time, `false` for a redelivery. Ids older than
        /// [`DELIVERY_IDS_KEPT_SECS`] are forgotten on the way.
        pub async fn first_delivery(
            &self,
            channel: &str,
            id: &str,
            now: i64,
        ) -> Result<bool, StoreError>;

        /// Queues an activation record, with its story when one was told (and the work left
        /// on it, done just before it is written), for the background writer.
        pub fn record(&self, activation: Activation, story: Option<(Story, Option<story::Later>)>);

        /// Marks the newest activation of `call_id` as a replay of `original` (once its
        /// record is written).
        pub async fn link_replay(&self, call_id: &str, original: &str) -> Result<(), StoreError>;

        /// Sets how much activation history is kept, from the next prune on.
        pub fn set_retention(&self, retention: Retention);

        /// The newest activation of call `call_id`, with its story when it is still kept.
        pub async fn activation(
            &self,
            call_id: &str,
        ) -> Result<Option<(Activation, Option<Story>)>, StoreError>;

        /// Waits until every activation recorded so far is written.
        pub async fn flush(&self);

        /// The newest activations, optionally of one function. Records still queued for the
        /// batch writer are written first, so a call that has answered is always listed.
        pub async fn activations(
            &self,
            function: Option<&FunctionName>,
            limit: u32,
        ) -> Result<Vec<Activation>, StoreError>;

        /// When each activation since `since` started, how long it took and how it ended,
        /// optionally of one function: what the UI's charts are drawn from. At most `limit`
        /// rows, the newest.
        pub async fn calls_since(
            &self,
            function: Option<&FunctionName>,
            since: DateTime<Utc>,
            limit: u32,
        ) -> Result<Vec<CallPoint>, StoreError>;

        /// How many activations each function has.
        pub async fn activation_counts(&self) -> Result<Vec<(String, u64)>, StoreError>;

        /// Claims up to `limit` due calls for `owner`, marking them running until
        /// `lease_until`, and at most `room(function)` calls of each function. Also says
        /// whether due calls were left for want of room.
        pub async fn claim_calls(
            &self,
            owner: &str,
            limit: usize,
            now: DateTime<Utc>,
            lease_until: DateTime<Utc>,
            room: impl FnMut(&str) -> usize + Send + 'static,
        ) -> Result<(Vec<QueuedCall>, bool), StoreError>;

        /// Puts back to pending the running calls whose owner is gone: those of `dead_owner`
        /// (a previous run of this process) and those whose lease ran out.
        pub async fn reclaim_calls(
            &self,
            is_alive: fn(&str) -> bool,
            now: DateTime<Utc>,
        ) -> Result<usize, StoreError>;

        /// Moves to `until` the lease of every call `owner` is running: the heartbeat that
        /// keeps other gateways from running them again. How many.
        pub async fn renew_leases(
            &self,
            owner: &str,
            until: DateTime<Utc>,
        ) -> Result<usize, StoreError>;

        /// Records that a call finished for good. Calls finishing at once are recorded in one
        /// transaction.
        pub async fn finish_call(&self, finish: Finish) -> Result<(), StoreError>;

        /// Cancels a pending call; the state it was in, if it exists.
        pub async fn cancel_call(&self, call_id: &str) -> Result<Option<CallState>, StoreError>;

        /// Moves a dead-lettered call back to pending; the state it was in, if it exists.
        pub async fn requeue_dead(&self, call_id: &str) -> Result<Option<CallState>, StoreError>;

        /// Queued calls, newest first, optionally in one state and of one function.
        pub async fn queue_entries(
            &self,
            state: Option<CallState>,
            function: Option<String>,
            limit: u32,
        ) -> Result<Vec<QueueEntry>, StoreError>;

        /// How many calls are pending or running.
        pub async fn queue_depth(&self) -> Result<u64, StoreError>;

        /// How many calls wait or run (`depth`) and how many used up their retries (`dead`),
        /// for `/metrics`.
        pub async fn queue_counts(&self) -> Result<QueueCounts, StoreError>;

        /// The bytes ([`QueuedCall::stored_bytes`]) that pending, running and dead calls
        /// hold, by function: what the queue's byte quota starts from.
        pub async fn queue_bytes(&self) -> Result<Vec<(String, u64)>, StoreError>;

        /// The function and the bytes ([`QueuedCall::stored_bytes`]) of a call, if it exists.
        pub async fn call_bytes(&self, call_id: &str) -> Result<Option<(String, u64)>, StoreError>;

        /// Finished calls whose callback or reply is still to be delivered.
        pub async fn callbacks_due(&self) -> Result<Vec<CallbackDue>, StoreError>;

        /// Records a callback delivery attempt; `delivered` or `failed` ends it.
        pub async fn record_callback(
            &self,
            call_id: &str,
            state: &'static str,
            attempts: u32,
        ) -> Result<(), StoreError>;

        /// The last time a schedule was looked at, if ever.
        pub async fn schedule_anchor(
            &self,
            function: &str,
        ) -> Result<Option<DateTime<Utc>>, StoreError>;

        /// Moves a schedule's anchor forward (never back).
        pub async fn set_schedule_anchor(
            &self,
            function: &str,
            anchor: DateTime<Utc>,
        ) -> Result<(), StoreError>;

        /// Claims a tick for `owner`; `false` if another gateway (or an earlier look) has it.
        pub async fn claim_tick(
            &self,
            function: &str,
            tick: DateTime<Utc>,
            owner: &str,
            outcome: &str,
            call_id: Option<String>,
        ) -> Result<bool, StoreError>;

        /// The newest runs of a schedule.
        pub async fn schedule_runs(
            &self,
            function: &str,
            limit: u32,
        ) -> Result<Vec<ScheduleRun>, StoreError>;

        /// The persistent attributes of `user_id` in `skill` (empty when there are none).
        pub async fn alexa_user_attributes(
            &self,
            skill: &str,
            user_id: &str,
        ) -> Result<serde_json::Map<String, serde_json::Value>, StoreError>;

        /// Keeps a late result for the user's next request.
        pub async fn push_alexa_pending(
            &self,
            skill: &str,
            user_id: &str,
            reply: PendingReply,
        ) -> Result<(), StoreError>;

        /// Removes and returns the late results waiting for `user_id` in `skill`, oldest first.
        pub async fn take_alexa_pending(
            &self,
            skill: &str,
            user_id: &str,
        ) -> Result<Vec<PendingReply>, StoreError>;

        /// Keeps the screenshot of call `call_id` (replacing an earlier one of the same call).
        pub async fn put_screenshot(
            &self,
            call_id: &str,
            url: &str,
            png: Vec<u8>,
        ) -> Result<(), StoreError>;

        /// The screenshot of call `call_id`, if one was kept.
        pub async fn screenshot(&self, call_id: &str) -> Result<Option<Screenshot>, StoreError>;

        /// Records a token: a newly minted one, or an admin token made offline that
        /// gateways sharing the store adopt (one already recorded, perhaps revoked, is left
        /// as it is).
        pub async fn record_token(&self, token: TokenRecord) -> Result<(), StoreError>;

        /// Every recorded token, newest first.
        pub async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;

        /// One recorded token.
        pub async fn token(&self, jti: &str) -> Result<Option<TokenRecord>, StoreError>;

        /// Revokes token `jti` and ends its UI sessions. `Ok(false)`: no such token.
        pub async fn revoke_token(&self, jti: &str) -> Result<bool, StoreError>;

        /// Revokes every admin token but `new` (and their UI sessions); with `refuse_legacy`,
        /// tokens without an id are refused from now on too. The ids revoked.
        pub async fn rotate_admin_token(
            &self,
            new: &str,
            refuse_legacy: bool,
        ) -> Result<Vec<String>, StoreError>;

        /// Retires signing key `kid`: tokens it signed are refused from now on, by every
        /// gateway process sharing this store.
        pub async fn retire_key(&self, kid: &str) -> Result<(), StoreError>;

        /// The value kept under `key`, keeping `value` when there is none: the first
        /// gateway's answer, which those starting later are held to.
        pub async fn first_meta(
            &self,
            key: &'static str,
            value: Vec<u8>,
        ) -> Result<Vec<u8>, StoreError>;

        /// Keeps `value` under `key`.
        pub async fn set_meta(&self, key: &'static str, value: Vec<u8>) -> Result<(), StoreError>;

        /// Whether signing key `kid` was retired.
        pub async fn key_retired(&self, kid: &str) -> Result<bool, StoreError>;

        /// The standing of a token with id `jti` (None: a token from before ids) signed by
        /// key `kid`, in one trip to the store.
        pub async fn token_standing(
            &self,
            jti: Option<String>,
            kid: Option<String>,
        ) -> Result<TokenStanding, StoreError>;

        /// Keeps a new UI session under the hash of its id.
        pub async fn create_ui_session(
            &self,
            id_hash: &str,
            session: UiSession,
        ) -> Result<(), StoreError>;

        /// The UI session whose id hashes to `id_hash`, if it exists and has not expired.
        pub async fn ui_session(&self, id_hash: &str) -> Result<Option<UiSession>, StoreError>;

        /// Ends the UI session whose id hashes to `id_hash`.
        pub async fn delete_ui_session(&self, id_hash: &str) -> Result<(), StoreError>;
    }
}

impl Store {
    /// Schedules another attempt of a failed call.
    pub async fn retry_call_later(
        &self,
        call_id: &str,
        attempts: u32,
        status: u16,
        error: Option<String>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => {
                s.retry_call_later(call_id, attempts, status, error, at)
                    .await
            }
            Backend::Postgres(p) => {
                p.retry_call_later(call_id, attempts, status, error, at)
                    .await
            }
        }
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
        match &self.backend {
            Backend::Sqlite(s) => {
                s.finish_tick(function, tick, outcome, status, duration_ms)
                    .await
            }
            Backend::Postgres(p) => {
                p.finish_tick(function, tick, outcome, status, duration_ms)
                    .await
            }
        }
    }

    /// Replaces the persistent attributes of `user_id` in `skill`.
    pub async fn put_alexa_user_attributes(
        &self,
        skill: &str,
        user_id: &str,
        attributes: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => {
                s.put_alexa_user_attributes(skill, user_id, attributes)
                    .await
            }
            Backend::Postgres(p) => {
                p.put_alexa_user_attributes(skill, user_id, attributes)
                    .await
            }
        }
    }
}

/// The SQLite store. Cloning shares the connection.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Db,
    activations: mpsc::UnboundedSender<Write>,
    /// How much history the activation writer keeps.
    retention: Arc<std::sync::Mutex<Retention>>,
    enqueues: GroupCommit<QueuedCall, bool>,
    finishes: GroupCommit<Finish, ()>,
    key: Arc<SecretKey>,
    durability: Durability,
}

/// What a commit survives before the call that made it is acknowledged (`--durability`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Each commit is on disk (fsync) before it is acknowledged: survives a gateway crash,
    /// a power cut and an OS crash. SQLite `synchronous = FULL` in WAL mode. The default:
    /// commits are grouped, so the sync costs little throughput (see README.md).
    #[default]
    Full,
    /// Each commit is in the write-ahead log before it is acknowledged; the log is synced
    /// at checkpoints: survives a gateway crash, may lose the last commits on a power cut
    /// or OS crash. SQLite `synchronous = NORMAL` in WAL mode.
    Normal,
}

impl Durability {
    /// SQLite's `PRAGMA synchronous` value for this mode.
    fn synchronous(self) -> i64 {
        match self {
            Durability::Full => 2,
            Durability::Normal => 1,
        }
    }

    /// Its name, as the flag spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Full => "full",
            Durability::Normal => "normal",
        }
    }
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS functions (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    replicas INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS secrets (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS activations (
    call_id TEXT NOT NULL,
    function TEXT NOT NULL,
    trigger TEXT NOT NULL,
    status INTEGER NOT NULL,
    duration_ms REAL NOT NULL,
    started_at TEXT NOT NULL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS activations_by_function ON activations (function, started_at);
CREATE INDEX IF NOT EXISTS activations_by_time ON activations (started_at);
CREATE TABLE IF NOT EXISTS deliveries (
    channel TEXT NOT NULL,
    id TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (channel, id)
);
CREATE INDEX IF NOT EXISTS deliveries_by_time ON deliveries (received_at);
";

/// The schema this Hark writes, kept in SQLite's `user_version`. Each change of the
/// tables appends a step to [`MIGRATIONS`], which raises it by one.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// One step of the schema, run in a transaction.
type Migration = fn(&Connection) -> Result<(), StoreError>;

/// The steps from an empty database: step `i` brings schema version `i` to `i + 1`.
/// Version 0 is also what Hark wrote before it counted versions, so step 0 is written
/// to bring such a store up to date as well as to create one: it creates what is
/// missing and adds the columns added since (`queue::migrate`, `story::migrate`, the
/// secrets' `sealed`).
///
/// Step 0, the `SCHEMA` constants and the added columns it runs are frozen: a store at
/// version 1 never runs them again. A change of the tables is a new step at the end,
/// written against version 1's tables (`ALTER TABLE`, `CREATE TABLE`), never an edit of
/// them; `fresh_and_migrated_stores_have_the_same_tables` checks the two paths agree.
const MIGRATIONS: &[Migration] = &[|conn| {
    conn.execute_batch(SCHEMA)?;
    conn.execute_batch(queue::SCHEMA)?;
    conn.execute_batch(schedule::SCHEMA)?;
    conn.execute_batch(alexa::SCHEMA)?;
    conn.execute_batch(screenshot::SCHEMA)?;
    conn.execute_batch(tokens::SCHEMA)?;
    db::add_missing_columns(conn, "secrets", &[("sealed", "INTEGER NOT NULL DEFAULT 0")])?;
    queue::migrate(conn)?;
    story::migrate(conn)
}];

/// Brings the database to [`SCHEMA_VERSION`], each step in a transaction of its own;
/// refuses one a newer Hark wrote, before changing anything.
fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (version, step) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
        let version = version as i64;
        conn.execute_batch("BEGIN IMMEDIATE")?;
        // Read again under the write lock: another process opening the same store may
        // have taken this step since.
        let now: i64 = match conn.pragma_query_value(None, "user_version", |r| r.get(0)) {
            Ok(now) => now,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e.into());
            }
        };
        if now > version {
            conn.execute_batch("ROLLBACK")?;
            if now > SCHEMA_VERSION {
                return Err(StoreError::NewerSchema {
                    found: now,
                    supported: SCHEMA_VERSION,
                });
            }
            continue;
        }
        let stepped =
            step(conn).and_then(|()| Ok(conn.pragma_update(None, "user_version", version + 1)?));
        match stepped {
            Ok(()) => conn.execute_batch("COMMIT")?,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        }
    }
    Ok(())
}

/// How long a delivery id is remembered: longer than any platform's retry or redelivery
/// window (Slack retries for about an hour, GitHub redelivers up to three days back).
pub const DELIVERY_IDS_KEPT_SECS: i64 = 7 * 24 * 3600;

/// How much activation history is kept (`hark up --history-*`): older records are
/// deleted as new ones arrive, and stories (request, answer, log lines) go before their
/// records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Most activation records.
    pub max_records: u64,
    /// Records older than this go; `None` keeps them whatever their age.
    pub max_age: Option<Duration>,
    /// Most bytes of stories in all.
    pub max_story_bytes: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_records: 100_000,
            max_age: Some(Duration::from_secs(30 * 24 * 3600)),
            max_story_bytes: story::DEFAULT_MAX_BYTES,
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`, with the secrets' key in the file
    /// [`sealed::DEFAULT_KEY_FILE`] beside it, and starts the activation writer.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        Self::open_with_key(
            path,
            KeySource::File(path.with_file_name(sealed::DEFAULT_KEY_FILE)),
        )
    }

    /// Opens (creating if needed) the store at `path`, with the secrets' key from `key`:
    /// created when missing while no secret is sealed yet, refused when it does not open the
    /// secrets already sealed. Secrets stored in clear by earlier versions are sealed now.
    pub fn open_with_key(path: &Path, key: KeySource) -> Result<SqliteStore, StoreError> {
        Self::open_with(path, key, Durability::default())
    }

    /// Like [`Store::open_with_key`], committing with `durability`. The mode is read back
    /// from SQLite, and the store refuses to open when SQLite did not apply it.
    pub fn open_with(
        path: &Path,
        key: KeySource,
        durability: Durability,
    ) -> Result<SqliteStore, StoreError> {
        private_file(path)?;
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        // Deleted and overwritten content (an old secret row) is zeroed, not left behind.
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA secure_delete = ON;")?;
        conn.pragma_update(None, "synchronous", durability.synchronous())?;
        let applied: i64 = conn.pragma_query_value(None, "synchronous", |r| r.get(0))?;
        if applied != durability.synchronous() {
            return Err(StoreError::Write(format!(
                "SQLite did not apply durability {durability} (synchronous = {applied})"
            )));
        }
        migrate(&conn)?;
        let key = Arc::new(seal_secrets(&conn, key)?);
        let conn = Db::start(conn)?;
        let (tx, settling) = mpsc::unbounded_channel();
        let (settled, rx) = mpsc::unbounded_channel();
        let retention = Arc::new(std::sync::Mutex::new(Retention::default()));
        tokio::spawn(settle_stories(settling, settled));
        tokio::spawn(write_activations(conn.clone(), rx, retention.clone()));
        let enqueues = group_commit(
            conn.clone(),
            1024,
            "committing queued calls",
            queue::insert_calls,
        );
        let finishes = group_commit(
            conn.clone(),
            1024,
            "recording finished calls",
            queue::finish_calls,
        );
        Ok(SqliteStore {
            conn,
            activations: tx,
            retention,
            enqueues,
            finishes,
            key,
            durability,
        })
    }

    /// The durability the store commits with.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// The schema version of the database ([`SCHEMA_VERSION`] once opened).
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        self.with(|c| Ok(c.pragma_query_value(None, "user_version", |r| r.get(0))?))
            .await
    }

    /// SQLite's `PRAGMA synchronous` on the store's connection, as it is now (2: FULL,
    /// 1: NORMAL).
    pub async fn synchronous(&self) -> Result<i64, StoreError> {
        self.with(|c| Ok(c.pragma_query_value(None, "synchronous", |r| r.get(0))?))
            .await
    }

    /// Queues an async call durably: when this returns `Ok(true)`, the call is committed;
    /// `Ok(false)`: its call id or delivery id was queued before, and it is not again.
    pub async fn enqueue(&self, call: QueuedCall) -> Result<bool, StoreError> {
        commit(&self.enqueues, call).await
    }

    /// Like [`Store::with`], with the connection mutable (for transactions).
    async fn with_mut<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        self.conn.run(f).await?
    }

    /// Runs `f` on the connection, on the store's thread.
    async fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        self.conn.run(move |conn| f(conn)).await?
    }

    /// Inserts or replaces a function, keeping its creation time if it existed.
    pub async fn put_function(
        &self,
        spec: &FunctionDeployment,
        replicas: u32,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(spec)?;
        let name = spec.service.to_string();
        self.with(move |c| {
            c.execute(
                "INSERT INTO functions (name, spec, replicas, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(name) DO UPDATE SET spec = excluded.spec, replicas = excluded.replicas",
                params![name, json, replicas, Utc::now()],
            )?;
            Ok(())
        })
        .await
    }

    /// Records a new replica count.
    pub async fn set_replicas(&self, name: &FunctionName, replicas: u32) -> Result<(), StoreError> {
        let name = name.to_string();
        self.with(move |c| {
            c.execute(
                "UPDATE functions SET replicas = ?2 WHERE name = ?1",
                params![name, replicas],
            )?;
            Ok(())
        })
        .await
    }

    /// Deletes a function; `false` if there was none.
    pub async fn delete_function(&self, name: &FunctionName) -> Result<bool, StoreError> {
        let name = name.to_string();
        self.with(move |c| Ok(c.execute("DELETE FROM functions WHERE name = ?1", [name])? > 0))
            .await
    }

    /// One function.
    pub async fn function(
        &self,
        name: &FunctionName,
    ) -> Result<Option<StoredFunction>, StoreError> {
        let name = name.to_string();
        self.with(move |c| {
            let row = c
                .query_row(
                    "SELECT spec, replicas, created_at FROM functions WHERE name = ?1",
                    [name],
                    |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            row.map(|(spec, replicas, created_at)| {
                Ok(StoredFunction {
                    spec: serde_json::from_str(&spec)?,
                    replicas,
                    created_at,
                })
            })
            .transpose()
        })
        .await
    }

    /// Every function, by name.
    pub async fn functions(&self) -> Result<Vec<StoredFunction>, StoreError> {
        self.with(|c| {
            let mut stmt =
                c.prepare("SELECT spec, replicas, created_at FROM functions ORDER BY name")?;
            let rows =
                stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?)))?;
            let mut out = Vec::new();
            for row in rows {
                let (spec, replicas, created_at) = row?;
                out.push(StoredFunction {
                    spec: serde_json::from_str(&spec)?,
                    replicas,
                    created_at,
                });
            }
            Ok(out)
        })
        .await
    }

    /// Creates or replaces a secret (sealed); `true` if it existed.
    pub async fn put_secret(&self, name: &str, value: Vec<u8>) -> Result<bool, StoreError> {
        let name = name.to_owned();
        let value = self.key.seal(&name, &value)?;
        self.with(move |c| {
            let existed = c
                .query_row("SELECT 1 FROM secrets WHERE name = ?1", [&name], |_| Ok(()))
                .optional()?
                .is_some();
            c.execute(
                "INSERT INTO secrets (name, value, updated_at, sealed) VALUES (?1, ?2, ?3, 1)
                 ON CONFLICT(name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at, sealed = 1",
                params![name, value, Utc::now()],
            )?;
            Ok(existed)
        })
        .await
    }

    /// A secret's value.
    pub async fn secret(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let name = name.to_owned();
        let key = self.key.clone();
        self.with(move |c| {
            let row: Option<(Vec<u8>, bool)> = c
                .query_row(
                    "SELECT value, sealed FROM secrets WHERE name = ?1",
                    [&name],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            match row {
                None => Ok(None),
                Some((value, true)) => Ok(Some(key.open(&name, &value)?)),
                // Sealed at open; only a row written since by an older gateway is clear.
                Some((value, false)) => Ok(Some(value)),
            }
        })
        .await
    }

    /// The names of every secret.
    pub async fn secret_names(&self) -> Result<Vec<String>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare("SELECT name FROM secrets ORDER BY name")?;
            let names = stmt.query_map([], |r| r.get(0))?;
            Ok(names.collect::<Result<Vec<String>, _>>()?)
        })
        .await
    }

    /// Deletes a secret; `false` if there was none.
    pub async fn delete_secret(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.with(move |c| Ok(c.execute("DELETE FROM secrets WHERE name = ?1", [name])? > 0))
            .await
    }

    /// Remembers delivery `id` of `channel` (e.g. `github/triage`) at `now` (unix seconds);
    /// `true` the first time, `false` for a redelivery. Ids older than
    /// [`DELIVERY_IDS_KEPT_SECS`] are forgotten on the way.
    pub async fn first_delivery(
        &self,
        channel: &str,
        id: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let (channel, id) = (channel.to_owned(), id.to_owned());
        self.with(move |c| {
            c.execute(
                "DELETE FROM deliveries WHERE received_at < ?1",
                [now - DELIVERY_IDS_KEPT_SECS],
            )?;
            let inserted = c.execute(
                "INSERT OR IGNORE INTO deliveries (channel, id, received_at) VALUES (?1, ?2, ?3)",
                params![channel, id, now],
            )?;
            Ok(inserted == 1)
        })
        .await
    }

    /// Queues an activation record, with its story when one was told (and the work left
    /// on it, done just before it is written), for the background writer.
    pub fn record(&self, activation: Activation, story: Option<(Story, Option<story::Later>)>) {
        let (story, later) = story.map_or((None, None), |(s, l)| (Some(s), l));
        let record = Box::new(Record {
            activation,
            story,
            later,
        });
        if self.activations.send(Write::Record(record)).is_err() {
            tracing::error!("activation writer has stopped; record dropped");
        }
    }

    /// Marks the newest activation of `call_id` as a replay of `original` (once its
    /// record is written).
    pub async fn link_replay(&self, call_id: &str, original: &str) -> Result<(), StoreError> {
        self.flush().await;
        let (call_id, original) = (call_id.to_owned(), original.to_owned());
        self.with_mut(move |c| {
            c.execute(
                "UPDATE activations SET replay_of = ?2 WHERE rowid =
                 (SELECT MAX(rowid) FROM activations WHERE call_id = ?1)",
                params![call_id, original],
            )?;
            Ok(())
        })
        .await
    }

    /// Sets how much activation history is kept, from the next prune on.
    pub fn set_retention(&self, retention: Retention) {
        *self.retention.lock().unwrap_or_else(|e| e.into_inner()) = retention;
    }

    /// The newest activation of call `call_id`, with its story when it is still kept.
    pub async fn activation(
        &self,
        call_id: &str,
    ) -> Result<Option<(Activation, Option<Story>)>, StoreError> {
        self.flush().await;
        let call_id = call_id.to_owned();
        self.with(move |c| {
            let row = c
                .query_row(
                    "SELECT call_id, function, trigger, status, duration_ms, started_at, error, replay_of, story
                     FROM activations WHERE call_id = ?1 ORDER BY rowid DESC LIMIT 1",
                    [call_id],
                    |r| Ok((activation_row(r)?, r.get::<_, Option<String>>(8)?)),
                )
                .optional()?;
            Ok(row.map(|(activation, story)| {
                let story = story.and_then(|json| serde_json::from_str(&json).ok());
                (activation, story)
            }))
        })
        .await
    }

    /// Waits until every activation recorded so far is written.
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.activations.send(Write::Flush(done)).is_ok() {
            let _ = written.await;
        }
    }

    /// The newest activations, optionally of one function. Records still queued for the
    /// batch writer are written first, so a call that has answered is always listed.
    pub async fn activations(
        &self,
        function: Option<&FunctionName>,
        limit: u32,
    ) -> Result<Vec<Activation>, StoreError> {
        self.flush().await;
        let function = function.map(|f| f.to_string());
        self.with(move |c| {
            let mut stmt = c.prepare(
                "SELECT call_id, function, trigger, status, duration_ms, started_at, error, replay_of
                 FROM activations WHERE (?1 IS NULL OR function = ?1)
                 ORDER BY started_at DESC, rowid DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![function, limit], activation_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
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
        let function = function.map(|f| f.to_string());
        self.with(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT function, started_at, duration_ms, status FROM activations
                 WHERE started_at >= ?1 AND (?2 IS NULL OR function = ?2)
                 ORDER BY started_at DESC LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![since, function, limit], |r| {
                Ok(CallPoint {
                    function: r.get(0)?,
                    started_at: r.get(1)?,
                    duration_ms: r.get(2)?,
                    status: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// How many activations each function has.
    pub async fn activation_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.with(|c| {
            let mut stmt =
                c.prepare("SELECT function, COUNT(*) FROM activations GROUP BY function")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }
}

/// An activation's record as it is read back: the columns of `activations` in order.
fn activation_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Activation> {
    Ok(Activation {
        call_id: r.get(0)?,
        function: r.get(1)?,
        trigger: r.get(2)?,
        status: r.get(3)?,
        duration_ms: r.get(4)?,
        started_at: r.get(5)?,
        error: r.get(6)?,
        replay_of: r.get(7)?,
    })
}

/// An activation on its way to the store.
struct Record {
    activation: Activation,
    story: Option<Story>,
    later: Option<story::Later>,
}

/// What the activation writer is asked to do.
enum Write {
    Record(Box<Record>),
    Flush(oneshot::Sender<()>),
    /// Try the kept records again (the writer's own, after a pause).
    Retry,
}

/// Passes records on to the writer in the order they came, each once its story can be
/// finished (its [`story::Later`] is ready), finishing it; a flush passes once the
/// records before it have. The wait is a pipeline: records keep arriving and leaving
/// while the oldest wait for their log lines, so it delays records without slowing the
/// writer. When the store closes, the records still waiting are finished at once.
async fn settle_stories(mut rx: mpsc::UnboundedReceiver<Write>, tx: mpsc::UnboundedSender<Write>) {
    fn ready_at(write: &Write) -> Option<std::time::Instant> {
        match write {
            Write::Record(record) => record.later.as_ref().map(|l| l.ready_at),
            _ => None,
        }
    }
    fn pass(mut write: Write, tx: &mpsc::UnboundedSender<Write>) {
        if let Write::Record(record) = &mut write {
            if let (Some(later), Some(story)) = (record.later.take(), record.story.as_mut()) {
                (later.finish)(story);
            }
        }
        let _ = tx.send(write);
    }
    let mut waiting: std::collections::VecDeque<Write> = std::collections::VecDeque::new();
    loop {
        let now = std::time::Instant::now();
        while waiting
            .front()
            .is_some_and(|w| ready_at(w).is_none_or(|at| at <= now))
        {
            if let Some(write) = waiting.pop_front() {
                pass(write, &tx);
            }
        }
        let next = waiting.front().and_then(ready_at);
        let received = match next {
            None => rx.recv().await,
            Some(at) => match tokio::time::timeout_at(at.into(), rx.recv()).await {
                Ok(received) => received,
                Err(_ready) => continue,
            },
        };
        let Some(write) = received else { break };
        waiting.push_back(write);
        while let Ok(write) = rx.try_recv() {
            waiting.push_back(write);
        }
    }
    for write in waiting {
        pass(write, &tx);
    }
}

/// Most activation records written in one transaction.
const BATCH: usize = 512;
/// How long a batch of records gathers after its first one.
const LINGER: Duration = Duration::from_millis(20);
/// The first pause after a batch could not be written; it doubles up to `RETRY_MAX`.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(10);
/// Most records kept in memory while they cannot be written; past it the oldest go.
const KEPT_UNWRITTEN: usize = 64 * BATCH;

/// SQLite's activation writer: [`write_batches`], each batch in one transaction on the
/// store's connection.
async fn write_activations(
    conn: Db,
    rx: mpsc::UnboundedReceiver<Write>,
    retention: Arc<std::sync::Mutex<Retention>>,
) {
    // Story bytes in the table, once a prune has summed them.
    let stored: Arc<std::sync::Mutex<Option<u64>>> = Arc::default();
    write_batches(rx, retention, move |records, prune| {
        let (conn, stored) = (conn.clone(), stored.clone());
        async move {
            let known = *stored.lock().unwrap_or_else(|e| e.into_inner());
            let result = conn
                .run(move |conn| {
                    let outcome = insert_activations(conn, &records, prune, known);
                    (outcome, records)
                })
                .await;
            match result {
                Ok((Ok((bytes, kept)), records)) => {
                    *stored.lock().unwrap_or_else(|e| e.into_inner()) = kept;
                    (Ok(bytes), records)
                }
                Ok((Err(e), records)) => (Err(e), records),
                Err(e) => {
                    tracing::error!(error = %e, "activation writer task failed");
                    (Ok(0), Vec::new())
                }
            }
        }
    })
    .await;
}

/// Writes queued activations one batch at a time with `write`, until the store is
/// dropped; both stores' writer. `write` writes a batch (pruning the history to the
/// given retention when there is one) and gives the records back, with the bytes of
/// the stories written or why it failed. A batch gathers for at most [`LINGER`] after
/// its first record (less when it fills or someone asks for a flush): under load, one
/// commit carries hundreds of records instead of the few that arrived while the last
/// commit ran.
///
/// A batch that cannot be written (a full disk, a database that is down) is kept and
/// written again with the next one, or after a pause that doubles up to [`RETRY_MAX`]
/// when nothing new arrives; only past [`KEPT_UNWRITTEN`] records do the oldest go,
/// counted in an error line. A flush answers once its batch was tried, so readers never
/// wait on a store that refuses writes.
async fn write_batches<W, F>(
    mut rx: mpsc::UnboundedReceiver<Write>,
    retention: Arc<std::sync::Mutex<Retention>>,
    mut write: W,
) where
    W: FnMut(Vec<Box<Record>>, Option<Retention>) -> F,
    F: std::future::Future<Output = (Result<u64, StoreError>, Vec<Box<Record>>)>,
{
    let mut written: u64 = 0;
    let mut unwritten: Vec<Box<Record>> = Vec::new();
    // Story bytes written since stories were last pruned.
    let mut told: u64 = 0;
    let mut retry = RETRY_FIRST;
    let mut retry_at = tokio::time::Instant::now();
    let mut dropped = 0usize;
    let mut open = true;
    while open {
        let pausing = !unwritten.is_empty();
        let batch = next_writes(&mut rx, pausing.then_some(retry_at)).await;
        open = batch.is_some();
        let mut records = std::mem::take(&mut unwritten);
        let mut flushes = Vec::new();
        for write in batch.into_iter().flatten() {
            match write {
                Write::Record(record) => records.push(record),
                Write::Flush(done) => flushes.push(done),
                Write::Retry => {}
            }
        }
        if open && pausing && tokio::time::Instant::now() < retry_at {
            // The store refused the last try: new records wait with the others for the
            // next one, without their stories, and nothing is written before it.
            for record in &mut records {
                record.story = None;
                record.later = None;
            }
            let over = records.len().saturating_sub(KEPT_UNWRITTEN);
            records.drain(..over);
            dropped += over;
            unwritten = records;
            for done in flushes {
                let _ = done.send(());
            }
            continue;
        }
        if !records.is_empty() {
            let keep = *retention.lock().unwrap_or_else(|e| e.into_inner());
            let prune = written / BATCH as u64 != (written + records.len() as u64) / BATCH as u64
                || told > keep.max_story_bytes / 16;
            match write(records, prune.then_some(keep)).await {
                (Ok(bytes), records) => {
                    if retry != RETRY_FIRST {
                        tracing::info!(
                            records = records.len(),
                            "activation records written again after a failure"
                        );
                    }
                    written += records.len() as u64;
                    told = if prune { 0 } else { told + bytes };
                    retry = RETRY_FIRST;
                }
                (Err(e), mut records) => {
                    let over = records.len().saturating_sub(KEPT_UNWRITTEN);
                    records.drain(..over);
                    dropped += over;
                    // Kept in memory until the store takes them: records, not their
                    // bodies.
                    for record in &mut records {
                        record.story = None;
                    }
                    tracing::error!(
                        error = %e,
                        kept = records.len(),
                        dropped,
                        retry_in_ms = retry.as_millis() as u64,
                        "writing activation records failed; they are kept (without their stories) and written again"
                    );
                    unwritten = records;
                    retry_at = tokio::time::Instant::now() + retry;
                    retry = (retry * 2).min(RETRY_MAX);
                }
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
    if !unwritten.is_empty() {
        tracing::error!(
            lost = unwritten.len(),
            "the store closed before these activation records could be written"
        );
    }
}

/// The activation writer's next writes: waits for the first (with records kept, only
/// until `retry_at`, which answers a [`Write::Retry`]), then gathers up to [`BATCH`] for
/// at most [`LINGER`], ending early at a flush. `None` once the store is dropped.
async fn next_writes(
    rx: &mut mpsc::UnboundedReceiver<Write>,
    retry_at: Option<tokio::time::Instant>,
) -> Option<Vec<Write>> {
    let first = match retry_at {
        None => rx.recv().await?,
        Some(at) => match tokio::time::timeout_at(at, rx.recv()).await {
            Ok(first) => first?,
            Err(_paused) => Write::Retry,
        },
    };
    let mut batch = Vec::new();
    if matches!(first, Write::Retry) {
        return Some(batch);
    }
    let flushing = matches!(first, Write::Flush(_));
    batch.push(first);
    if !flushing {
        let _ = tokio::time::timeout(LINGER, async {
            while batch.len() < BATCH {
                let Some(write) = rx.recv().await else { break };
                let flush = matches!(write, Write::Flush(_));
                batch.push(write);
                if flush {
                    break;
                }
            }
        })
        .await;
    }
    while batch.len() < BATCH {
        match rx.try_recv() {
            Ok(next) => batch.push(next),
            Err(_) => break,
        }
    }
    Some(batch)
}

/// A writer that commits what it is sent in batches, and the way to send it work:
/// each item with the sender of its outcome.
type GroupCommit<T, R> = mpsc::UnboundedSender<Waiting<T, R>>;

/// Starts a group-commit writer: every item that arrives while a commit is under way
/// joins the next one (up to `max` per transaction), so throughput grows with load
/// while each sender still waits for its own commit. `write` commits one batch and
/// returns each item's outcome; when it fails, every item of the batch gets the error.
fn group_commit<T, R>(
    conn: Db,
    max: usize,
    what: &'static str,
    write: fn(&mut Connection, &[T]) -> Result<Vec<R>, StoreError>,
) -> GroupCommit<T, R>
where
    T: Send + 'static,
    R: Copy + Default + Send + 'static,
{
    let (tx, mut rx) = mpsc::unbounded_channel::<(T, oneshot::Sender<Result<R, StoreError>>)>();
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let (items, acks) = next_batch(&mut rx, first, max);
            let outcome = conn
                .run(move |conn| write(conn, &items))
                .await
                .unwrap_or_else(Err);
            answer_batch(acks, &outcome, what);
        }
    });
    tx
}

/// An item waiting in a group-commit writer, with where its outcome goes.
type Waiting<T, R> = (T, oneshot::Sender<Result<R, StoreError>>);

/// The batch a group-commit writer commits next: `first` and the items waiting behind
/// it, at most `max`; the items, and where each one's outcome goes.
pub(crate) fn next_batch<T, R>(
    rx: &mut mpsc::UnboundedReceiver<Waiting<T, R>>,
    first: Waiting<T, R>,
    max: usize,
) -> (Vec<T>, Vec<oneshot::Sender<Result<R, StoreError>>>) {
    let mut batch = vec![first];
    while batch.len() < max {
        match rx.try_recv() {
            Ok(next) => batch.push(next),
            Err(_) => break,
        }
    }
    batch.into_iter().unzip()
}

/// Gives each item of a committed batch its outcome, or the batch's error (logged once).
pub(crate) fn answer_batch<R: Copy + Default>(
    acks: Vec<oneshot::Sender<Result<R, StoreError>>>,
    outcome: &Result<Vec<R>, StoreError>,
    what: &str,
) {
    if let Err(e) = outcome {
        tracing::error!(error = %e, "{what} failed");
    }
    for (i, ack) in acks.into_iter().enumerate() {
        let _ = ack.send(match outcome {
            Ok(done) => Ok(done.get(i).copied().unwrap_or_default()),
            Err(e) => Err(e.again()),
        });
    }
}

/// Sends `item` to a group-commit writer and waits until its batch is committed.
async fn commit<T, R>(writer: &GroupCommit<T, R>, item: T) -> Result<R, StoreError> {
    let (done, committed) = oneshot::channel();
    writer.send((item, done)).map_err(|_| StoreError::Closed)?;
    committed.await.map_err(|_| StoreError::Closed)?
}

/// Inserts `records` in one transaction; with `prune`, also deletes the records past
/// its count and age and drops the oldest stories past its bytes. `stored` is the bytes
/// of the stories in the table before, when known (the first prune sums them). Returns
/// the bytes of the stories written, and of those kept after, when known.
fn insert_activations(
    conn: &mut Connection,
    records: &[Box<Record>],
    prune: Option<Retention>,
    stored: Option<u64>,
) -> Result<(u64, Option<u64>), StoreError> {
    let tx = conn.transaction()?;
    let mut told = 0;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO activations (call_id, function, trigger, status, duration_ms, started_at, error, story, story_bytes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        for record in records {
            let a = &record.activation;
            let story = record
                .story
                .as_ref()
                .and_then(|story| serde_json::to_string(story).ok());
            let bytes = story.as_ref().map_or(0, |s| s.len() as i64);
            told += bytes as u64;
            insert.execute(params![
                a.call_id,
                a.function,
                a.trigger,
                a.status,
                a.duration_ms,
                a.started_at,
                a.error,
                story,
                bytes
            ])?;
        }
    }
    let mut kept = stored.map(|bytes| bytes + told);
    if let Some(keep) = prune {
        // The story bytes of the records deleted, summed over those rows alone.
        let mut deleted = 0;
        let mut delete = |filter: &str, param: &dyn rusqlite::ToSql| -> Result<(), StoreError> {
            let bytes: i64 = tx.query_row(
                &format!("SELECT COALESCE(SUM(story_bytes), 0) FROM activations WHERE {filter}"),
                [param],
                |r| r.get(0),
            )?;
            tx.execute(&format!("DELETE FROM activations WHERE {filter}"), [param])?;
            deleted += bytes as u64;
            Ok(())
        };
        let last: i64 =
            tx.query_row("SELECT COALESCE(MAX(rowid), 0) FROM activations", [], |r| {
                r.get(0)
            })?;
        let cut = last.saturating_sub(i64::try_from(keep.max_records).unwrap_or(i64::MAX));
        if cut > 0 {
            delete("rowid <= ?1", &cut)?;
        }
        let oldest = keep
            .max_age
            .and_then(|a| chrono::Duration::from_std(a).ok())
            .and_then(|age| Utc::now().checked_sub_signed(age));
        if let Some(oldest) = oldest {
            delete("started_at < ?1", &oldest)?;
        }
        // Summed over the whole table once; kept up to date from then on.
        let total = match kept {
            Some(bytes) => bytes.saturating_sub(deleted),
            None => tx.query_row(
                "SELECT COALESCE(SUM(story_bytes), 0) FROM activations",
                [],
                |r| r.get::<_, i64>(0),
            )? as u64,
        };
        kept = Some(total - story::prune(&tx, keep.max_story_bytes, total)?.min(total));
    }
    tx.commit()?;
    Ok((told, kept))
}

/// Meta row holding the key check value.
const KEY_CHECK: &str = "secret_key_check";

/// Loads the secrets' key (checking it against the stored check value) and seals the
/// secrets an earlier version stored in clear.
fn seal_secrets(conn: &Connection, source: KeySource) -> Result<SecretKey, StoreError> {
    let has_sealed_column = conn
        .prepare("SELECT 1 FROM pragma_table_info('secrets') WHERE name = 'sealed'")?
        .exists([])?;
    if !has_sealed_column {
        conn.execute_batch("ALTER TABLE secrets ADD COLUMN sealed INTEGER NOT NULL DEFAULT 0")?;
    }
    let check: Option<Vec<u8>> = conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [KEY_CHECK], |r| {
            r.get(0)
        })
        .optional()?;
    let sealed: i64 = conn.query_row("SELECT count(*) FROM secrets WHERE sealed = 1", [], |r| {
        r.get(0)
    })?;
    let key = SecretKey::load(source, check.is_none() && sealed == 0)?;
    match check {
        Some(check) => key.verify_check(&check)?,
        None => {
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)",
                params![KEY_CHECK, key.check_value()?],
            )?;
        }
    }
    let clear: Vec<(String, Vec<u8>)> = conn
        .prepare("SELECT name, value FROM secrets WHERE sealed = 0")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    if !clear.is_empty() {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        for (name, value) in &clear {
            conn.execute(
                "UPDATE secrets SET value = ?2, sealed = 1 WHERE name = ?1",
                params![name, key.seal(name, value)?],
            )?;
        }
        conn.execute_batch("COMMIT")?;
        // Out of the write-ahead log into the database file, whose old pages secure_delete
        // has zeroed; then the log is emptied.
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        tracing::info!(
            secrets = clear.len(),
            "sealed secrets an earlier version stored in clear"
        );
    }
    Ok(key)
}

/// Creates the database file readable by its owner only, or makes an existing one so: it
/// holds sealed secrets, token records and call bodies. SQLite gives its `-wal` and `-shm`
/// files the database file's mode.
fn private_file(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let unwritable = |e: std::io::Error| StoreError::Unwritable(format!("{}: {e}", path.display()));
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(unwritable)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(unwritable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_durability_asked_for_is_what_sqlite_commits_with() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hark.db");
        let key = || KeySource::File(dir.path().join("secret.key"));
        for (durability, synchronous) in [(Durability::Full, 2), (Durability::Normal, 1)] {
            let store = SqliteStore::open_with(&path, key(), durability).unwrap();
            assert_eq!(store.durability(), durability);
            // On the connection every commit (the queue's group commits too) goes through.
            assert_eq!(
                store.synchronous().await.unwrap(),
                synchronous,
                "{durability}"
            );
            let mode: String = store
                .with(|c| Ok(c.pragma_query_value(None, "journal_mode", |r| r.get(0))?))
                .await
                .unwrap();
            assert_eq!(mode, "wal");
        }
        // Callers that do not choose get full.
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.synchronous().await.unwrap(), 2);
    }

    #[tokio::test]
    async fn delivery_ids_are_first_once_per_channel_and_forgotten_when_old() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("hark.db")).unwrap();
        let t = 1_700_000_000;
        assert!(store.first_delivery("github/a", "d1", t).await.unwrap());
        assert!(!store.first_delivery("github/a", "d1", t + 5).await.unwrap());
        // Another route keeps its own ids.
        assert!(store.first_delivery("github/b", "d1", t).await.unwrap());
        // Past the retention window the old row is pruned and the id counts as new again.
        let later = t + DELIVERY_IDS_KEPT_SECS + 1;
        assert!(store.first_delivery("github/a", "d1", later).await.unwrap());
    }

    fn activation(call_id: String, error: Option<String>) -> Activation {
        Activation {
            call_id,
            function: "echo".into(),
            trigger: "http".into(),
            status: 200,
            duration_ms: 1.5,
            started_at: Utc::now(),
            error,
            replay_of: None,
        }
    }

    #[tokio::test]
    async fn activation_records_a_full_disk_refuses_are_kept_and_written_when_it_has_room() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("hark.db")).unwrap();
        let written = || {
            store.with(|c| {
                Ok(c.query_row("SELECT COUNT(*) FROM activations", [], |r| {
                    r.get::<_, i64>(0)
                })?)
            })
        };
        // SQLite answers SQLITE_FULL, as on a full disk, once the file may not grow.
        store
            .with(|c| {
                let pages: i64 = c.pragma_query_value(None, "page_count", |r| r.get(0))?;
                c.pragma_update(None, "max_page_count", pages)?;
                Ok(())
            })
            .await
            .unwrap();
        for i in 0..100 {
            store.record(activation(format!("c{i}"), Some("x".repeat(500))), None);
        }
        // A flush answers once its batch was tried, even though it failed.
        store.flush().await;
        assert_eq!(written().await.unwrap(), 0);

        // Room again: the kept records are written on the writer's own retry, with no
        // new record or flush to prompt it.
        store
            .with(|c| Ok(c.pragma_update(None, "max_page_count", 1_000_000)?))
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while written().await.unwrap() < 100 {
            assert!(
                std::time::Instant::now() < deadline,
                "kept records were not written again"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        store.record(activation("after".into(), None), None);
        let all = store.activations(None, 1000).await.unwrap();
        assert_eq!(all.len(), 101);
        let mut ids: Vec<_> = all.iter().map(|a| a.call_id.clone()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 101, "each record written once");
    }

    fn told(text: &str) -> Story {
        Story {
            request: story::Request {
                method: "POST".into(),
                path: "/".into(),
                query: None,
                headers: vec![],
                body: story::Body {
                    size: text.len(),
                    text: Some(text.into()),
                    ..Default::default()
                },
            },
            response: None,
            logs: vec![],
            logs_by: "process".into(),
        }
    }

    #[tokio::test]
    async fn stories_are_read_back_and_the_oldest_go_first_past_their_cap() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("hark.db")).unwrap();
        store.set_retention(Retention {
            max_story_bytes: 4000,
            ..Retention::default()
        });
        for i in 0..10 {
            let text = format!("{i}{}", "x".repeat(999));
            store.record(activation(format!("c{i}"), None), Some((told(&text), None)));
            store.flush().await;
        }
        let (newest, story) = store.activation("c9").await.unwrap().unwrap();
        assert_eq!(newest.call_id, "c9");
        assert!(story.unwrap().request.body.text.unwrap().starts_with('9'));
        // Past 4000 bytes of stories, the oldest lost theirs; every record stays.
        let (oldest, story) = store.activation("c0").await.unwrap().unwrap();
        assert_eq!(oldest.call_id, "c0");
        assert_eq!(story, None);
        let kept: i64 = store
            .with(
                |c| Ok(c.query_row("SELECT SUM(story_bytes) FROM activations", [], |r| r.get(0))?),
            )
            .await
            .unwrap();
        assert!(
            (1000..=4000 + 1200).contains(&kept),
            "{kept} bytes of stories kept"
        );
        assert_eq!(store.activations(None, 100).await.unwrap().len(), 10);
        assert!(store.activation("never").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn the_bytes_of_deleted_records_stories_are_counted_as_freed() {
        // Records go by count (5 kept) long before their stories reach the byte cap: the
        // stories of the 5 kept stay, so the count of bytes kept follows the deletions.
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("hark.db")).unwrap();
        store.set_retention(Retention {
            max_records: 5,
            max_story_bytes: 6000,
            ..Retention::default()
        });
        for i in 0..40 {
            let text = format!("{i}{}", "x".repeat(999));
            store.record(activation(format!("c{i}"), None), Some((told(&text), None)));
            store.flush().await;
        }
        let kept: Vec<_> = store.activations(None, 100).await.unwrap();
        assert!(kept.len() <= 6, "{} records", kept.len());
        for a in &kept[..5.min(kept.len())] {
            let (_, story) = store.activation(&a.call_id).await.unwrap().unwrap();
            assert!(story.is_some(), "{} lost its story", a.call_id);
        }
    }

    #[tokio::test]
    async fn records_past_the_count_or_the_age_kept_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("hark.db")).unwrap();
        store.set_retention(Retention {
            max_records: 100_000,
            max_age: Some(Duration::from_secs(3600)),
            ..Retention::default()
        });
        for i in 0..5 {
            let mut old = activation(format!("old-{i}"), None);
            old.started_at = Utc::now() - chrono::Duration::hours(2);
            store.record(old, None);
        }
        for i in 0..600 {
            store.record(activation(format!("new-{i}"), None), None);
        }
        let kept = store.activations(None, 1000).await.unwrap();
        assert_eq!(kept.len(), 600, "older than an hour: gone; the others stay");
        assert!(kept.iter().all(|a| a.call_id.starts_with("new-")));

        store.set_retention(Retention {
            max_records: 50,
            ..Retention::default()
        });
        for i in 0..600 {
            store.record(activation(format!("more-{i}"), None), None);
        }
        let kept = store.activations(None, 2000).await.unwrap();
        assert!(
            kept.len() < 1200,
            "past 50 records, pruned: {} kept",
            kept.len()
        );
        assert_eq!(kept[0].call_id, "more-599", "the newest stay");
    }

    fn spec(name: &str) -> FunctionDeployment {
        FunctionDeployment {
            service: name.parse().unwrap(),
            env_process: Some("cat".into()),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn functions_secrets_and_activations_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hark.db");
        {
            let store = SqliteStore::open(&path).unwrap();
            store.put_function(&spec("echo"), 1).await.unwrap();
            store.put_function(&spec("wc"), 2).await.unwrap();
            store.set_replicas(&"wc".parse().unwrap(), 3).await.unwrap();
            assert!(!store.put_secret("token", b"v1".to_vec()).await.unwrap());
            assert!(store.put_secret("token", b"v2".to_vec()).await.unwrap());
            for i in 0..3 {
                store.record(activation(format!("c{i}"), None), None);
            }
            store.flush().await;
        }
        let store = SqliteStore::open(&path).unwrap();
        let functions = store.functions().await.unwrap();
        let names: Vec<_> = functions.iter().map(|f| f.spec.service.as_str()).collect();
        assert_eq!(names, ["echo", "wc"]);
        assert_eq!(functions[1].replicas, 3);
        assert_eq!(
            store.secret("token").await.unwrap().as_deref(),
            Some(&b"v2"[..])
        );
        assert_eq!(store.secret_names().await.unwrap(), ["token"]);
        let echo = "echo".parse().unwrap();
        let recent = store.activations(Some(&echo), 2).await.unwrap();
        assert_eq!(recent.len(), 2);
        assert_eq!(recent[0].call_id, "c2");
        assert_eq!(
            store.activation_counts().await.unwrap(),
            [("echo".to_owned(), 3)]
        );
        assert!(store.delete_function(&echo).await.unwrap());
        assert!(!store.delete_function(&echo).await.unwrap());
        assert!(store.delete_secret("token").await.unwrap());
        assert!(store.secret("token").await.unwrap().is_none());
    }

    /// Every byte the store keeps on disk: the database, its write-ahead log and index.
    fn raw_files(path: &Path) -> Vec<u8> {
        let mut raw = Vec::new();
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let file = format!("{}{suffix}", path.display());
            raw.extend(std::fs::read(file).unwrap_or_default());
        }
        raw
    }

    /// Whether `raw` holds `secret` as is, in hex, or in base64 (standard or URL alphabet).
    fn holds(raw: &[u8], secret: &[u8]) -> bool {
        use base64::Engine;
        let forms = [
            secret.to_vec(),
            hex::encode(secret).into_bytes(),
            hex::encode_upper(secret).into_bytes(),
            base64::engine::general_purpose::STANDARD_NO_PAD
                .encode(secret)
                .into_bytes(),
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(secret)
                .into_bytes(),
        ];
        forms
            .iter()
            .any(|f| raw.windows(f.len()).any(|w| w == f.as_slice()))
    }

    #[tokio::test]
    async fn secrets_are_sealed_on_disk_and_read_back_only_with_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hark.db");
        let values: [&[u8]; 3] = [
            b"lovelace-babbage-1843",
            b"xoxb-0000-sealed-bot-token",
            b"v2-rotated-signing",
        ];
        {
            let store = SqliteStore::open(&path).unwrap();
            for (i, value) in values.iter().enumerate() {
                store
                    .put_secret(&format!("s{i}"), value.to_vec())
                    .await
                    .unwrap();
            }
            // Replaced and deleted values must not linger in freed pages either.
            store.put_secret("s0", values[0].to_vec()).await.unwrap();
            store
                .put_secret("gone", b"deleted-secret-value".to_vec())
                .await
                .unwrap();
            assert!(store.delete_secret("gone").await.unwrap());
            let raw = raw_files(&path);
            assert!(raw.len() > 4096, "no store files read");
            for value in values.iter().chain([&&b"deleted-secret-value"[..]]) {
                assert!(
                    !holds(&raw, value),
                    "a secret is readable in the store's files"
                );
            }
        }
        // Reopened with the same key (the file beside the database): the values come back.
        let store = SqliteStore::open(&path).unwrap();
        for (i, value) in values.iter().enumerate() {
            assert_eq!(
                store.secret(&format!("s{i}")).await.unwrap().as_deref(),
                Some(*value)
            );
        }
        drop(store);
        // Another key is refused at open, naming where it came from.
        let other = dir.path().join("other.key");
        let e = SqliteStore::open_with_key(&path, KeySource::File(other.clone()))
            .err()
            .expect("opened with a new key although secrets are sealed");
        let text = e.to_string();
        assert!(
            text.contains("missing") && text.contains("other.key"),
            "{text}"
        );
        std::fs::write(&other, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n").unwrap();
        let text = SqliteStore::open_with_key(&path, KeySource::File(other))
            .err()
            .expect("opened with the wrong key")
            .to_string();
        assert!(
            text.contains("wrong key") && text.contains("other.key"),
            "{text}"
        );
        let text = SqliteStore::open_with_key(&path, KeySource::Env(String::new() + "QUJD"))
            .err()
            .expect("opened with a malformed key")
            .to_string();
        assert!(text.contains(sealed::ENV_SECRET_KEY), "{text}");
    }

    #[tokio::test]
    async fn secrets_stored_in_clear_by_an_earlier_version_are_sealed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hark.db");
        {
            // The schema and rows of a gateway before sealing.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "PRAGMA journal_mode = WAL;
                 CREATE TABLE secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL, updated_at TEXT NOT NULL);
                 INSERT INTO secrets VALUES ('old', CAST('clear-text-from-v0' AS BLOB), '2026-01-01T00:00:00Z');",
            )
            .unwrap();
        }
        assert!(holds(&raw_files(&path), b"clear-text-from-v0"));
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(
            store.secret("old").await.unwrap().as_deref(),
            Some(&b"clear-text-from-v0"[..])
        );
        assert!(
            !holds(&raw_files(&path), b"clear-text-from-v0"),
            "the clear value is still in the store's files after sealing"
        );
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(
            store.secret("old").await.unwrap().as_deref(),
            Some(&b"clear-text-from-v0"[..])
        );
    }

    #[tokio::test]
    async fn a_store_a_newer_hark_wrote_is_refused_and_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hark.db");
        let store = SqliteStore::open(&path).unwrap();
        store.put_secret("kept", b"value".to_vec()).await.unwrap();
        assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
        drop(store);
        let newer = SCHEMA_VERSION + 1;
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", newer)
            .unwrap();
        let e = SqliteStore::open(&path)
            .err()
            .expect("a store of a newer schema was opened");
        assert!(
            matches!(e, StoreError::NewerSchema { found, supported } if found == newer && supported == SCHEMA_VERSION),
            "{e}"
        );
        let text = e.to_string();
        assert!(
            text.contains("newer Hark") && text.contains(&newer.to_string()),
            "{text}"
        );
        // Nothing was migrated or rewritten: the version and the rows are as they were.
        let conn = Connection::open(&path).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, newer);
        let rows: i64 = conn
            .query_row(
                "SELECT count(*) FROM secrets WHERE name = 'kept'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(rows, 1);
    }

    /// Each table's columns (name and type) and the indexes, as SQLite reports them.
    fn tables(path: &Path) -> Vec<String> {
        let conn = Connection::open(path).unwrap();
        let mut stmt = conn
            .prepare(
                "SELECT m.type, m.name, p.name, p.type FROM sqlite_master m \
                 LEFT JOIN pragma_table_info(m.name) p WHERE m.name NOT LIKE 'sqlite_%' \
                 ORDER BY 1, 2, 3",
            )
            .unwrap();
        let rows = stmt
            .query_map([], |r| {
                Ok(format!(
                    "{} {} {} {}",
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                    r.get::<_, Option<String>>(3)?.unwrap_or_default()
                ))
            })
            .unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    }

    #[tokio::test]
    async fn fresh_and_migrated_stores_have_the_same_tables() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("fresh.db");
        drop(SqliteStore::open(&fresh).unwrap());
        // The oldest store Hark wrote: its first tables only, no version.
        let old = dir.path().join("old.db");
        {
            let conn = Connection::open(&old).unwrap();
            conn.execute_batch(
                "CREATE TABLE functions (name TEXT PRIMARY KEY, spec TEXT NOT NULL, replicas INTEGER NOT NULL, created_at TEXT NOT NULL);
                 CREATE TABLE secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL, updated_at TEXT NOT NULL);
                 CREATE TABLE activations (call_id TEXT NOT NULL, function TEXT NOT NULL, trigger TEXT NOT NULL, status INTEGER NOT NULL, duration_ms REAL NOT NULL, started_at TEXT NOT NULL, error TEXT);",
            )
            .unwrap();
        }
        drop(SqliteStore::open(&old).unwrap());
        assert_eq!(tables(&old), tables(&fresh));
        assert!(tables(&fresh)
            .iter()
            .any(|t| t == "table secrets sealed INTEGER"));
    }

    #[tokio::test]
    async fn a_store_from_before_versions_is_brought_up_to_the_current_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hark.db");
        {
            // A gateway before schema versions: some tables, user_version 0.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SCHEMA).unwrap();
            conn.execute(
                "INSERT INTO functions VALUES ('old', '{\"service\":\"old\"}', 1, '2026-01-01T00:00:00Z')",
                [],
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
        let functions = store.functions().await.unwrap();
        assert_eq!(functions.len(), 1, "the old row is kept");
        assert_eq!(store.queue_counts().await.unwrap(), QueueCounts::default());
    }
}
