//! What the gateway remembers of the tokens it minted and the web UI's sessions: a token's
//! id, subject, scopes and times come in (never the token itself), and the standing of a
//! token (known, revoked, signed by a retired key) goes out to every gateway process
//! sharing the store. Tables of their own, so databases made before them simply gain them.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::{SqliteStore, StoreError};

/// The tables, created with the rest of the schema.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tokens (
    jti TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    scopes TEXT NOT NULL,
    kid TEXT NOT NULL,
    issued_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER,
    admin_file INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS retired_keys (
    kid TEXT PRIMARY KEY,
    retired_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS ui_sessions (
    id_hash TEXT PRIMARY KEY,
    jti TEXT,
    kid TEXT,
    subject TEXT NOT NULL,
    scopes TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ui_sessions_by_jti ON ui_sessions (jti);
";

/// `meta` key set once tokens without an id (minted before ids existed) are refused.
pub(super) const LEGACY_REFUSED: &str = "tokens.legacy_refused_at";

/// A minted token as the store keeps it (never the token itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    /// The token's `jti`.
    pub id: String,
    pub subject: String,
    pub scopes: Vec<String>,
    /// The signing key's id.
    pub kid: String,
    pub issued_at: DateTime<Utc>,
    /// None: the token never expires.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub revoked_at: Option<DateTime<Utc>>,
    /// The admin token of the data directory's `admin-token` file.
    #[serde(default)]
    pub admin_file: bool,
}

/// What the store says about a token presented to the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TokenStanding {
    /// The token's id is recorded (always false for tokens without an id).
    pub known: bool,
    pub revoked: bool,
    /// The key that signed it was retired.
    pub key_retired: bool,
    /// Tokens without an id are refused.
    pub legacy_refused: bool,
}

/// A web UI session as stored: the session id itself is kept only as its hash.
#[derive(Debug, Clone, PartialEq)]
pub struct UiSession {
    pub jti: Option<String>,
    pub kid: Option<String>,
    pub subject: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

fn secs(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

fn from_secs(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(s, 0).unwrap_or_default()
}

fn record(r: &rusqlite::Row<'_>) -> rusqlite::Result<(TokenRecord, String)> {
    Ok((
        TokenRecord {
            id: r.get(0)?,
            subject: r.get(1)?,
            scopes: Vec::new(),
            kid: r.get(3)?,
            issued_at: from_secs(r.get(4)?),
            expires_at: r.get::<_, Option<i64>>(5)?.map(from_secs),
            revoked_at: r.get::<_, Option<i64>>(6)?.map(from_secs),
            admin_file: r.get(7)?,
        },
        r.get(2)?,
    ))
}

fn insert_token(c: &Connection, t: &TokenRecord) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO tokens (jti, subject, scopes, kid, issued_at, expires_at, revoked_at, admin_file)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, ?7)
         ON CONFLICT(jti) DO NOTHING",
        params![
            t.id,
            t.subject,
            serde_json::to_string(&t.scopes)?,
            t.kid,
            secs(t.issued_at),
            t.expires_at.map(secs),
            t.admin_file
        ],
    )?;
    Ok(())
}

impl SqliteStore {
    /// Records a token; one already recorded is left as it is.
    pub async fn record_token(&self, token: TokenRecord) -> Result<(), StoreError> {
        self.with(move |c| insert_token(c, &token)).await
    }

    /// Every recorded token, newest first.
    pub async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT jti, subject, scopes, kid, issued_at, expires_at, revoked_at, admin_file
                 FROM tokens ORDER BY issued_at DESC, rowid DESC",
            )?;
            let rows = stmt.query_map([], record)?;
            let mut out = Vec::new();
            for row in rows {
                let (mut t, scopes) = row?;
                t.scopes = serde_json::from_str(&scopes)?;
                out.push(t);
            }
            Ok(out)
        })
        .await
    }

    /// One recorded token.
    pub async fn token(&self, jti: &str) -> Result<Option<TokenRecord>, StoreError> {
        let jti = jti.to_owned();
        self.with(move |c| {
            let row = c
                .query_row(
                    "SELECT jti, subject, scopes, kid, issued_at, expires_at, revoked_at, admin_file
                     FROM tokens WHERE jti = ?1",
                    [jti],
                    record,
                )
                .optional()?;
            match row {
                None => Ok(None),
                Some((mut t, scopes)) => {
                    t.scopes = serde_json::from_str(&scopes)?;
                    Ok(Some(t))
                }
            }
        })
        .await
    }

    /// Revokes token `jti` and ends its UI sessions. `Ok(false)`: no such token.
    pub async fn revoke_token(&self, jti: &str) -> Result<bool, StoreError> {
        let jti = jti.to_owned();
        self.with_mut(move |c| {
            let tx = c.transaction()?;
            let found = tx.execute(
                "UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?2) WHERE jti = ?1",
                params![jti, Utc::now().timestamp()],
            )? > 0;
            tx.execute("DELETE FROM ui_sessions WHERE jti = ?1", [&jti])?;
            tx.commit()?;
            Ok(found)
        })
        .await
    }

    /// Revokes every admin token but `new` (and their UI sessions); with `refuse_legacy`,
    /// tokens without an id are refused from now on too. The ids revoked.
    pub async fn rotate_admin_token(
        &self,
        new: &str,
        refuse_legacy: bool,
    ) -> Result<Vec<String>, StoreError> {
        let new = new.to_owned();
        self.with_mut(move |c| {
            let tx = c.transaction()?;
            let now = Utc::now().timestamp();
            let old: Vec<String> = {
                let mut stmt = tx.prepare(
                    "SELECT jti FROM tokens WHERE admin_file = 1 AND revoked_at IS NULL AND jti != ?1",
                )?;
                let rows = stmt.query_map([&new], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            for jti in &old {
                tx.execute(
                    "UPDATE tokens SET revoked_at = ?2 WHERE jti = ?1",
                    params![jti, now],
                )?;
                tx.execute("DELETE FROM ui_sessions WHERE jti = ?1", [jti])?;
            }
            if refuse_legacy {
                tx.execute("DELETE FROM ui_sessions WHERE jti IS NULL", [])?;
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES (?1, ?2)
                     ON CONFLICT(key) DO NOTHING",
                    params![LEGACY_REFUSED, now.to_string().into_bytes()],
                )?;
            }
            tx.commit()?;
            Ok(old)
        })
        .await
    }

    /// Retires signing key `kid`: tokens it signed are refused from now on, by every
    /// gateway process sharing this store.
    pub async fn retire_key(&self, kid: &str) -> Result<(), StoreError> {
        let kid = kid.to_owned();
        self.with(move |c| {
            c.execute(
                "INSERT OR IGNORE INTO retired_keys (kid, retired_at) VALUES (?1, ?2)",
                params![kid, Utc::now().timestamp()],
            )?;
            Ok(())
        })
        .await
    }

    /// The value kept under `key`, keeping `value` when there is none: the first
    /// gateway's answer, which those starting later are held to.
    pub async fn first_meta(
        &self,
        key: &'static str,
        value: Vec<u8>,
    ) -> Result<Vec<u8>, StoreError> {
        self.with(move |c| {
            c.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2)",
                params![key, value],
            )?;
            Ok(c.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))?)
        })
        .await
    }

    /// Keeps `value` under `key`.
    pub async fn set_meta(&self, key: &'static str, value: Vec<u8>) -> Result<(), StoreError> {
        self.with(move |c| {
            c.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )?;
            Ok(())
        })
        .await
    }

    /// Whether signing key `kid` was retired.
    pub async fn key_retired(&self, kid: &str) -> Result<bool, StoreError> {
        let kid = kid.to_owned();
        self.with(move |c| {
            Ok(
                c.prepare_cached("SELECT 1 FROM retired_keys WHERE kid = ?1")?
                    .exists([kid])?,
            )
        })
        .await
    }

    /// The standing of a token with id `jti` (None: a token from before ids) signed by
    /// key `kid`, in one trip to the store.
    pub async fn token_standing(
        &self,
        jti: Option<String>,
        kid: Option<String>,
    ) -> Result<TokenStanding, StoreError> {
        self.with(move |c| {
            let mut standing = TokenStanding::default();
            if let Some(jti) = &jti {
                let revoked: Option<Option<i64>> = c
                    .prepare_cached("SELECT revoked_at FROM tokens WHERE jti = ?1")?
                    .query_row([jti], |r| r.get(0))
                    .optional()?;
                standing.known = revoked.is_some();
                standing.revoked = revoked.flatten().is_some();
            } else {
                standing.legacy_refused = c
                    .prepare_cached("SELECT 1 FROM meta WHERE key = ?1")?
                    .exists([LEGACY_REFUSED])?;
            }
            if let Some(kid) = &kid {
                standing.key_retired = c
                    .prepare_cached("SELECT 1 FROM retired_keys WHERE kid = ?1")?
                    .exists([kid])?;
            }
            Ok(standing)
        })
        .await
    }

    /// Keeps a new UI session under the hash of its id.
    pub async fn create_ui_session(
        &self,
        id_hash: &str,
        session: UiSession,
    ) -> Result<(), StoreError> {
        let id_hash = id_hash.to_owned();
        self.with(move |c| {
            let now = Utc::now().timestamp();
            // Sessions past their time go as new ones arrive.
            c.execute("DELETE FROM ui_sessions WHERE expires_at <= ?1", [now])?;
            c.execute(
                "INSERT INTO ui_sessions (id_hash, jti, kid, subject, scopes, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    id_hash,
                    session.jti,
                    session.kid,
                    session.subject,
                    serde_json::to_string(&session.scopes)?,
                    secs(session.created_at),
                    secs(session.expires_at)
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// The UI session whose id hashes to `id_hash`, if it exists and has not expired.
    pub async fn ui_session(&self, id_hash: &str) -> Result<Option<UiSession>, StoreError> {
        let id_hash = id_hash.to_owned();
        self.with(move |c| {
            let row = c
                .prepare_cached(
                    "SELECT jti, kid, subject, scopes, created_at, expires_at FROM ui_sessions
                     WHERE id_hash = ?1 AND expires_at > ?2",
                )?
                .query_row(params![id_hash, Utc::now().timestamp()], |r| {
                    Ok((
                        UiSession {
                            jti: r.get(0)?,
                            kid: r.get(1)?,
                            subject: r.get(2)?,
                            scopes: Vec::new(),
                            created_at: from_secs(r.get(4)?),
                            expires_at: from_secs(r.get(5)?),
                        },
                        r.get::<_, String>(3)?,
                    ))
                })
                .optional()?;
            match row {
                None => Ok(None),
                Some((mut s, scopes)) => {
                    s.scopes = serde_json::from_str(&scopes)?;
                    Ok(Some(s))
                }
            }
        })
        .await
    }

    /// Ends the UI session whose id hashes to `id_hash`.
    pub async fn delete_ui_session(&self, id_hash: &str) -> Result<(), StoreError> {
        let id_hash = id_hash.to_owned();
        self.with(move |c| {
            c.execute("DELETE FROM ui_sessions WHERE id_hash = ?1", [id_hash])?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(jti: &str, admin_file: bool) -> TokenRecord {
        TokenRecord {
            id: jti.into(),
            subject: "ci".into(),
            scopes: vec!["functions:read".into()],
            kid: "k1".into(),
            issued_at: from_secs(Utc::now().timestamp()),
            expires_at: None,
            revoked_at: None,
            admin_file,
        }
    }

    #[tokio::test]
    async fn revocation_rotation_and_sessions_are_kept_and_an_old_database_gains_the_tables() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hark.db");
        {
            let c = rusqlite::Connection::open(&path).unwrap();
            c.execute_batch(super::super::SCHEMA).unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        store.record_token(token("a", true)).await.unwrap();
        store.record_token(token("b", false)).await.unwrap();
        let a = store
            .token_standing(Some("a".into()), Some("k1".into()))
            .await
            .unwrap();
        assert!(a.known && !a.revoked && !a.key_retired);
        assert!(
            !store
                .token_standing(Some("x".into()), None)
                .await
                .unwrap()
                .known
        );
        assert!(
            !store
                .token_standing(None, None)
                .await
                .unwrap()
                .legacy_refused
        );

        let in_an_hour = Utc::now() + chrono::Duration::hours(1);
        let session = UiSession {
            jti: Some("b".into()),
            kid: Some("k1".into()),
            subject: "ci".into(),
            scopes: vec!["functions:read".into()],
            created_at: from_secs(Utc::now().timestamp()),
            expires_at: from_secs(in_an_hour.timestamp()),
        };
        store
            .create_ui_session("h1", session.clone())
            .await
            .unwrap();
        assert_eq!(store.ui_session("h1").await.unwrap(), Some(session));
        assert!(store.revoke_token("b").await.unwrap());
        assert!(!store.revoke_token("nope").await.unwrap());
        assert_eq!(store.ui_session("h1").await.unwrap(), None, "revoked");
        assert!(
            store
                .token_standing(Some("b".into()), None)
                .await
                .unwrap()
                .revoked
        );

        store.record_token(token("c", true)).await.unwrap();
        assert_eq!(
            store.rotate_admin_token("c", true).await.unwrap(),
            vec!["a"]
        );
        assert!(
            store
                .token_standing(Some("a".into()), None)
                .await
                .unwrap()
                .revoked
        );
        assert!(
            !store
                .token_standing(Some("c".into()), None)
                .await
                .unwrap()
                .revoked
        );
        assert!(
            store
                .token_standing(None, None)
                .await
                .unwrap()
                .legacy_refused
        );

        store.retire_key("k1").await.unwrap();
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        assert!(store.key_retired("k1").await.unwrap());
        let listed = store.tokens().await.unwrap();
        assert_eq!(listed.len(), 3);
        assert!(listed.iter().any(|t| t.id == "b" && t.revoked_at.is_some()));
    }
}
