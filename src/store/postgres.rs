//! The store on PostgreSQL, for several gateways on one database: a `postgres://` URL
//! comes in; a pool of connections, with the schema brought to this Hark's version, goes
//! out, and the state every gateway must agree on is read and written there.
//!
//! Everything the SQLite store keeps is kept here too, so that every gateway on the
//! database agrees on it: deployed functions, secrets (sealed with the same key as on
//! SQLite: every gateway must be given the same key, and one with another key is
//! refused), delivery ids (a redelivery reaching two gateways at once runs once), tokens,
//! their revocations, retired signing keys and UI sessions, schedule ticks (each claimed
//! by one gateway), Alexa's user attributes and late results (each spoken once, whichever
//! gateway the user's next request reaches), failure screenshots, the durable queue
//! ([`queue`]: calls claimed with `FOR UPDATE SKIP LOCKED`, so none runs on two gateways
//! at once) and the activation records with their stories ([`history`]).
//!
//! The methods are [`super::SqliteStore`]'s, with the same names, arguments and answers
//! ([`super::Store`] forwards to one or the other); `src/store/contract/` runs one set of
//! tests against both.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde_json::{Map, Value};
use tokio_postgres::NoTls;

use super::screenshot::SCREENSHOTS_KEPT;
use super::tokens::{TokenRecord, TokenStanding, UiSession, LEGACY_REFUSED};
use super::{
    Durability, KeySource, SecretKey, StoreError, StoredFunction, DELIVERY_IDS_KEPT_SECS, KEY_CHECK,
};
use super::{PendingReply, ScheduleRun, Screenshot};
use crate::function::{FunctionDeployment, FunctionName};

/// The schema this Hark writes, kept in the table `hark_schema`. Each change of the
/// tables appends a step to [`MIGRATIONS`], never an edit of one.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The steps from an empty database: step `i` brings version `i` to `i + 1`, running
/// its statements in order.
const MIGRATIONS: &[&[&str]] = &[&[SHARED_SCHEMA, queue::SCHEMA, history::SCHEMA]];

/// The state every gateway shares (version 1).
const SHARED_SCHEMA: &str = "
CREATE TABLE functions (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    replicas BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE secrets (
    name TEXT PRIMARY KEY,
    value BYTEA NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);
CREATE TABLE deliveries (
    channel TEXT NOT NULL,
    id TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (channel, id)
);
CREATE INDEX deliveries_by_time ON deliveries (received_at);
CREATE TABLE tokens (
    jti TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    scopes TEXT NOT NULL,
    kid TEXT NOT NULL,
    issued_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT,
    admin_file BOOLEAN NOT NULL DEFAULT FALSE,
    seq BIGINT GENERATED ALWAYS AS IDENTITY
);
CREATE TABLE retired_keys (
    kid TEXT PRIMARY KEY,
    retired_at BIGINT NOT NULL
);
CREATE TABLE ui_sessions (
    id_hash TEXT PRIMARY KEY,
    jti TEXT,
    kid TEXT,
    subject TEXT NOT NULL,
    scopes TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX ui_sessions_by_jti ON ui_sessions (jti);
CREATE TABLE schedule_anchors (
    function TEXT PRIMARY KEY,
    anchor BIGINT NOT NULL
);
CREATE TABLE schedule_runs (
    function TEXT NOT NULL,
    tick BIGINT NOT NULL,
    owner TEXT NOT NULL,
    outcome TEXT NOT NULL,
    call_id TEXT,
    status INTEGER,
    duration_ms DOUBLE PRECISION,
    started_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (function, tick)
);
CREATE TABLE alexa_user_attributes (
    skill TEXT NOT NULL,
    user_id TEXT NOT NULL,
    attributes TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (skill, user_id)
);
CREATE TABLE alexa_pending (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    skill TEXT NOT NULL,
    user_id TEXT NOT NULL,
    call_id TEXT NOT NULL,
    intent TEXT NOT NULL,
    speech TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    UNIQUE (skill, user_id, call_id)
);
CREATE TABLE activation_screenshots (
    call_id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    png BYTEA NOT NULL,
    taken_at TIMESTAMPTZ NOT NULL,
    seq BIGSERIAL NOT NULL
);
";

/// The advisory lock gateways take to migrate one at a time ("hark" in ASCII).
const MIGRATION_LOCK: i64 = 0x6861_726b;

/// Connections per gateway: its requests wait for one when all are busy.
const POOL_SIZE: usize = 16;

mod history;
mod queue;

/// A store on a PostgreSQL database. Cloning shares the pool.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    key: Arc<SecretKey>,
    /// The queue's group-commit writers.
    queue: queue::Writers,
    /// The activation records' writer.
    history: history::Writer,
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.code() {
            // Class 53: the server has no room (disk, memory, connections).
            Some(code) if code.code().starts_with("53") => StoreError::Unwritable(e.to_string()),
            _ => StoreError::Postgres(e),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://USER@HOST:PORT/DB`), brings its
    /// schema to [`SCHEMA_VERSION`] (refusing one a newer Hark wrote) and checks the
    /// secrets' key against the one the first gateway stored.
    pub async fn connect(url: &str, key: KeySource) -> Result<PgStore, StoreError> {
        Self::connect_with(url, key, Durability::Full).await
    }

    /// As [`PgStore::connect`]; with [`Durability::Normal`], this store's connections
    /// commit with `synchronous_commit` off ([`Durability::Full`] leaves the server's
    /// setting).
    pub async fn connect_with(
        url: &str,
        key: KeySource,
        durability: Durability,
    ) -> Result<PgStore, StoreError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
            // The parser's message never repeats the URL (which may hold a password).
            StoreError::Unavailable(format!("not a PostgreSQL URL: {e}"))
        })?;
        if durability == Durability::Normal {
            let options = config.get_options().unwrap_or_default();
            config.options(format!("{options} -c synchronous_commit=off").trim());
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let mut client = pool.get().await?;
        migrate(&mut client).await?;
        let key = Arc::new(load_key(&client, key).await?);
        drop(client);
        Ok(PgStore {
            queue: queue::Writers::start(pool.clone()),
            history: history::Writer::start(pool.clone()),
            pool,
            key,
        })
    }

    /// The schema version of the database ([`SCHEMA_VERSION`] once connected).
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one("SELECT version FROM hark_schema", &[])
            .await?;
        Ok(row.get(0))
    }

    /// The server's `synchronous_commit` for this gateway's connections (`on`, `off`, …).
    pub async fn synchronous_commit(&self) -> Result<String, StoreError> {
        let client = self.pool.get().await?;
        let row = client.query_one("SHOW synchronous_commit", &[]).await?;
        Ok(row.get(0))
    }

    /// Inserts or replaces a function, keeping its creation time if it existed.
    pub async fn put_function(
        &self,
        spec: &FunctionDeployment,
        replicas: u32,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(spec)?;
        let name = spec.service.to_string();
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO functions (name, spec, replicas, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, replicas = excluded.replicas",
                &[&name, &json, &i64::from(replicas), &Utc::now()],
            )
            .await?;
        Ok(())
    }

    /// Records a new replica count.
    pub async fn set_replicas(&self, name: &FunctionName, replicas: u32) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "UPDATE functions SET replicas = $2 WHERE name = $1",
                &[&name.as_str(), &i64::from(replicas)],
            )
            .await?;
        Ok(())
    }

    /// Deletes a function; `false` if there was none.
    pub async fn delete_function(&self, name: &FunctionName) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let deleted = client
            .execute("DELETE FROM functions WHERE name = $1", &[&name.as_str()])
            .await?;
        Ok(deleted > 0)
    }

    /// One function.
    pub async fn function(
        &self,
        name: &FunctionName,
    ) -> Result<Option<StoredFunction>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT spec, replicas, created_at FROM functions WHERE name = $1",
                &[&name.as_str()],
            )
            .await?;
        row.map(|r| stored_function(&r)).transpose()
    }

    /// Every function, by name.
    pub async fn functions(&self) -> Result<Vec<StoredFunction>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT spec, replicas, created_at FROM functions ORDER BY name COLLATE \"C\"",
                &[],
            )
            .await?;
        rows.iter().map(stored_function).collect()
    }

    /// Creates or replaces a secret (sealed); `true` if it existed.
    pub async fn put_secret(&self, name: &str, value: Vec<u8>) -> Result<bool, StoreError> {
        let sealed = self.key.seal(name, &value)?;
        let client = self.pool.get().await?;
        // `xmax` is not zero on a row the statement updated rather than inserted.
        let row = client
            .query_one(
                "INSERT INTO secrets (name, value, updated_at) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at
                 RETURNING (xmax <> 0)",
                &[&name, &sealed, &Utc::now()],
            )
            .await?;
        Ok(row.get(0))
    }

    /// A secret's value.
    pub async fn secret(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt("SELECT value FROM secrets WHERE name = $1", &[&name])
            .await?;
        match row {
            None => Ok(None),
            Some(row) => Ok(Some(self.key.open(name, row.get(0))?)),
        }
    }

    /// The names of every secret.
    pub async fn secret_names(&self) -> Result<Vec<String>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query("SELECT name FROM secrets ORDER BY name COLLATE \"C\"", &[])
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Deletes a secret; `false` if there was none.
    pub async fn delete_secret(&self, name: &str) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let deleted = client
            .execute("DELETE FROM secrets WHERE name = $1", &[&name])
            .await?;
        Ok(deleted > 0)
    }

    /// Remembers delivery `id` of `channel` at `now` (unix seconds); `true` the first
    /// time, on whichever gateway, `false` for a redelivery. Ids older than
    /// [`DELIVERY_IDS_KEPT_SECS`] are forgotten on the way.
    pub async fn first_delivery(
        &self,
        channel: &str,
        id: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "DELETE FROM deliveries WHERE received_at < $1",
                &[&(now - DELIVERY_IDS_KEPT_SECS)],
            )
            .await?;
        let inserted = client
            .execute(
                "INSERT INTO deliveries (channel, id, received_at) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
                &[&channel, &id, &now],
            )
            .await?;
        Ok(inserted == 1)
    }

    /// Records a token; one already recorded is left as it is.
    pub async fn record_token(&self, token: TokenRecord) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO tokens (jti, subject, scopes, kid, issued_at, expires_at, revoked_at, admin_file)
                 VALUES ($1, $2, $3, $4, $5, $6, NULL, $7)
                 ON CONFLICT (jti) DO NOTHING",
                &[
                    &token.id,
                    &token.subject,
                    &serde_json::to_string(&token.scopes)?,
                    &token.kid,
                    &token.issued_at.timestamp(),
                    &token.expires_at.map(|t| t.timestamp()),
                    &token.admin_file,
                ],
            )
            .await?;
        Ok(())
    }

    /// Every recorded token, newest first.
    pub async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT jti, subject, scopes, kid, issued_at, expires_at, revoked_at, admin_file
                 FROM tokens ORDER BY issued_at DESC, seq DESC",
                &[],
            )
            .await?;
        rows.iter().map(token_record).collect()
    }

    /// One recorded token.
    pub async fn token(&self, jti: &str) -> Result<Option<TokenRecord>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT jti, subject, scopes, kid, issued_at, expires_at, revoked_at, admin_file
                 FROM tokens WHERE jti = $1",
                &[&jti],
            )
            .await?;
        row.as_ref().map(token_record).transpose()
    }

    /// Revokes token `jti` and ends its UI sessions. `Ok(false)`: no such token.
    pub async fn revoke_token(&self, jti: &str) -> Result<bool, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let found = tx
            .execute(
                "UPDATE tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE jti = $1",
                &[&jti, &Utc::now().timestamp()],
            )
            .await?
            > 0;
        tx.execute("DELETE FROM ui_sessions WHERE jti = $1", &[&jti])
            .await?;
        tx.commit().await?;
        Ok(found)
    }

    /// Revokes every admin token but `new` (and their UI sessions); with `refuse_legacy`,
    /// tokens without an id are refused from now on too. The ids revoked.
    pub async fn rotate_admin_token(
        &self,
        new: &str,
        refuse_legacy: bool,
    ) -> Result<Vec<String>, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let now = Utc::now().timestamp();
        let old: Vec<String> = tx
            .query(
                "UPDATE tokens SET revoked_at = $2
                 WHERE admin_file AND revoked_at IS NULL AND jti <> $1 RETURNING jti",
                &[&new, &now],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        tx.execute("DELETE FROM ui_sessions WHERE jti = ANY($1)", &[&old])
            .await?;
        if refuse_legacy {
            tx.execute("DELETE FROM ui_sessions WHERE jti IS NULL", &[])
                .await?;
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                &[&LEGACY_REFUSED, &now.to_string().into_bytes()],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(old)
    }

    /// Retires signing key `kid`: tokens it signed are refused from now on, by every
    /// gateway on this database.
    pub async fn retire_key(&self, kid: &str) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO retired_keys (kid, retired_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&kid, &Utc::now().timestamp()],
            )
            .await?;
        Ok(())
    }

    /// The value kept under `key`, keeping `value` when there is none: the first
    /// gateway's answer, which those starting later are held to.
    pub async fn first_meta(
        &self,
        key: &'static str,
        value: Vec<u8>,
    ) -> Result<Vec<u8>, StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                &[&key, &value],
            )
            .await?;
        let row = client
            .query_one("SELECT value FROM meta WHERE key = $1", &[&key])
            .await?;
        Ok(row.get(0))
    }

    /// Keeps `value` under `key`.
    pub async fn set_meta(&self, key: &'static str, value: Vec<u8>) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&key, &value],
            )
            .await?;
        Ok(())
    }

    /// Whether signing key `kid` was retired.
    pub async fn key_retired(&self, kid: &str) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt("SELECT 1 FROM retired_keys WHERE kid = $1", &[&kid])
            .await?;
        Ok(row.is_some())
    }

    /// The standing of a token with id `jti` (None: a token from before ids) signed by
    /// key `kid`, in one trip to the database.
    pub async fn token_standing(
        &self,
        jti: Option<String>,
        kid: Option<String>,
    ) -> Result<TokenStanding, StoreError> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(
                "SELECT
                    EXISTS (SELECT 1 FROM tokens WHERE jti = $1),
                    EXISTS (SELECT 1 FROM tokens WHERE jti = $1 AND revoked_at IS NOT NULL),
                    EXISTS (SELECT 1 FROM retired_keys WHERE kid = $2),
                    EXISTS (SELECT 1 FROM meta WHERE key = $3)",
            )
            .await?;
        let row = client
            .query_one(&statement, &[&jti, &kid, &LEGACY_REFUSED])
            .await?;
        Ok(TokenStanding {
            known: row.get(0),
            revoked: row.get(1),
            key_retired: row.get(2),
            legacy_refused: jti.is_none() && row.get::<_, bool>(3),
        })
    }

    /// Keeps a new UI session under the hash of its id.
    pub async fn create_ui_session(
        &self,
        id_hash: &str,
        session: UiSession,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        // Sessions past their time go as new ones arrive.
        client
            .execute(
                "DELETE FROM ui_sessions WHERE expires_at <= $1",
                &[&Utc::now().timestamp()],
            )
            .await?;
        client
            .execute(
                "INSERT INTO ui_sessions (id_hash, jti, kid, subject, scopes, created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &id_hash,
                    &session.jti,
                    &session.kid,
                    &session.subject,
                    &serde_json::to_string(&session.scopes)?,
                    &session.created_at.timestamp(),
                    &session.expires_at.timestamp(),
                ],
            )
            .await?;
        Ok(())
    }

    /// The UI session whose id hashes to `id_hash`, if it exists and has not expired.
    pub async fn ui_session(&self, id_hash: &str) -> Result<Option<UiSession>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT jti, kid, subject, scopes, created_at, expires_at FROM ui_sessions
                 WHERE id_hash = $1 AND expires_at > $2",
                &[&id_hash, &Utc::now().timestamp()],
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(UiSession {
            jti: row.get(0),
            kid: row.get(1),
            subject: row.get(2),
            scopes: serde_json::from_str(row.get(3))?,
            created_at: from_secs(row.get(4)),
            expires_at: from_secs(row.get(5)),
        }))
    }

    /// Ends the UI session whose id hashes to `id_hash`.
    pub async fn delete_ui_session(&self, id_hash: &str) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute("DELETE FROM ui_sessions WHERE id_hash = $1", &[&id_hash])
            .await?;
        Ok(())
    }

    /// The last time a schedule was looked at, if ever.
    pub async fn schedule_anchor(
        &self,
        function: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT anchor FROM schedule_anchors WHERE function = $1",
                &[&function],
            )
            .await?;
        Ok(row.and_then(|r| DateTime::from_timestamp_millis(r.get(0))))
    }

    /// Moves a schedule's anchor forward (never back).
    pub async fn set_schedule_anchor(
        &self,
        function: &str,
        anchor: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO schedule_anchors (function, anchor) VALUES ($1, $2)
                 ON CONFLICT (function) DO UPDATE
                 SET anchor = GREATEST(schedule_anchors.anchor, excluded.anchor)",
                &[&function, &anchor.timestamp_millis()],
            )
            .await?;
        Ok(())
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
        let client = self.pool.get().await?;
        let inserted = client
            .execute(
                "INSERT INTO schedule_runs (function, tick, owner, outcome, call_id, started_at)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                &[
                    &function,
                    &tick.timestamp_millis(),
                    &owner,
                    &outcome,
                    &call_id,
                    &Utc::now(),
                ],
            )
            .await?;
        Ok(inserted == 1)
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
        let client = self.pool.get().await?;
        client
            .execute(
                "UPDATE schedule_runs SET outcome = $3, status = $4, duration_ms = $5
                 WHERE function = $1 AND tick = $2",
                &[
                    &function,
                    &tick.timestamp_millis(),
                    &outcome,
                    &status.map(i32::from),
                    &duration_ms,
                ],
            )
            .await?;
        Ok(())
    }

    /// The newest runs of a schedule.
    pub async fn schedule_runs(
        &self,
        function: &str,
        limit: u32,
    ) -> Result<Vec<ScheduleRun>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT tick, outcome, call_id, status, duration_ms, started_at FROM schedule_runs
                 WHERE function = $1 ORDER BY tick DESC LIMIT $2",
                &[&function, &i64::from(limit)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| ScheduleRun {
                tick: DateTime::from_timestamp_millis(r.get(0)).unwrap_or_default(),
                outcome: r.get(1),
                call_id: r.get(2),
                status: r
                    .get::<_, Option<i32>>(3)
                    .and_then(|s| u16::try_from(s).ok()),
                duration_ms: r.get(4),
                started_at: r.get(5),
            })
            .collect())
    }

    /// The persistent attributes of `user_id` in `skill` (empty when there are none).
    pub async fn alexa_user_attributes(
        &self,
        skill: &str,
        user_id: &str,
    ) -> Result<Map<String, Value>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT attributes FROM alexa_user_attributes WHERE skill = $1 AND user_id = $2",
                &[&skill, &user_id],
            )
            .await?;
        Ok(match row {
            Some(r) => serde_json::from_str(r.get(0))?,
            None => Map::new(),
        })
    }

    /// Replaces the persistent attributes of `user_id` in `skill`.
    pub async fn put_alexa_user_attributes(
        &self,
        skill: &str,
        user_id: &str,
        attributes: &Map<String, Value>,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(attributes)?;
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO alexa_user_attributes (skill, user_id, attributes, updated_at)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (skill, user_id) DO UPDATE SET attributes = excluded.attributes,
                 updated_at = excluded.updated_at",
                &[&skill, &user_id, &json, &Utc::now()],
            )
            .await?;
        Ok(())
    }

    /// Keeps a late result for the user's next request (once per call).
    pub async fn push_alexa_pending(
        &self,
        skill: &str,
        user_id: &str,
        reply: PendingReply,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO alexa_pending (skill, user_id, call_id, intent, speech, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                &[
                    &skill,
                    &user_id,
                    &reply.call_id,
                    &reply.intent,
                    &reply.speech,
                    &reply.created_at,
                ],
            )
            .await?;
        Ok(())
    }

    /// Removes and returns the late results waiting for `user_id` in `skill`, oldest
    /// first: each is taken by one request, whichever gateway it reached.
    pub async fn take_alexa_pending(
        &self,
        skill: &str,
        user_id: &str,
    ) -> Result<Vec<PendingReply>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "DELETE FROM alexa_pending WHERE skill = $1 AND user_id = $2
                 RETURNING id, call_id, intent, speech, created_at",
                &[&skill, &user_id],
            )
            .await?;
        let mut taken: Vec<(i64, PendingReply)> = rows
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    PendingReply {
                        call_id: r.get(1),
                        intent: r.get(2),
                        speech: r.get(3),
                        created_at: r.get(4),
                    },
                )
            })
            .collect();
        taken.sort_by_key(|(id, _)| *id);
        Ok(taken.into_iter().map(|(_, reply)| reply).collect())
    }

    /// Keeps the screenshot of call `call_id` (replacing an earlier one of the same call);
    /// past [`SCREENSHOTS_KEPT`], the oldest go.
    pub async fn put_screenshot(
        &self,
        call_id: &str,
        url: &str,
        png: Vec<u8>,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO activation_screenshots (call_id, url, png, taken_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (call_id) DO UPDATE SET url = excluded.url, png = excluded.png,
                 taken_at = excluded.taken_at, seq = DEFAULT",
                &[&call_id, &url, &png, &Utc::now()],
            )
            .await?;
        client
            .execute(
                "DELETE FROM activation_screenshots
                 WHERE seq <= (SELECT MAX(seq) FROM activation_screenshots) - $1",
                &[&SCREENSHOTS_KEPT],
            )
            .await?;
        Ok(())
    }

    /// The screenshot of call `call_id`, if one was kept.
    pub async fn screenshot(&self, call_id: &str) -> Result<Option<Screenshot>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT url, png, taken_at FROM activation_screenshots WHERE call_id = $1",
                &[&call_id],
            )
            .await?;
        Ok(row.map(|r| Screenshot {
            url: r.get(0),
            png: r.get(1),
            taken_at: r.get(2),
        }))
    }
}

/// Brings the database to [`SCHEMA_VERSION`] in one transaction, under an advisory lock
/// so that gateways starting together migrate one after the other; refuses a database a
/// newer Hark wrote, before changing anything.
async fn migrate(client: &mut deadpool_postgres::Object) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS hark_schema (version BIGINT NOT NULL)")
        .await?;
    let found: i64 = tx
        .query_opt("SELECT version FROM hark_schema", &[])
        .await?
        .map_or(0, |r| r.get(0));
    if found > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found == SCHEMA_VERSION {
        return Ok(());
    }
    for step in &MIGRATIONS[found.max(0) as usize..] {
        for statements in step.iter().filter(|s| !s.trim().is_empty()) {
            tx.batch_execute(statements).await?;
        }
    }
    tx.execute("DELETE FROM hark_schema", &[]).await?;
    tx.execute(
        "INSERT INTO hark_schema (version) VALUES ($1)",
        &[&SCHEMA_VERSION],
    )
    .await?;
    tx.commit().await?;
    tracing::info!(
        from = found,
        to = SCHEMA_VERSION,
        "PostgreSQL schema migrated"
    );
    Ok(())
}

/// Loads the secrets' key and checks it against the check value the first gateway on
/// this database stored (storing it when this is the first).
async fn load_key(
    client: &deadpool_postgres::Object,
    source: KeySource,
) -> Result<SecretKey, StoreError> {
    let stored = client
        .query_opt("SELECT value FROM meta WHERE key = $1", &[&KEY_CHECK])
        .await?;
    let sealed: i64 = client
        .query_one("SELECT count(*) FROM secrets", &[])
        .await?
        .get(0);
    let key = SecretKey::load(source, stored.is_none() && sealed == 0)?;
    if stored.is_none() {
        // Two gateways starting on a new database race here: one check is kept, and the
        // other gateway is held to it below.
        client
            .execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                &[&KEY_CHECK, &key.check_value()?],
            )
            .await?;
    }
    let check: Vec<u8> = client
        .query_one("SELECT value FROM meta WHERE key = $1", &[&KEY_CHECK])
        .await?
        .get(0);
    key.verify_check(&check)?;
    Ok(key)
}

/// `s` as PostgreSQL's `TEXT` takes it: without NUL characters (each becomes U+FFFD),
/// which it refuses and SQLite keeps (a failing function's stderr may hold them).
pub(super) fn text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        std::borrow::Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// A PostgreSQL error with its causes ("error connecting to server: Connection refused"),
/// and the server's detail when it gave one.
pub fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return match db.detail() {
            Some(detail) => format!("{} ({detail})", db.message()),
            None => db.message().to_owned(),
        };
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn stored_function(row: &tokio_postgres::Row) -> Result<StoredFunction, StoreError> {
    Ok(StoredFunction {
        spec: serde_json::from_str(row.get(0))?,
        replicas: u32::try_from(row.get::<_, i64>(1)).unwrap_or(0),
        created_at: row.get(2),
    })
}

fn token_record(row: &tokio_postgres::Row) -> Result<TokenRecord, StoreError> {
    Ok(TokenRecord {
        id: row.get(0),
        subject: row.get(1),
        scopes: serde_json::from_str(row.get(2))?,
        kid: row.get(3),
        issued_at: from_secs(row.get(4)),
        expires_at: row.get::<_, Option<i64>>(5).map(from_secs),
        revoked_at: row.get::<_, Option<i64>>(6).map(from_secs),
        admin_file: row.get(7),
    })
}

fn from_secs(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(s, 0).unwrap_or_default()
}
