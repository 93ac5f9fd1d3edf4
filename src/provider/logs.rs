//! Function log capture: lines a function's processes write come in, a bounded
//! per-function history and a live feed for `/system/logs?follow=true` go out.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::broadcast;

use crate::function::FunctionName;

/// Lines kept per function; older ones are dropped.
pub const LINES_PER_FUNCTION: usize = 1000;
/// Longest line kept; the rest of a longer line is cut and marked.
pub const MAX_LINE_BYTES: usize = 4096;
/// How much of a process's stderr is kept for an error message.
const ERROR_TAIL_BYTES: usize = 1024;

/// One line of a function's output, as `/system/logs` serves it (OpenFaaS's `logs.Message`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    pub name: String,
    pub instance: String,
    pub timestamp: DateTime<Utc>,
    pub text: String,
}

/// The log history of every function, and a feed of new lines.
pub struct LogHub {
    history: Mutex<HashMap<FunctionName, VecDeque<LogLine>>>,
    feed: broadcast::Sender<LogLine>,
}

impl Default for LogHub {
    fn default() -> Self {
        LogHub {
            history: Mutex::new(HashMap::new()),
            feed: broadcast::channel(1024).0,
        }
    }
}

impl LogHub {
    /// Records one line for `name`.
    pub fn push(&self, name: &FunctionName, instance: &str, text: String) {
        let line = LogLine {
            name: name.to_string(),
            instance: instance.to_owned(),
            timestamp: Utc::now(),
            text,
        };
        {
            let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
            let lines = history.entry(name.clone()).or_default();
            if lines.len() == LINES_PER_FUNCTION {
                lines.pop_front();
            }
            lines.push_back(line.clone());
        }
        // No receivers is the normal case when nobody follows the logs.
        let _ = self.feed.send(line);
    }

    /// The last `tail` lines of `name` (all kept lines when `None`) at or after `since`.
    pub fn history(
        &self,
        name: &FunctionName,
        tail: Option<usize>,
        since: Option<DateTime<Utc>>,
    ) -> Vec<LogLine> {
        let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let Some(lines) = history.get(name) else {
            return Vec::new();
        };
        let matching: Vec<&LogLine> = lines
            .iter()
            .filter(|l| since.is_none_or(|s| l.timestamp >= s))
            .collect();
        let skip = tail.map_or(0, |t| matching.len().saturating_sub(t));
        matching.into_iter().skip(skip).cloned().collect()
    }

    /// A receiver of every line pushed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<LogLine> {
        self.feed.subscribe()
    }

    /// Forgets the history of a removed function.
    pub fn forget(&self, name: &FunctionName) {
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        history.remove(name);
    }

    /// Reads `reader` to its end, pushing each line as a log line of `name`, and returns
    /// the last bytes read (for an error message). Memory stays bounded whatever the
    /// process writes: over-long lines are cut at [`MAX_LINE_BYTES`].
    pub async fn pump(
        &self,
        name: &FunctionName,
        instance: &str,
        mut reader: impl AsyncRead + Unpin,
    ) -> String {
        let mut chunk = vec![0u8; 8192];
        let mut line: Vec<u8> = Vec::new();
        let mut cut = false;
        let mut tail: VecDeque<u8> = VecDeque::with_capacity(ERROR_TAIL_BYTES);
        loop {
            let n = match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            for &b in &chunk[..n] {
                if tail.len() == ERROR_TAIL_BYTES {
                    tail.pop_front();
                }
                tail.push_back(b);
                if b == b'\n' {
                    self.push_bytes(name, instance, &line, cut);
                    line.clear();
                    cut = false;
                } else if line.len() < MAX_LINE_BYTES {
                    line.push(b);
                } else {
                    cut = true;
                }
            }
        }
        if !line.is_empty() {
            self.push_bytes(name, instance, &line, cut);
        }
        let tail: Vec<u8> = tail.into_iter().collect();
        String::from_utf8_lossy(&tail).trim().to_owned()
    }

    fn push_bytes(&self, name: &FunctionName, instance: &str, bytes: &[u8], cut: bool) {
        let mut text = String::from_utf8_lossy(bytes)
            .trim_end_matches('\r')
            .to_owned();
        if cut {
            text.push_str(" …[line cut]");
        }
        self.push(name, instance, text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name() -> FunctionName {
        "f".parse().unwrap()
    }

    #[tokio::test]
    async fn pump_splits_lines_and_bounds_memory() {
        let hub = LogHub::default();
        let mut input = b"one\ntwo\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 3 * 1024 * 1024));
        input.extend(b"\nlast");
        let tail = hub.pump(&name(), "i", &input[..]).await;
        let lines = hub.history(&name(), None, None);
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0].text, "one");
        assert_eq!(lines[1].text, "two");
        assert!(lines[2].text.len() < MAX_LINE_BYTES + 32);
        assert!(lines[2].text.ends_with("[line cut]"));
        assert_eq!(lines[3].text, "last");
        assert!(tail.ends_with("last") && tail.len() <= ERROR_TAIL_BYTES);
    }

    #[test]
    fn history_keeps_the_newest_lines() {
        let hub = LogHub::default();
        for i in 0..LINES_PER_FUNCTION + 5 {
            hub.push(&name(), "i", i.to_string());
        }
        let all = hub.history(&name(), None, None);
        assert_eq!(all.len(), LINES_PER_FUNCTION);
        assert_eq!(all[0].text, "5");
        let tail = hub.history(&name(), Some(2), None);
        let texts: Vec<_> = tail.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                (LINES_PER_FUNCTION + 3).to_string(),
                (LINES_PER_FUNCTION + 4).to_string()
            ]
        );
        let future = Utc::now() + chrono::Duration::seconds(60);
        assert!(hub.history(&name(), None, Some(future)).is_empty());
    }
}
