//! An activation's story: what the function was given, what it answered and what it
//! logged during that call, kept with the activation record so a call can be read
//! afterwards (`dispatch::story` tells it).

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::provider::LogLine;

/// What a call was given, what it answered, and its log lines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Story {
    pub request: Request,
    /// Absent when the function gave no answer (it timed out or could not start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<Response>,
    pub logs: Vec<LogLine>,
    /// How the log lines were told from other calls' lines: `process` (the call had
    /// its own process), `call id` (lines naming the call's id) or `time window` (every
    /// line the function wrote while the call ran, other calls' lines among them).
    pub logs_by: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub method: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

/// A kept body: its text when it is UTF-8, else its bytes in base64.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Body {
    /// Its whole size, in bytes, as sent.
    pub size: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base64: Option<String>,
    /// Only the first bytes (up to the cap) are kept.
    #[serde(default)]
    pub truncated: bool,
}

impl Body {
    /// The kept bytes.
    pub fn bytes(&self) -> Vec<u8> {
        match (&self.text, &self.base64) {
            (Some(text), _) => text.clone().into_bytes(),
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap_or_default(),
            (None, None) => Vec::new(),
        }
    }
}

/// Work on a story left until just before it is written, and when it can be done: the
/// log lines of a call whose process served others too come through a pipe, a moment
/// after its answer.
pub struct Later {
    pub ready_at: std::time::Instant,
    pub finish: Box<dyn FnOnce(&mut Story) + Send>,
}

/// Default of the most bytes of stories kept in all (`hark up --history-max-bytes`).
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// Brings an activations table made by a Hark from before schema versions up to the
/// columns stories need: part of the store's frozen migration step 0.
pub(super) fn migrate(conn: &rusqlite::Connection) -> Result<(), super::StoreError> {
    super::db::add_missing_columns(
        conn,
        "activations",
        &[
            ("story", "TEXT"),
            ("story_bytes", "INTEGER NOT NULL DEFAULT 0"),
            ("replay_of", "TEXT"),
        ],
    )
}

/// Drops the oldest stories until those kept hold at most `max` bytes (to 7/8 of it, so
/// that pruning is not needed again at once); their activation records stay. `total` is
/// the bytes of the stories kept now; returns the bytes dropped.
pub(super) fn prune(
    conn: &rusqlite::Connection,
    max: u64,
    total: u64,
) -> Result<u64, super::StoreError> {
    if total <= max {
        return Ok(0);
    }
    let goal = total - max / 8 * 7;
    let mut freed = 0;
    let mut last = None;
    {
        let mut oldest = conn.prepare(
            "SELECT rowid, story_bytes FROM activations WHERE story IS NOT NULL ORDER BY rowid",
        )?;
        let mut rows = oldest.query([])?;
        while let Some(row) = rows.next()? {
            let (rowid, bytes): (i64, i64) = (row.get(0)?, row.get(1)?);
            last = Some(rowid);
            freed += bytes as u64;
            if freed >= goal {
                break;
            }
        }
    }
    if let Some(last) = last {
        conn.execute(
            "UPDATE activations SET story = NULL, story_bytes = 0 WHERE rowid <= ?1 AND story IS NOT NULL",
            [last],
        )?;
    }
    Ok(freed)
}
