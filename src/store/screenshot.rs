//! Failure evidence of browser calls: a call id with the last page's URL and PNG comes
//! in; the screenshot of an activation goes out. A table of its own, so databases made
//! before it simply gain it.

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};

use super::{SqliteStore, StoreError};

/// The table, created with the rest of the schema.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS activation_screenshots (
    call_id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    png BLOB NOT NULL,
    taken_at TEXT NOT NULL
);
";

/// Screenshots kept; older ones are deleted as new ones arrive.
pub(super) const SCREENSHOTS_KEPT: i64 = 1000;

/// The last page a failed call's browser showed.
#[derive(Debug, Clone, PartialEq)]
pub struct Screenshot {
    pub url: String,
    pub png: Vec<u8>,
    pub taken_at: DateTime<Utc>,
}

impl SqliteStore {
    /// Keeps the screenshot of call `call_id` (replacing an earlier one of the same call).
    pub async fn put_screenshot(
        &self,
        call_id: &str,
        url: &str,
        png: Vec<u8>,
    ) -> Result<(), StoreError> {
        let (call_id, url) = (call_id.to_owned(), url.to_owned());
        self.with(move |c| {
            c.execute(
                "INSERT OR REPLACE INTO activation_screenshots (call_id, url, png, taken_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![call_id, url, png, Utc::now()],
            )?;
            c.execute(
                "DELETE FROM activation_screenshots WHERE rowid <=
                 (SELECT MAX(rowid) FROM activation_screenshots) - ?1",
                [SCREENSHOTS_KEPT],
            )?;
            Ok(())
        })
        .await
    }

    /// The screenshot of call `call_id`, if one was kept.
    pub async fn screenshot(&self, call_id: &str) -> Result<Option<Screenshot>, StoreError> {
        let call_id = call_id.to_owned();
        self.with(move |c| {
            Ok(c.query_row(
                "SELECT url, png, taken_at FROM activation_screenshots WHERE call_id = ?1",
                [call_id],
                |r| {
                    Ok(Screenshot {
                        url: r.get(0)?,
                        png: r.get(1)?,
                        taken_at: r.get(2)?,
                    })
                },
            )
            .optional()?)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_screenshot_survives_reopening_and_an_old_database_gains_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hark.db");
        // A database from before screenshots existed.
        {
            let c = rusqlite::Connection::open(&path).unwrap();
            c.execute_batch(super::super::SCHEMA).unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.screenshot("c1").await.unwrap(), None);
        store
            .put_screenshot("c1", "http://example.test/", vec![0x89, b'P', b'N', b'G'])
            .await
            .unwrap();
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        let shot = store.screenshot("c1").await.unwrap().unwrap();
        assert_eq!(shot.url, "http://example.test/");
        assert_eq!(shot.png, vec![0x89, b'P', b'N', b'G']);
    }
}
