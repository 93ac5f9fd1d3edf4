//! The Alexa channel's tables: per-user persistent attributes of a skill (keyed by skill and
//! Alexa `userId`), and results that finished after their request was answered, kept until
//! the user's next request speaks them.

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};
use serde_json::{Map, Value};

use super::{SqliteStore, StoreError};

/// The tables, created with the rest of the schema.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS alexa_user_attributes (
    skill TEXT NOT NULL,
    user_id TEXT NOT NULL,
    attributes TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (skill, user_id)
);
CREATE TABLE IF NOT EXISTS alexa_pending (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    skill TEXT NOT NULL,
    user_id TEXT NOT NULL,
    call_id TEXT NOT NULL,
    intent TEXT NOT NULL,
    speech TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alexa_pending_by_user ON alexa_pending (skill, user_id);
";

/// A result that finished late, waiting to be spoken.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingReply {
    pub call_id: String,
    pub intent: String,
    /// A checked `<speak>` document.
    pub speech: String,
    pub created_at: DateTime<Utc>,
}

impl SqliteStore {
    /// The persistent attributes of `user_id` in `skill` (empty when there are none).
    pub async fn alexa_user_attributes(
        &self,
        skill: &str,
        user_id: &str,
    ) -> Result<Map<String, Value>, StoreError> {
        let (skill, user_id) = (skill.to_owned(), user_id.to_owned());
        self.with(move |c| {
            let text: Option<String> = c
                .query_row(
                    "SELECT attributes FROM alexa_user_attributes WHERE skill = ?1 AND user_id = ?2",
                    params![skill, user_id],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(match text {
                Some(t) => serde_json::from_str(&t)?,
                None => Map::new(),
            })
        })
        .await
    }

    /// Replaces the persistent attributes of `user_id` in `skill`.
    pub async fn put_alexa_user_attributes(
        &self,
        skill: &str,
        user_id: &str,
        attributes: &Map<String, Value>,
    ) -> Result<(), StoreError> {
        let (skill, user_id) = (skill.to_owned(), user_id.to_owned());
        let json = serde_json::to_string(attributes)?;
        self.with(move |c| {
            c.execute(
                "INSERT INTO alexa_user_attributes (skill, user_id, attributes, updated_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(skill, user_id) DO UPDATE SET attributes = excluded.attributes,
                 updated_at = excluded.updated_at",
                params![skill, user_id, json, Utc::now()],
            )?;
            Ok(())
        })
        .await
    }

    /// Keeps a late result for the user's next request.
    pub async fn push_alexa_pending(
        &self,
        skill: &str,
        user_id: &str,
        reply: PendingReply,
    ) -> Result<(), StoreError> {
        let (skill, user_id) = (skill.to_owned(), user_id.to_owned());
        self.with(move |c| {
            c.execute(
                "INSERT INTO alexa_pending (skill, user_id, call_id, intent, speech, created_at)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6
                 WHERE NOT EXISTS (SELECT 1 FROM alexa_pending
                                   WHERE skill = ?1 AND user_id = ?2 AND call_id = ?3)",
                params![
                    skill,
                    user_id,
                    reply.call_id,
                    reply.intent,
                    reply.speech,
                    reply.created_at
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// Removes and returns the late results waiting for `user_id` in `skill`, oldest first.
    pub async fn take_alexa_pending(
        &self,
        skill: &str,
        user_id: &str,
    ) -> Result<Vec<PendingReply>, StoreError> {
        let (skill, user_id) = (skill.to_owned(), user_id.to_owned());
        self.with(move |c| {
            let mut stmt = c.prepare_cached(
                "DELETE FROM alexa_pending WHERE skill = ?1 AND user_id = ?2
                 RETURNING id, call_id, intent, speech, created_at",
            )?;
            let rows = stmt.query_map(params![skill, user_id], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    PendingReply {
                        call_id: r.get(1)?,
                        intent: r.get(2)?,
                        speech: r.get(3)?,
                        created_at: r.get(4)?,
                    },
                ))
            })?;
            let mut out = rows.collect::<Result<Vec<_>, _>>()?;
            out.sort_by_key(|(id, _)| *id);
            Ok(out.into_iter().map(|(_, p)| p).collect())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn attributes_and_pending_replies_are_kept_per_skill_and_user() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("hark.db")).unwrap();
        assert!(store
            .alexa_user_attributes("s", "u")
            .await
            .unwrap()
            .is_empty());
        let mut attrs = Map::new();
        attrs.insert("visits".into(), 2.into());
        store
            .put_alexa_user_attributes("s", "u", &attrs)
            .await
            .unwrap();
        assert_eq!(store.alexa_user_attributes("s", "u").await.unwrap(), attrs);
        assert!(store
            .alexa_user_attributes("s", "other")
            .await
            .unwrap()
            .is_empty());
        for i in 0..2 {
            let reply = PendingReply {
                call_id: format!("c{i}"),
                intent: "Book".into(),
                speech: format!("<speak>done {i}</speak>"),
                created_at: Utc::now(),
            };
            store.push_alexa_pending("s", "u", reply).await.unwrap();
        }
        let taken = store.take_alexa_pending("s", "u").await.unwrap();
        assert_eq!(
            taken.iter().map(|p| p.call_id.as_str()).collect::<Vec<_>>(),
            ["c0", "c1"]
        );
        assert!(store.take_alexa_pending("s", "u").await.unwrap().is_empty());
    }
}
