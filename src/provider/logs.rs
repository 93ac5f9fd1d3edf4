//! Function log capture: lines a function's processes write come in, a bounded
//! per-function history and a live feed for `/system/logs?follow=true` go out.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use futures::Stream;
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogLine {
    pub name: String,
    pub instance: String,
    pub timestamp: DateTime<Utc>,
    pub text: String,
}

/// A line with its place in the hub's order: every line pushed later has a larger `seq`.
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    pub seq: u64,
    pub line: LogLine,
}

/// Where a reader of a function's lines stands: the lines after `seq` of the hub started
/// at `epoch` are new to it. Written `EPOCH-SEQ`, it is the id of a server-sent event,
/// which a client sends back as `Last-Event-ID` to resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    epoch: u64,
    seq: u64,
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}-{}", self.epoch, self.seq)
    }
}

impl FromStr for Cursor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wrong = || format!("{s:?} is not a log cursor (EPOCH-SEQ)");
        let (epoch, seq) = s.trim().split_once('-').ok_or_else(wrong)?;
        Ok(Cursor {
            epoch: u64::from_str_radix(epoch, 16).map_err(|_| wrong())?,
            seq: seq.parse().map_err(|_| wrong())?,
        })
    }
}

/// Which of a function's kept lines a reader starts with.
#[derive(Debug, Clone, Copy)]
pub enum Start {
    /// The last `tail` lines (all kept lines when `None`) at or after `since`.
    Tail {
        tail: Option<usize>,
        since: Option<DateTime<Utc>>,
    },
    /// The lines after an earlier reader's cursor; every kept line when the cursor is from
    /// an earlier run of the gateway, whose lines this one does not have.
    After(Cursor),
}

/// The log history of every function, and a feed of new lines.
pub struct LogHub {
    kept: Mutex<Kept>,
    feed: broadcast::Sender<Logged>,
    /// Tells this hub's cursors from those of an earlier run.
    epoch: u64,
}

#[derive(Default)]
struct Kept {
    /// The `seq` of the last line pushed.
    last: u64,
    lines: HashMap<FunctionName, VecDeque<Logged>>,
}

impl Default for LogHub {
    fn default() -> Self {
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        LogHub {
            kept: Mutex::new(Kept::default()),
            feed: broadcast::channel(1024).0,
            epoch,
        }
    }
}

impl LogHub {
    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one line for `name`.
    pub fn push(&self, name: &FunctionName, instance: &str, text: String) {
        let line = LogLine {
            name: name.to_string(),
            instance: instance.to_owned(),
            timestamp: Utc::now(),
            text,
        };
        let mut kept = self.kept();
        kept.last += 1;
        let logged = Logged {
            seq: kept.last,
            line,
        };
        let lines = kept.lines.entry(name.clone()).or_default();
        if lines.len() == LINES_PER_FUNCTION {
            lines.pop_front();
        }
        lines.push_back(logged.clone());
        // Sent while the lock is held, so the feed carries lines in `seq` order. No
        // receivers is the normal case when nobody follows the logs.
        let _ = self.feed.send(logged);
    }

    /// The last `tail` lines of `name` (all kept lines when `None`) at or after `since`.
    pub fn history(
        &self,
        name: &FunctionName,
        tail: Option<usize>,
        since: Option<DateTime<Utc>>,
    ) -> Vec<LogLine> {
        self.start(name, Start::Tail { tail, since })
            .0
            .into_iter()
            .map(|l| l.line)
            .collect()
    }

    /// The kept lines of `name` a reader starting at `start` gets, and the `seq` of the
    /// last line pushed so far (of any function): later lines are new to that reader.
    fn start(&self, name: &FunctionName, start: Start) -> (Vec<Logged>, u64) {
        let kept = self.kept();
        let lines: Vec<Logged> = kept.lines.get(name).map_or_else(Vec::new, |lines| {
            let (tail, since, after) = match start {
                Start::Tail { tail, since } => (tail, since, 0),
                Start::After(c) if c.epoch == self.epoch => (None, None, c.seq),
                Start::After(_) => (None, None, 0),
            };
            let matching: Vec<&Logged> = lines
                .iter()
                .filter(|l| l.seq > after && since.is_none_or(|s| l.line.timestamp >= s))
                .collect();
            let skip = tail.map_or(0, |t| matching.len().saturating_sub(t));
            matching.into_iter().skip(skip).cloned().collect()
        });
        (lines, kept.last)
    }

    /// The `seq` of the last line pushed so far: the lines pushed after it are new.
    pub fn mark(&self) -> u64 {
        self.kept().last
    }

    /// The kept lines of `name` pushed after `mark`.
    pub fn since_mark(&self, name: &FunctionName, mark: u64) -> Vec<Logged> {
        let after = Cursor {
            epoch: self.epoch,
            seq: mark,
        };
        self.start(name, Start::After(after)).0
    }

    /// The cursor that resumes after `line`.
    pub fn cursor(&self, line: &Logged) -> Cursor {
        Cursor {
            epoch: self.epoch,
            seq: line.seq,
        }
    }

    /// A receiver of every line pushed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Logged> {
        self.feed.subscribe()
    }

    /// The lines of `name` from `start` on, then, when `follow`, each new line as it is
    /// pushed (the stream then ends only when the hub does). Each kept line comes once
    /// and in order: lines a slow reader missed in the live feed are read back from the
    /// history, and only lines already gone from it (more than [`LINES_PER_FUNCTION`]
    /// behind) are skipped.
    pub fn read(
        self: Arc<Self>,
        name: FunctionName,
        start: Start,
        follow: bool,
    ) -> impl Stream<Item = Logged> + Send + 'static {
        // Subscribed before the history is read, so no line falls between the two.
        let live = follow.then(|| self.subscribe());
        let (backlog, last) = self.start(&name, start);
        let reader = Reader {
            wanted: name.to_string(),
            hub: self,
            name,
            backlog: backlog.into(),
            last,
            live,
        };
        futures::stream::unfold(reader, |mut reader| async move {
            let line = reader.next().await?;
            Some((line, reader))
        })
    }

    /// Forgets the history of a removed function.
    pub fn forget(&self, name: &FunctionName) {
        self.kept().lines.remove(name);
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
        // Nothing on the heap until the process writes: most fork-mode calls write no
        // log line, and each of them runs a pump.
        let mut chunk = [0u8; 4096];
        let mut line: Vec<u8> = Vec::new();
        let mut cut = false;
        let mut tail: VecDeque<u8> = VecDeque::new();
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

/// One follower of a function's lines: what it has still to be given, then the feed.
struct Reader {
    hub: Arc<LogHub>,
    name: FunctionName,
    wanted: String,
    backlog: VecDeque<Logged>,
    /// Lines up to this `seq` were given or were not this reader's to have.
    last: u64,
    live: Option<broadcast::Receiver<Logged>>,
}

impl Reader {
    async fn next(&mut self) -> Option<Logged> {
        loop {
            if let Some(line) = self.backlog.pop_front() {
                self.last = self.last.max(line.seq);
                return Some(line);
            }
            match self.live.as_mut()?.recv().await {
                Ok(line) if line.seq > self.last && line.line.name == self.wanted => {
                    self.last = line.seq;
                    return Some(line);
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let after = Cursor {
                        epoch: self.hub.epoch,
                        seq: self.last,
                    };
                    self.backlog = self.hub.start(&self.name, Start::After(after)).0.into();
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

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

    fn texts(lines: &[Logged]) -> Vec<String> {
        lines.iter().map(|l| l.line.text.clone()).collect()
    }

    #[tokio::test]
    async fn a_reader_resumes_after_its_cursor_and_from_the_start_after_a_restart() {
        let hub = Arc::new(LogHub::default());
        let other: FunctionName = "other".parse().unwrap();
        for text in ["a", "b", "c"] {
            hub.push(&name(), "i", text.into());
            hub.push(&other, "i", format!("other {text}"));
        }
        let read: Vec<Logged> = hub
            .clone()
            .read(
                name(),
                Start::Tail {
                    tail: None,
                    since: None,
                },
                false,
            )
            .collect()
            .await;
        assert_eq!(texts(&read), ["a", "b", "c"]);
        let cursor = hub.cursor(&read[1]);
        assert_eq!(cursor.to_string().parse::<Cursor>(), Ok(cursor));
        let resumed: Vec<Logged> = hub
            .clone()
            .read(name(), Start::After(cursor), false)
            .collect()
            .await;
        assert_eq!(texts(&resumed), ["c"]);

        // A cursor of an earlier run: everything this hub has is new to its reader.
        let restarted = Arc::new(LogHub {
            epoch: hub.epoch + 1,
            ..LogHub::default()
        });
        restarted.push(&name(), "i", "after restart".into());
        let resumed: Vec<Logged> = restarted
            .read(name(), Start::After(cursor), false)
            .collect()
            .await;
        assert_eq!(texts(&resumed), ["after restart"]);
        assert!("12-x".parse::<Cursor>().is_err());
    }

    #[tokio::test]
    async fn a_follower_gets_each_line_once_in_order_even_when_it_falls_behind() {
        let hub = Arc::new(LogHub::default());
        hub.push(&name(), "i", "0".into());
        let mut follower = Box::pin(hub.clone().read(
            name(),
            Start::Tail {
                tail: None,
                since: None,
            },
            true,
        ));
        assert_eq!(follower.next().await.unwrap().line.text, "0");
        // Its lines, then more of another function's than the feed holds, arrive before
        // it reads on: it falls behind the feed, whose lines of `f` are gone, and reads
        // them back from the history.
        let other: FunctionName = "other".parse().unwrap();
        for i in 1..=600 {
            hub.push(&name(), "i", i.to_string());
        }
        for i in 0..1100 {
            hub.push(&other, "i", i.to_string());
        }
        let mut seen = Vec::new();
        while let Ok(Some(line)) =
            tokio::time::timeout(std::time::Duration::from_millis(200), follower.next()).await
        {
            seen.push(line.line.text.parse::<usize>().unwrap());
        }
        assert_eq!(seen, (1..=600).collect::<Vec<_>>(), "each once, in order");
    }
}
